//! `chat-load --protocol socketio` as a subprocess against the real Socket.IO 4
//! server of bench/socketio (node), started by the test: two instances sharing
//! Redis through `@socket.io/redis-adapter` (CHAT_TEST_REDIS_URL) for the clean
//! run, one in-memory instance with `SIO_FAULT` for the runs that must fail.
//!
//! The npm dependencies are installed from bench/socketio/package-lock.json
//! (`npm ci`) when node_modules is missing. Without `node` or `npm` the tests
//! print why and pass without running: they test chat-load against a server
//! this machine cannot run.
//!
//! The assertions are about the audit and the report, never about speed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/socketio")
}

/// Whether node and the server's npm dependencies are there (installed once
/// per test process); `false`, after printing why, when node or npm is missing.
fn node_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        for tool in ["node", "npm"] {
            let found = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                eprintln!(
                    "SKIPPED: `{tool}` is not installed; the Socket.IO tests need node and npm"
                );
                return false;
            }
        }
        let dir = server_dir();
        if !dir.join("node_modules/socket.io").is_dir() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .status()
                .expect("npm runs");
            assert!(status.success(), "npm ci in {} failed", dir.display());
        }
        true
    })
}

/// One `node bench/socketio/server.js` on a free port, killed on drop.
struct SocketIo {
    child: Child,
    url: String,
}

impl SocketIo {
    fn start(env: &[(&str, &str)]) -> Self {
        let mut child = Command::new("node")
            .arg(server_dir().join("server.js"))
            .arg("0")
            .env_remove("REDIS_URL")
            .env_remove("SIO_FAULT")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's first line");
        // "socketio: listening on ws://127.0.0.1:PORT/socket.io/ (...)"
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("ws://"))
            .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
            .to_owned();
        Self { child, url }
    }
}

impl Drop for SocketIo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs chat-load against `servers`; its exit code and JSON summary.
fn chat_load(servers: &[&SocketIo], args: &[&str]) -> (i32, Value) {
    let json = std::env::temp_dir().join(format!(
        "chat-load-socketio-{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-load"));
    cmd.args([
        "--protocol",
        "socketio",
        "--no-progress",
        "--batch-interval",
        "0s",
    ]);
    for server in servers {
        cmd.args(["--url", &server.url]);
    }
    let output = cmd
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("chat-load runs");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no summary ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let _ = std::fs::remove_file(&json);
    let summary = serde_json::from_str(&text).expect("the summary is JSON");
    (output.status.code().unwrap_or(-1), summary)
}

fn count(summary: &Value, pointer: &str) -> u64 {
    summary
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing in {summary}"))
}

/// 12 clients in 3 rooms of 4, 8 messages each, at 20/s.
const SMALL: [&str; 12] = [
    "--clients",
    "12",
    "--rooms",
    "3",
    "--batch-size",
    "12",
    "--messages",
    "8",
    "--rate",
    "20",
    "--drain-timeout",
    "3s",
];

#[test]
fn a_clean_run_over_the_redis_adapter_is_complete() {
    if !node_ready() {
        return;
    }
    let redis = chat_testkit::redis_url();
    let env = [("REDIS_URL", redis.as_str())];
    let (a, b) = (SocketIo::start(&env), SocketIo::start(&env));
    let (code, s) = chat_load(&[&a, &b], &SMALL);
    assert_eq!(code, 0, "the run passes: {}", s["thresholds"]);
    assert_eq!(s["run"]["protocol"], "socketio");
    let audit = &s["audit"];
    assert_eq!(count(&s, "/audit/members"), 12);
    let expected = count(&s, "/audit/expected");
    // At least every member's own 8 messages, at most the whole room's.
    assert!((12 * 8..=12 * 4 * 8).contains(&expected), "{audit}");
    assert_eq!(count(&s, "/audit/delivered"), expected, "{audit}");
    for field in [
        "missing",
        "duplicated",
        "out_of_order",
        "incomplete_members",
    ] {
        assert_eq!(audit[field], 0, "{field}: {audit}");
    }
    // Every frame is either an owed delivery or one not owed (before a join).
    assert_eq!(
        count(&s, "/deliveries/total"),
        expected + count(&s, "/audit/unexpected")
    );
    assert_eq!(count(&s, "/messages/sent"), 12 * 8);
    // No acks in this protocol: none counted, none awaited.
    assert_eq!(s["messages"]["acked"], 0);
    assert_eq!(s["messages"]["unacked"], 0);
    assert_eq!(count(&s, "/latency_ms/delivery/count"), expected);
    // Rooms span both instances: some deliveries crossed Redis.
    assert!(
        count(&s, "/breakdown/cross_instance/count") > 0,
        "{}",
        s["breakdown"]
    );
}

#[test]
fn a_dropped_message_is_missing() {
    if !node_ready() {
        return;
    }
    let server = SocketIo::start(&[("SIO_FAULT", "drop:10")]);
    let (code, s) = chat_load(&[&server], &SMALL);
    assert_eq!(code, 3, "a threshold fails: {}", s["thresholds"]);
    let audit = &s["audit"];
    let missing = count(&s, "/audit/missing");
    assert!(missing > 0, "{audit}");
    assert_eq!(
        count(&s, "/audit/delivered") + missing,
        count(&s, "/audit/expected")
    );
    assert!(count(&s, "/audit/incomplete_members") > 0, "{audit}");
    assert_eq!(audit["duplicated"], 0, "{audit}");
    // Each missing delivery is timed as a lower bound.
    assert_eq!(count(&s, "/latency_ms/delivery/lower_bounds"), missing);
    let failed: Vec<&str> = s["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["passed"] == false)
        .filter_map(|v| v["rule"].as_str())
        .collect();
    assert_eq!(failed, ["missing==0"]);
}

#[test]
fn a_duplicated_message_is_caught() {
    if !node_ready() {
        return;
    }
    let server = SocketIo::start(&[("SIO_FAULT", "dup:10")]);
    let (code, s) = chat_load(&[&server], &SMALL);
    assert_eq!(code, 3, "a threshold fails: {}", s["thresholds"]);
    let audit = &s["audit"];
    assert!(count(&s, "/audit/duplicated") > 0, "{audit}");
    assert_eq!(audit["missing"], 0, "{audit}");
    assert_eq!(count(&s, "/audit/delivered"), count(&s, "/audit/expected"));
}

#[test]
fn an_unreachable_server_fails_before_the_load() {
    // A port nobody listens on: the probe names the URL.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/socket.io/", listener.local_addr().unwrap());
    drop(listener);
    let output = Command::new(env!("CARGO_BIN_EXE_chat-load"))
        .args(["--protocol", "socketio", "--no-progress", "--url", &url])
        .output()
        .expect("chat-load runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&url));
}
