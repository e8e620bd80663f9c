//! The adapter from [`Decide`] to the real engine (`unspoof_engine::Engine`): what
//! `unspoof serve` runs. Translates envelopes and verdicts; decides nothing itself.

use std::path::PathBuf;
use std::sync::Arc;

use unspoof_engine::bounce::OutboundHistory;
use unspoof_engine::contact::{ContactHistory, ask_history};
use unspoof_engine::signed::{SignerHistory, ask_signer_history, remember_signer};
use unspoof_engine::{Engine, Policy};

use crate::decide::{Action, Decide, Decision, Envelope, Reason};

/// The engine as a [`Decide`]r. `policy_path` is re-read on [`Decide::reload`] (SIGHUP).
pub struct EngineDecider {
    engine: Engine,
    policy_path: Option<PathBuf>,
    contacts: Option<Arc<dyn ContactHistory>>,
    outbound: Option<Arc<dyn OutboundHistory>>,
    signers: Option<Arc<dyn SignerHistory>>,
}

impl EngineDecider {
    pub fn new(engine: Engine, policy_path: Option<PathBuf>) -> Self {
        EngineDecider {
            engine,
            policy_path,
            contacts: None,
            outbound: None,
            signers: None,
        }
    }

    /// Asks `history` (the store) whether the sender is new to the recipients before each
    /// decision, so the engine can weigh a first contact (`contact.*`).
    pub fn with_contact_history(mut self, history: Arc<dyn ContactHistory>) -> Self {
        self.contacts = Some(history);
        self
    }

    /// Asks `history` (the store) whether we sent the message a bounce or auto-reply answers,
    /// so the engine can tell backscatter of a forgery from the bounce of our own mail
    /// (`backscatter.*`).
    pub fn with_outbound_history(mut self, history: Arc<dyn OutboundHistory>) -> Self {
        self.outbound = Some(history);
        self
    }

    /// Asks `history` (the store) which keys a signed message's sender used before, and
    /// teaches it the key of a first valid use (trust on first use, `signature.key_changed`).
    pub fn with_signer_history(mut self, history: Arc<dyn SignerHistory>) -> Self {
        self.signers = Some(history);
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Decide for EngineDecider {
    async fn decide(&self, raw: &[u8], envelope: &Envelope, authserv_id: &str) -> Decision {
        let mut env = unspoof_engine::Envelope {
            ip: envelope.ip,
            helo: envelope.helo.clone(),
            mail_from: envelope.mail_from.clone(),
            rcpt: envelope.rcpt.clone(),
            received_at: envelope.received_at,
            auth_user: envelope.auth_user.clone(),
            first_contact: None,
            known_sender: None,
            sent_by_us: None,
            signing_keys_seen: None,
        };
        ask_history(
            self.contacts.as_deref(),
            self.outbound.as_deref(),
            raw,
            &mut env,
        )
        .await;
        if let Some(h) = &self.signers {
            ask_signer_history(h.as_ref(), raw, &mut env).await;
        }
        let analysis = self.engine.evaluate(raw, &env).await;
        if let Some(h) = &self.signers {
            remember_signer(h.as_ref(), &analysis).await;
        }
        let action = match analysis.verdict.action {
            unspoof_engine::Action::Accept => Action::Accept,
            unspoof_engine::Action::Tag => Action::Tag,
            unspoof_engine::Action::Quarantine => Action::Quarantine,
            unspoof_engine::Action::Reject => Action::Reject,
        };
        let mut headers = analysis.authentication_results(authserv_id);
        // What users and downstream filters see (issue 3): a tagged message gets the verdict
        // header, the subject prefix and the banner; a quarantined one the verdict header, so
        // whoever releases it sees why it was held.
        let rewritten = match action {
            Action::Tag => {
                headers.push_str(&unspoof_engine::tag::verdict_header(&analysis));
                let policy = self.engine.policy();
                Some(unspoof_engine::tag::rewrite(raw, &analysis, &policy.tag))
            }
            Action::Quarantine => {
                headers.push_str(&unspoof_engine::tag::verdict_header(&analysis));
                None
            }
            Action::Accept | Action::Reject => None,
        };
        Decision {
            action,
            reasons: decisive_first(&analysis.verdict),
            headers,
            rewritten,
            analysis: Some(Arc::new(analysis)),
        }
    }

    fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.policy_path else {
            return Ok(());
        };
        let policy = Policy::load(path).map_err(|e| e.to_string())?;
        self.engine.set_policy(policy);
        Ok(())
    }
}

/// The verdict's reasons with the decisive ones (those asking for the verdict's own action)
/// first and each code once: the SMTP reply names the first few, so the client reads why.
fn decisive_first(verdict: &unspoof_engine::Verdict) -> Vec<Reason> {
    let mut ordered: Vec<&unspoof_engine::Reason> = verdict.reasons.iter().collect();
    ordered.sort_by_key(|r| std::cmp::Reverse(r.action));
    let mut out: Vec<Reason> = Vec::new();
    for r in ordered {
        if !out.iter().any(|o| o.code == r.code) {
            out.push(Reason {
                code: r.code.clone(),
                message: r.message.clone(),
            });
        }
    }
    out
}
