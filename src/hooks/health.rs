//! The hook-health check in `lockstep run` (`--hook-health-interval`): every period (the first one
//! period after start), for each organization the gates and traces use, one Subscriptions - List with the
//! credential one of them uses (a PAT or a Microsoft Entra token); then a metric per state and event
//! type, `status.hooks` on every gate and trace whose coverage changed, and a Warning Event on an object
//! when a subscription covering it goes on probation or is disabled.
//!
//! A credential without the Service Hooks (read) permission is reported once per organization (one log
//! line, one Warning Event per object, and `status.hooks` `Unknown` with the reason), not as an error
//! every period.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{EventType, Reporter};
use tracing::{debug, info, warn};

use super::client::HooksClient;
use super::cluster::{first_credential, list_by_org, write_coverage, Watched};
use super::model::Subscription;
use crate::crd::{HookCoverage, HookCoverageState};
use crate::entra::EntraContext;
use crate::reconciler::events::{publish_transition_event, reasons, EventRecorders};
use crate::reconciler::token_cache::TokenCache;
use crate::telemetry::HookMetrics;

pub use super::cluster::HOOKS_FIELD_MANAGER;

/// Settings of the check.
#[derive(Clone, Debug)]
pub struct HookHealthConfig {
    pub interval: Duration,
    /// The receiver's public URL: only subscriptions posting there count. `None`: any Web Hooks one.
    pub receiver_url: Option<String>,
    pub namespace: Option<String>,
    /// Only this shard's gates: another shard checks (and writes `status.hooks` of) its own.
    pub sharding: crate::shard::Sharding,
    /// Reported on Events.
    pub identity: String,
}

/// What the check remembers between periods.
#[derive(Default)]
struct Memory {
    /// Last seen state per subscription id: an Event fires only on a change to unhealthy.
    states: HashMap<String, String>,
    /// Organizations whose missing permission was already reported.
    permission_reported: HashSet<String>,
    /// Project GUIDs by (organization, project as the object spells it).
    project_ids: HashMap<(String, String), String>,
}

