//! Bounded HTTP/1 serving for lockstep's two listeners (the webhook receiver and the operations server).
//!
//! `axum::serve` reads request headers without a deadline and, on graceful shutdown, waits for every open
//! connection, so a peer that opens connections and never finishes its headers holds a socket forever and
//! makes SIGTERM wait the whole shutdown grace. Here every connection is bounded:
//! - **header-read timeout**: headers (of the first request and of every keep-alive request after it) must
//!   arrive within [`ConnectionLimits::header_read_timeout`], else the connection is closed (hyper's
//!   `header_read_timeout`, which also bounds an idle keep-alive connection);
//! - **connection cap**: at most [`ConnectionLimits::max_connections`] at once; a connection over the cap
//!   is closed as soon as it is accepted, so a flood cannot exhaust file descriptors or memory;
//! - **shutdown**: the listener closes at once; a connection with no request being handled (idle, or
//!   half-open in its headers) is dropped at once; one whose request is being handled finishes it (HTTP/1
//!   graceful shutdown) within [`ConnectionLimits::drain_timeout`], then is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// Bounds of one listener's connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest time a peer may take to send a request's headers (also the idle keep-alive limit).
    pub header_read_timeout: Duration,
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// After shutdown, how long a request already being handled may take to finish.
    pub drain_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            drain_timeout: Duration::from_secs(15),
        }
    }
}

/// Called when a connection is refused because the cap is reached (for a metric).
pub type OnRefused = Arc<dyn Fn() + Send + Sync>;

/// Serve `app` on `listener` until `shutdown` resolves, then close every connection as described in the
/// module docs. Returns once every connection is closed.
pub async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    on_refused: Option<OnRefused>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing_tx, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, max = limits.max_connections, "connection refused: too many open");
                    if let Some(refused) = &on_refused {
                        refused();
                    }
                    drop(stream);
                    continue;
                };
                let app = app.clone();
                let closing = closing.clone();
                let limits = limits.clone();
                connections.spawn(async move {
                    serve_connection(stream, peer, app, &limits, closing).await;
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &ConnectionLimits,
    mut closing: watch::Receiver<bool>,
) {
    // Requests being handled on this connection: on shutdown, none means idle or half-open.
    let busy = Arc::new(AtomicUsize::new(0));
    let service = {
        let busy = busy.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let busy = busy.clone();
            async move {
                let _guard = BusyGuard::enter(busy);
                app.oneshot(request.map(axum::body::Body::new)).await
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
            return;
        }
        _ = closing.wait_for(|closing| *closing) => {}
    }
    if busy.load(Ordering::Acquire) == 0 {
        // Idle or still sending its headers: nothing to finish, so close now (dropping `conn`).
        return;
    }
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(limits.drain_timeout, conn)
        .await
        .is_err()
    {
        tracing::warn!(%peer, drain_s = limits.drain_timeout.as_secs(), "a request did not finish within the shutdown drain time; closing its connection");
    }
}

/// Counts a request as being handled for as long as it lives.
struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    fn enter(busy: Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        Self(busy)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
