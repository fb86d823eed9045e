//! Reconcile-level chaos (issue 13, Acceptance): the real `lockstep run` with 100 gates while the
//! Kubernetes API emulator drops watches, expires the watch window and answers 500s and 409s on status
//! writes, and the Azure DevOps simulator answers 5xx, 429 (Retry-After in seconds, as an HTTP date, and
//! X-RateLimit-Reset only), 203 HTML sign-in pages and truncated JSON. Then the faults stop.
//!
//! Asserted: every gate reaches the verdict its pipeline's newest run implies within a bounded time; no
//! gate ever showed Ready=True for a pipeline whose newest completed run failed (every status change is
//! watched throughout); the process never exited. The counts are printed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Harness, ORG, PROJECT};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use lockstep::crd::PipelineGate;
use lockstep_testkit::ado::{ChaosConfig, ChaosFault, RetryAfter, RunResult};
use lockstep_testkit::kube::FaultRule;

const PAT: &str = "chaos-pat-91be";
const GATES: usize = 100;
const PIPELINES: i64 = 25;
const FIRST_DEFINITION: i64 = 200;
const BRANCH: &str = "main";
const SHA: &str = "4444444444444444444444444444444444444444";
const USER: &str = "lockstep-chaos";
const CHAOS_FOR: Duration = Duration::from_secs(15);
// Generous: a gate whose status writes kept failing waits out its Kubernetes error backoff (1, 2, 4 … s).
const CONVERGE_WITHIN: Duration = Duration::from_secs(40);

/// Pipelines with an even offset end succeeded, the others failed (after an older succeeded run, so a
/// gate that fell back on an older answer would open).
fn newest_failed(definition: i64) -> bool {
    (definition - FIRST_DEFINITION) % 2 == 1
}

fn finished_run(h: &Harness, definition: i64, result: RunResult) {
    let id = h.sim.queue_run(ORG, PROJECT, definition, BRANCH, SHA);
    h.sim.start_run(id);
    h.sim.complete_run(id, result);
}

