//! `egress.mode = "mx"`: direct delivery to the recipient domain's MX hosts in preference
//! order (RFC 5321 5.1), with the implicit MX (the domain's own address records) when it
//! publishes none, the null MX of RFC 7505 refused for good, every name resolved through
//! the relay's resolver, and opportunistic STARTTLS. A transient failure moves on to the
//! next address, then the next host.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use tracing::debug;

use super::client::{Settings, Timeouts, TlsMode};
use super::pool::Limits;
use super::transport::{Destination, Transport};
use super::{DeliveryError, DeliveryFuture, Dispatcher, Envelope, Stage, Status, dkim, tls};
use crate::config::Egress;

/// Direct delivery by MX lookup.
pub struct MxDelivery {
    resolver: TokioResolver,
    port: u16,
    transport: Transport,
}

/// What a lookup of a host's addresses found.
enum Addresses {
    Found(Vec<IpAddr>),
    /// The name exists (or not) and has no address: an authoritative "none".
    None,
    /// The DNS did not answer usefully: worth another try later.
    Failed,
}

impl MxDelivery {
    pub fn new(resolver: TokioResolver, config: &Egress, hello_name: &str) -> Result<Self, tls::TlsError> {
        let settings = Settings {
            hello: hello_name.to_owned(),
            timeouts: Timeouts::from_config(config),
            opportunistic_tls: tls::opportunistic()?,
            verified_tls: None,
            credentials: None,
            plaintext_auth: false,
        };
        let limits = Limits {
            per_destination: config.max_per_destination(),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            max_pools: config.max_pools,
        };
        Ok(Self { resolver, port: config.mx_port, transport: Transport::new(settings, limits) })
    }

    /// MX hosts of `domain`, most preferred first; the domain itself when it has none.
    async fn hosts(&self, domain: &str) -> Result<Vec<String>, DeliveryError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut mxs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                // Equal preferences keep the resolver's order (RFC 5321 5.1 allows any).
                mxs.sort_by_key(|(pref, _)| *pref);
                // RFC 7505 3: a single MX of "." says the domain takes no mail.
                if mxs.len() == 1 && mxs[0].1.trim_end_matches('.').is_empty() {
                    return Err(DeliveryError::local(
                        Status::new(5, 1, 10),
                        "the recipient's domain accepts no mail (null MX, RFC 7505)",
                    ));
                }
                if mxs.is_empty() {
                    return Ok(vec![fqdn]);
                }
                Ok(mxs.into_iter().map(|(_, h)| h).collect())
            }
            Err(e) if e.is_nx_domain() => {
                Err(DeliveryError::local(Status::new(5, 1, 2), "the recipient's domain does not exist"))
            }
            Err(e) if e.is_no_records_found() => Ok(vec![fqdn]),
            Err(e) => {
                debug!(error = %e, "MX lookup failed");
                Err(DeliveryError::unreachable(
                    Stage::Resolve,
                    "the MX lookup failed (DNS server failure or timeout)",
                ))
            }
        }
    }

    /// Addresses of a host, through the relay's resolver (not the system's: with
    /// `dns.nameservers` set, all DNS must go there).
    async fn addresses(&self, host: &str) -> Addresses {
        match self.resolver.lookup_ip(host).await {
            Ok(ips) => Addresses::Found(ips.iter().collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Addresses::None,
            Err(e) => {
                debug!(error = %e, "address lookup failed");
                Addresses::Failed
            }
        }
    }
}

impl Dispatcher for MxDelivery {
    fn deliver<'a>(
        &'a self,
        envelope: &'a Envelope,
        message: &'a [u8],
        signer: &'a dkim::Signer,
    ) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let domain = envelope.rcpt_to.rsplit_once('@').map(|(_, d)| d.to_owned()).ok_or_else(|| {
                DeliveryError::local(Status::new(5, 1, 3), "the recipient address has no domain")
            })?;
            let hosts = self.hosts(&domain).await?;
            let implicit = hosts.len() == 1 && hosts[0].trim_end_matches('.') == domain.trim_end_matches('.');
            let mut last = None;
            let mut any_address = false;
            for host in &hosts {
                let ips = match self.addresses(host).await {
                    Addresses::Found(ips) => ips,
                    Addresses::None => continue,
                    Addresses::Failed => {
                        last.get_or_insert(DeliveryError::unreachable(
                            Stage::Resolve,
                            "an MX host's address lookup failed (DNS server failure or timeout)",
                        ));
                        continue;
                    }
                };
                any_address |= !ips.is_empty();
                for ip in ips {
                    let dest = Destination {
                        host: host.trim_end_matches('.').to_owned(),
                        addr: SocketAddr::new(ip, self.port),
                        tls: TlsMode::Opportunistic,
                    };
                    match self.transport.deliver(&dest, envelope, message, signer).await {
                        Ok(_) => return Ok(()),
                        Err(e) if e.is_permanent() || e.may_have_been_delivered() => return Err(e),
                        // The host is up and at its limit: wait for it rather than send to a
                        // backup MX.
                        Err(e @ DeliveryError::Busy { .. }) => return Err(e),
                        // RFC 5321 5.1: on a transient failure, try the next address, then
                        // the next host.
                        Err(e) => last = Some(e),
                    }
                }
            }
            match last {
                Some(e) => Err(e),
                // RFC 5321 5.1: no MX and no address record: there is nowhere to deliver.
                None if implicit && !any_address => Err(DeliveryError::local(
                    Status::new(5, 4, 4),
                    "the recipient's domain publishes neither MX nor address records",
                )),
                None => Err(DeliveryError::unreachable(
                    Stage::Resolve,
                    "none of the recipient domain's MX hosts has an address",
                )),
            }
        })
    }
}
