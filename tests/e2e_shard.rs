//! End to end, issue 15 ("past one replica"): three real `lockstep` processes against one Kubernetes API
//! emulator — `--shard a`, `--shard b` and an unsharded one — each with its own token, so the emulator's
//! request log tells their writes apart. Every gate is served by exactly one of them, each shard elects
//! its leader on its own Lease, and a service hook delivered to one shard's receiver moves only that
//! shard's gates.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{condition, Harness, ORG, PROJECT};
use lockstep_testkit::ado::{HookDelivery, HookEvent, RunResult};
use serde_json::Value;
use tokio::process::Child;

const PAT: &str = "e2e-shard-pat-71c0";
const DEFINITION: i64 = 15;
const BRANCH: &str = "main";
const HOOK_TOKEN: &str = "shard-hook-token-2b9e";
const NS: &str = "shop";

/// One `lockstep run` subprocess with its own Kubernetes user. Killed on drop.
struct Lockstep {
    child: Child,
    log: PathBuf,
    user: String,
}

impl Lockstep {
    async fn start(h: &Harness, who: &str, extra: &[&str]) -> Lockstep {
        let dir = h.dir.path();
        let token = format!("tok-{who}");
        let user = format!("lockstep-{who}");
        h.emu.auth().add_token(&token, &user, &[]);
        let kubeconfig = dir.join(format!("kubeconfig-{who}"));
        h.emu
            .write_kubeconfig_with_token(&kubeconfig, &token)
            .expect("kubeconfig");
        let hook_token = dir.join("hook-token");
        std::fs::write(&hook_token, format!("{HOOK_TOKEN}\n")).expect("hook token");
        let log = dir.join(format!("{who}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = common::lockstep_command(&kubeconfig)
            .args(["--log-format", "json", "--fast-interval", "1s"])
            .args(["--leader-election", "--lease-namespace", "default"])
            .args(["--webhook-token-file", path_str(&hook_token)])
            .args(extra)
            .env("RUST_LOG", "info,lockstep=debug")
            .env_remove("POD_NAME")
            .stderr(file)
            .spawn()
            .expect("lockstep starts");
        Lockstep { child, log, user }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The receiver's URL, once it logged its address.
    async fn hook_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.log_text().lines().find_map(|l| {
                let l: Value = serde_json::from_str(l).ok()?;
                (l["message"] == "webhook receiver listening")
                    .then(|| l["local_addr"].as_str().map(str::to_string))?
            });
            if let Some(addr) = found {
                return format!("http://{addr}/hooks/azure-devops");
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never logged its address:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn gate_yaml(name: &str, shard: Option<&str>, org_url: &str) -> String {
    let labels = shard.map_or(String::new(), |s| {
        format!("  labels:\n    sharding.lockstep.dev/key: {s}\n")
    });
    format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata:
  name: {name}
  namespace: {NS}
{labels}spec:
  azureDevOps:
    organizationUrl: {org_url}
    project: {PROJECT}
    credentials:
      secretRef: {{name: ado-pat, key: token}}
  pipeline:
    definitionId: {DEFINITION}
    branch: {BRANCH}
  interval: 10m
"
    )
}

/// Every gate in [`NS`], by name: (Ready status, the build number status shows).
async fn gate_states(h: &Harness) -> BTreeMap<String, (String, String)> {
    let out = h
        .kubectl(&["-n", NS, "get", "pipelinegates", "-o", "json"])
        .await;
    let list: Value = serde_json::from_str(&out).expect("gate list");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|g| {
            let ready = condition(g, "Ready")
                .and_then(|c| c["status"].as_str())
                .unwrap_or("")
                .to_string();
            let build = g["status"]["latestRun"]["buildNumber"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (
                g["metadata"]["name"].as_str().unwrap().to_string(),
                (ready, build),
            )
        })
        .collect()
}

/// For each gate, the users that wrote its status (the request log's `user:NAME`).
fn status_writers(h: &Harness) -> BTreeMap<String, BTreeSet<String>> {
    let prefix = format!("/apis/lockstep.dev/v1alpha1/namespaces/{NS}/pipelinegates/");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in h.emu.requests() {
        if r.method == "GET" || r.resource != "pipelinegates" {
            continue;
        }
        if let Some(name) = r
            .path
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix("/status"))
        {
            out.entry(name.to_string()).or_default().insert(r.client);
        }
    }
    out
}

/// The holder of Lease `name` in `default`, if any.
async fn lease_holder(h: &Harness, name: &str) -> Option<String> {
    let (ok, out, _) = h
        .kubectl_raw(&["-n", "default", "get", "lease", name, "-o", "json"], None)
        .await;
    if !ok {
        return None;
    }
    let lease: Value = serde_json::from_str(&out).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_and_the_main_instance_each_serve_only_their_own_gates() {
    let h = Harness::start(PAT, &[]).await;
    h.sim.add_definition(ORG, PROJECT, DEFINITION, "base-image");
    let first = h
        .sim
        .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"1".repeat(40));
    h.sim.start_run(first);
    h.sim.complete_run(first, RunResult::Succeeded);
    let first_build = h.sim.run(first).expect("run").build_number;
    h.namespace_with_pat(NS, PAT).await;
    let org = h.sim.org_url(ORG);
    // Which instance must serve each gate; `c` is labelled for a shard that does not run.
    let owners: [(&str, Option<&str>); 7] = [
        ("a-1", Some("a")),
        ("a-2", Some("a")),
        ("b-1", Some("b")),
        ("b-2", Some("b")),
        ("main-1", None),
        ("main-2", None),
        ("c-1", Some("c")),
    ];
    for (name, shard) in owners {
        h.apply(&gate_yaml(name, shard, &org)).await;
    }

    let procs = [
        Lockstep::start(&h, "a", &["--shard", "a"]).await,
        Lockstep::start(&h, "b", &["--shard", "b"]).await,
        Lockstep::start(&h, "main", &[]).await,
    ];
    let user_of = |shard: Option<&str>| format!("user:lockstep-{}", shard.unwrap_or("main"));

    let served: Vec<&str> = owners
        .iter()
        .filter(|(_, s)| *s != Some("c"))
        .map(|(n, _)| *n)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = gate_states(&h).await;
        if served
            .iter()
            .all(|n| states.get(*n).is_some_and(|(ready, _)| ready == "True"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every served gate became Ready: {states:?}\nlogs:\n{}\n{}\n{}",
            procs[0].log_text(),
            procs[1].log_text(),
            procs[2].log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Each shard elected its leader on its own Lease (the identity ends with the process id).
    for (lease, proc) in [
        ("lockstep-leader-shard-a", &procs[0]),
        ("lockstep-leader-shard-b", &procs[1]),
        ("lockstep-leader", &procs[2]),
    ] {
        let holder = lease_holder(&h, lease).await.unwrap_or_default();
        let pid = proc.child.id().expect("running");
        assert!(
            holder.ends_with(&format!("-{pid}")),
            "Lease {lease} is held by {holder:?}, not {} (pid {pid})",
            proc.user
        );
    }

    // A hook delivered to shard a's receiver only: a's gates show the new run at once, the others keep
    // the old one (their next poll is ten minutes away), since each shard has its own subscription.
    let second = h
        .sim
        .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"2".repeat(40));
    h.sim.start_run(second);
    h.sim.complete_run(second, RunResult::Failed);
    let second_build = h.sim.run(second).expect("run").build_number;
    let delivery =
        HookDelivery::to(procs[0].hook_url().await).header("X-Lockstep-Token", HOOK_TOKEN);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = h
            .sim
            .deliver_hook(HookEvent::RunStateChanged { run_id: second }, &delivery)
            .await
            .expect("delivery");
        if outcome.status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivery answered {}",
            outcome.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = gate_states(&h).await;
        let moved = ["a-1", "a-2"]
            .iter()
            .all(|n| states[*n] == ("False".to_string(), second_build.clone()));
        if moved {
            for n in ["b-1", "b-2", "main-1", "main-2"] {
                assert_eq!(
                    states[n],
                    ("True".to_string(), first_build.clone()),
                    "{n} moved on a hook delivered to shard a"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shard a's gates never showed the hooked run: {states:?}\n{}",
            procs[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No gate's status was written by two instances, nor by one that does not serve it.
    let writers = status_writers(&h);
    for (name, shard) in owners {
        let got = writers.get(name).cloned().unwrap_or_default();
        let want: BTreeSet<String> = match shard {
            Some("c") => BTreeSet::new(),
            other => [user_of(other)].into(),
        };
        assert_eq!(got, want, "status writers of {name}");
    }

    // Relabelling moves a gate: a-2 goes to shard b, whose hook then moves it with b's own gates, and
    // shard a writes it no more.
    h.kubectl(&[
        "-n",
        NS,
        "label",
        "pipelinegate",
        "a-2",
        "sharding.lockstep.dev/key=b",
        "--overwrite",
    ])
    .await;
    // Give shard b's watch the change before the hook, so its index holds a-2.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.emu.clear_requests();
    let third = h
        .sim
        .queue_run(ORG, PROJECT, DEFINITION, BRANCH, &"3".repeat(40));
    h.sim.start_run(third);
    h.sim.complete_run(third, RunResult::Succeeded);
    let third_build = h.sim.run(third).expect("run").build_number;
    let delivery =
        HookDelivery::to(procs[1].hook_url().await).header("X-Lockstep-Token", HOOK_TOKEN);
    let outcome = h
        .sim
        .deliver_hook(HookEvent::RunStateChanged { run_id: third }, &delivery)
        .await
        .expect("delivery");
    assert_eq!(outcome.status, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = gate_states(&h).await;
        if ["a-2", "b-1", "b-2"]
            .iter()
            .all(|n| states[*n] == ("True".to_string(), third_build.clone()))
        {
            assert_eq!(
                states["a-1"],
                ("False".to_string(), second_build.clone()),
                "a-1 moved on a hook delivered to shard b"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a-2 did not move with shard b: {states:?}\n{}",
            procs[1].log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writers = status_writers(&h);
    assert_eq!(
        writers.get("a-2").cloned().unwrap_or_default(),
        BTreeSet::from([user_of(Some("b"))]),
        "after the move only shard b writes a-2"
    );
}

/// A `--shard` that is no label value, or both flags at once, stops the process at start with a message
/// saying what a valid one looks like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_shard_flags_are_refused_at_start() {
    let h = Harness::start(PAT, &[]).await;
    for (args, expect) in [
        (vec!["--shard", "not a value"], "invalid --shard"),
        (
            vec!["--watch-label-selector", "team in web"],
            "invalid --watch-label-selector",
        ),
        (
            vec!["--shard", "a", "--watch-label-selector", "x=y"],
            "cannot be used with",
        ),
    ] {
        let out = common::lockstep_command(&h.kubeconfig)
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .expect("lockstep runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}
