//! `cargo run --example demo [-- --hold]`: lockstep end to end, with no cluster and no Azure DevOps account.
//!
//! Starts the test kit's Kubernetes API emulator and Azure DevOps simulator in this process, runs the real
//! controller (`lockstep run`, the same entry point as the binary) against them, applies
//! `examples/pipelinegate.yaml` (pointed at the simulator), and drives the base pipeline through
//! queued → running → failed → re-run (queued → running) → succeeded. The re-run's first step reaches the
//! controller as an Azure DevOps service hook; every other step is found by polling. The gate's changes are
//! printed the way `kubectl get pipelinegates -w` prints them, then its Events.
//!
//! Exits 0 when every transition was seen, 1 when one was not seen in time (or something failed to start),
//! 2 on a usage error. `--hold` keeps everything running after the scenario, for kubectl, until Ctrl-C.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use lockstep::crd::PipelineGate;
use lockstep::pipeline_key::OrgKey;
use lockstep::run::{RunArgs, RunError};
use lockstep_testkit::ado::{AdoSimulator, HookDelivery, HookEvent, RunResult};
use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
use tokio::sync::mpsc;

/// The example the demo applies, exactly as users read it.
const EXAMPLE: &str = include_str!("pipelinegate.yaml");
const EXAMPLE_PATH: &str = "examples/pipelinegate.yaml";
/// The PAT the simulator accepts; it replaces the example's `<your PAT>`.
const DEMO_PAT: &str = "demo-pat-3c9f2a71";
const HOOK_USER: &str = "lockstep-demo";
const HOOK_PASSWORD: &str = "demo-hook-password-81d4";
/// The pipeline's name in the simulator (the example's comment calls it "base-image").
const PIPELINE_NAME: &str = "base-image";
const FIRST_COMMIT: &str = "1f0c3e5a9b7d2c4e6f8a0b1c3d5e7f9a1b2c3d4e";
const FIX_COMMIT: &str = "7a2b9c4d1e6f3a8b5c0d7e2f9a4b1c6d3e8f5a0b";
/// Polling while a run is in flight: fast, so the demo takes seconds.
const FAST_INTERVAL: &str = "1s";
/// Polling while idle: long, so that only the webhook can explain how fast the failed gate sees the re-run.
const IDLE_INTERVAL: &str = "10m";
/// How long each transition may take before the demo gives up (generous for a loaded machine).
const TRANSITION_DEADLINE: Duration = Duration::from_secs(30);
/// The controller counts as quiet once it made no Azure DevOps request for this long.
const QUIET_FOR: Duration = Duration::from_millis(1500);

#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("could not start {what}: {detail}")]
    Start { what: &'static str, detail: String },
    #[error("{EXAMPLE_PATH} no longer fits the demo: {0}; update the demo's adaptation step")]
    Example(String),
    #[error("the Kubernetes API emulator refused {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} was not seen within {}s; the gate's last row was: {last}. Rerun with RUST_LOG=info to see the controller's logs", within.as_secs())]
    NotSeen {
        what: String,
        within: Duration,
        last: String,
    },
    #[error("the controller kept polling Azure DevOps while the gate was idle, so the webhook step would prove nothing; rerun with RUST_LOG=info to see why it polls")]
    NeverQuiet,
    #[error("the webhook receiver answered the service hook with HTTP {0} instead of 202")]
    HookRejected(u16),
    #[error("the service hook could not be delivered to {url} ({detail}); is lockstep's webhook receiver running? Rerun with RUST_LOG=info")]
    HookUndelivered { url: String, detail: String },
    #[error("the controller stopped before the demo finished: {0}")]
    ControllerStopped(String),
    #[error("the watch on the gate ended unexpectedly")]
    WatchEnded,
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Kube { what, source }
}

fn start_err(what: &'static str) -> impl FnOnce(String) -> DemoError {
    move |detail| DemoError::Start { what, detail }
}

