//! The trace itself: from what was read (CI runs, HLD and manifest heads, manifest-generation runs, the
//! deployed object) to one stage per step and the Ready / Reconciling / Stalled verdict.
//!
//! Each stage is `Succeeded`, `InProgress`, `Failed` or `Unknown`, and may *hold* the trace: it is in
//! flight, it failed, its reference cannot be read, or its position in the chain cannot be determined.
//! The verdict comes from one stage, so that every message names the step that holds things up:
//!
//! - a reference that cannot be read (missing repository, branch or deployed object, rejected
//!   credentials, a revision that is not a commit) wins, because nothing upstream will fix it:
//!   Stalled=True, Ready=False, reason `ReferenceUnreadable`;
//! - otherwise the first holding stage in flow order (build, hld, manifest, deployed) decides: in flight
//!   → Reconciling=True, Ready=False; failed → Stalled=True, Ready=False; undetermined → Ready=Unknown.
//!   A newer build that is running therefore reports Reconciling even while an older manifest failed to
//!   apply: the new build is what the next deployment will carry;
//! - no stage holds → Ready=True: the cluster runs the manifest head (for a workload: the image tag of the
//!   newest successful build, rolled out), and that head came after the newest successful CI build, as
//!   decided in [`super::order`].
//!
//! "Successful" means result `succeeded`; a partially succeeded or canceled CI run does not produce the
//! image the trace looks for.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::deployed::{AgentState, DeployedObservation, DeployedTarget};
use super::order::{build_label, commit_after_build, generation_covers_build, Order};
use super::revision::{same_commit, DeployedRevision};
use crate::ado::models::{parse_ado_time, Build, BuildResult, BuildStatus};
use crate::conditions::Kstatus;
use crate::crd::{run_summary, short_sha, ServiceTraceStatus, TraceStage};

/// A read that failed for a reason a retry will not fix (not found, rejected credentials, a value that
/// does not parse). The text names the reference and says what to do; it never contains a token.
/// Transient failures (timeouts, 5xx, 429) are the shell's business: it keeps the last verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadFailure(pub String);

pub type Observed<T> = Result<T, ReadFailure>;

/// The CI pipeline: runs of one definition on one branch, as Builds - List returns them.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildInput {
    pub definition_id: i64,
    /// Full ref, `refs/heads/main`.
    pub branch: String,
    pub runs: Observed<Vec<Build>>,
}

/// The head of a branch and, when it was read, its committer date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadCommit {
    pub id: String,
    pub committed: Option<Timestamp>,
}

/// An HLD or manifest repository branch.
#[derive(Clone, Debug, PartialEq)]
pub struct RepoInput {
    pub repository: String,
    /// Full ref, `refs/heads/main`.
    pub branch: String,
    /// The repository's web URL (`GitRepository.webUrl`), for commit links.
    pub web_url: Option<String>,
    /// `Ok(None)`: the branch does not exist.
    pub head: Observed<Option<HeadCommit>>,
}

/// The manifest-generation pipeline's runs (any branch the shell chose to list).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationInput {
    pub definition_id: i64,
    pub runs: Observed<Vec<Build>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeployedInput {
    pub target: DeployedTarget,
    pub observed: Observed<DeployedObservation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TraceInput {
    pub build: BuildInput,
    pub hld: Option<RepoInput>,
    pub manifest: RepoInput,
    pub manifest_generation: Option<GenerationInput>,
    pub deployed: DeployedInput,
    pub now: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageName {
    Build,
    Hld,
    Manifest,
    Deployed,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Hld => "hld",
            Self::Manifest => "manifest",
            Self::Deployed => "deployed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageState {
    Succeeded,
    InProgress,
    Failed,
    Unknown,
}

impl StageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::InProgress => "InProgress",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }
}

/// Why a stage holds the trace back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldKind {
    /// Work is under way; it resolves on its own.
    InFlight,
    /// A run or the GitOps agent failed; a person has to act.
    Failed,
    /// A reference cannot be read; the spec or the credentials need fixing.
    Unreadable,
    /// The stage's place in the chain cannot be decided from what Azure DevOps returned.
    Undetermined,
}

/// Condition reasons, CamelCase as kstatus and `kubectl describe` show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceReason {
    InSync,
    BuildInProgress,
    BuildFailed,
    NoSuccessfulBuild,
    HldNotRendered,
    ManifestGenerationInProgress,
    ManifestGenerationFailed,
    ManifestBehindBuild,
    OrderUnknown,
    DeployPending,
    DeployFailed,
    DeploySuspended,
    ReferenceUnreadable,
}

