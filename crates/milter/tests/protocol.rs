//! The milter protocol from the MTA's side, without an MTA: negotiation, macros, every action,
//! the error defaults, limits and shutdown. DNS comes from an in-process zone (offline).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::net::{TcpStream, UnixStream};
use unspoof_engine::contact::ContactHistory;
use unspoof_milter::wire::{action, proto};
use unspoof_milter::{
    Decided, MessageLog, Milter, MilterConfig, MilterHandle, OnError, QuarantineStore, Quarantined,
    StoreFuture,
};

async fn start_with(world: &World, tweak: impl FnOnce(&mut MilterConfig)) -> MilterHandle {
    let mut config = MilterConfig {
        listen: vec!["inet:127.0.0.1:0".parse().unwrap()],
        log_verdicts: false,
        ..MilterConfig::default()
    };
    tweak(&mut config);
    Milter::new(config, world.engine(Duration::from_secs(2)).await)
        .start()
        .await
        .expect("milter starts")
}

async fn start(world: &World) -> MilterHandle {
    start_with(world, |_| {}).await
}

async fn tcp(h: &MilterHandle) -> TcpStream {
    let s = TcpStream::connect(h.tcp_addr().unwrap()).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

const STRANGER: &str = "203.0.113.5";

#[tokio::test]
async fn negotiation_takes_what_postfix_offers() {
    let world = World::new();
    let h = start(&world).await;
    let m = postfix_like(tcp(&h).await).await;
    assert_eq!(m.version, 6);
    assert_eq!(
        m.actions,
        action::ADDHDRS
            | action::CHGHDRS
            | action::CHGBODY
            | action::QUARANTINE
            | action::SETSYMLIST
    );
    for flag in [
        proto::NR_CONN,
        proto::NR_HELO,
        proto::NR_MAIL,
        proto::NR_RCPT,
        proto::NR_DATA,
        proto::NR_HDR,
        proto::NR_EOH,
        proto::NR_BODY,
        proto::NOUNKNOWN,
        proto::HDR_LEADSPC,
    ] {
        assert_ne!(m.protocol & flag, 0, "flag {flag:#x} not taken");
    }
    // We never skip a step we need.
    for flag in [
        proto::NOCONNECT,
        proto::NOHELO,
        proto::NOMAIL,
        proto::NORCPT,
        proto::NOHDRS,
        proto::NOBODY,
        proto::NOEOH,
    ] {
        assert_eq!(m.protocol & flag, 0, "flag {flag:#x} taken");
    }
    let connect = m
        .macro_lists
        .iter()
        .find(|(s, _)| *s == 0)
        .expect("connect macros");
    assert!(connect.1.contains("{client_addr}"), "{:?}", m.macro_lists);
    let mail = m
        .macro_lists
        .iter()
        .find(|(s, _)| *s == 2)
        .expect("mail macros");
    assert!(mail.1.contains("{auth_authen}") && mail.1.contains('i'));
    m.quit().await;
}

#[tokio::test]
async fn an_old_mta_gets_a_reply_to_every_step() {
    let world = World::new();
    let h = start(&world).await;
    // Sendmail 8.13 / protocol 2: no no-reply flags, no leading space, no symbol lists.
    let mut m = Mta::negotiate(tcp(&h).await, 2, 0x3f, 0x7f).await;
    assert_eq!(m.version, 2);
    assert_eq!(m.protocol, 0);
    assert_eq!(m.actions & action::SETSYMLIST, 0);
    assert!(m.macro_lists.is_empty());
    let raw = good_message(&world, "old mta", false);
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    assert_eq!(o.code, b'a', "{o:?}");
    let ar = o.added_value("Authentication-Results").expect("AR");
    assert!(ar.contains("dkim=pass"), "{ar}");
}

#[tokio::test]
async fn good_mail_gets_authentication_results_and_simple_dkim_survives() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    // Tight `X-Tight:value` and folded fields, signed c=simple: the reassembled message must be
    // the signed one octet for octet.
    let raw = good_message(&world, "quarterly figures", true);
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    assert_eq!(o.code, b'a', "{o:?}");
    let ar = o.added_value("Authentication-Results").expect("AR added");
    assert!(
        ar.starts_with(&format!(" {HOSTNAME};")),
        "leading space with HDR_LEADSPC: {ar:?}"
    );
    for want in [
        "dkim=pass",
        "header.d=good.test",
        "spf=pass",
        "smtp.mailfrom=alice@good.test",
        "dmarc=pass",
        "smtp.remote-ip=192.0.2.10",
    ] {
        assert!(ar.contains(want), "{want} missing in {ar}");
    }
    assert!(!ar.contains('\r'), "folded with LF only: {ar:?}");
    // Inserted at the top; accept adds no verdict field and changes nothing else.
    assert_eq!(o.mods.len(), 1, "{o:?}");
    assert_eq!(o.mods[0].0, b'i');
    assert_eq!(&o.mods[0].1[..4], &[0, 0, 0, 0]);
    assert_eq!(h.stats().accepted, 1);
}

