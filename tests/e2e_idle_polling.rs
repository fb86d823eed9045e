//! End to end (issue 15): quieter idle polling around the real `lockstep` binary, against the Kubernetes
//! API emulator and the Azure DevOps simulator. Two gates follow one idle pipeline with `interval: 1s`:
//! without hooks they poll it once a second (one shared request for both); once a delivery has arrived,
//! every 4 s (`--idle-poll-stretch 4`), but every second (`--fast-interval`) while a run is in flight; after
//! a run that polling found before any hook, once a second again.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{condition, Harness, ORG, PROJECT};
use lockstep_testkit::ado::{BuildCompleteVersion, HookDelivery, HookEvent, RunResult};
use serde_json::Value;
use tokio::process::Child;

const PAT: &str = "e2e-idle-pat-5c1e";
const DEFINITION: i64 = 93;
const BRANCH: &str = "main";
const NS: &str = "shop";
const HOOK_TOKEN: &str = "idle-e2e-token-81f0";
const GATES: [&str; 2] = ["web", "worker"];

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

async fn start_lockstep(h: &Harness) -> Lockstep {
    let token_file = h.dir.path().join("hook-token");
    std::fs::write(&token_file, HOOK_TOKEN).unwrap();
    let log = h.dir.path().join("lockstep.log");
    let child = h.spawn_lockstep(
        &log,
        &[
            "--fast-interval",
            "1s",
            "--idle-poll-stretch",
            "4",
            // Only Builds List traffic in this test.
            "--hook-health-interval",
            "0s",
            "--webhook-token-file",
            token_file.to_str().unwrap(),
        ],
    );
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

async fn gate(h: &Harness, name: &str) -> Value {
    serde_json::from_str(
        &h.kubectl(&["-n", NS, "get", "pipelinegate", name, "-o", "json"])
            .await,
    )
    .unwrap()
}

/// Waits until every gate satisfies `check`.
async fn wait_gates(h: &Harness, lockstep: &Lockstep, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in GATES {
        loop {
            let g = gate(h, name).await;
            if check(&g) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; gate:\n{g:#}\nlog:\n{}",
                lockstep.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn has_condition(gate: &Value, type_: &str) -> bool {
    condition(gate, type_).is_some_and(|c| c["status"] == "True")
}

/// Builds List requests the simulator saw for [`DEFINITION`].
fn builds_list_requests(h: &Harness) -> usize {
    let needle = format!("definitions={DEFINITION}");
    h.sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "builds.list")
        .filter(|r| r.query.as_deref().is_some_and(|q| q.contains(&needle)))
        .count()
}

/// Builds List requests for the pipeline during the next `window`.
async fn requests_during(h: &Harness, window: Duration) -> usize {
    let before = builds_list_requests(h);
    tokio::time::sleep(window).await;
    builds_list_requests(h) - before
}

/// Delivers until the receiver has loaded its index (503 before) and accepted the event (202).
async fn deliver(h: &Harness, delivery: &HookDelivery, event: HookEvent) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = h.sim.deliver_hook(event.clone(), delivery).await.unwrap();
        if outcome.status == 202 {
            return;
        }
        assert_eq!(outcome.status, 503, "the receiver refused the delivery");
        assert!(Instant::now() < deadline, "the receiver never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_polling_stretches_while_hooks_arrive_and_returns_to_interval_when_polling_finds_first(
) {
    let h = Harness::start(PAT, &[]).await;
    h.sim.add_definition(ORG, PROJECT, DEFINITION, "shop-ci");
    h.namespace_with_pat(NS, PAT).await;
    let first = h
        .sim
        .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"1".repeat(40));
    h.sim.start_run(first);
    h.sim.complete_run(first, RunResult::Failed);
    for name in GATES {
        h.apply(&format!(
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
  interval: 1s
",
            org = h.sim.org_url(ORG)
        ))
        .await;
    }
    let lockstep = start_lockstep(&h).await;
    wait_gates(&h, &lockstep, "both gates blocked on the failed run", |g| {
        has_condition(g, "Stalled")
    })
    .await;

    // 1. No hook yet: the idle pipeline is polled every `interval` (1 s), one request for both gates.
    let window = Duration::from_secs(5);
    let no_hooks = requests_during(&h, window).await;
    assert!(
        (4..=7).contains(&no_hooks),
        "without hooks: {no_hooks} Builds List requests in {window:?}, expected about 5\n{}",
        lockstep.log_text()
    );

    // 2. A delivery arrives (accepted: it concerns both gates): hooks have proven themselves for the
    // organization+project, so idle polling stretches to 4 × 1 s.
    let delivery =
        HookDelivery::to(lockstep.hook_url.as_str()).header("X-Lockstep-Token", HOOK_TOKEN);
    let event = HookEvent::BuildComplete {
        run_id: first,
        resource_version: BuildCompleteVersion::V2,
    };
    deliver(&h, &delivery, event).await;
    // Let the hinted reconcile (one request at once) and the move onto the stretched grid happen.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = Duration::from_secs(12);
    let stretched = requests_during(&h, window).await;
    assert!(
        (2..=4).contains(&stretched),
        "with hooks arriving: {stretched} Builds List requests in {window:?}, expected about 3 (every 4 s)\n{}",
        lockstep.log_text()
    );
    assert!(
        stretched * 2 < no_hooks * window.as_secs() as usize / 5,
        "stretched polling must be well below the 1 s rate: {stretched} vs {no_hooks} per 5 s"
    );

    // 3. A run starts and a hook announces it: the hooks stay proven, but a run in flight is never
    // stretched: the gates wait and poll at --fast-interval (1 s).
    let second = h
        .sim
        .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"2".repeat(40));
    h.sim.start_run(second);
    deliver(&h, &delivery, HookEvent::RunStateChanged { run_id: second }).await;
    wait_gates(
        &h,
        &lockstep,
        "both gates waiting on the announced run",
        |g| has_condition(g, "Reconciling"),
    )
    .await;
    let window = Duration::from_secs(4);
    let in_flight = requests_during(&h, window).await;
    assert!(
        (3..=6).contains(&in_flight),
        "run in flight with hooks proven: {in_flight} Builds List requests in {window:?}, expected about 4\n{}",
        lockstep.log_text()
    );
    // It completes without a hook: the fast poll sees it (the run was announced, so no miss).
    h.sim.complete_run(second, RunResult::Succeeded);
    wait_gates(&h, &lockstep, "both gates open", |g| {
        has_condition(g, "Ready")
    })
    .await;

    // 4. A new run completes and no hook says so: polling finds it first (within one stretched period)
    // ...
    let third = h
        .sim
        .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"3".repeat(40));
    h.sim.start_run(third);
    h.sim.complete_run(third, RunResult::Failed);
    wait_gates(&h, &lockstep, "both gates blocked on the silent run", |g| {
        has_condition(g, "Stalled")
    })
    .await;
    // ... and from then on the idle pipeline is polled every `interval` again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let window = Duration::from_secs(5);
    let back = requests_during(&h, window).await;
    assert!(
        (4..=7).contains(&back),
        "after polling found a change first: {back} Builds List requests in {window:?}, expected about 5\n{}",
        lockstep.log_text()
    );

    eprintln!(
        "Builds List requests for one pipeline (2 gates): {no_hooks} per 5 s without hooks, \
         {stretched} per 12 s with hooks arriving, {in_flight} per 4 s with a run in flight, \
         {back} per 5 s after polling found a change first"
    );

    let metrics = lockstep.metrics().await;
    assert!(
        metrics.contains("lockstep_webhook_polling_found_first_total{kind=\"PipelineGate\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockstep_polled_pipelines 1\n"),
        "{metrics}"
    );
    let per_hour: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lockstep_builds_list_requests_per_pipeline_hour "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no requests-per-pipeline-hour gauge:\n{metrics}"));
    assert!(per_hour > 0.0, "{metrics}");
}
