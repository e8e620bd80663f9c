//! Person-level mail signatures as evidence of the real sender: RFC 3156 PGP/MIME, inline
//! cleartext-signed OpenPGP, and RFC 8551 S/MIME (`multipart/signed` and opaque
//! `application/pkcs7-mime; smime-type=signed-data`).
//!
//! **No I/O**: the keys and certificates to trust come in as bytes ([`TrustStore`], loaded once
//! by the front door), the time to judge validity at comes in as a number; so the same message
//! and the same trust material always give the same [`SignedMail`] report.
//!
//! This crate reports facts (which form, did the signature verify over the exact bytes, who
//! signed, is the key trusted, revoked, expired, weak); the engine's `findings/signature.rs`
//! turns them into reasons. Crate choices (docs/signatures.md): OpenPGP with rPGP (`pgp`,
//! MIT/Apache; sequoia-openpgp is LGPL), S/MIME with OpenSSL's CMS through the `openssl` crate
//! (Apache-2.0; the RustCrypto `cms` crate only parses, it neither verifies signatures nor
//! builds chains).

mod mime;
mod openpgp;
mod smime;

use serde::Serialize;

pub use openpgp::OpenPgpKeys;
pub use smime::CaBundle;

/// Most bytes of a signed part verified: a larger message is reported `unverifiable`
/// (`SignatureCheck::Unverifiable`), never skipped as unsigned. 64 MiB, above the gateway's
/// default message size limit.
pub const MAX_SIGNED_BYTES: usize = 64 * 1024 * 1024;

/// RSA (and DSA) keys below this many bits are `small_key`.
pub const MIN_KEY_BITS: u32 = 2048;

/// How many levels of nested multiparts (a `multipart/mixed` around the signed part, and so on)
/// are searched for a signed part. Parts deeper than this count as unsigned content.
pub const MAX_NESTING: usize = 8;

/// The trust material, loaded by a front door (from `[signatures]` in unspoof.toml) and handed
/// to the engine. Cheap to share; immutable once built.
#[derive(Default)]
pub struct TrustStore {
    pub openpgp: OpenPgpKeys,
    pub ca: CaBundle,
}

/// How the message is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// RFC 3156 `multipart/signed; protocol="application/pgp-signature"`.
    PgpMime,
    /// A `-----BEGIN PGP SIGNED MESSAGE-----` block in a text/plain body.
    PgpInline,
    /// RFC 8551 `multipart/signed; protocol="application/pkcs7-signature"`.
    SmimeMultipart,
    /// RFC 8551 `application/pkcs7-mime; smime-type=signed-data`.
    SmimeOpaque,
}

impl Form {
    /// The Authentication-Results method: `smime` (RFC 7281) or `pgp` (ours, docs/signatures.md).
    pub fn method(self) -> &'static str {
        match self {
            Form::PgpMime | Form::PgpInline => "pgp",
            Form::SmimeMultipart | Form::SmimeOpaque => "smime",
        }
    }
}

/// Did the signature verify over the bytes it covers?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureCheck {
    /// The signature is correct for the signed bytes under the signer's key.
    Valid,
    /// The signature does not match: the content was altered, or the signature forged.
    Bad,
    /// The signature names an OpenPGP key that neither the keyring nor the message holds:
    /// the check ran, it just has nothing to check against. Never read as valid.
    NoKey,
    /// It could not be checked: no signer certificate, a malformed structure, too large.
    /// Never read as valid.
    Unverifiable,
}

/// Where the signer's key or certificate is trusted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// An OpenPGP key from the configured keyring folder.
    Keyring,
    /// An S/MIME certificate that chains to the configured CA bundle, valid now, for signing.
    CaChain,
    /// Only the message itself carries the key (an Autocrypt header, an attached key) or a
    /// certificate that does not chain: trusted on first use at best (the engine asks the
    /// store what key this sender used before).
    Message,
    /// No key or certificate at all.
    None,
}

