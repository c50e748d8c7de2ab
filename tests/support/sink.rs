//! A real SMTP sink on loopback: accepts mail over TCP like a next-hop MTA would and keeps
//! what it received, so tests can assert on the delivered bytes. Its DATA replies can be
//! scripted (e.g. 451 first, then 250) to play a failing next hop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message bytes, dot-stuffing undone, without the final ".".
    pub data: Vec<u8>,
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

#[derive(Default)]
struct Shared {
    delivered: Vec<Delivered>,
    /// Replies to give at the end of DATA, in order; "250 ok" once empty.
    script: VecDeque<String>,
    /// DATA attempts seen, accepted or not.
    attempts: usize,
}

/// A running sink.
pub struct Sink {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// On a given address (to come back on the same port after a "restart").
    pub async fn start_on(addr: &str) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind sink");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = session(stream, s).await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// Replies for the next DATA commands, e.g. `["451 4.3.0 try later"]`.
    pub fn script(&self, replies: &[&str]) {
        self.shared.lock().unwrap().script = replies.iter().map(|s| s.to_string()).collect();
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.lock().unwrap().delivered.clone()
    }

    pub fn attempts(&self) -> usize {
        self.shared.lock().unwrap().attempts
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

async fn session(stream: tokio::net::TcpStream, shared: Arc<Mutex<Shared>>) -> std::io::Result<()> {
    // Replies are small writes: without TCP_NODELAY, Nagle and delayed ACKs stall each
    // command by up to 200 ms, and the sink, not the relay, would be what gets measured.
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut mail_from = String::new();
    let mut rcpts = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let cmd = String::from_utf8_lossy(&line).trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8".into()
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            "250 ok".into()
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = cmd[10..].split_whitespace().next().unwrap_or("").trim_matches(['<', '>']).to_owned();
            rcpts.clear();
            "250 ok".into()
        } else if upper.starts_with("RCPT TO:") {
            rcpts.push(cmd[8..].split_whitespace().next().unwrap_or("").trim_matches(['<', '>']).to_owned());
            "250 ok".into()
        } else if upper == "RSET" {
            rcpts.clear();
            "250 ok".into()
        } else if upper == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" {
                    break;
                }
                let unstuffed = if line.starts_with(b"..") { &line[1..] } else { &line[..] };
                data.extend_from_slice(unstuffed);
            }
            let mut s = shared.lock().unwrap();
            s.attempts += 1;
            let reply = s.script.pop_front().unwrap_or_else(|| "250 2.0.0 queued".into());
            if reply.starts_with('2') {
                s.delivered.push(Delivered { mail_from: mail_from.clone(), rcpt_to: rcpts.clone(), data });
            }
            reply
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "502 not implemented".into()
        };
        w.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}
