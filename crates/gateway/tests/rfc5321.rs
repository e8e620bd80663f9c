//! RFC 5321 where it matters (issue 13, item 5): `RCPT TO:<postmaster>` is accepted, NUL octets
//! are never delivered, non-ASCII addresses need SMTPUTF8. (The submission From rules are in
//! `submission.rs`.)

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_postmaster_is_accepted_and_delivered_to_our_postmaster() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("postmaster");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let script = r#"
import os, smtplib
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
print(s.sendmail("a@remote.test", ["postmaster"], "Subject: to the postmaster\r\n\r\nhi\r\n"))
s.quit()
"#;
    let (code, out) = python(gw.handle.inbound.port(), script).await;
    assert_eq!(code, 0, "{out}");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    // RFC 5321 4.5.1: the bare name is our postmaster, at our first domain.
    assert_eq!(got[0].rcpts, vec!["postmaster@example.org"]);

    let mut raw = Raw::hello(gw.handle.inbound).await;
    // Any case; and `<postmaster>` is no null path in MAIL, `<>` no recipient in RCPT.
    assert!(
        raw.cmd("MAIL FROM:<postmaster>\r\n")
            .await
            .starts_with("553 5.1.7")
    );
    assert!(raw.cmd("MAIL FROM:<>\r\n").await.starts_with("250"));
    assert!(raw.cmd("RCPT TO:<>\r\n").await.starts_with("553 5.1.3"));
    raw.cmd("RSET\r\n").await;
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    let r = raw.cmd("RCPT TO:<PostMaster>\r\n").await;
    assert!(r.starts_with("250"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_octets_are_refused_and_never_delivered() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("nul");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    for data in [
        &b"Subject: nul in body\r\n\r\nsafe\0<script>\r\n.\r\n"[..],
        b"From: a@remote.test\0@bank.test\r\nSubject: nul in header\r\n\r\nx\r\n.\r\n",
        b"Subject: nul after a dot\r\n\r\n.\0\r\n.\r\n",
    ] {
        raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
        raw.cmd("RCPT TO:<x@example.org>\r\n").await;
        assert!(raw.cmd("DATA\r\n").await.starts_with("354"));
        raw.send(data).await;
        let r = raw.reply().await;
        assert!(r.starts_with("550 5.6.0 NUL"), "{data:?}: {r}");
    }
    // The session stays in step, and a clean message still goes through.
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    raw.cmd("RCPT TO:<x@example.org>\r\n").await;
    raw.cmd("DATA\r\n").await;
    assert!(
        raw.cmd("Subject: clean\r\n\r\nx\r\n.\r\n")
            .await
            .starts_with("250")
    );
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert!(!got[0].data.contains(&0));
    let codes: Vec<Vec<String>> = gw.log.all().into_iter().map(|r| r.reasons).collect();
    assert_eq!(codes[..3], vec![vec!["smtp.nul".to_string()]; 3][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_addresses_need_smtputf8() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("utf8");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    let r = raw.cmd("MAIL FROM:<j\u{f6}rg@remote.test>\r\n").await;
    assert!(r.starts_with("553 5.6.7"), "{r}");
    // 8-bit text that is not UTF-8 is no address at all.
    raw.send(b"MAIL FROM:<j\xf6rg@remote.test> SMTPUTF8\r\n")
        .await;
    let r = raw.reply().await;
    assert!(r.starts_with("501 5.5.4"), "{r}");
    // A recipient too.
    assert!(
        raw.cmd("MAIL FROM:<a@remote.test>\r\n")
            .await
            .starts_with("250")
    );
    let r = raw.cmd("RCPT TO:<j\u{f6}rg@example.org>\r\n").await;
    assert!(r.starts_with("553 5.6.7"), "{r}");
    raw.cmd("RSET\r\n").await;
    // With SMTPUTF8 both are fine.
    let r = raw
        .cmd("MAIL FROM:<j\u{f6}rg@remote.test> SMTPUTF8\r\n")
        .await;
    assert!(r.starts_with("250"), "{r}");
    let r = raw.cmd("RCPT TO:<j\u{f6}rg@example.org>\r\n").await;
    assert!(r.starts_with("250"), "{r}");
}
