//! The short way from the webhook receiver to a controller in the same process.
//!
//! Without it a delivery costs, per affected object, an annotation patch, the watch event it causes and
//! only then the reconcile: at 100 objects per pipeline that is 100 writes queued in front of the status
//! writes the sender is waiting for. With it the receiver hands the objects straight to the controller
//! ([`HookRelay::offer`]), together with the freshness floor the annotation would have carried, waits a
//! bounded time for their reconciles, and patches the annotation only on objects that were not reconciled
//! with an answer fetched after the floor. Those are exactly the ones a restart or a change of leader
//! could lose the hint for, so the annotation still covers everything the status does not yet show.
//!
//! A replica that does not lead has no controller attached: [`HookRelay::offer`] takes nothing and the
//! receiver patches every object, as before.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::mpsc;
use futures::Stream;
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::Resource;
use tokio::sync::Notify;

/// Objects queued to the controller and not yet taken: enough for a few deliveries to every gate of a
/// large pipeline. When it is full the receiver patches instead, which is slower but loses nothing.
pub const TRIGGER_CAPACITY: usize = 4096;

type Key<K> = ObjectRef<K>;
/// Per object, the deliveries waiting for it.
type Waiting<K> = HashMap<Key<K>, Vec<Arc<Batch<K>>>>;

/// One delivery's objects that the controller took: what is still waiting for a fresh reconcile.
struct Batch<K: Resource> {
    floor: Timestamp,
    remaining: Mutex<HashSet<Key<K>>>,
    done: Notify,
}

/// Hand-off between the receiver and one kind's controller; see the module docs.
pub struct HookRelay<K: Resource> {
    trigger: Mutex<Option<mpsc::Sender<Key<K>>>>,
    /// Entries live only while a receiver waits (bounded by its deadline); [`Offered`] removes its own when
    /// it ends, however it ends.
    pending: Mutex<Waiting<K>>,
}

impl<K> Default for HookRelay<K>
where
    K: Resource,
    K::DynamicType: Eq + Hash + Clone,
{
    fn default() -> Self {
        Self {
            trigger: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Resource> std::fmt::Debug for HookRelay<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRelay")
            .field("attached", &lock(&self.trigger).is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single insert, remove or lookup: a panic cannot leave a half-done
    // update behind, so a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K> HookRelay<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the controller when it starts (again, after regaining leadership): the stream of objects
    /// to reconcile now, for `Controller::reconcile_on`. A previous stream stops receiving.
    pub fn attach(&self) -> impl Stream<Item = Key<K>> + Send + 'static
    where
        K: Send + Sync,
    {
        let (tx, rx) = mpsc::channel(TRIGGER_CAPACITY);
        *lock(&self.trigger) = Some(tx);
        rx
    }

    /// Hand `objects` to the attached controller, asking for an answer fetched no earlier than `floor`.
    /// What the controller could not take (none attached, or its queue is full) is in
    /// [`Offered::refused`]; the rest is waited for with [`Offered::wait`].
    pub fn offer(self: &Arc<Self>, objects: &[Key<K>], floor: Timestamp) -> Offered<K> {
        let batch = Arc::new(Batch {
            floor,
            remaining: Mutex::new(HashSet::new()),
            done: Notify::new(),
        });
        let mut refused = Vec::new();
        let mut trigger = lock(&self.trigger);
        for object in objects {
            let Some(tx) = trigger.as_mut() else {
                refused.push(object.clone());
                continue;
            };
            // Registered before it is sent, so the reconcile finds the floor.
            lock(&batch.remaining).insert(object.clone());
            lock(&self.pending)
                .entry(object.clone())
                .or_default()
                .push(batch.clone());
            if let Err(e) = tx.try_send(object.clone()) {
                self.forget(object, &batch);
                lock(&batch.remaining).remove(object);
                refused.push(object.clone());
                if e.is_disconnected() {
                    // The controller stopped (lost leadership): patch from now on.
                    *trigger = None;
                }
            }
        }
        drop(trigger);
        Offered {
            relay: self.clone(),
            batch,
            refused,
        }
    }

    /// The freshness floor deliveries waiting for `object` ask for (the latest), if any.
    pub fn floor(&self, object: &Key<K>) -> Option<Timestamp> {
        lock(&self.pending)
            .get(object)
            .and_then(|batches| batches.iter().map(|b| b.floor).max())
    }

    /// `object` was reconciled on an answer whose request started at `fresh_from`, and its status is
    /// written: every delivery whose floor that satisfies stops waiting for it.
    pub fn served(&self, object: &Key<K>, fresh_from: Timestamp) {
        let satisfied: Vec<Arc<Batch<K>>> = {
            let mut pending = lock(&self.pending);
            let Some(batches) = pending.get_mut(object) else {
                return;
            };
            let (done, waiting): (Vec<_>, Vec<_>) =
                batches.drain(..).partition(|b| b.floor <= fresh_from);
            if waiting.is_empty() {
                pending.remove(object);
            } else {
                *batches = waiting;
            }
            done
        };
        for batch in satisfied {
            let mut remaining = lock(&batch.remaining);
            remaining.remove(object);
            if remaining.is_empty() {
                batch.done.notify_one();
            }
        }
    }

    fn forget(&self, object: &Key<K>, batch: &Arc<Batch<K>>) {
        let mut pending = lock(&self.pending);
        if let Some(batches) = pending.get_mut(object) {
            batches.retain(|b| !Arc::ptr_eq(b, batch));
            if batches.is_empty() {
                pending.remove(object);
            }
        }
    }

    /// Objects some delivery is waiting for; for tests.
    pub fn pending_len(&self) -> usize {
        lock(&self.pending).len()
    }
}

/// What [`HookRelay::offer`] handed over.
pub struct Offered<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    relay: Arc<HookRelay<K>>,
    batch: Arc<Batch<K>>,
    refused: Vec<Key<K>>,
}

impl<K> Offered<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    /// Objects the controller did not take.
    pub fn refused(&self) -> &[Key<K>] {
        &self.refused
    }

    /// How many objects the controller took.
    pub fn taken(&self) -> usize {
        lock(&self.batch.remaining).len()
    }

    /// Wait up to `limit` for every taken object to be reconciled fresh; then everything that still needs
    /// the annotation: the refused objects and those not reconciled in time.
    pub async fn wait(mut self, limit: Duration) -> Vec<Key<K>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.batch.done.notified();
            if lock(&self.batch.remaining).is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let mut left = std::mem::take(&mut self.refused);
        left.extend(self.unregister());
        left
    }

    /// Stop waiting: remove this batch from the relay; the objects it still waited for.
    fn unregister(&self) -> Vec<Key<K>> {
        let remaining: Vec<Key<K>> = lock(&self.batch.remaining).drain().collect();
        for object in &remaining {
            self.relay.forget(object, &self.batch);
        }
        remaining
    }
}

