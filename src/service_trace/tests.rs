//! ServiceTrace reconciler tests: Azure DevOps is the test kit's simulator (real REST shapes, real
//! prefix-matching refs), Kubernetes a mock API server that asserts each call in order. An unexpected call
//! leaves the reconcile waiting for an answer, which the timeout turns into a failure.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use lockstep_testkit::ado::{AdoSimulator, RunResult};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use super::reconcile::{reconcile, TraceContext};
use super::status::desired_status;
use crate::ado::{AdoClient, ClientConfig};
use crate::crd::{ServiceTrace, ServiceTraceStatus};
use crate::poll_cache::PollCache;
use crate::reconciler::ReconcileIo;
use crate::reconciler::ReconcilerConfig;
use crate::telemetry::Metrics;

const PAT: &str = "pat-trace-0123456789-secret";
const ORG: &str = "contoso";
const PROJECT: &str = "Shop";
const NS: &str = "orders";
const SRC: &str = "1234567bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const MANIFEST: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const CLUSTER: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";

type ApiHandle = Handle<Request<Body>, Response<Body>>;

struct Ado {
    sim: AdoSimulator,
}

impl Ado {
    /// CI definition 12 and manifest generation 14; repository `orders-manifests` at MANIFEST.
    async fn start() -> Self {
        let sim = AdoSimulator::start().await.expect("simulator starts");
        sim.add_token(ORG, PAT);
        sim.add_project(ORG, PROJECT);
        sim.add_definition(ORG, PROJECT, 12, "orders-ci");
        sim.add_definition(ORG, PROJECT, 14, "orders-manifests");
        sim.add_repository(ORG, PROJECT, "orders-manifests", &[("main", MANIFEST)]);
        Ado { sim }
    }

    fn ci_succeeded(&self) -> i64 {
        let id = self.sim.queue_run(ORG, PROJECT, 12, "main", SRC);
        self.sim.start_run(id);
        self.sim.complete_run(id, RunResult::Succeeded);
        id
    }

    fn generation(&self, result: RunResult) -> i64 {
        let id = self.sim.queue_run(ORG, PROJECT, 14, "main", SRC);
        self.sim.start_run(id);
        self.sim.complete_run(id, result);
        id
    }
}

fn trace_object(org_url: &str, name: &str, repository: &str, deployed: Value) -> ServiceTrace {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1",
        "kind": "ServiceTrace",
        "metadata": {"name": name, "namespace": NS, "generation": 1, "resourceVersion": "1", "uid": format!("u-{name}")},
        "spec": {
            "azureDevOps": {"organizationUrl": org_url, "project": PROJECT, "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "build": {"definitionId": 12, "branch": "main"},
            "manifest": {"repository": repository, "branch": "main", "definitionId": 14},
            "deployed": deployed,
        }
    }))
    .expect("valid ServiceTrace")
}

fn flux_deployed() -> Value {
    json!({"fluxKustomization": {"name": "orders", "namespace": "flux-system"}})
}

fn context(client: Client) -> Arc<TraceContext> {
    context_with_registry(client).0
}

fn context_with_registry(client: Client) -> (Arc<TraceContext>, Registry) {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let recorders = crate::reconciler::events::test_recorders(&client);
    let io = ReconcileIo {
        client,
        ado: AdoClient::new(ClientConfig {
            max_retries: 0,
            ..ClientConfig::default()
        })
        .expect("client"),
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
    let ctx = Arc::new(TraceContext::new(
        io,
        kube::runtime::reflector::store::Writer::<ServiceTrace>::default().as_reader(),
    ));
    (ctx, registry)
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{what} not found")})
}

async fn expect_get(handle: &mut ApiHandle, path: &str, reply: (u16, Value)) {
    let (req, send) = handle.next_request().await.expect("a GET");
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri().path(), path);
    send.send_response(json_response(reply.0, &reply.1));
}

async fn expect_secret(handle: &mut ApiHandle) {
    let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, PAT);
    expect_get(
        handle,
        &format!("/api/v1/namespaces/{NS}/secrets/ado-pat"),
        (200, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ado-pat", "namespace": NS}, "data": {"token": token}})),
    )
    .await;
}

