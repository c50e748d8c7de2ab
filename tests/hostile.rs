//! The hostile corpus: messages that carry a real address in every place and encoding we
//! could think of (tests/corpus/hostile/, one case per file), and 48 messages of CPython's
//! email test suite that nobody here wrote (tests/corpus/cpython/) with the shopper's
//! address injected into headers and every text part. Each goes over real SMTP through the
//! relay to the sink; the delivered bytes must hold the address in no encoding (two
//! detectors: tests/hostile/leak.rs and tests/leakcheck.py) and keep the MIME structure,
//! with every non-text part's decoded body unchanged.

mod support;

#[path = "hostile/inject.rs"]
mod inject;
#[path = "hostile/leak.rs"]
mod leak;
#[path = "hostile/python.rs"]
mod python;
#[path = "hostile/structure.rs"]
mod structure;

use std::path::{Path, PathBuf};

use leak::Scope;
use support::*;

/// The shopper of the test thread (`TestRelay::thread`).
const SHOPPER: &str = "jane.doe@shopper.example";
/// The store "acme" (`TestRelay::acme`): its contact and its approved sender.
const STORE_CONTACT: &str = "support@acme.example";
const STORE_SENDER: &str = "orders@acme.example";

/// One crafted case: a file of tests/corpus/hostile/ and what it tries.
struct Case {
    file: &'static str,
    what: &'static str,
}

/// Shopper → store: the shopper's address must appear nowhere, headers or bodies; nor may
/// the shopper's domain appear in the header block (ids and Received lines).
const TO_STORE: &[Case] = &[
    Case {
        file: "from-name-reply-to-sender-cc",
        what: "address as From display name; Reply-To, Sender, Cc, Bcc, Return-Path, Resent-From, Delivered-To, Received",
    },
    Case {
        file: "disposition-notification-to",
        what: "Disposition-Notification-To asks for a read receipt to the real address",
    },
    Case {
        file: "return-receipt-to",
        what: "Return-Receipt-To, Read-Receipt-To, X-Confirm-Reading-To, Errors-To",
    },
    Case {
        file: "list-headers-mailto",
        what: "List-Unsubscribe/-Post/-Help/-Subscribe/-Owner/-Archive with mailto:, %40, MAILTO: in capitals",
    },
    Case { file: "subject-plain", what: "address in the Subject" },
    Case { file: "subject-rfc2047-b", what: "Subject as one RFC 2047 B word" },
    Case { file: "subject-rfc2047-q", what: "Subject and Thread-Topic as RFC 2047 Q words (=40, =2E)" },
    Case {
        file: "subject-rfc2047-split-words",
        what: "address split over adjacent encoded words (Q then B; and over folded lines)",
    },
    Case { file: "from-name-rfc2047", what: "encoded address as display name of From, Reply-To, Cc" },
    Case {
        file: "subject-rfc2047-glued",
        what: "encoded word glued to plain text (no white space), decoded by lenient readers",
    },
    Case {
        file: "subject-rfc2047-unusual-charsets",
        what: "encoded words with an RFC 2231 language (utf-8*en), an unknown charset, UTF-16BE",
    },
    Case {
        file: "header-folding",
        what: "address on a folded continuation line (Subject, Thread-Topic, Keywords) and folded inside (Cc)",
    },
    Case {
        file: "unknown-x-headers",
        what: "X-* and other unlisted headers (Organization, Comments, Autocrypt) carrying the address",
    },
    Case { file: "message-id-host", what: "Message-ID, In-Reply-To, References with the shopper's host" },
    Case {
        file: "body-encoded-words",
        what: "RFC 2047 encoded words in body text (a quoted forwarded header block)",
    },
    Case { file: "qp-soft-break-local-part", what: "quoted-printable soft line break inside the local part" },
    Case {
        file: "qp-soft-break-domain",
        what: "quoted-printable soft line break inside the domain (text and HTML)",
    },
    Case { file: "qp-equals-40", what: "quoted-printable =40 for @, and every character hex-encoded" },
    Case {
        file: "base64-text-plain",
        what: "base64 text/plain, address at all three base64 alignments, and in capitals",
    },
    Case { file: "base64-text-html", what: "base64 text/plain and text/html in multipart/alternative" },
    Case {
        file: "html-entities",
        what: "HTML &#64; &#x40; &#X40; &commat; &#064; &#64 (no ;) &period; and every character as a reference",
    },
    Case {
        file: "html-mailto-percent",
        what: "mailto: hrefs with %40, MAILTO:, every character percent-encoded, &#37;40, %2e",
    },
    Case { file: "uppercase-address", what: "address in capitals and mixed case, body and Subject" },
    Case {
        file: "uppercase-with-non-ascii",
        what: "address in capitals next to text whose lowercase changes byte length (İ, ẞ)",
    },
    Case {
        file: "multipart-alternative-with-attachments",
        what: "mixed/alternative with PDF, PNG and all-byte-values attachments that must stay byte-identical",
    },
    Case {
        file: "message-rfc822-attachment",
        what: "forwarded message/rfc822 with the address in its headers and parts",
    },
    Case {
        file: "message-rfc822-base64",
        what: "message/rfc822 sent base64-encoded (RFC 2046 forbids it; readers decode it)",
    },
    Case { file: "message-rfc822-root", what: "the whole message is message/rfc822" },
    Case { file: "charset-iso-8859-1", what: "ISO-8859-1 text parts, 8bit and quoted-printable" },
    Case { file: "charset-utf-16", what: "UTF-16 text part (base64)" },
    Case { file: "charset-utf-7", what: "UTF-7 text part: +AEA- is @" },
    Case { file: "charset-shift-jis", what: "Shift_JIS text part (base64)" },
    Case {
        file: "no-content-transfer-encoding",
        what: "parts without Content-Transfer-Encoding, one without any header",
    },
    Case { file: "8bit-part", what: "Content-Transfer-Encoding: 8bit UTF-8 root part" },
    Case { file: "preamble-epilogue", what: "address in the multipart preamble and epilogue" },
    Case {
        file: "attachment-filenames",
        what: "address in part headers: filename, RFC 2231 name*= and filename*0*/1* continuations, RFC 2047 name, Content-Description",
    },
    Case {
        file: "text-attachments",
        what: "text/plain, text/vcard, text/csv attachments (Content-Disposition: attachment)",
    },
    Case { file: "text-calendar", what: "text/calendar invitation with ORGANIZER:mailto: the address" },
    Case {
        file: "root-content-params",
        what: "single-part PDF whose Content-Type name and Content-Disposition filename* hold the address",
    },
    Case {
        file: "multipart-signed",
        what: "multipart/signed: signed text part with the address, signature part byte-identical",
    },
    Case {
        file: "format-flowed-delsp",
        what: "format=flowed; delsp=yes soft line break inside the address, also in a quoted line",
    },
    Case {
        file: "deep-nesting",
        what: "mixed/related/alternative plus message/rfc822 inside message/rfc822",
    },
    Case { file: "html-qp-split-entities", what: "quoted-printable soft breaks inside &#64; and %40" },
    Case {
        file: "mdn-read-receipt",
        what: "read receipt (RFC 8098): Final-Recipient in message/disposition-notification, text/rfc822-headers",
    },
];

