//! Bounces: a permanent refusal or a give-up produces a notice to the sender written by
//! the relay, naming no real address; a DSN returned to a VERP address is tied back to
//! its thread and recorded; mail refused at RCPT causes no bounce at all.

mod support;

use std::time::Duration;

use support::*;

const SHOPPER: &str = "jane.doe@shopper.example";

fn assert_notice_is_clean(notice: &sink::Delivered) {
    let text = notice.text().to_lowercase();
    assert_eq!(notice.mail_from, "", "notices go out with the null sender");
    assert!(!text.contains(SHOPPER), "{text}");
    assert!(!text.contains("shopper.example"), "{text}");
    assert!(!text.contains("reporting-mta"), "the remote DSN is not forwarded: {text}");
    assert_eq!(notice.header("Auto-Submitted").unwrap(), "auto-replied");
}

async fn send_one(relay: &TestRelay) -> String {
    let alias = relay.thread("order-5").await["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    let r = c
        .send("orders@acme.example", &[&alias], &message("orders@acme.example", &alias, "parcel", "x"))
        .await;
    assert_eq!(r.code, 250, "{}", r.text);
    alias
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusal_sends_the_store_a_clean_notice() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    sink.script(&["550 5.1.1 <jane.doe@shopper.example>: mailbox unavailable"]);
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let alias = send_one(&relay).await;
    let got = sink.wait_for(1, WAIT).await;
    let notice = &got[0];
    assert_eq!(notice.rcpt_to, ["support@acme.example"]);
    assert_notice_is_clean(notice);
    let text = notice.text();
    assert!(text.contains(&alias), "the notice names the alias the store knows: {text}");
    assert!(text.contains("5.1.1"), "{text}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_up_after_max_queue_days_sends_a_notice() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    sink.script(&["451 4.2.0 mailbox busy", "451 4.2.0 mailbox busy", "451 4.2.0 mailbox busy"]);
    let mut config = test_config(&url, sink.addr);
    // Three seconds in the queue, retries after 1 s and 2 s: tried, retried, given up.
    config.egress.max_queue_days = 3.0 / 86_400.0;
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    send_one(&relay).await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, ["support@acme.example"]);
    assert!(got[0].text().contains("in the time allowed"), "{}", got[0].text());
    assert_notice_is_clean(&got[0]);
    // The event is recorded right after the notice is queued: wait for it.
    let events = relay.wait_for_events("delivery_failed", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let attempts = events[0]["detail"]["attempts"].as_i64().unwrap();
    assert!(attempts >= 2, "retried before giving up: {attempts} attempts");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dsn_to_the_verp_address_is_recorded_and_noticed() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    send_one(&relay).await;
    let delivered = sink.wait_for(1, WAIT).await;
    let verp = delivered[0].mail_from.clone();
    assert!(verp.starts_with("bounce+"), "{verp}");

    // The shopper's provider accepted it, then bounced it later.
    let dsn = format!(
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.shopper.example>\r\nTo: {verp}\r\nSubject: Undelivered Mail\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\n<{SHOPPER}>: mailbox full for good\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.shopper.example\r\n\r\n\
         Final-Recipient: rfc822; {SHOPPER}\r\nAction: failed\r\nStatus: 5.2.2\r\n\r\n--b--\r\n"
    );
    let mut c = Client::ready(relay.smtp()).await;
    let r = c.send("", &[&verp], dsn.as_bytes()).await;
    assert_eq!(r.code, 250, "{}", r.text);
    c.cmd("MAIL FROM:<>", 250).await;
    let r = c.cmd("RCPT TO:<bounce+doesnotexist@relay.test>", 550).await;
    assert!(r.text.contains("5.1.1"), "{}", r.text);

    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got[1].rcpt_to, ["support@acme.example"]);
    assert_notice_is_clean(&got[1]);
    assert!(got[1].text().contains("5.2.2"));
    let (_, events) = relay.api("GET", "/v1/events?kind=bounce", None).await;
    let events = events["data"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["detail"]["status"], "5.2.2");
    assert_eq!(events[0]["detail"]["permanent"], true);
    assert!(!serde_json::Value::Array(events).to_string().contains("jane"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_refused_at_rcpt_causes_no_bounce() {
    let (url, _dir) = sqlite_url();
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(&url, sink.addr)).await;
    relay.acme().await;
    let alias = relay.thread("order-6").await["shopper_alias"].as_str().unwrap().to_owned();
    let mut c = Client::ready(relay.smtp()).await;
    c.cmd("MAIL FROM:<victim@forged.example>", 250).await;
    c.cmd(&format!("RCPT TO:<{alias}>"), 550).await;
    c.cmd("RCPT TO:<nobody@relay.test>", 550).await;
    c.cmd("QUIT", 221).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.attempts(), 0, "no backscatter to the (possibly forged) sender");
    relay.stop().await;
}
