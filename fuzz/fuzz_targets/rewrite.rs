#![no_main]
//! The MIME rewriter, toward a store: any bytes (with line endings made CR LF, as the
//! session hands a message on) as a message a shopper
//! (jane.doe@shopper.example) sends to a store's alias, with the plan the relay builds for
//! that direction (smtp::transaction::plan_for, Side::Store). Either the rewriter refuses
//! it, or its output
//! - parses,
//! - passes the read-back (`read_back`: today `rewrite::verify`; the reader view of
//!   src/rewrite/reader.rs replaces it there, in one place),
//! - and, read independently here with mail-parser alone: no hidden address in the raw
//!   header block or in any part's header fields, none of the replaced addresses in any
//!   decoded text or HTML part at any depth, no header line over 998 octets and no header
//!   line that is neither a field nor a fold.
//!
//! No panic, whatever the input.

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use mail_parser::{Message, PartType};
use maskrelay::address::Mailbox;
use maskrelay::rewrite::{self, IdMap, NamedAddress, Plan};

const SHOPPER: &str = "jane.doe@shopper.example";
const SHOPPER_ALIAS: &str = "so1x@relay.test";
const DOMAIN: &str = "relay.test";

/// The independent read-back of the rewriter's output: the one place to change when the
/// reader view replaces `rewrite::verify`.
fn read_back(out: &[u8], plan: &Plan) -> Result<(), rewrite::RewriteError> {
    rewrite::verify(out, plan)
}

/// The plan of a shopper's message to the store, as smtp::transaction::plan_for makes it.
fn plan(header_from: Option<&Mailbox>, message_id: String) -> Plan {
    let shopper = Mailbox::parse(SHOPPER).unwrap();
    let sender = shopper.clone();
    let mut hidden: Vec<String> = header_from.into_iter().chain([&sender]).map(Mailbox::normalized).collect();
    hidden.push(shopper.normalized());
    let mut replace = vec![(shopper.normalized(), SHOPPER_ALIAS.to_owned())];
    if let Some(f) = header_from.filter(|f| f.normalized() != shopper.normalized()) {
        replace.push((f.normalized(), SHOPPER_ALIAS.to_owned()));
    }
    Plan {
        from: NamedAddress { name: Some("Jane Doe via Market".into()), address: SHOPPER_ALIAS.into() },
        reply_to: SHOPPER_ALIAS.into(),
        to: NamedAddress { name: Some("Acme Shop".into()), address: "support@acme.example".into() },
        hidden_in_headers: hidden,
        replace_in_body: replace,
        message_id,
        extra_headers: vec![("Authentication-Results", format!("{DOMAIN}; dmarc=none"))],
    }
}

fn shows(bytes: &[u8], needles: &[String]) -> Option<String> {
    let lower = bytes.to_ascii_lowercase();
    needles.iter().find(|n| lower.windows(n.len()).any(|w| w == n.as_bytes())).cloned()
}

/// mail-parser's reading of every part at every depth: header fields raw, text decoded.
fn check_parts(m: &Message<'_>, needles: &[String], depth: usize) {
    assert!(depth < 200, "nesting without end");
    let buf: &[u8] = &m.raw_message;
    for (i, p) in m.parts.iter().enumerate() {
        for h in &p.headers {
            let field = buf.get(h.offset_field as usize..h.offset_end as usize).unwrap_or_default();
            if let Some(n) = shows(field, needles) {
                panic!("part {i} header field shows {n}: {:?}", String::from_utf8_lossy(field));
            }
        }
        match &p.body {
            PartType::Text(t) | PartType::Html(t) => {
                if let Some(n) = shows(t.as_bytes(), needles) {
                    panic!("text of part {i} at depth {depth} shows {n}: {t:?}");
                }
            }
            PartType::Message(nested) => check_parts(nested, needles, depth + 1),
            _ => {}
        }
    }
}

/// The message as the session hands it on (smtp::data): every line ending CR LF (a bare CR
/// or LF ends a line too), a last line ended, no NUL (refused with 554).
fn as_received(input: &[u8]) -> Option<Vec<u8>> {
    if input.contains(&0) {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
}

fuzz_target!(|input: &[u8]| {
    let Some(raw) = as_received(input) else { return };
    let raw = raw.as_slice();
    let Some(message) = rewrite::parse(raw) else { return };
    // What smtp::transaction::HeaderFacts reads.
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address.as_deref())
        .and_then(|a| Mailbox::parse(a).ok());
    let own_id = message.message_id().map_or_else(|| format!("generated@{DOMAIN}"), str::to_owned);
    let referenced = rewrite::referenced_ids(&message);
    let ids =
        IdMap::plan("t-o1", DOMAIN, &HashMap::new(), std::iter::once(own_id.as_str()).chain(referenced));
    let plan = plan(from.as_ref(), ids.get(&own_id).unwrap_or(&own_id).to_owned());

    let Ok(out) = rewrite::rewrite(&message, raw, &plan, &ids) else { return };

    if let Err(e) = read_back(&out, &plan) {
        panic!("the read-back refuses what the rewriter passed: {e}");
    }
    let parsed = rewrite::parse(&out).expect("the output parses");
    assert!(!parsed.parts.is_empty(), "the output has no parts");

    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").map_or(out.len(), |p| p + 2);
    let head = &out[..head_end];
    for line in head.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let shown = String::from_utf8_lossy(line);
        assert!(line.ends_with(b"\r"), "header line without CR LF: {shown:?}");
        let line = &line[..line.len() - 1];
        assert!(line.len() <= 998, "header line of {} octets: {shown:?}", line.len());
        assert!(!line.contains(&b'\r'), "CR inside a header line: {shown:?}");
        let fold = line.starts_with(b" ") || line.starts_with(b"\t");
        let field = line
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|c| c > 0 && line[..c].iter().all(|&b| b.is_ascii_graphic() && b != b':'));
        assert!(fold || field, "header line that is neither a field nor a fold: {shown:?}");
    }
    if let Some(n) = shows(head, &plan.hidden_in_headers) {
        panic!("the header block shows {n}: {:?}", String::from_utf8_lossy(head));
    }
    let needles: Vec<String> = plan.replace_in_body.iter().map(|(real, _)| real.clone()).collect();
    check_parts(&parsed, &needles, 0);
});
