//! DMARC aggregate reports through real processes (issue 16):
//!
//! - a test run of `unspoof serve`: mail from a domain with a DMARC policy (some passing, some
//!   forged and refused), and a report mail to our own `rua` address, which the gateway stores;
//!   then `unspoof dmarc send` builds the day's report for that domain, DKIM-signed with a key
//!   from `unspoof dkim keygen`, and sends it through a relay (an SMTP sink here) to the rua
//!   addresses of the record (an external one only once verified). The report parses back with
//!   mail-auth's parser and with parsedmarc to the same counts, and the mail passes DMARC at a
//!   receiving `unspoof analyze --dns-zone` with the zone that publishes our key.
//! - fleet: two gateways on one PostgreSQL, two `unspoof dmarc send` at once: one report per
//!   domain and day (one claim row), covering the mail of both gateways.

mod common;

use common::{spawn_serve, unspoof};
use unspoof_testkit::{SmtpSink, free_port, ok_stdout, stop};

#[allow(dead_code)]
#[path = "../../store/tests/common/mod.rs"]
mod store_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use store_common::{Kind, TempDir, TestDb};

/// DNS seen by the gateways and by `dmarc send`: the sender domain with SPF for 127.0.0.1 and
/// a DMARC policy with three rua addresses: its own, an external one that agreed to receive
/// reports for it, and an external one that did not.
const ZONE: &str = r#"
$ORIGIN sender.test.
@        IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc   IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@sender.test,mailto:agg@collector.test,mailto:agg@stranger.test"
$ORIGIN collector.test.
sender.test._report._dmarc IN TXT "v=DMARC1"
"#;

