//! What lockstep writes on its objects besides `status`: the requested-at annotation (a webhook's or a
//! human's "reconcile now"), and the field managers its writes appear under in `managedFields`.

use jiff::Timestamp;
use kube::ResourceExt;

/// Annotation a webhook (or a human) sets to ask for a reconcile now (Flux's `requestedAt` pattern). Its
/// value is an RFC 3339 time, and the reconcile then uses no cached Azure DevOps answer older than it.
pub const REQUESTED_AT_ANNOTATION: &str = "lockstep.dev/requested-at";

/// Field manager of the reconcilers' status writes (server-side apply).
pub const STATUS_FIELD_MANAGER: &str = "lockstep";

/// Field manager of the webhook receiver's annotation patches: a name of its own, so `managedFields`
/// tells a hint from a status write.
pub const WEBHOOK_FIELD_MANAGER: &str = "lockstep-webhook";

/// The time in `obj`'s [`REQUESTED_AT_ANNOTATION`], when it holds a valid one.
pub fn requested_at<K: ResourceExt>(obj: &K) -> Option<Timestamp> {
    obj.annotations()
        .get(REQUESTED_AT_ANNOTATION)
        .and_then(|v| v.parse::<Timestamp>().ok())
}
