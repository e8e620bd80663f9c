//! What SPF, DKIM, DMARC and ARC said, as reasons; DMARC enforced by the sender's own policy
//! (p, sp, np as RFC 9989 selects them), with the local-policy override for mail that a trusted
//! ARC sealer vouches for (RFC 8617 7.2; RFC 9989 calls it a "trusted forwarder").

use super::Context;
use crate::{
    auth::Word,
    verdict::{Action, Reason},
};

pub fn check(ctx: &Context<'_>, out: &mut Vec<Reason>) {
    let auth = ctx.auth;
    let actions = &ctx.policy.actions;
    if !auth.checked {
        out.push(Reason::new(
            "auth.not_checked",
            Action::Accept,
            format!(
                "SPF, DKIM, DMARC and ARC were not checked: {}",
                auth.not_checked.as_deref().unwrap_or("no reason given")
            ),
        ));
        return;
    }
    if let Some(why) = &auth.spf.not_checked {
        out.push(Reason::new(
            "spf.not_checked",
            Action::Accept,
            format!("SPF was not checked: {why}"),
        ));
    }
    // Mail from our own networks (submission clients, internal relays) is ours: SPF and DMARC
    // judge Internet senders, so their verdicts are reported but not enforced here.
    if ctx.envelope.ip.is_some_and(|ip| ctx.policy.is_internal(ip)) {
        out.push(Reason::new(
            "auth.internal_network",
            Action::Accept,
            "the message came from our internal networks; SPF and DMARC are not enforced on it",
        ));
        return;
    }

    let dmarc = &auth.dmarc;
    match dmarc.result {
        Word::Fail => {
            let why = dmarc
                .reason
                .as_deref()
                .unwrap_or("no aligned identifier passed");
            let evidence = format!("dmarc=fail p={}", dmarc.policy.unwrap_or("-"));
            if let Some(sealer) = trusted_arc_voucher(ctx) {
                out.push(
                    Reason::new(
                        "dmarc.fail_arc_override",
                        Action::Accept,
                        format!(
                            "DMARC failed for {} ({why}), but {sealer}, a trusted forwarder, \
                             sealed an ARC chain saying it passed when they received it",
                            dmarc.domain
                        ),
                    )
                    .with_evidence(evidence),
                );
            } else {
                let (code, action, what) = match (dmarc.policy, dmarc.testing) {
                    (Some("reject"), false) => (
                        "dmarc.reject",
                        actions.dmarc_reject,
                        "asks receivers to reject",
                    ),
                    (Some("quarantine"), false) => (
                        "dmarc.quarantine",
                        actions.dmarc_quarantine,
                        "asks receivers to quarantine",
                    ),
                    (Some(_), true) => (
                        "dmarc.fail_testing",
                        actions.dmarc_fail_none,
                        "is in testing mode (t=y), so the sender could not be verified",
                    ),
                    _ => (
                        "dmarc.fail_policy_none",
                        actions.dmarc_fail_none,
                        "asks for no action (p=none), but the sender could not be verified",
                    ),
                };
                out.push(
                    Reason::new(
                        code,
                        action,
                        format!(
                            "DMARC failed for {}: {why}; the domain's policy {what}",
                            dmarc.domain
                        ),
                    )
                    .with_evidence(evidence),
                );
            }
        }
        Word::TempError => out.push(Reason::new(
            "dmarc.temperror",
            Action::Accept,
            format!(
                "DMARC for {} could not be evaluated: DNS did not answer",
                dmarc.domain
            ),
        )),
        Word::PermError => out.push(Reason::new(
            "dmarc.permerror",
            Action::Accept,
            format!("the DMARC record of {} is broken", dmarc.domain),
        )),
        _ => {}
    }

    if auth.spf.result == Word::Fail && dmarc.result != Word::Pass {
        out.push(
            Reason::new(
                "spf.fail",
                actions.spf_fail,
                format!(
                    "the sending IP is not allowed to send for {} (SPF fail)",
                    auth.spf.domain
                ),
            )
            .with_evidence(format!(
                "spf=fail smtp.mailfrom={} ({})",
                auth.spf.sender,
                auth.spf.mechanism.as_deref().unwrap_or("-")
            )),
        );
    }
    for d in auth.dkim.iter().filter(|d| d.result == Word::Fail) {
        out.push(Reason::new(
            "dkim.fail",
            Action::Accept,
            format!(
                "a DKIM signature of {} did not verify: {}",
                if d.domain.is_empty() {
                    "an unknown domain"
                } else {
                    &d.domain
                },
                d.reason.as_deref().unwrap_or("signature mismatch")
            ),
        ));
    }
    if auth.arc.result == Word::Fail {
        out.push(Reason::new(
            "arc.fail",
            Action::Accept,
            format!(
                "the ARC chain is broken: {}",
                auth.arc
                    .reason
                    .as_deref()
                    .unwrap_or("a seal or signature did not verify")
            ),
        ));
    }
}

