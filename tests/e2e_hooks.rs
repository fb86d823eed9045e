//! End to end (issue 18): the service hooks around the real `lockstep` binary, against the Kubernetes API
//! emulator and the Azure DevOps simulator: the subscription allowlist, hook health, `lockstep hooks sync`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{condition, lockstep_command, Harness, ORG, PROJECT};
use lockstep_testkit::ado::{
    BuildCompleteVersion, HookDelivery, HookEvent, RunResult, SubscriptionStatus,
};
use lockstep_testkit::entra::{EntraConfig, EntraFake};
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
        self.lockstep_env(extra, &[]).await
    }

    /// [`Env::lockstep`] with environment variables (the Entra authority host).
    async fn lockstep_env(&self, extra: &[&str], envs: &[(&str, &str)]) -> Lockstep {
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
        let child = lockstep_command(&self.kubeconfig)
            .args(["--log-format", "json"])
            .args(&args)
            .env("RUST_LOG", "info,lockstep=debug")
            .env_remove("POD_NAME")
            .envs(envs.iter().copied())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("lockstep starts");
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
    assert_eq!(
        env.subscription_writes(),
        0,
        "the hook set-up is off by default"
    );
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
    let unreadable = env.events("HookSubscriptionsUnreadable").await;
    assert_eq!(unreadable.len(), 1, "one Warning Event, not one per period");
    assert_eq!(unreadable[0]["type"], "Warning");
    assert_eq!(unreadable[0]["regarding"]["name"], "base");
    assert!(
        unreadable[0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("Service Hooks (read)")),
        "{:#}",
        unreadable[0]
    );
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

const GIT_PUSH: &str = "git.push";
const TENANT: &str = "7d3c1a52-0000-4000-8000-00000000001b";
const SP_CLIENT: &str = "0a1b2c3d-0000-4000-8000-0000000000e5";
const SP_SECRET: &str = "hooks-sp-s3cret-Wd4";

impl Env {
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

    /// A ServiceTrace on [`DEFINITION`] reading the `manifests` repository, with `credentials` (a YAML
    /// flow mapping).
    async fn trace(&self, name: &str, credentials: &str) {
        self.apply(&format!(
            "apiVersion: lockstep.dev/v1alpha1
kind: ServiceTrace
metadata: {{name: {name}, namespace: {NS}}}
spec:
  azureDevOps:
    organizationUrl: {org}
    project: {PROJECT}
    credentials: {credentials}
  build: {{definitionId: {DEFINITION}, branch: {BRANCH}}}
  manifest: {{repository: manifests, branch: main}}
  deployed:
    workload: {{kind: Deployment, name: shop, container: app}}
  interval: 10m
",
            org = self.sim.org_url(ORG)
        ))
        .await;
    }

    async fn trace_json(&self, name: &str) -> Value {
        serde_json::from_str(
            &self
                .kubectl(&["-n", NS, "get", "servicetrace", name, "-o", "json"])
                .await,
        )
        .unwrap()
    }

    async fn wait_trace(
        &self,
        lockstep: &Lockstep,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let trace = self.trace_json(name).await;
            if check(&trace) {
                return trace;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; trace:\n{trace:#}\nlog:\n{}",
                lockstep.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A Web Hooks subscription to [`RECEIVER`] for `event_type` in [`PROJECT`], as made by hand.
    fn receiver_subscription(&self, publisher: &str, event_type: &str, version: &str) -> String {
        self.sim
            .add_subscription(
                ORG,
                &serde_json::json!({
                    "publisherId": publisher, "eventType": event_type, "resourceVersion": version,
                    "consumerId": "webHooks", "consumerActionId": "httpRequest",
                    "publisherInputs": {"projectId": PROJECT},
                    "consumerInputs": {"url": RECEIVER, "httpHeaders": format!("X-Lockstep-Token:{HOOK_TOKEN}"),
                                       "messagesToSend": "none", "detailedMessagesToSend": "none"}
                }),
            )
            .unwrap()
    }

    /// `lockstep hooks sync` with what to sync read from the cluster (the emulator's kubeconfig).
    async fn hooks_sync_from_cluster(&self, extra: &[&str]) -> String {
        let pat_file = self.dir.path().join("pat");
        let token_file = self.dir.path().join("sync-hook-token");
        std::fs::write(&pat_file, PAT).unwrap();
        std::fs::write(&token_file, HOOK_TOKEN).unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(["hooks", "sync", "--url", RECEIVER, "--token-file"])
            .arg(&token_file)
            .arg("--pat-file")
            .arg(&pat_file)
            .args(extra)
            .env("KUBECONFIG", &self.kubeconfig)
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
}

fn hooks_state(obj: &Value) -> &str {
    obj["status"]["hooks"]["state"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_health_reads_with_an_entra_credential_and_covers_traces_too() {
    let env = Env::start().await;
    let entra = EntraFake::start(EntraConfig::default())
        .await
        .expect("fake Entra starts");
    env.sim.trust_entra(&entra);
    env.sim.add_entra_identity(ORG, SP_CLIENT);
    entra.add_client_secret(TENANT, SP_CLIENT, SP_SECRET);
    let secret = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, SP_SECRET);
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ado-sp, namespace: {NS}}}\ndata: {{clientSecret: {secret}}}\n"
    ))
    .await;
    // Both objects authenticate with the service principal only: no PAT anywhere to fall back on.
    let sp = format!("{{servicePrincipal: {{tenantId: {TENANT}, clientId: {SP_CLIENT}, clientSecretRef: {{name: ado-sp, key: clientSecret}}}}}}");
    env.apply(&format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata: {{name: entra-gate, namespace: {NS}}}
spec:
  azureDevOps:
    organizationUrl: {org}
    project: {PROJECT}
    credentials: {sp}
  pipeline: {{definitionId: {DEFINITION}, branch: {BRANCH}}}
  interval: 10m
",
        org = env.sim.org_url(ORG)
    ))
    .await;
    env.trace("orders", &sp).await;
    let run_state = env.receiver_subscription("pipelines", RUN_STATE, "5.1-preview.1");
    let lockstep = env
        .lockstep_env(
            &["--hook-health-interval", "1s", "--hooks-url", RECEIVER],
            &[("AZURE_AUTHORITY_HOST", entra.url().as_str())],
        )
        .await;
    env.wait_gate(&lockstep, "entra-gate", "status.hooks Covered", |g| {
        hooks_state(g) == "Covered"
    })
    .await;
    // The trace's CI pipeline is covered, its manifest repository's pushes are not.
    let trace = env
        .wait_trace(&lockstep, "orders", "status.hooks NotCovered", |t| {
            hooks_state(t) == "NotCovered"
        })
        .await;
    let message = trace["status"]["hooks"]["message"].as_str().unwrap();
    assert!(
        message.contains("git.push of repository manifests: no subscription")
            && !message.contains("CI pipeline"),
        "{message}"
    );
    assert_eq!(
        trace["status"]["hooks"]["subscriptions"][0],
        run_state.as_str()
    );

    let push = env.receiver_subscription("tfs", GIT_PUSH, "1.0");
    let trace = env
        .wait_trace(&lockstep, "orders", "status.hooks Covered", |t| {
            hooks_state(t) == "Covered"
        })
        .await;
    let ids = &trace["status"]["hooks"]["subscriptions"];
    assert_eq!(ids.as_array().unwrap().len(), 2, "{trace:#}");
    assert!(ids.as_array().unwrap().iter().any(|i| i == push.as_str()));
    let wide = env
        .kubectl(&["-n", NS, "get", "servicetraces", "-o", "wide"])
        .await;
    assert!(wide.contains("HOOKS") && wide.contains("Covered"), "{wide}");

    // The push subscription goes on probation: the trace says so, with an Event naming it.
    env.sim
        .set_subscription_status(ORG, &push, SubscriptionStatus::OnProbation, 1)
        .unwrap();
    env.wait_trace(&lockstep, "orders", "status.hooks Degraded", |t| {
        hooks_state(t) == "Degraded"
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hit = env
            .events("HookSubscriptionUnhealthy")
            .await
            .iter()
            .any(|e| {
                e["regarding"]["kind"] == "ServiceTrace"
                    && e["note"].as_str().is_some_and(|n| n.contains(&push))
            });
        if hit {
            break;
        }
        assert!(Instant::now() < deadline, "no Event on the trace");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = lockstep.log_text();
    assert!(
        !log.contains(SP_SECRET) && !log.contains("cannot read service-hook"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_sync_derives_what_to_create_from_the_cluster() {
    let env = Env::start().await;
    env.closed_gate("base").await;
    env.trace("orders", "{secretRef: {name: ado-pat, key: token}}")
        .await;

    let dry = env.hooks_sync_from_cluster(&["--dry-run"]).await;
    assert!(
        dry.contains(&format!("create  {RUN_STATE} project={PROJECT} (dry run)"))
            && dry.contains(&format!("create  {GIT_PUSH} project={PROJECT} (dry run)"))
            && dry.contains("2 write(s) planned"),
        "{dry}"
    );
    assert_eq!(env.subscription_writes(), 0, "a dry run writes nothing");

    let first = env.hooks_sync_from_cluster(&[]).await;
    assert!(first.contains("2 write(s)"), "{first}");
    let mut subs = env.sim.subscriptions(ORG);
    subs.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    let events: Vec<&str> = subs.iter().map(|s| s.event_type.as_str()).collect();
    assert_eq!(events, [GIT_PUSH, RUN_STATE]);
    for sub in &subs {
        assert_eq!(sub.consumer_inputs["url"], RECEIVER);
        assert_eq!(
            sub.consumer_inputs["httpHeaders"],
            format!("X-Lockstep-Token:{HOOK_TOKEN}")
        );
        assert_eq!(sub.status, SubscriptionStatus::Enabled);
    }
    let writes = env.subscription_writes();
    assert_eq!(writes, 2);
    let second = env.hooks_sync_from_cluster(&[]).await;
    assert!(second.contains("0 write(s)"), "{second}");
    assert_eq!(
        env.subscription_writes(),
        writes,
        "the second run makes zero writes"
    );

    // Flags still override: an organization no object uses is an error, not a silent no-op.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "hooks",
            "sync",
            "--url",
            RECEIVER,
            "--organization-url",
            "https://dev.azure.com/nobody-uses-this",
        ])
        .env("KUBECONFIG", &env.kubeconfig)
        .env("AZURE_DEVOPS_EXT_PAT", PAT)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no PipelineGate or ServiceTrace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_sets_up_the_hooks_keeps_them_enabled_and_writes_nothing_when_they_are() {
    let env = Env::start().await;
    env.closed_gate("base").await;
    env.trace("orders", "{secretRef: {name: ado-pat, key: token}}")
        .await;
    let lockstep = env
        .lockstep(&[
            "--hook-health-interval",
            "0s",
            "--hooks-sync",
            "--hooks-sync-interval",
            "1s",
            "--hooks-url",
            RECEIVER,
        ])
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.sim.subscriptions(ORG).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the subscriptions were not created:\n{}",
            lockstep.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subs = env.sim.subscriptions(ORG);
    for sub in &subs {
        assert_eq!(sub.consumer_inputs["url"], RECEIVER);
        assert_eq!(
            sub.consumer_inputs["httpHeaders"],
            format!("X-Lockstep-Token:{HOOK_TOKEN}"),
            "the receiver's own credentials"
        );
    }
    let run_state = subs
        .iter()
        .find(|s| s.event_type == RUN_STATE)
        .expect("run-state-changed")
        .id
        .clone();
    let synced = loop {
        if let Some(e) = env
            .events("HookSubscriptionsSynced")
            .await
            .into_iter()
            .next()
        {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no HookSubscriptionsSynced Event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(synced["type"], "Normal");
    assert!(
        synced["note"]
            .as_str()
            .is_some_and(|n| n.contains("create  ") && !n.contains(HOOK_TOKEN)),
        "{synced:#}"
    );

    // Azure DevOps disables it after failed deliveries: the next pass re-enables it.
    env.sim
        .set_subscription_status(ORG, &run_state, SubscriptionStatus::DisabledBySystem, 0)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.sim.subscription(ORG, &run_state).unwrap().status != SubscriptionStatus::Enabled {
        assert!(
            Instant::now() < deadline,
            "not re-enabled:\n{}",
            lockstep.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = lockstep.metrics().await;
    assert!(
        metrics.contains(r#"lockstep_hook_sync_writes_total{action="create"} 2"#)
            && metrics.contains(r#"lockstep_hook_sync_writes_total{action="replace"} 1"#),
        "{metrics}"
    );
    // Up to date: further passes (one a second) write nothing.
    let writes = env.subscription_writes();
    assert_eq!(writes, 3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.subscription_writes(),
        writes,
        "idle passes write nothing"
    );
    let log = lockstep.log_text();
    assert!(!log.contains(HOOK_TOKEN) && !log.contains(PAT), "{log}");
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
