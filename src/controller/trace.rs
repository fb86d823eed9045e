//! The ServiceTrace reconciler: read the PAT, read the CI runs (shared per pipeline with the gates), the
//! HLD and manifest heads, the manifest-generation runs and the deployed object, trace, and write status
//! only when it changed. The rules are in [`crate::trace`]; this is the I/O around them.
//!
//! Azure DevOps errors are sorted by kind: a transient one (timeout, 5xx, 429) leaves the last verdict
//! standing and only sets `status.lastError`; any other (not found, rejected credentials) becomes the
//! stage's "cannot be read" message, so a trace whose repository does not exist is Stalled naming it,
//! while other traces, which read other repositories, are unaffected.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use tracing::{debug, info, warn};

use super::commit_dates::{CommitDates, CommitKey};
use super::credentials::{objects_using_secret, read_token};
use super::events::publish_transition_event;
use super::gate::REQUESTED_AT_ANNOTATION;
use super::gate_status::whole_seconds;
use super::memory::ObjectMemory;
use super::reconcile_io::ReconcileIo;
use super::status_write;
use super::Error;
use crate::ado::{AdoError, Build};
use crate::conditions::{self, Kstatus, READY};
use crate::crd::{
    duration_or, DeployedRef, ServiceTrace, ServiceTraceStatus, WorkloadKind, WorkloadRef,
};
use crate::pipeline_key::{full_branch_ref, PipelineKey};
use crate::secret::SecretString;
use crate::trace::deployed::{
    observe_argo_application, observe_flux_kustomization, observe_workload, DeployedKind,
    DeployedObservation, DeployedTarget,
};
use crate::trace::order::parse_commit_date;
use crate::trace::refs::{peel_annotated_tag, pick_ref, ref_filter, RefHead};
use crate::trace::stages::{
    self, BuildInput, DeployedInput, GenerationInput, HeadCommit, Observed, ReadFailure, RepoInput,
    TraceInput, TraceVerdict,
};

const KIND: &str = "ServiceTrace";
/// Runs fetched per Builds List; the same number the gates use, so both share one cached answer.
const RUNS_PER_LIST: u32 = 20;
/// `status.lastCheckedTime` is refreshed at least this often even when nothing else changed, so readers
/// can tell a quiet trace from a dead controller without a status write on every poll.
const LAST_CHECKED_REFRESH: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

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

/// Everything a trace reconcile needs.
pub struct TraceContext {
    pub io: ReconcileIo,
    /// The controller's view of all traces, to prune per-trace memory.
    pub store: Store<ServiceTrace>,
    /// Committer dates of manifest heads already read (they never change).
    commit_dates: CommitDates,
    memory: ObjectMemory<ServiceTrace, ServiceTraceStatus>,
}

impl TraceContext {
    pub fn new(io: ReconcileIo, store: Store<ServiceTrace>) -> Self {
        Self {
            io,
            store,
            commit_dates: CommitDates::default(),
            memory: ObjectMemory::new(KIND),
        }
    }
}

/// Reconcile one trace. Azure DevOps problems become status; only Kubernetes API failures are errors.
pub async fn reconcile(trace: Arc<ServiceTrace>, ctx: Arc<TraceContext>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*trace);
    ctx.memory
        .track_reconcile(&ctx.io.metrics, &key, reconcile_inner(&trace, &ctx))
        .await
}