fn kustomization(revision: &str) -> (u16, Value) {
    (
        200,
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "orders", "namespace": "flux-system", "generation": 1},
            "spec": {"interval": "5m", "path": "./", "prune": true},
            "status": {
                "observedGeneration": 1,
                "lastAppliedRevision": format!("main@sha1:{revision}"),
                "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied"}]
            }
        }),
    )
}

async fn expect_kustomization(handle: &mut ApiHandle, reply: (u16, Value)) {
    expect_get(
        handle,
        "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/orders",
        reply,
    )
    .await;
}

async fn expect_status_apply(handle: &mut ApiHandle, name: &str) -> Value {
    let (req, send) = handle.next_request().await.expect("status PATCH");
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(
        req.uri().path(),
        format!("/apis/lockstep.dev/v1alpha1/namespaces/{NS}/servicetraces/{name}/status")
    );
    let query = req.uri().query().unwrap_or_default().to_string();
    assert!(
        query.contains("fieldManager=lockstep") && query.contains("force=true"),
        "{query}"
    );
    let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
        .expect("json body");
    let mut object =
        serde_json::to_value(trace_object("https://x", name, "r", flux_deployed())).expect("json");
    object["status"] = body["status"].clone();
    send.send_response(json_response(200, &object));
    body
}

async fn expect_event(handle: &mut ApiHandle) -> (String, String, String) {
    let (req, send) = handle.next_request().await.expect("event POST");
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(
        req.uri().path(),
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
    );
    let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.expect("body"))
        .expect("json body");
    send.send_response(json_response(201, &body));
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    (field("type"), field("reason"), field("note"))
}

async fn run_reconcile(trace: ServiceTrace, ctx: Arc<TraceContext>) {
    tokio::time::timeout(Duration::from_secs(20), reconcile(Arc::new(trace), ctx))
        .await
        .expect("reconcile made a call the scenario did not expect")
        .expect("reconcile failed");
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn ready(status: &Value) -> (String, String, String) {
    let c = condition(status, "Ready");
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

/// Reconcile one trace whose deployed object answers `deployed`; returns the status body and the Event.
async fn reconcile_once(
    ado: &Ado,
    trace: ServiceTrace,
    deployed: (u16, Value),
) -> (Value, (String, String, String)) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let name = trace.metadata.name.clone().unwrap_or_default();
    let api = tokio::spawn(async move {
        expect_secret(&mut handle).await;
        expect_kustomization(&mut handle, deployed).await;
        let body = expect_status_apply(&mut handle, &name).await;
        let event = expect_event(&mut handle).await;
        (body, event)
    });
    let _ = &ado.sim;
    run_reconcile(trace, ctx).await;
    api.await.expect("API scenario")
}

#[tokio::test]
async fn synced_flux_trace_is_ready_with_every_stage_filled_in() {
    let ado = Ado::start().await;
    let ci = ado.ci_succeeded();
    let generation = ado.generation(RunResult::Succeeded);
    let trace = trace_object(
        &ado.sim.org_url(ORG),
        "orders",
        "orders-manifests",
        flux_deployed(),
    );
    let (body, (type_, reason, note)) = reconcile_once(&ado, trace, kustomization(MANIFEST)).await;

    let status = &body["status"];
    let (ready_status, ready_reason, message) = ready(status);
    assert_eq!(
        (ready_status.as_str(), ready_reason.as_str()),
        ("True", "InSync"),
        "{message}"
    );
    assert!(
        message.ends_with("Kustomization flux-system/orders runs manifest a1b2c3d"),
        "{message}"
    );
    assert_eq!(condition(status, "Reconciling")["status"], "False");
    assert_eq!(condition(status, "Stalled")["status"], "False");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["manifestCommitId"], MANIFEST);
    assert_eq!(status["manifestCommitShort"], "a1b2c3d");
    assert_eq!(status["deployedRevisionShort"], "a1b2c3d");
    let stages = status["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["build", "manifest", "deployed"]);
    assert!(
        stages.iter().all(|s| s["state"] == "Succeeded"),
        "{stages:?}"
    );
    assert_eq!(stages[0]["run"]["id"], ci);
    assert_eq!(stages[0]["commit"], SRC);
    assert_eq!(status["imageTag"], stages[0]["run"]["buildNumber"]);
    assert_eq!(stages[1]["run"]["id"], generation);
    assert!(
        stages[1]["webUrl"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/commit/{MANIFEST}"))),
        "{stages:?}"
    );
    assert!(stages.iter().all(|s| s["updatedTime"].is_string()));
    assert_eq!((type_.as_str(), reason.as_str()), ("Normal", "TraceReady"));
    assert!(!body.to_string().contains(PAT) && !note.contains(PAT));
}

#[tokio::test]
async fn cluster_behind_the_manifest_head_is_reconciling_naming_the_kustomization() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let trace = trace_object(
        &ado.sim.org_url(ORG),
        "orders",
        "orders-manifests",
        flux_deployed(),
    );
    let (body, (_, reason, _)) = reconcile_once(&ado, trace, kustomization(CLUSTER)).await;
    let status = &body["status"];
    assert_eq!(
        ready(status),
        (
            "False".into(),
            "DeployPending".into(),
            "manifest a1b2c3d not yet applied by Kustomization flux-system/orders; cluster at 9f8e7d6".into()
        )
    );
    assert_eq!(condition(status, "Reconciling")["status"], "True");
    assert_eq!(status["deployedRevisionShort"], "9f8e7d6");
    assert_eq!(reason, "TraceProgressing");
}

#[tokio::test]
async fn failed_manifest_generation_is_stalled_naming_the_stage() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    let generation = ado.generation(RunResult::Failed);
    let trace = trace_object(
        &ado.sim.org_url(ORG),
        "orders",
        "orders-manifests",
        flux_deployed(),
    );
    let (body, (type_, reason, note)) = reconcile_once(&ado, trace, kustomization(MANIFEST)).await;
    let status = &body["status"];
    let (s, r, message) = ready(status);
    assert_eq!(
        (s.as_str(), r.as_str()),
        ("False", "ManifestGenerationFailed")
    );
    assert!(
        message.starts_with("manifest generation ")
            && message.contains(" failed; manifest at a1b2c3d"),
        "{message}"
    );
    assert!(
        message.contains(&format!("buildId={generation}")),
        "{message}"
    );
    assert_eq!(condition(status, "Stalled")["status"], "True");
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Warning", "TraceStalled")
    );
    assert_eq!(note, message);
}

