//! Retention on a running relay: threads revoked, paused or expired are erased by the
//! background sweep once `threads.erase_after_days` passed (0 here: at the next sweep),
//! with their queued mail and Message-ID mappings, aliases kept as tombstones; old events
//! go after `events.retention_days`; the sweep holds a lease so one node runs it; the CLI
//! runs one sweep on demand.

mod support;

use std::time::{Duration, Instant};

use maskrelay::store::leases;
use serde_json::Value;
use support::*;

async fn status(relay: &TestRelay, id: &str) -> String {
    let (_, t) = relay.api("GET", &format!("/v1/threads/{id}"), None).await;
    t["status"].as_str().unwrap_or_default().to_owned()
}

async fn count(relay: &TestRelay, sql: &'static str, id: &str) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(&relay.relay.db.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_erases_what_is_due_and_keeps_the_aliases() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config = test_config(&url, sink.addr);
    config.threads.erase_after_days = 0;
    config.threads.retention_interval_secs = 1;
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    let revoked = relay.thread("R-1").await;
    let paused = relay.thread("R-2").await;
    let expired = relay.thread("R-3").await;
    let active = relay.thread("R-4").await;
    let id = |t: &Value| t["id"].as_str().unwrap().to_owned();

    // Mail on the thread first: a Message-ID mapping is stored for it.
    let alias = revoked["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r = c
        .send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, "Hi", "Hello"))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    sink.wait_for(1, WAIT).await;
    assert_eq!(
        count(&relay, "SELECT COUNT(*) FROM message_ids WHERE thread_id = $1", &id(&revoked)).await,
        1
    );

    relay.api("POST", &format!("/v1/threads/{}/revoke", id(&revoked)), None).await;
    let resp = relay
        .http
        .post(paused["revoke_url"].as_str().unwrap())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("intent=pause")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sqlx::query("UPDATE threads SET expires_at = 1 WHERE id = $1")
        .bind(id(&expired))
        .execute(&relay.relay.db.pool)
        .await
        .unwrap();

    let deadline = Instant::now() + WAIT;
    for t in [&revoked, &paused, &expired] {
        while status(&relay, &id(t)).await != "erased" {
            assert!(Instant::now() < deadline, "{} was not erased by the sweep", id(t));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(status(&relay, &id(&active)).await, "active", "an active thread is kept");
    for t in [&revoked, &paused, &expired] {
        let sealed = count(&relay, "SELECT COUNT(*) FROM threads WHERE id = $1 AND shopper_email IS NULL AND shopper_name IS NULL AND shopper_key IS NULL", &id(t)).await;
        assert_eq!(sealed, 1, "address, name and blind index gone");
    }
    assert_eq!(
        count(&relay, "SELECT COUNT(*) FROM message_ids WHERE thread_id = $1", &id(&revoked)).await,
        0
    );
    assert_eq!(
        count(&relay, "SELECT COUNT(*) FROM sent_messages WHERE thread_id = $1", &id(&revoked)).await,
        0
    );

    // The tombstone still refuses mail and keeps the alias from being issued again.
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
    let r = c.cmd(&format!("RCPT TO:<{alias}>"), 550).await;
    assert!(r.text.contains("5.1.1"), "{}", r.text);
    assert_eq!(
        count(
            &relay,
            "SELECT COUNT(*) FROM threads WHERE shopper_alias = $1",
            alias.split('@').next().unwrap()
        )
        .await,
        1
    );

    // What the sweep did is in the events (and webhooks) and in the audit log.
    let erased = relay.wait_for_events("thread_erased", 3).await;
    assert_eq!(erased.len(), 3);
    assert!(erased.iter().all(|e| e["detail"]["by"] == "retention"));
    // The sweep writes its audit entry once it is through; wait for it.
    let deadline = Instant::now() + WAIT;
    let (audit, total) = loop {
        let (_, audit) = relay.api("GET", "/v1/audit?target=retention", None).await;
        let sweeps = audit.as_array().unwrap().clone();
        assert!(sweeps.iter().all(|e| e["actor"] == "relay:retention" && e["action"] == "retention.sweep"));
        let total: i64 = sweeps.iter().map(|e| e["detail"]["threads_erased"].as_i64().unwrap()).sum();
        if total >= 3 || Instant::now() > deadline {
            break (audit, total);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(total, 3, "{audit}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_go_and_the_cli_sweeps_on_demand() {
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config = test_config(&url, sink.addr);
    // A sweep only by hand in this test.
    config.threads.retention_interval_secs = 3600;
    let relay = TestRelay::start(config.clone()).await;
    relay.acme().await;
    let old = relay.thread("E-1").await;
    let new = relay.thread("E-2").await;
    for t in [&old, &new] {
        relay.api("POST", &format!("/v1/threads/{}/revoke", t["id"].as_str().unwrap()), None).await;
    }
    // The first revocation happened 401 days ago, and the thread was revoked 31 days ago.
    let pool = &relay.relay.db.pool;
    let now = maskrelay::store::now();
    sqlx::query("UPDATE events SET at = $1 WHERE thread_id = $2")
        .bind(now - 401 * 86_400)
        .bind(old["id"].as_str().unwrap())
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE threads SET updated_at = $1 WHERE id = $2")
        .bind(now - 31 * 86_400)
        .bind(old["id"].as_str().unwrap())
        .execute(pool)
        .await
        .unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maskrelay"))
        .args(["retention", "run"])
        .env("MASKRELAY_DATABASE_URL", &url)
        .env("MASKRELAY_PRIVACY_KEYS", format!("[\"{}\"]", *PRIVACY_KEY))
        .current_dir(dir.path())
        .output()
        .expect("run maskrelay retention run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["threads_erased"], 1, "{report}");
    assert_eq!(report["events_deleted"], 1, "{report}");
    let (_, t) = relay.api("GET", &format!("/v1/threads/{}", old["id"].as_str().unwrap()), None).await;
    assert_eq!(t["status"], "erased");
    let (_, t) = relay.api("GET", &format!("/v1/threads/{}", new["id"].as_str().unwrap()), None).await;
    assert_eq!(t["status"], "revoked", "30 days have not passed for it");
    let (_, events) = relay.api("GET", "/v1/events?kind=thread_revoked", None).await;
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    relay.stop().await;
}

async fn lease_is_held_by_one(url: &str) {
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(url, sink.addr)).await;
    let db = &relay.relay.db;
    assert!(leases::acquire(db, "test-task", "node-a", 60).await.unwrap());
    assert!(leases::acquire(db, "test-task", "node-a", 60).await.unwrap(), "the holder renews");
    assert!(!leases::acquire(db, "test-task", "node-b", 60).await.unwrap(), "another node waits");
    leases::release(db, "test-task", "node-a").await.unwrap();
    assert!(leases::acquire(db, "test-task", "node-b", 60).await.unwrap(), "free after release");
    // A lease that ran out (its holder died) is taken over.
    assert!(leases::acquire(db, "dead", "node-a", -1).await.unwrap());
    assert!(leases::acquire(db, "dead", "node-b", 60).await.unwrap());
    // The relay's own sweep holds the retention lease.
    let deadline = Instant::now() + WAIT;
    loop {
        let holders: Vec<String> =
            sqlx::query_scalar("SELECT holder FROM task_leases WHERE name = 'retention'")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        if holders.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the relay never took the retention lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_holds_a_task_lease_on_sqlite() {
    let (url, _dir) = sqlite_url();
    lease_is_held_by_one(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_holds_a_task_lease_on_postgres() {
    let Some(url) = postgres_url().await else { return };
    lease_is_held_by_one(&url).await;
}
