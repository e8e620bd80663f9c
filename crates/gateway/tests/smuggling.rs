//! SMTP smuggling is impossible through the gateway (issue 4, item 6): non-standard
//! end-of-data sequences never end a message, never reach downstream as a second message, and
//! the message carrying them is refused with a clear reply. Raw sockets, lenient sink.

mod common;

use common::*;

const SEQUENCES: [&[u8]; 5] = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_standard_end_of_data_never_smuggles_a_second_message() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("smuggle");
    c.downstream = Some(sink.addr.to_string());
    c.limits.max_errors = 100;
    let gw = start(c).await;
    for seq in SEQUENCES {
        let mut raw = Raw::hello(gw.handle.inbound).await;
        assert!(
            raw.cmd("MAIL FROM:<a@remote.test>\r\n")
                .await
                .starts_with("250")
        );
        assert!(
            raw.cmd("RCPT TO:<x@example.org>\r\n")
                .await
                .starts_with("250")
        );
        assert!(raw.cmd("DATA\r\n").await.starts_with("354"));
        let mut payload = b"From: a@remote.test\r\nSubject: first\r\n\r\nbody".to_vec();
        payload.extend_from_slice(seq);
        payload.extend_from_slice(
            b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n\
From: admin@example.org\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n",
        );
        raw.send(&payload).await;
        // The only end of data is the final CRLF.CRLF, and the whole thing is refused.
        let r = raw.reply().await;
        assert!(r.starts_with("550 5.6.0"), "{seq:?}: {r}");
        // The session continues in sync: the next reply belongs to our NOOP.
        assert!(
            raw.cmd("NOOP\r\n").await.starts_with("250 2.0.0 Ok"),
            "{seq:?}"
        );
        assert!(raw.cmd("QUIT\r\n").await.starts_with("221"));
    }
    assert!(sink.received().is_empty(), "{:?}", sink.received());
    assert!(
        gw.decider.seen.lock().unwrap().is_empty(),
        "refused before the engine"
    );
    let log = gw.log.all();
    assert_eq!(log.len(), SEQUENCES.len());
    assert!(log.iter().all(|r| r.outcome == "refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_and_bare_cr_inside_a_message_are_refused() {
    let gw = start(config("bare")).await;
    for body in [&b"line one\nline two\r\n"[..], b"line one\rline two\r\n"] {
        let mut raw = Raw::hello(gw.handle.inbound).await;
        raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
        raw.cmd("RCPT TO:<x@example.org>\r\n").await;
        raw.cmd("DATA\r\n").await;
        let mut m = b"Subject: s\r\n\r\n".to_vec();
        m.extend_from_slice(body);
        m.extend_from_slice(b".\r\n");
        raw.send(&m).await;
        let r = raw.reply().await;
        assert!(r.starts_with("550 5.6.0 Bare LF or CR"), "{r}");
    }
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
    // The second session's record is written when its connection ends, which may be just
    // after the reply we read.
    let waited = std::time::Instant::now();
    while gw.log.all().len() < 2 && waited.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let codes: Vec<String> = gw.log.all().into_iter().flat_map(|r| r.reasons).collect();
    assert_eq!(codes, vec!["smtp.bare_lf", "smtp.bare_cr"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_message_after_a_refused_one_arrives_alone_and_intact() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("smuggle2");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    raw.cmd("RCPT TO:<x@example.org>\r\n").await;
    raw.cmd("DATA\r\n").await;
    let r = raw
        .cmd("Subject: one\r\n\r\nx\n.\nMAIL FROM:<e@example.org>\r\nRCPT TO:<v@example.org>\r\nDATA\r\nevil\r\n.\r\n")
        .await;
    assert!(r.starts_with("550 5.6.0"), "{r}");
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    raw.cmd("RCPT TO:<x@example.org>\r\n").await;
    raw.cmd("DATA\r\n").await;
    let r = raw.cmd("Subject: two\r\n\r\nclean\r\n.\r\n").await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    let data = String::from_utf8_lossy(&got[0].data);
    assert!(
        data.contains("Subject: two") && !data.contains("evil"),
        "{data}"
    );
}
