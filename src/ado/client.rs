//! The Azure DevOps HTTP client: one connection pool for every object, the ADO traps handled in one place.
//!
//! - Bad credentials come back as `203` + an HTML sign-in page (or a redirect to one) unless
//!   `X-TFS-FedAuthRedirect: Suppress` is sent; any 2xx that is not JSON, any 3xx, 401 and 403 are
//!   therefore [`AdoError::Unauthorized`], and redirects are never followed.
//! - Bodies may start with a UTF-8 BOM, which serde_json rejects.
//! - Rate limits are per identity and organization: a `429`, or a `Retry-After` on any response, puts the
//!   organization on hold, and calls for it fail fast with [`AdoError::RateLimited`] until the hold ends,
//!   without touching the network. `Retry-After` is read in both forms RFC 9110 §10.2.3 allows (seconds,
//!   or an HTTP date); a 429 without it waits for `X-RateLimit-Reset` (Unix epoch seconds). Every hold is
//!   capped at [`RATE_LIMIT_MAX_HOLD`] (5 minutes, ADO's throughput window), so a date far in the future
//!   (a clock skew, a broken proxy) cannot silence an organization for longer.
//! - Bodies are read in chunks and capped at [`ClientConfig::max_response_bytes`] (16 MiB by default,
//!   hundreds of times the largest answer lockstep asks for); a longer answer is dropped as soon as it
//!   crosses the cap (or at once when its `Content-Length` says so) and is a transient
//!   [`AdoError::InvalidResponse`], so the last verdict stands and memory stays bounded.
//! - 5xx, timeouts and connection failures are retried a few times with exponential backoff.
//! - The token never appears in an error: it only travels in a sensitive `Authorization` header, and any
//!   text taken from a response is scrubbed of it before it is put in an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::de::DeserializeOwned;

use super::error::AdoError;
use super::models::{
    Build, ErrorBody, GitAnnotatedTag, GitCommitRef, GitRef, GitRepository, ListResponse,
};
use crate::pipeline_key::{full_branch_ref, OrgKey};
use crate::secret::SecretString;

/// First pause before retrying a 5xx or timeout; doubled on each further attempt.
const RETRY_BASE_DELAY: Duration = Duration::from_millis(250);
/// Longest single pause between retries, so a call gives up within a few seconds of backoff.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);
/// Hold after a 429 that names no `Retry-After`; doubled on each consecutive 429.
const RATE_LIMIT_BASE_HOLD: Duration = Duration::from_secs(10);
/// Longest hold: ADO's throughput window is 5 minutes, so usage has recovered by then. Also the cap for a
/// `Retry-After` date or `X-RateLimit-Reset` far in the future.
pub const RATE_LIMIT_MAX_HOLD: Duration = Duration::from_secs(300);
/// Hold when `X-RateLimit-Remaining` reaches 0 on a successful response without `Retry-After`:
/// the next request would only be delayed by ADO, so pause briefly instead.
const RATE_LIMIT_EXHAUSTED_HOLD: Duration = Duration::from_secs(10);
/// Default cap on one response body. The largest answer lockstep asks for (a Builds List page, a filtered
/// Refs List) is tens of KiB; 16 MiB leaves room for huge repositories and still bounds memory per request.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Server-provided text put into errors is cut to this many characters to keep messages one line.
const MAX_DETAIL_CHARS: usize = 300;

/// Settings for [`AdoClient`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// Limit for one HTTP request, from connect to the last body byte.
    pub request_timeout: Duration,
    /// Extra attempts after a 5xx, timeout or connection failure.
    pub max_retries: u32,
    /// The `api-version` query parameter (Azure DevOps Server may need an older one).
    pub api_version: String,
    pub user_agent: String,
    /// Longest response body read; a longer one is an [`AdoError::InvalidResponse`] (transient).
    pub max_response_bytes: usize,
    /// Proxy and extra CA certificates (see [`crate::proxy::Outbound`]).
    pub outbound: crate::proxy::Outbound,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_retries: 3,
            api_version: "7.1".to_string(),
            user_agent: format!("lockstep/{}", env!("CARGO_PKG_VERSION")),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            outbound: crate::proxy::Outbound::default(),
        }
    }
}

