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
//! A batch that fails is retried one job at a time, so one bad job fails only itself; but
//! only once it is known that nothing of it was stored. A COMMIT can fail after it took
//! effect (the connection to PostgreSQL breaks while the server commits): each batch
//! writes a fresh token to this writer's row of `queue_commits`, and after a failed
//! COMMIT the writer reads the row back. Its token there, the batch is answered as
//! stored (retrying it would queue its mail twice); not there, it is retried; the row
//! unreadable, its callers get an error and nothing is written again.

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
        // This process's row in queue_commits: random, so no two processes share one.
        let id = crate::address::random_token(24);
        tokio::spawn(run(Own { db, conn: None, id }, relay_domain, rx));
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
    /// Its row in queue_commits.
    id: String,
}

impl Own {
    /// The connection, opened if there is none; the caller puts it back when it is still good.
    async fn take(&mut self) -> Result<sqlx::AnyConnection, StoreError> {
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
        Ok(self.conn.take().expect("just set"))
    }

    /// Whether the batch that wrote `token` is stored, asked after its COMMIT failed: a
    /// few tries on fresh connections, then an error (not known).
    async fn committed(&mut self, token: &str) -> Result<bool, StoreError> {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.last_token().await {
                Ok(last) => return Ok(last.as_deref() == Some(token)),
                Err(e) if wait > Duration::from_secs(2) => return Err(e),
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
            }
        }
    }

    /// The token of this writer's last stored batch. On PostgreSQL the row is read FOR
    /// UPDATE: if the failed COMMIT is still running on the server (the connection broke,
    /// the server has not noticed yet), the read waits for it to end, for at most the lock
    /// timeout, instead of reading the row as it was before it.
    async fn last_token(&mut self) -> Result<Option<String>, StoreError> {
        let postgres = self.db.backend == Backend::Postgres;
        let mut conn = self.take().await?;
        let mut tx = conn.begin().await?;
        let sql = if postgres {
            sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
            "SELECT batch FROM queue_commits WHERE writer = $1 FOR UPDATE"
        } else {
            "SELECT batch FROM queue_commits WHERE writer = $1"
        };
        let last = sqlx::query_scalar(sql).bind(&self.id).fetch_optional(&mut *tx).await?;
        tx.rollback().await?;
        self.conn = Some(conn);
        Ok(last)
    }

    /// At start: the rows of writers gone for a day (each process run leaves one).
    async fn forget_old_writers(&mut self) {
        let gone = sqlx::query("DELETE FROM queue_commits WHERE at < $1")
            .bind(crate::store::now() - 86_400)
            .execute(&self.db.pool)
            .await;
        if let Err(e) = gone {
            tracing::warn!(error = %e, "could not prune the queue writers' old commit records");
        }
    }
}

