//! The list queries behind the API's paged lists, on SQLite and on PostgreSQL: filters,
//! keyset cursors through ties, the derived `expired` state, and the blind index under
//! every key of the ring.

mod support;

use maskrelay::address::{Mailbox, SenderPattern, StoreId};
use maskrelay::store::audit::{self, Actor};
use maskrelay::store::events::{self, EventFilter, EventKind, NewEvent};
use maskrelay::store::stores::{self, StoreFields};
use maskrelay::store::threads::{self, NewThread, Thread, ThreadFilter, ThreadKey, ThreadStatus};
use maskrelay::store::{Db, Vault};
use support::*;

/// Follows the keyset cursor through every page of `limit` rows.
async fn all_threads(db: &Db, filter: &ThreadFilter, limit: i64) -> Vec<Thread> {
    let (mut out, mut after) = (Vec::new(), None::<ThreadKey>);
    loop {
        let page = threads::list(db, filter, after.as_ref(), limit).await.unwrap();
        assert!(page.len() as i64 <= limit);
        let Some(last) = page.last() else { return out };
        after = Some(ThreadKey::of(last));
        let full = page.len() as i64 == limit;
        out.extend(page);
        if !full {
            return out;
        }
    }
}

fn ids(list: &[Thread]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|t| t.id.clone()).collect();
    v.sort();
    v
}