#[tokio::test]
async fn running_ci_build_is_reconciling() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let running = ado.sim.queue_run(ORG, PROJECT, 12, "main", CLUSTER);
    ado.sim.start_run(running);
    let trace = trace_object(
        &ado.sim.org_url(ORG),
        "orders",
        "orders-manifests",
        flux_deployed(),
    );
    let (body, _) = reconcile_once(&ado, trace, kustomization(MANIFEST)).await;
    let (s, r, message) = ready(&body["status"]);
    assert_eq!((s.as_str(), r.as_str()), ("False", "BuildInProgress"));
    assert!(
        message.ends_with("is running for commit 9f8e7d6"),
        "{message}"
    );
}

#[tokio::test]
async fn missing_repository_stalls_that_trace_only() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let org_url = ado.sim.org_url(ORG);

    let broken = trace_object(&org_url, "broken", "no-such-repo", flux_deployed());
    let (body, (type_, _, _)) = reconcile_once(&ado, broken, kustomization(MANIFEST)).await;
    let (s, r, message) = ready(&body["status"]);
    assert_eq!((s.as_str(), r.as_str()), ("False", "ReferenceUnreadable"));
    assert!(
        message.starts_with("manifest repository no-such-repo: "),
        "{message}"
    );
    assert!(message.contains("no-such-repo"), "{message}");
    assert_eq!(condition(&body["status"], "Stalled")["status"], "True");
    assert_eq!(type_, "Warning");

    let healthy = trace_object(&org_url, "orders", "orders-manifests", flux_deployed());
    let (body, _) = reconcile_once(&ado, healthy, kustomization(MANIFEST)).await;
    assert_eq!(ready(&body["status"]).0, "True");
}

