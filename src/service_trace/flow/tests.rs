//! The correlation rules against the recorded fixtures, and the history, stall and size rules.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::correlate::*;
use super::facts::*;
use super::fit::*;
use super::fixtures::load;
use super::history::{FAILED, *};
use super::stall::*;
use super::view::*;
use crate::ado::{
    Build, GitCommitRef, GitPullRequest, GitPullRequestQuery, ListResponse, PipelineRun,
};
use crate::crd::*;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn commits(name: &str) -> Vec<CommitFacts> {
    let list: ListResponse<GitCommitRef> = load(name);
    list.value.iter().map(CommitFacts::from_commit).collect()
}

/// The CI build of the Bedrock-style flow in `commits-hld-bedrock.json` / `commits-manifest-bedrock.json`.
fn ci_build() -> RunFacts {
    RunFacts {
        id: 1207,
        number: Some("20261122.7".into()),
        definition_id: Some(42),
        phase: RunPhase::Succeeded,
        result: Some("succeeded".into()),
        reason: Some("individualCI".into()),
        source_version: Some("5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b".into()),
        triggered_by_build: None,
        consumed: vec![],
        ci_message: Some("Merged PR 42: Add retries to the payment client".into()),
        queue_time: Some(ts("2026-11-22T10:00:00Z")),
        start_time: Some(ts("2026-11-22T10:00:05Z")),
        finish_time: Some(ts("2026-11-22T10:08:30Z")),
        url: Some("https://dev.azure.com/contoso/Shop/_build/results?buildId=1207".into()),
    }
}

fn run(id: i64, def: i64, phase: RunPhase) -> RunFacts {
    RunFacts {
        id,
        number: Some(format!("20261122.{id}")),
        definition_id: Some(def),
        phase,
        result: None,
        reason: None,
        source_version: None,
        triggered_by_build: None,
        consumed: vec![],
        ci_message: None,
        queue_time: None,
        start_time: None,
        finish_time: None,
        url: None,
    }
}

// ---- what the fixtures carry ---------------------------------------------------------------------

#[test]
fn a_ci_build_records_the_commit_it_built_as_source_version_and_ci_source_sha() {
    // REAL builds-list.json: the individualCI build's triggerInfo names the pushed commit, and it equals
    // sourceVersion, so a downstream run's sourceVersion is the commit it built.
    let list: ListResponse<Build> = load("builds-list.json");
    let ci = list
        .value
        .iter()
        .find(|b| b.reason.as_deref() == Some("individualCI"))
        .expect("one CI build in the recording");
    let info = ci.trigger_info.as_ref().expect("triggerInfo");
    assert_eq!(
        info.get("ci.sourceSha").and_then(|v| v.as_str()),
        ci.source_version.as_deref()
    );
    let facts = RunFacts::from_build(ci);
    assert_eq!(
        facts.ci_message.as_deref(),
        Some("Added azure-pipelines.yml")
    );
    // ... and no recorded build (CI, manual, scheduled, GitHub) was queued by another build.
    for name in [
        "builds-list.json",
        "builds-list-max-per-definition.json",
        "builds-list-mixed-results.json",
    ] {
        let list: ListResponse<Build> = load(name);
        assert!(
            list.value.iter().all(|b| b.triggered_by_build.is_none()),
            "{name}"
        );
    }
}

#[test]
fn requested_for_is_not_the_author() {
    // REAL build-completed.json: a GitHub CI build is "requested for" the GitHub app, not the person
    // who wrote the commit; the author comes from the Commits API only.
    let b: serde_json::Value = load("build-completed.json");
    assert_eq!(b["requestedFor"]["displayName"], "GitHub");
    let c: GitCommitRef = load("git-commit.json");
    let facts = CommitFacts::from_commit(&c);
    assert!(facts.author.is_some());
    assert!(facts.committed.is_some());
}

#[test]
fn build_completion_trigger_names_the_upstream_build() {
    let b: Build = load("build-triggered-by-build-completion.json");
    let facts = RunFacts::from_build(&b);
    assert_eq!(facts.reason.as_deref(), Some("buildCompletion"));
    assert_eq!(facts.triggered_by_build, Some(1207));
}

#[test]
fn a_pipeline_resource_names_the_consumed_run_by_number() {
    let r: PipelineRun = load("pipeline-run-resource-trigger.json");
    let facts = RunFacts::from_run(&r);
    assert_eq!(facts.definition_id, Some(57));
    assert_eq!(facts.number.as_deref(), Some("20261122.9"));
    assert_eq!(
        facts.consumed,
        vec![ConsumedRun {
            pipeline_id: Some(42),
            version: "20261122.7".into()
        }]
    );
    assert_eq!(facts.phase, RunPhase::Succeeded);
    assert!(facts.finish_time.is_some());
}

// ---- text rules ----------------------------------------------------------------------------------

#[test]
fn mentions_matches_whole_tags_only() {
    assert!(mentions(
        "Updating orders image tag to main-20261122.7.",
        "20261122.7"
    ));
    assert!(mentions("20261122.7", "20261122.7"));
    assert!(mentions("tag: 20261122.7\n", "20261122.7"));
    assert!(!mentions(
        "Updating orders to main-20261121.71.",
        "20261121.7"
    ));
    assert!(!mentions("version 20261122.7.1", "20261122.7"));
    assert!(!mentions("x20261122.7", "20261122.7"));
    assert!(!mentions("20261122.7_b", "20261122.7"));
    assert!(!mentions("anything", ""));
    // The second occurrence counts when the first is part of a longer number.
    assert!(mentions("20261122.71 then 20261122.7", "20261122.7"));
    // Multi-byte text around it does not split characters.
    assert!(mentions("écrit 20261122.7 ✓", "20261122.7"));
}

#[test]
fn build_id_trailers() {
    assert_eq!(
        build_id_trailer("Render manifests\n\nBuild-Id: 1207"),
        Some(1207)
    );
    assert_eq!(build_id_trailer("x\nbuildid: 12"), Some(12));
    assert_eq!(build_id_trailer("Build-ID:  77 "), Some(77));
    assert_eq!(build_id_trailer("Build-Id: twelve"), None);
    assert_eq!(build_id_trailer("no trailer"), None);
    let mut b = ci_build();
    b.number = None;
    assert!(carries_build("Build-Id: 1207", &b));
    assert!(!carries_build("Build-Id: 1208", &b));
}

