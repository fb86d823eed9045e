//! Service-hook subscriptions (issue 18): `GET/POST {org}/_apis/hooks/subscriptions` and
//! `GET/PUT/DELETE {org}/_apis/hooks/subscriptions/{id}` in the shapes of Microsoft's REST examples
//! (`hooks-subscription-create-*.json`, and the Subscriptions - List example of
//! `MicrosoftDocs/vsts-rest-api-specs` `specification/hooks/7.1/httpExamples/subscriptions/`), PAT
//! scopes, and the delivery health of each subscription (enabled → onProbation → disabledBySystem).
//!
//! Shape rules taken from those examples: `status` is left out while a subscription is `enabled`
//! and `probationRetries` while it is 0 (every enabled subscription in the List example lacks both;
//! the ones on probation or disabled carry them); confidential consumer inputs read back as
//! `********` (the List example masks `password`, `userToken`, `apiToken`; the Web Hooks consumer
//! marks `basicAuthPassword` confidential, `hooks-consumer-webhooks.json`); the publisher adds
//! `hostId` and, for `tfs`, `tfsSubscriptionId` to `publisherInputs`.

use std::collections::{BTreeMap, HashMap};

use axum::http::{HeaderMap, Method, StatusCode};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::ids::fresh_guid;
use super::state::SimState;
use crate::TestkitError;

/// `SubscriptionStatus` of the Service Hooks REST API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SubscriptionStatus {
    #[default]
    Enabled,
    OnProbation,
    DisabledByUser,
    DisabledBySystem,
    DisabledByInactiveIdentity,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::OnProbation => "onProbation",
            Self::DisabledByUser => "disabledByUser",
            Self::DisabledBySystem => "disabledBySystem",
            Self::DisabledByInactiveIdentity => "disabledByInactiveIdentity",
        }
    }

    /// Case-insensitive, as the service reads enums.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Enabled,
            Self::OnProbation,
            Self::DisabledByUser,
            Self::DisabledBySystem,
            Self::DisabledByInactiveIdentity,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether the service sends events to the subscription at all.
    pub fn delivers(self) -> bool {
        matches!(self, Self::Enabled | Self::OnProbation)
    }
}

/// When failed deliveries change a subscription's state. Microsoft documents (docs/ado-api.md §8.5,
/// D-TROUBLE): an enduring failure puts a subscription on probation at once; it is retried up to 7
/// times on probation (≈ 20 min … 15 h apart, ≈ 36 h in all) and then disabled by the system; a 410
/// Gone disables it at once; a success ends probation. The simulator does not wait: every failed
/// delivery counts at once, and a transient status (408, 502, 503, 504, which the service retries 8
/// times within ≈ 3 min before calling the failure enduring) counts like any other failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookThresholds {
    /// Consecutive failed deliveries of an enabled subscription that put it `onProbation` (1).
    pub probation_after_failures: u32,
    /// Failed deliveries while on probation (each counts as a probation retry) after which it is
    /// `disabledBySystem` (7).
    pub disable_after_probation_retries: u32,
}

impl Default for HookThresholds {
    fn default() -> Self {
        Self {
            probation_after_failures: 1,
            disable_after_probation_retries: 7,
        }
    }
}

/// A subscription as the simulator holds it: what the REST API shows plus delivery counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionInfo {
    pub id: String,
    pub organization: String,
    pub status: SubscriptionStatus,
    pub probation_retries: u32,
    pub publisher_id: String,
    pub event_type: String,
    pub resource_version: Option<String>,
    pub consumer_id: String,
    pub consumer_action_id: String,
    pub publisher_inputs: BTreeMap<String, String>,
    /// Unmasked (the REST API masks `basicAuthPassword`).
    pub consumer_inputs: BTreeMap<String, String>,
    /// Deliveries attempted (answered or not).
    pub deliveries: u64,
    /// Deliveries that failed (non-2xx or no answer).
    pub failures: u64,
    pub consecutive_failures: u32,
    /// Status of the last delivery; `None` before the first one or when the target did not answer.
    pub last_status: Option<u16>,
}

#[derive(Clone, Debug)]
struct Subscription {
    info: SubscriptionInfo,
    tfs_subscription_id: String,
    created: Timestamp,
    modified: Timestamp,
    last_probation_retry: Option<Timestamp>,
}

