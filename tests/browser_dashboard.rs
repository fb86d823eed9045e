//! The dashboard in a real browser: Debian's headless Chromium driven by Playwright
//! (`tests/browser/dashboard.mjs`) while this test moves a ServiceTrace through its stages with the real
//! `lockstep run` against the Kubernetes API emulator and the Azure DevOps simulator.
//!
//! Needs `/usr/bin/chromium` and `npm ci` in `tests/browser`; `.ci/run` installs both and runs
//! `cargo test --test browser_dashboard -- --ignored`. Screenshots go to `$LOCKSTEP_SCREENSHOTS`
//! (default `target/browser-screenshots`); the README's images were made with
//! `LOCKSTEP_SCREENSHOTS=$PWD/docs/images`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Harness, FLUX_KUSTOMIZATION_CRD, ORG, PROJECT};
use lockstep_testkit::ado::RunResult;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PAT: &str = "browser-pat-0c41";
const TOKEN: &str = "browser-api-token-6d1f";
const NS: &str = "orders";
const OLD_SRC: &str = "7777777aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SRC: &str = "1234567bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const PAY_SRC: &str = "5555555ccccccccccccccccccccccccccccccccc";
const M1: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
const M2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const P1: &str = "3333333ddddddddddddddddddddddddddddddddd";

async fn kustomization_at(h: &Harness, name: &str, revision: &str) {
    h.kustomization_at(name, revision).await;
}

async fn trace(h: &Harness, name: &str, build: i64, manifests: &str, manifest_definition: i64) {
    let org_url = h.sim.org_url(ORG);
    h.apply(&format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: ServiceTrace
metadata: {{name: {name}, namespace: {NS}}}
spec:
  azureDevOps:
    organizationUrl: {org_url}
    project: {PROJECT}
    credentials: {{secretRef: {{name: ado-pat, key: token}}}}
  build: {{definitionId: {build}, branch: main}}
  manifest: {{repository: {manifests}, branch: main, definitionId: {manifest_definition}}}
  deployed:
    fluxKustomization: {{name: {name}, namespace: flux-system}}
  interval: 2s
"
    ))
    .await;
}

fn finished(h: &Harness, definition: i64, commit: &str) -> i64 {
    let id = h.sim.queue_run(ORG, PROJECT, definition, "main", commit);
    h.sim.start_run(id);
    h.sim.complete_run(id, RunResult::Succeeded);
    id
}

/// Whether this build's ServiceTrace status records a build history (`status.history`); the page shows it
/// in the expanded row when it does.
fn has_history() -> bool {
    use kube::CustomResourceExt as _;
    let crd = serde_json::to_value(lockstep::crd::ServiceTrace::crd()).expect("CRD as JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        .get("history")
        .is_some()
}

/// The API's address, from lockstep's JSON log line "API and dashboard listening".
async fn api_addr(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("API and dashboard listening"))
        {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
            let addr = v["fields"]["local_addr"]
                .as_str()
                .or(v["local_addr"].as_str());
            return addr.expect("local_addr in the log line").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "lockstep did not start its API:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs /usr/bin/chromium and `npm ci` in tests/browser; run by .ci/run"]
async fn the_dashboard_follows_a_trace_live_and_filters_by_commit() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} first",
        browser_dir.display()
    );
    let h = Harness::start(PAT, &[FLUX_KUSTOMIZATION_CRD]).await;
    for (id, name) in [
        (12, "orders-ci"),
        (14, "orders-manifests"),
        (22, "payments-ci"),
        (24, "payments-manifests"),
    ] {
        h.sim.add_definition(ORG, PROJECT, id, name);
    }
    h.sim
        .add_repository(ORG, PROJECT, "orders-manifests", &[("main", M1)]);
    h.sim
        .add_repository(ORG, PROJECT, "payments-manifests", &[("main", P1)]);
    h.namespace_with_pat(NS, PAT).await;
    h.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: flux-system}\n")
        .await;

    // orders: an older change is deployed everywhere; a new CI build is running.
    finished(&h, 12, OLD_SRC);
    finished(&h, 14, OLD_SRC);
    kustomization_at(&h, "orders", M1).await;
    let build = h.sim.queue_run(ORG, PROJECT, 12, "main", SRC);
    h.sim.start_run(build);
    // payments: fully deployed, so the commit filter has something to hide.
    finished(&h, 22, PAY_SRC);
    finished(&h, 24, PAY_SRC);
    kustomization_at(&h, "payments", P1).await;
    trace(&h, "orders", 12, "orders-manifests", 14).await;
    trace(&h, "payments", 22, "payments-manifests", 24).await;
    let org_url = h.sim.org_url(ORG);
    h.apply(&format!(
        "apiVersion: lockstep.dev/v1alpha1
kind: PipelineGate
metadata: {{name: base-image, namespace: {NS}}}
spec:
  azureDevOps:
    organizationUrl: {org_url}
    project: {PROJECT}
    credentials: {{secretRef: {{name: ado-pat, key: token}}}}
  pipeline: {{definitionId: 12, branch: main}}
  interval: 2s
"
    ))
    .await;

    let token_file = h.dir.path().join("api-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let log = h.dir.path().join("lockstep.log");
    let _lockstep = h.spawn_lockstep(
        &log,
        &[
            "--fast-interval",
            "1s",
            "--api-addr",
            "127.0.0.1:0",
            "--api-token-file",
            token_file.to_str().expect("utf-8 path"),
        ],
    );
    let url = format!("http://{}/", api_addr(&log).await);

    let shots = std::env::var_os("LOCKSTEP_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots")
        });
    let mut node = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&browser_dir)
        .env("LOCKSTEP_URL", &url)
        .env("LOCKSTEP_TOKEN", TOKEN)
        .env("SCREENSHOTS", &shots)
        .env("EXPECT_HISTORY", if has_history() { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdin = node.stdin.take().expect("stdin");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let mut passed = false;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await
    {
        match line.trim() {
            "STEP build-succeeded" => {
                // The build succeeds; manifest generation runs and pushes M2.
                h.sim.complete_run(build, RunResult::Succeeded);
                finished(&h, 14, SRC);
                h.sim.push(ORG, PROJECT, "orders-manifests", "main", M2);
            }
            "STEP deployed" => kustomization_at(&h, "orders", M2).await,
            "PASS" => {
                passed = true;
                continue;
            }
            other => panic!("unexpected line from the browser driver: {other}"),
        }
        stdin
            .write_all(b"DONE\n")
            .await
            .expect("write to the driver");
    }
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait())
        .await
        .expect("the browser driver exits")
        .expect("exit status");
    assert!(
        passed && status.success(),
        "browser test failed (see its stderr above); lockstep log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for shot in [
        "dashboard.png",
        "dashboard-history.png",
        "dashboard-filtered.png",
    ] {
        assert!(shots.join(shot).is_file(), "screenshot {shot} missing");
    }
}
