//! Read API benchmark: gate verdicts under load, served from the cache.
//!
//! ```text
//! cargo bench --bench api                          # release build
//! cargo bench --bench api --profile dev            # debug build: slower, an upper bound
//! cargo bench --bench api -- --gates 10000 --rate 1000 --seconds 10 --json
//! ```
//!
//! The server is the one `lockstep run --api-addr` starts (`lockstep::api::serve`), on a loopback port,
//! over a reflector store holding N settled PipelineGates (default 10 000, filled with watch events the
//! way the controller's store is). Its authenticator talks to the test kit's Kubernetes API emulator, and
//! the Azure DevOps simulator runs beside it, so any request a verdict caused would be in their request
//! logs. `tests/run_bound_addrs.rs` checks that `lockstep run` serves this same server from the
//! controllers' stores.
//!
//! Two open-loop runs of `--seconds` each send `GET .../pipelinegates/{random}/verdict` at `--rate`
//! requests per second on a fixed schedule: one with the static token, one with a Kubernetes
//! ServiceAccount token (TokenReview + SubjectAccessReview, cached). Each latency is measured from the
//! request's scheduled time, so a stalled server cannot hide its queueing; at most 512 are in flight
//! (more are counted as skipped). After each run the emulator's and the simulator's request logs are
//! counted: the static token must cause none, the Kubernetes token one TokenReview and one
//! SubjectAccessReview per cache period.
//!
//! Nothing here runs in CI: CI only compiles it, and without cargo bench's `--bench` argument it exits.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use lockstep::crd::{PipelineGate, ServiceTrace};
use lockstep_testkit::ado::AdoSimulator;
use lockstep_testkit::kube::{EmulatorConfig, Grant, KubeEmulator};
use serde_json::json;

const PROJECT: &str = "Api";
const TOKEN: &str = "bench-api-token-5b3d";
const NAMESPACE: &str = "bench";
const GATES_PER_PIPELINE: usize = 100;
const MAX_IN_FLIGHT: usize = 512;

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("could not start {0}: {1}")]
    Start(&'static str, String),
}

struct Options {
    gates: usize,
    rate: u64,
    seconds: u64,
    json: bool,
}

