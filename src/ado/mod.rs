//! Azure DevOps: the REST models and the HTTP client.

pub mod client;
pub mod error;
pub mod models;

pub use client::{
    AdoAuth, AdoClient, ClientConfig, Credential, RequestObserver, DEFAULT_MAX_RESPONSE_BYTES,
    RATE_LIMIT_MAX_HOLD,
};
pub use error::AdoError;
pub use models::*;
