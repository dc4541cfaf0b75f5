//! The listening socket's backlog, read back from the kernel with `ss`.
//!
//! A connect burst larger than the backlog makes the kernel drop the SYNs past
//! it; each of those clients then waits for its 1 s SYN retransmit. So the
//! backlog is a flag, and this checks that the kernel applied it (the standard
//! library's `TcpListener::bind` asks for 128).

mod support;

use std::process::Command;

use support::{Server, TempDir};

/// The backlog of the socket listening on `port`: the Send-Q column `ss` shows
/// for a listener.
fn listen_backlog(port: u16) -> u32 {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}: {text}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields[2]
        .parse()
        .unwrap_or_else(|_| panic!("no Send-Q in {line:?}"))
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read net.core.somaxconn")
        .trim()
        .parse()
        .expect("a number")
}

/// An embedded server with its own history file, plus `args`.
async fn server(dir: &TempDir, args: &[&str]) -> Server {
    let db = dir.file("history.db");
    let args: Vec<&str> = ["--sqlite-path", db.as_str()]
        .iter()
        .chain(args)
        .copied()
        .collect();
    Server::start(&args).await
}

#[tokio::test]
async fn the_listen_backlog_holds_a_connect_burst() {
    let dir = TempDir::new();
    let server = server(&dir, &[]).await;
    assert_eq!(listen_backlog(server.addr.port()), 4096.min(somaxconn()));
}

#[tokio::test]
async fn the_listen_backlog_is_the_flag() {
    let dir = TempDir::new();
    let server = server(&dir, &["--listen-backlog", "1500"]).await;
    assert_eq!(listen_backlog(server.addr.port()), 1500.min(somaxconn()));
}
