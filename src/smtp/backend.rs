//! What a session asks of the rest of the relay: who an address is, whether a login is
//! good, and to take a complete message. The session's state machine is the same over any
//! `Backend`; the relay's own is `Context` (the store and the queue), and the protocol tests
//! put an in-memory one behind the session so limits, pipelining and smuggling are tested
//! in milliseconds without a database.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Context;
use super::reply::{self, Reply};
use super::transaction::{self, BounceTarget, Recipient, Transaction};
use crate::address::{Mailbox, StoreId};
use crate::auth::Refusal;
use crate::store::{StoreError, threads};

/// The session's view of the relay.
pub trait Backend: Send + Sync + 'static {
    /// The thread an alias local part belongs to, whatever its status (the session decides
    /// what an inactive thread gets); None if no thread has it.
    fn find_alias(&self, local: &str) -> impl Future<Output = Result<Option<Recipient>, StoreError>> + Send;

    /// The message the relay sent that a VERP bounce address names, if it sent it.
    fn find_bounce(
        &self,
        queue_id: &str,
    ) -> impl Future<Output = Result<Option<BounceTarget>, StoreError>> + Send;

    /// The store a submission login belongs to, if the password is right.
    fn verify_login(
        &self,
        user: &str,
        password: &str,
    ) -> impl Future<Output = Result<Option<StoreId>, StoreError>> + Send;

    /// Records an attempt by someone who is not the thread's party.
    fn record_refusal(
        &self,
        rcpt: &Recipient,
        refusal: Refusal,
        stage: &'static str,
        sender: Option<&Mailbox>,
    ) -> impl Future<Output = ()> + Send;

    /// Records mail to a revoked, paused, expired or erased alias by someone who is not
    /// the thread's party: the alias was known to one store only, so it is still leak
    /// evidence, though the mail is refused like an unknown alias.
    fn record_inactive(&self, rcpt: &Recipient, sender: Option<&Mailbox>) -> impl Future<Output = ()> + Send;

    /// Whether the queue is at its bound (`queue.max_messages`): new mail gets
    /// `451 4.3.1` at MAIL and after DATA. Backends without a queue are never full.
    fn queue_full(&self) -> impl Future<Output = bool> + Send {
        async { false }
    }

    /// Everything after the end of DATA: the reply to it. A positive reply means the
    /// message is durably stored.
    fn accept(
        &self,
        tx: &Transaction,
        message: Vec<u8>,
        peer: IpAddr,
        helo: &str,
    ) -> impl Future<Output = Reply> + Send;
}

impl Backend for Context {
    async fn find_alias(&self, local: &str) -> Result<Option<Recipient>, StoreError> {
        let found = threads::find_by_alias(&self.db, local).await?;
        Ok(found.map(|(thread, side, store)| Recipient { thread, side, store }))
    }

