//! A real Prometheus (Debian's `prometheus` package) as a child process on a
//! free loopback port, and its HTTP API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::http::{encode, get};

/// How long Prometheus may take to start, scrape or evaluate before the test
/// gives up; it only guards against hangs.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// One sample of an instant vector: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

pub struct Prometheus {
    pub addr: SocketAddr,
    _child: Child,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (storage under `dir`) and waits for /-/ready.
    pub async fn start(dir: &Path, config: &Path) -> Prometheus {
        let addr: SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect(
                "start prometheus (Debian package `prometheus`; scripts/monitoring.sh installs it)",
            );
        let prometheus = Prometheus {
            addr,
            _child: child,
        };
        let start = Instant::now();
        while !matches!(get(addr, "/-/ready").await, Ok((200, _))) {
            assert!(
                start.elapsed() < DEADLINE,
                "prometheus never became ready; see {}",
                dir.join("prometheus.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    /// `GET /api/v1/<path>`'s `data`, failing the test on any error.
    async fn api(&self, path: &str) -> Value {
        let (status, body) = get(self.addr, &format!("/api/v1/{path}"))
            .await
            .unwrap_or_else(|e| panic!("prometheus /api/v1/{path}: {e}"));
        let reply: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus /api/v1/{path}: {e}: {body}"));
        assert_eq!(
            (status, &reply["status"]),
            (200, &Value::from("success")),
            "prometheus /api/v1/{path}: {body}"
        );
        reply["data"].clone()
    }

    /// An instant query's samples.
    pub async fn query(&self, expr: &str) -> Vec<Sample> {
        let data = self.api(&format!("query?query={}", encode(expr))).await;
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok());
                (labels(&s["metric"]), value.unwrap_or(f64::NAN))
            })
            .collect()
    }

    /// The label sets of the series `selector` matches (`/api/v1/series`).
    pub async fn series(&self, selector: &str) -> Vec<BTreeMap<String, String>> {
        let data = self
            .api(&format!("series?match[]={}", encode(selector)))
            .await;
        data.as_array().into_iter().flatten().map(labels).collect()
    }

    /// Polls `expr` until `check` accepts its samples, and returns them; panics
    /// with the last answer after [`DEADLINE`].
    pub async fn eventually(&self, expr: &str, check: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let start = Instant::now();
        loop {
            let samples = self.query(expr).await;
            if check(&samples) {
                return samples;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{expr}: never as expected; last answer {samples:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn labels(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Runs `promtool ARGS` in k8s/monitoring/ and returns its output, failing the
/// test on a non-zero exit.
pub fn promtool(args: &[&str]) -> String {
    let output = std::process::Command::new("promtool")
        .args(args)
        .current_dir(crate::shipped::dir())
        .output()
        .expect("run promtool (Debian package `prometheus`; scripts/monitoring.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}
