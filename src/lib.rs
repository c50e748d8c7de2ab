//! maskrelay: an email-forwarding privacy relay. A message travels
//! listener → session → (authorize, rewrite) → queue → delivery.

pub mod address;
pub mod admin;
pub mod api;
pub mod auth;
pub mod bounce;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod leak;
pub mod locale;
pub mod metrics;
pub mod privacy;
pub mod queue;
pub mod records;
pub mod retention;
pub mod rewrite;
pub mod server;
pub mod shutdown;
pub mod smtp;
pub mod store;
pub mod time;
pub mod webhook;
