//! The audit's only connections besides DNS: an SMTP conversation up to STARTTLS with each MX
//! (RFC 3207), and one HTTPS GET for the MTA-STS policy (RFC 8461 3.3). Both are bounded by
//! [`crate::Limits`]: connect timeout, a timeout for the whole exchange, line and body sizes.
//! Where DNS points can be overridden per host and port ([`crate::ConnectTo`]), for tests and
//! for auditing a host before DNS names it; the TLS name checked stays the real one.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
        client::{
            WebPkiServerVerifier,
            danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        },
        pki_types::{CertificateDer, ServerName, UnixTime},
    },
};

use crate::{ConnectTo, Limits};

/// Longest SMTP reply line we read (RFC 5321 4.5.3.1.5 says 512; some servers exceed it).
const MAX_SMTP_LINE: usize = 4096;
/// Reply lines of one SMTP reply we read before giving up.
const MAX_SMTP_LINES: usize = 64;
/// Octets of HTTP response head we accept besides the body.
const MAX_HTTP_HEAD: usize = 16384;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The Mozilla roots (webpki-roots) and the caller's extra anchors.
fn roots(extra: &[Vec<u8>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra {
        let _ = roots.add(CertificateDer::from(der.clone()));
    }
    roots
}

/// The addresses to try for `host:port`: the override if one matches, else `addrs`.
pub fn targets(
    host: &str,
    port: u16,
    addrs: &[IpAddr],
    connect_to: &[ConnectTo],
) -> Vec<SocketAddr> {
    if let Some(c) = connect_to
        .iter()
        .find(|c| crate::same_name(&c.host, host) && c.port == port)
    {
        return vec![c.addr];
    }
    addrs.iter().map(|a| SocketAddr::new(*a, port)).collect()
}

async fn connect(
    targets: &[SocketAddr],
    limits: &Limits,
) -> Result<(TcpStream, SocketAddr), String> {
    let mut last = "no address".to_string();
    for t in targets {
        match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(t)).await {
            Ok(Ok(s)) => return Ok((s, *t)),
            Ok(Err(e)) => last = format!("{t}: {e}"),
            Err(_) => last = format!("{t}: no connection within {:?}", limits.connect_timeout),
        }
    }
    Err(last)
}

/// What the STARTTLS probe of one MX saw.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TlsProbe {
    /// Where we connected.
    pub address: Option<SocketAddr>,
    pub reached: bool,
    pub banner: Option<String>,
    pub starttls: bool,
    pub tls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// Whether the certificate chains to a trusted root and names the MX (what MTA-STS
    /// needs, RFC 8461 4.2); the reason when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkix: Option<Result<(), String>>,
    /// The certificates the server presented, leaf first (DER), for DANE matching.
    #[serde(skip)]
    pub chain: Vec<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Accepts any certificate so the handshake completes and the chain can be read, and notes
/// what WebPKI verification (the real one) said.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    verdict: Mutex<Option<Result<(), String>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let v = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(v);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One SMTP reply: its code and lines.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut *r)
            .take(MAX_SMTP_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let code = text
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "not an SMTP reply: {:?}",
                    text.chars().take(80).collect::<String>()
                )
            })?;
        let last = text.as_bytes().get(3) != Some(&b'-');
        lines.push(text);
        if last {
            return Ok((code, lines));
        }
        if lines.len() >= MAX_SMTP_LINES {
            return Err("an SMTP reply of too many lines".into());
        }
    }
}

