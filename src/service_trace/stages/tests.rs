//! Every stage state that changes the verdict, and every message a user reads.

use super::*;
use crate::ado::models::ListResponse;
use crate::conditions::ConditionStatus;
use crate::crd::{RunSummary, WorkloadKind};
use crate::service_trace::deployed::DeployedKind;
use crate::service_trace::revision::GitRevision;
use serde_json::json;

const SRC_OLD: &str = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SRC: &str = "1234567bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SRC_NEW: &str = "7654321ccccccccccccccccccccccccccccccccc";
const HLD: &str = "4d4d4d4eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
const HLD_OLD: &str = "3c3c3c3eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
const MANIFEST: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const CLUSTER: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
const ORG: &str = "https://dev.azure.com/contoso/Shop";

fn run(
    definition: i64,
    id: i64,
    status: &str,
    result: Option<&str>,
    queued: &str,
    finished: Option<&str>,
    commit: &str,
) -> Build {
    serde_json::from_value(json!({
        "id": id,
        "buildNumber": format!("20261122.{id}"),
        "status": status,
        "result": result,
        "queueTime": queued,
        "finishTime": finished,
        "sourceBranch": "refs/heads/main",
        "sourceVersion": commit,
        "definition": {"id": definition, "name": if definition == 12 { "orders-ci" } else { "orders-manifests" }},
        "_links": {"web": {"href": format!("{ORG}/_build/results?buildId={id}")}}
    }))
    .expect("valid build")
}

fn ci(
    id: i64,
    status: &str,
    result: Option<&str>,
    queued: &str,
    finished: Option<&str>,
    commit: &str,
) -> Build {
    run(12, id, status, result, queued, finished, commit)
}

fn generation(id: i64, status: &str, result: Option<&str>, queued: &str, commit: &str) -> Build {
    let finished = (status == "completed").then_some("2026-11-22T10:08:00Z");
    run(14, id, status, result, queued, finished, commit)
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("valid timestamp")
}

fn flux() -> DeployedTarget {
    DeployedTarget {
        kind: DeployedKind::FluxKustomization,
        namespace: "flux-system".into(),
        name: "orders".into(),
    }
}

fn at(commit: &str, agent: AgentState) -> Observed<DeployedObservation> {
    Ok(DeployedObservation {
        revision: Some(DeployedRevision::Commit(GitRevision {
            reference: Some("main".into()),
            commit: commit.into(),
        })),
        attempted: None,
        agent,
    })
}

fn repo(name: &str, head: &str, committed: Option<&str>) -> RepoInput {
    RepoInput {
        repository: name.into(),
        branch: "refs/heads/main".into(),
        web_url: Some(format!("{ORG}/_git/{name}")),
        head: Ok(Some(HeadCommit {
            id: head.into(),
            committed: committed.map(ts),
        })),
    }
}

/// Build 4 (commit 1234567) finished at 10:05; the HLD head 4d4d4d4 was rendered by generation run 7
/// (queued 10:06) into manifest a1b2c3d, which Flux applied and reports Ready.
fn in_sync() -> TraceInput {
    TraceInput {
        build: BuildInput {
            definition_id: 12,
            branch: "refs/heads/main".into(),
            runs: Ok(vec![
                ci(
                    4,
                    "completed",
                    Some("succeeded"),
                    "2026-11-22T10:00:00Z",
                    Some("2026-11-22T10:05:00Z"),
                    SRC,
                ),
                ci(
                    3,
                    "completed",
                    Some("succeeded"),
                    "2026-11-22T09:00:00Z",
                    Some("2026-11-22T09:05:00Z"),
                    SRC_OLD,
                ),
            ]),
        },
        hld: Some(repo("orders-hld", HLD, None)),
        manifest: repo("orders-manifests", MANIFEST, Some("2026-11-22T10:07:30Z")),
        manifest_generation: Some(GenerationInput {
            definition_id: 14,
            runs: Ok(vec![generation(
                7,
                "completed",
                Some("succeeded"),
                "2026-11-22T10:06:00Z",
                HLD,
            )]),
        }),
        deployed: DeployedInput {
            target: flux(),
            observed: at(MANIFEST, AgentState::Settled),
        },
        now: ts("2026-11-22T10:10:00Z"),
    }
}

/// Same service without HLD repository and manifest-generation pipeline: order by commit date.
fn plain() -> TraceInput {
    TraceInput {
        hld: None,
        manifest_generation: None,
        ..in_sync()
    }
}

fn push_ci(input: &mut TraceInput, build: Build) {
    if let Ok(runs) = &mut input.build.runs {
        runs.insert(0, build);
    }
}

fn set_generation(input: &mut TraceInput, runs: Vec<Build>) {
    if let Some(g) = &mut input.manifest_generation {
        g.runs = Ok(runs);
    }
}

fn stage(verdict: &TraceVerdict, name: StageName) -> &Stage {
    verdict
        .stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {} stage", name.as_str()))
}

#[track_caller]
fn assert_reconciling(verdict: &TraceVerdict, reason: TraceReason, message: &str) {
    let k = &verdict.kstatus;
    assert_eq!(k.ready, ConditionStatus::False, "Ready: {k:?}");
    assert!(k.reconciling, "Reconciling: {k:?}");
    assert!(!k.stalled, "Stalled: {k:?}");
    assert_eq!(k.reason, reason.as_str());
    assert_eq!(k.message, message);
}

#[track_caller]
fn assert_stalled(verdict: &TraceVerdict, reason: TraceReason, message: &str) {
    let k = &verdict.kstatus;
    assert_eq!(k.ready, ConditionStatus::False, "Ready: {k:?}");
    assert!(!k.reconciling, "Reconciling: {k:?}");
    assert!(k.stalled, "Stalled: {k:?}");
    assert_eq!(k.reason, reason.as_str());
    assert_eq!(k.message, message);
}

