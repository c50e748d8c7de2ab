//! The storage layer on both backends: the same suite runs on a real SQLite file and on
//! the local PostgreSQL server (skipped, with a note, where there is none).

mod support;

use std::collections::HashSet;
use std::time::Duration;

use maskrelay::address::{Mailbox, SenderPattern, Side, StoreId};
use maskrelay::queue::{self, IdMapping, Outgoing};
use maskrelay::store::events::{self, EventKind, NewEvent};
use maskrelay::store::stores::{self, StoreFields};
use maskrelay::store::threads::{self, Actor, NewThread, ThreadStatus};
use maskrelay::store::{Db, StoreError, Vault, message_ids};
use support::*;

/// The tests of an `async fn(&str)` that takes a database URL: on SQLite (a temporary file)
/// and on PostgreSQL (skipped, and said, when no server answers).
macro_rules! on_both_backends {
    ($sqlite:ident, $postgres:ident, $body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let (url, _dir) = sqlite_url();
            $body(&url).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(url) = postgres_url().await else { return };
            $body(&url).await;
        }
    };
}

fn vault() -> Vault {
    Vault::from_base64(&[PRIVACY_KEY.as_str()]).unwrap()
}

/// The store `acme` (contact support@acme.example, senders @acme.example), created.
async fn acme_store(db: &Db) -> StoreId {
    let acme = StoreId::parse("acme").unwrap();
    let fields = StoreFields {
        name: "Acme".into(),
        contact: Mailbox::parse("support@acme.example").unwrap(),
        senders: vec![SenderPattern::parse("@acme.example").unwrap()],
    };
    stores::create(db, &acme, &fields, Actor::Api).await.unwrap();
    acme
}

/// A thread of the store `acme` (created here) for jane@shopper.example, order `order`.
async fn jane_thread(db: &Db, order: &str) -> threads::Thread {
    let new = NewThread {
        store: acme_store(db).await,
        order: order.into(),
        shopper: Mailbox::parse("jane@shopper.example").unwrap(),
        shopper_name: None,
        ttl_days: 30,
        locale: Default::default(),
    };
    threads::create(db, &new, Actor::Api).await.unwrap().0
}

