//! The emulator's HTTP control API (`/_emu/...`): targeted fault rules by verb, resource and client
//! identity, watch faults, delays, and the bounded request log, driven the way a script would.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use lockstep_testkit::kube::{EmulatorConfig, FaultRule, KubeEmulator};
use serde_json::{json, Value};

fn lease(name: &str) -> Lease {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"holderIdentity": name}}))
        .expect("lease")
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("control request");
    let code = resp.status().as_u16();
    (code, resp.json().await.expect("JSON answer"))
}

fn code_of(r: kube::Result<Lease>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(other) => panic!("expected a Status, got {other:?}"),
    }
}

#[tokio::test]
async fn lease_requests_of_one_client_fail_while_another_clients_succeed() {
    let emu = KubeEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let base = emu.url();
    let (code, _) = call(
        reqwest::Method::POST,
        format!("{base}/_emu/tokens"),
        Some(json!({"token": "tok-a", "username": "lockstep-a"})),
    )
    .await;
    assert_eq!(code, 201);
    emu.auth().add_token("tok-b", "lockstep-b", &[]);
    let a: Api<Lease> =
        Api::namespaced(emu.client_with_token("tok-a").expect("client a"), "default");
    let b: Api<Lease> =
        Api::namespaced(emu.client_with_token("tok-b").expect("client b"), "default");

    // Until cleared: every Lease request of lockstep-a gets 500; lockstep-b and other resources are fine.
    let (code, v) = call(
        reqwest::Method::POST,
        format!("{base}/_emu/faults/rules"),
        Some(json!({"status": 500, "resource": "leases", "user": "lockstep-a"})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let id = v["id"].as_u64().expect("rule id");
    assert_eq!(
        code_of(a.create(&PostParams::default(), &lease("a")).await),
        500
    );
    assert_eq!(
        code_of(b.create(&PostParams::default(), &lease("b")).await),
        200
    );
    for _ in 0..3 {
        assert_eq!(code_of(a.get("b").await), 500);
        assert_eq!(code_of(b.get("b").await), 200);
    }
    let (_, state) = call(reqwest::Method::GET, format!("{base}/_emu/faults"), None).await;
    assert_eq!(state["rules"][0]["hits"], 4, "{state}");
    assert_eq!(state["rules"][0]["remaining"], Value::Null);
    let (code, _) = call(
        reqwest::Method::DELETE,
        format!("{base}/_emu/faults/rules/{id}"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(code_of(a.get("b").await), 200);

    // Counted, by verb: only lockstep-b's next update fails, twice, with 409.
    let id = emu
        .faults()
        .add(
            FaultRule::fail(409)
                .verb("update")
                .resource("leases")
                .token("tok-b")
                .times(2),
        )
        .expect("rule");
    let current = b.get("b").await.expect("get");
    assert_eq!(
        code_of(b.replace("b", &PostParams::default(), &current).await),
        409
    );
    assert_eq!(
        code_of(a.replace("b", &PostParams::default(), &current).await),
        200
    );
    let current = b.get("b").await.expect("get");
    assert_eq!(
        code_of(b.replace("b", &PostParams::default(), &current).await),
        409
    );
    assert_eq!(
        code_of(b.replace("b", &PostParams::default(), &current).await),
        200
    );
    assert!(!emu.faults().remove(id), "a rule that ran out is gone");

    // The request log names each client by its user, never by its token.
    let (_, log) = call(reqwest::Method::GET, format!("{base}/_emu/requests"), None).await;
    let records = log["value"].as_array().expect("records");
    assert!(records.iter().any(|r| r["client"] == "user:lockstep-a"
        && r["verb"] == "create"
        && r["resource"] == "leases"
        && r["status"] == 500));
    assert!(!log.to_string().contains("tok-a"));

    // Bad rules change nothing.
    let (code, v) = call(
        reqwest::Method::POST,
        format!("{base}/_emu/faults"),
        Some(json!({"delayMs": 5000, "rules": [{"status": 200}]})),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("400-599")),
        "{v}"
    );
    let (_, state) = call(reqwest::Method::GET, format!("{base}/_emu/faults"), None).await;
    assert_eq!(state, json!({"delayMs": 0, "rules": []}));
}

#[tokio::test]
async fn fail_next_delay_and_watch_faults_over_http() {
    let emu = KubeEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let base = emu.url();
    let leases: Api<Lease> = Api::namespaced(emu.client().await, "default");
    let first = leases
        .create(&PostParams::default(), &lease("l"))
        .await
        .expect("create");
    let old_rv = first.metadata.resource_version.clone().expect("rv");

    let (code, v) = call(
        reqwest::Method::POST,
        format!("{base}/_emu/faults"),
        Some(json!({"failNext": {"count": 1, "status": 500, "method": "PATCH"}, "delayMs": 300})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let started = Instant::now();
    let patched = leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"leaseDurationSeconds": 5}})),
        )
        .await;
    assert!(
        matches!(patched, Err(kube::Error::Api(ref s)) if s.code == 500),
        "{patched:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (code, _) = call(reqwest::Method::DELETE, format!("{base}/_emu/faults"), None).await;
    assert_eq!(code, 200);
    let started = Instant::now();
    leases
        .patch(
            "l",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"leaseDurationSeconds": 5}})),
        )
        .await
        .expect("patch after clearing");
    assert!(started.elapsed() < Duration::from_millis(300));

    // An open watch ends when watches are dropped.
    let mut open = leases
        .watch(&WatchParams::default().timeout(30), &old_rv)
        .await
        .expect("watch")
        .boxed();
    assert!(matches!(
        open.try_next().await,
        Ok(Some(WatchEvent::Modified(_)))
    ));
    let (code, _) = call(
        reqwest::Method::POST,
        format!("{base}/_emu/faults/drop-watches"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), open.try_next()).await;
    assert!(matches!(ended, Ok(Ok(None))), "{ended:?}");

    // After the watch window expires, resuming from an old resourceVersion gets 410 Expired.
    let (code, _) = call(
        reqwest::Method::POST,
        format!("{base}/_emu/faults/expire-watch-window"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let mut resumed = leases
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .expect("watch")
        .boxed();
    match resumed.try_next().await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    let (code, v) = call(reqwest::Method::GET, format!("{base}/_emu/nothing"), None).await;
    assert_eq!(code, 404, "{v}");
}

#[tokio::test]
async fn the_request_log_is_a_bounded_ring_that_counts_what_it_dropped() {
    let emu = KubeEmulator::start(EmulatorConfig::default().request_log_capacity(3))
        .await
        .expect("emulator");
    let leases: Api<Lease> = Api::namespaced(emu.client().await, "default");
    for i in 0..5 {
        leases
            .create(&PostParams::default(), &lease(&format!("l{i}")))
            .await
            .expect("create");
    }
    let log = emu.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(emu.dropped_requests(), 2);
    assert!(log[2].path.ends_with("/leases"));
    let (_, v) = call(
        reqwest::Method::GET,
        format!("{}/_emu/requests", emu.url()),
        None,
    )
    .await;
    assert_eq!(
        (
            v["count"].clone(),
            v["capacity"].clone(),
            v["dropped"].clone()
        ),
        (json!(3), json!(3), json!(2))
    );
    emu.clear_requests();
    assert_eq!((emu.requests().len(), emu.dropped_requests()), (0, 0));
}
