//! Which subscriptions cover a pipeline, and what `lockstep hooks sync` must change. Pure.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::model::Subscription;
use crate::crd::{HookCoverage, HookCoverageState};

pub const RUN_STATE_CHANGED: &str = "ms.vss-pipelines.run-state-changed-event";
pub const STAGE_STATE_CHANGED: &str = "ms.vss-pipelines.stage-state-changed-event";
pub const JOB_STATE_CHANGED: &str = "ms.vss-pipelines.job-state-changed-event";
pub const BUILD_COMPLETE: &str = "build.complete";
pub const GIT_PUSH: &str = "git.push";
/// `status.hooks.subscriptions` lists at most this many ids.
const MAX_LISTED: usize = 16;

/// Whether `sub` delivers events about pipeline `definition_id` of the project with id `project_id`: an
/// event type lockstep uses for gates, the project (or none) in its filter, and no pipeline filter that
/// excludes this one. A `build.complete` filtered by `definitionName` is not counted: the name is not
/// what a gate follows.
pub fn covers_pipeline(sub: &Subscription, project_id: &str, definition_id: i64) -> bool {
    let inputs = &sub.publisher_inputs;
    let project_ok = inputs
        .get("projectId")
        .is_none_or(|p| p.is_empty() || p.eq_ignore_ascii_case(project_id));
    let filter_ok = |key: &str| {
        inputs
            .get(key)
            .is_none_or(|v| v.is_empty() || v.trim() == definition_id.to_string())
    };
    project_ok
        && match sub.event_type.as_str() {
            RUN_STATE_CHANGED | STAGE_STATE_CHANGED | JOB_STATE_CHANGED => filter_ok("pipelineId"),
            BUILD_COMPLETE => inputs.get("definitionName").is_none_or(|v| v.is_empty()),
            _ => false,
        }
}

/// Whether `sub` delivers pushes to `repository` (as the trace spells it: name or id) in the project
/// with id `project_id`: a `git.push` with the project (or none) and no repository filter naming
/// another repository. A filter holding the repository's id while the trace names it (or the reverse)
/// does not count: telling them equal would cost a Repositories - Get per repository and period.
pub fn covers_repository(sub: &Subscription, project_id: &str, repository: &str) -> bool {
    let inputs = &sub.publisher_inputs;
    sub.event_type == GIT_PUSH
        && inputs
            .get("projectId")
            .is_none_or(|p| p.is_empty() || p.eq_ignore_ascii_case(project_id))
        && inputs
            .get("repository")
            .is_none_or(|r| r.is_empty() || r.trim().eq_ignore_ascii_case(repository.trim()))
}

/// The Web Hooks subscriptions (to `receiver_url` when known) among `subs` that `covers` accepts.
fn covering<'a>(
    subs: &'a [Subscription],
    receiver_url: Option<&str>,
    covers: impl Fn(&Subscription) -> bool,
) -> Vec<&'a Subscription> {
    subs.iter()
        .filter(|s| covers(s))
        .filter(|s| match receiver_url {
            Some(url) => s.posts_to(url),
            None => s.consumer_id == "webHooks",
        })
        .collect()
}

/// How one thing (a pipeline, a repository) is covered: Covered, Degraded or NotCovered.
fn state_of(covering: &[&Subscription]) -> HookCoverageState {
    if covering.is_empty() {
        HookCoverageState::NotCovered
    } else if covering.iter().any(|s| s.is_healthy()) {
        HookCoverageState::Covered
    } else {
        HookCoverageState::Degraded
    }
}

