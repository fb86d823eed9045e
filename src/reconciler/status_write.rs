//! Writing an object's status: server-side apply as [`STATUS_FIELD_MANAGER`], and only when it changed, so a
//! poll that learned nothing new costs no API write (and no watch event for every reader).

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::info;

use super::memory::ObjectMemory;
use super::Error;
use crate::conditions::{self, READY};
use crate::crd::STATUS_FIELD_MANAGER;

/// A status with kstatus conditions, for the log line that says what a write changed.
pub trait WithConditions {
    fn conditions(&self) -> &[Condition];
}

/// Apply `desired` as the status of `obj` unless it equals `current`, and remember the write so the next
/// reconcile does not take the stale object from the watch for the truth.
pub async fn write_status_if_changed<K, S, X>(
    client: &kube::Client,
    memory: &ObjectMemory<K, S, X>,
    obj: &K,
    namespace: &str,
    current: Option<&S>,
    desired: &S,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + 'static,
    S: Serialize + PartialEq + Clone + WithConditions,
    X: Default,
{
    if current == Some(desired) {
        return Ok(());
    }
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(STATUS_FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        kind: memory.kind(),
        namespace: namespace.to_string(),
        name: name.clone(),
        source,
    })?;
    let key = ObjectRef::from_obj(obj);
    let ready = conditions::find(desired.conditions(), READY);
    info!(
        kind = memory.kind(),
        object = %key,
        ready = ready.map(|c| c.status.as_str()),
        reason = ready.map(|c| c.reason.as_str()),
        "status updated"
    );
    memory.remember_written(&key, obj, desired);
    Ok(())
}
