//! Addresses as a strict parser reads them, and as the sloppier parsers around it would.
//!
//! "Composition Kills" (Chen et al., USENIX Security 2020) forged mail by finding header values
//! that two parsers read as two different senders: the one that checks DMARC and the one that
//! shows the sender to a person. This module is our own parser for those values:
//! - [`parse_address_list`]: an RFC 5322 3.4 address list (mailbox, name-addr, angle-addr, group,
//!   quoted strings with quoted-pairs, nested comments, obs-route, domain literals);
//! - [`parse_path`]: an RFC 5321 4.1.2 reverse-path (`MAIL FROM`), with or without its angle
//!   brackets;
//! - [`readings`] / [`path_readings`]: the domain each parser style reads from the same bytes
//!   ([`Style`]), so a caller can see when they disagree;
//! - [`decode_encoded_words`]: the RFC 2047 encoded-words of a value, decoded.
//!
//! None of them fails or panics: what a strict parser would reject is reported as a [`Defect`]
//! next to whatever could still be read. Work is linear in the input, which is cut at
//! [`MAX_INPUT`] bytes ([`Defect::TooLong`]); comment nesting is counted, not recursed, and
//! reported past [`MAX_NESTING`] ([`Defect::TooDeep`]).

use std::fmt;

use crate::codec::{base64_decode_lenient, charset_to_text, q_decode};

/// Bytes of one value that are parsed; the rest is ignored and reported as [`Defect::TooLong`].
/// A real From or MAIL FROM is far below this; a To with thousands of recipients is not parsed
/// here.
pub const MAX_INPUT: usize = 64 * 1024;

/// Comment nesting deeper than this is reported as [`Defect::TooDeep`] (RFC 5322 sets no limit;
/// parsers that recurse do, and stop reading at different depths).
pub const MAX_NESTING: usize = 16;

/// Readings kept per value: distinct (style, domain) pairs beyond this are dropped, so that a
/// value listing thousands of domains costs its callers no more than a few dozen.
pub const MAX_READINGS: usize = 64;

/// Bytes of one encoded-word (RFC 2047 2 says 75; real mail exceeds it, so we allow more).
const MAX_ENCODED_WORD: usize = 1024;

/// Something a strict parser would not accept, or that parsers are known to read differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Defect {
    /// A NUL byte: C-string parsers stop reading there.
    Nul,
    /// Another control character (or a bare CR or LF that is not folding).
    ControlChar,
    /// A `"` with no closing `"`.
    UnbalancedQuote,
    /// A `(` with no closing `)`, or a `)` with no opening `(`.
    UnbalancedParen,
    /// A `<` with no closing `>`, or a stray `>`.
    UnbalancedAngle,
    /// A `[` with no closing `]` (domain literal).
    UnbalancedBracket,
    /// A `<` inside an angle-addr.
    NestedAngle,
    /// A backslash outside a quoted string or comment: a quoted-pair only exists inside them
    /// (RFC 5322 3.2.1), but lenient parsers honour it anywhere.
    QuotedPairOutsideQuotes,
    /// An obs-route `<@a,@b:user@d>` (RFC 5322 4.4, RFC 5321 4.1.2 A-d-l): parsers differ on
    /// whether the route or the final domain is the address.
    RouteAddress,
    /// A decoded RFC 2047 encoded-word holds an email address.
    AddressInEncodedWord,
    /// An encoded-word where RFC 2047 5 forbids it: inside an addr-spec.
    EncodedWordInAddress,
    /// A quoted local part holding `@`, `<`, `>`, `,`, `;`, `:`, `"` or `\`: a parser that splits
    /// at the first `@` reads another domain.
    SpecialInLocalPart,
    /// More than one `@` in one address.
    MultipleAt,
    /// A display name, or words, with no address after them.
    NoAddress,
    /// `<>` where a mailbox is needed (it is the null reverse-path only in MAIL FROM).
    EmptyAngle,
    /// Nothing before the `@`.
    EmptyLocalPart,
    /// Nothing after the `@`.
    EmptyDomain,
    /// A local part that is not a dot-atom or quoted string (e.g. words separated by spaces).
    BadLocalPart,
    /// A domain with characters no host name has, or an empty label.
    BadDomain,
    /// Text after a complete address, before the next `,`.
    TrailingText,
    /// A group where a mailbox is expected (inside a group, or in a path).
    NestedGroup,
    /// A group without its closing `;`.
    UnclosedGroup,
    /// Whitespace or a comment inside an RFC 5321 path, which has neither.
    SpaceInPath,
    /// A `(` or `)` in an RFC 5321 path: Sendmail reads a comment, others a character.
    ParenInPath,
    /// More than [`MAX_INPUT`] bytes.
    TooLong,
    /// Comments nested deeper than [`MAX_NESTING`].
    TooDeep,
}

impl Defect {
    /// A short stable name, for evidence and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Defect::Nul => "nul",
            Defect::ControlChar => "control_char",
            Defect::UnbalancedQuote => "unbalanced_quote",
            Defect::UnbalancedParen => "unbalanced_paren",
            Defect::UnbalancedAngle => "unbalanced_angle",
            Defect::UnbalancedBracket => "unbalanced_bracket",
            Defect::NestedAngle => "nested_angle",
            Defect::QuotedPairOutsideQuotes => "quoted_pair_outside_quotes",
            Defect::RouteAddress => "route_address",
            Defect::AddressInEncodedWord => "address_in_encoded_word",
            Defect::EncodedWordInAddress => "encoded_word_in_address",
            Defect::SpecialInLocalPart => "special_in_local_part",
            Defect::MultipleAt => "multiple_at",
            Defect::NoAddress => "no_address",
            Defect::EmptyAngle => "empty_angle",
            Defect::EmptyLocalPart => "empty_local_part",
            Defect::EmptyDomain => "empty_domain",
            Defect::BadLocalPart => "bad_local_part",
            Defect::BadDomain => "bad_domain",
            Defect::TrailingText => "trailing_text",
            Defect::NestedGroup => "nested_group",
            Defect::UnclosedGroup => "unclosed_group",
            Defect::SpaceInPath => "space_in_path",
            Defect::ParenInPath => "paren_in_path",
            Defect::TooLong => "too_long",
            Defect::TooDeep => "too_deep",
        }
    }
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One mailbox as the strict parser read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name: its words joined by one space, quotes removed, encoded-words as written.
    pub display_name: Option<String>,
    /// The local part, quoted-pairs resolved and quotes removed.
    pub local_part: String,
    /// The domain as written (a domain literal keeps its brackets).
    pub domain: String,
    /// The obs-route domains before the `:`, in order; empty without a route.
    pub route: Vec<String>,
}

