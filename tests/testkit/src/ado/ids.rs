//! GUIDs and timestamps in the spellings Azure DevOps uses.

use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;

/// A GUID derived from `seed`: the same seed always gives the same id, so a project or stage keeps its
/// id for the life of a simulator (the real service derives stage record ids the same way).
pub(crate) fn stable_guid(seed: &str) -> String {
    let mut high = DefaultHasher::new();
    ("lockstep-sim-high", seed).hash(&mut high);
    let mut low = DefaultHasher::new();
    ("lockstep-sim-low", seed).hash(&mut low);
    format_guid(high.finish(), low.finish())
}

/// A fresh GUID (service-hook event ids, plan ids): random per process, unique per call.
pub(crate) fn fresh_guid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let keys = RandomState::new();
    format_guid(keys.hash_one(("high", n)), keys.hash_one(("low", n)))
}

/// A 40-hex-digit object id for an annotated tag object, derived from what the tag points at.
pub(crate) fn tag_object_id(repository_id: &str, name: &str, target: &str) -> String {
    let guid = stable_guid(&format!("tag/{repository_id}/{name}/{target}")).replace('-', "");
    let extra = stable_guid(&format!("tag-extra/{guid}")).replace('-', "");
    format!("{guid}{}", &extra[..8])
}

fn format_guid(high: u64, low: u64) -> String {
    // Version-4 and RFC 4122 variant bits, so the ids look like what ADO hands out.
    let high = (high & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

/// ADO server time: UTC with exactly 7 fractional digits (`2026-04-01T10:46:36.7230431Z`). Fixed width, so
/// these strings sort like the instants they name.
pub(crate) fn ado_time(ts: Timestamp) -> String {
    format!(
        "{}.{:07}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        ts.subsec_nanosecond() / 100
    )
}

/// Git author/committer time: whole seconds, as git records it.
pub(crate) fn git_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The `yyyyMMdd` part of a default build number.
pub(crate) fn build_date(ts: Timestamp) -> String {
    ts.strftime("%Y%m%d").to_string()
}

/// A clock that never repeats or goes back, so runs queued in the same instant still have a strict
/// queue-time order (ADO's own timestamps have 100 ns resolution).
#[derive(Debug, Default)]
pub(crate) struct MonotonicClock {
    last: Option<Timestamp>,
}

impl MonotonicClock {
    pub(crate) fn now(&mut self) -> Timestamp {
        let tick = jiff::SignedDuration::from_nanos(100);
        let mut now = Timestamp::now();
        // Truncate to the 100 ns resolution the wire format carries.
        let excess = now.subsec_nanosecond() % 100;
        now = now
            .checked_sub(jiff::SignedDuration::from_nanos(i64::from(excess)))
            .unwrap_or(now);
        if let Some(last) = self.last {
            if now <= last {
                now = last.checked_add(tick).unwrap_or(last);
            }
        }
        self.last = Some(now);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_guids_repeat_and_differ_by_seed() {
        assert_eq!(stable_guid("a"), stable_guid("a"));
        assert_ne!(stable_guid("a"), stable_guid("b"));
        let g = stable_guid("a");
        assert_eq!(g.len(), 36);
        assert_eq!(g.matches('-').count(), 4);
        assert_eq!(&g[14..15], "4");
    }

    #[test]
    fn fresh_guids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| fresh_guid()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn ado_time_has_seven_fractional_digits() {
        let ts: Timestamp = "2026-04-01T10:46:36.7230431Z".parse().unwrap();
        assert_eq!(ado_time(ts), "2026-04-01T10:46:36.7230431Z");
        let whole: Timestamp = "2026-04-01T10:46:36Z".parse().unwrap();
        assert_eq!(ado_time(whole), "2026-04-01T10:46:36.0000000Z");
        assert_eq!(git_time(ts), "2026-04-01T10:46:36Z");
        assert_eq!(build_date(ts), "20260401");
    }

    #[test]
    fn clock_is_strictly_increasing() {
        let mut clock = MonotonicClock::default();
        let mut last = clock.now();
        for _ in 0..1000 {
            let next = clock.now();
            assert!(next > last);
            assert_eq!(next.subsec_nanosecond() % 100, 0);
            last = next;
        }
    }

    #[test]
    fn tag_object_ids_look_like_git_ids() {
        let id = tag_object_id("r", "flux-sync", "abc");
        assert_eq!(id.len(), 40);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
