//! What users see (issue 3, item 3): `unspoof_engine::tag` on real messages.
//!
//! Every fixture in `tests/fixtures/tag/` (sources in SOURCES.md) is tagged and parsed back
//! with mail-parser: the banner is in each displayed text part and nowhere else, the decoded
//! text of those parts is the original's with only the banner inserted, every other part is
//! byte-identical, the MIME tree (types, boundaries) is unchanged, the subject carries the
//! prefix once (also after tagging twice) and `X-Unspoof-Verdict` is there. A sweep over the
//! shared corpora (skipped when `../shared/testdata` is absent) checks the same invariants on
//! every message.

use std::path::{Path, PathBuf};

use mail_parser::{MessageParser, MimeHeaders, PartType};
use unspoof_engine::{
    Action, Analysis, Dns, Engine, Envelope, Policy, Reason, Verdict,
    message::to_crlf,
    policy::TagSettings,
    tag::{annotate, banner_text, rewrite, tag_message, verdict_header},
};

const AUTHSERV: &str = "mx.unspoof.test";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tag")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real engine (offline DNS) on the message, then the verdict replaced by `tag` with the
/// engine's own reasons plus `extra` (the tag code must cope with any reasons).
async fn analysis(raw: &[u8], extra: Vec<Reason>) -> Analysis {
    let engine = Engine::new(Policy::default(), Dns::offline());
    let mut a = engine.evaluate(raw, &Envelope::default()).await;
    let mut reasons = extra;
    reasons.extend(a.verdict.reasons.clone());
    // Whatever action each reason asks for, the verdict under test is `tag`.
    a.verdict = Verdict {
        action: Action::Tag,
        reasons,
    };
    a
}

/// The length of an mbox `From ` line the message starts with (kept first in the output).
fn mbox_line(raw: &[u8]) -> usize {
    if unspoof_engine::message::is_mbox(raw) {
        memchr::memchr(b'\n', raw).map_or(raw.len(), |i| i + 1)
    } else {
        0
    }
}

/// Reasons that make the verdict `tag`, one of them with text a hostile sender controls
/// (markup, a Cyrillic letter, a right-to-left override).
fn tag_reasons() -> Vec<Reason> {
    vec![
        Reason::new(
            "reply_to.diversion",
            Action::Tag,
            "replies go to billing@examp1e.net, another organisation than the sender",
        ),
        // Asks for more than the verdict: named first in the banner.
        Reason::new(
            "lookalike.domain",
            Action::Reject,
            "the sender domain p\u{430}ypal.com looks like paypal.com <b>\"&'\u{202E}",
        ),
    ]
}

/// Reasons whose text is plain ASCII: the banner fits every charset as it is.
fn ascii_reasons() -> Vec<Reason> {
    vec![
        Reason::new(
            "spf.fail",
            Action::Tag,
            "SPF failed for the sending domain example.net",
        ),
        Reason::new(
            "reply_to.diversion",
            Action::Tag,
            "replies go to billing@examp1e.net, another organisation than the sender",
        ),
    ]
}

