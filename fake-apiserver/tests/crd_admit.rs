//! The `crd-admit` binary, as scripts/lint-k8s/validate.py runs it: the
//! repository's ChatCluster CRD, objects a line on stdin, verdicts a line out.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn crd_admit(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crd-admit"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crd-admit");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the objects");
    child.wait_with_output().expect("crd-admit's output")
}

/// One object a line, as validate.py sends them: a valid ChatCluster, one with
/// a misspelled field, one that breaks a CEL rule, and one of a version the CRD
/// does not serve.
const OBJECTS: &str = r#"{"apiVersion": "chatback.dev/v1alpha1", "kind": "ChatCluster", "metadata": {"name": "fine", "namespace": "chat"}, "spec": {}}
{"apiVersion": "chatback.dev/v1alpha1", "kind": "ChatCluster", "metadata": {"name": "typo", "namespace": "chat"}, "spec": {"server": {"replica": 3}}}
{"apiVersion": "chatback.dev/v1alpha1", "kind": "ChatCluster", "metadata": {"name": "crossed", "namespace": "chat"}, "spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}
{"apiVersion": "chatback.dev/v9", "kind": "ChatCluster"}
"#;

#[test]
fn judges_each_object_as_the_fake_admits_it() {
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/chatcluster.yaml");
    let output = crd_admit(&["--crd", crd.to_str().expect("a UTF-8 path")], OBJECTS);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts: Vec<Vec<String>> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON array of errors"))
        .collect();
    assert_eq!(verdicts.len(), 4, "{verdicts:?}");
    assert!(verdicts[0].is_empty(), "{verdicts:?}");
    assert_eq!(
        verdicts[1],
        [".spec.server.replica: field not declared in schema"]
    );
    assert!(
        verdicts[2][0].contains("autoscaling.minReplicas must be less than or equal to"),
        "{verdicts:?}"
    );
    assert!(
        verdicts[3][0].contains("no CRD given serves ChatCluster in chatback.dev/v9"),
        "{verdicts:?}"
    );
}

#[test]
fn without_a_crd_it_says_how_to_call_it() {
    let output = crd_admit(&[], "");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("usage: crd-admit --crd FILE"), "{stderr}");
}
