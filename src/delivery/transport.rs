//! One delivery to one destination: a pooled connection (or a new one), the message
//! fitted to what that next hop supports, signed, sent. The one path every outgoing
//! message takes, smarthost and MX alike.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::debug;

use super::client::{Capabilities, Connection, Settings, TlsMode, Transaction};
use super::pool::{Limits, Pools};
use super::{DeliveryError, Envelope, Reply, Stage, Status, dkim, downgrade};

/// Where a connection goes: pools and limits are per destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The host's name: for TLS (SNI, certificate checks) and the pool key.
    pub host: String,
    pub addr: SocketAddr,
    pub tls: TlsMode,
}

/// Sends messages over pooled connections.
pub struct Transport {
    settings: Settings,
    pools: Arc<Pools<Destination, Connection>>,
}

/// The message as it goes to one next hop.
#[derive(Debug)]
pub struct Fitted {
    pub bytes: Vec<u8>,
    pub eight_bit: bool,
    pub smtputf8: bool,
}

impl Transport {
    /// Inside a tokio runtime, also starts the task that closes idle connections.
    pub fn new(settings: Settings, limits: Limits) -> Self {
        let pools = Arc::new(Pools::new(limits));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_idle(Arc::downgrade(&pools)));
        }
        Self { settings, pools }
    }

    /// Delivers `message` (unsigned) to `dest`; the reply is the next hop's 250.
    pub async fn deliver(
        &self,
        dest: &Destination,
        envelope: &Envelope,
        message: &[u8],
        signer: &dkim::Signer,
    ) -> Result<Reply, DeliveryError> {
        let Some(mut lease) = self.pools.checkout(dest) else {
            let limit = self.pools.limits().per_destination;
            return Err(DeliveryError::Busy {
                reason: format!(
                    "{limit} deliveries to this next hop are in progress (egress.max_per_destination)"
                ),
                retry_after: Duration::from_secs(1),
            });
        };
        loop {
            let (mut conn, reused) = match lease.take_idle() {
                Some(conn) => (conn, true),
                None => (self.open(dest).await?, false),
            };
            crate::metrics::egress_connection(reused);
            let fitted = match fit(message, envelope, conn.capabilities(), signer) {
                Ok(f) => f,
                Err(e) => {
                    lease.put_back(conn);
                    return Err(e);
                }
            };
            let tx = Transaction {
                mail_from: &envelope.mail_from,
                rcpt_to: &envelope.rcpt_to,
                message: &fitted.bytes,
                eight_bit: fitted.eight_bit,
                smtputf8: fitted.smtputf8,
            };
            match conn.send(&tx).await {
                Ok(reply) => {
                    lease.put_back(conn);
                    return Ok(reply);
                }
                // A pooled connection the server closed while it sat idle fails before
                // anything of this message was accepted: try once more on a new one.
                Err(e) if reused && closed_while_idle(&e) => {
                    debug!(error = %e, "pooled connection was closed by the next hop; opening a new one");
                }
                Err(e) => {
                    if conn.is_usable() {
                        lease.put_back(conn);
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn open(&self, dest: &Destination) -> Result<Connection, DeliveryError> {
        match Connection::open(&dest.host, dest.addr, dest.tls, &self.settings).await {
            // RFC 7435: opportunistic security falls back to the clear rather than not
            // delivering (as Postfix's "may" level does); a verified mode never does.
            Err(e @ DeliveryError::Unreachable { stage: Stage::TlsHandshake | Stage::StartTls, .. })
                if dest.tls == TlsMode::Opportunistic =>
            {
                debug!(error = %e, "opportunistic TLS failed; delivering in the clear");
                Connection::open(&dest.host, dest.addr, TlsMode::Plain, &self.settings).await
            }
            other => other,
        }
    }
}

/// The failures a connection closed by the server while idle produces at the first
/// command of the next transaction.
fn closed_while_idle(e: &DeliveryError) -> bool {
    match e {
        DeliveryError::Unreachable { stage, .. } => matches!(stage, Stage::Rset | Stage::MailFrom),
        DeliveryError::Refused { stage, reply } => {
            reply.code == 421 && matches!(stage, Stage::Rset | Stage::MailFrom)
        }
        _ => false,
    }
}

/// Closes connections that have been idle too long, until the pools are gone.
async fn close_idle(pools: Weak<Pools<Destination, Connection>>) {
    loop {
        let Some(period) = pools.upgrade().map(|p| (p.limits().idle_timeout / 2).max(Duration::from_secs(1)))
        else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(expired) = pools.upgrade().map(|p| p.expired()) else { return };
        for conn in expired {
            conn.quit().await;
        }
    }
}

/// The message fitted to a next hop with these capabilities, then signed, so the
/// signature covers exactly what is sent:
/// - an internationalized envelope needs SMTPUTF8 (RFC 6531 3.4), or the mail cannot go;
/// - without SMTPUTF8, 8-bit header fields are written in ASCII (`downgrade::headers`);
/// - without 8BITMIME, 8-bit parts are re-encoded (`downgrade::body`, RFC 6152 3);
/// - for every next hop, lines over 998 octets are folded or re-encoded
///   (`downgrade::long_lines`, RFC 5322 2.1.1): a strict next hop would refuse them after
///   the relay had already said 250;
/// - a message bigger than the next hop's SIZE is refused here (RFC 1870), for good.
pub fn fit(
    message: &[u8],
    envelope: &Envelope,
    caps: &Capabilities,
    signer: &dkim::Signer,
) -> Result<Fitted, DeliveryError> {
    let ascii_envelope = envelope.mail_from.is_ascii() && envelope.rcpt_to.is_ascii();
    if !ascii_envelope && !caps.smtputf8 {
        return Err(DeliveryError::local(
            Status::new(5, 6, 7),
            "the envelope holds an internationalized address and the next hop does not offer SMTPUTF8",
        ));
    }
    let mut fitted = Cow::Borrowed(message);
    if !caps.smtputf8
        && let Some(ascii) = downgrade::headers(&fitted)
    {
        fitted = Cow::Owned(ascii);
    }
    if !caps.eight_bit_mime
        && let Some(seven_bit) = downgrade::body(&fitted)
    {
        fitted = Cow::Owned(seven_bit);
    }
    if let Some(short) = downgrade::long_lines(&fitted) {
        fitted = Cow::Owned(short);
    }
    let bytes = signer
        .sign(&fitted)
        .map_err(|e| DeliveryError::local(Status::new(4, 3, 0), format!("DKIM signing failed: {e}")))?;
    if let Some(max) = caps.max_size()
        && bytes.len() as u64 > max
    {
        return Err(DeliveryError::local(
            Status::new(5, 3, 4),
            format!("the message is {} bytes and the next hop accepts at most {max} (SIZE)", bytes.len()),
        ));
    }
    let eight_bit_headers = !downgrade::header_block(&bytes).is_ascii();
    Ok(Fitted {
        // What no encoding can declare (8-bit in a multipart preamble) goes as it is.
        eight_bit: caps.eight_bit_mime && !bytes.is_ascii(),
        smtputf8: caps.smtputf8 && (!ascii_envelope || eight_bit_headers),
        bytes,
    })
}
