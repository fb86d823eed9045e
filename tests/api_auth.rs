//! Who may read the API, against the Kubernetes API emulator's TokenReview and SubjectAccessReview
//! (RBAC rule semantics): 401 without or with a bad token, 403 where RBAC does not grant, 200 where it
//! does; a token allowed in one namespace cannot read another's gates, lists show only the namespaces
//! the caller may list, and decisions are cached (one review per identity and question, not per request).

use std::time::Duration;

use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use lockstep::api::{self, ApiCaches, Authenticator};
use lockstep::crd::{PipelineGate, ServiceTrace};
use lockstep::secret::SecretString;
use lockstep_testkit::kube::{EmulatorConfig, Grant, KubeEmulator};
use serde_json::{json, Value};

const READER: &str = "system:serviceaccount:web:reader";

fn gate(ns: &str, name: &str) -> PipelineGate {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1", "generation": 1},
        "spec": {
            "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                            "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "pipeline": {"definitionId": 42, "branch": "main"}
        }
    }))
    .unwrap()
}

struct Env {
    emu: KubeEmulator,
    base: String,
    http: reqwest::Client,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Env {
    async fn start() -> Env {
        let emu = KubeEmulator::start(EmulatorConfig::default())
            .await
            .unwrap();
        let auth = emu.auth();
        auth.add_token("tok-web", READER, &[]);
        auth.add_token("tok-bob", "bob", &[]);
        auth.add_token("tok-carol", "carol", &["viewers"]);
        auth.grant(
            Grant::user(
                READER,
                &["get", "list", "watch"],
                "lockstep.dev",
                &["pipelinegates", "servicetraces"],
            )
            .in_namespace("web"),
        )
        .unwrap();
        // carol may read one gate by name only, through her group.
        auth.grant(
            Grant::group("viewers", &["get"], "lockstep.dev", &["pipelinegates"])
                .in_namespace("web")
                .names(&["g1"]),
        )
        .unwrap();

        let mut gates = Writer::<PipelineGate>::default();
        let mut traces = Writer::<ServiceTrace>::default();
        gates.apply_watcher_event(&watcher::Event::Init);
        for g in [gate("web", "g1"), gate("web", "g2"), gate("billing", "b1")] {
            gates.apply_watcher_event(&watcher::Event::InitApply(g));
        }
        gates.apply_watcher_event(&watcher::Event::InitDone);
        traces.apply_watcher_event(&watcher::Event::Init);
        traces.apply_watcher_event(&watcher::Event::InitDone);
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let server = api::serve(
            "127.0.0.1:0".parse().unwrap(),
            ApiCaches::from_stores(gates.as_reader(), traces.as_reader()),
            Authenticator::new(
                Some(SecretString::new("static-tok-9a")),
                Some(emu.client().await),
            ),
            shutdown,
        )
        .await
        .unwrap();
        std::mem::forget((gates, traces));
        Env {
            emu,
            base: format!("http://{}", server.local_addr()),
            http: reqwest::Client::new(),
            _stop: stop,
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_token_allowed_in_one_namespace_cannot_read_another() {
    let env = Env::start().await;
    let (code, v) = env
        .get(
            "/api/v1/namespaces/web/pipelinegates/g1/verdict",
            Some("tok-web"),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["open"], false);
    let (code, v) = env
        .get(
            "/api/v1/namespaces/billing/pipelinegates/b1/verdict",
            Some("tok-web"),
        )
        .await;
    assert_eq!(code, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("may not get pipelinegates in namespace billing"),
        "{v}"
    );
    // Authorization comes before lookup: a forbidden namespace does not reveal which gates exist.
    let (code, _) = env
        .get(
            "/api/v1/namespaces/billing/pipelinegates/nope/verdict",
            Some("tok-web"),
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = env
        .get(
            "/api/v1/namespaces/web/pipelinegates/nope/verdict",
            Some("tok-web"),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = env
        .get("/api/v1/namespaces/billing/pipelinegates", Some("tok-web"))
        .await;
    assert_eq!(code, 403);
    // No grant at all: 403 on a gate, an empty list across namespaces.
    let (code, _) = env
        .get("/api/v1/namespaces/web/pipelinegates/g1", Some("tok-bob"))
        .await;
    assert_eq!(code, 403);
    let (code, v) = env.get("/api/v1/pipelinegates", Some("tok-bob")).await;
    assert_eq!((code, names(&v)), (200, vec![]));
}

#[tokio::test]
async fn no_token_or_an_unknown_one_is_401() {
    let env = Env::start().await;
    let (code, _) = env
        .get("/api/v1/namespaces/web/pipelinegates/g1/verdict", None)
        .await;
    assert_eq!(code, 401);
    let (code, v) = env
        .get(
            "/api/v1/namespaces/web/pipelinegates/g1/verdict",
            Some("tok-nobody"),
        )
        .await;
    assert_eq!(code, 401, "{v}");
    assert!(
        !v.to_string().contains("tok-nobody"),
        "the token is never echoed"
    );
    assert_eq!(
        env.emu.auth().token_reviews(),
        1,
        "the unknown token was reviewed once"
    );
    // The static token needs no review.
    let (code, v) = env
        .get(
            "/api/v1/namespaces/billing/pipelinegates/b1/verdict",
            Some("static-tok-9a"),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(env.emu.auth().token_reviews(), 1);
}

#[tokio::test]
async fn lists_hold_only_the_namespaces_the_caller_may_list() {
    let env = Env::start().await;
    let (code, v) = env.get("/api/v1/pipelinegates", Some("tok-web")).await;
    assert_eq!(code, 200);
    assert_eq!(names(&v), ["web/g1", "web/g2"]);
    let (code, v) = env
        .get("/api/v1/pipelinegates", Some("static-tok-9a"))
        .await;
    assert_eq!((code, names(&v).len()), (200, 3));
}

#[tokio::test]
async fn resource_names_narrow_a_grant() {
    let env = Env::start().await;
    let (code, _) = env
        .get(
            "/api/v1/namespaces/web/pipelinegates/g1/verdict",
            Some("tok-carol"),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = env
        .get(
            "/api/v1/namespaces/web/pipelinegates/g2/verdict",
            Some("tok-carol"),
        )
        .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn decisions_are_cached_not_asked_per_request() {
    let env = Env::start().await;
    for i in 0..25 {
        let gate = if i % 2 == 0 { "g1" } else { "g2" };
        let path = format!("/api/v1/namespaces/web/pipelinegates/{gate}/verdict");
        let (code, _) = env.get(&path, Some("tok-web")).await;
        assert_eq!(code, 200);
    }
    assert_eq!(env.emu.auth().token_reviews(), 1);
    // One question per caller and namespace ("get pipelinegates in web"), not one per gate.
    assert_eq!(env.emu.auth().subject_access_reviews(), 1);
}

#[tokio::test]
async fn the_change_stream_carries_only_what_the_caller_may_watch() {
    let env = Env::start().await;
    let mut resp = env
        .http
        .get(format!("{}/api/v1/watch", env.base))
        .bearer_auth("tok-web")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut text = String::new();
    while !text.contains("SYNCED") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("events within 10s")
            .unwrap()
            .expect("stream open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("\"g1\"") && text.contains("\"g2\""), "{text}");
    assert!(
        !text.contains("\"b1\""),
        "billing's gate leaked into web's stream: {text}"
    );
    let (code, _) = env
        .get("/api/v1/watch?namespace=billing", Some("tok-web"))
        .await;
    assert_eq!(code, 403);
}