/// Store → shopper: the store's contact and sender addresses (and its domain) must not be
/// in the header block the shopper gets. The SPEC leaves store bodies alone.
const TO_SHOPPER: &[Case] = &[
    Case {
        file: "store-address-headers",
        what: "store addresses as From name, Reply-To, Sender (encoded), Cc, Return-Path, receipts, Errors-To, X-Mailer, Organization",
    },
    Case { file: "store-list-headers", what: "List-* with mailto: the store's contact, %40, MAILTO:" },
    Case {
        file: "store-subject-encoded",
        what: "contact in Subject, split encoded words in Thread-Topic, Keywords, encoded Content-Description; store Message-IDs",
    },
    Case {
        file: "store-root-content-params",
        what: "store addresses in the root Content-Type name and Content-Disposition filename*",
    },
    Case {
        file: "store-part-headers",
        what: "store addresses in MIME part headers: attachment name=, filename*= (RFC 2231), Content-Description (plain and encoded)",
    },
];

/// What the relay does with a case of issue 8 (the reader-side view and the MIME gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Rewritten: delivered, and neither detector finds the address.
    Rewritten,
    /// Refused by the read-back (the reader view still showed the address).
    ReaderRefuses,
    /// Refused by the MIME gate; the reply names the problem (this text is in it).
    GateRefuses(&'static str),
}

/// Shopper → store cases of issue 8: what a reader sees that a string search does not.
struct ReaderCase {
    file: &'static str,
    what: &'static str,
    handled: Handled,
    /// The shopper of the thread it is sent on, when not `SHOPPER`.
    shopper: Option<&'static str>,
}

const fn rc(file: &'static str, what: &'static str, handled: Handled) -> ReaderCase {
    ReaderCase { file, what, handled, shopper: None }
}

