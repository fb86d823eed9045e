//! Who may read: a Kubernetes bearer token, checked with a TokenReview and authorized with a
//! SubjectAccessReview per resource and namespace (the delegated authentication and authorization that
//! kube-rbac-proxy and aggregated API servers use: k8s.io/apiserver/pkg/authentication/token/cache and
//! pkg/authorization/authorizerfactory/delegating.go), or a static token read from a file for callers
//! outside the cluster (Azure DevOps checks), compared in constant time.
//!
//! Everything the API serves is read-only, so the static token grants read of both kinds in every
//! namespace the process watches and nothing else. Decisions are cached briefly in bounded maps, as the
//! apiserver's webhook authenticator and authorizer do, so a gater asking every few seconds costs one
//! review per TTL and not one per request.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;
use subtle::ConstantTimeEq;

use crate::secret::SecretString;

/// How long a TokenReview answer is reused. The apiserver's webhook token authenticator defaults to
/// 2 minutes; shorter here so a deleted ServiceAccount stops reading soon.
const TOKEN_TTL: Duration = Duration::from_secs(30);
/// How long a rejected token stays rejected without asking again (bounded retries of a bad token).
const REJECTED_TOKEN_TTL: Duration = Duration::from_secs(5);
/// How long an allow is reused (the apiserver's webhook authorizer: 5m allowed, 30s denied).
const ALLOWED_TTL: Duration = Duration::from_secs(20);
const DENIED_TTL: Duration = Duration::from_secs(5);
/// Entries per cache; past this, expired entries go first, then arbitrary ones.
const CACHE_CAPACITY: usize = 4096;
/// A review the API server does not answer within this is a 503, not a hung request.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest bearer token considered; ServiceAccount tokens are around 1 KiB.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The API group both kinds belong to, as SubjectAccessReviews name it.
pub const GROUP: &str = "lockstep.dev";

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The static token: read-only, every namespace.
    StaticToken,
    /// A Kubernetes user or ServiceAccount, as the TokenReview named it.
    User(Arc<User>),
}

/// The authenticated identity a SubjectAccessReview is asked about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct User {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Caller {
    /// For logs: the username, never a token.
    pub fn name(&self) -> &str {
        match self {
            Caller::StaticToken => "static-token",
            Caller::User(u) => &u.username,
        }
    }
}

/// The two kinds the API serves, by their plural resource names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    PipelineGates,
    ServiceTraces,
}

impl Kind {
    pub fn resource(self) -> &'static str {
        match self {
            Kind::PipelineGates => "pipelinegates",
            Kind::ServiceTraces => "servicetraces",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
        }
    }
}

/// Why a request is not answered. `Unauthenticated` is a 401, `Forbidden` a 403, `Unavailable` a 503.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <token>` with a Kubernetes token or the API's static token")]
    MissingToken,
    #[error("the bearer token was not accepted: use a valid Kubernetes ServiceAccount or user token, or the API's static token")]
    InvalidToken,
    #[error("{user} may not {verb} {resource} in {scope}: grant it with a Role (RBAC) and retry")]
    Forbidden {
        user: String,
        verb: &'static str,
        resource: &'static str,
        scope: String,
    },
    #[error("could not verify the caller with the Kubernetes API ({0}); retry shortly")]
    Unavailable(String),
}

