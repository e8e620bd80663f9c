//! Mail server logs: Postfix, Sendmail and Exim, in classic syslog, RFC 3339 and journald
//! `short-iso` timestamp styles, plain or gzip'd.
//!
//! Every line becomes a [`LogLine`] (where it came from, when, which program) and, when we
//! recognise it, one [`Event`] that says what it means for a message: a queue id met a client, a
//! Message-ID, a sender, a delivery. Lines we do not recognise are kept but carry no event.

use std::{
    io::{BufRead, BufReader, Read},
    net::IpAddr,
    path::Path,
};

use serde::Serialize;
use unspoof_message::date::{MONTHS, unix_time};

/// Longest line read; longer lines are cut (a log line is never legitimately this long).
const MAX_LINE: usize = 64 * 1024;

/// One log line and what it says.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// `file:line`.
    pub source: String,
    /// Unix seconds, when the timestamp could be read.
    pub time: Option<i64>,
    pub host: String,
    /// `postfix/smtpd`, `sendmail`, `exim`, ...
    pub program: String,
    pub pid: Option<u32>,
    /// The text after `program[pid]: `.
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

/// What a recognised line tells about a message. `queue_id` is the MTA's id for the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A client connected (Postfix `connect from`, per smtpd process).
    Connect {
        client_name: String,
        client_ip: Option<IpAddr>,
    },
    /// TLS on the connection (Postfix per process; Sendmail per relay).
    Tls {
        client_ip: Option<IpAddr>,
        detail: String,
    },
    /// A queue id met its client (Postfix `client=`, Sendmail `relay=` on the from line, Exim
    /// `H=`), with the SASL login when there was one.
    Client {
        queue_id: String,
        client_name: String,
        client_ip: Option<IpAddr>,
        sasl_user: Option<String>,
        helo: Option<String>,
        tls: Option<String>,
    },
    /// The Message-ID of a queue id (without angle brackets).
    MessageId {
        queue_id: String,
        message_id: String,
    },
    /// The envelope sender of a queue id.
    From {
        queue_id: String,
        sender: String,
        size: Option<u64>,
    },
    /// One delivery attempt.
    Delivery {
        queue_id: String,
        recipient: String,
        relay: Option<String>,
        status: String,
        detail: String,
    },
    /// The MTA refused the message (Postfix `reject:`/`milter-reject:`, Exim `rejected`).
    Reject {
        queue_id: Option<String>,
        client_ip: Option<IpAddr>,
        detail: String,
    },
    /// The queue id is gone (Postfix `removed`, Exim `Completed`).
    Done { queue_id: String },
}

impl Event {
    pub fn queue_id(&self) -> Option<&str> {
        match self {
            Event::Client { queue_id, .. }
            | Event::MessageId { queue_id, .. }
            | Event::From { queue_id, .. }
            | Event::Delivery { queue_id, .. }
            | Event::Done { queue_id } => Some(queue_id),
            Event::Reject { queue_id, .. } => queue_id.as_deref(),
            Event::Connect { .. } | Event::Tls { .. } => None,
        }
    }
}

/// Reads one log file (`-` for stdin; `.gz` or gzip magic is decompressed). `year` completes
/// classic syslog timestamps, which have none.
pub fn read_file(path: &Path, year: i32) -> std::io::Result<Vec<LogLine>> {
    let name = path.display().to_string();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path)?)
    };
    read(reader, &name, year)
}

/// Reads log lines from any reader, decompressing gzip when the data starts with its magic.
pub fn read(reader: impl Read, name: &str, year: i32) -> std::io::Result<Vec<LogLine>> {
    let mut buffered = BufReader::new(reader);
    let gz = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = if gz {
        Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(
            buffered,
        )))
    } else {
        Box::new(buffered)
    };
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        n += 1;
        if !buf.ends_with(b"\n") && read == MAX_LINE {
            // Skip the rest of an over-long line.
            let mut sink = Vec::new();
            reader.read_until(b'\n', &mut sink)?;
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(line) = parse_line(
            text.trim_end_matches(['\r', '\n']),
            &format!("{name}:{n}"),
            year,
        ) {
            out.push(line);
        }
    }
    Ok(out)
}