async fn suite(url: &str) {
    let old_key = Vault::generate_key();
    let db = Db::connect(url, 2, Vault::from_base64(&[old_key.as_str()]).unwrap()).await.unwrap();
    for id in ["acme", "beta", "gamma"] {
        let fields = StoreFields {
            name: id.into(),
            contact: Mailbox::parse(&format!("c@{id}.example")).unwrap(),
            senders: vec![SenderPattern::parse(&format!("@{id}.example")).unwrap()],
        };
        stores::create(&db, &StoreId::parse(id).unwrap(), &fields, Actor::Api).await.unwrap();
    }
    let (acme, beta) = (StoreId::parse("acme").unwrap(), StoreId::parse("beta").unwrap());
    let jane = Mailbox::parse("Jane@Shopper.example").unwrap();
    let bob = Mailbox::parse("bob@shopper.example").unwrap();
    let new = |store: &StoreId, order: &str, shopper: &Mailbox| NewThread {
        store: store.clone(),
        order: order.into(),
        shopper: shopper.clone(),
        shopper_name: None,
        ttl_days: 30,
        locale: maskrelay::locale::Locale::En,
    };
    let mut made = Vec::new();
    // Jane's first two threads are sealed under the old key.
    for (store, order, who) in [(&acme, "o-1", &jane), (&acme, "o-2", &jane)] {
        made.push(threads::create(&db, &new(store, order, who), Actor::Api).await.unwrap().0);
    }
    db.pool.close().await;
    // The rest under a new key, the old one still in the ring (rotation not run).
    let new_key = Vault::generate_key();
    let db = Db::connect(url, 2, Vault::from_base64(&[new_key.as_str(), old_key.as_str()]).unwrap())
        .await
        .unwrap();
    for (store, order, who) in
        [(&acme, "o-3", &jane), (&acme, "o-1", &bob), (&beta, "b-1", &jane), (&beta, "b-2", &bob)]
    {
        made.push(threads::create(&db, &new(store, order, who), Actor::Api).await.unwrap().0);
    }
    let id = |i: usize| made[i].id.clone();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // Everything, through pages of every size: each thread exactly once, newest first.
    for limit in [1, 2, 3, 6, 100] {
        let all = all_threads(&db, &ThreadFilter::default(), limit).await;
        assert_eq!(ids(&all), sorted((0..6).map(id).collect()), "limit {limit}");
        let keys: Vec<(i64, String)> = all.iter().map(|t| (t.created_at, t.id.clone())).collect();
        assert!(keys.windows(2).all(|w| w[0] > w[1]), "limit {limit}: {keys:?}");
    }
    let by = |f: ThreadFilter| {
        let db = &db;
        async move { ids(&all_threads(db, &f, 2).await) }
    };
    assert_eq!(
        by(ThreadFilter { store: Some(acme.clone()), ..Default::default() }).await,
        sorted(vec![id(0), id(1), id(2), id(3)])
    );
    assert_eq!(
        by(ThreadFilter { order: Some("o-1".into()), ..Default::default() }).await,
        sorted(vec![id(0), id(3)])
    );
    // The address is found under either key, in any case.
    let jane_again = Mailbox::parse("jane@shopper.EXAMPLE").unwrap();
    assert_eq!(
        by(ThreadFilter { shopper: Some(jane_again.clone()), ..Default::default() }).await,
        sorted(vec![id(0), id(1), id(2), id(4)])
    );
    assert_eq!(
        by(ThreadFilter { shopper: Some(jane_again), store: Some(beta.clone()), ..Default::default() }).await,
        vec![id(4)]
    );

    // States, `expired` derived from expires_at.
    threads::disable(&db, &id(1), Actor::Api).await.unwrap();
    threads::revoke(&db, &id(5), Actor::Api).await.unwrap();
    sqlx::query("UPDATE threads SET expires_at = 1 WHERE id = $1")
        .bind(id(3))
        .execute(&db.pool)
        .await
        .unwrap();
    let status = |s: ThreadStatus| ThreadFilter { status: Some(s), ..Default::default() };
    assert_eq!(by(status(ThreadStatus::Disabled)).await, vec![id(1)]);
    assert_eq!(by(status(ThreadStatus::Revoked)).await, vec![id(5)]);
    assert_eq!(by(status(ThreadStatus::Expired)).await, vec![id(3)]);
    assert_eq!(by(status(ThreadStatus::Active)).await, sorted(vec![id(0), id(2), id(4)]));
    assert!(all_threads(&db, &status(ThreadStatus::Expired), 10).await[0].status == ThreadStatus::Expired);
    threads::erase_shopper(&db, &bob, Actor::Api).await.unwrap();
    assert_eq!(by(status(ThreadStatus::Erased)).await, sorted(vec![id(3), id(5)]));

    // Stores by id, events and audit newest first by id, each with its cursor.
    let page = stores::list(&db, None, 2).await.unwrap();
    assert_eq!(page.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(), ["acme", "beta"]);
    let rest = stores::list(&db, Some("beta"), 2).await.unwrap();
    assert_eq!(rest.iter().map(|s| s.id.to_string()).collect::<Vec<_>>(), ["gamma"]);
    for i in 0..5 {
        let e = NewEvent {
            kind: if i % 2 == 0 { EventKind::Bounce } else { EventKind::UnauthorizedSender },
            store_id: Some("acme"),
            thread_id: None,
            alias: None,
            detail: serde_json::json!({"i": i}),
        };
        events::record(&db, &e).await.unwrap();
    }
    let bounces = EventFilter { kind: Some(EventKind::Bounce), store: Some("acme") };
    let first = events::list(&db, &bounces, None, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let second = events::list(&db, &bounces, Some(first[1].id), 2).await.unwrap();
    let seen: Vec<i64> = first.iter().chain(&second).map(|e| e.detail["i"].as_i64().unwrap()).collect();
    assert_eq!(seen, [4, 2, 0]);
    let all_events = events::list(&db, &EventFilter::default(), None, 100).await.unwrap();
    assert!(all_events.len() >= 5 && all_events.windows(2).all(|w| w[0].id > w[1].id));
    let log = audit::list(&db, Some(&id(1)), None, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["thread.disable", "thread.create"]
    );
    let older = audit::list(&db, Some(&id(1)), Some(log[0].id), 100).await.unwrap();
    assert_eq!(older.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_on_sqlite() {
    let (url, _dir) = sqlite_url();
    suite(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_on_postgres() {
    let Some(url) = postgres_url().await else { return };
    suite(&url).await;
}
