//! An Azure DevOps simulator: the REST endpoints lockstep reads (Builds, Timeline, Definitions - Get,
//! Git refs, commits, repositories, annotated tags, Pipelines runs, service-hook subscriptions) with
//! the real service's shapes and failure modes, run lifecycles scripted from Rust or over HTTP
//! (`/_sim/...`, see tests/testkit/README.md), fault injection (counted faults and a seeded chaos
//! mode), a request log, and service-hook delivery with per-subscription health.
//!
//! Organization URL = `format!("{}/{}", sim.url(), org)` (dev.azure.com path style).

mod api;
mod chaos;
mod control;
mod control_hooks;
mod definitions;
mod entra_trust;
mod faults;
mod hooks;
mod ids;
mod query;
mod render;
mod requests;
mod state;
mod subscriptions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use chaos::{ChaosConfig, ChaosFault, RetryAfter, RetryAfterForm};
pub use entra_trust::AdoSimOptions;
pub use hooks::{BuildCompleteVersion, HookDelivery, HookEvent, HookOutcome};
pub use requests::AdoRequestRecord;
pub use state::{RunResult, RunStatus};
pub use subscriptions::{HookThresholds, SubscriptionInfo, SubscriptionStatus};

use crate::TestkitError;
use faults::FaultState;
use state::SimState;

/// State shared by the HTTP handlers and the Rust handle.
pub(crate) struct Shared {
    state: Mutex<SimState>,
    faults: Mutex<FaultState>,
    log: Mutex<Vec<AdoRequestRecord>>,
    notification_ids: Mutex<HashMap<String, i64>>,
    hooks: Mutex<subscriptions::HookStore>,
    entra: Mutex<entra_trust::EntraTrust>,
    base_url: String,
    http: reqwest::Client,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not take the simulator down for the others.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.state)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.faults)
    }

    pub(crate) fn hooks(&self) -> MutexGuard<'_, subscriptions::HookStore> {
        lock(&self.hooks)
    }

    pub(crate) fn log(&self, record: AdoRequestRecord) {
        lock(&self.log).push(record);
    }

    fn next_notification_id(&self, subscription: &str) -> i64 {
        let mut ids = lock(&self.notification_ids);
        let n = ids.entry(subscription.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    fn run_info(&self, id: i64) -> Option<RunInfo> {
        let state = self.state();
        let (org, run) = state.find_run(id)?;
        Some(RunInfo {
            id: run.id,
            organization: org.name.clone(),
            project_id: run.project_id.clone(),
            definition_id: run.definition_id,
            build_number: run.build_number.clone(),
            source_branch: run.branch.clone(),
            source_version: run.commit.clone(),
            status: run.status,
            result: run.result,
            web_url: format!(
                "{}/{}/{}/_build/results?buildId={}",
                self.base_url, org.name, run.project_id, run.id
            ),
        })
    }

    fn hook_payload(
        &self,
        event: &HookEvent,
        delivery: &HookDelivery,
    ) -> Result<Value, TestkitError> {
        let subscription = delivery.subscription_id.clone().unwrap_or_else(|| {
            ids::stable_guid(&format!(
                "subscription/{}/{}",
                delivery.url,
                event.event_type()
            ))
        });
        let notification_id = self.next_notification_id(&subscription);
        let delivery = HookDelivery {
            subscription_id: Some(subscription),
            ..delivery.clone()
        };
        hooks::payload(
            &self.state(),
            &self.base_url,
            event,
            &delivery,
            notification_id,
        )
    }

    async fn deliver_hook(
        &self,
        event: &HookEvent,
        delivery: &HookDelivery,
    ) -> Result<HookOutcome, TestkitError> {
        let payload = self.hook_payload(event, delivery)?;
        let event_id = payload["id"].as_str().unwrap_or_default().to_string();
        let subscription = payload["subscriptionId"].as_str().unwrap_or_default();
        let known = self.hooks().find(subscription);
        if let Some(sub) = known.as_ref().filter(|s| !s.status.delivers()) {
            return Ok(HookOutcome {
                status: 0,
                event_id,
                delivered: false,
                subscription_status: Some(sub.status),
            });
        }
        match hooks::post(&self.http, &payload, delivery).await {
            Ok(status) => Ok(HookOutcome {
                status,
                event_id,
                delivered: true,
                subscription_status: self.hooks().record_delivery(subscription, Some(status)),
            }),
            Err(e) => {
                // No answer is a failed delivery too.
                self.hooks().record_delivery(subscription, None);
                Err(e)
            }
        }
    }

    /// Delivers `event` as subscription `id` would: to its `consumerInputs.url` with its Basic
    /// credentials, `httpHeaders` (`Name:value` lines) and `messagesToSend: none`.
    async fn deliver_to_subscription(
        &self,
        org: &str,
        id: &str,
        event: &HookEvent,
    ) -> Result<HookOutcome, TestkitError> {
        let sub = self
            .hooks()
            .info(org, id)
            .ok_or_else(|| TestkitError::NotFound {
                what: "service-hook subscription",
                detail: format!("{id} in {org}"),
            })?;
        if sub.event_type != event.event_type() {
            return Err(TestkitError::InvalidSetup(format!(
                "subscription {id} is for {}, not {}; Azure DevOps would not send it this event",
                sub.event_type,
                event.event_type()
            )));
        }
        let inputs = &sub.consumer_inputs;
        let mut delivery = HookDelivery::to(inputs.get("url").cloned().unwrap_or_default())
            .subscription_id(sub.id.clone());
        if let Some(user) = inputs.get("basicAuthUsername").filter(|u| !u.is_empty()) {
            let password = inputs.get("basicAuthPassword").cloned().unwrap_or_default();
            delivery = delivery.basic_auth(user.clone(), password);
        }
        for line in inputs
            .get("httpHeaders")
            .into_iter()
            .flat_map(|h| h.lines())
        {
            if let Some((name, value)) = line.split_once(':') {
                delivery = delivery.header(name.trim(), value.trim());
            }
        }
        if inputs
            .get("messagesToSend")
            .is_some_and(|m| m.eq_ignore_ascii_case("none"))
        {
            delivery = delivery.without_messages();
        }
        self.deliver_hook(event, &delivery).await
    }
}

/// What a test may want to know about a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunInfo {
    pub id: i64,
    pub organization: String,
    pub project_id: String,
    pub definition_id: i64,
    pub build_number: String,
    pub source_branch: String,
    pub source_version: String,
    #[serde(serialize_with = "ser_status")]
    pub status: RunStatus,
    pub result: Option<RunResult>,
    /// `_links.web.href` of the build.
    pub web_url: String,
}

