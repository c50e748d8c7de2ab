//! The DATA stream (RFC 5321 4.1.1.4, 4.5.2): where it ends, dot-unstuffing, and line
//! endings made canonical.
//!
//! Only the five octets CR LF . CR LF end the data; the CR LF of the DATA command counts
//! as the first of them, so `.` CR LF right after 354 ends an empty message. Any other
//! ending of the 2023 SMTP smuggling write-ups (`\n.\n`, `\r.\r`, `\n.\r\n`, `\r\n.\n`,
//! `\r\n.\r\r\n`, `\r\n.\x00\r\n`…) is message text, so what a sending MTA passed on as
//! one message stays one message here. smtp-proto's `DataReceiver` is not used: it keeps
//! matching through a run of CRs after `\r\n.`, which made `\r\n.\r\r\n` an end.
//!
//! The scan is a byte-at-a-time state machine, so where the input is split between reads
//! changes nothing. Bare CR and bare LF each end a line and are written as CR LF (as
//! Postfix's `smtpd_forbid_bare_newline = normalize` does), and a line that begins with a
//! dot and has more on it loses that dot, whatever line ending came before it. What comes
//! out is canonical CRLF text, so no next hop can read a line ending differently from us.

use super::backend::Reservation;

/// Where the scan is, between two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `crlf` when the line before ended in a real CR LF (or
    /// this is the first line), the only place the end of data can begin.
    LineStart { crlf: bool },
    /// The line so far is one dot, not yet written.
    Dot { crlf: bool },
    /// CR LF, a dot and a CR: an LF now ends the data.
    DotCr,
    /// Inside a line.
    Text,
    /// A CR was read inside a line: CR LF, or a bare CR if no LF follows.
    Cr,
}

/// How far a `feed` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All of the input was message text; more is needed.
    More,
    /// The data ended: the first `consumed` bytes of the input were its last; what follows
    /// them is the client's next command (RFC 2920 pipelining).
    End { consumed: usize },
}

/// Why a complete message is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("message over the size limit")]
    TooBig,
    /// RFC 5322 2.1 and RFC 6152 3 allow no NUL in mail; some receivers drop NULs before
    /// looking for the end of data, so `\r\n\x00.\r\n` passed on could end a message there.
    #[error("message contains a NUL byte")]
    Nul,
    /// The relay had no memory to hold the rest of it (`smtp.data_memory_bytes`): read to
    /// the end and dropped, for the client to send again later.
    #[error("no room to hold the message")]
    NoRoom,
}

/// Reads one message from the DATA stream.
#[derive(Debug)]
pub struct DataReader {
    state: State,
    message: Vec<u8>,
    /// Bytes the message has, kept or not.
    size: usize,
    max: usize,
    nul: bool,
    /// The message is being dropped for want of memory (see `discard`).
    discarded: bool,
    /// What the buffer may hold, when it is budgeted.
    room: Option<Reservation>,
}

impl DataReader {
    /// A reader for a message of at most `max` bytes (after unstuffing and normalizing),
    /// its buffer not bounded by any budget (tests, fuzzing).
    pub fn new(max: usize) -> Self {
        Self::build(max, None)
    }

    /// A reader whose buffer is held within `room`, a reservation in the relay's data
    /// budget. The buffer starts with the capacity already reserved (the SIZE the client
    /// declared at MAIL), so it is not grown and copied by doubling as the message
    /// arrives; untouched capacity costs address space, not memory, so a client that
    /// declares 25 MB and sends nothing does not cost 25 MB. Past that capacity the
    /// reservation is grown first, by half again; when the budget has no room the message
    /// is dropped (`discard`) and `finish` says `NoRoom`.
    pub fn budgeted(max: usize, room: Reservation) -> Self {
        Self::build(max, Some(room))
    }

    fn build(max: usize, room: Option<Reservation>) -> Self {
        let capacity = room.as_ref().map_or(0, |r| r.bytes().min(max));
        Self {
            state: State::LineStart { crlf: true },
            message: Vec::with_capacity(capacity),
            size: 0,
            max,
            nul: false,
            discarded: false,
            room,
        }
    }

    /// Bytes of the message kept so far, and the capacity of its buffer.
    pub fn kept(&self) -> (usize, usize) {
        (self.message.len(), self.message.capacity())
    }

    /// The reservation, to hold until the message it paid for is done with.
    pub fn take_room(&mut self) -> Option<Reservation> {
        self.room.take()
    }

    /// Drops what was kept and keeps nothing more; the stream is still read to its end so
    /// the session stays in step, and `finish` says `NoRoom`.
    fn discard(&mut self) {
        self.discarded = true;
        self.drop_message();
    }

