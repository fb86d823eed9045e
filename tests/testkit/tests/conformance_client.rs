//! Conformance of the Kubernetes API emulator, written from the Kubernetes API conventions
//! (https://kubernetes.io/docs/reference/using-api/api-concepts/) and exercised through kube::Client.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use kube::Client;
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
use serde_json::{json, Value};

fn repo_crds() -> String {
    format!("{}/../../crds", env!("CARGO_MANIFEST_DIR"))
}

fn test_crds() -> String {
    format!("{}/crds", env!("CARGO_MANIFEST_DIR"))
}

async fn emulator() -> (KubeEmulator, Client) {
    let emu = KubeEmulator::start(
        EmulatorConfig::default()
            .crds_dir(repo_crds())
            .crds_dir(test_crds())
            .bookmark_interval(Duration::from_millis(200)),
    )
    .await
    .expect("emulator starts");
    let client = emu.client().await;
    (emu, client)
}

fn gate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lockstep.dev", "v1alpha1", "PipelineGate"),
        "pipelinegates",
    )
}

fn gates(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &gate_resource())
}

fn gate(name: &str, definition_id: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1",
        "kind": "PipelineGate",
        "metadata": {"name": name},
        "spec": {
            "azureDevOps": {"organizationUrl": "https://dev.azure.com/contoso", "project": "Shop", "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "pipeline": {"definitionId": definition_id, "branch": "develop"}
        }
    }))
    .expect("gate json")
}

fn api_status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error (Status), got {other:?}"),
    }
}

fn rv(o: &DynamicObject) -> u64 {
    o.metadata
        .resource_version
        .as_deref()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}

fn ready_status(conditions_status: &str) -> Value {
    json!({"status": {"conditions": [{"type": "Ready", "status": conditions_status, "reason": "Succeeded", "message": "ok", "lastTransitionTime": "2026-11-22T10:00:00Z"}]}})
}

