//! Random faults for chaos tests: each REST request draws, with probability `rate`, one fault from a
//! set, from a seeded generator, so a failing run can be repeated with the same seed (as long as the
//! requests arrive in the same order). Bounded: it stops after `max_faults` faults, on
//! `stop_chaos`, and on `clear_faults`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a 429 tells the client when to come back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RetryAfterForm {
    /// `Retry-After: 30` (delta-seconds), as Azure DevOps sends it (docs/ado-api.md §3).
    #[default]
    Seconds,
    /// `Retry-After: Sun, 06 Nov 1994 08:49:37 GMT`: the IMF-fixdate form of RFC 9110 §10.2.3 /
    /// §5.6.7, `secs` from now (whole seconds, so the wait a client computes can be up to 1 s less).
    HttpDate,
    /// No `Retry-After` at all; only `X-RateLimit-Reset` = now + `secs` as Unix epoch seconds, the
    /// form ADO documents for that header ("Unix epoch time when usage would return to 0").
    ResetOnly,
}

/// A 429's timing hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryAfter {
    #[serde(rename = "retryAfter")]
    pub secs: u64,
    #[serde(default)]
    pub form: RetryAfterForm,
}

impl RetryAfter {
    pub fn seconds(secs: u64) -> Self {
        Self {
            secs,
            form: RetryAfterForm::Seconds,
        }
    }

    pub fn http_date(secs: u64) -> Self {
        Self {
            secs,
            form: RetryAfterForm::HttpDate,
        }
    }

    pub fn reset_only(secs: u64) -> Self {
        Self {
            secs,
            form: RetryAfterForm::ResetOnly,
        }
    }
}

/// One fault the chaos mode can inject. JSON: `{"kind":"status","status":503}`,
/// `{"kind":"rateLimit","retryAfter":5,"form":"httpDate"}`, `{"kind":"signInPage"}`,
/// `{"kind":"truncate"}`, `{"kind":"oversize","mib":8}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ChaosFault {
    /// An error status with an ADO error body (429 gets the rate-limit headers, 1 s).
    Status { status: u16 },
    /// 429 with the given timing hint.
    RateLimit(RetryAfter),
    /// 203 + the HTML sign-in page, as if the credential had just expired.
    SignInPage,
    /// The JSON body cut in half.
    Truncate,
    /// The JSON body padded to `mib` MiB (still valid JSON), streamed.
    Oversize { mib: u32 },
}

impl ChaosFault {
    /// The name the counts use: `status.503`, `rateLimit.httpDate`, `signInPage`, `truncate`,
    /// `oversize`.
    pub fn name(&self) -> String {
        match self {
            Self::Status { status } => format!("status.{status}"),
            Self::RateLimit(r) => match r.form {
                RetryAfterForm::Seconds => "rateLimit.seconds".into(),
                RetryAfterForm::HttpDate => "rateLimit.httpDate".into(),
                RetryAfterForm::ResetOnly => "rateLimit.resetOnly".into(),
            },
            Self::SignInPage => "signInPage".into(),
            Self::Truncate => "truncate".into(),
            Self::Oversize { .. } => "oversize".into(),
        }
    }
}

/// What `AdoSimulator::chaos` (or `POST /_sim/faults {"chaos": ...}`) starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosConfig {
    pub seed: u64,
    /// Probability in [0, 1] that a request gets a fault.
    pub rate: f64,
    /// Drawn from uniformly; must not be empty.
    pub faults: Vec<ChaosFault>,
    /// Stop after this many faults (`None`: until stopped or cleared).
    #[serde(default)]
    pub max_faults: Option<u64>,
}

/// The largest padded body the simulator streams (every body is bounded).
pub(crate) const MAX_OVERSIZE_MIB: u32 = 1024;

#[derive(Debug)]
pub(crate) struct ChaosState {
    rng: SplitMix64,
    rate: f64,
    faults: Vec<ChaosFault>,
    remaining: Option<u64>,
}

