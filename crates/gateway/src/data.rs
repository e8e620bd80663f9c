//! The DATA reader: the only place that decides where a message ends.
//!
//! **Invariant: a message ends only on `CRLF . CRLF`** (RFC 5321 4.1.1.4), where the first CRLF
//! is the end of the previous line, or at the very start of the content. A bare LF or a bare CR
//! anywhere in the content never ends a line for this purpose, and it makes the whole message
//! refused ([`DataDefect::BareLf`], [`DataDefect::BareCr`]) after we read on to the real end. So
//! `\n.\n`, `\n.\r\n`, `\r.\r\n`, `\r\n.\r` and `\r\n.\n` are content, never an end: nothing
//! after them can become a second message ("SMTP smuggling"), and what we relay contains only
//! CRLF line ends, so no downstream MTA can split it differently either.

use std::sync::Arc;

use memchr::memchr3;

use crate::memory::{Charge, MemoryBudget};

/// Why a received message is refused although its DATA phase ended properly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDefect {
    /// An LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// More than `max_message_size` octets.
    TooBig,
    /// A line longer than `max_line_length`.
    LineTooLong,
    /// More than `max_header_fields` header fields.
    TooManyHeaderFields,
    /// A header section larger than `max_header_size`.
    HeaderTooBig,
    /// A NUL octet: RFC 5321 4.1.1.4 / RFC 5322 2.1 allow none in a message, and C-string
    /// software reads a message with one differently (what comes after the NUL disappears).
    Nul,
    /// Keeping the message would go over `max_inflight_memory`: a temporary refusal.
    NoMemory,
    /// The first line of the header section starts with a space or a tab: a continuation of
    /// no field (RFC 5322 2.2.3). Put behind our own Received header it would fold into it and
    /// become part of what we wrote, and mail-auth refuses to read such a section, so it is
    /// refused before either can happen.
    FoldedFirstLine,
}

impl DataDefect {
    /// Stable code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            DataDefect::BareLf => "smtp.bare_lf",
            DataDefect::BareCr => "smtp.bare_cr",
            DataDefect::TooBig => "smtp.too_big",
            DataDefect::LineTooLong => "smtp.line_too_long",
            DataDefect::TooManyHeaderFields => "smtp.too_many_header_fields",
            DataDefect::HeaderTooBig => "smtp.header_too_big",
            DataDefect::Nul => "smtp.nul",
            DataDefect::NoMemory => "smtp.memory_full",
            DataDefect::FoldedFirstLine => "smtp.folded_first_line",
        }
    }

    /// A temporary condition (the client retries), not a fault of the message.
    pub fn is_temporary(self) -> bool {
        self == DataDefect::NoMemory
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `crlf` says whether the previous line ended with a proper CRLF
    /// (true at the start of the content).
    LineStart { crlf: bool },
    /// Saw `.` at the start of a line.
    Dot { crlf: bool },
    /// Saw `.` CR at the start of a line.
    DotCr { crlf: bool },
    /// Inside a line.
    Body,
    /// Saw CR inside a line.
    Cr,
}

/// Incremental, dot-unstuffing DATA reader (RFC 5321 4.5.2). Feed it what the socket gives; it
/// says where the end marker was, and everything after it belongs to the next command.
#[derive(Debug)]
pub struct DotReader {
    state: State,
    max_size: usize,
    out: Vec<u8>,
    defect: Option<DataDefect>,
    done: bool,
    /// What `out` holds of `max_inflight_memory`, when a budget applies.
    charge: Option<Charge>,
}

impl DotReader {
    pub fn new(max_size: usize) -> Self {
        DotReader {
            state: State::LineStart { crlf: true },
            max_size,
            out: Vec::with_capacity(8192),
            defect: None,
            done: false,
            charge: None,
        }
    }

    /// Counts what the message holds against `budget`, as it arrives; a message that does not
    /// fit is [`DataDefect::NoMemory`]. Nothing is reserved for a declared SIZE: a client
    /// could declare 25 MB, send nothing and hold the budget.
    pub fn with_budget(mut self, budget: &Arc<MemoryBudget>) -> Self {
        self.charge = Some(budget.charge());
        self
    }

    /// The message's charge, to be held until its final reply (taken before [`Self::finish`]).
    pub fn take_charge(&mut self) -> Option<Charge> {
        self.charge.take()
    }

