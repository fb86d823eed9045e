//! End to end (issue 18): when a gate opens, the real `lockstep run` nudges the Flux Kustomizations and
//! Argo CD Applications waiting on it, against the Kubernetes API emulator (with Flux's and Argo CD's CRDs
//! from the test kit) and the Azure DevOps simulator.
//!
//! The gate learns of the run's success through a service hook, so the time from the run's success to the
//! nudge is lockstep's own, not a poll period's; the contract is under 1 s.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{condition, Harness, ORG, PROJECT};
use lockstep_testkit::ado::{BuildCompleteVersion, HookDelivery, HookEvent, RunResult};
use lockstep_testkit::kube::FaultRule;
use serde_json::Value;
use tokio::process::Child;

const PAT: &str = "e2e-nudge-pat-5d1e";
const DEFINITION: i64 = 77;
const BRANCH: &str = "main";
const NS: &str = "web";
const HOOK_TOKEN: &str = "nudge-hook-token-93af";
const FLUX_CRD: &str = include_str!("testkit/crds/kustomizations.kustomize.toolkit.fluxcd.io.yaml");
const ARGO_CRD: &str = include_str!("testkit/crds/applications.argoproj.io.yaml");
const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
const REFRESH: &str = "argocd.argoproj.io/refresh";

struct Env {
    harness: Harness,
}

impl std::ops::Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.harness
    }
}

/// One `lockstep run` subprocess with its receiver on; killed on drop.
struct Lockstep {
    _child: Child,
    log: PathBuf,
    delivery: HookDelivery,
}

