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

/// The rollups' unit of time (`overview_hours`).
const HOUR: i64 = 3_600;

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
    ///
    /// Seeing everything, with buckets of whole hours, the whole hours of the period come from
    /// the hourly rollups (`overview_hours`, migrations/*/0021; docs/store.md, "Rollups") and
    /// only the partial hours at either end from the records; otherwise everything from the
    /// records.
    pub async fn console_overview(
        &self,
        since: i64,
        until: i64,
        bucket_secs: i64,
        visible_to: &[String],
    ) -> Result<Overview, StoreError> {
        let bucket = bucket_secs.max(1);
        // The whole hours inside the period.
        let first_hour = (since + HOUR - 1).div_euclid(HOUR) * HOUR;
        let end_hour = until.div_euclid(HOUR) * HOUR;
        let mut out = if visible_to.is_empty() && bucket % HOUR == 0 && first_hour < end_hour {
            self.overview_from_hours(since, until, first_hour, end_hour, bucket)
                .await?
        } else {
            self.overview_from_records(since, until, bucket, visible_to)
                .await?
        };
        let (held, held_bytes) = self.held(visible_to).await?;
        out.held = held;
        out.held_bytes = held_bytes;
        Ok(out)
    }

    /// The overview's counts read from the records (every row of the period).
    async fn overview_from_records(
        &self,
        since: i64,
        until: i64,
        bucket: i64,
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
        let per_bucket = format!(
            "SELECT (m.received_at / ${b}) * ${b} AS t, m.action AS action, COUNT(*) AS n \
             FROM messages m {clause} GROUP BY 1, 2 ORDER BY 1, 2",
            b = n + 1
        );
        // Seeing everything, the period's reason codes come from message_reason alone (its
        // received_at is the message's), read from the (received_at, code) index.
        let top_reasons = if visible_to.is_empty() {
            format!(
                "SELECT x.code AS k, COUNT(*) AS n FROM message_reason x \
                 WHERE x.received_at >= $1 AND x.received_at < $2 \
                 GROUP BY x.code ORDER BY 2 DESC, 1 LIMIT {OVERVIEW_TOP}"
            )
        } else {
            format!(
                "SELECT x.code AS k, COUNT(*) AS n FROM message_reason x \
                 JOIN messages m ON m.id = x.message {clause} \
                 GROUP BY x.code ORDER BY 2 DESC, 1 LIMIT {OVERVIEW_TOP}"
            )
        };
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
        self.overview_questions(
            &per_bucket,
            [&top_reasons, &top_domains, &top_sources],
            vals,
            bucket,
        )
        .await
    }

    /// The overview's counts over everything: the hours `[first_hour, end_hour)` from the
    /// rollups, the rest of `[since, until)` (less than an hour at each end) from the records.
    /// `bucket` is a whole number of hours, so an hour falls in one bucket.
    async fn overview_from_hours(
        &self,
        since: i64,
        until: i64,
        first_hour: i64,
        end_hour: i64,
        bucket: i64,
    ) -> Result<Overview, StoreError> {
        // $1, $2: the whole hours; $3..$6: the two partial ends, as received_at ranges.
        let ends =
            |col: &str| format!("(({col} >= $3 AND {col} < $4) OR ({col} >= $5 AND {col} < $6))");
        let vals = vec![
            Val::I(first_hour),
            Val::I(end_hour),
            Val::I(since),
            Val::I(first_hour),
            Val::I(end_hour),
            Val::I(until),
        ];
        let hours = |kind: &str| {
            format!(
                "SELECT h.hour AS t, h.k AS k, h.n AS n FROM overview_hours h \
                     WHERE h.kind = '{kind}' AND h.hour >= $1 AND h.hour < $2"
            )
        };
        let per_bucket = format!(
            "SELECT (u.t / $7) * $7 AS t, u.k AS action, CAST(SUM(u.n) AS BIGINT) AS n FROM ( \
               {} UNION ALL \
               SELECT m.received_at, m.action, 1 FROM messages m WHERE {} \
             ) u GROUP BY 1, 2 ORDER BY 1, 2",
            hours("verdict"),
            ends("m.received_at")
        );
        let top = |kind: &str, records: String| {
            format!(
                "SELECT u.k AS k, CAST(SUM(u.n) AS BIGINT) AS n FROM ( \
                   {} UNION ALL {records} \
                 ) u GROUP BY u.k ORDER BY 2 DESC, 1 LIMIT {OVERVIEW_TOP}",
                hours(kind)
            )
        };
        let top_reasons = top(
            "reason",
            format!(
                "SELECT x.received_at, x.code, 1 FROM message_reason x WHERE {}",
                ends("x.received_at")
            ),
        );
        let bad = |col: &str| {
            format!(
                "SELECT m.received_at, m.{col}, 1 FROM messages m WHERE {} \
                 AND m.action IN ('quarantine', 'reject') AND m.{col} IS NOT NULL",
                ends("m.received_at")
            )
        };
        let top_domains = top("forged", bad("from_domain"));
        let top_sources = top("source", bad("client_ip"));
        self.overview_questions(
            &per_bucket,
            [&top_reasons, &top_domains, &top_sources],
            vals,
            bucket,
        )
        .await
    }

    /// Asks the overview's four questions, however they were written: `per_bucket` (rows t,
    /// action, n; its last parameter is the bucket's width) and the top reasons, forged
    /// domains and sources (rows k, n), all on `vals`.
    async fn overview_questions(
        &self,
        per_bucket: &str,
        [top_reasons, top_domains, top_sources]: [&String; 3],
        vals: Vec<Val>,
        bucket: i64,
    ) -> Result<Overview, StoreError> {
        let mut out = Overview::default();
        on!(&self.inner.db, p => {
            let mut with_bucket = vals.clone();
            with_bucket.push(Val::I(bucket));
            for r in bind_all!(sqlx::query(per_bucket), with_bucket).fetch_all(p).await? {
                out.per_bucket.push((r.try_get("t")?, r.try_get("action")?, r.try_get("n")?));
            }
            for (sql, into) in [
                (top_reasons, &mut out.top_reasons),
                (top_domains, &mut out.top_forged_domains),
                (top_sources, &mut out.top_sources),
            ] {
                for r in bind_all!(sqlx::query(sql), vals.clone()).fetch_all(p).await? {
                    into.push((r.try_get("k")?, r.try_get("n")?));
                }
            }
        });
        Ok(out)
    }

    /// The quarantine as it stands now (not limited to a period): messages held and their
    /// bytes, among those `visible_to` (empty: all).
    async fn held(&self, visible_to: &[String]) -> Result<(i64, i64), StoreError> {
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
        on!(&self.inner.db, p => {
            let r = bind_all!(sqlx::query(&held), held_vals).fetch_one(p).await?;
            Ok((r.try_get("n")?, r.try_get("b")?))
        })
    }
}

