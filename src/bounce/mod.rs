//! Bounces, both ways: DSNs that come back to a message's VERP address are read and tied to
//! the message and its thread (`dsn`, `verp`), and the relay writes its own notice to the
//! sender of a message it could not deliver (`notice`). The inbound SMTP side reaches these
//! through `bounce::` only, never through `delivery/`.

pub mod dsn;
pub mod notice;
pub mod verp;

pub use dsn::{BounceReport, parse_dsn};
pub use notice::notice;
pub use verp::queue_id_of;