impl TraceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InSync => "InSync",
            Self::BuildInProgress => "BuildInProgress",
            Self::BuildFailed => "BuildFailed",
            Self::NoSuccessfulBuild => "NoSuccessfulBuild",
            Self::HldNotRendered => "HldNotRendered",
            Self::ManifestGenerationInProgress => "ManifestGenerationInProgress",
            Self::ManifestGenerationFailed => "ManifestGenerationFailed",
            Self::ManifestBehindBuild => "ManifestBehindBuild",
            Self::OrderUnknown => "OrderUnknown",
            Self::DeployPending => "DeployPending",
            Self::DeployFailed => "DeployFailed",
            Self::DeploySuspended => "DeploySuspended",
            Self::ReferenceUnreadable => "ReferenceUnreadable",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub kind: HoldKind,
    pub reason: TraceReason,
}

/// One step of the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: StageName,
    pub commit: Option<String>,
    /// The run this stage reports (newest CI run; newest manifest-generation run).
    pub run: Option<Build>,
    pub state: StageState,
    pub web_url: Option<String>,
    pub message: String,
    pub hold: Option<Hold>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TraceVerdict {
    /// In flow order; `hld` only when configured.
    pub stages: Vec<Stage>,
    pub manifest_commit_id: Option<String>,
    pub deployed_revision: Option<DeployedRevision>,
    /// Build number of the newest successful CI build.
    pub image_tag: Option<String>,
    /// Ready, Reconciling and Stalled in one: the reason is a [`TraceReason`] and the message names the
    /// stage that holds the trace (or says what is deployed).
    pub kstatus: Kstatus,
    /// Some stage is in progress: poll fast.
    pub in_flight: bool,
    pub now: Timestamp,
}

/// Trace a service from its newest CI run to what the cluster runs.
pub fn trace(input: &TraceInput) -> TraceVerdict {
    let build = build_stage(&input.build);
    let newest_success = match &input.build.runs {
        Ok(runs) => newest_first(
            runs,
            Some(input.build.definition_id),
            Some(&input.build.branch),
        )
        .into_iter()
        .find(|b| b.result == Some(BuildResult::Succeeded)),
        Err(_) => None,
    };
    let hld = input.hld.as_ref().map(hld_stage);
    let hld_head = input
        .hld
        .as_ref()
        .and_then(|repo| repo.head.as_ref().ok().cloned().flatten());
    let manifest_head = input.manifest.head.as_ref().ok().cloned().flatten();
    let manifest = manifest_stage(
        &input.manifest,
        input.manifest_generation.as_ref(),
        newest_success.as_ref(),
        hld_head.as_ref().map(|h| h.id.as_str()),
    );
    let deployed = deployed_stage(
        &input.deployed,
        manifest_head.as_ref().map(|h| h.id.as_str()),
        input.manifest.web_url.as_deref(),
        newest_success.as_ref(),
    );

    let stages: Vec<Stage> = [Some(build), hld, Some(manifest), Some(deployed.0)]
        .into_iter()
        .flatten()
        .collect();
    let kstatus = kstatus(&stages, newest_success.as_ref());
    TraceVerdict {
        in_flight: stages.iter().any(|s| s.state == StageState::InProgress),
        stages,
        manifest_commit_id: manifest_head.map(|h| h.id),
        deployed_revision: deployed.1,
        image_tag: newest_success.and_then(|b| b.build_number),
        kstatus,
        now: input.now,
    }
}