/// Connects to port 25 of `host`, says EHLO, and upgrades with STARTTLS when offered.
pub async fn starttls_probe(
    host: &str,
    addrs: &[IpAddr],
    helo: &str,
    connect_to: &[ConnectTo],
    extra_roots: &[Vec<u8>],
    limits: &Limits,
) -> TlsProbe {
    let mut probe = TlsProbe::default();
    let targets = targets(host, 25, addrs, connect_to);
    let (stream, addr) = match connect(&targets, limits).await {
        Ok(s) => s,
        Err(e) => {
            probe.error = Some(e);
            return probe;
        }
    };
    probe.address = Some(addr);
    probe.reached = true;
    let conversation = async {
        let mut io = BufReader::new(stream);
        let (code, lines) = reply(&mut io).await?;
        probe.banner = lines.first().cloned();
        if code != 220 {
            return Err(format!("greeting {code}"));
        }
        io.get_mut()
            .write_all(format!("EHLO {helo}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let (code, lines) = reply(&mut io).await?;
        if code != 250 {
            return Err(format!("EHLO answered {code}"));
        }
        probe.starttls = lines.iter().skip(1).any(|l| {
            l.get(4..).is_some_and(|k| {
                k.split_whitespace()
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("STARTTLS"))
            })
        });
        if !probe.starttls {
            let _ = io.get_mut().write_all(b"QUIT\r\n").await;
            return Ok(());
        }
        io.get_mut()
            .write_all(b"STARTTLS\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let (code, _) = reply(&mut io).await?;
        if code != 220 {
            return Err(format!("STARTTLS answered {code}"));
        }
        // Anything the server sent after 220 is dropped with the buffer (RFC 3207 5).
        let stream = io.into_inner();
        let verifier = Arc::new(Recording {
            inner: WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(extra_roots)),
                provider(),
            )
            .build()
            .map_err(|e| e.to_string())?,
            verdict: Mutex::new(None),
        });
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake after STARTTLS failed: {e}"))?;
        probe.tls = true;
        let (_, conn) = tls.get_ref();
        probe.tls_version = conn.protocol_version().map(|v| format!("{v:?}"));
        probe.chain = conn
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
            .unwrap_or_default();
        probe.pkix = verifier.verdict.lock().ok().and_then(|v| v.clone());
        let _ = tls.write_all(b"QUIT\r\n").await;
        let _ = tls.shutdown().await;
        Ok(())
    };
    match tokio::time::timeout(limits.io_timeout, conversation).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => probe.error = Some(e),
        Err(_) => {
            probe.error = Some(format!(
                "the SMTP exchange took longer than {:?}",
                limits.io_timeout
            ))
        }
    }
    probe
}

/// An HTTPS response.
#[derive(Debug, Clone)]
pub struct HttpsResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// `GET https://host/path` over HTTP/1.0 (so no chunked encoding, RFC 9112 7.1), the
/// certificate verified against the Mozilla roots and `extra_roots`, no redirect followed.
pub async fn https_get(
    host: &str,
    path: &str,
    addrs: &[IpAddr],
    connect_to: &[ConnectTo],
    extra_roots: &[Vec<u8>],
    limits: &Limits,
) -> Result<HttpsResponse, String> {
    let targets = targets(host, 443, addrs, connect_to);
    let (stream, _) = connect(&targets, limits).await?;
    let exchange = async {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(extra_roots))
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        tls.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: unspoof-audit\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let cap = (limits.max_policy_size + MAX_HTTP_HEAD) as u64;
        // A server that closes without close_notify still gave us its bytes.
        let read = (&mut tls).take(cap + 1).read_to_end(&mut raw).await;
        if let Err(e) = read
            && raw.is_empty()
        {
            return Err(e.to_string());
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&raw).map_err(|e| format!("HTTP: {e}"))? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Err("HTTP: incomplete response head".into()),
        };
        let status = response.code.unwrap_or(0);
        let content_type = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
        let body = raw[head..].to_vec();
        if body.len() > limits.max_policy_size {
            return Err(format!(
                "the body is larger than {} octets",
                limits.max_policy_size
            ));
        }
        Ok(HttpsResponse {
            status,
            content_type,
            body,
        })
    };
    tokio::time::timeout(limits.io_timeout, exchange)
        .await
        .map_err(|_| format!("no complete answer within {:?}", limits.io_timeout))?
}
