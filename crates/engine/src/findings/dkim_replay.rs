//! DKIM replay and extension: a valid signature on a message that is not what the signer sent.
//!
//! A DKIM signature proves who signed some header fields and some body bytes; it does not say
//! when the message may be sent, to whom, or that nothing was added. Replay campaigns take one
//! message a large sender signed (often to an address of their own) and send it again to many;
//! extension attacks add what the signature leaves out. Only signatures that passed are read
//! (their tags parsed again from the DKIM-Signature field by mail-auth's parser and matched to
//! the verification result by `d=`, `s=` and the start of `b=`); a failing one proves nothing
//! to begin with.
//!
//! | code | when | action |
//! | --- | --- | --- |
//! | `dkim.old_signature` | a passing signature's `t=` is more than `[dkim_replay] max_signature_age_hours` before the message reached us (the reference time of the trace: the front door's arrival time, else the topmost Received date) | `replay_action` |
//! | `dkim.recipients_not_addressed` | a signed message from a bulk path: a passing signature, bulk headers (`List-Unsubscribe`, or `Precedence: bulk`/`list`/`junk`) without a `List-Id` (a mailing list addresses its list, not its members), no passing signature of the organisation whose SPF passed for MAIL FROM (the signer's own path), no trusted ARC sealer; and none of the SMTP recipients appears in To or Cc | `replay_action` |
//! | `dkim.unsigned_field` | one of From, Subject, Reply-To, To, Date appears more times than a passing signature's `h=` names it (the signer did not oversign, and an instance was added), or appears once, is not in `h=`, and sits above the signature (added after signing) | `extension_action` |
//! | `dkim.body_extended` | a signature has `l=` and the body holds more than white space after that many octets; the signature passed, or mail-auth set it aside for that very reason (it reports such a signature `neutral`, "insecure l= tag", without checking it) | `extension_action` |
//!
//! Each code is reported once, naming every signature and field it concerns. Forwarded mail
//! (the recipient differs from To) is why the recipient signal needs bulk headers and a path
//! that is not the signer's, and why its action defaults to `tag`.

use mail_auth::dkim::Signature;

use super::Context;
use crate::{
    auth::{DkimCheck, Word, b64_prefix},
    domain::same_organisation,
    verdict::Reason,
};

/// The fields a message has one of (RFC 5322 3.6) and a reader relies on.
pub const SINGLE_INSTANCE_FIELDS: [&str; 5] = ["From", "Subject", "Reply-To", "To", "Date"];

/// Most DKIM-Signature fields read per message (a message with thousands is read on these).
pub const MAX_SIGNATURES_READ: usize = 16;

/// A signature that passed, with its tags and where its field sits.
struct Passing<'c> {
    check: &'c DkimCheck,
    sig: Signature,
    /// Index of its DKIM-Signature field in the header section.
    position: usize,
}

fn passing<'c>(ctx: &'c Context<'_>) -> Vec<Passing<'c>> {
    let mut out = Vec::new();
    for (position, h) in ctx
        .headers
        .fields
        .iter()
        .enumerate()
        .filter(|(_, h)| h.is("DKIM-Signature"))
        .take(MAX_SIGNATURES_READ)
    {
        let Ok(sig) = Signature::parse(h.value) else {
            continue;
        };
        let b = b64_prefix(&sig.b);
        let Some(check) = ctx.auth.dkim.iter().find(|c| {
            c.result == Word::Pass
                && c.domain.eq_ignore_ascii_case(&sig.d)
                && c.selector == sig.s
                && c.b.as_deref() == Some(b.as_str())
        }) else {
            continue;
        };
        out.push(Passing {
            check,
            sig,
            position,
        });
    }
    out
}

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    if !ctx
        .auth
        .dkim
        .iter()
        .any(|d| d.result == Word::Pass || refused_for_length(d))
    {
        return;
    }
    let signatures = passing(ctx);
    if !signatures.is_empty() {
        old_signature(ctx, &signatures, out);
        recipients_not_addressed(ctx, &signatures, out);
        unsigned_fields(ctx, &signatures, out);
    }
    body_extended(ctx, &signatures, out);
}

fn name(p: &Passing<'_>) -> String {
    format!("d={} s={}", p.check.domain, p.check.selector)
}

fn old_signature(ctx: &Context<'_>, sigs: &[Passing<'_>], out: &mut Vec<Reason>) {
    let hours = ctx.policy.dkim_replay.max_signature_age_hours;
    let Some(now) = ctx.trace.reference_time else {
        return;
    };
    if hours == 0 {
        return;
    }
    let limit = i64::try_from(hours.saturating_mul(3600)).unwrap_or(i64::MAX);
    let old: Vec<String> = sigs
        .iter()
        .filter(|p| p.sig.t > 0)
        .filter_map(|p| {
            let t = i64::try_from(p.sig.t).ok()?;
            let age = now.checked_sub(t)?;
            (age > limit).then(|| format!("{} (t={}, {} h before arrival)", name(p), t, age / 3600))
        })
        .collect();
    if old.is_empty() {
        return;
    }
    out.push(Reason::new(
        "dkim.old_signature",
        ctx.policy.dkim_replay.replay_action,
        format!(
            "the message carries a valid DKIM signature made more than {hours} h before it reached us: a signed message kept and sent again ({})",
            old.join("; ")
        ),
    ));
}

/// Whether the message has bulk headers and is not a mailing list's.
fn is_bulk(ctx: &Context<'_>) -> bool {
    let h = ctx.headers;
    if h.first("List-Id").is_some() {
        return false;
    }
    h.first("List-Unsubscribe").is_some()
        || h.first("Precedence").is_some_and(|p| {
            let v = p.value_unfolded().trim().to_ascii_lowercase();
            matches!(v.as_str(), "bulk" | "list" | "junk")
        })
}

