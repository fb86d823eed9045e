//! Drives the real `lockstep check` binary against a local server answering in the shape of the recorded
//! Azure DevOps responses in `tests/fixtures/azure-devops`.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PAT: &str = "check-cli-pat-7f3a9c1e5b";
const BUILDS_PATH: &str = "/contoso/Shop/_apis/build/builds";

/// The six runs of definition 42 on main from the fixture: 1208 notStarted, 1207 inProgress,
/// 1206 failed, 1205 canceled, 1204 partiallySucceeded, 1203 succeeded.
fn fixture_runs() -> Vec<Value> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure-devops/builds-list-mixed-results.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["value"].as_array().unwrap().clone()
}

fn runs(ids: &[i64]) -> Vec<Value> {
    fixture_runs()
        .into_iter()
        .filter(|r| ids.contains(&r["id"].as_i64().unwrap()))
        .collect()
}

/// A newer run that must not count: another branch or another definition, failed or still running.
fn distractors() -> Vec<Value> {
    let template = runs(&[1206]).remove(0);
    let mut other_branch = template.clone();
    other_branch["id"] = json!(1300);
    other_branch["buildNumber"] = json!("20260303.1");
    other_branch["sourceBranch"] = json!("refs/heads/develop");
    other_branch["queueTime"] = json!("2026-03-03T09:00:00.0000000Z");
    let mut other_definition = template;
    other_definition["id"] = json!(1301);
    other_definition["definition"]["id"] = json!(7);
    other_definition["status"] = json!("inProgress");
    other_definition.as_object_mut().unwrap().remove("result");
    other_definition["queueTime"] = json!("2026-03-03T09:30:00.0000000Z");
    vec![other_branch, other_definition]
}

fn list_body(runs: Vec<Value>) -> ResponseTemplate {
    let body = json!({"count": runs.len(), "value": runs});
    ResponseTemplate::new(200).set_body_raw(
        body.to_string(),
        "application/json; charset=utf-8; api-version=7.1",
    )
}

async fn server_answering(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(BUILDS_PATH))
        .and(query_param("definitions", "42"))
        .and(query_param("branchName", "refs/heads/main"))
        .and(query_param("queryOrder", "queueTimeDescending"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

/// Runs `lockstep check` against the server, with `token` in AZURE_DEVOPS_EXT_PAT (or no token at all).
async fn check(server: &MockServer, token: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lockstep"));
    cmd.arg("check")
        .args(["--organization-url", &format!("{}/contoso", server.uri())])
        .args([
            "--project",
            "Shop",
            "--definition-id",
            "42",
            "--branch",
            "main",
        ])
        .args(extra)
        .env_remove("AZURE_DEVOPS_EXT_PAT")
        .env_remove("SYSTEM_ACCESSTOKEN")
        .env_remove("SYSTEM_COLLECTIONURI")
        .env_remove("SYSTEM_TEAMPROJECT")
        .env_remove("TF_BUILD")
        .kill_on_drop(true);
    if let Some(t) = token {
        cmd.env("AZURE_DEVOPS_EXT_PAT", t);
    }
    // Generous: the binary normally answers in well under a second.
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("lockstep check finished")
        .expect("lockstep check ran")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_exit(out: &Output, code: i32) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stdout.contains(PAT) && !stderr.contains(PAT),
        "the token leaked:\n{stdout}\n{stderr}"
    );
}

#[tokio::test]
async fn newest_successful_run_exits_0() {
    let mut body = distractors();
    body.extend(runs(&[1203]));
    let server = server_answering(list_body(body)).await;
    let out = check(&server, Some(PAT), &[]).await;
    assert_exit(&out, 0);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("Succeeded: Run 20260302.1 of \"base-ci\" succeeded: https://dev.azure.com/contoso/3f9a6c2e-5b1d-4e8a-9c7f-2d4b6a8e0c11/_build/results?buildId=1203"),
        "{stdout}"
    );
}

#[tokio::test]
async fn newest_failed_run_exits_1() {
    let server = server_answering(list_body(runs(&[1206, 1205, 1204, 1203]))).await;
    let out = check(&server, Some(PAT), &[]).await;
    assert_exit(&out, 1);
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("RunFailed: Run 20260302.4 of \"base-ci\" failed: ")
            && stdout.contains("buildId=1206"),
        "{stdout}"
    );
    assert!(stderr.contains("re-run"), "{stderr}");
}

#[tokio::test]
async fn runs_of_other_branches_and_definitions_are_ignored() {
    // Newest overall: a failure on develop and a run of definition 7 in progress; on main, 1204
    // partially succeeded, which is accepted here.
    let mut body = distractors();
    body.extend(runs(&[1204, 1203]));
    let server = server_answering(list_body(body)).await;
    let out = check(
        &server,
        Some(PAT),
        &["--accepted-results", "succeeded,partiallySucceeded"],
    )
    .await;
    assert_exit(&out, 0);
    assert!(text(&out).0.contains("buildId=1204"));
}

