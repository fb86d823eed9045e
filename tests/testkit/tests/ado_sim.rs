//! The Azure DevOps simulator seen from outside: over HTTP, as lockstep's client will see it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_testkit::ado::{
    AdoSimulator, BuildCompleteVersion, ChaosConfig, ChaosFault, HookDelivery, HookEvent,
    RetryAfter, RunResult, RunStatus,
};
use serde_json::{json, Value};

const ORG: &str = "contoso";
const PROJECT: &str = "Shop";
const PAT: &str = "pat-valid-123";
const DEF: i64 = 42;
const SHA1: &str = "1111111111111111111111111111111111111111";
const SHA2: &str = "2222222222222222222222222222222222222222";
const SHA3: &str = "3333333333333333333333333333333333333333";

async fn sim() -> AdoSimulator {
    let sim = AdoSimulator::start().await.expect("simulator starts");
    sim.add_token(ORG, PAT);
    sim.add_project(ORG, PROJECT);
    sim.add_definition(ORG, PROJECT, DEF, "base-ci");
    sim.add_definition(ORG, PROJECT, 7, "other-ci");
    sim.add_repository(ORG, PROJECT, PROJECT, &[("main", SHA1)]);
    sim
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn get_with(
    sim: &AdoSimulator,
    path_and_query: &str,
    pat: Option<&str>,
    suppress: bool,
) -> Resp {
    let mut req = http().get(format!("{}/{}", sim.org_url(ORG), path_and_query));
    if let Some(pat) = pat {
        req = req.basic_auth("anything", Some(pat));
    }
    if suppress {
        req = req.header("X-TFS-FedAuthRedirect", "Suppress");
    }
    let r = req.send().await.expect("request reaches the simulator");
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        // Raw bytes: `text()` would silently drop a BOM, which is what some tests look for.
        text: String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap(),
    }
}

async fn get(sim: &AdoSimulator, path_and_query: &str) -> Resp {
    get_with(sim, path_and_query, Some(PAT), true).await
}

fn builds_path(extra: &str) -> String {
    format!("{PROJECT}/_apis/build/builds?api-version=7.1{extra}")
}

fn ids(body: &Value) -> Vec<i64> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect()
}

fn is_ado_time(s: &str) -> bool {
    // 2026-04-01T10:46:36.7230431Z
    s.len() == 28
        && s.as_bytes()[19] == b'.'
        && s.ends_with('Z')
        && s.parse::<jiff::Timestamp>().is_ok()
}