/// Told about every HTTP exchange (for metrics). `status` is `None` when no response arrived.
pub trait RequestObserver: Send + Sync {
    fn on_response(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration);
}

/// Per-organization rate-limit state.
#[derive(Debug, Default)]
struct OrgHold {
    not_before: Option<Instant>,
    consecutive_429: u32,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    holds: Mutex<HashMap<OrgKey, OrgHold>>,
}

/// Azure DevOps REST client. Cheap to clone: clones share the connection pool and rate-limit state.
#[derive(Clone)]
pub struct AdoClient {
    inner: Arc<Inner>,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl std::fmt::Debug for AdoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdoClient")
            .field("config", &self.inner.config)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// What one request is about, for URLs, errors and metrics.
struct Call<'a> {
    endpoint: &'static str,
    org_url: &'a str,
    /// Path segments below the organization URL; each is percent-encoded as one segment.
    segments: Vec<&'a str>,
    /// Query parameters besides `api-version`.
    query: Vec<(&'static str, String)>,
    /// Names the thing requested in a NotFound error.
    what: String,
    /// A JSON body: the request is a POST (a query that reads, such as Pull Request Query), else a GET.
    body: Option<serde_json::Value>,
}

/// Result of one attempt: done (success or a final error) or worth another try.
enum Attempt<T> {
    Done(Result<T, AdoError>),
    Retry(AdoError),
}

impl AdoClient {
    pub fn new(config: ClientConfig) -> Result<Self, AdoError> {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .user_agent(config.user_agent.clone());
        let http = config
            .outbound
            .configure(builder)
            .map_err(AdoError::InvalidRequest)?
            .build()
            .map_err(|e| {
                AdoError::InvalidRequest(format!("could not set up the HTTP client: {e}"))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                holds: Mutex::new(HashMap::new()),
            }),
            observer: None,
        })
    }

    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Builds - List: the newest `top` runs of one definition on one branch, newest queued first.
    pub async fn list_builds(
        &self,
        org_url: &str,
        project: &str,
        definition_id: i64,
        branch: &str,
        top: u32,
        token: &(impl Credential + ?Sized),
    ) -> Result<Vec<Build>, AdoError> {
        let call = Call {
            body: None,
            endpoint: "build.builds.list",
            org_url,
            segments: vec![project, "_apis", "build", "builds"],
            query: vec![
                ("definitions", definition_id.to_string()),
                ("branchName", full_branch_ref(branch)),
                ("queryOrder", "queueTimeDescending".to_string()),
                ("$top", top.to_string()),
            ],
            what: format!("Project \"{project}\" (or pipeline definition {definition_id})"),
        };
        let list: ListResponse<Build> = self.get_json(call, token).await?;
        Ok(list.value)
    }

    /// Builds - Get.
    pub async fn get_build(
        &self,
        org_url: &str,
        project: &str,
        build_id: i64,
        token: &(impl Credential + ?Sized),
    ) -> Result<Build, AdoError> {
        let id = build_id.to_string();
        let call = Call {
            body: None,
            endpoint: "build.builds.get",
            org_url,
            segments: vec![project, "_apis", "build", "builds", &id],
            query: Vec::new(),
            what: format!("Build {build_id} in project \"{project}\""),
        };
        self.get_json(call, token).await
    }

    /// Pull Requests - Get (`pull-request-get.json`), for a pull request a merge message names.
    pub async fn get_pull_request(
        &self,
        org_url: &str,
        project: &str,
        repository: &str,
        pull_request_id: i64,
        token: &(impl Credential + ?Sized),
    ) -> Result<crate::ado::GitPullRequest, AdoError> {
        let id = pull_request_id.to_string();
        let call = Call {
            body: None,
            endpoint: "git.pullRequests.get",
            org_url,
            segments: vec![
                project,
                "_apis",
                "git",
                "repositories",
                repository,
                "pullRequests",
                &id,
            ],
            query: Vec::new(),
            what: format!("Pull request {pull_request_id} in repository \"{repository}\""),
        };
        self.get_json(call, token).await
    }

    /// Pull Request Query (`POST …/git/repositories/{repo}/pullrequestquery`, `type: lastMergeCommit`):
    /// the pull requests whose merge commit is one of `commits` (`pull-request-query-*.json`). A read,
    /// although a POST: it needs the same Code (read) scope as Pull Requests - Get.
    pub async fn pull_request_query(
        &self,
        org_url: &str,
        project: &str,
        repository: &str,
        commits: &[&str],
        token: &(impl Credential + ?Sized),
    ) -> Result<crate::ado::GitPullRequestQuery, AdoError> {
        let call = Call {
            body: Some(serde_json::json!({
                "queries": [{"type": "lastMergeCommit", "items": commits}]
            })),
            endpoint: "git.pullRequestQuery.get",
            org_url,
            segments: vec![
                project,
                "_apis",
                "git",
                "repositories",
                repository,
                "pullrequestquery",
            ],
            query: Vec::new(),
            what: format!("Repository \"{repository}\" in project \"{project}\""),
        };
        self.get_json(call, token).await
    }

    /// Refs - List with `filter` (a prefix without `refs/`, e.g. `heads/main`) and `peelTags=true`.
    /// The filter is a prefix match: callers pick the exact ref name from the result.
    pub async fn list_refs(
        &self,
        org_url: &str,
        project: &str,
        repository: &str,
        filter: &str,
        token: &(impl Credential + ?Sized),
    ) -> Result<Vec<GitRef>, AdoError> {
        let call = Call {
            body: None,
            endpoint: "git.refs.list",
            org_url,
            segments: vec![project, "_apis", "git", "repositories", repository, "refs"],
            query: vec![
                ("filter", filter.to_string()),
                ("peelTags", "true".to_string()),
            ],
            what: format!("Repository \"{repository}\" in project \"{project}\""),
        };
        let list: ListResponse<GitRef> = self.get_json(call, token).await?;
        Ok(list.value)
    }

    /// Annotated Tags - Get: resolves a tag object id to the object it points at.
    pub async fn get_annotated_tag(
        &self,
        org_url: &str,
        project: &str,
        repository: &str,
        object_id: &str,
        token: &(impl Credential + ?Sized),
    ) -> Result<GitAnnotatedTag, AdoError> {
        let call = Call {
            body: None,
            endpoint: "git.annotatedtags.get",
            org_url,
            segments: vec![
                project,
                "_apis",
                "git",
                "repositories",
                repository,
                "annotatedtags",
                object_id,
            ],
            query: Vec::new(),
            what: format!("Annotated tag {object_id} in repository \"{repository}\""),
        };
        self.get_json(call, token).await
    }

    /// Commits - Get Commits: up to `top` commits of the first-parent history starting at `version`,
    /// newest first. `version_type` is `commit` (then `version` is a full SHA; the answer starts with
    /// that commit, however the branch moves meanwhile), `branch` or `tag`.
    #[allow(clippy::too_many_arguments)]
    pub async fn get_commits(
        &self,
        org_url: &str,
        project: &str,
        repository: &str,
        version: &str,
        version_type: &str,
        top: u32,
        token: &(impl Credential + ?Sized),
    ) -> Result<Vec<GitCommitRef>, AdoError> {
        self.get_commits_under(
            org_url,
            project,
            repository,
            version,
            version_type,
            None,
            top,
            token,
        )
        .await
    }

    /// [`Self::get_commits`], with `item_path` (`/prod`): only the commits that changed something at or
    /// under that path (`searchCriteria.itemPath`, "path of item to search under"; with the default
    /// `historyMode`, `simplifiedHistory`, the history `git log -- <path>` shows).
    #[allow(clippy::too_many_arguments)]
    pub async fn get_commits_under(
        &self,
        org_url: &str,
        project: &str,
        repository: &str,
        version: &str,
        version_type: &str,
        item_path: Option<&str>,
        top: u32,
        token: &(impl Credential + ?Sized),
    ) -> Result<Vec<GitCommitRef>, AdoError> {
        let mut query = vec![
            ("searchCriteria.itemVersion.version", version.to_string()),
            (
                "searchCriteria.itemVersion.versionType",
                version_type.to_string(),
            ),
            ("searchCriteria.$top", top.to_string()),
        ];
        if let Some(path) = item_path {
            query.push(("searchCriteria.itemPath", path.to_string()));
        }
        let call = Call {
            query,
            body: None,
            endpoint: "git.commits.list",
            org_url,
            segments: vec![
                project,
                "_apis",
                "git",
                "repositories",
                repository,
                "commits",
            ],
            what: format!(
                "{version_type} {version} in repository \"{repository}\" of project \"{project}\""
            ),
        };
        let list: ListResponse<GitCommitRef> = self.get_json(call, token).await?;
        Ok(list.value)
    }

    /// Repositories - Get, by name or id.
    pub async fn get_repository(
        &self,
        org_url: &str,
        project: &str,
        repository: &str,
        token: &(impl Credential + ?Sized),
    ) -> Result<GitRepository, AdoError> {
        let call = Call {
            body: None,
            endpoint: "git.repositories.get",
            org_url,
            segments: vec![project, "_apis", "git", "repositories", repository],
            query: Vec::new(),
            what: format!("Repository \"{repository}\" in project \"{project}\""),
        };
        self.get_json(call, token).await
    }

    /// Definitions - Get: whether the pipeline definition exists (404 `DefinitionNotFoundException`, or
    /// `TF200016` for a missing project, is [`AdoError::NotFound`]). Builds List answers an empty list for
    /// a definition that does not exist, exactly as for one without runs.
    pub async fn get_definition(
        &self,
        org_url: &str,
        project: &str,
        definition_id: i64,
        token: &(impl Credential + ?Sized),
    ) -> Result<super::models::DefinitionRef, AdoError> {
        let id = definition_id.to_string();
        let call = Call {
            body: None,
            endpoint: "build.definitions.get",
            org_url,
            segments: vec![project, "_apis", "build", "definitions", &id],
            query: Vec::new(),
            what: format!("Pipeline definition {definition_id} in project \"{project}\""),
        };
        self.get_json(call, token).await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
        credential: &(impl Credential + ?Sized),
    ) -> Result<T, AdoError> {
        let token = credential.secret();
        let org = OrgKey::from_url(call.org_url).ok_or_else(|| {
            AdoError::InvalidRequest(format!(
                "organization URL \"{}\" is not an http(s) URL such as https://dev.azure.com/contoso",
                redact(call.org_url, token)
            ))
        })?;
        let url = build_url(&call, &self.inner.config.api_version)?;
        let auth = credential.authorization()?;
        let entra_identity = credential.entra_identity();
        let org_display = call.org_url.trim().trim_end_matches('/').to_string();

        let mut attempt = 0;
        loop {
            if let Some(retry_after) = self.remaining_hold(&org) {
                return Err(AdoError::RateLimited {
                    organization: org_display,
                    retry_after,
                });
            }
            let outcome = self
                .attempt::<T>(
                    &call,
                    &url,
                    &auth,
                    (&org, &org_display),
                    token,
                    entra_identity,
                )
                .await;
            match outcome {
                Attempt::Done(result) => return result,
                Attempt::Retry(err) if attempt >= self.inner.config.max_retries => return Err(err),
                Attempt::Retry(_) => {
                    tokio::time::sleep(retry_delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        url: &url::Url,
        auth: &HeaderValue,
        (org, org_display): (&OrgKey, &str),
        token: &SecretString,
        entra_identity: Option<&str>,
    ) -> Attempt<T> {
        let started = Instant::now();
        let request = match &call.body {
            Some(body) => self.inner.http.post(url.clone()).json(body),
            None => self.inner.http.get(url.clone()),
        };
        let sent = request
            .header(AUTHORIZATION, auth.clone())
            .header(ACCEPT, "application/json")
            .header("X-TFS-FedAuthRedirect", "Suppress")
            .header("X-VSS-ForceMsaPassThrough", "true")
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                self.observe(call.endpoint, None, started.elapsed());
                return Attempt::Retry(transport_error(&e, token));
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_capped(response, self.inner.config.max_response_bytes).await;
        self.observe(call.endpoint, Some(status), started.elapsed());
        let body = match body {
            Ok(b) => b,
            Err(BodyRead::Transport(e)) => return Attempt::Retry(transport_error(&e, token)),
            // Asking again would bring the same answer: the caller keeps its last verdict instead.
            Err(BodyRead::TooLarge) if (200..=299).contains(&status) => {
                self.record_rate_limit(org, &headers, false);
                return Attempt::Done(Err(AdoError::InvalidResponse {
                    endpoint: call.endpoint.to_string(),
                    detail: format!(
                        "the answer is larger than {} MiB, more than any answer lockstep expects; lockstep keeps the last verdict and asks again later",
                        self.inner.config.max_response_bytes / (1024 * 1024)
                    ),
                }));
            }
            // An error page too long to read still has its status, which is what decides.
            Err(BodyRead::TooLarge) => Vec::new(),
        };

        let rate_limited = status == 429;
        let hold = self.record_rate_limit(org, &headers, rate_limited);
        let unauthorized = || match entra_identity {
            Some(identity) => AdoError::EntraTokenRejected {
                organization: org_display.to_string(),
                status,
                identity: identity.to_string(),
                advice: if asks_for_windows_auth(&headers) {
                    ENTRA_ON_SERVER_ADVICE
                } else {
                    ENTRA_REJECTED_ADVICE
                },
            },
            None => AdoError::Unauthorized {
                organization: org_display.to_string(),
                status,
            },
        };
        match status {
            429 => Attempt::Done(Err(AdoError::RateLimited {
                organization: org_display.to_string(),
                retry_after: hold.unwrap_or(RATE_LIMIT_BASE_HOLD),
            })),
            // 203 is the HTML sign-in page ADO serves for bad credentials on GET.
            203 => Attempt::Done(Err(unauthorized())),
            200..=299 if !is_json(&headers) => Attempt::Done(Err(unauthorized())),
            200..=299 => Attempt::Done(parse_body(&body, call.endpoint, token)),
            // A redirect is always to a sign-in page: the REST API never redirects a valid call.
            300..=399 | 401 | 403 => Attempt::Done(Err(unauthorized())),
            404 => Attempt::Done(Err(AdoError::NotFound {
                what: redact(&call.what, token),
                message: error_message(&body, status, token),
            })),
            408 | 500..=599 => Attempt::Retry(AdoError::Unavailable {
                status: Some(status),
                detail: error_message(&body, status, token),
            }),
            _ => Attempt::Done(Err(AdoError::InvalidRequest(format!(
                "{} answered HTTP {status}: {}",
                call.endpoint,
                error_message(&body, status, token)
            )))),
        }
    }

    fn observe(&self, endpoint: &'static str, status: Option<u16>, elapsed: Duration) {
        if let Some(o) = &self.observer {
            o.on_response(endpoint, status, elapsed);
        }
    }

    /// Time left on the organization's hold, if any.
    fn remaining_hold(&self, org: &OrgKey) -> Option<Duration> {
        let holds = self.inner.holds.lock().unwrap_or_else(|p| p.into_inner());
        let not_before = holds.get(org)?.not_before?;
        let left = not_before.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then_some(left)
    }

    /// Updates the organization's hold from a response; returns the hold it set, if any.
    fn record_rate_limit(
        &self,
        org: &OrgKey,
        headers: &HeaderMap,
        is_429: bool,
    ) -> Option<Duration> {
        let mut holds = self.inner.holds.lock().unwrap_or_else(|p| p.into_inner());
        let entry = holds.entry(org.clone()).or_default();
        let now = jiff::Timestamp::now();
        let retry_after = retry_after(headers, now);
        let hold = if is_429 {
            let backoff = RATE_LIMIT_BASE_HOLD
                .saturating_mul(1u32 << entry.consecutive_429.min(5))
                .min(RATE_LIMIT_MAX_HOLD);
            entry.consecutive_429 = entry.consecutive_429.saturating_add(1);
            Some(
                retry_after
                    .or_else(|| until_reset(headers, now))
                    .unwrap_or(backoff),
            )
        } else {
            entry.consecutive_429 = 0;
            retry_after.or_else(|| exhausted_hold(headers))
        };
        let hold = hold.map(|h| h.min(RATE_LIMIT_MAX_HOLD));
        if let Some(h) = hold.filter(|h| !h.is_zero()) {
            entry.not_before = Some(Instant::now() + h);
        }
        hold
    }
}

/// `X-RateLimit-Remaining: 0` without `Retry-After`: pause until `X-RateLimit-Reset` (bounded).
fn exhausted_hold(headers: &HeaderMap) -> Option<Duration> {
    let remaining = header_str(headers, "x-ratelimit-remaining")?
        .parse::<f64>()
        .ok()?;
    if remaining > 0.0 {
        return None;
    }
    Some(
        until_reset(headers, jiff::Timestamp::now())
            .unwrap_or(RATE_LIMIT_EXHAUSTED_HOLD)
            .min(RATE_LIMIT_EXHAUSTED_HOLD),
    )
}

/// `X-RateLimit-Reset`: the Unix epoch second when usage is back to 0 (docs/ado-api.md §3), as a wait
/// from `now`. A reset already past is no wait; the caller caps a long one.
fn until_reset(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let reset = header_str(headers, "x-ratelimit-reset")?
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite())?;
    let secs = (reset - now.as_second() as f64).clamp(0.0, RATE_LIMIT_MAX_HOLD.as_secs_f64());
    Some(Duration::from_secs_f64(secs))
}

/// `Retry-After` in either form of RFC 9110 §10.2.3: delta-seconds (`30`, fractions tolerated) or an
/// HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, which RFC 2822's grammar covers), as a wait
/// from `now`. A date in the past is no wait; anything beyond [`RATE_LIMIT_MAX_HOLD`] is cut to it.
fn retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let value = header_str(headers, RETRY_AFTER.as_str())?;
    let secs = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => secs,
        Ok(_) => return None,
        Err(_) => {
            let at = jiff::fmt::rfc2822::DateTimeParser::new()
                .parse_timestamp(value)
                .ok()?;
            at.duration_since(now).as_secs_f64().max(0.0)
        }
    };
    Some(Duration::from_secs_f64(
        secs.min(RATE_LIMIT_MAX_HOLD.as_secs_f64()),
    ))
}

