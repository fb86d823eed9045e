//! What every reconciler talks to, built once per controller: the cluster, Azure DevOps (through the
//! Builds List cache that gates and traces on one pipeline share), the Event recorders, the Secrets read
//! for their PAT, the metrics and the tunables.

use std::sync::Arc;
use std::time::Duration;

use super::events::EventRecorders;
use super::token_cache::TokenCache;
use crate::ado::AdoClient;
use crate::ado::{AdoError, Build};
use crate::pipeline_key::PipelineKey;
use crate::poll_cache::PollCache;
use crate::telemetry::Metrics;

/// Runs fetched per Builds List: enough to find the newest completed run behind a few queued or ignored
/// ones. Every kind asks for the same number, so gates and traces on one pipeline share one answer.
pub const RUNS_PER_LIST: u32 = 20;

/// The shared Builds List cache: one request per (pipeline, token) per period.
pub type BuildsCache = PollCache<PipelineKey, Vec<Build>, AdoError>;

pub struct ReconcileIo {
    pub client: kube::Client,
    pub ado: AdoClient,
    pub cache: Arc<BuildsCache>,
    pub recorders: EventRecorders,
    /// Secrets read for their PAT, shared by the objects that reference them; the controller's Secret
    /// watch invalidates an entry when its Secret changes.
    pub tokens: TokenCache,
    pub metrics: Arc<Metrics>,
    pub config: ReconcilerConfig,
}

/// Tunables every reconciler reads, from flags.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// Polling period while a run is in flight (DESIGN: 10s).
    pub fast_interval: Duration,
    /// `spec.interval` when unset.
    pub default_interval: Duration,
    /// `spec.policy.staleAfter` when unset.
    pub default_stale_after: Duration,
    /// How long a Secret read is shared by the objects that reference it (see [`TokenCache`]); zero
    /// reads the Secret on every reconcile.
    pub secret_cache_ttl: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            fast_interval: Duration::from_secs(10),
            default_interval: Duration::from_secs(60),
            default_stale_after: Duration::from_secs(600),
            secret_cache_ttl: Duration::ZERO,
        }
    }
}
