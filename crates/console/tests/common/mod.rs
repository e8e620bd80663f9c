//! The console's test world: a store (SQLite in a temporary directory, or the PostgreSQL of
//! `UNSPOOF_TEST_PG` when a test asks for it) with accounts and messages that went through the
//! real engine (DNS from a zone served on loopback), quarantined the way the gateway does it.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use unspoof_console::{Console, ConsoleConfig};
use unspoof_engine::dns::{Dns, Zone};
use unspoof_engine::{Engine, Envelope, Policy};
use unspoof_store::console::ConsoleAccount;
use unspoof_store::{MessageRecord, NewQuarantine, Store, StoreConfig, new_id, now};
use unspoof_testkit::{pg_server, psql};

pub const PASSWORD: &str = "correct horse battery";

/// A subject written to run script wherever it is pasted as HTML.
pub const HOSTILE_SUBJECT: &str = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\"> Your account";

/// An HTML body that would run script, load a remote image and restyle the page if rendered.
pub const HOSTILE_HTML: &str = "<html><body><script>document.title='pwned'</script>\
<img src=\"http://127.0.0.1:9/track.png\" onerror=\"document.title='pwned'\">\
<p onmouseover=\"document.title='pwned'\">Please verify your account at <a href=\"http://bank.test.evil/\">our site</a>.</p>\
<style>body{display:none}</style></body></html>";

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unspoof-console-{name}-{}", new_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An argon2id hash with tiny parameters: the check is the same, only cheaper.
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"unspoof-console-test").unwrap();
    a2.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// One seeded message: its record id and, when held, its quarantine id.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub record: String,
    pub quarantine: Option<String>,
    pub subject: String,
    pub raw: Vec<u8>,
    pub action: String,
}

pub struct World {
    pub dir: PathBuf,
    pub store: Store,
    pub engine: Engine,
    /// To ann@site.test: hostile subject and HTML body, DMARC p=quarantine fails → held.
    pub ann_spoof: Seeded,
    /// To bob@site.test, held.
    pub bob_spoof: Seeded,
    /// To carol@other.test, held: outside the domain administrator's domain.
    pub carol_spoof: Seeded,
    /// To ann@site.test, from a domain without DMARC: accepted.
    pub ann_plain: Seeded,
}

const ZONE: &str = "\
bank.test. 3600 IN TXT \"v=spf1 ip4:198.51.100.0/24 -all\"
_dmarc.bank.test. 3600 IN TXT \"v=DMARC1; p=quarantine\"
news.test. 3600 IN TXT \"v=spf1 ip4:192.0.2.0/24 ~all\"
";

pub fn store_config(dir: &std::path::Path, url: &str) -> StoreConfig {
    let mut c = StoreConfig::new(url, dir);
    c.retention_days = None;
    c.node = "mx-test".into();
    c
}

pub async fn world(name: &str) -> World {
    world_on(name, "").await
}

/// The world on the database `url` ("" for SQLite in the temporary directory).
pub async fn world_on(name: &str, url: &str) -> World {
    let dir = temp_dir(name);
    let store = Store::open(store_config(&dir, url)).await.unwrap();
    for (n, role, scope) in [
        ("admin", "administrator", vec![]),
        (
            "dana",
            "domain_administrator",
            vec!["site.test".to_string()],
        ),
        ("ann", "recipient", vec!["ann@site.test".to_string()]),
        ("bob", "recipient", vec!["bob@site.test".to_string()]),
    ] {
        store
            .console_account_put(&ConsoleAccount {
                name: n.into(),
                password_hash: cheap_hash(PASSWORD),
                role: role.into(),
                scope,
                created_at: now(),
                disabled: false,
            })
            .await
            .unwrap();
    }
    let mut zone = Zone::new();
    zone.load_text(ZONE, None).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let engine = Engine::new(Policy::default(), dns);
    let mut w = World {
        dir,
        store,
        engine,
        ann_spoof: placeholder(),
        bob_spoof: placeholder(),
        carol_spoof: placeholder(),
        ann_plain: placeholder(),
    };
    w.ann_spoof = w
        .deliver(
            "security@bank.test",
            "ann@site.test",
            HOSTILE_SUBJECT,
            Some(HOSTILE_HTML),
        )
        .await;
    w.bob_spoof = w
        .deliver(
            "security@bank.test",
            "bob@site.test",
            "Invoice for Bob",
            None,
        )
        .await;
    w.carol_spoof = w
        .deliver(
            "security@bank.test",
            "carol@other.test",
            "Carol's statement",
            None,
        )
        .await;
    w.ann_plain = w
        .deliver("letters@news.test", "ann@site.test", "Weekly news", None)
        .await;
    w.store.flush().await;
    assert_eq!(
        w.ann_spoof.action, "quarantine",
        "the zone's DMARC policy holds it"
    );
    assert_eq!(w.ann_plain.action, "accept");
    w
}

