//! A raw SMTP client for tests: sends exactly the bytes a test gives and returns the
//! replies, so tests can assert on codes the way a sending MTA sees them.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

/// A full reply: code and all its lines.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Client {
    /// Connects and reads the greeting.
    pub async fn connect(addr: std::net::SocketAddr) -> (Self, Reply) {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (r, w) = s.into_split();
        let mut c = Self { r: BufReader::new(r), w };
        let greeting = c.read_reply().await.expect("greeting");
        (c, greeting)
    }

    /// Connects, EHLOs.
    pub async fn ready(addr: std::net::SocketAddr) -> Self {
        let (mut c, g) = Self::connect(addr).await;
        assert_eq!(g.code, 220, "{}", g.text);
        c.cmd("EHLO client.test", 250).await;
        c
    }

    pub async fn read_reply(&mut self) -> Option<Reply> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.r.read_line(&mut line))
                .await
                .expect("reply within 20 s")
                .ok()?;
            if n == 0 {
                return if text.is_empty() { None } else { Some(Reply { code: 0, text }) };
            }
            text.push_str(&line);
            if line.len() >= 4 && line.as_bytes()[3] == b' ' || line.len() == 5 {
                let code = line[..3].parse().ok()?;
                return Some(Reply { code, text });
            }
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("write");
    }

    /// Sends one command and asserts the reply code.
    pub async fn cmd(&mut self, line: &str, expect: u16) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        let r = self.read_reply().await.unwrap_or_else(|| panic!("no reply to {line}"));
        assert_eq!(r.code, expect, "{line} -> {}", r.text);
        r
    }

    /// DATA, the message (dot-stuffed here), the end; returns the final reply.
    pub async fn data(&mut self, message: &[u8]) -> Reply {
        self.cmd("DATA", 354).await;
        self.send_raw(&data_wire(message)).await;
        self.read_reply().await.expect("reply to end of data")
    }

    /// MAIL, RCPT (each must be accepted), DATA; returns the reply to the data.
    pub async fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> Reply {
        self.cmd(&format!("MAIL FROM:<{from}>"), 250).await;
        for t in to {
            self.cmd(&format!("RCPT TO:<{t}>"), 250).await;
        }
        self.data(message).await
    }
}

/// What goes on the wire after 354 for `message`: dot-stuffed, CRLF-terminated, then the
/// ending ".\r\n" (for tests that pipeline or write the data themselves).
pub fn data_wire(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            wire.push(b'.');
        }
        wire.push(b);
        at_line_start = b == b'\n';
    }
    if !wire.ends_with(b"\r\n") {
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}
