//! `chat-load` as a subprocess against real chat-server instances started in
//! this test process on 127.0.0.1:0: the embedded mode (in-process broker,
//! SQLite in a temp dir) and two instances sharing Redis and PostgreSQL
//! (CHAT_TEST_REDIS_URL / CHAT_TEST_DATABASE_URL, a fresh database per test).
//!
//! The assertions are about completeness and the contract of the tool (audit
//! numbers, JSON schema, exit statuses), never about how fast anything was.

use std::net::SocketAddr;

/// The bare HTTP GET the fault suite uses too.
#[path = "faults_support/http.rs"]
mod http;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use chat_testkit::{Server, TempDir, unique};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;
use tokio::runtime::Runtime;

/// Upper bound for any wait in a test (not an assertion on speed).
const WAIT: Duration = Duration::from_secs(30);

/// chat-server instances (chat-testkit's in-process servers) on a runtime owned
/// by the test, which drives the chat-load subprocess synchronously.
struct Cluster {
    rt: Runtime,
    servers: Vec<Server>,
}

impl Cluster {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        Self {
            rt,
            servers: Vec::new(),
        }
    }

    /// One embedded instance: in-process broker, SQLite in `dir`.
    fn embedded(dir: &TempDir) -> Self {
        Self::embedded_with(dir, &[])
    }

    /// One embedded instance with extra server flags (e.g. `--jwt-secret`).
    fn embedded_with(dir: &TempDir, flags: &[&str]) -> Self {
        let mut cluster = Self::new();
        let history = dir.file("history.db");
        let args: Vec<&str> = ["--sqlite-path", history.as_str()]
            .into_iter()
            .chain(flags.iter().copied())
            .collect();
        cluster.start(&args);
        cluster
    }

    /// `n` instances on the shared Redis and a fresh PostgreSQL database.
    fn clustered(n: usize) -> Self {
        let mut cluster = Self::new();
        let database = cluster.rt.block_on(chat_testkit::fresh_database());
        for _ in 0..n {
            let server = cluster.rt.block_on(Server::clustered(
                &database,
                &["--shutdown-grace-secs", "3"],
            ));
            cluster.servers.push(server);
        }
        cluster
    }

    fn start(&mut self, args: &[&str]) {
        let server = self.rt.block_on(Server::start(args));
        self.servers.push(server);
    }

    fn urls(&self) -> Vec<String> {
        self.servers.iter().map(Server::ws_url).collect()
    }

    /// Shuts instance `i` down gracefully (its clients get 1001) and checks
    /// that `run` returned cleanly; later instances move down one index.
    fn shut_down(&mut self, i: usize) {
        let server = self.servers.remove(i);
        self.rt.block_on(server.stop()).expect("a clean shutdown");
    }
}

