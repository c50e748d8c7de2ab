//! `maskrelay-load`: pushes N messages over M concurrent SMTP sessions into a relay and
//! measures how fast it accepts them (MAIL FROM → 250 after the end of data) and how fast
//! they come out at the next hop.
//!
//! By default it starts everything in-process: the test SMTP sink (tests/support/sink.rs)
//! as the smarthost, and the relay on loopback port 0 with a fresh temporary SQLite
//! database (or the database given with --db) and a DKIM key generated in the same
//! temporary directory. The store and the thread are created with the library directly,
//! so no HTTP client is needed.
//!
//! With --relay ADDR it loads an already-running relay instead. That relay must run with
//! `auth.mode = "envelope"`, `egress.mode = "smarthost"` and `egress.smarthost` pointing at
//! this harness's sink (--sink, default 127.0.0.1:2526); --db must name the relay's
//! database (the harness creates its store and thread there) and --domain its
//! `relay.domain`.
//!
//! Every message carries its sequence number in the Subject. At the end the harness
//! checks that every accepted message reached the sink exactly once, with its body intact;
//! anything else is reported and makes the exit code 1.

#[allow(dead_code)]
#[path = "../tests/support/sink.rs"]
mod sink;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use maskrelay::address::{Mailbox, SenderPattern, StoreId, random_token};
use maskrelay::config::{AuthMode, Config, EgressMode};
use maskrelay::server::Relay;
use maskrelay::store::stores::{self, StoreFields};
use maskrelay::store::threads::{self, NewThread};
use maskrelay::store::{Backend, Db};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use sink::Sink;

/// How long the sink may take to receive every accepted message once sending is done.
const E2E_DEADLINE: Duration = Duration::from_secs(300);
/// How often the sink is looked at.
const POLL: Duration = Duration::from_millis(20);
/// How long one SMTP reply may take before the harness calls it an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

const STORE_SENDER: &str = "orders@shop.bench";
const STORE_CONTACT: &str = "support@shop.bench";
const SHOPPER: &str = "shopper@inbox.bench";

#[derive(Parser, Debug)]
#[command(
    name = "maskrelay-load",
    about = "Load harness: N messages over M concurrent SMTP sessions into maskrelay"
)]
struct Args {
    /// Messages to send.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Concurrent SMTP sessions, each sending its messages one after another.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Approximate size of each message body in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Send shopper → store (through the MIME gate and the full reader-side read-back)
    /// instead of store → shopper.
    #[arg(long)]
    to_store: bool,
    /// Database: a SQLite file path, a sqlite:// URL or a postgres:// URL. Default: a
    /// fresh SQLite file in a temporary directory, removed at the end.
    #[arg(long)]
    db: Option<String>,
    /// SMTP address of an already-running relay; without it one is started in-process.
    #[arg(long)]
    relay: Option<SocketAddr>,
    /// With --relay: the relay's `relay.domain`.
    #[arg(long, default_value = "relay.bench")]
    domain: String,
    /// With --relay: where the sink listens; the relay's `egress.smarthost` must point here.
    #[arg(long, default_value = "127.0.0.1:2526")]
    sink: String,
}

