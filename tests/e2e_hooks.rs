//! End to end (issue 18): the service hooks around the real `lockstep` binary, against the Kubernetes API
//! emulator and the Azure DevOps simulator: the subscription allowlist, hook health, `lockstep hooks sync`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{condition, Harness, ORG, PROJECT};
use lockstep_testkit::ado::{BuildCompleteVersion, HookDelivery, HookEvent, RunResult};
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
