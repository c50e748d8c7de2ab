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

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::queue::{self, Leased};
use crate::store::{Db, StoreError};

/// Ids of messages done here whose completion is still being written.
static HELD: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// The first retry of a completion comes this soon, then twice as late up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Writes the completion of a message whose fate is decided; when the database refuses,
/// the message is held (see the module doc) and the write retried in the background until
/// it succeeds. The error is returned for the log; the message is safe either way.
pub async fn complete(db: &Db, msg: &Leased) -> Result<(), StoreError> {
    let Err(e) = queue::complete(db, msg).await else { return Ok(()) };
    hold(db.clone(), msg);
    Err(e)
}

/// True for a message this relay already finished: a worker that leases it again must
/// leave it alone (its lease simply runs out).
pub fn is_held(id: &str) -> bool {
    HELD.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
}

/// How many completions are still being retried (for the log at shutdown and for tests).
pub fn held() -> usize {
    HELD.lock().unwrap_or_else(|p| p.into_inner()).len()
}

fn hold(db: Db, msg: &Leased) {
    if !HELD.lock().unwrap_or_else(|p| p.into_inner()).insert(msg.id.clone()) {
        return;
    }
    warn!(queue_id = %msg.id, "completion not written; the message is held as done and the write retried");
    // The completion needs the id, thread, direction and sender, not the body.
    let msg = Leased { message: Vec::new(), ..msg.clone() };
    tokio::spawn(async move {
        let mut delay = FIRST_DELAY;
        loop {
            tokio::time::sleep(delay).await;
            match queue::complete(&db, &msg).await {
                Ok(()) => break,
                Err(StoreError::Unavailable(sqlx::Error::PoolClosed)) => {
                    // The relay is stopping: its restart sends the message again.
                    warn!(queue_id = %msg.id, "relay stopped before the completion was written");
                    HELD.lock().unwrap_or_else(|p| p.into_inner()).remove(&msg.id);
                    return;
                }
                Err(e) => {
                    tracing::debug!(queue_id = %msg.id, error = %e, "completion still not written");
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
        HELD.lock().unwrap_or_else(|p| p.into_inner()).remove(&msg.id);
        info!(queue_id = %msg.id, "completion written after a retry");
    });
}
