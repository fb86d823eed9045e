//! The Azure DevOps REST surface: routing, authentication, api-version, faults and the endpoint
//! handlers. Answers are computed under the state lock and rendered by `render`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use super::chaos::{ChaosFault, RetryAfter, RetryAfterForm};
use super::definitions;
use super::faults::Oversize;
use super::query::{BuildQuery, Params};
use super::render::{self, Ctx};
use super::requests::AdoRequestRecord;
use super::state::{full_ref, Org, Project};
use super::subscriptions;
use super::Shared;

/// Which REST operation a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    BuildsList,
    BuildsGet(String),
    Timeline(String),
    Repository(String),
    Refs(String),
    Commits(String),
    AnnotatedTag(String, String),
    RunsList(String),
    RunsGet(String, String),
    PullRequest(String, String),
    PullRequestQuery(String),
    DefinitionsGet(String),
}

impl Endpoint {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BuildsList => "builds.list",
            Self::BuildsGet(_) => "builds.get",
            Self::Timeline(_) => "builds.timeline",
            Self::Repository(_) => "git.repository",
            Self::Refs(_) => "git.refs",
            Self::Commits(_) => "git.commits",
            Self::AnnotatedTag(..) => "git.annotatedTag",
            Self::RunsList(_) => "pipelines.runs.list",
            Self::RunsGet(..) => "pipelines.runs.get",
            Self::PullRequest(..) => "git.pullRequest",
            Self::PullRequestQuery(_) => "git.pullRequestQuery",
            Self::DefinitionsGet(_) => "build.definitions.get",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub org: String,
    pub project: String,
    pub endpoint: Endpoint,
}

/// Parses `/{org}/{project}/_apis/...`. Fixed segments match case-insensitively (`Builds` and
/// `builds` both appear in real URLs).
pub(crate) fn parse_route(path: &str) -> Option<Route> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    if segs.len() < 5 || l[2] != "_apis" {
        return None;
    }
    let s = |i: usize| segs[i].clone();
    let endpoint = match &l[3..] {
        ["build", "builds"] => Endpoint::BuildsList,
        ["build", "builds", _] => Endpoint::BuildsGet(s(5)),
        ["build", "builds", _, "timeline"] | ["build", "builds", _, "timeline", _] => {
            Endpoint::Timeline(s(5))
        }
        ["build", "definitions", _] => Endpoint::DefinitionsGet(s(5)),
        ["git", "repositories", _] => Endpoint::Repository(s(5)),
        ["git", "repositories", _, "refs"] => Endpoint::Refs(s(5)),
        ["git", "repositories", _, "commits"] => Endpoint::Commits(s(5)),
        ["git", "repositories", _, "annotatedtags", _] => Endpoint::AnnotatedTag(s(5), s(7)),
        ["git", "repositories", _, "pullrequests", _] => Endpoint::PullRequest(s(5), s(7)),
        ["git", "repositories", _, "pullrequestquery"] => Endpoint::PullRequestQuery(s(5)),
        ["pipelines", _, "runs"] => Endpoint::RunsList(s(4)),
        ["pipelines", _, "runs", _] => Endpoint::RunsGet(s(4), s(6)),
        _ => return None,
    };
    Some(Route {
        org: s(0),
        project: s(1),
        endpoint,
    })
}

/// Path segments are percent-decoded (`My%20Project`); unlike query strings, `+` stays a plus.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A response before faults are applied.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Vec<u8>,
}

const JSON: &str = "application/json; charset=utf-8; api-version=7.1";

