//! The committed CRD manifest must be exactly what the code generates.

use crds::{CRD_PATH, REGENERATE_COMMAND, crd_yaml};

#[test]
fn committed_crd_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/chatcluster.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("{CRD_PATH} is missing ({e}); generate it with `{REGENERATE_COMMAND}`")
    });
    assert!(
        committed == crd_yaml(),
        "{CRD_PATH} is out of date with crds/src; regenerate it with `{REGENERATE_COMMAND}`"
    );
}
