//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): only the holder runs the
//! controllers. A standby takes the Lease once the holder stops renewing it (at most one lease duration
//! after the holder died); a holder that loses the Lease stops reconciling and goes back to standby; on
//! shutdown the Lease is released so a standby takes over at once.
//!
//! kube-lease-manager keeps saying "leader" while its renewals fail (it logs and retries), so a leader
//! cut off from the API server would keep reconciling after a standby took over: two writers. A guard
//! ([`confirm_leadership`]) therefore reads the Lease while leading and steps down, dropping the
//! controllers at once, when it has not seen a renewal recent enough to be sure the Lease is still ours
//! (client-go's leaderelection does the same with its renew deadline). It resumes only after it sees the
//! Lease held by this replica with a renewal newer than the one it stepped down on.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Where the Lease is and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    fn duration_secs(&self) -> u64 {
        self.duration.as_secs().max(2)
    }

    /// Renew this long before expiry: a third of the duration, at least a second, so a loaded node still
    /// renews in time.
    fn grace_secs(&self) -> u64 {
        (self.duration_secs() / 3).max(1)
    }

    /// How often the guard reads the Lease while leading: a quarter of the renewal grace.
    fn confirm_every(&self) -> Duration {
        Duration::from_secs(self.grace_secs()) / 4
    }

    /// How long after seeing a renewal the guard still trusts it: the lease duration less half the grace.
    /// The Lease expires `duration` after the renewal, which happened before we saw it (at most one
    /// [`Self::confirm_every`] before), so stepping down here is always before the expiry; the next
    /// renewal comes `duration - grace` after this one and is seen within `confirm_every`, before this.
    fn trust_for(&self) -> Duration {
        Duration::from_secs(self.duration_secs()) - Duration::from_secs(self.grace_secs()) / 2
    }
}

/// What the guard saw of the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LeaseView {
    /// Held by us; the renewal (or acquisition) time as the API server stores it.
    Ours(Option<String>),
    /// Held by someone else, or by nobody.
    NotOurs(Option<String>),
}

async fn read_lease(api: &Api<Lease>, config: &LeaseConfig) -> Option<LeaseView> {
    let lease = tokio::time::timeout(config.confirm_every(), api.get_opt(&config.name))
        .await
        .ok()?
        .ok()?;
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0.to_string());
    Some(
        if spec.holder_identity.as_deref() == Some(config.identity.as_str()) {
            LeaseView::Ours(renewed)
        } else {
            LeaseView::NotOurs(spec.holder_identity)
        },
    )
}

/// Runs while this replica leads; returns why it must stop at once: the Lease is someone else's, or no
/// renewal was seen for [`LeaseConfig::trust_for`] (the API server refuses or cannot be reached).
/// `last_renewal` is updated with each renewal seen, for [`wait_for_renewal`].
async fn confirm_leadership(
    api: &Api<Lease>,
    config: &LeaseConfig,
    last_renewal: &mut Option<String>,
) -> String {
    // The manager just acquired or renewed the Lease when it reported leadership.
    let mut trusted_until = Instant::now() + config.trust_for();
    loop {
        tokio::time::sleep(config.confirm_every()).await;
        match read_lease(api, config).await {
            Some(LeaseView::Ours(renewed)) if renewed != *last_renewal => {
                *last_renewal = renewed;
                trusted_until = Instant::now() + config.trust_for();
            }
            Some(LeaseView::Ours(_)) | None => {}
            Some(LeaseView::NotOurs(holder)) => {
                return format!(
                    "the Lease is now held by {}",
                    holder.as_deref().unwrap_or("nobody")
                );
            }
        }
        if Instant::now() >= trusted_until {
            return format!(
                "no renewal of the Lease confirmed for {}s (the API server refuses or cannot be reached); it may expire any moment",
                config.trust_for().as_secs_f64()
            );
        }
    }
}

/// After stepping down while the manager still believes it leads: resolves once the Lease is seen held
/// by this replica with a renewal newer than `stepped_down_on` (the manager renewed or re-acquired it).
async fn wait_for_renewal(
    api: &Api<Lease>,
    config: &LeaseConfig,
    stepped_down_on: &Option<String>,
) {
    loop {
        tokio::time::sleep(config.confirm_every()).await;
        if let Some(LeaseView::Ours(renewed)) = read_lease(api, config).await {
            if renewed.is_some() && renewed != *stepped_down_on {
                return;
            }
        }
    }
}

