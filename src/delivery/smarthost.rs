//! `egress.mode = "smarthost"`: every message goes to one next hop through lettre, over
//! pooled connections.
//!
//! Measurement step: lettre's protocol over a TcpStream opened here with TCP_NODELAY,
//! pooled here, with no NOOP before reuse. Plain SMTP only.

use std::sync::Mutex;
use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;

use super::{DeliveryError, DeliveryFuture, Dispatcher, Envelope};
use crate::config::Egress;

/// Delivery to the configured smarthost.
pub struct Smarthost {
    addr: String,
    hello: ClientId,
    idle: Mutex<Vec<AsyncSmtpConnection>>,
}

impl Smarthost {
    pub fn new(config: &Egress, hello_name: &str) -> Result<Self, DeliveryError> {
        Ok(Self {
            addr: config.smarthost.clone(),
            hello: ClientId::Domain(hello_name.to_owned()),
            idle: Mutex::default(),
        })
    }

    async fn connection(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        let tcp = tokio::time::timeout(Duration::from_secs(60), TcpStream::connect(&self.addr))
            .await
            .map_err(|_| DeliveryError::Transient("connect timeout".into()))?
            .map_err(|e| DeliveryError::Transient(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| DeliveryError::Transient(e.to_string()))?;
        AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
            .await
            .map_err(|e| DeliveryError::Transient(e.to_string()))
    }
}

impl Dispatcher for Smarthost {
    fn deliver<'a>(&'a self, envelope: &'a Envelope, message: &'a [u8]) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let lettre_envelope = lettre_envelope(envelope)?;
            let body = message.strip_suffix(b"\r\n").unwrap_or(message);
            let result = conn.send(&lettre_envelope, body).await;
            if !conn.has_broken() && result.is_ok() {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(conn);
                }
            }
            match result {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(e.to_string())),
                Err(e) => Err(DeliveryError::Transient(e.to_string())),
            }
        })
    }
}

/// One send through a lettre transport, with lettre's errors split into transient and
/// permanent.
pub async fn send(
    transport: &lettre::transport::smtp::AsyncSmtpTransport<lettre::Tokio1Executor>,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), DeliveryError> {
    use lettre::AsyncTransport;
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
