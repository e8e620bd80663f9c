//! Operations of `unspoof serve` with the real process and real signals (issue 4, item 8):
//! SIGHUP re-reads the policy without dropping an open connection, and SIGTERM lets the
//! transaction in flight finish before the process exits 0. Signals are sent with `kill(1)`;
//! ports are free loopback ports; DNS comes from a zone file. No timing assertions: only
//! generous upper bounds that turn a hang into a failure. `unspoof milter` runs under the same
//! signal loop (crates/cli/src/signals.rs): its reload and drain are checked behind a real
//! Postfix (root, `postfix` and `swaks`: scripts/deps-milter.sh; skipped without them, failed
//! under `CI=true`).

use unspoof_testkit::{Postfix, free_port, is_ci, postfix_missing, say, swaks};

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Upper bound for anything that should take milliseconds: only a hang exceeds it.
const HANG: Duration = Duration::from_secs(60);

/// `weeklynews.org` fails SPF from 127.0.0.1 and publishes no DMARC record: unprotected, the
/// engine tags such mail; once the domain is protected, it is a spoof and is refused.
const ZONE: &str = r#"
$ORIGIN weeklynews.org.
@   IN SOA ns.weeklynews.org. hostmaster.weeklynews.org. 1 3600 600 86400 300
@   IN TXT "v=spf1 ip4:192.0.2.10 -all"
"#;

