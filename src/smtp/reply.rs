//! Every SMTP reply the relay gives, in one place: RFC 5321 codes with RFC 3463 enhanced
//! status codes and a sentence a person can act on.

use std::borrow::Cow;

/// One reply. Multi-line replies are written with `-` continuation lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: Cow<'static, str>,
}

const fn r(code: u16, text: &'static str) -> Reply {
    Reply { code, text: Cow::Borrowed(text) }
}

impl Reply {
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self { code, text: text.into() }
    }
    /// Wire form, CRLF-terminated; each line of `text` becomes one reply line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}{}\r\n", self.code, line).as_bytes());
        }
    }
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
}

pub const OK: Reply = r(250, "2.0.0 OK");
pub const SENDER_OK: Reply = r(250, "2.1.0 Sender OK");
pub const RECIPIENT_OK: Reply = r(250, "2.1.5 Recipient OK");
pub const RESET: Reply = r(250, "2.0.0 Reset state");
pub const START_DATA: Reply = r(354, "Start mail input; end with <CRLF>.<CRLF>");
pub const BYE: Reply = r(221, "2.0.0 Bye");
pub const VRFY: Reply = r(252, "2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
pub const HELP: Reply = r(214, "2.0.0 This is maskrelay; see RFC 5321 for the commands it speaks");

pub const NO_SUCH_ALIAS: Reply =
    r(550, "5.1.1 No such address here: it is unknown, revoked, expired or erased");
pub const NOT_RELAY_DOMAIN: Reply =
    r(550, "5.7.1 Relaying denied: this server only accepts mail for its own alias domain");
pub const SENDER_NOT_ALLOWED: Reply =
    r(550, "5.7.1 This sender may not write to this address; the attempt has been recorded");
pub const SENDER_NOT_AUTHENTICATED: Reply = r(
    550,
    "5.7.1 The From address of this message could not be authenticated (DMARC); the attempt has been recorded",
);
pub const NO_FROM: Reply = r(550, "5.7.1 Message has no usable From header");
pub const TOO_BIG: Reply = r(552, "5.3.4 Message exceeds the maximum size this relay accepts");
/// `queue.max_messages` reached: the relay takes more once deliveries make room.
pub const QUEUE_FULL: Reply = r(451, "4.3.1 The relay's queue is full; try again later");
pub const STORAGE_UNAVAILABLE: Reply =
    r(451, "4.3.0 Cannot store the message safely right now; please try again later");
pub const NO_ROOM_FOR_SIZE: Reply =
    r(452, "4.3.1 Not enough memory free now for a message of the declared SIZE; try again later");
pub const NO_ROOM_FOR_DATA: Reply =
    r(452, "4.3.1 Not enough memory free now to hold this message; it was not accepted, try again later");
pub const AUTH_TEMPFAIL: Reply =
    r(451, "4.7.0 Cannot authenticate the sender right now (DNS); please try again later");
pub const TOO_MANY_RECIPIENTS: Reply =
    r(452, "4.5.3 Too many recipients for one message; send the rest in another");
pub const NUL_IN_MESSAGE: Reply = r(
    554,
    "5.6.0 Message contains a NUL byte, which mail may not contain (RFC 5322 2.1); remove it and send again",
);
pub const LOOP: Reply =
    r(554, "5.4.6 Mail loop: the message has passed more than 50 mail servers (Received lines)");
pub const UNPARSEABLE: Reply = r(554, "5.6.0 Message could not be parsed as RFC 5322 mail");
pub const AMBIGUOUS_FIELD_NAME: Reply = r(
    554,
    "5.6.0 A header field name contains white space or a control character, which mail readers read differently; write field names without them (Content-Type:)",
);
pub const CANNOT_REWRITE: Reply = r(
    554,
    "5.6.0 A real address would still be readable in this message after rewriting (e.g. split by HTML markup, in full-width characters or in a part the relay cannot rewrite); remove it or write it plainly, and send again",
);

pub const GREET_FIRST: Reply = r(503, "5.5.1 Send EHLO or HELO first");
pub const MAIL_FIRST: Reply = r(503, "5.5.1 Send MAIL FROM first");
pub const NESTED_MAIL: Reply = r(503, "5.5.1 A transaction is already open; send RSET to start over");
pub const NO_VALID_RECIPIENTS: Reply = r(554, "5.5.1 No valid recipients");
pub const UNRECOGNIZED: Reply = r(500, "5.5.2 Command unrecognized");
pub const INCOMPLETE_COMMAND: Reply =
    r(501, "5.5.4 Syntax error: the command line ends before its arguments do");
pub const BARE_CR: Reply =
    r(501, "5.5.2 Syntax error: a CR or NUL inside a command line; end each command with CR LF only");
pub const NOT_HTTP: Reply = r(221, "2.7.0 This is an SMTP server, not a web server; closing connection");
pub const LINE_TOO_LONG: Reply = r(500, "5.5.2 Line too long");
pub const BAD_SENDER: Reply = r(501, "5.1.7 Bad sender address syntax");
pub const BAD_RECIPIENT: Reply = r(501, "5.1.3 Bad recipient address syntax");
pub const NOT_IMPLEMENTED: Reply = r(502, "5.5.1 Command not implemented");
pub const NO_TLS: Reply = r(502, "5.5.1 STARTTLS is not available on this listener");
pub const ALREADY_TLS: Reply = r(503, "5.5.1 TLS is already active");
pub const READY_TLS: Reply = r(220, "2.0.0 Ready to start TLS");
pub const ENCRYPTION_REQUIRED: Reply = r(538, "5.7.11 Encryption required: send STARTTLS first");
pub const AUTH_REQUIRED: Reply = r(530, "5.7.0 Authentication required: log in with AUTH first");
pub const BAD_SEQUENCE_AUTH: Reply =
    r(503, "5.5.1 AUTH is only allowed once, after EHLO and outside a transaction");
pub const AUTH_MECHANISM: Reply = r(504, "5.5.4 Unrecognized authentication mechanism; use PLAIN or LOGIN");
pub const AUTH_CANCELLED: Reply = r(501, "5.5.2 Authentication cancelled or malformed");
pub const AUTH_OK: Reply = r(235, "2.7.0 Authentication successful");
pub const AUTH_FAILED: Reply = r(535, "5.7.8 Authentication credentials invalid");
pub const AUTH_TEMPFAIL_STORAGE: Reply = r(454, "4.7.0 Temporary authentication failure; try again later");
pub const NOT_YOUR_SHOPPER: Reply =
    r(550, "5.7.1 This login may only write to shopper aliases of its own store");
pub const NO_AUTH: Reply = r(503, "5.5.1 AUTH is not available on this listener");

pub const TOO_MANY_ERRORS: Reply = r(421, "4.7.0 Too many errors, closing connection");
pub const TOO_MANY_COMMANDS: Reply = r(421, "4.7.0 Too many commands in one connection, closing");
pub const TIMEOUT: Reply = r(421, "4.4.2 Idle too long, closing connection");
pub const COMMAND_TIMEOUT: Reply = r(421, "4.4.2 Command line took too long to arrive, closing connection");
pub const TRANSACTION_TIMEOUT: Reply =
    r(421, "4.4.2 Transaction took too long; send the message again over a faster connection");
pub const DATA_TOO_SLOW: Reply =
    r(421, "4.4.2 Message data arriving too slowly; send it again over a faster connection");
pub const BUSY_PEER: Reply = r(421, "4.7.0 Too many connections from your address, try again later");
pub const BUSY: Reply = r(421, "4.3.2 Too many connections, try again later");
pub const SHUTTING_DOWN: Reply = r(421, "4.3.2 Service shutting down, try again later");