impl Mailbox {
    /// `local@domain`, the local part quoted when it needs it.
    pub fn address(&self) -> String {
        let dot_atom = !self.local_part.is_empty()
            && self
                .local_part
                .split('.')
                .all(|w| !w.is_empty() && w.bytes().all(is_atext));
        if dot_atom {
            format!("{}@{}", self.local_part, self.domain)
        } else {
            let quoted = self.local_part.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{quoted}\"@{}", self.domain)
        }
    }

    /// The domain in lower case without a trailing dot: the form to compare.
    pub fn domain_key(&self) -> String {
        self.domain.trim_end_matches('.').to_ascii_lowercase()
    }
}

/// One element of an address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Mailbox(Mailbox),
    /// `name: member, member;` (RFC 5322 3.4); an empty group has no members.
    Group {
        name: String,
        members: Vec<Mailbox>,
    },
}

/// An address list and what was wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressList {
    pub addresses: Vec<Address>,
    /// Each defect once, in the order first found.
    pub defects: Vec<Defect>,
}

impl AddressList {
    /// Every mailbox, group members included, in order.
    pub fn mailboxes(&self) -> impl Iterator<Item = &Mailbox> {
        self.addresses.iter().flat_map(|a| match a {
            Address::Mailbox(m) => std::slice::from_ref(m),
            Address::Group { members, .. } => members.as_slice(),
        })
    }

    pub fn has(&self, d: Defect) -> bool {
        self.defects.contains(&d)
    }
}

/// An RFC 5321 reverse-path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path {
    /// `None` for the null path (`<>` or empty) and for a path with no readable mailbox.
    pub mailbox: Option<Mailbox>,
    /// True for `<>` or an empty path.
    pub null: bool,
    pub defects: Vec<Defect>,
}

impl Path {
    pub fn has(&self, d: Defect) -> bool {
        self.defects.contains(&d)
    }
}

/// A way of reading an address that some mail software uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Style {
    /// This module: RFC 5322 / 5321 with comments and quotes honoured.
    Strict,
    /// The text between the first `<` and the next `>`, quotes and comments ignored.
    AngleBrackets,
    /// The text after the last `@` of the whole value.
    LastAt,
    /// The text after the first `@` of an address whose quoted local part holds one.
    FirstAt,
    /// The text after the last `@` before the first NUL byte (C-string parsers).
    BeforeNul,
    /// An address inside a decoded RFC 2047 encoded-word (parsers that decode before parsing).
    EncodedWord,
    /// An obs-route domain (`<@relay:user@d>`), which source-routing software sends to.
    Route,
    /// An address anywhere in the text, display names and comments included: what a parser
    /// that falls back to searching for something address-like may take.
    Mentioned,
}

impl Style {
    pub fn as_str(self) -> &'static str {
        match self {
            Style::Strict => "strict",
            Style::AngleBrackets => "angle-brackets",
            Style::LastAt => "last-at",
            Style::FirstAt => "first-at",
            Style::BeforeNul => "before-nul",
            Style::EncodedWord => "encoded-word",
            Style::Route => "route",
            Style::Mentioned => "mentioned",
        }
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The domain one parser style reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub style: Style,
    /// Lower case, no trailing dot.
    pub domain: String,
}

// ---------------------------------------------------------------------------------------------
// Characters

/// RFC 5322 3.2.3 atext, plus 8-bit bytes (RFC 6532 3.2: UTF-8 in atext).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// Bytes a host name label may hold: LDH, underscore (seen in DNS, harmless), and 8-bit (U-labels).
fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80
}

/// The domain a naive parser takes from the text right after an `@`: host-name characters and
/// dots, or a bracketed literal. Lower case, no trailing dot; `None` when empty.
pub fn domain_after_at(text: &[u8]) -> Option<String> {
    let taken: &[u8] = if text.first() == Some(&b'[') {
        match text.iter().position(|&b| b == b']') {
            Some(i) => &text[..=i],
            None => text,
        }
    } else {
        let end = text
            .iter()
            .position(|&b| !(is_domain_byte(b) || b == b'.'))
            .unwrap_or(text.len());
        &text[..end]
    };
    let s = String::from_utf8_lossy(taken);
    let s = s.trim_matches('.').to_ascii_lowercase();
    (!s.is_empty()).then_some(s)
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A run of atext.
    Atom(String),
    /// A quoted string's content, quoted-pairs resolved.
    Quoted(String),
    /// A domain literal with its brackets.
    Literal(String),
    /// One of `< > @ , ; : .`
    Special(u8),
    /// Anything else outside quotes and comments (`\`, `[`-less `]`, control characters).
    Other(u8),
}

/// Whether `(` starts a comment (RFC 5322) or is a plain character (RFC 5321 path).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Header,
    Path,
}

struct Lexer<'a> {
    s: &'a [u8],
    defects: Vec<Defect>,
}

fn push_defect(defects: &mut Vec<Defect>, d: Defect) {
    if !defects.contains(&d) {
        defects.push(d);
    }
}

