#!/usr/bin/env bash
# Throwaway Redis and PostgreSQL on free loopback ports, for the tests.
#
#   scripts/services.sh start DIR   # installs what is missing, starts both, writes DIR/env
#   scripts/services.sh stop DIR    # stops both (DIR can then be removed)
#
# DIR/env exports CHAT_TEST_REDIS_URL and CHAT_TEST_DATABASE_URL; `source` it.
# PostgreSQL refuses to run as root, so as root the cluster runs as `postgres`.
set -euo pipefail

cmd=${1:?usage: services.sh start|stop DIR}
dir=${2:?usage: services.sh start|stop DIR}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  return 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

install_missing() {
  local pkgs=()
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  pg_bin >/dev/null || pkgs+=(postgresql)
  [ ${#pkgs[@]} -eq 0 ] && return
  echo "services: installing ${pkgs[*]}" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${pkgs[@]}" >/dev/null; }
}

start() {
  install_missing
  mkdir -p "$dir"
  local rport pport bin
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"

  bin=$(pg_bin)
  pport=$(free_port)
  mkdir -p "$dir/pg"
  [ "$(id -u)" = 0 ] && chown -R postgres "$dir/pg" && chmod 755 "$dir"
  as_pg "$bin/initdb" -D "$dir/pg/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
  as_pg "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w \
    -o "-p $pport -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" start >/dev/null

  for _ in $(seq 50); do
    redis-cli -p "$rport" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  cat >"$dir/env" <<ENV
export CHAT_TEST_REDIS_URL=redis://127.0.0.1:$rport/
export CHAT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pport/postgres
ENV
  cat "$dir/env"
}

stop() {
  if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
  if [ -d "$dir/pg/data" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: services.sh start|stop DIR" >&2; exit 2 ;;
esac