fn html_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("&#x{:X};", c as u32)),
        }
    }
    out
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `new` is `old` with one piece inserted: returns (offset in `old`, the piece).
fn insertion<'a>(old: &str, new: &'a str) -> Option<(usize, &'a str)> {
    let mut p = old
        .bytes()
        .zip(new.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while !old.is_char_boundary(p) || !new.is_char_boundary(p) {
        p -= 1;
    }
    let max_s = old.len() - p;
    let mut s = old
        .bytes()
        .rev()
        .zip(new.bytes().rev())
        .take(max_s)
        .take_while(|(a, b)| a == b)
        .count();
    while !new.is_char_boundary(new.len() - s) {
        s -= 1;
    }
    (p + s == old.len() && new.len() > old.len()).then(|| (p, &new[p..new.len() - s]))
}

/// Where the HTML banner belongs: after `<body ...>`, else `</head>`, else `<html ...>`, else
/// at the start; `None` when that is not clear-cut for a simple search (a `>` inside a quoted
/// attribute of the tag).
fn html_at(html: &str) -> Option<usize> {
    let lower = html.to_ascii_lowercase();
    for tag in ["<body", "</head", "<html"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(tag).map(|i| from + i) {
            let next = lower.as_bytes().get(i + tag.len()).copied();
            if matches!(
                next,
                Some(b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>' | 0x0c)
            ) {
                let end = i + lower[i..].find('>')? + 1;
                return (!lower[i..end].contains(['"', '\''])).then_some(end);
            }
            from = i + 1;
        }
    }
    Some(0)
}

/// One part as the tests compare it.
#[derive(Debug, PartialEq)]
struct Shape {
    ctype: String,
    boundary: Option<String>,
    children: Vec<u32>,
    attachment: bool,
}

fn shapes(m: &mail_parser::Message<'_>) -> Vec<Shape> {
    m.parts
        .iter()
        .map(|p| Shape {
            ctype: p
                .content_type()
                .map(|c| {
                    format!(
                        "{}/{}",
                        c.ctype().to_ascii_lowercase(),
                        c.subtype().unwrap_or("").to_ascii_lowercase()
                    )
                })
                // No Content-Type is text/plain (RFC 2045 5.2).
                .unwrap_or_else(|| "text/plain".into()),
            boundary: p
                .content_type()
                .and_then(|c| c.attribute("boundary"))
                .map(str::to_string),
            children: match &p.body {
                PartType::Multipart(c) => c.clone(),
                _ => Vec::new(),
            },
            attachment: p
                .content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment")),
        })
        .collect()
}

/// The decoded text of a text part and whether it is HTML. mail-parser leaves a base64 or
/// quoted-printable part undecoded when its multipart has no close delimiter (common in old
/// spam; `is_encoding_problem`): then its own decoders are applied to the part's bytes here.
fn part_text(raw: &[u8], p: &mail_parser::MessagePart<'_>) -> Option<(String, bool)> {
    let (text, html) = match &p.body {
        PartType::Text(t) => (t.to_string(), false),
        PartType::Html(t) => (t.to_string(), true),
        _ => return None,
    };
    let html = html
        || p.content_type()
            .and_then(|c| c.subtype())
            .is_some_and(|s| s.eq_ignore_ascii_case("html"));
    if !p.is_encoding_problem {
        return Some((text, html));
    }
    let body = &raw[p.offset_body as usize..p.offset_end as usize];
    let bytes = match p
        .content_transfer_encoding()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("base64") => mail_parser::decoders::base64::base64_decode(body)?,
        Some("quoted-printable") => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body)?
        }
        _ => return Some((text, html)),
    };
    let decoded = match p
        .content_type()
        .and_then(|c| c.attribute("charset"))
        .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()))
    {
        Some(decode) => decode(&bytes),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    Some((decoded, html))
}

/// What one tagged message looked like, for the corpus sweep's counts.
#[derive(Debug, Default)]
struct Outcome {
    bannered: usize,
}

