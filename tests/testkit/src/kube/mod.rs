//! An in-process Kubernetes API server for tests, strict enough that what passes against it passes against
//! a real apiserver: discovery (legacy and aggregated v2, OpenAPI v3 for kubectl), CRUD with optimistic
//! concurrency, server-side apply with managedFields and conflicts, status subresources, finalizers,
//! namespace termination, watches with bookmarks and `410 Expired`, CRD schema validation, pruning,
//! defaulting (on writes and, as the CRD storage codec does, on every read) and CEL rules, server-side printing (Tables), and fault injection. Works unchanged with
//! `kube::Client` and `kubectl` through the kubeconfig it writes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lockstep_testkit::kube::{EmulatorConfig, KubeEmulator};
//! let emu = KubeEmulator::start(EmulatorConfig::default().crds_dir("crds")).await?;
//! let client = emu.client().await; // a kube::Client, default namespace "default"
//! emu.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?; // for kubectl / the operator binary
//! emu.faults().fail_next(1, 500); // the next request gets a 500 Status
//! emu.faults().expire_watch_window(); // resuming watches get 410 Expired and must relist
//! let patches = emu.requests().iter().filter(|r| r.method == "PATCH").count();
//! # let _ = (client, patches); Ok(()) }
//! ```
//!
//! The server runs on its own thread and runtime, so tests may block (e.g. run `kubectl` with
//! `std::process::Command`) without starving it. Deliberate differences from a cluster: no controllers
//! (Deployments do not roll out, ownerReferences are not garbage-collected), no authentication or RBAC
//! enforcement (TokenReview and SubjectAccessReview answer from the tokens and grants a test registers),
//! protobuf request bodies only for Namespace, Secret and ConfigMap, and a watch from a resourceVersion
//! newer than the server's fails at once (504) instead of after the watch cache's 3-second wait.

mod auth;
mod builtin;
mod cel;
mod control;
mod discovery;
mod events;
mod faults;
mod managed;
mod patch;
mod protobuf;
mod resources;
mod reviews;
mod schema;
mod selectors;
mod server;
mod status;
mod store;
mod table;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::TestkitError;
use auth::AuthState;
pub use auth::{Grant, UserInfo};
use faults::FaultState;
pub use faults::{ActiveFault, FaultRule};
use server::{lock, Shared};
use store::{Store, WriteOptions};

/// How to start a [`KubeEmulator`].
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    crd_paths: Vec<PathBuf>,
    bookmark_interval: Duration,
    watch_history: usize,
    request_log_capacity: usize,
}

/// How many request records the log keeps by default; older ones are dropped and counted.
pub const DEFAULT_REQUEST_LOG_CAPACITY: usize = 100_000;

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            crd_paths: Vec::new(),
            bookmark_interval: Duration::from_secs(5),
            watch_history: 10_000,
            request_log_capacity: DEFAULT_REQUEST_LOG_CAPACITY,
        }
    }
}

impl EmulatorConfig {
    /// Registers every CRD in `*.yaml`/`*.yml` files of this directory (or this one file) at start.
    /// Repeatable.
    pub fn crds_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.crd_paths.push(path.into());
        self
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (the apiserver: about a minute).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// How many records the request log keeps (at least 1; default
    /// [`DEFAULT_REQUEST_LOG_CAPACITY`]). The oldest go first; [`KubeEmulator::dropped_requests`] counts them.
    pub fn request_log_capacity(mut self, records: usize) -> Self {
        self.request_log_capacity = records.max(1);
        self
    }

    /// How many changes are kept for watches resuming from a resourceVersion; older ones get 410 Expired.
    pub fn watch_history(mut self, changes: usize) -> Self {
        self.watch_history = changes.max(1);
        self
    }
}

/// One request the emulator answered.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub user_agent: Option<String>,
    /// get, list, watch, create, update, patch, delete, deletecollection ("" for discovery and other
    /// non-resource paths), as kube-apiserver's audit log names it.
    pub verb: String,
    /// The resource's plural ("" for non-resource paths).
    pub resource: String,
    /// "" for cluster-scoped and non-resource requests.
    pub namespace: String,
    /// Who asked: `user:NAME` for a bearer token registered with [`Auth::add_token`], else `ua:USER-AGENT`,
    /// else `unknown`. Tokens never appear.
    pub client: String,
}