#[tokio::test]
async fn without_leading_space_the_eaten_space_is_put_back() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = Mta::negotiate(
        tcp(&h).await,
        6,
        ALL_ACTIONS,
        ALL_PROTOCOL & !proto::HDR_LEADSPC,
    )
    .await;
    assert_eq!(m.protocol & proto::HDR_LEADSPC, 0);
    // Every field written `Name: value`: exact after the space is put back.
    let raw = good_message(&world, "no leadspc", false);
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    let ar = o.added_value("Authentication-Results").expect("AR");
    assert!(
        ar.starts_with(&format!("{HOSTNAME};")),
        "no leading space: {ar:?}"
    );
    assert!(ar.contains("dkim=pass"), "{ar}");

    // The documented limit: a signed `Name:value` field cannot be told from `Name: value`
    // without HDR_LEADSPC, so a c=simple signature over it fails.
    let raw = good_message(&world, "tight without leadspc", true);
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    let ar = o.added_value("Authentication-Results").expect("AR");
    assert!(ar.contains("dkim=fail"), "{ar}");
}

#[tokio::test]
async fn a_spoof_of_a_protected_domain_is_refused_and_its_codes_are_on_record_not_in_the_reply() {
    let world = World::new();
    let log = Arc::new(MemLog::default());
    let config = MilterConfig {
        listen: vec!["inet:127.0.0.1:0".parse().unwrap()],
        log_verdicts: false,
        ..MilterConfig::default()
    };
    let h = Milter::new(config, world.engine(Duration::from_secs(2)).await)
        .with_message_log(log.clone())
        .start()
        .await
        .unwrap();
    let mut m = postfix_like(tcp(&h).await).await;
    let raw = plain_message("The CEO <ceo@bank.test>", "urgent wire transfer");
    let o = m
        .message(&Transaction::new(STRANGER, "ceo@bank.test", &raw))
        .await;
    assert_eq!(o.code, b'y', "{o:?}");
    // What the sender can fix and the MTA's queue id; the codes would guide a forger.
    assert_eq!(
        o.reply,
        "550 5.7.1 Message refused: the sender's domain does not authenticate it; its \
         administrator can check the domain's SPF, DKIM and DMARC records (queue id 4ABCDEF)"
    );
    assert!(o.mods.is_empty(), "no edits on a reject: {o:?}");
    assert_eq!(h.stats().rejected, 1);
    let got = log.0.lock().unwrap().clone();
    assert_eq!(got[0].0.as_deref(), Some("4ABCDEF"));
    assert_eq!(got[0].1, "reject");
    assert!(got[0].2.iter().any(|c| c == "spoof.own_domain"), "{got:#?}");
}