impl Lockstep {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Env {
    async fn start() -> Env {
        let harness = Harness::start(
            PAT,
            &[
                ("kustomizations.yaml", FLUX_CRD),
                ("applications.yaml", ARGO_CRD),
            ],
        )
        .await;
        harness
            .sim
            .add_definition(ORG, PROJECT, DEFINITION, "web-ci");
        harness.namespace_with_pat(NS, PAT).await;
        harness
            .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: flux-system}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: argocd}\n")
            .await;
        Env { harness }
    }

    /// A gate whose newest run failed (so it starts closed), with `metadata_extra` (labels/annotations
    /// lines, indented 2) and `spec_extra` (indented 2).
    async fn closed_gate(&self, metadata_extra: &str, spec_extra: &str) {
        let run = self
            .sim
            .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"1".repeat(40));
        self.sim.start_run(run);
        self.sim.complete_run(run, RunResult::Failed);
        self.apply(&format!(
            "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata:
  name: base
  namespace: {NS}
{metadata_extra}spec:
  azureDevOps:
    organizationUrl: {org}
    project: {PROJECT}
    credentials:
      secretRef: {{name: ado-pat, key: token}}
  pipeline:
    definitionId: {DEFINITION}
    branch: {BRANCH}
  interval: 10m
{spec_extra}",
            org = self.sim.org_url(ORG)
        ))
        .await;
    }

    async fn kustomization(&self, name: &str, depends_on: &[&str]) {
        let deps: Vec<String> = depends_on
            .iter()
            .map(|d| format!("{{name: {d}}}"))
            .collect();
        self.apply(&format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {name}, namespace: flux-system}}\nspec: {{interval: 10m, path: ./, prune: true, sourceRef: {{kind: GitRepository, name: repo}}, dependsOn: [{}]}}\n",
            deps.join(", ")
        ))
        .await;
    }

    async fn application(&self, name: &str) {
        self.apply(&format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {{name: {name}, namespace: argocd}}\nspec: {{project: default, destination: {{server: https://kubernetes.default.svc, namespace: {NS}}}, source: {{repoURL: https://example.test/repo.git, path: deploy}}}}\n"
        ))
        .await;
    }

    async fn get(&self, ns: &str, kind: &str, name: &str) -> Value {
        serde_json::from_str(
            &self
                .kubectl(&["-n", ns, "get", kind, name, "-o", "json"])
                .await,
        )
        .unwrap()
    }

    async fn lockstep(&self, extra: &[&str]) -> Lockstep {
        let token_file = self.dir.path().join("hook-token");
        std::fs::write(&token_file, HOOK_TOKEN).unwrap();
        let log = self.dir.path().join("lockstep.log");
        let mut args = vec![
            "--fast-interval",
            "1s",
            "--webhook-token-file",
            token_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let child = self.spawn_lockstep(&log, &args);
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let found = text.lines().find_map(|l| {
                let l: Value = serde_json::from_str(l).ok()?;
                (l["message"] == "webhook receiver listening")
                    .then(|| l["local_addr"].as_str().map(str::to_string))?
            });
            if let Some(addr) = found {
                break addr;
            }
            assert!(Instant::now() < deadline, "lockstep did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Lockstep {
            _child: child,
            log,
            delivery: HookDelivery::to(format!("http://{addr}/hooks/azure-devops"))
                .header("X-Lockstep-Token", HOOK_TOKEN),
        }
    }

    async fn wait_gate(&self, lockstep: &Lockstep, what: &str, check: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let gate = self.get(NS, "pipelinegate", "base").await;
            if check(&gate) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; gate:\n{gate:#}\nlog:\n{}",
                lockstep.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A succeeded run, announced by a build.complete hook; returns the wall-clock time it succeeded.
    async fn succeed_and_deliver(&self, lockstep: &Lockstep) -> jiff::Timestamp {
        let run = self
            .sim
            .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"2".repeat(40));
        self.sim.start_run(run);
        let succeeded_at = jiff::Timestamp::now();
        self.sim.complete_run(run, RunResult::Succeeded);
        let event = HookEvent::BuildComplete {
            run_id: run,
            resource_version: BuildCompleteVersion::V2,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let outcome = self
                .sim
                .deliver_hook(event.clone(), &lockstep.delivery)
                .await
                .unwrap();
            if outcome.status == 202 {
                return succeeded_at;
            }
            // 503 until the receiver's index has loaded; Azure DevOps retries that, so does this.
            assert!(
                Instant::now() < deadline,
                "delivery answered {}",
                outcome.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_annotation(&self, ns: &str, kind: &str, name: &str, key: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let obj = self.get(ns, kind, name).await;
            if let Some(v) = obj["metadata"]["annotations"][key].as_str() {
                return v.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{kind} {ns}/{name} never got {key}:\n{obj:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn events(&self, reason: &str) -> Vec<Value> {
        let list: Value = serde_json::from_str(
            &self
                .kubectl(&["-n", NS, "get", "events.events.k8s.io", "-o", "json"])
                .await,
        )
        .unwrap();
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }

    async fn wait_event(&self, reason: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.events(reason).await.into_iter().next() {
                return e;
            }
            assert!(Instant::now() < deadline, "no {reason} Event");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes (any non-GET) lockstep made to `plural` (kubectl's own writes are the test's).
    fn writes_to(&self, plural: &str) -> usize {
        self.emu
            .requests()
            .iter()
            .filter(|r| {
                r.method != "GET"
                    && r.resource == plural
                    && r.user_agent
                        .as_deref()
                        .is_some_and(|ua| ua.starts_with("lockstep/"))
            })
            .count()
    }
}

fn ready(gate: &Value) -> bool {
    condition(gate, "Ready").is_some_and(|c| c["status"] == "True")
}

fn stalled(gate: &Value) -> bool {
    condition(gate, "Stalled").is_some_and(|c| c["status"] == "True")
}

const FLUX_LABELS: &str = "  labels:\n    kustomize.toolkit.fluxcd.io/name: gates\n    kustomize.toolkit.fluxcd.io/namespace: flux-system\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opening_gate_nudges_its_kustomization_and_the_ones_depending_on_it_within_a_second() {
    let env = Env::start().await;
    env.kustomization("gates", &[]).await;
    env.kustomization("apps", &["infra", "gates"]).await;
    env.kustomization("unrelated", &["infra"]).await;
    env.closed_gate(FLUX_LABELS, "  nudge: {enabled: true}\n")
        .await;
    let lockstep = env.lockstep(&[]).await;
    env.wait_gate(&lockstep, "the gate blocked", stalled).await;
    assert_eq!(
        env.writes_to("kustomizations"),
        0,
        "a closed gate nudges nothing"
    );

    let succeeded_at = env.succeed_and_deliver(&lockstep).await;
    for name in ["apps", "gates"] {
        let value = env
            .wait_annotation("flux-system", "kustomization", name, REQUESTED_AT)
            .await;
        let requested: jiff::Timestamp = value.parse().expect("requestedAt is RFC 3339");
        let after = requested.duration_since(succeeded_at);
        eprintln!("{name}: requestedAt {after:?} after the run succeeded");
        assert!(
            after > jiff::SignedDuration::ZERO && after < jiff::SignedDuration::from_secs(1),
            "{name}: requestedAt {value} is {after:?} after the run's success; the contract is under 1 s"
        );
    }
    let unrelated = env.get("flux-system", "kustomization", "unrelated").await;
    assert!(unrelated["metadata"]["annotations"][REQUESTED_AT].is_null());
    let event = env.wait_event("Nudged").await;
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("Kustomization flux-system/gates (applied this gate)")
            && note.contains("Kustomization flux-system/apps (depends on it)")
            && !note.contains("unrelated"),
        "{note}"
    );
    assert_eq!(event["type"], "Normal");
    assert_eq!(env.writes_to("kustomizations"), 2, "one patch per target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nudging_nothing_is_written() {
    let env = Env::start().await;
    env.kustomization("gates", &[]).await;
    env.kustomization("apps", &["gates"]).await;
    env.application("web").await;
    // Labels and an Argo CD tracking id reveal both, but neither the gate nor the controller opted in.
    let metadata = format!(
        "{FLUX_LABELS}  annotations:\n    argocd.argoproj.io/tracking-id: web:lockstep.dev/PipelineGate:{NS}/base\n"
    );
    env.closed_gate(&metadata, "").await;
    let lockstep = env.lockstep(&[]).await;
    env.wait_gate(&lockstep, "the gate blocked", stalled).await;
    env.succeed_and_deliver(&lockstep).await;
    env.wait_gate(&lockstep, "the gate opened", ready).await;
    // Two fast-poll periods after the gate opened: a nudge would have happened right at the opening.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.writes_to("kustomizations"), 0);
    assert_eq!(env.writes_to("applications"), 0);
    assert!(env.events("Nudged").await.is_empty());
    for (ns, kind, name, key) in [
        ("flux-system", "kustomization", "gates", REQUESTED_AT),
        ("flux-system", "kustomization", "apps", REQUESTED_AT),
        ("argocd", "application", "web", REFRESH),
    ] {
        let obj = env.get(ns, kind, name).await;
        assert!(obj["metadata"]["annotations"][key].is_null(), "{obj:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_default_nudges_the_argo_cd_application_and_a_gate_can_opt_out() {
    let env = Env::start().await;
    env.application("web").await;
    env.application("other").await;
    let metadata = format!(
        "  annotations:\n    argocd.argoproj.io/tracking-id: web:lockstep.dev/PipelineGate:{NS}/base\n"
    );
    // Opted in by the controller's default; also names one explicit target.
    env.closed_gate(
        &metadata,
        "  nudge:\n    targets: [{kind: Kustomization, name: extra, namespace: flux-system}]\n",
    )
    .await;
    env.kustomization("extra", &[]).await;
    let lockstep = env.lockstep(&["--nudge-default"]).await;
    env.wait_gate(&lockstep, "the gate blocked", stalled).await;

    let succeeded_at = env.succeed_and_deliver(&lockstep).await;
    let refresh = env
        .wait_annotation("argocd", "application", "web", REFRESH)
        .await;
    let seen_after = jiff::Timestamp::now().duration_since(succeeded_at);
    eprintln!("Application refresh seen {seen_after:?} after the run succeeded");
    assert_eq!(refresh, "normal");
    // The annotation carries no time; its write does. The emulator's request log has the PATCH.
    let patch = env
        .emu
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.resource == "applications")
        .expect("the refresh PATCH");
    assert_eq!(patch.status, 200);
    assert!(
        seen_after < jiff::SignedDuration::from_secs(2),
        "refresh seen {seen_after:?} after success (includes the test's own kubectl polling)"
    );
    env.wait_annotation("flux-system", "kustomization", "extra", REQUESTED_AT)
        .await;
    let other = env.get("argocd", "application", "other").await;
    assert!(other["metadata"]["annotations"][REFRESH].is_null());
    let note = env.wait_event("Nudged").await["note"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        note.contains("Application argocd/web (manages this gate)")
            && note.contains("Kustomization flux-system/extra (spec.nudge.targets)"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_opting_out_beats_the_controller_default() {
    let env = Env::start().await;
    env.application("web").await;
    let metadata = "  labels:\n    app.kubernetes.io/instance: web\n";
    env.closed_gate(metadata, "  nudge: {enabled: false}\n")
        .await;
    let lockstep = env.lockstep(&["--nudge-default"]).await;
    env.wait_gate(&lockstep, "the gate blocked", stalled).await;
    env.succeed_and_deliver(&lockstep).await;
    env.wait_gate(&lockstep, "the gate opened", ready).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.writes_to("applications"), 0);
    let app = env.get("argocd", "application", "web").await;
    assert!(app["metadata"]["annotations"][REFRESH].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_nudge_is_a_warning_event_and_the_gate_stays_ready() {
    let env = Env::start().await;
    env.kustomization("gates", &[]).await;
    env.closed_gate(FLUX_LABELS, "  nudge: {enabled: true}\n")
        .await;
    // What RBAC without `patch` on kustomizations answers.
    env.emu
        .faults()
        .add(
            FaultRule::fail(403)
                .verb("patch")
                .resource("kustomizations"),
        )
        .unwrap();
    let lockstep = env.lockstep(&[]).await;
    env.wait_gate(&lockstep, "the gate blocked", stalled).await;
    env.succeed_and_deliver(&lockstep).await;

    let warning = env.wait_event("NudgeFailed").await;
    assert_eq!(warning["type"], "Warning");
    let note = warning["note"].as_str().unwrap();
    assert!(
        note.contains("Kustomization flux-system/gates: 403"),
        "{note}"
    );
    env.wait_gate(&lockstep, "the gate open", ready).await;
    // Still open a few polls later, and the refusal did not turn into a failing reconcile loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gate = env.get(NS, "pipelinegate", "base").await;
    assert!(ready(&gate), "{gate:#}");
    assert!(gate["status"]["lastError"].is_null(), "{gate:#}");
    assert_eq!(
        env.events("NudgeFailed").await.len(),
        1,
        "one Warning, not one per poll"
    );
    assert!(env.events("Nudged").await.is_empty());
    assert!(
        !lockstep.log_text().contains("reconcile failed"),
        "{}",
        lockstep.log_text()
    );
}

impl Env {
    /// An Application whose last sync failed (as the application controller leaves it when the sync's
    /// health check failed on a closed gate), managing the gate through its tracking id.
    async fn failed_application(&self, name: &str) {
        self.apply(&format!(
            "apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: {name}, namespace: argocd}}
spec: {{project: default, destination: {{server: https://kubernetes.default.svc, namespace: {NS}}}, source: {{repoURL: https://example.test/repo.git, path: deploy}}}}
status:
  sync: {{status: OutOfSync, revision: {rev}}}
  health: {{status: Degraded}}
  operationState:
    phase: Failed
    message: 'one or more objects failed to apply: PipelineGate {NS}/base is not healthy'
    startedAt: '2026-11-30T01:00:00Z'
    finishedAt: '2026-11-30T01:00:30Z'
    operation:
      sync: {{revision: {rev}, prune: true, syncOptions: [ServerSideApply=true]}}
      retry: {{limit: 2}}
      initiatedBy: {{automated: true}}
",
            rev = "a".repeat(40)
        ))
        .await;
    }
}

const TRACKED_BY_WEB: &str =
    "  annotations:\n    argocd.argoproj.io/tracking-id: web:lockstep.dev/PipelineGate:web/base\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retry_failed_sync_an_opening_gate_starts_the_failed_argo_cd_sync_again() {
    let env = Env::start().await;
    env.failed_application("web").await;
    env.closed_gate(
        TRACKED_BY_WEB,
        "  nudge: {enabled: true, retryFailedSync: true}\n",
    )
    .await;
    let lockstep = env.lockstep(&[]).await;
    env.wait_gate(&lockstep, "the gate blocked", stalled).await;
    assert_eq!(
        env.writes_to("applications"),
        0,
        "a closed gate retries nothing"
    );
    let before = env.get("argocd", "application", "web").await;
    assert!(before["operation"].is_null(), "{before:#}");

    let succeeded_at = env.succeed_and_deliver(&lockstep).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let app = loop {
        let app = env.get("argocd", "application", "web").await;
        if !app["operation"].is_null() {
            break app;
        }
        assert!(
            Instant::now() < deadline,
            "the failed sync was never retried:\n{app:#}\n{}",
            lockstep.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seen_after = jiff::Timestamp::now().duration_since(succeeded_at);
    eprintln!("sync retry seen {seen_after:?} after the run succeeded");
    // The same sync again (revision, options, retry strategy), initiated by lockstep: what
    // `argocd app sync` with the last operation's parameters sets.
    let op = &app["operation"];
    assert_eq!(op["sync"]["revision"], "a".repeat(40), "{op:#}");
    assert_eq!(op["sync"]["prune"], true);
    assert_eq!(op["sync"]["syncOptions"][0], "ServerSideApply=true");
    assert_eq!(op["retry"]["limit"], 2);
    assert_eq!(op["initiatedBy"]["username"], "lockstep");
    assert_eq!(app["metadata"]["annotations"][REFRESH], "normal");
    assert!(
        seen_after < jiff::SignedDuration::from_secs(2),
        "retry seen {seen_after:?} after success (includes the test's own kubectl polling)"
    );
    let note = env.wait_event("Nudged").await["note"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        note.contains("Application argocd/web (manages this gate, failed sync retried)"),
        "{note}"
    );
    // One refresh patch and one operation patch; nothing more while the gate stays open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.writes_to("applications"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retry_failed_sync_a_failed_argo_cd_sync_is_only_refreshed() {
    let env = Env::start().await;
    env.failed_application("web").await;
    env.closed_gate(TRACKED_BY_WEB, "  nudge: {enabled: true}\n")
        .await;
    let lockstep = env.lockstep(&[]).await;
    env.wait_gate(&lockstep, "the gate blocked", stalled).await;
    env.succeed_and_deliver(&lockstep).await;
    let refresh = env
        .wait_annotation("argocd", "application", "web", REFRESH)
        .await;
    assert_eq!(refresh, "normal");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let app = env.get("argocd", "application", "web").await;
    assert!(app["operation"].is_null(), "no sync started:\n{app:#}");
    assert_eq!(app["status"]["operationState"]["phase"], "Failed");
    assert_eq!(env.writes_to("applications"), 1, "the refresh only");
    let note = env.wait_event("Nudged").await["note"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!note.contains("retried"), "{note}");
}
