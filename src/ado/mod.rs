//! Azure DevOps: the REST models and the HTTP client.

pub mod client;
pub mod error;
pub mod models;

pub use client::{AdoClient, ClientConfig, RequestObserver};
pub use error::AdoError;
pub use models::*;