impl Reply {
    fn json(status: StatusCode, value: &Value) -> Self {
        Self {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    pub(crate) fn ok(value: &Value) -> Self {
        Self::json(StatusCode::OK, value)
    }

    fn error(status: StatusCode, message: &str, type_name: &str, type_key: &str) -> Self {
        Self::json(status, &render::error_body(message, type_name, type_key))
    }

    pub(crate) fn bad_request(message: &str) -> Self {
        Self::error(
            StatusCode::BAD_REQUEST,
            message,
            "Microsoft.TeamFoundation.Framework.Server.InvalidArgumentValueException, Microsoft.TeamFoundation.Framework.Server",
            "InvalidArgumentValueException",
        )
    }

    fn not_found(message: &str, type_name: &str, type_key: &str) -> Self {
        Self::error(StatusCode::NOT_FOUND, message, type_name, type_key)
    }
}

const SIGN_IN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Azure DevOps Services | Sign In</title></head>\n<body><p>Sign in to your account to continue to Azure DevOps.</p></body></html>\n";

/// Entry point for every non-control request.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = shared.faults().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let route = parse_route(uri.path());
    let hooks_route = subscriptions::parse_route(uri.path(), &method)
        .or_else(|| project_route(uri.path(), &method));
    let chaos = shared.faults().roll_chaos();
    let mut reply = match (injected(&shared, chaos), &hooks_route) {
        (Some(reply), _) => reply,
        (None, Some(p)) if p.kind == "projects.get" => project_reply(&shared, p, &uri, &headers),
        (None, Some(hooks)) => hooks_reply(&shared, hooks, &uri, &headers, &body),
        (None, None) => respond(&shared, &method, &uri, &headers, &body, route.as_ref()),
    };
    let (bom, truncate, oversize) = {
        let mut faults = shared.faults();
        let json = reply.content_type == JSON;
        let success = reply.status.is_success() && json;
        // Counted body faults hit successful answers only; a chaos draw hits whatever JSON came.
        let truncate =
            (success && faults.take_truncate()) || (json && chaos == Some(ChaosFault::Truncate));
        let oversize = match chaos {
            Some(ChaosFault::Oversize { mib }) if json => Some(Oversize::mib(mib, false)),
            _ if success => faults.take_oversize(),
            _ => None,
        };
        (faults.error_bom, truncate, oversize)
    };
    if bom && !reply.status.is_success() && reply.content_type == JSON {
        let mut with_bom = "\u{feff}".as_bytes().to_vec();
        with_bom.extend_from_slice(&reply.body);
        reply.body = with_bom;
    }
    if truncate {
        // Cut the JSON mid-way, as a connection dropped by a proxy would: the client must not take a
        // half body for an answer.
        reply.body.truncate(reply.body.len() / 2);
    }
    shared.log(AdoRequestRecord {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        endpoint: match (&hooks_route, &route) {
            (Some(h), _) => h.kind,
            (None, Some(r)) => r.endpoint.kind(),
            (None, None) => "unknown",
        },
        status: reply.status.as_u16(),
        time: jiff::Timestamp::now(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    match oversize {
        Some(o) => oversized_response(reply, o),
        None => into_response(reply),
    }
}

/// Chunks of padding are cut from one static buffer: an oversized answer costs the simulator no
/// memory however large it is.
static PADDING: [u8; 64 * 1024] = [b'a'; 64 * 1024];

/// The answer grown to `o.bytes` and still valid JSON: the object gets one more string member,
/// `"simulatorPadding"`, streamed in 64 KiB chunks. A client that reads bodies without a cap
/// buffers all of it.
fn oversized_response(reply: Reply, o: Oversize) -> Response {
    let body = reply.body;
    let Some(open) = body.strip_suffix(b"}").filter(|b| b.len() > 1) else {
        return into_response(Reply { body, ..reply });
    };
    let mut prefix = open.to_vec();
    prefix.extend_from_slice(b",\"simulatorPadding\":\"");
    let suffix: &'static [u8] = b"\"}";
    let padding = o.bytes.saturating_sub((prefix.len() + suffix.len()) as u64);
    let total = prefix.len() as u64 + padding + suffix.len() as u64;
    let chunk = PADDING.len() as u64;
    let chunks = (0..padding.div_ceil(chunk)).map(move |i| {
        let len = (padding - i * chunk).min(chunk) as usize;
        Bytes::from_static(&PADDING[..len])
    });
    let parts = std::iter::once(Bytes::from(prefix))
        .chain(chunks)
        .chain(std::iter::once(Bytes::from_static(suffix)))
        .map(Ok::<_, std::convert::Infallible>);
    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, reply.content_type);
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            builder = builder.header(name, v);
        }
    }
    if o.declare_length {
        builder = builder.header(header::CONTENT_LENGTH, total);
    }
    builder
        .body(Body::from_stream(futures::stream::iter(parts)))
        .unwrap_or_else(|_| Response::new(Body::from("simulator could not build the response")))
}

/// `GET /{org}/_apis/projects/{projectNameOrId}`: Projects - Get
/// (https://learn.microsoft.com/en-us/rest/api/azure/devops/core/projects/get?view=azure-devops-rest-7.1),
/// organization level like the subscriptions; `id` is what subscriptions store as `publisherInputs.projectId`.
fn project_route(path: &str, method: &Method) -> Option<subscriptions::HooksRoute> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is = |i: usize, s: &str| segs.get(i).is_some_and(|v| v.eq_ignore_ascii_case(s));
    if segs.len() != 4 || !(is(1, "_apis") && is(2, "projects")) || method != Method::GET {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some(subscriptions::HooksRoute {
        org: decode(segs[0]),
        id: Some(decode(segs[3])),
        kind: "projects.get",
    })
}

/// Projects - Get behind the organization, authentication and api-version checks; a missing project is
/// 404 `TF200016` like every project-scoped endpoint.
fn project_reply(
    shared: &Shared,
    route: &subscriptions::HooksRoute,
    uri: &Uri,
    headers: &HeaderMap,
) -> Reply {
    let state = shared.state();
    let Some(org) = state.org(&route.org) else {
        return Reply::not_found(
            &format!("The organization '{}' does not exist in the simulator.", route.org),
            "Microsoft.VisualStudio.Services.Account.AccountNotFoundException, Microsoft.VisualStudio.Services.WebApi",
            "AccountNotFoundException",
        );
    };
    // An Entra token of a user of the organization works on every REST API, as a PAT does.
    if !authenticated(org, headers) && !shared.entra_accepts(&org.name, headers) {
        return unauthenticated(headers, &shared.base_url);
    }
    if !has_api_version(&Params::parse(uri.query()), headers) {
        return Reply::bad_request("No api-version was supplied for the \"projects.get\" request.");
    }
    let wanted = route.id.as_deref().unwrap_or_default();
    match org.project(wanted) {
        Some(p) => Reply::json(
            StatusCode::OK,
            &serde_json::json!({
                "id": p.id,
                "name": p.name,
                "url": format!("{}/{}/_apis/projects/{}", shared.base_url.trim_end_matches('/'), route.org, p.id),
                "state": "wellFormed",
                "revision": 1,
                "visibility": "private",
                "lastUpdateTime": "2026-01-01T00:00:00Z",
            }),
        ),
        None => Reply::not_found(
            &format!("TF200016: The following project does not exist: {wanted}. Verify that the name of the project is correct and that the project exists on the specified Azure DevOps Server."),
            "Microsoft.TeamFoundation.Core.WebApi.ProjectDoesNotExistWithNameException, Microsoft.TeamFoundation.Core.WebApi",
            "ProjectDoesNotExistWithNameException",
        ),
    }
}

/// Service-hook subscriptions (organization-level, `subscriptions.rs`), behind the same
/// organization, authentication and api-version checks as every other endpoint.
fn hooks_reply(
    shared: &Shared,
    route: &subscriptions::HooksRoute,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let state = shared.state();
    let Some(org) = state.org(&route.org) else {
        return Reply::not_found(
            &format!(
                "The organization '{}' does not exist in the simulator; create it with add_project or add_token.",
                route.org
            ),
            "Microsoft.VisualStudio.Services.Account.AccountNotFoundException, Microsoft.VisualStudio.Services.WebApi",
            "AccountNotFoundException",
        );
    };
    if !authenticated(org, headers) && !shared.entra_accepts(&org.name, headers) {
        return unauthenticated(headers, &shared.base_url);
    }
    let params = Params::parse(uri.query());
    if !has_api_version(&params, headers) {
        return Reply::bad_request(&format!(
            "No api-version was supplied for the \"{}\" request. The version must be supplied either as part of the Accept header (e.g. \"application/json; api-version=1.0\") or as a query parameter (e.g. '?api-version=1.0').",
            route.kind
        ));
    }
    let token = subscriptions::presented_token(headers);
    let mut store = shared.hooks();
    match subscriptions::answer(
        &mut store,
        &state,
        &shared.base_url,
        route,
        token.as_deref(),
        &params,
        body,
    ) {
        subscriptions::Answer::Json(status, value) => Reply::json(status, &value),
        subscriptions::Answer::NoContent => Reply {
            status: StatusCode::NO_CONTENT,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: Vec::new(),
        },
        subscriptions::Answer::Error {
            status,
            message,
            type_name,
            type_key,
        } => Reply::error(status, &message, type_name, type_key),
    }
}

/// Faults that replace the answer: a chaos draw first, then the counted ones.
fn injected(shared: &Shared, chaos: Option<ChaosFault>) -> Option<Reply> {
    match chaos {
        Some(ChaosFault::Status { status }) => return Some(injected_failure(status)),
        Some(ChaosFault::RateLimit(retry_after)) => return Some(rate_limited(retry_after)),
        Some(ChaosFault::SignInPage) => return Some(sign_in_page()),
        _ => {}
    }
    let mut faults = shared.faults();
    if let Some(status) = faults.take_failure() {
        return Some(injected_failure(status));
    }
    if let Some(throttle) = faults.take_rate_limit() {
        return Some(rate_limited(throttle.retry_after));
    }
    if faults.take_sign_in_page() {
        return Some(sign_in_page());
    }
    None
}

fn into_response(reply: Reply) -> Response {
    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, reply.content_type);
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            builder = builder.header(name, v);
        }
    }
    builder
        .body(Body::from(reply.body))
        .unwrap_or_else(|_| Response::new(Body::from("simulator could not build the response")))
}