/// The shopper of the IDNA case: registered with the A-label, writing the U-label.
const IDNA_SHOPPER: &str = "jane@xn--bcher-kva.example";

const READER_CASES: &[ReaderCase] = &[
    rc(
        "html-markup-split",
        "HTML <span>, <b>, <i>, a comment and <wbr> inside the address",
        Handled::ReaderRefuses,
    ),
    rc(
        "html-invisible-references",
        "HTML &shy;, &#8203;, &#x200B;, &#xFF20; inside the address, in text, href and title",
        Handled::ReaderRefuses,
    ),
    rc(
        "unicode-fullwidth",
        "fullwidth letters and ＠ (an IME's), ＠ alone, small-form ﹫",
        Handled::ReaderRefuses,
    ),
    rc(
        "unicode-invisible",
        "zero-width space, soft hyphen, word joiner inside the address",
        Handled::ReaderRefuses,
    ),
    rc(
        "header-folding-inside-address",
        "Thread-Topic, Keywords, Content-Description folded inside the address",
        Handled::ReaderRefuses,
    ),
    rc(
        "calendar-folded-lines",
        "iCalendar ORGANIZER and DESCRIPTION folded inside the address (RFC 5545 3.1)",
        Handled::Rewritten,
    ),
    rc(
        "vcard-folded-lines",
        "vCard 4.0 EMAIL and NOTE folded inside the address (RFC 6350 3.2)",
        Handled::Rewritten,
    ),
    rc(
        "vcard21-quoted-printable",
        "vCard 2.1 ENCODING=QUOTED-PRINTABLE values: =40, soft break, every character",
        Handled::Rewritten,
    ),
    rc(
        "address-quoted-local-part",
        "\"jane.doe\"@ and \"jane\\.doe\"@ in text, HTML and a mailto: link",
        Handled::ReaderRefuses,
    ),
    rc(
        "address-comments-and-spaces",
        "jane.doe @ host, comments (home) and spaces around . and @",
        Handled::ReaderRefuses,
    ),
    rc(
        "forwarded-obsolete-address-syntax",
        "forwarded message whose From, Reply-To, Sender and mailto: use quoted, commented and spaced forms",
        Handled::ReaderRefuses,
    ),
    ReaderCase {
        file: "idna-other-form",
        what: "shopper registered with the A-label writes the U-label (and in capitals)",
        handled: Handled::Rewritten,
        shopper: Some(IDNA_SHOPPER),
    },
    rc(
        "message-feedback-report",
        "message/feedback-report fields and text/rfc822-headers naming the shopper",
        Handled::Rewritten,
    ),
    rc(
        "message-global-headers",
        "message/global-headers with the address plain and RFC 2047-encoded",
        Handled::Rewritten,
    ),
    rc(
        "message-partial",
        "the whole message is message/partial (RFC 2046 5.2.2)",
        Handled::GateRefuses("message/partial"),
    ),
    rc(
        "message-external-body",
        "message/external-body naming the address as its mail server",
        Handled::GateRefuses("message/external-body"),
    ),
    rc(
        "tnef-winmail",
        "application/ms-tnef winmail.dat with the address in ASCII and UTF-16",
        Handled::GateRefuses("TNEF"),
    ),
    rc(
        "nesting-base64-four-deep",
        "base64 message/rfc822 four deep (mail-parser reads three)",
        Handled::GateRefuses("nested"),
    ),
    rc(
        "duplicate-content-type",
        "a part with two Content-Type fields (text/plain, then octet-stream)",
        Handled::GateRefuses("two Content-Type"),
    ),
    rc(
        "duplicate-content-transfer-encoding",
        "a part with two Content-Transfer-Encoding fields (base64, then 7bit)",
        Handled::GateRefuses("two Content-Transfer-Encoding"),
    ),
    rc(
        "multipart-no-boundary",
        "multipart/mixed without a boundary parameter",
        Handled::GateRefuses("boundary"),
    ),
    rc("multipart-empty-boundary", "multipart/mixed; boundary=\"\"", Handled::GateRefuses("boundary")),
    rc(
        "base64-non-alphabet",
        "base64 text with characters outside the alphabet (lenient decoders skip them)",
        Handled::GateRefuses("base64"),
    ),
    rc("charset-utf-32", "a UTF-32 text part", Handled::GateRefuses("utf-32")),
    rc("charset-ebcdic", "an EBCDIC (IBM037) text part", Handled::GateRefuses("ibm037")),
];

