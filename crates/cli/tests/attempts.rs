//! `unspoof serve` with its store, through real processes and real clients (Python's smtplib):
//!
//! - every attempt is on record: a spoof refused at MAIL FROM (our own domain from outside),
//!   a relay refused at RCPT TO and a malformed recipient are each a `refused` record that
//!   `unspoof log search` finds by action, client and sender, and `unspoof log show` shows;
//!   they are counted in the metrics; past `max_refusal_records` a connection's refusals are
//!   only counted;
//! - records as durable as the message: several `kill -9` of the gateway while concurrent
//!   senders send, and every queue id a client heard 250 for is delivered (Maildir) or
//!   quarantined, and found by `unspoof log show` after the restarts.

mod common;

use common::{spawn_serve, unspoof};
use unspoof_testkit::{free_port, ok_stdout, stop};

#[allow(dead_code)]
#[path = "../../store/tests/common/mod.rs"]
mod store_common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use store_common::TempDir;

/// `strict.example` quarantines what fails DMARC (mail from 127.0.0.1 fails its SPF);
/// `news.example` publishes nothing.
const ZONE: &str = r#"
$ORIGIN strict.example.
@        IN TXT "v=spf1 ip4:192.0.2.10 -all"
_dmarc   IN TXT "v=DMARC1; p=quarantine"
"#;

const OURS: &str = "shopping.example.net";

