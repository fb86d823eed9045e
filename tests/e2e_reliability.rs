//! End to end, issue 13 ("never fail open, never go silent"): the real `lockstep` binary against the
//! Kubernetes API emulator and the Azure DevOps simulator, with hostile spec values, leadership changes
//! and many large Secrets.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Harness, ORG, PROJECT};
use lockstep_testkit::ado::RunResult;
use serde_json::Value;
use tokio::process::Child;

const PAT: &str = "e2e-reliability-pat-4d2c";
const DEFINITION: i64 = 77;
const BRANCH: &str = "main";
const SHA: &str = "3333333333333333333333333333333333333333";

/// One `lockstep run` subprocess, its log file and its probe address. Killed on drop.
struct Lockstep {
    child: Child,
    log: PathBuf,
    ops_url: String,
}

impl Lockstep {
    async fn start(kubeconfig: &Path, log: PathBuf, extra: &[&str]) -> Lockstep {
        let file = std::fs::File::create(&log).expect("log file");
        let child = common::lockstep_command(kubeconfig)
            .args(["--log-format", "json", "--fast-interval", "1s"])
            .args(extra)
            .env("RUST_LOG", "info,lockstep=debug")
            .env_remove("POD_NAME")
            .stderr(file)
            .spawn()
            .expect("lockstep starts");
        let mut me = Lockstep {
            child,
            log,
            ops_url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = me.log_lines().iter().find_map(|l| {
                (l["message"] == "metrics server listening")
                    .then(|| l["addr"].as_str().map(str::to_string))?
            }) {
                me.ops_url = format!("http://{addr}");
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "lockstep did not start:\n{}",
                me.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    async fn probe(&self, path: &str) -> u16 {
        match reqwest::get(format!("{}{path}", self.ops_url)).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Polls `path` until it answers `status`, or fails after `within`.
    async fn wait_probe(&self, path: &str, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.probe(path).await;
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} answers {got}, not {status}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}

fn gate_yaml(ns: &str, name: &str, org_url: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata:
  name: {name}
  namespace: {ns}
spec:
  azureDevOps:
    organizationUrl: {org_url}
    project: {PROJECT}
    credentials:
      secretRef: {{name: ado-pat, key: token}}
  pipeline:
    definitionId: {DEFINITION}
    branch: {BRANCH}
{extra_spec}"
    )
}

async fn harness_with_succeeded_run() -> Harness {
    let h = Harness::start(PAT, &[]).await;
    h.sim.add_definition(ORG, PROJECT, DEFINITION, "base-image");
    let id = h.sim.queue_run(ORG, PROJECT, DEFINITION, BRANCH, SHA);
    h.sim.start_run(id);
    h.sim.complete_run(id, RunResult::Succeeded);
    h
}

async fn ready_status(h: &Harness, ns: &str, name: &str) -> Option<String> {
    let (ok, out, _) = h
        .kubectl_raw(&["-n", ns, "get", "pipelinegate", name, "-o", "json"], None)
        .await;
    if !ok {
        return None;
    }
    let gate: Value = serde_json::from_str(&out).ok()?;
    common::condition(&gate, "Ready").and_then(|c| c["status"].as_str().map(str::to_string))
}

async fn ready_reason(h: &Harness, ns: &str, name: &str) -> Option<String> {
    let (_, out, _) = h
        .kubectl_raw(&["-n", ns, "get", "pipelinegate", name, "-o", "json"], None)
        .await;
    let gate: Value = serde_json::from_str(&out).ok()?;
    common::condition(&gate, "Ready").and_then(|c| c["reason"].as_str().map(str::to_string))
}

/// Defect 1: every duration field at its extremes. Values past the bounds are refused at `kubectl apply`
/// with a message naming the bound; values at the bounds reconcile; the process stays healthy and ready,
/// and is ready again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_fields_at_their_extremes_never_stop_gating() {
    let h = harness_with_succeeded_run().await;
    let org = h.sim.org_url(ORG);
    h.namespace_with_pat("edge", PAT).await;

    // Refused by the schema: the pattern (too many digits to parse) and the CEL bound (a year).
    for (field, spec) in [
        ("interval", "  interval: 9999999999999999h\n"),
        ("interval", "  interval: 8761h\n"),
        ("interval", "  interval: 500ms\n"),
        ("timeout", "  policy: {timeout: 9999999h}\n"),
        ("staleAfter", "  policy: {staleAfter: 8760h1s}\n"),
    ] {
        let err = h
            .try_apply(&gate_yaml("edge", "refused", &org, spec))
            .await
            .expect_err(spec);
        assert!(
            err.contains(field) && (err.contains("8760h") || err.contains("should match")),
            "{spec}: {err}"
        );
    }
    let cel = h
        .try_apply(&gate_yaml("edge", "refused", &org, "  interval: 9000h\n"))
        .await
        .unwrap_err();
    assert!(
        cel.contains("interval must be a Go duration between 1s and 8760h"),
        "{cel}"
    );

    // Accepted at the bounds, and every one reconciles.
    let accepted = [
        (
            "min",
            "  interval: 1s\n  policy: {timeout: 0s, staleAfter: 0s}\n",
        ),
        (
            "max",
            "  interval: 8760h\n  policy: {timeout: 8760h, staleAfter: 8760h}\n",
        ),
        (
            "mixed",
            "  interval: 8759h59m59s999ms\n  policy: {timeout: 1ms, staleAfter: 8760h}\n",
        ),
    ];
    for (name, spec) in accepted {
        h.apply(&gate_yaml("edge", name, &org, spec)).await;
    }
    let log_dir = h.dir.path().to_path_buf();
    let mut lockstep = Lockstep::start(&h.kubeconfig, log_dir.join("first.log"), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, _) in accepted {
        loop {
            if ready_status(&h, "edge", name).await.as_deref() == Some("True") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gate {name} never opened; log:\n{}",
                lockstep.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    lockstep
        .wait_probe("/readyz", 200, Duration::from_secs(30))
        .await;
    assert_eq!(lockstep.probe("/healthz").await, 200);
    assert!(lockstep.exited().is_none());
    assert!(
        !lockstep.log_text().contains("panicked"),
        "{}",
        lockstep.log_text()
    );

    // A gate created while it runs still gets reconciled (the controller is alive).
    h.apply(&gate_yaml("edge", "later", &org, "  interval: 8760h\n"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_status(&h, "edge", "later").await.as_deref() != Some("True") {
        assert!(Instant::now() < deadline, "{}", lockstep.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // After a restart /readyz becomes 200 again.
    lockstep.child.kill().await.expect("kill");
    let again = Lockstep::start(&h.kubeconfig, log_dir.join("second.log"), &[]).await;
    again
        .wait_probe("/readyz", 200, Duration::from_secs(30))
        .await;
    assert_eq!(again.probe("/healthz").await, 200);
}

/// The Lease's holder, if any.
async fn lease_holder(h: &Harness) -> Option<String> {
    let (ok, out, _) = h
        .kubectl_raw(
            &[
                "-n",
                "default",
                "get",
                "lease",
                "lockstep-leader",
                "-o",
                "json",
            ],
            None,
        )
        .await;
    if !ok {
        return None;
    }
    let lease: Value = serde_json::from_str(&out).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// Status writes and Event writes made by `client` (`user:NAME`).
fn writes_by(h: &Harness, client: &str) -> (usize, usize) {
    let records: Vec<_> = h
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.client == client && r.method != "GET")
        .collect();
    let status = records
        .iter()
        .filter(|r| r.resource == "pipelinegates" && r.path.ends_with("/status"))
        .count();
    let events = records.iter().filter(|r| r.resource == "events").count();
    (status, events)
}

/// Defect 2: a leader whose Lease requests fail steps down before its Lease expires, and writes nothing
/// after the standby took over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_steps_down_before_the_standby_takes_over() {
    use lockstep_testkit::kube::FaultRule;
    let h = harness_with_succeeded_run().await;
    let org = h.sim.org_url(ORG);
    h.namespace_with_pat("lead", PAT).await;
    h.apply(&gate_yaml("lead", "g", &org, "  interval: 1s\n"))
        .await;
    let dir = h.dir.path().to_path_buf();
    let mut procs = Vec::new();
    for who in ["a", "b"] {
        let token = format!("tok-{who}");
        h.emu
            .auth()
            .add_token(&token, &format!("lockstep-{who}"), &[]);
        let kubeconfig = dir.join(format!("kubeconfig-{who}"));
        h.emu
            .write_kubeconfig_with_token(&kubeconfig, &token)
            .expect("kubeconfig");
        let args = [
            "--leader-election",
            "--lease-namespace",
            "default",
            "--lease-duration",
            "6s",
        ];
        procs.push(Lockstep::start(&kubeconfig, dir.join(format!("{who}.log")), &args).await);
    }
    // The first leader, by pid (the identity ends with it).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (leader, standby) = loop {
        if let Some(holder) = lease_holder(&h).await {
            let pid_of = |i: usize| procs[i].child.id().map(|p| format!("-{p}")).unwrap();
            if holder.ends_with(&pid_of(0)) {
                break (0, 1);
            }
            if holder.ends_with(&pid_of(1)) {
                break (1, 0);
            }
        }
        assert!(Instant::now() < deadline, "nobody took the Lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let user = |i: usize| if i == 0 { "lockstep-a" } else { "lockstep-b" };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_status(&h, "lead", "g").await.as_deref() != Some("True") {
        assert!(Instant::now() < deadline, "{}", procs[leader].log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(writes_by(&h, &format!("user:{}", user(leader))).0 > 0);

    // Only the leader's Lease requests fail from now on (500: kube's client does not retry it).
    h.emu
        .faults()
        .add(FaultRule::fail(500).resource("leases").user(user(leader)))
        .expect("fault rule");
    let cut_off = Instant::now();
    let standby_identity = {
        let pid = procs[standby].child.id().unwrap();
        format!("-{pid}")
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if lease_holder(&h)
            .await
            .is_some_and(|holder| holder.ends_with(&standby_identity))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never took over; leader log:\n{}",
            procs[leader].log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over_after = cut_off.elapsed();
    let old_leader = format!("user:{}", user(leader));
    let frozen = writes_by(&h, &old_leader);

    // Changes that make a leader write status and record Events: a failed run, then a succeeded one.
    for result in [RunResult::Failed, RunResult::Succeeded] {
        let id = h.sim.queue_run(ORG, PROJECT, DEFINITION, BRANCH, SHA);
        h.sim.start_run(id);
        h.sim.complete_run(id, result);
        let want = if result == RunResult::Failed {
            "False"
        } else {
            "True"
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready_status(&h, "lead", "g").await.as_deref() != Some(want) {
            assert!(
                Instant::now() < deadline,
                "the new leader never wrote Ready={want}:\n{}",
                procs[standby].log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        writes_by(&h, &old_leader),
        frozen,
        "the old leader wrote status or Events after the standby took over"
    );
    assert!(writes_by(&h, &format!("user:{}", user(standby))).0 > 0);
    let log = procs[leader].log_text();
    assert!(log.contains("stepping down"), "{log}");
    println!(
        "standby took over {took_over_after:?} after the leader's Lease requests began to fail"
    );
    for p in &mut procs {
        assert!(p.exited().is_none(), "a process exited:\n{}", p.log_text());
    }
}

/// Defect 12: Secrets no object references cost nothing. 300 Secrets of 512 KiB sit beside the one PAT
/// Secret a gate uses; lockstep (its own token, so the emulator counts its reads) reads none of their
/// data, and a rotated PAT still reaches the gate through the metadata-only watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_secrets_are_never_read_and_a_rotated_pat_is_picked_up() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    let h = harness_with_succeeded_run().await;
    let org = h.sim.org_url(ORG);
    // The gate's Secret starts with a PAT Azure DevOps rejects.
    h.namespace_with_pat("app", "not-the-pat").await;
    h.apply(&gate_yaml("app", "g", &org, "  interval: 1h\n"))
        .await;
    h.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: helm}\n")
        .await;
    let client = h.emu.client().await;
    let helm: Api<Secret> = Api::namespaced(client.clone(), "helm");
    let payload = k8s_openapi::ByteString(vec![b'x'; 512 * 1024]);
    let created = futures::stream::iter(0..300)
        .map(|i| {
            let helm = helm.clone();
            let mut secret = Secret::default();
            secret.metadata.name = Some(format!("sh.helm.release.v1.app.v{i}"));
            secret.type_ = Some("helm.sh/release.v1".into());
            secret.data = Some([("release".to_string(), payload.clone())].into());
            async move { helm.create(&PostParams::default(), &secret).await }
        })
        .buffer_unordered(8)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    assert_eq!(created, 300);

    h.emu.auth().add_token("tok-mem", "lockstep-mem", &[]);
    let kubeconfig = h.dir.path().join("kubeconfig-mem");
    h.emu
        .write_kubeconfig_with_token(&kubeconfig, "tok-mem")
        .expect("kubeconfig");
    let lockstep = Lockstep::start(&kubeconfig, h.dir.path().join("mem.log"), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_reason(&h, "app", "g").await.as_deref() != Some("AuthenticationFailed") {
        assert!(Instant::now() < deadline, "{}", lockstep.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    lockstep
        .wait_probe("/readyz", 200, Duration::from_secs(30))
        .await;

    // Rotate the PAT: only the metadata watch can bring the gate back before its 1h interval.
    h.namespace_with_pat("app", PAT).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready_status(&h, "app", "g").await.as_deref() != Some("True") {
        assert!(
            Instant::now() < deadline,
            "the rotated PAT was not picked up:\n{}",
            lockstep.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let served = h.emu.secret_data_bytes_served(Some("user:lockstep-mem"));
    let reads = h.emu.reads_by("user:lockstep-mem");
    println!("Secret data bytes served to lockstep: {served}; reads: {reads:?}");
    // The PAT Secret, read a few times, is well under one of the 512 KiB Secrets.
    assert!(
        served < 64 * 1024,
        "lockstep read {served} bytes of Secret data"
    );
}
