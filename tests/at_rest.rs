//! What the database holds about a shopper, read the way an intruder with a copy of it
//! would: the SQLite file, its WAL and shared-memory files, and a PostgreSQL dump are
//! searched for the shopper's address, local part, domain and name, in plain text, hex and
//! base64, while mail is queued and delivered, and again after erasure. Nothing may be
//! found: addresses and names are sealed, and lookups go through the blind index.

mod support;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::json;
use support::*;

const ADDRESS: &str = "grep.target-4417@shopper-leak.example";
const NAME: &str = "Ingrid Vandersloot";

/// Every spelling of `needle` a plain, hex or base64 copy would contain (base64 at each of
/// the three alignments, without the characters that depend on the neighbours).
fn spellings(needle: &str) -> Vec<Vec<u8>> {
    let mut out = vec![needle.as_bytes().to_vec(), needle.to_ascii_uppercase().into_bytes()];
    out.push(hex::encode(needle).into_bytes());
    for pad in 0..3 {
        let mut padded = vec![b'\0'; pad];
        padded.extend_from_slice(needle.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&padded);
        // Drop the characters that mix in padding bytes at either end.
        let start = if pad == 0 { 0 } else { (pad * 8).div_ceil(6) };
        let end = ((padded.len() * 8) / 6).saturating_sub(1);
        if end > start + 8 {
            out.push(encoded.as_bytes()[start..end].to_vec());
        }
    }
    out
}

/// The needles of the test: the address, its parts and the shopper's name.
fn needles() -> Vec<(String, Vec<u8>)> {
    let (local, domain) = ADDRESS.split_once('@').unwrap();
    let mut out = Vec::new();
    for what in [ADDRESS, local, domain, NAME, "Vandersloot"] {
        for s in spellings(what) {
            out.push((what.to_owned(), s));
        }
    }
    out
}

fn find_case_insensitive(hay: &[u8], needle: &[u8]) -> bool {
    let hay = hay.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    hay.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// Which needles occur in these bytes, named by what they spell.
fn hits(bytes: &[u8]) -> Vec<String> {
    let mut found: Vec<String> = needles()
        .into_iter()
        .filter(|(_, n)| find_case_insensitive(bytes, n))
        .map(|(what, _)| what)
        .collect();
    found.dedup();
    found
}

/// The SQLite database file and its companions, as far as they exist.
fn sqlite_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
        .filter(|p| p.exists())
        .collect()
}

fn assert_files_clean(db: &Path, when: &str, running: bool) {
    let files = sqlite_files(db);
    // While the relay runs, recent writes live in the WAL: it must be among the files read.
    // At a clean shutdown SQLite checkpoints it into the database file and removes it.
    let has_wal = files.iter().any(|f| f.to_string_lossy().ends_with("-wal"));
    assert!(has_wal || !running, "{when}: the relay runs in WAL mode, so a -wal file exists: {files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let found = hits(&bytes);
        assert!(found.is_empty(), "{when}: {} ({} bytes) contains {found:?}", f.display(), bytes.len());
    }
}

/// A plain-text dump of the PostgreSQL test database, as an operator's backup would be.
fn pg_dump(url: &str) -> Vec<u8> {
    let out = std::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg(url)
        .output()
        .expect("pg_dump runs (Debian's postgresql-client)");
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The needle search must be able to fail: a database that stores the address in the clear
/// (a table of our own in a scratch SQLite file, with its WAL) is caught in every file.
#[tokio::test]
async fn the_search_finds_a_plaintext_address() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    sqlx::raw_sql("PRAGMA journal_mode=WAL; CREATE TABLE t (a TEXT, b BLOB)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES ($1, $2)")
        .bind(NAME)
        .bind(base64::engine::general_purpose::STANDARD.encode(format!("To: {ADDRESS}")).into_bytes())
        .execute(&mut conn)
        .await
        .unwrap();
    let wal = std::fs::read(format!("{}-wal", path.display())).unwrap();
    let found = hits(&wal);
    assert!(found.contains(&NAME.to_owned()), "{found:?}");
    assert!(found.contains(&ADDRESS.to_owned()), "base64 of the address is found: {found:?}");
    assert!(hits(hex::encode(ADDRESS).as_bytes()).contains(&ADDRESS.to_owned()));
    assert!(hits(b"nothing to see").is_empty());
}

