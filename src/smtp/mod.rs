//! Inbound SMTP: the MX listener, the per-connection session, the transaction that ends
//! in the queue, and the replies.

pub mod backend;
pub mod clock;
pub mod data;
pub mod heap;
pub mod hygiene;
pub mod listener;
pub mod reply;
pub mod session;
pub mod tls;
pub mod transaction;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use crate::auth::Authorizer;
use crate::auth::dmarc::DmarcVerifier;
use crate::config::Config;
use crate::store::Db;

/// What every session shares.
pub struct Context {
    pub config: Arc<Config>,
    pub db: Db,
    pub auth: Authorizer,
    /// Present in `auth.mode = "dmarc"`.
    pub dmarc: Option<DmarcVerifier>,
    /// Present when a certificate is configured: STARTTLS is offered.
    pub tls: Option<TlsAcceptor>,
    /// Wakes the delivery workers after an enqueue.
    pub wake: Arc<Notify>,
    /// `queue.max_messages`: whether new mail must wait.
    pub backpressure: crate::queue::Backpressure,
    /// Group commit: the queue writes of every session go through one writer task.
    pub writer: crate::queue::writer::Writer,
    /// `smtp.rewrite_memory_bytes`: room for messages being parsed and rewritten.
    pub rewrite_memory: backend::MemoryBudget,
    /// `smtp.data_memory_bytes`: room for messages being received, shared by the MX and
    /// submission listeners.
    pub data_memory: backend::DataBudget,
}

/// Which listener a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 25 style: mail to aliases from anyone, sender checked per alias.
    Mx,
    /// Stores submit with SMTP AUTH after STARTTLS; the login authorizes.
    Submission,
}
