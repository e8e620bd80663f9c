//! Person-level signatures (PGP/MIME, inline OpenPGP, S/MIME; `crate::signed`) as reasons.
//!
//! | code | when | action |
//! | --- | --- | --- |
//! | `signature.valid` | valid, bound to From, anchored (keyring, CA chain, the key the sender used before) | accept; DMARC-undecided reasons of the same message drop to accept |
//! | `signature.bad` | the signature does not verify: the signed part was altered, or forged | quarantine |
//! | `signature.other_signer` | valid, but signed by someone whose identities are not the From address | tag |
//! | `signature.revoked` | the key or certificate is revoked | quarantine |
//! | `signature.expired` | the key or certificate had expired (or was not yet valid) at the reference time | tag |
//! | `signature.weak` | SHA-1/MD5 signature, or an RSA key below 2048 bits | tag |
//! | `signature.key_changed` | anchored only by memory, and the From address signed with another key before | tag |
//! | `signature.partial` | valid and bound, but the signed part is not all the message shows (other MIME parts, or text around an inline block, unsigned) | tag |
//! | `signature.first_use` | valid and bound, but nothing anchors the key yet (no keyring key, no CA chain, first time seen) | accept |
//! | `signature.no_key` | the OpenPGP key named by the signature is nowhere to be found | accept |
//! | `signature.unverifiable` | the signature structure could not be checked (malformed, too large) | tag (fail closed) |
//!
//! "DMARC cannot decide": `dmarc.fail_policy_none`, `dmarc.fail_testing`, `dmarc.temperror`,
//! `dmarc.permerror`, and `spf.fail` under them. A proven signature binds the message body to
//! its sender, so those reasons no longer ask for a tag. An enforced DMARC failure (`p=reject`,
//! `p=quarantine`) stays: the domain's owner has spoken about its own mail. `[[signed_mail]]`
//! counts a proven signature of an address in the domain as the signature it requires
//! ([`proves_sender`]).

use super::Context;
use crate::{
    signed::{Problem, Standing},
    verdict::{Action, Reason},
};

/// The reasons a proven signature makes undecided.
const UNDECIDED: &[&str] = &[
    "dmarc.fail_policy_none",
    "dmarc.fail_testing",
    "dmarc.temperror",
    "dmarc.permerror",
    "spf.fail",
];

/// Whether a proven signature binds the message to an address in `domain` (`[[signed_mail]]`).
pub(crate) fn proves_sender(ctx: &Context<'_>, domain: &str) -> bool {
    ctx.signature.is_some_and(|s| {
        s.standing == Standing::Proven
            && s.identity
                .as_deref()
                .and_then(|i| i.rsplit_once('@'))
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
    })
}

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let Some(sig) = ctx.signature else { return };
    let kind = match sig.found.form.method() {
        "smime" => "S/MIME",
        _ => "OpenPGP",
    };
    let who = sig.identity.as_deref().unwrap_or("an unnamed signer");
    let ids = if sig.found.identities.is_empty() {
        "no e-mail identity".to_string()
    } else {
        sig.found.identities.join(", ")
    };
    let from = super::super::signed::from_addresses(&ctx.from).join(", ");
    let evidence = format!(
        "{}{}",
        sig.resinfo(),
        sig.found
            .fingerprint
            .as_deref()
            .map(|f| format!(" key={f}"))
            .unwrap_or_default()
    );
    let push = |out: &mut Vec<Reason>, code: &str, action: Action, msg: String| {
        out.push(Reason::new(code, action, msg).with_evidence(evidence.clone()));
    };
    match sig.standing {
        Standing::Proven => {
            let mut eased = Vec::new();
            for r in out.iter_mut() {
                if UNDECIDED.contains(&r.code.as_str()) && r.action > Action::Accept {
                    r.action = Action::Accept;
                    r.message.push_str(&format!(
                        " (eased: a valid {kind} signature of {who} proves the sender)"
                    ));
                    eased.push(r.code.clone());
                }
            }
            let tail = if eased.is_empty() {
                String::new()
            } else {
                format!(
                    "; DMARC could not decide, so this counts ({})",
                    eased.join(", ")
                )
            };
            push(
                out,
                "signature.valid",
                Action::Accept,
                format!("a valid {kind} signature of {who}, the From address{tail}"),
            );
        }
        Standing::Bad => push(
            out,
            "signature.bad",
            Action::Quarantine,
            format!(
                "the {kind} signature does not match the message: the signed part was altered after signing, or the signature is forged ({who})"
            ),
        ),
        Standing::OtherSigner => push(
            out,
            "signature.other_signer",
            Action::Tag,
            format!(
                "the {kind} signature is valid but made by {ids}, not by the From address {from}"
            ),
        ),
        Standing::Flawed => {
            for p in &sig.found.problems {
                let (code, action, what) = match p {
                    Problem::Revoked(d) => ("signature.revoked", Action::Quarantine, d.clone()),
                    Problem::Expired(d) => ("signature.expired", Action::Tag, d.clone()),
                    Problem::WeakHash(h) => (
                        "signature.weak",
                        Action::Tag,
                        format!("the signature uses {h}, which can be forged"),
                    ),
                    Problem::SmallKey(bits) => (
                        "signature.weak",
                        Action::Tag,
                        format!("the key has only {bits} bits"),
                    ),
                    Problem::Chain(_) => continue,
                };
                push(
                    out,
                    code,
                    action,
                    format!("the {kind} signature of {who} is valid, but {what}"),
                );
            }
        }
        Standing::KeyChanged => push(
            out,
            "signature.key_changed",
            Action::Tag,
            format!(
                "{who} signed with a different {kind} key before; this key is new (trust on first use)"
            ),
        ),
        Standing::Partial => {
            let part = sig
                .found
                .part
                .as_deref()
                .map(|p| format!("part {p}"))
                .unwrap_or_else(|| "the signed block".into());
            push(
                out,
                "signature.partial",
                Action::Tag,
                format!(
                    "the {kind} signature of {who} is valid, but covers only {part} of the message; not signed: {} (a list footer, a forwarder's wrapper, or text added around a genuine signed part)",
                    sig.found.unsigned.join(", ")
                ),
            )
        }
        Standing::FirstUse => {
            let why = sig
                .found
                .problems
                .iter()
                .find_map(|p| match p {
                    Problem::Chain(c) => Some(format!(" (certificate: {c})")),
                    _ => None,
                })
                .unwrap_or_default();
            push(
                out,
                "signature.first_use",
                Action::Accept,
                format!(
                    "a valid {kind} signature of {who}, but nothing vouches for the key yet{why}: not in the keyring or CA bundle, first seen now"
                ),
            )
        }
        Standing::NoKey => push(
            out,
            "signature.no_key",
            Action::Accept,
            format!(
                "the message carries an {kind} signature, but its key is neither in the keyring nor in the message: {}",
                sig.found.detail.as_deref().unwrap_or("unknown key")
            ),
        ),
        Standing::Unverifiable => push(
            out,
            "signature.unverifiable",
            Action::Tag,
            format!(
                "the {kind} signature could not be checked: {}",
                sig.found.detail.as_deref().unwrap_or("malformed")
            ),
        ),
    }
}
