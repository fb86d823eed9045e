//! `lockstep run`: the operator process. Kubernetes client, Azure DevOps client, metrics and probes,
//! optional leader election, the controllers, and shutdown on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::ado::{AdoClient, AdoError, ClientConfig};
use crate::api::{ApiCaches, ApiServer, Authenticator, CacheSlot};
use crate::crd::{PipelineGate, ServiceTrace};
use crate::entra::{AzureEnv, EntraClient, EntraClientConfig, EntraContext};
use crate::hooks::health::HookHealthConfig;
use crate::hooks::setup::HooksSetupConfig;
use crate::hooks::{HooksClient, HooksError};
use crate::leader::{self, shutdown_requested, LeaseConfig};
use crate::nudge::NudgeConfig;
use crate::ops_server::{serve_ops, Liveness, Readiness};
use crate::poll_cache::PollCache;
use crate::proxy::{Outbound, ProxyEnv};
use crate::reconciler::{
    scoped, FirstList, HintLog, HookRelay, ReconcilerConfig, Shared, WebhookHints,
};
use crate::shard::Sharding;
use crate::telemetry::{
    init_logging, AdoRequestMetrics, HookMetrics, LogFormat, Metrics, WebhookMetrics,
};
use crate::webhook::{
    feed_from_watchers, AllowlistError, AuthConfigError, HintIndex, ServeError,
    SubscriptionAllowlist, WebhookAuth, WebhookAuthFlags, WebhookConfig, WebhookServer,
    WebhookState, RELOAD_INTERVAL,
};
use crate::{pipeline_gate, service_trace};

/// How long in-flight work may take after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// User-Agent of lockstep's Kubernetes requests.
const KUBE_USER_AGENT: &str = concat!("lockstep/", env!("CARGO_PKG_VERSION"));

