//! One SMTP connection: a state machine over any byte stream (a TCP socket in production,
//! an in-memory duplex in tests). Commands are parsed by smtp-proto one at a time, so
//! pipelined commands are answered in order and replies are flushed once per batch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use smtp_proto::request::receiver::MAX_LINE_LENGTH;
use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::Listener;
use super::backend::{Backend, DataBudget, Reservation};
use super::clock::Clock;
use super::data::{DataError, DataReader, Progress};
use super::heap;
use super::hygiene::{self, Screened};
use super::reply::{self, Reply};
use super::transaction::Transaction;
use crate::address::{Mailbox, Side, StoreId};
use crate::auth::{Authorizer, Decision};
use crate::config::Config;
use crate::shutdown::Shutdown;

/// Where the conversation is.
#[derive(Debug)]
enum Phase {
    /// Connected, no EHLO/HELO yet.
    Fresh,
    Greeted,
    /// MAIL accepted, no recipient yet.
    Mail(Transaction),
    /// At least one recipient accepted.
    Rcpt(Transaction),
}

/// What the loop does after a command.
enum Flow {
    Continue,
    Data(Transaction),
    StartTls,
    Close,
}

/// How `serve` ended.
enum Ended {
    Closed,
    StartTls,
}

/// A byte stream a session runs over: TCP, TLS over TCP, or an in-memory duplex.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// What every session is set up with besides its backend: the limits and names, who may
/// write where, and TLS.
#[derive(Clone)]
pub struct Setup {
    pub config: Arc<Config>,
    pub auth: Authorizer,
    /// Present when a certificate is configured: STARTTLS is offered.
    pub tls: Option<TlsAcceptor>,
    /// `smtp.data_memory_bytes`: room for messages being received, shared by every session
    /// of the relay.
    pub data_memory: DataBudget,
}

impl Setup {
    /// A setup with a data budget of its own, sized by the config (`smtp.data_memory_bytes`).
    pub fn new(config: Arc<Config>, auth: Authorizer, tls: Option<TlsAcceptor>) -> Self {
        let data_memory = DataBudget::new(config.smtp.data_memory_bytes);
        Self { config, auth, tls, data_memory }
    }
}

/// Serves one connection until QUIT, an error limit, a timeout or shutdown.
pub async fn run<S, B>(
    io: S,
    peer: SocketAddr,
    listener: Listener,
    setup: Arc<Setup>,
    backend: Arc<B>,
    shutdown: Shutdown,
) where
    S: Io + 'static,
    B: Backend,
{
    let setup_smtp = setup.config.smtp.clone();
    let mut session = Session {
        io: Box::new(io),
        setup,
        backend,
        peer,
        listener,
        secure: false,
        login: None,
        phase: Phase::Fresh,
        input: Vec::with_capacity(4096),
        output: Vec::with_capacity(512),
        errors: 0,
        clock: Clock::new(&setup_smtp),
        discarding: false,
        room: None,
        commands: 0,
        helo: String::new(),
        shutdown,
    };
    let greeting = Reply::new(220, format!("{} ESMTP maskrelay", session.setup.config.smtp_hostname()));
    greeting.write_to(&mut session.output);
    if session.flush().await.is_err() {
        return;
    }
    while let Ok(Ended::StartTls) = session.serve().await {
        if !session.start_tls().await {
            return;
        }
    }
}

struct Session<B> {
    io: Box<dyn Io>,
    setup: Arc<Setup>,
    backend: Arc<B>,
    peer: SocketAddr,
    listener: Listener,
    /// Inside TLS (after STARTTLS).
    secure: bool,
    /// The store a submission session logged in as.
    login: Option<StoreId>,
    phase: Phase,
    /// Bytes read but not yet consumed.
    input: Vec<u8>,
    /// Replies not yet written (flushed before every read: RFC 2920 3.1).
    output: Vec<u8>,
    errors: usize,
    clock: Clock,
    /// Inside a command line already known to be too long: dropped up to its LF.
    discarding: bool,
    /// The open transaction's room in the data budget (the SIZE declared at MAIL); given
    /// back when the transaction ends, however it ends.
    room: Option<Reservation>,
    commands: usize,
    /// The name the client gave in EHLO/HELO (for SPF).
    helo: String,
    shutdown: Shutdown,
}

