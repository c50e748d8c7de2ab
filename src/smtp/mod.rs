//! Inbound SMTP: the MX listener, the per-connection session, the transaction that ends
//! in the queue, and the replies.

pub mod listener;
pub mod reply;
pub mod session;
pub mod transaction;

use std::sync::Arc;

use tokio::sync::Notify;

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
    /// Wakes the delivery workers after an enqueue.
    pub wake: Arc<Notify>,
}