/// A Prometheus sample of `addr`'s /metrics (0 when absent).
fn metric(addr: SocketAddr, name: &str) -> f64 {
    http::get(addr, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// The small scenario every test runs: 12 clients in 3 rooms, 3 batches.
const SMALL: &[&str] = &[
    "--clients",
    "12",
    "--rooms",
    "3",
    "--batch-size",
    "4",
    "--batch-interval",
    "200ms",
];

/// The traffic of every test: 10 messages per client at 20/s.
const TRAFFIC: &[&str] = &[
    "--messages",
    "10",
    "--rate",
    "20",
    "--drain-timeout",
    "5s",
    "--no-progress",
];

struct Run {
    out: Output,
    json: Value,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn assert_exit(&self, code: i32) {
        let (out, err) = (self.stdout(), self.stderr());
        assert_eq!(self.code(), Some(code), "stdout: {out}\nstderr: {err}");
    }

    fn u64(&self, pointer: &str) -> u64 {
        self.json
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{pointer} is not an integer in {:#}", self.json))
    }
}

/// A `chat-load` invocation with the small scenario and a JSON summary file.
struct Load {
    cmd: Command,
    json_path: PathBuf,
}

impl Load {
    fn new(urls: &[String], args: &[&str], dir: &TempDir) -> Self {
        let args: Vec<&str> = SMALL.iter().chain(args).copied().collect();
        Self::shaped(urls, &args, dir)
    }

    /// The test's traffic, with the shape (clients, rooms, starts) in `args`.
    fn shaped(urls: &[String], args: &[&str], dir: &TempDir) -> Self {
        let json_path = PathBuf::from(dir.file(&format!("{}.json", unique("summary"))));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-load"));
        for url in urls {
            cmd.args(["--url", url]);
        }
        cmd.args(TRAFFIC).args(args).arg("--json").arg(&json_path);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Self { cmd, json_path }
    }

    fn env(mut self, name: &str, value: &str) -> Self {
        self.cmd.env(name, value);
        self
    }

    /// Runs a `chat-load` that is expected to fail before its report.
    fn output(mut self) -> Output {
        self.cmd.output().expect("chat-load runs")
    }

    fn spawn(mut self) -> Running {
        let child = self.cmd.spawn().expect("chat-load starts");
        Running {
            child,
            json_path: self.json_path,
        }
    }

    fn run(self) -> Run {
        self.spawn().finish()
    }
}

struct Running {
    child: Child,
    json_path: PathBuf,
}

impl Running {
    fn finish(self) -> Run {
        let out = self.child.wait_with_output().expect("chat-load runs");
        let text = std::fs::read_to_string(&self.json_path).unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "no JSON summary ({e}); stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Run { out, json }
    }
}

/// The audit found every owed delivery exactly once, in order.
fn assert_complete(run: &Run) {
    assert_complete_with(run, 10, 4);
}

/// [`assert_complete`] for a run of `messages` per client in rooms of at
/// most `largest` members.
fn assert_complete_with(run: &Run, messages: u64, largest: u64) {
    let audit = &run.json["audit"];
    run.assert_exit(0);
    for zero in [
        "missing",
        "duplicated",
        "out_of_order",
        "unexpected",
        "incomplete_members",
        "lost_acked",
    ] {
        assert_eq!(audit[zero], 0, "audit.{zero} in {audit:#}");
    }
    assert_eq!(audit["members"], 12, "{audit:#}");
    assert_eq!(run.u64("/audit/expected"), run.u64("/audit/delivered"));
    // Every member is owed at least its own messages (the echo) and at most
    // every message of its room.
    let expected = run.u64("/audit/expected");
    let sent = 12 * messages;
    assert!(
        (sent..=largest * sent).contains(&expected),
        "expected {expected}"
    );
    assert_eq!(run.u64("/connections/connected"), 12);
    assert_eq!(run.u64("/messages/sent"), sent);
    assert_eq!(run.u64("/messages/acked"), sent);
    assert_eq!(run.u64("/messages/unacked"), 0);
    assert_eq!(run.u64("/latency_ms/connect/count"), 12);
    assert_eq!(run.u64("/latency_ms/ack/count"), sent);
    assert_eq!(run.u64("/latency_ms/ack/lower_bounds"), 0);
    assert_eq!(run.u64("/latency_ms/delivery/lower_bounds"), 0);
    assert_eq!(
        run.u64("/latency_ms/delivery/count"),
        run.u64("/audit/delivered")
    );
    assert_eq!(run.u64("/deliveries/total"), run.u64("/audit/delivered"));
    assert_eq!(run.json["passed"], true);
    assert!(run.stdout().contains("result: PASS"), "{}", run.stdout());
}

#[test]
fn embedded_server_run_is_complete_and_the_json_follows_the_schema() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    let run = Load::new(&cluster.urls(), &[], &dir).run();
    assert_complete(&run);

    let j = &run.json;
    assert_eq!(j["schema"], "chat-load/summary/v1");
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected_keys = [
        "schema",
        "run",
        "connections",
        "messages",
        "deliveries",
        "latency_ms",
        "breakdown",
        "audit",
        "history",
        "errors",
        "closes",
        "generator",
        "thresholds",
        "passed",
    ];
    expected_keys.sort_unstable();
    assert_eq!(keys, expected_keys);
    assert_eq!(j["run"]["mode"], "open");
    assert_eq!(j["run"]["clients"], 12);
    for histogram in ["connect", "ack", "delivery", "send_lag", "receive_lag"] {
        let h = &j["latency_ms"][histogram];
        for stat in [
            "count",
            "lower_bounds",
            "min",
            "mean",
            "p50",
            "p90",
            "p99",
            "p99_9",
            "max",
        ] {
            assert!(h[stat].is_number(), "latency_ms.{histogram}.{stat}");
        }
        assert!(h["p50"].as_f64() <= h["p99"].as_f64() && h["p99"].as_f64() <= h["max"].as_f64());
    }
    for number in [
        "cpu_user_s",
        "cpu_system_s",
        "cpu_percent",
        "deliveries_per_cpu_sec",
        "max_rss_bytes",
    ] {
        assert!(j["generator"][number].is_number(), "generator.{number}");
    }
    let rules: Vec<&str> = j["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "missing==0",
            "duplicated==0",
            "out_of_order==0",
            "unacked==0",
            "unsent==0",
            "connect_errors==0",
            "duplicate_acks==0",
            "seq_conflicts==0",
            "stamp_conflicts==0",
            "lost_acked==0"
        ]
    );
    // The generator measured its own receive lag, on its own line.
    assert!(run.u64("/latency_ms/receive_lag/count") > 0);
    assert!(run.stdout().contains("receive lag"), "{}", run.stdout());
    assert_eq!(j["history"], Value::Null, "not verified without the flag");
    for clean in ["duplicate_acks", "seq_conflicts", "stamp_conflicts"] {
        assert_eq!(j["audit"][clean], 0, "audit.{clean}");
    }
}

#[test]
fn verify_history_finds_every_acked_message_stored_once() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    let run = Load::new(&cluster.urls(), &["--verify-history"], &dir).run();
    assert_complete(&run);
    let history = &run.json["history"];
    assert_eq!(history["rooms"], 3, "{history:#}");
    assert_eq!(history["acked"], 120, "{history:#}");
    assert_eq!(history["stored"], 120, "{history:#}");
    for zero in ["missing", "duplicated", "mismatched"] {
        assert_eq!(history[zero], 0, "history.{zero} in {history:#}");
    }
    assert!(run.stdout().contains("PASS  history_missing==0"));
}

