//! STARTTLS (RFC 3207) server configuration: the configured certificate, or a self-signed one
//! generated once into `<data_dir>/tls/` for the embedded default.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::GatewayError;
use crate::config::GatewayConfig;

fn tls_err(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Tls(e.to_string())
}

/// Builds the acceptor from `tls_cert`/`tls_key`, or from the generated self-signed pair.
pub fn acceptor(config: &GatewayConfig) -> Result<TlsAcceptor, GatewayError> {
    let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = config.data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                generate_self_signed(&config.hostname, &c, &k)?;
            }
            (c, k)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| tls_err(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn generate_self_signed(hostname: &str, cert: &Path, key: &Path) -> Result<(), GatewayError> {
    use std::io::Write;
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string()]).map_err(tls_err)?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(tls_err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(key)
        .and_then(|mut f| f.write_all(ck.signing_key.serialize_pem().as_bytes()))
        .map_err(tls_err)?;
    std::fs::write(cert, ck.cert.pem()).map_err(tls_err)?;
    Ok(())
}