/// What one client read of one resource (GET, LIST and WATCH answers; writes' responses are not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadStats {
    /// GET, LIST and WATCH requests answered with 200 (a watch counts once however long it runs).
    pub requests: u64,
    /// Response bytes: bodies of GETs and LISTs, every line of watch streams except bookmarks sent later.
    pub bytes: u64,
    /// Bytes of Secret `data` and `stringData` (keys plus base64 values as served) in those answers;
    /// metadata-only (`as=PartialObjectMetadata[List]`) and Table reads serve none.
    pub secret_data_bytes: u64,
}

/// Read accounting per (client, resource); both are bounded by the test's clients and kinds.
#[derive(Debug, Default)]
pub(crate) struct ReadLedger {
    pub by: std::collections::BTreeMap<(String, String), ReadStats>,
}

impl ReadLedger {
    pub(crate) fn add(
        &mut self,
        client: &str,
        resource: &str,
        requests: u64,
        bytes: u64,
        secret: u64,
    ) {
        let e = self
            .by
            .entry((client.to_string(), resource.to_string()))
            .or_default();
        e.requests += requests;
        e.bytes += bytes;
        e.secret_data_bytes += secret;
    }
}

/// The request log: a ring buffer of at most `capacity` records.
#[derive(Debug)]
pub(crate) struct RequestLog {
    pub records: VecDeque<RequestRecord>,
    pub capacity: usize,
    pub dropped: u64,
}

impl RequestLog {
    fn new(capacity: usize) -> Self {
        RequestLog {
            records: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, r: RequestRecord) {
        if self.records.len() >= self.capacity {
            self.records.pop_front();
            self.dropped += 1;
        }
        self.records.push_back(r);
    }

    pub(crate) fn clear(&mut self) {
        self.records.clear();
        self.dropped = 0;
    }
}

impl RequestRecord {
    /// Whether this was a watch request (`?watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        self.query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
    }
}

/// Fault injection for the running emulator.
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    /// Ends every open watch now (clients see the stream close and must re-watch).
    pub fn drop_watches(&self) {
        self.shared.drop_watches.send_modify(|n| *n += 1);
    }

    /// Delays every response by `delay` (`Duration::ZERO` to stop).
    pub fn delay(&self, delay: Duration) {
        lock(&self.shared.faults).delay = delay;
    }

    /// Fails the next `n` requests with `status` (a real Status body; 429/503 carry `Retry-After: 1`).
    /// Note that kube 5's client retries 429, 503 and 504 by itself (honouring Retry-After), so a caller
    /// only sees those when more than its retries fail; 500 reaches the caller at once.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.fail_next_matching(n, status, None, None);
    }

    /// Fails the next `n` requests with this method (e.g. "PATCH") whose path contains `path_contains`.
    pub fn fail_next_matching(
        &self,
        n: usize,
        status: u16,
        method: Option<&str>,
        path_contains: Option<&str>,
    ) {
        let rule = FaultRule {
            method: method.map(str::to_string),
            path_contains: path_contains.map(str::to_string),
            ..FaultRule::fail(status).times(n)
        };
        lock(&self.shared.faults).add(rule);
    }

    /// Adds a targeted rule (by verb, resource, namespace, name, user, token, User-Agent; for
    /// `rule.count` requests or until removed). Returns its id for [`Faults::remove`].
    pub fn add(&self, rule: FaultRule) -> Result<u64, TestkitError> {
        rule.check().map_err(TestkitError::InvalidSetup)?;
        Ok(lock(&self.shared.faults).add(rule))
    }

    /// Removes one rule; false if it had already run out or was never there.
    pub fn remove(&self, id: u64) -> bool {
        let mut f = lock(&self.shared.faults);
        let before = f.rules.len();
        f.rules.retain(|r| r.id != id);
        f.rules.len() != before
    }

    /// The rules in force, oldest first, with how often each applied.
    pub fn rules(&self) -> Vec<ActiveFault> {
        lock(&self.shared.faults).rules.iter().cloned().collect()
    }

    /// Forgets the watch history and closes open watches: resuming from any resourceVersion handed out so
    /// far gets `410 Expired`, so clients must relist.
    pub fn expire_watch_window(&self) {
        lock(&self.shared.store).expire_history();
        self.drop_watches();
    }

    /// Clears the delay and all rules.
    pub fn clear(&self) {
        let mut f = lock(&self.shared.faults);
        f.delay = Duration::ZERO;
        f.rules.clear();
    }
}

