//! The SMTP client of egress (RFC 5321): one connection to one next hop. It reads replies
//! with smtp-proto's parser, pipelines MAIL/RCPT/DATA when the server offers PIPELINING
//! (RFC 2920), upgrades with STARTTLS (RFC 3207) or starts in TLS, authenticates with
//! AUTH PLAIN or LOGIN (RFC 4954, 4616), declares SIZE (RFC 1870), BODY=8BITMIME
//! (RFC 6152) and SMTPUTF8 (RFC 6531), and gives every stage its own timeout
//! (RFC 5321 4.5.3.2). A connection is reused for the next message; after a failed
//! transaction the next one starts with RSET, pipelined in front of its MAIL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::ClientConfig;
use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{DeliveryError, Reply, Stage, Status, tls};
use crate::config::Egress;

/// How long each stage may take. The defaults are RFC 5321 4.5.3.2's minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect (and an implicit TLS handshake).
    pub connect: Duration,
    /// Each reply outside DATA: the greeting, EHLO, STARTTLS, AUTH, RSET, MAIL, RCPT
    /// (4.5.3.2.1-3: 5 minutes).
    pub command: Duration,
    /// The 354 reply to DATA (4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each block of the message written (4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// The reply after the final dot (4.5.3.2.6: 10 minutes).
    pub data_done: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_done: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// The `egress.*_timeout_secs` keys.
    pub fn from_config(config: &Egress) -> Self {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        Self {
            connect: secs(config.connect_timeout_secs),
            command: secs(config.command_timeout_secs),
            data_init: secs(config.data_timeout_secs),
            data_block: secs(config.data_block_timeout_secs),
            data_done: secs(config.data_done_timeout_secs),
        }
    }

    fn for_reply(&self, stage: Stage) -> Duration {
        match stage {
            Stage::Data => self.data_init,
            Stage::DataEnd => self.data_done,
            _ => self.command,
        }
    }
}

/// What a connection does about TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Never: a next hop on the same host or a private network.
    Plain,
    /// STARTTLS when offered, any certificate accepted (MX delivery, RFC 7435).
    Opportunistic,
    /// STARTTLS required, certificate verified (a smarthost).
    Starttls,
    /// TLS from the first byte, certificate verified (a smarthost on port 465, RFC 8314).
    Implicit,
}

/// A login at the next hop. Its Debug output hides the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

/// How to open connections: shared by every destination of one dispatcher.
#[derive(Clone)]
pub struct Settings {
    /// The name in EHLO.
    pub hello: String,
    pub timeouts: Timeouts,
    /// Used for `TlsMode::Opportunistic`.
    pub opportunistic_tls: Arc<ClientConfig>,
    /// Used for `TlsMode::Starttls` and `TlsMode::Implicit`.
    pub verified_tls: Option<Arc<ClientConfig>>,
    /// AUTH after EHLO (and after TLS).
    pub credentials: Option<Credentials>,
    /// Whether credentials may go over a connection that is not encrypted.
    pub plaintext_auth: bool,
}

/// What the next hop said it supports in its EHLO reply (after TLS, when TLS was used).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    /// RFC 1870: the largest message it takes; `Some(0)` when it names no fixed limit.
    pub size: Option<u64>,
    pub auth_plain: bool,
    pub auth_login: bool,
}