async fn suite(url: &str) {
    let db = Db::connect(url, 4, vault()).await.expect("connect and migrate");
    // Migrating again is a no-op.
    let db2 = Db::connect(url, 2, vault()).await.expect("second connect");
    assert!(db2.ping().await);

    let acme = StoreId::parse("acme").unwrap();
    let fields = StoreFields {
        name: "Acme".into(),
        contact: Mailbox::parse("support@acme.example").unwrap(),
        senders: vec![SenderPattern::parse("@acme.example").unwrap()],
    };
    let store = stores::create(&db, &acme, &fields, Actor::Api).await.unwrap();
    assert!(store.approves(&Mailbox::parse("Anyone@ACME.example").unwrap()));
    assert!(matches!(stores::create(&db, &acme, &fields, Actor::Api).await, Err(StoreError::Conflict(_))));
    let changed = stores::update(&db, &acme, Some("Acme Ltd"), None, None, Actor::Api).await.unwrap();
    assert_eq!(changed.name, "Acme Ltd");
    assert_eq!(changed.contact, "support@acme.example");

    let new = NewThread {
        store: acme.clone(),
        order: "o-1".into(),
        shopper: Mailbox::parse("Jane@Shopper.example").unwrap(),
        shopper_name: Some("Jane".into()),
        ttl_days: 30,
        locale: Default::default(),
    };
    let (t, created) = threads::create(&db, &new, Actor::Api).await.unwrap();
    assert!(created);
    let (again, created) = threads::create(&db, &new, Actor::Api).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, t.id);
    assert_eq!(t.status, ThreadStatus::Active);

    // Concurrent creation of one thread yields one thread.
    let new2 = NewThread { order: "o-2".into(), ..new.clone() };
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let db = db.clone();
            let n = new2.clone();
            tokio::spawn(async move { threads::create(&db, &n, Actor::Api).await.unwrap().0.id })
        })
        .collect();
    let mut ids = HashSet::new();
    for r in racers {
        ids.insert(r.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "racing creations made {ids:?}");

    let (found, side, store) =
        threads::find_by_alias(&db, &t.shopper_alias.to_uppercase()).await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), side, store.id.as_str()), (t.id.as_str(), Side::Shopper, "acme"));
    let (_, side, _) = threads::find_by_alias(&db, &t.store_alias).await.unwrap().unwrap();
    assert_eq!(side, Side::Store);
    assert!(threads::find_by_alias(&db, "nobody").await.unwrap().is_none());

    // Queue: enqueue, two workers lease disjoint sets, retry, complete.
    let items: Vec<Outgoing> = (0..10)
        .map(|i| Outgoing {
            thread_id: t.id.clone(),
            direction: Side::Shopper,
            rcpt_to: Mailbox::parse("jane@shopper.example").unwrap(),
            message: format!("msg {i}\r\n").into_bytes(),
            null_sender: false,
        })
        .collect();
    let mapping = IdMapping {
        thread_id: t.id.clone(),
        relay_id: "abc@relay.test".into(),
        original: "orig@host.example".into(),
    };
    let queued = queue::enqueue(&db, "relay.test", &items, &[mapping.clone()]).await.unwrap();
    assert_eq!(queued.len(), 10);
    queue::enqueue(&db, "relay.test", &[], &[mapping]).await.expect("a known mapping is not an error");
    let known = message_ids::lookup(&db, &t.id, "relay.test", &["ABC@relay.test", "other@elsewhere.example"])
        .await
        .unwrap();
    assert_eq!(known.get("abc@relay.test").map(String::as_str), Some("orig@host.example"));

    let lease = Duration::from_secs(60);
    // Two workers claim one message at a time, concurrently: never the same one.
    let claim_all = |node: &'static str| {
        let db = db.clone();
        async move {
            let mut got = Vec::new();
            while got.len() < 6 {
                match queue::claim(&db, node, lease).await.unwrap() {
                    Some(m) => got.push(m),
                    None => break,
                }
            }
            got
        }
    };
    let (a, b) = tokio::join!(claim_all("node-a"), claim_all("node-b"));
    assert_eq!(a.len() + b.len(), 10);
    let a_ids: HashSet<_> = a.iter().map(|m| m.id.clone()).collect();
    assert!(b.iter().all(|m| !a_ids.contains(&m.id)), "a message was leased twice");
    assert!(
        queue::claim(&db, "node-c", lease).await.unwrap().is_none(),
        "leased messages are not handed out again"
    );
    assert!(a[0].mail_from.starts_with("bounce+") && a[0].mail_from.ends_with("@relay.test"));
    assert_eq!(a[0].rcpt_to, "jane@shopper.example");
    assert!(a.iter().chain(&b).all(|m| m.message.starts_with(b"msg ")), "bodies read back");

    for m in &a {
        assert!(queue::complete(&db, m).await.unwrap());
    }
    assert!(!queue::complete(&db, &a[0]).await.unwrap(), "completed twice");
    // A delivered message leaves its body and its row, and stays findable by its VERP id
    // (late bounces); the writes of a completion are one statement on PostgreSQL.
    let bodies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_bodies WHERE id = $1")
        .bind(&a[0].id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(bodies, 0, "the body went with the message");
    assert_eq!(queue::find_sent(&db, &a[0].id).await.unwrap(), Some((t.id.clone(), Side::Shopper)));
    assert!(queue::retry_later(&db, &b[0], maskrelay::store::now() - 1, "451 later", true).await.unwrap());
    let retried = queue::claim(&db, "node-c", lease).await.unwrap().expect("due again");
    assert_eq!(retried.id, b[0].id);
    assert_eq!(retried.attempts, 1);
    // The earlier holder's lease is gone: whatever it writes back now is ignored.
    assert!(!queue::retry_later(&db, &b[0], 0, "late", true).await.unwrap());
    assert!(!queue::complete(&db, &b[0]).await.unwrap());
    assert!(!queue::renew(&db, &b[0], lease).await.unwrap());
    assert!(queue::renew(&db, &retried, lease).await.unwrap());
    // A busy destination puts it back without counting an attempt.
    assert!(queue::retry_later(&db, &retried, maskrelay::store::now() - 1, "busy", false).await.unwrap());
    let busy = queue::claim(&db, "node-c", lease).await.unwrap().expect("due again");
    assert_eq!(busy.attempts, 1, "a busy destination is not an attempt");
    // A held message is never claimed; released, it is due at once.
    assert!(queue::retry_later(&db, &busy, maskrelay::store::now() - 1, "451", true).await.unwrap());
    queue::hold(&db, &busy.id, Actor::Cli).await.unwrap();
    assert!(queue::show(&db, &busy.id).await.unwrap().held);
    assert!(queue::claim(&db, "node-c", lease).await.unwrap().is_none(), "held");
    let released = queue::release(&db, &busy.id, Actor::Cli).await.unwrap();
    assert!(!released.held);
    let c = queue::claim(&db, "node-c", lease).await.unwrap().expect("released");
    assert_eq!(c.id, busy.id);
    // A node restarted after a crash takes back its own leases at once, no one else's.
    assert_eq!(queue::release_node(&db, "node-b").await.unwrap() as usize, b.len() - 1);
    assert_eq!(queue::show(&db, &b[1].id).await.unwrap().in_flight, None);
    assert_eq!(queue::show(&db, &c.id).await.unwrap().in_flight.as_deref(), Some("node-c"));
    let (depth, _) = queue::depth(&db).await.unwrap();
    assert_eq!(depth as usize, 10 - a.len());
    // The operator deletes one: its worker loses the lease; the body goes with it.
    queue::delete(&db, &c.id, Actor::Cli).await.unwrap();
    assert!(!queue::renew(&db, &c, lease).await.unwrap());
    assert!(matches!(queue::show(&db, &c.id).await, Err(StoreError::NotFound)));
    assert!(matches!(queue::delete(&db, &c.id, Actor::Cli).await, Err(StoreError::NotFound)));

    // Events and the leak signal.
    for alias in [&t.shopper_alias, &t.shopper_alias, &again.store_alias] {
        events::record(
            &db,
            &NewEvent {
                kind: EventKind::UnauthorizedSender,
                store_id: Some("acme"),
                thread_id: Some(&t.id),
                alias: Some(alias),
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    }
    let leaks = events::leaks(&db, "acme").await.unwrap();
    assert_eq!(leaks.leaked_aliases, 1, "only shopper aliases count");
    assert_eq!(leaks.attempts, 2);
    assert!(leaks.first_at.is_some());
    let filter = events::EventFilter { kind: Some(EventKind::UnauthorizedSender), store: Some("acme") };
    let listed = events::list(&db, &filter, None, 10).await.unwrap();
    assert_eq!(listed.len(), 3);

    // Revoke and erase.
    let revoked = threads::revoke(&db, &t.id, Actor::Api).await.unwrap();
    assert_eq!(revoked.status, ThreadStatus::Revoked);
    assert_eq!(threads::revoke_shopper(&db, &new.shopper, Actor::Api).await.unwrap(), 1, "the o-2 thread");
    assert_eq!(threads::erase_shopper(&db, &new.shopper, Actor::Api).await.unwrap(), 2);
    let erased = threads::get(&db, &t.id).await.unwrap();
    assert_eq!(erased.status, ThreadStatus::Erased);
    assert!(erased.shopper.is_none() && erased.shopper_name.is_none());
    assert_eq!(queue::depth(&db).await.unwrap().0, 0, "queued mail of erased threads is gone");
    assert!(message_ids::lookup(&db, &t.id, "relay.test", &["abc@relay.test"]).await.unwrap().is_empty());

    assert_eq!(stores::delete(&db, &acme, Actor::Api).await.unwrap(), 0);
    assert!(matches!(stores::get(&db, &acme).await, Err(StoreError::NotFound)));
}

on_both_backends!(storage_suite_on_sqlite, storage_suite_on_postgres, suite);

/// Key rotation: data sealed under an old key stays readable and findable by address while
/// the new key is added in front, `rotate` re-seals every value and blind index, and after
/// it the old key can go. A keyring that opens nothing in the database refuses to start.
async fn rotation(url: &str) {
    let (old, new) = (Vault::generate_key(), Vault::generate_key());
    let ring = |keys: &[&str]| Vault::from_base64(keys).unwrap();
    let db = Db::connect(url, 2, ring(&[&old])).await.unwrap();
    let acme = acme_store(&db).await;
    let jane = Mailbox::parse("jane@shopper.example").unwrap();
    let new_thread = |order: &str| NewThread {
        store: acme.clone(),
        order: order.into(),
        shopper: jane.clone(),
        shopper_name: Some("Jane".into()),
        ttl_days: 30,
        locale: Default::default(),
    };
    let mut threads_made = Vec::new();
    for i in 0..7 {
        threads_made.push(threads::create(&db, &new_thread(&format!("o-{i}")), Actor::Api).await.unwrap().0);
    }
    let t = &threads_made[0];
    let outgoing = Outgoing {
        thread_id: t.id.clone(),
        direction: Side::Shopper,
        rcpt_to: jane.clone(),
        message: b"To: jane@shopper.example\r\n\r\nhello\r\n".to_vec(),
        null_sender: false,
    };
    let mapping =
        IdMapping { thread_id: t.id.clone(), relay_id: "r1@relay.test".into(), original: "o1@host".into() };
    queue::enqueue(&db, "relay.test", &[outgoing], &[mapping]).await.unwrap();
    // A webhook's signing secret is sealed too, and rotates with the rest.
    let hook =
        maskrelay::store::webhooks::create(&db, "http://127.0.0.1:9/hook", &["leak".into()], Actor::Api)
            .await
            .unwrap();
    db.pool.close().await;

    // A key from elsewhere opens nothing: the start fails and names the missing key.
    let err = Db::connect(url, 2, ring(&[&new])).await.unwrap_err();
    assert!(err.to_string().contains(&ring(&[&old]).current_key_id()), "{err}");

    // During rotation: new key first, old key still there.
    let db = Db::connect(url, 2, ring(&[&new, &old])).await.unwrap();
    let (same, created) = threads::create(&db, &new_thread("o-0"), Actor::Api).await.unwrap();
    assert!(!created, "the old blind index still finds the thread");
    assert_eq!(same.id, t.id);
    let mut seen = Vec::new();
    let report =
        maskrelay::store::rekey::rotate(&db, |p| seen.push((p.table.to_owned(), p.scanned, p.total)))
            .await
            .unwrap();
    assert_eq!(
        report,
        vec![
            ("threads", 7, 7),
            ("queue", 1, 1),
            ("queue_bodies", 1, 1),
            ("message_ids", 1, 1),
            ("webhooks", 1, 1)
        ]
    );
    assert!(seen.iter().any(|(table, scanned, total)| table == "threads" && scanned == total));
    let again = maskrelay::store::rekey::rotate(&db, |_| {}).await.unwrap();
    assert_eq!(
        again,
        vec![
            ("threads", 7, 0),
            ("queue", 1, 0),
            ("queue_bodies", 1, 0),
            ("message_ids", 1, 0),
            ("webhooks", 1, 0)
        ],
        "nothing left"
    );
    db.pool.close().await;

    // After rotation the old key is dropped and everything still opens.
    let db = Db::connect(url, 2, ring(&[&new])).await.unwrap();
    let thread = threads::get(&db, &t.id).await.unwrap();
    assert_eq!(thread.shopper.unwrap().expose(), "jane@shopper.example");
    assert_eq!(thread.shopper_name.as_deref(), Some("Jane"));
    let leased = queue::claim(&db, "w", Duration::from_secs(60)).await.unwrap().expect("queued");
    assert_eq!(leased.rcpt_to, "jane@shopper.example");
    assert!(leased.message.ends_with(b"hello\r\n"));
    let ids = message_ids::lookup(&db, &t.id, "relay.test", &["r1@relay.test"]).await.unwrap();
    assert_eq!(ids.get("r1@relay.test").map(String::as_str), Some("o1@host"));
    // The secret still signs: an outbox row for the webhook leases with it opened.
    let mut conn = db.pool.acquire().await.unwrap();
    let notice = maskrelay::store::webhooks::Notice { kind: "leak", data: serde_json::json!({}) };
    maskrelay::store::webhooks::enqueue(&mut conn, &[notice]).await.unwrap();
    drop(conn);
    let rows = maskrelay::store::webhooks::lease(&db, "w", 10, 60).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].secret, hook.secret);
    assert_eq!(threads::erase_shopper(&db, &jane, Actor::Api).await.unwrap(), 7, "found by the new index");
}