/// Flags of `lockstep run`; each also reads `LOCKSTEP_<NAME>`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "LOCKSTEP_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address for /metrics, /healthz and /readyz. Port 0 picks a free port (logged at start-up).
    #[arg(long, env = "LOCKSTEP_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address for the Azure DevOps service-hook receiver. Port 0 picks a free port (logged at start-up).
    #[arg(long, env = "LOCKSTEP_WEBHOOK_ADDR", default_value = "0.0.0.0:9292")]
    pub webhook_addr: SocketAddr,
    /// Run the controllers only while holding a coordination.k8s.io/v1 Lease.
    #[arg(long, env = "LOCKSTEP_LEADER_ELECTION")]
    pub leader_election: bool,
    /// The Lease's name (default: `lockstep-leader`, or one derived from --shard or
    /// --watch-label-selector, so each shard elects its own leader; see docs/sharding.md).
    #[arg(long, env = "LOCKSTEP_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Serve only the PipelineGates and ServiceTraces labelled `sharding.lockstep.dev/key: SHARD` (a
    /// label value). Without this flag and --watch-label-selector, lockstep serves only the objects
    /// without that label, so adding shards never makes two instances serve one object.
    #[arg(long, env = "LOCKSTEP_SHARD", conflicts_with = "watch_label_selector")]
    pub shard: Option<String>,
    /// Serve only the PipelineGates and ServiceTraces this Kubernetes label selector matches, instead of
    /// --shard. Keeping selectors of several instances disjoint is then the operator's duty.
    #[arg(long, env = "LOCKSTEP_WATCH_LABEL_SELECTOR")]
    pub watch_label_selector: Option<String>,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long, env = "LOCKSTEP_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease stays valid without renewal: the longest a standby waits after the leader died.
    #[arg(long, env = "LOCKSTEP_LEASE_DURATION", value_parser = crate::crd::parse_duration_flag, default_value = "15s")]
    pub lease_duration: kube::core::Duration,
    #[arg(long, env = "LOCKSTEP_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub webhook_auth: WebhookAuthFlags,
    /// Accept deliveries only from these service-hook subscription ids (comma-separated or repeated),
    /// as a second factor beside the credentials; others are answered 401. Empty: any subscription.
    #[arg(
        long,
        env = "LOCKSTEP_WEBHOOK_ALLOWED_SUBSCRIPTIONS",
        value_delimiter = ','
    )]
    pub webhook_allowed_subscriptions: Vec<String>,
    /// Polling period while a run is queued or in progress.
    #[arg(long, env = "LOCKSTEP_FAST_INTERVAL", value_parser = crate::crd::parse_duration_flag, default_value = "10s")]
    pub fast_interval: kube::core::Duration,
    /// While service hooks for an organization+project are arriving (an accepted delivery within the last
    /// hour, none missed since), idle objects there (no run in flight) poll at most this many times their
    /// `interval` apart, on the same grid. 1 turns it off. Bounded by half of staleAfter and by one hour.
    #[arg(long, env = "LOCKSTEP_IDLE_POLL_STRETCH", default_value_t = crate::reconciler::idle::DEFAULT_STRETCH,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::reconciler::idle::MAX_STRETCH)))]
    pub idle_poll_stretch: u32,
    /// How long one Builds List answer is shared between objects following the same pipeline. Capped at
    /// half of --fast-interval, so a waiting gate never acts on an answer older than its own period.
    #[arg(long, env = "LOCKSTEP_POLL_CACHE_TTL", value_parser = crate::crd::parse_duration_flag, default_value = "5s")]
    pub poll_cache_ttl: kube::core::Duration,
    /// Nudge when a gate opens unless its spec.nudge.enabled says otherwise (issue 18).
    #[arg(long, env = "LOCKSTEP_NUDGE_DEFAULT")]
    pub nudge_default: bool,
    /// Nudge Flux Kustomizations (needs RBAC patch on kustomizations.kustomize.toolkit.fluxcd.io).
    #[arg(long, env = "LOCKSTEP_NUDGE_FLUX", default_value_t = true, action = clap::ArgAction::Set)]
    pub nudge_flux: bool,
    /// Nudge Argo CD Applications (needs RBAC patch on applications.argoproj.io).
    #[arg(long, env = "LOCKSTEP_NUDGE_ARGOCD", default_value_t = true, action = clap::ArgAction::Set)]
    pub nudge_argocd: bool,
    /// How often to read the service-hook subscriptions of the organizations gates use (metric,
    /// status.hooks, Events); 0s turns the check off. Needs the PAT's Service Hooks (read) scope.
    #[arg(long, env = "LOCKSTEP_HOOK_HEALTH_INTERVAL", default_value = "5m")]
    pub hook_health_interval: kube::core::Duration,
    /// The receiver's public URL as subscriptions name it; only those count for status.hooks (default:
    /// any Web Hooks subscription).
    #[arg(long, env = "LOCKSTEP_HOOKS_URL")]
    pub hooks_url: Option<String>,
    /// Set up the service hooks from the controller (leader only): on start and every
    /// --hooks-sync-interval, create the subscriptions the gates and traces need, pointing at --hooks-url
    /// with the receiver's credentials, and re-enable disabled ones, as `lockstep hooks sync` does. Uses
    /// the objects' own credentials, which then need Service Hooks (read & write). Off by default.
    #[arg(long, env = "LOCKSTEP_HOOKS_SYNC")]
    pub hooks_sync: bool,
    /// Period of --hooks-sync (at least 1s, at most 24h).
    #[arg(long, env = "LOCKSTEP_HOOKS_SYNC_INTERVAL", value_parser = crate::crd::parse_duration_flag, default_value = "10m")]
    pub hooks_sync_interval: kube::core::Duration,
    /// Namespace of Argo CD's Applications when a gate's tracking id names none.
    #[arg(long, env = "LOCKSTEP_ARGOCD_NAMESPACE", default_value = "argocd")]
    pub argocd_namespace: String,
    /// PEM file of CA certificates trusted besides the system's, for Azure DevOps and the Entra token
    /// endpoint (an Azure DevOps Server or a TLS-inspecting proxy with a private CA).
    #[arg(long, env = "LOCKSTEP_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// The managed identity token endpoint (IMDS); only tests and unusual networks change it.
    #[arg(
        long,
        env = "LOCKSTEP_IMDS_ENDPOINT",
        default_value = crate::entra::DEFAULT_IMDS_ENDPOINT
    )]
    pub imds_endpoint: url::Url,
    /// Address of the read API and dashboard (off unless set). Port 0 picks a free port (logged).
    #[arg(long, env = "LOCKSTEP_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// File holding the API's static bearer token, for callers without a Kubernetes token (Azure DevOps
    /// checks): read-only access to every gate and trace lockstep watches.
    #[arg(long, env = "LOCKSTEP_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
}

