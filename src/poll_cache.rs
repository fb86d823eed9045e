//! Shared polling: objects that follow the same pipeline share one Azure DevOps request per period.
//!
//! Two mechanisms, both per cache key:
//! - **single flight**: callers that arrive while a request is in flight await that request instead of
//!   sending their own;
//! - **a short TTL**: a finished answer (success or error) is served to later callers for `ttl`, which is
//!   kept well below the fast polling interval so a gate never acts on an answer older than its own period.
//!
//! Entries expire `ttl` after their request finished and are swept on every insert, so the map holds at
//! most the keys requested within the last `ttl` plus those in flight.
//!
//! **Keyed by token.** The key is (pipeline, fingerprint of the token). Sharing across tokens would let a
//! gate with a revoked or wrong PAT read through another gate's cached success and stay open, which is a
//! credential bypass; with the token in the key, a wrong PAT always gets its own request and its own
//! authentication error. Gates in one namespace normally share one Secret, so this costs nothing in the
//! common case. The fingerprint is SipHash under a random per-process key ([`RandomState`](std::hash::RandomState)): the map holds
//! no token bytes, and the fingerprint cannot be checked against guesses outside this process.
//!
//! **Freshness floor.** A caller may demand an answer fetched no earlier than some instant (the
//! `lockstep.dev/requested-at` a webhook wrote): the first such caller refreshes the entry, and everyone
//! else watching that pipeline then reuses the refreshed answer.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::secret::SecretString;

/// A finished request: the answer and when it was asked for.
#[derive(Debug)]
pub struct Fetched<V, E> {
    pub result: Result<V, E>,
    /// Wall-clock time the request was started; the answer reflects the remote state at or after it.
    pub started_at: jiff::Timestamp,
    /// Monotonic time the request finished; the TTL counts from here.
    pub finished_at: Instant,
}

type Slot<V, E> = Arc<OnceCell<Arc<Fetched<V, E>>>>;

/// Single-flight, short-TTL cache of remote answers, keyed by `K` and a token fingerprint.
pub struct PollCache<K, V, E> {
    ttl: Duration,
    fingerprint_key: std::collections::hash_map::RandomState,
    entries: Mutex<HashMap<(K, u64), Slot<V, E>>>,
}

