//! The monitoring path of `k8s/monitoring/`, with real parts (README,
//! "Monitoring and autoscaling on connections"):
//!
//! - the shipped PrometheusRule carries exactly the plain rules file, and the
//!   Grafana dashboard parses and has its panels;
//! - `promtool check rules` and `promtool test rules` on the shipped rules;
//! - a real Prometheus scrapes two real `chat-server` processes (embedded
//!   mode) holding open WebSockets, and the real `operator run` (against the
//!   fake API server, where it renders the ChatCluster's HPA), with a scrape
//!   config equivalent to the shipped PodMonitors and the shipped recording
//!   rules loaded. Connections per pod come back over the query API equal to
//!   the connections held open, through the recording rules and through the
//!   prometheus-adapter rule's queries (template filled in as the adapter
//!   does), for the metric name the operator's HPA asks for;
//! - every metric name the dashboard, the rules and the adapter rule read is
//!   one the running chat-server or operator exposes, and a bogus name fails
//!   the check.
//!
//! The parts that need Prometheus run only with `CHAT_MONITORING=1`:
//! scripts/monitoring.sh (called by scripts/test.sh) installs the Debian
//! package when missing and sets it. The chat-server binary is the
//! workspace's own, next to the operator's (`cargo build -p chat-server`
//! first), or `CHAT_MONITORING_SERVER_BIN`.

mod exposition;
mod http;
mod prometheus;
mod promql;
mod shipped;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crds::ChatCluster;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use prometheus::{DEADLINE, Prometheus, Sample, promtool};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const NS: &str = "chat-app";