struct Options {
    hold: bool,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
        let mut options = Options { hold: false };
        for arg in args {
            match arg.as_str() {
                "--hold" => options.hold = true,
                "-h" | "--help" => {
                    return Err("usage: cargo run --example demo [-- --hold]\n  --hold  keep the emulator, the simulator and the controller up after the scenario, until Ctrl-C".into())
                }
                other => return Err(format!("unknown argument {other:?}; try --help")),
            }
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let dir = match tempfile::Builder::new().prefix("lockstep-demo-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("demo failed: could not create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `lockstep run` finds its cluster through KUBECONFIG and its log level through RUST_LOG. Both are set
    // here, before the runtime starts any thread; the file itself is written once the emulator listens.
    // The demo never touches the user's cluster, and LOCKSTEP_* settings from their shell (leader election,
    // a namespace, ...) do not leak into the demo's controller.
    std::env::set_var("KUBECONFIG", dir.path().join("kubeconfig"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LOCKSTEP_") {
            std::env::remove_var(name);
        }
    }
    if std::env::var_os("RUST_LOG").is_none() {
        // Warnings and errors only, on stderr: the table on stdout stays readable.
        std::env::set_var("RUST_LOG", "warn");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("demo failed: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut doubles = None;
    let outcome = runtime.block_on(run_demo(&options, dir.path(), &mut doubles));
    // The controller's tasks end with the runtime; the test doubles only after them, so the controller
    // never sees its API server vanish (and says so in a warning) while the demo exits.
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(doubles);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `lockstep run`'s flags, parsed the way the binary parses them.
#[derive(Parser)]
#[command(name = "lockstep run")]
struct ControllerFlags {
    #[command(flatten)]
    run: RunArgs,
}

/// The in-process Kubernetes API and Azure DevOps.
struct TestDoubles {
    emulator: KubeEmulator,
    simulator: AdoSimulator,
}

async fn run_demo(
    options: &Options,
    dir: &Path,
    doubles: &mut Option<TestDoubles>,
) -> Result<(), DemoError> {
    let started = Instant::now();
    let example = Example::parse(EXAMPLE)?;

    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let emulator = KubeEmulator::start(EmulatorConfig::default().crds_dir(crds))
        .await
        .map_err(|e| start_err("the Kubernetes API emulator")(e.to_string()))?;
    let kubeconfig = PathBuf::from(std::env::var_os("KUBECONFIG").unwrap_or_default());
    emulator
        .write_kubeconfig(&kubeconfig)
        .map_err(|e| start_err("the kubeconfig")(e.to_string()))?;
    let simulator = AdoSimulator::start()
        .await
        .map_err(|e| start_err("the Azure DevOps simulator")(e.to_string()))?;
    let TestDoubles {
        emulator,
        simulator,
    } = &*doubles.insert(TestDoubles {
        emulator,
        simulator,
    });
    let pipeline = &example.pipeline;
    simulator.add_token(&pipeline.org, DEMO_PAT);
    simulator.add_project(&pipeline.org, &pipeline.project);
    simulator.add_definition(
        &pipeline.org,
        &pipeline.project,
        pipeline.definition_id,
        PIPELINE_NAME,
    );

    let password_file = dir.join("webhook-password");
    std::fs::write(&password_file, HOOK_PASSWORD)
        .map_err(|e| start_err("the webhook password file")(e.to_string()))?;
    let flags = ControllerFlags::try_parse_from([
        "lockstep run",
        "--namespace",
        &example.namespace,
        "--metrics-addr",
        "127.0.0.1:0",
        "--webhook-addr",
        "127.0.0.1:0",
        "--webhook-username",
        HOOK_USER,
        "--webhook-password-file",
        &password_file.to_string_lossy(),
        "--fast-interval",
        FAST_INTERVAL,
        "--log-format",
        "text",
    ])
    .map_err(|e| start_err("the controller")(e.to_string()))?;

    println!("lockstep demo: the real controller against an in-process Kubernetes API and a simulated Azure DevOps");
    println!(
        "  kubeconfig      {}   (`cargo run --example demo -- --hold` keeps it up)",
        kubeconfig.display()
    );
    println!(
        "  try meanwhile   KUBECONFIG={} kubectl -n {} get pipelinegates -w",
        kubeconfig.display(),
        example.namespace
    );
    println!(
        "  Azure DevOps    {} (project {}, pipeline {} \"{PIPELINE_NAME}\", branch {})",
        simulator.org_url(&pipeline.org),
        pipeline.project,
        pipeline.definition_id,
        pipeline.branch
    );

    // Port 0: `lockstep run` reports where it listens, so nothing can take the port in between.
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let controller = lockstep::run::run_with(flags.run, move |bound| {
        let _ = bound_tx.send(bound);
    });
    tokio::pin!(controller);
    let bound = tokio::select! {
        // The controller first: when it failed to start, its error says why, not the dropped sender.
        biased;
        ended = &mut controller => return Err(controller_stopped(ended)),
        bound = bound_rx => bound.map_err(|_| {
            start_err("the controller")("it stopped before listening".to_string())
        })?,
    };
    let webhook_addr = bound.webhook.ok_or_else(|| {
        start_err("the webhook receiver")(
            "lockstep run did not start it; the demo passes Basic credentials, so this is a bug"
                .to_string(),
        )
    })?;
    let webhook_url = format!("http://{webhook_addr}{}", lockstep::webhook::HOOK_PATH);
    println!(
        "  lockstep run    --namespace {} --fast-interval {FAST_INTERVAL}, service hooks at {webhook_url} (Basic auth)",
        example.namespace
    );
    println!(
        "  controller logs on stderr, RUST_LOG={}",
        std::env::var("RUST_LOG").unwrap_or_default()
    );
    println!();

    let scenario = Scenario {
        client: emulator.client().await,
        simulator,
        example: &example,
        webhook_url: &webhook_url,
        started,
    };
    tokio::select! {
        ended = &mut controller => return Err(controller_stopped(ended)),
        outcome = scenario.play() => outcome?,
    }

    if options.hold {
        println!();
        println!("--hold: everything stays up until Ctrl-C. Try:");
        println!(
            "  KUBECONFIG={} kubectl -n {} describe pipelinegate {}",
            kubeconfig.display(),
            example.namespace,
            example.gate.name_any()
        );
        let _ = std::io::stdout().flush();
        // `lockstep run` stops itself on Ctrl-C (SIGINT), like the binary does.
        if let Err(e) = controller.await {
            eprintln!("controller: {e}");
        }
    }
    Ok(())
}

fn controller_stopped(ended: Result<(), RunError>) -> DemoError {
    DemoError::ControllerStopped(match ended {
        Ok(()) => "it was interrupted".to_string(),
        Err(e) => e.to_string(),
    })
}

/// What the example gate follows.
struct Pipeline {
    org: String,
    project: String,
    definition_id: i64,
    branch: String,
}

/// `examples/pipelinegate.yaml`, adapted to the simulator: the Secret carries the simulator's PAT, the gate
/// points at the simulator, and its idle interval is long (see [`IDLE_INTERVAL`]).
struct Example {
    namespace: String,
    secret: Secret,
    gate: PipelineGate,
    /// What the gate follows; the simulator is set up to serve it.
    pipeline: Pipeline,
    /// The example's own organization URL, before it is pointed at the simulator.
    original_org_url: String,
    original_interval: String,
}

impl Example {
    fn parse(yaml: &str) -> Result<Example, DemoError> {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml)
            .map_err(|e| DemoError::Example(format!("it is not valid YAML ({e})")))?;
        let mut secret: Option<Secret> = None;
        let mut gate: Option<PipelineGate> = None;
        let mut original_interval = "(default)".to_string();
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            match doc.get("kind").and_then(|k| k.as_str()) {
                Some("Secret") => {
                    secret = Some(serde_json::from_value(doc).map_err(|e| {
                        DemoError::Example(format!("its Secret does not parse ({e})"))
                    })?)
                }
                Some("PipelineGate") => {
                    // As written (1m), not as kube's Duration prints it back (60s).
                    if let Some(interval) = doc.pointer("/spec/interval").and_then(|i| i.as_str()) {
                        original_interval = interval.to_string();
                    }
                    gate = Some(serde_json::from_value(doc).map_err(|e| {
                        DemoError::Example(format!("its PipelineGate does not parse ({e})"))
                    })?)
                }
                _ => {}
            }
        }
        let mut secret = secret.ok_or_else(|| DemoError::Example("it has no Secret".into()))?;
        let mut gate = gate.ok_or_else(|| DemoError::Example("it has no PipelineGate".into()))?;
        let namespace = gate
            .namespace()
            .ok_or_else(|| DemoError::Example("its PipelineGate has no namespace".into()))?;
        let secret_ref = &gate.spec.azure_devops.credentials.secret_ref;
        if secret.name_any() != secret_ref.name || secret.namespace().as_ref() != Some(&namespace) {
            return Err(DemoError::Example(format!(
                "its Secret is not {namespace}/{}, the one the gate reads",
                secret_ref.name
            )));
        }
        secret.data = None;
        secret.string_data = Some(BTreeMap::from([(
            secret_ref.key.clone(),
            DEMO_PAT.to_string(),
        )]));
        let original_org_url = gate.spec.azure_devops.organization_url.clone();
        // https://dev.azure.com/contoso and https://contoso.visualstudio.com -> contoso: the simulator serves
        // organizations in the dev.azure.com path style. A Server collection (host/collection) has no such
        // name.
        let org = OrgKey::from_url(&original_org_url)
            .map(|key| key.as_str().to_string())
            .filter(|org| !org.contains('/'))
            .ok_or_else(|| {
                DemoError::Example(format!(
                    "its organizationUrl {original_org_url:?} names no Azure DevOps Services organization"
                ))
            })?;
        let spec = &gate.spec;
        let pipeline = Pipeline {
            org,
            project: spec.azure_devops.project.clone(),
            definition_id: spec.pipeline.definition_id,
            branch: spec.pipeline.branch.clone(),
        };
        gate.spec.interval = Some(
            IDLE_INTERVAL
                .parse()
                .map_err(|e| DemoError::Example(format!("bad idle interval ({e})")))?,
        );
        Ok(Example {
            namespace,
            secret,
            gate,
            pipeline,
            original_org_url,
            original_interval,
        })
    }
}

/// One row of `kubectl get pipelinegates -w`, and what the demo needs to know about it.
#[derive(Clone, Debug)]
struct GateView {
    cells: Row,
    run_id: Option<i64>,
    requested_at: Option<String>,
    created: Option<jiff::Timestamp>,
    seen: Instant,
}

/// The printed columns except AGE (which changes on its own).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    name: String,
    ready: String,
    reason: String,
    run: String,
    commit: String,
}

impl GateView {
    fn of(gate: &PipelineGate) -> GateView {
        let status = gate.status.as_ref();
        let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        let latest = status.and_then(|s| s.latest_run.as_ref());
        GateView {
            cells: Row {
                name: gate.name_any(),
                ready: ready.map(|c| c.status.clone()).unwrap_or_default(),
                reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
                run: latest
                    .and_then(|r| r.build_number.clone())
                    .unwrap_or_default(),
                commit: latest.and_then(|r| r.commit.clone()).unwrap_or_default(),
            },
            run_id: latest.map(|r| r.id),
            requested_at: gate
                .annotations()
                .get(lockstep::crd::REQUESTED_AT_ANNOTATION)
                .cloned(),
            created: gate.creation_timestamp().map(|t| t.0),
            seen: Instant::now(),
        }
    }

    fn is(&self, reason: &str, run_id: i64) -> bool {
        self.cells.reason == reason && self.run_id == Some(run_id)
    }
}

impl fmt::Display for GateView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let age = self
            .created
            .map(|c| human_age(jiff::Timestamp::now().as_second() - c.as_second()))
            .unwrap_or_default();
        let c = &self.cells;
        write!(
            f,
            "{:<14}{:<8}{:<16}{:<14}{:<10}{age}",
            c.name, c.ready, c.reason, c.run, c.commit
        )
    }
}

