//! The Azure DevOps client against a local HTTP server that answers like ADO does, traps included.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use lockstep::ado::{AdoClient, AdoError, ClientConfig, RequestObserver};
use lockstep::secret::SecretString;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PAT: &str = "pat-5ecret-abc123xyz";

fn token() -> SecretString {
    SecretString::new(PAT)
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure-devops")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn json_response(status: u16, body: impl Into<Vec<u8>>) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header(
            "content-type",
            "application/json; charset=utf-8; api-version=7.1",
        )
        .set_body_bytes(body.into())
}

fn client() -> AdoClient {
    AdoClient::new(ClientConfig::default()).unwrap()
}

/// A client whose retries finish quickly.
fn client_with(max_retries: u32, request_timeout: Duration) -> AdoClient {
    AdoClient::new(ClientConfig {
        max_retries,
        request_timeout,
        ..ClientConfig::default()
    })
    .unwrap()
}

/// No error may carry the token, in its message or its Debug form.
fn assert_no_token(err: &AdoError) {
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains(PAT), "token leaked: {shown}");
    assert!(!shown.contains('\n'), "error is not one line: {shown}");
}

async fn list(client: &AdoClient, server: &MockServer) -> Result<usize, AdoError> {
    let org = format!("{}/contoso", server.uri());
    let r = client
        .list_builds(&org, "Shop", 42, "main", 10, &token())
        .await
        .map(|v| v.len());
    if let Err(e) = &r {
        assert_no_token(e);
    }
    r
}

fn builds_path() -> wiremock::matchers::PathExactMatcher {
    path("/contoso/Shop/_apis/build/builds")
}

