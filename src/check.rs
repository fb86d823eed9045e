//! `lockstep check`: the PipelineGate decision without Kubernetes, for the first step of a pipeline that
//! must not run while its base pipeline is running or broken. It replaces the "poll the Builds API until the
//! base pipeline is done" scripts: one line per poll naming the run, then an exit code a pipeline can act on.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use crate::ado::{AdoClient, ClientConfig};
use crate::crd::{AcceptableResult, GatePolicy, IgnorableResult};
use crate::pipeline_gate::{
    decide, decide_error, DecisionInput, Phase, Policy, Reason, Verdict, Waiting,
};
use crate::pipeline_key::{full_branch_ref, OrgKey};
use crate::secret::SecretString;

/// Environment variables the token is read from, in order. Never a flag: flags show up in process lists.
pub const TOKEN_VARIABLES: [&str; 2] = ["AZURE_DEVOPS_EXT_PAT", "SYSTEM_ACCESSTOKEN"];

/// Runs read per poll: enough to see past runs in flight and ignored results to the newest decisive one.
const RUNS_PER_POLL: u32 = 25;

/// Check whether the newest run of an Azure DevOps pipeline on a branch succeeded (exit 0 open,
/// 1 blocked, 2 timed out, 3 usage or authentication error).
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Organization URL, e.g. <https://dev.azure.com/contoso> (in Azure Pipelines: the pipeline's own).
    #[arg(long, value_name = "URL", env = "SYSTEM_COLLECTIONURI")]
    pub organization_url: String,
    /// Project name or id (in Azure Pipelines: the pipeline's own).
    #[arg(long, env = "SYSTEM_TEAMPROJECT")]
    pub project: String,
    /// Id of the pipeline (build definition) to follow, as in `_build?definitionId=N`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
    pub definition_id: i64,
    /// Branch whose newest run decides, e.g. main (refs/heads/ is added when missing).
    #[arg(long)]
    pub branch: String,
    /// While a run is queued or in progress, keep polling instead of exiting 2 at once.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait may wait, e.g. 30m, 1h30m.
    #[arg(long, default_value = "30m", value_name = "DURATION")]
    pub timeout: kube::core::Duration,
    /// Time between polls while waiting, e.g. 10s.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub interval: kube::core::Duration,
    /// Results that count as open, comma separated: succeeded, partiallySucceeded.
    #[arg(long, value_delimiter = ',', default_value = "succeeded", value_parser = parse_camel::<AcceptableResult>)]
    pub accepted_results: Vec<AcceptableResult>,
    /// Results skipped when finding the newest completed run, comma separated: canceled, failed,
    /// partiallySucceeded.
    #[arg(long, value_delimiter = ',', value_parser = parse_camel::<IgnorableResult>)]
    pub ignored_results: Vec<IgnorableResult>,
}

/// Parses the camelCase spelling the CRD uses, so CLI and YAML take the same words.
fn parse_camel<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_string()))
        .map_err(|_| format!("unknown result \"{s}\""))
}

/// The exit status of `lockstep check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckExit {
    /// The newest completed run was accepted and nothing is in flight.
    Open = 0,
    /// The newest completed run failed, was canceled, or partially succeeded without being accepted.
    Blocked = 1,
    /// A run is still queued or in progress (after --timeout with --wait, at once without).
    TimedOut = 2,
    /// Bad flags, no token, rejected credentials, unknown project or definition, or no answer.
    Usage = 3,
}