const HEADER: &str = "NAME          READY   REASON          RUN           COMMIT    AGE";

/// Prints every change of the gate's row, like `kubectl get -w`, and passes each printed row on.
async fn watch_gate(api: Api<PipelineGate>, name: String, rows: mpsc::UnboundedSender<GateView>) {
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut last: Option<Row> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(gate) if gate.name_any() == name => {
                let view = GateView::of(&gate);
                if last.as_ref() != Some(&view.cells) {
                    println!("{view}");
                    last = Some(view.cells.clone());
                    if rows.send(view).is_err() {
                        return;
                    }
                }
            }
            Ok(_) => {}
            // The watcher retries with backoff; say so, once per error, without stopping.
            Err(e) => println!("# (watch interrupted: {e}; retrying)"),
        }
    }
}

/// The scripted pipeline history, and the checks that the gate followed it.
struct Scenario<'a> {
    client: kube::Client,
    simulator: &'a AdoSimulator,
    example: &'a Example,
    webhook_url: &'a str,
    started: Instant,
}

impl Scenario<'_> {
    async fn play(self) -> Result<(), DemoError> {
        let example = self.example;
        let ns = &example.namespace;
        let gate_name = example.gate.name_any();
        let pipeline = &example.pipeline;
        let sim = self.simulator;
        let gates: Api<PipelineGate> = Api::namespaced(self.client.clone(), ns);

        let (tx, mut rows) = mpsc::unbounded_channel();
        println!("{HEADER}");
        tokio::spawn(watch_gate(gates.clone(), gate_name.clone(), tx));

        // 1. A run is queued before the gate exists; the gate's first reconcile finds it.
        let first = sim.queue_run(
            &pipeline.org,
            &pipeline.project,
            pipeline.definition_id,
            &pipeline.branch,
            FIRST_COMMIT,
        );
        note(&format!(
            "Azure DevOps: run {} of \"{PIPELINE_NAME}\" queued on {} (commit {})",
            self.build_number(first),
            pipeline.branch,
            short(FIRST_COMMIT)
        ));
        note(&format!(
            "kubectl apply -f {EXAMPLE_PATH}   (organizationUrl {} -> the simulator, token -> its PAT, interval {} -> {IDLE_INTERVAL})",
            example.original_org_url, example.original_interval
        ));
        self.apply_example().await?;
        let applied = Instant::now();
        let view = await_row(&mut rows, "RunQueued for the first run", |v| {
            v.is(REASON_QUEUED, first)
        })
        .await?;
        took(
            &view,
            applied,
            "the gate's first reconcile, after it was created",
        );

        // 2.-3. The run starts and fails; the controller polls every FAST_INTERVAL while it is in flight.
        sim.start_run(first);
        let changed = Instant::now();
        note(&format!(
            "Azure DevOps: run {} started",
            self.build_number(first)
        ));
        let view = await_row(&mut rows, "RunInProgress for the first run", |v| {
            v.is(REASON_IN_PROGRESS, first)
        })
        .await?;
        took(&view, changed, POLLED);

        sim.complete_run(first, RunResult::Failed);
        let changed = Instant::now();
        note(&format!(
            "Azure DevOps: run {} failed",
            self.build_number(first)
        ));
        let view = await_row(&mut rows, "RunFailed for the first run", |v| {
            v.is(REASON_FAILED, first) && v.cells.ready == "False"
        })
        .await?;
        took(&view, changed, POLLED);

        // 4. The re-run is queued while the gate is idle (next poll in IDLE_INTERVAL). Azure DevOps tells
        //    lockstep through a service hook: job-state-changed, the job is waiting for an agent.
        self.wait_until_quiet().await?;
        let rerun = sim.queue_run(
            &pipeline.org,
            &pipeline.project,
            pipeline.definition_id,
            &pipeline.branch,
            FIX_COMMIT,
        );
        note(&format!(
            "Azure DevOps: a fix is pushed (commit {}); run {} queued; service hook job-state-changed -> lockstep",
            short(FIX_COMMIT),
            self.build_number(rerun)
        ));
        let delivered = Instant::now();
        let outcome = sim
            .deliver_hook(
                HookEvent::JobStateChanged { run_id: rerun },
                &HookDelivery::to(self.webhook_url).basic_auth(HOOK_USER, HOOK_PASSWORD),
            )
            .await
            .map_err(|e| DemoError::HookUndelivered {
                url: self.webhook_url.to_string(),
                detail: e.to_string(),
            })?;
        if outcome.status != 202 {
            return Err(DemoError::HookRejected(outcome.status));
        }
        let view = await_row(&mut rows, "RunQueued for the re-run", |v| {
            v.is(REASON_QUEUED, rerun)
        })
        .await?;
        let marked = if view.requested_at.is_some() {
            "; the receiver marked the gate with lockstep.dev/requested-at"
        } else {
            ""
        };
        note(&format!(
            "  ^ by webhook: {} ms after the delivery (HTTP 202){marked}; idle polling would have taken up to {IDLE_INTERVAL}",
            view.seen.duration_since(delivered).as_millis()
        ));

        // 5.-6. The re-run starts and succeeds: the gate opens.
        sim.start_run(rerun);
        let changed = Instant::now();
        note(&format!(
            "Azure DevOps: run {} started",
            self.build_number(rerun)
        ));
        let view = await_row(&mut rows, "RunInProgress for the re-run", |v| {
            v.is(REASON_IN_PROGRESS, rerun)
        })
        .await?;
        took(&view, changed, POLLED);

        sim.complete_run(rerun, RunResult::Succeeded);
        let changed = Instant::now();
        note(&format!(
            "Azure DevOps: run {} succeeded",
            self.build_number(rerun)
        ));
        let view = await_row(&mut rows, "Succeeded (Ready=True) for the re-run", |v| {
            v.is(REASON_SUCCEEDED, rerun) && v.cells.ready == "True"
        })
        .await?;
        took(&view, changed, POLLED);

        self.print_events(&gate_name).await?;
        println!();
        println!(
            "All transitions seen in {:.1}s: RunQueued -> RunInProgress -> RunFailed -> RunQueued (webhook) -> RunInProgress -> Succeeded.",
            self.started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        Ok(())
    }

    fn build_number(&self, run_id: i64) -> String {
        self.simulator
            .run(run_id)
            .map(|r| r.build_number)
            .unwrap_or_else(|| format!("#{run_id}"))
    }

    async fn apply_example(&self) -> Result<(), DemoError> {
        let ns = &self.example.namespace;
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
        }))
        .map_err(|e| DemoError::Example(e.to_string()))?;
        let pp = PostParams::default();
        Api::<Namespace>::all(self.client.clone())
            .create(&pp, &namespace)
            .await
            .map_err(kube_err(format!("namespace {ns}")))?;
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .create(&pp, &self.example.secret)
            .await
            .map_err(kube_err(format!("the Secret of {EXAMPLE_PATH}")))?;
        let mut gate = self.example.gate.clone();
        gate.spec.azure_devops.organization_url =
            self.simulator.org_url(&self.example.pipeline.org);
        Api::<PipelineGate>::namespaced(self.client.clone(), ns)
            .create(&pp, &gate)
            .await
            .map_err(kube_err(format!("the PipelineGate of {EXAMPLE_PATH}")))?;
        Ok(())
    }

    /// Waits until the controller has made no Azure DevOps request for [`QUIET_FOR`]: from then on only
    /// the idle interval, or a webhook, makes it look again.
    async fn wait_until_quiet(&self) -> Result<(), DemoError> {
        let deadline = Instant::now() + TRANSITION_DEADLINE;
        let mut count = self.simulator.requests().len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.simulator.requests().len();
            if now != count {
                count = now;
                since = Instant::now();
            } else if since.elapsed() >= QUIET_FOR {
                return Ok(());
            }
        }
        Err(DemoError::NeverQuiet)
    }

    /// The gate's Events, as the Events section of `kubectl describe` shows them. The controller
    /// publishes an Event right after it writes the status, so the last one may trail the last row.
    async fn print_events(&self, gate_name: &str) -> Result<(), DemoError> {
        let events: Api<KubeEvent> = Api::namespaced(self.client.clone(), &self.example.namespace);
        let deadline = Instant::now() + EVENTS_DEADLINE;
        let list = loop {
            let mut list: Vec<KubeEvent> = events
                .list(&ListParams::default())
                .await
                .map_err(kube_err("listing Events"))?
                .items
                .into_iter()
                .filter(|e| {
                    e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some("PipelineGate")
                            && r.name.as_deref() == Some(gate_name)
                    })
                })
                .collect();
            list.sort_by_key(first_seen);
            let opened = list
                .iter()
                .any(|e| e.reason.as_deref() == Some(OPENED_EVENT));
            if opened || Instant::now() >= deadline {
                break list;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!();
        println!(
            "Events of pipelinegate/{gate_name}, as `kubectl -n {} describe pipelinegate {gate_name}` shows them:",
            self.example.namespace
        );
        let now = jiff::Timestamp::now();
        let mut table = vec![
            ["Type", "Reason", "Age", "From", "Message"].map(String::from),
            ["----", "------", "----", "----", "-------"].map(String::from),
        ];
        table.extend(list.iter().map(|e| {
            [
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                event_age(e, now),
                e.reporting_controller.clone().unwrap_or_default(),
                e.note.clone().unwrap_or_default(),
            ]
        }));
        for line in aligned(&table) {
            println!("  {line}");
        }
        if list.is_empty() {
            println!("  <none>");
        }
        Ok(())
    }
}

