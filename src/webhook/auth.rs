//! Who may deliver hints. Azure DevOps signs nothing, so the receiver checks what the subscription can
//! send: HTTP Basic credentials and/or a shared secret header (the Web Hooks consumer's `httpHeaders`).
//! When both are configured, a delivery must carry both. Comparisons run in constant time (`subtle`), so
//! response timing does not reveal how much of a guess was right; only the length of a wrong guess can
//! differ, which tells an attacker nothing about the secret's content.
//!
//! **Rotation.** Credentials read from files (a mounted Secret) are re-read every
//! [`RELOAD_INTERVAL`] ([`WebhookAuth::spawn_reloader`]); the kubelet swaps a mounted Secret's `..data`
//! symlink atomically, so a read sees the old or the new file, never half of each. When they change, the
//! new credentials are used at once and the previous ones stay accepted for [`ROTATION_GRACE`], so there is
//! no moment where neither works (replicas pick up the change at different times, and Azure DevOps is
//! updated by hand). A file that vanishes or turns empty keeps the credentials in use.
//!
//! [`WebhookAuth::from_run_flags`] is the one path from `lockstep run`'s flags to the receiver's policy,
//! including the password lockstep generates into a Secret (`--webhook-password-secret`, see
//! [`super::generated_password`]).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use http::{header, HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use crate::secret::SecretString;

pub const DEFAULT_TOKEN_HEADER: &str = "X-Lockstep-Token";
/// How often credential files are re-read: cheap (two small files), and well inside the kubelet's own
/// delay in updating a mounted Secret (its sync period, about a minute).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// How long the previous credentials stay accepted after a rotation.
pub const ROTATION_GRACE: Duration = Duration::from_secs(300);
/// Longest credential file read; a mounted password or token is a few dozen bytes.
const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;

/// `lockstep run`'s webhook authentication flags (flattened into its arguments); each also reads
/// `LOCKSTEP_<NAME>`.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookAuthFlags {
    /// Username expected in the HTTP Basic credentials of service hooks.
    #[arg(long, env = "LOCKSTEP_WEBHOOK_USERNAME")]
    pub webhook_username: Option<String>,
    /// File holding the HTTP Basic password of service hooks (mounted from a Secret; re-read when it
    /// changes).
    #[arg(long, env = "LOCKSTEP_WEBHOOK_PASSWORD_FILE")]
    pub webhook_password_file: Option<PathBuf>,
    /// Secret in lockstep's own namespace whose `password` key holds the HTTP Basic password; lockstep
    /// generates a random one into it at start when the key is missing. Later rotations arrive through
    /// --webhook-password-file.
    #[arg(long, env = "LOCKSTEP_WEBHOOK_PASSWORD_SECRET")]
    pub webhook_password_secret: Option<String>,
    /// File holding the shared header token of service hooks (mounted from a Secret; re-read when it
    /// changes).
    #[arg(long, env = "LOCKSTEP_WEBHOOK_TOKEN_FILE")]
    pub webhook_token_file: Option<PathBuf>,
    #[arg(
        long,
        env = "LOCKSTEP_WEBHOOK_TOKEN_HEADER",
        default_value = DEFAULT_TOKEN_HEADER
    )]
    pub webhook_token_header: String,
    /// Accept service hooks without credentials; only behind something that authenticates for you.
    #[arg(long, env = "LOCKSTEP_WEBHOOK_ALLOW_UNAUTHENTICATED")]
    pub webhook_allow_unauthenticated: bool,
}

impl Default for WebhookAuthFlags {
    fn default() -> Self {
        Self {
            webhook_username: None,
            webhook_password_file: None,
            webhook_password_secret: None,
            webhook_token_file: None,
            webhook_token_header: DEFAULT_TOKEN_HEADER.to_string(),
            webhook_allow_unauthenticated: false,
        }
    }
}

/// How deliveries are authenticated. Cheap to clone: clones share the credentials, so a reload is seen by
/// every clone. `Debug` never shows a secret.
#[derive(Clone)]
pub struct WebhookAuth {
    state: Arc<RwLock<State>>,
    sources: Arc<Sources>,
    grace: Duration,
}

/// The credentials in force, and the ones they replaced while those are still accepted.
struct State {
    current: Credentials,
    previous: Option<(Credentials, Instant)>,
    /// What the files held when last read; a reload acts only on a change.
    seen_password: Option<SecretString>,
    seen_token: Option<SecretString>,
}

