//! Every Prometheus metric the relay exports: the names, what they mean (`# HELP`), their
//! labels and buckets, and the one function that records each. Call sites elsewhere make
//! one call here and never name a metric themselves, so a name or label set cannot drift
//! between two places, and a scrape right after start already shows every counter at 0.
//!
//! Latencies are histograms (buckets are aggregatable across relays; summaries are not).
//! Label values come from closed sets defined here, never from input: an address, a
//! remote reply text or an unknown path can never become a label (cardinality, and no
//! shopper data in metrics).

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::address::Side;
use crate::auth::Refusal;
use crate::delivery::DeliveryError;
use crate::smtp::Listener;
use crate::smtp::reply::{self, Reply};

/// `maskrelay_build_info{version}`: always 1; the labels say what runs.
pub const BUILD_INFO: &str = "maskrelay_build_info";
/// Connections accepted, by listener.
pub const SMTP_CONNECTIONS: &str = "maskrelay_smtp_connections_total";
/// Negative replies to a connection, RCPT or the end of DATA, by stage and reason.
pub const SMTP_REFUSALS: &str = "maskrelay_smtp_refusals_total";
/// Messages committed to the queue (answered 250 after DATA).
pub const MESSAGES_ACCEPTED: &str = "maskrelay_messages_accepted_total";
/// Time from the end of DATA to the reply.
pub const SMTP_ACCEPT_SECONDS: &str = "maskrelay_smtp_accept_seconds";
/// Mail to an alias from someone its thread did not introduce, by stage and reason.
pub const REFUSED_SENDERS: &str = "maskrelay_refused_senders_total";
/// Failed SMTP AUTH attempts on the submission listener.
pub const AUTH_FAILURES: &str = "maskrelay_auth_failures_total";
/// Bounces (DSNs) received at VERP addresses.
pub const BOUNCES: &str = "maskrelay_bounces_total";
/// Final outcomes and deferrals of queued messages, by direction and outcome.
pub const DELIVERIES: &str = "maskrelay_deliveries_total";
/// Time of one delivery attempt (signing, connection, SMTP dialogue), by direction and
/// remote reply class.
pub const DELIVERY_ATTEMPT_SECONDS: &str = "maskrelay_delivery_attempt_seconds";
/// What the next hop answered to a delivery attempt, by class.
pub const REMOTE_REPLIES: &str = "maskrelay_remote_replies_total";
/// Outbound SMTP connections used for a delivery, opened anew or reused from the pool.
pub const EGRESS_CONNECTIONS: &str = "maskrelay_egress_connections_total";
/// Messages waiting in the queue (set at each scrape).
pub const QUEUE_DEPTH: &str = "maskrelay_queue_depth";
/// Age of the oldest queued message (set at each scrape).
pub const QUEUE_OLDEST_SECONDS: &str = "maskrelay_queue_oldest_seconds";
/// Time of one group commit of the queue writer (its statements and COMMIT), by outcome.
pub const QUEUE_COMMIT_SECONDS: &str = "maskrelay_queue_commit_seconds";
/// Jobs (enqueues, claims, completions, deferrals) per group commit.
pub const QUEUE_COMMIT_JOBS: &str = "maskrelay_queue_commit_jobs";
/// Duration of HTTP API requests, by route template, method and status.
pub const API_REQUEST_SECONDS: &str = "maskrelay_api_request_seconds";

/// Where in an SMTP conversation a refusal happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before any command: the connection itself (too many connections).
    Connect,
    Rcpt,
    /// After the end of DATA, on the message.
    Data,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
        }
    }
}

/// A queued message's end state (or a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// A transient failure: tried again later.
    Deferred,
    /// Given up: a 5xx, or too long in the queue; the sender gets a notice.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Failed => "failed",
        }
    }
}

