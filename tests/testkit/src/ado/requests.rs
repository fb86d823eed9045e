//! The log of REST requests the simulator answered, for assertions like "one Builds - List per poll".

use serde::Serialize;

/// One answered REST request (control-API calls under `/_sim` are not logged).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdoRequestRecord {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Endpoint kind: `builds.list`, `builds.get`, `builds.timeline`, `git.repository`, `git.refs`,
    /// `git.annotatedTag`, `git.commits`, `pipelines.runs.list`, `pipelines.runs.get`,
    /// `build.definitions.get`, `hooks.subscriptions.{list,create,get,replace,delete}`, or `unknown`.
    pub endpoint: &'static str,
    pub status: u16,
    pub time: jiff::Timestamp,
    pub user_agent: Option<String>,
}
