//! Reports from a real IMAP server: Dovecot (Debian's, installed by scripts/deps-reports.sh),
//! started here with its own config on a loopback port, IMAPS with a certificate made for the
//! test, and a temporary Maildir holding report mails (and one mail that is no report).
//!
//! The connection runs through a proxy the test controls: when half of the mail bytes have
//! passed, the proxy cuts the connection in the middle of a message and Dovecot is stopped;
//! a few seconds later it is started again. `unspoof dmarc ingest --imap-watch`'s loop (called
//! in-process) must end with every report stored exactly once, the broken mail kept aside, and
//! every message moved out of the INBOX only after its commit: nothing lost, nothing twice.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use unspoof_reports::imap::ImapSettings;
use unspoof_reports::{DmarcConfig, Ingestor, InputOutcome};
use unspoof_store::{Store, StoreConfig};
use unspoof_testkit::free_port;

const REPORTS: usize = 12;
/// The uid/gid Dovecot delivers as (Debian's nobody/nogroup): Dovecot refuses root.
const MAIL_UID: u32 = 65534;

fn dovecot() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/sbin/dovecot");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skip: no /usr/sbin/dovecot (scripts/deps-reports.sh installs it)");
        None
    }
}

/// A report mail with its own report id, padded so the mailbox is worth cutting in half.
fn report_mail(n: usize) -> Vec<u8> {
    let pad: String = (0..200)
        .map(|i| format!("<!-- padding line {i} -->\n"))
        .collect();
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">
{pad}<report_metadata><org_name>imap.receiver.example</org_name><email>r@receiver.example</email>
<report_id>imap-{n}</report_id><date_range><begin>1796515200</begin><end>1796601599</end></date_range>
</report_metadata>
<policy_published><domain>example.org</domain><p>reject</p></policy_published>
<record><row><source_ip>192.0.2.{n}</source_ip><count>{count}</count>
<policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
<identifiers><header_from>example.org</header_from></identifiers>
<auth_results><spf><domain>forger.example</domain><result>fail</result></spf></auth_results></record>
</feedback>
"#,
        count = n + 1
    );
    format!(
        "From: r@receiver.example\r\nTo: reports@example.org\r\nSubject: Report Domain: example.org Submitter: imap.receiver.example Report-ID: <imap-{n}>\r\n\
         Message-ID: <imap-{n}@receiver.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nreport\r\n--b\r\nContent-Type: text/xml\r\n\
         Content-Disposition: attachment; filename=\"imap.receiver.example!example.org!1796515200!1796601599.xml\"\r\n\r\n{}\r\n--b--\r\n",
        xml.replace('\n', "\r\n")
    )
    .into_bytes()
}

struct Dovecot {
    conf: PathBuf,
    child: Option<Child>,
}

impl Dovecot {
    fn start(conf: &Path, port: u16) -> Dovecot {
        let child = Command::new("/usr/sbin/dovecot")
            .args(["-F", "-c"])
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "dovecot did not start: {}",
                std::fs::read_to_string(conf.with_file_name("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Dovecot {
            conf: conf.to_path_buf(),
            child: Some(child),
        }
    }

    /// Stops the server (SIGTERM: Dovecot ends its children too) and waits for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        let _ = &self.conf;
    }
}

/// A TCP proxy to `upstream` that cuts every connection once `cut_at` server octets have
/// passed in total (once), telling the test on `cut`.
fn proxy(upstream: u16, cut_at: u64, cut: mpsc::Sender<()>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let passed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || pump(c2, s2, None));
            let (passed, done, cut) = (passed.clone(), done.clone(), cut.clone());
            std::thread::spawn(move || pump(server, client, Some((passed, cut_at, done, cut))));
        }
    });
    port
}

type Trigger = (Arc<AtomicU64>, u64, Arc<AtomicBool>, mpsc::Sender<()>);

