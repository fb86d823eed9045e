//! A forward proxy for tests of `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` handling, on 127.0.0.1:
//!
//! - `CONNECT host:port` opens a tunnel (for https targets; RFC 9110 §9.3.6);
//! - a request in absolute form (`GET http://host:port/path HTTP/1.1`, RFC 9112 §3.2.2) is forwarded
//!   to the target in origin form, one request per connection (`Connection: close`).
//!
//! Targets resolve only through a host map (name → loopback socket address), so an organization URL
//! like `https://dev.azure.test/contoso` works only through the proxy; IP-literal loopback targets
//! are allowed as they are. Everything else gets 502. Requests and tunnels are counted per target
//! host; `Proxy-Authorization: Basic` is checked when credentials are configured (407 otherwise).
//! Bounded: a connection cap (503 beyond it), a timeout on the request head, on connecting to the
//! target and on the whole life of a connection, and a cap on the head's size.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};

use crate::TestkitError;

const MAX_HEAD: usize = 16 * 1024;
const MAX_LOG: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How the proxy behaves. `ProxyConfig::default()`: no host map, no credentials, 256 connections,
/// 10 s head and connect timeouts, 10 min connection lifetime.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    hosts: HashMap<String, SocketAddr>,
    credentials: Option<(String, String)>,
    max_connections: usize,
    head_timeout: Duration,
    connect_timeout: Duration,
    max_lifetime: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            hosts: HashMap::new(),
            credentials: None,
            max_connections: 256,
            head_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(600),
        }
    }
}

impl ProxyConfig {
    /// `host` (any port, any case) is reached at `addr`. Must be a loopback address.
    pub fn map_host(mut self, host: &str, addr: SocketAddr) -> Self {
        self.hosts.insert(host.to_ascii_lowercase(), addr);
        self
    }

    /// Require `Proxy-Authorization: Basic base64(user:password)`.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_string(), password.to_string()));
        self
    }

    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    pub fn head_timeout(mut self, d: Duration) -> Self {
        self.head_timeout = d;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// A tunnel or forwarded exchange is cut after this long, active or not.
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.max_lifetime = d;
        self
    }
}

/// What the proxy did with one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRecord {
    /// `"CONNECT"`, or the method of a forwarded request.
    pub method: String,
    /// Target host as the client named it (lower case, no port).
    pub host: String,
    pub port: u16,
    /// Path and query of a forwarded request; empty for CONNECT.
    pub path: String,
    /// What the proxy answered itself (200 for an established tunnel, 407, 502, 503...); for a
    /// forwarded request, 0 (the target's status passes through unread).
    pub status: u16,
}

#[derive(Default)]
struct Counters {
    log: Vec<ProxyRecord>,
}

struct Inner {
    config: ProxyConfig,
    counters: Mutex<Counters>,
    permits: Arc<Semaphore>,
}

/// A running test proxy. Clones share it; dropping the last clone stops accepting (open tunnels end
/// at their lifetime or when either side closes).
#[derive(Clone)]
pub struct TestProxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    _shutdown: Arc<Shutdown>,
}

struct Shutdown(Mutex<Option<oneshot::Sender<()>>>);

impl Drop for Shutdown {
    fn drop(&mut self) {
        if let Some(tx) = lock(&self.0).take() {
            let _ = tx.send(());
        }
    }
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestProxy {
    /// Starts the proxy on 127.0.0.1 with an ephemeral port.
    pub async fn start(config: ProxyConfig) -> Result<TestProxy, TestkitError> {
        if let Some((host, addr)) = config.hosts.iter().find(|(_, a)| !a.ip().is_loopback()) {
            return Err(TestkitError::InvalidSetup(format!(
                "the test proxy maps {host} to {addr}, which is not a loopback address; tests reach only 127.0.0.1"
            )));
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(TestkitError::Bind)?;
        let addr = listener.local_addr().map_err(|source| TestkitError::Io {
            action: "read the test proxy's address".into(),
            source,
        })?;
        let inner = Arc::new(Inner {
            permits: Arc::new(Semaphore::new(config.max_connections)),
            config,
            counters: Mutex::new(Counters::default()),
        });
        let (tx, mut rx) = oneshot::channel::<()>();
        let accept_inner = inner.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "test proxy: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let inner = accept_inner.clone();
                match inner.permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            let lifetime = inner.config.max_lifetime;
                            let _ = tokio::time::timeout(lifetime, handle(&inner, stream)).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(async move {
                            let mut stream = stream;
                            let _ = stream
                                .write_all(&simple_response(
                                    503,
                                    "the test proxy is at its connection cap",
                                    &[],
                                ))
                                .await;
                        });
                    }
                }
            }
        });
        Ok(TestProxy {
            inner,
            addr,
            _shutdown: Arc::new(Shutdown(Mutex::new(Some(tx)))),
        })
    }

    /// `http://127.0.0.1:{port}`: the value for `HTTPS_PROXY` / `HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:{port}` (percent-encoding is the caller's business).
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything the proxy saw.
    pub fn requests(&self) -> Vec<ProxyRecord> {
        lock(&self.inner.counters).log.clone()
    }

    pub fn clear(&self) {
        lock(&self.inner.counters).log.clear();
    }

    /// Tunnels established to `host` (any port).
    pub fn tunnels(&self, host: &str) -> usize {
        self.count(host, |r| r.method == "CONNECT" && r.status == 200)
    }

    /// Requests forwarded to `host` in absolute form.
    pub fn forwarded(&self, host: &str) -> usize {
        self.count(host, |r| r.method != "CONNECT" && r.status == 0)
    }

    /// Requests of any kind and outcome naming `host`.
    pub fn requests_to(&self, host: &str) -> usize {
        self.count(host, |_| true)
    }

    /// Per target host: requests of any kind and outcome.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in &lock(&self.inner.counters).log {
            *out.entry(r.host.clone()).or_insert(0) += 1;
        }
        out
    }

    fn count(&self, host: &str, f: impl Fn(&ProxyRecord) -> bool) -> usize {
        let host = host.to_ascii_lowercase();
        lock(&self.inner.counters)
            .log
            .iter()
            .filter(|r| r.host == host && f(r))
            .count()
    }
}