/// Back off exponentially per trace on Kubernetes API errors (see [`super::backoff`]).
pub fn error_policy(trace: Arc<ServiceTrace>, error: &Error, ctx: Arc<TraceContext>) -> Action {
    let key = ObjectRef::from_obj(&*trace);
    let delay = ctx.memory.retry_delay_after_failure(&key);
    warn!(trace = %key, error = %error, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// The outcome of reading everything a trace needs.
enum Reads {
    Complete(Box<TraceInput>),
    /// A transient Azure DevOps error: keep the last verdict.
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

async fn reconcile_inner(trace: &ServiceTrace, ctx: &TraceContext) -> Result<Action, Error> {
    let name = trace.name_any();
    let namespace = trace.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: KIND,
        name: name.clone(),
    })?;
    let key = ObjectRef::from_obj(trace);
    let now = whole_seconds(Timestamp::now());
    let interval = duration_or(&trace.spec.interval, ctx.io.config.default_interval);
    let current = ctx
        .memory
        .current_status(&key, trace, trace.status.as_ref());
    let previous = current.clone().unwrap_or_default();
    let status = StatusWriter {
        trace,
        namespace: &namespace,
        key: &key,
        current: current.as_ref(),
        ctx,
    };

    if trace.spec.suspend {
        let desired = with_kstatus(
            previous.clone(),
            &Kstatus::suspended(&previous.conditions),
            trace,
            now,
        );
        status.write(&desired).await?;
        return Ok(Action::await_change());
    }

    let secret_ref = &trace.spec.azure_devops.credentials.secret_ref;
    let token = match read_token(&ctx.io.client, &ctx.io.tokens, &namespace, secret_ref).await? {
        Ok(token) => token,
        Err(problem) => {
            let desired = with_kstatus(
                previous.clone(),
                &Kstatus::stalled("AuthenticationFailed", problem),
                trace,
                now,
            );
            status.write(&desired).await?;
            publish_transition(trace, current.as_ref(), &desired, ctx).await;
            return Ok(Action::requeue(interval));
        }
    };

    match read_all(trace, &namespace, &token, now, ctx).await? {
        Reads::Transient {
            message,
            retry_after,
        } => {
            let mut desired = previous.clone();
            desired.last_error = Some(message);
            status.write(&desired).await?;
            let mut after = ctx.io.config.fast_interval.min(interval);
            if let Some(retry_after) = retry_after {
                after = after.max(retry_after);
            }
            // The retry time lives here, not in status: lastError stays put while the hold counts down.
            info!(trace = %key, error = %desired.last_error.as_deref().unwrap_or_default(), retry_in_s = after.as_secs(), "Azure DevOps read failed; the last verdict stands");
            Ok(Action::requeue(after))
        }
        Reads::Complete(input) => {
            let verdict = stages::trace(&input);
            let desired = desired_status(&verdict, &previous, trace.metadata.generation, now);
            status.write(&desired).await?;
            publish_transition(trace, current.as_ref(), &desired, ctx).await;
            let after = if verdict.in_flight {
                ctx.io.config.fast_interval.min(interval)
            } else {
                interval
            };
            debug!(trace = %key, ready = verdict.ready.status.as_str(), reason = verdict.ready.reason.as_str(), "reconciled");
            Ok(Action::requeue(after))
        }
    }
}

/// Every outcome of a reconcile writes its status the same way; only the status differs.
struct StatusWriter<'a> {
    trace: &'a ServiceTrace,
    namespace: &'a str,
    key: &'a ObjectRef<ServiceTrace>,
    current: Option<&'a ServiceTraceStatus>,
    ctx: &'a TraceContext,
}

impl StatusWriter<'_> {
    /// Count `desired`'s Ready state in the gauge and write it unless it is the current status.
    async fn write(&self, desired: &ServiceTraceStatus) -> Result<(), Error> {
        let ctx = self.ctx;
        let ready = conditions::find(&desired.conditions, READY).map(|c| c.status.clone());
        ctx.memory
            .update_ready_gauge(&ctx.io.metrics, &ctx.store, self.key, ready);
        status_write::write_status_if_changed(
            &ctx.io.client,
            &ctx.memory,
            self.trace,
            self.namespace,
            self.current,
            desired,
        )
        .await
    }
}

