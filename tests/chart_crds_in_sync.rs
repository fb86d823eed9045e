//! The Helm chart installs the CRDs from `charts/lockstep/crds/` (Helm never templates that folder), so the
//! files there must be byte-for-byte the ones in `crds/`, which `crds_in_sync.rs` ties to the Rust types.

use std::collections::BTreeSet;
use std::path::Path;

fn yaml_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml"))
        .collect()
}

#[test]
fn chart_crds_are_byte_identical_to_crds_dir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = root.join("crds");
    let chart = root.join("charts/lockstep/crds");
    let expected = yaml_files(&source);
    assert!(!expected.is_empty(), "crds/ holds no CRDs");
    assert_eq!(
        yaml_files(&chart),
        expected,
        "charts/lockstep/crds/ must hold exactly the files of crds/: run `cp crds/*.yaml charts/lockstep/crds/`"
    );
    for name in &expected {
        let want = std::fs::read(source.join(name)).expect("read crds/ file");
        let got = std::fs::read(chart.join(name)).expect("read chart CRD file");
        assert!(
            got == want,
            "charts/lockstep/crds/{name} differs from crds/{name}: run `cp crds/*.yaml charts/lockstep/crds/`"
        );
    }
}