#[track_caller]
fn assert_unknown(verdict: &TraceVerdict, reason: TraceReason, message: &str) {
    let k = &verdict.kstatus;
    assert_eq!(k.ready, ConditionStatus::Unknown, "Ready: {k:?}");
    assert!(!k.reconciling);
    assert!(!k.stalled);
    assert_eq!(k.reason, reason.as_str());
    assert_eq!(k.message, message);
}

fn states(verdict: &TraceVerdict) -> Vec<(&'static str, &'static str)> {
    verdict
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str()))
        .collect()
}

// ---- in sync -------------------------------------------------------------------------------------

#[test]
fn in_sync_with_hld_and_generation_is_ready() {
    let v = trace(&in_sync());
    assert_eq!(v.kstatus.ready, ConditionStatus::True);
    assert!(!v.kstatus.reconciling);
    assert!(!v.kstatus.stalled);
    assert_eq!(v.kstatus.reason, TraceReason::InSync.as_str());
    assert_eq!(
        v.kstatus.message,
        "build 20261122.4 (commit 1234567) is deployed: Kustomization flux-system/orders runs manifest a1b2c3d"
    );
    assert_eq!(
        states(&v),
        [
            ("build", "Succeeded"),
            ("hld", "Succeeded"),
            ("manifest", "Succeeded"),
            ("deployed", "Succeeded")
        ]
    );
    assert_eq!(v.image_tag.as_deref(), Some("20261122.4"));
    assert_eq!(v.manifest_commit_id.as_deref(), Some(MANIFEST));
    assert_eq!(
        v.deployed_revision.as_ref().map(DeployedRevision::value),
        Some(MANIFEST)
    );
    assert!(!v.in_flight);
}

#[test]
fn in_sync_stage_details() {
    let v = trace(&in_sync());
    let build = stage(&v, StageName::Build);
    assert_eq!(build.commit.as_deref(), Some(SRC));
    assert_eq!(build.run.as_ref().map(|r| r.id), Some(4));
    assert_eq!(
        build.web_url.as_deref(),
        Some("https://dev.azure.com/contoso/Shop/_build/results?buildId=4")
    );
    assert_eq!(
        build.message,
        "build 20261122.4 succeeded for commit 1234567"
    );

    let hld = stage(&v, StageName::Hld);
    assert_eq!(hld.commit.as_deref(), Some(HLD));
    assert_eq!(hld.message, "hld orders-hld at 4d4d4d4");
    assert_eq!(
        hld.web_url,
        Some(format!("{ORG}/_git/orders-hld/commit/{HLD}"))
    );

    let manifest = stage(&v, StageName::Manifest);
    assert_eq!(manifest.commit.as_deref(), Some(MANIFEST));
    assert_eq!(manifest.run.as_ref().map(|r| r.id), Some(7));
    assert_eq!(
        manifest.message,
        "manifest a1b2c3d generated by run 20261122.7 after build 20261122.4"
    );
    assert_eq!(
        manifest.web_url,
        Some(format!("{ORG}/_git/orders-manifests/commit/{MANIFEST}"))
    );

    let deployed = stage(&v, StageName::Deployed);
    assert_eq!(deployed.commit.as_deref(), Some(MANIFEST));
    assert_eq!(
        deployed.message,
        "Kustomization flux-system/orders runs manifest a1b2c3d"
    );
    assert_eq!(
        deployed.web_url,
        Some(format!("{ORG}/_git/orders-manifests/commit/{MANIFEST}"))
    );
    assert!(v.stages.iter().all(|s| s.hold.is_none()));
}

#[test]
fn in_sync_by_commit_date_without_generation() {
    let v = trace(&plain());
    assert_eq!(v.kstatus.ready, ConditionStatus::True);
    assert_eq!(
        states(&v),
        [
            ("build", "Succeeded"),
            ("manifest", "Succeeded"),
            ("deployed", "Succeeded")
        ]
    );
    assert_eq!(
        stage(&v, StageName::Manifest).message,
        "manifest a1b2c3d committed after build 20261122.4 finished"
    );
    assert_eq!(stage(&v, StageName::Manifest).run, None);
}

#[test]
fn abbreviated_or_upper_case_deployed_commit_still_matches() {
    let mut input = in_sync();
    input.deployed.observed = at(&MANIFEST.to_ascii_uppercase(), AgentState::Settled);
    assert_eq!(trace(&input).kstatus.ready, ConditionStatus::True);
}

// ---- build stage -----------------------------------------------------------------------------

#[test]
fn running_ci_build_is_reconciling() {
    let mut input = in_sync();
    push_ci(
        &mut input,
        ci(5, "inProgress", None, "2026-11-22T10:09:00Z", None, SRC_NEW),
    );
    let v = trace(&input);
    assert_reconciling(
        &v,
        TraceReason::BuildInProgress,
        "build 20261122.5 is running for commit 7654321",
    );
    let build = stage(&v, StageName::Build);
    assert_eq!(build.state, StageState::InProgress);
    assert_eq!(build.commit.as_deref(), Some(SRC_NEW));
    // The image tag and the rest of the chain still describe the newest successful build.
    assert_eq!(v.image_tag.as_deref(), Some("20261122.4"));
    assert_eq!(
        states(&v)[1..],
        [
            ("hld", "Succeeded"),
            ("manifest", "Succeeded"),
            ("deployed", "Succeeded")
        ]
    );
    assert!(v.in_flight);
}