#[test]
fn pull_requests_from_azure_repos_merge_messages() {
    // OFFICIAL commits-by-branch.json: "Merged PR 2: Deleted README.md".
    let by_branch = commits("commits-by-branch.json");
    assert_eq!(
        pull_request_from_message(&by_branch[0].message),
        Some((2, Some("Deleted README.md".into())))
    );
    assert_eq!(pull_request_from_message(&by_branch[1].message), None);
    // OFFICIAL commits-top-skip.json: "Merge pull request 2 from b2 into master".
    let top = commits("commits-top-skip.json");
    assert_eq!(pull_request_from_message(&top[0].message), Some((2, None)));
    // OFFICIAL pull-request-get.json: the merge commit of PR 22 says so.
    let pr: GitPullRequest = load("pull-request-get.json");
    let merge = pr.last_merge_commit.expect("lastMergeCommit");
    assert_eq!(
        pull_request_from_message(merge.comment.as_deref().unwrap_or_default()),
        Some((22, None))
    );
    assert_eq!(pull_request_from_message("Merged PR x: nope"), None);
    assert_eq!(pull_request_from_message(""), None);
}

#[test]
fn pull_request_query_finds_the_pr_of_a_merge_commit() {
    let q: GitPullRequestQuery = load("pull-request-query-last-merge-commit.json");
    let pr =
        pull_request_from_query(&q, "39F52D24533CC712FC845ED9FD1B6C06B3942588").expect("PR 22");
    assert_eq!(pr.id, 22);
    assert_eq!(pr.title.as_deref(), Some("A new feature"));
    assert_eq!(
        pr.url.as_deref(),
        Some("https://dev.azure.com/fabrikam/_git/2016_10_31/pullrequest/22")
    );
    let none: GitPullRequestQuery = load("pull-request-query-no-match.json");
    assert_eq!(
        pull_request_from_query(&none, "0000000000000000000000000000000000000001"),
        None
    );
}

#[test]
fn source_pull_request_prefers_the_query_then_the_commit_then_ci_message() {
    let q: GitPullRequestQuery = load("pull-request-query-last-merge-commit.json");
    let mut b = ci_build();
    b.source_version = Some("39f52d24533cc712fc845ed9fd1b6c06b3942588".into());
    assert_eq!(
        source_pull_request(&b, None, Some(&q)).map(|p| p.id),
        Some(22)
    );

    let by_branch = commits("commits-by-branch.json");
    b.source_version = Some(by_branch[0].commit_id_for_test());
    let pr = source_pull_request(&b, Some(&by_branch[0]), Some(&q)).expect("from message");
    assert_eq!(pr.id, 2);
    assert_eq!(pr.title.as_deref(), Some("Deleted README.md"));
    assert_eq!(
        pr.url.as_deref(),
        Some("https://dev.azure.com/fabrikam/SomeGitProject/_git/SampleRepository/pullrequest/2")
    );
    // Without the commit, triggerInfo's ci.message still names the PR (no link: no repository URL).
    let pr = source_pull_request(&b, None, None).expect("from ci.message");
    assert_eq!((pr.id, pr.url), (42, None));
    b.ci_message = Some("Added azure-pipelines.yml".into());
    assert_eq!(source_pull_request(&b, None, None), None);
    b.source_version = None;
    assert_eq!(source_pull_request(&b, Some(&by_branch[0]), Some(&q)), None);
}

impl CommitFacts {
    fn commit_id_for_test(&self) -> String {
        self.id.clone()
    }
}

// ---- correlation ---------------------------------------------------------------------------------

fn generation(id: i64, built: &str, phase: RunPhase) -> RunFacts {
    RunFacts {
        source_version: Some(built.into()),
        start_time: Some(ts("2026-11-22T10:13:00Z")),
        finish_time: Some(ts("2026-11-22T10:15:50Z")),
        ..run(id, 60, phase)
    }
}

fn hld_update_runs() -> Vec<RunFacts> {
    let r: PipelineRun = load("pipeline-run-resource-trigger.json");
    let mut older = RunFacts::from_run(&r);
    older.id = 1190;
    older.consumed[0].version = "20261121.71".into();
    vec![older, RunFacts::from_run(&r)]
}

#[test]
fn bedrock_flow_is_tied_together_by_resource_trigger_messages_and_source_version() {
    let b = ci_build();
    let hld_runs = hld_update_runs();
    let hld = commits("commits-hld-bedrock.json");
    let gen_runs = vec![
        generation(
            1195,
            "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c",
            RunPhase::Succeeded,
        ),
        generation(
            1212,
            "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d",
            RunPhase::Succeeded,
        ),
    ];
    let manifests = commits("commits-manifest-bedrock.json");
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: Some(57),
            runs: &hld_runs,
            commits: &hld,
        }),
        generation: Some(GenerationFacts {
            definition_id: 60,
            runs: &gen_runs,
        }),
        manifest_commits: &manifests,
    });
    assert_eq!(path.hld_run.rule, LinkRule::ResourceTrigger);
    assert_eq!(path.hld_run.value.as_ref().map(|r| r.id), Some(1210));
    assert_eq!(path.hld_commit.rule, LinkRule::CommitMessage);
    assert_eq!(
        path.hld_commit.value.as_ref().map(|c| c.id.as_str()),
        Some("4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d"),
        "the merge commit the generation run built, not the PR branch commit"
    );
    assert_eq!(path.generation_run.rule, LinkRule::SourceVersion);
    assert_eq!(path.generation_run.value.as_ref().map(|r| r.id), Some(1212));
    assert_eq!(path.manifest_commit.rule, LinkRule::CommitMessage);
    assert_eq!(
        path.manifest_commit.value.as_ref().map(|c| c.id.as_str()),
        Some("a1b2c3d4e5f60718293a4b5c6d7e8f9012345678")
    );
}

#[test]
fn a_per_path_environment_links_the_commit_that_touched_its_folder() {
    // `prod` reads `/prod` of the manifest branch: Commits - Get Commits with `itemPath=/prod`
    // (`commits-item-path-prod.json`) holds the promotion commit, not the render every environment
    // shares (`commits-manifest-bedrock.json`, what `dev` reads).
    let b = ci_build();
    let hld_runs = hld_update_runs();
    let hld = commits("commits-hld-bedrock.json");
    let whole_branch = commits("commits-manifest-bedrock.json");
    let prod_folder = commits("commits-item-path-prod.json");
    let facts = |manifest_commits| FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: Some(57),
            runs: &hld_runs,
            commits: &hld,
        }),
        generation: None,
        manifest_commits,
    };
    let dev = correlate(&facts(&whole_branch));
    let prod = correlate(&facts(&prod_folder));
    assert_eq!(
        dev.manifest_commit.value.as_ref().map(|c| &c.id[..8]),
        Some("a1b2c3d4")
    );
    assert_eq!(prod.manifest_commit.rule, LinkRule::CommitMessage);
    assert_eq!(
        prod.manifest_commit.value.as_ref().map(|c| &c.id[..8]),
        Some("b7c8d9e0"),
        "the promotion that names the tag under /prod"
    );
}

