//! Abuse throttled (issue 13, item 4): failed logins slow down and then lock out, per client
//! network and per account; a client that trickles bytes is cut off by the per-line timeout
//! and the minimum data rate, long before the command and DATA totals.
//!
//! Timing is only asserted as lower bounds (a delay was at least what it should be), never as
//! "fast enough": the machine is shared.

mod common;

use std::time::{Duration, Instant};

use common::*;
use unspoof_gateway::{GatewayConfig, UserConfig};

fn users(c: &mut GatewayConfig) {
    c.users = ["alice", "bob"]
        .iter()
        .map(|n| UserConfig {
            name: n.to_string(),
            password_hash: cheap_hash(&format!("{n} secret")),
            addresses: vec![format!("{n}@example.org")],
        })
        .collect();
}

/// Logs in as each (user, password) in turn over STARTTLS with smtplib, a new connection per
/// attempt; prints one `code elapsed_ms` line per attempt.
const LOGINS: &str = r#"
import os, smtplib, ssl, sys, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for arg in sys.argv[1:]:
    user, password = arg.split(":", 1)
    s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
    s.starttls(context=ctx); s.ehlo("client.test")
    t0 = time.monotonic()
    s.user, s.password = user, password
    try:
        # One mechanism: login() would try LOGIN after a failed PLAIN (two failures).
        code, _ = s.auth("PLAIN", s.auth_plain)
    except smtplib.SMTPAuthenticationError as e:
        code = e.smtp_code
    except smtplib.SMTPResponseException as e:
        code = e.smtp_code
    print(code, int((time.monotonic() - t0) * 1000), flush=True)
    s.close()
"#;

async fn logins(port: u16, attempts: &[&str]) -> Vec<(u16, u64)> {
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(LOGINS)
        .args(attempts)
        .env("PORT", port.to_string())
        .output()
        .await
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| {
            let (c, ms) = l.split_once(' ').unwrap();
            (c.parse().unwrap(), ms.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_wait_longer_each_time_then_the_address_is_locked_out() {
    let mut c = config("auth-ip");
    users(&mut c);
    c.limits.auth_failure_delay_ms = 200;
    c.limits.auth_failure_delay_max_ms = 700;
    c.limits.auth_failures_per_ip = 4;
    c.limits.auth_failures_per_account = 100;
    let gw = start(c).await;
    let port = gw.handle.submission.unwrap().port();
    let got = logins(
        port,
        &[
            "alice:wrong1",
            "bob:wrong2",
            "nobody:wrong3",
            "alice:wrong4",
            // Locked out: even the right password is not checked.
            "bob:bob secret",
        ],
    )
    .await;
    let codes: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(codes, vec![535, 535, 535, 535, 454], "{got:?}");
    // Each failure's reply was held back at least 200, 400, 700 (the cap), 700 ms.
    for (i, min) in [200, 400, 700, 700].iter().enumerate() {
        assert!(got[i].1 >= *min, "attempt {i}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_locked_out_and_other_accounts_are_not() {
    let mut c = config("auth-account");
    users(&mut c);
    c.limits.auth_failure_delay_ms = 50;
    c.limits.auth_failures_per_ip = 100;
    c.limits.auth_failures_per_account = 3;
    let gw = start(c).await;
    let port = gw.handle.submission.unwrap().port();
    let got = logins(
        port,
        &[
            "alice:bob secret",
            "alice:guess",
            "alice:guess again",
            "alice:alice secret",
            "bob:bob secret",
        ],
    )
    .await;
    let codes: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(codes, vec![535, 535, 535, 454, 235], "{got:?}");
    assert!(got[1].1 >= 100 && got[2].1 >= 200, "{got:?}");
}

/// Sends `bytes` one at a time, `every` apart, until the server closes; returns what the
/// server said and how long it took.
async fn trickle(raw: Raw, bytes: &'static [u8], every: Duration) -> (String, Duration) {
    let started = Instant::now();
    let (mut r, mut w) = raw.into_parts();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for b in bytes.iter().cycle() {
            if w.write_all(std::slice::from_ref(b)).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    let mut said = String::new();
    // A generous guard: the limits under test are 1 or 2 s, the totals 300 and 600 s.
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            said.push_str(&line);
        }
    })
    .await;
    writer.abort();
    (said, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_trickled_a_byte_at_a_time_is_cut_at_the_line_timeout() {
    let mut c = config("trickle-cmd");
    c.limits.line_timeout = 1;
    let gw = start(c).await;
    let raw = Raw::hello(gw.handle.inbound).await;
    // Never a complete line: `NOOP NOOP NOOP ...`, 4 bytes a second.
    let (said, took) = trickle(raw, b"NOOP ", Duration::from_millis(250)).await;
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_below_the_minimum_rate_is_cut_and_nothing_is_kept() {
    let mut c = config("trickle-rate");
    c.limits.line_timeout = 2;
    c.limits.min_data_rate = 200;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    raw.cmd("RCPT TO:<x@example.org>\r\n").await;
    assert!(raw.cmd("DATA\r\n").await.starts_with("354"));
    // A complete line every 264 ms (so the line timeout never fires), 15 octets a second.
    let (said, took) = trickle(raw, b"ab\r\n", Duration::from_millis(66)).await;
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_line_that_never_ends_is_cut_at_the_line_timeout() {
    let mut c = config("trickle-line");
    c.limits.line_timeout = 1;
    c.limits.min_data_rate = 0;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    raw.cmd("RCPT TO:<x@example.org>\r\n").await;
    assert!(raw.cmd("DATA\r\n").await.starts_with("354"));
    let (said, took) = trickle(raw, b"x", Duration::from_millis(100)).await;
    assert!(said.starts_with("421 4.4.2"), "{said:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}
