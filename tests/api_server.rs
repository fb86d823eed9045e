//! The read API over HTTP, served from in-memory reflector stores with the static token: routes, status
//! codes, the verdict shape, filters, the change stream and its bounds. Kubernetes tokens (TokenReview,
//! SubjectAccessReview) are covered against the emulator in `tests/api_auth.rs`.

use std::time::Duration;

use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use lockstep::api::{self, ApiCaches, Authenticator};
use lockstep::crd::{PipelineGate, ServiceTrace};
use lockstep::secret::SecretString;
use serde_json::{json, Value};
use tokio::sync::watch;

const TOKEN: &str = "api-test-token-3f9c1e";

fn gate(ns: &str, name: &str, rv: &str, labels: Value, status: Value) -> PipelineGate {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "generation": 1, "labels": labels},
        "spec": {
            "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                            "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "pipeline": {"definitionId": 42, "branch": "main"}
        },
        "status": status
    }))
    .unwrap()
}

fn open_status() -> Value {
    json!({
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded",
                        "message": "Run 20261129.1 of \"base-ci\" succeeded", "observedGeneration": 1,
                        "lastTransitionTime": "2026-11-29T10:00:00Z"}],
        "latestRun": {"id": 7, "buildNumber": "20261129.1", "status": "completed", "result": "succeeded",
                      "sourceVersion": "abcdef0123456789abcdef0123456789abcdef01", "commit": "abcdef0"},
        "lastCompletedRun": {"id": 7, "buildNumber": "20261129.1", "status": "completed", "result": "succeeded",
                             "sourceVersion": "abcdef0123456789abcdef0123456789abcdef01", "commit": "abcdef0"},
        "lastCheckedTime": "2026-11-29T10:00:05Z"
    })
}

fn trace(ns: &str, name: &str, rv: &str, image_tag: &str, commit: &str) -> ServiceTrace {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "ServiceTrace",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
        "spec": {
            "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop",
                            "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "build": {"definitionId": 12, "branch": "main"},
            "manifest": {"repository": "m", "branch": "main"},
            "deployed": {"workload": {"kind": "Deployment", "name": name}}
        },
        "status": {"imageTag": image_tag, "stages": [{"name": "build", "state": "Succeeded", "commit": commit}]}
    }))
    .unwrap()
}

struct Server {
    url: String,
    gates: Writer<PipelineGate>,
    traces: Writer<ServiceTrace>,
    stop: watch::Sender<bool>,
    http: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        let mut gates = Writer::<PipelineGate>::default();
        let mut traces = Writer::<ServiceTrace>::default();
        gates.apply_watcher_event(&watcher::Event::Init);
        gates.apply_watcher_event(&watcher::Event::InitDone);
        traces.apply_watcher_event(&watcher::Event::Init);
        traces.apply_watcher_event(&watcher::Event::InitDone);
        let caches = ApiCaches::from_stores(gates.as_reader(), traces.as_reader());
        let (stop, shutdown) = watch::channel(false);
        let auth = Authenticator::new(Some(SecretString::new(TOKEN)), None);
        let server = api::serve("127.0.0.1:0".parse().unwrap(), caches, auth, shutdown)
            .await
            .unwrap();
        Server {
            url: format!("http://{}", server.local_addr()),
            gates,
            traces,
            stop,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[tokio::test]
async fn verdicts_answer_200_open_or_closed_and_404_only_for_a_missing_gate() {
    let mut s = Server::start().await;
    s.gates.apply_watcher_event(&watcher::Event::Apply(gate(
        "shop",
        "base",
        "1",
        json!({}),
        open_status(),
    )));
    s.gates.apply_watcher_event(&watcher::Event::Apply(gate(
        "shop",
        "fresh",
        "1",
        json!({}),
        Value::Null,
    )));

    let (code, v) = s
        .get(
            "/api/v1/namespaces/shop/pipelinegates/base/verdict",
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["open"], true);
    assert_eq!(v["reason"], "Succeeded");
    assert_eq!(v["run"]["id"], 7);
    assert_eq!(v["observedGeneration"], 1);
    assert_eq!(v["checkedAt"], "2026-11-29T10:00:05Z");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "checkedAt",
            "message",
            "observedGeneration",
            "open",
            "reason",
            "run"
        ]
    );

    let (code, v) = s
        .get(
            "/api/v1/namespaces/shop/pipelinegates/fresh/verdict",
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (code, &v["open"], &v["reason"]),
        (200, &json!(false), &json!("NotEvaluated"))
    );

    let (code, v) = s
        .get(
            "/api/v1/namespaces/shop/pipelinegates/nope/verdict",
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 404);
    assert!(v["error"].as_str().unwrap().contains("shop/nope"), "{v}");
}

