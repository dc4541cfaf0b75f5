//! End to end, as a user would: the real `kubectl` and the real `operator run`
//! binary against the fake API server (whose kubelet marks workloads ready).
//!
//! 1. `kubectl apply --server-side` the CRD, then the example ChatCluster;
//! 2. `operator run` with a kubeconfig pointing at the fake;
//! 3. `kubectl get cc` until the cluster is Ready;
//! 4. `kubectl scale cc demo --replicas=5`, and the Deployment follows;
//! 5. `kubectl delete cc demo`: the children go, the retained claim stays;
//! 6. SIGTERM stops the operator cleanly.
//!
//! Skipped, with a message, only where kubectl is not installed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use fake_apiserver::FakeApiServer;
use tokio::process::{Child, Command};

const DEADLINE: Duration = Duration::from_secs(90);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubectl_installed() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Output {
        let output = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(workspace())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(DEADLINE, output)
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} hung"))
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    }

    /// Runs kubectl and returns stdout, failing the test on a non-zero exit.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Polls `kubectl get ... -o jsonpath=...` until it prints `want`.
    async fn wait_for(&self, args: &[&str], want: &str) {
        let start = Instant::now();
        loop {
            let output = self.run(args).await;
            let got = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for kubectl {args:?} to print {want:?}; last: {got:?} {}",
                String::from_utf8_lossy(&output.stderr)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.1 GET, returning the status line and body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

async fn start_operator(kubeconfig: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_operator"))
        .arg("run")
        .env("KUBECONFIG", kubeconfig)
        .env("OPERATOR_LISTEN", format!("127.0.0.1:{port}"))
        .env("POD_NAME", "operator-e2e")
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .spawn()
        .expect("start `operator run`")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_drives_the_operator_with_kubectl() {
    if !kubectl_installed() {
        eprintln!(
            "SKIPPED: kubectl is not installed; the kubectl end-to-end test needs it on PATH"
        );
        return;
    }
    let fake = FakeApiServer::start().await;
    let dir = std::env::temp_dir().join(format!(
        "chatback-e2e-{}-{}",
        std::process::id(),
        fake.addr.port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, "chat-app");
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
    };

    // 1. Install the CRD, wait until it is served, then apply the example.
    // (One `kubectl apply` for both fails on a real cluster too: kubectl
    // resolves every object's kind before the CRD exists.)
    let applied = kubectl.ok(&["apply", "--server-side", "-f", "crds/"]).await;
    assert!(
        applied.contains("chatclusters.chatback.dev serverside-applied"),
        "{applied}"
    );
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/chatclusters.chatback.dev",
            "--timeout=30s",
        ])
        .await;
    let applied = kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            "k8s/examples/chatcluster.yaml",
        ])
        .await;
    assert!(
        applied.contains("chatcluster.chatback.dev/demo serverside-applied"),
        "{applied}"
    );

    // Every invalid example is rejected whole, with the rule's message.
    for entry in
        std::fs::read_dir(workspace().join("k8s/examples/invalid")).expect("k8s/examples/invalid")
    {
        let path = entry.expect("a directory entry").path();
        let text = std::fs::read_to_string(&path).expect("read the example");
        let file = path.to_string_lossy().into_owned();
        let output = kubectl.run(&["apply", "--server-side", "-f", &file]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file} was accepted");
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect-error: "))
            .unwrap_or_else(|| panic!("{file} has no `# expect-error:` line"));
        // The unknown-field message is kubernetes-validate's wording; the API
        // server names the field instead.
        let wanted = if expected.starts_with("Additional properties") {
            "field not declared in schema"
        } else {
            expected
        };
        assert!(
            stderr.contains(wanted),
            "{file}: expected {wanted:?} in:\n{stderr}"
        );
    }
    let listed = kubectl.ok(&["get", "cc", "-o", "name"]).await;
    assert_eq!(
        listed.trim(),
        "chatcluster.chatback.dev/demo",
        "no invalid cluster was stored"
    );

    // 2. The real operator binary.
    let port = free_port();
    let mut operator = start_operator(&kubeconfig, port).await;

    // 3. Ready, as `kubectl get cc` shows it.
    kubectl
        .wait_for(
            &["get", "cc", "demo", "-o", "jsonpath={.status.phase}"],
            "Ready",
        )
        .await;
    let table = kubectl.ok(&["get", "cc"]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "REPLICAS", "READY", "ENDPOINT", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..5],
        ["demo", "Ready", "3", "3", "ws://demo.chat-app.svc:8080/ws"],
        "{table}"
    );
    let endpoint = kubectl
        .ok(&[
            "get",
            "chatcluster",
            "demo",
            "-o",
            "jsonpath={.status.endpoint}",
        ])
        .await;
    assert_eq!(endpoint, "ws://demo.chat-app.svc:8080/ws");
    let image = kubectl
        .ok(&[
            "get",
            "deployment",
            "demo",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(
        image, "chat-server:0.1.0",
        "the example's image reaches the Deployment"
    );
    let live = http_get(port, "/healthz").unwrap_or_default();
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    let ready = http_get(port, "/readyz").unwrap_or_default();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let metrics = http_get(port, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("chatback_operator_reconciliations_total"),
        "{metrics}"
    );

    // 4. Scale through the scale subresource; the Deployment follows.
    let scaled = kubectl.ok(&["scale", "cc", "demo", "--replicas=5"]).await;
    assert!(scaled.contains("scaled"), "{scaled}");
    kubectl
        .wait_for(
            &[
                "get",
                "deployment",
                "demo",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
            "5",
        )
        .await;
    kubectl
        .wait_for(
            &[
                "get",
                "cc",
                "demo",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
            "5",
        )
        .await;

    // 5. Delete: kubectl waits for the finalizer; children are collected and
    // the default retention policy (Retain) keeps PostgreSQL's claim.
    let deleted = kubectl.ok(&["delete", "cc", "demo", "--timeout=60s"]).await;
    assert!(deleted.contains("deleted"), "{deleted}");
    for child in [
        "deployment/demo",
        "statefulset/demo-postgres",
        "service/demo",
        "configmap/demo-config",
    ] {
        let output = kubectl.run(&["get", child]).await;
        assert!(!output.status.success(), "{child} survived the ChatCluster");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("NotFound"),
            "{child}"
        );
    }
    kubectl.ok(&["get", "pvc", "data-demo-postgres-0"]).await;
    kubectl.ok(&["get", "secret", "demo-secrets"]).await;

    // The production-like example waits for its PostgreSQL Secret, as its
    // comment tells the user, then comes up without a managed PostgreSQL.
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            "k8s/examples/chatcluster-production.yaml",
        ])
        .await;
    kubectl
        .wait_for(
            &["get", "cc", "chat-prod", "-o", "jsonpath={.status.phase}"],
            "Pending",
        )
        .await;
    // (The fake speaks JSON only, and `kubectl create` sends protobuf, so the
    // Secret is rendered client-side and applied.)
    let secret = kubectl
        .ok(&[
            "-n",
            "chat-app",
            "create",
            "secret",
            "generic",
            "chat-history-db",
            "--from-literal=url=postgres://chat:secret@db.example:5432/chat",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await;
    let secret_file = dir.join("chat-history-db.yaml");
    std::fs::write(&secret_file, secret).expect("write the Secret manifest");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &secret_file.to_string_lossy(),
        ])
        .await;
    kubectl
        .wait_for(
            &["get", "cc", "chat-prod", "-o", "jsonpath={.status.phase}"],
            "Ready",
        )
        .await;
    let statefulsets = kubectl.ok(&["get", "statefulsets", "-o", "name"]).await;
    assert_eq!(
        statefulsets.trim(),
        "statefulset.apps/chat-prod-redis",
        "no managed PostgreSQL"
    );
    kubectl
        .ok(&["get", "networkpolicy", "chat-prod-backends"])
        .await;

    // 6. SIGTERM: the operator drains and exits successfully.
    let pid = operator.id().expect("the operator is running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, operator.wait())
        .await
        .expect("the operator stops after SIGTERM")
        .expect("wait for the operator");
    assert!(status.success(), "operator exited with {status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The chat-load binary, built on demand into this workspace's target
/// directory (a test cannot depend on another package's binary).
fn chat_load_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--locked", "-p", "loadtest", "--bin", "chat-load"])
        .current_dir(workspace())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p loadtest failed");
    let exe = std::env::current_exe().expect("the test binary's path");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug/deps/<test>");
    debug.join("chat-load")
}

/// A ChatLoadTest that must fail: its threshold cannot hold.
const FAILING_LOAD_TEST: &str = "apiVersion: chatback.dev/v1alpha1
kind: ChatLoadTest
metadata:
  name: demo-too-strict
  namespace: chat-app
spec:
  target:
    chatCluster: demo
  parallelism: 2
  image: chat-load:0.1.0
  startDelaySeconds: 1
  scenario:
    clients: 4
    rooms: 1
    messages: 2
    rate: 5
    batchSize: 4
    connectTimeout: 5s
    drainTimeout: 1s
  thresholds:
    - delivery.count>1000000
";

/// A ChatLoadTest whose pod cannot run: nothing listens at its URL, so
/// chat-load exits 1 before the barrier and the Job fails.
const UNREACHABLE_LOAD_TEST: &str = "apiVersion: chatback.dev/v1alpha1
kind: ChatLoadTest
metadata:
  name: nowhere
  namespace: chat-app
spec:
  target:
    urls: [\"ws://127.0.0.1:1/ws\"]
  image: chat-load:0.1.0
  scenario:
    clients: 2
    rooms: 1
    connectTimeout: 2s
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatloadtest_runs_its_generator_pods_to_a_merged_result() {
    use clap::Parser;
    if !kubectl_installed() {
        eprintln!(
            "SKIPPED: kubectl is not installed; the kubectl end-to-end test needs it on PATH"
        );
        return;
    }
    let chat_load = tokio::task::spawn_blocking(chat_load_binary)
        .await
        .expect("build chat-load");
    let fake = FakeApiServer::start().await;
    let dir = std::env::temp_dir().join(format!(
        "chatback-load-e2e-{}-{}",
        std::process::id(),
        fake.addr.port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // A real chat-server stands behind the demo cluster's Service, and the
    // generator pods run the real chat-load.
    let config = chat_server::Config::parse_from([
        "chat-server",
        "--sqlite-path",
        dir.join("history.db").to_str().expect("a UTF-8 path"),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let server_addr = listener.local_addr().expect("local address");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(chat_server::run(
        listener,
        config,
        stop.clone().cancelled_owned(),
    ));
    fake.route_service("demo.chat-app.svc:8080", server_addr);
    fake.run_image("chat-load:0.1.0", &chat_load);

    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig, "chat-app");
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.clone(),
    };
    let applied = kubectl.ok(&["apply", "--server-side", "-f", "crds/"]).await;
    assert!(
        applied.contains("chatloadtests.chatback.dev serverside-applied"),
        "{applied}"
    );
    for crd in ["chatclusters.chatback.dev", "chatloadtests.chatback.dev"] {
        kubectl
            .ok(&[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}"),
                "--timeout=30s",
            ])
            .await;
    }
    let mut operator = start_operator(&kubeconfig, free_port()).await;
    kubectl
        .ok(&["apply", "-f", "k8s/examples/chatcluster.yaml"])
        .await;
    // Literally the documented command.
    let applied = kubectl
        .ok(&["apply", "-f", "k8s/examples/chatloadtest.yaml"])
        .await;
    assert!(
        applied.contains("chatloadtest.chatback.dev/demo-smoke created"),
        "{applied}"
    );
    for (file, text) in [
        ("too-strict.yaml", FAILING_LOAD_TEST),
        ("nowhere.yaml", UNREACHABLE_LOAD_TEST),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).expect("write a load test");
        kubectl
            .ok(&["apply", "-f", path.to_str().expect("a UTF-8 path")])
            .await;
    }

    let phase = |name: &str| {
        vec![
            "get".to_string(),
            "clt".into(),
            name.into(),
            "-o".into(),
            "jsonpath={.status.phase}".into(),
        ]
    };
    let args = phase("demo-smoke");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl.wait_for(&args, "Succeeded").await;

    // An Indexed Job of 3 pods, each a shard of the clients.
    let job = fake
        .object("batch", "jobs", "chat-app", "demo-smoke")
        .expect("the Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["parallelism"], 3);
    assert_eq!(job["status"]["completedIndexes"], "0,1,2");
    let pods: Vec<_> = fake
        .objects("", "pods", "chat-app")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["job-name"] == "demo-smoke")
        .collect();
    assert_eq!(pods.len(), 3);
    let starts: Vec<_> = pods
        .iter()
        .map(|p| p["metadata"]["annotations"]["chatback.dev/start-at"].clone())
        .collect();
    assert!(
        starts.iter().all(|s| s.is_string() && *s == starts[0]),
        "one start time for every pod: {starts:?}"
    );

    // The merged result: every client, every message, every delivery.
    let status = fake
        .object("chatback.dev", "chatloadtests", "chat-app", "demo-smoke")
        .expect("the ChatLoadTest")["status"]
        .clone();
    let result = &status["result"];
    assert_eq!(status["passed"], true, "{status:#}");
    assert_eq!(result["run"]["clients"], 30);
    assert_eq!(result["connections"]["connected"], 30);
    assert_eq!(result["messages"]["sent"], 300);
    assert_eq!(result["messages"]["acked"], 300);
    assert_eq!(result["audit"]["members"], 30);
    assert_eq!(result["audit"]["missing"], 0);
    assert_eq!(result["audit"]["delivered"], result["audit"]["expected"]);
    assert_eq!(
        result["latency_ms"]["delivery"]["count"],
        result["audit"]["delivered"]
    );
    assert!(result["histograms"].is_null() && result["run"]["shard"].is_null());
    let rules: Vec<_> = result["thresholds"]
        .as_array()
        .expect("thresholds")
        .iter()
        .map(|t| t["rule"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(rules.contains(&"delivery.p99<2s".to_string()), "{rules:?}");
    let condition = |status: &serde_json::Value, kind: &str| {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(condition(&status, "Started")["status"], "True");
    assert_eq!(condition(&status, "Complete")["reason"], "ResultsMerged");
    assert_eq!(condition(&status, "Passed")["status"], "True");

    // A threshold that fails on the merged result fails the test, and says why.
    let args = phase("demo-too-strict");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl.wait_for(&args, "Failed").await;
    let status = fake
        .object(
            "chatback.dev",
            "chatloadtests",
            "chat-app",
            "demo-too-strict",
        )
        .expect("the failing ChatLoadTest")["status"]
        .clone();
    let passed = condition(&status, "Passed");
    assert_eq!(passed["status"], "False", "{status:#}");
    assert_eq!(passed["reason"], "ThresholdsFailed");
    assert!(
        passed["message"]
            .as_str()
            .is_some_and(|m| m.contains("delivery.count>1000000")),
        "{passed}"
    );
    assert_eq!(status["result"]["messages"]["acked"], 8);
    // A pod that fails fails the Job, and the test, with the pod's last words.
    let args = phase("nowhere");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl.wait_for(&args, "Failed").await;
    let status = fake
        .object("chatback.dev", "chatloadtests", "chat-app", "nowhere")
        .expect("the unreachable ChatLoadTest")["status"]
        .clone();
    let complete = condition(&status, "Complete");
    assert_eq!(complete["reason"], "JobFailed", "{status:#}");
    assert!(
        complete["message"]
            .as_str()
            .is_some_and(|m| m.contains("BackoffLimitExceeded")
                && m.contains("cannot reach ws://127.0.0.1:1/ws")),
        "{complete}"
    );
    assert!(status["result"].is_null());
    let listed = kubectl.ok(&["get", "clt"]).await;
    assert!(
        listed.contains("demo-smoke") && listed.contains("Succeeded"),
        "{listed}"
    );

    let _ = operator.start_kill();
    stop.cancel();
    let _ = tokio::time::timeout(DEADLINE, server).await;
    let _ = std::fs::remove_dir_all(&dir);
}
