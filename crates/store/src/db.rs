//! The two databases behind one set of SQL statements.
//!
//! Every statement is written once, with `$n` placeholders (PostgreSQL's form, which SQLite also
//! reads), and [`on!`] expands the code that runs it once per backend, so each arm is typed for
//! its driver. The schema differs only in type names (`migrations/sqlite`, `migrations/postgres`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::query::{Query, Val, ip_key};
use crate::record::{
    JsonText, MessageRecord, NewQuarantine, QuarantineEntry, QuarantineStatus, SessionRecord,
    domain_of,
};

type BoxFut<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'a>>;

/// Runs `$body` with `$p` bound to the pool of whichever backend `$db` is.
macro_rules! on {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Sqlite($p) => $body,
            Db::Postgres($p) => $body,
        }
    };
}

/// Binds every value of `$vals` to `$q`, in order.
macro_rules! bind_all {
    ($q:expr, $vals:expr) => {{
        let mut q = $q;
        for v in $vals {
            q = match v {
                Val::I(x) => q.bind(x),
                Val::OI(x) => q.bind(x),
                Val::S(x) => q.bind(x),
                Val::OS(x) => q.bind(x),
                Val::B(x) => q.bind(x),
            };
        }
        q
    }};
}

// The DMARC report tables (`crate::dmarc`) and the console's (`crate::console`) run their
// statements the same way.
pub(crate) use {bind_all, on};

#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Rows per multi-row INSERT. Statements come in a few shapes only (this many rows, and for
/// the rest the powers of two below it: 32, 16, ... 1 rows), so each is prepared once per
/// connection and then reused from sqlx's statement cache; a statement per batch size would
/// be parsed anew every time, which costs more than the rows (measured: 500 messages in
/// 150 ms with 200-row statements of varying size). The powers of two keep a batch to a few
/// statements (75 records: 50 + 16 + 8 + 1) where one row at a time made it 26, each a
/// round trip to SQLite's thread. 32 columns × 50 rows stays far below both databases'
/// limits on bound values.
const ROWS_PER_STATEMENT: usize = 50;

/// Schema versions, applied in order; the version table is `unspoof_schema`.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "sessions, messages, recipients, reasons, contacts, quarantine",
        include_str!("../migrations/sqlite/0001_init.sql"),
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        3,
        "DMARC aggregate reports received and sent (crate::dmarc)",
        include_str!("../migrations/sqlite/0003_dmarc.sql"),
        include_str!("../migrations/postgres/0003_dmarc.sql"),
    ),
    (
        18,
        "the web console's accounts and actions (crate::console)",
        include_str!("../migrations/sqlite/0018_console.sql"),
        include_str!("../migrations/postgres/0018_console.sql"),
    ),
    (
        19,
        "the console's allowed senders, sessions and digests (crate::console)",
        include_str!("../migrations/sqlite/0019_console_allow.sql"),
        include_str!("../migrations/postgres/0019_console_allow.sql"),
    ),
    (
        20,
        "signing keys per sender, trust on first use (unspoof_engine::signed)",
        include_str!("../migrations/sqlite/0020_signing_keys.sql"),
        include_str!("../migrations/postgres/0020_signing_keys.sql"),
    ),
    (
        21,
        "the console overview's hourly rollups, kept by triggers (crate::console)",
        include_str!("../migrations/sqlite/0021_overview_hours.sql"),
        include_str!("../migrations/postgres/0021_overview_hours.sql"),
    ),
    (
        22,
        "fewer indexes on messages: only those a query reads (issue 13)",
        include_str!("../migrations/sqlite/0022_fewer_message_indexes.sql"),
        include_str!("../migrations/postgres/0022_fewer_message_indexes.sql"),
    ),
    (
        23,
        "SQLite's hourly rollups counted once per batch, not by row triggers (issue 13)",
        include_str!("../migrations/sqlite/0023_overview_hours_per_batch.sql"),
        include_str!("../migrations/postgres/0023_overview_hours_per_batch.sql"),
    ),
];

/// The advisory lock that serialises migrations across a fleet sharing one PostgreSQL.
const PG_MIGRATION_LOCK: i64 = 0x756e_7370_6f6f_66; // "unspoof"