/// The refusal reasons by reply: every refusing reply of `smtp::reply` has its reason
/// here; a reply built elsewhere falls back to its enhanced status code (see `reason`).
const REASONS: &[(&Reply, &str)] = &[
    (&reply::NO_SUCH_ALIAS, "unknown_alias"),
    (&reply::NOT_RELAY_DOMAIN, "relay_denied"),
    (&reply::SENDER_NOT_ALLOWED, "sender_not_allowed"),
    (&reply::SENDER_NOT_AUTHENTICATED, "not_authenticated"),
    (&reply::NO_FROM, "no_from"),
    (&reply::TOO_BIG, "too_big"),
    (&reply::STORAGE_UNAVAILABLE, "storage_unavailable"),
    (&reply::AUTH_TEMPFAIL, "auth_tempfail"),
    (&reply::TOO_MANY_RECIPIENTS, "too_many_recipients"),
    (&reply::UNPARSEABLE, "unparseable"),
    (&reply::CANNOT_REWRITE, "would_leak"),
    (&reply::NOT_YOUR_SHOPPER, "not_your_shopper"),
    (&reply::BAD_RECIPIENT, "bad_address"),
    (&reply::BUSY, "busy"),
    (&reply::BUSY_PEER, "busy_peer"),
    (&reply::LOOP, "loop"),
    (&reply::NUL_IN_MESSAGE, "nul_in_message"),
];

/// Reasons known only by their RFC 3463 enhanced code (replies with a variable text).
const REASONS_BY_STATUS: &[(&str, &str)] = &[
    ("5.6.0", "content_refused"),
    ("5.4.6", "loop"),
    ("5.3.4", "too_big"),
    ("4.3.0", "storage_unavailable"),
];

/// The (stage, reason) pairs that can happen, shown at 0 from the start.
const REFUSALS_AT_START: &[(Stage, &str)] = &[
    (Stage::Connect, "busy"),
    (Stage::Connect, "busy_peer"),
    (Stage::Rcpt, "unknown_alias"),
    (Stage::Rcpt, "relay_denied"),
    (Stage::Rcpt, "sender_not_allowed"),
    (Stage::Rcpt, "not_your_shopper"),
    (Stage::Rcpt, "too_many_recipients"),
    (Stage::Rcpt, "bad_address"),
    (Stage::Rcpt, "storage_unavailable"),
    (Stage::Rcpt, "auth_tempfail"),
    (Stage::Data, "sender_not_allowed"),
    (Stage::Data, "not_authenticated"),
    (Stage::Data, "no_from"),
    (Stage::Data, "too_big"),
    (Stage::Data, "unparseable"),
    (Stage::Data, "would_leak"),
    (Stage::Data, "content_refused"),
    (Stage::Data, "loop"),
    (Stage::Data, "nul_in_message"),
    (Stage::Data, "unknown_alias"),
    (Stage::Data, "storage_unavailable"),
    (Stage::Data, "auth_tempfail"),
];

const REFUSALS: [Refusal; 4] =
    [Refusal::EnvelopeSender, Refusal::HeaderFrom, Refusal::NoFrom, Refusal::NotAuthenticated];
const DIRECTIONS: [Side; 2] = [Side::Shopper, Side::Store];
const OUTCOMES: [Outcome; 3] = [Outcome::Delivered, Outcome::Deferred, Outcome::Failed];
const REPLY_CLASSES: [&str; 4] = ["2xx", "4xx", "5xx", "connection"];
const ACCEPT_OUTCOMES: [&str; 3] = ["accepted", "deferred", "refused"];

/// Upper bounds (seconds): SMTP accept covers a DNS check and a group commit.
const ACCEPT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// A delivery attempt includes connecting to a remote host that may stall for minutes.
const DELIVERY_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// A group commit is a few statements and one fsync: well under a millisecond to a few.
const COMMIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Up to the writer's batch limit (128).
const JOB_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const API_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Installs the process-wide Prometheus recorder (once; a test process may start several
/// relays, which then share it), describes every metric and registers every counter at 0.
/// Returns the handle `/metrics` renders.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = histograms(PrometheusBuilder::new()).build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed already: the handle still renders
        // what this recorder sees.
        let _ = ::metrics::set_global_recorder(recorder);
        describe();
        register_at_zero();
        handle
    })
}

