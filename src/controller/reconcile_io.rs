//! What both reconcilers talk to, built once per controller: the cluster, Azure DevOps (through the
//! Builds List cache that gates and traces on one pipeline share), the Event recorders, the Secrets read
//! for their PAT, the metrics and the tunables.

use std::sync::Arc;

use super::events::EventRecorders;
use super::gate::{BuildsCache, GateConfig};
use super::token_cache::TokenCache;
use crate::ado::AdoClient;
use crate::telemetry::Metrics;

pub struct ReconcileIo {
    pub client: kube::Client,
    pub ado: AdoClient,
    pub cache: Arc<BuildsCache>,
    pub recorders: EventRecorders,
    /// Secrets read for their PAT, shared by the objects that reference them; the controller's Secret
    /// watch invalidates an entry when its Secret changes.
    pub tokens: TokenCache,
    pub metrics: Arc<Metrics>,
    pub config: GateConfig,
}