#[tokio::test]
async fn missing_kustomization_is_stalled_naming_it() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let trace = trace_object(
        &ado.sim.org_url(ORG),
        "orders",
        "orders-manifests",
        flux_deployed(),
    );
    let (body, _) =
        reconcile_once(&ado, trace, (404, not_found("kustomizations \"orders\""))).await;
    let (s, r, message) = ready(&body["status"]);
    assert_eq!((s.as_str(), r.as_str()), ("False", "ReferenceUnreadable"));
    assert!(
        message.starts_with("Kustomization flux-system/orders: not found"),
        "{message}"
    );
}

#[tokio::test]
async fn workload_variant_reads_the_image_tag() {
    let ado = Ado::start().await;
    let ci = ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let build_number = ado.sim.run(ci).map(|r| r.build_number).expect("run exists");
    let trace = trace_object(
        &ado.sim.org_url(ORG),
        "orders",
        "orders-manifests",
        json!({"workload": {"kind": "Deployment", "name": "orders", "container": "app"}}),
    );
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "orders", "namespace": NS, "generation": 2},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "orders"}}, "template": {
            "metadata": {"labels": {"app": "orders"}},
            "spec": {"containers": [{"name": "app", "image": format!("contoso.azurecr.io/orders:{build_number}")}]}}},
        "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
    });
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let api = tokio::spawn(async move {
        expect_secret(&mut handle).await;
        expect_get(
            &mut handle,
            &format!("/apis/apps/v1/namespaces/{NS}/deployments/orders"),
            (200, deployment),
        )
        .await;
        let body = expect_status_apply(&mut handle, "orders").await;
        expect_event(&mut handle).await;
        body
    });
    run_reconcile(trace, ctx).await;
    let body = api.await.expect("API scenario");
    let (s, _, message) = ready(&body["status"]);
    assert_eq!(s, "True", "{message}");
    assert_eq!(body["status"]["deployedRevision"], build_number.as_str());
}

#[tokio::test]
async fn unchanged_trace_writes_nothing() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let org_url = ado.sim.org_url(ORG);
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let api = tokio::spawn(async move {
        expect_secret(&mut handle).await;
        expect_kustomization(&mut handle, kustomization(MANIFEST)).await;
        let body = expect_status_apply(&mut handle, "orders").await;
        expect_event(&mut handle).await;
        // The newest build reached the (only) environment: one BuildArrived Event.
        assert_eq!(expect_event(&mut handle).await.1, "BuildArrived");
        let _ = tx.send(body);
        // The second reconcile only reads.
        expect_secret(&mut handle).await;
        expect_kustomization(&mut handle, kustomization(MANIFEST)).await;
        handle
    });
    run_reconcile(
        trace_object(&org_url, "orders", "orders-manifests", flux_deployed()),
        ctx.clone(),
    )
    .await;
    let written: ServiceTraceStatus =
        serde_json::from_value(rx.await.expect("first write")["status"].clone()).expect("status");
    let mut again = trace_object(&org_url, "orders", "orders-manifests", flux_deployed());
    again.metadata.resource_version = Some("2".into());
    again.status = Some(written);
    run_reconcile(again, ctx).await;
    let mut handle = api.await.expect("API scenario");
    assert!(
        !matches!(
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await,
            Ok(Some(_))
        ),
        "an unchanged trace must not write status or record Events"
    );
}

