//! Presentation and bounds: the printer-column summary, Go-style durations, and keeping a status under
//! [`MAX_STATUS_BYTES`] whatever Azure DevOps or the cluster put into messages.

use jiff::SignedDuration;

use crate::crd::{
    EnvironmentProgress, HistoryEntry, RunLink, ServiceTraceStatus, MAX_ENVIRONMENTS,
    MAX_HISTORY_LIMIT, MAX_MESSAGE_CHARS, MAX_NAME_CHARS, MAX_STATUS_BYTES, MAX_TITLE_CHARS,
};

/// A duration the way Go and kubectl print it: `1h4m10s`, `38s`, `0s`; negative durations (clock skew)
/// print as `0s`.
pub fn go_duration(d: SignedDuration) -> String {
    let total = d.as_secs().max(0);
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Cut `s` to at most `max` characters (not bytes), marking the cut with `…`.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn cut(s: &mut Option<String>, max: usize) {
    if let Some(v) = s {
        if v.chars().count() > max {
            *v = truncate_chars(v, max);
        }
    }
}

/// The symbol of an environment state in the summary column.
pub fn symbol(state: &str) -> &'static str {
    match state {
        "Arrived" => "✓",
        "Failed" | "Stalled" => "✗",
        "Suspended" => "⏸",
        "Unknown" => "?",
        _ => "…",
    }
}

/// `dev ✓ staging ✓ prod …`
pub fn summary(envs: &[EnvironmentProgress]) -> String {
    envs.iter()
        .map(|e| format!("{} {}", e.name, symbol(&e.state)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bound every free-text field, the list lengths, and finally the whole status: oldest history entries
/// go first until the JSON fits in [`MAX_STATUS_BYTES`].
pub fn fit_status(status: &mut ServiceTraceStatus) {
    for c in &mut status.conditions {
        if c.message.chars().count() > MAX_MESSAGE_CHARS {
            c.message = truncate_chars(&c.message, MAX_MESSAGE_CHARS);
        }
    }
    cut(&mut status.last_error, MAX_MESSAGE_CHARS);
    cut(&mut status.summary, MAX_MESSAGE_CHARS);
    // Per-stage and per-environment messages repeat what conditions and steps say in full; they get
    // the shorter bound so ten environments still leave room for the history.
    for s in &mut status.stages {
        cut(&mut s.message, MAX_TITLE_CHARS);
        cut(&mut s.web_url, MAX_MESSAGE_CHARS);
    }
    if let Some(latest) = &mut status.latest {
        let b = &mut latest.build;
        cut(&mut b.author, MAX_NAME_CHARS);
        cut(&mut b.url, MAX_MESSAGE_CHARS);
        cut(&mut b.commit_url, MAX_MESSAGE_CHARS);
        cut(&mut b.number, MAX_NAME_CHARS);
        cut(&mut b.image_tag, MAX_NAME_CHARS);
        if let Some(pr) = &mut b.pull_request {
            cut(&mut pr.title, MAX_TITLE_CHARS);
            cut(&mut pr.url, MAX_MESSAGE_CHARS);
        }
        for step in [&mut latest.hld_update, &mut latest.manifest_generation]
            .into_iter()
            .flatten()
        {
            cut(&mut step.message, MAX_MESSAGE_CHARS);
            cut(&mut step.commit_url, MAX_MESSAGE_CHARS);
            if let Some(run) = &mut step.run {
                bound_run(run);
            }
        }
        latest.environments.truncate(MAX_ENVIRONMENTS);
        for e in &mut latest.environments {
            cut(&mut e.message, MAX_TITLE_CHARS);
            cut(&mut e.target, MAX_NAME_CHARS);
            cut(&mut e.cluster, MAX_NAME_CHARS);
        }
    }
    status.history.truncate(MAX_HISTORY_LIMIT as usize);
    for h in &mut status.history {
        cut(&mut h.author, MAX_NAME_CHARS);
        cut(&mut h.build_url, MAX_MESSAGE_CHARS);
        cut(&mut h.image_tag, MAX_NAME_CHARS);
        if let Some(pr) = &mut h.pull_request {
            cut(&mut pr.title, MAX_TITLE_CHARS);
            cut(&mut pr.url, MAX_MESSAGE_CHARS);
        }
        for run in [&mut h.hld_run, &mut h.manifest_run].into_iter().flatten() {
            bound_run(run);
        }
        while h.environments.len() > MAX_ENVIRONMENTS {
            h.environments.pop_last();
        }
        for a in h.environments.values_mut() {
            // History keeps only the first line's worth of a message; `latest` has the detail.
            cut(&mut a.message, MAX_TITLE_CHARS);
        }
    }
    // Older rows lose their links, run times and messages first (`latest` and the newest rows keep them),
    // then all rows do, and only then are the oldest rows dropped.
    for keep_full in [KEEP_FULL_ROWS, 3, 0] {
        if size(status) <= MAX_STATUS_BYTES {
            return;
        }
        for h in status.history.iter_mut().skip(keep_full) {
            slim(h);
        }
    }
    // `stages[]` repeats, per stage, what `latest` says; its messages go before any build does.
    if size(status) > MAX_STATUS_BYTES {
        for s in &mut status.stages {
            s.message = None;
        }
    }
    while size(status) > MAX_STATUS_BYTES && !status.history.is_empty() {
        status.history.pop();
    }
}

fn bound_run(run: &mut RunLink) {
    cut(&mut run.url, MAX_MESSAGE_CHARS);
    cut(&mut run.number, MAX_NAME_CHARS);
}

/// History rows that keep every detail when a status must shrink.
pub const KEEP_FULL_ROWS: usize = 10;

/// Drop what a history row can lose without losing the answer to "did it arrive, when, who, which PR":
/// URLs (the ids remain), run details, lead times (derivable) and per-environment messages; names and
/// titles are cut shorter.
fn slim(h: &mut HistoryEntry) {
    h.build_url = None;
    h.build_finish_time = None;
    cut(&mut h.author, SLIM_CHARS);
    if let Some(pr) = &mut h.pull_request {
        pr.url = None;
        cut(&mut pr.title, SLIM_CHARS);
    }
    for run in [&mut h.hld_run, &mut h.manifest_run].into_iter().flatten() {
        *run = RunLink {
            id: run.id,
            ..Default::default()
        };
    }
    // Abbreviated SHAs still match what environments report (containment compares ≥ 7-character
    // prefixes); the source `commit` stays whole so "is commit X in prod?" queries keep working.
    abbreviate(&mut h.hld_commit);
    abbreviate(&mut h.manifest_commit);
    for a in h.environments.values_mut() {
        // `leadTime` is `arrivedAt` − `buildQueueTime`, both kept.
        a.message = None;
        a.lead_time = None;
        abbreviate(&mut a.manifest_commit);
    }
}

/// Characters of a SHA kept in slimmed rows: git's own default abbreviation grows to 12 in large
/// repositories, so 12 stays unambiguous in any manifest branch lockstep reads.
const SLIM_SHA: usize = 12;

fn abbreviate(sha: &mut Option<String>) {
    if let Some(s) = sha {
        if let Some(short) = s.get(..SLIM_SHA) {
            *s = short.to_string();
        }
    }
}

/// Author names and pull request titles in slimmed rows.
const SLIM_CHARS: usize = 40;

/// Serialized size of a status in bytes (what the API server stores, before protobuf framing).
pub fn size(status: &ServiceTraceStatus) -> usize {
    serde_json::to_vec(status).map_or(usize::MAX, |v| v.len())
}