/// Who a sender is allowed for: the scope of "release and allow the sender".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowScope {
    /// One recipient address.
    Recipient(String),
    /// Every recipient in one domain.
    Domain(String),
    /// Every recipient.
    Everyone,
}

impl AllowScope {
    fn kind(&self) -> &'static str {
        match self {
            AllowScope::Recipient(_) => "recipient",
            AllowScope::Domain(_) => "domain",
            AllowScope::Everyone => "everyone",
        }
    }

    fn value(&self) -> &str {
        match self {
            AllowScope::Recipient(s) | AllowScope::Domain(s) => s,
            AllowScope::Everyone => "",
        }
    }

    fn from_row(kind: &str, value: String) -> Option<AllowScope> {
        match kind {
            "recipient" => Some(AllowScope::Recipient(value)),
            "domain" => Some(AllowScope::Domain(value)),
            "everyone" => Some(AllowScope::Everyone),
            _ => None,
        }
    }

    /// Whether this scope covers `rcpt` (lowercase).
    pub fn covers(&self, rcpt: &str) -> bool {
        match self {
            AllowScope::Recipient(a) => a == rcpt,
            AllowScope::Domain(d) => rcpt.rsplit_once('@').is_some_and(|(_, rd)| rd == d),
            AllowScope::Everyone => true,
        }
    }
}