const USAGE: &str = "usage: cargo bench --bench api [-- OPTIONS]
  --gates N        gates in the cache (default 10000)
  --rate R         verdict requests per second (default 1000)
  --seconds S      length of each load run (default 10)
  --json           print JSON instead of text";

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut o = Options {
            gates: 10_000,
            rate: 1_000,
            seconds: 10,
            json: false,
        };
        let mut benching = false;
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                let v = args.next().ok_or_else(|| format!("{name} needs a value"))?;
                v.parse()
                    .map_err(|_| format!("{name}: {v:?} is not a whole number"))
            };
            match arg.as_str() {
                "--bench" => benching = true,
                "--json" => o.json = true,
                "--gates" => o.gates = (number("--gates")? as usize).clamp(1, 1_000_000),
                "--rate" => o.rate = number("--rate")?.clamp(1, 100_000),
                "--seconds" => o.seconds = number("--seconds")?.clamp(1, 600),
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(benching.then_some(o))
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("API benchmark: run it with `cargo bench --bench api` (see --help)");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&options)) {
        Ok(report) => {
            if options.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_report(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn commit(n: u64) -> String {
    format!("{n:040x}")
}

fn gate(i: usize, pipelines: usize) -> PipelineGate {
    let p = (i % pipelines) + 1;
    let sha = commit(p as u64);
    serde_json::from_value(json!({
        "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
        "metadata": {"name": format!("gate-{i:05}"), "namespace": NAMESPACE, "generation": 1,
                     "resourceVersion": format!("{}", i + 1), "uid": format!("00000000-0000-0000-0000-{i:012}")},
        "spec": {
            "azureDevOps": {"organizationUrl": "https://dev.azure.com/bench", "project": PROJECT,
                            "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
            "pipeline": {"definitionId": p, "branch": "main"},
            "interval": "10m"
        },
        "status": {
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Succeeded", "observedGeneration": 1,
                 "message": format!("Run 20261130.1 of \"pipeline-{p}\" succeeded: https://dev.azure.com/bench/Api/_build/results?buildId={p}"),
                 "lastTransitionTime": "2026-11-30T00:00:00Z"},
                {"type": "Reconciling", "status": "False", "reason": "Succeeded", "observedGeneration": 1,
                 "message": "", "lastTransitionTime": "2026-11-30T00:00:00Z"},
                {"type": "Stalled", "status": "False", "reason": "Succeeded", "observedGeneration": 1,
                 "message": "", "lastTransitionTime": "2026-11-30T00:00:00Z"}
            ],
            "latestRun": {"id": p, "buildNumber": "20261130.1", "pipeline": format!("pipeline-{p}"),
                          "status": "completed", "result": "succeeded", "sourceBranch": "refs/heads/main",
                          "sourceVersion": sha, "commit": &sha[..7],
                          "queueTime": "2026-11-30T00:00:00Z", "startTime": "2026-11-30T00:00:01Z",
                          "finishTime": "2026-11-30T00:02:00Z",
                          "webUrl": format!("https://dev.azure.com/bench/Api/_build/results?buildId={p}")},
            "lastCheckedTime": "2026-11-30T00:02:05Z"
        }
    }))
    .expect("a valid gate")
}

/// One open-loop run of `total` requests at `rate`/s against random gates, with `authorization`.
async fn load(
    http: &reqwest::Client,
    base: &str,
    authorization: &str,
    gates: usize,
    rate: u64,
    seconds: u64,
) -> serde_json::Value {
    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Duration, u16)>(MAX_IN_FLIGHT * 2);
    // Results are drained while requests go out, so a full channel never holds a permit.
    let collector = tokio::spawn(async move {
        let mut results = Vec::with_capacity(total as usize);
        while let Some(r) = rx.recv().await {
            results.push(r);
        }
        results
    });
    let started = tokio::time::Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut skipped = 0u64;
    for n in 0..total {
        let scheduled = started + period.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        // xorshift: a different gate every request, the same sequence every run.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let url = format!("{base}/gate-{:05}/verdict", seed % gates as u64);
        let (http, tx, authorization) = (http.clone(), tx.clone(), authorization.to_string());
        tokio::spawn(async move {
            let status = match http
                .get(url)
                .header("authorization", authorization)
                .send()
                .await
            {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let _ = r.bytes().await;
                    s
                }
                Err(_) => 0,
            };
            let latency = scheduled.elapsed();
            drop(permit);
            let _ = tx.send((latency, status)).await;
        });
    }
    drop(tx);
    let results = collector.await.unwrap_or_default();
    let not_ok = results.iter().filter(|(_, status)| *status != 200).count();
    let mut latencies: Vec<Duration> = results.into_iter().map(|(l, _)| l).collect();
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    json!({
        "sent": latencies.len(),
        "skippedInFlightCap": skipped,
        "achievedRate": latencies.len() as f64 / elapsed.as_secs_f64(),
        "non200": not_ok,
        "latencyMs": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0)},
    })
}