fn build_stage(input: &BuildInput) -> Stage {
    let mut stage = Stage::new(StageName::Build);
    let runs = match &input.runs {
        Ok(runs) => newest_first(runs, Some(input.definition_id), Some(&input.branch)),
        Err(failure) => {
            stage.unreadable(format!(
                "build definition {}: {}",
                input.definition_id, failure.0
            ));
            return stage;
        }
    };
    let Some(newest) = runs.first() else {
        stage.message = format!(
            "no runs of build definition {} on {} yet",
            input.definition_id, input.branch
        );
        stage.hold = Some(Hold {
            kind: HoldKind::Undetermined,
            reason: TraceReason::NoSuccessfulBuild,
        });
        return stage;
    };
    let label = build_label(newest);
    let for_commit = newest
        .source_version
        .as_deref()
        .map(|c| format!(" for commit {}", short_sha(c)))
        .unwrap_or_default();
    stage.commit = newest.source_version.clone();
    stage.web_url = newest.web_url().map(str::to_string);
    stage.run = Some(newest.clone());
    if let Some(verb) = in_flight_verb(newest) {
        stage.state = StageState::InProgress;
        stage.message = format!("build {label} is {verb}{for_commit}");
        stage.hold = Some(Hold {
            kind: HoldKind::InFlight,
            reason: TraceReason::BuildInProgress,
        });
    } else if newest.result == Some(BuildResult::Succeeded) {
        stage.state = StageState::Succeeded;
        stage.message = format!("build {label} succeeded{for_commit}");
    } else {
        stage.state = StageState::Failed;
        stage.message = with_url(
            format!("build {label} {}{for_commit}", outcome(newest)),
            stage.web_url.as_deref(),
        );
        stage.hold = Some(Hold {
            kind: HoldKind::Failed,
            reason: TraceReason::BuildFailed,
        });
    }
    stage
}

fn hld_stage(repo: &RepoInput) -> Stage {
    let mut stage = Stage::new(StageName::Hld);
    if let Some(head) = repo_head(&mut stage, "hld", repo) {
        stage.state = StageState::Succeeded;
        stage.message = format!("hld {} at {}", repo.repository, short_sha(&head.id));
    }
    stage
}

fn manifest_stage(
    repo: &RepoInput,
    generation: Option<&GenerationInput>,
    newest_success: Option<&Build>,
    hld_head: Option<&str>,
) -> Stage {
    let mut stage = Stage::new(StageName::Manifest);
    let Some(head) = repo_head(&mut stage, "manifest", repo) else {
        return stage;
    };
    let manifest = short_sha(&head.id);
    let Some(generation) = generation else {
        let Some(build) = newest_success else {
            stage.state = StageState::Succeeded;
            stage.message = format!("manifest {manifest}");
            return stage;
        };
        let build_name = build_label(build);
        match commit_after_build(head.committed, build) {
            Order::After => {
                stage.state = StageState::Succeeded;
                stage.message =
                    format!("manifest {manifest} committed after build {build_name} finished");
            }
            Order::Before => {
                stage.state = StageState::InProgress;
                stage.message = format!(
                    "manifest {manifest} (committed {}) predates build {build_name} (finished {}); waiting for the manifest update",
                    head.committed.map(|t| format!("{t:.0}")).unwrap_or_default(),
                    build.finish_time.as_deref().and_then(parse_ado_time).map(|t| format!("{t:.0}")).unwrap_or_default(),
                );
                stage.hold = Some(Hold {
                    kind: HoldKind::InFlight,
                    reason: TraceReason::ManifestBehindBuild,
                });
            }
            Order::Unknown(why) => stage.undetermined(format!(
                "cannot tell whether manifest {manifest} came after build {build_name}: {why}"
            )),
        }
        return stage;
    };

    let runs = match &generation.runs {
        Ok(runs) => newest_first(runs, Some(generation.definition_id), None),
        Err(failure) => {
            stage.unreadable(format!(
                "manifest generation definition {}: {}",
                generation.definition_id, failure.0
            ));
            return stage;
        }
    };
    let Some(newest) = runs.first() else {
        stage.undetermined(format!(
            "manifest generation definition {} has no runs yet; cannot tell which build manifest {manifest} carries",
            generation.definition_id
        ));
        return stage;
    };
    let label = build_label(newest);
    stage.run = Some(newest.clone());
    let run_url = newest.web_url();
    if let Some(verb) = in_flight_verb(newest) {
        let for_commit = newest
            .source_version
            .as_deref()
            .map(|c| format!(" for commit {}", short_sha(c)))
            .unwrap_or_default();
        stage.state = StageState::InProgress;
        stage.message =
            format!("manifest generation {label} is {verb}{for_commit}; manifest at {manifest}");
        stage.hold = Some(Hold {
            kind: HoldKind::InFlight,
            reason: TraceReason::ManifestGenerationInProgress,
        });
        return stage;
    }
    if newest.result != Some(BuildResult::Succeeded) {
        stage.state = StageState::Failed;
        stage.message = with_url(
            format!(
                "manifest generation {label} {}; manifest at {manifest}",
                outcome(newest)
            ),
            run_url,
        );
        stage.hold = Some(Hold {
            kind: HoldKind::Failed,
            reason: TraceReason::ManifestGenerationFailed,
        });
        return stage;
    }
    let Some(build) = newest_success else {
        stage.state = StageState::Succeeded;
        stage.message = format!("manifest {manifest} generated by run {label}");
        return stage;
    };
    let build_name = build_label(build);
    match generation_covers_build(newest, build) {
        Order::After => {}
        Order::Before => {
            stage.state = StageState::InProgress;
            stage.message = format!(
                "manifest {manifest} predates build {build_name}: the newest manifest generation {label} was queued before the build finished"
            );
            stage.hold = Some(Hold {
                kind: HoldKind::InFlight,
                reason: TraceReason::ManifestBehindBuild,
            });
            return stage;
        }
        Order::Unknown(why) => {
            stage.undetermined(format!(
                "cannot tell whether manifest {manifest} came after build {build_name}: {why}"
            ));
            return stage;
        }
    }
    if let (Some(hld), Some(rendered)) = (hld_head, newest.source_version.as_deref()) {
        if !same_commit(hld, rendered) {
            stage.state = StageState::InProgress;
            stage.message = format!(
                "hld {} not yet rendered into the manifests: the newest manifest generation {label} built {}",
                short_sha(hld),
                short_sha(rendered)
            );
            stage.hold = Some(Hold {
                kind: HoldKind::InFlight,
                reason: TraceReason::HldNotRendered,
            });
            return stage;
        }
    }
    stage.state = StageState::Succeeded;
    stage.message =
        format!("manifest {manifest} generated by run {label} after build {build_name}");
    stage
}

