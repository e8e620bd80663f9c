//! Watched brands in display names: the name of an outside domain our people trust (their bank,
//! a partner, a supplier: `watched_domains`) on mail from another organisation.
//!
//! A watched domain's name is its registrable label (`bigbank` of `bigbank.example`), read as a
//! display name is read ([`names::compare`]: case, accents, confusable characters and moved
//! spaces set aside, so "Big Bank" and "BIGBANK" both match). The finding is
//! `impersonation.watched_brand`: the name exactly, or with only role words ("BigBank Customer
//! Service"), takes `actions.impersonation`; the name among other words takes `tag` (or the
//! impersonation action if lower), as for protected people. The mail is the brand's own, and no
//! finding, when the address is in the organisation of any watched domain (a brand often
//! sends from a second domain of its own, which the site then watches too). Labels shorter than
//! [`MIN_BRAND_LABEL_LEN`] are not compared: two letters name too many things.
//!
//! The lookalike and address-in-name checks compare with watched domains in their own modules;
//! the first-contact memory ([`super::correspondent`]) applies here as to protected people.

use super::{
    Context, Mailbox, correspondent,
    names::{Name, NameMatch, compare},
};
use crate::{
    domain::{registrable, same_organisation},
    verdict::{Action, Reason},
};

/// Shortest registrable label of a watched domain that is compared with display names.
pub const MIN_BRAND_LABEL_LEN: usize = 3;

/// One watched domain as a name.
#[derive(Debug)]
pub(crate) struct Brand {
    domain: String,
    label: String,
    name: Name,
}

/// The watched domains whose label can be read as a name, in policy order.
pub(crate) fn brands(watched: &[String]) -> Vec<Brand> {
    watched
        .iter()
        .filter_map(|d| {
            let reg = registrable(d)?;
            let suffix = psl::suffix_str(&reg)?;
            let label = reg.strip_suffix(suffix)?.strip_suffix('.')?;
            let (label, _) = idna::domain_to_unicode(label);
            let name = Name::parse(&label);
            (label.chars().count() >= MIN_BRAND_LABEL_LEN && !name.is_empty()).then(|| Brand {
                domain: d.clone(),
                label,
                name,
            })
        })
        .collect()
}

/// Whether the mailbox is in the organisation of a watched domain.
fn in_watched(ctx: &Context<'_>, mb: &Mailbox) -> bool {
    ctx.policy
        .watched_domains
        .iter()
        .any(|w| same_organisation(&mb.domain, w))
}

/// Adds `impersonation.watched_brand` when `display` shows a watched brand's name and none of
/// `mailboxes` is in a watched organisation. One reason at most.
pub(crate) fn display_name(
    ctx: &Context<'_>,
    mailboxes: &[&Mailbox],
    display: &str,
    out: &mut Vec<Reason>,
) {
    let data = super::PolicyData::of(ctx.policy);
    if data.brands.is_empty() || mailboxes.iter().any(|mb| in_watched(ctx, mb)) {
        return;
    }
    let Some(mb) = mailboxes.first() else { return };
    let shown = Name::parse(display);
    if shown.is_empty() {
        return;
    }
    let Some((m, brand)) = data
        .brands
        .iter()
        .filter_map(|b| compare(&shown, &b.name).map(|m| (m, b)))
        .min_by_key(|(m, _)| match m {
            NameMatch::Exact => 0,
            NameMatch::WithRoleWords => 1,
            NameMatch::Partial => 2,
        })
    else {
        return;
    };
    let action = ctx.policy.actions.impersonation;
    let action = match m {
        NameMatch::Exact | NameMatch::WithRoleWords => action,
        NameMatch::Partial => action.min(Action::Tag),
    };
    let memory = correspondent::judge(ctx, mb, m == NameMatch::Exact, action);
    out.push(Reason::new(
        memory.code.unwrap_or("impersonation.watched_brand"),
        memory.action,
        format!(
            "the sender shows the name {:?} of {}, a watched domain our people trust, but writes from {}, another organisation{}",
            brand.label, brand.domain, mb.address, memory.note
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brand_names_come_from_the_registrable_label() {
        let b = brands(&[
            "mail.bigbank.example".into(),
            "ab.example".into(),
            "xn--bcher-kva.example".into(),
        ]);
        let labels: Vec<&str> = b.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["bigbank", "bücher"]);
        assert_eq!(
            compare(&Name::parse("Big Bank"), &b[0].name),
            Some(NameMatch::Exact)
        );
        assert_eq!(
            compare(&Name::parse("BigBank Customer Service"), &b[0].name),
            Some(NameMatch::WithRoleWords)
        );
        // "bank" is itself a role word, so with more role words only "Big" is left.
        assert_eq!(
            compare(&Name::parse("Big Bank Customer Service"), &b[0].name),
            None
        );
        let f = brands(&["fidelia.example".into()]);
        assert_eq!(
            compare(&Name::parse("Fidelia Customer Service"), &f[0].name),
            Some(NameMatch::WithRoleWords)
        );
        assert_eq!(
            compare(&Name::parse("Fidelia via Partner Portal"), &f[0].name),
            Some(NameMatch::Partial)
        );
        assert_eq!(compare(&Name::parse("Bigger Bank"), &b[0].name), None);
    }
}
