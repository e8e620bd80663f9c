//! S/MIME (RFC 8551) with OpenSSL's CMS: the signature over the exact signed bytes first
//! (`CMS_verify` with the chain left out), then the signer certificate's chain to the
//! configured CA bundle at the reference time, for the S/MIME signing purpose (key usage and
//! extended key usage), through our own `X509_STORE` so no system clock or file is read.
//!
//! The `X509_STORE` is built once per bundle ([`CaBundle::add_pem`]) and shared by every
//! check: building it from the system's bundle (~150 certificates) cost ~1,600 times an
//! unsigned message, per message. The reference time differs per message, so it is set on
//! each verification context (`X509_STORE_CTX_set_time`), never on the shared store.

use openssl::{
    cms::{CMSOptions, CmsContentInfo},
    nid::Nid,
    pkcs7::{Pkcs7, Pkcs7Flags},
    pkey::Id,
    stack::Stack,
    x509::{
        X509, X509PurposeId, X509StoreContext, X509StoreContextRef, X509VerifyResult,
        store::{X509Store, X509StoreBuilder},
    },
};
use std::sync::OnceLock;

use crate::{Anchor, Form, MIN_KEY_BITS, Problem, SignatureCheck, SignedMail};

/// The CAs S/MIME certificates must chain to (`[signatures] smime_ca_bundle`, or the system's
/// bundle read by the front door), with the `X509_STORE` built from them once and shared by
/// every check (`X509_STORE` is safe to use from many threads at once).
#[derive(Default)]
pub struct CaBundle {
    certs: Vec<X509>,
    /// Built on first use after the last [`CaBundle::add_pem`] (which builds it at once, so a
    /// bundle OpenSSL refuses is an error at load, not per message).
    store: OnceLock<Result<X509Store, String>>,
}

