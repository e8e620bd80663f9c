//! The unspoof engine: one message, its SMTP envelope, a DNS view and a policy go in; a verdict
//! that explains itself comes out.
//!
//! **Architecture invariant:** the engine does no I/O of its own beyond the DNS interface in
//! [`dns`], so the same message and the same DNS answers always give the same verdict.
//!
//! Main types: [`Engine`] (policy + DNS, shared by every front door), [`Envelope`] (what SMTP
//! said), [`Analysis`] (everything found, serialisable as the versioned JSON schema) and
//! [`verdict::Verdict`] (action + reasons).

// The layers below the verdict, each its own crate; re-exported so that the paths
// `unspoof_engine::{message, address, dns, auth}::...` keep working in every crate.
pub use unspoof_auth as auth;
pub use unspoof_dns as dns;
pub use unspoof_message as message;
pub use unspoof_message::address;
pub mod bounce;
pub mod contact;
pub mod decision;
pub mod domain;
pub mod findings;
pub mod policy;
pub mod signed;
pub mod tag;
pub mod trace;
pub mod user_report;
pub mod verdict;

use std::{
    net::IpAddr,
    sync::{Arc, RwLock},
};

use serde::Serialize;

pub use auth::{AuthResults, Word};
pub use auth::{is_spf_record_text, spf_record_problem};
pub use decision::{Decision, Disposition, HeaderEdit, Outcome, SmtpReply};
pub use dns::Dns;
pub use message::Headers;
pub use policy::Policy;
pub use trace::Trace;
pub use verdict::{Action, Reason, Verdict};

/// Version of the JSON produced from [`Analysis`]. Bumped when a field changes meaning or goes
/// away; adding a field does not bump it. Documented in `docs/json-schema.md`.
pub const SCHEMA: &str = "unspoof.analysis/1";

/// The SMTP envelope of one message, as far as it is known.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// The client that connected to us.
    pub ip: Option<IpAddr>,
    pub helo: Option<String>,
    /// The reverse path without angle brackets; `Some("")` for the null sender `<>`.
    pub mail_from: Option<String>,
    pub rcpt: Vec<String>,
    /// Unix time the message reached us; with `None` the topmost Received date stands in.
    pub received_at: Option<i64>,
    /// The SASL login of a submission client.
    pub auth_user: Option<String>,
    /// Whether the message's sender domain is new to its recipients: `Some(true)` when at
    /// least one recipient has never been delivered mail from it, `Some(false)` when all have,
    /// `None` when nobody knows (no store, or it did not answer in time). The front door asks
    /// its store before it calls the engine ([`contact::first_contact`]); the engine does no
    /// I/O of its own.
    pub first_contact: Option<bool>,
    /// Whether the message's From address has written to this site before: `Some(true)` when
    /// mail from it was ever delivered here (accepted, tagged, or released from quarantine),
    /// `Some(false)` when never, `None` when nobody knows. Asked by the front door like
    /// `first_contact` ([`contact::known_sender`]); it softens a display-name impersonation
    /// (`findings/correspondent.rs`).
    pub known_sender: Option<bool>,
    /// Whether the message a bounce or auto-reply answers is one we sent: `Some(true)` when
    /// its Message-ID is in our outbound records, `Some(false)` when it is not, `None` when
    /// nobody knows (not a notification, no store, no answer in time). The front door asks its
    /// store before it calls the engine ([`bounce::sent_by_us`]).
    pub sent_by_us: Option<bool>,
    /// Whether the message's From address is on the site's allow list (the console's "release
    /// and allow the sender") for every recipient: `Some(true)` lifts a quarantine or tag to
    /// an accept with the reason `allow.sender` (a reject stays); `Some(false)` or `None`
    /// (no store, no answer in time) leaves the verdict as the findings made it. With an
    /// allow list ([`Engine::with_sender_allow_list`]) the engine asks it itself, only when the
    /// findings make a quarantine or a tag.
    pub allowed_sender: Option<bool>,
    /// The key fingerprints the From address validly signed with before (trust on first use,
    /// [`signed::SignerHistory`]): `Some(vec![])` when never, `None` when nobody knows.
    pub signing_keys_seen: Option<Vec<String>>,
}

