//! The fault-injection suite (issue 8): real processes killed under load.
//!
//! Each scenario starts its own redis-server, its own PostgreSQL cluster and
//! two `chat-server` processes (see `faults_support`), runs `chat-load` over
//! both instances, strikes in the middle of the run, and then requires:
//!
//! - `lost_acked == 0` and no duplicate, out-of-order or unexpected delivery;
//! - a complete audit: only what docs/protocol.md allows for that fault is
//!   missing (refused sends, and after a crash the never-acked skips);
//! - every acked message has a row of its own in PostgreSQL (the audit goes by
//!   seq, so two messages that share one are seen there only);
//! - both instances `/readyz` 200 again, and fresh clients on both served
//!   completely (a second, short `chat-load` run).
//!
//! It takes minutes and kills processes, so it runs only with `CHAT_FAULTS=1`
//! (scripts/test.sh sets it), one scenario at a time (they would compete for
//! the CPU). Run it by hand with
//! `cargo build -p chat-server && CHAT_FAULTS=1 cargo test -p loadtest --test faults -- --nocapture`.
//! Nothing here asserts how fast anything was; the bounds on waits only keep
//! a broken server from hanging the suite.

mod faults_support;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use faults_support::load::{Load, Summary, Tolerance};
use faults_support::poison;
use faults_support::scratch::{Scratch, eventually, unique};
use faults_support::stack::{Stack, verdict};

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `body` in its own scratch directory when the suite is enabled.
fn scenario(name: &str, body: impl FnOnce(&Scratch)) {
    if std::env::var("CHAT_FAULTS").as_deref() != Ok("1") {
        println!(
            "skipped {name}: set CHAT_FAULTS=1 to run the fault-injection suite (scripts/test.sh does)"
        );
        return;
    }
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    // Children inherit the limit: the storm needs ~15 000 sockets per process.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    println!("[{name}] open-file limit {nofile}");
    body(&Scratch::new(name));
}

/// The shape of every scenario but the storm: the load over both instances,
/// `fault` once it is under way (returning what it found wrong itself), then
/// fresh clients as soon as both instances are ready again, then the load's
/// audit under `tolerance`. Returns the load's summary and every problem.
fn strike(
    dir: &Scratch,
    tolerance: Tolerance,
    fault: impl FnOnce(&mut Stack, &str) -> Vec<String>,
) -> (Summary, Vec<String>) {
    let mut stack = Stack::start(dir, &[]);
    let run_id = unique("f");
    let load = stack.load(dir, &run_id).spawn();
    stack.wait_for_traffic();
    let mut problems = fault(&mut stack, &run_id);
    problems.extend(stack.recovery_problems(dir, &run_id));
    let run = load.finish();
    problems.extend(stack.run_problems(&run, &run_id, tolerance));
    problems.extend(stack.readiness_problems("at the end"));
    (run, problems)
}

#[test]
fn redis_sigkill_and_restart_mid_run() {
    scenario("redis-kill", |dir| {
        let (_, problems) = strike(dir, Tolerance::NeverAckedSkips, |stack, _| {
            stack.redis.kill();
            std::thread::sleep(Duration::from_secs(2));
            stack.redis.restart();
            println!("[redis-kill] redis SIGKILLed, down 2 s, restarted empty");
            Vec::new()
        });
        verdict("redis-kill", &problems);
    });
}

#[test]
fn redis_counter_set_below_the_stored_seq_mid_run() {
    scenario("redis-stale-counter", |dir| {
        let (_, problems) = strike(dir, Tolerance::NeverAckedSkips, |stack, run_id| {
            let room = format!("{run_id}-r3");
            let stored = || {
                stack
                    .postgres
                    .query(&format!(
                        "SELECT coalesce(max(seq), 0) FROM messages WHERE room = '{room}'"
                    ))
                    .parse::<u64>()
                    .expect("max(seq) is a number")
            };
            if !eventually(|| stored() >= 20) {
                return vec![format!("room {room} stored only {} messages", stored())];
            }
            let key = format!("chat:seq:{room}");
            let counter = stack.redis.cli(&["GET", &key]).expect("GET the counter");
            let max = stored();
            let stale = (max - 10).to_string();
            stack
                .redis
                .cli(&["SET", &key, &stale])
                .expect("SET the counter");
            println!(
                "[redis-stale-counter] {key} was {counter}, stored max seq {max}, set to {stale}"
            );
            Vec::new()
        });
        verdict("redis-stale-counter", &problems);
    });
}

#[test]
fn postgres_immediate_restart_under_load() {
    scenario("postgres-restart", |dir| {
        let (_, problems) = strike(dir, Tolerance::Refusals, |stack, _| {
            stack.postgres.stop_immediately();
            // Sends are refused meanwhile; what was accepted just before the
            // crash must be kept, retried and acked once it is back.
            std::thread::sleep(Duration::from_secs(8));
            stack.postgres.start_again();
            println!("[postgres-restart] pg_ctl -m immediate stop, down 8 s, started again");
            Vec::new()
        });
        verdict("postgres-restart", &problems);
    });
}

