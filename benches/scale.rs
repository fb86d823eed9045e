//! Scale benchmark: what lockstep costs as the number of gates grows.
//!
//! ```text
//! cargo bench --bench scale                              # N = 100, 1 000, 10 000
//! cargo bench --bench scale -- --sizes 100,1000 --json   # pick sizes; JSON instead of the table
//! ```
//!
//! `cargo bench` builds `target/release/lockstep` (the binary `cargo build --release --bin lockstep`
//! builds) and this harness, then runs the harness, which starts that binary as a subprocess
//! (`lockstep run`, exactly as deployed; `--lockstep PATH` runs another build). The Kubernetes API emulator
//! and the Azure DevOps simulator of the test kit run inside this process. Nothing here runs in CI: CI
//! only compiles it (`cargo clippy --all-targets`), and without cargo bench's `--bench` argument it exits
//! at once.
//!
//! Per size: N PipelineGates over M = N/100 distinct pipelines (gate i follows pipeline i mod M), all in
//! one namespace sharing one PAT Secret, with `interval: 10m` so idle gates never poll during a run.
//!
//! 1. **apply / settle**: all gates are created concurrently (64 requests in flight); `apply` is how long
//!    the creates took (the API server's cost, not lockstep's), `settle` the time from the first create
//!    until a watcher in this process has seen every gate Ready=True.
//! 2. **idle**: once lockstep stopped writing, a quiet window of two fast periods with nothing to do:
//!    Kubernetes writes (should be 0) and Azure DevOps requests (only regular polls: a pipeline whose
//!    10-minute grid point falls inside the window, about M × window / 10 min).
//! 3. **polling period**: every pipeline gets a new run in progress, announced by one service hook per
//!    pipeline, so every gate waits and polls at the fast interval (`--fast-interval`, default 5s). "Per
//!    polling period" means: requests in a window of `--periods` fast intervals with nothing changing,
//!    divided by the number of periods. Builds List requests should equal M (one per distinct pipeline,
//!    shared by its N/M gates); Kubernetes writes should be 0 (nothing changed, so no status is written).
//!    Kubernetes reads (non-watch GETs) are reported too.
//! 4. **webhook → Ready**: for `--hook-rounds` pipelines in turn (default min(M, 5)), the in-progress run
//!    completes successfully and a `run-state-changed` hook is delivered; per gate of that pipeline, the
//!    latency is from the start of the delivery to this process's watcher seeing the gate Ready=True.
//!    A fast poll may coincide with a delivery (chance ≈ latency / fast interval); that only shortens
//!    a sample.
//! 5. **process cost**: peak RSS (`VmHWM` of /proc/<pid>/status) and CPU seconds (utime + stime of
//!    /proc/<pid>/stat) of the lockstep process, at settle and at the end.
//! 6. **restart**: that process stops and a new one starts over the settled gates, as in a rollout or a
//!    leader change: seconds until its /readyz (its first, paged list done), its Kubernetes writes in the
//!    two fast periods after (should be 0: it resumes from status) and its peak RSS.
//!
//! **Foreign objects** (`--foreign-secrets N --secret-size KIB`, `--foreign-deployments N`): objects
//! lockstep watches but does not serve, created before lockstep starts, half in the gates' namespace and
//! half in another. With either option every size runs twice, without and then with them, and the
//! difference in peak RSS is printed: a cluster's size beyond the objects lockstep serves should not show
//! in its memory.
//!
//! Kubernetes requests are attributed by User-Agent: this harness sends `lockstep-bench`, so every write
//! with another agent is lockstep's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use lockstep::crd::PipelineGate;
use lockstep_testkit::ado::{AdoSimulator, HookDelivery, HookEvent, RunResult};
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator, RequestRecord};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const ORG: &str = "bench";
const PROJECT: &str = "Scale";
const PAT: &str = "bench-pat-5e1f0c2a";
const NAMESPACE: &str = "bench";
/// Where the other half of the foreign objects live.
const OTHER_NAMESPACE: &str = "bench-other";
const BRANCH: &str = "main";
const HOOK_USER: &str = "bench";
const HOOK_PASSWORD: &str = "bench-hook-password-0b7d";
const BENCH_AGENT: &str = "lockstep-bench";
const IDLE_INTERVAL: &str = "10m";
const GATES_PER_PIPELINE: usize = 100;
const CREATE_CONCURRENCY: usize = 64;
/// lockstep counts as done with a phase once it made no Kubernetes write for this long.
const QUIET_FOR: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("could not start {what}: {detail}")]
    Start { what: &'static str, detail: String },
    #[error("the Kubernetes API emulator refused {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} did not happen within {}s ({progress}); lockstep's log: {log}", within.as_secs())]
    Timeout {
        what: String,
        within: Duration,
        progress: String,
        log: String,
    },
    #[error("the webhook receiver answered HTTP {0} instead of 202")]
    HookRejected(u16),
    #[error("could not deliver a service hook: {0}")]
    HookUndelivered(String),
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Kube { what, source }
}

fn start_err(what: &'static str) -> impl FnOnce(String) -> BenchError {
    move |detail| BenchError::Start { what, detail }
}

struct Options {
    sizes: Vec<usize>,
    json: bool,
    lockstep: PathBuf,
    fast_interval: Duration,
    periods: u32,
    hook_rounds: Option<usize>,
    settle_timeout: Duration,
    /// Keep each size's lockstep log here.
    logs: Option<PathBuf>,
    /// RUST_LOG for lockstep (default: its own default level).
    rust_log: Option<String>,
    /// `--shards K`: compare one instance with K shards instead of the usual measurements.
    shards: Option<usize>,
    foreign: Foreign,
}

/// Objects lockstep watches but does not serve, created before it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Foreign {
    secrets: usize,
    secret_kib: usize,
    deployments: usize,
}

impl Foreign {
    fn any(&self) -> bool {
        self.secrets > 0 || self.deployments > 0
    }
}

