//! The session tier: the relay's real SMTP state machine (`smtp::session::run`) over an
//! in-memory stream (`tokio::io::duplex`), with an in-memory `Backend` in place of the
//! store and the queue. No database, no sink, no socket: protocol tests take milliseconds,
//! and with tokio's paused clock the deadlines run in virtual time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use maskrelay::address::{Mailbox, Side, StoreId};
use maskrelay::auth::{Authorizer, Refusal};
use maskrelay::config::{AuthMode, Config};
use maskrelay::shutdown::{self, Trigger};
use maskrelay::smtp::Listener;
use maskrelay::smtp::backend::Backend;
use maskrelay::smtp::reply::Reply;
use maskrelay::smtp::session::{self, Setup};
use maskrelay::smtp::transaction::{BounceTarget, Recipient, Transaction};
use maskrelay::store::StoreError;
use maskrelay::store::stores::Store;
use maskrelay::store::threads::{Thread, ThreadStatus};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

/// A message the backend took at the end of DATA.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub sender: Option<String>,
    /// Alias local parts.
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
}

/// Threads of store acme in memory, and what the session handed over.
#[derive(Default)]
pub struct MemoryBackend {
    threads: Mutex<HashMap<String, Recipient>>,
    accepted: Mutex<Vec<Accepted>>,
    refusals: Mutex<Vec<(String, &'static str)>>,
    /// Alias local parts of inactive threads written to (leak evidence, still recorded).
    inactive: Mutex<Vec<String>>,
}

impl MemoryBackend {
    /// A thread of store acme (sender orders@acme.example) for jane.doe@shopper.example;
    /// returns its shopper alias and store alias as full addresses.
    pub fn thread(&self, order: &str, status: ThreadStatus) -> (String, String) {
        let store = Store {
            id: StoreId::parse("acme").expect("store id"),
            name: "Acme Shop".into(),
            contact: "support@acme.example".into(),
            senders: vec!["orders@acme.example".into()],
            created_at: maskrelay::time::Timestamp(0),
        };
        let shopper_alias = format!("s{order}x");
        let store_alias = format!("acme.{order}y");
        let thread = Thread {
            id: format!("t-{order}"),
            store_id: store.id.clone(),
            order: order.into(),
            shopper: Some(Mailbox::parse("jane.doe@shopper.example").expect("mailbox")),
            shopper_name: Some("Jane Doe".into()),
            shopper_alias: shopper_alias.clone(),
            store_alias: store_alias.clone(),
            status,
            revoke_token: "token".into(),
            created_at: 0,
            expires_at: i64::MAX,
            locale: maskrelay::locale::Locale::En,
        };
        let mut threads = self.threads.lock().unwrap();
        for (alias, side) in [(&shopper_alias, Side::Shopper), (&store_alias, Side::Store)] {
            threads.insert(alias.clone(), Recipient { thread: thread.clone(), side, store: store.clone() });
        }
        (format!("{shopper_alias}@{}", super::DOMAIN), format!("{store_alias}@{}", super::DOMAIN))
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }

    /// (alias, stage) of each recorded refusal.
    pub fn refusals(&self) -> Vec<(String, &'static str)> {
        self.refusals.lock().unwrap().clone()
    }

    pub fn inactive(&self) -> Vec<String> {
        self.inactive.lock().unwrap().clone()
    }
}

impl Backend for MemoryBackend {
    async fn find_alias(&self, local: &str) -> Result<Option<Recipient>, StoreError> {
        Ok(self.threads.lock().unwrap().get(&local.to_ascii_lowercase()).cloned())
    }

    async fn find_bounce(&self, _queue_id: &str) -> Result<Option<BounceTarget>, StoreError> {
        Ok(None)
    }

    async fn verify_login(&self, _user: &str, _password: &str) -> Result<Option<StoreId>, StoreError> {
        Ok(None)
    }

    async fn record_refusal(
        &self,
        rcpt: &Recipient,
        _refusal: Refusal,
        stage: &'static str,
        _sender: Option<&Mailbox>,
    ) {
        self.refusals.lock().unwrap().push((rcpt.alias().to_owned(), stage));
    }

    async fn record_inactive(&self, rcpt: &Recipient, _sender: Option<&Mailbox>) {
        self.inactive.lock().unwrap().push(rcpt.alias().to_owned());
    }

