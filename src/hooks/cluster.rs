//! The cluster side of the hooks: the gates and traces whose pipelines and repositories need service
//! hooks, grouped by organization, and the credential one of them uses (a PAT or a Microsoft Entra
//! token, resolved as the reconcilers do). Shared by the hook-health check, `lockstep hooks sync` and
//! the controller's hook set-up.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use super::coverage::{pipeline_coverage, trace_coverage};
use super::model::Subscription;
use crate::ado::AdoAuth;
use crate::crd::{AzureDevOpsSpec, HookCoverage, PipelineGate, ServiceTrace};
use crate::entra::EntraContext;
use crate::reconciler::credentials::resolve_with;
use crate::reconciler::scoped;
use crate::reconciler::token_cache::TokenCache;

/// Field manager of `status.hooks` writes: not `lockstep`, whose server-side applies own the rest.
pub const HOOKS_FIELD_MANAGER: &str = "lockstep-hooks";
/// Objects read per page, and at most this many pages per kind.
const LIST_PAGE: u32 = 500;
const MAX_PAGES: usize = 200;

/// A gate or a trace: what needs hooks, and where `status.hooks` goes.
#[derive(Clone, Debug)]
pub enum Watched {
    Gate(Box<PipelineGate>),
    Trace(Box<ServiceTrace>),
}

impl Watched {
    pub fn ado(&self) -> &AzureDevOpsSpec {
        match self {
            Self::Gate(g) => &g.spec.azure_devops,
            Self::Trace(t) => &t.spec.azure_devops,
        }
    }

    pub fn namespace(&self) -> String {
        match self {
            Self::Gate(g) => g.namespace(),
            Self::Trace(t) => t.namespace(),
        }
        .unwrap_or_default()
    }