/// Removes folding (RFC 5322 2.2.3): CRLF before whitespace. Other CR or LF bytes are dropped
/// too and reported.
fn unfold(value: &[u8], defects: &mut Vec<Defect>) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\r' if value.get(i + 1) == Some(&b'\n') => {
                if !matches!(value.get(i + 2), Some(b' ' | b'\t') | None) {
                    push_defect(defects, Defect::ControlChar);
                }
                i += 2;
            }
            b'\r' | b'\n' => {
                push_defect(defects, Defect::ControlChar);
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Cuts `value` at [`MAX_INPUT`] and unfolds it.
fn prepare(value: &[u8], defects: &mut Vec<Defect>) -> Vec<u8> {
    let value = if value.len() > MAX_INPUT {
        push_defect(defects, Defect::TooLong);
        &value[..MAX_INPUT]
    } else {
        value
    };
    unfold(value, defects)
}

impl<'a> Lexer<'a> {
    fn defect(&mut self, d: Defect) {
        push_defect(&mut self.defects, d);
    }

    /// Notes NUL and control bytes wherever they are.
    fn note_byte(&mut self, b: u8) {
        if b == 0 {
            self.defect(Defect::Nul);
        } else if (b < 0x20 && b != b'\t') || b == 0x7f {
            self.defect(Defect::ControlChar);
        }
    }

    /// Splits the value into tokens, dropping whitespace and (in header mode) comments.
    /// Returns the tokens and whether whitespace or a comment was seen between tokens.
    fn run(mut self, mode: Mode) -> (Vec<Tok>, Vec<Defect>, bool) {
        let s = self.s;
        let mut toks = Vec::new();
        let mut spaced = false;
        let mut parens = 0usize;
        let mut i = 0;
        while i < s.len() {
            let b = s[i];
            match b {
                b' ' | b'\t' => {
                    spaced = true;
                    i += 1;
                }
                b'(' if mode == Mode::Header => {
                    i = self.comment(i);
                    spaced = true;
                }
                b'(' | b')' if mode == Mode::Path => {
                    self.defect(Defect::ParenInPath);
                    if b == b'(' {
                        parens += 1;
                    } else if parens == 0 {
                        self.defect(Defect::UnbalancedParen);
                    } else {
                        parens -= 1;
                    }
                    toks.push(Tok::Other(b));
                    i += 1;
                }
                b')' => {
                    self.defect(Defect::UnbalancedParen);
                    toks.push(Tok::Other(b));
                    i += 1;
                }
                b'"' => {
                    let (content, next) = self.quoted(i);
                    toks.push(Tok::Quoted(content));
                    i = next;
                }
                b'[' => {
                    let (lit, next) = self.literal(i);
                    toks.push(Tok::Literal(lit));
                    i = next;
                }
                b'<' | b'>' | b'@' | b',' | b';' | b':' | b'.' => {
                    toks.push(Tok::Special(b));
                    i += 1;
                }
                b if is_atext(b) => {
                    let end = s[i..]
                        .iter()
                        .position(|&c| !is_atext(c))
                        .map_or(s.len(), |n| i + n);
                    toks.push(Tok::Atom(String::from_utf8_lossy(&s[i..end]).into_owned()));
                    i = end;
                }
                b'\\' => {
                    self.defect(Defect::QuotedPairOutsideQuotes);
                    toks.push(Tok::Other(b));
                    i += 1;
                }
                _ => {
                    self.note_byte(b);
                    toks.push(Tok::Other(b));
                    i += 1;
                }
            }
        }
        if parens > 0 {
            self.defect(Defect::UnbalancedParen);
        }
        (toks, self.defects, spaced)
    }

    /// Skips a comment starting at `start` (a `(`), nesting counted; returns the index after it.
    fn comment(&mut self, start: usize) -> usize {
        let s = self.s;
        let mut depth = 0usize;
        let mut i = start;
        while i < s.len() {
            match s[i] {
                b'(' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        self.defect(Defect::TooDeep);
                    }
                }
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                b'\\' => {
                    i += 1;
                    if let Some(&c) = s.get(i) {
                        self.note_byte(c);
                    }
                }
                c => self.note_byte(c),
            }
            i += 1;
        }
        self.defect(Defect::UnbalancedParen);
        s.len()
    }

    /// Reads a quoted string starting at `start` (a `"`); returns its content and the index
    /// after the closing quote.
    fn quoted(&mut self, start: usize) -> (String, usize) {
        let s = self.s;
        let mut out = Vec::new();
        let mut i = start + 1;
        while i < s.len() {
            match s[i] {
                b'"' => return (String::from_utf8_lossy(&out).into_owned(), i + 1),
                b'\\' => {
                    i += 1;
                    if let Some(&c) = s.get(i) {
                        self.note_byte(c);
                        out.push(c);
                    }
                }
                c => {
                    self.note_byte(c);
                    out.push(c);
                }
            }
            i += 1;
        }
        self.defect(Defect::UnbalancedQuote);
        (String::from_utf8_lossy(&out).into_owned(), s.len())
    }

    /// Reads a domain literal starting at `start` (a `[`).
    fn literal(&mut self, start: usize) -> (String, usize) {
        let s = self.s;
        let mut out = vec![b'['];
        let mut i = start + 1;
        while i < s.len() {
            match s[i] {
                b']' => {
                    out.push(b']');
                    return (String::from_utf8_lossy(&out).into_owned(), i + 1);
                }
                b'[' => self.defect(Defect::BadDomain),
                b'\\' => {
                    // obs-dtext's quoted-pair (RFC 5322 4.4): no host has such an address, and
                    // the literal is kept as written so that it reads back the same.
                    self.defect(Defect::BadDomain);
                    out.push(b'\\');
                    i += 1;
                    if let Some(&c) = s.get(i) {
                        self.note_byte(c);
                        out.push(c);
                    }
                }
                b' ' | b'\t' => {}
                c => {
                    self.note_byte(c);
                    out.push(c);
                }
            }
            i += 1;
        }
        self.defect(Defect::UnbalancedBracket);
        (String::from_utf8_lossy(&out).into_owned(), s.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    defects: Vec<Defect>,
}

/// A word of a phrase or local part.
enum Word {
    Atom(String),
    Quoted(String),
    Dot,
}

fn is_encoded_word(s: &str) -> bool {
    s.starts_with("=?") && s.ends_with("?=") && s.len() > 4
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_special(&self) -> Option<u8> {
        match self.peek() {
            Some(Tok::Special(c)) => Some(*c),
            _ => None,
        }
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    fn defect(&mut self, d: Defect) {
        push_defect(&mut self.defects, d);
    }

    /// address-list (RFC 5322 3.4, with obs-addr-list's empty elements).
    fn list(&mut self, in_group: bool) -> Vec<Address> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => break,
                Some(Tok::Special(b',')) => {
                    self.bump();
                    continue;
                }
                Some(Tok::Special(b';')) if in_group => break,
                _ => {}
            }
            let before = self.pos;
            if let Some(a) = self.address(in_group) {
                out.push(a);
            }
            match self.peek() {
                None | Some(Tok::Special(b',')) => {}
                Some(Tok::Special(b';')) if in_group => {}
                Some(_) => {
                    self.defect(Defect::TrailingText);
                    self.skip_to_separator(in_group);
                }
            }
            if self.pos == before {
                self.bump();
            }
        }
        out
    }

    /// Skips to the next `,` at this level (or `;` in a group), stepping over an angle-addr.
    fn skip_to_separator(&mut self, in_group: bool) {
        let mut angle = false;
        while let Some(t) = self.peek() {
            match t {
                Tok::Special(b'<') => angle = true,
                Tok::Special(b'>') => angle = false,
                Tok::Special(b',') if !angle => return,
                Tok::Special(b';') if in_group && !angle => return,
                _ => {}
            }
            self.bump();
        }
    }

    /// Words and dots up to the next other token.
    fn words(&mut self) -> Vec<Word> {
        let mut words = Vec::new();
        while let Some(t) = self.peek() {
            let w = match t {
                Tok::Atom(a) => Word::Atom(a.clone()),
                Tok::Quoted(q) => Word::Quoted(q.clone()),
                Tok::Special(b'.') => Word::Dot,
                _ => break,
            };
            words.push(w);
            self.bump();
        }
        words
    }

    fn phrase_text(words: &[Word]) -> Option<String> {
        let mut out = String::new();
        for w in words {
            let text = match w {
                Word::Atom(a) | Word::Quoted(a) => a.as_str(),
                Word::Dot => ".",
            };
            if !out.is_empty() && !matches!(w, Word::Dot) && !out.ends_with('.') {
                out.push(' ');
            }
            out.push_str(text);
        }
        (!out.trim().is_empty()).then_some(out)
    }

    /// A local part from words: dot-atom, quoted string, or obs-local-part (words joined by
    /// dots). Returns `None` and a defect when the words do not form one.
    fn local_part(&mut self, words: &[Word]) -> Option<String> {
        if words.is_empty() {
            self.defect(Defect::EmptyLocalPart);
            return None;
        }
        let mut out = String::new();
        let mut expect_word = true;
        let mut ok = true;
        for w in words {
            match w {
                Word::Dot => {
                    if expect_word {
                        // Leading, trailing or doubled dots: seen in real mail, read alike.
                        ok = ok && !out.is_empty();
                    }
                    out.push('.');
                    expect_word = true;
                }
                Word::Atom(a) | Word::Quoted(a) => {
                    if !expect_word {
                        ok = false;
                    }
                    if let Word::Quoted(q) = w
                        && q.bytes().any(|b| b"@<>,;:\"\\".contains(&b))
                    {
                        self.defect(Defect::SpecialInLocalPart);
                    }
                    if let Word::Atom(a) = w
                        && is_encoded_word(a)
                    {
                        self.defect(Defect::EncodedWordInAddress);
                    }
                    out.push_str(a);
                    expect_word = false;
                }
            }
        }
        if !ok {
            self.defect(Defect::BadLocalPart);
            return None;
        }
        Some(out)
    }

    /// domain (RFC 5322 3.4.1): dot-atom, domain-literal or obs-domain, after the `@`.
    fn domain(&mut self) -> Option<String> {
        match self.peek() {
            Some(Tok::Literal(l)) => {
                let l = l.clone();
                self.bump();
                return Some(l);
            }
            Some(Tok::Atom(_)) => {}
            _ => {
                self.defect(Defect::EmptyDomain);
                return None;
            }
        }
        let mut out = String::new();
        let mut expect_label = true;
        let mut bad = false;
        loop {
            match self.peek() {
                Some(Tok::Atom(a)) if expect_label => {
                    let a = a.clone();
                    if !a.bytes().all(is_domain_byte) {
                        bad = true;
                        if is_encoded_word(&a) {
                            self.defect(Defect::EncodedWordInAddress);
                        }
                    }
                    out.push_str(&a);
                    expect_label = false;
                }
                Some(Tok::Special(b'.')) => {
                    if expect_label {
                        bad = true;
                    }
                    out.push('.');
                    expect_label = true;
                }
                _ => break,
            }
            self.bump();
        }
        // A trailing dot (an absolute name) is read alike everywhere; an empty inner label is not.
        let inner = out.strip_suffix('.').unwrap_or(&out);
        if bad || inner.is_empty() || inner.split('.').any(str::is_empty) {
            self.defect(Defect::BadDomain);
        }
        Some(out)
    }

    /// After a complete addr-spec: a second `@` is a defect of its own.
    fn after_addr_spec(&mut self) {
        if self.peek_special() == Some(b'@') {
            self.defect(Defect::MultipleAt);
        }
    }

    /// address (RFC 5322 3.4): mailbox or group.
    fn address(&mut self, in_group: bool) -> Option<Address> {
        let mut words = self.words();
        // Groups do not nest (RFC 5322 3.4): an inner `name:` is dropped and its members read as
        // the outer group's, which also keeps the recursion at two levels whatever the input.
        while in_group && !words.is_empty() && self.peek_special() == Some(b':') {
            self.defect(Defect::NestedGroup);
            self.bump();
            words = self.words();
        }
        match self.peek_special() {
            Some(b'<') => {
                let name = Self::phrase_text(&words);
                self.angle_addr(name).map(Address::Mailbox)
            }
            Some(b':') if !words.is_empty() => {
                let name = Self::phrase_text(&words).unwrap_or_default();
                self.bump();
                let members = self
                    .list(true)
                    .into_iter()
                    .flat_map(|a| match a {
                        Address::Mailbox(m) => vec![m],
                        Address::Group { members, .. } => members,
                    })
                    .collect();
                if self.peek_special() == Some(b';') {
                    self.bump();
                } else {
                    self.defect(Defect::UnclosedGroup);
                }
                Some(Address::Group { name, members })
            }
            Some(b'@') if words.is_empty() => {
                // `@a,@b:user@d` without brackets, or `@domain` alone.
                let save = self.pos;
                if let Some(route) = self.route() {
                    self.defect(Defect::RouteAddress);
                    let mut m = self.addr_spec_after_route()?;
                    m.route = route;
                    Some(Address::Mailbox(m))
                } else {
                    self.pos = save;
                    self.defect(Defect::EmptyLocalPart);
                    None
                }
            }
            Some(b'@') => {
                let local = self.local_part(&words);
                self.bump();
                let domain = self.domain();
                self.after_addr_spec();
                Some(Address::Mailbox(Mailbox {
                    display_name: None,
                    local_part: local?,
                    domain: domain?,
                    route: Vec::new(),
                }))
            }
            _ => {
                if !words.is_empty() {
                    self.defect(Defect::NoAddress);
                }
                None
            }
        }
    }

    /// obs-route: `@a,@b:` (RFC 5322 4.4). Returns `None`, position unspecified, if the tokens
    /// are not one.
    fn route(&mut self) -> Option<Vec<String>> {
        let mut route = Vec::new();
        loop {
            match self.peek_special() {
                Some(b',') => self.bump(),
                Some(b'@') => {
                    self.bump();
                    let d = self.domain()?;
                    route.push(d);
                }
                Some(b':') if !route.is_empty() => {
                    self.bump();
                    return Some(route);
                }
                _ => return None,
            }
        }
    }

    /// The addr-spec after a route's `:`.
    fn addr_spec_after_route(&mut self) -> Option<Mailbox> {
        let words = self.words();
        if self.peek_special() != Some(b'@') {
            self.defect(Defect::NoAddress);
            return None;
        }
        let local = self.local_part(&words);
        self.bump();
        let domain = self.domain();
        self.after_addr_spec();
        Some(Mailbox {
            display_name: None,
            local_part: local?,
            domain: domain?,
            route: Vec::new(),
        })
    }

    /// angle-addr / obs-angle-addr, at the `<`.
    fn angle_addr(&mut self, name: Option<String>) -> Option<Mailbox> {
        self.bump();
        if self.peek_special() == Some(b'>') {
            self.bump();
            self.defect(Defect::EmptyAngle);
            return None;
        }
        let mut route = Vec::new();
        if matches!(self.peek_special(), Some(b'@' | b',')) {
            let save = self.pos;
            match self.route() {
                Some(r) => {
                    self.defect(Defect::RouteAddress);
                    route = r;
                }
                None => self.pos = save,
            }
        }
        let words = self.words();
        let mailbox = if self.peek_special() == Some(b'@') {
            let local = self.local_part(&words);
            self.bump();
            let domain = self.domain();
            self.after_addr_spec();
            match (local, domain) {
                (Some(local_part), Some(domain)) => Some(Mailbox {
                    display_name: name,
                    local_part,
                    domain,
                    route,
                }),
                _ => None,
            }
        } else {
            if words.is_empty() {
                self.defect(Defect::EmptyLocalPart);
            }
            self.defect(Defect::NoAddress);
            None
        };
        // The closing `>`; anything before it is a defect, a `<` is a nested angle.
        let mut extra = false;
        loop {
            match self.peek() {
                Some(Tok::Special(b'>')) => {
                    self.bump();
                    if extra {
                        self.defect(Defect::TrailingText);
                    }
                    return mailbox;
                }
                Some(Tok::Special(b'<')) => self.defect(Defect::NestedAngle),
                Some(_) => extra = true,
                None => {
                    self.defect(Defect::UnbalancedAngle);
                    // Text cut off inside the brackets is not a mailbox we can vouch for.
                    return mailbox.filter(|_| !extra);
                }
            }
            self.bump();
        }
    }
}