#[test]
fn verify_history_reads_a_server_with_auth_on_and_long_histories_page_by_page() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded_with(&dir, &["--jwt-secret", SECRET]);
    // 3 rooms × 4 members × 60 messages: 240 per room, two pages each.
    let args = [
        "--jwt-secret",
        SECRET,
        "--verify-history",
        "--messages",
        "60",
        "--rate",
        "50",
    ];
    let run = Load::new(&cluster.urls(), &args, &dir).run();
    assert_complete_with(&run, 60, 4);
    let history = &run.json["history"];
    assert_eq!(history["stored"], 720, "{history:#}");
    assert_eq!(history["missing"], 0, "{history:#}");
}

#[test]
fn the_time_series_accounts_for_every_event_once() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    let path = dir.file("series.jsonl");
    let hdr_path = dir.file("latency.hlog");
    let args = [
        "--timeseries",
        &path,
        "--hdr-log",
        &hdr_path,
        "--threads",
        "2",
    ];
    let run = Load::new(&cluster.urls(), &args, &dir).run();
    assert_complete(&run);
    let text = std::fs::read_to_string(&path).expect("the time series was written");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(!lines.is_empty());
    let seconds: Vec<u64> = lines.iter().map(|l| l["t"].as_u64().unwrap()).collect();
    assert!(seconds.windows(2).all(|w| w[0] < w[1]), "{seconds:?}");
    let sum = |key: &str| -> u64 { lines.iter().map(|l| l[key].as_u64().unwrap()).sum() };
    assert_eq!(sum("sent"), run.u64("/messages/sent"));
    assert_eq!(sum("acked"), run.u64("/messages/acked"));
    assert_eq!(sum("delivered"), run.u64("/deliveries/total"));
    assert_eq!(sum("connects"), 12);
    assert_eq!((sum("errors"), sum("reconnects")), (0, 0));
    let busy = lines
        .iter()
        .find(|l| l["delivered"].as_u64() > Some(0))
        .unwrap();
    for key in [
        "delivery_p50_ms",
        "delivery_p99_ms",
        "ack_p50_ms",
        "ack_p99_ms",
    ] {
        assert!(busy[key].is_number(), "{key} in {busy}");
    }
    // The HdrHistogram log holds the same seconds, with every timed sample.
    let log = std::fs::read(&hdr_path).expect("the HdrHistogram log was written");
    let mut samples = std::collections::BTreeMap::<String, (u64, u64)>::new();
    for entry in IntervalLogIterator::new(&log) {
        let LogEntry::Interval(interval) = entry.expect("a valid interval log") else {
            continue;
        };
        let bytes = STANDARD.decode(interval.encoded_histogram()).unwrap();
        let histogram: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .expect("a V2 compressed histogram");
        let tag = interval.tag().expect("tagged").as_str().to_owned();
        let (seconds, count) = samples.entry(tag).or_default();
        *seconds += 1;
        *count += histogram.len();
    }
    let timed = |family: &str| {
        run.u64(&format!("/latency_ms/{family}/count"))
            - run.u64(&format!("/latency_ms/{family}/lower_bounds"))
    };
    let n = lines.len() as u64;
    assert_eq!(samples["delivery"], (n, timed("delivery")));
    assert_eq!(samples["ack"], (n, timed("ack")));
    assert!(timed("delivery") > 0);
}

