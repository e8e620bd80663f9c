//! The policy's word on senders beyond the protected domains: outside domains our people trust
//! (`watched_domains`), own domains whose mail is always DKIM-signed (`[[signed_mail]]`), and
//! the limits of the DKIM replay and extension signals (`[dkim_replay]`).
//!
//! Kept apart from `policy.rs` so that each section's rules and validation sit together;
//! `examples/unspoof.toml` documents every key.

use serde::Deserialize;

use crate::verdict::Action;

/// A protected domain whose own mail is always DKIM-signed: an aligned SPF pass alone (a shared
/// ESP's `include:`) does not prove that mail claiming it is ours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedMail {
    /// The protected domain (and its subdomains).
    pub domain: String,
    /// Who signs its mail. Empty: any passing DKIM signature of the domain's organisation.
    /// Otherwise only a passing signature that one of these names proves the mail ours.
    #[serde(default)]
    pub senders: Vec<AuthorisedSender>,
}

/// One signer of a domain's mail: our own gateway, or an ESP that sends for us.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorisedSender {
    /// Who it is, for people reading the policy and the verdict ("Mailchimp").
    #[serde(default)]
    pub name: String,
    /// The `d=` its signatures carry (exactly, no subdomains).
    pub dkim_domain: String,
    /// The `s=` its signatures carry; absent: any selector of `dkim_domain`.
    #[serde(default)]
    pub selector: Option<String>,
}

impl AuthorisedSender {
    /// Whether a passing signature with this `d=` and `s=` is this sender's.
    pub fn signs(&self, d: &str, s: &str) -> bool {
        d.trim_end_matches('.')
            .eq_ignore_ascii_case(&self.dkim_domain)
            && self
                .selector
                .as_deref()
                .is_none_or(|sel| sel.eq_ignore_ascii_case(s.trim()))
    }

    /// `name (d=..., s=...)` for messages.
    pub fn describe(&self) -> String {
        let s = self.selector.as_deref().unwrap_or("*");
        if self.name.is_empty() {
            format!("d={} s={s}", self.dkim_domain)
        } else {
            format!("{} (d={} s={s})", self.name, self.dkim_domain)
        }
    }
}

/// The DKIM replay and extension signals (`findings/dkim_replay.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimReplay {
    /// A passing signature whose `t=` is more than this many hours before the message reached
    /// us is old: a signed message kept and sent again. 0 turns the check off.
    pub max_signature_age_hours: u64,
    /// The action for the replay signals: an old signature, and bulk mail whose recipients
    /// appear nowhere in To or Cc.
    pub replay_action: Action,
    /// The action for the extension signals: a From, Subject, Reply-To, To or Date that a
    /// passing signature does not cover (added above it), and content after the length a
    /// signature's `l=` signed.
    pub extension_action: Action,
}

/// Default of [`DkimReplay::max_signature_age_hours`]: a week. Legitimate mail that waited in
/// queues, or was redirected later by a forwarder, arrives within days; replay campaigns reuse
/// one signed message for weeks.
pub const DEFAULT_MAX_SIGNATURE_AGE_HOURS: u64 = 168;

impl Default for DkimReplay {
    fn default() -> Self {
        DkimReplay {
            max_signature_age_hours: DEFAULT_MAX_SIGNATURE_AGE_HOURS,
            replay_action: Action::Tag,
            extension_action: Action::Quarantine,
        }
    }
}

/// Lower case, without the trailing dot or surrounding spaces.
pub(crate) fn normalise_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use crate::Policy;

    #[test]
    fn watched_and_signed_domains_are_checked() {
        let p = Policy::parse(
            "protected_domains = [\"ours.example\"]\nwatched_domains = [\"Bank.Example.\"]\n[[signed_mail]]\ndomain = \"Mail.Ours.Example\"\nsenders = [{ dkim_domain = \"ESP.example\", selector = \"s1\" }]\n",
            "p",
        )
        .unwrap();
        assert_eq!(p.watched_domains, ["bank.example"]);
        assert_eq!(p.watched("www.BANK.example"), Some("bank.example"));
        assert_eq!(p.watched("notbank.example"), None);
        assert!(!p.is_protected("bank.example"));
        assert!(p.signed_mail_for("x.mail.ours.example").is_some());
        assert!(p.signed_mail_for("ours.example").is_none());
        let esp = &p.signed_mail[0].senders[0];
        assert!(esp.signs("esp.example.", "S1"));
        assert!(!esp.signs("esp.example", "s2"));
        assert!(!esp.signs("sub.esp.example", "s1"));
        assert_eq!(p.dkim_replay.max_signature_age_hours, 168);

        let err = |text: &str| Policy::parse(text, "p").unwrap_err().to_string();
        let e = err(
            "protected_domains = [\"ours.example\"]\nwatched_domains = [\"mail.ours.example\"]\n",
        );
        assert!(
            e.starts_with("p:2:") && e.contains("ours or watched"),
            "{e}"
        );
        let e = err(
            "protected_domains = [\"ours.example\"]\n\n[[signed_mail]]\ndomain = \"other.example\"\n",
        );
        assert!(
            e.starts_with("p:3:") && e.contains("not one of protected_domains"),
            "{e}"
        );
        let e = err(
            "protected_domains = [\"ours.example\"]\n[[signed_mail]]\ndomain = \"ours.example\"\nsenders = [{ dkim_domain = \"\" }]\n",
        );
        assert!(e.contains("needs a dkim_domain"), "{e}");
        let e = err("[dkim_replay]\nreplay_action = \"drop\"\n");
        assert!(e.starts_with("p:2:"), "{e}");
        let e = err("watched_domains = [\"localhost\"]\n");
        assert!(e.contains("not a domain name"), "{e}");
    }
}
