//! `unspoof log` and `unspoof quarantine` against real databases: records from two writers
//! sharing one PostgreSQL found by one `unspoof log search`; a quarantined message released
//! into an SMTP sink (PostgreSQL) and into the Maildir (SQLite in the data directory).
//! PostgreSQL: `UNSPOOF_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`, started by
//! `scripts/deps-store.sh`).

mod common;

use common::unspoof;
use unspoof_testkit::{ok_stdout, pg_server, psql};

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use unspoof_store::{MessageRecord, NewQuarantine, Store, StoreConfig, new_id};

struct Db {
    server: String,
    name: String,
    dir: PathBuf,
}

impl Db {
    fn new() -> Db {
        let server = pg_server();
        let name = format!("unspoof_cli_test_{}", std::process::id());
        psql(&server, &format!("DROP DATABASE IF EXISTS {name}"));
        psql(&server, &format!("CREATE DATABASE {name}"));
        let dir = std::env::temp_dir().join(format!("unspoof-cli-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Db { server, name, dir }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn record(node: &str, i: usize) -> MessageRecord {
    MessageRecord {
        id: new_id(),
        received_at: 1_795_428_000 + i as i64,
        node: node.into(),
        listener: "inbound".into(),
        queue_id: Some(format!("{node}-{i}")),
        message_id: Some(format!("{node}.{i}@partner.example")),
        client_ip: Some("192.0.2.7".parse().unwrap()),
        mail_from: Some("a@partner.example".into()),
        recipients: vec!["ann@site.test".into()],
        from: Some("a@partner.example".into()),
        action: if i % 2 == 0 { "accept" } else { "reject" }.into(),
        reasons: if i % 2 == 0 {
            vec![]
        } else {
            vec!["dmarc.reject".into()]
        },
        ..Default::default()
    }
}

/// An SMTP server that accepts one message and hands back its DATA.
fn smtp_sink() -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(b"220 sink ESMTP\r\n").unwrap();
        let mut data = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                return data;
            }
            let cmd = line.to_ascii_uppercase();
            if cmd.starts_with("DATA") {
                w.write_all(b"354 go ahead\r\n").unwrap();
                loop {
                    let mut l = Vec::new();
                    r.read_until(b'\n', &mut l).unwrap();
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(&l);
                }
                w.write_all(b"250 2.0.0 Ok: queued as SINK1\r\n").unwrap();
            } else if cmd.starts_with("QUIT") {
                let _ = w.write_all(b"221 bye\r\n");
                return data;
            } else {
                w.write_all(b"250 ok\r\n").unwrap();
            }
        }
    });
    (addr, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_one_search_and_a_release_downstream() {
    let db = Db::new();
    let url = db.url();
    for node in ["mx1", "mx2"] {
        let mut c = StoreConfig::new(url.clone(), db.dir.join(node));
        c.node = node.into();
        let store = Store::open(c).await.unwrap();
        for i in 0..50 {
            store.log_message(record(node, i));
        }
        store.close().await;
    }
    let data_dir = db.dir.join("cli");
    let data = data_dir.to_str().unwrap();

    let out = ok_stdout(&unspoof(&[
        "log",
        "search",
        "--store",
        &url,
        "--data-dir",
        data,
        "--rcpt",
        "@site.test",
        "--limit",
        "1000",
        "--json",
    ]));
    let found: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(found.len(), 100);
    for node in ["mx1", "mx2"] {
        assert_eq!(found.iter().filter(|r| r["node"] == node).count(), 50);
    }
    let table = ok_stdout(&unspoof(&[
        "log",
        "search",
        "--store",
        &url,
        "--data-dir",
        data,
        "--reason",
        "dmarc.reject",
        "--client",
        "192.0.2.0/24",
        "--since",
        "2026-11-23T10:00:00Z",
    ]));
    assert!(table.ends_with("50 record(s)\n"), "{table}");
    let show = ok_stdout(&unspoof(&[
        "log",
        "show",
        "--store",
        &url,
        "--data-dir",
        data,
        "mx2-7",
    ]));
    assert!(show.contains("queue id    mx2-7"), "{show}");
    assert!(show.contains("reason    dmarc.reject"), "{show}");

    // Quarantine: list, show --raw, release into an SMTP sink.
    let raw = b"From: ceo@corp.test\r\nSubject: wire\r\n\r\n.leading dot\r\nbody\r\n".to_vec();
    let q = NewQuarantine {
        id: new_id(),
        quarantined_at: 1_795_428_000,
        node: "mx1".into(),
        mail_from: Some("x@evil.example".into()),
        recipients: vec!["ann@site.test".into()],
        from: Some("ceo@corp.test".into()),
        reasons: vec!["impersonation.display_name".into()],
        raw: raw.clone(),
        ..Default::default()
    };
    let store = Store::open(StoreConfig::new(url.clone(), db.dir.join("mx1")))
        .await
        .unwrap();
    store.quarantine_put(q.clone()).await.unwrap();
    store.close().await;
    let list = ok_stdout(&unspoof(&[
        "quarantine",
        "list",
        "--store",
        &url,
        "--data-dir",
        data,
    ]));
    assert!(
        list.contains(&q.id) && list.contains("impersonation.display_name"),
        "{list}"
    );
    let shown = unspoof(&[
        "quarantine",
        "show",
        "--store",
        &url,
        "--data-dir",
        data,
        "--raw",
        &q.id,
    ]);
    assert_eq!(shown.stdout, raw);

    let (sink, got) = smtp_sink();
    let out = ok_stdout(&unspoof(&[
        "quarantine",
        "release",
        "--store",
        &url,
        "--data-dir",
        data,
        "--downstream",
        &sink,
        "--by",
        "alice",
        &q.id,
    ]));
    assert!(out.contains("released") && out.contains("SINK1"), "{out}");
    // The sink sees the dot-stuffed line; un-stuffing gives the message back.
    let delivered = got.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&delivered).replace("\r\n..", "\r\n."),
        String::from_utf8_lossy(&raw)
    );
    let json = ok_stdout(&unspoof(&[
        "quarantine",
        "list",
        "--store",
        &url,
        "--data-dir",
        data,
        "--status",
        "released",
        "--json",
    ]));
    let e: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(
        (e["status"].as_str(), e["actor"].as_str()),
        (Some("released"), Some("alice"))
    );
    // A second release is refused.
    let again = unspoof(&[
        "quarantine",
        "release",
        "--store",
        &url,
        "--data-dir",
        data,
        &q.id,
    ]);
    assert_eq!(again.status.code(), Some(65));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_into_the_maildir_with_sqlite_in_the_data_dir() {
    let dir = std::env::temp_dir().join(format!("unspoof-cli-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(StoreConfig::new("", &dir)).await.unwrap();
    let q = NewQuarantine {
        id: new_id(),
        recipients: vec!["ann@site.test".into()],
        raw: b"Subject: x\r\n\r\ny\r\n".to_vec(),
        ..Default::default()
    };
    store.quarantine_put(q.clone()).await.unwrap();
    let q2 = NewQuarantine {
        id: new_id(),
        ..q.clone()
    };
    store.quarantine_put(q2.clone()).await.unwrap();
    store.close().await;
    let data = dir.to_str().unwrap();
    let out = ok_stdout(&unspoof(&[
        "quarantine",
        "release",
        "--data-dir",
        data,
        "--by",
        "bob",
        &q.id,
    ]));
    let path = out.trim().rsplit(": ").next().unwrap().to_string();
    assert!(path.starts_with(&format!("{data}/maildir/new/")), "{out}");
    assert_eq!(std::fs::read(&path).unwrap(), q.raw);
    let out = ok_stdout(&unspoof(&[
        "quarantine",
        "delete",
        "--data-dir",
        data,
        "--by",
        "bob",
        &q2.id,
    ]));
    assert!(out.starts_with("deleted"), "{out}");
    let all = ok_stdout(&unspoof(&[
        "quarantine",
        "list",
        "--data-dir",
        data,
        "--status",
        "all",
    ]));
    assert!(all.contains("released") && all.contains("deleted"), "{all}");
    let missing = unspoof(&["quarantine", "show", "--data-dir", data, "no-such-id"]);
    assert_eq!(missing.status.code(), Some(66));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A quarantined message that a gateway spooled (database unreachable) and never synced,
/// because it died: `unspoof quarantine` on the
/// same data directory finds it and can release it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_message_left_in_the_spool_is_listed_and_released() {
    let dir = std::env::temp_dir().join(format!("unspoof-cli-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Nothing listens on port 1: the store starts with its database down and spools.
    let mut config = StoreConfig::new("postgres://unspoof@127.0.0.1:1/none", &dir);
    config.db_timeout_ms = 500;
    let gateway = Store::open(config).await.unwrap();
    let q = NewQuarantine {
        id: new_id(),
        recipients: vec!["ann@site.test".into()],
        subject: Some("left in the spool".into()),
        raw: b"Subject: left in the spool\r\n\r\ny\r\n".to_vec(),
        ..Default::default()
    };
    gateway.quarantine_put(q.clone()).await.unwrap();
    // Durable in the journal; the writer, finding the database down, spools it.
    gateway.flush().await;
    assert_eq!(gateway.stats().quarantine_spooled, 1);
    drop(gateway);
    let data = dir.to_str().unwrap();
    let list = ok_stdout(&unspoof(&["quarantine", "list", "--data-dir", data]));
    assert!(list.contains(&q.id), "{list}");
    let out = ok_stdout(&unspoof(&[
        "quarantine",
        "release",
        "--data-dir",
        data,
        "--by",
        "bob",
        &q.id,
    ]));
    let path = out.trim().rsplit(": ").next().unwrap().to_string();
    assert_eq!(std::fs::read(&path).unwrap(), q.raw, "{out}");
    let spooled: Vec<_> = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("quarantine-"))
        .collect();
    assert!(spooled.is_empty(), "{spooled:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `unspoof log` and `unspoof quarantine` find the store the way `unspoof serve` does: from
/// `--config` (or `UNSPOOF_CONFIG`) and its `[gateway] data_dir`, from any folder. Without
/// it, in a folder with no store, they say so and create nothing. `quarantine show` takes
/// the queue id the gateway's reply and `unspoof log show` give, and says why in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_and_quarantine_find_the_store_through_the_configuration() {
    let dir = std::env::temp_dir().join(format!("unspoof-cli-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (data, elsewhere) = (dir.join("data"), dir.join("elsewhere"));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let config = dir.join("unspoof.toml");
    std::fs::write(
        &config,
        format!("[gateway]\ndata_dir = \"{}\"\n", data.display()),
    )
    .unwrap();

    // A quarantined message and its record, as the gateway writes them, with the engine's
    // analysis of the shipped spoof under the shipped policy.
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let policy = unspoof_testkit::example_policy();
    let engine = unspoof_engine::Engine::new(policy, unspoof_engine::Dns::offline());
    let raw = std::fs::read(examples.join("sample-spoof.eml")).unwrap();
    let analysis = engine
        .evaluate(&raw, &unspoof_engine::Envelope::default())
        .await;
    let first_reason = analysis.verdict.reasons[0].message.clone();
    let (qid, queue_id) = (new_id(), "4XyZ12AbCd".to_string());
    let mut record = MessageRecord {
        id: new_id(),
        received_at: unspoof_store::now(),
        node: "mx1".into(),
        listener: "inbound".into(),
        queue_id: Some(queue_id.clone()),
        recipients: vec!["suzie@shopping.example.net".into()],
        ..Default::default()
    }
    .with_analysis(&analysis);
    record.action = "quarantine".into();
    record.stored_at = Some(qid.clone());
    let store = Store::open(StoreConfig::new("", &data)).await.unwrap();
    store.log_message(record.clone());
    store
        .quarantine_put(NewQuarantine {
            id: qid.clone(),
            message_record: Some(record.id.clone()),
            queue_id: Some(queue_id.clone()),
            recipients: record.recipients.clone(),
            reasons: record.reasons.clone(),
            raw: raw.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await;

    let run = |args: &[&str], env_config: Option<&PathBuf>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_unspoof"));
        cmd.args(args)
            .current_dir(&elsewhere)
            .env_remove("UNSPOOF_STORE")
            .env_remove("UNSPOOF_CONFIG");
        if let Some(c) = env_config {
            cmd.env("UNSPOOF_CONFIG", c);
        }
        cmd.output().unwrap()
    };

    // Somewhere else, without the configuration: no empty store is made there.
    for args in [&["log", "search"][..], &["quarantine", "list"][..]] {
        let out = run(args, None);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(66), "{args:?}: {said}");
        assert!(
            said.contains("no store at ./unspoof-data/unspoof.db"),
            "{said}"
        );
        assert!(
            said.contains("--config"),
            "the error says what to do: {said}"
        );
        assert!(
            !elsewhere.join("unspoof-data").exists(),
            "{args:?} made a store"
        );
    }

    // --config, and UNSPOOF_CONFIG, find it from anywhere.
    let c = config.to_str().unwrap();
    let found = ok_stdout(&run(&["log", "search", "--config", c], None));
    assert!(
        found.contains(&record.id) && found.ends_with("1 record(s)\n"),
        "{found}"
    );
    let shown = ok_stdout(&run(&["log", "show", &queue_id], Some(&config)));
    assert!(shown.contains("verdict     quarantine"), "{shown}");
    assert!(shown.contains(&format!("stored at   {qid}")), "{shown}");

    // `quarantine show <queue id>`: the held message, with its reasons in words.
    let held = ok_stdout(&run(&["quarantine", "show", &queue_id], Some(&config)));
    assert!(held.contains(&format!("id          {qid}")), "{held}");
    assert!(held.contains("status      held"), "{held}");
    assert!(held.contains(&first_reason), "the reason in words: {held}");
    let by_id = ok_stdout(&run(&["quarantine", "show", "--config", c, &qid], None));
    assert_eq!(by_id, held);
    let raw_out = run(&["quarantine", "show", "--raw", "-c", c, &queue_id], None);
    assert_eq!(raw_out.stdout, raw);
    // Release by queue id too.
    let released = ok_stdout(&run(
        &["quarantine", "release", "--by", "ann", &queue_id],
        Some(&config),
    ));
    assert!(
        released.starts_with(&format!("released {qid} by ann: ")),
        "{released}"
    );
    assert!(
        released.contains(&data.join("maildir/new").display().to_string()),
        "{released}"
    );
    let unknown = run(&["quarantine", "show", "no-such-queue-id"], Some(&config));
    assert_eq!(unknown.status.code(), Some(66));
    let _ = std::fs::remove_dir_all(&dir);
}
