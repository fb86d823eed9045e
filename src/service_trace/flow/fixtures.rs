//! The recorded Azure DevOps fixtures (`tests/fixtures/azure-devops/`), loaded for the rule tests.

use serde::de::DeserializeOwned;

pub fn load<T: DeserializeOwned>(name: &str) -> T {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure-devops")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}
