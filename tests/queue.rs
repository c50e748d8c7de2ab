//! The durable queue: mail accepted while the next hop is down survives a restart of the
//! relay, and a next hop answering 451 then 250 gets the message exactly once.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::process::{Served, free_port};
use support::sink::Options;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_survives_a_restart() {
    let (url, _dir) = sqlite_url();
    // Reserve a port for the next hop, then close it: delivery fails with "connection refused".
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let next_hop = down.local_addr().unwrap();
    drop(down);

    let relay = TestRelay::start(test_config(&url, next_hop)).await;
    relay.acme().await;
    let thread = relay.thread("order-1").await;
    let alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    for i in 0..3 {
        let msg = message("orders@acme.example", &alias, &format!("update {i}"), "body");
        let r = c.send("orders@acme.example", &[&alias], &msg).await;
        assert_eq!(r.code, 250, "{}", r.text);
    }
    c.cmd("QUIT", 221).await;
    // Give the workers a failed attempt or two, then stop the relay with mail queued.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, m) = relay.api("GET", "/metrics", None).await;
        if m.as_str().is_some_and(|t| {
            support::metric(t, "maskrelay_deliveries_total", &["outcome=\"deferred\""]) > 0.0
        }) || std::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;

    let sink = Sink::start_on(&next_hop.to_string()).await;
    let relay = TestRelay::start(test_config(&url, next_hop)).await;
    let got = sink.wait_for(3, Duration::from_secs(30)).await;
    let mut subjects: Vec<String> = got.iter().map(|d| d.header("Subject").unwrap()).collect();
    subjects.sort();
    assert_eq!(subjects, ["update 0", "update 1", "update 2"]);
    // Delivered mail leaves the queue.
    relay.wait_queue_empty().await;
    relay.stop().await;
    assert_eq!(sink.delivered().len(), 3, "each message exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_hop_451_then_250_delivers_once() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    sink.script(&["451 4.3.0 try again later"]);
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let thread = relay.thread("order-2").await;
    let alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r = c
        .send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, "retry me", "x"))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = sink.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].header("Subject").unwrap(), "retry me");
    assert_eq!(sink.attempts(), 2, "one refused attempt, one accepted");
    // No second copy: once the queue is empty nothing is left to send it.
    relay.wait_queue_empty().await;
    assert_eq!(sink.delivered().len(), 1);
    assert_eq!(sink.attempts(), 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_is_recorded_without_the_address() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    sink.script(&["550 5.1.1 <jane.doe@shopper.example>: no such user"]);
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let thread = relay.thread("order-3").await;
    let alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r =
        c.send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, "gone", "x")).await;
    assert_eq!(r.code, 250);
    let events = relay.wait_for_events("delivery_failed", 1).await;
    let text = serde_json::Value::Array(events).to_string();
    assert!(text.contains("5.1.1"), "{text}");
    assert!(!text.contains("jane.doe"), "{text}");
    // The refused message leaves the queue; the notice to the store goes out after it.
    let notice = sink.wait_for(1, WAIT).await;
    assert_eq!(notice[0].rcpt_to, ["support@acme.example"]);
    relay.wait_queue_empty().await;
    relay.stop().await;
}

/// SPEC: "The relay cannot store it safely now: 451 4.3.0 — never a 250 for mail that is
/// not stored." The database goes away between RCPT and the end of DATA, and for new RCPTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_unavailable_gets_451_never_250() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let alias = relay.thread("order-db").await["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 250).await;
    // The database becomes unreachable for the relay.
    relay.relay.db.pool.close().await;
    let r = c.data(&message("orders@acme.example", &alias, "not stored", "x")).await;
    assert_eq!(r.code, 451, "{}", r.text);
    assert!(r.text.contains("4.3.0"), "{}", r.text);
    c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
    let r = c.cmd(&format!("RCPT TO:<{alias}>"), 451).await;
    assert!(r.text.contains("4.3.0"), "{}", r.text);
    let health = relay.http.get(format!("{}/healthz", relay.base)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.attempts(), 0);
    relay.stop().await;
}

