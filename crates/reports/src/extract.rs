//! From an input to the report XML inside it: plain XML, gzip (`.xml.gz`), zip (`.zip`), or a
//! mail (RFC 5322) carrying any of those as a part. What a thing is comes from its bytes (gzip
//! and zip magic numbers, a leading `<`), not from its name or Content-Type, which reporters get
//! wrong (`application/octet-stream`, a `.zip` named `.gz`).
//!
//! Every decompression is capped ([`crate::DmarcConfig::max_xml_bytes`]): a zip bomb is refused,
//! never inflated.

use std::io::{Cursor, Read};

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::DmarcConfig;

/// One report's XML, with where in the input it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The part's file name (or `xml`, `gzip`, `zip#N`).
    pub name: String,
    pub xml: Vec<u8>,
    /// The gzip the XML came in, when it came in one (kept instead of compressing it again).
    pub gz: Option<Vec<u8>>,
}

/// What an input is, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gzip,
    Zip,
    Xml,
    Other,
}

fn kind(data: &[u8]) -> Kind {
    if data.starts_with(&[0x1f, 0x8b]) {
        return Kind::Gzip;
    }
    if data.starts_with(b"PK\x03\x04") {
        return Kind::Zip;
    }
    let rest = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    match rest.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => Kind::Xml,
        _ => Kind::Other,
    }
}

/// The report XML documents in `raw`. An input without any, or with one that cannot be
/// unpacked, is an error that says why.
pub fn extract(raw: &[u8], limits: &DmarcConfig) -> Result<Vec<Payload>, String> {
    if raw.is_empty() || raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("empty input".into());
    }
    if raw.len() > limits.max_input_bytes {
        return Err(format!(
            "input of {} octets is over max_input_bytes ({})",
            raw.len(),
            limits.max_input_bytes
        ));
    }
    match kind(raw) {
        Kind::Other => from_mail(raw, limits),
        _ => unpack("input", raw, limits),
    }
}

/// XML as it is, gzip and zip unpacked.
fn unpack(name: &str, data: &[u8], limits: &DmarcConfig) -> Result<Vec<Payload>, String> {
    match kind(data) {
        Kind::Xml => Ok(vec![Payload {
            name: name.to_string(),
            xml: data.to_vec(),
            gz: None,
        }]),
        Kind::Gzip => {
            let xml =
                gunzip(data, limits.max_xml_bytes).map_err(|e| format!("{name}: gzip: {e}"))?;
            if kind(&xml) != Kind::Xml {
                return Err(format!("{name}: the gzip'd content is not XML"));
            }
            Ok(vec![Payload {
                name: name.to_string(),
                xml,
                gz: Some(data.to_vec()),
            }])
        }
        Kind::Zip => {
            let mut archive =
                zip::ZipArchive::new(Cursor::new(data)).map_err(|e| format!("{name}: zip: {e}"))?;
            if archive.len() > limits.max_zip_entries {
                return Err(format!(
                    "{name}: zip of {} files is over max_zip_entries ({})",
                    archive.len(),
                    limits.max_zip_entries
                ));
            }
            let mut out = Vec::new();
            for i in 0..archive.len() {
                let file = archive
                    .by_index(i)
                    .map_err(|e| format!("{name}: zip entry {i}: {e}"))?;
                if file.is_dir() {
                    continue;
                }
                let entry = format!("{name}#{}", file.name());
                let xml =
                    read_capped(file, limits.max_xml_bytes).map_err(|e| format!("{entry}: {e}"))?;
                if kind(&xml) != Kind::Xml {
                    return Err(format!("{entry}: not XML"));
                }
                out.push(Payload {
                    name: entry,
                    xml,
                    gz: None,
                });
            }
            if out.is_empty() {
                return Err(format!("{name}: the zip holds no file"));
            }
            Ok(out)
        }
        Kind::Other => Err(format!("{name}: neither XML, gzip nor zip")),
    }
}

/// Most octets after the last gzip member that are ignored as padding (Mimecast's reports end
/// in two stray octets; parsedmarc and Python's zlib ignore them too). More is an error.
const GZIP_TRAILING_SLACK: usize = 8;

/// Every gzip member of `data` (gzip(1) writes several on `cat a.gz b.gz`), capped at `max`.
fn gunzip(mut data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let mut member = flate2::bufread::GzDecoder::new(data);
        let room = max - out.len();
        let chunk = read_capped(&mut member, room)?;
        out.extend_from_slice(&chunk);
        data = member.into_inner();
        if !data.starts_with(&[0x1f, 0x8b]) {
            if data.len() > GZIP_TRAILING_SLACK {
                return Err(format!("{} octets after the compressed data", data.len()));
            }
            break;
        }
    }
    Ok(out)
}

/// Reads at most `max` octets; more is an error (never a truncated report).
fn read_capped(r: impl Read, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > max {
        return Err(format!("decompresses to more than max_xml_bytes ({max})"));
    }
    Ok(out)
}

/// The reports attached to a mail: every part whose content is XML, gzip or zip (text parts
/// only when they say they are XML, so a text/plain greeting starting with `<` is no report).
fn from_mail(raw: &[u8], limits: &DmarcConfig) -> Result<Vec<Payload>, String> {
    let message = MessageParser::new()
        .parse(raw)
        .ok_or("neither a report file (XML, gzip, zip) nor a mail")?;
    if message.parts.is_empty() || message.headers().is_empty() {
        return Err("neither a report file (XML, gzip, zip) nor a mail".into());
    }
    let mut out = Vec::new();
    for (i, part) in message.parts.iter().enumerate() {
        let name = part
            .attachment_name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("part {i}"));
        let data: &[u8] = match &part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => b.as_ref(),
            PartType::Text(t) => {
                let says_xml = part
                    .content_type()
                    .and_then(|ct| ct.subtype())
                    .is_some_and(|s| s.eq_ignore_ascii_case("xml"))
                    || name.to_ascii_lowercase().ends_with(".xml");
                if !says_xml {
                    continue;
                }
                t.as_bytes()
            }
            _ => continue,
        };
        if kind(data) == Kind::Other {
            continue;
        }
        out.extend(unpack(&name, data, limits)?);
    }
    if out.is_empty() {
        let subject = message.subject().unwrap_or("");
        return Err(format!(
            "no aggregate report (XML, gzip or zip part) in this mail{}",
            if subject.is_empty() {
                String::new()
            } else {
                format!(
                    " (Subject: {})",
                    subject.chars().take(80).collect::<String>()
                )
            }
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_bytes() {
        assert_eq!(kind(b"\xef\xbb\xbf  <feedback/>"), Kind::Xml);
        assert_eq!(kind(&[0x1f, 0x8b, 8]), Kind::Gzip);
        assert_eq!(kind(b"PK\x03\x04rest"), Kind::Zip);
        assert_eq!(kind(b"From: a@b\r\n"), Kind::Other);
    }

    #[test]
    fn a_gzip_bomb_is_refused_not_inflated() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(b"<feedback>").unwrap();
        e.write_all(&vec![b' '; 4 << 20]).unwrap();
        let gz = e.finish().unwrap();
        let limits = DmarcConfig {
            max_xml_bytes: 1 << 20,
            ..Default::default()
        };
        let err = extract(&gz, &limits).unwrap_err();
        assert!(err.contains("max_xml_bytes"), "{err}");
    }
}