const USAGE: &str = "usage: cargo bench --bench scale [-- OPTIONS]
  --sizes 100,1000,10000   numbers of gates (pipelines = gates / 100)
  --json                   print JSON instead of a table
  --lockstep PATH          the lockstep binary (default: target/release/lockstep, built by cargo bench,
                           the same as `cargo build --release --bin lockstep`)
  --fast-interval SECS     lockstep's --fast-interval, the polling period measured (default 5)
  --periods K              polling periods in the measured window (default 3)
  --hook-rounds R          pipelines changed one after another for webhook latency (default min(M, 5))
  --settle-timeout SECS    give up waiting for all gates Ready after this long (default 300)
  --logs DIR               keep lockstep's log of each size as DIR/lockstep-<gates>.log
  --rust-log FILTER        RUST_LOG for lockstep (default: unset, lockstep's default level)
  --shards K               instead: per size, one instance against K shards (`lockstep run --shard`,
                           gates split by label), settle, a hook round and each process's peak RSS
  --foreign-secrets N      N Secrets lockstep does not use, created before it starts (half in the gates'
                           namespace, half in another); each size then runs without and with them
  --secret-size KIB        data per foreign Secret (default 512; the API server allows up to 1024)
  --foreign-deployments N  N Deployments lockstep does not trace, created the same way";

impl Options {
    /// `None` when not started by `cargo bench` (which passes `--bench`): `cargo test --benches` only
    /// checks that the harness links, it must not run for minutes.
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            sizes: vec![100, 1_000, 10_000],
            json: false,
            lockstep: PathBuf::from(env!("CARGO_BIN_EXE_lockstep")),
            fast_interval: Duration::from_secs(5),
            periods: 3,
            hook_rounds: None,
            settle_timeout: Duration::from_secs(300),
            logs: None,
            rust_log: None,
            shards: None,
            foreign: Foreign {
                secret_kib: 512,
                ..Foreign::default()
            },
        };
        let mut benching = false;
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value; try --help"))
            };
            let number = |name: &str, v: String| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{name}: {v:?} is not a whole number"))
            };
            match arg.as_str() {
                "--bench" => benching = true,
                "--json" => options.json = true,
                "--sizes" => {
                    let v = value("--sizes")?;
                    options.sizes = v
                        .split(',')
                        .map(|s| number("--sizes", s.to_string()).map(|n| n as usize))
                        .collect::<Result<_, _>>()?;
                    if options.sizes.iter().any(|&n| n < GATES_PER_PIPELINE) {
                        return Err(format!(
                            "--sizes: every size must be at least {GATES_PER_PIPELINE} (one pipeline)"
                        ));
                    }
                }
                "--lockstep" => options.lockstep = PathBuf::from(value("--lockstep")?),
                "--fast-interval" => {
                    let v = value("--fast-interval")?;
                    options.fast_interval =
                        Duration::from_secs(number("--fast-interval", v)?.max(1));
                }
                "--periods" => {
                    let v = value("--periods")?;
                    options.periods = number("--periods", v)?.clamp(1, 100) as u32;
                }
                "--hook-rounds" => {
                    let v = value("--hook-rounds")?;
                    options.hook_rounds = Some(number("--hook-rounds", v)?.max(1) as usize);
                }
                "--settle-timeout" => {
                    let v = value("--settle-timeout")?;
                    options.settle_timeout = Duration::from_secs(number("--settle-timeout", v)?);
                }
                "--logs" => options.logs = Some(PathBuf::from(value("--logs")?)),
                "--rust-log" => options.rust_log = Some(value("--rust-log")?),
                "--shards" => {
                    let v = value("--shards")?;
                    options.shards = Some(number("--shards", v)?.clamp(2, 8) as usize);
                }
                "--foreign-secrets" => {
                    let v = value("--foreign-secrets")?;
                    options.foreign.secrets = number("--foreign-secrets", v)? as usize;
                }
                "--secret-size" => {
                    let v = value("--secret-size")?;
                    options.foreign.secret_kib =
                        number("--secret-size", v)?.clamp(1, 1000) as usize;
                }
                "--foreign-deployments" => {
                    let v = value("--foreign-deployments")?;
                    options.foreign.deployments = number("--foreign-deployments", v)? as usize;
                }
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(benching.then_some(options))
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("scale benchmark: run it with `cargo bench --bench scale` (see --help)");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if !options.lockstep.is_file() {
        eprintln!(
            "no lockstep binary at {}: build it with `cargo build --release --bin lockstep`",
            options.lockstep.display()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(shards) = options.shards {
        return runtime.block_on(shard_comparison(&options, shards));
    }
    let mut results = Vec::new();
    let loads: Vec<Foreign> = if options.foreign.any() {
        let none = Foreign {
            secrets: 0,
            deployments: 0,
            ..options.foreign
        };
        vec![none, options.foreign]
    } else {
        vec![Foreign::default()]
    };
    for &gates in &options.sizes {
        for &foreign in &loads {
            eprintln!(
                "--- {gates} gates over {} pipelines; foreign: {} Secrets of {} KiB, {} Deployments",
                gates / GATES_PER_PIPELINE,
                foreign.secrets,
                foreign.secret_kib,
                foreign.deployments
            );
            match runtime.block_on(measure(&options, gates, foreign)) {
                Ok(result) => {
                    eprintln!("{}", serde_json::to_string(&result).unwrap_or_default());
                    results.push(result);
                }
                Err(e) => {
                    eprintln!("{gates} gates: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let machine = Machine::read();
    if options.json {
        let out = json!({"machine": machine, "fastIntervalSeconds": options.fast_interval.as_secs(), "results": results});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", table(&results));
        for pair in results.chunks(2).filter(|_| options.foreign.any()) {
            if let [without, with] = pair {
                println!(
                    "{} gates: peak RSS {:.1} MiB without foreign objects, {:.1} MiB with {} Secrets of {} KiB and {} Deployments: {:+.1} MiB",
                    without.gates,
                    without.peak_rss_mib,
                    with.peak_rss_mib,
                    with.foreign.secrets,
                    with.foreign.secret_kib,
                    with.foreign.deployments,
                    with.peak_rss_mib - without.peak_rss_mib
                );
            }
        }
        println!(
            "\nmachine: {} cores, {} memory, {}; load average at the end {}; fast interval {}s, idle interval {IDLE_INTERVAL}",
            machine.cores,
            machine.memory,
            machine.cpu,
            machine.load,
            options.fast_interval.as_secs()
        );
    }
    ExitCode::SUCCESS
}

/// What one size measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SizeResult {
    gates: usize,
    pipelines: usize,
    /// Objects lockstep watches but does not serve, present from the start.
    foreign: Foreign,
    /// Creating all gates (the API server's work).
    apply_seconds: f64,
    /// First create → every gate seen Ready=True.
    settle_seconds: f64,
    /// Builds List requests while settling (ideal: one per pipeline).
    settle_ado_requests: usize,
    /// Kubernetes writes / Azure DevOps requests in a quiet window with nothing to do.
    idle_k8s_writes: usize,
    idle_ado_requests: usize,
    idle_window_seconds: f64,
    /// Per fast polling period, all gates waiting on an in-progress run, nothing changing.
    ado_requests_per_period: f64,
    /// The most Builds List requests one pipeline got in the window divided by the periods (ideal 1).
    max_ado_requests_per_pipeline_period: f64,
    k8s_writes_per_period: f64,
    k8s_reads_per_period: f64,
    hook_samples: usize,
    hook_to_ready_p50_ms: f64,
    hook_to_ready_p99_ms: f64,
    hook_to_ready_max_ms: f64,
    peak_rss_mib: f64,
    rss_mib: f64,
    /// A second process started over the settled gates: until /readyz (first list done), its Kubernetes
    /// writes in the two fast periods after (ideal 0: status says everything) and its peak RSS.
    restart_ready_seconds: f64,
    restart_k8s_writes: usize,
    restart_peak_rss_mib: f64,
    cpu_seconds_settle: f64,
    cpu_seconds_total: f64,
    /// Watch and list requests lockstep made (relists show up here).
    k8s_lists: usize,
    k8s_watches: usize,
    /// WARN/ERROR lines in lockstep's log.
    log_warnings: usize,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: String,
    memory: String,
    cpu: String,
    /// /proc/loadavg's 1, 5 and 15 minute averages: the machine is shared, so figures need it.
    load: String,
}

impl Machine {
    fn read() -> Machine {
        let cores = std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or_else(
                || "?".into(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| "?".into());
        Machine {
            cores,
            memory,
            cpu,
            load,
        }
    }
}

fn table(results: &[SizeResult]) -> String {
    let header = [
        "gates",
        "pipelines",
        "foreign",
        "apply s",
        "settle s",
        "ADO req/period",
        "k8s writes/period",
        "k8s writes idle",
        "hook→Ready p50 ms",
        "p99 ms",
        "peak RSS MiB",
        "CPU s",
        "restart: ready s / writes / peak RSS MiB",
    ];
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.gates.to_string(),
                r.pipelines.to_string(),
                if r.foreign.any() {
                    format!(
                        "{} Secrets × {} KiB, {} Deployments",
                        r.foreign.secrets, r.foreign.secret_kib, r.foreign.deployments
                    )
                } else {
                    "-".into()
                },
                format!("{:.1}", r.apply_seconds),
                format!("{:.1}", r.settle_seconds),
                format!("{:.1}", r.ado_requests_per_period),
                format!("{:.1}", r.k8s_writes_per_period),
                r.idle_k8s_writes.to_string(),
                format!("{:.0}", r.hook_to_ready_p50_ms),
                format!("{:.0}", r.hook_to_ready_p99_ms),
                format!("{:.1}", r.peak_rss_mib),
                format!("{:.1}", r.cpu_seconds_total),
                format!(
                    "{:.1} / {} / {:.1}",
                    r.restart_ready_seconds, r.restart_k8s_writes, r.restart_peak_rss_mib
                ),
            ]
        })
        .collect();
    let mut out = String::new();
    out.push_str(&format!("| {} |\n", header.join(" | ")));
    out.push_str(&format!(
        "|{}\n",
        header.iter().map(|_| "---:|").collect::<String>()
    ));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// Ready state of every gate as a watcher in this process sees it.
#[derive(Default)]
struct Seen {
    ready: HashMap<String, bool>,
    /// When each gate was last seen turning Ready=True.
    ready_at: HashMap<String, Instant>,
    ready_count: usize,
}

impl Seen {
    fn observe(&mut self, gate: &PipelineGate) {
        let name = gate.name_any();
        let ready = gate.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        let was = self.ready.insert(name.clone(), ready).unwrap_or(false);
        match (was, ready) {
            (false, true) => {
                self.ready_count += 1;
                self.ready_at.insert(name, Instant::now());
            }
            (true, false) => self.ready_count -= 1,
            _ => {}
        }
    }
}

type SharedSeen = Arc<Mutex<Seen>>;

fn seen(s: &SharedSeen) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn spawn_watcher(api: Api<PipelineGate>, state: SharedSeen) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(g)) | Ok(watcher::Event::InitApply(g)) => {
                    seen(&state).observe(&g)
                }
                Ok(_) => {}
                Err(e) => eprintln!("bench watcher: {e}"),
            }
        }
    })
}

