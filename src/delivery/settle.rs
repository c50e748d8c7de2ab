//! Messages whose fate is decided (delivered, or given up with its notice queued) but whose
//! completion could not be written: the database refused the DELETE (a full disk, a lost
//! connection). Left alone, the lease would run out and the message be sent again, once
//! per lease for as long as the database refuses writes. Instead this relay remembers it
//! as done, never hands it to a worker again, and keeps writing the completion until the
//! database takes it.
//!
//! The memory is this process's: a relay that dies before the completion is written sends
//! the message again after its restart, as after any crash in the middle of a delivery
//! (SPEC, Egress: at least once after a crash). Queue ids are random, so one set serves
//! every relay in the process.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::queue::{self, Leased};
use crate::store::{Db, StoreError};

/// Messages done here whose completion is still being written, by id, each with the lease
/// under which the next write is tried (a worker that claims a held message again hands
/// over its fresh lease: `adopt`). The body is not kept.
static HELD: LazyLock<Mutex<HashMap<String, Leased>>> = LazyLock::new(Default::default);

/// The first retry of a completion comes this soon, then twice as late up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);

fn held_map() -> std::sync::MutexGuard<'static, HashMap<String, Leased>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// True for a message this relay already finished: a worker that claims it again must not
/// send it (it calls `adopt` instead).
pub fn is_held(id: &str) -> bool {
    held_map().contains_key(id)
}

/// How many completions are still being retried (for the log at shutdown and for tests).
pub fn held() -> usize {
    held_map().len()
}

/// A worker claimed a held message again: the completion is now written under this lease.
pub fn adopt(msg: &Leased) {
    if let Some(entry) = held_map().get_mut(&msg.id) {
        *entry = Leased { message: Vec::new(), ..msg.clone() };
    }
}

/// Holds a delivered message whose completion the database refused, and retries the write
/// in the background until it succeeds.
pub fn hold(db: Db, msg: &Leased) {
    {
        let mut map = held_map();
        if map.contains_key(&msg.id) {
            return;
        }
        map.insert(msg.id.clone(), Leased { message: Vec::new(), ..msg.clone() });
    }
    warn!(queue_id = %msg.id, "completion not written; the message is held as done and the write retried");
    let id = msg.id.clone();
    tokio::spawn(async move {
        let mut delay = FIRST_DELAY;
        loop {
            tokio::time::sleep(delay).await;
            let Some(current) = held_map().get(&id).cloned() else { return };
            match queue::complete(&db, &current).await {
                Ok(true) => break,
                Ok(false) => {
                    // Not under this lease any more: a worker may have claimed it again
                    // meanwhile (then `adopt` changed the token: try again), or the message
                    // was deleted or taken over by another relay (nothing left to write).
                    let changed = held_map().get(&id).is_some_and(|now| now.token != current.token);
                    if changed {
                        delay = FIRST_DELAY;
                        continue;
                    }
                    warn!(queue_id = %id, "held message no longer under this relay's lease; stopped writing its completion");
                    held_map().remove(&id);
                    return;
                }
                Err(StoreError::Unavailable(sqlx::Error::PoolClosed)) => {
                    // The relay is stopping: its restart sends the message again.
                    warn!(queue_id = %id, "relay stopped before the completion was written");
                    held_map().remove(&id);
                    return;
                }
                Err(e) => {
                    tracing::debug!(queue_id = %id, error = %e, "completion still not written");
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
        held_map().remove(&id);
        info!(queue_id = %id, "completion written after a retry");
    });
}