/// The deployed stage, and the revision for `status.deployedRevision`.
fn deployed_stage(
    input: &DeployedInput,
    manifest_head: Option<&str>,
    manifest_web_url: Option<&str>,
    newest_success: Option<&Build>,
) -> (Stage, Option<DeployedRevision>) {
    let mut stage = Stage::new(StageName::Deployed);
    let target = &input.target;
    let observed = match &input.observed {
        Ok(observed) => observed,
        Err(failure) => {
            stage.unreadable(format!("{target}: {}", failure.0));
            return (stage, None);
        }
    };
    let Some(revision) = &observed.revision else {
        match &observed.agent {
            AgentState::Failed(why) => stage.fail(
                TraceReason::DeployFailed,
                format!("{target} has not applied a revision: {why}"),
            ),
            AgentState::Suspended => stage.fail(
                TraceReason::DeploySuspended,
                format!("{target} is suspended and has not applied a revision"),
            ),
            AgentState::Settled | AgentState::Progressing(_) => {
                stage.pending(format!("{target} has not applied a revision yet"))
            }
        }
        return (stage, None);
    };
    match revision {
        DeployedRevision::Commit(rev) => {
            let deployed = short_sha(&rev.commit);
            stage.commit = Some(rev.commit.clone());
            stage.web_url = manifest_web_url
                .map(|url| format!("{}/commit/{}", url.trim_end_matches('/'), rev.commit));
            let Some(head) = manifest_head else {
                stage.message = format!("{target} at {deployed}");
                return (stage, Some(revision.clone()));
            };
            let wanted = short_sha(head);
            if same_commit(head, &rev.commit) {
                match &observed.agent {
                    AgentState::Settled | AgentState::Suspended => {
                        stage.succeed(format!("{target} runs manifest {deployed}"))
                    }
                    AgentState::Progressing(why) => stage.pending(format!(
                        "{target} applied manifest {deployed} and is not ready yet: {why}"
                    )),
                    AgentState::Failed(why) => stage.fail(
                        TraceReason::DeployFailed,
                        format!("{target} failed at manifest {deployed}: {why}"),
                    ),
                }
            } else {
                match &observed.agent {
                    AgentState::Failed(why) => stage.fail(
                        TraceReason::DeployFailed,
                        format!("manifest {wanted} not applied by {target}: {why}; cluster at {deployed}"),
                    ),
                    AgentState::Suspended => stage.fail(
                        TraceReason::DeploySuspended,
                        format!("manifest {wanted} not applied: {target} is suspended; cluster at {deployed}"),
                    ),
                    AgentState::Settled | AgentState::Progressing(_) => {
                        stage.pending(format!("manifest {wanted} not yet applied by {target}; cluster at {deployed}"))
                    }
                }
            }
        }
        DeployedRevision::ImageTag(tag) => {
            let Some(wanted) = newest_success.and_then(|b| b.build_number.as_deref()) else {
                stage.message = format!("{target} runs image tag {tag}");
                return (stage, Some(revision.clone()));
            };
            if wanted == tag {
                match &observed.agent {
                    AgentState::Settled | AgentState::Suspended => {
                        stage.succeed(format!("{target} runs image tag {tag}"))
                    }
                    AgentState::Progressing(why) => {
                        stage.pending(format!("{target} is rolling out image tag {tag}: {why}"))
                    }
                    AgentState::Failed(why) => stage.fail(
                        TraceReason::DeployFailed,
                        format!("{target} failed rolling out image tag {tag}: {why}"),
                    ),
                }
            } else {
                match &observed.agent {
                    AgentState::Failed(why) => stage.fail(
                        TraceReason::DeployFailed,
                        format!("image tag {wanted} not rolled out to {target}: {why}; cluster runs {tag}"),
                    ),
                    AgentState::Suspended => stage.fail(
                        TraceReason::DeploySuspended,
                        format!("image tag {wanted} not rolled out: {target} is paused; cluster runs {tag}"),
                    ),
                    AgentState::Settled | AgentState::Progressing(_) => {
                        stage.pending(format!("image tag {wanted} not yet rolled out to {target}; cluster runs {tag}"))
                    }
                }
            }
        }
    }
    (stage, Some(revision.clone()))
}

