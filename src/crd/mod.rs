//! The custom resources lockstep serves: their specs are the user's contract, their statuses are what
//! Flux, Argo CD and `kubectl wait` read. Field names follow `docs/DESIGN.md` exactly.

mod common;
mod metadata;
// kube's repeated `printcolumn(type_ = "string", ..)` arguments trip clippy's duplicated_attributes.
#[allow(clippy::duplicated_attributes)]
mod pipeline_gate;
mod run_summary;
#[allow(clippy::duplicated_attributes)]
mod service_trace;

pub use common::*;
pub use metadata::*;
pub use pipeline_gate::*;
pub use run_summary::{run_summary, status_time, whole_seconds};
pub use service_trace::*;

use kube::CustomResourceExt;

/// Both CRDs as one multi-document YAML stream, in a stable order; `lockstep crd` prints this and the
/// files in `crds/` must equal it.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_saphyr::ser::Error> {
    let mut out = Vec::new();
    for crd in [PipelineGate::crd(), ServiceTrace::crd()] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        out.push((name, serde_saphyr::to_string(&crd)?));
    }
    Ok(out)
}