    fn flag(&mut self, d: DataDefect) {
        if self.defect.is_none() {
            self.defect = Some(d);
            // A refused message is not kept: stop storing, free the memory.
            self.out = Vec::new();
            if let Some(c) = &mut self.charge {
                c.release();
            }
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.defect.is_some() {
            return;
        }
        let size = self.out.len() + bytes.len();
        if size > self.max_size {
            self.flag(DataDefect::TooBig);
            return;
        }
        if let Some(c) = &mut self.charge
            && !c.cover(size)
        {
            self.flag(DataDefect::NoMemory);
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Consumes `input`. Returns `Some(n)` when the end marker was found: the first `n` bytes of
    /// `input` (marker included) belonged to the data. `None`: all consumed, send more.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Body => {
                    // Fast path: copy up to the next CR, LF or NUL. Every octet of the content
                    // passes through here (the other states hand anything but `.`, CR and LF
                    // back to this one), so no NUL is ever kept.
                    let rest = &input[i..];
                    match memchr3(b'\r', b'\n', 0, rest) {
                        None => {
                            self.emit(rest);
                            return None;
                        }
                        Some(p) => {
                            self.emit(&rest[..p]);
                            i += p;
                            match rest[p] {
                                b'\r' => self.state = State::Cr,
                                b'\n' => {
                                    self.flag(DataDefect::BareLf);
                                    self.state = State::LineStart { crlf: false };
                                }
                                _ => self.flag(DataDefect::Nul),
                            }
                            i += 1;
                        }
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        self.emit(b"\r\n");
                        self.state = State::LineStart { crlf: true };
                        i += 1;
                    } else {
                        // Bare CR; the byte after it is read as ordinary content.
                        self.flag(DataDefect::BareCr);
                        self.state = State::Body;
                    }
                }
                State::LineStart { crlf } => {
                    match input[i] {
                        b'.' => self.state = State::Dot { crlf },
                        b'\r' => self.state = State::Cr,
                        b'\n' => {
                            self.flag(DataDefect::BareLf);
                            self.state = State::LineStart { crlf: false };
                        }
                        _ => self.state = State::Body,
                    }
                    if self.state != State::Body {
                        i += 1;
                    }
                }
                State::Dot { crlf } => match input[i] {
                    b'\r' => {
                        self.state = State::DotCr { crlf };
                        i += 1;
                    }
                    b'\n' => {
                        // `.` LF: bare LF, not an end.
                        self.flag(DataDefect::BareLf);
                        self.state = State::LineStart { crlf: false };
                        i += 1;
                    }
                    _ => {
                        // RFC 5321 4.5.2: the first dot of a line is removed; the byte after it
                        // (the second dot of "..", or anything else) is content.
                        self.state = State::Body;
                    }
                },
                State::DotCr { crlf } => {
                    if input[i] == b'\n' {
                        i += 1;
                        if crlf {
                            // CRLF . CRLF: the one and only end of data.
                            self.done = true;
                            return Some(i);
                        }
                        // LF . CRLF: the bare LF was flagged already; this line is content.
                        self.emit(b".\r\n");
                        self.state = State::LineStart { crlf: true };
                    } else {
                        // `.` CR followed by something else: bare CR, not an end.
                        self.flag(DataDefect::BareCr);
                        self.emit(b".");
                        self.state = State::Body;
                    }
                }
            }
        }
        None
    }

    /// Has the end marker been seen?
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The unstuffed message (every line CRLF-terminated), or why it is refused.
    pub fn finish(self) -> Result<Vec<u8>, DataDefect> {
        match self.defect {
            Some(d) => Err(d),
            None => Ok(self.out),
        }
    }
}