#[test]
fn queued_postponed_and_cancelling_builds_are_in_flight() {
    for (status, verb) in [
        ("notStarted", "queued"),
        ("postponed", "queued"),
        ("cancelling", "being canceled"),
    ] {
        let mut input = in_sync();
        push_ci(
            &mut input,
            ci(5, status, None, "2026-11-22T10:09:00Z", None, SRC_NEW),
        );
        assert_reconciling(
            &trace(&input),
            TraceReason::BuildInProgress,
            &format!("build 20261122.5 is {verb} for commit 7654321"),
        );
    }
}

#[test]
fn failed_canceled_and_partial_builds_stall() {
    for (result, words) in [
        ("failed", "failed"),
        ("canceled", "was canceled"),
        ("partiallySucceeded", "partially succeeded"),
    ] {
        let mut input = in_sync();
        push_ci(
            &mut input,
            ci(
                5,
                "completed",
                Some(result),
                "2026-11-22T10:09:00Z",
                Some("2026-11-22T10:12:00Z"),
                SRC_NEW,
            ),
        );
        let v = trace(&input);
        assert_stalled(
            &v,
            TraceReason::BuildFailed,
            &format!("build 20261122.5 {words} for commit 7654321: {ORG}/_build/results?buildId=5"),
        );
        assert_eq!(stage(&v, StageName::Build).state, StageState::Failed);
        assert_eq!(
            v.image_tag.as_deref(),
            Some("20261122.4"),
            "a {result} build produces no image"
        );
    }
}

#[test]
fn completed_build_without_result_stalls() {
    let mut input = in_sync();
    push_ci(
        &mut input,
        ci(
            5,
            "completed",
            None,
            "2026-11-22T10:09:00Z",
            Some("2026-11-22T10:12:00Z"),
            SRC_NEW,
        ),
    );
    assert_stalled(
        &trace(&input),
        TraceReason::BuildFailed,
        &format!("build 20261122.5 ended without a result for commit 7654321: {ORG}/_build/results?buildId=5"),
    );
}

#[test]
fn no_ci_runs_is_unknown() {
    let mut input = in_sync();
    input.build.runs = Ok(vec![]);
    let v = trace(&input);
    assert_unknown(
        &v,
        TraceReason::NoSuccessfulBuild,
        "no runs of build definition 12 on refs/heads/main yet",
    );
    assert_eq!(v.image_tag, None);
    // Downstream stages still show what they read.
    assert_eq!(
        stage(&v, StageName::Manifest).message,
        "manifest a1b2c3d generated by run 20261122.7"
    );
    assert_eq!(stage(&v, StageName::Deployed).state, StageState::Succeeded);
}

#[test]
fn only_failed_ci_runs_stall_without_image_tag() {
    let mut input = plain();
    input.build.runs = Ok(vec![ci(
        5,
        "completed",
        Some("failed"),
        "2026-11-22T10:09:00Z",
        Some("2026-11-22T10:12:00Z"),
        SRC_NEW,
    )]);
    let v = trace(&input);
    assert_eq!(v.kstatus.reason, TraceReason::BuildFailed.as_str());
    assert_eq!(v.image_tag, None);
    assert_eq!(stage(&v, StageName::Manifest).message, "manifest a1b2c3d");
}

#[test]
fn first_ci_build_running_with_no_success_yet() {
    let mut input = plain();
    input.build.runs = Ok(vec![ci(
        1,
        "inProgress",
        None,
        "2026-11-22T10:09:00Z",
        None,
        SRC,
    )]);
    let v = trace(&input);
    assert_reconciling(
        &v,
        TraceReason::BuildInProgress,
        "build 20261122.1 is running for commit 1234567",
    );
    assert_eq!(v.image_tag, None);
}

#[test]
fn runs_of_other_definitions_and_branches_are_ignored() {
    let mut input = in_sync();
    let mut other_branch = ci(9, "inProgress", None, "2026-11-22T10:09:00Z", None, SRC_NEW);
    other_branch.source_branch = Some("refs/heads/feature/x".into());
    push_ci(&mut input, other_branch);
    push_ci(
        &mut input,
        run(
            99,
            10,
            "completed",
            Some("failed"),
            "2026-11-22T10:09:30Z",
            Some("2026-11-22T10:10:00Z"),
            SRC_NEW,
        ),
    );
    assert_eq!(trace(&input).kstatus.ready, ConditionStatus::True);
}

#[test]
fn runs_are_ordered_by_queue_time_not_list_order() {
    // builds-list.json is a real answer without queryOrder: ids 637 (inProgress), 638 (notStarted, newest), 636, 635.
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure-devops/builds-list.json");
    let list: ListResponse<Build> =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("valid list");
    let mut input = plain();
    input.build = BuildInput {
        definition_id: 178,
        branch: "refs/heads/main".into(),
        runs: Ok(list.value),
    };
    let v = trace(&input);
    let build = stage(&v, StageName::Build);
    assert_eq!(build.run.as_ref().map(|r| r.id), Some(638));
    assert_eq!(
        build.message,
        "build 20260401.4 is queued for commit 574271b"
    );
    // 635 succeeded too, but on another branch: the image is 636's.
    assert_eq!(v.image_tag.as_deref(), Some("20260401.2"));
}

#[test]
fn unreadable_ci_definition_stalls() {
    let mut input = in_sync();
    input.build.runs = Err(ReadFailure(
        "definition 12 was not found in project Shop".into(),
    ));
    let v = trace(&input);
    assert_stalled(
        &v,
        TraceReason::ReferenceUnreadable,
        "build definition 12: definition 12 was not found in project Shop",
    );
    assert_eq!(stage(&v, StageName::Build).state, StageState::Unknown);
    assert_eq!(v.image_tag, None);
}

