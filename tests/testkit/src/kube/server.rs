//! The HTTP face of the emulator: routing, content negotiation, request log, fault injection, watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::auth::AuthState;
use super::discovery;
use super::faults::{FaultState, RequestInfo};
use super::patch::PatchBody;
use super::resources::ResourceType;
use super::schema::FieldValidation;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, ChangeType, Store, StoreKey, WriteOptions};
use super::table;
use super::{ReadLedger, RequestLog, RequestRecord};

/// The largest request body the apiserver accepts (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub requests: Mutex<RequestLog>,
    pub faults: Mutex<FaultState>,
    pub auth: Mutex<AuthState>,
    pub reads: Mutex<ReadLedger>,
    /// Bumped to end every open watch.
    pub drop_watches: tokio::sync::watch::Sender<u64>,
    pub bookmark_interval: Duration,
    pub server_address: String,
}

/// Locks, recovering from a poisoned lock: a panicking handler must not take the emulator down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Params = HashMap<String, String>;

/// The verb kube-apiserver's RequestInfoFactory derives from the method and path
/// (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`).
fn verb_of(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "",
    }
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn request_info(shared: &Shared, req: &Request) -> RequestInfo {
    let path = req.uri().path().to_string();
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let token = bearer_token(req.headers());
    let user = token
        .as_deref()
        .and_then(|t| lock(&shared.auth).user_of(t).map(|u| u.username.clone()));
    let mut info = RequestInfo {
        method: req.method().to_string(),
        token,
        user,
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..Default::default()
    };
    if let Some(Route::Resource(rp)) = route(&path) {
        info.verb = verb_of(req.method(), rp.name.is_some(), watch).into();
        info.group = rp.group;
        info.resource = rp.plural;
        info.subresource = rp.sub.unwrap_or_default();
        info.namespace = rp.namespace.unwrap_or_default();
        info.name = rp.name.unwrap_or_default();
    }
    info.path = path;
    info
}

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if req.uri().path().starts_with(super::control::PREFIX) {
        return super::control::handle(&shared, req).await;
    }
    let query = req.uri().query().map(str::to_string);
    let info = request_info(&shared, &req);
    let verdict = lock(&shared.faults).decide(&info);
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    let response = match verdict.status {
        Some(code) => ApiError::injected(code).into_response(),
        None => match dispatch(&shared, req, &info).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
    };
    let client = info.client();
    lock(&shared.requests).push(RequestRecord {
        method: info.method,
        path: info.path,
        query,
        status: response.status().as_u16(),
        user_agent: info.user_agent,
        verb: info.verb,
        resource: info.resource,
        namespace: info.namespace,
        client,
    });
    response
}

fn aggregated_response(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut resp = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// Parsed resource URL: `/api/v1/namespaces/ns/secrets/name/status` and friends.
struct ResourcePath {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Version,
    OpenApiRoot,
    OpenApiGroupVersion(String),
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
    Resource(ResourcePath),
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["openapi", "v3"] => return Some(Route::OpenApiRoot),
        ["openapi", "v3", rest @ ..] => return Some(Route::OpenApiGroupVersion(rest.join("/"))),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["api", v] => return Some(Route::GroupVersion(String::new(), v.to_string())),
        ["apis", g, v] => return Some(Route::GroupVersion(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let own = |s: &&str| s.to_string();
    let namespaced_form = rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(group.is_empty() && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespaced_form {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let (plural, name, sub) = match rest {
        [p] => (p, None, None),
        [p, n] => (p, Some(own(n)), None),
        [p, n, s] => (p, Some(own(n)), Some(own(s))),
        _ => return None,
    };
    Some(Route::Resource(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        plural: plural.to_string(),
        namespace,
        name,
        sub,
    }))
}

/// What the client asked to get back (`Accept`): objects, server-side printed Tables, or metadata only.
#[derive(Clone, Debug, PartialEq)]
enum Presentation {
    Object,
    /// With the `includeObject` choice (None, Metadata, Object).
    Table(String),
    Metadata,
}

impl Presentation {
    fn from_request(headers: &HeaderMap, params: &Params) -> Self {
        let first = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.split(',').next())
            .unwrap_or_default()
            .to_string();
        if first.contains("as=Table") {
            Presentation::Table(
                params
                    .get("includeObject")
                    .cloned()
                    .unwrap_or_else(|| "Metadata".into()),
            )
        } else if first.contains("as=PartialObjectMetadata") {
            Presentation::Metadata
        } else {
            Presentation::Object
        }
    }

    fn one(&self, rt: &ResourceType, obj: Value) -> Value {
        match self {
            Presentation::Object => obj,
            Presentation::Metadata => partial_metadata(obj),
            Presentation::Table(include) => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                table::table(rt, &[obj], json!({"resourceVersion": rv}), include)
            }
        }
    }

    fn list(&self, rt: &ResourceType, items: Vec<Value>, meta: Value) -> Value {
        match self {
            Presentation::Object => {
                json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": meta, "items": items})
            }
            Presentation::Metadata => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items.into_iter().map(partial_metadata).collect::<Vec<_>>(),
            }),
            Presentation::Table(include) => table::table(rt, &items, meta, include),
        }
    }
}

