//! Accepts connections, caps how many are served at once, and runs a session for each.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::reply;
use super::{Context, Listener};
use crate::shutdown::Shutdown;

/// Serves `listener` until shutdown. Connections over `smtp.max_connections` get a 421
/// and are closed at once, so a flood cannot exhaust the relay's memory or file handles.
pub async fn serve(listener: TcpListener, kind: Listener, ctx: Arc<Context>, mut shutdown: Shutdown) {
    let limit = Arc::new(Semaphore::new(ctx.config.smtp.max_connections));
    loop {
        let (mut stream, peer) = tokio::select! {
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
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                crate::metrics::smtp_connection(kind);
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    debug!(%peer, "connection");
                    super::session::run(stream, peer, kind, ctx, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                crate::metrics::smtp_busy();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    reply::BUSY.write_to(&mut out);
                    let _ = stream.write_all(&out).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}