/// Why a body was not read whole.
enum BodyRead {
    Transport(reqwest::Error),
    TooLarge,
}

/// The body, chunk by chunk, never holding more than `cap` bytes: a declared length over the cap is
/// refused before reading, and an undeclared one is dropped (closing the connection) once it crosses it.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyRead> {
    let declared = response.content_length();
    if declared.is_some_and(|len| len > cap as u64) {
        return Err(BodyRead::TooLarge);
    }
    let initial = declared.map_or(8 * 1024, |len| len as usize);
    let mut body = Vec::with_capacity(initial.min(cap));
    while let Some(chunk) = response.chunk().await.map_err(BodyRead::Transport)? {
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(BodyRead::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// What to do when Azure DevOps Services refuses an Entra identity.
const ENTRA_REJECTED_ADVICE: &str = "add the identity to the organization (Organization settings > Users, access level Basic) and grant it Build (read) and Code (read) on the project";
/// What to do when the server turns out to be Azure DevOps Server.
const ENTRA_ON_SERVER_ADVICE: &str = "the server asks for Windows authentication, as Azure DevOps Server (on-premises) does, and Azure DevOps Server does not accept Microsoft Entra tokens: use secretRef with a personal access token";

/// A challenge for Windows authentication and none for Bearer: IIS in front of Azure DevOps Server.
/// Azure DevOps Services challenges with `Bearer authorization_uri=...` (and `Basic`).
fn asks_for_windows_auth(headers: &HeaderMap) -> bool {
    let challenges: Vec<String> = headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    let windows = challenges
        .iter()
        .any(|c| c.starts_with("negotiate") || c.starts_with("ntlm"));
    let bearer = challenges.iter().any(|c| c.starts_with("bearer"));
    windows && !bearer
}

fn retry_delay(attempt: u32) -> Duration {
    RETRY_BASE_DELAY
        .saturating_mul(1u32 << attempt.min(16))
        .min(RETRY_MAX_DELAY)
}

fn is_json(headers: &HeaderMap) -> bool {
    header_str(headers, CONTENT_TYPE.as_str())
        .and_then(|ct| ct.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

fn parse_body<T: DeserializeOwned>(
    body: &[u8],
    endpoint: &'static str,
    token: &SecretString,
) -> Result<T, AdoError> {
    serde_json::from_slice(strip_bom(body)).map_err(|e| AdoError::InvalidResponse {
        endpoint: endpoint.to_string(),
        detail: redact(&e.to_string(), token),
    })
}

/// The ADO error body's `message` (`TF…`), else a short excerpt of the body, else the status.
fn error_message(body: &[u8], status: u16, token: &SecretString) -> String {
    let body = strip_bom(body);
    let text = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message)
        .unwrap_or_else(|| {
            let raw = String::from_utf8_lossy(body);
            let raw = raw.split_whitespace().collect::<Vec<_>>().join(" ");
            if raw.is_empty() || raw.starts_with('<') {
                format!("HTTP {status}")
            } else {
                raw
            }
        });
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut short: String = one_line.chars().take(MAX_DETAIL_CHARS).collect();
    if short.len() < one_line.len() {
        short.push('…');
    }
    redact(&short, token)
}

fn transport_error(e: &reqwest::Error, token: &SecretString) -> AdoError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // The URL carries no secret, but the source chain is external text: scrub it all the same.
    let mut detail = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    AdoError::Unavailable {
        status: None,
        detail: redact(&detail, token),
    }
}

/// Removes the token from text that came from outside (a server echoing it, a URL that embeds it).
fn redact(text: &str, token: &SecretString) -> String {
    let secret = token.expose();
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "<redacted>")
    }
}

