//! Every named limit (config::Limits) does what its documentation says when reached.

mod common;

use common::*;

async fn transaction(raw: &mut Raw) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_recipients_gives_452_for_the_extra_one() {
    let mut c = config("maxrcpt");
    c.limits.max_recipients = 2;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    assert!(
        raw.cmd("RCPT TO:<r1@example.org>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        raw.cmd("RCPT TO:<r2@example.org>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        raw.cmd("RCPT TO:<r3@example.org>\r\n")
            .await
            .starts_with("452 4.5.3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_size_at_mail_and_after_data() {
    let mut c = config("maxsize");
    c.limits.max_message_size = 1000;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    assert!(
        raw.cmd("MAIL FROM:<a@remote.test> SIZE=1001\r\n")
            .await
            .starts_with("552 5.3.4")
    );
    transaction(&mut raw).await;
    let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x\r\n".repeat(400));
    assert!(raw.cmd(&big).await.starts_with("552 5.3.4"));
    // The session is still in sync and usable.
    transaction(&mut raw).await;
    assert!(
        raw.cmd("Subject: small\r\n\r\nok\r\n.\r\n")
            .await
            .starts_with("250")
    );
    assert_eq!(maildir_messages(&gw.data_dir.join("maildir")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_line_length_and_header_limits() {
    let mut c = config("shape");
    c.limits.max_line_length = 100;
    c.limits.max_header_fields = 3;
    c.limits.max_header_size = 200;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    transaction(&mut raw).await;
    let long = format!("Subject: l\r\n\r\n{}\r\n.\r\n", "y".repeat(120));
    assert!(
        raw.cmd(&long)
            .await
            .starts_with("550 5.6.0 Message line too long")
    );
    transaction(&mut raw).await;
    assert!(
        raw.cmd("A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\nx\r\n.\r\n")
            .await
            .starts_with("550 5.6.0 Message header too large")
    );
    transaction(&mut raw).await;
    let fat = format!(
        "A: {}\r\nB: {}\r\nC: {}\r\n\r\nx\r\n.\r\n",
        "a".repeat(90),
        "b".repeat(90),
        "c".repeat(90)
    );
    assert!(
        raw.cmd(&fat)
            .await
            .starts_with("550 5.6.0 Message header too large")
    );
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_too_long_is_500() {
    let mut c = config("cmdline");
    c.limits.max_command_line = 512;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    let r = raw.cmd(&format!("NOOP {}\r\n", "z".repeat(600))).await;
    assert!(r.starts_with("500 5.5.2"), "{r}");
    assert!(raw.cmd("NOOP\r\n").await.starts_with("250"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_limit() {
    let mut c = config("perip");
    c.limits.max_connections_per_ip = 2;
    let gw = start(c).await;
    let _a = Raw::hello(gw.handle.inbound).await;
    let _b = Raw::hello(gw.handle.inbound).await;
    let mut third = Raw::connect(gw.handle.inbound).await;
    assert!(third.reply().await.starts_with("421 4.7.0"));
    assert_eq!(third.reply().await, "", "closed after 421");
    drop(_a);
    // The slot frees when a session ends; poll until the server has noticed the close.
    let mut ok = false;
    for _ in 0..100 {
        let mut again = Raw::connect(gw.handle.inbound).await;
        if again.reply().await.starts_with("220") {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "slot was never freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_connections_limit() {
    let mut c = config("total");
    c.limits.max_connections = 1;
    let gw = start(c).await;
    let _a = Raw::hello(gw.handle.inbound).await;
    let mut b = Raw::connect(gw.handle.submission.unwrap()).await;
    assert!(
        b.reply().await.starts_with("421 4.3.2"),
        "limit spans both listeners"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_errors_disconnects() {
    let mut c = config("errors");
    c.limits.max_errors = 3;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    assert!(raw.cmd("BOGUS\r\n").await.starts_with("500"));
    assert!(
        raw.cmd("RCPT TO:<x@example.org>\r\n")
            .await
            .starts_with("503")
    );
    let last = raw.cmd("EXPN staff\r\n").await;
    assert!(last.starts_with("502"), "{last}");
    assert!(raw.reply().await.starts_with("421 4.7.0 Too many errors"));
    assert_eq!(raw.reply().await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_is_disconnected_after_command_timeout() {
    let mut c = config("idle");
    c.limits.command_timeout = 1;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    raw.send(b"NOOP").await; // never finishes the line
    assert!(raw.reply().await.starts_with("421 4.4.2"));
    assert_eq!(raw.reply().await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_data_is_cut_at_data_timeout_and_nothing_is_kept() {
    let mut c = config("slowdata");
    c.limits.data_timeout = 1;
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    transaction(&mut raw).await;
    raw.send(b"Subject: slow\r\n\r\nstill typing").await;
    assert!(raw.reply().await.starts_with("421 4.4.2"));
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}