/// The lockstep subprocess; killed on drop.
struct Lockstep {
    child: Child,
    pid: u32,
    log: PathBuf,
    webhook_url: String,
}

impl Lockstep {
    async fn start(
        options: &Options,
        dir: &Path,
        kubeconfig: &Path,
    ) -> Result<Lockstep, BenchError> {
        Lockstep::start_as(options, dir, kubeconfig, "lockstep", &[]).await
    }

    /// [`Lockstep::start`] with its log as `dir/<name>.log` and `extra` flags (a shard's `--shard`).
    async fn start_as(
        options: &Options,
        dir: &Path,
        kubeconfig: &Path,
        name: &str,
        extra: &[String],
    ) -> Result<Lockstep, BenchError> {
        let log = dir.join(format!("{name}.log"));
        let password = dir.join("hook-password");
        std::fs::write(&password, HOOK_PASSWORD)
            .map_err(|e| start_err("the webhook password file")(e.to_string()))?;
        let file =
            std::fs::File::create(&log).map_err(|e| start_err("the log file")(e.to_string()))?;
        let fast = format!("{}s", options.fast_interval.as_secs());
        let mut cmd = Command::new(&options.lockstep);
        cmd.args(["run", "--metrics-addr", "127.0.0.1:0"])
            .args(["--webhook-addr", "127.0.0.1:0", "--log-format", "json"])
            .args(["--fast-interval", &fast, "--webhook-username", HOOK_USER])
            .arg("--webhook-password-file")
            .arg(&password)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        // The shell's settings must not change what is measured; lockstep logs at its default level.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("LOCKSTEP_") || name == "RUST_LOG" {
                cmd.env_remove(name);
            }
        }
        if let Some(filter) = &options.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd
            .spawn()
            .map_err(|e| start_err("lockstep")(format!("{}: {e}", options.lockstep.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| start_err("lockstep")("it exited at once".into()))?;
        let mut me = Lockstep {
            child,
            pid,
            log,
            webhook_url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut metrics, mut webhook) = (None, None);
        while metrics.is_none() || webhook.is_none() {
            for line in me.log_lines() {
                if line["message"] == "metrics server listening" {
                    metrics = line["addr"].as_str().map(str::to_string);
                }
                if line["message"] == "webhook receiver listening" {
                    webhook = line["local_addr"].as_str().map(str::to_string);
                }
            }
            if Instant::now() > deadline {
                return Err(start_err("lockstep")(format!(
                    "no listening addresses logged within 30s: {}",
                    me.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let webhook = webhook.unwrap_or_default();
        me.webhook_url = format!("http://{webhook}/hooks/azure-devops");
        let readyz = format!("http://{}/readyz", metrics.unwrap_or_default());
        let http = reqwest::Client::new();
        loop {
            if let Ok(resp) = http.get(&readyz).send().await {
                if resp.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(start_err("lockstep")(format!(
                    "not ready within 30s: {}",
                    me.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(me)
    }

    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn warnings(&self) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
            .count()
    }

    /// (peak RSS MiB, current RSS MiB, CPU seconds).
    fn usage(&self) -> (f64, f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let kib = |field: &str| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
        let ticks: f64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0);
        (
            kib("VmHWM:") / 1024.0,
            kib("VmRSS:") / 1024.0,
            ticks / clock_ticks(),
        )
    }

    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn is_bench(r: &RequestRecord) -> bool {
    r.user_agent.as_deref() == Some(BENCH_AGENT)
}

fn is_write(r: &RequestRecord) -> bool {
    matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
}

fn lockstep_writes(emu: &KubeEmulator) -> usize {
    emu.requests()
        .iter()
        .filter(|r| !is_bench(r) && is_write(r))
        .count()
}

/// lockstep's list and watch requests over the whole run (the emulator's log is cleared between phases).
#[derive(Default)]
struct Tally {
    lists: usize,
    watches: usize,
}

impl Tally {
    fn drain(&mut self, emu: &KubeEmulator) {
        let records = emu.requests();
        emu.clear_requests();
        for r in records.iter().filter(|r| !is_bench(r)) {
            if r.is_watch() {
                self.watches += 1;
            } else if r.method == "GET"
                && ["pipelinegates", "secrets", "servicetraces"]
                    .iter()
                    .any(|plural| r.path.ends_with(plural))
            {
                self.lists += 1;
            }
        }
    }
}

/// Wait until lockstep made no Kubernetes write for [`QUIET_FOR`].
async fn quiesce(emu: &KubeEmulator) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = lockstep_writes(emu);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = lockstep_writes(emu);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET_FOR {
            return;
        }
    }
}

/// Builds List requests in the simulator's log, per definition id.
fn builds_lists(sim: &AdoSimulator) -> BTreeMap<i64, usize> {
    let mut per = BTreeMap::new();
    for r in sim.requests() {
        if r.endpoint != "builds.list" {
            continue;
        }
        let definition = r
            .query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix("definitions="))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1);
        *per.entry(definition).or_insert(0) += 1;
    }
    per
}

async fn wait_for(
    what: &str,
    within: Duration,
    lockstep: &Lockstep,
    mut done: impl FnMut() -> Result<(), String>,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + within;
    loop {
        let progress = match done() {
            Ok(()) => return Ok(()),
            Err(progress) => progress,
        };
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                what: what.to_string(),
                within,
                progress,
                log: lockstep.log_tail(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gate_name(i: usize) -> String {
    format!("gate-{i:05}")
}

fn pipeline_of(i: usize, pipelines: usize) -> i64 {
    (i % pipelines) as i64 + 1
}

fn commit(n: u64) -> String {
    format!("{n:040x}")
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn bench_client(kubeconfig: &Path) -> Result<kube::Client, BenchError> {
    let kc =
        Kubeconfig::read_from(kubeconfig).map_err(|e| start_err("kubeconfig")(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| start_err("kubeconfig")(e.to_string()))?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(BENCH_AGENT),
    ));
    kube::Client::try_from(config).map_err(|e| start_err("the Kubernetes client")(e.to_string()))
}

async fn measure(
    options: &Options,
    gates: usize,
    foreign: Foreign,
) -> Result<SizeResult, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("lockstep-bench-")
        .tempdir()
        .map_err(|e| start_err("a temporary directory")(e.to_string()))?;
    let result = measure_in(options, gates, foreign, dir.path()).await;
    if let Some(logs) = &options.logs {
        let suffix = if foreign.any() { "-foreign" } else { "" };
        let kept = logs.join(format!("lockstep-{gates}{suffix}.log"));
        if let Err(e) = std::fs::create_dir_all(logs)
            .and_then(|()| std::fs::copy(dir.path().join("lockstep.log"), &kept))
        {
            eprintln!("could not keep the log as {}: {e}", kept.display());
        }
    }
    result
}

/// The test kit one measurement runs against: the emulator with lockstep's CRDs, `namespaces`, the PAT
/// Secret, and the simulator with `pipelines` pipelines whose newest run succeeded.
struct Kit {
    emu: KubeEmulator,
    sim: AdoSimulator,
    kubeconfig: PathBuf,
    client: kube::Client,
    /// The commit counter the runs so far used; later runs continue from it.
    sha: u64,
}

impl Kit {
    async fn start(
        dir: &Path,
        pipelines: usize,
        config: EmulatorConfig,
        namespaces: &[&str],
    ) -> Result<Kit, BenchError> {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let emu = KubeEmulator::start(config.crds_dir(crds))
            .await
            .map_err(|e| start_err("the Kubernetes API emulator")(e.to_string()))?;
        let kubeconfig = dir.join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig)
            .map_err(|e| start_err("the kubeconfig")(e.to_string()))?;
        let sim = AdoSimulator::start()
            .await
            .map_err(|e| start_err("the Azure DevOps simulator")(e.to_string()))?;
        sim.add_token(ORG, PAT);
        sim.add_project(ORG, PROJECT);
        let mut sha = 0u64;
        for p in 1..=pipelines as i64 {
            sim.add_definition(ORG, PROJECT, p, &format!("pipeline-{p}"));
            sha += 1;
            let run = sim.queue_run(ORG, PROJECT, p, BRANCH, &commit(sha));
            sim.start_run(run);
            sim.complete_run(run, RunResult::Succeeded);
        }
        let client = bench_client(&kubeconfig).await?;
        let api: Api<Namespace> = Api::all(client.clone());
        for ns in namespaces {
            api.create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))
                    .map_err(|e| start_err("the namespace")(e.to_string()))?,
            )
            .await
            .map_err(kube_err("the namespace"))?;
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "ado-pat"},
                    "stringData": {"token": PAT}
                }))
                .map_err(|e| start_err("the Secret")(e.to_string()))?,
            )
            .await
            .map_err(kube_err("the Secret"))?;
        Ok(Kit {
            emu,
            sim,
            kubeconfig,
            client,
            sha,
        })
    }
}

