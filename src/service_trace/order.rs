//! Whether the manifest head "came after" the newest successful CI build, i.e. can contain its image.
//!
//! Azure DevOps does not record which build a manifest commit was generated from, so lockstep decides it
//! from time, choosing the clock it can trust most:
//!
//! 1. **With a manifest-generation pipeline** (`spec.manifest.definitionId`): the newest run of that
//!    pipeline must have succeeded, and it *covers* the build when it is the build itself (the CI
//!    pipeline pushes the manifests; set `definitionId` to the CI definition for that layout) or when it
//!    was queued at or after the build's `finishTime`. Both timestamps come from the Azure DevOps server
//!    clock with sub-second precision, so no tolerance is needed. A run that is queued by build
//!    completion or by the HLD commit that the build produced always satisfies this. When an HLD
//!    repository is configured, the generation run must also have built the HLD head
//!    (`sourceVersion` = HLD head), otherwise the newest HLD change has not been rendered yet.
//! 2. **Without one**: the manifest head's *committer* date must be at or after the build's
//!    `finishTime`, minus [`COMMITTER_CLOCK_SKEW`]. Git commit dates come from the committer's machine
//!    clock and have whole-second precision (ado-api.md §7), while `finishTime` is the server's clock with
//!    sub-second precision; the tolerance absorbs the truncation and ordinary clock drift of build agents.
//!
//! When a timestamp needed for the comparison is missing (a commit whose date could not be read, a
//! build without `finishTime`, a generation run without `queueTime`) the order is [`Order::Unknown`]:
//! the trace reports Ready=Unknown rather than guessing.

use jiff::{SignedDuration, Timestamp};

use crate::ado::models::{parse_ado_time, Build};

/// How far a manifest commit's committer date may lie before the build's finish time and still count as
/// after it. Commit dates are second-precision and set by the committer's clock.
pub const COMMITTER_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    After,
    Before,
    /// The comparison is impossible; the text says which timestamp is missing.
    Unknown(String),
}

/// Rule 1: does this successful manifest-generation run cover `build`?
pub fn generation_covers_build(generation: &Build, build: &Build) -> Order {
    if generation.id == build.id {
        return Order::After;
    }
    let Some(finished) = build_time(build.finish_time.as_deref()) else {
        return Order::Unknown(format!("build {} has no finish time", build_label(build)));
    };
    let Some(queued) = build_time(generation.queue_time.as_deref()) else {
        return Order::Unknown(format!(
            "manifest generation {} has no queue time",
            build_label(generation)
        ));
    };
    if queued >= finished {
        Order::After
    } else {
        Order::Before
    }
}

/// Rule 2: was a commit made at `committed` (committer date) after `build` finished?
pub fn commit_after_build(committed: Option<Timestamp>, build: &Build) -> Order {
    let Some(finished) = build_time(build.finish_time.as_deref()) else {
        return Order::Unknown(format!("build {} has no finish time", build_label(build)));
    };
    let Some(committed) = committed else {
        return Order::Unknown("the manifest commit's date could not be read".into());
    };
    if committed.duration_since(finished) >= -COMMITTER_CLOCK_SKEW {
        Order::After
    } else {
        Order::Before
    }
}

/// Parse a Git committer date. Azure DevOps writes them as `2019-10-17T05:35:38Z`, but annotated-tag
/// dates come without an offset (`2019-10-31T19:17:58`); those are taken as UTC.
pub fn parse_commit_date(value: &str) -> Option<Timestamp> {
    let value = value.trim();
    parse_ado_time(value).or_else(|| {
        let civil: jiff::civil::DateTime = value.parse().ok()?;
        civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    })
}

/// `20261122.4`, or `#1234` when the build has no number.
pub fn build_label(build: &Build) -> String {
    build
        .build_number
        .clone()
        .unwrap_or_else(|| format!("#{}", build.id))
}

