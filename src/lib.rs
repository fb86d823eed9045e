//! lockstep keeps GitOps deployments in lockstep with Azure DevOps pipelines.
//!
//! # Where things live
//! - [`crd`]: the PipelineGate and ServiceTrace custom resources (the user's contract), the
//!   requested-at annotation and run summaries both kinds report.
//! - [`pipeline_gate`]: everything about one PipelineGate: the pure decision, its status, the reconciler
//!   and its controller. `lockstep check` ([`check`]) reuses the decision.
//! - [`service_trace`]: everything about one ServiceTrace: the pure stage logic, its status, what it
//!   reads, the reconciler and its controller.
//! - [`hooks`]: service-hook subscriptions: the hook-health check, `lockstep hooks sync` and the opt-in
//!   controller set-up (`--hooks-sync`).
//! - [`nudge`]: when a gate opens, ask the Flux Kustomizations and Argo CD Applications waiting on it to
//!   reconcile now.
//! - [`reconciler`]: the machinery both kinds' reconcilers share; it imports no kind.
//! - [`webhook`]: the Azure DevOps service-hook receiver (turns deliveries into reconcile hints).
//! - [`ado`]: Azure DevOps REST models and the HTTP client; [`poll_cache`]: one Builds List request per
//!   pipeline per period; [`pipeline_key`]: what an object follows, normalised.
//! - [`conditions`]: kstatus Ready/Reconciling/Stalled; [`secret`]: a string that cannot be logged.
//! - [`entra`]: Microsoft Entra ID tokens for Azure DevOps (workload identity, service principal, managed
//!   identity), one per identity; [`proxy`]: `HTTPS_PROXY`/`NO_PROXY` decided per URL for every client.
//! - [`api`]: the read API and dashboard (`--api-addr`), served from the controllers' reflector stores.
//! - [`run`]: `lockstep run`, the process wiring; [`ops_server`]: probes and `/metrics`;
//!   [`http_server`]: bounded connections (header timeout, cap, prompt shutdown) for both listeners;
//!   [`telemetry`]: metrics and logs; [`leader`]: leader election; [`shard`]: which objects this
//!   instance serves (`--shard`, `--watch-label-selector`) and its Lease name; [`label_selector`]:
//!   label selectors parsed as kube-apiserver parses them.
//!
//! # A webhook delivery
//! [`webhook::server`] authenticates and parses it and [`webhook::index`] names the objects it concerns.
//! On the leading replica the receiver hands gates straight to the PipelineGate controller
//! ([`reconciler::hook_relay`]) with the delivery's time as the poll cache's freshness floor; what is not
//! reconciled within 2 s, and every ServiceTrace, gets [`crd::REQUESTED_AT_ANNOTATION`] instead. That
//! change wakes the kind's controller (`controller.rs`), whose reconcile then ignores cached Azure DevOps
//! answers older than the annotation. Deliveries also tell [`reconciler::idle`] that hooks work, which
//! stretches idle polling.
//!
//! # A poll, to a status write
//! A kind's `controller.rs` requeues each object; `reconcile.rs` resolves its credential (a PAT, or an
//! Entra token shared per identity: [`reconciler::credentials`]), reads Azure DevOps through the shared [`reconciler::BuildsCache`],
//! decides (the gate's `decision.rs`, the trace's `stages.rs`), computes the desired status (`status.rs`),
//! writes it once when it changed ([`reconciler::status_write`]), hands the Events of a transition to
//! the recorder's background posters ([`reconciler::events`], off the reconcile's slot) and requeues on
//! the pipeline's grid ([`reconciler::schedule`]). What enters a controller's cache is compacted first
//! ([`reconciler::runtime::CacheCompact`]).

pub mod ado;
pub mod api;
pub mod check;
pub mod conditions;
pub mod crd;
pub mod entra;
pub mod hooks;
pub mod http_server;
pub mod label_selector;
pub mod leader;
pub mod nudge;
pub mod ops_server;
pub mod pipeline_gate;
pub mod pipeline_key;
pub mod poll_cache;
pub mod proxy;
pub mod reconciler;
pub mod run;
pub mod secret;
pub mod service_trace;
pub mod shard;
pub mod telemetry;
pub mod webhook;
