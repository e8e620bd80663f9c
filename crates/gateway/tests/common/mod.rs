//! Test support: a scripted decider (test double for the engine), a recording downstream sink,
//! a raw SMTP client, and runners for swaks and Python's smtplib. Everything stays on loopback
//! and nothing touches DNS.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use unspoof_gateway::{
    Action, Decide, Decision, Envelope, Gateway, GatewayConfig, HeaderEdit, MessageRecord, Reason,
    ServeHandle, SessionLog, SmtpReply,
};

/// Decides by the Subject: `[reject]`, `[quarantine]`, `[tag]`, anything else accepts.
#[derive(Default)]
pub struct ScriptedDecider {
    pub seen: Mutex<Vec<(Envelope, Vec<u8>)>>,
    pub reloads: AtomicUsize,
    /// Keep only the envelope, not the message (for tests that send large messages).
    pub forget_messages: bool,
}

impl Decide for ScriptedDecider {
    async fn decide(&self, raw: &[u8], envelope: &Envelope, authserv_id: &str) -> Decision {
        let kept = if self.forget_messages {
            Vec::new()
        } else {
            raw.to_vec()
        };
        self.seen.lock().unwrap().push((envelope.clone(), kept));
        let subject = unspoof_gateway::message::header(raw, "Subject").unwrap_or_default();
        let (action, code) = if subject.contains("[reject]") {
            (Action::Reject, "test.reject")
        } else if subject.contains("[quarantine]") {
            (Action::Quarantine, "test.quarantine")
        } else if subject.contains("[tag]") {
            (Action::Tag, "test.tag")
        } else {
            (Action::Accept, "test.accept")
        };
        // As the engine does: forged results are the engine's removals (none here), our
        // verdict field and Authentication-Results go on top, the tag changes the message.
        let mut edits = Vec::new();
        if action == Action::Tag {
            edits.push(HeaderEdit::Insert {
                name: "X-Test-Rewritten".into(),
                value: " yes".into(),
            });
            edits.push(HeaderEdit::Insert {
                name: "X-Unspoof-Verdict".into(),
                value: " tag".into(),
            });
        }
        edits.push(HeaderEdit::Insert {
            name: "Authentication-Results".into(),
            value: format!(" {authserv_id}; dmarc=pass (test double)"),
        });
        let reply = match action {
            Action::Reject => SmtpReply::new(
                550,
                "5.7.1",
                format!(
                    "Message refused: {}",
                    unspoof_engine::verdict::sender_advice(code)
                ),
            ),
            _ => SmtpReply::new(250, "2.0.0", "Ok"),
        };
        Decision {
            action,
            reasons: vec![Reason {
                code: code.into(),
                message: "scripted".into(),
            }],
            reply,
            edits,
            body: None,
            analysis: None,
        }
    }