impl Capabilities {
    /// Reads the keyword lines of an EHLO reply (the first line is the server's name).
    fn parse(ehlo: &str) -> Self {
        let mut caps = Self::default();
        for line in ehlo.lines().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                // "AUTH=LOGIN" is how some older servers say it.
                k if k == "AUTH" || k.starts_with("AUTH=") => {
                    let first = k.strip_prefix("AUTH=").filter(|m| !m.is_empty());
                    for mechanism in
                        first.map(str::to_owned).into_iter().chain(words.map(str::to_ascii_uppercase))
                    {
                        match mechanism.as_str() {
                            "PLAIN" => caps.auth_plain = true,
                            "LOGIN" => caps.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }

    /// The largest message the next hop accepts, when it names one.
    pub fn max_size(&self) -> Option<u64> {
        self.size.filter(|n| *n > 0)
    }
}

/// One message to send: the envelope and the exact bytes (already fitted to the next hop
/// and signed), with what MAIL FROM must declare about them.
#[derive(Debug)]
pub struct Transaction<'a> {
    /// Empty for the null reverse-path `<>` of notices.
    pub mail_from: &'a str,
    pub rcpt_to: &'a str,
    pub message: &'a [u8],
    /// BODY=8BITMIME (RFC 6152): the message has octets above 127.
    pub eight_bit: bool,
    /// SMTPUTF8 (RFC 6531): the envelope or the headers are UTF-8.
    pub smtputf8: bool,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the stream moves from `Plain` to `Tls`.
    Closed,
}

impl Io {
    async fn read_into(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read_buf(buf).await,
            Io::Tls(s) => s.read_buf(buf).await,
            Io::Closed => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.write_all(bytes).await,
            Io::Tls(s) => s.write_all(bytes).await,
            Io::Closed => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.flush().await,
            Io::Tls(s) => s.flush().await,
            Io::Closed => Ok(()),
        }
    }
}

/// A message is written in blocks of this size, each under `Timeouts::data_block`.
const DATA_BLOCK: usize = 64 * 1024;

/// An open SMTP session, greeted (and encrypted and authenticated where asked).
pub struct Connection {
    io: Io,
    /// Bytes read and not yet parsed: `buf[start..]`.
    buf: Vec<u8>,
    start: usize,
    replies: ResponseReceiver,
    capabilities: Capabilities,
    timeouts: Timeouts,
    encrypted: bool,
    /// The last transaction did not finish cleanly: the next one begins with RSET.
    needs_reset: bool,
    /// An I/O error, a timeout, an unreadable reply or a 421: never use it again.
    broken: bool,
}

impl Connection {
    /// Connects to `addr` (`host` names it for TLS), reads the greeting, says EHLO, and
    /// does TLS and AUTH as `tls` and `settings` ask.
    pub async fn open(
        host: &str,
        addr: SocketAddr,
        mode: TlsMode,
        settings: &Settings,
    ) -> Result<Self, DeliveryError> {
        let timeouts = settings.timeouts;
        let deadline = Instant::now() + timeouts.connect;
        let tcp = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(DeliveryError::unreachable(Stage::Connect, e.to_string())),
            Err(_) => return Err(DeliveryError::unreachable(Stage::Connect, "timed out")),
        };
        // Commands and replies are small writes: with Nagle's algorithm on, each would wait
        // for the peer's delayed ACK (~40 ms on Linux) whenever one is still unacknowledged.
        tcp.set_nodelay(true).map_err(|e| DeliveryError::unreachable(Stage::Connect, e.to_string()))?;
        let io = match mode {
            TlsMode::Implicit => {
                let config = verified(settings)?;
                Io::Tls(Box::new(handshake(tcp, host, config, deadline).await?))
            }
            _ => Io::Plain(tcp),
        };
        let mut conn = Self {
            io,
            buf: Vec::with_capacity(4096),
            start: 0,
            replies: ResponseReceiver::default(),
            capabilities: Capabilities::default(),
            timeouts,
            encrypted: mode == TlsMode::Implicit,
            needs_reset: false,
            broken: false,
        };
        let greeting = conn.read_reply(Stage::Greeting).await?;
        // RFC 5321 4.3.2: 220, or 554 when it will not talk to us.
        if greeting.code != 220 {
            return Err(DeliveryError::Refused { stage: Stage::Greeting, reply: greeting });
        }
        conn.ehlo(&settings.hello).await?;
        match mode {
            TlsMode::Opportunistic if conn.capabilities.starttls => {
                let config = settings.opportunistic_tls.clone();
                match conn.starttls(host, config, &settings.hello).await {
                    // RFC 3207 4: a server that declines STARTTLS (454) can still take
                    // the mail in the clear, on this same session.
                    Err(DeliveryError::Refused { stage: Stage::StartTls, .. }) if conn.is_usable() => {}
                    other => other?,
                }
            }
            TlsMode::Starttls if !conn.capabilities.starttls => {
                return Err(DeliveryError::local(
                    Status::new(4, 7, 4),
                    "the next hop does not offer STARTTLS, which egress.smarthost_tls = \"starttls\" requires",
                ));
            }
            TlsMode::Starttls => {
                let config = verified(settings)?;
                conn.starttls(host, config, &settings.hello).await?;
            }
            _ => {}
        }
        if let Some(credentials) = &settings.credentials {
            conn.authenticate(credentials, settings.plaintext_auth).await?;
        }
        Ok(conn)
    }

