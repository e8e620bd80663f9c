//! The adapter from [`Decide`] to the real engine (`unspoof_engine::Engine`): what
//! `unspoof serve` runs. Translates envelopes and verdicts; decides nothing itself.

use std::path::PathBuf;

use unspoof_engine::{Engine, Policy};

use crate::decide::{Action, Decide, Decision, Envelope, Reason};

/// The engine as a [`Decide`]r. `policy_path` is re-read on [`Decide::reload`] (SIGHUP).
pub struct EngineDecider {
    engine: Engine,
    policy_path: Option<PathBuf>,
}

impl EngineDecider {
    pub fn new(engine: Engine, policy_path: Option<PathBuf>) -> Self {
        EngineDecider {
            engine,
            policy_path,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Decide for EngineDecider {
    async fn decide(&self, raw: &[u8], envelope: &Envelope, authserv_id: &str) -> Decision {
        let env = unspoof_engine::Envelope {
            ip: envelope.ip,
            helo: envelope.helo.clone(),
            mail_from: envelope.mail_from.clone(),
            rcpt: envelope.rcpt.clone(),
            received_at: envelope.received_at,
            auth_user: envelope.auth_user.clone(),
        };
        let analysis = self.engine.evaluate(raw, &env).await;
        let action = match analysis.verdict.action {
            unspoof_engine::Action::Accept => Action::Accept,
            unspoof_engine::Action::Tag => Action::Tag,
            unspoof_engine::Action::Quarantine => Action::Quarantine,
            unspoof_engine::Action::Reject => Action::Reject,
        };
        let mut headers = analysis.authentication_results(authserv_id);
        if action == Action::Tag {
            // Until the engine's tag_message (issue 3) rewrites the message, the verdict is
            // at least visible to filters downstream.
            let codes = analysis.verdict.codes().join(", ");
            headers.push_str(&format!("X-Unspoof-Verdict: tag; reasons={codes}\r\n"));
        }
        Decision {
            action,
            reasons: analysis
                .verdict
                .reasons
                .iter()
                .map(|r| Reason {
                    code: r.code.clone(),
                    message: r.message.clone(),
                })
                .collect(),
            headers,
            rewritten: None,
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