    fn reload(&self) -> Result<(), String> {
        self.reloads.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Session records kept in memory.
#[derive(Default)]
pub struct MemLog(pub Mutex<Vec<MessageRecord>>);

impl SessionLog for MemLog {
    fn record(&self, r: &MessageRecord) {
        self.0.lock().unwrap().push(r.clone());
    }
}

impl MemLog {
    pub fn all(&self) -> Vec<MessageRecord> {
        self.0.lock().unwrap().clone()
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "unspoof-gw-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Offline test configuration: ephemeral loopback ports, no reverse DNS, domain example.org.
pub fn config(name: &str) -> GatewayConfig {
    GatewayConfig {
        data_dir: temp_dir(name),
        hostname: "mx.test".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        submission: Some("127.0.0.1:0".parse().unwrap()),
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        domains: vec!["example.org".into()],
        reverse_dns: false,
        ..GatewayConfig::default()
    }
}

pub struct Running {
    pub handle: ServeHandle,
    pub decider: Arc<ScriptedDecider>,
    pub log: Arc<MemLog>,
    pub data_dir: PathBuf,
}

pub async fn start(config: GatewayConfig) -> Running {
    let decider = Arc::new(ScriptedDecider::default());
    let log = Arc::new(MemLog::default());
    let data_dir = config.data_dir.clone();
    let handle = Gateway::new(config, decider.clone())
        .session_log(log.clone())
        .start()
        .await
        .expect("gateway starts");
    Running {
        handle,
        decider,
        log,
        data_dir,
    }
}

/// Files in a Maildir folder's `new/`, contents sorted.
pub fn maildir_messages(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = match std::fs::read_dir(dir.join("new")) {
        Ok(rd) => rd
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

// ---------------------------------------------------------------- downstream sink

#[derive(Debug, Clone)]
pub struct SinkMessage {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum SinkMode {
    /// Offers PIPELINING (as Postfix does); accepts everything except senders and recipients
    /// starting with `bad`.
    Normal,
    /// As `Normal`, without PIPELINING: the relay then waits for each reply in turn.
    NoPipelining,
    /// Answers end-of-data with this reply line.
    DataReply(&'static str),
    /// Reads the data, then never answers.
    HangAfterData,
}

/// A downstream MTA for tests. It splits messages the lenient way (a line `.` ends DATA
/// whether it ends in CRLF or bare LF), like the receivers that SMTP smuggling exploits, so a
/// smuggled second message would show up here.
pub struct Sink {
    pub addr: SocketAddr,
    pub messages: Arc<Mutex<Vec<SinkMessage>>>,
}

impl Sink {
    pub async fn start(mode: SinkMode) -> Sink {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(sink_session(s, mode.clone(), m.clone()));
            }
        });
        Sink { addr, messages }
    }

    pub fn received(&self) -> Vec<SinkMessage> {
        self.messages.lock().unwrap().clone()
    }
}

async fn sink_session(s: TcpStream, mode: SinkMode, out: Arc<Mutex<Vec<SinkMessage>>>) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
    let mut from = String::new();
    let mut rcpts = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let upper = text.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            if matches!(mode, SinkMode::NoPipelining) {
                "250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".into()
            } else {
                "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".into()
            }
        } else if upper.starts_with("MAIL FROM:") {
            let sender = text[10..].trim_matches(['<', '>', ' ']).to_string();
            rcpts.clear();
            if sender.starts_with("bad") {
                from.clear();
                "553 5.7.1 sender refused here\r\n".into()
            } else {
                from = sender;
                "250 2.1.0 ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") && from.is_empty() {
            "503 5.5.1 need MAIL first\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let to = text[8..].trim_matches(['<', '>', ' ']).to_string();
            if to.starts_with("bad") {
                "550 5.1.1 no such user here\r\n".into()
            } else {
                rcpts.push(to);
                "250 2.1.5 ok\r\n".into()
            }
        } else if upper == "DATA" {
            w.write_all(b"354 go\r\n").await.unwrap();
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                    return;
                }
                if l == b".\r\n" || l == b".\n" {
                    break;
                }
                let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                data.extend_from_slice(l);
            }
            out.lock().unwrap().push(SinkMessage {
                mail_from: from.clone(),
                rcpts: rcpts.clone(),
                data,
            });
            match &mode {
                SinkMode::Normal | SinkMode::NoPipelining => "250 2.0.0 sink queued\r\n".into(),
                SinkMode::DataReply(r) => format!("{r}\r\n"),
                SinkMode::HangAfterData => {
                    let mut buf = [0u8; 64];
                    let _ = r.read(&mut buf).await;
                    return;
                }
            }
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 ok\r\n".into()
        } else if upper == "QUIT" {
            let _ = w.write_all(b"221 bye\r\n").await;
            return;
        } else {
            "500 what\r\n".into()
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- raw client

/// A raw SMTP client: sends exactly the bytes given, reads whole (multi-line) replies.
pub struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        Raw {
            r: BufReader::new(r),
            w,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    /// The next complete reply; empty string on EOF.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Sends `cmd` and returns the reply.
    pub async fn cmd(&mut self, cmd: &str) -> String {
        self.send(cmd.as_bytes()).await;
        self.reply().await
    }

    /// The reading and writing halves, for a test that drives both at once.
    pub fn into_parts(
        self,
    ) -> (
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        (self.r, self.w)
    }

    /// Greeting and EHLO.
    pub async fn hello(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect(addr).await;
        assert!(c.reply().await.starts_with("220 "));
        assert!(c.cmd("EHLO client.test\r\n").await.starts_with("250"));
        c
    }
}

// ---------------------------------------------------------------- real clients

/// Runs swaks against `addr` with `args`; returns (exit code, transcript).
pub async fn swaks(addr: SocketAddr, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new("swaks")
        .arg("--server")
        .arg(addr.to_string())
        .args(["--helo", "client.test", "--timeout", "30"])
        .args(args)
        .output()
        .await
        .expect("swaks is installed (run scripts/deps-gateway.sh)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs a Python snippet with `PORT` set; returns (exit code, stdout+stderr).
pub async fn python(port: u16, script: &str) -> (i32, String) {
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("PORT", port.to_string())
        .output()
        .await
        .expect("python3 is installed");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// An Argon2id hash with cheap parameters (the debug build's Argon2 is slow).
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"unspoof-test-salt").unwrap();
    a2.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}
