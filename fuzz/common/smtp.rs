//! What a client can check of the relay's side of an SMTP conversation, written apart from
//! the session code: the form of the replies, and where the data of a message ends.

/// One whole reply: its code and its lines' texts (after the code and separator).
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

/// Splits the reply stream into replies, checking the form of every line (RFC 5321
/// 4.2, 4.5.3.1.5; RFC 2034 for the enhanced codes).
pub fn replies(bytes: &[u8]) -> Vec<Reply> {
    let mut out: Vec<Reply> = Vec::new();
    let mut open = false;
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            panic!("reply stream ends inside a line: {:?}", String::from_utf8_lossy(rest));
        };
        let line = &rest[..=lf];
        rest = &rest[lf + 1..];
        let shown = String::from_utf8_lossy(line);
        assert!(line.len() <= 512, "reply line of {} octets (limit 512): {shown:?}", line.len());
        assert!(line.ends_with(b"\r\n"), "reply line without CR LF: {shown:?}");
        let body = &line[..line.len() - 2];
        assert!(!body.contains(&b'\r'), "CR inside a reply line: {shown:?}");
        assert!(body.len() >= 3 && body[..3].iter().all(u8::is_ascii_digit), "no code: {shown:?}");
        assert!((b'2'..=b'5').contains(&body[0]), "no such reply class: {shown:?}");
        let code: u16 = std::str::from_utf8(&body[..3]).unwrap().parse().unwrap();
        let sep = body.get(3).copied().unwrap_or(b' ');
        assert!(sep == b' ' || sep == b'-', "bad separator: {shown:?}");
        let text = String::from_utf8_lossy(body.get(4..).unwrap_or_default()).into_owned();
        if open {
            let last = out.last_mut().unwrap();
            assert_eq!(last.code, code, "a multi-line reply changed its code: {shown:?}");
            last.lines.push(text);
        } else {
            out.push(Reply { code, lines: vec![text] });
        }
        open = sep == b'-';
    }
    assert!(!open, "the reply stream ends inside a multi-line reply");
    for r in &out {
        if r.code >= 400 {
            // 4xx/5xx: `class.subject.detail ` first, its class the reply's (RFC 3463).
            let text = &r.lines[0];
            let code = text.split(' ').next().unwrap_or_default();
            let parts: Vec<&str> = code.split('.').collect();
            assert!(
                parts.len() == 3
                    && parts[0] == (r.code / 100).to_string()
                    && parts[1..]
                        .iter()
                        .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
                    && text.len() > code.len() + 1,
                "{} reply without a matching enhanced status code and sentence: {text:?}",
                r.code
            );
        }
    }
    out
}

/// RFC 5321 4.1.1.4 and 4.5.2 over the data that follows a 354, read the way the relay
/// promises (SPEC, SMTP): the data ends at the first CR LF . CR LF, the DATA line's own
/// line ending counting as its first CR LF; before it, CR LF, a bare CR and a bare LF each
/// end a line, and a line that starts with a dot and has more on it loses the dot. The
/// message (canonical CR LF text) and the bytes the data took, or None if it never ends.
pub fn reference_data(stream: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut s = b"\r\n".to_vec();
    s.extend_from_slice(stream);
    let end = s.windows(5).position(|w| w == b"\r\n.\r\n")?;
    let text = &s[2..end + 2];
    let mut lines: Vec<&[u8]> = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < text.len() {
        match text[i] {
            b'\r' if text.get(i + 1) == Some(&b'\n') => {
                lines.push(&text[start..i]);
                i += 2;
                start = i;
                continue;
            }
            b'\r' | b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let mut message = Vec::new();
    for line in lines {
        let line = if line.len() > 1 && line[0] == b'.' { &line[1..] } else { line };
        message.extend_from_slice(line);
        message.extend_from_slice(b"\r\n");
    }
    Some((message, end + 3))
}

/// Walks the client's stream line by line beside the replies: each command line gets
/// exactly one reply (and the session may close after it with 221 or 421); after a 354
/// the data runs to where `reference_data` says, and only a 250 to it queues a message,
/// which must be exactly the reference's. Nothing else may be queued.
pub fn check_against_reference(stream: &[u8], replies: &[Reply], accepted: &[Vec<u8>]) {
    let show = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
    let mut replies = replies.iter().peekable();
    let greeting = replies.next().expect("a greeting");
    assert_eq!(greeting.code, 220, "greeting {:?}", greeting.lines);
    let mut queued = accepted.iter();
    let mut at = 0;
    loop {
        let Some(lf) = stream[at..].iter().position(|&b| b == b'\n') else {
            // An unfinished last line gets no reply.
            assert!(replies.next().is_none(), "a reply to no command line");
            break;
        };
        let line = &stream[at..at + lf + 1];
        at += lf + 1;
        let Some(r) = replies.next() else {
            panic!("no reply to the command line {:?}", show(line));
        };
        let mut closed = matches!(r.code, 221 | 421);
        if r.code == 354 {
            match reference_data(&stream[at..]) {
                None => {
                    // The data never ended: no reply to it, nothing queued from it.
                    assert!(replies.next().is_none(), "a reply inside unfinished data");
                    break;
                }
                Some((message, consumed)) => {
                    at += consumed;
                    let end = replies.next().expect("a reply to the end of data");
                    if end.code == 250 {
                        assert!(end.lines[0].starts_with("2.0.0 Message queued"), "{:?}", end.lines);
                        let got = queued.next().expect("a 250 for the data but nothing queued");
                        assert!(
                            *got == message,
                            "queued message differs from the data before the first CR LF . CR LF:\n\
                             queued    {:?}\nreference {:?}",
                            show(got),
                            show(&message)
                        );
                    }
                    closed |= end.code == 421;
                }
            }
        }
        // Too many errors: the error's reply, then 421 and the end.
        if !closed && replies.peek().is_some_and(|n| n.code == 421) {
            replies.next();
            closed = true;
        }
        if closed {
            assert!(replies.next().is_none(), "replies after the session closed");
            break;
        }
    }
    assert!(queued.next().is_none(), "a message was queued that no CR LF . CR LF ended");
    for m in accepted {
        for (j, &b) in m.iter().enumerate() {
            assert!(b != 0, "NUL in a queued message");
            assert!(b != b'\r' || m.get(j + 1) == Some(&b'\n'), "bare CR in a queued message");
            assert!(b != b'\n' || (j > 0 && m[j - 1] == b'\r'), "bare LF in a queued message");
        }
    }
}
