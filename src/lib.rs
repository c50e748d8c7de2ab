//! maskrelay: an email-forwarding privacy relay. A message travels
//! listener → session → (authorize, rewrite) → queue → delivery.

pub mod address;
pub mod config;
pub mod rewrite;
pub mod store;
pub mod delivery;
pub mod dns;
pub mod queue;
pub mod shutdown;
pub mod auth;
pub mod smtp;
pub mod time;
pub mod api;
pub mod server;