/// Limits checked on a complete, well-formed message.
pub fn check_shape(
    msg: &[u8],
    max_line_length: usize,
    max_header_fields: usize,
    max_header_size: usize,
) -> Result<(), DataDefect> {
    if matches!(msg.first(), Some(b' ' | b'\t')) {
        return Err(DataDefect::FoldedFirstLine);
    }
    let mut in_header = true;
    let mut fields = 0usize;
    let mut start = 0usize;
    while start < msg.len() {
        let end = match memchr::memchr(b'\n', &msg[start..]) {
            Some(p) => start + p + 1,
            None => msg.len(),
        };
        let line = &msg[start..end];
        if line.len() > max_line_length {
            return Err(DataDefect::LineTooLong);
        }
        if in_header {
            if line == b"\r\n" {
                in_header = false;
            } else {
                if end > max_header_size {
                    return Err(DataDefect::HeaderTooBig);
                }
                if !matches!(line[0], b' ' | b'\t') {
                    fields += 1;
                    if fields > max_header_fields {
                        return Err(DataDefect::TooManyHeaderFields);
                    }
                }
            }
        }
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte at a time and all at once; both must agree.
    fn read(input: &[u8]) -> (Option<usize>, Result<Vec<u8>, DataDefect>) {
        let mut whole = DotReader::new(1 << 20);
        let n_whole = whole.feed(input);
        let mut bytewise = DotReader::new(1 << 20);
        let mut n_byte = None;
        for (i, b) in input.iter().enumerate() {
            if bytewise.feed(std::slice::from_ref(b)).is_some() {
                n_byte = Some(i + 1);
                break;
            }
        }
        assert_eq!(n_whole, n_byte, "chunking changed the end for {input:?}");
        let (a, b) = (whole.finish(), bytewise.finish());
        assert_eq!(a, b);
        (n_whole, a)
    }

    #[test]
    fn ends_only_on_crlf_dot_crlf() {
        let (n, msg) = read(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(n, Some(24));
        assert_eq!(msg.unwrap(), b"Subject: x\r\n\r\nhello\r\n");
    }

    #[test]
    fn empty_content_ends_at_leading_dot() {
        assert_eq!(read(b".\r\n"), (Some(3), Ok(Vec::new())));
    }

    #[test]
    fn dots_are_unstuffed() {
        let (_, msg) = read(b"a\r\n..b\r\n.c\r\n...\r\n.\r\n");
        assert_eq!(msg.unwrap(), b"a\r\n.b\r\nc\r\n..\r\n");
    }

    #[test]
    fn smuggling_sequences_never_end_data_and_are_refused() {
        for (seq, defect) in [
            (&b"\n.\n"[..], DataDefect::BareLf),
            (b"\n.\r\n", DataDefect::BareLf),
            (b"\r.\r\n", DataDefect::BareCr),
            (b"\r\n.\r", DataDefect::BareCr),
            (b"\r\n.\n", DataDefect::BareLf),
            (b"\r\n.\rX", DataDefect::BareCr),
        ] {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(seq);
            let smuggled = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n2nd\r\n";
            input.extend_from_slice(smuggled);
            // Without the real end, the reader wants more.
            let (n, _) = read(&input);
            assert_eq!(n, None, "{seq:?} ended the data");
            input.extend_from_slice(b".\r\n");
            let (n, res) = read(&input);
            assert_eq!(n, Some(input.len()), "{seq:?}");
            assert_eq!(res, Err(defect), "{seq:?}");
        }
    }

    #[test]
    fn too_big_is_flagged_but_read_to_the_end() {
        let mut r = DotReader::new(10);
        assert_eq!(r.feed(b"0123456789abc\r\n"), None);
        assert_eq!(r.feed(b".\r\nNEXT"), Some(3));
        assert_eq!(r.finish(), Err(DataDefect::TooBig));
    }

    #[test]
    fn nul_anywhere_refuses_the_message() {
        for input in [
            &b"Subject: x\r\n\r\nab\0cd\r\n.\r\n"[..],
            b"\0Subject: x\r\n\r\n.\r\n",
            b"Subject: x\r\n\r\n.\0\r\n.\r\n",
            b"Subject: x\r\n\r\nx\r\0\r\n.\r\n",
            b"Subject: x\r\n\r\n.\r\0\r\n.\r\n",
        ] {
            let (n, res) = read(input);
            assert_eq!(n, Some(input.len()), "{input:?}");
            assert!(
                matches!(res, Err(DataDefect::Nul | DataDefect::BareCr)),
                "{input:?}: {res:?}"
            );
        }
    }

    #[test]
    fn a_message_over_the_memory_budget_is_read_to_its_end_and_not_kept() {
        let budget = MemoryBudget::new(2 * crate::memory::STEP);
        let mut other = budget.charge();
        assert!(other.cover(crate::memory::STEP));
        let mut r = DotReader::new(1 << 20).with_budget(&budget);
        let line = [b'x'; 1000];
        let mut fed = 0;
        while fed < 3 * crate::memory::STEP {
            assert_eq!(r.feed(&line), None);
            assert_eq!(r.feed(b"\r\n"), None);
            fed += line.len() + 2;
        }
        assert_eq!(r.feed(b".\r\nQUIT"), Some(3));
        assert_eq!(
            r.take_charge().map(|_| budget.used()),
            Some(crate::memory::STEP)
        );
        assert_eq!(r.finish(), Err(DataDefect::NoMemory));
        // A message that fits keeps its charge until it is dropped.
        drop(other);
        let mut r = DotReader::new(1 << 20).with_budget(&budget);
        assert_eq!(r.feed(b"Subject: x\r\n\r\nhi\r\n.\r\n"), Some(21));
        let charge = r.take_charge();
        assert_eq!(budget.used(), crate::memory::STEP);
        drop(charge);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn shape_limits() {
        let msg = b"A: 1\r\nB: 2\r\n  folded\r\n\r\nbody line\r\n";
        assert_eq!(check_shape(msg, 1000, 2, 1000), Ok(()));
        assert_eq!(
            check_shape(msg, 1000, 1, 1000),
            Err(DataDefect::TooManyHeaderFields)
        );
        assert_eq!(check_shape(msg, 1000, 9, 10), Err(DataDefect::HeaderTooBig));
        assert_eq!(check_shape(msg, 10, 9, 1000), Err(DataDefect::LineTooLong));
    }

    #[test]
    fn a_first_line_that_would_fold_into_our_received_is_refused() {
        for msg in [
            &b" \r\nFrom: ceo@example.com\r\n\r\nbody\r\n"[..],
            b"\tFrom: ceo@example.com\r\n\r\nbody\r\n",
            b" x\r\n\r\n",
        ] {
            assert_eq!(
                check_shape(msg, 1000, 9, 1000),
                Err(DataDefect::FoldedFirstLine)
            );
        }
        // Other stray lines cannot fold into a field above them: the engine judges them.
        let stray = b"junk\r\nFrom: ceo@example.com\r\n\r\nbody\r\n";
        assert_eq!(check_shape(stray, 1000, 9, 1000), Ok(()));
    }
}