#[test]
fn the_previous_build_gets_its_own_commits_not_the_heads() {
    // Build 20261121.71 is the older tag in the same fixtures: its HLD and manifest commits are the
    // older ones even though newer commits sit on top of them.
    let mut b = ci_build();
    b.id = 1190;
    b.number = Some("20261121.71".into());
    let hld_runs = hld_update_runs();
    let hld = commits("commits-hld-bedrock.json");
    let manifests = commits("commits-manifest-bedrock.json");
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: Some(57),
            runs: &hld_runs,
            commits: &hld,
        }),
        generation: None,
        manifest_commits: &manifests,
    });
    assert_eq!(path.hld_run.value.as_ref().map(|r| r.id), Some(1190));
    assert_eq!(
        path.hld_commit.value.as_ref().map(|c| &c.id[..8]),
        Some("3c3c3c3c")
    );
    assert_eq!(
        path.manifest_commit.value.as_ref().map(|c| &c.id[..8]),
        Some("9f8e7d6c")
    );
    // And a build whose tag is a prefix of that one (20261121.7) matches nothing.
    b.number = Some("20261121.7".into());
    b.id = 1;
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: Some(57),
            runs: &hld_runs,
            commits: &hld,
        }),
        generation: None,
        manifest_commits: &manifests,
    });
    assert_eq!(path.hld_run, Linked::unknown());
    assert_eq!(path.hld_commit, Linked::unknown());
    assert_eq!(path.manifest_commit, Linked::unknown());
}

#[test]
fn without_a_generation_run_the_newest_carrying_hld_commit_is_taken() {
    let b = ci_build();
    let hld = commits("commits-hld-bedrock.json");
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: None,
            runs: &[],
            commits: &hld,
        }),
        generation: None,
        manifest_commits: &[],
    });
    assert_eq!(path.hld_run.rule, LinkRule::SameRun);
    assert_eq!(path.hld_run.value.as_ref().map(|r| r.id), Some(1207));
    assert_eq!(
        path.hld_commit.value.as_ref().map(|c| &c.id[..4]),
        Some("4d4d")
    );
    // A generation run that built the PR branch commit instead makes that one the HLD commit.
    let gen = [generation(
        1300,
        "4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c",
        RunPhase::InProgress,
    )];
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: None,
            runs: &[],
            commits: &hld,
        }),
        generation: Some(GenerationFacts {
            definition_id: 60,
            runs: &gen,
        }),
        manifest_commits: &[],
    });
    assert_eq!(
        path.hld_commit.value.as_ref().map(|c| &c.id[..4]),
        Some("4c4c")
    );
    assert_eq!(path.generation_run.rule, LinkRule::SourceVersion);
    assert_eq!(path.manifest_commit, Linked::unknown());
}

#[test]
fn build_completion_triggers_link_hld_and_generation_runs() {
    let b = ci_build();
    let trig: Build = load("build-triggered-by-build-completion.json");
    let hld_run = RunFacts::from_build(&trig);
    let mut gen = run(1400, 60, RunPhase::InProgress);
    gen.triggered_by_build = Some(hld_run.id);
    let runs = [hld_run.clone()];
    let gens = [gen];
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: hld_run.definition_id,
            runs: &runs,
            commits: &[],
        }),
        generation: Some(GenerationFacts {
            definition_id: 60,
            runs: &gens,
        }),
        manifest_commits: &[],
    });
    assert_eq!(path.hld_run.rule, LinkRule::TriggeredByBuild);
    assert_eq!(path.hld_run.value.as_ref().map(|r| r.id), Some(hld_run.id));
    assert_eq!(path.generation_run.rule, LinkRule::TriggeredByBuild);
    assert_eq!(path.generation_run.value.as_ref().map(|r| r.id), Some(1400));
}

#[test]
fn a_generation_pipeline_consuming_the_ci_run_is_a_resource_trigger() {
    let b = ci_build();
    let mut gen = run(1500, 60, RunPhase::Succeeded);
    gen.consumed = vec![ConsumedRun {
        pipeline_id: Some(42),
        version: "20261122.7".into(),
    }];
    let mut other_pipeline = run(1501, 60, RunPhase::Succeeded);
    other_pipeline.consumed = vec![ConsumedRun {
        pipeline_id: Some(99),
        version: "20261122.7".into(),
    }];
    let gens = [gen, other_pipeline];
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: None,
        generation: Some(GenerationFacts {
            definition_id: 60,
            runs: &gens,
        }),
        manifest_commits: &[],
    });
    assert_eq!(path.generation_run.rule, LinkRule::ResourceTrigger);
    assert_eq!(path.generation_run.value.as_ref().map(|r| r.id), Some(1500));
}

#[test]
fn the_ci_pipeline_rendering_manifests_itself_is_the_same_run() {
    let b = ci_build();
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: None,
        generation: Some(GenerationFacts {
            definition_id: 42,
            runs: &[],
        }),
        manifest_commits: &[],
    });
    assert_eq!(path.generation_run.rule, LinkRule::SameRun);
    assert_eq!(path.generation_run.value.as_ref().map(|r| r.id), Some(1207));
}

fn plain_commit(id: char, at: &str, message: &str) -> CommitFacts {
    CommitFacts {
        id: std::iter::repeat_n(id, 40).collect(),
        author: Some("Automated Account".into()),
        committed: Some(ts(at)),
        message: message.into(),
        web_url: None,
    }
}

#[test]
fn commit_time_links_only_a_single_commit_made_during_the_linked_run() {
    let b = ci_build();
    let mut gen = run(1600, 60, RunPhase::Succeeded);
    gen.triggered_by_build = Some(1207);
    gen.start_time = Some(ts("2026-11-22T10:09:00Z"));
    gen.finish_time = Some(ts("2026-11-22T10:11:00Z"));
    let gens = [gen];
    let link = |manifests: &[CommitFacts]| {
        correlate(&FlowFacts {
            build: &b,
            ci_definition_id: 42,
            hld: None,
            generation: Some(GenerationFacts {
                definition_id: 60,
                runs: &gens,
            }),
            manifest_commits: manifests,
        })
        .manifest_commit
    };
    let one = [
        plain_commit('b', "2026-11-22T10:11:40Z", "Render"),
        plain_commit('a', "2026-11-22T09:00:00Z", "Render"),
    ];
    let linked = link(&one);
    assert_eq!(linked.rule, LinkRule::CommitTime);
    assert_eq!(linked.value.as_ref().map(|c| &c.id[..1]), Some("b"));
    // Two commits in the window: which one is the run's cannot be told.
    let two = [
        plain_commit('c', "2026-11-22T10:10:00Z", "Hotfix by hand"),
        plain_commit('b', "2026-11-22T10:11:40Z", "Render"),
    ];
    assert_eq!(link(&two), Linked::unknown());
    // A commit after the grace period is not the run's.
    let late = [plain_commit('d', "2026-11-22T10:12:01Z", "Render")];
    assert_eq!(link(&late), Linked::unknown());
}