#[test]
fn last_checked_time_is_kept_while_nothing_changes_and_refreshed_later() {
    use crate::service_trace::deployed::{
        AgentState, DeployedKind, DeployedObservation, DeployedTarget,
    };
    use crate::service_trace::revision::{DeployedRevision, GitRevision};
    use crate::service_trace::stages::{
        trace, BuildInput, DeployedInput, HeadCommit, RepoInput, TraceInput,
    };

    let ts = |s: &str| s.parse::<jiff::Timestamp>().expect("timestamp");
    let input = |now: &str| TraceInput {
        build: BuildInput {
            definition_id: 12,
            branch: "refs/heads/main".into(),
            runs: Ok(vec![]),
        },
        hld: None,
        manifest: RepoInput {
            repository: "m".into(),
            branch: "refs/heads/main".into(),
            web_url: None,
            head: Ok(Some(HeadCommit {
                id: MANIFEST.into(),
                committed: None,
            })),
        },
        manifest_generation: None,
        deployed: DeployedInput {
            target: DeployedTarget {
                kind: DeployedKind::FluxKustomization,
                namespace: "f".into(),
                name: "o".into(),
            },
            observed: Ok(DeployedObservation {
                revision: Some(DeployedRevision::Commit(GitRevision {
                    reference: None,
                    commit: MANIFEST.into(),
                })),
                agent: AgentState::Settled,
            }),
        },
        now: ts(now),
    };
    let first = desired_status(
        &trace(&input("2026-11-22T10:00:00Z")),
        &ServiceTraceStatus::default(),
        Some(1),
        ts("2026-11-22T10:00:00Z"),
    );
    assert_eq!(
        first.last_checked_time.as_ref().map(|t| t.0),
        Some(ts("2026-11-22T10:00:00Z"))
    );
    assert_eq!(
        trace(&input("2026-11-22T10:00:00Z")).kstatus.reason,
        "NoSuccessfulBuild"
    );

    let soon = desired_status(
        &trace(&input("2026-11-22T10:01:00Z")),
        &first,
        Some(1),
        ts("2026-11-22T10:01:00Z"),
    );
    assert_eq!(soon, first, "nothing changed one minute later: no write");

    let later = desired_status(
        &trace(&input("2026-11-22T10:06:00Z")),
        &first,
        Some(1),
        ts("2026-11-22T10:06:00Z"),
    );
    assert_eq!(
        later.last_checked_time.as_ref().map(|t| t.0),
        Some(ts("2026-11-22T10:06:00Z"))
    );
    assert_eq!(
        later.conditions, first.conditions,
        "conditions keep their transition times"
    );

    let mut failed = first.clone();
    failed.last_error = Some("Azure DevOps is unavailable".into());
    let recovered = desired_status(
        &trace(&input("2026-11-22T10:01:00Z")),
        &failed,
        Some(1),
        ts("2026-11-22T10:01:00Z"),
    );
    assert_eq!(recovered.last_error, None);
    assert_eq!(
        recovered.last_checked_time.as_ref().map(|t| t.0),
        Some(ts("2026-11-22T10:01:00Z"))
    );
}

#[tokio::test]
async fn transient_outage_keeps_the_verdict_and_says_why() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let org_url = ado.sim.org_url(ORG);
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let api = tokio::spawn(async move {
        expect_secret(&mut handle).await;
        expect_kustomization(&mut handle, kustomization(MANIFEST)).await;
        let first = expect_status_apply(&mut handle, "orders").await;
        expect_event(&mut handle).await;
        assert_eq!(expect_event(&mut handle).await.1, "BuildArrived");
        let _ = tx.send(first);
        // During the outage: reads, then a status write with lastError only; no Event.
        expect_secret(&mut handle).await;
        expect_kustomization(&mut handle, kustomization(MANIFEST)).await;
        let second = expect_status_apply(&mut handle, "orders").await;
        (second, handle)
    });
    run_reconcile(
        trace_object(&org_url, "orders", "orders-manifests", flux_deployed()),
        ctx.clone(),
    )
    .await;
    let first = rx.await.expect("first write");
    let written: ServiceTraceStatus =
        serde_json::from_value(first["status"].clone()).expect("status");

    ado.sim.fail_next(50, 503);
    let mut again = trace_object(&org_url, "orders", "orders-manifests", flux_deployed());
    again.metadata.resource_version = Some("2".into());
    again.status = Some(written);
    run_reconcile(again, ctx).await;
    let (second, mut handle) = api.await.expect("API scenario");
    ado.sim.clear_faults();

    assert_eq!(
        second["status"]["conditions"],
        first["status"]["conditions"]
    );
    assert_eq!(second["status"]["stages"], first["status"]["stages"]);
    let last_error = second["status"]["lastError"].as_str().unwrap_or_default();
    assert!(last_error.contains("unavailable"), "{last_error}");
    assert!(!second.to_string().contains(PAT));
    assert!(
        !matches!(
            tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await,
            Ok(Some(_))
        ),
        "a transient error records no Event"
    );
}

