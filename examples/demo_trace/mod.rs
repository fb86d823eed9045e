//! The demo's second act: one change followed by a ServiceTrace through the HLD repository, the
//! manifest repository and two environments (a Flux Kustomization for dev, an Argo CD Application for
//! prod), printed the way `kubectl get strace -w` prints it, with the history at the end.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use lockstep::crd::ServiceTrace;
use lockstep::service_trace::read::{argo_application_resource, flux_kustomization_resource};
use lockstep_testkit::ado::{AdoSimulator, RunResult};
use tokio::sync::mpsc;

/// Minimal Flux Kustomization and Argo CD Application CRDs (schema-less), for the emulator.
pub const AGENT_CRDS: [(&str, &str); 2] = [
    (
        "kustomizations.yaml",
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: kustomizations.kustomize.toolkit.fluxcd.io}
spec:
  group: kustomize.toolkit.fluxcd.io
  names: {kind: Kustomization, listKind: KustomizationList, plural: kustomizations, singular: kustomization}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
",
    ),
    (
        "applications.yaml",
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: applications.argoproj.io}
spec:
  group: argoproj.io
  names: {kind: Application, listKind: ApplicationList, plural: applications, singular: application}
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
",
    ),
];

const CI: i64 = 312;
const GENERATION: i64 = 314;
const SOURCE: &str = "5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b";
const HLD_BEFORE: &str = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c";
const HLD_COMMIT: &str = "4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d";
const MANIFEST_BEFORE: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
const MANIFEST_COMMIT: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const DEADLINE: Duration = Duration::from_secs(30);
pub const TRACE_HEADER: &str = "NAME     BUILD         PROGRESS          READY   REASON";

/// One `kubectl get strace -w` row.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    build: String,
    progress: String,
    ready: String,
    reason: String,
}

impl Row {
    fn of(t: &ServiceTrace) -> Row {
        let status = t.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        Row {
            build: status
                .latest
                .as_ref()
                .and_then(|l| l.build.number.clone())
                .unwrap_or_else(|| "<none>".into()),
            progress: status.summary.unwrap_or_else(|| "<none>".into()),
            ready: ready.map_or("<none>".into(), |c| c.status.clone()),
            reason: ready.map_or("<none>".into(), |c| c.reason.clone()),
        }
    }
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<8} {:<13} {:<17} {:<7} {}",
            self.build, self.progress, self.ready, self.reason
        )
    }
}

async fn watch(api: Api<ServiceTrace>, name: String, tx: mpsc::UnboundedSender<Row>) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, cfg).applied_objects().boxed();
    let mut last: Option<Row> = None;
    while let Some(Ok(t)) = stream.next().await {
        let row = Row::of(&t);
        if last.as_ref() != Some(&row) {
            last = Some(row.clone());
            if tx.send(row).is_err() {
                return;
            }
        }
    }
}

/// Waits for a row satisfying `want`, printing every row on the way.
async fn until(
    rows: &mut mpsc::UnboundedReceiver<Row>,
    name: &str,
    what: &str,
    want: impl Fn(&Row) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rows.recv()).await {
            Ok(Some(row)) => {
                println!("{}", row.line(name));
                if want(&row) {
                    return Ok(());
                }
            }
            _ => {
                return Err(format!(
                    "{what} was not seen within {}s",
                    DEADLINE.as_secs()
                ))
            }
        }
    }
}

async fn create(
    client: &kube::Client,
    ns: &str,
    ar: &ApiResource,
    name: &str,
    spec: serde_json::Value,
) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": ar.api_version, "kind": ar.kind,
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .map_err(|e| e.to_string())?;
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(|e| format!("{} {name}: {e}", ar.kind))?;
    Ok(())
}

async fn set_status(
    client: &kube::Client,
    ns: &str,
    ar: &ApiResource,
    name: &str,
    status: serde_json::Value,
) -> Result<(), String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .map_err(|e| format!("status of {} {name}: {e}", ar.kind))?;
    Ok(())
}

