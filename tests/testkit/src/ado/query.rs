//! Builds - List query semantics: filters, ordering, per-definition limits and continuation tokens.
//! Pure functions over the runs, unit-tested here; the HTTP layer only parses and renders.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::ids::ado_time;
use super::state::{Run, RunResult, RunStatus};

/// Query parameters, looked up by name case-insensitively as ASP.NET does.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// First of several spellings (`searchCriteria.$top` and `$top`).
    pub fn get_any(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.get(n))
    }

    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueryOrder {
    FinishTimeAscending,
    FinishTimeDescending,
    QueueTimeAscending,
    QueueTimeDescending,
    StartTimeAscending,
    StartTimeDescending,
}

impl QueryOrder {
    const ALL: [QueryOrder; 6] = [
        Self::FinishTimeAscending,
        Self::FinishTimeDescending,
        Self::QueueTimeAscending,
        Self::QueueTimeDescending,
        Self::StartTimeAscending,
        Self::StartTimeDescending,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::FinishTimeAscending => "finishTimeAscending",
            Self::FinishTimeDescending => "finishTimeDescending",
            Self::QueueTimeAscending => "queueTimeAscending",
            Self::QueueTimeDescending => "queueTimeDescending",
            Self::StartTimeAscending => "startTimeAscending",
            Self::StartTimeDescending => "startTimeDescending",
        }
    }

    fn descending(self) -> bool {
        matches!(
            self,
            Self::FinishTimeDescending | Self::QueueTimeDescending | Self::StartTimeDescending
        )
    }
}

/// A parsed Builds - List request.
#[derive(Debug, Default)]
pub(crate) struct BuildQuery {
    definitions: Option<Vec<i64>>,
    build_ids: Option<Vec<i64>>,
    branch: Option<String>,
    statuses: Option<Vec<RunStatus>>,
    results: Option<Vec<RunResult>>,
    order: Option<QueryOrder>,
    top: Option<usize>,
    max_per_definition: Option<usize>,
    continuation: Option<Cursor>,
}

/// One page of builds and the token for the next page, if any.
#[derive(Debug)]
pub(crate) struct Page<'a> {
    pub runs: Vec<&'a Run>,
    pub continuation_token: Option<String>,
}

fn parse_ids(name: &str, value: &str) -> Result<Vec<i64>, String> {
    value
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>().map_err(|_| {
                format!("The value '{s}' of parameter '{name}' is not a valid integer.")
            })
        })
        .collect()
}

fn parse_count(name: &str, value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("The value '{value}' of parameter '{name}' is not a valid integer."))
}

