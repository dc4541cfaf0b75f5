//! A redis-server child process on a free loopback port, without persistence
//! (`--save '' --appendonly no`), so a SIGKILL and restart loses every key:
//! the room counters included.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::child::Killable;

use super::scratch::{Scratch, eventually, free_port};

pub struct Redis {
    port: u16,
    log: PathBuf,
    process: Killable,
}

impl Redis {
    pub fn start(dir: &Scratch) -> Self {
        let mut redis = Self {
            port: free_port(),
            log: dir.file("redis.log"),
            process: Killable::default(),
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: no shutdown, the keys are gone with the process.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// A new, empty redis-server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = self.log.to_string_lossy().into_owned();
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--logfile", &log])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install it (scripts/services.sh start does)"
                )
            });
        self.process = Killable::new(child);
        let up = eventually(|| self.cli(&["ping"]).is_ok_and(|r| r == "PONG"));
        assert!(
            up,
            "redis-server on port {} did not start; see {log}",
            self.port
        );
    }

    /// One redis-cli command; its reply, trimmed.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        let reply = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match out.status.success() && !reply.starts_with("ERR") {
            true => Ok(reply),
            false => Err(format!(
                "redis-cli {args:?}: {reply} {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
}