/// Tokens and permissions: what the TokenReview and SubjectAccessReview endpoints answer, and who a
/// request's bearer token is for fault rules, the request log and read accounting. Requests are served
/// whatever their token (the emulator does not enforce RBAC).
#[derive(Clone)]
pub struct Auth {
    shared: Arc<Shared>,
}

impl Auth {
    /// `token` authenticates as `username` with these groups (TokenReview adds `system:authenticated`).
    pub fn add_token(&self, token: &str, username: &str, groups: &[&str]) {
        lock(&self.shared.auth).add_token(
            token,
            UserInfo {
                username: username.into(),
                uid: String::new(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
        );
    }

    /// Registers a token with a full UserInfo (uid included).
    pub fn add_token_for(&self, token: &str, user: UserInfo) {
        lock(&self.shared.auth).add_token(token, user);
    }

    pub fn remove_token(&self, token: &str) -> bool {
        lock(&self.shared.auth).remove_token(token)
    }

    /// Allows what `grant` says (RBAC rule semantics, namespaced or cluster-wide).
    pub fn grant(&self, grant: Grant) -> Result<(), TestkitError> {
        grant.check().map_err(TestkitError::InvalidSetup)?;
        lock(&self.shared.auth).grant(grant);
        Ok(())
    }

    pub fn clear_grants(&self) {
        lock(&self.shared.auth).clear_grants();
    }

    /// How many TokenReviews were created so far.
    pub fn token_reviews(&self) -> u64 {
        lock(&self.shared.auth).token_reviews
    }

    /// How many SubjectAccessReviews were created so far.
    pub fn subject_access_reviews(&self) -> u64 {
        lock(&self.shared.auth).access_reviews
    }
}

/// A running emulator; stops when dropped.
pub struct KubeEmulator {
    shared: Arc<Shared>,
    url: String,
    client: ::kube::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

fn read_crd_docs(path: &Path) -> Result<Vec<(PathBuf, Value)>, TestkitError> {
    let read_err = |source| TestkitError::ReadCrd {
        path: path.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(read_err)? {
            let p = entry.map_err(read_err)?.path();
            if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| TestkitError::ReadCrd {
            path: f.clone(),
            source,
        })?;
        let values: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| TestkitError::InvalidCrd {
                path: f.clone(),
                message: e.to_string(),
            })?;
        for v in values.into_iter().filter(|v| !v.is_null()) {
            if v.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                return Err(TestkitError::InvalidCrd {
                    path: f.clone(),
                    message: "a document is not of kind CustomResourceDefinition".into(),
                });
            }
            docs.push((f.clone(), v));
        }
    }
    Ok(docs)
}

impl KubeEmulator {
    /// Starts the emulator on 127.0.0.1 (ephemeral port) with the namespaces `default` and `kube-system`.
    pub async fn start(config: EmulatorConfig) -> Result<KubeEmulator, TestkitError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(TestkitError::Bind)?;
        listener.set_nonblocking(true).map_err(TestkitError::Bind)?;
        let addr = listener.local_addr().map_err(TestkitError::Bind)?;
        let (tx, _) = broadcast::channel(4096);
        let mut store = Store::new(tx);
        store.max_history = config.watch_history;
        let opts = WriteOptions {
            manager: "kube-apiserver".into(),
            manager_given: true,
            ..Default::default()
        };
        let ns_type = store.find("", "v1", "namespaces").cloned();
        let crd_type = store
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .cloned();
        if let Some(ns_type) = ns_type {
            for ns in ["default", "kube-system"] {
                store
                    .create(
                        &ns_type,
                        None,
                        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                        &opts,
                    )
                    .map_err(|e| TestkitError::InvalidCrd {
                        path: PathBuf::from(ns),
                        message: e.message,
                    })?;
            }
        }
        if let Some(crd_type) = crd_type {
            for dir in &config.crd_paths {
                for (path, doc) in read_crd_docs(dir)? {
                    store.create(&crd_type, None, doc, &opts).map_err(|e| {
                        TestkitError::InvalidCrd {
                            path,
                            message: e.message,
                        }
                    })?;
                }
            }
        }
        let (drop_tx, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            requests: Mutex::new(RequestLog::new(config.request_log_capacity)),
            faults: Mutex::new(FaultState::default()),
            auth: Mutex::new(AuthState::default()),
            reads: Mutex::new(ReadLedger::default()),
            drop_watches: drop_tx,
            bookmark_interval: config.bookmark_interval,
            server_address: addr.to_string(),
        });
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(shared.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), std::io::Error>>();
        std::thread::Builder::new()
            .name(format!("kube-emulator-{}", addr.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = shutdown_rx.await;
                        })
                        .await;
                });
                // Open watch streams would keep a graceful shutdown waiting; drop them with the runtime.
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(TestkitError::Bind)?;
        ready_rx
            .await
            .map_err(|_| {
                TestkitError::Bind(std::io::Error::other(
                    "the emulator thread stopped before serving",
                ))
            })?
            .map_err(TestkitError::Bind)?;
        let url = format!("http://{addr}");
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| {
            TestkitError::Bind(std::io::Error::other(e.to_string()))
        })?;
        let client =
            ::kube::Client::try_from(::kube::Config::new(uri)).map_err(TestkitError::Client)?;
        Ok(KubeEmulator {
            shared,
            url,
            client,
            shutdown: Some(shutdown_tx),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Writes a kubeconfig (context `emulator`, namespace `default`, no credentials) for kubectl and
    /// `kube::Config::infer`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\ncontexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\nusers:\n- name: emulator\n  user: {{}}\npreferences: {{}}\n",
            self.url
        );
        std::fs::write(path, text)
    }

    /// A client for this emulator (default namespace `default`).
    pub async fn client(&self) -> ::kube::Client {
        self.client.clone()
    }

    /// The requests answered so far, oldest first: the last
    /// [`EmulatorConfig::request_log_capacity`] of them.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests)
            .records
            .iter()
            .cloned()
            .collect()
    }

    /// How many records the bounded request log has dropped since it was last cleared.
    pub fn dropped_requests(&self) -> u64 {
        lock(&self.shared.requests).dropped
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// What each client read, per resource: keys are (client as in [`RequestRecord::client`], resource as
    /// `plural` for the core group or `plural.group`), e.g. `("user:lockstep-a", "secrets")`.
    pub fn reads(&self) -> std::collections::BTreeMap<(String, String), ReadStats> {
        lock(&self.shared.reads).by.clone()
    }

    /// What `client` read, per resource.
    pub fn reads_by(&self, client: &str) -> std::collections::BTreeMap<String, ReadStats> {
        lock(&self.shared.reads)
            .by
            .iter()
            .filter(|((c, _), _)| c == client)
            .map(|((_, r), s)| (r.clone(), *s))
            .collect()
    }

    /// Bytes of Secret data served to `client` (all clients with None) by GET, LIST and WATCH.
    pub fn secret_data_bytes_served(&self, client: Option<&str>) -> u64 {
        lock(&self.shared.reads)
            .by
            .iter()
            .filter(|((c, _), _)| client.is_none_or(|want| c == want))
            .map(|(_, s)| s.secret_data_bytes)
            .sum()
    }

    pub fn clear_reads(&self) {
        lock(&self.shared.reads).by.clear();
    }

    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    pub fn auth(&self) -> Auth {
        Auth {
            shared: self.shared.clone(),
        }
    }

    /// A client that sends `Authorization: Bearer <token>` (register the token with [`Auth::add_token`]
    /// to give it a user).
    pub fn client_with_token(&self, token: &str) -> Result<::kube::Client, TestkitError> {
        let uri: http::Uri = self.url.parse().map_err(|e: http::uri::InvalidUri| {
            TestkitError::Bind(std::io::Error::other(e.to_string()))
        })?;
        let mut config = ::kube::Config::new(uri);
        config.auth_info.token = Some(token.to_string().into());
        ::kube::Client::try_from(config).map_err(TestkitError::Client)
    }

    /// Like [`KubeEmulator::write_kubeconfig`], with a bearer token for the user (for a second process
    /// that must look like another client).
    pub fn write_kubeconfig_with_token(&self, path: &Path, token: &str) -> std::io::Result<()> {
        self.write_kubeconfig(path)?;
        let text = std::fs::read_to_string(path)?;
        let escaped = token.replace('\\', "\\\\").replace('"', "\\\"");
        std::fs::write(
            path,
            text.replace(
                "  user: {}\n",
                &format!("  user:\n    token: \"{escaped}\"\n"),
            ),
        )
    }
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        self.faults().drop_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