/// Where credentials come from, for reloads.
#[derive(Debug, Default)]
struct Sources {
    username: Option<String>,
    password_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    token_header: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Credentials {
    basic: Option<BasicCredentials>,
    token: Option<HeaderToken>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct BasicCredentials {
    username: String,
    password: SecretString,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct HeaderToken {
    header: HeaderName,
    token: SecretString,
}

/// See [`WebhookAuth::for_subscriptions`].
#[derive(Clone, Debug, Default)]
pub struct SubscriptionCredentials {
    pub basic: Option<(String, SecretString)>,
    /// Header name and token.
    pub token: Option<(String, SecretString)>,
}

/// Why a delivery was refused; also the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// A configured method's header is absent or not in the expected form.
    Missing,
    /// Credentials were present but wrong.
    Invalid,
}

impl AuthFailure {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Missing => "missing_credentials",
            Self::Invalid => "invalid_credentials",
        }
    }
}

/// What a reload found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what they held before (or nothing is read from files).
    Unchanged,
    /// New credentials are in force; the previous ones are accepted until the grace ends.
    Rotated,
    /// A file changed but cannot be used (unreadable, empty); the credentials in force stay.
    Kept(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("no webhook authentication is configured: set --webhook-username with --webhook-password-file and/or --webhook-token-file, or pass --webhook-allow-unauthenticated to accept unauthenticated deliveries on purpose")]
    NothingConfigured,
    #[error("--webhook-username and --webhook-password-file (or --webhook-password-secret) must be given together")]
    IncompleteBasic,
    #[error("the webhook username must be 1-256 characters without spaces or ':' (Azure DevOps' rule for basicAuthUsername)")]
    InvalidUsername,
    #[error("could not read the webhook {what} from {path}: {source}; check that the Secret is mounted at that path")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the webhook {what} is empty; put a non-empty value in the Secret")]
    Empty { what: &'static str },
    #[error("{0:?} is not a valid HTTP header name for the webhook token")]
    InvalidHeaderName(String),
    #[error("the webhook token header cannot be Authorization while Basic authentication is configured: use a separate header such as X-Lockstep-Token")]
    TokenHeaderClashesWithBasic,
    #[error(transparent)]
    PasswordSecret(#[from] super::generated_password::PasswordSecretError),
}

impl Credentials {
    fn new(
        basic: Option<(String, SecretString)>,
        token: Option<(Option<&str>, SecretString)>,
    ) -> Result<Self, AuthConfigError> {
        let basic = basic
            .map(|(username, password)| {
                let valid_name = (1..=256).contains(&username.chars().count())
                    && !username.chars().any(|c| c.is_whitespace() || c == ':');
                if !valid_name {
                    return Err(AuthConfigError::InvalidUsername);
                }
                if password.is_empty() {
                    return Err(AuthConfigError::Empty { what: "password" });
                }
                Ok(BasicCredentials { username, password })
            })
            .transpose()?;
        let token = token
            .map(|(header, token)| {
                let name = header.unwrap_or(DEFAULT_TOKEN_HEADER);
                let header = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| AuthConfigError::InvalidHeaderName(name.to_string()))?;
                if token.is_empty() {
                    return Err(AuthConfigError::Empty { what: "token" });
                }
                Ok(HeaderToken { header, token })
            })
            .transpose()?;
        if basic.is_some()
            && token
                .as_ref()
                .is_some_and(|t| t.header == header::AUTHORIZATION)
        {
            return Err(AuthConfigError::TokenHeaderClashesWithBasic);
        }
        if basic.is_none() && token.is_none() {
            return Err(AuthConfigError::NothingConfigured);
        }
        Ok(Self { basic, token })
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let mut outcome = Ok(());
        if let Some(basic) = &self.basic {
            outcome = outcome.and(basic.check(headers));
        }
        if let Some(token) = &self.token {
            outcome = merge(outcome, token.check(headers));
        }
        outcome
    }
}

impl std::fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("WebhookAuth")
            .field("current", &state.current)
            .field("previous", &state.previous.is_some())
            .field("sources", &self.sources)
            .finish()
    }
}

impl WebhookAuth {
    fn with(credentials: Credentials, sources: Sources) -> Self {
        Self {
            state: Arc::new(RwLock::new(State {
                current: credentials,
                previous: None,
                seen_password: None,
                seen_token: None,
            })),
            sources: Arc::new(sources),
            grace: ROTATION_GRACE,
        }
    }

    /// From values. At least one method must be given; see [`WebhookAuth::allow_unauthenticated`].
    pub fn new(
        basic: Option<(String, SecretString)>,
        token: Option<(Option<&str>, SecretString)>,
    ) -> Result<Self, AuthConfigError> {
        Ok(Self::with(
            Credentials::new(basic, token)?,
            Sources::default(),
        ))
    }