/// CPython messages the relay refuses, each with the reason it may: all are CPython's own
/// malformed-input tests, refused by the MIME gate (or, msg_36, a type it cannot rewrite).
const CORPUS_REFUSED: &[(&str, &str)] = &[
    ("msg_15.txt", "inner and outer multipart share one boundary: the parser cannot delimit the parts"),
    ("msg_17.txt", "multipart whose boundary never occurs in its body"),
    ("msg_25.txt", "multipart without a boundary parameter"),
    ("msg_31.txt", "multipart whose declared boundary (BOUNDARY_) never occurs"),
    ("msg_35.txt", "no blank line between header and body (CPython's missing-separator case)"),
    ("msg_36.txt", "message/external-body parts, which the relay does not rewrite"),
    ("msg_41.txt", "multipart without a boundary parameter"),
    ("msg_42.txt", "a nested multipart with no parts (only its closing boundary)"),
];

fn corpus_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(sub)
}

fn fixture(file: &str) -> Vec<u8> {
    let path = corpus_dir("hostile").join(format!("{file}.eml"));
    inject::crlf(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn replace(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from.as_bytes()) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// One message through the relay: what was sent, and what the sink got (or the refusal).
struct Trip {
    name: String,
    sent: Vec<u8>,
    delivered: Result<Vec<u8>, String>,
    /// What must not show within `scope`.
    needles: Vec<String>,
    scope: Scope,
    /// What must not show in the header block either: the shopper's domain, which the
    /// relay's own header block never carries (ids mapped, Received dropped), while a
    /// forwarded message's ids or Received lines, being its content, may.
    header_needles: Vec<String>,
}

/// A relay with store acme and one thread; each message goes over SMTP as its sender and
/// is taken from the sink before the next one is sent.
struct Harness {
    relay: TestRelay,
    sink: Sink,
    shopper_alias: String,
    store_alias: String,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        let (url, dir) = sqlite_url();
        let sink = Sink::start().await;
        let relay = TestRelay::start(test_config(&url, sink.addr)).await;
        relay.acme().await;
        let thread = relay.thread("order-hostile").await;
        Self {
            shopper_alias: thread["shopper_alias"].as_str().expect("shopper_alias").to_owned(),
            store_alias: thread["store_alias"].as_str().expect("store_alias").to_owned(),
            relay,
            sink,
            _dir: dir,
        }
    }

    /// One session per message, in its own task: a session the relay drops (no reply to
    /// the data) is recorded against this message instead of ending the test.
    async fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        let before = self.sink.delivered().len();
        let (addr, from, to, message) = (self.relay.smtp(), from.to_owned(), to.to_owned(), message.to_vec());
        let session = tokio::spawn(async move {
            let mut c = Client::ready(addr).await;
            let reply = c.send(&from, &[&to], &message).await;
            c.cmd("QUIT", 221).await;
            reply
        });
        let reply =
            session.await.map_err(|_| "the relay dropped the session without a reply to DATA".to_owned())?;
        if reply.code != 250 {
            return Err(reply.text.trim().to_owned());
        }
        let got = self.sink.wait_for(before + 1, WAIT).await;
        Ok(got[before].data.clone())
    }

    async fn stop(self) {
        self.relay.stop().await;
        self.sink.stop();
    }
}