fn build_time(value: Option<&str>) -> Option<Timestamp> {
    value.and_then(parse_ado_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(id: i64, queue: Option<&str>, finish: Option<&str>) -> Build {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "buildNumber": format!("20261122.{id}"),
            "queueTime": queue,
            "finishTime": finish,
        }))
        .expect("valid build")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    #[test]
    fn generation_queued_after_finish_covers_the_build() {
        let ci = build(
            4,
            Some("2026-11-22T10:00:00Z"),
            Some("2026-11-22T10:05:00.5000000Z"),
        );
        let generation = build(7, Some("2026-11-22T10:05:01.1234567Z"), None);
        assert_eq!(generation_covers_build(&generation, &ci), Order::After);
    }

    #[test]
    fn generation_queued_at_the_same_instant_covers_the_build() {
        let ci = build(4, None, Some("2026-11-22T10:05:00.5Z"));
        let generation = build(7, Some("2026-11-22T10:05:00.5Z"), None);
        assert_eq!(generation_covers_build(&generation, &ci), Order::After);
    }

    #[test]
    fn generation_queued_before_finish_does_not_cover_it() {
        let ci = build(4, None, Some("2026-11-22T10:05:00.5Z"));
        let generation = build(7, Some("2026-11-22T10:05:00.4999999Z"), None);
        assert_eq!(generation_covers_build(&generation, &ci), Order::Before);
    }

    #[test]
    fn the_build_itself_covers_itself() {
        let ci = build(
            4,
            Some("2026-11-22T10:00:00Z"),
            Some("2026-11-22T10:05:00Z"),
        );
        assert_eq!(generation_covers_build(&ci, &ci), Order::After);
    }

    #[test]
    fn generation_order_unknown_without_timestamps() {
        let unfinished = build(4, None, None);
        let generation = build(7, Some("2026-11-22T10:05:00Z"), None);
        assert_eq!(
            generation_covers_build(&generation, &unfinished),
            Order::Unknown("build 20261122.4 has no finish time".into())
        );
        let ci = build(4, None, Some("2026-11-22T10:05:00Z"));
        let unqueued = build(7, None, None);
        assert_eq!(
            generation_covers_build(&unqueued, &ci),
            Order::Unknown("manifest generation 20261122.7 has no queue time".into())
        );
    }

    #[test]
    fn commit_after_finish_is_after() {
        let ci = build(4, None, Some("2026-11-22T10:05:00.9Z"));
        assert_eq!(
            commit_after_build(Some(ts("2026-11-22T10:06:00Z")), &ci),
            Order::After
        );
    }

    #[test]
    fn commit_truncated_to_the_second_is_after() {
        let ci = build(4, None, Some("2026-11-22T10:05:00.9Z"));
        assert_eq!(
            commit_after_build(Some(ts("2026-11-22T10:05:00Z")), &ci),
            Order::After
        );
    }

    #[test]
    fn commit_within_the_skew_is_after() {
        let ci = build(4, None, Some("2026-11-22T10:05:00Z"));
        assert_eq!(
            commit_after_build(Some(ts("2026-11-22T10:04:00Z")), &ci),
            Order::After
        );
    }

    #[test]
    fn commit_beyond_the_skew_is_before() {
        let ci = build(4, None, Some("2026-11-22T10:05:00Z"));
        assert_eq!(
            commit_after_build(Some(ts("2026-11-22T10:03:59Z")), &ci),
            Order::Before
        );
    }

    #[test]
    fn commit_order_unknown_without_dates() {
        let ci = build(4, None, Some("2026-11-22T10:05:00Z"));
        assert_eq!(
            commit_after_build(None, &ci),
            Order::Unknown("the manifest commit's date could not be read".into())
        );
        let unfinished = build(4, None, None);
        assert_eq!(
            commit_after_build(Some(ts("2026-11-22T10:05:00Z")), &unfinished),
            Order::Unknown("build 20261122.4 has no finish time".into())
        );
    }

    #[test]
    fn commit_dates_parse_with_and_without_offset() {
        assert_eq!(
            parse_commit_date("2019-10-17T05:35:38Z"),
            Some(ts("2019-10-17T05:35:38Z"))
        );
        assert_eq!(
            parse_commit_date("2019-10-31T19:17:58"),
            Some(ts("2019-10-31T19:17:58Z"))
        );
        assert_eq!(
            parse_commit_date("2019-10-17T07:35:38+02:00"),
            Some(ts("2019-10-17T05:35:38Z"))
        );
        assert_eq!(parse_commit_date("yesterday"), None);
    }

    #[test]
    fn commit_date_from_the_fixture() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/azure-devops/git-commit.json");
        let text = std::fs::read_to_string(&path).expect("fixture present");
        let commit: crate::ado::models::GitCommitRef =
            serde_json::from_str(&text).expect("valid commit");
        let date = commit
            .committer
            .and_then(|c| c.date)
            .and_then(|d| parse_commit_date(&d));
        assert_eq!(date, Some(ts("2019-10-17T05:35:38Z")));
    }

    #[test]
    fn label_falls_back_to_the_id() {
        let mut b = build(9, None, None);
        b.build_number = None;
        assert_eq!(build_label(&b), "#9");
    }
}
