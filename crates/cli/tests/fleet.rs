//! `unspoof serve` with the store (issue 6), through real processes and Python's smtplib:
//!
//! - two gateways sharing one PostgreSQL: every message sent to either is found by one
//!   `unspoof log search`; a quarantined message survives `kill -9` of its gateway right after
//!   the 250 and is released afterwards;
//! - PostgreSQL stopped while mail flows (a private server, so the shared one is never
//!   touched): every message still gets its 250, and every record is in the database exactly
//!   once after it is back;
//! - first contact: the second message from a sender domain to a recipient is no longer a
//!   first contact, and a stranger impersonating a protected person is refused.
//!
//! PostgreSQL: `UNSPOOF_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`, started by
//! `scripts/deps-store.sh`); the private server needs its `initdb` and `pg_ctl`.

mod common;

use common::{spawn_serve, unspoof};
use unspoof_testkit::{free_port, ok_stdout, stop};

#[allow(dead_code)]
#[path = "../../store/tests/common/mod.rs"]
mod store_common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use store_common::{Kind, PrivatePg, TempDir, TestDb, psql};

/// DNS for the test domains: a sender domain whose DMARC policy quarantines what fails, and
/// ordinary senders without any record.
const ZONE: &str = r#"
$ORIGIN strict.example.
@        IN TXT "v=spf1 ip4:192.0.2.10 -all"
_dmarc   IN TXT "v=DMARC1; p=quarantine"
"#;

/// One `unspoof serve` process with its own data directory and ports.
struct Gateway {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Gateway {
    fn start(dir: &Path, node: &str, store_url: &str, extra_policy: &str) -> Gateway {
        let dir = dir.join(node);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(dir.join("z.zone"), ZONE).unwrap();
        std::fs::write(
            dir.join("unspoof.toml"),
            format!(
                r#"hostname = "{node}.shopping.example.net"
protected_domains = ["shopping.example.net"]
{extra_policy}

[gateway]
data_dir = "{data}"
listen = "127.0.0.1:{port}"
submission = ""
metrics = ""
domains = ["shopping.example.net"]
reverse_dns = false

[store]
url = "{store_url}"
node = "{node}"
flush_interval_ms = 50
retry_interval_ms = 200
db_timeout_ms = 1000
"#,
                data = dir.join("data").display()
            ),
        )
        .unwrap();
        let child = spawn_serve(
            &dir.join("unspoof.toml"),
            &dir.join("z.zone"),
            &dir.join("serve.log"),
            port,
        );
        Gateway { child, port, dir }
    }