on_both_backends!(key_rotation_on_sqlite, key_rotation_on_postgres, rotation);

/// The whole relay on PostgreSQL: one message through, end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_runs_on_postgres() {
    let Some(url) = postgres_url().await else { return };
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let thread = relay.thread("pg-1").await;
    let alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r = c
        .send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, "on postgres", "hi"))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, ["jane.doe@shopper.example"]);
    relay.stop().await;
}

/// SPEC: several `serve` processes on one PostgreSQL share the work, no message delivered
/// twice, none lost when one stops. Two relays on one database, mail accepted by both, one
/// stopped halfway: every message arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_share_one_postgres_queue() {
    let Some(url) = postgres_url().await else { return };
    let sink = Sink::start().await;
    let a = TestRelay::start(test_config(&url, sink.addr)).await;
    let b = TestRelay::start(test_config(&url, sink.addr)).await;
    let b_smtp = b.smtp();
    let mut b = Some(b);
    a.acme().await;
    let alias = a.thread("shared").await["shopper_alias"].as_str().unwrap().to_owned();
    let total = 40;
    let mut ca = Client::ready(a.smtp()).await;
    let mut cb = Client::ready(b_smtp).await;
    for i in 0..total {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let r = c
            .send(
                "orders@acme.example",
                &[&alias],
                &message("orders@acme.example", &alias, &format!("m{i}"), "x"),
            )
            .await;
        assert_eq!(r.code, 250, "{}", r.text);
        if i == total / 2 {
            // One node goes away while mail is in flight.
            if let Some(b) = b.take() {
                b.stop().await;
            }
            cb = Client::ready(a.smtp()).await;
        }
    }
    sink.wait_for(total, WAIT).await;
    // Every write-back done: nothing left that could still be sent again.
    a.wait_queue_empty().await;
    let mut subjects: Vec<String> = sink.delivered().iter().map(|d| d.header("Subject").unwrap()).collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), total, "every message once");
    assert_eq!(sink.delivered().len(), total, "no message twice");
    a.stop().await;
}