    /// Nothing more is kept: the buffer and its reservation are given back at once.
    fn drop_message(&mut self) {
        self.message = Vec::new();
        self.room = None;
    }

    /// Room in the buffer for `more` bytes, within the reservation; false if there is none.
    fn make_room(&mut self, more: usize) -> bool {
        let needed = self.message.len() + more;
        if needed <= self.message.capacity() {
            return true;
        }
        let Some(room) = &mut self.room else {
            self.message.reserve(more);
            return true;
        };
        const STEP: usize = 64 * 1024;
        const SMALL_STEP: usize = 4 * 1024;
        let capacity = self.message.capacity();
        // Half again (at least 64 KiB); when the budget has not that much, a little more,
        // then just what is needed, so a small message still fits in what is left.
        let steps = [(capacity / 2).max(STEP), SMALL_STEP, 0];
        for step in steps {
            let target = capacity.saturating_add(step).min(self.max).max(needed);
            if room.try_grow_to(target) {
                self.message.reserve_exact(target - self.message.len());
                // What the buffer really holds, should the allocator have given more.
                return room.try_grow_to(self.message.capacity());
            }
        }
        false
    }

    /// Scans `input`, which follows what was fed before.
    pub fn feed(&mut self, input: &[u8]) -> Progress {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Text {
                // Most of a message is line text: copy it up to the next CR or LF at once.
                let run =
                    input[i..].iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(input.len() - i);
                self.emit(&input[i..i + run]);
                i += run;
                if i == input.len() {
                    break;
                }
            }
            if self.step(input[i]) {
                return Progress::End { consumed: i + 1 };
            }
            i += 1;
        }
        Progress::More
    }

    /// One byte; true when it ended the data.
    fn step(&mut self, b: u8) -> bool {
        loop {
            // A byte that ends the previous line's decision is looked at again in the
            // new state (`continue`); every other byte is handled once (`return`).
            match (self.state, b) {
                (State::LineStart { crlf }, b'.') => self.state = State::Dot { crlf },
                (State::LineStart { .. } | State::Text, b'\r') => self.state = State::Cr,
                (State::LineStart { .. } | State::Text, b'\n') => self.end_line(false),
                (State::LineStart { .. } | State::Text, _) => {
                    self.emit(&[b]);
                    self.state = State::Text;
                }
                (State::Dot { crlf: true }, b'\r') => self.state = State::DotCr,
                (State::Dot { crlf: false }, b'\r') => {
                    // A line of one dot that did not start after CR LF: text, whatever
                    // line ending it has.
                    self.emit(b".");
                    self.state = State::Cr;
                }
                (State::Dot { .. }, b'\n') => {
                    self.emit(b".");
                    self.end_line(false);
                }
                (State::Dot { .. }, _) => {
                    // RFC 5321 4.5.2: the first dot of a line with more on it is dropped.
                    self.emit(&[b]);
                    self.state = State::Text;
                }
                (State::DotCr, b'\n') => return true,
                (State::DotCr, _) => {
                    // CR LF . CR and then not LF (`\r\n.\r\r\n`): a line of one dot that
                    // ended in a bare CR. Not an end.
                    self.emit(b".");
                    self.end_line(false);
                    continue;
                }
                (State::Cr, b'\n') => self.end_line(true),
                (State::Cr, _) => {
                    self.end_line(false);
                    continue;
                }
            }
            return false;
        }
    }

    fn end_line(&mut self, crlf: bool) {
        self.emit(b"\r\n");
        self.state = State::LineStart { crlf };
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        self.nul |= bytes.contains(&0);
        if self.size <= self.max && !self.discarded {
            if !self.make_room(bytes.len()) {
                self.discard();
                return;
            }
            self.message.extend_from_slice(bytes);
        } else if self.message.capacity() > 0 || self.room.is_some() {
            // Over the limit: read on to the end so the session stays in step, keep nothing.
            self.drop_message();
        }
    }

    /// The message, once `feed` said `End`.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        if self.size > self.max {
            return Err(DataError::TooBig);
        }
        if self.nul {
            return Err(DataError::Nul);
        }
        if self.discarded {
            return Err(DataError::NoRoom);
        }
        Ok(self.message)
    }
}