fn respond(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    route: Option<&Route>,
) -> Reply {
    let Some(route) = route else {
        return Reply::not_found(
            &format!("The simulator does not implement '{}'.", uri.path()),
            "Microsoft.VisualStudio.Services.WebApi.VssResourceNotFoundException, Microsoft.VisualStudio.Services.WebApi",
            "VssResourceNotFoundException",
        );
    };
    let state = shared.state();
    let Some(org) = state.org(&route.org) else {
        return Reply::not_found(
            &format!(
                "The organization '{}' does not exist in the simulator; create it with add_project or add_token.",
                route.org
            ),
            "Microsoft.VisualStudio.Services.Account.AccountNotFoundException, Microsoft.VisualStudio.Services.WebApi",
            "AccountNotFoundException",
        );
    };
    if !authenticated(org, headers) && !shared.entra_accepts(&org.name, headers) {
        return unauthenticated(headers, &shared.base_url);
    }
    // Pull Request Query is a read that takes its query as a POST body; everything else is a GET.
    let allowed = match route.endpoint {
        Endpoint::PullRequestQuery(_) => Method::POST,
        _ => Method::GET,
    };
    if *method != allowed {
        return Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("The simulator only implements {allowed} for {}.", route.endpoint.kind()),
            "Microsoft.VisualStudio.Services.WebApi.VssMethodNotAllowedException, Microsoft.VisualStudio.Services.WebApi",
            "VssMethodNotAllowedException",
        );
    }
    let params = Params::parse(uri.query());
    if !has_api_version(&params, headers) {
        return Reply::bad_request(&format!(
            "No api-version was supplied for the \"{method}\" request. The version must be supplied either as part of the Accept header (e.g. \"application/json; api-version=1.0\") or as a query parameter (e.g. '?api-version=1.0')."
        ));
    }
    let Some(project) = org.project(&route.project) else {
        return Reply::not_found(
            &format!("TF200016: The following project does not exist: {}. Verify that the name of the project is correct and that the project exists on the specified Azure DevOps Server.", route.project),
            "Microsoft.TeamFoundation.Core.WebApi.ProjectDoesNotExistWithNameException, Microsoft.TeamFoundation.Core.WebApi",
            "ProjectDoesNotExistWithNameException",
        );
    };
    let ctx = Ctx::new(&shared.base_url, org, project);
    let mut reply = match &route.endpoint {
        Endpoint::PullRequestQuery(name) => match project.repository(name) {
            Some(repo) => super::trace_links::pull_request_query(&ctx, repo, body),
            None => repo_not_found(name),
        },
        other => endpoint(&ctx, other, &params),
    };
    drop(state);
    if reply.status.is_success() {
        if let Some(throttle) = shared.faults().take_warning() {
            reply
                .headers
                .extend(rate_limit_headers(throttle.retry_after, false));
        }
    }
    reply
}