/// How long the demo waits for the controller's last Event after the gate opened.
const EVENTS_DEADLINE: Duration = Duration::from_secs(10);
const OPENED_EVENT: &str = "GateOpened";

fn first_seen(e: &KubeEvent) -> Option<jiff::Timestamp> {
    e.event_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.deprecated_first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// kubectl's Age cell: `4s`, or `4s (x3 over 9s)` for an Event series.
fn event_age(e: &KubeEvent, now: jiff::Timestamp) -> String {
    let age = |t: jiff::Timestamp| human_age(now.as_second() - t.as_second());
    let first = first_seen(e).map(age).unwrap_or_default();
    match &e.series {
        Some(series) if series.count > 1 => format!(
            "{} (x{} over {first})",
            age(series.last_observed_time.0),
            series.count
        ),
        _ => first,
    }
}

/// Columns padded to their widest cell plus two spaces, like kubectl's tabwriter.
fn aligned<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == N {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}", width = widths[i] + 2));
                }
            }
            line
        })
        .collect()
}

const REASON_QUEUED: &str = "RunQueued";
const REASON_IN_PROGRESS: &str = "RunInProgress";
const REASON_FAILED: &str = "RunFailed";
const REASON_SUCCEEDED: &str = "Succeeded";
const POLLED: &str = "polled (every 1s while a run is in flight)";

