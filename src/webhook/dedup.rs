//! Processed-once by event id, in bounded memory.
//!
//! Azure DevOps re-sends an event (same `id`) when a delivery timed out or failed; a hint patched twice is
//! harmless but noisy, so repeats are answered "duplicate" without touching the cluster. The set holds the
//! newest `capacity` ids: a hash set for O(1) lookup plus a ring in arrival order for O(1) eviction. An id
//! whose processing failed is released, so Azure DevOps' retry of it is processed rather than swallowed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

pub const DEFAULT_CAPACITY: usize = 10_000;

/// Event ids are GUIDs (36 characters). Longer ids are not remembered, so a sender cannot make the
/// bounded set hold megabytes; such events are simply processed every time.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug)]
pub struct EventDedup {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// id → generation of its live entry. A released and re-claimed id gets a new generation, so the
    /// ring's stale entry for the old one does not evict the new one.
    live: HashMap<String, u64>,
    ring: VecDeque<(String, u64)>,
    next_generation: u64,
}

/// The outcome of [`EventDedup::claim`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// First sighting: process it, and [`EventDedup::release`] it if processing fails.
    New,
    /// Seen before (and not released): answer without processing.
    Duplicate,
    /// Too long to remember: process it without dedup.
    Untracked,
}

impl EventDedup {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Record `id` as processed unless it already is.
    pub fn claim(&self, id: &str) -> Claim {
        if id.len() > MAX_ID_LEN {
            return Claim::Untracked;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.live.contains_key(id) {
            return Claim::Duplicate;
        }
        while inner.ring.len() >= self.capacity {
            let Some((old, generation)) = inner.ring.pop_front() else {
                break;
            };
            if inner.live.get(&old) == Some(&generation) {
                inner.live.remove(&old);
            }
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.live.insert(id.to_string(), generation);
        inner.ring.push_back((id.to_string(), generation));
        Claim::New
    }

    /// Forget `id` so that its next delivery is processed (call after a failed attempt).
    pub fn release(&self, id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.live.remove(id);
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for EventDedup {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_is_a_duplicate() {
        let d = EventDedup::new(4);
        assert_eq!(d.claim("a"), Claim::New);
        assert_eq!(d.claim("a"), Claim::Duplicate);
        assert_eq!(d.claim("b"), Claim::New);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn memory_is_bounded_and_oldest_is_forgotten_first() {
        let d = EventDedup::new(3);
        for id in ["a", "b", "c", "d"] {
            assert_eq!(d.claim(id), Claim::New);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.claim("a"), Claim::New, "a was evicted");
        assert_eq!(d.claim("d"), Claim::Duplicate);
        for i in 0..10_000 {
            d.claim(&format!("id-{i}"));
        }
        assert_eq!(d.len(), 3);
        assert!(d.inner.lock().unwrap().ring.len() <= 3);
    }

    #[test]
    fn released_id_is_processed_again() {
        let d = EventDedup::new(3);
        assert_eq!(d.claim("a"), Claim::New);
        d.release("a");
        assert_eq!(d.claim("a"), Claim::New);
        assert_eq!(d.claim("a"), Claim::Duplicate);
    }

    #[test]
    fn stale_ring_entry_does_not_evict_a_reclaimed_id() {
        let d = EventDedup::new(2);
        d.claim("a"); // ring: a#0
        d.release("a");
        d.claim("a"); // ring: a#0 a#1
        d.claim("b"); // evicts a#0 (stale): a#1 must stay
        assert_eq!(d.claim("a"), Claim::Duplicate);
    }

    #[test]
    fn overlong_ids_are_not_remembered() {
        let d = EventDedup::new(2);
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(d.claim(&long), Claim::Untracked);
        assert_eq!(d.claim(&long), Claim::Untracked);
        assert!(d.is_empty());
    }

    #[test]
    fn zero_capacity_still_dedups_the_latest() {
        let d = EventDedup::new(0);
        assert_eq!(d.claim("a"), Claim::New);
        assert_eq!(d.claim("a"), Claim::Duplicate);
    }
}
