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
use crate::leader::{self, shutdown_requested, LeaseConfig};
use crate::ops_server::{serve_ops, Readiness};
use crate::poll_cache::PollCache;
use crate::reconciler::{scoped, FirstList, HintLog, ReconcilerConfig, Shared, WebhookHints};
use crate::telemetry::{init_logging, AdoRequestMetrics, LogFormat, Metrics, WebhookMetrics};
use crate::webhook::{
    feed_from_watchers, AuthConfigError, HintIndex, ServeError, WebhookAuth, WebhookServer,
    WebhookState,
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
    #[arg(long, env = "LOCKSTEP_LEASE_NAME", default_value = "lockstep-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else "default").
    #[arg(long, env = "LOCKSTEP_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease stays valid without renewal: the longest a standby waits after the leader died.
    #[arg(long, env = "LOCKSTEP_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: kube::core::Duration,
    #[arg(long, env = "LOCKSTEP_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Username expected in the HTTP Basic credentials of service hooks.
    #[arg(long, env = "LOCKSTEP_WEBHOOK_USERNAME")]
    pub webhook_username: Option<String>,
    /// File holding the HTTP Basic password of service hooks (mounted from a Secret).
    #[arg(long, env = "LOCKSTEP_WEBHOOK_PASSWORD_FILE")]
    pub webhook_password_file: Option<PathBuf>,
    /// File holding the shared header token of service hooks (mounted from a Secret).
    #[arg(long, env = "LOCKSTEP_WEBHOOK_TOKEN_FILE")]
    pub webhook_token_file: Option<PathBuf>,
    #[arg(
        long,
        env = "LOCKSTEP_WEBHOOK_TOKEN_HEADER",
        default_value = "X-Lockstep-Token"
    )]
    pub webhook_token_header: String,
    /// Accept service hooks without credentials; only behind something that authenticates for you.
    #[arg(long, env = "LOCKSTEP_WEBHOOK_ALLOW_UNAUTHENTICATED")]
    pub webhook_allow_unauthenticated: bool,
    /// Polling period while a run is queued or in progress.
    #[arg(long, env = "LOCKSTEP_FAST_INTERVAL", default_value = "10s")]
    pub fast_interval: kube::core::Duration,
    /// How long one Builds List answer is shared between objects following the same pipeline. Capped at
    /// half of --fast-interval, so a waiting gate never acts on an answer older than its own period.
    #[arg(long, env = "LOCKSTEP_POLL_CACHE_TTL", default_value = "5s")]
    pub poll_cache_ttl: kube::core::Duration,
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
    #[error("could not listen on {addr} for metrics and probes: {source}; pick a free address with --metrics-addr")]
    MetricsListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid webhook credentials: {0}")]
    WebhookAuth(#[source] AuthConfigError),
    #[error(transparent)]
    WebhookServe(#[from] ServeError),
    #[error(transparent)]
    Api(#[from] crate::api::ApiStartError),
    #[error("could not install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

fn std_duration(d: kube::core::Duration) -> Duration {
    Duration::from(d)
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

/// The PipelineGate and ServiceTrace controllers side by side, both stopping on `stop`.
///
/// With `api_caches`, each controller publishes its store there for the read API.
async fn run_controllers(
    shared: Shared,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    api_caches: Option<ApiCaches>,
) {
    use futures::FutureExt as _;
    let stop = stop.shared();
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
        pipeline_gate::controller::run(
            gate_shared,
            stop.clone(),
            api_caches.as_ref().map(|c| c.gates.clone())
        ),
        service_trace::controller::run(trace_shared, stop, api_caches.map(|c| c.traces)),
    );
    both_listed.abort();
}

/// The receiver, the watches feeding its index, and what the reconcilers read from it.
struct RunningWebhook {
    server: WebhookServer,
    feed: tokio::task::JoinHandle<()>,
    hints: WebhookHints,
}

/// Start the service-hook receiver on `--webhook-addr`, with an index of gates and traces fed by its own
/// watches. It runs on every replica (the Service may route a delivery to a standby); the annotation it
/// writes reaches whichever replica leads. Without any credentials configured it is not started: an open
/// endpoint would let anyone trigger reads, and polling alone still keeps every object correct.
async fn start_webhook(
    args: &RunArgs,
    client: &kube::Client,
    registry: &mut Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<RunningWebhook>, RunError> {
    let auth = match WebhookAuth::from_files(
        args.webhook_username.as_deref(),
        args.webhook_password_file.as_deref(),
        args.webhook_token_file.as_deref(),
        Some(&args.webhook_token_header),
    ) {
        Ok(auth) => auth,
        Err(AuthConfigError::NothingConfigured) if args.webhook_allow_unauthenticated => {
            warn!("webhook receiver accepts unauthenticated deliveries (--webhook-allow-unauthenticated)");
            WebhookAuth::allow_unauthenticated()
        }
        Err(AuthConfigError::NothingConfigured) => {
            warn!("no webhook credentials configured (--webhook-username/--webhook-password-file or --webhook-token-file): webhook receiver disabled, relying on polling");
            return Ok(None);
        }
        Err(e) => return Err(RunError::WebhookAuth(e)),
    };
    let index = Arc::new(HintIndex::new());
    let feed = tokio::spawn(feed_from_watchers(
        scoped(client, &args.namespace),
        scoped(client, &args.namespace),
        kube::runtime::watcher::Config::default().any_semantic(),
        index.clone(),
    ));
    let metrics = WebhookMetrics::register(registry);
    let state = WebhookState::new(client.clone(), index.clone(), auth, metrics.clone());
    let server =
        crate::webhook::serve(args.webhook_addr, state, shutdown_requested(shutdown)).await?;
    Ok(Some(RunningWebhook {
        server,
        feed,
        hints: WebhookHints {
            log: index,
            metrics,
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

/// The read API, and where its caches come from.
struct RunningApi {
    server: ApiServer,
    /// The caches the controllers fill (no leader election); `None` when the API keeps its own.
    controller_caches: Option<ApiCaches>,
    /// The API's own watches (leader election), stopped at shutdown.
    feeds: Vec<tokio::task::JoinHandle<()>>,
}

/// A reflector over `api` that fills `slot`, for replicas whose controllers may not run.
fn own_reflector<K>(api: kube::Api<K>, slot: Arc<CacheSlot<K>>) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    use kube::ResourceExt as _;
    let (store, writer) = kube::runtime::reflector::store();
    let listed = FirstList::watch(store.clone(), "objects for the API");
    slot.publish(store, Arc::new(move || listed.is_done()));
    tokio::spawn(async move {
        let watch = kube::runtime::watcher(
            api,
            kube::runtime::watcher::Config::default().any_semantic(),
        )
        .modify(|o| o.managed_fields_mut().clear())
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
                caches.gates.clone(),
            ),
            own_reflector(
                scoped::<ServiceTrace>(client, &args.namespace),
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
async fn kube_client() -> Result<kube::Client, RunError> {
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| RunError::KubeConfig(kube::Error::InferConfig(e)))?;
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
    let (shutdown_tx, shutdown) = watch::channel(false);
    spawn_signal_handler(shutdown_tx)?;

    let client = kube_client().await?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ado = AdoClient::new(ClientConfig::default())
        .map_err(RunError::AdoClient)?
        .with_observer(Arc::new(AdoRequestMetrics(metrics.clone())));
    let fast_interval = std_duration(args.fast_interval);
    let cache_ttl = std_duration(args.poll_cache_ttl).min(fast_interval / 2);
    let readiness = Readiness::default();

    let webhook = start_webhook(&args, &client, &mut registry, shutdown.clone()).await?;
    let api = start_api(&args, &client, shutdown.clone()).await?;
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
    let ops = tokio::spawn(serve_ops(
        listener,
        Arc::new(registry),
        readiness.clone(),
        shutdown_requested(shutdown.clone()),
    ));

    let shared = Shared {
        client: client.clone(),
        ado,
        cache: Arc::new(PollCache::new(cache_ttl)),
        metrics,
        config: ReconcilerConfig {
            fast_interval,
            secret_cache_ttl: cache_ttl,
            ..ReconcilerConfig::default()
        },
        namespace: args.namespace.clone(),
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
        leader_election = args.leader_election,
        "starting lockstep"
    );

    let controllers = {
        let shutdown = shutdown.clone();
        async move {
            if args.leader_election {
                let lease = LeaseConfig {
                    name: args.lease_name.clone(),
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
                    duration: std_duration(args.lease_duration),
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
                        run_controllers(shared.clone(), stop, None)
                    },
                )
                .await;
            } else {
                run_controllers(
                    shared,
                    leader::sync_signal(shutdown_requested(shutdown)),
                    api_caches,
                )
                .await;
            }
        }
    };

    let controllers = tokio::spawn(controllers);
    shutdown_requested(shutdown.clone()).await;
    // In-flight reconciles finish (graceful_shutdown_on), the Lease is released, servers drain; a stuck
    // API server must not keep the process alive past the grace period (the kubelet would SIGKILL it).
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = controllers.await;
        let _ = ops.await;
        if let Some(api) = api {
            for feed in api.feeds {
                feed.abort();
            }
            if let Err(e) = api.server.wait().await {
                warn!(error = %e, "API server");
            }
        }
        if let Some(webhook) = webhook {
            webhook.feed.abort();
            if let Err(e) = webhook.server.wait().await {
                warn!(error = %e, "webhook receiver");
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
