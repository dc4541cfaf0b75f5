//! A throwaway PostgreSQL cluster (initdb + pg_ctl) in the scenario's scratch
//! directory, on a free loopback port, with fsync off: nothing here has to
//! survive the machine, only `pg_ctl -m immediate stop` (the crash the
//! suite injects). The binaries are found as scripts/services.sh finds them,
//! and as root they run as the `postgres` user, which PostgreSQL requires.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::is_root;
use super::scratch::{Scratch, free_port};

pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    pub fn start(dir: &Scratch) -> Self {
        let pg = Self {
            bin: bin_dir(),
            dir: dir.file("pg"),
            port: free_port(),
        };
        std::fs::create_dir_all(&pg.dir).expect("create the PostgreSQL directory");
        if is_root() {
            run(Command::new("chown").arg("-R").arg("postgres").arg(&pg.dir));
        }
        let data = pg.dir.join("data");
        run(pg.tool("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]));
        pg.start_again();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) cluster on its port again and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        run(self
            .ctl()
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-o", &options, "start"]));
    }

    /// `pg_ctl -m immediate stop`: every backend is killed without a checkpoint,
    /// like a crash; the next start replays the WAL.
    pub fn stop_immediately(&self) {
        run(self.ctl().args(["-m", "immediate", "stop"]));
    }

    /// One SQL query through psql; its unaligned, tuples-only output.
    pub fn query(&self, sql: &str) -> String {
        let out = run(self.tool("psql").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-At",
            "-c",
            sql,
        ]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn ctl(&self) -> Command {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("-D").arg(self.dir.join("data"));
        cmd
    }

    fn tool(&self, name: &str) -> Command {
        let tool = self.bin.join(name);
        match is_root() {
            true => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(tool);
                cmd
            }
            false => Command::new(tool),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.ctl().args(["-m", "immediate", "stop"]).output();
    }
}

/// The directory of `initdb`: /usr/lib/postgresql/<newest>/bin (Debian), else PATH.
fn bin_dir() -> PathBuf {
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    debian.sort_by_key(|d| version_of(d));
    if let Some(newest) = debian.pop() {
        return newest;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").is_file())
        .expect("initdb not found (in /usr/lib/postgresql/*/bin or PATH): install postgresql (scripts/services.sh start does)")
}

fn version_of(bin: &Path) -> u32 {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|v| v.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// Runs a command to completion; panics with its output when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