#[test]
fn a_ramp_into_uneven_rooms_is_complete() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    // 12 clients ramped in over two stages into one room of 8 and two of 2.
    let shape = ["--stages", "300ms:6,300ms:12", "--room-sizes", "1x8,2x2"];
    let run = Load::shaped(&cluster.urls(), &shape, &dir).run();
    assert_complete_with(&run, 10, 8);
    assert_eq!(run.json["run"]["rooms"], 3);
    // Owed: the hot room's 80 messages to up to 8 members, the small rooms' 20 to 2.
    assert!(run.u64("/audit/expected") <= 8 * 80 + 2 * 2 * 20);
}

#[test]
fn churn_joins_and_leaves_while_the_audited_clients_lose_nothing() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    let churn = ["--churn", "20", "--churn-stay", "100ms"];
    let run = Load::new(&cluster.urls(), &churn, &dir).run();
    assert_complete(&run);
    let joins = run.u64("/connections/churn_joins");
    assert!(joins > 0, "{:#}", run.json["connections"]);
    assert_eq!(run.u64("/connections/churn_failures"), 0);
    // Churners still in their room when the run ended were aborted.
    assert!(run.u64("/connections/churn_leaves") > 0);
    assert!(run.u64("/connections/churn_leaves") <= joins);
    // The audited members saw the churners come and go.
    assert!(run.u64("/deliveries/presence") > 0);
    assert!(run.stdout().contains("churn        joined"));
}

#[test]
fn closed_loop_run_is_complete() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    let run = Load::new(&cluster.urls(), &["--closed-loop"], &dir).run();
    assert_complete(&run);
    assert_eq!(run.json["run"]["mode"], "closed");
}

