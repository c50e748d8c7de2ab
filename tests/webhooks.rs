//! Webhooks against a real HTTP receiver on loopback: events arrive signed, a receiver
//! that fails is retried until it recovers, an event written while the receiver was down
//! survives a restart of the relay, and two relays on one PostgreSQL never both send one.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use maskrelay::webhook::signature;
use serde_json::{Value, json};
use support::*;

/// One POST as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    body: Vec<u8>,
    /// What the receiver answered.
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Shared {
    got: Mutex<Vec<Received>>,
    /// Requests still to refuse with 500.
    fail_next: AtomicUsize,
}

/// A webhook receiver: an HTTP server on a loopback port that records every POST and
/// answers 500 to the first `fail_next` of them, 204 after.
struct Receiver {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn hook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let refuse =
        shared.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let status = if refuse { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT };
    let signature =
        headers.get("maskrelay-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    shared.got.lock().unwrap().push(Received { signature, body: body.to_vec(), status: status.as_u16() });
    status
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared, task }
    }

    fn fail_next(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// Waits until `n` POSTs were accepted; returns every POST so far.
    async fn wait_accepted(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.got();
            if got.iter().filter(|r| r.status < 300).count() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "receiver accepted fewer than {n}: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(url: &str, sink: std::net::SocketAddr) -> maskrelay::config::Config {
    let mut c = test_config(url, sink);
    c.webhooks.retry_base_secs = 1;
    c.webhooks.retry_max_secs = 1;
    c
}

async fn register(relay: &TestRelay, url: &str, events: &[&str]) -> (String, String) {
    let (s, w) = relay.api("POST", "/v1/webhooks", Some(json!({"url": url, "events": events}))).await;
    assert_eq!(s, 201, "{w}");
    let secret = w["secret"].as_str().expect("the secret, shown once").to_owned();
    assert!(secret.len() >= 32, "{secret}");
    (w["id"].as_str().unwrap().to_owned(), secret)
}

/// Checks the signature as a receiver would, with a five-minute tolerance.
fn signed(r: &Received, secret: &str) -> bool {
    signature::verify(secret, &r.signature, &r.body, maskrelay::store::now(), 300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_and_a_failing_receiver_gets_them_once_it_recovers() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let receiver = Receiver::start().await;
    let relay = TestRelay::start(config(&url, sink.addr)).await;
    relay.acme().await;
    let thread = relay.thread("W-1").await;

    // Bad registrations are JSON errors.
    for bad in [
        json!({"url": "ftp://x.example/", "events": ["leak"]}),
        json!({"url": "http://user:pw@x.example/", "events": ["leak"]}),
        json!({"url": receiver.url, "events": []}),
        json!({"url": receiver.url, "events": ["nope"]}),
    ] {
        let (s, e) = relay.api("POST", "/v1/webhooks", Some(bad.clone())).await;
        assert_eq!((s, e["error"]["code"].as_str()), (422, Some("invalid_request")), "{bad} -> {e}");
    }
    let (hook_id, secret) =
        register(&relay, &receiver.url, &["leak", "incident", "unauthorized_sender"]).await;
    let (_, listed) = relay.api("GET", "/v1/webhooks", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&secret), "the secret is shown once only: {listed}");

    // The receiver is down for its first two requests.
    receiver.fail_next(2);
    let alias = thread["shopper_alias"].as_str().unwrap();
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<promo@leaker.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 550).await;

    let got = receiver.wait_accepted(3).await;
    assert!(got.iter().filter(|r| r.status == 500).count() == 2, "{got:?}");
    let accepted: Vec<&Received> = got.iter().filter(|r| r.status < 300).collect();
    assert_eq!(accepted.len(), 3, "each event once after it was accepted: {got:?}");
    let mut types: Vec<String> =
        accepted.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    types.sort();
    assert_eq!(types, ["incident", "leak", "unauthorized_sender"]);
    for r in &got {
        assert!(signed(r, &secret), "signature {:?} does not verify", r.signature);
        assert!(!signed(r, "whsec_wrong"), "a wrong secret must not verify");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("jane.doe") && !body.contains("shopper.example") && !body.contains("Jane"),
            "{body}"
        );
        assert!(!body.contains(alias), "no alias either: {body}");
        let v = r.json();
        assert!(v["id"].as_str().unwrap().starts_with("evt_"));
        assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let leak = accepted.iter().map(|r| r.json()).find(|v| v["type"] == "leak").unwrap();
    assert_eq!(leak["data"]["store"], "acme");
    assert_eq!(leak["data"]["sending_domain"], "leaker.example");
    assert!(leak["data"]["incident"].as_str().unwrap().starts_with("inc_"));
    // A retried event keeps its id, so the receiver can drop a repeat.
    let failed_ids: Vec<Value> =
        got.iter().filter(|r| r.status == 500).map(|r| r.json()["id"].clone()).collect();
    for id in failed_ids {
        assert!(accepted.iter().any(|r| r.json()["id"] == id), "a refused event was never delivered");
    }
    let (_, hook) = relay.api("GET", &format!("/v1/webhooks/{hook_id}"), None).await;
    assert_eq!(hook["pending"], 0, "{hook}");
    assert!(hook["last_error"].as_str().unwrap().contains("HTTP 500"), "{hook}");
    assert!(hook["last_success_at"].is_string(), "{hook}");

    // Unsubscribed types are not sent; a deleted webhook gets nothing more.
    relay.api("POST", &format!("/v1/threads/{}/revoke", thread["id"].as_str().unwrap()), None).await;
    let (s, _) = relay.api("DELETE", &format!("/v1/webhooks/{hook_id}"), None).await;
    assert_eq!(s, 204);
    let (s, e) = relay.api("GET", &format!("/v1/webhooks/{hook_id}"), None).await;
    assert_eq!((s, e["error"]["code"].as_str()), (404, Some("not_found")));
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<promo@leaker.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 550).await;
    relay.wait_for_events("unauthorized_sender", 2).await;
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox")
        .fetch_one(&relay.relay.db.pool)
        .await
        .unwrap();
    assert_eq!(pending, 0);
    assert_eq!(receiver.got().len(), got.len(), "nothing after the delete");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_waiting_for_a_down_receiver_survives_a_restart() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let receiver = Receiver::start().await;
    let relay = TestRelay::start(config(&url, sink.addr)).await;
    relay.acme().await;
    let thread = relay.thread("W-2").await;
    let (_, secret) = register(&relay, &receiver.url, &["thread_revoked"]).await;

    receiver.fail_next(usize::MAX);
    let id = thread["id"].as_str().unwrap().to_owned();
    relay.api("POST", &format!("/v1/threads/{id}/revoke"), None).await;
    let deadline = Instant::now() + WAIT;
    while receiver.got().is_empty() {
        assert!(Instant::now() < deadline, "no attempt at all");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;
    let refused = receiver.got().len();
    assert!(receiver.got().iter().all(|r| r.status == 500));

    // The receiver recovers while the relay is down; the relay comes back on the same file.
    receiver.fail_next(0);
    let relay = TestRelay::start(config(&url, sink.addr)).await;
    let got = receiver.wait_accepted(1).await;
    assert!(got.len() > refused);
    let delivered = got.iter().find(|r| r.status < 300).unwrap();
    assert!(signed(delivered, &secret));
    let v = delivered.json();
    assert_eq!(v["type"], "thread_revoked");
    assert_eq!(v["data"]["thread"], id.as_str());
    assert_eq!(v["data"]["detail"]["by"], "operator");
    assert_eq!(v["id"], got[0].json()["id"], "the same event, not a new one");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_postgres_send_each_event_once() {
    let Some(url) = postgres_url().await else { return };
    let sink = Sink::start().await;
    let receiver = Receiver::start().await;
    let a = TestRelay::start(config(&url, sink.addr)).await;
    let b = TestRelay::start(config(&url, sink.addr)).await;
    a.acme().await;
    register(&a, &receiver.url, &["thread_revoked"]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let t = a.thread(&format!("PG-{i}")).await;
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    // Events written through both relays; both senders compete for the rows.
    for (i, id) in ids.iter().enumerate() {
        let relay = if i % 2 == 0 { &a } else { &b };
        relay.api("POST", &format!("/v1/threads/{id}/revoke"), None).await;
    }
    let got = receiver.wait_accepted(20).await;
    let mut event_ids: Vec<String> =
        got.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    event_ids.sort();
    let before = event_ids.len();
    event_ids.dedup();
    assert_eq!(before, event_ids.len(), "an event was POSTed twice");
    assert_eq!(event_ids.len(), 20);
    a.stop().await;
    b.stop().await;
}
