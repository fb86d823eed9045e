//! After a gate opened: nudge what waits on it and say so in Events (see [`crate::nudge`]).

use kube::runtime::events::EventType;

use crate::crd::PipelineGate;
use crate::nudge::nudge_gate;
use crate::reconciler::events::{publish_transition_event, reasons};
use crate::reconciler::ReconcileIo;

/// Nudge, then one Normal Event naming what was nudged and one Warning Event naming what could not be.
/// Never fails the reconcile: the gate's status is already written and is what Flux and Argo CD read.
pub async fn after_open(gate: &PipelineGate, io: &ReconcileIo) {
    let report = nudge_gate(&io.client, &io.config.nudge, gate).await;
    if let Some(note) = report.nudged_note() {
        publish_transition_event(
            &io.recorders,
            gate,
            EventType::Normal,
            reasons::NUDGED,
            &note,
        )
        .await;
    }
    if let Some(note) = report.failed_note() {
        publish_transition_event(
            &io.recorders,
            gate,
            EventType::Warning,
            reasons::NUDGE_FAILED,
            &note,
        )
        .await;
    }
}
