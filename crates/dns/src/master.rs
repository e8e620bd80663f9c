//! RFC 1035 section 5 master files, for the record types mail authentication reads.
//!
//! Our own reader rather than hickory's: hickory-proto 0.26's lexer ends a quoted string at a
//! `;` when the record spans lines in parentheses, which is exactly how DKIM keys are
//! published (`"v=DKIM1; k=rsa; p=..."` split over lines). Supported: `$ORIGIN`, `$TTL`,
//! `$INCLUDE`, `@`, relative names, an omitted owner (the previous one), TTL and class in
//! either order, parentheses, `;` comments, quoted strings with `\"`, `\\` and `\DDD`
//! escapes, and the types A, AAAA, TXT (SPF), MX, CNAME, PTR, NS, SOA.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{self, TXT},
};

/// Most `$INCLUDE` levels followed (a loop guard).
const MAX_INCLUDE_DEPTH: usize = 8;

/// One token: a bare word or a quoted string (kept apart because `"@"` is not the origin).
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(Vec<u8>),
}

/// A logical entry: its tokens and whether it began with whitespace (owner omitted).
struct Entry {
    line: usize,
    inherits_owner: bool,
    tokens: Vec<Token>,
}

/// Splits text into entries, joining parenthesised continuation lines.
fn entries(text: &str) -> Result<Vec<Entry>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let mut depth = 0usize;
    let mut current: Option<Entry> = None;
    let mut at_line_start = true;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
                at_line_start = true;
                if depth == 0 {
                    if let Some(e) = current.take() {
                        if !e.tokens.is_empty() {
                            out.push(e);
                        }
                    }
                }
                continue;
            }
            b';' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        let entry = current.get_or_insert_with(|| Entry {
            line,
            inherits_owner: at_line_start && (c == b' ' || c == b'\t'),
            tokens: Vec::new(),
        });
        at_line_start = false;
        match c {
            b' ' | b'\t' | b'\r' => i += 1,
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(format!("line {line}: unbalanced ')'"))?;
                i += 1;
            }
            b'"' => {
                i += 1;
                let mut s = Vec::new();
                loop {
                    match bytes.get(i) {
                        None => return Err(format!("line {line}: unterminated quoted string")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let (b, used) = escape(&bytes[i + 1..])
                                .ok_or(format!("line {line}: bad escape in string"))?;
                            s.push(b);
                            i += 1 + used;
                        }
                        Some(b'\n') => {
                            line += 1;
                            s.push(b'\n');
                            i += 1;
                        }
                        Some(&b) => {
                            s.push(b);
                            i += 1;
                        }
                    }
                }
                entry.tokens.push(Token::Quoted(s));
            }
            _ => {
                let start = i;
                while i < bytes.len() && !b" \t\r\n;()\"".contains(&bytes[i]) {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                let word = String::from_utf8_lossy(&bytes[start..i.min(bytes.len())]).into_owned();
                entry.tokens.push(Token::Word(word));
            }
        }
    }
    if depth != 0 {
        return Err(format!("line {line}: unbalanced '('"));
    }
    if let Some(e) = current.take() {
        if !e.tokens.is_empty() {
            out.push(e);
        }
    }
    Ok(out)
}

/// `\X` or `\DDD` (RFC 1035 5.1); returns the byte and how many bytes after `\` were used.
fn escape(rest: &[u8]) -> Option<(u8, usize)> {
    if rest.len() >= 3 && rest[..3].iter().all(u8::is_ascii_digit) {
        let n: u16 = std::str::from_utf8(&rest[..3]).ok()?.parse().ok()?;
        return u8::try_from(n).ok().map(|b| (b, 3));
    }
    rest.first().map(|&b| (b, 1))
}

/// Reads `text` and returns its records. `path` resolves relative `$INCLUDE`s.
pub fn parse(text: &str, path: Option<&Path>) -> Result<Vec<Record>, String> {
    let mut state = State {
        origin: Name::root(),
        ttl: 3600,
        owner: None,
        records: Vec::new(),
    };
    state.read(text, path, 0)?;
    Ok(state.records)
}

struct State {
    origin: Name,
    ttl: u32,
    owner: Option<Name>,
    records: Vec<Record>,
}