/// How a request authenticates: a PAT (a bare [`SecretString`], sent as HTTP Basic) or an [`AdoAuth`].
pub trait Credential: Send + Sync {
    /// The `Authorization` header, marked sensitive so no `Debug` of the request prints it.
    fn authorization(&self) -> Result<HeaderValue, AdoError>;
    /// The secret to scrub from any text put into an error.
    fn secret(&self) -> &SecretString;
    /// The Entra identity a Bearer token belongs to, for a rejection message that names it.
    fn entra_identity(&self) -> Option<&str> {
        None
    }
}

impl Credential for SecretString {
    fn authorization(&self) -> Result<HeaderValue, AdoError> {
        basic_auth(self)
    }
    fn secret(&self) -> &SecretString {
        self
    }
}

/// The credential of one request: a personal access token or a Microsoft Entra access token.
#[derive(Clone, Debug)]
pub enum AdoAuth {
    /// Personal access token or `SYSTEM_ACCESSTOKEN`, sent as HTTP Basic with an empty user name.
    Pat(SecretString),
    /// Microsoft Entra access token for Azure DevOps, sent as `Bearer`. `identity` names it in messages.
    Bearer {
        token: SecretString,
        identity: String,
    },
}

impl AdoAuth {
    /// The token itself (for cache fingerprints and scrubbing).
    pub fn secret(&self) -> &SecretString {
        match self {
            Self::Pat(token) | Self::Bearer { token, .. } => token,
        }
    }
}

