use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::ado::ListResponse;

const NOW: &str = "2026-03-02T11:00:00Z";
const WEB: &str = "https://dev.azure.com/contoso/Shop/_build/results?buildId=";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

/// A build as ADO sends it: status/result spelled as on the wire, `result` absent when `None`.
fn run(id: i64, status: &str, result: Option<&str>, queued_minutes_ago: i64) -> Build {
    run_on(
        id,
        42,
        "refs/heads/main",
        status,
        result,
        queued_minutes_ago,
    )
}

fn run_on(
    id: i64,
    definition: i64,
    branch: &str,
    status: &str,
    result: Option<&str>,
    queued_minutes_ago: i64,
) -> Build {
    let queued = now()
        .checked_sub(jiff::SignedDuration::from_mins(queued_minutes_ago))
        .unwrap();
    let mut v = json!({
        "id": id,
        "buildNumber": format!("20260302.{id}"),
        "status": status,
        "queueTime": queued.to_string(),
        "sourceBranch": branch,
        "definition": {"id": definition, "name": "base-image"},
        "_links": {"web": {"href": format!("{WEB}{id}")}},
    });
    if let Some(r) = result {
        v["result"] = json!(r);
    }
    serde_json::from_value(v).unwrap()
}

fn fixture_runs(name: &str) -> Vec<Build> {
    let path = format!(
        "{}/tests/fixtures/azure-devops/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<ListResponse<Build>>(&text)
        .unwrap()
        .value
}

fn decide_with(runs: &[Build], policy: &Policy, previous_wait: Option<Waiting>) -> Verdict {
    decide(&DecisionInput {
        runs,
        definition_id: 42,
        branch: "refs/heads/main",
        pipeline_name: None,
        policy,
        now: now(),
        previous_wait,
    })
}

fn verdict(runs: &[Build]) -> Verdict {
    decide_with(runs, &Policy::default(), None)
}

fn policy(accepted: &[BuildResult], ignored: &[BuildResult]) -> Policy {
    Policy {
        accepted: accepted.to_vec(),
        ignored: ignored.to_vec(),
        timeout: DEFAULT_TIMEOUT,
    }
}

fn ids(b: &Option<Build>) -> Option<i64> {
    b.as_ref().map(|b| b.id)
}

// --- one test per row of DESIGN.md's table -------------------------------------------------------

#[test]
fn newest_run_not_started_or_postponed_is_queued() {
    for status in ["notStarted", "postponed"] {
        let v = verdict(&[
            run(2, status, None, 1),
            run(1, "completed", Some("succeeded"), 10),
        ]);
        assert_eq!(v.phase, Phase::Waiting, "{status}");
        assert_eq!(v.reason, Reason::RunQueued, "{status}");
        assert_eq!(
            v.waiting,
            Some(Waiting {
                run_id: 2,
                since: now()
            })
        );
        assert_eq!(
            v.deadline,
            Some(now() + jiff::SignedDuration::from_mins(30))
        );
        assert!(v.message.starts_with("Run 20260302.2 of \"base-image\" is queued; waiting until 2026-03-02T11:30:00Z at most: "), "{}", v.message);
        assert!(v.message.ends_with(&format!("{WEB}2")));
        assert_eq!(ids(&v.last_succeeded_run), Some(1));
    }
}

#[test]
fn newest_run_in_progress_or_cancelling_is_in_progress() {
    for (status, words) in [
        ("inProgress", "is in progress"),
        ("cancelling", "is being canceled"),
        ("canceling", "is being canceled"),
    ] {
        let v = verdict(&[
            run(2, status, None, 1),
            run(1, "completed", Some("failed"), 10),
        ]);
        assert_eq!(v.phase, Phase::Waiting, "{status}");
        assert_eq!(v.reason, Reason::RunInProgress, "{status}");
        assert!(v.message.contains(words), "{status}: {}", v.message);
        assert_eq!(ids(&v.latest_run), Some(2));
        assert_eq!(ids(&v.last_completed_run), Some(1));
    }
}

#[test]
fn waiting_longer_than_the_timeout_blocks() {
    let p = Policy {
        timeout: Duration::from_secs(600),
        ..Policy::default()
    };
    let runs = [run(2, "inProgress", None, 20)];
    let since = now() - jiff::SignedDuration::from_mins(10);
    let v = decide_with(&runs, &p, Some(Waiting { run_id: 2, since }));
    assert_eq!(v.phase, Phase::Blocked);
    assert_eq!(v.reason, Reason::TimedOut);
    assert_eq!(
        v.message,
        format!(
            "Run 20260302.2 of \"base-image\" is still in progress after 10m, the timeout: {WEB}2"
        )
    );
    // The wait stands, so the next poll is timed out too rather than starting over.
    assert_eq!(v.waiting, Some(Waiting { run_id: 2, since }));
    assert_eq!(v.deadline, Some(now()));
}

#[test]
fn timeout_boundary_is_inclusive() {
    let p = Policy {
        timeout: Duration::from_secs(600),
        ..Policy::default()
    };
    let runs = [run(2, "notStarted", None, 20)];
    let exactly = now() - jiff::SignedDuration::from_mins(10);
    let one_ns_later = exactly + jiff::SignedDuration::from_nanos(1);

    let v = decide_with(
        &runs,
        &p,
        Some(Waiting {
            run_id: 2,
            since: one_ns_later,
        }),
    );
    assert_eq!(
        v.reason,
        Reason::RunQueued,
        "1 ns before the deadline still waits"
    );
    assert_eq!(
        v.deadline,
        Some(now() + jiff::SignedDuration::from_nanos(1))
    );

    let v = decide_with(
        &runs,
        &p,
        Some(Waiting {
            run_id: 2,
            since: exactly,
        }),
    );
    assert_eq!(v.reason, Reason::TimedOut, "at the deadline it times out");
    assert!(v.message.contains("still queued"));
}

#[test]
fn a_different_run_in_flight_starts_a_new_wait() {
    let runs = [
        run(3, "inProgress", None, 1),
        run(2, "completed", Some("canceled"), 50),
    ];
    let long_ago = now() - jiff::SignedDuration::from_hours(5);
    let v = decide_with(
        &runs,
        &Policy::default(),
        Some(Waiting {
            run_id: 2,
            since: long_ago,
        }),
    );
    assert_eq!(v.reason, Reason::RunInProgress);
    assert_eq!(
        v.waiting,
        Some(Waiting {
            run_id: 3,
            since: now()
        })
    );
}

#[test]
fn newest_completed_accepted_run_opens() {
    let runs = fixture_runs("builds-list-mixed-results.json");
    let only_success: Vec<Build> = runs.into_iter().filter(|r| r.id == 1203).collect();
    let v = verdict(&only_success);
    assert_eq!(v.phase, Phase::Open);
    assert_eq!(v.reason, Reason::Succeeded);
    assert_eq!(
        v.message,
        "Run 20260302.1 of \"base-ci\" succeeded: https://dev.azure.com/contoso/3f9a6c2e-5b1d-4e8a-9c7f-2d4b6a8e0c11/_build/results?buildId=1203"
    );
    assert_eq!(v.waiting, None);
    assert_eq!(v.deadline, None);
    assert_eq!(ids(&v.last_completed_run), Some(1203));
    assert_eq!(ids(&v.last_succeeded_run), Some(1203));
}

#[test]
fn newest_completed_failure_canceled_or_partial_blocks() {
    for (result, reason, words) in [
        ("failed", Reason::RunFailed, "failed"),
        ("canceled", Reason::RunCanceled, "was canceled"),
        ("cancelled", Reason::RunCanceled, "was canceled"),
        (
            "partiallySucceeded",
            Reason::RunPartiallySucceeded,
            "partially succeeded, which the policy does not accept",
        ),
    ] {
        let v = verdict(&[
            run(2, "completed", Some(result), 5),
            run(1, "completed", Some("succeeded"), 50),
        ]);
        assert_eq!(v.phase, Phase::Blocked, "{result}");
        assert_eq!(v.reason, reason, "{result}");
        assert_eq!(
            v.message,
            format!("Run 20260302.2 of \"base-image\" {words}: {WEB}2")
        );
        assert_eq!(ids(&v.last_completed_run), Some(2));
        assert_eq!(ids(&v.last_succeeded_run), Some(1));
    }
}

#[test]
fn partially_succeeded_opens_when_accepted() {
    let p = policy(
        &[BuildResult::Succeeded, BuildResult::PartiallySucceeded],
        &[],
    );
    let v = decide_with(
        &[run(2, "completed", Some("partiallySucceeded"), 5)],
        &p,
        None,
    );
    assert_eq!(v.phase, Phase::Open);
    assert_eq!(v.reason, Reason::Succeeded);
    assert!(v
        .message
        .contains("partially succeeded (accepted by the policy)"));
    assert_eq!(ids(&v.last_succeeded_run), Some(2));
}

#[test]
fn no_runs_on_the_branch_waits() {
    for runs in [
        vec![],
        vec![run_on(
            1,
            42,
            "refs/heads/develop",
            "completed",
            Some("failed"),
            1,
        )],
    ] {
        let v = verdict(&runs);
        assert_eq!(v.phase, Phase::Waiting);
        assert_eq!(v.reason, Reason::NoRuns);
        assert_eq!(v.latest_run, None);
        assert_eq!(v.waiting, None);
        assert!(
            v.message
                .starts_with("No runs of definition 42 on refs/heads/main yet"),
            "{}",
            v.message
        );
    }
}

#[test]
fn errors_that_retrying_cannot_fix_block() {
    let cases = [
        (
            AdoError::Unauthorized {
                organization: "https://dev.azure.com/contoso".into(),
                status: 203,
            },
            Reason::AuthenticationFailed,
        ),
        (
            AdoError::NotFound {
                what: "Project \"Shop\"".into(),
                message: "TF200016".into(),
            },
            Reason::NotFound,
        ),
        (
            AdoError::InvalidRequest("organization URL is not http(s)".into()),
            Reason::NotFound,
        ),
    ];
    for (err, reason) in cases {
        let v = decide_error(&err).expect("non-transient errors decide");
        assert_eq!(v.phase, Phase::Blocked);
        assert_eq!(v.reason, reason);
        assert_eq!(v.message, err.to_string());
        assert!(!v.message.contains('\n'));
    }
}

#[test]
fn transient_errors_leave_the_verdict_alone() {
    let cases = [
        AdoError::RateLimited {
            organization: "contoso".into(),
            retry_after: Duration::from_secs(5),
        },
        AdoError::Unavailable {
            status: Some(503),
            detail: "TF24668".into(),
        },
        AdoError::Unavailable {
            status: None,
            detail: "timed out".into(),
        },
        AdoError::InvalidResponse {
            endpoint: "build.builds.list".into(),
            detail: "EOF".into(),
        },
    ];
    for err in cases {
        assert_eq!(decide_error(&err), None, "{err}");
    }
}

// --- ordering, filtering, policy ------------------------------------------------------------------

#[test]
fn fixture_matrix_with_policies() {
    let all = fixture_runs("builds-list-mixed-results.json");
    let without = |drop: &[i64]| -> Vec<Build> {
        all.iter()
            .filter(|r| !drop.contains(&r.id))
            .cloned()
            .collect()
    };
    let cases: Vec<(Vec<Build>, Policy, Reason, i64)> = vec![
        (all.clone(), Policy::default(), Reason::RunQueued, 1208),
        (
            without(&[1208]),
            Policy::default(),
            Reason::RunInProgress,
            1207,
        ),
        (
            without(&[1208, 1207]),
            Policy::default(),
            Reason::RunFailed,
            1206,
        ),
        (
            without(&[1208, 1207]),
            policy(&[BuildResult::Succeeded], &[BuildResult::Failed]),
            Reason::RunCanceled,
            1205,
        ),
        (
            without(&[1208, 1207]),
            policy(
                &[BuildResult::Succeeded],
                &[BuildResult::Failed, BuildResult::Canceled],
            ),
            Reason::RunPartiallySucceeded,
            1204,
        ),
        (
            without(&[1208, 1207]),
            policy(
                &[BuildResult::Succeeded, BuildResult::PartiallySucceeded],
                &[BuildResult::Failed, BuildResult::Canceled],
            ),
            Reason::Succeeded,
            1204,
        ),
        (
            without(&[1208, 1207]),
            policy(
                &[BuildResult::Succeeded],
                &[
                    BuildResult::Failed,
                    BuildResult::Canceled,
                    BuildResult::PartiallySucceeded,
                ],
            ),
            Reason::Succeeded,
            1203,
        ),
    ];
    for (runs, p, reason, run_id) in cases {
        let v = decide_with(&runs, &p, None);
        assert_eq!(v.reason, reason, "{p:?}");
        assert!(
            v.message.contains(&format!("buildId={run_id}")),
            "{}",
            v.message
        );
        assert!(v.message.contains("of \"base-ci\""));
        assert_eq!(
            ids(&v.last_succeeded_run),
            Some(if reason == Reason::Succeeded {
                run_id
            } else {
                1203
            })
        );
    }
}

#[test]
fn ignored_results_are_skipped_when_finding_the_newest_completed_run() {
    let runs = [
        run(3, "completed", Some("canceled"), 1),
        run(2, "completed", Some("succeeded"), 10),
    ];
    assert_eq!(verdict(&runs).reason, Reason::RunCanceled);
    let v = decide_with(
        &runs,
        &policy(&[BuildResult::Succeeded], &[BuildResult::Canceled]),
        None,
    );
    assert_eq!(v.phase, Phase::Open);
    assert_eq!(ids(&v.last_completed_run), Some(2));
    assert_eq!(
        ids(&v.latest_run),
        Some(3),
        "the latest run is reported even when ignored"
    );
}

#[test]
fn every_completed_run_ignored_is_like_no_runs() {
    let runs = [run(3, "completed", Some("canceled"), 1)];
    let v = decide_with(
        &runs,
        &policy(&[BuildResult::Succeeded], &[BuildResult::Canceled]),
        None,
    );
    assert_eq!(v.phase, Phase::Waiting);
    assert_eq!(v.reason, Reason::NoRuns);
    assert_eq!(v.last_completed_run, None);
    assert_eq!(ids(&v.latest_run), Some(3));
}

#[test]
fn ignored_results_do_not_hide_runs_in_flight() {
    let runs = [
        run(3, "inProgress", None, 1),
        run(2, "completed", Some("succeeded"), 10),
    ];
    let v = decide_with(
        &runs,
        &policy(&[BuildResult::Succeeded], &[BuildResult::Canceled]),
        None,
    );
    assert_eq!(v.reason, Reason::RunInProgress);
}

#[test]
fn unsorted_input_is_sorted_by_queue_time_then_id() {
    let mut runs = fixture_runs("builds-list-mixed-results.json");
    runs.retain(|r| r.id != 1208 && r.id != 1207);
    runs.reverse();
    assert_eq!(verdict(&runs).reason, Reason::RunFailed);

    // Same queue time: the higher id is newer.
    let a = run(5, "completed", Some("succeeded"), 3);
    let b = run(6, "completed", Some("failed"), 3);
    assert_eq!(verdict(&[a.clone(), b.clone()]).reason, Reason::RunFailed);
    assert_eq!(verdict(&[b, a]).reason, Reason::RunFailed);
}

#[test]
fn real_unordered_list_is_sorted() {
    // builds-list.json was requested without queryOrder: 637 (inProgress), 638 (notStarted), 636, 635.
    let runs = fixture_runs("builds-list.json");
    let v = decide(&DecisionInput {
        runs: &runs,
        definition_id: 178,
        branch: "main",
        pipeline_name: None,
        policy: &Policy::default(),
        now: now(),
        previous_wait: None,
    });
    assert_eq!(v.reason, Reason::RunQueued);
    assert_eq!(ids(&v.latest_run), Some(638));
    assert_eq!(v.waiting.map(|w| w.run_id), Some(638));
    assert_eq!(ids(&v.last_succeeded_run), Some(636));

    let v = decide(&DecisionInput {
        runs: &runs,
        definition_id: 178,
        branch: "azure-pipelines",
        pipeline_name: Some("BuildTests"),
        policy: &Policy::default(),
        now: now(),
        previous_wait: None,
    });
    assert_eq!(v.reason, Reason::Succeeded);
    assert!(
        v.message
            .starts_with("Run 20260401.1 of \"BuildTests\" succeeded: "),
        "{}",
        v.message
    );
}

#[test]
fn runs_of_other_branches_and_definitions_are_ignored() {
    let runs = [
        run_on(9, 42, "refs/heads/develop", "completed", Some("failed"), 1),
        run_on(8, 7, "refs/heads/main", "inProgress", None, 1),
        run_on(7, 42, "refs/heads/main-old", "notStarted", None, 1),
        run(1, "completed", Some("succeeded"), 60),
    ];
    let v = verdict(&runs);
    assert_eq!(v.reason, Reason::Succeeded);
    assert_eq!(ids(&v.latest_run), Some(1));
}

#[test]
fn short_and_differently_cased_branch_names_match() {
    let runs = [run_on(
        1,
        42,
        "refs/heads/Main",
        "completed",
        Some("succeeded"),
        1,
    )];
    let v = decide(&DecisionInput {
        runs: &runs,
        definition_id: 42,
        branch: "main",
        pipeline_name: None,
        policy: &Policy::default(),
        now: now(),
        previous_wait: None,
    });
    assert_eq!(v.reason, Reason::Succeeded);
}

#[test]
fn a_later_success_reopens_after_a_failure() {
    let failed = run(1, "completed", Some("failed"), 60);
    assert_eq!(verdict(std::slice::from_ref(&failed)).phase, Phase::Blocked);
    let rerun = run(2, "inProgress", None, 5);
    assert_eq!(verdict(&[failed.clone(), rerun]).phase, Phase::Waiting);
    let v = verdict(&[failed, run(2, "completed", Some("succeeded"), 5)]);
    assert_eq!(v.phase, Phase::Open);
    assert_eq!(ids(&v.last_succeeded_run), Some(2));
}

#[test]
fn a_timed_out_gate_reopens_when_the_run_finishes_well() {
    let since = now() - jiff::SignedDuration::from_hours(2);
    let prev = Some(Waiting { run_id: 2, since });
    assert_eq!(
        decide_with(
            &[run(2, "inProgress", None, 120)],
            &Policy::default(),
            prev.clone()
        )
        .reason,
        Reason::TimedOut
    );
    let v = decide_with(
        &[run(2, "completed", Some("succeeded"), 120)],
        &Policy::default(),
        prev,
    );
    assert_eq!(v.phase, Phase::Open);
    assert_eq!(v.waiting, None);
}

#[test]
fn unknown_statuses_never_open_the_gate() {
    let v = verdict(&[
        run(2, "brandNew", None, 1),
        run(1, "completed", Some("succeeded"), 10),
    ]);
    assert_eq!(v.phase, Phase::Waiting);
    assert_eq!(v.reason, Reason::RunInProgress);
    // An unknown status with a real result has finished.
    let v = verdict(&[run(2, "brandNew", Some("succeeded"), 1)]);
    assert_eq!(v.reason, Reason::Succeeded);
}

#[test]
fn unknown_results_block() {
    let v = verdict(&[run(2, "completed", Some("sortOfWorked"), 1)]);
    assert_eq!(v.phase, Phase::Blocked);
    assert_eq!(v.reason, Reason::RunFailed);
    assert!(
        v.message.contains("finished with result unknown"),
        "{}",
        v.message
    );
    let v = verdict(&[run(2, "completed", None, 1)]);
    assert_eq!(v.reason, Reason::RunFailed);
}

#[test]
fn names_fall_back_from_policy_name_to_run_to_id() {
    let mut bare = run(4, "completed", Some("failed"), 1);
    bare.definition = Some(crate::ado::DefinitionRef {
        id: Some(42),
        name: None,
        project: None,
    });
    bare.build_number = None;
    bare.links = None;
    assert_eq!(
        verdict(std::slice::from_ref(&bare)).message,
        "Run #4 of definition 42 failed"
    );
    let v = decide(&DecisionInput {
        runs: &[bare],
        definition_id: 42,
        branch: "main",
        pipeline_name: Some("base-image"),
        policy: &Policy::default(),
        now: now(),
        previous_wait: None,
    });
    assert_eq!(v.message, "Run #4 of \"base-image\" failed");
}

#[test]
fn policy_from_spec_maps_results_and_defaults_the_timeout() {
    let spec: crate::crd::GatePolicy = serde_json::from_value(json!({
        "acceptedResults": ["succeeded", "partiallySucceeded"],
        "ignoredResults": ["canceled", "failed"],
        "timeout": "5m"
    }))
    .unwrap();
    let p = Policy::from_spec(&spec);
    assert_eq!(
        p.accepted,
        vec![BuildResult::Succeeded, BuildResult::PartiallySucceeded]
    );
    assert_eq!(p.ignored, vec![BuildResult::Canceled, BuildResult::Failed]);
    assert_eq!(p.timeout, Duration::from_secs(300));

    let d = Policy::default();
    assert_eq!(d.accepted, vec![BuildResult::Succeeded]);
    assert!(d.ignored.is_empty());
    assert_eq!(d.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn reasons_have_their_condition_names() {
    let all = [
        (Reason::RunQueued, "RunQueued"),
        (Reason::RunInProgress, "RunInProgress"),
        (Reason::TimedOut, "TimedOut"),
        (Reason::Succeeded, "Succeeded"),
        (Reason::RunFailed, "RunFailed"),
        (Reason::RunCanceled, "RunCanceled"),
        (Reason::RunPartiallySucceeded, "RunPartiallySucceeded"),
        (Reason::NoRuns, "NoRuns"),
        (Reason::NotFound, "NotFound"),
        (Reason::AuthenticationFailed, "AuthenticationFailed"),
        (Reason::ApiUnavailable, "ApiUnavailable"),
        (Reason::Suspended, "Suspended"),
    ];
    for (r, s) in all {
        assert_eq!(r.as_str(), s);
        assert_eq!(r.to_string(), s);
    }
}

#[test]
fn an_older_run_still_in_flight_keeps_the_gate_waiting() {
    // Run 3 was queued later but finished first; run 2 is still running and may yet fail.
    let runs = [
        run(3, "completed", Some("succeeded"), 5),
        run(2, "inProgress", None, 10),
    ];
    let v = verdict(&runs);
    assert_eq!(v.phase, Phase::Waiting);
    assert_eq!(v.reason, Reason::RunInProgress);
    assert_eq!(v.waiting.map(|w| w.run_id), Some(2));
    assert_eq!(ids(&v.latest_run), Some(3));
    assert_eq!(ids(&v.last_succeeded_run), Some(3));
}