    /// From files, the way a mounted Secret provides them (surrounding whitespace, e.g. the trailing
    /// newline `kubectl create secret --from-file` keeps, is removed). `token_header` defaults to
    /// `X-Lockstep-Token`. [`WebhookAuth::reload`] re-reads the same files.
    pub fn from_files(
        username: Option<&str>,
        password_file: Option<&Path>,
        token_file: Option<&Path>,
        token_header: Option<&str>,
    ) -> Result<Self, AuthConfigError> {
        Self::from_sources(username, password_file, None, token_file, token_header)
    }

    /// [`WebhookAuth::from_files`], with a password already known (generated into the Secret at start):
    /// it is used at once, and the password file, which the kubelet may not have updated yet, is only read
    /// for later rotations.
    fn from_sources(
        username: Option<&str>,
        password_file: Option<&Path>,
        known_password: Option<SecretString>,
        token_file: Option<&Path>,
        token_header: Option<&str>,
    ) -> Result<Self, AuthConfigError> {
        // With a password already known (read from the Secret just now) the file is not read here: it is
        // absent or stale until the kubelet syncs the Secret, and the first reload compares it with the
        // password in force, so a rotation that reached the file first is still picked up.
        let file_password = match (&known_password, password_file) {
            (None, Some(path)) => Some(read_secret(path, "password")?),
            _ => None,
        };
        let password = known_password.clone().or_else(|| file_password.clone());
        let basic = match (username, password) {
            (Some(user), Some(password)) => Some((user.trim().to_string(), password)),
            (None, None) => None,
            _ => return Err(AuthConfigError::IncompleteBasic),
        };
        let token = token_file
            .map(|path| read_secret(path, "token"))
            .transpose()?;
        let credentials = Credentials::new(basic, token.clone().map(|t| (token_header, t)))?;
        let auth = Self::with(
            credentials,
            Sources {
                username: username.map(|u| u.trim().to_string()),
                password_file: password_file.map(Path::to_path_buf),
                token_file: token_file.map(Path::to_path_buf),
                token_header: token_header.map(str::to_string),
            },
        );
        {
            let mut state = auth.write();
            state.seen_password = file_password;
            state.seen_token = token;
        }
        Ok(auth)
    }

