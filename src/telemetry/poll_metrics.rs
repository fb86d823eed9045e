//! What polling costs against Azure DevOps rate limits (issue 15): Builds List requests per pipeline-hour.
//!
//! Two gauges, computed at scrape time over a sliding hour (since start while lockstep has run for less):
//! - `lockstep_builds_list_requests_per_pipeline_hour`: Builds List requests sent (shared-cache misses:
//!   what Azure DevOps sees) divided by the distinct pipelines they were for, per hour;
//! - `lockstep_polled_pipelines`: those distinct pipelines (definition + branch).
//!
//! No pipeline label: a platform team wants one number per instance for a dashboard, and a label per
//! pipeline would grow with the cluster. Memory: 60 minute buckets plus one fingerprint and time per
//! pipeline polled within the hour.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use crate::pipeline_key::PipelineKey;

const WINDOW: Duration = Duration::from_secs(3600);
const BUCKET: Duration = Duration::from_secs(60);
const BUCKETS: u64 = 60;
/// Below this much history the rate is not extrapolated to an hour (one early request would read as
/// hundreds per hour); it is the count so far instead.
const MIN_SPAN: Duration = Duration::from_secs(60);

/// Counts Builds List requests per pipeline over the last hour.
#[derive(Debug)]
pub struct BuildsListRate {
    started: Instant,
    state: Mutex<RateState>,
}

#[derive(Debug, Default)]
struct RateState {
    /// (minute since start, requests in that minute), oldest first, at most [`BUCKETS`].
    buckets: VecDeque<(u64, u64)>,
    /// Pipeline fingerprint → its last request.
    pipelines: HashMap<u64, Instant>,
    swept_minute: Option<u64>,
}

/// The two numbers the gauges show.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSnapshot {
    pub requests_per_pipeline_hour: f64,
    pub pipelines: usize,
}

impl Default for BuildsListRate {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl BuildsListRate {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            state: Mutex::default(),
        }
    }

    /// One Builds List request for `pipeline` was sent.
    pub fn record(&self, pipeline: &PipelineKey) {
        self.record_at(pipeline, Instant::now());
    }

    pub fn record_at(&self, pipeline: &PipelineKey, now: Instant) {
        // DefaultHasher::new() has fixed keys: one pipeline, one fingerprint, no key material kept.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        pipeline.hash(&mut h);
        let minute = self.minute(now);
        let mut s = self.lock();
        s.prune(minute, now);
        match s.buckets.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => s.buckets.push_back((minute, 1)),
        }
        s.pipelines.insert(h.finish(), now);
    }

    pub fn snapshot_at(&self, now: Instant) -> RateSnapshot {
        let minute = self.minute(now);
        let mut s = self.lock();
        s.prune(minute, now);
        let requests: u64 = s.buckets.iter().map(|(_, n)| n).sum();
        let pipelines = s.pipelines.len();
        let span = now.saturating_duration_since(self.started).min(WINDOW);
        let hours = span.max(MIN_SPAN).as_secs_f64() / 3600.0;
        let per_hour = if pipelines == 0 {
            0.0
        } else if span < MIN_SPAN {
            requests as f64 / pipelines as f64
        } else {
            requests as f64 / pipelines as f64 / hours
        };
        RateSnapshot {
            requests_per_pipeline_hour: per_hour,
            pipelines,
        }
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs() / BUCKET.as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateState> {
        // Counters only: a panic elsewhere cannot leave them inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RateState {
    fn prune(&mut self, minute: u64, now: Instant) {
        while self
            .buckets
            .front()
            .is_some_and(|(m, _)| m + BUCKETS <= minute)
        {
            self.buckets.pop_front();
        }
        // The per-pipeline sweep walks every entry: at most once a minute.
        if self.swept_minute != Some(minute) {
            self.swept_minute = Some(minute);
            self.pipelines
                .retain(|_, at| now.saturating_duration_since(*at) < WINDOW);
        }
    }
}

impl Collector for BuildsListRate {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.snapshot_at(Instant::now());
        let rate = ConstGauge::new(snap.requests_per_pipeline_hour);
        rate.encode(encoder.encode_descriptor(
            "builds_list_requests_per_pipeline_hour",
            "Azure DevOps Builds List requests per distinct pipeline per hour, over the last hour",
            None,
            rate.metric_type(),
        )?)?;
        let pipelines = ConstGauge::new(i64::try_from(snap.pipelines).unwrap_or(i64::MAX));
        pipelines.encode(encoder.encode_descriptor(
            "polled_pipelines",
            "Distinct pipelines (definition and branch) polled with Builds List within the last hour",
            None,
            pipelines.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(def: i64) -> PipelineKey {
        PipelineKey::new("https://dev.azure.com/o", "P", def, "main").unwrap()
    }

    #[test]
    fn requests_per_pipeline_hour_over_a_full_hour() {
        let t0 = Instant::now();
        let rate = BuildsListRate::new(t0);
        // Two pipelines for two hours: one polled every minute, one every four minutes.
        for minute in 0..120u64 {
            let at = t0 + Duration::from_secs(minute * 60 + 1);
            rate.record_at(&key(1), at);
            if minute % 4 == 0 {
                rate.record_at(&key(2), at);
            }
        }
        let snap = rate.snapshot_at(t0 + Duration::from_secs(120 * 60));
        assert_eq!(snap.pipelines, 2);
        // The hour is the current minute (120, no request yet) and the 59 before it: minutes 61..=119
        // hold 59 requests of pipeline 1 and 14 of pipeline 2 (64, 68, …, 116): 73 over 2 pipelines.
        assert_eq!(snap.requests_per_pipeline_hour, 36.5, "{snap:?}");
    }

    #[test]
    fn a_young_process_extrapolates_only_after_a_minute() {
        let t0 = Instant::now();
        let rate = BuildsListRate::new(t0);
        rate.record_at(&key(1), t0);
        let early = rate.snapshot_at(t0 + Duration::from_secs(5));
        assert_eq!(early.requests_per_pipeline_hour, 1.0);
        for s in 1..10 {
            rate.record_at(&key(1), t0 + Duration::from_secs(s * 60));
        }
        // 10 requests in 10 minutes: 60 per hour.
        let later = rate.snapshot_at(t0 + Duration::from_secs(600));
        assert!(
            (later.requests_per_pipeline_hour - 60.0).abs() < 0.01,
            "{later:?}"
        );
    }

    #[test]
    fn pipelines_quiet_for_an_hour_are_forgotten() {
        let t0 = Instant::now();
        let rate = BuildsListRate::new(t0);
        for def in 0..100 {
            rate.record_at(&key(def), t0);
        }
        rate.record_at(&key(1000), t0 + Duration::from_secs(3000));
        let snap = rate.snapshot_at(t0 + Duration::from_secs(3700));
        assert_eq!(snap.pipelines, 1);
        let empty = rate.snapshot_at(t0 + Duration::from_secs(3000 + 3700));
        assert_eq!(empty.pipelines, 0);
        assert_eq!(empty.requests_per_pipeline_hour, 0.0);
        assert!(rate.lock().buckets.is_empty());
    }

    #[test]
    fn the_gauges_show_up_under_the_prefix() {
        let mut registry = prometheus_client::registry::Registry::default();
        let rate = std::sync::Arc::new(BuildsListRate::default());
        rate.record(&key(1));
        registry
            .sub_registry_with_prefix("lockstep")
            .register_collector(Box::new(rate.clone()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("lockstep_builds_list_requests_per_pipeline_hour 1.0"),
            "{text}"
        );
        assert!(text.contains("lockstep_polled_pipelines 1"), "{text}");
    }
}
