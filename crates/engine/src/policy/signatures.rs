//! `[signatures]`: where the trust material for person-level signatures (PGP/MIME, inline
//! OpenPGP, S/MIME; `crate::signed`) lives. The engine reads no file: the front door loads
//! these paths at start (`crates/cli/src/signatures.rs`) and hands the keys and certificates
//! to [`crate::Engine::with_signature_trust`].

use std::path::PathBuf;

use serde::Deserialize;

/// The system's CA bundle on Debian and its derivatives, the default of
/// [`Signatures::smime_ca_bundle`].
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Signatures {
    /// A folder of OpenPGP public keys (`*.asc`, `*.gpg`, `*.pgp`, armored or binary, one or
    /// many per file) whose signatures prove their user ids. Default: none (OpenPGP keys are
    /// then anchored only by trust on first use).
    pub openpgp_keyring: Option<PathBuf>,
    /// A PEM bundle of the CAs S/MIME certificates must chain to. Default: the system's
    /// ([`SYSTEM_CA_BUNDLE`]; a missing system bundle means no CA).
    pub smime_ca_bundle: Option<PathBuf>,
}
