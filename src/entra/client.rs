//! The token requests: one form post to `{authority}{tenant}/oauth2/v2.0/token` (client credentials with
//! a secret or a client assertion), or one GET to the instance metadata endpoint for a managed identity.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use tracing::debug;
use url::Url;

use super::error::{hint_for, short_description};
use super::{EntraError, EntraIdentity, AZURE_DEVOPS_RESOURCE, AZURE_DEVOPS_SCOPE};
use crate::proxy::Outbound;
use crate::secret::SecretString;

/// The Azure Instance Metadata Service token endpoint (never proxied: it is link-local).
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// The projected service-account token is a few KiB; anything much larger is not one.
const MAX_FEDERATED_TOKEN_BYTES: u64 = 64 * 1024;
/// Token responses are small; a bigger body is not a token response.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Settings for [`EntraClient`].
#[derive(Clone, Debug, PartialEq)]
pub struct EntraClientConfig {
    /// Limit for one token request, connect to last byte.
    pub request_timeout: Duration,
    /// The IMDS token endpoint (the test kit points it at a local fake).
    pub imds_endpoint: Url,
    /// Proxy and extra CA certificates for the authority host.
    pub outbound: Outbound,
}

impl Default for EntraClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            #[allow(clippy::expect_used)]
            imds_endpoint: Url::parse(DEFAULT_IMDS_ENDPOINT).expect("constant URL"),
            outbound: Outbound::default(),
        }
    }
}

/// A token as issued: the secret and how long Entra says it lives.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: SecretString,
    pub expires_in: Duration,
}

/// Sends token requests; cheap to clone.
#[derive(Clone, Debug)]
pub struct EntraClient {
    http: reqwest::Client,
    /// IMDS is link-local: it must never go through a proxy.
    imds_http: reqwest::Client,
    imds_endpoint: Url,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    /// Entra sends a number, IMDS a string.
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
}

impl EntraClient {
    pub fn new(config: EntraClientConfig) -> Result<Self, String> {
        let base = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(config.request_timeout)
                .connect_timeout(config.request_timeout)
                .user_agent(concat!("lockstep/", env!("CARGO_PKG_VERSION")))
        };
        let http = config
            .outbound
            .configure(base())?
            .build()
            .map_err(|e| format!("could not set up the token client: {e}"))?;
        let imds_http = base()
            .no_proxy()
            .build()
            .map_err(|e| format!("could not set up the token client: {e}"))?;
        Ok(Self {
            http,
            imds_http,
            imds_endpoint: config.imds_endpoint,
        })
    }

    /// One token request for `identity` (no caching: see [`super::EntraTokens`]).
    pub async fn request_token(&self, identity: &EntraIdentity) -> Result<IssuedToken, EntraError> {
        let who = identity.describe();
        debug!(identity = %who, "requesting a Microsoft Entra token for Azure DevOps");
        let issued = match identity {
            EntraIdentity::ManagedIdentity { client_id } => {
                self.imds(identity, client_id.as_deref()).await
            }
            EntraIdentity::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
                authority,
            } => {
                let assertion = read_federated_token(identity, token_file).await?;
                let form = [
                    ("client_assertion", assertion.expose()),
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ];
                self.client_credentials(identity, authority, tenant_id, client_id, &form)
                    .await
            }
            EntraIdentity::ClientAssertion {
                tenant_id,
                client_id,
                assertion,
                authority,
            } => {
                let form = [
                    ("client_assertion", assertion.expose()),
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ];
                self.client_credentials(identity, authority, tenant_id, client_id, &form)
                    .await
            }
            EntraIdentity::ClientSecret {
                tenant_id,
                client_id,
                secret,
                authority,
            } => {
                let form = [("client_secret", secret.expose())];
                self.client_credentials(identity, authority, tenant_id, client_id, &form)
                    .await
            }
            EntraIdentity::ClientCertificate {
                tenant_id,
                client_id,
                certificate,
                authority,
            } => {
                let endpoint = token_endpoint(identity, authority, tenant_id)?;
                let assertion = certificate
                    .assertion(
                        client_id,
                        endpoint.as_str(),
                        jiff::Timestamp::now().as_second(),
                    )
                    .map_err(|e| {
                        auth_failed(
                            identity,
                            format!("the client certificate cannot sign: {e}"),
                            None,
                        )
                    })?;
                let assertion = SecretString::new(assertion);
                let form = [
                    ("client_assertion", assertion.expose()),
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ];
                self.client_credentials(identity, authority, tenant_id, client_id, &form)
                    .await
            }
        }?;
        debug!(identity = %who, expires_in_s = issued.expires_in.as_secs(), "Microsoft Entra token issued");
        Ok(issued)
    }

    async fn client_credentials(
        &self,
        identity: &EntraIdentity,
        authority: &Url,
        tenant_id: &str,
        client_id: &str,
        credential: &[(&str, &str)],
    ) -> Result<IssuedToken, EntraError> {
        let endpoint = token_endpoint(identity, authority, tenant_id)?;
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials")
                .append_pair("client_id", client_id)
                .append_pair("scope", AZURE_DEVOPS_SCOPE);
            for (k, v) in credential {
                form.append_pair(k, v);
            }
            form.finish()
        };
        let sent = self
            .http
            .post(endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(body)
            .send()
            .await;
        self.answer(identity, sent, false).await
    }

    async fn imds(
        &self,
        identity: &EntraIdentity,
        client_id: Option<&str>,
    ) -> Result<IssuedToken, EntraError> {
        let mut url = self.imds_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", "2018-02-01")
                .append_pair("resource", AZURE_DEVOPS_RESOURCE);
            if let Some(id) = client_id {
                q.append_pair("client_id", id);
            }
        }
        let sent = self
            .imds_http
            .get(url)
            .header("Metadata", HeaderValue::from_static("true"))
            .header(ACCEPT, "application/json")
            .send()
            .await;
        self.answer(identity, sent, true).await
    }

    async fn answer(
        &self,
        identity: &EntraIdentity,
        sent: reqwest::Result<reqwest::Response>,
        imds: bool,
    ) -> Result<IssuedToken, EntraError> {
        let response = sent.map_err(|e| transport_error(identity, &e, imds))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(identity, &e, imds))?;
        let body = if body.len() > MAX_RESPONSE_BYTES {
            &body[..0]
        } else {
            &body[..]
        };
        classify(identity, status, body, imds)
    }
}