fn partial_metadata(obj: Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

fn default_manager(user_agent: Option<&str>) -> String {
    // The apiserver names an unnamed manager after the User-Agent's program part.
    let ua = user_agent.unwrap_or("unknown");
    ua.split('/').next().unwrap_or(ua).to_string()
}

fn write_options(params: &Params, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    let given = params.get("fieldManager").filter(|m| !m.is_empty());
    if let Some(m) = given {
        if m.len() > 128 {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            ));
        }
    }
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    Ok(WriteOptions {
        manager: given.cloned().unwrap_or_else(|| default_manager(ua)),
        manager_given: given.is_some(),
        dry_run: match params.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
                )))
            }
        },
        field_validation: FieldValidation::parse(
            params
                .get("fieldValidation")
                .map(String::as_str)
                .unwrap_or(""),
        )
        .map_err(ApiError::bad_request)?,
        force: match params.get("force").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "force: Invalid value: \"{other}\": must be true or false"
                )))
            }
        },
    })
}

/// Bytes of Secret `data` and `stringData` values in what is served: a Secret, a list of them, watch
/// event objects, or Table rows that include objects. Metadata-only and Table-only reads serve none.
pub(crate) fn secret_data_bytes(v: &Value) -> u64 {
    let mut n = 0;
    if v.get("kind").and_then(Value::as_str) == Some("Secret") {
        for field in ["data", "stringData"] {
            if let Some(m) = v.get(field).and_then(Value::as_object) {
                n += m
                    .iter()
                    .map(|(k, x)| (k.len() + x.as_str().map_or(0, str::len)) as u64)
                    .sum::<u64>();
            }
        }
    }
    for list in ["items", "rows"] {
        if let Some(items) = v.get(list).and_then(Value::as_array) {
            n += items.iter().map(secret_data_bytes).sum::<u64>();
        }
    }
    if let Some(o) = v.get("object") {
        n += secret_data_bytes(o);
    }
    n
}