/// The envelope as the analysis used it, and which parts were reconstructed from the message.
#[derive(Debug, Clone, Serialize)]
pub struct EnvelopeReport {
    pub ip: Option<IpAddr>,
    pub helo: Option<String>,
    pub mail_from: Option<String>,
    pub rcpt: Vec<String>,
    /// Fields taken from the message instead of SMTP: `ip`, `helo` (from the origin hop),
    /// `mail_from` (from Return-Path).
    pub inferred: Vec<&'static str>,
    /// The front door's first-contact answer ([`Envelope::first_contact`]); absent if unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_contact: Option<bool>,
    /// The front door's answer whether the From address has written here before
    /// ([`Envelope::known_sender`]); absent if unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_sender: Option<bool>,
    /// The front door's answer to "did we send the message this notification answers?"
    /// ([`Envelope::sent_by_us`]); absent if unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_by_us: Option<bool>,
    /// The front door's allow-list answer ([`Envelope::allowed_sender`]); absent if unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_sender: Option<bool>,
    /// The SASL login of a submission client ([`Envelope::auth_user`]); absent for others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
}

/// A short identification of the message for reports.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MessageSummary {
    pub from: Option<String>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub date: Option<String>,
    pub size: usize,
}

/// Everything the engine found about one message. Serialises to the versioned JSON schema.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub schema: &'static str,
    pub verdict: Verdict,
    /// What every front door does with the message: disposition, SMTP reply, header edits and
    /// the new body of a banner ([`decision`]).
    pub decision: Decision,
    pub envelope: EnvelopeReport,
    pub message: MessageSummary,
    pub auth: AuthResults,
    pub trace: Trace,
    /// The person-level signature (PGP/MIME, inline OpenPGP, S/MIME), when the message is
    /// signed: `crate::signed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<signed::SignatureReport>,
    /// The DNS view the answers came from ("zone files", "system resolver", "offline", ...).
    pub dns: String,
    /// Our authserv-id.
    #[serde(skip)]
    pub authserv_id: String,
}

impl Analysis {
    /// The RFC 8601 Authentication-Results header field, ending in CRLF.
    pub fn authentication_results(&self, authserv_id: &str) -> String {
        let header = self.auth.header(authserv_id, self.envelope.ip);
        match (&self.signature, header.strip_suffix("\r\n")) {
            (Some(s), Some(head)) if self.auth.checked => {
                format!("{head};\r\n\t{}\r\n", s.resinfo())
            }
            _ => header,
        }
    }
}

/// The decision maker shared by every front door. Cheap to clone; the policy can be replaced
/// while it runs (SIGHUP).
#[derive(Clone)]
pub struct Engine {
    policy: Arc<RwLock<Arc<Policy>>>,
    dns: Arc<Dns>,
    /// The store's memory, an optional input like the DNS view: asked before each verdict
    /// ([`contact::ask_history`]) unless the envelope already carries the answers.
    contacts: Option<Arc<dyn contact::ContactHistory>>,
    outbound: Option<Arc<dyn bounce::OutboundHistory>>,
    allow: Option<Arc<dyn contact::SenderAllowList>>,
    signers: Option<Arc<dyn signed::SignerHistory>>,
    /// Keys and CAs for person-level signatures, loaded by the front door (`crate::signed`);
    /// replaced with the policy on SIGHUP ([`Engine::set_signature_trust`]).
    signature_trust: Arc<RwLock<Arc<signed::TrustStore>>>,
}

impl Engine {
    pub fn new(policy: Policy, dns: Dns) -> Self {
        Engine {
            policy: Arc::new(RwLock::new(Arc::new(policy))),
            dns: Arc::new(dns),
            contacts: None,
            outbound: None,
            allow: None,
            signers: None,
            signature_trust: Arc::default(),
        }
    }

    /// Asks `history` (the store) before each verdict whether the sender is new to the
    /// recipients and whether its From address wrote here before (`contact.*`,
    /// `impersonation.*`).
    pub fn with_contact_history(mut self, history: Arc<dyn contact::ContactHistory>) -> Self {
        self.contacts = Some(history);
        self
    }

    /// Asks `history` (the store) before each verdict whether we sent the message a bounce or
    /// auto-reply answers (`backscatter.*`).
    pub fn with_outbound_history(mut self, history: Arc<dyn bounce::OutboundHistory>) -> Self {
        self.outbound = Some(history);
        self
    }