#[tokio::test]
async fn discovery_lists_crds_and_builtins_with_scope_and_subresources() {
    let (_emu, client) = emulator().await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "lockstep.dev",
            "v1alpha1",
            "PipelineGate",
        ))
        .expect("PipelineGate discovered");
    assert_eq!(ar.plural, "pipelinegates");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "pipelinegates/status" || sub.plural == "status"),
        "status subresource: {:?}",
        caps.subresources
    );
    for (g, v, k) in [
        ("", "v1", "Namespace"),
        ("", "v1", "Secret"),
        ("", "v1", "Event"),
        ("events.k8s.io", "v1", "Event"),
        ("coordination.k8s.io", "v1", "Lease"),
        ("apps", "v1", "Deployment"),
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        ("argoproj.io", "v1alpha1", "Application"),
        ("lockstep.dev", "v1alpha1", "ServiceTrace"),
    ] {
        assert!(
            discovery
                .resolve_gvk(&GroupVersionKind::gvk(g, v, k))
                .is_some(),
            "{g}/{v} {k} discovered"
        );
    }
    let (_, ns_caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
        .expect("namespaces");
    assert_eq!(ns_caps.scope, Scope::Cluster);
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn aggregated_discovery_matches_legacy_discovery() {
    let (_emu, client) = emulator().await;
    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("aggregated discovery");
    let legacy = Discovery::new(client.clone())
        .run()
        .await
        .expect("legacy discovery");
    let gvk = GroupVersionKind::gvk("lockstep.dev", "v1alpha1", "PipelineGate");
    let (ar, caps) = aggregated
        .resolve_gvk(&gvk)
        .expect("PipelineGate in aggregated discovery");
    let (legacy_ar, legacy_caps) = legacy
        .resolve_gvk(&gvk)
        .expect("PipelineGate in legacy discovery");
    assert_eq!(ar, legacy_ar);
    assert_eq!(caps.scope, legacy_caps.scope);
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural.ends_with("status")),
        "{:?}",
        caps.subresources
    );
    let names = |d: &Discovery| {
        d.groups()
            .map(|g| g.name().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(names(&aggregated), names(&legacy));
    assert!(aggregated
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Secret"))
        .is_some());
}

#[tokio::test]
async fn create_sets_server_fields_and_rejects_duplicates_and_missing_namespaces() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    let created = api
        .create(&PostParams::default(), &gate("a", 1))
        .await
        .expect("create");
    assert!(created
        .metadata
        .uid
        .as_deref()
        .is_some_and(|u| u.len() == 36));
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    // Defaults from the schema are applied.
    assert_eq!(created.data["spec"]["suspend"], json!(false));
    assert_eq!(
        created.data["spec"]["policy"]["acceptedResults"],
        json!(["succeeded"])
    );

    let dup = api_status(
        api.create(&PostParams::default(), &gate("a", 1))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        dup.message,
        "pipelinegates.lockstep.dev \"a\" already exists"
    );

    let missing = api_status(
        gates(&client, "nope")
            .create(&PostParams::default(), &gate("a", 1))
            .await
            .expect_err("missing namespace"),
    );
    assert_eq!(
        (missing.code, missing.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );

    let mut generated = gate("", 1);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = api
        .create(&PostParams::default(), &generated)
        .await
        .expect("generateName");
    let name = g.metadata.name.expect("generated name");
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");

    let second = api
        .create(&PostParams::default(), &gate("b", 2))
        .await
        .expect("create b");
    assert!(
        rv(&second) > rv(&created),
        "resourceVersion is cluster-wide and increasing"
    );
    let got = api.get("a").await.expect("get");
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let not_found = api_status(api.get("zzz").await.expect_err("404"));
    assert_eq!(
        (not_found.code, not_found.reason.as_str()),
        (404, "NotFound")
    );
    assert_eq!(
        not_found.message,
        "pipelinegates.lockstep.dev \"zzz\" not found"
    );
}

#[tokio::test]
async fn update_uses_optimistic_concurrency_and_generation_tracks_spec_only() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    let created = api
        .create(&PostParams::default(), &gate("a", 1))
        .await
        .expect("create");

    let mut changed = created.clone();
    changed.data["spec"]["pipeline"]["definitionId"] = json!(2);
    let updated = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_eq!(updated.metadata.generation, Some(2));
    assert!(rv(&updated) > rv(&created));

    // The stale copy still carries the old resourceVersion.
    let stale = api_status(
        api.replace("a", &PostParams::default(), &changed)
            .await
            .expect_err("stale"),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert_eq!(stale.message, "Operation cannot be fulfilled on pipelinegates.lockstep.dev \"a\": the object has been modified; please apply your changes to the latest version and try again");

    // Custom resources refuse unconditional updates.
    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    let refused = api_status(
        api.replace("a", &PostParams::default(), &unconditional)
            .await
            .expect_err("no resourceVersion"),
    );
    assert_eq!(refused.code, 422);

    // Labels are validated on every kind.
    let bad_label = api_status(
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "not valid!"}}})),
        )
        .await
        .expect_err("invalid label value"),
    );
    assert_eq!(bad_label.code, 422);
    assert!(bad_label.message.starts_with("PipelineGate.lockstep.dev \"a\" is invalid: metadata.labels: Invalid value: \"not valid!\": a valid label must be"), "{}", bad_label.message);

    // Metadata-only changes do not move generation.
    let labelled = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "orders"}}})),
        )
        .await
        .expect("label");
    assert_eq!(labelled.metadata.generation, Some(2));
    assert!(rv(&labelled) > rv(&updated));

    // A no-op write does not create a new resourceVersion.
    let same = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "orders"}}})),
        )
        .await
        .expect("no-op");
    assert_eq!(rv(&same), rv(&labelled));

    // A merge patch carrying a stale resourceVersion is a precondition and fails.
    let precondition = api_status(
        api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"resourceVersion": created.metadata.resource_version}, "spec": {"suspend": true}})))
            .await
            .expect_err("stale patch"),
    );
    assert_eq!(precondition.code, 409);

    // JSON patch.
    let jp: json_patch_ops::Patch = serde_json::from_value(
        json!([{"op": "replace", "path": "/spec/pipeline/branch", "value": "main"}]),
    )
    .expect("json patch");
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(jp))
        .await
        .expect("json patch");
    assert_eq!(patched.data["spec"]["pipeline"]["branch"], "main");
    assert_eq!(patched.metadata.generation, Some(3));
    let failing: json_patch_ops::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/spec/pipeline/branch", "value": "other"}]),
    )
    .expect("json patch");
    assert_eq!(
        api_status(
            api.patch("a", &PatchParams::default(), &Patch::Json::<()>(failing))
                .await
                .expect_err("test op fails")
        )
        .code,
        422
    );

    // Strategic merge patch is not supported for custom resources.
    let smp = api_status(
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"suspend": true}})),
        )
        .await
        .expect_err("415"),
    );
    assert_eq!(smp.code, 415);
}