fn lex(value: &[u8], mode: Mode, mut defects: Vec<Defect>) -> (Vec<Tok>, Vec<Defect>, bool) {
    let lexer = Lexer {
        s: value,
        defects: std::mem::take(&mut defects),
    };
    lexer.run(mode)
}

/// Parses an RFC 5322 address list (From, Sender, Reply-To, To, ...). `value` is the raw field
/// value after the colon, folding and all.
pub fn parse_address_list(value: &[u8]) -> AddressList {
    parse_list(value).list
}

/// An address-list value parsed, with what [`readings`] needs besides the parse.
struct ParsedList {
    list: AddressList,
    /// The value cut and unfolded ([`prepare`]).
    text: Vec<u8>,
    /// The domains of the addresses inside its decoded encoded-words, in order.
    encoded_domains: Vec<String>,
}

fn parse_list(value: &[u8]) -> ParsedList {
    let mut defects = Vec::new();
    let text = prepare(value, &mut defects);
    let (toks, defects, _) = lex(&text, Mode::Header, defects);
    let mut p = Parser {
        toks,
        pos: 0,
        defects,
    };
    // A stray `>` outside an angle-addr is reported once, whatever else happens.
    let mut depth = 0i32;
    for t in &p.toks {
        match t {
            Tok::Special(b'<') => depth += 1,
            Tok::Special(b'>') => {
                depth -= 1;
                if depth < 0 {
                    push_defect(&mut p.defects, Defect::UnbalancedAngle);
                    depth = 0;
                }
            }
            _ => {}
        }
    }
    let addresses = p.list(false);
    let mut defects = p.defects;
    let words = decode_encoded_words(&text);
    let encoded_domains: Vec<String> = words
        .iter()
        .flat_map(|word| domains_in_text(word.as_bytes()))
        .collect();
    if !encoded_domains.is_empty() {
        push_defect(&mut defects, Defect::AddressInEncodedWord);
    }
    ParsedList {
        list: AddressList { addresses, defects },
        text,
        encoded_domains,
    }
}