fn simple_response(status: u16, message: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let reason = match status {
        200 => "Connection established",
        400 => "Bad Request",
        407 => "Proxy Authentication Required",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if status == 200 {
        head.push_str("\r\n");
        return head.into_bytes();
    }
    let body = format!("{message}\n");
    head.push_str(&format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    head.into_bytes()
}

fn record(inner: &Inner, method: &str, host: &str, port: u16, path: &str, status: u16) {
    let mut c = lock(&inner.counters);
    if c.log.len() >= MAX_LOG {
        c.log.drain(..MAX_LOG / 10);
    }
    c.log.push(ProxyRecord {
        method: method.to_string(),
        host: host.to_ascii_lowercase(),
        port,
        path: path.to_string(),
        status,
    });
}

/// Reads until the end of the head (`\r\n\r\n`); returns the head and any bytes after it.
async fn read_head(stream: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// `host:port` or `[v6]:port` → (host, port).
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_ascii_lowercase(), p.parse().ok()?)),
        None => Some((authority.to_ascii_lowercase(), default_port)),
    }
}

fn resolve(config: &ProxyConfig, host: &str, port: u16) -> Option<SocketAddr> {
    if let Some(addr) = config.hosts.get(host) {
        return Some(*addr);
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

fn authorized(config: &ProxyConfig, headers: &[(String, String)]) -> bool {
    let Some((user, password)) = &config.credentials else {
        return true;
    };
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
        .any(|(_, v)| {
            let Some((scheme, b64)) = v.split_once(' ') else {
                return false;
            };
            scheme.eq_ignore_ascii_case("basic")
                && STANDARD
                    .decode(b64.trim())
                    .ok()
                    .and_then(|raw| String::from_utf8(raw).ok())
                    .is_some_and(|pair| pair == format!("{user}:{password}"))
        })
}

async fn handle(inner: &Inner, mut client: TcpStream) {
    let config = &inner.config;
    let Ok(Some((head, rest))) =
        tokio::time::timeout(config.head_timeout, read_head(&mut client)).await
    else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&head) else {
        let _ = client
            .write_all(&simple_response(400, "the request head is not UTF-8", &[]))
            .await;
        return;
    };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        let _ = client
            .write_all(&simple_response(400, "malformed request line", &[]))
            .await;
        return;
    };

    let (host, port, path) = if method.eq_ignore_ascii_case("CONNECT") {
        match split_authority(target, 443) {
            Some((h, p)) => (h, p, String::new()),
            None => {
                let _ = client
                    .write_all(&simple_response(400, "CONNECT needs host:port", &[]))
                    .await;
                return;
            }
        }
    } else {
        let Ok(url) = url::Url::parse(target) else {
            // Origin form: the client talks to the proxy as if it were the server.
            let _ = client
                .write_all(&simple_response(400, "a forward proxy needs an absolute-form request target (http://host/path) or CONNECT", &[]))
                .await;
            return;
        };
        if url.scheme() != "http" {
            let _ = client
                .write_all(&simple_response(
                    400,
                    "only http:// targets are forwarded; use CONNECT for https",
                    &[],
                ))
                .await;
            return;
        }
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        (host, port, path)
    };

    if !authorized(config, &headers) {
        record(inner, method, &host, port, &path, 407);
        let _ = client
            .write_all(&simple_response(
                407,
                "proxy credentials required",
                &[(
                    "Proxy-Authenticate",
                    "Basic realm=\"lockstep-testkit proxy\"",
                )],
            ))
            .await;
        return;
    }
    let Some(addr) = resolve(config, &host, port) else {
        record(inner, method, &host, port, &path, 502);
        let _ = client
            .write_all(&simple_response(
                502,
                &format!("the test proxy does not know {host}; add it with ProxyConfig::map_host"),
                &[],
            ))
            .await;
        return;
    };
    let upstream =
        match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                record(inner, method, &host, port, &path, 502);
                let _ = client
                    .write_all(&simple_response(
                        502,
                        &format!("connecting to {host} ({addr}) failed: {e}"),
                        &[],
                    ))
                    .await;
                return;
            }
            Err(_) => {
                record(inner, method, &host, port, &path, 504);
                let _ = client
                    .write_all(&simple_response(
                        504,
                        &format!("connecting to {host} ({addr}) timed out"),
                        &[],
                    ))
                    .await;
                return;
            }
        };
    let mut upstream = upstream;

    if method.eq_ignore_ascii_case("CONNECT") {
        record(inner, method, &host, port, &path, 200);
        if client
            .write_all(&simple_response(200, "", &[]))
            .await
            .is_err()
        {
            return;
        }
        if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        return;
    }

    // Absolute form → origin form; hop-by-hop and proxy headers stay here.
    record(inner, method, &host, port, &path, 0);
    let mut out = format!("{method} {path} {version}\r\n");
    for (k, v) in &headers {
        let lower = k.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "proxy-authorization" | "proxy-connection" | "connection" | "keep-alive"
        ) {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    if upstream.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
