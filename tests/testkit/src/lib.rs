//! Test servers for lockstep: an Azure DevOps simulator ([`ado`]) and a Kubernetes API emulator.
//! Everything listens on 127.0.0.1 with an ephemeral port so parallel tests never collide.

pub mod ado;
pub mod error;

pub use error::TestkitError;
