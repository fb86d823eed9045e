//! Service-hook health (issue 18): how many of the organization's subscriptions are in each state, per
//! event type, as of the last hook-health check.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    /// `enabled`, `onProbation`, `disabledBySystem`, `disabledByUser`, ... as Azure DevOps spells them.
    pub state: String,
    pub event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `ok`, `permission` (the token may not read subscriptions) or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `create` or `replace` (re-enabled, or inputs brought back to the receiver's).
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncRunLabels {
    /// `ok`, `permission` or `error`, per organization.
    pub result: &'static str,
}

#[derive(Clone, Default)]
pub struct HookMetrics {
    pub subscriptions: Family<SubscriptionLabels, Gauge>,
    pub checks: Family<CheckLabels, Counter>,
    /// Subscriptions the controller's hook set-up (`--hooks-sync`) wrote.
    pub sync_writes: Family<SyncLabels, Counter>,
    pub sync_runs: Family<SyncRunLabels, Counter>,
}

impl HookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("lockstep");
        r.register(
            "hook_subscriptions",
            "Service-hook subscriptions of the organizations lockstep's gates use, by state and event type",
            m.subscriptions.clone(),
        );
        r.register(
            "hook_health_checks",
            "Hook-health checks per organization, by result",
            m.checks.clone(),
        );
        r.register(
            "hook_sync_writes",
            "Service-hook subscriptions the hook set-up (--hooks-sync) created or replaced",
            m.sync_writes.clone(),
        );
        r.register(
            "hook_sync_runs",
            "Hook set-up passes per organization, by result",
            m.sync_runs.clone(),
        );
        m
    }

    /// Replace the subscription counts with one check's (a state nobody has any more disappears).
    pub fn set_subscriptions<'a>(&self, states: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.subscriptions.clear();
        for (state, event_type) in states {
            self.subscriptions
                .get_or_create(&SubscriptionLabels {
                    state: state.to_string(),
                    event_type: event_type.to_string(),
                })
                .inc();
        }
    }

    pub fn record_sync(&self, created: usize, replaced: usize) {
        for (action, n) in [("create", created), ("replace", replaced)] {
            if n > 0 {
                self.sync_writes
                    .get_or_create(&SyncLabels { action })
                    .inc_by(n as u64);
            }
        }
    }

    pub fn record_sync_run(&self, result: &'static str) {
        self.sync_runs
            .get_or_create(&SyncRunLabels { result })
            .inc();
    }

    pub fn record_check(&self, result: &'static str) {
        self.checks.get_or_create(&CheckLabels { result }).inc();
    }
}
