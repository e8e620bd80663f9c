//! Shared test support: a fresh database per test on either backend, temporary directories,
//! record builders, and a private PostgreSQL server that a test may stop and start.
//!
//! PostgreSQL: `UNSPOOF_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`) names a server
//! with trust authentication; each test creates `unspoof_test_<pid>_<n>` and drops it at the end.
//! `scripts/deps-store.sh` starts the machine's server when none is running.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use unspoof_store::{MessageRecord, Store, StoreConfig, new_id};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("unspoof-store-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub use unspoof_testkit::{pg_server, psql};

/// A database for one test: a SQLite file in a temporary directory, or a fresh PostgreSQL
/// database dropped at the end. `data` is the data directory (spool) either way.
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    pub data: TempDir,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub fn new(kind: Kind) -> TestDb {
        let data = TempDir::new(match kind {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "pg",
        });
        match kind {
            Kind::Sqlite => TestDb {
                kind,
                url: format!("sqlite://{}", data.path().join("unspoof.db").display()),
                data,
                pg: None,
            },
            Kind::Postgres => {
                let server = pg_server();
                let name = format!(
                    "unspoof_test_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst)
                );
                psql(&server, &format!("DROP DATABASE IF EXISTS {name}"));
                psql(&server, &format!("CREATE DATABASE {name}"));
                TestDb {
                    kind,
                    url: format!("{server}/{name}"),
                    data,
                    pg: Some((server, name)),
                }
            }
        }
    }

    /// A configuration for this database with a data directory of its own under `data`
    /// (each writer process gets its own spool), flushing quickly.
    pub fn config(&self, node: &str) -> StoreConfig {
        let mut c = StoreConfig::new(self.url.clone(), self.data.path().join(node));
        c.node = node.into();
        c.flush_interval_ms = 20;
        c.retry_interval_ms = 200;
        c.db_timeout_ms = 2_000;
        c
    }

    pub async fn open(&self, node: &str) -> Store {
        Store::open(self.config(node)).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.pg {
            psql(
                server,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// Runs each test body on SQLite and on PostgreSQL: `both! { async fn name(db) { ... } }`
/// makes `sqlite::name` and `postgres::name`, each with `db: TestDb` fresh.
#[macro_export]
macro_rules! both {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $db = common::TestDb::new(common::Kind::Sqlite);
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let $db = common::TestDb::new(common::Kind::Postgres);
                    $body
                }
            )*
        }
    };
}

/// A message record with the fields searches look at.
pub fn message(
    node: &str,
    at: i64,
    ip: &str,
    mail_from: &str,
    from: &str,
    rcpt: &[&str],
    action: &str,
    reasons: &[&str],
) -> MessageRecord {
    let id = new_id();
    MessageRecord {
        queue_id: Some(format!("Q{}", &id[24..])),
        message_id: Some(format!("{id}@{}", node)),
        id,
        received_at: at,
        node: node.into(),
        listener: "inbound".into(),
        client_ip: Some(ip.parse().unwrap()),
        client_port: Some(40000),
        helo: Some("client.example".into()),
        mail_from: Some(mail_from.into()),
        recipients: rcpt.iter().map(|r| r.to_string()).collect(),
        from: Some(from.into()),
        subject: Some("hello".into()),
        size: 1234,
        action: action.into(),
        reasons: reasons.iter().map(|r| r.to_string()).collect(),
        reply: Some("250 2.0.0 queued".into()),
        ..Default::default()
    }
}

/// A private PostgreSQL server (initdb into a temporary directory, a free loopback port) that a
/// test may stop and start without disturbing the machine's shared one. Removed on drop.
pub struct PrivatePg {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePg {
    pub fn start() -> PrivatePg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let port = unspoof_testkit::free_port();
        let dir = std::env::temp_dir().join(format!("unspoof-private-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // initdb refuses to run as root: run the server as the postgres user then.
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres", dir.to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the private PostgreSQL directory");
        }
        let pg = PrivatePg {
            dir,
            port,
            bin,
            as_postgres,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.ctl_start();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let data = self.data();
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    pub fn ctl_stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
