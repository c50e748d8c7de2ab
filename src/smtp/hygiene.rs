//! What is refused before the state machine sees it: command lines that are not SMTP
//! (an HTTP request, a bare CR), and mail that has looped.

/// The most Received lines a message may carry (Postfix's `hopcount_limit`); more is a
/// loop (RFC 5321 6.3).
pub const MAX_RECEIVED: usize = 50;

/// Why a command line is refused before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// An HTTP request line (`GET / HTTP/1.1`, `POST`, `CONNECT`…): a browser or proxy
    /// was pointed at the SMTP port, possibly by a page that wants the rest of its request
    /// body run as SMTP commands (cross-protocol attack). Postfix's
    /// `smtpd_forbidden_commands` closes such a session at once, and so does the relay.
    Http,
    /// A CR (or NUL) inside the line: RFC 5321 2.3.8 allows CR only in CR LF, and an
    /// address with a CR in it could turn into two header lines when it is written down.
    BareCr,
}

/// HTTP methods (RFC 9110 9.3, RFC 5789): none is an SMTP verb.
const HTTP_METHODS: &[&str] =
    &["GET", "POST", "CONNECT", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"];

/// Screens one command line (without its LF).
pub fn screen(line: &[u8]) -> Option<Screened> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|&b| b == b'\r' || b == 0) {
        return Some(Screened::BareCr);
    }
    let verb = line.split(|&b| b == b' ').next().unwrap_or_default();
    HTTP_METHODS.iter().any(|m| verb.eq_ignore_ascii_case(m.as_bytes())).then_some(Screened::Http)
}

/// How many Received fields the header block of `message` holds.
pub fn received_count(message: &[u8]) -> usize {
    let mut count = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        // A folded line starts with white space and is no field of its own; RFC 5322 4.5
        // allows white space between a field name and its colon.
        let name = &line[..colon];
        if !name.starts_with(b" ")
            && !name.starts_with(b"\t")
            && name.trim_ascii_end().eq_ignore_ascii_case(b"received")
        {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines_and_bare_cr_are_screened() {
        for line in [
            "GET / HTTP/1.1",
            "POST /x HTTP/1.0\r",
            "CONNECT relay.test:25 HTTP/1.1",
            "get /",
            "HEAD / HTTP/1.1",
        ] {
            assert_eq!(screen(line.as_bytes()), Some(Screened::Http), "{line:?}");
        }
        for line in ["MAIL FROM:<a\rb@c.example>", "RCPT TO:<x@y>\r\r", "NOOP \0"] {
            assert_eq!(screen(line.as_bytes()), Some(Screened::BareCr), "{line:?}");
        }
        for line in ["MAIL FROM:<get@x.example>", "EHLO get", "NOOP\r", "GETTY", "RSET"] {
            assert_eq!(screen(line.as_bytes()), None, "{line:?}");
        }
    }

    #[test]
    fn received_fields_of_the_header_block_are_counted() {
        let m = b"Received: a\r\n  from: folded\r\nreceived : b\r\nX-Received: no\r\nSubject: s\r\nRECEIVED:c\r\n\r\nReceived: in the body\r\n";
        assert_eq!(received_count(m), 3);
        assert_eq!(received_count(b"\r\nReceived: body only\r\n"), 0);
        assert_eq!(received_count(b"Received: x\nReceived: y\n"), 2);
    }
}
