//! How long a reconciler waits before retrying an object whose reconcile failed on the Kubernetes API.
//!
//! Azure DevOps problems never get here (they become status); these are API server errors, where
//! retrying quickly at first catches a blip and doubling keeps a broken API server from being hammered.

use std::time::Duration;

/// The delay after the first failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// No object waits longer than this, so a recovered API server is noticed within 5 minutes.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// 2^9 s = 512 s is already past [`MAX_RETRY`]; capping the shift keeps it from overflowing.
const MAX_DOUBLINGS: u32 = 9;

/// The delay after `failures` consecutive failures (counting this one): 1 s, 2 s, 4 s … 256 s, then
/// [`MAX_RETRY`].
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(MAX_DOUBLINGS);
    (FIRST_RETRY * (1u32 << doublings)).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(0), FIRST_RETRY, "no failure recorded yet");
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }
}