impl BuildQuery {
    /// Parses the query string; the error is the message of the 400 the real service would send.
    pub fn parse(p: &Params) -> Result<Self, String> {
        let mut q = BuildQuery::default();
        if let Some(v) = p.get("definitions") {
            q.definitions = Some(parse_ids("definitions", v)?);
        }
        if let Some(v) = p.get("buildIds") {
            q.build_ids = Some(parse_ids("buildIds", v)?);
        }
        q.branch = p.get("branchName").map(str::to_string);
        if let Some(v) = p.get("statusFilter") {
            let mut statuses = Vec::new();
            let mut any = false;
            for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match part.to_ascii_lowercase().as_str() {
                    "notstarted" => statuses.push(RunStatus::NotStarted),
                    "inprogress" => statuses.push(RunStatus::InProgress),
                    "cancelling" => statuses.push(RunStatus::Cancelling),
                    "completed" => statuses.push(RunStatus::Completed),
                    // Postponed exists in the enum but the simulator never postpones a build.
                    "postponed" => {}
                    "all" | "none" => any = true,
                    _ => return Err(format!("The value '{part}' is not a valid BuildStatus.")),
                }
            }
            q.statuses = (!any).then_some(statuses);
        }
        if let Some(v) = p.get("resultFilter") {
            let mut results = Vec::new();
            let mut any = false;
            for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if part.eq_ignore_ascii_case("none") {
                    any = true;
                } else {
                    results.push(RunResult::parse(part).ok_or_else(|| {
                        format!("The value '{part}' is not a valid BuildResult.")
                    })?);
                }
            }
            q.results = (!any).then_some(results);
        }
        if let Some(v) = p.get("queryOrder") {
            q.order = Some(
                QueryOrder::ALL
                    .into_iter()
                    .find(|o| o.as_str().eq_ignore_ascii_case(v.trim()))
                    .ok_or_else(|| format!("The value '{v}' is not a valid BuildQueryOrder."))?,
            );
        }
        if let Some(v) = p.get("$top") {
            q.top = Some(parse_count("$top", v)?);
        }
        if let Some(v) = p.get("maxBuildsPerDefinition") {
            q.max_per_definition = Some(parse_count("maxBuildsPerDefinition", v)?);
        }
        if let Some(v) = p.get("continuationToken") {
            q.continuation = Some(
                Cursor::decode(v)
                    .ok_or_else(|| format!("The continuation token '{v}' is not valid."))?,
            );
        }
        Ok(q)
    }

    fn matches(&self, run: &Run) -> bool {
        self.definitions
            .as_ref()
            .is_none_or(|ids| ids.contains(&run.definition_id))
            && self.build_ids.as_ref().is_none_or(|ids| ids.contains(&run.id))
            // Full refs only: a short name like `main` matches nothing here. What the real service
            // does with short names is unverified (ado-api.md §4.1); every known client sends full refs.
            && self
                .branch
                .as_ref()
                .is_none_or(|b| b.eq_ignore_ascii_case(&run.branch))
            && self
                .statuses
                .as_ref()
                .is_none_or(|s| s.contains(&run.status))
            && self
                .results
                .as_ref()
                .is_none_or(|r| run.result.is_some_and(|res| r.contains(&res)))
    }

    fn sort_key(&self, run: &Run) -> Cursor {
        let time = match self.order {
            None => None,
            Some(QueryOrder::QueueTimeAscending | QueryOrder::QueueTimeDescending) => {
                Some(ado_time(run.queue_time))
            }
            Some(QueryOrder::StartTimeAscending | QueryOrder::StartTimeDescending) => {
                run.start_time.map(ado_time)
            }
            Some(QueryOrder::FinishTimeAscending | QueryOrder::FinishTimeDescending) => {
                run.finish_time.map(ado_time)
            }
        };
        Cursor { time, id: run.id }
    }

    /// Position order: the requested time order (builds without that time last, a simulator choice),
    /// ties broken by id in the same direction. Without `queryOrder` the real order is undefined; the
    /// simulator returns oldest id first, so a client that forgets `queryOrder` sees the wrong builds.
    fn compare(&self, a: &Cursor, b: &Cursor) -> Ordering {
        let desc = self.order.is_some_and(QueryOrder::descending);
        let time = match (&a.time, &b.time) {
            (Some(x), Some(y)) if desc => y.cmp(x),
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        let id = if desc {
            b.id.cmp(&a.id)
        } else {
            a.id.cmp(&b.id)
        };
        time.then(id)
    }

    pub fn select<'a>(&self, runs: impl Iterator<Item = &'a Run>) -> Page<'a> {
        let mut keyed: Vec<(Cursor, &Run)> = runs
            .filter(|r| self.matches(r))
            .map(|r| (self.sort_key(r), r))
            .collect();
        keyed.sort_by(|(a, _), (b, _)| self.compare(a, b));
        if let Some(max) = self.max_per_definition {
            let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
            keyed.retain(|(_, r)| {
                let n = seen.entry(r.definition_id).or_insert(0);
                *n += 1;
                *n <= max
            });
        }
        if let Some(cursor) = &self.continuation {
            keyed.retain(|(k, _)| self.compare(k, cursor) != Ordering::Less);
        }
        let mut continuation_token = None;
        if let Some(top) = self.top {
            if keyed.len() > top {
                continuation_token = Some(keyed[top].0.encode());
                keyed.truncate(top);
            }
        }
        Page {
            runs: keyed.into_iter().map(|(_, r)| r).collect(),
            continuation_token,
        }
    }
}

