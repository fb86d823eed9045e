//! The control API under `/_sim`: everything the Rust handle can do, as JSON over HTTP, so a shell
//! script or a person with curl can drive the simulator. Documented in tests/testkit/README.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::chaos::{ChaosConfig, RetryAfter, RetryAfterForm};
use super::faults::Oversize;
use super::hooks::{HookDelivery, HookEvent};
use super::state::RunResult;
use super::{lock, Shared};
use crate::TestkitError;

type Sim = State<Arc<Shared>>;

/// A control-API error: 404 for unknown things, 400 for bad requests, 502 when a hook target failed.
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
        .route("/orgs/{org}/projects", post(add_project))
        .route(
            "/orgs/{org}/projects/{project}/definitions",
            post(add_definition),
        )
        .route(
            "/orgs/{org}/projects/{project}/repositories",
            post(add_repository),
        )
        .route(
            "/orgs/{org}/projects/{project}/repositories/{repo}/tags",
            post(add_tag),
        )
        .route("/tokens", post(add_token).delete(revoke_token))
        .route("/runs", post(queue_run))
        .route("/runs/{org}/{id}", get(show_run))
        .route("/runs/{org}/{id}/start", post(start_run))
        .route("/runs/{org}/{id}/cancel", post(cancel_run))
        .route("/runs/{org}/{id}/complete", post(complete_run))
        .route("/push", post(push))
        .route("/faults", post(set_faults).delete(clear_faults))
        .route("/faults/chaos", get(chaos_counts).delete(stop_chaos))
        .route("/requests", get(requests).delete(clear_requests))
        .route("/hooks/deliver", post(deliver_hook))
}

#[derive(Deserialize)]
struct ProjectBody {
    name: String,
}

async fn add_project(
    State(sim): Sim,
    Path(org): Path<String>,
    Json(b): Json<ProjectBody>,
) -> Reply {
    let id = sim.state().add_project(&org, &b.name)?;
    Ok(Json(json!({"id": id, "name": b.name})))
}

#[derive(Deserialize)]
struct DefinitionBody {
    id: i64,
    name: String,
    #[serde(default)]
    repository: Option<String>,
}

async fn add_definition(
    State(sim): Sim,
    Path((org, project)): Path<(String, String)>,
    Json(b): Json<DefinitionBody>,
) -> Reply {
    sim.state()
        .add_definition(&org, &project, b.id, &b.name, b.repository.as_deref())?;
    Ok(Json(json!({"id": b.id, "name": b.name})))
}

#[derive(Deserialize)]
struct RepositoryBody {
    name: String,
    /// Branch (short or full ref) → commit SHA.
    #[serde(default)]
    branches: BTreeMap<String, String>,
    /// Listed first so it becomes the default branch.
    #[serde(default, rename = "defaultBranch")]
    default_branch: Option<String>,
}

async fn add_repository(
    State(sim): Sim,
    Path((org, project)): Path<(String, String)>,
    Json(b): Json<RepositoryBody>,
) -> Reply {
    let mut branches: Vec<(&str, &str)> = b
        .branches
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(default) = &b.default_branch {
        branches.sort_by_key(|(name, _)| name != default);
    }
    let id = sim
        .state()
        .add_repository(&org, &project, &b.name, &branches)?;
    Ok(Json(json!({"id": id, "name": b.name})))
}

#[derive(Deserialize)]
struct TagBody {
    name: String,
    commit: String,
    #[serde(default = "yes")]
    annotated: bool,
}

fn yes() -> bool {
    true
}

async fn add_tag(
    State(sim): Sim,
    Path((org, project, repo)): Path<(String, String, String)>,
    Json(b): Json<TagBody>,
) -> Reply {
    let object_id = sim
        .state()
        .add_tag(&org, &project, &repo, &b.name, &b.commit, b.annotated)?;
    Ok(Json(
        json!({"name": format!("refs/tags/{}", b.name), "objectId": object_id}),
    ))
}

#[derive(Deserialize)]
struct TokenBody {
    org: String,
    token: String,
}

async fn add_token(State(sim): Sim, Json(b): Json<TokenBody>) -> Reply {
    sim.state().add_token(&b.org, &b.token)?;
    Ok(Json(json!({"org": b.org})))
}

