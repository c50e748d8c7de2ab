//! Retention: a background sweep that keeps as little as the relay needs (APPI Art. 22,
//! GDPR Art. 5(1)(e)). A thread revoked, expired, or paused and never resumed has its
//! shopper erased `threads.erase_after_days` later (address, name and blind index gone,
//! queued mail, Message-ID mappings and sent records deleted; the aliases stay as
//! tombstones so they are never reissued); events and incidents older than
//! `events.retention_days` are deleted; sent-message records past the bounce window go.
//!
//! Relays sharing a database take turns through a lease row (`task_leases`), so one sweep
//! runs at a time; each sweep says in the log and the audit log what it did.

use std::time::Duration;

use tracing::{info, warn};

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::store::audit::{self, Actor};
use crate::store::events::{self, EventKind, NewEvent};
use crate::store::{Db, StoreError, incidents, leases, now, threads};

/// The lease row of the sweep.
const LEASE: &str = "retention";
/// Threads erased per transaction, so a large backlog never holds a long lock.
const BATCH: i64 = 500;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sweep {
    pub threads_erased: u64,
    pub events_deleted: u64,
    pub incidents_deleted: u64,
    pub sent_records_deleted: u64,
}

/// One sweep now, whichever node runs it (the CLI's `maskrelay retention run`, and each
/// turn of [`run`]).
pub async fn sweep(db: &Db, config: &Config) -> Result<Sweep, StoreError> {
    let t = now();
    let erase_before = t - i64::from(config.threads.erase_after_days) * 86_400;
    let mut done = Sweep::default();
    loop {
        let erased = threads::erase_due(db, erase_before, BATCH).await?;
        for id in &erased {
            let thread = threads::get(db, id).await?;
            events::record(
                db,
                &NewEvent {
                    kind: EventKind::ThreadErased,
                    store_id: Some(thread.store_id.as_str()),
                    thread_id: Some(id),
                    alias: None,
                    detail: serde_json::json!({"by": "retention", "after_days": config.threads.erase_after_days}),
                },
            )
            .await?;
        }
        done.threads_erased += erased.len() as u64;
        if (erased.len() as i64) < BATCH {
            break;
        }
    }
    let keep_events_from = t - i64::from(config.events.retention_days) * 86_400;
    done.events_deleted = events::prune(db, keep_events_from).await?;
    done.incidents_deleted = incidents::prune(db, keep_events_from).await?;
    done.sent_records_deleted = crate::queue::prune_sent(db).await?;
    if done != Sweep::default() {
        info!(
            threads_erased = done.threads_erased,
            events_deleted = done.events_deleted,
            incidents_deleted = done.incidents_deleted,
            sent_records_deleted = done.sent_records_deleted,
            "retention sweep"
        );
        let detail = serde_json::to_value(&done).unwrap_or_default();
        audit::record(db, Actor::Retention, "retention.sweep", "retention", detail).await?;
    }
    Ok(done)
}

/// Sweeps every `threads.retention_interval_secs` while this node holds the lease, until
/// `shutdown`; the first sweep runs right after start.
pub async fn run(db: Db, config: std::sync::Arc<Config>, node: String, mut shutdown: Shutdown) {
    let interval = Duration::from_secs(config.threads.retention_interval_secs.max(1));
    // Held a little longer than one interval: a live holder renews it every turn, a dead
    // one loses it after that.
    let lease_secs = interval.as_secs() as i64 * 2 + 60;
    loop {
        match leases::acquire(&db, LEASE, &node, lease_secs).await {
            Ok(true) => {
                if let Err(e) = sweep(&db, &config).await {
                    warn!(error = %e, "retention sweep failed; next turn tries again");
                }
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "retention lease failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => break,
        }
    }
    if let Err(e) = leases::release(&db, LEASE, &node).await {
        warn!(error = %e, "could not release the retention lease");
    }
}