fn unhealthy_list(covering: &[&Subscription]) -> String {
    covering
        .iter()
        .take(MAX_LISTED)
        .map(|s| format!("{} is {}", s.id, s.state()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ids_of<'a>(covering: impl IntoIterator<Item = &'a Subscription>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for s in covering {
        if ids.len() == MAX_LISTED {
            break;
        }
        if !ids.contains(&s.id) {
            ids.push(s.id.clone());
        }
    }
    ids
}

/// `status.hooks` for a gate: the Web Hooks subscriptions (to `receiver_url` when known) covering it.
pub fn pipeline_coverage(
    subs: &[Subscription],
    project_id: &str,
    definition_id: i64,
    receiver_url: Option<&str>,
) -> HookCoverage {
    let covering = covering(subs, receiver_url, |s| {
        covers_pipeline(s, project_id, definition_id)
    });
    let state = state_of(&covering);
    let message = match state {
        HookCoverageState::NotCovered => "no service-hook subscription delivers this pipeline's events to lockstep; run `lockstep hooks sync` (polling still works)".to_string(),
        HookCoverageState::Covered => "an enabled service-hook subscription covers this pipeline".to_string(),
        _ => format!(
            "no enabled subscription covers this pipeline ({}); Azure DevOps drops events meanwhile; run `lockstep hooks sync` to re-enable",
            unhealthy_list(&covering)
        ),
    };
    HookCoverage {
        state,
        subscriptions: ids_of(covering),
        message,
    }
}

/// `status.hooks` for a trace: its CI pipeline (pipeline events or `build.complete`) and each repository
/// it reads (`git.push`). Covered only when every one of them is; otherwise Degraded when one is covered
/// only by subscriptions on probation or disabled, else NotCovered; the message names what is missing.
pub fn trace_coverage(
    subs: &[Subscription],
    project_id: &str,
    definition_id: i64,
    repositories: &[&str],
    receiver_url: Option<&str>,
) -> HookCoverage {
    let pipeline = covering(subs, receiver_url, |s| {
        covers_pipeline(s, project_id, definition_id)
    });
    let mut parts = vec![(format!("CI pipeline {definition_id}"), pipeline)];
    for repo in repositories {
        parts.push((
            format!("git.push of repository {repo}"),
            covering(subs, receiver_url, |s| {
                covers_repository(s, project_id, repo)
            }),
        ));
    }
    let states: Vec<HookCoverageState> = parts.iter().map(|(_, c)| state_of(c)).collect();
    let state = if states.iter().all(|s| *s == HookCoverageState::Covered) {
        HookCoverageState::Covered
    } else if states.contains(&HookCoverageState::Degraded) {
        HookCoverageState::Degraded
    } else {
        HookCoverageState::NotCovered
    };
    let message = if state == HookCoverageState::Covered {
        "enabled service-hook subscriptions cover the CI pipeline and every repository".to_string()
    } else {
        let gaps: Vec<String> = parts
            .iter()
            .zip(&states)
            .filter_map(|((what, c), s)| match s {
                HookCoverageState::NotCovered => Some(format!("{what}: no subscription")),
                HookCoverageState::Degraded => Some(format!("{what}: {}", unhealthy_list(c))),
                _ => None,
            })
            .collect();
        format!(
            "not every event reaches lockstep ({}); run `lockstep hooks sync` (polling still works)",
            gaps.join("; ")
        )
    };
    HookCoverage {
        state,
        subscriptions: ids_of(parts.iter().flat_map(|(_, c)| c.iter().copied())),
        message,
    }
}

/// One subscription `lockstep hooks sync` wants.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    pub project_id: String,
    pub publisher_id: &'static str,
    pub event_type: &'static str,
    pub resource_version: &'static str,
    /// `url`, credentials, and the message settings.
    pub consumer_inputs: BTreeMap<String, String>,
}

/// The event types `hooks sync` can create, by their flag names, with docs/webhooks.md's publisher and
/// resource version.
pub fn event_spec(name: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match name {
        "run-state-changed" => Some(("pipelines", RUN_STATE_CHANGED, "5.1-preview.1")),
        "build-complete" => Some(("tfs", BUILD_COMPLETE, "2.0")),
        "git-push" => Some(("tfs", GIT_PUSH, "1.0")),
        "stage-state-changed" => Some(("pipelines", STAGE_STATE_CHANGED, "5.1-preview.1")),
        _ => None,
    }
}

impl Wanted {
    /// The Create/Replace body. Secrets are in it: never print it.
    pub fn body(&self, enable: bool) -> Value {
        let mut body = json!({
            "publisherId": self.publisher_id,
            "eventType": self.event_type,
            "resourceVersion": self.resource_version,
            "consumerId": "webHooks",
            "consumerActionId": "httpRequest",
            "publisherInputs": {"projectId": self.project_id},
            "consumerInputs": self.consumer_inputs,
        });
        if enable {
            body["status"] = json!("enabled");
        }
        body
    }

    fn url(&self) -> &str {
        self.consumer_inputs
            .get("url")
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// What `hooks sync` does for one wanted subscription.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Already there, enabled and pointing at the receiver as wanted.
    Keep { id: String },
    /// Missing: create it.
    Create,
    /// There but disabled, on probation, or with other inputs: replace it (enabled, wanted inputs).
    Replace { id: String, why: String },
}

/// The plan: for each wanted subscription, the existing one that is lockstep's (Web Hooks to the same
/// URL, same event type and project) and what to do. Subscriptions to other URLs are never touched.
pub fn plan(wanted: &[Wanted], existing: &[Subscription]) -> Vec<(Wanted, Action)> {
    wanted
        .iter()
        .map(|w| {
            let mine = existing.iter().find(|s| {
                s.posts_to(w.url())
                    && s.event_type == w.event_type
                    && s.publisher_inputs
                        .get("projectId")
                        .is_some_and(|p| p.eq_ignore_ascii_case(&w.project_id))
            });
            let action = match mine {
                None => Action::Create,
                Some(s) => {
                    let mut why = Vec::new();
                    if !s.is_healthy() {
                        why.push(format!("is {}", s.state()));
                    }
                    if s.resource_version.as_deref() != Some(w.resource_version) {
                        why.push("has another resourceVersion".to_string());
                    }
                    for (k, v) in &w.consumer_inputs {
                        let have = s.consumer_inputs.get(k).map(String::as_str);
                        // Azure DevOps reads confidential inputs back masked: equal as far as can be told.
                        if have != Some(v.as_str()) && have != Some("********") {
                            why.push(format!("has another {k}"));
                        }
                    }
                    if why.is_empty() {
                        Action::Keep { id: s.id.clone() }
                    } else {
                        Action::Replace {
                            id: s.id.clone(),
                            why: why.join(", "),
                        }
                    }
                }
            };
            (w.clone(), action)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, event: &str, inputs: &[(&str, &str)], status: Option<&str>) -> Subscription {
        Subscription {
            id: id.into(),
            status: status.map(str::to_string),
            publisher_id: "pipelines".into(),
            event_type: event.into(),
            resource_version: Some("5.1-preview.1".into()),
            consumer_id: "webHooks".into(),
            consumer_action_id: "httpRequest".into(),
            publisher_inputs: inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            consumer_inputs: [(
                "url".to_string(),
                "https://h/hooks/azure-devops".to_string(),
            )]
            .into(),
        }
    }

    #[test]
    fn coverage_needs_the_project_and_a_matching_pipeline_filter() {
        let subs = [
            sub(
                "a",
                RUN_STATE_CHANGED,
                &[("projectId", "P1"), ("pipelineId", "7")],
                None,
            ),
            sub("b", RUN_STATE_CHANGED, &[("projectId", "P2")], None),
            sub("c", GIT_PUSH, &[("projectId", "P1")], None),
        ];
        assert!(covers_pipeline(&subs[0], "p1", 7));
        assert!(!covers_pipeline(&subs[0], "P1", 8));
        assert!(!covers_pipeline(&subs[1], "P1", 7));
        assert!(!covers_pipeline(&subs[2], "P1", 7));
        let cov = pipeline_coverage(&subs, "P1", 7, Some("https://h/hooks/azure-devops/"));
        assert_eq!(cov.state, HookCoverageState::Covered);
        assert_eq!(cov.subscriptions, ["a"]);
        assert_eq!(
            pipeline_coverage(&subs, "P1", 7, Some("https://elsewhere")).state,
            HookCoverageState::NotCovered
        );
    }

    #[test]
    fn only_unhealthy_covering_subscriptions_are_degraded() {
        let subs = [sub(
            "a",
            RUN_STATE_CHANGED,
            &[("projectId", "P1")],
            Some("onProbation"),
        )];
        let cov = pipeline_coverage(&subs, "P1", 7, None);
        assert_eq!(cov.state, HookCoverageState::Degraded);
        assert!(cov.message.contains("a is onProbation"), "{}", cov.message);
    }

    fn wanted() -> Wanted {
        Wanted {
            project_id: "P1".into(),
            publisher_id: "pipelines",
            event_type: RUN_STATE_CHANGED,
            resource_version: "5.1-preview.1",
            consumer_inputs: [
                (
                    "url".to_string(),
                    "https://h/hooks/azure-devops".to_string(),
                ),
                ("basicAuthPassword".to_string(), "pw".to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn the_plan_creates_re_enables_and_keeps_leaving_other_urls_alone() {
        let w = wanted();
        assert_eq!(plan(std::slice::from_ref(&w), &[])[0].1, Action::Create);
        let mut healthy = sub("a", RUN_STATE_CHANGED, &[("projectId", "p1")], None);
        healthy
            .consumer_inputs
            .insert("basicAuthPassword".into(), "********".into());
        assert_eq!(
            plan(std::slice::from_ref(&w), &[healthy.clone()])[0].1,
            Action::Keep { id: "a".into() }
        );
        let mut probation = healthy.clone();
        probation.status = Some("disabledBySystem".into());
        assert!(matches!(
            &plan(std::slice::from_ref(&w), &[probation])[0].1,
            Action::Replace { id, why } if id == "a" && why.contains("disabledBySystem")
        ));
        let mut elsewhere = healthy;
        elsewhere
            .consumer_inputs
            .insert("url".into(), "https://other/hook".into());
        assert_eq!(plan(&[w], &[elsewhere])[0].1, Action::Create);
    }

    #[test]
    fn a_trace_is_covered_only_with_its_pipeline_and_every_repository() {
        let mut push = sub("p", GIT_PUSH, &[("projectId", "P1")], None);
        push.publisher_id = "tfs".into();
        let run = sub("r", RUN_STATE_CHANGED, &[("projectId", "P1")], None);
        let repos = ["manifests", "hld"];
        let cov = trace_coverage(&[run.clone(), push.clone()], "p1", 7, &repos, None);
        assert_eq!(cov.state, HookCoverageState::Covered, "{}", cov.message);
        assert_eq!(cov.subscriptions, ["r", "p"]);

        let cov = trace_coverage(std::slice::from_ref(&run), "P1", 7, &repos, None);
        assert_eq!(cov.state, HookCoverageState::NotCovered);
        assert!(
            cov.message
                .contains("git.push of repository manifests: no subscription"),
            "{}",
            cov.message
        );

        let mut filtered = push.clone();
        filtered
            .publisher_inputs
            .insert("repository".into(), "other-repo".into());
        assert!(!covers_repository(&filtered, "P1", "manifests"));
        filtered
            .publisher_inputs
            .insert("repository".into(), "Manifests".into());
        assert!(covers_repository(&filtered, "P1", "manifests"));

        let mut probation = push;
        probation.status = Some("disabledBySystem".into());
        let cov = trace_coverage(&[run, probation], "P1", 7, &repos, None);
        assert_eq!(cov.state, HookCoverageState::Degraded);
        assert!(
            cov.message.contains("p is disabledBySystem"),
            "{}",
            cov.message
        );
    }
}
