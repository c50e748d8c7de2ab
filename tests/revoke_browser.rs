//! The shopper's page in a real browser, in English and Japanese: Debian's headless
//! Chromium, driven by playwright-core through `tests/browser/revoke.mjs` with JavaScript
//! switched off. The script checks every page as a shopper and a screen reader meet it
//! (and that its screenshot is not blank); this test checks what the relay did after each
//! step: revoke, pause and resume, another address from the list, all of them. Without node, /usr/bin/chromium or the script's
//! node_modules (`.ci/install-browser` installs them) the tests say SKIPPED and pass, unless
//! MRTEST_REQUIRE_BROWSER is set (CI sets it).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use maskrelay::locale::{Locale, fill};
use serde_json::{Value, json};
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

/// `tests/browser/revoke.mjs` with one link open in Chromium.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    log: JoinHandle<String>,
}

/// What the script read off a page.
#[derive(Debug)]
struct Page {
    h1: String,
    lang: String,
    text: String,
    /// `action` of each button, in page order.
    actions: Vec<String>,
}

impl Browser {
    /// Opens `url` (a GET) with the browser's Accept-Language `accept`; `forbid` are strings
    /// no page may contain; screenshots go to target/tmp/<shots>-<n>.png.
    fn open(url: &str, accept: &str, forbid: &[&str], shots: Option<&str>) -> Self {
        let mut cmd = Command::new("node");
        cmd.arg("revoke.mjs").arg(url).args(["--accept-language", accept]);
        for f in forbid {
            cmd.args(["--forbid", f]);
        }
        if let Some(name) = shots {
            cmd.arg("--screenshots").arg(screenshot_prefix(name));
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

    async fn line(&mut self) -> String {
        let line = self.stdout.next_line().await.expect("read the browser script's stdout");
        match line {
            Some(l) if !l.starts_with("FAIL") => l,
            other => {
                let (status, log) = self.end().await;
                panic!("the browser script said {other:?} and ended with {status}; its log:\n{log}");
            }
        }
    }

    /// The next page the script reports.
    async fn page(&mut self) -> Page {
        let line = self.line().await;
        let Some(json) = line.strip_prefix("PAGE ") else { panic!("expected PAGE, got {line:?}") };
        let v: Value = serde_json::from_str(json).expect("PAGE json");
        Page {
            h1: v["h1"].as_str().unwrap_or_default().to_owned(),
            lang: v["lang"].as_str().unwrap_or_default().to_owned(),
            text: v["text"].as_str().unwrap_or_default().to_owned(),
            actions: v["buttons"]
                .as_array()
                .map(|b| b.iter().map(|b| b["action"].as_str().unwrap_or_default().to_owned()).collect())
                .unwrap_or_default(),
        }
    }

    /// Tells the script what to do next and returns the page that follows.
    async fn click(&mut self, command: &str) -> Page {
        self.tell(&format!("CLICK {command}")).await;
        self.page().await
    }

    async fn reopen(&mut self) -> Page {
        self.tell("OPEN").await;
        self.page().await
    }

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

    /// Closes like a link scanner and waits for a clean exit; panics with its log otherwise.
    async fn close(mut self) {
        self.tell("CLOSE").await;
        let line = self.line().await;
        assert_eq!(line, "CLOSED");
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
    log["data"]
        .as_array()
        .expect("audit is a list")
        .iter()
        .map(|e| {
            (e["actor"].as_str().unwrap_or("").to_owned(), e["action"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

/// Where a person finds what the browser saw: target/tmp/<name>-<n>.png, one per page.
fn screenshot_prefix(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

const JANE: &str = "jane.doe@shopper.example";
const HANAKO: &str = "hanako.sato@shopper.example";

async fn thread(relay: &TestRelay, store: &str, order: &str, email: &str, name: &str, locale: &str) -> Value {
    let (s, v) = relay
        .api(
            "POST",
            "/v1/threads",
            Some(json!({"order": order, "store": store, "locale": locale, "shopper": {"email": email, "name": name}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    v
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

/// A template of `locale` filled as the page fills it, without markup.
fn said(_locale: Locale, template: &str, store: &str, order: &str, count: usize) -> String {
    let count = count.to_string();
    let days = maskrelay::config::Config::default().threads.erase_after_days.to_string();
    fill(
        template,
        &[
            ("store", store),
            ("order", order),
            ("marketplace", "Test Market"),
            ("days", &days),
            ("count", &count),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopper_confirms_in_a_browser_without_javascript() {
    if !browser_available("shopper_confirms_in_a_browser_without_javascript") {
        return;
    }
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let t = relay.thread("order-42").await;
    let url = t["revoke_url"].as_str().expect("revoke_url").to_owned();
    let en = Locale::En.texts();

    let mut browser = Browser::open(&url, "en-US,en;q=0.9", &[JANE, "Jane Doe"], Some("revoke-en"));
    let ask = browser.page().await;
    assert_eq!(ask.lang, "en");
    assert_eq!(ask.h1, said(Locale::En, en.ask_title, "Acme Shop", "order-42", 0));
    assert!(ask.text.contains("order-42") && ask.text.contains("Test Market"), "{}", ask.text);
    assert_eq!(ask.actions, ["revoke", "pause"], "no other addresses: no list");
    assert_eq!(status(&relay, &id(&t)).await, "active", "the browser's GET must not revoke");
    assert_eq!(audit_of(&relay, &id(&t)).await, [("operator:api".to_owned(), "thread.create".to_owned())]);

    let done = browser.click("revoke").await;
    assert_eq!(done.h1, en.revoked_title);
    assert!(done.text.contains("Acme Shop") && done.text.contains("order-42"), "{}", done.text);
    assert!(done.actions.is_empty(), "nothing left to submit");
    assert_eq!(status(&relay, &id(&t)).await, "revoked");
    let audit = audit_of(&relay, &id(&t)).await;
    assert!(
        audit.contains(&("shopper:revoke_page".to_owned(), "thread.revoke".to_owned())),
        "no shopper:revoke_page thread.revoke entry in {audit:?}"
    );
    // Opening the link again (an older mail) says so and asks nothing.
    let again = browser.reopen().await;
    assert_eq!(again.h1, en.already_title);
    assert!(again.actions.is_empty());
    browser.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_scanner_that_only_opens_the_page_revokes_nothing() {
    if !browser_available("link_scanner_that_only_opens_the_page_revokes_nothing") {
        return;
    }
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let t = relay.thread("order-43").await;
    relay.thread("order-44").await;
    let url = t["revoke_url"].as_str().expect("revoke_url").to_owned();

    // A mail provider's link scanner: opens the link, renders the page, goes away.
    let mut scanner = Browser::open(&url, "en", &[JANE], None);
    let page = scanner.page().await;
    assert_eq!(page.actions, ["revoke", "pause", "revoke_other", "revoke_all"]);
    scanner.close().await;

    for (_, v) in [relay.api("GET", "/v1/events?kind=thread_revoked", None).await] {
        assert_eq!(v["data"], Value::Array(vec![]), "a GET recorded a revocation");
    }
    assert_eq!(status(&relay, &id(&t)).await, "active");
    assert_eq!(audit_of(&relay, &id(&t)).await, [("operator:api".to_owned(), "thread.create".to_owned())]);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn japanese_shopper_stops_one_of_the_list_then_all() {
    if !browser_available("japanese_shopper_stops_one_of_the_list_then_all") {
        return;
    }
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    let (s, _) = relay
        .api("POST", "/v1/stores", Some(json!({"id": "beta", "name": "ベータ雑貨店", "contact": "shop@beta.example", "senders": ["@beta.example"]})))
        .await;
    assert_eq!(s, 201);
    let first = thread(&relay, "acme", "JP-1", HANAKO, "佐藤 花子", "ja").await;
    let second = thread(&relay, "beta", "JP-2", HANAKO, "佐藤 花子", "ja").await;
    // The page lists newest first by creation time, kept in whole seconds: JP-3 must be
    // created in a later second than JP-2 for the order below to be defined.
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() <= created {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let third = thread(&relay, "acme", "JP-3", HANAKO, "佐藤 花子", "ja").await;
    // Someone else's thread never shows on her page.
    let stranger = thread(&relay, "acme", "JP-9", JANE, "Jane", "en").await;
    let ja = Locale::Ja.texts();

    let url = first["revoke_url"].as_str().unwrap().to_owned();
    let mut browser =
        Browser::open(&url, "ja-JP,ja;q=0.9,en;q=0.5", &[HANAKO, "佐藤", JANE], Some("revoke-ja"));
    let ask = browser.page().await;
    assert_eq!(ask.lang, "ja");
    assert_eq!(ask.h1, said(Locale::Ja, ja.ask_title, "Acme Shop", "JP-1", 0));
    assert!(ask.text.contains(ja.others_heading), "{}", ask.text);
    assert!(ask.text.contains(&said(Locale::Ja, ja.other_item, "ベータ雑貨店", "JP-2", 0)), "{}", ask.text);
    assert!(ask.text.contains(&said(Locale::Ja, ja.other_item, "Acme Shop", "JP-3", 0)), "{}", ask.text);
    assert!(!ask.text.contains("JP-9"), "a stranger's thread is listed: {}", ask.text);
    assert!(ask.text.contains(&said(Locale::Ja, ja.all_button, "", "", 3)), "{}", ask.text);
    assert_eq!(ask.actions, ["revoke", "pause", "revoke_other", "revoke_other", "revoke_all"]);

    // Newest first: the first button of the list is JP-3.
    let one = browser.click("revoke_other 0").await;
    assert_eq!(one.h1, ja.other_revoked_title);
    assert!(one.text.contains("JP-3"), "{}", one.text);
    assert_eq!(status(&relay, &id(&third)).await, "revoked");
    assert_eq!(status(&relay, &id(&first)).await, "active");
    assert_eq!(status(&relay, &id(&second)).await, "active");

    let back = browser.reopen().await;
    assert_eq!(back.actions, ["revoke", "pause", "revoke_other", "revoke_all"]);
    let all = browser.click("revoke_all").await;
    assert_eq!(all.h1, ja.all_title);
    assert!(all.text.contains(&said(Locale::Ja, ja.all_body, "", "", 2)), "{}", all.text);
    for t in [&first, &second, &third] {
        assert_eq!(status(&relay, &id(t)).await, "revoked");
    }
    assert_eq!(status(&relay, &id(&stranger)).await, "active");
    let audit = audit_of(&relay, "shopper").await;
    assert!(audit.contains(&("shopper:revoke_page".to_owned(), "shopper.revoke".to_owned())), "{audit:?}");
    let already = browser.reopen().await;
    assert_eq!(already.h1, ja.already_title);
    browser.close().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_in_both_languages() {
    if !browser_available("pause_and_resume_in_both_languages") {
        return;
    }
    let (relay, _sink, _dir) = relay().await;
    relay.acme().await;
    for (locale, accept, order) in [(Locale::En, "en-GB", "P-en"), (Locale::Ja, "ja", "P-ja")] {
        let t = thread(&relay, "acme", order, HANAKO, "Hanako", locale.tag()).await;
        let texts = locale.texts();
        let url = t["revoke_url"].as_str().unwrap().to_owned();
        let mut browser = Browser::open(&url, accept, &[HANAKO], Some(&format!("pause-{}", locale.tag())));
        browser.page().await;
        let paused = browser.click("pause").await;
        assert_eq!(paused.h1, texts.paused_title);
        assert_eq!(paused.lang, locale.tag());
        assert_eq!(paused.actions[..2], ["resume", "revoke"]);
        assert_eq!(status(&relay, &id(&t)).await, "disabled");
        // Paused mail is refused like a revoke.
        let mut c = Client::ready(relay.smtp()).await;
        c.cmd("MAIL FROM:<orders@acme.example>", 250).await;
        c.cmd(&format!("RCPT TO:<{}>", t["shopper_alias"].as_str().unwrap()), 550).await;
        let resumed = browser.click("resume").await;
        assert_eq!(resumed.h1, texts.resumed_title);
        assert_eq!(status(&relay, &id(&t)).await, "active");
        let audit = audit_of(&relay, &id(&t)).await;
        for action in ["thread.disable", "thread.enable"] {
            assert!(audit.contains(&("shopper:revoke_page".to_owned(), action.to_owned())), "{audit:?}");
        }
        browser.close().await;
    }
    relay.stop().await;
}
