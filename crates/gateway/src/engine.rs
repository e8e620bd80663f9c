//! The adapter from [`Decide`] to the real engine (`unspoof_engine::Engine`): what
//! `unspoof serve` runs. Translates envelopes and verdicts; decides nothing itself.

use std::sync::Arc;

use unspoof_engine::bounce::OutboundHistory;
use unspoof_engine::contact::ContactHistory;
use unspoof_engine::signed::SignerHistory;
use unspoof_engine::{Engine, Policy};

use crate::decide::{Decide, Decision, Envelope, Reason};

/// Where a new policy comes from on [`Decide::reload`] (SIGHUP): the CLI re-reads the whole
/// `unspoof.toml` as `unspoof serve` read it at start (the gateway's hostname and domains
/// folded into the policy), so a reload never changes what the file did not.
pub type PolicySource = Box<dyn Fn() -> Result<Policy, String> + Send + Sync>;

/// The engine as a [`Decide`]r; `reload_from`, if any, gives the policy on [`Decide::reload`].
pub struct EngineDecider {
    engine: Engine,
    reload_from: Option<PolicySource>,
}

impl EngineDecider {
    pub fn new(engine: Engine, reload_from: Option<PolicySource>) -> Self {
        EngineDecider {
            engine,
            reload_from,
        }
    }

    /// Asks `history` (the store) whether the sender is new to the recipients before each
    /// decision, so the engine can weigh a first contact (`contact.*`).
    pub fn with_contact_history(mut self, history: Arc<dyn ContactHistory>) -> Self {
        self.engine = self.engine.with_contact_history(history);
        self
    }

    /// Asks `history` (the store) whether we sent the message a bounce or auto-reply answers,
    /// so the engine can tell backscatter of a forgery from the bounce of our own mail
    /// (`backscatter.*`).
    pub fn with_outbound_history(mut self, history: Arc<dyn OutboundHistory>) -> Self {
        self.engine = self.engine.with_outbound_history(history);
        self
    }

    /// Asks `history` (the store) which keys a signed message's sender used before, and
    /// teaches it the key of a first valid use (trust on first use, `signature.key_changed`).
    pub fn with_signer_history(mut self, history: Arc<dyn SignerHistory>) -> Self {
        self.engine = self.engine.with_signer_history(history);
        self
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Decide for EngineDecider {
    async fn decide(&self, raw: &[u8], envelope: &Envelope, _authserv_id: &str) -> Decision {
        let env = unspoof_engine::Envelope {
            ip: envelope.ip,
            helo: envelope.helo.clone(),
            mail_from: envelope.mail_from.clone(),
            rcpt: envelope.rcpt.clone(),
            received_at: envelope.received_at,
            auth_user: envelope.auth_user.clone(),
            first_contact: None,
            known_sender: None,
            sent_by_us: None,
            allowed_sender: None,
            signing_keys_seen: None,
        };
        // One call: the engine asks the store's history, decides, and catches its own panics
        // (a defer, as in the milter). The authserv-id is the policy's hostname, which
        // `unspoof serve` sets from the gateway's.
        let mut analysis = self.engine.evaluate(raw, &env).await;
        // Trust on first use: a delivered first use of a signing key teaches the store (the
        // milter does the same after its decision).
        self.engine.remember_signer(&analysis).await;
        let body = analysis.decision.body.take();
        Decision {
            action: analysis.decision.disposition,
            reasons: decisive_first(&analysis.verdict),
            reply: analysis.decision.reply.clone(),
            edits: analysis.decision.edits.clone(),
            body,
            analysis: Some(Arc::new(analysis)),
        }
    }

    fn reload(&self) -> Result<(), String> {
        let Some(source) = &self.reload_from else {
            return Ok(());
        };
        self.engine.set_policy(source()?);
        Ok(())
    }
}

/// The verdict's reasons with the decisive ones (those asking for the verdict's own action)
/// first, then the others most severe first, each code once: the SMTP reply names the first
/// few, so the client reads why. (An allowed sender's accept leads with `allow.sender`, before
/// the findings it overrode.)
fn decisive_first(verdict: &unspoof_engine::Verdict) -> Vec<Reason> {
    let mut ordered: Vec<&unspoof_engine::Reason> = verdict.reasons.iter().collect();
    ordered.sort_by_key(|r| (r.action != verdict.action, std::cmp::Reverse(r.action)));
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
