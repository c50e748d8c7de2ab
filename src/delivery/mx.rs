//! `egress.mode = "mx"`: direct delivery to the recipient domain's MX hosts in preference
//! order, with the implicit MX of RFC 5321 5.1 (the domain's own address records) when it
//! publishes none, opportunistic STARTTLS, and one pooled transport per host.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use lettre::Tokio1Executor;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};

use super::{DeliveryError, DeliveryFuture, Dispatcher, Envelope};

/// Direct delivery by MX lookup.
pub struct MxDelivery {
    resolver: TokioResolver,
    port: u16,
    hello_name: String,
    transports: Mutex<HashMap<String, AsyncSmtpTransport<Tokio1Executor>>>,
}

impl MxDelivery {
    pub fn new(resolver: TokioResolver, port: u16, hello_name: &str) -> Self {
        Self { resolver, port, hello_name: hello_name.to_owned(), transports: Mutex::default() }
    }

    /// MX hosts of `domain`, most preferred first.
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
                mxs.sort_by_key(|(pref, _)| *pref);
                // RFC 7505: a single MX of "." says the domain takes no mail.
                if mxs.len() == 1 && mxs[0].1.trim_end_matches('.').is_empty() {
                    return Err(DeliveryError::Permanent(format!("{domain} accepts no mail (null MX)")));
                }
                if mxs.is_empty() {
                    return Ok(vec![fqdn]);
                }
                Ok(mxs.into_iter().map(|(_, h)| h).collect())
            }
            Err(e) if e.is_nx_domain() => {
                Err(DeliveryError::Permanent(format!("domain {domain} does not exist")))
            }
            Err(e) if e.is_no_records_found() => Ok(vec![fqdn]),
            Err(e) => Err(DeliveryError::Transient(format!("MX lookup for {domain}: {e}"))),
        }
    }

    /// Addresses of an MX host, through the relay's resolver (not the system's: with
    /// `dns.nameservers` set, all DNS must go there).
    async fn addresses(&self, host: &str) -> Vec<IpAddr> {
        match self.resolver.lookup_ip(host).await {
            Ok(ips) => ips.iter().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn transport(&self, host: &str, ip: IpAddr) -> Result<AsyncSmtpTransport<Tokio1Executor>, DeliveryError> {
        let host = host.trim_end_matches('.').to_owned();
        let key = format!("{host}/{ip}");
        let mut map = self.transports.lock().map_err(|_| DeliveryError::Transient("poisoned".into()))?;
        if let Some(t) = map.get(&key) {
            return Ok(t.clone());
        }
        // Opportunistic TLS as MTAs do it (RFC 7435): encrypt when offered, without
        // refusing a certificate no one can check (MX hosts are rarely named in theirs).
        let params = TlsParameters::builder(host.clone())
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true)
            .build_rustls()
            .map_err(|e| DeliveryError::Transient(e.to_string()))?;
        // Connect to the address; TLS still names the host (SNI).
        let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(ip.to_string())
            .port(self.port)
            .tls(Tls::Opportunistic(params))
            .hello_name(ClientId::Domain(self.hello_name.clone()))
            .timeout(Some(Duration::from_secs(60)))
            .pool_config(PoolConfig::new().max_size(4).idle_timeout(Duration::from_secs(30)))
            .build();
        map.insert(key, t.clone());
        Ok(t)
    }
}

impl Dispatcher for MxDelivery {
    fn deliver<'a>(&'a self, envelope: &'a Envelope, message: &'a [u8]) -> DeliveryFuture<'a> {
        Box::pin(async move {
            let domain = envelope
                .rcpt_to
                .rsplit_once('@')
                .map(|(_, d)| d.to_owned())
                .ok_or_else(|| DeliveryError::Permanent("recipient has no domain".into()))?;
            let mut last = DeliveryError::Transient(format!("no MX host reachable for {domain}"));
            for host in self.hosts(&domain).await? {
                for ip in self.addresses(&host).await {
                    let transport = self.transport(&host, ip)?;
                    match super::smarthost::send(&transport, envelope, message).await {
                        Ok(()) => return Ok(()),
                        Err(e @ DeliveryError::Permanent(_)) => return Err(e),
                        // Next address, next MX host (RFC 5321 5.1: try the others first).
                        Err(e) => last = e,
                    }
                }
            }
            Err(last)
        })
    }
}
