//! `egress.mode = "smarthost"`: every message goes to one configured next hop, in plain
//! SMTP, with STARTTLS required, or in TLS from the first byte (`egress.smarthost_tls`),
//! the certificate verified, and with SMTP AUTH when credentials are configured.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::{Credentials, Settings, Timeouts, TlsMode};
use super::pool::Limits;
use super::transport::{Destination, Transport};
use super::{DeliveryError, DeliveryFuture, Dispatcher, Envelope, Stage, dkim, tls};
use crate::config::{Egress, SmarthostTls};

/// How long the smarthost's resolved addresses are used before it is looked up again.
const RESOLVED_FOR: Duration = Duration::from_secs(60);

/// Delivery to the configured smarthost.
pub struct Smarthost {
    host: String,
    port: u16,
    tls: TlsMode,
    transport: Transport,
    resolved: Mutex<Option<(Instant, Vec<SocketAddr>)>>,
}

/// Why the smarthost settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SmarthostError {
    #[error("egress.smarthost: expected host:port, got {0:?}")]
    Address(String),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
}

impl Smarthost {
    pub fn new(config: &Egress, hello_name: &str) -> Result<Self, SmarthostError> {
        let (host, port) = config
            .smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| SmarthostError::Address(config.smarthost.clone()))?;
        let tls = match config.smarthost_tls {
            SmarthostTls::None => TlsMode::Plain,
            SmarthostTls::Starttls => TlsMode::Starttls,
            SmarthostTls::Tls => TlsMode::Implicit,
        };
        let verified_tls = match tls {
            TlsMode::Plain => None,
            _ => Some(tls::verified(config.smarthost_ca_path.as_deref())?),
        };
        let credentials = match (&config.smarthost_user, &config.smarthost_password) {
            (Some(user), Some(password)) => {
                Some(Credentials { user: user.clone(), password: password.clone() })
            }
            _ => None,
        };
        let settings = Settings {
            hello: hello_name.to_owned(),
            timeouts: Timeouts::from_config(config),
            opportunistic_tls: tls::opportunistic()?,
            verified_tls,
            credentials,
            plaintext_auth: config.smarthost_auth_plaintext,
        };
        // One destination: it may use every worker.
        let limits = Limits {
            per_destination: config.workers.max(1),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_pools: config.max_pools,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
            transport: Transport::new(settings, limits),
            resolved: Mutex::new(None),
        })
    }

    /// The smarthost's addresses, through the system resolver (it is the operator's own
    /// host, often named in /etc/hosts), kept for a minute.
    async fn addresses(&self) -> Result<Vec<SocketAddr>, DeliveryError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        if let Ok(cached) = self.resolved.lock()
            && let Some((at, addrs)) = cached.as_ref()
            && at.elapsed() < RESOLVED_FOR
        {
            return Ok(addrs.clone());
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| DeliveryError::unreachable(Stage::Resolve, format!("smarthost lookup: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(DeliveryError::unreachable(Stage::Resolve, "the smarthost's name has no address"));
        }
        if let Ok(mut cached) = self.resolved.lock() {
            *cached = Some((Instant::now(), addrs.clone()));
        }
        Ok(addrs)
    }
}

impl Dispatcher for Smarthost {
    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a [u8],
        signer: &'a dkim::Signer,
    ) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let mut last = None;
            for addr in self.addresses().await? {
                let dest = Destination { host: self.host.clone(), addr, tls: self.tls };
                match self.transport.deliver(&dest, envelope, message, signer).await {
                    Ok(_) => return Ok(()),
                    // Another address of the same host is worth trying only when this one
                    // could not be reached at all.
                    Err(e @ DeliveryError::Unreachable { stage: Stage::Connect, .. }) => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| DeliveryError::unreachable(Stage::Resolve, "no smarthost address")))
        })
    }
}