    /// Asks `allow` (the store's allow list), when the findings make a quarantine or a tag,
    /// whether the From address is allowed for every recipient: such a message is accepted
    /// instead (`allow.sender`). Any other verdict does not ask: the list cannot change it, and
    /// the question is a database query.
    pub fn with_sender_allow_list(mut self, allow: Arc<dyn contact::SenderAllowList>) -> Self {
        self.allow = Some(allow);
        self
    }

    /// Asks `history` (the store) before each verdict on a signed message which keys its
    /// sender signed with before (trust on first use, `signature.key_changed`); the doors
    /// teach it a first use after delivering ([`Engine::remember_signer`]).
    pub fn with_signer_history(mut self, history: Arc<dyn signed::SignerHistory>) -> Self {
        self.signers = Some(history);
        self
    }

    /// The keys (OpenPGP keyring) and CAs (S/MIME) signatures are judged against; the front
    /// door loads them from `[signatures]` (no trust material: no signature is `proven`
    /// except by memory).
    pub fn with_signature_trust(mut self, trust: signed::TrustStore) -> Self {
        self.signature_trust = Arc::new(RwLock::new(Arc::new(trust)));
        self
    }

    /// Replaces the signature trust for messages evaluated from now on (what a reload does
    /// after the front door re-read `[signatures]`). Built once per configuration: every
    /// message shares it.
    pub fn set_signature_trust(&self, trust: signed::TrustStore) {
        let mut slot = match self.signature_trust.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(trust);
    }