impl CheckExit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<CheckExit> for std::process::ExitCode {
    fn from(e: CheckExit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// A problem with how `lockstep check` was called; the message says how to fix it.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything `check` needs, validated.
#[derive(Debug)]
struct Settings {
    organization_url: String,
    project: String,
    definition_id: i64,
    branch: String,
    wait: bool,
    interval: Duration,
    policy: Policy,
    token: SecretString,
}

fn validate(
    args: &CheckArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, UsageError> {
    let token = token_from(env).ok_or_else(|| {
        UsageError(format!(
            "no Azure DevOps token: set {} to a personal access token with the Build (read) scope, or in Azure Pipelines add `env: {{ {}: $(System.AccessToken) }}` to the step",
            TOKEN_VARIABLES[0], TOKEN_VARIABLES[1]
        ))
    })?;
    let organization_url = args.organization_url.trim().to_string();
    if OrgKey::from_url(&organization_url).is_none() {
        return Err(UsageError(format!(
            "--organization-url \"{organization_url}\" is not an http(s) URL: use e.g. https://dev.azure.com/contoso"
        )));
    }
    let project = args.project.trim().to_string();
    if project.is_empty() {
        return Err(UsageError(
            "--project is empty: give the project name or id".into(),
        ));
    }
    let branch = args.branch.trim();
    if branch.is_empty() || branch == "refs/heads/" {
        return Err(UsageError(
            "--branch is empty: give a branch such as main".into(),
        ));
    }
    if args.timeout.is_negative() {
        return Err(UsageError(
            "--timeout is negative: give a duration such as 30m".into(),
        ));
    }
    let interval = Duration::from(args.interval);
    if args.interval.is_negative() || interval.is_zero() {
        return Err(UsageError(
            "--interval must be positive: give a duration such as 10s".into(),
        ));
    }
    let policy = Policy::from_spec(&GatePolicy {
        accepted_results: args.accepted_results.clone(),
        ignored_results: args.ignored_results.clone(),
        timeout: Some(args.timeout),
        stale_after: None,
    });
    Ok(Settings {
        organization_url,
        project,
        definition_id: args.definition_id,
        branch: full_branch_ref(branch),
        wait: args.wait,
        interval,
        policy,
        token,
    })
}

/// The first token variable that is set and not blank.
fn token_from(env: impl Fn(&str) -> Option<String>) -> Option<SecretString> {
    TOKEN_VARIABLES
        .iter()
        .filter_map(|name| env(name))
        .map(SecretString::new)
        .find(|t| !t.is_empty())
}

/// What one poll's verdict means for the process: exit now, or poll again.
fn exit_for(verdict: &Verdict, wait: bool) -> Option<CheckExit> {
    match (verdict.phase, verdict.reason) {
        (Phase::Open, _) => Some(CheckExit::Open),
        (Phase::Blocked, Reason::TimedOut) => Some(CheckExit::TimedOut),
        (Phase::Blocked, Reason::AuthenticationFailed | Reason::NotFound) => Some(CheckExit::Usage),
        (Phase::Blocked, _) => Some(CheckExit::Blocked),
        (Phase::Waiting, _) if wait => None,
        (Phase::Waiting, _) => Some(CheckExit::TimedOut),
    }
}

/// What to do next, for the last line.
fn advice(exit: CheckExit, verdict_reason: Option<Reason>, wait: bool) -> &'static str {
    match (exit, verdict_reason) {
        (CheckExit::Open, _) => "the gate is open: continue",
        (CheckExit::Blocked, _) => {
            "the gate is blocked: fix the base pipeline or re-run it, then re-run this job"
        }
        (CheckExit::TimedOut, _) if !wait => {
            "not open yet: pass --wait (with --timeout) to wait for the run, or re-run this job later"
        }
        (CheckExit::TimedOut, _) => {
            "gave up waiting: raise --timeout, or re-run this job when the base pipeline has finished"
        }
        (CheckExit::Usage, Some(Reason::AuthenticationFailed)) => {
            "check the token: it must be valid, not expired, and allowed to read builds in that project"
        }
        (CheckExit::Usage, _) => {
            "check --organization-url, --project, --definition-id and --branch"
        }
    }
}

/// Runs `lockstep check` with the process environment and stdout/stderr.
pub async fn run(args: CheckArgs) -> CheckExit {
    let settings = match validate(&args, |name| std::env::var(name).ok()) {
        Ok(s) => s,
        Err(e) => {
            report_error(&format!("error: {e}"));
            return CheckExit::Usage;
        }
    };
    let client = match AdoClient::new(ClientConfig::default()) {
        Ok(c) => c,
        Err(e) => {
            report_error(&format!("error: {e}"));
            return CheckExit::Usage;
        }
    };
    poll(&client, &settings).await
}

async fn poll(client: &AdoClient, s: &Settings) -> CheckExit {
    // Counted from the first answer, like decide()'s wait on a run, so a run that stays in flight is
    // reported by decide() as TimedOut (naming the run) rather than by the generic deadline below.
    let mut give_up_at: Option<Timestamp> = None;
    let mut previous_wait: Option<Waiting> = None;
    let mut last_line: String;
    loop {
        let read = client
            .list_builds(
                &s.organization_url,
                &s.project,
                s.definition_id,
                &s.branch,
                RUNS_PER_POLL,
                &s.token,
            )
            .await;
        let now = Timestamp::now();
        let give_up_at = *give_up_at
            .get_or_insert_with(|| now.checked_add(s.policy.timeout).unwrap_or(Timestamp::MAX));
        match read {
            Ok(runs) => {
                let verdict = decide(&DecisionInput {
                    runs: &runs,
                    definition_id: s.definition_id,
                    branch: &s.branch,
                    pipeline_name: None,
                    policy: &s.policy,
                    now,
                    previous_wait: previous_wait.take(),
                });
                last_line = format!("{}: {}", verdict.reason, verdict.message);
                println!("{last_line}");
                if let Some(exit) = exit_for(&verdict, s.wait) {
                    finish(exit, Some(verdict.reason), s.wait);
                    return exit;
                }
                previous_wait = verdict.waiting;
            }
            Err(err) => {
                if let Some(verdict) = decide_error(&err) {
                    report_error(&format!("{}: {}", verdict.reason, verdict.message));
                    let exit = exit_for(&verdict, s.wait).unwrap_or(CheckExit::Usage);
                    finish(exit, Some(verdict.reason), s.wait);
                    return exit;
                }
                if !s.wait {
                    report_error(&format!(
                        "error: {err}; re-run this job, or pass --wait to retry until --timeout"
                    ));
                    return CheckExit::Usage;
                }
                last_line = format!("warning: {err}");
                eprintln!("{last_line}");
            }
        }
        // Covers waits decide() does not time (no runs yet, Azure DevOps unreachable).
        if now >= give_up_at {
            println!(
                "TimedOut: still not open after waiting {} (--timeout); last: {last_line}",
                kube::core::Duration::from(s.policy.timeout)
            );
            finish(CheckExit::TimedOut, None, s.wait);
            return CheckExit::TimedOut;
        }
        let left = give_up_at.duration_since(now).unsigned_abs();
        tokio::time::sleep(s.interval.min(left)).await;
    }
}

fn finish(exit: CheckExit, reason: Option<Reason>, wait: bool) {
    let line = format!("lockstep check: {}", advice(exit, reason, wait));
    if exit == CheckExit::Open {
        println!("{line}");
    } else {
        report_error(&line);
    }
}

/// Writes an error line; inside Azure Pipelines (`TF_BUILD`) as a logging command, so it shows in the
/// run summary.
fn report_error(line: &str) {
    if std::env::var_os("TF_BUILD").is_some() {
        eprintln!("##[error]{line}");
    } else {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CheckArgs,
    }

    fn args(extra: &[&str]) -> CheckArgs {
        let mut argv = vec![
            "check",
            "--organization-url",
            "https://dev.azure.com/contoso",
            "--project",
            "Shop",
            "--definition-id",
            "42",
            "--branch",
            "main",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    fn env_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_and_durations() {
        let s = validate(&args(&[]), env_with(&[("SYSTEM_ACCESSTOKEN", "t")])).unwrap();
        assert_eq!(s.branch, "refs/heads/main");
        assert!(!s.wait);
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.policy, Policy::default());

        let s = validate(
            &args(&[
                "--wait",
                "--timeout",
                "1h30m",
                "--interval",
                "500ms",
                "--accepted-results",
                "succeeded,partiallySucceeded",
                "--ignored-results",
                "canceled",
            ]),
            env_with(&[("SYSTEM_ACCESSTOKEN", "t")]),
        )
        .unwrap();
        assert!(s.wait);
        assert_eq!(s.policy.timeout, Duration::from_secs(5400));
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.policy.accepted.len(), 2);
        assert_eq!(s.policy.ignored, vec![crate::ado::BuildResult::Canceled]);
    }

    #[test]
    fn bad_flags_are_rejected_by_the_parser() {
        for bad in [
            &["--timeout", "soon"][..],
            &["--definition-id", "0"],
            &["--accepted-results", "failed"],
        ] {
            let mut argv = vec![
                "check",
                "--organization-url",
                "https://dev.azure.com/contoso",
                "--project",
                "Shop",
                "--definition-id",
                "42",
                "--branch",
                "main",
            ];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_values_are_usage_errors_that_say_what_to_do() {
        let env = env_with(&[("AZURE_DEVOPS_EXT_PAT", "t")]);
        let mut a = args(&["--interval", "0s"]);
        assert!(validate(&a, &env).unwrap_err().0.contains("--interval"));
        a = args(&["--timeout=-5m"]);
        assert!(validate(&a, &env).unwrap_err().0.contains("--timeout"));
        a = args(&[]);
        a.organization_url = "dev.azure.com/contoso".into();
        assert!(validate(&a, &env).unwrap_err().0.contains("https://"));
        a = args(&[]);
        a.branch = " ".into();
        assert!(validate(&a, &env).unwrap_err().0.contains("--branch"));
        a = args(&[]);
        a.project = "".into();
        assert!(validate(&a, &env).unwrap_err().0.contains("--project"));
    }

    #[test]
    fn the_token_comes_from_either_variable() {
        let pat = token_from(env_with(&[
            ("AZURE_DEVOPS_EXT_PAT", "pat"),
            ("SYSTEM_ACCESSTOKEN", "job"),
        ]));
        assert_eq!(pat.unwrap().expose(), "pat");
        let job = token_from(env_with(&[
            ("AZURE_DEVOPS_EXT_PAT", "  "),
            ("SYSTEM_ACCESSTOKEN", "job"),
        ]));
        assert_eq!(job.unwrap().expose(), "job");
        let err = validate(&args(&[]), env_with(&[])).unwrap_err();
        assert!(err.0.contains("AZURE_DEVOPS_EXT_PAT") && err.0.contains("SYSTEM_ACCESSTOKEN"));
    }

    fn verdict(phase: Phase, reason: Reason) -> Verdict {
        Verdict {
            phase,
            reason,
            message: String::new(),
            latest_run: None,
            last_completed_run: None,
            last_succeeded_run: None,
            waiting: None,
            deadline: None,
        }
    }

    #[test]
    fn verdicts_map_to_exit_codes() {
        use Reason::*;
        let cases = [
            (Phase::Open, Succeeded, false, Some(CheckExit::Open)),
            (Phase::Blocked, RunFailed, true, Some(CheckExit::Blocked)),
            (Phase::Blocked, RunCanceled, false, Some(CheckExit::Blocked)),
            (
                Phase::Blocked,
                RunPartiallySucceeded,
                false,
                Some(CheckExit::Blocked),
            ),
            (Phase::Blocked, TimedOut, true, Some(CheckExit::TimedOut)),
            (
                Phase::Blocked,
                AuthenticationFailed,
                true,
                Some(CheckExit::Usage),
            ),
            (Phase::Blocked, NotFound, true, Some(CheckExit::Usage)),
            (Phase::Waiting, RunInProgress, true, None),
            (Phase::Waiting, RunQueued, true, None),
            (Phase::Waiting, NoRuns, true, None),
            (
                Phase::Waiting,
                RunInProgress,
                false,
                Some(CheckExit::TimedOut),
            ),
            (Phase::Waiting, NoRuns, false, Some(CheckExit::TimedOut)),
        ];
        for (phase, reason, wait, exit) in cases {
            assert_eq!(exit_for(&verdict(phase, reason), wait), exit, "{reason}");
        }
        assert_eq!(
            [
                CheckExit::Open,
                CheckExit::Blocked,
                CheckExit::TimedOut,
                CheckExit::Usage
            ]
            .map(CheckExit::code),
            [0, 1, 2, 3]
        );
    }
}
