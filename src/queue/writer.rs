//! Group commit: accepting sessions and delivery workers hand their queue writes (enqueue;
//! claim, complete, defer, give up) to one writer task per process, which commits whatever
//! has gathered while the previous commit ran in one transaction (one fsync for the batch).
//! Each caller gets its answer only once its batch is committed, so a session still answers
//! 250 only for mail that is stored, and a worker starts an attempt only under a lease that
//! is stored.
//!
//! The writer keeps one connection of its own, outside the pool. On SQLite that makes it
//! the process's only queue writer: workers claiming messages no longer race the sessions'
//! commits for SQLite's write lock (each lost race slept in SQLite's busy handler, 1-100
//! ms), the pages it just wrote stay in its cache, and the pool's check of every returned
//! connection is not paid per batch. After any failure the connection is closed (which
//! rolls back whatever it held, however SQLite left it) and a fresh one taken for the
//! next batch.
//!
//! A batch that fails is retried one job at a time, so one bad job fails only itself.

use std::time::Duration;

use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{IdMapping, Leased, Outgoing};
use crate::store::{Backend, Db, StoreError};

/// Jobs in one transaction at most.
const MAX_BATCH: usize = 128;

enum Op {
    Enqueue { items: Vec<Outgoing>, mappings: Vec<IdMapping> },
    Complete(Box<Leased>),
    Defer { msg: Box<Leased>, next_attempt_at: i64, error: String, attempt: bool },
    GiveUp { msg: Box<Leased>, notices: Vec<Outgoing> },
    Claim { node: String, lease: Duration },
}

impl Op {
    /// Claims run after the other jobs of their batch: they then see the mail enqueued
    /// in it, and never a message whose completion is in the same batch.
    fn is_claim(&self) -> bool {
        matches!(self, Op::Claim { .. })
    }
}

enum Done {
    Enqueued(Vec<String>),
    /// False: the lease was lost, nothing written.
    Completed(bool),
    Claimed(Option<Box<Leased>>),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The handle sessions and workers write through.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn start(db: Db, relay_domain: String) -> Self {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(Own { db, conn: None }, relay_domain, rx));
        Self { jobs }
    }

    async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?
    }

    /// `queue::enqueue`, committed with whatever else is being written now.
    pub async fn enqueue(
        &self,
        items: &[Outgoing],
        mappings: &[IdMapping],
    ) -> Result<Vec<String>, StoreError> {
        match self.submit(Op::Enqueue { items: items.to_vec(), mappings: mappings.to_vec() }).await? {
            Done::Enqueued(ids) => Ok(ids),
            _ => unreachable!("an enqueue answers with ids"),
        }
    }

    /// `queue::complete`, committed with whatever else is being written now.
    pub async fn complete(&self, msg: &Leased) -> Result<bool, StoreError> {
        match self.submit(Op::Complete(Box::new(msg.without_body()))).await? {
            Done::Completed(written) => Ok(written),
            _ => unreachable!("a completion answers with a flag"),
        }
    }

    /// `queue::retry_later`, committed with whatever else is being written now.
    pub async fn retry_later(
        &self,
        msg: &Leased,
        next_attempt_at: i64,
        error: &str,
        attempt: bool,
    ) -> Result<bool, StoreError> {
        let op = Op::Defer {
            msg: Box::new(msg.without_body()),
            next_attempt_at,
            error: error.to_owned(),
            attempt,
        };
        match self.submit(op).await? {
            Done::Completed(written) => Ok(written),
            _ => unreachable!("a deferral answers with a flag"),
        }
    }

    /// `queue::give_up` (the message out of the queue, its notices in), committed with
    /// whatever else is being written now.
    pub async fn give_up(&self, msg: &Leased, notices: &[Outgoing]) -> Result<bool, StoreError> {
        match self.submit(Op::GiveUp { msg: Box::new(msg.without_body()), notices: notices.to_vec() }).await?
        {
            Done::Completed(written) => Ok(written),
            _ => unreachable!("a give-up answers with a flag"),
        }
    }

    /// `queue::claim`, committed with whatever else is being written now: the lease is
    /// stored when this returns it.
    pub async fn claim(&self, node: &str, lease: Duration) -> Result<Option<Leased>, StoreError> {
        match self.submit(Op::Claim { node: node.to_owned(), lease }).await? {
            Done::Claimed(leased) => Ok(leased.map(|b| *b)),
            _ => unreachable!("a claim answers with a message or none"),
        }
    }
}

