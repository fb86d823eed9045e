//! TLS for the test servers: a certificate authority generated at run time (nothing on disk unless a
//! test asks for the CA PEM), server certificates with the SANs a test needs
//! (`dev.azure.test`, `login.microsoftonline.test`, `127.0.0.1`, ...), and a way to serve an axum
//! router over plain HTTP or HTTPS with the same shutdown handle.
//!
//! Everything uses rustls' aws-lc-rs provider explicitly, the one provider of the workspace, so no
//! process-level default has to be installed and `cargo tree -i ring` stays empty.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::TestkitError;

/// How long a client may take to finish the TLS handshake before the server drops it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the HTTP server to pick them up.
const ACCEPT_QUEUE: usize = 64;

fn tls_error(what: &str, e: impl std::fmt::Display) -> TestkitError {
    TestkitError::InvalidSetup(format!("{what}: {e}"))
}

/// rustls with the aws-lc-rs provider, never the process default (which may be unset, or ring in a
/// test binary that links something else).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate authority that exists only for one test run. Clients trust it through
/// [`TestCa::ca_pem`] / [`TestCa::write_ca_pem`] (e.g. `SSL_CERT_FILE`, or
/// `reqwest::Certificate::from_pem`).
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh CA (ECDSA P-256, "lockstep-testkit test CA").
    pub fn new() -> Result<TestCa, TestkitError> {
        let key = KeyPair::generate().map_err(|e| tls_error("generating the CA key", e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "lockstep-testkit test CA");
        dn.push(DnType::OrganizationName, "lockstep test kit");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, key)
            .map_err(|e| tls_error("self-signing the test CA", e))?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes the CA certificate (PEM) to `path` for clients in other processes.
    pub fn write_ca_pem(&self, path: &Path) -> Result<(), TestkitError> {
        std::fs::write(path, self.ca_pem()).map_err(|source| TestkitError::Io {
            action: format!("write the test CA to {}", path.display()),
            source,
        })
    }

    /// A server certificate signed by this CA, valid for `sans` (DNS names or IP addresses, e.g.
    /// `["dev.azure.test", "127.0.0.1"]`), ready to serve.
    pub fn server_config(&self, sans: &[&str]) -> Result<TlsServerConfig, TestkitError> {
        if sans.is_empty() {
            return Err(TestkitError::InvalidSetup(
                "a server certificate needs at least one subject alternative name".into(),
            ));
        }
        let key = KeyPair::generate().map_err(|e| tls_error("generating a server key", e))?;
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone())
            .map_err(|e| tls_error(&format!("certificate names {names:?}"), e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_error("signing a server certificate", e))?;
        let chain = vec![cert.der().clone()];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("choosing TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| tls_error("loading the server certificate", e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsServerConfig {
            config: Arc::new(config),
            sans: names,
        })
    }

    /// A rustls client configuration that trusts only this CA (for tests that speak TLS themselves).
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TestkitError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der())
            .map_err(|e| tls_error("adding the test CA to a root store", e))?;
        Ok(rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("choosing TLS versions", e))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// An RSA (2048-bit) client certificate for a service principal, signed by this CA, with its
    /// key: what `servicePrincipal.clientCertificateRef` points at. Entra accepts RSA keys for
    /// certificate credentials, and the Azure SDKs sign the client assertion with RS256.
    pub fn client_certificate(&self, common_name: &str) -> Result<ClientCertificate, TestkitError> {
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256)
            .map_err(|e| tls_error("generating an RSA client key", e))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| tls_error("signing a client certificate", e))?;
        Ok(ClientCertificate {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key,
        })
    }
}

/// A certificate with its private key, for a certificate service principal.
pub struct ClientCertificate {
    der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t#S256", &self.x5t_s256())
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Certificate and key in one PEM, as Azure CLI and the Azure SDKs read a certificate file.
    pub fn bundle_pem(&self) -> String {
        format!("{}{}", self.key_pem(), self.cert_pem)
    }

    /// base64url(SHA-1(DER)): the `x5t` header of a client assertion.
    pub fn x5t(&self) -> String {
        crate::entra::b64url(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der)
                .as_ref(),
        )
    }

    /// base64url(SHA-256(DER)): the `x5t#S256` header of a client assertion.
    pub fn x5t_s256(&self) -> String {
        crate::entra::b64url(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.der).as_ref(),
        )
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWS `RS256`) over `msg`.
    pub fn sign_rs256(&self, msg: &[u8]) -> Result<Vec<u8>, TestkitError> {
        use rcgen::SigningKey;
        self.key
            .sign(msg)
            .map_err(|e| tls_error("signing with the client key", e))
    }
}

/// A server certificate and key, ready for [`serve`].
#[derive(Clone)]
pub struct TlsServerConfig {
    config: Arc<rustls::ServerConfig>,
    sans: Vec<String>,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("sans", &self.sans)
            .finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// The names the certificate is valid for.
    pub fn sans(&self) -> &[String] {
        &self.sans
    }

    pub fn rustls(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

/// Stops a server started by [`serve`] when dropped (or when [`ServerHandle::shutdown`] is called).
pub struct ServerHandle(Mutex<Option<oneshot::Sender<()>>>);

impl ServerHandle {
    pub fn shutdown(&self) {
        let tx = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(tx) = tx {
            // The server may already be gone; nothing to do then.
            let _ = tx.send(());
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is set, until the handle is dropped. Handshakes run
/// concurrently (one slow or broken client does not hold up the others) and are bounded by a timeout.
pub fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<&TlsServerConfig>,
    name: &'static str,
) -> ServerHandle {
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = rx.await;
    };
    match tls {
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::warn!(error = %e, server = name, "test server stopped with an error");
                }
            });
        }
        Some(tls) => {
            let tls_listener = TlsListener::spawn(listener, tls.rustls());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(tls_listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::warn!(error = %e, server = name, "test server stopped with an error");
                }
            });
        }
    }
    ServerHandle(Mutex::new(Some(tx)))
}

/// An axum listener that hands over connections once their TLS handshake is done; the handshakes
/// run in their own tasks.
struct TlsListener {
    accepted: mpsc::Receiver<(
        tokio_rustls::server::TlsStream<TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
    _acceptor_task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    fn spawn(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off rather than spin.
                        tracing::debug!(error = %e, "TLS test server: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS test server: handshake failed")
                        }
                        Err(_) => tracing::debug!("TLS test server: handshake timed out"),
                    }
                });
            }
        });
        TlsListener {
            accepted: rx,
            local,
            _acceptor_task: AbortOnDrop(task),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The acceptor task never ends on its own; if it did, wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Binds 127.0.0.1 with an ephemeral port.
pub(crate) async fn bind_loopback() -> Result<(TcpListener, std::net::SocketAddr), TestkitError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(TestkitError::Bind)?;
    let addr = listener.local_addr().map_err(|source| TestkitError::Io {
        action: "read a test server's address".into(),
        source,
    })?;
    Ok((listener, addr))
}