#[test]
fn watch_mapper_picks_the_traces_that_reference_the_object() {
    use super::reconcile::traces_deployed_on;
    use crate::crd::WorkloadKind;
    use crate::service_trace::deployed::DeployedKind;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    let mut writer = Writer::<ServiceTrace>::default();
    let flux = trace_object(
        "https://dev.azure.com/contoso",
        "flux",
        "m",
        flux_deployed(),
    );
    let same_namespace = trace_object(
        "https://dev.azure.com/contoso",
        "local",
        "m",
        json!({"fluxKustomization": {"name": "orders"}}),
    );
    let workload = trace_object(
        "https://dev.azure.com/contoso",
        "workload",
        "m",
        json!({"workload": {"kind": "Deployment", "name": "orders"}}),
    );
    for t in [&flux, &same_namespace, &workload] {
        writer.apply_watcher_event(&watcher::Event::Apply(t.clone()));
    }
    let store = writer.as_reader();
    let names = |refs: Vec<kube::runtime::reflector::ObjectRef<ServiceTrace>>| {
        let mut n: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    };
    assert_eq!(
        names(traces_deployed_on(
            &store,
            DeployedKind::FluxKustomization,
            Some("flux-system"),
            Some("orders")
        )),
        ["flux"]
    );
    // A reference without a namespace means the trace's own.
    assert_eq!(
        names(traces_deployed_on(
            &store,
            DeployedKind::FluxKustomization,
            Some(NS),
            Some("orders")
        )),
        ["local"]
    );
    assert_eq!(
        names(traces_deployed_on(
            &store,
            DeployedKind::Workload(WorkloadKind::Deployment),
            Some(NS),
            Some("orders")
        )),
        ["workload"]
    );
    assert!(traces_deployed_on(
        &store,
        DeployedKind::ArgoApplication,
        Some(NS),
        Some("orders")
    )
    .is_empty());
    assert!(traces_deployed_on(
        &store,
        DeployedKind::Workload(WorkloadKind::StatefulSet),
        Some(NS),
        Some("orders")
    )
    .is_empty());
    assert!(traces_deployed_on(
        &store,
        DeployedKind::FluxKustomization,
        None,
        Some("orders")
    )
    .is_empty());
}

#[tokio::test]
async fn ready_gauge_counts_traces() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (ctx, registry) = context_with_registry(Client::new(service, "default"));
    let api = tokio::spawn(async move {
        expect_secret(&mut handle).await;
        expect_kustomization(&mut handle, kustomization(MANIFEST)).await;
        expect_status_apply(&mut handle, "orders").await;
        expect_event(&mut handle).await;
    });
    run_reconcile(
        trace_object(
            &ado.sim.org_url(ORG),
            "orders",
            "orders-manifests",
            flux_deployed(),
        ),
        ctx,
    )
    .await;
    api.await.expect("API scenario");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let line = text
        .lines()
        .find(|l| l.contains("kind=\"ServiceTrace\"") && l.contains("ready=\"True\""))
        .unwrap_or_else(|| panic!("no ServiceTrace Ready=True gauge in:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
}

/// The manifest head a generation-less layout pushes after the CI build.
const PUSHED_MANIFEST: &str = "b2c3d4e5f60718293a4b5c6d7e8f901234567890";

/// A trace without `manifest.definitionId`: the manifest head is ordered by its committer date.
fn trace_without_generation(org_url: &str) -> ServiceTrace {
    let mut trace = trace_object(org_url, "orders", "orders-manifests", flux_deployed());
    trace.spec.manifest.definition_id = None;
    trace
}

#[tokio::test]
async fn without_a_generation_pipeline_a_manifest_committed_after_the_build_is_ready() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.sim
        .push(ORG, PROJECT, "orders-manifests", "main", PUSHED_MANIFEST);
    let org_url = ado.sim.org_url(ORG);
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let api = tokio::spawn(async move {
        expect_secret(&mut handle).await;
        expect_kustomization(&mut handle, kustomization(PUSHED_MANIFEST)).await;
        let body = expect_status_apply(&mut handle, "orders").await;
        expect_event(&mut handle).await;
        assert_eq!(expect_event(&mut handle).await.1, "BuildArrived");
        let _ = tx.send(body);
        expect_secret(&mut handle).await;
        expect_kustomization(&mut handle, kustomization(PUSHED_MANIFEST)).await;
    });
    run_reconcile(trace_without_generation(&org_url), ctx.clone()).await;
    let body = rx.await.expect("first write");
    let status = &body["status"];
    let (ready_status, reason, message) = ready(status);
    assert_eq!(
        (ready_status.as_str(), reason.as_str()),
        ("True", "InSync"),
        "{message}"
    );
    let stages = status["stages"].as_array().expect("stages");
    assert_eq!(stages[1]["name"], "manifest");
    assert_eq!(stages[1]["state"], "Succeeded");
    let manifest_message = stages[1]["message"].as_str().unwrap_or_default();
    assert!(
        manifest_message.starts_with("manifest b2c3d4e committed after build "),
        "{manifest_message}"
    );
    assert!(stages[1]["run"].is_null(), "{stages:?}");
    // The head's committer date, the manifest branch's recent commits and the source commit (which
    // this simulator's CI repository does not hold: a 404, remembered like an answer).
    let first = ado.sim.count_requests("/commits");
    assert_eq!(first, 3);

    // The head did not move: its date comes from memory, not from another request.
    let mut again = trace_without_generation(&org_url);
    again.metadata.resource_version = Some("2".into());
    again.status = Some(serde_json::from_value(status.clone()).expect("status"));
    run_reconcile(again, ctx).await;
    api.await.expect("API scenario");
    assert_eq!(ado.sim.count_requests("/commits"), first);
}