#[tokio::test]
async fn tag_changes_subject_adds_headers_and_banner() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let raw = plain_message("Shop <news@tagme.test>", "weekly offers");
    let o = m
        .message(&Transaction::new(STRANGER, "news@tagme.test", &raw))
        .await;
    assert_eq!(o.code, b'a', "{o:?}");
    assert_eq!(
        o.changed(),
        vec![(
            1,
            "Subject".to_string(),
            " [SUSPICIOUS] weekly offers".to_string()
        )]
    );
    let verdict = o.added_value("X-Unspoof-Verdict").expect("verdict field");
    assert!(verdict.starts_with(" tag; reasons="), "{verdict}");
    assert!(verdict.contains("spf.fail"), "{verdict}");
    assert!(
        o.added_value("Authentication-Results")
            .unwrap()
            .contains("spf=fail")
    );
    let body = String::from_utf8(o.body().expect("body replaced")).unwrap();
    assert!(
        body.starts_with(
            "Caution: unspoof could not confirm this message is from who it claims to be"
        ),
        "{body}"
    );
    assert!(
        body.ends_with("\r\nPlease pay the invoice today.\r\n"),
        "{body}"
    );

    let delivered = String::from_utf8(apply(&raw, &o, true)).unwrap();
    let head = delivered.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("Authentication-Results: "), "{head}");
    assert!(
        head.contains("\r\nX-Unspoof-Verdict: tag; reasons="),
        "{head}"
    );
    assert!(
        head.contains("\r\nSubject: [SUSPICIOUS] weekly offers\r\n"),
        "{head}"
    );
    assert_eq!(h.stats().tagged, 1);
}

#[tokio::test]
async fn a_tagged_multipart_message_gets_the_engines_banner_in_each_part() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let raw = b"From: Shop <news@tagme.test>\r\n\
To: bob@example.net\r\n\
Subject: =?utf-8?q?caf=C3=A9?= offers\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Caf=C3=A9 offers this week.\r\n\
--b1\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<html><body><p>Offers</p></body></html>\r\n\
--b1--\r\n";
    let o = m
        .message(&Transaction::new(STRANGER, "news@tagme.test", raw))
        .await;
    assert_eq!(o.code, b'a', "{o:?}");
    let delivered = String::from_utf8(apply(raw, &o, true)).unwrap();
    assert!(
        delivered.contains("\r\nSubject: [SUSPICIOUS] =?utf-8?q?caf=C3=A9?= offers\r\n"),
        "{delivered}"
    );
    assert!(delivered.contains("Content-Type: multipart/alternative; boundary=\"b1\"\r\n"));
    let body = &delivered[delivered.find("\r\n\r\n").unwrap()..];
    assert_eq!(body.matches("--b1\r\n").count(), 2, "{body}");
    assert!(body.contains("--b1--"));
    // Both alternatives carry the banner (the text part stays quoted-printable).
    assert_eq!(
        body.matches("unspoof could not confirm").count(),
        2,
        "{body}"
    );
    assert!(body.contains("Caf=C3=A9 offers this week."), "{body}");
    assert!(body.contains("<p>Offers</p>"), "{body}");
}

#[tokio::test]
async fn a_large_banner_body_goes_in_chunks() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let mut raw = plain_message("Shop <news@tagme.test>", "big");
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    for _ in 0..3000 {
        raw.extend_from_slice(line);
    }
    let o = m
        .message(&Transaction::new(STRANGER, "news@tagme.test", &raw))
        .await;
    let chunks: Vec<usize> = o
        .mods
        .iter()
        .filter(|(c, _)| *c == b'b')
        .map(|(_, d)| d.len())
        .collect();
    assert!(chunks.len() >= 4, "{chunks:?}");
    assert!(chunks.iter().all(|&n| n <= 65535), "{chunks:?}");
    // Every header edit comes before the first body chunk.
    let first_body = o.mods.iter().position(|(c, _)| *c == b'b').unwrap();
    assert!(o.mods[first_body..].iter().all(|(c, _)| *c == b'b'));
    let body = o.body().unwrap();
    let original = &raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert!(body.len() > original.len());
    assert!(body.ends_with(original));
}

/// (message, queue id, action) of each stored copy.
type Stored = (Vec<u8>, Option<String>, String);

#[derive(Default)]
struct Store {
    got: Mutex<Vec<Stored>>,
}

impl QuarantineStore for Store {
    fn store<'a>(&'a self, q: Quarantined<'a>) -> StoreFuture<'a> {
        Box::pin(async move {
            let mut got = self.got.lock().unwrap();
            got.push((
                q.raw.to_vec(),
                q.queue_id.map(str::to_string),
                q.analysis.verdict.action.to_string(),
            ));
            Ok(format!("Q-{}", got.len()))
        })
    }
}