use json_patch as json_patch_ops;

#[tokio::test]
async fn status_subresource_is_split_from_the_main_endpoint() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    let mut with_status = gate("a", 1);
    with_status.data["status"] = json!({"lastError": "ignored on create"});
    let created = api
        .create(&PostParams::default(), &with_status)
        .await
        .expect("create");
    assert!(
        created.data.get("status").is_none() || created.data["status"].get("lastError").is_none(),
        "status dropped on create: {:?}",
        created.data
    );

    let s = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(ready_status("True")),
        )
        .await
        .expect("status patch");
    assert_eq!(s.data["status"]["conditions"][0]["status"], "True");
    assert_eq!(
        s.metadata.generation,
        Some(1),
        "status writes do not move generation"
    );

    // Spec in a /status write is ignored.
    let ignored = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("status patch with spec");
    assert_eq!(ignored.data["spec"]["suspend"], false);

    // Status in a main-endpoint write is ignored.
    let main = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}, "status": {"lastError": "nope"}})),
        )
        .await
        .expect("main patch");
    assert_eq!(main.data["spec"]["suspend"], true);
    assert!(main.data["status"].get("lastError").is_none());
    assert_eq!(main.data["status"]["conditions"][0]["status"], "True");

    // PUT to /status replaces status only.
    let mut whole = api.get("a").await.expect("get");
    whole.data["status"]["lastError"] = json!("boom");
    whole.data["spec"]["suspend"] = json!(false);
    let replaced = api
        .replace_status("a", &PostParams::default(), &whole)
        .await
        .expect("replace status");
    assert_eq!(replaced.data["status"]["lastError"], "boom");
    assert_eq!(replaced.data["spec"]["suspend"], true);
    let fetched = api.get_status("a").await.expect("get status");
    assert_eq!(fetched.data["status"]["lastError"], "boom");
}