    pub fn name(&self) -> String {
        match self {
            Self::Gate(g) => g.name_any(),
            Self::Trace(t) => t.name_any(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gate(_) => "PipelineGate",
            Self::Trace(_) => "ServiceTrace",
        }
    }

    /// Whether the object follows git pushes (a trace's HLD and manifest repositories): then its project
    /// needs a `git.push` subscription besides the pipeline events.
    pub fn needs_git_push(&self) -> bool {
        matches!(self, Self::Trace(_))
    }

    /// What `status.hooks` shows now.
    fn current(&self) -> Option<&HookCoverage> {
        match self {
            Self::Gate(g) => g.status.as_ref().and_then(|s| s.hooks.as_ref()),
            Self::Trace(t) => t.status.as_ref().and_then(|s| s.hooks.as_ref()),
        }
    }

    /// `status.hooks` from the organization's subscriptions: a gate's pipeline; a trace's CI pipeline
    /// and the repositories it reads.
    pub fn coverage(
        &self,
        subs: &[Subscription],
        project_id: &str,
        receiver_url: Option<&str>,
    ) -> HookCoverage {
        match self {
            Self::Gate(g) => pipeline_coverage(
                subs,
                project_id,
                g.spec.pipeline.definition_id,
                receiver_url,
            ),
            Self::Trace(t) => {
                let repositories: Vec<&str> = std::iter::once(t.spec.manifest.repository.as_str())
                    .chain(t.spec.hld.as_ref().map(|h| h.repository.as_str()))
                    .collect();
                trace_coverage(
                    subs,
                    project_id,
                    t.spec.build.definition_id,
                    &repositories,
                    receiver_url,
                )
            }
        }
    }
}

/// The organization URL as a grouping key: trimmed, no trailing slash, lower case.
pub fn org_key(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Every gate and trace (in `namespace`, or everywhere), grouped by organization.
pub async fn list_by_org(
    client: &kube::Client,
    namespace: &Option<String>,
    params: &ListParams,
) -> Result<BTreeMap<String, Vec<Watched>>, kube::Error> {
    let gates = list_all::<PipelineGate>(client, namespace, params).await?;
    let traces = list_all::<ServiceTrace>(client, namespace, params).await?;
    let mut by_org: BTreeMap<String, Vec<Watched>> = BTreeMap::new();
    for w in gates
        .into_iter()
        .map(|g| Watched::Gate(Box::new(g)))
        .chain(traces.into_iter().map(|t| Watched::Trace(Box::new(t))))
    {
        by_org
            .entry(org_key(&w.ado().organization_url))
            .or_default()
            .push(w);
    }
    Ok(by_org)
}

/// The projects of `objects` (as the first object spells each, compared case-insensitively), each with
/// whether one of its objects needs `git.push`.
pub fn projects(objects: &[Watched]) -> BTreeMap<String, (String, bool)> {
    let mut out: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for w in objects {
        let project = w.ado().project.trim();
        let entry = out
            .entry(project.to_ascii_lowercase())
            .or_insert_with(|| (project.to_string(), false));
        entry.1 |= w.needs_git_push();
    }
    out
}

/// The credential of the first object whose credential resolves, PAT or Entra alike: every object of
/// one organization may read its subscriptions, if any may. Each distinct credential is tried once.
pub async fn first_credential(
    client: &kube::Client,
    tokens: &TokenCache,
    entra: &EntraContext,
    objects: &[Watched],
) -> Option<AdoAuth> {
    let mut tried = HashSet::new();
    for w in objects {
        let ns = w.namespace();
        let credentials = &w.ado().credentials;
        let key = (
            ns.clone(),
            serde_json::to_string(credentials).unwrap_or_default(),
        );
        if !tried.insert(key) {
            continue;
        }
        match resolve_with(client, tokens, entra, &ns, credentials).await {
            Ok(auth) => return Some(auth),
            // The reconciler reports the object's credential problem on its status; here it only means
            // the next object's credential is tried.
            Err(e) => {
                debug!(kind = w.kind(), namespace = %ns, name = %w.name(), error = %e, "credential unusable for the service hooks")
            }
        }
    }
    None
}

/// Merge-patch `status.hooks` when it differs from what the object shows.
pub async fn write_coverage(client: &kube::Client, object: &Watched, coverage: &HookCoverage) {
    if object.current() == Some(coverage) {
        return;
    }
    let result = match object {
        Watched::Gate(g) => patch_hooks(client, &**g, coverage).await,
        Watched::Trace(t) => patch_hooks(client, &**t, coverage).await,
    };
    let (ns, name) = (object.namespace(), object.name());
    match result {
        Ok(()) => {
            info!(kind = object.kind(), namespace = %ns, name = %name, hooks = coverage.state.as_str(), "hook coverage updated")
        }
        Err(e) => {
            warn!(kind = object.kind(), namespace = %ns, name = %name, error = %e, "could not write status.hooks")
        }
    }
}

async fn patch_hooks<K>(
    client: &kube::Client,
    object: &K,
    coverage: &HookCoverage,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let ns = object.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"status": {"hooks": coverage}});
    let params = PatchParams {
        field_manager: Some(HOOKS_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch_status(&object.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

async fn list_all<K>(
    client: &kube::Client,
    namespace: &Option<String>,
    params: &ListParams,
) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = scoped(client, namespace);
    let mut out = Vec::new();
    let mut params = params.clone().limit(LIST_PAGE);
    for _ in 0..MAX_PAGES {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        out.extend(page.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(out)
}

/// Organizations (as keys) whose objects a filter on `organization_url` keeps: all without one.
pub fn org_filter(
    by_org: &BTreeMap<String, Vec<Watched>>,
    wanted: Option<&str>,
) -> BTreeSet<String> {
    by_org
        .keys()
        .filter(|k| wanted.is_none_or(|w| org_key(w) == **k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(project: &str) -> Watched {
        Watched::Gate(
            serde_json::from_value(json!({
                "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
                "metadata": {"name": "g", "namespace": "n"},
                "spec": {"azureDevOps": {"organizationUrl": "https://dev.azure.com/O/", "project": project,
                          "credentials": {"secretRef": {"name": "s", "key": "token"}}},
                         "pipeline": {"definitionId": 7, "branch": "main"}}
            }))
            .unwrap(),
        )
    }

    fn trace(project: &str) -> Watched {
        Watched::Trace(
            serde_json::from_value(json!({
                "apiVersion": "lockstep.dev/v1alpha1", "kind": "ServiceTrace",
                "metadata": {"name": "t", "namespace": "n"},
                "spec": {"azureDevOps": {"organizationUrl": "https://dev.azure.com/o", "project": project,
                          "credentials": {"secretRef": {"name": "s", "key": "token"}}},
                         "build": {"definitionId": 7, "branch": "main"},
                         "manifest": {"repository": "manifests", "branch": "main"},
                         "deployed": {"workload": {"kind": "Deployment", "name": "w", "container": "c"}}}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn projects_are_merged_case_insensitively_and_traces_need_git_push() {
        let objects = [gate("Shop"), trace("shop"), gate("Other")];
        let p = projects(&objects);
        assert_eq!(p.len(), 2);
        assert_eq!(p["shop"], ("Shop".to_string(), true));
        assert_eq!(p["other"], ("Other".to_string(), false));
        assert_eq!(
            org_key(&objects[0].ado().organization_url),
            org_key(&objects[1].ado().organization_url)
        );
    }
}