/// The trusted sealer that vouches for the From domain, if any: the ARC chain validates, the
/// newest sealers down to the voucher are all trusted, and the voucher's
/// ARC-Authentication-Results says DMARC passed for the From domain (or an aligned DKIM
/// signature passed) when it received the message.
pub(super) fn trusted_arc_voucher(ctx: &Context<'_>) -> Option<String> {
    if ctx.auth.arc.result != Word::Pass {
        return None;
    }
    let from_domain = ctx.auth.dmarc.domain.to_ascii_lowercase();
    if from_domain.is_empty() {
        return None;
    }
    let mut sealers = ctx.auth.arc.sealers.clone();
    sealers.sort_by_key(|s| std::cmp::Reverse(s.instance));
    for sealer in sealers {
        if !ctx.policy.is_trusted_sealer(&sealer.domain) {
            return None;
        }
        let aar = ctx
            .headers
            .all("ARC-Authentication-Results")
            .find_map(|h| {
                let v = h.value_unfolded();
                (instance_of(&v) == Some(sealer.instance)).then_some(v)
            })?;
        if vouches_for(&aar, &from_domain) {
            return Some(sealer.domain);
        }
    }
    None
}

fn instance_of(aar: &str) -> Option<u32> {
    let first = aar.split(';').next()?.trim();
    first
        .strip_prefix("i=")
        .or_else(|| first.strip_prefix("i ="))?
        .trim()
        .parse()
        .ok()
}

/// Whether an AAR value records `dmarc=pass` for `domain` or `dkim=pass` for a domain of the
/// same organisation.
fn vouches_for(aar: &str, domain: &str) -> bool {
    aar.split(';').skip(1).any(|resinfo| {
        let mut words = resinfo.split_whitespace();
        let Some(method) = words.next() else {
            return false;
        };
        let props: Vec<&str> = words.collect();
        let prop = |name: &str| {
            props.iter().find_map(|p| {
                p.strip_prefix(name).map(|v| {
                    v.trim_matches('"')
                        .trim_start_matches('@')
                        .to_ascii_lowercase()
                })
            })
        };
        let value_domain = |v: String| v.rsplit('@').next().unwrap_or("").to_string();
        match method.to_ascii_lowercase().as_str() {
            "dmarc=pass" => prop("header.from=")
                .map(value_domain)
                .is_some_and(|d| d == domain),
            "dkim=pass" => prop("header.d=")
                .or_else(|| prop("header.i="))
                .map(value_domain)
                .is_some_and(|d| crate::domain::same_organisation(&d, domain)),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_arc_authentication_results() {
        let aar = "i=1; lists.example.org; dkim=pass header.d=mail.example.com; spf=fail smtp.mailfrom=x.example";
        assert_eq!(instance_of(aar), Some(1));
        assert!(vouches_for(aar, "example.com"));
        assert!(!vouches_for(aar, "example.net"));
        assert!(vouches_for(
            "i=2; mx; dmarc=pass (p=reject) header.from=example.com",
            "example.com"
        ));
        assert!(!vouches_for(
            "i=2; mx; dmarc=fail header.from=example.com",
            "example.com"
        ));
    }
}
