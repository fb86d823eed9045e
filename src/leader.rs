//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): only the holder runs the
//! controllers. A standby takes the Lease once the holder stops renewing it (at most one lease duration
//! after the holder died); a holder that loses the Lease stops reconciling and goes back to standby; on
//! shutdown the Lease is released so a standby takes over at once.

use std::future::Future;
use std::time::Duration;

use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
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
    info!(identity = %config.identity, lease = %config.name, namespace = %config.namespace, "joined leader election");
    loop {
        on_standby();
        tokio::select! {
            changed = leading.wait_for(|is_leader| *is_leader) => {
                if changed.is_err() {
                    warn!("leader election stopped unexpectedly");
                    break;
                }
            }
            () = shutdown_requested(shutdown.clone()) => break,
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
        lead(Box::pin(stop)).await;
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
