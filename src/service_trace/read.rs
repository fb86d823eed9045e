//! Everything a ServiceTrace reads before it traces: the CI runs (shared per pipeline with the gates),
//! the HLD and manifest heads, the manifest-generation runs and the deployed object.
//!
//! Azure DevOps errors are sorted by kind: a transient one (timeout, 5xx, 429) leaves the last verdict
//! standing and only sets `status.lastError`; any other (not found, rejected credentials) becomes the
//! stage's "cannot be read" message, so a trace whose repository does not exist is Stalled naming it,
//! while other traces, which read other repositories, are unaffected.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Api;
use tracing::warn;

use super::commit_dates::{CommitDates, CommitKey};
use super::deployed::{
    observe_argo_application, observe_flux_kustomization, observe_workload, DeployedKind,
    DeployedObservation, DeployedTarget,
};
use super::order::parse_commit_date;
use super::refs::{peel_annotated_tag, pick_ref, ref_filter, RefHead};
use super::stages::{
    BuildInput, DeployedInput, GenerationInput, HeadCommit, Observed, ReadFailure, RepoInput,
    TraceInput,
};
use crate::ado::{AdoError, Build};
use crate::crd::{requested_at, DeployedRef, ServiceTrace, WorkloadKind, WorkloadRef};
use crate::pipeline_key::{full_branch_ref, PipelineKey};
use crate::reconciler::{Error, ReconcileIo, RUNS_PER_LIST};
use crate::secret::SecretString;

/// What the reads go through: the reconciler's I/O and the committer dates already read.
pub struct Reader<'a> {
    pub io: &'a ReconcileIo,
    pub commit_dates: &'a CommitDates,
}

/// The Flux Kustomization API lockstep reads.
pub fn flux_kustomization_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
    ))
}

/// The Argo CD Application API lockstep reads.
pub fn argo_application_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "argoproj.io",
        "v1alpha1",
        "Application",
    ))
}