#[tokio::test]
async fn server_side_apply_tracks_managers_conflicts_and_force() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    let mut desired = serde_json::to_value(gate("a", 1)).expect("json");
    let applied = api
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&desired))
        .await
        .expect("create on apply");
    assert_eq!(applied.metadata.generation, Some(1));
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone(), m.operation.clone()))
        .collect();
    assert_eq!(
        managers,
        vec![(Some("alice".to_string()), Some("Apply".to_string()))]
    );

    // Re-applying the same configuration is a no-op: no new resourceVersion.
    let again = api
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&desired))
        .await
        .expect("re-apply");
    assert_eq!(
        again.metadata.resource_version,
        applied.metadata.resource_version
    );
    // A second manager applying identical values shares ownership, which is recorded.
    let shared = api
        .patch("a", &PatchParams::apply("carol"), &Patch::Apply(&desired))
        .await
        .expect("shared apply");
    assert!(shared
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some("carol")));
    let carol_only = json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate", "metadata": {"name": "a"}, "spec": {"pipeline": {"definitionId": 5, "branch": "develop"}}});
    let shared_conflict = api_status(
        api.patch(
            "a",
            &PatchParams::apply("carol"),
            &Patch::Apply(&carol_only),
        )
        .await
        .expect_err("shared field conflicts"),
    );
    assert!(
        shared_conflict.message.contains("conflict with \"alice\""),
        "{}",
        shared_conflict.message
    );
    // Applying an empty configuration gives up ownership; alice's fields stay.
    let empty = json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate", "metadata": {"name": "a"}});
    let released = api
        .patch("a", &PatchParams::apply("carol"), &Patch::Apply(&empty))
        .await
        .expect("release");
    assert!(!released
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some("carol")));
    assert_eq!(released.data["spec"]["pipeline"]["definitionId"], 1);

    // Another manager setting the same field to another value conflicts...
    desired["spec"]["pipeline"]["definitionId"] = json!(7);
    let conflict = api_status(
        api.patch("a", &PatchParams::apply("bob"), &Patch::Apply(&desired))
            .await
            .expect_err("conflict"),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert_eq!(conflict.message, "Apply failed with 1 conflict: conflict with \"alice\" using lockstep.dev/v1alpha1: .spec.pipeline.definitionId");
    // ...unless forced, which takes ownership.
    let forced = api
        .patch(
            "a",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&desired),
        )
        .await
        .expect("force");
    assert_eq!(forced.data["spec"]["pipeline"]["definitionId"], 7);
    assert_eq!(forced.metadata.generation, Some(2));

    // Status through SSA on the status subresource; a second manager's condition merges by type.
    let status = json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate", "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok", "lastTransitionTime": "2026-11-22T10:00:00Z"}]}});
    let s = api
        .patch_status(
            "a",
            &PatchParams::apply("lockstep").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status apply");
    assert_eq!(s.data["status"]["conditions"][0]["type"], "Ready");
    let other = json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate", "status": {"conditions": [{"type": "Custom", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "2026-11-22T10:00:00Z"}]}});
    let s2 = api
        .patch_status("a", &PatchParams::apply("other"), &Patch::Apply(&other))
        .await
        .expect("second manager");
    // Ready (lockstep), Custom (other) and Reconciling from the CRD's status default, which the create
    // left in place and nobody's apply removed (lockstep's real writes set all three of its types).
    let types: Vec<&str> = s2.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(
        types,
        ["Ready", "Reconciling", "Custom"],
        "{:#}",
        s2.data["status"]
    );
    let entry = s2
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("lockstep"))
        .expect("lockstep entry");
    assert_eq!(entry.subresource.as_deref(), Some("status"));

    // Dropping a field from the applied configuration removes it when nobody else owns it.
    let again = json!({"apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate", "status": {"lastError": "x"}});
    let s3 = api
        .patch_status(
            "a",
            &PatchParams::apply("lockstep").force(),
            &Patch::Apply(&again),
        )
        .await
        .expect("reapply");
    let types: Vec<_> = s3.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["type"].clone())
        .collect();
    // The defaulted Reconciling is owned by nobody, so it stays.
    assert_eq!(types, vec![json!("Reconciling"), json!("Custom")]);
    assert_eq!(s3.data["status"]["lastError"], "x");

    // Apply without fieldManager is rejected by the server.
    let raw = http::Request::builder()
        .method("PATCH")
        .uri("/apis/lockstep.dev/v1alpha1/namespaces/default/pipelinegates/a")
        .header("Content-Type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&desired).expect("bytes"))
        .expect("request");
    let err = client
        .request::<DynamicObject>(raw)
        .await
        .expect_err("no fieldManager");
    assert_eq!(api_status(err).code, 400);
}

#[tokio::test]
async fn delete_honours_finalizers() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    let mut g = gate("a", 1);
    g.metadata.finalizers = Some(vec!["lockstep.dev/cleanup".into()]);
    api.create(&PostParams::default(), &g)
        .await
        .expect("create");
    let deleted = api
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let pending = deleted
        .left()
        .expect("object returned while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = api.get("a").await.expect("still there");
    assert!(still.metadata.deletion_timestamp.is_some());
    assert_eq!(
        still.metadata.generation,
        Some(2),
        "deletion bumps generation of custom resources"
    );

    // New finalizers cannot be added while deleting.
    let refused = api_status(
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["lockstep.dev/cleanup", "other"]}})),
        )
        .await
        .expect_err("no new finalizers"),
    );
    assert_eq!(refused.code, 422);

    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    let gone = api_status(api.get("a").await.expect_err("removed"));
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn list_supports_selectors_and_pagination() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    for (i, team) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let mut g = gate(&format!("g{i}"), 1);
        g.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        api.create(&PostParams::default(), &g)
            .await
            .expect("create");
    }
    let names = |l: &kube::core::ObjectList<DynamicObject>| {
        l.items
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            &api.list(&ListParams::default().labels("team in (a,c)"))
                .await
                .expect("in")
        ),
        vec!["g0", "g2"]
    );
    assert_eq!(
        names(
            &api.list(&ListParams::default().labels("team notin (a,c),team!=e"))
                .await
                .expect("notin")
        ),
        vec!["g1", "g3"]
    );
    assert_eq!(
        names(
            &api.list(&ListParams::default().labels("team"))
                .await
                .expect("exists")
        )
        .len(),
        5
    );
    assert_eq!(
        names(
            &api.list(&ListParams::default().labels("!team"))
                .await
                .expect("not exists")
        )
        .len(),
        0
    );
    assert_eq!(
        names(
            &api.list(&ListParams::default().fields("metadata.name=g3"))
                .await
                .expect("field")
        ),
        vec!["g3"]
    );
    let bad = api_status(
        api.list(&ListParams::default().fields("spec.suspend=true"))
            .await
            .expect_err("unsupported field"),
    );
    assert_eq!(bad.code, 400);

    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(names(&first), vec!["g0", "g1"]);
    let token = first.metadata.continue_.clone().expect("continue token");
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(names(&second), vec!["g2", "g3"]);
    let third = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(second.metadata.continue_.as_deref().expect("token")),
        )
        .await
        .expect("page 3");
    assert_eq!(names(&third), vec!["g4"]);
    assert!(third
        .metadata
        .continue_
        .as_deref()
        .unwrap_or_default()
        .is_empty());

    // All namespaces.
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &gate_resource());
    assert_eq!(
        all.list(&ListParams::default())
            .await
            .expect("all")
            .items
            .len(),
        5
    );
}

