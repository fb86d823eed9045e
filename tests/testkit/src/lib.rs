//! Test doubles for lockstep's end-to-end tests, all on 127.0.0.1 with ephemeral ports so parallel
//! tests never collide:
//! - [`kube`]: an in-process Kubernetes API emulator strict enough that what passes against it passes
//!   against a real apiserver;
//! - [`ado`]: an Azure DevOps simulator with the real service's shapes and failure modes;
//! - [`entra`]: a fake Microsoft Entra ID token endpoint and managed identity (IMDS) endpoint whose
//!   tokens the Azure DevOps simulator accepts;
//! - [`tls`]: a run-time test CA and HTTPS for the servers above;
//! - [`proxy`]: a forward proxy (CONNECT and absolute-form) with a host map, for proxy tests.

pub mod ado;
pub mod entra;
pub mod error;
pub mod kube;
pub mod proxy;
pub mod tls;

pub use error::TestkitError;
