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

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON,
};
use kube::CustomResourceExt;
use serde_json::json;

/// Reason of the conditions an object carries before lockstep first wrote its status.
pub const NOT_EVALUATED: &str = "NotEvaluated";

/// The status kube-apiserver serves for an object lockstep has not evaluated yet: `Ready=Unknown` and
/// `Reconciling=True`, so kstatus (Flux `wait`), Flux CEL health checks, the Argo CD Lua checks and
/// `kubectl wait --for=condition=Ready` all read "in progress", never "current". Without it an object
/// with no status reads as Current to kstatus and a gate nobody checked would let a deployment through.
///
/// It works because the apiserver applies schema defaults when it decodes an object read from etcd
/// (apiextensions-apiserver `pkg/apiserver/customresource_handler.go` `unstructuredDefaulter`,
/// `pkg/apiserver/schema/defaulting/algorithm.go`; docs: "Defaulting happens ... when reading from etcd"),
/// and a create drops `status` when the status subresource is on (`pkg/registry/customresource/strategy.go`
/// `PrepareForCreate`), so every new object reads back with this status until lockstep writes its own.
/// Gateway API defaults `Gateway.status` the same way ("Waiting for controller").
///
/// `lastTransitionTime` is required by the Condition schema, and a default must validate; the epoch says
/// "never". No `observedGeneration`: lockstep's server-side apply sets every field of all three condition
/// types, so nothing of this default survives its first write.
pub fn not_evaluated_status() -> serde_json::Value {
    let condition = |type_: &str, status: &str| {
        json!({
            "type": type_,
            "status": status,
            "reason": NOT_EVALUATED,
            "message": "lockstep has not evaluated this object yet",
            "lastTransitionTime": "1970-01-01T00:00:00Z",
        })
    };
    json!({"conditions": [condition("Ready", "Unknown"), condition("Reconciling", "True")]})
}

/// `crd` with [`not_evaluated_status`] as the schema default of `status` in every version. kube-derive
/// cannot express a default on the status field itself (kube-rs issue 1239), hence this step after it.
pub fn with_status_default(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(not_evaluated_status()));
        }
    }
    crd
}

/// Both CRDs as lockstep installs them, in a stable order: what `lockstep crd` prints, what `crds/` and the
/// chart ship, and what the tests register with the emulator (through `crds/`).
pub fn crds() -> [CustomResourceDefinition; 2] {
    [
        with_status_default(PipelineGate::crd()),
        with_status_default(ServiceTrace::crd()),
    ]
}

/// Both CRDs as YAML documents named after the CRD; `lockstep crd` prints these and the files in `crds/`
/// must equal them.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_saphyr::ser::Error> {
    let mut out = Vec::new();
    for crd in crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        out.push((name, serde_saphyr::to_string(&crd)?));
    }
    Ok(out)
}
