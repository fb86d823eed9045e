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
use crate::ado::{AdoAuth, AdoError, Build};
use crate::crd::{requested_at, DeployedRef, ServiceTrace, WorkloadKind, WorkloadRef};
use crate::pipeline_key::{full_branch_ref, PipelineKey};
use crate::reconciler::credentials::replace_refused_token;
use crate::reconciler::{Error, ReconcileIo};

/// What the reads go through: the reconciler's I/O and the committer dates already read.
pub struct Reader<'a> {
    pub io: &'a ReconcileIo,
    pub commit_dates: &'a CommitDates,
    pub flow_cache: &'a flow_reads::FlowCache,
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
    /// The trace input (with the first environment as "the cluster") and the flow's own reads.
    Complete(Box<TraceInput>, Box<flow_reads::FlowRead>),
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
    token: &AdoAuth,
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
    // The HLD-update pipeline, when it is not the CI pipeline itself; its runs are listed on the CI
    // branch (a build-completion or pipeline-resource trigger runs it for that branch's builds).
    let hld_runs = async {
        match spec.hld.as_ref().and_then(|h| h.definition_id) {
            Some(id) if id != spec.build.definition_id => {
                cached_builds(ctx, org, project, id, &spec.build.branch, token, not_before).await
            }
            _ => Ok(Vec::new()),
        }
    };
    let environments = flow_reads::read_environments(trace, namespace, &ctx.io.client);
    let (ci_runs, hld, manifest, generation, hld_runs, environments) =
        futures::join!(ci_runs, hld, manifest, generation, hld_runs, environments);
    let environments = environments?;

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
    let hld_runs = match hld_runs {
        Ok(runs) => runs,
        Err(err) => {
            note_transient(&err, &mut transient);
            Vec::new()
        }
    };
    if let Some((message, retry_after)) = transient {
        return Ok(Reads::Transient {
            message,
            retry_after,
        });
    }
    let ci_list: &[Build] = ci_runs.as_deref().unwrap_or(&[]);
    let head_of = |r: &RepoRead| {
        r.head
            .as_ref()
            .ok()
            .and_then(|h| h.as_ref())
            .map(|h| h.id.clone())
    };
    let heads = flow_reads::Heads {
        hld: hld.as_ref().and_then(head_of),
        manifest: head_of(&manifest),
    };
    let flow = match flow_reads::read_flow(
        trace,
        token,
        ctx,
        ci_list,
        hld_runs,
        environments,
        heads,
    )
    .await
    {
        Ok(flow) => flow,
        Err(err) => {
            let retry_after = match &err {
                AdoError::RateLimited { retry_after, .. } => Some(*retry_after),
                _ => None,
            };
            return Ok(Reads::Transient {
                message: err.to_string(),
                retry_after,
            });
        }
    };
    // The first environment stands for "the cluster" in the trace input; the reconciler traces each
    // environment with its own.
    let deployed = match flow.deployed.first() {
        Some(d) => d.clone(),
        None => read_deployed(&ctx.io.client, &DeployedRef::default(), namespace).await?,
    };

    let repo_input = |repository: &str, branch: &str, read: RepoRead| RepoInput {
        repository: repository.to_string(),
        branch: full_branch_ref(branch),
        web_url: read.web_url,
        head: read.head,
    };
    Ok(Reads::Complete(
        Box::new(TraceInput {
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
        }),
        Box::new(flow),
    ))
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
    token: &AdoAuth,
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
        .get_or_fetch(&key, token.secret(), not_before, || {
            ctx.io.metrics.builds_list.record(&key);
            crate::reconciler::io::list_runs(
                &ctx.io.ado,
                org,
                project,
                definition_id,
                branch,
                token,
            )
        })
        .await;
    match &fetched.result {
        Ok(runs) => Ok(runs.clone()),
        Err(err) => Err(replace_refused_token(ctx.io, token, err)
            .await
            .unwrap_or_else(|| err.clone())),
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
    token: &AdoAuth,
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
    token: &AdoAuth,
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
    read_deployed_with_cluster(client, deployed.clone(), trace_namespace)
        .await
        .map(|(input, _)| input)
}

