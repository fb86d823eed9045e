//! Test servers for lockstep: an Azure DevOps simulator ([`ado`]) and an in-process Kubernetes API
//! emulator ([`kube`]) strict enough that what passes against it passes against a real apiserver.
//! Everything listens on 127.0.0.1 with an ephemeral port so parallel tests never collide.

pub mod ado;
pub mod error;
pub mod kube;

pub use error::TestkitError;