/// Parses one line; `None` for blank lines.
pub fn parse_line(line: &str, source: &str, year: i32) -> Option<LogLine> {
    if line.trim().is_empty() {
        return None;
    }
    // Exim's own mainlog: "2026-11-23 11:00:02 <id> ..." (no host, no program).
    if let Some((time, rest)) = exim_timestamp(line) {
        let mut l = LogLine {
            source: source.to_string(),
            time: Some(time),
            host: String::new(),
            program: "exim".into(),
            pid: None,
            text: rest.to_string(),
            event: None,
        };
        l.event = exim_event(&l.text);
        return Some(l);
    }
    let (time, rest) = syslog_timestamp(line, year).unwrap_or((None, line));
    let mut parts = rest.splitn(2, ' ');
    let host = parts.next()?.to_string();
    let rest = parts.next().unwrap_or("");
    let (tag, text) = rest.split_once(": ").unwrap_or((rest, ""));
    let (program, pid) = match tag.split_once('[') {
        Some((p, pid)) => (p.to_string(), pid.trim_end_matches(']').parse().ok()),
        None => (tag.to_string(), None),
    };
    let mut l = LogLine {
        source: source.to_string(),
        time,
        host,
        program,
        pid,
        text: text.to_string(),
        event: None,
    };
    l.event = if l.program.starts_with("postfix") {
        postfix_event(&l.program, &l.text)
    } else if l.program.starts_with("sendmail") || l.program == "sm-mta" {
        sendmail_event(&l.text)
    } else if l.program.starts_with("exim") {
        // Exim through syslog repeats its own timestamp-less line: "<id> <= ...".
        exim_event(&l.text)
    } else {
        None
    };
    Some(l)
}

/// `Nov 23 11:00:01 ` (classic), `2026-11-23T11:00:01.123+00:00 ` (RFC 3339) or
/// `2026-11-23T11:00:01+0000 ` (journald short-iso).
fn syslog_timestamp(line: &str, year: i32) -> Option<(Option<i64>, &str)> {
    let b = line.as_bytes();
    if b.len() > 16 && b[3] == b' ' && MONTHS.contains(&&line[..3]) {
        let month = MONTHS.iter().position(|m| *m == &line[..3])? as u32 + 1;
        let day: u32 = line[4..6].trim().parse().ok()?;
        let (h, m, s) = hms(&line[7..15])?;
        let t = unix(year, month, day, h, m, s, 0);
        return Some((Some(t), line.get(16..)?));
    }
    if b.len() > 20 && b[4] == b'-' && b[10] == b'T' {
        let end = line.find(' ')?;
        return Some((rfc3339(&line[..end]), &line[end + 1..]));
    }
    None
}

fn exim_timestamp(line: &str) -> Option<(i64, &str)> {
    let b = line.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b' ' || b[13] != b':' {
        return None;
    }
    let (y, mo, d) = ymd(&line[..10])?;
    let (h, m, s) = hms(&line[11..19])?;
    // Exim may log a zone offset after the time ("+0100") with log_timezone.
    let mut rest = &line[19..];
    let mut offset = 0;
    if let Some(r) = rest.strip_prefix(' ')
        && r.len() >= 5
        && (r.starts_with('+') || r.starts_with('-'))
        && r[1..5].bytes().all(|c| c.is_ascii_digit())
    {
        offset = zone(&r[..5])?;
        rest = &r[5..];
    }
    Some((unix(y, mo, d, h, m, s, offset), rest.trim_start()))
}

fn ymd(s: &str) -> Option<(i32, u32, u32)> {
    Some((
        s.get(0..4)?.parse().ok()?,
        s.get(5..7)?.parse().ok()?,
        s.get(8..10)?.parse().ok()?,
    ))
}

fn hms(s: &str) -> Option<(u32, u32, u32)> {
    Some((
        s.get(0..2)?.parse().ok()?,
        s.get(3..5)?.parse().ok()?,
        s.get(6..8)?.parse().ok()?,
    ))
}