/// Buckets for every histogram: without them the exporter would render summaries.
fn histograms(builder: PrometheusBuilder) -> PrometheusBuilder {
    let buckets = [
        (SMTP_ACCEPT_SECONDS, ACCEPT_BUCKETS),
        (DELIVERY_ATTEMPT_SECONDS, DELIVERY_BUCKETS),
        (QUEUE_COMMIT_SECONDS, COMMIT_BUCKETS),
        (QUEUE_COMMIT_JOBS, JOB_BUCKETS),
        (API_REQUEST_SECONDS, API_BUCKETS),
    ];
    buckets.into_iter().fold(builder, |b, (name, bounds)| {
        // Only an empty bucket list is refused; these are constants.
        match b.set_buckets_for_metric(Matcher::Full(name.to_owned()), bounds) {
            Ok(b) => b,
            Err(_) => unreachable!("bucket lists are not empty"),
        }
    })
}

fn describe() {
    describe_gauge!(BUILD_INFO, "Always 1; the version label says which maskrelay runs");
    describe_counter!(SMTP_CONNECTIONS, "SMTP connections accepted, by listener (mx, submission)");
    describe_counter!(
        SMTP_REFUSALS,
        "Negative SMTP replies to a connection, RCPT or the end of DATA, by stage and reason"
    );
    describe_counter!(MESSAGES_ACCEPTED, "Messages durably queued and answered 250 after DATA");
    describe_histogram!(
        SMTP_ACCEPT_SECONDS,
        ::metrics::Unit::Seconds,
        "Time from the end of DATA to the reply (checks, rewrite, commit), by outcome"
    );
    describe_counter!(
        REFUSED_SENDERS,
        "Mail to an alias from someone its thread did not introduce, by stage and reason"
    );
    describe_counter!(AUTH_FAILURES, "Failed SMTP AUTH attempts on the submission listener");
    describe_counter!(BOUNCES, "Bounces (DSNs) received at the relay's VERP addresses");
    describe_counter!(
        DELIVERIES,
        "Queued messages delivered, deferred for a retry, or failed for good, by direction"
    );
    describe_histogram!(
        DELIVERY_ATTEMPT_SECONDS,
        ::metrics::Unit::Seconds,
        "Time of one delivery attempt, by direction and remote reply class"
    );
    describe_counter!(
        REMOTE_REPLIES,
        "Next-hop answers to delivery attempts: 2xx, 4xx, 5xx, or connection (no SMTP reply)"
    );
    describe_counter!(
        EGRESS_CONNECTIONS,
        "Outbound SMTP connections a delivery used, by use (opened, reused from the pool)"
    );
    describe_gauge!(QUEUE_DEPTH, "Messages waiting in the outbound queue");
    describe_gauge!(QUEUE_OLDEST_SECONDS, ::metrics::Unit::Seconds, "Age of the oldest queued message");
    describe_histogram!(
        QUEUE_COMMIT_SECONDS,
        ::metrics::Unit::Seconds,
        "Time of one group commit of the queue writer, by outcome (committed, failed)"
    );
    describe_histogram!(
        QUEUE_COMMIT_JOBS,
        "Queue writes (enqueues, claims, completions, deferrals) committed together in one transaction"
    );
    describe_histogram!(
        API_REQUEST_SECONDS,
        ::metrics::Unit::Seconds,
        "HTTP API request duration, by route template, method and status"
    );
}

fn register_at_zero() {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for listener in [Listener::Mx, Listener::Submission] {
        counter!(SMTP_CONNECTIONS, "listener" => listener_label(listener)).absolute(0);
    }
    for (stage, reason) in REFUSALS_AT_START {
        counter!(SMTP_REFUSALS, "stage" => stage.as_str(), "reason" => *reason).absolute(0);
    }
    for stage in ["rcpt", "data"] {
        for refusal in REFUSALS {
            counter!(REFUSED_SENDERS, "stage" => stage, "reason" => refusal_label(refusal)).absolute(0);
        }
    }
    for name in [MESSAGES_ACCEPTED, AUTH_FAILURES, BOUNCES] {
        counter!(name).absolute(0);
    }
    for used in ["opened", "reused"] {
        counter!(EGRESS_CONNECTIONS, "use" => used).absolute(0);
    }
    for direction in DIRECTIONS {
        for outcome in OUTCOMES {
            counter!(DELIVERIES, "direction" => direction_label(direction), "outcome" => outcome.as_str())
                .absolute(0);
        }
    }
    for class in REPLY_CLASSES {
        counter!(REMOTE_REPLIES, "class" => class).absolute(0);
        for direction in DIRECTIONS {
            // A registered histogram renders with empty buckets, so dashboards see it at once.
            let _ = histogram!(DELIVERY_ATTEMPT_SECONDS, "direction" => direction_label(direction), "class" => class);
        }
    }
    for outcome in ACCEPT_OUTCOMES {
        let _ = histogram!(SMTP_ACCEPT_SECONDS, "outcome" => outcome);
    }
    gauge!(QUEUE_DEPTH).set(0.0);
    gauge!(QUEUE_OLDEST_SECONDS).set(0.0);
    for outcome in COMMIT_OUTCOMES {
        let _ = histogram!(QUEUE_COMMIT_SECONDS, "outcome" => outcome);
    }
    let _ = histogram!(QUEUE_COMMIT_JOBS);
}