/// Subscriptions, token scopes and thresholds. Separate from `SimState` (its own lock).
#[derive(Debug, Default)]
pub(crate) struct HookStore {
    /// org (lower case) → subscription id (lower case) → subscription.
    subs: BTreeMap<String, BTreeMap<String, Subscription>>,
    /// (org lower case, token) → PAT scopes; a token without an entry has full access.
    scopes: HashMap<(String, String), Vec<String>>,
    pub thresholds: HookThresholds,
}

const MASK: &str = "********";
/// Consumer inputs the Web Hooks consumer marks `isConfidential` (hooks-consumer-webhooks.json).
const CONFIDENTIAL: &[&str] = &["basicAuthPassword"];

/// The identity that creates subscriptions (the example's `createdBy.id`).
const CREATOR: &str = "00ca946b-2fe9-4f2a-ae2f-40d5c48001bc";

fn key(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn invalid(msg: impl Into<String>) -> TestkitError {
    TestkitError::InvalidSetup(msg.into())
}

/// Service-hook timestamps have milliseconds (`2014-10-27T15:37:24.873Z` in the examples).
fn hooks_time(t: Timestamp) -> String {
    format!(
        "{}.{:03}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S"),
        t.subsec_millisecond()
    )
}

// ----- scopes ----------------------------------------------------------------------------------

/// PAT scopes that cover an event type, for reading (`read`) or for creating, replacing and
/// deleting. Mapping as in Azure DevOps Server 2022's `ServiceHooksPublisherControllerBase`
/// (event types per scope; `vso.hooks` reads all, `vso.hooks_write` writes all; the read scope of
/// the event's area also allows writes).
fn covering_scopes(event_type: &str, write: bool) -> Vec<&'static str> {
    let area: &[&'static str] =
        if event_type == "build.complete" || event_type.starts_with("ms.vss-pipelines.") {
            &["vso.build", "vso.build_execute"]
        } else if event_type.starts_with("git.") || event_type == "tfvc.checkin" {
            &[
                "vso.code",
                "vso.code_write",
                "vso.code_manage",
                "vso.code_full",
            ]
        } else if event_type.starts_with("workitem.") {
            &["vso.work", "vso.work_write", "vso.work_full"]
        } else {
            &[]
        };
    let mut out = area.to_vec();
    if !write {
        out.push("vso.hooks");
    }
    out.push("vso.hooks_write");
    out
}

/// Scopes under which the Subscriptions endpoints are reachable at all (SPEC-HOOKS declares
/// `vso.work`, `vso.build`, `vso.code`; the Service Hooks scopes add `vso.hooks*`).
const ENDPOINT_SCOPES: &[&str] = &[
    "vso.hooks",
    "vso.hooks_write",
    "vso.build",
    "vso.build_execute",
    "vso.code",
    "vso.code_write",
    "vso.code_manage",
    "vso.code_full",
    "vso.work",
    "vso.work_write",
    "vso.work_full",
];

impl HookStore {
    pub fn set_scopes(&mut self, org: &str, token: &str, scopes: Option<Vec<String>>) {
        let k = (key(org), token.to_string());
        match scopes {
            Some(s) => {
                self.scopes.insert(k, s);
            }
            None => {
                self.scopes.remove(&k);
            }
        }
    }

    fn scopes_of(&self, org: &str, token: Option<&str>) -> Option<&Vec<String>> {
        self.scopes.get(&(key(org), token?.to_string()))
    }

    // ----- subscriptions -----------------------------------------------------------------------

    /// Validates and stores a subscription from a Create body; returns its id.
    pub fn create(
        &mut self,
        state: &SimState,
        org: &str,
        body: &Value,
    ) -> Result<String, TestkitError> {
        let mut sub = parse_body(state, org, body, None)?;
        let id = fresh_guid();
        sub.info.id = id.clone();
        self.subs.entry(key(org)).or_default().insert(key(&id), sub);
        Ok(id)
    }