/// The trace's kstatus: the first unreadable stage holds it, else the first stage with any hold; with
/// no hold it is Ready (in sync).
fn kstatus(stages: &[Stage], newest_success: Option<&Build>) -> Kstatus {
    let holding = stages
        .iter()
        .find(|s| {
            matches!(
                s.hold,
                Some(Hold {
                    kind: HoldKind::Unreadable,
                    ..
                })
            )
        })
        .or_else(|| stages.iter().find(|s| s.hold.is_some()));
    let Some((stage, hold)) = holding.and_then(|s| s.hold.map(|h| (s, h))) else {
        let deployed = stages
            .last()
            .map(|s| s.message.as_str())
            .unwrap_or_default();
        let message = match newest_success {
            Some(build) => {
                let commit = build
                    .source_version
                    .as_deref()
                    .map(|c| format!(" (commit {})", short_sha(c)))
                    .unwrap_or_default();
                format!(
                    "build {}{commit} is deployed: {deployed}",
                    build_label(build)
                )
            }
            None => deployed.to_string(),
        };
        return Kstatus::ready(TraceReason::InSync.as_str(), message);
    };
    let (reason, message) = (hold.reason.as_str(), stage.message.clone());
    match hold.kind {
        HoldKind::InFlight => Kstatus::in_progress(reason, message),
        HoldKind::Failed | HoldKind::Unreadable => Kstatus::stalled(reason, message),
        HoldKind::Undetermined => Kstatus::unknown(reason, message),
    }
}

impl Stage {
    fn new(name: StageName) -> Self {
        Stage {
            name,
            commit: None,
            run: None,
            state: StageState::Unknown,
            web_url: None,
            message: String::new(),
            hold: None,
        }
    }

    fn unreadable(&mut self, message: String) {
        self.state = StageState::Unknown;
        self.message = message;
        self.hold = Some(Hold {
            kind: HoldKind::Unreadable,
            reason: TraceReason::ReferenceUnreadable,
        });
    }

    fn undetermined(&mut self, message: String) {
        self.state = StageState::Unknown;
        self.message = message;
        self.hold = Some(Hold {
            kind: HoldKind::Undetermined,
            reason: TraceReason::OrderUnknown,
        });
    }

    fn succeed(&mut self, message: String) {
        self.state = StageState::Succeeded;
        self.message = message;
    }

    fn pending(&mut self, message: String) {
        self.state = StageState::InProgress;
        self.message = message;
        self.hold = Some(Hold {
            kind: HoldKind::InFlight,
            reason: TraceReason::DeployPending,
        });
    }

    fn fail(&mut self, reason: TraceReason, message: String) {
        self.state = StageState::Failed;
        self.message = message;
        self.hold = Some(Hold {
            kind: HoldKind::Failed,
            reason,
        });
    }

    /// The status entry; `updatedTime` stays at `previous`'s when nothing else about the stage changed.
    pub fn to_status(&self, previous: Option<&TraceStage>, now: Timestamp) -> TraceStage {
        self.to_status_named(self.name.as_str(), previous, now)
    }

