//! The controllers `lockstep run` starts: wiring of watches to reconcilers. The reconcilers live in their
//! own modules ([`gate`]); the pure status logic beside them ([`gate_status`]).

mod error;
pub mod gate;
pub mod gate_status;
#[cfg(test)]
mod gate_tests;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::Api;
use tracing::{info, warn};

pub use error::Error;
pub use gate::{BuildsCache, GateConfig, GateContext, FIELD_MANAGER, REQUESTED_AT_ANNOTATION};

use crate::ado::AdoClient;
use crate::crd::PipelineGate;
use crate::http::Readiness;
use crate::telemetry::Metrics;

/// What the controllers share, built once per process (survives losing and regaining leadership).
#[derive(Clone)]
pub struct Shared {
    pub client: kube::Client,
    pub ado: AdoClient,
    pub cache: Arc<BuildsCache>,
    pub metrics: Arc<Metrics>,
    pub gate_config: GateConfig,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    /// Reported on Events, to tell replicas apart.
    pub identity: String,
    pub readiness: Readiness,
}

/// Run the PipelineGate controller until `shutdown` resolves; in-flight reconciles finish first.
///
/// Watches every change of every gate (`any_semantic`, no predicates: a `lockstep.dev/requested-at`
/// annotation change must trigger a reconcile even though it does not bump `generation`), and the Secrets
/// in the watched namespaces, mapped to the gates that reference them.
pub async fn run_gate_controller(
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (gates, secrets): (Api<PipelineGate>, Api<Secret>) = match &shared.namespace {
        Some(ns) => (
            Api::namespaced(shared.client.clone(), ns),
            Api::namespaced(shared.client.clone(), ns),
        ),
        None => (
            Api::all(shared.client.clone()),
            Api::all(shared.client.clone()),
        ),
    };
    let controller = Controller::new(gates, watcher::Config::default().any_semantic());
    let store = controller.store();
    let mapper_store = store.clone();
    let recorder = Recorder::new(
        shared.client.clone(),
        Reporter {
            controller: "lockstep".to_string(),
            instance: Some(shared.identity.clone()),
        },
    );
    let ctx = Arc::new(GateContext::new(
        shared.client.clone(),
        shared.ado.clone(),
        shared.cache.clone(),
        recorder,
        shared.metrics.clone(),
        shared.gate_config.clone(),
        store.clone(),
    ));

    let readiness = shared.readiness.clone();
    let ready_store = store.clone();
    let mark_ready = tokio::spawn(async move {
        if ready_store.wait_until_ready().await.is_ok() {
            info!("first list of PipelineGates complete; ready");
            readiness.set_ready(true);
        }
    });

    controller
        .watches(
            secrets,
            watcher::Config::default(),
            move |secret: Secret| gate::gates_using_secret(&mapper_store, &secret),
        )
        .with_config(controller::Config::default().concurrency(8))
        .graceful_shutdown_on(shutdown)
        .run(gate::reconcile, gate::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                // Reconcile errors are already logged by error_policy; these are watch/queue errors.
                match e {
                    controller::Error::ReconcilerFailed(..) => {}
                    other => warn!(error = %other, "controller"),
                }
            }
        })
        .await;
    mark_ready.abort();
    info!("PipelineGate controller stopped");
}
