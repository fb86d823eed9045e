//! Microsoft Entra tokens and HTTPS for the simulator (issue 14): the simulator trusts the tokens of
//! a [`crate::entra::EntraFake`] for the organizations an identity was added to, as Azure DevOps
//! accepts an Entra access token (audience `499b84ac-1321-427f-aa17-267ca6975798`) of a service
//! principal or managed identity that is a user of the organization
//! (<https://learn.microsoft.com/en-us/azure/devops/integrate/get-started/authentication/service-principal-managed-identity>).
//! Everything else keeps the simulator's unauthenticated answers (203 sign-in page or 401).
//!
//! Kept apart from the rest of the simulator so that it merges as a small hook.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::faults::FaultState;
use super::state::SimState;
use super::{lock, AdoSimulator, Shared};
use crate::entra::{EntraFake, TokenRegistry};
use crate::tls::TlsServerConfig;
use crate::TestkitError;

/// How the simulator is served: [`AdoSimulator::start_with`].
#[derive(Clone, Debug, Default)]
pub struct AdoSimOptions {
    tls: Option<TlsServerConfig>,
    public_url: Option<String>,
}

impl AdoSimOptions {
    /// Serve over HTTPS with this certificate (from [`crate::tls::TestCa::server_config`]).
    pub fn tls(mut self, tls: TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The base URL the simulator renders into bodies and hands out as `url()`/`org_url()`, e.g.
    /// `https://dev.azure.test` when clients reach it through the test proxy's host map. Default
    /// `http(s)://127.0.0.1:{port}`.
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.trim_end_matches('/').to_string());
        self
    }
}

/// Which Entra tokens the simulator accepts.
#[derive(Debug, Default)]
pub(crate) struct EntraTrust {
    registry: Option<TokenRegistry>,
    /// Lower-case organization name → lower-case client ids of its Entra users.
    members: BTreeMap<String, BTreeSet<String>>,
}

impl EntraTrust {
    /// True when `headers` carry `Authorization: Bearer T`, T was issued by the trusted fake, has not
    /// expired, and its identity is a user of `org`.
    pub(crate) fn accepts(&self, org: &str, headers: &HeaderMap) -> bool {
        let Some(registry) = &self.registry else {
            return false;
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, token)) = value.split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let Some(issued) = registry.validate(token.trim()) else {
            return false;
        };
        self.members
            .get(&org.to_ascii_lowercase())
            .is_some_and(|ids| ids.contains(&issued.client_id))
    }
}

impl AdoSimulator {
    /// Starts the simulator like [`AdoSimulator::start`], over HTTPS and/or with a public base URL.
    pub async fn start_with(options: AdoSimOptions) -> Result<AdoSimulator, TestkitError> {
        let (listener, addr) = crate::tls::bind_loopback().await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| TestkitError::Http {
                url: "(client set-up)".into(),
                source,
            })?;
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = options
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let shared = Arc::new(Shared {
            state: std::sync::Mutex::new(SimState::default()),
            faults: std::sync::Mutex::new(FaultState::default()),
            log: std::sync::Mutex::new(Vec::new()),
            notification_ids: std::sync::Mutex::new(Default::default()),
            hooks: std::sync::Mutex::new(super::subscriptions::HookStore::default()),
            entra: std::sync::Mutex::new(EntraTrust::default()),
            base_url,
            http,
        });
        let app = Router::new()
            .nest(
                "/_sim",
                super::control::router()
                    .merge(super::control_hooks::router())
                    .merge(router()),
            )
            .fallback(super::api::handle)
            .with_state(shared.clone());
        let server = crate::tls::serve(listener, app, options.tls.as_ref(), "ADO simulator");
        Ok(AdoSimulator {
            shared,
            _shutdown: Arc::new(server),
            addr,
        })
    }

    /// Where the simulator listens (for a proxy host map when a public URL is set).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Accept Bearer tokens issued by `fake` (for identities added with
    /// [`add_entra_identity`](Self::add_entra_identity)). A later call replaces the fake.
    pub fn trust_entra(&self, fake: &EntraFake) {
        self.trust_token_registry(fake.registry());
    }

    /// [`trust_entra`](Self::trust_entra) with the registry alone.
    pub fn trust_token_registry(&self, registry: TokenRegistry) {
        lock(&self.shared.entra).registry = Some(registry);
    }

    /// Adds the Entra identity `client_id` (service principal, workload identity application or
    /// managed identity) to `org` as a user, creating the organization.
    #[track_caller]
    pub fn add_entra_identity(&self, org: &str, client_id: &str) {
        if let Err(e) = self.try_add_entra_identity(org, client_id) {
            panic!("AdoSimulator::add_entra_identity: {e}");
        }
    }

    pub fn try_add_entra_identity(&self, org: &str, client_id: &str) -> Result<(), TestkitError> {
        if client_id.trim().is_empty() {
            return Err(TestkitError::InvalidSetup(
                "an Entra client id must not be empty".into(),
            ));
        }
        self.shared.state().org_or_create(org)?;
        lock(&self.shared.entra)
            .members
            .entry(org.to_ascii_lowercase())
            .or_default()
            .insert(client_id.to_ascii_lowercase());
        Ok(())
    }

    /// Removes the identity from `org`: its tokens are refused there from now on.
    pub fn remove_entra_identity(&self, org: &str, client_id: &str) {
        if let Some(ids) = lock(&self.shared.entra)
            .members
            .get_mut(&org.to_ascii_lowercase())
        {
            ids.remove(&client_id.to_ascii_lowercase());
        }
    }
}

impl Shared {
    /// The hook [`super::api`] calls when no PAT matched.
    pub(crate) fn entra_accepts(&self, org: &str, headers: &HeaderMap) -> bool {
        lock(&self.entra).accepts(org, headers)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IdentityBody {
    org: String,
    client_id: String,
}

/// `POST /_sim/entra-identities {"org", "clientId"}` adds an identity; `DELETE` removes it.
fn router() -> Router<Arc<Shared>> {
    Router::new().route(
        "/entra-identities",
        post(add_identity).delete(remove_identity),
    )
}

fn parse(body: &[u8]) -> Result<IdentityBody, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": format!("invalid body: {e} (expected {{\"org\", \"clientId\"}})")}),
            ),
        )
            .into_response()
            .into()
    })
}

async fn add_identity(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let b = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let Err(e) = shared.state().org_or_create(&b.org) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response();
    }
    lock(&shared.entra)
        .members
        .entry(b.org.to_ascii_lowercase())
        .or_default()
        .insert(b.client_id.to_ascii_lowercase());
    StatusCode::NO_CONTENT.into_response()
}

async fn remove_identity(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let b = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if let Some(ids) = lock(&shared.entra)
        .members
        .get_mut(&b.org.to_ascii_lowercase())
    {
        ids.remove(&b.client_id.to_ascii_lowercase());
    }
    StatusCode::NO_CONTENT.into_response()
}