#[tokio::test]
async fn builds_list_sends_the_documented_request() {
    let server = MockServer::start().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{PAT}"));
    Mock::given(method("GET"))
        .and(path("/contoso/My%20Shop/_apis/build/builds"))
        .and(query_param("definitions", "42"))
        .and(query_param("branchName", "refs/heads/feature/x"))
        .and(query_param("queryOrder", "queueTimeDescending"))
        .and(query_param("$top", "10"))
        .and(query_param("api-version", "7.1"))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .and(header("accept", "application/json"))
        .and(header("x-tfs-fedauthredirect", "Suppress"))
        .and(header("x-vss-forcemsapassthrough", "true"))
        .respond_with(json_response(
            200,
            fixture("builds-list-mixed-results.json"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let org = format!("{}/contoso/", server.uri());
    let builds = client()
        .list_builds(&org, "My Shop", 42, "feature/x", 10, &token())
        .await
        .unwrap();
    assert_eq!(builds.len(), 6);
    assert_eq!(builds[0].id, 1208);

    let req = &server.received_requests().await.unwrap()[0];
    let query = req.url.query().unwrap();
    assert!(
        query.contains("branchName=refs/heads/feature/x") && query.contains("$top=10"),
        "{query}"
    );
    let ua = req.headers.get("user-agent").unwrap().to_str().unwrap();
    assert!(ua.starts_with("lockstep/"), "{ua}");
}

#[tokio::test]
async fn git_and_single_build_endpoints() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/build/builds/1206"))
        .and(query_param("api-version", "7.1"))
        .respond_with(json_response(200, fixture("build-completed.json")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/git/repositories/orders-hld/refs"))
        .and(query_param("filter", "heads/main"))
        .and(query_param("peelTags", "true"))
        .respond_with(json_response(200, fixture("refs-filter-heads-branch.json")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/contoso/Shop/_apis/git/repositories/flux/annotatedtags/0396d996eda4b2528dbda88dd8ab9c0bb6c27674",
        ))
        .respond_with(json_response(200, fixture("git-annotated-tag-flux-sync.json")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/git/repositories/WikiTests000002"))
        .respond_with(json_response(200, fixture("git-repository-by-name.json")))
        .mount(&server)
        .await;

    let c = client();
    let org = format!("{}/contoso", server.uri());
    let t = token();
    let build = c.get_build(&org, "Shop", 1206, &t).await.unwrap();
    assert_eq!(build.status, Some(lockstep::ado::BuildStatus::Completed));
    let refs = c
        .list_refs(&org, "Shop", "orders-hld", "heads/main", &t)
        .await
        .unwrap();
    assert_eq!(refs.len(), 1);
    let tag = c
        .get_annotated_tag(
            &org,
            "Shop",
            "flux",
            "0396d996eda4b2528dbda88dd8ab9c0bb6c27674",
            &t,
        )
        .await
        .unwrap();
    assert_eq!(
        tag.tagged_object.object_id,
        "ab4c9f1ccb67a82256763e32fba1e70c897bd82a"
    );
    let repo = c
        .get_repository(&org, "Shop", "WikiTests000002", &t)
        .await
        .unwrap();
    assert_eq!(repo.name, "WikiTests000002");
}

#[tokio::test]
async fn a_utf8_bom_is_stripped() {
    let server = MockServer::start().await;
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(fixture("builds-list.json").into_bytes());
    Mock::given(builds_path())
        .respond_with(json_response(200, body))
        .mount(&server)
        .await;
    assert_eq!(list(&client(), &server).await.unwrap(), 4);
}

#[tokio::test]
async fn html_sign_in_pages_are_auth_failures() {
    for status in [203, 200] {
        let server = MockServer::start().await;
        Mock::given(builds_path())
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("content-type", "text/html; charset=utf-8")
                    .set_body_string("<html><body>Sign in to your account</body></html>"),
            )
            .mount(&server)
            .await;
        let err = list(&client(), &server).await.unwrap_err();
        assert!(
            matches!(err, AdoError::Unauthorized { status: s, .. } if s == status),
            "{err:?}"
        );
        assert!(err.to_string().contains("personal access token"));
    }
}

#[tokio::test]
async fn json_served_as_text_is_an_auth_failure() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(ResponseTemplate::new(200).set_body_string(fixture("builds-list.json")))
        .mount(&server)
        .await;
    assert!(matches!(
        list(&client(), &server).await,
        Err(AdoError::Unauthorized { status: 200, .. })
    ));
}

#[tokio::test]
async fn status_401_and_403_are_auth_failures() {
    for status in [401, 403] {
        let server = MockServer::start().await;
        Mock::given(builds_path())
            .respond_with(
                json_response(status, fixture("error-401-tf400813.json"))
                    .insert_header("www-authenticate", "Basic realm=\"https://tfsprod\""),
            )
            .expect(1)
            .mount(&server)
            .await;
        let err = list(&client(), &server).await.unwrap_err();
        assert!(
            matches!(err, AdoError::Unauthorized { status: s, .. } if s == status),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/signin", server.uri()).as_str()),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/signin"))
        .respond_with(json_response(200, "{\"count\":0,\"value\":[]}"))
        .expect(0)
        .mount(&server)
        .await;
    let err = list(&client(), &server).await.unwrap_err();
    assert!(
        matches!(err, AdoError::Unauthorized { status: 302, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn not_found_carries_the_ado_message() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(json_response(
            404,
            fixture("error-404-project-not-found.json"),
        ))
        .mount(&server)
        .await;
    let err = list(&client(), &server).await.unwrap_err();
    let AdoError::NotFound { what, message } = &err else {
        panic!("{err:?}")
    };
    assert!(what.contains("\"Shop\"") && what.contains("42"), "{what}");
    assert!(message.starts_with("TF200016: The following project does not exist"));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_server_echoing_the_token_is_redacted() {
    let server = MockServer::start().await;
    let body = format!("{{\"message\":\"TF400813: token {PAT} is not valid\"}}");
    Mock::given(builds_path())
        .respond_with(json_response(404, body))
        .mount(&server)
        .await;
    let err = list(&client(), &server).await.unwrap_err();
    assert!(err.to_string().contains("<redacted>"), "{err}");
}

#[tokio::test]
async fn truncated_json_is_an_invalid_response() {
    let server = MockServer::start().await;
    let full = fixture("builds-list.json");
    Mock::given(builds_path())
        .respond_with(json_response(200, &full.as_bytes()[..full.len() / 2]))
        .expect(1)
        .mount(&server)
        .await;
    let err = list(&client(), &server).await.unwrap_err();
    assert!(
        matches!(&err, AdoError::InvalidResponse { endpoint, .. } if endpoint == "build.builds.list"),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn status_429_puts_the_organization_on_hold() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(
            json_response(
                429,
                "{\"message\":\"TF400733: The request has been canceled\"}",
            )
            .insert_header("retry-after", "120"),
        )
        .expect(1)
        .mount(&server)
        .await;
    // Another organization on the same host is not held.
    Mock::given(path("/fabrikam/Shop/_apis/build/builds"))
        .respond_with(json_response(200, fixture("builds-list.json")))
        .expect(1)
        .mount(&server)
        .await;
    let c = client();
    let first = list(&c, &server).await.unwrap_err();
    assert!(
        matches!(first, AdoError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(120)),
        "{first:?}"
    );
    // The second call is answered from the hold, without a request (expect(1) above).
    let second = list(&c, &server).await.unwrap_err();
    match second {
        AdoError::RateLimited { retry_after, .. } => {
            assert!(
                retry_after <= Duration::from_secs(120) && retry_after > Duration::from_secs(60)
            )
        }
        other => panic!("{other:?}"),
    }
    // Clones share the hold.
    assert!(matches!(
        list(&c.clone(), &server).await,
        Err(AdoError::RateLimited { .. })
    ));
    let other_org = format!("{}/fabrikam", server.uri());
    assert_eq!(
        c.list_builds(&other_org, "Shop", 178, "main", 10, &token())
            .await
            .unwrap()
            .len(),
        4
    );
}

#[tokio::test]
async fn a_429_without_retry_after_still_backs_off() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(json_response(429, "{}"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client();
    assert!(matches!(
        list(&c, &server).await,
        Err(AdoError::RateLimited { retry_after, .. }) if retry_after >= Duration::from_secs(1)
    ));
    assert!(matches!(
        list(&c, &server).await,
        Err(AdoError::RateLimited { .. })
    ));
}

#[tokio::test]
async fn retry_after_on_a_success_is_honoured_too() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(
            json_response(200, fixture("builds-list.json")).insert_header("retry-after", "30"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client();
    assert_eq!(list(&c, &server).await.unwrap(), 4);
    assert!(matches!(
        list(&c, &server).await,
        Err(AdoError::RateLimited { .. })
    ));
}

#[tokio::test]
async fn exhausted_rate_limit_budget_pauses_briefly() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(
            json_response(200, fixture("builds-list.json"))
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-limit", "200"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client();
    assert_eq!(list(&c, &server).await.unwrap(), 4);
    match list(&c, &server).await {
        Err(AdoError::RateLimited { retry_after, .. }) => {
            assert!(retry_after <= Duration::from_secs(10))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(json_response(
            500,
            "{\"message\":\"TF246017: database busy\"}",
        ))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(builds_path())
        .respond_with(json_response(200, fixture("builds-list.json")))
        .with_priority(2)
        .mount(&server)
        .await;
    assert_eq!(list(&client(), &server).await.unwrap(), 4);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn persistent_server_errors_become_unavailable() {
    let server = MockServer::start().await;
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(b"{\"message\":\"TF24668: The organization is stopped\"}");
    Mock::given(builds_path())
        .respond_with(json_response(503, body))
        .expect(3)
        .mount(&server)
        .await;
    let err = list(&client_with(2, Duration::from_secs(10)), &server)
        .await
        .unwrap_err();
    match &err {
        AdoError::Unavailable { status, detail } => {
            assert_eq!(*status, Some(503));
            assert!(detail.starts_with("TF24668"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_transient());
}

#[tokio::test]
async fn slow_responses_time_out_and_are_retried() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(
            json_response(200, fixture("builds-list.json")).set_delay(Duration::from_secs(5)),
        )
        .expect(2)
        .mount(&server)
        .await;
    let err = list(&client_with(1, Duration::from_millis(300)), &server)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdoError::Unavailable { status: None, detail } if detail.contains("timed out")),
        "{err:?}"
    );
}

#[tokio::test]
async fn connection_failures_are_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let org = format!("http://{addr}/contoso");
    let err = client_with(1, Duration::from_secs(2))
        .list_builds(&org, "Shop", 1, "main", 1, &token())
        .await
        .unwrap_err();
    assert_no_token(&err);
    assert!(
        matches!(err, AdoError::Unavailable { status: None, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_organization_urls_are_rejected_before_any_request() {
    for org in ["dev.azure.com/contoso", "ftp://dev.azure.com/contoso", ""] {
        let err = client()
            .list_builds(org, "Shop", 1, "main", 1, &token())
            .await
            .unwrap_err();
        assert_no_token(&err);
        assert!(matches!(err, AdoError::InvalidRequest(_)), "{err:?}");
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, Option<u16>)>>);

impl RequestObserver for Recorder {
    fn on_response(&self, endpoint: &'static str, status: Option<u16>, _elapsed: Duration) {
        self.0.lock().unwrap().push((endpoint, status));
    }
}

#[tokio::test]
async fn the_observer_sees_every_exchange() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(json_response(502, "{}"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(builds_path())
        .respond_with(json_response(200, fixture("builds-list.json")))
        .with_priority(2)
        .mount(&server)
        .await;
    let recorder = Arc::new(Recorder::default());
    let c = client().with_observer(recorder.clone());
    list(&c, &server).await.unwrap();
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [
            ("build.builds.list", Some(502)),
            ("build.builds.list", Some(200))
        ]
    );
}

#[tokio::test]
async fn the_token_is_only_in_the_authorization_header() {
    let server = MockServer::start().await;
    Mock::given(builds_path())
        .respond_with(json_response(200, fixture("builds-list.json")))
        .mount(&server)
        .await;
    list(&client(), &server).await.unwrap();
    let reqs: Vec<Request> = server.received_requests().await.unwrap();
    let req = &reqs[0];
    assert!(!req.url.as_str().contains(PAT));
    for (name, value) in req.headers.iter() {
        if name != "authorization" {
            assert!(!value.to_str().unwrap_or("").contains(PAT), "{name}");
        }
    }
}

fn commits_path() -> wiremock::matchers::PathExactMatcher {
    path("/contoso/My%20Shop/_apis/git/repositories/orders%2Fmanifests/commits")
}

#[tokio::test]
async fn commits_list_sends_the_documented_request() {
    let server = MockServer::start().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{PAT}"));
    Mock::given(method("GET"))
        .and(commits_path())
        .and(query_param("searchCriteria.itemVersion.version", "main"))
        .and(query_param(
            "searchCriteria.itemVersion.versionType",
            "branch",
        ))
        .and(query_param("searchCriteria.$top", "6"))
        .and(query_param("api-version", "7.1"))
        .and(header("authorization", format!("Basic {basic}").as_str()))
        .and(header("x-tfs-fedauthredirect", "Suppress"))
        .respond_with(
            json_response(200, fixture("commits-by-branch.json")).insert_header(
                "link",
                "<9991b4f66def4c0a9ad8f9f27043ece7eddcf1c7>;rel=\"startingCommitId\"",
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let recorder = Arc::new(Recorder::default());
    let org = format!("{}/contoso", server.uri());
    let commits = client()
        .with_observer(recorder.clone())
        .get_commits(
            &org,
            "My Shop",
            "orders/manifests",
            "main",
            "branch",
            6,
            &token(),
        )
        .await
        .unwrap();
    assert_eq!(commits.len(), 6);
    let head = &commits[0];
    assert_eq!(head.commit_id, "9991b4f66def4c0a9ad8f9f27043ece7eddcf1c7");
    assert_eq!(
        head.committer.as_ref().and_then(|c| c.date.as_deref()),
        Some("2018-06-15T17:06:53Z")
    );
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [("git.commits.list", Some(200))]
    );
    let req = &server.received_requests().await.unwrap()[0];
    let query = req.url.query().unwrap();
    assert!(
        query.contains("searchCriteria.$top=6")
            && query.contains("searchCriteria.itemVersion.versionType=branch"),
        "{query}"
    );
}

#[tokio::test]
async fn commits_by_commit_id_and_unresolvable_versions() {
    let server = MockServer::start().await;
    let sha = "20510720ffe1443d6ed3cb98ca340bc732ba04e5";
    Mock::given(method("GET"))
        .and(commits_path())
        .and(query_param("searchCriteria.itemVersion.version", sha))
        .and(query_param(
            "searchCriteria.itemVersion.versionType",
            "commit",
        ))
        .and(query_param("searchCriteria.$top", "1"))
        .respond_with(json_response(200, fixture("commits-top-skip.json")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(commits_path())
        .and(query_param("searchCriteria.itemVersion.version", "gone"))
        .respond_with(json_response(
            404,
            r#"{"$id":"1","innerException":null,"message":"TF401175: The version descriptor <Branch: gone> could not be resolved to a version commit.","typeName":"Microsoft.TeamFoundation.Git.Server.GitUnresolvableToCommitException, Microsoft.TeamFoundation.Git.Server","typeKey":"GitUnresolvableToCommitException","errorCode":0,"eventId":3000}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let org = format!("{}/contoso", server.uri());
    let c = client();
    let commits = c
        .get_commits(
            &org,
            "My Shop",
            "orders/manifests",
            sha,
            "commit",
            1,
            &token(),
        )
        .await
        .unwrap();
    let ids: Vec<&str> = commits.iter().map(|c| c.commit_id.as_str()).collect();
    assert_eq!(ids, ["c771e2e3605c69d2435a6b34b28ac3db2c89efd2", sha]);

    let err = c
        .get_commits(
            &org,
            "My Shop",
            "orders/manifests",
            "gone",
            "branch",
            1,
            &token(),
        )
        .await
        .unwrap_err();
    assert_no_token(&err);
    let AdoError::NotFound { what, message } = &err else {
        panic!("{err:?}")
    };
    assert!(
        what.contains("gone") && what.contains("\"orders/manifests\""),
        "{what}"
    );
    assert!(message.starts_with("TF401175"), "{message}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn commits_with_a_rejected_token_are_auth_failures() {
    let server = MockServer::start().await;
    Mock::given(commits_path())
        .respond_with(
            ResponseTemplate::new(203)
                .insert_header("content-type", "text/html; charset=utf-8")
                .set_body_string("<html><body>Sign in to your account</body></html>"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let org = format!("{}/contoso", server.uri());
    let err = client()
        .get_commits(
            &org,
            "My Shop",
            "orders/manifests",
            "main",
            "branch",
            1,
            &token(),
        )
        .await
        .unwrap_err();
    assert_no_token(&err);
    assert!(
        matches!(err, AdoError::Unauthorized { status: 203, .. }),
        "{err:?}"
    );
}
