//! The committed CRDs (`crds/`) are what users `kubectl apply` and what the Helm chart ships, so they must
//! be exactly what the Rust types generate. Regenerate with `cargo run -- crd` and the loop in README.

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, yaml) in lockstep::crd::crds_yaml().expect("CRDs render") {
        let path = root.join("crds").join(format!("{name}.yaml"));
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}); run `lockstep crd` and commit its output",
                path.display()
            )
        });
        assert_eq!(
            committed,
            format!("---\n{yaml}"),
            "{} differs from the generated CRD: regenerate it (see README) and commit",
            path.display()
        );
    }
}
