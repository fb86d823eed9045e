//! The simulator's ServiceTrace correlation support, over HTTP: commit authors and messages, runs
//! queued by another build or consuming another pipeline's run, pull requests. Every answer must read
//! with lockstep's own models and carry the keys of the recorded fixtures it imitates.

use lockstep::ado::{
    Build, GitCommitRef, GitPullRequest, GitPullRequestQuery, ListResponse, PipelineRun,
};
use lockstep_testkit::ado::{AdoSimulator, RunResult};
use serde_json::Value;

const ORG: &str = "contoso";
const PROJECT: &str = "Shop";
const PAT: &str = "pat-valid-123";
const CI: i64 = 42;
const HLD_UPDATE: i64 = 57;
const SRC: &str = "1111111111111111111111111111111111111111";
const HLD1: &str = "4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c";
const HLD2: &str = "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d";

async fn get(sim: &AdoSimulator, path: &str) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/{PROJECT}/{path}", sim.org_url(ORG)))
        .basic_auth("x", Some(PAT))
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .send()
        .await
        .expect("simulator answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

async fn post(sim: &AdoSimulator, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/{PROJECT}/{path}", sim.org_url(ORG)))
        .basic_auth("x", Some(PAT))
        .header("X-TFS-FedAuthRedirect", "Suppress")
        .json(body)
        .send()
        .await
        .expect("simulator answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/azure-devops")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
}

/// Every key of `sim` at the top level is one the real answer has too.
fn keys_within(sim: &Value, real: &Value, what: &str) {
    let real: Vec<&String> = real.as_object().expect("object").keys().collect();
    for k in sim.as_object().expect("object").keys() {
        assert!(
            real.contains(&k),
            "{what}: '{k}' is not in the recorded shape"
        );
    }
}

async fn setup() -> AdoSimulator {
    let sim = AdoSimulator::start().await.expect("starts");
    sim.add_token(ORG, PAT);
    sim.add_project(ORG, PROJECT);
    sim.add_definition(ORG, PROJECT, CI, "orders-ci");
    sim.add_definition(ORG, PROJECT, HLD_UPDATE, "orders-hld-update");
    sim.add_repository(ORG, PROJECT, PROJECT, &[("main", SRC)]);
    sim.add_repository(ORG, PROJECT, "orders-hld", &[("main", HLD1)]);
    sim
}

#[tokio::test]
async fn commits_carry_the_author_and_message_a_test_gives_them() {
    let sim = setup().await;
    sim.push(ORG, PROJECT, "orders-hld", "main", HLD2);
    sim.describe_commit(
        ORG,
        PROJECT,
        "orders-hld",
        HLD2,
        "Automated Account",
        "Merged PR 17: Updating orders to main-20261122.7.",
    );
    let (status, body) = get(&sim, "_apis/git/repositories/orders-hld/commits?searchCriteria.itemVersion.version=main&api-version=7.1").await;
    assert_eq!(status, 200);
    let list: ListResponse<GitCommitRef> = serde_json::from_value(body).expect("lockstep reads it");
    let head = &list.value[0];
    assert_eq!(head.commit_id, HLD2);
    assert_eq!(
        head.comment.as_deref(),
        Some("Merged PR 17: Updating orders to main-20261122.7.")
    );
    assert_eq!(
        head.author.as_ref().and_then(|a| a.name.as_deref()),
        Some("Automated Account")
    );
    // The commit before it keeps the simulator's default author.
    assert_eq!(
        list.value[1]
            .author
            .as_ref()
            .and_then(|a| a.name.as_deref()),
        Some("Example User")
    );
}

#[tokio::test]
async fn a_run_queued_by_build_completion_names_the_upstream_build() {
    let sim = setup().await;
    let ci = sim.queue_run(ORG, PROJECT, CI, "main", SRC);
    sim.start_run(ci);
    sim.complete_run(ci, RunResult::Succeeded);
    let hld = sim.queue_run(ORG, PROJECT, HLD_UPDATE, "main", SRC);
    sim.trigger_run_by_build(hld, ci);
    let (_, body) = get(&sim, &format!("_apis/build/builds/{hld}?api-version=7.1")).await;
    keys_within(
        &body["triggeredByBuild"],
        &fixture("build-triggered-by-build-completion.json")["triggeredByBuild"],
        "triggeredByBuild",
    );
    let b: Build = serde_json::from_value(body).expect("lockstep reads it");
    assert_eq!(b.reason.as_deref(), Some("buildCompletion"));
    let up = b.triggered_by_build.expect("triggeredByBuild");
    assert_eq!(up.id, Some(ci));
    assert_eq!(up.build_number, sim.run(ci).map(|r| r.build_number));
    assert_eq!(up.definition.and_then(|d| d.id), Some(CI));
    // An ordinary CI build has none.
    let (_, body) = get(&sim, &format!("_apis/build/builds/{ci}?api-version=7.1")).await;
    assert_eq!(body["reason"], "individualCI");
    assert!(body["triggeredByBuild"].is_null());
}

#[tokio::test]
async fn a_run_consuming_a_pipeline_resource_lists_it() {
    let sim = setup().await;
    let ci = sim.queue_run(ORG, PROJECT, CI, "main", SRC);
    let hld = sim.queue_run(ORG, PROJECT, HLD_UPDATE, "main", SRC);
    sim.consume_run(hld, "ci", ci);
    let (_, body) = get(
        &sim,
        &format!("_apis/pipelines/{HLD_UPDATE}/runs/{hld}?api-version=7.1"),
    )
    .await;
    let real = fixture("pipeline-run-resource-trigger.json");
    keys_within(
        &body["resources"]["pipelines"]["ci"],
        &real["resources"]["pipelines"]["ci"],
        "resources.pipelines.ci",
    );
    let run: PipelineRun = serde_json::from_value(body).expect("lockstep reads it");
    let consumed = &run.resources.and_then(|r| r.pipelines).expect("pipelines")["ci"];
    assert_eq!(consumed.version, sim.run(ci).map(|r| r.build_number));
    assert_eq!(consumed.pipeline.as_ref().and_then(|p| p.id), Some(CI));
    let (_, body) = get(&sim, &format!("_apis/build/builds/{hld}?api-version=7.1")).await;
    assert_eq!(body["reason"], "resourceTrigger");
}

#[tokio::test]
async fn pull_requests_answer_like_pull_requests_get() {
    let sim = setup().await;
    sim.push(
        ORG,
        PROJECT,
        PROJECT,
        "main",
        "2222222222222222222222222222222222222222",
    );
    sim.add_pull_request(
        ORG,
        PROJECT,
        PROJECT,
        42,
        "Add retries",
        "feature/retries",
        "main",
        Some("2222222222222222222222222222222222222222"),
    );
    let (status, body) = get(
        &sim,
        &format!("_apis/git/repositories/{PROJECT}/pullRequests/42?api-version=7.1"),
    )
    .await;
    assert_eq!(status, 200);
    keys_within(&body, &fixture("pull-request-get.json"), "pull request");
    let pr: GitPullRequest = serde_json::from_value(body).expect("lockstep reads it");
    assert_eq!(
        (
            pr.pull_request_id,
            pr.title.as_deref(),
            pr.status.as_deref()
        ),
        (42, Some("Add retries"), Some("completed"))
    );
    assert!(pr
        .repository
        .and_then(|r| r.remote_url)
        .is_some_and(|u| u.ends_with("/Shop/_git/Shop")));
    let (status, body) = get(
        &sim,
        &format!("_apis/git/repositories/{PROJECT}/pullRequests/43?api-version=7.1"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["typeKey"], "GitPullRequestNotFoundException");
}

#[tokio::test]
async fn pull_request_query_maps_merge_commits_to_their_pull_requests() {
    let sim = setup().await;
    let merged = "2222222222222222222222222222222222222222";
    sim.push(ORG, PROJECT, PROJECT, "main", merged);
    sim.add_pull_request(
        ORG,
        PROJECT,
        PROJECT,
        42,
        "Add retries",
        "feature/retries",
        "main",
        Some(merged),
    );
    sim.add_pull_request(
        ORG,
        PROJECT,
        PROJECT,
        43,
        "Still open",
        "feature/open",
        "main",
        None,
    );
    let path = format!("_apis/git/repositories/{PROJECT}/pullrequestquery?api-version=7.1");
    let query = serde_json::json!({"queries": [{"type": "lastMergeCommit", "items": [merged.to_uppercase(), SRC]}]});
    let (status, body) = post(&sim, &path, &query).await;
    assert_eq!(status, 200, "{body}");
    keys_within(
        &body,
        &fixture("pull-request-query-last-merge-commit.json"),
        "query",
    );
    keys_within(
        &body["results"][0][merged.to_uppercase()][0],
        &fixture("pull-request-get.json"),
        "query result",
    );
    let answer: GitPullRequestQuery =
        serde_json::from_value(body.clone()).expect("lockstep reads it");
    assert_eq!(answer.results.len(), 1);
    let found = &answer.results[0];
    assert_eq!(
        found.len(),
        1,
        "a commit no pull request merged is left out: {body}"
    );
    assert_eq!(found[&merged.to_uppercase()][0].pull_request_id, 42);

    // Nothing merged: one empty map per query (`pull-request-query-no-match.json`).
    let (_, body) = post(
        &sim,
        &path,
        &serde_json::json!({"queries": [{"type": "lastMergeCommit", "items": [SRC]}]}),
    )
    .await;
    assert_eq!(
        body["results"],
        fixture("pull-request-query-no-match.json")["results"]
    );
    // A read by POST: a GET is refused, as is a type the simulator cannot answer honestly.
    let (status, _) = get(&sim, &path).await;
    assert_eq!(status, 405);
    let (status, _) = post(
        &sim,
        &path,
        &serde_json::json!({"queries": [{"type": "commit", "items": [merged]}]}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = post(
        &sim,
        "_apis/git/repositories/nope/pullrequestquery?api-version=7.1",
        &query,
    )
    .await;
    assert_eq!(
        (status, body["typeKey"].as_str()),
        (404, Some("GitRepositoryNotFoundException"))
    );
}

#[tokio::test]
async fn commits_under_an_item_path_are_the_ones_that_touched_it() {
    let sim = setup().await;
    let prod = "b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f80";
    let dev = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
    sim.set_commit_paths(
        ORG,
        PROJECT,
        "orders-hld",
        HLD1,
        &["/dev/app.yaml", "/prod/app.yaml"],
    );
    sim.push(ORG, PROJECT, "orders-hld", "main", prod);
    sim.set_commit_paths(ORG, PROJECT, "orders-hld", prod, &["prod/app.yaml"]);
    sim.push(ORG, PROJECT, "orders-hld", "main", dev);
    sim.set_commit_paths(
        ORG,
        PROJECT,
        "orders-hld",
        dev,
        &["/dev/app.yaml", "/production/x.yaml"],
    );
    let ids = |body: &Value| -> Vec<String> {
        let list: ListResponse<GitCommitRef> =
            serde_json::from_value(body.clone()).expect("lockstep reads it");
        list.value.into_iter().map(|c| c.commit_id).collect()
    };
    let base = "_apis/git/repositories/orders-hld/commits?searchCriteria.itemVersion.version=main&api-version=7.1";
    let (status, body) = get(&sim, &format!("{base}&searchCriteria.itemPath=/prod")).await;
    assert_eq!(status, 200);
    keys_within(&body, &fixture("commits-item-path-prod.json"), "commits");
    keys_within(
        &body["value"][0],
        &fixture("commits-item-path-prod.json")["value"][0],
        "commit",
    );
    // `/production/x.yaml` is not under `/prod`: a folder, not a string prefix.
    assert_eq!(ids(&body), vec![prod, HLD1]);
    let (_, body) = get(
        &sim,
        &format!("{base}&searchCriteria.itemPath=%2Fprod%2Fapp.yaml&searchCriteria.$top=1"),
    )
    .await;
    assert_eq!(ids(&body), vec![prod], "a file path, then paging");
    let (_, body) = get(&sim, &format!("{base}&searchCriteria.itemPath=/")).await;
    assert_eq!(
        ids(&body),
        vec![dev, prod, HLD1],
        "the root is every commit"
    );
    let (_, body) = get(&sim, &format!("{base}&itemPath=/staging")).await;
    assert_eq!(ids(&body), Vec::<String>::new());
}
