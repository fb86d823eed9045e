//! Fault rules: which requests fail or are delayed, matched by what kube-apiserver knows of a request
//! (its verb, resource, namespace, name, and who sent it).

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the emulator knows of a request before serving it, as kube-apiserver's `RequestInfo` and
/// authenticated user describe it (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`).
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestInfo {
    pub method: String,
    pub path: String,
    /// get, list, watch, create, update, patch, delete, deletecollection; empty for non-resource paths.
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The bearer token, if any (never logged or returned).
    pub token: Option<String>,
    /// The user a registered token authenticates as.
    pub user: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestInfo {
    /// Who is asking, for the request log and read accounting: the user a registered bearer token
    /// authenticates as, else the User-Agent, else `unknown`. Tokens themselves never appear.
    pub fn client(&self) -> String {
        match (&self.user, &self.user_agent) {
            (Some(u), _) => format!("user:{u}"),
            (None, Some(ua)) => format!("ua:{ua}"),
            (None, None) => "unknown".into(),
        }
    }
}

/// A fault for requests that match every field set (fields left `None` match anything).
///
/// ```
/// use lockstep_testkit::kube::FaultRule;
/// // The next 3 Lease writes of the process whose token authenticates as "lockstep-a" fail with 503.
/// let rule = FaultRule::fail(503).resource("leases").verb("update").user("lockstep-a").times(3);
/// # let _ = rule;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// The API group ("" for the core group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The resource's plural name, e.g. `leases`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `status`, or "" for the main resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user a registered bearer token authenticates as (see `KubeEmulator::auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The exact bearer token (registered or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A substring of the User-Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The HTTP method (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A substring of the URL path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_contains: Option<String>,
    /// Answer matching requests with this status (a real Status body; 429/503 carry `Retry-After: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Delay matching requests by this many milliseconds (before failing them, if `status` is set too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// How many matching requests the rule applies to; `None` until it is removed or faults are cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

impl FaultRule {
    /// Matching requests get `status`.
    pub fn fail(status: u16) -> Self {
        FaultRule {
            status: Some(status),
            ..Default::default()
        }
    }

    /// Matching requests are answered `delay` late.
    pub fn delay(delay: Duration) -> Self {
        FaultRule {
            delay_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            ..Default::default()
        }
    }

    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.into());
        self
    }

    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.into());
        self
    }

    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.into());
        self
    }

    pub fn subresource(mut self, sub: &str) -> Self {
        self.subresource = Some(sub.into());
        self
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn user_agent(mut self, contains: &str) -> Self {
        self.user_agent = Some(contains.into());
        self
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.into());
        self
    }

    pub fn path_contains(mut self, part: &str) -> Self {
        self.path_contains = Some(part.into());
        self
    }

    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: usize) -> Self {
        self.count = Some(n);
        self
    }

    /// Why the rule cannot be used, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.status.is_none() && self.delay_ms.is_none() {
            return Err("a fault rule needs \"status\" or \"delayMs\"".into());
        }
        if let Some(s) = self.status {
            if !(400..=599).contains(&s) {
                return Err(format!("status {s} is not an error status (400-599)"));
            }
        }
        if let Some(v) = &self.verb {
            const VERBS: &[&str] = &[
                "get",
                "list",
                "watch",
                "create",
                "update",
                "patch",
                "delete",
                "deletecollection",
            ];
            if !VERBS.contains(&v.as_str()) {
                return Err(format!("verb {v:?} is not one of {VERBS:?}"));
            }
        }
        Ok(())
    }

    fn matches(&self, r: &RequestInfo) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.verb, &r.verb)
            && eq(&self.group, &r.group)
            && eq(&self.resource, &r.resource)
            && eq(&self.subresource, &r.subresource)
            && eq(&self.namespace, &r.namespace)
            && eq(&self.name, &r.name)
            && self
                .user
                .as_deref()
                .is_none_or(|u| r.user.as_deref() == Some(u))
            && self
                .token
                .as_deref()
                .is_none_or(|t| r.token.as_deref() == Some(t))
            && self
                .user_agent
                .as_deref()
                .is_none_or(|ua| r.user_agent.as_deref().is_some_and(|h| h.contains(ua)))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(&r.method))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| r.path.contains(p))
    }
}

/// A rule in force, with what it has done so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveFault {
    pub id: u64,
    pub rule: FaultRule,
    /// Matching requests it still applies to (`None`: until removed).
    pub remaining: Option<usize>,
    /// Requests it has applied to.
    pub hits: u64,
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub delay: Duration,
    pub rules: VecDeque<ActiveFault>,
    pub next_id: u64,
}

/// What to do to one request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Verdict {
    pub delay: Duration,
    pub status: Option<u16>,
}

impl FaultState {
    pub fn add(&mut self, rule: FaultRule) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.rules.push_back(ActiveFault {
            id,
            remaining: rule.count,
            rule,
            hits: 0,
        });
        id
    }

    /// The global delay, plus the delay of every matching delay rule; the first matching failing rule
    /// (oldest first) decides the status. Each rule that applies uses up one of its count.
    pub fn decide(&mut self, r: &RequestInfo) -> Verdict {
        let mut v = Verdict {
            delay: self.delay,
            status: None,
        };
        for f in self.rules.iter_mut() {
            if f.remaining == Some(0) || !f.rule.matches(r) {
                continue;
            }
            let fails = f.rule.status.is_some();
            if fails && v.status.is_some() {
                continue;
            }
            if let Some(ms) = f.rule.delay_ms {
                v.delay += Duration::from_millis(ms);
            }
            if fails {
                v.status = f.rule.status;
            }
            f.hits += 1;
            if let Some(n) = f.remaining.as_mut() {
                *n -= 1;
            }
        }
        self.rules.retain(|f| f.remaining != Some(0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease_put(user: &str) -> RequestInfo {
        RequestInfo {
            method: "PUT".into(),
            path: "/apis/coordination.k8s.io/v1/namespaces/ls/leases/lockstep".into(),
            verb: "update".into(),
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            namespace: "ls".into(),
            name: "lockstep".into(),
            user: Some(user.into()),
            ..Default::default()
        }
    }

    #[test]
    fn rules_match_by_user_and_count_down() {
        let mut s = FaultState::default();
        s.add(FaultRule::fail(503).resource("leases").user("a").times(2));
        assert_eq!(s.decide(&lease_put("b")).status, None);
        assert_eq!(s.decide(&lease_put("a")).status, Some(503));
        assert_eq!(s.decide(&lease_put("a")).status, Some(503));
        assert_eq!(s.decide(&lease_put("a")).status, None);
        assert!(s.rules.is_empty());
    }

    #[test]
    fn rules_without_count_last_and_delays_add_up() {
        let mut s = FaultState::default();
        s.add(FaultRule::fail(500).verb("update"));
        s.add(FaultRule::delay(Duration::from_millis(5)).namespace("ls"));
        s.add(FaultRule::fail(409).verb("update"));
        for _ in 0..5 {
            let v = s.decide(&lease_put("x"));
            assert_eq!(v.status, Some(500));
            assert_eq!(v.delay, Duration::from_millis(5));
        }
        assert_eq!(s.rules[0].hits, 5);
        assert_eq!(s.rules[2].hits, 0, "only the first failing rule applies");
        assert!(FaultRule::fail(200).check().is_err());
        assert!(FaultRule::default().check().is_err());
        assert!(FaultRule::fail(500).verb("put").check().is_err());
    }
}