    /// The `lockstep run` decision, from its `--webhook-*` flags and a password already generated into the
    /// Secret named by `--webhook-password-secret` (see [`WebhookAuth::from_run_flags`]):
    /// - credentials given → `Some(auth)` enforcing them (a half-configured method is an error);
    /// - nothing given and `allow_unauthenticated` → `Some(open)`, accepting every delivery;
    /// - nothing given → `None`: do not start the receiver (polling only). The secure default: an
    ///   endpoint that would let anyone trigger reconciles is never opened by accident.
    pub fn from_flags(
        flags: &WebhookAuthFlags,
        generated_password: Option<SecretString>,
    ) -> Result<Option<Self>, AuthConfigError> {
        let built = Self::from_sources(
            flags.webhook_username.as_deref(),
            flags.webhook_password_file.as_deref(),
            generated_password,
            flags.webhook_token_file.as_deref(),
            Some(&flags.webhook_token_header),
        );
        match built {
            Ok(auth) => Ok(Some(auth)),
            Err(AuthConfigError::NothingConfigured) if flags.webhook_allow_unauthenticated => {
                Ok(Some(Self::allow_unauthenticated()))
            }
            Err(AuthConfigError::NothingConfigured) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What `lockstep run` calls: with `--webhook-password-secret`, first make sure that Secret (in
    /// `namespace`, lockstep's own) has a password, generating one if needed, then [`WebhookAuth::from_flags`].
    pub async fn from_run_flags(
        flags: &WebhookAuthFlags,
        client: &kube::Client,
        namespace: &str,
    ) -> Result<Option<Self>, AuthConfigError> {
        let generated = match &flags.webhook_password_secret {
            Some(name) => {
                if flags.webhook_username.is_none() {
                    return Err(AuthConfigError::IncompleteBasic);
                }
                Some(super::generated_password::ensure_password(client, namespace, name).await?)
            }
            None => None,
        };
        Self::from_flags(flags, generated)
    }

    /// Accept every delivery. Only for setups that protect the endpoint otherwise (a private network, an
    /// authenticating ingress); the caller should say so loudly in the log.
    pub fn allow_unauthenticated() -> Self {
        Self::with(
            Credentials {
                basic: None,
                token: None,
            },
            Sources::default(),
        )
    }

    /// The same credentials with another rotation grace (tests).
    pub fn with_rotation_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn is_enforced(&self) -> bool {
        let state = self.read();
        state.current.basic.is_some() || state.current.token.is_some()
    }

    pub fn uses_basic(&self) -> bool {
        self.read().current.basic.is_some()
    }

    /// The credentials in force, as a service-hook subscription must send them (the controller's hook
    /// set-up writes them into its subscriptions): the Basic username and password, and the token
    /// header as the flag spells it with its token. Secrets: never log them.
    pub fn for_subscriptions(&self) -> SubscriptionCredentials {
        let state = self.read();
        SubscriptionCredentials {
            basic: state
                .current
                .basic
                .as_ref()
                .map(|b| (b.username.clone(), b.password.clone())),
            token: state.current.token.as_ref().map(|t| {
                // Azure DevOps sends the header as written; keep the operator's spelling (or the
                // default's), not the lower-case normal form HeaderName holds.
                let name = [
                    self.sources.token_header.as_deref(),
                    Some(DEFAULT_TOKEN_HEADER),
                ]
                .into_iter()
                .flatten()
                .map(str::trim)
                .find(|h| h.eq_ignore_ascii_case(t.header.as_str()))
                .unwrap_or(t.header.as_str())
                .to_string();
                (name, t.token.clone())
            }),
        }
    }

    /// Check a delivery's headers. Every configured method must pass, with the credentials in force or,
    /// during the grace after a rotation, with the previous ones.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let state = self.read();
        let current = state.current.check(headers);
        if current.is_ok() {
            return current;
        }
        match &state.previous {
            Some((previous, until))
                if Instant::now() < *until && previous.check(headers).is_ok() =>
            {
                Ok(())
            }
            _ => current,
        }
    }

    /// Re-read the credential files; on a change, put the new credentials in force and keep accepting the
    /// previous ones for the grace. Never returns or logs a secret.
    pub fn reload(&self) -> Reload {
        let sources = &self.sources;
        if sources.password_file.is_none() && sources.token_file.is_none() {
            return Reload::Unchanged;
        }
        let read = |path: &Option<PathBuf>, what| path.as_deref().map(|p| read_secret(p, what));
        let (password, token) = (
            read(&sources.password_file, "password"),
            read(&sources.token_file, "token"),
        );
        let mut state = self.write();
        if state
            .previous
            .as_ref()
            .is_some_and(|(_, until)| Instant::now() >= *until)
        {
            state.previous = None;
        }
        let changed = |new: &Option<Result<SecretString, AuthConfigError>>,
                       seen: &Option<SecretString>| {
            matches!(new, Some(Ok(value)) if seen.as_ref() != Some(value))
        };
        let password_changed = changed(&password, &state.seen_password);
        let token_changed = changed(&token, &state.seen_token);
        if !password_changed && !token_changed {
            return match (password, token) {
                (Some(Err(e)), _) | (_, Some(Err(e))) => Reload::Kept(e.to_string()),
                _ => Reload::Unchanged,
            };
        }
        let pick = |new: Option<Result<SecretString, AuthConfigError>>,
                    old: Option<SecretString>| {
            new.and_then(Result::ok).or(old)
        };
        let current_password = state.current.basic.as_ref().map(|b| b.password.clone());
        let current_token = state.current.token.as_ref().map(|t| t.token.clone());
        let new_password = pick(password, current_password);
        let new_token = pick(token, current_token);
        let basic = sources.username.clone().zip(new_password.clone());
        let built = Credentials::new(
            basic,
            new_token
                .clone()
                .map(|t| (sources.token_header.as_deref(), t)),
        );
        if password_changed {
            state.seen_password = new_password;
        }
        if token_changed {
            state.seen_token = new_token;
        }
        match built {
            Ok(credentials) if credentials == state.current => Reload::Unchanged,
            Ok(credentials) => {
                let previous = std::mem::replace(&mut state.current, credentials);
                state.previous = Some((previous, Instant::now() + self.grace));
                Reload::Rotated
            }
            Err(e) => Reload::Kept(e.to_string()),
        }
    }

    /// Re-read the credential files every `interval` until `stop` resolves, logging rotations (never the
    /// values). Nothing is spawned when no credential comes from a file.
    pub fn spawn_reloader(
        &self,
        interval: Duration,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.sources.password_file.is_none() && self.sources.token_file.is_none() {
            return None;
        }
        let auth = self.clone();
        Some(tokio::spawn(async move {
            tokio::pin!(stop);
            let mut last_kept: Option<String> = None;
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(interval) => {}
                }
                match auth.reload() {
                    Reload::Unchanged => last_kept = None,
                    Reload::Rotated => {
                        last_kept = None;
                        tracing::info!(
                            grace_s = auth.grace.as_secs(),
                            "webhook credentials changed: the new ones are in force, the previous ones are accepted during the grace"
                        );
                    }
                    // Said once per distinct problem, not every few seconds.
                    Reload::Kept(reason) if last_kept.as_ref() != Some(&reason) => {
                        tracing::warn!(error = %reason, "webhook credential files changed but cannot be used; keeping the credentials in force");
                        last_kept = Some(reason);
                    }
                    Reload::Kept(_) => {}
                }
            }
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Writers replace whole values, so a panic elsewhere cannot leave the state half-written.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Both methods are always evaluated; a wrong credential outranks a missing one in the reported reason.
fn merge(a: Result<(), AuthFailure>, b: Result<(), AuthFailure>) -> Result<(), AuthFailure> {
    match (a, b) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(AuthFailure::Invalid), _) | (_, Err(AuthFailure::Invalid)) => {
            Err(AuthFailure::Invalid)
        }
        _ => Err(AuthFailure::Missing),
    }
}

impl BasicCredentials {
    fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthFailure::Missing)?;
        let value = value.to_str().map_err(|_| AuthFailure::Invalid)?.trim();
        let (scheme, encoded) = value.split_once(' ').ok_or(AuthFailure::Missing)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(AuthFailure::Missing);
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| AuthFailure::Invalid)?;
        let colon = decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or(AuthFailure::Invalid)?;
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = user.ct_eq(self.username.as_bytes());
        let password_ok = password.ct_eq(self.password.expose().as_bytes());
        if bool::from(user_ok & password_ok) {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }
}

impl HeaderToken {
    fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let value = headers.get(&self.header).ok_or(AuthFailure::Missing)?;
        // Azure DevOps' `httpHeaders` is free text, so tolerate spaces around the value.
        let presented = trim_ascii(value.as_bytes());
        if bool::from(presented.ct_eq(self.token.expose().as_bytes())) {
            Ok(())
        } else {
            Err(AuthFailure::Invalid)
        }
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

fn read_secret(path: &Path, what: &'static str) -> Result<SecretString, AuthConfigError> {
    let read_error = |source| AuthConfigError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut raw = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CREDENTIAL_FILE_BYTES).read_to_string(&mut raw))
        .map_err(read_error)?;
    let secret = SecretString::new(raw.trim());
    if secret.is_empty() {
        return Err(AuthConfigError::Empty { what });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn basic_header(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        h
    }

    fn basic_only() -> WebhookAuth {
        WebhookAuth::new(Some(("ado".into(), SecretString::new("s3cret-pass"))), None).unwrap()
    }

    fn token_only() -> WebhookAuth {
        WebhookAuth::new(None, Some((None, SecretString::new("tok-123")))).unwrap()
    }

    #[test]
    fn basic_accepts_the_right_pair_only() {
        let auth = basic_only();
        assert_eq!(auth.check(&basic_header("ado", "s3cret-pass")), Ok(()));
        assert_eq!(
            auth.check(&basic_header("ado", "s3cret-pasS")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            auth.check(&basic_header("ado", "s3cret-pass-longer")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            auth.check(&basic_header("other", "s3cret-pass")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            auth.check(&basic_header("ado", "")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(auth.check(&HeaderMap::new()), Err(AuthFailure::Missing));
    }

    #[test]
    fn basic_rejects_malformed_headers() {
        let auth = basic_only();
        for value in ["Bearer abc", "Basic", "Basic !!!notbase64", "Basic YWRv"] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert!(auth.check(&h).is_err(), "{value}");
        }
        // Scheme is case-insensitive (RFC 7235).
        let mut h = basic_header("ado", "s3cret-pass");
        let v = h[header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .replace("Basic", "basic");
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        assert_eq!(auth.check(&h), Ok(()));
    }

    #[test]
    fn password_may_contain_colons() {
        let auth =
            WebhookAuth::new(Some(("ado".into(), SecretString::new("a:b:c"))), None).unwrap();
        assert_eq!(auth.check(&basic_header("ado", "a:b:c")), Ok(()));
    }

    #[test]
    fn token_header_is_checked_by_name_case_insensitively() {
        let auth = token_only();
        let mut h = HeaderMap::new();
        h.insert("x-lockstep-token", HeaderValue::from_static(" tok-123 "));
        assert_eq!(auth.check(&h), Ok(()));
        h.insert("x-lockstep-token", HeaderValue::from_static("tok-124"));
        assert_eq!(auth.check(&h), Err(AuthFailure::Invalid));
        assert_eq!(auth.check(&HeaderMap::new()), Err(AuthFailure::Missing));
    }

    #[test]
    fn custom_token_header() {
        let auth =
            WebhookAuth::new(None, Some((Some("X-Gate-Token"), SecretString::new("t")))).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-lockstep-token", HeaderValue::from_static("t"));
        assert_eq!(auth.check(&h), Err(AuthFailure::Missing));
        h.insert("x-gate-token", HeaderValue::from_static("t"));
        assert_eq!(auth.check(&h), Ok(()));
    }

    #[test]
    fn both_methods_must_pass_when_both_are_configured() {
        let auth = WebhookAuth::new(
            Some(("ado".into(), SecretString::new("pw"))),
            Some((None, SecretString::new("tok"))),
        )
        .unwrap();
        let mut h = basic_header("ado", "pw");
        assert_eq!(auth.check(&h), Err(AuthFailure::Missing));
        h.insert("x-lockstep-token", HeaderValue::from_static("bad"));
        assert_eq!(auth.check(&h), Err(AuthFailure::Invalid));
        h.insert("x-lockstep-token", HeaderValue::from_static("tok"));
        assert_eq!(auth.check(&h), Ok(()));
        let mut only_token = HeaderMap::new();
        only_token.insert("x-lockstep-token", HeaderValue::from_static("tok"));
        assert_eq!(auth.check(&only_token), Err(AuthFailure::Missing));
    }

    #[test]
    fn secure_default_needs_a_method() {
        assert!(matches!(
            WebhookAuth::new(None, None),
            Err(AuthConfigError::NothingConfigured)
        ));
        assert!(matches!(
            WebhookAuth::from_files(None, None, None, None),
            Err(AuthConfigError::NothingConfigured)
        ));
        let open = WebhookAuth::allow_unauthenticated();
        assert!(!open.is_enforced());
        assert_eq!(open.check(&HeaderMap::new()), Ok(()));
    }

    fn flags(
        username: Option<&str>,
        password_file: Option<&Path>,
        token_file: Option<&Path>,
        allow_unauthenticated: bool,
    ) -> WebhookAuthFlags {
        WebhookAuthFlags {
            webhook_username: username.map(str::to_string),
            webhook_password_file: password_file.map(Path::to_path_buf),
            webhook_token_file: token_file.map(Path::to_path_buf),
            webhook_allow_unauthenticated: allow_unauthenticated,
            ..WebhookAuthFlags::default()
        }
    }

    #[test]
    fn flags_decide_whether_the_receiver_runs() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "t0k\n").unwrap();

        assert!(
            WebhookAuth::from_flags(&flags(None, None, None, false), None)
                .unwrap()
                .is_none()
        );
        let open = WebhookAuth::from_flags(&flags(None, None, None, true), None)
            .unwrap()
            .unwrap();
        assert!(!open.is_enforced());
        // Credentials win over the opt-out: they are enforced.
        let auth = WebhookAuth::from_flags(&flags(None, None, Some(&tok), true), None)
            .unwrap()
            .unwrap();
        assert!(auth.is_enforced());
        assert!(matches!(
            WebhookAuth::from_flags(&flags(Some("ado"), None, None, true), None),
            Err(AuthConfigError::IncompleteBasic)
        ));
        // A generated password with a file the kubelet has not written yet: used at once.
        let missing = dir.path().join("not-yet");
        let auth = WebhookAuth::from_flags(
            &flags(Some("ado"), Some(&missing), None, false),
            Some(SecretString::new("generated-pw")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(auth.check(&basic_header("ado", "generated-pw")), Ok(()));
    }

    /// Issue 13, defect 13: `lockstep run` builds the receiver's policy through the one tested path.
    #[test]
    fn run_builds_the_receivers_authentication_through_from_run_flags() {
        let run = include_str!("../run.rs");
        assert!(
            run.contains("WebhookAuth::from_run_flags("),
            "run.rs must use from_run_flags"
        );
        for other in [
            "WebhookAuth::from_files(",
            "WebhookAuth::new(",
            "WebhookAuth::allow_unauthenticated(",
        ] {
            assert!(
                !run.contains(other),
                "run.rs builds the policy another way: {other}"
            );
        }
        // The flags `lockstep run` parses are this module's.
        assert!(run.contains("pub webhook_auth: WebhookAuthFlags"));
    }

    /// A directory laid out like a mounted Secret: `key -> ..data/key`, `..data -> ..<version>`.
    struct MountedSecret {
        dir: tempfile::TempDir,
        version: usize,
    }

    impl MountedSecret {
        fn new(files: &[(&str, &str)]) -> Self {
            let mut me = Self {
                dir: tempfile::tempdir().unwrap(),
                version: 0,
            };
            me.swap(files);
            for (key, _) in files {
                std::os::unix::fs::symlink(format!("..data/{key}"), me.dir.path().join(key))
                    .unwrap();
            }
            me
        }

        fn path(&self, key: &str) -> PathBuf {
            self.dir.path().join(key)
        }

        /// What the kubelet does on an update: write a new version directory, then atomically rename a
        /// new `..data` symlink over the old one.
        fn swap(&mut self, files: &[(&str, &str)]) {
            self.version += 1;
            let version = format!("..2026_11_30_{}", self.version);
            let dir = self.dir.path().join(&version);
            std::fs::create_dir(&dir).unwrap();
            for (key, value) in files {
                std::fs::write(dir.join(key), value).unwrap();
            }
            let tmp = self.dir.path().join("..data_tmp");
            std::os::unix::fs::symlink(&version, &tmp).unwrap();
            std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        }
    }

    /// Issue 13, defect 11: a rotated Secret is picked up without a restart, and at no moment does
    /// neither the old nor the new password work.
    #[test]
    fn rotated_credentials_are_picked_up_with_a_grace_for_the_old_ones() {
        let mut secret = MountedSecret::new(&[("password", "old-pass\n"), ("token", "old-tok")]);
        let auth = WebhookAuth::from_files(
            Some("ado"),
            Some(&secret.path("password")),
            Some(&secret.path("token")),
            None,
        )
        .unwrap()
        .with_rotation_grace(Duration::from_millis(300));
        let both = |user_pw: &str, tok: &'static str| {
            let mut h = basic_header("ado", user_pw);
            h.insert("x-lockstep-token", http::HeaderValue::from_static(tok));
            h
        };
        assert_eq!(auth.reload(), Reload::Unchanged);
        assert_eq!(auth.check(&both("old-pass", "old-tok")), Ok(()));
        assert_eq!(
            auth.check(&both("new-pass", "new-tok")),
            Err(AuthFailure::Invalid)
        );

        secret.swap(&[("password", "new-pass"), ("token", "new-tok")]);
        // Until the reload the old credentials work; after it both do, during the grace.
        assert_eq!(auth.check(&both("old-pass", "old-tok")), Ok(()));
        assert_eq!(auth.reload(), Reload::Rotated);
        let clone = auth.clone();
        assert_eq!(clone.check(&both("new-pass", "new-tok")), Ok(()));
        assert_eq!(clone.check(&both("old-pass", "old-tok")), Ok(()));
        // A mix of old and new is neither set.
        assert_eq!(
            auth.check(&both("old-pass", "new-tok")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(auth.reload(), Reload::Unchanged);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(
            auth.check(&both("old-pass", "old-tok")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(auth.check(&both("new-pass", "new-tok")), Ok(()));
    }

    #[test]
    fn unusable_files_keep_the_credentials_in_force() {
        let mut secret = MountedSecret::new(&[("password", "pass-1")]);
        let auth = WebhookAuth::from_files(Some("ado"), Some(&secret.path("password")), None, None)
            .unwrap();
        secret.swap(&[("password", "\n")]);
        assert!(matches!(auth.reload(), Reload::Kept(reason) if reason.contains("empty")));
        assert_eq!(auth.check(&basic_header("ado", "pass-1")), Ok(()));
        std::fs::remove_file(secret.path("password")).unwrap();
        assert!(matches!(auth.reload(), Reload::Kept(_)));
        assert_eq!(auth.check(&basic_header("ado", "pass-1")), Ok(()));
    }

    /// The password generated into the Secret is in force before the kubelet has written the file; when
    /// the file arrives with the same value nothing changes, and a later rotation is picked up.
    #[test]
    fn a_generated_password_then_the_file_then_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        let flags = flags(Some("ado"), Some(&file), None, false);
        let auth = WebhookAuth::from_flags(&flags, Some(SecretString::new("gen-1")))
            .unwrap()
            .unwrap();
        assert_eq!(auth.check(&basic_header("ado", "gen-1")), Ok(()));
        assert!(matches!(auth.reload(), Reload::Kept(_)), "no file yet");
        std::fs::write(&file, "gen-1\n").unwrap();
        assert_eq!(auth.reload(), Reload::Unchanged);
        assert_eq!(auth.reload(), Reload::Unchanged);
        std::fs::write(&file, "rotated-2").unwrap();
        assert_eq!(auth.reload(), Reload::Rotated);
        assert_eq!(auth.check(&basic_header("ado", "rotated-2")), Ok(()));
    }

    /// A rotation that reached the mounted file before lockstep read the Secret's password is still
    /// picked up at the first reload.
    #[test]
    fn a_file_newer_than_the_generated_password_wins_at_the_first_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "newer").unwrap();
        let flags = flags(Some("ado"), Some(&file), None, false);
        let auth = WebhookAuth::from_flags(&flags, Some(SecretString::new("older")))
            .unwrap()
            .unwrap();
        assert_eq!(auth.check(&basic_header("ado", "older")), Ok(()));
        assert_eq!(auth.reload(), Reload::Rotated);
        assert_eq!(auth.check(&basic_header("ado", "newer")), Ok(()));
    }

    #[tokio::test]
    async fn the_reloader_applies_changes_and_stops() {
        let mut secret = MountedSecret::new(&[("token", "tok-a")]);
        let auth = WebhookAuth::from_files(None, None, Some(&secret.path("token")), None).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = auth
            .spawn_reloader(Duration::from_millis(20), async {
                let _ = stopped.await;
            })
            .unwrap();
        secret.swap(&[("token", "tok-b")]);
        let mut h = HeaderMap::new();
        h.insert("x-lockstep-token", http::HeaderValue::from_static("tok-b"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while auth.check(&h).is_err() {
            assert!(Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(WebhookAuth::allow_unauthenticated()
            .spawn_reloader(Duration::from_millis(20), async {})
            .is_none());
    }

    #[test]
    fn invalid_configuration_is_refused() {
        let pw = || SecretString::new("pw");
        assert!(matches!(
            WebhookAuth::new(Some(("".into(), pw())), None),
            Err(AuthConfigError::InvalidUsername)
        ));
        assert!(matches!(
            WebhookAuth::new(Some(("a b".into(), pw())), None),
            Err(AuthConfigError::InvalidUsername)
        ));
        assert!(matches!(
            WebhookAuth::new(Some(("a".into(), SecretString::new("  "))), None),
            Err(AuthConfigError::Empty { .. })
        ));
        assert!(matches!(
            WebhookAuth::new(None, Some((Some("bad header"), pw()))),
            Err(AuthConfigError::InvalidHeaderName(_))
        ));
        assert!(matches!(
            WebhookAuth::new(
                Some(("a".into(), pw())),
                Some((Some("Authorization"), pw()))
            ),
            Err(AuthConfigError::TokenHeaderClashesWithBasic)
        ));
    }

    #[test]
    fn from_files_trims_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("password");
        let tok = dir.path().join("token");
        let empty = dir.path().join("empty");
        std::fs::write(&pw, "file-pass\n").unwrap();
        std::fs::write(&tok, "file-token\r\n").unwrap();
        std::fs::write(&empty, "\n").unwrap();

        let auth = WebhookAuth::from_files(Some("ado"), Some(&pw), Some(&tok), None).unwrap();
        let mut h = basic_header("ado", "file-pass");
        h.insert("x-lockstep-token", HeaderValue::from_static("file-token"));
        assert_eq!(auth.check(&h), Ok(()));

        assert!(matches!(
            WebhookAuth::from_files(Some("ado"), None, None, None),
            Err(AuthConfigError::IncompleteBasic)
        ));
        assert!(matches!(
            WebhookAuth::from_files(None, Some(&pw), None, None),
            Err(AuthConfigError::IncompleteBasic)
        ));
        assert!(matches!(
            WebhookAuth::from_files(None, None, Some(&empty), None),
            Err(AuthConfigError::Empty { what: "token" })
        ));
        let missing = dir.path().join("nope");
        let err = WebhookAuth::from_files(None, None, Some(&missing), None).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn secrets_never_appear_in_debug_or_errors() {
        let auth = WebhookAuth::new(
            Some(("ado".into(), SecretString::new("hunter2-password"))),
            Some((None, SecretString::new("hunter2-token"))),
        )
        .unwrap();
        let dbg = format!("{auth:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "hunter2-password").unwrap();
        let err = WebhookAuth::from_files(Some("bad user"), Some(&f), None, None).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn subscriptions_get_the_credentials_in_force_with_the_header_as_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let (password, token) = (dir.path().join("password"), dir.path().join("token"));
        std::fs::write(&password, "pw-1\n").unwrap();
        std::fs::write(&token, "tok-1").unwrap();
        let auth = WebhookAuth::from_files(
            Some("ado"),
            Some(&password),
            Some(&token),
            Some("X-Lockstep-Token"),
        )
        .unwrap();
        let creds = auth.for_subscriptions();
        let (user, pw) = creds.basic.unwrap();
        assert_eq!((user.as_str(), pw.expose()), ("ado", "pw-1"));
        let (header, tok) = creds.token.unwrap();
        assert_eq!(
            (header.as_str(), tok.expose()),
            ("X-Lockstep-Token", "tok-1")
        );

        std::fs::write(&token, "tok-2").unwrap();
        auth.reload();
        assert_eq!(auth.for_subscriptions().token.unwrap().1.expose(), "tok-2");
        assert!(WebhookAuth::allow_unauthenticated()
            .for_subscriptions()
            .basic
            .is_none());
    }
}
