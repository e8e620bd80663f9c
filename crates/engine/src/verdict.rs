//! The decision: findings in, `accept | tag | quarantine | reject` out, each finding a reason
//! with a stable code and plain words.
//!
//! Reason codes are part of the JSON schema: they never change meaning once released. A new
//! finding gets a new code. Codes are dotted, lower case, grouped by what found them (`dmarc.`,
//! `spf.`, `dkim.`, `arc.`, `trace.`, `header.`, `auth.`).

use serde::Serialize;

use crate::{
    auth::{AuthResults, Word},
    policy::Policy,
    trace::Trace,
};

/// What to do with the message, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
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

impl Verdict {
    /// The verdict of a set of findings: the most severe action among them, `accept` if none.
    pub fn from_reasons(reasons: Vec<Reason>) -> Self {
        let action = reasons
            .iter()
            .map(|r| r.action)
            .max()
            .unwrap_or(Action::Accept);
        Verdict { action, reasons }
    }

    /// The reason codes, for headers and logs.
    pub fn codes(&self) -> Vec<&str> {
        self.reasons.iter().map(|r| r.code.as_str()).collect()
    }
}

/// Turns authentication and trace findings into reasons.
pub fn decide(auth: &AuthResults, trace: &Trace, _policy: &Policy) -> Verdict {
    let mut reasons = Vec::new();
    if !auth.checked {
        reasons.push(Reason::new(
            "auth.not_checked",
            Action::Accept,
            "SPF, DKIM, DMARC and ARC were not checked (no DNS or no client IP)",
        ));
    }

    let dmarc = &auth.dmarc;
    match dmarc.result {
        Word::Fail => {
            let (code, action, what) = match (dmarc.policy, dmarc.testing) {
                (Some("reject"), false) => {
                    ("dmarc.reject", Action::Reject, "asks receivers to reject")
                }
                (Some("quarantine"), false) => (
                    "dmarc.quarantine",
                    Action::Quarantine,
                    "asks receivers to quarantine",
                ),
                (Some(_), true) => (
                    "dmarc.fail_testing",
                    Action::Accept,
                    "is in testing mode (t=y)",
                ),
                _ => (
                    "dmarc.fail_policy_none",
                    Action::Accept,
                    "asks for no action (p=none)",
                ),
            };
            let why = dmarc
                .reason
                .as_deref()
                .unwrap_or("no aligned identifier passed");
            reasons.push(
                Reason::new(
                    code,
                    action,
                    format!(
                        "DMARC failed for {}: {why}; the domain's policy {what}",
                        dmarc.domain
                    ),
                )
                .with_evidence(format!(
                    "dmarc={} p={}",
                    dmarc.result,
                    dmarc.policy.unwrap_or("-")
                )),
            );
        }
        Word::TempError => reasons.push(Reason::new(
            "dmarc.temperror",
            Action::Accept,
            format!(
                "DMARC for {} could not be evaluated: DNS did not answer",
                dmarc.domain
            ),
        )),
        Word::PermError => reasons.push(Reason::new(
            "dmarc.permerror",
            Action::Accept,
            format!("the DMARC record of {} is broken", dmarc.domain),
        )),
        _ => {}
    }

    if auth.spf.result == Word::Fail && dmarc.result != Word::Pass {
        reasons.push(
            Reason::new(
                "spf.fail",
                Action::Tag,
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
        reasons.push(Reason::new(
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
        reasons.push(Reason::new(
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

    for a in &trace.anomalies {
        let mut r = Reason::new(a.code, Action::Accept, a.detail.clone());
        if let Some(hop) = a.hop.and_then(|i| trace.hops.get(i)) {
            r = r.with_evidence(format!("Received: {}", hop.raw));
        }
        reasons.push(r);
    }
    Verdict::from_reasons(reasons)
}
