//! Typed configuration: embedded defaults, a TOML file, then `MASKRELAY_<SECTION>_<KEY>`
//! environment overrides. Every error names the key at fault.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The io error is part of the message, not a `source`: error chains would print it twice.
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{0}")]
    Toml(String),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    /// A `MASKRELAY_*` variable that names no key, or whose value does not fit it.
    #[error("environment variable {var}: {problem}")]
    Env { var: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), problem: problem.into() }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub relay: Relay,
    pub smtp: Smtp,
    pub submission: Submission,
    pub auth: Auth,
    pub dns: Dns,
    pub dkim: Dkim,
    pub egress: Egress,
    pub queue: Queue,
    pub database: Database,
    pub api: Api,
    pub threads: Threads,
    pub privacy: Privacy,
    pub events: Events,
    pub webhooks: Webhooks,
    pub log: Log,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// The alias domain; its MX points at this relay.
    pub domain: String,
    /// The marketplace's name, shown to stores as "<shopper> via <marketplace>".
    pub marketplace: String,
    /// The shoppers' language when a thread names none (`en`, `ja`).
    pub locale: crate::locale::Locale,
}
impl Default for Relay {
    fn default() -> Self {
        Self {
            domain: "relay.localhost".into(),
            marketplace: "Marketplace".into(),
            locale: crate::locale::Locale::En,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    pub listen: String,
    /// Name in the greeting and EHLO reply; defaults to the relay domain.
    pub hostname: Option<String>,
    pub max_message_bytes: usize,
    /// Bytes of messages parsed, rewritten and enqueued at once (a message counts its size
    /// once per recipient plus once); more waits for room.
    pub rewrite_memory_bytes: usize,
    /// Bytes of messages being received at once, over all sessions (a declared SIZE is
    /// reserved at MAIL). A transaction that finds no room gets `452 4.3.1`, at MAIL or
    /// after its data, and the client sends it again later. At least
    /// `smtp.max_message_bytes`.
    pub data_memory_bytes: usize,
    pub max_recipients: usize,
    /// Commands per connection before it is closed (a client looping is cut off).
    pub max_commands: usize,
    /// Wrong commands per connection before it is closed.
    pub max_errors: usize,
    pub max_connections: usize,
    /// Connections one client address may hold at once (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// Seconds a client may stay silent: no byte at all.
    pub idle_timeout_secs: u64,
    /// Seconds one command line may take to arrive in full, counted from when the relay
    /// waits for it, not restarted by each byte (RFC 5321 4.5.3.2.7: 5 minutes).
    pub command_timeout_secs: u64,
    /// Seconds from MAIL to the end of the data of one transaction.
    pub transaction_timeout_secs: u64,
    /// Slowest average DATA rate taken after the first 30 seconds; 0 turns the check off.
    pub min_data_bytes_per_sec: u64,
    pub tls_cert_path: Option<String>,
    pub tls_key_path: Option<String>,
}
impl Default for Smtp {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2525".into(),
            hostname: None,
            max_message_bytes: 25 * 1024 * 1024,
            rewrite_memory_bytes: 64 * 1024 * 1024,
            // Five maximum-size messages: ten at once do not all sit in memory.
            data_memory_bytes: 128 * 1024 * 1024,
            max_recipients: 50,
            max_commands: 1000,
            max_errors: 10,
            max_connections: 200,
            max_connections_per_ip: 20,
            idle_timeout_secs: 300,
            command_timeout_secs: 300,
            transaction_timeout_secs: 1800,
            min_data_bytes_per_sec: 1024,
            tls_cert_path: None,
            tls_key_path: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Submission {
    /// Off when empty.
    pub listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Dmarc,
    Envelope,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub mode: AuthMode,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    pub nameservers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dkim {
    pub selector: String,
    /// The RSA key every message is signed with (`serve` generates RSA-2048 when missing:
    /// large receivers verify only RSA).
    pub private_key_path: String,
    /// An Ed25519 key (RFC 8463) for a second signature beside the RSA one; off when unset.
    pub ed25519_key_path: Option<String>,
    /// Selector of the Ed25519 key's record; defaults to `<selector>-ed25519`.
    pub ed25519_selector: Option<String>,
}
impl Default for Dkim {
    fn default() -> Self {
        Self {
            selector: "maskrelay".into(),
            private_key_path: "maskrelay-dkim.pem".into(),
            ed25519_key_path: None,
            ed25519_selector: None,
        }
    }
}
impl Dkim {
    /// The selector the Ed25519 record is published under.
    pub fn ed25519_selector(&self) -> String {
        self.ed25519_selector.clone().unwrap_or_else(|| format!("{}-ed25519", self.selector))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EgressMode {
    #[default]
    Mx,
    Smarthost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmarthostTls {
    /// Plain SMTP: for a next hop on the same host or a private network.
    #[default]
    None,
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Egress {
    pub mode: EgressMode,
    pub smarthost: String,
    pub smarthost_tls: SmarthostTls,
    pub smarthost_user: Option<String>,
    pub smarthost_password: Option<String>,
    /// PEM file of the CA certificates that verify the smarthost's certificate; the
    /// system's roots when unset.
    pub smarthost_ca_path: Option<String>,
    /// Allows AUTH over a connection that is not encrypted (a next hop on a private
    /// network); off, credentials are sent only over TLS.
    pub smarthost_auth_plaintext: bool,
    /// Delivery workers per process: deliveries in progress at once. Each holds one
    /// message in memory while it tries it (the message and the copy fitted to the next
    /// hop), so the memory they may take is about `workers` × 2 × the message size.
    pub workers: usize,
    /// Deliveries in progress to one MX host address at a time, so one slow domain cannot
    /// hold every worker; unset: half of `workers`, at least 1. (A smarthost may use all.)
    pub max_per_destination: Option<usize>,
    /// Seconds an unused connection to a next hop stays open for the next message.
    pub idle_timeout_secs: u64,
    /// Next hops whose connections are pooled at once.
    pub max_pools: usize,
    /// Per-stage timeouts (RFC 5321 4.5.3.2): TCP connect; each reply outside DATA; the
    /// 354 after DATA; each block of the message; the reply after the final dot.
    pub connect_timeout_secs: u64,
    pub command_timeout_secs: u64,
    pub data_timeout_secs: u64,
    pub data_block_timeout_secs: u64,
    pub data_done_timeout_secs: u64,
    /// First retry delay; each further attempt doubles it up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// Days a message may wait before it is given up (fractions allowed: 0.5 = 12 h).
    pub max_queue_days: f64,
    /// Seconds a worker's lease on the message it is trying lasts; renewed every third of
    /// it while the attempt runs, so another relay takes the message over only after its
    /// holder died (or lost touch with the database) and the lease ran out.
    pub lease_secs: u64,
    /// Port of MX hosts (25 on the internet; tests point it at a loopback sink).
    pub mx_port: u16,
}
impl Default for Egress {
    fn default() -> Self {
        Self {
            mode: EgressMode::Mx,
            smarthost: String::new(),
            smarthost_tls: SmarthostTls::None,
            smarthost_user: None,
            smarthost_password: None,
            smarthost_ca_path: None,
            smarthost_auth_plaintext: false,
            // 4 kept delivery ~8x behind accepting on a fast next hop (bench/RESULTS.md):
            // each attempt waits on two commits and the next hop, not on the CPU.
            workers: 32,
            max_per_destination: None,
            idle_timeout_secs: 30,
            max_pools: 1000,
            connect_timeout_secs: 30,
            command_timeout_secs: 300,
            data_timeout_secs: 120,
            data_block_timeout_secs: 180,
            data_done_timeout_secs: 600,
            retry_base_secs: 60,
            retry_max_secs: 4 * 3600,
            max_queue_days: 5.0,
            lease_secs: 300,
            mx_port: 25,
        }
    }
}

impl Egress {
    /// `max_per_destination`, or its default: half of the workers, at least 1.
    pub fn max_per_destination(&self) -> usize {
        self.max_per_destination.unwrap_or(self.workers / 2).max(1)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Queue {
    /// This relay's identity among relays sharing one database: its delivery leases carry
    /// it, and at start it takes back at once the leases held under it (mail in flight when
    /// it crashed). Unset: derived from the host name, the working directory, the database
    /// URL and `smtp.listen`, so the same relay restarted keeps it. Relays on one database
    /// must have different ids.
    pub node_id: Option<String>,
    /// Messages the queue may hold; above it new mail is answered `451 4.3.1` at MAIL and
    /// at the end of DATA until deliveries make room.
    pub max_messages: u64,
}
impl Default for Queue {
    fn default() -> Self {
        Self { node_id: None, max_messages: 1_000_000 }
    }
}

impl Config {
    /// `queue.node_id`, or the one derived for this host, directory, database and listener.
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.queue.node_id {
            return id.clone();
        }
        use sha2::Digest;
        let dir = std::env::current_dir()
            .and_then(|d| d.canonicalize())
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let mut h = sha2::Sha256::new();
        for part in [dir.as_str(), self.database.url.as_str(), self.smtp.listen.as_str()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        format!("{}-{}", hostname(), &hex::encode(h.finalize())[..12])
    }
}

/// The host's name as the kernel has it (gethostname), or `localhost`.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    if rc != 0 || name.is_empty() { "localhost".into() } else { name }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    pub url: String,
    pub max_connections: u32,
}
impl Default for Database {
    fn default() -> Self {
        Self { url: "sqlite://maskrelay.db".into(), max_connections: 8 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// The operator API (and, without `public_listen`, the shopper pages too).
    pub listen: String,
    /// A second listener serving only the shopper pages (`/r/…`), so the operator API can
    /// stay off public ports; off when empty.
    pub public_listen: String,
    /// Operator bearer token; generated and printed once at start when unset.
    pub token: Option<String>,
    /// Base URL shoppers reach the revoke page at; defaults to `http://<public_listen>`, else
    /// `http://<listen>` (refused when that address is 0.0.0.0 or [::]).
    pub public_url: Option<String>,
}
impl Default for Api {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), public_listen: String::new(), token: None, public_url: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Threads {
    /// Days a thread lives when the API call gives no `ttl_days`.
    pub ttl_days: u32,
    /// Days after a thread is revoked, expired or paused (without resuming) that its
    /// shopper's address and name are erased.
    pub erase_after_days: u32,
    /// Seconds between two retention sweeps.
    pub retention_interval_secs: u64,
}
impl Default for Threads {
    fn default() -> Self {
        Self { ttl_days: 180, erase_after_days: 30, retention_interval_secs: 3600 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Days events (and incidents, by their last attempt) are kept.
    pub retention_days: u32,
}
impl Default for Events {
    fn default() -> Self {
        Self { retention_days: 400 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// First retry delay; each further attempt doubles it up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// Hours an event is retried before it is given up.
    pub give_up_hours: u32,
    /// Seconds one POST may take.
    pub timeout_secs: u64,
}
impl Default for Webhooks {
    fn default() -> Self {
        Self { retry_base_secs: 30, retry_max_secs: 3600, give_up_hours: 24, timeout_secs: 10 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// Base64 keys (32 bytes each) that seal shopper data at rest, current first; older
    /// keys only open. When set, `key_file` is not read. Secrets belong in the
    /// environment: `MASKRELAY_PRIVACY_KEYS='["…", "…"]'`.
    pub keys: Vec<String>,
    /// A file of such keys, one per line; `serve` creates it with one new key on first
    /// start when neither it nor `keys` exists.
    pub key_file: String,
}
impl Default for Privacy {
    fn default() -> Self {
        Self { keys: Vec::new(), key_file: "maskrelay.key".into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter: `info`, `debug`, or per module (`info,maskrelay::delivery=debug`).
    /// `MASKRELAY_LOG` sets it too.
    pub level: String,
    pub format: LogFormat,
}
impl Default for Log {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

const ENV_PREFIX: &str = "MASKRELAY_";

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|cause| ConfigError::Read { path: p.display().to_string(), cause })?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, env_vars()?)
    }

    /// The same, with the file text and environment given (for tests).
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Toml(format!("config file: {e}")))?;
        let schema = Schema::of_defaults();
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
            let (section, key) = schema.locate(&var, rest)?;
            let value = schema.value(&var, &section, &key, &value)?;
            let entry =
                table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = entry else {
                return Err(invalid(&section, "must be a table"));
            };
            match value {
                Some(v) => t.insert(key, v),
                None => t.remove(&key),
            };
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string().trim().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        crate::address::Mailbox::parse(&format!("postmaster@{}", self.relay.domain))
            .map_err(|_| invalid("relay.domain", "not a domain name"))?;
        parse_addr("smtp.listen", &self.smtp.listen)?;
        let api = parse_addr("api.listen", &self.api.listen)?;
        if !self.submission.listen.is_empty() {
            parse_addr("submission.listen", &self.submission.listen)?;
        }
        let shopper_pages = match self.api.public_listen.as_str() {
            "" => ("api.listen", api),
            listen => {
                let public = parse_addr("api.public_listen", listen)?;
                if public == api && public.port() != 0 {
                    return Err(invalid("api.public_listen", "must differ from api.listen"));
                }
                ("api.public_listen", public)
            }
        };
        match &self.api.public_url {
            Some(url) => check_public_url(url)?,
            // Links to http://0.0.0.0:8080 reach no shopper: make the operator say where
            // the pages are published.
            None if shopper_pages.1.ip().is_unspecified() => {
                return Err(invalid(
                    "api.public_url",
                    format!(
                        "required when {} = {} listens on every interface: revoke links would point at \
                         http://{}; set it to the address shoppers reach, e.g. https://{}",
                        shopper_pages.0, shopper_pages.1, shopper_pages.1, self.relay.domain
                    ),
                ));
            }
            None => {}
        }
        let positive = [
            ("smtp.max_message_bytes", self.smtp.max_message_bytes),
            ("smtp.max_recipients", self.smtp.max_recipients),
            ("smtp.max_commands", self.smtp.max_commands),
            ("smtp.max_connections", self.smtp.max_connections),
            ("smtp.max_connections_per_ip", self.smtp.max_connections_per_ip),
            ("smtp.rewrite_memory_bytes", self.smtp.rewrite_memory_bytes),
            ("smtp.data_memory_bytes", self.smtp.data_memory_bytes),
            ("egress.workers", self.egress.workers),
            ("egress.max_pools", self.egress.max_pools),
            ("egress.max_per_destination", self.egress.max_per_destination.unwrap_or(1)),
            ("webhooks.timeout_secs", self.webhooks.timeout_secs as usize),
            ("webhooks.retry_base_secs", self.webhooks.retry_base_secs as usize),
            ("threads.retention_interval_secs", self.threads.retention_interval_secs as usize),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.smtp.data_memory_bytes < self.smtp.max_message_bytes {
            return Err(invalid(
                "smtp.data_memory_bytes",
                format!(
                    "must be at least smtp.max_message_bytes ({}): a message that large could never be received",
                    self.smtp.max_message_bytes
                ),
            ));
        }
        let seconds = [
            ("smtp.idle_timeout_secs", self.smtp.idle_timeout_secs),
            ("smtp.command_timeout_secs", self.smtp.command_timeout_secs),
            ("smtp.transaction_timeout_secs", self.smtp.transaction_timeout_secs),
        ];
        for (key, v) in seconds {
            // Zero would close every connection at once; a year is surely a typo.
            if v == 0 || v > 365 * 86_400 {
                return Err(invalid(key, "must be between 1 and 31536000 seconds"));
            }
        }
        if self.queue.max_messages == 0 {
            return Err(invalid("queue.max_messages", "must be at least 1"));
        }
        if let Some(id) = &self.queue.node_id
            && (id.is_empty() || id.len() > 100 || !id.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(invalid("queue.node_id", "1 to 100 printable ASCII characters, no spaces"));
        }
        if !(self.egress.max_queue_days >= 0.0 && self.egress.max_queue_days.is_finite()) {
            return Err(invalid("egress.max_queue_days", "must be a number of days, 0 or more"));
        }
        if self.egress.mode == EgressMode::Smarthost && self.egress.smarthost.is_empty() {
            return Err(invalid("egress.smarthost", "required when egress.mode = \"smarthost\""));
        }
        if self.egress.mode == EgressMode::Smarthost && !self.egress.smarthost.contains(':') {
            return Err(invalid("egress.smarthost", "expected host:port"));
        }
        let timeouts = [
            ("egress.connect_timeout_secs", self.egress.connect_timeout_secs),
            ("egress.command_timeout_secs", self.egress.command_timeout_secs),
            ("egress.data_timeout_secs", self.egress.data_timeout_secs),
            ("egress.data_block_timeout_secs", self.egress.data_block_timeout_secs),
            ("egress.data_done_timeout_secs", self.egress.data_done_timeout_secs),
        ];
        for (key, v) in timeouts {
            if v == 0 {
                return Err(invalid(key, "must be at least 1 second"));
            }
        }
        if self.egress.smarthost_user.is_some() != self.egress.smarthost_password.is_some() {
            return Err(invalid(
                "egress.smarthost_password",
                "set both smarthost_user and smarthost_password",
            ));
        }
        if self.egress.smarthost_user.is_some()
            && self.egress.smarthost_tls == SmarthostTls::None
            && !self.egress.smarthost_auth_plaintext
        {
            return Err(invalid(
                "egress.smarthost_user",
                "credentials would cross the network in the clear: set egress.smarthost_tls = \"starttls\" or \"tls\" \
                 (or egress.smarthost_auth_plaintext = true for a next hop on a private network)",
            ));
        }
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres")) {
            return Err(invalid("database.url", "expected sqlite://PATH or postgres://…"));
        }
        if !self.submission.listen.is_empty() && self.smtp.tls_cert_path.is_none() {
            return Err(invalid(
                "submission.listen",
                "needs smtp.tls_cert_path and smtp.tls_key_path: AUTH is only offered after STARTTLS",
            ));
        }
        if self.smtp.tls_cert_path.is_some() != self.smtp.tls_key_path.is_some() {
            return Err(invalid("smtp.tls_key_path", "set both tls_cert_path and tls_key_path"));
        }
        if let Some(t) = &self.api.token
            && t.len() < 16
        {
            return Err(invalid("api.token", "must be at least 16 characters"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("{:?} is not a log filter ({e})", self.log.level)))?;
        Ok(())
    }

    /// Host name for the SMTP greeting.
    pub fn smtp_hostname(&self) -> &str {
        self.smtp.hostname.as_deref().unwrap_or(&self.relay.domain)
    }

    /// Base URL of the shopper-facing pages.
    pub fn public_url(&self) -> String {
        match &self.api.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None if !self.api.public_listen.is_empty() => format!("http://{}", self.api.public_listen),
            None => format!("http://{}", self.api.listen),
        }
    }

    /// The configuration as TOML, in the order of this file's sections, every secret
    /// replaced by a note that it is set and how long it is (what `maskrelay config check`
    /// prints), and a last line naming the optional keys left unset.
    pub fn to_masked_toml(&self) -> String {
        let mut c = self.clone();
        // Every secret key: api.token, egress.smarthost_password, privacy.keys, and the
        // password inside database.url.
        c.api.token = c.api.token.as_deref().map(mask);
        c.egress.smarthost_password = c.egress.smarthost_password.as_deref().map(mask);
        c.privacy.keys = c.privacy.keys.iter().map(|k| mask(k)).collect();
        c.database.url = redact_url(&c.database.url);
        let mut text = toml::to_string_pretty(&c).unwrap_or_default();
        let unset: Vec<String> = match serde_json::to_value(&c) {
            Ok(serde_json::Value::Object(sections)) => sections
                .iter()
                .flat_map(|(section, keys)| {
                    keys.as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(_, v)| v.is_null())
                        .map(move |(key, _)| format!("{section}.{key}"))
                })
                .collect(),
            _ => Vec::new(),
        };
        if !unset.is_empty() {
            text.push_str(&format!("\n# unset: {}\n", unset.join(", ")));
        }
        text
    }
}

fn mask(secret: &str) -> String {
    format!("<secret: {} characters>", secret.chars().count())
}

/// A database URL fit for logs and errors: the password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The host (and port) a database URL points at, for errors: `db.internal:5432`, or the
/// file of a SQLite URL.
pub fn url_host(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    if scheme == "sqlite" {
        return rest.split('?').next().unwrap_or(rest).to_owned();
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_owned()
}

fn check_public_url(url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid("api.public_url", format!("{url:?} must start with https:// or http://")))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // `[v6]:port` keeps its colons inside the brackets.
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let unspecified = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    if host.is_empty() || unspecified {
        return Err(invalid("api.public_url", format!("{url:?} names no host shoppers can reach")));
    }
    Ok(())
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| invalid(key, format!("{v:?} is not an IP:port socket address")))
}

/// The process environment; a `MASKRELAY_*` variable that is not UTF-8 is an error, other
/// variables are none of our business.
fn env_vars() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        let value = value.into_string().map_err(|_| ConfigError::Env {
            var: name.to_owned(),
            problem: "the value is not UTF-8".into(),
        })?;
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

/// Every key and the kind of value it takes, read off the defaults (serialized to JSON,
/// where an unset optional key shows as null rather than disappearing).
struct Schema {
    sections: serde_json::Map<String, serde_json::Value>,
}

impl Schema {
    fn of_defaults() -> Self {
        let sections = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        Self { sections }
    }

    /// The (section, key) a variable name sets. `MASKRELAY_LOG` is `log.level` (it was
    /// documented before the `[log]` section existed).
    fn locate(&self, var: &str, rest: &str) -> Result<(String, String), ConfigError> {
        let lower = rest.to_ascii_lowercase();
        if lower == "log" {
            return Ok(("log".into(), "level".into()));
        }
        let err = |problem: String| ConfigError::Env { var: var.to_owned(), problem };
        let names: Vec<&str> = self.sections.keys().map(String::as_str).collect();
        let Some((section, key)) = names
            .iter()
            .filter_map(|s| lower.strip_prefix(s).and_then(|k| k.strip_prefix('_')).map(|k| (*s, k)))
            .next()
        else {
            let section = lower.split('_').next().unwrap_or("");
            return Err(err(format!(
                "no configuration section {section:?} (sections: {}); variables for the test suite \
                 start with MRTEST_, not MASKRELAY_",
                names.join(", ")
            )));
        };
        let keys = self.sections.get(section).and_then(|v| v.as_object());
        if !keys.is_some_and(|k| k.contains_key(key)) {
            let known: Vec<&str> = keys.map(|k| k.keys().map(String::as_str).collect()).unwrap_or_default();
            return Err(err(format!("[{section}] has no key {key:?} (keys: {})", known.join(", "))));
        }
        Ok((section.to_owned(), key.to_owned()))
    }

    /// The raw text as the kind of value the key takes: text keys take it as it is (a
    /// digit-only password stays text), typed keys must parse as their type. None unsets an
    /// optional key (an empty value).
    fn value(
        &self,
        var: &str,
        section: &str,
        key: &str,
        raw: &str,
    ) -> Result<Option<toml::Value>, ConfigError> {
        use serde_json::Value as J;
        let err = |expected: &str| ConfigError::Env {
            var: var.to_owned(),
            problem: format!("{section}.{key} takes {expected}, not {raw:?}"),
        };
        let default = self.sections.get(section).and_then(|s| s.get(key)).unwrap_or(&J::Null);
        Ok(Some(match default {
            // An unset optional key: every one of them is text today.
            J::Null if raw.is_empty() => return Ok(None),
            J::Null | J::String(_) => toml::Value::String(raw.to_owned()),
            J::Bool(_) => match raw.trim() {
                "true" => toml::Value::Boolean(true),
                "false" => toml::Value::Boolean(false),
                _ => return Err(err("true or false")),
            },
            J::Number(n) if n.is_f64() => {
                toml::Value::Float(raw.trim().parse().map_err(|_| err("a number"))?)
            }
            J::Number(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| err("a whole number"))?),
            J::Array(_) => parse_list(raw).ok_or_else(|| err("a list: [\"a\", \"b\"] or a,b"))?,
            J::Object(_) => toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(toml::Value::is_table)
                .ok_or_else(|| err("an inline table { key = value }"))?,
        }))
    }
}

/// A list from the environment: a TOML array (`["a", "b"]`), or comma-separated text.
fn parse_list(raw: &str) -> Option<toml::Value> {
    if raw.trim_start().starts_with('[') {
        return toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(toml::Value::is_array);
    }
    Some(toml::Value::Array(
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| toml::Value::String(s.to_owned()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_spec() {
        let c = Config::from_toml_and_env("", env(&[])).unwrap();
        assert_eq!(c.smtp.listen, "127.0.0.1:2525");
        assert_eq!(c.api.listen, "127.0.0.1:8080");
        assert_eq!(c.database.url, "sqlite://maskrelay.db");
        assert_eq!(c.relay.domain, "relay.localhost");
        assert_eq!(c.auth.mode, AuthMode::Dmarc);
        assert_eq!(c.egress.mode, EgressMode::Mx);
        assert_eq!(c.egress.max_queue_days, 5.0);
        assert_eq!(c.smtp.max_connections_per_ip, 20);
        assert_eq!((c.smtp.command_timeout_secs, c.smtp.transaction_timeout_secs), (300, 1800));
    }

    #[test]
    fn env_overrides_file() {
        let c = Config::from_toml_and_env(
            "[smtp]\nmax_recipients = 3\n[relay]\ndomain = \"a.example\"\n",
            env(&[
                ("MASKRELAY_SMTP_MAX_RECIPIENTS", "7"),
                ("MASKRELAY_API_TOKEN", "0123456789abcdef0123"),
                ("MASKRELAY_DNS_NAMESERVERS", "[\"127.0.0.1:5353\"]"),
                ("MASKRELAY_EGRESS_MAX_QUEUE_DAYS", "2"),
                ("MASKRELAY_LOG", "debug"),
                ("OTHER_VAR", "x"),
                ("MRTEST_REQUIRE_POSTGRES", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.smtp.max_recipients, 7);
        assert_eq!(c.relay.domain, "a.example");
        assert_eq!(c.api.token.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(c.dns.nameservers, vec!["127.0.0.1:5353"]);
        assert_eq!(c.egress.max_queue_days, 2.0);
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn string_keys_take_the_value_as_text() {
        let c = Config::from_toml_and_env(
            "",
            env(&[
                ("MASKRELAY_API_TOKEN", "1234567890123456789"),
                ("MASKRELAY_EGRESS_SMARTHOST_PASSWORD", "true"),
                ("MASKRELAY_EGRESS_SMARTHOST_USER", "[not a list]"),
                ("MASKRELAY_EGRESS_SMARTHOST_TLS", "starttls"),
                ("MASKRELAY_RELAY_MARKETPLACE", "42"),
                ("MASKRELAY_DNS_NAMESERVERS", "127.0.0.1:5353, 127.0.0.1:5354"),
                ("MASKRELAY_LOG_FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(c.api.token.as_deref(), Some("1234567890123456789"));
        assert_eq!(c.egress.smarthost_password.as_deref(), Some("true"));
        assert_eq!(c.egress.smarthost_user.as_deref(), Some("[not a list]"));
        assert_eq!(c.relay.marketplace, "42");
        assert_eq!(c.dns.nameservers, vec!["127.0.0.1:5353", "127.0.0.1:5354"]);
        assert_eq!(c.log.format, LogFormat::Json);
        // An empty value unsets an optional key.
        let c = Config::from_toml_and_env(
            "[api]\ntoken = \"0123456789abcdef0123\"\n",
            env(&[("MASKRELAY_API_TOKEN", "")]),
        )
        .unwrap();
        assert_eq!(c.api.token, None);
    }

    #[test]
    fn env_errors_name_the_variable_and_key() {
        let e = Config::from_toml_and_env("", env(&[("MASKRELAY_SMPT_LISTEN", "127.0.0.1:25")])).unwrap_err();
        assert!(e.to_string().contains("MASKRELAY_SMPT_LISTEN") && e.to_string().contains("\"smpt\""), "{e}");
        let e = Config::from_toml_and_env("", env(&[("MASKRELAY_REQUIRE_POSTGRES", "1")])).unwrap_err();
        assert!(
            e.to_string().contains("MASKRELAY_REQUIRE_POSTGRES") && e.to_string().contains("MRTEST_"),
            "{e}"
        );
        let e = Config::from_toml_and_env("", env(&[("MASKRELAY_SMTP_MAX_RECIPIENTS", "many")])).unwrap_err();
        assert!(
            e.to_string().contains("smtp.max_recipients") && e.to_string().contains("whole number"),
            "{e}"
        );
        let e =
            Config::from_toml_and_env("", env(&[("MASKRELAY_EGRESS_MAX_QUEUE_DAYS", "soon")])).unwrap_err();
        assert!(e.to_string().contains("egress.max_queue_days"), "{e}");
        let e = Config::from_toml_and_env("", env(&[("MASKRELAY_LOG_LEVEL", "info,=[")])).unwrap_err();
        assert!(e.to_string().contains("log.level"), "{e}");
        let e = Config::from_toml_and_env("", env(&[("MASKRELAY_SMTP", "x")])).unwrap_err();
        assert!(e.to_string().contains("MASKRELAY_SMTP"), "{e}");
    }

    #[test]
    fn revoke_links_need_a_public_url_when_listening_everywhere() {
        let e = Config::from_toml_and_env("", env(&[("MASKRELAY_API_LISTEN", "0.0.0.0:8080")])).unwrap_err();
        assert!(e.to_string().contains("api.public_url") && e.to_string().contains("0.0.0.0"), "{e}");
        let e =
            Config::from_toml_and_env("", env(&[("MASKRELAY_API_PUBLIC_LISTEN", "[::]:8081")])).unwrap_err();
        assert!(e.to_string().contains("api.public_url"), "{e}");
        // The operator API on every interface, shopper pages on loopback: links go there.
        let c = Config::from_toml_and_env(
            "",
            env(&[
                ("MASKRELAY_API_LISTEN", "0.0.0.0:8080"),
                ("MASKRELAY_API_PUBLIC_LISTEN", "127.0.0.1:8081"),
            ]),
        )
        .unwrap();
        assert_eq!(c.public_url(), "http://127.0.0.1:8081");
        let c = Config::from_toml_and_env(
            "",
            env(&[
                ("MASKRELAY_API_LISTEN", "0.0.0.0:8080"),
                ("MASKRELAY_API_PUBLIC_URL", "https://relay.example/"),
            ]),
        )
        .unwrap();
        assert_eq!(c.public_url(), "https://relay.example");
        let e =
            Config::from_toml_and_env("", env(&[("MASKRELAY_API_PUBLIC_URL", "relay.example")])).unwrap_err();
        assert!(e.to_string().contains("api.public_url"), "{e}");
    }

    #[test]
    fn masked_toml_hides_secrets() {
        let c = Config::from_toml_and_env(
            "",
            env(&[
                ("MASKRELAY_API_TOKEN", "supersecrettoken-1234"),
                ("MASKRELAY_DATABASE_URL", "postgres://relay:hunter2hunter2@db.internal:5432/maskrelay"),
                ("MASKRELAY_EGRESS_SMARTHOST_PASSWORD", "smtp-pass-99"),
                ("MASKRELAY_EGRESS_SMARTHOST_USER", "relay"),
                ("MASKRELAY_EGRESS_SMARTHOST_TLS", "tls"),
                ("MASKRELAY_PRIVACY_KEYS", "[\"a2V5LW9uZQ==\"]"),
            ]),
        )
        .unwrap();
        let text = c.to_masked_toml();
        for secret in ["supersecrettoken-1234", "hunter2hunter2", "smtp-pass-99", "a2V5LW9uZQ=="] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        assert!(text.contains("postgres://relay:***@db.internal:5432/maskrelay"), "{text}");
        assert!(text.contains("token = \"<secret: 21 characters>\""), "{text}");
        // The masked text is still TOML with every section.
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert!(back.contains_key("smtp") && back.contains_key("log"));
    }

    #[test]
    fn urls_are_redacted_and_hosts_named() {
        assert_eq!(redact_url("postgres://u:p@h:5432/d"), "postgres://u:***@h:5432/d");
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(url_host("postgres://u:p@db.internal:5432/d?sslmode=require"), "db.internal:5432");
        assert_eq!(url_host("postgres://h/d"), "h");
        assert_eq!(url_host("sqlite://data/relay.db?mode=rwc"), "data/relay.db");
    }

    #[test]
    fn smarthost_credentials_go_only_over_tls_unless_allowed() {
        let base = "[egress]\nmode = \"smarthost\"\nsmarthost = \"10.0.0.1:25\"\n\
                    smarthost_user = \"u\"\nsmarthost_password = \"p\"\n";
        let e = Config::from_toml_and_env(base, env(&[])).unwrap_err();
        assert!(e.to_string().contains("egress.smarthost_user") && e.to_string().contains("clear"), "{e}");
        for extra in ["smarthost_tls = \"starttls\"\n", "smarthost_auth_plaintext = true\n"] {
            let c = Config::from_toml_and_env(&format!("{base}{extra}"), env(&[])).unwrap();
            assert_eq!(c.egress.smarthost_user.as_deref(), Some("u"));
        }
        let e = Config::from_toml_and_env(
            "[egress]\nsmarthost_user = \"u\"\nsmarthost_tls = \"tls\"\n",
            env(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("egress.smarthost_password"), "{e}");
        let e = Config::from_toml_and_env("[egress]\nmax_per_destination = 0\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("egress.max_per_destination"), "{e}");
        let c = Config::from_toml_and_env("[egress]\nworkers = 9\n", env(&[])).unwrap();
        assert_eq!(c.egress.max_per_destination(), 4);
    }

    #[test]
    fn init_template_is_a_valid_config() {
        let mut t = Template {
            domain: "relay.example",
            token: "0123456789abcdef0123456789",
            selector: "s1",
            dkim_key: "/k.pem",
            key_file: "/k.key",
            smarthost: None,
        };
        let c = Config::from_toml_and_env(&commented_template(&t), env(&[])).unwrap();
        assert_eq!(c.relay.domain, "relay.example");
        assert_eq!(c.egress.mode, EgressMode::Mx);
        t.smarthost = Some("smtp.provider.example:587");
        let c = Config::from_toml_and_env(&commented_template(&t), env(&[])).unwrap();
        assert_eq!(c.egress.mode, EgressMode::Smarthost);
        assert_eq!(c.egress.smarthost, "smtp.provider.example:587");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml_and_env("[smtp]\nlisten = \"nope\"\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("smtp.listen"), "{e}");
        let e = Config::from_toml_and_env("[smtp]\nlistn = \"x\"\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        let e = Config::from_toml_and_env("[smtp]\nmax_recipients = \"many\"\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("max_recipients"), "{e}");
        let e = Config::from_toml_and_env("", env(&[("MASKRELAY_SMTP_LISTN", "127.0.0.1:25")])).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        let e = Config::from_toml_and_env("[smtp]\ncommand_timeout_secs = 0\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("smtp.command_timeout_secs"), "{e}");
        let e = Config::from_toml_and_env("[smtp]\nmax_connections_per_ip = 0\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("smtp.max_connections_per_ip"), "{e}");
        let e = Config::from_toml_and_env("", env(&[("MASKRELAY_EGRESS_MODE", "smarthost")])).unwrap_err();
        assert!(e.to_string().contains("egress.smarthost"), "{e}");
        let e = Config::from_toml_and_env("[smtp]\ndata_memory_bytes = 1000000\n", env(&[])).unwrap_err();
        assert!(e.to_string().contains("smtp.data_memory_bytes"), "{e}");
        assert!(e.to_string().contains("smtp.max_message_bytes"), "{e}");
        let c = Config::from_toml_and_env(
            "[smtp]\nmax_message_bytes = 1000000\ndata_memory_bytes = 1000000\n",
            env(&[]),
        )
        .expect("a budget of exactly one maximum-size message");
        assert_eq!(c.smtp.data_memory_bytes, 1_000_000);
    }
}

/// What `maskrelay init` fills into its config.
pub struct Template<'a> {
    pub domain: &'a str,
    pub token: &'a str,
    pub selector: &'a str,
    pub dkim_key: &'a str,
    pub key_file: &'a str,
    /// `host:port` when mail leaves through a smarthost.
    pub smarthost: Option<&'a str>,
}

/// The commented config `maskrelay init` writes.
pub fn commented_template(t: &Template<'_>) -> String {
    let Template { domain, token, selector, dkim_key, key_file, smarthost } = *t;
    let egress = match smarthost {
        Some(host) => format!(
            "mode = \"smarthost\"\nsmarthost = \"{host}\"\n\
             smarthost_tls = \"starttls\"   # \"none\", \"starttls\" or \"tls\" (certificate verified)\n\
             # smarthost_ca_path = \"/etc/ssl/smarthost-ca.pem\"   # default: the system's roots\n\
             # smarthost_user = \"…\"   # the password: MASKRELAY_EGRESS_SMARTHOST_PASSWORD"
        ),
        None => "mode = \"mx\"\n# smarthost = \"127.0.0.1:2526\"\n\
                 # smarthost_tls = \"none\"   # \"none\", \"starttls\" or \"tls\" (certificate verified)\n\
                 # smarthost_ca_path = \"/etc/ssl/smarthost-ca.pem\"   # default: the system's roots\n\
                 # smarthost_user = \"relay\"  # AUTH PLAIN/LOGIN, only over TLS unless\n\
                 # smarthost_auth_plaintext = true"
            .to_owned(),
    };
    format!(
        r#"# maskrelay configuration. Every key can also be set as MASKRELAY_<SECTION>_<KEY>,
# e.g. MASKRELAY_SMTP_LISTEN=0.0.0.0:25. `maskrelay config check` prints what is in force.

[relay]
# The alias domain. Its MX record must point at this host.
domain = "{domain}"
# Shown to stores as "<shopper name> via <marketplace>", and on the shopper's pages.
marketplace = "Marketplace"
# The shoppers' language when a thread names none: "en" or "ja".
locale = "en"

[smtp]
# The MX listener. On the internet: "0.0.0.0:25".
listen = "127.0.0.1:2525"
max_message_bytes = 26214400
# Bytes of messages parsed and rewritten at once (size x (recipients + 1)); more waits.
rewrite_memory_bytes = 67108864
# Bytes of messages being received at once (a declared SIZE is reserved at MAIL); a
# transaction that finds no room gets "452 4.3.1" and is sent again later.
data_memory_bytes = 134217728
max_recipients = 50
max_connections = 200
# One client address (IPv6: one /64) holds at most this many of them.
max_connections_per_ip = 20
# Slow clients: silence, one command line, one whole transaction (MAIL to the end of
# DATA), and the slowest average DATA rate after its first 30 seconds (0: no minimum).
idle_timeout_secs = 300
command_timeout_secs = 300
transaction_timeout_secs = 1800
min_data_bytes_per_sec = 1024
# STARTTLS: a certificate for the relay domain; SIGHUP reloads renewed files.
# tls_cert_path = "/etc/letsencrypt/live/{domain}/fullchain.pem"
# tls_key_path = "/etc/letsencrypt/live/{domain}/privkey.pem"

[auth]
# "dmarc": the From must be an approved sender and pass DMARC. "envelope": trust the
# envelope, for local development only.
mode = "dmarc"

[dns]
# Empty: the system resolver. Or e.g. ["127.0.0.1:5353"].
nameservers = []

[dkim]
# Outgoing mail is signed for the relay domain; publish the record `maskrelay init` printed.
selector = "{selector}"
private_key_path = "{dkim_key}"
# A second signature with Ed25519 (RFC 8463), beside the RSA one; generated when missing.
# ed25519_key_path = "/etc/maskrelay/maskrelay-dkim-ed25519.pem"

[egress]
# "mx": deliver directly by MX lookup. "smarthost": hand everything to one next hop.
{egress}
workers = 32
# MX delivery: deliveries in progress to one MX host at a time (default: workers / 2).
# max_per_destination = 16
# Seconds an unused connection stays open for the next message.
idle_timeout_secs = 30
retry_base_secs = 60
retry_max_secs = 14400
max_queue_days = 5

[queue]
# This relay's id among relays sharing one database (give each its own); unset, it is
# derived from the host name, directory, database URL and smtp.listen.
# node_id = "relay-a"
# Above this many queued messages, new mail gets 451 4.3.1 until deliveries make room.
max_messages = 1000000

[database]
# "sqlite://maskrelay.db", or "postgres://user@host/db" for several relays sharing work.
url = "sqlite://maskrelay.db"

[api]
# The operator API (bearer token). Keep it on a private address.
listen = "127.0.0.1:8080"
token = "{token}"
# A second listener for the shopper pages (/r/…) only, to publish through your proxy.
# public_listen = "127.0.0.1:8081"
# Where shoppers reach the revoke page; put the relay's public HTTPS address here.
# public_url = "https://{domain}"

[threads]
# Days a thread lives when POST /v1/threads gives no ttl_days.
ttl_days = 180
# Days after a thread is revoked, expired or left paused that the shopper's address and
# name are erased (its aliases stay reserved).
erase_after_days = 30

[events]
# Days refusals, bounces and incidents are kept.
retention_days = 400

[privacy]
# Keys that seal shopper addresses, names, queued mail and original Message-IDs in the
# database (XChaCha20-Poly1305) and key the blind index used to find a shopper's threads.
# They are never stored in the database: back the file up apart from it. One base64 key
# per line, the first seals, all open; rotation is in the README ("Privacy keys").
key_file = "{key_file}"
# Or give the keys themselves, e.g. from a secret store: this overrides key_file.
# MASKRELAY_PRIVACY_KEYS='["<new key>", "<old key>"]'
# keys = []

[log]
# "info", "debug", or per module: "info,maskrelay::delivery=debug".
level = "info"
# "text", or "json": one object per line for log shippers.
format = "text"
"#
    )
}