    /// [`Self::to_status`] under another name (`deployed/<environment>`).
    pub fn to_status_named(
        &self,
        name: &str,
        previous: Option<&TraceStage>,
        now: Timestamp,
    ) -> TraceStage {
        let mut entry = TraceStage {
            name: name.to_string(),
            commit: self.commit.clone(),
            run: self.run.as_ref().map(run_summary),
            state: self.state.as_str().to_string(),
            web_url: self.web_url.clone(),
            updated_time: None,
            message: Some(self.message.clone()).filter(|m| !m.is_empty()),
        };
        let unchanged = previous.is_some_and(|p| {
            TraceStage {
                updated_time: None,
                ..p.clone()
            } == entry
        });
        entry.updated_time = match previous {
            Some(p) if unchanged && p.updated_time.is_some() => p.updated_time.clone(),
            _ => Some(Time(now)),
        };
        entry
    }
}

impl TraceVerdict {
    /// Write stages, commit ids and image tag into `status`. Conditions, observedGeneration,
    /// lastCheckedTime and lastError are the controller's.
    pub fn apply_to(&self, status: &mut ServiceTraceStatus) {
        let previous = std::mem::take(&mut status.stages);
        status.stages = self
            .stages
            .iter()
            .map(|stage| {
                stage.to_status(
                    previous.iter().find(|p| p.name == stage.name.as_str()),
                    self.now,
                )
            })
            .collect();
        status.manifest_commit_id = self.manifest_commit_id.clone();
        status.manifest_commit_short = self.manifest_commit_id.as_deref().map(short_sha);
        status.deployed_revision = self
            .deployed_revision
            .as_ref()
            .map(|r| r.value().to_string());
        status.deployed_revision_short =
            self.deployed_revision.as_ref().map(DeployedRevision::short);
        status.image_tag = self.image_tag.clone();
    }
}

/// Runs of `definition_id` on `branch` (when given), newest queued first; ties (and runs without a queue
/// time, which sort last) are broken by id, which Azure DevOps assigns in queue order.
fn newest_first(runs: &[Build], definition_id: Option<i64>, branch: Option<&str>) -> Vec<Build> {
    let mut selected: Vec<Build> = runs
        .iter()
        .filter(
            |b| match (definition_id, b.definition.as_ref().and_then(|d| d.id)) {
                (Some(wanted), Some(actual)) => wanted == actual,
                _ => true,
            },
        )
        .filter(|b| match (branch, b.source_branch.as_deref()) {
            (Some(wanted), Some(actual)) => wanted.eq_ignore_ascii_case(actual),
            _ => true,
        })
        .cloned()
        .collect();
    selected.sort_by_key(|b| {
        std::cmp::Reverse((b.queue_time.as_deref().and_then(parse_ado_time), b.id))
    });
    selected
}

fn in_flight_verb(build: &Build) -> Option<&'static str> {
    match build.status {
        Some(BuildStatus::NotStarted | BuildStatus::Postponed) => Some("queued"),
        Some(BuildStatus::InProgress) => Some("running"),
        Some(BuildStatus::Cancelling) => Some("being canceled"),
        _ => None,
    }
}

fn outcome(build: &Build) -> &'static str {
    match build.result {
        Some(BuildResult::Failed) => "failed",
        Some(BuildResult::Canceled) => "was canceled",
        Some(BuildResult::PartiallySucceeded) => "partially succeeded",
        Some(BuildResult::Succeeded) => "succeeded",
        Some(BuildResult::None | BuildResult::Unknown) | None => "ended without a result",
    }
}

fn with_url(message: String, url: Option<&str>) -> String {
    match url {
        Some(url) => format!("{message}: {url}"),
        None => message,
    }
}

/// The head of `repo`, recorded in `stage`; `None` when it cannot be read, with `stage` saying why.
fn repo_head(stage: &mut Stage, label: &str, repo: &RepoInput) -> Option<HeadCommit> {
    match &repo.head {
        Err(failure) => {
            stage.unreadable(format!(
                "{label} repository {}: {}",
                repo.repository, failure.0
            ));
            None
        }
        Ok(None) => {
            stage.unreadable(format!(
                "{label} branch {} does not exist in repository {}",
                repo.branch, repo.repository
            ));
            None
        }
        Ok(Some(head)) => {
            stage.commit = Some(head.id.clone());
            stage.web_url = repo
                .web_url
                .as_deref()
                .map(|url| format!("{}/commit/{}", url.trim_end_matches('/'), head.id));
            Some(head.clone())
        }
    }
}

#[cfg(test)]
mod tests;
