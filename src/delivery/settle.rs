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

/// What this process is doing with a message it claimed.
#[derive(Clone)]
enum State {
    /// A worker is attempting it (or writing its outcome).
    InFlight(Leased),
    /// Delivered (its fate decided), the completion not yet written; retried in the
    /// background.
    Held(Leased),
}

impl State {
    fn lease(&self) -> &Leased {
        match self {
            State::InFlight(l) | State::Held(l) => l,
        }
    }
}

/// Messages this process has in hand, by id, each with the lease under which its next
/// write goes. A lease can run out while the database refuses writes (a full disk: its
/// renewal fails too); another worker of this process may then claim the message again.
/// That worker does not send it: it hands its fresh lease over (`adopt`) and moves on, so
/// the completion is written under the lease the database now knows. The body is not
/// kept here.
static MESSAGES: LazyLock<Mutex<HashMap<String, State>>> = LazyLock::new(Default::default);

/// The first retry of a completion comes this soon, then twice as late up to `MAX_DELAY`.
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(5);

fn messages() -> std::sync::MutexGuard<'static, HashMap<String, State>> {
    MESSAGES.lock().unwrap_or_else(|p| p.into_inner())
}

/// Called by a worker that has just claimed `msg`: true when the message is its to
/// attempt. False when this process already has it in hand (in flight or held): the new
/// lease is handed over and the worker must leave the message alone.
pub fn begin(msg: &Leased) -> bool {
    let mut map = messages();
    match map.get_mut(&msg.id) {
        Some(State::InFlight(l)) | Some(State::Held(l)) => {
            *l = msg.without_body();
            false
        }
        None => {
            map.insert(msg.id.clone(), State::InFlight(msg.without_body()));
            true
        }
    }
}

/// The attempt is over and its outcome written (or given up on): forget an in-flight
/// message. A held one stays until its completion is written.
pub fn end(id: &str) {
    let mut map = messages();
    if matches!(map.get(id), Some(State::InFlight(_))) {
        map.remove(id);
    }
}

/// The lease the message's next write must name: the one handed over last.
pub fn current(msg: &Leased) -> Leased {
    match messages().get(&msg.id) {
        Some(state) => state.lease().without_body(),
        None => msg.without_body(),
    }
}

/// True for a message this relay delivered whose completion is still being written.
pub fn is_held(id: &str) -> bool {
    matches!(messages().get(id), Some(State::Held(_)))
}

/// How many completions are still being retried (for the log at shutdown and for tests).
pub fn held() -> usize {
    messages().values().filter(|s| matches!(s, State::Held(_))).count()
}

/// Writes the completion of a delivered message, under the newest lease this process has
/// for it. When the database refuses, the message is held (see the module doc) and the
/// write retried in the background until it succeeds. Ok(false): the lease is no longer
/// this process's (another relay took the message over, or it was deleted).
pub async fn complete(db: &Db, writer: &queue::writer::Writer, msg: &Leased) -> Result<bool, StoreError> {
    let mut lease = current(msg);
    loop {
        match writer.complete(&lease).await {
            Ok(true) => return Ok(true),
            Ok(false) => {
                let newer = current(msg);
                if newer.token == lease.token {
                    return Ok(false);
                }
                lease = newer;
            }
            Err(e) => {
                hold(db.clone(), msg);
                return Err(e);
            }
        }
    }
}

fn hold(db: Db, msg: &Leased) {
    {
        let mut map = messages();
        let lease = map.get(&msg.id).map(|s| s.lease().clone()).unwrap_or_else(|| msg.without_body());
        if matches!(map.get(&msg.id), Some(State::Held(_))) {
            return;
        }
        map.insert(msg.id.clone(), State::Held(lease));
    }
    warn!(queue_id = %msg.id, "completion not written; the message is held as done and the write retried");
    let id = msg.id.clone();
    tokio::spawn(async move {
        let mut delay = FIRST_DELAY;
        loop {
            tokio::time::sleep(delay).await;
            let Some(current) = messages().get(&id).map(|s| s.lease().clone()) else { return };
            match queue::complete(&db, &current).await {
                Ok(true) => break,
                Ok(false) => {
                    // Not under this lease any more: a worker may have claimed it again
                    // meanwhile (then `begin` handed over a new token: try again), or the
                    // message was deleted or taken over by another relay (nothing to write).
                    let changed = messages().get(&id).is_some_and(|now| now.lease().token != current.token);
                    if changed {
                        delay = FIRST_DELAY;
                        continue;
                    }
                    warn!(queue_id = %id, "held message no longer under this relay's lease; stopped writing its completion");
                    messages().remove(&id);
                    return;
                }
                Err(StoreError::Unavailable(sqlx::Error::PoolClosed)) => {
                    // The relay is stopping: its restart sends the message again.
                    warn!(queue_id = %id, "relay stopped before the completion was written");
                    messages().remove(&id);
                    return;
                }
                Err(e) => {
                    tracing::debug!(queue_id = %id, error = %e, "completion still not written");
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
        messages().remove(&id);
        info!(queue_id = %id, "completion written after a retry");
    });
}