/// The queue id from `250 2.0.0 Message queued as ID`.
fn queue_id(reply_text: &str) -> String {
    reply_text.rsplit(' ').next().unwrap().trim().to_owned()
}

async fn send_one(relay: &TestRelay, alias: &str, subject: &str) -> String {
    let mut c = Client::ready(relay.smtp()).await;
    let r =
        c.send("orders@acme.example", &[alias], &message("orders@acme.example", alias, subject, "x")).await;
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("QUIT", 221).await;
    queue_id(&r.text)
}

/// SPEC, Egress: "no message is delivered twice by relays that stay alive, however slow a
/// next hop is". The next hop holds the reply to the first message for longer than
/// `lease_secs` while a second relay on the same database looks for work: the first relay
/// keeps renewing its lease, so the second never takes the message.
async fn stalled_next_hop_with_two_relays(url: &str) {
    let lease_secs = 3;
    let stall = Duration::from_secs(lease_secs * 2 + 1);
    let sink =
        Sink::start_with("127.0.0.1:0", Options { stall_first: (1, stall), ..Options::default() }).await;
    let config = |url: &str| {
        let mut c = test_config(url, sink.addr);
        c.egress.lease_secs = lease_secs;
        c
    };
    let a = TestRelay::start(config(url)).await;
    let b = TestRelay::start(config(url)).await;
    a.acme().await;
    let alias = a.thread("slow-1").await["shopper_alias"].as_str().unwrap().to_owned();
    send_one(&a, &alias, "stalled once").await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").unwrap(), "stalled once");
    // The barrier: the queue is empty (no worker can take the message any more), and the
    // sink has answered every message it received (an attempt that lost its lease may
    // still be running after the queue emptied: it is counted once the sink answers it).
    a.wait_queue_empty().await;
    b.wait_queue_empty().await;
    sink.wait_answered().await;
    assert_eq!(sink.data_ends(), 1, "the message was sent once");
    assert_eq!(sink.delivered().len(), 1, "delivered exactly once");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_next_hop_two_relays_one_sqlite_file_deliver_once() {
    let (url, _dir) = sqlite_url();
    stalled_next_hop_with_two_relays(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_next_hop_two_relays_one_postgres_deliver_once() {
    let Some(url) = postgres_url().await else { return };
    stalled_next_hop_with_two_relays(&url).await;
}

/// A COMMIT that takes effect while the connection carrying it breaks (the answer never
/// comes back): the relay cannot tell from the error whether the mail is stored. It reads
/// its batch token back, finds the mail stored, and answers 250: not a 451 that makes the
/// client send the message again, nor a retry of the write that queues it twice. Delivered
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_whose_answer_is_lost_is_stored_once_postgres() {
    let Some(url) = postgres_url().await else { return };
    let proxy = support::cut::CutProxy::start(support::cut::host_port(&url)).await;
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&proxy.url(&url), sink.addr)).await;
    relay.acme().await;
    let alias = relay.thread("lost-commit").await["shopper_alias"].as_str().unwrap().to_owned();
    // The first transaction that queues a message loses its COMMIT's answer.
    proxy.arm(b"INSERT INTO queue (");
    let id = send_one(&relay, &alias, "commit answer lost").await;
    assert_eq!(proxy.cuts(), 1, "the enqueue's COMMIT was cut");
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").unwrap(), "commit answer lost");
    relay.wait_queue_empty().await;
    sink.wait_answered().await;
    assert_eq!(sink.data_ends(), 1, "sent once");
    assert_eq!(sink.delivered().len(), 1, "queued once, delivered once");
    let (status, body) = relay.api("GET", &format!("/v1/queue/{id}"), None).await;
    assert_eq!(status, 404, "delivered and gone from the queue: {body}");
    relay.stop().await;
}

/// `queue.max_messages`: a full queue answers 451 4.3.1 at MAIL instead of growing; once
/// deliveries make room, mail is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_451_until_it_drains() {
    let (url, _dir) = sqlite_url();
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let next_hop = down.local_addr().unwrap();
    drop(down);
    let mut config = test_config(&url, next_hop);
    config.queue.max_messages = 2;
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    let alias = relay.thread("full-1").await["shopper_alias"].as_str().unwrap().to_owned();
    send_one(&relay, &alias, "one").await;
    send_one(&relay, &alias, "two").await;
    let mut c = Client::ready(relay.smtp()).await;
    let r = c.cmd("MAIL FROM:<orders@acme.example>", 451).await;
    assert!(r.text.contains("4.3.1") && r.text.contains("queue is full"), "{}", r.text);
    // The session stays usable: the client may try again later on it.
    c.cmd("NOOP", 250).await;

    let sink = Sink::start_on(&next_hop.to_string()).await;
    sink.wait_for(2, WAIT).await;
    relay.wait_queue_empty().await;
    // The count is refreshed at most once a second: poll until MAIL is taken again.
    let deadline = std::time::Instant::now() + WAIT;
    let mut c = loop {
        let mut c = Client::ready(relay.smtp()).await;
        c.send_raw(b"MAIL FROM:<orders@acme.example>\r\n").await;
        let r = c.read_reply().await.expect("a reply to MAIL");
        if r.code == 250 {
            break c;
        }
        assert_eq!(r.code, 451, "{}", r.text);
        assert!(std::time::Instant::now() < deadline, "still full after the queue drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.cmd(&format!("RCPT TO:<{alias}>"), 250).await;
    let r = c.data(&message("orders@acme.example", &alias, "three", "x")).await;
    assert_eq!(r.code, 250, "{}", r.text);
    sink.wait_for(3, WAIT).await;
    relay.stop().await;
}

/// The queue tools (issue 10), in the API: list (paged, RFC 3339), show, hold, release,
/// delete; each change audited; 404 as JSON for an id not queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_tools_show_hold_release_delete() {
    let (url, _dir) = sqlite_url();
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let next_hop = down.local_addr().unwrap();
    drop(down);
    let relay = TestRelay::start(test_config(&url, next_hop)).await;
    relay.acme().await;
    let alias = relay.thread("tools-1").await["shopper_alias"].as_str().unwrap().to_owned();
    let first = send_one(&relay, &alias, "first").await;
    let second = send_one(&relay, &alias, "second").await;

    let (s, page) = relay.api("GET", "/v1/queue?limit=1", None).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    let created = page["data"][0]["created_at"].as_str().expect("RFC 3339 string");
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");
    let next = page["next"].as_str().expect("a second page");
    let (_, rest) = relay.api("GET", &format!("/v1/queue?limit=1&after={next}"), None).await;
    let mut ids: Vec<&str> = [&page, &rest].iter().map(|p| p["data"][0]["id"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = [first.as_str(), second.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(rest["next"], Value::Null);
    let (s, _) = relay.api("GET", "/v1/queue?after=bm90LWEta2V5", None).await;
    assert_eq!(s, 422, "a foreign cursor");

    let (s, shown) = relay.api("GET", &format!("/v1/queue/{first}"), None).await;
    assert_eq!(s, 200, "{shown}");
    assert_eq!((shown["id"].as_str(), shown["held"].as_bool()), (Some(first.as_str()), Some(false)));
    assert!(!shown.to_string().contains("jane.doe"), "{shown}");
    let (s, held) = relay.api("POST", &format!("/v1/queue/{first}/hold"), None).await;
    assert_eq!((s, held["held"].as_bool()), (200, Some(true)), "{held}");
    let (s, released) = relay.api("POST", &format!("/v1/queue/{first}/release"), None).await;
    assert_eq!((s, released["held"].as_bool()), (200, Some(false)), "{released}");
    let (s, deleted) = relay.api("DELETE", &format!("/v1/queue/{second}"), None).await;
    assert_eq!((s, &deleted), (200, &json!({"deleted": second})));
    for (method, path) in [
        ("GET", format!("/v1/queue/{second}")),
        ("DELETE", format!("/v1/queue/{second}")),
        ("POST", format!("/v1/queue/{second}/hold")),
        ("POST", "/v1/queue/nope/release".to_owned()),
    ] {
        let (s, e) = relay.api(method, &path, None).await;
        assert_eq!(s, 404, "{method} {path}: {e}");
        assert_eq!(e["error"]["code"], "not_found", "{e}");
    }
    let (_, audit) = relay.api("GET", "/v1/audit", None).await;
    let actions: Vec<(&str, &str)> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("queue."))
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    for want in
        [("queue.hold", first.as_str()), ("queue.release", first.as_str()), ("queue.delete", second.as_str())]
    {
        assert!(actions.contains(&want), "{want:?} not in {actions:?}");
    }
    // The deleted message is never delivered; the released one is.
    let sink = Sink::start_on(&next_hop.to_string()).await;
    let got = sink.wait_for(1, WAIT).await;
    relay.wait_queue_empty().await;
    assert_eq!(got[0].header("Subject").unwrap(), "first");
    assert_eq!(sink.delivered().len(), 1);
    relay.stop().await;
}

// --- The relay binary under kill -9 -----------------------------------------------------

/// `maskrelay serve` in `dir`, as an operator runs it, against `next_hop`.
fn serve_env(
    dir: &std::path::Path,
    smtp: u16,
    api: u16,
    next_hop: std::net::SocketAddr,
) -> Vec<(&'static str, String)> {
    let dkim = dir.join("dkim.pem");
    if !dkim.exists() {
        std::fs::write(&dkim, DKIM_PEM.as_slice()).unwrap();
    }
    vec![
        ("MASKRELAY_SMTP_LISTEN", format!("127.0.0.1:{smtp}")),
        ("MASKRELAY_API_LISTEN", format!("127.0.0.1:{api}")),
        ("MASKRELAY_API_TOKEN", TOKEN.into()),
        ("MASKRELAY_AUTH_MODE", "envelope".into()),
        ("MASKRELAY_EGRESS_MODE", "smarthost".into()),
        ("MASKRELAY_EGRESS_SMARTHOST", next_hop.to_string()),
        ("MASKRELAY_EGRESS_RETRY_BASE_SECS", "1".into()),
        ("MASKRELAY_EGRESS_RETRY_MAX_SECS", "2".into()),
        // Far longer than any test: mail in flight at a kill can only come back by the
        // restarted relay taking back its own leases.
        ("MASKRELAY_EGRESS_LEASE_SECS", "3600".into()),
        ("MASKRELAY_DATABASE_URL", format!("sqlite://{}", dir.join("relay.db").display())),
        ("MASKRELAY_DKIM_PRIVATE_KEY_PATH", dkim.display().to_string()),
        ("MASKRELAY_RELAY_DOMAIN", DOMAIN.into()),
    ]
}

async fn api(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    support::process::api(TOKEN, port, method, path, body).await
}

/// Store acme and one thread; its shopper alias.
async fn alias_of_new_thread(port: u16) -> String {
    let t = support::process::acme_thread(TOKEN, port, "k1").await;
    t["shopper_alias"].as_str().unwrap().to_owned()
}

/// Waits until `GET /v1/queue` is empty: nothing queued, nothing in flight.
async fn wait_served_queue_empty(port: u16) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (s, q) = api(port, "GET", "/v1/queue", None).await;
        if s == 200 && q["data"].as_array().is_some_and(Vec::is_empty) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "queue not emptied: {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SPEC, Egress: "A restarted relay resumes its own in-flight mail within seconds, not
/// after the lease time." The relay is killed (SIGKILL) while the next hop holds the reply
/// to its message; restarted with the same configuration (so the same derived node id), it
/// takes its lease back at start and delivers, with `lease_secs` at an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_is_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start_with(
        "127.0.0.1:0",
        Options { stall_first: (1, Duration::from_secs(600)), ..Options::default() },
    )
    .await;
    let (smtp, port) = (free_port(), free_port());
    let env = serve_env(dir.path(), smtp, port, sink.addr);
    let mut relay = Served::start(dir.path(), &env, &[]);
    relay.wait_healthy(port).await;
    let alias = alias_of_new_thread(port).await;
    let mut c = Client::ready(format!("127.0.0.1:{smtp}").parse().unwrap()).await;
    let r = c
        .send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, "in flight", "x"))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    let id = queue_id(&r.text);
    // Mid-delivery: the message is out, the next hop has not answered.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, q) = api(port, "GET", &format!("/v1/queue/{id}"), None).await;
        if q["in_flight"].is_string() && sink.data_ends() == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never in flight: {q}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.signal(libc::SIGKILL);
    relay.wait_exit().await;

    let mut relay = Served::start(dir.path(), &env, &[]);
    relay.wait_healthy(port).await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").unwrap(), "in flight");
    wait_served_queue_empty(port).await;
    assert_eq!(sink.delivered().len(), 1);
    let log = relay.stop().await;
    assert!(log.contains("took back the messages in flight"), "{log}");
}