fn placeholder() -> Seeded {
    Seeded {
        record: String::new(),
        quarantine: None,
        subject: String::new(),
        raw: Vec::new(),
        action: String::new(),
    }
}

impl World {
    /// Evaluates a message from 192.0.2.7 with the engine and stores it as the gateway does:
    /// a record, and the message itself in the quarantine when the verdict holds it.
    pub async fn deliver(&self, from: &str, to: &str, subject: &str, html: Option<&str>) -> Seeded {
        let mid = format!("{}@mail.example", new_id());
        let body = match html {
            Some(h) => format!(
                "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{h}\r\n"
            ),
            None => {
                "Content-Type: text/plain\r\n\r\nHello,\r\nplease see the attached.\r\n".to_string()
            }
        };
        let raw = format!(
            "Received: from mail.example (mail.example [192.0.2.7]) by mx.site.test with ESMTPS id Q{q}; Mon, 7 Dec 2026 06:00:00 +0000\r\n\
             From: Sender <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\nDate: Mon, 7 Dec 2026 05:59:58 +0000\r\n{body}",
            q = &mid[..8]
        )
        .into_bytes();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let envelope = Envelope {
            ip: Some(ip),
            helo: Some("mail.example".into()),
            mail_from: Some(from.into()),
            rcpt: vec![to.into()],
            received_at: Some(now()),
            ..Default::default()
        };
        let analysis = self.engine.evaluate(&raw, &envelope).await;
        let action = analysis.verdict.action.as_str().to_string();
        let record_id = new_id();
        let held = (action == "quarantine").then(new_id);
        let record = MessageRecord {
            id: record_id.clone(),
            received_at: now(),
            node: "mx-test".into(),
            listener: "inbound".into(),
            queue_id: Some(format!("Q{}", &mid[..8])),
            client_ip: Some(ip),
            helo: Some("mail.example".into()),
            mail_from: Some(from.into()),
            recipients: vec![to.into()],
            size: raw.len() as u64,
            stored_at: held.clone(),
            ..Default::default()
        }
        .with_analysis(&analysis);
        if let Some(qid) = &held {
            self.store
                .quarantine_put(NewQuarantine {
                    id: qid.clone(),
                    message_record: Some(record_id.clone()),
                    quarantined_at: now(),
                    node: "mx-test".into(),
                    queue_id: record.queue_id.clone(),
                    message_id: record.message_id.clone(),
                    mail_from: Some(from.into()),
                    recipients: vec![to.into()],
                    from: record.from.clone(),
                    subject: record.subject.clone(),
                    reasons: record.reasons.clone(),
                    raw: raw.clone(),
                })
                .await
                .unwrap();
        }
        self.store.log_message(record);
        Seeded {
            record: record_id,
            quarantine: held,
            subject: subject.into(),
            raw,
            action,
        }
    }

    pub fn console(&self, config: ConsoleConfig) -> Arc<Console> {
        Console::new(self.store.clone(), config)
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.join("maildir")
    }
}

/// A fresh PostgreSQL database on `UNSPOOF_TEST_PG` (default
/// `postgres://postgres@127.0.0.1:5432`, started by scripts/deps-store.sh); returns its URL.
/// [`drop_pg`] removes it.
pub fn fresh_pg(tag: &str) -> String {
    let server = pg_server();
    let name = format!("unspoof_console_{tag}_{}", std::process::id());
    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    psql(&server, &format!("CREATE DATABASE {name}"));
    format!("{server}/{name}")
}

pub fn drop_pg(url: &str) {
    let (server, name) = url.rsplit_once('/').unwrap();
    psql(
        server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

/// One aggregate report for site.test from a receiver: a forger at 192.0.2.66 sent 12
/// messages as site.test, all failing DMARC.
pub fn dmarc_report(begin: i64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">
<report_metadata><org_name>receiver.example</org_name><email>r@receiver.example</email>
<report_id>console-1</report_id><date_range><begin>{begin}</begin><end>{end}</end></date_range>
</report_metadata>
<policy_published><domain>site.test</domain><p>reject</p></policy_published>
<record><row><source_ip>192.0.2.66</source_ip><count>12</count>
<policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
<identifiers><header_from>site.test</header_from></identifiers>
<auth_results><spf><domain>forger.example</domain><result>fail</result></spf></auth_results></record>
</feedback>
"#,
        end = begin + 86_399
    )
}

/// Stores [`dmarc_report`] for yesterday through the reports crate's ingestion.
pub async fn ingest_dmarc_report(store: &Store) {
    let mut ingest =
        unspoof_reports::Ingestor::new(store.clone(), unspoof_reports::DmarcConfig::default());
    let begin = (now() / 86_400 - 1) * 86_400;
    ingest
        .add("report.xml", dmarc_report(begin).as_bytes())
        .await
        .unwrap();
    let done = ingest.commit().await.unwrap();
    assert_eq!(done.len(), 1);
    assert!(!done[0].1.is_rejected(), "{:?}", done[0].1);
}