/// How reads are named in read accounting: `plural` for the core group, `plural.group` otherwise.
fn resource_key(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

/// Who reads what, for read accounting.
#[derive(Clone)]
struct Reader {
    client: String,
    resource: String,
}

impl Shared {
    fn account(&self, reader: &Reader, requests: u64, bytes: u64, secret: u64) {
        lock(&self.reads).add(&reader.client, &reader.resource, requests, bytes, secret);
    }
}

/// A GET or LIST answer, counted for read accounting.
fn read_response(shared: &Shared, reader: &Reader, body: &Value) -> Response {
    let text = body.to_string();
    shared.account(reader, 1, text.len() as u64, secret_data_bytes(body));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request,
    info: &RequestInfo,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let params: Params = Query::<Params>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let aggregated = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(discovery::wants_aggregated);
    let Some(route) = route(parts.uri.path()) else {
        return Err(ApiError::path_not_found());
    };
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v, &[]));
    let rp = match route {
        Route::Version => return ok(discovery::version()),
        Route::OpenApiRoot => {
            let store = lock(&shared.store);
            return ok(discovery::openapi_v3_root(
                &store.registry,
                store.registry_generation,
            ));
        }
        Route::OpenApiGroupVersion(p) => {
            return discovery::openapi_v3_group_version(&lock(&shared.store).registry, &p)
                .map_or(Err(ApiError::path_not_found()), ok)
        }
        Route::CoreVersions if aggregated => {
            return Ok(aggregated_response(discovery::aggregated(
                &lock(&shared.store).registry,
                true,
            )))
        }
        Route::Groups if aggregated => {
            return Ok(aggregated_response(discovery::aggregated(
                &lock(&shared.store).registry,
                false,
            )))
        }
        Route::CoreVersions => return ok(discovery::core_versions(&shared.server_address)),
        Route::Groups => return ok(discovery::group_list(&lock(&shared.store).registry)),
        Route::Group(g) => {
            return discovery::group(&lock(&shared.store).registry, &g)
                .map_or(Err(ApiError::path_not_found()), ok)
        }
        Route::GroupVersion(g, v) => {
            return discovery::resource_list(&lock(&shared.store).registry, &g, &v)
                .map_or(Err(ApiError::path_not_found()), ok)
        }
        Route::Resource(rp) => rp,
    };
    let rt = lock(&shared.store)
        .find(&rp.group, &rp.version, &rp.plural)
        .cloned()
        .ok_or_else(ApiError::path_not_found)?;
    if rt.namespaced != rp.namespace.is_some() && (rp.name.is_some() || !rt.namespaced) {
        return Err(ApiError::path_not_found());
    }
    if let Some(sub) = &rp.sub {
        if !(sub == "status" && rt.status_subresource) {
            return Err(ApiError::path_not_found());
        }
    }
    let ns = rp.namespace.as_deref();
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            "the request body is too large",
        )
    })?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if rt.create_only {
        if parts.method != Method::POST || rp.name.is_some() {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({} {})",
                parts.method, rt.plural
            )));
        }
        let body = parse_body(&content_type, &bytes)?;
        let out = super::reviews::review(shared, &rt, body)?;
        return Ok(json_response(StatusCode::CREATED, &out, &[]));
    }
    let is_watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    let reader = Reader {
        client: info.client(),
        resource: resource_key(&rt),
    };
    let presentation = Presentation::from_request(&parts.headers, &params);
    match (&parts.method, rp.name.as_deref()) {
        (&Method::GET, None) if is_watch => watch(
            shared,
            rt,
            rp.namespace.clone(),
            &params,
            presentation,
            reader,
        ),
        (&Method::GET, None) => list(shared, &rt, ns, &params, &presentation, &reader),
        (&Method::GET, Some(name)) => {
            let obj = lock(&shared.store).get(&rt, ns, name)?;
            Ok(read_response(shared, &reader, &presentation.one(&rt, obj)))
        }
        (&Method::POST, None) => {
            let body = parse_body(&content_type, &bytes)?;
            let opts = write_options(&params, &parts.headers)?;
            let w = lock(&shared.store).create(&rt, ns, body, &opts)?;
            Ok(json_response(StatusCode::CREATED, &w.object, &w.warnings))
        }
        (&Method::PUT, Some(name)) => {
            let body = parse_body(&content_type, &bytes)?;
            let opts = write_options(&params, &parts.headers)?;
            let w = lock(&shared.store).update(&rt, ns, name, rp.sub.as_deref(), body, &opts)?;
            Ok(json_response(StatusCode::OK, &w.object, &w.warnings))
        }
        (&Method::PATCH, Some(name)) => {
            let patch = PatchBody::parse(&rt, &content_type, &bytes)?;
            let opts = write_options(&params, &parts.headers)?;
            let w = lock(&shared.store).patch(&rt, ns, name, rp.sub.as_deref(), &patch, &opts)?;
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &w.object, &w.warnings))
        }
        (&Method::DELETE, Some(name)) if rp.sub.is_none() => {
            let options = if bytes.is_empty() {
                json!({})
            } else {
                parse_body(&content_type, &bytes)?
            };
            let dry_run = params.get("dryRun").is_some_and(|d| d == "All")
                || options
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|x| x == "All"));
            let obj = lock(&shared.store).delete(&rt, ns, name, &options, dry_run)?;
            if rt.custom
                || rt.kind == "Namespace"
                || obj.pointer("/metadata/deletionTimestamp").is_some()
            {
                return ok(obj);
            }
            let mut details = json!({"name": name, "kind": rt.plural, "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)});
            if !rt.group.is_empty() {
                details["group"] = json!(rt.group);
            }
            ok(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            )
        }
        (&Method::DELETE, None) => delete_collection(shared, &rt, ns, &params),
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

fn parse_body(content_type: &str, bytes: &Bytes) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/json" | "application/yaml" | "" | "*/*" => super::patch::parse_document(bytes)
            .map_err(|e| {
                ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
            }),
        super::protobuf::MEDIA_TYPE => {
            super::protobuf::decode(bytes).map_err(ApiError::bad_request)
        }
        _ => Err(ApiError::unsupported_media_type(&[
            "application/json",
            "application/yaml",
            super::protobuf::MEDIA_TYPE,
        ])),
    }
}

struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn parse(rt: &ResourceType, params: &Params) -> Result<Self, ApiError> {
        Ok(Selectors {
            labels: LabelSelector::parse(
                params
                    .get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or(""),
            )
            .map_err(ApiError::bad_request)?,
            fields: FieldSelector::parse(
                params
                    .get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or(""),
                &rt.group,
                &rt.plural,
            )
            .map_err(ApiError::bad_request)?,
        })
    }

    fn matches(&self, view: &Value) -> bool {
        self.labels.matches(view) && self.fields.matches(view)
    }

    /// Neither a label nor a field selector was given.
    fn is_empty(&self, params: &Params) -> bool {
        [params.get("labelSelector"), params.get("fieldSelector")]
            .iter()
            .all(|p| p.is_none_or(|s| s.is_empty()))
    }
}

fn hex_encode(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Continue tokens carry the list's resourceVersion and the last key returned.
fn encode_continue(rv: u64, key: &StoreKey) -> String {
    hex_encode(&json!({"rv": rv, "ns": key.namespace, "name": key.name}).to_string())
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    let v: Value = serde_json::from_str(&hex_decode(token)?).ok()?;
    Some((
        v.get("rv")?.as_u64()?,
        v.get("ns")?.as_str()?.to_string(),
        v.get("name")?.as_str()?.to_string(),
    ))
}

fn list(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    params: &Params,
    presentation: &Presentation,
    reader: &Reader,
) -> Result<Response, ApiError> {
    let sel = Selectors::parse(rt, params)?;
    // `resourceVersion=0` is served from the watch cache, which does not paginate: `limit` is ignored and
    // the whole list comes back in one response (k8s.io/apiserver pkg/storage/cacher/cacher.go
    // `shouldDelegateList`: `hasLimit := listOptions.ResourceVersion != "0" && pred.Limit > 0`; kubernetes
    // PR #70735 "Use watch cache when rv=0 even when limit is set"). A client that wants pages must not
    // ask for resourceVersion=0.
    let from_watch_cache = params.get("resourceVersion").map(String::as_str) == Some("0");
    let limit = match params
        .get("limit")
        .map(String::as_str)
        .filter(|_| !from_watch_cache)
    {
        None | Some("") => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "limit: Invalid value: \"{l}\": must be an integer"
                )))
            }
        },
    };
    let store = lock(&shared.store);
    let after = match params.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => {
            let (rv, cns, cname) = decode_continue(token).ok_or_else(|| {
                ApiError::bad_request(
                    "continue key is not valid: the continue token could not be decoded",
                )
            })?;
            if rv < store.oldest_rv {
                return Err(ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
            }
            Some((cns, cname))
        }
    };
    // Objects are decoded (`to_view`, defaults applied) only as far as the page needs: a paged list of N
    // objects costs O(N) in all, as an etcd range read does, not O(N) per page.
    let mut candidates = store
        .scan(rt, ns)
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ans, aname)| (&k.namespace, &k.name) > (ans, aname))
        })
        .map(|(k, o)| (k, Store::to_view(rt, o)))
        .filter(|(_, v)| sel.matches(v));
    let matching: Vec<(&StoreKey, Value)> = match limit {
        Some(limit) => candidates.by_ref().take(limit).collect(),
        None => candidates.by_ref().collect(),
    };
    let mut meta = json!({"resourceVersion": store.rv.to_string()});
    if limit.is_some() && candidates.next().is_some() {
        if let Some((last, _)) = matching.last() {
            meta["continue"] = json!(encode_continue(store.rv, last));
            // Only without selectors does the API server know how many remain ("If the list request
            // contained label or field selectors, then the number of remaining items is unknown and the
            // field will be left unset": ListMeta.remainingItemCount, k8s.io/apimachinery types.go).
            if sel.is_empty(params) {
                let rest = store
                    .scan(rt, ns)
                    .filter(|(k, _)| (&k.namespace, &k.name) > (&last.namespace, &last.name))
                    .count();
                meta["remainingItemCount"] = json!(rest);
            }
        }
    }
    let items: Vec<Value> = matching.into_iter().map(|(_, v)| v).collect();
    drop(candidates);
    drop(store);
    let body = presentation.list(rt, items, meta);
    Ok(read_response(shared, reader, &body))
}

fn delete_collection(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    params: &Params,
) -> Result<Response, ApiError> {
    let sel = Selectors::parse(rt, params)?;
    let dry_run = params.get("dryRun").is_some_and(|d| d == "All");
    let mut store = lock(&shared.store);
    let names: Vec<(String, String)> = store
        .scan(rt, ns)
        .filter(|(_, o)| sel.matches(&Store::to_view(rt, o)))
        .map(|(k, _)| (k.namespace.clone(), k.name.clone()))
        .collect();
    let mut items = Vec::new();
    for (kns, name) in names {
        let nsopt = if rt.namespaced {
            Some(kns.as_str())
        } else {
            None
        };
        items.push(store.delete(rt, nsopt, &name, &json!({}), dry_run)?);
    }
    let rv = store.rv.to_string();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv}, "items": items}),
        &[],
    ))
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta})
}

/// The watch event a change turns into for one watcher, taking selectors into account: an object that
/// stops matching is DELETED for that watcher, one that starts matching is ADDED.
fn frame_for(
    rt: &ResourceType,
    ns: Option<&str>,
    sel: &Selectors,
    change: &Change,
) -> Option<(&'static str, Value)> {
    if change.key.group != rt.storage_group
        || change.key.plural != rt.storage_plural
        || ns.is_some_and(|n| change.key.namespace != n)
    {
        return None;
    }
    let view = Store::to_view(rt, &change.object);
    let now = sel.matches(&view);
    match change.kind {
        ChangeType::Added | ChangeType::Deleted => now.then(|| (change.kind.as_str(), view)),
        ChangeType::Modified => {
            let before = change
                .old
                .as_ref()
                .is_some_and(|o| sel.matches(&Store::to_view(rt, o)));
            match (before, now) {
                (true, true) => Some(("MODIFIED", view)),
                (false, true) => Some(("ADDED", view)),
                (true, false) => Some(("DELETED", view)),
                (false, false) => None,
            }
        }
    }
}

fn watch(
    shared: &Arc<Shared>,
    rt: ResourceType,
    ns: Option<String>,
    params: &Params,
    presentation: Presentation,
    reader: Reader,
) -> Result<Response, ApiError> {
    let sel = Selectors::parse(&rt, params)?;
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let send_initial = params.get("sendInitialEvents").is_some_and(|b| b == "true");
    if send_initial
        && params.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
    {
        return Err(ApiError::new(422, "Invalid", "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
    }
    if send_initial && !bookmarks {
        return Err(ApiError::new(422, "Invalid", "ListOptions.meta.k8s.io \"\" is invalid: allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true"));
    }
    let timeout = match params.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "timeoutSeconds: Invalid value: \"{t}\": must be a non-negative integer"
            ))
        })?),
        None => Duration::from_secs(1800),
    };
    let rv_param = params.get("resourceVersion").cloned().unwrap_or_default();
    let mut frames: Vec<Bytes> = Vec::new();
    let mut secret_bytes = 0u64;
    let mut expired = false;
    let (rx, start_rv) = {
        let store = lock(&shared.store);
        let rx = store.tx.subscribe();
        let current = store.rv;
        if send_initial || rv_param.is_empty() || rv_param == "0" {
            for (_, o) in store.scan(&rt, ns.as_deref()) {
                let view = Store::to_view(&rt, o);
                if sel.matches(&view) {
                    let shown = presentation.one(&rt, view);
                    secret_bytes += secret_data_bytes(&shown);
                    frames.push(watch_line("ADDED", &shown));
                }
            }
            if send_initial {
                frames.push(watch_line("BOOKMARK", &bookmark(&rt, current, true)));
            }
        } else {
            let from: u64 = rv_param.parse().map_err(|_| ApiError::bad_request(format!("resourceVersion: Invalid value: \"{rv_param}\": must be a resource version the server returned")))?;
            if from > current {
                // The watch cache waits briefly for a version it has not seen, then gives up like this.
                let mut e = ApiError::new(
                    504,
                    "Timeout",
                    format!("Timeout: Too large resource version: {from}, current: {current}"),
                );
                e.details = Some(
                    json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                );
                e.retry_after = Some(1);
                return Err(e);
            }
            if from < store.oldest_rv {
                expired = true;
                let status = ApiError::expired(format!(
                    "too old resource version: {from} ({})",
                    store.oldest_rv
                ))
                .to_status();
                frames.push(watch_line("ERROR", &status));
            } else {
                for change in store.history.iter().filter(|c| c.rv > from) {
                    if let Some((kind, obj)) = frame_for(&rt, ns.as_deref(), &sel, change) {
                        let shown = presentation.one(&rt, obj);
                        secret_bytes += secret_data_bytes(&shown);
                        frames.push(watch_line(kind, &shown));
                    }
                }
            }
        }
        (rx, current)
    };
    let (tx, out_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let drop_rx = shared.drop_watches.subscribe();
    let interval = shared.bookmark_interval;
    let initial: u64 = frames.iter().map(|f| f.len() as u64).sum();
    shared.account(&reader, 1, initial, secret_bytes);
    let watch = OpenWatch {
        shared: shared.clone(),
        reader,
        rt,
        ns,
        filter: WatchFilter { sel, presentation },
        bookmarks,
        timeout,
        bookmark_interval: interval,
    };
    tokio::spawn(watch.stream(tx, frames, expired, rx, drop_rx, start_rv));
    let stream = futures::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            ApiError::new(500, "InternalError", "could not build the watch response")
                .into_response()
        }))
}

/// Which changes a watcher gets, and in what form.
struct WatchFilter {
    sel: Selectors,
    presentation: Presentation,
}

/// One watch being served: what it covers and how it paces bookmarks and its end.
struct OpenWatch {
    shared: Arc<Shared>,
    reader: Reader,
    rt: ResourceType,
    ns: Option<String>,
    filter: WatchFilter,
    bookmarks: bool,
    timeout: Duration,
    bookmark_interval: Duration,
}

impl OpenWatch {
    /// Sends the initial `frames`, then every matching change after `start_rv` until the timeout, a
    /// drop, a lagging receiver or the client going away.
    async fn stream(
        self,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
        frames: Vec<Bytes>,
        expired: bool,
        mut rx: broadcast::Receiver<Arc<Change>>,
        mut drop_rx: tokio::sync::watch::Receiver<u64>,
        start_rv: u64,
    ) {
        let OpenWatch {
            shared,
            reader,
            rt,
            ns,
            filter,
            bookmarks,
            timeout,
            bookmark_interval,
        } = self;
        for f in frames {
            if tx.send(Ok(f)).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + bookmark_interval,
            bookmark_interval,
        );
        let mut last_rv = start_rv;
        loop {
            // Biased: a drop requested before a change was committed wins over delivering that change, so
            // `Faults::drop_watches` followed by a write reliably makes clients resume from before the write.
            let frame = tokio::select! {
                biased;
                _ = drop_rx.changed() => return,
                _ = tx.closed() => return,
                _ = &mut deadline => {
                    if bookmarks {
                        let _ = tx.send(Ok(watch_line("BOOKMARK", &bookmark(&rt, last_rv, false)))).await;
                    }
                    return;
                }
                _ = ticker.tick(), if bookmarks => watch_line("BOOKMARK", &bookmark(&rt, last_rv, false)),
                msg = rx.recv() => match msg {
                    Ok(change) => {
                        if change.rv <= last_rv {
                            continue;
                        }
                        last_rv = change.rv;
                        match frame_for(&rt, ns.as_deref(), &filter.sel, &change) {
                            Some((kind, obj)) => {
                                let shown = filter.presentation.one(&rt, obj);
                                let line = watch_line(kind, &shown);
                                shared.account(&reader, 0, line.len() as u64, secret_data_bytes(&shown));
                                line
                            }
                            None => continue,
                        }
                    }
                    // A watcher that fell behind is closed, as the apiserver closes slow watchers; it re-watches.
                    Err(_) => return,
                },
            };
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(
        path: &str,
    ) -> (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ) {
        match route(path) {
            Some(Route::Resource(r)) => (r.group, r.version, r.plural, r.namespace, r.name, r.sub),
            _ => panic!("not a resource route: {path}"),
        }
    }

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        assert_eq!(
            rp("/api/v1/namespaces"),
            (
                "".into(),
                "v1".into(),
                "namespaces".into(),
                None,
                None,
                None
            )
        );
        assert_eq!(
            rp("/api/v1/namespaces/foo"),
            (
                "".into(),
                "v1".into(),
                "namespaces".into(),
                None,
                Some("foo".into()),
                None
            )
        );
        assert_eq!(
            rp("/api/v1/namespaces/foo/status"),
            (
                "".into(),
                "v1".into(),
                "namespaces".into(),
                None,
                Some("foo".into()),
                Some("status".into())
            )
        );
        assert_eq!(
            rp("/api/v1/namespaces/foo/secrets"),
            (
                "".into(),
                "v1".into(),
                "secrets".into(),
                Some("foo".into()),
                None,
                None
            )
        );
        assert_eq!(
            rp("/apis/lockstep.dev/v1alpha1/namespaces/ns/pipelinegates/g/status"),
            (
                "lockstep.dev".into(),
                "v1alpha1".into(),
                "pipelinegates".into(),
                Some("ns".into()),
                Some("g".into()),
                Some("status".into())
            )
        );
        assert_eq!(
            rp("/apis/lockstep.dev/v1alpha1/pipelinegates"),
            (
                "lockstep.dev".into(),
                "v1alpha1".into(),
                "pipelinegates".into(),
                None,
                None,
                None
            )
        );
        assert!(route("/apis/a/v1/namespaces/ns/x/y/z/w").is_none());
        assert!(matches!(route("/apis"), Some(Route::Groups)));
        assert!(
            matches!(route("/api/v1"), Some(Route::GroupVersion(g, v)) if g.is_empty() && v == "v1")
        );
    }

    #[test]
    fn continue_tokens_round_trip() {
        let key = StoreKey {
            group: "g".into(),
            plural: "p".into(),
            namespace: "ns".into(),
            name: "a,b".into(),
        };
        assert_eq!(
            decode_continue(&encode_continue(7, &key)),
            Some((7, "ns".into(), "a,b".into()))
        );
        assert_eq!(decode_continue("zz"), None);
    }
}
