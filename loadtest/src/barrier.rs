//! `--start-at-file`: the start barrier of a run split over several
//! generators (`--shard`).
//!
//! Each generator checks its targets, then waits for a start time, in Unix
//! milliseconds, to appear in a file, and starts its run at that time. The
//! file is written by whoever knows that every generator is waiting: the
//! chatback operator sets it as a pod annotation once every pod of the Job
//! runs, and the kubelet projects the annotation into the pod as a
//! downward-API file. Until then the file is missing or empty. A start time
//! already past starts the run at once (the report's `started_at_unix_ms`
//! shows how late).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the file is read while waiting.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("--start-at-file {path}: no start time within {waited:?}", path = .path.display())]
    Timeout { path: PathBuf, waited: Duration },
    #[error("--start-at-file {path}: '{text}' is not a start time in Unix milliseconds", path = .path.display())]
    Malformed { path: PathBuf, text: String },
    #[error("--start-at-file {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Waits (up to `limit`) until `path` holds a start time, then until that
/// time; returns it (Unix ms).
pub async fn wait(path: &Path, limit: Duration) -> Result<u64, BarrierError> {
    let deadline = tokio::time::Instant::now() + limit;
    let start_ms = loop {
        if let Some(ms) = read(path)? {
            break ms;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BarrierError::Timeout {
                path: path.to_owned(),
                waited: limit,
            });
        }
        tokio::time::sleep(POLL).await;
    };
    let ahead = Duration::from_millis(start_ms).saturating_sub(since_epoch());
    tokio::time::sleep(ahead).await;
    Ok(start_ms)
}

/// The start time in the file; `None` while the file is missing or empty.
fn read(path: &Path) -> Result<Option<u64>, BarrierError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BarrierError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| BarrierError::Malformed {
        path: path.to_owned(),
        text: text.chars().take(40).collect(),
    })
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("chat-load-barrier-{}-{name}", std::process::id()))
    }

    #[tokio::test]
    async fn waits_for_the_file_then_for_the_time() {
        let path = scratch("wait");
        std::fs::write(&path, "").unwrap();
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let at = since_epoch().as_millis() as u64 + 200;
                std::fs::write(&path, format!("{at}\n")).unwrap();
                at
            })
        };
        let started = wait(&path, Duration::from_secs(10)).await.unwrap();
        assert_eq!(started, writer.await.unwrap());
        assert!(since_epoch().as_millis() as u64 >= started);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn bad_contents_and_no_start_are_clear_errors() {
        let path = scratch("bad");
        std::fs::write(&path, "soon").unwrap();
        let err = wait(&path, Duration::from_secs(1)).await.unwrap_err();
        assert!(
            err.to_string().contains("'soon' is not a start time"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
        let err = wait(&path, Duration::from_millis(200)).await.unwrap_err();
        assert!(err.to_string().contains("no start time within"), "{err}");
    }
}
