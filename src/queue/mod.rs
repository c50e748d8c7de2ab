//! The durable outbound queue: rewritten messages are committed here before the `250`,
//! leased by delivery workers (several processes may share one PostgreSQL database), and
//! deleted once delivered or given up, so message bodies do not outlive their delivery.

pub mod writer;

use std::time::Duration;

use sqlx::Row;

use crate::address::{Mailbox, Side};
use crate::store::audit::Actor;
use crate::store::{Backend, Db, Field, StoreError, now};
use crate::time::Timestamp;

/// One message for one recipient, ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub thread_id: String,
    /// Which alias the mail came in on, so which way it goes.
    pub direction: Side,
    pub rcpt_to: Mailbox,
    pub message: Vec<u8>,
    /// Sent with the null reverse-path `<>` (RFC 5321 4.5.5): the relay's own delivery
    /// notices, which must never cause a bounce themselves.
    pub null_sender: bool,
}

/// A Message-ID mapping to remember with the messages that introduce it.
#[derive(Debug, Clone)]
pub struct IdMapping {
    pub thread_id: String,
    pub relay_id: String,
    pub original: String,
}

/// A queued message a worker holds under lease.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: String,
    pub thread_id: String,
    /// Where it is going.
    pub direction: Side,
    pub mail_from: String,
    pub rcpt_to: String,
    pub message: Vec<u8>,
    pub attempts: i64,
    pub created_at: i64,
    /// This holder's lease (random, new at each claim): every write back checks it.
    pub token: String,
}

impl Leased {
    /// What a write back needs: everything but the body (which may be megabytes).
    pub fn without_body(&self) -> Leased {
        Leased {
            id: self.id.clone(),
            thread_id: self.thread_id.clone(),
            direction: self.direction,
            mail_from: self.mail_from.clone(),
            rcpt_to: self.rcpt_to.clone(),
            message: Vec::new(),
            attempts: self.attempts,
            created_at: self.created_at,
            token: self.token.clone(),
        }
    }
}

fn direction_str(side: Side) -> &'static str {
    match side {
        Side::Shopper => "to_shopper",
        Side::Store => "to_store",
    }
}

fn parse_direction(s: &str) -> Result<Side, StoreError> {
    match s {
        "to_shopper" => Ok(Side::Shopper),
        "to_store" => Ok(Side::Store),
        other => Err(StoreError::Corrupt(format!("queue direction {other:?}"))),
    }
}

/// Commits all messages of one SMTP transaction and their id mappings in one database
/// transaction. Only when this returns Ok may the session answer 250.
pub async fn enqueue(
    db: &Db,
    relay_domain: &str,
    items: &[Outgoing],
    mappings: &[IdMapping],
) -> Result<Vec<String>, StoreError> {
    let mut tx = db.pool.begin().await?;
    let items: Vec<&Outgoing> = items.iter().collect();
    let mappings: Vec<&IdMapping> = mappings.iter().collect();
    let ids = insert(&mut tx, db, relay_domain, &items, &mappings).await?;
    tx.commit().await?;
    Ok(ids)
}

/// Rows per statement at most. The writer commits many jobs at once, and one statement
/// for all their rows costs one round trip where a statement per row costs one each
/// (measured: at 10 sessions a group commit held ~17 jobs and ~50 statements, and took
/// 7.5 ms on SQLite, 12.6 ms on PostgreSQL, while the sessions waited for it).
const MAX_ROWS: usize = 32;

/// `0..n` in runs of `MAX_ROWS`, then one run of what is left: a batch's rows of one kind
/// go in as few statements as they can, since each statement is a round trip to the
/// database and its thread while every session in the batch waits. (Runs of power-of-two
/// lengths, tried first to keep fewer statement texts, cost a statement per set bit of
/// `n`: ~2 per kind at 10 sessions, for a prepare that is saved anyway once each length
/// has been seen; each kind has at most `MAX_ROWS` texts, which sqlx caches per
/// connection.)
fn runs(n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    runs_within(n, |_| 0)
}