#[tokio::test]
async fn watch_streams_changes_bookmarks_and_expires_old_versions() {
    let (emu, client) = emulator().await;
    let api = gates(&client, "default");
    let created = api
        .create(&PostParams::default(), &gate("a", 1))
        .await
        .expect("create");
    let start = created.metadata.resource_version.clone().expect("rv");

    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &start)
        .await
        .expect("watch")
        .boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .expect("modify");
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let mut seen = Vec::new();
    let mut bookmarks = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while (seen.len() < 2 || bookmarks == 0) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Modified(o)))) => {
                seen.push(("MODIFIED", o.data["spec"]["suspend"].clone()))
            }
            Ok(Ok(Some(WatchEvent::Deleted(o)))) => {
                seen.push(("DELETED", o.data["spec"]["suspend"].clone()))
            }
            Ok(Ok(Some(WatchEvent::Bookmark(b)))) => {
                assert!(!b.metadata.resource_version.is_empty());
                bookmarks += 1;
            }
            other => panic!("unexpected watch item: {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![("MODIFIED", json!(true)), ("DELETED", json!(true))]
    );
    assert!(bookmarks > 0, "allowWatchBookmarks yields BOOKMARK events");

    // After the window expires, resuming from an old version gets a 410 Expired ERROR event.
    emu.faults().expire_watch_window();
    let mut old = api
        .watch(&WatchParams::default(), &start)
        .await
        .expect("watch")
        .boxed();
    match tokio::time::timeout(Duration::from_secs(20), old.try_next()).await {
        Ok(Ok(Some(WatchEvent::Error(e)))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }

    // timeoutSeconds ends the stream.
    let current = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut short = api
        .watch(&WatchParams::default().timeout(1), &current)
        .await
        .expect("watch")
        .boxed();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(_)) = short.try_next().await {}
    })
    .await;
    assert!(ended.is_ok(), "watch with timeoutSeconds=1 ends");
}

#[tokio::test]
async fn watch_with_selectors_sees_objects_enter_and_leave() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    let created = api
        .create(&PostParams::default(), &gate("a", 1))
        .await
        .expect("create");
    let mut stream = api
        .watch(
            &WatchParams::default().labels("team=orders"),
            created.metadata.resource_version.as_deref().expect("rv"),
        )
        .await
        .expect("watch")
        .boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "orders"}}})),
    )
    .await
    .expect("label");
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "billing"}}})),
    )
    .await
    .expect("relabel");
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(20), stream.try_next())
            .await
            .expect("event in time")
            .expect("ok")
        {
            Some(WatchEvent::Added(_)) => kinds.push("ADDED"),
            Some(WatchEvent::Deleted(_)) => kinds.push("DELETED"),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, vec!["ADDED", "DELETED"]);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents_and_waits_for_finalizers() {
    use k8s_openapi::api::core::v1::Namespace;
    let (_emu, client) = emulator().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "orders"}})).expect("ns"),
        )
        .await
        .expect("create ns");
    let api = gates(&client, "orders");
    let mut held = gate("held", 1);
    held.metadata.finalizers = Some(vec!["lockstep.dev/cleanup".into()]);
    api.create(&PostParams::default(), &held)
        .await
        .expect("create held");
    api.create(&PostParams::default(), &gate("free", 1))
        .await
        .expect("create free");

    namespaces
        .delete("orders", &DeleteParams::default())
        .await
        .expect("delete ns");
    let ns = namespaces
        .get("orders")
        .await
        .expect("namespace stays while an object has finalizers");
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        api_status(api.get("free").await.expect_err("free deleted")).code,
        404
    );
    assert!(api
        .get("held")
        .await
        .expect("held stays")
        .metadata
        .deletion_timestamp
        .is_some());

    let refused = api_status(
        api.create(&PostParams::default(), &gate("new", 1))
            .await
            .expect_err("terminating namespace"),
    );
    assert_eq!(refused.code, 403);
    assert!(
        refused.message.contains(
            "unable to create new content in namespace orders because it is being terminated"
        ),
        "{}",
        refused.message
    );

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    assert_eq!(
        api_status(namespaces.get("orders").await.expect_err("namespace gone")).code,
        404
    );
}

