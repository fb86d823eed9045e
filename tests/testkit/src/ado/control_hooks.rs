//! Control API for service-hook subscriptions and PAT scopes (`/_sim/hooks/...`, `/_sim/tokens/scopes`),
//! kept apart from `control.rs`. Documented in tests/testkit/README.md.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::hooks::HookEvent;
use super::subscriptions::{HookThresholds, SubscriptionStatus};
use super::Shared;
use crate::TestkitError;

type Sim = State<Arc<Shared>>;

struct ControlError(TestkitError);

impl From<TestkitError> for ControlError {
    fn from(e: TestkitError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            TestkitError::NotFound { .. } => StatusCode::NOT_FOUND,
            TestkitError::InvalidSetup(_) => StatusCode::BAD_REQUEST,
            TestkitError::Http { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

type Reply = Result<Json<Value>, ControlError>;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/tokens/scopes", post(set_scopes))
        .route("/hooks/thresholds", get(thresholds).post(set_thresholds))
        .route("/hooks/subscriptions/{org}", get(list).post(create))
        .route("/hooks/subscriptions/{org}/{id}", get(show))
        .route("/hooks/subscriptions/{org}/{id}/status", post(set_status))
        .route("/hooks/subscriptions/{org}/{id}/deliver", post(deliver))
}

fn json_of<T: serde::Serialize>(v: &T) -> Reply {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| TestkitError::InvalidSetup(format!("could not render: {e}")).into())
}

#[derive(Deserialize)]
struct ScopesBody {
    org: String,
    token: String,
    /// `null` or absent: full access.
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

async fn set_scopes(State(sim): Sim, Json(b): Json<ScopesBody>) -> Reply {
    sim.hooks().set_scopes(&b.org, &b.token, b.scopes.clone());
    Ok(Json(json!({"org": b.org, "scopes": b.scopes})))
}

async fn thresholds(State(sim): Sim) -> Reply {
    json_of(&sim.hooks().thresholds)
}

async fn set_thresholds(State(sim): Sim, Json(b): Json<HookThresholds>) -> Reply {
    sim.hooks().thresholds = b;
    json_of(&b)
}

async fn list(State(sim): Sim, Path(org): Path<String>) -> Reply {
    let subs = sim.hooks().list(&org);
    Ok(Json(json!({"count": subs.len(), "value": subs})))
}

async fn create(State(sim): Sim, Path(org): Path<String>, Json(b): Json<Value>) -> Reply {
    let id = {
        let state = sim.state();
        sim.hooks().create(&state, &org, &b)?
    };
    let info = sim.hooks().info(&org, &id);
    json_of(&info)
}

async fn show(State(sim): Sim, Path((org, id)): Path<(String, String)>) -> Reply {
    let info = sim
        .hooks()
        .info(&org, &id)
        .ok_or_else(|| TestkitError::NotFound {
            what: "service-hook subscription",
            detail: format!("{id} in {org}"),
        })?;
    json_of(&info)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody {
    status: String,
    #[serde(default)]
    probation_retries: u32,
}

async fn set_status(
    State(sim): Sim,
    Path((org, id)): Path<(String, String)>,
    Json(b): Json<StatusBody>,
) -> Reply {
    let status = SubscriptionStatus::parse(&b.status).ok_or_else(|| {
        TestkitError::InvalidSetup(format!(
            "status '{}' is not one of enabled, onProbation, disabledByUser, disabledBySystem, disabledByInactiveIdentity",
            b.status
        ))
    })?;
    let info = sim
        .hooks()
        .set_status(&org, &id, status, b.probation_retries)?;
    json_of(&info)
}

async fn deliver(
    State(sim): Sim,
    Path((org, id)): Path<(String, String)>,
    Json(event): Json<HookEvent>,
) -> Reply {
    let outcome = sim.deliver_to_subscription(&org, &id, &event).await?;
    json_of(&outcome)
}