/// Bytes of message bodies in one statement at most (a run is halved until it fits, or is
/// one message): PostgreSQL refuses a protocol message over 1 GiB, and 32 messages of
/// `smtp.max_message_bytes` (25 MiB by default) would be 800 MiB in one.
const MAX_STATEMENT_BYTES: usize = 16 * 1024 * 1024;

/// `runs`, with each run's rows of at most `MAX_STATEMENT_BYTES` by `bytes(row)` together,
/// unless it is a single row.
fn runs_within(n: usize, bytes: impl Fn(usize) -> usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let left = n - at;
        if left == 0 {
            return None;
        }
        let mut len = left.min(MAX_ROWS);
        while len > 1 && (at..at + len).map(&bytes).sum::<usize>() > MAX_STATEMENT_BYTES {
            len /= 2;
        }
        at += len;
        Some(at - len..at)
    })
}

/// `($f, …), ($f+cols, …), …`: `rows` tuples of `cols` parameters numbered from `first`,
/// each followed by `tail` (constants, or parameters every row shares).
fn tuples(rows: usize, cols: usize, first: usize, tail: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(rows * (cols * 5 + tail.len() + 4));
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for col in 0..cols {
            if col > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "${}", first + row * cols + col);
        }
        out.push_str(tail);
        out.push(')');
    }
    out
}

/// Several statements sent as one, in order, the last one's rows the answer: on SQLite
/// as they are (sqlx runs each, binding `$N` across all); on PostgreSQL, which prepares one
/// statement at a time, the first ones as data-modifying CTEs. One hand-off to the
/// database instead of one each: on a busy machine every hand-off waits for a CPU.
fn together(backend: Backend, statements: &[String]) -> String {
    let (last, first) = statements.split_last().expect("at least one statement");
    if first.is_empty() {
        return last.clone();
    }
    match backend {
        Backend::Sqlite => statements.join("; "),
        Backend::Postgres => {
            let ctes: Vec<String> = first.iter().enumerate().map(|(i, s)| format!("w{i} AS ({s})")).collect();
            format!("WITH {} {last}", ctes.join(", "))
        }
    }
}

/// `$f, $f+step, …`: the first parameter of each of `rows` tuples, for an `IN` list.
fn firsts(rows: usize, step: usize, first: usize) -> String {
    (0..rows).map(|row| format!("${}", first + row * step)).collect::<Vec<_>>().join(", ")
}