// ---- hld stage --------------------------------------------------------------------------------

#[test]
fn missing_hld_branch_stalls() {
    let mut input = in_sync();
    if let Some(hld) = &mut input.hld {
        hld.head = Ok(None);
    }
    let v = trace(&input);
    assert_stalled(
        &v,
        TraceReason::ReferenceUnreadable,
        "hld branch refs/heads/main does not exist in repository orders-hld",
    );
    assert_eq!(stage(&v, StageName::Hld).state, StageState::Unknown);
    assert_eq!(stage(&v, StageName::Hld).commit, None);
}

#[test]
fn missing_hld_repository_stalls_naming_it() {
    let mut input = in_sync();
    if let Some(hld) = &mut input.hld {
        hld.head = Err(ReadFailure(
            "repository orders-hld was not found in project Shop".into(),
        ));
    }
    assert_stalled(
        &trace(&input),
        TraceReason::ReferenceUnreadable,
        "hld repository orders-hld: repository orders-hld was not found in project Shop",
    );
}

#[test]
fn hld_not_rendered_yet_is_reconciling() {
    let mut input = in_sync();
    set_generation(
        &mut input,
        vec![generation(
            7,
            "completed",
            Some("succeeded"),
            "2026-11-22T10:06:00Z",
            HLD_OLD,
        )],
    );
    let v = trace(&input);
    assert_reconciling(
        &v,
        TraceReason::HldNotRendered,
        "hld 4d4d4d4 not yet rendered into the manifests: the newest manifest generation 20261122.7 built 3c3c3c3",
    );
    assert_eq!(stage(&v, StageName::Manifest).state, StageState::InProgress);
}

#[test]
fn generation_without_source_version_skips_the_lineage_check() {
    let mut input = in_sync();
    let mut g = generation(
        7,
        "completed",
        Some("succeeded"),
        "2026-11-22T10:06:00Z",
        HLD,
    );
    g.source_version = None;
    set_generation(&mut input, vec![g]);
    assert_eq!(trace(&input).kstatus.ready, ConditionStatus::True);
}

// ---- manifest stage with a generation pipeline ---------------------------------------------------

#[test]
fn running_generation_is_reconciling() {
    let mut input = in_sync();
    set_generation(
        &mut input,
        vec![
            generation(8, "inProgress", None, "2026-11-22T10:09:00Z", HLD),
            generation(
                7,
                "completed",
                Some("succeeded"),
                "2026-11-22T10:06:00Z",
                HLD_OLD,
            ),
        ],
    );
    let v = trace(&input);
    assert_reconciling(
        &v,
        TraceReason::ManifestGenerationInProgress,
        "manifest generation 20261122.8 is running for commit 4d4d4d4; manifest at a1b2c3d",
    );
    assert_eq!(
        stage(&v, StageName::Manifest).run.as_ref().map(|r| r.id),
        Some(8)
    );
}

#[test]
fn failed_generation_stalls_naming_the_stage() {
    let mut input = in_sync();
    set_generation(
        &mut input,
        vec![
            generation(8, "completed", Some("failed"), "2026-11-22T10:09:00Z", HLD),
            generation(
                7,
                "completed",
                Some("succeeded"),
                "2026-11-22T10:06:00Z",
                HLD_OLD,
            ),
        ],
    );
    let v = trace(&input);
    assert_stalled(
        &v,
        TraceReason::ManifestGenerationFailed,
        &format!("manifest generation 20261122.8 failed; manifest at a1b2c3d: {ORG}/_build/results?buildId=8"),
    );
    assert_eq!(stage(&v, StageName::Manifest).state, StageState::Failed);
    // The deployed stage still reports the cluster runs the (older) manifest head.
    assert_eq!(stage(&v, StageName::Deployed).state, StageState::Succeeded);
}

#[test]
fn generation_queued_before_the_build_finished_is_behind() {
    let mut input = in_sync();
    set_generation(
        &mut input,
        vec![generation(
            7,
            "completed",
            Some("succeeded"),
            "2026-11-22T10:04:59Z",
            HLD,
        )],
    );
    assert_reconciling(
        &trace(&input),
        TraceReason::ManifestBehindBuild,
        "manifest a1b2c3d predates build 20261122.4: the newest manifest generation 20261122.7 was queued before the build finished",
    );
}

#[test]
fn ci_pipeline_that_pushes_manifests_covers_itself() {
    let mut input = plain();
    input.manifest_generation = Some(GenerationInput {
        definition_id: 12,
        runs: input.build.runs.clone(),
    });
    // The manifest commit was pushed during the build, before it finished: fine for this layout.
    input.manifest.head = Ok(Some(HeadCommit {
        id: MANIFEST.into(),
        committed: Some(ts("2026-11-22T10:03:00Z")),
    }));
    let v = trace(&input);
    assert_eq!(v.kstatus.ready, ConditionStatus::True, "{:?}", v.kstatus);
    assert_eq!(
        stage(&v, StageName::Manifest).message,
        "manifest a1b2c3d generated by run 20261122.4 after build 20261122.4"
    );
}

#[test]
fn no_generation_runs_is_unknown() {
    let mut input = in_sync();
    set_generation(&mut input, vec![]);
    assert_unknown(
        &trace(&input),
        TraceReason::OrderUnknown,
        "manifest generation definition 14 has no runs yet; cannot tell which build manifest a1b2c3d carries",
    );
}

#[test]
fn generation_without_queue_time_is_unknown() {
    let mut input = in_sync();
    let mut g = generation(
        7,
        "completed",
        Some("succeeded"),
        "2026-11-22T10:06:00Z",
        HLD,
    );
    g.queue_time = None;
    set_generation(&mut input, vec![g]);
    assert_unknown(
        &trace(&input),
        TraceReason::OrderUnknown,
        "cannot tell whether manifest a1b2c3d came after build 20261122.4: manifest generation 20261122.7 has no queue time",
    );
}

