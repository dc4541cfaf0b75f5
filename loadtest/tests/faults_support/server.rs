//! A `chat-server` child process on a fixed loopback port, so it can be
//! SIGKILLed and started again where its clients expect it.
//!
//! The binary is the workspace's own `target/<profile>/chat-server`, next to
//! `chat-load` (`cargo test --workspace` builds both; with `-p loadtest` alone,
//! run `cargo build -p chat-server` first), or `CHAT_FAULTS_SERVER_BIN`.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::child::Killable;
use super::http;
use super::scratch::{Scratch, eventually, free_port};

pub struct Server {
    pub name: String,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    process: Killable,
}

impl Server {
    /// Starts `chat-server --listen 127.0.0.1:<free port> ARGS` and waits for `/readyz` 200.
    pub fn start(dir: &Scratch, name: &str, args: Vec<String>) -> Self {
        let mut server = Self {
            name: name.to_owned(),
            port: free_port(),
            args,
            log: dir.file(&format!("chat-server-{name}.log")),
            process: Killable::default(),
        };
        server.spawn();
        assert!(
            server.wait_ready(),
            "chat-server {name} never became ready: {:?}; see {}",
            server.readyz(),
            server.log.display()
        );
        server
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr())
    }

    /// SIGKILL: no graceful shutdown, no flush, no 1001 for the clients.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the same server again on the same port (it must not be running).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server log");
        let child = Command::new(binary())
            .arg("--listen")
            .arg(self.addr().to_string())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone().expect("clone the log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start chat-server");
        self.process = Killable::new(child);
    }

    /// `/readyz` status and body; `None` when nothing answers.
    pub fn readyz(&self) -> Option<(u16, String)> {
        http::get(self.addr(), "/readyz")
    }

    /// Waits (bounded) for `/readyz` 200; false if it never came or the process died.
    pub fn wait_ready(&mut self) -> bool {
        eventually(|| self.process.gone() || self.readyz().is_some_and(|(status, _)| status == 200))
            && self.readyz().is_some_and(|(status, _)| status == 200)
    }

    /// The sum of a metric's samples in `/metrics` (0 when absent or down).
    pub fn metric(&self, name: &str) -> f64 {
        http::get(self.addr(), "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    }

    /// Log lines at WARN level or above so far (logs are plain text).
    pub fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

fn binary() -> PathBuf {
    let bin = std::env::var_os("CHAT_FAULTS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_chat-load")).with_file_name("chat-server")
        });
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p chat-server` (cargo test --workspace builds it), \
         or point CHAT_FAULTS_SERVER_BIN at a chat-server binary",
        bin.display()
    );
    bin
}