    /// Replace: the body's fields replace the subscription's; `status` in the body sets the state
    /// (`enabled` ends probation); a masked `basicAuthPassword` (`********`, as a read returned it)
    /// keeps the stored one.
    pub fn replace(
        &mut self,
        state: &SimState,
        org: &str,
        id: &str,
        body: &Value,
    ) -> Result<(), TestkitError> {
        let existing = self
            .get(org, id)
            .cloned()
            .ok_or_else(|| not_found_error(id))?;
        let mut sub = parse_body(state, org, body, Some(&existing))?;
        sub.info.id = existing.info.id.clone();
        sub.created = existing.created;
        sub.tfs_subscription_id = existing.tfs_subscription_id.clone();
        sub.info.deliveries = existing.info.deliveries;
        sub.info.failures = existing.info.failures;
        sub.info.last_status = existing.info.last_status;
        match body.get("status").and_then(Value::as_str) {
            Some(s) => {
                let status = SubscriptionStatus::parse(s)
                    .ok_or_else(|| invalid(format!("status '{s}' is not a SubscriptionStatus")))?;
                set_status(&mut sub, status, 0);
            }
            None => {
                sub.info.status = existing.info.status;
                sub.info.probation_retries = existing.info.probation_retries;
                sub.info.consecutive_failures = existing.info.consecutive_failures;
                sub.last_probation_retry = existing.last_probation_retry;
            }
        }
        self.subs.entry(key(org)).or_default().insert(key(id), sub);
        Ok(())
    }

    pub fn delete(&mut self, org: &str, id: &str) -> bool {
        self.subs
            .get_mut(&key(org))
            .and_then(|m| m.remove(&key(id)))
            .is_some()
    }

    fn get(&self, org: &str, id: &str) -> Option<&Subscription> {
        self.subs.get(&key(org))?.get(&key(id))
    }

    pub fn info(&self, org: &str, id: &str) -> Option<SubscriptionInfo> {
        self.get(org, id).map(|s| s.info.clone())
    }

