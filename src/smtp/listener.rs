//! Accepts connections, caps how many are served at once in all and from one client
//! address, and runs a session for each.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::reply::{self, Reply};
use super::session::Setup;
use super::{Context, Listener};
use crate::shutdown::Shutdown;

/// Serves `listener` until shutdown. Connections over `smtp.max_connections`, or over
/// `smtp.max_connections_per_ip` from one client, get a 421 and are closed at once, so a
/// flood cannot exhaust the relay's memory or file handles and one client cannot take
/// every slot.
pub async fn serve(listener: TcpListener, kind: Listener, ctx: Arc<Context>, mut shutdown: Shutdown) {
    let limit = Arc::new(Semaphore::new(ctx.config.smtp.max_connections));
    let peers = PeerCount::new(ctx.config.smtp.max_connections_per_ip);
    let setup = Arc::new(Setup {
        config: ctx.config.clone(),
        auth: ctx.auth.clone(),
        tls: ctx.tls.clone(),
        data_memory: ctx.data_memory.clone(),
    });
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let _ = stream.set_nodelay(true);
        let Some(slot) = peers.enter(peer.ip()) else {
            crate::metrics::smtp_busy_peer();
            debug!(%peer, "too many connections from this client");
            refuse(stream, reply::BUSY_PEER);
            continue;
        };
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                crate::metrics::smtp_connection(kind);
                let (setup, ctx, shutdown) = (setup.clone(), ctx.clone(), shutdown.clone());
                tokio::spawn(async move {
                    debug!(%peer, "connection");
                    super::session::run(stream, peer, kind, setup, ctx, shutdown).await;
                    drop((permit, slot));
                });
            }
            Err(_) => {
                crate::metrics::smtp_busy();
                drop(slot);
                refuse(stream, reply::BUSY);
            }
        }
    }
}

/// Says why and closes, without waiting for the client.
fn refuse(mut stream: TcpStream, why: Reply) {
    tokio::spawn(async move {
        let mut out = Vec::new();
        why.write_to(&mut out);
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
    });
}

/// Connections open per client. An IPv6 client is counted by its /64: one host is
/// usually given a whole /64 and can pick any address in it.
#[derive(Clone)]
struct PeerCount {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted for a client; leaving the count when dropped.
struct PeerSlot {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PeerCount {
    fn new(max: usize) -> Self {
        Self { max, open: Arc::default() }
    }

    /// A slot for one more connection from `ip`, or None at the cap.
    fn enter(&self, ip: IpAddr) -> Option<PeerSlot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot { key, open: self.open.clone() })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The address a client is counted under: IPv4 (also when mapped into IPv6) as is, IPv6
/// by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_is_capped_and_its_slots_come_back() {
        let peers = PeerCount::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let (s1, s2) = (peers.enter(a).unwrap(), peers.enter(a).unwrap());
        assert!(peers.enter(a).is_none());
        assert!(peers.enter("192.0.2.2".parse().unwrap()).is_some(), "another client is not counted");
        drop(s1);
        assert!(peers.enter(a).is_some());
        drop(s2);
        // An IPv6 /64 is one client; mapped IPv4 is the IPv4 client.
        let _x = peers.enter("2001:db8::1".parse().unwrap()).unwrap();
        let _y = peers.enter("2001:db8::ffff:2".parse().unwrap()).unwrap();
        assert!(peers.enter("2001:db8::9".parse().unwrap()).is_none());
        assert!(peers.enter("2001:db8:0:1::1".parse().unwrap()).is_some());
        let _m = peers.enter("::ffff:192.0.2.9".parse().unwrap()).unwrap();
        let _v4 = peers.enter("192.0.2.9".parse().unwrap()).unwrap();
        assert!(peers.enter("192.0.2.9".parse().unwrap()).is_none());
    }
}