fn ser_status<S: serde::Serializer>(s: &RunStatus, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// A running simulator. Clones share it (e.g. a background task that completes runs); dropping the
/// last clone stops the server.
#[derive(Clone)]
pub struct AdoSimulator {
    shared: Arc<Shared>,
    _shutdown: Arc<crate::tls::ServerHandle>,
    addr: std::net::SocketAddr,
}

/// Runs `f` and panics with its error: the infallible-looking API of the test kit, for tests where a
/// setup mistake should fail the test on the spot.
#[track_caller]
fn or_panic<T>(what: &str, r: Result<T, TestkitError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("AdoSimulator::{what}: {e}"),
    }
}

impl AdoSimulator {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port, inside the current tokio runtime.
    pub async fn start() -> Result<AdoSimulator, TestkitError> {
        Self::start_with(AdoSimOptions::default()).await
    }

    /// `http://127.0.0.1:{port}` (or the HTTPS / public URL of [`AdoSimOptions`]).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The organization URL clients are configured with: `{url}/{org}`.
    pub fn org_url(&self, org: &str) -> String {
        format!("{}/{org}", self.shared.base_url)
    }

    // ----- set-up -------------------------------------------------------------------------------

    /// Makes `pat` a valid PAT for `org` (creating the organization). Any other credential gets the
    /// real service's answer: 203 + HTML, or 401 when `X-TFS-FedAuthRedirect: Suppress` is sent.
    #[track_caller]
    pub fn add_token(&self, org: &str, pat: &str) {
        or_panic("add_token", self.shared.state().add_token(org, pat))
    }

    /// Makes a PAT invalid again (an expired or revoked token).
    pub fn revoke_token(&self, org: &str, pat: &str) -> Result<(), TestkitError> {
        self.shared.state().revoke_token(org, pat)
    }

    /// Adds a project (idempotent) and returns its GUID.
    #[track_caller]
    pub fn add_project(&self, org: &str, project: &str) -> String {
        or_panic("add_project", self.shared.state().add_project(org, project))
    }