/// Checks `tagged` against `original` (both CRLF). `expected` lists the mail-parser part
/// indices that must carry the banner; `None` accepts whichever text parts got it (the corpus
/// sweep) but still checks that all others are untouched.
fn check(
    name: &str,
    original: &[u8],
    tagged: &[u8],
    a: &Analysis,
    settings: &TagSettings,
    expected: Option<&[usize]>,
) -> Outcome {
    let orig = MessageParser::default()
        .parse(original)
        .unwrap_or_else(|| panic!("{name}: original does not parse"));
    let new = MessageParser::default()
        .parse(tagged)
        .unwrap_or_else(|| panic!("{name}: tagged message does not parse"));

    // Our two fields on top, a single verdict.
    let ar = a.authentication_results(AUTHSERV);
    let verdict = verdict_header(a);
    let skip = mbox_line(original);
    assert_eq!(&tagged[..skip], &original[..skip]);
    assert!(
        tagged[skip..].starts_with(format!("{ar}{verdict}").as_bytes()),
        "{name}: header fields not on top"
    );
    let verdicts: Vec<_> = new
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("X-Unspoof-Verdict"))
        .collect();
    assert_eq!(verdicts.len(), 1, "{name}: X-Unspoof-Verdict count");
    assert!(
        verdicts[0]
            .value()
            .as_text()
            .unwrap_or("")
            .starts_with("tag"),
        "{name}"
    );

    // Subject: the prefix once, the rest as before.
    let want = match orig.subject() {
        Some(s) if !s.trim().is_empty() => format!("{} {}", settings.subject_prefix, s.trim()),
        _ => settings.subject_prefix.clone(),
    };
    assert_eq!(
        new.subject().map(str::trim),
        Some(want.as_str()),
        "{name}: subject"
    );

    // Same tree.
    let (so, sn) = (shapes(&orig), shapes(&new));
    assert_eq!(so, sn, "{name}: MIME structure changed");

    let plain = collapse(&banner_text(a));
    let html =
        collapse(&html_escape(&banner_text(a)).replace("Caution:", "<strong>Caution:</strong>"));
    let mut out = Outcome::default();
    let mut got = Vec::new();
    for (i, (po, pn)) in orig.parts.iter().zip(&new.parts).enumerate() {
        let raw_o = &original[po.offset_header as usize..po.offset_end as usize];
        let raw_n = &tagged[pn.offset_header as usize..pn.offset_end as usize];
        if raw_o == raw_n || matches!(po.body, PartType::Multipart(_)) {
            continue; // a multipart changes with its children, which are compared one by one
        }
        if i == 0 {
            // A single-part message: its header is the message header; compare the bodies.
            let (bo, bn) = (po.offset_body as usize, pn.offset_body as usize);
            if original[bo..po.offset_end as usize] == tagged[bn..pn.offset_end as usize] {
                continue;
            }
        }
        let ((to, is_html), (tn, _)) = match (part_text(original, po), part_text(tagged, pn)) {
            (Some(o), Some(n)) => (o, n),
            _ => panic!("{name}: part {i} ({}) changed", so[i].ctype),
        };
        assert!(!so[i].attachment, "{name}: attachment {i} changed");
        let (to, tn) = (to.as_str(), tn.as_str());
        // Where the banner must be: text at the start, HTML right after <body ...> when
        // there is one; elsewhere (no body tag) any single insertion will do.
        // (After a byte order mark.)
        let start = if to.starts_with('\u{FEFF}') { 3 } else { 0 };
        let at = if is_html {
            html_at(to).map(|a| a.max(start))
        } else {
            Some(start)
        };
        let piece = match at {
            Some(at) => {
                let tail = &to[at..];
                assert!(
                    tn.starts_with(&to[..at]) && tn.ends_with(tail) && tn.len() > to.len(),
                    "{name}: part {i}: not the original with the banner at {at}"
                );
                &tn[at..tn.len() - tail.len()]
            }
            None => {
                insertion(to, tn)
                    .unwrap_or_else(|| panic!("{name}: part {i}: not the original plus a banner"))
                    .1
            }
        };
        let piece = collapse(piece);
        if is_html {
            // (Without a known spot the insertion found may be shifted by a character.)
            if at.is_some() {
                assert!(
                    piece.starts_with("<div style="),
                    "{name}: part {i}: {piece}"
                );
                assert!(piece.ends_with("</div>"), "{name}: part {i}: {piece}");
            }
            assert!(
                piece.contains(&html),
                "{name}: part {i}: {piece}\n---\n{html}"
            );
        } else {
            // Text in a part whose charset is unknown gets '?' for what ASCII cannot say.
            let ascii: String = plain
                .chars()
                .map(|c| if c.is_ascii() { c } else { '?' })
                .collect();
            assert!(
                piece == plain || piece == ascii,
                "{name}: part {i}: {piece}"
            );
        }
        got.push(i);
        out.bannered += 1;
    }
    if let Some(expected) = expected {
        assert_eq!(got, expected, "{name}: parts with the banner");
    }
    out
}

