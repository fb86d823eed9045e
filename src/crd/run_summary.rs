//! Runs as both kinds' statuses report them: [`RunSummary`] with whole-second times.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::RunSummary;
use crate::ado::Build;

/// Whole seconds: what the API server keeps of a timestamp, so equal statuses compare equal.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// A [`Time`] in whole seconds.
pub fn status_time(t: Timestamp) -> Time {
    Time(whole_seconds(t))
}

/// A run as status reports it, with times cut to whole seconds: the API server serialises `Time` that way,
/// so a summary with Azure DevOps' 7 fractional digits would never compare equal to the stored one, and
/// an unchanged object would be written again on every poll.
pub fn run_summary(build: &Build) -> RunSummary {
    let mut summary = RunSummary::from_build(build);
    for t in [
        &mut summary.queue_time,
        &mut summary.start_time,
        &mut summary.finish_time,
    ] {
        *t = t.take().map(|t| status_time(t.0));
    }
    summary
}
