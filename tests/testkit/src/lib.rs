//! Test doubles for lockstep's end-to-end tests, all on 127.0.0.1 with ephemeral ports so parallel
//! tests never collide:
//! - [`kube`]: an in-process Kubernetes API emulator strict enough that what passes against it passes
//!   against a real apiserver;
//! - [`ado`]: an Azure DevOps simulator with the real service's shapes and failure modes.

pub mod ado;
pub mod error;
pub mod kube;

pub use error::TestkitError;
