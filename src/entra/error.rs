//! Token errors: an identity Entra (or the set-up) rejects, or a token endpoint that is unavailable.
//! Messages name the identity and what Entra answered (`AADSTS` code and description) and never carry a
//! token, a client secret or an assertion.

/// Why no Azure DevOps token could be had for an identity.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum EntraError {
    /// Entra (or IMDS) refused the identity, answered something that is not a token, or the identity's
    /// set-up in the cluster is incomplete. Not retried quickly: a person has to fix it.
    #[error("Microsoft Entra ID did not issue an Azure DevOps token to the {identity}: {answer}; {hint}")]
    AuthenticationFailed {
        identity: String,
        /// What came back: `AADSTS700016: Application with identifier ... was not found ...`, or what is
        /// wrong locally.
        answer: String,
        /// What to do next.
        hint: String,
    },
    /// Timeouts, connection failures, 5xx, 429: lockstep keeps the last verdict and tries again.
    #[error("the token endpoint for the {identity} is unavailable ({detail}): lockstep keeps the last verdict and retries")]
    Unavailable { identity: String, detail: String },
}

impl EntraError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// The `AADSTS…` code of an authentication failure, if Entra gave one.
    pub fn aadsts_code(&self) -> Option<&str> {
        match self {
            Self::AuthenticationFailed { answer, .. } if answer.starts_with("AADSTS") => {
                answer.split(':').next()
            }
            _ => None,
        }
    }
}

/// What a person should check for a given `AADSTS` code (the common ones for a daemon's client
/// credentials; <https://learn.microsoft.com/entra/identity-platform/reference-error-codes>).
pub(crate) fn hint_for(code: Option<u64>) -> &'static str {
    match code {
        Some(700016) => "check clientId and tenantId: the application is not registered in that tenant",
        Some(90002) | Some(900023) => "check tenantId: no such tenant",
        Some(7000215) | Some(7000222) => {
            "the client secret is wrong or expired: put a current secret in the referenced Secret"
        }
        Some(700027) | Some(700024) => {
            "the certificate is not registered on the application, or the clock is off: upload the certificate's public part to the app registration"
        }
        Some(70021) | Some(700211) | Some(700212) | Some(700213) => {
            "no federated credential on the identity matches this service account: create one with issuer = the cluster's OIDC issuer URL and subject = system:serviceaccount:<namespace>:<service account>"
        }
        Some(700023) => "the identity is a managed identity: use managedIdentity or workloadIdentity with a federated credential, not a client secret",
        Some(500011) => "Azure DevOps is not registered in the tenant: sign in to the organization once, or check the tenant the organization is connected to",
        _ => "check the identity's set-up (README: Microsoft Entra ID)",
    }
}

/// The first line of Entra's `error_description` (the rest is trace and correlation ids), one line,
/// at most 300 characters, with `secret` removed should the endpoint echo it.
pub(crate) fn short_description(text: &str, secret: Option<&str>) -> String {
    let first = text
        .split(['\r', '\n'])
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut short: String = first.chars().take(300).collect();
    if short.len() < first.len() {
        short.push('…');
    }
    match secret {
        Some(s) if !s.is_empty() => short.replace(s, "<redacted>"),
        _ => short,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_keep_the_first_line_and_drop_secrets() {
        let d = "AADSTS7000215: Invalid client secret provided. hunter2\r\nTrace ID: 1\r\nCorrelation ID: 2";
        assert_eq!(
            short_description(d, Some("hunter2")),
            "AADSTS7000215: Invalid client secret provided. <redacted>"
        );
        let long = "x".repeat(400);
        assert_eq!(short_description(&long, None).chars().count(), 301);
    }

    #[test]
    fn codes_and_transience() {
        let e = EntraError::AuthenticationFailed {
            identity: "workload identity (client id c, tenant t)".into(),
            answer: "AADSTS700016: Application with identifier 'c' was not found".into(),
            hint: hint_for(Some(700016)).into(),
        };
        assert_eq!(e.aadsts_code(), Some("AADSTS700016"));
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains("client id c") && text.contains("AADSTS700016"),
            "{text}"
        );
        assert!(text.contains("check clientId and tenantId"), "{text}");
        let u = EntraError::Unavailable {
            identity: "x".into(),
            detail: "HTTP 503".into(),
        };
        assert!(u.is_transient());
        assert_eq!(u.aadsts_code(), None);
    }
}