/// A map whose entries expire and whose size is capped.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, v)| v.clone())
    }

    fn insert(&self, key: K, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (until, _)| *until > now);
            while entries.len() >= self.capacity {
                let Some(victim) = entries.keys().next().cloned() else {
                    break;
                };
                entries.remove(&victim);
            }
        }
        entries.insert(key, (now + ttl, value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

type DecisionKey = (Arc<User>, Verb, Kind, Option<String>, Option<String>);

/// Authenticates and authorizes API requests.
pub struct Authenticator {
    static_token: Option<SecretString>,
    /// `None`: Kubernetes tokens are not accepted (only the static token).
    kube: Option<kube::Client>,
    /// Keyed by the token's SHA-256, as kube-apiserver's cached token authenticator does: the cache
    /// holds no token, and an entry is 32 bytes whatever the token's length.
    tokens: TtlCache<[u8; 32], Option<Arc<User>>>,
    decisions: TtlCache<DecisionKey, bool>,
}

impl Authenticator {
    pub fn new(static_token: Option<SecretString>, kube: Option<kube::Client>) -> Self {
        Self {
            static_token: static_token.filter(|t| !t.is_empty()),
            kube,
            tokens: TtlCache::new(CACHE_CAPACITY),
            decisions: TtlCache::new(CACHE_CAPACITY),
        }
    }

    /// Who sent `headers`.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        // An Azure DevOps "Generic" service connection can only send Basic credentials; its password
        // field (a secret in Azure DevOps) carries the static token. Basic never reaches a TokenReview.
        if let Some(password) = basic_password(headers) {
            return match &self.static_token {
                Some(expected)
                    if bool::from(password.as_bytes().ct_eq(expected.expose().as_bytes())) =>
                {
                    Ok(Caller::StaticToken)
                }
                _ => Err(AuthError::InvalidToken),
            };
        }
        let token = bearer(headers).ok_or(AuthError::MissingToken)?;
        if let Some(expected) = &self.static_token {
            if bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())) {
                return Ok(Caller::StaticToken);
            }
        }
        let Some(client) = &self.kube else {
            return Err(AuthError::InvalidToken);
        };
        let key = token_key(token);
        if let Some(cached) = self.tokens.get(&key) {
            return cached.map(Caller::User).ok_or(AuthError::InvalidToken);
        }
        let user = token_review(client, token).await?;
        let ttl = if user.is_some() {
            TOKEN_TTL
        } else {
            REJECTED_TOKEN_TTL
        };
        self.tokens.insert(key, user.clone(), ttl);
        user.map(Caller::User).ok_or(AuthError::InvalidToken)
    }

    /// Whether `caller` may `verb` `kind` in `namespace` (`None`: across all namespaces), optionally one
    /// object by `name`.
    pub async fn allowed(
        &self,
        caller: &Caller,
        verb: Verb,
        kind: Kind,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<bool, AuthError> {
        let user = match caller {
            Caller::StaticToken => return Ok(true),
            Caller::User(user) => user,
        };
        let Some(client) = &self.kube else {
            return Ok(false);
        };
        // RBAC is additive: whoever may read every object of the kind in the namespace may read this one.
        // Asking that first keeps it to one review per caller and namespace, not one per object; only a
        // caller limited by resourceNames costs a review per name.
        if name.is_some()
            && self
                .decide(client, user, verb, kind, namespace, None)
                .await?
        {
            return Ok(true);
        }
        self.decide(client, user, verb, kind, namespace, name).await
    }

    async fn decide(
        &self,
        client: &kube::Client,
        user: &Arc<User>,
        verb: Verb,
        kind: Kind,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<bool, AuthError> {
        let key = (
            user.clone(),
            verb,
            kind,
            namespace.map(str::to_string),
            name.map(str::to_string),
        );
        if let Some(allowed) = self.decisions.get(&key) {
            return Ok(allowed);
        }
        let allowed = access_review(client, user, verb, kind, namespace, name).await?;
        self.decisions
            .insert(key, allowed, if allowed { ALLOWED_TTL } else { DENIED_TTL });
        Ok(allowed)
    }

    /// [`Self::allowed`], as an error when not.
    pub async fn require(
        &self,
        caller: &Caller,
        verb: Verb,
        kind: Kind,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<(), AuthError> {
        if self.allowed(caller, verb, kind, namespace, name).await? {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                user: caller.name().to_string(),
                verb: verb.as_str(),
                resource: kind.resource(),
                scope: namespace.map_or_else(
                    || "all namespaces".to_string(),
                    |ns| format!("namespace {ns}"),
                ),
            })
        }
    }
}