fn recipients_not_addressed(ctx: &Context<'_>, sigs: &[Passing<'_>], out: &mut Vec<Reason>) {
    let rcpt = &ctx.envelope.rcpt;
    if rcpt.is_empty() || !is_bulk(ctx) {
        return;
    }
    // The signer's own path: SPF passed for MAIL FROM in a signer's organisation.
    let spf = &ctx.auth.spf;
    if spf.result == Word::Pass
        && sigs
            .iter()
            .any(|p| same_organisation(&p.check.domain, &spf.domain))
    {
        return;
    }
    let arc = &ctx.auth.arc;
    if arc.result == Word::Pass
        && arc
            .sealers
            .iter()
            .any(|s| ctx.policy.is_trusted_sealer(&s.domain))
    {
        return;
    }
    let addressed: String = ["To", "Cc"]
        .iter()
        .flat_map(|n| ctx.headers.all(n))
        .map(|h| h.value_unfolded().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    if rcpt.iter().any(|r| {
        let r = r.trim().to_ascii_lowercase();
        !r.is_empty() && addressed.contains(&r)
    }) {
        return;
    }
    let signers: Vec<String> = sigs.iter().map(name).collect();
    out.push(
        Reason::new(
            "dkim.recipients_not_addressed",
            ctx.policy.dkim_replay.replay_action,
            format!(
                "bulk mail signed by {} reached {} recipient(s), none of whom is in its To or Cc, by a path that is not the signer's: a signed message sent again to others",
                signers.join(", "),
                rcpt.len()
            ),
        )
        .with_evidence(format!("RCPT TO: {}", rcpt.join(", ")))
        .with_evidence(format!("To/Cc: {addressed}")),
    );
}

fn unsigned_fields(ctx: &Context<'_>, sigs: &[Passing<'_>], out: &mut Vec<Reason>) {
    let mut found: Vec<String> = Vec::new();
    let mut evidence: Vec<String> = Vec::new();
    for p in sigs {
        for field in SINGLE_INSTANCE_FIELDS {
            let present: Vec<usize> = ctx
                .headers
                .fields
                .iter()
                .enumerate()
                .filter(|(_, h)| h.is(field))
                .map(|(i, _)| i)
                .collect();
            let covered = p
                .sig
                .h
                .iter()
                .filter(|h| h.trim().eq_ignore_ascii_case(field))
                .count();
            let finding = match present.len() {
                0 => None,
                n if n > covered && n >= 2 => Some(format!(
                    "{field} appears {n} times, the signature {} covers {covered}",
                    name(p)
                )),
                1 if covered == 0 && present[0] < p.position => Some(format!(
                    "{field} sits above the signature {} and is not among the fields it signs",
                    name(p)
                )),
                _ => None,
            };
            if let Some(f) = finding {
                for &i in &present {
                    let h = &ctx.headers.fields[i];
                    let e = format!("{}:{}", String::from_utf8_lossy(h.name), h.value_unfolded());
                    if !evidence.contains(&e) {
                        evidence.push(e);
                    }
                }
                found.push(f);
            }
        }
    }
    if found.is_empty() {
        return;
    }
    let mut r = Reason::new(
        "dkim.unsigned_field",
        ctx.policy.dkim_replay.extension_action,
        format!(
            "header fields a reader trusts were added to a validly signed message, outside what the signature covers: {}",
            found.join("; ")
        ),
    );
    for e in evidence {
        r = r.with_evidence(e);
    }
    out.push(r);
}

/// Whether mail-auth refused a signature because its body goes on after `l=` (it reports such
/// a signature `neutral` with this reason and without its tags, and checks nothing more).
fn refused_for_length(check: &DkimCheck) -> bool {
    check.result == Word::Neutral
        && check
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("'l=' tag"))
}

fn body_extended(ctx: &Context<'_>, sigs: &[Passing<'_>], out: &mut Vec<Reason>) {
    let body = ctx.raw.get(ctx.headers.body_offset..).unwrap_or_default();
    let refused = ctx.auth.dkim.iter().any(refused_for_length);
    // A signature that passed, or, when mail-auth set one aside for its length, every one
    // (it does not say which). The passing ones are `sigs`, parsed once: the same fields in
    // the same order (a field whose `d=`, `s=` and `b=` equal a passing one's matched the
    // same verification result).
    let parsed: Vec<Signature>;
    let candidates: Vec<&Signature> = if refused {
        parsed = ctx
            .headers
            .all("DKIM-Signature")
            .take(MAX_SIGNATURES_READ)
            .filter_map(|h| Signature::parse(h.value).ok())
            .collect();
        parsed.iter().collect()
    } else {
        sigs.iter().map(|p| &p.sig).collect()
    };
    let extended: Vec<String> = candidates
        .into_iter()
        .filter(|sig| sig.l > 0)
        .filter_map(|sig| {
            let l = usize::try_from(sig.l).unwrap_or(usize::MAX);
            let after = body.get(l..)?;
            after.iter().any(|b| !b.is_ascii_whitespace()).then(|| {
                format!(
                    "d={} s={} (l={l}, body {} octets)",
                    sig.d.to_ascii_lowercase(),
                    sig.s,
                    body.len()
                )
            })
        })
        .collect();
    if extended.is_empty() {
        return;
    }
    out.push(Reason::new(
        "dkim.body_extended",
        ctx.policy.dkim_replay.extension_action,
        format!(
            "the body goes on after the length a DKIM signature signed (l=): whatever follows was added after signing ({})",
            extended.join("; ")
        ),
    ));
}
