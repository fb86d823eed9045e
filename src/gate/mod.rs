//! The PipelineGate decision, shared by the controller and `lockstep check`.

pub mod decision;

pub use decision::{
    decide, decide_error, DecisionInput, Phase, Policy, Reason, Verdict, Waiting, DEFAULT_TIMEOUT,
};