/// Resolves when `shutdown` turns true (or its sender is gone).
pub async fn shutdown_requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Turn a future into one that is `Send + Sync` (what `Controller::graceful_shutdown_on` requires) by
/// running it on a task and waiting on a oneshot.
pub fn sync_signal(
    fut: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        fut.await;
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

/// Take part in the election until `shutdown`; while leader, run `lead(stop)`, where `stop` resolves when
/// leadership is lost or shutdown begins. `on_standby` is called each time this replica is not leading.
pub async fn run_elected<L, Fut>(
    client: kube::Client,
    config: LeaseConfig,
    shutdown: watch::Receiver<bool>,
    on_standby: impl Fn(),
    mut lead: L,
) where
    L: FnMut(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.duration_secs())
            .with_grace(config.grace_secs())
            .with_field_manager(format!("lockstep-{}", config.identity))
            .build();
        tokio::select! {
            result = built => match result {
                Ok(m) => break m,
                Err(e) => warn!(error = %e, lease = %config.name, "could not set up leader election; retrying in 5s"),
            },
            () = shutdown_requested(shutdown.clone()) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = shutdown_requested(shutdown.clone()) => return,
        }
    };
    let (mut leading, task) = manager.watch().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    info!(identity = %config.identity, lease = %config.name, namespace = %config.namespace, "joined leader election");
    // Set when the guard stepped down while the manager still reported leadership.
    let mut stepped_down_on: Option<Option<String>> = None;
    loop {
        on_standby();
        if let Some(renewal) = stepped_down_on.take() {
            // Lead again only once the Lease is ours with a fresh renewal, or the manager lost and
            // re-acquires it (below).
            tokio::select! {
                () = wait_for_renewal(&leases, &config, &renewal) => {}
                lost = leading.wait_for(|is_leader| !*is_leader) => {
                    if lost.is_err() {
                        warn!("leader election stopped unexpectedly");
                        break;
                    }
                    continue;
                }
                () = shutdown_requested(shutdown.clone()) => break,
            }
        } else {
            tokio::select! {
                changed = leading.wait_for(|is_leader| *is_leader) => {
                    if changed.is_err() {
                        warn!("leader election stopped unexpectedly");
                        break;
                    }
                }
                () = shutdown_requested(shutdown.clone()) => break,
            }
        }
        info!(identity = %config.identity, "became leader; starting controllers");
        let mut lost = leading.clone();
        let stop_shutdown = shutdown.clone();
        let stop = sync_signal(async move {
            tokio::select! {
                _ = lost.wait_for(|is_leader| !*is_leader) => {}
                () = shutdown_requested(stop_shutdown) => {}
            }
        });
        let mut last_renewal = None;
        tokio::select! {
            () = lead(Box::pin(stop)) => {}
            // Dropping the controllers cancels in-flight reconciles: no write after this point.
            why = confirm_leadership(&leases, &config, &mut last_renewal) => {
                warn!(identity = %config.identity, reason = %why, "stepping down: controllers stopped at once, no more status writes or Events until this replica holds the Lease again");
                stepped_down_on = Some(last_renewal);
                continue;
            }
        }
        if *shutdown.borrow() {
            break;
        }
        warn!(identity = %config.identity, "lost leadership; controllers stopped, back to standby");
    }
    // Closing the channel makes the manager release the Lease, so a standby need not wait for expiry.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(Ok(_))) => info!("released the leader Lease"),
        Ok(Ok(Err(e))) => {
            warn!(error = %e, "could not release the leader Lease; it expires on its own")
        }
        Ok(Err(e)) => warn!(error = %e, "leader election task failed"),
        Err(_) => warn!("timed out releasing the leader Lease; it expires on its own"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_trusts_a_renewal_until_before_expiry_and_past_the_next_renewal() {
        for secs in [2, 3, 4, 6, 15, 60, 3600] {
            let config = LeaseConfig {
                name: "l".into(),
                namespace: "n".into(),
                identity: "me".into(),
                duration: Duration::from_secs(secs),
            };
            let (duration, grace) = (
                Duration::from_secs(config.duration_secs()),
                Duration::from_secs(config.grace_secs()),
            );
            let (poll, trust) = (config.confirm_every(), config.trust_for());
            // A renewal seen up to one poll late still steps down before the Lease expires...
            assert!(trust + poll <= duration, "{secs}s");
            // ...and the next renewal (duration - grace later), seen up to one poll late, comes first.
            assert!(duration - grace + poll < trust, "{secs}s");
        }
    }
}