/// Parses an RFC 5321 reverse-path (MAIL FROM), with or without its angle brackets.
pub fn parse_path(value: &[u8]) -> Path {
    let mut defects = Vec::new();
    let text = prepare(value, &mut defects);
    let trimmed = text.trim_ascii();
    let (toks, defects, spaced) = lex(trimmed, Mode::Path, defects);
    let mut p = Parser {
        toks,
        pos: 0,
        defects,
    };
    if spaced {
        p.defect(Defect::SpaceInPath);
    }
    let bracketed = p.peek_special() == Some(b'<');
    if bracketed {
        p.bump();
    }
    if p.peek().is_none() || (bracketed && p.peek_special() == Some(b'>')) {
        if bracketed && p.peek_special() == Some(b'>') {
            p.bump();
        } else if bracketed {
            p.defect(Defect::UnbalancedAngle);
        }
        if p.peek().is_some() {
            p.defect(Defect::TrailingText);
        }
        return Path {
            mailbox: None,
            null: true,
            defects: p.defects,
        };
    }
    let mut route = Vec::new();
    if matches!(p.peek_special(), Some(b'@' | b',')) {
        let save = p.pos;
        match p.route() {
            Some(r) => {
                p.defect(Defect::RouteAddress);
                route = r;
            }
            None => p.pos = save,
        }
    }
    let route_len = route.len();
    let words = p.words();
    let mut mailbox = None;
    if p.peek_special() == Some(b'@') {
        let local = p.local_part(&words);
        p.bump();
        let domain = p.domain();
        p.after_addr_spec();
        if let (Some(local_part), Some(domain)) = (local, domain) {
            mailbox = Some(Mailbox {
                display_name: None,
                local_part,
                domain,
                route,
            });
        }
    } else {
        if words.is_empty() {
            p.defect(Defect::EmptyLocalPart);
        }
        p.defect(Defect::NoAddress);
    }
    if bracketed {
        if p.peek_special() == Some(b'>') {
            p.bump();
        } else {
            p.defect(Defect::UnbalancedAngle);
        }
    } else if p.peek_special() == Some(b'>') {
        p.defect(Defect::UnbalancedAngle);
        p.bump();
    }
    if p.peek().is_some() {
        p.defect(Defect::TrailingText);
    }
    let ats = p.toks.iter().filter(|t| **t == Tok::Special(b'@')).count();
    if ats > 1 + route_len {
        p.defect(Defect::MultipleAt);
    }
    if p.toks.iter().any(|t| matches!(t, Tok::Special(b'<')))
        && p.toks
            .iter()
            .filter(|t| matches!(t, Tok::Special(b'<')))
            .count()
            > usize::from(bracketed)
    {
        p.defect(Defect::NestedAngle);
    }
    Path {
        mailbox,
        null: false,
        defects: p.defects,
    }
}