/// Tags a fixture, checks it, tags it again and checks the subject and verdict stay single.
async fn fixture_case(name: &str, reasons: Vec<Reason>, expected: &[usize]) -> Vec<u8> {
    let original = to_crlf(&fixture(name)).into_owned();
    let a = analysis(&original, reasons).await;
    assert_eq!(a.verdict.action, Action::Tag);
    let settings = TagSettings::default();
    let tagged = tag_message(&original, &a, &settings, AUTHSERV);
    check(name, &original, &tagged, &a, &settings, Some(expected));

    let twice = tag_message(&tagged, &a, &settings, AUTHSERV);
    let m = MessageParser::default().parse(&twice).unwrap();
    assert_eq!(
        m.subject()
            .unwrap_or("")
            .matches(&settings.subject_prefix)
            .count(),
        1,
        "{name}: prefix once after tagging twice"
    );
    assert_eq!(
        m.headers()
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("X-Unspoof-Verdict"))
            .count(),
        1
    );
    // rewrite() is tag_message() without our two fields.
    let bare = rewrite(&original, &a, &settings);
    let top = format!(
        "{}{}",
        a.authentication_results(AUTHSERV),
        verdict_header(&a)
    );
    let skip = mbox_line(&original);
    assert_eq!(&tagged[..skip], &bare[..skip]);
    assert_eq!(
        &tagged[skip + top.len()..],
        &bare[skip..],
        "{name}: rewrite"
    );
    tagged
}

#[tokio::test]
async fn single_part_text() {
    // text/plain us-ascii 7bit, LF line endings on disk.
    let out = fixture_case("single-text.eml", tag_reasons(), &[0]).await;
    // The Cyrillic letter does not fit us-ascii: the ASCII text is relabelled UTF-8 and
    // carried as quoted-printable.
    let s = String::from_utf8_lossy(&out);
    assert!(s.contains("Content-Type: text/plain; charset=utf-8"), "{s}");
    assert!(s.contains("Content-Transfer-Encoding: quoted-printable"));
    assert!(out.is_ascii());
    // With ASCII reasons nothing but the body start changes.
    fixture_case("single-text.eml", ascii_reasons(), &[0]).await;
}

#[tokio::test]
async fn alternative_quoted_printable_windows_1252() {
    // multipart/alternative, text/plain + text/html, both quoted-printable windows-1252 with
    // some 2,000 non-ASCII characters; the Subject is windows-1252 base64 encoded-words.
    let out = fixture_case("alternative-qp-windows-1252.eml", tag_reasons(), &[1, 2]).await;
    let s = String::from_utf8_lossy(&out);
    // The charset stays (the plain part's banner needs U+0430: converted to UTF-8; the HTML
    // banner is ASCII with character references, so that part keeps windows-1252).
    assert_eq!(s.matches("charset=utf-8").count(), 1, "{s}");
    assert!(
        s.contains("charset=\"Windows-1252\"")
            || s.contains("charset=Windows-1252")
            || s.contains("charset=windows-1252")
    );
    for line in s.split("\r\n").skip_while(|l| !l.is_empty()) {
        assert!(line.len() <= 998);
    }
    let out = fixture_case("alternative-qp-windows-1252.eml", ascii_reasons(), &[1, 2]).await;
    assert!(!String::from_utf8_lossy(&out).contains("charset=utf-8"));
    fixture_case("alternative-qp-iso-8859-1.eml", tag_reasons(), &[1, 2]).await;
}