impl<B: Backend> Session<B> {
    /// RFC 3207 4.2: after the handshake the session starts over, knowing nothing the
    /// client said before it; the input was already emptied when STARTTLS was accepted.
    async fn start_tls(&mut self) -> bool {
        let Some(acceptor) = self.setup.tls.clone() else { return false };
        let plain =
            std::mem::replace(&mut self.io, Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())));
        let timeout = Duration::from_secs(self.setup.config.smtp.idle_timeout_secs);
        match tokio::time::timeout(timeout, acceptor.accept(plain)).await {
            Ok(Ok(tls)) => {
                self.io = Box::new(tls);
                self.secure = true;
                self.phase = Phase::Fresh;
                self.room = None;
                self.helo.clear();
                self.input.clear();
                true
            }
            _ => {
                debug!(peer = %self.peer, "TLS handshake failed");
                false
            }
        }
    }

    async fn serve(&mut self) -> std::io::Result<Ended> {
        loop {
            // Commands go to the parser as whole lines only, and the line limit is kept
            // here: smtp-proto checks it only for a line it buffers across reads, so a
            // long line arriving in one read would be parsed, and a long one split
            // across reads would have its tail parsed as a second command. An overlong
            // line is dropped up to its LF and gets exactly one reply.
            let Some(lf) = self.input.iter().position(|&b| b == b'\n') else {
                if self.discarding || self.input.len() >= MAX_LINE_LENGTH {
                    self.input.clear();
                    self.discarding = true;
                }
                if !self.fill_command().await? {
                    return Ok(Ended::Closed);
                }
                continue;
            };
            self.clock.command_read();
            if self.discarding || lf >= MAX_LINE_LENGTH {
                self.input.drain(..=lf);
                self.discarding = false;
                if let Flow::Close = self.error(reply::LINE_TOO_LONG) {
                    self.flush().await?;
                    return Ok(Ended::Closed);
                }
                continue;
            }
            match hygiene::screen(&self.input[..lf]) {
                Some(Screened::Http) => {
                    debug!(peer = %self.peer, "HTTP request on the SMTP port");
                    self.reply(reply::NOT_HTTP);
                    self.flush().await?;
                    return Ok(Ended::Closed);
                }
                Some(Screened::BareCr) => {
                    self.input.drain(..=lf);
                    if let Flow::Close = self.error(reply::BARE_CR) {
                        self.flush().await?;
                        return Ok(Ended::Closed);
                    }
                    continue;
                }
                None => {}
            }
            // The parser sees this one line and nothing after it, and the line is consumed
            // whole: smtp-proto reads on past the LF of some malformed lines (`RCPT TO` with
            // no colon looks for it on the next line), which swallowed the next pipelined
            // command without a reply. Every command line gets exactly one reply.
            let parsed = Request::parse(&mut self.input[..=lf].iter()).map(Request::into_owned);
            self.input.drain(..=lf);
            let flow = match parsed {
                Ok(request) => {
                    self.commands += 1;
                    if self.commands > self.setup.config.smtp.max_commands {
                        self.reply(reply::TOO_MANY_COMMANDS);
                        Flow::Close
                    } else {
                        self.command(request).await
                    }
                }
                // The whole line is here: what the parser still wanted is missing from it.
                Err(ProtoError::NeedsMoreData { .. }) => self.error(reply::INCOMPLETE_COMMAND),
                Err(e) => self.syntax_error(e),
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    self.flush().await?;
                    return Ok(Ended::Closed);
                }
                Flow::StartTls => {
                    self.flush().await?;
                    return Ok(Ended::StartTls);
                }
                Flow::Data(tx) => {
                    let reply = self.data(tx).await?;
                    self.reply(reply);
                    self.phase = Phase::Greeted;
                }
            }
            if !matches!(self.phase, Phase::Mail(_) | Phase::Rcpt(_)) {
                self.clock.transaction_closed();
                self.room = None;
            }
        }
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.io.write_all(&self.output).await?;
            self.io.flush().await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Flushes pending replies, then reads more input. False when the client is gone, a
    /// deadline passed (see `clock`) or the relay is shutting down.
    async fn fill(&mut self) -> std::io::Result<bool> {
        self.flush().await?;
        let (deadline, why) = self.clock.deadline(Instant::now());
        let mut buf = [0u8; 8192];
        let mut shutdown = self.shutdown.clone();
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, self.io.read(&mut buf)) => r,
            _ = shutdown.wait() => {
                self.reply(reply::SHUTTING_DOWN);
                self.flush().await?;
                return Ok(false);
            }
        };
        match read {
            Err(_elapsed) => {
                debug!(peer = %self.peer, reason = %why.text, "deadline passed");
                self.reply(why);
                self.flush().await?;
                Ok(false)
            }
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                self.input.extend_from_slice(&buf[..n]);
                self.clock.data_received(n);
                Ok(true)
            }
            Ok(Err(e)) => Err(e),
        }
    }

    /// Reads more of a command line: its deadline runs from the first wait.
    async fn fill_command(&mut self) -> std::io::Result<bool> {
        self.clock.awaiting_command(Instant::now());
        self.fill().await
    }

    fn error(&mut self, reply: Reply) -> Flow {
        self.errors += 1;
        self.reply(reply);
        if self.errors >= self.setup.config.smtp.max_errors {
            self.reply(reply::TOO_MANY_ERRORS);
            return Flow::Close;
        }
        Flow::Continue
    }

    fn syntax_error(&mut self, e: ProtoError) -> Flow {
        let r = match e {
            ProtoError::UnknownCommand => reply::UNRECOGNIZED,
            ProtoError::InvalidSenderAddress => reply::BAD_SENDER,
            ProtoError::InvalidRecipientAddress => reply::BAD_RECIPIENT,
            ProtoError::SyntaxError { syntax } => Reply::new(501, format!("5.5.4 Syntax: {syntax}")),
            ProtoError::InvalidParameter { param } => {
                Reply::new(501, format!("5.5.4 Invalid parameter {param}"))
            }
            ProtoError::UnsupportedParameter { param } => {
                let param: String = param.chars().filter(|c| c.is_ascii_graphic()).take(40).collect();
                Reply::new(555, format!("5.5.4 Unsupported parameter {param}"))
            }
            ProtoError::ResponseTooLong => reply::LINE_TOO_LONG,
            _ => reply::UNRECOGNIZED,
        };
        self.error(r)
    }

    async fn command(&mut self, request: Request<String>) -> Flow {
        match request {
            Request::Ehlo { host } => {
                self.phase = Phase::Greeted;
                self.helo = host.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
                let c = &self.setup.config;
                let mut text = format!(
                    "{} greets {host}\nPIPELINING\n8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES\nSIZE {}",
                    c.smtp_hostname(),
                    c.smtp.max_message_bytes
                );
                if self.setup.tls.is_some() && !self.secure {
                    text.push_str("\nSTARTTLS");
                }
                // RFC 4954 4: no AUTH over plain text; offered only inside TLS.
                if self.listener == Listener::Submission && self.secure {
                    text.push_str("\nAUTH PLAIN LOGIN");
                }
                let text: String = text.chars().filter(|c| !c.is_control() || *c == '\n').collect();
                self.reply(Reply::new(250, text));
                Flow::Continue
            }
            Request::Helo { host } => {
                self.phase = Phase::Greeted;
                self.helo = host.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
                self.reply(Reply::new(250, self.setup.config.smtp_hostname().to_owned()));
                Flow::Continue
            }
            Request::Lhlo { .. } => self.error(reply::UNRECOGNIZED),
            Request::Mail { from } => self.mail(&from.address, from.size).await,
            Request::Rcpt { to } => self.rcpt(&to.address).await,
            Request::Data => match std::mem::replace(&mut self.phase, Phase::Greeted) {
                Phase::Rcpt(tx) => {
                    self.reply(reply::START_DATA);
                    Flow::Data(tx)
                }
                Phase::Mail(tx) => {
                    self.phase = Phase::Mail(tx);
                    self.error(reply::NO_VALID_RECIPIENTS)
                }
                Phase::Fresh => {
                    self.phase = Phase::Fresh;
                    self.error(reply::GREET_FIRST)
                }
                Phase::Greeted => self.error(reply::MAIL_FIRST),
            },
            Request::Rset => {
                if !matches!(self.phase, Phase::Fresh) {
                    self.phase = Phase::Greeted;
                }
                self.reply(reply::RESET);
                Flow::Continue
            }
            Request::Noop { .. } => {
                self.reply(reply::OK);
                Flow::Continue
            }
            Request::Quit => {
                self.reply(reply::BYE);
                Flow::Close
            }
            Request::Vrfy { .. } => {
                self.reply(reply::VRFY);
                Flow::Continue
            }
            Request::Help { .. } => {
                self.reply(reply::HELP);
                Flow::Continue
            }
            Request::StartTls => self.starttls(),
            Request::Auth { mechanism, initial_response } => self.auth(mechanism, initial_response).await,
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Bdat { .. } => self.error(reply::NOT_IMPLEMENTED),
        }
    }

    fn starttls(&mut self) -> Flow {
        if self.setup.tls.is_none() {
            return self.error(reply::NO_TLS);
        }
        if self.secure {
            return self.error(reply::ALREADY_TLS);
        }
        if matches!(self.phase, Phase::Fresh) {
            return self.error(reply::GREET_FIRST);
        }
        self.reply(reply::READY_TLS);
        // Anything pipelined behind STARTTLS was sent in the clear and could be an
        // attacker's (CVE-2011-0411): it is dropped, never run inside TLS.
        self.input.clear();
        Flow::StartTls
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        if self.listener != Listener::Submission {
            return self.error(reply::NO_AUTH);
        }
        if !self.secure {
            return self.error(reply::ENCRYPTION_REQUIRED);
        }
        if self.login.is_some() || !matches!(self.phase, Phase::Greeted) {
            return self.error(reply::BAD_SEQUENCE_AUTH);
        }
        let credentials = match mechanism {
            smtp_proto::AUTH_PLAIN => {
                let response = if initial.is_empty() { self.challenge("").await } else { Some(initial) };
                response.and_then(|r| decode_plain(&r))
            }
            smtp_proto::AUTH_LOGIN => {
                let user =
                    if initial.is_empty() { self.challenge("VXNlcm5hbWU6").await } else { Some(initial) };
                let user = user.and_then(|u| decode_b64(&u));
                match user {
                    Some(u) => {
                        self.challenge("UGFzc3dvcmQ6").await.and_then(|p| decode_b64(&p)).map(|p| (u, p))
                    }
                    None => None,
                }
            }
            _ => return self.error(reply::AUTH_MECHANISM),
        };
        let Some((user, password)) = credentials else { return self.error(reply::AUTH_CANCELLED) };
        match self.backend.verify_login(&user, &password).await {
            Ok(Some(store)) => {
                tracing::info!(store = %store, "submission login");
                self.login = Some(store);
                self.reply(reply::AUTH_OK);
                Flow::Continue
            }
            Ok(None) => {
                crate::metrics::auth_failure();
                self.error(reply::AUTH_FAILED)
            }
            Err(e) => {
                tracing::warn!(error = %e, "credential lookup failed");
                self.error(reply::AUTH_TEMPFAIL_STORAGE)
            }
        }
    }

    /// Sends a 334 challenge and reads the client's one-line answer; None if cancelled
    /// ("*", RFC 4954 4) or the client left.
    async fn challenge(&mut self, text: &'static str) -> Option<String> {
        self.reply(Reply::new(334, text));
        loop {
            if let Some(lf) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=lf).collect();
                let line = String::from_utf8(line).ok()?;
                let line = line.trim_end_matches(['\r', '\n']);
                return (line != "*").then(|| line.to_owned());
            }
            if self.input.len() > 4096 || !self.fill_command().await.ok()? {
                return None;
            }
        }
    }

    async fn mail(&mut self, address: &str, size: usize) -> Flow {
        match &self.phase {
            Phase::Fresh => return self.error(reply::GREET_FIRST),
            Phase::Mail(_) | Phase::Rcpt(_) => return self.error(reply::NESTED_MAIL),
            Phase::Greeted => {}
        }
        if self.listener == Listener::Submission && self.login.is_none() {
            return self.error(reply::AUTH_REQUIRED);
        }
        if size > self.setup.config.smtp.max_message_bytes {
            return self.error(reply::TOO_BIG);
        }
        if self.backend.queue_full().await {
            return self.error(reply::QUEUE_FULL);
        }
        let sender = if address.is_empty() {
            None
        } else {
            match Mailbox::parse(address) {
                Ok(m) => Some(m),
                Err(_) => return self.error(reply::BAD_SENDER),
            }
        };
        // The declared SIZE is reserved now or refused now: a session never waits for
        // room, so none can hold part of the budget while waiting for the rest. Without
        // SIZE the room is taken as the data arrives.
        let Some(room) = self.setup.data_memory.try_reserve(size) else {
            debug!(peer = %self.peer, size, "no room in the data budget for the declared SIZE");
            self.reply(reply::NO_ROOM_FOR_SIZE);
            return Flow::Continue;
        };
        self.room = Some(room);
        self.clock.transaction_opened(Instant::now());
        self.phase = Phase::Mail(Transaction {
            sender,
            recipients: Vec::new(),
            login: self.login.clone(),
            bounces: Vec::new(),
        });
        self.reply(reply::SENDER_OK);
        Flow::Continue
    }

    async fn rcpt(&mut self, address: &str) -> Flow {
        let tx = match std::mem::replace(&mut self.phase, Phase::Greeted) {
            Phase::Mail(tx) | Phase::Rcpt(tx) => tx,
            other => {
                let r = if matches!(other, Phase::Fresh) { reply::GREET_FIRST } else { reply::MAIL_FIRST };
                self.phase = other;
                return self.error(r);
            }
        };
        let (reply, tx) = self.check_recipient(address, tx).await;
        let reply = crate::metrics::smtp_reply(crate::metrics::Stage::Rcpt, reply);
        self.phase = if tx.has_recipients() { Phase::Rcpt(tx) } else { Phase::Mail(tx) };
        if reply.is_positive() {
            self.reply(reply);
            Flow::Continue
        } else {
            self.error(reply)
        }
    }

    async fn check_recipient(&self, address: &str, mut tx: Transaction) -> (Reply, Transaction) {
        let config = &self.setup.config;
        if tx.recipients.len() >= config.smtp.max_recipients {
            return (reply::TOO_MANY_RECIPIENTS, tx);
        }
        let Ok(rcpt) = Mailbox::parse(address) else { return (reply::BAD_RECIPIENT, tx) };
        if rcpt.domain() != config.relay.domain {
            return (reply::NOT_RELAY_DOMAIN, tx);
        }
        if let Some(queue_id) = crate::bounce::queue_id_of(rcpt.local()) {
            return self.bounce_recipient(queue_id, tx).await;
        }
        let found = match self.backend.find_alias(rcpt.local()).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "alias lookup failed");
                return (reply::STORAGE_UNAVAILABLE, tx);
            }
        };
        let Some(recipient) = found else {
            debug!(peer = %self.peer, "RCPT to unknown alias");
            return (reply::NO_SUCH_ALIAS, tx);
        };
        if !recipient.thread.status.accepts_mail() {
            // Still evidence of a leak: recorded, then refused like an unknown alias.
            self.backend.record_inactive(&recipient, tx.sender.as_ref()).await;
            return (reply::NO_SUCH_ALIAS, tx);
        }
        let side = recipient.side;
        if tx.recipients.iter().any(|r| r.alias() == recipient.alias()) {
            // The same alias twice gets one copy.
            return (reply::RECIPIENT_OK, tx);
        }
        if let Some(login) = &tx.login {
            // A logged-in store writes only to its own shoppers.
            if side != Side::Shopper || recipient.store.id != *login {
                return (reply::NOT_YOUR_SHOPPER, tx);
            }
            tx.recipients.push(recipient);
            return (reply::RECIPIENT_OK, tx);
        }
        match self.setup.auth.at_rcpt(tx.sender.as_ref(), side, &recipient.thread, &recipient.store) {
            Decision::Allow => {
                tx.recipients.push(recipient);
                (reply::RECIPIENT_OK, tx)
            }
            Decision::Refuse(r) => {
                self.backend.record_refusal(&recipient, r, "rcpt", tx.sender.as_ref()).await;
                (reply::SENDER_NOT_ALLOWED, tx)
            }
            Decision::TryLater(_) => (reply::AUTH_TEMPFAIL, tx),
        }
    }

    /// RCPT to a VERP bounce address: accepted only for a message the relay sent
    /// recently, so the address cannot be used to reach anyone.
    async fn bounce_recipient(&self, queue_id: &str, mut tx: Transaction) -> (Reply, Transaction) {
        match self.backend.find_bounce(queue_id).await {
            Ok(Some(t)) => {
                if !tx.bounces.iter().any(|b| b.queue_id == t.queue_id) {
                    tx.bounces.push(t);
                }
                (reply::RECIPIENT_OK, tx)
            }
            Ok(None) | Err(crate::store::StoreError::NotFound) => (reply::NO_SUCH_ALIAS, tx),
            Err(e) => {
                tracing::warn!(error = %e, "bounce lookup failed");
                (reply::STORAGE_UNAVAILABLE, tx)
            }
        }
    }

    /// Reads the message after 354 and hands it to the transaction. Only CR LF . CR LF
    /// ends it (see `data`): the smuggling endings of 2023 stay inside this message.
    async fn data(&mut self, tx: Transaction) -> std::io::Result<Reply> {
        let max = self.setup.config.smtp.max_message_bytes;
        let room = match self.room.take() {
            Some(room) => room,
            None => self.setup.data_memory.try_reserve(0).expect("an empty reservation always fits"),
        };
        let mut reader = DataReader::budgeted(max, room);
        self.clock.data_started(Instant::now());
        loop {
            match reader.feed(&self.input) {
                Progress::End { consumed } => {
                    self.input.drain(..consumed);
                    break;
                }
                Progress::More => {
                    self.input.clear();
                    if !self.fill().await? {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
        let stage = crate::metrics::Stage::Data;
        // Held until the reply: the message is in memory until the backend is done with it.
        let room = reader.take_room();
        match reader.finish() {
            Ok(message) if hygiene::received_count(&message) > hygiene::MAX_RECEIVED => {
                debug!(peer = %self.peer, "mail loop: too many Received lines");
                Ok(crate::metrics::smtp_reply(stage, reply::LOOP))
            }
            Ok(message) => {
                let large = message.len() >= heap::TRIM_AFTER_BYTES;
                let accepted = self.backend.accept(&tx, message, self.peer.ip(), &self.helo);
                let reply = crate::metrics::smtp_data(accepted).await;
                drop(room);
                if large {
                    // Every copy of it is freed now: give the memory back to the system
                    // (off the runtime, and without holding up the reply).
                    drop(tokio::task::spawn_blocking(heap::trim));
                }
                Ok(reply)
            }
            Err(DataError::TooBig) => Ok(crate::metrics::smtp_reply(stage, reply::TOO_BIG)),
            Err(DataError::Nul) => Ok(crate::metrics::smtp_reply(stage, reply::NUL_IN_MESSAGE)),
            Err(DataError::NoRoom) => {
                debug!(peer = %self.peer, "no room in the data budget; message dropped");
                Ok(crate::metrics::smtp_reply(stage, reply::NO_ROOM_FOR_DATA))
            }
        }
    }
}

/// SASL PLAIN (RFC 4616): `authzid NUL authcid NUL password`, base64.
fn decode_plain(b64: &str) -> Option<(String, String)> {
    let raw = decode_b64(b64)?;
    let mut parts = raw.split('\0');
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    Some((user.to_owned(), password.to_owned()))
}

fn decode_b64(b64: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    String::from_utf8(bytes).ok()
}
