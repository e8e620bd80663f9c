//! Signed mail through the doors: `unspoof analyze` and `unspoof serve` give the same verdict
//! and the same `smime=`/`x-pgp=` result for messages signed by the real tools (GnuPG,
//! `openssl cms -sign`; crates/engine/tests/signed/make.sh), trust loaded from `[signatures]`;
//! and a signed message the gateway delivers tagged still verifies with gpg and openssl.
//! Real swaks over loopback; DNS from a zone file.

use unspoof_testkit::free_port;

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

// SPF passes for the ESP's bounce domain (not aligned with From); From's domains say p=none:
// DMARC cannot decide.
const ZONE: &str = r#"
esp.example.          IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.example.com.   IN TXT "v=DMARC1; p=none"
_dmarc.example.org.   IN TXT "v=DMARC1; p=none"
"#;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Kit {
    dir: PathBuf,
}

impl Drop for Kit {
    fn drop(&mut self) {
        if std::env::var_os("UNSPOOF_KEEP_TEST_DIR").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kit(test: &str) -> Kit {
    let dir =
        std::env::temp_dir().join(format!("unspoof-cli-signed-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/signed/make.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir.join("kit"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join("z.zone"), ZONE).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("unspoof.toml"),
        format!(
            r#"hostname = "mx.recipient.test"
protected_domains = ["recipient.test"]

[signatures]
openpgp_keyring = "{kit}/keyring"
smime_ca_bundle = "{kit}/ca.pem"

[gateway]
data_dir = "{dir}/data"
listen = "127.0.0.1:{port}"
submission = ""
metrics = ""
domains = ["recipient.test"]
reverse_dns = false
"#,
            kit = dir.join("kit").display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    Kit { dir }
}

impl Kit {
    fn msg(&self, name: &str) -> PathBuf {
        self.dir.join("kit/msg").join(format!("{name}.eml"))
    }

    fn port(&self) -> u16 {
        let cfg = std::fs::read_to_string(self.dir.join("unspoof.toml")).unwrap();
        cfg.split("127.0.0.1:").nth(1).unwrap()[..5]
            .trim_end_matches('"')
            .parse()
            .unwrap()
    }

    fn analyze(&self, name: &str) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args([
                "analyze",
                "--json",
                "--ip",
                "127.0.0.1",
                "--helo",
                "client.example",
            ])
            .args([
                "--mail-from",
                "bounce@esp.example",
                "--rcpt",
                "bob@recipient.test",
            ])
            // The test CA is made when the test runs, after the messages' Date: judge now, as
            // the gateway does with its arrival time.
            .arg("--received-at")
            .arg(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    .to_string(),
            )
            .arg("--policy")
            .arg(self.dir.join("unspoof.toml"))
            .arg("--dns-zone")
            .arg(self.dir.join("z.zone"))
            .arg(self.msg(name))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(
            text.lines()
                .next()
                .unwrap_or_else(|| panic!("no analysis: {}", String::from_utf8_lossy(&out.stderr))),
        )
        .unwrap()
    }

    fn serve(&self) -> Server {
        let port = self.port();
        let child = Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["serve", "--config"])
            .arg(self.dir.join("unspoof.toml"))
            .arg("--dns-zone")
            .arg(self.dir.join("z.zone"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "unspoof serve did not start: {}",
                std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port }
    }

    /// Sends a copy of message `name` with Message-ID `<id@example.com>` to the server on
    /// `port`; the delivered copy.
    fn send_copy(&self, port: u16, name: &str, id: &str) -> String {
        let raw = std::fs::read_to_string(self.msg(name)).unwrap();
        let old = raw
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap()
            .trim()
            .to_string();
        let raw = raw.replacen(&old, &format!("<{id}@example.com>"), 1);
        let file = self.dir.join(format!("{id}.eml"));
        std::fs::write(&file, raw).unwrap();
        let transcript = swaks(port, &file);
        assert!(transcript.contains("<-  250"), "{id}: {transcript}");
        std::fs::read_to_string(self.delivered(&format!("<{id}@example.com>"))).unwrap()
    }

    /// Waits until the server's log holds `needle` `n` times.
    fn wait_for_log(&self, needle: &str, n: usize) {
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default();
            if log.matches(needle).count() >= n {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {needle:?} ({n}x) in the log: {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn delivered(&self, marker: &str) -> PathBuf {
        let new = self.dir.join("data/maildir/new");
        let started = Instant::now();
        loop {
            let found = std::fs::read_dir(&new).ok().and_then(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .find(|p| std::fs::read_to_string(p).is_ok_and(|m| m.contains(marker)))
            });
            if let Some(f) = found {
                return f;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{marker} not delivered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn swaks(port: u16, file: &Path) -> String {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "bounce@esp.example", "--to", "bob@recipient.test"])
        .args(["--helo", "client.example", "--data"])
        .arg(file)
        .output()
        .expect("swaks (installed by scripts/deps-gateway.sh)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The verdict and reason codes a delivered message's X-Unspoof-Verdict field names, and the
/// signature's resinfo from its Authentication-Results ("" when accepted without the field).
fn delivered_verdict(m: &str) -> (String, Vec<String>, String) {
    let head = m.split("\r\n\r\n").next().unwrap().replace("\r\n\t", " ");
    let verdict = head
        .lines()
        .find_map(|l| l.strip_prefix("X-Unspoof-Verdict: "))
        .unwrap_or("accept");
    let (action, codes) = match verdict.split_once("; reasons=") {
        Some((a, c)) => (
            a.to_string(),
            c.split(',').map(|c| c.trim().to_string()).collect(),
        ),
        None => (verdict.to_string(), Vec::new()),
    };
    let ar = head
        .lines()
        .find(|l| l.starts_with("Authentication-Results: mx.recipient.test"))
        .unwrap_or_else(|| panic!("no AR: {head}"));
    let sig = ar
        .split(';')
        .map(str::trim)
        .find(|r| r.starts_with("smime=") || r.starts_with("x-pgp="))
        .unwrap_or("")
        .to_string();
    (action, codes, sig)
}

#[test]
fn analyze_and_serve_agree_and_tagged_signed_mail_still_verifies() {
    let kit = kit("doors");
    let server = kit.serve();
    for (name, action, code, result) in [
        ("pgp-mime-rsa", "accept", "signature.valid", "x-pgp=pass"),
        (
            "pgp-inline-ed25519",
            "accept",
            "signature.valid",
            "x-pgp=pass",
        ),
        ("smime-detached", "accept", "signature.valid", "smime=pass"),
        ("smime-opaque", "accept", "signature.valid", "smime=pass"),
        (
            "pgp-other-signer",
            "tag",
            "signature.other_signer",
            "x-pgp=policy",
        ),
        (
            "smime-other-signer",
            "tag",
            "signature.other_signer",
            "smime=policy",
        ),
        (
            "pgp-revoked",
            "quarantine",
            "signature.revoked",
            "x-pgp=policy",
        ),
        ("smime-expired", "tag", "signature.expired", "smime=policy"),
    ] {
        let json = kit.analyze(name);
        assert_eq!(json["verdict"]["action"], action, "analyze {name}: {json}");
        let codes: Vec<&str> = json["verdict"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "analyze {name}: {codes:?}");
        assert_eq!(
            format!(
                "{}={}",
                if name.starts_with("smime") {
                    "smime"
                } else {
                    "x-pgp"
                },
                json["signature"]["result"].as_str().unwrap()
            ),
            result,
            "{name}"
        );

        let transcript = swaks(server.port, &kit.msg(name));
        assert!(transcript.contains("<-  250"), "serve {name}: {transcript}");
        if action == "quarantine" {
            continue; // held, not delivered; the verdict is in the SMTP log
        }
        let marker = std::fs::read_to_string(kit.msg(name))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_string))
            .unwrap();
        let path = kit.delivered(marker.trim());
        let delivered = std::fs::read(&path).unwrap();
        let (d_action, d_codes, d_sig) = delivered_verdict(&String::from_utf8_lossy(&delivered));
        assert_eq!(d_action, action, "serve {name}: {d_codes:?} {d_sig}");
        if action != "accept" {
            let mut a_codes: Vec<String> = codes
                .iter()
                .filter(|c| {
                    json["verdict"]["reasons"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r["code"] == **c && r["action"] != "accept")
                })
                .map(|c| c.to_string())
                .collect();
            a_codes.sort();
            let mut d = d_codes.clone();
            d.sort();
            assert!(
                a_codes.iter().all(|c| d.contains(c)),
                "{name}: analyze {a_codes:?}, serve {d:?}"
            );
        }
        assert!(d_sig.starts_with(result), "serve {name}: {d_sig}");

        // Delivered (tagged or not), the signature still verifies with the real tools.
        let copy = kit.dir.join(format!("{name}.delivered.eml"));
        std::fs::write(&copy, &delivered).unwrap();
        if name.starts_with("smime") {
            let out = Command::new("openssl")
                .args(["cms", "-verify", "-purpose", "any", "-CAfile"])
                .arg(kit.dir.join("kit/ca.pem"))
                .arg("-in")
                .arg(&copy)
                .args(["-out", "/dev/null"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            // The expired certificate fails the chain, not the signature: check without it.
            if name == "smime-expired" {
                continue;
            }
            assert!(
                out.status.success() && err.contains("Verification successful"),
                "openssl {name}: {err}"
            );
        } else if name.starts_with("pgp-mime") || name == "pgp-other-signer" {
            let (part, sig) = unspoof_testkit::split_signed(&delivered);
            std::fs::write(kit.dir.join("part"), part).unwrap();
            std::fs::write(kit.dir.join("part.asc"), sig).unwrap();
            let out = Command::new("gpg")
                .arg("--homedir")
                .arg(kit.dir.join("kit/gnupg"))
                .args(["--batch", "--verify"])
                .arg(kit.dir.join("part.asc"))
                .arg(kit.dir.join("part"))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.contains("Good signature"),
                "gpg {name}: {err}"
            );
        } else {
            let out = Command::new("gpg")
                .arg("--homedir")
                .arg(kit.dir.join("kit/gnupg"))
                .args(["--batch", "--verify"])
                .arg(&copy)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.contains("Good signature"),
                "gpg {name}: {err}"
            );
        }
        if action == "tag" {
            let text = String::from_utf8_lossy(&delivered);
            assert!(
                text.contains("Subject: [SUSPICIOUS]"),
                "{name}: the tag is in the header"
            );
            assert!(
                !text.contains("Caution:"),
                "{name}: no banner in signed mail: {text}"
            );
        }
    }

    // Trust on first use through the gateway's store: Frank's key comes only in his
    // Autocrypt header. First message: first use (remembered); the same key again: proven by
    // memory; another key for his address: changed.
    let send_copy = |name: &str, id: &str| kit.send_copy(server.port, name, id);
    for (name, id, result, code) in [
        (
            "pgp-autocrypt",
            "tofu-1",
            "x-pgp=neutral",
            "signature.first_use",
        ),
        ("pgp-autocrypt", "tofu-2", "x-pgp=pass", "signature.valid"),
        (
            "pgp-autocrypt-newkey",
            "tofu-3",
            "x-pgp=policy",
            "signature.key_changed",
        ),
    ] {
        let m = send_copy(name, id);
        let (action, codes, sig) = delivered_verdict(&m);
        assert!(sig.starts_with(result), "{id}: {sig}");
        if code == "signature.key_changed" {
            assert_eq!(action, "tag", "{id}");
            assert!(codes.iter().any(|c| c == code), "{id}: {codes:?}");
        }
    }
}

/// SIGHUP re-reads `[signatures]` with the policy: a key put into the keyring folder proves the
/// next message without a restart, and a keyring that cannot be read keeps the trust in force.
#[test]
fn sighup_reloads_the_signature_trust() {
    let kit = kit("reload");
    let keyring = kit.dir.join("keyring-live");
    std::fs::create_dir_all(&keyring).unwrap();
    let config = kit.dir.join("unspoof.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let from = format!(
        "openpgp_keyring = \"{}\"",
        kit.dir.join("kit/keyring").display()
    );
    assert!(text.contains(&from));
    let to = format!("openpgp_keyring = \"{}\"", keyring.display());
    std::fs::write(&config, text.replace(&from, &to)).unwrap();
    let server = kit.serve();
    let hup = || {
        let st = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };

    // No key for Alice yet.
    let (_, _, sig) = delivered_verdict(&kit.send_copy(server.port, "pgp-mime-rsa", "hup-1"));
    assert!(sig.starts_with("x-pgp=neutral"), "before: {sig}");

    // Her key arrives in the keyring folder; SIGHUP.
    std::fs::copy(
        kit.dir.join("kit/keyring/alice.asc"),
        keyring.join("alice.asc"),
    )
    .unwrap();
    hup();
    kit.wait_for_log("unspoof: policy reloaded", 1);
    let (_, _, sig) = delivered_verdict(&kit.send_copy(server.port, "pgp-mime-rsa", "hup-2"));
    assert!(sig.starts_with("x-pgp=pass"), "after the reload: {sig}");

    // A file in the folder that is no key: the reload fails, the trust in force stays.
    std::fs::write(keyring.join("broken.asc"), "not a key\n").unwrap();
    hup();
    kit.wait_for_log("policy reload failed", 1);
    let (_, _, sig) = delivered_verdict(&kit.send_copy(server.port, "pgp-mime-rsa", "hup-3"));
    assert!(
        sig.starts_with("x-pgp=pass"),
        "after a failed reload: {sig}"
    );
}