    async fn accept(&self, tx: &Transaction, message: Vec<u8>, _peer: IpAddr, _helo: &str) -> Reply {
        let mut accepted = self.accepted.lock().unwrap();
        accepted.push(Accepted {
            sender: tx.sender.as_ref().map(|m| m.normalized()),
            recipients: tx.recipients.iter().map(|r| r.alias().to_owned()).collect(),
            message,
        });
        Reply::new(250, format!("2.0.0 Message queued as m{}", accepted.len()))
    }
}

/// The test config of the session tier: relay.test, envelope auth, defaults otherwise.
pub fn session_config() -> Config {
    let mut c = Config::default();
    c.relay.domain = super::DOMAIN.into();
    c.auth.mode = AuthMode::Envelope;
    c
}

/// One client talking to one session.
pub struct Conversation {
    r: BufReader<ReadHalf<DuplexStream>>,
    w: WriteHalf<DuplexStream>,
    pub backend: Arc<MemoryBackend>,
    pub session: JoinHandle<()>,
    _shutdown: Trigger,
}

impl Conversation {
    /// A session with `tweak` applied to the config; the greeting is checked.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let backend = Arc::new(MemoryBackend::default());
        Self::start_with(tweak, backend, None).await
    }

    /// The same, over a given backend and TLS acceptor.
    pub async fn start_with(
        tweak: impl FnOnce(&mut Config),
        backend: Arc<MemoryBackend>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let mut config = session_config();
        tweak(&mut config);
        let auth = Authorizer { mode: config.auth.mode };
        let setup = Arc::new(Setup::new(Arc::new(config), auth, tls));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (trigger, shutdown) = shutdown::channel();
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let session =
            tokio::spawn(session::run(server, peer, Listener::Mx, setup, backend.clone(), shutdown));
        let (r, w) = tokio::io::split(client);
        let mut c = Self { r: BufReader::new(r), w, backend, session, _shutdown: trigger };
        let greeting = c.reply().await.expect("greeting");
        assert!(greeting.starts_with("220 relay.test "), "{greeting:?}");
        c
    }

    /// Started and greeted with EHLO.
    pub async fn ready(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut c = Self::start(tweak).await;
        c.cmd("EHLO client.test", "250").await;
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("write to the session");
    }

    /// The next whole reply (all its lines), or None once the session closed.
    pub async fn reply(&mut self) -> Option<String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await.ok()? == 0 {
                return if text.is_empty() { None } else { Some(text) };
            }
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Some(text);
            }
        }
    }

    /// The next reply, which must start with `expect` (a code, or a code and enhanced
    /// code: "550", "550 5.1.1").
    pub async fn expect(&mut self, expect: &str, what: &str) -> String {
        let r = self.reply().await.unwrap_or_else(|| panic!("{what}: the session closed, expected {expect}"));
        let last = r.lines().last().unwrap_or_default();
        assert!(
            r.starts_with(expect) && last.starts_with(&expect[..3]),
            "{what}: expected {expect}…, got {r:?}"
        );
        r
    }

    /// One command line; its reply must start with `expect`.
    pub async fn cmd(&mut self, line: &str, expect: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let what: String = line.chars().take(60).collect();
        self.expect(expect, &what).await
    }

    /// MAIL, RCPT, DATA, the message (dot-stuffed) and its end; the reply to the data.
    pub async fn mail(&mut self, from: &str, to: &str, message: &[u8]) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
        self.cmd(&format!("RCPT TO:<{to}>"), "250").await;
        self.cmd("DATA", "354").await;
        self.send(&super::smtp_client::data_wire(message)).await;
        self.reply().await.expect("reply to the end of data")
    }

    /// The session has closed the stream, with no further reply.
    pub async fn assert_closed(&mut self, what: &str) {
        if let Some(r) = self.reply().await {
            panic!("{what}: expected the connection closed, got another reply {r:?}");
        }
    }

    /// The client's end of the stream, to go on over TLS after STARTTLS, and what keeps
    /// the session from shutting down.
    pub fn into_stream(self) -> (DuplexStream, Trigger) {
        assert!(self.r.buffer().is_empty(), "unread replies");
        (self.r.into_inner().unsplit(self.w), self._shutdown)
    }

    /// A NOOP gets exactly the NOOP's reply: nothing else was pending or parsed.
    pub async fn assert_in_step(&mut self, what: &str) {
        let r = self.cmd("NOOP", "250").await;
        assert_eq!(r, "250 2.0.0 OK\r\n", "{what}: the reply to NOOP was not the NOOP's");
    }
}