const COMMIT_OUTCOMES: [&str; 2] = ["committed", "failed"];

fn listener_label(listener: Listener) -> &'static str {
    match listener {
        Listener::Mx => "mx",
        Listener::Submission => "submission",
    }
}

fn direction_label(direction: Side) -> &'static str {
    match direction {
        Side::Shopper => "to_shopper",
        Side::Store => "to_store",
    }
}

fn refusal_label(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::EnvelopeSender => "envelope_sender",
        Refusal::HeaderFrom => "header_from",
        Refusal::NoFrom => "no_from",
        Refusal::NotAuthenticated => "not_authenticated",
    }
}

/// The reason label of a refusing reply (see `REASONS`).
pub fn reason(reply: &Reply) -> &'static str {
    if let Some((_, reason)) = REASONS.iter().find(|(r, _)| *r == reply) {
        return reason;
    }
    let status = reply.text.split_whitespace().next().unwrap_or("");
    match REASONS_BY_STATUS.iter().find(|(s, _)| *s == status) {
        Some((_, reason)) => reason,
        None if reply.code >= 500 => "other_permanent",
        None => "other_transient",
    }
}

/// An SMTP connection was accepted.
pub fn smtp_connection(listener: Listener) {
    counter!(SMTP_CONNECTIONS, "listener" => listener_label(listener)).increment(1);
}

/// A connection turned away because `smtp.max_connections` are being served.
pub fn smtp_busy() {
    smtp_reply(Stage::Connect, reply::BUSY);
}

/// A connection turned away because its client has `smtp.max_connections_per_ip` open.
pub fn smtp_busy_peer() {
    smtp_reply(Stage::Connect, reply::BUSY_PEER);
}

/// The reply to RCPT or DATA: counted when it refuses. Returns it, so a call site
/// can wrap the reply it already has.
pub fn smtp_reply(stage: Stage, reply: Reply) -> Reply {
    if !reply.is_positive() {
        counter!(SMTP_REFUSALS, "stage" => stage.as_str(), "reason" => reason(&reply)).increment(1);
    }
    reply
}

/// Runs what follows the end of DATA (`accept`: checks, rewrite, commit) and records how
/// long the reply took and, for a refusal, why; returns the reply.
pub async fn smtp_data(accept: impl Future<Output = Reply>) -> Reply {
    let started = std::time::Instant::now();
    let reply = accept.await;
    let outcome = match reply.code {
        ..400 => "accepted",
        400..500 => "deferred",
        _ => "refused",
    };
    histogram!(SMTP_ACCEPT_SECONDS, "outcome" => outcome).record(started.elapsed().as_secs_f64());
    smtp_reply(Stage::Data, reply)
}

/// A message was committed to the queue.
pub fn message_accepted() {
    counter!(MESSAGES_ACCEPTED).increment(1);
}

/// An outsider wrote to an alias (`stage` is `rcpt` or `data`).
pub fn refused_sender(stage: &str, refusal: Refusal) {
    let stage = if stage == "rcpt" { "rcpt" } else { "data" };
    counter!(REFUSED_SENDERS, "stage" => stage, "reason" => refusal_label(refusal)).increment(1);
}

/// A failed SMTP AUTH.
pub fn auth_failure() {
    counter!(AUTH_FAILURES).increment(1);
}

/// A bounce came back to a VERP address.
pub fn bounce_received() {
    counter!(BOUNCES).increment(1);
}

