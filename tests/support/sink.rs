//! A real SMTP sink on loopback: accepts mail over TCP like a next-hop MTA would and keeps
//! what it received, so tests can assert on the delivered bytes. By default it offers
//! PIPELINING, 8BITMIME and SMTPUTF8 and takes everything; `Options` make it a next hop
//! without PIPELINING or 8BITMIME, with SIZE, STARTTLS or TLS from the first byte, AUTH,
//! slow replies, scripted 4xx/5xx replies at MAIL, RCPT and the end of DATA, and a limit
//! on line length. It is
//! strict where a real server may not be: what breaks the rules of what it offered is
//! refused and recorded (`violations`), so a client that ignores them fails the test.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message bytes, dot-stuffing undone, without the final ".".
    pub data: Vec<u8>,
    /// Whether the session was encrypted when the message came.
    pub tls: bool,
    /// Who had logged in with AUTH, if anyone.
    pub auth_user: Option<String>,
    /// The MAIL FROM parameters (`BODY=8BITMIME`, `SIZE=…`, `SMTPUTF8`).
    pub mail_params: Vec<String>,
    /// Which connection (counting from 0) carried it.
    pub connection: usize,
}

impl Delivered {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
    /// The first header of that name (unfolded), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// How the sink behaves. The default: a plain next hop that offers PIPELINING, 8BITMIME
/// and SMTPUTF8 and accepts everything at once.
#[derive(Clone)]
pub struct Options {
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    /// `SIZE n`: larger messages are refused with 552 5.3.4.
    pub size: Option<usize>,
    /// Offers STARTTLS with this server configuration.
    pub starttls: Option<Arc<rustls::ServerConfig>>,
    /// Offers STARTTLS and fails it this way.
    pub broken_starttls: Option<BrokenStarttls>,
    /// Speaks TLS from the first byte (port 465 style).
    pub implicit_tls: Option<Arc<rustls::ServerConfig>>,
    /// Offers AUTH PLAIN LOGIN (after TLS when TLS is configured) and requires a login
    /// with this user and password before MAIL.
    pub auth: Option<(String, String)>,
    /// The mechanisms the AUTH line names.
    pub auth_mechanisms: &'static str,
    /// Waits this long before the reply after the final dot.
    pub data_reply_delay: Duration,
    /// The first `.0` connections wait `.1` before their greeting.
    pub slow_greetings: (usize, Duration),
    /// The first `.0` messages wait `.1` before the reply after their final dot (a next
    /// hop that stalls on the first attempt).
    pub stall_first: (usize, Duration),
    /// Each burst of input waits this long before it is read, as over a link with that
    /// round trip: a client that waits for every reply pays it per command, one that
    /// pipelines once per batch (for benchmarks).
    pub latency: Duration,
    /// Refuses (554 5.6.0, recorded as a violation) a message with a line longer than
    /// this many octets, CRLF not counted: a strict next hop holding to RFC 5322 2.1.1.
    pub max_line: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            size: None,
            starttls: None,
            broken_starttls: None,
            implicit_tls: None,
            auth: None,
            auth_mechanisms: "PLAIN LOGIN",
            data_reply_delay: Duration::ZERO,
            slow_greetings: (0, Duration::ZERO),
            stall_first: (0, Duration::ZERO),
            latency: Duration::ZERO,
            max_line: None,
        }
    }
}

/// How a sink's STARTTLS fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenStarttls {
    /// `454 4.7.0`: declined, the session goes on in the clear.
    Declined,
    /// `220`, then garbage instead of a handshake.
    Garbage,
}

