//! Never lose a message (issue 4, item 4): whenever the downstream MTA is down, slow or
//! refuses, the client gets a reply that makes it keep the message (4xx) or learn it failed
//! (5xx) — never a 250 for a message nobody holds.

mod common;

use common::*;

async fn send_one(gw: &Running) -> (i32, String) {
    swaks(
        gw.handle.inbound,
        &[
            "--from",
            "a@remote.test",
            "--to",
            "x@example.org",
            "--header",
            "Subject: keep me",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_down_gives_451_and_nothing_is_lost() {
    // A port with nothing listening: a socket bound but never listening refuses connections
    // and holds the port for the whole test. (Binding, noting the port and closing let another
    // test's gateway take the port in between: CI once saw 530 from a submission port here.)
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = closed.local_addr().unwrap().port();
    let mut c = config("down");
    c.downstream = Some(format!("127.0.0.1:{port}"));
    let gw = start(c).await;
    let (code, out) = send_one(&gw).await;
    assert_ne!(code, 0);
    assert!(out.contains("451 4.4.1"), "{out}");
    assert!(!out.contains("queued as"), "{out}");
    // Not silently kept somewhere else either: the sender holds it and retries.
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
    // Python sees a temporary failure (smtplib raises SMTPRecipientsRefused with code 451).
    let script = r#"
import os, smtplib
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
try:
    s.sendmail("a@remote.test", ["x@example.org"], "Subject: s\r\n\r\nb\r\n")
    print("SENT")
except smtplib.SMTPRecipientsRefused as e:
    print("REFUSED", e.recipients["x@example.org"][0])
"#;
    let (_, out) = python(gw.handle.inbound.port(), script).await;
    assert_eq!(out.trim(), "REFUSED 451", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_tempfail_at_end_of_data_is_passed_back() {
    let sink = Sink::start(SinkMode::DataReply("451 4.3.0 sink is busy")).await;
    let mut c = config("tempfail");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let (code, out) = send_one(&gw).await;
    assert_ne!(code, 0);
    assert!(out.contains("451 4.3.0 sink is busy"), "{out}");
    let rec = &gw.log.all()[0];
    assert_eq!(rec.outcome, "tempfail");
    assert_eq!(
        rec.downstream_reply.as_deref(),
        Some("451 4.3.0 sink is busy")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_permanent_refusal_is_passed_back() {
    let sink = Sink::start(SinkMode::DataReply("554 5.7.1 content refused")).await;
    let mut c = config("permfail");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let (code, out) = send_one(&gw).await;
    assert_ne!(code, 0);
    assert!(out.contains("554 5.7.1 content refused"), "{out}");
    assert_eq!(gw.log.all()[0].outcome, "refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_downstream_gives_451_so_the_sender_retries() {
    let sink = Sink::start(SinkMode::HangAfterData).await;
    let mut c = config("slow");
    c.downstream = Some(sink.addr.to_string());
    c.limits.downstream_timeout = 1;
    let gw = start(c).await;
    let (code, out) = send_one(&gw).await;
    assert_ne!(code, 0);
    assert!(out.contains("451 4.4.2"), "{out}");
    assert_eq!(gw.log.all()[0].outcome, "tempfail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_downstream_connection_serves_several_transactions() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("reuse");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    for i in 0..3 {
        raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
        raw.cmd(&format!("RCPT TO:<r{i}@example.org>\r\n")).await;
        raw.cmd("DATA\r\n").await;
        let subject = if i == 1 { "[reject] no" } else { "yes" };
        raw.cmd(&format!("Subject: {subject}\r\n\r\nm{i}\r\n.\r\n"))
            .await;
    }
    let got = sink.received();
    let rcpts: Vec<_> = got.iter().map(|m| m.rcpts.clone()).collect();
    assert_eq!(rcpts, vec![vec!["r0@example.org"], vec!["r2@example.org"]]);
}

/// MAIL and the first RCPT go downstream in one write when the downstream offers PIPELINING;
/// either way a sender the downstream refuses is refused to the client at RCPT with the
/// downstream's own reply, and the next transaction on the same connections goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_refused_downstream_is_refused_at_rcpt_with_or_without_pipelining() {
    for mode in [SinkMode::Normal, SinkMode::NoPipelining] {
        let sink = Sink::start(mode).await;
        let mut c = config("mail-refused");
        c.downstream = Some(sink.addr.to_string());
        let gw = start(c).await;
        let mut raw = Raw::hello(gw.handle.inbound).await;
        assert!(
            raw.cmd("MAIL FROM:<bad@remote.test>\r\n")
                .await
                .starts_with("250")
        );
        let r = raw.cmd("RCPT TO:<r0@example.org>\r\n").await;
        assert!(r.starts_with("553 5.7.1 sender refused here"), "{r}");
        assert!(raw.cmd("DATA\r\n").await.starts_with("554"), "no recipient");
        assert!(raw.cmd("RSET\r\n").await.starts_with("250"));
        assert!(
            raw.cmd("MAIL FROM:<a@remote.test>\r\n")
                .await
                .starts_with("250")
        );
        assert!(
            raw.cmd("RCPT TO:<r1@example.org>\r\n")
                .await
                .starts_with("250")
        );
        let r = raw.cmd("RCPT TO:<bad1@example.org>\r\n").await;
        assert!(r.starts_with("550 5.1.1"), "{r}");
        assert!(raw.cmd("DATA\r\n").await.starts_with("354"));
        let r = raw.cmd("Subject: yes\r\n\r\nm1\r\n.\r\n").await;
        assert!(r.starts_with("250"), "{r}");
        let got = sink.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].mail_from, "a@remote.test");
        assert_eq!(got[0].rcpts, vec!["r1@example.org"]);
    }
}
