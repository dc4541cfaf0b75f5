#!/usr/bin/env bash
# chat-server against its floor, side by side, on this machine's loopback.
#
#   bench/run.sh                 # the full ladder (about 15 minutes)
#   BENCH_QUICK=1 bench/run.sh   # a smoke run (about 3 minutes of load)
#
# Targets, each loaded by the same chat-load scenario (1,000 clients in 10
# rooms of 100, open loop, one batch) at every step of a ladder of offered
# deliveries/s, then measured for idle memory at BENCH_IDLE_CONNS connections:
#   embedded  chat-server with its in-process broker and SQLite
#   pg        chat-server on Redis + PostgreSQL, fsync on
#   floor     bench/floor: uWebSockets.js pub/sub, no persistence
#   socketio  bench/socketio: Socket.IO 4 + @socket.io/redis-adapter, only when
#             chat-load has `--protocol socketio`
# The servers (and Redis and PostgreSQL) are pinned to CPU BENCH_SERVER_CPU,
# chat-load to CPU BENCH_LOAD_CPU. Writes bench/RESULTS.md, bench/results.json
# and bench/latency.png; logs and raw chat-load summaries go to BENCH_WORK.
# Not in CI: it needs two idle cores to mean anything.
#
# Knobs (environment):
#   BENCH_LADDER      offered deliveries/s   "10000 40000 100000 200000" (quick: "10000 40000")
#   BENCH_DURATION    seconds of sending per step              30 (quick: 10)
#   BENCH_IDLE_CONNS  connections for idle memory              15000 (quick: 3000)
#   BENCH_IDLE_HOLD   seconds between the post-burst and the idle RSS sample  15 (quick: 3)
#   BENCH_JOIN_CONNS  clients of the join step                 5000 (quick: 1000)
#   BENCH_JOIN_RATE   joins/s offered in the join step         5000
#   BENCH_JOIN_ROOM   members per room in the join step        10
#   BENCH_CLIENTS / BENCH_ROOMS   the scenario                 1000 / 10
#   BENCH_TARGETS     which targets, in order                  "embedded pg floor socketio"
#   BENCH_SERVER_CPU / BENCH_LOAD_CPU                          0 / 1
#   BENCH_WORK        scratch directory                        target/bench
#   BENCH_OUT         where RESULTS.md, results.json and the plot go   bench
#   BENCH_MAX_SECONDS the whole run gives up after this        3600
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
  ladder=${BENCH_LADDER:-10000 40000}
  duration=${BENCH_DURATION:-10}
  idle_conns=${BENCH_IDLE_CONNS:-3000}
  idle_hold=${BENCH_IDLE_HOLD:-3}
  join_conns=${BENCH_JOIN_CONNS:-1000}
else
  ladder=${BENCH_LADDER:-10000 40000 100000 200000}
  duration=${BENCH_DURATION:-30}
  idle_conns=${BENCH_IDLE_CONNS:-15000}
  idle_hold=${BENCH_IDLE_HOLD:-15}
  join_conns=${BENCH_JOIN_CONNS:-5000}
fi
join_rate=${BENCH_JOIN_RATE:-5000}
join_room=${BENCH_JOIN_ROOM:-10}
clients=${BENCH_CLIENTS:-1000}
rooms=${BENCH_ROOMS:-10}
targets=${BENCH_TARGETS:-embedded pg floor socketio}
server_cpu=${BENCH_SERVER_CPU:-0}
load_cpu=${BENCH_LOAD_CPU:-1}
work=${BENCH_WORK:-$root/target/bench}
out=${BENCH_OUT:-$root/bench}
max_seconds=${BENCH_MAX_SECONDS:-3600}
command_line="$({ env | grep -E '^BENCH_' || true; } | sort | tr '\n' ' ')bench/run.sh"

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for n in "$duration" "$idle_conns" "$idle_hold" "$clients" "$rooms" "$max_seconds" $ladder; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive integer (check the BENCH_* variables)"
done
for target in $targets; do
  case "$target" in
    embedded | pg | floor | socketio) ;;
    *) die "unknown target '$target' in BENCH_TARGETS (embedded pg floor socketio)" ;;
  esac
