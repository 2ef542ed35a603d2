//! One instance at a time runs a mirror's passes, when several instances
//! (and `wharf sync` runs) share the mirror's `database_url`: a pass runs
//! under a lease kept in the database, renewed every `lease_heartbeat`
//! while it runs. An instance killed mid-pass stops renewing, and another
//! takes the lease over once it expires (twice the heartbeat).

use std::{
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use tracing::{info, warn};
use wharf_db::{Db, LeaseInfo};
use wharf_sync::{PassKind, Summary, SyncError};

/// The lease of one mirror's passes, as this process holds it.
pub struct PassLease {
    db: Db,
    registry: String,
    holder: String,
    heartbeat: Duration,
}

/// What became of a pass asked to run under the lease.
pub enum Leased {
    /// It ran (and may have failed in part: see its summary).
    Ran(Summary),
    /// Another holder has the lease.
    Busy(LeaseInfo),
    /// The lease was ours, but the pass was not needed (see [`PassLease::run`]).
    Skipped(LeaseInfo),
}

impl PassLease {
    /// The lease of mirror `registry` in `db`, renewed every `heartbeat`.
    pub fn new(db: Db, registry: &str, heartbeat: Duration) -> Self {
        Self {
            db,
            registry: registry.to_owned(),
            holder: holder_name(),
            heartbeat,
        }
    }

    /// How long a lease lasts unless renewed.
    fn ttl(&self) -> Duration {
        self.heartbeat * 2
    }

    /// How often an instance waiting for the lease asks again.
    pub fn poll_interval(&self) -> Duration {
        self.heartbeat / 4
    }

    /// Takes the lease, and unless `needed` says no (given the lease, which
    /// tells when the last full pass ended), runs the pass it returns while
    /// renewing the lease. When the lease can't be renewed in time (the
    /// database is unreachable, or another instance took it over), the pass
    /// is stopped where it is, as a killed process would be, before anyone
    /// else may start one: every write of a pass is atomic.
    pub async fn run<F, P>(&self, kind: PassKind, needed: P) -> Result<Leased, SyncError>
    where
        P: FnOnce(&LeaseInfo) -> Option<F>,
        F: Future<Output = Result<Summary, SyncError>>,
    {
        let leases = self.db.leases(&self.registry);
        let setup = |e: wharf_db::DbError| {
            SyncError::Setup(format!(
                "cannot use the lease of mirror `{}` in its database: {e}",
                self.registry
            ))
        };
        let lease = match leases
            .acquire(&self.holder, self.ttl())
            .await
            .map_err(setup)?
        {
            Ok(lease) => lease,
            Err(held) => return Ok(Leased::Busy(held)),
        };
        let Some(pass) = needed(&lease) else {
            leases.release(&self.holder, false).await.map_err(setup)?;
            return Ok(Leased::Skipped(lease));
        };
        info!(registry = %self.registry, holder = %self.holder, kind = ?kind, "lease taken; pass started");
        let outcome = tokio::select! {
            outcome = pass => outcome,
            lost = self.keep() => Err(lost),
        };
        let full_ended = kind == PassKind::Full && outcome.is_ok();
        if let Err(e) = leases.release(&self.holder, full_ended).await {
            // It expires by itself.
            warn!(registry = %self.registry, error = %e, "cannot release the lease of the mirror's passes");
        }
        info!(registry = %self.registry, holder = %self.holder, "pass ended; lease released");
        outcome.map(Leased::Ran)
    }

    /// Renews the lease every heartbeat; returns (the error to end the pass
    /// with) once it is lost, or can't be renewed before it expires.
    async fn keep(&self) -> SyncError {
        let leases = self.db.leases(&self.registry);
        let mut renewed = Instant::now();
        let mut wait = self.heartbeat;
        loop {
            tokio::time::sleep(wait).await;
            match leases.renew(&self.holder, self.ttl()).await {
                Ok(true) => {
                    renewed = Instant::now();
                    wait = self.heartbeat;
                }
                Ok(false) => {
                    return SyncError::Setup(format!(
                        "the lease of mirror `{}` was taken over by another instance; this pass stopped",
                        self.registry
                    ));
                }
                // Another try a quarter heartbeat later, unless that would
                // come within half a heartbeat of the expiry: from then on
                // another instance may take the lease over.
                Err(e)
                    if renewed.elapsed() + self.heartbeat / 4
                        >= self.ttl() - self.heartbeat / 2 =>
                {
                    return SyncError::Setup(format!(
                        "cannot renew the lease of mirror `{}` ({e}); this pass stopped before another instance may take it over",
                        self.registry
                    ));
                }
                Err(e) => {
                    warn!(registry = %self.registry, error = %e, "cannot renew the lease of the mirror's passes; trying again");
                    wait = self.heartbeat / 4;
                }
            }
        }
    }
}

/// Whether a full pass is due, given when one last ended (by any instance)
/// and the interval of full passes: an instance that takes the lease over
/// does not repeat a pass just done by another.
pub fn full_pass_due(lease: &LeaseInfo, interval: Duration) -> bool {
    lease.last_full_pass.is_none_or(|ended| {
        SystemTime::now()
            .duration_since(ended)
            .is_ok_and(|since| since >= interval / 2)
    })
}

/// This process's name as a holder: `host:pid:random`, unique across
/// instances and restarts.
fn holder_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "wharf".to_owned());
    let nonce = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{host}:{}:{:08x}", std::process::id(), nonce as u32)
}
