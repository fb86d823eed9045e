//! Injected misbehaviour: failures, rate limiting, slowness, truncated bodies, BOMs.

use std::time::Duration;

/// A 429 (or a warning on a success) as the rate limiter would send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Throttle {
    pub retry_after_secs: u64,
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    fail: Option<(u32, u16)>,
    rate_limit: Option<(u32, Throttle)>,
    warn: Option<(u32, Throttle)>,
    truncate: u32,
    pub delay: Duration,
    pub error_bom: bool,
}

fn take<T: Copy>(slot: &mut Option<(u32, T)>) -> Option<T> {
    let (left, value) = slot.as_mut()?;
    let value = *value;
    *left -= 1;
    if *left == 0 {
        *slot = None;
    }
    Some(value)
}

impl FaultState {
    pub fn fail_next(&mut self, n: u32, status: u16) {
        self.fail = (n > 0).then_some((n, status));
    }

    pub fn rate_limit_next(&mut self, n: u32, retry_after_secs: u64) {
        self.rate_limit = (n > 0).then_some((n, Throttle { retry_after_secs }));
    }

    pub fn retry_after_on_success_next(&mut self, n: u32, retry_after_secs: u64) {
        self.warn = (n > 0).then_some((n, Throttle { retry_after_secs }));
    }

    pub fn truncate_next(&mut self, n: u32) {
        self.truncate = n;
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    pub fn take_failure(&mut self) -> Option<u16> {
        take(&mut self.fail)
    }

    pub fn take_rate_limit(&mut self) -> Option<Throttle> {
        take(&mut self.rate_limit)
    }

    pub fn take_warning(&mut self) -> Option<Throttle> {
        take(&mut self.warn)
    }

    pub fn take_truncate(&mut self) -> bool {
        if self.truncate == 0 {
            return false;
        }
        self.truncate -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_run_out() {
        let mut f = FaultState::default();
        f.fail_next(2, 503);
        assert_eq!(f.take_failure(), Some(503));
        assert_eq!(f.take_failure(), Some(503));
        assert_eq!(f.take_failure(), None);
        f.rate_limit_next(1, 7);
        assert_eq!(
            f.take_rate_limit(),
            Some(Throttle {
                retry_after_secs: 7
            })
        );
        assert_eq!(f.take_rate_limit(), None);
        f.truncate_next(1);
        assert!(f.take_truncate());
        assert!(!f.take_truncate());
        f.fail_next(0, 500);
        assert_eq!(f.take_failure(), None);
    }
}