#[tokio::test]
async fn quarantine_holds_in_the_mta_and_copies_to_the_store() {
    let world = World::new();
    let store = Arc::new(Store::default());
    let mut config = MilterConfig {
        listen: vec!["inet:127.0.0.1:0".parse().unwrap()],
        log_verdicts: false,
        ..MilterConfig::default()
    };
    config.on_error = OnError::Tempfail;
    let h = Milter::new(config, world.engine(Duration::from_secs(2)).await)
        .with_quarantine_store(store.clone())
        .start()
        .await
        .unwrap();
    let mut m = postfix_like(tcp(&h).await).await;
    let raw = plain_message("Billing <billing@shady.test>", "your account");
    let o = m
        .message(&Transaction::new(STRANGER, "billing@shady.test", &raw))
        .await;
    assert_eq!(
        o.code, b'a',
        "the MTA's final state after QUARANTINE: {o:?}"
    );
    let reason = o.quarantine().expect("quarantine");
    assert!(reason.contains("dmarc.quarantine"), "{reason}");
    assert!(reason.contains("stored as Q-1"), "{reason}");
    assert!(
        o.added_value("X-Unspoof-Verdict")
            .unwrap()
            .starts_with(" quarantine;")
    );
    let got: Vec<Stored> = store.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, raw, "the store gets the message as received");
    assert_eq!(got[0].1.as_deref(), Some("4ABCDEF"));
    assert_eq!(got[0].2, "quarantine");

    // An MTA that does not allow quarantine gets a refusal, never a silent delivery.
    let mut m = Mta::negotiate(
        tcp(&h).await,
        6,
        ALL_ACTIONS & !action::QUARANTINE,
        ALL_PROTOCOL,
    )
    .await;
    let o = m
        .message(&Transaction::new(STRANGER, "billing@shady.test", &raw))
        .await;
    assert_eq!(o.code, b'y');
    assert!(o.reply.starts_with("550 5.7.1"), "{}", o.reply);
}

#[tokio::test]
async fn forged_results_claiming_to_be_ours_are_removed() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let mut raw = format!(
        "Authentication-Results: other.example; spf=pass\r\n\
         Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.test\r\n\
         X-Unspoof-Verdict: accept\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(&good_message(&world, "forged", false));
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    assert_eq!(o.code, b'a');
    // The forgery is itself a finding (tag); the deletions come first either way.
    assert_eq!(
        o.changed()[..2],
        [
            (2, "Authentication-Results".to_string(), String::new()),
            (1, "X-Unspoof-Verdict".to_string(), String::new()),
        ]
    );
    let verdict = o.added_value("X-Unspoof-Verdict").unwrap();
    assert!(verdict.contains("trust."), "{verdict}");
    let delivered = String::from_utf8(apply(&raw, &o, true)).unwrap();
    assert!(delivered.contains("Authentication-Results: other.example; spf=pass"));
    assert_eq!(
        delivered
            .matches(&format!("Authentication-Results: {HOSTNAME};"))
            .count(),
        1
    );
    assert_eq!(delivered.matches("X-Unspoof-Verdict:").count(), 1);
    assert!(!delivered.contains("X-Unspoof-Verdict: accept"));
}

