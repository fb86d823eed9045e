//! Reconciler tests against a mock Kubernetes API server (tower-test) and a mock Azure DevOps (wiremock).
//! Each scenario lists the exact API calls it expects, in order; an unexpected call leaves the reconcile
//! waiting for an answer, which the timeout turns into a failure.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use kube::Client;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::reconcile::{reconcile, GateContext};
use crate::ado::{AdoClient, ClientConfig};
use crate::crd::{PipelineGate, PipelineGateStatus};
use crate::poll_cache::PollCache;
use crate::reconciler::ReconcileIo;
use crate::reconciler::ReconcilerConfig;
use crate::telemetry::Metrics;

const PAT: &str = "pat-0123456789-secret";
const NS: &str = "orders";
const NAME: &str = "orders-base";

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn gate(org_url: &str, status: Option<PipelineGateStatus>, resource_version: &str) -> PipelineGate {
    let mut g: PipelineGate = serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1",
        "kind": "PipelineGate",
        "metadata": {"name": NAME, "namespace": NS, "generation": 1, "resourceVersion": resource_version, "uid": "u-1"},
        "spec": {
            "azureDevOps": {"organizationUrl": org_url, "project": "Shop", "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "pipeline": {"definitionId": 183, "branch": "develop"},
        }
    }))
    .unwrap();
    g.status = status;
    g
}

fn context(client: Client) -> Arc<GateContext> {
    let ado = AdoClient::new(ClientConfig {
        max_retries: 0,
        ..ClientConfig::default()
    })
    .unwrap();
    context_with_ado(client, ado)
}

/// A context around a given ADO client: a second context shares the client's rate-limit hold but not the
/// first one's poll cache or memory, the way a fresh reconcile after the cache expired sees it.
fn context_with_ado(client: Client, ado: AdoClient) -> Arc<GateContext> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let recorders = crate::reconciler::events::test_recorders(&client);
    let io = ReconcileIo {
        client,
        ado,
        cache: Arc::new(PollCache::new(Duration::from_secs(5))),
        recorders,
        tokens: crate::reconciler::token_cache::TokenCache::new(
            ReconcilerConfig::default().secret_cache_ttl,
        ),
        entra: Arc::new(crate::entra::EntraContext::new(
            crate::entra::EntraClient::new(crate::entra::EntraClientConfig::default()).unwrap(),
            crate::entra::AzureEnv::default(),
        )),
        metrics,
        config: ReconcilerConfig::default(),
    };
    Arc::new(GateContext::new(
        io,
        Writer::<PipelineGate>::default().as_reader(),
    ))
}

async fn ado_with_succeeded_run() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/build/builds"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 1, "value": [{
            "id": 41, "buildNumber": "20261122.4", "status": "completed", "result": "succeeded",
            "queueTime": "2026-11-22T10:00:00.1234567Z", "finishTime": "2026-11-22T10:05:00Z",
            "sourceBranch": "refs/heads/develop", "sourceVersion": "abcdef0123456789abcdef0123456789abcdef01",
            "definition": {"id": 183, "name": "base-image"},
            "_links": {"web": {"href": "https://dev.azure.com/contoso/Shop/_build/results?buildId=41"}}
        }]})))
        .mount(&server)
        .await;
    server
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "secrets \"ado-pat\" not found"})
}

async fn expect_secret_get(handle: &mut ApiHandle, found: bool) {
    let (req, send) = handle.next_request().await.expect("secret GET");
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(
        req.uri().path(),
        format!("/api/v1/namespaces/{NS}/secrets/ado-pat")
    );
    if found {
        let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, PAT);
        send.send_response(json_response(
            200,
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ado-pat", "namespace": NS}, "data": {"token": token}}),
        ));
    } else {
        send.send_response(json_response(404, &not_found()));
    }
}

