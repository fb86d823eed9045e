//! The Entra pieces a reconciler holds.

use super::cache::EntraTokens;
use super::client::EntraClient;
use super::identity::AzureEnv;

/// What the reconcilers need for the Entra sources: the process-wide token cache and the pod's
/// workload identity environment.
pub struct EntraContext {
    pub tokens: EntraTokens,
    pub env: AzureEnv,
}

impl EntraContext {
    pub fn new(client: EntraClient, env: AzureEnv) -> Self {
        Self {
            tokens: EntraTokens::new(client),
            env,
        }
    }
}