#[tokio::test]
async fn metadata_only_requests_get_partial_object_metadata() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    let created = api
        .create(&PostParams::default(), &gate("a", 1))
        .await
        .expect("create");
    let listed = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list metadata");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.uid, created.metadata.uid);
    let one = api.get_metadata("a").await.expect("get metadata");
    assert_eq!(one.metadata.name.as_deref(), Some("a"));

    let meta_api: Api<kube::core::PartialObjectMeta<DynamicObject>> =
        Api::namespaced_with(client.clone(), "default", &gate_resource());
    let mut stream =
        kube::runtime::watcher(meta_api, kube::runtime::watcher::Config::default()).boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut names = Vec::new();
    while !names.contains(&"a".to_string()) {
        match tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
        {
            Some(
                kube::runtime::watcher::Event::InitApply(m)
                | kube::runtime::watcher::Event::Apply(m),
            ) => names.push(m.metadata.name.unwrap_or_default()),
            Some(_) => {}
            None => panic!("metadata watcher ended"),
        }
    }
}

#[tokio::test]
async fn the_written_kubeconfig_works_for_kube_config_loading() {
    use k8s_openapi::api::core::v1::Namespace;
    let (emu, _client) = emulator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&path).expect("write");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("parse kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).expect("client");
    let names: Vec<_> = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, vec!["default", "kube-system"]);
}

#[tokio::test]
async fn flux_and_argo_test_crds_accept_the_status_servicetrace_reads() {
    let (_emu, client) = emulator().await;
    let ks_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    );
    let kustomizations: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ks_resource);
    let ks: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "orders"},
        "spec": {"interval": "5m", "prune": true, "path": "./deploy", "sourceRef": {"kind": "GitRepository", "name": "orders"}, "targetNamespace": "orders"}
    }))
    .expect("kustomization");
    let created = kustomizations
        .create(&PostParams::default(), &ks)
        .await
        .expect("create kustomization");
    assert_eq!(
        created.data["spec"]["targetNamespace"], "orders",
        "preserve-unknown-fields keeps upstream fields"
    );
    let with_status = kustomizations
        .patch_status("orders", &PatchParams::default(), &Patch::Merge(json!({"status": {"lastAppliedRevision": "main@sha1:0123456789abcdef0123456789abcdef01234567", "observedGeneration": 1}})))
        .await
        .expect("status");
    assert_eq!(
        with_status.data["status"]["lastAppliedRevision"],
        "main@sha1:0123456789abcdef0123456789abcdef01234567"
    );
    let bad_source = json!({"spec": {"sourceRef": {"kind": "HelmRepository"}}});
    let invalid = api_status(
        kustomizations
            .patch("orders", &PatchParams::default(), &Patch::Merge(bad_source))
            .await
            .expect_err("enum"),
    );
    assert!(
        invalid
            .message
            .contains("spec.sourceRef.kind: Unsupported value: \"HelmRepository\""),
        "{}",
        invalid.message
    );

    let app_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
        "applications",
    );
    let apps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &app_resource);
    let app: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "orders"},
        "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc", "namespace": "orders"}, "source": {"repoURL": "https://dev.azure.com/contoso/Shop/_git/orders-manifests", "path": ".", "targetRevision": "main"}}
    }))
    .expect("application");
    apps.create(&PostParams::default(), &app)
        .await
        .expect("create application");
    // Argo CD's Application has no status subresource: status is written through the main endpoint and,
    // being part of the object, moves generation like any other non-metadata change.
    let synced = apps
        .patch("orders", &PatchParams::default(), &Patch::Merge(json!({"status": {"sync": {"status": "Synced", "revision": "0123456789abcdef0123456789abcdef01234567"}, "health": {"status": "Healthy"}}})))
        .await
        .expect("status via main endpoint");
    assert_eq!(
        synced.data["status"]["sync"]["revision"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(synced.metadata.generation, Some(2));
    let no_status_endpoint = apps
        .patch_status(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {}})),
        )
        .await
        .expect_err("no /status");
    assert_eq!(api_status(no_status_endpoint).code, 404);
}