/// Expects the status apply and returns its body.
async fn expect_status_apply(handle: &mut ApiHandle) -> Value {
    let (req, send) = handle.next_request().await.expect("status PATCH");
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(
        req.uri().path(),
        format!("/apis/lockstep.dev/v1alpha1/namespaces/{NS}/pipelinegates/{NAME}/status")
    );
    let query = req.uri().query().unwrap_or_default().to_string();
    assert!(query.contains("fieldManager=lockstep"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(
        req.headers().get("content-type").unwrap(),
        "application/apply-patch+yaml"
    );
    let body: Value =
        serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    let mut object = serde_json::to_value(gate("https://x", None, "2")).unwrap();
    object["status"] = body["status"].clone();
    send.send_response(json_response(200, &object));
    body
}

/// Expects one Event and returns (type, reason, note).
async fn expect_event(handle: &mut ApiHandle) -> (String, String, String) {
    let (req, send) = handle.next_request().await.expect("event POST");
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(
        req.uri().path(),
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
    );
    let body: Value =
        serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    send.send_response(json_response(201, &body));
    (
        body["type"].as_str().unwrap_or_default().to_string(),
        body["reason"].as_str().unwrap_or_default().to_string(),
        body["note"].as_str().unwrap_or_default().to_string(),
    )
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

async fn run_reconcile(g: PipelineGate, ctx: Arc<GateContext>) {
    tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(g), ctx))
        .await
        .expect("reconcile made a call the scenario did not expect")
        .expect("reconcile failed");
}

#[tokio::test]
async fn first_reconcile_writes_observed_generation_and_conditions() {
    let ado = ado_with_succeeded_run().await;
    let org = format!("{}/contoso", ado.uri());
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let api = tokio::spawn(async move {
        expect_secret_get(&mut handle, true).await;
        let body = expect_status_apply(&mut handle).await;
        let event = expect_event(&mut handle).await;
        (body, event)
    });
    run_reconcile(gate(&org, None, "1"), ctx).await;
    let (body, (type_, reason, note)) = api.await.unwrap();

    assert_eq!(body["apiVersion"], "lockstep.dev/v1alpha1");
    assert_eq!(body["kind"], "PipelineGate");
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 1);
    let ready = condition(status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("Succeeded"))
    );
    assert_eq!(ready["observedGeneration"], 1);
    assert_eq!(condition(status, "Reconciling")["status"], "False");
    assert_eq!(condition(status, "Stalled")["status"], "False");
    assert_eq!(status["latestRun"]["buildNumber"], "20261122.4");
    assert_eq!(status["latestRun"]["commit"], "abcdef0");
    assert_eq!((type_.as_str(), reason.as_str()), ("Normal", "GateOpened"));
    assert!(!body.to_string().contains(PAT) && !note.contains(PAT));
}

#[tokio::test]
async fn unchanged_verdict_writes_nothing() {
    let ado = ado_with_succeeded_run().await;
    let org = format!("{}/contoso", ado.uri());
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let api = tokio::spawn(async move {
        expect_secret_get(&mut handle, true).await;
        let body = expect_status_apply(&mut handle).await;
        expect_event(&mut handle).await;
        tx.send(body).unwrap();
        // The second reconcile may only read the Secret.
        expect_secret_get(&mut handle, true).await;
        handle
    });
    run_reconcile(gate(&org, None, "1"), ctx.clone()).await;
    let written: PipelineGateStatus =
        serde_json::from_value(rx.await.unwrap()["status"].clone()).unwrap();
    // The watch delivers our write as a new resource version; reconciling it must not write again.
    run_reconcile(gate(&org, Some(written), "2"), ctx).await;
    let mut handle = api.await.unwrap();
    // Nothing else was requested (None: the client is gone; Err: nothing came).
    assert!(
        !matches!(
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await,
            Ok(Some(_))
        ),
        "an unchanged verdict must not write status or record Events"
    );
}