/// Whether the Prometheus parts run; prints why not.
fn enabled(test: &str) -> bool {
    let on = std::env::var("CHAT_MONITORING").as_deref() == Ok("1");
    if !on {
        eprintln!(
            "skipped {test}: set CHAT_MONITORING=1 to run it with a real Prometheus (scripts/monitoring.sh does)"
        );
    }
    on
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn the_prometheus_rule_carries_the_plain_rules_file() {
    assert_eq!(
        shipped::yaml("prometheusrule.yaml")["spec"],
        shipped::yaml("recording-rules.yaml"),
        "k8s/monitoring/prometheusrule.yaml's spec must equal recording-rules.yaml"
    );
}

#[test]
fn the_dashboard_parses_and_shows_what_operators_look_at() {
    let text = std::fs::read_to_string(shipped::path("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("grafana-dashboard.json parses");
    let titles: BTreeSet<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for title in [
        "Connections",
        "Deliveries/s",
        "Persist latency",
        "Errors by code",
        "Slow-consumer closes",
        "Reconciliations/s",
        "Reconcile duration",
    ] {
        assert!(titles.contains(title), "no panel {title:?} in {titles:?}");
    }
    for (place, expr) in shipped::dashboard_exprs(&dashboard) {
        assert!(!promql::metric_names(&expr).is_empty(), "{place}: {expr}");
    }
}

#[test]
fn promtool_checks_and_tests_the_shipped_rules() {
    if !enabled("promtool_checks_and_tests_the_shipped_rules") {
        return;
    }
    let checked = promtool(&["check", "rules", "recording-rules.yaml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "recording-rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("chatback-monitoring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn chat_server_bin() -> PathBuf {
    let bin = std::env::var_os("CHAT_MONITORING_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_operator")).with_file_name("chat-server"));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p chat-server` first (or set CHAT_MONITORING_SERVER_BIN)",
        bin.display()
    );
    bin
}

/// Spawns a child with its output in `dir/name.log` and waits for `/readyz`.
async fn spawn_ready(dir: &Path, name: &str, command: &mut Command, addr: SocketAddr) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let child = command
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let start = Instant::now();
    while !matches!(http::get(addr, "/readyz").await, Ok((200, _))) {
        assert!(
            start.elapsed() < DEADLINE,
            "{name} never became ready; see {}",
            dir.join(format!("{name}.log")).display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

async fn start_chat_server(dir: &Path, pod: &str) -> (Child, SocketAddr) {
    let addr = loopback(free_port());
    let mut command = Command::new(chat_server_bin());
    command
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--sqlite-path")
        .arg(dir.join(format!("{pod}.db")))
        .arg("--instance-id")
        .arg(pod)
        .env("RUST_LOG", "warn");
    (spawn_ready(dir, pod, &mut command, addr).await, addr)
}

/// The value of an unlabelled sample in `addr`'s /metrics.
async fn scraped(addr: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http::get(addr, "/metrics").await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the server itself counts `want` connections (a session is
/// counted once its task runs, just after the upgrade's 101).
async fn wait_counted(addr: SocketAddr, want: f64) {
    let start = Instant::now();
    loop {
        let got = scraped(addr, "chat_connections").await;
        if got == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{addr} counts {got:?} connections, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `{pod: value}` of samples.
fn by_pod(samples: &[Sample]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .map(|(labels, v)| (labels.get("pod").cloned().unwrap_or_default(), *v))
        .collect()
}

/// A Prometheus label name for a pod label, as the Kubernetes service
/// discovery derives `__meta_kubernetes_pod_label_<name>`.
fn sanitized(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// What the chat-server PodMonitor makes of a pod: it must select the pod's
/// labels and name a port of its container. Returns the labels its
/// relabelings add.
fn pod_monitor_labels(deployment: &Deployment) -> BTreeMap<String, String> {
    let monitor = shipped::yaml("podmonitor-chat-server.yaml");
    let template = deployment.spec.as_ref().expect("spec").template.clone();
    let pod_labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("the PodMonitor selects by matchLabels")
    {
        assert_eq!(
            pod_labels.get(key).map(String::as_str),
            value.as_str(),
            "the chat-server PodMonitor selects {key}={value}, the operator's pods have {pod_labels:?}"
        );
    }
    let endpoint = shipped::pod_endpoint("podmonitor-chat-server.yaml");
    let ports: Vec<String> = template
        .spec
        .expect("pod spec")
        .containers
        .iter()
        .flat_map(|c| c.ports.clone().unwrap_or_default())
        .filter_map(|p| p.name)
        .collect();
    assert!(
        ports.iter().any(|p| endpoint["port"] == p.as_str()),
        "the PodMonitor scrapes port {}, the pods name {ports:?}",
        endpoint["port"]
    );
    let mut added = BTreeMap::new();
    for relabel in endpoint["relabelings"].as_array().into_iter().flatten() {
        let source = relabel["sourceLabels"][0].as_str().expect("sourceLabels");
        let value = pod_labels
            .iter()
            .find(|(k, _)| source == format!("__meta_kubernetes_pod_label_{}", sanitized(k)))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the pods have no label behind {source}"));
        added.insert(relabel["targetLabel"].as_str().unwrap().to_string(), value);
    }
    added
}

/// The Prometheus configuration: the shipped PodMonitors as static targets
/// with the labels prometheus-operator would give them (`namespace`, `pod`,
/// `container` and the relabeled ones), the shipped recording rules, and a
/// 1 s scrape and evaluation interval instead of the PodMonitors' 15 s and
/// 30 s, so the test does not wait.
fn prometheus_config(
    servers: &[(&str, SocketAddr)],
    server_labels: &BTreeMap<String, String>,
    operator: SocketAddr,
) -> String {
    let target =
        |addr: SocketAddr, labels: Value| json!({"targets": [addr.to_string()], "labels": labels});
    let server_targets: Vec<Value> = servers
        .iter()
        .map(|(pod, addr)| {
            let mut labels = json!({"namespace": NS, "pod": pod, "container": "chat-server"});
            for (k, v) in server_labels {
                labels[k] = json!(v);
            }
            target(*addr, labels)
        })
        .collect();
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [shipped::path("recording-rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "chat-server",
                "metrics_path": shipped::pod_endpoint("podmonitor-chat-server.yaml")["path"],
                "static_configs": server_targets,
            },
            {
                "job_name": "chatback-operator",
                "metrics_path": shipped::pod_endpoint("podmonitor-operator.yaml")["path"],
                "static_configs": [target(operator, json!({"namespace": NS, "pod": "chatback-operator-0", "container": "operator"}))],
            },
        ],
    });
    serde_yaml::to_string(&config).expect("YAML")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reach_the_autoscaler_through_a_real_prometheus() {
    if !enabled("connections_reach_the_autoscaler_through_a_real_prometheus") {
        return;
    }
    let scratch = Scratch::new();
    let dir = scratch.0.as_path();

    // The operator, against the fake API server, renders the HPA of a
    // ChatCluster that scales on 3 connections per pod.
    let fake = FakeApiServer::start().await;
    let client = fake.client();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &ChatCluster::crd())
        .await
        .expect("install the CRD");
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, NS);
    let operator_addr = loopback(free_port());
    let _operator = spawn_ready(
        dir,
        "operator",
        Command::new(env!("CARGO_BIN_EXE_operator"))
            .arg("run")
            .env("KUBECONFIG", &kubeconfig)
            .env("OPERATOR_LISTEN", operator_addr.to_string())
            .env("POD_NAME", "chatback-operator-0")
            .env("RUST_LOG", "warn"),
        operator_addr,
    )
    .await;
    let cc: ChatCluster = serde_json::from_value(json!({
        "apiVersion": "chatback.dev/v1alpha1",
        "kind": "ChatCluster",
        "metadata": {"name": "demo", "namespace": NS},
        "spec": {"autoscaling": {"minReplicas": 2, "targetConnectionsPerPod": 3}},
    }))
    .unwrap();
    Api::<ChatCluster>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &cc)
        .await
        .expect("create the ChatCluster");
    let (hpa, deployment) = {
        let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), NS);
        let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
        let start = Instant::now();
        loop {
            if let (Ok(Some(hpa)), Ok(Some(deployment))) = (
                hpas.get_opt("demo").await,
                deployments.get_opt("demo").await,
            ) {
                break (hpa, deployment);
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the operator never created the HPA and Deployment; see {}",
                dir.join("operator.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let pods_metric = hpa
        .spec
        .and_then(|s| s.metrics)
        .unwrap_or_default()
        .into_iter()
        .find_map(|m| m.pods)
        .expect("the HPA has a Pods metric");
    let metric = pods_metric.metric.name;
    let target: f64 = pods_metric
        .target
        .average_value
        .expect("an averageValue target")
        .0
        .parse()
        .expect("a plain number");
    assert_eq!(target, 3.0);
    let relabeled = pod_monitor_labels(&deployment);
    assert_eq!(
        relabeled.get("chatcluster").map(String::as_str),
        Some("demo")
    );

    // Two chat-server pods with 3 and 5 open WebSockets.
    let (_a, a) = start_chat_server(dir, "demo-0").await;
    let (_b, b) = start_chat_server(dir, "demo-1").await;
    let mut sockets = BTreeMap::<&str, Vec<_>>::new();
    for (pod, addr, n) in [("demo-0", a, 3), ("demo-1", b, 5)] {
        for i in 0..n {
            let socket = http::open_websocket(addr, &format!("user=u{i}&room=lobby"))
                .await
                .unwrap_or_else(|e| panic!("WebSocket to {pod}: {e}"));
            sockets.entry(pod).or_default().push(socket);
        }
        wait_counted(addr, f64::from(n)).await;
    }

    // Prometheus, with the shipped rules and a scrape config like the PodMonitors.
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        prometheus_config(&[("demo-0", a), ("demo-1", b)], &relabeled, operator_addr),
    )
    .unwrap();
    let checked = promtool(&["check", "config", config.to_str().unwrap()]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let prometheus = Prometheus::start(dir, &config).await;

    // Connections per pod, as scraped.
    let want = BTreeMap::from([("demo-0".to_string(), 3.0), ("demo-1".to_string(), 5.0)]);
    let got = prometheus
        .eventually(r#"chat_connections{chatcluster="demo"}"#, |s| {
            by_pod(s) == want
        })
        .await;
    println!("scraped chat_connections per pod: {:?}", by_pod(&got));

    // Two messages in demo-0's lobby reach its three members: deliveries
    // and commits, for the rate and latency rules.
    let sender = sockets
        .get_mut("demo-0")
        .and_then(|s| s.first_mut())
        .unwrap();
    for n in 0..2 {
        let frame = format!(r#"{{"type":"send","room":"lobby","body":"hi","ref":"r{n}"}}"#);
        http::send_text(sender, &frame).await.expect("send");
    }
    prometheus
        .eventually(r#"chat_messages_delivered_total{pod="demo-0"}"#, |s| {
            s.len() == 1 && s[0].1 == 6.0
        })
        .await;
    prometheus
        .eventually(r#"chat_persist_latency_seconds_count{pod="demo-0"}"#, |s| {
            s.len() == 1 && s[0].1 == 2.0
        })
        .await;

    // The recording rules.
    let sum = r#"chatcluster:chat_connections:sum{namespace="chat-app",chatcluster="demo"}"#;
    prometheus
        .eventually(sum, |s| s.len() == 1 && s[0].1 == 8.0)
        .await;
    let avg =
        r#"chatcluster:chat_connections_per_pod:avg{namespace="chat-app",chatcluster="demo"}"#;
    prometheus
        .eventually(avg, |s| s.len() == 1 && s[0].1 == 4.0)
        .await;

    let positive = |s: &[Sample]| s.len() == 1 && s[0].1 > 0.0 && s[0].1.is_finite();
    let demo = r#"{namespace="chat-app",chatcluster="demo"}"#;
    for rule in [
        "chatcluster:chat_messages_delivered:rate1m",
        "chatcluster:chat_messages_received:rate1m",
        "chatcluster:chat_persist_latency_seconds:p99_5m",
    ] {
        prometheus
            .eventually(&format!("{rule}{demo}"), positive)
            .await;
    }

    // The adapter rule serving the HPA's metric: its seriesQuery finds both
    // pods' series with the labels its `resources` map, and its metricsQuery,
    // filled in as the adapter does for these pods, answers per pod.
    let rule = shipped::adapter_rule(&metric);
    let series = prometheus
        .series(rule["seriesQuery"].as_str().expect("seriesQuery"))
        .await;
    let found: BTreeSet<(&str, &str, &str)> = series
        .iter()
        .map(|l| {
            (
                l["__name__"].as_str(),
                l["namespace"].as_str(),
                l["pod"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        found,
        BTreeSet::from([
            (metric.as_str(), NS, "demo-0"),
            (metric.as_str(), NS, "demo-1")
        ]),
        "seriesQuery {}",
        rule["seriesQuery"]
    );
    for resource in ["namespace", "pod"] {
        assert_eq!(
            rule["resources"]["overrides"][resource]["resource"],
            resource
        );
    }
    let query = shipped::adapter_query(&rule, &metric, NS, &["demo-0", "demo-1"]);
    let answer = prometheus.query(&query).await;
    assert_eq!(by_pod(&answer), want, "{query}");
    let mean = answer.iter().map(|(_, v)| v).sum::<f64>() / answer.len() as f64;
    println!(
        "adapter metricsQuery {query}: mean {mean} per pod against the HPA's target {target}: \
         the HPA wants {} pods",
        (answer.len() as f64 * mean / target).ceil()
    );

    // Closed connections leave the count.
    sockets.get_mut("demo-1").unwrap().truncate(1);
    let want = BTreeMap::from([("demo-0".to_string(), 3.0), ("demo-1".to_string(), 1.0)]);
    prometheus.eventually(&query, |s| by_pod(s) == want).await;
    prometheus
        .eventually(sum, |s| s.len() == 1 && s[0].1 == 4.0)
        .await;

    // The operator's reconcile metrics and their recording rule.
    prometheus
        .eventually(
            r#"chatback_operator_reconciliations_total{pod="chatback-operator-0"}"#,
            |s| s.len() == 1 && s[0].1 >= 1.0,
        )
        .await;
    prometheus
        .eventually(
            r#"namespace:chatback_operator_reconciliations:rate5m{namespace="chat-app"}"#,
            |s| s.len() == 1,
        )
        .await;

    // Every name the dashboard, the rules and the adapter read is exposed by
    // the running processes; a bogus one is caught.
    let mut exposed = BTreeSet::new();
    for addr in [a, operator_addr] {
        let (_, body) = http::get(addr, "/metrics").await.expect("/metrics");
        exposed.extend(exposition::series_names(&body));
    }
    let text = std::fs::read_to_string(shipped::path("grafana-dashboard.json")).unwrap();
    let mut dashboard: Value = serde_json::from_str(&text).unwrap();
    let problems = shipped::unknown_metrics(&dashboard, &exposed);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    dashboard["panels"][1]["targets"]
        .as_array_mut()
        .expect("the first panel's targets")
        .extend([
            json!({"expr": "sum(chat_connections_total)"}),
            json!({"expr": "histogram_quantile(0.9, chat_persist_latency_seconds)"}),
        ]);
    let problems = shipped::unknown_metrics(&dashboard, &exposed);
    for bogus in ["chat_connections_total", "chat_persist_latency_seconds"] {
        assert!(
            problems.iter().any(|p| p.contains(&format!("{bogus:?}"))),
            "{bogus} not reported: {problems:?}"
        );
    }
    assert_eq!(problems.len(), 2, "{problems:?}");
}