fn authenticated(org: &Org, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        // The user name is ignored; the PAT is the password.
        STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, pat)| org.accepts_token(pat)))
            .unwrap_or(false)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        org.accepts_token(rest.trim())
    } else {
        false
    }
}

/// The real service's answer to missing or bad credentials: a 203 sign-in page, unless the client
/// asked for a plain 401 with `X-TFS-FedAuthRedirect: Suppress`.
fn unauthenticated(headers: &HeaderMap, base_url: &str) -> Reply {
    let suppress = headers
        .get("x-tfs-fedauthredirect")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("suppress"));
    if suppress {
        let mut reply = Reply::error(
            StatusCode::UNAUTHORIZED,
            "TF400813: The user '' is not authorized to access this resource.",
            "Microsoft.TeamFoundation.Framework.Server.UnauthorizedRequestException, Microsoft.TeamFoundation.Framework.Server",
            "UnauthorizedRequestException",
        );
        reply.headers.push((
            header::WWW_AUTHENTICATE,
            format!("Basic realm=\"{base_url}/\""),
        ));
        reply
    } else {
        sign_in_page()
    }
}

fn sign_in_page() -> Reply {
    Reply {
        status: StatusCode::NON_AUTHORITATIVE_INFORMATION,
        content_type: "text/html; charset=utf-8",
        headers: Vec::new(),
        body: SIGN_IN_PAGE.as_bytes().to_vec(),
    }
}