#[tokio::test]
async fn missing_secret_is_authentication_failed_naming_secret_and_key() {
    let ado = MockServer::start().await; // must not be called
    let org = format!("{}/contoso", ado.uri());
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let api = tokio::spawn(async move {
        expect_secret_get(&mut handle, false).await;
        let body = expect_status_apply(&mut handle).await;
        let event = expect_event(&mut handle).await;
        (body, event)
    });
    run_reconcile(gate(&org, None, "1"), ctx).await;
    let (body, (type_, reason, note)) = api.await.unwrap();
    let status = &body["status"];
    let ready = condition(status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("AuthenticationFailed"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("orders/ado-pat") && message.contains("\"token\""),
        "{message}"
    );
    assert_eq!(condition(status, "Stalled")["status"], "True");
    assert_eq!(condition(status, "Reconciling")["status"], "False");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!((type_.as_str(), reason.as_str()), ("Warning", "AuthFailed"));
    assert!(note.contains("ado-pat"));
    assert!(ado.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn rejected_pat_is_authentication_failed_and_never_echoed() {
    let ado = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_string("Access Denied"))
        .mount(&ado)
        .await;
    let org = format!("{}/contoso", ado.uri());
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let api = tokio::spawn(async move {
        expect_secret_get(&mut handle, true).await;
        let body = expect_status_apply(&mut handle).await;
        let event = expect_event(&mut handle).await;
        (body, event)
    });
    run_reconcile(gate(&org, None, "1"), ctx).await;
    let (body, (_, reason, note)) = api.await.unwrap();
    assert_eq!(
        condition(&body["status"], "Ready")["reason"],
        "AuthenticationFailed"
    );
    assert_eq!(reason, "AuthFailed");
    assert!(!body.to_string().contains(PAT));
    assert!(!note.contains(PAT));
}

#[tokio::test]
async fn kubernetes_errors_back_off_exponentially_per_gate() {
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let g = Arc::new(gate("https://dev.azure.com/contoso", None, "1"));
    let err = crate::reconciler::Error::MissingNamespace {
        kind: "PipelineGate",
        name: NAME.into(),
    };
    let delays: Vec<_> = (0..3)
        .map(|_| super::reconcile::error_policy(g.clone(), &err, ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [1, 2, 4].map(|s| kube::runtime::controller::Action::requeue(Duration::from_secs(s)))
    );
    for _ in 0..20 {
        super::reconcile::error_policy(g.clone(), &err, ctx.clone());
    }
    assert_eq!(
        super::reconcile::error_policy(g, &err, ctx),
        kube::runtime::controller::Action::requeue(Duration::from_secs(300)),
        "capped"
    );
}

#[tokio::test]
async fn a_suspended_gate_reads_nothing_and_says_so_in_ready() {
    let ado = MockServer::start().await; // must not be called
    let org = format!("{}/contoso", ado.uri());
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let previous: PipelineGateStatus = serde_json::from_value(json!({
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "Run 20261122.4 succeeded",
             "observedGeneration": 1, "lastTransitionTime": "2026-11-22T10:00:00Z"},
            {"type": "Reconciling", "status": "False", "reason": "Succeeded", "message": "Run 20261122.4 succeeded",
             "observedGeneration": 1, "lastTransitionTime": "2026-11-22T10:00:00Z"},
            {"type": "Stalled", "status": "False", "reason": "Succeeded", "message": "Run 20261122.4 succeeded",
             "observedGeneration": 1, "lastTransitionTime": "2026-11-22T10:00:00Z"}
        ]
    }))
    .unwrap();
    let mut g = gate(&org, Some(previous), "1");
    g.spec.suspend = true;
    g.metadata.generation = Some(2);
    // No Secret read: the first call must already be the status apply.
    let api = tokio::spawn(async move { expect_status_apply(&mut handle).await });
    run_reconcile(g, ctx).await;
    let body = api.await.unwrap();
    let ready = condition(&body["status"], "Ready");
    assert_eq!(ready["status"], "True", "the last verdict stands");
    assert_eq!(ready["reason"], "Succeeded");
    assert_eq!(ready["observedGeneration"], 2);
    assert_eq!(ready["lastTransitionTime"], "2026-11-22T10:00:00Z");
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .starts_with("Suspended: "));
    assert_eq!(body["status"]["observedGeneration"], 2);
    assert!(ado.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn repeated_rate_limiting_writes_status_and_warns_once() {
    let ado = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "30"))
        .expect(1)
        .mount(&ado)
        .await;
    let org = format!("{}/contoso", ado.uri());
    let ado_client = AdoClient::new(ClientConfig {
        max_retries: 0,
        ..ClientConfig::default()
    })
    .unwrap();
    let settled: PipelineGateStatus = serde_json::from_value(json!({
        "observedGeneration": 1,
        "lastCheckedTime": jiff::Timestamp::now().to_string(),
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "Run 20261122.4 succeeded",
             "observedGeneration": 1, "lastTransitionTime": "2026-11-22T10:00:00Z"},
            {"type": "Reconciling", "status": "False", "reason": "Succeeded", "message": "Run 20261122.4 succeeded",
             "observedGeneration": 1, "lastTransitionTime": "2026-11-22T10:00:00Z"},
            {"type": "Stalled", "status": "False", "reason": "Succeeded", "message": "Run 20261122.4 succeeded",
             "observedGeneration": 1, "lastTransitionTime": "2026-11-22T10:00:00Z"}
        ]
    }))
    .unwrap();

    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let api = tokio::spawn(async move {
        expect_secret_get(&mut handle, true).await;
        let body = expect_status_apply(&mut handle).await;
        let event = expect_event(&mut handle).await;
        tx.send((body, event)).unwrap();
        // The second reconcile learns nothing new (the same hold, a second later): it may only read the Secret.
        expect_secret_get(&mut handle, true).await;
        handle
    });
    run_reconcile(
        gate(&org, Some(settled), "1"),
        context_with_ado(client.clone(), ado_client.clone()),
    )
    .await;
    let (body, (type_, reason, _)) = rx.await.unwrap();
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "AzureDevOpsError")
    );
    let written: PipelineGateStatus = serde_json::from_value(body["status"].clone()).unwrap();
    let last_error = written.last_error.clone().expect("lastError says why");
    assert!(last_error.contains("rate limiting"), "{last_error}");
    assert_eq!(
        condition(&body["status"], "Ready")["status"],
        "True",
        "the last verdict stands"
    );

    // Let the remaining hold tick down by at least a whole second, as a later poll would see it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run_reconcile(
        gate(&org, Some(written), "2"),
        context_with_ado(client, ado_client),
    )
    .await;
    let mut handle = api.await.unwrap();
    assert!(
        !matches!(
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await,
            Ok(Some(_))
        ),
        "a rate limit that is still on must not rewrite status or warn again"
    );
}