impl Credential for AdoAuth {
    fn authorization(&self) -> Result<HeaderValue, AdoError> {
        match self {
            Self::Pat(token) => basic_auth(token),
            Self::Bearer { token, .. } => sensitive_header(&format!("Bearer {}", token.expose())),
        }
    }
    fn secret(&self) -> &SecretString {
        AdoAuth::secret(self)
    }
    fn entra_identity(&self) -> Option<&str> {
        match self {
            Self::Pat(_) => None,
            Self::Bearer { identity, .. } => Some(identity),
        }
    }
}

fn basic_auth(token: &SecretString) -> Result<HeaderValue, AdoError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!(":{}", token.expose()));
    sensitive_header(&format!("Basic {encoded}"))
}

fn sensitive_header(text: &str) -> Result<HeaderValue, AdoError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        AdoError::InvalidRequest("the token cannot be sent as an HTTP header".to_string())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn build_url(call: &Call<'_>, api_version: &str) -> Result<url::Url, AdoError> {
    let invalid = || {
        AdoError::InvalidRequest(format!(
            "organization URL \"{}\" cannot take a path: use a form like https://dev.azure.com/contoso",
            call.org_url.trim()
        ))
    };
    let mut url = url::Url::parse(call.org_url.trim()).map_err(|_| invalid())?;
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut path = url.path_segments_mut().map_err(|_| invalid())?;
        path.pop_if_empty();
        path.extend(call.segments.iter().map(|s| s.trim()));
    }
    let mut query = String::new();
    for (key, value) in call
        .query
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain([("api-version", api_version)])
    {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(key);
        query.push('=');
        query.push_str(&encode_query_value(value));
    }
    url.set_query(Some(&query));
    Ok(url)
}