#[test]
fn nothing_recorded_means_unknown_links() {
    let b = ci_build();
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: Some(57),
            runs: &[run(5, 57, RunPhase::Succeeded)],
            commits: &[plain_commit('e', "2026-11-22T10:10:00Z", "Raise replicas")],
        }),
        generation: Some(GenerationFacts {
            definition_id: 60,
            runs: &[run(6, 60, RunPhase::Succeeded)],
        }),
        manifest_commits: &[plain_commit('f', "2026-11-22T10:12:00Z", "Render")],
    });
    assert_eq!(path.hld_run, Linked::unknown());
    assert_eq!(path.hld_commit, Linked::unknown());
    assert_eq!(path.generation_run, Linked::unknown());
    assert_eq!(path.manifest_commit, Linked::unknown());
    assert_eq!(LinkRule::Unknown.as_str(), "unknown");
}

#[test]
fn manifest_commits_naming_the_hld_commit_count() {
    let b = RunFacts {
        number: None,
        ..ci_build()
    };
    let hld = [plain_commit('4', "2026-11-22T10:10:00Z", "Bump orders")];
    let manifests = [
        plain_commit('9', "2026-11-22T10:20:00Z", "Render 4444444 again"),
        plain_commit('8', "2026-11-22T10:15:00Z", "Render from 4444444"),
        plain_commit('7', "2026-11-22T10:00:00Z", "Render from 3333333"),
    ];
    let gen = [generation(1700, &"4".repeat(40), RunPhase::Succeeded)];
    let path = correlate(&FlowFacts {
        build: &b,
        ci_definition_id: 42,
        hld: Some(HldFacts {
            definition_id: None,
            runs: &[],
            commits: &[CommitFacts {
                message: "Build-Id: 1207".into(),
                ..hld[0].clone()
            }],
        }),
        generation: Some(GenerationFacts {
            definition_id: 60,
            runs: &gen,
        }),
        manifest_commits: &manifests,
    });
    assert_eq!(
        path.hld_commit.value.as_ref().map(|c| &c.id[..1]),
        Some("4")
    );
    // The oldest commit naming it is where the change entered the branch.
    assert_eq!(
        path.manifest_commit.value.as_ref().map(|c| &c.id[..1]),
        Some("8")
    );
}

#[test]
fn containment_on_a_branch() {
    let m = commits("commits-manifest-bedrock.json");
    let newer = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    let older = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
    assert_eq!(contains(&m, newer, older), Some(true));
    assert_eq!(contains(&m, "A1B2C3D", older), Some(true));
    assert_eq!(contains(&m, older, newer), Some(false));
    assert_eq!(contains(&m, older, "9f8e7d6"), Some(true));
    assert_eq!(contains(&m, &"0".repeat(40), older), None);
    assert_eq!(
        position(&m, "a1b2"),
        None,
        "abbreviations under 7 characters are ambiguous"
    );
    assert!(same_commit("a1b2c3d", newer));
    assert!(!same_commit("a1b2c3", newer));
    assert!(!same_commit("é1b2c3d4", newer));
}

// ---- history -------------------------------------------------------------------------------------

