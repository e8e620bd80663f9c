//! What the audit's tests run against: a real Knot DNS server (and Unbound, the validating
//! resolver in front of it for the DNSSEC path), a test CA, an HTTPS server for MTA-STS
//! policies and SMTP listeners with and without STARTTLS, all on loopback, all started and
//! stopped by the test. scripts/deps-audit.sh installs knot and unbound.
#![allow(dead_code)]

pub mod zones;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};
use unspoof_audit::dns::Resolver;

/// A 2048-bit RSA public key (SubjectPublicKeyInfo, base64), made with openssl for these tests.
pub const RSA_2048: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxvygTWLdcjArBG3khgmfrCydKWVRLru/WqD664o3aUYsKq/01dFdBxgtKK/EWAANqpjzHjT/OYfZMC5koNzG881JmBuK5JTuj2v4lvkfc7KVB6cKCJW5wvv0fiPUTgZ6K97B0V62QN3dBnUYZjeh9pq77Xzoj+x2XIRUmFvT7+h6kOx+xwTaCTJSlhEk4cMQySrJHNC3IsnsxL7/IiuxlzMvxIrQUz1HF6n32PZGKyPf/n9L+IySsZXlJXIXya0LSclS6NLpDsEbzp1djK0+kb4Xk+82fYFagcMMEJF+b+Rdr/04smAnWAZ+Jb9Dy9P26YNdmPJJT3mhWmL5v5xwiwIDAQAB";
pub const RSA_1024: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDDoR2UFlzYNNSG/MY2nRQUfkCt/ox2Ed/6Mgt6rfE+TWJbFwV3YeEPvtH5mYLdKPh4BkWCal3Gosc3MdHjv+OYZmeFPGyNYaoxfqaSpLUukjyiEUtS6sgBYhzaOCQthIxGHcjkWSi3mYHgwOZzn1OyDVJbCzBL50KWzRYHBZJBywIDAQAB";
pub const RSA_512: &str = "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBANlk+LV+REj6giJbU189EiRwsTLw53yOvJlV5CoohPvdAfe3BS4WkuyJ429njepuKAaQRhroHcKnVorGisNbik8CAwEAAQ==";

pub fn require(tool: &str, hint: &str) {
    if Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        panic!(
            "{tool} is missing: {hint} (scripts/deps-audit.sh installs it; scripts/test.sh runs it)"
        );
    }
}