/// Percent-encodes a query value but keeps `/`, `,` and `:` readable (`branchName=refs/heads/main`),
/// which is what ADO's own clients send.
fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'/'
            | b','
            | b':' => out.push(char::from(byte)),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(org_url: &'a str, segments: Vec<&'a str>) -> Call<'a> {
        Call {
            body: None,
            endpoint: "test",
            org_url,
            segments,
            query: vec![
                ("branchName", "refs/heads/feature/a b".to_string()),
                ("$top", "5".to_string()),
            ],
            what: String::new(),
        }
    }

    #[test]
    fn urls_encode_segments_and_keep_refs_readable() {
        let url = build_url(
            &call(
                "https://dev.azure.com/contoso/",
                vec!["My Project", "_apis"],
            ),
            "7.1",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://dev.azure.com/contoso/My%20Project/_apis?branchName=refs/heads/feature/a%20b&$top=5&api-version=7.1"
        );
    }

    #[test]
    fn server_collection_urls_keep_their_path() {
        let url = build_url(
            &call("https://tfs.corp/DefaultCollection", vec!["Shop", "a/b"]),
            "6.0",
        )
        .unwrap();
        assert!(url
            .as_str()
            .starts_with("https://tfs.corp/DefaultCollection/Shop/a%2Fb?"));
        assert!(url.as_str().ends_with("api-version=6.0"));
    }

    #[test]
    fn windows_auth_challenges_mean_azure_devops_server() {
        let mut h = HeaderMap::new();
        assert!(!asks_for_windows_auth(&h));
        h.append(
            reqwest::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Negotiate"),
        );
        h.append(
            reqwest::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("NTLM"),
        );
        assert!(asks_for_windows_auth(&h));
        h.append(
            reqwest::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer authorization_uri=https://login.microsoftonline.com/x",
            ),
        );
        assert!(!asks_for_windows_auth(&h));
    }

    #[test]
    fn retry_delays_grow_and_are_bounded() {
        assert_eq!(retry_delay(0), Duration::from_millis(250));
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(10), RETRY_MAX_DELAY);
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8; api-version=7.1"),
        );
        assert!(is_json(&h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        assert!(!is_json(&h));
    }

    #[test]
    fn error_messages_are_one_line_and_redacted() {
        let token = SecretString::new("s3cr3t-pat");
        let body = b"\xEF\xBB\xBF{\"message\":\"TF1: bad\\nthing s3cr3t-pat\"}";
        assert_eq!(
            error_message(body, 500, &token),
            "TF1: bad thing <redacted>"
        );
        assert_eq!(error_message(b"<html>", 500, &token), "HTTP 500");
    }
}