/// The verdict on one token endpoint answer; pure, so every branch is tested without a server.
fn classify(
    identity: &EntraIdentity,
    status: u16,
    body: &[u8],
    imds: bool,
) -> Result<IssuedToken, EntraError> {
    let secret = identity.secret();
    match status {
        200..=299 => {
            let parsed: Option<TokenResponse> = serde_json::from_slice(body).ok();
            let Some(TokenResponse {
                access_token: Some(token),
                expires_in,
            }) = parsed.filter(|t| {
                t.access_token
                    .as_deref()
                    .is_some_and(|s| !s.trim().is_empty())
            })
            else {
                return Err(auth_failed(
                    identity,
                    format!("the token endpoint answered HTTP {status} without an access token"),
                    None,
                ));
            };
            let expires_in = expires_in
                .as_ref()
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .ok_or_else(|| {
                    auth_failed(
                        identity,
                        "the token endpoint answered without a valid expires_in".to_string(),
                        None,
                    )
                })?;
            Ok(IssuedToken {
                token: SecretString::new(token),
                expires_in: Duration::from_secs(expires_in),
            })
        }
        // IMDS: 404 while the identity is being assigned, 410 while IMDS restarts
        // (https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#retry-guidance).
        404 | 410 if imds => Err(unavailable(
            identity,
            format!("IMDS answered HTTP {status}"),
        )),
        408 | 429 | 500..=599 => Err(unavailable(
            identity,
            format!("HTTP {status}{}", error_suffix(body, secret)),
        )),
        _ => {
            let err: ErrorResponse = serde_json::from_slice(body).unwrap_or_default();
            let code = err.error_codes.first().copied().or_else(|| {
                let d = err.error_description.as_deref()?;
                d.strip_prefix("AADSTS")?
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            });
            let answer = match (&err.error_description, &err.error, code) {
                (Some(d), _, Some(c)) if !d.trim_start().starts_with("AADSTS") => {
                    format!("AADSTS{c}: {}", short_description(d, secret))
                }
                (Some(d), _, _) => short_description(d, secret),
                (None, Some(e), Some(c)) => format!("AADSTS{c}: {}", short_description(e, secret)),
                (None, Some(e), None) => short_description(e, secret),
                (None, None, _) => format!("the token endpoint answered HTTP {status}"),
            };
            let hint = if imds && code.is_none() {
                "check that the managed identity is assigned to the node pool (or VM) and that clientId names it"
            } else {
                hint_for(code)
            };
            Err(EntraError::AuthenticationFailed {
                identity: identity.describe(),
                answer,
                hint: hint.to_string(),
            })
        }
    }
}

