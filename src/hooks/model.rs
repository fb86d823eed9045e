//! A service-hook subscription in the shape Subscriptions - List returns (docs/ado-api.md §8.4,
//! fixture `hooks-subscriptions-list.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The fields lockstep reads; everything else in the answer is ignored.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    #[serde(default)]
    pub id: String,
    /// Absent while enabled (Microsoft's examples leave it out); `onProbation`, `disabledBySystem`, ...
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub publisher_id: String,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub consumer_id: String,
    #[serde(default)]
    pub consumer_action_id: String,
    #[serde(default)]
    pub publisher_inputs: BTreeMap<String, String>,
    #[serde(default)]
    pub consumer_inputs: BTreeMap<String, String>,
}

/// The list answer: `{count, value}`.
#[derive(Deserialize, Debug, Default)]
pub struct SubscriptionList {
    #[serde(default)]
    pub value: Vec<Subscription>,
}

impl Subscription {
    /// `enabled` when Azure DevOps left `status` out, else its spelling.
    pub fn state(&self) -> &str {
        match self.status.as_deref() {
            None | Some("") => "enabled",
            Some(s) => s,
        }
    }

    /// Enabled: deliveries flow. `onProbation` still receives retries but loses new events.
    pub fn is_healthy(&self) -> bool {
        self.state().eq_ignore_ascii_case("enabled")
    }

    /// A Web Hooks (`webHooks`/`httpRequest`) subscription posting to `url`.
    pub fn posts_to(&self, url: &str) -> bool {
        self.consumer_id == "webHooks"
            && self.consumer_action_id == "httpRequest"
            && self
                .consumer_inputs
                .get("url")
                .is_some_and(|u| u.trim_end_matches('/') == url.trim_end_matches('/'))
    }
}
