//! Injected misbehaviour: failures, rate limiting, slowness, truncated and oversized bodies, sign-in
//! pages, BOMs, and the random chaos mode (`chaos.rs`).

use std::time::Duration;

use super::chaos::{
    ChaosConfig, ChaosCounts, ChaosFault, ChaosState, RetryAfter, MAX_OVERSIZE_MIB,
};

/// A 429 (or a warning on a success) as the rate limiter would send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Throttle {
    pub retry_after: RetryAfter,
}

/// A body padded to `bytes` (valid JSON), streamed; `declare_length` sends `Content-Length`
/// up front, otherwise the body is chunked and only counting tells its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Oversize {
    pub bytes: u64,
    pub declare_length: bool,
}

impl Oversize {
    pub fn mib(mib: u32, declare_length: bool) -> Self {
        Self {
            bytes: u64::from(mib.min(MAX_OVERSIZE_MIB)) * 1024 * 1024,
            declare_length,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    fail: Option<(u32, u16)>,
    rate_limit: Option<(u32, Throttle)>,
    warn: Option<(u32, Throttle)>,
    sign_in: u32,
    oversize: Option<(u32, Oversize)>,
    truncate: u32,
    chaos: Option<ChaosState>,
    /// Kept across `clear` (like the request log) so a test can print them after the faults stop.
    chaos_counts: ChaosCounts,
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

fn take_count(n: &mut u32) -> bool {
    if *n == 0 {
        return false;
    }
    *n -= 1;
    true
}

impl FaultState {
    pub fn fail_next(&mut self, n: u32, status: u16) {
        self.fail = (n > 0).then_some((n, status));
    }

    pub fn rate_limit_next(&mut self, n: u32, retry_after: RetryAfter) {
        self.rate_limit = (n > 0).then_some((n, Throttle { retry_after }));
    }

    pub fn retry_after_on_success_next(&mut self, n: u32, retry_after_secs: u64) {
        self.warn = (n > 0).then_some((
            n,
            Throttle {
                retry_after: RetryAfter::seconds(retry_after_secs),
            },
        ));
    }

    pub fn sign_in_page_next(&mut self, n: u32) {
        self.sign_in = n;
    }

    pub fn oversize_next(&mut self, n: u32, oversize: Oversize) {
        self.oversize = (n > 0).then_some((n, oversize));
    }

    pub fn truncate_next(&mut self, n: u32) {
        self.truncate = n;
    }

    pub fn start_chaos(&mut self, config: &ChaosConfig) -> Result<(), String> {
        self.chaos = Some(ChaosState::new(config)?);
        self.chaos_counts.clear();
        Ok(())
    }

    pub fn stop_chaos(&mut self) {
        self.chaos = None;
    }

    pub fn chaos_counts(&self) -> ChaosCounts {
        self.chaos_counts.clone()
    }

    /// One chaos draw for a request; counts what it injects.
    pub fn roll_chaos(&mut self) -> Option<ChaosFault> {
        let (fault, exhausted) = self.chaos.as_mut()?.roll();
        if exhausted {
            self.chaos = None;
        }
        if let Some(f) = &fault {
            *self.chaos_counts.entry(f.name()).or_insert(0) += 1;
        }
        fault
    }

    pub fn clear(&mut self) {
        let counts = std::mem::take(&mut self.chaos_counts);
        *self = Self::default();
        self.chaos_counts = counts;
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

    pub fn take_sign_in_page(&mut self) -> bool {
        take_count(&mut self.sign_in)
    }

    pub fn take_oversize(&mut self) -> Option<Oversize> {
        take(&mut self.oversize)
    }

    pub fn take_truncate(&mut self) -> bool {
        take_count(&mut self.truncate)
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
        f.rate_limit_next(1, RetryAfter::seconds(7));
        assert_eq!(
            f.take_rate_limit(),
            Some(Throttle {
                retry_after: RetryAfter::seconds(7)
            })
        );
        assert_eq!(f.take_rate_limit(), None);
        f.truncate_next(1);
        assert!(f.take_truncate());
        assert!(!f.take_truncate());
        f.sign_in_page_next(1);
        assert!(f.take_sign_in_page());
        assert!(!f.take_sign_in_page());
        f.oversize_next(1, Oversize::mib(2, false));
        assert_eq!(f.take_oversize().map(|o| o.bytes), Some(2 * 1024 * 1024));
        assert_eq!(f.take_oversize(), None);
        f.fail_next(0, 500);
        assert_eq!(f.take_failure(), None);
    }

    #[test]
    fn clearing_stops_chaos_but_keeps_its_counts() {
        let mut f = FaultState::default();
        f.start_chaos(&ChaosConfig {
            seed: 3,
            rate: 1.0,
            faults: vec![ChaosFault::SignInPage],
            max_faults: None,
        })
        .unwrap();
        assert_eq!(f.roll_chaos(), Some(ChaosFault::SignInPage));
        assert_eq!(f.roll_chaos(), Some(ChaosFault::SignInPage));
        f.clear();
        assert_eq!(f.roll_chaos(), None);
        assert_eq!(f.chaos_counts().get("signInPage"), Some(&2));
    }
}