/// Why `lockstep run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "could not configure the Kubernetes client ({0}): set KUBECONFIG or run inside a cluster"
    )]
    KubeConfig(#[source] kube::Error),
    #[error("could not set up the Azure DevOps client: {0}")]
    AdoClient(#[source] AdoError),
    #[error("invalid proxy or CA settings: {0}")]
    Outbound(String),
    #[error("invalid Microsoft Entra ID settings: {0}")]
    Entra(String),
    #[error("could not listen on {addr} for metrics and probes: {source}; pick a free address with --metrics-addr")]
    MetricsListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid webhook credentials: {0}")]
    WebhookAuth(#[source] AuthConfigError),
    #[error("could not set up the service-hooks client: {0}")]
    HooksClient(#[source] HooksError),
    #[error("--hooks-sync needs {0}")]
    HooksSync(&'static str),
    #[error("invalid --webhook-allowed-subscriptions: {0}")]
    WebhookAllowlist(#[source] AllowlistError),
    #[error(transparent)]
    WebhookServe(#[from] ServeError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiStartError),
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
    #[error("could not install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// A duration flag, saturated into `min..=max`: no flag value may make later arithmetic overflow (a
/// requeue, a lease renewal) or the controllers poll in a loop.
fn std_duration(d: kube::core::Duration, min: Duration, max: Duration) -> Duration {
    Duration::from(d).clamp(min, max)
}

/// This replica's name: the pod name in a cluster, else host and process id (two local replicas differ).
fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        if !pod.is_empty() {
            return pod;
        }
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "lockstep".to_string());
    format!("{host}-{}", std::process::id())
}

/// lockstep's own namespace (where the webhook Secret lives): `$POD_NAMESPACE` (the chart sets it), else
/// the client's default (the in-cluster service account's namespace, or the kubeconfig context's).
fn own_namespace(client: &kube::Client) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string())
}

/// Flip `shutdown` to true on the first SIGTERM or SIGINT.
fn spawn_signal_handler(shutdown: watch::Sender<bool>) -> Result<(), RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = which, "shutting down");
        let _ = shutdown.send(true);
    });
    Ok(())
}