#[tokio::test]
async fn without_a_generation_pipeline_a_manifest_older_than_the_build_waits() {
    let ado = Ado::start().await;
    let ci = ado.ci_succeeded();
    let build_number = ado.sim.run(ci).map(|r| r.build_number).expect("run");
    // Committed ten minutes before the build finished, pushed after it: not generated from it.
    let made = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
    ado.sim.push_committed_at(
        ORG,
        PROJECT,
        "orders-manifests",
        "main",
        PUSHED_MANIFEST,
        made,
    );
    let trace = trace_without_generation(&ado.sim.org_url(ORG));
    let (body, (_, event_reason, _)) =
        reconcile_once(&ado, trace, kustomization(PUSHED_MANIFEST)).await;
    let status = &body["status"];
    let (ready_status, reason, message) = ready(status);
    assert_eq!(
        (ready_status.as_str(), reason.as_str()),
        ("False", "ManifestBehindBuild"),
        "{message}"
    );
    let committed = format!(
        "{:.0}",
        jiff::Timestamp::from_second(made.as_second()).expect("valid")
    );
    assert!(
        message.starts_with(&format!(
            "manifest b2c3d4e (committed {committed}) predates build {build_number} (finished "
        )) && message.ends_with("); waiting for the manifest update"),
        "{message}"
    );
    assert_eq!(condition(status, "Reconciling")["status"], "True");
    assert_eq!(condition(status, "Stalled")["status"], "False");
    assert_eq!(event_reason, "TraceProgressing");
}

#[tokio::test]
async fn with_a_generation_pipeline_no_commit_is_read() {
    let ado = Ado::start().await;
    ado.ci_succeeded();
    ado.generation(RunResult::Succeeded);
    let trace = trace_object(
        &ado.sim.org_url(ORG),
        "orders",
        "orders-manifests",
        flux_deployed(),
    );
    let (body, _) = reconcile_once(&ado, trace, kustomization(MANIFEST)).await;
    assert_eq!(ready(&body["status"]).0, "True");
    // No committer date is read; only the flow's manifest branch list and the source commit.
    assert_eq!(ado.sim.count_requests("/commits"), 2);
}