#[test]
fn two_instances_on_redis_and_postgres_deliver_everything_across_instances() {
    let dir = TempDir::new();
    let cluster = Cluster::clustered(2);
    let run = Load::new(
        &cluster.urls(),
        &["--source-ips", "4", "--threads", "2"],
        &dir,
    )
    .run();
    assert_complete(&run);
    // The breakdown splits the deliveries by instance and by path.
    let b = &run.json["breakdown"];
    let urls = b["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 2);
    let per_url =
        |key: &str| -> u64 { urls.iter().map(|u| u[key]["count"].as_u64().unwrap()).sum() };
    assert_eq!(per_url("delivery"), run.u64("/audit/delivered"));
    assert_eq!(per_url("ack"), 120);
    assert!(
        urls.iter()
            .all(|u| u["delivery"]["count"].as_u64() > Some(0))
    );
    let (same, cross) = (
        run.u64("/breakdown/same_instance/count"),
        run.u64("/breakdown/cross_instance/count"),
    );
    assert!(same > 0 && cross > 0, "same {same}, cross {cross}");
    assert_eq!(same + cross, run.u64("/audit/delivered"));
    // Both instances carried senders (6 clients × 10 messages each), so each
    // room spanned both and half of every room's deliveries crossed Redis.
    for server in &cluster.servers {
        assert_eq!(
            metric(server.addr, "chat_messages_received_total"),
            60.0,
            "{}",
            server.addr
        );
    }
}

#[test]
fn a_violated_threshold_exits_non_zero_and_is_named() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    let rules = [
        "--threshold",
        "expected<1",
        "--threshold",
        "delivery.p99<3600s",
    ];
    let run = Load::new(&cluster.urls(), &rules, &dir).run();
    run.assert_exit(3);
    assert!(
        run.stderr().contains("threshold failed: expected<1"),
        "{}",
        run.stderr()
    );
    assert!(
        !run.stderr().contains("delivery.p99"),
        "a passed rule is not reported as failed"
    );
    assert!(
        run.stdout().contains("FAIL  expected<1"),
        "{}",
        run.stdout()
    );
    assert_eq!(run.json["passed"], false);
    let verdict = |rule: &str| {
        run.json["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["rule"] == rule)
            .unwrap_or_else(|| panic!("{rule} not in thresholds"))
            .clone()
    };
    assert_eq!(verdict("expected<1")["passed"], false);
    assert_eq!(
        verdict("expected<1")["actual"].as_f64(),
        Some(run.u64("/audit/expected") as f64)
    );
    assert_eq!(verdict("delivery.p99<3600s")["passed"], true);
    assert_eq!(verdict("missing==0")["passed"], true);
}

/// Runs a longer scenario on two instances and shuts the first one down once
/// it has accepted some messages, i.e. in the middle of the run.
fn run_through_a_shutdown(max_reconnects: &str) -> Run {
    let dir = TempDir::new();
    let mut cluster = Cluster::clustered(2);
    let args = [
        "--batch-size",
        "12",
        "--messages",
        "60",
        "--max-reconnects",
        max_reconnects,
        // Sends in flight when the instance went away are never acked.
        "--threshold",
        "unacked<=720",
    ];
    let running = Load::new(&cluster.urls(), &args, &dir).spawn();
    let first = cluster.servers[0].addr;
    let deadline = std::time::Instant::now() + WAIT;
    while metric(first, "chat_messages_received_total") < 24.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no traffic reached {first}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.shut_down(0);
    running.finish()
}

#[test]
fn an_instance_shutdown_is_recovered_by_rejoining_with_since() {
    let run = run_through_a_shutdown("5");
    let audit = &run.json["audit"];
    run.assert_exit(0);
    assert!(run.u64("/closes/1001") > 0, "{:#}", run.json["closes"]);
    assert!(run.u64("/connections/reconnects") > 0);
    assert!(run.u64("/audit/recovered") > 0, "{audit:#}");
    assert_eq!(audit["missing"], 0, "{audit:#}");
    assert_eq!(audit["lost_acked"], 0, "{audit:#}");
    assert_eq!(audit["duplicated"], 0, "{audit:#}");
}

#[test]
fn lost_deliveries_fail_the_default_threshold() {
    // Without reconnects, the clients of the stopped instance miss the rest.
    let run = run_through_a_shutdown("0");
    run.assert_exit(3);
    assert!(run.stderr().contains("missing==0"), "{}", run.stderr());
    assert!(run.u64("/audit/missing") > 0);
    // The deliveries that never happened are in the histogram, as lower bounds.
    assert!(run.u64("/latency_ms/delivery/lower_bounds") > 0);
    assert_eq!(
        run.u64("/latency_ms/delivery/lower_bounds"),
        run.u64("/audit/delivery_lower_bounds")
    );
    assert!(run.u64("/audit/incomplete_members") > 0);
    assert_eq!(run.u64("/connections/reconnects"), 0);
}

#[test]
fn duration_bounds_the_run_and_the_rest_is_reported_unsent() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    // 1000 messages at 20/s would take 50 s; --duration stops sending first.
    let args = [
        "--messages",
        "1000",
        "--duration",
        "1s",
        "--drain-timeout",
        "2s",
    ];
    let run = Load::new(&cluster.urls(), &args, &dir).run();
    run.assert_exit(0);
    // What fell after the window was never due: not `unsent`, no failure.
    let (sent, after) = (run.u64("/messages/sent"), run.u64("/messages/after_window"));
    assert!(
        sent > 0 && after > 0,
        "sent {sent}, after the window {after}"
    );
    assert_eq!(run.u64("/messages/unsent"), 0);
    assert_eq!(sent + after, 12_000);
    assert_eq!(run.u64("/audit/missing"), 0);
    assert_eq!(run.u64("/audit/expected"), run.u64("/audit/delivered"));
}

