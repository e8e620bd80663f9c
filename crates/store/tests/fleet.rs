//! A fleet: several writer processes sharing one database, a writer killed with SIGKILL right
//! after `quarantine_put` returned, and PostgreSQL stopped while records flow.
//!
//! The writer processes are this test binary run again (`child`, steered by environment
//! variables), so every process is a real OS process with its own pool and spool.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Kind, PrivatePg, TempDir, TestDb, message};
use unspoof_store::{NewQuarantine, QuarantineStatus, Query, Store, StoreConfig};

const T0: i64 = 1_763_900_000;
const RAW: &[u8] =
    b"From: ceo@corp.test\r\nTo: ann@site.test\r\nSubject: urgent wire\r\n\r\nPay now.\r\n";

/// Not a test of its own: the body of a child process when `UNSPOOF_STORE_CHILD` is set.
#[test]
fn child() {
    let Ok(mode) = std::env::var("UNSPOOF_STORE_CHILD") else {
        return;
    };
    let url = std::env::var("UNSPOOF_STORE_URL").unwrap();
    let data = std::env::var("UNSPOOF_STORE_DATA").unwrap();
    let node = std::env::var("UNSPOOF_STORE_NODE").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = StoreConfig::new(url, data);
        config.node = node.clone();
        // The quarantined message's child never writes a batch: what survives its kill is
        // what its journal holds.
        config.flush_interval_ms = if mode == "quarantine" { 3_600_000 } else { 20 };
        let store = Store::open(config).await.unwrap();
        match mode.as_str() {
            "writer" => {
                let count: i64 = std::env::var("UNSPOOF_STORE_COUNT")
                    .unwrap()
                    .parse()
                    .unwrap();
                for i in 0..count {
                    store.log_message(message(
                        &node,
                        T0 + i,
                        "192.0.2.1",
                        "a@partner.example",
                        "a@partner.example",
                        &["ann@site.test"],
                        "accept",
                        &[],
                    ));
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                store.close().await;
                println!("WROTE {count}");
            }
            "quarantine" => {
                let q = NewQuarantine {
                    id: unspoof_store::new_id(),
                    quarantined_at: T0,
                    node: node.clone(),
                    mail_from: Some("x@evil.example".into()),
                    recipients: vec!["ann@site.test".into()],
                    from: Some("ceo@corp.test".into()),
                    reasons: vec!["impersonation.display_name".into()],
                    raw: RAW.to_vec(),
                    ..Default::default()
                };
                store.quarantine_put(q.clone()).await.unwrap();
                // What the gateway does next: answer 250. The parent kills us instead.
                println!("DURABLE {}", q.id);
                std::thread::sleep(Duration::from_secs(600));
            }
            other => panic!("unknown child mode {other}"),
        }
    });
}

fn spawn_child(
    mode: &str,
    url: &str,
    data: &std::path::Path,
    node: &str,
    count: u32,
) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("UNSPOOF_STORE_CHILD", mode)
        .env("UNSPOOF_STORE_URL", url)
        .env("UNSPOOF_STORE_DATA", data)
        .env("UNSPOOF_STORE_NODE", node)
        .env("UNSPOOF_STORE_COUNT", count.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn two_writer_processes_one_search(db: TestDb) {
    // Migrate first, from the parent, as `unspoof serve` would on the first start.
    db.open("parent").await.close().await;
    const N: u32 = 2_000;
    let a = spawn_child("writer", &db.url, &db.data.path().join("mx1"), "mx1", N);
    let b = spawn_child("writer", &db.url, &db.data.path().join("mx2"), "mx2", N);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("WROTE {N}")));
    }
    let store = db.open("cli").await;
    let q = Query {
        recipient: Some("ann@site.test".into()),
        limit: Some(10 * N),
        ..Default::default()
    };
    let all = store.search(&q).await.unwrap();
    assert_eq!(all.len(), 2 * N as usize);
    for node in ["mx1", "mx2"] {
        assert_eq!(
            all.iter().filter(|m| m.node == node).count(),
            N as usize,
            "{node}"
        );
    }
    let mut ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2 * N as usize, "no duplicates");
    store.close().await;
}