impl<K> Drop for Offered<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    // A delivery whose connection closed mid-wait leaves nothing behind.
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::PipelineGate;
    use futures::StreamExt;

    type Relay = HookRelay<PipelineGate>;

    fn gate(name: &str) -> Key<PipelineGate> {
        ObjectRef::new(name).within("ns")
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid")
    }

    #[tokio::test]
    async fn without_a_controller_everything_is_refused_at_once() {
        let relay = Arc::new(Relay::new());
        let offered = relay.offer(&[gate("a"), gate("b")], at(0));
        assert_eq!(offered.taken(), 0);
        assert_eq!(relay.floor(&gate("a")), None);
        let started = std::time::Instant::now();
        let left = offered.wait(Duration::from_secs(5)).await;
        assert_eq!(left, [gate("a"), gate("b")]);
        assert!(started.elapsed() < Duration::from_secs(1), "no wait");
    }

    #[tokio::test]
    async fn served_objects_need_no_annotation_and_the_rest_are_returned() {
        let relay = Arc::new(Relay::new());
        let mut triggers = relay.attach();
        let offered = relay.offer(&[gate("a"), gate("b")], at(10));
        assert_eq!(offered.taken(), 2);
        assert_eq!(triggers.next().await, Some(gate("a")));
        assert_eq!(triggers.next().await, Some(gate("b")));
        assert_eq!(relay.floor(&gate("a")), Some(at(10)));

        // An answer asked for before the delivery does not count.
        relay.served(&gate("a"), at(9));
        assert_eq!(relay.floor(&gate("a")), Some(at(10)));
        relay.served(&gate("a"), at(11));
        assert_eq!(relay.floor(&gate("a")), None);

        let left = offered.wait(Duration::from_millis(50)).await;
        assert_eq!(left, [gate("b")], "b was never reconciled");
        assert_eq!(relay.pending_len(), 0, "nothing left behind");
    }

    #[tokio::test]
    async fn the_wait_ends_as_soon_as_the_last_object_is_served() {
        let relay = Arc::new(Relay::new());
        let _triggers = relay.attach();
        let offered = relay.offer(&[gate("a"), gate("b")], at(0));
        let serve = {
            let relay = relay.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                relay.served(&gate("a"), at(1));
                relay.served(&gate("b"), at(0));
            }
        };
        let started = std::time::Instant::now();
        let (left, ()) = tokio::join!(offered.wait(Duration::from_secs(30)), serve);
        assert!(left.is_empty());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn the_latest_floor_of_overlapping_deliveries_applies() {
        let relay = Arc::new(Relay::new());
        let _triggers = relay.attach();
        let first = relay.offer(&[gate("a")], at(0));
        let second = relay.offer(&[gate("a")], at(5));
        assert_eq!(relay.floor(&gate("a")), Some(at(5)));
        // Fresh enough for the first delivery only.
        relay.served(&gate("a"), at(3));
        assert!(first.wait(Duration::ZERO).await.is_empty());
        assert_eq!(relay.floor(&gate("a")), Some(at(5)));
        assert_eq!(second.wait(Duration::ZERO).await, [gate("a")]);
        assert_eq!(relay.pending_len(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_or_a_stopped_controller_refuses() {
        let relay = Arc::new(Relay::new());
        let triggers = relay.attach();
        let many: Vec<_> = (0..TRIGGER_CAPACITY + 10)
            .map(|i| gate(&format!("g{i}")))
            .collect();
        let offered = relay.offer(&many, at(0));
        assert!(offered.taken() >= TRIGGER_CAPACITY);
        assert!(!offered.refused().is_empty(), "the queue is bounded");
        drop(offered);
        assert_eq!(
            relay.pending_len(),
            0,
            "a dropped offer leaves nothing behind"
        );

        drop(triggers);
        let offered = relay.offer(&[gate("a")], at(0));
        assert_eq!(offered.refused(), [gate("a")]);
        assert_eq!(relay.pending_len(), 0);
    }
}
