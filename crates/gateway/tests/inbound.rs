//! Inbound mail (issue 4): relay control, decide-before-answering, Maildir default, session log.
//! Real clients (swaks, Python smtplib) over loopback; the engine is a scripted test double.

mod common;

use common::*;
use std::sync::Arc;
use unspoof_gateway::{MessageRecord, SessionLog};

const MSG_ARGS: [&str; 4] = [
    "--from",
    "sender@remote.test",
    "--to",
    "postmaster@example.org",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_to_embedded_default_lands_in_maildir_with_authentication_results() {
    let gw = start(config("maildir")).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &[
            &MSG_ARGS[..],
            &["--header", "Subject: hello", "--body", "hi there"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let msgs = maildir_messages(&gw.data_dir.join("maildir"));
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let m = &msgs[0];
    assert!(
        m.starts_with("Return-Path: <sender@remote.test>\r\n"),
        "{m}"
    );
    assert!(
        m.contains("Authentication-Results: mx.test; dmarc=pass"),
        "{m}"
    );
    let log = gw.log.all();
    assert_eq!(log.len(), 1);
    let rec = &log[0];
    assert_eq!(rec.outcome, "accept");
    assert_eq!(rec.reasons, vec!["test.accept"]);
    // Our queue id is in the Received header, the 250 reply and the log.
    assert!(
        m.contains(&format!(
            "by mx.test (unspoof) with ESMTP id {}",
            rec.queue_id
        )),
        "{m}"
    );
    assert!(
        out.contains(&format!("queued as {}", rec.queue_id)),
        "{out}"
    );
    assert!(rec.reply.starts_with("250 2.0.0"));
    assert_eq!(rec.helo.as_deref(), Some("client.test"));
    assert_eq!(rec.mail_from.as_deref(), Some("sender@remote.test"));
    assert_eq!(rec.recipients, vec!["postmaster@example.org"]);
    assert!(rec.message_id.is_some(), "swaks sets a Message-ID");
    assert!(rec.stored_at.as_deref().unwrap().contains("/maildir/new/"));
    assert!(gw.handle.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_session_log_writes_one_json_line_per_message() {
    let c = config("jsonl");
    let dir = c.data_dir.clone();
    let decider = std::sync::Arc::new(ScriptedDecider::default());
    let handle = unspoof_gateway::Gateway::new(c, decider)
        .start()
        .await
        .unwrap();
    for subject in ["one", "two [reject]"] {
        swaks(
            handle.inbound,
            &[&MSG_ARGS[..], &["--header", &format!("Subject: {subject}")]].concat(),
        )
        .await;
    }
    assert!(handle.shutdown().await);
    let text = std::fs::read_to_string(dir.join("sessions.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["outcome"], "accept");
    assert_eq!(lines[1]["outcome"], "reject");
    assert_eq!(lines[1]["client_ip"], "127.0.0.1");
    assert_eq!(lines[1]["reasons"][0], "test.reject");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_mail_is_relayed_downstream_only_after_it_accepted() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("relay");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &[&MSG_ARGS[..], &["--header", "Subject: relay me"]].concat(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "sender@remote.test");
    assert_eq!(got[0].rcpts, vec!["postmaster@example.org"]);
    let data = String::from_utf8_lossy(&got[0].data);
    assert!(data.starts_with("Authentication-Results: mx.test; dmarc=pass (test double)\r\nReceived: from client.test"), "{data}");
    assert!(data.contains("Subject: relay me"));
    let rec = &gw.log.all()[0];
    assert_eq!(
        rec.downstream_reply.as_deref(),
        Some("250 2.0.0 sink queued")
    );
    // Nothing was written locally when a downstream exists.
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_an_open_relay() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("openrelay");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &["--from", "a@remote.test", "--to", "victim@elsewhere.test"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("550 5.7.1 Relaying denied"), "{out}");
    // A look-alike domain is not ours either.
    let mut raw = Raw::hello(gw.handle.inbound).await;
    assert!(
        raw.cmd("MAIL FROM:<a@remote.test>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        raw.cmd("RCPT TO:<x@example.org.evil.test>\r\n")
            .await
            .starts_with("550 5.7.1")
    );
    assert!(
        raw.cmd("RCPT TO:<x@sub.example.org>\r\n")
            .await
            .starts_with("550 5.7.1")
    );
    assert!(raw.cmd("DATA\r\n").await.starts_with("554 5.5.1"));
    assert!(sink.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_recipient_downstream_replies_are_passed_back() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("perrcpt");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let script = r#"
import os, smtplib
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
refused = s.sendmail("a@remote.test", ["good@example.org", "bad@example.org"],
    "From: a@remote.test\r\nTo: good@example.org\r\nSubject: two\r\n\r\nbody\r\n")
print(refused)
s.quit()
"#;
    let (code, out) = python(gw.handle.inbound.port(), script).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("'bad@example.org': (550, b'5.1.1 no such user here')"),
        "{out}"
    );
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, vec!["good@example.org"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_answers_550_without_codes_and_relays_nothing() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("reject");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &[&MSG_ARGS[..], &["--header", "Subject: [reject] forged"]].concat(),
    )
    .await;
    assert_ne!(code, 0);
    let reply = out
        .lines()
        .find(|l| l.contains("550 5.7.1"))
        .unwrap_or_else(|| panic!("no 550 5.7.1 in {out}"));
    // What the sender can do and our queue id; never the codes (an oracle for a forger).
    assert!(
        reply.contains("Message refused: it does not meet the recipient's mail policy"),
        "{reply}"
    );
    assert!(!reply.contains("test.reject"), "{reply}");
    assert!(sink.received().is_empty());
    // The codes are in the record that the reply's queue id finds.
    let rec = &gw.log.all()[0];
    assert_eq!(rec.outcome, "reject");
    assert!(
        reply.contains(&format!("(queue id {})", rec.queue_id)),
        "{reply} / {}",
        rec.queue_id
    );
    assert_eq!(rec.reasons, vec!["test.reject"]);
    assert!(rec.reply.starts_with("550 5.7.1 Message refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_answers_250_only_after_the_message_is_stored() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("quarantine");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &[&MSG_ARGS[..], &["--header", "Subject: [quarantine] odd"]].concat(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let q = maildir_messages(&gw.data_dir.join("maildir/.Quarantine"));
    assert_eq!(q.len(), 1);
    assert!(q[0].contains("Subject: [quarantine] odd"));
    assert!(q[0].contains("Authentication-Results: mx.test;"));
    assert!(
        sink.received().is_empty(),
        "quarantined mail must not be relayed"
    );
    let rec = &gw.log.all()[0];
    assert_eq!(rec.outcome, "quarantine");
    assert!(
        rec.stored_at
            .as_deref()
            .unwrap()
            .contains(".Quarantine/new/")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_relays_the_rewritten_message() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("tag");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &[&MSG_ARGS[..], &["--header", "Subject: [tag] hmm"]].concat(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let data = String::from_utf8_lossy(&sink.received()[0].data).to_string();
    assert!(data.contains("X-Unspoof-Verdict: tag\r\n"), "{data}");
    assert!(data.contains("X-Test-Rewritten: yes\r\n"), "{data}");
    assert!(
        data.starts_with("Authentication-Results: mx.test;"),
        "{data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_domain_sender_from_outside_is_refused_at_mail() {
    let gw = start(config("spoof")).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &["--from", "ceo@example.org", "--to", "staff@example.org"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("550 5.7.1 Sender address rejected"), "{out}");
    assert!(
        gw.decider.seen.lock().unwrap().is_empty(),
        "refused before DATA"
    );
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_domain_sender_from_trusted_network_is_accepted() {
    let mut c = config("trusted");
    c.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let gw = start(c).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &["--from", "app@example.org", "--to", "staff@example.org"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(maildir_messages(&gw.data_dir.join("maildir")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mail_from_is_refused_at_mail() {
    let gw = start(config("badfrom")).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    for bad in [
        "<a@exa mple.org>",
        "<a@-x.test>",
        "<@x.test>",
        "<a@>",
        "a@x.test",
    ] {
        let r = raw.cmd(&format!("MAIL FROM:{bad}\r\n")).await;
        assert!(
            r.starts_with("553 5.1.7") || r.starts_with("501"),
            "{bad}: {r}"
        );
    }
    // The null reverse-path (bounces) is fine inbound.
    assert!(raw.cmd("MAIL FROM:<>\r\n").await.starts_with("250"));
}

// Forged Authentication-Results are the engine's removals, applied by the gateway: see
// tests/forged.rs (with the real engine) and crates/cli/tests/cross_door.rs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_get_replies_in_order() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("pipelining");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let mut raw = Raw::connect(gw.handle.inbound).await;
    assert!(raw.reply().await.starts_with("220"));
    let ehlo = raw.cmd("EHLO client.test\r\n").await;
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(ehlo.contains(ext), "{ehlo}");
    }
    assert!(
        !ehlo.contains("AUTH"),
        "no AUTH on the inbound listener: {ehlo}"
    );
    // RFC 2920: MAIL, RCPT, RCPT, DATA in one packet.
    raw.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<one@example.org>\r\nRCPT TO:<nope@else.test>\r\nDATA\r\n").await;
    assert!(raw.reply().await.starts_with("250 2.1.0"));
    assert!(raw.reply().await.starts_with("250 2.1.5"));
    assert!(raw.reply().await.starts_with("550 5.7.1"));
    assert!(raw.reply().await.starts_with("354"));
    raw.send(b"Subject: p\r\n\r\nx\r\n.\r\nQUIT\r\n").await;
    assert!(raw.reply().await.starts_with("250 2.0.0 Ok: queued as"));
    assert!(raw.reply().await.starts_with("221"));
    assert_eq!(sink.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_python_and_the_log_records_tls() {
    let gw = start(config("starttls")).await;
    let script = r#"
import os, smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
s.starttls(context=ctx)
s.ehlo("client.test")
assert "starttls" not in s.esmtp_features, s.esmtp_features
s.sendmail("a@remote.test", ["x@example.org"], "Subject: tls\r\nMessage-ID: <m1@remote.test>\r\n\r\nsecret\r\n")
s.quit()
"#;
    let (code, out) = python(gw.handle.inbound.port(), script).await;
    assert_eq!(code, 0, "{out}");
    let rec = &gw.log.all()[0];
    let tls = rec.tls.as_ref().expect("TLS recorded");
    assert!(tls.version.starts_with("TLSv1_"), "{tls:?}");
    assert_eq!(rec.message_id.as_deref(), Some("<m1@remote.test>"));
    let m = &maildir_messages(&gw.data_dir.join("maildir"))[0];
    assert!(m.contains("with ESMTPS id"), "{m}");
    // The self-signed certificate was generated into the data dir.
    assert!(gw.data_dir.join("tls/cert.pem").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_pipelined_after_starttls_is_not_executed() {
    let gw = start(config("tlsinject")).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    let r = raw.cmd("STARTTLS\r\nMAIL FROM:<a@remote.test>\r\n").await;
    assert!(r.starts_with("554 5.5.1"), "{r}");
    // The injected MAIL was dropped: the session has no transaction.
    assert!(
        raw.cmd("RCPT TO:<x@example.org>\r\n")
            .await
            .starts_with("503")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_stuffing_survives_the_relay() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = config("dots");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    raw.cmd("RCPT TO:<x@example.org>\r\n").await;
    assert!(raw.cmd("DATA\r\n").await.starts_with("354"));
    let r = raw
        .cmd("Subject: dots\r\n\r\n..\r\n..hidden\r\nend\r\n.\r\n")
        .await;
    assert!(r.starts_with("250"), "{r}");
    let data = String::from_utf8_lossy(&sink.received()[0].data).to_string();
    assert!(
        data.ends_with("\r\n\r\n.\r\n.hidden\r\nend\r\n"),
        "{data:?}"
    );
}

/// A PTR resolver double: every client is `client.ptr.test`.
struct StaticPtr;

impl unspoof_gateway::ReverseDns for StaticPtr {
    fn lookup(
        &self,
        _: std::net::IpAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + '_>> {
        Box::pin(async { Some("client.ptr.test".to_string()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_dns_name_goes_into_received_and_the_log() {
    let mut c = config("rdns");
    c.reverse_dns = true;
    let dir = c.data_dir.clone();
    let log = std::sync::Arc::new(MemLog::default());
    let handle = unspoof_gateway::Gateway::new(c, std::sync::Arc::new(ScriptedDecider::default()))
        .session_log(log.clone())
        .reverse_dns(std::sync::Arc::new(StaticPtr))
        .start()
        .await
        .unwrap();
    let (code, out) = swaks(handle.inbound, &MSG_ARGS).await;
    assert_eq!(code, 0, "{out}");
    let m = &maildir_messages(&dir.join("maildir"))[0];
    assert!(
        m.contains("Received: from client.test (client.ptr.test [127.0.0.1])"),
        "{m}"
    );
    assert_eq!(log.all()[0].reverse_dns.as_deref(), Some("client.ptr.test"));
}

/// A quarantine that keeps the records too (as the store does), in memory; `fail` makes its
/// joined write fail.
#[derive(Default)]
struct RecordKeeping {
    fail: bool,
    /// (queue id, the record's outcome and `stored_at`, whether the session's record came).
    held: std::sync::Mutex<Vec<(String, String, Option<String>, bool)>>,
}

impl unspoof_gateway::Quarantine for RecordKeeping {
    fn quarantine(&self, _: unspoof_gateway::QuarantineItem) -> std::io::Result<String> {
        panic!("a quarantine that keeps records is given the message with its record");
    }
    fn keeps_records(&self) -> bool {
        true
    }
    fn quarantine_with_record<'a>(
        &'a self,
        item: unspoof_gateway::QuarantineItem,
        record: &'a mut MessageRecord,
        session: Option<&'a unspoof_gateway::SessionRecord>,
    ) -> unspoof_gateway::store::DurableFuture<'a> {
        record.stored_at = Some(format!("held-{}", item.queue_id));
        self.held.lock().unwrap().push((
            item.queue_id.clone(),
            record.outcome.to_string(),
            record.stored_at.clone(),
            session.is_some(),
        ));
        let result = if self.fail {
            Err(std::io::Error::other("journal refused"))
        } else {
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }
}

/// Which of the session log's calls each record came by.
#[derive(Default)]
struct CallLog(std::sync::Mutex<Vec<(&'static str, MessageRecord)>>);

impl SessionLog for CallLog {
    fn record(&self, r: &MessageRecord) {
        self.0.lock().unwrap().push(("record", r.clone()));
    }
    fn record_durable<'a>(
        &'a self,
        r: &'a MessageRecord,
        _: Option<&'a unspoof_gateway::SessionRecord>,
    ) -> unspoof_gateway::store::DurableFuture<'a> {
        self.0.lock().unwrap().push(("durable", r.clone()));
        Box::pin(std::future::ready(Ok(())))
    }
    fn record_held<'a>(
        &'a self,
        r: &'a MessageRecord,
        _: Option<&'a unspoof_gateway::SessionRecord>,
    ) -> unspoof_gateway::store::DurableFuture<'a> {
        self.0.lock().unwrap().push(("held", r.clone()));
        Box::pin(std::future::ready(Ok(())))
    }
}

async fn quarantine_through(fail: bool) -> (String, Arc<RecordKeeping>, Arc<CallLog>) {
    let q = Arc::new(RecordKeeping {
        fail,
        ..Default::default()
    });
    let log = Arc::new(CallLog::default());
    let handle = unspoof_gateway::Gateway::new(
        config("quarantine-joined"),
        Arc::new(ScriptedDecider::default()),
    )
    .quarantine(q.clone())
    .session_log(log.clone())
    .start()
    .await
    .expect("gateway starts");
    let mut c = Raw::hello(handle.inbound).await;
    assert!(
        c.cmd("MAIL FROM:<a@remote.test>\r\n")
            .await
            .starts_with("250")
    );
    assert!(
        c.cmd("RCPT TO:<x@example.org>\r\n")
            .await
            .starts_with("250")
    );
    assert!(c.cmd("DATA\r\n").await.starts_with("354"));
    let reply = c
        .cmd("Subject: [quarantine] odd\r\n\r\nbody\r\n.\r\n")
        .await;
    (reply, q, log)
}

/// A quarantine that keeps records (the store) is given the message, its record and the
/// session's in one call, before the 250; the session log is then told the record is held
/// (the store skips it, other logs write it), not asked to make it durable a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_message_and_its_record_are_stored_in_one_call() {
    let (reply, q, log) = quarantine_through(false).await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let held = q.held.lock().unwrap().clone();
    assert_eq!(held.len(), 1, "{held:?}");
    let (queue_id, outcome, stored_at, with_session) = &held[0];
    assert!(reply.contains(queue_id.as_str()), "{reply}");
    assert_eq!(outcome, "quarantine");
    assert!(with_session, "the session's first record goes with it");
    let calls = log.0.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "held");
    assert_eq!(calls[0].1.outcome, "quarantine");
    assert_eq!(&calls[0].1.stored_at, stored_at);
}

/// The joined write failing: a 4xx (the client keeps the message and retries), and that
/// outcome made durable as the message's record, with the session's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_that_cannot_store_message_and_record_answers_4xx() {
    let (reply, q, log) = quarantine_through(true).await;
    assert!(reply.starts_with("451 "), "{reply}");
    assert_eq!(q.held.lock().unwrap().len(), 1);
    let calls = log.0.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (how, rec) = &calls[0];
    assert_eq!(*how, "durable");
    assert_eq!(rec.outcome, "tempfail");
    assert_eq!(rec.stored_at, None);
    assert!(
        rec.reasons.contains(&"store.quarantine_failed".to_string()),
        "{rec:?}"
    );
    assert!(rec.reply.starts_with("451 "), "{rec:?}");
}
