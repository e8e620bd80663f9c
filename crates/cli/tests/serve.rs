//! `unspoof serve` with the real engine: a spoof of a protected domain is refused at the SMTP
//! reply, a doubtful message is delivered tagged (subject, banner, verdict header), a genuine
//! signed one is delivered with Authentication-Results. Real swaks over loopback; DNS from a
//! zone file.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use unspoof_testkit::{Serve, ServeOptions, example as example_path, free_port};

/// The gateway under test: `unspoof serve` from the kit, with this test's policy and zone.
struct Server(Serve);

const ZONE: &str = r#"
$ORIGIN football.example.com.
@                     IN TXT "v=spf1 ip4:213.165.64.12/32 -all"
_dmarc                IN TXT "v=DMARC1; p=none"
brisbane._domainkey   IN TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
$ORIGIN weeklynews.org.
@                     IN TXT "v=spf1 ip4:192.0.2.10 -all"
"#;

fn start() -> Server {
    Server(Serve::start(
        env!("CARGO_BIN_EXE_unspoof"),
        &ServeOptions {
            policy: r#"hostname = "mx.shopping.example.net"
protected_domains = ["football.example.com"]

# sample-genuine.eml is RFC 8463's example, signed in 2018 (t=1528637909) and sent here now: a
# replayed signature by the rules (dkim.old_signature, tests/sender_rules.rs), which this test of
# the gateway's actions leaves aside.
[dkim_replay]
max_signature_age_hours = 0
"#
            .into(),
            gateway: "domains = [\"shopping.example.net\"]\n".into(),
            zone: ZONE.into(),
            ..ServeOptions::default()
        },
    ))
}

impl Server {
    fn swaks(&self, from: &str, data: &str) -> Output {
        let file = self.0.dir.join(format!("msg-{}.eml", free_port()));
        std::fs::write(&file, data).unwrap();
        Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.0.port)])
            .args([
                "--from",
                from,
                "--to",
                "suzie@shopping.example.net",
                "--helo",
                "client.example",
            ])
            .arg("--data")
            .arg(&file)
            .output()
            .expect("swaks (installed by scripts/deps-gateway.sh)")
    }

    fn delivered(&self) -> Vec<String> {
        self.0.delivered()
    }
}

fn example(name: &str) -> String {
    std::fs::read_to_string(example_path(name)).unwrap()
}

#[test]
fn gateway_refuses_tags_and_accepts_with_the_real_engine() {
    let server = start();

    // 1. A spoof of our protected domain from outside: refused at the reply to DATA.
    let out = server.swaks("joe@football.example.com", &example("sample-spoof.eml"));
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<** 550 5.7.1"), "{transcript}");
    // The reply says what the sender can fix and gives our queue id, never the codes (they
    // would show a forger which check to get past); `unspoof log show <queue id>` has them.
    assert!(
        transcript.contains("Message refused: the sender's domain does not authenticate it"),
        "{transcript}"
    );
    assert!(!transcript.contains("spoof.own_domain"), "{transcript}");
    let qid = transcript
        .split("(queue id ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no queue id in {transcript}"))
        .to_string();
    let data = server.0.dir.join("data");
    let started = Instant::now();
    let shown = loop {
        // The record is written by the store's background writer, just after the reply.
        let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["log", "show", "--data-dir"])
            .arg(&data)
            .arg(&qid)
            .env_remove("UNSPOOF_STORE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() || started.elapsed() > Duration::from_secs(30) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(shown.contains("spoof.own_domain"), "{qid}: {shown}");
    assert!(
        server.delivered().is_empty(),
        "a refused message must not be delivered"
    );

    // 2. SPF fail for an unprotected domain without DMARC: delivered, tagged for the reader.
    let news = "From: News <news@weeklynews.org>\r\nTo: suzie@shopping.example.net\r\n\
Subject: Weekly news\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <w1@weeklynews.org>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThis week: nothing new.\r\n";
    let out = server.swaks("news@weeklynews.org", news);
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<-  250"), "{transcript}");
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 1);
    let tagged = &delivered[0];
    assert!(
        tagged.contains("Subject: [SUSPICIOUS] Weekly news"),
        "{tagged}"
    );
    assert!(
        tagged.contains("X-Unspoof-Verdict: tag; reasons="),
        "{tagged}"
    );
    assert!(tagged.contains("spf.fail"), "{tagged}");
    assert!(
        tagged.contains("Authentication-Results: mx.shopping.example.net;"),
        "{tagged}"
    );
    let body = tagged.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert!(body.contains("This week: nothing new."), "{tagged}");
    assert!(
        body.starts_with("Caution:"),
        "the banner opens the body: {tagged}"
    );

    // 3. The genuine message, DKIM-signed by football.example.com (aligned): accepted.
    let out = server.swaks("joe@football.example.com", &example("sample-genuine.eml"));
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(transcript.contains("<-  250"), "{transcript}");
    let delivered = server.delivered();
    assert_eq!(delivered.len(), 2);
    let genuine = delivered
        .iter()
        .find(|m| m.contains("Is dinner ready?"))
        .unwrap();
    assert!(
        genuine.contains("dkim=pass header.d=football.example.com"),
        "{genuine}"
    );
    assert!(genuine.contains("dmarc=pass"), "{genuine}");
    assert!(!genuine.contains("X-Unspoof-Verdict"), "{genuine}");
    assert!(!genuine.contains("[SUSPICIOUS]"), "{genuine}");
}