#[tokio::test]
async fn run_in_progress_times_out_with_exit_2() {
    let server = server_answering(list_body(runs(&[1207, 1206, 1205, 1204, 1203]))).await;
    let started = Instant::now();
    let out = check(
        &server,
        Some(PAT),
        &["--wait", "--timeout", "3s", "--interval", "1s"],
    )
    .await;
    assert_exit(&out, 2);
    assert!(started.elapsed() >= Duration::from_secs(3));
    let (stdout, stderr) = text(&out);
    let in_progress = stdout
        .lines()
        .filter(|l| l.starts_with("RunInProgress: Run 20260302.5 of \"base-ci\" is in progress"))
        .count();
    let timed_out = stdout
        .lines()
        .filter(|l| l.starts_with("TimedOut: Run 20260302.5 of \"base-ci\" is still in progress"))
        .count();
    assert!(in_progress >= 1 && timed_out == 1, "{stdout}");
    let requests = server.received_requests().await.unwrap().len();
    assert_eq!(
        in_progress + timed_out,
        requests,
        "one line per poll:\n{stdout}"
    );
    assert!(stderr.contains("--timeout"), "{stderr}");
}

#[tokio::test]
async fn run_in_progress_without_wait_exits_2_at_once() {
    let server = server_answering(list_body(runs(&[1208, 1207, 1203]))).await;
    let out = check(&server, Some(PAT), &[]).await;
    assert_exit(&out, 2);
    assert!(text(&out).0.starts_with("RunQueued: Run 20260302.6"));
    assert!(text(&out).1.contains("--wait"));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn waiting_ends_when_the_run_succeeds() {
    let server = MockServer::start().await;
    let mut finished = runs(&[1207, 1203]);
    finished[0]["status"] = json!("completed");
    finished[0]["result"] = json!("succeeded");
    finished[0]["finishTime"] = json!("2026-03-02T10:40:00.0000000Z");
    Mock::given(path(BUILDS_PATH))
        .respond_with(list_body(runs(&[1207, 1203])))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path(BUILDS_PATH))
        .respond_with(list_body(finished))
        .with_priority(2)
        .mount(&server)
        .await;
    let out = check(
        &server,
        Some(PAT),
        &["--wait", "--timeout", "1m", "--interval", "200ms"],
    )
    .await;
    assert_exit(&out, 0);
    let stdout = text(&out).0;
    assert_eq!(stdout.matches("RunInProgress: ").count(), 2, "{stdout}");
    assert!(stdout.contains("Succeeded: Run 20260302.5 of \"base-ci\" succeeded"));
}

#[tokio::test]
async fn wrong_token_answered_with_html_exits_3_without_showing_it() {
    let server = server_answering(
        ResponseTemplate::new(203).set_body_raw(
            format!(
                "<html><head><title>Azure DevOps Services | Sign In</title></head><body>{PAT}</body></html>"
            ),
            "text/html; charset=utf-8",
        ),
    )
    .await;
    let out = check(&server, Some(PAT), &["--wait"]).await;
    assert_exit(&out, 3);
    let stderr = text(&out).1;
    assert!(stderr.contains("AuthenticationFailed"), "{stderr}");
    assert!(stderr.contains("check the token"), "{stderr}");
}

#[tokio::test]
async fn unknown_project_exits_3() {
    let server = MockServer::start().await;
    Mock::given(path(BUILDS_PATH))
        .respond_with(
            ResponseTemplate::new(404).set_body_raw(
                r#"{"$id":"1","innerException":null,"message":"TF200016: The following project does not exist: Shop.","typeName":"x","typeKey":"ProjectDoesNotExistWithNameException","errorCode":0,"eventId":3000}"#,
                "application/json; charset=utf-8",
            ),
        )
        .mount(&server)
        .await;
    let out = check(&server, Some(PAT), &[]).await;
    assert_exit(&out, 3);
    let stderr = text(&out).1;
    assert!(stderr.contains("TF200016"), "{stderr}");
    assert!(stderr.contains("--project"), "{stderr}");
}

#[tokio::test]
async fn missing_token_exits_3_naming_both_variables() {
    let server = server_answering(list_body(runs(&[1203]))).await;
    let out = check(&server, None, &[]).await;
    assert_exit(&out, 3);
    let stderr = text(&out).1;
    assert!(
        stderr.contains("AZURE_DEVOPS_EXT_PAT") && stderr.contains("SYSTEM_ACCESSTOKEN"),
        "{stderr}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_flags_exit_3() {
    let server = server_answering(list_body(runs(&[1203]))).await;
    let out = check(&server, Some(PAT), &["--timeout", "soon"]).await;
    assert_exit(&out, 3);
    assert!(text(&out).1.contains("--timeout"));
}

#[tokio::test]
async fn a_definition_that_does_not_exist_exits_as_not_found_not_waiting() {
    let server = server_answering(list_body(Vec::new())).await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/build/definitions/42"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "$id": "1", "innerException": null,
            "message": "Build pipeline 42 was not found.",
            "typeName": "Microsoft.TeamFoundation.Build.WebApi.DefinitionNotFoundException, Microsoft.TeamFoundation.Build2.WebApi",
            "typeKey": "DefinitionNotFoundException", "errorCode": 0, "eventId": 3000
        })))
        .mount(&server)
        .await;
    // With --wait it must not wait for runs of a pipeline that does not exist.
    let started = Instant::now();
    let out = check(&server, Some(PAT), &["--wait", "--timeout", "1m"]).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_ne!(
        out.status.code(),
        Some(2),
        "timed out instead: {stdout}\n{stderr}"
    );
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("NotFound") && all.contains("definition 42") && all.contains("Shop"),
        "{all}"
    );
}
