//! The human report: one screen per message, the verdict first.

use std::io::{self, Write};

use unspoof_engine::{Action, Analysis, Word};

struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn action(&self, a: Action) -> String {
        let code = match a {
            Action::Accept => "1;32",
            Action::Tag => "1;33",
            Action::Quarantine => "1;35",
            Action::Reject => "1;31",
        };
        self.paint(code, &a.as_str().to_uppercase())
    }
    fn word(&self, w: Word) -> String {
        let code = match w {
            Word::Pass => "32",
            Word::Fail | Word::PermError => "31",
            Word::SoftFail | Word::TempError | Word::Policy => "33",
            Word::Neutral | Word::None => "2",
        };
        self.paint(code, w.as_str())
    }
}

/// Strips terminal control characters from text that came from the message, so a hostile
/// header cannot rewrite the analyst's screen.
fn safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

pub fn report(out: &mut impl Write, name: &str, a: &Analysis, colour: bool) -> io::Result<()> {
    let s = Style { on: colour };
    writeln!(out, "{} {}", s.bold("==="), s.bold(&safe(name)))?;
    let m = &a.message;
    for (label, value) in [
        ("From", &m.from),
        ("Subject", &m.subject),
        ("Date", &m.date),
        ("Message-ID", &m.message_id),
    ] {
        if let Some(v) = value {
            writeln!(out, "  {:<11} {}", format!("{label}:"), safe(v))?;
        }
    }

    writeln!(
        out,
        "\n{} {}",
        s.bold("Verdict:"),
        s.action(a.verdict.action)
    )?;
    // A door defers what the verdict alone would deliver (DNS did not answer, or the engine
    // failed): say so, with the reply every door gives.
    if a.decision.disposition == unspoof_engine::Disposition::Defer {
        writeln!(
            out,
            "  {} every door defers it: {}",
            s.bold("defer:"),
            safe(&a.decision.reply.line(None))
        )?;
    }
    for r in &a.verdict.reasons {
        writeln!(
            out,
            "  - [{}] {} {}",
            r.action,
            safe(&r.message),
            s.dim(&format!("({})", r.code))
        )?;
        for e in &r.evidence {
            writeln!(out, "      {}", s.dim(&safe(e)))?;
        }
    }

    let e = &a.envelope;
    writeln!(out, "\n{}", s.bold("Envelope"))?;
    let inferred = |f: &str| {
        if e.inferred.contains(&f) {
            s.dim(" (inferred from the message)")
        } else {
            String::new()
        }
    };
    writeln!(
        out,
        "  client IP  {}{}",
        e.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        inferred("ip")
    )?;
    writeln!(
        out,
        "  HELO       {}{}",
        safe(e.helo.as_deref().unwrap_or("-")),
        inferred("helo")
    )?;
    writeln!(
        out,
        "  MAIL FROM  <{}>{}",
        safe(e.mail_from.as_deref().unwrap_or("")),
        inferred("mail_from")
    )?;
    if !e.rcpt.is_empty() {
        writeln!(out, "  RCPT TO    {}", safe(&e.rcpt.join(", ")))?;
    }

    let t = &a.trace;
    writeln!(out, "\n{}", s.bold("Hops (newest first)"))?;
    if t.hops.is_empty() {
        writeln!(out, "  (no Received headers)")?;
    }
    for h in &t.hops {
        let mark = if h.trusted {
            s.paint("32", "trusted")
        } else {
            s.paint("33", "claimed")
        };
        let from = [
            h.from_helo.clone(),
            h.from_rdns.clone().map(|r| format!("({r})")),
            h.from_ip.map(|i| format!("[{i}]")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        let delay = h.delay_secs.map(|d| format!(" +{d}s")).unwrap_or_default();
        writeln!(
            out,
            "  {:>2} {mark:<7} from {} by {} {}{}{}",
            h.index,
            safe(if from.is_empty() { "?" } else { &from }),
            safe(h.by.as_deref().unwrap_or("?")),
            safe(h.date.as_deref().unwrap_or("")),
            delay,
            h.tls
                .as_deref()
                .map(|t| format!(" tls={}", safe(t)))
                .unwrap_or_default(),
        )?;
        if !h.parsed {
            writeln!(
                out,
                "     {}",
                s.dim(&format!("unparsed: {}", safe(&h.raw)))
            )?;
        }
    }
    match &t.origin {
        Some(o) => writeln!(
            out,
            "  origin: {} helo {} rdns {}",
            s.bold(&o.ip.to_string()),
            safe(o.helo.as_deref().unwrap_or("-")),
            safe(o.rdns.as_deref().unwrap_or("-")),
        )?,
        None => writeln!(out, "  origin: unknown")?,
    }

    let au = &a.auth;
    writeln!(out, "\n{}", s.bold("Authentication"))?;
    if !au.checked {
        writeln!(
            out,
            "  not checked: {} ({})",
            safe(au.not_checked.as_deref().unwrap_or("no reason given")),
            safe(&a.dns)
        )?;
        return Ok(());
    }
    for spf in [&au.spf, &au.spf_helo] {
        writeln!(
            out,
            "  SPF {:<8} {} for {}{}",
            spf.identity,
            s.word(spf.result),
            safe(&spf.domain),
            spf.mechanism
                .as_deref()
                .map(|m| format!(": {}", safe(m)))
                .unwrap_or_default()
        )?;
    }
    if au.dkim.is_empty() {
        writeln!(out, "  DKIM         {}", s.word(Word::None))?;
    }
    for d in &au.dkim {
        writeln!(
            out,
            "  DKIM         {} d={} s={} {}{}",
            s.word(d.result),
            safe(&d.domain),
            safe(&d.selector),
            d.algorithm.unwrap_or(""),
            d.reason
                .as_deref()
                .map(|r| format!(": {}", safe(r)))
                .unwrap_or_default()
        )?;
    }
    let dm = &au.dmarc;
    writeln!(
        out,
        "  DMARC        {} for {} (policy {}{}){}",
        s.word(dm.result),
        safe(&dm.domain),
        dm.policy.unwrap_or("-"),
        if dm.aligned.is_empty() {
            String::new()
        } else {
            format!(", aligned: {}", dm.aligned.join("+"))
        },
        dm.reason
            .as_deref()
            .map(|r| format!(": {}", safe(r)))
            .unwrap_or_default()
    )?;
    let sealers: Vec<String> = au
        .arc
        .sealers
        .iter()
        .map(|x| format!("i={} {} cv={}", x.instance, safe(&x.domain), x.cv))
        .collect();
    writeln!(
        out,
        "  ARC          {}{}",
        s.word(au.arc.result),
        if sealers.is_empty() {
            String::new()
        } else {
            format!(" [{}]", sealers.join("; "))
        }
    )?;
    if let Some(sig) = &a.signature {
        let f = &sig.found;
        writeln!(
            out,
            "  {:<12} {} {:?} by {}{}{}",
            if f.form.method() == "smime" {
                "S/MIME"
            } else {
                "OpenPGP"
            },
            s.word(sig.result),
            sig.standing,
            safe(&if f.identities.is_empty() {
                "no identity".to_string()
            } else {
                f.identities.join(", ")
            }),
            f.fingerprint
                .as_deref()
                .map(|k| format!(" key {}", safe(k)))
                .unwrap_or_default(),
            f.detail
                .as_deref()
                .map(|d| format!(": {}", safe(d)))
                .unwrap_or_default()
        )?;
    }
    writeln!(out, "  {}", s.dim(&format!("DNS: {}", safe(&a.dns))))?;
    Ok(())
}