/// `+0100`, `-05:30`, `Z` -> seconds east of UTC.
fn zone(s: &str) -> Option<i64> {
    if s == "Z" || s.is_empty() {
        return Some(0);
    }
    let sign = match s.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = s[1..].chars().filter(|c| c.is_ascii_digit()).collect();
    let h: i64 = digits.get(0..2)?.parse().ok()?;
    let m: i64 = digits.get(2..4).unwrap_or("00").parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

fn rfc3339(s: &str) -> Option<i64> {
    let (y, mo, d) = ymd(s.get(0..10)?)?;
    let (h, m, sec) = hms(s.get(11..19)?)?;
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    Some(unix(y, mo, d, h, m, sec, zone(rest)?))
}

/// Unix seconds of a civil date and time (the message layer's calendar), minus the zone offset.
fn unix(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32, offset: i64) -> i64 {
    unix_time(y.into(), m.into(), d.into(), h.into(), min.into(), s.into()) - offset
}

/// `name[1.2.3.4]` or `name [1.2.3.4]` -> (name, ip).
fn name_ip(s: &str) -> (String, Option<IpAddr>) {
    let s = s.trim();
    match s.rfind('[') {
        Some(i) => {
            let name = s[..i].trim().trim_end_matches('.').to_string();
            let inner = s[i + 1..].split(']').next().unwrap_or("");
            let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
            (name, inner.parse().ok())
        }
        None => (s.to_string(), None),
    }
}

/// The value of `key=` in a comma- or space-separated attribute list; `<...>` stripped.
fn attr<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut search = text;
    while let Some(i) = search.find(key) {
        let before_ok = i == 0 || matches!(search.as_bytes()[i - 1], b' ' | b',' | b';');
        let after = &search[i + key.len()..];
        if before_ok {
            let end = if after.starts_with('<') {
                after.find('>').map(|e| e + 1).unwrap_or(after.len())
            } else {
                after.find([',', ' ']).unwrap_or(after.len())
            };
            let v = &after[..end];
            return Some(v.trim_start_matches('<').trim_end_matches('>'));
        }
        search = &search[i + key.len()..];
    }
    None
}

/// Postfix queue ids: hex (short ids, 10+ chars) or the long base-52 form (12+ chars).
fn postfix_queue_id(text: &str) -> Option<(&str, &str)> {
    let (id, rest) = text.split_once(": ")?;
    (id.len() >= 6 && id.bytes().all(|c| c.is_ascii_alphanumeric()) && id != "NOQUEUE")
        .then_some((id, rest))
}

fn postfix_event(program: &str, text: &str) -> Option<Event> {
    if let Some(rest) = text.strip_prefix("connect from ") {
        let (client_name, client_ip) = name_ip(rest);
        return Some(Event::Connect {
            client_name,
            client_ip,
        });
    }
    if text.contains("TLS connection established from ") {
        let from = text.split("established from ").nth(1)?;
        let (host, detail) = from.split_once(": ").unwrap_or((from, ""));
        let (_, client_ip) = name_ip(host);
        return Some(Event::Tls {
            client_ip,
            detail: detail.to_string(),
        });
    }
    if let Some(rest) = text.strip_prefix("NOQUEUE: ") {
        if rest.starts_with("reject:") || rest.starts_with("milter-reject:") {
            let client_ip = rest
                .split(" from ")
                .nth(1)
                .map(|s| name_ip(s.split(':').next().unwrap_or("")).1)
                .flatten();
            return Some(Event::Reject {
                queue_id: None,
                client_ip,
                detail: rest.to_string(),
            });
        }
        return None;
    }
    let (queue_id, rest) = postfix_queue_id(text)?;
    let queue_id = queue_id.to_string();
    if let Some(client) = rest.strip_prefix("client=") {
        let host = client.split(',').next().unwrap_or(client);
        let (client_name, client_ip) = name_ip(host);
        return Some(Event::Client {
            queue_id,
            client_name,
            client_ip,
            sasl_user: attr(rest, "sasl_username=").map(str::to_string),
            helo: None,
            tls: None,
        });
    }
    if let Some(id) = rest.strip_prefix("message-id=") {
        let id = id.trim().trim_start_matches('<').trim_end_matches('>');
        return Some(Event::MessageId {
            queue_id,
            message_id: id.to_string(),
        });
    }
    if rest.starts_with("reject:") || rest.starts_with("milter-reject:") {
        let client_ip = rest
            .split(" from ")
            .nth(1)
            .and_then(|s| name_ip(s.split(':').next().unwrap_or("")).1);
        return Some(Event::Reject {
            queue_id: Some(queue_id),
            client_ip,
            detail: rest.to_string(),
        });
    }
    if rest.starts_with("from=") && program.ends_with("qmgr") {
        return Some(Event::From {
            queue_id,
            sender: attr(rest, "from=").unwrap_or("").to_string(),
            size: attr(rest, "size=").and_then(|s| s.parse().ok()),
        });
    }
    if rest.starts_with("to=") {
        let status = attr(rest, "status=").unwrap_or("").to_string();
        let detail = rest.split_once("status=").map(|(_, s)| s).unwrap_or("");
        let detail = detail.split_once(' ').map(|(_, d)| d).unwrap_or("").trim();
        return Some(Event::Delivery {
            queue_id,
            recipient: attr(rest, "to=").unwrap_or("").to_string(),
            relay: attr(rest, "relay=").map(str::to_string),
            status,
            detail: detail
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_string(),
        });
    }
    if rest == "removed" {
        return Some(Event::Done { queue_id });
    }
    None
}