fn entry(id: i64, manifest: &str, envs: &[&str]) -> HistoryEntry {
    HistoryEntry {
        build_id: id,
        image_tag: Some(format!("20261122.{id}")),
        manifest_commit: Some(manifest.into()),
        build_queue_time: Some(Time(ts("2026-11-22T10:00:00Z"))),
        environments: envs
            .iter()
            .map(|e| {
                (
                    e.to_string(),
                    HistoryArrival {
                        state: PENDING.into(),
                        ..Default::default()
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

fn state<'h>(h: &'h [HistoryEntry], id: i64, env: &str) -> &'h HistoryArrival {
    &h.iter()
        .find(|e| e.build_id == id)
        .expect("entry")
        .environments[env]
}

fn obs(name: &str, rev: Option<&str>, health: EnvHealth) -> EnvObservation {
    EnvObservation {
        name: name.into(),
        revision: rev.map(str::to_string),
        attempted: None,
        health,
        by_image_tag: false,
    }
}

const M1: &str = "1111111111111111111111111111111111111111";
const M2: &str = "2222222222222222222222222222222222222222";
const M3: &str = "3333333333333333333333333333333333333333";

fn branch() -> Vec<CommitFacts> {
    vec![
        plain_commit('3', "2026-11-22T12:00:00Z", ""),
        plain_commit('2', "2026-11-22T11:00:00Z", ""),
        plain_commit('1', "2026-11-22T10:00:00Z", ""),
    ]
}

#[test]
fn upsert_keeps_order_limit_and_recorded_arrivals() {
    let mut h = Vec::new();
    upsert(&mut h, entry(1, M1, &["dev"]), 2);
    upsert(&mut h, entry(3, M3, &["dev"]), 2);
    upsert(&mut h, entry(2, M2, &["dev"]), 2);
    assert_eq!(h.iter().map(|e| e.build_id).collect::<Vec<_>>(), [3, 2]);
    h[1].environments.get_mut("dev").unwrap().state = ARRIVED.into();
    h[1].author = Some("Norman".into());
    // A refresh (links found later) keeps the arrival and what it does not know itself.
    let mut refreshed = entry(2, M2, &["dev"]);
    refreshed.hld_commit = Some("4d4d".into());
    upsert(&mut h, refreshed, 2);
    assert_eq!(state(&h, 2, "dev").state, ARRIVED);
    assert_eq!(h[1].author.as_deref(), Some("Norman"));
    assert_eq!(h[1].hld_commit.as_deref(), Some("4d4d"));

    align_environments(&mut h, &["dev", "prod"]);
    assert_eq!(state(&h, 3, "prod").state, PENDING);
    align_environments(&mut h, &["prod"]);
    assert!(!h[0].environments.contains_key("dev"));
}

#[test]
fn arrivals_are_recorded_once_and_older_pending_builds_are_superseded() {
    let commits = branch();
    let mut h = vec![
        entry(3, M3, &["dev", "prod"]),
        entry(2, M2, &["dev", "prod"]),
        entry(1, M1, &["dev", "prod"]),
    ];
    let t1 = ts("2026-11-22T10:30:00Z");
    let dev = obs("dev", Some(M1), EnvHealth::Settled);
    observe(
        &mut h,
        &[EnvView {
            obs: &dev,
            manifest_commits: &commits,
        }],
        t1,
    );
    assert_eq!(state(&h, 1, "dev").state, ARRIVED);
    assert_eq!(state(&h, 1, "dev").arrived_at, Some(Time(t1)));
    assert_eq!(state(&h, 1, "dev").lead_time.as_deref(), Some("30m0s"));
    assert_eq!(state(&h, 2, "dev").state, PENDING);

    // Seen again later: the arrival time does not move.
    observe(
        &mut h,
        &[EnvView {
            obs: &dev,
            manifest_commits: &commits,
        }],
        ts("2026-11-22T11:30:00Z"),
    );
    assert_eq!(state(&h, 1, "dev").arrived_at, Some(Time(t1)));

    // dev jumps to build 3: build 2 never ran there.
    let dev = obs("dev", Some(M3), EnvHealth::Settled);
    observe(
        &mut h,
        &[EnvView {
            obs: &dev,
            manifest_commits: &commits,
        }],
        ts("2026-11-22T12:10:00Z"),
    );
    assert_eq!(state(&h, 3, "dev").state, ARRIVED);
    assert_eq!(state(&h, 2, "dev").state, SUPERSEDED);
    assert_eq!(state(&h, 1, "dev").state, ARRIVED);

    // Applied but not healthy yet is not an arrival.
    let prod = obs("prod", Some(M3), EnvHealth::Progressing);
    observe(
        &mut h,
        &[EnvView {
            obs: &prod,
            manifest_commits: &commits,
        }],
        ts("2026-11-22T12:10:00Z"),
    );
    assert_eq!(state(&h, 3, "prod").state, PENDING);
}

#[test]
fn a_later_manifest_commit_carries_the_build_too() {
    let mut commits = branch();
    commits.insert(0, plain_commit('4', "2026-11-22T13:00:00Z", "hand edit"));
    let mut h = vec![entry(3, M3, &["dev"])];
    let dev = obs("dev", Some(&"4".repeat(40)), EnvHealth::Settled);
    observe(
        &mut h,
        &[EnvView {
            obs: &dev,
            manifest_commits: &commits,
        }],
        ts("2026-11-22T13:05:00Z"),
    );
    assert_eq!(state(&h, 3, "dev").state, ARRIVED);
}

#[test]
fn a_failed_sync_is_pinned_on_the_build_it_tried() {
    let commits = branch();
    let mut h = vec![
        entry(3, M3, &["prod"]),
        entry(2, M2, &["prod"]),
        entry(1, M1, &["prod"]),
    ];
    let ok = obs("prod", Some(M1), EnvHealth::Settled);
    observe(
        &mut h,
        &[EnvView {
            obs: &ok,
            manifest_commits: &commits,
        }],
        ts("2026-11-22T10:30:00Z"),
    );
    let mut failing = obs(
        "prod",
        Some(M1),
        EnvHealth::Failed("sync failed: one or more objects failed to apply".into()),
    );
    failing.attempted = Some(M2.into());
    observe(
        &mut h,
        &[EnvView {
            obs: &failing,
            manifest_commits: &commits,
        }],
        ts("2026-11-22T11:30:00Z"),
    );
    assert_eq!(state(&h, 2, "prod").state, FAILED);
    assert!(state(&h, 2, "prod")
        .message
        .as_deref()
        .unwrap()
        .contains("failed to apply"));
    assert_eq!(state(&h, 3, "prod").state, PENDING);
    assert_eq!(state(&h, 1, "prod").state, ARRIVED);
    // Build 3 gets there: build 2 stays Failed (that is what happened to it), build 3 Arrived.
    let ok = obs("prod", Some(M3), EnvHealth::Settled);
    observe(
        &mut h,
        &[EnvView {
            obs: &ok,
            manifest_commits: &commits,
        }],
        ts("2026-11-22T12:30:00Z"),
    );
    assert_eq!(state(&h, 3, "prod").state, ARRIVED);
    assert_eq!(state(&h, 2, "prod").state, FAILED);
    // Without an attempted revision, the failure goes to the newest build not there yet.
    let mut h = vec![entry(2, M2, &["prod"]), entry(1, M1, &["prod"])];
    let failing = obs("prod", Some(M1), EnvHealth::Failed("Degraded".into()));
    observe(
        &mut h,
        &[EnvView {
            obs: &failing,
            manifest_commits: &commits,
        }],
        ts("2026-11-22T12:30:00Z"),
    );
    assert_eq!(state(&h, 2, "prod").state, FAILED);
}

#[test]
fn workloads_arrive_by_image_tag() {
    let mut h = vec![entry(3, M3, &["staging"]), entry(2, M2, &["staging"])];
    let mut o = obs("staging", Some("20261122.3"), EnvHealth::Settled);
    o.by_image_tag = true;
    observe(
        &mut h,
        &[EnvView {
            obs: &o,
            manifest_commits: &[],
        }],
        ts("2026-11-22T12:30:00Z"),
    );
    assert_eq!(state(&h, 3, "staging").state, ARRIVED);
    assert_eq!(state(&h, 2, "staging").state, SUPERSEDED);
}

// ---- the view: states, stuck steps, summary ------------------------------------------------------

struct Flow {
    build: RunFacts,
    source: SourceFacts,
    paths: Vec<CorrelatedPath>,
    envs: Vec<EnvTarget>,
    observations: Vec<EnvObservation>,
    entry: Option<HistoryEntry>,
    timeouts: Timeouts,
}

fn flow() -> Flow {
    let envs = vec![
        EnvTarget {
            name: "dev".into(),
            target: "Kustomization flux-system/orders-dev".into(),
            cluster: None,
        },
        EnvTarget {
            name: "prod".into(),
            target: "Application argocd/orders-prod".into(),
            cluster: Some("prod-eu".into()),
        },
    ];
    Flow {
        build: ci_build(),
        source: SourceFacts {
            author: Some("Jamal Hartnett".into()),
            commit_url: None,
            pull_request: Some(PullRequestFacts {
                id: 42,
                title: Some("Add retries".into()),
                url: None,
            }),
        },
        paths: vec![CorrelatedPath {
            hld_run: Linked::unknown(),
            hld_commit: Linked::unknown(),
            generation_run: Linked::unknown(),
            manifest_commit: Linked::unknown(),
        }],
        observations: vec![
            obs("dev", Some(M1), EnvHealth::Settled),
            obs("prod", Some(M1), EnvHealth::Settled),
        ],
        envs,
        entry: None,
        timeouts: Timeouts {
            hld: DEFAULT_TIMEOUT,
            manifest: DEFAULT_TIMEOUT,
            environments: vec![DEFAULT_TIMEOUT, SignedDuration::from_hours(2)],
        },
    }
}

fn show(f: &Flow, now: &str) -> FlowView {
    view(&ViewInput {
        build: &f.build,
        source: &f.source,
        hld_repository: Some("orders-hld"),
        manifest_repository: "orders-manifests",
        has_generation: true,
        paths: &f.paths,
        envs: &f.envs,
        observations: &f.observations,
        entry: f.entry.as_ref(),
        timeouts: &f.timeouts,
        now: ts(now),
    })
}

#[test]
fn a_missing_hld_update_stalls_naming_the_step_after_the_timeout() {
    let f = flow();
    let v = show(&f, "2026-11-22T10:38:00Z");
    assert_eq!(v.stalled, None);
    assert_eq!(v.latest.hld_update.as_ref().unwrap().state, WAITING);
    assert_eq!(v.next_deadline, Some(ts("2026-11-22T10:38:30Z")));
    assert_eq!(v.summary, "dev … prod …");

    let v = show(&f, "2026-11-22T10:38:31Z");
    let stalled = v.stalled.expect("stalled");
    assert_eq!(stalled.step, "hld");
    assert_eq!(stalled.reason, "HldUpdateStalled");
    assert_eq!(
        stalled.message,
        "image tag 20261122.7 not written to orders-hld within 30m of the build"
    );
    assert_eq!(v.latest.hld_update.unwrap().state, STALLED);
    assert_eq!(v.latest.manifest_generation.unwrap().state, WAITING);
    assert!(v.latest.environments.iter().all(|e| e.state == WAITING));
    assert_eq!(v.latest.build.author.as_deref(), Some("Jamal Hartnett"));
    assert_eq!(v.latest.build.pull_request.map(|p| p.id), Some(42));
}

#[test]
fn a_failed_hld_update_run_is_a_failure_not_a_stall() {
    let mut f = flow();
    let mut r = run(1210, 57, RunPhase::Failed);
    r.url = Some("https://dev.azure.com/contoso/Shop/_build/results?buildId=1210".into());
    f.paths[0].hld_run = Linked {
        value: Some(r),
        rule: LinkRule::ResourceTrigger,
    };
    let v = show(&f, "2026-11-22T12:00:00Z");
    assert_eq!(v.stalled, None);
    let failed = v.failed.expect("failed");
    assert_eq!(failed.reason, "HldUpdateFailed");
    assert!(failed.message.starts_with(
        "HLD update 20261122.1210 failed: image tag 20261122.7 not written to orders-hld"
    ));
    let hld = v.latest.hld_update.unwrap();
    assert_eq!(hld.linked_by.as_deref(), Some("resourceTrigger"));
    assert_eq!(hld.run.map(|r| r.id), Some(1210));
}

fn with_hld_commit(f: &mut Flow) {
    f.paths[0].hld_commit = Linked {
        value: Some(plain_commit(
            '4',
            "2026-11-22T10:12:31Z",
            "Merged PR 17: Updating orders to main-20261122.7.",
        )),
        rule: LinkRule::CommitMessage,
    };
}

#[test]
fn a_missing_manifest_commit_stalls_after_the_hld_commit() {
    let mut f = flow();
    with_hld_commit(&mut f);
    let v = show(&f, "2026-11-22T10:42:00Z");
    assert_eq!(v.latest.hld_update.as_ref().unwrap().state, SUCCEEDED);
    assert_eq!(
        v.latest.manifest_generation.as_ref().unwrap().state,
        WAITING
    );
    assert_eq!(v.stalled, None);
    let v = show(&f, "2026-11-22T10:42:32Z");
    let s = v.stalled.expect("stalled");
    assert_eq!(s.reason, "ManifestGenerationStalled");
    assert_eq!(
        s.message,
        "HLD commit 4444444 not rendered into orders-manifests within 30m"
    );
}

#[test]
fn environments_in_order_arrived_failed_and_stalled() {
    let mut f = flow();
    with_hld_commit(&mut f);
    f.paths[0].manifest_commit = Linked {
        value: Some(plain_commit(
            '2',
            "2026-11-22T10:15:48Z",
            "Updated k8s manifest files post commit",
        )),
        rule: LinkRule::CommitMessage,
    };
    let mut e = entry(1207, M2, &["dev", "prod"]);
    {
        let dev = e.environments.get_mut("dev").unwrap();
        dev.state = ARRIVED.into();
        dev.arrived_at = Some(Time(ts("2026-11-22T10:20:00Z")));
        dev.lead_time = Some("20m0s".into());
    }
    f.entry = Some(e);
    f.observations = vec![
        obs("dev", Some(M2), EnvHealth::Settled),
        obs("prod", Some(M1), EnvHealth::Progressing),
    ];
    let v = show(&f, "2026-11-22T11:00:00Z");
    assert_eq!(v.summary, "dev ✓ prod …");
    let dev = &v.latest.environments[0];
    assert_eq!(
        (dev.state.as_str(), dev.lead_time.as_deref()),
        (ARRIVED, Some("20m0s"))
    );
    let prod = &v.latest.environments[1];
    assert_eq!(prod.state, PROGRESSING);
    assert_eq!(prod.cluster.as_deref(), Some("prod-eu"));
    assert_eq!(
        v.next_deadline,
        Some(ts("2026-11-22T12:20:00Z")),
        "2h after dev arrived"
    );

    let v = show(&f, "2026-11-22T12:20:01Z");
    let s = v.stalled.expect("prod stalled");
    assert_eq!(s.step, "deployed/prod");
    assert_eq!(
        s.message,
        "manifest 2222222 not applied by Application argocd/orders-prod (prod) within 2h of reaching dev"
    );
    assert_eq!(v.summary, "dev ✓ prod ✗");

    f.observations[1].health = EnvHealth::Failed("sync failed: ComparisonError".into());
    let v = show(&f, "2026-11-22T11:00:00Z");
    let failed = v.failed.expect("prod failed");
    assert_eq!(failed.step, "deployed/prod");
    assert_eq!(failed.reason, "DeployFailed");
    assert!(failed
        .message
        .contains("(prod): sync failed: ComparisonError"));
    assert_eq!(v.stalled, None);
}

#[test]
fn an_unsuccessful_build_leaves_everything_waiting() {
    let mut f = flow();
    f.build.phase = RunPhase::InProgress;
    f.build.finish_time = None;
    let v = show(&f, "2026-11-23T10:00:00Z");
    assert_eq!(v.stalled, None);
    assert_eq!(v.failed, None);
    assert_eq!(v.next_deadline, None);
    assert_eq!(v.latest.hld_update.unwrap().state, WAITING);
}

#[test]
fn history_rows_carry_every_link() {
    let f = {
        let mut f = flow();
        with_hld_commit(&mut f);
        let mut gen = run(1212, 60, RunPhase::Succeeded);
        gen.url = Some("https://dev.azure.com/contoso/Shop/_build/results?buildId=1212".into());
        f.paths[0].generation_run = Linked {
            value: Some(gen),
            rule: LinkRule::SourceVersion,
        };
        f.paths[0].hld_run = Linked {
            value: Some(f.build.clone()),
            rule: LinkRule::SameRun,
        };
        f.paths[0].manifest_commit = Linked {
            value: Some(plain_commit('a', "2026-11-22T10:15:48Z", "")),
            rule: LinkRule::CommitMessage,
        };
        f
    };
    let mut prod_path = f.paths[0].clone();
    prod_path.manifest_commit.value = Some(plain_commit('b', "2026-11-22T10:16:00Z", ""));
    let e = history_entry(
        &f.build,
        &f.source,
        &[f.paths[0].clone(), prod_path],
        &f.envs,
    );
    assert_eq!(e.build_id, 1207);
    assert_eq!(e.author.as_deref(), Some("Jamal Hartnett"));
    assert_eq!(
        e.hld_run, None,
        "the CI run itself is not repeated as the HLD run"
    );
    assert_eq!(e.hld_commit.as_deref().map(|c| &c[..1]), Some("4"));
    assert_eq!(e.manifest_run.as_ref().map(|r| r.id), Some(1212));
    assert_eq!(e.manifest_commit.as_deref().map(|c| &c[..1]), Some("a"));
    assert_eq!(e.environments["dev"].manifest_commit, None);
    assert_eq!(
        e.environments["prod"]
            .manifest_commit
            .as_deref()
            .map(|c| &c[..1]),
        Some("b")
    );
    assert_eq!(e.environments["prod"].state, PENDING);
}

// ---- timeouts and bounds -------------------------------------------------------------------------

fn spec_with(policy: serde_json::Value, envs: serde_json::Value) -> ServiceTraceSpec {
    serde_json::from_value(serde_json::json!({
        "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                         "credentials": {"secretRef": {"name": "ado", "key": "token"}}},
        "build": {"definitionId": 42, "branch": "main"},
        "manifest": {"repository": "orders-manifests", "branch": "main"},
        "environments": envs,
        "policy": policy,
    }))
    .expect("spec")
}

#[test]
fn timeouts_default_override_and_saturate() {
    let spec = spec_with(
        serde_json::json!({}),
        serde_json::json!([{"name": "dev", "fluxKustomization": {"name": "d"}}]),
    );
    let t = Timeouts::from_spec(&spec);
    assert_eq!((t.hld, t.manifest), (DEFAULT_TIMEOUT, DEFAULT_TIMEOUT));
    assert_eq!(t.environments, vec![DEFAULT_TIMEOUT]);

    let spec = spec_with(
        serde_json::json!({"timeout": "10m", "hldTimeout": "15m"}),
        serde_json::json!([
            {"name": "dev", "fluxKustomization": {"name": "d"}},
            {"name": "prod", "argoApplication": {"name": "p"}, "timeout": "99999h99999h99999h99999h"}
        ]),
    );
    let t = Timeouts::from_spec(&spec);
    assert_eq!(t.hld, SignedDuration::from_mins(15));
    assert_eq!(t.manifest, SignedDuration::from_mins(10));
    assert_eq!(t.environments[0], SignedDuration::from_mins(10));
    // Longer than the schema's one-year cap (an object stored under an older CRD): saturates to it.
    assert_eq!(t.environments[1], SignedDuration::from_hours(8760));
    // The largest value, from the latest representable time: saturates, never panics.
    assert_eq!(deadline(Timestamp::MAX, t.environments[1]), Timestamp::MAX);
    assert!(!overdue(
        Some(Timestamp::MAX),
        SignedDuration::MAX,
        Timestamp::MAX
    ));
    assert!(!overdue(None, SignedDuration::ZERO, Timestamp::MAX));
    assert_eq!(
        wake_at(Some(Timestamp::MAX), SignedDuration::MAX, Timestamp::MAX),
        None
    );
    assert_eq!(human(SignedDuration::from_mins(90)), "1h30m");
    assert_eq!(human(SignedDuration::ZERO), "0s");
    assert_eq!(human(SignedDuration::from_secs(45)), "45s");
}

/// Every property of a schema, as (dotted path, schema), walking objects, arrays and maps.
fn schema_properties<'a>(
    path: &str,
    schema: &'a serde_json::Value,
    out: &mut Vec<(String, &'a serde_json::Value)>,
) {
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, prop) in props {
            let here = format!("{path}.{name}");
            out.push((here.clone(), prop));
            schema_properties(&here, prop, out);
        }
    }
    if let Some(items) = schema.get("items") {
        schema_properties(&format!("{path}[]"), items, out);
    }
}

#[test]
fn the_schema_bounds_every_duration() {
    let crd = serde_json::to_value(<ServiceTrace as kube::CustomResourceExt>::crd()).expect("crd");
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut props = Vec::new();
    schema_properties("", root, &mut props);
    let durations: Vec<_> = props
        .iter()
        .filter(|(_, p)| {
            p.get("pattern")
                .and_then(|v| v.as_str())
                .is_some_and(|pat| pat.contains("(ms|s|m|h)"))
        })
        .collect();
    let mut names: Vec<&str> = durations.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            ".spec.environments[].timeout",
            ".spec.interval",
            ".spec.policy.hldTimeout",
            ".spec.policy.manifestTimeout",
            ".spec.policy.timeout",
        ],
        "every duration field of the spec, and nothing else, looks like a duration"
    );
    for (name, p) in durations {
        // The shared pattern (what PipelineGate uses), and the one-year CEL cap: a longer value is
        // refused at `kubectl apply`, so no accepted value can overflow a clock.
        assert_eq!(p["pattern"], crate::crd::DURATION_PATTERN, "{name}");
        let rules = p["x-kubernetes-validations"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no CEL rule"));
        assert!(
            rules.iter().any(|r| r["rule"]
                .as_str()
                .is_some_and(|r| r.contains("duration(self) <= duration('8760h')"))),
            "{name}: {rules:?}"
        );
    }
    assert_eq!(
        crate::crd::MAX_SPEC_DURATION,
        std::time::Duration::from_secs(8760 * 3600)
    );
}

#[test]
fn go_durations_and_truncation() {
    assert_eq!(go_duration(SignedDuration::from_secs(3850)), "1h4m10s");
    assert_eq!(go_duration(SignedDuration::from_secs(38)), "38s");
    assert_eq!(go_duration(SignedDuration::from_secs(-5)), "0s");
    assert_eq!(go_duration(SignedDuration::from_secs(600)), "10m0s");
    assert_eq!(truncate_chars("abcdef", 4), "abc…");
    assert_eq!(truncate_chars("✓✓✓", 3), "✓✓✓");
    assert_eq!(truncate_chars("✓✓✓✓", 3).chars().count(), 3);
}

fn long(n: usize) -> String {
    "é".repeat(n)
}

/// A status with every free-text field (what Azure DevOps and the agents write) far over its bound,
/// every number and time at its widest, and `envs` environments named by `name`.
fn full_status(envs: usize, name: impl Fn(usize) -> String) -> ServiceTraceStatus {
    let env_names: Vec<String> = (0..envs).map(name).collect();
    let url = format!("https://dev.azure.com/{}", "u".repeat(2000));
    let run = RunLink {
        id: i64::MAX,
        number: Some(long(300)),
        url: Some(url.clone()),
        result: Some("succeeded".into()),
        queue_time: Some(Time(Timestamp::MAX)),
        start_time: Some(Time(Timestamp::MAX)),
        finish_time: Some(Time(Timestamp::MAX)),
    };
    let row = |i: usize| HistoryEntry {
        build_id: i as i64,
        image_tag: Some(format!("20261122.{i}")),
        build_url: Some(url.clone()),
        commit: Some("f".repeat(40)),
        author: Some(long(5000)),
        pull_request: Some(PullRequestInfo {
            id: i64::MAX,
            title: Some(long(5000)),
            url: Some(url.clone()),
        }),
        build_queue_time: Some(Time(Timestamp::MAX)),
        build_finish_time: Some(Time(Timestamp::MAX)),
        hld_run: Some(run.clone()),
        hld_commit: Some("e".repeat(40)),
        manifest_run: Some(run.clone()),
        manifest_commit: Some("d".repeat(40)),
        environments: env_names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    HistoryArrival {
                        state: SUPERSEDED.into(),
                        arrived_at: Some(Time(Timestamp::MAX)),
                        lead_time: Some("99999h59m59s".into()),
                        manifest_commit: Some("c".repeat(40)),
                        message: Some(long(10_000)),
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    };
    let step = StepInfo {
        state: STALLED.into(),
        run: Some(run.clone()),
        commit: Some("b".repeat(40)),
        commit_url: Some(url.clone()),
        linked_by: Some("commitMessage".into()),
        message: Some(long(10_000)),
    };
    ServiceTraceStatus {
        observed_generation: Some(i64::MAX),
        conditions: ["Ready", "Reconciling", "Stalled"]
            .iter()
            .map(|t| Condition {
                type_: t.to_string(),
                status: "False".into(),
                reason: "DeployStalled".into(),
                message: long(10_000),
                observed_generation: Some(i64::MAX),
                last_transition_time: Time(Timestamp::MAX),
            })
            .collect(),
        summary: Some(long(10_000)),
        latest: Some(TracedChange {
            build: BuildInfo {
                id: i64::MAX,
                number: Some("20261122.99".into()),
                url: Some(url.clone()),
                result: Some("succeeded".into()),
                commit: Some("a".repeat(40)),
                commit_url: Some(url.clone()),
                image_tag: Some("20261122.99".into()),
                author: Some(long(5000)),
                pull_request: Some(PullRequestInfo {
                    id: 1,
                    title: Some(long(5000)),
                    url: Some(url.clone()),
                }),
                queue_time: Some(Time(Timestamp::MAX)),
                start_time: Some(Time(Timestamp::MAX)),
                finish_time: Some(Time(Timestamp::MAX)),
            },
            hld_update: Some(step.clone()),
            manifest_generation: Some(step),
            environments: env_names
                .iter()
                .map(|n| EnvironmentProgress {
                    name: n.clone(),
                    state: STALLED.into(),
                    target: Some(long(1000)),
                    cluster: Some(long(1000)),
                    revision: Some("9".repeat(40)),
                    manifest_commit: Some("8".repeat(40)),
                    arrived_at: Some(Time(Timestamp::MAX)),
                    lead_time: Some("99999h59m59s".into()),
                    message: Some(long(10_000)),
                })
                .collect(),
        }),
        history: (0..MAX_HISTORY_LIMIT as usize).rev().map(row).collect(),
        stages: (0..envs + 3)
            .map(|i| TraceStage {
                name: format!("stage-{i}"),
                commit: Some("7".repeat(40)),
                run: None,
                state: "Failed".into(),
                web_url: None,
                updated_time: Some(Time(Timestamp::MAX)),
                message: Some(long(10_000)),
            })
            .collect(),
        manifest_commit_id: Some("6".repeat(40)),
        manifest_commit_short: Some("6666666".into()),
        deployed_revision: Some("5".repeat(40)),
        deployed_revision_short: Some("5555555".into()),
        image_tag: Some("20261122.99".into()),
        last_checked_time: Some(Time(Timestamp::MAX)),
        last_error: Some(long(10_000)),
        // The hook-health check's merge patch writes it; the reconciler's status never carries it.
        hooks: None,
    }
}

#[test]
fn a_full_status_with_three_environments_keeps_all_fifty_builds_under_64_kib() {
    let mut s = full_status(3, |i| ["dev", "staging", "prod"][i].to_string());
    assert!(
        size(&s) > 10 * MAX_STATUS_BYTES,
        "the test really overfills: {}",
        size(&s)
    );
    fit_status(&mut s);
    let bytes = size(&s);
    eprintln!("3 environments: {bytes} bytes, {} rows", s.history.len());
    assert!(bytes <= MAX_STATUS_BYTES, "{bytes} bytes");
    assert_eq!(s.history.len(), 50, "every build kept");
    assert_eq!(s.history[0].build_id, 49, "newest first");
    // Rows lost links and messages, not what they answer: arrivals, commit, author, PR id.
    assert!(s
        .history
        .iter()
        .all(|h| h.commit.as_deref().is_some_and(|c| c.len() == 40)));
    assert!(s
        .history
        .iter()
        .all(|h| h.pull_request.is_some() && h.author.is_some()));
    assert!(s
        .history
        .iter()
        .all(|h| h.environments.values().all(|a| a.arrived_at.is_some())));
    assert!(s
        .conditions
        .iter()
        .all(|c| c.message.chars().count() <= MAX_MESSAGE_CHARS));
    let latest = s.latest.as_ref().unwrap();
    assert!(latest.build.author.as_ref().unwrap().chars().count() <= MAX_NAME_CHARS);
    assert!(
        latest
            .build
            .pull_request
            .as_ref()
            .unwrap()
            .title
            .as_ref()
            .unwrap()
            .chars()
            .count()
            <= MAX_TITLE_CHARS
    );
}

#[test]
fn a_full_status_with_ten_environments_stays_under_64_kib_dropping_the_oldest_rows() {
    // Ten environments whose names use all 63 characters the schema allows: the worst case.
    let mut s = full_status(MAX_ENVIRONMENTS, |i| format!("{i}{}", "x".repeat(62)));
    fit_status(&mut s);
    let bytes = size(&s);
    eprintln!("10 environments: {bytes} bytes, {} rows", s.history.len());
    assert!(bytes <= MAX_STATUS_BYTES, "{bytes} bytes");
    assert!(
        s.history.len() >= 15,
        "most of the default limit survives: {}",
        s.history.len()
    );
    assert_eq!(s.history[0].build_id, 49, "the newest are the ones kept");
    assert_eq!(
        s.latest.as_ref().unwrap().environments.len(),
        MAX_ENVIRONMENTS
    );
}