impl ChaosState {
    pub fn new(config: &ChaosConfig) -> Result<Self, String> {
        if config.faults.is_empty() {
            return Err("chaos needs at least one fault in `faults`".into());
        }
        if !(0.0..=1.0).contains(&config.rate) {
            return Err(format!(
                "chaos rate {} must be between 0 and 1",
                config.rate
            ));
        }
        for f in &config.faults {
            if let ChaosFault::Oversize { mib } = f {
                if *mib == 0 || *mib > MAX_OVERSIZE_MIB {
                    return Err(format!(
                        "oversize of {mib} MiB must be between 1 and {MAX_OVERSIZE_MIB}"
                    ));
                }
            }
        }
        Ok(Self {
            rng: SplitMix64(config.seed),
            rate: config.rate,
            faults: config.faults.clone(),
            remaining: config.max_faults,
        })
    }

    /// Draws for one request. Returns the fault and whether chaos is now exhausted.
    pub fn roll(&mut self) -> (Option<ChaosFault>, bool) {
        if self.remaining == Some(0) {
            return (None, true);
        }
        // 53 random bits → a uniform f64 in [0, 1).
        let r = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        if r >= self.rate {
            return (None, false);
        }
        let len = self.faults.len() as u64;
        let pick = self.faults[(self.rng.next() % len) as usize];
        if let Some(n) = self.remaining.as_mut() {
            *n -= 1;
        }
        (Some(pick), self.remaining == Some(0))
    }
}

/// Counts of injected chaos faults by [`ChaosFault::name`].
pub(crate) type ChaosCounts = BTreeMap<String, u64>;

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough to spread faults; no crate needed.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64, rate: f64, max: Option<u64>) -> ChaosConfig {
        ChaosConfig {
            seed,
            rate,
            faults: vec![
                ChaosFault::Status { status: 503 },
                ChaosFault::RateLimit(RetryAfter::http_date(1)),
                ChaosFault::Truncate,
            ],
            max_faults: max,
        }
    }

    #[test]
    fn same_seed_same_faults_and_the_rate_holds() {
        let draw = |seed| {
            let mut c = ChaosState::new(&config(seed, 0.3, None)).unwrap();
            (0..2000).map(|_| c.roll().0).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let hits = a.iter().filter(|f| f.is_some()).count();
        assert!((500..700).contains(&hits), "about 30% of 2000, got {hits}");
        for kind in [
            ChaosFault::Status { status: 503 },
            ChaosFault::Truncate,
            ChaosFault::RateLimit(RetryAfter::http_date(1)),
        ] {
            assert!(a.contains(&Some(kind)), "{kind:?} is drawn");
        }
    }

    #[test]
    fn chaos_is_bounded_and_validated() {
        let mut c = ChaosState::new(&config(1, 1.0, Some(3))).unwrap();
        assert!(c.roll().0.is_some());
        assert!(c.roll().0.is_some());
        assert!(c.roll().1, "the third fault exhausts it");
        assert_eq!(c.roll(), (None, true));
        assert!(ChaosState::new(&config(1, 1.5, None)).is_err());
        let mut empty = config(1, 0.5, None);
        empty.faults.clear();
        assert!(ChaosState::new(&empty).is_err());
        let mut huge = config(1, 0.5, None);
        huge.faults = vec![ChaosFault::Oversize { mib: 5000 }];
        assert!(ChaosState::new(&huge).is_err());
    }

    #[test]
    fn faults_read_from_json() {
        let f: Vec<ChaosFault> = serde_json::from_str(
            r#"[{"kind":"status","status":503},{"kind":"rateLimit","retryAfter":5,"form":"resetOnly"},
                {"kind":"rateLimit","retryAfter":2},{"kind":"signInPage"},{"kind":"truncate"},
                {"kind":"oversize","mib":8}]"#,
        )
        .unwrap();
        assert_eq!(f[1], ChaosFault::RateLimit(RetryAfter::reset_only(5)));
        assert_eq!(f[2], ChaosFault::RateLimit(RetryAfter::seconds(2)));
        assert_eq!(f[5], ChaosFault::Oversize { mib: 8 });
        assert_eq!(f[1].name(), "rateLimit.resetOnly");
    }
}