/// SplitMix64: the same seed gives the same fault schedule.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn ready_of(gate: &PipelineGate) -> Option<(String, String)> {
    let status = gate.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_converge_and_never_fail_open_under_kubernetes_and_azure_devops_chaos() {
    let h = Harness::start(PAT, &[]).await;
    for d in FIRST_DEFINITION..FIRST_DEFINITION + PIPELINES {
        h.sim
            .add_definition(ORG, PROJECT, d, &format!("pipeline-{d}"));
        finished_run(&h, d, RunResult::Succeeded);
        if newest_failed(d) {
            finished_run(&h, d, RunResult::Failed);
        }
    }
    h.namespace_with_pat("chaos", PAT).await;
    let org = h.sim.org_url(ORG);
    let mut yaml = String::new();
    let mut definition_of = HashMap::new();
    for i in 0..GATES {
        let d = FIRST_DEFINITION + (i as i64 % PIPELINES);
        definition_of.insert(format!("g{i:03}"), d);
        yaml.push_str(&format!(
            "---\napiVersion: lockstep.dev/v1alpha1\nkind: PipelineGate\nmetadata: {{name: g{i:03}, namespace: chaos}}\nspec:\n  azureDevOps:\n    organizationUrl: {org}\n    project: {PROJECT}\n    credentials:\n      secretRef: {{name: ado-pat, key: token}}\n  pipeline: {{definitionId: {d}, branch: {BRANCH}}}\n  interval: 2s\n"
        ));
    }
    h.apply(&yaml).await;

    // Every status change, seen by a client the faults do not target.
    let observed: Arc<Mutex<(u64, Vec<String>)>> = Arc::default();
    let watch_task = {
        let api: Api<PipelineGate> = Api::namespaced(h.emu.client().await, "chaos");
        let observed = observed.clone();
        let definition_of = definition_of.clone();
        tokio::spawn(async move {
            let mut last: HashMap<String, Option<(String, String)>> = HashMap::new();
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = events.next().await {
                let Ok(gate) = event else { continue };
                let name = gate.metadata.name.clone().unwrap_or_default();
                let ready = ready_of(&gate);
                if last.get(&name) == Some(&ready) {
                    continue;
                }
                let mut seen = observed.lock().unwrap();
                seen.0 += 1;
                let d = definition_of[&name];
                if newest_failed(d) && ready.as_ref().is_some_and(|(s, _)| s == "True") {
                    seen.1.push(format!(
                        "{name} (definition {d}) showed Ready=True: {ready:?}"
                    ));
                }
                last.insert(name, ready);
            }
        })
    };

    h.emu.auth().add_token("tok-chaos", USER, &[]);
    let kubeconfig = h.dir.path().join("kubeconfig-chaos");
    h.emu
        .write_kubeconfig_with_token(&kubeconfig, "tok-chaos")
        .unwrap();
    let log = h.dir.path().join("chaos.log");
    let mut child = common::lockstep_command(&kubeconfig)
        .args(["--log-format", "json", "--fast-interval", "1s"])
        .env("RUST_LOG", "info")
        .env_remove("POD_NAME")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();

    // Chaos on both sides for CHAOS_FOR.
    h.sim
        .chaos(ChaosConfig {
            seed: 13,
            rate: 0.5,
            faults: vec![
                ChaosFault::Status { status: 500 },
                ChaosFault::Status { status: 503 },
                ChaosFault::RateLimit(RetryAfter::seconds(1)),
                ChaosFault::RateLimit(RetryAfter::http_date(1)),
                ChaosFault::RateLimit(RetryAfter::reset_only(1)),
                ChaosFault::SignInPage,
                ChaosFault::Truncate,
            ],
            max_faults: None,
        })
        .unwrap();
    let mut rng = Rng(13);
    let mut kube_faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut new_runs = 0;
    let chaos_started = Instant::now();
    while chaos_started.elapsed() < CHAOS_FOR {
        let kind = match rng.next() % 5 {
            0 => {
                h.emu
                    .faults()
                    .add(FaultRule::fail(500).user(USER).times(3))
                    .unwrap();
                "500 x3"
            }
            1 => {
                h.emu
                    .faults()
                    .add(
                        FaultRule::fail(409)
                            .verb("patch")
                            .subresource("status")
                            .user(USER)
                            .times(3),
                    )
                    .unwrap();
                "409 on status x3"
            }
            2 => {
                h.emu.faults().drop_watches();
                "dropped watches"
            }
            3 => {
                h.emu.faults().expire_watch_window();
                "expired watch window"
            }
            _ => {
                // A new run in the pipeline's class: status changes to write while faults go on.
                let d = FIRST_DEFINITION + (rng.next() % PIPELINES as u64) as i64;
                let result = if newest_failed(d) {
                    RunResult::Failed
                } else {
                    RunResult::Succeeded
                };
                finished_run(&h, d, result);
                new_runs += 1;
                "new run"
            }
        };
        *kube_faults.entry(kind).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    h.sim.stop_chaos();
    h.emu.faults().clear();
    let faults_stopped = Instant::now();

    // Every gate converges on its pipeline's verdict.
    let api: Api<PipelineGate> = Api::namespaced(h.emu.client().await, "chaos");
    let converged_after = loop {
        let gates = api.list(&Default::default()).await.unwrap();
        let wrong: Vec<String> = gates
            .items
            .iter()
            .filter_map(|g| {
                let name = g.metadata.name.clone().unwrap_or_default();
                let want = if newest_failed(definition_of[&name]) {
                    ("False", "RunFailed")
                } else {
                    ("True", "Succeeded")
                };
                let got = ready_of(g);
                (got.as_ref().map(|(s, r)| (s.as_str(), r.as_str())) != Some(want))
                    .then(|| format!("{name}: {got:?}, want {want:?}"))
            })
            .collect();
        if wrong.is_empty() && gates.items.len() == GATES {
            break faults_stopped.elapsed();
        }
        assert!(
            faults_stopped.elapsed() < CONVERGE_WITHIN,
            "{} gates had not converged {CONVERGE_WITHIN:?} after the faults stopped: {:?}\nlog tail:\n{}",
            wrong.len(),
            &wrong[..wrong.len().min(10)],
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Let the watcher see the last changes before reading what it observed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch_task.abort();

    let exited = child.try_wait().unwrap();
    let (status_changes, violations) = observed.lock().unwrap().clone();
    let panics = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("panicked")
        .count();
    println!(
        "chaos: {GATES} gates on {PIPELINES} pipelines; {CHAOS_FOR:?} of faults; Kubernetes faults {kube_faults:?}; \
         Azure DevOps faults {:?}; new runs during chaos {new_runs}; Ready changes observed {status_changes}; \
         fail-open observations {}; converged {converged_after:?} after the faults stopped ({:?} after start); \
         process exited: {exited:?}; panics logged: {panics}",
        h.sim.chaos_counts(),
        violations.len(),
        started.elapsed(),
    );
    assert!(violations.is_empty(), "fail open: {violations:#?}");
    assert!(exited.is_none(), "lockstep exited: {exited:?}");
    assert_eq!(panics, 0);
    assert!(
        h.sim.chaos_counts().values().sum::<u64>() > 0,
        "no Azure DevOps fault was injected"
    );
    let _ = child.kill().await;
}