/// The rows of `enqueue` (one or several transactions' messages), inside a transaction the
/// caller commits: each message's id, in order.
async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    db: &Db,
    relay_domain: &str,
    items: &[&Outgoing],
    mappings: &[&IdMapping],
) -> Result<Vec<String>, StoreError> {
    let t = now();
    let ids: Vec<String> = items.iter().map(|_| crate::address::random_token(24)).collect();
    let mut item_runs = runs_within(items.len(), |i| items[i].message.len());
    let mut mapping_runs = runs(mappings.len());
    // A run of mappings rides in the statement of a run of messages (one round trip for
    // both, where a batch had one each), and whichever has more runs sends the rest alone.
    loop {
        let (items_run, mappings_run) = (item_runs.next(), mapping_runs.next());
        if items_run.is_none() && mappings_run.is_none() {
            break;
        }
        let mut statements = Vec::with_capacity(3);
        // `$1` is the time; the messages' parameters come next, then the mappings'.
        let mut next = 2;
        if let Some(run) = &items_run {
            // The body is written once, here, and deleted with the message: leases never
            // touch it. Each body row takes its message's id parameter from the queue
            // row's tuple.
            let rows = run.len();
            let bodies: Vec<String> =
                (0..rows).map(|r| format!("(${}, ${})", next + r * 6, next + rows * 6 + r)).collect();
            statements.push(format!(
                "INSERT INTO queue (id, thread_id, direction, mail_from, rcpt_to, size, attempts, \
                 created_at, next_attempt_at, locked_until) VALUES {}",
                tuples(rows, 6, next, ", 0, $1, $1, 0")
            ));
            statements.push(format!("INSERT INTO queue_bodies (id, message) VALUES {}", bodies.join(", ")));
            next += rows * 7;
        }
        if let Some(run) = &mappings_run {
            statements.push(format!(
                "INSERT INTO message_ids (relay_id, thread_id, original, created_at) VALUES {} \
                 ON CONFLICT (relay_id) DO NOTHING",
                tuples(run.len(), 3, next, ", $1")
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(together(db.backend, &statements))).bind(t);
        if let Some(run) = items_run {
            for i in run.clone() {
                let (id, item) = (&ids[i], items[i]);
                q = q
                    .bind(id)
                    .bind(&item.thread_id)
                    .bind(direction_str(item.direction))
                    .bind(if item.null_sender {
                        String::new()
                    } else {
                        crate::bounce::verp::address(id, relay_domain)
                    })
                    .bind(db.vault.seal_text(Field::QueueRecipient, id, &item.rcpt_to.expose()))
                    .bind(item.message.len() as i64);
            }
            for i in run {
                q = q.bind(db.vault.seal(Field::QueueMessage, &ids[i], &items[i].message));
            }
        }
        if let Some(run) = mappings_run {
            for m in &mappings[run] {
                let relay_id = m.relay_id.to_ascii_lowercase();
                let original = db.vault.seal_text(Field::OriginalMessageId, &relay_id, &m.original);
                q = q.bind(relay_id).bind(&m.thread_id).bind(original);
            }
        }
        q.execute(&mut **tx).await?;
    }
    Ok(ids)
}

const CLAIMED: &str = "id, thread_id, direction, mail_from, rcpt_to, attempts, created_at, lease_token";

/// Due and not held. A lease moves `next_attempt_at` to its own end (claim, renew), so a
/// leased message is not due until its lease runs out: one range on one indexed column,
/// whatever the lease state. (With `locked_until` in the condition as well, PostgreSQL
/// misjudged how many rows qualify and sorted every due row at each claim: 1.6 ms per
/// claim at 1,500 queued.) Every write keeps `next_attempt_at >= locked_until`.
const CLAIMABLE: &str = "next_attempt_at <= $4 AND held = 0";

/// Each claimed row's lease token: the claim's random token and the message id, so every
/// lease is distinct though one statement takes several.
const LEASE: &str = "lease_token = $3 || id";

/// The claimed message's body, read in the claim's own statement (NULL if it has none).
fn body_of(queue: &str) -> String {
    format!("(SELECT message FROM queue_bodies b WHERE b.id = {queue}.id) AS message")
}

/// One statement for the first `$5` due messages: SQLite has one writer at a time, so the
/// rows the sub-select finds are the rows the UPDATE changes, and the outer condition is
/// checked again under the write lock.
fn claim_sqlite() -> String {
    format!(
        "UPDATE queue SET locked_until = $1, next_attempt_at = $1, locked_by = $2, {LEASE} \
         WHERE id IN (SELECT id FROM queue WHERE {CLAIMABLE} ORDER BY next_attempt_at LIMIT $5) \
         AND {CLAIMABLE} RETURNING {CLAIMED}, {}",
        body_of("queue")
    )
}

/// SKIP LOCKED: two relays on one database never take the same row, and neither waits; a
/// row another transaction just leased is re-checked against CLAIMABLE and skipped.
fn claim_postgres() -> String {
    let returning: Vec<String> = CLAIMED.split(", ").map(|c| format!("q.{c}")).collect();
    format!(
        "WITH c AS (SELECT id FROM queue WHERE {CLAIMABLE} ORDER BY next_attempt_at LIMIT $5 \
         FOR UPDATE SKIP LOCKED) \
         UPDATE queue q SET locked_until = $1, next_attempt_at = $1, locked_by = $2, \
         lease_token = $3 || q.id FROM c WHERE q.id = c.id \
         RETURNING {}, {}",
        returning.join(", "),
        body_of("q")
    )
}

/// Takes the lease of one due message, for `lease` from now, under a fresh random token
/// (the compare-and-set every later write checks), and reads its body. `node` is the
/// relay's node id (`queue.node_id`), kept in `locked_by` so that node can take its
/// leases back after a crash (`release_node`). The delivery workers claim through the
/// process's writer (`writer::Writer::claim`), in its batches; this is the same claim in
/// a transaction of its own.
pub async fn claim(db: &Db, node: &str, lease: Duration) -> Result<Option<Leased>, StoreError> {
    let mut tx = db.pool.begin().await?;
    let leased = claim_some(&mut tx, db, node, lease, 1).await?;
    tx.commit().await?;
    Ok(leased.into_iter().next())
}

/// Rounds of setting unreadable messages aside in one claim before it gives up for now.
const UNREADABLE_PER_CLAIM: usize = 8;

/// Up to `want` claims in one statement, inside a transaction the caller commits: the
/// leases exist, and the workers may start, only once that commit succeeds. A message that
/// cannot be read (its body missing, or a seal the keyring cannot open) is set aside as
/// held, with the reason as its last error, and others claimed in its place: the rollback
/// of a failed claim would otherwise leave it at the head of the queue, and every claim
/// after it would fail the same way.
async fn claim_some(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    db: &Db,
    node: &str,
    lease: Duration,
    want: usize,
) -> Result<Vec<Leased>, StoreError> {
    // Built once and shared (an `Arc`, which sqlx takes without copying): the claim runs
    // for every message.
    type Sql = std::sync::LazyLock<std::sync::Arc<str>>;
    static SQLITE: Sql = Sql::new(|| claim_sqlite().into());
    static POSTGRES: Sql = Sql::new(|| claim_postgres().into());
    let sql = match db.backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    };
    let mut got = Vec::with_capacity(want);
    for _ in 0..UNREADABLE_PER_CLAIM {
        let asked = want - got.len();
        if asked == 0 {
            break;
        }
        let t = now();
        let rows = sqlx::query(sqlx::AssertSqlSafe(std::sync::Arc::clone(sql)))
            .bind(t + lease.as_secs().max(1) as i64)
            .bind(node)
            .bind(crate::address::random_token(24))
            .bind(t)
            .bind(asked as i64)
            .fetch_all(&mut **tx)
            .await?;
        let found = rows.len();
        for r in rows {
            let id: String = r.try_get("id")?;
            match read_claimed(db, &r, &id) {
                Ok(leased) => got.push(leased),
                Err(e) => set_aside(tx, &id, &e).await?,
            }
        }
        if found < asked {
            break;
        }
    }
    Ok(got)
}

/// The claimed row with its body as a `Leased`; no I/O, so an error is the message's own.
fn read_claimed(db: &Db, r: &sqlx::any::AnyRow, id: &str) -> Result<Leased, StoreError> {
    let body: Vec<u8> = r
        .try_get::<Option<Vec<u8>>, _>("message")?
        .ok_or_else(|| StoreError::Corrupt("the queued message has no body".into()))?;
    Ok(Leased {
        thread_id: r.try_get("thread_id")?,
        direction: parse_direction(&r.try_get::<String, _>("direction")?)?,
        mail_from: r.try_get("mail_from")?,
        rcpt_to: db.vault.open_text(Field::QueueRecipient, id, &r.try_get::<String, _>("rcpt_to")?)?,
        message: db.vault.open(Field::QueueMessage, id, &body)?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        token: r.try_get("lease_token")?,
        id: id.to_owned(),
    })
}

/// Holds an unreadable message (`queue list` shows it held, with why) instead of trying it.
async fn set_aside(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    why: &StoreError,
) -> Result<(), StoreError> {
    tracing::warn!(queue_id = %id, error = %why, "queued message unreadable; held for the operator");
    sqlx::query(
        "UPDATE queue SET held = 1, locked_until = 0, locked_by = NULL, lease_token = NULL, \
         last_error = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(format!("unreadable, held: {why}"))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Extends a lease to `lease` from now. False: the lease is no longer this holder's (it
/// ran out and another took it, or the operator deleted the message).
pub async fn renew(db: &Db, msg: &Leased, lease: Duration) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE queue SET locked_until = $1, next_attempt_at = $1 WHERE id = $2 AND lease_token = $3",
    )
    .bind(now() + lease.as_secs().max(1) as i64)
    .bind(&msg.id)
    .bind(&msg.token)
    .execute(&db.pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// At start, before any worker runs: every lease held under `node` belongs to this relay's
/// previous run (it crashed mid-delivery), so it is released now instead of after
/// `lease_secs`. Returns how many.
pub async fn release_node(db: &Db, node: &str) -> Result<u64, StoreError> {
    let res = sqlx::query(
        "UPDATE queue SET locked_until = 0, next_attempt_at = $2, locked_by = NULL, lease_token = NULL \
         WHERE locked_by = $1",
    )
    .bind(node)
    .bind(now())
    .execute(&db.pool)
    .await?;
    Ok(res.rows_affected())
}

/// Delivered: the message leaves the queue with its body and recipient, if the lease is
/// still `msg`'s. What stays is its id, thread and direction, so a late bounce to its VERP
/// address can still be tied to the thread; notices (null sender) cannot be bounced to.
/// False (and nothing written) when the lease was lost.
pub async fn complete(db: &Db, msg: &Leased) -> Result<bool, StoreError> {
    let mut tx = db.pool.begin().await?;
    if !remove_leased(&mut tx, db, &[msg]).await?[0] {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Deletes each message and its body if its lease is still held, and records it as sent
/// (notices, with a null sender, cannot be bounced to: no record): for each, in order,
/// whether it was (false: the lease was lost, nothing written for it). One statement per
/// run of messages.
async fn remove_leased(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    db: &Db,
    msgs: &[&Leased],
) -> Result<Vec<bool>, StoreError> {
    let mut removed = std::collections::HashSet::new();
    for run in runs(msgs.len()) {
        let rows = run.len();
        // `id IN (…)` finds the rows by key (on both backends, with the writer's plans);
        // the pairs then keep only those whose lease is still the holder's.
        let held = format!(
            "id IN ({}) AND (id, lease_token) IN (VALUES {})",
            firsts(rows, 2, 1),
            tuples(rows, 2, 1, "")
        );
        let sent_at = 2 * rows + 1;
        let sql = match db.backend {
            // The body and the sent record first, while the queue rows are still there.
            Backend::Sqlite => together(
                db.backend,
                &[
                    format!("DELETE FROM queue_bodies WHERE id IN (SELECT id FROM queue WHERE {held})"),
                    format!(
                        "INSERT INTO sent_messages (queue_id, thread_id, direction, sent_at) \
                         SELECT id, thread_id, direction, ${sent_at} FROM queue WHERE {held} AND mail_from <> '' \
                         ON CONFLICT (queue_id) DO NOTHING"
                    ),
                    format!("DELETE FROM queue WHERE {held} RETURNING id"),
                ],
            ),
            // The CTEs see the rows the DELETE returns.
            Backend::Postgres => format!(
                "WITH d AS (DELETE FROM queue WHERE {held} RETURNING id, thread_id, direction, mail_from), \
                 b AS (DELETE FROM queue_bodies WHERE id IN (SELECT id FROM d)), \
                 s AS (INSERT INTO sent_messages (queue_id, thread_id, direction, sent_at) \
                 SELECT id, thread_id, direction, ${sent_at} FROM d WHERE mail_from <> '' \
                 ON CONFLICT (queue_id) DO NOTHING) \
                 SELECT id FROM d"
            ),
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in &msgs[run] {
            q = q.bind(&m.id).bind(&m.token);
        }
        for r in q.bind(now()).fetch_all(&mut **tx).await? {
            removed.insert(r.try_get::<String, _>("id")?);
        }
    }
    Ok(msgs.iter().map(|m| removed.contains(&m.id)).collect())
}

/// Given up: like `complete`, and in the same transaction the notices to send in its
/// place (a bounce to the sender). False (nothing written) when the lease was lost.
pub async fn give_up(
    db: &Db,
    msg: &Leased,
    relay_domain: &str,
    notices: &[Outgoing],
) -> Result<bool, StoreError> {
    let mut tx = db.pool.begin().await?;
    if !give_up_in(&mut tx, db, msg, relay_domain, notices).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// `give_up`, inside a transaction the caller commits (false: nothing was written).
async fn give_up_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    db: &Db,
    msg: &Leased,
    relay_domain: &str,
    notices: &[Outgoing],
) -> Result<bool, StoreError> {
    if !remove_leased(tx, db, &[msg]).await?[0] {
        return Ok(false);
    }
    let notices: Vec<&Outgoing> = notices.iter().collect();
    insert(tx, db, relay_domain, &notices, &[]).await?;
    Ok(true)
}

/// How long a sent message can still be bounced to.
const SENT_RETENTION_SECS: i64 = 30 * 86_400;

/// The thread and direction of a message the relay queued or sent under `queue_id`.
pub async fn find_sent(db: &Db, queue_id: &str) -> Result<Option<(String, Side)>, StoreError> {
    let row = sqlx::query(
        "SELECT thread_id, direction FROM queue WHERE id = $1 AND mail_from <> '' \
         UNION ALL SELECT thread_id, direction FROM sent_messages WHERE queue_id = $1 AND sent_at > $2",
    )
    .bind(queue_id)
    .bind(now() - SENT_RETENTION_SECS)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| Ok((r.try_get("thread_id")?, parse_direction(&r.try_get::<String, _>("direction")?)?)))
        .transpose()
}

/// Forgets sent-message records older than the bounce window.
pub async fn prune_sent(db: &Db) -> Result<u64, StoreError> {
    let res = sqlx::query("DELETE FROM sent_messages WHERE sent_at <= $1")
        .bind(now() - SENT_RETENTION_SECS)
        .execute(&db.pool)
        .await?;
    Ok(res.rows_affected())
}

/// Not delivered this time: try again at `next_attempt_at`, if the lease is still `msg`'s
/// (false: lost, nothing written). `attempt` says whether this counts as an attempt (a
/// destination at its concurrency limit does not). `error` is what the operator sees in
/// `queue list`: callers pass it with the recipient's address cut out.
pub async fn retry_later(
    db: &Db,
    msg: &Leased,
    next_attempt_at: i64,
    error: &str,
    attempt: bool,
) -> Result<bool, StoreError> {
    let mut tx = db.pool.begin().await?;
    let written = defer(&mut tx, msg, next_attempt_at, error, attempt).await?;
    tx.commit().await?;
    Ok(written)
}

/// `retry_later`, inside a transaction the caller commits.
async fn defer(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    msg: &Leased,
    next_attempt_at: i64,
    error: &str,
    attempt: bool,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE queue SET attempts = attempts + $3, next_attempt_at = $4, locked_until = 0, \
         locked_by = NULL, lease_token = NULL, last_error = $5 WHERE id = $1 AND lease_token = $2",
    )
    .bind(&msg.id)
    .bind(&msg.token)
    .bind(i64::from(attempt))
    .bind(next_attempt_at)
    .bind(error)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// When the next attempt is due after `attempts` failures: exponential backoff from
/// `base`, capped at `max` (RFC 5321 4.5.4.1: at least 30 minutes apart is the norm for
/// the internet; the base is configurable so tests can shorten it).
pub fn backoff(attempts: i64, base: Duration, max: Duration) -> Duration {
    let factor = 2u64.saturating_pow(attempts.clamp(0, 30) as u32);
    base.saturating_mul(factor as u32).min(max)
}

/// A queued message as the operator sees it (no recipient address, no body).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct QueuedInfo {
    pub id: String,
    pub thread: String,
    /// `to_shopper` or `to_store`.
    pub direction: String,
    pub attempts: i64,
    pub created_at: Timestamp,
    /// When it is tried next; while a worker is trying it, when its lease ends (it is
    /// tried again then if that worker's relay is lost).
    pub next_attempt_at: Timestamp,
    /// Bytes of the message.
    pub size: i64,
    /// The last deferral, with the recipient's address cut out.
    pub last_error: Option<String>,
    /// Held by the operator: not delivered until released.
    pub held: bool,
    /// A worker is trying it now: the node id (`queue.node_id`) of its relay.
    pub in_flight: Option<String>,
}

const INFO: &str = "id, thread_id, direction, attempts, created_at, next_attempt_at, size, last_error, \
                    held, locked_by, locked_until";

fn info_from_row(r: &sqlx::any::AnyRow, t: i64) -> Result<QueuedInfo, StoreError> {
    let locked_until: i64 = r.try_get("locked_until")?;
    let locked_by: Option<String> = r.try_get("locked_by")?;
    Ok(QueuedInfo {
        id: r.try_get("id")?,
        thread: r.try_get("thread_id")?,
        direction: r.try_get("direction")?,
        attempts: r.try_get("attempts")?,
        created_at: Timestamp(r.try_get("created_at")?),
        next_attempt_at: Timestamp(r.try_get("next_attempt_at")?),
        size: r.try_get("size")?,
        last_error: r.try_get("last_error")?,
        held: r.try_get::<i64, _>("held")? != 0,
        in_flight: locked_by.filter(|_| locked_until > t),
    })
}

/// The cursor key of a listed message: oldest first, ties by id.
pub fn list_key(m: &QueuedInfo) -> String {
    format!("{}:{}", m.created_at.secs(), m.id)
}

/// Up to `limit` queued messages, oldest first, after the one whose `list_key` is `after`.
pub async fn list(db: &Db, limit: i64, after: Option<(i64, String)>) -> Result<Vec<QueuedInfo>, StoreError> {
    let (at, id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {INFO} FROM queue WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
         ORDER BY created_at, id LIMIT $3"
    )))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    let t = now();
    rows.iter().map(|r| info_from_row(r, t)).collect()
}

/// One queued message (`queue show`).
pub async fn show(db: &Db, id: &str) -> Result<QueuedInfo, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {INFO} FROM queue WHERE id = $1")))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    info_from_row(&row, now())
}

/// Deletes a queued message and its body (`queue delete`), recorded in the audit log. A
/// worker trying it now loses its lease: it writes nothing back, and its lease renewal
/// stops the attempt.
pub async fn delete(db: &Db, id: &str, actor: Actor) -> Result<(), StoreError> {
    let mut tx = db.pool.begin().await?;
    let n = sqlx::query("DELETE FROM queue WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    sqlx::query("DELETE FROM queue_bodies WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    crate::store::audit::record(db, actor, "queue.delete", id, serde_json::json!({})).await
}

/// Holds a message (`queue hold`): never claimed until released. An attempt already under
/// way finishes; if it defers, the message stays held.
pub async fn hold(db: &Db, id: &str, actor: Actor) -> Result<QueuedInfo, StoreError> {
    set_held(db, id, true, actor).await
}

/// Releases a held message (`queue release`): due at once.
pub async fn release(db: &Db, id: &str, actor: Actor) -> Result<QueuedInfo, StoreError> {
    set_held(db, id, false, actor).await
}

async fn set_held(db: &Db, id: &str, held: bool, actor: Actor) -> Result<QueuedInfo, StoreError> {
    let sql = if held {
        "UPDATE queue SET held = 1 WHERE id = $1"
    } else {
        // Due at once, unless a worker is trying it now (its lease is its due time).
        "UPDATE queue SET held = 0, \
         next_attempt_at = CASE WHEN locked_until > $2 THEN next_attempt_at ELSE $2 END WHERE id = $1"
    };
    let mut q = sqlx::query(sql).bind(id);
    if !held {
        q = q.bind(now());
    }
    if q.execute(&db.pool).await?.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    let action = if held { "queue.hold" } else { "queue.release" };
    crate::store::audit::record(db, actor, action, id, serde_json::json!({})).await?;
    show(db, id).await
}

/// How many messages wait, and the age in seconds of the oldest.
pub async fn depth(db: &Db) -> Result<(i64, i64), StoreError> {
    let row =
        sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM queue").fetch_one(&db.pool).await?;
    let n: i64 = row.try_get("n")?;
    let oldest: Option<i64> = row.try_get("oldest")?;
    Ok((n, oldest.map(|o| now() - o).unwrap_or(0)))
}

/// Whether nothing is queued, so nothing is in flight either: the barrier tests wait for
/// instead of sleeping for "nothing happened".
pub async fn idle(db: &Db) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM queue").fetch_one(&db.pool).await?;
    Ok(row.try_get::<i64, _>("n")? == 0)
}

/// Makes every queued message that is not held due now (the operator's "flush").
pub async fn retry_all_now(db: &Db) -> Result<u64, StoreError> {
    let res = sqlx::query("UPDATE queue SET next_attempt_at = $1 WHERE locked_until <= $1 AND held = 0")
        .bind(now())
        .execute(&db.pool)
        .await?;
    Ok(res.rows_affected())
}

/// `queue.max_messages`: whether the queue holds so much that new mail should wait
/// (`451 4.3.1`). Counted at most once a second; messages this process enqueued since are
/// added at once, so a burst cannot overshoot the bound by more than other relays' share.
pub struct Backpressure {
    limit: i64,
    estimate: std::sync::atomic::AtomicI64,
    counted_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Backpressure {
    pub fn new(limit: u64) -> Self {
        Self {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            estimate: std::sync::atomic::AtomicI64::new(0),
            counted_at: std::sync::Mutex::new(None),
        }
    }

    /// True when the queue holds `limit` messages or more. A failed count says false: the
    /// enqueue that follows will answer 451 4.3.0 itself if the database is gone.
    pub async fn full(&self, db: &Db) -> bool {
        use std::sync::atomic::Ordering;
        let stale = self
            .counted_at
            .lock()
            .map(|at| at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)))
            .unwrap_or(true);
        if stale && let Ok((n, _)) = depth(db).await {
            self.estimate.store(n, Ordering::Relaxed);
            if let Ok(mut at) = self.counted_at.lock() {
                *at = Some(std::time::Instant::now());
            }
        }
        self.estimate.load(Ordering::Relaxed) >= self.limit
    }

    /// `n` messages were just enqueued by this process.
    pub fn added(&self, n: usize) {
        self.estimate.fetch_add(n as i64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_every_row_once_in_fewest_statements() {
        for n in 0..300 {
            let runs: Vec<_> = runs(n).collect();
            let mut next = 0;
            for r in &runs {
                assert_eq!(r.start, next, "contiguous for {n}");
                assert!(!r.is_empty() && r.len() <= MAX_ROWS, "{n}: {r:?}");
                next = r.end;
            }
            assert_eq!(next, n, "every row of {n}");
            assert_eq!(runs.len(), n.div_ceil(MAX_ROWS), "{n}: {runs:?}");
        }
        assert_eq!(runs(12).collect::<Vec<_>>(), vec![0..12]);
        assert_eq!(runs(40).collect::<Vec<_>>(), vec![0..32, 32..40]);
    }

    #[test]
    fn big_bodies_go_in_smaller_runs() {
        let mib = 1024 * 1024;
        // 20 bodies of 5 MiB: 16 MiB at most per statement, so runs of 2 or 3, every body once.
        let small: Vec<_> = runs_within(20, |_| 5 * mib).collect();
        assert!(small.iter().all(|r| (2..=3).contains(&r.len())), "{small:?}");
        assert_eq!(small.iter().map(|r| r.len()).sum::<usize>(), 20);
        assert!(small.windows(2).all(|w| w[0].end == w[1].start), "{small:?}");
        // One body over the limit still goes, alone.
        assert_eq!(runs_within(3, |_| 30 * mib).collect::<Vec<_>>(), vec![0..1, 1..2, 2..3]);
        // Small bodies: as `runs`.
        assert_eq!(runs_within(40, |_| 10_000).collect::<Vec<_>>(), runs(40).collect::<Vec<_>>());
    }

    #[test]
    fn tuples_number_parameters_row_by_row() {
        assert_eq!(tuples(2, 3, 2, ", $1"), "($2, $3, $4, $1), ($5, $6, $7, $1)");
        assert_eq!(tuples(1, 2, 1, ""), "($1, $2)");
        assert_eq!(firsts(3, 2, 1), "$1, $3, $5");
        assert_eq!(together(Backend::Postgres, &["INSERT a".into()]), "INSERT a");
        assert_eq!(
            together(Backend::Postgres, &["INSERT a".into(), "SELECT b".into()]),
            "WITH w0 AS (INSERT a) SELECT b"
        );
        assert_eq!(together(Backend::Sqlite, &["INSERT a".into(), "SELECT b".into()]), "INSERT a; SELECT b");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (b, m) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(backoff(0, b, m), Duration::from_secs(60));
        assert_eq!(backoff(1, b, m), Duration::from_secs(120));
        assert_eq!(backoff(10, b, m), Duration::from_secs(3600));
        assert_eq!(backoff(1000, b, m), Duration::from_secs(3600));
    }
}