impl Db {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Opens a pool. PostgreSQL pools connect lazily, so a fleet member starts (and spools)
    /// while its database is down; SQLite opens (and creates) the file now.
    pub(crate) async fn connect(
        url: &str,
        max_connections: u32,
        timeout: Duration,
    ) -> Result<Db, sqlx::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?.application_name("unspoof");
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(timeout)
                .connect_lazy_with(opts);
            Ok(Db::Postgres(pool))
        } else {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                // Space of deleted records goes back to the file system at `prune`.
                .pragma("auto_vacuum", "INCREMENTAL")
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit (the quarantine before 250) survives power loss, not only a
                // crash of the process.
                .synchronous(SqliteSynchronous::Full)
                // Statement journals in memory, not in temporary files. Every multi-row INSERT
                // of a batch (in its transaction, on tables with triggers) keeps a statement
                // journal of the pages it changes; past 64 KiB SQLite spills it into a
                // temporary file, created, written and deleted per batch: replaying the gateway
                // bench's 15 500 records, 92 000 of the 272 000 `pwrite`s and a file per batch
                // (docs/benchmarks.md, "storecpu"). A statement's journal holds at most the
                // pages it changes (a batch's: a few hundred KiB); `Db::delete_before`, whose
                // DELETEs can change a whole day of pages, goes back to files for its own.
                .pragma("temp_store", "MEMORY")
                .busy_timeout(timeout);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(timeout)
                // No ping before each use: a SQLite connection is a thread of this process
                // over a local file, not a socket that can go stale, and the ping was a round
                // trip to that thread (two wake-ups) before every query and batch; a broken
                // connection still fails the statement itself. (sqlx pings again when a
                // connection goes back to the pool, which it does not let us turn off.)
                .test_before_acquire(false)
                .connect_with(opts)
                .await?;
            Ok(Db::Sqlite(pool))
        }
    }

    /// Applies every migration not yet applied. Safe to run from many processes at once.
    async fn migrate_inner(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(PG_MIGRATION_LOCK)
                    .execute(&mut *conn)
                    .await?;
                let result = pg_apply(&mut conn).await;
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(PG_MIGRATION_LOCK)
                    .execute(&mut *conn)
                    .await;
                result
            }
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                sqlite_apply(&mut conn).await
            }
        }
    }

    /// Checks that the database answers. For PostgreSQL this is one fresh connection (a
    /// refused connection fails at once, where the pool would retry until its timeout).
    async fn ping_inner(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Postgres(p) => {
                use sqlx::{ConnectOptions, Connection};
                let conn = p.connect_options().connect().await?;
                let _ = conn.close().await;
                Ok(())
            }
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
        }
    }

    // The writer task is spawned, so its futures must be `Send` for every lifetime; sqlx 0.8's
    // executors only prove that at one concrete lifetime. Boxing at these four entry points
    // fixes the lifetime (the usual workaround for "implementation of `Executor` is not
    // general enough").

    /// `contacts`: the messages' [`contact_rows`], when the caller made them already (they
    /// are made when a record is logged, for the store's memory of contacts; reading the From
    /// field's address costs more than the rest of the record's rows).
    pub(crate) fn write_batch<'a>(
        &'a self,
        sessions: &'a [SessionRecord],
        messages: &'a [MessageRecord],
        contacts: Option<&'a [Vec<Val>]>,
        quarantines: &'a [NewQuarantine],
    ) -> BoxFut<'a, ()> {
        Box::pin(self.write_batch_inner(sessions, messages, contacts, quarantines))
    }

    pub(crate) fn migrate(&self) -> BoxFut<'_, ()> {
        Box::pin(self.migrate_inner())
    }

    pub(crate) fn ping(&self) -> BoxFut<'_, ()> {
        Box::pin(self.ping_inner())
    }

    pub(crate) fn quarantine_put<'a>(&'a self, q: &'a NewQuarantine) -> BoxFut<'a, ()> {
        Box::pin(self.quarantine_put_inner(q))
    }

    pub(crate) async fn close(&self) {
        on!(self, p => p.close().await)
    }

    /// Writes sessions and messages (with their recipients, reasons and first contacts) and
    /// quarantined messages in one transaction. A record or quarantined message whose id is
    /// already stored is skipped, so replays are harmless.
    async fn write_batch_inner(
        &self,
        sessions: &[SessionRecord],
        messages: &[MessageRecord],
        contacts: Option<&[Vec<Val>]>,
        quarantines: &[NewQuarantine],
    ) -> Result<(), sqlx::Error> {
        let mut stmts: Vec<(String, Vec<Val>)> = Vec::new();
        // One row per session: PostgreSQL refuses an upsert that meets the same key twice
        // in one statement. The ended record wins over the open one of the same session.
        let mut latest: Vec<&SessionRecord> = Vec::with_capacity(sessions.len());
        let mut at: std::collections::HashMap<&str, usize> = Default::default();
        for s in sessions {
            match at.get(s.id.as_str()) {
                Some(&i) if latest[i].ended_at.is_none() || s.ended_at.is_some() => latest[i] = s,
                Some(_) => {}
                None => {
                    at.insert(&s.id, latest.len());
                    latest.push(s);
                }
            }
        }
        insert_chunked(
            self.backend(),
            &mut stmts,
            "sessions",
            SESSION_COLUMNS,
            latest.into_iter().map(session_values).collect(),
            "id",
        );
        let message_rows: Vec<Vec<Val>> = messages.iter().map(message_values).collect();
        let reason_rows: Vec<Vec<Val>> = messages.iter().flat_map(reason_rows).collect();
        // SQLite's rollups, counted here (see `Rollup`); PostgreSQL's by its triggers.
        let mut rollup = match self {
            Db::Sqlite(_) if !messages.is_empty() => Some(Rollup::of(&message_rows, &reason_rows)),
            _ => None,
        };
        let first_message_stmt = stmts.len();
        insert_chunked(
            self.backend(),
            &mut stmts,
            "messages",
            MESSAGE_COLUMNS,
            message_rows,
            "id",
        );
        let message_stmts = first_message_stmt..stmts.len();
        insert_chunked(
            self.backend(),
            &mut stmts,
            "message_rcpt",
            &["message", "address", "domain", "received_at"],
            messages.iter().flat_map(rcpt_rows).collect(),
            "message, address",
        );
        let first_reason_stmt = stmts.len();
        insert_chunked(
            self.backend(),
            &mut stmts,
            "message_reason",
            &["message", "code", "received_at"],
            reason_rows,
            "message, code",
        );
        let reason_stmts = first_reason_stmt..stmts.len();
        insert_chunked(
            self.backend(),
            &mut stmts,
            "contacts",
            &["sender_domain", "recipient", "first_seen"],
            match contacts {
                Some(rows) => rows.to_vec(),
                None => messages.iter().flat_map(contact_rows).collect(),
            },
            "sender_domain, recipient",
        );
        // One statement each: a quarantined message can be tens of megabytes.
        for q in quarantines {
            stmts.push(quarantine_insert(self.backend(), q));
        }
        if stmts.is_empty() {
            return Ok(());
        }
        match self {
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for (i, (sql, vals)) in stmts.into_iter().enumerate() {
                    let done = bind_all!(sqlx::query(&sql), vals).execute(&mut *tx).await?;
                    if let Some(rollup) = rollup.as_mut() {
                        if message_stmts.contains(&i) {
                            rollup.messages.inserted(&done);
                        } else if reason_stmts.contains(&i) {
                            rollup.reasons.inserted(&done);
                        }
                    }
                }
                if let Some(rollup) = rollup {
                    rollup.add(&mut tx).await?;
                }
                tx.commit().await
            }
            // The rollups are counted by statement triggers (migration 0021).
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                for (sql, vals) in stmts {
                    bind_all!(sqlx::query(&sql), vals).execute(&mut *tx).await?;
                }
                tx.commit().await
            }
        }
    }

    pub(crate) async fn search(&self, q: &Query) -> Result<Vec<MessageRecord>, sqlx::Error> {
        let (sql, vals) = search_sql(q);
        on!(self, p => {
            let rows = bind_all!(sqlx::query(&sql), vals).fetch_all(p).await?;
            rows.iter().map(message_from_row).collect()
        })
    }

    pub(crate) async fn count(&self, q: &Query) -> Result<i64, sqlx::Error> {
        let (clause, vals) = q.where_clause();
        let sql = format!("SELECT COUNT(*) FROM messages m {clause}");
        on!(self, p => {
            let row = bind_all!(sqlx::query(&sql), vals).fetch_one(p).await?;
            row.try_get::<i64, _>(0)
        })
    }

    pub(crate) async fn message(&self, id: &str) -> Result<Option<MessageRecord>, sqlx::Error> {
        let sql =
            format!("SELECT {LIST_COLUMNS}, m.dns, m.analysis FROM messages m WHERE m.id = $1");
        on!(self, p => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(p).await?;
            row.as_ref().map(|r| {
                let mut m = message_from_row(r)?;
                m.dns = json_col(r, "dns")?;
                m.analysis = get::<_, Option<String>>(r, "analysis")?.map(JsonText);
                Ok(m)
            }).transpose()
        })
    }

    pub(crate) async fn session(&self, id: &str) -> Result<Option<SessionRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE id = $1",
            SESSION_COLUMNS.join(", ")
        );
        on!(self, p => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(p).await?;
            row.as_ref().map(session_from_row).transpose()
        })
    }

    pub(crate) async fn has_seen(
        &self,
        sender_domain: &str,
        recipient: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let domain = sender_domain
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        on!(self, p => {
            let row = match recipient {
                Some(r) => sqlx::query(
                    "SELECT 1 FROM contacts WHERE sender_domain = $1 AND recipient = $2",
                )
                .bind(domain)
                .bind(r.trim().to_ascii_lowercase())
                .fetch_optional(p)
                .await?,
                None => sqlx::query("SELECT 1 FROM contacts WHERE sender_domain = $1 LIMIT 1")
                    .bind(domain)
                    .fetch_optional(p)
                    .await?,
            };
            Ok(row.is_some())
        })
    }

    /// The key fingerprints `address` (lower case) validly signed with, oldest first.
    pub(crate) async fn signing_keys(&self, address: &str) -> Result<Vec<String>, sqlx::Error> {
        on!(self, p => {
            let rows = sqlx::query(
                "SELECT fingerprint FROM signing_keys WHERE address = $1 ORDER BY first_seen",
            )
            .bind(address)
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
        })
    }

    /// Records `fingerprint` for `address` (once; the first time is kept).
    pub(crate) async fn remember_signing_key(
        &self,
        address: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        on!(self, p => {
            sqlx::query(
                "INSERT INTO signing_keys (address, fingerprint, first_seen) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(address)
            .bind(fingerprint)
            .bind(now)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Whether a message with this Message-ID (normalised, without brackets) was sent by us:
    /// recorded from a submission client (a SASL login, or the gateway's submission
    /// listener). Backscatter's question (`unspoof_engine::bounce`).
    pub(crate) async fn sent_message(&self, message_id: &str) -> Result<bool, sqlx::Error> {
        on!(self, p => {
            let row = sqlx::query(SENT_MESSAGE)
            .bind(message_id)
            .fetch_optional(p)
            .await?;
            Ok(row.is_some())
        })
    }

    /// Inserts a quarantined message and commits. An id already stored is kept as it was.
    async fn quarantine_put_inner(&self, q: &NewQuarantine) -> Result<(), sqlx::Error> {
        let (sql, vals) = quarantine_insert(self.backend(), q);
        on!(self, p => bind_all!(sqlx::query(&sql), vals).execute(p).await.map(|_| ()))
    }

    pub(crate) async fn quarantine_list(
        &self,
        status: Option<QuarantineStatus>,
        limit: u32,
    ) -> Result<Vec<QuarantineEntry>, sqlx::Error> {
        let cols = QUARANTINE_LIST_COLUMNS;
        let (sql, vals) = match status {
            Some(s) => (
                format!(
                    "SELECT {cols} FROM quarantine WHERE status = $1 \
                     ORDER BY quarantined_at DESC, id DESC LIMIT $2"
                ),
                vec![Val::S(s.as_str().into()), Val::I(i64::from(limit))],
            ),
            None => (
                format!(
                    "SELECT {cols} FROM quarantine ORDER BY quarantined_at DESC, id DESC LIMIT $1"
                ),
                vec![Val::I(i64::from(limit))],
            ),
        };
        on!(self, p => {
            let rows = bind_all!(sqlx::query(&sql), vals).fetch_all(p).await?;
            rows.iter().map(|r| quarantine_from_row(r, false)).collect()
        })
    }

    pub(crate) async fn quarantine_get(
        &self,
        id: &str,
    ) -> Result<Option<QuarantineEntry>, sqlx::Error> {
        let sql = format!("SELECT {QUARANTINE_LIST_COLUMNS}, raw FROM quarantine WHERE id = $1");
        on!(self, p => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(p).await?;
            row.as_ref().map(|r| quarantine_from_row(r, true)).transpose()
        })
    }

    /// Moves an entry from one of `from` to `to`, recording who and when (and the result).
    /// Returns false when the entry was not in one of `from` (someone else acted first).
    pub(crate) async fn quarantine_transition(
        &self,
        id: &str,
        from: &[QuarantineStatus],
        to: QuarantineStatus,
        actor: &str,
        at: i64,
        result: Option<&str>,
        clear_raw: bool,
    ) -> Result<bool, sqlx::Error> {
        let mut vals = vec![
            Val::S(to.as_str().into()),
            Val::S(actor.into()),
            Val::I(at),
            Val::OS(result.map(str::to_string)),
            Val::S(id.into()),
        ];
        let mut placeholders = Vec::new();
        for s in from {
            vals.push(Val::S(s.as_str().into()));
            placeholders.push(format!("${}", vals.len()));
        }
        let raw = if clear_raw {
            match self.backend() {
                Backend::Sqlite => ", raw = X''",
                Backend::Postgres => ", raw = ''::bytea",
            }
        } else {
            ""
        };
        let sql = format!(
            "UPDATE quarantine SET status = $1, actor = $2, acted_at = $3, result = $4{raw} \
             WHERE id = $5 AND status IN ({})",
            placeholders.join(", ")
        );
        on!(self, p => {
            let done = bind_all!(sqlx::query(&sql), vals).execute(p).await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Records that `recipients` have now received mail from `sender_domain` (a release).
    pub(crate) async fn add_contacts(&self, rows: Vec<Vec<Val>>) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let (sql, vals) = insert(
            self.backend(),
            "contacts",
            &["sender_domain", "recipient", "first_seen"],
            rows.into_iter(),
            "sender_domain, recipient",
        );
        on!(self, p => bind_all!(sqlx::query(&sql), vals).execute(p).await.map(|_| ()))
    }

    /// Deletes records received before `cutoff` (Unix time), in every table but `contacts`.
    /// Returns (messages, sessions, quarantine entries) deleted.
    pub(crate) async fn delete_before(&self, cutoff: i64) -> Result<(u64, u64, u64), sqlx::Error> {
        let mut n = [0u64; DELETE_BEFORE.len()];
        if let Db::Sqlite(p) = self {
            // Its statement journals in temporary files (see `temp_store` in `Db::connect`):
            // a DELETE of a day of records can change tens of megabytes of pages.
            let mut conn = p.acquire().await?;
            sqlx::query("PRAGMA temp_store = FILE")
                .execute(&mut *conn)
                .await?;
            let done = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for (i, sql) in DELETE_BEFORE.iter().enumerate() {
                    n[i] = sqlx::query(sql)
                        .bind(cutoff)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await
            }
            .await;
            sqlx::query("PRAGMA temp_store = MEMORY")
                .execute(&mut *conn)
                .await?;
            done?;
        } else {
            on!(self, p => {
                let mut tx = p.begin().await?;
                for (i, sql) in DELETE_BEFORE.iter().enumerate() {
                    n[i] = sqlx::query(sql).bind(cutoff).execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
            });
        }
        Ok((n[2], n[3], n[4]))
    }

    /// Bytes the store accounts for: record sizes plus quarantined message sizes.
    pub(crate) async fn total_bytes(&self) -> Result<i64, sqlx::Error> {
        on!(self, p => {
            let row = sqlx::query(
                "SELECT CAST(COALESCE((SELECT SUM(bytes) FROM messages), 0) AS BIGINT), \
                        CAST(COALESCE((SELECT SUM(bytes) FROM sessions), 0) AS BIGINT), \
                        CAST(COALESCE((SELECT SUM(size) FROM quarantine), 0) AS BIGINT)",
            )
            .fetch_one(p)
            .await?;
            Ok(row.try_get::<i64, _>(0)? + row.try_get::<i64, _>(1)? + row.try_get::<i64, _>(2)?)
        })
    }

    /// The newest time at which the records from that time back must go for the rest to fit in
    /// `max_bytes`; `None` when everything fits.
    pub(crate) async fn size_cutoff(&self, max_bytes: i64) -> Result<Option<i64>, sqlx::Error> {
        on!(self, p => {
            let row = sqlx::query(
                "SELECT t FROM ( \
                   SELECT t, SUM(b) OVER (ORDER BY t DESC ROWS UNBOUNDED PRECEDING) AS running \
                   FROM ( \
                     SELECT received_at AS t, bytes AS b FROM messages \
                     UNION ALL SELECT started_at, bytes FROM sessions \
                     UNION ALL SELECT quarantined_at, size FROM quarantine \
                   ) u \
                 ) w WHERE running > $1 ORDER BY t DESC LIMIT 1",
            )
            .bind(max_bytes)
            .fetch_optional(p)
            .await?;
            row.map(|r| r.try_get::<i64, _>(0)).transpose()
        })
    }

    /// Refreshes the planner's statistics. Without them, after a bulk load, both planners
    /// take `ORDER BY received_at LIMIT n` as the cheap path and walk the time index past a
    /// million rows to find one Message-ID (measured: 340 ms instead of 0.1 ms on PostgreSQL).
    pub(crate) async fn analyze(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Postgres(p) => {
                sqlx::query("ANALYZE sessions, messages, message_rcpt, message_reason, contacts, quarantine")
                    .execute(p)
                    .await?;
            }
            Db::Sqlite(p) => {
                sqlx::query("ANALYZE").execute(p).await?;
            }
        }
        Ok(())
    }

    /// Gives freed pages back to the file system (SQLite); PostgreSQL's autovacuum does its own.
    pub(crate) async fn reclaim(&self) -> Result<(), sqlx::Error> {
        if let Db::Sqlite(p) = self {
            sqlx::query("PRAGMA incremental_vacuum").execute(p).await?;
        }
        Ok(())
    }
}

/// The SQL of [`Db::search`] and its values. A search with a reason code walks that code's
/// rows of `message_reason` newest first (the index `(code, received_at, message)`), not every
/// match of it: a common code has tens of thousands of matches, and a page wants fifty. The
/// order is the same either way: a reason row's `received_at` is its message's.
fn search_sql(q: &Query) -> (String, Vec<Val>) {
    if let Some(code) = &q.reason {
        let rest = Query {
            reason: None,
            ..q.clone()
        };
        let (clause, mut vals) = rest.where_clause();
        vals.push(Val::S(code.to_string()));
        let code_mark = vals.len();
        let clause = if clause.is_empty() {
            format!("WHERE x.code = ${code_mark}")
        } else {
            format!("{clause} AND x.code = ${code_mark}")
        };
        vals.push(Val::I(q.limit()));
        vals.push(Val::I(i64::from(q.offset.unwrap_or(0))));
        let sql = format!(
            "SELECT {LIST_COLUMNS} FROM message_reason x JOIN messages m ON m.id = x.message \
             {clause} ORDER BY x.received_at DESC, x.message DESC LIMIT ${} OFFSET ${}",
            vals.len() - 1,
            vals.len()
        );
        return (sql, vals);
    }
    let (clause, mut vals) = q.where_clause();
    let window = q.limit() + i64::from(q.offset.unwrap_or(0));
    // A client network matches thousands of records, scattered over the time index: read in
    // the (ip_key, received_at) index, SQLite fetched and sorted every match to return a page.
    // The cut, the newest `window`-th match's time, is read from that index alone; every
    // record of the page is at or after it, so the page reads only those.
    let cut = match &q.client {
        Some(net) if net.prefix_len() < net.max_prefix_len() => {
            vals.push(Val::I(window - 1));
            vals.push(Val::I(i64::MIN));
            format!(
                " AND m.received_at >= COALESCE((SELECT m.received_at FROM messages m \
                 {clause} ORDER BY m.received_at DESC LIMIT 1 OFFSET ${}), ${})",
                vals.len() - 1,
                vals.len()
            )
        }
        _ => String::new(),
    };
    let clause = format!("{clause}{cut}");
    vals.push(Val::I(q.limit()));
    vals.push(Val::I(i64::from(q.offset.unwrap_or(0))));
    let sql = format!(
        "SELECT {LIST_COLUMNS} FROM messages m {clause} \
         ORDER BY m.received_at DESC, m.id DESC LIMIT ${} OFFSET ${}",
        vals.len() - 1,
        vals.len()
    );
    (sql, vals)
}

/// [`Db::delete_before`]'s statements, in one transaction: the side tables first. It returns
/// the rows deleted by the last three (messages, sessions, quarantined messages).
const DELETE_BEFORE: [&str; 5] = [
    "DELETE FROM message_rcpt WHERE received_at < $1",
    "DELETE FROM message_reason WHERE received_at < $1",
    "DELETE FROM messages WHERE received_at < $1",
    "DELETE FROM sessions WHERE started_at < $1",
    "DELETE FROM quarantine WHERE quarantined_at < $1",
];

/// SQLite's rollups (`overview_hours`, docs/store.md "Rollups") of one batch, counted by
/// [`Db::write_batch`] in the batch's transaction since migration 0023 dropped the row triggers
/// that counted each insert. Only the rows the transaction actually inserted count: a replayed
/// record (`ON CONFLICT DO NOTHING`) inserts none.
///
/// Which rows those are comes from SQLite itself. `messages` and `message_reason` are rowid
/// tables (not `WITHOUT ROWID`, no `INTEGER PRIMARY KEY` or `AUTOINCREMENT`), and SQLite gives
/// a new row of such a table the largest rowid + 1 (it picks at random only once the largest is
/// 2^63 - 1, which no store of records reaches); nothing else inserts into them while the
/// batch's transaction holds the write lock. So the rows a batch inserted into one of them have
/// consecutive rowids ending at the last one inserted, and the statements' counts of inserted
/// rows (`rows_affected`) and last rowid (`last_insert_rowid`) give the first.
struct Rollup {
    /// The batch's counts by (kind, hour, key), made from the rows it inserts (the values bound
    /// to the INSERTs), for when every one of them was inserted.
    counts: std::collections::BTreeMap<(&'static str, i64, String), i64>,
    messages: Inserted,
    reasons: Inserted,
}

/// The rows of one table a batch sends, and what its INSERTs report.
struct Inserted {
    sent: u64,
    inserted: u64,
    last_rowid: i64,
}

impl Inserted {
    fn new(sent: usize) -> Inserted {
        Inserted {
            sent: sent as u64,
            inserted: 0,
            last_rowid: 0,
        }
    }

    fn inserted(&mut self, done: &sqlx::sqlite::SqliteQueryResult) {
        if done.rows_affected() > 0 {
            self.inserted += done.rows_affected();
            self.last_rowid = done.last_insert_rowid();
        }
    }

    /// The rowid below this batch's rows (each of which is above it); none inserted, the last.
    fn mark(&self) -> i64 {
        if self.inserted == 0 {
            i64::MAX
        } else {
            self.last_rowid - self.inserted as i64
        }
    }
}

impl Rollup {
    /// Migration 0021's four kinds, counted from the rows the batch sends: `messages`' (in
    /// [`MESSAGE_COLUMNS`] order) and `message_reason`'s (message, code, received_at).
    fn of(message_rows: &[Vec<Val>], reason_rows: &[Vec<Val>]) -> Rollup {
        let col = |name: &str| MESSAGE_COLUMNS.iter().position(|c| *c == name).unwrap();
        let (at, action, from_domain, client_ip) = (
            col("received_at"),
            col("action"),
            col("from_domain"),
            col("client_ip"),
        );
        let int = |v: &Val| match v {
            Val::I(x) => *x,
            _ => unreachable!("received_at is an integer"),
        };
        let text = |v: &Val| match v {
            Val::S(s) => Some(s.clone()),
            Val::OS(s) => s.clone(),
            _ => None,
        };
        let mut counts = std::collections::BTreeMap::new();
        let mut count = |kind, at: i64, key: Option<String>| {
            if let Some(key) = key {
                *counts.entry((kind, (at / 3600) * 3600, key)).or_insert(0) += 1;
            }
        };
        for row in message_rows {
            let (t, verdict) = (int(&row[at]), text(&row[action]));
            let held = matches!(verdict.as_deref(), Some("quarantine" | "reject"));
            if held {
                count("forged", t, text(&row[from_domain]));
                count("source", t, text(&row[client_ip]));
            }
            count("verdict", t, verdict);
        }
        for row in reason_rows {
            count("reason", int(&row[2]), text(&row[1]));
        }
        Rollup {
            counts,
            messages: Inserted::new(message_rows.len()),
            reasons: Inserted::new(reason_rows.len()),
        }
    }

    /// Adds the batch's counts, in its transaction, with one statement: when every row sent
    /// was inserted (a batch of new records), the counts made from them; otherwise (a replay
    /// in the batch) SQLite's count of the rows above each table's mark.
    async fn add(self, tx: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
        let all = |t: &Inserted| t.inserted == t.sent;
        if all(&self.messages) && all(&self.reasons) {
            let rows: Vec<(&str, i64, &str, i64)> = self
                .counts
                .iter()
                .map(|((kind, hour, k), n)| (*kind, *hour, k.as_str(), *n))
                .collect();
            let json = serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(e.into()))?;
            sqlx::query(ROLLUP_ADD_COUNTS)
                .bind(json)
                .execute(tx)
                .await?;
        } else {
            sqlx::query(ROLLUP_ADD_INSERTED)
                .bind(self.messages.mark())
                .bind(self.reasons.mark())
                .execute(tx)
                .await?;
        }
        Ok(())
    }
}

/// [`Rollup::add`] for a batch of new records: its counts, a JSON array of
/// `[kind, hour, key, n]`, added in one statement (one bound value, so one prepared statement
/// whatever the batch's size; `->>` is SQLite 3.38's, sqlx bundles 3.46). The `WHERE true` is
/// SQLite's: an upsert's `SELECT` needs a `WHERE` for its `ON CONFLICT` to parse.
const ROLLUP_ADD_COUNTS: &str = "INSERT INTO overview_hours (kind, hour, k, n) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each($1) WHERE true \
     ON CONFLICT (kind, hour, k) DO UPDATE SET n = n + excluded.n";

/// [`Rollup::add`] for a batch with replays: the counts of the rows above the marks (`$1` for
/// `messages`, `$2` for `message_reason`), one row per (kind, hour, key) of migration 0021's
/// definitions, added in one statement.
const ROLLUP_ADD_INSERTED: &str = "INSERT INTO overview_hours (kind, hour, k, n) \
     SELECT kind, hour, k, n FROM ( \
       SELECT 'verdict' AS kind, (received_at / 3600) * 3600 AS hour, action AS k, \
              COUNT(*) AS n FROM messages WHERE rowid > $1 GROUP BY 2, 3 \
       UNION ALL \
       SELECT 'forged', (received_at / 3600) * 3600, from_domain, COUNT(*) FROM messages \
       WHERE rowid > $1 AND action IN ('quarantine', 'reject') AND from_domain IS NOT NULL \
       GROUP BY 2, 3 \
       UNION ALL \
       SELECT 'source', (received_at / 3600) * 3600, client_ip, COUNT(*) FROM messages \
       WHERE rowid > $1 AND action IN ('quarantine', 'reject') AND client_ip IS NOT NULL \
       GROUP BY 2, 3 \
       UNION ALL \
       SELECT 'reason', (received_at / 3600) * 3600, code, COUNT(*) FROM message_reason \
       WHERE rowid > $2 GROUP BY 2, 3 \
     ) WHERE true \
     ON CONFLICT (kind, hour, k) DO UPDATE SET n = n + excluded.n";

/// [`Db::sent_message`]'s question.
const SENT_MESSAGE: &str = "SELECT 1 FROM messages WHERE message_id = $1 \
     AND (auth_user IS NOT NULL OR listener = 'submission') LIMIT 1";

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS unspoof_schema \
     (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL, description TEXT NOT NULL)";

/// Applies the PostgreSQL migrations, each in its own transaction; the caller holds the
/// advisory lock.
async fn pg_apply(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(VERSION_TABLE).execute(&mut *conn).await?;
    for &(version, description, _, sql) in MIGRATIONS {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM unspoof_schema WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
        if done.is_some() {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::Executor::execute(&mut *tx, sql).await?;
        sqlx::query("INSERT INTO unspoof_schema VALUES ($1, $2, $3)")
            .bind(version)
            .bind(crate::record::now())
            .bind(description)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Applies the SQLite migrations. BEGIN IMMEDIATE takes the write lock first: a second
/// process waits (busy_timeout), then sees the version and skips.
async fn sqlite_apply(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(VERSION_TABLE).execute(&mut *conn).await?;
    for &(version, description, sql, _) in MIGRATIONS {
        sqlx::Executor::execute(&mut *conn, "BEGIN IMMEDIATE").await?;
        let result = sqlite_apply_one(conn, version, description, sql).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        sqlx::Executor::execute(&mut *conn, end).await?;
        result?;
    }
    Ok(())
}

async fn sqlite_apply_one(
    conn: &mut sqlx::SqliteConnection,
    version: i64,
    description: &str,
    sql: &str,
) -> Result<(), sqlx::Error> {
    let done: Option<i64> =
        sqlx::query_scalar("SELECT version FROM unspoof_schema WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *conn)
            .await?;
    if done.is_none() {
        sqlx::Executor::execute(&mut *conn, sql).await?;
        sqlx::query("INSERT INTO unspoof_schema VALUES ($1, $2, $3)")
            .bind(version)
            .bind(crate::record::now())
            .bind(description)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Inserts `rows` as statements of [`ROWS_PER_STATEMENT`] rows, then of the largest power of
/// two that fits what is left.
fn insert_chunked(
    backend: Backend,
    stmts: &mut Vec<(String, Vec<Val>)>,
    table: &str,
    cols: &[&str],
    rows: Vec<Vec<Val>>,
    key: &str,
) {
    let mut rows = rows.into_iter();
    let mut left = rows.len();
    while left > 0 {
        let n = statement_rows(left);
        stmts.push(insert(backend, table, cols, rows.by_ref().take(n), key));
        left -= n;
    }
}

/// The rows of the next statement when `left` rows are left (see [`ROWS_PER_STATEMENT`]).
fn statement_rows(left: usize) -> usize {
    if left >= ROWS_PER_STATEMENT {
        ROWS_PER_STATEMENT
    } else {
        1 << left.ilog2()
    }
}

/// What an insert does with a row whose `key` is already stored: nothing (a replay), except
/// for a session, whose record first comes as it stands (`ended_at` NULL, written with its
/// first message before the reply) and later as it ended: the ended one replaces the open
/// one, never the other way round.
fn conflict(table: &str, key: &str) -> String {
    if table == "sessions" {
        let set: Vec<String> = SESSION_COLUMNS
            .iter()
            .filter(|c| **c != "id")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            "({key}) DO UPDATE SET {} WHERE sessions.ended_at IS NULL",
            set.join(", ")
        )
    } else {
        format!("({key}) DO NOTHING")
    }
}

/// `INSERT INTO table (cols) VALUES (...), (...) ON CONFLICT (key) DO NOTHING`, a placeholder
/// for every value: `$1, $2, ...` for PostgreSQL, plain `?` for SQLite. SQLite reads `$n` too,
/// but sqlx then looks each named parameter up with `sqlite3_bind_parameter_name`, a linear
/// scan of the statement's names, so binding a 50-row INSERT (1,600 values) was quadratic:
/// measured in a busy gateway, 9% of all its CPU in that one function. Unnamed `?` parameters
/// bind in order without a lookup.
fn insert(
    backend: Backend,
    table: &str,
    cols: &[&str],
    rows: impl Iterator<Item = Vec<Val>>,
    key: &str,
) -> (String, Vec<Val>) {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", cols.join(", "));
    let mut vals = Vec::new();
    for (i, row) in rows.enumerate() {
        debug_assert_eq!(row.len(), cols.len());
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (j, v) in row.into_iter().enumerate() {
            vals.push(v);
            if j > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => sql.push_str(&format!("${}", vals.len())),
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT ");
    sql.push_str(&conflict(table, key));
    (sql, vals)
}

const SESSION_COLUMNS: &[&str] = &[
    "id",
    "started_at",
    "ended_at",
    "node",
    "listener",
    "client_ip",
    "ip_key",
    "client_port",
    "reverse_dns",
    "helo",
    "tls",
    "auth_user",
    "messages",
    "outcome",
    "bytes",
];

fn session_values(s: &SessionRecord) -> Vec<Val> {
    let bytes = 120
        + s.id.len()
        + s.node.len()
        + s.reverse_dns.as_ref().map_or(0, String::len)
        + s.helo.as_ref().map_or(0, String::len)
        + s.tls.as_ref().map_or(0, String::len);
    vec![
        Val::S(s.id.clone()),
        Val::I(s.started_at),
        Val::OI(s.ended_at),
        Val::S(s.node.clone()),
        Val::S(s.listener.clone()),
        Val::OS(s.client_ip.map(|ip| ip.to_string())),
        Val::OS(s.client_ip.map(ip_key)),
        Val::OI(s.client_port.map(i64::from)),
        Val::OS(s.reverse_dns.clone()),
        Val::OS(s.helo.clone()),
        Val::OS(s.tls.clone()),
        Val::OS(s.auth_user.clone()),
        Val::I(i64::from(s.messages)),
        Val::S(s.outcome.clone()),
        Val::I(bytes as i64),
    ]
}

const MESSAGE_COLUMNS: &[&str] = &[
    "id",
    "session_id",
    "received_at",
    "node",
    "listener",
    "queue_id",
    "message_id",
    "client_ip",
    "ip_key",
    "client_port",
    "reverse_dns",
    "helo",
    "tls",
    "auth_user",
    "mail_from",
    "mail_from_domain",
    "from_header",
    "from_domain",
    "subject",
    "recipients",
    "size",
    "action",
    "reasons",
    "reply",
    "downstream_reply",
    "stored_at",
    "latency_us",
    "auth_summary",
    "trace_summary",
    "dns",
    "analysis",
    "bytes",
];

/// The columns a search returns: everything but the two large JSON ones.
const LIST_COLUMNS: &str = "m.id, m.session_id, m.received_at, m.node, m.listener, m.queue_id, \
    m.message_id, m.client_ip, m.client_port, m.reverse_dns, m.helo, m.tls, m.auth_user, \
    m.mail_from, m.from_header, m.subject, m.recipients, m.size, m.action, m.reasons, m.reply, \
    m.downstream_reply, m.stored_at, m.latency_us, m.auth_summary, m.trace_summary";

fn message_values(m: &MessageRecord) -> Vec<Val> {
    let recipients = serde_json::to_string(&m.recipients).unwrap_or_else(|_| "[]".into());
    let dns = m.dns.as_ref().map(|v| v.to_string());
    let analysis = m.analysis.as_ref().map(|v| v.as_str().to_string());
    let text = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    let bytes = 200
        + recipients.len()
        + text(&dns)
        + text(&analysis)
        + text(&m.subject)
        + text(&m.reply)
        + text(&m.downstream_reply)
        + text(&m.auth_summary)
        + text(&m.trace_summary)
        + m.reasons.iter().map(|r| r.len() + 60).sum::<usize>()
        + m.recipients.len() * 60;
    vec![
        Val::S(m.id.clone()),
        Val::OS(m.session_id.clone()),
        Val::I(m.received_at),
        Val::S(m.node.clone()),
        Val::S(m.listener.clone()),
        Val::OS(m.queue_id.clone()),
        Val::OS(
            m.message_id
                .as_deref()
                .map(crate::record::normalize_message_id),
        ),
        Val::OS(m.client_ip.map(|ip| ip.to_string())),
        Val::OS(m.client_ip.map(ip_key)),
        Val::OI(m.client_port.map(i64::from)),
        Val::OS(m.reverse_dns.clone()),
        Val::OS(m.helo.clone()),
        Val::OS(m.tls.clone()),
        Val::OS(m.auth_user.clone()),
        Val::OS(m.mail_from.clone()),
        Val::OS(m.mail_from.as_deref().and_then(domain_of)),
        Val::OS(m.from.clone()),
        Val::OS(m.from.as_deref().and_then(domain_of)),
        Val::OS(m.subject.clone()),
        Val::S(recipients),
        Val::I(m.size as i64),
        Val::S(m.action.clone()),
        Val::S(m.reasons.join(" ")),
        Val::OS(m.reply.clone()),
        Val::OS(m.downstream_reply.clone()),
        Val::OS(m.stored_at.clone()),
        Val::OI(m.latency_us.map(|l| l as i64)),
        Val::OS(m.auth_summary.clone()),
        Val::OS(m.trace_summary.clone()),
        Val::OS(dns),
        Val::OS(analysis),
        Val::I(bytes as i64),
    ]
}

fn rcpt_rows(m: &MessageRecord) -> Vec<Vec<Val>> {
    let mut seen = std::collections::BTreeSet::new();
    m.recipients
        .iter()
        .map(|r| r.trim().to_ascii_lowercase())
        .filter(|r| seen.insert(r.clone()))
        .map(|r| {
            vec![
                Val::S(m.id.clone()),
                Val::S(r.clone()),
                Val::S(domain_of(&r).unwrap_or_default()),
                Val::I(m.received_at),
            ]
        })
        .collect()
}

fn reason_rows(m: &MessageRecord) -> Vec<Vec<Val>> {
    let mut seen = std::collections::BTreeSet::new();
    m.reasons
        .iter()
        .filter(|c| seen.insert(c.as_str()))
        .map(|c| {
            vec![
                Val::S(m.id.clone()),
                Val::S(c.clone()),
                Val::I(m.received_at),
            ]
        })
        .collect()
}

/// First-contact pairs a message establishes (see `Store::has_seen`): mail that was delivered
/// (`accept`, `tag`) makes its From domain known to each recipient; mail our own users send
/// (`submission`) makes each recipient's domain known to the sender.
pub(crate) fn contact_rows(m: &MessageRecord) -> Vec<Vec<Val>> {
    let mut out = Vec::new();
    if m.listener == "submission" {
        if let Some(sender) = m.mail_from.as_deref().filter(|s| s.contains('@')) {
            let mut seen = std::collections::BTreeSet::new();
            for r in &m.recipients {
                if let Some(d) = domain_of(r).filter(|d| seen.insert(d.clone())) {
                    out.push(vec![
                        Val::S(d),
                        Val::S(sender.trim().to_ascii_lowercase()),
                        Val::I(m.received_at),
                    ]);
                }
            }
        }
        return out;
    }
    if m.action != "accept" && m.action != "tag" {
        return out;
    }
    if let Some(domain) = contact_domain(m.from.as_deref(), m.mail_from.as_deref()) {
        out.extend(contact_pairs(&domain, &m.recipients, m.received_at));
    }
    out.extend(correspondent_row(m.from.as_deref(), m.received_at));
    out
}

/// The correspondent memory's row for delivered mail from `from` (the From field's value): the
/// address, lower case, with the recipient key `ANY_RECIPIENT` ("has this address written to
/// the site before?", `unspoof_engine::contact::known_sender`). Domains never hold an `@`, so
/// these rows never answer a first-contact question about a domain.
pub(crate) fn correspondent_row(from: Option<&str>, at: i64) -> Option<Vec<Val>> {
    let address = unspoof_engine::contact::from_value_key(from?)?;
    Some(vec![
        Val::S(address),
        Val::S(unspoof_engine::contact::ANY_RECIPIENT.to_string()),
        Val::I(at),
    ])
}

/// A (sender domain, recipient) pair as the `contacts` table keys it.
pub(crate) fn contact_key(domain: &str, recipient: &str) -> (String, String) {
    (
        domain.trim().trim_end_matches('.').to_ascii_lowercase(),
        recipient.trim().to_ascii_lowercase(),
    )
}

/// The memory keys of `contacts` rows.
pub(crate) fn row_keys(rows: &[Vec<Val>]) -> Vec<(String, String)> {
    rows.iter()
        .filter_map(|row| match (row.first(), row.get(1)) {
            (Some(Val::S(d)), Some(Val::S(r))) => Some(contact_key(d, r)),
            _ => None,
        })
        .collect()
}

/// The sender domain first contact is keyed by: the From header's (what the reader sees and
/// DMARC aligns to), else the MAIL FROM domain.
pub(crate) fn contact_domain(from: Option<&str>, mail_from: Option<&str>) -> Option<String> {
    from.and_then(domain_of)
        .or_else(|| mail_from.and_then(domain_of))
}

pub(crate) fn contact_pairs(domain: &str, recipients: &[String], at: i64) -> Vec<Vec<Val>> {
    let mut seen = std::collections::BTreeSet::new();
    recipients
        .iter()
        .map(|r| r.trim().to_ascii_lowercase())
        .filter(|r| seen.insert(r.clone()))
        .map(|r| vec![Val::S(domain.to_string()), Val::S(r), Val::I(at)])
        .collect()
}

const QUARANTINE_COLUMNS: &[&str] = &[
    "id",
    "message_record",
    "quarantined_at",
    "node",
    "queue_id",
    "message_id",
    "mail_from",
    "recipients",
    "from_header",
    "subject",
    "reasons",
    "size",
    "raw",
    "status",
];

const QUARANTINE_LIST_COLUMNS: &str = "id, message_record, quarantined_at, node, queue_id, \
    message_id, mail_from, recipients, from_header, subject, reasons, size, status, actor, \
    acted_at, result";

/// The insert of one quarantined message (skipped when its id is stored).
fn quarantine_insert(backend: Backend, q: &NewQuarantine) -> (String, Vec<Val>) {
    insert(
        backend,
        "quarantine",
        QUARANTINE_COLUMNS,
        std::iter::once(quarantine_values(q)),
        "id",
    )
}

fn quarantine_values(q: &NewQuarantine) -> Vec<Val> {
    vec![
        Val::S(q.id.clone()),
        Val::OS(q.message_record.clone()),
        Val::I(q.quarantined_at),
        Val::S(q.node.clone()),
        Val::OS(q.queue_id.clone()),
        Val::OS(
            q.message_id
                .as_deref()
                .map(crate::record::normalize_message_id),
        ),
        Val::OS(q.mail_from.clone()),
        Val::S(serde_json::to_string(&q.recipients).unwrap_or_else(|_| "[]".into())),
        Val::OS(q.from.clone()),
        Val::OS(q.subject.clone()),
        Val::S(q.reasons.join(" ")),
        Val::I(q.raw.len() as i64),
        Val::B(q.raw.clone()),
        Val::S(QuarantineStatus::Held.as_str().into()),
    ]
}

// Row decoding, written once for both drivers.

fn get<'r, R, T>(row: &'r R, col: &str) -> Result<T, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(col)
}

fn json_col<R>(row: &R, col: &str) -> Result<Option<serde_json::Value>, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let text: Option<String> = get(row, col)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

fn words(s: String) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn list(s: String) -> Result<Vec<String>, sqlx::Error> {
    serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn ip(s: Option<String>) -> Option<std::net::IpAddr> {
    s.and_then(|s| s.parse().ok())
}

fn message_from_row<R>(row: &R) -> Result<MessageRecord, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(MessageRecord {
        id: get(row, "id")?,
        session_id: get(row, "session_id")?,
        received_at: get(row, "received_at")?,
        node: get(row, "node")?,
        listener: get(row, "listener")?,
        queue_id: get(row, "queue_id")?,
        message_id: get(row, "message_id")?,
        client_ip: ip(get(row, "client_ip")?),
        client_port: get::<_, Option<i64>>(row, "client_port")?.map(|p| p as u16),
        reverse_dns: get(row, "reverse_dns")?,
        helo: get(row, "helo")?,
        tls: get(row, "tls")?,
        auth_user: get(row, "auth_user")?,
        mail_from: get(row, "mail_from")?,
        recipients: list(get(row, "recipients")?)?,
        from: get(row, "from_header")?,
        subject: get(row, "subject")?,
        size: get::<_, i64>(row, "size")? as u64,
        action: get(row, "action")?,
        reasons: words(get(row, "reasons")?),
        reply: get(row, "reply")?,
        downstream_reply: get(row, "downstream_reply")?,
        stored_at: get(row, "stored_at")?,
        latency_us: get::<_, Option<i64>>(row, "latency_us")?.map(|l| l as u64),
        auth_summary: get(row, "auth_summary")?,
        trace_summary: get(row, "trace_summary")?,
        dns: None,
        analysis: None,
    })
}

fn session_from_row<R>(row: &R) -> Result<SessionRecord, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(SessionRecord {
        id: get(row, "id")?,
        started_at: get(row, "started_at")?,
        ended_at: get(row, "ended_at")?,
        node: get(row, "node")?,
        listener: get(row, "listener")?,
        client_ip: ip(get(row, "client_ip")?),
        client_port: get::<_, Option<i64>>(row, "client_port")?.map(|p| p as u16),
        reverse_dns: get(row, "reverse_dns")?,
        helo: get(row, "helo")?,
        tls: get(row, "tls")?,
        auth_user: get(row, "auth_user")?,
        messages: get::<_, i64>(row, "messages")? as u32,
        outcome: get(row, "outcome")?,
    })
}

fn quarantine_from_row<R>(row: &R, with_raw: bool) -> Result<QuarantineEntry, sqlx::Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let status: String = get(row, "status")?;
    Ok(QuarantineEntry {
        message: NewQuarantine {
            id: get(row, "id")?,
            message_record: get(row, "message_record")?,
            quarantined_at: get(row, "quarantined_at")?,
            node: get(row, "node")?,
            queue_id: get(row, "queue_id")?,
            message_id: get(row, "message_id")?,
            mail_from: get(row, "mail_from")?,
            recipients: list(get(row, "recipients")?)?,
            from: get(row, "from_header")?,
            subject: get(row, "subject")?,
            reasons: words(get(row, "reasons")?),
            raw: if with_raw {
                get(row, "raw")?
            } else {
                Vec::new()
            },
        },
        size: get::<_, i64>(row, "size")? as u64,
        status: QuarantineStatus::parse(&status).unwrap_or(QuarantineStatus::Held),
        actor: get(row, "actor")?,
        acted_at: get(row, "acted_at")?,
        result: get(row, "result")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch's statement journals stay in memory (`temp_store = MEMORY` on every SQLite
    /// connection: no temporary file created, written and deleted per batch), and retention's
    /// DELETEs, which can change a day of pages, use files for theirs and then give the
    /// connection back as it was.
    #[tokio::test]
    async fn statement_journals_in_memory_except_for_retention() {
        let dir = std::env::temp_dir().join(format!("unspoof-store-temp-{}", crate::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("temp.db").display());
        let db = Db::connect(&url, 1, Duration::from_secs(5)).await.unwrap();
        db.migrate().await.unwrap();
        let Db::Sqlite(pool) = &db else {
            unreachable!("a sqlite URL")
        };
        // 2 is MEMORY (0 the default, 1 FILE).
        let temp_store = || async {
            sqlx::query_scalar::<_, i64>("PRAGMA temp_store")
                .fetch_one(pool)
                .await
                .unwrap()
        };
        assert_eq!(temp_store().await, 2);
        let m = MessageRecord {
            id: crate::new_id(),
            received_at: 1_000,
            node: "mx1".into(),
            listener: "inbound".into(),
            action: "reject".into(),
            reasons: vec!["dmarc.reject".into()],
            recipients: vec!["ann@site.test".into()],
            ..Default::default()
        };
        db.write_batch(&[], std::slice::from_ref(&m), None, &[])
            .await
            .unwrap();
        assert_eq!(db.delete_before(2_000).await.unwrap(), (1, 0, 0));
        assert!(db.message(&m.id).await.unwrap().is_none());
        // One connection: the one retention used is back in memory mode.
        assert_eq!(temp_store().await, 2);
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every index on `messages` is read by one of the store's questions to it (a search by
    /// each filter, the newest first, a period, a record by id, backscatter's Message-ID): one
    /// that none reads only costs every insert (migration 0022 dropped three such). The plans
    /// are SQLite's; PostgreSQL has the same indexes.
    #[tokio::test]
    async fn every_index_on_messages_serves_a_query() {
        let dir = std::env::temp_dir().join(format!("unspoof-store-plans-{}", crate::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("plans.db").display());
        let db = Db::connect(&url, 1, Duration::from_secs(5)).await.unwrap();
        db.migrate().await.unwrap();
        let Db::Sqlite(pool) = &db else {
            unreachable!("a sqlite URL")
        };
        let searches = [
            Query::default(),
            Query {
                message_id: Some("<a@b.example>".into()),
                ..Default::default()
            },
            Query {
                queue_id: Some("4Xy1".into()),
                ..Default::default()
            },
            Query {
                client: Some("192.0.2.0/24".parse().unwrap()),
                ..Default::default()
            },
            Query {
                mail_from_domain: Some("b.example".into()),
                ..Default::default()
            },
            Query {
                from_domain: Some("b.example".into()),
                ..Default::default()
            },
            Query {
                action: Some("reject".into()),
                ..Default::default()
            },
        ];
        let mut questions: Vec<(String, Vec<Val>)> = searches.iter().map(search_sql).collect();
        let period = Query {
            since: Some(1),
            until: Some(2),
            ..Default::default()
        };
        let (clause, vals) = period.where_clause();
        questions.push((format!("SELECT COUNT(*) FROM messages m {clause}"), vals));
        questions.push((SENT_MESSAGE.into(), vec![Val::S("a@b.example".into())]));
        questions.push((
            "SELECT m.dns FROM messages m WHERE m.id = $1".into(),
            vec![Val::S("x".into())],
        ));
        let mut plans = Vec::new();
        for (sql, vals) in questions {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let rows = bind_all!(sqlx::query(&explain), vals)
                .fetch_all(pool)
                .await
                .unwrap();
            let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
            plans.push((sql, plan));
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(indexes.len() >= 7, "{indexes:?}");
        for index in &indexes {
            let reads = |step: &String| step.split_whitespace().any(|w| w == index);
            assert!(
                plans.iter().any(|(_, plan)| plan.iter().any(reads)),
                "no query reads {index}: {plans:#?}"
            );
        }
        // The search for accepts (most records) needs no index of its own.
        let (sql, vals) = search_sql(&Query {
            action: Some("accept".into()),
            ..Default::default()
        });
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let rows = bind_all!(sqlx::query(&explain), vals)
            .fetch_all(pool)
            .await
            .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
        assert!(
            plan.iter().any(|p| p.contains("messages_time_action")),
            "{plan:?}"
        );
        db.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