/// The writer's own connection, taken from the pool and detached from it.
struct Own {
    db: Db,
    conn: Option<sqlx::AnyConnection>,
}

impl Own {
    async fn conn(&mut self) -> Result<&mut sqlx::AnyConnection, StoreError> {
        // The pool closes when the relay stops (or gives up on its database): from then on
        // the writer stores nothing either, as if its connection were one of the pool's.
        if self.db.pool.is_closed() {
            self.conn = None;
            return Err(StoreError::Unavailable(sqlx::Error::PoolClosed));
        }
        if self.conn.is_none() {
            let mut conn = self.db.pool.acquire().await?.detach();
            if self.db.backend == Backend::Postgres {
                // This connection writes rows by key and claims the head of the queue_due
                // index, nothing else. PostgreSQL's statistics of a table whose every row
                // lives for seconds are always stale, and with them it planned the claim as a
                // scan of the whole queue and a sort (measured: 2,068 sequential scans,
                // 1.5 M rows read, for 2,000 messages); without those plans the claim walks
                // the index and stops at the first due message.
                sqlx::raw_sql("SET enable_seqscan = off; SET enable_bitmapscan = off")
                    .execute(&mut conn)
                    .await?;
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Closes the connection after a failure: whatever transaction it may still hold ends
    /// with it.
    fn discard(&mut self) {
        self.conn = None;
    }
}

async fn run(mut own: Own, relay_domain: String, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Stable: the other jobs in their order, then the claims.
        batch.sort_by_key(|job| job.op.is_claim());
        match commit(&mut own, &relay_domain, &batch).await {
            Ok(results) => {
                for (job, done) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(e) if batch.len() == 1 => {
                let _ = batch.pop().expect("one job").reply.send(Err(e));
            }
            Err(_) => {
                for job in batch {
                    let result = commit(&mut own, &relay_domain, std::slice::from_ref(&job))
                        .await
                        .map(|mut done| done.remove(0));
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// One transaction for the whole batch; the answer of each job in order. On failure the
/// connection is discarded.
async fn commit(own: &mut Own, relay_domain: &str, batch: &[Job]) -> Result<Vec<Done>, StoreError> {
    let db = own.db.clone();
    let result = async {
        let mut tx = own.conn().await?.begin().await?;
        let mut results = Vec::with_capacity(batch.len());
        for job in batch {
            results.push(match &job.op {
                Op::Enqueue { items, mappings } => {
                    Done::Enqueued(super::insert(&mut tx, &db, relay_domain, items, mappings).await?)
                }
                Op::Complete(msg) => Done::Completed(super::remove_leased(&mut tx, msg).await?),
                Op::Defer { msg, next_attempt_at, error, attempt } => {
                    Done::Completed(super::defer(&mut tx, msg, *next_attempt_at, error, *attempt).await?)
                }
                Op::GiveUp { msg, notices } => {
                    Done::Completed(super::give_up_in(&mut tx, &db, msg, relay_domain, notices).await?)
                }
                Op::Claim { node, lease } => {
                    Done::Claimed(super::claim_in(&mut tx, &db, node, *lease).await?.map(Box::new))
                }
            });
        }
        tx.commit().await?;
        Ok(results)
    }
    .await;
    if result.is_err() {
        own.discard();
    }
    result
}
