//! `lockstep run` in-process with port 0 for both servers: `run_with` reports the addresses it bound, and
//! they answer. One test function: `run` reads KUBECONFIG from the process environment.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use lockstep::run::{run_with, BoundAddrs, RunArgs};
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    run: RunArgs,
}

/// Starts `lockstep run` with `extra` flags on a task and returns what it bound.
async fn start(extra: &[&str]) -> (BoundAddrs, tokio::task::JoinHandle<()>) {
    let mut argv = vec![
        "lockstep run",
        "--metrics-addr",
        "127.0.0.1:0",
        "--webhook-addr",
        "127.0.0.1:0",
        "--log-format",
        "text",
    ];
    argv.extend_from_slice(extra);
    let flags = Flags::try_parse_from(argv).expect("flags parse");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let ended = run_with(flags.run, move |bound| {
            let _ = tx.send(bound);
        })
        .await;
        panic!("lockstep run ended before the test stopped it: {ended:?}");
    });
    let bound = tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("addresses reported in time")
        .expect("addresses reported before run ended");
    (bound, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_binds_and_reports_both_addresses() {
    let emu = KubeEmulator::start(
        EmulatorConfig::default().crds_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")),
    )
    .await
    .expect("emulator starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig).unwrap();
    std::env::set_var("KUBECONFIG", &kubeconfig);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-5e1d").unwrap();

    let (bound, task) = start(&["--webhook-token-file", &token_file.to_string_lossy()]).await;
    assert_ne!(bound.metrics.port(), 0, "{bound:?}");
    let webhook = bound.webhook.expect("credentials configured: receiver on");
    assert_ne!(webhook.port(), 0, "{bound:?}");
    assert_ne!(webhook, bound.metrics);

    let healthz = reqwest::get(format!("http://{}/healthz", bound.metrics))
        .await
        .expect("the reported metrics address answers");
    assert_eq!(healthz.status().as_u16(), 200);
    // The receiver itself: a delivery without the token is refused, not a 404 from something else.
    let refused = reqwest::Client::new()
        .post(format!("http://{webhook}{}", lockstep::webhook::HOOK_PATH))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("the reported webhook address answers");
    assert_eq!(refused.status().as_u16(), 401);
    task.abort();

    // Without credentials the receiver is off, and the report says so.
    let (bound, task) = start(&[]).await;
    assert_eq!(bound.webhook, None);
    assert_eq!(
        bound.api, None,
        "the read API is off unless --api-addr is set"
    );
    assert_ne!(bound.metrics.port(), 0, "{bound:?}");
    task.abort();

    // The read API, from the controllers' caches and, with leader election, from its own watches.
    let api_token = dir.path().join("api-token");
    std::fs::write(&api_token, "api-tok-77\n").unwrap();
    let api_token = api_token.to_string_lossy().into_owned();
    for extra in [
        &[][..],
        &["--leader-election", "--lease-namespace", "default"][..],
    ] {
        let mut flags = vec!["--api-addr", "127.0.0.1:0", "--api-token-file", &api_token];
        flags.extend_from_slice(extra);
        let (bound, task) = start(&flags).await;
        let api = bound.api.expect("--api-addr set: API on");
        assert_ne!(api.port(), 0, "{bound:?}");
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let resp = reqwest::Client::new()
                .get(format!("http://{api}/api/v1/pipelinegates"))
                .bearer_auth("api-tok-77")
                .send()
                .await
                .expect("the reported API address answers");
            let status = resp.status().as_u16();
            if status == 200 {
                let list: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(list["kind"], "PipelineGateList", "{extra:?}");
                break;
            }
            assert_eq!(status, 503, "only 'not listed yet' before 200 ({extra:?})");
            assert!(
                std::time::Instant::now() < deadline,
                "API never listed ({extra:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        task.abort();
    }
}