#[tokio::test]
async fn base64_iso_8859_1_parts() {
    // multipart/mixed with one text/plain (resp. text/html) part, base64, iso-8859-1.
    for (name, reasons) in [
        ("mixed-base64-iso-8859-1-text.eml", tag_reasons()),
        ("mixed-base64-iso-8859-1-text.eml", ascii_reasons()),
        ("mixed-base64-iso-8859-1-html.eml", tag_reasons()),
    ] {
        let out = fixture_case(name, reasons, &[1]).await;
        for line in out.split(|&b| b == b'\n').skip_while(|l| *l != b"\r") {
            if line.len() > 60
                && line
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=\r".contains(b))
            {
                assert!(line.len() <= 77, "{name}: base64 line of {}", line.len());
            }
        }
    }
    // A reason with a Latin-1 letter is written in ISO-8859-1, the charset stays.
    let latin = vec![Reason::new(
        "x",
        Action::Tag,
        "caf\u{e9}.example looks like cafe.example",
    )];
    let out = fixture_case("mixed-base64-iso-8859-1-text.eml", latin, &[1]).await;
    assert!(!String::from_utf8_lossy(&out).contains("charset=utf-8"));
}

#[tokio::test]
async fn attachments_stay_byte_identical() {
    // mixed( alternative(plain QP, html QP), three base64 attachments ): both alternatives.
    fixture_case("mixed-alternative-attachments.eml", tag_reasons(), &[2, 3]).await;
    // mixed( text/plain 8bit, text/plain attachment 8bit ): only the first.
    fixture_case("mixed-text-attachment.eml", tag_reasons(), &[1]).await;
    // related( html QP windows-1252, four inline images ): the root only.
    fixture_case("related-html-images.eml", tag_reasons(), &[1]).await;
}

#[tokio::test]
async fn accept_gets_only_the_two_fields() {
    let original = to_crlf(&fixture("mixed-alternative-attachments.eml")).into_owned();
    let engine = Engine::new(Policy::default(), Dns::offline());
    let mut a = engine.evaluate(&original, &Envelope::default()).await;
    // Whatever the engine found, an accept verdict.
    a.verdict.action = Action::Accept;
    let top = format!(
        "{}{}",
        a.authentication_results(AUTHSERV),
        verdict_header(&a)
    );
    assert!(
        top.contains("X-Unspoof-Verdict: accept; reasons=auth.not_checked"),
        "{top}"
    );
    for out in [
        annotate(&original, &a, AUTHSERV),
        tag_message(&original, &a, &TagSettings::default(), AUTHSERV),
    ] {
        assert_eq!(out, [top.as_bytes(), &original].concat());
    }
    // annotate() on a tag verdict: still only the fields.
    let t = analysis(&original, tag_reasons()).await;
    let out = annotate(&original, &t, AUTHSERV);
    let top = format!(
        "{}{}",
        t.authentication_results(AUTHSERV),
        verdict_header(&t)
    );
    assert_eq!(out, [top.as_bytes(), &original].concat());
}

#[tokio::test]
async fn banner_off_and_custom_prefix() {
    let original = to_crlf(&fixture("alternative-qp-windows-1252.eml")).into_owned();
    let a = analysis(&original, tag_reasons()).await;
    let settings = TagSettings {
        subject_prefix: "[EXTERNAL?]".into(),
        banner: false,
    };
    let out = tag_message(&original, &a, &settings, AUTHSERV);
    let m = MessageParser::default().parse(&out).unwrap();
    let o = MessageParser::default().parse(&original[..]).unwrap();
    assert_eq!(
        m.subject().unwrap(),
        format!("[EXTERNAL?] {}", o.subject().unwrap().trim())
    );
    // Only the Subject field changed below our two fields.
    let top = format!(
        "{}{}",
        a.authentication_results(AUTHSERV),
        verdict_header(&a)
    );
    let body_at = |m: &[u8]| memchr::memmem::find(m, b"\r\n\r\n").unwrap();
    assert_eq!(
        &out[top.len() + body_at(&out[top.len()..])..],
        &original[body_at(&original)..]
    );
}

