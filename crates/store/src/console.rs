//! The web console's part of the store (`unspoof-console`): its accounts, the record of what
//! people did through it, and the aggregates of its overview page. Schema:
//! `migrations/*/0018_console.sql`.
//!
//! The store only keeps and counts; who may do what is the console's decision.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::{Db, bind_all, on};
use crate::query::{Query, Val};
use crate::record::QuarantineStatus;
use crate::{Store, StoreError};

/// A console account. `scope` holds domains for a domain administrator and addresses for a
/// recipient (empty for an administrator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleAccount {
    pub name: String,
    /// Argon2 PHC string.
    #[serde(skip_serializing)]
    pub password_hash: String,
    /// `administrator`, `domain_administrator` or `recipient`.
    pub role: String,
    pub scope: Vec<String>,
    pub created_at: i64,
    pub disabled: bool,
}

/// One thing a person did through the console.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleAction {
    pub id: String,
    pub at: i64,
    /// The account name (for a refused login: the name that was tried).
    pub actor: String,
    /// `login`, `login_refused`, `logout`, `release`, `release_failed`, `delete`, ...
    pub action: String,
    /// A quarantine id or a message record id.
    pub target: Option<String>,
    /// The client's address.
    pub client: Option<String>,
    pub detail: Option<String>,
}

/// The overview page's numbers over one period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// (start of the bucket, action, messages), ordered by time.
    pub per_bucket: Vec<(i64, String, i64)>,
    /// (reason code, messages), most first.
    pub top_reasons: Vec<(String, i64)>,
    /// (From domain, messages quarantined or rejected), most first.
    pub top_forged_domains: Vec<(String, i64)>,
    /// (client address, messages quarantined or rejected), most first.
    pub top_sources: Vec<(String, i64)>,
    /// Messages held in the quarantine now, and their bytes.
    pub held: i64,
    pub held_bytes: i64,
}

/// Most rows of each "top" list of the overview.
pub const OVERVIEW_TOP: i64 = 10;

fn scope_words(s: String) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// `WHERE a` + `b` → `WHERE a AND b`; no clause → `WHERE b`.
fn and(clause: &str, cond: &str) -> String {
    if clause.is_empty() {
        format!("WHERE {cond}")
    } else {
        format!("{clause} AND {cond}")
    }
}

impl Store {
    /// The account with this name, disabled or not.
    pub async fn console_account(&self, name: &str) -> Result<Option<ConsoleAccount>, StoreError> {
        let sql = "SELECT name, password_hash, role, scope, created_at, disabled \
                   FROM console_accounts WHERE name = $1";
        on!(&self.inner.db, p => {
            let row = sqlx::query(sql).bind(name).fetch_optional(p).await?;
            Ok(match row {
                Some(r) => Some(ConsoleAccount {
                    name: r.try_get("name")?,
                    password_hash: r.try_get("password_hash")?,
                    role: r.try_get("role")?,
                    scope: scope_words(r.try_get("scope")?),
                    created_at: r.try_get("created_at")?,
                    disabled: r.try_get::<i64, _>("disabled")? != 0,
                }),
                None => None,
            })
        })
    }