impl State {
    fn read(&mut self, text: &str, path: Option<&Path>, depth: usize) -> Result<(), String> {
        for entry in entries(text)? {
            let at = |m: String| format!("line {}: {m}", entry.line);
            let mut tokens = entry.tokens.iter().peekable();
            let first = match tokens.peek() {
                Some(Token::Word(w)) => w.clone(),
                _ => String::new(),
            };
            match first.to_ascii_uppercase().as_str() {
                "$ORIGIN" => {
                    tokens.next();
                    let name =
                        word(tokens.next()).ok_or_else(|| at("$ORIGIN needs a name".into()))?;
                    self.origin = self.name(&name).map_err(at)?;
                    continue;
                }
                "$TTL" => {
                    tokens.next();
                    let v = word(tokens.next()).ok_or_else(|| at("$TTL needs a value".into()))?;
                    self.ttl = ttl(&v).ok_or_else(|| at(format!("bad TTL {v:?}")))?;
                    continue;
                }
                "$INCLUDE" => {
                    tokens.next();
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(at("$INCLUDE nested too deep".into()));
                    }
                    let file =
                        word(tokens.next()).ok_or_else(|| at("$INCLUDE needs a file".into()))?;
                    let full = match path.and_then(Path::parent) {
                        Some(dir) => dir.join(&file),
                        None => file.clone().into(),
                    };
                    let text = std::fs::read_to_string(&full)
                        .map_err(|e| at(format!("cannot read {}: {e}", full.display())))?;
                    let saved = self.origin.clone();
                    if let Some(o) = word(tokens.next()) {
                        self.origin = self.name(&o).map_err(at)?;
                    }
                    self.read(&text, Some(&full), depth + 1)?;
                    self.origin = saved;
                    continue;
                }
                _ => {}
            }
            let owner = if entry.inherits_owner {
                self.owner
                    .clone()
                    .ok_or_else(|| at("record without an owner name".into()))?
            } else {
                let w = word(tokens.next()).ok_or_else(|| at("expected an owner name".into()))?;
                self.name(&w).map_err(at)?
            };
            self.owner = Some(owner.clone());
            let mut record_ttl = self.ttl;
            let rtype = loop {
                let w = word(tokens.next()).ok_or_else(|| at("expected a record type".into()))?;
                if let Some(t) = ttl(&w) {
                    record_ttl = t;
                } else if w.eq_ignore_ascii_case("IN") {
                } else {
                    break w.to_ascii_uppercase();
                }
            };
            let rest: Vec<&Token> = tokens.collect();
            let rdata = self.rdata(&rtype, &rest).map_err(at)?;
            self.records
                .push(Record::from_rdata(owner, record_ttl, rdata));
        }
        Ok(())
    }

    fn name(&self, text: &str) -> Result<Name, String> {
        if text == "@" {
            return Ok(self.origin.clone());
        }
        let name = Name::from_str_relaxed(text).map_err(|e| format!("bad name {text:?}: {e}"))?;
        if text.ends_with('.') {
            Ok(name)
        } else {
            name.append_domain(&self.origin)
                .map_err(|e| format!("bad name {text:?}: {e}"))
        }
    }

    fn rdata(&self, rtype: &str, rest: &[&Token]) -> Result<RData, String> {
        let words = || {
            rest.iter()
                .filter_map(|t| word(Some(t)))
                .collect::<Vec<_>>()
        };
        let one = || {
            words()
                .into_iter()
                .next()
                .ok_or_else(|| format!("{rtype} record needs data"))
        };
        Ok(match rtype {
            "A" => {
                let v = one()?;
                RData::A(rdata::A(
                    v.parse::<Ipv4Addr>()
                        .map_err(|_| format!("bad IPv4 {v:?}"))?,
                ))
            }
            "AAAA" => {
                let v = one()?;
                RData::AAAA(rdata::AAAA(
                    v.parse::<Ipv6Addr>()
                        .map_err(|_| format!("bad IPv6 {v:?}"))?,
                ))
            }
            "TXT" | "SPF" => {
                let strings: Vec<Vec<u8>> = rest
                    .iter()
                    .map(|t| match t {
                        Token::Quoted(b) => b.clone(),
                        Token::Word(w) => w.as_bytes().to_vec(),
                    })
                    .collect();
                if strings.is_empty() {
                    return Err("TXT record needs a string".into());
                }
                // A character-string holds at most 255 bytes on the wire (RFC 1035 3.3).
                let chunks: Vec<&[u8]> = strings
                    .iter()
                    .flat_map(|s| {
                        if s.is_empty() {
                            vec![&s[..]]
                        } else {
                            s.chunks(255).collect()
                        }
                    })
                    .collect();
                // SPF (type 99) is obsolete (RFC 7208 3.1); serve its data as TXT.
                RData::TXT(TXT::from_bytes(chunks))
            }
            "MX" => {
                let w = words();
                let [pref, host] = w.as_slice() else {
                    return Err("MX record needs a preference and a host".into());
                };
                let pref: u16 = pref
                    .parse()
                    .map_err(|_| format!("bad MX preference {pref:?}"))?;
                RData::MX(rdata::MX::new(pref, self.name(host)?))
            }
            "CNAME" => RData::CNAME(rdata::CNAME(self.name(&one()?)?)),
            "PTR" => RData::PTR(rdata::PTR(self.name(&one()?)?)),
            "NS" => RData::NS(rdata::NS(self.name(&one()?)?)),
            "SOA" => {
                let w = words();
                let [mname, rname, serial, refresh, retry, expire, minimum] = w.as_slice() else {
                    return Err("SOA record needs 7 fields".into());
                };
                let n = |v: &str| ttl(v).ok_or_else(|| format!("bad SOA number {v:?}"));
                RData::SOA(rdata::SOA::new(
                    self.name(mname)?,
                    self.name(rname)?,
                    serial
                        .parse()
                        .map_err(|_| format!("bad SOA serial {serial:?}"))?,
                    n(refresh)? as i32,
                    n(retry)? as i32,
                    n(expire)? as i32,
                    n(minimum)?,
                ))
            }
            other => return Err(format!("record type {other} is not supported here")),
        })
    }
}

