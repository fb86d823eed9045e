//! The read API and the dashboard, on their own listener (`--api-addr`).
//!
//! Everything is answered from the controllers' caches ([`ApiCaches`]): no request causes a Kubernetes or
//! Azure DevOps read, except the TokenReview and SubjectAccessReview that authenticate a Kubernetes
//! token, and those are cached ([`auth`]). Routes are listed in `docs/api.md`.
//!
//! - [`routes`]: `/api/v1/...` JSON, `/api/v1/watch` (server-sent events), the dashboard's files.
//! - [`verdict`]: a gate's verdict in the shape gaters (Azure DevOps checks, Argo Rollouts, Kargo) read.
//! - [`auth`]: bearer tokens: TokenReview + SubjectAccessReview, or the static token.
//! - [`query`] (with [`crate::label_selector`]): list filters; [`view`]: the JSON of one object; [`watch`]: the change feed.

pub mod assets;
pub mod auth;
pub mod caches;
pub mod query;
pub mod routes;
pub mod verdict;
pub mod view;
pub mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::Semaphore;

pub use auth::{Authenticator, Caller};
pub use caches::{ApiCaches, CacheSlot};
pub use routes::{router, ApiState};
pub use verdict::Verdict;

use crate::secret::SecretString;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    #[error("could not read the API's static token from {path}: {source}; mount the Secret there or drop --api-token-file")]
    TokenFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the API's static token file {0} is empty; put a token in it or drop --api-token-file"
    )]
    EmptyToken(String),
    #[error(
        "could not listen on {addr} for the API: {source}; pick a free address with --api-addr"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Read the static token (surrounding whitespace, such as the newline `kubectl create secret
/// --from-file` keeps, is not part of it).
pub fn read_token_file(path: &Path) -> Result<SecretString, ApiStartError> {
    let raw = std::fs::read_to_string(path).map_err(|source| ApiStartError::TokenFile {
        path: path.display().to_string(),
        source,
    })?;
    let token = SecretString::new(raw.trim());
    if token.is_empty() {
        return Err(ApiStartError::EmptyToken(path.display().to_string()));
    }
    Ok(token)
}

/// The running API server.
pub struct ApiServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    feed: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Wait for the server to stop (after `shutdown`).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        self.feed.abort();
        result
    }
}

/// Serve the API and dashboard on `addr` until `shutdown` turns true; open change streams end then too.
pub async fn serve(
    addr: SocketAddr,
    caches: ApiCaches,
    auth: Authenticator,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<ApiServer, ApiStartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiStartError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ApiStartError::Bind { addr, source })?;
    let (feed, feed_task) =
        watch::ChangeFeed::start(caches.clone(), watch::FEED_PERIOD, shutdown.clone());
    let state = ApiState {
        caches,
        auth: Arc::new(auth),
        feed,
        watch_clients: Arc::new(Semaphore::new(routes::MAX_WATCH_CLIENTS)),
        shutdown: shutdown.clone(),
    };
    let app = router(state);
    let mut stop = shutdown;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(%local_addr, "API and dashboard listening");
    Ok(ApiServer {
        local_addr,
        task,
        feed: feed_task,
    })
}