/// The PipelineGate and ServiceTrace controllers side by side, both stopping on `stop`. A controller
/// that ends before `stop` resolved (its stream ended, for whatever reason) fails `liveness`. With
/// `hooks`, the hook-health check and the hook set-up run beside them (they write status and
/// subscriptions, so only where the controllers run: on the leader).
/// With `api_caches`, each controller publishes its store there for the read API.
async fn run_controllers(
    shared: Shared,
    liveness: Liveness,
    hooks: Option<HookTasks>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    api_caches: Option<ApiCaches>,
) {
    use futures::FutureExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = {
        let stopping = stopping.clone();
        async move {
            stop.await;
            stopping.store(true, Ordering::Release);
        }
        .shared()
    };
    let supervised =
        |what: &'static str,
         controller: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            let (stopping, liveness) = (stopping.clone(), liveness.clone());
            async move {
                controller.await;
                if !stopping.load(Ordering::Acquire) {
                    liveness.fail(format!("the {what} controller stopped on its own"));
                }
            }
        };
    let mut hook_tasks = Vec::new();
    if let Some(tasks) = hooks {
        if let Some(config) = tasks.health {
            hook_tasks.push(tokio::spawn(crate::hooks::health::run(
                shared.client.clone(),
                tasks.client.clone(),
                shared.entra.clone(),
                tasks.metrics.clone(),
                config,
                stop.clone(),
            )));
        }
        if let Some((config, receiver)) = tasks.setup {
            hook_tasks.push(tokio::spawn(crate::hooks::setup::run(
                shared.client.clone(),
                tasks.client,
                shared.entra.clone(),
                tasks.metrics,
                receiver,
                config,
                stop.clone(),
            )));
        }
    }
    // Each controller reports its own first list; the process is ready only when both have listed, so
    // a replica never answers /readyz while one kind is still unknown to it.
    let (gates_listed, traces_listed) = (Readiness::default(), Readiness::default());
    let both_listed = {
        let (gates, traces, process) = (
            gates_listed.clone(),
            traces_listed.clone(),
            shared.readiness.clone(),
        );
        tokio::spawn(async move {
            while !(gates.is_ready() && traces.is_ready()) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            process.set_ready(true);
        })
    };
    let gate_shared = Shared {
        readiness: gates_listed,
        ..shared.clone()
    };
    let trace_shared = Shared {
        readiness: traces_listed,
        ..shared
    };
    futures::join!(
        supervised(
            "PipelineGate",
            Box::pin(pipeline_gate::controller::run(
                gate_shared,
                stop.clone(),
                api_caches.as_ref().map(|c| c.gates.clone())
            ))
        ),
        supervised(
            "ServiceTrace",
            Box::pin(service_trace::controller::run(
                trace_shared,
                stop,
                api_caches.map(|c| c.traces)
            ))
        ),
    );
    both_listed.abort();
    for task in hook_tasks {
        let _ = task.await;
    }
}

/// The receiver, the watches feeding its index, and what the reconcilers read from it.
struct RunningWebhook {
    server: WebhookServer,
    /// The credentials in force, shared with the receiver (the hook set-up writes them into
    /// subscriptions).
    auth: WebhookAuth,
    feed: tokio::task::JoinHandle<()>,
    /// Re-reads the credential files; `None` when no credential comes from a file.
    reloader: Option<tokio::task::JoinHandle<()>>,
    hints: WebhookHints,
}

