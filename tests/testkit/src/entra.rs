//! A fake Microsoft Entra ID for the three credential sources lockstep supports besides PATs:
//!
//! - the v2.0 token endpoint, `POST /{tenant}/oauth2/v2.0/token`, client-credentials grant with a
//!   client secret, a certificate-signed client assertion, or a federated (workload identity)
//!   assertion — the authority host is the fake's URL, as `AZURE_AUTHORITY_HOST` allows;
//! - the managed identity endpoint of the Instance Metadata Service (IMDS),
//!   `GET /metadata/identity/oauth2/token`, on a second, plain-HTTP listener like the real
//!   `http://169.254.169.254`.
//!
//! Shapes follow Microsoft's documentation:
//! - client credentials (secret, certificate, federated assertion) and the success/error bodies:
//!   <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow>
//! - the client assertion format (`aud`, `iss`, `sub`, `exp`, `x5t`/`x5t#S256`, RS256/PS256):
//!   <https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials>
//! - the error body (`error`, `error_description` "AADSTSnnnn: ...\r\nTrace ID: ...", `error_codes`,
//!   `timestamp` "yyyy-MM-dd HH:mm:ssZ", `trace_id`, `correlation_id`, `error_uri`) and the codes:
//!   <https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes>
//! - workload identity federation (assertion `iss`/`sub`/`aud` = `api://AzureADTokenExchange`
//!   matched against the federated credential, AADSTS70021 otherwise):
//!   <https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation>
//! - IMDS (`Metadata: true`, `api-version`, `resource`, `client_id`; string-valued `expires_in`,
//!   `expires_on`, `not_before`; the error table):
//!   <https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-to-use-vm-token>
//! - Azure DevOps' resource id `499b84ac-1321-427f-aa17-267ca6975798`:
//!   <https://learn.microsoft.com/en-us/azure/devops/integrate/get-started/authentication/service-principal-managed-identity>
//!
//! Tokens it issues are recorded in a [`TokenRegistry`] that the Azure DevOps simulator consults
//! ([`crate::ado::AdoSimulator::trust_entra`]); they are JWT-shaped but signed with nothing a client
//! could verify, as a client never verifies an access token meant for someone else.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::tls::{self, ServerHandle, TlsServerConfig};
use crate::TestkitError;

/// Azure DevOps' application (resource) id in Entra.
pub const AZURE_DEVOPS_RESOURCE: &str = "499b84ac-1321-427f-aa17-267ca6975798";
/// The scope a client-credentials request for Azure DevOps carries.
pub const AZURE_DEVOPS_SCOPE: &str = "499b84ac-1321-427f-aa17-267ca6975798/.default";
/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The audience of the projected service-account token in Azure Workload Identity.
pub const WORKLOAD_IDENTITY_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Clock skew Entra tolerates on assertion times.
const CLOCK_SKEW_SECS: i64 = 300;
/// Bodies larger than this are refused (a token request is a few KiB).
const MAX_BODY: usize = 64 * 1024;
/// Request records kept; older ones are dropped (tests at scale make many).
const MAX_LOG: usize = 100_000;

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not take the fake down for the others.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // aws-lc's RNG does not fail on supported platforms; zeros would still be unique enough with
    // the counter mixed into tokens.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

fn guid() -> String {
    let b = random_bytes::<16>();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// How a token was asked for: the counters of [`EntraFake::count`] are per identity and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GrantKind {
    /// `client_secret`.
    ClientSecret,
    /// A client assertion with an `x5t`/`x5t#S256` header, signed with a registered certificate.
    ClientCertificate,
    /// A client assertion without a certificate thumbprint: a federated token (workload identity).
    FederatedToken,
    /// IMDS.
    ManagedIdentity,
}

/// A token the fake issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The application (client) id of the identity, also for managed identities.
    pub client_id: String,
    pub tenant_id: String,
    pub grant: GrantKind,
    pub audience: String,
    pub expires_at: Instant,
}

/// Tokens issued by an [`EntraFake`], shared with the Azure DevOps simulator. Clones share it.
#[derive(Clone, Default)]
pub struct TokenRegistry(Arc<Mutex<HashMap<String, IssuedToken>>>);

impl std::fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("TokenRegistry")
            .field("issued", &lock(&self.0).len())
            .finish()
    }
}

impl TokenRegistry {
    /// The identity behind `token` if the fake issued it for Azure DevOps and it has not expired.
    pub fn validate(&self, token: &str) -> Option<IssuedToken> {
        let tokens = lock(&self.0);
        let t = tokens.get(token)?;
        (t.expires_at > Instant::now() && t.audience == AZURE_DEVOPS_RESOURCE).then(|| t.clone())
    }

    /// Every token issued so far expires now (the next use is rejected), as if its lifetime had
    /// passed: tests of refresh need not wait.
    pub fn expire_all(&self) {
        let now = Instant::now();
        for t in lock(&self.0).values_mut() {
            t.expires_at = now;
        }
    }

    /// One token expires now.
    pub fn revoke(&self, token: &str) {
        if let Some(t) = lock(&self.0).get_mut(token) {
            t.expires_at = Instant::now();
        }
    }

    /// Tokens issued so far (expired ones included).
    pub fn issued(&self) -> usize {
        lock(&self.0).len()
    }

    fn insert(&self, token: String, issued: IssuedToken) {
        let mut tokens = lock(&self.0);
        if tokens.len() >= MAX_LOG {
            let now = Instant::now();
            tokens.retain(|_, t| t.expires_at > now);
        }
        tokens.insert(token, issued);
    }
}

