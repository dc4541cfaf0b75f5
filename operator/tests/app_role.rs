//! The PostgreSQL postStart script (`operator::app_role::SCRIPT`), run by
//! `sh` against a real PostgreSQL: it gives the chat-server a role that owns
//! the chat database and can run its migrations, but is no superuser, and it
//! can run again on every start.
//!
//! Needs `CHAT_TEST_DATABASE_URL` (a superuser URL: `scripts/services.sh`
//! starts one) and `psql` on PATH; skipped, with a message, without them.

use std::process::{Command, Output};

use operator::app_role::SCRIPT;

/// Host, port and superuser of the test server.
struct Server {
    host: String,
    port: String,
    user: String,
}

fn server() -> Option<Server> {
    let url = url::Url::parse(&std::env::var("CHAT_TEST_DATABASE_URL").ok()?).ok()?;
    Some(Server {
        host: url.host_str()?.to_string(),
        port: url.port().unwrap_or(5432).to_string(),
        user: url.username().to_string(),
    })
}

fn psql(server: &Server, user: &str, db: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", &server.host, "-p", &server.port, "-U", user, "-d", db])
        .args(["-c", sql])
        .output()
        .expect("run psql")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn run_script(server: &Server, db: &str, app: &str) -> Output {
    Command::new("sh")
        .args(["-c", SCRIPT])
        .env("PGHOST", &server.host)
        .env("PGPORT", &server.port)
        .env("POSTGRES_USER", &server.user)
        .env("POSTGRES_PASSWORD", "")
        .env("POSTGRES_DB", db)
        .env("APP_USER", app)
        .env("APP_PASSWORD", "app-secret-1")
        .output()
        .expect("run sh")
}

#[test]
fn the_post_start_script_makes_an_owning_non_superuser_role_and_can_rerun() {
    let Some(server) = server() else {
        eprintln!(
            "SKIPPED: CHAT_TEST_DATABASE_URL is not set (scripts/services.sh starts PostgreSQL)"
        );
        return;
    };
    if Command::new("psql").arg("--version").output().is_err() {
        eprintln!("SKIPPED: psql is not installed");
        return;
    }
    let suffix = std::process::id();
    let (db, app) = (format!("app_role_{suffix}"), format!("chat_app_{suffix}"));
    ok(psql(
        &server,
        &server.user,
        "postgres",
        &format!("CREATE DATABASE {db}"),
    ));
    // A table an earlier version created as the superuser.
    ok(psql(
        &server,
        &server.user,
        &db,
        "CREATE TABLE messages (id bigserial PRIMARY KEY, body text)",
    ));

    for run in 1..=2 {
        let output = run_script(&server, &db, &app);
        assert!(
            output.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let attributes = ok(psql(
        &server,
        &server.user,
        &db,
        &format!(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = '{app}'"
        ),
    ));
    assert_eq!(
        attributes, "f|f|f|t",
        "login, but no superuser, createrole or createdb"
    );
    let owners = ok(psql(
        &server,
        &server.user,
        &db,
        &format!(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'; SELECT tableowner FROM pg_tables WHERE tablename = 'messages'"
        ),
    ));
    assert_eq!(owners, format!("{app}\n{app}"));
    // As the role: the migrations' work, and not a superuser's.
    ok(psql(
        &server,
        &app,
        &db,
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (version bigint PRIMARY KEY); INSERT INTO messages (body) VALUES ('hi')",
    ));
    let denied = psql(&server, &app, &db, "CREATE ROLE intruder");
    assert!(!denied.status.success(), "the role cannot create roles");

    ok(psql(
        &server,
        &server.user,
        "postgres",
        &format!("DROP DATABASE {db}"),
    ));
    ok(psql(
        &server,
        &server.user,
        "postgres",
        &format!("DROP ROLE {app}"),
    ));
}