#[derive(Default)]
struct Shared {
    delivered: Vec<Delivered>,
    /// Replies to give at the end of DATA, in order; "250 ok" once empty.
    script: VecDeque<String>,
    /// Replies to give to MAIL FROM and RCPT TO, in order, before the usual 250.
    script_mail: VecDeque<String>,
    script_rcpt: VecDeque<String>,
    /// DATA attempts seen, accepted or not.
    attempts: usize,
    /// Final dots seen (counted before any stall).
    data_ends: usize,
    /// TCP connections accepted.
    connections: usize,
    /// Sessions that ended (QUIT or closed).
    closed: usize,
    /// Transactions (MAIL to the reply after DATA) in progress, and the most at once.
    in_progress: usize,
    max_in_progress: usize,
    /// Commands that arrived while the one before had no reply yet.
    pipelined: usize,
    /// What a client did that the sink had not offered.
    violations: Vec<String>,
}

/// A running sink.
pub struct Sink {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Sink {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// On a given address (to come back on the same port after a "restart").
    pub async fn start_on(addr: &str) -> Self {
        Self::start_with(addr, Options::default()).await
    }

    /// With options, on a given address ("127.0.0.1:0" for any port).
    pub async fn start_with(addr: &str, options: Options) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind sink");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        let options = Arc::new(options);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let s = s.clone();
                let options = options.clone();
                let n = {
                    let mut s = s.lock().unwrap();
                    s.connections += 1;
                    s.connections - 1
                };
                tokio::spawn(async move {
                    let _ = session(stream, &s, &options, n).await;
                    s.lock().unwrap().closed += 1;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// Two sinks on one port, at 127.0.0.2 and 127.0.0.3: two MX hosts that share
    /// `egress.mx_port`.
    pub async fn pair_on_one_port(first: Options, second: Options) -> (Self, Self) {
        for _ in 0..20 {
            let a = Self::start_with("127.0.0.2:0", first.clone()).await;
            if let Ok(probe) = std::net::TcpListener::bind(("127.0.0.3", a.addr.port())) {
                drop(probe);
                let b = Self::start_with(&format!("127.0.0.3:{}", a.addr.port()), second).await;
                return (a, b);
            }
            a.stop();
        }
        panic!("no port free on both 127.0.0.2 and 127.0.0.3");
    }

    /// Replies for the next DATA commands, e.g. `["451 4.3.0 try later"]`.
    pub fn script(&self, replies: &[&str]) {
        self.shared.lock().unwrap().script = replies.iter().map(|s| s.to_string()).collect();
    }

    /// Replies for the next MAIL FROM commands.
    pub fn script_mail(&self, replies: &[&str]) {
        self.shared.lock().unwrap().script_mail = replies.iter().map(|s| s.to_string()).collect();
    }

    /// Replies for the next RCPT TO commands.
    pub fn script_rcpt(&self, replies: &[&str]) {
        self.shared.lock().unwrap().script_rcpt = replies.iter().map(|s| s.to_string()).collect();
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.lock().unwrap().delivered.clone()
    }

    /// Final dots received, counted before any stall (see `Options::stall_first`).
    pub fn data_ends(&self) -> usize {
        self.shared.lock().unwrap().data_ends
    }

    /// Waits until every message received has had its final reply (none is stalled).
    pub async fn wait_answered(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.attempts() < self.data_ends() {
            assert!(std::time::Instant::now() < deadline, "a message still waits for the sink's reply");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn attempts(&self) -> usize {
        self.shared.lock().unwrap().attempts
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().unwrap().connections
    }

    /// Sessions that have ended.
    pub fn closed(&self) -> usize {
        self.shared.lock().unwrap().closed
    }

    /// The most transactions that were in progress at once.
    pub fn max_in_progress(&self) -> usize {
        self.shared.lock().unwrap().max_in_progress
    }

    /// Commands that came before the reply to the one before them.
    pub fn pipelined(&self) -> usize {
        self.shared.lock().unwrap().pipelined
    }

    /// What clients did that the sink had not offered (empty for a well-behaved client).
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().unwrap().violations.clone()
    }

    /// Waits until at least `n` messages arrived (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Delivered> {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.delivered();
            if d.len() >= n {
                return d;
            }
            assert!(Instant::now() < deadline, "sink got {} of {n} messages in {timeout:?}", d.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Counts one session's open transaction in `Shared::in_progress`, also when the session
/// ends in the middle of one.
struct Transaction<'a> {
    shared: &'a Mutex<Shared>,
    open: bool,
}

impl Transaction<'_> {
    fn begin(&mut self) {
        if !self.open {
            self.open = true;
            let mut s = self.shared.lock().unwrap();
            s.in_progress += 1;
            s.max_in_progress = s.max_in_progress.max(s.in_progress);
        }
    }

    fn end(&mut self) {
        if self.open {
            self.open = false;
            self.shared.lock().unwrap().in_progress -= 1;
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// The MAIL FROM or RCPT TO path and its parameters.
fn path_and_params(rest: &str) -> (String, Vec<String>) {
    let mut words = rest.split_whitespace();
    let path = words.next().unwrap_or("").trim_matches(['<', '>']).to_owned();
    (path, words.map(|w| w.to_ascii_uppercase()).collect())
}

async fn session(
    stream: tokio::net::TcpStream,
    shared: &Mutex<Shared>,
    options: &Options,
    connection: usize,
) -> std::io::Result<()> {
    // Replies are small writes: without TCP_NODELAY, Nagle and delayed ACKs stall each
    // command by up to 200 ms, and the sink, not the relay, would be what gets measured.
    stream.set_nodelay(true)?;
    let mut tls = false;
    let stream: Box<dyn Stream> = match &options.implicit_tls {
        Some(config) => {
            tls = true;
            Box::new(tokio_rustls::TlsAcceptor::from(config.clone()).accept(stream).await?)
        }
        None => Box::new(stream),
    };
    let mut io = BufReader::new(stream);
    if connection < options.slow_greetings.0 {
        tokio::time::sleep(options.slow_greetings.1).await;
    }
    reply(&mut io, "220 sink.test ESMTP").await?;
    let mut mail: Option<(String, Vec<String>)> = None;
    let mut rcpts = Vec::new();
    let mut auth_user: Option<String> = None;
    let mut line = Vec::new();
    let mut transaction = Transaction { shared, open: false };
    let violation = |what: String| shared.lock().unwrap().violations.push(what);
    loop {
        line.clear();
        let fresh = io.buffer().is_empty();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if fresh && !options.latency.is_zero() {
            tokio::time::sleep(options.latency).await;
        }
        let cmd = String::from_utf8_lossy(&line).trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        // More input already waiting before this command was answered: pipelining
        // (RFC 2920), an error where it was not offered.
        let ahead = !io.buffer().is_empty();
        if ahead {
            shared.lock().unwrap().pipelined += 1;
            if !options.pipelining {
                violation(format!(
                    "pipelined without PIPELINING after {}",
                    cmd.split(' ').next().unwrap_or("")
                ));
                reply(&mut io, "503 5.5.0 improper command pipelining").await?;
                continue;
            }
        }
        let offer_auth = options.auth.is_some() && (tls || options.starttls.is_none());
        let r: String = if upper.starts_with("EHLO") {
            let mut lines = vec!["250-sink.test".to_owned()];
            if options.pipelining {
                lines.push("250-PIPELINING".into());
            }
            if options.eight_bit_mime {
                lines.push("250-8BITMIME".into());
            }
            if let Some(n) = options.size {
                lines.push(format!("250-SIZE {n}"));
            }
            if (options.starttls.is_some() || options.broken_starttls.is_some()) && !tls {
                lines.push("250-STARTTLS".into());
            }
            if offer_auth {
                lines.push(format!("250-AUTH {}", options.auth_mechanisms));
            }
            lines.push(if options.smtputf8 {
                "250 SMTPUTF8".into()
            } else {
                "250 ENHANCEDSTATUSCODES".into()
            });
            lines.join("\r\n")
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            "250 ok".into()
        } else if upper == "STARTTLS" && options.broken_starttls == Some(BrokenStarttls::Declined) {
            "454 4.7.0 TLS not available now".into()
        } else if upper == "STARTTLS" && options.broken_starttls == Some(BrokenStarttls::Garbage) {
            reply(&mut io, "220 2.0.0 go ahead").await?;
            reply(&mut io, "this is not a TLS handshake").await?;
            return Ok(());
        } else if upper == "STARTTLS" && options.starttls.is_some() && !tls {
            reply(&mut io, "220 2.0.0 go ahead").await?;
            // RFC 3207 5: whatever the client sent after STARTTLS is not part of TLS.
            if !io.buffer().is_empty() {
                violation("data after STARTTLS before the handshake".into());
                return Ok(());
            }
            let config = options.starttls.clone().unwrap();
            let plain = io.into_inner();
            let encrypted = tokio_rustls::TlsAcceptor::from(config).accept(plain).await?;
            io = BufReader::new(Box::new(encrypted));
            tls = true;
            // RFC 3207 4.2: the session starts over.
            mail = None;
            transaction.end();
            rcpts.clear();
            auth_user = None;
            continue;
        } else if upper.starts_with("AUTH ") && offer_auth {
            let mechanism = upper.split_whitespace().nth(1).unwrap_or("").to_owned();
            if !options.auth_mechanisms.split(' ').any(|m| m == mechanism) {
                violation(format!("AUTH {mechanism} not offered"));
            }
            match login(&mut io, &cmd).await? {
                Some((user, password))
                    if Some((&user, &password)) == options.auth.as_ref().map(|(u, p)| (u, p)) =>
                {
                    auth_user = Some(user);
                    "235 2.7.0 authenticated".into()
                }
                _ => "535 5.7.8 authentication credentials invalid".into(),
            }
        } else if upper.starts_with("MAIL FROM:") {
            let (from, params) = path_and_params(&cmd[10..]);
            let scripted = shared.lock().unwrap().script_mail.pop_front();
            if options.auth.is_some() && auth_user.is_none() {
                "530 5.7.0 authentication required".into()
            } else if let Some(r) = scripted {
                r
            } else if params.iter().any(|p| p == "BODY=8BITMIME") && !options.eight_bit_mime {
                violation("BODY=8BITMIME without 8BITMIME".into());
                "555 5.5.4 BODY=8BITMIME not offered".into()
            } else if params.iter().any(|p| p == "SMTPUTF8") && !options.smtputf8 {
                violation("SMTPUTF8 without SMTPUTF8".into());
                "555 5.5.4 SMTPUTF8 not offered".into()
            } else if let Some(max) = options.size
                && params.iter().filter_map(|p| p.strip_prefix("SIZE=")).any(|n| n.parse().unwrap_or(0) > max)
            {
                "552 5.3.4 message too big".into()
            } else {
                mail = Some((from, params));
                rcpts.clear();
                transaction.begin();
                "250 2.1.0 ok".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            let scripted = shared.lock().unwrap().script_rcpt.pop_front();
            match (scripted, &mail) {
                (_, None) => "503 5.5.1 MAIL first".into(),
                (Some(r), _) => r,
                (None, Some(_)) => {
                    rcpts.push(path_and_params(&cmd[8..]).0);
                    "250 2.1.5 ok".into()
                }
            }
        } else if upper == "RSET" {
            mail = None;
            transaction.end();
            rcpts.clear();
            "250 2.0.0 ok".into()
        } else if upper == "DATA" {
            if mail.is_none() || rcpts.is_empty() {
                "554 5.5.1 no valid recipients".into()
            } else {
                reply(&mut io, "354 go ahead").await?;
                if !options.latency.is_zero() {
                    tokio::time::sleep(options.latency).await;
                }
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if io.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    let unstuffed = if line.starts_with(b"..") { &line[1..] } else { &line[..] };
                    data.extend_from_slice(unstuffed);
                }
                let (mail_from, mail_params) = mail.take().unwrap_or_default();
                let eight_bit_declared = mail_params.iter().any(|p| p == "BODY=8BITMIME");
                let head_end = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(data.len());
                // Undeclared 8-bit is recorded; where the sink did not offer it, refused.
                let mut refusal = None;
                if !data.is_ascii() && !eight_bit_declared {
                    violation("8-bit data without BODY=8BITMIME".into());
                    if !options.eight_bit_mime {
                        refusal = Some("554 5.6.0 8-bit data, and 8BITMIME was not offered");
                    }
                }
                if !data[..head_end].is_ascii() && !mail_params.iter().any(|p| p == "SMTPUTF8") {
                    violation("8-bit header without SMTPUTF8".into());
                    if !options.smtputf8 {
                        refusal = Some("554 5.6.7 8-bit header, and SMTPUTF8 was not offered");
                    }
                }
                if let Some(max) = options.size
                    && data.len() > max
                {
                    refusal = Some("552 5.3.4 message too big");
                }
                if let Some(max) = options.max_line
                    && let Some(len) = data
                        .split(|b| *b == b'\n')
                        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
                        .find(|len| *len > max)
                {
                    violation(format!("a line of {len} octets"));
                    refusal = Some("554 5.6.0 message has a line longer than the limit (RFC 5322 2.1.1)");
                }
                if !options.data_reply_delay.is_zero() {
                    tokio::time::sleep(options.data_reply_delay).await;
                }
                let seen = {
                    let mut s = shared.lock().unwrap();
                    s.data_ends += 1;
                    s.data_ends
                };
                if seen <= options.stall_first.0 {
                    tokio::time::sleep(options.stall_first.1).await;
                }
                transaction.end();
                let mut s = shared.lock().unwrap();
                s.attempts += 1;
                let r = match refusal {
                    Some(r) => r.to_owned(),
                    None => s.script.pop_front().unwrap_or_else(|| "250 2.0.0 queued".into()),
                };
                if r.starts_with('2') {
                    s.delivered.push(Delivered {
                        mail_from,
                        rcpt_to: rcpts.clone(),
                        data,
                        tls,
                        auth_user: auth_user.clone(),
                        mail_params,
                        connection,
                    });
                }
                r
            }
        } else if upper == "QUIT" {
            reply(&mut io, "221 bye").await?;
            return Ok(());
        } else {
            "502 5.5.2 not implemented".into()
        };
        reply(&mut io, &r).await?;
    }
}

async fn reply(io: &mut BufReader<Box<dyn Stream>>, text: &str) -> std::io::Result<()> {
    let w = io.get_mut();
    w.write_all(format!("{text}\r\n").as_bytes()).await?;
    w.flush().await
}

/// AUTH PLAIN (with or without an initial response) or LOGIN: the user and password.
async fn login(io: &mut BufReader<Box<dyn Stream>>, cmd: &str) -> std::io::Result<Option<(String, String)>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut words = cmd.split_whitespace().skip(1);
    let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
    let initial = words.next().map(str::to_owned);
    let next_line = async |io: &mut BufReader<Box<dyn Stream>>, prompt: &str| -> std::io::Result<String> {
        reply(io, prompt).await?;
        let mut l = String::new();
        io.read_line(&mut l).await?;
        Ok(l.trim_end().to_owned())
    };
    let decode = |s: &str| b64.decode(s).ok().and_then(|b| String::from_utf8(b).ok());
    Ok(match mechanism.as_str() {
        "PLAIN" => {
            let token = match initial {
                Some(t) => t,
                None => next_line(io, "334 ").await?,
            };
            decode(&token).and_then(|t| {
                let mut parts = t.split('\0').skip(1);
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
        }
        "LOGIN" => {
            let user = next_line(io, "334 VXNlcm5hbWU6").await?;
            let password = next_line(io, "334 UGFzc3dvcmQ6").await?;
            decode(&user).zip(decode(&password))
        }
        _ => None,
    })
}