/// Both detectors and the structure check over every trip; one line per message on
/// stdout, and every failure named in the returned list.
fn judge(trips: &[Trip], refused_ok: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut jobs = Vec::new();
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for (i, t) in trips.iter().enumerate() {
        let Ok(delivered) = &t.delivered else { continue };
        let (sent_path, got_path) =
            (dir.path().join(format!("{i}.sent")), dir.path().join(format!("{i}.got")));
        std::fs::write(&sent_path, &t.sent).expect("write");
        std::fs::write(&got_path, delivered).expect("write");
        jobs.push(python::Job {
            name: t.name.clone(),
            delivered: got_path,
            sent: Some(sent_path),
            needles: t.needles.clone(),
            headers_only: t.scope == Scope::HeadersOnly,
        });
        if !t.header_needles.is_empty() {
            jobs.push(python::Job {
                name: format!("{} (header block)", t.name),
                delivered: dir.path().join(format!("{i}.got")),
                sent: None,
                needles: t.header_needles.clone(),
                headers_only: true,
            });
        }
    }
    // MRTEST_HOSTILE_DUMP=DIR keeps what was sent and delivered, for a person to read.
    if let Some(dump) = std::env::var_os("MRTEST_HOSTILE_DUMP") {
        let dump = PathBuf::from(dump);
        std::fs::create_dir_all(&dump).expect("dump directory");
        for t in trips {
            let name: String = t.name.chars().take_while(|c| *c != ' ').collect();
            std::fs::write(dump.join(format!("{name}.sent")), &t.sent).expect("dump");
            if let Ok(d) = &t.delivered {
                std::fs::write(dump.join(format!("{name}.delivered")), d).expect("dump");
            }
        }
    }
    let python = if python::available() { Some(python::second_opinion(&jobs)) } else { None };
    for t in trips {
        let delivered = match &t.delivered {
            Ok(d) => d,
            Err(reply) => match refused_ok.iter().find(|(n, _)| *n == t.name) {
                Some((_, why)) => {
                    lines.push(format!("refused (expected: {why}): {}", t.name));
                    continue;
                }
                None => {
                    failures.push(format!("{}: refused by the relay: {reply}", t.name));
                    lines.push(format!("REFUSED  {}", t.name));
                    continue;
                }
            },
        };
        let needles: Vec<&str> = t.needles.iter().map(String::as_str).collect();
        let mut problems = Vec::new();
        problems.extend(
            leak::find(delivered, &needles, t.scope).into_iter().map(|l| format!("leak (rust): {l}")),
        );
        let header_needles: Vec<&str> = t.header_needles.iter().map(String::as_str).collect();
        if !header_needles.is_empty() {
            let found = leak::find(delivered, &header_needles, Scope::HeadersOnly);
            problems.extend(found.into_iter().map(|l| format!("leak (rust): {l}")));
        }
        problems.extend(
            structure::compare(&t.sent, delivered).into_iter().map(|d| format!("structure (rust): {d}")),
        );
        if let Some(verdict) = python.as_ref().map(|p| p.get(&t.name).cloned().unwrap_or_default()) {
            problems.extend(verdict.leaks.into_iter().map(|l| format!("leak (python): {l}")));
            problems.extend(verdict.structure.into_iter().map(|d| format!("structure (python): {d}")));
            let headers = python.as_ref().and_then(|p| p.get(&format!("{} (header block)", t.name)).cloned());
            problems
                .extend(headers.unwrap_or_default().leaks.into_iter().map(|l| format!("leak (python): {l}")));
        }
        if problems.is_empty() {
            lines.push(format!("ok       {}", t.name));
        } else {
            lines.push(format!("FAILED   {} ({} findings)", t.name, problems.len()));
            failures.push(format!(
                "{}:\n    {}\n  delivered:\n{}",
                t.name,
                problems.join("\n    "),
                String::from_utf8_lossy(delivered)
            ));
        }
    }
    println!("{}", lines.join("\n"));
    failures
}

fn assert_clean(what: &str, trips: &[Trip], failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{what}: {} of {} messages failed:\n\n{}",
        failures.len(),
        trips.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_cases_shopper_to_store() {
    let h = Harness::start().await;
    let mut trips = Vec::new();
    for case in TO_STORE {
        let sent = replace(&fixture(case.file), "{{STORE_ALIAS}}", &h.store_alias);
        let delivered = h.send(SHOPPER, &h.store_alias, &sent).await;
        trips.push(Trip {
            name: format!("{} ({})", case.file, case.what),
            sent,
            delivered,
            needles: vec![SHOPPER.into()],
            scope: Scope::Everything,
            header_needles: vec!["shopper.example".into()],
        });
    }
    h.stop().await;
    let failures = judge(&trips, &[]);
    assert_clean("crafted shopper → store", &trips, failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_cases_store_to_shopper() {
    let h = Harness::start().await;
    let mut trips = Vec::new();
    for case in TO_SHOPPER {
        let sent = replace(&fixture(case.file), "{{SHOPPER_ALIAS}}", &h.shopper_alias);
        let delivered = h.send(STORE_SENDER, &h.shopper_alias, &sent).await;
        trips.push(Trip {
            name: format!("{} ({})", case.file, case.what),
            sent,
            delivered,
            needles: vec![STORE_CONTACT.into(), STORE_SENDER.into(), "acme.example".into()],
            scope: Scope::HeadersOnly,
            header_needles: Vec::new(),
        });
    }
    h.stop().await;
    let failures = judge(&trips, &[]);
    assert_clean("crafted store → shopper", &trips, failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpython_corpus_shopper_to_store() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir("cpython"))
        .expect("tests/corpus/cpython")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("msg_")))
        .collect();
    files.sort();
    assert_eq!(files.len(), 48, "tests/corpus/cpython holds CPython 3.11's 48 msg_*.txt");
    let h = Harness::start().await;
    let mut trips = Vec::new();
    for (n, path) in files.iter().enumerate() {
        let original = std::fs::read(path).expect("read corpus message");
        let sent = inject::shopper_message(&original, SHOPPER, &h.store_alias, n);
        let delivered = h.send(SHOPPER, &h.store_alias, &sent).await;
        trips.push(Trip {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            sent,
            delivered,
            needles: vec![SHOPPER.into()],
            scope: Scope::Everything,
            header_needles: vec!["shopper.example".into()],
        });
    }
    h.stop().await;
    let failures = judge(&trips, CORPUS_REFUSED);
    assert_clean("CPython corpus", &trips, failures);
}

/// Every fixture file is a listed case and every case has its file: a case cannot be
/// dropped without this test saying so.
#[test]
fn every_fixture_is_a_listed_case() {
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir("hostile"))
        .expect("tests/corpus/hostile")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".eml").map(str::to_owned))
        .collect();
    files.sort();
    let mut listed: Vec<String> = TO_STORE
        .iter()
        .chain(TO_SHOPPER)
        .map(|c| c.file.to_owned())
        .chain(READER_CASES.iter().map(|c| c.file.to_owned()))
        .collect();
    listed.sort();
    assert_eq!(files, listed);
    for c in TO_SHOPPER {
        assert!(c.file.starts_with("store-"), "{}", c.file);
    }
}

