//! One Azure DevOps token per identity, shared by every object that uses the identity.
//!
//! - **Single flight**: callers for one identity queue on that identity's slot; the first one asks Entra,
//!   the rest find the fresh token. 10 000 gates on one workload identity cost one request per lifetime.
//! - **Refreshed before expiry**: a token is replaced once less than `min(5 min, lifetime / 2)` of its
//!   lifetime is left (counted from when the request was sent), so no request goes out with a token about
//!   to expire; the half-lifetime rule covers short-lived tokens.
//! - **Failures are shared briefly**: a failed request is the answer for everyone for [`FAILURE_HOLD`],
//!   so a broken identity costs one request per hold, not one per object. A transient failure while the
//!   old token is still valid keeps using the old token.
//! - Tokens live only in [`SecretString`]s; nothing here logs one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::client::IssuedToken;
use super::{EntraClient, EntraError, EntraIdentity, IdentityKey};
use crate::secret::SecretString;

/// Longest head start of a refresh before expiry.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// How long a failed request answers for its identity before the next attempt.
pub const FAILURE_HOLD: Duration = Duration::from_secs(10);
/// A token this close to expiry is not handed out even when a refresh failed transiently.
const MIN_REMAINING: Duration = Duration::from_secs(5);
/// Above this many identities, expired and idle ones are swept on insert.
const SWEEP_ABOVE: usize = 64;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where tokens come from; [`EntraClient`] in production, a counting fake in tests.
pub trait TokenSource: Send + Sync {
    fn request<'a>(
        &'a self,
        identity: &'a EntraIdentity,
    ) -> BoxFuture<'a, Result<IssuedToken, EntraError>>;
}

impl TokenSource for EntraClient {
    fn request<'a>(
        &'a self,
        identity: &'a EntraIdentity,
    ) -> BoxFuture<'a, Result<IssuedToken, EntraError>> {
        Box::pin(self.request_token(identity))
    }
}

struct Held {
    token: SecretString,
    issued_at: Instant,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct Slot {
    held: Option<Held>,
    failure: Option<(Instant, EntraError)>,
}

/// Counters for tests, benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCacheStats {
    /// Token requests sent (successful or not).
    pub requests: u64,
    /// Identities held.
    pub identities: usize,
}

/// The token cache; one per process, shared by both reconcilers and `lockstep check`.
pub struct EntraTokens {
    source: Arc<dyn TokenSource>,
    slots: Mutex<HashMap<IdentityKey, Arc<tokio::sync::Mutex<Slot>>>>,
    requests: AtomicU64,
}

impl EntraTokens {
    pub fn new(client: EntraClient) -> Self {
        Self::with_source(Arc::new(client))
    }

