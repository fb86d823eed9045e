//! What every reconciler talks to, built once per controller: the cluster, Azure DevOps (through the
//! Builds List cache that gates and traces on one pipeline share), the Event recorders, the Secrets read
//! for their PAT, the metrics and the tunables.

use std::sync::Arc;
use std::time::Duration;

use super::events::EventRecorders;
use super::token_cache::TokenCache;
use crate::ado::AdoClient;
use crate::ado::{AdoError, Build};
use crate::entra::EntraContext;
use crate::nudge::NudgeConfig;
use crate::pipeline_key::PipelineKey;
use crate::poll_cache::PollCache;
use crate::telemetry::Metrics;

/// Runs fetched per Builds List: enough to find the newest completed run behind a few queued or ignored
/// ones. Every kind asks for the same number, so gates and traces on one pipeline share one answer.
pub const RUNS_PER_LIST: u32 = 20;

/// The shared Builds List cache: one request per (pipeline, token) per period.
pub type BuildsCache = PollCache<PipelineKey, Vec<Build>, AdoError>;

/// What every kind fetches into the [`BuildsCache`]: Builds List, and when it is empty, Definitions - Get.
///
/// Builds List answers an empty list for a definition that does not exist, exactly as for one without
/// runs, so a typo in `definitionId` would wait forever as `NoRuns`. A missing definition (or project) is
/// [`AdoError::NotFound`] naming both. The answer is shared per pipeline through the cache like any other,
/// so the check costs one request per pipeline per period, and only while the pipeline has no runs. A
/// check that cannot tell (Azure DevOps failing) keeps the empty list: waiting is the safe reading.
pub async fn list_runs(
    ado: &AdoClient,
    org_url: &str,
    project: &str,
    definition_id: i64,
    branch: &str,
    token: &(impl crate::ado::Credential + ?Sized),
) -> Result<Vec<Build>, AdoError> {
    let runs = ado
        .list_builds(
            org_url,
            project,
            definition_id,
            branch,
            RUNS_PER_LIST,
            token,
        )
        .await?;
    if runs.is_empty() {
        if let Err(missing @ AdoError::NotFound { .. }) = ado
            .get_definition(org_url, project, definition_id, token)
            .await
        {
            return Err(missing);
        }
    }
    Ok(runs)
}

pub struct ReconcileIo {
    pub client: kube::Client,
    pub ado: AdoClient,
    pub cache: Arc<BuildsCache>,
    pub recorders: EventRecorders,
    /// Secrets read for their PAT, shared by the objects that reference them; the controller's Secret
    /// watch invalidates an entry when its Secret changes.
    pub tokens: TokenCache,
    /// Entra tokens, one per identity for the whole process, and the workload identity environment.
    pub entra: Arc<EntraContext>,
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
    /// What a gate nudges when it opens (issue 18; see [`crate::nudge`]).
    pub nudge: NudgeConfig,
    /// `--idle-poll-stretch`: idle objects poll at most this many times `interval` apart while service
    /// hooks for their project prove themselves ([`super::idle`]); 1 never stretches.
    pub idle_poll_stretch: u32,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            fast_interval: Duration::from_secs(10),
            default_interval: Duration::from_secs(60),
            default_stale_after: Duration::from_secs(600),
            secret_cache_ttl: Duration::ZERO,
            nudge: NudgeConfig::default(),
            idle_poll_stretch: super::idle::DEFAULT_STRETCH,
        }
    }
}
