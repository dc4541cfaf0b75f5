//! The committed CRD manifests must be exactly what the code generates.

use crds::{
    CRD_PATH, LOAD_TEST_CRD_PATH, LOAD_TEST_REGENERATE_COMMAND, REGENERATE_COMMAND, crd_yaml,
    load_test_crd_yaml,
};

fn check(file: &str, path: &str, command: &str, generated: String) {
    let full = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(full)
        .unwrap_or_else(|e| panic!("{path} is missing ({e}); generate it with `{command}`"));
    assert!(
        committed == generated,
        "{path} is out of date with crds/src; regenerate it with `{command}`"
    );
}

#[test]
fn committed_crd_is_up_to_date() {
    check("chatcluster.yaml", CRD_PATH, REGENERATE_COMMAND, crd_yaml());
}

#[test]
fn committed_load_test_crd_is_up_to_date() {
    check(
        "chatloadtest.yaml",
        LOAD_TEST_CRD_PATH,
        LOAD_TEST_REGENERATE_COMMAND,
        load_test_crd_yaml(),
    );
}
