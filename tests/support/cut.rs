//! A TCP proxy in front of PostgreSQL that can break one connection at the worst moment:
//! right after it forwarded a COMMIT, before the server's answer gets back. The server
//! commits; the client sees its connection drop and cannot tell whether it did.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// PostgreSQL's simple-query message for `COMMIT` (what sqlx sends to end a transaction).
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

#[derive(Default)]
struct State {
    /// Break the next COMMIT on a connection that has sent this.
    armed: Option<Vec<u8>>,
    cuts: usize,
}

pub struct CutProxy {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
}

impl CutProxy {
    /// Forwards every connection to `upstream` (host:port).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                tokio::spawn(pipe(client, server, shared.clone()));
            }
        });
        Self { addr, state }
    }

    /// The next COMMIT on a connection whose traffic so far contains `after` is forwarded,
    /// and then the connection is broken before the answer comes back. Once.
    pub fn arm(&self, after: &[u8]) {
        self.state.lock().unwrap().armed = Some(after.to_vec());
    }

    /// How many connections were broken so.
    pub fn cuts(&self) -> usize {
        self.state.lock().unwrap().cuts
    }

    /// `url` (a postgres:// URL) with its host and port replaced by the proxy's, without
    /// TLS (the proxy reads the protocol).
    pub fn url(&self, url: &str) -> String {
        let (scheme_user, rest) = url.split_once('@').expect("postgres url with user@host");
        let (_, path) = rest.split_once('/').expect("postgres url with a database");
        let join = if path.contains('?') { '&' } else { '?' };
        format!("{scheme_user}@{}/{path}{join}sslmode=disable", self.addr)
    }
}

/// The host:port a postgres:// URL names.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once('@').expect("user@host").1;
    rest.split_once('/').expect("a database").0.to_owned()
}

async fn pipe(client: TcpStream, server: TcpStream, state: Arc<Mutex<State>>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let (cut_tx, mut cut_rx) = tokio::sync::watch::channel(false);
    let (answered_tx, mut answered_rx) = tokio::sync::watch::channel(false);
    let upstream = async move {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            seen.extend_from_slice(&buf[..n]);
            let cut = {
                let mut s = state.lock().unwrap();
                let hit = s
                    .armed
                    .as_ref()
                    .is_some_and(|after| contains(&seen, after) && contains(&seen[seen.len() - n..], COMMIT));
                if hit {
                    s.armed = None;
                    s.cuts += 1;
                }
                hit
            };
            if cut {
                // Stop answers first, then let the COMMIT through: the server commits, the
                // client never hears of it.
                let _ = cut_tx.send(true);
                let _ = server_tx.write_all(&buf[..n]).await;
                // The server's answer means the commit is done: only then is the
                // connection broken (closing earlier could abort it instead).
                let _ = tokio::time::timeout(Duration::from_secs(10), answered_rx.wait_for(|a| *a)).await;
                return;
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                r = server_rx.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                _ = cut_rx.wait_for(|cut| *cut) => break,
            };
            if *cut_rx.borrow() {
                let _ = answered_tx.send(true);
                break;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
        // Cut: nothing more reaches the client. The first answer from the server after the
        // cut is the COMMIT's; the upstream half then ends the connection.
        while !*answered_tx.borrow() {
            match server_rx.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    let _ = answered_tx.send(true);
                }
                _ => break,
            }
        }
        std::future::pending::<()>().await
    };
    // Either side ending ends both: every half is dropped, both sockets close.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
