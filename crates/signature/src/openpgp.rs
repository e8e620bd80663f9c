//! OpenPGP with rPGP: RFC 3156 detached signatures over the first MIME part, and cleartext
//! signatures (RFC 9580 section 7) in a text body.

use std::io::Cursor;

use pgp::{
    composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey},
    crypto::hash::HashAlgorithm,
    packet::{Signature, SignatureType},
    types::{Fingerprint, KeyDetails, KeyId, PublicParams},
};
use rsa::traits::PublicKeyParts;

use crate::{Anchor, Form, MIN_KEY_BITS, Problem, SignatureCheck, SignedMail, address_of};

/// The OpenPGP keys the site trusts (the `[signatures] openpgp_keyring` folder's files).
#[derive(Default)]
pub struct OpenPgpKeys {
    keys: Vec<SignedPublicKey>,
}

impl OpenPgpKeys {
    /// Adds every public key in `data` (armored or binary, one or many). Keys whose
    /// self-signatures do not verify are refused. Returns how many were added.
    pub fn add(&mut self, data: &[u8]) -> Result<usize, String> {
        let parsed: Vec<SignedPublicKey> = parse_keys(data)?;
        let mut n = 0;
        for key in parsed {
            key.verify_bindings()
                .map_err(|e| format!("a key's self-signatures do not verify: {e}"))?;
            self.keys.push(key);
            n += 1;
        }
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_keys(data: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let trimmed = data.trim_ascii_start();
    let keys: Vec<_> = if trimmed.starts_with(b"-----BEGIN") {
        SignedPublicKey::from_armor_many(Cursor::new(data))
            .map_err(|e| e.to_string())?
            .0
            .collect()
    } else {
        SignedPublicKey::from_bytes_many(Cursor::new(data))
            .map_err(|e| e.to_string())?
            .collect()
    };
    keys.into_iter()
        .map(|k| k.map_err(|e| e.to_string()))
        .collect()
}

pub(crate) fn verify_detached(
    signed: &[u8],
    sig: &[u8],
    carried: &[Vec<u8>],
    now: i64,
    trusted: &OpenPgpKeys,
) -> SignedMail {
    let text = String::from_utf8_lossy(sig);
    let parsed = if sig.trim_ascii_start().starts_with(b"-----BEGIN") {
        DetachedSignature::from_string(&text).map(|(s, _)| s)
    } else {
        DetachedSignature::from_bytes(Cursor::new(sig))
    };
    let sig = match parsed {
        Ok(s) => s.signature,
        Err(e) => {
            return SignedMail::unverifiable(
                Form::PgpMime,
                format!("the signature part is not an OpenPGP signature: {e}"),
            );
        }
    };
    judge(Form::PgpMime, &[sig], carried, now, trusted, signed)
}

pub(crate) fn verify_inline(
    body: &[u8],
    carried: &[Vec<u8>],
    now: i64,
    trusted: &OpenPgpKeys,
) -> SignedMail {
    let text = String::from_utf8_lossy(body);
    let Some(start) = text.find("-----BEGIN PGP SIGNED MESSAGE-----") else {
        return SignedMail::unverifiable(Form::PgpInline, "no cleartext signature block");
    };
    // The block ends with its armor tail; what follows (a blank line a mail client or SMTP
    // client added, a list footer) is not signed and rPGP refuses trailing data.
    const END: &str = "-----END PGP SIGNATURE-----";
    let block = match text[start..].find(END) {
        Some(i) => &text[start..start + i + END.len()],
        None => &text[start..],
    };
    let msg = match CleartextSignedMessage::from_string(block) {
        Ok((m, _)) => m,
        Err(e) => {
            return SignedMail::unverifiable(
                Form::PgpInline,
                format!("the cleartext signature block is malformed: {e}"),
            );
        }
    };
    let signed_text = msg.signed_text();
    let sigs = msg.signatures().to_vec();
    judge(
        Form::PgpInline,
        &sigs,
        carried,
        now,
        trusted,
        signed_text.as_bytes(),
    )
}

/// A key that may have made a signature: the whole key (for its identities and state) and
/// which component (primary or a subkey) matches the issuer.
struct Candidate<'k> {
    key: &'k SignedPublicKey,
    anchor: Anchor,
}

fn judge(
    form: Form,
    sigs: &[Signature],
    carried: &[Vec<u8>],
    now: i64,
    trusted: &OpenPgpKeys,
    data: &[u8],
) -> SignedMail {
    let Some(sig) = sigs.first() else {
        return SignedMail::unverifiable(form, "no signature");
    };
    let carried_keys: Vec<SignedPublicKey> = carried
        .iter()
        .filter_map(|k| parse_keys(k).ok())
        .flatten()
        .filter(|k| k.verify_bindings().is_ok())
        .collect();
    let candidates = trusted
        .keys
        .iter()
        .map(|key| Candidate {
            key,
            anchor: Anchor::Keyring,
        })
        .chain(carried_keys.iter().map(|key| Candidate {
            key,
            anchor: Anchor::Message,
        }));
    let issuers: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|f| format!("{f:X}"))
        .chain(sig.issuer_key_id().iter().map(|k| hex(k.as_ref())))
        .collect();
    let signed_at = sig.created().map(|t| t.as_secs() as i64);
    let mut bad_with: Option<(&SignedPublicKey, Anchor)> = None;
    for c in candidates {
        // The primary key first, then each subkey.
        let mut components: Vec<(Component<'_>, Option<&[Signature]>)> =
            vec![(Component::Primary(&c.key.primary_key), None)];
        for sub in &c.key.public_subkeys {
            components.push((Component::Sub(&sub.key), Some(&sub.signatures)));
        }
        for (component, binding) in components {
            if !issued_by(sig, component.fingerprint(), component.key_id()) {
                continue;
            }
            if !component.verifies(sig, data) {
                bad_with.get_or_insert((c.key, c.anchor));
                continue;
            }
            let mut problems = key_problems(c.key, binding, component, now);
            if matches!(
                sig.hash_alg(),
                Some(HashAlgorithm::Sha1) | Some(HashAlgorithm::Md5)
            ) {
                problems.push(Problem::WeakHash(format!(
                    "{:?}",
                    sig.hash_alg().expect("matched")
                )));
            }
            return SignedMail {
                form,
                check: SignatureCheck::Valid,
                detail: None,
                fingerprint: Some(format!("{:X}", c.key.primary_key.fingerprint())),
                identities: identities(c.key),
                bound: false,
                anchor: c.anchor,
                problems,
                signed_at,
                part: None,
                unsigned: Vec::new(),
            };
        }
    }
    if let Some((key, anchor)) = bad_with {
        return SignedMail {
            form,
            check: SignatureCheck::Bad,
            detail: Some(
                "the signature does not match the signed content (altered, or forged)".into(),
            ),
            fingerprint: Some(format!("{:X}", key.primary_key.fingerprint())),
            identities: identities(key),
            bound: false,
            anchor,
            problems: Vec::new(),
            signed_at,
            part: None,
            unsigned: Vec::new(),
        };
    }
    let mut out = SignedMail::unverifiable(
        form,
        format!(
            "no key for the signer ({}) in the keyring or the message",
            if issuers.is_empty() {
                "no issuer named".to_string()
            } else {
                issuers.join(", ")
            }
        ),
    );
    out.check = SignatureCheck::NoKey;
    out.signed_at = signed_at;
    out
}

/// A key component that may have made a signature: the primary key or a subkey.
#[derive(Clone, Copy)]
enum Component<'k> {
    Primary(&'k pgp::packet::PublicKey),
    Sub(&'k pgp::packet::PublicSubkey),
}

impl Component<'_> {
    fn fingerprint(self) -> Fingerprint {
        match self {
            Component::Primary(k) => k.fingerprint(),
            Component::Sub(k) => k.fingerprint(),
        }
    }
    fn key_id(self) -> KeyId {
        match self {
            Component::Primary(k) => k.legacy_key_id(),
            Component::Sub(k) => k.legacy_key_id(),
        }
    }
    fn created(self) -> i64 {
        match self {
            Component::Primary(k) => k.created_at().as_secs() as i64,
            Component::Sub(k) => k.created_at().as_secs() as i64,
        }
    }
    fn verifies(self, sig: &Signature, data: &[u8]) -> bool {
        match self {
            Component::Primary(k) => sig.verify(k, data).is_ok(),
            Component::Sub(k) => sig.verify(k, data).is_ok(),
        }
    }
    fn rsa_bits(self) -> Option<u32> {
        let params = match self {
            Component::Primary(k) => k.public_params(),
            Component::Sub(k) => k.public_params(),
        };
        match params {
            PublicParams::RSA(p) => Some(p.key.size() as u32 * 8),
            _ => None,
        }
    }
}

fn issued_by(sig: &Signature, fp: Fingerprint, id: KeyId) -> bool {
    let fps = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    (fps.is_empty() && ids.is_empty())
        || fps.iter().any(|f| **f == fp)
        || ids.iter().any(|k| **k == id)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn identities(key: &SignedPublicKey) -> Vec<String> {
    let mut out: Vec<String> = key
        .details
        .users
        .iter()
        .filter(|u| {
            // A user id revoked by its own key no longer names the signer.
            !u.signatures
                .iter()
                .any(|s| s.typ() == Some(SignatureType::CertRevocation))
        })
        .filter_map(|u| address_of(&String::from_utf8_lossy(u.id.id())))
        .collect();
    out.dedup();
    out
}

/// Revocation, expiry (of the key and of the signing subkey) and size, at `now`.
fn key_problems(
    key: &SignedPublicKey,
    binding: Option<&[Signature]>,
    component: Component<'_>,
    now: i64,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let primary = &key.primary_key;
    if key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok())
    {
        out.push(Problem::Revoked("the key is revoked by its owner".into()));
    }
    if let Some(sigs) = binding
        && sigs
            .iter()
            .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
    {
        out.push(Problem::Revoked("the signing subkey is revoked".into()));
    }
    // Expiry: the newest self-signature that says (user id certifications, direct key
    // signatures), counted from the key's creation.
    let created = primary.created_at().as_secs() as i64;
    let newest = |sigs: &mut dyn Iterator<Item = &Signature>| {
        sigs.filter(|s| s.key_expiration_time().is_some() || s.created().is_some())
            .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
            .and_then(|s| s.key_expiration_time())
    };
    let primary_expiry = newest(
        &mut key
            .details
            .users
            .iter()
            .flat_map(|u| u.signatures.iter())
            .chain(key.details.direct_signatures.iter()),
    );
    if let Some(d) = primary_expiry.filter(|d| d.as_secs() > 0) {
        let end = created + d.as_secs() as i64;
        if end <= now {
            out.push(Problem::Expired(format!(
                "the key expired at {end} (Unix time)"
            )));
        }
    }
    if let Some(sigs) = binding {
        let sub_created = component.created();
        if let Some(d) = newest(&mut sigs.iter()).filter(|d| d.as_secs() > 0) {
            let end = sub_created + d.as_secs() as i64;
            if end <= now && !out.iter().any(|p| matches!(p, Problem::Expired(_))) {
                out.push(Problem::Expired(format!(
                    "the signing subkey expired at {end} (Unix time)"
                )));
            }
        }
    }
    if let Some(bits) = component.rsa_bits().filter(|b| *b < MIN_KEY_BITS) {
        out.push(Problem::SmallKey(bits));
    }
    out
}
