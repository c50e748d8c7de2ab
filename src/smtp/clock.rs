//! The deadlines of one session, so a slow or greedy client cannot hold a connection for
//! as long as it likes by sending a byte now and then:
//!
//! - silence: no byte at all for `smtp.idle_timeout_secs`;
//! - a command: the whole line must arrive within `smtp.command_timeout_secs` of the relay
//!   waiting for it (RFC 5321 4.5.3.2.7: five minutes), however it is dripped;
//! - a transaction: from MAIL to the end of its data, `smtp.transaction_timeout_secs`;
//! - DATA: after a grace of `DATA_GRACE`, at least `smtp.min_data_bytes_per_sec` on average.
//!
//! Whichever comes first closes the connection with a 421 that says which it was.

use std::time::Duration;

use tokio::time::Instant;

use super::reply::{self, Reply};
use crate::config::Smtp;

/// How long DATA may run before its average rate is held to the minimum: time for a
/// sending MTA to open its spool file and for TCP to get going.
pub const DATA_GRACE: Duration = Duration::from_secs(30);

/// Where one session's deadlines stand.
#[derive(Debug)]
pub struct Clock {
    idle: Duration,
    command: Duration,
    transaction: Duration,
    min_rate: u64,
    /// Since when the relay waits for the command it has not fully read.
    command_since: Option<Instant>,
    /// When the open transaction's MAIL was accepted.
    transaction_since: Option<Instant>,
    /// When 354 was sent, and the bytes read since.
    data: Option<(Instant, u64)>,
}

impl Clock {
    pub fn new(smtp: &Smtp) -> Self {
        Self {
            idle: Duration::from_secs(smtp.idle_timeout_secs),
            command: Duration::from_secs(smtp.command_timeout_secs),
            transaction: Duration::from_secs(smtp.transaction_timeout_secs),
            min_rate: smtp.min_data_bytes_per_sec,
            command_since: None,
            transaction_since: None,
            data: None,
        }
    }

    /// The relay needs more bytes for a command line (or an AUTH answer); the first call
    /// after `command_read` starts its deadline.
    pub fn awaiting_command(&mut self, now: Instant) {
        self.command_since.get_or_insert(now);
    }

    /// A whole command line has been read.
    pub fn command_read(&mut self) {
        self.command_since = None;
    }

    pub fn transaction_opened(&mut self, now: Instant) {
        self.transaction_since = Some(now);
    }

    /// The transaction ended (its data was read, or RSET, EHLO or an error closed it).
    pub fn transaction_closed(&mut self) {
        self.transaction_since = None;
        self.data = None;
    }

    pub fn data_started(&mut self, now: Instant) {
        self.data = Some((now, 0));
        self.command_since = None;
    }

    pub fn data_received(&mut self, bytes: usize) {
        if let Some((_, n)) = &mut self.data {
            *n = n.saturating_add(bytes as u64);
        }
    }

    /// The next deadline and the reply the client gets when it passes.
    pub fn deadline(&self, now: Instant) -> (Instant, Reply) {
        let mut next = (now + self.idle, reply::TIMEOUT);
        let mut earlier = |at: Instant, why: Reply| {
            if at < next.0 {
                next = (at, why);
            }
        };
        if let Some(since) = self.command_since {
            earlier(since + self.command, reply::COMMAND_TIMEOUT);
        }
        if let Some(since) = self.transaction_since {
            earlier(since + self.transaction, reply::TRANSACTION_TIMEOUT);
        }
        if let (Some((since, bytes)), true) = (self.data, self.min_rate > 0) {
            // Each byte read buys 1/min_rate seconds.
            let earned = Duration::from_secs_f64(bytes as f64 / self.min_rate as f64);
            earlier(since + DATA_GRACE + earned, reply::DATA_TOO_SLOW);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp() -> Smtp {
        Smtp {
            idle_timeout_secs: 100,
            command_timeout_secs: 60,
            transaction_timeout_secs: 600,
            min_data_bytes_per_sec: 1000,
            ..Smtp::default()
        }
    }

    #[test]
    fn bytes_do_not_move_the_command_deadline() {
        let t0 = Instant::now();
        let mut c = Clock::new(&smtp());
        assert_eq!(c.deadline(t0), (t0 + Duration::from_secs(100), reply::TIMEOUT));
        c.awaiting_command(t0);
        // Later reads for the same line keep the first start.
        c.awaiting_command(t0 + Duration::from_secs(50));
        let at = t0 + Duration::from_secs(59);
        assert_eq!(c.deadline(at), (t0 + Duration::from_secs(60), reply::COMMAND_TIMEOUT));
        c.command_read();
        assert_eq!(c.deadline(at).1, reply::TIMEOUT);
    }

    #[test]
    fn data_must_keep_the_minimum_rate_and_the_transaction_its_deadline() {
        let t0 = Instant::now();
        let mut c = Clock::new(&smtp());
        c.transaction_opened(t0);
        c.data_started(t0 + Duration::from_secs(10));
        let (at, why) = c.deadline(t0 + Duration::from_secs(10));
        assert_eq!((at, why), (t0 + Duration::from_secs(40), reply::DATA_TOO_SLOW));
        c.data_received(20_000);
        assert_eq!(c.deadline(t0 + Duration::from_secs(39)).0, t0 + Duration::from_secs(60));
        c.data_received(10_000_000);
        let (at, why) = c.deadline(t0 + Duration::from_secs(550));
        assert_eq!((at, why), (t0 + Duration::from_secs(600), reply::TRANSACTION_TIMEOUT));
        c.transaction_closed();
        assert_eq!(c.deadline(t0).1, reply::TIMEOUT);
    }
}