fn word(t: Option<&Token>) -> Option<String> {
    match t {
        Some(Token::Word(w)) => Some(w.clone()),
        _ => None,
    }
}

/// A TTL: seconds, or with units (1h30m, 1d, 2w).
fn ttl(v: &str) -> Option<u32> {
    if v.is_empty() || !v.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if let Ok(n) = v.parse() {
        return Some(n);
    }
    let mut total: u32 = 0;
    let mut n: u32 = 0;
    let mut digits = false;
    for c in v.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n.checked_mul(10)?.checked_add(d)?;
            digits = true;
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return None,
        };
        if !digits {
            return None;
        }
        total = total.checked_add(n.checked_mul(unit)?)?;
        n = 0;
        digits = false;
    }
    if digits {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dkim_keys_split_over_lines() {
        let text = "$ORIGIN example.com.\n$TTL 1h\n\
            sel._domainkey IN TXT ( \"v=DKIM1; k=rsa; \"  ; a comment\n  \"p=AB\\\"C\" )\n\
            \tIN TXT \"second\"\n\
            @ 300 MX 10 mx\n\
            mx A 192.0.2.1\n";
        let records = parse(text, None).unwrap();
        assert_eq!(records.len(), 4);
        let RData::TXT(txt) = &records[0].data else {
            panic!()
        };
        let joined: Vec<u8> = txt
            .txt_data
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(joined, b"v=DKIM1; k=rsa; p=AB\"C");
        assert_eq!(records[0].name.to_ascii(), "sel._domainkey.example.com.");
        assert_eq!(records[0].ttl, 3600);
        assert_eq!(records[1].name.to_ascii(), "sel._domainkey.example.com.");
        assert_eq!(records[2].ttl, 300);
        assert!(
            matches!(&records[2].data, RData::MX(mx) if mx.exchange.to_ascii() == "mx.example.com.")
        );
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("a.example. IN A 300.1.1.1\n", None).unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
        let err = parse("a.example. IN TXT (\"x\"\n", None).unwrap_err();
        assert!(err.contains("unbalanced"), "{err}");
    }
}
