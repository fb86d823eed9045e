//! What both reconcilers talk to, built once per controller: the cluster, Azure DevOps (through the
//! Builds List cache that gates and traces on one pipeline share), the Event recorder, the metrics and
//! the tunables.

use std::sync::Arc;

use kube::runtime::events::Recorder;

use super::gate::{BuildsCache, GateConfig};
use crate::ado::AdoClient;
use crate::telemetry::Metrics;

pub struct ReconcileIo {
    pub client: kube::Client,
    pub ado: AdoClient,
    pub cache: Arc<BuildsCache>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: GateConfig,
}