    /// What the next hop supports.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Whether the session runs over TLS.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// Whether it can carry another message.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Sends one message. The reply is the next hop's 2xx after the final dot.
    pub async fn send(&mut self, tx: &Transaction<'_>) -> Result<Reply, DeliveryError> {
        let mut params = String::new();
        if tx.eight_bit {
            params.push_str(" BODY=8BITMIME");
        }
        if tx.smtputf8 {
            params.push_str(" SMTPUTF8");
        }
        if self.capabilities.size.is_some() {
            // RFC 1870 4: the size the server can refuse at MAIL instead of after DATA.
            params.push_str(&format!(" SIZE={}", tx.message.len()));
        }
        let mut commands = Vec::with_capacity(4);
        if self.needs_reset {
            commands.push((Stage::Rset, "RSET\r\n".to_owned()));
        }
        commands.push((Stage::MailFrom, format!("MAIL FROM:<{}>{params}\r\n", path(tx.mail_from)?)));
        commands.push((Stage::RcptTo, format!("RCPT TO:<{}>\r\n", path(tx.rcpt_to)?)));
        commands.push((Stage::Data, "DATA\r\n".to_owned()));
        // Until the final reply says otherwise, the transaction may be left half-done.
        self.needs_reset = true;
        if self.capabilities.pipelining {
            self.pipelined(&commands).await?;
        } else {
            for (stage, command) in &commands {
                self.write(command.as_bytes(), *stage, self.timeouts.command).await?;
                let reply = self.read_reply(*stage).await?;
                if !accepts(*stage, &reply) {
                    return Err(DeliveryError::Refused { stage: *stage, reply });
                }
            }
        }
        self.write_data(&data_payload(tx.message)).await?;
        let reply = self.read_reply(Stage::DataEnd).await?;
        if !accepts(Stage::DataEnd, &reply) {
            return Err(DeliveryError::Refused { stage: Stage::DataEnd, reply });
        }
        self.needs_reset = false;
        Ok(reply)
    }

    /// RFC 2920: all commands in one write, then their replies in order. A refused MAIL or
    /// RCPT is reported even when DATA was accepted anyway (3.1: then the client ends
    /// that DATA with a lone dot).
    async fn pipelined(&mut self, commands: &[(Stage, String)]) -> Result<(), DeliveryError> {
        let batch: String = commands.iter().map(|(_, c)| c.as_str()).collect();
        self.write(batch.as_bytes(), commands[0].0, self.timeouts.command).await?;
        let mut refused = None;
        let mut data_accepted = false;
        for (stage, _) in commands {
            let reply = self.read_reply(*stage).await?;
            if !accepts(*stage, &reply) {
                refused.get_or_insert(DeliveryError::Refused { stage: *stage, reply });
            } else if *stage == Stage::Data {
                data_accepted = true;
            }
        }
        match refused {
            None => Ok(()),
            Some(e) => {
                if data_accepted {
                    self.write(b".\r\n", Stage::DataEnd, self.timeouts.data_block).await?;
                    self.read_reply(Stage::DataEnd).await?;
                }
                Err(e)
            }
        }
    }