/// The requeue of an Action, from its Debug form (kube-runtime keeps the field private).
fn requeue_of(action: &kube::runtime::controller::Action) -> Option<Duration> {
    let debug = format!("{action:?}");
    let inner = debug.split("Some(").nth(1)?.split(')').next()?;
    let (number, scale) = if let Some(n) = inner.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = inner.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = inner.strip_suffix("ns") {
        (n, 1e-9)
    } else {
        (inner.strip_suffix('s')?, 1.0)
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}

#[tokio::test]
async fn every_duration_field_at_its_extremes_reconciles_and_requeues_within_bounds() {
    use crate::reconciler::schedule::MAX_REQUEUE;
    let succeeded = ado_with_succeeded_run().await;
    let running = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/build/builds"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 1, "value": [{
            "id": 42, "buildNumber": "20261122.5", "status": "inProgress",
            "queueTime": jiff::Timestamp::now().to_string(), "sourceBranch": "refs/heads/develop",
            "sourceVersion": "abcdef0123456789abcdef0123456789abcdef01",
            "definition": {"id": 183, "name": "base-image"}
        }]})))
        .mount(&running)
        .await;
    // The schema's smallest and largest values, and one past every bound (a value stored under an older
    // CRD), which must saturate rather than overflow anywhere between parse and requeue.
    let extremes = [
        "0s",
        "1s",
        "8760h",
        "9999999h9999999h9999999h9999999h",
        "9999999999999999h",
    ];
    for ado in [&succeeded, &running] {
        for value in extremes {
            let org = format!("{}/contoso", ado.uri());
            let mut g = serde_json::to_value(gate(&org, None, "1")).unwrap();
            g["spec"]["interval"] = json!(value);
            g["spec"]["policy"] = json!({"timeout": value, "staleAfter": value});
            let g: PipelineGate = serde_json::from_value(g).unwrap();
            let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
            let ctx = context(Client::new(service, "default"));
            let api = tokio::spawn(async move {
                expect_secret_get(&mut handle, true).await;
                let body = expect_status_apply(&mut handle).await;
                expect_event(&mut handle).await;
                body
            });
            let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(g), ctx))
                .await
                .expect("reconcile finished")
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            let body = api.await.unwrap();
            let ready = condition(&body["status"], "Ready");
            assert!(
                ready["status"] == "True" || ready["status"] == "False",
                "{value}: {ready}"
            );
            let after = requeue_of(&action).unwrap_or_else(|| panic!("{value}: {action:?}"));
            assert!(after <= MAX_REQUEUE, "{value}: requeue after {after:?}");
            // What kube-runtime does with it must not overflow either.
            assert!(std::time::Instant::now().checked_add(after).is_some());
        }
    }
}

