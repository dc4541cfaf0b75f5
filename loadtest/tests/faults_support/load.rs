//! `chat-load` as a child process, and what the suite requires of its
//! `--json` summary after a fault.
//!
//! The tool's own thresholds are not the verdict here (its exit status 3 only
//! says some rule failed): the suite reads the numbers and allows exactly
//! what docs/protocol.md allows for the fault at hand, see [`Tolerance`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::scratch::Scratch;

/// Upper bound on one chat-load run, the storm included (then it is killed).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What a fault may cost, per docs/protocol.md. Never an acked message.
#[derive(Clone, Copy, Debug)]
pub enum Tolerance {
    /// Nothing: every send acked, every owed delivery made, no error frame.
    Nothing,
    /// A backend was down: sends may be refused with `unavailable` (not
    /// accepted, so not owed); everything accepted is acked and delivered.
    Refusals,
    /// A crash: besides refusals, a message published but never stored (so
    /// never acked) may be skipped by members: `missing` is bounded by the
    /// seqs without a row times the room size.
    NeverAckedSkips,
}

pub struct Load {
    label: String,
    cmd: Command,
    json: PathBuf,
    stderr: PathBuf,
}

impl Load {
    /// `chat-load --url U.. --run-id RUN_ID ARGS --json <file>`, output into `dir`.
    pub fn new(dir: &Scratch, label: &str, urls: &[String], run_id: &str, args: &[&str]) -> Self {
        let json = dir.file(&format!("{label}.json"));
        let stderr = dir.file(&format!("{label}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-load"));
        for url in urls {
            cmd.arg("--url").arg(url);
        }
        cmd.args(["--run-id", run_id, "--no-progress"])
            .args(args)
            .arg("--json")
            .arg(&json);
        Self {
            label: label.to_owned(),
            cmd,
            json,
            stderr,
        }
    }

    pub fn spawn(mut self) -> Running {
        let stderr = std::fs::File::create(&self.stderr).expect("create the stderr file");
        let child = self
            .cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start chat-load");
        Running {
            load: self,
            child,
            started: Instant::now(),
        }
    }

    pub fn run(self) -> Summary {
        self.spawn().finish()
    }
}

pub struct Running {
    load: Load,
    child: Child,
    started: Instant,
}

impl Running {
    /// Waits for the run's end (killing it past [`RUN_LIMIT`]) and reads its summary.
    pub fn finish(mut self) -> Summary {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for chat-load") {
                break status;
            }
            if self.started.elapsed() > RUN_LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{}: chat-load ran past {RUN_LIMIT:?}", self.load.label);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stderr = std::fs::read_to_string(&self.load.stderr).unwrap_or_default();
        let text = std::fs::read_to_string(&self.load.json).unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{}: chat-load ({status}) wrote no JSON summary ({e}); stderr: {stderr}",
                self.load.label
            )
        });
        Summary {
            label: self.load.label.clone(),
            json,
            code: status.code(),
            stderr,
        }
    }
}

pub struct Summary {
    pub label: String,
    pub json: Value,
    code: Option<i32>,
    stderr: String,
}

impl Summary {
    pub fn n(&self, pointer: &str) -> u64 {
        self.json
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{pointer} is not a count in {:#}", self.json))
    }

    pub fn ms(&self, pointer: &str) -> f64 {
        self.json
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{pointer} is not a number in {:#}", self.json))
    }

    fn counts(&self, pointer: &str) -> BTreeMap<String, u64> {
        serde_json::from_value(self.json.pointer(pointer).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The run's figures on a few lines (shown with --nocapture).
    pub fn print(&self) {
        let n = |p: &str| self.n(p);
        println!(
            "[{}] connections: connected {}/{} failures {:?} reconnects {} reconnect failures {} connect p50 {:.1} ms p99 {:.1} ms",
            self.label,
            n("/connections/connected"),
            n("/connections/attempted"),
            self.counts("/connections/failures"),
            n("/connections/reconnects"),
            n("/connections/reconnect_failures"),
            self.ms("/latency_ms/connect/p50"),
            self.ms("/latency_ms/connect/p99"),
        );
        println!(
            "[{}] messages: sent {} acked {} rejected {} unacked {} unsent {}; errors {:?} closes {:?}",
            self.label,
            n("/messages/sent"),
            n("/messages/acked"),
            n("/messages/rejected"),
            n("/messages/unacked"),
            n("/messages/unsent"),
            self.counts("/errors"),
            self.counts("/closes"),
        );
        println!(
            "[{}] audit: members {} expected {} delivered {} missing {} duplicated {} out of order {} unexpected {} recovered {} incomplete members {} lost acked {}",
            self.label,
            n("/audit/members"),
            n("/audit/expected"),
            n("/audit/delivered"),
            n("/audit/missing"),
            n("/audit/duplicated"),
            n("/audit/out_of_order"),
            n("/audit/unexpected"),
            n("/audit/recovered"),
            n("/audit/incomplete_members"),
            n("/audit/lost_acked"),
        );
    }

    /// Everything in the summary that `tolerance` does not allow, one line
    /// each; `never_stored` counts the seqs of the run's rooms that were
    /// handed out but have no row (the only ones a member may skip).
    pub fn problems(&self, tolerance: Tolerance, never_stored: u64) -> Vec<String> {
        let mut problems = Vec::new();
        let mut want = |pointer: &str, ok: bool, rule: &str| {
            if !ok {
                problems.push(format!(
                    "{}: {pointer} = {} breaks `{rule}`",
                    self.label,
                    self.json.pointer(pointer).unwrap_or(&Value::Null)
                ));
            }
        };
        let n = |p: &str| self.n(p);
        let clients = n("/run/clients");
        let room_size = clients.div_ceil(n("/run/rooms"));
        let errors = self.counts("/errors");

        want(
            "/run/interrupted",
            self.json["run"]["interrupted"] == false,
            "== false",
        );
        for zero in [
            "/audit/lost_acked",
            "/audit/duplicated",
            "/audit/out_of_order",
            "/audit/unexpected",
            "/messages/unsent",
        ] {
            want(zero, n(zero) == 0, "== 0");
        }
        want(
            "/connections/connected",
            n("/connections/connected") == clients,
            "== clients",
        );
        want(
            "/audit/members",
            n("/audit/members") == clients,
            "== clients",
        );
        match tolerance {
            Tolerance::Nothing => {
                for zero in ["/audit/missing", "/messages/unacked", "/messages/rejected"] {
                    want(zero, n(zero) == 0, "== 0");
                }
                want("/errors", errors.is_empty(), "no error frame");
            }
            Tolerance::Refusals | Tolerance::NeverAckedSkips => {
                let refusals_only = errors.keys().all(|code| code == "unavailable");
                want("/errors", refusals_only, "only `unavailable`");
                if matches!(tolerance, Tolerance::Refusals) {
                    for zero in ["/audit/missing", "/messages/unacked"] {
                        want(zero, n(zero) == 0, "== 0");
                    }
                } else {
                    let bound = never_stored * room_size;
                    let rule =
                        format!("<= seqs never stored {never_stored} x room size {room_size}");
                    want("/audit/missing", n("/audit/missing") <= bound, &rule);
                }
            }
        }
        if !matches!(self.code, Some(0 | 3)) {
            problems.push(format!(
                "{}: chat-load exited with {:?} (not a finished run): {}",
                self.label, self.code, self.stderr
            ));
        }
        problems
    }
}