/// An error Entra answers for one client id, whatever the request (see
/// [`EntraFake::fail_client`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EntraError {
    /// 400 `unauthorized_client`, AADSTS700016: the application is not in the tenant (deleted,
    /// wrong tenant, or never consented).
    ApplicationNotFound,
    /// 401 `invalid_client`, AADSTS7000215: a wrong or expired client secret.
    InvalidClientSecret,
    /// 401 `invalid_client`, AADSTS7000222: the client secret expired.
    ExpiredClientSecret,
    /// 400 `invalid_request`, AADSTS70021: no federated credential matches the assertion.
    NoMatchingFederatedIdentity,
    /// Any other answer: `status`, OAuth `error`, AADSTS `code` and the message after "AADSTSnnnn: ".
    Custom {
        status: u16,
        error: String,
        code: u32,
        message: String,
    },
}

/// How the fake is served.
#[derive(Clone, Debug)]
pub struct EntraConfig {
    tls: Option<TlsServerConfig>,
    public_url: Option<String>,
    aliases: Vec<String>,
    token_lifetime: Duration,
}

impl Default for EntraConfig {
    fn default() -> Self {
        EntraConfig {
            tls: None,
            public_url: None,
            aliases: Vec::new(),
            token_lifetime: Duration::from_secs(3599),
        }
    }
}

impl EntraConfig {
    /// Serve the token endpoint over HTTPS (IMDS stays plain HTTP, as the real one is).
    pub fn tls(mut self, tls: TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The authority host clients are told (e.g. `https://login.microsoftonline.test` reached
    /// through the test proxy's host map); default `http(s)://127.0.0.1:{port}`. Client assertions
    /// must name this URL in `aud`.
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.trim_end_matches('/').to_string());
        self
    }

    /// Another authority URL clients may use for this fake (e.g. `https://login.microsoftonline.test`
    /// through the test proxy while [`EntraFake::url`] stays `https://127.0.0.1:{port}`): client
    /// assertions may name its token endpoint in `aud` too.
    pub fn also_known_as(mut self, url: &str) -> Self {
        self.aliases.push(url.trim_end_matches('/').to_string());
        self
    }

    /// Lifetime of issued tokens (`expires_in`); default 3599 s. Sub-second parts are dropped on the
    /// wire and the minimum is 1 s.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }
}

/// One request the fake answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntraRequestRecord {
    /// `"token"` or `"imds"`.
    pub endpoint: &'static str,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub grant: Option<GrantKind>,
    pub status: u16,
    /// The AADSTS code of an error answer.
    pub error_code: Option<u32>,
    pub time: String,
}

#[derive(Debug, Default)]
struct App {
    tenant: String,
    secrets: Vec<String>,
    certificates: Vec<Vec<u8>>,
    federated: Vec<FederatedCredential>,
}

#[derive(Clone, Debug)]
struct FederatedCredential {
    issuer: String,
    subject: String,
    audience: String,
}

#[derive(Debug, Default)]
struct Faults {
    fail_next: VecDeque<u16>,
    garbage_next: u32,
    delay: Duration,
}

#[derive(Debug)]
struct State_ {
    apps: BTreeMap<String, App>,
    /// Managed identities by client id; `system` is the one IMDS uses without `client_id`.
    managed: BTreeMap<String, String>,
    system_assigned: Option<String>,
    client_errors: HashMap<String, EntraError>,
    lifetime: Duration,
    faults: Faults,
    log: Vec<EntraRequestRecord>,
    counts: HashMap<(String, GrantKind), u64>,
}

struct Shared {
    state: Mutex<State_>,
    registry: TokenRegistry,
    base_url: String,
    /// Authority URLs accepted in assertion audiences: `base_url` and the aliases.
    authorities: Vec<String>,
    imds_url: String,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State_> {
        lock(&self.state)
    }

    /// Registers (or moves) an application in `tenant` and lets `f` add a credential.
    fn with_app(&self, tenant: &str, client_id: &str, f: impl FnOnce(&mut App)) {
        let mut state = self.state();
        let app = state
            .apps
            .entry(client_id.to_ascii_lowercase())
            .or_default();
        app.tenant = tenant.to_ascii_lowercase();
        f(app);
    }
}

/// A running fake Entra ID (token endpoint + IMDS). Clones share it; dropping the last clone stops
/// both listeners.
#[derive(Clone)]
pub struct EntraFake {
    shared: Arc<Shared>,
    addr: SocketAddr,
    imds_addr: SocketAddr,
    _servers: Arc<(ServerHandle, ServerHandle)>,
}

impl std::fmt::Debug for EntraFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraFake")
            .field("url", &self.shared.base_url)
            .field("imds", &self.shared.imds_url)
            .finish_non_exhaustive()
    }
}

impl EntraFake {
    /// Starts the fake on 127.0.0.1 (two ephemeral ports: authority and IMDS) in the current tokio
    /// runtime.
    pub async fn start(config: EntraConfig) -> Result<EntraFake, TestkitError> {
        let (listener, addr) = tls::bind_loopback().await?;
        let (imds_listener, imds_addr) = tls::bind_loopback().await?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let shared = Arc::new(Shared {
            state: Mutex::new(State_ {
                apps: BTreeMap::new(),
                managed: BTreeMap::new(),
                system_assigned: None,
                client_errors: HashMap::new(),
                lifetime: config.token_lifetime,
                faults: Faults::default(),
                log: Vec::new(),
                counts: HashMap::new(),
            }),
            registry: TokenRegistry::default(),
            authorities: std::iter::once(base_url.clone())
                .chain(config.aliases.iter().cloned())
                .collect(),
            base_url,
            imds_url: format!("http://{imds_addr}/metadata/identity/oauth2/token"),
        });
        let app = router(shared.clone());
        let server = tls::serve(listener, app.clone(), config.tls.as_ref(), "fake Entra ID");
        let imds = tls::serve(imds_listener, app, None, "fake IMDS");
        Ok(EntraFake {
            shared,
            addr,
            imds_addr,
            _servers: Arc::new((server, imds)),
        })
    }