    /// Ends the session politely; errors do not matter any more.
    pub async fn quit(mut self) {
        if self.broken {
            return;
        }
        if self.write(b"QUIT\r\n", Stage::Quit, Duration::from_secs(5)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.read_reply(Stage::Quit)).await;
        }
    }

    async fn ehlo(&mut self, hello: &str) -> Result<(), DeliveryError> {
        self.write(format!("EHLO {hello}\r\n").as_bytes(), Stage::Ehlo, self.timeouts.command).await?;
        let reply = self.read_reply(Stage::Ehlo).await?;
        if reply.code == 250 {
            self.capabilities = Capabilities::parse(&reply.text);
            return Ok(());
        }
        if reply.code < 500 {
            return Err(DeliveryError::Refused { stage: Stage::Ehlo, reply });
        }
        // RFC 5321 3.2: a server that does not know EHLO still knows HELO.
        self.write(format!("HELO {hello}\r\n").as_bytes(), Stage::Ehlo, self.timeouts.command).await?;
        let reply = self.read_reply(Stage::Ehlo).await?;
        if reply.code != 250 {
            return Err(DeliveryError::Refused { stage: Stage::Ehlo, reply });
        }
        self.capabilities = Capabilities::default();
        Ok(())
    }

    async fn starttls(
        &mut self,
        host: &str,
        config: Arc<ClientConfig>,
        hello: &str,
    ) -> Result<(), DeliveryError> {
        self.write(b"STARTTLS\r\n", Stage::StartTls, self.timeouts.command).await?;
        let reply = self.read_reply(Stage::StartTls).await?;
        if reply.code != 220 {
            return Err(DeliveryError::Refused { stage: Stage::StartTls, reply });
        }
        // RFC 3207 4.2 (and CVE-2011-0411): whatever came after the 220 was sent in the
        // clear, and must not be read as if it had come through TLS.
        if self.start < self.buf.len() {
            self.broken = true;
            return Err(DeliveryError::unreachable(
                Stage::StartTls,
                "the server sent data before the TLS handshake",
            ));
        }
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Closed) else {
            self.broken = true;
            return Err(DeliveryError::unreachable(Stage::StartTls, "the session is already encrypted"));
        };
        let deadline = Instant::now() + self.timeouts.command;
        let stream = handshake(tcp, host, config, deadline).await.inspect_err(|_| self.broken = true)?;
        self.io = Io::Tls(Box::new(stream));
        self.encrypted = true;
        // RFC 3207 4.2: forget what was learnt before TLS and ask again.
        self.capabilities = Capabilities::default();
        self.ehlo(hello).await
    }

    async fn authenticate(&mut self, login: &Credentials, plaintext_ok: bool) -> Result<(), DeliveryError> {
        if !self.encrypted && !plaintext_ok {
            return Err(DeliveryError::local(
                Status::new(4, 7, 11),
                "credentials are sent only over TLS: set egress.smarthost_tls, or egress.smarthost_auth_plaintext = true",
            ));
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let t = self.timeouts.command;
        let reply = if self.capabilities.auth_plain {
            // RFC 4616 2: authzid NUL authcid NUL passwd, sent as the initial response.
            let token = b64(&format!("\0{}\0{}", login.user, login.password));
            self.write(format!("AUTH PLAIN {token}\r\n").as_bytes(), Stage::Auth, t).await?;
            self.read_reply(Stage::Auth).await?
        } else if self.capabilities.auth_login {
            self.write(b"AUTH LOGIN\r\n", Stage::Auth, t).await?;
            let mut reply = self.read_reply(Stage::Auth).await?;
            for answer in [&login.user, &login.password] {
                if reply.code != 334 {
                    break;
                }
                self.write(format!("{}\r\n", b64(answer)).as_bytes(), Stage::Auth, t).await?;
                reply = self.read_reply(Stage::Auth).await?;
            }
            reply
        } else {
            return Err(DeliveryError::local(
                Status::new(4, 7, 0),
                "the next hop offers neither AUTH PLAIN nor AUTH LOGIN, and egress.smarthost_user is set",
            ));
        };
        if reply.code != 235 {
            return Err(DeliveryError::Refused { stage: Stage::Auth, reply });
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8], stage: Stage, limit: Duration) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + limit;
        let written = timeout_at(deadline, async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await;
        self.io_result(written, stage)
    }

    /// The message in blocks, each with its own deadline (RFC 5321 4.5.3.2.5).
    async fn write_data(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        for block in payload.chunks(DATA_BLOCK) {
            let deadline = Instant::now() + self.timeouts.data_block;
            let written = timeout_at(deadline, self.io.write_all(block)).await;
            self.io_result(written, Stage::Message)?;
        }
        let deadline = Instant::now() + self.timeouts.data_block;
        let flushed = timeout_at(deadline, self.io.flush()).await;
        self.io_result(flushed, Stage::Message)
    }

    fn io_result(
        &mut self,
        result: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
        stage: Stage,
    ) -> Result<(), DeliveryError> {
        let reason = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.broken = true;
        Err(DeliveryError::unreachable(stage, reason))
    }

    /// The next complete reply, within the stage's timeout.
    async fn read_reply(&mut self, stage: Stage) -> Result<Reply, DeliveryError> {
        let deadline = Instant::now() + self.timeouts.for_reply(stage);
        loop {
            if self.start < self.buf.len() {
                let mut bytes = self.buf[self.start..].iter();
                let before = bytes.len();
                let parsed = self.replies.parse(&mut bytes);
                self.start += before - bytes.len();
                match parsed {
                    Ok(response) => {
                        self.replies.reset();
                        let reply = Reply::from_parts(response.code, response.esc, response.message);
                        // RFC 5321 3.8: 421 means the server is closing the session.
                        if reply.code == 421 {
                            self.broken = true;
                        }
                        return Ok(reply);
                    }
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => {}
                    Err(e) => {
                        self.broken = true;
                        return Err(DeliveryError::unreachable(stage, format!("unreadable reply ({e:?})")));
                    }
                }
            }
            if self.start >= self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            self.buf.reserve(4096);
            let read = match timeout_at(deadline, self.io.read_into(&mut self.buf)).await {
                Ok(Ok(0)) => Err("connection closed".to_owned()),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            if let Err(reason) = read {
                self.broken = true;
                return Err(DeliveryError::unreachable(stage, reason));
            }
        }
    }
}

fn verified(settings: &Settings) -> Result<Arc<ClientConfig>, DeliveryError> {
    settings.verified_tls.clone().ok_or_else(|| {
        DeliveryError::local(Status::new(4, 7, 0), "no trusted roots for a verified TLS connection")
    })
}

async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, DeliveryError> {
    let name = tls::server_name(host).ok_or_else(|| {
        DeliveryError::local(Status::new(4, 7, 0), "the next hop's name cannot be used for TLS")
    })?;
    match timeout_at(deadline, TlsConnector::from(config).connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(DeliveryError::unreachable(Stage::TlsHandshake, e.to_string())),
        Err(_) => Err(DeliveryError::unreachable(Stage::TlsHandshake, "timed out")),
    }
}

/// Whether a reply lets the transaction go on.
fn accepts(stage: Stage, reply: &Reply) -> bool {
    match stage {
        Stage::Data => reply.code == 354,
        _ => (200..300).contains(&reply.code),
    }
}

/// An envelope address as it goes between the angle brackets. It comes from the queue,
/// but nothing that could end the command line or the path gets onto the wire.
fn path(address: &str) -> Result<&str, DeliveryError> {
    if address.bytes().any(|b| b.is_ascii_control() || matches!(b, b'<' | b'>' | b' ')) {
        return Err(DeliveryError::local(
            Status::new(5, 1, 3),
            "an envelope address holds characters SMTP cannot carry",
        ));
    }
    Ok(address)
}

/// The DATA payload: every line that starts with a dot gets one more (RFC 5321 4.5.2),
/// the message ends with CRLF, then the end-of-data line. One buffer, one write.
fn data_payload(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 256 + 8);
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_stuffed_and_the_message_is_terminated() {
        assert_eq!(data_payload(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(data_payload(b".\r\nx"), b"..\r\nx\r\n.\r\n");
        assert_eq!(data_payload(b""), b".\r\n");
    }

    #[test]
    fn ehlo_keywords_are_read() {
        let caps = Capabilities::parse(
            "mx.example greets you\nPIPELINING\nSIZE 1000\n8bitmime\nAUTH LOGIN PLAIN\nSTARTTLS\nSMTPUTF8",
        );
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                size: Some(1000),
                auth_plain: true,
                auth_login: true,
            }
        );
        assert_eq!(Capabilities::parse("mx.example\nSIZE").max_size(), None);
        assert!(Capabilities::parse("mx.example\nAUTH=LOGIN").auth_login);
        // The greeting line is the server's name, never a keyword.
        assert_eq!(Capabilities::parse("PIPELINING"), Capabilities::default());
    }

    #[test]
    fn envelope_paths_cannot_inject_commands() {
        assert!(path("a@b.example").is_ok());
        assert!(path("").is_ok());
        assert!(path("a@b.example>\r\nRCPT TO:<c@d.example").is_err());
    }
}