fn has_api_version(params: &Params, headers: &HeaderMap) -> bool {
    params
        .get("api-version")
        .is_some_and(|v| !v.trim().is_empty())
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("api-version="))
}

fn injected_failure(status: u16) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return rate_limited(RetryAfter::seconds(1));
    }
    Reply::error(
        status,
        &format!("TF400898: An internal error occurred (injected by the simulator, HTTP {}).", status.as_u16()),
        "Microsoft.VisualStudio.Services.Common.VssServiceException, Microsoft.VisualStudio.Services.Common",
        "VssServiceException",
    )
}

/// `Retry-After` as an HTTP date: IMF-fixdate, RFC 9110 §5.6.7 (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn imf_fixdate(t: jiff::Timestamp) -> String {
    t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn rate_limit_headers(retry_after: RetryAfter, blocked: bool) -> Vec<(HeaderName, String)> {
    let now = jiff::Timestamp::now();
    let secs = i64::try_from(retry_after.secs).unwrap_or(i64::MAX / 2);
    let later = now
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(jiff::Timestamp::MAX);
    let mut h = Vec::new();
    let reset = match retry_after.form {
        RetryAfterForm::Seconds => {
            h.push((header::RETRY_AFTER, retry_after.secs.to_string()));
            now.as_second() + 300
        }
        RetryAfterForm::HttpDate => {
            h.push((header::RETRY_AFTER, imf_fixdate(later)));
            now.as_second() + 300
        }
        // The only hint is when usage returns to zero.
        RetryAfterForm::ResetOnly => later.as_second(),
    };
    h.extend([
        (
            HeaderName::from_static("x-ratelimit-resource"),
            "Core".to_string(),
        ),
        (
            HeaderName::from_static("x-ratelimit-limit"),
            "200".to_string(),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining"),
            if blocked { "0" } else { "10" }.to_string(),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset"),
            reset.to_string(),
        ),
    ]);
    if blocked && retry_after.form != RetryAfterForm::ResetOnly {
        h.push((
            HeaderName::from_static("x-ratelimit-delay"),
            "0.000".to_string(),
        ));
    }
    h
}

fn rate_limited(retry_after: RetryAfter) -> Reply {
    let mut reply = Reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        "TF400733: The request has been canceled: Request was blocked due to exceeding usage of resource 'Core' in namespace 'User'.",
        "Microsoft.TeamFoundation.Framework.Server.RequestBlockedException, Microsoft.TeamFoundation.Framework.Server",
        "RequestBlockedException",
    );
    reply.headers = rate_limit_headers(retry_after, true);
    reply
}

fn build_not_found(id: &str) -> Reply {
    Reply::not_found(
        &format!("TF215015: The requested build {id} could not be found."),
        "Microsoft.TeamFoundation.Build.WebApi.BuildNotFoundException, Microsoft.TeamFoundation.Build2.WebApi",
        "BuildNotFoundException",
    )
}

fn repo_not_found(name: &str) -> Reply {
    Reply::not_found(
        &format!("TF401019: The Git repository with name or identifier {name} does not exist or you do not have permissions for the operation you are attempting."),
        "Microsoft.TeamFoundation.Git.Server.GitRepositoryNotFoundException, Microsoft.TeamFoundation.Git.Server",
        "GitRepositoryNotFoundException",
    )
}

