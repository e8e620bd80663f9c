//! Person-level signatures (PGP/MIME, inline OpenPGP, S/MIME) as the engine sees them: the
//! verification itself is `unspoof-signature`'s (crates/signature); here are its inputs (the
//! trust material the front door loaded, the store's memory of keys per sender) and its
//! outcome in RFC 8601 words, for the findings (`findings/signature.rs`), the JSON analysis and
//! Authentication-Results.
//!
//! **Authentication-Results.** S/MIME is RFC 7281's `smime` method with
//! `body.smime-identifier` (the signer's address). OpenPGP has no registered method; we write
//! `x-pgp` with `body.x-pgp-identifier`, an experimental name in the RFC 8601 sense that a
//! reader which does not know it skips (docs/signatures.md says why not `pgp`).
//!
//! **Trust on first use.** An OpenPGP key that only the message carries (an Autocrypt header)
//! and an S/MIME certificate that chains to no configured CA are anchored by memory: the
//! store's [`SignerHistory`] (given with [`crate::Engine::with_signer_history`], an input like
//! the contact history) is asked inside [`crate::Engine::evaluate`] which key fingerprints the
//! From address signed with before, unless [`Envelope::signing_keys_seen`] already carries the
//! answer (`analyze --signing-keys-seen` replays one). After delivering, every front door calls
//! [`crate::Engine::remember_signer`], which records the key of a first valid use. A different
//! key later is `signature.key_changed`.
//!
//! [`Envelope::signing_keys_seen`]: crate::Envelope::signing_keys_seen

use std::{future::Future, pin::Pin};

use serde::Serialize;
pub use unspoof_signature::{
    Anchor, CaBundle, Form, OpenPgpKeys, Problem, SignatureCheck, SignedMail, TrustStore,
};

use crate::auth::{Word, ar_comment, ar_value};

/// The store's memory of signing keys per sender address (trust on first use). `None` from
/// [`SignerHistory::keys_of`] means "could not tell", never a guess.
pub trait SignerHistory: Send + Sync {
    /// The fingerprints `address` (lower case) validly signed with before.
    fn keys_of<'a>(
        &'a self,
        address: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<String>>> + Send + 'a>>;
    /// Remembers `fingerprint` as the key of `address`.
    fn remember<'a>(
        &'a self,
        address: &'a str,
        fingerprint: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// How long a front door waits for [`SignerHistory::keys_of`] before it decides without the
/// answer ("unknown": the key stays unanchored). As for first contact, a slow store must not
/// hold mail up.
pub const SIGNER_HISTORY_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

/// The store's answer for a message that carries a signature (others are not asked about),
/// keyed on the first From address, within [`SIGNER_HISTORY_BUDGET`]: what
/// [`crate::Envelope::signing_keys_seen`] wants. Asked by [`crate::Engine::evaluate`].
pub(crate) async fn signing_keys_seen(
    history: &dyn SignerHistory,
    raw: &[u8],
) -> Option<Vec<String>> {
    let raw = crate::message::to_crlf(raw);
    let headers = crate::Headers::parse(&raw);
    let ct = headers
        .first("Content-Type")
        .map(|h| h.value_unfolded().to_ascii_lowercase())
        .unwrap_or_default();
    // A signed part may sit inside a multipart (`unspoof_signature::verify` reads it there).
    let nested =
        |what: &[u8]| ct.starts_with("multipart/") && memchr::memmem::find(&raw, what).is_some();
    let maybe_signed = ct.contains("multipart/signed")
        || ct.contains("pkcs7-mime")
        || nested(b"multipart/signed")
        || nested(b"pkcs7-mime")
        || memchr::memmem::find(&raw, b"-----BEGIN PGP SIGNED MESSAGE-----").is_some();
    if !maybe_signed {
        return None;
    }
    let (from, _) = crate::message::mailbox::read_addresses(&headers);
    let address = from_addresses(&from).into_iter().next()?;
    tokio::time::timeout(SIGNER_HISTORY_BUDGET, history.keys_of(&address))
        .await
        .ok()
        .flatten()
}

/// The step after a delivered decision (accept, tag; [`crate::Engine::remember_signer`] is
/// what the doors call and checks that): a signature that was a first use
/// ([`SignatureReport::remember`]) teaches `history` its sender's key.
pub(crate) async fn remember_signer(history: &dyn SignerHistory, sig: &SignatureReport) {
    if !sig.remember {
        return;
    }
    if let (Some(address), Some(fp)) = (&sig.identity, &sig.found.fingerprint) {
        let _ = tokio::time::timeout(SIGNER_HISTORY_BUDGET, history.remember(address, fp)).await;
    }
}

/// How the signature stands as evidence of the sender, after trust and binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Valid, bound to From, anchored (keyring, CA chain, or the key this sender used
    /// before), no problem: evidence of the real sender.
    Proven,
    /// The signature does not verify: the signed part was altered, or the signature forged.
    Bad,
    /// Valid, but the signer's identities are not the From address.
    OtherSigner,
    /// Valid and bound, but the key is revoked, expired, weak (SHA-1, MD5) or small.
    Flawed,
    /// Valid and bound, anchored only by memory, and the sender used another key before.
    KeyChanged,
    /// Valid and bound, anchored by nothing yet: the first time this sender signs (or
    /// nobody knows the history); recorded for the next time.
    FirstUse,
    /// Valid and bound (anchored, or a first use), but the signed part is not all the message
    /// shows: other parts, or text around an inline signed block, are not signed (a list
    /// footer, a forwarder's wrapper, or text added around a genuine signed part; RFC 3156 and
    /// RFC 8551 cover only their part). Never evidence of the whole message; not remembered.
    Partial,
    /// The key is unknown (OpenPGP, no key anywhere).
    NoKey,
    /// The structure could not be checked.
    Unverifiable,
}