#[tokio::test]
async fn a_definition_that_does_not_exist_is_not_found_not_no_runs() {
    let ado = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/build/builds"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 0, "value": []})))
        .mount(&ado)
        .await;
    Mock::given(method("GET"))
        .and(path("/contoso/Shop/_apis/build/definitions/183"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "$id": "1", "innerException": null,
            "message": "Build pipeline 183 was not found.",
            "typeName": "Microsoft.TeamFoundation.Build.WebApi.DefinitionNotFoundException, Microsoft.TeamFoundation.Build2.WebApi",
            "typeKey": "DefinitionNotFoundException", "errorCode": 0, "eventId": 3000
        })))
        .expect(1)
        .mount(&ado)
        .await;
    let org = format!("{}/contoso", ado.uri());
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let api = tokio::spawn(async move {
        expect_secret_get(&mut handle, true).await;
        let body = expect_status_apply(&mut handle).await;
        let event = expect_event(&mut handle).await;
        (body, event)
    });
    run_reconcile(gate(&org, None, "1"), ctx).await;
    let (body, (type_, _, note)) = api.await.unwrap();
    let ready = condition(&body["status"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "NotFound", "{ready}");
    assert_eq!(condition(&body["status"], "Stalled")["status"], "True");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("183") && message.contains("Shop"),
        "{message}"
    );
    assert_eq!(type_, "Warning");
    assert!(note.contains("183"), "{note}");
}

#[test]
fn the_cache_keeps_one_copy_of_equal_runs_and_the_json_does_not_change() {
    use crate::reconciler::runtime::CacheCompact;
    let run = |id: i64, result: &str| {
        json!({"id": id, "buildNumber": format!("20261130.{id}"), "status": "completed",
               "result": result, "sourceVersion": "0123456789abcdef0123456789abcdef01234567",
               "webUrl": format!("https://dev.azure.com/o/P/_build/results?buildId={id}")})
    };
    let status = json!({
        "conditions": [],
        "latestRun": run(7, "succeeded"),
        "lastCompletedRun": run(7, "succeeded"),
        "lastSucceededRun": run(7, "succeeded"),
    });
    let mut open = gate(
        "https://dev.azure.com/o",
        Some(serde_json::from_value(status.clone()).unwrap()),
        "1",
    );
    let decoded = open.status.clone().unwrap();
    let latest = decoded.latest_run.as_ref().unwrap();
    assert!(!Arc::ptr_eq(
        latest,
        decoded.last_succeeded_run.as_ref().unwrap()
    ));

    open.compact_for_cache();
    let s = open.status.as_ref().unwrap();
    let latest = s.latest_run.as_ref().unwrap();
    assert!(Arc::ptr_eq(latest, s.last_completed_run.as_ref().unwrap()));
    assert!(Arc::ptr_eq(latest, s.last_succeeded_run.as_ref().unwrap()));
    assert_eq!(serde_json::to_value(s).unwrap(), status);

    // A run in flight over an older success: only the equal pair is shared.
    let status = json!({
        "conditions": [],
        "latestRun": {"id": 8, "status": "inProgress"},
        "lastCompletedRun": run(7, "succeeded"),
        "lastSucceededRun": run(7, "succeeded"),
    });
    let mut waiting = gate(
        "https://dev.azure.com/o",
        Some(serde_json::from_value(status.clone()).unwrap()),
        "2",
    );
    waiting.compact_for_cache();
    let s = waiting.status.as_ref().unwrap();
    assert!(!Arc::ptr_eq(
        s.latest_run.as_ref().unwrap(),
        s.last_completed_run.as_ref().unwrap()
    ));
    assert!(Arc::ptr_eq(
        s.last_completed_run.as_ref().unwrap(),
        s.last_succeeded_run.as_ref().unwrap()
    ));
    assert_eq!(serde_json::to_value(s).unwrap(), status);

    // Equal by value only: a failed completed run is not the succeeded one.
    let mut blocked: PipelineGateStatus = serde_json::from_value(json!({
        "conditions": [],
        "latestRun": run(9, "failed"),
        "lastCompletedRun": run(9, "failed"),
        "lastSucceededRun": run(7, "succeeded"),
    }))
    .unwrap();
    blocked.share_equal_runs();
    assert!(Arc::ptr_eq(
        blocked.latest_run.as_ref().unwrap(),
        blocked.last_completed_run.as_ref().unwrap()
    ));
    assert_eq!(blocked.last_succeeded_run.as_ref().unwrap().id, 7);
}
