//! The hook-health check in `lockstep run` (`--hook-health-interval`): every period (the first one
//! period after start), for each
//! organization the gates use, one Subscriptions - List; then a metric per state and event type,
//! `status.hooks` on every gate whose coverage changed, and a Warning Event on a gate when a subscription
//! covering it goes on probation or is disabled.
//!
//! A token without the Service Hooks (read) scope is logged once per organization (and the gates say
//! `Unknown` with the reason), not as an error every period.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{EventType, Reporter};
use kube::ResourceExt;
use serde_json::json;
use tracing::{debug, info, warn};

use super::client::HooksClient;
use super::coverage::pipeline_coverage;
use super::model::Subscription;
use crate::crd::{HookCoverage, HookCoverageState, PipelineGate};
use crate::reconciler::credentials::read_key;
use crate::reconciler::events::{publish_transition_event, reasons, EventRecorders};
use crate::reconciler::scoped;
use crate::reconciler::token_cache::TokenCache;
use crate::telemetry::HookMetrics;

/// Field manager of `status.hooks` writes: not `lockstep`, whose server-side applies own the rest.
pub const HOOKS_FIELD_MANAGER: &str = "lockstep-hooks";
/// Gates read per page, and at most this many pages per check.
const LIST_PAGE: u32 = 500;
const MAX_PAGES: usize = 200;

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
    /// Organizations whose missing permission was already logged.
    permission_reported: HashSet<String>,
    /// Project GUIDs by (organization, project as the gate spells it).
    project_ids: HashMap<(String, String), String>,
}