/// A signature with its standing, as the analysis reports it (`signature` in the JSON).
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    #[serde(flatten)]
    pub found: SignedMail,
    /// The RFC 8601 word of Authentication-Results.
    pub result: Word,
    pub standing: Standing,
    /// The signer's identity that matched From (or the first one), for the reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Whether this signature's key is one the front door should remember for the sender
    /// (first valid use; `[signatures] trust_on_first_use`).
    pub remember: bool,
}

impl SignatureReport {
    /// Judges `found` for the From addresses `from` with the store's answer `seen`.
    pub fn judge(found: SignedMail, from: &[String], seen: Option<&[String]>) -> Self {
        let identity = found
            .identities
            .iter()
            .find(|i| from.iter().any(|f| f.eq_ignore_ascii_case(i)))
            .or(found.identities.first())
            .cloned();
        let flawed = found
            .problems
            .iter()
            .any(|p| !matches!(p, Problem::Chain(_)));
        let fp = found.fingerprint.as_deref().unwrap_or("");
        let mut remember = false;
        let standing = match found.check {
            SignatureCheck::Bad => Standing::Bad,
            SignatureCheck::NoKey => Standing::NoKey,
            SignatureCheck::Unverifiable => Standing::Unverifiable,
            SignatureCheck::Valid if !found.bound => Standing::OtherSigner,
            SignatureCheck::Valid if flawed => Standing::Flawed,
            SignatureCheck::Valid => match found.anchor {
                Anchor::Keyring | Anchor::CaChain => Standing::Proven,
                Anchor::Message | Anchor::None => match seen {
                    Some(keys) if keys.iter().any(|k| k.eq_ignore_ascii_case(fp)) => {
                        Standing::Proven
                    }
                    Some(keys) if !keys.is_empty() => Standing::KeyChanged,
                    Some(_) => {
                        remember = !fp.is_empty();
                        Standing::FirstUse
                    }
                    None => Standing::FirstUse,
                },
            },
        };
        // A signature over part of what the message shows proves that part only: never the
        // message's sender, never a key to remember (the unsigned rest may be anyone's).
        let standing = match standing {
            Standing::Proven | Standing::FirstUse if !found.unsigned.is_empty() => {
                remember = false;
                Standing::Partial
            }
            s => s,
        };
        let result = match standing {
            Standing::Proven => Word::Pass,
            Standing::Bad => Word::Fail,
            Standing::OtherSigner | Standing::Flawed | Standing::KeyChanged | Standing::Partial => {
                Word::Policy
            }
            Standing::FirstUse | Standing::NoKey => Word::Neutral,
            Standing::Unverifiable => Word::PermError,
        };
        SignatureReport {
            found,
            result,
            standing,
            identity,
            remember,
        }
    }

    /// The Authentication-Results resinfo: `smime=pass (...) body.smime-identifier=...`.
    pub fn resinfo(&self) -> String {
        let method = match self.found.form.method() {
            "smime" => "smime",
            _ => "x-pgp",
        };
        let mut out = format!("{method}={}", self.result);
        out.push_str(&format!(" ({})", ar_comment(&self.comment())));
        if let Some(id) = &self.identity {
            out.push_str(&format!(" body.{method}-identifier={}", ar_value(id)));
        }
        out
    }

    fn comment(&self) -> String {
        let what = match self.standing {
            Standing::Proven => "signer bound to From",
            Standing::Bad => "signature does not match the content",
            Standing::OtherSigner => "signed by someone other than From",
            Standing::Flawed => "revoked, expired or weak key",
            Standing::KeyChanged => "key differs from the one this sender used before",
            Standing::FirstUse => "key not anchored yet",
            Standing::Partial => "signature covers only part of the message",
            Standing::NoKey => "no key for the signer",
            Standing::Unverifiable => "signature could not be checked",
        };
        let anchor = match self.found.anchor {
            Anchor::Keyring => ", keyring",
            Anchor::CaChain => ", CA chain",
            Anchor::Message | Anchor::None => "",
        };
        format!("{what}{anchor}")
    }
}

/// The lower-case From addresses the signer's identities are compared with.
pub(crate) fn from_addresses(from: &[crate::message::mailbox::Mailbox]) -> Vec<String> {
    from.iter()
        .map(|m| {
            m.address
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_ascii_lowercase()
        })
        .collect()
}