    /// The authority host (`AZURE_AUTHORITY_HOST`), no trailing slash.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Where the authority listens (for a proxy host map when [`EntraConfig::public_url`] is set).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `{url}/{tenant}/oauth2/v2.0/token`: the token endpoint, and the `aud` of client assertions.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.shared.base_url)
    }

    /// `http://127.0.0.1:{port}/metadata/identity/oauth2/token`: the IMDS token endpoint.
    pub fn imds_endpoint(&self) -> String {
        self.shared.imds_url.clone()
    }

    pub fn imds_addr(&self) -> SocketAddr {
        self.imds_addr
    }

    /// The tokens this fake issued; give it to [`crate::ado::AdoSimulator::trust_entra`].
    pub fn registry(&self) -> TokenRegistry {
        self.shared.registry.clone()
    }

    // ----- set-up -------------------------------------------------------------------------------

    fn with_app(&self, tenant: &str, client_id: &str, f: impl FnOnce(&mut App)) {
        self.shared.with_app(tenant, client_id, f)
    }

    /// Registers an application in `tenant` (idempotent) with a client secret.
    pub fn add_client_secret(&self, tenant: &str, client_id: &str, secret: &str) {
        self.with_app(tenant, client_id, |app| {
            app.secrets.push(secret.to_string())
        });
    }

    /// Registers a certificate credential (DER) for the application: client assertions with its
    /// `x5t`/`x5t#S256` must be signed with its key.
    pub fn add_client_certificate(&self, tenant: &str, client_id: &str, certificate_der: &[u8]) {
        self.with_app(tenant, client_id, |app| {
            app.certificates.push(certificate_der.to_vec())
        });
    }

    /// Registers a federated identity credential: an assertion with this `iss` and `sub`
    /// (`system:serviceaccount:{namespace}:{name}`) and `aud` `api://AzureADTokenExchange` is
    /// exchanged for a token of the application (workload identity).
    pub fn add_federated_credential(
        &self,
        tenant: &str,
        client_id: &str,
        issuer: &str,
        subject: &str,
    ) {
        self.with_app(tenant, client_id, |app| {
            app.federated.push(FederatedCredential {
                issuer: issuer.to_string(),
                subject: subject.to_string(),
                audience: WORKLOAD_IDENTITY_AUDIENCE.to_string(),
            })
        });
    }

    /// Registers a user-assigned managed identity for IMDS. `tenant` is recorded in its tokens.
    pub fn add_managed_identity(&self, tenant: &str, client_id: &str) {
        self.shared
            .state()
            .managed
            .insert(client_id.to_ascii_lowercase(), tenant.to_ascii_lowercase());
    }

    /// Registers the system-assigned managed identity (used by IMDS requests without `client_id`).
    pub fn set_system_assigned_identity(&self, tenant: &str, client_id: &str) {
        let mut state = self.shared.state();
        state
            .managed
            .insert(client_id.to_ascii_lowercase(), tenant.to_ascii_lowercase());
        state.system_assigned = Some(client_id.to_ascii_lowercase());
    }

    /// Every request for `client_id` (token endpoint or IMDS) gets `error` from now on.
    pub fn fail_client(&self, client_id: &str, error: EntraError) {
        self.shared
            .state()
            .client_errors
            .insert(client_id.to_ascii_lowercase(), error);
    }

    /// Requests for `client_id` are answered normally again.
    pub fn heal_client(&self, client_id: &str) {
        self.shared
            .state()
            .client_errors
            .remove(&client_id.to_ascii_lowercase());
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.state().lifetime = lifetime;
    }

    // ----- faults -------------------------------------------------------------------------------

    /// The next `n` requests (either endpoint) fail with `status` (5xx: `temporarily_unavailable`
    /// / `server_error` bodies with AADSTS90033 / AADSTS90100 ... codes; 429 with `Retry-After`).
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut state = self.shared.state();
        for _ in 0..n {
            state.faults.fail_next.push_back(status);
        }
    }

    /// The next `n` requests get 200 with an HTML page instead of JSON (a captive portal or a
    /// misconfigured authority host).
    pub fn garbage_next(&self, n: u32) {
        self.shared.state().faults.garbage_next += n;
    }

    /// Every answer is delayed by `delay` (a client timeout test); `Duration::ZERO` turns it off.
    pub fn delay(&self, delay: Duration) {
        self.shared.state().faults.delay = delay;
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults = Faults::default();
    }

    // ----- tokens and counters ------------------------------------------------------------------

    /// Issues a token without an HTTP request (for tests of the simulator side).
    pub fn issue_token(&self, tenant: &str, client_id: &str, grant: GrantKind) -> String {
        let lifetime = self.shared.state().lifetime;
        issue(&self.shared, tenant, client_id, grant, lifetime).0
    }

    /// Every issued token expires now.
    pub fn expire_tokens(&self) {
        self.shared.registry.expire_all();
    }

    /// Requests for `client_id` recognised as `grant` (successful or not).
    pub fn count(&self, client_id: &str, grant: GrantKind) -> u64 {
        self.shared
            .state()
            .counts
            .get(&(client_id.to_ascii_lowercase(), grant))
            .copied()
            .unwrap_or(0)
    }

    /// Requests naming `client_id`, any grant, any outcome.
    pub fn token_requests(&self, client_id: &str) -> usize {
        let id = client_id.to_ascii_lowercase();
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| r.client_id.as_deref() == Some(id.as_str()))
            .count()
    }

    /// Successful token answers for `client_id`.
    pub fn tokens_issued(&self, client_id: &str) -> usize {
        let id = client_id.to_ascii_lowercase();
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| r.client_id.as_deref() == Some(id.as_str()) && r.status == 200)
            .count()
    }

    pub fn requests(&self) -> Vec<EntraRequestRecord> {
        self.shared.state().log.clone()
    }

    pub fn clear_requests(&self) {
        let mut state = self.shared.state();
        state.log.clear();
        state.counts.clear();
    }
}

