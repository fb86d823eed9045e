//! Secrets read for their PAT, shared by the gates that reference the same Secret.
//!
//! Without it every reconcile GETs its Secret: one Kubernetes read per gate per polling period, so
//! 10 000 gates polling every 10 s cost the API server 1 000 reads a second. Gates of a pipeline poll
//! together and usually share one Secret per namespace, so a short TTL turns that into about one read
//! per Secret per period.
//!
//! Freshness: an entry lives at most `ttl` (the poll cache's TTL, below the fast interval), and the
//! controller's Secret watch drops it the moment it sees the Secret change, before the reconciles that
//! change triggers run. A read that was already in flight when the change arrived is not cached, so it
//! cannot put the old value back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;

type Key = (String, String);

struct Entry {
    secret: Option<Arc<Secret>>,
    read_at: Instant,
}

/// `(namespace, name)` → the Secret as last read (or `None`: it did not exist).
pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Bumped by every invalidation; a read stores its answer only if none happened meanwhile.
    epoch: AtomicU64,
}

/// Proof of when a read started, for [`TokenCache::store`].
pub struct ReadTicket(u64);

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // Single inserts and removes cannot leave the map inconsistent, so a poisoned lock is usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached answer for the Secret, if fresh: `Some(None)` means it was read and did not exist.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Option<Arc<Secret>>> {
        let entries = self.lock();
        let entry = entries.get(&(namespace.to_string(), name.to_string()))?;
        (entry.read_at.elapsed() < self.ttl).then(|| entry.secret.clone())
    }

    /// Call before reading the Secret from the API.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.epoch.load(Ordering::Acquire))
    }

    /// Remember what a read returned, unless a Secret changed since its ticket was taken.
    pub fn store(
        &self,
        ticket: ReadTicket,
        namespace: &str,
        name: &str,
        secret: Option<Arc<Secret>>,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        let ttl = self.ttl;
        entries.retain(|_, e| e.read_at.elapsed() < ttl);
        entries.insert(
            (namespace.to_string(), name.to_string()),
            Entry {
                secret,
                read_at: Instant::now(),
            },
        );
    }

    /// The Secret changed (or was deleted): forget it, and let no read in flight store an answer.
    pub fn invalidate(&self, namespace: &str, name: &str) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.remove(&(namespace.to_string(), name.to_string()));
    }

    /// [`Self::invalidate`] for a Secret the watch saw change; call before the reconciles it triggers run,
    /// so they read the new PAT.
    pub fn invalidate_secret(&self, secret: &Secret) {
        if let (Some(namespace), Some(name)) = (
            secret.metadata.namespace.as_deref(),
            secret.metadata.name.as_deref(),
        ) {
            self.invalidate(namespace, name);
        }
    }

    /// Entries held, fresh or not yet swept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(token: &str) -> Option<Arc<Secret>> {
        Some(Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pat", "namespace": "ns"},
                "stringData": {"token": token}
            }))
            .unwrap(),
        ))
    }

    fn token_of(s: &Option<Option<Arc<Secret>>>) -> Option<Option<String>> {
        s.as_ref().map(|o| {
            o.as_ref()
                .and_then(|s| s.string_data.as_ref()?.get("token").cloned())
        })
    }

    #[test]
    fn a_read_is_shared_until_it_expires() {
        let cache = TokenCache::new(Duration::from_millis(50));
        assert!(cache.get("ns", "pat").is_none());
        cache.store(cache.ticket(), "ns", "pat", secret("one"));
        assert_eq!(
            token_of(&cache.get("ns", "pat")),
            Some(Some("one".to_string()))
        );
        assert!(cache.get("ns", "other").is_none());
        assert!(cache.get("other-ns", "pat").is_none());
        std::thread::sleep(Duration::from_millis(70));
        assert!(cache.get("ns", "pat").is_none());
    }

    #[test]
    fn a_missing_secret_is_remembered_as_missing() {
        let cache = TokenCache::new(Duration::from_secs(5));
        cache.store(cache.ticket(), "ns", "pat", None);
        assert_eq!(token_of(&cache.get("ns", "pat")), Some(None));
    }

    #[test]
    fn a_change_drops_the_entry_and_a_read_in_flight_is_not_stored() {
        let cache = TokenCache::new(Duration::from_secs(5));
        cache.store(cache.ticket(), "ns", "pat", secret("old"));
        let in_flight = cache.ticket();
        cache.invalidate("ns", "pat");
        assert!(cache.get("ns", "pat").is_none());
        // The read that started before the rotation returns the old PAT: it must not be cached.
        cache.store(in_flight, "ns", "pat", secret("old"));
        assert!(cache.get("ns", "pat").is_none());
        cache.store(cache.ticket(), "ns", "pat", secret("new"));
        assert_eq!(
            token_of(&cache.get("ns", "pat")),
            Some(Some("new".to_string()))
        );
    }

    #[test]
    fn a_watched_secret_change_drops_exactly_that_secret() {
        let cache = TokenCache::new(Duration::from_secs(5));
        cache.store(cache.ticket(), "ns", "pat", secret("old"));
        cache.store(cache.ticket(), "ns", "other", secret("kept"));
        let changed = secret("new").and_then(Arc::into_inner).unwrap();
        cache.invalidate_secret(&changed);
        assert!(cache.get("ns", "pat").is_none());
        assert_eq!(
            token_of(&cache.get("ns", "other")),
            Some(Some("kept".to_string()))
        );
    }

    #[test]
    fn a_zero_ttl_caches_nothing_and_expired_entries_are_swept() {
        let off = TokenCache::new(Duration::ZERO);
        off.store(off.ticket(), "ns", "pat", secret("x"));
        assert!(off.is_empty());
        let cache = TokenCache::new(Duration::from_millis(20));
        cache.store(cache.ticket(), "ns", "a", secret("x"));
        std::thread::sleep(Duration::from_millis(40));
        cache.store(cache.ticket(), "ns", "b", secret("y"));
        assert_eq!(cache.len(), 1);
    }
}
