//! End to end (issue 18): the service hooks around the real `lockstep` binary, against the Kubernetes API
//! emulator and the Azure DevOps simulator: the subscription allowlist, hook health, `lockstep hooks sync`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{condition, Harness, ORG, PROJECT};
use lockstep_testkit::ado::{
    BuildCompleteVersion, HookDelivery, HookEvent, RunResult, SubscriptionStatus,
};
use serde_json::Value;
use tokio::process::Child;

const PAT: &str = "e2e-hooks-pat-0b7d";
const DEFINITION: i64 = 91;
const BRANCH: &str = "main";
const NS: &str = "shop";
const HOOK_TOKEN: &str = "hooks-e2e-token-6c2a";
const ALLOWED: &str = "4f6e6328-0251-4814-a009-c01dfa368e3f";
const OTHER: &str = "9b0c0e57-56c5-4b7c-8f0e-3d2a7e1f4a10";

struct Env {
    harness: Harness,
}

impl std::ops::Deref for Env {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.harness
    }
}

/// One `lockstep run` subprocess; killed on drop.
struct Lockstep {
    _child: Child,
    log: PathBuf,
    metrics_url: String,
    hook_url: String,
}

impl Lockstep {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Env {
    async fn start() -> Env {
        let harness = Harness::start(PAT, &[]).await;
        harness
            .sim
            .add_definition(ORG, PROJECT, DEFINITION, "shop-ci");
        harness.namespace_with_pat(NS, PAT).await;
        Env { harness }
    }

    /// A gate on [`DEFINITION`] whose newest run failed; it polls only every 10 minutes, so anything that
    /// changes it within a test came through a hook.
    async fn closed_gate(&self, name: &str) {
        let run = self
            .sim
            .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"1".repeat(40));
        self.sim.start_run(run);
        self.sim.complete_run(run, RunResult::Failed);
        self.apply(&format!(
            "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata:
  name: {name}
  namespace: {NS}
spec:
  azureDevOps:
    organizationUrl: {org}
    project: {PROJECT}
    credentials:
      secretRef: {{name: ado-pat, key: token}}
  pipeline:
    definitionId: {DEFINITION}
    branch: {BRANCH}
  interval: 10m
",
            org = self.sim.org_url(ORG)
        ))
        .await;
    }

    async fn gate(&self, name: &str) -> Value {
        serde_json::from_str(
            &self
                .kubectl(&["-n", NS, "get", "pipelinegate", name, "-o", "json"])
                .await,
        )
        .unwrap()
    }

