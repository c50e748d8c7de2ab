//! The durable queue: mail accepted while the next hop is down survives a restart of the
//! relay, and a next hop answering 451 then 250 gets the message exactly once.

mod support;

use std::time::Duration;

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
    let deadline = std::time::Instant::now() + WAIT;
    while maskrelay::queue::depth(&relay.relay.db).await.unwrap().0 != 0 {
        assert!(std::time::Instant::now() < deadline, "queue not emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    // No second copy turns up later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sink.delivered().len(), 1);
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
    let deadline = std::time::Instant::now() + WAIT;
    while maskrelay::queue::depth(&relay.relay.db).await.unwrap().0 != 0 {
        assert!(std::time::Instant::now() < deadline, "queue not emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
