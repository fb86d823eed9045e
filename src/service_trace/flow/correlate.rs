//! Tie each stage to the *same* change. Every rule here uses only what Azure DevOps records; which
//! fixture proved each is in `docs/servicetrace.md` ("Correlation rules"). When no rule applies the
//! answer is [`LinkRule::Unknown`]: lockstep never substitutes "whatever the head is now".

use jiff::{SignedDuration, Timestamp};

use super::facts::{CommitFacts, PullRequestFacts, RunFacts, RunPhase};
use crate::ado::GitPullRequestQuery;

/// How a run or commit was tied to the build (written to `linkedBy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkRule {
    /// The downstream build's `triggeredByBuild.id` is the upstream build.
    TriggeredByBuild,
    /// The downstream run consumed the upstream run as a pipeline resource (`resources.pipelines.*.version`).
    ResourceTrigger,
    /// The downstream run built exactly the upstream commit (`sourceVersion`).
    SourceVersion,
    /// The commit message names the image tag, the build id (`Build-Id:` trailer) or the upstream commit.
    CommitMessage,
    /// The step is part of the CI run itself (one pipeline builds, updates the HLD, renders manifests).
    SameRun,
    /// The only commit the linked run could have pushed: committed while that run ran.
    CommitTime,
    /// The manifest head, ordered after the newest successful build by the trace's "came after" rule
    /// (generation run queued after the build, or committer date); newest build only.
    HeadAfterBuild,
    Unknown,
}

impl LinkRule {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRule::TriggeredByBuild => "triggeredByBuild",
            LinkRule::ResourceTrigger => "resourceTrigger",
            LinkRule::SourceVersion => "sourceVersion",
            LinkRule::CommitMessage => "commitMessage",
            LinkRule::SameRun => "sameRun",
            LinkRule::CommitTime => "commitTime",
            LinkRule::HeadAfterBuild => "headAfterBuild",
            LinkRule::Unknown => "unknown",
        }
    }
}

/// A run or commit tied to the change, and the rule that tied it.
#[derive(Clone, Debug, PartialEq)]
pub struct Linked<T> {
    pub value: Option<T>,
    pub rule: LinkRule,
}

impl<T> Linked<T> {
    pub fn unknown() -> Self {
        Self {
            value: None,
            rule: LinkRule::Unknown,
        }
    }
    fn by(value: T, rule: LinkRule) -> Self {
        Self {
            value: Some(value),
            rule,
        }
    }
}

/// A commit made this long after its run finished still counts as the run's push (the push is the
/// run's last step; agents and the Git service stamp with different clocks, see ado-api.md §7).
pub const PUSH_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// Does `text` mention `token` as a whole word? `20261122.7` is in `main-20261122.7.` but not in
/// `20261122.71` or `120261122.7`: the characters around it must not continue a number or a name.
pub fn mentions(text: &str, token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    let continues = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(i) = text[from..].find(token) {
        let start = from + i;
        let end = start + token.len();
        let before = text[..start].chars().next_back();
        let mut after_chars = text[end..].chars();
        let after = after_chars.next();
        // A '.' followed by a digit continues a version (`20261122.7.1`); a sentence-ending '.' does not.
        let dotted_continuation = after == Some('.') && continues(after_chars.next());
        if !continues(before) && !continues(after) && !dotted_continuation {
            return true;
        }
        from = start + token.chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// A `Build-Id: <id>` trailer (any case; `Build-Id`, `BuildId`, `Build-ID`).
pub fn build_id_trailer(message: &str) -> Option<i64> {
    message.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let key = key.trim().to_ascii_lowercase().replace('-', "");
        (key == "buildid")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Does a commit message carry this build: its image tag (the build number), or its id as a trailer?
pub fn carries_build(message: &str, build: &RunFacts) -> bool {
    build
        .number
        .as_deref()
        .is_some_and(|tag| mentions(message, tag))
        || build_id_trailer(message) == Some(build.id)
}

/// The pull request named by Azure Repos' merge commit message: `Merged PR 17: <title>` (the default
/// since 2018) or `Merge pull request 22 from <branch> into <branch>` (the older default).
pub fn pull_request_from_message(message: &str) -> Option<(i64, Option<String>)> {
    let first = message.lines().next()?.trim();
    if let Some(rest) = first.strip_prefix("Merged PR ") {
        let (id, title) = rest.split_once(':').unwrap_or((rest, ""));
        let id = id.trim().parse().ok()?;
        let title = title.trim();
        return Some((id, (!title.is_empty()).then(|| title.to_string())));
    }
    if let Some(rest) = first.strip_prefix("Merge pull request ") {
        let id = rest.split_whitespace().next()?.parse().ok()?;
        return Some((id, None));
    }
    None
}

/// The pull request a Pull Request Query (`lastMergeCommit`) found for `commit`; the newest when more
/// than one did.
pub fn pull_request_from_query(
    query: &GitPullRequestQuery,
    commit: &str,
) -> Option<PullRequestFacts> {
    query
        .results
        .iter()
        .flat_map(|r| r.iter())
        .filter(|(sha, _)| sha.eq_ignore_ascii_case(commit))
        .flat_map(|(_, prs)| prs.iter())
        .max_by_key(|pr| pr.pull_request_id)
        .map(PullRequestFacts::from_pull_request)
}

/// The source commit's pull request: the Pull Request Query answer when there is one (exact, with the
/// title), else the merge message of the commit (Commits - Get) or of `triggerInfo["ci.message"]`,
/// with a link built from the repository's web URL.
pub fn source_pull_request(
    build: &RunFacts,
    commit: Option<&CommitFacts>,
    query: Option<&GitPullRequestQuery>,
) -> Option<PullRequestFacts> {
    let sha = build.source_version.as_deref()?;
    if let Some(pr) = query.and_then(|q| pull_request_from_query(q, sha)) {
        return Some(pr);
    }
    let message = commit
        .map(|c| c.message.as_str())
        .or(build.ci_message.as_deref())?;
    let (id, title) = pull_request_from_message(message)?;
    Some(PullRequestFacts {
        id,
        title,
        url: commit
            .and_then(CommitFacts::repository_web_url)
            .map(|repo| format!("{repo}/pullrequest/{id}")),
    })
}

/// The HLD side of the flow.
#[derive(Clone, Copy, Debug)]
pub struct HldFacts<'a> {
    /// The pipeline that writes the image tag; `None` (or the CI definition) when the CI run does it.
    pub definition_id: Option<i64>,
    /// Recent runs of that pipeline (any order).
    pub runs: &'a [RunFacts],
    /// Recent commits of the HLD branch, newest first.
    pub commits: &'a [CommitFacts],
}

/// The manifest-generation side of the flow.
#[derive(Clone, Copy, Debug)]
pub struct GenerationFacts<'a> {
    pub definition_id: i64,
    /// Recent runs of the generation pipeline (any order).
    pub runs: &'a [RunFacts],
}

/// Everything correlation reads for one build.
#[derive(Clone, Copy, Debug)]
pub struct FlowFacts<'a> {
    pub build: &'a RunFacts,
    pub ci_definition_id: i64,
    pub hld: Option<HldFacts<'a>>,
    pub generation: Option<GenerationFacts<'a>>,
    /// Recent commits of the manifest branch (filtered to the environment's path, when it has one),
    /// newest first.
    pub manifest_commits: &'a [CommitFacts],
}