#[tokio::test]
async fn broken_mime_gets_headers_and_subject_but_no_banner() {
    // The attachments fixture with a part smuggled in after the close delimiter: parsers
    // that stop there and parsers that read on see different messages.
    let mut original = to_crlf(&fixture("mixed-alternative-attachments.eml")).into_owned();
    let boundary = "inmixqHeQn10uIPzqwbzyHDVyUpEIoRqK1VrJDrJ516M";
    assert!(
        String::from_utf8_lossy(&original).contains(&format!("--{boundary}--")),
        "fixture boundary"
    );
    original.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: text/html\r\n\r\n<p>smuggled</p>\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    let a = analysis(&original, tag_reasons()).await;
    let out = tag_message(&original, &a, &TagSettings::default(), AUTHSERV);
    let no_banner = TagSettings {
        banner: false,
        ..TagSettings::default()
    };
    assert_eq!(out, tag_message(&original, &a, &no_banner, AUTHSERV));
    let m = MessageParser::default().parse(&out).unwrap();
    assert!(m.subject().unwrap().starts_with("[SUSPICIOUS] "));
    assert!(!String::from_utf8_lossy(&out).contains("Caution"));
}

// ---------------------------------------------------------------------------------------------
// The corpora

/// The shared test data (absent: a skip line, or a failure under `CI=true`).
fn testdata() -> Option<PathBuf> {
    unspoof_testkit::testdata("tag corpus sweep", "")
}

/// Every message of the SpamAssassin and phishing-pot corpora and the Nazario mbox: tagging
/// keeps the structure and attachments, and puts the banner only into displayed text as a
/// pure insertion. Prints how many got a banner.
#[tokio::test]
async fn corpus_sweep() {
    let Some(root) = testdata() else {
        return;
    };
    let mut paths = Vec::new();
    paths.extend(unspoof_testkit::eml_files(
        &root.join("corpus-spamassassin"),
    ));
    paths.extend(unspoof_testkit::eml_files(
        &root.join("corpus-phishing-pot"),
    ));
    let mut messages: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();
    let mbox = root.join("corpus-nazario/phishing0.mbox");
    if let Ok(raw) = std::fs::read(&mbox) {
        for (i, m) in unspoof_engine::message::split_mbox(&raw)
            .into_iter()
            .enumerate()
        {
            messages.push((format!("{}#{i}", mbox.display()), m));
        }
    }
    let settings = TagSettings::default();
    let (mut with_banner, mut without) = (0, 0);
    for (name, raw) in &messages {
        let original = to_crlf(raw).into_owned();
        let a = analysis(&original, tag_reasons()).await;
        let tagged = tag_message(&original, &a, &settings, AUTHSERV);
        if MessageParser::default().parse(&original[..]).is_none() {
            continue;
        }
        let o = check(name, &original, &tagged, &a, &settings, None);
        if o.bannered > 0 {
            with_banner += 1;
        } else {
            without += 1;
            if std::env::var_os("TAG_SWEEP_LIST").is_some() {
                eprintln!("no banner: {name}");
            }
        }
    }
    eprintln!(
        "tag corpus sweep: {} messages, {with_banner} with a banner, {without} without (no text part, attachment only, or MIME not safe to change)",
        messages.len()
    );
    assert!(
        with_banner * 10 >= messages.len() * 9,
        "too few banners: {with_banner}"
    );
}