#[test]
fn chat_server_sigkill_under_load_fails_over_to_the_other_instance() {
    scenario("server-kill", |dir| {
        let (run, mut problems) = strike(dir, Tolerance::NeverAckedSkips, |stack, _| {
            stack.servers[0].kill();
            // Its clients reconnect to b at once; a comes back (like a
            // replaced pod) while the load still runs.
            std::thread::sleep(Duration::from_secs(3));
            stack.servers[0].restart();
            println!("[server-kill] chat-server a SIGKILLed, restarted 3 s later");
            Vec::new()
        });
        if run.n("/connections/reconnects") == 0 {
            problems.push("no client reconnected after the kill".into());
        }
        verdict("server-kill", &problems);
    });
}

/// Clients in the storm (env `CHAT_FAULTS_STORM_CLIENTS`, default 15 000).
fn storm_clients() -> u32 {
    match std::env::var("CHAT_FAULTS_STORM_CLIENTS") {
        Ok(n) => n
            .parse()
            .ok()
            .filter(|n| *n >= 10)
            .unwrap_or_else(|| panic!("CHAT_FAULTS_STORM_CLIENTS={n}: want a number >= 10")),
        Err(_) => 15_000,
    }
}

#[test]
fn reconnect_storm_on_one_instance_joins_everyone() {
    scenario("storm", |dir| {
        let clients = storm_clients();
        let max_connections = (clients + 1000).to_string();
        // Joins may queue as long as the clients wait (below): a debug build on
        // two shared cores gets through them several times slower than a
        // release build, and queued-not-failed is what this asserts. For the
        // same reason Redis replies may be late: that build, swamped by 15,000
        // connects, has read some only after the default 2 s, twice over: 27
        // joins were refused in one of seven runs here.
        let mut stack = Stack::start(
            dir,
            &[
                "--max-connections",
                &max_connections,
                "--join-queue-wait-secs",
                "110",
                "--redis-timeout-ms",
                "10000",
            ],
        );
        let run_id = unique("f");
        // Ten members a room; each sends one message, and stays until its
        // room is done, so all of them are connected at the peak. A client
        // waits up to 120 s for its `joined`: what is under test is that the
        // server queues joins instead of failing them, not how fast a debug
        // build on a shared machine gets through them (that is reported).
        let (clients, rooms) = (clients.to_string(), (clients / 10).to_string());
        let args = [
            "--clients",
            &clients,
            "--rooms",
            &rooms,
            "--messages",
            "1",
            "--rate",
            "1",
            "--batch-size",
            "2000",
            "--batch-interval",
            "200ms",
            "--source-ips",
            "8",
            "--threads",
            "2",
            "--connect-timeout",
            "120s",
            "--drain-timeout",
            "15s",
        ];
        let storm = &stack.servers[0];
        let warnings_before = storm.warnings();
        let run = Load::new(dir, "storm", &[storm.url()], &run_id, &args).run();
        let warnings = storm.warnings() - warnings_before;
        let refused: u64 = run.json["connections"]["failures"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(reason, _)| reason.starts_with("join error"))
            .filter_map(|(_, n)| n.as_u64())
            .sum();
        println!(
            "[storm] {clients} clients on one instance in batches of 2000 every 200 ms: connected {}, failures {}, connect p50 {:.1} ms p99 {:.1} ms; joins refused {refused}, server WARN/ERROR lines {warnings}",
            run.n("/connections/connected"),
            run.n("/connections/failed"),
            run.ms("/latency_ms/connect/p50"),
            run.ms("/latency_ms/connect/p99"),
        );
        let mut problems = stack.run_problems(&run, &run_id, Tolerance::Nothing);
        // A refused join must at least be explained in the log.
        if (warnings as u64) < refused {
            problems.push(format!(
                "{refused} joins refused but only {warnings} WARN/ERROR lines in {}",
                storm.log().display()
            ));
        }
        problems.extend(stack.recovery_problems(dir, &run_id));
        problems.extend(stack.readiness_problems("at the end"));
        verdict("storm", &problems);
    });
}

#[test]
fn poison_input_gets_its_error_and_other_rooms_keep_working() {
    scenario("poison", |dir| {
        let (_, problems) = strike(dir, Tolerance::Nothing, |stack, run_id| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the raw clients");
            let room = format!("{run_id}-poison");
            stack
                .servers
                .iter()
                .flat_map(|s| runtime.block_on(poison::problems(&s.name, &s.url(), &room)))
                .collect()
        });
        verdict("poison", &problems);
    });
}