/// The outcome of reading everything a trace needs.
pub enum Reads {
    Complete(Box<TraceInput>),
    /// A transient Azure DevOps error: keep the last verdict.
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

/// Read Azure DevOps and the deployed object. Reads run concurrently; Kubernetes API failures other than
/// "not found" / "forbidden" fail the reconcile (retried with backoff).
pub async fn read_all(
    trace: &ServiceTrace,
    namespace: &str,
    token: &SecretString,
    now: Timestamp,
    ctx: &Reader<'_>,
) -> Result<Reads, Error> {
    let spec = &trace.spec;
    let org = spec.azure_devops.organization_url.as_str();
    let project = spec.azure_devops.project.as_str();
    let not_before = requested_at(trace);

    let ci_runs = cached_builds(
        ctx,
        org,
        project,
        spec.build.definition_id,
        &spec.build.branch,
        token,
        not_before,
    );
    let hld = async {
        match &spec.hld {
            Some(hld) => {
                let head = read_head(
                    ctx,
                    org,
                    project,
                    &hld.repository,
                    &hld.branch,
                    false,
                    token,
                );
                Some(head.await)
            }
            None => None,
        }
    };
    // Without a generation pipeline the manifest head is ordered after the build by its committer date.
    let manifest = read_head(
        ctx,
        org,
        project,
        &spec.manifest.repository,
        &spec.manifest.branch,
        spec.manifest.definition_id.is_none(),
        token,
    );
    // The generation pipeline usually lives in the HLD repository and runs on its branch.
    let generation_branch = spec
        .hld
        .as_ref()
        .map_or(spec.manifest.branch.as_str(), |h| h.branch.as_str());
    let generation = async {
        match spec.manifest.definition_id {
            Some(id) => Some((
                id,
                cached_builds(ctx, org, project, id, generation_branch, token, not_before).await,
            )),
            None => None,
        }
    };
    let deployed = read_deployed(&ctx.io.client, &spec.deployed, namespace);
    let (ci_runs, hld, manifest, generation, deployed) =
        futures::join!(ci_runs, hld, manifest, generation, deployed);
    let deployed = deployed?;

    let mut transient = None;
    let mut sort = |r: Result<RepoRead, AdoError>| match r {
        Ok(read) => read,
        Err(err) => {
            note_transient(&err, &mut transient);
            RepoRead {
                web_url: None,
                head: Err(ReadFailure(err.to_string())),
            }
        }
    };
    let hld = hld.map(&mut sort);
    let manifest = sort(manifest);
    let ci_runs = observed(ci_runs, &mut transient);
    let generation = generation.map(|(id, runs)| GenerationInput {
        definition_id: id,
        runs: observed(runs, &mut transient),
    });
    if let Some((message, retry_after)) = transient {
        return Ok(Reads::Transient {
            message,
            retry_after,
        });
    }

    let repo_input = |repository: &str, branch: &str, read: RepoRead| RepoInput {
        repository: repository.to_string(),
        branch: full_branch_ref(branch),
        web_url: read.web_url,
        head: read.head,
    };
    Ok(Reads::Complete(Box::new(TraceInput {
        build: BuildInput {
            definition_id: spec.build.definition_id,
            branch: full_branch_ref(&spec.build.branch),
            runs: ci_runs,
        },
        hld: spec
            .hld
            .as_ref()
            .zip(hld)
            .map(|(h, read)| repo_input(&h.repository, &h.branch, read)),
        manifest: repo_input(&spec.manifest.repository, &spec.manifest.branch, manifest),
        manifest_generation: generation,
        deployed,
        now,
    })))
}

fn note_transient(err: &AdoError, transient: &mut Option<(String, Option<Duration>)>) {
    if err.is_transient() && transient.is_none() {
        let retry_after = match err {
            AdoError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        *transient = Some((err.to_string(), retry_after));
    }
}

fn observed<T: Clone>(
    result: Result<T, AdoError>,
    transient: &mut Option<(String, Option<Duration>)>,
) -> Observed<T> {
    result.map_err(|err| {
        note_transient(&err, transient);
        ReadFailure(err.to_string())
    })
}

/// Builds List through the cache the gates use: traces and gates following one pipeline share a request.
async fn cached_builds(
    ctx: &Reader<'_>,
    org: &str,
    project: &str,
    definition_id: i64,
    branch: &str,
    token: &SecretString,
    not_before: Option<Timestamp>,
) -> Result<Vec<Build>, AdoError> {
    let Some(key) = PipelineKey::new(org, project, definition_id, branch) else {
        return Err(AdoError::InvalidRequest(format!(
            "organizationUrl {org:?} is not an Azure DevOps organization or collection URL: use https://dev.azure.com/<org>"
        )));
    };
    let fetched = ctx
        .io
        .cache
        .get_or_fetch(&key, token, not_before, || {
            ctx.io
                .ado
                .list_builds(org, project, definition_id, branch, RUNS_PER_LIST, token)
        })
        .await;
    match &fetched.result {
        Ok(runs) => Ok(runs.clone()),
        Err(err) => Err(clone_error(err)),
    }
}

/// The cache hands out shared answers; `AdoError` is not `Clone`, so rebuild the variant.
fn clone_error(err: &AdoError) -> AdoError {
    match err {
        AdoError::Unauthorized {
            organization,
            status,
        } => AdoError::Unauthorized {
            organization: organization.clone(),
            status: *status,
        },
        AdoError::NotFound { what, message } => AdoError::NotFound {
            what: what.clone(),
            message: message.clone(),
        },
        AdoError::RateLimited {
            organization,
            retry_after,
        } => AdoError::RateLimited {
            organization: organization.clone(),
            retry_after: *retry_after,
        },
        AdoError::Unavailable { status, detail } => AdoError::Unavailable {
            status: *status,
            detail: detail.clone(),
        },
        AdoError::InvalidResponse { endpoint, detail } => AdoError::InvalidResponse {
            endpoint: endpoint.clone(),
            detail: detail.clone(),
        },
        AdoError::InvalidRequest(detail) => AdoError::InvalidRequest(detail.clone()),
    }
}

struct RepoRead {
    web_url: Option<String>,
    head: Observed<Option<HeadCommit>>,
}

/// Repositories - Get (so a missing repository is named as such), then Refs - List with the exact-name
/// pick, then the annotated-tag look-up when the server did not peel a tag, then, when
/// `with_committer_date`, the head's committer date (see [`committer_date`]).
async fn read_head(
    ctx: &Reader<'_>,
    org: &str,
    project: &str,
    repository: &str,
    branch: &str,
    with_committer_date: bool,
    token: &SecretString,
) -> Result<RepoRead, AdoError> {
    let repo = ctx
        .io
        .ado
        .get_repository(org, project, repository, token)
        .await?;
    let full_ref = full_branch_ref(branch);
    let refs = ctx
        .io
        .ado
        .list_refs(org, project, &repo.id, ref_filter(&full_ref), token)
        .await?;
    let head = match pick_ref(&refs, &full_ref) {
        Ok(RefHead::Commit(id)) => Ok(Some(id)),
        Ok(RefHead::Missing) => Ok(None),
        Ok(RefHead::UnpeeledTag { tag_object_id }) => {
            match ctx
                .io
                .ado
                .get_annotated_tag(org, project, &repo.id, &tag_object_id, token)
                .await
            {
                Ok(tag) => peel_annotated_tag(&tag)
                    .map(Some)
                    .map_err(|e| ReadFailure(e.to_string())),
                // A lightweight tag: the ref already names the commit.
                Err(AdoError::NotFound { .. }) => Ok(Some(tag_object_id)),
                Err(e) => return Err(e),
            }
        }
        Err(e) => Err(ReadFailure(e.to_string())),
    };
    let head = match head {
        Ok(Some(id)) => {
            let committed = if with_committer_date {
                committer_date(ctx, org, project, &repo.id, &id, token).await?
            } else {
                None
            };
            Ok(Some(HeadCommit { id, committed }))
        }
        Ok(None) => Ok(None),
        Err(failure) => Err(failure),
    };
    Ok(RepoRead {
        web_url: repo.web_url,
        head,
    })
}

/// The committer date of `commit_id`, from memory or Commits - Get Commits (that commit, `$top=1`).
/// Asking by commit id, not by branch, reads the very commit the refs named even when the branch moved
/// meanwhile. A transient error is returned (the last verdict stands); any other failure, or a commit
/// without a readable date, leaves the date unknown, which the trace reports as `OrderUnknown`.
async fn committer_date(
    ctx: &Reader<'_>,
    org: &str,
    project: &str,
    repository_id: &str,
    commit_id: &str,
    token: &SecretString,
) -> Result<Option<Timestamp>, AdoError> {
    let key = CommitKey::new(org, repository_id, commit_id);
    if let Some(date) = ctx.commit_dates.get(&key) {
        return Ok(date);
    }
    let commits = match ctx
        .io
        .ado
        .get_commits(org, project, repository_id, commit_id, "commit", 1, token)
        .await
    {
        Ok(commits) => commits,
        Err(err) if err.is_transient() => return Err(err),
        Err(err) => {
            warn!(commit = commit_id, error = %err, "could not read the manifest head's committer date");
            return Ok(None);
        }
    };
    let Some(commit) = commits
        .into_iter()
        .find(|c| c.commit_id.eq_ignore_ascii_case(commit_id))
    else {
        warn!(
            commit = commit_id,
            "Commits - Get Commits did not return the manifest head"
        );
        return Ok(None);
    };
    let date = commit
        .committer
        .and_then(|c| c.date)
        .and_then(|d| parse_commit_date(&d));
    ctx.commit_dates.insert(key, date);
    Ok(date)
}

/// The object named in `spec.deployed`, for messages and watches.
pub fn deployed_target(deployed: &DeployedRef, trace_namespace: &str) -> Option<DeployedTarget> {
    let ns = |n: &Option<String>| n.clone().unwrap_or_else(|| trace_namespace.to_string());
    if let Some(k) = &deployed.flux_kustomization {
        return Some(DeployedTarget {
            kind: DeployedKind::FluxKustomization,
            namespace: ns(&k.namespace),
            name: k.name.clone(),
        });
    }
    if let Some(a) = &deployed.argo_application {
        return Some(DeployedTarget {
            kind: DeployedKind::ArgoApplication,
            namespace: ns(&a.namespace),
            name: a.name.clone(),
        });
    }
    deployed.workload.as_ref().map(|w| DeployedTarget {
        kind: DeployedKind::Workload(w.kind),
        namespace: ns(&w.namespace),
        name: w.name.clone(),
    })
}

async fn read_deployed(
    client: &kube::Client,
    deployed: &DeployedRef,
    trace_namespace: &str,
) -> Result<DeployedInput, Error> {
    let Some(target) = deployed_target(deployed, trace_namespace) else {
        // The CRD's validation requires exactly one; an older object may still lack it.
        let target = DeployedTarget {
            kind: DeployedKind::FluxKustomization,
            namespace: trace_namespace.to_string(),
            name: String::new(),
        };
        return Ok(DeployedInput {
            target,
            observed: Err(ReadFailure(
                "spec.deployed names nothing: set one of fluxKustomization, argoApplication, workload"
                    .into(),
            )),
        });
    };
    let got = match target.kind {
        DeployedKind::FluxKustomization => {
            get_dynamic(client, &flux_kustomization_resource(), &target).await
        }
        DeployedKind::ArgoApplication => {
            get_dynamic(client, &argo_application_resource(), &target).await
        }
        DeployedKind::Workload(kind) => get_workload(client, kind, &target).await,
    };
    let observed = match got {
        Ok(Some(obj)) => observe(&target, deployed.workload.as_ref(), &obj),
        Ok(None) => Err(ReadFailure(
            "not found: create it or point spec.deployed at the object that deploys the manifests"
                .to_string(),
        )),
        Err(kube::Error::Api(status)) if status.is_not_found() => Err(ReadFailure(format!(
            "the cluster does not serve the {} API: install {} or fix spec.deployed",
            target.kind.kind_name(),
            match target.kind {
                DeployedKind::FluxKustomization => "Flux (kustomize.toolkit.fluxcd.io/v1)",
                DeployedKind::ArgoApplication => "Argo CD (argoproj.io/v1alpha1)",
                DeployedKind::Workload(_) => "apps/v1",
            }
        ))),
        Err(kube::Error::Api(status)) if status.is_forbidden() => Err(ReadFailure(format!(
            "lockstep may not read it: grant get, list and watch on {} in namespace {}",
            target.kind.kind_name(),
            target.namespace
        ))),
        Err(source) => {
            return Err(Error::ReadDeployed {
                target: target.to_string(),
                source,
            })
        }
    };
    Ok(DeployedInput { target, observed })
}

fn observe(
    target: &DeployedTarget,
    workload: Option<&WorkloadRef>,
    obj: &serde_json::Value,
) -> Observed<DeployedObservation> {
    let result = match target.kind {
        DeployedKind::FluxKustomization => observe_flux_kustomization(obj),
        DeployedKind::ArgoApplication => observe_argo_application(obj),
        DeployedKind::Workload(kind) => {
            observe_workload(kind, obj, workload.and_then(|w| w.container.as_deref()))
        }
    };
    result.map_err(|e| ReadFailure(e.to_string()))
}

async fn get_dynamic(
    client: &kube::Client,
    resource: &ApiResource,
    target: &DeployedTarget,
) -> Result<Option<serde_json::Value>, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &target.namespace, resource);
    let obj = api.get_opt(&target.name).await?;
    Ok(obj.and_then(|o| serde_json::to_value(o).ok()))
}

async fn get_workload(
    client: &kube::Client,
    kind: WorkloadKind,
    target: &DeployedTarget,
) -> Result<Option<serde_json::Value>, kube::Error> {
    let (ns, name) = (target.namespace.as_str(), target.name.as_str());
    let value = match kind {
        WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .and_then(|o| serde_json::to_value(o).ok()),
        WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .and_then(|o| serde_json::to_value(o).ok()),
        WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .and_then(|o| serde_json::to_value(o).ok()),
    };
    Ok(value)
}
