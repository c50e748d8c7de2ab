#![no_main]
//! The SMTP session over the in-memory tier: any bytes from a client, in any chunking, to
//! the relay's real session state machine (`smtp::session::run` over `tokio::io::duplex`)
//! with the session tests' `MemoryBackend` (tests/support/session.rs) behind it.
//!
//! Checked on every input:
//! - every reply is a well-formed SMTP reply (three digits, `-` or space, CR LF; a multi-line
//!   reply keeps its code; 4xx and 5xx replies carry the matching enhanced status code);
//! - one reply per command line, in order, and the end-of-data rule, against a reference
//!   written apart from the session: after a 354 the data runs to the first CR LF . CR LF
//!   (counting the DATA line's CR LF) and no further; a message is queued only then, it is
//!   exactly the dot-unstuffed, CR LF-canonical text before that end, and nothing after the
//!   terminator is in it (so `\r\n.\r\r\n` and the other 2023 smuggling endings never end
//!   DATA);
//! - the same input in other chunkings (pseudo-random, and byte by byte for short inputs)
//!   gives the same replies and the same queued messages;
//! - no panic.
//!
//! Input: the first byte picks a prefix (none; EHLO; EHLO MAIL RCPT DATA, so the fuzzer
//! starts inside DATA) and seeds the chunking; the rest is the client's byte stream.

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use maskrelay::auth::Authorizer;
use maskrelay::shutdown;
use maskrelay::smtp::Listener;
use maskrelay::smtp::session::{self, Setup};
use maskrelay::store::threads::ThreadStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// tests/support/session.rs (the session tests' MemoryBackend) names these in its parent.
const DOMAIN: &str = "relay.test";
mod smtp_client {
    /// Not used by the target; session.rs names it.
    pub fn data_wire(_message: &[u8]) -> Vec<u8> {
        unimplemented!()
    }
}
#[allow(dead_code)]
#[path = "../../tests/support/session.rs"]
mod session_support;

#[path = "../common/smtp.rs"]
mod smtp_check;

use session_support::{MemoryBackend, session_config};

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"));

/// What one run of the session gave: the reply stream and the queued messages.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    replies: Vec<u8>,
    accepted: Vec<Vec<u8>>,
}

/// The session fed `stream` in writes of the given lengths (the rest in one last write).
fn converse(stream: &[u8], chunks: &[usize]) -> Outcome {
    RUNTIME.block_on(async {
        let backend = Arc::new(MemoryBackend::default());
        // Alias so1x@relay.test: a thread of store acme, whose sender is orders@acme.example.
        backend.thread("o1", ThreadStatus::Active);
        let config = session_config();
        let auth = Authorizer { mode: config.auth.mode };
        let setup = Arc::new(Setup::new(Arc::new(config), auth, None));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (trigger, stop) = shutdown::channel();
        let peer = "192.0.2.7:40000".parse().unwrap();
        let task = tokio::spawn(session::run(server, peer, Listener::Mx, setup, backend.clone(), stop));
        let (mut r, mut w) = tokio::io::split(client);
        let writer = async move {
            let mut at = 0;
            for &len in chunks {
                let end = (at + len).min(stream.len());
                // The session may have closed (QUIT, too many errors): the rest is not read.
                if w.write_all(&stream[at..end]).await.is_err() {
                    return;
                }
                at = end;
                tokio::task::yield_now().await;
            }
            if w.write_all(&stream[at..]).await.is_ok() {
                let _ = w.shutdown().await;
            }
        };
        let reader = async move {
            let mut out = Vec::new();
            let _ = r.read_to_end(&mut out).await;
            out
        };
        let ((), replies) = tokio::join!(writer, reader);
        task.await.expect("the session task panicked");
        drop(trigger);
        Outcome { replies, accepted: backend.accepted().into_iter().map(|a| a.message).collect() }
    })
}

/// Chunk lengths from a seed: small and large writes mixed.
fn chunking(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(0x9e37_79b9);
    let mut out = Vec::new();
    let mut total = 0;
    while total < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = match x % 4 {
            0 => 1,
            1 => 1 + (x >> 8) as usize % 8,
            2 => 1 + (x >> 8) as usize % 200,
            _ => 1 + (x >> 8) as usize % 5000,
        };
        out.push(n);
        total += n;
    }
    out
}

const PREFIXES: [&[u8]; 3] = [
    b"",
    b"EHLO client.test\r\n",
    b"EHLO client.test\r\nMAIL FROM:<orders@acme.example>\r\nRCPT TO:<so1x@relay.test>\r\nDATA\r\n",
];

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else { return };
    let mut stream = PREFIXES[usize::from(flags % 3)].to_vec();
    stream.extend_from_slice(rest);

    let whole = converse(&stream, &[]);
    let replies = smtp_check::replies(&whole.replies);
    smtp_check::check_against_reference(&stream, &replies, &whole.accepted);

    let chunked = converse(&stream, &chunking(flags, stream.len()));
    assert_eq!(chunked, whole, "another chunking gave other replies or messages");
    if stream.len() <= 1024 {
        let bytewise = converse(&stream, &vec![1; stream.len()]);
        assert_eq!(bytewise, whole, "byte by byte gave other replies or messages");
    }
});