fn flux_applied(revision: &str) -> serde_json::Value {
    serde_json::json!({"observedGeneration": 1, "lastAppliedRevision": format!("main@sha1:{revision}"),
        "conditions": [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied revision",
                        "lastTransitionTime": "2026-11-22T10:00:00Z"}]})
}

fn argo_synced(revision: &str) -> serde_json::Value {
    serde_json::json!({"sync": {"status": "Synced", "revision": revision}, "health": {"status": "Healthy"},
                       "operationState": {"phase": "Succeeded", "message": "successfully synced"}})
}

/// Play the trace act. `org`/`project` are the simulator's; the PAT Secret `secret` exists in `ns`.
pub async fn play(
    client: &kube::Client,
    sim: &AdoSimulator,
    org: &str,
    project: &str,
    ns: &str,
    secret: (&str, &str),
) -> Result<(), String> {
    let name = "orders";
    sim.add_definition(org, project, CI, "orders-ci");
    sim.add_definition(org, project, GENERATION, "orders-manifests");
    sim.add_repository(
        org,
        project,
        project,
        &[("main", "0000000000000000000000000000000000000001")],
    );
    sim.add_repository(org, project, "orders-hld", &[("main", HLD_BEFORE)]);
    sim.add_repository(
        org,
        project,
        "orders-manifests",
        &[("main", MANIFEST_BEFORE)],
    );
    let flux = flux_kustomization_resource();
    let argo = argo_application_resource();
    create(
        client,
        ns,
        &flux,
        "orders-dev",
        serde_json::json!({"interval": "5m", "path": "./dev", "prune": true}),
    )
    .await?;
    set_status(
        client,
        ns,
        &flux,
        "orders-dev",
        flux_applied(MANIFEST_BEFORE),
    )
    .await?;
    create(client, ns, &argo, "orders-prod", serde_json::json!({"project": "default", "destination": {"name": "prod-eu", "namespace": "orders"}})).await?;
    set_status(
        client,
        ns,
        &argo,
        "orders-prod",
        argo_synced(MANIFEST_BEFORE),
    )
    .await?;

    let trace: ServiceTrace = serde_json::from_value(serde_json::json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "ServiceTrace",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "azureDevOps": {"organizationUrl": sim.org_url(org), "project": project,
                            "credentials": {"secretRef": {"name": secret.0, "key": secret.1}}},
            "build": {"definitionId": CI, "branch": "main"},
            "hld": {"repository": "orders-hld", "branch": "main"},
            "manifest": {"repository": "orders-manifests", "branch": "main", "definitionId": GENERATION},
            "environments": [
                {"name": "dev", "fluxKustomization": {"name": "orders-dev"}},
                {"name": "prod", "argoApplication": {"name": "orders-prod"}}
            ],
            "interval": "2s"
        }
    }))
    .map_err(|e| e.to_string())?;
    println!();
    println!("ServiceTrace: one change through the HLD repository, the manifests, dev (Flux) and prod (Argo CD)");
    println!("{TRACE_HEADER}");
    let api: Api<ServiceTrace> = Api::namespaced(client.clone(), ns);
    let (tx, mut rows) = mpsc::unbounded_channel();
    tokio::spawn(watch(api.clone(), name.to_string(), tx));

    // A pull request is merged; CI builds the merge commit.
    sim.push(org, project, project, "main", SOURCE);
    sim.describe_commit(
        org,
        project,
        project,
        SOURCE,
        "Jamal Hartnett",
        "Merged PR 42: Add retries to the payment client",
    );
    let build = sim.queue_run(org, project, CI, "main", SOURCE);
    sim.start_run(build);
    api.create(&PostParams::default(), &trace)
        .await
        .map_err(|e| format!("the ServiceTrace: {e}"))?;
    until(&mut rows, name, "the running build", |r| {
        r.reason == "BuildInProgress"
    })
    .await?;
    sim.complete_run(build, RunResult::Succeeded);
    let number = sim.run(build).map(|r| r.build_number).unwrap_or_default();
    until(&mut rows, name, "the build's success", |r| {
        r.build == number && r.reason != "BuildInProgress"
    })
    .await?;

    // The CI run writes the image tag into the HLD repository (Bedrock's message), generation renders it.
    sim.push(org, project, "orders-hld", "main", HLD_COMMIT);
    let hld_message = format!("Updating orders image tag to main-{number}.");
    sim.describe_commit(
        org,
        project,
        "orders-hld",
        HLD_COMMIT,
        "Automated Account",
        &hld_message,
    );
    let generation = sim.queue_run(org, project, GENERATION, "main", HLD_COMMIT);
    sim.start_run(generation);
    sim.complete_run(generation, RunResult::Succeeded);
    sim.push(org, project, "orders-manifests", "main", MANIFEST_COMMIT);
    sim.describe_commit(
        org,
        project,
        "orders-manifests",
        MANIFEST_COMMIT,
        "Automated Account",
        &format!("Updated k8s manifest files post commit: {hld_message}"),
    );
    until(
        &mut rows,
        name,
        "the rendered manifest waiting for dev",
        |r| r.reason == "DeployPending",
    )
    .await?;

    // Flux applies it in dev, then Argo CD syncs prod.
    set_status(
        client,
        ns,
        &flux,
        "orders-dev",
        flux_applied(MANIFEST_COMMIT),
    )
    .await?;
    until(&mut rows, name, "dev", |r| r.progress.starts_with("dev ✓")).await?;
    set_status(
        client,
        ns,
        &argo,
        "orders-prod",
        argo_synced(MANIFEST_COMMIT),
    )
    .await?;
    until(&mut rows, name, "prod", |r| {
        r.progress == "dev ✓ prod ✓" && r.ready == "True"
    })
    .await?;

    // The history, as `kubectl get strace orders -o jsonpath='{.status.history}'` has it.
    let t = api
        .get(name)
        .await
        .map_err(|e| format!("the ServiceTrace: {e}"))?;
    let status = t.status.unwrap_or_default();
    println!();
    println!("History (status.history, newest first):");
    println!("BUILD         COMMIT    AUTHOR           PR    HLD       MANIFEST  DEV                    PROD");
    for h in &status.history {
        let at = |env: &str| {
            h.environments.get(env).map_or("-".to_string(), |a| {
                match (&a.arrived_at, &a.lead_time) {
                    (Some(t), Some(lead)) => format!("{} (+{lead})", t.0.strftime("%H:%M:%S")),
                    _ => a.state.clone(),
                }
            })
        };
        let short = |s: &Option<String>| {
            s.as_deref()
                .map_or("-".to_string(), |s| s.chars().take(7).collect())
        };
        println!(
            "{:<13} {:<9} {:<16} {:<5} {:<9} {:<9} {:<22} {}",
            h.image_tag.clone().unwrap_or_default(),
            short(&h.commit),
            h.author.clone().unwrap_or_else(|| "-".into()),
            h.pull_request
                .as_ref()
                .map_or("-".to_string(), |p| format!("#{}", p.id)),
            short(&h.hld_commit),
            short(&h.manifest_commit),
            at("dev"),
            at("prod"),
        );
    }
    if let Some(latest) = &status.latest {
        for (step, info) in [
            ("HLD update", &latest.hld_update),
            ("manifest generation", &latest.manifest_generation),
        ] {
            if let Some(i) = info {
                println!(
                    "  {step}: {} (linked by {})",
                    i.message.clone().unwrap_or_default(),
                    i.linked_by.clone().unwrap_or_default()
                );
            }
        }
    }
    let _ = t.metadata.name;
    let _ = ResourceExt::name_any(&trace);
    Ok(())
}
