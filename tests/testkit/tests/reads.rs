//! Read accounting: what each client read, per resource, and how many bytes of Secret data it was
//! served. Metadata-only reads (what kube-rs `Api::list_metadata` and a watcher over
//! `Api<PartialObjectMeta<K>>` send:
//! `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` and `as=PartialObjectMetadata`)
//! serve none.

use std::time::Duration;

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
use serde_json::json;

const SECRETS: usize = 20;
const SIZE: usize = 64 * 1024;

#[tokio::test]
async fn metadata_only_readers_are_served_no_secret_data() {
    let emu = KubeEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    emu.auth().add_token("tok-meta", "meta-reader", &[]);
    emu.auth().add_token("tok-full", "full-reader", &[]);
    let admin: Api<Secret> = Api::namespaced(emu.client().await, "default");
    let blob = vec![7u8; SIZE];
    let encoded = base64::engine::general_purpose::STANDARD.encode(&blob);
    for i in 0..SECRETS {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("sh.helm.release.v1.app.v{i}"), "labels": {"owner": "helm"}},
            "type": "helm.sh/release.v1", "data": {"release": encoded}}))
        .expect("secret");
        admin
            .create(&PostParams::default(), &s)
            .await
            .expect("create");
    }
    emu.clear_reads();
    let per_secret = ("release".len() + encoded.len()) as u64;

    // Metadata only: list, get, and a metadata watcher through its initial list.
    let meta: Api<Secret> = Api::namespaced(
        emu.client_with_token("tok-meta").expect("client"),
        "default",
    );
    assert_eq!(
        meta.list_metadata(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        SECRETS
    );
    meta.get_metadata("sh.helm.release.v1.app.v0")
        .await
        .expect("get");
    // kube 5: an Api over PartialObjectMeta makes the watcher's list and watch metadata-only.
    let meta_only: Api<kube::core::PartialObjectMeta<Secret>> = Api::namespaced(
        emu.client_with_token("tok-meta").expect("client"),
        "default",
    );
    let mut stream = watcher(meta_only, watcher::Config::default()).boxed();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await {
            Ok(Ok(Some(watcher::Event::InitDone))) => break,
            Ok(Ok(Some(_))) => {}
            other => panic!("metadata watcher: {other:?}"),
        }
    }
    drop(stream);
    let meta_reads = emu.reads_by("user:meta-reader");
    let secrets = meta_reads.get("secrets").expect("secrets were read");
    assert!(secrets.requests >= 3, "{secrets:?}");
    assert!(secrets.bytes > 0);
    assert_eq!(secrets.secret_data_bytes, 0);
    assert!(
        secrets.bytes < SIZE as u64,
        "metadata of {SECRETS} Secrets is far smaller than one Secret's data: {secrets:?}"
    );
    assert_eq!(emu.secret_data_bytes_served(Some("user:meta-reader")), 0);

    // Full reads: a list, a get and a watch's initial events each serve every Secret's data.
    let full: Api<Secret> = Api::namespaced(
        emu.client_with_token("tok-full").expect("client"),
        "default",
    );
    full.list(&ListParams::default()).await.expect("list");
    full.get("sh.helm.release.v1.app.v1").await.expect("get");
    let mut events = full
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .expect("watch")
        .boxed();
    for _ in 0..SECRETS {
        match events.try_next().await {
            Ok(Some(WatchEvent::Added(_))) => {}
            other => panic!("expected ADDED, got {other:?}"),
        }
    }
    drop(events);
    // The list (20), the get (1) and the watch's initial events (20).
    assert_eq!(
        emu.secret_data_bytes_served(Some("user:full-reader")),
        per_secret * (2 * SECRETS as u64 + 1)
    );
    assert_eq!(
        emu.secret_data_bytes_served(None),
        per_secret * (2 * SECRETS as u64 + 1)
    );
    let full_reads = emu.reads_by("user:full-reader");
    assert_eq!(full_reads["secrets"].requests, 3);
    assert!(full_reads["secrets"].bytes > per_secret * (2 * SECRETS as u64 + 1));

    let v: serde_json::Value = reqwest::get(format!("{}/_emu/reads", emu.url()))
        .await
        .expect("control API")
        .json()
        .await
        .expect("JSON");
    let rows = v["value"].as_array().expect("rows");
    assert!(rows.iter().any(|r| r["client"] == "user:meta-reader"
        && r["resource"] == "secrets"
        && r["secretDataBytes"] == 0));
    assert!(rows
        .iter()
        .any(|r| r["client"] == "user:full-reader" && r["secretDataBytes"].as_u64() > Some(0)));
}

#[tokio::test]
async fn watch_events_after_the_initial_ones_are_counted_too() {
    let emu = KubeEmulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    emu.auth().add_token("tok", "watcher", &[]);
    let admin: Api<Secret> = Api::namespaced(emu.client().await, "default");
    let api: Api<Secret> =
        Api::namespaced(emu.client_with_token("tok").expect("client"), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut events = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "hello"}}))
            .expect("secret");
    admin
        .create(&PostParams::default(), &s)
        .await
        .expect("create");
    match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await {
        Ok(Ok(Some(WatchEvent::Added(_)))) => {}
        other => panic!("expected ADDED, got {other:?}"),
    }
    // stringData is merged into data on write; served as data["k"] = base64("hello") = "aGVsbG8=".
    assert_eq!(
        emu.secret_data_bytes_served(Some("user:watcher")),
        ("k".len() + "aGVsbG8=".len()) as u64
    );
}