/// Mail both ways, one message held in the queue by a failing next hop whose reply quotes
/// the address, a revoke and an erase by address; the database is searched at each step.
async fn lifecycle(url: &str, sqlite_path: Option<&Path>) {
    let sink = Sink::start().await;
    let relay = TestRelay::start(test_config(url, sink.addr)).await;
    relay.acme().await;
    let (s, thread) = relay
        .api(
            "POST",
            "/v1/threads",
            Some(json!({"order": "o-at-rest", "store": "acme", "shopper": {"email": ADDRESS, "name": NAME}})),
        )
        .await;
    assert_eq!(s, 201, "{thread}");
    let shopper_alias = thread["shopper_alias"].as_str().unwrap().to_owned();
    let store_alias = thread["store_alias"].as_str().unwrap().to_owned();

    // The shopper writes; the Message-ID names the shopper's machine and address.
    let mut c = Client::ready(relay.smtp()).await;
    let first = format!(
        "From: {NAME} <{ADDRESS}>\r\nTo: {store_alias}\r\nSubject: Question from {NAME}\r\n\
         Message-ID: <x9.{ADDRESS}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n\
         Reply to {ADDRESS}, says {NAME}.\r\n"
    );
    let r = c.send(ADDRESS, &[&store_alias], first.as_bytes()).await;
    assert_eq!(r.code, 250, "{}", r.text);
    let got = sink.wait_for(1, WAIT).await;
    let relay_id = got[0].header("Message-ID").unwrap();
    // The store sees the name (SPEC: "<name> via <marketplace>"), never the address.
    let seen = hits(&got[0].data);
    assert!(seen.iter().all(|h| h.contains("Vandersloot")), "the store's copy holds {seen:?}");

    // The store answers in the thread; the shopper's server defers it, quoting the address.
    let deferral = format!("451 4.2.1 <{ADDRESS}>: mailbox busy");
    sink.script(&vec![deferral.as_str(); 500]);
    let answer = format!(
        "From: orders@acme.example\r\nTo: {shopper_alias}\r\nSubject: Re: Question\r\n\
         In-Reply-To: {relay_id}\r\nReferences: {relay_id}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain\r\n\r\nHappy to help.\r\n"
    );
    let r = c.send("orders@acme.example", &[&shopper_alias], answer.as_bytes()).await;
    assert_eq!(r.code, 250, "{}", r.text);
    let deadline = std::time::Instant::now() + WAIT;
    while sink.attempts() < 3 {
        assert!(std::time::Instant::now() < deadline, "the relay retries the deferred message");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, queue) = relay.api("GET", "/v1/queue", None).await;
    assert_eq!(queue["data"].as_array().map(Vec::len), Some(1), "one message waits: {queue}");
    assert!(queue.to_string().contains("<shopper>"), "the deferral is kept, redacted: {queue}");

    let check = |when: &str| {
        if let Some(path) = sqlite_path {
            assert_files_clean(path, when, when != "after shutdown");
        } else {
            let dump = pg_dump(url);
            assert!(dump.len() > 1000 && String::from_utf8_lossy(&dump).contains("COPY public.threads"));
            let found = hits(&dump);
            assert!(found.is_empty(), "{when}: pg_dump contains {found:?}");
        }
    };
    check("with mail queued");

    // The blind index finds the shopper by address, in any case.
    let (s, v) =
        relay.api("POST", "/v1/shoppers/revoke", Some(json!({"email": ADDRESS.to_uppercase()}))).await;
    assert_eq!((s, &v), (200, &json!({"revoked": 1})));
    check("after revoke");
    let (s, v) = relay.api("POST", "/v1/shoppers/erase", Some(json!({"email": ADDRESS}))).await;
    assert_eq!((s, &v), (200, &json!({"erased": 1})));
    let (_, t) = relay.api("GET", &format!("/v1/threads/{}", thread["id"].as_str().unwrap()), None).await;
    assert_eq!(t["status"], "erased");
    let (_, queue) = relay.api("GET", "/v1/queue", None).await;
    assert_eq!(queue, json!({"data": [], "next": null}), "the erased shopper's queued mail is gone");
    check("after erase");
    relay.stop().await;
    check("after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_and_wal_hold_no_address() {
    let (url, dir) = sqlite_url();
    lifecycle(&url, Some(&dir.path().join("relay.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dump_holds_no_address() {
    let Some(url) = postgres_url().await else { return };
    lifecycle(&url, None).await;
}