/// The build's path: each stage's run and commit, each with the rule that tied it.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrelatedPath {
    pub hld_run: Linked<RunFacts>,
    pub hld_commit: Linked<CommitFacts>,
    pub generation_run: Linked<RunFacts>,
    pub manifest_commit: Linked<CommitFacts>,
}

pub fn correlate(f: &FlowFacts) -> CorrelatedPath {
    let b = f.build;
    let (hld_run, hld_commit) = match &f.hld {
        Some(h) => {
            let run = hld_run(f, h);
            let generation_sources: Vec<&str> = f
                .generation
                .iter()
                .flat_map(|g| g.runs.iter())
                .filter_map(|r| r.source_version.as_deref())
                .collect();
            let commit = hld_commit(b, run.value.as_ref(), h.commits, &generation_sources);
            (run, commit)
        }
        None => (Linked::unknown(), Linked::unknown()),
    };
    let generation_run = match &f.generation {
        Some(g) => generation_run(f, g, hld_run.value.as_ref(), hld_commit.value.as_ref()),
        None => Linked::unknown(),
    };
    let manifest_commit = manifest_commit(
        b,
        hld_commit.value.as_ref(),
        generation_run.value.as_ref(),
        f.manifest_commits,
    );
    CorrelatedPath {
        hld_run,
        hld_commit,
        generation_run,
        manifest_commit,
    }
}

/// The newest run (highest id) satisfying `pred`: a re-run of the same trigger replaces the first.
fn newest(runs: &[RunFacts], pred: impl Fn(&RunFacts) -> bool) -> Option<&RunFacts> {
    runs.iter().filter(|r| pred(r)).max_by_key(|r| r.id)
}

/// Did `run` consume `upstream` as a pipeline resource?
fn consumed(run: &RunFacts, upstream: &RunFacts) -> bool {
    let Some(number) = upstream.number.as_deref() else {
        return false;
    };
    run.consumed.iter().any(|c| {
        c.version == number
            && match (c.pipeline_id, upstream.definition_id) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    })
}

fn hld_run(f: &FlowFacts, h: &HldFacts) -> Linked<RunFacts> {
    let b = f.build;
    if h.definition_id.is_none_or(|d| d == f.ci_definition_id) {
        return Linked::by(b.clone(), LinkRule::SameRun);
    }
    if let Some(r) = newest(h.runs, |r| r.triggered_by_build == Some(b.id)) {
        return Linked::by(r.clone(), LinkRule::TriggeredByBuild);
    }
    if let Some(r) = newest(h.runs, |r| consumed(r, b)) {
        return Linked::by(r.clone(), LinkRule::ResourceTrigger);
    }
    Linked::unknown()
}