fn token_key(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The token of an `Authorization: Bearer` header (scheme case-insensitive, RFC 6750 §2.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_LEN)
        .then_some(token)
}

/// The password of an `Authorization: Basic` header (RFC 7617), whatever the user name.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > MAX_TOKEN_LEN {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_, password) = decoded.split_once(':')?;
    Some(password.to_string())
}

async fn token_review(client: &kube::Client, token: &str) -> Result<Option<Arc<User>>, AuthError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let answer = tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
        .await
        .map_err(|_| AuthError::Unavailable("TokenReview timed out".to_string()))?
        .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
    let Some(status) = answer.status else {
        return Ok(None);
    };
    if status.authenticated != Some(true) {
        return Ok(None);
    }
    let Some(info) = status.user else {
        return Ok(None);
    };
    let Some(username) = info.username.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(Arc::new(User {
        username,
        uid: info.uid,
        groups: info.groups.unwrap_or_default(),
        extra: info.extra.unwrap_or_default(),
    })))
}

async fn access_review(
    client: &kube::Client,
    user: &User,
    verb: Verb,
    kind: Kind,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool, AuthError> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.username.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_string()),
                resource: Some(kind.resource().to_string()),
                verb: Some(verb.as_str().to_string()),
                namespace: namespace.map(str::to_string),
                name: name.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
        .await
        .map_err(|_| AuthError::Unavailable("SubjectAccessReview timed out".to_string()))?
        .map_err(|e| AuthError::Unavailable(format!("SubjectAccessReview failed: {e}")))?;
    Ok(answer
        .status
        .is_some_and(|s| s.allowed && s.denied != Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn the_static_token_reads_everything_and_nothing_else_passes_without_kubernetes() {
        let auth = Authenticator::new(Some(SecretString::new("s3cret-api-token")), None);
        let caller = auth
            .authenticate(&headers("Bearer s3cret-api-token"))
            .await
            .unwrap();
        assert_eq!(caller, Caller::StaticToken);
        assert!(auth
            .allowed(&caller, Verb::List, Kind::ServiceTraces, None, None)
            .await
            .unwrap());
        assert_eq!(
            auth.authenticate(&headers("Bearer s3cret-api-tokeN")).await,
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            auth.authenticate(&headers("Bearer s3cret")).await,
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            auth.authenticate(&HeaderMap::new()).await,
            Err(AuthError::MissingToken)
        );
        // Basic with the static token as password (an Azure DevOps Generic service connection).
        assert_eq!(
            auth.authenticate(&headers("Basic YWRvOnMzY3JldC1hcGktdG9rZW4="))
                .await,
            Ok(Caller::StaticToken)
        );
        assert_eq!(
            auth.authenticate(&headers("Basic YWRvOnMzY3JldA==")).await,
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            auth.authenticate(&headers("bearer s3cret-api-token")).await,
            Ok(Caller::StaticToken)
        );
    }

    #[tokio::test]
    async fn an_empty_static_token_file_accepts_nothing() {
        let auth = Authenticator::new(Some(SecretString::new("  \n")), None);
        assert_eq!(
            auth.authenticate(&headers("Bearer  ")).await,
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            auth.authenticate(&headers("Bearer x")).await,
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn the_cache_stays_bounded_and_expires() {
        let cache: TtlCache<u32, bool> = TtlCache::new(8);
        for i in 0..100 {
            cache.insert(i, true, Duration::from_secs(60));
            assert!(cache.len() <= 8);
        }
        assert_eq!(cache.get(&99), Some(true));
        cache.insert(1000, true, Duration::ZERO);
        assert_eq!(cache.get(&1000), None);
    }

    #[test]
    fn errors_never_carry_the_token() {
        let e = AuthError::Forbidden {
            user: "system:serviceaccount:a:b".into(),
            verb: "get",
            resource: "pipelinegates",
            scope: "namespace b".into(),
        };
        assert_eq!(
            e.to_string(),
            "system:serviceaccount:a:b may not get pipelinegates in namespace b: grant it with a Role (RBAC) and retry"
        );
    }
}