fn error_suffix(body: &[u8], secret: Option<&str>) -> String {
    let err: ErrorResponse = serde_json::from_slice(body).unwrap_or_default();
    match err.error_description.or(err.error) {
        Some(d) => format!(": {}", short_description(&d, secret)),
        None => String::new(),
    }
}

fn token_endpoint(
    identity: &EntraIdentity,
    authority: &Url,
    tenant_id: &str,
) -> Result<Url, EntraError> {
    let bad = || {
        auth_failed(
            identity,
            format!("tenant id \"{tenant_id}\" cannot be part of a URL"),
            Some("set tenantId to the directory (tenant) id, a GUID"),
        )
    };
    if tenant_id.is_empty() || tenant_id.contains(['/', '?', '#', '%']) {
        return Err(bad());
    }
    authority
        .join(&format!("{tenant_id}/oauth2/v2.0/token"))
        .map_err(|_| bad())
}

/// The kubelet rotates the projected token (hourly by default), so it is read for every request.
async fn read_federated_token(
    identity: &EntraIdentity,
    path: &std::path::Path,
) -> Result<SecretString, EntraError> {
    let hint = "label the pod azure.workload.identity/use=\"true\" and annotate its service account with azure.workload.identity/client-id (chart value workloadIdentity.enabled)";
    let fail = |what: String| auth_failed(identity, what, Some(hint));
    let meta = tokio::fs::metadata(path).await.map_err(|e| {
        fail(format!(
            "the federated token file {} cannot be read ({})",
            path.display(),
            e.kind()
        ))
    })?;
    if meta.len() > MAX_FEDERATED_TOKEN_BYTES {
        return Err(fail(format!(
            "the federated token file {} is larger than {MAX_FEDERATED_TOKEN_BYTES} bytes: it is not a service-account token",
            path.display()
        )));
    }
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        fail(format!(
            "the federated token file {} cannot be read ({})",
            path.display(),
            e.kind()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(format!(
            "the federated token file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::new(token))
}

fn auth_failed(identity: &EntraIdentity, answer: String, hint: Option<&str>) -> EntraError {
    EntraError::AuthenticationFailed {
        identity: identity.describe(),
        answer,
        hint: hint.unwrap_or_else(|| hint_for(None)).to_string(),
    }
}

fn unavailable(identity: &EntraIdentity, detail: String) -> EntraError {
    EntraError::Unavailable {
        identity: identity.describe(),
        detail,
    }
}

fn transport_error(identity: &EntraIdentity, e: &reqwest::Error, imds: bool) -> EntraError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // The error chain names the URL (no secret in it: credentials travel in the body) and the cause.
    let mut detail = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    if imds && e.is_connect() {
        detail
            .push_str(" (is lockstep running on an Azure VM or AKS node with a managed identity?)");
    }
    let detail = match identity.secret() {
        Some(s) if !s.is_empty() => detail.replace(s, "<redacted>"),
        _ => detail,
    };
    unavailable(identity, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entra::parse_authority;
    use serde_json::json;

    fn sp() -> EntraIdentity {
        EntraIdentity::ClientSecret {
            tenant_id: "tenant-1".into(),
            client_id: "client-1".into(),
            secret: SecretString::new("very-secret"),
            authority: parse_authority("https://login.example").unwrap(),
        }
    }

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn tokens_parse_with_numeric_or_string_lifetimes() {
        let t = classify(
            &sp(),
            200,
            &body(json!({"access_token": "tok", "expires_in": 3599, "token_type": "Bearer"})),
            false,
        )
        .unwrap();
        assert_eq!(t.token.expose(), "tok");
        assert_eq!(t.expires_in, Duration::from_secs(3599));
        let imds = classify(
            &sp(),
            200,
            &body(json!({"access_token": "tok", "expires_in": "86399", "expires_on": "1"})),
            true,
        )
        .unwrap();
        assert_eq!(imds.expires_in, Duration::from_secs(86399));
    }

    #[test]
    fn garbage_from_a_2xx_is_an_authentication_failure() {
        for b in [
            &b"<html>sign in</html>"[..],
            &body(json!({"expires_in": 5})),
            &body(json!({"access_token": "t"})),
            &body(json!({"access_token": " ", "expires_in": 5})),
        ] {
            let e = classify(&sp(), 200, b, false).unwrap_err();
            assert!(!e.is_transient(), "{e}");
            assert!(e.to_string().contains("client id client-1"), "{e}");
        }
    }

    #[test]
    fn aadsts_answers_name_the_identity_and_the_code() {
        let e = classify(
            &sp(),
            400,
            &body(json!({
                "error": "unauthorized_client",
                "error_description": "AADSTS700016: Application with identifier 'client-1' was not found in the directory 'Contoso'.\r\nTrace ID: a\r\nCorrelation ID: b",
                "error_codes": [700016]
            })),
            false,
        )
        .unwrap_err();
        assert_eq!(e.aadsts_code(), Some("AADSTS700016"));
        let text = e.to_string();
        assert!(
            text.contains("client id client-1") && text.contains("tenant tenant-1"),
            "{text}"
        );
        assert!(
            text.contains("was not found in the directory 'Contoso'."),
            "{text}"
        );
        assert!(!text.contains("Trace ID"), "{text}");
        assert!(text.contains("check clientId and tenantId"), "{text}");
    }

    #[test]
    fn a_description_without_the_prefix_gets_the_code_and_secrets_are_scrubbed() {
        let e = classify(
            &sp(),
            401,
            &body(json!({"error": "invalid_client", "error_description": "Invalid client secret very-secret", "error_codes": [7000215]})),
            false,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("AADSTS7000215: Invalid client secret <redacted>"),
            "{text}"
        );
        assert!(!text.contains("very-secret"));
        assert!(text.contains("client secret is wrong or expired"), "{text}");
        let bare = classify(&sp(), 403, b"", false).unwrap_err();
        assert!(bare.to_string().contains("answered HTTP 403"), "{bare}");
    }

    #[test]
    fn server_errors_and_throttling_are_transient() {
        for status in [408, 429, 500, 502, 503, 504] {
            let e = classify(&sp(), status, &body(json!({"error": "temporarily_unavailable", "error_description": "AADSTS90033: busy"})), false).unwrap_err();
            assert!(e.is_transient(), "{status}: {e}");
            assert!(e.to_string().contains("AADSTS90033"), "{e}");
        }
        let mi = EntraIdentity::ManagedIdentity { client_id: None };
        assert!(classify(&mi, 404, b"", true).unwrap_err().is_transient());
        assert!(classify(&mi, 410, b"", true).unwrap_err().is_transient());
        // A 404 from Entra itself (wrong authority path) is not going to fix itself.
        assert!(!classify(&sp(), 404, b"", false).unwrap_err().is_transient());
        let not_found = classify(
            &mi,
            400,
            &body(json!({"error": "invalid_request", "error_description": "Identity not found"})),
            true,
        )
        .unwrap_err();
        assert!(!not_found.is_transient());
        assert!(
            not_found.to_string().contains("Identity not found"),
            "{not_found}"
        );
        assert!(
            not_found.to_string().contains("assigned to the node pool"),
            "{not_found}"
        );
    }

    #[test]
    fn tenant_ids_cannot_escape_the_token_path() {
        let id = sp();
        let authority = parse_authority("https://login.example/").unwrap();
        assert_eq!(
            token_endpoint(&id, &authority, "tenant-1")
                .unwrap()
                .as_str(),
            "https://login.example/tenant-1/oauth2/v2.0/token"
        );
        for bad in ["", "../x", "a?b", "a%2f"] {
            assert!(token_endpoint(&id, &authority, bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_missing_or_empty_federated_token_file_says_how_to_set_up_the_pod() {
        let id = EntraIdentity::WorkloadIdentity {
            tenant_id: "t".into(),
            client_id: "c".into(),
            token_file: "/nonexistent/token".into(),
            authority: parse_authority("https://login.example").unwrap(),
        };
        let e = read_federated_token(&id, std::path::Path::new("/nonexistent/token"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("azure.workload.identity/use"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("t");
        std::fs::write(&empty, "\n").unwrap();
        let e = read_federated_token(&id, &empty).await.unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        std::fs::write(&empty, "eyJ.token.sig\n").unwrap();
        assert_eq!(
            read_federated_token(&id, &empty).await.unwrap().expose(),
            "eyJ.token.sig"
        );
    }
}