fn sendmail_event(text: &str) -> Option<Event> {
    if text.starts_with("STARTTLS=server") {
        let relay = attr(text, "relay=").unwrap_or("");
        let rest = text.split("relay=").nth(1).unwrap_or("");
        let (_, client_ip) = name_ip(rest.split(", ").next().unwrap_or(rest));
        let _ = relay;
        let version = attr(text, "version=").unwrap_or("");
        let cipher = attr(text, "cipher=").unwrap_or("");
        return Some(Event::Tls {
            client_ip,
            detail: format!("{version} {cipher}").trim().to_string(),
        });
    }
    let (queue_id, rest) = text.split_once(": ")?;
    if queue_id.len() < 8 || !queue_id.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let queue_id = queue_id.to_string();
    if rest.starts_with("from=") {
        // The relay= of a from line is the client; msgid= the Message-ID. Emit the client; the
        // join reads msgid= and from= off the same line (see `sendmail_extra`).
        let relay = rest.split("relay=").nth(1).unwrap_or("");
        let relay = relay.split(", ").next().unwrap_or(relay);
        let (client_name, client_ip) = name_ip(relay);
        return Some(Event::Client {
            queue_id,
            client_name,
            client_ip,
            sasl_user: attr(rest, "authid=").map(str::to_string),
            helo: None,
            tls: None,
        });
    }
    if rest.starts_with("to=") {
        return Some(Event::Delivery {
            queue_id,
            recipient: attr(rest, "to=").unwrap_or("").to_string(),
            relay: rest
                .split("relay=")
                .nth(1)
                .map(|r| r.split(", ").next().unwrap_or(r).to_string()),
            status: attr(rest, "stat=").unwrap_or("").to_string(),
            detail: rest
                .split_once("stat=")
                .map(|(_, s)| s.to_string())
                .unwrap_or_default(),
        });
    }
    if rest.starts_with("ruleset=") && rest.contains("reject=") {
        let (_, client_ip) = name_ip(attr(rest, "relay=").unwrap_or(""));
        return Some(Event::Reject {
            queue_id: Some(queue_id),
            client_ip,
            detail: rest.to_string(),
        });
    }
    None
}

/// The extra facts of a Sendmail `from=` line: (sender, size, Message-ID).
pub fn sendmail_extra(text: &str) -> Option<(String, Option<u64>, Option<String>)> {
    let (_, rest) = text.split_once(": ")?;
    if !rest.starts_with("from=") {
        return None;
    }
    Some((
        attr(rest, "from=").unwrap_or("").to_string(),
        attr(rest, "size=").and_then(|s| s.parse().ok()),
        attr(rest, "msgid=").map(str::to_string),
    ))
}

/// Exim ids: `1tABCD-000123-Ab` (new) or `1tABCD-00012A-AB` (old): three dash-separated parts.
fn exim_queue_id(text: &str) -> Option<(&str, &str)> {
    let (id, rest) = text.split_once(' ')?;
    let parts: Vec<&str> = id.split('-').collect();
    (parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric())))
    .then_some((id, rest))
}

fn exim_event(text: &str) -> Option<Event> {
    let (queue_id, rest) = exim_queue_id(text)?;
    let queue_id = queue_id.to_string();
    if let Some(rest) = rest.strip_prefix("<= ") {
        // "<= sender H=name (helo) [ip] P=esmtps X=TLS... A=plain:user S=123 id=msgid"
        let host = rest.split(" H=").nth(1).map(|h| {
            let end = h.find(" P=").or_else(|| h.find(" S=")).unwrap_or(h.len());
            &h[..end]
        });
        let (client_name, client_ip, helo) = match host {
            Some(h) => {
                let helo = h
                    .split_once(" (")
                    .and_then(|(_, r)| r.split_once(')'))
                    .map(|(x, _)| x.to_string());
                let first = h.split(' ').next().unwrap_or("").to_string();
                let (_, ip) = name_ip(h);
                (first, ip, helo)
            }
            None => (String::new(), None, None),
        };
        let auth = exim_field(rest, "A=")
            .map(|a| a.split_once(':').map(|(_, u)| u).unwrap_or(a).to_string());
        return Some(Event::Client {
            queue_id,
            client_name,
            client_ip,
            sasl_user: auth,
            helo,
            tls: exim_field(rest, "X=").map(str::to_string),
        });
    }
    if rest.starts_with("=> ")
        || rest.starts_with("-> ")
        || rest.starts_with("** ")
        || rest.starts_with("== ")
    {
        let status = match &rest[..2] {
            "=>" | "->" => "sent",
            "**" => "bounced",
            _ => "deferred",
        };
        // "=> local <original@address>" when a router rewrote it: the original is what was sent.
        let mut words = rest[3..].split(' ');
        let first = words.next().unwrap_or("");
        let recipient = match words.next() {
            Some(w) if w.starts_with('<') && w.ends_with('>') => w,
            _ => first,
        }
        .trim_matches(['<', '>'])
        .to_string();
        let relay = rest
            .split(" H=")
            .nth(1)
            .map(|h| h.split(" C=").next().unwrap_or(h).to_string());
        return Some(Event::Delivery {
            queue_id,
            recipient,
            relay,
            status: status.into(),
            detail: exim_field(rest, "C=")
                .unwrap_or("")
                .trim_matches('"')
                .to_string(),
        });
    }
    if rest == "Completed" {
        return Some(Event::Done { queue_id });
    }
    if rest.contains("rejected") {
        let (_, client_ip) = name_ip(rest.split(" H=").nth(1).unwrap_or(""));
        return Some(Event::Reject {
            queue_id: Some(queue_id),
            client_ip,
            detail: rest.to_string(),
        });
    }
    None
}