    /// Sends each message over one SMTP connection with Python's smtplib; returns the final
    /// reply code of each (250 = accepted, anything else as the gateway said it).
    fn send(&self, messages: &[Msg]) -> Vec<u16> {
        let spec: Vec<Value> = messages
            .iter()
            .map(|m| serde_json::json!({"from": m.mail_from, "to": m.rcpt, "data": m.text()}))
            .collect();
        let script = r#"
import json, smtplib, sys
msgs = json.load(sys.stdin)
codes = []
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.example", timeout=30)
for m in msgs:
    try:
        s.sendmail(m["from"], [m["to"]], m["data"].encode())
        codes.append(250)
    except smtplib.SMTPDataError as e:
        codes.append(e.smtp_code)
    except smtplib.SMTPRecipientsRefused as e:
        codes.append(list(e.recipients.values())[0][0])
        s.rset()
s.quit()
print(json.dumps(codes))
"#;
        let mut child = Command::new("python3")
            .args(["-c", script, &self.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        serde_json::to_writer(child.stdin.take().unwrap(), &spec).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "smtplib: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

/// A test message; `id` makes its Message-ID unique within the run.
struct Msg {
    id: String,
    mail_from: String,
    from: String,
    rcpt: String,
    subject: String,
}

impl Msg {
    fn new(id: &str, from: &str, rcpt: &str) -> Msg {
        let mail_from = from
            .rsplit_once('<')
            .map(|(_, a)| a.trim_end_matches('>').to_string())
            .unwrap_or_else(|| from.to_string());
        Msg {
            id: format!("{id}.{}@fleet.test", std::process::id()),
            mail_from,
            from: from.into(),
            rcpt: rcpt.into(),
            subject: format!("message {id}"),
        }
    }

    fn text(&self) -> String {
        format!(
            "From: {}\r\nTo: <{}>\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{}>\r\n\r\nHello.\r\n",
            self.from,
            self.rcpt,
            self.subject,
            rfc5322_now(),
            self.id
        )
    }
}

fn rfc5322_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%a, %d %b %Y %H:%M:%S +0000"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The data directory of the `unspoof log` and `unspoof quarantine` commands (their spool).
fn cli_dir() -> PathBuf {
    std::env::temp_dir().join(format!("unspoof-cli-fleet-{}", std::process::id()))
}

/// Every message record in the store, through `unspoof log search --json`.
fn search(url: &str) -> Vec<Value> {
    let out = unspoof(&[
        "log",
        "search",
        "--store",
        url,
        "--data-dir",
        cli_dir().to_str().unwrap(),
        "--since",
        "1d",
        "--limit",
        "10000",
        "--json",
    ]);
    ok_stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `search` until `want` records are there (the writers flush every 50 ms, and a
/// spooled backlog is replayed within a few retry intervals), then returns them.
fn search_until(url: &str, want: usize, why: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let found = search(url);
        if found.len() >= want || started.elapsed() > Duration::from_secs(60) {
            assert_eq!(found.len(), want, "{why}: {found:#?}");
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn message_ids(records: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .filter_map(|r| r["message_id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// Every quarantined message, whatever its status.
fn quarantine_list(url: &str) -> Vec<Value> {
    let out = unspoof(&[
        "quarantine",
        "list",
        "--status",
        "all",
        "--store",
        url,
        "--data-dir",
        cli_dir().to_str().unwrap(),
        "--json",
    ]);
    ok_stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const RCPT: &str = "suzie@shopping.example.net";

#[test]
fn two_gateways_one_postgres_and_a_quarantine_that_survives_kill_9() {
    let db = TestDb::new(Kind::Postgres);
    let dir = TempDir::new("cli-fleet");
    let a = Gateway::start(dir.path(), "gw-a", &db.url, "");
    let b = Gateway::start(dir.path(), "gw-b", &db.url, "");

    let to_a: Vec<Msg> = (0..6)
        .map(|i| Msg::new(&format!("a{i}"), "News <letters@news.example>", RCPT))
        .collect();
    let to_b: Vec<Msg> = (0..6)
        .map(|i| Msg::new(&format!("b{i}"), "Shop <orders@shop.example>", RCPT))
        .collect();
    assert_eq!(a.send(&to_a), vec![250; 6], "{}", a.log());
    assert_eq!(b.send(&to_b), vec![250; 6], "{}", b.log());

    // One search sees both gateways' records, each message once, with its node.
    let found = search_until(&db.url, 12, "records of both gateways");
    let mut want: Vec<String> = to_a.iter().chain(&to_b).map(|m| m.id.clone()).collect();
    want.sort();
    assert_eq!(message_ids(&found), want);
    for r in &found {
        let node = r["node"].as_str().unwrap();
        let letter = &r["message_id"].as_str().unwrap()[..1];
        assert_eq!(node, format!("gw-{letter}"), "{r}");
        assert_eq!(r["action"], "accept", "{r}");
        assert!(
            r["auth_summary"].as_str().unwrap().contains("dmarc="),
            "{r}"
        );
        assert!(r["session_id"].as_str().is_some(), "{r}");
    }

    // `log show` by Message-ID: the record (a plain accept keeps the analysis's summary, not
    // the whole analysis: `[store] full_analysis`), and the SMTP session it came in.
    let shown = unspoof(&[
        "log",
        "show",
        &to_b[0].id,
        "--store",
        &db.url,
        "--data-dir",
        cli_dir().to_str().unwrap(),
        "--json",
    ]);
    let shown: Value = serde_json::from_str(&ok_stdout(&shown)).unwrap();
    // Of the analysis only what the day's DMARC report counts (`summary`), no verdict texts
    // or trace.
    let kept = &shown["message"]["analysis"];
    assert_eq!(kept["summary"], true, "{shown:#}");
    assert!(kept["auth"]["dmarc"].is_object(), "{shown:#}");
    assert!(
        kept["trace"].is_null() && kept["verdict"].is_null(),
        "{shown:#}"
    );
    assert_eq!(shown["message"]["dns"]["view"], "zone files", "{shown:#}");
    assert!(
        shown["message"]["auth_summary"]
            .as_str()
            .unwrap()
            .contains("dmarc=")
    );
    let session = &shown["session"];
    assert_eq!(session["node"], "gw-b", "{shown:#}");
    assert_eq!(session["helo"], "client.example");
    assert_eq!(session["messages"], 6);
    assert_eq!(session["outcome"], "quit");

    // A message that fails DMARC at p=quarantine: 250 only once it is stored; then kill -9.
    let held = Msg::new("held", "Strict <billing@strict.example>", RCPT);
    let mut a = a;
    assert_eq!(
        a.send(std::slice::from_ref(&held)),
        vec![250],
        "{}",
        a.log()
    );
    a.child.kill().unwrap(); // SIGKILL, right after the 250
    a.child.wait().unwrap();
    drop(a);

    // Durable in gw-a's journal (in the database too if its batch writer got that far): the
    // gateway started again on its data directory replays the journal.
    let a = Gateway::start(dir.path(), "gw-a", &db.url, "");
    let started = Instant::now();
    let q = loop {
        let q = quarantine_list(&db.url);
        if !q.is_empty() || started.elapsed() > Duration::from_secs(20) {
            break q;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(q.len(), 1, "{q:#?} {}", a.log());
    assert_eq!(q[0]["status"], "held");
    assert_eq!(q[0]["node"], "gw-a");
    assert_eq!(q[0]["message_id"].as_str(), Some(held.id.as_str()));
    assert!(
        q[0]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "dmarc.quarantine"),
        "{q:#?}"
    );
    // And its record, made durable in the same journal write as the message: the 12
    // messages before it and this one, pointing at each other.
    let records = search_until(&db.url, 13, "the held message's record after kill -9");
    let record = records
        .iter()
        .find(|r| r["message_id"].as_str() == Some(held.id.as_str()))
        .unwrap_or_else(|| panic!("no record of the held message: {records:#?}"));
    assert_eq!(record["action"], "quarantine", "{record:#}");
    assert_eq!(record["node"], "gw-a", "{record:#}");
    assert_eq!(record["stored_at"], q[0]["id"], "{record:#} {q:#?}");
    assert_eq!(q[0]["message_record"], record["id"], "{record:#} {q:#?}");

    let maildir = dir.path().join("released");
    let id = q[0]["id"].as_str().unwrap();
    let out = unspoof(&[
        "quarantine",
        "release",
        id,
        "--store",
        &db.url,
        "--data-dir",
        cli_dir().to_str().unwrap(),
        "--maildir",
        maildir.to_str().unwrap(),
        "--by",
        "test",
    ]);
    ok_stdout(&out);
    let delivered: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(delivered.len(), 1);
    let text = std::fs::read_to_string(&delivered[0]).unwrap();
    assert!(text.contains(&held.id), "{text}");
    assert!(text.contains("X-Unspoof-Verdict: quarantine"), "{text}");
    assert!(
        text.contains("by gw-a.shopping.example.net (unspoof)"),
        "{text}"
    );
    assert_eq!(quarantine_list(&db.url)[0]["status"], "released");
    drop(a);
    drop(b);
}

#[test]
fn postgres_stopped_while_mail_flows() {
    let pg = PrivatePg::start();
    psql(&pg.url("").trim_end_matches('/'), "CREATE DATABASE fleet");
    let url = pg.url("fleet");
    let dir = TempDir::new("cli-pg-outage");
    let gw = Gateway::start(dir.path(), "gw-o", &url, "");

    let before: Vec<Msg> = (0..3)
        .map(|i| Msg::new(&format!("up{i}"), "News <letters@news.example>", RCPT))
        .collect();
    assert_eq!(gw.send(&before), vec![250; 3], "{}", gw.log());
    search_until(&url, 3, "records while PostgreSQL is up");

    pg.ctl_stop();
    let during: Vec<Msg> = (0..8)
        .map(|i| Msg::new(&format!("down{i}"), "News <letters@news.example>", RCPT))
        .collect();
    assert_eq!(gw.send(&during), vec![250; 8], "{}", gw.log());
    let held = Msg::new("down-held", "Strict <billing@strict.example>", RCPT);
    assert_eq!(
        gw.send(std::slice::from_ref(&held)),
        vec![250],
        "{}",
        gw.log()
    );
    // Mail was delivered while the database was away.
    let delivered = std::fs::read_dir(gw.dir.join("data/maildir/new"))
        .unwrap()
        .count();
    assert_eq!(delivered, 11);

    pg.ctl_start();
    let found = search_until(&url, 12, "every record once PostgreSQL is back");
    let mut want: Vec<String> = before
        .iter()
        .chain(&during)
        .chain(std::iter::once(&held))
        .map(|m| m.id.clone())
        .collect();
    want.sort();
    assert_eq!(message_ids(&found), want, "each record exactly once");
    let q = quarantine_list(&url);
    assert_eq!(q.len(), 1, "{q:#?}");
    assert_eq!(q[0]["message_id"].as_str(), Some(held.id.as_str()));
    assert_eq!(q[0]["status"], "held");
}

#[test]
fn first_contact_from_the_store() {
    let db = TestDb::new(Kind::Sqlite);
    let dir = TempDir::new("cli-first-contact");
    let people = r#"
[[protected_people]]
name = "Suzie Quartermaine"
addresses = ["suzie@shopping.example.net"]
"#;
    let gw = Gateway::start(dir.path(), "gw-c", &db.url, people);

    // A correspondent's first message is noted; once it was delivered, the next is not.
    let first = Msg::new("c1", "Partner <ann@partner.example>", RCPT);
    assert_eq!(gw.send(std::slice::from_ref(&first)), vec![250]);
    let found = search_until(&db.url, 1, "the first message");
    let reasons = found[0]["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r == "contact.first"), "{found:#?}");
    let second = Msg::new("c2", "Partner <ann@partner.example>", RCPT);
    assert_eq!(gw.send(std::slice::from_ref(&second)), vec![250]);
    let found = search_until(&db.url, 2, "the second message");
    let second_record = found
        .iter()
        .find(|r| r["message_id"].as_str() == Some(second.id.as_str()))
        .unwrap();
    let reasons = second_record["reasons"].as_array().unwrap();
    assert!(
        !reasons.iter().any(|r| r == "contact.first"),
        "{second_record:#}"
    );

    // A stranger borrowing a protected person's name: impersonation alone would quarantine;
    // with a first contact it is refused at the SMTP reply.
    let fake = Msg::new(
        "c3",
        "Suzie Quartermaine <suzie.q@freemail.example>",
        "bob@shopping.example.net",
    );
    assert_eq!(
        gw.send(std::slice::from_ref(&fake)),
        vec![550],
        "{}",
        gw.log()
    );
    let found = search_until(&db.url, 3, "the refused message");
    let refused = found
        .iter()
        .find(|r| r["message_id"].as_str() == Some(fake.id.as_str()))
        .unwrap();
    assert_eq!(refused["action"], "reject", "{refused:#}");
    let reasons = refused["reasons"].as_array().unwrap();
    assert!(
        reasons.iter().any(|r| r == "contact.first_impersonation"),
        "{refused:#}"
    );
}