#[test]
fn unreadable_generation_definition_stalls() {
    let mut input = in_sync();
    if let Some(g) = &mut input.manifest_generation {
        g.runs = Err(ReadFailure(
            "definition 14 was not found in project Shop".into(),
        ));
    }
    assert_stalled(
        &trace(&input),
        TraceReason::ReferenceUnreadable,
        "manifest generation definition 14: definition 14 was not found in project Shop",
    );
}

// ---- manifest stage without one ----------------------------------------------------------------

#[test]
fn manifest_older_than_the_build_is_behind() {
    let mut input = plain();
    input.manifest = repo("orders-manifests", MANIFEST, Some("2026-11-22T10:03:59Z"));
    let v = trace(&input);
    assert_reconciling(
        &v,
        TraceReason::ManifestBehindBuild,
        "manifest a1b2c3d (committed 2026-11-22T10:03:59Z) predates build 20261122.4 (finished 2026-11-22T10:05:00Z); waiting for the manifest update",
    );
    assert_eq!(stage(&v, StageName::Manifest).state, StageState::InProgress);
}

#[test]
fn manifest_within_clock_skew_counts_as_after() {
    let mut input = plain();
    input.manifest = repo("orders-manifests", MANIFEST, Some("2026-11-22T10:04:30Z"));
    assert_eq!(trace(&input).kstatus.ready, ConditionStatus::True);
}

#[test]
fn manifest_without_commit_date_is_unknown_not_ready() {
    let mut input = plain();
    input.manifest = repo("orders-manifests", MANIFEST, None);
    let v = trace(&input);
    assert_unknown(
        &v,
        TraceReason::OrderUnknown,
        "cannot tell whether manifest a1b2c3d came after build 20261122.4: the manifest commit's date could not be read",
    );
    assert_eq!(stage(&v, StageName::Manifest).state, StageState::Unknown);
}

#[test]
fn successful_build_without_finish_time_is_unknown() {
    let mut input = plain();
    input.build.runs = Ok(vec![ci(
        4,
        "completed",
        Some("succeeded"),
        "2026-11-22T10:00:00Z",
        None,
        SRC,
    )]);
    assert_unknown(
        &trace(&input),
        TraceReason::OrderUnknown,
        "cannot tell whether manifest a1b2c3d came after build 20261122.4: build 20261122.4 has no finish time",
    );
}

#[test]
fn missing_manifest_branch_stalls_and_deployed_has_nothing_to_compare() {
    let mut input = in_sync();
    input.manifest.head = Ok(None);
    let v = trace(&input);
    assert_stalled(
        &v,
        TraceReason::ReferenceUnreadable,
        "manifest branch refs/heads/main does not exist in repository orders-manifests",
    );
    assert_eq!(v.manifest_commit_id, None);
    let deployed = stage(&v, StageName::Deployed);
    assert_eq!(deployed.state, StageState::Unknown);
    assert_eq!(
        deployed.message,
        "Kustomization flux-system/orders at a1b2c3d"
    );
    assert_eq!(deployed.hold, None);
}

#[test]
fn missing_manifest_repository_stalls_even_while_a_build_runs() {
    let mut input = in_sync();
    push_ci(
        &mut input,
        ci(5, "inProgress", None, "2026-11-22T10:09:00Z", None, SRC_NEW),
    );
    input.manifest.head = Err(ReadFailure(
        "The Git repository with name or identifier 'orders-manifests' does not exist or you do not have permissions".into(),
    ));
    assert_stalled(
        &trace(&input),
        TraceReason::ReferenceUnreadable,
        "manifest repository orders-manifests: The Git repository with name or identifier 'orders-manifests' does not exist or you do not have permissions",
    );
}

// ---- deployed stage: Flux and Argo CD -----------------------------------------------------------

#[test]
fn manifest_not_yet_applied_names_the_kustomization() {
    let mut input = in_sync();
    input.deployed.observed = at(CLUSTER, AgentState::Settled);
    let v = trace(&input);
    assert_reconciling(
        &v,
        TraceReason::DeployPending,
        "manifest a1b2c3d not yet applied by Kustomization flux-system/orders; cluster at 9f8e7d6",
    );
    assert_eq!(
        v.deployed_revision
            .as_ref()
            .map(DeployedRevision::short)
            .as_deref(),
        Some("9f8e7d6")
    );
    assert_eq!(
        stage(&v, StageName::Deployed).commit.as_deref(),
        Some(CLUSTER)
    );
}

#[test]
fn kustomization_progressing_behind_is_pending() {
    let mut input = in_sync();
    input.deployed.observed = at(
        CLUSTER,
        AgentState::Progressing("Progressing: Reconciliation in progress".into()),
    );
    assert_eq!(
        trace(&input).kstatus.reason,
        TraceReason::DeployPending.as_str()
    );
}

#[test]
fn kustomization_failing_behind_stalls() {
    let mut input = in_sync();
    input.deployed.observed = at(
        CLUSTER,
        AgentState::Failed("ReconciliationFailed: Deployment/orders dry-run failed".into()),
    );
    assert_stalled(
        &trace(&input),
        TraceReason::DeployFailed,
        "manifest a1b2c3d not applied by Kustomization flux-system/orders: ReconciliationFailed: Deployment/orders dry-run failed; cluster at 9f8e7d6",
    );
}