    /// The GUID of a project, looked up by name (any case) or id.
    pub fn project_id(&self, org: &str, project: &str) -> Option<String> {
        let state = self.shared.state();
        Some(state.org(org)?.project(project)?.id.clone())
    }

    /// Adds a pipeline definition that builds the repository named like the project.
    #[track_caller]
    pub fn add_definition(&self, org: &str, project: &str, id: i64, name: &str) {
        or_panic(
            "add_definition",
            self.shared
                .state()
                .add_definition(org, project, id, name, None),
        )
    }

    /// Adds a pipeline definition that builds `repository` (used for the commit default and the
    /// build's `repository` object).
    #[track_caller]
    pub fn add_definition_for_repository(
        &self,
        org: &str,
        project: &str,
        id: i64,
        name: &str,
        repository: &str,
    ) {
        or_panic(
            "add_definition_for_repository",
            self.shared
                .state()
                .add_definition(org, project, id, name, Some(repository)),
        )
    }

    /// Adds a Git repository with branches (`("main", sha)`, short or full names) and returns its
    /// GUID. The first branch is the default branch.
    #[track_caller]
    pub fn add_repository(
        &self,
        org: &str,
        project: &str,
        name: &str,
        branches: &[(&str, &str)],
    ) -> String {
        or_panic(
            "add_repository",
            self.shared
                .state()
                .add_repository(org, project, name, branches),
        )
    }

    /// Creates `refs/tags/{name}` pointing at `target`; returns the ref's objectId (the tag object for
    /// an annotated tag, which Annotated Tags - Get resolves to `target`).
    #[track_caller]
    pub fn add_tag(
        &self,
        org: &str,
        project: &str,
        repository: &str,
        name: &str,
        target: &str,
        annotated: bool,
    ) -> String {
        or_panic(
            "add_tag",
            self.shared
                .state()
                .add_tag(org, project, repository, name, target, annotated),
        )
    }

    // ----- run lifecycle ------------------------------------------------------------------------

    /// Queues a run (status `notStarted`) of `definition_id` on `branch` (short or full ref) at
    /// `commit`, and returns its id (= build id = run id). Ids are unique across the simulator and
    /// increase monotonically.
    #[track_caller]
    pub fn queue_run(
        &self,
        org: &str,
        project: &str,
        definition_id: i64,
        branch: &str,
        commit: &str,
    ) -> i64 {
        or_panic(
            "queue_run",
            self.try_queue_run(org, project, definition_id, branch, Some(commit)),
        )
    }

    /// [`queue_run`](Self::queue_run) without panicking; `commit: None` takes the branch head of the
    /// definition's repository.
    pub fn try_queue_run(
        &self,
        org: &str,
        project: &str,
        definition_id: i64,
        branch: &str,
        commit: Option<&str>,
    ) -> Result<i64, TestkitError> {
        self.shared
            .state()
            .queue_run(org, project, definition_id, branch, commit)
    }

    /// `notStarted` → `inProgress` (sets `startTime`).
    #[track_caller]
    pub fn start_run(&self, id: i64) {
        or_panic("start_run", self.shared.state().start_run(None, id))
    }

    /// → `cancelling`; finish the cancellation with `complete_run(id, RunResult::Canceled)`.
    #[track_caller]
    pub fn cancel_run(&self, id: i64) {
        or_panic("cancel_run", self.shared.state().cancel_run(None, id))
    }

    /// → `completed` with `result` (sets `finishTime`).
    #[track_caller]
    pub fn complete_run(&self, id: i64, result: RunResult) {
        or_panic(
            "complete_run",
            self.shared.state().complete_run(None, id, result),
        )
    }

    /// Fallible forms of the lifecycle steps, for tests of misuse.
    pub fn try_start_run(&self, id: i64) -> Result<(), TestkitError> {
        self.shared.state().start_run(None, id)
    }

    pub fn try_cancel_run(&self, id: i64) -> Result<(), TestkitError> {
        self.shared.state().cancel_run(None, id)
    }

    pub fn try_complete_run(&self, id: i64, result: RunResult) -> Result<(), TestkitError> {
        self.shared.state().complete_run(None, id, result)
    }

    /// The run as the simulator holds it.
    pub fn run(&self, id: i64) -> Option<RunInfo> {
        self.shared.run_info(id)
    }

