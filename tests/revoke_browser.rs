//! The shopper's revoke page in a real browser: Debian's headless Chromium, driven by
//! playwright-core through `tests/browser/revoke.mjs` with JavaScript switched off. The
//! script checks the page as a shopper and a screen reader meet it; this test checks what
//! the relay did after each step. Without node, /usr/bin/chromium or the script's
//! node_modules (`.ci/install-browser` installs them) the tests say SKIPPED and pass, unless
//! MRTEST_REQUIRE_BROWSER is set (CI sets it).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use serde_json::Value;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

const CHROMIUM: &str = "/usr/bin/chromium";
const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// Why the browser cannot run on this machine, if it cannot.
fn missing_browser() -> Option<String> {
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Some(format!("`node --version` failed ({})", out.status)),
        Err(e) => return Some(format!("node is not on PATH ({e})")),
    }
    if !Path::new(CHROMIUM).is_file() {
        return Some(format!("{CHROMIUM} is not installed"));
    }
    let playwright = Path::new(BROWSER_DIR).join("node_modules/playwright-core");
    if !playwright.is_dir() {
        return Some(format!("{} is missing (npm ci in tests/browser)", playwright.display()));
    }
    None
}

/// True when the browser can run. Otherwise says so on stderr and returns false, or panics
/// when MRTEST_REQUIRE_BROWSER is set.
fn browser_available(test: &str) -> bool {
    let Some(why) = missing_browser() else { return true };
    if std::env::var("MRTEST_REQUIRE_BROWSER").is_ok() {
        panic!("MRTEST_REQUIRE_BROWSER is set but {test} cannot run: {why}; run .ci/install-browser");
    }
    // Straight to the stderr handle: libtest captures eprintln! of passing tests, and a
    // skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: {why}; run .ci/install-browser to install node's playwright-core and Chromium"
    );
    false
}

/// `tests/browser/revoke.mjs` with one revoke link open in Chromium.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    log: JoinHandle<String>,
}

impl Browser {
    /// Opens `url` (a GET) and has the script check that the page names `store` and `order`.
    fn open(url: &str, store: &str, order: &str, screenshot: Option<&Path>) -> Self {
        let mut cmd = Command::new("node");
        cmd.arg("revoke.mjs").arg(url).args(["--store", store, "--order", order]);
        if let Some(path) = screenshot {
            cmd.arg("--screenshot").arg(path);
        }
        // kill_on_drop: a failed assertion must not leave node behind; Chromium ends when
        // node's end closes its DevTools pipe.
        let mut child = cmd
            .current_dir(BROWSER_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node tests/browser/revoke.mjs");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut stderr = child.stderr.take().expect("piped stderr");
        let log = tokio::spawn(async move {
            let mut log = String::new();
            let _ = stderr.read_to_string(&mut log).await;
            log
        });
        Self { child, stdin, stdout, log }
    }

    /// Waits for the script's next line and panics, with its log, unless it is `want`.
    async fn expect(&mut self, want: &str) {
        let line = self.stdout.next_line().await.expect("read the browser script's stdout");
        if line.as_deref() != Some(want) {
            let (status, log) = self.end().await;
            panic!(
                "the browser script said {line:?}, expected {want:?}, and ended with {status}; its log:\n{log}"
            );
        }
    }

    /// Tells the script what to do next: `CLICK` or `CLOSE`.
    async fn tell(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(format!("{command}\n").as_bytes()).await.expect("write to the browser script");
        stdin.flush().await.expect("flush to the browser script");
    }

    /// Closes its input, waits for it to exit and returns how it ended and its log.
    async fn end(&mut self) -> (ExitStatus, String) {
        self.stdin = None;
        let status = self.child.wait().await.expect("wait for the browser script");
        let log = (&mut self.log).await.unwrap_or_default();
        (status, log)
    }

    /// Waits for a clean exit; panics with its log otherwise.
    async fn finish(mut self) {
        let (status, log) = self.end().await;
        assert!(status.success(), "the browser script ended with {status}; its log:\n{log}");
        // Shown with --nocapture: every check the browser made.
        eprintln!("{log}");
    }
}

async fn relay() -> (TestRelay, Sink, tempfile::TempDir) {
    let (url, dir) = sqlite_url();
    let sink = Sink::start().await;
    (TestRelay::start(test_config(&url, sink.addr)).await, sink, dir)
}

async fn status(relay: &TestRelay, id: &str) -> Value {
    let (s, t) = relay.api("GET", &format!("/v1/threads/{id}"), None).await;
    assert_eq!(s, 200, "{t}");
    t["status"].clone()
}

/// `(actor, action)` of every audit entry about `target`.
async fn audit_of(relay: &TestRelay, target: &str) -> Vec<(String, String)> {
    let (s, log) = relay.api("GET", &format!("/v1/audit?target={target}"), None).await;
    assert_eq!(s, 200, "{log}");
    log.as_array()
        .expect("audit is a list")
        .iter()
        .map(|e| {
            (e["actor"].as_str().unwrap_or("").to_owned(), e["action"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

/// Where a person finds what the browser saw: target/tmp/revoke-page.png (the question) and
/// revoke-page-revoked.png (the answer).
fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("revoke-page.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopper_confirms_in_a_browser_without_javascript() {
    if !browser_available("shopper_confirms_in_a_browser_without_javascript") {
        return;
    }
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let thread = relay.thread("order-42").await;
    let id = thread["id"].as_str().expect("thread id").to_owned();
    let url = thread["revoke_url"].as_str().expect("revoke_url").to_owned();

    let mut browser = Browser::open(&url, "Acme Shop", "order-42", Some(&screenshot_path()));
    browser.expect("GET_DONE").await;
    assert_eq!(status(&relay, &id).await, "active", "the browser's GET must not revoke");
    assert_eq!(audit_of(&relay, &id).await, [("operator:api".to_owned(), "thread.create".to_owned())]);

    browser.tell("CLICK").await;
    browser.expect("REVOKED").await;
    browser.finish().await;
    assert_eq!(status(&relay, &id).await, "revoked");
    let audit = audit_of(&relay, &id).await;
    assert!(
        audit.contains(&("shopper:revoke_page".to_owned(), "thread.revoke".to_owned())),
        "no shopper:revoke_page thread.revoke entry in {audit:?}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_scanner_that_only_opens_the_page_revokes_nothing() {
    if !browser_available("link_scanner_that_only_opens_the_page_revokes_nothing") {
        return;
    }
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let thread = relay.thread("order-43").await;
    let id = thread["id"].as_str().expect("thread id").to_owned();
    let url = thread["revoke_url"].as_str().expect("revoke_url").to_owned();

    // A mail provider's link scanner: opens the link, renders the page, goes away.
    let mut scanner = Browser::open(&url, "Acme Shop", "order-43", None);
    scanner.expect("GET_DONE").await;
    scanner.tell("CLOSE").await;
    scanner.expect("CLOSED").await;
    scanner.finish().await;

    assert_eq!(status(&relay, &id).await, "active");
    assert_eq!(audit_of(&relay, &id).await, [("operator:api".to_owned(), "thread.create".to_owned())]);
    let (_, revoked) = relay.api("GET", "/v1/events?kind=thread_revoked", None).await;
    assert_eq!(revoked, Value::Array(vec![]), "a GET recorded a revocation");
    relay.stop().await;
}