/// Mutated fixtures (bytes flipped to MIME-significant characters, lines cut, slices
/// repeated): no panic, and a message without a banner is exactly the banner-less tagging.
#[tokio::test]
async fn mutations_never_panic_or_corrupt() {
    let names = [
        "single-text.eml",
        "alternative-qp-windows-1252.eml",
        "alternative-qp-iso-8859-1.eml",
        "mixed-base64-iso-8859-1-text.eml",
        "mixed-base64-iso-8859-1-html.eml",
        "mixed-alternative-attachments.eml",
        "mixed-text-attachment.eml",
        "related-html-images.eml",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    let settings = TagSettings::default();
    let no_banner = TagSettings {
        banner: false,
        ..TagSettings::default()
    };
    let mut bannered = 0;
    for round in 0..400 {
        let original = to_crlf(&fixture(names[round % names.len()])).into_owned();
        let a = analysis(&original, tag_reasons()).await;
        let mut m = original.clone();
        for _ in 0..1 + next(4) {
            let at = next(m.len());
            match next(4) {
                0 => m[at] = b"-\r\n=\";: \t<>"[next(11)],
                1 => m.truncate(at),
                2 => {
                    let len = next(200).min(m.len() - at);
                    let piece = m[at..at + len].to_vec();
                    let to = next(m.len());
                    m.splice(to..to, piece);
                }
                _ => {
                    m.remove(at.min(m.len().saturating_sub(1)));
                }
            }
            if m.is_empty() {
                m.push(b'x');
            }
        }
        let out = tag_message(&m, &a, &settings, AUTHSERV);
        let plain = tag_message(&m, &a, &no_banner, AUTHSERV);
        if out != plain {
            bannered += 1;
            assert!(out.len() > plain.len(), "round {round}");
        }
    }
    eprintln!("tag mutations: 400 mutated messages, {bannered} with a banner");
}

/// The decision's edits (issue 14: what the gateway applies and the milter sends one to one)
/// make exactly the message `tag_message` makes, on every fixture: the Subject, the MIME fields
/// a banner changes or adds, the banner body, our two fields on top.
#[tokio::test]
async fn the_decision_edits_make_the_tagged_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tag");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".eml"))
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    let mut policy = Policy::default();
    policy.hostname = AUTHSERV.into();
    let mut banners = 0;
    // Besides the fixtures: a single part with no MIME fields at all (the banner adds them at
    // the end of the section), no Subject (one is inserted), a stale verdict field and a
    // forged result (removed, so `tag_message` is compared on the message without them).
    let bare = b"X-Unspoof-Verdict: accept\r\nAuthentication-Results: mx.unspoof.test; dmarc=pass\r\nFrom: a@b.example\r\nTo: c@d.example\r\n\r\nplain text\r\n".to_vec();
    let mut inputs: Vec<(String, Vec<u8>)> = vec![("bare".into(), bare)];
    for name in &names {
        inputs.push((name.clone(), to_crlf(&fixture(name)).into_owned()));
    }
    for (name, raw) in &inputs {
        let raw = raw.clone();
        let a = analysis(&raw, tag_reasons()).await;
        let d = unspoof_engine::decision::decide(&raw, &a, &policy);
        assert_eq!(d.disposition, unspoof_engine::Disposition::Tag, "{name}");
        banners += usize::from(d.body.is_some());
        if name == "bare" {
            use unspoof_engine::HeaderEdit::*;
            let kinds: Vec<String> = d
                .edits
                .iter()
                .map(|e| match e {
                    Remove { name, .. } => format!("-{name}"),
                    Change { name, .. } => format!("~{name}"),
                    Insert { name, .. } => format!("^{name}"),
                    Append { name, .. } => format!("+{name}"),
                })
                .collect();
            assert_eq!(
                kinds,
                [
                    "-Authentication-Results",
                    "-X-Unspoof-Verdict",
                    "+MIME-Version",
                    "+Content-Type",
                    "+Content-Transfer-Encoding",
                    "^Subject",
                    "^X-Unspoof-Verdict",
                    "^Authentication-Results"
                ]
            );
        }
        let made = unspoof_engine::decision::apply(&raw, &d.edits, d.body.as_deref());
        let mut clean = raw.clone();
        unspoof_engine::message::auth_results::remove_forged(&mut clean, AUTHSERV);
        let want = tag_message(&clean, &a, &policy.tag, AUTHSERV);
        assert!(
            made == want,
            "{name}: edits {:#?}\n--- made\n{}\n--- want\n{}",
            d.edits,
            String::from_utf8_lossy(&made),
            String::from_utf8_lossy(&want)
        );
    }
    assert!(banners >= 3, "the fixtures exercise banners: {banners}");
}