// ---------------------------------------------------------------------------------------------
// Readings

fn push_reading(out: &mut Vec<Reading>, style: Style, domain: Option<&str>) {
    if out.len() >= MAX_READINGS {
        return;
    }
    if let Some(domain) = domain {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !domain.is_empty() && !out.iter().any(|r| r.style == style && r.domain == domain) {
            out.push(Reading { style, domain });
        }
    }
}

/// The naive readings of a value: first `<...>`, last `@`, last `@` before a NUL.
fn naive_readings(text: &[u8], out: &mut Vec<Reading>) {
    if let Some(open) = text.iter().position(|&b| b == b'<') {
        let inside = &text[open + 1..];
        let inside = match inside.iter().position(|&b| b == b'>') {
            Some(close) => &inside[..close],
            None => inside,
        };
        if let Some(at) = inside.iter().rposition(|&b| b == b'@') {
            push_reading(
                out,
                Style::AngleBrackets,
                domain_after_at(&inside[at + 1..]).as_deref(),
            );
        }
    }
    if let Some(at) = text.iter().rposition(|&b| b == b'@') {
        push_reading(
            out,
            Style::LastAt,
            domain_after_at(&text[at + 1..]).as_deref(),
        );
    }
    if let Some(nul) = text.iter().position(|&b| b == 0) {
        let before = &text[..nul];
        if let Some(at) = before.iter().rposition(|&b| b == b'@') {
            push_reading(
                out,
                Style::BeforeNul,
                domain_after_at(&before[at + 1..]).as_deref(),
            );
        }
    }
}

/// What each parser style reads from one address-list value: the strict parse's domains first,
/// then each other style's, each (style, domain) once, at most [`MAX_READINGS`].
pub fn readings(value: &[u8]) -> Vec<Reading> {
    read_address_list(value).1
}

/// [`parse_address_list`] and [`readings`] of one value, parsed once.
pub fn read_address_list(value: &[u8]) -> (AddressList, Vec<Reading>) {
    let ParsedList {
        list,
        text,
        encoded_domains,
    } = parse_list(value);
    let mut out = Vec::new();
    for m in list.mailboxes() {
        push_reading(&mut out, Style::Strict, Some(&m.domain));
    }
    for m in list.mailboxes() {
        if let Some(at) = m.local_part.find('@') {
            push_reading(
                &mut out,
                Style::FirstAt,
                domain_after_at(&m.local_part.as_bytes()[at + 1..]).as_deref(),
            );
        }
        for r in &m.route {
            push_reading(&mut out, Style::Route, Some(r));
        }
    }
    naive_readings(&text, &mut out);
    for domain in domains_in_text(&text) {
        push_reading(&mut out, Style::Mentioned, Some(&domain));
    }
    for domain in &encoded_domains {
        push_reading(&mut out, Style::EncodedWord, Some(domain));
    }
    (list, out)
}