/// Run the check until `stop` resolves.
pub async fn run(
    client: kube::Client,
    hooks: HooksClient,
    entra: Arc<EntraContext>,
    metrics: HookMetrics,
    config: HookHealthConfig,
    stop: impl Future<Output = ()>,
) {
    let recorders = EventRecorders::new(
        &client,
        &Reporter {
            controller: "lockstep".to_string(),
            instance: Some(config.identity.clone()),
        },
    );
    // Secrets are read fresh every period: the check is rare, and a rotated PAT must count at once.
    let tokens = TokenCache::new(Duration::ZERO);
    let mut memory = Memory::default();
    tokio::pin!(stop);
    info!(
        interval_s = config.interval.as_secs_f64(),
        "hook-health check started"
    );
    // The first check waits one period too: a restart must not cost every organization a List at once,
    // and status.hooks keeps what the previous process wrote meanwhile.
    tokio::select! {
        _ = &mut stop => return,
        _ = tokio::time::sleep(config.interval) => {}
    }
    let ctx = Check {
        client: &client,
        hooks: &hooks,
        entra: &entra,
        metrics: &metrics,
        config: &config,
        recorders: &recorders,
        tokens: &tokens,
    };
    loop {
        ctx.once(&mut memory).await;
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

/// What one check works with.
struct Check<'a> {
    client: &'a kube::Client,
    hooks: &'a HooksClient,
    entra: &'a EntraContext,
    metrics: &'a HookMetrics,
    config: &'a HookHealthConfig,
    recorders: &'a EventRecorders,
    tokens: &'a TokenCache,
}

impl Check<'_> {
    async fn once(&self, memory: &mut Memory) {
        let by_org = match list_by_org(
            self.client,
            &self.config.namespace,
            &self.config.sharding.list_params(),
        )
        .await
        {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "hook-health check could not list PipelineGates and ServiceTraces; next period retries");
                return;
            }
        };
        let mut all_states: Vec<(String, String)> = Vec::new();
        for (org, objects) in &by_org {
            let org_url = objects[0].ado().organization_url.clone();
            let Some(auth) = first_credential(self.client, self.tokens, self.entra, objects).await
            else {
                debug!(organization = %org, "no usable credential for the hook-health check");
                continue;
            };
            let subs = match self.hooks.list(&org_url, &auth).await {
                Ok(subs) => {
                    self.metrics.record_check("ok");
                    if memory.permission_reported.remove(org) {
                        info!(organization = %org, "service-hook subscriptions readable again");
                    }
                    subs
                }
                Err(e) if e.is_permission() => {
                    self.metrics.record_check("permission");
                    let first = memory.permission_reported.insert(org.clone());
                    if first {
                        warn!(organization = %org, error = %e, "cannot read service-hook subscriptions: hook health is unknown for this organization's gates and traces (reported once; they still work by polling)");
                    }
                    let unknown = HookCoverage {
                        state: HookCoverageState::Unknown,
                        subscriptions: Vec::new(),
                        message: format!("cannot read the service-hook subscriptions: {e}"),
                    };
                    for object in objects {
                        write_coverage(self.client, object, &unknown).await;
                        if first {
                            self.event(object, reasons::HOOKS_UNREADABLE, &unknown.message)
                                .await;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    self.metrics.record_check("error");
                    warn!(organization = %org, error = %e, "hook-health check failed; next period retries");
                    continue;
                }
            };
            all_states.extend(
                subs.iter()
                    .map(|s| (s.state().to_string(), s.event_type.clone())),
            );
            for object in objects {
                let project = &object.ado().project;
                let key = (org.clone(), project.to_ascii_lowercase());
                let project_id = match memory.project_ids.get(&key) {
                    Some(id) => id.clone(),
                    None => match self.hooks.project_id(&org_url, project, &auth).await {
                        Ok(id) => {
                            memory.project_ids.insert(key, id.clone());
                            id
                        }
                        Err(e) => {
                            debug!(project = %project, error = %e, "could not resolve the project id");
                            continue;
                        }
                    },
                };
                let coverage =
                    object.coverage(&subs, &project_id, self.config.receiver_url.as_deref());
                write_coverage(self.client, object, &coverage).await;
                for sub in subs
                    .iter()
                    .filter(|s| coverage.subscriptions.contains(&s.id))
                {
                    if became_unhealthy(memory, sub) {
                        let note = format!(
                            "Service-hook subscription {} ({}) is {}: Azure DevOps drops these events until it is enabled again; run `lockstep hooks sync` or re-enable it under Project settings > Service hooks",
                            sub.id, sub.event_type, sub.state()
                        );
                        self.event(object, reasons::HOOK_UNHEALTHY, &note).await;
                    }
                }
            }
            for sub in &subs {
                memory
                    .states
                    .insert(sub.id.clone(), sub.state().to_string());
            }
        }
        self.metrics.set_subscriptions(
            all_states
                .iter()
                .map(|(state, event)| (state.as_str(), event.as_str())),
        );
    }

    async fn event(&self, object: &Watched, reason: &str, note: &str) {
        match object {
            Watched::Gate(g) => {
                publish_transition_event(self.recorders, &**g, EventType::Warning, reason, note)
                    .await
            }
            Watched::Trace(t) => {
                publish_transition_event(self.recorders, &**t, EventType::Warning, reason, note)
                    .await
            }
        }
    }
}

/// Whether `sub` is unhealthy now and was not at the last check (or was not seen yet). Pure over
/// `memory`; the caller records the new state after every object had its Event.
fn became_unhealthy(memory: &Memory, sub: &Subscription) -> bool {
    !sub.is_healthy() && memory.states.get(&sub.id).map(String::as_str) != Some(sub.state())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HooksError;

    #[test]
    fn an_event_fires_once_per_change_to_an_unhealthy_state() {
        let mut memory = Memory::default();
        let mut sub = Subscription {
            id: "s".into(),
            ..Subscription::default()
        };
        assert!(!became_unhealthy(&memory, &sub), "enabled: nothing to say");
        memory.states.insert("s".into(), "enabled".into());
        sub.status = Some("onProbation".into());
        assert!(became_unhealthy(&memory, &sub));
        memory.states.insert("s".into(), "onProbation".into());
        assert!(
            !became_unhealthy(&memory, &sub),
            "still on probation: said already"
        );
        sub.status = Some("disabledBySystem".into());
        assert!(
            became_unhealthy(&memory, &sub),
            "probation to disabled is news"
        );
    }

    #[test]
    fn permission_errors_are_told_apart() {
        let e = HooksError::Unauthorized {
            organization: "o".into(),
            status: 401,
        };
        assert!(e.is_permission());
        assert!(e.to_string().contains("Service Hooks (read)"));
    }
}