fn pump(mut from: TcpStream, mut to: TcpStream, trigger: Option<Trigger>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((passed, at, done, cut)) = &trigger {
            let before = passed.fetch_add(n as u64, Ordering::SeqCst);
            if before + n as u64 >= *at && !done.swap(true, Ordering::SeqCst) {
                // Half of this chunk goes through: the client is left inside a message.
                let _ = to.write_all(&buf[..n / 2]);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                let _ = cut.send(());
                return;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn count_files(dir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|s| {
            std::fs::read_dir(dir.join(s))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_from_dovecot_with_the_server_stopped_halfway_loses_nothing_and_stores_once() {
    if dovecot().is_none() {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("unspoof-imap-{}", unspoof_store::new_id()));
    let home = tmp.join("home/reports");
    let inbox = home.join("Maildir");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(inbox.join(d)).unwrap();
    }
    let mut total = 0u64;
    for n in 0..REPORTS {
        let m = report_mail(n + 1);
        total += m.len() as u64;
        std::fs::write(
            inbox
                .join("new")
                .join(format!("17965152{n:02}.M{n}P1.test")),
            m,
        )
        .unwrap();
    }
    std::fs::write(
        inbox.join("new/1796515299.M99P1.test"),
        b"From: someone@example.net\r\nSubject: not a report\r\n\r\nhello\r\n",
    )
    .unwrap();
    Command::new("chown")
        .args(["-R", &format!("{MAIL_UID}:{MAIL_UID}")])
        .arg(tmp.join("home"))
        .status()
        .unwrap();
    // A certificate for 127.0.0.1, trusted by the client through --imap-ca.
    let (cert, key) = (tmp.join("cert.pem"), tmp.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "openssl req");
    let port = free_port();
    let conf = tmp.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            r#"protocols = imap
listen = 127.0.0.1
base_dir = {t}/run
state_dir = {t}/state
log_path = {t}/dovecot.log
ssl = required
ssl_cert = <{t}/cert.pem
ssl_key = <{t}/key.pem
auth_mechanisms = plain
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = static
  args = password=s3cret
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={t}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"#,
            t = tmp.display()
        ),
    )
    .unwrap();
    let mut server = Dovecot::start(&conf, port);

    let (cut_tx, cut_rx) = mpsc::channel();
    let proxy_port = proxy(port, total / 2, cut_tx);
    let store = Store::open(StoreConfig::new("", tmp.join("data")))
        .await
        .unwrap();
    let config = DmarcConfig {
        batch_inputs: 3,
        ..Default::default()
    };
    let settings = ImapSettings {
        url: format!("imaps://reports@127.0.0.1:{proxy_port}/INBOX"),
        password: "s3cret".into(),
        ca_file: Some(cert.clone()),
        move_to: Some("unspoof-processed".into()),
        delete: false,
        watch: true,
        poll_secs: 1,
    };
    let s2 = store.clone();
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::<(String, InputOutcome)>::new()));
    let seen = outcomes.clone();
    let ingest = tokio::spawn(async move {
        let mut ingestor = Ingestor::new(s2, config);
        let mut print =
            |o: &[(String, InputOutcome)]| seen.lock().unwrap().extend(o.iter().cloned());
        unspoof_reports::imap::ingest(&settings, &mut ingestor, &mut print).await
    });

    // Halfway: the proxy cut a message in two; the server goes down with it.
    let cut = tokio::task::spawn_blocking(move || cut_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(cut.is_ok(), "the ingest never got halfway");
    server.stop();
    let at_cut = store.dmarc_counts().await.unwrap().0;
    assert!(
        (at_cut as usize) < REPORTS,
        "everything stored before the cut"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _server = Dovecot::start(&conf, port);

    // Back up: the watch loop reconnects and finishes.
    let processed = home.join("Maildir/.unspoof-processed");
    let started = Instant::now();
    loop {
        let (reports, _, rejected) = store.dmarc_counts().await.unwrap();
        if reports as usize == REPORTS
            && rejected == 1
            && count_files(&inbox) == 0
            && count_files(&processed) == REPORTS + 1
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not done: {reports} reports, {rejected} rejected, inbox {}, processed {}; {:?}",
            count_files(&inbox),
            count_files(&processed),
            outcomes.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ingest.abort();
    let outcomes = outcomes.lock().unwrap().clone();
    let stored: Vec<&String> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, InputOutcome::Stored { .. }))
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        stored.len(),
        REPORTS,
        "each report stored exactly once: {outcomes:?}"
    );
    let messages: i64 = store
        .dmarc_reports(Some("example.org"), 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.messages)
        .sum();
    assert_eq!(messages as usize, (2..=REPORTS + 1).sum::<usize>());
    assert!(
        stored
            .iter()
            .all(|s| s.starts_with("imap://reports@127.0.0.1/INBOX;UIDVALIDITY="))
    );
    store.close().await;
    drop(_server);
    let _ = std::fs::remove_dir_all(&tmp);
}