impl CaBundle {
    /// Adds every certificate of a PEM bundle and builds the store; returns how many.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<usize, String> {
        let certs = X509::stack_from_pem(pem).map_err(|e| e.to_string())?;
        let n = certs.len();
        self.certs.extend(certs);
        self.store = OnceLock::new();
        self.store().map_err(str::to_string)?;
        Ok(n)
    }

    /// The store of these CAs for the S/MIME signing purpose, without a time: each check sets
    /// its reference time on its own context.
    fn store(&self) -> Result<&X509Store, &str> {
        self.store
            .get_or_init(|| {
                let build = || -> Result<X509Store, openssl::error::ErrorStack> {
                    let mut builder = X509StoreBuilder::new()?;
                    for c in &self.certs {
                        builder.add_cert(c.clone())?;
                    }
                    builder.set_purpose(X509PurposeId::SMIME_SIGN)?;
                    Ok(builder.build())
                };
                build().map_err(|e| format!("the CA store could not be built: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

// id-sha1 1.3.14.3.2.26 and id-md5 1.2.840.113549.2.5, as DER OIDs.
const SHA1_OID: &[u8] = &[0x06, 0x05, 0x2B, 0x0E, 0x03, 0x02, 0x1A];
const MD5_OID: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x02, 0x05];

pub(crate) fn verify(
    form: Form,
    der: &[u8],
    detached: Option<&[u8]>,
    now: i64,
    ca: &CaBundle,
) -> SignedMail {
    let mut cms = match CmsContentInfo::from_der(der) {
        Ok(c) => c,
        Err(e) => return SignedMail::unverifiable(form, format!("not a CMS structure: {e}")),
    };
    // The signer certificate, as the message carries it (PKCS7_get0_signers on the same DER).
    let p7 = match Pkcs7::from_der(der) {
        Ok(p) => p,
        Err(e) => {
            return SignedMail::unverifiable(form, format!("not a signed-data structure: {e}"));
        }
    };
    let carried: Vec<X509> = p7
        .signed()
        .and_then(|s| s.certificates())
        .map(|s| s.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    let empty = match Stack::<X509>::new() {
        Ok(s) => s,
        Err(e) => return SignedMail::unverifiable(form, e.to_string()),
    };
    let signer = match p7.signers(&empty, Pkcs7Flags::empty()) {
        Ok(s) => s.iter().next().map(|c| c.to_owned()),
        Err(_) => None,
    };
    let Some(signer) = signer else {
        return SignedMail::unverifiable(form, "the message carries no signer certificate");
    };

    // BINARY: the signed bytes are already canonical (CRLF), no translation.
    let flags = CMSOptions::NOVERIFY | CMSOptions::BINARY;
    let check = match cms.verify(None, None, detached, None, flags) {
        Ok(()) => SignatureCheck::Valid,
        Err(_) => SignatureCheck::Bad,
    };

    let fingerprint = signer
        .digest(openssl::hash::MessageDigest::sha256())
        .ok()
        .map(|d| d.iter().map(|b| format!("{b:02X}")).collect());
    let mut identities: Vec<String> = signer
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.email().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    for e in signer
        .subject_name()
        .entries_by_nid(Nid::PKCS9_EMAILADDRESS)
    {
        if let Ok(s) = e.data().to_string() {
            let s = s.to_ascii_lowercase();
            if !identities.contains(&s) {
                identities.push(s);
            }
        }
    }

    let mut problems = Vec::new();
    let chain = chain_error(&signer, &carried, now, ca);
    let anchor = match chain {
        None => Anchor::CaChain,
        Some((raw, words)) => {
            // X509_V_ERR_CERT_NOT_YET_VALID 9, CERT_HAS_EXPIRED 10, CERT_REVOKED 23
            match raw {
                10 | 9 => problems.push(Problem::Expired(words)),
                23 => problems.push(Problem::Revoked(words)),
                _ => problems.push(Problem::Chain(words)),
            }
            Anchor::Message
        }
    };
    if let Ok(key) = signer.public_key()
        && matches!(key.id(), Id::RSA | Id::DSA)
        && key.bits() < MIN_KEY_BITS
    {
        problems.push(Problem::SmallKey(key.bits()));
    }
    // The digest algorithms of the SignedData (and the signer info): SHA-1 or MD5 is weak. The
    // certificates' own signature algorithms use other OIDs (sha1WithRSAEncryption), so an
    // occurrence of the bare digest OID is the message's digest.
    if crate::mime::find(der, SHA1_OID).is_some() {
        problems.push(Problem::WeakHash("SHA-1".into()));
    } else if crate::mime::find(der, MD5_OID).is_some() {
        problems.push(Problem::WeakHash("MD5".into()));
    }

    SignedMail {
        form,
        check,
        detail: (check == SignatureCheck::Bad).then(|| {
            "the signature does not match the signed content (altered, or forged)".to_string()
        }),
        fingerprint,
        identities,
        bound: false,
        anchor,
        problems,
        signed_at: None,
        part: None,
        unsigned: Vec::new(),
    }
}

/// `None` when `cert` chains to `ca` at `now` for S/MIME signing; else OpenSSL's error code
/// and words.
fn chain_error(cert: &X509, carried: &[X509], now: i64, ca: &CaBundle) -> Option<(i32, String)> {
    let store = match ca.store() {
        Ok(s) => s,
        Err(e) => return Some((1, e.to_string())),
    };
    let run = || -> Result<Option<X509VerifyResult>, openssl::error::ErrorStack> {
        let mut untrusted = Stack::new()?;
        for c in carried {
            untrusted.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(store, cert, &untrusted, |ctx| {
            set_time(ctx, now);
            Ok(if ctx.verify_cert()? {
                None
            } else {
                Some(ctx.error())
            })
        })
    };
    match run() {
        Ok(r) => r.map(|e| (e.as_raw(), e.error_string().to_string())),
        // The check itself failed; never read as a good chain.
        Err(e) => Some((1, format!("the chain could not be checked: {e}"))),
    }
}

unsafe extern "C" {
    // Not bound by openssl-sys 0.9; in libcrypto since OpenSSL 0.9.8 (x509_vfy.h).
    fn X509_STORE_CTX_set_time(
        ctx: *mut openssl_sys::X509_STORE_CTX,
        flags: libc::c_ulong,
        t: libc::time_t,
    );
}

/// Judges validity at `now` on this context only (`X509_VERIFY_PARAM_set_time` on the
/// context's own copy of the store's parameters, which also sets `X509_V_FLAG_USE_CHECK_TIME`):
/// the shared store is never written, and no clock is read.
fn set_time(ctx: &mut X509StoreContextRef, now: i64) {
    use foreign_types::ForeignTypeRef;
    // SAFETY: `ctx` is an initialised X509_STORE_CTX (inside `X509StoreContext::init`'s
    // closure), valid and exclusively borrowed for the call; the function only writes the
    // context's own verify parameters.
    unsafe { X509_STORE_CTX_set_time(ctx.as_ptr(), 0, now as libc::time_t) }
}
