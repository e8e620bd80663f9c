//! The decision: findings in, `accept | tag | quarantine | reject` out, each finding a reason
//! with a stable code and plain words.
//!
//! Reason codes are part of the JSON schema: they never change meaning once released. A new
//! finding gets a new code. Codes are dotted, lower case, grouped by what found them (`dmarc.`,
//! `spf.`, `dkim.`, `arc.`, `trace.`, `header.`, `auth.`).

use serde::Serialize;

/// What to do with the message, in increasing severity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    Tag,
    Quarantine,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Tag => "tag",
            Action::Quarantine => "quarantine",
            Action::Reject => "reject",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    /// Stable machine code, e.g. `dmarc.reject`.
    pub code: String,
    /// What this finding alone asks for; the verdict is the most severe of them.
    pub action: Action,
    /// Plain words for a person.
    pub message: String,
    /// The bytes or answers it rests on (header values, DNS results), when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl Reason {
    pub fn new(code: &str, action: Action, message: impl Into<String>) -> Self {
        Reason {
            code: code.to_string(),
            action,
            message: message.into(),
            evidence: Vec::new(),
        }
    }

    pub fn with_evidence(mut self, evidence: impl Into<String>) -> Self {
        self.evidence.push(evidence.into());
        self
    }
}

/// The engine's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub action: Action,
    pub reasons: Vec<Reason>,
}

/// The reason code of a message whose quarantine or tag an allowed sender lifted
/// ([`Verdict::lift_for_allowed_sender`]; the allow list is asked in `contact.rs`).
pub const ALLOWED_SENDER: &str = "allow.sender";

impl Verdict {
    /// The verdict of a set of findings: the most severe action among them, `accept` if none.
    /// Each code is listed once: findings with the same code (two From domains, two signatures
    /// that failed) become one reason at the place of the first, with the most severe action,
    /// every distinct message in order (joined with "; ") and every distinct piece of evidence.
    pub fn from_reasons(reasons: Vec<Reason>) -> Self {
        let reasons = merge_codes(reasons);
        let action = reasons
            .iter()
            .map(|r| r.action)
            .max()
            .unwrap_or(Action::Accept);
        Verdict { action, reasons }
    }

    /// An allowed sender's verdict (the console's "release and allow"): a quarantine or tag
    /// becomes an accept whose first reason is `allow.sender`; the findings stay listed with
    /// the actions they asked for. A reject stays a reject, an accept stays as it is.
    pub fn lift_for_allowed_sender(&mut self) {
        if !matches!(self.action, Action::Quarantine | Action::Tag) {
            return;
        }
        self.reasons.insert(
            0,
            Reason::new(
                ALLOWED_SENDER,
                Action::Accept,
                "The sender is on the allow list for these recipients.",
            ),
        );
        self.action = Action::Accept;
    }

    /// The reason codes, for headers and logs.
    pub fn codes(&self) -> Vec<&str> {
        self.reasons.iter().map(|r| r.code.as_str()).collect()
    }
}

/// One reason per code, in the order the codes first appear (see [`Verdict::from_reasons`]).
fn merge_codes(reasons: Vec<Reason>) -> Vec<Reason> {
    let mut out: Vec<Reason> = Vec::with_capacity(reasons.len());
    for r in reasons {
        let Some(first) = out.iter_mut().find(|o| o.code == r.code) else {
            out.push(r);
            continue;
        };
        if !first.message.contains(r.message.as_str()) {
            // The message of the most severe finding leads: it is the one the verdict rests on.
            first.message = if r.action > first.action {
                format!("{}; {}", r.message, first.message)
            } else {
                format!("{}; {}", first.message, r.message)
            };
        }
        first.action = first.action.max(r.action);
        for e in r.evidence {
            if !first.evidence.contains(&e) {
                first.evidence.push(e);
            }
        }
    }
    out
}

/// What the sender of a refused message can do about it, for the reply text of every front
/// door, from the code of the finding that decided the refusal. The words name a class of
/// problem, never the check: reason codes stay out of replies (a forger would learn which
/// check to work around and try again); they are in the message's record, found by the
/// queue id the reply gives.
pub fn sender_advice(decisive_code: &str) -> &'static str {
    match decisive_code.split('.').next().unwrap_or("") {
        "dmarc" | "spf" | "dkim" | "arc" | "auth" | "spoof" => {
            "the sender's domain does not authenticate it; its administrator can check the domain's SPF, DKIM and DMARC records"
        }
        "ambiguity" | "header" => "its sender header fields are malformed or ambiguous",
        _ => "it does not meet the recipient's mail policy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_is_one_reason() {
        let v = Verdict::from_reasons(vec![
            Reason::new("dkim.fail", Action::Accept, "signature of a.example failed")
                .with_evidence("d=a.example"),
            Reason::new("spf.fail", Action::Tag, "SPF failed"),
            Reason::new(
                "dkim.fail",
                Action::Quarantine,
                "signature of b.example failed",
            )
            .with_evidence("d=b.example"),
            Reason::new("dkim.fail", Action::Accept, "signature of a.example failed")
                .with_evidence("d=a.example"),
        ]);
        assert_eq!(v.codes(), ["dkim.fail", "spf.fail"]);
        assert_eq!(v.action, Action::Quarantine);
        let dkim = &v.reasons[0];
        assert_eq!(dkim.action, Action::Quarantine);
        assert_eq!(
            dkim.message,
            "signature of b.example failed; signature of a.example failed"
        );
        assert_eq!(dkim.evidence, ["d=a.example", "d=b.example"]);
    }

    #[test]
    fn an_allowed_sender_lifts_quarantine_and_tag_only() {
        for action in [Action::Tag, Action::Quarantine] {
            let mut v = Verdict::from_reasons(vec![Reason::new("spf.fail", action, "SPF failed")]);
            v.lift_for_allowed_sender();
            assert_eq!(v.action, Action::Accept);
            assert_eq!(v.codes(), ["allow.sender", "spf.fail"]);
            assert_eq!(
                v.reasons[1].action, action,
                "the finding keeps what it asked"
            );
        }
        for action in [Action::Reject, Action::Accept] {
            let mut v = Verdict::from_reasons(vec![Reason::new("spf.fail", action, "SPF failed")]);
            v.lift_for_allowed_sender();
            assert_eq!((v.action, v.codes()), (action, vec!["spf.fail"]));
        }
    }

    #[test]
    fn advice_names_a_class_never_a_code() {
        for code in [
            "dmarc.reject",
            "spoof.own_domain",
            "ambiguity.from_multiple",
            "impersonation.display_name",
            "",
        ] {
            let advice = sender_advice(code);
            assert!(!advice.contains(code) || code.is_empty(), "{advice}");
            assert!(!advice.contains('.'), "{advice}");
            assert!(advice.is_ascii());
        }
        assert_ne!(sender_advice("spf.fail"), sender_advice("lookalike.domain"));
    }
}