/// Migration 0005 carries queued mail over: a database migrated up to 0004 with a message
/// queued the old way (body in the queue row, leased by a relay that is gone) gets it
/// delivered from `queue_bodies` after the upgrade (0005 and every later migration, in
/// order), still sealed, and its lease kept until its node is released (0010).
async fn queue_migration(url: &str) {
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(if url.starts_with("sqlite") { "sqlite" } else { "postgres" });
    let before = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let number: u32 = path.file_name().unwrap().to_string_lossy()[..4].parse().unwrap();
        if number < 5 {
            std::fs::copy(&path, before.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let old = sqlx::migrate::Migrator::new(before.path()).await.unwrap();
    let v = vault();
    let id = "oldqueuedmessage0000001";
    let insert = "INSERT INTO queue (id, thread_id, direction, mail_from, rcpt_to, message, attempts, \
                  created_at, next_attempt_at, locked_until, locked_by) \
                  VALUES ($1, 'thr_old', 'to_shopper', '', $2, $3, 2, 100, 0, 9999999999, 'gone-node')";
    let rcpt = v.seal_text(maskrelay::store::Field::QueueRecipient, id, "jane@shopper.example");
    let body =
        v.seal(maskrelay::store::Field::QueueMessage, id, b"Subject: old\r\n\r\nqueued before 0005\r\n");
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc")).await.unwrap();
        old.run(&pool).await.unwrap();
        sqlx::query(insert).bind(id).bind(&rcpt).bind(&body).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        old.run(&pool).await.unwrap();
        sqlx::query(insert).bind(id).bind(&rcpt).bind(&body).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let db = Db::connect(url, 2, vault()).await.expect("0005 and the later migrations apply");
    let info = queue::show(&db, id).await.unwrap();
    assert_eq!((info.attempts, info.in_flight.as_deref()), (2, Some("gone-node")));
    assert!(info.size > 0);
    assert!(queue::claim(&db, "me", Duration::from_secs(60)).await.unwrap().is_none(), "still leased");
    assert_eq!(queue::release_node(&db, "gone-node").await.unwrap(), 1);
    let m = queue::claim(&db, "me", Duration::from_secs(60)).await.unwrap().expect("carried over");
    assert_eq!(m.id, id);
    assert_eq!(m.rcpt_to, "jane@shopper.example");
    assert_eq!(m.message, b"Subject: old\r\n\r\nqueued before 0005\r\n");
    assert!(queue::complete(&db, &m).await.unwrap());
    assert_eq!(queue::depth(&db).await.unwrap().0, 0);
}

on_both_backends!(queue_migration_on_sqlite, queue_migration_on_postgres, queue_migration);

/// A queued message that cannot be read (its body gone, or sealed under a key the keyring
/// lacks) at the head of the queue is set aside as held, with why, and the messages behind
/// it are still claimed: a failed claim must not leave it there to fail every claim after.
async fn unreadable_message(url: &str) {
    let db = Db::connect(url, 2, vault()).await.unwrap();
    let t = jane_thread(&db, "o-unreadable").await;
    let item = |body: &str| Outgoing {
        thread_id: t.id.clone(),
        direction: Side::Shopper,
        rcpt_to: Mailbox::parse("jane@shopper.example").unwrap(),
        message: body.as_bytes().to_vec(),
        null_sender: false,
    };
    let ids = queue::enqueue(&db, "relay.test", &[item("lost\r\n"), item("kept\r\n")], &[]).await.unwrap();
    let (lost, kept) = (&ids[0], &ids[1]);
    sqlx::query("DELETE FROM queue_bodies WHERE id = $1").bind(lost).execute(&db.pool).await.unwrap();
    sqlx::query("UPDATE queue SET next_attempt_at = next_attempt_at - 10 WHERE id = $1")
        .bind(lost)
        .execute(&db.pool)
        .await
        .unwrap();
    let lease = Duration::from_secs(60);
    let m = queue::claim(&db, "me", lease).await.unwrap().expect("the message behind it");
    assert_eq!((&m.id, m.message.as_slice()), (kept, b"kept\r\n".as_slice()));
    assert!(queue::claim(&db, "me", lease).await.unwrap().is_none());
    let info = queue::show(&db, lost).await.unwrap();
    assert!(info.held, "set aside as held");
    assert_eq!(info.in_flight, None);
    assert!(info.last_error.as_deref().is_some_and(|e| e.contains("unreadable")), "{:?}", info.last_error);
    // The operator can still delete it.
    queue::delete(&db, lost, Actor::Api).await.unwrap();
    assert!(queue::complete(&db, &m).await.unwrap());
    assert_eq!(queue::depth(&db).await.unwrap().0, 0);
}

on_both_backends!(
    unreadable_message_is_set_aside_on_sqlite,
    unreadable_message_is_set_aside_on_postgres,
    unreadable_message
);

/// The group-commit writer under concurrent callers, so its batches hold many jobs of each
/// kind (written in multi-row statements): 60 sessions enqueue 1-3 messages each (120),
/// 150 workers claim at once, every message is claimed by exactly one of them with its own
/// body and lease, all complete, a second completion writes nothing, the queue is empty
/// and every sent message is findable by its id.
async fn writer_batches(url: &str) {
    let db = Db::connect(url, 4, vault()).await.unwrap();
    let t = jane_thread(&db, "o-batches").await;
    let writer = queue::writer::Writer::start(db.clone(), "relay.test".into());
    let mut sessions = tokio::task::JoinSet::new();
    for s in 0..60 {
        let (writer, thread) = (writer.clone(), t.id.clone());
        sessions.spawn(async move {
            let items: Vec<Outgoing> = (0..1 + s % 3)
                .map(|i| Outgoing {
                    thread_id: thread.clone(),
                    direction: Side::Shopper,
                    rcpt_to: Mailbox::parse(&format!("r{s}-{i}@shopper.example")).unwrap(),
                    message: format!("body {s}-{i}\r\n").into_bytes(),
                    null_sender: false,
                })
                .collect();
            let mapping = IdMapping {
                thread_id: thread,
                relay_id: format!("m{s}@relay.test"),
                original: format!("o{s}@x"),
            };
            let ids = writer.enqueue(&items, &[mapping]).await.unwrap();
            assert_eq!(ids.len(), items.len());
            ids.into_iter().zip(items).map(|(id, item)| (id, item.message)).collect::<Vec<_>>()
        });
    }
    let mut queued = std::collections::HashMap::new();
    while let Some(done) = sessions.join_next().await {
        queued.extend(done.unwrap());
    }
    assert_eq!(queued.len(), (0..60).map(|s| 1 + s % 3).sum::<usize>());

    let lease = Duration::from_secs(60);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..150 {
        let writer = writer.clone();
        workers.spawn(async move { writer.claim("node-b", lease).await.unwrap() });
    }
    let mut claimed = Vec::new();
    while let Some(got) = workers.join_next().await {
        claimed.extend(got.unwrap());
    }
    assert_eq!(claimed.len(), queued.len(), "every message claimed, by one worker each");
    let ids: HashSet<&str> = claimed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), claimed.len(), "no message claimed twice");
    let tokens: HashSet<&str> = claimed.iter().map(|m| m.token.as_str()).collect();
    assert_eq!(tokens.len(), claimed.len(), "a lease of its own for each");
    for m in &claimed {
        assert_eq!(&m.message, &queued[&m.id], "{} has its own body", m.id);
    }
    assert!(writer.claim("node-b", lease).await.unwrap().is_none());

    let mut done = tokio::task::JoinSet::new();
    for m in claimed.clone() {
        let writer = writer.clone();
        done.spawn(async move { writer.complete(&m).await.unwrap() });
    }
    while let Some(written) = done.join_next().await {
        assert!(written.unwrap(), "completed under its lease");
    }
    assert!(!writer.complete(&claimed[0]).await.unwrap(), "a second completion writes nothing");
    assert_eq!(queue::depth(&db).await.unwrap().0, 0);
    for m in &claimed {
        assert!(queue::find_sent(&db, &m.id).await.unwrap().is_some(), "{} recorded as sent", m.id);
    }
    let bodies: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM queue_bodies").fetch_one(&db.pool).await.unwrap();
    assert_eq!(bodies, 0, "no body outlives its message");
    let known: Vec<String> = (0..60).map(|s| format!("m{s}@relay.test")).collect();
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    let found = message_ids::lookup(&db, &t.id, "relay.test", &known).await.unwrap();
    assert_eq!(found.len(), 60, "every mapping stored");
}