/// Each ending of the 2023 smuggling write-ups (SEC Consult "SMTP Smuggling - Spoofing
/// E-Mails Worldwide", Postfix's and Sendmail's advisories, CVE-2023-51764/51765/51766)
/// and the like (NUL, CR runs, spaces around the dot): none is an end here. The last two
/// hold a real CR LF . CR LF with bytes around it. Tests feed each one.
pub const SMUGGLING_ENDINGS: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\n",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
    b"\r\n.\r\r\r\n",
    b"\r\r\n.\r\r\n",
    b"\n\r.\r\n",
    b"\n\r.\n\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\x00\n",
    b"\r\x00\n.\r\n",
    b"\r\n\x00.\x00\r\n",
    b"\r\n .\r\n",
    b"\r\n. \r\n",
    b"\r\n.\t\r\n",
    b"\r\n..\r\n",
    b"\n\n.\n\n",
    b"\r\r.\r\r",
    b"\r\n.\n\r\n",
    b"\x00\r\n.\r\n\x00",
    b"\r\n.\r\n\r",
];

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// What the RFC says, over the whole stream at once, written apart from the state
    /// machine: the data ends at the first CR LF . CR LF (counting the DATA command's CR LF);
    /// before it, every CR LF, bare CR or bare LF ends a line, and a line that starts with
    /// a dot and has more on it loses the dot. Returns the message and the bytes consumed.
    fn reference(stream: &[u8]) -> Option<(Vec<u8>, usize)> {
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
        assert_eq!(start, text.len(), "the text before the end ends with a line ending");
        let mut message = Vec::new();
        for line in lines {
            let line = if line.len() > 1 && line[0] == b'.' { &line[1..] } else { line };
            message.extend_from_slice(line);
            message.extend_from_slice(b"\r\n");
        }
        Some((message, end + 3))
    }

    /// The reader fed `stream` in the given chunks; the message and consumed bytes, or
    /// None if the data did not end.
    fn read(stream: &[u8], cuts: &[usize]) -> Option<(Vec<u8>, usize)> {
        let mut reader = DataReader::new(usize::MAX);
        let mut offset = 0;
        let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c <= stream.len()).collect();
        bounds.push(stream.len());
        bounds.sort();
        for end in bounds {
            if end < offset {
                continue;
            }
            if let Progress::End { consumed } = reader.feed(&stream[offset..end]) {
                return Some((reader.message, offset + consumed));
            }
            offset = end;
        }
        None
    }

    fn whole(stream: &[u8]) -> Option<(Vec<u8>, usize)> {
        read(stream, &[])
    }

    #[test]
    fn smuggling_endings_are_message_text() {
        for ending in SMUGGLING_ENDINGS {
            let mut stream = b"Subject: outer\r\n\r\nHello".to_vec();
            stream.extend_from_slice(ending);
            // In the last two the real end comes first; the reference says where.
            stream
                .extend_from_slice(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n");
            let got = whole(&stream);
            assert_eq!(got, reference(&stream), "{:?}", String::from_utf8_lossy(ending));
            let (message, consumed) = got.expect("an end");
            if !ending.windows(5).any(|w| w == b"\r\n.\r\n") {
                assert!(
                    message.windows(8).any(|w| w == b"smuggled"),
                    "{:?} ended the data: {:?}",
                    String::from_utf8_lossy(ending),
                    String::from_utf8_lossy(&message)
                );
                assert_eq!(&stream[consumed..], b"QUIT\r\n", "{:?}", String::from_utf8_lossy(ending));
            }
        }
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_data() {
        assert_eq!(whole(b".\r\n"), Some((Vec::new(), 3)), "an empty message");
        assert_eq!(whole(b"a\r\n.\r\nNOOP\r\n"), Some((b"a\r\n".to_vec(), 6)));
        assert_eq!(whole(b"a\r\n.\r\r\nb\r\n.\r\n"), Some((b"a\r\n.\r\n\r\nb\r\n".to_vec(), 13)));
        assert_eq!(whole(b"a\r\n.\r\r\r\n"), None);
        assert_eq!(whole(b"a\n.\n"), None);
        assert_eq!(whole(b"a\r.\r"), None);
        assert_eq!(whole(b"a\r\n.\r"), None, "CR LF . CR waits for the next byte");
    }

    #[test]
    fn dot_stuffing_is_undone_and_line_endings_made_canonical() {
        assert_eq!(whole(b"..a\r\n..\r\n.\r\n").unwrap().0, b".a\r\n.\r\n");
        assert_eq!(whole(b"a\nb\rc\r\n.\r\n").unwrap().0, b"a\r\nb\r\nc\r\n");
        assert_eq!(whole(b"a\n..b\r\n.\r\n").unwrap().0, b"a\r\n.b\r\n");
        assert_eq!(whole(b"a\r\r\nb\r\n.\r\n").unwrap().0, b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn size_limit_and_nul() {
        let mut r = DataReader::new(4);
        assert_eq!(r.feed(b"abcdefgh\r\n.\r\nNOOP"), Progress::End { consumed: 13 });
        assert_eq!(r.finish(), Err(DataError::TooBig));
        let mut r = DataReader::new(100);
        assert_eq!(r.feed(b"a\x00b\r\n.\r\n"), Progress::End { consumed: 8 });
        assert_eq!(r.finish(), Err(DataError::Nul));
        let mut r = DataReader::new(3);
        assert_eq!(r.feed(b"a\r\n.\r\n"), Progress::End { consumed: 6 });
        assert_eq!(r.finish(), Ok(b"a\r\n".to_vec()), "exactly at the limit");
    }

    #[test]
    fn a_budgeted_buffer_is_sized_up_front_grows_within_the_budget_and_is_dropped_without_room() {
        use crate::smtp::backend::DataBudget;
        let budget = DataBudget::new(100_000);
        let mut r = DataReader::budgeted(1_000_000, budget.try_reserve(1_000).expect("room"));
        assert_eq!(r.kept(), (0, 1_000), "the declared SIZE is allocated at once");
        let line = [b'a'; 98];
        for _ in 0..10 {
            assert_eq!(r.feed(&line), Progress::More);
            assert_eq!(r.feed(b"\r\n"), Progress::More);
        }
        assert_eq!(r.kept(), (1_000, 1_000), "no growth while the message fits its SIZE");
        assert_eq!(r.feed(b"more\r\n"), Progress::More);
        let (kept, capacity) = r.kept();
        assert_eq!(kept, 1_006);
        assert!(capacity > kept, "grown by a step, not byte by byte: {capacity}");
        assert_eq!(budget.in_use(), capacity, "the reservation covers the buffer");
        // Someone else takes the rest: the next growth finds no room.
        let rest = budget.try_reserve(budget.total() - budget.in_use()).expect("the rest");
        let big = vec![b'b'; 200_000];
        assert_eq!(r.feed(&big), Progress::More);
        assert_eq!(r.kept(), (0, 0), "dropped");
        assert_eq!(budget.in_use(), rest.bytes(), "and its room given back at once");
        assert_eq!(r.feed(b"\r\n.\r\nQUIT"), Progress::End { consumed: 5 }, "read on to the end");
        assert!(r.take_room().is_none());
        assert_eq!(r.finish(), Err(DataError::NoRoom));
        drop(rest);
        assert_eq!(budget.in_use(), 0);

        // A small message still fits in a little room, and SIZE over the limit is capped.
        let small = budget.try_reserve(99_990).expect("most of it");
        let mut r = DataReader::budgeted(5, budget.try_reserve(10).expect("room"));
        assert_eq!(r.kept().1, 5, "capacity capped at the size limit");
        assert_eq!(r.feed(b"abc\r\n.\r\n"), Progress::End { consumed: 8 });
        let room = r.take_room().expect("held until the reply");
        assert_eq!(r.finish(), Ok(b"abc\r\n".to_vec()));
        drop((room, small));
        let mut r = DataReader::budgeted(1_000, budget.try_reserve(0).expect("empty"));
        let _fill = budget.try_reserve(99_980).expect("most of it");
        assert_eq!(r.feed(b"0123456789\r\n.\r\n"), Progress::End { consumed: 15 });
        assert_eq!(r.finish(), Ok(b"0123456789\r\n".to_vec()), "grown just enough, not by a whole step");
    }

    /// Property: for random streams over the bytes that matter (CR, LF, dot, NUL, text),
    /// split at random offsets into random chunks, the reader finds exactly the end and
    /// the message the reference finds, and every split gives the same answer.
    #[test]
    fn any_split_gives_the_reference_answer() {
        let mut rng = StdRng::seed_from_u64(0x5317_7c0f_fee5);
        let alphabet: &[u8] = b"\r\n.\r\n.\x00ab";
        for case in 0..20_000 {
            let len = rng.random_range(0..40);
            let stream: Vec<u8> = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            let expected = reference(&stream);
            assert_eq!(whole(&stream), expected, "case {case}: {stream:?}");
            for _ in 0..4 {
                let cuts: Vec<usize> =
                    (0..rng.random_range(1..8)).map(|_| rng.random_range(0..=len)).collect();
                assert_eq!(read(&stream, &cuts), expected, "case {case}: {stream:?} cut at {cuts:?}");
            }
            // Every single cut point, and one byte at a time.
            for cut in 0..=len {
                assert_eq!(read(&stream, &[cut]), expected, "case {case}: {stream:?} cut at {cut}");
            }
            let bytewise: Vec<usize> = (0..=len).collect();
            assert_eq!(read(&stream, &bytewise), expected, "case {case}: {stream:?} byte by byte");
        }
    }
}
