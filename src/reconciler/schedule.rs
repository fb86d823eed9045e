//! When a reconciler polls next: on the pipeline's requeue grid, so every object following one pipeline
//! meets the same shared Builds List answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;

use crate::pipeline_key::PipelineKey;

/// Shortest requeue: never a busy loop.
pub const MIN_REQUEUE: Duration = Duration::from_millis(200);

/// Delay until the next tick of the pipeline's requeue grid of `period`.
///
/// Every object following one pipeline requeues to the same wall-clock instant, so they all meet the
/// shared Builds List answer and cost one request per period. An object knocked off the grid (a slow
/// reconcile under load, a webhook hint, a restart) rejoins at its next tick; aligning to the age of the
/// answer each object saw instead let such an object found a second group that kept fetching on its own,
/// period after period. The phase comes from the pipeline, which also spreads distinct pipelines over the
/// period instead of firing all of them at once.
pub fn until_next_tick(period: Duration, phase: u64, now: SystemTime) -> Duration {
    let period_ms = period.as_millis().max(1);
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let into_period = (now_ms + period_ms - u128::from(phase) % period_ms) % period_ms;
    let mut left = period_ms - into_period;
    let min = MIN_REQUEUE.as_millis();
    if left < min {
        left += (min - left).div_ceil(period_ms) * period_ms;
    }
    Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX))
}

/// The grid phase of a pipeline: stable for the process, different between pipelines.
pub fn tick_phase(key: &PipelineKey) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys, so every object on `key` gets the same phase.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// Duration until `deadline` (whole seconds), plus a little so the reconcile runs at or after it.
pub fn until(deadline: Timestamp) -> Duration {
    let left = deadline.duration_since(Timestamp::now());
    Duration::try_from(left).unwrap_or_default() + Duration::from_millis(20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_on_one_pipeline_requeue_to_the_same_tick() {
        let period = Duration::from_secs(60);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Two gates of one pipeline reconciled 0.7 s apart (one delayed by load) meet at the same instant.
        let a = t0 + until_next_tick(period, 42, t0);
        let later = t0 + Duration::from_millis(700);
        let b = later + until_next_tick(period, 42, later);
        assert_eq!(a, b);
        assert!(a > t0 && a <= t0 + period + MIN_REQUEUE, "{a:?}");
        // Another pipeline ticks at another phase.
        let c = t0 + until_next_tick(period, 43, t0);
        assert_ne!(a, c);
    }

    #[test]
    fn a_tick_too_close_is_skipped_rather_than_busy_looping() {
        let period = Duration::from_secs(1);
        let t0 = UNIX_EPOCH + Duration::from_millis(1_800_000_000_950);
        // phase 0: the next tick is 50 ms away, below the minimum, so the one after it.
        let d = until_next_tick(period, 0, t0);
        assert_eq!(d, Duration::from_millis(1050));
        assert!(until_next_tick(Duration::ZERO, 7, t0) >= MIN_REQUEUE);
    }

    #[test]
    fn requeues_land_on_the_pipeline_grid() {
        let period = Duration::from_secs(10);
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        // Phase 3 s: the grid is …, 3 s, 13 s, 23 s, …
        assert_eq!(
            until_next_tick(period, 3_000, at(1_000)),
            Duration::from_secs(2)
        );
        assert_eq!(
            until_next_tick(period, 3_000, at(5_500)),
            Duration::from_millis(7_500)
        );
        // Exactly on a grid point: the next one, a full period on.
        assert_eq!(until_next_tick(period, 3_000, at(13_000)), period);
        // Never a busy loop, never much longer than the period.
        for now in (0..50_000).step_by(777) {
            let d = until_next_tick(period, 12_345, at(now));
            assert!(d >= MIN_REQUEUE && d <= period + MIN_REQUEUE, "{d:?}");
        }
    }

    #[test]
    fn gates_of_one_pipeline_share_a_phase() {
        let key = |definition_id| {
            PipelineKey::new("https://dev.azure.com/o", "P", definition_id, "main").unwrap()
        };
        assert_eq!(tick_phase(&key(1)), tick_phase(&key(1)));
        assert_ne!(tick_phase(&key(1)), tick_phase(&key(2)));
    }

    #[test]
    fn deadline_requeue_lands_at_or_just_after_the_deadline() {
        let in_5s = Timestamp::now() + jiff::SignedDuration::from_secs(5);
        let d = until(in_5s);
        assert!(
            d > Duration::from_secs(4) && d <= Duration::from_millis(5020),
            "{d:?}"
        );
        let past = Timestamp::now() - jiff::SignedDuration::from_secs(5);
        assert_eq!(until(past), Duration::from_millis(20));
    }
}