fn endpoint(ctx: &Ctx, endpoint: &Endpoint, params: &Params) -> Reply {
    let project: &Project = ctx.project;
    let runs = || ctx.org.runs.values().filter(|r| r.project_id == project.id);
    let run_by_id = |id: &str| {
        id.parse::<i64>()
            .ok()
            .and_then(|id| runs().find(|r| r.id == id))
    };
    match endpoint {
        Endpoint::BuildsList => match BuildQuery::parse(params) {
            Err(message) => Reply::bad_request(&message),
            Ok(query) => {
                let page = query.select(runs());
                let values = page.runs.iter().map(|r| render::build(ctx, r)).collect();
                let mut reply = Reply::ok(&render::list(values));
                if let Some(token) = page.continuation_token {
                    reply
                        .headers
                        .push((HeaderName::from_static("x-ms-continuationtoken"), token));
                }
                reply
            }
        },
        Endpoint::BuildsGet(id) => match run_by_id(id) {
            Some(run) => Reply::ok(&render::build(ctx, run)),
            None => build_not_found(id),
        },
        Endpoint::Timeline(id) => match run_by_id(id) {
            Some(run) => Reply::ok(&render::timeline(ctx, run)),
            None => build_not_found(id),
        },
        Endpoint::RunsList(pipeline) => {
            let Ok(pipeline_id) = pipeline.parse::<i64>() else {
                return Reply::bad_request(&format!(
                    "The pipeline id '{pipeline}' is not a valid integer."
                ));
            };
            let mut list: Vec<_> = runs().filter(|r| r.definition_id == pipeline_id).collect();
            list.sort_by_key(|r| std::cmp::Reverse(r.id));
            Reply::ok(&render::list(
                list.iter().map(|r| render::pipeline_run(ctx, r)).collect(),
            ))
        }
        Endpoint::RunsGet(pipeline, id) => {
            match run_by_id(id).filter(|r| pipeline.parse::<i64>().ok() == Some(r.definition_id)) {
                Some(run) => Reply::ok(&render::pipeline_run(ctx, run)),
                None => Reply::not_found(
                    &format!("Run {id} of pipeline {pipeline} could not be found."),
                    "Microsoft.Azure.Pipelines.WebApi.PipelineRunNotFoundException, Microsoft.Azure.Pipelines.WebApi",
                    "PipelineRunNotFoundException",
                ),
            }
        }
        Endpoint::DefinitionsGet(id) => match definitions::find(ctx, id) {
            Some((id, def)) => Reply::ok(&definitions::definition(ctx, id, def)),
            None => Reply::not_found(
                &definitions::not_found_message(id),
                definitions::NOT_FOUND_TYPE_NAME,
                definitions::NOT_FOUND_TYPE_KEY,
            ),
        },
        Endpoint::Repository(name) => match project.repository(name) {
            Some(repo) => Reply::ok(&render::repository(ctx, repo)),
            None => repo_not_found(name),
        },
        Endpoint::Refs(name) => {
            let Some(repo) = project.repository(name) else {
                return repo_not_found(name);
            };
            // Prefix match against the name without `refs/` (`heads/main` also matches
            // `heads/main-old`), as the real service does; an empty result is a 200.
            let filter = params.get("filter").unwrap_or("");
            let peel = params.flag("peelTags");
            let values = repo
                .refs
                .iter()
                .filter(|(ref_name, _)| {
                    ref_name
                        .strip_prefix("refs/")
                        .is_some_and(|short| short.starts_with(filter))
                })
                .map(|(ref_name, object_id)| {
                    let peeled = if peel {
                        repo.tags.get(object_id).map(|t| t.target.as_str())
                    } else {
                        None
                    };
                    render::git_ref(ctx, repo, ref_name, object_id, peeled)
                })
                .collect();
            Reply::ok(&render::list(values))
        }
        Endpoint::AnnotatedTag(name, object_id) => {
            let Some(repo) = project.repository(name) else {
                return repo_not_found(name);
            };
            match repo.tags.get(&object_id.to_ascii_lowercase()) {
                Some(tag) => Reply::ok(&render::annotated_tag(ctx, repo, tag)),
                None => Reply::not_found(
                    &format!("TF401174: The item '{object_id}' could not be found in the repository '{}'.", repo.name),
                    "Microsoft.TeamFoundation.Git.Server.GitItemNotFoundException, Microsoft.TeamFoundation.Git.Server",
                    "GitItemNotFoundException",
                ),
            }
        }
        Endpoint::Commits(name) => {
            let Some(repo) = project.repository(name) else {
                return repo_not_found(name);
            };
            commits(ctx, repo, params)
        }
        // Answered in `respond`, which has the body.
        Endpoint::PullRequestQuery(name) => repo_not_found(name),
        Endpoint::PullRequest(name, id) => {
            let Some(repo) = project.repository(name) else {
                return repo_not_found(name);
            };
            match id.parse::<i64>().ok().and_then(|id| repo.pull_requests.get(&id)) {
                Some(pr) => Reply::ok(&super::trace_links::pull_request(ctx, repo, pr)),
                None => Reply::not_found(
                    "TF401180: The requested pull request was not found.",
                    "Microsoft.TeamFoundation.Git.Server.GitPullRequestNotFoundException, Microsoft.TeamFoundation.Git.Server",
                    "GitPullRequestNotFoundException",
                ),
            }
        }
    }
}

