//! The memory bound on reception (`smtp.data_memory_bytes`), over real sockets with the
//! real store, queue and an SMTP sink as next hop: large transactions beyond the budget
//! get `452 4.3.1` (at MAIL when their SIZE does not fit, after the data when it grew past
//! the room there was) and are taken when sent again, small mail is served meanwhile,
//! nothing is lost, and every reservation is given back however the transaction ends.

mod support;

use std::time::{Duration, Instant};

use maskrelay::config::Config;
use support::smtp_client::{Reply, data_wire};
use support::*;

/// The largest message taken, and a budget of two such messages and a little more.
const MAX: usize = 200_000;
const BUDGET: usize = 450_000;

async fn start() -> (TestRelay, Sink, tempfile::TempDir, String) {
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    let mut config: Config = test_config(&url, sink.addr);
    config.smtp.max_message_bytes = MAX;
    config.smtp.data_memory_bytes = BUDGET;
    let relay = TestRelay::start(config).await;
    relay.acme().await;
    let alias = relay.thread("o1").await["shopper_alias"].as_str().unwrap().to_owned();
    (relay, sink, dir, alias)
}

const LINE: &str = "The catalogue, page after page of it, for Jane to read at leisure.\r\n";

/// A store → shopper message of about `size` bytes, its subject naming it.
fn mail(alias: &str, subject: &str, size: usize) -> Vec<u8> {
    let body = LINE.repeat(size / LINE.len() + 1);
    message("Acme Orders <orders@acme.example>", alias, subject, &body)
}

fn assert_reply(r: &Reply, code: u16, enhanced: &str, what: &str) {
    let prefix = if enhanced.is_empty() { format!("{code}") } else { format!("{code} {enhanced} ") };
    assert!(r.code == code && r.text.starts_with(&prefix), "{what}: expected {prefix:?}…, got {:?}", r.text);
}

async fn cmd(c: &mut Client, line: &str, code: u16, enhanced: &str) -> Reply {
    c.send_raw(format!("{line}\r\n").as_bytes()).await;
    let what: String = line.chars().take(60).collect();
    let r = c.read_reply().await.unwrap_or_else(|| panic!("no reply to {what}"));
    assert_reply(&r, code, enhanced, &what);
    r
}

/// MAIL (with SIZE when given) and RCPT, both accepted.
async fn open(c: &mut Client, alias: &str, size: Option<usize>) {
    let size = size.map(|s| format!(" SIZE={s}")).unwrap_or_default();
    cmd(c, &format!("MAIL FROM:<orders@acme.example>{size}"), 250, "2.1.0").await;
    cmd(c, &format!("RCPT TO:<{alias}>"), 250, "2.1.5").await;
}

/// DATA and the message; the reply to its end.
async fn data(c: &mut Client, message: &[u8]) -> Reply {
    cmd(c, "DATA", 354, "").await;
    c.send_raw(&data_wire(message)).await;
    c.read_reply().await.expect("reply to the end of data")
}

fn in_use(relay: &TestRelay) -> usize {
    relay.relay.data_memory.in_use()
}