/// Waits for a row that satisfies `wanted`, up to [`TRANSITION_DEADLINE`].
async fn await_row(
    rows: &mut mpsc::UnboundedReceiver<GateView>,
    what: &str,
    wanted: impl Fn(&GateView) -> bool,
) -> Result<GateView, DemoError> {
    let deadline = tokio::time::sleep(TRANSITION_DEADLINE);
    tokio::pin!(deadline);
    let mut last: Option<GateView> = None;
    loop {
        tokio::select! {
            row = rows.recv() => match row {
                Some(view) if wanted(&view) => return Ok(view),
                Some(view) => last = Some(view),
                None => return Err(DemoError::WatchEnded),
            },
            _ = &mut deadline => {
                return Err(DemoError::NotSeen {
                    what: what.to_string(),
                    within: TRANSITION_DEADLINE,
                    last: last.map(|v| v.to_string()).unwrap_or_else(|| "(none since the last step)".into()),
                })
            }
        }
    }
}

/// A narration line between the table rows, marked like a shell comment.
fn note(text: &str) {
    println!("# {text}");
}

fn took(view: &GateView, since: Instant, how: &str) {
    note(&format!(
        "  ^ {how}: {} ms",
        view.seen.duration_since(since).as_millis()
    ));
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Ages the way kubectl prints them (the apiserver's HumanDuration), up to days.
fn human_age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 600 => match s % 60 {
            0 => format!("{}m", s / 60),
            rest => format!("{}m{rest}s", s / 60),
        },
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => match (s / 60) % 60 {
            0 => format!("{}h", s / 3600),
            rest => format!("{}h{rest}m", s / 3600),
        },
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        for (seconds, age) in [
            (-5, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (3 * 86400, "3d"),
        ] {
            assert_eq!(human_age(seconds), age, "{seconds}s");
        }
    }

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let rows = [
            ["Type", "Reason", "Message"].map(String::from),
            ["Warning", "GateBlocked", "Run 1 failed"].map(String::from),
        ];
        assert_eq!(
            aligned(&rows),
            [
                "Type     Reason       Message",
                "Warning  GateBlocked  Run 1 failed"
            ]
        );
    }

    #[test]
    fn the_shipped_example_is_adapted_to_the_simulator() {
        let example = Example::parse(EXAMPLE).expect("examples/pipelinegate.yaml fits the demo");
        assert_eq!(example.namespace, "orders");
        let token = example
            .secret
            .string_data
            .as_ref()
            .and_then(|d| d.get("token"));
        assert_eq!(token.map(String::as_str), Some(DEMO_PAT));
        assert!(example.secret.data.is_none());
        assert_eq!(
            example.gate.spec.interval.map(std::time::Duration::from),
            Some(Duration::from_secs(600))
        );
        assert_eq!(example.original_interval, "1m");
        assert_eq!(example.original_org_url, "https://dev.azure.com/contoso");
        let pipeline = &example.pipeline;
        assert_eq!(
            (
                pipeline.org.as_str(),
                pipeline.project.as_str(),
                pipeline.definition_id,
                pipeline.branch.as_str()
            ),
            ("contoso", "Shop", 183, "develop")
        );
    }

    #[test]
    fn an_example_the_demo_cannot_serve_is_refused() {
        let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: orders}\nstringData: {token: x}\n";
        let gate = EXAMPLE
            .split("---\n")
            .find(|doc| doc.contains("kind: PipelineGate"))
            .expect("the example has a gate");
        for (yaml, complaint) in [
            (secret.to_string(), "no PipelineGate"),
            (format!("{secret}---\n{gate}"), "not orders/ado-pat"),
            ("kind: [".to_string(), "not valid YAML"),
            (
                EXAMPLE.replace(
                    "https://dev.azure.com/contoso",
                    "https://tfs.corp/DefaultCollection",
                ),
                "names no Azure DevOps Services organization",
            ),
        ] {
            match Example::parse(&yaml) {
                Err(DemoError::Example(message)) => {
                    assert!(message.contains(complaint), "{message}")
                }
                Err(other) => panic!("wrong error for {complaint}: {other}"),
                Ok(_) => panic!("accepted an example with {complaint}"),
            }
        }
    }

    #[test]
    fn options_accept_only_hold() {
        let parse = |args: &[&str]| Options::parse(args.iter().map(|a| a.to_string()));
        assert!(!parse(&[]).expect("no arguments").hold);
        assert!(parse(&["--hold"]).expect("--hold").hold);
        assert!(parse(&["--help"]).is_err());
        assert!(parse(&["--fast"])
            .err()
            .is_some_and(|e| e.contains("--fast")));
    }
}