/// One `unspoof serve` on a data directory (kept across restarts) and fixed ports.
struct Gateway {
    child: Child,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Gateway {
    /// Writes the configuration (SQLite store in the data directory, local Maildir delivery)
    /// and starts the gateway on `port`.
    fn start(dir: &Path, port: u16, metrics: u16, limits: &str) -> Gateway {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("z.zone"), ZONE).unwrap();
        std::fs::write(
            dir.join("unspoof.toml"),
            format!(
                r#"hostname = "mx.{OURS}"
protected_domains = ["{OURS}"]

[gateway]
data_dir = "{data}"
listen = "127.0.0.1:{port}"
submission = ""
metrics = "127.0.0.1:{metrics}"
domains = ["{OURS}"]
reverse_dns = false

[gateway.limits]
{limits}

[store]
node = "mx1"
flush_interval_ms = 50
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
        Gateway {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn kill_9(&mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }

    fn store_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("data/unspoof.db").display())
    }
}

fn log_cmd(gw: &Gateway, args: &[&str]) -> String {
    let url = gw.store_url();
    let cli = gw.dir.join("cli");
    let mut all = vec!["log"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--store", &url, "--data-dir", cli.to_str().unwrap()]);
    ok_stdout(&unspoof(&all))
}

/// `unspoof log search --json` with these filters.
fn search(gw: &Gateway, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["search", "--since", "1d", "--limit", "100000", "--json"];
    args.extend_from_slice(filters);
    log_cmd(gw, &args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls a search until it returns `want` records (the writer flushes every 50 ms).
fn search_until(gw: &Gateway, filters: &[&str], want: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let found = search(gw, filters);
        if found.len() >= want || started.elapsed() > Duration::from_secs(30) {
            assert_eq!(found.len(), want, "{filters:?}: {found:#?}");
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics(port: u16) -> String {
    let script = "import sys, urllib.request; \
        print(urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/metrics', timeout=5).read().decode())";
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .unwrap();
    ok_stdout(&out)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn every_refused_attempt_is_a_searchable_record_and_counted() {
    let dir = TempDir::new("cli-attempts");
    let (port, metrics_port) = (free_port(), free_port());
    let gw = Gateway::start(dir.path(), port, metrics_port, "max_refusal_records = 4");

    // One connection: a spoof of our own domain, a relay attempt, a malformed recipient, and
    // three more spoofs, the last two past the connection's `max_refusal_records`.
    let script = r#"
import json, smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="spoofer.example", timeout=30)
s.ehlo()
codes = [s.docmd("MAIL", "FROM:<ceo@shopping.example.net>")[0],
         s.docmd("MAIL", "FROM:<news@news.example>")[0],
         s.docmd("RCPT", "TO:<victim@elsewhere.example>")[0],
         s.docmd("RCPT", "TO:<no-domain-here>")[0],
         s.docmd("RSET")[0]]
for _ in range(3):
    codes.append(s.docmd("MAIL", "FROM:<billing@shopping.example.net>")[0])
s.quit()
print(json.dumps(codes))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .unwrap();
    let codes: Vec<u16> = serde_json::from_str(&ok_stdout(&out)).unwrap();
    assert_eq!(codes, [550, 250, 550, 553, 250, 550, 550, 550]);

    // On record: four refusals (the limit), searchable by action, client, sender, recipient.
    let refused = search_until(&gw, &["--action", "refused"], 4);
    let reasons: BTreeSet<String> = refused
        .iter()
        .map(|r| r["reasons"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from([
            "smtp.own_domain_sender".to_string(),
            "smtp.relay_denied".to_string(),
            "smtp.bad_recipient_syntax".to_string(),
        ])
    );
    for r in &refused {
        assert_eq!(r["client_ip"], "127.0.0.1");
        assert_eq!(r["helo"], "spoofer.example");
        assert!(r["queue_id"].is_null(), "{r}");
        assert!(r["reply"].as_str().unwrap().starts_with("55"), "{r}");
    }
    assert_eq!(
        search(&gw, &["--action", "refused", "--client", "127.0.0.0/8"]).len(),
        4
    );
    let spoofs = search(&gw, &["--mail-from", OURS, "--action", "refused"]);
    assert_eq!(spoofs.len(), 2, "{spoofs:#?}");
    let relay = search(&gw, &["--rcpt", "victim@elsewhere.example"]);
    assert_eq!(relay.len(), 1);
    assert_eq!(relay[0]["mail_from"], "news@news.example");
    assert_eq!(relay[0]["reasons"][0], "smtp.relay_denied");
    let shown = log_cmd(&gw, &["show", relay[0]["id"].as_str().unwrap()]);
    assert!(shown.contains("verdict     refused"), "{shown}");
    assert!(shown.contains("smtp.relay_denied"), "{shown}");
    assert!(shown.contains("550 5.7.1 Relaying denied"), "{shown}");

    // Counted, all six, and the two not recorded as such.
    let m = metrics(metrics_port);
    let count = |reason: &str| {
        metric(
            &m,
            &format!("unspoof_refusals_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(count("smtp.own_domain_sender"), 4);
    assert_eq!(count("smtp.relay_denied"), 1);
    assert_eq!(count("smtp.bad_recipient_syntax"), 1);
    assert_eq!(metric(&m, "unspoof_refusals_unrecorded_total"), 2);
    assert_eq!(
        metric(&m, "unspoof_sessions_total{outcome=\"quit\"}"),
        1,
        "{m}"
    );
}

/// The senders: `threads` smtplib clients, each sending one message after another over its
/// connection (reconnecting while the gateway is down), until `stop` exists. Every other
/// message comes from `strict.example` (quarantined), the rest from `news.example`
/// (delivered). Prints the queue ids of the messages answered 250, as a JSON list.
const SENDERS: &str = r#"
import json, os, re, smtplib, sys, threading, time
port, threads, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
acked, lock = [], threading.Lock()
def sender(n):
    i = 0
    while not os.path.exists(stop):
        try:
            s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10)
            s.ehlo()
        except (OSError, smtplib.SMTPException):
            time.sleep(0.02)
            continue
        try:
            while not os.path.exists(stop):
                i += 1
                dom = "strict.example" if i % 2 else "news.example"
                msg = ("From: <alerts@%s>\r\nTo: <ann@shopping.example.net>\r\n"
                       "Subject: t%d-%d\r\nMessage-ID: <t%d-%d-%f@%s>\r\n\r\nHello.\r\n"
                       % (dom, n, i, n, i, time.time(), dom))
                code, _ = s.mail("alerts@" + dom)
                if code != 250: raise smtplib.SMTPException(code)
                code, _ = s.rcpt("ann@shopping.example.net")
                if code != 250: raise smtplib.SMTPException(code)
                code, text = s.data(msg.encode())
                m = re.search(rb"queued as ([0-9A-F]+)", text)
                if code == 250 and m:
                    with lock: acked.append(m.group(1).decode())
                time.sleep(0.01)
        except (OSError, smtplib.SMTPException) as e:
            print(n, repr(e), file=sys.stderr)
        try: s.close()
        except Exception: pass
ts = [threading.Thread(target=sender, args=(n,)) for n in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(acked))
"#;

/// The queue ids of every quarantined message, whatever its status.
fn quarantined_queue_ids(gw: &Gateway) -> BTreeSet<String> {
    let url = gw.store_url();
    let cli = gw.dir.join("cli");
    let out = unspoof(&[
        "quarantine",
        "list",
        "--status",
        "all",
        "--limit",
        "100000",
        "--store",
        &url,
        "--data-dir",
        cli.to_str().unwrap(),
        "--json",
    ]);
    ok_stdout(&out)
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["queue_id"].as_str().map(str::to_string)
        })
        .collect()
}

#[test]
fn every_acknowledged_message_has_its_record_after_kill_9() {
    let dir = TempDir::new("cli-kill9");
    let (port, metrics_port) = (free_port(), free_port());
    let stop = dir.path().join("stop");
    let senders = Command::new("python3")
        .args(["-c", SENDERS, &port.to_string(), "6"])
        .arg(&stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut gw = Gateway::start(dir.path(), port, metrics_port, "");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        gw.kill_9();
        drop(gw);
        gw = Gateway::start(dir.path(), port, metrics_port, "");
    }
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(&stop, "").unwrap();
    let out = senders.wait_with_output().unwrap();
    let acked: Vec<String> = serde_json::from_str(&ok_stdout(&out)).unwrap();
    assert!(
        acked.len() >= 40,
        "too few messages sent: {}; {}; {}",
        acked.len(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
    );

    // Delivered (the Maildir file name carries the queue id) or quarantined. A quarantined
    // message reaches the database with the batch writer's next batch, or the restarted
    // gateway's replay of its journal, moments later: polled.
    let started = Instant::now();
    let (in_maildir, in_quarantine, lost) = loop {
        let delivered: Vec<String> = std::fs::read_dir(dir.path().join("data/maildir/new"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let quarantined = quarantined_queue_ids(&gw);
        let (mut in_maildir, mut in_quarantine, mut lost) = (0, 0, Vec::new());
        for q in &acked {
            if delivered.iter().any(|f| f.contains(&format!(".{q}P"))) {
                in_maildir += 1;
            } else if quarantined.contains(q) {
                in_quarantine += 1;
            } else {
                lost.push(q.clone());
            }
        }
        if lost.is_empty() || started.elapsed() > Duration::from_secs(20) {
            break (in_maildir, in_quarantine, lost);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        lost.is_empty(),
        "acknowledged, but neither delivered nor quarantined: {lost:?}; spool: {:?}",
        std::fs::read_dir(dir.path().join("data/spool"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    assert!(
        in_maildir > 0 && in_quarantine > 0,
        "{in_maildir} delivered, {in_quarantine} quarantined"
    );

    // On record: every one, found by `unspoof log show <queue id>` (four at a time).
    let missing: Vec<String> = std::thread::scope(|s| {
        let gw = &gw;
        let handles: Vec<_> = acked
            .chunks(acked.len().div_ceil(4))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter(|q| {
                            let url = gw.store_url();
                            let cli = gw.dir.join("cli");
                            let out = unspoof(&[
                                "log",
                                "show",
                                q,
                                "--store",
                                &url,
                                "--data-dir",
                                cli.to_str().unwrap(),
                            ]);
                            let text = String::from_utf8_lossy(&out.stdout);
                            !(out.status.success() && text.contains(&format!("queue id    {q}")))
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages have no record: {missing:?}",
        missing.len(),
        acked.len()
    );
    // A quarantined message keeps the whole analysis (the reasons' texts); a delivered one,
    // plainly accepted, its summary.
    let shown: Vec<String> = acked[..8]
        .iter()
        .map(|q| log_cmd(&gw, &["show", q]))
        .collect();
    let with = |verdict: &str| {
        shown
            .iter()
            .find(|s| s.contains(&format!("verdict     {verdict}")))
            .cloned()
            .unwrap_or_else(|| panic!("no {verdict} among {shown:#?}"))
    };
    let (quarantined, delivered) = (with("quarantine"), with("accept"));
    assert!(
        quarantined.contains("reason    dmarc.quarantine (quarantine): DMARC failed"),
        "{quarantined}"
    );
    assert!(delivered.contains("verdict     accept"), "{delivered}");
    assert!(delivered.contains("auth        spf=none"), "{delivered}");
    assert!(!delivered.contains("): "), "no reason texts: {delivered}");

    // And each session of those messages too.
    let records = search(&gw, &[]);
    for r in records
        .iter()
        .filter(|r| r["queue_id"].is_string())
        .take(50)
    {
        let shown = log_cmd(&gw, &["show", r["id"].as_str().unwrap(), "--json"]);
        let v: Value = serde_json::from_str(&shown).unwrap();
        assert!(v["session"].is_object(), "no session record: {shown}");
    }
}
