//! The one SMTP client against a loopback SMTP server (`unspoof_testkit::SmtpSink`): a report's
//! one transaction (`send`), and the relay's use (`Client`): per-recipient replies as the server
//! gave them, and one connection for several transactions.

use std::time::Duration;

use unspoof_forensics::send::{Client, send};
use unspoof_testkit::SmtpSink;

fn refusing_gone() -> SmtpSink {
    SmtpSink::answering(|rcpt| {
        rcpt.starts_with("gone@")
            .then(|| "550 5.1.1 no such user".into())
    })
}

#[tokio::test]
async fn send_delivers_dot_stuffed_with_crlf_and_fails_on_a_refused_recipient() {
    let sink = refusing_gone();
    let relay = format!("127.0.0.1:{}", sink.port);
    let to = vec!["a@site.test".to_string(), "b@site.test".to_string()];
    let reply = send(
        &relay,
        "me.test",
        "r@me.test",
        &to,
        b"Subject: x\n\n.line\nend",
    )
    .await
    .unwrap();
    assert!(reply.starts_with("250"), "{reply}");
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert_eq!(mails[0].0, "a@site.test");
    assert_eq!(mails[0].1, b"Subject: x\r\n\r\n.line\r\nend\r\n");

    let to = vec!["a@site.test".to_string(), "gone@site.test".to_string()];
    let err = send(
        &relay,
        "me.test",
        "r@me.test",
        &to,
        b"Subject: y\r\n\r\nz\r\n",
    )
    .await
    .unwrap_err();
    // What the DMARC sender reads to tell a refusal for good (5xx) from a retry.
    assert!(err.contains("refused: 550 5.1.1"), "{err}");
    assert_eq!(sink.mails().len(), 2, "nothing sent after the refusal");
}

#[tokio::test]
async fn the_client_gives_each_rcpt_reply_and_keeps_its_connection() {
    let sink = refusing_gone();
    let relay = format!("127.0.0.1:{}", sink.port);
    let mut c = Client::connect(&relay, "gw.test", Duration::from_secs(30))
        .await
        .unwrap();
    let r = c
        .mail_rcpt("s@x.test", false, false, "a@site.test")
        .await
        .unwrap();
    assert_eq!(r.code, 250);
    let r = c.rcpt("gone@site.test").await.unwrap();
    assert_eq!(r.to_client_line(), "550 5.1.1 no such user\r\n");
    let r = c.data(b"Subject: one\r\n\r\nbody\r\n").await.unwrap();
    assert_eq!(r.code, 250);
    // A second transaction on the same connection.
    c.rset().await.unwrap();
    let r = c
        .mail_rcpt("s@x.test", false, false, "b@site.test")
        .await
        .unwrap();
    assert_eq!(r.code, 250);
    assert_eq!(c.data(b"Subject: two\r\n\r\n").await.unwrap().code, 250);
    c.quit().await;
    let got: Vec<String> = sink.mails().into_iter().map(|(to, _)| to).collect();
    assert_eq!(got, ["a@site.test", "b@site.test"]);
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let port = unspoof_testkit::free_port();
    let err = send(
        &format!("127.0.0.1:{port}"),
        "me.test",
        "r@me.test",
        &[],
        b"x",
    )
    .await
    .unwrap_err();
    assert!(err.contains("server unavailable"), "{err}");
}