    async fn wait_gate(
        &self,
        lockstep: &Lockstep,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let gate = self.gate(name).await;
            if check(&gate) {
                return gate;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; gate:\n{gate:#}\nlog:\n{}",
                lockstep.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let find = |message: &str, field: &str| {
                lines.iter().find_map(|l| {
                    (l["message"] == message).then(|| l[field].as_str().map(str::to_string))?
                })
            };
            if let (Some(metrics), Some(hook)) = (
                find("metrics server listening", "addr"),
                find("webhook receiver listening", "local_addr"),
            ) {
                return Lockstep {
                    _child: child,
                    log,
                    metrics_url: format!("http://{metrics}"),
                    hook_url: format!("http://{hook}/hooks/azure-devops"),
                };
            }
            assert!(Instant::now() < deadline, "lockstep did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Delivers until the receiver has loaded its index (it answers 503 before); returns the status.
    async fn deliver(&self, event: &HookEvent, delivery: &HookDelivery) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let outcome = self
                .sim
                .deliver_hook(event.clone(), delivery)
                .await
                .unwrap();
            if outcome.status != 503 {
                return outcome.status;
            }
            assert!(Instant::now() < deadline, "the receiver never loaded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes to PipelineGates other than status (the receiver's annotation patches).
    fn gate_annotation_writes(&self) -> usize {
        self.emu
            .requests()
            .iter()
            .filter(|r| {
                r.method == "PATCH" && r.resource == "pipelinegates" && !r.path.ends_with("/status")
            })
            .count()
    }
}

fn stalled(gate: &Value) -> bool {
    condition(gate, "Stalled").is_some_and(|c| c["status"] == "True")
}

fn ready(gate: &Value) -> bool {
    condition(gate, "Ready").is_some_and(|c| c["status"] == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_from_a_subscription_not_on_the_allowlist_gets_401_and_changes_nothing() {
    let env = Env::start().await;
    env.closed_gate("base").await;
    let lockstep = env
        .lockstep(&["--webhook-allowed-subscriptions", ALLOWED])
        .await;
    env.wait_gate(&lockstep, "base", "the gate blocked", stalled)
        .await;
    let run = env
        .sim
        .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"2".repeat(40));
    env.sim.start_run(run);
    env.sim.complete_run(run, RunResult::Succeeded);
    let event = HookEvent::BuildComplete {
        run_id: run,
        resource_version: BuildCompleteVersion::V2,
    };
    let with_token =
        || HookDelivery::to(lockstep.hook_url.as_str()).header("X-Lockstep-Token", HOOK_TOKEN);

    // Right credentials, wrong subscription: refused before anything is routed.
    let before = env.gate("base").await;
    let writes_before = env.gate_annotation_writes();
    let status = env
        .deliver(&event, &with_token().subscription_id(OTHER))
        .await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = env.gate("base").await;
    assert_eq!(
        env.gate_annotation_writes(),
        writes_before,
        "no annotation patch"
    );
    assert_eq!(
        after["metadata"]["annotations"], before["metadata"]["annotations"],
        "nothing written on the gate"
    );
    assert!(stalled(&after), "the gate did not move:\n{after:#}");
    let metrics = lockstep.metrics().await;
    assert!(
        metrics
            .contains(r#"lockstep_webhook_rejections_total{reason="subscription_not_allowed"} 1"#),
        "{metrics}"
    );

    // The same event from the listed subscription (any case) is accepted and opens the gate.
    let status = env
        .deliver(
            &event,
            &with_token().subscription_id(ALLOWED.to_uppercase()),
        )
        .await;
    assert_eq!(status, 202);
    env.wait_gate(&lockstep, "base", "the gate opened", ready)
        .await;
}

const RECEIVER: &str = "https://lockstep.example.test/hooks/azure-devops";
const RUN_STATE: &str = "ms.vss-pipelines.run-state-changed-event";

impl Env {
    /// `lockstep hooks sync` for [`PROJECT`], run-state-changed only, with the receiver's header token.
    async fn hooks_sync(&self, extra: &[&str]) -> String {
        let pat_file = self.dir.path().join("pat");
        let token_file = self.dir.path().join("sync-hook-token");
        std::fs::write(&pat_file, PAT).unwrap();
        std::fs::write(&token_file, HOOK_TOKEN).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args([
                "hooks",
                "sync",
                "--organization-url",
                &self.sim.org_url(ORG),
                "--project",
                PROJECT,
                "--url",
                RECEIVER,
                "--events",
                "run-state-changed",
                "--token-file",
                token_file.to_str().unwrap(),
                "--pat-file",
                pat_file.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "hooks sync failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !stdout.contains(PAT) && !stdout.contains(HOOK_TOKEN),
            "{stdout}"
        );
        stdout
    }

    fn subscription_writes(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| {
                matches!(
                    r.endpoint,
                    "hooks.subscriptions.create"
                        | "hooks.subscriptions.replace"
                        | "hooks.subscriptions.delete"
                )
            })
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_on_probation_shows_everywhere_and_hooks_sync_re_enables_it() {
    let env = Env::start().await;
    env.closed_gate("base").await;
    // The subscription `hooks sync` would make, made by hand earlier; plus an unrelated one elsewhere.
    let id = env
        .sim
        .add_subscription(
            ORG,
            &serde_json::json!({
                "publisherId": "pipelines", "eventType": RUN_STATE, "resourceVersion": "5.1-preview.1",
                "consumerId": "webHooks", "consumerActionId": "httpRequest",
                "publisherInputs": {"projectId": PROJECT},
                "consumerInputs": {"url": RECEIVER, "httpHeaders": format!("X-Lockstep-Token:{HOOK_TOKEN}"),
                                   "messagesToSend": "none", "detailedMessagesToSend": "none"}
            }),
        )
        .unwrap();
    let unrelated = env
        .sim
        .add_subscription(
            ORG,
            &serde_json::json!({
                "publisherId": "tfs", "eventType": "build.complete", "resourceVersion": "2.0",
                "consumerId": "webHooks", "consumerActionId": "httpRequest",
                "publisherInputs": {"projectId": PROJECT},
                "consumerInputs": {"url": "https://someone-else.example.test/hook"}
            }),
        )
        .unwrap();
    env.sim
        .set_subscription_status(ORG, &unrelated, SubscriptionStatus::DisabledByUser, 0)
        .unwrap();
    let lockstep = env
        .lockstep(&["--hook-health-interval", "1s", "--hooks-url", RECEIVER])
        .await;
    env.wait_gate(&lockstep, "base", "status.hooks Covered", |g| {
        g["status"]["hooks"]["state"] == "Covered"
    })
    .await;

    env.sim
        .set_subscription_status(ORG, &id, SubscriptionStatus::OnProbation, 1)
        .unwrap();
    let went_on_probation = Instant::now();
    let metric =
        format!(r#"lockstep_hook_subscriptions{{state="onProbation",event_type="{RUN_STATE}"}} 1"#);
    let mut seen: [Option<Duration>; 3] = [None; 3];
    while seen.iter().any(Option::is_none) {
        assert!(
            went_on_probation.elapsed() < Duration::from_secs(20),
            "not everything showed the probation: {seen:?}\n{}",
            lockstep.log_text()
        );
        if seen[0].is_none() && lockstep.metrics().await.contains(&metric) {
            seen[0] = Some(went_on_probation.elapsed());
        }
        if seen[1].is_none() && env.gate("base").await["status"]["hooks"]["state"] == "Degraded" {
            seen[1] = Some(went_on_probation.elapsed());
        }
        if seen[2].is_none() {
            let events = env
                .kubectl(&["-n", NS, "get", "events.events.k8s.io", "-o", "json"])
                .await;
            let events: Value = serde_json::from_str(&events).unwrap();
            let hit = events["items"].as_array().unwrap().iter().any(|e| {
                e["reason"] == "HookSubscriptionUnhealthy"
                    && e["type"] == "Warning"
                    && e["note"]
                        .as_str()
                        .is_some_and(|n| n.contains(&id) && n.contains("onProbation"))
            });
            if hit {
                seen[2] = Some(went_on_probation.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "probation seen after: metric {:?}, status {:?}, Event {:?}",
        seen[0], seen[1], seen[2]
    );
    // One hook-health period is 1 s here; allow the test's own polling (kubectl) on top.
    for (what, after) in ["metric", "status.hooks", "Event"].iter().zip(seen) {
        let after = after.unwrap();
        assert!(
            after < Duration::from_secs(3),
            "{what} showed the probation only after {after:?}"
        );
    }
    let wide = env
        .kubectl(&["-n", NS, "get", "pipelinegates", "-o", "wide"])
        .await;
    assert!(
        wide.contains("HOOKS") && wide.contains("Degraded"),
        "{wide}"
    );

    // hooks sync re-enables it, and only it.
    let dry = env.hooks_sync(&["--dry-run"]).await;
    assert!(dry.contains("1 write(s) planned"), "{dry}");
    assert_eq!(env.subscription_writes(), 0, "a dry run writes nothing");
    let first = env.hooks_sync(&[]).await;
    assert!(
        first.contains(&format!("update  {RUN_STATE} project={PROJECT} id={id}")),
        "{first}"
    );
    assert!(first.contains("1 write(s)"), "{first}");
    assert_eq!(
        env.sim.subscription(ORG, &id).unwrap().status,
        SubscriptionStatus::Enabled
    );
    assert_eq!(
        env.sim.subscription(ORG, &unrelated).unwrap().status,
        SubscriptionStatus::DisabledByUser,
        "someone else's subscription is left alone"
    );
    let writes = env.subscription_writes();
    let second = env.hooks_sync(&[]).await;
    assert!(
        second.contains("0 write(s)") && second.contains(&format!("keep    {RUN_STATE}")),
        "{second}"
    );
    assert_eq!(
        env.subscription_writes(),
        writes,
        "the second run makes zero writes"
    );
    env.wait_gate(&lockstep, "base", "status.hooks Covered again", |g| {
        g["status"]["hooks"]["state"] == "Covered"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_sync_creates_what_is_missing_and_a_token_without_the_hooks_scope_is_reported_once() {
    let env = Env::start().await;
    env.closed_gate("base").await;
    let out = env.hooks_sync(&[]).await;
    assert!(
        out.contains(&format!("create  {RUN_STATE} project={PROJECT} id=")),
        "{out}"
    );
    let subs = env.sim.subscriptions(ORG);
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].event_type, RUN_STATE);

    // A PAT that may read builds but not subscriptions: hook health is Unknown, said once in the log.
    env.sim.set_token_scopes(ORG, PAT, Some(&["vso.packaging"]));
    let lockstep = env
        .lockstep(&["--hook-health-interval", "1s", "--hooks-url", RECEIVER])
        .await;
    env.wait_gate(&lockstep, "base", "status.hooks Unknown", |g| {
        g["status"]["hooks"]["state"] == "Unknown"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = lockstep.log_text();
    let reports = log
        .matches("cannot read service-hook subscriptions")
        .count();
    assert_eq!(reports, 1, "reported once, not every period:\n{log}");
    let gate = env.gate("base").await;
    assert!(
        gate["status"]["hooks"]["message"]
            .as_str()
            .unwrap()
            .contains("Service Hooks (read)"),
        "{gate:#}"
    );
    assert!(!log.contains(PAT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leading_replica_opens_a_gate_from_a_hook_without_annotating_it() {
    let env = Env::start().await;
    env.closed_gate("base").await;
    let lockstep = env.lockstep(&[]).await;
    env.wait_gate(&lockstep, "base", "the gate blocked", stalled)
        .await;
    let run = env
        .sim
        .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"2".repeat(40));
    env.sim.start_run(run);
    env.sim.complete_run(run, RunResult::Succeeded);
    let delivery =
        HookDelivery::to(lockstep.hook_url.as_str()).header("X-Lockstep-Token", HOOK_TOKEN);
    let status = env
        .deliver(&HookEvent::RunStateChanged { run_id: run }, &delivery)
        .await;
    assert_eq!(status, 202);
    // The controller in this process took the gate and the 202 waited for its reconcile (up to 2 s): the
    // status already shows the new run, so no annotation was needed.
    let gate = env.gate("base").await;
    assert!(
        ready(&gate),
        "Ready before the 202:\n{gate:#}\nlog:\n{}",
        lockstep.log_text()
    );
    assert_eq!(env.gate_annotation_writes(), 0, "no annotation patch");
    assert!(
        gate["metadata"]["annotations"]["lockstep.dev/requested-at"].is_null(),
        "{gate:#}"
    );
    let metrics = lockstep.metrics().await;
    assert!(
        metrics.contains(r#"lockstep_webhook_hinted_objects_total{kind="PipelineGate"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"lockstep_webhook_polling_found_first_total{kind="PipelineGate"} 1"#),
        "the hint was recorded, so polling did not find the run first:\n{metrics}"
    );
}