/// Waits until the budget holds `bytes` (a session that ends with the connection gives
/// its room back when its task ends, just after the client sees the close).
async fn until_in_use(relay: &TestRelay, bytes: usize, what: &str) {
    let deadline = Instant::now() + WAIT;
    while in_use(relay) != bytes {
        assert!(
            Instant::now() < deadline,
            "{what}: {} bytes still reserved, expected {bytes}",
            in_use(relay)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the queue is empty: every message that got a 250 has been handed to the
/// sink and has left the queue.
async fn settled(relay: &TestRelay) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (waiting, _) = maskrelay::queue::depth(&relay.relay.db).await.expect("queue depth");
        if waiting == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{waiting} messages still queued after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_beyond_the_budget_get_452_and_are_taken_when_sent_again() {
    let (relay, sink, _dir, alias) = start().await;
    let big: Vec<Vec<u8>> = (1..=4).map(|i| mail(&alias, &format!("big {i}"), 170_000)).collect();
    let size = data_wire(&big[0]).len();
    assert!(2 * size < BUDGET && 3 * size > BUDGET && size < MAX, "{size}");

    // Two large transactions hold the room their SIZE declares.
    let (mut a, mut b) = (Client::ready(relay.smtp()).await, Client::ready(relay.smtp()).await);
    open(&mut a, &alias, Some(size)).await;
    open(&mut b, &alias, Some(size)).await;
    assert_eq!(in_use(&relay), 2 * size);

    // A third does not fit: refused at MAIL, with nothing reserved, and the session
    // goes on (the client may try again).
    let mut c = Client::ready(relay.smtp()).await;
    let r = cmd(&mut c, &format!("MAIL FROM:<orders@acme.example> SIZE={size}"), 452, "4.3.1").await;
    assert!(r.text.contains("try again later"), "{}", r.text);
    assert_eq!(in_use(&relay), 2 * size);
    cmd(&mut c, "NOOP", 250, "2.0.0").await;

    // Small mail is still served meanwhile, with or without SIZE.
    let mut small = Client::ready(relay.smtp()).await;
    open(&mut small, &alias, None).await;
    assert_reply(&data(&mut small, &mail(&alias, "small 1", 2_000)).await, 250, "2.0.0", "small mail");
    open(&mut small, &alias, Some(3_000)).await;
    assert_reply(&data(&mut small, &mail(&alias, "small 2", 2_000)).await, 250, "2.0.0", "small mail");

    // A large one without SIZE grows its room as it arrives; past the room left it is
    // dropped, read to its end and refused, and the session stays in step.
    let mut d = Client::ready(relay.smtp()).await;
    open(&mut d, &alias, None).await;
    assert_reply(&data(&mut d, &big[3]).await, 452, "4.3.1", "large message past the room left");
    assert_eq!(in_use(&relay), 2 * size, "the dropped message's room is given back");
    cmd(&mut d, "NOOP", 250, "2.0.0").await;

    // The two holding room send their data at once: both taken.
    let (ra, rb) = tokio::join!(data(&mut a, &big[0]), data(&mut b, &big[1]));
    assert_reply(&ra, 250, "2.0.0", "first large message");
    assert_reply(&rb, 250, "2.0.0", "second large message");
    assert_eq!(in_use(&relay), 0);

    // The refused ones, sent again, are taken now.
    open(&mut c, &alias, Some(size)).await;
    assert_reply(&data(&mut c, &big[2]).await, 250, "2.0.0", "third large message, again");
    open(&mut d, &alias, None).await;
    assert_reply(&data(&mut d, &big[3]).await, 250, "2.0.0", "fourth large message, again");
    assert_eq!(in_use(&relay), 0);

    // Nothing lost, nothing twice, each delivered whole.
    let delivered = sink.wait_for(6, WAIT).await;
    let mut subjects: Vec<String> = delivered.iter().filter_map(|d| d.header("Subject")).collect();
    subjects.sort();
    assert_eq!(subjects, ["big 1", "big 2", "big 3", "big 4", "small 1", "small 2"]);
    for d in delivered.iter().filter(|d| d.header("Subject").is_some_and(|s| s.starts_with("big"))) {
        let lines = d.text().matches("page after page").count();
        assert_eq!(lines, 170_000 / LINE.len() + 1, "a large message arrived whole");
    }
    settled(&relay).await;
    assert_eq!(sink.delivered().len(), 6, "no duplicates");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_given_back_on_every_path() {
    let (relay, _sink, _dir, alias) = start().await;
    let mut c = Client::ready(relay.smtp()).await;

    // RSET, and a new EHLO, end the transaction and its reservation.
    open(&mut c, &alias, Some(100_000)).await;
    assert_eq!(in_use(&relay), 100_000);
    cmd(&mut c, "RSET", 250, "2.0.0").await;
    assert_eq!(in_use(&relay), 0, "after RSET");
    open(&mut c, &alias, Some(100_000)).await;
    cmd(&mut c, "EHLO client.test", 250, "").await;
    assert_eq!(in_use(&relay), 0, "after EHLO");

    // A SIZE over the limit is refused at MAIL with 552 and reserves nothing.
    cmd(&mut c, &format!("MAIL FROM:<orders@acme.example> SIZE={}", MAX + 1), 552, "5.3.4").await;
    assert_eq!(in_use(&relay), 0, "after 552 at MAIL");

    // Refused after the data: accepted, over the limit, a NUL, a forged From, no room.
    open(&mut c, &alias, Some(5_000)).await;
    assert_reply(&data(&mut c, &mail(&alias, "fine", 2_000)).await, 250, "2.0.0", "accepted");
    assert_eq!(in_use(&relay), 0, "after 250");
    open(&mut c, &alias, Some(1_000)).await;
    assert_reply(&data(&mut c, &mail(&alias, "huge", MAX + 10)).await, 552, "5.3.4", "over the limit");
    assert_eq!(in_use(&relay), 0, "after 552");
    open(&mut c, &alias, Some(1_000)).await;
    let nul = message("Acme Orders <orders@acme.example>", &alias, "nul", "a\0b");
    assert_reply(&data(&mut c, &nul).await, 554, "5.6.0", "NUL");
    assert_eq!(in_use(&relay), 0, "after 554 for a NUL");
    open(&mut c, &alias, Some(1_000)).await;
    let forged = message("Mallory <mallory@evil.example>", &alias, "forged", "Hello.");
    assert_reply(&data(&mut c, &forged).await, 550, "5.7.1", "forged From");
    assert_eq!(in_use(&relay), 0, "after 550 after DATA");
    let mut holder = Client::ready(relay.smtp()).await;
    open(&mut holder, &alias, Some(MAX)).await;
    open(&mut c, &alias, Some(MAX)).await;
    assert_eq!(in_use(&relay), 2 * MAX);
    let mut third = Client::ready(relay.smtp()).await;
    open(&mut third, &alias, None).await;
    assert_reply(&data(&mut third, &mail(&alias, "no room", 100_000)).await, 452, "4.3.1", "no room");
    assert_eq!(in_use(&relay), 2 * MAX, "after 452 after DATA");
    cmd(&mut holder, "QUIT", 221, "2.0.0").await;
    until_in_use(&relay, MAX, "after QUIT").await;

    // A client that leaves in the middle of the data: its room is given back.
    cmd(&mut c, "DATA", 354, "").await;
    c.send_raw(&data_wire(&mail(&alias, "cut", 150_000))[..100_000]).await;
    drop(c);
    until_in_use(&relay, 0, "after a disconnect mid-DATA").await;

    // A client that leaves with a transaction open, before DATA.
    open(&mut third, &alias, Some(MAX)).await;
    drop(third);
    until_in_use(&relay, 0, "after a disconnect before DATA").await;

    // After all of it, the whole budget is there for one maximum-size message again.
    let mut last = Client::ready(relay.smtp()).await;
    open(&mut last, &alias, Some(MAX)).await;
    assert_reply(&data(&mut last, &mail(&alias, "last", MAX - 1_000)).await, 250, "2.0.0", "last");
    assert_eq!(in_use(&relay), 0);
    relay.stop().await;
}