/// Run the check until `stop` resolves.
pub async fn run(
    client: kube::Client,
    hooks: HooksClient,
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
    loop {
        check_once(
            &client,
            &hooks,
            &metrics,
            &config,
            &recorders,
            &tokens,
            &mut memory,
        )
        .await;
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

async fn check_once(
    client: &kube::Client,
    hooks: &HooksClient,
    metrics: &HookMetrics,
    config: &HookHealthConfig,
    recorders: &EventRecorders,
    tokens: &TokenCache,
    memory: &mut Memory,
) {
    let gates = match list_gates(client, &config.namespace, &config.sharding).await {
        Ok(g) => g,
        Err(e) => {
            warn!(error = %e, "hook-health check could not list PipelineGates; next period retries");
            return;
        }
    };
    let mut by_org: BTreeMap<String, Vec<PipelineGate>> = BTreeMap::new();
    for gate in gates {
        let org = gate
            .spec
            .azure_devops
            .organization_url
            .trim()
            .trim_end_matches('/')
            .to_ascii_lowercase();
        by_org.entry(org).or_default().push(gate);
    }
    let mut all_states: Vec<(String, String)> = Vec::new();
    for (org, gates) in &by_org {
        let org_url = gates[0].spec.azure_devops.organization_url.clone();
        let Some(token) = first_token(client, tokens, gates).await else {
            debug!(organization = %org, "no readable PAT for the hook-health check");
            continue;
        };
        let subs = match hooks.list(&org_url, &token).await {
            Ok(subs) => {
                metrics.record_check("ok");
                if memory.permission_reported.remove(org) {
                    info!(organization = %org, "service-hook subscriptions readable again");
                }
                subs
            }
            Err(e) if e.is_permission() => {
                metrics.record_check("permission");
                if memory.permission_reported.insert(org.clone()) {
                    warn!(organization = %org, error = %e, "cannot read service-hook subscriptions: hook health is unknown for this organization's gates (reported once; gates still work by polling)");
                }
                let unknown = HookCoverage {
                    state: HookCoverageState::Unknown,
                    subscriptions: Vec::new(),
                    message: format!("cannot read the service-hook subscriptions: {e}"),
                };
                for gate in gates {
                    write_coverage(client, gate, &unknown).await;
                }
                continue;
            }
            Err(e) => {
                metrics.record_check("error");
                warn!(organization = %org, error = %e, "hook-health check failed; next period retries");
                continue;
            }
        };
        all_states.extend(
            subs.iter()
                .map(|s| (s.state().to_string(), s.event_type.clone())),
        );
        for gate in gates {
            let project = &gate.spec.azure_devops.project;
            let key = (org.clone(), project.to_ascii_lowercase());
            let project_id = match memory.project_ids.get(&key) {
                Some(id) => id.clone(),
                None => match hooks.project_id(&org_url, project, &token).await {
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
            let coverage = pipeline_coverage(
                &subs,
                &project_id,
                gate.spec.pipeline.definition_id,
                config.receiver_url.as_deref(),
            );
            write_coverage(client, gate, &coverage).await;
            for sub in subs
                .iter()
                .filter(|s| coverage.subscriptions.contains(&s.id))
            {
                if became_unhealthy(memory, sub) {
                    let note = format!(
                        "Service-hook subscription {} ({}) is {}: Azure DevOps drops this pipeline's events until it is enabled again; run `lockstep hooks sync` or re-enable it under Project settings > Service hooks",
                        sub.id, sub.event_type, sub.state()
                    );
                    publish_transition_event(
                        recorders,
                        gate,
                        EventType::Warning,
                        reasons::HOOK_UNHEALTHY,
                        &note,
                    )
                    .await;
                }
            }
        }
        for sub in &subs {
            memory
                .states
                .insert(sub.id.clone(), sub.state().to_string());
        }
    }
    metrics.set_subscriptions(
        all_states
            .iter()
            .map(|(state, event)| (state.as_str(), event.as_str())),
    );
}

/// Whether `sub` is unhealthy now and was not at the last check (or was not seen yet). Pure over
/// `memory`; the caller records the new state after every gate had its Event.
fn became_unhealthy(memory: &Memory, sub: &Subscription) -> bool {
    !sub.is_healthy() && memory.states.get(&sub.id).map(String::as_str) != Some(sub.state())
}

/// The PAT of the first gate whose Secret reads: every gate of one organization may read its
/// subscriptions, if any may. Gates on Microsoft Entra identities are not used for this yet (the hooks
/// client authenticates with a PAT); an organization whose gates all use Entra reads as `Unknown`.
async fn first_token(
    client: &kube::Client,
    tokens: &TokenCache,
    gates: &[PipelineGate],
) -> Option<crate::secret::SecretString> {
    let mut tried = HashSet::new();
    for gate in gates {
        let ns = gate.namespace().unwrap_or_default();
        let Some(secret_ref) = gate.spec.azure_devops.credentials.secret_ref.as_ref() else {
            continue;
        };
        if !tried.insert((ns.clone(), secret_ref.name.clone(), secret_ref.key.clone())) {
            continue;
        }
        if let Ok(token) =
            read_key(client, tokens, &ns, secret_ref, "the personal access token").await
        {
            return Some(token);
        }
    }
    None
}

/// Merge-patch `status.hooks` when it differs from what the gate shows.
async fn write_coverage(client: &kube::Client, gate: &PipelineGate, coverage: &HookCoverage) {
    if gate.status.as_ref().and_then(|s| s.hooks.as_ref()) == Some(coverage) {
        return;
    }
    let Some(ns) = gate.namespace() else { return };
    let api: Api<PipelineGate> = Api::namespaced(client.clone(), &ns);
    let patch = json!({"status": {"hooks": coverage}});
    let params = PatchParams {
        field_manager: Some(HOOKS_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    match api
        .patch_status(&gate.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            info!(namespace = %ns, gate = %gate.name_any(), hooks = coverage.state.as_str(), "hook coverage updated")
        }
        Err(e) => {
            warn!(namespace = %ns, gate = %gate.name_any(), error = %e, "could not write status.hooks")
        }
    }
}

async fn list_gates(
    client: &kube::Client,
    namespace: &Option<String>,
    sharding: &crate::shard::Sharding,
) -> Result<Vec<PipelineGate>, kube::Error> {
    let api: Api<PipelineGate> = scoped(client, namespace);
    let mut out = Vec::new();
    let mut params = sharding.list_params().limit(LIST_PAGE);
    for _ in 0..MAX_PAGES {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        out.extend(page.items);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(out)
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