/// Issue 9, item 8: the relay binary SIGKILLed several times under load. Every message
/// that got a 250 reaches the sink; a message reaches it twice only if it was in flight at
/// a kill, so at most one per worker per kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A next hop that takes a moment per message, so deliveries are in flight at the kills.
    let sink = Sink::start_with(
        "127.0.0.1:0",
        Options { data_reply_delay: Duration::from_millis(30), ..Options::default() },
    )
    .await;
    let (smtp, port) = (free_port(), free_port());
    let env = serve_env(dir.path(), smtp, port, sink.addr);
    let smtp_addr: std::net::SocketAddr = format!("127.0.0.1:{smtp}").parse().unwrap();
    let (kills, per_round, workers) = (4, 25, 4);
    let mut env = env;
    env.push(("MASKRELAY_EGRESS_WORKERS", workers.to_string()));
    let mut accepted: Vec<String> = Vec::new();
    let mut alias = None;
    for round in 0..=kills {
        let mut relay = Served::start(dir.path(), &env, &[]);
        relay.wait_healthy(port).await;
        let to = match &alias {
            Some(a) => a,
            None => alias.insert(alias_of_new_thread(port).await),
        }
        .clone();
        let mut c = Client::ready(smtp_addr).await;
        for i in 0..per_round {
            let subject = format!("r{round}-m{i}");
            let r = c
                .send("orders@acme.example", &[&to], &message("orders@acme.example", &to, &subject, "x"))
                .await;
            assert_eq!(r.code, 250, "{}", r.text);
            accepted.push(subject);
        }
        if round < kills {
            // Mail is queued and being delivered: kill it.
            relay.signal(libc::SIGKILL);
            relay.wait_exit().await;
        } else {
            wait_served_queue_empty(port).await;
            relay.stop().await;
        }
    }
    // Messages the sink held when their relay was killed are counted once it answers them.
    sink.wait_answered().await;
    let delivered: Vec<String> = sink.delivered().iter().map(|d| d.header("Subject").unwrap()).collect();
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for s in &delivered {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    let lost: Vec<&String> = accepted.iter().filter(|s| !counts.contains_key(s.as_str())).collect();
    assert!(lost.is_empty(), "accepted with 250, never delivered: {lost:?}");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "{} accepted, {} delivered, {duplicates} duplicates over {kills} kills",
        accepted.len(),
        delivered.len()
    );
    assert!(
        duplicates <= kills * workers,
        "{duplicates} duplicates: more than the {workers} workers could have had in flight at {kills} kills"
    );
}
