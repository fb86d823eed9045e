//! Who may deliver hints. Azure DevOps signs nothing, so the receiver checks what the subscription can
//! send: HTTP Basic credentials and/or a shared secret header (the Web Hooks consumer's `httpHeaders`).
//! When both are configured, a delivery must carry both. Comparisons run in constant time (`subtle`), so
//! response timing does not reveal how much of a guess was right; only the length of a wrong guess can
//! differ, which tells an attacker nothing about the secret's content.

use std::path::{Path, PathBuf};

use base64::Engine;
use http::{header, HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use crate::secret::SecretString;

pub const DEFAULT_TOKEN_HEADER: &str = "X-Lockstep-Token";

/// How deliveries are authenticated. `Debug` never shows a secret.
#[derive(Clone, Debug)]
pub struct WebhookAuth {
    basic: Option<BasicCredentials>,
    token: Option<HeaderToken>,
}

#[derive(Clone, Debug)]
struct BasicCredentials {
    username: String,
    password: SecretString,
}

#[derive(Clone, Debug)]
struct HeaderToken {
    header: HeaderName,
    token: SecretString,
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

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("no webhook authentication is configured: set --webhook-username with --webhook-password-file and/or --webhook-token-file, or pass --webhook-allow-unauthenticated to accept unauthenticated deliveries on purpose")]
    NothingConfigured,
    #[error("--webhook-username and --webhook-password-file must be given together")]
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
}

impl WebhookAuth {
    /// From values. At least one method must be given; see [`WebhookAuth::allow_unauthenticated`].
    pub fn new(
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

    /// From files, the way a mounted Secret provides them (surrounding whitespace, e.g. the trailing
    /// newline `kubectl create secret --from-file` keeps, is removed). `token_header` defaults to
    /// `X-Lockstep-Token`.
    pub fn from_files(
        username: Option<&str>,
        password_file: Option<&Path>,
        token_file: Option<&Path>,
        token_header: Option<&str>,
    ) -> Result<Self, AuthConfigError> {
        let basic = match (username, password_file) {
            (Some(user), Some(path)) => {
                Some((user.trim().to_string(), read_secret(path, "password")?))
            }
            (None, None) => None,
            _ => return Err(AuthConfigError::IncompleteBasic),
        };
        let token = token_file
            .map(|path| read_secret(path, "token").map(|t| (token_header, t)))
            .transpose()?;
        Self::new(basic, token)
    }

    /// The `lockstep run` decision, from its `--webhook-*` flags:
    /// - credentials given → `Some(auth)` enforcing them (a half-configured method is an error);
    /// - nothing given and `allow_unauthenticated` → `Some(open)`, accepting every delivery;
    /// - nothing given → `None`: do not start the receiver (polling only). The secure default: an
    ///   endpoint that would let anyone trigger reconciles is never opened by accident.
    pub fn from_flags(
        username: Option<&str>,
        password_file: Option<&Path>,
        token_file: Option<&Path>,
        token_header: Option<&str>,
        allow_unauthenticated: bool,
    ) -> Result<Option<Self>, AuthConfigError> {
        match Self::from_files(username, password_file, token_file, token_header) {
            Ok(auth) => Ok(Some(auth)),
            Err(AuthConfigError::NothingConfigured) if allow_unauthenticated => {
                Ok(Some(Self::allow_unauthenticated()))
            }
            Err(AuthConfigError::NothingConfigured) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Accept every delivery. Only for setups that protect the endpoint otherwise (a private network, an
    /// authenticating ingress); the caller should say so loudly in the log.
    pub fn allow_unauthenticated() -> Self {
        Self {
            basic: None,
            token: None,
        }
    }

    pub fn is_enforced(&self) -> bool {
        self.basic.is_some() || self.token.is_some()
    }

    pub fn uses_basic(&self) -> bool {
        self.basic.is_some()
    }

    /// Check a delivery's headers. Every configured method must pass.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
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
    let raw = std::fs::read_to_string(path).map_err(|source| AuthConfigError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
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

    #[test]
    fn flags_decide_whether_the_receiver_runs() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "t0k\n").unwrap();

        assert!(WebhookAuth::from_flags(None, None, None, None, false)
            .unwrap()
            .is_none());
        let open = WebhookAuth::from_flags(None, None, None, None, true)
            .unwrap()
            .unwrap();
        assert!(!open.is_enforced());
        // Credentials win over the opt-out: they are enforced.
        let auth = WebhookAuth::from_flags(None, None, Some(&tok), Some("X-Lockstep-Token"), true)
            .unwrap()
            .unwrap();
        assert!(auth.is_enforced());
        assert!(matches!(
            WebhookAuth::from_flags(Some("ado"), None, None, None, true),
            Err(AuthConfigError::IncompleteBasic)
        ));
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
}
