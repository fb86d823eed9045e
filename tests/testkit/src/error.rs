//! The one error type of the test kit.

/// Errors from starting or driving a test server. Messages say what to fix in the test.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
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