#[test]
fn zero_messages_only_connects_and_joins() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    let run = Load::new(&cluster.urls(), &["--messages", "0"], &dir).run();
    run.assert_exit(0);
    assert_eq!(run.u64("/connections/connected"), 12);
    assert_eq!(run.u64("/audit/members"), 12);
    assert_eq!(run.u64("/audit/expected"), 0);
    assert_eq!(run.u64("/messages/sent"), 0);
}

/// The server's HS256 secret in the auth tests.
const SECRET: &str = "chat-load-test-secret";

#[test]
fn a_server_with_auth_on_is_loaded_with_minted_tokens() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded_with(&dir, &["--jwt-secret", SECRET]);
    let run = Load::new(&cluster.urls(), &["--jwt-secret", SECRET], &dir).run();
    assert_complete(&run);
    assert_eq!(run.json["closes"], serde_json::json!({}));
    assert!(!run.stdout().contains(SECRET) && !run.stderr().contains(SECRET));
}

#[test]
fn the_secret_can_come_from_the_environment() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded_with(&dir, &["--jwt-secret", SECRET]);
    let run = Load::new(&cluster.urls(), &[], &dir)
        .env("CHAT_LOAD_JWT_SECRET", SECRET)
        .run();
    assert_complete(&run);
}

/// Runs `chat-load` against a server with auth on; it must fail before the
/// load with exit status 1 and name the auth failure.
fn assert_auth_fails(load_args: &[&str], needles: &[&str]) {
    let dir = TempDir::new();
    let cluster = Cluster::embedded_with(&dir, &["--jwt-secret", SECRET]);
    let out = Load::new(&cluster.urls(), load_args, &dir).output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    // Nothing but the probe reached the server.
    let url = &cluster.urls()[0];
    assert!(err.contains(url.as_str()), "names {url}: {err}");
    assert_eq!(
        metric(cluster.servers[0].addr, "chat_messages_received_total"),
        0.0
    );
}

#[test]
fn a_wrong_secret_fails_the_run_naming_the_auth_failure() {
    assert_auth_fails(
        &["--jwt-secret", "not-the-secret"],
        &[
            "close 1008 `invalid token: bad signature`",
            "auth failed; --jwt-secret must be the server's CHAT_JWT_SECRET",
        ],
    );
}

#[test]
fn a_missing_secret_fails_the_run_naming_the_flag() {
    assert_auth_fails(
        &[],
        &[
            "close 1008 `missing token`",
            "a server with auth on needs --jwt-secret",
        ],
    );
}

/// A TCP proxy in front of one instance whose server → client direction can be
/// stalled on demand: a client that stops reading, as far as the server can
/// tell, without changing `chat-load`. Client → server always flows.
struct StallProxy {
    addr: SocketAddr,
    stalled: tokio::sync::watch::Sender<bool>,
}