done
[ $((clients % rooms)) = 0 ] || die "BENCH_CLIENTS ($clients) must be a multiple of BENCH_ROOMS ($rooms)"
room_size=$((clients / rooms))
[ "$(nproc)" -ge 2 ] || die "needs two CPUs (one for the servers, one for chat-load)"
for cpu in "$server_cpu" "$load_cpu"; do
  if ! [[ "$cpu" =~ ^[0-9]+$ ]] || [ "$cpu" -ge "$(nproc)" ]; then
    die "CPU '$cpu' (BENCH_SERVER_CPU / BENCH_LOAD_CPU) is not one of 0..$(($(nproc) - 1))"
  fi
done
[ "$server_cpu" != "$load_cpu" ] || die "BENCH_SERVER_CPU and BENCH_LOAD_CPU must differ"
hard_nofile=$(ulimit -Hn)
if [ "$hard_nofile" != unlimited ]; then
  [ $((idle_conns + 200)) -le "$hard_nofile" ] ||
    die "BENCH_IDLE_CONNS=$idle_conns does not fit the open-file hard limit $hard_nofile"
  ulimit -n "$hard_nofile"
fi
for tool in taskset ss curl node npm python3; do
  command -v "$tool" >/dev/null || die "needs $tool"
done

started=$SECONDS
check_budget() {
  [ $((SECONDS - started)) -lt "$max_seconds" ] ||
    die "over BENCH_MAX_SECONDS=$max_seconds; stopping (partial data in $work)"
}

# Everything this script starts, stopped on exit whatever happens.
pids=()
services_dir=""
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$services_dir" ]; then scripts/services.sh stop "$services_dir" || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  forget_pid "$1"
}

loadavg_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$work/runs" "$work/logs"
mkdir -p "$work/runs" "$work/logs" "$out"

log "building release binaries"
nice -n 10 cargo build --release --locked -p chat-server -p loadtest >&2
server_bin=$root/target/release/chat-server
load_bin=$root/target/release/chat-load

log "installing the floor (npm ci)"
(cd bench/floor && npm ci --no-audit --no-fund --loglevel=error >&2)

load_help=$("$load_bin" --help)
has_flag() { grep -q -- "$1" <<<"$load_help"; }
if grep -q -- '--protocol' <<<"$load_help" && grep -q socketio <<<"$load_help"; then
  socketio=1
  (cd bench/socketio && npm ci --no-audit --no-fund --loglevel=error >&2)
else
  socketio=0
fi

log "plotting environment (pip: bench/requirements.txt)"
[ -x "$work/venv/bin/python" ] || python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q -r bench/requirements.txt >&2

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # PORT PID: until something accepts on 127.0.0.1:PORT
  local _
  for _ in $(seq 300); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

