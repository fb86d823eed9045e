//! Conformance of the Kubernetes API emulator for what controllers rely on: kube::runtime::watcher
//! recovering from dropped watches and 410 Expired (relist), Events through events.k8s.io visible as core
//! Events, CEL rules, the request log and fault injection.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Secret};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event as WatcherEvent};
use kube::Client;
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
use serde_json::json;
use tokio::sync::mpsc;

fn repo_crds() -> String {
    format!("{}/../../crds", env!("CARGO_MANIFEST_DIR"))
}

async fn emulator() -> (KubeEmulator, Client) {
    let emu = KubeEmulator::start(EmulatorConfig::default().crds_dir(repo_crds()))
        .await
        .expect("emulator starts");
    let client = emu.client().await;
    (emu, client)
}

fn gates(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lockstep.dev", "v1alpha1", "PipelineGate"),
        "pipelinegates",
    );
    Api::namespaced_with(client.clone(), "default", &ar)
}

fn gate(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate", "metadata": {"name": name},
        "spec": {"azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop", "credentials": {"secretRef": {"name": "p", "key": "t"}}},
                 "pipeline": {"definitionId": 1, "branch": "main"}}
    }))
    .expect("gate")
}

#[derive(Debug, PartialEq)]
enum Seen {
    Init,
    InitDone,
    Apply(String),
    Delete(String),
    Error(String),
}

/// Runs a watcher in the background and reports what it yields.
fn spawn_watcher(
    api: Api<DynamicObject>,
    config: watcher::Config,
) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).boxed();
        while let Some(item) = stream.next().await {
            let seen = match item {
                Ok(WatcherEvent::Init) => Seen::Init,
                Ok(WatcherEvent::InitDone) => Seen::InitDone,
                Ok(WatcherEvent::InitApply(o) | WatcherEvent::Apply(o)) => {
                    Seen::Apply(o.metadata.name.unwrap_or_default())
                }
                Ok(WatcherEvent::Delete(o)) => Seen::Delete(o.metadata.name.unwrap_or_default()),
                Err(e) => Seen::Error(e.to_string()),
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (generously) until `want` arrives; returns everything seen before it, `want` included.
async fn until(rx: &mut mpsc::UnboundedReceiver<Seen>, want: Seen) -> Vec<Seen> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => {
                let done = s == want;
                seen.push(s);
                if done {
                    return seen;
                }
            }
            other => panic!("did not see {want:?} in time ({other:?}); saw {seen:?}"),
        }
    }
}

async fn watcher_recovers(config: watcher::Config, streaming: bool) {
    let (emu, client) = emulator().await;
    let api = gates(&client);
    api.create(&PostParams::default(), &gate("a"))
        .await
        .expect("create a");
    let mut rx = spawn_watcher(api.clone(), config);
    let first = until(&mut rx, Seen::InitDone).await;
    assert!(first.contains(&Seen::Apply("a".into())), "{first:?}");

    // A dropped watch: the watcher re-watches from its last resourceVersion and misses nothing.
    emu.faults().drop_watches();
    api.create(&PostParams::default(), &gate("b"))
        .await
        .expect("create b");
    until(&mut rx, Seen::Apply("b".into())).await;

    // An expired window: the re-watch gets 410 Expired, the watcher relists and keeps delivering.
    emu.faults().expire_watch_window();
    api.create(&PostParams::default(), &gate("c"))
        .await
        .expect("create c");
    let after = until(&mut rx, Seen::Apply("c".into())).await;
    assert!(after.iter().any(|s| matches!(s, Seen::Error(e) if e.contains("410") || e.to_lowercase().contains("expired"))), "410 surfaced: {after:?}");
    assert!(after.contains(&Seen::Init), "relisted after 410: {after:?}");
    until(&mut rx, Seen::InitDone).await;

    api.delete("a", &Default::default())
        .await
        .expect("delete a");
    until(&mut rx, Seen::Delete("a".into())).await;
    let initial_loads = emu
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/pipelinegates") && r.method == "GET")
        .filter(|r| {
            if streaming {
                r.query
                    .as_deref()
                    .is_some_and(|q| q.contains("sendInitialEvents=true"))
            } else {
                !r.is_watch()
            }
        })
        .count();
    assert!(
        initial_loads >= 2,
        "initial load and the relist after 410 ({initial_loads})"
    );
}

#[tokio::test]
async fn watcher_survives_dropped_watches_and_410_with_list_watch() {
    watcher_recovers(watcher::Config::default(), false).await;
}