impl StallProxy {
    fn start(cluster: &Cluster, upstream: SocketAddr) -> Self {
        let listener = cluster
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let (stalled, watch) = tokio::sync::watch::channel(false);
        cluster.rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(Self::forward(client, upstream, watch.clone()));
            }
        });
        Self { addr, stalled }
    }

    async fn forward(
        client: tokio::net::TcpStream,
        upstream: SocketAddr,
        mut stalled: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A small receive buffer, so the server's socket fills up soon.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        let _ = socket.set_recv_buffer_size(4096);
        let Ok(server) = socket.connect(upstream).await else {
            return;
        };
        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut server_rd, mut server_wr) = server.into_split();
        let upstream_copy = async {
            let _ = tokio::io::copy(&mut client_rd, &mut server_wr).await;
            let _ = server_wr.shutdown().await;
        };
        let downstream_copy = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                if stalled.wait_for(|s| !*s).await.is_err() {
                    break;
                }
                match server_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if client_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = client_wr.shutdown().await;
        };
        tokio::join!(upstream_copy, downstream_copy);
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn stall(&self, on: bool) {
        self.stalled.send_replace(on);
    }
}

/// A TLS-terminating proxy in front of one instance, like a TLS ingress: it
/// presents the certificate of `localhost` in tests/tls, signed by the test CA
/// tests/tls/ca.pem. Returns its `wss://` URL.
fn tls_ingress(cluster: &Cluster, upstream: SocketAddr) -> String {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");
    let certs = CertificateDer::pem_file_iter(format!("{dir}/localhost.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/localhost.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = cluster
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port");
    let port = listener.local_addr().unwrap().port();
    cluster.rt.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    format!("wss://localhost:{port}/ws")
}

#[test]
fn wss_through_a_tls_ingress_is_complete() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded(&dir);
    let url = tls_ingress(&cluster, cluster.servers[0].addr);
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.pem");
    let run = Load::new(
        std::slice::from_ref(&url),
        &["--ca-file", ca, "--churn", "10"],
        &dir,
    )
    .run();
    assert_complete(&run);
    assert!(run.u64("/connections/churn_joins") > 0);
    // Without the test CA, the certificate is refused before the load.
    let out = Load::new(&[url], &[], &dir).output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("certificate"), "{err}");
}

/// Polls a server metric until it reaches `at_least` (bounded by [`WAIT`]).
fn wait_for_metric(addr: SocketAddr, name: &str, at_least: f64) {
    let deadline = std::time::Instant::now() + WAIT;
    while metric(addr, name) < at_least {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} on {addr} never reached {at_least}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_slow_consumer_close_is_recovered_by_rejoining_with_since() {
    let dir = TempDir::new();
    let cluster = Cluster::embedded_with(&dir, &["--outbound-queue", "256"]);
    let server = cluster.servers[0].addr;
    let proxy = StallProxy::start(&cluster, server);
    // One room of 4; 4 KB bodies fill the stalled sockets' buffers quickly,
    // while the queue of 256 frames is ample for clients that do read.
    let args = [
        "--clients",
        "4",
        "--rooms",
        "1",
        "--batch-size",
        "4",
        "--messages",
        "400",
        "--rate",
        "25",
        "--body-size",
        "4000",
        "--max-reconnects",
        "20",
        // The acks queued behind the stalled socket are lost with it.
        "--threshold",
        "unacked<=1600",
    ];
    let running = Load::new(&[proxy.url()], &args, &dir).spawn();
    // Once the load runs, the clients stop reading until the server has given
    // up on one of them (4000), then they read again and must recover.
    wait_for_metric(server, "chat_messages_received_total", 20.0);
    proxy.stall(true);
    wait_for_metric(server, "chat_slow_consumer_disconnects_total", 1.0);
    proxy.stall(false);
    let run = running.finish();

    let audit = &run.json["audit"];
    run.assert_exit(0);
    // The server finishes the closing handshake, so the client sees the 4000
    // close frame itself, not a reset.
    let closes = &run.json["closes"];
    assert!(closes["4000"].as_u64().unwrap_or(0) > 0, "{closes:#}");
    assert!(run.u64("/connections/reconnects") > 0);
    assert!(run.u64("/audit/recovered") > 0, "{audit:#}");
    assert_eq!(run.u64("/audit/expected"), run.u64("/audit/delivered"));
    for zero in ["missing", "duplicated", "out_of_order", "lost_acked"] {
        assert_eq!(audit[zero], 0, "audit.{zero} in {audit:#}");
    }
    assert_eq!(run.u64("/messages/sent"), 1600);
}