async fn run(mut own: Own, relay_domain: String, mut rx: mpsc::Receiver<Job>) {
    own.forget_old_writers().await;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match commit(&mut own, &relay_domain, &batch).await {
            Ok(results) => {
                for (job, done) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(failed) if batch.len() == 1 => {
                let _ = batch.pop().expect("one job").reply.send(Err(failed.into_error()));
            }
            Err(Failed::Unknown(e)) => answer_all(batch, &e),
            Err(Failed::NotStored(_)) => {
                // One job at a time, so one bad job fails only itself.
                for job in batch {
                    let result = commit(&mut own, &relay_domain, std::slice::from_ref(&job))
                        .await
                        .map(|mut done| done.remove(0))
                        .map_err(Failed::into_error);
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// The same failure for every job (the error itself is not `Clone`).
fn answer_all(batch: Vec<Job>, e: &StoreError) {
    for job in batch {
        let _ = job.reply.send(Err(StoreError::Unavailable(sqlx::Error::Protocol(e.to_string()))));
    }
}

/// Why a batch has no answers.
enum Failed {
    /// Nothing of it is stored: it may be written again.
    NotStored(StoreError),
    /// Its COMMIT failed and the database could not be asked whether it took effect. It
    /// must not be written again (that could queue its mail twice): its callers get an
    /// error, as when the database is down. A session then answers 451, and a client that
    /// sends again may deliver twice, the one ambiguity SMTP itself leaves (RFC 5321 6.1
    /// prefers a duplicate to a loss).
    Unknown(StoreError),
}

impl Failed {
    fn into_error(self) -> StoreError {
        match self {
            Failed::NotStored(e) | Failed::Unknown(e) => e,
        }
    }
}

/// `commit_once`, timed for `maskrelay_queue_commit_seconds`.
async fn commit(own: &mut Own, relay_domain: &str, batch: &[Job]) -> Result<Vec<Done>, Failed> {
    let started = std::time::Instant::now();
    let result = commit_once(own, relay_domain, batch).await;
    crate::metrics::queue_commit(batch.len(), result.is_ok(), started.elapsed());
    result
}

/// One transaction for the whole batch; the answer of each job in order. A COMMIT that
/// fails is settled by reading the batch's token back (`settle`): stored after all, the
/// batch is answered as committed.
async fn commit_once(own: &mut Own, relay_domain: &str, batch: &[Job]) -> Result<Vec<Done>, Failed> {
    let token = crate::address::random_token(24);
    // The connection is out of `own` while the batch runs: if anything fails it is dropped
    // (closed, which ends whatever transaction it still holds), and only put back after a
    // commit that succeeded.
    let mut conn = own.take().await.map_err(Failed::NotStored)?;
    let results = match write(&mut conn, &own.db, &own.id, relay_domain, batch, &token).await {
        Ok((results, tx)) => match tx.commit().await {
            Ok(()) => Ok(results),
            Err(e) => Err((Some(results), StoreError::from(e))),
        },
        Err(e) => Err((None, e)),
    };
    match results {
        Ok(results) => {
            own.conn = Some(conn);
            Ok(results)
        }
        Err((None, e)) => Err(Failed::NotStored(e)),
        Err((Some(results), e)) => {
            drop(conn);
            settle(own, &token, results, e).await
        }
    }
}

/// A batch whose COMMIT failed: stored after all, it is answered as committed.
async fn settle(own: &mut Own, token: &str, results: Vec<Done>, e: StoreError) -> Result<Vec<Done>, Failed> {
    match own.committed(token).await {
        Ok(true) => {
            tracing::warn!(error = %e, "a queue commit failed but had taken effect; answered as stored");
            Ok(results)
        }
        Ok(false) => Err(Failed::NotStored(e)),
        Err(probe) => {
            tracing::error!(
                error = %e, probe = %probe,
                "a queue commit failed and whether it took effect cannot be read; its writes are not retried"
            );
            Err(Failed::Unknown(e))
        }
    }
}

/// The batch's writes and its token, in a transaction left for `commit` to end.
async fn write<'c>(
    conn: &'c mut sqlx::AnyConnection,
    db: &Db,
    writer: &str,
    relay_domain: &str,
    batch: &[Job],
    token: &str,
) -> Result<(Vec<Done>, sqlx::Transaction<'c, sqlx::Any>), StoreError> {
    // The token rides with BEGIN, in the same message to the database: one round trip
    // fewer per batch. Both values are random letters and digits (`random_token`), safe
    // to write as literals.
    debug_assert!(writer.chars().chain(token.chars()).all(|c| c.is_ascii_alphanumeric()));
    let begin = format!(
        "BEGIN; INSERT INTO queue_commits (writer, batch, at) VALUES ('{writer}', '{token}', {}) \
         ON CONFLICT (writer) DO UPDATE SET batch = excluded.batch, at = excluded.at",
        crate::store::now()
    );
    let mut tx = conn.begin_with(sqlx::AssertSqlSafe(begin)).await?;
    let results = write_jobs(&mut tx, db, relay_domain, batch).await?;
    Ok((results, tx))
}

/// Every job of the batch, by kind, each kind in as few statements as its rows allow:
/// enqueues, then completions and give-ups, then deferrals, then claims (which then see
/// the mail just enqueued and never a message completed in the same batch). The answers
/// in the batch's order.
async fn write_jobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    db: &Db,
    relay_domain: &str,
    batch: &[Job],
) -> Result<Vec<Done>, StoreError> {
    let mut results: Vec<Option<Done>> = batch.iter().map(|_| None).collect();

    let enqueues: Vec<(usize, &[Outgoing], &[IdMapping])> = (batch.iter().enumerate())
        .filter_map(|(i, job)| match &job.op {
            Op::Enqueue { items, mappings } => Some((i, items.as_slice(), mappings.as_slice())),
            _ => None,
        })
        .collect();
    let items: Vec<&Outgoing> = enqueues.iter().flat_map(|(_, items, _)| items.iter()).collect();
    let mappings: Vec<&IdMapping> = enqueues.iter().flat_map(|(_, _, m)| m.iter()).collect();
    let mut ids = super::insert(tx, db, relay_domain, &items, &mappings).await?.into_iter();
    for (i, items, _) in &enqueues {
        results[*i] = Some(Done::Enqueued(ids.by_ref().take(items.len()).collect()));
    }

    let removals: Vec<(usize, &Leased)> = (batch.iter().enumerate())
        .filter_map(|(i, job)| match &job.op {
            Op::Complete(msg) | Op::GiveUp { msg, .. } => Some((i, &**msg)),
            _ => None,
        })
        .collect();
    let msgs: Vec<&Leased> = removals.iter().map(|(_, m)| *m).collect();
    let removed = super::remove_leased(tx, db, &msgs).await?;
    let mut notices: Vec<&Outgoing> = Vec::new();
    for ((i, _), written) in removals.iter().zip(removed) {
        if let (true, Op::GiveUp { notices: n, .. }) = (written, &batch[*i].op) {
            notices.extend(n);
        }
        results[*i] = Some(Done::Completed(written));
    }
    super::insert(tx, db, relay_domain, &notices, &[]).await?;

    for (i, job) in batch.iter().enumerate() {
        if let Op::Defer { msg, next_attempt_at, error, attempt } = &job.op {
            results[i] =
                Some(Done::Completed(super::defer(tx, msg, *next_attempt_at, error, *attempt).await?));
        }
    }

    // Claims of one node for one lease time (in practice all of them) in one statement.
    let mut claims: Vec<(usize, &str, Duration)> = (batch.iter().enumerate())
        .filter_map(|(i, job)| match &job.op {
            Op::Claim { node, lease } => Some((i, node.as_str(), *lease)),
            _ => None,
        })
        .collect();
    while let Some(&(_, node, lease)) = claims.first() {
        let (alike, rest): (Vec<_>, Vec<_>) = claims.into_iter().partition(|c| (c.1, c.2) == (node, lease));
        let mut leased = super::claim_some(tx, db, node, lease, alike.len()).await?.into_iter();
        for (i, _, _) in alike {
            results[i] = Some(Done::Claimed(leased.next().map(Box::new)));
        }
        claims = rest;
    }

    Ok(results.into_iter().map(|done| done.expect("every job has its answer")).collect())
}