/// What is wrong with a key or certificate whose signature verified (or did not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Problem {
    /// The key or certificate had expired at the reference time.
    Expired(String),
    /// The key (or signing subkey) carries a valid revocation, or the certificate is revoked.
    Revoked(String),
    /// The signature uses SHA-1 or MD5.
    WeakHash(String),
    /// An RSA/DSA key below [`MIN_KEY_BITS`].
    SmallKey(u32),
    /// The certificate does not chain to a trusted CA, or is not for e-mail signing (key
    /// usage, extended key usage), or another chain error; OpenSSL's words.
    Chain(String),
}

/// One signature found on the message.
#[derive(Debug, Clone, Serialize)]
pub struct SignedMail {
    pub form: Form,
    pub check: SignatureCheck,
    /// Why it is bad or unverifiable, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The key fingerprint (OpenPGP, hex upper case) or the certificate's SHA-256 fingerprint
    /// (S/MIME, hex upper case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The signer's e-mail identities: the user ids' addresses, the certificate's rfc822Names
    /// (and subject emailAddress), lower case.
    pub identities: Vec<String>,
    /// Whether one identity is a From address of the message.
    pub bound: bool,
    pub anchor: Anchor,
    pub problems: Vec<Problem>,
    /// The signature's creation time (Unix seconds), when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<i64>,
    /// The MIME part the signature is on ("1", "1.2": RFC 3501 numbering), when it is not the
    /// top-level entity: a signed part inside `multipart/mixed` (a list, a forwarder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// What the message shows that the signature does not cover: the other MIME parts with
    /// content ("part 2 (text/plain)"), text before or after an inline signed block. Empty when
    /// the signature covers all the message shows (its header aside, which these signatures
    /// never cover).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsigned: Vec<String>,
}

impl SignedMail {
    fn unverifiable(form: Form, detail: impl Into<String>) -> Self {
        SignedMail {
            form,
            check: SignatureCheck::Unverifiable,
            detail: Some(detail.into()),
            fingerprint: None,
            identities: Vec::new(),
            bound: false,
            anchor: Anchor::None,
            problems: Vec::new(),
            signed_at: None,
            part: None,
            unsigned: Vec::new(),
        }
    }

    fn bind(mut self, from: &[String]) -> Self {
        self.bound = self
            .identities
            .iter()
            .any(|id| from.iter().any(|f| f.eq_ignore_ascii_case(id)));
        self
    }
}

/// The signature of a message, if it is signed in one of the forms this crate knows.
///
/// `raw` is the whole message with CRLF line ends; `from` the From addresses; `now` the
/// reference time (Unix seconds) for expiry and certificate validity. `None`: not signed.
///
/// The top-level entity first; else the first signed part inside nested multiparts (RFC 3156
/// and RFC 8551 sign only their part: a `multipart/mixed` around it may add unsigned parts,
/// listed in [`SignedMail::unsigned`]). A `message/rfc822` part is another message and is not
/// searched.
pub fn verify(raw: &[u8], from: &[String], now: i64, trust: &TrustStore) -> Option<SignedMail> {
    let top = mime::Entity::parse(raw);
    let ct = top.content_type();
    let found = match signed_entity(&top, &ct, &top, now, trust) {
        Some(s) => Some(s),
        None if ct.mime.starts_with("multipart/") && may_hold_signed_part(top.body) => {
            nested(&top, &ct, now, trust)
        }
        None => None,
    };
    found.map(|s| s.bind(from))
}

