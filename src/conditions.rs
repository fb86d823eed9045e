//! kstatus conditions (`Ready`, `Reconciling`, `Stalled`) shared by PipelineGate and ServiceTrace.
//!
//! The object's state is summarised once as a [`Kstatus`]; [`Kstatus::to_conditions`] turns it into the
//! three conditions, carrying `lastTransitionTime` over from the previous conditions unless a condition's
//! status flips. That is what lets a controller compare desired and current status and skip the write when
//! nothing changed, and what `kubectl wait`, Flux and Argo CD expect.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// A condition's status, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    fn from_bool(b: bool) -> Self {
        if b {
            Self::True
        } else {
            Self::False
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "True" => Self::True,
            "False" => Self::False,
            _ => Self::Unknown,
        }
    }
}

/// What an object's status says, before it is spelled as conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kstatus {
    pub ready: ConditionStatus,
    pub reconciling: bool,
    pub stalled: bool,
    /// CamelCase reason, the same on all three conditions.
    pub reason: String,
    /// One human line; the same on all three conditions.
    pub message: String,
}

impl Kstatus {
    /// The object is where it should be (gate open, trace at head).
    pub fn ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ConditionStatus::True, false, false, reason, message)
    }

    /// Something is in flight; the object should become Ready or Stalled on its own.
    pub fn in_progress(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ConditionStatus::False, true, false, reason, message)
    }

    /// Something failed and will not recover without a change (a new run, a fixed credential).
    pub fn stalled(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ConditionStatus::False, false, true, reason, message)
    }

    /// The controller cannot tell (the source of truth has been unreachable too long).
    pub fn unknown(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ConditionStatus::Unknown, false, false, reason, message)
    }

    /// Reconciliation is suspended: Ready and Stalled keep their status and Ready its reason (the last
    /// verdict still holds for whoever waits on it: kstatus reads Ready=False without Stalled as
    /// InProgress, so a suspended blocked object must stay Stalled), and the message says it is
    /// suspended; nothing is reconciling.
    pub fn suspended(previous: &[Condition]) -> Self {
        const PREFIX: &str = "Suspended: ";
        match find(previous, READY) {
            Some(ready) => {
                let message = if ready.message.starts_with(PREFIX) {
                    ready.message.clone()
                } else if ready.message.is_empty() {
                    "Suspended: reconciliation is suspended".to_string()
                } else {
                    format!("{PREFIX}{}", ready.message)
                };
                Self {
                    ready: ConditionStatus::parse(&ready.status),
                    reconciling: false,
                    stalled: status_of(previous, STALLED) == ConditionStatus::True,
                    reason: ready.reason.clone(),
                    message,
                }
            }
            None => Self::unknown(
                "Suspended",
                "Suspended: reconciliation is suspended and no verdict was reached before",
            ),
        }
    }

    fn new(
        ready: ConditionStatus,
        reconciling: bool,
        stalled: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            ready,
            reconciling,
            stalled,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// `Ready`, `Reconciling`, `Stalled`, in that order. `lastTransitionTime` is taken from `previous` for
    /// every condition whose status did not change, and is `now` otherwise. The CRD's default status
    /// (reason [`crate::crd::NOT_EVALUATED`], dated 1970) is a placeholder, not a transition lockstep
    /// saw, so the first real verdict dates every condition `now`.
    pub fn to_conditions(
        &self,
        previous: &[Condition],
        observed_generation: Option<i64>,
        now: Time,
    ) -> Vec<Condition> {
        [
            (READY, self.ready),
            (RECONCILING, ConditionStatus::from_bool(self.reconciling)),
            (STALLED, ConditionStatus::from_bool(self.stalled)),
        ]
        .into_iter()
        .map(|(type_, status)| {
            let last_transition_time = match find(previous, type_) {
                Some(prev)
                    if prev.status == status.as_str()
                        && prev.reason != crate::crd::NOT_EVALUATED =>
                {
                    prev.last_transition_time.clone()
                }
                _ => now.clone(),
            };
            Condition {
                type_: type_.to_string(),
                status: status.as_str().to_string(),
                reason: self.reason.clone(),
                message: self.message.clone(),
                observed_generation,
                last_transition_time,
            }
        })
        .collect()
    }
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Status of the condition of the given type; `Unknown` when absent.
pub fn status_of(conditions: &[Condition], type_: &str) -> ConditionStatus {
    find(conditions, type_).map_or(ConditionStatus::Unknown, |c| {
        ConditionStatus::parse(&c.status)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    fn by_type<'a>(conds: &'a [Condition], type_: &str) -> &'a Condition {
        find(conds, type_).unwrap()
    }

    #[test]
    fn ready_sets_only_ready_true() {
        let c = Kstatus::ready("Succeeded", "ok").to_conditions(&[], Some(3), t(100));
        assert_eq!(c.len(), 3);
        assert_eq!(by_type(&c, READY).status, "True");
        assert_eq!(by_type(&c, RECONCILING).status, "False");
        assert_eq!(by_type(&c, STALLED).status, "False");
        for cond in &c {
            assert_eq!(cond.reason, "Succeeded");
            assert_eq!(cond.message, "ok");
            assert_eq!(cond.observed_generation, Some(3));
            assert_eq!(cond.last_transition_time, t(100));
        }
    }

    #[test]
    fn in_progress_stalled_and_unknown_spell_their_conditions() {
        let c = Kstatus::in_progress("RunInProgress", "m").to_conditions(&[], None, t(1));
        assert_eq!(
            [READY, RECONCILING, STALLED].map(|ty| by_type(&c, ty).status.clone()),
            ["False", "True", "False"]
        );
        let c = Kstatus::stalled("RunFailed", "m").to_conditions(&[], None, t(1));
        assert_eq!(
            [READY, RECONCILING, STALLED].map(|ty| by_type(&c, ty).status.clone()),
            ["False", "False", "True"]
        );
        let c = Kstatus::unknown("ApiUnavailable", "m").to_conditions(&[], None, t(1));
        assert_eq!(
            [READY, RECONCILING, STALLED].map(|ty| by_type(&c, ty).status.clone()),
            ["Unknown", "False", "False"]
        );
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = Kstatus::in_progress("RunQueued", "queued").to_conditions(&[], Some(1), t(100));
        // Same statuses, new reason and message: no flip, so times stay.
        let second =
            Kstatus::in_progress("RunInProgress", "running").to_conditions(&first, Some(2), t(200));
        for cond in &second {
            assert_eq!(cond.last_transition_time, t(100), "{}", cond.type_);
            assert_eq!(cond.observed_generation, Some(2));
            assert_eq!(cond.reason, "RunInProgress");
        }
    }

    #[test]
    fn transition_time_moves_only_for_conditions_that_flip() {
        let waiting = Kstatus::in_progress("RunInProgress", "m").to_conditions(&[], None, t(100));
        let failed = Kstatus::stalled("RunFailed", "m").to_conditions(&waiting, None, t(200));
        assert_eq!(
            by_type(&failed, READY).last_transition_time,
            t(100),
            "Ready stayed False"
        );
        assert_eq!(by_type(&failed, RECONCILING).last_transition_time, t(200));
        assert_eq!(by_type(&failed, STALLED).last_transition_time, t(200));
        let open = Kstatus::ready("Succeeded", "m").to_conditions(&failed, None, t(300));
        assert_eq!(by_type(&open, READY).last_transition_time, t(300));
        assert_eq!(
            by_type(&open, RECONCILING).last_transition_time,
            t(200),
            "stayed False"
        );
        assert_eq!(by_type(&open, STALLED).last_transition_time, t(300));
    }

    #[test]
    fn same_input_twice_gives_identical_conditions() {
        let k = Kstatus::stalled("RunFailed", "Run 1 failed");
        let a = k.to_conditions(&[], Some(4), t(10));
        let b = k.to_conditions(&a, Some(4), t(99));
        assert_eq!(a, b);
    }

    #[test]
    fn suspended_keeps_ready_status_and_reason_and_says_so() {
        let open =
            Kstatus::ready("Succeeded", "Run 7 succeeded").to_conditions(&[], Some(1), t(100));
        let s = Kstatus::suspended(&open);
        assert_eq!(s.ready, ConditionStatus::True);
        assert_eq!(s.reason, "Succeeded");
        assert_eq!(s.message, "Suspended: Run 7 succeeded");
        assert!(!s.reconciling && !s.stalled);
        let c = s.to_conditions(&open, Some(2), t(200));
        assert_eq!(by_type(&c, READY).last_transition_time, t(100));
        // Suspending twice does not stack prefixes.
        assert_eq!(Kstatus::suspended(&c).message, "Suspended: Run 7 succeeded");
    }

    #[test]
    fn suspended_without_history_is_unknown() {
        let s = Kstatus::suspended(&[]);
        assert_eq!(s.ready, ConditionStatus::Unknown);
        assert_eq!(s.reason, "Suspended");
    }

    #[test]
    fn suspended_stalled_gate_stays_stalled_and_not_ready() {
        // kstatus reads Ready=False without Stalled as InProgress: Flux would see a blocked gate as
        // "on its way" while it is suspended.
        let failed = Kstatus::stalled("RunFailed", "Run 3 failed").to_conditions(&[], None, t(1));
        let s = Kstatus::suspended(&failed);
        assert_eq!(s.ready, ConditionStatus::False);
        assert!(s.stalled);
        assert!(!s.reconciling);
        assert_eq!(s.reason, "RunFailed");
        assert_eq!(s.message, "Suspended: Run 3 failed");
        let c = s.to_conditions(&failed, Some(2), t(50));
        assert_eq!(by_type(&c, STALLED).status, "True");
        assert_eq!(by_type(&c, STALLED).last_transition_time, t(1));
        assert_eq!(by_type(&c, STALLED).message, "Suspended: Run 3 failed");
    }

    #[test]
    fn suspended_waiting_object_keeps_not_ready_and_stops_reconciling() {
        let waiting = Kstatus::in_progress("RunInProgress", "Run 4 is running").to_conditions(
            &[],
            None,
            t(1),
        );
        let s = Kstatus::suspended(&waiting);
        assert_eq!(s.ready, ConditionStatus::False);
        assert!(!s.stalled && !s.reconciling);
    }

    #[test]
    fn status_of_reads_conditions() {
        let c = Kstatus::ready("Succeeded", "m").to_conditions(&[], None, t(1));
        assert_eq!(status_of(&c, READY), ConditionStatus::True);
        assert_eq!(status_of(&c, STALLED), ConditionStatus::False);
        assert_eq!(status_of(&[], READY), ConditionStatus::Unknown);
        assert_eq!(ConditionStatus::parse("weird"), ConditionStatus::Unknown);
    }

    #[test]
    fn the_crds_default_status_is_no_transition_to_keep() {
        let placeholder = |type_: &str, status: &str| Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: crate::crd::NOT_EVALUATED.to_string(),
            message: "not evaluated".to_string(),
            observed_generation: None,
            last_transition_time: t(0),
        };
        let defaulted = [
            placeholder(READY, "Unknown"),
            placeholder(RECONCILING, "True"),
        ];
        let waiting = Kstatus::in_progress("RunQueued", "queued");
        let c = waiting.to_conditions(&defaulted, Some(1), t(500));
        for cond in &c {
            assert_eq!(cond.last_transition_time, t(500), "{}", cond.type_);
        }
    }
}