    /// Moves `branch` of `repository` to `new_sha` (creating the branch if needed) and returns the push
    /// id, for [`HookEvent::GitPush`].
    #[track_caller]
    pub fn push(
        &self,
        org: &str,
        project: &str,
        repository: &str,
        branch: &str,
        new_sha: &str,
    ) -> i64 {
        or_panic(
            "push",
            self.shared
                .state()
                .push(org, project, repository, branch, new_sha),
        )
    }

    /// [`Self::push`] of a commit whose committer (and author) date is `committed` rather than the push
    /// time, like a commit made some time before it was pushed. Git dates have whole seconds, so
    /// Commits - Get Commits shows `committed` truncated to the second.
    #[track_caller]
    pub fn push_committed_at(
        &self,
        org: &str,
        project: &str,
        repository: &str,
        branch: &str,
        new_sha: &str,
        committed: jiff::Timestamp,
    ) -> i64 {
        or_panic(
            "push_committed_at",
            self.shared.state().push_committed_at(
                org,
                project,
                repository,
                branch,
                new_sha,
                Some(committed),
            ),
        )
    }

    // ----- request log --------------------------------------------------------------------------

    pub fn requests(&self) -> Vec<AdoRequestRecord> {
        lock(&self.shared.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Requests whose path contains `path_contains` (case-insensitive).
    pub fn count_requests(&self, path_contains: &str) -> usize {
        let needle = path_contains.to_ascii_lowercase();
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.path.to_ascii_lowercase().contains(&needle))
            .count()
    }

    /// Requests of one endpoint kind (`"builds.list"`, `"git.refs"`, ... see [`AdoRequestRecord`]).
    pub fn count_endpoint(&self, endpoint: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    // ----- faults -------------------------------------------------------------------------------

    /// The next `n` REST requests fail with `status` (an ADO error body; 429 gets the rate-limit
    /// headers).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.shared.faults().fail_next(n, status);
    }

    /// The next `n` REST requests get 429 with `Retry-After: retry_after_secs`, the `X-RateLimit-*`
    /// headers and the TF400733 message.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        self.shared
            .faults()
            .rate_limit_next(n, RetryAfter::seconds(retry_after_secs));
    }

    /// The next `n` REST requests get 429 with the chosen timing hint: `Retry-After` in seconds or
    /// as an HTTP date (`RetryAfter::http_date`), or no `Retry-After` and only `X-RateLimit-Reset`
    /// (`RetryAfter::reset_only`).
    pub fn rate_limit_next_with(&self, n: u32, retry_after: RetryAfter) {
        self.shared.faults().rate_limit_next(n, retry_after);
    }

    /// The next `n` REST requests get 203 + the HTML sign-in page whatever their credentials (a
    /// token that expired mid-flight).
    pub fn sign_in_page_next(&self, n: u32) {
        self.shared.faults().sign_in_page_next(n);
    }

    /// The next `n` successful JSON answers are padded to `mib` MiB (at most 1024) and streamed;
    /// still valid JSON (one extra member, `simulatorPadding`). With `declare_length` the
    /// `Content-Length` is sent up front, otherwise the body is chunked.
    pub fn oversize_next(&self, n: u32, mib: u32, declare_length: bool) {
        self.shared
            .faults()
            .oversize_next(n, faults::Oversize::mib(mib, declare_length));
    }

    /// Starts the chaos mode: each REST request draws a fault from `config.faults` with
    /// probability `config.rate`, from a generator seeded with `config.seed`. It stops after
    /// `config.max_faults`, on [`stop_chaos`](Self::stop_chaos) and on
    /// [`clear_faults`](Self::clear_faults). Fails on an empty fault set, a rate outside [0, 1] or
    /// an oversize over 1024 MiB.
    pub fn chaos(&self, config: ChaosConfig) -> Result<(), TestkitError> {
        self.shared
            .faults()
            .start_chaos(&config)
            .map_err(TestkitError::InvalidSetup)
    }

    pub fn stop_chaos(&self) {
        self.shared.faults().stop_chaos();
    }