/// A loopback port free for both UDP and TCP, reserved for this process: the test kit's
/// (`unspoof_testkit::free_port`), which other test processes running at the same time cannot
/// also be handed. Only 127.0.0.1 is served.
pub fn free_port(ip: &str) -> u16 {
    assert_eq!(
        ip, "127.0.0.1",
        "the test kit's free ports are on 127.0.0.1"
    );
    unspoof_testkit::free_port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "unspoof-audit-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One zone served by Knot.
pub struct ZoneSpec {
    pub origin: String,
    pub text: String,
    /// Signed by Knot itself (`dnssec-signing: on`, its default ECDSA P-256 policy).
    pub signed: bool,
}

impl ZoneSpec {
    pub fn new(origin: &str, text: &str) -> Self {
        ZoneSpec {
            origin: origin.into(),
            text: text.into(),
            signed: false,
        }
    }
    pub fn signed(origin: &str, text: &str) -> Self {
        ZoneSpec {
            origin: origin.into(),
            text: text.into(),
            signed: true,
        }
    }
}

/// The root zone: every name no other zone holds is NXDOMAIN, so nothing is asked elsewhere.
const ROOT: &str = ". 3600 IN SOA ns.root.test. hostmaster.root.test. 1 3600 600 86400 300\n. 3600 IN NS ns.root.test.\n";

/// A private knotd on a loopback address, with mod-stats counting every query.
pub struct Knot {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    child: Child,
}

impl Knot {
    /// Serves `zones` (and a root zone) on `ip`, on `port` or a free one.
    pub fn start(zones: &[ZoneSpec], ip: &str, port: Option<u16>) -> Knot {
        require("knotd", "Knot DNS (Debian package knot)");
        let dir = temp_dir("knot");
        let port = port.unwrap_or_else(|| free_port(ip));
        let mut conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: {ip}@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
             database:\n    storage: \"{d}\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             mod-stats:\n  - id: count\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    journal-content: none\n    global-module: mod-stats/count\n\
             zone:\n  - domain: \".\"\n    file: \"root.zone\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("root.zone"), ROOT).unwrap();
        for z in zones {
            let file = format!("{}.zone", z.origin);
            std::fs::write(dir.join(&file), &z.text).unwrap();
            conf.push_str(&format!(
                "  - domain: \"{}\"\n    file: \"{file}\"\n",
                z.origin
            ));
            if z.signed {
                conf.push_str("    dnssec-signing: on\n");
            }
        }
        std::fs::write(dir.join("knot.conf"), &conf).unwrap();
        let log = std::fs::File::create(dir.join("knotd.log")).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(dir.join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("knotd starts");
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let knot = Knot { dir, addr, child };
        let origins: Vec<String> = zones.iter().map(|z| z.origin.clone()).collect();
        // Knot signs a zone before it serves it: its SOA answering means it is signed.
        knot.wait_ready(&origins);
        knot
    }

    fn wait_ready(&self, origins: &[String]) {
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        loop {
            let ready = rt.block_on(async {
                for o in origins.iter().chain(std::iter::once(&".".to_string())) {
                    let r = Resolver::with_servers(
                        vec![self.addr],
                        Duration::from_millis(300),
                        4,
                        "probe".into(),
                    );
                    let ty = hickory_proto::rr::RecordType::SOA;
                    let name = if o == "." { "." } else { o.as_str() };
                    if r.ask(name, ty).await.records().is_empty() {
                        return false;
                    }
                }
                true
            });
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "knotd did not serve the zones: {}",
                std::fs::read_to_string(self.dir.join("knotd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Queries Knot received so far (mod-stats request-protocol counters).
    pub fn queries(&self) -> u64 {
        let out = Command::new("knotc")
            .arg("-c")
            .arg(self.dir.join("knot.conf"))
            .args(["stats", "mod-stats"])
            .output()
            .expect("knotc runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| l.contains("request-protocol"))
            .filter_map(|l| l.rsplit('=').next()?.trim().parse::<u64>().ok())
            .sum()
    }

    /// The DS record of a signed zone (keymgr), as a trust anchor.
    pub fn ds(&self, zone: &str) -> String {
        let out = Command::new("keymgr")
            .arg("-c")
            .arg(self.dir.join("knot.conf"))
            .args([zone, "ds"])
            .output()
            .expect("keymgr runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains(" DS ") && l.contains(" 13 2 "))
            .unwrap_or_else(|| {
                panic!(
                    "no DS for {zone}: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .trim()
            .to_string()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Unbound validating with the given DS trust anchors, every name resolved at `knot`.
pub struct Unbound {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    child: Child,
}

impl Unbound {
    pub fn start(knot: SocketAddr, anchors: &[String]) -> Unbound {
        require("unbound", "Unbound (Debian package unbound)");
        let dir = temp_dir("unbound");
        let port = free_port("127.0.0.1");
        let mut conf = format!(
            "server:\n    interface: 127.0.0.1@{port}\n    port: {port}\n    do-daemonize: no\n    username: \"\"\n    chroot: \"\"\n\
             directory: \"{d}\"\n    pidfile: \"\"\n    use-syslog: no\n    logfile: \"\"\n    verbosity: 0\n\
             do-not-query-localhost: no\n    do-ip6: no\n    num-threads: 1\n    qname-minimisation: no\n\
             module-config: \"validator iterator\"\n    auto-trust-anchor-file: \"\"\n    val-log-level: 2\n\
             local-zone: \"test.\" nodefault\n",
            d = dir.display()
        );
        for a in anchors {
            conf.push_str(&format!("    trust-anchor: \"{a}\"\n"));
        }
        conf.push_str(&format!(
            "stub-zone:\n    name: \".\"\n    stub-addr: {}@{}\n    stub-prime: no\nremote-control:\n    control-enable: no\n",
            knot.ip(),
            knot.port()
        ));
        std::fs::write(dir.join("unbound.conf"), &conf).unwrap();
        let log = std::fs::File::create(dir.join("unbound.log")).unwrap();
        let child = Command::new("unbound")
            .arg("-d")
            .arg("-c")
            .arg(dir.join("unbound.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unbound starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        loop {
            let up = rt.block_on(async {
                let r = Resolver::with_servers(
                    vec![addr],
                    Duration::from_millis(300),
                    2,
                    "probe".into(),
                );
                r.ask(".", hickory_proto::rr::RecordType::SOA)
                    .await
                    .failure()
                    .is_none()
            });
            if up {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "unbound did not start: {}",
                std::fs::read_to_string(dir.join("unbound.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Unbound { dir, addr, child }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A test CA and what it issues.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub der: Vec<u8>,
    pub pem: String,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "unspoof audit test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for `names`: (chain DER leaf first, PKCS#8 key DER).
    pub fn issue(&self, names: &[&str]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().to_vec(), self.der.clone()],
            key.serialize_der(),
        )
    }

    pub fn acceptor(&self, names: &[&str]) -> (TlsAcceptor, Vec<u8>) {
        let (chain, key) = self.issue(names);
        let leaf = chain[0].clone();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    chain.into_iter().map(CertificateDer::from).collect(),
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
                )
                .unwrap();
        (TlsAcceptor::from(Arc::new(config)), leaf)
    }
}

/// An HTTPS server answering every request with `status`, `content_type` and `body`.
pub async fn https_server(
    acceptor: TlsAcceptor,
    status: u16,
    content_type: &str,
    body: &str,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let response = response.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// An SMTP listener: greeting, EHLO (with STARTTLS when `tls` is given), STARTTLS, QUIT.
pub async fn smtp_server(name: &str, tls: Option<TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let tls = tls.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut io = BufReader::new(tcp);
                let _ = io
                    .get_mut()
                    .write_all(format!("220 {name} ESMTP test\r\n").as_bytes())
                    .await;
                loop {
                    let mut line = String::new();
                    if io.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim().to_ascii_uppercase();
                    if cmd.starts_with("EHLO") {
                        let ext = if tls.is_some() {
                            "250-PIPELINING\r\n250 STARTTLS\r\n"
                        } else {
                            "250 PIPELINING\r\n"
                        };
                        let _ = io
                            .get_mut()
                            .write_all(format!("250-{name}\r\n{ext}").as_bytes())
                            .await;
                    } else if cmd == "STARTTLS" && tls.is_some() {
                        let _ = io.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await;
                        let Some(acceptor) = tls.clone() else { return };
                        let Ok(mut s) = acceptor.accept(io.into_inner()).await else {
                            return;
                        };
                        let mut buf = [0u8; 512];
                        let _ = s.read(&mut buf).await;
                        let _ = s.write_all(b"221 2.0.0 bye\r\n").await;
                        return;
                    } else if cmd == "QUIT" {
                        let _ = io.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
                        return;
                    } else {
                        let _ = io.get_mut().write_all(b"502 5.5.2 no\r\n").await;
                    }
                }
            });
        }
    });
    addr
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}
