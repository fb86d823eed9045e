//! Read API benchmark: gate verdicts under load, served from lockstep's caches.
//!
//! ```text
//! cargo bench --bench api                         # release build of lockstep (about 8 minutes cold)
//! cargo bench --bench api --profile dev           # the debug build: slower, an upper bound
//! cargo bench --bench api -- --gates 10000 --rate 1000 --seconds 10 --json
//! ```
//!
//! The real `lockstep run` (the binary cargo built alongside this harness; `--lockstep PATH` for another)
//! runs as a subprocess with `--api-addr` and a static token, against the test kit's Kubernetes API
//! emulator and Azure DevOps simulator running in this process. N PipelineGates (default 10 000) follow
//! N/100 pipelines that each have a succeeded run, with `interval: 10m`, so once settled nothing polls.
//!
//! 1. **settle**: create every gate, wait until a watch in this process sees them all Ready.
//! 2. **quiet window** (`--seconds` long, no API load): count lockstep's Kubernetes requests (by its
//!    User-Agent, watches excluded) and all Azure DevOps requests: the baseline.
//! 3. **load window** (same length): an open-loop generator sends `GET .../pipelinegates/{random}/verdict`
//!    at `--rate` requests per second on a schedule; each latency is measured from the request's scheduled
//!    time (so a stalled server cannot hide its queueing), with at most 512 in flight. The same counts as
//!    in 2 are taken: requests caused by the load are the difference, which should be 0.
//!
//! Nothing here runs in CI: CI only compiles it, and without cargo bench's `--bench` argument it exits.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use lockstep::crd::PipelineGate;
use lockstep_testkit::ado::{AdoSimulator, RunResult};
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
use serde_json::json;
use tokio::process::{Child, Command};

