//! The Subscriptions API and Projects - Get. Separate from [`crate::ado::AdoClient`], which only reads
//! builds and git: these calls write, and their failures (a PAT without the Service Hooks scope) are
//! reported differently.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::model::{Subscription, SubscriptionList};
use crate::ado::{AdoAuth, Credential as _};

const API_VERSION: &str = "7.1";
/// A list of every subscription of a large organization stays well below this.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Error texts from Azure DevOps are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Why a Subscriptions call failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    #[error("Azure DevOps refused the token for {organization} (HTTP {status}): give the PAT the Service Hooks (read) scope (a Microsoft Entra identity: the View subscriptions permission of Service Hooks), and Service Hooks (read & write) for `lockstep hooks sync`")]
    Unauthorized { organization: String, status: u16 },
    #[error("the token may not do this in {organization} (HTTP 403: {message}): `lockstep hooks sync` needs Service Hooks (read & write)")]
    Forbidden {
        organization: String,
        message: String,
    },
    #[error("{what} not found in Azure DevOps: {message}")]
    NotFound { what: String, message: String },
    #[error("Azure DevOps answered HTTP {status} to {what}: {message}")]
    Http {
        what: String,
        status: u16,
        message: String,
    },
    #[error("could not reach Azure DevOps for {what}: {detail}; check the organization URL and the network")]
    Transport { what: String, detail: String },
    #[error("Azure DevOps sent an unreadable answer to {what}: {detail}")]
    Body { what: String, detail: String },
    #[error("invalid organization URL {0:?}: use https://dev.azure.com/<organization>")]
    BadUrl(String),
}

impl HooksError {
    /// A missing permission: reported once, not retried in a loop of errors.
    pub fn is_permission(&self) -> bool {
        matches!(self, Self::Unauthorized { .. } | Self::Forbidden { .. })
    }
}

#[derive(Clone)]
pub struct HooksClient {
    http: reqwest::Client,
}

impl HooksClient {
    pub fn new() -> Result<Self, HooksError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("lockstep/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HooksError::Transport {
                what: "the HTTP client".into(),
                detail: e.to_string(),
            })?;
        Ok(Self { http })
    }

    /// Subscriptions - List: every subscription of the organization the token may read.
    pub async fn list(
        &self,
        org_url: &str,
        token: &AdoAuth,
    ) -> Result<Vec<Subscription>, HooksError> {
        let url = url(org_url, &["_apis", "hooks", "subscriptions"])?;
        let list: SubscriptionList = self
            .send(
                reqwest::Method::GET,
                url,
                org_url,
                token,
                None,
                "Subscriptions - List",
            )
            .await?;
        Ok(list.value)
    }

    /// Projects - Get: the project's GUID (subscriptions store `publisherInputs.projectId` as one).
    pub async fn project_id(
        &self,
        org_url: &str,
        project: &str,
        token: &AdoAuth,
    ) -> Result<String, HooksError> {
        let url = url(org_url, &["_apis", "projects", project])?;
        let answer: Value = self
            .send(
                reqwest::Method::GET,
                url,
                org_url,
                token,
                None,
                "Projects - Get",
            )
            .await?;
        answer["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| HooksError::Body {
                what: "Projects - Get".into(),
                detail: "no id".into(),
            })
    }

    pub async fn create(
        &self,
        org_url: &str,
        token: &AdoAuth,
        body: &Value,
    ) -> Result<Subscription, HooksError> {
        let url = url(org_url, &["_apis", "hooks", "subscriptions"])?;
        self.send(
            reqwest::Method::POST,
            url,
            org_url,
            token,
            Some(body),
            "Subscriptions - Create",
        )
        .await
    }

    pub async fn replace(
        &self,
        org_url: &str,
        token: &AdoAuth,
        id: &str,
        body: &Value,
    ) -> Result<Subscription, HooksError> {
        let url = url(org_url, &["_apis", "hooks", "subscriptions", id])?;
        self.send(
            reqwest::Method::PUT,
            url,
            org_url,
            token,
            Some(body),
            "Subscriptions - Replace",
        )
        .await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: url::Url,
        org_url: &str,
        token: &AdoAuth,
        body: Option<&Value>,
        what: &str,
    ) -> Result<T, HooksError> {
        // A PAT as Basic, an Entra token as Bearer: the same header the reconcilers send.
        let auth = token.authorization().map_err(|e| HooksError::Transport {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
        let mut request = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .header("X-TFS-FedAuthRedirect", "Suppress");
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let transport = |e: reqwest::Error| HooksError::Transport {
            what: what.to_string(),
            // reqwest's text names the URL, never the Authorization header.
            detail: e.without_url().to_string(),
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(HooksError::Body {
                    what: what.to_string(),
                    detail: format!("larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let organization = org_url.trim_end_matches('/').to_string();
        let message = || message_of(&bytes);
        match status {
            // 203 is the sign-in page Azure DevOps serves instead of 401 for a bad token.
            203 | 401 => Err(HooksError::Unauthorized {
                organization,
                status,
            }),
            200..=299 if !json => Err(HooksError::Unauthorized {
                organization,
                status,
            }),
            200..=299 => serde_json::from_slice(&bytes).map_err(|e| HooksError::Body {
                what: what.to_string(),
                detail: e.to_string(),
            }),
            403 => Err(HooksError::Forbidden {
                organization,
                message: message(),
            }),
            404 => Err(HooksError::NotFound {
                what: what.to_string(),
                message: message(),
            }),
            _ => Err(HooksError::Http {
                what: what.to_string(),
                status,
                message: message(),
            }),
        }
    }
}

/// `message` of an Azure DevOps error body, else the start of the body.
fn message_of(bytes: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

fn url(org_url: &str, segments: &[&str]) -> Result<url::Url, HooksError> {
    let mut url = url::Url::parse(org_url.trim().trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| HooksError::BadUrl(org_url.to_string()))?;
    url.path_segments_mut()
        .map_err(|_| HooksError::BadUrl(org_url.to_string()))?
        .pop_if_empty()
        .extend(segments);
    url.query_pairs_mut()
        .append_pair("api-version", API_VERSION);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_collection_path_and_encode_segments() {
        let u = url(
            "https://tfs.corp/DefaultCollection/",
            &["_apis", "projects", "My Project"],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://tfs.corp/DefaultCollection/_apis/projects/My%20Project?api-version=7.1"
        );
        assert!(url("dev.azure.com/x", &[]).is_err());
    }
}