/// What each parser style reads from an RFC 5321 path.
pub fn path_readings(value: &[u8]) -> Vec<Reading> {
    read_path(value).1
}

/// [`parse_path`] and [`path_readings`] of one value, parsed once.
pub fn read_path(value: &[u8]) -> (Path, Vec<Reading>) {
    let path = parse_path(value);
    let mut ignored = Vec::new();
    let text = prepare(value, &mut ignored);
    let mut out = Vec::new();
    if let Some(m) = &path.mailbox {
        push_reading(&mut out, Style::Strict, Some(&m.domain));
        if let Some(at) = m.local_part.find('@') {
            push_reading(
                &mut out,
                Style::FirstAt,
                domain_after_at(&m.local_part.as_bytes()[at + 1..]).as_deref(),
            );
        }
        for r in &m.route {
            push_reading(&mut out, Style::Route, Some(r));
        }
    }
    if let Some(at) = text.iter().position(|&b| b == b'@')
        && text[..at].iter().all(|&b| b != b'"')
    {
        // A splitter at the first `@` (quotes not honoured), outside a route.
        if !text[..at].iter().all(|&b| b == b'<' || b == b' ') {
            push_reading(
                &mut out,
                Style::FirstAt,
                domain_after_at(&text[at + 1..]).as_deref(),
            );
        }
    }
    naive_readings(&text, &mut out);
    for domain in domains_in_text(&text) {
        push_reading(&mut out, Style::Mentioned, Some(&domain));
    }
    (path, out)
}

// ---------------------------------------------------------------------------------------------
// RFC 2047 encoded-words

/// Every RFC 2047 encoded-word (`=?charset?B|Q?text?=`) in `text`, decoded, wherever it stands
/// (parsers that decode before parsing do not care where).
pub fn decode_encoded_words(text: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(n) = text[i..].windows(2).position(|w| w == b"=?") {
        let start = i + n;
        i = start + 2;
        let rest = &text[i..text.len().min(i + MAX_ENCODED_WORD)];
        let Some(q1) = rest.iter().position(|&b| b == b'?') else {
            continue;
        };
        let charset = String::from_utf8_lossy(&rest[..q1]);
        let charset = charset.split('*').next().unwrap_or("");
        let Some(&enc) = rest.get(q1 + 1) else {
            continue;
        };
        if rest.get(q1 + 2) != Some(&b'?') || !matches!(enc, b'B' | b'b' | b'Q' | b'q') {
            continue;
        }
        let body = &rest[q1 + 3..];
        let Some(end) = body.windows(2).position(|w| w == b"?=") else {
            continue;
        };
        let encoded = &body[..end];
        let bytes = if matches!(enc, b'B' | b'b') {
            base64_decode_lenient(encoded)
        } else {
            q_decode(encoded)
        };
        out.push(charset_to_text(charset, &bytes));
        i += q1 + 3 + end + 2;
    }
    out
}

/// `local@domain` addresses in free text (a decoded display name): each `@` with a local part
/// before it and a domain holding a dot after it. Returns (address, domain).
pub fn addresses_in_text(text: &[u8]) -> Vec<(String, String)> {
    found_addresses(text)
        .map(|(local, domain)| {
            let address = format!("{}@{domain}", String::from_utf8_lossy(local));
            (address, domain)
        })
        .collect()
}

/// The domains of [`addresses_in_text`], for callers that need no more (the readings).
fn domains_in_text(text: &[u8]) -> impl Iterator<Item = String> + '_ {
    found_addresses(text).map(|(_, domain)| domain)
}