impl<K, V, E> PollCache<K, V, E>
where
    K: Hash + Eq + Clone,
{
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            fingerprint_key: Default::default(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Number of entries held (in flight or fresh or not yet swept); for tests and metrics.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer for `key` under `token`: a fresh cached one, the one in flight, or a new request made with
    /// `fetch`. `not_before`: reject cached answers whose request started before this instant.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        key: &K,
        token: &SecretString,
        not_before: Option<jiff::Timestamp>,
        fetch: F,
    ) -> Arc<Fetched<V, E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.slot_for((key.clone(), self.fingerprint(token)), not_before);
        slot.get_or_init(|| async {
            let started_at = jiff::Timestamp::now();
            let result = fetch().await;
            Arc::new(Fetched {
                result,
                started_at,
                finished_at: Instant::now(),
            })
        })
        .await
        .clone()
    }

    fn fingerprint(&self, token: &SecretString) -> u64 {
        self.fingerprint_key.hash_one(token.expose())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(K, u64), Slot<V, E>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts/removes), so a
        // poisoned lock is still usable.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn slot_for(&self, key: (K, u64), not_before: Option<jiff::Timestamp>) -> Slot<V, E> {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some(slot) = entries.get(&key) {
            let usable = match slot.get() {
                // In flight: join it. If a freshness floor is later than its start we would still rather
                // wait for it than start a parallel request; its start is at most one request old.
                None => true,
                Some(done) => {
                    now.duration_since(done.finished_at) < self.ttl
                        && not_before.is_none_or(|floor| done.started_at >= floor)
                }
            };
            if usable {
                return slot.clone();
            }
        }
        let ttl = self.ttl;
        entries.retain(|_, slot| match slot.get() {
            None => true,
            Some(done) => now.duration_since(done.finished_at) < ttl,
        });
        let slot: Slot<V, E> = Arc::new(OnceCell::new());
        entries.insert(key, slot.clone());
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Cache = PollCache<&'static str, u32, String>;

    fn token(s: &str) -> SecretString {
        SecretString::new(s)
    }

    async fn counted(calls: &AtomicUsize, value: u32) -> Result<u32, String> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        Ok(value)
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request() {
        let cache = Cache::new(Duration::from_secs(5));
        let calls = AtomicUsize::new(0);
        let gate = tokio::sync::Notify::new();
        let slow = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            gate.notified().await;
            Ok(7)
        };
        let t = token("pat");
        let a = cache.get_or_fetch(&"p", &t, None, slow);
        let b = cache.get_or_fetch(&"p", &t, None, || counted(&calls, 99));
        let release = async {
            // Let both callers register before the request finishes.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            gate.notify_one();
        };
        let (a, b, ()) = tokio::join!(a, b, release);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(a.result, Ok(7));
        assert_eq!(b.result, Ok(7));
    }

    #[tokio::test]
    async fn fresh_answers_are_reused_and_stale_ones_refetched() {
        let cache = Cache::new(Duration::from_millis(50));
        let calls = AtomicUsize::new(0);
        let t = token("pat");
        cache
            .get_or_fetch(&"p", &t, None, || counted(&calls, 1))
            .await;
        let hit = cache
            .get_or_fetch(&"p", &t, None, || counted(&calls, 2))
            .await;
        assert_eq!(hit.result, Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let miss = cache
            .get_or_fetch(&"p", &t, None, || counted(&calls, 3))
            .await;
        assert_eq!(miss.result, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn different_pipelines_do_not_share() {
        let cache = Cache::new(Duration::from_secs(5));
        let calls = AtomicUsize::new(0);
        let t = token("pat");
        let a = cache
            .get_or_fetch(&"a", &t, None, || counted(&calls, 1))
            .await;
        let b = cache
            .get_or_fetch(&"b", &t, None, || counted(&calls, 2))
            .await;
        assert_eq!((a.result.clone(), b.result.clone()), (Ok(1), Ok(2)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_different_token_never_reads_another_tokens_answer() {
        let cache = Cache::new(Duration::from_secs(5));
        let good = cache
            .get_or_fetch(&"p", &token("good"), None, || async { Ok(1) })
            .await;
        assert_eq!(good.result, Ok(1));
        let bad = cache
            .get_or_fetch(&"p", &token("wrong"), None, || async {
                Err("unauthorized".to_string())
            })
            .await;
        assert_eq!(bad.result, Err("unauthorized".to_string()));
    }

    #[tokio::test]
    async fn errors_are_shared_for_the_ttl_too() {
        let cache = Cache::new(Duration::from_secs(5));
        let calls = AtomicUsize::new(0);
        let t = token("pat");
        let fail = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<u32, _>("503".to_string())
        };
        cache.get_or_fetch(&"p", &t, None, fail).await;
        let again = cache
            .get_or_fetch(&"p", &t, None, || counted(&calls, 1))
            .await;
        assert_eq!(again.result, Err("503".to_string()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_freshness_floor_after_the_cached_request_refetches_once() {
        let cache = Cache::new(Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        let t = token("pat");
        cache
            .get_or_fetch(&"p", &t, None, || counted(&calls, 1))
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let floor = jiff::Timestamp::now();
        let refreshed = cache
            .get_or_fetch(&"p", &t, Some(floor), || counted(&calls, 2))
            .await;
        assert_eq!(refreshed.result, Ok(2));
        // A second object with the same floor reuses the refreshed answer.
        let shared = cache
            .get_or_fetch(&"p", &t, Some(floor), || counted(&calls, 3))
            .await;
        assert_eq!(shared.result, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // An old floor does not force anything.
        let old = floor - jiff::SignedDuration::from_secs(3600);
        cache
            .get_or_fetch(&"p", &t, Some(old), || counted(&calls, 4))
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_entries_are_swept() {
        let cache = Cache::new(Duration::from_millis(20));
        let t = token("pat");
        for key in ["a", "b", "c"] {
            cache.get_or_fetch(&key, &t, None, || async { Ok(1) }).await;
        }
        assert_eq!(cache.len(), 3);
        tokio::time::sleep(Duration::from_millis(40)).await;
        cache.get_or_fetch(&"d", &t, None, || async { Ok(1) }).await;
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_request_is_taken_over_by_the_next_caller() {
        let cache = Cache::new(Duration::from_secs(5));
        let t = token("pat");
        let never = cache.get_or_fetch(&"p", &t, None, || {
            std::future::pending::<Result<u32, String>>()
        });
        assert!(tokio::time::timeout(Duration::from_millis(10), never)
            .await
            .is_err());
        let next = cache.get_or_fetch(&"p", &t, None, || async { Ok(5) }).await;
        assert_eq!(next.result, Ok(5));
    }
}
