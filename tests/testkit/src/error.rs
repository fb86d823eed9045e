//! The one error type of the test kit (Kubernetes emulator and Azure DevOps simulator).

use std::path::PathBuf;

/// Errors from starting, configuring or driving a test double. Messages say what to fix in the test.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error(
        "could not bind a test server on 127.0.0.1: {0}; check that the loopback interface is up"
    )]
    Bind(#[source] std::io::Error),
    #[error("could not read CRD directory or file {path}: {source}; pass an existing directory of *.yaml CRDs")]
    ReadCrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a valid CustomResourceDefinition: {message}; fix the YAML or remove it from the directory")]
    InvalidCrd { path: PathBuf, message: String },
    #[error("could not build a kube::Client for the emulator: {0}")]
    Client(#[source] ::kube::Error),
    #[error("could not {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid test setup: {0}")]
    InvalidSetup(String),
    #[error("{what} not found: {detail}")]
    NotFound { what: &'static str, detail: String },
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}