/// The addresses of [`addresses_in_text`] as (local part, domain).
fn found_addresses(text: &[u8]) -> impl Iterator<Item = (&[u8], String)> + '_ {
    memchr::memchr_iter(b'@', text).filter_map(move |at| {
        let start = text[..at]
            .iter()
            .rposition(|&b| !(is_atext(b) || b == b'.'))
            .map_or(0, |p| p + 1);
        let local = &text[start..at];
        let domain = domain_after_at(&text[at + 1..])?;
        if local.is_empty() || !(domain.contains('.') || domain.starts_with('[')) {
            return None;
        }
        Some((local, domain))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(v: &str) -> Vec<String> {
        parse_address_list(v.as_bytes())
            .mailboxes()
            .map(|m| m.domain_key())
            .collect()
    }

    fn read(v: &[u8], style: Style) -> Vec<String> {
        readings(v)
            .into_iter()
            .filter(|r| r.style == style)
            .map(|r| r.domain)
            .collect()
    }

    #[test]
    fn plain_forms() {
        let l = parse_address_list(b" \"Doe, John\" <john@Example.COM>, jane@example.org (Jane)");
        assert!(l.defects.is_empty(), "{:?}", l.defects);
        let m: Vec<_> = l.mailboxes().collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].display_name.as_deref(), Some("Doe, John"));
        assert_eq!(m[0].address(), "john@Example.COM");
        assert_eq!(m[0].domain_key(), "example.com");
        assert_eq!(m[1].address(), "jane@example.org");
        let l =
            parse_address_list(b" =?iso-8859-1?Q?Colm_MacC=E1rthaigh?= <colmmacc@redbrick.dcu.ie>");
        assert!(l.defects.is_empty(), "{:?}", l.defects);
        let l = parse_address_list(b" undisclosed-recipients:;");
        assert!(l.defects.is_empty());
        assert_eq!(l.mailboxes().count(), 0);
        assert!(
            matches!(&l.addresses[0], Address::Group { name, members } if name == "undisclosed-recipients" && members.is_empty())
        );
        let l = parse_address_list(b" a@[192.0.2.1], \"x y\"@example.com");
        assert!(l.defects.is_empty(), "{:?}", l.defects);
        assert_eq!(domains(" a@[192.0.2.1]"), ["[192.0.2.1]"]);
        let l = parse_address_list(b" John (the (nested) one) Smith <j@example.com>");
        assert!(l.defects.is_empty(), "{:?}", l.defects);
    }

    #[test]
    fn tricks_are_defects() {
        let l = parse_address_list(b" <b@evil.com>@legit.com");
        assert_eq!(domains(" <b@evil.com>@legit.com"), ["evil.com"]);
        assert!(l.has(Defect::TrailingText));
        assert_eq!(
            read(b" <b@evil.com>@legit.com", Style::LastAt),
            ["legit.com"]
        );

        let l = parse_address_list(b" b@evil.com\\,@legit.com");
        assert!(l.has(Defect::QuotedPairOutsideQuotes));
        assert_eq!(
            read(b" b@evil.com\\,@legit.com", Style::LastAt),
            ["legit.com"]
        );

        let v = b" a@legit.com(comment@evil.com)";
        assert!(parse_address_list(v).defects.is_empty());
        assert_eq!(read(v, Style::Strict), ["legit.com"]);
        assert_eq!(read(v, Style::LastAt), ["evil.com"]);

        let v = b" \"a@legit.com\\\"<b@evil.com>\"";
        let l = parse_address_list(v);
        assert_eq!(l.mailboxes().count(), 0);
        assert!(l.has(Defect::NoAddress));
        assert_eq!(read(v, Style::AngleBrackets), ["evil.com"]);

        let v = b" \"a@legit.com\"@evil.com";
        assert!(parse_address_list(v).has(Defect::SpecialInLocalPart));
        assert_eq!(read(v, Style::FirstAt), ["legit.com"]);

        let v = b" a@legit.com\0@evil.com";
        assert!(parse_address_list(v).has(Defect::Nul));
        assert_eq!(read(v, Style::BeforeNul), ["legit.com"]);

        assert!(parse_address_list(b" \"a <a@b.com>").has(Defect::UnbalancedQuote));
        assert!(parse_address_list(b" a (b <a@b.com>").has(Defect::UnbalancedParen));
        assert!(parse_address_list(b" a <a@b.com").has(Defect::UnbalancedAngle));
        assert!(parse_address_list(b" a@b@c.com").has(Defect::MultipleAt));
    }

    #[test]
    fn routes() {
        let l = parse_address_list(b" <@a.example,@b.example:user@d.example>");
        assert!(l.has(Defect::RouteAddress));
        let m = l.mailboxes().next().unwrap();
        assert_eq!(m.route, ["a.example", "b.example"]);
        assert_eq!(m.domain, "d.example");
        let p = parse_path(b"<@a.example:user@d.example>");
        assert!(p.has(Defect::RouteAddress));
        assert_eq!(p.mailbox.unwrap().domain, "d.example");
        let p = parse_path(b"@a.example,@b.example:user@d.example");
        assert!(p.has(Defect::RouteAddress));
        let r = path_readings(b"@a.example:user@d.example");
        assert!(r.contains(&Reading {
            style: Style::Route,
            domain: "a.example".into()
        }));
    }

    #[test]
    fn paths() {
        assert!(parse_path(b"<>").null);
        assert!(parse_path(b"").null);
        let p = parse_path(b"user@example.com");
        assert!(p.defects.is_empty(), "{:?}", p.defects);
        let p = parse_path(b"<Online#3.19584.83-p1SYlJ1blFvQjRRR.1.b@newsletter.online.com>");
        assert!(p.defects.is_empty(), "{:?}", p.defects);
        assert!(parse_path(b"user(x@legit.com)@evil.com").has(Defect::ParenInPath));
        assert!(parse_path(b"user(@evil.com").has(Defect::UnbalancedParen));
        assert!(parse_path(b"\"user@evil.com").has(Defect::UnbalancedQuote));
        assert!(parse_path(b"a@legit.com@evil.com").has(Defect::MultipleAt));
        assert!(parse_path(b"a@b.com> x").has(Defect::UnbalancedAngle));
    }

    #[test]
    fn encoded_words() {
        // "a@legit.com" in base64 and Q.
        let v = b" =?utf-8?B?YUBsZWdpdC5jb20=?= <b@evil.com>";
        assert!(parse_address_list(v).has(Defect::AddressInEncodedWord));
        assert_eq!(read(v, Style::EncodedWord), ["legit.com"]);
        let v = b" =?utf-8?Q?a=40legit.com?=";
        assert_eq!(parse_address_list(v).mailboxes().count(), 0);
        assert_eq!(read(v, Style::EncodedWord), ["legit.com"]);
        assert_eq!(decode_encoded_words(b"=?UTF-16BE?B?AGEAQABi?="), ["a@b"]);
        assert!(decode_encoded_words(b"=?x?B?").is_empty());
    }

    #[test]
    fn groups_do_not_nest() {
        let l = parse_address_list(b" a: b: c@d.example;;");
        assert!(l.has(Defect::NestedGroup));
        assert_eq!(l.mailboxes().count(), 1);
        // 32 768 levels would overflow the stack of a parser that recursed into each.
        let l = parse_address_list(&b"a:".repeat(MAX_INPUT));
        assert!(l.has(Defect::NestedGroup) && l.has(Defect::TooLong));
    }

    #[test]
    fn bounded() {
        let deep = [b"(".repeat(100_000), b"a@b.com".to_vec()].concat();
        let l = parse_address_list(&deep);
        assert!(l.has(Defect::TooLong) && l.has(Defect::TooDeep));
        let many = b"a@b.com,".repeat(20_000);
        let l = parse_address_list(&many);
        assert!(l.has(Defect::TooLong));
        assert_eq!(l.mailboxes().count(), MAX_INPUT / 8);
        let distinct: Vec<u8> = (0..8000)
            .flat_map(|i| format!("a@d{i}.example,").into_bytes())
            .collect();
        assert_eq!(readings(&distinct).len(), MAX_READINGS);
    }
}