async fn quarantine_survives_kill_9(db: TestDb) {
    db.open("parent").await.close().await;
    let data = db.data.path().join("mx1");
    let mut child = spawn_child("quarantine", &db.url, &data, "mx1", 0);
    // The test harness prints its own words first ("test child ... DURABLE <id>").
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !line.contains("DURABLE") {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    let line = line[line.find("DURABLE").unwrap_or(0)..].to_string();
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, nothing after the 250.
    child.wait().unwrap();
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("DURABLE"), "{line}");
    let id = words.next().unwrap().to_string();

    // Not in the database: the child's writer never wrote a batch.
    let cli = db.open("cli").await;
    assert!(cli.quarantine_get(&id).await.unwrap().is_none());
    cli.close().await;
    // The gateway started again on its data directory replays its journal.
    let store = db.open("mx1").await;
    store.flush().await;
    let entry = store
        .quarantine_get(&id)
        .await
        .unwrap()
        .expect("quarantined message survives");
    assert_eq!(
        (entry.status, entry.message.raw.as_slice()),
        (QuarantineStatus::Held, RAW)
    );
    // Released afterwards, into a Maildir (what `unspoof quarantine release` does without a
    // downstream).
    let claimed = store.release_begin(&id, "admin").await.unwrap();
    let maildir = TempDir::new("maildir");
    std::fs::create_dir_all(maildir.path().join("new")).unwrap();
    let path = maildir.path().join("new").join(format!("{id}.eml"));
    std::fs::write(&path, &claimed.message.raw).unwrap();
    store
        .release_end(&id, "admin", Ok(path.to_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), RAW);
    let done = store.quarantine_get(&id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.actor.as_deref()),
        (QuarantineStatus::Released, Some("admin"))
    );
    store.close().await;
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writer_processes_one_search() {
        super::two_writer_processes_one_search(TestDb::new(Kind::Sqlite)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quarantine_survives_kill_9() {
        super::quarantine_survives_kill_9(TestDb::new(Kind::Sqlite)).await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writer_processes_one_search() {
        super::two_writer_processes_one_search(TestDb::new(Kind::Postgres)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quarantine_survives_kill_9() {
        super::quarantine_survives_kill_9(TestDb::new(Kind::Postgres)).await;
    }

    /// PostgreSQL stopped while records flow: every record is accepted (spooled), and every
    /// record (and the quarantined message) is in the database once it is back, exactly once.
    /// Runs a private server so the machine's shared one is never stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_outage_spools_and_replays() {
        let pg = PrivatePg::start();
        common::psql(
            &format!("postgres://postgres@127.0.0.1:{}", pg.port),
            "CREATE DATABASE unspoof",
        );
        let data = TempDir::new("outage");
        let mut config = StoreConfig::new(pg.url("unspoof"), data.path());
        config.node = "mx1".into();
        config.flush_interval_ms = 20;
        config.retry_interval_ms = 200;
        config.db_timeout_ms = 2_000;
        let store = Store::open(config).await.unwrap();
        let log = |from: i64, to: i64| {
            for i in from..to {
                store.log_message(message(
                    "mx1",
                    T0 + i,
                    "192.0.2.1",
                    "a@partner.example",
                    "a@partner.example",
                    &["ann@site.test"],
                    "accept",
                    &[],
                ));
            }
        };

        log(0, 300);
        store.flush().await;
        assert_eq!(store.count(&Query::default()).await.unwrap(), 300);

        pg.ctl_stop();
        for batch in 0..5 {
            log(300 + batch * 100, 400 + batch * 100);
            store.flush().await;
        }
        let q = NewQuarantine {
            id: unspoof_store::new_id(),
            quarantined_at: T0,
            node: "mx1".into(),
            recipients: vec!["ann@site.test".into()],
            raw: RAW.to_vec(),
            ..Default::default()
        };
        store.quarantine_put(q.clone()).await.unwrap();
        // Durable in the journal; the writer, finding the database down, spools it.
        store.flush().await;
        let s = store.stats();
        assert!(s.db_down, "{s:?}");
        assert_eq!(
            (s.logged, s.spooled, s.quarantine_spooled),
            (800, 500, 1),
            "{s:?}"
        );

        pg.ctl_start();
        let mut count = 0;
        for _ in 0..300 {
            store.flush().await;
            count = store.count(&Query::default()).await.unwrap_or(0);
            if count == 800 && !store.stats().db_down {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            count,
            800,
            "every record is in the database, once: {:?}",
            store.stats()
        );
        let got = store
            .quarantine_get(&q.id)
            .await
            .unwrap()
            .expect("spooled quarantine synced");
        assert_eq!(got.message.raw, RAW);
        let s = store.stats();
        assert_eq!((s.written, s.replayed), (800, 501), "{s:?}");
        // The journal this live store writes into (the quarantined message went through it)
        // is its own, not the spool's.
        let left: Vec<_> = std::fs::read_dir(data.path().join("spool"))
            .unwrap()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !name.starts_with("journal-") && !name.starts_with(".journal-spare-")
            })
            .collect();
        assert!(left.is_empty(), "spool emptied: {left:?}");
        store.close().await;
    }
}
