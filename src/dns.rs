//! The one DNS resolver of the relay: the system's, or the servers of `dns.nameservers`
//! (so tests can serve a local zone).

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ProtocolConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Why no resolver could be built.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("dns.nameservers: {0:?} is not an IP:port")]
    BadServer(String),
    #[error("cannot set up DNS resolution: {0}")]
    Setup(String),
}

/// A resolver over `nameservers` (each `IP:port`), or the system's when empty.
pub fn resolver(nameservers: &[String]) -> Result<TokioResolver, DnsError> {
    if nameservers.is_empty() {
        return TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| DnsError::Setup(e.to_string()));
    }
    let mut servers = Vec::new();
    for s in nameservers {
        let addr: SocketAddr = s.parse().map_err(|_| DnsError::BadServer(s.clone()))?;
        let connections = [ProtocolConfig::Udp, ProtocolConfig::Tcp]
            .into_iter()
            .map(|p| {
                let mut c = ConnectionConfig::new(p);
                c.port = addr.port();
                c
            })
            .collect();
        servers.push(NameServerConfig::new(addr.ip(), true, connections));
    }
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(servers),
        TokioRuntimeProvider::default(),
    )
    .build()
    .map_err(|e| DnsError::Setup(e.to_string()))
}