/// Commits made while `run` ran (start − 5 s … finish + [`PUSH_GRACE`]); none for an unfinished run.
fn within_run<'c>(run: &RunFacts, commits: &'c [CommitFacts]) -> Vec<&'c CommitFacts> {
    let (Some(start), Some(finish)) = (run.start_time.or(run.queue_time), run.finish_time) else {
        return Vec::new();
    };
    let from = start
        .checked_sub(SignedDuration::from_secs(5))
        .unwrap_or(Timestamp::MIN);
    let to = finish.checked_add(PUSH_GRACE).unwrap_or(Timestamp::MAX);
    commits
        .iter()
        .filter(|c| c.committed.is_some_and(|t| t >= from && t <= to))
        .collect()
}

fn hld_commit(
    b: &RunFacts,
    run: Option<&RunFacts>,
    commits: &[CommitFacts],
    generation_sources: &[&str],
) -> Linked<CommitFacts> {
    let carrying: Vec<&CommitFacts> = commits
        .iter()
        .filter(|c| carries_build(&c.message, b))
        .collect();
    // A PR-based update leaves two commits naming the tag (the branch commit and its merge); the one a
    // generation run built is the one that matters, else the newest (the merge is on the branch line).
    let built = carrying.iter().find(|c| {
        generation_sources
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&c.id))
    });
    if let Some(c) = built.or(carrying.first()) {
        return Linked::by((*c).clone(), LinkRule::CommitMessage);
    }
    // Without a message naming it, a commit counts only when exactly one was made while the linked
    // (separate) HLD run ran: in the CI run itself other commits may land at the same time.
    if let Some(run) = run.filter(|r| r.id != b.id && r.phase == RunPhase::Succeeded) {
        if let [only] = within_run(run, commits).as_slice() {
            return Linked::by((*only).clone(), LinkRule::CommitTime);
        }
    }
    Linked::unknown()
}

fn generation_run(
    f: &FlowFacts,
    g: &GenerationFacts,
    hld_run: Option<&RunFacts>,
    hld_commit: Option<&CommitFacts>,
) -> Linked<RunFacts> {
    let b = f.build;
    if let Some(c) = hld_commit {
        if let Some(r) = newest(g.runs, |r| {
            r.source_version
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(&c.id))
        }) {
            return Linked::by(r.clone(), LinkRule::SourceVersion);
        }
    }
    let upstream: Vec<&RunFacts> = std::iter::once(b)
        .chain(hld_run.filter(|r| r.id != b.id))
        .collect();
    if let Some(r) = newest(g.runs, |r| {
        upstream.iter().any(|u| r.triggered_by_build == Some(u.id))
    }) {
        return Linked::by(r.clone(), LinkRule::TriggeredByBuild);
    }
    if let Some(r) = newest(g.runs, |r| upstream.iter().any(|u| consumed(r, u))) {
        return Linked::by(r.clone(), LinkRule::ResourceTrigger);
    }
    if g.definition_id == f.ci_definition_id {
        return Linked::by(b.clone(), LinkRule::SameRun);
    }
    Linked::unknown()
}

fn manifest_commit(
    b: &RunFacts,
    hld_commit: Option<&CommitFacts>,
    generation: Option<&RunFacts>,
    commits: &[CommitFacts],
) -> Linked<CommitFacts> {
    let names_hld = |m: &str| {
        hld_commit.is_some_and(|h| {
            mentions(m, &h.id) || h.id.get(..7).is_some_and(|short| mentions(m, short))
        })
    };
    // The oldest commit carrying the change is where it entered the branch; later re-renders that name
    // it again change nothing about when it arrived.
    if let Some(c) = commits
        .iter()
        .rev()
        .find(|c| carries_build(&c.message, b) || names_hld(&c.message))
    {
        return Linked::by(c.clone(), LinkRule::CommitMessage);
    }
    if let Some(run) = generation.filter(|r| r.phase == RunPhase::Succeeded) {
        if let [only] = within_run(run, commits).as_slice() {
            return Linked::by((*only).clone(), LinkRule::CommitTime);
        }
    }
    Linked::unknown()
}

/// Position of `revision` in `commits` (newest first), matching a full or abbreviated SHA.
pub fn position(commits: &[CommitFacts], revision: &str) -> Option<usize> {
    let rev = revision.trim();
    if rev.len() < 7 {
        return None;
    }
    commits.iter().position(|c| {
        c.id.get(..rev.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(rev))
    })
}

/// Does a branch at `revision` contain `commit`? Yes when they are the same commit, or `revision` is
/// newer on the branch (commits are newest first). `None` when `revision` is outside the window read.
pub fn contains(commits: &[CommitFacts], revision: &str, commit: &str) -> Option<bool> {
    if same_commit(revision, commit) {
        return Some(true);
    }
    let r = position(commits, revision)?;
    let c = position(commits, commit)?;
    Some(r <= c)
}

/// Two SHAs name the same commit (either may be abbreviated to ≥ 7 characters).
pub fn same_commit(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    let n = a.len().min(b.len());
    n >= 7
        && match (a.get(..n), b.get(..n)) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
}