    fn signature_trust(&self) -> Arc<signed::TrustStore> {
        match self.signature_trust.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the policy for messages evaluated from now on.
    pub fn set_policy(&self, policy: Policy) {
        let mut slot = match self.policy.write() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(policy);
    }

    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// Analyses one message and decides what every front door does with it
    /// ([`Analysis::decision`]). Never fails: a malformed message is itself a finding, and a
    /// panic inside the engine is caught and becomes a defer (`engine.panic`), never an accept.
    /// With a contact or outbound history ([`Engine::with_contact_history`]) it is asked first,
    /// unless the envelope already carries its answers (an allow list after the findings, for a
    /// quarantine or a tag only); so is a signer history
    /// ([`Engine::with_signer_history`]) for a signed message without
    /// [`Envelope::signing_keys_seen`].
    pub async fn evaluate(&self, raw: &[u8], envelope: &Envelope) -> Analysis {
        // Pinned where it is, inside this future: `Box::pin(run)` moved the whole 22 KB state
        // (the four authentication futures joined) into the heap on every message.
        let run = std::pin::pin!(async {
            let asked;
            let unanswered = envelope.first_contact.is_none()
                && envelope.known_sender.is_none()
                && envelope.sent_by_us.is_none()
                && envelope.allowed_sender.is_none();
            let ask_contacts = (self.contacts.is_some() || self.outbound.is_some()) && unanswered;
            // The allow list can change only a quarantine or a tag: it is asked after the
            // findings, for those alone (most mail never costs the store's allow-list query).
            let allow = self.allow.as_deref().filter(|_| unanswered);
            let signers = self
                .signers
                .as_deref()
                .filter(|_| envelope.signing_keys_seen.is_none());
            let envelope = if ask_contacts || signers.is_some() {
                let mut e = envelope.clone();
                let contacts = async {
                    if ask_contacts {
                        let history = contact::History {
                            contacts: self.contacts.as_deref(),
                            outbound: self.outbound.as_deref(),
                            allow: None,
                        };
                        contact::ask_history(history, raw, &mut e).await;
                    }
                };
                let keys = async {
                    match signers {
                        Some(h) => signed::signing_keys_seen(h, raw).await,
                        None => None,
                    }
                };
                let ((), keys) = tokio::join!(contacts, keys);
                if signers.is_some() {
                    e.signing_keys_seen = keys;
                }
                asked = e;
                &asked
            } else {
                envelope
            };
            self.analyse(raw, envelope, allow).await
        });
        match (CatchUnwind { inner: run }).await {
            Ok(analysis) => analysis,
            Err(()) => self.failed(raw, envelope),
        }
    }

    /// The analysis of a message the engine failed on: nothing checked, deferred.
    fn failed(&self, raw: &[u8], envelope: &Envelope) -> Analysis {
        let policy = self.policy();
        let input = auth::AuthInput {
            ip: envelope.ip,
            helo: envelope.helo.as_deref().unwrap_or(""),
            mail_from: envelope.mail_from.as_deref().unwrap_or(""),
            host_domain: &policy.hostname,
        };
        let why = "the engine failed on this message";
        Analysis {
            schema: SCHEMA,
            verdict: Verdict::from_reasons(vec![Reason::new(
                "engine.panic",
                Action::Accept,
                format!("{why}; it was deferred, so the sender retries"),
            )]),
            decision: Decision::failed(),
            envelope: EnvelopeReport {
                ip: envelope.ip,
                helo: envelope.helo.clone(),
                mail_from: envelope.mail_from.clone(),
                rcpt: envelope.rcpt.clone(),
                inferred: Vec::new(),
                first_contact: None,
                known_sender: None,
                sent_by_us: None,
                allowed_sender: None,
                auth_user: envelope.auth_user.clone(),
            },
            // The summary for the records (Message-ID, From, Subject), if reading it does not
            // fail too.
            message: std::panic::catch_unwind(|| {
                let raw = message::to_crlf(raw);
                summarize(&raw, &Headers::parse(&raw))
            })
            .unwrap_or_else(|_| MessageSummary {
                size: raw.len(),
                ..MessageSummary::default()
            }),
            auth: AuthResults::unchecked(&input, why),
            trace: Trace::default(),
            signature: None,
            dns: self.dns.description().to_string(),
            authserv_id: policy.hostname.clone(),
        }
    }

    /// `allow`: the allow list to ask when the verdict is a quarantine or a tag (the only
    /// verdicts it can lift), once the findings are known.
    async fn analyse(
        &self,
        raw: &[u8],
        envelope: &Envelope,
        allow: Option<&dyn contact::SenderAllowList>,
    ) -> Analysis {
        #[cfg(debug_assertions)]
        if raw
            .windows(PANIC_MARKER.len())
            .any(|w| w == PANIC_MARKER.as_bytes())
        {
            panic!("the test marker asked the engine to panic");
        }
        let envelope_in = envelope;
        let policy = self.policy();
        let raw = message::to_crlf(raw);
        let headers = Headers::parse(&raw);

        let mut trace =
            trace::build_trace(&headers, envelope.ip, &policy.trust(), envelope.received_at);

        // Reconstruct what SMTP did not tell us (analysis of a stored message).
        let mut inferred = Vec::new();
        let ip = envelope.ip.or_else(|| {
            let ip = trace.origin.as_ref().map(|o| o.ip);
            if ip.is_some() {
                inferred.push("ip");
            }
            ip
        });
        let helo = envelope.helo.clone().or_else(|| {
            let helo = trace.origin.as_ref().and_then(|o| o.helo.clone());
            if helo.is_some() {
                inferred.push("helo");
            }
            helo
        });
        let mail_from = envelope.mail_from.clone().or_else(|| {
            let rp = headers
                .first("Return-Path")
                .map(|h| strip_angle(&h.value_unfolded()));
            if rp.is_some() {
                inferred.push("mail_from");
            }
            rp
        });

        let input = auth::AuthInput {
            ip,
            helo: helo.as_deref().unwrap_or(""),
            mail_from: mail_from.as_deref().unwrap_or(""),
            host_domain: &policy.hostname,
        };
        // From and Reply-To read once: DMARC judges the From the findings see.
        let (from, reply_to) = findings::read_addresses(&headers);
        let auth = auth::authenticate_headers(&raw, &headers, &from, input, &self.dns).await;

        if let Some(origin) = trace.origin.as_mut() {
            origin.rdns = self.reverse_name(origin.ip).await;
        }

        let mut envelope = EnvelopeReport {
            ip,
            helo,
            mail_from,
            rcpt: envelope.rcpt.clone(),
            inferred,
            first_contact: envelope.first_contact,
            known_sender: envelope.known_sender,
            auth_user: envelope.auth_user.clone(),
            sent_by_us: envelope.sent_by_us,
            allowed_sender: envelope.allowed_sender,
        };
        let signature = self.signature(&raw, &headers, &from, &trace, envelope_in);
        let mut context = findings::Context::with_addresses(
            &raw,
            &headers,
            &envelope,
            &auth,
            &trace,
            &policy,
            (from, reply_to),
        );
        context.signature = signature.as_ref();
        let mut verdict = Verdict::from_reasons(findings::collect(&context));
        // The allow list's key, the first From mailbox as `contact::ask_history` keys it,
        // made only for a verdict the list can lift.
        if let Some(list) = allow
            && matches!(verdict.action, Action::Quarantine | Action::Tag)
            && !envelope.rcpt.is_empty()
            && let Some(address) = context
                .from
                .first()
                .and_then(|m| contact::address_key(&m.address))
        {
            envelope.allowed_sender = contact::allowed_sender_of(
                list,
                &address,
                &envelope.rcpt,
                contact::ALLOW_LIST_BUDGET,
            )
            .await;
        }
        if envelope.allowed_sender == Some(true) {
            verdict.lift_for_allowed_sender();
        }
        let mut analysis = Analysis {
            schema: SCHEMA,
            verdict,
            decision: Decision::failed(),
            envelope,
            message: summarize(&raw, &headers),
            auth,
            trace,
            signature,
            dns: self.dns.description().to_string(),
            authserv_id: policy.hostname.clone(),
        };
        analysis.decision = decision::decide_parsed(&raw, &headers, &analysis, &policy);
        analysis
    }

    /// The person-level signature, judged at the trace's reference time (the front door's
    /// arrival time, else the topmost Received date, else the Date field).
    fn signature(
        &self,
        raw: &[u8],
        headers: &Headers<'_>,
        from: &[message::mailbox::Mailbox],
        trace: &Trace,
        envelope: &Envelope,
    ) -> Option<signed::SignatureReport> {
        let from = signed::from_addresses(from);
        let now = trace
            .reference_time
            .or_else(|| {
                let v = headers.first("Date")?.value_unfolded();
                let field = format!("Date: {v}\r\n\r\n");
                let parsed =
                    mail_parser::MessageParser::default().parse_headers(field.as_bytes())?;
                parsed.date().map(|d| d.to_timestamp())
            })
            .unwrap_or(0);
        let found = unspoof_signature::verify(raw, &from, now, &self.signature_trust())?;
        Some(signed::SignatureReport::judge(
            found,
            &from,
            envelope.signing_keys_seen.as_deref(),
        ))
    }

    /// After a door delivered (accepted or tagged) a message: teaches the signer history
    /// ([`Engine::with_signer_history`]) the key of a signature's first valid use, so the next
    /// message from the sender is judged against it (trust on first use). Nothing for other
    /// messages or decisions, or without a signer history; bounded by
    /// [`signed::SIGNER_HISTORY_BUDGET`].
    pub async fn remember_signer(&self, analysis: &Analysis) {
        let delivered = matches!(
            analysis.decision.disposition,
            Disposition::Accept | Disposition::Tag
        );
        if let (Some(history), Some(sig), true) = (&self.signers, &analysis.signature, delivered) {
            signed::remember_signer(history.as_ref(), sig).await;
        }
    }

    /// The first PTR name of `ip`, within the DNS budget; `None` without one.
    async fn reverse_name(&self, ip: IpAddr) -> Option<String> {
        let auth = self.dns.authenticator()?;
        let lookup = auth.ptr_lookup(ip, Some(&self.dns.caches().ptr));
        let found = tokio::time::timeout(self.dns.timeout(), lookup)
            .await
            .ok()?
            .ok()?;
        found
            .rrset
            .first()
            .map(|n| n.trim_end_matches('.').to_string())
    }
}

/// In debug builds (tests), a message holding this text makes the engine panic, so the tests
/// of every door can show that a panic is deferred, never accepted.
#[cfg(debug_assertions)]
pub const PANIC_MARKER: &str = "X-Unspoof-Test-Panic: engine";

/// A future that turns a panic while polling `inner` into `Err(())`.
struct CatchUnwind<'a, F> {
    inner: std::pin::Pin<&'a mut F>,
}

impl<F: std::future::Future> std::future::Future for CatchUnwind<'_, F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.get_mut().inner.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

fn strip_angle(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(v)
        .trim()
        .to_string()
}

fn summarize(raw: &[u8], headers: &Headers<'_>) -> MessageSummary {
    let decoded = |name: &str| {
        headers.first(name).map(|h| {
            let v = h.value_unfolded();
            message::codec::decode_words(&v)
        })
    };
    MessageSummary {
        from: decoded("From"),
        subject: decoded("Subject"),
        message_id: headers.first("Message-ID").map(|h| h.value_unfolded()),
        date: headers.first("Date").map(|h| h.value_unfolded()),
        size: raw.len(),
    }
}
