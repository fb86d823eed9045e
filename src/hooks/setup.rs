//! The controller's hook set-up (`lockstep run --hooks-sync`, chart value `hooks.sync.enabled`), off by
//! default: on start and every `--hooks-sync-interval`, for each organization the gates and traces use,
//! make sure the subscriptions they need exist, are enabled and point at `--hooks-url` with the
//! receiver's credentials, exactly as `lockstep hooks sync` does ([`super::sync::ensure`]), with the
//! credential the objects themselves use (a PAT or a Microsoft Entra token; it needs Service Hooks
//! read & write). Runs on the leader only. What it changes is counted
//! (`lockstep_hook_sync_writes_total`) and told as a Normal Event on the objects of the project.
//!
//! A credential that may not write subscriptions is reported once per organization, not every period.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{EventType, Reporter};
use tracing::{debug, info, warn};

use super::client::HooksClient;
use super::cluster::{first_credential, list_by_org, Watched};
use super::sync::{consumer_inputs, needs_of, SyncError};
use crate::entra::EntraContext;
use crate::reconciler::events::{publish_transition_event, reasons, EventRecorders};
use crate::reconciler::token_cache::TokenCache;
use crate::telemetry::HookMetrics;
use crate::webhook::WebhookAuth;

/// Settings of the hook set-up.
#[derive(Clone, Debug)]
pub struct HooksSetupConfig {
    pub interval: Duration,
    /// The receiver's public URL the subscriptions post to (`--hooks-url`).
    pub url: String,
    pub namespace: Option<String>,
    /// Only this shard's objects: each shard sets up the subscriptions posting to its own URL.
    pub sharding: crate::shard::Sharding,
    /// Reported on Events.
    pub identity: String,
}

/// Run the set-up until `stop` resolves: once at start, then every period.
pub async fn run(
    client: kube::Client,
    hooks: HooksClient,
    entra: Arc<EntraContext>,
    metrics: HookMetrics,
    receiver: WebhookAuth,
    config: HooksSetupConfig,
    stop: impl Future<Output = ()>,
) {
    let recorders = EventRecorders::new(
        &client,
        &Reporter {
            controller: "lockstep".to_string(),
            instance: Some(config.identity.clone()),
        },
    );
    let tokens = TokenCache::new(Duration::ZERO);
    let mut reported: HashSet<String> = HashSet::new();
    tokio::pin!(stop);
    info!(
        interval_s = config.interval.as_secs_f64(),
        "hook set-up started"
    );
    loop {
        let pass = Pass {
            client: &client,
            hooks: &hooks,
            entra: &entra,
            metrics: &metrics,
            receiver: &receiver,
            config: &config,
            recorders: &recorders,
            tokens: &tokens,
        };
        // A pass is bounded by the HTTP timeouts of its calls; stopping does not wait for it to finish.
        tokio::select! {
            _ = &mut stop => return,
            _ = pass.once(&mut reported) => {}
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

struct Pass<'a> {
    client: &'a kube::Client,
    hooks: &'a HooksClient,
    entra: &'a EntraContext,
    metrics: &'a HookMetrics,
    receiver: &'a WebhookAuth,
    config: &'a HooksSetupConfig,
    recorders: &'a EventRecorders,
    tokens: &'a TokenCache,
}

impl Pass<'_> {
    async fn once(&self, reported: &mut HashSet<String>) {
        let by_org = match list_by_org(
            self.client,
            &self.config.namespace,
            &self.config.sharding.list_params(),
        )
        .await
        {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "hook set-up could not list PipelineGates and ServiceTraces; next period retries");
                return;
            }
        };
        // Read every pass: a rotated receiver password reaches the subscriptions it replaces anyway.
        let creds = self.receiver.for_subscriptions();
        let inputs = consumer_inputs(
            &self.config.url,
            creds.basic.as_ref().map(|(u, p)| (u.as_str(), p)),
            creds.token.as_ref().map(|(h, t)| (h.as_str(), t)),
        );
        for (org, objects) in &by_org {
            let org_url = objects[0].ado().organization_url.trim().to_string();
            let needs = match needs_of(objects, &[]) {
                Ok(n) => n,
                Err(e) => {
                    warn!(organization = %org, error = %e, "hook set-up skipped this organization");
                    continue;
                }
            };
            let Some(auth) = first_credential(self.client, self.tokens, self.entra, objects).await
            else {
                debug!(organization = %org, "no usable credential for the hook set-up");
                continue;
            };
            match super::sync::ensure(self.hooks, &org_url, &auth, &needs, &inputs, false).await {
                Ok(report) => {
                    self.metrics.record_sync_run("ok");
                    if reported.remove(org) {
                        info!(organization = %org, "hook set-up may write subscriptions again");
                    }
                    self.metrics.record_sync(report.created, report.replaced);
                    if report.writes == 0 {
                        debug!(organization = %org, "service-hook subscriptions up to date");
                        continue;
                    }
                    for line in report.lines.iter().filter(|l| !l.starts_with("keep")) {
                        info!(organization = %org, change = %line, "hook set-up changed a subscription");
                    }
                    self.tell(objects, &report.changed_projects, &report.lines)
                        .await;
                }
                Err(e) if is_permission(&e) => {
                    self.metrics.record_sync_run("permission");
                    if reported.insert(org.clone()) {
                        warn!(organization = %org, error = %e, "hook set-up cannot manage this organization's service-hook subscriptions (reported once; give the credential Service Hooks read & write, or turn --hooks-sync off)");
                    }
                }
                Err(e) => {
                    self.metrics.record_sync_run("error");
                    warn!(organization = %org, error = %e, "hook set-up failed; next period retries");
                }
            }
        }
    }

    /// A Normal Event on every object of each changed project, naming the changes (no secrets in them).
    async fn tell(&self, objects: &[Watched], projects: &[String], lines: &[String]) {
        for project in projects {
            let changes: Vec<&str> = lines
                .iter()
                .filter(|l| !l.starts_with("keep") && l.contains(&format!("project={project} ")))
                .map(String::as_str)
                .collect();
            let note = format!(
                "lockstep set up the service hooks of project {project}: {}",
                changes.join("; ")
            );
            for object in objects
                .iter()
                .filter(|o| o.ado().project.trim().eq_ignore_ascii_case(project))
            {
                match object {
                    Watched::Gate(g) => {
                        publish_transition_event(
                            self.recorders,
                            &**g,
                            EventType::Normal,
                            reasons::HOOKS_SYNCED,
                            &note,
                        )
                        .await
                    }
                    Watched::Trace(t) => {
                        publish_transition_event(
                            self.recorders,
                            &**t,
                            EventType::Normal,
                            reasons::HOOKS_SYNCED,
                            &note,
                        )
                        .await
                    }
                }
            }
        }
    }
}

fn is_permission(e: &SyncError) -> bool {
    match e {
        SyncError::Hooks(h) | SyncError::Project { source: h, .. } => h.is_permission(),
        _ => false,
    }
}