    pub fn with_source(source: Arc<dyn TokenSource>) -> Self {
        Self {
            source,
            slots: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> TokenCacheStats {
        TokenCacheStats {
            requests: self.requests.load(Ordering::Relaxed),
            identities: self.lock().len(),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<IdentityKey, Arc<tokio::sync::Mutex<Slot>>>> {
        // Inserts and removes cannot leave the map inconsistent, so a poisoned lock is usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, key: IdentityKey) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.lock();
        if !slots.contains_key(&key) && slots.len() >= SWEEP_ABOVE {
            let now = Instant::now();
            slots.retain(|_, slot| match slot.try_lock() {
                Ok(s) => {
                    s.held.as_ref().is_some_and(|h| h.expires_at > now)
                        || s.failure
                            .as_ref()
                            .is_some_and(|(at, _)| now < *at + FAILURE_HOLD)
                }
                // In use right now: keep.
                Err(_) => true,
            });
        }
        slots.entry(key).or_default().clone()
    }

    /// A valid Azure DevOps token for `identity`.
    pub async fn token(&self, identity: &EntraIdentity) -> Result<SecretString, EntraError> {
        let slot = self.slot(identity.key());
        let mut slot = slot.lock().await;
        let now = Instant::now();
        if let Some(held) = &slot.held {
            if now < held.refresh_at {
                return Ok(held.token.clone());
            }
        }
        if let Some((at, err)) = &slot.failure {
            if now < *at + FAILURE_HOLD {
                return usable(&slot.held, now, err);
            }
        }
        let sent_at = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.source.request(identity).await {
            Ok(issued) => {
                let lifetime = issued.expires_in;
                let margin = MAX_REFRESH_MARGIN.min(lifetime / 2);
                let token = issued.token;
                slot.held = Some(Held {
                    token: token.clone(),
                    issued_at: sent_at,
                    refresh_at: sent_at + (lifetime - margin),
                    expires_at: sent_at + lifetime,
                });
                slot.failure = None;
                debug!(
                    identity = %identity.describe(),
                    lifetime_s = lifetime.as_secs(),
                    refresh_in_s = (lifetime - margin).as_secs(),
                    "cached Microsoft Entra token"
                );
                Ok(token)
            }
            Err(err) => {
                warn!(identity = %identity.describe(), error = %err, "Microsoft Entra token request failed");
                let answer = usable(&slot.held, Instant::now(), &err);
                slot.failure = Some((Instant::now(), err));
                answer
            }
        }
    }
}

impl EntraTokens {
    /// Azure DevOps refused `token` although it has not expired (revoked, or the identity's access
    /// changed). If it is held and was issued more than `min_age` ago, drop it so the next caller gets
    /// a fresh one, and return true: the refusal is worth one retry. A token refused right after it was
    /// issued is not retried: a fresh one would be refused too.
    pub async fn forget_refused(&self, token: &SecretString, min_age: Duration) -> bool {
        let slots: Vec<_> = self.lock().values().cloned().collect();
        for slot in slots {
            let mut slot = slot.lock().await;
            let refused = slot.held.as_ref().is_some_and(|h| h.token == *token);
            if refused {
                let old = slot
                    .held
                    .as_ref()
                    .is_some_and(|h| h.issued_at.elapsed() >= min_age);
                if old {
                    slot.held = None;
                    warn!("Azure DevOps refused a cached Microsoft Entra token before its expiry; requesting a new one");
                }
                return old;
            }
        }
        false
    }
}

/// After a failure: the old token while it is still valid and the failure is transient, else the error.
fn usable(held: &Option<Held>, now: Instant, err: &EntraError) -> Result<SecretString, EntraError> {
    match held {
        Some(h) if err.is_transient() && now + MIN_REMAINING < h.expires_at => Ok(h.token.clone()),
        _ => Err(err.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entra::parse_authority;
    use std::sync::atomic::AtomicUsize;

    /// Issues `tok-N` with the scripted lifetime, or the scripted error, counting requests.
    struct Fake {
        calls: AtomicUsize,
        lifetime: Duration,
        delay: Duration,
        fail: Mutex<Option<EntraError>>,
    }

    impl TokenSource for Fake {
        fn request<'a>(
            &'a self,
            _identity: &'a EntraIdentity,
        ) -> BoxFuture<'a, Result<IssuedToken, EntraError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(self.delay).await;
                if let Some(e) = self.fail.lock().unwrap().clone() {
                    return Err(e);
                }
                Ok(IssuedToken {
                    token: SecretString::new(format!("tok-{n}")),
                    expires_in: self.lifetime,
                })
            })
        }
    }

    fn fake(lifetime: Duration) -> Arc<Fake> {
        Arc::new(Fake {
            calls: AtomicUsize::new(0),
            lifetime,
            delay: Duration::from_millis(50),
            fail: Mutex::new(None),
        })
    }

    fn wi(client: &str) -> EntraIdentity {
        EntraIdentity::WorkloadIdentity {
            tenant_id: "t".into(),
            client_id: client.into(),
            token_file: "/var/run/secrets/azure/tokens/azure-identity-token".into(),
            authority: parse_authority("https://login.example").unwrap(),
        }
    }

    fn transient() -> EntraError {
        EntraError::Unavailable {
            identity: "x".into(),
            detail: "HTTP 503".into(),
        }
    }

    fn rejected() -> EntraError {
        EntraError::AuthenticationFailed {
            identity: "x".into(),
            answer: "AADSTS700016: not found".into(),
            hint: "h".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ten_thousand_concurrent_callers_cause_one_request() {
        let source = fake(Duration::from_secs(3600));
        let cache = Arc::new(EntraTokens::with_source(source.clone()));
        let tasks: Vec<_> = (0..10_000)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(
                    async move { cache.token(&wi("c")).await.unwrap().expose().to_string() },
                )
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "tok-1");
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.stats(),
            TokenCacheStats {
                requests: 1,
                identities: 1
            }
        );
        // Another identity gets its own token.
        assert_eq!(cache.token(&wi("other")).await.unwrap().expose(), "tok-2");
    }

    #[tokio::test(start_paused = true)]
    async fn refreshed_five_minutes_before_expiry_or_at_half_life() {
        let source = fake(Duration::from_secs(3600));
        let cache = EntraTokens::with_source(source.clone());
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-1");
        tokio::time::advance(Duration::from_secs(3600 - 301)).await;
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-2");

        let short = fake(Duration::from_secs(60));
        let cache = EntraTokens::with_source(short.clone());
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-1");
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_keeps_the_valid_token_and_a_rejection_does_not() {
        let source = fake(Duration::from_secs(60));
        let cache = EntraTokens::with_source(source.clone());
        cache.token(&wi("c")).await.unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        *source.fail.lock().unwrap() = Some(transient());
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-1");
        // Within the hold, no new request.
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-1");
        assert_eq!(source.calls.load(Ordering::SeqCst), 2);
        // Past expiry the old token is not handed out.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(cache.token(&wi("c")).await.unwrap_err().is_transient());

        let source = fake(Duration::from_secs(60));
        let cache = EntraTokens::with_source(source.clone());
        cache.token(&wi("c")).await.unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        *source.fail.lock().unwrap() = Some(rejected());
        let err = cache.token(&wi("c")).await.unwrap_err();
        assert_eq!(err.aadsts_code(), Some("AADSTS700016"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_shared_for_the_hold_then_retried() {
        let source = fake(Duration::from_secs(60));
        *source.fail.lock().unwrap() = Some(rejected());
        let cache = Arc::new(EntraTokens::with_source(source.clone()));
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.token(&wi("c")).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().is_err());
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(FAILURE_HOLD + Duration::from_millis(100)).await;
        *source.fail.lock().unwrap() = None;
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_replaced_once_it_has_been_in_use() {
        let source = fake(Duration::from_secs(3600));
        let cache = EntraTokens::with_source(source.clone());
        let first = cache.token(&wi("c")).await.unwrap();
        // Refused right after issue: the identity itself is refused, a new token would not help.
        assert!(!cache.forget_refused(&first, Duration::from_secs(30)).await);
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-1");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            !cache
                .forget_refused(&SecretString::new("unknown"), Duration::from_secs(30))
                .await
        );
        assert!(cache.forget_refused(&first, Duration::from_secs(30)).await);
        assert_eq!(cache.token(&wi("c")).await.unwrap().expose(), "tok-2");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_idle_identities_are_swept() {
        let source = fake(Duration::from_secs(10));
        let cache = EntraTokens::with_source(source.clone());
        for i in 0..SWEEP_ABOVE {
            cache.token(&wi(&format!("c{i}"))).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        cache.token(&wi("new")).await.unwrap();
        assert_eq!(cache.stats().identities, 1);
    }
}