fn policy(dir: &std::path::Path, port: u16, protected: &[&str], drain: u64) -> String {
    let protected: Vec<String> = protected.iter().map(|d| format!("{d:?}")).collect();
    format!(
        r#"hostname = "mx.shopping.example.net"
protected_domains = [{protected}]

[gateway]
data_dir = "{data}"
listen = "127.0.0.1:{port}"
submission = ""
metrics = ""
domains = ["shopping.example.net"]
reverse_dns = false

[gateway.limits]
drain_timeout = {drain}
"#,
        protected = protected.join(", "),
        data = dir.join("data").display(),
    )
}

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Lines of the server's standard error, as they come.
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only if a test failed half-way: do not leave the server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, drain: u64) -> Server {
    let dir = temp_dir(name);
    let port = free_port();
    std::fs::write(dir.join("unspoof.toml"), policy(&dir, port, &[], drain)).unwrap();
    // "unspoof: SMTP on ..." is printed once every listener is bound.
    spawn("serve", dir, port, "unspoof: SMTP on")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "unspoof-signals-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `unspoof <command> --config dir/unspoof.toml` with the zone, once it has said `ready`.
fn spawn(command: &str, dir: PathBuf, port: u16, ready: &str) -> Server {
    std::fs::write(dir.join("z.zone"), ZONE).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args([command, "--config"])
        .arg(dir.join("unspoof.toml"))
        .arg("--dns-zone")
        .arg(dir.join("z.zone"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, stderr) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server {
        child,
        port,
        dir,
        stderr,
        seen: Vec::new(),
    };
    server.wait_for_log(ready);
    server
}

impl Server {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} {}", self.pid());
    }

    /// Waits for a line of the server's stderr containing `needle`.
    fn wait_for_log(&mut self, needle: &str) {
        let deadline = Instant::now() + HANG;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no {needle:?} from unspoof; its stderr:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn process_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "unspoof did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> Client {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        let mut c = Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        assert!(c.reply().starts_with("220"));
        assert!(c.cmd("EHLO client.example\r\n").starts_with("250"));
        c
    }

    fn delivered(&self) -> Vec<String> {
        let new = self.dir.join("data/maildir/new");
        std::fs::read_dir(new)
            .map(|d| {
                d.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    /// One whole reply (the last line of a multi-line one).
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed by the server");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    }

    fn send(&mut self, text: &str) {
        self.w.write_all(text.as_bytes()).unwrap();
    }

    fn cmd(&mut self, text: &str) -> String {
        self.send(text);
        self.reply()
    }

    /// MAIL, RCPT and DATA for a message from `news@weeklynews.org`; returns after 354.
    fn begin(&mut self) {
        assert!(
            self.cmd("MAIL FROM:<news@weeklynews.org>\r\n")
                .starts_with("250")
        );
        assert!(
            self.cmd("RCPT TO:<suzie@shopping.example.net>\r\n")
                .starts_with("250")
        );
        assert!(self.cmd("DATA\r\n").starts_with("354"));
    }

    /// A whole transaction; returns the reply to the end of data.
    fn message(&mut self, subject: &str) -> String {
        self.begin();
        self.send(&head(subject));
        self.cmd("This week: nothing new.\r\n.\r\n")
    }
}

fn head(subject: &str) -> String {
    format!(
        "From: News <news@weeklynews.org>\r\nTo: suzie@shopping.example.net\r\n\
Subject: {subject}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <{}@weeklynews.org>\r\n\r\n",
        subject.replace(' ', ".")
    )
}

#[test]
fn sighup_reloads_the_policy_and_keeps_the_open_connection() {
    let mut server = start("hup", 60);
    let mut c = server.connect();

    // Not protected: SPF fails and there is no DMARC, so the message is delivered, tagged.
    let before = c.message("before reload");
    assert!(before.starts_with("250"), "{before}");
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(
        delivered[0].contains("X-Unspoof-Verdict: tag"),
        "{}",
        delivered[0]
    );

    // The site now protects weeklynews.org; SIGHUP makes the running server read it.
    let path = server.dir.join("unspoof.toml");
    std::fs::write(
        &path,
        policy(&server.dir, server.port, &["weeklynews.org"], 60),
    )
    .unwrap();
    server.signal("-HUP");
    server.wait_for_log("unspoof: policy reloaded");

    // Same connection, same message: now a spoof of a protected domain, refused.
    assert!(c.cmd("NOOP\r\n").starts_with("250"), "connection dropped");
    let after = c.message("after reload");
    assert!(after.starts_with("550 5.7.1"), "{after}");
    // Refused as a spoof of a protected domain: the reply names the class, not the code.
    assert!(
        after.contains("the sender's domain does not authenticate it"),
        "{after}"
    );
    assert_eq!(
        server.delivered().len(),
        1,
        "the refused message was delivered"
    );

    // A policy that does not parse is refused and the one in force stays.
    std::fs::write(&path, "protected_domains = [unterminated\n").unwrap();
    server.signal("-HUP");
    server.wait_for_log("policy reload failed");
    let again = c.message("after failed reload");
    assert!(again.starts_with("550 5.7.1"), "{again}");
    assert!(
        server.process_alive(),
        "a bad policy file stopped the server"
    );

    assert!(c.cmd("QUIT\r\n").starts_with("221"));
    server.signal("-TERM");
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn sigterm_lets_the_transaction_in_flight_finish_then_exits_0() {
    let mut server = start("term", 30);
    let mut busy = server.connect();
    let mut idle = server.connect();

    // Mid-transaction: DATA accepted and half of the message sent.
    busy.begin();
    busy.send(&head("sent across SIGTERM"));
    busy.send("First half of the body.\r\n");

    server.signal("-TERM");
    server.wait_for_log("shutting down");

    // The idle session is told to come back later and closed.
    let told = idle.reply();
    assert!(told.starts_with("421 4.3.2"), "{told}");
    let mut rest = Vec::new();
    let _ = idle.r.read_to_end(&mut rest);

    // New connections are no longer accepted.
    let deadline = Instant::now() + HANG;
    while TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The transaction in flight completes: 250, and the message is delivered.
    let end = busy.cmd("Second half.\r\n.\r\n");
    assert!(end.starts_with("250"), "{end}");
    let bye = busy.reply();
    assert!(bye.starts_with("421 4.3.2"), "{bye}");

    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].contains("Second half."), "{}", delivered[0]);
    assert!(
        !server.seen.iter().any(|l| l.contains("drain timeout")),
        "{}",
        server.seen.join("\n")
    );
}

/// The milter's `unspoof.toml`: `protected` domains, the milter on `port`.
fn milter_policy(port: u16, protected: &[&str]) -> String {
    let protected: Vec<String> = protected.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "hostname = \"mx.shopping.example.net\"\nprotected_domains = [{}]\n\n\
         [milter]\nlisten = [\"inet:127.0.0.1:{port}\"]\n\n[milter.limits]\ndrain_timeout = 30\n",
        protected.join(", ")
    )
}

/// One message from news@weeklynews.org through Postfix and the milter: swaks's exit code
/// and transcript.
fn through_postfix(pf: &Postfix, dir: &std::path::Path, subject: &str) -> (Option<i32>, String) {
    let file = dir.join(format!("{}.eml", subject.replace(' ', "-")));
    let message = head(subject).replace("suzie@shopping.example.net", "bob@example.net");
    std::fs::write(&file, format!("{message}This week: nothing new.\r\n")).unwrap();
    swaks(pf.smtp.port(), "news@weeklynews.org", &file)
}

#[test]
fn the_milter_reloads_on_sighup_and_drains_on_sigterm() {
    if let Some(why) = postfix_missing() {
        assert!(
            !is_ci(),
            "the milter's signal test cannot run under CI: {why}"
        );
        say(&format!("milter signals: skipped: {why}"));
        return;
    }
    let dir = temp_dir("milter");
    let port = free_port();
    let path = dir.join("unspoof.toml");
    std::fs::write(&path, milter_policy(port, &[])).unwrap();
    let mut milter = spawn("milter", dir.clone(), port, "unspoof milter: listening on");
    let pf = Postfix::start(port);

    // Not protected: delivered, tagged.
    let (code, t) = through_postfix(&pf, &dir, "before reload");
    assert_eq!(code, Some(0), "{t}\n{}", pf.log());
    let before = pf.wait_for("before.reload@weeklynews.org");
    assert!(
        String::from_utf8_lossy(&before).contains("X-Unspoof-Verdict: tag"),
        "{}",
        String::from_utf8_lossy(&before)
    );

    // SIGHUP: the running milter reads the file that now protects weeklynews.org.
    std::fs::write(&path, milter_policy(port, &["weeklynews.org"])).unwrap();
    milter.signal("-HUP");
    milter.wait_for_log("unspoof milter: policy reloaded");
    let (_, t) = through_postfix(&pf, &dir, "after reload");
    assert!(t.contains("<** 550 5.7.1"), "{t}\n{}", pf.log());

    // A file that does not parse: logged, and the policy in force stays.
    std::fs::write(&path, "protected_domains = [unterminated\n").unwrap();
    milter.signal("-HUP");
    milter.wait_for_log("unspoof milter: policy reload failed");
    let (_, t) = through_postfix(&pf, &dir, "after failed reload");
    assert!(t.contains("<** 550 5.7.1"), "{t}\n{}", pf.log());
    assert!(
        milter.process_alive(),
        "a bad policy file stopped the milter"
    );

    // SIGTERM: the loop drains (nothing in flight) and the process exits 0.
    milter.signal("-TERM");
    milter.wait_for_log("unspoof milter: shutting down");
    assert_eq!(milter.wait_exit().code(), Some(0));
    assert!(
        !milter.seen.iter().any(|l| l.contains("drain timeout")),
        "{}",
        milter.seen.join("\n")
    );
    drop(pf);
    let _ = std::fs::remove_dir_all(&dir);
}