/// Every form RFC 8601 allows for our authserv-id (and a malformed one): the milter deletes
/// them all with the reader the gateway uses; the delivered copy is read back with Python's
/// `email` module.
#[tokio::test]
async fn forged_results_in_every_form_are_removed() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let forged = [
        "Authentication-Results: (x) mx.unspoof.test; dmarc=pass header.from=f1.test",
        "Authentication-Results:\r\n mx.unspoof.test; dmarc=pass header.from=f2.test",
        "Authentication-Results: mx.unspoof.test(x); dmarc=pass header.from=f3.test",
        "Authentication-Results: \"mx.unspoof.test\"; dmarc=pass header.from=f4.test",
        "Authentication-Results: mx.unspoof.test.; dmarc=pass header.from=f5.test",
        "AUTHENTICATION-RESULTS: MX.UNSPOOF.TEST; dmarc=pass header.from=f6.test",
        "Authentication-Results: mx.unspoof.test 1; dmarc=pass header.from=f7.test",
        "Authentication-Results: (a\r\n (b)) \"MX.Unspoof.Test.\" (c) ; dmarc=pass header.from=f8.test",
        "Authentication-Results: (unclosed mx.unspoof.test; dmarc=pass header.from=f9.test",
        "X-Unspoof-Verdict: accept; reasons=f10.test",
        "Authentication-Results: other.test; dmarc=pass header.from=keep1.test (mx.unspoof.test)",
    ];
    let mut raw = forged.join("\r\n").into_bytes();
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(&good_message(&world, "forged forms", false));
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    assert_eq!(o.code, b'a', "{o:?}");
    let delivered = apply(&raw, &o, true);
    let text = String::from_utf8_lossy(&delivered).to_string();
    let head = text.split("\r\n\r\n").next().unwrap();
    for n in 1..=10 {
        assert!(
            !head.contains(&format!("=f{n}.test")),
            "f{n} survived:\n{head}"
        );
    }
    let dir = TempDir::new("forged");
    let file = dir.path().join("delivered.eml");
    std::fs::write(&file, &delivered).unwrap();
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import email, email.policy, sys\n\
             m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)\n\
             for v in m.get_all('Authentication-Results', []): print('AR', v)\n\
             for v in m.get_all('X-Unspoof-Verdict', []): print('V', v)\n",
        )
        .arg(&file)
        .output()
        .await
        .expect("python3");
    let seen = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    let ar: Vec<&str> = seen.lines().filter(|l| l.starts_with("AR ")).collect();
    assert_eq!(ar.len(), 2, "{seen}");
    assert!(
        ar[0].starts_with(&format!("AR {HOSTNAME};")),
        "ours on top: {seen}"
    );
    assert!(ar[1].contains("keep1.test"), "{seen}");
    // Ours (the forgery is a finding, so the message is tagged) and no other.
    let v: Vec<&str> = seen.lines().filter(|l| l.starts_with("V ")).collect();
    assert!(v.len() <= 1 && !seen.contains("f10.test"), "{seen}");
}

#[tokio::test]
async fn macros_fill_in_what_the_commands_do_not_say() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let raw = good_message(&world, "via macros", true);
    // CONNECT with an unknown family: the client address comes from {client_addr}.
    let mut t = Transaction::new(SENDER_IP, "alice@good.test", &raw);
    t.connect_family = b'U';
    let o = m.message(&t).await;
    let ar = o.added_value("Authentication-Results").unwrap();
    assert!(ar.contains("smtp.remote-ip=192.0.2.10"), "{ar}");
    assert!(ar.contains("spf=pass"), "{ar}");
}

#[tokio::test]
async fn authenticated_submissions_are_not_judged_unless_asked() {
    let world = World::new();
    let raw = plain_message("The CEO <ceo@bank.test>", "from the hotel");
    let mut t = Transaction::new(STRANGER, "ceo@bank.test", &raw);
    t.auth_user = Some("ceo");

    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let o = m.message(&t).await;
    assert_eq!(o.code, b'a', "{o:?}");
    assert_eq!(
        o.added_value("Authentication-Results").as_deref(),
        Some(&*format!(" {HOSTNAME}; auth=pass smtp.auth=ceo"))
    );

    // Not judged, but forged results are removed all the same.
    let mut forged = format!(
        "Authentication-Results: (x) {HOSTNAME}; dmarc=pass\r\nX-Unspoof-Verdict: accept\r\n"
    )
    .into_bytes();
    forged.extend_from_slice(&raw);
    let mut tf = Transaction::new(STRANGER, "ceo@bank.test", &forged);
    tf.auth_user = Some("ceo");
    let o = m.message(&tf).await;
    assert_eq!(o.code, b'a', "{o:?}");
    let delivered = String::from_utf8(apply(&forged, &o, true)).unwrap();
    assert!(!delivered.contains("(x)"), "{delivered}");
    assert!(!delivered.contains("X-Unspoof-Verdict"), "{delivered}");

    let h = start_with(&world, |c| c.skip_authenticated = false).await;
    let mut m = postfix_like(tcp(&h).await).await;
    assert_eq!(m.message(&t).await.code, b'y');
}