#[tokio::test]
async fn a_new_build_found_by_polling_before_any_hook_counts_for_webhook_health() {
    use crate::reconciler::hints::{HintLog, WebhookHints};
    use crate::service_trace::reconcile::note_polled_change;
    use crate::telemetry::WebhookMetrics;

    struct NeverHinted;
    impl HintLog for NeverHinted {
        fn last_hint(&self, _: &str, _: Option<&str>, _: &str) -> Option<std::time::Instant> {
            None
        }
    }
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Arc::try_unwrap(context(Client::new(service, "default")))
        .ok()
        .expect("sole owner");
    let mut registry = Registry::default();
    let metrics = WebhookMetrics::register(&mut registry);
    let ctx = ctx.with_webhook_hints(WebhookHints {
        log: Arc::new(NeverHinted),
        metrics,
        gate_relay: Default::default(),
    });
    let trace = trace_object("https://x", "orders", "r", flux_deployed());
    let key = kube::runtime::reflector::ObjectRef::from_obj(&trace);
    let verdict = |build: i64, head: &str| {
        use crate::service_trace::stages::{Stage, StageName, StageState, TraceVerdict};
        TraceVerdict {
            stages: vec![Stage {
                name: StageName::Build,
                commit: None,
                run: Some(serde_json::from_value(json!({"id": build})).expect("build")),
                state: StageState::Succeeded,
                web_url: None,
                message: String::new(),
                hold: None,
            }],
            manifest_commit_id: Some(head.to_string()),
            deployed_revision: None,
            image_tag: None,
            kstatus: crate::conditions::Kstatus::ready("InSync", "deployed"),
            in_flight: false,
            now: jiff::Timestamp::UNIX_EPOCH,
        }
    };
    let mut previous = ServiceTraceStatus::default();
    let count = |registry: &Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text.lines()
            .find(|l| {
                l.starts_with("lockstep_webhook_polling_found_first_total{kind=\"ServiceTrace\"}")
            })
            .map(|l| l.rsplit(' ').next().unwrap_or("0").to_string())
            .unwrap_or_else(|| "0".into())
    };
    // The first poll has nothing to compare with.
    note_polled_change(&ctx, &key, &previous, &verdict(1, MANIFEST));
    assert_eq!(count(&registry), "0");
    previous.latest = Some(crate::crd::TracedChange {
        build: crate::crd::BuildInfo {
            id: 1,
            ..Default::default()
        },
        ..Default::default()
    });
    previous.manifest_commit_id = Some(MANIFEST.into());
    note_polled_change(&ctx, &key, &previous, &verdict(1, MANIFEST));
    assert_eq!(count(&registry), "0", "nothing changed");
    note_polled_change(&ctx, &key, &previous, &verdict(2, MANIFEST));
    assert_eq!(count(&registry), "1", "a new build no hook announced");
    note_polled_change(
        &ctx,
        &key,
        &previous,
        &verdict(1, "ffffffffffffffffffffffffffffffffffffffff"),
    );
    assert_eq!(
        count(&registry),
        "2",
        "a moved manifest head no hook announced"
    );
}

#[tokio::test]
async fn a_suspended_failed_trace_stays_stalled_and_says_suspended() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "default"));
    let mut trace = trace_object("https://dev.azure.com/contoso", "t", "r", flux_deployed());
    trace.spec.suspend = true;
    trace.metadata.generation = Some(2);
    let t = "2026-11-22T10:00:00Z";
    let cond = |type_: &str, status: &str| {
        json!({"type": type_, "status": status, "reason": "DeployFailed", "message": "Kustomization failed",
               "observedGeneration": 1, "lastTransitionTime": t})
    };
    trace.status = Some(
        serde_json::from_value(json!({
            "observedGeneration": 1,
            "conditions": [cond("Ready", "False"), cond("Reconciling", "False"), cond("Stalled", "True")]
        }))
        .unwrap(),
    );
    // Suspended: nothing is read, the first request is the status apply.
    let api = tokio::spawn(async move { expect_status_apply(&mut handle, "t").await });
    run_reconcile(trace, ctx).await;
    let body = api.await.unwrap();
    let status = &body["status"];
    // kstatus would read Ready=False without Stalled as InProgress.
    for (type_, want) in [
        ("Ready", "False"),
        ("Stalled", "True"),
        ("Reconciling", "False"),
    ] {
        let c = condition(status, type_);
        assert_eq!(c["status"], want, "{type_}: {c}");
        assert_eq!(c["lastTransitionTime"], t, "{type_} did not transition");
        assert!(
            c["message"].as_str().unwrap().starts_with("Suspended: "),
            "{c}"
        );
    }
    assert_eq!(condition(status, "Ready")["reason"], "DeployFailed");
}