/// The detectors can fail: each finds the address in every encoding a case uses, in the
/// crafted messages as sent and in a small message per encoding, and finds nothing in a
/// message that only comes close.
#[test]
fn detectors_find_every_encoding() {
    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let msg = |headers: &str, body: &str| {
        format!("From: someone@elsewhere.example\r\nSubject: hello\r\nMIME-Version: 1.0\r\n{headers}\r\n{body}\r\n").into_bytes()
    };
    let mixed =
        |part: &str| msg("Content-Type: multipart/mixed; boundary=b\r\n", &format!("--b\r\n{part}\r\n--b--"));
    let pct: String = SHOPPER.bytes().map(|b| format!("%{b:02X}")).collect();
    let refs: String = SHOPPER.chars().map(|c| format!("&#{};", c as u32)).collect();
    let utf16: Vec<u8> =
        [0xfe, 0xff].into_iter().chain(SHOPPER.encode_utf16().flat_map(u16::to_be_bytes)).collect();
    let nested = format!("From: {SHOPPER}\r\nSubject: x\r\n\r\nhi\r\n");
    let mut samples: Vec<(String, Vec<u8>)> = vec![
        ("plain".into(), msg("", &format!("write to {SHOPPER}"))),
        ("capitals".into(), msg("", &format!("write to {}", SHOPPER.to_uppercase()))),
        (
            "qp soft break".into(),
            msg("Content-Transfer-Encoding: quoted-printable\r\n", "jane.d=\r\noe@shopp=\r\ner.example"),
        ),
        (
            "qp =40".into(),
            msg("Content-Transfer-Encoding: quoted-printable\r\n", "jane.doe=40shopper.example"),
        ),
        ("subject B".into(), msg(&format!("X-A: =?utf-8?b?{}?=\r\n", b64(SHOPPER.as_bytes())), "")),
        ("subject Q".into(), msg("X-A: =?utf-8?q?jane.doe=40shopper.example?=\r\n", "")),
        ("split words".into(), msg("X-A: =?utf-8?q?jane.doe?=\r\n =?utf-8?q?=40shopper.example?=\r\n", "")),
        ("words in body".into(), msg("", "Reply-To: =?utf-8?q?jane.doe=40shopper.example?=")),
        ("&#64;".into(), msg("Content-Type: text/html\r\n", "jane.doe&#64;shopper.example")),
        ("&#x40;".into(), msg("Content-Type: text/html\r\n", "jane.doe&#x40;shopper.example")),
        ("&commat;".into(), msg("Content-Type: text/html\r\n", "jane.doe&commat;shopper.example")),
        ("all references".into(), msg("Content-Type: text/html\r\n", &refs)),
        (
            "%40".into(),
            msg("Content-Type: text/html\r\n", "<a href=\"mailto:jane.doe%40shopper.example\">x</a>"),
        ),
        (
            "all percent".into(),
            msg("Content-Type: text/html\r\n", &format!("<a href=\"mailto:{pct}\">x</a>")),
        ),
        (
            "&#37;40".into(),
            msg("Content-Type: text/html\r\n", "<a href=\"mailto:jane.doe&#37;40shopper.example\">x</a>"),
        ),
        (
            "utf-16".into(),
            msg(
                "Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n",
                &b64(&utf16),
            ),
        ),
        (
            "flowed".into(),
            msg("Content-Type: text/plain; format=flowed; delsp=yes\r\n", "jane.doe@shop \r\nper.example"),
        ),
        (
            "preamble".into(),
            msg(
                "Content-Type: multipart/mixed; boundary=b\r\n",
                &format!("{SHOPPER}\r\n--b\r\n\r\nhi\r\n--b--"),
            ),
        ),
        (
            "filename continuation".into(),
            mixed(
                "Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*0*=utf-8''jane.doe; filename*1*=%40shopper.example\r\n\r\nx",
            ),
        ),
        ("nested message".into(), mixed(&format!("Content-Type: message/rfc822\r\n\r\n{nested}"))),
        (
            "base64 message/rfc822".into(),
            mixed(&format!(
                "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                b64(nested.as_bytes())
            )),
        ),
    ];
    for k in 0..3 {
        let text = format!("{}{SHOPPER} and more", &"xyz"[..k]);
        samples.push((
            format!("base64 alignment {k}"),
            msg("Content-Transfer-Encoding: base64\r\n", &b64(text.as_bytes())),
        ));
    }
    let mut reader_samples: Vec<(String, Vec<u8>, &str)> = Vec::new();
    // The crafted cases as sent, without the plain From line they share: each must be
    // found by what the case itself tries.
    for case in TO_STORE {
        let raw = replace(
            &fixture(case.file),
            &format!("From: Jane Doe <{SHOPPER}>\r\n"),
            "From: someone@elsewhere.example\r\n",
        );
        samples.push((format!("fixture {}", case.file), raw));
    }
    for case in READER_CASES {
        let needle = case.shopper.unwrap_or(SHOPPER);
        let raw = replace(
            &fixture(case.file),
            &format!("From: Jane Doe <{needle}>\r\n"),
            "From: someone@elsewhere.example\r\n",
        );
        reader_samples.push((format!("fixture {}", case.file), raw, needle));
    }
    let clean = msg(
        "Content-Type: text/html\r\n",
        "jane.doe at shopper dot example, jane.doe@other.example, &#64;shopper, jane.doe%20shopper.example",
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut jobs = Vec::new();
    let mut missed = Vec::new();
    let clean_name = "clean".to_owned();
    let all = samples
        .iter()
        .map(|(n, r)| (n, r, SHOPPER))
        .chain(reader_samples.iter().map(|(n, r, needle)| (n, r, *needle)))
        .chain([(&clean_name, &clean, SHOPPER)]);
    for (i, (name, raw, needle)) in all.enumerate() {
        let path = dir.path().join(format!("{i}.eml"));
        std::fs::write(&path, raw).expect("write");
        jobs.push(python::Job {
            name: name.clone(),
            delivered: path,
            sent: None,
            needles: vec![needle.into()],
            headers_only: false,
        });
        let found = leak::find(raw, &[needle], Scope::Everything);
        if name == "clean" {
            assert!(found.is_empty(), "rust detector: false alarm on a clean message: {found:?}");
        } else if found.is_empty() {
            missed.push(format!("rust detector missed: {name}"));
        }
    }
    if python::available() {
        for (name, verdict) in python::second_opinion(&jobs) {
            if name == "clean" {
                assert!(
                    verdict.leaks.is_empty(),
                    "python detector: false alarm on a clean message: {:?}",
                    verdict.leaks
                );
            } else if verdict.leaks.is_empty() {
                missed.push(format!("python detector missed: {name}"));
            }
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

/// Issue 8's cases over real SMTP: each is either rewritten (delivered, and neither
/// detector finds the address) or refused with 554 5.6.0 and never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_cases_shopper_to_store() {
    let h = Harness::start().await;
    let (status, idna) = h
        .relay
        .api(
            "POST",
            "/v1/threads",
            Some(serde_json::json!({"order": "order-idna", "store": "acme",
                "shopper": {"email": IDNA_SHOPPER, "name": "Jane"}})),
        )
        .await;
    assert_eq!(status, 201, "{idna}");
    let idna_alias = idna["store_alias"].as_str().expect("store_alias").to_owned();
    let mut trips = Vec::new();
    let mut wrong = Vec::new();
    for case in READER_CASES {
        let (shopper, alias) = match case.shopper {
            Some(s) => (s, idna_alias.as_str()),
            None => (SHOPPER, h.store_alias.as_str()),
        };
        let sent = replace(&fixture(case.file), "{{STORE_ALIAS}}", alias);
        let delivered = h.send(shopper, alias, &sent).await;
        let name = format!("{} ({})", case.file, case.what);
        match (case.handled, &delivered) {
            (Handled::Rewritten, _) => {}
            (Handled::ReaderRefuses, Err(reply))
                if reply.starts_with("554 5.6.0") || reply.starts_with("5.6.0") =>
            {
                println!("refused  {name}: {reply}");
                continue;
            }
            (Handled::GateRefuses(why), Err(reply))
                if reply.contains("5.6.0") && reply.to_lowercase().contains(&why.to_lowercase()) =>
            {
                println!("refused  {name}: {reply}");
                continue;
            }
            (expected, got) => {
                wrong.push(format!(
                    "{name}: expected {expected:?}, got {}",
                    match got {
                        Ok(d) => format!("delivered:\n{}", String::from_utf8_lossy(d)),
                        Err(r) => format!("refused: {r}"),
                    }
                ));
                continue;
            }
        }
        let domain = shopper.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default();
        trips.push(Trip {
            name,
            sent,
            delivered,
            needles: vec![shopper.into()],
            scope: Scope::Everything,
            header_needles: vec![domain],
        });
    }
    h.stop().await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    let failures = judge(&trips, &[]);
    assert_clean("issue 8 cases shopper → store", &trips, failures);
}

/// The mutation check: with the reader view and the gate disabled (the read-back done by
/// the rewriter's own matcher, as before), every case the relay refuses would have been
/// passed on, and what would have been delivered shows the address to a detector. So it
/// is the reader view and the gate that stop them, and neither can be removed unnoticed.
#[test]
fn without_the_reader_view_the_refused_cases_pass_through() {
    use maskrelay::rewrite::{self, IdMap, NamedAddress, Plan, RewriteError};
    let plan = |shopper: &str| Plan {
        from: NamedAddress { name: Some("Jane via Market".into()), address: "k3x@relay.example".into() },
        reply_to: "k3x@relay.example".into(),
        to: NamedAddress { name: Some("Acme Shop".into()), address: STORE_CONTACT.into() },
        hidden_in_headers: vec![shopper.into()],
        replace_in_body: vec![(shopper.into(), "k3x@relay.example".into())],
        message_id: "m1@relay.example".into(),
        extra_headers: Vec::new(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut jobs = Vec::new();
    let mut rust_found = std::collections::HashMap::new();
    let mut problems = Vec::new();
    for case in READER_CASES {
        let shopper = case.shopper.unwrap_or(SHOPPER);
        let raw = replace(&fixture(case.file), "{{STORE_ALIAS}}", "st0re@relay.example");
        let message = rewrite::parse(&raw).expect("parses");
        let plan = plan(shopper);
        let now = rewrite::rewrite(&message, &raw, &plan, &IdMap::default());
        let unchecked = rewrite::rewrite_unchecked(&message, &raw, &plan, &IdMap::default());
        let before = rewrite::verify_by_matcher(&unchecked, &plan);
        match (case.handled, &now) {
            (Handled::Rewritten, Ok(out)) => {
                let found = leak::find(out, &[shopper], Scope::Everything);
                if !found.is_empty() {
                    problems.push(format!("{}: rewritten but still shows: {found:?}", case.file));
                }
                continue;
            }
            (Handled::ReaderRefuses, Err(RewriteError::WouldLeak)) => {}
            (Handled::GateRefuses(_), Err(RewriteError::Refused(_))) => {}
            (h, got) => {
                problems.push(format!(
                    "{}: expected {h:?}, rewrite gave {:?}",
                    case.file,
                    got.as_ref().map(|_| "Ok")
                ));
                continue;
            }
        }
        if before.is_err() {
            problems.push(format!(
                "{}: the old read-back refuses it too: the reader view is not what stops it",
                case.file
            ));
        }
        let path = dir.path().join(format!("{}.eml", case.file));
        std::fs::write(&path, &unchecked).expect("write");
        jobs.push(python::Job {
            name: case.file.into(),
            delivered: path,
            sent: None,
            needles: vec![shopper.into()],
            headers_only: false,
        });
        rust_found.insert(case.file, leak::find(&unchecked, &[shopper], Scope::Everything));
    }
    let python = if python::available() { python::second_opinion(&jobs) } else { Default::default() };
    for job in &jobs {
        let rust = &rust_found[job.name.as_str()];
        let py = python.get(&job.name).map(|v| v.leaks.clone()).unwrap_or_default();
        println!(
            "without the reader view {}: rust {} findings, python {} findings",
            job.name,
            rust.len(),
            py.len()
        );
        if rust.is_empty() && py.is_empty() {
            problems.push(format!("{}: would pass through, but no detector shows a leak in it", job.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
