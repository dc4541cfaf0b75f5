//! The PostgreSQL role the chat-server connects as: not the superuser.
//!
//! The official image makes `POSTGRES_USER` a superuser, and a chat-server
//! holding superuser credentials could read any database on the server, write
//! files through `COPY ... PROGRAM`, or create roles. So the chat-server gets
//! its own login role ([`APP_USER`]) that owns the chat database and its schema,
//! which is all its migrations need, and nothing else.
//!
//! The role is maintained by a `postStart` hook of the PostgreSQL container,
//! on every start rather than only at initdb: a data directory created before
//! this role existed gets it too, and a changed password in the Secret takes
//! effect with the next start (the pod template carries its digest, so a
//! change restarts the pod). The hook waits for the server on TCP, which the
//! image's temporary initdb server never listens on, so it only talks to the
//! real one; it is idempotent, and moves tables an earlier version created as
//! the superuser to the role.

/// The chat-server's login role.
pub const APP_USER: &str = "chat_app";

/// The postStart script. Reads `POSTGRES_USER`, `POSTGRES_PASSWORD`,
/// `POSTGRES_DB` (the image's own variables), `APP_USER` and `APP_PASSWORD`;
/// `PGHOST`/`PGPORT` default to the local server.
pub const SCRIPT: &str = r#"set -eu
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}"
export PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" PGDATABASE="$POSTGRES_DB"
tries=0
until pg_isready -q; do
  tries=$((tries + 1))
  if [ "$tries" -ge 180 ]; then echo "postStart: PostgreSQL did not start" >&2; exit 1; fi
  sleep 1
done
psql -v ON_ERROR_STOP=1 -q -v app="$APP_USER" -v pw="$APP_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'app') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'pw';
ALTER DATABASE :"db" OWNER TO :"app";
ALTER SCHEMA public OWNER TO :"app";
SELECT format('ALTER TABLE public.%I OWNER TO %I', tablename, :'app') FROM pg_tables WHERE schemaname = 'public' AND tableowner <> :'app' \gexec
SQL
"#;