#[tokio::test]
async fn watcher_survives_dropped_watches_and_410_with_streaming_lists() {
    watcher_recovers(watcher::Config::default().streaming_lists(), true).await;
}

#[tokio::test]
async fn events_published_through_events_k8s_io_show_up_as_core_events() {
    let (_emu, client) = emulator().await;
    let api = gates(&client);
    let g = api
        .create(&PostParams::default(), &gate("a"))
        .await
        .expect("create");
    let reference = ObjectReference {
        api_version: Some("lockstep.dev/v1alpha1".into()),
        kind: Some("PipelineGate".into()),
        name: g.metadata.name.clone(),
        namespace: Some("default".into()),
        uid: g.metadata.uid.clone(),
        ..Default::default()
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "lockstep".into(),
            instance: Some("lockstep-0".into()),
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "GateOpened".into(),
        note: Some("Run 20261122.4 succeeded".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.expect("publish");
    // The same event again becomes a series (a PATCH), not a second object.
    recorder
        .publish(&event, &reference)
        .await
        .expect("publish again");

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let selector = format!(
        "involvedObject.name=a,involvedObject.kind=PipelineGate,involvedObject.uid={}",
        g.metadata.uid.clone().unwrap_or_default()
    );
    let listed = core
        .list(&ListParams::default().fields(&selector))
        .await
        .expect("list core events");
    assert_eq!(listed.items.len(), 1, "{:?}", listed.items);
    let ev = &listed.items[0];
    assert_eq!(ev.reason.as_deref(), Some("GateOpened"));
    assert_eq!(ev.message.as_deref(), Some("Run 20261122.4 succeeded"));
    assert_eq!(ev.reporting_component.as_deref(), Some("lockstep"));
    assert!(ev.series.is_some(), "second publish recorded as a series");

    // events.k8s.io limits the note to 1 KiB.
    let long = Event {
        type_: EventType::Warning,
        reason: "GateBlocked".into(),
        note: Some("x".repeat(1025)),
        action: "Reconcile".into(),
        secondary: None,
    };
    match recorder.publish(&long, &reference).await {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 422 && s.message.contains("note: Too long"),
            "{}",
            s.message
        ),
        other => panic!("expected 422 for a 1025-byte note, got {other:?}"),
    }

    // events.k8s.io requires the reporting fields.
    let v1: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("events.k8s.io", "v1", "Event"),
            "events",
        ),
    );
    let bare: DynamicObject = serde_json::from_value(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "x"}, "reason": "R"})).expect("event");
    match v1.create(&PostParams::default(), &bare).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.contains("eventTime: Required value")
                    && s.message.contains("reportingController: Required value"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
}

#[tokio::test]
async fn cel_rules_from_the_crd_are_enforced() {
    let (_emu, client) = emulator().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lockstep.dev", "v1alpha1", "ServiceTrace"),
        "servicetraces",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let trace = |deployed: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1", "kind": "ServiceTrace", "metadata": {"name": "orders"},
            "spec": {"azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop", "credentials": {"secretRef": {"name": "p", "key": "t"}}},
                     "build": {"definitionId": 12, "branch": "main"},
                     "manifest": {"repository": "orders-manifests", "branch": "main"},
                     "deployed": deployed}
        }))
        .expect("trace")
    };
    let both = trace(
        json!({"fluxKustomization": {"name": "orders", "namespace": "flux-system"}, "argoApplication": {"name": "orders", "namespace": "argocd"}}),
    );
    match api.create(&PostParams::default(), &both).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(
                s.message
                    .contains("set exactly one of fluxKustomization, argoApplication, workload"),
                "{}",
                s.message
            );
            assert!(s.message.contains("spec.deployed"), "{}", s.message);
        }
        other => panic!("expected the CEL rule to reject the object, got {other:?}"),
    }
    api.create(
        &PostParams::default(),
        &trace(json!({"fluxKustomization": {"name": "orders", "namespace": "flux-system"}})),
    )
    .await
    .expect("one target is valid");
}

