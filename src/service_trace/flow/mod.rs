//! ServiceTrace 2's pure core: which run and commit of each stage belong to the *same* change, when a
//! build arrived in each environment, when a flow is stuck, and how the status stays bounded.
//!
//! Nothing here does I/O: the reconciler reads Azure DevOps and the cluster, turns what it read into the
//! [`facts`] types, and writes what [`view`] returns. The rules, and the recorded fixture each was checked
//! against, are in `docs/servicetrace.md` ("Correlation rules").

pub mod compose;
pub mod correlate;
pub mod facts;
pub mod fit;
pub mod history;
pub mod stall;
pub mod view;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
