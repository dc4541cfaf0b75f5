//! The `operator` binary's command line, run as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use serde::Deserialize;

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_operator"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run the operator binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn crd_prints_the_committed_manifest() {
    let output = operator(&["crd"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), crds::crd_yaml());
}

#[test]
fn render_prints_every_child_of_the_example() {
    let output = operator(&["render", "-f", "k8s/examples/chatcluster.yaml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&stdout(&output))
        .map(|d| serde_yaml::Value::deserialize(d).expect("valid YAML"))
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Service/demo-redis",
            "StatefulSet/demo-redis",
            "Service/demo-postgres",
            "StatefulSet/demo-postgres",
            "ConfigMap/demo-config",
            "Deployment/demo",
            "Service/demo",
            "HorizontalPodAutoscaler/demo",
            "PodDisruptionBudget/demo",
            "NetworkPolicy/demo-backends",
        ]
    );
}

#[test]
fn render_prints_no_secret_material_unless_asked() {
    let example = ["render", "-f", "k8s/examples/chatcluster.yaml"];
    let first = operator(&example);
    let second = operator(&example);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "two renders of one ChatCluster are the same"
    );
    assert!(
        !stdout(&first).contains("kind: Secret"),
        "{}",
        stdout(&first)
    );
    assert!(stdout(&first).contains("# Secret/demo-secrets is not printed"));
    let shown = operator(&[
        "render",
        "--show-secrets",
        "-f",
        "k8s/examples/chatcluster.yaml",
    ]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(
        stdout(&shown).contains("kind: Secret") && stdout(&shown).contains("postgres-password")
    );
}

#[test]
fn render_reports_bad_input_clearly() {
    let missing = operator(&["render", "-f", "no/such/file.yaml"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no/such/file.yaml"),
        "{}",
        stderr(&missing)
    );

    let invalid = operator(&["render", "-f", "k8s/examples/invalid/min-above-max.yaml"]);
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("minReplicas"),
        "{}",
        stderr(&invalid)
    );
    assert!(stdout(&invalid).is_empty(), "nothing is half-rendered");

    let wrong_kind = operator(&["render", "-f", "k8s/base/namespace.yaml"]);
    assert!(!wrong_kind.status.success());
    assert!(
        stderr(&wrong_kind).contains("expected apiVersion chatback.dev/v1alpha1"),
        "{}",
        stderr(&wrong_kind)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_to_start_without_the_crd() {
    let fake = fake_apiserver::FakeApiServer::start().await;
    let kubeconfig = std::env::temp_dir().join(format!(
        "chatback-cli-{}-{}",
        std::process::id(),
        fake.addr.port()
    ));
    fake.write_kubeconfig(&kubeconfig, "default");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_operator"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", &kubeconfig)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the operator");
    let _ = std::fs::remove_file(&kubeconfig);
    assert!(
        !output.status.success(),
        "the operator must not run without its CRD"
    );
    let message = stderr(&output);
    assert!(
        message.contains("the ChatCluster CRD is not installed"),
        "{message}"
    );
    assert!(
        message.contains("kubectl apply --server-side -f crds/chatcluster.yaml"),
        "{message}"
    );
}