pg_ctl_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && { echo "$d/pg_ctl"; return; }; done
  return 1
}

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Redis and PostgreSQL from scripts/services.sh, which turns fsync off for the
# tests' speed: PostgreSQL is restarted here with fsync (and synchronous
# commit) on and pinned to the server CPU, so an ack means a flushed WAL.
redis_url="" database_url="" redis_pid="" pg_data=""
start_services() {
  [ -n "$services_dir" ] && return
  services_dir=$work/services
  rm -rf "$services_dir"
  scripts/services.sh start "$services_dir" >/dev/null
  # shellcheck disable=SC1091
  source "$services_dir/env"
  redis_url=$CHAT_TEST_REDIS_URL database_url=$CHAT_TEST_DATABASE_URL
  redis_pid=$(cat "$services_dir/redis.pid")
  taskset -a -cp "$server_cpu" "$redis_pid" >/dev/null
  pg_data=$services_dir/pg/data
  local port=${database_url##*:} pg_ctl
  port=${port%%/*}
  pg_ctl=$(pg_ctl_bin)
  as_pg "$pg_ctl" -D "$pg_data" -m fast stop >/dev/null
  as_pg taskset -c "$server_cpu" "$pg_ctl" -D "$pg_data" -l "$services_dir/pg/log" -w -o \
    "-p $port -k $services_dir/pg -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=on -c synchronous_commit=on" \
    start >/dev/null
  [ "$(psql "$database_url" -Atc 'show fsync')" = on ] || die "PostgreSQL did not come back with fsync on"
  log "Redis $redis_url, PostgreSQL $database_url (fsync on)"
}

# The processes whose CPU time counts as the server's: the server itself and,
# for the targets on Redis/PostgreSQL, those and every PostgreSQL backend.
group_pids() { # SERVER_PID TARGET
  echo "$1"
  case "$2" in
    pg | socketio)
      echo "$redis_pid"
      if [ "$2" = pg ]; then
        local pm
        pm=$(head -1 "$pg_data/postmaster.pid")
        echo "$pm"
        pgrep -P "$pm" || true
      fi
      ;;
  esac
}

# Clock ticks of user + system time, including reaped children, summed.
ticks() {
  local pid stat total=0 f
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    read -r -a f <<<"${stat##*) }"
    total=$((total + f[11] + f[12] + f[13] + f[14]))
  done
  echo "$total"
}

seconds() { awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { print (b - a) / hz }'; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Busy and total ticks of one CPU, whoever ran there (user .. steal, less
# idle and iowait): shows other work on the machine taking a pinned core.
core_ticks() { # CPU
  awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# Per 0.5 s: wall time, the server group's ticks, chat-load's ticks, then busy
# and total ticks of the server CPU and of the load CPU.
sampler() { # OUT SERVER_PID TARGET LOAD_PID
  while kill -0 "$4" 2>/dev/null; do
    # shellcheck disable=SC2046
    echo "$(date +%s.%N) $(ticks $(group_pids "$2" "$3")) $(ticks "$4") $(core_ticks "$server_cpu") $(core_ticks "$load_cpu")" >>"$1"
    sleep 0.5
  done
}

server_pid="" server_url=""
start_server() { # TARGET TAG
  local target=$1 port logf
  port=$(free_port)
  logf=$work/logs/$target-$2.log
  case "$target" in
    embedded | pg)
      local backend=()
      if [ "$target" = pg ]; then
        backend=(--redis-url "$redis_url" --database-url "$database_url")
      else
        rm -f "$work/chat-$2.db"*
        backend=(--sqlite-path "$work/chat-$2.db")
      fi
      RUST_LOG=warn taskset -c "$server_cpu" "$server_bin" --listen "127.0.0.1:$port" \
        --max-connections $(((idle_conns > clients ? idle_conns : clients) + join_conns + 100)) "${backend[@]}" >"$logf" 2>&1 &
      server_url="ws://127.0.0.1:$port/ws"
      ;;
    floor)
      taskset -c "$server_cpu" node bench/floor/server.js "$port" >"$logf" 2>&1 &
      server_url="ws://127.0.0.1:$port/ws"
      ;;
    socketio)
      REDIS_URL=$redis_url taskset -c "$server_cpu" node bench/socketio/server.js "$port" >"$logf" 2>&1 &
      server_url="ws://127.0.0.1:$port/socket.io/?EIO=4&transport=websocket"
      ;;
  esac
  server_pid=$!
  pids+=("$server_pid")
  server_port=$port
  wait_port "$port" "$server_pid" || die "$target did not start; see $logf"
  if [ "$target" = embedded ] || [ "$target" = pg ]; then
    for _ in $(seq 100); do
      curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
      sleep 0.1
    done
  fi
}

protocol_args() { if [ "$1" = socketio ]; then echo "--protocol socketio"; fi; }

# One chat-load run pinned to the load CPU, sampled; writes NAME.json (the
# chat-load summary), NAME.cpu (samples) and NAME.meta (what the script saw).
load() { # TARGET NAME OFFERED CHAT-LOAD-ARGS...
  local target=$1 name=$2 offered=$3 base=$work/runs/$2 t0 s0 p0 t1 s1 p1 rc=0 lpid spid
  shift 3
  local extra=()
  has_flag --timeseries && extra+=(--timeseries "$base.timeseries.jsonl")
  # shellcheck disable=SC2046
  set -- $(protocol_args "$target") "$@"
  # shellcheck disable=SC2046
  s0=$(ticks $(group_pids "$server_pid" "$target"))
  p0=$(ticks "$server_pid")
  t0=$(date +%s.%N)
  taskset -c "$load_cpu" "$load_bin" --url "$server_url" --no-progress --json "$base.json" \
    "${extra[@]}" "$@" >"$base.out" 2>"$base.err" &
  lpid=$!
  pids+=("$lpid")
  sampler "$base.cpu" "$server_pid" "$target" "$lpid" &
  spid=$!
  pids+=("$spid")
  if [ -n "${on_load_started:-}" ]; then "$on_load_started" "$lpid"; fi
  wait "$lpid" || rc=$?
  forget_pid "$lpid"
  # chat-server's own account of its store commits (an ack waits for one).
  case "$target" in
    embedded | pg) curl -fs "http://127.0.0.1:$server_port/metrics" >"$base.metrics" || rm -f "$base.metrics" ;;
  esac
  stop_pid "$spid"
  t1=$(date +%s.%N)
  # shellcheck disable=SC2046
  s1=$(ticks $(group_pids "$server_pid" "$target"))
  p1=$(ticks "$server_pid")
  case $rc in
    0 | 3) ;; # 3: a threshold failed; the numbers are still the numbers
    *) log "chat-load failed (exit $rc) for $name:"; tail -5 "$base.err" >&2 ;;
  esac
  cat >"$base.meta" <<META
{"target":"$target","name":"$name","offered":$offered,"exit":$rc,
 "wall_s":$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}'),
 "server_cpu_s":$(seconds "$s0" "$s1"),
 "server_process_cpu_s":$(seconds "$p0" "$p1"),
 "idle":${idle_meta:-null},
 "joins":${joins_meta:-null}}
META
}

# Idle memory: a fresh server, its RSS before, then with idle_conns clients
# connected (joined, one room of room_size each, hardly sending), per connection.
idle_meta="" joins_meta=""
measure_idle() { # TARGET
  local target=$1 base_rss n
  start_server "$target" idle
  sleep 1
  base_rss=$(rss_kib "$server_pid")
  on_load_started=idle_probe
  idle_probe() { # LOAD_PID: wait for every connection, let RSS settle, sample
    # Every connection, or as many as the server took once the count has not
    # grown for 5 s (a server that refuses or times out some would otherwise
    # be sampled after chat-load left, with nothing connected).
    local conns=0 last=-1 still=0 _
    for _ in $(seq $((idle_conns / 50 + 120))); do
      conns=$(ss -Htn state established "( sport = :$server_port )" | wc -l)
      [ "$conns" -ge "$idle_conns" ] && break
      if [ "$conns" -gt 0 ] && [ "$conns" = "$last" ]; then still=$((still + 1)); else still=0; fi
      [ "$still" -ge 10 ] && break
      last=$conns
      kill -0 "$1" 2>/dev/null || break
      sleep 0.5
    done
    # Right after the burst, and again once the allocator has returned the
    # burst's pages (jemalloc decays dirty pages over ~10 s): the second is
    # the idle figure.
    sleep 2
    local rss burst
    burst=$(rss_kib "$server_pid")
    sleep "$idle_hold"
    conns=$(ss -Htn state established "( sport = :$server_port )" | wc -l)
    rss=$(rss_kib "$server_pid")
    if ! kill -0 "$1" 2>/dev/null; then
      # chat-load left before the sample: its connections are gone, and an RSS
      # taken now is no idle figure.
      log "$target idle: chat-load ended before the sample; no idle figure"
      conns=0
    fi
    idle_meta="{\"connections\":$conns,\"rss_before_kib\":$base_rss,\"rss_burst_kib\":$burst,\"rss_kib\":$rss}"
    log "$target idle: $conns connections, RSS $base_rss -> $burst KiB after the burst, $rss KiB ${idle_hold}s later"
    # The sample is taken: end the hold now (chat-load reports on SIGINT).
    kill -INT "$1" 2>/dev/null || true
  }
  n=$(((idle_conns + 999) / 1000))
  # --rate 0.001: a period of 1000 s, so only the first client of each batch
  # sends (once); everyone else stays connected and idle until the probe has
  # sampled and interrupts chat-load. --duration only bounds the hold: it
  # outlasts the probe's wait for connections (idle_conns / 50 + 120 checks
  # 0.5 s apart), since a slow server (Socket.IO took 30 s for its last
  # connections) was otherwise sampled after chat-load had left.
  load "$target" "$target-idle" 0 --clients "$idle_conns" --rooms $((idle_conns / room_size > 0 ? idle_conns / room_size : 1)) \
    --batch-size 1000 --batch-interval 1s --messages 1 --rate 0.001 \
    --duration "$((n + idle_hold + idle_conns / 100 + 90))s" --drain-timeout 2s --source-ips 4 \
    --connect-timeout 30s --threshold 'unsent>=0'
  on_load_started="" idle_meta=""
  stop_pid "$server_pid"
}

# Joins: a fresh server, join_conns clients connecting and joining at join_rate
# per second (batches every 100 ms) into rooms of join_room, then leaving. The
# connect latency runs from each client's scheduled start to its `joined`.
# --duration is the batches plus the 30 s connect timeout: a slow server's last
# joins are measured instead of cut off as "still connecting" at the end.
measure_joins() { # TARGET
  local target=$1 batch=$((join_rate / 10 > 0 ? join_rate / 10 : 1))
  start_server "$target" joins
  joins_meta="{\"offered_per_sec\":$join_rate,\"room_size\":$join_room,\"batch\":$batch}"
  load "$target" "$target-joins" 0 --clients "$join_conns" \
    --rooms $((join_conns / join_room > 0 ? join_conns / join_room : 1)) \
    --batch-size "$batch" --batch-interval 100ms --messages 0 \
    --duration "$(((join_conns + join_rate - 1) / join_rate + 30))s" \
    --drain-timeout 2s --source-ips 4 --connect-timeout 30s
  joins_meta=""
  stop_pid "$server_pid"
}

# At every step of the ladder, each target in turn, on a fresh server: the
# targets of one step run minutes apart instead of a whole ladder apart, so
# slow drift in the machine's other load hits them alike.
active=()
for target in $targets; do
  if [ "$target" = socketio ] && [ "$socketio" != 1 ]; then
    log "socketio: skipped, this chat-load has no --protocol socketio"
    continue
  fi
  active+=("$target")
done
for target in "${active[@]}"; do
  case "$target" in
    pg | socketio) start_services ;;
  esac
done
log "ladder $ladder deliveries/s, ${duration}s each, targets interleaved: ${active[*]}"
for offered in $ladder; do
  rate=$(awk -v d="$offered" -v c="$clients" -v m="$room_size" 'BEGIN{printf "%.6g", d/(c*m)}')
  messages=$(awk -v r="$rate" -v s="$duration" 'BEGIN{n=int(r*s+0.5); print (n<1?1:n)}')
  for target in "${active[@]}"; do
    check_budget
    log "$target @ $offered deliveries/s: --rate $rate --messages $messages"
    start_server "$target" "ladder-$offered"
    load "$target" "$target-$offered" "$offered" --clients "$clients" --rooms "$rooms" \
      --batch-size "$clients" --batch-interval 0s --rate "$rate" --messages "$messages" \
      --drain-timeout 5s --connect-timeout 30s
    stop_pid "$server_pid"
  done
done
for target in "${active[@]}"; do
  check_budget
  log "$target: idle memory at $idle_conns connections"
  measure_idle "$target"
  log "$target: $join_conns joins at $join_rate/s into rooms of $join_room"
  measure_joins "$target"
done

{
  echo "quick=$quick"
  echo "command=$command_line"
  echo "ladder=$ladder"
  echo "duration=$duration"
  echo "clients=$clients"
  echo "rooms=$rooms"
  echo "idle_conns=$idle_conns"
  echo "idle_hold=$idle_hold"
  echo "join_conns=$join_conns"
  echo "join_rate=$join_rate"
  echo "join_room=$join_room"
  echo "server_cpu=$server_cpu"
  echo "load_cpu=$load_cpu"
  echo "socketio_supported=$socketio"
  echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo '+dirty')"
  echo "kernel=$(uname -sr)"
  echo "nproc=$(nproc)"
  echo "loadavg_at_start=$loadavg_at_start"
  echo "node=$(node --version)"
  echo "rustc=$(rustc --version)"
  echo "postgres=$(as_pg "$(dirname "$(pg_ctl_bin)")/postgres" --version 2>/dev/null || echo none)"
  echo "redis=$(redis-server --version 2>/dev/null || echo none)"
} >"$work/runs/machine.env"
lscpu >"$work/runs/lscpu.txt"

"$work/venv/bin/python" bench/report.py "$work/runs" "$out/results.json" "$out/RESULTS.md"
"$work/venv/bin/python" bench/plot.py "$out/results.json" "$out/latency.png"
log "wrote $out/RESULTS.md, $out/results.json and $out/latency.png in $((SECONDS - started))s"