#[test]
fn kustomization_suspended_behind_stalls() {
    let mut input = in_sync();
    input.deployed.observed = at(CLUSTER, AgentState::Suspended);
    assert_stalled(
        &trace(&input),
        TraceReason::DeploySuspended,
        "manifest a1b2c3d not applied: Kustomization flux-system/orders is suspended; cluster at 9f8e7d6",
    );
}

#[test]
fn kustomization_suspended_at_head_is_ready() {
    let mut input = in_sync();
    input.deployed.observed = at(MANIFEST, AgentState::Suspended);
    assert_eq!(trace(&input).kstatus.ready, ConditionStatus::True);
}

#[test]
fn applied_but_not_healthy_is_pending() {
    let mut input = in_sync();
    input.deployed.observed = at(
        MANIFEST,
        AgentState::Progressing("HealthCheck in progress".into()),
    );
    assert_reconciling(
        &trace(&input),
        TraceReason::DeployPending,
        "Kustomization flux-system/orders applied manifest a1b2c3d and is not ready yet: HealthCheck in progress",
    );
}

#[test]
fn applied_but_failing_health_checks_stalls() {
    let mut input = in_sync();
    input.deployed.observed = at(
        MANIFEST,
        AgentState::Failed("HealthCheckFailed: timeout waiting for Deployment/orders".into()),
    );
    assert_stalled(
        &trace(&input),
        TraceReason::DeployFailed,
        "Kustomization flux-system/orders failed at manifest a1b2c3d: HealthCheckFailed: timeout waiting for Deployment/orders",
    );
}

#[test]
fn nothing_applied_yet() {
    for (agent, reason, message, stalled) in [
        (AgentState::Progressing("not reconciled yet".into()), TraceReason::DeployPending, "Kustomization flux-system/orders has not applied a revision yet", false),
        (AgentState::Failed("ArtifactFailed: source not found".into()), TraceReason::DeployFailed, "Kustomization flux-system/orders has not applied a revision: ArtifactFailed: source not found", true),
        (AgentState::Suspended, TraceReason::DeploySuspended, "Kustomization flux-system/orders is suspended and has not applied a revision", true),
    ] {
        let mut input = in_sync();
        input.deployed.observed = Ok(DeployedObservation {
            revision: None,
            attempted: None,
            agent,
        });
        let v = trace(&input);
        if stalled {
            assert_stalled(&v, reason, message);
        } else {
            assert_reconciling(&v, reason, message);
        }
        assert_eq!(v.deployed_revision, None);
    }
}

#[test]
fn missing_deployed_object_stalls_naming_it() {
    let mut input = in_sync();
    input.deployed.observed = Err(ReadFailure(
        "not found; create it or fix spec.deployed".into(),
    ));
    let v = trace(&input);
    assert_stalled(
        &v,
        TraceReason::ReferenceUnreadable,
        "Kustomization flux-system/orders: not found; create it or fix spec.deployed",
    );
    assert_eq!(stage(&v, StageName::Deployed).state, StageState::Unknown);
}

#[test]
fn argo_application_variant() {
    let mut input = in_sync();
    input.deployed.target = DeployedTarget {
        kind: DeployedKind::ArgoApplication,
        namespace: "argocd".into(),
        name: "orders".into(),
    };
    assert_eq!(trace(&input).kstatus.message, "build 20261122.4 (commit 1234567) is deployed: Application argocd/orders runs manifest a1b2c3d");
    input.deployed.observed = at(
        CLUSTER,
        AgentState::Progressing("OutOfSync, health Healthy".into()),
    );
    assert_reconciling(
        &trace(&input),
        TraceReason::DeployPending,
        "manifest a1b2c3d not yet applied by Application argocd/orders; cluster at 9f8e7d6",
    );
}

// ---- deployed stage: workloads --------------------------------------------------------------------

fn workload(tag: &str, agent: AgentState) -> DeployedInput {
    DeployedInput {
        target: DeployedTarget {
            kind: DeployedKind::Workload(WorkloadKind::Deployment),
            namespace: "shop".into(),
            name: "orders".into(),
        },
        observed: Ok(DeployedObservation {
            revision: Some(DeployedRevision::ImageTag(tag.into())),
            attempted: None,
            agent,
        }),
    }
}

#[test]
fn workload_running_the_newest_image_is_ready() {
    let mut input = plain();
    input.deployed = workload("20261122.4", AgentState::Settled);
    let v = trace(&input);
    assert_eq!(v.kstatus.ready, ConditionStatus::True);
    assert_eq!(v.kstatus.message, "build 20261122.4 (commit 1234567) is deployed: Deployment shop/orders runs image tag 20261122.4");
    assert_eq!(
        v.deployed_revision,
        Some(DeployedRevision::ImageTag("20261122.4".into()))
    );
    let deployed = stage(&v, StageName::Deployed);
    assert_eq!(deployed.commit, None);
    assert_eq!(deployed.web_url, None);
}

#[test]
fn workload_on_an_older_image_is_pending() {
    let mut input = plain();
    input.deployed = workload("20261122.3", AgentState::Settled);
    assert_reconciling(
        &trace(&input),
        TraceReason::DeployPending,
        "image tag 20261122.4 not yet rolled out to Deployment shop/orders; cluster runs 20261122.3",
    );
}

#[test]
fn workload_rolling_out_is_pending() {
    let mut input = plain();
    input.deployed = workload(
        "20261122.4",
        AgentState::Progressing("1 of 2 replicas updated".into()),
    );
    assert_reconciling(
        &trace(&input),
        TraceReason::DeployPending,
        "Deployment shop/orders is rolling out image tag 20261122.4: 1 of 2 replicas updated",
    );
}