/// The status for a verdict: stages, commit ids, conditions, observedGeneration; `lastError` cleared.
pub fn desired_status(
    verdict: &TraceVerdict,
    previous: &ServiceTraceStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> ServiceTraceStatus {
    let mut next = previous.clone();
    verdict.apply_to(&mut next);
    next.last_error = None;
    next.observed_generation = generation;
    next.conditions = kstatus(verdict).to_conditions(&previous.conditions, generation, Time(now));
    // lastCheckedTime moves with every other change, and at least every LAST_CHECKED_REFRESH.
    let checked = previous.last_checked_time.as_ref().map(|t| t.0);
    let mut unchanged = next.clone();
    unchanged.last_checked_time = previous.last_checked_time.clone();
    let stale = checked.is_none_or(|t| now.duration_since(t) >= LAST_CHECKED_REFRESH);
    next.last_checked_time = if unchanged == *previous && !stale {
        previous.last_checked_time.clone()
    } else {
        Some(Time(now))
    };
    next
}

/// The verdict as kstatus conditions input.
pub fn kstatus(verdict: &TraceVerdict) -> Kstatus {
    use crate::trace::stages::ConditionStatus as S;
    let reason = verdict.ready.reason.as_str();
    let message = verdict.ready.message.clone();
    match (
        verdict.ready.status,
        verdict.reconciling.status,
        verdict.stalled.status,
    ) {
        (S::True, _, _) => Kstatus::ready(reason, message),
        (_, _, S::True) => Kstatus::stalled(reason, message),
        (_, S::True, _) => Kstatus::in_progress(reason, message),
        _ => Kstatus::unknown(reason, message),
    }
}

fn with_kstatus(
    mut status: ServiceTraceStatus,
    k: &Kstatus,
    trace: &ServiceTrace,
    now: Timestamp,
) -> ServiceTraceStatus {
    status.conditions = k.to_conditions(&status.conditions, trace.metadata.generation, Time(now));
    status.observed_generation = trace.metadata.generation;
    status
}

/// Read Azure DevOps and the deployed object. Reads run concurrently; Kubernetes API failures other than
/// "not found" / "forbidden" fail the reconcile (retried with backoff).
async fn read_all(
    trace: &ServiceTrace,
    namespace: &str,
    token: &SecretString,
    now: Timestamp,
    ctx: &TraceContext,
) -> Result<Reads, Error> {
    let spec = &trace.spec;
    let org = spec.azure_devops.organization_url.as_str();
    let project = spec.azure_devops.project.as_str();
    let not_before = trace
        .annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .and_then(|v| v.parse::<Timestamp>().ok());

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
    // Until the per-environment flow is wired in, the first environment stands for "the cluster".
    let first_env = spec
        .environment_list()
        .first()
        .map(|e| e.deployed())
        .unwrap_or_default();
    let deployed = read_deployed(&ctx.io.client, &first_env, namespace);
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
    ctx: &TraceContext,
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
    ctx: &TraceContext,
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
    ctx: &TraceContext,
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

/// An Event when Ready changes status or reason, so `kubectl describe` shows the trace's history.
async fn publish_transition(
    trace: &ServiceTrace,
    current: Option<&ServiceTraceStatus>,
    desired: &ServiceTraceStatus,
    ctx: &TraceContext,
) {
    let before = current.and_then(|s| conditions::find(&s.conditions, READY));
    let Some(after) = conditions::find(&desired.conditions, READY) else {
        return;
    };
    if before.is_some_and(|b| b.status == after.status && b.reason == after.reason) {
        return;
    }
    let stalled = conditions::status_of(&desired.conditions, conditions::STALLED)
        == conditions::ConditionStatus::True;
    let (type_, reason) = match (after.status.as_str(), stalled) {
        ("True", _) => (EventType::Normal, "TraceReady"),
        (_, true) => (EventType::Warning, "TraceStalled"),
        ("False", false) => (EventType::Normal, "TraceProgressing"),
        _ => (EventType::Normal, "TraceUnknown"),
    };
    publish_transition_event(&ctx.io.recorders, trace, type_, reason, &after.message).await;
}

/// Traces in the Secret's namespace that reference it.
pub fn traces_using_secret(
    store: &Store<ServiceTrace>,
    secret: &Secret,
) -> Vec<ObjectRef<ServiceTrace>> {
    objects_using_secret(store, secret, |t| {
        &t.spec.azure_devops.credentials.secret_ref
    })
}

/// Traces whose `spec.deployed` names this object: a sync or rollout re-traces exactly those.
pub fn traces_deployed_on(
    store: &Store<ServiceTrace>,
    kind: DeployedKind,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Vec<ObjectRef<ServiceTrace>> {
    let (Some(ns), Some(name)) = (namespace, name) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|t| {
            let trace_ns = t.metadata.namespace.as_deref().unwrap_or_default();
            t.spec.environment_list().iter().any(|e| {
                deployed_target(&e.deployed(), trace_ns)
                    .is_some_and(|d| d.kind == kind && d.namespace == ns && d.name == name)
            })
        })
        .map(|t| ObjectRef::from_obj(&**t))
        .collect()
}