#[tokio::test]
async fn no_token_is_401_with_a_challenge_and_a_wrong_one_too() {
    let s = Server::start().await;
    let resp = s
        .http
        .get(format!("{}/api/v1/pipelinegates", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        "Bearer realm=\"lockstep\""
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let (code, body) = s.get("/api/v1/pipelinegates", Some("not-the-token")).await;
    assert_eq!(code, 401);
    assert!(!body.to_string().contains("not-the-token"));
    let (code, _) = s
        .get("/api/v1/namespaces/shop/pipelinegates/base/verdict", None)
        .await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn lists_filter_by_namespace_label_selector_and_trace_facts() {
    let mut s = Server::start().await;
    s.gates.apply_watcher_event(&watcher::Event::Apply(gate(
        "shop",
        "a",
        "1",
        json!({"tier": "web"}),
        open_status(),
    )));
    s.gates.apply_watcher_event(&watcher::Event::Apply(gate(
        "shop",
        "b",
        "1",
        json!({"tier": "db"}),
        Value::Null,
    )));
    s.gates.apply_watcher_event(&watcher::Event::Apply(gate(
        "billing",
        "c",
        "1",
        json!({"tier": "web"}),
        Value::Null,
    )));
    s.traces.apply_watcher_event(&watcher::Event::Apply(trace(
        "shop",
        "orders",
        "1",
        "20261129.4",
        "feedbeef00000000000000000000000000000000",
    )));
    s.traces.apply_watcher_event(&watcher::Event::Apply(trace(
        "billing",
        "invoices",
        "1",
        "20261129.9",
        "c0ffee0000000000000000000000000000000000",
    )));

    let names = |v: &Value| -> Vec<String> {
        v["items"]
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
    };
    let (code, v) = s.get("/api/v1/pipelinegates", Some(TOKEN)).await;
    assert_eq!(code, 200);
    assert_eq!(v["kind"], "PipelineGateList");
    assert_eq!(names(&v), ["billing/c", "shop/a", "shop/b"]);
    assert_eq!(v["items"][1]["verdict"]["open"], true);
    assert_eq!(v["items"][1]["state"], "Succeeded");

    let (_, v) = s
        .get(
            "/api/v1/namespaces/shop/pipelinegates?labelSelector=tier%3Dweb",
            Some(TOKEN),
        )
        .await;
    assert_eq!(names(&v), ["shop/a"]);
    let (_, v) = s
        .get(
            "/api/v1/pipelinegates?labelSelector=tier%20in%20(web)&namespace=billing",
            Some(TOKEN),
        )
        .await;
    assert_eq!(names(&v), ["billing/c"]);
    let (_, v) = s
        .get("/api/v1/pipelinegates?state=Succeeded", Some(TOKEN))
        .await;
    assert_eq!(names(&v), ["shop/a"]);
    let (code, v) = s
        .get(
            "/api/v1/pipelinegates?labelSelector=tier%20in%20web",
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 400, "{v}");

    let (_, v) = s
        .get("/api/v1/servicetraces?commit=FEEDBEEF", Some(TOKEN))
        .await;
    assert_eq!(names(&v), ["shop/orders"]);
    let (_, v) = s
        .get("/api/v1/servicetraces?imageTag=20261129.9", Some(TOKEN))
        .await;
    assert_eq!(names(&v), ["billing/invoices"]);
    let (_, v) = s
        .get("/api/v1/servicetraces?environment=prod", Some(TOKEN))
        .await;
    assert_eq!(names(&v), Vec::<String>::new());
    let (code, v) = s
        .get(
            "/api/v1/namespaces/billing/servicetraces/invoices",
            Some(TOKEN),
        )
        .await;
    assert_eq!(
        (code, v["status"]["imageTag"].as_str()),
        (200, Some("20261129.9"))
    );
    let (code, _) = s
        .get(
            "/api/v1/namespaces/billing/servicetraces/orders",
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = s.get("/api/v1/nothing", Some(TOKEN)).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_content_security_policy() {
    let s = Server::start().await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let resp = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    }
    let html = s
        .http
        .get(&s.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<table id=\"traces\">") && html.contains("<th scope=\"col\">Verdict</th>")
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no third-party origin"
    );
}

/// Reads SSE `data:` payloads from a streaming response.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event within 10s")
                .unwrap()
                .expect("stream still open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn the_stream_sends_a_snapshot_then_live_changes() {
    let mut s = Server::start().await;
    s.gates.apply_watcher_event(&watcher::Event::Apply(gate(
        "shop",
        "a",
        "1",
        json!({}),
        Value::Null,
    )));
    s.traces.apply_watcher_event(&watcher::Event::Apply(trace(
        "shop",
        "orders",
        "1",
        "1.0",
        "aaaa000000000000000000000000000000000000",
    )));
    let resp = s
        .http
        .get(format!("{}/api/v1/watch", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut events = Events {
        resp,
        buf: String::new(),
    };
    let mut snapshot = vec![];
    loop {
        let e = events.next().await;
        if e["type"] == "SYNCED" {
            break;
        }
        assert_eq!(e["type"], "ADDED");
        snapshot.push(format!(
            "{}:{}",
            e["kind"].as_str().unwrap(),
            e["object"]["metadata"]["name"].as_str().unwrap()
        ));
    }
    snapshot.sort();
    assert_eq!(snapshot, ["PipelineGate:a", "ServiceTrace:orders"]);

    s.gates.apply_watcher_event(&watcher::Event::Apply(gate(
        "shop",
        "a",
        "2",
        json!({}),
        open_status(),
    )));
    // The snapshot may be followed by the feed's first sighting of the same objects; skip those.
    let modified = loop {
        let e = events.next().await;
        if e["object"]["metadata"]["resourceVersion"] == "2" {
            break e;
        }
    };
    assert_eq!(modified["kind"], "PipelineGate");
    assert_eq!(modified["object"]["verdict"]["open"], true);

    s.traces.apply_watcher_event(&watcher::Event::Delete(trace(
        "shop", "orders", "1", "1.0", "a",
    )));
    let deleted = loop {
        let e = events.next().await;
        if e["type"] == "DELETED" {
            break e;
        }
    };
    assert_eq!(deleted["object"]["metadata"]["name"], "orders");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_not_buffered() {
    let mut s = Server::start().await;
    // A client that connects and never reads.
    let stuck = s
        .http
        .get(format!("{}/api/v1/watch", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stuck.status().as_u16(), 200);
    // Far more changes than the feed buffers, large enough (16 KiB each) that the socket buffers between
    // server and client (a few MiB on loopback) fill and the server can no longer write to it.
    let pad = "x".repeat(16 * 1024);
    for round in 0..(api::watch::FEED_CAPACITY * 4) {
        let mut g = gate(
            "shop",
            &format!("g{}", round % 512),
            &round.to_string(),
            json!({}),
            Value::Null,
        );
        g.metadata.annotations = Some([("pad".to_string(), pad.clone())].into());
        s.gates.apply_watcher_event(&watcher::Event::Apply(g));
        if round % 512 == 511 {
            tokio::time::sleep(api::watch::FEED_PERIOD + Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(api::watch::FEED_PERIOD * 2).await;
    // Now read what the stuck client was sent: it must end (dropped) with an ERROR event.
    let body = tokio::time::timeout(Duration::from_secs(20), stuck.text())
        .await
        .expect("the server closed the stuck client's stream")
        .unwrap();
    let last = body
        .trim_end()
        .lines()
        .rfind(|l| l.starts_with("data:"))
        .unwrap();
    assert!(
        last.contains("\"ERROR\"") && last.contains("fell"),
        "{last}"
    );
}

#[tokio::test]
async fn before_the_first_list_data_routes_answer_503_not_an_empty_list() {
    let (_stop, shutdown) = watch::channel(false);
    let server = api::serve(
        "127.0.0.1:0".parse().unwrap(),
        ApiCaches::new(),
        Authenticator::new(Some(SecretString::new(TOKEN)), None),
        shutdown,
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    for path in [
        "/api/v1/pipelinegates",
        "/api/v1/servicetraces",
        "/api/v1/namespaces/shop/pipelinegates/base/verdict",
        "/api/v1/watch",
    ] {
        let resp = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503, "{path}");
        assert_eq!(resp.headers()["retry-after"], "1");
    }
}

#[tokio::test]
async fn there_is_no_route_to_anything_but_gates_and_traces() {
    let s = Server::start().await;
    for path in [
        "/api/v1/namespaces/shop/secrets",
        "/api/v1/namespaces/shop/secrets/ado-pat",
        "/api/v1/namespaces/shop/pipelinegates/base/status",
        "/api/v1/configmaps",
    ] {
        let (code, _) = s.get(path, Some(TOKEN)).await;
        assert_eq!(code, 404, "{path}");
    }
    let resp = s
        .http
        .delete(format!(
            "{}/api/v1/namespaces/shop/pipelinegates/base",
            s.url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        405,
        "read-only: no write method is routed"
    );
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_the_server() {
    let mut gates = Writer::<PipelineGate>::default();
    let mut traces = Writer::<ServiceTrace>::default();
    gates.apply_watcher_event(&watcher::Event::Init);
    gates.apply_watcher_event(&watcher::Event::InitDone);
    traces.apply_watcher_event(&watcher::Event::Init);
    traces.apply_watcher_event(&watcher::Event::InitDone);
    let (stop, shutdown) = watch::channel(false);
    let server = api::serve(
        "127.0.0.1:0".parse().unwrap(),
        ApiCaches::from_stores(gates.as_reader(), traces.as_reader()),
        Authenticator::new(Some(SecretString::new(TOKEN)), None),
        shutdown,
    )
    .await
    .unwrap();
    let mut stream = reqwest::Client::new()
        .get(format!("http://{}/api/v1/watch", server.local_addr()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().expect("SYNCED arrives");
    assert!(std::str::from_utf8(&first).unwrap().contains("SYNCED"));
    stop.send(true).unwrap();
    // A long-lived stream must not hold graceful shutdown open (STACK.md's shutdown trap).
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("the server stops within 5s with a stream open")
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
}