/// The signature of `entity` itself, if it is a signed entity; `top` is the message (the
/// Autocrypt keys it carries).
fn signed_entity(
    entity: &mime::Entity<'_>,
    ct: &mime::ContentType,
    top: &mime::Entity<'_>,
    now: i64,
    trust: &TrustStore,
) -> Option<SignedMail> {
    match ct.mime.as_str() {
        "multipart/signed" => {
            let protocol = ct.param("protocol").unwrap_or("").to_ascii_lowercase();
            let form = match protocol.as_str() {
                "application/pgp-signature" => Form::PgpMime,
                "application/pkcs7-signature" | "application/x-pkcs7-signature" => {
                    Form::SmimeMultipart
                }
                _ => return None,
            };
            Some(multipart_signed(entity, top, ct, form, now, trust))
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => {
            let st = ct.param("smime-type").unwrap_or("").to_ascii_lowercase();
            // Without smime-type, a .p7m body may be signed or enveloped; only signed-data
            // is ours (enveloped mail is not evidence we can read).
            if st != "signed-data" && !(st.is_empty() && is_signed_data(entity)) {
                return None;
            }
            Some(match entity.decoded_body() {
                None => SignedMail::unverifiable(Form::SmimeOpaque, "the body's base64 is broken"),
                Some(der) if der.len() > MAX_SIGNED_BYTES => {
                    SignedMail::unverifiable(Form::SmimeOpaque, "larger than MAX_SIGNED_BYTES")
                }
                Some(der) => smime::verify(Form::SmimeOpaque, &der, None, now, &trust.ca),
            })
        }
        "text/plain" => {
            let body = entity.decoded_body()?;
            let begin = mime::find(&body, BEGIN_CLEARTEXT)?;
            let mut found = if body.len() > MAX_SIGNED_BYTES {
                SignedMail::unverifiable(Form::PgpInline, "larger than MAX_SIGNED_BYTES")
            } else {
                openpgp::verify_inline(&body, &carried_keys(top), now, &trust.openpgp)
            };
            found.unsigned = text_around(&body, begin);
            Some(found)
        }
        _ => None,
    }
}

const BEGIN_CLEARTEXT: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";

/// Whether a multipart body can hold a signed part at all (`multipart/signed`,
/// `pkcs7-mime`/`signed-data`, a cleartext block, in their usual spellings): a large unsigned
/// multipart (attachments) is not walked part by part. A part spelled otherwise is missed,
/// which only means no signature is reported, never a valid one.
fn may_hold_signed_part(body: &[u8]) -> bool {
    [&b"signed"[..], b"Signed", b"SIGNED", b"pkcs7", b"PKCS7"]
        .iter()
        .any(|w| mime::find(body, w).is_some())
}

/// The text of an inline-signed body outside its signed block: before
/// `-----BEGIN PGP SIGNED MESSAGE-----`, and after the line of `-----END PGP SIGNATURE-----`
/// (whitespace alone does not count).
fn text_around(body: &[u8], begin: usize) -> Vec<String> {
    let shows = |b: &[u8]| b.iter().any(|c| !c.is_ascii_whitespace());
    let mut out = Vec::new();
    if shows(&body[..begin]) {
        out.push("text before the signed block".to_string());
    }
    let after = mime::find(&body[begin..], b"-----END PGP SIGNATURE-----").map(|i| begin + i);
    if let Some(end) = after
        && shows(&body[end + 27..])
    {
        out.push("text after the signed block".to_string());
    }
    out
}

/// The first signed part inside the top-level multipart (depth first, up to [`MAX_NESTING`]
/// levels), with every other part that shows content listed as unsigned.
fn nested(
    top: &mime::Entity<'_>,
    ct: &mime::ContentType,
    now: i64,
    trust: &TrustStore,
) -> Option<SignedMail> {
    let mut walk = Walk {
        top,
        now,
        trust,
        found: None,
        unsigned: Vec::new(),
    };
    walk.multipart(top, ct, "", 0)?;
    let (path, mut found) = walk.found?;
    found.part = Some(path);
    found.unsigned.extend(walk.unsigned);
    Some(found)
}

struct Walk<'t, 'a> {
    top: &'t mime::Entity<'a>,
    now: i64,
    trust: &'t TrustStore,
    /// The first signed part and its path; later signed parts count as unsigned content (the
    /// one signature reported does not cover them).
    found: Option<(String, SignedMail)>,
    unsigned: Vec<String>,
}

impl Walk<'_, '_> {
    /// Visits the parts of `entity` (of type `ct`) if it is a multipart we search; `None` when
    /// it is not.
    fn multipart(
        &mut self,
        entity: &mime::Entity<'_>,
        ct: &mime::ContentType,
        path: &str,
        depth: usize,
    ) -> Option<()> {
        if !ct.mime.starts_with("multipart/") || depth >= MAX_NESTING {
            return None;
        }
        let parts = mime::parts(entity.body, ct.param("boundary")?)?;
        for (i, raw) in parts.into_iter().enumerate() {
            let path = if path.is_empty() {
                format!("{}", i + 1)
            } else {
                format!("{path}.{}", i + 1)
            };
            let part = mime::Entity::parse(raw);
            let part_ct = part.content_type();
            if self.found.is_none()
                && let Some(s) = signed_entity(&part, &part_ct, self.top, self.now, self.trust)
            {
                self.found = Some((path, s));
                continue;
            }
            if self.multipart(&part, &part_ct, &path, depth + 1).is_none()
                && part.body.iter().any(|c| !c.is_ascii_whitespace())
            {
                self.unsigned
                    .push(format!("part {path} ({})", part_ct.mime));
            }
        }
        Some(())
    }
}

fn is_signed_data(top: &mime::Entity<'_>) -> bool {
    // id-signedData 1.2.840.113549.1.7.2
    const SIGNED_DATA: &[u8] = &[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02,
    ];
    top.decoded_body().is_some_and(|der| {
        der.len() > 32 && mime::find(&der[..der.len().min(64)], SIGNED_DATA).is_some()
    })
}

fn multipart_signed(
    entity: &mime::Entity<'_>,
    top: &mime::Entity<'_>,
    ct: &mime::ContentType,
    form: Form,
    now: i64,
    trust: &TrustStore,
) -> SignedMail {
    let Some(boundary) = ct.param("boundary") else {
        return SignedMail::unverifiable(form, "multipart/signed without a boundary");
    };
    let Some(parts) = mime::parts(entity.body, boundary) else {
        return SignedMail::unverifiable(form, "multipart/signed without its closing boundary");
    };
    if parts.len() != 2 {
        return SignedMail::unverifiable(
            form,
            format!("multipart/signed with {} parts instead of 2", parts.len()),
        );
    }
    let signed = parts[0];
    if signed.len() > MAX_SIGNED_BYTES {
        return SignedMail::unverifiable(form, "larger than MAX_SIGNED_BYTES");
    }
    let sig = mime::Entity::parse(parts[1]);
    let Some(sig_bytes) = sig.decoded_body() else {
        return SignedMail::unverifiable(form, "the signature part's encoding is broken");
    };
    match form {
        Form::PgpMime => {
            openpgp::verify_detached(signed, &sig_bytes, &carried_keys(top), now, &trust.openpgp)
        }
        _ => smime::verify(form, &sig_bytes, Some(signed), now, &trust.ca),
    }
}

/// OpenPGP keys the message carries itself: Autocrypt headers' `keydata` (binary keys). Used
/// only as trust-on-first-use candidates ([`Anchor::Message`]).
fn carried_keys(top: &mime::Entity<'_>) -> Vec<Vec<u8>> {
    top.fields_named("autocrypt")
        .filter_map(|v| {
            let ct = mime::ContentType::parse(&format!("x; {v}"));
            unspoof_message::codec::base64_decode(ct.param("keydata")?.as_bytes())
        })
        .collect()
}

/// The address inside an OpenPGP user id (`Name <addr>` or a bare address), lower case.
pub(crate) fn address_of(user_id: &str) -> Option<String> {
    let a = match (user_id.rfind('<'), user_id.rfind('>')) {
        (Some(l), Some(r)) if l < r => &user_id[l + 1..r],
        _ => user_id.trim(),
    };
    (a.contains('@') && !a.contains(char::is_whitespace)).then(|| a.to_ascii_lowercase())
}
