//! PATs read from Secrets, shared by the gates that reference the same Secret and key.
//!
//! Without it every reconcile GETs its Secret: one Kubernetes read per gate per polling period, so
//! 10 000 gates polling every 10 s cost the API server 1 000 reads a second. Gates of a pipeline poll
//! together and usually share one Secret per namespace, so a short TTL turns that into about one read
//! per Secret per period.
//!
//! Only the parsed credential is kept (the value under the referenced key, or what was missing), never
//! the Secret: a Secret may hold much more than a PAT, and nothing else of it is needed.
//!
//! Freshness: an entry lives at most `ttl` (the poll cache's TTL, below the fast interval), and the
//! controller's Secret watch drops it the moment it sees the Secret change, before the reconciles that
//! change triggers run. A read that was already in flight when the change arrived is not cached, so it
//! cannot put the old value back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::secret::SecretString;

/// `(namespace, name, key)`.
type Key = (String, String, String);

/// What a read found under one key: `None` the Secret does not exist; `Some(None)` it has no such key;
/// `Some(Some(value))` the value, trimmed (possibly empty).
pub type Credential = Option<Option<SecretString>>;

struct Entry {
    credential: Credential,
    read_at: Instant,
}

/// `(namespace, name, key)` → the credential as last read.
pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Bumped by every invalidation; a read stores its answer only if none happened meanwhile.
    epoch: AtomicU64,
}

/// Proof of when a read started, for [`TokenCache::store`].
pub struct ReadTicket(u64);

fn key(namespace: &str, name: &str, data_key: &str) -> Key {
    (
        namespace.to_string(),
        name.to_string(),
        data_key.to_string(),
    )
}

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

    /// The cached credential under `data_key` of the Secret, if fresh.
    pub fn get(&self, namespace: &str, name: &str, data_key: &str) -> Option<Credential> {
        let entries = self.lock();
        let entry = entries.get(&key(namespace, name, data_key))?;
        (entry.read_at.elapsed() < self.ttl).then(|| entry.credential.clone())
    }

    /// Call before reading the Secret from the API.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.epoch.load(Ordering::Acquire))
    }

    /// Remember what a read found, unless a Secret changed since its ticket was taken.
    pub fn store(
        &self,
        ticket: ReadTicket,
        namespace: &str,
        name: &str,
        data_key: &str,
        credential: Credential,
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
            key(namespace, name, data_key),
            Entry {
                credential,
                read_at: Instant::now(),
            },
        );
    }

    /// The Secret changed (or was deleted): forget every key of it, and let no read in flight store an
    /// answer.
    pub fn invalidate(&self, namespace: &str, name: &str) {
        let mut entries = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.retain(|(ns, n, _), _| !(ns == namespace && n == name));
    }

    /// [`Self::invalidate`] for a Secret the watch saw change; call before the reconciles it triggers run,
    /// so they read the new PAT.
    pub fn invalidate_secret(&self, secret: &ObjectMeta) {
        if let (Some(namespace), Some(name)) = (secret.namespace.as_deref(), secret.name.as_deref())
        {
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

    fn pat(token: &str) -> Credential {
        Some(Some(SecretString::new(token)))
    }

    fn token_of(c: Option<Credential>) -> Option<Option<Option<String>>> {
        c.map(|c| c.map(|v| v.map(|s| s.expose().to_string())))
    }

    #[test]
    fn a_read_is_shared_until_it_expires() {
        let cache = TokenCache::new(Duration::from_millis(50));
        assert!(cache.get("ns", "pat", "token").is_none());
        cache.store(cache.ticket(), "ns", "pat", "token", pat("one"));
        assert_eq!(
            token_of(cache.get("ns", "pat", "token")),
            Some(Some(Some("one".to_string())))
        );
        assert!(cache.get("ns", "other", "token").is_none());
        assert!(cache.get("other-ns", "pat", "token").is_none());
        // Another key of the same Secret is another credential: read it, do not guess.
        assert!(cache.get("ns", "pat", "other-key").is_none());
        std::thread::sleep(Duration::from_millis(70));
        assert!(cache.get("ns", "pat", "token").is_none());
    }

    #[test]
    fn a_missing_secret_or_key_is_remembered_as_missing() {
        let cache = TokenCache::new(Duration::from_secs(5));
        cache.store(cache.ticket(), "ns", "pat", "token", None);
        assert_eq!(token_of(cache.get("ns", "pat", "token")), Some(None));
        cache.store(cache.ticket(), "ns", "pat2", "token", Some(None));
        assert_eq!(token_of(cache.get("ns", "pat2", "token")), Some(Some(None)));
    }

    #[test]
    fn a_change_drops_the_entry_and_a_read_in_flight_is_not_stored() {
        let cache = TokenCache::new(Duration::from_secs(5));
        cache.store(cache.ticket(), "ns", "pat", "token", pat("old"));
        let in_flight = cache.ticket();
        cache.invalidate("ns", "pat");
        assert!(cache.get("ns", "pat", "token").is_none());
        // The read that started before the rotation returns the old PAT: it must not be cached.
        cache.store(in_flight, "ns", "pat", "token", pat("old"));
        assert!(cache.get("ns", "pat", "token").is_none());
        cache.store(cache.ticket(), "ns", "pat", "token", pat("new"));
        assert_eq!(
            token_of(cache.get("ns", "pat", "token")),
            Some(Some(Some("new".to_string())))
        );
    }

    #[test]
    fn a_watched_secret_change_drops_exactly_that_secret() {
        let cache = TokenCache::new(Duration::from_secs(5));
        cache.store(cache.ticket(), "ns", "pat", "token", pat("old"));
        cache.store(cache.ticket(), "ns", "pat", "second", pat("old2"));
        cache.store(cache.ticket(), "ns", "other", "token", pat("kept"));
        let changed = ObjectMeta {
            name: Some("pat".into()),
            namespace: Some("ns".into()),
            ..ObjectMeta::default()
        };
        cache.invalidate_secret(&changed);
        assert!(cache.get("ns", "pat", "token").is_none());
        assert!(cache.get("ns", "pat", "second").is_none());
        assert_eq!(
            token_of(cache.get("ns", "other", "token")),
            Some(Some(Some("kept".to_string())))
        );
    }

    #[test]
    fn a_zero_ttl_caches_nothing_and_expired_entries_are_swept() {
        let off = TokenCache::new(Duration::ZERO);
        off.store(off.ticket(), "ns", "pat", "token", pat("x"));
        assert!(off.is_empty());
        let cache = TokenCache::new(Duration::from_millis(20));
        cache.store(cache.ticket(), "ns", "a", "token", pat("x"));
        std::thread::sleep(Duration::from_millis(40));
        cache.store(cache.ticket(), "ns", "b", "token", pat("y"));
        assert_eq!(cache.len(), 1);
    }
}
