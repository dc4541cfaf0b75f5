//! A scratch directory per scenario, and the small utilities every process
//! helper needs (unique names, free ports from chat-testkit, bounded polling).
//!
//! The directory holds the data and logs of the scenario's processes. It is
//! removed when the scenario passes and kept, with its path printed, when it
//! fails, so the server logs of a failure can be read afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::WAIT;

pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(unique(&format!("chat-faults-{name}")));
        std::fs::create_dir_all(&path).expect("create the scratch directory");
        // PostgreSQL runs as another user when the test runs as root.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("open the scratch directory to other users");
        Self { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (process logs)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `prefix` plus something unique to this process and moment: run ids and
/// directory names never collide with an earlier run.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!(
        "{prefix}-{:x}{:x}",
        std::process::id(),
        nanos & 0xff_ffff_ffff
    )
}

pub use chat_testkit::free_port;

/// Polls `done` until it holds; false if it still does not after [`WAIT`].
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