#[tokio::test]
async fn delete_collection_removes_matching_objects() {
    let (_emu, client) = emulator().await;
    let api = gates(&client, "default");
    for (name, team) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut g = gate(name, 1);
        g.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        api.create(&PostParams::default(), &g)
            .await
            .expect("create");
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("team=x"),
    )
    .await
    .expect("delete collection");
    let left: Vec<_> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(left, vec!["c"]);
}

fn crds_api(client: &Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    )
}

/// A CRD with a status subresource whose schema defaults the root-level `status` (and fields inside).
async fn widget_crd_with_status_default(client: &Client) -> Api<DynamicObject> {
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 1},
                         "opts": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "z": {"type": "integer"}}}}},
                     "status": {"type": "object", "default": {"phase": "Pending"}, "properties": {
                         "phase": {"type": "string"},
                         "observedGeneration": {"type": "integer"},
                         "lastRun": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}, "result": {"type": "string"}}},
                         "conditions": {"type": "array", "default": [], "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}}}}]}
    }))
    .expect("crd");
    crds_api(client)
        .create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("example.com", "v1", "Widget"),
            "widgets",
        ),
    )
}

/// kube-apiserver defaults custom resources when it decodes them from etcd, not only on writes
/// (apiextensions-apiserver customresource_handler.go: the storage codec's `unstructuredDefaulter`; CRD docs,
/// "Defaulting": "when reading from etcd using the storage version defaults"). With a status subresource,
/// create drops `status` (customresource/strategy.go PrepareForCreate), so the object is served with the
/// schema's default status until a status write stores one.
#[tokio::test]
async fn defaults_apply_on_read_so_a_defaulted_status_shows_until_a_status_write() {
    let (_emu, client) = emulator().await;
    let widgets = widget_crd_with_status_default(&client).await;
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"},
        "spec": {}, "status": {"phase": "Done"}
    }))
    .expect("widget");
    let mut watch = widgets
        .watch(&WatchParams::default().timeout(10), "0")
        .await
        .expect("watch")
        .boxed();

    let created = widgets
        .create(&PostParams::default(), &w)
        .await
        .expect("create");
    // The submitted status is dropped; the default status is what the create response (decoded from
    // storage) shows, with the nested defaults inside it applied too.
    assert_eq!(
        created.data["status"],
        json!({"phase": "Pending", "conditions": []})
    );
    assert_eq!(created.data["spec"], json!({"size": 1}));
    // Not stored: managedFields record no status ownership.
    let managed = serde_json::to_string(&created.metadata.managed_fields).expect("json");
    assert!(!managed.contains("f:status"), "{managed}");

    let got = widgets.get("w1").await.expect("get");
    assert_eq!(got.data["status"]["phase"], "Pending");
    let listed = widgets.list(&ListParams::default()).await.expect("list");
    assert_eq!(listed.items[0].data["status"]["phase"], "Pending");
    match tokio::time::timeout(Duration::from_secs(5), watch.try_next()).await {
        Ok(Ok(Some(WatchEvent::Added(o)))) => assert_eq!(o.data["status"]["phase"], "Pending"),
        other => panic!("expected ADDED with the default status, got {other:?}"),
    }

    // A status patch starts from the live (defaulted) object, so the default phase is kept and stored.
    let patched = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .expect("status patch");
    assert_eq!(
        patched.data["status"],
        json!({"phase": "Pending", "observedGeneration": 1, "conditions": []})
    );
    // A status write stores its own status; reads show it from then on.
    let mut replaced = patched.clone();
    replaced.data["status"] = json!({"phase": "Ready", "conditions": [{"type": "Ready"}]});
    widgets
        .replace_status("w1", &PostParams::default(), &replaced)
        .await
        .expect("status put");
    let got = widgets.get("w1").await.expect("get");
    assert_eq!(
        got.data["status"],
        json!({"phase": "Ready", "conditions": [{"type": "Ready"}]})
    );
    // A spec update at the main endpoint keeps the stored status.
    let updated = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .expect("spec patch");
    assert_eq!(updated.data["status"]["phase"], "Ready");
    assert_eq!(updated.data["spec"]["size"], 3);

    // An object whose status write removed `status` is served with the default again.
    let cleared = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null})),
        )
        .await
        .expect("status cleared");
    assert_eq!(
        cleared.data["status"],
        json!({"phase": "Pending", "conditions": []})
    );

    // A default added to the schema later shows on objects stored before, without a write.
    let before = widgets.get("w1").await.expect("get");
    let crds = crds_api(&client);
    let mut crd = crds.get("widgets.example.com").await.expect("crd");
    crd.data["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["color"] = json!({"type": "string", "default": "blue"});
    crds.replace("widgets.example.com", &PostParams::default(), &crd)
        .await
        .expect("CRD updated");
    let after = widgets.get("w1").await.expect("get");
    assert_eq!(after.data["spec"], json!({"size": 3, "color": "blue"}));
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
}

