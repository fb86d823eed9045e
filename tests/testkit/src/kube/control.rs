//! The emulator's control API under `/_emu/` (JSON, no auth): fault injection, tokens and grants, the
//! request log and read accounting, for people and scripts driving `lockstep-testkit serve`. Not part of
//! the Kubernetes API; its requests are not logged, faulted or counted.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Grant, UserInfo};
use super::faults::FaultRule;
use super::server::{lock, Shared};

pub(crate) const PREFIX: &str = "/_emu/";

/// Control bodies are small; this bounds what a script can make the emulator buffer.
const MAX_CONTROL_BODY: usize = 1024 * 1024;

fn reply(code: StatusCode, body: Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> Response {
    reply(StatusCode::BAD_REQUEST, json!({"error": message.into()}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FailNext {
    count: usize,
    status: u16,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path_contains: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultsBody {
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    fail_next: Option<FailNext>,
    #[serde(default)]
    rules: Vec<FaultRule>,
    #[serde(default)]
    drop_watches: bool,
    #[serde(default)]
    expire_watch_window: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenBody {
    token: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    groups: Vec<String>,
}

async fn body_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(body, MAX_CONTROL_BODY)
        .await
        .map_err(|_| bad(format!("the body is larger than {MAX_CONTROL_BODY} bytes")))?;
    let text = if bytes.is_empty() {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(text).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

pub(crate) async fn handle(shared: &Arc<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path
        .trim_start_matches(PREFIX)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let r = match (&parts.method, segs.as_slice()) {
        (&Method::GET, ["faults"]) => Ok(faults_state(shared)),
        (&Method::POST, ["faults"]) => match body_json::<FaultsBody>(body).await {
            Ok(b) => Ok(set_faults(shared, b)),
            Err(e) => Err(e),
        },
        (&Method::DELETE, ["faults"]) => {
            let mut f = lock(&shared.faults);
            f.delay = std::time::Duration::ZERO;
            f.rules.clear();
            Ok(reply(StatusCode::OK, json!({})))
        }
        (&Method::POST, ["faults", "rules"]) => match body_json::<FaultRule>(body).await {
            Ok(rule) => match rule.check() {
                Ok(()) => {
                    let id = lock(&shared.faults).add(rule);
                    Ok(reply(StatusCode::CREATED, json!({"id": id})))
                }
                Err(e) => Err(bad(e)),
            },
            Err(e) => Err(e),
        },
        (&Method::DELETE, ["faults", "rules", id]) => match id.parse::<u64>() {
            Ok(id) => {
                let mut f = lock(&shared.faults);
                let before = f.rules.len();
                f.rules.retain(|r| r.id != id);
                if f.rules.len() == before {
                    Err(reply(
                        StatusCode::NOT_FOUND,
                        json!({"error": format!("no fault rule {id} (it may have run out)")}),
                    ))
                } else {
                    Ok(reply(StatusCode::OK, json!({})))
                }
            }
            Err(_) => Err(bad(format!("{id:?} is not a rule id"))),
        },
        (&Method::POST, ["faults", "drop-watches"]) => {
            shared.drop_watches.send_modify(|n| *n += 1);
            Ok(reply(StatusCode::OK, json!({})))
        }
        (&Method::POST, ["faults", "expire-watch-window"]) => {
            lock(&shared.store).expire_history();
            shared.drop_watches.send_modify(|n| *n += 1);
            Ok(reply(StatusCode::OK, json!({})))
        }
        (&Method::GET, ["requests"]) => {
            let log = lock(&shared.requests);
            Ok(reply(
                StatusCode::OK,
                json!({"count": log.records.len(), "capacity": log.capacity, "dropped": log.dropped,
                       "value": log.records.iter().collect::<Vec<_>>()}),
            ))
        }
        (&Method::DELETE, ["requests"]) => {
            lock(&shared.requests).clear();
            Ok(reply(StatusCode::OK, json!({})))
        }
        (&Method::POST, ["tokens"]) => match body_json::<TokenBody>(body).await {
            Ok(t) => match t.username.filter(|u| !u.is_empty()) {
                Some(username) if !t.token.is_empty() => {
                    lock(&shared.auth).add_token(
                        &t.token,
                        UserInfo {
                            username,
                            uid: t.uid,
                            groups: t.groups,
                        },
                    );
                    Ok(reply(StatusCode::CREATED, json!({})))
                }
                _ => Err(bad("\"token\" and \"username\" are required")),
            },
            Err(e) => Err(e),
        },
        (&Method::DELETE, ["tokens"]) => match body_json::<TokenBody>(body).await {
            Ok(t) if lock(&shared.auth).remove_token(&t.token) => {
                Ok(reply(StatusCode::OK, json!({})))
            }
            Ok(_) => Err(reply(
                StatusCode::NOT_FOUND,
                json!({"error": "no such token"}),
            )),
            Err(e) => Err(e),
        },
        (&Method::GET, ["grants"]) => Ok(reply(
            StatusCode::OK,
            json!({"value": lock(&shared.auth).grants()}),
        )),
        (&Method::POST, ["grants"]) => match body_json::<Grant>(body).await {
            Ok(g) => match g.check() {
                Ok(()) => {
                    lock(&shared.auth).grant(g);
                    Ok(reply(StatusCode::CREATED, json!({})))
                }
                Err(e) => Err(bad(e)),
            },
            Err(e) => Err(e),
        },
        (&Method::DELETE, ["grants"]) => {
            lock(&shared.auth).clear_grants();
            Ok(reply(StatusCode::OK, json!({})))
        }
        (&Method::GET, ["reads"]) => {
            let value: Vec<Value> = lock(&shared.reads)
                .by
                .iter()
                .map(|((client, resource), st)| {
                    json!({"client": client, "resource": resource, "requests": st.requests,
                           "bytes": st.bytes, "secretDataBytes": st.secret_data_bytes})
                })
                .collect();
            Ok(reply(StatusCode::OK, json!({"value": value})))
        }
        (&Method::DELETE, ["reads"]) => {
            lock(&shared.reads).by.clear();
            Ok(reply(StatusCode::OK, json!({})))
        }
        (&Method::GET, ["reviews"]) => {
            let a = lock(&shared.auth);
            Ok(reply(
                StatusCode::OK,
                json!({"tokenReviews": a.token_reviews, "subjectAccessReviews": a.access_reviews}),
            ))
        }
        _ => Err(reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no control endpoint {} {path}; see tests/testkit/README.md", parts.method)}),
        )),
    };
    r.unwrap_or_else(|e| e)
}

fn faults_state(shared: &Shared) -> Response {
    let f = lock(&shared.faults);
    reply(
        StatusCode::OK,
        json!({"delayMs": f.delay.as_millis() as u64, "rules": f.rules.iter().collect::<Vec<_>>()}),
    )
}

fn set_faults(shared: &Arc<Shared>, b: FaultsBody) -> Response {
    let mut rules = b.rules;
    if let Some(n) = b.fail_next {
        rules.push(FaultRule {
            method: n.method,
            path_contains: n.path_contains,
            ..FaultRule::fail(n.status).times(n.count)
        });
    }
    // Nothing changes unless the whole body is valid.
    if let Some(e) = rules.iter().find_map(|r| r.check().err()) {
        return bad(e);
    }
    let ids: Vec<u64> = {
        let mut f = lock(&shared.faults);
        if let Some(ms) = b.delay_ms {
            f.delay = std::time::Duration::from_millis(ms);
        }
        rules.into_iter().map(|r| f.add(r)).collect()
    };
    if b.expire_watch_window {
        lock(&shared.store).expire_history();
    }
    if b.drop_watches || b.expire_watch_window {
        shared.drop_watches.send_modify(|n| *n += 1);
    }
    reply(StatusCode::OK, json!({"ids": ids}))
}
