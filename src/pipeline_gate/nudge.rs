//! After a gate opened: nudge what waits on it and say so in Events (see [`crate::nudge`]).

use kube::runtime::events::EventType;

use crate::crd::PipelineGate;
use crate::nudge::nudge_gate;
use crate::reconciler::events::{reasons, Transition};
use crate::reconciler::ReconcileIo;

/// Nudge, then say in Events what was nudged (Normal) and what could not be (Warning): the transitions
/// to publish after the gate's own. Never fails the reconcile: the gate's status is already written and
/// is what Flux and Argo CD read.
pub async fn after_open(gate: &PipelineGate, io: &ReconcileIo) -> Vec<Transition> {
    let report = nudge_gate(&io.client, &io.config.nudge, gate).await;
    let nudged = report.nudged_note().map(|note| Transition {
        type_: EventType::Normal,
        reason: reasons::NUDGED,
        note,
    });
    let failed = report.failed_note().map(|note| Transition {
        type_: EventType::Warning,
        reason: reasons::NUDGE_FAILED,
        note,
    });
    nudged.into_iter().chain(failed).collect()
}
