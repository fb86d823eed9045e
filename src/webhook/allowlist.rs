//! The subscription allowlist: a second factor beside Basic or token authentication. Every Azure DevOps
//! delivery carries its subscription's id (`subscriptionId`); with an allowlist configured, a delivery
//! from any other subscription (someone who learned the credentials and made their own) is refused.

use std::collections::HashSet;

/// More ids than any organization needs for lockstep; the flag is not a database.
pub const MAX_ALLOWED_SUBSCRIPTIONS: usize = 256;

/// Subscription ids (GUIDs, compared case-insensitively) whose deliveries are accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionAllowlist(HashSet<String>);

/// Why `--webhook-allowed-subscriptions` was refused at start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowlistError {
    #[error("{0:?} is not a subscription id (a GUID such as 4f6e6328-0251-4814-a009-c01dfa368e3f); copy ids from `lockstep hooks sync --dry-run` or the Service Hooks page")]
    NotAGuid(String),
    #[error("more than {MAX_ALLOWED_SUBSCRIPTIONS} subscription ids; lockstep needs a handful per organization")]
    TooMany,
}

impl SubscriptionAllowlist {
    /// From the flag's values (each may itself be a comma-separated list); blanks are ignored.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, AllowlistError> {
        let mut ids = HashSet::new();
        for id in values
            .iter()
            .flat_map(|v| v.as_ref().split(',').map(str::trim).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
        {
            if !is_guid(id) {
                return Err(AllowlistError::NotAGuid(id.chars().take(64).collect()));
            }
            ids.insert(id.to_ascii_lowercase());
            if ids.len() > MAX_ALLOWED_SUBSCRIPTIONS {
                return Err(AllowlistError::TooMany);
            }
        }
        Ok(Self(ids))
    }

    /// Whether the list is on: an empty list allows every subscription.
    pub fn is_enforced(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether a delivery with this `subscriptionId` (absent: `None`) is accepted.
    pub fn allows(&self, subscription_id: Option<&str>) -> bool {
        if !self.is_enforced() {
            return true;
        }
        subscription_id.is_some_and(|id| self.0.contains(&id.to_ascii_lowercase()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4f6e6328-0251-4814-a009-c01dfa368e3f";
    const B: &str = "00c5a9b8-3a7d-4a3c-9f4e-2f0d6a1b7c11";

    #[test]
    fn listed_ids_pass_case_insensitively_and_others_do_not() {
        let list = SubscriptionAllowlist::parse(&[format!("{A}, {}", B.to_uppercase())]).unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.allows(Some(&A.to_uppercase())));
        assert!(list.allows(Some(B)));
        assert!(!list.allows(Some("11111111-1111-1111-1111-111111111111")));
        assert!(
            !list.allows(None),
            "a payload without an id is not from a listed subscription"
        );
    }

    #[test]
    fn an_empty_list_allows_everything() {
        let list = SubscriptionAllowlist::parse::<&str>(&[]).unwrap();
        assert!(!list.is_enforced());
        assert!(list.allows(None));
    }

    #[test]
    fn bad_ids_and_huge_lists_are_refused() {
        assert_eq!(
            SubscriptionAllowlist::parse(&["not-a-guid"]),
            Err(AllowlistError::NotAGuid("not-a-guid".into()))
        );
        let many: Vec<String> = (0..=MAX_ALLOWED_SUBSCRIPTIONS)
            .map(|i| format!("{i:08x}-0000-0000-0000-000000000000"))
            .collect();
        assert_eq!(
            SubscriptionAllowlist::parse(&many),
            Err(AllowlistError::TooMany)
        );
    }
}