    /// How many faults of each kind chaos injected since it was last started (`status.503`,
    /// `rateLimit.seconds`, `rateLimit.httpDate`, `rateLimit.resetOnly`, `signInPage`, `truncate`,
    /// `oversize`); kept after it stops.
    pub fn chaos_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared.faults().chaos_counts()
    }

    /// The next `n` successful responses carry `Retry-After` and `X-RateLimit-*` (the service warns
    /// before it blocks; the status stays 200).
    pub fn retry_after_next(&self, n: u32, retry_after_secs: u64) {
        self.shared
            .faults()
            .retry_after_on_success_next(n, retry_after_secs);
    }

    /// Delays every REST response by `delay` (`Duration::ZERO` turns it off).
    pub fn delay(&self, delay: Duration) {
        self.shared.faults().delay = delay;
    }

    /// The next `n` successful JSON bodies are cut in half.
    pub fn truncate_next(&self, n: u32) {
        self.shared.faults().truncate_next(n);
    }

    /// Error bodies start with a UTF-8 BOM, as some real ones do.
    pub fn error_bom(&self, on: bool) {
        self.shared.faults().error_bom = on;
    }

    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    // ----- service hooks ------------------------------------------------------------------------

    /// The envelope that [`deliver_hook`](Self::deliver_hook) would send (it counts as a delivery for
    /// the subscription's `notificationId`).
    pub fn hook_payload(
        &self,
        event: &HookEvent,
        delivery: &HookDelivery,
    ) -> Result<Value, TestkitError> {
        self.shared.hook_payload(event, delivery)
    }

    /// POSTs `event` to `delivery.url` as the Web Hooks consumer does, with the chosen Basic
    /// credentials and headers, and returns the receiver's status and the event id. When
    /// `delivery.subscription_id` names a subscription created through the Subscriptions API, the
    /// attempt counts for its health (see [`HookThresholds`]), and nothing is sent while it is
    /// disabled (`delivered: false`).
    pub async fn deliver_hook(
        &self,
        event: HookEvent,
        delivery: &HookDelivery,
    ) -> Result<HookOutcome, TestkitError> {
        self.shared.deliver_hook(&event, delivery).await
    }

    // ----- service-hook subscriptions -----------------------------------------------------------

    /// Restricts a PAT to `scopes` (`vso.build`, `vso.code`, `vso.hooks`, `vso.hooks_write`, ...)
    /// for the Subscriptions API; `None` gives it full access again (the default). A token with no
    /// scope of that API gets 401 `TF400813`; reads of event types its scopes do not cover are
    /// filtered from lists and 404 on Get; writes get 403. Other endpoints ignore scopes.
    pub fn set_token_scopes(&self, org: &str, pat: &str, scopes: Option<&[&str]>) {
        self.shared.hooks().set_scopes(
            org,
            pat,
            scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
        );
    }

    /// Creates a subscription from a Subscriptions - Create body (as `POST
    /// {org}/_apis/hooks/subscriptions` would) and returns its id.
    pub fn add_subscription(&self, org: &str, body: &Value) -> Result<String, TestkitError> {
        let state = self.shared.state();
        self.shared.hooks().create(&state, org, body)
    }

    pub fn subscription(&self, org: &str, id: &str) -> Option<SubscriptionInfo> {
        self.shared.hooks().info(org, id)
    }

    pub fn subscriptions(&self, org: &str) -> Vec<SubscriptionInfo> {
        self.shared.hooks().list(org)
    }

    /// Puts a subscription into `status` directly (`probation_retries` counts only for
    /// `OnProbation`), as the service does after failed deliveries or a user in the web UI.
    pub fn set_subscription_status(
        &self,
        org: &str,
        id: &str,
        status: SubscriptionStatus,
        probation_retries: u32,
    ) -> Result<SubscriptionInfo, TestkitError> {
        self.shared
            .hooks()
            .set_status(org, id, status, probation_retries)
    }

    /// How many failed deliveries move a subscription on probation and then disable it.
    pub fn set_hook_thresholds(&self, thresholds: HookThresholds) {
        self.shared.hooks().thresholds = thresholds;
    }

    /// Delivers `event` through subscription `id` (its URL, credentials, headers and message
    /// settings) and records the outcome for its health; nothing is sent while it is disabled.
    pub async fn deliver_to_subscription(
        &self,
        org: &str,
        id: &str,
        event: HookEvent,
    ) -> Result<HookOutcome, TestkitError> {
        self.shared.deliver_to_subscription(org, id, &event).await
    }
}
