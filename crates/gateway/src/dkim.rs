//! DKIM signing of submission mail (RFC 6376, Ed25519 RFC 8463) with mail-auth's signer, and
//! key generation for `unspoof dkim keygen`.
//!
//! **Boundary:** private keys are read here and nowhere else; the rest of the gateway only sees
//! [`DkimSigners::sign`].

use std::collections::HashMap;
use std::path::Path;

use data_encoding::BASE64;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use ring::signature::KeyPair;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::GatewayError;
use crate::config::DkimKeyConfig;

/// Key algorithm for [`keygen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA 2048 with SHA-256 (`k=rsa`): what every verifier supports.
    Rsa,
    /// Ed25519 with SHA-256 (`k=ed25519`, RFC 8463): small, not yet verified everywhere.
    Ed25519,
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" => Ok(Algorithm::Rsa),
            "ed25519" => Ok(Algorithm::Ed25519),
            o => Err(format!("unknown DKIM algorithm {o:?} (rsa or ed25519)")),
        }
    }
}

/// A generated key: the private key as PKCS#8 PEM and the DNS record to publish.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub private_key_pem: String,
    /// Owner name: `<selector>._domainkey.<domain>`.
    pub dns_name: String,
    /// TXT record value: `v=DKIM1; k=...; p=...`.
    pub dns_txt: String,
}

/// Generates a DKIM key for `domain`/`selector` (used by `unspoof dkim keygen`).
pub fn generate(
    domain: &str,
    selector: &str,
    alg: Algorithm,
) -> Result<GeneratedKey, GatewayError> {
    let err = |e: String| GatewayError::Dkim(e);
    let (der, k, public) = match alg {
        Algorithm::Ed25519 => {
            let der = Ed25519Key::generate_pkcs8().map_err(|e| err(e.to_string()))?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&der)
                .map_err(|e| err(e.to_string()))?;
            // RFC 8463 4.2: p= is the raw 32-byte public key.
            let public = pair.public_key().as_ref().to_vec();
            (der, "ed25519", public)
        }
        Algorithm::Rsa => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                .map_err(|e| err(e.to_string()))?;
            let der = key.to_pkcs8_der().map_err(|e| err(e.to_string()))?;
            // RFC 6376 3.6.1: p= is the DER SubjectPublicKeyInfo.
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| err(e.to_string()))?;
            (der.as_bytes().to_vec(), "rsa", public.as_bytes().to_vec())
        }
    };
    Ok(GeneratedKey {
        private_key_pem: pem("PRIVATE KEY", &der),
        dns_name: format!("{selector}._domainkey.{domain}"),
        dns_txt: format!("v=DKIM1; k={k}; p={}", BASE64.encode(&public)),
    })
}

/// `unspoof dkim keygen`: generates a key, writes it to `path` (mode 0600, never overwriting),
/// and returns the key with its DNS record for the caller to print.
pub fn keygen(
    domain: &str,
    selector: &str,
    alg: Algorithm,
    path: &Path,
) -> Result<GeneratedKey, GatewayError> {
    use std::io::Write;
    let key = generate(domain, selector, alg)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| GatewayError::Dkim(format!("{}: {e}", path.display())))?;
    f.write_all(key.private_key_pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| GatewayError::Dkim(format!("{}: {e}", path.display())))?;
    Ok(key)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The TXT record (`v=DKIM1; k=...; p=...`) that publishes the public half of a configured
/// signing key: what `unspoof audit` expects at `<selector>._domainkey.<domain>`.
pub fn public_record(key: &DkimKeyConfig) -> Result<String, GatewayError> {
    let err = |e: String| GatewayError::Dkim(format!("{}: {e}", key.key.display()));
    let text = std::fs::read_to_string(&key.key).map_err(|e| err(e.to_string()))?;
    let der =
        PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes()).map_err(|e| err(e.to_string()))?;
    if let Ok(pair) =
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
    {
        return Ok(format!(
            "v=DKIM1; k=ed25519; p={}",
            BASE64.encode(pair.public_key().as_ref())
        ));
    }
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let rsa = rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der())
        .map_err(|e| err(e.to_string()))?;
    let public = rsa
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| err(e.to_string()))?;
    Ok(format!(
        "v=DKIM1; k=rsa; p={}",
        BASE64.encode(public.as_bytes())
    ))
}

type Signer = DkimSigner<DkimKey, Done>;

/// The configured signing keys, by domain.
#[derive(Default)]
pub struct DkimSigners {
    by_domain: HashMap<String, Signer>,
}

/// Header fields we sign (RFC 6376 5.4.1 recommendations).
const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "In-Reply-To",
    "References",
];

impl DkimSigners {
    /// Loads every configured key; a key that cannot be read or parsed is a startup error.
    pub fn load(keys: &[DkimKeyConfig]) -> Result<Self, GatewayError> {
        let mut by_domain = HashMap::new();
        for k in keys {
            let text = std::fs::read_to_string(&k.key)
                .map_err(|e| GatewayError::Dkim(format!("{}: {e}", k.key.display())))?;
            let der = PrivatePkcs8KeyDer::from_pem_slice(text.as_bytes())
                .map_err(|e| GatewayError::Dkim(format!("{}: {e}", k.key.display())))?;
            let key = match Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der()) {
                Ok(ed) => DkimKey::Ed25519(ed),
                Err(_) => DkimKey::Rsa(
                    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der))
                        .map_err(|e| GatewayError::Dkim(format!("{}: {e}", k.key.display())))?,
                ),
            };
            let domain = k.domain.to_ascii_lowercase();
            let signer = DkimSigner::from_key(key)
                .domain(domain.clone())
                .selector(k.selector.clone())
                .headers(SIGNED_HEADERS);
            by_domain.insert(domain, signer);
        }
        Ok(DkimSigners { by_domain })
    }

    /// A `DKIM-Signature:` field (CRLF-terminated) for `message` signed as `domain`, if we have
    /// a key for it.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Option<Result<String, String>> {
        let sig = self
            .by_domain
            .get(&domain.to_ascii_lowercase())?
            .sign(message);
        Some(sig.map(|s| s.to_header()).map_err(|e| e.to_string()))
    }
}
