//! The console inside `unspoof serve` (`[console] enabled`), in headless Chromium (Debian's
//! chromium and chromium-driver, scripts/deps-console.sh), with mail sent by Python's smtplib
//! to the real gateway process and a downstream SMTP server on loopback:
//! a forged message is quarantined; an administrator searches it by reason code, releases it
//! and allows its sender for the recipient; the next message from that sender goes straight
//! through (`allow.sender`); the browser's session survives a restart of the process; a
//! digest's release link releases a third message. Screenshots go to docs/console/.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use unspoof_testkit::browser::{Driver, follow, login, open, shot};
use unspoof_testkit::free_port;

/// Upper bound for anything that should take a moment: only a hang exceeds it.
const HANG: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery";

/// bank.test sends only from 198.51.100.0/24 and asks receivers to quarantine the rest.
const ZONE: &str = r#"
$ORIGIN bank.test.
@   IN SOA ns.bank.test. hostmaster.bank.test. 1 3600 600 86400 300
@   IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc IN TXT "v=DMARC1; p=quarantine"
"#;

/// A downstream MTA that accepts everything and keeps each message's bytes.
#[derive(Clone, Default)]
struct Downstream(Arc<Mutex<Vec<String>>>);

impl Downstream {
    fn start() -> (Downstream, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = Downstream::default();
        let keep = sink.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let keep = keep.clone();
                std::thread::spawn(move || session(conn, keep));
            }
        });
        (sink, port)
    }

    fn received(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits for a received message containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(m) = self.received().into_iter().find(|m| m.contains(needle)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "nothing with {needle:?} downstream"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn session(conn: TcpStream, keep: Downstream) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let _ = w.write_all(b"220 downstream.test ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("DATA") {
            let _ = w.write_all(b"354 go on\r\n");
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 {
                    return;
                }
                if l == ".\r\n" {
                    break;
                }
                data.push_str(
                    l.strip_prefix('.')
                        .filter(|_| l.starts_with(".."))
                        .unwrap_or(&l),
                );
            }
            keep.0.lock().unwrap().push(data);
            let _ = w.write_all(b"250 2.0.0 queued as D1\r\n");
        } else if upper.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            let _ = w.write_all(b"250 ok\r\n");
        }
    }
}

struct Serve {
    child: Child,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, smtp: u16, console: u16, downstream: u16) -> String {
    format!(
        r#"hostname = "mx.site.test"
protected_domains = ["site.test"]

[gateway]
data_dir = "{data}"
listen = "127.0.0.1:{smtp}"
submission = ""
metrics = ""
domains = ["site.test"]
reverse_dns = false
downstream = "127.0.0.1:{downstream}"

[console]
enabled = true
listen = "127.0.0.1:{console}"
# No scheduled digests: the test sends one with the command, when it wants it.
digest_hours = 0
"#,
        data = dir.join("data").display()
    )
}

