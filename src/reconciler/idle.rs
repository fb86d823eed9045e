//! Quieter idle polling (issue 15): how often to poll a pipeline that has nothing in flight, and the
//! per-project record of whether service hooks have proven themselves.
//!
//! Polling is the safety net for events Azure DevOps drops. While hooks for an organization+project are
//! demonstrably arriving, the net is stretched for *idle* objects (no run in flight, the newest completed
//! run decided) by at most `--idle-poll-stretch` times `interval`. The rule, per organization+project:
//!
//! - **proven**: an accepted delivery concerned an object of that organization+project within the last
//!   [`HOOK_WINDOW`], and it arrived after the last change polling found first;
//! - **unproven** from the moment a poll finds a change (a new run, a moved manifest head) that no hook
//!   announced since the object's previous poll, until the next accepted delivery after that moment.
//!
//! Everything that is not idle keeps the user's `interval` or faster: a run in flight, a gate waiting
//! within its timeout, a transient error. The stretched period is a whole multiple of `interval`, so the
//! stretched grid is a subset of the normal one and every object on one pipeline still meets the same
//! shared Builds List answer, stretched or not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::pipeline_key::{OrgKey, PipelineKey};

/// How recent the last delivery must be for hooks to count as arriving.
pub const HOOK_WINDOW: Duration = Duration::from_secs(3600);
/// `--idle-poll-stretch` default: idle polling at most every 4 × `interval` while hooks arrive.
pub const DEFAULT_STRETCH: u32 = 4;
/// `--idle-poll-stretch` ceiling: past it a dropped event would wait too long for the safety net.
pub const MAX_STRETCH: u32 = 16;
/// Projects remembered at most; past it the oldest entries go (a forgotten project polls at `interval`).
pub const MAX_PROJECTS: usize = 4096;

/// An organization and a project as the objects' specs name it (lower-cased, like [`PipelineKey`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectKey {
    pub organization: OrgKey,
    pub project: String,
}

impl ProjectKey {
    pub fn new(organization_url: &str, project: &str) -> Option<Self> {
        Some(Self {
            organization: OrgKey::from_url(organization_url)?,
            project: project.trim().to_ascii_lowercase(),
        })
    }

    pub fn of(pipeline: &PipelineKey) -> Self {
        Self {
            organization: pipeline.organization.clone(),
            project: pipeline.project.clone(),
        }
    }
}

/// What one reconcile knows when it picks its next poll.
#[derive(Clone, Copy, Debug)]
pub struct IdleInput {
    /// The user's `interval` (spec or default): the period whenever anything is going on.
    pub interval: Duration,
    /// `--idle-poll-stretch`; 0 and 1 both mean "never stretch".
    pub stretch: u32,
    /// No run in flight and the newest completed run decided.
    pub idle: bool,
    /// Hooks for the object's organization+project are proven ([`hooks_proven`]).
    pub hooks_proven: bool,
    /// The longest the caller may go without a read whatever the hooks do (half of `staleAfter` for a
    /// gate, so `lastCheckedTime` keeps its refresh rule); the stretched period never exceeds it.
    pub ceiling: Duration,
}

/// The polling period: `interval`, or a whole multiple of it up to `stretch`, never above `ceiling` or
/// [`HOOK_WINDOW`] (so the evidence cannot expire in the middle of one stretched period unnoticed), and
/// never below `interval`.
pub fn poll_period(input: IdleInput) -> Duration {
    let interval = input.interval;
    if !input.idle || !input.hooks_proven || input.stretch <= 1 || interval.is_zero() {
        return interval;
    }
    let ceiling = input.ceiling.min(HOOK_WINDOW);
    // Whole multiples only (grid alignment); integer division cannot overflow, and a ceiling below one
    // interval leaves a factor of 1.
    let fits = ceiling.as_nanos() / interval.as_nanos();
    let factor = u32::try_from(fits)
        .unwrap_or(u32::MAX)
        .min(input.stretch.min(MAX_STRETCH))
        .max(1);
    interval.saturating_mul(factor)
}

/// Hooks count as proven at `now` when the last delivery is within [`HOOK_WINDOW`] and came after the
/// last change polling found first (a delivery at the very same instant does not count: it cannot have
/// announced a change found at that instant).
pub fn hooks_proven(
    last_delivery: Option<Instant>,
    polling_found_first: Option<Instant>,
    now: Instant,
) -> bool {
    let Some(delivery) = last_delivery else {
        return false;
    };
    let recent = now.saturating_duration_since(delivery) < HOOK_WINDOW;
    let after_last_miss = polling_found_first.is_none_or(|miss| delivery > miss);
    recent && after_last_miss
}

#[derive(Clone, Copy, Debug, Default)]
struct ProjectHooks {
    last_delivery: Option<Instant>,
    polling_found_first: Option<Instant>,
}

impl ProjectHooks {
    fn last_seen(&self) -> Option<Instant> {
        self.last_delivery.max(self.polling_found_first)
    }
}