#[test]
fn workload_failures_stall() {
    let mut input = plain();
    input.deployed = workload(
        "20261122.4",
        AgentState::Failed("ProgressDeadlineExceeded: timed out".into()),
    );
    assert_stalled(
        &trace(&input),
        TraceReason::DeployFailed,
        "Deployment shop/orders failed rolling out image tag 20261122.4: ProgressDeadlineExceeded: timed out",
    );
    input.deployed = workload(
        "20261122.3",
        AgentState::Failed("ProgressDeadlineExceeded: timed out".into()),
    );
    assert_stalled(
        &trace(&input),
        TraceReason::DeployFailed,
        "image tag 20261122.4 not rolled out to Deployment shop/orders: ProgressDeadlineExceeded: timed out; cluster runs 20261122.3",
    );
    input.deployed = workload("20261122.3", AgentState::Suspended);
    assert_stalled(
        &trace(&input),
        TraceReason::DeploySuspended,
        "image tag 20261122.4 not rolled out: Deployment shop/orders is paused; cluster runs 20261122.3",
    );
}

#[test]
fn workload_without_a_successful_build_has_nothing_to_compare() {
    let mut input = plain();
    input.build.runs = Ok(vec![]);
    input.deployed = workload("20261122.3", AgentState::Settled);
    let v = trace(&input);
    assert_eq!(v.kstatus.reason, TraceReason::NoSuccessfulBuild.as_str());
    let deployed = stage(&v, StageName::Deployed);
    assert_eq!(
        (deployed.state, deployed.message.as_str()),
        (
            StageState::Unknown,
            "Deployment shop/orders runs image tag 20261122.3"
        )
    );
}

// ---- precedence -----------------------------------------------------------------------------------

#[test]
fn first_holding_stage_in_flow_order_decides() {
    // A failed build holds things up before a pending deployment.
    let mut input = in_sync();
    push_ci(
        &mut input,
        ci(
            5,
            "completed",
            Some("failed"),
            "2026-11-22T10:09:00Z",
            Some("2026-11-22T10:12:00Z"),
            SRC_NEW,
        ),
    );
    input.deployed.observed = at(CLUSTER, AgentState::Settled);
    assert_eq!(
        trace(&input).kstatus.reason,
        TraceReason::BuildFailed.as_str()
    );

    // A running build is reported before an older deployment failure: it will bring the next change.
    let mut input = in_sync();
    push_ci(
        &mut input,
        ci(5, "inProgress", None, "2026-11-22T10:09:00Z", None, SRC_NEW),
    );
    input.deployed.observed = at(
        CLUSTER,
        AgentState::Failed("ReconciliationFailed: boom".into()),
    );
    let v = trace(&input);
    assert_eq!(v.kstatus.reason, TraceReason::BuildInProgress.as_str());
    assert!(v.kstatus.reconciling);
    assert!(!v.kstatus.stalled);
    assert_eq!(stage(&v, StageName::Deployed).state, StageState::Failed);
}

#[test]
fn unreadable_reference_beats_earlier_holds() {
    let mut input = in_sync();
    push_ci(
        &mut input,
        ci(5, "inProgress", None, "2026-11-22T10:09:00Z", None, SRC_NEW),
    );
    input.deployed.observed = Err(ReadFailure("not found".into()));
    assert_stalled(
        &trace(&input),
        TraceReason::ReferenceUnreadable,
        "Kustomization flux-system/orders: not found",
    );
}

#[test]
fn undetermined_order_after_an_in_flight_build_still_reconciles() {
    let mut input = plain();
    input.manifest = repo("orders-manifests", MANIFEST, None);
    push_ci(
        &mut input,
        ci(5, "inProgress", None, "2026-11-22T10:09:00Z", None, SRC_NEW),
    );
    assert_eq!(
        trace(&input).kstatus.reason,
        TraceReason::BuildInProgress.as_str()
    );
}

// ---- status ---------------------------------------------------------------------------------------

#[test]
fn verdict_fills_the_status_fields() {
    let mut status = ServiceTraceStatus::default();
    trace(&in_sync()).apply_to(&mut status);
    assert_eq!(status.manifest_commit_id.as_deref(), Some(MANIFEST));
    assert_eq!(status.manifest_commit_short.as_deref(), Some("a1b2c3d"));
    assert_eq!(status.deployed_revision.as_deref(), Some(MANIFEST));
    assert_eq!(status.deployed_revision_short.as_deref(), Some("a1b2c3d"));
    assert_eq!(status.image_tag.as_deref(), Some("20261122.4"));
    let names: Vec<&str> = status.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["build", "hld", "manifest", "deployed"]);
    let build = &status.stages[0];
    assert_eq!(build.state, "Succeeded");
    assert_eq!(build.updated_time, Some(Time(ts("2026-11-22T10:10:00Z"))));
    let run = build.run.as_ref().expect("build run summary");
    assert_eq!(run.build_number.as_deref(), Some("20261122.4"));
    assert_eq!(run.pipeline.as_deref(), Some("orders-ci"));
    assert_eq!(run.commit.as_deref(), Some("1234567"));
    assert_eq!(run.result.as_deref(), Some("succeeded"));
    assert_eq!(status.conditions, vec![], "conditions are the controller's");
}

#[test]
fn updated_time_moves_only_when_a_stage_changes() {
    let mut status = ServiceTraceStatus::default();
    trace(&in_sync()).apply_to(&mut status);

    let mut later = in_sync();
    later.now = ts("2026-11-22T10:20:00Z");
    later.deployed.observed = at(CLUSTER, AgentState::Settled);
    trace(&later).apply_to(&mut status);

    let time = |name: &str| {
        status
            .stages
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.updated_time.clone())
    };
    assert_eq!(time("build"), Some(Time(ts("2026-11-22T10:10:00Z"))));
    assert_eq!(time("manifest"), Some(Time(ts("2026-11-22T10:10:00Z"))));
    assert_eq!(time("deployed"), Some(Time(ts("2026-11-22T10:20:00Z"))));
    assert_eq!(status.deployed_revision_short.as_deref(), Some("9f8e7d6"));
}