    /// Every account, by name.
    pub async fn console_accounts(&self) -> Result<Vec<ConsoleAccount>, StoreError> {
        let sql = "SELECT name, password_hash, role, scope, created_at, disabled \
                   FROM console_accounts ORDER BY name";
        on!(&self.inner.db, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(ConsoleAccount {
                        name: r.try_get("name")?,
                        password_hash: r.try_get("password_hash")?,
                        role: r.try_get("role")?,
                        scope: scope_words(r.try_get("scope")?),
                        created_at: r.try_get("created_at")?,
                        disabled: r.try_get::<i64, _>("disabled")? != 0,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Creates the account, or replaces the one with the same name.
    pub async fn console_account_put(&self, a: &ConsoleAccount) -> Result<(), StoreError> {
        let sql = "INSERT INTO console_accounts \
                   (name, password_hash, role, scope, created_at, disabled) \
                   VALUES ($1, $2, $3, $4, $5, $6) \
                   ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash, \
                   role = excluded.role, scope = excluded.scope, disabled = excluded.disabled";
        on!(&self.inner.db, p => {
            sqlx::query(sql)
                .bind(&a.name)
                .bind(&a.password_hash)
                .bind(&a.role)
                .bind(a.scope.join(" "))
                .bind(a.created_at)
                .bind(i64::from(a.disabled))
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Removes an account; false when there was none.
    pub async fn console_account_remove(&self, name: &str) -> Result<bool, StoreError> {
        let done = on!(&self.inner.db, p => {
            sqlx::query("DELETE FROM console_accounts WHERE name = $1")
                .bind(name)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Records an action.
    pub async fn console_action_put(&self, a: &ConsoleAction) -> Result<(), StoreError> {
        let sql = "INSERT INTO console_actions (id, at, actor, action, target, client, detail) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
        on!(&self.inner.db, p => {
            sqlx::query(sql)
                .bind(&a.id)
                .bind(a.at)
                .bind(&a.actor)
                .bind(&a.action)
                .bind(&a.target)
                .bind(&a.client)
                .bind(&a.detail)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Recorded actions, newest first; only those on `target` when given.
    pub async fn console_actions(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ConsoleAction>, StoreError> {
        let cols = "id, at, actor, action, target, client, detail";
        let (sql, vals) = match target {
            Some(t) => (
                format!(
                    "SELECT {cols} FROM console_actions WHERE target = $1 \
                     ORDER BY at DESC, id DESC LIMIT $2"
                ),
                vec![Val::S(t.into()), Val::I(i64::from(limit))],
            ),
            None => (
                format!("SELECT {cols} FROM console_actions ORDER BY at DESC, id DESC LIMIT $1"),
                vec![Val::I(i64::from(limit))],
            ),
        };
        on!(&self.inner.db, p => {
            let rows = bind_all!(sqlx::query(&sql), vals).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(ConsoleAction {
                        id: r.try_get("id")?,
                        at: r.try_get("at")?,
                        actor: r.try_get("actor")?,
                        action: r.try_get("action")?,
                        target: r.try_get("target")?,
                        client: r.try_get("client")?,
                        detail: r.try_get("detail")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// The status of each of these quarantine ids that exists (without reading the messages).
    pub async fn quarantine_states(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, QuarantineStatus)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, status FROM quarantine WHERE id IN ({})",
            marks.join(", ")
        );
        let vals: Vec<Val> = ids.iter().map(|i| Val::S(i.clone())).collect();
        on!(&self.inner.db, p => {
            let rows = bind_all!(sqlx::query(&sql), vals).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let status: String = r.try_get("status")?;
                if let Some(s) = QuarantineStatus::parse(&status) {
                    out.push((r.try_get("id")?, s));
                }
            }
            Ok(out)
        })
    }

    /// The overview over `[since, until)` in buckets of `bucket_secs`, limited to the records
    /// `visible_to` (see [`Query::visible_to`]; empty: everything).
    pub async fn console_overview(
        &self,
        since: i64,
        until: i64,
        bucket_secs: i64,
        visible_to: &[String],
    ) -> Result<Overview, StoreError> {
        let q = Query {
            since: Some(since),
            until: Some(until),
            visible_to: visible_to.to_vec(),
            ..Default::default()
        };
        let (clause, vals) = q.where_clause();
        let n = vals.len();
        let bucket = bucket_secs.max(1);
        let per_bucket = format!(
            "SELECT (m.received_at / ${b}) * ${b} AS t, m.action AS action, COUNT(*) AS n \
             FROM messages m {clause} GROUP BY 1, 2 ORDER BY 1, 2",
            b = n + 1
        );
        let top_reasons = format!(
            "SELECT x.code AS k, COUNT(*) AS n FROM message_reason x \
             JOIN messages m ON m.id = x.message {clause} \
             GROUP BY x.code ORDER BY 2 DESC, 1 LIMIT {OVERVIEW_TOP}"
        );
        let bad = and(&clause, "m.action IN ('quarantine', 'reject')");
        let top_domains = format!(
            "SELECT m.from_domain AS k, COUNT(*) AS n FROM messages m \
             {} GROUP BY m.from_domain ORDER BY 2 DESC, 1 LIMIT {OVERVIEW_TOP}",
            and(&bad, "m.from_domain IS NOT NULL")
        );
        let top_sources = format!(
            "SELECT m.client_ip AS k, COUNT(*) AS n FROM messages m \
             {} GROUP BY m.client_ip ORDER BY 2 DESC, 1 LIMIT {OVERVIEW_TOP}",
            and(&bad, "m.client_ip IS NOT NULL")
        );
        // The quarantine as it stands now: not limited to the period.
        let held_q = Query {
            visible_to: visible_to.to_vec(),
            ..Default::default()
        };
        let (held_clause, held_vals) = held_q.where_clause();
        let held = if visible_to.is_empty() {
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS b FROM quarantine \
             WHERE status = 'held'"
                .to_string()
        } else {
            format!(
                "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(q.size), 0) AS BIGINT) AS b FROM quarantine q \
                 WHERE q.status = 'held' AND q.id IN (SELECT m.stored_at FROM messages m {})",
                and(&held_clause, "m.action = 'quarantine'")
            )
        };
        let mut out = Overview::default();
        on!(&self.inner.db, p => {
            let mut with_bucket = vals.clone();
            with_bucket.push(Val::I(bucket));
            for r in bind_all!(sqlx::query(&per_bucket), with_bucket).fetch_all(p).await? {
                out.per_bucket.push((r.try_get("t")?, r.try_get("action")?, r.try_get("n")?));
            }
            for (sql, into) in [
                (&top_reasons, &mut out.top_reasons),
                (&top_domains, &mut out.top_forged_domains),
                (&top_sources, &mut out.top_sources),
            ] {
                for r in bind_all!(sqlx::query(sql), vals.clone()).fetch_all(p).await? {
                    into.push((r.try_get("k")?, r.try_get("n")?));
                }
            }
            let r = bind_all!(sqlx::query(&held), held_vals).fetch_one(p).await?;
            out.held = r.try_get("n")?;
            out.held_bytes = r.try_get("b")?;
        });
        Ok(out)
    }
}
