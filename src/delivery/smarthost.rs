//! `egress.mode = "smarthost"`: every message goes to one next hop through lettre, over
//! pooled connections.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{AsyncTransport, Tokio1Executor};

use super::{DeliveryError, DeliveryFuture, Dispatcher, Envelope};
use crate::config::{Egress, SmarthostTls};

/// Delivery to the configured smarthost.
pub struct Smarthost {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Smarthost {
    pub fn new(config: &Egress, hello_name: &str) -> Result<Self, DeliveryError> {
        let (host, port) = config
            .smarthost
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| DeliveryError::Permanent("egress.smarthost: expected host:port".into()))?;
        let tls = match config.smarthost_tls {
            SmarthostTls::None => Tls::None,
            SmarthostTls::Starttls => Tls::Required(tls_params(host)?),
            SmarthostTls::Tls => Tls::Wrapper(tls_params(host)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .hello_name(ClientId::Domain(hello_name.to_owned()))
            .timeout(Some(Duration::from_secs(60)))
            .pool_config(PoolConfig::new().max_size(config.workers.max(1) as u32));
        if let (Some(user), Some(pass)) = (&config.smarthost_user, &config.smarthost_password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Self { transport: builder.build() })
    }
}

fn tls_params(host: &str) -> Result<TlsParameters, DeliveryError> {
    TlsParameters::new(host.to_owned()).map_err(|e| DeliveryError::Permanent(e.to_string()))
}

impl Dispatcher for Smarthost {
    fn deliver<'a>(&'a self, envelope: &'a Envelope, message: &'a [u8]) -> DeliveryFuture<'a> {
        Box::pin(async move { send(&self.transport, envelope, message).await })
    }
}

/// One send through a lettre transport, with lettre's errors split into transient and
/// permanent.
pub async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), DeliveryError> {
    let lettre_envelope = lettre_envelope(envelope)?;
    // lettre appends CRLF.CRLF itself; without this the message would gain a blank line.
    let body = message.strip_suffix(b"\r\n").unwrap_or(message);
    match transport.send_raw(&lettre_envelope, body).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(e.to_string())),
        // 4xx, connection refused, timeouts, TLS trouble: all worth another try.
        Err(e) => Err(DeliveryError::Transient(e.to_string())),
    }
}

fn lettre_envelope(envelope: &Envelope) -> Result<lettre::address::Envelope, DeliveryError> {
    let parse = |s: &str| {
        s.parse::<lettre::Address>().map_err(|_| DeliveryError::Permanent("invalid envelope address".into()))
    };
    // An empty reverse-path is the null sender `<>` of notices.
    let from = if envelope.mail_from.is_empty() { None } else { Some(parse(&envelope.mail_from)?) };
    lettre::address::Envelope::new(from, vec![parse(&envelope.rcpt_to)?])
        .map_err(|e| DeliveryError::Permanent(e.to_string()))
}
