//! Test doubles for lockstep's end-to-end tests: an in-process Kubernetes API emulator (`kube`) strict
//! enough that what passes against it passes against a real apiserver.

pub mod error;
pub mod kube;

pub use error::TestkitError;