async fn measure_in(
    options: &Options,
    gates: usize,
    foreign: Foreign,
    dir: &Path,
) -> Result<SizeResult, BenchError> {
    let pipelines = (gates / GATES_PER_PIPELINE).max(1);
    let Kit {
        emu,
        sim,
        kubeconfig,
        client,
        mut sha,
    } = Kit::start(
        dir,
        pipelines,
        EmulatorConfig::default(),
        &[NAMESPACE, OTHER_NAMESPACE],
    )
    .await?;
    create_foreign(&client, foreign).await?;

    let mut tally = Tally::default();
    let lockstep = Lockstep::start(options, dir, &kubeconfig).await?;
    let api: Api<PipelineGate> = Api::namespaced(client.clone(), NAMESPACE);
    let state = SharedSeen::default();
    let watch_task = spawn_watcher(api.clone(), state.clone());

    // 1. apply and settle.
    sim.clear_requests();
    let org_url = sim.org_url(ORG);
    let started = Instant::now();
    let creates = futures::stream::iter(0..gates)
        .map(|i| {
            let api = api.clone();
            let gate = json!({
                "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
                "metadata": {"name": gate_name(i), "namespace": NAMESPACE},
                "spec": {
                    "azureDevOps": {"organizationUrl": org_url, "project": PROJECT,
                                    "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
                    "pipeline": {"definitionId": pipeline_of(i, pipelines), "branch": BRANCH},
                    "interval": IDLE_INTERVAL
                }
            });
            async move {
                let gate: PipelineGate = serde_json::from_value(gate)
                    .map_err(|e| start_err("a gate")(e.to_string()))?;
                api.create(&PostParams::default(), &gate)
                    .await
                    .map_err(kube_err(format!("creating {}", gate.name_any())))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for created in creates {
        created?;
    }
    let apply = started.elapsed();
    wait_for("all gates Ready", options.settle_timeout, &lockstep, || {
        let count = seen(&state).ready_count;
        (count == gates)
            .then_some(())
            .ok_or_else(|| format!("{count} of {gates} Ready"))
    })
    .await?;
    let settle = started.elapsed();
    eprintln!(
        "apply {:.1}s, settled {:.1}s after the first create",
        apply.as_secs_f64(),
        settle.as_secs_f64()
    );
    let (_, _, cpu_settle) = lockstep.usage();
    let settle_ado_requests = builds_lists(&sim).values().sum();

    // 2. idle: nothing to do.
    quiesce(&emu).await;
    tally.drain(&emu);
    sim.clear_requests();
    let idle_window = options.fast_interval * 2;
    tokio::time::sleep(idle_window).await;
    let idle_k8s_writes = lockstep_writes(&emu);
    let idle_ado_requests = sim.requests().len();

    // 3. polling period: every pipeline has a run in progress; nothing changes during the window.
    let delivery =
        HookDelivery::to(lockstep.webhook_url.clone()).basic_auth(HOOK_USER, HOOK_PASSWORD);
    let mut in_flight = Vec::new();
    for p in 1..=pipelines as i64 {
        sha += 1;
        let run = sim.queue_run(ORG, PROJECT, p, BRANCH, &commit(sha));
        sim.start_run(run);
        in_flight.push(run);
    }
    let deliveries = futures::stream::iter(in_flight.iter().copied())
        .map(|run| {
            let (sim, delivery) = (&sim, &delivery);
            async move { deliver(sim, run, delivery).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for delivered in deliveries {
        delivered?;
    }
    wait_for(
        "all gates waiting",
        Duration::from_secs(120),
        &lockstep,
        || {
            let count = seen(&state).ready_count;
            (count == 0)
                .then_some(())
                .ok_or_else(|| format!("{count} of {gates} still Ready"))
        },
    )
    .await?;
    eprintln!("all gates waiting on an in-progress run");
    quiesce(&emu).await;
    tally.drain(&emu);
    sim.clear_requests();
    let window = options.fast_interval * options.periods;
    tokio::time::sleep(window).await;
    let periods = f64::from(options.periods);
    let per_pipeline = builds_lists(&sim);
    let records = emu.requests();
    let k8s_writes = records
        .iter()
        .filter(|r| !is_bench(r) && is_write(r))
        .count();
    let k8s_reads = records
        .iter()
        .filter(|r| !is_bench(r) && r.method == "GET" && !r.is_watch())
        .count();

    // 4. webhook → Ready, one pipeline at a time.
    let rounds = options.hook_rounds.unwrap_or(5).min(pipelines);
    let mut samples = Vec::new();
    for (round, &run) in in_flight.iter().enumerate().take(rounds) {
        let p = round + 1;
        let names: Vec<String> = (0..gates)
            .filter(|&i| pipeline_of(i, pipelines) == p as i64)
            .map(gate_name)
            .collect();
        sim.complete_run(run, RunResult::Succeeded);
        let sent = Instant::now();
        deliver(&sim, run, &delivery).await?;
        wait_for(
            &format!("the gates of pipeline {p} Ready after its hook"),
            Duration::from_secs(60),
            &lockstep,
            || {
                let s = seen(&state);
                let missing = names
                    .iter()
                    .filter(|n| !s.ready.get(*n).copied().unwrap_or(false))
                    .count();
                (missing == 0)
                    .then_some(())
                    .ok_or_else(|| format!("{missing} of {} not Ready", names.len()))
            },
        )
        .await?;
        let s = seen(&state);
        samples.extend(names.iter().filter_map(|n| {
            s.ready_at
                .get(n)
                .map(|at| at.saturating_duration_since(sent).as_secs_f64() * 1000.0)
        }));
    }
    samples.sort_by(f64::total_cmp);

    let (peak_rss, rss, cpu_total) = lockstep.usage();
    tally.drain(&emu);
    let log_warnings = lockstep.warnings();
    lockstep.stop().await;

    // 5. restart: a new process over the same gates resumes from their status. It lists them (paged),
    // decides nothing new and writes nothing; its peak RSS is that of a rollout or a leader change.
    quiesce(&emu).await;
    emu.clear_requests();
    let restarted_at = Instant::now();
    let again = Lockstep::start_as(options, dir, &kubeconfig, "lockstep-restarted", &[]).await?;
    let restart_ready = restarted_at.elapsed();
    tokio::time::sleep(options.fast_interval * 2).await;
    let restart_k8s_writes = lockstep_writes(&emu);
    let (restart_peak_rss, _, _) = again.usage();
    tally.drain(&emu);
    again.stop().await;
    watch_task.abort();
    Ok(SizeResult {
        gates,
        pipelines,
        foreign,
        apply_seconds: apply.as_secs_f64(),
        settle_seconds: settle.as_secs_f64(),
        settle_ado_requests,
        idle_k8s_writes,
        idle_ado_requests,
        idle_window_seconds: idle_window.as_secs_f64(),
        ado_requests_per_period: per_pipeline.values().sum::<usize>() as f64 / periods,
        max_ado_requests_per_pipeline_period: per_pipeline.values().copied().max().unwrap_or(0)
            as f64
            / periods,
        k8s_writes_per_period: k8s_writes as f64 / periods,
        k8s_reads_per_period: k8s_reads as f64 / periods,
        hook_samples: samples.len(),
        hook_to_ready_p50_ms: percentile(&samples, 0.50),
        hook_to_ready_p99_ms: percentile(&samples, 0.99),
        restart_ready_seconds: restart_ready.as_secs_f64(),
        restart_k8s_writes,
        restart_peak_rss_mib: restart_peak_rss,
        hook_to_ready_max_ms: samples.last().copied().unwrap_or(0.0),
        peak_rss_mib: peak_rss,
        rss_mib: rss,
        cpu_seconds_settle: cpu_settle,
        cpu_seconds_total: cpu_total,
        k8s_lists: tally.lists,
        k8s_watches: tally.watches,
        log_warnings,
    })
}

/// Deliver a `run-state-changed` hook for `run`; a 503 (lockstep could not annotate every gate in time,
/// as happens on a loaded machine) is retried two seconds later, as Azure DevOps retries it.
async fn deliver(sim: &AdoSimulator, run: i64, delivery: &HookDelivery) -> Result<(), BenchError> {
    const ATTEMPTS: usize = 10;
    for attempt in 1..=ATTEMPTS {
        let outcome = sim
            .deliver_hook(HookEvent::RunStateChanged { run_id: run }, delivery)
            .await
            .map_err(|e| BenchError::HookUndelivered(e.to_string()))?;
        match outcome.status {
            202 => return Ok(()),
            // A retry of an event whose 503'd attempt finished its work after all: the receiver's
            // dedup answers 200 "duplicate", and the event was processed.
            200 if attempt > 1 => return Ok(()),
            503 if attempt < ATTEMPTS => tokio::time::sleep(Duration::from_secs(2)).await,
            status => return Err(BenchError::HookRejected(status)),
        }
    }
    Ok(())
}

/// Create the foreign objects, alternating between the gates' namespace and another one.
async fn create_foreign(client: &kube::Client, foreign: Foreign) -> Result<(), BenchError> {
    use base64::Engine as _;
    let namespace = |i: usize| {
        if i.is_multiple_of(2) {
            NAMESPACE
        } else {
            OTHER_NAMESPACE
        }
    };
    // Incompressible bytes (xorshift), as a Helm release Secret's gzip payload would be.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let payload: Vec<u8> = (0..foreign.secret_kib * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let data = base64::engine::general_purpose::STANDARD.encode(&payload);
    let secrets = futures::stream::iter(0..foreign.secrets)
        .map(|i| {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace(i));
            let secret = json!({
                "metadata": {"name": format!("sh.helm.release.v1.foreign-{i}.v1"),
                             "labels": {"owner": "helm", "name": format!("foreign-{i}")}},
                "type": "helm.sh/release.v1",
                "data": {"release": data}
            });
            async move {
                let secret: Secret = serde_json::from_value(secret)
                    .map_err(|e| start_err("a foreign Secret")(e.to_string()))?;
                api.create(&PostParams::default(), &secret)
                    .await
                    .map_err(kube_err(format!("creating Secret {}", secret.name_any())))
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for created in secrets {
        created?;
    }
    let deployments = futures::stream::iter(0..foreign.deployments)
        .map(|i| {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace(i));
            let name = format!("foreign-{i}");
            let labels = json!({"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name});
            let container = json!({
                "name": "app", "image": format!("registry.example/team/app-{i}:1.{i}.0"),
                "ports": [{"containerPort": 8080, "name": "http"}],
                "env": (0..10).map(|e| json!({"name": format!("SETTING_{e}"), "value": format!("value-{i}-{e}")})).collect::<Vec<_>>(),
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}
            });
            let mut deployment = json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}
                }
            });
            // What `kubectl apply` leaves on every object it applied: the whole object again.
            let applied = deployment.to_string();
            deployment["metadata"]["annotations"] =
                json!({"kubectl.kubernetes.io/last-applied-configuration": applied});
            async move {
                let deployment: Deployment = serde_json::from_value(deployment)
                    .map_err(|e| start_err("a foreign Deployment")(e.to_string()))?;
                api.create(&PostParams::default(), &deployment)
                    .await
                    .map_err(kube_err(format!("creating Deployment {}", deployment.name_any())))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for created in deployments {
        created?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// `--shards K`: one instance against K shards on the same gates, kept apart from the measurements above.

/// Labels a gate for shard `k` (`lockstep run --shard s<k>`).
const SHARD_LABEL: &str = "sharding.lockstep.dev/key";

/// What one lockstep process of a sharded (or single-instance) run cost and did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceResult {
    /// Its `--shard` value; "" for the unsharded instance.
    shard: String,
    peak_rss_mib: f64,
    rss_mib: f64,
    cpu_seconds: f64,
    /// Gates whose status this process wrote.
    gates_written: usize,
    log_warnings: usize,
}

/// One instance or K shards serving the same N gates.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ShardRun {
    gates: usize,
    instances: usize,
    /// First create → every gate seen Ready=True.
    settle_seconds: f64,
    /// Every pipeline gets a run, announced to every instance's receiver (each shard has its own
    /// subscription), then the runs succeed and are announced again: until every gate is Ready again.
    /// `None`: the round did not finish (see stderr).
    hook_round_seconds: Option<f64>,
    /// Deliveries answered 503 and sent again.
    hook_retries: usize,
    /// Gates whose status two processes wrote, and gates written by a process that does not serve them:
    /// both must be 0.
    gates_written_twice: usize,
    gates_written_by_other: usize,
    per_instance: Vec<InstanceResult>,
}

async fn shard_comparison(options: &Options, shards: usize) -> ExitCode {
    let mut runs = Vec::new();
    for &gates in &options.sizes {
        for instances in [1, shards] {
            eprintln!("--- {gates} gates, {instances} instance(s)");
            let dir = match tempfile::Builder::new()
                .prefix("lockstep-bench-shards-")
                .tempdir()
            {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("could not create a temporary directory: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = measure_shards(options, gates, instances, dir.path()).await;
            if let Some(logs) = &options.logs {
                for k in 0..instances {
                    let name = instance_name(instances, k);
                    let kept = logs.join(format!("lockstep-{gates}-{instances}x-{name}.log"));
                    if let Err(e) = std::fs::create_dir_all(logs)
                        .and_then(|()| std::fs::copy(dir.path().join(format!("{name}.log")), &kept))
                    {
                        eprintln!("could not keep the log as {}: {e}", kept.display());
                    }
                }
            }
            match result {
                Ok(run) => {
                    eprintln!("{}", serde_json::to_string(&run).unwrap_or_default());
                    runs.push(run);
                }
                Err(e) => {
                    eprintln!("{gates} gates, {instances} instance(s): {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let machine = Machine::read();
    if options.json {
        let out = json!({"machine": machine, "shards": runs});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", shard_table(&runs));
        println!(
            "\nmachine: {} cores, {} memory, {}",
            machine.cores, machine.memory, machine.cpu
        );
    }
    if runs
        .iter()
        .any(|r| r.gates_written_twice + r.gates_written_by_other > 0)
    {
        eprintln!("a gate was written by two instances, or by one that does not serve it");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn instance_name(instances: usize, k: usize) -> String {
    if instances == 1 {
        "lockstep".to_string()
    } else {
        format!("s{k}")
    }
}

fn shard_table(runs: &[ShardRun]) -> String {
    let mut out = String::from(
        "| gates | instances | settle s | hook round s | peak RSS MiB per instance | vs one instance | CPU s per instance | written twice |\n|---:|---:|---:|---:|---|---:|---|---:|\n",
    );
    for run in runs {
        let single = runs
            .iter()
            .find(|r| r.gates == run.gates && r.instances == 1)
            .and_then(|r| r.per_instance.first())
            .map_or(0.0, |i| i.peak_rss_mib);
        let peaks: Vec<String> = run
            .per_instance
            .iter()
            .map(|i| format!("{:.1}", i.peak_rss_mib))
            .collect();
        let cpus: Vec<String> = run
            .per_instance
            .iter()
            .map(|i| format!("{:.1}", i.cpu_seconds))
            .collect();
        let worst = run
            .per_instance
            .iter()
            .map(|i| i.peak_rss_mib)
            .fold(0.0, f64::max);
        let ratio = if single > 0.0 { worst / single } else { 0.0 };
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {:.2} | {} | {} |\n",
            run.gates,
            run.instances,
            run.settle_seconds,
            run.hook_round_seconds
                .map_or_else(|| "failed".to_string(), |s| format!("{s:.1}")),
            peaks.join(" / "),
            ratio,
            cpus.join(" / "),
            run.gates_written_twice + run.gates_written_by_other,
        ));
    }
    out
}

async fn measure_shards(
    options: &Options,
    gates: usize,
    instances: usize,
    dir: &Path,
) -> Result<ShardRun, BenchError> {
    let pipelines = (gates / GATES_PER_PIPELINE).max(1);
    // Every status write is attributed afterwards, so the log must hold the whole run.
    let Kit {
        emu,
        sim,
        kubeconfig: _,
        client,
        mut sha,
    } = Kit::start(
        dir,
        pipelines,
        EmulatorConfig::default().request_log_capacity(4_000_000),
        &[NAMESPACE],
    )
    .await?;

    // Each process has its own user, so the request log tells their writes apart.
    let mut procs = Vec::new();
    for k in 0..instances {
        let name = instance_name(instances, k);
        let token = format!("bench-token-{name}");
        emu.auth().add_token(&token, &format!("bench-{name}"), &[]);
        let own = dir.join(format!("kubeconfig-{name}"));
        emu.write_kubeconfig_with_token(&own, &token)
            .map_err(|e| start_err("a kubeconfig")(e.to_string()))?;
        let extra = if instances == 1 {
            Vec::new()
        } else {
            vec!["--shard".to_string(), name.clone()]
        };
        procs.push((
            name.clone(),
            Lockstep::start_as(options, dir, &own, &name, &extra).await?,
        ));
    }
    let api: Api<PipelineGate> = Api::namespaced(client.clone(), NAMESPACE);
    let state = SharedSeen::default();
    let watch_task = spawn_watcher(api.clone(), state.clone());
    let owner_of = |i: usize| instance_name(instances, i % instances);

    let org_url = sim.org_url(ORG);
    let started = Instant::now();
    let creates = futures::stream::iter(0..gates)
        .map(|i| {
            let api = api.clone();
            let labels = if instances == 1 {
                json!({})
            } else {
                json!({ SHARD_LABEL: owner_of(i) })
            };
            let gate = json!({
                "apiVersion": "lockstep.dev/v1alpha1", "kind": "PipelineGate",
                "metadata": {"name": gate_name(i), "namespace": NAMESPACE, "labels": labels},
                "spec": {
                    "azureDevOps": {"organizationUrl": org_url, "project": PROJECT,
                                    "credentials": {"secretRef": {"name": "ado-pat", "key": "token"}}},
                    "pipeline": {"definitionId": pipeline_of(i, pipelines), "branch": BRANCH},
                    "interval": IDLE_INTERVAL
                }
            });
            async move {
                let gate: PipelineGate = serde_json::from_value(gate)
                    .map_err(|e| start_err("a gate")(e.to_string()))?;
                api.create(&PostParams::default(), &gate)
                    .await
                    .map_err(kube_err(format!("creating {}", gate.name_any())))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for created in creates {
        created?;
    }
    let first = &procs[0].1;
    let all_ready = |state: &SharedSeen| {
        let count = seen(state).ready_count;
        (count == gates)
            .then_some(())
            .ok_or_else(|| format!("{count} of {gates} Ready"))
    };
    wait_for("all gates Ready", options.settle_timeout, first, || {
        all_ready(&state)
    })
    .await?;
    let settle = started.elapsed();
    quiesce(&emu).await;

    // A hook round: every instance's receiver gets every delivery, as with one subscription per shard.
    let deliveries: Vec<HookDelivery> = procs
        .iter()
        .map(|(_, p)| HookDelivery::to(p.webhook_url.clone()).basic_auth(HOOK_USER, HOOK_PASSWORD))
        .collect();
    let round = Instant::now();
    // On a loaded machine the receivers may not keep up (503 past every retry); the memory figures
    // still stand, so a failed hook round is reported, not fatal.
    let hooked: Result<usize, BenchError> = async {
        let mut runs = Vec::new();
        for p in 1..=pipelines as i64 {
            sha += 1;
            let run = sim.queue_run(ORG, PROJECT, p, BRANCH, &commit(sha));
            sim.start_run(run);
            runs.push(run);
        }
        let mut hook_retries = deliver_everywhere(&sim, &runs, &deliveries).await?;
        wait_for("all gates waiting", Duration::from_secs(120), first, || {
            let count = seen(&state).ready_count;
            (count == 0)
                .then_some(())
                .ok_or_else(|| format!("{count} of {gates} still Ready"))
        })
        .await?;
        for &run in &runs {
            sim.complete_run(run, RunResult::Succeeded);
        }
        hook_retries += deliver_everywhere(&sim, &runs, &deliveries).await?;
        wait_for(
            "all gates Ready again",
            Duration::from_secs(120),
            first,
            || all_ready(&state),
        )
        .await?;
        Ok(hook_retries)
    }
    .await;
    let (hook_round_seconds, hook_retries) = match hooked {
        Ok(retries) => (Some(round.elapsed().as_secs_f64()), retries),
        Err(e) => {
            eprintln!("hook round failed: {e}");
            (None, 0)
        }
    };
    quiesce(&emu).await;
    watch_task.abort();

    if emu.dropped_requests() > 0 {
        return Err(start_err("the request log")(format!(
            "{} records dropped; raise request_log_capacity",
            emu.dropped_requests()
        )));
    }
    // Who wrote each gate's status.
    let prefix = format!("/apis/lockstep.dev/v1alpha1/namespaces/{NAMESPACE}/pipelinegates/");
    let mut writers: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
    for r in emu.requests().iter().filter(|r| is_write(r)) {
        if let Some(name) = r
            .path
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix("/status"))
        {
            writers
                .entry(name.to_string())
                .or_default()
                .insert(r.client.clone());
        }
    }
    let gates_written_twice = writers.values().filter(|w| w.len() > 1).count();
    let gates_written_by_other = (0..gates)
        .filter(|&i| {
            writers.get(&gate_name(i)).is_some_and(|w| {
                w.iter()
                    .any(|c| *c != format!("user:bench-{}", owner_of(i)))
            })
        })
        .count();
    let mut per_instance = Vec::new();
    for (name, proc) in procs {
        let (peak_rss_mib, rss_mib, cpu_seconds) = proc.usage();
        let client = format!("user:bench-{name}");
        per_instance.push(InstanceResult {
            shard: if instances == 1 { String::new() } else { name },
            peak_rss_mib,
            rss_mib,
            cpu_seconds,
            gates_written: writers.values().filter(|w| w.contains(&client)).count(),
            log_warnings: proc.warnings(),
        });
        proc.stop().await;
    }
    Ok(ShardRun {
        gates,
        instances,
        settle_seconds: settle.as_secs_f64(),
        hook_round_seconds,
        hook_retries,
        gates_written_twice,
        gates_written_by_other,
        per_instance,
    })
}

/// One `run-state-changed` delivery per run to every receiver, 2 at a time. A 503 (the receiver could
/// not annotate every object within its deadline, on a loaded machine) is retried a second later, as
/// Azure DevOps retries it, at most [`HOOK_ATTEMPTS`] times; returns how many retries it took.
async fn deliver_everywhere(
    sim: &AdoSimulator,
    runs: &[i64],
    deliveries: &[HookDelivery],
) -> Result<usize, BenchError> {
    let all: Vec<(i64, &HookDelivery)> = runs
        .iter()
        .flat_map(|&run| deliveries.iter().map(move |d| (run, d)))
        .collect();
    let results = futures::stream::iter(all)
        .map(|(run, delivery)| async move {
            let mut retries = 0;
            loop {
                match deliver(sim, run, delivery).await {
                    Err(BenchError::HookRejected(503)) if retries + 1 < HOOK_ATTEMPTS => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    // A receiver whose shard serves none of the run's gates answers 200 "ignored";
                    // a retry of an event whose 503'd attempt finished after all, 200 "duplicate".
                    // Either way the delivery was processed.
                    Err(BenchError::HookRejected(200)) => return Ok(retries),
                    other => return other.map(|()| retries),
                }
            }
        })
        .buffer_unordered(2)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().sum()
}

const HOOK_ATTEMPTS: usize = 10;