/// Start the service-hook receiver on `--webhook-addr`, with an index of gates and traces fed by its own
/// watches. It runs on every replica (the Service may route a delivery to a standby); the annotation it
/// writes reaches whichever replica leads. Without any credentials configured it is not started: an open
/// endpoint would let anyone trigger reads, and polling alone still keeps every object correct.
async fn start_webhook(
    args: &RunArgs,
    sharding: &Sharding,
    client: &kube::Client,
    registry: &mut Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<RunningWebhook>, RunError> {
    // The one path from flags to the receiver's policy, the one its tests exercise.
    let namespace = own_namespace(client);
    let auth = match WebhookAuth::from_run_flags(&args.webhook_auth, client, &namespace).await {
        Ok(Some(auth)) => auth,
        Ok(None) => {
            warn!("no webhook credentials configured (--webhook-username/--webhook-password-file or --webhook-token-file): webhook receiver disabled, relying on polling");
            return Ok(None);
        }
        Err(e) => return Err(RunError::WebhookAuth(e)),
    };
    let allowed_subscriptions = SubscriptionAllowlist::parse(&args.webhook_allowed_subscriptions)
        .map_err(RunError::WebhookAllowlist)?;
    if allowed_subscriptions.is_enforced() {
        info!(
            subscriptions = allowed_subscriptions.len(),
            "webhook receiver accepts listed subscriptions only"
        );
    }
    if !auth.is_enforced() {
        warn!(
            "webhook receiver accepts unauthenticated deliveries (--webhook-allow-unauthenticated)"
        );
    }
    let reloader = auth.spawn_reloader(RELOAD_INTERVAL, shutdown_requested(shutdown.clone()));
    let index = Arc::new(HintIndex::new());
    // The index knows this shard's objects only: a delivery annotates the gates and traces this instance
    // serves, and a shard's receiver gets its own subscriptions (docs/sharding.md).
    let feed = tokio::spawn(feed_from_watchers(
        scoped(client, &args.namespace),
        scoped(client, &args.namespace),
        sharding.watcher_config(),
        index.clone(),
    ));
    let metrics = WebhookMetrics::register(registry);
    let gate_relay = Arc::new(HookRelay::new());
    let state = WebhookState::with_config(
        client.clone(),
        index.clone(),
        auth.clone(),
        metrics.clone(),
        WebhookConfig {
            allowed_subscriptions,
            gate_relay: Some(gate_relay.clone()),
            ..WebhookConfig::default()
        },
    );
    let server =
        crate::webhook::serve(args.webhook_addr, state, shutdown_requested(shutdown)).await?;
    Ok(Some(RunningWebhook {
        server,
        auth,
        feed,
        reloader,
        hints: WebhookHints {
            gate_relay,
            ..WebhookHints::new(index, metrics)
        },
    }))
}

/// The reconcilers read the receiver's index through [`HintLog`], so they need not know the receiver.
impl HintLog for HintIndex {
    fn last_hint(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<std::time::Instant> {
        self.last_hint_by_name(kind, namespace, name)
    }
}

/// The service-hook tasks of the controllers: the hook-health check and the hook set-up.
#[derive(Clone)]
struct HookTasks {
    client: HooksClient,
    metrics: HookMetrics,
    /// `None` when `--hook-health-interval 0s` turned the check off.
    health: Option<HookHealthConfig>,
    /// `Some` with `--hooks-sync`: its settings and the receiver's credentials.
    setup: Option<(HooksSetupConfig, WebhookAuth)>,
}

/// The hook tasks' client and settings; `None` when neither runs.
fn start_hooks(
    args: &RunArgs,
    sharding: &Sharding,
    registry: &mut Registry,
    identity: &str,
    receiver: Option<&WebhookAuth>,
) -> Result<Option<HookTasks>, RunError> {
    let interval = std_duration(
        args.hook_health_interval,
        Duration::ZERO,
        crate::crd::MAX_SPEC_DURATION,
    );
    let health = (!interval.is_zero()).then(|| HookHealthConfig {
        interval,
        receiver_url: args.hooks_url.clone(),
        namespace: args.namespace.clone(),
        sharding: sharding.clone(),
        identity: identity.to_string(),
    });
    let setup = if args.hooks_sync {
        let url = args
            .hooks_url
            .clone()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or(RunError::HooksSync(
                "--hooks-url, the receiver's public http(s) URL the subscriptions post to",
            ))?;
        let receiver = receiver.cloned().ok_or(RunError::HooksSync(
            "the receiver running: configure its credentials (--webhook-username/--webhook-password-file or --webhook-token-file)",
        ))?;
        let config = HooksSetupConfig {
            interval: std_duration(
                args.hooks_sync_interval,
                Duration::from_secs(1),
                Duration::from_secs(24 * 3600),
            ),
            url,
            namespace: args.namespace.clone(),
            sharding: sharding.clone(),
            identity: identity.to_string(),
        };
        Some((config, receiver))
    } else {
        None
    };
    if health.is_none() && setup.is_none() {
        return Ok(None);
    }
    Ok(Some(HookTasks {
        client: HooksClient::new().map_err(RunError::HooksClient)?,
        metrics: HookMetrics::register(registry),
        health,
        setup,
    }))
}

/// Resolves when the task ends (never when there is none).
async fn task_end<T>(
    task: Option<&mut tokio::task::JoinHandle<T>>,
) -> Result<(), tokio::task::JoinError> {
    match task {
        Some(task) => task.await.map(|_| ()),
        None => std::future::pending().await,
    }
}

/// The read API, and where its caches come from.
struct RunningApi {
    server: ApiServer,
    /// The caches the controllers fill (no leader election); `None` when the API keeps its own.
    controller_caches: Option<ApiCaches>,
    /// The API's own watches (leader election), stopped at shutdown.
    feeds: Vec<tokio::task::JoinHandle<()>>,
}

/// A reflector over `api` that fills `slot`, for replicas whose controllers may not run.
fn own_reflector<K>(
    api: kube::Api<K>,
    sharding: &Sharding,
    slot: Arc<CacheSlot<K>>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + crate::reconciler::runtime::CacheCompact
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    let (store, writer) = kube::runtime::reflector::store();
    let listed = FirstList::watch(store.clone(), "objects for the API");
    slot.publish(store, Arc::new(move || listed.is_done()));
    let config = sharding.watcher_config();
    tokio::spawn(async move {
        let watch = kube::runtime::watcher(api, config)
            .modify(K::compact_for_cache)
            .default_backoff();
        kube::runtime::reflector(writer, watch)
            .for_each(|_| async {})
            .await;
    })
}

/// Start the read API and dashboard on `--api-addr`. Without leader election it serves the controllers'
/// reflector stores, which the controllers publish as they start. With leader election a standby runs no
/// controller, so the API keeps its own watch of both kinds and every replica can answer.
async fn start_api(
    args: &RunArgs,
    sharding: &Sharding,
    client: &kube::Client,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<RunningApi>, RunError> {
    let Some(addr) = args.api_addr else {
        return Ok(None);
    };
    let static_token = args
        .api_token_file
        .as_deref()
        .map(crate::api::read_token_file)
        .transpose()?;
    let caches = ApiCaches::new();
    let (controller_caches, feeds) = if args.leader_election {
        let feeds = vec![
            own_reflector(
                scoped::<PipelineGate>(client, &args.namespace),
                sharding,
                caches.gates.clone(),
            ),
            own_reflector(
                scoped::<ServiceTrace>(client, &args.namespace),
                sharding,
                caches.traces.clone(),
            ),
        ];
        (None, feeds)
    } else {
        (Some(caches.clone()), Vec::new())
    };
    let auth = Authenticator::new(static_token, Some(client.clone()));
    let server = crate::api::serve(addr, caches, auth, shutdown).await?;
    Ok(Some(RunningApi {
        server,
        controller_caches,
        feeds,
    }))
}

/// Where `lockstep run` listens, with port 0 resolved to the port the system picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundAddrs {
    /// `/metrics`, `/healthz` and `/readyz`.
    pub metrics: SocketAddr,
    /// The service-hook receiver; `None` when it is disabled (no webhook credentials configured).
    pub webhook: Option<SocketAddr>,
    /// The read API and dashboard; `None` unless `--api-addr` is set.
    pub api: Option<SocketAddr>,
}

/// The Kubernetes client, from KUBECONFIG or the in-cluster config. kube-rs sends no User-Agent of its
/// own; naming ourselves makes lockstep's requests attributable in API server audit logs and metrics.
///
/// The proxy is decided by lockstep for the API server's URL (see [`crate::proxy`]): kube-rs would
/// apply `HTTPS_PROXY` even when `NO_PROXY` covers the API server.
async fn kube_client(proxy: &ProxyEnv) -> Result<kube::Client, RunError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| RunError::KubeConfig(kube::Error::InferConfig(e)))?;
    proxy.apply_to_kube(&mut config, |k| std::env::var(k).ok());
    if let Some(p) = &config.proxy_url {
        info!(api_server = %config.cluster_url, proxy = %format!("{}:{}", p.host().unwrap_or("?"), p.port_u16().unwrap_or(0)), "Kubernetes API through a proxy");
    }
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(KUBE_USER_AGENT),
    ));
    kube::Client::try_from(config).map_err(RunError::KubeConfig)
}