#[tokio::test]
async fn faults_fail_delay_and_the_request_log_records_everything() {
    let (emu, client) = emulator().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    emu.clear_requests();
    emu.faults().fail_next(2, 500);
    for _ in 0..2 {
        match secrets.list(&ListParams::default()).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"))
            }
            other => panic!("expected injected 500, got {other:?}"),
        }
    }
    secrets
        .list(&ListParams::default())
        .await
        .expect("third request succeeds");

    // kube::Client retries a 429 after Retry-After; the retry then sees the real answer.
    emu.faults().fail_next(1, 429);
    match secrets.get("x").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("expected 404 after the retried 429, got {other:?}"),
    }
    emu.faults()
        .fail_next_matching(1, 409, Some("PATCH"), Some("/pipelinegates/"));
    let api = gates(&client);
    api.create(&PostParams::default(), &gate("a"))
        .await
        .expect("POST is not matched");
    match api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("expected 409, got {other:?}"),
    }

    emu.faults().delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    secrets
        .list(&ListParams::default())
        .await
        .expect("delayed list");
    assert!(started.elapsed() >= Duration::from_millis(300));
    emu.faults().delay(Duration::ZERO);

    let log = emu.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 500, 200, 429, 404, 201, 409, 200]);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/api/v1/namespaces/default/secrets");
    assert_eq!(log[6].method, "PATCH");
    emu.clear_requests();
    assert!(emu.requests().is_empty());
}

#[tokio::test]
async fn secrets_store_string_data_as_base64_data() {
    let (_emu, client) = emulator().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "ado-pat"}, "stringData": {"token": "pat-value"}}),
    )
    .expect("secret");
    let created = secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("create");
    assert!(created.string_data.is_none());
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let data = created.data.expect("data");
    assert_eq!(
        data.get("token").map(|b| b.0.clone()),
        Some(b"pat-value".to_vec())
    );
}

#[tokio::test]
async fn secrets_reject_bad_keys_and_bad_base64() {
    let (_emu, client) = emulator().await;
    let secrets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Secret"), "secrets"),
    );
    let bad_key: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}, "data": {"bad key": "eA=="}})).expect("secret");
    match secrets.create(&PostParams::default(), &bad_key).await {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 422
                && s.message
                    .contains("data[bad key]: Invalid value: \"bad key\": a valid config key"),
            "{}",
            s.message
        ),
        other => panic!("expected 422, got {other:?}"),
    }
    let bad_base64: DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}, "data": {"token": "not base64!"}})).expect("secret");
    match secrets.create(&PostParams::default(), &bad_base64).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 400, "{}", s.message),
        other => panic!("expected 400, got {other:?}"),
    }
}

/// One plain HTTP/1.1 GET, without kube's retry layer (which retries 504s for minutes).
async fn raw_get(url: &str, path_and_query: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, response)
}

#[tokio::test]
async fn watching_from_a_version_the_server_never_issued_times_out() {
    let (emu, _client) = emulator().await;
    let (status, response) = raw_get(&emu.url(), "/apis/lockstep.dev/v1alpha1/namespaces/default/pipelinegates?watch=true&resourceVersion=999999").await;
    assert_eq!(status, 504, "{response}");
    assert!(
        response.contains("\"reason\":\"Timeout\"")
            && response.contains("Too large resource version"),
        "{response}"
    );
    assert!(
        response.to_lowercase().contains("retry-after: 1"),
        "{response}"
    );
}

#[tokio::test]
async fn built_in_kinds_drop_unknown_fields_or_reject_them_when_strict() {
    let (_emu, client) = emulator().await;
    let leases: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
            "leases",
        ),
    );
    let typo = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lockstep-leader"}, "spec": {"holderIdentity": "a", "holderIdentiy": "typo"}});
    match leases
        .patch(
            "lockstep-leader",
            &PatchParams::apply("test").validation_strict(),
            &Patch::Apply(&typo),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 400 && s.message.contains("unknown field \"spec.holderIdentiy\""),
            "{}",
            s.message
        ),
        other => panic!("expected a strict decoding error, got {other:?}"),
    }
    let stored = leases
        .patch(
            "lockstep-leader",
            &PatchParams::apply("test"),
            &Patch::Apply(&typo),
        )
        .await
        .expect("lenient apply");
    assert_eq!(stored.data["spec"], json!({"holderIdentity": "a"}));
    let wrong_type = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lockstep-leader"}, "spec": {"leaseDurationSeconds": "fifteen"}});
    match leases
        .patch(
            "lockstep-leader",
            &PatchParams::apply("test"),
            &Patch::Apply(&wrong_type),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 400, "{}", s.message),
        other => panic!("expected a decoding error, got {other:?}"),
    }
}

#[tokio::test]
async fn non_structural_crds_are_rejected_like_the_apiextensions_apiserver_does() {
    let (_emu, client) = emulator().await;
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {"mode": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}}}}}}]}
    }))
    .expect("crd");
    match crds.create(&PostParams::default(), &crd).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(s.message.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[mode].type: Required value: must not be empty for specified object fields"), "{}", s.message);
        }
        other => panic!("expected the non-structural CRD to be rejected, got {other:?}"),
    }
}