/// One `unspoof serve` process.
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
    fn start(dir: &Path, node: &str, store_url: &str, key: &Path) -> Gateway {
        let dir = dir.join(node);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(dir.join("z.zone"), ZONE).unwrap();
        std::fs::write(
            dir.join("unspoof.toml"),
            format!(
                r#"hostname = "{node}.reporter.test"
protected_domains = ["site.test"]

[gateway]
data_dir = "{data}"
listen = "127.0.0.1:{port}"
submission = ""
metrics = ""
domains = ["site.test", "reporter.test"]
reverse_dns = false

[[gateway.dkim]]
domain = "reporter.test"
selector = "s1"
key = "{key}"

[store]
url = "{store_url}"
node = "{node}"
flush_interval_ms = 50

[dmarc]
rua = ["dmarc-reports@reporter.test"]
org_name = "reporter.test"
from = "dmarc-noreply@reporter.test"
"#,
                data = dir.join("data").display(),
                key = key.display(),
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

    /// Sends (MAIL FROM, RCPT, whole message) over one connection with Python's smtplib;
    /// returns each final reply code.
    fn send(&self, messages: &[(String, String, String)]) -> Vec<u16> {
        let spec: Vec<Value> = messages
            .iter()
            .map(|(f, t, d)| serde_json::json!({"from": f, "to": t, "data": d}))
            .collect();
        let script = r#"
import json, smtplib, sys
msgs = json.load(sys.stdin)
codes = []
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.sender.test", timeout=30)
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

    fn config(&self) -> PathBuf {
        self.dir.join("unspoof.toml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

fn mail(n: &str, from_header: &str, mail_from: &str) -> (String, String, String) {
    (
        mail_from.to_string(),
        "ann@site.test".to_string(),
        format!(
            "From: {from_header}\r\nTo: ann@site.test\r\nSubject: message {n}\r\n\
             Message-ID: <{n}.{}@sender.test>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nbody {n}\r\n",
            std::process::id()
        ),
    )
}

/// `unspoof dkim keygen` for reporter.test: the key file and the TXT record line.
fn keygen(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("s1.reporter.test.key");
    let out = ok_stdout(&unspoof(&[
        "dkim",
        "keygen",
        "--domain",
        "reporter.test",
        "--selector",
        "s1",
        "--out",
        key.to_str().unwrap(),
    ]));
    let record = out
        .lines()
        .find(|l| l.starts_with("s1._domainkey.reporter.test."))
        .expect("TXT record printed")
        .to_string();
    (key, record)
}

/// The gzip'd XML attachment of a report mail, via mail-parser's reading in mail-auth.
fn report_of(mail: &[u8]) -> mail_auth::report::Report {
    mail_auth::report::Report::parse_rfc5322(mail, 10 << 20).expect("mail-auth parses the report")
}

fn parsedmarc_python() -> Option<PathBuf> {
    let venv = std::env::var_os("UNSPOOF_PARSEDMARC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/parsedmarc-venv")
        });
    let py = venv.join("bin/python");
    py.exists().then_some(py)
}

/// parsedmarc's reading of a report mail: (report id, records, messages, dispositions).
fn parsedmarc(mail_path: &Path) -> Value {
    let py = parsedmarc_python().expect("parsedmarc is installed by scripts/deps-reports.sh");
    let out = Command::new(py)
        .args([
            "-c",
            r#"
import json, sys, parsedmarc
r = parsedmarc.parse_report_file(sys.argv[1], offline=True)
rep = r["report"]
print(json.dumps({
  "type": r["report_type"],
  "report_id": rep["report_metadata"]["report_id"],
  "org": rep["report_metadata"]["org_name"],
  "domain": rep["policy_published"]["domain"],
  "records": len(rep["records"]),
  "messages": sum(x["count"] for x in rep["records"]),
  "dispositions": sorted(x["policy_evaluated"]["disposition"] for x in rep["records"] for _ in range(x["count"])),
}))
"#,
        ])
        .arg(mail_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "parsedmarc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_gateway_run_gives_a_signed_report_that_mail_auth_parsedmarc_and_analyze_agree_on() {
    let tmp = TempDir::new("dmarc-e2e");
    let (key, dkim_record) = keygen(tmp.path());
    let gw = Gateway::start(tmp.path(), "mx1", "", &key);

    // Three messages that pass DMARC (SPF aligned for 127.0.0.1), two forged ones.
    let mut msgs = Vec::new();
    for n in 0..3 {
        msgs.push(mail(
            &format!("ok{n}"),
            "Bob <bob@sender.test>",
            "bob@sender.test",
        ));
    }
    for n in 0..2 {
        msgs.push(mail(
            &format!("forged{n}"),
            "CEO <ceo@sender.test>",
            "x@elsewhere.test",
        ));
    }
    // A report from a receiver to our own rua address: the gateway stores it.
    let sample = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/tests/data/report-mail.eml"),
    )
    .unwrap();
    let report_mail = (
        "reports@receiver.example".to_string(),
        "dmarc-reports@reporter.test".to_string(),
        String::from_utf8(sample).unwrap(),
    );
    msgs.push(report_mail);
    let codes = gw.send(&msgs);
    assert_eq!(&codes[..3], &[250, 250, 250], "{}", gw.log());
    assert!(
        codes[3] >= 500 && codes[4] >= 500,
        "forged mail refused: {codes:?}"
    );
    assert_eq!(codes[5], 250, "{}", gw.log());

    // The captured report reaches the store (the gateway's inbox task).
    let data = gw.dir.join("data");
    let started = Instant::now();
    loop {
        let status = ok_stdout(&unspoof(&[
            "dmarc",
            "status",
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
        ]));
        let v: Value = serde_json::from_str(&status).unwrap();
        if v["reports"] == 1 {
            assert_eq!(
                v["latest_reports"][0]["report_id"],
                "unspoof-test-capture-1"
            );
            assert!(
                v["latest_reports"][0]["source"]
                    .as_str()
                    .unwrap()
                    .starts_with("smtp:")
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "report not captured: {status}\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The picture of the captured report: one source forwarded (aligned DKIM, SPF for
    // nobody), one spoofing a subdomain that only forgers use.
    let picture = ok_stdout(&unspoof(&[
        "dmarc",
        "sources",
        "--data-dir",
        data.to_str().unwrap(),
        "--domain",
        "reporter.test",
        "--days",
        "36500",
        "--no-dns",
        "--json",
    ]));
    let p: Value = serde_json::from_str(&picture).unwrap();
    assert_eq!(p["totals"]["messages"], 6, "{p}");
    assert_eq!(p["totals"]["forwarded"], 4);
    assert_eq!(p["totals"]["spoofing"], 2);
    assert_eq!(p["sources"][0]["ip"], "192.0.2.25");
    assert_eq!(p["sources"][0]["class"], "forwarded");
    assert_eq!(p["sources"][1]["class"], "spoofing");
    let forged = p["subdomains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "billing.reporter.test")
        .unwrap();
    assert_eq!(forged["only_forged"], true);
    let human = ok_stdout(&unspoof(&[
        "dmarc",
        "sources",
        "--data-dir",
        data.to_str().unwrap(),
        "--domain",
        "reporter.test",
        "--days",
        "36500",
        "--no-dns",
    ]));
    assert!(
        human.contains("billing.reporter.test: 2 messages, 0% passed DMARC: only forged"),
        "{human}"
    );
    assert!(
        human.contains("192.0.2.25  no reverse name (reporter.test): 4 messages, forwarded"),
        "{human}"
    );

    // Captured only: not delivered into the Maildir (only the three accepted messages are).
    let delivered = std::fs::read_dir(data.join("maildir/new")).unwrap().count();
    assert_eq!(delivered, 3);

    // Our report for today, through the sink.
    let sink = SmtpSink::start();
    let relay = format!("127.0.0.1:{}", sink.port);
    let zone = gw.dir.join("z.zone");
    let config = gw.config();
    let send = |extra: &[&str]| {
        let mut args = vec![
            "dmarc",
            "send",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--day",
            "today",
            "--relay",
            &relay,
            "--dns-zone",
            zone.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        unspoof(&args)
    };
    // The store has the records once the gateway flushed them (50 ms batches).
    std::thread::sleep(Duration::from_millis(300));
    let out = ok_stdout(&send(&[]));
    assert!(out.contains("for sender.test: 5 messages"), "{out}");
    assert!(out.contains("DKIM-signed"), "{out}");
    assert!(out.contains("to agg@stranger.test: not verified"), "{out}");
    let mails = sink.mails();
    let mut to: Vec<&str> = mails.iter().map(|(a, _)| a.as_str()).collect();
    to.sort();
    assert_eq!(to, ["agg@collector.test", "dmarc@sender.test"], "{out}");

    let (_, sent) = &mails[0];
    let text = String::from_utf8_lossy(sent);
    assert!(
        text.contains("Subject: Report Domain: sender.test\r\n Submitter: reporter.test\r\n Report-ID: <sender.test."),
        "{text}"
    );
    assert!(text.starts_with("DKIM-Signature:"), "{text}");
    // mail-auth's parser.
    let r = report_of(sent);
    assert_eq!(r.domain(), "sender.test");
    let counts: u32 = r.records().iter().map(|x| x.row.count).sum();
    assert_eq!(counts, 5);
    let mut disp: Vec<String> = r
        .records()
        .iter()
        .flat_map(|x| {
            std::iter::repeat_n(
                format!("{:?}", x.row.policy_evaluated.disposition).to_lowercase(),
                x.row.count as usize,
            )
        })
        .collect();
    disp.sort();
    assert_eq!(disp, ["pass", "pass", "pass", "reject", "reject"]);
    // parsedmarc, on the very mail.
    let mail_path = tmp.path().join("report.eml");
    std::fs::write(&mail_path, sent).unwrap();
    let p = parsedmarc(&mail_path);
    assert_eq!(p["type"], "aggregate");
    assert_eq!(p["report_id"], r.report_id());
    assert_eq!(p["domain"], "sender.test");
    assert_eq!(p["messages"], 5);
    assert_eq!(p["records"].as_u64().unwrap() as usize, r.records().len());
    assert_eq!(p["dispositions"], serde_json::json!(disp));

    // The receiving side: our key and policy published, the report mail passes DMARC
    // (aligned DKIM; the IP is not in any SPF record).
    let receiver_zone = tmp.path().join("receiver.zone");
    std::fs::write(
        &receiver_zone,
        format!("{dkim_record}\n_dmarc.reporter.test. IN TXT \"v=DMARC1; p=reject\"\n"),
    )
    .unwrap();
    let analyzed = unspoof(&[
        "analyze",
        "--json",
        "--dns-zone",
        receiver_zone.to_str().unwrap(),
        "--ip",
        "192.0.2.77",
        "--helo",
        "mx1.reporter.test",
        "--mail-from",
        "dmarc-noreply@reporter.test",
        mail_path.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&analyzed.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&analyzed.stdout),
            String::from_utf8_lossy(&analyzed.stderr)
        )
    });
    assert_eq!(v["auth"]["dmarc"]["result"], "pass", "{v}");
    assert!(
        v["auth"]["dmarc"]["aligned"]
            .as_array()
            .unwrap()
            .contains(&"dkim".into()),
        "{v}"
    );
    assert_eq!(v["auth"]["dkim"][0]["result"], "pass");
    assert_eq!(v["auth"]["dkim"][0]["domain"], "reporter.test");

    // Sending again the same day builds nothing new and sends nothing twice.
    let again = ok_stdout(&send(&[]));
    assert!(!again.contains("report sender.test"), "{again}");
    assert_eq!(sink.mails().len(), 2, "{again}");
}

#[test]
fn fleet_two_gateways_on_one_postgresql_send_one_report_per_domain_and_day() {
    let db = TestDb::new(Kind::Postgres);
    let tmp = TempDir::new("dmarc-fleet");
    let (key, _) = keygen(tmp.path());
    let a = Gateway::start(tmp.path(), "mx1", &db.url, &key);
    let b = Gateway::start(tmp.path(), "mx2", &db.url, &key);
    let ok = |n: &str| mail(n, "Bob <bob@sender.test>", "bob@sender.test");
    assert_eq!(a.send(&[ok("a1"), ok("a2")]), [250, 250], "{}", a.log());
    assert_eq!(b.send(&[ok("b1")]), [250], "{}", b.log());
    std::thread::sleep(Duration::from_millis(500));

    let sink = SmtpSink::start();
    let relay = format!("127.0.0.1:{}", sink.port);
    // Both nodes' daily runs at once.
    let spawn = |gw: &Gateway| {
        Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args([
                "dmarc", "send", "--day", "today", "--relay", &relay, "--config",
            ])
            .arg(gw.config())
            .arg("--data-dir")
            .arg(gw.dir.join("data"))
            .arg("--dns-zone")
            .arg(gw.dir.join("z.zone"))
            .env_remove("UNSPOOF_STORE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    let (sa, sb) = (ok_stdout(&oa), ok_stdout(&ob));
    let built = [&sa, &sb]
        .iter()
        .filter(|s| s.contains("for sender.test: 3 messages"))
        .count();
    let other = [&sa, &sb]
        .iter()
        .filter(|s| s.contains("sender.test: another node of the fleet has this report"))
        .count();
    assert_eq!((built, other), (1, 1), "mx1:\n{sa}\nmx2:\n{sb}");
    // One report per destination, covering both gateways' mail.
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "mx1:\n{sa}\nmx2:\n{sb}");
    for (_, m) in &mails {
        let r = report_of(m);
        assert_eq!(r.records().iter().map(|x| x.row.count).sum::<u32>(), 3);
    }
    let status = ok_stdout(&unspoof(&[
        "dmarc",
        "status",
        "--json",
        "--store",
        &db.url,
        "--data-dir",
        tmp.path().join("cli").to_str().unwrap(),
    ]));
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["outgoing"].as_array().unwrap().len(), 1, "{v}");
}