/// An allowed sender: mail from `sender` (a From address, or `@domain` for a whole domain) to
/// recipients in `scope` is not quarantined or tagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedSender {
    pub id: String,
    pub sender: String,
    pub scope: AllowScope,
    pub created_at: i64,
    pub created_by: String,
    /// The message record it was allowed from, if any.
    pub origin: Option<String>,
}

/// A console session as the store keeps it (the token itself is never stored: its hash is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub token_hash: String,
    pub name: String,
    pub role: String,
    pub csrf: String,
    pub started_at: i64,
    pub seen_at: i64,
}

/// A From address as the correspondent memory keys it (`"Ann" <Ann@X.example>` →
/// `ann@x.example`); a domain entry (`@x.example`) lowercased.
fn norm_sender(s: &str) -> String {
    let s = s.trim();
    if let Some(d) = s.strip_prefix('@') {
        return format!("@{}", d.trim_end_matches('.').to_ascii_lowercase());
    }
    unspoof_engine::contact::from_value_key(s)
        .unwrap_or_else(|| s.trim_matches(['<', '>']).to_ascii_lowercase())
}

impl Store {
    /// Allows `a.sender` for `a.scope` (replacing the same sender and scope).
    pub async fn allow_put(&self, a: &AllowedSender) -> Result<(), StoreError> {
        let sql = "INSERT INTO console_allow \
                   (id, sender, scope_kind, scope, created_at, created_by, origin) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) \
                   ON CONFLICT (sender, scope_kind, scope) DO UPDATE SET \
                   created_at = excluded.created_at, created_by = excluded.created_by, \
                   origin = excluded.origin";
        on!(&self.inner.db, p => {
            sqlx::query(sql)
                .bind(&a.id)
                .bind(norm_sender(&a.sender))
                .bind(a.scope.kind())
                .bind(a.scope.value().to_ascii_lowercase())
                .bind(a.created_at)
                .bind(&a.created_by)
                .bind(&a.origin)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Removes an allowed sender by id; false when there was none.
    pub async fn allow_remove(&self, id: &str) -> Result<bool, StoreError> {
        let done = on!(&self.inner.db, p => {
            sqlx::query("DELETE FROM console_allow WHERE id = $1")
                .bind(id)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    /// Every allowed sender, newest first.
    pub async fn allow_list(&self) -> Result<Vec<AllowedSender>, StoreError> {
        self.allow_rows(
            "SELECT id, sender, scope_kind, scope, created_at, created_by, origin \
                         FROM console_allow ORDER BY created_at DESC, id",
            Vec::new(),
        )
        .await
    }

    /// The entries for this From address (its own and its domain's).
    pub async fn allow_entries_for(&self, from: &str) -> Result<Vec<AllowedSender>, StoreError> {
        let from = norm_sender(from);
        let domain = match from.rsplit_once('@') {
            Some((_, d)) if !d.is_empty() => format!("@{d}"),
            _ => return Ok(Vec::new()),
        };
        self.allow_rows(
            "SELECT id, sender, scope_kind, scope, created_at, created_by, origin \
             FROM console_allow WHERE sender IN ($1, $2)",
            vec![Val::S(from), Val::S(domain)],
        )
        .await
    }

    /// Whether mail from `from` (the From address) is allowed for every one of `rcpts`.
    /// No recipients or no From: not allowed.
    pub async fn allowed(&self, from: &str, rcpts: &[String]) -> Result<bool, StoreError> {
        if rcpts.is_empty() {
            return Ok(false);
        }
        let entries = self.allow_entries_for(from).await?;
        Ok(rcpts.iter().all(|r| {
            let r = r.trim().trim_matches(['<', '>']).to_ascii_lowercase();
            entries.iter().any(|e| e.scope.covers(&r))
        }))
    }

    async fn allow_rows(
        &self,
        sql: &str,
        vals: Vec<Val>,
    ) -> Result<Vec<AllowedSender>, StoreError> {
        on!(&self.inner.db, p => {
            let rows = bind_all!(sqlx::query(sql), vals).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let kind: String = r.try_get("scope_kind")?;
                let Some(scope) = AllowScope::from_row(&kind, r.try_get("scope")?) else {
                    continue;
                };
                out.push(AllowedSender {
                    id: r.try_get("id")?,
                    sender: r.try_get("sender")?,
                    scope,
                    created_at: r.try_get("created_at")?,
                    created_by: r.try_get("created_by")?,
                    origin: r.try_get("origin")?,
                });
            }
            Ok(out)
        })
    }

    /// Keeps a new console session.
    pub async fn console_session_put(&self, s: &StoredSession) -> Result<(), StoreError> {
        let sql = "INSERT INTO console_sessions \
                   (token_hash, name, role, csrf, started_at, seen_at) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        on!(&self.inner.db, p => {
            sqlx::query(sql)
                .bind(&s.token_hash)
                .bind(&s.name)
                .bind(&s.role)
                .bind(&s.csrf)
                .bind(s.started_at)
                .bind(s.seen_at)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The session with this token hash.
    pub async fn console_session(
        &self,
        token_hash: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        let sql = "SELECT token_hash, name, role, csrf, started_at, seen_at \
                   FROM console_sessions WHERE token_hash = $1";
        on!(&self.inner.db, p => {
            let row = sqlx::query(sql).bind(token_hash).fetch_optional(p).await?;
            Ok(match row {
                Some(r) => Some(StoredSession {
                    token_hash: r.try_get("token_hash")?,
                    name: r.try_get("name")?,
                    role: r.try_get("role")?,
                    csrf: r.try_get("csrf")?,
                    started_at: r.try_get("started_at")?,
                    seen_at: r.try_get("seen_at")?,
                }),
                None => None,
            })
        })
    }

    /// Marks the session used at `at`.
    pub async fn console_session_seen(&self, token_hash: &str, at: i64) -> Result<(), StoreError> {
        on!(&self.inner.db, p => {
            sqlx::query("UPDATE console_sessions SET seen_at = $1 WHERE token_hash = $2")
                .bind(at)
                .bind(token_hash)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Ends one session.
    pub async fn console_session_end(&self, token_hash: &str) -> Result<(), StoreError> {
        on!(&self.inner.db, p => {
            sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Drops sessions started before `started_before` or idle since before `seen_before`.
    pub async fn console_sessions_prune(
        &self,
        started_before: i64,
        seen_before: i64,
    ) -> Result<u64, StoreError> {
        let n = on!(&self.inner.db, p => {
            sqlx::query("DELETE FROM console_sessions WHERE started_at < $1 OR seen_at < $2")
                .bind(started_before)
                .bind(seen_before)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n)
    }

    /// When `recipient`'s last digest was sent and the time it covered up to.
    pub async fn digest_last(&self, recipient: &str) -> Result<Option<(i64, i64)>, StoreError> {
        on!(&self.inner.db, p => {
            let row = sqlx::query("SELECT sent_at, until_at FROM console_digests WHERE recipient = $1")
                .bind(recipient)
                .fetch_optional(p)
                .await?;
            Ok(match row {
                Some(r) => Some((r.try_get("sent_at")?, r.try_get("until_at")?)),
                None => None,
            })
        })
    }

    /// Records that `recipient` was sent a digest covering up to `until`.
    pub async fn digest_mark(
        &self,
        recipient: &str,
        sent_at: i64,
        until: i64,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO console_digests (recipient, sent_at, until_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (recipient) DO UPDATE SET sent_at = excluded.sent_at, \
                   until_at = excluded.until_at";
        on!(&self.inner.db, p => {
            sqlx::query(sql)
                .bind(recipient)
                .bind(sent_at)
                .bind(until)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}