/// Per organization+project: the newest delivery seen and the newest change polling found first.
/// Bounded by [`MAX_PROJECTS`]; entries with nothing within the window are dropped on insert.
#[derive(Debug, Default)]
pub struct HookActivity {
    projects: Mutex<HashMap<ProjectKey, ProjectHooks>>,
}

impl HookActivity {
    /// An accepted delivery concerned an object of `project` at `at` (older news is ignored).
    pub fn note_delivery(&self, project: &ProjectKey, at: Instant) {
        self.update(project, |h| {
            h.last_delivery = h.last_delivery.max(Some(at));
        });
    }

    /// Polling found a change of `project` that no hook announced.
    pub fn note_polling_found_first(&self, project: &ProjectKey, at: Instant) {
        self.update(project, |h| {
            h.polling_found_first = h.polling_found_first.max(Some(at));
        });
    }

    /// [`hooks_proven`] for `project`.
    pub fn proven(&self, project: &ProjectKey, now: Instant) -> bool {
        let h = self.lock().get(project).copied().unwrap_or_default();
        hooks_proven(h.last_delivery, h.polling_found_first, now)
    }

    /// Projects remembered; for tests and metrics.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update(&self, project: &ProjectKey, f: impl FnOnce(&mut ProjectHooks)) {
        let mut projects = self.lock();
        if let Some(h) = projects.get_mut(project) {
            f(h);
            return;
        }
        if projects.len() >= MAX_PROJECTS {
            let now = Instant::now();
            projects.retain(|_, h| {
                h.last_seen()
                    .is_some_and(|t| now.saturating_duration_since(t) < HOOK_WINDOW)
            });
            if projects.len() >= MAX_PROJECTS {
                // Still full of live entries: drop the stalest one (it polls at `interval` again).
                let stalest = projects
                    .iter()
                    .min_by_key(|(_, h)| h.last_seen())
                    .map(|(k, _)| k.clone());
                if let Some(k) = stalest {
                    projects.remove(&k);
                }
            }
        }
        let mut h = ProjectHooks::default();
        f(&mut h);
        projects.insert(project.clone(), h);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProjectKey, ProjectHooks>> {
        // Single inserts and field updates: a panic elsewhere cannot leave the map inconsistent.
        self.projects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A wall-clock instant (the `lockstep.dev/requested-at` a receiver on any replica wrote) as an
/// `Instant` of this process; `None` for one in the future (a clock skew or a hand-written value must not
/// keep hooks "proven" for ever) or older than [`HOOK_WINDOW`].
pub fn instant_of(
    at: jiff::Timestamp,
    now: jiff::Timestamp,
    now_instant: Instant,
) -> Option<Instant> {
    let ago = Duration::try_from(now.duration_since(at)).ok()?;
    if ago >= HOOK_WINDOW {
        return None;
    }
    now_instant.checked_sub(ago)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn input(idle: bool, hooks_proven: bool) -> IdleInput {
        IdleInput {
            interval: MIN,
            stretch: DEFAULT_STRETCH,
            idle,
            hooks_proven,
            ceiling: Duration::from_secs(300),
        }
    }

    #[test]
    fn only_idle_objects_with_proven_hooks_are_stretched() {
        assert_eq!(poll_period(input(true, true)), 4 * MIN);
        assert_eq!(poll_period(input(false, true)), MIN, "run in flight");
        assert_eq!(poll_period(input(true, false)), MIN, "hooks not proven");
        assert_eq!(poll_period(input(false, false)), MIN);
    }

    #[test]
    fn factor_one_or_zero_disables() {
        for stretch in [0, 1] {
            let i = IdleInput {
                stretch,
                ..input(true, true)
            };
            assert_eq!(poll_period(i), MIN);
        }
    }

    #[test]
    fn the_stretch_is_a_whole_multiple_bounded_by_the_ceiling() {
        // ceiling 3.5 min: 3 × interval, not 3.5 (the grid stays a subset of the normal one).
        let i = IdleInput {
            ceiling: Duration::from_secs(210),
            ..input(true, true)
        };
        assert_eq!(poll_period(i), 3 * MIN);
        // A ceiling below one interval never shortens the user's interval.
        let i = IdleInput {
            ceiling: Duration::from_secs(10),
            ..input(true, true)
        };
        assert_eq!(poll_period(i), MIN);
        // The flag is capped at MAX_STRETCH.
        let i = IdleInput {
            stretch: 1000,
            ceiling: Duration::from_secs(86_400),
            ..input(true, true)
        };
        assert_eq!(poll_period(i), MIN * MAX_STRETCH);
        // And never beyond the hook window, however large the ceiling.
        let i = IdleInput {
            interval: Duration::from_secs(1200),
            ceiling: Duration::from_secs(86_400),
            ..input(true, true)
        };
        assert_eq!(poll_period(i), Duration::from_secs(3600));
    }

    #[test]
    fn every_stretched_period_is_a_multiple_of_interval_within_bounds() {
        for interval_s in [1u64, 7, 10, 60, 299, 600, 3599, 3600, 7200] {
            for stretch in 0..=20 {
                for ceiling_s in [0u64, 1, 30, 300, 1800, 3600, 86_400] {
                    let interval = Duration::from_secs(interval_s);
                    let p = poll_period(IdleInput {
                        interval,
                        stretch,
                        idle: true,
                        hooks_proven: true,
                        ceiling: Duration::from_secs(ceiling_s),
                    });
                    assert!(p >= interval, "{interval_s} {stretch} {ceiling_s}");
                    assert_eq!(p.as_nanos() % interval.as_nanos(), 0);
                    assert!(p <= interval * stretch.clamp(1, MAX_STRETCH));
                    assert!(p == interval || p <= HOOK_WINDOW.min(Duration::from_secs(ceiling_s)));
                }
            }
        }
    }

    #[test]
    fn absurd_intervals_do_not_overflow() {
        let huge = Duration::MAX;
        let i = IdleInput {
            interval: huge,
            stretch: u32::MAX,
            idle: true,
            hooks_proven: true,
            ceiling: Duration::MAX,
        };
        assert_eq!(poll_period(i), huge);
        let year = crate::crd::MAX_SPEC_DURATION;
        let i = IdleInput {
            interval: year,
            ..i
        };
        assert_eq!(poll_period(i), year);
        let i = IdleInput {
            interval: Duration::ZERO,
            ..i
        };
        assert_eq!(poll_period(i), Duration::ZERO);
        let i = IdleInput {
            interval: Duration::from_nanos(1),
            ceiling: Duration::MAX,
            ..i
        };
        assert_eq!(poll_period(i), Duration::from_nanos(u64::from(MAX_STRETCH)));
    }

    #[test]
    fn hooks_are_proven_by_a_recent_delivery_after_the_last_miss() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!hooks_proven(None, None, at(0)), "no delivery ever");
        assert!(hooks_proven(Some(at(0)), None, at(10)));
        assert!(hooks_proven(Some(at(0)), None, at(3599)), "within the hour");
        assert!(!hooks_proven(Some(at(0)), None, at(3600)), "stale");
        // Polling found a change first at 100: unproven until a delivery after it.
        assert!(!hooks_proven(Some(at(50)), Some(at(100)), at(110)));
        assert!(!hooks_proven(Some(at(100)), Some(at(100)), at(110)));
        assert!(hooks_proven(Some(at(101)), Some(at(100)), at(110)));
        assert!(!hooks_proven(None, Some(at(100)), at(110)));
        // A delivery in this process' future (clock jumps do not apply to Instant, but be total).
        assert!(hooks_proven(Some(at(200)), None, at(110)));
    }

