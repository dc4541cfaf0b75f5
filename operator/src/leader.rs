//! Leader election over a `coordination.k8s.io` Lease, so the operator can run
//! two replicas: one reconciles, the other waits to take over.
//!
//! The lease is handled by `kube-lease-manager` (server-side apply of the
//! Lease, so two candidates can never both hold it). The leader renews it
//! before `grace` runs out; a standby takes it once it is released (a replica
//! shutting down releases it at once) or has gone `duration` without renewal
//! (a replica that died). A leader that loses the lease stops reconciling and
//! [`lead`] reports it: the process then exits, and Kubernetes restarts it as a
//! standby, the usual client-go behaviour.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Where and how long the lease is held.
#[derive(Clone, Debug)]
pub struct Election {
    /// The operator's own namespace (the Lease lives there).
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal: the longest a standby
    /// waits for a leader that died.
    pub duration: Duration,
    /// How long before expiry the leader renews.
    pub grace: Duration,
}

impl Election {
    /// The lease timings as whole seconds, checked (the lease manager panics on bad ones).
    fn seconds(&self) -> Result<(u64, u64)> {
        let (duration, grace) = (self.duration.as_secs(), self.grace.as_secs());
        if grace == 0 || duration <= grace {
            return Err(Error::Election(format!(
                "the lease duration ({duration}s) must be longer than its renewal grace ({grace}s), and the grace at least 1s"
            )));
        }
        if self.identity.trim().is_empty() {
            return Err(Error::Election(
                "leader election needs this replica's identity (POD_NAME)".into(),
            ));
        }
        Ok((duration, grace))
    }
}

/// How a term of leadership ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `shutdown` was cancelled: the work stopped and the lease is released.
    Shutdown,
    /// Another replica holds the lease now: the work was stopped.
    Lost,
}

/// Waits for the lease, then runs `work` while holding it. `work` gets a
/// token that is cancelled on shutdown or when the lease is lost, and must
/// return soon after.
pub async fn lead<F, Fut>(
    client: Client,
    election: &Election,
    shutdown: CancellationToken,
    work: F,
) -> Result<Outcome>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let (duration, grace) = election.seconds()?;
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_parameters(LeaseParams::new(&election.identity, duration, grace))
        .build()
        .await
        .map_err(|e| Error::Election(format!("Lease {}: {e}", election.lease)))?;
    let (mut leading, task) = manager.watch().await;
    info!(
        lease = election.lease,
        identity = election.identity,
        "waiting for the leader lease"
    );
    while !*leading.borrow_and_update() {
        tokio::select! {
            () = shutdown.cancelled() => {
                drop(leading);
                finish(task).await;
                return Ok(Outcome::Shutdown);
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    finish(task).await;
                    return Err(Error::Election("the lease manager stopped".into()));
                }
            }
        }
    }
    info!(
        lease = election.lease,
        identity = election.identity,
        "leading: reconciling"
    );
    let stop = shutdown.child_token();
    let work = work(stop.clone());
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            () = &mut work => break Outcome::Shutdown,
            changed = leading.changed() => {
                if changed.is_err() || !*leading.borrow_and_update() {
                    warn!(lease = election.lease, "lost the leader lease; stopping");
                    stop.cancel();
                    (&mut work).await;
                    break Outcome::Lost;
                }
            }
        }
    };
    // Closing the channel makes the lease manager release the lease.
    drop(leading);
    finish(task).await;
    Ok(outcome)
}

async fn finish(
    task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) {
    match task.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "releasing the leader lease failed"),
        Err(e) => warn!(error = %e, "the lease manager task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(duration: u64, grace: u64, identity: &str) -> Election {
        Election {
            namespace: "ns".into(),
            lease: "l".into(),
            identity: identity.into(),
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        }
    }

    #[test]
    fn bad_timings_and_a_missing_identity_are_clear_errors() {
        assert_eq!(election(15, 5, "a").seconds().unwrap(), (15, 5));
        for bad in [
            election(5, 5, "a"),
            election(5, 0, "a"),
            election(15, 5, " "),
        ] {
            let message = bad.seconds().unwrap_err().to_string();
            assert!(
                message.contains("lease") || message.contains("POD_NAME"),
                "{message}"
            );
        }
    }
}