/// The destination cluster an Argo CD Application names (`spec.destination.name`, else `.server`).
fn argo_destination(obj: &serde_json::Value) -> Option<String> {
    let d = obj.get("spec")?.get("destination")?;
    d.get("name")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .or_else(|| d.get("server").and_then(|v| v.as_str()))
        .map(str::to_string)
}

/// The deployed object read as a trace input, and for an Argo CD Application its destination cluster (an Application in a hub
/// that deploys to another cluster is read where it lives).
pub async fn read_deployed_with_cluster(
    client: &kube::Client,
    deployed: DeployedRef,
    trace_namespace: &str,
) -> Result<(DeployedInput, Option<String>), Error> {
    let deployed = &deployed;
    let Some(target) = deployed_target(deployed, trace_namespace) else {
        // The CRD's validation requires exactly one; an older object may still lack it.
        let target = DeployedTarget {
            kind: DeployedKind::FluxKustomization,
            namespace: trace_namespace.to_string(),
            name: String::new(),
        };
        return Ok((
            DeployedInput {
                target,
                observed: Err(ReadFailure(
                    "spec.deployed names nothing: set one of fluxKustomization, argoApplication, workload"
                        .into(),
                )),
            },
            None,
        ));
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
    let cluster = match (&got, target.kind) {
        (Ok(Some(obj)), DeployedKind::ArgoApplication) => argo_destination(obj),
        _ => None,
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
    Ok((DeployedInput { target, observed }, cluster))
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

pub use flow_reads::{
    manifest_sources, read_environments, read_flow, FlowCache, FlowRead, Heads, ManifestSource,
    COMMITS_PER_READ, FLOW_CACHE_CAPACITY,
};

mod flow_reads {
    //! Kept in this file: these reads use the readers above, and `read_all` calls them.
    //!
    //! The reads ServiceTrace 2 adds: every environment's deployed object, the newest build's source commit
    //! (author, pull request), recent HLD and manifest commits and the HLD-update runs that correlation
    //! ([`super::super::flow::correlate`]) ties to one change.
    //!
    //! Cost: Commits - Get Commits per HLD and manifest branch (`$top` = [`COMMITS_PER_READ`]) once per new
    //! head, Commits - Get and Pull Request Query for the source commit once per new build (Azure Repos
    //! only; cached, the answers never change), Pull Requests - Get only for an old-style merge message
    //! that the query did not answer, and the HLD-update pipeline's Builds List through the shared poll
    //! cache.
    use super::super::deployed::{AgentState, DeployedKind};
    use super::super::flow::compose::{EnvRead, FlowReads};
    use super::super::flow::facts::{CommitFacts, PullRequestFacts, RunFacts};
    use super::super::flow::history::{EnvHealth, EnvObservation};
    use super::super::flow::view::{EnvTarget, SourceFacts};
    use super::super::stages::DeployedInput;
    use super::{deployed_target, read_deployed_with_cluster, Reader};
    use crate::ado::AdoAuth;
    use crate::ado::{AdoError, Build};
    use crate::crd::ServiceTrace;
    use crate::reconciler::Error;

    /// Recent commits read per branch: enough for a day of busy HLD updates, bounded.
    pub const COMMITS_PER_READ: u32 = 30;

    /// Recent commits of a branch at a given head, and source commits with their pull request: a branch
    /// whose head did not move has the same recent commits, and a commit never changes, so each is read
    /// once per new head / new build, not on every poll. Bounded: cleared when it reaches
    /// [`FLOW_CACHE_CAPACITY`] entries (the next reconciles read again).
    #[derive(Default)]
    pub struct FlowCache {
        branches: std::sync::Mutex<std::collections::HashMap<String, Vec<CommitFacts>>>,
        sources: std::sync::Mutex<std::collections::HashMap<String, SourceFacts>>,
    }

    pub const FLOW_CACHE_CAPACITY: usize = 2048;

    fn cached<T: Clone>(
        map: &std::sync::Mutex<std::collections::HashMap<String, T>>,
        key: &str,
    ) -> Option<T> {
        map.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn remember<T>(
        map: &std::sync::Mutex<std::collections::HashMap<String, T>>,
        key: String,
        value: T,
    ) {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= FLOW_CACHE_CAPACITY {
            m.clear();
        }
        m.insert(key, value);
    }

    /// What the flow reads, plus each environment's input for the per-environment verdict.
    pub struct FlowRead {
        pub reads: FlowReads,
        pub deployed: Vec<DeployedInput>,
    }

    fn health(
        observed: &Result<
            super::super::deployed::DeployedObservation,
            super::super::stages::ReadFailure,
        >,
    ) -> (Option<String>, Option<String>, EnvHealth) {
        match observed {
            Ok(o) => (
                o.revision.as_ref().map(|r| r.value().to_string()),
                o.attempted.as_ref().map(|r| r.value().to_string()),
                match &o.agent {
                    AgentState::Settled => EnvHealth::Settled,
                    AgentState::Progressing(_) => EnvHealth::Progressing,
                    AgentState::Failed(why) => EnvHealth::Failed(why.clone()),
                    AgentState::Suspended => EnvHealth::Suspended,
                },
            ),
            Err(failure) => (None, None, EnvHealth::Unreadable(failure.0.clone())),
        }
    }

    /// Every environment of the trace, in promotion order.
    pub async fn read_environments(
        trace: &ServiceTrace,
        namespace: &str,
        client: &kube::Client,
    ) -> Result<(Vec<EnvRead>, Vec<DeployedInput>), Error> {
        let spec = &trace.spec;
        let envs = spec.environment_list();
        let sources = manifest_sources(trace);
        let reads = futures::future::join_all(
            envs.iter()
                .map(|e| read_deployed_with_cluster(client, e.deployed(), namespace)),
        )
        .await;
        let mut out = Vec::with_capacity(envs.len());
        let mut inputs = Vec::with_capacity(envs.len());
        for (env, read) in envs.iter().zip(reads) {
            let (input, cluster) = read?;
            let own = ManifestSource::of(spec, env);
            let whole_branch = ManifestSource {
                path: None,
                ..own.clone()
            };
            // `manifest_sources` lists every environment's source and its whole branch, so both lookups
            // succeed.
            let manifest_source = sources.iter().position(|s| *s == own).unwrap_or(0);
            let branch_source = sources.iter().position(|s| *s == whole_branch).unwrap_or(0);
            let (revision, attempted, health) = health(&input.observed);
            let target = deployed_target(&env.deployed(), namespace)
                .map(|t| t.to_string())
                .unwrap_or_else(|| "nothing".to_string());
            out.push(EnvRead {
                target: EnvTarget {
                    name: env.name.clone(),
                    target,
                    cluster,
                },
                observation: EnvObservation {
                    name: env.name.clone(),
                    revision,
                    attempted,
                    health,
                    by_image_tag: matches!(input.target.kind, DeployedKind::Workload(_)),
                },
                manifest_source,
                branch_source,
            });
            inputs.push(input);
        }
        Ok((out, inputs))
    }

    /// Where one environment's manifest commits are: a branch of the manifest repository and, when the
    /// environment names one, a folder in it (only commits touching it count for that environment).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ManifestSource {
        pub branch: String,
        /// `/prod`: always with a leading slash, without a trailing one (`searchCriteria.itemPath`).
        pub path: Option<String>,
    }

    impl ManifestSource {
        pub fn of(spec: &crate::crd::ServiceTraceSpec, env: &crate::crd::EnvironmentSpec) -> Self {
            let m = env.manifest.as_ref();
            Self {
                branch: m
                    .and_then(|m| m.branch.clone())
                    .unwrap_or_else(|| spec.manifest.branch.clone()),
                path: m
                    .and_then(|m| m.path.as_deref())
                    .map(|p| p.trim_matches('/'))
                    // The repository root is no filter at all.
                    .filter(|p| !p.is_empty())
                    .map(|p| format!("/{p}")),
            }
        }
    }

    /// The manifest sources the environments read, in `manifest_source` order: the trace's own
    /// branch (no path) first, then each other (branch, path) once, and for a folder also its whole
    /// branch (see `EnvRead::branch_source`).
    pub fn manifest_sources(trace: &ServiceTrace) -> Vec<ManifestSource> {
        let spec = &trace.spec;
        let mut sources = vec![ManifestSource {
            branch: spec.manifest.branch.clone(),
            path: None,
        }];
        for env in spec.environment_list() {
            let own = ManifestSource::of(spec, &env);
            let whole_branch = ManifestSource {
                path: None,
                ..own.clone()
            };
            for source in [own, whole_branch] {
                if !sources.contains(&source) {
                    sources.push(source);
                }
            }
        }
        sources
    }

    /// A non-transient Azure DevOps error leaves the link unknown; a transient one is returned so the last
    /// verdict stands.
    fn soft<T: Default>(r: Result<T, AdoError>, what: &str) -> Result<T, AdoError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                tracing::warn!(read = what, error = %e, "could not read; the link stays unknown");
                Ok(T::default())
            }
        }
    }

    /// Recent commits of `branch` (only those touching `path`, when given), cached by the branch head:
    /// a head that did not move has the same history under every path.
    #[allow(clippy::too_many_arguments)]
    async fn commits(
        ctx: &Reader<'_>,
        org: &str,
        project: &str,
        repository: &str,
        branch: &str,
        path: Option<&str>,
        head: Option<&str>,
        token: &AdoAuth,
    ) -> Result<Vec<CommitFacts>, AdoError> {
        let key = head.map(|h| {
            format!(
                "{org}|{project}|{repository}|{branch}|{}|{h}",
                path.unwrap_or_default()
            )
            .to_ascii_lowercase()
        });
        if let Some(hit) = key
            .as_deref()
            .and_then(|k| cached(&ctx.flow_cache.branches, k))
        {
            return Ok(hit);
        }
        let got = ctx
            .io
            .ado
            .get_commits_under(
                org,
                project,
                repository,
                branch,
                "branch",
                path,
                COMMITS_PER_READ,
                token,
            )
            .await
            .map(|v| v.iter().map(CommitFacts::from_commit).collect::<Vec<_>>());
        let got = got.inspect(|list| {
            if let Some(k) = key {
                remember(&ctx.flow_cache.branches, k, list.clone());
            }
        });
        soft(got, "commits")
    }

    /// The newest build's source commit and pull request (Azure Repos sources only: the Commits API cannot
    /// read a GitHub repository, and `requestedFor` is not the author).
    async fn source(
        ctx: &Reader<'_>,
        org: &str,
        project: &str,
        build: &Build,
        token: &AdoAuth,
    ) -> Result<SourceFacts, AdoError> {
        let Some(sha) = build.source_version.as_deref() else {
            return Ok(SourceFacts::default());
        };
        let repo = build.repository.as_ref();
        let azure_repos = repo
            .and_then(|r| r.type_.as_deref())
            .is_none_or(|t| t.eq_ignore_ascii_case("TfsGit"));
        let Some(repo_id) = repo.and_then(|r| r.id.as_deref()).filter(|_| azure_repos) else {
            return Ok(SourceFacts::default());
        };
        let key = format!("{org}|{repo_id}|{sha}").to_ascii_lowercase();
        if let Some(hit) = cached(&ctx.flow_cache.sources, &key) {
            return Ok(hit);
        }
        let commit = soft(
            ctx.io
                .ado
                .get_commits(org, project, repo_id, sha, "commit", 1, token)
                .await,
            "source commit",
        )?
        .into_iter()
        .find(|c| c.commit_id.eq_ignore_ascii_case(sha))
        .map(|c| CommitFacts::from_commit(&c));
        // Pull Request Query: the pull request whose merge commit this is, with its title, when Azure
        // DevOps knows one (also for squash merges and edited messages, which the message rule misses).
        let query = soft(
            ctx.io
                .ado
                .pull_request_query(org, project, repo_id, &[sha], token)
                .await
                .map(Some),
            "pull request query",
        )?;
        let facts = RunFacts::from_build(build);
        let mut pr = super::super::flow::correlate::source_pull_request(
            &facts,
            commit.as_ref(),
            query.as_ref(),
        );
        if let Some(p) = pr.as_mut().filter(|p| p.title.is_none()) {
            if let Ok(Some(got)) = soft(
                ctx.io
                    .ado
                    .get_pull_request(org, project, repo_id, p.id, token)
                    .await
                    .map(Some),
                "pull request",
            ) {
                *p = PullRequestFacts {
                    url: PullRequestFacts::from_pull_request(&got)
                        .url
                        .or(p.url.take()),
                    ..PullRequestFacts::from_pull_request(&got)
                };
            }
        }
        let facts = SourceFacts {
            author: commit.as_ref().and_then(|c| c.author.clone()),
            commit_url: commit.as_ref().and_then(|c| c.web_url.clone()),
            pull_request: pr,
        };
        // A commit (or its absence: a 404 was turned into "unknown" above) never changes.
        remember(&ctx.flow_cache.sources, key, facts.clone());
        Ok(facts)
    }

    /// Read everything the flow needs besides what [`super::super::read::read_all`] already read.
    /// Heads already read this reconcile (Refs - List), so unchanged branches come from the cache.
    #[derive(Clone, Debug, Default)]
    pub struct Heads {
        pub hld: Option<String>,
        pub manifest: Option<String>,
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn read_flow(
        trace: &ServiceTrace,
        token: &AdoAuth,
        ctx: &Reader<'_>,
        ci_runs: &[Build],
        hld_runs: Vec<Build>,
        environments: (Vec<EnvRead>, Vec<DeployedInput>),
        heads: Heads,
    ) -> Result<FlowRead, AdoError> {
        let spec = &trace.spec;
        let org = spec.azure_devops.organization_url.as_str();
        let project = spec.azure_devops.project.as_str();
        let (environments, deployed) = environments;
        let branch = crate::pipeline_key::full_branch_ref(&spec.build.branch);
        let newest = ci_runs
            .iter()
            .filter(|b| {
                b.source_branch
                    .as_deref()
                    .is_none_or(|s| s.eq_ignore_ascii_case(&branch))
            })
            .max_by_key(|b| b.id);
        let source_read = async {
            match newest {
                Some(b) => source(ctx, org, project, b, token).await,
                None => Ok(SourceFacts::default()),
            }
        };
        // Older builds that enter the history this reconcile (several finished between two polls):
        // their commits too, so every history entry carries its author and pull request. Each is read
        // once (cached per commit), and at most `historyLimit` of them.
        let known = trace
            .status
            .as_ref()
            .and_then(|s| s.history.iter().map(|h| h.build_id).max());
        let entering: Vec<&Build> = ci_runs
            .iter()
            .filter(|b| newest.is_none_or(|n| n.id != b.id))
            .filter(|b| b.result == Some(crate::ado::BuildResult::Succeeded))
            .filter(|b| known.is_some_and(|k| b.id > k))
            .filter(|b| {
                b.source_branch
                    .as_deref()
                    .is_none_or(|s| s.eq_ignore_ascii_case(&branch))
            })
            .take(spec.history_limit())
            .collect();
        let others_read = futures::future::join_all(
            entering
                .iter()
                .map(|b| async move { (b.id, source(ctx, org, project, b, token).await) }),
        );
        let hld_read = async {
            match &spec.hld {
                Some(h) => {
                    commits(
                        ctx,
                        org,
                        project,
                        &h.repository,
                        &h.branch,
                        None,
                        heads.hld.as_deref(),
                        token,
                    )
                    .await
                }
                None => Ok(Vec::new()),
            }
        };
        let sources = manifest_sources(trace);
        let manifest_read = futures::future::join_all(sources.iter().map(|source| {
            // Only the trace's own manifest branch had its head read (that head also keys its
            // path-filtered histories).
            let head = if source.branch == spec.manifest.branch {
                heads.manifest.as_deref()
            } else {
                None
            };
            commits(
                ctx,
                org,
                project,
                &spec.manifest.repository,
                &source.branch,
                source.path.as_deref(),
                head,
                token,
            )
        }));
        let (source, others, hld_commits, manifests) =
            futures::join!(source_read, others_read, hld_read, manifest_read);
        let mut sources = std::collections::BTreeMap::new();
        for (id, facts) in others {
            sources.insert(id, facts?);
        }
        let mut manifest_commits = Vec::with_capacity(manifests.len());
        for m in manifests {
            manifest_commits.push(m?);
        }
        Ok(FlowRead {
            reads: FlowReads {
                environments,
                source: source?,
                sources,
                hld_commits: hld_commits?,
                hld_runs: hld_runs.iter().map(RunFacts::from_build).collect(),
                manifest_commits,
            },
            deployed,
        })
    }
}
