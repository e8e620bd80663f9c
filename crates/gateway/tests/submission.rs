//! Submission (issue 4, item 2): AUTH only after STARTTLS, argon2 users, and the
//! login-to-sender binding on MAIL FROM and on the header From/Sender.

mod common;

use std::net::SocketAddr;

use common::*;
use unspoof_gateway::{GatewayConfig, UserConfig};

fn submission_config(name: &str) -> GatewayConfig {
    let mut c = config(name);
    c.users = vec![UserConfig {
        name: "alice".into(),
        password_hash: cheap_hash("correct horse"),
        addresses: vec!["alice@example.org".into()],
    }];
    c
}

fn sub(gw: &Running) -> SocketAddr {
    gw.handle.submission.unwrap()
}

const AUTH: [&str; 7] = [
    "--tls",
    "--auth",
    "PLAIN",
    "--auth-user",
    "alice",
    "--auth-password",
    "correct horse",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits_with_starttls_and_auth_plain() {
    let gw = start(submission_config("sub-ok")).await;
    let (code, out) = swaks(
        sub(&gw),
        &[
            &AUTH[..],
            &[
                "--from",
                "alice@example.org",
                "--to",
                "friend@elsewhere.test",
                "--header",
                "From: Alice <alice@example.org>",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let m = &maildir_messages(&gw.data_dir.join("maildir"))[0];
    assert!(m.contains("with ESMTPSA id"), "{m}");
    let rec = &gw.log.all()[0];
    assert_eq!(rec.listener, "submission");
    assert_eq!(rec.auth_user.as_deref(), Some("alice"));
    assert_eq!(rec.outcome, "accept");
    assert_eq!(rec.reasons, vec!["dkim.no_key"]);
    assert!(
        gw.decider.seen.lock().unwrap().is_empty(),
        "submission does not ask the engine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_auth_login_with_relay_to_downstream() {
    let sink = Sink::start(SinkMode::Normal).await;
    let mut c = submission_config("sub-login");
    c.downstream = Some(sink.addr.to_string());
    let gw = start(c).await;
    let script = r#"
import os, smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]))
s.ehlo("client.test")
assert "auth" not in s.esmtp_features, "AUTH offered before TLS"
s.starttls(context=ctx); s.ehlo("client.test")
assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"], s.esmtp_features
s.user, s.password = "alice", "correct horse"
print(s.auth("LOGIN", s.auth_login))
s.sendmail("alice@example.org", ["bob@elsewhere.test"], "From: alice@example.org\r\nSubject: out\r\n\r\nhi\r\n")
s.quit()
"#;
    let (code, out) = python(sub(&gw).port(), script).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("235"), "{out}");
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].rcpts,
        vec!["bob@elsewhere.test"],
        "submission relays outward"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_before_starttls_is_refused_and_not_offered() {
    let gw = start(submission_config("sub-notls")).await;
    let mut raw = Raw::hello(sub(&gw)).await;
    let r = raw.cmd("AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=\r\n").await;
    assert!(r.starts_with("538 5.7.11"), "{r}");
    assert!(
        raw.cmd("MAIL FROM:<alice@example.org>\r\n")
            .await
            .starts_with("530 5.7.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_535_and_nothing_is_sent() {
    let gw = start(submission_config("sub-badpw")).await;
    let (code, out) = swaks(
        sub(&gw),
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "wrong",
            "--from",
            "alice@example.org",
            "--to",
            "x@elsewhere.test",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("535 5.7.8"), "{out}");
    let (_, out) = swaks(
        sub(&gw),
        &[
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "mallory",
            "--auth-password",
            "x",
            "--from",
            "alice@example.org",
            "--to",
            "x@elsewhere.test",
        ],
    )
    .await;
    assert!(out.contains("535 5.7.8"), "{out}");
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_must_belong_to_the_user() {
    let gw = start(submission_config("sub-envfrom")).await;
    let (code, out) = swaks(
        sub(&gw),
        &[
            &AUTH[..],
            &["--from", "ceo@example.org", "--to", "x@elsewhere.test"],
        ]
        .concat(),
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("553 5.7.1"), "{out}");
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_from_and_sender_must_belong_to_the_user() {
    let gw = start(submission_config("sub-hdrfrom")).await;
    for extra in [
        &["--header", "From: The CEO <ceo@example.org>"][..],
        &[
            "--header",
            "From: alice@example.org",
            "--add-header",
            "From: ceo@example.org",
        ],
        &[
            "--header",
            "From: alice@example.org",
            "--add-header",
            "Sender: ceo@example.org",
        ],
    ] {
        let (code, out) = swaks(
            sub(&gw),
            &[
                &AUTH[..],
                &["--from", "alice@example.org", "--to", "x@elsewhere.test"],
                extra,
            ]
            .concat(),
        )
        .await;
        assert_ne!(code, 0, "{extra:?}");
        assert!(
            out.contains("550 5.7.1 Header From not owned"),
            "{extra:?}: {out}"
        );
    }
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_not_available_on_the_inbound_listener() {
    let gw = start(submission_config("sub-inbound")).await;
    let (code, out) = swaks(
        gw.handle.inbound,
        &[
            &AUTH[..],
            &["--from", "alice@example.org", "--to", "x@elsewhere.test"],
        ]
        .concat(),
    )
    .await;
    assert_ne!(code, 0);
    assert!(!out.contains("235"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_from_that_shows_another_address_is_refused_as_it_is_inbound() {
    let gw = start(submission_config("sub-shown")).await;
    let send = |from: &'static str| {
        let addr = sub(&gw);
        async move {
            swaks(
                addr,
                &[
                    &AUTH[..],
                    &[
                        "--from",
                        "alice@example.org",
                        "--to",
                        "x@elsewhere.test",
                        "--header",
                        from,
                    ],
                ]
                .concat(),
            )
            .await
        }
    };
    for from in [
        // An address inside an encoded-word: what a reader decodes and shows.
        "From: =?utf-8?q?ceo=40example.org?= <alice@example.org>",
        "From: =?utf-8?b?Q0VPIDxjZW9AYmFuay50ZXN0Pg==?= <alice@example.org>",
        // An address in the display name or a comment.
        "From: \"ceo@example.org\" <alice@example.org>",
        "From: alice@example.org (ceo@bank.test)",
        // More than one address.
        "From: alice@example.org, ceo@example.org",
        "From: Alice <alice@example.org>, Alice <alice@example.org>",
        // Syntax that parsers repair differently.
        "From: <alice@example.org> ceo@bank.test",
        "From: \"Alice <alice@example.org>",
    ] {
        let (code, out) = send(from).await;
        assert_ne!(code, 0, "{from}");
        assert!(
            out.contains("550 5.7.1 Header From not owned"),
            "{from}: {out}"
        );
    }
    assert!(maildir_messages(&gw.data_dir.join("maildir")).is_empty());
    // Display names that show nothing else, plain or encoded, are fine.
    for from in [
        "From: =?utf-8?q?Alic=C3=A9?= <alice@example.org>",
        "From: \"alice@example.org\" <alice@example.org>",
        "From: Alice (work) <alice@example.org>",
    ] {
        let (code, out) = send(from).await;
        assert_eq!(code, 0, "{from}: {out}");
    }
    assert_eq!(maildir_messages(&gw.data_dir.join("maildir")).len(), 3);
}