const ORG: &str = "bench";
const PROJECT: &str = "Api";
const PAT: &str = "bench-api-pat-2c7e";
const TOKEN: &str = "bench-api-token-5b3d";
const NAMESPACE: &str = "bench";
const GATES_PER_PIPELINE: usize = 100;
const MAX_IN_FLIGHT: usize = 512;

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("could not start {0}: {1}")]
    Start(&'static str, String),
    #[error("the Kubernetes API emulator refused {0}: {1}")]
    Kube(String, #[source] kube::Error),
    #[error("{0} did not happen within {1}s; lockstep's log:\n{2}")]
    Timeout(String, u64, String),
}

struct Options {
    gates: usize,
    rate: u64,
    seconds: u64,
    json: bool,
    lockstep: PathBuf,
}

const USAGE: &str = "usage: cargo bench --bench api [-- OPTIONS]
  --gates N        gates in the cache (default 10000; pipelines = N / 100)
  --rate R         verdict requests per second (default 1000)
  --seconds S      length of the quiet and the load window (default 10)
  --json           print JSON instead of text
  --lockstep PATH  the lockstep binary (default: the one cargo built with this harness)";

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut o = Options {
            gates: 10_000,
            rate: 1_000,
            seconds: 10,
            json: false,
            lockstep: PathBuf::from(env!("CARGO_BIN_EXE_lockstep")),
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
                "--gates" => o.gates = (number("--gates")? as usize).max(GATES_PER_PIPELINE),
                "--rate" => o.rate = number("--rate")?.clamp(1, 100_000),
                "--seconds" => o.seconds = number("--seconds")?.clamp(1, 600),
                "--lockstep" => {
                    o.lockstep = PathBuf::from(args.next().ok_or("--lockstep needs a value")?)
                }
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

struct Lockstep {
    child: Child,
    log: PathBuf,
}

impl Drop for Lockstep {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// lockstep's own Kubernetes requests (not watches) and all Azure DevOps requests since the logs were
/// cleared.
fn traffic(emu: &KubeEmulator, sim: &AdoSimulator) -> (usize, usize) {
    let kube = emu
        .requests()
        .iter()
        .filter(|r| {
            r.user_agent
                .as_deref()
                .is_some_and(|a| a.starts_with("lockstep/"))
                && !r.is_watch()
        })
        .count();
    (kube, sim.requests().len())
}

async fn run(o: &Options) -> Result<serde_json::Value, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("lockstep-api-bench-")
        .tempdir()
        .map_err(|e| BenchError::Start("a temporary directory", e.to_string()))?;
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let emu = KubeEmulator::start(EmulatorConfig::default().crds_dir(crds))
        .await
        .map_err(|e| BenchError::Start("the Kubernetes API emulator", e.to_string()))?;
    let kubeconfig = dir.path().join("kubeconfig");
    emu.write_kubeconfig(&kubeconfig)
        .map_err(|e| BenchError::Start("the kubeconfig", e.to_string()))?;
    let sim = AdoSimulator::start()
        .await
        .map_err(|e| BenchError::Start("the Azure DevOps simulator", e.to_string()))?;
    sim.add_token(ORG, PAT);
    sim.add_project(ORG, PROJECT);
    let pipelines = (o.gates / GATES_PER_PIPELINE).max(1);
    for p in 1..=pipelines as i64 {
        sim.add_definition(ORG, PROJECT, p, &format!("pipeline-{p}"));
        let run = sim.queue_run(ORG, PROJECT, p, "main", &commit(p as u64));
        sim.start_run(run);
        sim.complete_run(run, RunResult::Succeeded);
    }
    let client = emu.client().await;
    let kerr = |what: &str| {
        let what = what.to_string();
        move |e| BenchError::Kube(what, e)
    };
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))
                .map_err(|e| BenchError::Start("the namespace", e.to_string()))?,
        )
        .await
        .map_err(kerr("the namespace"))?;
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "ado-pat"}, "stringData": {"token": PAT}}),
            )
            .map_err(|e| BenchError::Start("the Secret", e.to_string()))?,
        )
        .await
        .map_err(kerr("the Secret"))?;

    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, TOKEN)
        .map_err(|e| BenchError::Start("the token file", e.to_string()))?;
    let log = dir.path().join("lockstep.log");
    let log_file = std::fs::File::create(&log)
        .map_err(|e| BenchError::Start("the log file", e.to_string()))?;
    let child = Command::new(&o.lockstep)
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--webhook-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--api-token-file",
        ])
        .arg(&token_file)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Start("lockstep", format!("{}: {e}", o.lockstep.display())))?;
    let lockstep = Lockstep { child, log };
    let api_addr = wait(
        Duration::from_secs(60),
        "lockstep's API listening",
        &lockstep,
        || {
            let text = std::fs::read_to_string(&lockstep.log).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("API and dashboard listening"))
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .and_then(|v| {
                    v["local_addr"]
                        .as_str()
                        .or(v["fields"]["local_addr"].as_str())
                        .map(str::to_string)
                })
        },
    )
    .await?;

    // 1. settle.
    let gates: Api<PipelineGate> = Api::namespaced(client.clone(), NAMESPACE);
    let (store, writer) = reflector::store();
    let watch = tokio::spawn(
        reflector(
            writer,
            watcher(gates.clone(), watcher::Config::default()).default_backoff(),
        )
        .for_each(|_| async {}),
    );
    let org_url = sim.org_url(ORG);
    let started = Instant::now();
    let created = futures::stream::iter(0..o.gates)
        .map(|i| {
            let gates = gates.clone();
            let gate = json!({
                "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
                "metadata": {"name": format!("gate-{i:05}"), "namespace": NAMESPACE},
                "spec": {
                    "azureDevOps": {"organizationUrl": org_url, "project": PROJECT,
                                    "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
                    "pipeline": {"definitionId": (i % pipelines) + 1, "branch": "main"},
                    "interval": "10m"
                }
            });
            async move {
                let gate: PipelineGate = serde_json::from_value(gate).map_err(|e| BenchError::Start("a gate", e.to_string()))?;
                gates.create(&PostParams::default(), &gate).await.map_err(|e| BenchError::Kube("creating a gate".into(), e))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for c in created {
        c?;
    }
    let ready = |g: &PipelineGate| {
        g.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    wait(
        Duration::from_secs(900),
        "every gate Ready",
        &lockstep,
        || (store.state().iter().filter(|g| ready(g)).count() == o.gates).then_some(()),
    )
    .await?;
    let settle = started.elapsed();
    eprintln!("{} gates Ready after {:.1}s", o.gates, settle.as_secs_f64());
    // The API's caches lag the status writes by a watch event; give it a moment to have all.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .map_err(|e| BenchError::Start("the HTTP client", e.to_string()))?;
    let base = format!("http://{api_addr}/api/v1/namespaces/{NAMESPACE}/pipelinegates");
    // Warm the connection pool and check the answer once.
    let probe = http
        .get(format!("{base}/gate-00000/verdict"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    let probe = match probe {
        Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
        Err(e) => return Err(BenchError::Start("a first verdict request", e.to_string())),
    };
    eprintln!("verdict of gate-00000: {probe}");

    // 2. quiet window.
    let window = Duration::from_secs(o.seconds);
    emu.clear_requests();
    sim.clear_requests();
    tokio::time::sleep(window).await;
    let (quiet_kube, quiet_ado) = traffic(&emu, &sim);

    // 3. load window.
    emu.clear_requests();
    sim.clear_requests();
    let total = o.rate * o.seconds;
    let period = Duration::from_secs_f64(1.0 / o.rate as f64);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Duration, u16)>(MAX_IN_FLIGHT * 2);
    let load_started = tokio::time::Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut skipped = 0u64;
    for n in 0..total {
        let scheduled = load_started + period * n as u32;
        tokio::time::sleep_until(scheduled).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        // xorshift: a different gate every request, the same sequence every run.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let url = format!("{base}/gate-{:05}/verdict", seed % o.gates as u64);
        let (http, tx) = (http.clone(), tx.clone());
        tokio::spawn(async move {
            let status = match http.get(url).bearer_auth(TOKEN).send().await {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let _ = r.bytes().await;
                    s
                }
                Err(_) => 0,
            };
            let _ = tx.send((scheduled.elapsed(), status)).await;
            drop(permit);
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(total as usize);
    let mut not_ok = 0u64;
    while let Some((latency, status)) = rx.recv().await {
        latencies.push(latency);
        if status != 200 {
            not_ok += 1;
        }
    }
    let elapsed = load_started.elapsed();
    let (load_kube, load_ado) = traffic(&emu, &sim);
    watch.abort();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let rss = std::fs::read_to_string(format!("/proc/{}/status", lockstep.child.id().unwrap_or(0)))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / 1024.0
            })
        });
    Ok(json!({
        "gates": o.gates,
        "pipelines": pipelines,
        "settleSeconds": settle.as_secs_f64(),
        "targetRate": o.rate,
        "seconds": o.seconds,
        "sent": latencies.len(),
        "skippedInFlightCap": skipped,
        "achievedRate": latencies.len() as f64 / elapsed.as_secs_f64(),
        "non200": not_ok,
        "latencyMs": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0)},
        "quietWindow": {"kubernetesRequests": quiet_kube, "azureDevOpsRequests": quiet_ado},
        "loadWindow": {"kubernetesRequests": load_kube, "azureDevOpsRequests": load_ado},
        "lockstepPeakRssMiB": rss,
        "lockstep": o.lockstep.display().to_string(),
    }))
}

async fn wait<T>(
    within: Duration,
    what: &str,
    lockstep: &Lockstep,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, BenchError> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&lockstep.log).unwrap_or_default();
            let mut tail: Vec<&str> = log.lines().rev().take(20).collect();
            tail.reverse();
            return Err(BenchError::Timeout(
                what.into(),
                within.as_secs(),
                tail.join("\n"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_report(r: &serde_json::Value) {
    println!(
        "verdicts: {} gates ({} pipelines), target {}/s for {}s",
        r["gates"], r["pipelines"], r["targetRate"], r["seconds"]
    );
    println!(
        "  sent {} (achieved {:.0}/s), non-200 {}, skipped at the in-flight cap {}",
        r["sent"],
        r["achievedRate"].as_f64().unwrap_or(0.0),
        r["non200"],
        r["skippedInFlightCap"]
    );
    let l = &r["latencyMs"];
    println!(
        "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        l["p50"].as_f64().unwrap_or(f64::NAN),
        l["p90"].as_f64().unwrap_or(f64::NAN),
        l["p99"].as_f64().unwrap_or(f64::NAN),
        l["max"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "  lockstep's Kubernetes requests (non-watch): quiet window {}, load window {}",
        r["quietWindow"]["kubernetesRequests"], r["loadWindow"]["kubernetesRequests"]
    );
    println!(
        "  Azure DevOps requests: quiet window {}, load window {}",
        r["quietWindow"]["azureDevOpsRequests"], r["loadWindow"]["azureDevOpsRequests"]
    );
    println!(
        "  settle {:.1}s; lockstep peak RSS {:.1} MiB; binary {}",
        r["settleSeconds"].as_f64().unwrap_or(0.0),
        r["lockstepPeakRssMiB"].as_f64().unwrap_or(0.0),
        r["lockstep"].as_str().unwrap_or("")
    );
}
