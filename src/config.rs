//! Typed configuration: embedded defaults, a TOML file, then `MASKRELAY_<SECTION>_<KEY>`
//! environment overrides. Every error names the key at fault.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Toml(String),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
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
    pub database: Database,
    pub api: Api,
    pub threads: Threads,
    pub privacy: Privacy,
    pub events: Events,
    pub webhooks: Webhooks,
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
    pub private_key_path: String,
}
impl Default for Dkim {
    fn default() -> Self {
        Self { selector: "maskrelay".into(), private_key_path: "maskrelay-dkim.pem".into() }
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
    /// Delivery workers per process.
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
    /// Seconds a worker may hold a message before another may take it over.
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
            workers: 4,
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
    pub listen: String,
    /// Operator bearer token; generated and printed once at start when unset.
    pub token: Option<String>,
    /// Base URL shoppers reach the revoke page at; defaults to `http://<api.listen>`.
    pub public_url: Option<String>,
}
impl Default for Api {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), token: None, public_url: None }
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

const ENV_PREFIX: &str = "MASKRELAY_";
const SECTIONS: &[&str] = &[
    "relay",
    "smtp",
    "submission",
    "auth",
    "dns",
    "dkim",
    "egress",
    "database",
    "api",
    "threads",
    "privacy",
    "events",
    "webhooks",
];

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, std::env::vars())
    }

    /// The same, with the file text and environment given (for tests).
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Toml(format!("config file: {e}")))?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            let Some((section, key)) = rest.split_once('_') else { continue };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            // Other MASKRELAY_* variables (MASKRELAY_LOG, the test suite's) are not config;
            // a wrong key inside a real section still is an error.
            if !SECTIONS.contains(&section.as_str()) {
                continue;
            }
            let entry =
                table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(t) = entry else {
                return Err(invalid(&section, "must be a table"));
            };
            t.insert(key, env_value(&value));
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
        parse_addr("api.listen", &self.api.listen)?;
        if !self.submission.listen.is_empty() {
            parse_addr("submission.listen", &self.submission.listen)?;
        }
        let positive = [
            ("smtp.max_message_bytes", self.smtp.max_message_bytes),
            ("smtp.max_recipients", self.smtp.max_recipients),
            ("smtp.max_commands", self.smtp.max_commands),
            ("smtp.max_connections", self.smtp.max_connections),
            ("smtp.max_connections_per_ip", self.smtp.max_connections_per_ip),
            ("smtp.rewrite_memory_bytes", self.smtp.rewrite_memory_bytes),
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
            None => format!("http://{}", self.api.listen),
        }
    }
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| invalid(key, format!("{v:?} is not an IP:port socket address")))
}

/// An environment value is read as a TOML value when it is one (`25`, `true`, `["a"]`),
/// else as a plain string (`127.0.0.1:2525`).
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
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
                ("OTHER_VAR", "x"),
                ("MASKRELAY_REQUIRE_POSTGRES", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.smtp.max_recipients, 7);
        assert_eq!(c.relay.domain, "a.example");
        assert_eq!(c.api.token.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(c.dns.nameservers, vec!["127.0.0.1:5353"]);
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
        let c = Config::from_toml_and_env(
            &commented_template("relay.example", "0123456789abcdef0123456789", "s1", "/k.pem", "/k.key"),
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.relay.domain, "relay.example");
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
    }
}

/// The commented config `maskrelay init` writes.
pub fn commented_template(
    domain: &str,
    token: &str,
    selector: &str,
    dkim_key: &str,
    key_file: &str,
) -> String {
    format!(
        r#"# maskrelay configuration. Every key can also be set as MASKRELAY_<SECTION>_<KEY>,
# e.g. MASKRELAY_SMTP_LISTEN=0.0.0.0:25.

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

[egress]
# "mx": deliver directly by MX lookup. "smarthost": hand everything to one next hop.
mode = "mx"
# smarthost = "127.0.0.1:2526"
# smarthost_tls = "none"   # "none", "starttls" or "tls" (certificate verified)
# smarthost_ca_path = "/etc/ssl/smarthost-ca.pem"   # default: the system's roots
# smarthost_user = "relay"  # AUTH PLAIN/LOGIN, only over TLS unless
# smarthost_auth_plaintext = true
workers = 4
# MX delivery: deliveries in progress to one MX host at a time (default: workers / 2).
# max_per_destination = 2
# Seconds an unused connection stays open for the next message.
idle_timeout_secs = 30
retry_base_secs = 60
retry_max_secs = 14400
max_queue_days = 5

[database]
# "sqlite://maskrelay.db", or "postgres://user@host/db" for several relays sharing work.
url = "sqlite://maskrelay.db"

[api]
listen = "127.0.0.1:8080"
token = "{token}"
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
"#
    )
}