    async fn find_bounce(&self, queue_id: &str) -> Result<Option<BounceTarget>, StoreError> {
        let db = &self.db;
        let Some((thread_id, direction)) = crate::queue::find_sent(db, queue_id).await? else {
            return Ok(None);
        };
        let found = async {
            let thread = threads::get(db, &thread_id).await?;
            let store = crate::store::stores::get_any(db, &thread.store_id).await?;
            Ok::<_, StoreError>(BounceTarget { queue_id: queue_id.to_owned(), thread, store, direction })
        };
        match found.await {
            Ok(t) => Ok(Some(t)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn verify_login(&self, user: &str, password: &str) -> Result<Option<StoreId>, StoreError> {
        crate::store::credentials::verify(&self.db, user, password).await
    }

    async fn record_refusal(
        &self,
        rcpt: &Recipient,
        refusal: Refusal,
        stage: &'static str,
        sender: Option<&Mailbox>,
    ) {
        transaction::record_refusal(self, rcpt, refusal, stage, sender).await
    }

    async fn record_inactive(&self, rcpt: &Recipient, sender: Option<&Mailbox>) {
        crate::leak::record_inactive_attempt(&self.db, &rcpt.thread, rcpt.side, &rcpt.store, sender).await
    }

    async fn queue_full(&self) -> bool {
        self.backpressure.full(&self.db).await
    }

    async fn accept(&self, tx: &Transaction, message: Vec<u8>, peer: IpAddr, helo: &str) -> Reply {
        // Checked again at the end of DATA: other sessions may have filled it meanwhile.
        if self.queue_full().await {
            return reply::QUEUE_FULL;
        }
        let copies = tx.recipients.len() + 1;
        let Ok(_room) = self.rewrite_memory.acquire(message.len().saturating_mul(copies)).await else {
            return reply::STORAGE_UNAVAILABLE;
        };
        transaction::accept(self, tx, Arc::new(message), peer, helo).await
    }
}

/// Bounds the bytes of messages being parsed, rewritten and enqueued at once: each holds
/// its raw bytes and one rewritten copy per recipient until it is committed, so ten 25 MB
/// messages at once would otherwise hold well over a gigabyte. A message waits for room
/// (its session is simply slower to get its reply); one larger than the whole budget is
/// let through alone.
#[derive(Debug)]
pub struct MemoryBudget {
    kib: tokio::sync::Semaphore,
    total_kib: u32,
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        Self { kib: tokio::sync::Semaphore::new(total_kib as usize), total_kib }
    }

    /// Room for `bytes`, held until the permit is dropped.
    pub async fn acquire(
        &self,
        bytes: usize,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, tokio::sync::AcquireError> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.total_kib);
        self.kib.acquire_many(kib).await
    }
}

/// Bounds the bytes of messages being received at once (`smtp.data_memory_bytes`): every
/// session holds a `Reservation` for the buffer its message is read into, from MAIL (the
/// declared SIZE) or as the data arrives, until the reply to DATA is written. Nothing ever
/// waits for room: a reservation that cannot be made or grown is refused at once (the
/// session answers `452 4.3.1` and the client retries later), so no session can sit on
/// part of the budget while waiting for the rest of it. A message keeps its reservation
/// while it waits for the rewrite budget (it is in memory all that time); that makes no
/// cycle, since nothing that holds rewrite room ever asks for data room.
#[derive(Debug, Clone)]
pub struct DataBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    used: AtomicUsize,
    total: usize,
}

impl DataBudget {
    pub fn new(bytes: usize) -> Self {
        Self { inner: Arc::new(BudgetInner { used: AtomicUsize::new(0), total: bytes }) }
    }

    /// The bytes it holds in all.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// The bytes reserved now, by every session together.
    pub fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// A reservation of `bytes`, or None at once if there is not that much room.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        self.inner.take(bytes).then(|| Reservation { budget: self.inner.clone(), bytes })
    }
}

impl BudgetInner {
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= self.total)
            })
            .is_ok()
    }
}

/// Room one session holds in the `DataBudget`; given back when dropped, on every path
/// (reply sent, RSET, QUIT, a dropped connection, a panic).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BudgetInner>,
    bytes: usize,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the reservation to at least `bytes`; false (and the reservation unchanged) if
    /// the budget has not the room.
    pub fn try_grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.bytes {
            return true;
        }
        if !self.budget.take(bytes - self.bytes) {
            return false;
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::{DataBudget, MemoryBudget};

    #[tokio::test]
    async fn messages_wait_for_room_and_a_huge_one_goes_alone() {
        let budget = MemoryBudget::new(10 * 1024);
        let a = budget.acquire(6 * 1024).await.unwrap();
        // 6 + 6 > 10: the second waits until the first is done.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), budget.acquire(6 * 1024))
                .await
                .is_err()
        );
        drop(a);
        let b = budget.acquire(6 * 1024).await.unwrap();
        drop(b);
        // Larger than the budget: capped to the whole of it, never waits for ever.
        let huge = budget.acquire(1 << 30).await.unwrap();
        assert_eq!(budget.kib.available_permits(), 0);
        drop(huge);
    }

    #[test]
    fn reservations_never_exceed_the_budget_and_are_given_back() {
        let budget = DataBudget::new(100);
        let mut a = budget.try_reserve(60).expect("room for 60");
        assert!(budget.try_reserve(41).is_none(), "60 + 41 > 100");
        let b = budget.try_reserve(40).expect("exactly full");
        assert_eq!(budget.in_use(), 100);
        assert!(!a.try_grow_to(61), "no room to grow");
        assert_eq!(a.bytes(), 60, "a refused growth changes nothing");
        drop(b);
        assert!(a.try_grow_to(90));
        assert!(a.try_grow_to(10), "shrinking is a no-op");
        assert_eq!((a.bytes(), budget.in_use()), (90, 90));
        assert!(budget.try_reserve(usize::MAX).is_none(), "no overflow");
        drop(a);
        assert_eq!(budget.in_use(), 0);
        let zero = budget.try_reserve(0).expect("an empty reservation always fits");
        assert_eq!(budget.in_use(), 0);
        drop(zero);
    }
}