    pub fn list(&self, org: &str) -> Vec<SubscriptionInfo> {
        self.subs
            .get(&key(org))
            .map(|m| m.values().map(|s| s.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Finds a subscription by id in any organization (ids are GUIDs).
    pub fn find(&self, id: &str) -> Option<SubscriptionInfo> {
        self.subs
            .values()
            .find_map(|m| m.get(&key(id)))
            .map(|s| s.info.clone())
    }

    pub fn set_status(
        &mut self,
        org: &str,
        id: &str,
        status: SubscriptionStatus,
        probation_retries: u32,
    ) -> Result<SubscriptionInfo, TestkitError> {
        let sub = self
            .subs
            .get_mut(&key(org))
            .and_then(|m| m.get_mut(&key(id)))
            .ok_or_else(|| not_found_error(id))?;
        set_status(sub, status, probation_retries);
        sub.modified = Timestamp::now();
        Ok(sub.info.clone())
    }

    /// Records one delivery attempt (`None`: no HTTP answer) and moves the state as the service
    /// would (see [`HookThresholds`]). Returns the new state; unknown ids are ignored.
    pub fn record_delivery(&mut self, id: &str, status: Option<u16>) -> Option<SubscriptionStatus> {
        let thresholds = self.thresholds;
        let sub = self.subs.values_mut().find_map(|m| m.get_mut(&key(id)))?;
        let now = Timestamp::now();
        let info = &mut sub.info;
        info.deliveries += 1;
        info.last_status = status;
        match status {
            Some(s) if (200..300).contains(&s) => {
                info.consecutive_failures = 0;
                if info.status == SubscriptionStatus::OnProbation {
                    info.status = SubscriptionStatus::Enabled;
                    info.probation_retries = 0;
                }
            }
            Some(410) => {
                info.failures += 1;
                info.consecutive_failures += 1;
                info.status = SubscriptionStatus::DisabledBySystem;
            }
            _ => {
                info.failures += 1;
                info.consecutive_failures += 1;
                match info.status {
                    SubscriptionStatus::Enabled
                        if info.consecutive_failures >= thresholds.probation_after_failures =>
                    {
                        info.status = SubscriptionStatus::OnProbation;
                        info.probation_retries = 0;
                    }
                    SubscriptionStatus::OnProbation => {
                        info.probation_retries += 1;
                        sub.last_probation_retry = Some(now);
                        if info.probation_retries >= thresholds.disable_after_probation_retries {
                            info.status = SubscriptionStatus::DisabledBySystem;
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(sub.info.status)
    }
}

fn set_status(sub: &mut Subscription, status: SubscriptionStatus, probation_retries: u32) {
    sub.info.status = status;
    sub.info.probation_retries = if status == SubscriptionStatus::OnProbation {
        probation_retries
    } else {
        0
    };
    if status == SubscriptionStatus::Enabled {
        sub.info.consecutive_failures = 0;
    }
}

fn not_found_error(id: &str) -> TestkitError {
    TestkitError::NotFound {
        what: "service-hook subscription",
        detail: id.to_string(),
    }
}

fn string_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, TestkitError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Null => Ok((k.clone(), String::new())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect(),
        Some(other) => Err(invalid(format!(
            "{what} must be an object of strings, not {other}"
        ))),
    }
}

/// Reads a Create/Replace body. The checks are the ones a client can trip over: required ids, a
/// target URL for Web Hooks, and a `projectId` the organization has.
fn parse_body(
    state: &SimState,
    org: &str,
    body: &Value,
    existing: Option<&Subscription>,
) -> Result<Subscription, TestkitError> {
    let field = |name: &str| -> Result<String, TestkitError> {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .ok_or_else(|| invalid(format!("the subscription needs a non-empty '{name}'")))
    };
    let publisher_id = field("publisherId")?;
    let event_type = field("eventType")?;
    let consumer_id = field("consumerId")?;
    let consumer_action_id = field("consumerActionId")?;
    let resource_version = body
        .get("resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let mut publisher_inputs = string_map(body.get("publisherInputs"), "publisherInputs")?;
    let mut consumer_inputs = string_map(body.get("consumerInputs"), "consumerInputs")?;
    // Read-modify-write: a masked secret means "keep the stored one".
    for name in CONFIDENTIAL {
        if consumer_inputs.get(*name).map(String::as_str) == Some(MASK) {
            match existing.and_then(|e| e.info.consumer_inputs.get(*name)) {
                Some(old) => {
                    consumer_inputs.insert((*name).to_string(), old.clone());
                }
                None => {
                    consumer_inputs.remove(*name);
                }
            }
        }
    }
    if consumer_id == "webHooks" {
        let url = consumer_inputs.get("url").map(String::as_str).unwrap_or("");
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        if parsed.is_none() {
            return Err(invalid(format!(
                "consumerInputs.url '{url}' is not an absolute http(s) URL"
            )));
        }
    }
    let o = state
        .org(org)
        .ok_or_else(|| invalid(format!("organization {org} does not exist")))?;
    if let Some(project) = publisher_inputs.get("projectId").cloned() {
        let p = o.project(&project).ok_or_else(|| {
            invalid(format!(
                "publisherInputs.projectId '{project}' is not a project of {org}"
            ))
        })?;
        publisher_inputs.insert("projectId".into(), p.id.clone());
    }
    publisher_inputs.remove("hostId");
    publisher_inputs.remove("tfsSubscriptionId");
    let now = Timestamp::now();
    Ok(Subscription {
        info: SubscriptionInfo {
            id: String::new(),
            organization: o.name.clone(),
            status: SubscriptionStatus::Enabled,
            probation_retries: 0,
            publisher_id,
            event_type,
            resource_version,
            consumer_id,
            consumer_action_id,
            publisher_inputs,
            consumer_inputs,
            deliveries: 0,
            failures: 0,
            consecutive_failures: 0,
            last_status: None,
        },
        tfs_subscription_id: fresh_guid(),
        created: now,
        modified: now,
        last_probation_retry: None,
    })
}

// ----- rendering -------------------------------------------------------------------------------

fn event_description(info: &SubscriptionInfo) -> String {
    let input = |k: &str| {
        info.publisher_inputs
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    match info.event_type.as_str() {
        "build.complete" => match (input("definitionName"), input("buildStatus")) {
            (Some(d), Some(s)) => format!("Build {d}, status {s}"),
            (Some(d), None) => format!("Build {d}"),
            (None, Some(s)) => format!("Any build, status {s}"),
            (None, None) => "Any completed build.".into(),
        },
        "git.push" => match (input("repository"), input("branch")) {
            (Some(r), Some(b)) => format!("Repository {r}, branch {b}"),
            (Some(r), None) => format!("Repository {r}"),
            _ => "Any branch on any repository".into(),
        },
        _ => match input("pipelineId") {
            Some(p) => format!("Pipeline {p}"),
            None => String::new(),
        },
    }
}

fn action_description(info: &SubscriptionInfo) -> String {
    info.consumer_inputs
        .get("url")
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(|h| format!("To host {h}")))
        .unwrap_or_default()
}

/// The Subscription object as the REST API returns it.
fn render(base_url: &str, state: &SimState, sub: &Subscription) -> Value {
    let info = &sub.info;
    let org_url = format!("{base_url}/{}", info.organization);
    let mut o = Map::new();
    o.insert("id".into(), json!(info.id));
    o.insert(
        "url".into(),
        json!(format!("{org_url}/_apis/hooks/subscriptions/{}", info.id)),
    );
    if info.status != SubscriptionStatus::Enabled {
        o.insert("status".into(), json!(info.status.as_str()));
    }
    o.insert("publisherId".into(), json!(info.publisher_id));
    o.insert("eventType".into(), json!(info.event_type));
    o.insert("resourceVersion".into(), json!(info.resource_version));
    o.insert("eventDescription".into(), json!(event_description(info)));
    o.insert("consumerId".into(), json!(info.consumer_id));
    o.insert("consumerActionId".into(), json!(info.consumer_action_id));
    o.insert("actionDescription".into(), json!(action_description(info)));
    if info.probation_retries > 0 {
        o.insert("probationRetries".into(), json!(info.probation_retries));
    }
    if let Some(t) = sub
        .last_probation_retry
        .filter(|_| info.status == SubscriptionStatus::OnProbation)
    {
        o.insert("lastProbationRetryDate".into(), json!(hooks_time(t)));
    }
    o.insert("createdBy".into(), json!({"id": CREATOR}));
    o.insert("createdDate".into(), json!(hooks_time(sub.created)));
    o.insert("modifiedBy".into(), json!({"id": CREATOR}));
    o.insert("modifiedDate".into(), json!(hooks_time(sub.modified)));
    let mut publisher_inputs: BTreeMap<String, String> = info.publisher_inputs.clone();
    if let Some(org) = state.org(&info.organization) {
        publisher_inputs.insert("hostId".into(), org.collection_id.clone());
    }
    if info.publisher_id == "tfs" {
        publisher_inputs.insert("tfsSubscriptionId".into(), sub.tfs_subscription_id.clone());
    }
    o.insert("publisherInputs".into(), json!(publisher_inputs));
    let consumer_inputs: BTreeMap<&String, &str> = info
        .consumer_inputs
        .iter()
        .map(|(k, v)| {
            let shown = if CONFIDENTIAL.contains(&k.as_str()) && !v.is_empty() {
                MASK
            } else {
                v.as_str()
            };
            (k, shown)
        })
        .collect();
    o.insert("consumerInputs".into(), json!(consumer_inputs));
    Value::Object(o)
}

// ----- REST ------------------------------------------------------------------------------------

/// `/{org}/_apis/hooks/subscriptions[/{id}]`, any case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HooksRoute {
    pub org: String,
    pub id: Option<String>,
    pub kind: &'static str,
}

pub(crate) fn parse_route(path: &str, method: &Method) -> Option<HooksRoute> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is = |i: usize, s: &str| segs.get(i).is_some_and(|v| v.eq_ignore_ascii_case(s));
    if !(is(1, "_apis") && is(2, "hooks") && is(3, "subscriptions")) {
        return None;
    }
    let org = percent_encoding::percent_decode_str(segs[0])
        .decode_utf8_lossy()
        .into_owned();
    let id = match segs.len() {
        4 => None,
        5 => Some(segs[4].to_string()),
        _ => return None,
    };
    let kind = match (id.is_some(), method.as_str()) {
        (false, "GET") => "hooks.subscriptions.list",
        (false, "POST") => "hooks.subscriptions.create",
        (true, "GET") => "hooks.subscriptions.get",
        (true, "PUT") => "hooks.subscriptions.replace",
        (true, "DELETE") => "hooks.subscriptions.delete",
        _ => "hooks.subscriptions.unsupported",
    };
    Some(HooksRoute { org, id, kind })
}

/// What a REST call turned into, before `api` wraps it in a response.
pub(crate) enum Answer {
    Json(StatusCode, Value),
    NoContent,
    Error {
        status: StatusCode,
        message: String,
        type_name: &'static str,
        type_key: &'static str,
    },
}

fn error(
    status: StatusCode,
    message: String,
    type_name: &'static str,
    type_key: &'static str,
) -> Answer {
    Answer::Error {
        status,
        message,
        type_name,
        type_key,
    }
}

fn not_found(id: &str) -> Answer {
    // Type from the Service Hooks server's exception map; the message text is not documented.
    error(
        StatusCode::NOT_FOUND,
        format!("Subscription {id} not found."),
        "Microsoft.VisualStudio.Services.ServiceHooks.WebApi.SubscriptionNotFoundException, Microsoft.VisualStudio.Services.ServiceHooks.WebApi",
        "SubscriptionNotFoundException",
    )
}

fn bad_input(message: String) -> Answer {
    error(
        StatusCode::BAD_REQUEST,
        message,
        "Microsoft.VisualStudio.Services.ServiceHooks.WebApi.SubscriptionInputException, Microsoft.VisualStudio.Services.ServiceHooks.WebApi",
        "SubscriptionInputException",
    )
}

/// The PAT's scopes decide what it may see and do (see `covering_scopes`): no scope of the
/// endpoint at all → 401 `TF400813`; a read of a subscription whose event type the scopes do not
/// cover → 404; a write → 403 "No scope found"; a list shows only the covered event types.
fn missing_scope_401(token_user: &str) -> Answer {
    error(
        StatusCode::UNAUTHORIZED,
        format!("TF400813: The user '{token_user}' is not authorized to access this resource."),
        "Microsoft.TeamFoundation.Framework.Server.UnauthorizedRequestException, Microsoft.TeamFoundation.Framework.Server",
        "UnauthorizedRequestException",
    )
}

fn http_exception(status: StatusCode, message: &str) -> Answer {
    error(
        status,
        message.to_string(),
        "System.Web.HttpException, System.Web",
        "HttpException",
    )
}

/// The identity a token authenticates as (the one every simulated request runs as).
const TOKEN_USER: &str = "22157d54-1821-6536-a446-928b06348385";

/// Serves one Subscriptions request. Authentication and `api-version` are checked by the caller.
pub(crate) fn answer(
    store: &mut HookStore,
    state: &SimState,
    base_url: &str,
    route: &HooksRoute,
    token: Option<&str>,
    query: &super::query::Params,
    body: &[u8],
) -> Answer {
    let scopes = store.scopes_of(&route.org, token).cloned();
    let has = |needed: &[&str]| {
        scopes
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| needed.contains(&x.as_str())))
    };
    if !has(ENDPOINT_SCOPES) {
        return missing_scope_401(TOKEN_USER);
    }
    let parse_json = || -> Result<Value, Answer> {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| bad_input(format!("The request body is not a JSON subscription: {e}")))
    };
    match (route.kind, route.id.as_deref()) {
        ("hooks.subscriptions.list", None) => {
            let filter = |name: &str, value: &str| {
                query
                    .get(name)
                    .is_none_or(|want| want.is_empty() || want.eq_ignore_ascii_case(value))
            };
            let values: Vec<Value> = store
                .subs
                .get(&key(&route.org))
                .map(|m| {
                    m.values()
                        .filter(|s| has(&covering_scopes(&s.info.event_type, false)))
                        .filter(|s| {
                            filter("publisherId", &s.info.publisher_id)
                                && filter("eventType", &s.info.event_type)
                                && filter("consumerId", &s.info.consumer_id)
                                && filter("consumerActionId", &s.info.consumer_action_id)
                        })
                        .map(|s| render(base_url, state, s))
                        .collect()
                })
                .unwrap_or_default();
            Answer::Json(
                StatusCode::OK,
                json!({"count": values.len(), "value": values}),
            )
        }
        ("hooks.subscriptions.create", None) => {
            let body = match parse_json() {
                Ok(b) => b,
                Err(a) => return a,
            };
            let event_type = body.get("eventType").and_then(Value::as_str).unwrap_or("");
            if !has(&covering_scopes(event_type, true)) {
                return http_exception(StatusCode::FORBIDDEN, "No scope found");
            }
            match store.create(state, &route.org, &body) {
                Ok(id) => match store.get(&route.org, &id) {
                    Some(sub) => Answer::Json(StatusCode::OK, render(base_url, state, sub)),
                    None => not_found(&id),
                },
                Err(e) => bad_input(e.to_string()),
            }
        }
        ("hooks.subscriptions.get", Some(id)) => match store.get(&route.org, id) {
            Some(sub) if has(&covering_scopes(&sub.info.event_type, false)) => {
                Answer::Json(StatusCode::OK, render(base_url, state, sub))
            }
            Some(_) => http_exception(StatusCode::NOT_FOUND, "Not found"),
            None => not_found(id),
        },
        ("hooks.subscriptions.replace", Some(id)) => {
            let body = match parse_json() {
                Ok(b) => b,
                Err(a) => return a,
            };
            let Some(existing) = store.get(&route.org, id) else {
                return not_found(id);
            };
            let new_type = body.get("eventType").and_then(Value::as_str).unwrap_or("");
            if !has(&covering_scopes(&existing.info.event_type, true))
                || !has(&covering_scopes(new_type, true))
            {
                return http_exception(StatusCode::FORBIDDEN, "No scope found");
            }
            match store.replace(state, &route.org, id, &body) {
                Ok(()) => match store.get(&route.org, id) {
                    Some(sub) => Answer::Json(StatusCode::OK, render(base_url, state, sub)),
                    None => not_found(id),
                },
                Err(e) => bad_input(e.to_string()),
            }
        }
        ("hooks.subscriptions.delete", Some(id)) => {
            let Some(existing) = store.get(&route.org, id) else {
                return not_found(id);
            };
            if !has(&covering_scopes(&existing.info.event_type, true)) {
                return http_exception(StatusCode::FORBIDDEN, "No scope found");
            }
            store.delete(&route.org, id);
            Answer::NoContent
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "The simulator implements GET/POST on hooks/subscriptions and GET/PUT/DELETE on hooks/subscriptions/{{id}}, not {}.",
                route.kind
            ),
            "Microsoft.VisualStudio.Services.WebApi.VssMethodNotAllowedException, Microsoft.VisualStudio.Services.WebApi",
            "VssMethodNotAllowedException",
        ),
    }
}

/// The PAT a request carries (Basic password or Bearer token), for the scope check.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let pair = String::from_utf8(raw).ok()?;
        pair.split_once(':').map(|(_, pat)| pat.to_string())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.trim().to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_sub() -> (HookStore, SimState, String) {
        let mut state = SimState::default();
        state.add_project("contoso", "Shop").unwrap();
        let mut store = HookStore::default();
        let id = store
            .create(
                &state,
                "contoso",
                &json!({
                    "publisherId": "tfs", "eventType": "build.complete", "resourceVersion": "2.0",
                    "consumerId": "webHooks", "consumerActionId": "httpRequest",
                    "publisherInputs": {"projectId": "Shop"},
                    "consumerInputs": {"url": "https://example.com/hook", "basicAuthPassword": "s3cret"}
                }),
            )
            .unwrap();
        (store, state, id)
    }

    #[test]
    fn failures_lead_to_probation_then_disabling_and_success_heals() {
        let (mut store, _, id) = store_with_sub();
        assert_eq!(
            store.record_delivery(&id, Some(200)),
            Some(SubscriptionStatus::Enabled)
        );
        assert_eq!(
            store.record_delivery(&id, Some(500)),
            Some(SubscriptionStatus::OnProbation)
        );
        assert_eq!(
            store.record_delivery(&id, Some(200)),
            Some(SubscriptionStatus::Enabled)
        );
        assert_eq!(
            store.record_delivery(&id, None),
            Some(SubscriptionStatus::OnProbation)
        );
        for retry in 1..7 {
            assert_eq!(
                store.record_delivery(&id, Some(503)),
                Some(SubscriptionStatus::OnProbation)
            );
            assert_eq!(store.info("contoso", &id).unwrap().probation_retries, retry);
        }
        assert_eq!(
            store.record_delivery(&id, Some(503)),
            Some(SubscriptionStatus::DisabledBySystem)
        );
        let info = store.info("contoso", &id).unwrap();
        assert_eq!((info.deliveries, info.failures), (11, 9));
        assert_eq!(info.probation_retries, 7);
    }

    #[test]
    fn gone_disables_at_once_and_thresholds_apply() {
        let (mut store, _, id) = store_with_sub();
        assert_eq!(
            store.record_delivery(&id, Some(410)),
            Some(SubscriptionStatus::DisabledBySystem)
        );
        let (mut store, _, id) = store_with_sub();
        store.thresholds = HookThresholds {
            probation_after_failures: 2,
            disable_after_probation_retries: 1,
        };
        assert_eq!(
            store.record_delivery(&id, Some(404)),
            Some(SubscriptionStatus::Enabled)
        );
        assert_eq!(
            store.record_delivery(&id, Some(404)),
            Some(SubscriptionStatus::OnProbation)
        );
        assert_eq!(
            store.record_delivery(&id, Some(404)),
            Some(SubscriptionStatus::DisabledBySystem)
        );
        assert_eq!(store.record_delivery("nope", Some(200)), None);
    }

    #[test]
    fn secrets_are_masked_and_a_masked_secret_is_kept_on_replace() {
        let (mut store, state, id) = store_with_sub();
        let shown = render("http://sim", &state, store.get("contoso", &id).unwrap());
        assert_eq!(shown["consumerInputs"]["basicAuthPassword"], MASK);
        assert!(shown.get("status").is_none(), "enabled: no status key");
        assert_eq!(
            shown["publisherInputs"]["projectId"],
            state
                .org("contoso")
                .unwrap()
                .project("Shop")
                .unwrap()
                .id
                .as_str()
        );
        let mut body = shown.clone();
        body["consumerInputs"]["url"] = json!("https://example.com/other");
        body["status"] = json!("disabledByUser");
        store.replace(&state, "contoso", &id, &body).unwrap();
        let info = store.info("contoso", &id).unwrap();
        assert_eq!(info.consumer_inputs["basicAuthPassword"], "s3cret");
        assert_eq!(info.consumer_inputs["url"], "https://example.com/other");
        assert_eq!(info.status, SubscriptionStatus::DisabledByUser);
    }

    #[test]
    fn bad_bodies_are_refused() {
        let (mut store, state, _) = store_with_sub();
        for body in [
            json!({"publisherId": "tfs"}),
            json!({"publisherId": "tfs", "eventType": "git.push", "consumerId": "webHooks", "consumerActionId": "httpRequest", "consumerInputs": {"url": "not a url"}}),
            json!({"publisherId": "tfs", "eventType": "git.push", "consumerId": "webHooks", "consumerActionId": "httpRequest", "consumerInputs": {"url": "https://x"}, "publisherInputs": {"projectId": "Nope"}}),
        ] {
            assert!(store.create(&state, "contoso", &body).is_err(), "{body}");
        }
        assert_eq!(store.list("contoso").len(), 1);
    }

    #[test]
    fn routes_and_scopes() {
        let r = parse_route("/contoso/_apis/hooks/Subscriptions/abc", &Method::PUT).unwrap();
        assert_eq!(
            (r.org.as_str(), r.id.as_deref(), r.kind),
            ("contoso", Some("abc"), "hooks.subscriptions.replace")
        );
        assert_eq!(
            parse_route("/contoso/_apis/hooks/subscriptions", &Method::POST)
                .unwrap()
                .kind,
            "hooks.subscriptions.create"
        );
        assert!(parse_route("/contoso/Shop/_apis/build/builds", &Method::GET).is_none());
        assert!(covering_scopes("build.complete", false).contains(&"vso.build"));
        assert!(covering_scopes("git.push", false).contains(&"vso.hooks"));
        assert!(!covering_scopes("git.push", true).contains(&"vso.hooks"));
        assert!(!covering_scopes("git.push", false).contains(&"vso.build"));
        assert_eq!(
            hooks_time("2014-10-27T15:37:24.873Z".parse().unwrap()),
            "2014-10-27T15:37:24.873Z"
        );
    }
}
