//! Bad input to `chat-load`: each case gets a clear message and a non-zero
//! exit status, and never a panic. No server is needed.

use std::net::TcpListener;
use std::process::{Command, Output};

fn chat_load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chat-load"))
        .args(args)
        .arg("--no-progress")
        .output()
        .expect("chat-load runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_fails(args: &[&str], code: i32, needle: &str) {
    let out = chat_load(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn zero_clients_is_a_usage_error() {
    assert_fails(&["--clients", "0"], 2, "--clients");
}

#[test]
fn bad_thresholds_are_usage_errors_naming_the_problem() {
    assert_fails(
        &["--threshold", "delivery.p98<5ms"],
        2,
        "unknown metric 'delivery.p98'",
    );
    assert_fails(&["--threshold", "delivery.p99<50"], 2, "needs a unit");
    assert_fails(&["--threshold", "missing"], 2, "no comparison");
}

#[test]
fn bad_durations_and_urls_are_usage_errors() {
    assert_fails(&["--batch-interval", "5"], 2, "no unit");
    assert_fails(&["--url", "http://127.0.0.1:8080/ws"], 2, "not ws://");
    assert_fails(
        &["--url", "wss://127.0.0.1:8080/ws", "--verify-history"],
        2,
        "plain http only",
    );
    assert_fails(&["--rate", "0"], 2, "--rate");
}

#[test]
fn more_rooms_than_clients_is_a_usage_error() {
    assert_fails(
        &["--clients", "2", "--rooms", "3"],
        2,
        "every room needs at least one member",
    );
}

#[test]
fn an_unreachable_url_fails_before_the_run() {
    let url = format!("ws://127.0.0.1:{}/ws", closed_port());
    assert_fails(
        &["--url", &url, "--clients", "2", "--rooms", "1"],
        1,
        &format!("cannot reach {url}"),
    );
}

#[test]
fn an_unresolvable_host_fails_clearly() {
    assert_fails(
        &["--url", "ws://no-such-host.invalid:8080/ws"],
        1,
        "cannot resolve ws://no-such-host.invalid:8080/ws",
    );
}

#[test]
fn an_unwritable_json_path_fails_before_the_run() {
    // Checked up front, so a long run is not lost to a typo in the path; the
    // target does not even have to exist.
    let url = format!("ws://127.0.0.1:{}/ws", closed_port());
    assert_fails(
        &["--url", &url, "--json", "/nonexistent/dir/out.json"],
        1,
        "cannot write the JSON summary to /nonexistent/dir/out.json",
    );
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = chat_load(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--clients",
        "--messages",
        "--batch-size",
        "--batch-interval",
        "--rooms",
        "--rate",
        "--closed-loop",
        "--threshold",
        "--json",
        "--source-ips",
        "Exit status",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn the_jwt_secret_is_hidden_from_help_and_must_not_be_empty() {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-load"))
        .arg("--help")
        .env("CHAT_LOAD_JWT_SECRET", "hunter2-secret")
        .output()
        .expect("chat-load runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--jwt-secret"), "{help}");
    assert!(help.contains("CHAT_LOAD_JWT_SECRET"), "{help}");
    assert!(!help.contains("hunter2-secret"), "the value leaks: {help}");
    assert_fails(&["--jwt-secret", ""], 2, "must not be empty");
}