async fn revoke_token(State(sim): Sim, Json(b): Json<TokenBody>) -> Reply {
    sim.state().revoke_token(&b.org, &b.token)?;
    Ok(Json(json!({"org": b.org})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueBody {
    org: String,
    project: String,
    definition_id: i64,
    branch: String,
    #[serde(default)]
    commit: Option<String>,
}

fn run_json(sim: &Shared, id: i64) -> Reply {
    let info = sim.run_info(id).ok_or_else(|| TestkitError::NotFound {
        what: "run",
        detail: id.to_string(),
    })?;
    serde_json::to_value(info)
        .map(Json)
        .map_err(|e| TestkitError::InvalidSetup(format!("could not render run {id}: {e}")).into())
}

async fn queue_run(State(sim): Sim, Json(b): Json<QueueBody>) -> Reply {
    let id = sim.state().queue_run(
        &b.org,
        &b.project,
        b.definition_id,
        &b.branch,
        b.commit.as_deref(),
    )?;
    run_json(&sim, id)
}

async fn show_run(State(sim): Sim, Path((org, id)): Path<(String, i64)>) -> Reply {
    check_run_org(&sim, &org, id)?;
    run_json(&sim, id)
}

fn check_run_org(sim: &Shared, org: &str, id: i64) -> Result<(), ControlError> {
    match sim.run_info(id) {
        Some(info) if info.organization.eq_ignore_ascii_case(org) => Ok(()),
        _ => Err(TestkitError::NotFound {
            what: "run",
            detail: format!("{id} in organization {org}"),
        }
        .into()),
    }
}

async fn start_run(State(sim): Sim, Path((org, id)): Path<(String, i64)>) -> Reply {
    sim.state().start_run(Some(&org), id)?;
    run_json(&sim, id)
}

async fn cancel_run(State(sim): Sim, Path((org, id)): Path<(String, i64)>) -> Reply {
    sim.state().cancel_run(Some(&org), id)?;
    run_json(&sim, id)
}

#[derive(Deserialize)]
struct CompleteBody {
    result: String,
}

async fn complete_run(
    State(sim): Sim,
    Path((org, id)): Path<(String, i64)>,
    Json(b): Json<CompleteBody>,
) -> Reply {
    let result = RunResult::parse(&b.result).ok_or_else(|| {
        TestkitError::InvalidSetup(format!(
            "result '{}' is not one of succeeded, partiallySucceeded, failed, canceled",
            b.result
        ))
    })?;
    sim.state().complete_run(Some(&org), id, result)?;
    run_json(&sim, id)
}

#[derive(Deserialize)]
struct PushBody {
    org: String,
    project: String,
    repository: String,
    branch: String,
    commit: String,
}

async fn push(State(sim): Sim, Json(b): Json<PushBody>) -> Reply {
    let id = sim
        .state()
        .push(&b.org, &b.project, &b.repository, &b.branch, &b.commit)?;
    Ok(Json(json!({"pushId": id})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counted {
    count: u32,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    retry_after: Option<u64>,
    /// `seconds` (default), `httpDate` or `resetOnly`, for `rateLimitNext`.
    #[serde(default)]
    form: RetryAfterForm,
    /// Size of the padded body, for `oversizeNext`.
    #[serde(default)]
    mib: Option<u32>,
    /// Send `Content-Length` with an oversized body (else chunked), for `oversizeNext`.
    #[serde(default)]
    content_length: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FaultsBody {
    #[serde(default)]
    fail_next: Option<Counted>,
    #[serde(default)]
    rate_limit_next: Option<Counted>,
    #[serde(default)]
    retry_after_next: Option<Counted>,
    #[serde(default)]
    truncate_next: Option<u32>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    error_bom: Option<bool>,
    #[serde(default)]
    sign_in_page_next: Option<u32>,
    #[serde(default)]
    oversize_next: Option<Counted>,
    #[serde(default)]
    chaos: Option<ChaosConfig>,
}

async fn set_faults(State(sim): Sim, Json(b): Json<FaultsBody>) -> Reply {
    let mut f = sim.faults();
    // Validated first, so a bad chaos set changes nothing.
    if let Some(c) = &b.chaos {
        f.start_chaos(c).map_err(TestkitError::InvalidSetup)?;
    }
    if let Some(n) = b.sign_in_page_next {
        f.sign_in_page_next(n);
    }
    if let Some(c) = b.oversize_next {
        f.oversize_next(
            c.count,
            Oversize::mib(c.mib.unwrap_or(64), c.content_length),
        );
    }
    if let Some(c) = b.fail_next {
        f.fail_next(c.count, c.status.unwrap_or(500));
    }
    if let Some(c) = b.rate_limit_next {
        f.rate_limit_next(
            c.count,
            RetryAfter {
                secs: c.retry_after.unwrap_or(30),
                form: c.form,
            },
        );
    }
    if let Some(c) = b.retry_after_next {
        f.retry_after_on_success_next(c.count, c.retry_after.unwrap_or(30));
    }
    if let Some(n) = b.truncate_next {
        f.truncate_next(n);
    }
    if let Some(ms) = b.delay_ms {
        f.delay = Duration::from_millis(ms);
    }
    if let Some(on) = b.error_bom {
        f.error_bom = on;
    }
    Ok(Json(json!({"ok": true})))
}

async fn clear_faults(State(sim): Sim) -> Reply {
    sim.faults().clear();
    Ok(Json(json!({"ok": true})))
}

async fn chaos_counts(State(sim): Sim) -> Reply {
    Ok(Json(json!({"counts": sim.faults().chaos_counts()})))
}

async fn stop_chaos(State(sim): Sim) -> Reply {
    sim.faults().stop_chaos();
    Ok(Json(json!({"counts": sim.faults().chaos_counts()})))
}

async fn requests(State(sim): Sim) -> Reply {
    let log = lock(&sim.log).clone();
    Ok(Json(json!({"count": log.len(), "value": log})))
}

async fn clear_requests(State(sim): Sim) -> Reply {
    lock(&sim.log).clear();
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliverBody {
    #[serde(flatten)]
    event: HookEvent,
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    subscription_id: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    without_messages: bool,
    #[serde(default)]
    base_url: Option<String>,
}

async fn deliver_hook(State(sim): Sim, Json(b): Json<DeliverBody>) -> Reply {
    let delivery = HookDelivery {
        url: b.url,
        basic_auth: match (b.username, b.password) {
            (None, None) => None,
            (u, p) => Some((u.unwrap_or_default(), p.unwrap_or_default())),
        },
        headers: b.headers.into_iter().collect(),
        subscription_id: b.subscription_id,
        event_id: b.event_id,
        without_messages: b.without_messages,
        base_url: b.base_url,
    };
    let outcome = sim.deliver_hook(&b.event, &delivery).await?;
    Ok(Json(json!({
        "status": outcome.status,
        "eventId": outcome.event_id,
        "delivered": outcome.delivered,
        "subscriptionStatus": outcome.subscription_status,
    })))
}