/// Run the operator until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    run_with(args, |_| {}).await
}

/// [`run`] for in-process callers (the demo, tests): `on_bound` gets the listening addresses once both
/// servers are bound and before any controller starts, so a caller can pass port 0 and still reach them.
pub async fn run_with(args: RunArgs, on_bound: impl FnOnce(BoundAddrs)) -> Result<(), RunError> {
    init_logging(args.log_format);
    let sharding =
        Sharding::from_flags(args.shard.as_deref(), args.watch_label_selector.as_deref())?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    spawn_signal_handler(shutdown_tx)?;

    let outbound = Outbound::from_env(args.ca_file.as_deref()).map_err(RunError::Outbound)?;
    if !outbound.proxy.is_empty() {
        info!(proxy = %outbound.proxy.describe(), "proxy settings from the environment");
    }
    let client = kube_client(&outbound.proxy).await?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let entra_client = EntraClient::new(EntraClientConfig {
        imds_endpoint: args.imds_endpoint.clone(),
        outbound: outbound.clone(),
        ..EntraClientConfig::default()
    })
    .map_err(RunError::Entra)?;
    let azure_env = AzureEnv::from_env();
    azure_env.authority().map_err(RunError::Entra)?;
    let entra = Arc::new(EntraContext::new(entra_client, azure_env));
    let ado = AdoClient::new(ClientConfig {
        outbound,
        ..ClientConfig::default()
    })
    .map_err(RunError::AdoClient)?
    .with_observer(Arc::new(AdoRequestMetrics(metrics.clone())));
    let fast_interval = std_duration(
        args.fast_interval,
        Duration::from_secs(1),
        crate::crd::MAX_SPEC_DURATION,
    );
    let cache_ttl = std_duration(args.poll_cache_ttl, Duration::ZERO, fast_interval / 2);
    let readiness = Readiness::default();
    let liveness = Liveness::default();

    let webhook = start_webhook(&args, &sharding, &client, &mut registry, shutdown.clone()).await?;
    let api = start_api(&args, &sharding, &client, shutdown.clone()).await?;
    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| RunError::MetricsListen {
            addr: args.metrics_addr,
            source,
        })?;
    let metrics_addr = listener
        .local_addr()
        .map_err(|source| RunError::MetricsListen {
            addr: args.metrics_addr,
            source,
        })?;
    info!(addr = %metrics_addr, "metrics server listening");
    on_bound(BoundAddrs {
        metrics: metrics_addr,
        webhook: webhook.as_ref().map(|w| w.server.local_addr()),
        api: api.as_ref().map(|a| a.server.local_addr()),
    });
    let hook_tasks = start_hooks(
        &args,
        &sharding,
        &mut registry,
        &identity(),
        webhook.as_ref().map(|w| &w.auth),
    )?;
    let ops = tokio::spawn(serve_ops(
        listener,
        Arc::new(registry),
        readiness.clone(),
        liveness.clone(),
        shutdown_requested(shutdown.clone()),
    ));

    let shared = Shared {
        client: client.clone(),
        ado,
        cache: Arc::new(PollCache::new(cache_ttl)),
        entra,
        metrics,
        config: ReconcilerConfig {
            fast_interval,
            secret_cache_ttl: cache_ttl,
            idle_poll_stretch: args.idle_poll_stretch,
            nudge: NudgeConfig {
                default_enabled: args.nudge_default,
                flux: args.nudge_flux,
                argocd: args.nudge_argocd,
                argocd_namespace: args.argocd_namespace.clone(),
                watch_namespace: args.namespace.clone(),
            },
            ..ReconcilerConfig::default()
        },
        namespace: args.namespace.clone(),
        sharding: sharding.clone(),
        identity: identity(),
        readiness: readiness.clone(),
        webhook_hints: webhook.as_ref().map(|w| w.hints.clone()),
    };
    let api_caches = api.as_ref().and_then(|a| a.controller_caches.clone());
    info!(
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        identity = %shared.identity,
        fast_interval_s = fast_interval.as_secs_f64(),
        poll_cache_ttl_s = cache_ttl.as_secs_f64(),
        idle_poll_stretch = args.idle_poll_stretch,
        leader_election = args.leader_election,
        shard = %sharding.describe(),
        label_selector = %sharding.label_selector(),
        "starting lockstep"
    );

    let controllers = {
        let shutdown = shutdown.clone();
        let controllers_liveness = liveness.clone();
        async move {
            if args.leader_election {
                let lease = LeaseConfig {
                    name: sharding.lease_name(args.lease_name.as_deref()),
                    namespace: args
                        .lease_namespace
                        .clone()
                        .or_else(|| {
                            std::env::var("POD_NAMESPACE")
                                .ok()
                                .filter(|n| !n.is_empty())
                        })
                        .unwrap_or_else(|| "default".to_string()),
                    identity: shared.identity.clone(),
                    duration: std_duration(
                        args.lease_duration,
                        Duration::from_secs(2),
                        Duration::from_secs(3600),
                    ),
                };
                let standby_readiness = readiness.clone();
                leader::run_elected(
                    client,
                    lease,
                    shutdown,
                    // A standby is ready: it serves probes and waits; readiness means "first list done"
                    // only for the replica that reconciles.
                    move || standby_readiness.set_ready(true),
                    |stop| {
                        readiness.set_ready(false);
                        run_controllers(
                            shared.clone(),
                            controllers_liveness.clone(),
                            hook_tasks.clone(),
                            stop,
                            None,
                        )
                    },
                )
                .await;
            } else {
                run_controllers(
                    shared,
                    controllers_liveness,
                    hook_tasks,
                    leader::sync_signal(shutdown_requested(shutdown)),
                    api_caches,
                )
                .await;
            }
        }
    };

    let mut controllers = tokio::spawn(controllers);
    let (mut webhook_server, mut webhook_feed, webhook_reloader) = match webhook {
        Some(w) => (
            Some(tokio::spawn(w.server.wait())),
            Some(w.feed),
            w.reloader,
        ),
        None => (None, None, None),
    };
    // Every long-lived task runs until shutdown; one that ends before (a panic, a stream that ended, the
    // leader loop giving up) leaves a process that answers probes but does nothing, so /healthz fails.
    let mut controllers_done = false;
    {
        tokio::select! {
            () = shutdown_requested(shutdown.clone()) => {}
            ended = &mut controllers => {
                controllers_done = true;
                let how = ended.err().map_or_else(|| "ended".to_string(), |e| format!("failed: {e}"));
                liveness.fail(format!("the controllers task {how}"));
            }
            ended = task_end(webhook_server.as_mut()) => {
                let how = ended.err().map_or_else(|| "stopped".to_string(), |e| format!("failed: {e}"));
                liveness.fail(format!("the webhook receiver {how}"));
                webhook_server = None;
            }
            ended = task_end(webhook_feed.as_mut()) => {
                let how = ended.err().map_or_else(|| "ended".to_string(), |e| format!("failed: {e}"));
                liveness.fail(format!("the webhook index watches {how}"));
                webhook_feed = None;
            }
        }
    }
    shutdown_requested(shutdown.clone()).await;
    // In-flight reconciles finish (graceful_shutdown_on), the Lease is released, servers drain; a stuck
    // API server must not keep the process alive past the grace period (the kubelet would SIGKILL it).
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        if !controllers_done {
            let _ = controllers.await;
        }
        let _ = ops.await;
        if let Some(api) = api {
            for feed in api.feeds {
                feed.abort();
            }
            if let Err(e) = api.server.wait().await {
                warn!(error = %e, "API server");
            }
        }
        if let Some(feed) = webhook_feed {
            feed.abort();
        }
        if let Some(reloader) = webhook_reloader {
            reloader.abort();
        }
        if let Some(server) = webhook_server {
            match server.await {
                Ok(Err(e)) => warn!(error = %e, "webhook receiver"),
                Err(e) => warn!(error = %e, "webhook receiver task"),
                Ok(Ok(())) => {}
            }
        }
    })
    .await;
    if drained.is_err() {
        error!(
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "shutdown took too long; exiting anyway"
        );
    }
    info!("stopped");
    Ok(())
}