#[tokio::test]
async fn run_lifecycle_is_visible_through_the_rest_endpoints() {
    let sim = sim().await;
    let id = sim.queue_run(ORG, PROJECT, DEF, "main", SHA2);
    let project_id = sim.project_id(ORG, PROJECT).unwrap();

    let queued = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{id}?api-version=7.1"),
    )
    .await;
    assert_eq!(queued.status, 200);
    assert!(queued
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let b = queued.json();
    assert_eq!(b["status"], "notStarted");
    for absent in ["result", "startTime", "finishTime"] {
        assert!(
            b.get(absent).is_none(),
            "{absent} must be absent (not null) while queued"
        );
    }
    assert_eq!(b["sourceBranch"], "refs/heads/main");
    assert_eq!(b["sourceVersion"], SHA2);
    assert_eq!(b["definition"]["id"], DEF);
    assert_eq!(b["definition"]["name"], "base-ci");
    assert_eq!(b["project"]["id"], project_id.as_str());
    let queue_day: jiff::Timestamp = b["queueTime"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        b["buildNumber"],
        format!("{}.1", queue_day.strftime("%Y%m%d"))
    );
    assert!(
        is_ado_time(b["queueTime"].as_str().unwrap()),
        "{}",
        b["queueTime"]
    );
    assert_eq!(
        b["_links"]["web"]["href"],
        format!(
            "{}/{project_id}/_build/results?buildId={id}",
            sim.org_url(ORG)
        )
    );
    assert_eq!(
        sim.run(id).unwrap().web_url,
        b["_links"]["web"]["href"].as_str().unwrap()
    );

    sim.start_run(id);
    let b = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{id}?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(b["status"], "inProgress");
    assert!(is_ado_time(b["startTime"].as_str().unwrap()));
    assert!(b.get("result").is_none() && b.get("finishTime").is_none());
    let timeline = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{id}/Timeline?api-version=7.1"),
    )
    .await
    .json();
    let stage = timeline["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Stage")
        .unwrap();
    assert_eq!(stage["state"], "inProgress");
    assert!(stage["result"].is_null());

    sim.complete_run(id, RunResult::Failed);
    let b = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{id}?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(b["status"], "completed");
    assert_eq!(b["result"], "failed");
    assert!(b["finishTime"].as_str().unwrap() >= b["startTime"].as_str().unwrap());
    let timeline = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{id}/timeline?api-version=7.1"),
    )
    .await
    .json();
    let kinds: BTreeSet<_> = timeline["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Stage".to_string(), "Phase".into(), "Job".into()])
    );
    for r in timeline["records"].as_array().unwrap() {
        assert_eq!(r["state"], "completed");
        assert_eq!(r["result"], "failed");
    }

    // A canceled run passes through `cancelling` (two l) and ends `canceled` (one l).
    let second = sim.queue_run(ORG, PROJECT, DEF, "refs/heads/main", SHA2);
    assert!(second > id);
    sim.start_run(second);
    sim.cancel_run(second);
    let b = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{second}?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(b["status"], "cancelling");
    assert!(b.get("result").is_none());
    sim.complete_run(second, RunResult::Canceled);
    let b = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{second}?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(
        (b["status"].as_str(), b["result"].as_str()),
        (Some("completed"), Some("canceled"))
    );
    assert!(b["buildNumber"].as_str().unwrap().ends_with(".2"));

    // Pipelines Runs API: same ids, newest first, its own spellings.
    let runs = get(
        &sim,
        &format!("{PROJECT}/_apis/pipelines/{DEF}/runs?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(ids(&runs), vec![second, id]);
    assert_eq!(runs["value"][0]["state"], "completed");
    assert_eq!(runs["value"][0]["result"], "canceled");
    assert_eq!(
        runs["value"][0]["resources"]["repositories"]["self"]["version"],
        SHA2
    );

    // Misuse of the lifecycle is an error, not a silent change.
    assert!(sim.try_start_run(id).is_err());
    assert!(sim.try_complete_run(999, RunResult::Succeeded).is_err());
    assert_eq!(sim.run(id).unwrap().status, RunStatus::Completed);

    let missing = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/999?api-version=7.1"),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["message"].as_str().unwrap().contains("999"));
}

#[tokio::test]
async fn builds_list_filters_orders_and_pages_like_the_service() {
    let sim = sim().await;
    let a = sim.queue_run(ORG, PROJECT, DEF, "main", SHA1);
    let b = sim.queue_run(ORG, PROJECT, DEF, "main", SHA2);
    let other_branch = sim.queue_run(ORG, PROJECT, DEF, "develop", SHA2);
    let other_def = sim.queue_run(ORG, PROJECT, 7, "main", SHA2);
    let c = sim.queue_run(ORG, PROJECT, DEF, "main", SHA3);
    let d = sim.queue_run(ORG, PROJECT, DEF, "main", SHA3);
    for id in [a, b, other_branch, other_def, c] {
        sim.start_run(id);
    }
    sim.complete_run(a, RunResult::Succeeded);
    sim.complete_run(b, RunResult::Failed);
    sim.complete_run(other_branch, RunResult::Succeeded);
    sim.complete_run(other_def, RunResult::PartiallySucceeded);
    // c stays inProgress, d stays notStarted.

    let gate = "&definitions=42&branchName=refs/heads/main&queryOrder=queueTimeDescending";
    let all = get(&sim, &builds_path(gate)).await;
    assert_eq!(all.status, 200);
    let body = all.json();
    assert_eq!(ids(&body), vec![d, c, b, a]);
    assert_eq!(body["count"], 4);
    assert!(all.header("x-ms-continuationtoken").is_none());

    assert_eq!(
        ids(&get(
            &sim,
            &builds_path(
                "&definitions=42&branchName=refs/heads/main&queryOrder=queueTimeAscending"
            )
        )
        .await
        .json()),
        vec![a, b, c, d]
    );
    assert_eq!(
        ids(&get(&sim, &builds_path("&branchName=main")).await.json()),
        Vec::<i64>::new(),
        "short branch names match nothing"
    );
    assert_eq!(
        ids(&get(
            &sim,
            &builds_path("&statusFilter=inProgress,notStarted&queryOrder=queueTimeDescending")
        )
        .await
        .json()),
        vec![d, c]
    );
    assert_eq!(
        ids(&get(
            &sim,
            &builds_path(
                "&statusFilter=completed&resultFilter=succeeded&queryOrder=queueTimeAscending"
            )
        )
        .await
        .json()),
        vec![a, other_branch]
    );
    assert_eq!(
        ids(&get(
            &sim,
            &builds_path(
                "&definitions=7,42&queryOrder=queueTimeDescending&maxBuildsPerDefinition=1"
            )
        )
        .await
        .json()),
        vec![d, other_def]
    );
    assert_eq!(
        ids(&get(
            &sim,
            &builds_path("&definitions=42&queryOrder=finishTimeDescending&statusFilter=completed")
        )
        .await
        .json()),
        vec![other_branch, b, a]
    );

    // Paging: $top + x-ms-continuationtoken until the header is gone; a run queued between pages
    // does not shift the next page.
    let first = get(&sim, &builds_path(&format!("{gate}&$top=3"))).await;
    assert_eq!(ids(&first.json()), vec![d, c, b]);
    let token = first
        .header("x-ms-continuationtoken")
        .expect("a continuation token")
        .to_string();
    sim.queue_run(ORG, PROJECT, DEF, "main", SHA3);
    let second = get(
        &sim,
        &builds_path(&format!("{gate}&$top=3&continuationToken={token}")),
    )
    .await;
    assert_eq!(ids(&second.json()), vec![a]);
    assert!(second.header("x-ms-continuationtoken").is_none());

    // api-version is mandatory (query or Accept header); bad values are a 400 with an ADO body.
    let no_version = get(&sim, &format!("{PROJECT}/_apis/build/builds")).await;
    assert_eq!(no_version.status, 400);
    assert!(no_version.json()["message"]
        .as_str()
        .unwrap()
        .contains("api-version"));
    let via_accept = http()
        .get(format!("{}/{PROJECT}/_apis/build/builds", sim.org_url(ORG)))
        .basic_auth("", Some(PAT))
        .header("Accept", "application/json;api-version=7.1")
        .send()
        .await
        .unwrap();
    assert_eq!(via_accept.status().as_u16(), 200);
    let bad = get(&sim, &builds_path("&queryOrder=newestFirst")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["typeKey"], "InvalidArgumentValueException");

    // Project by id and by name in another case.
    let project_id = sim.project_id(ORG, PROJECT).unwrap();
    let by_id = get(
        &sim,
        &format!("{project_id}/_apis/build/builds?api-version=7.1&definitions=7"),
    )
    .await
    .json();
    assert_eq!(ids(&by_id), vec![other_def]);
    let by_case = get(
        &sim,
        "sHoP/_apis/build/builds?api-version=7.1&definitions=7",
    )
    .await
    .json();
    assert_eq!(ids(&by_case), vec![other_def]);
}

#[tokio::test]
async fn git_endpoints_refs_prefix_tags_repositories_commits() {
    let sim = sim().await;
    let repo_id = sim.add_repository(
        ORG,
        PROJECT,
        "manifests",
        &[
            ("main", SHA1),
            ("main-old", SHA2),
            ("maintenance/x", SHA3),
            ("develop", SHA2),
        ],
    );
    let tag_object = sim.add_tag(ORG, PROJECT, "manifests", "flux-sync", SHA2, true);

    // Refs filter is a prefix match on the name without `refs/`.
    let refs = get(
        &sim,
        &format!(
            "{PROJECT}/_apis/git/repositories/manifests/refs?filter=heads/main&api-version=7.1"
        ),
    )
    .await
    .json();
    let names: Vec<_> = refs["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "refs/heads/main",
            "refs/heads/main-old",
            "refs/heads/maintenance/x"
        ]
    );
    assert_eq!(refs["count"], 3);
    assert_eq!(refs["value"][0]["objectId"], SHA1);
    let none = get(
        &sim,
        &format!(
            "{PROJECT}/_apis/git/repositories/manifests/refs?filter=heads/nope&api-version=7.1"
        ),
    )
    .await;
    assert_eq!(none.status, 200);
    assert_eq!(none.json(), json!({"count": 0, "value": []}));

    // Annotated tags: objectId is the tag object; peelTags adds the commit.
    let tags = get(&sim, &format!("{PROJECT}/_apis/git/repositories/{repo_id}/refs?filter=tags&peelTags=true&api-version=7.1")).await.json();
    assert_eq!(tags["value"][0]["name"], "refs/tags/flux-sync");
    assert_eq!(tags["value"][0]["objectId"], tag_object.as_str());
    assert_eq!(tags["value"][0]["peeledObjectId"], SHA2);
    let unpeeled = get(
        &sim,
        &format!("{PROJECT}/_apis/git/repositories/{repo_id}/refs?filter=tags&api-version=7.1"),
    )
    .await
    .json();
    assert!(unpeeled["value"][0].get("peeledObjectId").is_none());
    let tag = get(
        &sim,
        &format!(
            "{PROJECT}/_apis/git/repositories/manifests/annotatedtags/{tag_object}?api-version=7.1"
        ),
    )
    .await
    .json();
    assert_eq!(tag["taggedObject"]["objectId"], SHA2);
    assert_eq!(tag["name"], "flux-sync");

    // Repositories by name (any case) or id; unknown → 404 TF401019.
    let by_name = get(
        &sim,
        &format!("{PROJECT}/_apis/git/repositories/MANIFESTS?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(by_name["id"], repo_id.as_str());
    assert_eq!(by_name["defaultBranch"], "refs/heads/main");
    let by_id = get(
        &sim,
        &format!("{PROJECT}/_apis/git/repositories/{repo_id}?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(by_id["name"], "manifests");
    let missing = get(
        &sim,
        &format!("{PROJECT}/_apis/git/repositories/nope?api-version=7.1"),
    )
    .await;
    assert_eq!(missing.status, 404);
    let body = missing.json();
    assert!(body["message"].as_str().unwrap().starts_with("TF401019"));
    assert_eq!(body["typeKey"], "GitRepositoryNotFoundException");

    // Commits: branch history newest first; $top; pushes extend the history.
    let new_head = "4444444444444444444444444444444444444444";
    let before_push = jiff::Timestamp::now();
    sim.push(ORG, PROJECT, "manifests", "main", new_head);
    let after_push = jiff::Timestamp::now();
    let commits = get(&sim, &format!("{PROJECT}/_apis/git/repositories/manifests/commits?searchCriteria.itemVersion.version=main&api-version=7.1")).await.json();
    let shas: Vec<_> = commits["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["commitId"].as_str().unwrap())
        .collect();
    assert_eq!(shas, vec![new_head, SHA1]);
    let top1 = get(&sim, &format!("{PROJECT}/_apis/git/repositories/manifests/commits?searchCriteria.itemVersion.version=main&$top=1&api-version=7.1")).await.json();
    assert_eq!(top1["count"], 1);
    assert_eq!(top1["value"][0]["commitId"], new_head);
    // Like git, the committer date is the commit's time (here: the push) in whole seconds.
    let committed = top1["value"][0]["committer"]["date"].as_str().unwrap();
    assert_eq!(committed.len(), "2026-11-22T10:00:00Z".len(), "{committed}");
    let committed: jiff::Timestamp = committed.parse().unwrap();
    assert!(committed.as_second() >= before_push.as_second() && committed <= after_push);
    // A commit made earlier than its push keeps its own date, truncated to the second.
    let older = "5555555555555555555555555555555555555555";
    let made: jiff::Timestamp = "2026-11-22T09:30:15.75Z".parse().unwrap();
    sim.push_committed_at(ORG, PROJECT, "manifests", "release", older, made);
    let by_id = get(&sim, &format!("{PROJECT}/_apis/git/repositories/manifests/commits?searchCriteria.itemVersion.version={older}&searchCriteria.itemVersion.versionType=commit&searchCriteria.$top=1&api-version=7.1")).await.json();
    assert_eq!(by_id["value"][0]["commitId"], older);
    assert_eq!(
        by_id["value"][0]["committer"]["date"],
        "2026-11-22T09:30:15Z"
    );
    let refs = get(
        &sim,
        &format!(
            "{PROJECT}/_apis/git/repositories/manifests/refs?filter=heads/main&api-version=7.1"
        ),
    )
    .await
    .json();
    assert_eq!(refs["value"][0]["objectId"], new_head);
    let unknown = get(&sim, &format!("{PROJECT}/_apis/git/repositories/manifests/commits?searchCriteria.itemVersion.version=nope&api-version=7.1")).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn authentication_failures_look_like_the_real_service() {
    let sim = sim().await;
    let path = builds_path("");

    // Without the suppress header: 203 + HTML sign-in page, for missing and for wrong credentials.
    for pat in [None, Some("wrong")] {
        let r = get_with(&sim, &path, pat, false).await;
        assert_eq!(r.status, 203);
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        assert!(r.text.contains("Sign In"));
    }
    // With X-TFS-FedAuthRedirect: Suppress: 401 + WWW-Authenticate + TF400813 JSON.
    let r = get_with(&sim, &path, Some("wrong"), true).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("TF400813"));
    // The secret never shows up in what the simulator sends back or logs.
    assert!(!r.text.contains("wrong"));
    assert!(!format!("{:?}", sim.requests()).contains(PAT));

    // The Basic user name is ignored; a revoked PAT stops working.
    assert_eq!(get_with(&sim, &path, Some(PAT), false).await.status, 200);
    let bearer = http()
        .get(format!("{}/{path}", sim.org_url(ORG)))
        .bearer_auth(PAT)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 200);
    sim.revoke_token(ORG, PAT).unwrap();
    assert_eq!(get_with(&sim, &path, Some(PAT), true).await.status, 401);
    sim.add_token(ORG, PAT);

    // Unknown project → 404 TF200016 in the standard error shape; unknown org → 404.
    let r = get(&sim, "Nope/_apis/build/builds?api-version=7.1").await;
    assert_eq!(r.status, 404);
    let body = r.json();
    assert!(body["message"].as_str().unwrap().starts_with("TF200016"));
    assert_eq!(body["typeKey"], "ProjectDoesNotExistWithNameException");
    let fixture = load_fixture("error-404-project-not-found.json");
    assert_eq!(key_paths(&body), key_paths(&fixture));
    let r = http()
        .get(format!(
            "{}/nobody/{PROJECT}/_apis/build/builds?api-version=7.1",
            sim.url()
        ))
        .basic_auth("", Some(PAT))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let tf400813 = load_fixture("error-401-tf400813.json");
    let r = get_with(&sim, &path, None, true).await;
    assert_eq!(key_paths(&r.json()), key_paths(&tf400813));
}

#[tokio::test]
async fn rate_limiting_sends_429_with_the_documented_headers() {
    let sim = sim().await;
    let path = builds_path("");
    sim.rate_limit_next(2, 7);
    for _ in 0..2 {
        let r = get(&sim, &path).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert!(r.header("x-ratelimit-resource").is_some());
        assert!(r.header("x-ratelimit-delay").is_some());
        assert_eq!(r.header("x-ratelimit-limit"), Some("200"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset > jiff::Timestamp::now().as_second());
        assert!(r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("TF400733"));
    }
    let ok = get(&sim, &path).await;
    assert_eq!(ok.status, 200);
    assert!(ok.header("retry-after").is_none());

    // Before blocking, the service warns on successful responses.
    sim.retry_after_next(1, 3);
    let warned = get(&sim, &path).await;
    assert_eq!(warned.status, 200);
    assert_eq!(warned.header("retry-after"), Some("3"));
    assert!(warned.header("x-ratelimit-remaining").is_some());
    assert!(get(&sim, &path).await.header("retry-after").is_none());
}

#[tokio::test]
async fn injected_faults_and_the_request_log() {
    let sim = sim().await;
    let path = builds_path("");
    sim.fail_next(2, 503);
    assert_eq!(get(&sim, &path).await.status, 503);
    assert_eq!(get(&sim, &path).await.status, 503);
    assert_eq!(get(&sim, &path).await.status, 200);

    sim.error_bom(true);
    sim.fail_next(1, 500);
    let r = get(&sim, &path).await;
    assert_eq!(r.status, 500);
    assert!(
        r.text.starts_with('\u{feff}'),
        "error body starts with a BOM"
    );
    assert!(
        serde_json::from_str::<Value>(&r.text).is_err(),
        "serde_json rejects the BOM"
    );
    let stripped: Value = serde_json::from_str(r.text.trim_start_matches('\u{feff}')).unwrap();
    assert_eq!(stripped["$id"], "1");
    sim.error_bom(false);

    sim.truncate_next(1);
    let r = get(&sim, &path).await;
    assert_eq!(r.status, 200);
    assert!(
        serde_json::from_str::<Value>(&r.text).is_err(),
        "truncated body is not JSON"
    );
    assert!(serde_json::from_str::<Value>(&get(&sim, &path).await.text).is_ok());

    sim.delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(get(&sim, &path).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.delay(Duration::ZERO);

    sim.clear_requests();
    get(&sim, &path).await;
    get(
        &sim,
        &format!("{PROJECT}/_apis/git/repositories/{PROJECT}/refs?filter=heads/&api-version=7.1"),
    )
    .await;
    get(
        &sim,
        &format!(
            "{PROJECT}/_apis/git/repositories/{PROJECT}/refs?filter=heads/main&api-version=7.1"
        ),
    )
    .await;
    assert_eq!(sim.count_endpoint("builds.list"), 1);
    assert_eq!(sim.count_endpoint("git.refs"), 2);
    assert_eq!(sim.count_requests("/_apis/git/"), 2);
    let log = sim.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, format!("/{ORG}/{PROJECT}/_apis/build/builds"));
    assert_eq!(log[0].query.as_deref(), Some("api-version=7.1"));
    assert_eq!(log[0].status, 200);
}

// ----- lockstep's own models ------------------------------------------------------------------

#[tokio::test]
async fn responses_deserialize_with_locksteps_models() {
    use lockstep::ado::{
        Build, BuildResult, BuildStatus, ErrorBody, GitAnnotatedTag, GitCommitRef, GitRef,
        GitRepository, ListResponse,
    };
    let sim = sim().await;
    let done = sim.queue_run(ORG, PROJECT, DEF, "main", SHA1);
    sim.start_run(done);
    sim.complete_run(done, RunResult::PartiallySucceeded);
    let running = sim.queue_run(ORG, PROJECT, DEF, "main", SHA2);
    sim.start_run(running);
    let queued = sim.queue_run(ORG, PROJECT, DEF, "main", SHA2);
    let tag = sim.add_tag(ORG, PROJECT, PROJECT, "flux-sync", SHA1, true);

    let list: ListResponse<Build> = serde_json::from_str(
        &get(&sim, &builds_path("&queryOrder=queueTimeDescending"))
            .await
            .text,
    )
    .unwrap();
    assert_eq!(list.count, Some(3));
    let by_id = |id: i64| list.value.iter().find(|b| b.id == id).unwrap();
    assert_eq!(by_id(done).status, Some(BuildStatus::Completed));
    assert_eq!(by_id(done).result, Some(BuildResult::PartiallySucceeded));
    assert_eq!(by_id(running).status, Some(BuildStatus::InProgress));
    assert_eq!(by_id(queued).status, Some(BuildStatus::NotStarted));
    assert_eq!(by_id(queued).result, None);
    assert!(lockstep::ado::parse_ado_time(by_id(done).finish_time.as_deref().unwrap()).is_some());
    assert_eq!(
        by_id(done).web_url(),
        Some(sim.run(done).unwrap().web_url.as_str())
    );
    assert_eq!(by_id(done).definition_name(), Some("base-ci"));

    let single: Build = serde_json::from_str(
        &get(
            &sim,
            &format!("{PROJECT}/_apis/build/builds/{done}?api-version=7.1"),
        )
        .await
        .text,
    )
    .unwrap();
    assert_eq!(single.source_version.as_deref(), Some(SHA1));

    let refs: ListResponse<GitRef> = serde_json::from_str(&get(&sim, &format!("{PROJECT}/_apis/git/repositories/{PROJECT}/refs?filter=tags/&peelTags=true&api-version=7.1")).await.text).unwrap();
    assert_eq!(refs.value[0].object_id.as_deref(), Some(tag.as_str()));
    assert_eq!(refs.value[0].peeled_object_id.as_deref(), Some(SHA1));
    let annotated: GitAnnotatedTag = serde_json::from_str(
        &get(
            &sim,
            &format!(
                "{PROJECT}/_apis/git/repositories/{PROJECT}/annotatedTags/{tag}?api-version=7.1"
            ),
        )
        .await
        .text,
    )
    .unwrap();
    assert_eq!(annotated.tagged_object.object_id, SHA1);
    let repo: GitRepository = serde_json::from_str(
        &get(
            &sim,
            &format!("{PROJECT}/_apis/git/repositories/{PROJECT}?api-version=7.1"),
        )
        .await
        .text,
    )
    .unwrap();
    assert_eq!(repo.name, PROJECT);
    assert_eq!(repo.default_branch.as_deref(), Some("refs/heads/main"));
    let commits: ListResponse<GitCommitRef> = serde_json::from_str(&get(&sim, &format!("{PROJECT}/_apis/git/repositories/{PROJECT}/commits?searchCriteria.itemVersion.version=main&searchCriteria.$top=1&api-version=7.1")).await.text).unwrap();
    assert_eq!(commits.value[0].commit_id, SHA1);
    let err: ErrorBody = serde_json::from_str(
        &get(&sim, "Nope/_apis/build/builds?api-version=7.1")
            .await
            .text,
    )
    .unwrap();
    assert_eq!(
        err.type_key.as_deref(),
        Some("ProjectDoesNotExistWithNameException")
    );
}

// ----- key sets against the recorded fixtures -------------------------------------------------

fn fixtures_dir() -> PathBuf {
    // The recorded fixtures live in the repository: tests/fixtures/azure-devops.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/azure-devops")
}

fn load_fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every key path in a JSON value (`a.b`, `a[].c`), arrays merged over their elements.
fn key_paths(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.insert(path.clone());
                    walk(child, &path, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

fn top_keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn fixture_build(status: &str) -> Value {
    let list = load_fixture("builds-list-mixed-results.json");
    list["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["status"] == status)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn key_sets_match_the_fixtures() {
    let sim = sim().await;
    let done = sim.queue_run(ORG, PROJECT, DEF, "main", SHA1);
    sim.start_run(done);
    sim.complete_run(done, RunResult::Succeeded);
    let queued = sim.queue_run(ORG, PROJECT, DEF, "main", SHA2);
    let running = sim.queue_run(ORG, PROJECT, DEF, "main", SHA2);
    sim.start_run(running);

    let get_build = |id: i64| {
        let sim = &sim;
        async move {
            get(
                sim,
                &format!("{PROJECT}/_apis/build/builds/{id}?api-version=7.1"),
            )
            .await
            .json()
        }
    };
    // Whole-tree key sets: completed, notStarted and inProgress builds match their fixture elements.
    assert_eq!(
        key_paths(&get_build(done).await),
        key_paths(&fixture_build("completed"))
    );
    assert_eq!(
        key_paths(&get_build(queued).await),
        key_paths(&fixture_build("notStarted"))
    );
    assert_eq!(
        key_paths(&get_build(running).await),
        key_paths(&fixture_build("inProgress"))
    );
    let list = get(&sim, &builds_path("")).await.json();
    assert_eq!(
        top_keys(&list),
        top_keys(&load_fixture("builds-list-mixed-results.json"))
    );

    let refs = get(
        &sim,
        &format!(
            "{PROJECT}/_apis/git/repositories/{PROJECT}/refs?filter=heads/main&api-version=7.1"
        ),
    )
    .await
    .json();
    assert_eq!(
        key_paths(&refs),
        key_paths(&load_fixture("refs-filter-heads-branch.json"))
    );
    let repo = get(
        &sim,
        &format!("{PROJECT}/_apis/git/repositories/{PROJECT}?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(
        key_paths(&repo),
        key_paths(&load_fixture("git-repository-by-name.json"))
    );
    let tag = sim.add_tag(ORG, PROJECT, PROJECT, "flux-sync", SHA1, true);
    let annotated = get(
        &sim,
        &format!("{PROJECT}/_apis/git/repositories/{PROJECT}/annotatedtags/{tag}?api-version=7.1"),
    )
    .await
    .json();
    assert_eq!(
        key_paths(&annotated),
        key_paths(&load_fixture("git-annotated-tag-flux-sync.json"))
    );
    let commits = get(
        &sim,
        &format!("{PROJECT}/_apis/git/repositories/{PROJECT}/commits?api-version=7.1"),
    )
    .await
    .json();
    // The fixture's commentTruncated appears only on long comments; the simulator's are short.
    let mut expected = key_paths(&load_fixture("commits-by-branch.json"));
    expected.remove("value[].commentTruncated");
    assert_eq!(key_paths(&commits), expected);

    let runs = get(
        &sim,
        &format!("{PROJECT}/_apis/pipelines/{DEF}/runs?api-version=7.1"),
    )
    .await
    .json();
    let fixture_runs = load_fixture("pipeline-runs-list.json");
    let fixture_run = |state: &str| {
        fixture_runs["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["state"] == state)
            .unwrap()
            .clone()
    };
    let sim_run = |id: i64| {
        runs["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        key_paths(&sim_run(done)),
        key_paths(&fixture_run("completed"))
    );
    assert_eq!(
        key_paths(&sim_run(running)),
        key_paths(&fixture_run("inProgress"))
    );

    // Timeline: top-level keys and the record shape of the real timeline.
    let timeline = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{done}/Timeline?api-version=7.1"),
    )
    .await
    .json();
    let fixture_timeline = load_fixture("build-timeline.json");
    assert_eq!(top_keys(&timeline), top_keys(&fixture_timeline));
    let stage_record = |t: &Value| {
        t["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Stage")
            .unwrap()
            .clone()
    };
    assert_eq!(
        top_keys(&stage_record(&timeline)),
        top_keys(&stage_record(&fixture_timeline))
    );
}

#[tokio::test]
async fn hook_payload_key_sets_match_the_fixtures() {
    let sim = sim().await;
    let done = sim.queue_run(ORG, PROJECT, DEF, "main", SHA1);
    sim.start_run(done);
    sim.complete_run(done, RunResult::Failed);
    let running = sim.queue_run(ORG, PROJECT, DEF, "main", SHA2);
    sim.start_run(running);
    let push = sim.push(ORG, PROJECT, PROJECT, "main", SHA3);
    let to = HookDelivery::to("http://127.0.0.1:9/unused");

    let check =
        |event: HookEvent, fixture: &str, extra_envelope: &[&str], extra_resource: &[&str]| {
            let payload = sim.hook_payload(&event, &to).unwrap();
            let fixture = load_fixture(fixture);
            let expected_envelope: BTreeSet<String> = top_keys(&fixture)
                .into_iter()
                .chain(set(extra_envelope))
                .collect();
            assert_eq!(
                top_keys(&payload),
                expected_envelope,
                "envelope of {event:?}"
            );
            let expected_resource: BTreeSet<String> = top_keys(&fixture["resource"])
                .into_iter()
                .chain(set(extra_resource))
                .collect();
            assert_eq!(
                top_keys(&payload["resource"]),
                expected_resource,
                "resource of {event:?}"
            );
            assert_eq!(payload["eventType"], fixture["eventType"]);
            assert_eq!(payload["publisherId"], fixture["publisherId"]);
            assert_eq!(payload["resourceVersion"], fixture["resourceVersion"]);
            assert_eq!(
                key_paths(&payload["resourceContainers"]),
                key_paths(&fixture["resourceContainers"])
            );
            assert_eq!(
                payload["resourceContainers"]["project"]["baseUrl"],
                format!("{}/", sim.org_url(ORG))
            );
            payload
        };

    // Deliberate difference: the docs sample of build.complete 2.0 has no `keepForever`; the simulator
    // sends the same Build object as Builds - Get, which has it (builds-list fixtures).
    let v2 = check(
        HookEvent::BuildComplete {
            run_id: done,
            resource_version: BuildCompleteVersion::V2,
        },
        "hook-build-complete-v2.json",
        &[],
        &["keepForever"],
    );
    assert_eq!(v2["resource"]["result"], "failed");
    // Deliberate difference: the 1.0 fixture came through the Storage Queue consumer, which adds no
    // subscriptionId/notificationId; Web Hooks deliveries carry them.
    let v1 = check(
        HookEvent::BuildComplete {
            run_id: done,
            resource_version: BuildCompleteVersion::V1,
        },
        "hook-build-complete-v1.json",
        &["subscriptionId", "notificationId"],
        &[],
    );
    assert_eq!(
        v1["resource"]["status"], "failed",
        "1.0 carries the result in status"
    );
    assert_eq!(
        v1["resource"]["sourceGetVersion"],
        format!("LG:refs/heads/main:{SHA1}")
    );
    assert!(v1["resource"].get("result").is_none());

    let in_progress = check(
        HookEvent::RunStateChanged { run_id: running },
        "hook-run-state-changed-inprogress.json",
        &[],
        &[],
    );
    assert_eq!(in_progress["resource"]["run"]["state"], "inProgress");
    assert!(in_progress["resource"]["run"].get("result").is_none());
    assert!(in_progress["resource"]["run"].get("finishedDate").is_none());
    // Deliberate difference: the constructed completed-run fixture left out stages/requestedBy/
    // requestedFor/queue; real 2025 payloads (the in-progress fixture) have them, so the simulator
    // always sends them.
    let completed = check(
        HookEvent::RunStateChanged { run_id: done },
        "hook-run-state-changed-completed-failed.json",
        &[],
        &["stages", "requestedBy", "requestedFor", "queue"],
    );
    let fixture_run =
        load_fixture("hook-run-state-changed-completed-failed.json")["resource"]["run"].clone();
    assert_eq!(
        key_paths(&completed["resource"]["run"]),
        key_paths(&fixture_run)
    );
    assert_eq!(completed["resource"]["run"]["result"], "failed");

    let stage = check(
        HookEvent::StageStateChanged { run_id: done },
        "hook-stage-state-changed-completed.json",
        &[],
        &[],
    );
    let fixture_stage =
        load_fixture("hook-stage-state-changed-completed.json")["resource"]["stage"].clone();
    assert_eq!(
        top_keys(&stage["resource"]["stage"]),
        top_keys(&fixture_stage)
    );
    // The stage id in the event equals the timeline's Stage record id, as on the real service.
    let timeline = get(
        &sim,
        &format!("{PROJECT}/_apis/build/builds/{done}/Timeline?api-version=7.1"),
    )
    .await
    .json();
    let stage_record = timeline["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Stage")
        .unwrap()
        .clone();
    assert_eq!(stage["resource"]["stage"]["id"], stage_record["id"]);

    let job = check(
        HookEvent::JobStateChanged { run_id: done },
        "hook-job-state-changed-completed.json",
        &[],
        &[],
    );
    let fixture_job =
        load_fixture("hook-job-state-changed-completed.json")["resource"]["job"].clone();
    assert_eq!(top_keys(&job["resource"]["job"]), top_keys(&fixture_job));

    let push_payload = check(
        HookEvent::GitPush { push_id: push },
        "hook-git-push.json",
        &[],
        &[],
    );
    assert_eq!(
        push_payload["resource"]["refUpdates"][0]["oldObjectId"],
        SHA1
    );
    assert_eq!(
        push_payload["resource"]["refUpdates"][0]["newObjectId"],
        SHA3
    );
    assert_eq!(
        key_paths(&push_payload["resource"]),
        key_paths(&load_fixture("hook-git-push.json")["resource"])
    );

    // build.complete for an unfinished run is a test mistake, reported as such.
    assert!(sim
        .hook_payload(
            &HookEvent::BuildComplete {
                run_id: running,
                resource_version: BuildCompleteVersion::V2
            },
            &to
        )
        .is_err());
}

// ----- hook delivery -----------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>>);

async fn receiver(status: u16) -> (String, Received) {
    let received = Received::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hooks/azure-devops",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                store
                    .0
                    .lock()
                    .unwrap()
                    .push((headers, serde_json::from_str(&body).unwrap()));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/azure-devops",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test]
async fn hooks_are_delivered_with_credentials_headers_and_fresh_or_repeated_ids() {
    let sim = sim().await;
    let (url, received) = receiver(202).await;
    let run = sim.queue_run(ORG, PROJECT, DEF, "main", SHA1);
    sim.start_run(run);
    sim.complete_run(run, RunResult::Succeeded);
    let delivery = HookDelivery::to(&url)
        .basic_auth("ado", "hook-secret")
        .header("X-Lockstep-Token", "token-123")
        .subscription_id("4f6e6328-0251-4814-a009-c01dfa368e3f");

    let first = sim
        .deliver_hook(
            HookEvent::BuildComplete {
                run_id: run,
                resource_version: BuildCompleteVersion::V2,
            },
            &delivery,
        )
        .await
        .unwrap();
    assert_eq!(first.status, 202);
    let second = sim
        .deliver_hook(HookEvent::RunStateChanged { run_id: run }, &delivery)
        .await
        .unwrap();
    assert_ne!(first.event_id, second.event_id, "fresh id per event");
    let duplicate = sim
        .deliver_hook(
            HookEvent::BuildComplete {
                run_id: run,
                resource_version: BuildCompleteVersion::V2,
            },
            &delivery.clone().event_id(first.event_id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(duplicate.event_id, first.event_id);

    let got = received.0.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    let (headers, body) = &got[0];
    let expected_auth = format!("Basic {}", base64_encode("ado:hook-secret"));
    assert_eq!(headers["authorization"].to_str().unwrap(), expected_auth);
    assert_eq!(headers["x-lockstep-token"], "token-123");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(body["eventType"], "build.complete");
    assert_eq!(body["id"], first.event_id.as_str());
    assert_eq!(
        body["subscriptionId"],
        "4f6e6328-0251-4814-a009-c01dfa368e3f"
    );
    assert_eq!(body["resource"]["id"], run);
    assert_eq!(body["resource"]["result"], "succeeded");
    assert_eq!(
        body["message"]["text"],
        format!("Build {} succeeded", sim.run(run).unwrap().build_number)
    );
    let notification_ids: Vec<_> = got
        .iter()
        .map(|(_, b)| b["notificationId"].as_i64().unwrap())
        .collect();
    assert_eq!(notification_ids, vec![1, 2, 3]);
    assert_eq!(got[2].1["id"], got[0].1["id"]);

    // The receiver's status comes back as is; messages can be switched off.
    let (url_500, _) = receiver(500).await;
    let outcome = sim
        .deliver_hook(
            HookEvent::JobStateChanged { run_id: run },
            &HookDelivery::to(url_500).without_messages(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.status, 500);
    let legacy = sim
        .hook_payload(
            &HookEvent::RunStateChanged { run_id: run },
            &HookDelivery::to(&url).base_url("https://contoso.visualstudio.com/"),
        )
        .unwrap();
    assert_eq!(
        legacy["resourceContainers"]["collection"]["baseUrl"],
        "https://contoso.visualstudio.com/"
    );

    // A clone shares the simulator; the server lives until the last clone is dropped.
    let clone = sim.clone();
    drop(sim);
    assert_eq!(get(&clone, &builds_path("")).await.status, 200);
    let sim = clone;
    let payload = sim.hook_payload(&HookEvent::GitPush { push_id: 999 }, &delivery);
    assert!(payload.is_err(), "unknown push");
}

fn base64_encode(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ----- control API -------------------------------------------------------------------------------

async fn control(
    sim: &AdoSimulator,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = http()
        .request(method, format!("{}/_sim{path}", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn the_control_api_drives_everything_over_http() {
    use reqwest::Method;
    let sim = AdoSimulator::start().await.unwrap();
    let post = Method::POST;
    assert_eq!(
        control(
            &sim,
            post.clone(),
            "/orgs/fabrikam/projects",
            json!({"name": "Web"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        control(
            &sim,
            post.clone(),
            "/orgs/fabrikam/projects/Web/definitions",
            json!({"id": 5, "name": "web-ci"})
        )
        .await
        .0,
        200
    );
    let (status, repo) = control(
        &sim,
        post.clone(),
        "/orgs/fabrikam/projects/Web/repositories",
        json!({"name": "Web", "branches": {"main": SHA1}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(repo["id"].as_str().unwrap().len(), 36);
    assert_eq!(
        control(
            &sim,
            post.clone(),
            "/tokens",
            json!({"org": "fabrikam", "token": "t0k"})
        )
        .await
        .0,
        200
    );

    // Commit defaults to the branch head.
    let (status, run) = control(
        &sim,
        post.clone(),
        "/runs",
        json!({"org": "fabrikam", "project": "Web", "definitionId": 5, "branch": "main"}),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    let id = run["id"].as_i64().unwrap();
    assert_eq!(run["sourceVersion"], SHA1);
    assert_eq!(run["status"], "notStarted");
    assert_eq!(
        control(
            &sim,
            post.clone(),
            &format!("/runs/fabrikam/{id}/start"),
            json!({})
        )
        .await
        .1["status"],
        "inProgress"
    );
    let (status, done) = control(
        &sim,
        post.clone(),
        &format!("/runs/fabrikam/{id}/complete"),
        json!({"result": "succeeded"}),
    )
    .await;
    assert_eq!((status, done["result"].as_str()), (200, Some("succeeded")));
    let (status, err) = control(
        &sim,
        post.clone(),
        &format!("/runs/fabrikam/{id}/complete"),
        json!({"result": "succeeded"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("already completed"));
    assert_eq!(
        control(&sim, post.clone(), "/runs/fabrikam/9999/start", json!({}))
            .await
            .0,
        404
    );
    assert_eq!(
        control(
            &sim,
            post.clone(),
            &format!("/runs/other/{id}/start"),
            json!({})
        )
        .await
        .0,
        404
    );
    assert_eq!(
        control(
            &sim,
            post.clone(),
            "/runs/fabrikam/1/complete",
            json!({"result": "great"})
        )
        .await
        .0,
        400
    );

    let (status, pushed) = control(&sim, post.clone(), "/push", json!({"org": "fabrikam", "project": "Web", "repository": "Web", "branch": "main", "commit": SHA2})).await;
    assert_eq!(status, 200);
    let push_id = pushed["pushId"].as_i64().unwrap();

    // The REST side sees it all, with the token registered over HTTP.
    let builds: Value = http()
        .get(format!(
            "{}/Web/_apis/build/builds?api-version=7.1",
            sim.org_url("fabrikam")
        ))
        .basic_auth("", Some("t0k"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(builds["value"][0]["result"], "succeeded");

    assert_eq!(
        control(
            &sim,
            post.clone(),
            "/faults",
            json!({"rateLimitNext": {"count": 1, "retryAfter": 9}})
        )
        .await
        .0,
        200
    );
    let limited = http()
        .get(format!(
            "{}/Web/_apis/build/builds?api-version=7.1",
            sim.org_url("fabrikam")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(limited.headers()["retry-after"], "9");
    let (_, log) = control(&sim, Method::GET, "/requests", json!(null)).await;
    assert_eq!(log["count"], 2);
    assert_eq!(log["value"][1]["status"], 429);
    assert_eq!(log["value"][1]["endpoint"], "builds.list");
    assert_eq!(
        control(&sim, Method::DELETE, "/requests", json!(null))
            .await
            .0,
        200
    );
    assert!(sim.requests().is_empty());

    let (url, received) = receiver(200).await;
    let (status, delivered) = control(
        &sim,
        post.clone(),
        "/hooks/deliver",
        json!({"event": "gitPush", "pushId": push_id, "url": url, "username": "u", "password": "p", "headers": {"X-Lockstep-Token": "abc"}}),
    )
    .await;
    assert_eq!(status, 200, "{delivered}");
    assert_eq!(delivered["status"], 200);
    let (status, delivered) = control(
        &sim,
        post.clone(),
        "/hooks/deliver",
        json!({"event": "buildComplete", "runId": id, "resourceVersion": "1.0", "url": url}),
    )
    .await;
    assert_eq!((status, delivered["status"].as_i64()), (200, Some(200)));
    let got = received.0.lock().unwrap().clone();
    assert_eq!(got[0].1["eventType"], "git.push");
    assert_eq!(got[0].0["x-lockstep-token"], "abc");
    assert_eq!(got[1].1["resourceVersion"], "1.0");
    let (status, _) = control(
        &sim,
        post,
        "/hooks/deliver",
        json!({"event": "gitPush", "pushId": 999, "url": url}),
    )
    .await;
    assert_eq!(status, 404);
}

// ----- Definitions - Get ------------------------------------------------------------------------

#[tokio::test]
async fn definitions_get_tells_a_missing_definition_from_one_without_runs() {
    let sim = sim().await;
    let project_id = sim.project_id(ORG, PROJECT).unwrap();

    // Definition 7 exists but has never run: Builds - List is empty, Definitions - Get is 200.
    let builds = get(&sim, &builds_path("&definitions=7")).await.json();
    assert_eq!(builds["count"], 0);
    let def = get(
        &sim,
        &format!("{PROJECT}/_apis/build/definitions/7?api-version=7.1"),
    )
    .await;
    assert_eq!(def.status, 200);
    let body = def.json();
    assert_eq!(body["id"], 7);
    assert_eq!(body["name"], "other-ci");
    assert_eq!(body["project"]["id"], project_id.as_str());
    assert_eq!(body["repository"]["name"], PROJECT);
    assert_eq!(body["repository"]["defaultBranch"], "refs/heads/main");
    assert!(is_ado_time(body["createdDate"].as_str().unwrap()));
    assert_eq!(
        key_paths(&body),
        key_paths(&load_fixture("build-definition.json")),
        "Definitions - Get has the keys of the recorded response"
    );

    // A definition id the project does not have: 404 DefinitionNotFoundException, standard error body.
    let missing = get(
        &sim,
        &format!("{PROJECT}/_apis/build/Definitions/4242?api-version=7.1"),
    )
    .await;
    assert_eq!(missing.status, 404);
    let err = missing.json();
    assert_eq!(err["typeKey"], "DefinitionNotFoundException");
    assert!(err["message"].as_str().unwrap().contains("4242"));
    assert_eq!(
        top_keys(&err),
        top_keys(&load_fixture("error-404-project-not-found.json"))
    );
    // A name is not an id.
    assert_eq!(
        get(
            &sim,
            &format!("{PROJECT}/_apis/build/definitions/base-ci?api-version=7.1")
        )
        .await
        .status,
        404
    );

    // A missing project is TF200016, as for every project-scoped endpoint.
    let no_project = get(&sim, "Nope/_apis/build/definitions/42?api-version=7.1").await;
    assert_eq!(no_project.status, 404);
    let err = no_project.json();
    assert_eq!(err["typeKey"], "ProjectDoesNotExistWithNameException");
    assert!(err["message"].as_str().unwrap().starts_with("TF200016"));

    // api-version is still required, and the request log names the endpoint.
    assert_eq!(
        get(&sim, &format!("{PROJECT}/_apis/build/definitions/42"))
            .await
            .status,
        400
    );
    assert_eq!(sim.count_endpoint("build.definitions.get"), 5);
}

// ----- rate-limit forms, sign-in pages, oversized answers, chaos -------------------------------

#[tokio::test]
async fn rate_limits_say_when_to_retry_as_seconds_http_date_or_reset_only() {
    let sim = sim().await;
    let path = builds_path("");

    sim.rate_limit_next_with(1, RetryAfter::http_date(120));
    let before = jiff::Timestamp::now().as_second();
    let r = get(&sim, &path).await;
    assert_eq!(r.status, 429);
    let date = r.header("retry-after").unwrap().to_string();
    // IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`, 29 characters.
    assert_eq!(date.len(), 29, "{date}");
    assert!(date.ends_with(" GMT"));
    let parsed = jiff::fmt::rfc2822::parse(&date)
        .unwrap()
        .timestamp()
        .as_second();
    assert!(
        (before + 119..=before + 121).contains(&parsed),
        "{date} is about 120 s from now"
    );
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("TF400733"));

    sim.rate_limit_next_with(1, RetryAfter::reset_only(45));
    let before = jiff::Timestamp::now().as_second();
    let r = get(&sim, &path).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_none(), "only X-RateLimit-Reset");
    assert!(r.header("x-ratelimit-delay").is_none());
    let reset: i64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(
        (before + 44..=before + 46).contains(&reset),
        "epoch seconds, now + 45"
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));

    sim.rate_limit_next_with(1, RetryAfter::seconds(9));
    assert_eq!(get(&sim, &path).await.header("retry-after"), Some("9"));
    assert_eq!(get(&sim, &path).await.status, 200);
}

#[tokio::test]
async fn sign_in_pages_and_oversized_answers_on_demand() {
    let sim = sim().await;
    let path = builds_path("");

    // A 203 HTML page although the PAT is valid and the redirect is suppressed.
    sim.sign_in_page_next(1);
    let r = get(&sim, &path).await;
    assert_eq!(r.status, 203);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text.contains("Sign In"));
    assert_eq!(get(&sim, &path).await.status, 200);

    // A chunked 3 MiB answer that is still valid JSON with the real content.
    sim.queue_run(ORG, PROJECT, DEF, "main", SHA1);
    sim.oversize_next(1, 3, false);
    let r = http()
        .get(format!("{}/{}", sim.org_url(ORG), path))
        .basic_auth("", Some(PAT))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.content_length().is_none(), "no Content-Length: chunked");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(bytes.len(), 3 * 1024 * 1024);
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["count"], 1);
    assert!(body["simulatorPadding"].as_str().unwrap().len() > 3_000_000);

    // With Content-Length declared up front.
    sim.oversize_next(1, 2, true);
    let r = http()
        .get(format!("{}/{}", sim.org_url(ORG), path))
        .basic_auth("", Some(PAT))
        .send()
        .await
        .unwrap();
    assert_eq!(r.content_length(), Some(2 * 1024 * 1024));
    assert_eq!(r.bytes().await.unwrap().len(), 2 * 1024 * 1024);
    assert!(
        get(&sim, &path).await.text.len() < 10_000,
        "one answer only"
    );

    // Error answers are never padded by the counted fault.
    sim.oversize_next(1, 2, false);
    assert!(
        get(&sim, "Nope/_apis/build/builds?api-version=7.1")
            .await
            .text
            .len()
            < 10_000
    );
}

#[tokio::test]
async fn chaos_draws_seeded_faults_and_stops_when_cleared() {
    let sim = sim().await;
    let path = builds_path("");
    let all = vec![
        ChaosFault::Status { status: 503 },
        ChaosFault::RateLimit(RetryAfter::seconds(1)),
        ChaosFault::RateLimit(RetryAfter::http_date(1)),
        ChaosFault::RateLimit(RetryAfter::reset_only(1)),
        ChaosFault::SignInPage,
        ChaosFault::Truncate,
        ChaosFault::Oversize { mib: 1 },
    ];
    let run = |seed: u64| {
        let sim = sim.clone();
        let all = all.clone();
        let path = path.clone();
        async move {
            sim.chaos(ChaosConfig {
                seed,
                rate: 0.5,
                faults: all,
                max_faults: None,
            })
            .unwrap();
            let mut seen = Vec::new();
            // One client for all 200 requests: building one per request costs ~100 ms in debug.
            let client = http();
            let url = format!("{}/{path}", sim.org_url(ORG));
            for _ in 0..200 {
                let r = client
                    .get(&url)
                    .basic_auth("", Some(PAT))
                    .header("X-TFS-FedAuthRedirect", "Suppress")
                    .send()
                    .await
                    .unwrap();
                let r = Resp {
                    status: r.status().as_u16(),
                    headers: r.headers().clone(),
                    text: String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned(),
                };
                let ok_json = r.status == 200
                    && serde_json::from_str::<Value>(&r.text)
                        .is_ok_and(|v| v.get("simulatorPadding").is_none());
                seen.push((r.status, ok_json));
            }
            sim.clear_faults();
            (seen, sim.chaos_counts())
        }
    };
    let (first, counts) = run(11).await;
    let (again, counts_again) = run(11).await;
    assert_eq!(first, again, "the same seed gives the same faults");
    assert_eq!(counts, counts_again);
    let injected: u64 = counts.values().sum();
    assert!(
        (60..=140).contains(&injected),
        "about half of 200: {counts:?}"
    );
    for kind in [
        "status.503",
        "rateLimit.seconds",
        "rateLimit.httpDate",
        "rateLimit.resetOnly",
        "signInPage",
        "truncate",
        "oversize",
    ] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) > 0,
            "{kind} drawn: {counts:?}"
        );
    }
    let clean = first.iter().filter(|(_, ok)| *ok).count() as u64;
    assert_eq!(
        clean,
        200 - injected,
        "every request without a fault is a clean answer"
    );

    // Cleared: no faults at all any more, counts kept.
    for _ in 0..20 {
        assert_eq!(get(&sim, &path).await.status, 200);
    }
    assert_eq!(sim.chaos_counts(), counts_again);

    // Bounded by max_faults.
    sim.chaos(ChaosConfig {
        seed: 5,
        rate: 1.0,
        faults: vec![ChaosFault::Status { status: 500 }],
        max_faults: Some(3),
    })
    .unwrap();
    let statuses: Vec<u16> = futures_statuses(&sim, &path, 5).await;
    assert_eq!(statuses, vec![500, 500, 500, 200, 200]);
    assert!(sim
        .chaos(ChaosConfig {
            seed: 1,
            rate: 2.0,
            faults: vec![ChaosFault::Truncate],
            max_faults: None
        })
        .is_err());
}

async fn futures_statuses(sim: &AdoSimulator, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(sim, path).await.status);
    }
    out
}

#[tokio::test]
async fn the_control_api_sets_the_new_faults() {
    use reqwest::Method;
    let sim = sim().await;
    let path = builds_path("");
    let (status, _) = control(
        &sim,
        Method::POST,
        "/faults",
        json!({"rateLimitNext": {"count": 1, "retryAfter": 30, "form": "httpDate"}}),
    )
    .await;
    assert_eq!(status, 200);
    let r = get(&sim, &path).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().ends_with(" GMT"));

    control(
        &sim,
        Method::POST,
        "/faults",
        json!({"rateLimitNext": {"count": 1, "retryAfter": 30, "form": "resetOnly"}}),
    )
    .await;
    let r = get(&sim, &path).await;
    assert!(r.header("retry-after").is_none());
    assert!(r.header("x-ratelimit-reset").is_some());

    control(&sim, Method::POST, "/faults", json!({"signInPageNext": 1})).await;
    assert_eq!(get(&sim, &path).await.status, 203);

    control(
        &sim,
        Method::POST,
        "/faults",
        json!({"oversizeNext": {"count": 1, "mib": 2, "contentLength": true}}),
    )
    .await;
    assert_eq!(get(&sim, &path).await.text.len(), 2 * 1024 * 1024);

    // A bad chaos set is refused and changes nothing.
    let (status, body) = control(
        &sim,
        Method::POST,
        "/faults",
        json!({"chaos": {"seed": 1, "rate": 0.5, "faults": []}, "signInPageNext": 1}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(get(&sim, &path).await.status, 200);

    let (status, _) = control(
        &sim,
        Method::POST,
        "/faults",
        json!({"chaos": {"seed": 2, "rate": 1.0, "maxFaults": 2,
                         "faults": [{"kind": "status", "status": 502}]}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(get(&sim, &path).await.status, 502);
    let (_, counts) = control(&sim, Method::GET, "/faults/chaos", json!({})).await;
    assert_eq!(counts["counts"]["status.502"], 1);
    let (_, counts) = control(&sim, Method::DELETE, "/faults/chaos", json!({})).await;
    assert_eq!(counts["counts"]["status.502"], 1);
    assert_eq!(
        get(&sim, &path).await.status,
        200,
        "stopped before max_faults"
    );
}

// ----- service-hook subscriptions ---------------------------------------------------------------

use lockstep_testkit::ado::{HookThresholds, SubscriptionStatus};

async fn rest(
    sim: &AdoSimulator,
    method: reqwest::Method,
    path_and_query: &str,
    pat: &str,
    body: Option<&Value>,
) -> Resp {
    let mut req = http()
        .request(method, format!("{}/{}", sim.org_url(ORG), path_and_query))
        .basic_auth("", Some(pat))
        .header("X-TFS-FedAuthRedirect", "Suppress");
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap(),
    }
}

const SUBS: &str = "_apis/hooks/subscriptions";

/// The fixture's Create body, pointed at this simulator's project and `url`.
fn create_body(sim: &AdoSimulator, url: &str) -> Value {
    let mut body = load_fixture("hooks-subscription-create-request.json");
    body["publisherInputs"]["projectId"] = json!(sim.project_id(ORG, PROJECT).unwrap());
    body["publisherInputs"]["definitionName"] = json!("base-ci");
    body["consumerInputs"]["url"] = json!(url);
    body
}

fn list_fixture_element(id: &str) -> Value {
    load_fixture("hooks-subscriptions-list.json")["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn subscriptions_create_list_get_replace_delete_in_the_documented_shapes() {
    use reqwest::Method;
    let sim = sim().await;
    let project_id = sim.project_id(ORG, PROJECT).unwrap();
    let mut body = create_body(&sim, "https://hooks.example.com/azure-devops");
    body["consumerInputs"]["basicAuthUsername"] = json!("ado");
    body["consumerInputs"]["basicAuthPassword"] = json!("hook-secret");

    let created = rest(
        &sim,
        Method::POST,
        &format!("{SUBS}?api-version=7.1"),
        PAT,
        Some(&body),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let sub = created.json();
    let id = sub["id"].as_str().unwrap().to_string();
    let fixture = load_fixture("hooks-subscription-create-response.json");
    assert_eq!(
        top_keys(&sub),
        top_keys(&fixture),
        "Create answers the documented keys"
    );
    assert_eq!(
        top_keys(&sub["publisherInputs"]),
        top_keys(&fixture["publisherInputs"]),
        "hostId and tfsSubscriptionId are added"
    );
    assert_eq!(sub["publisherInputs"]["projectId"], project_id.as_str());
    assert_eq!(sub["eventType"], "build.complete");
    assert_eq!(sub["resourceVersion"], "1.0-preview.1");
    assert_eq!(sub["eventDescription"], "Build base-ci, status Failed");
    assert_eq!(sub["actionDescription"], "To host hooks.example.com");
    assert_eq!(
        sub["url"],
        format!("{}/{SUBS}/{id}", sim.org_url(ORG)).as_str()
    );
    assert_eq!(sub["consumerInputs"]["basicAuthPassword"], "********");
    assert_eq!(sub["consumerInputs"]["basicAuthUsername"], "ado");
    assert!(
        sub.get("status").is_none(),
        "enabled subscriptions carry no status"
    );
    assert_eq!(
        sim.subscription(ORG, &id).unwrap().consumer_inputs["basicAuthPassword"],
        "hook-secret"
    );

    // A git.push subscription too, then List with and without filters.
    let push = json!({
        "publisherId": "tfs", "eventType": "git.push", "resourceVersion": "1.0",
        "consumerId": "webHooks", "consumerActionId": "httpRequest",
        "publisherInputs": {"projectId": project_id, "repository": "r", "branch": "main"},
        "consumerInputs": {"url": "https://hooks.example.com/azure-devops"}
    });
    let push_id = sim.add_subscription(ORG, &push).unwrap();
    let all = rest(
        &sim,
        Method::GET,
        &format!("{SUBS}?api-version=7.1"),
        PAT,
        None,
    )
    .await
    .json();
    assert_eq!(all["count"], 2);
    let only_push = rest(
        &sim,
        Method::GET,
        &format!("{SUBS}?eventType=git.push&api-version=7.1"),
        PAT,
        None,
    )
    .await
    .json();
    assert_eq!(only_push["count"], 1);
    assert_eq!(only_push["value"][0]["id"], push_id.as_str());
    assert_eq!(
        top_keys(&only_push["value"][0]),
        top_keys(&list_fixture_element(
            "ef9a3751-f8eb-4105-98cc-e29008281695"
        )),
        "same keys as the documented enabled git.push element"
    );

    // States show as in the documented List: onProbation with probationRetries, disabledBySystem.
    sim.set_subscription_status(ORG, &id, SubscriptionStatus::OnProbation, 6)
        .unwrap();
    let got = rest(
        &sim,
        Method::GET,
        &format!("{SUBS}/{id}?api-version=7.1"),
        PAT,
        None,
    )
    .await
    .json();
    assert_eq!(got["status"], "onProbation");
    assert_eq!(got["probationRetries"], 6);
    let documented = list_fixture_element("be80ffe3-7463-4961-b5fd-f3b075a720c4");
    assert_eq!(top_keys(&got), top_keys(&documented));
    sim.set_subscription_status(ORG, &push_id, SubscriptionStatus::DisabledBySystem, 0)
        .unwrap();
    let got = rest(
        &sim,
        Method::GET,
        &format!("{SUBS}/{push_id}?api-version=7.1"),
        PAT,
        None,
    )
    .await
    .json();
    assert_eq!(got["status"], "disabledBySystem");
    assert_eq!(
        top_keys(&got),
        top_keys(&list_fixture_element(
            "a3c0ef7e-610c-4321-9a05-6d74e4930c7d"
        ))
    );

    // Replace: read-modify-write keeps the masked secret; `status: enabled` re-enables.
    let mut replaced = got.clone();
    replaced["consumerInputs"]["url"] = json!("https://hooks.example.com/new");
    replaced["status"] = json!("enabled");
    let r = rest(
        &sim,
        Method::PUT,
        &format!("{SUBS}/{push_id}?api-version=7.1"),
        PAT,
        Some(&replaced),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = r.json();
    assert!(r.get("status").is_none());
    assert_eq!(r["consumerInputs"]["url"], "https://hooks.example.com/new");
    assert_eq!(r["createdDate"], got["createdDate"]);
    let mut keep_secret = sub.clone();
    keep_secret["consumerInputs"]["url"] = json!("https://hooks.example.com/other");
    rest(
        &sim,
        Method::PUT,
        &format!("{SUBS}/{id}?api-version=7.1"),
        PAT,
        Some(&keep_secret),
    )
    .await;
    let info = sim.subscription(ORG, &id).unwrap();
    assert_eq!(info.consumer_inputs["basicAuthPassword"], "hook-secret");
    assert_eq!(
        info.status,
        SubscriptionStatus::OnProbation,
        "no status: state kept"
    );

    // Bad input is a 400 with the ADO error shape and creates nothing.
    let mut bad = create_body(&sim, "not a url");
    let r = rest(
        &sim,
        Method::POST,
        &format!("{SUBS}?api-version=7.1"),
        PAT,
        Some(&bad),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        top_keys(&r.json()),
        top_keys(&load_fixture("error-404-project-not-found.json"))
    );
    bad["consumerInputs"]["url"] = json!("https://x.example.com");
    bad["publisherInputs"]["projectId"] = json!("00000000-0000-0000-0000-000000000000");
    assert_eq!(
        rest(
            &sim,
            Method::POST,
            &format!("{SUBS}?api-version=7.1"),
            PAT,
            Some(&bad)
        )
        .await
        .status,
        400
    );
    assert_eq!(sim.subscriptions(ORG).len(), 2);

    // Delete: 204, then 404 SubscriptionNotFoundException.
    let r = rest(
        &sim,
        Method::DELETE,
        &format!("{SUBS}/{id}?api-version=7.1"),
        PAT,
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = rest(
        &sim,
        Method::GET,
        &format!("{SUBS}/{id}?api-version=7.1"),
        PAT,
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["typeKey"], "SubscriptionNotFoundException");

    // Authentication and api-version as everywhere; the request log names each operation.
    let r = get_with(
        &sim,
        &format!("{SUBS}?api-version=7.1"),
        Some("wrong"),
        false,
    )
    .await;
    assert_eq!(r.status, 203);
    assert_eq!(rest(&sim, Method::GET, SUBS, PAT, None).await.status, 400);
    for (kind, n) in [
        ("hooks.subscriptions.create", 3),
        ("hooks.subscriptions.list", 4),
        ("hooks.subscriptions.get", 3),
        ("hooks.subscriptions.replace", 2),
        ("hooks.subscriptions.delete", 1),
    ] {
        assert_eq!(sim.count_endpoint(kind), n, "{kind}");
    }
}

#[tokio::test]
async fn pat_scopes_decide_what_the_subscriptions_api_shows_and_allows() {
    use reqwest::Method;
    let sim = sim().await;
    let project_id = sim.project_id(ORG, PROJECT).unwrap();
    let build = sim
        .add_subscription(ORG, &create_body(&sim, "https://hooks.example.com/a"))
        .unwrap();
    let push = sim
        .add_subscription(
            ORG,
            &json!({
                "publisherId": "tfs", "eventType": "git.push", "resourceVersion": "1.0",
                "consumerId": "webHooks", "consumerActionId": "httpRequest",
                "publisherInputs": {"projectId": project_id},
                "consumerInputs": {"url": "https://hooks.example.com/a"}
            }),
        )
        .unwrap();
    let list = format!("{SUBS}?api-version=7.1");

    // No scope of the Subscriptions API at all: 401 TF400813 in the standard error shape.
    sim.add_token(ORG, "packaging-only");
    sim.set_token_scopes(ORG, "packaging-only", Some(&["vso.packaging"]));
    let r = rest(&sim, Method::GET, &list, "packaging-only", None).await;
    assert_eq!(r.status, 401);
    let err = r.json();
    assert!(err["message"].as_str().unwrap().starts_with("TF400813"));
    assert_eq!(
        top_keys(&err),
        top_keys(&load_fixture("error-401-tf400813.json"))
    );
    // ... while the Builds API still works for it.
    assert_eq!(
        get_with(&sim, &builds_path(""), Some("packaging-only"), true)
            .await
            .status,
        200
    );

    // Code (read): sees git.push only; build.complete is hidden, 404 on Get, 403 on writes.
    sim.add_token(ORG, "code-read");
    sim.set_token_scopes(ORG, "code-read", Some(&["vso.code"]));
    let seen = rest(&sim, Method::GET, &list, "code-read", None)
        .await
        .json();
    assert_eq!(seen["count"], 1);
    assert_eq!(seen["value"][0]["id"], push.as_str());
    assert_eq!(
        rest(
            &sim,
            Method::GET,
            &format!("{SUBS}/{build}?api-version=7.1"),
            "code-read",
            None
        )
        .await
        .status,
        404
    );
    let r = rest(
        &sim,
        Method::POST,
        &list,
        "code-read",
        Some(&create_body(&sim, "https://hooks.example.com/b")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["message"], "No scope found");
    assert_eq!(
        rest(
            &sim,
            Method::DELETE,
            &format!("{SUBS}/{build}?api-version=7.1"),
            "code-read",
            None
        )
        .await
        .status,
        403
    );

    // Service Hooks (read): sees everything, may change nothing.
    sim.add_token(ORG, "hooks-read");
    sim.set_token_scopes(ORG, "hooks-read", Some(&["vso.hooks"]));
    assert_eq!(
        rest(&sim, Method::GET, &list, "hooks-read", None)
            .await
            .json()["count"],
        2
    );
    assert_eq!(
        rest(
            &sim,
            Method::DELETE,
            &format!("{SUBS}/{push}?api-version=7.1"),
            "hooks-read",
            None
        )
        .await
        .status,
        403
    );
    // Service Hooks (read & write) may; full access again after clearing the scopes.
    sim.set_token_scopes(ORG, "hooks-read", Some(&["vso.hooks_write"]));
    assert_eq!(
        rest(
            &sim,
            Method::DELETE,
            &format!("{SUBS}/{push}?api-version=7.1"),
            "hooks-read",
            None
        )
        .await
        .status,
        204
    );
    sim.set_token_scopes(ORG, "code-read", None);
    assert_eq!(
        rest(&sim, Method::GET, &list, "code-read", None)
            .await
            .json()["count"],
        1
    );
    assert_eq!(sim.subscriptions(ORG).len(), 1);
}

/// A receiver whose answer a test can change between deliveries.
async fn switchable_receiver(status: u16) -> (String, Arc<std::sync::atomic::AtomicU16>, Received) {
    use std::sync::atomic::{AtomicU16, Ordering};
    let answer = Arc::new(AtomicU16::new(status));
    let received = Received::default();
    let (a, store) = (answer.clone(), received.clone());
    let app = axum::Router::new().route(
        "/hooks/azure-devops",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (a, store) = (a.clone(), store.clone());
            async move {
                store
                    .0
                    .lock()
                    .unwrap()
                    .push((headers, serde_json::from_str(&body).unwrap()));
                axum::http::StatusCode::from_u16(a.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/azure-devops",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, answer, received)
}

#[tokio::test]
async fn failed_deliveries_put_a_subscription_on_probation_then_disable_it() {
    use std::sync::atomic::Ordering;
    let sim = sim().await;
    let (url, answer, received) = switchable_receiver(500).await;
    let run = sim.queue_run(ORG, PROJECT, DEF, "main", SHA1);
    sim.complete_run(run, RunResult::Failed);
    let event = || HookEvent::BuildComplete {
        run_id: run,
        resource_version: BuildCompleteVersion::V2,
    };
    let mut body = create_body(&sim, &url);
    body["consumerInputs"]["basicAuthUsername"] = json!("ado");
    body["consumerInputs"]["basicAuthPassword"] = json!("hook-secret");
    body["consumerInputs"]["httpHeaders"] = json!("X-Lockstep-Token: t-1\nX-Other: two");
    let id = sim.add_subscription(ORG, &body).unwrap();

    // The consumer inputs shape the request: Basic credentials, headers, subscriptionId.
    let o = sim
        .deliver_to_subscription(ORG, &id, event())
        .await
        .unwrap();
    assert_eq!((o.status, o.delivered), (500, true));
    assert_eq!(o.subscription_status, Some(SubscriptionStatus::OnProbation));
    {
        let got = received.0.lock().unwrap();
        let (headers, payload) = &got[0];
        assert_eq!(payload["subscriptionId"], id.as_str());
        assert_eq!(headers["x-lockstep-token"], "t-1");
        assert_eq!(headers["x-other"], "two");
        assert_eq!(
            headers["authorization"],
            format!("Basic {}", base64_encode("ado:hook-secret")).as_str()
        );
    }

    // A success ends probation.
    answer.store(200, Ordering::SeqCst);
    let o = sim
        .deliver_to_subscription(ORG, &id, event())
        .await
        .unwrap();
    assert_eq!(o.subscription_status, Some(SubscriptionStatus::Enabled));

    // One failure: probation; 7 more failed probation retries: disabled by the system.
    answer.store(503, Ordering::SeqCst);
    sim.deliver_to_subscription(ORG, &id, event())
        .await
        .unwrap();
    for retry in 1..=6 {
        let o = sim
            .deliver_to_subscription(ORG, &id, event())
            .await
            .unwrap();
        assert_eq!(o.subscription_status, Some(SubscriptionStatus::OnProbation));
        assert_eq!(sim.subscription(ORG, &id).unwrap().probation_retries, retry);
    }
    let o = sim
        .deliver_to_subscription(ORG, &id, event())
        .await
        .unwrap();
    assert_eq!(
        o.subscription_status,
        Some(SubscriptionStatus::DisabledBySystem)
    );
    let shown = rest(
        &sim,
        reqwest::Method::GET,
        &format!("{SUBS}/{id}?api-version=7.1"),
        PAT,
        None,
    )
    .await
    .json();
    assert_eq!(shown["status"], "disabledBySystem");

    // Disabled: nothing is sent, whichever way the delivery is asked for.
    let before = received.0.lock().unwrap().len();
    let o = sim
        .deliver_to_subscription(ORG, &id, event())
        .await
        .unwrap();
    assert_eq!((o.delivered, o.status), (false, 0));
    let o = sim
        .deliver_hook(event(), &HookDelivery::to(&url).subscription_id(id.clone()))
        .await
        .unwrap();
    assert!(!o.delivered);
    assert_eq!(received.0.lock().unwrap().len(), before);
    let info = sim.subscription(ORG, &id).unwrap();
    assert_eq!((info.deliveries, info.failures), (10, 9));

    // Re-enabled (as `hooks sync` would with a Replace), deliveries flow again.
    let mut enable = shown.clone();
    enable["status"] = json!("enabled");
    assert_eq!(
        rest(
            &sim,
            reqwest::Method::PUT,
            &format!("{SUBS}/{id}?api-version=7.1"),
            PAT,
            Some(&enable)
        )
        .await
        .status,
        200
    );
    answer.store(200, Ordering::SeqCst);
    let o = sim
        .deliver_to_subscription(ORG, &id, event())
        .await
        .unwrap();
    assert!(o.delivered);
    assert_eq!(o.subscription_status, Some(SubscriptionStatus::Enabled));

    // 410 Gone disables at once; other thresholds can be chosen; an unreachable target counts.
    answer.store(410, Ordering::SeqCst);
    let o = sim
        .deliver_to_subscription(ORG, &id, event())
        .await
        .unwrap();
    assert_eq!(
        o.subscription_status,
        Some(SubscriptionStatus::DisabledBySystem)
    );
    sim.set_subscription_status(ORG, &id, SubscriptionStatus::Enabled, 0)
        .unwrap();
    sim.set_hook_thresholds(HookThresholds {
        probation_after_failures: 2,
        disable_after_probation_retries: 1,
    });
    let mut dead = create_body(&sim, "http://127.0.0.1:9/hooks");
    dead["consumerInputs"]["url"] = json!("http://127.0.0.1:9/hooks");
    let dead_id = sim.add_subscription(ORG, &dead).unwrap();
    assert!(sim
        .deliver_to_subscription(ORG, &dead_id, event())
        .await
        .is_err());
    assert_eq!(
        sim.subscription(ORG, &dead_id).unwrap().status,
        SubscriptionStatus::Enabled,
        "one failure is below the threshold of 2"
    );
    assert!(sim
        .deliver_to_subscription(ORG, &dead_id, event())
        .await
        .is_err());
    assert_eq!(
        sim.subscription(ORG, &dead_id).unwrap().status,
        SubscriptionStatus::OnProbation
    );
    // An event of another type is not this subscription's to deliver.
    assert!(sim
        .deliver_to_subscription(ORG, &id, HookEvent::RunStateChanged { run_id: run })
        .await
        .is_err());
}

#[tokio::test]
async fn the_control_api_drives_subscriptions_and_scopes() {
    use reqwest::Method;
    let sim = sim().await;
    let (url, _answer, received) = switchable_receiver(500).await;
    let run = sim.queue_run(ORG, PROJECT, DEF, "main", SHA1);
    sim.complete_run(run, RunResult::Succeeded);

    let (status, sub) = control(
        &sim,
        Method::POST,
        &format!("/hooks/subscriptions/{ORG}"),
        create_body(&sim, &url),
    )
    .await;
    assert_eq!(status, 200, "{sub}");
    let id = sub["id"].as_str().unwrap().to_string();
    assert_eq!(sub["status"], "enabled");

    let (status, out) = control(
        &sim,
        Method::POST,
        &format!("/hooks/subscriptions/{ORG}/{id}/deliver"),
        json!({"event": "buildComplete", "runId": run, "resourceVersion": "2.0"}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["status"], 500);
    assert_eq!(out["subscriptionStatus"], "onProbation");
    assert_eq!(received.0.lock().unwrap().len(), 1);

    let (_, out) = control(
        &sim,
        Method::POST,
        &format!("/hooks/subscriptions/{ORG}/{id}/status"),
        json!({"status": "onProbation", "probationRetries": 3}),
    )
    .await;
    assert_eq!(out["probationRetries"], 3);
    let (_, shown) = control(
        &sim,
        Method::GET,
        &format!("/hooks/subscriptions/{ORG}/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(shown["status"], "onProbation");
    assert_eq!(shown["deliveries"], 1);
    let (status, _) = control(
        &sim,
        Method::POST,
        &format!("/hooks/subscriptions/{ORG}/{id}/status"),
        json!({"status": "sleeping"}),
    )
    .await;
    assert_eq!(status, 400);
    let (_, all) = control(
        &sim,
        Method::GET,
        &format!("/hooks/subscriptions/{ORG}"),
        json!({}),
    )
    .await;
    assert_eq!(all["count"], 1);

    let (_, t) = control(
        &sim,
        Method::POST,
        "/hooks/thresholds",
        json!({"probationAfterFailures": 3, "disableAfterProbationRetries": 2}),
    )
    .await;
    assert_eq!(t["probationAfterFailures"], 3);

    let (status, _) = control(
        &sim,
        Method::POST,
        "/tokens/scopes",
        json!({"org": ORG, "token": PAT, "scopes": ["vso.packaging"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        rest(
            &sim,
            Method::GET,
            &format!("{SUBS}?api-version=7.1"),
            PAT,
            None
        )
        .await
        .status,
        401
    );
    control(
        &sim,
        Method::POST,
        "/tokens/scopes",
        json!({"org": ORG, "token": PAT}),
    )
    .await;
    assert_eq!(
        rest(
            &sim,
            Method::GET,
            &format!("{SUBS}?api-version=7.1"),
            PAT,
            None
        )
        .await
        .status,
        200
    );
}