/// A JWT assertion a client sends, built by tests: `header` and `claims` are JSON objects.
/// The signature part is `signature` base64url-encoded.
pub fn jwt(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

/// A projected service-account token as the kubelet writes it for Azure Workload Identity
/// (`iss` = the cluster's OIDC issuer, `sub` = `system:serviceaccount:{namespace}:{name}`,
/// `aud` = `api://AzureADTokenExchange`, valid for `lifetime`). The fake does not verify its
/// signature (Entra would, against the issuer's JWKS), so it carries a dummy one.
pub fn service_account_token(
    issuer: &str,
    namespace: &str,
    service_account: &str,
    lifetime: Duration,
) -> String {
    let now = jiff::Timestamp::now().as_second();
    jwt(
        &json!({"alg": "RS256", "kid": "testkit-sa"}),
        &json!({
            "aud": [WORKLOAD_IDENTITY_AUDIENCE],
            "iss": issuer,
            "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime.as_secs() as i64,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
        }),
        &random_bytes::<32>(),
    )
}

/// A client assertion signed with `certificate`'s key (RS256, `x5t` and `x5t#S256` headers, `aud` =
/// `token_url`, `iss` = `sub` = `client_id`, valid for 10 minutes), as MSAL and the Azure SDKs
/// build it.
pub fn certificate_assertion(
    certificate: &tls::ClientCertificate,
    token_url: &str,
    client_id: &str,
) -> Result<String, TestkitError> {
    let now = jiff::Timestamp::now().as_second();
    let header = json!({
        "alg": "RS256", "typ": "JWT",
        "x5t": certificate.x5t(), "x5t#S256": certificate.x5t_s256(),
    });
    let claims = json!({
        "aud": token_url, "iss": client_id, "sub": client_id,
        "jti": guid(), "iat": now, "nbf": now, "exp": now + 600,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = certificate.sign_rs256(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64url(&signature)))
}

// ----- HTTP -------------------------------------------------------------------------------------

fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/metadata/identity/oauth2/token", get(imds))
        .route("/_entra/apps", post(control_app))
        .route("/_entra/managed-identities", post(control_managed))
        .route("/_entra/errors", post(control_error).delete(control_heal))
        .route(
            "/_entra/faults",
            post(control_faults).delete(control_clear_faults),
        )
        .route("/_entra/token-lifetime", put(control_lifetime))
        .route("/_entra/expire-tokens", post(control_expire))
        .route("/_entra/requests", get(control_requests))
        .route("/_entra/requests", delete(control_clear_requests))
        .with_state(shared)
}

struct Oauth {
    status: StatusCode,
    error: std::borrow::Cow<'static, str>,
    code: u32,
    message: String,
}

impl Oauth {
    fn new(status: u16, error: &'static str, code: u32, message: impl Into<String>) -> Oauth {
        Oauth {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            error: error.into(),
            code,
            message: message.into(),
        }
    }

    fn missing(param: &str) -> Oauth {
        Oauth::new(
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }

    fn from_configured(e: &EntraError, tenant: &str, client_id: &str) -> Oauth {
        match e {
            EntraError::ApplicationNotFound => app_not_found(tenant, client_id),
            EntraError::InvalidClientSecret => invalid_secret(client_id),
            EntraError::ExpiredClientSecret => Oauth::new(
                401,
                "invalid_client",
                7000222,
                format!("The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."),
            ),
            EntraError::NoMatchingFederatedIdentity => no_federated_match("", "", ""),
            EntraError::Custom {
                status,
                error,
                code,
                message,
            } => Oauth {
                status: StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                error: error.clone().into(),
                code: *code,
                message: message.clone(),
            },
        }
    }

    /// Entra's error body: the description repeats trace id, correlation id and timestamp.
    fn body(&self) -> Value {
        let trace_id = guid();
        let correlation_id = guid();
        let timestamp = jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M:%SZ")
            .to_string();
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.message
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

fn app_not_found(tenant: &str, client_id: &str) -> Oauth {
    Oauth::new(
        400,
        "unauthorized_client",
        700016,
        format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
    )
}

fn invalid_secret(client_id: &str) -> Oauth {
    Oauth::new(
        401,
        "invalid_client",
        7000215,
        format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
    )
}

fn no_federated_match(iss: &str, sub: &str, aud: &str) -> Oauth {
    Oauth::new(
        400,
        "invalid_request",
        70021,
        format!("No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{aud}'. https://docs.microsoft.com/azure/active-directory/develop/workload-identity-federation"),
    )
}

fn invalid_jwt(detail: &str) -> Oauth {
    Oauth::new(
        401,
        "invalid_client",
        50027,
        format!("JWT token is invalid or malformed. {detail}"),
    )
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert("pragma", axum::http::HeaderValue::from_static("no-cache"));
    response
}

fn now_text() -> String {
    jiff::Timestamp::now().to_string()
}

fn record(
    shared: &Shared,
    endpoint: &'static str,
    tenant: Option<&str>,
    client_id: Option<&str>,
    grant: Option<GrantKind>,
    status: StatusCode,
    error_code: Option<u32>,
) {
    let mut state = shared.state();
    let client_id = client_id.map(str::to_ascii_lowercase);
    if let (Some(id), Some(g)) = (&client_id, grant) {
        *state.counts.entry((id.clone(), g)).or_insert(0) += 1;
    }
    if state.log.len() >= MAX_LOG {
        state.log.drain(..MAX_LOG / 10);
    }
    state.log.push(EntraRequestRecord {
        endpoint,
        tenant: tenant.map(str::to_ascii_lowercase),
        client_id,
        grant,
        status: status.as_u16(),
        error_code,
        time: now_text(),
    });
}

/// Injected faults, checked before anything else. `None`: answer normally.
async fn injected(shared: &Shared, imds: bool) -> Option<Response> {
    let (delay, fail, garbage) = {
        let mut state = shared.state();
        let fail = state.faults.fail_next.pop_front();
        let garbage = fail.is_none() && state.faults.garbage_next > 0;
        if garbage {
            state.faults.garbage_next -= 1;
        }
        (state.faults.delay, fail, garbage)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = fail {
        let (error, code, message) = match status {
            429 => ("temporarily_unavailable", 50196, "The server terminated an operation because it encountered a client request loop. Please contact your app vendor."),
            500 => ("server_error", 90100, "An internal error occurred. Retry the request."),
            _ => ("temporarily_unavailable", 90033, "A transient error has occurred. Please try again."),
        };
        let o = Oauth::new(status, error, code, message);
        let mut response = if imds {
            (
                o.status,
                Json(json!({"error": error, "error_description": message})),
            )
                .into_response()
        } else {
            (o.status, Json(o.body())).into_response()
        };
        if status == 429 || status == 503 {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        return Some(response);
    }
    if garbage {
        return Some(
            (
                StatusCode::OK,
                [("content-type", "text/html; charset=utf-8")],
                "<!DOCTYPE html><html><head><title>Sign in to your account</title></head><body>Proxy sign-in required</body></html>",
            )
                .into_response(),
        );
    }
    None
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = injected(&shared, false).await {
        record(
            &shared,
            "token",
            Some(&tenant),
            None,
            None,
            r.status(),
            None,
        );
        return r;
    }
    let (client_id, grant, answer) = token_answer(&shared, &tenant, &body);
    let code = answer.as_ref().err().map(|o| o.code);
    let response = match answer {
        Ok(body) => no_store((StatusCode::OK, Json(body)).into_response()),
        Err(o) => no_store((o.status, Json(o.body())).into_response()),
    };
    record(
        &shared,
        "token",
        Some(&tenant),
        client_id.as_deref(),
        grant,
        response.status(),
        code,
    );
    response
}

/// The token endpoint's decision: (client id, recognised grant, body or error).
fn token_answer(
    shared: &Shared,
    tenant: &str,
    body: &[u8],
) -> (Option<String>, Option<GrantKind>, Result<Value, Oauth>) {
    if body.len() > MAX_BODY {
        return (
            None,
            None,
            Err(Oauth::new(
                400,
                "invalid_request",
                90020,
                "The request body is too large.",
            )),
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let client_id = get("client_id").map(str::to_string);
    let grant = if get("client_secret").is_some() {
        Some(GrantKind::ClientSecret)
    } else {
        get("client_assertion").map(assertion_kind)
    };
    let result = (|| {
        let grant_type = get("grant_type").ok_or_else(|| Oauth::missing("grant_type"))?;
        if grant_type != "client_credentials" {
            return Err(Oauth::new(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{grant_type}'."),
            ));
        }
        let client_id = get("client_id").ok_or_else(|| Oauth::missing("client_id"))?;
        let lifetime = {
            let state = shared.state();
            if let Some(e) = state.client_errors.get(&client_id.to_ascii_lowercase()) {
                return Err(Oauth::from_configured(e, tenant, client_id));
            }
            let app = state
                .apps
                .get(&client_id.to_ascii_lowercase())
                .filter(|a| a.tenant.eq_ignore_ascii_case(tenant))
                .ok_or_else(|| app_not_found(tenant, client_id))?;
            check_scope(get("scope"), tenant)?;
            let secret = get("client_secret");
            let assertion = get("client_assertion");
            match (secret, assertion) {
                (Some(_), Some(_)) => {
                    return Err(Oauth::new(
                        400,
                        "invalid_request",
                        90015,
                        "The request contains both 'client_secret' and 'client_assertion'; send exactly one.",
                    ))
                }
                (None, None) => {
                    return Err(Oauth::new(
                        401,
                        "invalid_client",
                        7000218,
                        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                    ))
                }
                (Some(s), None) => {
                    if !app.secrets.iter().any(|known| known == s) {
                        return Err(invalid_secret(client_id));
                    }
                }
                (None, Some(a)) => {
                    if get("client_assertion_type") != Some(JWT_BEARER) {
                        return Err(Oauth::new(
                            400,
                            "invalid_request",
                            900144,
                            format!("The request body must contain the following parameter: 'client_assertion_type' with the value '{JWT_BEARER}'."),
                        ));
                    }
                    check_assertion(app, a, client_id, tenant, &shared.authorities)?;
                }
            }
            state.lifetime
        };
        let g = grant.unwrap_or(GrantKind::ClientSecret);
        let (access_token, expires_in) = issue(shared, tenant, client_id, g, lifetime);
        Ok(json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        }))
    })();
    (client_id, grant, result)
}

fn check_scope(scope: Option<&str>, tenant: &str) -> Result<(), Oauth> {
    let scope = scope.ok_or_else(|| Oauth::missing("scope"))?;
    let Some(resource) = scope.strip_suffix("/.default") else {
        return Err(Oauth::new(
            400,
            "invalid_scope",
            1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        ));
    };
    if resource != AZURE_DEVOPS_RESOURCE {
        return Err(Oauth::new(
            400,
            "invalid_resource",
            500011,
            format!("The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant. (The fake knows only Azure DevOps, {AZURE_DEVOPS_RESOURCE}.)"),
        ));
    }
    Ok(())
}

struct Jwt {
    header: Value,
    claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

fn parse_jwt(token: &str) -> Option<Jwt> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
    let signature = URL_SAFE_NO_PAD.decode(s).ok()?;
    (header.is_object() && claims.is_object()).then(|| Jwt {
        header,
        claims,
        signing_input: format!("{h}.{c}"),
        signature,
    })
}

fn assertion_kind(assertion: &str) -> GrantKind {
    match parse_jwt(assertion) {
        Some(jwt) if jwt.header.get("x5t").is_some() || jwt.header.get("x5t#S256").is_some() => {
            GrantKind::ClientCertificate
        }
        _ => GrantKind::FederatedToken,
    }
}

fn str_claim<'a>(claims: &'a Value, name: &str) -> &'a str {
    claims.get(name).and_then(Value::as_str).unwrap_or("")
}

/// `aud` may be a string or an array of strings (RFC 7519 §4.1.3).
fn audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn check_times(claims: &Value) -> Result<(), Oauth> {
    let now = jiff::Timestamp::now().as_second();
    let exp = claims.get("exp").and_then(Value::as_i64);
    let nbf = claims.get("nbf").and_then(Value::as_i64);
    let valid = exp.is_some_and(|e| e + CLOCK_SKEW_SECS > now)
        && nbf.is_none_or(|n| n - CLOCK_SKEW_SECS <= now);
    if valid {
        Ok(())
    } else {
        Err(Oauth::new(
            401,
            "invalid_client",
            700024,
            format!("Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                jiff::Timestamp::now(),
                nbf.map_or("(none)".to_string(), |n| n.to_string()),
                exp.map_or("(none)".to_string(), |e| e.to_string())),
        ))
    }
}

fn check_assertion(
    app: &App,
    assertion: &str,
    client_id: &str,
    tenant: &str,
    authorities: &[String],
) -> Result<(), Oauth> {
    let jwt = parse_jwt(assertion).ok_or_else(|| {
        invalid_jwt("The client assertion is not a JWS in compact serialization.")
    })?;
    let x5t = jwt.header.get("x5t").and_then(Value::as_str);
    let x5t_s256 = jwt.header.get("x5t#S256").and_then(Value::as_str);
    if x5t.is_none() && x5t_s256.is_none() {
        return check_federated(app, &jwt);
    }
    // Certificate credential: find the registered certificate by thumbprint, verify the
    // signature against it, then the claims.
    let cert = app
        .certificates
        .iter()
        .find(|der| {
            let sha1 = b64url(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
                    .as_ref(),
            );
            let sha256 =
                b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref());
            x5t_s256.map_or(x5t == Some(sha1.as_str()), |t| t == sha256)
        })
        .ok_or_else(|| {
            Oauth::new(
                401,
                "invalid_client",
                700027,
                format!("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]", x5t.or(x5t_s256).unwrap_or_default()),
            )
        })?;
    let alg: &dyn rustls::pki_types::SignatureVerificationAlgorithm =
        match jwt.header.get("alg").and_then(Value::as_str) {
            Some("RS256") => webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => webpki::aws_lc_rs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            other => {
                return Err(invalid_jwt(&format!(
                    "The signing algorithm {other:?} is not supported; use RS256 or PS256."
                )))
            }
        };
    let der = rustls::pki_types::CertificateDer::from(cert.as_slice());
    let verified = webpki::EndEntityCert::try_from(&der)
        .ok()
        .is_some_and(|ee| {
            ee.verify_signature(alg, jwt.signing_input.as_bytes(), &jwt.signature)
                .is_ok()
        });
    if !verified {
        return Err(Oauth::new(
            401,
            "invalid_client",
            700027,
            "Client assertion failed signature validation.",
        ));
    }
    let iss = str_claim(&jwt.claims, "iss");
    let sub = str_claim(&jwt.claims, "sub");
    if !iss.eq_ignore_ascii_case(client_id) || !sub.eq_ignore_ascii_case(client_id) {
        return Err(Oauth::new(
            400,
            "invalid_request",
            700021,
            format!("Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/en-us/azure/active-directory/develop/active-directory-certificate-credentials . (iss '{iss}', sub '{sub}')"),
        ));
    }
    // Entra accepts the v2.0 or v1 token endpoint of the tenant as the audience.
    let accepted: Vec<String> = authorities
        .iter()
        .flat_map(|base| {
            [
                format!("{base}/{tenant}/oauth2/v2.0/token"),
                format!("{base}/{tenant}/oauth2/token"),
            ]
        })
        .collect();
    let aud = audiences(&jwt.claims);
    if !aud
        .iter()
        .any(|a| accepted.iter().any(|ok| ok.eq_ignore_ascii_case(a)))
    {
        return Err(Oauth::new(
            401,
            "invalid_client",
            700212,
            format!("The audience {aud:?} of the client assertion is not the token endpoint: expected '{}'.", accepted.first().map(String::as_str).unwrap_or_default()),
        ));
    }
    check_times(&jwt.claims)
}

fn check_federated(app: &App, jwt: &Jwt) -> Result<(), Oauth> {
    let iss = str_claim(&jwt.claims, "iss");
    let sub = str_claim(&jwt.claims, "sub");
    let aud = audiences(&jwt.claims);
    let matched = app
        .federated
        .iter()
        .any(|f| f.issuer == iss && f.subject == sub && aud.contains(&f.audience));
    if !matched {
        return Err(no_federated_match(iss, sub, &aud.join(",")));
    }
    check_times(&jwt.claims)
}

/// Issues and registers a token; returns it with its `expires_in`.
fn issue(
    shared: &Shared,
    tenant: &str,
    client_id: &str,
    grant: GrantKind,
    lifetime: Duration,
) -> (String, u64) {
    let secs = lifetime.as_secs().max(1);
    let now = jiff::Timestamp::now().as_second();
    let tenant = tenant.to_ascii_lowercase();
    let client_id = client_id.to_ascii_lowercase();
    let token = jwt(
        &json!({"typ": "JWT", "alg": "RS256", "kid": "lockstep-testkit"}),
        &json!({
            "aud": AZURE_DEVOPS_RESOURCE,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": now, "nbf": now, "exp": now + secs as i64,
            "appid": client_id, "tid": tenant, "idtyp": "app", "uti": guid(),
        }),
        &random_bytes::<32>(),
    );
    shared.registry.insert(
        token.clone(),
        IssuedToken {
            client_id,
            tenant_id: tenant,
            grant,
            audience: AZURE_DEVOPS_RESOURCE.to_string(),
            expires_at: Instant::now() + Duration::from_secs(secs),
        },
    );
    (token, secs)
}

#[derive(Deserialize)]
struct ImdsQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    resource: Option<String>,
    client_id: Option<String>,
    object_id: Option<String>,
    msi_res_id: Option<String>,
    mi_res_id: Option<String>,
}

fn imds_error(status: u16, error: &str, description: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn imds(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<ImdsQuery>,
) -> Response {
    if let Some(r) = injected(&shared, true).await {
        record(
            &shared,
            "imds",
            None,
            q.client_id.as_deref(),
            None,
            r.status(),
            None,
        );
        return r;
    }
    let (client_id, tenant, response) = imds_answer(&shared, &headers, &q);
    let grant = client_id.as_ref().map(|_| GrantKind::ManagedIdentity);
    record(
        &shared,
        "imds",
        tenant.as_deref(),
        client_id.as_deref().or(q.client_id.as_deref()),
        grant,
        response.status(),
        None,
    );
    response
}

fn imds_answer(
    shared: &Shared,
    headers: &HeaderMap,
    q: &ImdsQuery,
) -> (Option<String>, Option<String>, Response) {
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !metadata {
        return (
            None,
            None,
            imds_error(
                400,
                "invalid_request",
                "Required metadata header not specified",
            ),
        );
    }
    if headers.contains_key("x-forwarded-for") {
        // IMDS refuses requests that went through a proxy.
        return (
            None,
            None,
            imds_error(
                400,
                "invalid_request",
                "Request rejected: it carries an X-Forwarded-For header",
            ),
        );
    }
    if q.api_version.as_deref().is_none_or(str::is_empty) {
        return (
            None,
            None,
            imds_error(
                400,
                "invalid_request",
                "Required query variable 'api-version' is missing",
            ),
        );
    }
    let Some(resource) = q.resource.as_deref().filter(|r| !r.is_empty()) else {
        return (
            None,
            None,
            imds_error(
                400,
                "invalid_request",
                "Required audience parameter not specified",
            ),
        );
    };
    if q.object_id.is_some() || q.msi_res_id.is_some() || q.mi_res_id.is_some() {
        return (
            None,
            None,
            imds_error(400, "invalid_request", "The fake IMDS selects identities by client_id only; object_id and msi_res_id are not simulated"),
        );
    }
    let (client_id, tenant, lifetime) = {
        let state = shared.state();
        let chosen = match q.client_id.as_deref() {
            Some(id) => state
                .managed
                .get_key_value(&id.to_ascii_lowercase())
                .map(|(k, v)| (k.clone(), v.clone())),
            None => match (&state.system_assigned, state.managed.len()) {
                (Some(sys), _) => state.managed.get(sys).map(|t| (sys.clone(), t.clone())),
                (None, 1) => state
                    .managed
                    .iter()
                    .next()
                    .map(|(k, v)| (k.clone(), v.clone())),
                (None, 0) => None,
                (None, _) => {
                    return (
                        None,
                        None,
                        imds_error(400, "invalid_request", "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"),
                    )
                }
            },
        };
        let Some((client_id, tenant)) = chosen else {
            return (
                None,
                None,
                imds_error(400, "invalid_request", "Identity not found"),
            );
        };
        if let Some(e) = state.client_errors.get(&client_id) {
            let o = Oauth::from_configured(e, &tenant, &client_id);
            let description = o.body()["error_description"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            return (
                Some(client_id),
                Some(tenant),
                imds_error(o.status.as_u16(), &o.error, &description),
            );
        }
        (client_id, tenant, state.lifetime)
    };
    let resource_id = resource.trim_end_matches('/');
    if resource_id != AZURE_DEVOPS_RESOURCE {
        return (
            Some(client_id),
            Some(tenant.clone()),
            imds_error(400, "invalid_resource", &format!("AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. (The fake knows only Azure DevOps, {AZURE_DEVOPS_RESOURCE}.)")),
        );
    }
    let (token, secs) = issue(
        shared,
        &tenant,
        &client_id,
        GrantKind::ManagedIdentity,
        lifetime,
    );
    let now = jiff::Timestamp::now().as_second();
    let body = json!({
        "access_token": token,
        "client_id": client_id,
        "expires_in": secs.to_string(),
        "expires_on": (now + secs as i64).to_string(),
        "ext_expires_in": secs.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    (
        Some(client_id),
        Some(tenant),
        (StatusCode::OK, Json(body)).into_response(),
    )
}

// ----- control API (`/_entra/...`, JSON, no auth) ----------------------------------------------

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppBody {
    tenant_id: String,
    client_id: String,
    secret: Option<String>,
    certificate_pem: Option<String>,
    federated: Option<FederatedBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FederatedBody {
    issuer: String,
    subject: String,
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

async fn control_app(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let b: AppBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("invalid body: {e}")),
    };
    let fake = shared;
    fake.with_app(&b.tenant_id, &b.client_id, |_| {});
    if let Some(s) = &b.secret {
        fake.with_app(&b.tenant_id, &b.client_id, |app| {
            app.secrets.push(s.clone())
        });
    }
    if let Some(pem) = &b.certificate_pem {
        let Some(der) = pem_to_der(pem) else {
            return bad("certificatePem holds no PEM CERTIFICATE block");
        };
        fake.with_app(&b.tenant_id, &b.client_id, |app| app.certificates.push(der));
    }
    if let Some(f) = &b.federated {
        fake.with_app(&b.tenant_id, &b.client_id, |app| {
            app.federated.push(FederatedCredential {
                issuer: f.issuer.clone(),
                subject: f.subject.clone(),
                audience: WORKLOAD_IDENTITY_AUDIENCE.to_string(),
            })
        });
    }
    (StatusCode::CREATED, Json(json!({"clientId": b.client_id}))).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ManagedBody {
    tenant_id: String,
    client_id: String,
    #[serde(default)]
    system_assigned: bool,
}

async fn control_managed(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let b: ManagedBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("invalid body: {e}")),
    };
    let mut state = shared.state();
    state.managed.insert(
        b.client_id.to_ascii_lowercase(),
        b.tenant_id.to_ascii_lowercase(),
    );
    if b.system_assigned {
        state.system_assigned = Some(b.client_id.to_ascii_lowercase());
    }
    (StatusCode::CREATED, Json(json!({"clientId": b.client_id}))).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ErrorBody {
    client_id: String,
    error: EntraError,
}

async fn control_error(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let b: ErrorBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("invalid body: {e} (error: \"applicationNotFound\" | \"invalidClientSecret\" | \"expiredClientSecret\" | \"noMatchingFederatedIdentity\" | {{\"custom\": {{status, error, code, message}}}})")),
    };
    shared
        .state()
        .client_errors
        .insert(b.client_id.to_ascii_lowercase(), b.error);
    StatusCode::NO_CONTENT.into_response()
}

async fn control_heal(State(shared): State<Arc<Shared>>) -> Response {
    shared.state().client_errors.clear();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultsBody {
    fail_next: Option<FailNext>,
    garbage_next: Option<u32>,
    delay_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailNext {
    count: u32,
    status: u16,
}

async fn control_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let b: FaultsBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("invalid body: {e}")),
    };
    let mut state = shared.state();
    if let Some(f) = b.fail_next {
        if !(400..=599).contains(&f.status) {
            return bad("failNext.status must be 400..=599");
        }
        for _ in 0..f.count.min(10_000) {
            state.faults.fail_next.push_back(f.status);
        }
    }
    if let Some(n) = b.garbage_next {
        state.faults.garbage_next += n;
    }
    if let Some(ms) = b.delay_ms {
        state.faults.delay = Duration::from_millis(ms.min(600_000));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn control_clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    shared.state().faults = Faults::default();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifetimeBody {
    seconds: u64,
}

async fn control_lifetime(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let b: LifetimeBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("invalid body: {e} (expected {{\"seconds\": n}})")),
    };
    shared.state().lifetime = Duration::from_secs(b.seconds.max(1));
    StatusCode::NO_CONTENT.into_response()
}

async fn control_expire(State(shared): State<Arc<Shared>>) -> Response {
    shared.registry.expire_all();
    StatusCode::NO_CONTENT.into_response()
}

async fn control_requests(State(shared): State<Arc<Shared>>) -> Response {
    let state = shared.state();
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((id, grant), n) in &state.counts {
        let g = serde_json::to_value(grant)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        counts.entry(id.clone()).or_default().insert(g, *n);
    }
    Json(json!({"count": state.log.len(), "value": state.log, "counts": counts})).into_response()
}

async fn control_clear_requests(State(shared): State<Arc<Shared>>) -> Response {
    let mut state = shared.state();
    state.log.clear();
    state.counts.clear();
    StatusCode::NO_CONTENT.into_response()
}
