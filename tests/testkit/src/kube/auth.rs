//! Who a bearer token is, and what that user may do: the registry behind the emulator's TokenReview and
//! SubjectAccessReview endpoints and behind fault rules that match a client by user.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A user a token authenticates as (`authentication.k8s.io/v1` `UserInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Permission for a user or a group, as an RBAC rule bound by a RoleBinding (`namespace` set) or a
/// ClusterRoleBinding (`namespace` None). `"*"` in verbs, apiGroups or resources matches anything, as in
/// RBAC (`k8s.io/kubernetes/pkg/apis/rbac/v1/evaluation_helpers.go`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// Exactly one of user and group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub verbs: Vec<String>,
    /// API groups ("" is the core group).
    pub api_groups: Vec<String>,
    /// Plural resource names, or `resource/subresource`.
    pub resources: Vec<String>,
    /// Object names this grant is limited to (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// None: cluster-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Grant {
    /// `verbs` on `resources` of `api_group` for a user, cluster-wide until narrowed with `in_namespace`.
    pub fn user(user: &str, verbs: &[&str], api_group: &str, resources: &[&str]) -> Self {
        Grant {
            user: Some(user.into()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: vec![api_group.into()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The same for every member of a group.
    pub fn group(group: &str, verbs: &[&str], api_group: &str, resources: &[&str]) -> Self {
        Grant {
            group: Some(group.into()),
            user: None,
            ..Grant::user("", verbs, api_group, resources)
        }
    }

    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn names(mut self, names: &[&str]) -> Self {
        self.resource_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        match (&self.user, &self.group) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("a grant names exactly one of \"user\" and \"group\"".into()),
        }
        if self.verbs.is_empty() || self.api_groups.is_empty() || self.resources.is_empty() {
            return Err("a grant needs \"verbs\", \"apiGroups\" and \"resources\"".into());
        }
        Ok(())
    }
}

/// The attributes a SubjectAccessReview asks about (`spec.resourceAttributes`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Attributes {
    pub user: String,
    pub groups: Vec<String>,
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl Grant {
    /// RBAC's `RuleAllows`: verb, group, resource (with subresource as `resource/sub`), name.
    fn allows(&self, a: &Attributes) -> bool {
        let subject = match (&self.user, &self.group) {
            (Some(u), _) => *u == a.user,
            (None, Some(g)) => a.groups.contains(g),
            (None, None) => false,
        };
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        // A RoleBinding grants only in its namespace; a ClusterRoleBinding everywhere.
        let scope = self.namespace.as_deref().is_none_or(|ns| ns == a.namespace);
        subject
            && scope
            && has(&self.verbs, &a.verb)
            && has(&self.api_groups, &a.group)
            && (has(&self.resources, &resource)
                || self.resources.iter().any(|r| {
                    // `*/status`-style and `resource/*` wildcards of RBAC.
                    r.split_once('/').is_some_and(|(rr, rs)| {
                        (rr == "*" || rr == a.resource) && (rs == "*" || rs == a.subresource)
                    })
                }))
            && (self.resource_names.is_empty()
                || (!a.name.is_empty() && self.resource_names.contains(&a.name)))
    }
}

/// Tokens, grants and counters of the reviews asked.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    tokens: HashMap<String, UserInfo>,
    grants: Vec<Grant>,
    pub token_reviews: u64,
    pub access_reviews: u64,
}

impl AuthState {
    pub fn add_token(&mut self, token: &str, user: UserInfo) {
        self.tokens.insert(token.to_string(), user);
    }

    pub fn remove_token(&mut self, token: &str) -> bool {
        self.tokens.remove(token).is_some()
    }

    pub fn user_of(&self, token: &str) -> Option<&UserInfo> {
        self.tokens.get(token)
    }

    pub fn grant(&mut self, g: Grant) {
        self.grants.push(g);
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    pub fn clear_grants(&mut self) {
        self.grants.clear();
    }

    #[cfg(test)]
    pub(crate) fn allowed(&self, a: &Attributes) -> bool {
        self.decide(a).is_some()
    }

    /// Some(reason) when allowed, in the words of RBAC's authorizer
    /// (`plugin/pkg/auth/authorizer/rbac/rbac.go`: `RBAC: allowed by RoleBinding "b/ns" of Role "r" to
    /// User "u"`); the emulator names grant N's binding and role `emulator-grant-N`. `system:masters` is
    /// allowed by the privileged-group authorizer, which gives no reason.
    pub(crate) fn decide(&self, a: &Attributes) -> Option<String> {
        if a.groups.iter().any(|g| g == "system:masters") {
            return Some(String::new());
        }
        let (i, g) = self.grants.iter().enumerate().find(|(_, g)| g.allows(a))?;
        let name = format!("emulator-grant-{}", i + 1);
        let subject = match (&g.user, &g.group) {
            (Some(u), _) => format!("User \"{u}\""),
            (None, Some(gr)) => format!("Group \"{gr}\""),
            (None, None) => String::new(),
        };
        Some(match &g.namespace {
            Some(ns) => {
                format!("RBAC: allowed by RoleBinding \"{name}/{ns}\" of Role \"{name}\" to {subject}")
            }
            None => format!(
                "RBAC: allowed by ClusterRoleBinding \"{name}\" of ClusterRole \"{name}\" to {subject}"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(user: &str, groups: &[&str], verb: &str, ns: &str) -> Attributes {
        Attributes {
            user: user.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            verb: verb.into(),
            group: "lockstep.dev".into(),
            resource: "pipelinegates".into(),
            namespace: ns.into(),
            name: "g".into(),
            ..Default::default()
        }
    }

    #[test]
    fn grants_follow_rbac_rule_matching() {
        let mut s = AuthState::default();
        s.grant(
            Grant::user("alice", &["get"], "lockstep.dev", &["pipelinegates"]).in_namespace("a"),
        );
        s.grant(Grant::group("viewers", &["get", "list"], "*", &["*"]));
        assert!(s.allowed(&attrs("alice", &[], "get", "a")));
        assert!(
            !s.allowed(&attrs("alice", &[], "get", "b")),
            "RoleBinding is namespaced"
        );
        assert!(!s.allowed(&attrs("alice", &[], "list", "a")));
        assert!(s.allowed(&attrs("bob", &["viewers"], "list", "b")));
        assert!(!s.allowed(&attrs("bob", &[], "get", "b")));
        let mut status = attrs("alice", &[], "get", "a");
        status.subresource = "status".into();
        assert!(!s.allowed(&status), "a subresource needs its own rule");
        s.grant(Grant::user(
            "alice",
            &["*"],
            "lockstep.dev",
            &["pipelinegates/status"],
        ));
        assert!(s.allowed(&status));
        s.grant(Grant::user("carol", &["get"], "lockstep.dev", &["pipelinegates"]).names(&["x"]));
        assert!(!s.allowed(&attrs("carol", &[], "get", "a")));
        assert!(Grant::default().check().is_err());
    }
}