on_both_backends!(writer_batches_on_sqlite, writer_batches_on_postgres, writer_batches);

/// The retention sweep takes revoked or paused threads and expired ones, each kind from its
/// own index, at most `limit` a call, and leaves an active thread alone.
async fn retention_batches(url: &str) {
    let db = Db::connect(url, 4, vault()).await.unwrap();
    let store = acme_store(&db).await;
    let thread = |order: &str| NewThread {
        store: store.clone(),
        order: order.into(),
        shopper: Mailbox::parse("jane@shopper.example").unwrap(),
        shopper_name: None,
        ttl_days: 30,
        locale: Default::default(),
    };
    let mut due = Vec::new();
    for (order, set) in [
        ("R-1", "status = 'revoked', updated_at = 1"),
        ("R-2", "status = 'disabled', updated_at = 2"),
        ("R-3", "expires_at = 1"),
        ("R-4", "expires_at = 2"),
    ] {
        let t = threads::create(&db, &thread(order), Actor::Api).await.unwrap().0;
        sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE threads SET {set} WHERE id = $1")))
            .bind(&t.id)
            .execute(&db.pool)
            .await
            .unwrap();
        due.push(t.id);
    }
    let kept = threads::create(&db, &thread("R-5"), Actor::Api).await.unwrap().0;
    let before = maskrelay::store::now();
    let first = threads::erase_due(&db, before, 3).await.unwrap();
    assert_eq!(first.len(), 3, "at most the limit: {first:?}");
    let second = threads::erase_due(&db, before, 3).await.unwrap();
    assert_eq!(second.len(), 1, "then the rest: {second:?}");
    assert!(threads::erase_due(&db, before, 3).await.unwrap().is_empty());
    let mut erased: Vec<String> = first.into_iter().chain(second).collect();
    erased.sort();
    due.sort();
    assert_eq!(erased, due, "every due thread once");
    for id in &due {
        assert_eq!(threads::get(&db, id).await.unwrap().status, ThreadStatus::Erased);
    }
    assert_eq!(threads::get(&db, &kept.id).await.unwrap().status, ThreadStatus::Active);
}

on_both_backends!(retention_batches_on_sqlite, retention_batches_on_postgres, retention_batches);
