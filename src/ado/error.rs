//! Typed Azure DevOps errors. Messages say what to do next and never contain the token.

use std::time::Duration;

#[derive(Clone, Debug, thiserror::Error)]
pub enum AdoError {
    /// 401, or the 203 + HTML sign-in page ADO sends for bad credentials, or any non-JSON 2xx.
    #[error("Azure DevOps at {organization} rejected the credentials (HTTP {status}): check that the personal access token is valid, not expired, and has the Build (read) and Code (read) scopes")]
    Unauthorized { organization: String, status: u16 },
    /// As [`Self::Unauthorized`], for a Microsoft Entra token: Entra issued it, Azure DevOps does not
    /// accept the identity. `advice` says what to do (add the identity to the organization, or, when the
    /// server asks for Windows authentication, use a PAT: Azure DevOps Server has no Entra).
    #[error("Azure DevOps at {organization} rejected the Microsoft Entra token of the {identity} (HTTP {status}): {advice}")]
    EntraTokenRejected {
        organization: String,
        status: u16,
        identity: String,
        advice: &'static str,
    },
    /// 404: the project, definition or repository does not exist (or the token may not see it).
    #[error("{what} was not found in Azure DevOps ({message}): check organizationUrl, project and the id or name")]
    NotFound { what: String, message: String },
    /// 429, or a `Retry-After` that has not elapsed yet. The message leaves out `retry_after` on purpose: it
    /// lands in `status.lastError`, and a countdown there would rewrite status and repeat the Warning on every
    /// retry while nothing new is known. Callers log the retry time instead.
    #[error("Azure DevOps at {organization} is rate limiting lockstep (HTTP 429): lockstep keeps the last verdict and asks again once the Retry-After period has passed")]
    RateLimited {
        organization: String,
        retry_after: Duration,
    },
    /// 5xx, timeouts and connection failures, after retries.
    #[error("Azure DevOps is unavailable ({detail}): lockstep keeps the last verdict and retries with backoff")]
    Unavailable { status: Option<u16>, detail: String },
    /// A 2xx body that is not the JSON we expect (truncated, wrong shape).
    #[error("Azure DevOps sent an unreadable response from {endpoint}: {detail}")]
    InvalidResponse { endpoint: String, detail: String },
    /// Lockstep could not build the request (bad organization URL, client set-up).
    #[error("invalid Azure DevOps request: {0}")]
    InvalidRequest(String),
}

impl AdoError {
    /// Transient errors leave the last verdict standing; the others decide the verdict.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Unavailable { .. } | Self::InvalidResponse { .. }
        )
    }

    /// A stable, low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } | Self::EntraTokenRejected { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::InvalidResponse { .. } => "invalid_response",
            Self::InvalidRequest(_) => "invalid_request",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_message_is_the_same_while_the_hold_counts_down() {
        let at = |secs| AdoError::RateLimited {
            organization: "https://dev.azure.com/contoso".into(),
            retry_after: Duration::from_secs(secs),
        };
        assert_eq!(at(30).to_string(), at(29).to_string());
        assert_eq!(at(30).to_string(), at(1).to_string());
        assert!(at(30).to_string().contains("https://dev.azure.com/contoso"));
    }
}