/// What happened to one message.
#[derive(Debug, Clone)]
enum Outcome {
    /// 250 after the end of data, with the accept latency.
    Accepted(Duration),
    /// A reply other than the expected one at some stage.
    Rejected { stage: &'static str, code: u16, text: String },
    /// The connection failed (connect, read, write or timeout).
    Failed(String),
}

// ---------------------------------------------------------------------------------------
// A minimal SMTP client: one connection, commands in lock step, replies never asserted
// (every reply is recorded, so the harness can report non-250 answers).

struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

type Reply = (u16, String);

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .context("connect")?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut c = Self { r: BufReader::new(r), w };
        let (code, text) = c.reply().await?;
        if code != 220 {
            bail!("greeting: {code} {}", text.trim_end());
        }
        let (code, text) = c.cmd("EHLO load.bench").await?;
        if code != 250 {
            bail!("EHLO: {code} {}", text.trim_end());
        }
        Ok(c)
    }

    /// One reply, all its lines.
    async fn reply(&mut self) -> Result<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.r.read_line(&mut line))
                .await
                .context("no reply within 60 s")?
                .context("read")?;
            if n == 0 {
                bail!("connection closed by the relay (after {:?})", text.trim_end());
            }
            text.push_str(&line);
            let b = line.as_bytes();
            if b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) {
                bail!("malformed reply line {:?}", line.trim_end());
            }
            if b[3] != b'-' {
                return Ok((line[..3].parse()?, text));
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> Result<Reply> {
        self.w.write_all(format!("{line}\r\n").as_bytes()).await.context("write")?;
        self.reply().await
    }

    /// MAIL, RCPT, DATA, the message (already dot-stuffed, ending in CRLF) and the final
    /// dot. Ok(outcome) for anything the relay answered; Err when the connection broke.
    async fn send(&mut self, from: &str, to: &str, wire: &[u8]) -> Result<Outcome> {
        let started = Instant::now();
        for (stage, line, want) in [
            ("MAIL FROM", format!("MAIL FROM:<{from}>"), 250),
            ("RCPT TO", format!("RCPT TO:<{to}>"), 250),
            ("DATA", "DATA".to_owned(), 354),
        ] {
            let (code, text) = self.cmd(&line).await?;
            if code != want {
                if code != 421 {
                    // Back to a clean state for the next message.
                    self.cmd("RSET").await?;
                }
                return Ok(Outcome::Rejected { stage, code, text: text.trim_end().to_owned() });
            }
        }
        self.w.write_all(wire).await.context("write data")?;
        let (code, text) = self.reply().await?;
        Ok(if code == 250 {
            Outcome::Accepted(started.elapsed())
        } else {
            Outcome::Rejected { stage: "end of data", code, text: text.trim_end().to_owned() }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Messages.

/// A plain-text body of about `size` bytes: 78-byte lines (76 characters and CRLF).
fn body(size: usize) -> String {
    const WORDS: &str = "the quick brown fox jumps over the lazy dog while the parcel \
                         ships from the warehouse to the customer";
    let words: Vec<&str> = WORDS.split(' ').collect();
    let mut out = String::with_capacity(size + 80);
    let mut line = String::new();
    let mut i = 0;
    while out.len() < size.max(1) {
        let w = words[i % words.len()];
        i += 1;
        if line.len() + 1 + w.len() > 76 {
            out.push_str(&format!("{line:<76}\r\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out
}

/// The full message for sequence number `seq`, dot-stuffed and terminated for DATA.
fn wire(run: &str, seq: usize, from: &str, to: &str, body: &str) -> (Vec<u8>, usize) {
    let message = format!(
        "From: Bench <{from}>\r\nTo: <{to}>\r\nSubject: bench {run} message {seq}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{run}.{seq}@mailer.shop.bench>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    );
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut at_line_start = true;
    for &b in message.as_bytes() {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    (out, message.len())
}

/// The sequence number from a delivered Subject of this run.
fn seq_of(subject: &str, run: &str) -> Option<usize> {
    subject.strip_prefix(&format!("bench {run} message "))?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------
// Setup.

/// A database URL from --db.
fn db_url(arg: &str) -> String {
    if arg.starts_with("sqlite:") || arg.starts_with("postgres") {
        arg.to_owned()
    } else {
        format!("sqlite://{arg}")
    }
}

/// A store with one approved sender and one thread for a shopper; returns the shopper
/// alias and the store alias.
async fn fixture(db: &Db, domain: &str) -> Result<(String, String)> {
    let store = StoreId::parse(&format!("bench-{}", random_token(8)))?;
    stores::create(
        db,
        &store,
        &StoreFields {
            name: "Bench Shop".into(),
            contact: Mailbox::parse(STORE_CONTACT)?,
            senders: vec![SenderPattern::parse(STORE_SENDER)?],
        },
        maskrelay::store::audit::Actor::Cli,
    )
    .await
    .context("create store")?;
    let (thread, _) = threads::create(
        db,
        &NewThread {
            store,
            order: format!("bench-order-{}", random_token(8)),
            shopper: Mailbox::parse(SHOPPER)?,
            shopper_name: Some("Bench Shopper".into()),
            ttl_days: 30,
            locale: Default::default(),
        },
        maskrelay::store::audit::Actor::Cli,
    )
    .await
    .context("create thread")?;
    Ok((format!("{}@{domain}", thread.shopper_alias), format!("{}@{domain}", thread.store_alias)))
}

/// A temporary directory of our own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("maskrelay-load-{}", random_token(12)));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Statistics.

/// Nearest-rank percentile of sorted samples, in ms.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    ms(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "a, b, c … (n more)" for error listings.
fn sample(list: &[usize]) -> String {
    let mut s: Vec<String> = list.iter().take(20).map(usize::to_string).collect();
    if list.len() > 20 {
        s.push(format!("… ({} more)", list.len() - 20));
    }
    s.join(", ")
}

/// Prints a progress line when `done` crosses a tenth of `total`.
fn progress(what: &str, done: usize, total: usize, started: Instant) {
    if total > 0 && done > 0 && done * 10 / total > (done - 1) * 10 / total {
        eprintln!(
            "[maskrelay-load] {what} {done}/{total} ({}%) after {:.1} s",
            done * 100 / total,
            started.elapsed().as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.messages == 0 || args.concurrency == 0 {
        bail!("--messages and --concurrency must be at least 1");
    }
    let code = run(args).await?;
    std::process::exit(code);
}

async fn run(args: Args) -> Result<i32> {
    let n = args.messages;
    let run_id = random_token(8);

    // The database, the sink, the relay, the fixture.
    // In-process, the relay's files (the default SQLite database, the DKIM key it
    // generates on first start) go to a temporary directory removed at the end.
    if args.relay.is_some() && args.db.is_none() {
        bail!("--relay needs --db: the database of that relay");
    }
    let tmp = match args.relay {
        None => Some(TempDir::new()?),
        Some(_) => None,
    };
    let url = match (&args.db, &tmp) {
        (Some(db), _) => db_url(db),
        (None, Some(t)) => format!("sqlite://{}", t.0.join("relay.db").display()),
        (None, None) => unreachable!("checked above"),
    };
    let sink = match &args.relay {
        None => Sink::start().await,
        Some(_) => Sink::start_on(&args.sink).await,
    };
    let (relay, db, smtp, domain, workers) = match args.relay {
        None => {
            let mut c = Config::default();
            c.relay.domain = "relay.bench".into();
            c.relay.marketplace = "Bench Market".into();
            c.smtp.listen = "127.0.0.1:0".into();
            c.api.listen = "127.0.0.1:0".into();
            c.api.token = Some(format!("bench-{}", random_token(24)));
            c.auth.mode = AuthMode::Envelope;
            c.egress.mode = EgressMode::Smarthost;
            c.egress.smarthost = sink.addr.to_string();
            c.egress.workers = 4;
            c.database.url = url.clone();
            if let Ok(n) = std::env::var("BENCH_DB_CONNECTIONS") {
                c.database.max_connections = n.parse().context("BENCH_DB_CONNECTIONS")?;
            }
            let dir = &tmp.as_ref().expect("in-process has a temporary directory").0;
            c.dkim.private_key_path = dir.join("dkim.pem").display().to_string();
            c.privacy.key_file = dir.join("maskrelay.key").display().to_string();
            let workers = c.egress.workers;
            let relay = Relay::start(c).await.context("relay start")?;
            let (db, smtp) = (relay.db.clone(), relay.smtp_addr);
            (Some(relay), db, smtp, "relay.bench".to_owned(), Some(workers))
        }
        Some(addr) => {
            // The relay's own keys: MASKRELAY_PRIVACY_KEYS or ./maskrelay.key.
            let privacy = maskrelay::config::Config::load(None).context("privacy keys")?.privacy;
            let (vault, _) = maskrelay::store::Vault::from_config(&privacy, false).context("privacy keys")?;
            let db = Db::connect(&url, 2, vault).await.context("connect to the relay's database")?;
            (None, db, addr, args.domain.clone(), None)
        }
    };
    let (shopper_alias, store_alias) = fixture(&db, &domain).await?;
    // Who writes to whom: the store to the shopper (the default), or the shopper to the store.
    let (sender, recipient, alias) = match args.to_store {
        false => (STORE_SENDER, SHOPPER, shopper_alias),
        true => (SHOPPER, STORE_CONTACT, store_alias),
    };
    let body = Arc::new(body(args.size));
    let message_bytes = wire(&run_id, 0, sender, &alias, &body).1;

    eprintln!(
        "[maskrelay-load] {n} messages of {message_bytes} bytes over {} sessions to {smtp} \
         ({}); sink {}",
        args.concurrency,
        if relay.is_some() { "in-process relay" } else { "external relay" },
        sink.addr
    );

    // Sending phase.
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let alias = Arc::new(alias);
    let run_id = Arc::new(run_id);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (next, done, alias, run_id, body) =
            (next.clone(), done.clone(), alias.clone(), run_id.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut results: Vec<(usize, Outcome)> = Vec::new();
            let mut reopened: Vec<(usize, String)> = Vec::new();
            let mut conn: Option<Conn> = None;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= n {
                    break;
                }
                let (bytes, _) = wire(&run_id, seq, sender, &alias, &body);
                let mut retried = false;
                let outcome = loop {
                    let o = async {
                        if conn.is_none() {
                            conn = Some(Conn::open(smtp).await?);
                        }
                        let c = conn.as_mut().expect("connected");
                        c.send(sender, &alias, &bytes).await
                    }
                    .await
                    .unwrap_or_else(|e| {
                        conn = None;
                        Outcome::Failed(format!("{e:#}"))
                    });
                    if let Outcome::Rejected { stage, code: 421, text } = &o {
                        conn = None;
                        // Closed before the transaction began (e.g. smtp.max_commands):
                        // nothing was accepted, so a sending MTA reconnects and sends the
                        // message again. So does the harness, once; the summary counts it.
                        if *stage == "MAIL FROM" && !retried {
                            retried = true;
                            reopened.push((seq, text.clone()));
                            continue;
                        }
                    }
                    break o;
                };
                results.push((seq, outcome));
                progress("sent", done.fetch_add(1, Ordering::Relaxed) + 1, n, started);
            }
            if let Some(mut c) = conn {
                let _ = c.cmd("QUIT").await;
            }
            (results, reopened)
        }));
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    let mut reopened: HashMap<String, Vec<usize>> = HashMap::new();
    for t in tasks {
        let (results, closed) = t.await.context("sender task")?;
        for (seq, o) in results {
            outcomes[seq] = Some(o);
        }
        for (seq, text) in closed {
            reopened.entry(text).or_default().push(seq);
        }
    }
    let sending = started.elapsed();
    reopened.values_mut().for_each(|v| v.sort());

    let mut accepted_seqs = Vec::new();
    let mut latencies = Vec::new();
    let mut by_seq_latency: Vec<Option<Duration>> = vec![None; n];
    let mut rejected: HashMap<String, Vec<usize>> = HashMap::new();
    let mut failed: HashMap<String, Vec<usize>> = HashMap::new();
    for (seq, o) in outcomes.iter().enumerate() {
        match o.as_ref().expect("every message has an outcome") {
            Outcome::Accepted(d) => {
                accepted_seqs.push(seq);
                latencies.push(*d);
                by_seq_latency[seq] = Some(*d);
            }
            Outcome::Rejected { stage, code, text } => {
                rejected.entry(format!("{stage}: {code} {text}")).or_default().push(seq)
            }
            Outcome::Failed(e) => failed.entry(e.clone()).or_default().push(seq),
        }
    }
    let accepted = accepted_seqs.len();
    latencies.sort();

    // Delivery phase: wait until the sink has every accepted message.
    let wait_started = Instant::now();
    let mut seen = 0;
    let e2e = loop {
        // `attempts` counts DATA at the sink, a cheap lock; `delivered` clones everything.
        let got = sink.attempts();
        while seen < got.min(accepted) {
            seen += 1;
            progress("delivered", seen, accepted, started);
        }
        if got >= accepted && sink.delivered().len() >= accepted {
            break Some(started.elapsed());
        }
        if wait_started.elapsed() > E2E_DEADLINE {
            break None;
        }
        tokio::time::sleep(POLL).await;
    };

    // Integrity: every accepted message exactly once, intact, to the shopper; nothing else.
    // Give late duplicates a moment to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = sink.delivered();
    let mut count = vec![0usize; n];
    let (mut foreign, mut out_of_range, mut corrupt) = (0usize, Vec::new(), Vec::new());
    for d in &delivered {
        match d.header("Subject").and_then(|s| seq_of(&s, &run_id)) {
            None => foreign += 1,
            Some(seq) if seq >= n => out_of_range.push(seq),
            Some(seq) => {
                count[seq] += 1;
                // The relay rewrites headers only: the body must arrive byte for byte.
                let body_ok = d.data.ends_with(format!("\r\n\r\n{body}").as_bytes());
                if d.rcpt_to != [recipient] || !body_ok {
                    corrupt.push(seq);
                }
            }
        }
    }
    let lost: Vec<usize> = accepted_seqs.iter().copied().filter(|&s| count[s] == 0).collect();
    let duplicated: Vec<usize> = (0..n).filter(|&s| count[s] > 1).collect();
    let unexpected: Vec<usize> = (0..n).filter(|&s| count[s] > 0 && by_seq_latency[s].is_none()).collect();

    // The queue should drain to nothing (a delivered message is deleted right after).
    let mut queue_left = maskrelay::queue::depth(&db).await.map(|d| d.0).unwrap_or(-1);
    let q_started = Instant::now();
    while queue_left > 0 && q_started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        queue_left = maskrelay::queue::depth(&db).await.map(|d| d.0).unwrap_or(-1);
    }

    let shutdown_started = Instant::now();
    match relay {
        Some(r) => r.shutdown().await,
        None => db.pool.close().await,
    }
    let shutdown = shutdown_started.elapsed();
    let (sink_attempts, sink_addr) = (sink.attempts(), sink.addr);
    sink.stop();
    drop(tmp);

    // Summary.
    let mean = if latencies.is_empty() {
        f64::NAN
    } else {
        ms(latencies.iter().sum::<Duration>()) / latencies.len() as f64
    };
    let tenths: Vec<String> = (0..10)
        .map(|k| {
            let mut slice: Vec<Duration> =
                by_seq_latency[k * n / 10..(k + 1) * n / 10].iter().flatten().copied().collect();
            slice.sort();
            format!("{:.1}", pct(&slice, 50.0))
        })
        .collect();
    let backend = match db.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let shown_url = match url.rsplit_once('@') {
        Some((_, rest)) if url.starts_with("postgres") => format!("postgres://…@{rest}"),
        _ => url.clone(),
    };
    println!("== maskrelay-load summary ==");
    match workers {
        Some(w) => println!(
            "relay            in-process, smtp {smtp}, egress smarthost -> sink {sink_addr} \
             ({w} workers)"
        ),
        None => println!("relay            external, smtp {smtp}, sink {sink_addr}"),
    }
    println!("database         {backend}: {shown_url}");
    println!(
        "load             {n} messages x {message_bytes} bytes (body ~{} bytes), {} sessions",
        args.size, args.concurrency
    );
    println!("accepted         {accepted} / {n}");
    for (what, seqs) in &rejected {
        println!("  rejected       {} x {what}  (seq {})", seqs.len(), sample(seqs));
    }
    for (what, seqs) in &failed {
        println!("  failed         {} x {what}  (seq {})", seqs.len(), sample(seqs));
    }
    for (what, seqs) in &reopened {
        println!(
            "  reconnected    {} x MAIL FROM: {what}; sent again on a new connection (seq {})",
            seqs.len(),
            sample(seqs)
        );
    }
    println!("sending phase    {:.2} s", sending.as_secs_f64());
    println!("accept rate      {:.1} msg/s", accepted as f64 / sending.as_secs_f64());
    println!(
        "accept latency   p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        pct(&latencies, 50.0),
        pct(&latencies, 90.0),
        pct(&latencies, 99.0),
        latencies.last().map_or(f64::NAN, |d| ms(*d)),
        mean
    );
    println!("  p50 per tenth  {} ms (in send order)", tenths.join(" "));
    match e2e {
        Some(t) => println!(
            "end-to-end       {accepted} / {accepted} at the sink after {:.2} s: {:.1} msg/s",
            t.as_secs_f64(),
            accepted as f64 / t.as_secs_f64()
        ),
        None => println!(
            "end-to-end       TIMEOUT: sink had {} of {accepted} after {:.0} s of waiting",
            sink_attempts,
            E2E_DEADLINE.as_secs_f64()
        ),
    }
    println!(
        "integrity        lost {}, duplicated {}, delivered but not accepted {}, corrupt {}, \
         foreign {foreign}, bad seq {}",
        lost.len(),
        duplicated.len(),
        unexpected.len(),
        corrupt.len(),
        out_of_range.len()
    );
    for (what, list) in [
        ("lost (accepted, never delivered)", &lost),
        ("duplicated", &duplicated),
        ("delivered but not accepted", &unexpected),
        ("corrupt", &corrupt),
    ] {
        if !list.is_empty() {
            println!("  {what}: seq {}", sample(list));
        }
    }
    println!("sink             {} DATA received, {} kept", sink_attempts, delivered.len());
    println!("queue at end     {queue_left}");
    println!("shutdown         {:.2} s", shutdown.as_secs_f64());

    let ok = accepted == n
        && e2e.is_some()
        && lost.is_empty()
        && duplicated.is_empty()
        && unexpected.is_empty()
        && corrupt.is_empty()
        && queue_left == 0;
    Ok(if ok { 0 } else { 1 })
}