#[test]
fn run_summary_from_a_real_build() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure-devops/builds-list-mixed-results.json");
    let list: ListResponse<Build> =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("valid list");
    let failed = list
        .value
        .iter()
        .find(|b| b.id == 1206)
        .expect("build 1206");
    let summary = run_summary(failed);
    assert_eq!(summary.id, 1206);
    assert_eq!(summary.build_number.as_deref(), Some("20260302.4"));
    assert_eq!(summary.status.as_deref(), Some("completed"));
    assert_eq!(summary.result.as_deref(), Some("failed"));
    assert_eq!(summary.source_branch.as_deref(), Some("refs/heads/main"));
    assert_eq!(summary.commit.as_deref(), Some("5a6b7c8"));
    assert_eq!(summary.finish_time, Some(Time(ts("2026-03-02T09:46:41Z"))));
    assert!(summary
        .web_url
        .as_deref()
        .is_some_and(|u| u.contains("buildId=1206")));
    let queued = list
        .value
        .iter()
        .find(|b| b.id == 1208)
        .expect("build 1208");
    let summary = run_summary(queued);
    assert_eq!(
        (summary.result, summary.finish_time, summary.start_time),
        (None, None, None)
    );
}

#[test]
fn reasons_and_states_have_stable_names() {
    assert_eq!(
        TraceReason::ManifestGenerationFailed.as_str(),
        "ManifestGenerationFailed"
    );
    assert_eq!(
        TraceReason::ReferenceUnreadable.as_str(),
        "ReferenceUnreadable"
    );
    assert_eq!(StageState::InProgress.as_str(), "InProgress");
    assert_eq!(ConditionStatus::Unknown.as_str(), "Unknown");
}

#[test]
fn run_summary_times_are_whole_seconds_like_the_api_server_returns_them() {
    let build = ci(
        4,
        "completed",
        Some("succeeded"),
        "2026-11-22T10:00:00.7230431Z",
        Some("2026-11-22T10:05:00.9999999Z"),
        SRC,
    );
    let summary = run_summary(&build);
    assert_eq!(summary.queue_time, Some(Time(ts("2026-11-22T10:00:00Z"))));
    assert_eq!(summary.finish_time, Some(Time(ts("2026-11-22T10:05:00Z"))));
    let round_trip: RunSummary =
        serde_json::from_value(serde_json::to_value(&summary).expect("json")).expect("summary");
    assert_eq!(round_trip, summary);
}

#[test]
fn status_stages_carry_one_deployed_entry_per_environment() {
    use crate::service_trace::status::{desired_status_with, environment_stages};
    let spec = |envs: serde_json::Value| -> crate::crd::ServiceTraceSpec {
        let mut spec = json!({
            "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                            "credentials": {"secretRef": {"name": "ado", "key": "token"}}},
            "build": {"definitionId": 12, "branch": "main"},
            "manifest": {"repository": "orders-manifests", "branch": "main", "definitionId": 14},
        });
        match envs {
            serde_json::Value::Null => {
                spec["deployed"] = json!({"fluxKustomization": {"name": "orders"}});
            }
            envs => spec["environments"] = envs,
        }
        serde_json::from_value(spec).expect("spec")
    };
    let input = in_sync();
    let dev = input.deployed.clone();
    let prod = DeployedInput {
        target: DeployedTarget {
            kind: DeployedKind::ArgoApplication,
            namespace: "argocd".into(),
            name: "orders-prod".into(),
        },
        observed: at(CLUSTER, AgentState::Settled),
    };
    let two = spec(json!([
        {"name": "dev", "fluxKustomization": {"name": "orders"}},
        {"name": "prod", "argoApplication": {"name": "orders-prod", "namespace": "argocd"}},
    ]));
    let envs = [dev.clone(), prod];
    let verdict = crate::service_trace::status::per_environment_verdict(&input, &envs);
    let status = |previous: &ServiceTraceStatus, now: Timestamp| {
        desired_status_with(&verdict, previous, Some(1), now, |next| {
            environment_stages(&two, &input, &envs, &previous.stages, next, now)
        })
    };
    let first = status(&ServiceTraceStatus::default(), input.now);
    let names: Vec<(&str, &str)> = first
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("build", "Succeeded"),
            ("hld", "Succeeded"),
            ("manifest", "Succeeded"),
            ("deployed/dev", "Succeeded"),
            ("deployed/prod", "InProgress"),
        ],
        "each environment as its own deployment, like latest.environments"
    );
    assert!(first.stages[4]
        .message
        .as_deref()
        .is_some_and(|m| m.contains("Application argocd/orders-prod")));
    // Nothing changed a minute later: the same stages, times and lastCheckedTime (no status write).
    let later = status(&first, ts("2026-11-22T10:11:00Z"));
    assert_eq!(later, first);

    // The `deployed:` shorthand keeps its single `deployed` entry (what older readers look for).
    let one = spec(serde_json::Value::Null);
    let verdict =
        crate::service_trace::status::per_environment_verdict(&input, std::slice::from_ref(&dev));
    let single = desired_status_with(
        &verdict,
        &ServiceTraceStatus::default(),
        Some(1),
        input.now,
        |next| environment_stages(&one, &input, &[dev], &[], next, input.now),
    );
    let names: Vec<&str> = single.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["build", "hld", "manifest", "deployed"]);
}