    fn project(name: &str) -> ProjectKey {
        ProjectKey::new("https://dev.azure.com/Contoso", name).unwrap()
    }

    #[test]
    fn activity_is_per_project_and_case_insensitive() {
        let a = HookActivity::default();
        let now = Instant::now();
        a.note_delivery(&project("Shop"), now);
        assert!(a.proven(&project("shop"), now));
        assert!(!a.proven(&project("Other"), now));
        let other_org = ProjectKey::new("https://dev.azure.com/fabrikam", "Shop").unwrap();
        assert!(!a.proven(&other_org, now));
        assert_eq!(
            ProjectKey::new("https://contoso.visualstudio.com", "SHOP"),
            Some(project("Shop"))
        );
        assert_eq!(ProjectKey::new("not a url", "Shop"), None);
    }

    #[test]
    fn a_miss_unproves_until_the_next_delivery_and_older_news_is_ignored() {
        let a = HookActivity::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let p = project("Shop");
        a.note_delivery(&p, at(10));
        a.note_polling_found_first(&p, at(20));
        assert!(!a.proven(&p, at(21)));
        // The hint log is folded in lazily: an old delivery reported late proves nothing.
        a.note_delivery(&p, at(5));
        assert!(!a.proven(&p, at(22)));
        a.note_delivery(&p, at(30));
        assert!(a.proven(&p, at(31)));
        // An older miss reported late does not undo a newer delivery.
        a.note_polling_found_first(&p, at(15));
        assert!(a.proven(&p, at(32)));
    }

    #[test]
    fn the_record_is_bounded() {
        let a = HookActivity::default();
        let now = Instant::now();
        for i in 0..MAX_PROJECTS + 10 {
            a.note_delivery(&project(&format!("p{i}")), now);
        }
        assert_eq!(a.len(), MAX_PROJECTS);
        assert!(a.proven(&project(&format!("p{}", MAX_PROJECTS + 9)), now));
    }

    #[test]
    fn wall_clock_hints_convert_to_instants_within_the_window_only() {
        let now = jiff::Timestamp::now();
        let now_i = Instant::now();
        let ten_s_ago = now - jiff::SignedDuration::from_secs(10);
        let got = instant_of(ten_s_ago, now, now_i).unwrap();
        assert_eq!(now_i - got, Duration::from_secs(10));
        let future = now + jiff::SignedDuration::from_secs(10);
        assert_eq!(instant_of(future, now, now_i), None);
        let old = now - jiff::SignedDuration::from_secs(3600);
        assert_eq!(instant_of(old, now, now_i), None);
    }
}