fn unspoof(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(args)
        .arg("--config")
        .arg(dir.join("unspoof.toml"))
        .env_remove("UNSPOOF_STORE")
        .env_remove("UNSPOOF_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "unspoof {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn start_serve(dir: &Path, console: u16) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(["serve", "--config"])
        .arg(dir.join("unspoof.toml"))
        .arg("--dns-zone")
        .arg(dir.join("bank.zone"))
        .env_remove("UNSPOOF_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + HANG;
    while TcpStream::connect(("127.0.0.1", console)).is_err() {
        assert!(Instant::now() < deadline, "the console did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    Serve { child }
}

/// Sends one message with Python's smtplib; returns its final reply code.
fn send(smtp: u16, from: &str, to: &str, subject: &str) {
    let msg = format!(
        "From: Bank Security <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{}.{}@bank.test>\r\nDate: Mon, 7 Dec 2026 06:00:00 +0000\r\n\r\n\
         Please confirm your details.\r\n",
        subject.replace(' ', "-"),
        std::process::id()
    );
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.example", timeout=30)
s.sendmail(sys.argv[2], [sys.argv[3]], sys.stdin.buffer.read())
s.quit()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, &smtp.to_string(), from, to])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(msg.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "smtplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn source(c: &Client) -> String {
    c.source().await.unwrap()
}

/// Reloads `url` until its page contains `needle` (the gateway writes records in batches).
async fn page_with(c: &Client, url: &str, needle: &str) -> String {
    let deadline = Instant::now() + HANG;
    loop {
        c.goto(url).await.unwrap();
        let s = source(c).await;
        if s.contains(needle) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never showed {needle:?}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_allow_in_the_browser_lets_the_next_message_through_serve() {
    let dir = std::env::temp_dir().join(format!("unspoof-console-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (downstream, down_port) = Downstream::start();
    let (smtp, console) = (free_port(), free_port());
    std::fs::write(dir.join("bank.zone"), ZONE).unwrap();
    std::fs::write(
        dir.join("unspoof.toml"),
        config(&dir, smtp, console, down_port),
    )
    .unwrap();
    unspoof(
        &dir,
        &["console", "user", "add", "admin", "--role", "administrator"],
        &format!("{PASSWORD}\n"),
    );
    let mut serve = start_serve(&dir, console);
    let base = format!("http://127.0.0.1:{console}");

    // A forged message from bank.test: quarantined, nothing downstream.
    send(
        smtp,
        "security@bank.test",
        "ann@site.test",
        "Verify your account",
    );

    let driver = Driver::start();
    let c = driver.browser(true).await;
    login(&c, &base, "admin", PASSWORD).await;

    // Search by reason code: the quarantined message, with its reason.
    let found = page_with(
        &c,
        &format!("{base}/search?reason=dmarc.quarantine"),
        "Verify your account",
    )
    .await;
    assert!(found.contains("<code>dmarc.quarantine</code>"), "{found}");
    assert!(downstream.received().is_empty(), "held, not delivered");
    follow(&c, Locator::LinkText("Verify your account"), "form.allow").await;
    shot(&c, "message-actions").await;
    // Release and allow the sender for this recipient.
    follow(&c, Locator::Css("form.allow button"), "section.history").await;
    let page = source(&c).await;
    assert!(
        page.contains("allow_sender") && page.contains("released"),
        "{page}"
    );
    let first = downstream.wait_for("Subject: Verify your account");
    assert!(first.contains("Please confirm your details."));

    // The next message from that sender to that recipient goes straight through.
    send(smtp, "security@bank.test", "ann@site.test", "Second notice");
    let second = downstream.wait_for("Subject: Second notice");
    assert!(second.contains("Authentication-Results:"), "{second}");
    let rec = page_with(
        &c,
        &format!("{base}/search?subject=Second"),
        "Second notice",
    )
    .await;
    assert!(
        rec.contains("<code>allow.sender</code>") && rec.contains("v accept"),
        "{rec}"
    );
    // Not for another recipient: still held.
    send(smtp, "security@bank.test", "bob@site.test", "Bob notice");
    let bob = page_with(&c, &format!("{base}/search?subject=Bob"), "Bob notice").await;
    assert!(bob.contains("v quarantine"), "{bob}");
    assert!(
        !downstream
            .received()
            .iter()
            .any(|m| m.contains("Bob notice"))
    );
    c.goto(&format!("{base}/allow")).await.unwrap();
    assert!(source(&c).await.contains("ann@site.test"));
    shot(&c, "allow").await;

    // A restart of the process does not log the browser out (sessions are in the store).
    drop(serve);
    serve = start_serve(&dir, console);
    open(&c, &format!("{base}/quarantine"), "form.bulk").await;
    shot(&c, "quarantine-bulk").await;

    // The abuse report and the domain audit, as pages.
    follow(&c, Locator::LinkText("Bob notice"), "a.arf").await;
    follow(&c, Locator::Css("a.arf"), "pre.report").await;
    assert!(source(&c).await.contains("Feedback-Type: abuse"));
    shot(&c, "abuse-report").await;
    open(&c, &format!("{base}/audit?domain=bank.test"), "span.grade").await;
    shot(&c, "audit").await;

    // The digest (sent now by the command, through the gateway's downstream): its link
    // releases Bob's message without a login.
    let out = unspoof(
        &dir,
        &[
            "console",
            "digest",
            "--dns-zone",
            dir.join("bank.zone").to_str().unwrap(),
        ],
        "",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("digests sent: 1"),
        "{out:?}"
    );
    let digest = downstream.wait_for("Subject: Quarantine digest");
    assert!(digest.contains("To: <bob@site.test>") && digest.contains("Bob notice"));
    let at = digest
        .find(&format!("{base}/digest/release?"))
        .expect("a link to this console");
    let link = digest[at..].split_whitespace().next().unwrap().to_string();
    let c2 = driver.browser(true).await;
    open(&c2, &link, "button.release").await;
    shot(&c2, "digest-release").await;
    let bob_itself =
        |m: &String| m.contains("\r\nSubject: Bob notice\r\n") && !m.contains("Quarantine digest");
    assert!(
        !downstream.received().iter().any(bob_itself),
        "the link alone releases nothing"
    );
    follow(&c2, Locator::Css("button.release"), "p.done").await;
    assert!(source(&c2).await.contains("Released"));
    let deadline = Instant::now() + HANG;
    while !downstream.received().iter().any(bob_itself) {
        assert!(
            Instant::now() < deadline,
            "the released message never arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c2.close().await.unwrap();
    c.close().await.unwrap();
    drop(serve);
    let mut log = String::new();
    let _ = std::fs::File::open(dir.join("data/sessions.jsonl"))
        .and_then(|mut f| f.read_to_string(&mut log));
    let _ = std::fs::remove_dir_all(&dir);
}