/// Where the next page starts: the sort key of its first build. Survives builds being queued between
/// page requests (ids and queue times never repeat).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    time: Option<String>,
    id: i64,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}|{}",
            self.time.as_deref().unwrap_or(""),
            self.id
        ))
    }

    fn decode(token: &str) -> Option<Self> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token.trim()).ok()?).ok()?;
        let (time, id) = raw.rsplit_once('|')?;
        Some(Self {
            time: (!time.is_empty()).then(|| time.to_string()),
            id: id.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn run(
        id: i64,
        def: i64,
        branch: &str,
        status: RunStatus,
        result: Option<RunResult>,
        queued: i64,
    ) -> Run {
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        Run {
            id,
            project_id: "p".into(),
            definition_id: def,
            build_number: format!("20261122.{id}"),
            branch: branch.into(),
            commit: "c".into(),
            repository_id: "r".into(),
            repository_name: "r".into(),
            status,
            result,
            queue_time: t(queued),
            start_time: (status != RunStatus::NotStarted).then(|| t(queued + 5)),
            finish_time: result.map(|_| t(queued + 100 - id)),
            last_changed: t(queued),
            plan_id: "plan".into(),
            links: Default::default(),
        }
    }

    fn fixture() -> Vec<Run> {
        use RunResult::*;
        use RunStatus::*;
        vec![
            run(1, 42, "refs/heads/main", Completed, Some(Succeeded), 10),
            run(2, 42, "refs/heads/main", Completed, Some(Failed), 20),
            run(3, 42, "refs/heads/dev", Completed, Some(Succeeded), 30),
            run(4, 7, "refs/heads/main", Completed, Some(Canceled), 40),
            run(5, 42, "refs/heads/main", InProgress, None, 50),
            run(6, 42, "refs/heads/main", NotStarted, None, 60),
        ]
    }

    fn ids(query: &str, runs: &[Run]) -> (Vec<i64>, Option<String>) {
        let q = BuildQuery::parse(&Params::parse(Some(query))).unwrap();
        let page = q.select(runs.iter());
        (
            page.runs.iter().map(|r| r.id).collect(),
            page.continuation_token,
        )
    }

    #[test]
    fn filters_by_definition_branch_status_and_result() {
        let runs = fixture();
        assert_eq!(
            ids("definitions=42&branchName=refs/heads/main", &runs).0,
            vec![1, 2, 5, 6]
        );
        assert_eq!(
            ids("definitions=7,42&branchName=refs/heads/dev", &runs).0,
            vec![3]
        );
        assert_eq!(
            ids("branchName=main", &runs).0,
            Vec::<i64>::new(),
            "short names match nothing"
        );
        assert_eq!(
            ids("BRANCHNAME=REFS/HEADS/MAIN&definitions=7", &runs).0,
            vec![4]
        );
        assert_eq!(
            ids("statusFilter=inProgress,notStarted", &runs).0,
            vec![5, 6]
        );
        assert_eq!(
            ids("statusFilter=completed&resultFilter=succeeded", &runs).0,
            vec![1, 3]
        );
        assert_eq!(ids("resultFilter=failed,canceled", &runs).0, vec![2, 4]);
        assert_eq!(ids("statusFilter=all", &runs).0.len(), 6);
        assert_eq!(ids("buildIds=2,4", &runs).0, vec![2, 4]);
    }

    #[test]
    fn orders_by_the_requested_time() {
        let runs = fixture();
        assert_eq!(
            ids("queryOrder=queueTimeDescending", &runs).0,
            vec![6, 5, 4, 3, 2, 1]
        );
        assert_eq!(
            ids("queryOrder=queueTimeAscending", &runs).0,
            vec![1, 2, 3, 4, 5, 6]
        );
        // Finish times run backwards in the fixture (queued + 100 - id); unfinished builds go last.
        assert_eq!(
            ids("queryOrder=finishTimeDescending", &runs).0,
            vec![4, 3, 2, 1, 6, 5]
        );
        assert_eq!(
            ids("queryOrder=finishTimeAscending", &runs).0,
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            ids("queryOrder=startTimeDescending", &runs).0,
            vec![5, 4, 3, 2, 1, 6]
        );
        assert_eq!(
            ids("", &runs).0,
            vec![1, 2, 3, 4, 5, 6],
            "default: oldest id first"
        );
    }

    #[test]
    fn top_and_max_per_definition() {
        let runs = fixture();
        assert_eq!(
            ids("queryOrder=queueTimeDescending&$top=2", &runs).0,
            vec![6, 5]
        );
        assert_eq!(
            ids(
                "queryOrder=queueTimeDescending&maxBuildsPerDefinition=1",
                &runs
            )
            .0,
            vec![6, 4]
        );
        assert_eq!(
            ids("definitions=42&queryOrder=queueTimeDescending&maxBuildsPerDefinition=2&statusFilter=completed", &runs).0,
            vec![3, 2]
        );
    }

    #[test]
    fn continuation_pages_through_everything_once() {
        let mut runs = fixture();
        let (first, token) = ids("queryOrder=queueTimeDescending&$top=4", &runs);
        assert_eq!(first, vec![6, 5, 4, 3]);
        let token = token.expect("more pages");
        // A build queued between the two requests must not shift the second page.
        runs.push(run(
            7,
            42,
            "refs/heads/main",
            RunStatus::NotStarted,
            None,
            70,
        ));
        let (second, token2) = ids(
            &format!("queryOrder=queueTimeDescending&$top=4&continuationToken={token}"),
            &runs,
        );
        assert_eq!(second, vec![2, 1]);
        assert!(token2.is_none());
    }

    #[test]
    fn bad_parameters_are_rejected() {
        for bad in [
            "statusFilter=running",
            "resultFilter=ok",
            "queryOrder=newest",
            "$top=-1",
            "definitions=abc",
            "continuationToken=%%%",
        ] {
            assert!(
                BuildQuery::parse(&Params::parse(Some(bad))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            time: Some("2026-01-01T00:00:00.0000000Z".into()),
            id: 9,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        let none = Cursor { time: None, id: 3 };
        assert_eq!(Cursor::decode(&none.encode()), Some(none));
    }
}