fn commits(ctx: &Ctx, repo: &super::state::Repository, params: &Params) -> Reply {
    let version = params.get_any(&["searchCriteria.itemVersion.version", "itemVersion.version"]);
    let version_type = params
        .get_any(&[
            "searchCriteria.itemVersion.versionType",
            "itemVersion.versionType",
        ])
        .unwrap_or("branch");
    let head = match version {
        None => repo.refs.get(&repo.default_branch).cloned(),
        Some(v) => match version_type.to_ascii_lowercase().as_str() {
            "commit" => repo.commits.contains_key(v).then(|| v.to_string()),
            "tag" => repo
                .refs
                .get(&format!("refs/tags/{v}"))
                .map(|obj| repo.tags.get(obj).map_or(obj.clone(), |t| t.target.clone())),
            _ => repo.refs.get(&full_ref(v)).cloned(),
        },
    };
    let Some(head) = head else {
        return Reply::not_found(
            &format!(
                "TF401175: The version descriptor <{}: {}> could not be resolved to a version commit.",
                version_type, version.unwrap_or(&repo.default_branch)
            ),
            "Microsoft.TeamFoundation.Git.Server.GitUnresolvableToCommitException, Microsoft.TeamFoundation.Git.Server",
            "GitUnresolvableToCommitException",
        );
    };
    let parse = |names: &[&str]| -> Result<Option<usize>, Reply> {
        match params.get_any(names) {
            None => Ok(None),
            Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                Reply::bad_request(&format!(
                    "The value '{v}' of parameter '{}' is not a valid integer.",
                    names[0]
                ))
            }),
        }
    };
    let top = match parse(&["searchCriteria.$top", "$top"]) {
        Ok(t) => t.unwrap_or(100),
        Err(reply) => return reply,
    };
    let skip = match parse(&["searchCriteria.$skip", "$skip"]) {
        Ok(s) => s.unwrap_or(0),
        Err(reply) => return reply,
    };
    // `itemPath` narrows the history to commits touching the path before paging, as `git log -- path`.
    let item_path = params.get_any(&["searchCriteria.itemPath", "itemPath"]);
    let values = repo
        .history(&head)
        .into_iter()
        .filter(|c| item_path.is_none_or(|p| super::trace_links::touches(c, p)))
        .skip(skip)
        .take(top)
        .map(|c| render::commit(ctx, repo, c))
        .collect();
    Reply::ok(&render::list(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_case_insensitive_and_decoded() {
        let r = parse_route("/contoso/My%20Project/_apis/build/Builds/12/Timeline").unwrap();
        assert_eq!(r.org, "contoso");
        assert_eq!(r.project, "My Project");
        assert_eq!(r.endpoint, Endpoint::Timeline("12".into()));
        let r = parse_route("/o/p/_apis/git/repositories/r/annotatedTags/abc").unwrap();
        assert_eq!(r.endpoint, Endpoint::AnnotatedTag("r".into(), "abc".into()));
        assert_eq!(
            parse_route("/o/p/_apis/pipelines/42/runs")
                .unwrap()
                .endpoint,
            Endpoint::RunsList("42".into())
        );
        assert_eq!(
            parse_route("/o/p/_apis/git/repositories/a+b")
                .unwrap()
                .endpoint,
            Endpoint::Repository("a+b".into())
        );
        assert!(parse_route("/o/_apis/projects").is_none());
        assert!(parse_route("/o/p/_apis/build/definitions").is_none());
        assert_eq!(
            parse_route("/o/p/_apis/build/Definitions/42")
                .unwrap()
                .endpoint,
            Endpoint::DefinitionsGet("42".into())
        );
    }
}