#[tokio::test]
async fn one_connection_many_messages_and_sessions() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let good = good_message(&world, "first", true);
    let spoof = plain_message("ceo@bank.test", "second");
    let t = Transaction::new(SENDER_IP, "alice@good.test", &good);
    assert!(m.connect(&t).await.is_none());
    assert_eq!(m.transaction(&t).await.code, b'a');
    assert_eq!(
        m.transaction(&Transaction::new(SENDER_IP, "ceo@bank.test", &spoof))
            .await
            .code,
        b'y'
    );
    // An aborted transaction leaves nothing behind: a second From would make the next message
    // ambiguous.
    m.send(b'M', b"<x@bank.test>\0").await;
    m.send(b'L', b"From\0 ceo@bank.test\0").await;
    m.send(b'A', b"").await;
    assert_eq!(m.transaction(&t).await.code, b'a');
    // QUIT_NC: a new SMTP session on the same connection.
    m.send(b'K', b"").await;
    let o = m
        .message(&Transaction::new(
            STRANGER,
            "news@tagme.test",
            &plain_message("news@tagme.test", "x"),
        ))
        .await;
    assert_eq!(o.code, b'a');
    assert!(o.added_value("X-Unspoof-Verdict").unwrap().contains("tag"));
    m.quit().await;
    let s = h.stats();
    assert_eq!(
        (s.messages, s.accepted, s.rejected, s.tagged),
        (4, 2, 1, 1),
        "{s:?}"
    );
}

/// A DNS outage is the policy's `dns_temperror` (the engine decides, as for every door), not
/// the milter's `on_error`: deferred with the engine's 451 by default, whatever `on_error` says.
#[tokio::test]
async fn dns_outage_follows_the_policy_not_on_error() {
    let world = World::new();
    let raw = plain_message("x@slow.test", "slow dns");
    let t = Transaction::new(STRANGER, "x@slow.test", &raw);

    for on_error in [OnError::Tempfail, OnError::Accept] {
        let h = start_with(&world, |c| c.on_error = on_error).await;
        let mut m = postfix_like(tcp(&h).await).await;
        let o = m.message(&t).await;
        assert_eq!(o.code, b'y', "{o:?}");
        assert!(o.reply.starts_with("451 4.4.3 "), "{}", o.reply);
        assert_eq!((h.stats().deferred, h.stats().accepted), (1, 0));
    }

    // dns_temperror = "decide": delivered on what did answer, our AR says temperror.
    let engine = world.engine(Duration::from_secs(2)).await;
    let mut policy = (*engine.policy()).clone();
    policy.dns_temperror = unspoof_engine::decision::DnsTempError::Decide;
    engine.set_policy(policy);
    let config = MilterConfig {
        listen: vec!["inet:127.0.0.1:0".parse().unwrap()],
        log_verdicts: false,
        ..MilterConfig::default()
    };
    let h = Milter::new(config, engine).start().await.unwrap();
    let mut m = postfix_like(tcp(&h).await).await;
    let o = m.message(&t).await;
    assert_eq!(o.code, b'a', "{o:?}");
    let ar = o.added_value("Authentication-Results").unwrap();
    assert!(ar.contains("temperror"), "{ar}");
}

