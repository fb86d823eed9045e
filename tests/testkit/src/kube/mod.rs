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
//! (Deployments do not roll out, ownerReferences are not garbage-collected), no authentication or RBAC,
//! protobuf request bodies only for Namespace, Secret and ConfigMap, and a watch from a resourceVersion
//! newer than the server's fails at once (504) instead of after the watch cache's 3-second wait.

mod builtin;
mod cel;
mod discovery;
mod events;
mod managed;
mod patch;
mod protobuf;
mod resources;
mod schema;
mod selectors;
mod server;
mod status;
mod store;
mod table;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::TestkitError;
use server::{lock, FailRule, FaultState, Shared};
use store::{Store, WriteOptions};

/// How to start a [`KubeEmulator`].
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    crd_paths: Vec<PathBuf>,
    bookmark_interval: Duration,
    watch_history: usize,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            crd_paths: Vec::new(),
            bookmark_interval: Duration::from_secs(5),
            watch_history: 10_000,
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

    /// How many changes are kept for watches resuming from a resourceVersion; older ones get 410 Expired.
    pub fn watch_history(mut self, changes: usize) -> Self {
        self.watch_history = changes.max(1);
        self
    }
}

/// One request the emulator answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub user_agent: Option<String>,
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
        lock(&self.shared.faults).fail.push_back(FailRule {
            remaining: n,
            status,
            method: method.map(str::to_string),
            path_contains: path_contains.map(str::to_string),
        });
    }

    /// Forgets the watch history and closes open watches: resuming from any resourceVersion handed out so
    /// far gets `410 Expired`, so clients must relist.
    pub fn expire_watch_window(&self) {
        lock(&self.shared.store).expire_history();
        self.drop_watches();
    }

    /// Clears the delay and all pending failures.
    pub fn clear(&self) {
        *lock(&self.shared.faults) = FaultState::default();
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
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(FaultState::default()),
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

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
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