/// What class of answer an attempt got from the next hop, from the reply code it carries;
/// a local verdict counts by its status class (a null MX is as final as a 5xx), and no
/// reply at all (DNS, connection, TLS, timeout) is `connection`.
fn reply_class(result: &Result<(), DeliveryError>) -> &'static str {
    let e = match result {
        Ok(()) => return "2xx",
        Err(e) => e,
    };
    match (e.reply_code(), e) {
        (Some(code), _) if code < 300 => "2xx",
        (Some(code), _) if code < 500 => "4xx",
        (Some(_), _) => "5xx",
        (None, DeliveryError::Local { status, .. }) if status.class == 5 => "5xx",
        (None, DeliveryError::Local { .. }) => "4xx",
        (None, _) => "connection",
    }
}

/// One delivery attempt ended after `took`.
pub fn delivery_attempt(direction: Side, result: &Result<(), DeliveryError>, took: Duration) {
    // Every connection to the destination was busy: nothing was attempted.
    if matches!(result, Err(DeliveryError::Busy { .. })) {
        return;
    }
    let class = reply_class(result);
    counter!(REMOTE_REPLIES, "class" => class).increment(1);
    histogram!(DELIVERY_ATTEMPT_SECONDS, "direction" => direction_label(direction), "class" => class)
        .record(took.as_secs_f64());
}

/// A delivery took a connection: a new one, or one from the pool.
pub fn egress_connection(reused: bool) {
    counter!(EGRESS_CONNECTIONS, "use" => if reused { "reused" } else { "opened" }).increment(1);
}

/// A queued message was delivered, deferred or given up.
pub fn delivery(direction: Side, outcome: Outcome) {
    counter!(DELIVERIES, "direction" => direction_label(direction), "outcome" => outcome.as_str())
        .increment(1);
}

/// The queue as of now (set at each scrape).
/// One group commit of `jobs` jobs, which took `took`; `committed` false if it failed.
pub fn queue_commit(jobs: usize, committed: bool, took: Duration) {
    let outcome = COMMIT_OUTCOMES[usize::from(!committed)];
    histogram!(QUEUE_COMMIT_SECONDS, "outcome" => outcome).record(took.as_secs_f64());
    histogram!(QUEUE_COMMIT_JOBS).record(jobs as f64);
}

pub fn queue(depth: i64, oldest_seconds: i64) {
    gauge!(QUEUE_DEPTH).set(depth as f64);
    gauge!(QUEUE_OLDEST_SECONDS).set(oldest_seconds as f64);
}

/// One HTTP API request. `route` is the matched route template (`/v1/threads/{id}`), or
/// `unmatched` for a path no route has: never the raw path, which holds ids and tokens.
pub fn api_request(route: &str, method: &axum::http::Method, status: u16, took: Duration) {
    histogram!(API_REQUEST_SECONDS, "route" => route.to_owned(), "method" => method.as_str().to_owned(),
               "status" => status.to_string())
    .record(took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusing_replies_have_reasons() {
        assert_eq!(reason(&reply::NO_SUCH_ALIAS), "unknown_alias");
        assert_eq!(reason(&reply::SENDER_NOT_ALLOWED), "sender_not_allowed");
        assert_eq!(reason(&Reply::new(554, "5.6.0 Two Content-Type headers")), "content_refused");
        assert_eq!(reason(&Reply::new(554, "5.4.6 Too many Received lines")), "loop");
        assert_eq!(reason(&Reply::new(550, "5.9.9 something new")), "other_permanent");
    }

    #[test]
    fn remote_replies_are_classed() {
        use crate::delivery::{Reply, Stage, Status};
        let refused = |code: u16| {
            Err(DeliveryError::Refused {
                stage: Stage::RcptTo,
                reply: Reply { code, status: None, text: "x".into() },
            })
        };
        assert_eq!(reply_class(&Ok(())), "2xx");
        assert_eq!(reply_class(&refused(451)), "4xx");
        assert_eq!(reply_class(&refused(550)), "5xx");
        assert_eq!(reply_class(&Err(DeliveryError::unreachable(Stage::Connect, "refused"))), "connection");
        assert_eq!(reply_class(&Err(DeliveryError::local(Status::new(5, 1, 2), "null MX"))), "5xx");
        assert_eq!(reply_class(&Err(DeliveryError::local(Status::new(4, 4, 7), "expired"))), "4xx");
    }
}