async fn run(o: &Options) -> Result<serde_json::Value, BenchError> {
    let emu = KubeEmulator::start(EmulatorConfig::default())
        .await
        .map_err(|e| BenchError::Start("the Kubernetes API emulator", e.to_string()))?;
    let sim = AdoSimulator::start()
        .await
        .map_err(|e| BenchError::Start("the Azure DevOps simulator", e.to_string()))?;
    emu.auth()
        .add_token("bench-sa-token", "system:serviceaccount:bench:gater", &[]);
    emu.auth()
        .grant(
            Grant::user(
                "system:serviceaccount:bench:gater",
                &["get"],
                "lockstep.dev",
                &["pipelinegates"],
            )
            .in_namespace(NAMESPACE),
        )
        .map_err(|e| BenchError::Start("an RBAC grant", e.to_string()))?;
    let pipelines = (o.gates / GATES_PER_PIPELINE).max(1);

    // The cache as the controller keeps it: a reflector store, filled by watch events.
    let mut writer = Writer::<PipelineGate>::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..o.gates {
        writer.apply_watcher_event(&watcher::Event::InitApply(gate(i, pipelines)));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let mut traces = Writer::<ServiceTrace>::default();
    traces.apply_watcher_event(&watcher::Event::Init);
    traces.apply_watcher_event(&watcher::Event::InitDone);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    // The same server `lockstep run --api-addr` starts, with the emulator behind its TokenReviews and
    // SubjectAccessReviews: any Kubernetes request a verdict caused would be in the emulator's log.
    let server = lockstep::api::serve(
        "127.0.0.1:0"
            .parse()
            .map_err(|_| BenchError::Start("the address", String::new()))?,
        lockstep::api::ApiCaches::from_stores(writer.as_reader(), traces.as_reader()),
        lockstep::api::Authenticator::new(
            Some(lockstep::secret::SecretString::new(TOKEN)),
            Some(emu.client().await),
        ),
        shutdown,
    )
    .await
    .map_err(|e| BenchError::Start("the API server", e.to_string()))?;
    let base = format!(
        "http://{}/api/v1/namespaces/{NAMESPACE}/pipelinegates",
        server.local_addr()
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .map_err(|e| BenchError::Start("the HTTP client", e.to_string()))?;
    let probe = http
        .get(format!("{base}/gate-00000/verdict"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| BenchError::Start("a first verdict request", e.to_string()))?;
    let probe: serde_json::Value = probe.json().await.unwrap_or_default();
    eprintln!("verdict of gate-00000: {probe}");

    emu.clear_requests();
    sim.clear_requests();
    let static_token = load(
        &http,
        &base,
        &format!("Bearer {TOKEN}"),
        o.gates,
        o.rate,
        o.seconds,
    )
    .await;
    let static_traffic = (emu.requests().len(), sim.requests().len());

    emu.clear_requests();
    let reviews_before = (
        emu.auth().token_reviews(),
        emu.auth().subject_access_reviews(),
    );
    let kube_token = load(
        &http,
        &base,
        "Bearer bench-sa-token",
        o.gates,
        o.rate,
        o.seconds,
    )
    .await;
    let kube_traffic = (emu.requests().len(), sim.requests().len());
    let reviews = (
        emu.auth().token_reviews() - reviews_before.0,
        emu.auth().subject_access_reviews() - reviews_before.1,
    );
    let _ = stop.send(true);
    drop((writer, traces));
    Ok(json!({
        "gates": o.gates,
        "targetRate": o.rate,
        "seconds": o.seconds,
        "staticToken": static_token,
        "staticTokenTraffic": {"kubernetesRequests": static_traffic.0, "azureDevOpsRequests": static_traffic.1},
        "kubernetesToken": kube_token,
        "kubernetesTokenTraffic": {"kubernetesRequests": kube_traffic.0, "azureDevOpsRequests": kube_traffic.1,
                                    "tokenReviews": reviews.0, "subjectAccessReviews": reviews.1},
        "profile": if cfg!(debug_assertions) { "dev (unoptimized)" } else { "release" },
    }))
}

fn print_report(r: &serde_json::Value) {
    println!(
        "verdicts: {} gates in the cache, target {}/s for {}s each, {} build",
        r["gates"],
        r["targetRate"],
        r["seconds"],
        r["profile"].as_str().unwrap_or("")
    );
    for (name, key, traffic) in [
        ("static token", "staticToken", "staticTokenTraffic"),
        (
            "Kubernetes token",
            "kubernetesToken",
            "kubernetesTokenTraffic",
        ),
    ] {
        let l = &r[key];
        let ms = |k: &str| l["latencyMs"][k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {name}: sent {} (achieved {:.0}/s), non-200 {}, skipped at the in-flight cap {}",
            l["sent"],
            l["achievedRate"].as_f64().unwrap_or(0.0),
            l["non200"],
            l["skippedInFlightCap"]
        );
        println!(
            "    latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            ms("p50"),
            ms("p90"),
            ms("p99"),
            ms("max")
        );
        let t = &r[traffic];
        println!(
            "    Kubernetes requests {} (TokenReviews {}, SubjectAccessReviews {}), Azure DevOps requests {}",
            t["kubernetesRequests"],
            t.get("tokenReviews").cloned().unwrap_or(json!(0)),
            t.get("subjectAccessReviews").cloned().unwrap_or(json!(0)),
            t["azureDevOpsRequests"]
        );
    }
}