/// The value of an Exim ` K=value` field (up to the next space).
fn exim_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let i = text.find(&format!(" {key}"))?;
    let v = &text[i + 1 + key.len()..];
    Some(v.split(' ').next().unwrap_or(v))
}

/// The envelope sender of an Exim `<=` line (`<>` for bounces).
pub fn exim_sender(text: &str) -> Option<String> {
    let (_, rest) = exim_queue_id(text)?;
    let rest = rest.strip_prefix("<= ")?;
    Some(
        rest.split(' ')
            .next()
            .unwrap_or("")
            .trim_matches(['<', '>'])
            .to_string(),
    )
}

/// The Message-ID Exim writes on the `<=` line as ` id=...`.
pub fn exim_message_id(text: &str) -> Option<String> {
    let (_, rest) = exim_queue_id(text)?;
    rest.starts_with("<= ")
        .then(|| exim_field(rest, "id=").map(str::to_string))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let l = parse_line(
            "Nov 23 11:00:01 mx postfix/smtpd[12]: connect from a.example[192.0.2.1]",
            "t",
            2026,
        )
        .unwrap();
        assert_eq!(l.time, Some(1795431601));
        assert_eq!(l.program, "postfix/smtpd");
        assert_eq!(l.pid, Some(12));
        let l = parse_line(
            "2026-11-23T11:00:01.123456+00:00 mx postfix/smtpd[12]: x",
            "t",
            0,
        )
        .unwrap();
        assert_eq!(l.time, Some(1795431601));
        let l = parse_line("2026-11-23T12:00:01+0100 mx postfix/smtpd[12]: x", "t", 0).unwrap();
        assert_eq!(l.time, Some(1795431601));
        let l = parse_line("2026-11-23 11:00:01 1tABCD-000123-Ab Completed", "t", 0).unwrap();
        assert_eq!(l.time, Some(1795431601));
        assert_eq!(
            l.event,
            Some(Event::Done {
                queue_id: "1tABCD-000123-Ab".into()
            })
        );
    }

    #[test]
    fn postfix_events() {
        let e = |t: &str| parse_line(t, "t", 2026).unwrap().event;
        assert_eq!(
            e(
                "Nov 23 11:00:02 mx postfix/smtpd[1]: 4F1A2B3C4D: client=mail.example.com[192.0.2.1], sasl_method=PLAIN, sasl_username=joe"
            ),
            Some(Event::Client {
                queue_id: "4F1A2B3C4D".into(),
                client_name: "mail.example.com".into(),
                client_ip: "192.0.2.1".parse().ok(),
                sasl_user: Some("joe".into()),
                helo: None,
                tls: None
            })
        );
        assert_eq!(
            e("Nov 23 11:00:02 mx postfix/cleanup[2]: 4F1A2B3C4D: message-id=<abc@example.com>"),
            Some(Event::MessageId {
                queue_id: "4F1A2B3C4D".into(),
                message_id: "abc@example.com".into()
            })
        );
        let Some(Event::Delivery { status, relay, .. }) = e(
            "Nov 23 11:00:03 mx postfix/smtp[3]: 4F1A2B3C4D: to=<a@b.example>, relay=mx.b.example[198.51.100.1]:25, delay=1.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        ) else {
            panic!()
        };
        assert_eq!(status, "sent");
        assert_eq!(relay.as_deref(), Some("mx.b.example[198.51.100.1]:25"));
    }
}