#[tokio::test]
async fn a_slow_engine_sends_progress_then_the_default() {
    let world = World::new();
    let mut config = MilterConfig {
        listen: vec!["inet:127.0.0.1:0".parse().unwrap()],
        log_verdicts: false,
        ..MilterConfig::default()
    };
    config.limits.eval_timeout = 3;
    config.limits.progress_interval = 1;
    // DNS slower than the engine's budget.
    let h = Milter::new(config, world.engine(Duration::from_secs(10)).await)
        .start()
        .await
        .unwrap();
    let mut m = postfix_like(tcp(&h).await).await;
    let raw = plain_message("x@slow.test", "slow");
    let started = std::time::Instant::now();
    let o = m
        .message(&Transaction::new(STRANGER, "x@slow.test", &raw))
        .await;
    assert_eq!(o.code, b't', "{o:?}");
    assert!(o.progress >= 2, "{o:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(h.stats().errors, 1);
}

#[tokio::test]
async fn an_oversized_message_gets_the_default() {
    let world = World::new();
    let h = start_with(&world, |c| {
        c.limits.max_message_size = 1000;
        c.on_error = OnError::Tempfail;
    })
    .await;
    let mut m = postfix_like(tcp(&h).await).await;
    let mut raw = good_message(&world, "big", true);
    raw.extend_from_slice(&[b'x'; 4000]);
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    assert_eq!(o.code, b't');
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let world = World::new();
    let h = start_with(&world, |c| c.limits.max_connections = 1).await;
    let first = postfix_like(tcp(&h).await).await;
    let mut second = tcp(&h).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = second
        .write_all(b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff")
        .await;
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut b))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed: {n:?}");
    assert_eq!(h.stats().refused_connections, 1);
    first.quit().await;
    // The slot comes back.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut third = tcp(&h).await;
        let _ = third
            .write_all(b"\0\0\0\x0dO\0\0\0\x06\0\0\x01\xff\0\x1f\xff\xff")
            .await;
        let got = tokio::time::timeout(Duration::from_secs(2), third.read(&mut b)).await;
        if matches!(got, Ok(Ok(1))) {
            ok = true;
            break;
        }
    }
    assert!(ok, "a slot is free again after the first connection quit");
}