/// Server-side apply removes what the same manager applied before and no longer applies, struct fields
/// included (structured-merge-diff `Updater.prune` with `EnsureNamedFieldsAreMembers`): a nested object
/// the manager stopped applying goes as a whole instead of staying as `{}` (which a later status write
/// would then fail to validate: `status.lastRun.id: Required value`). Fields another manager owns stay.
#[tokio::test]
async fn server_side_apply_removes_nested_fields_the_manager_no_longer_applies() {
    let (_emu, client) = emulator().await;
    let widgets = widget_crd_with_status_default(&client).await;
    let apply =
        |v: Value| serde_json::from_value::<DynamicObject>(v).expect("applied configuration");
    let ssa = PatchParams::apply("ctl");
    widgets
        .patch(
            "w",
            &ssa,
            &Patch::Apply(apply(json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"opts": {"x": 1, "y": 2}}}))),
        )
        .await
        .expect("first apply");
    widgets
        .patch_status(
            "w",
            &ssa,
            &Patch::Apply(apply(json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "status": {"phase": "Running", "lastRun": {"id": 5, "result": "ok"}}}))),
        )
        .await
        .expect("status apply with lastRun");
    let after = widgets
        .patch_status(
            "w",
            &ssa,
            &Patch::Apply(apply(json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "status": {"phase": "Idle"}}))),
        )
        .await
        .expect("status apply without lastRun");
    assert_eq!(
        after.data["status"],
        json!({"phase": "Idle", "conditions": []})
    );
    let managed = serde_json::to_value(&after.metadata.managed_fields).expect("json");
    assert!(!managed.to_string().contains("lastRun"), "{managed}");
    // A later status write validates (with `lastRun: {}` left behind it would get 422 Required value).
    let patched = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .expect("later status write");
    assert_eq!(patched.data["status"]["observedGeneration"], 1);

    // Another manager's field under a struct the applier drops keeps that struct (with only that field).
    widgets
        .patch(
            "w",
            &PatchParams {
                field_manager: Some("other".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"opts": {"z": 3}}})),
        )
        .await
        .expect("other manager's update");
    let dropped = widgets
        .patch(
            "w",
            &ssa,
            &Patch::Apply(apply(json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 2}}))),
        )
        .await
        .expect("apply without opts");
    assert_eq!(dropped.data["spec"], json!({"size": 2, "opts": {"z": 3}}));
    // And when nobody owns anything under it, the struct goes entirely.
    widgets
        .patch(
            "w",
            &ssa,
            &Patch::Apply(apply(json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 2, "opts": {"x": 7}}}))),
        )
        .await
        .expect("apply opts.x again");
    widgets
        .patch(
            "w",
            &PatchParams {
                field_manager: Some("other".into()),
                ..Default::default()
            },
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "remove", "path": "/spec/opts/z"}]))
                    .expect("json patch"),
            ),
        )
        .await
        .expect("other manager removes z");
    let gone = widgets
        .patch(
            "w",
            &ssa,
            &Patch::Apply(apply(json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 2}}))),
        )
        .await
        .expect("apply without opts again");
    assert_eq!(gone.data["spec"], json!({"size": 2}));
}