#[tokio::test]
async fn shutdown_finishes_messages_in_flight_and_closes_idle_connections() {
    let world = World::new();
    let h = start(&world).await;
    let raw = good_message(&world, "in flight", true);
    let t = Transaction::new(SENDER_IP, "alice@good.test", &raw);

    let mut idle = postfix_like(tcp(&h).await).await;
    assert!(idle.connect(&t).await.is_none());
    let mut busy = postfix_like(tcp(&h).await).await;
    assert!(busy.connect(&t).await.is_none());
    busy.send(b'M', b"<alice@good.test>\0").await;
    // Let the milter read MAIL before the shutdown starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let addr = h.tcp_addr().unwrap();
    let stopping = tokio::spawn(h.shutdown());
    assert!(idle.recv().await.is_none(), "idle connection closed");
    // The transaction in flight still gets its verdict.
    let o = busy.transaction(&t).await;
    assert_eq!(o.code, b'a', "{o:?}");
    assert!(busy.recv().await.is_none(), "closed after its message");
    assert!(stopping.await.unwrap(), "drained in time");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn abort_drops_everything_like_a_crash() {
    let world = World::new();
    let h = start(&world).await;
    let mut m = postfix_like(tcp(&h).await).await;
    let addr = h.tcp_addr().unwrap();
    h.abort().await;
    assert!(m.recv().await.is_none());
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn unix_socket_listener() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let world = World::new();
    let dir = TempDir::new("unix");
    let path = dir.path().join("milter.sock");
    let spec = format!("unix:{}", path.display());
    let h = start_with(&world, |c| {
        c.listen = vec![spec.parse().unwrap()];
        c.unix_mode = "0600".into();
    })
    .await;
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut m = postfix_like(UnixStream::connect(&path).await.unwrap()).await;
    let raw = good_message(&world, "over unix", true);
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    assert_eq!(o.code, b'a');
    m.quit().await;
    assert!(h.shutdown().await);
    assert!(!path.exists(), "socket removed at shutdown");

    // A stale socket is replaced; any other file is left alone and is an error.
    let h = start_with(&world, |c| c.listen = vec![spec.parse().unwrap()]).await;
    drop(h);
    std::fs::write(&path, b"not a socket").unwrap();
    let mut config = MilterConfig {
        listen: vec![spec.parse().unwrap()],
        ..MilterConfig::default()
    };
    config.log_verdicts = false;
    let err = Milter::new(config, world.engine(Duration::from_secs(1)).await)
        .start()
        .await;
    assert!(err.is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

/// What the message log received: (queue id, outcome, reasons, had an analysis, first contact).
type Logged = (Option<String>, String, Vec<String>, bool, Option<bool>);

#[derive(Default)]
struct MemLog(Mutex<Vec<Logged>>);

impl MessageLog for MemLog {
    fn record(&self, d: &Decided<'_>) {
        self.0.lock().unwrap().push((
            d.queue_id.map(str::to_string),
            d.outcome.to_string(),
            d.reasons.clone(),
            d.analysis.is_some(),
            d.envelope.first_contact,
        ));
    }
}

/// A contact history that knows only the pairs given, and remembers what it was asked.
#[derive(Default)]
struct Contacts {
    known: Vec<(String, String)>,
    asked: Mutex<Vec<(String, String)>>,
}

impl ContactHistory for Contacts {
    fn has_seen<'a>(
        &'a self,
        domain: &'a str,
        rcpt: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send + 'a>> {
        self.asked
            .lock()
            .unwrap()
            .push((domain.to_string(), rcpt.to_string()));
        let known = self.known.iter().any(|(d, r)| d == domain && r == rcpt);
        Box::pin(async move { Some(known) })
    }
}

#[tokio::test]
async fn every_message_is_recorded_and_first_contact_comes_from_the_history() {
    let world = World::new();
    let log = Arc::new(MemLog::default());
    let contacts = Arc::new(Contacts {
        known: vec![("good.test".into(), "bob@example.net".into())],
        ..Default::default()
    });
    let config = MilterConfig {
        listen: vec!["inet:127.0.0.1:0".parse().unwrap()],
        log_verdicts: false,
        ..MilterConfig::default()
    };
    let h = Milter::new(config, world.engine(Duration::from_secs(2)).await)
        .with_message_log(log.clone())
        .with_contact_history(contacts.clone())
        .start()
        .await
        .unwrap();
    let mut m = postfix_like(tcp(&h).await).await;

    // A known correspondent: accepted, no contact reason.
    let good = good_message(&world, "quarterly figures", false);
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &good))
        .await;
    assert_eq!(o.code, b'a', "{o:?}");
    // A stranger (shady.test has never written to bob): quarantined, and a first contact.
    let shady = plain_message("Billing <billing@shady.test>", "your account");
    let o = m
        .message(&Transaction::new(STRANGER, "billing@shady.test", &shady))
        .await;
    assert!(o.quarantine().is_some(), "{o:?}");
    // An authenticated submission is not judged, nor asked about, but still on record.
    let own = plain_message("The CEO <ceo@bank.test>", "from the hotel");
    let mut t = Transaction::new(STRANGER, "ceo@bank.test", &own);
    t.auth_user = Some("ceo");
    assert_eq!(m.message(&t).await.code, b'a');

    let got = log.0.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:#?}");
    let qid = Some("4ABCDEF".to_string());
    assert_eq!((&got[0].0, got[0].1.as_str()), (&qid, "accept"));
    assert!(got[0].3, "the analysis goes with the record");
    assert_eq!(got[0].4, Some(false));
    assert!(
        !got[0].2.iter().any(|c| c.starts_with("contact.")),
        "{got:#?}"
    );
    assert_eq!(got[1].1, "quarantine");
    assert_eq!(got[1].4, Some(true));
    assert!(got[1].2.iter().any(|c| c == "dmarc.quarantine"), "{got:#?}");
    assert!(got[1].2.iter().any(|c| c == "contact.first"), "{got:#?}");
    assert_eq!((got[2].1.as_str(), got[2].3), ("skipped", false));
    // For each judged message: first contact of its From domain with each recipient, then
    // whether its From address has written to the site before (the correspondent memory).
    let any = unspoof_engine::contact::ANY_RECIPIENT;
    assert_eq!(
        *contacts.asked.lock().unwrap(),
        vec![
            ("good.test".to_string(), "bob@example.net".to_string()),
            ("alice@good.test".to_string(), any.to_string()),
            ("shady.test".to_string(), "bob@example.net".to_string()),
            ("billing@shady.test".to_string(), any.to_string()),
        ]
    );
}
