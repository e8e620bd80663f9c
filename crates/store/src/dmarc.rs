//! DMARC aggregate reports (RFC 9990) in the store: the reports others sent us, the inputs that
//! could not be read (kept whole), and the reports we send (one claim per policy domain and day
//! for the whole fleet, each destination's retries, the suppression list of bouncing
//! addresses). Schema: `migrations/*/0003_dmarc.sql`.
//!
//! The store only keeps and finds; reading reports, the picture and sending are
//! `unspoof-reports`' work.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::time::timeout;

use crate::db::{Db, on};
use crate::{Store, StoreError};

/// One `<record>` of an aggregate report, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcRow {
    pub source_ip: Option<IpAddr>,
    /// Messages this row stands for.
    pub count: u64,
    /// `policy_evaluated/disposition`: none, quarantine, reject, pass (RFC 9990).
    pub disposition: String,
    /// `policy_evaluated/dkim` and `/spf`: the DMARC-aligned results, pass or fail.
    pub dmarc_dkim: String,
    pub dmarc_spf: String,
    /// `policy_evaluated/reason`: why the disposition differs from the policy.
    pub reasons: Vec<DmarcReason>,
    pub header_from: String,
    pub envelope_from: Option<String>,
    pub envelope_to: Option<String>,
    /// `auth_results/dkim`, raw (unaligned) results.
    pub dkim: Vec<DmarcDkim>,
    /// `auth_results/spf`, raw (unaligned) results.
    pub spf: Vec<DmarcSpf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcReason {
    /// forwarded, sampled_out, trusted_forwarder, mailing_list, local_policy, other,
    /// policy_test_mode.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcDkim {
    pub domain: String,
    #[serde(default)]
    pub selector: String,
    pub result: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcSpf {
    pub domain: String,
    /// `mfrom`, `helo`, or empty when the report did not say.
    #[serde(default)]
    pub scope: String,
    pub result: String,
}

/// A received aggregate report, ready to store (ids made at the source, like every record).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DmarcReport {
    pub id: String,
    /// `report_metadata/org_name`, trimmed and lowercased: part of the deduplication key.
    pub reporter: String,
    pub reporter_email: Option<String>,
    pub report_id: String,
    /// `policy_published/domain`, lowercased.
    pub domain: String,
    pub begin_at: i64,
    pub end_at: i64,
    /// `rfc9990`, `rfc7489` or `draft`.
    pub format: String,
    pub generator: Option<String>,
    /// `policy_published` as JSON.
    pub policy: serde_json::Value,
    /// `report_metadata/error`.
    pub errors: Vec<String>,
    /// Where it came from: a path, `imap://host/mailbox;UID=n`, `smtp:<queue id>`.
    pub source: String,
    pub ingested_at: i64,
    pub node: String,
    /// The report's XML, gzip'd.
    pub xml_gz: Vec<u8>,
    pub rows: Vec<DmarcRow>,
}

impl DmarcReport {
    /// Messages the report counts.
    pub fn messages(&self) -> u64 {
        self.rows.iter().map(|r| r.count).sum()
    }
}

/// An input that could not be read as a report, kept whole with the error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmarcRejected {
    /// SHA-256 of `raw`, hex: the same input is kept once.
    pub sha256: String,
    pub received_at: i64,
    pub source: String,
    pub error: String,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// What [`Store::dmarc_put`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DmarcPut {
    /// For each report given, in order: stored now (`true`) or a duplicate.
    #[serde(skip)]
    pub report_new: Vec<bool>,
    /// For each rejected input given, in order: kept now (`true`) or kept before.
    #[serde(skip)]
    pub rejected_new: Vec<bool>,
    /// Reports stored now.
    pub stored: u64,
    /// Reports that were already stored (same reporter, report id, domain and date range).
    pub duplicates: u64,
    /// Rejected inputs kept now.
    pub rejected: u64,
    /// Rejected inputs that were already kept.
    pub rejected_again: u64,
}

/// A stored row with its report's key, for the picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmarcStoredRow {
    pub report: String,
    pub reporter: String,
    pub domain: String,
    pub begin_at: i64,
    pub end_at: i64,
    #[serde(flatten)]
    pub row: DmarcRow,
}

/// A stored report without its rows and XML, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmarcReportInfo {
    pub id: String,
    pub reporter: String,
    pub reporter_email: Option<String>,
    pub report_id: String,
    pub domain: String,
    pub begin_at: i64,
    pub end_at: i64,
    pub format: String,
    pub messages: i64,
    pub source: String,
}

/// A verdict in the store as report generation needs it: the message's envelope, its action
/// and the engine's analysis (JSON text, schema `unspoof.analysis/1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcVerdict {
    pub id: String,
    pub received_at: i64,
    pub listener: String,
    pub client_ip: Option<String>,
    pub mail_from: Option<String>,
    pub from_domain: Option<String>,
    pub recipients: Vec<String>,
    pub action: String,
    pub analysis: Option<String>,
}

/// A report we send: the fleet-wide claim on (policy domain, day).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmarcOutgoing {
    pub domain: String,
    pub day: i64,
    pub node: String,
    pub claimed_at: i64,
    /// `claimed` (being built), `queued` (destinations known), `sent`, `failed`, `empty`.
    pub status: String,
    pub report_id: String,
    pub detail: Option<String>,
}

/// One destination of a report we send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmarcDelivery {
    pub domain: String,
    pub day: i64,
    pub address: String,
    /// `pending`, `sent`, `failed` (gave up), `suppressed`.
    pub status: String,
    pub attempts: i64,
    pub next_try: i64,
    pub last_error: Option<String>,
    /// The whole report mail(s), as sent: parts joined by [`MESSAGE_SEPARATOR`].
    #[serde(skip)]
    pub message: Vec<u8>,
}

/// Between the mails of a split report in [`DmarcDelivery::message`]: a line no RFC 5322
/// message we build contains (our mails are 7-bit, base64 bodies).
pub const MESSAGE_SEPARATOR: &[u8] = b"\r\n\x00unspoof-next-message\x00\r\n";

/// A suppressed report address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmarcSuppressed {
    pub address: String,
    pub since: i64,
    pub until: i64,
    pub reason: String,
}

fn json_err(e: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

macro_rules! stored_row {
    ($r:expr) => {{
        let r = $r;
        let ip: Option<String> = r.try_get("source_ip")?;
        let reasons: String = r.try_get("reasons")?;
        let dkim: String = r.try_get("dkim")?;
        let spf: String = r.try_get("spf")?;
        DmarcStoredRow {
            report: r.try_get("report")?,
            reporter: r.try_get("reporter")?,
            domain: r.try_get("domain")?,
            begin_at: r.try_get("begin_at")?,
            end_at: r.try_get("end_at")?,
            row: DmarcRow {
                source_ip: ip.and_then(|s| s.parse().ok()),
                count: r.try_get::<i64, _>("count")?.max(0) as u64,
                disposition: r.try_get("disposition")?,
                dmarc_dkim: r.try_get("dmarc_dkim")?,
                dmarc_spf: r.try_get("dmarc_spf")?,
                reasons: serde_json::from_str(&reasons).map_err(json_err)?,
                header_from: r.try_get("header_from")?,
                envelope_from: r.try_get("envelope_from")?,
                envelope_to: r.try_get("envelope_to")?,
                dkim: serde_json::from_str(&dkim).map_err(json_err)?,
                spf: serde_json::from_str(&spf).map_err(json_err)?,
            },
        }
    }};
}

macro_rules! delivery_row {
    ($r:expr) => {{
        let r = $r;
        DmarcDelivery {
            domain: r.try_get("domain")?,
            day: r.try_get("day")?,
            address: r.try_get("address")?,
            status: r.try_get("status")?,
            attempts: r.try_get("attempts")?,
            next_try: r.try_get("next_try")?,
            last_error: r.try_get("last_error")?,
            message: r
                .try_get::<Option<Vec<u8>>, _>("message")?
                .unwrap_or_default(),
        }
    }};
}

const REPORT_COLUMNS: &str = "id, reporter, reporter_email, report_id, domain, begin_at, \
     end_at, format, generator, policy, errors, messages, source, ingested_at, node, xml_gz";

const ROW_COLUMNS: &str = "report, n, domain, reporter, begin_at, end_at, source_ip, count, \
     disposition, dmarc_dkim, dmarc_spf, reasons, header_from, envelope_from, envelope_to, dkim, \
     spf";

const INSERT_REJECTED: &str = "INSERT INTO dmarc_rejected (sha256, received_at, source, error, \
     raw) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

/// Reports (or rows) per multi-row INSERT. One statement per report and per row cost a round
/// trip to sqlx's SQLite worker thread each (measured: most of the ingest's CPU went to thread
/// switches); full statements share one prepared form. 17 columns x 50 rows stays far below
/// both databases' limits on bound values.
const ROWS_PER_INSERT: usize = 50;

/// `($1, ..., $cols), ($cols+1, ...), ...` for `rows` rows, or with `?` for SQLite: SQLite
/// looks a numbered parameter's name up by a linear scan, and sqlx asks for every parameter's
/// name, so `$n` cost time quadratic in the parameters (measured: a quarter of the ingest's
/// CPU with 850 parameters a statement); anonymous ones are bound in order without a lookup.
fn placeholders(cols: usize, rows: usize, numbered: bool) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            if numbered {
                s.push('$');
                s.push_str(&(r * cols + c + 1).to_string());
            } else {
                s.push('?');
            }
        }
        s.push(')');
    }
    s
}

macro_rules! bind_report {
    ($q:expr, $r:expr) => {{
        let r = $r;
        $q.bind(&r.id)
            .bind(&r.reporter)
            .bind(&r.reporter_email)
            .bind(&r.report_id)
            .bind(&r.domain)
            .bind(r.begin_at)
            .bind(r.end_at)
            .bind(&r.format)
            .bind(&r.generator)
            .bind(r.policy.to_string())
            .bind((!r.errors.is_empty()).then(|| to_json(&r.errors)))
            .bind(r.messages().min(i64::MAX as u64) as i64)
            .bind(&r.source)
            .bind(r.ingested_at)
            .bind(&r.node)
            .bind(&r.xml_gz)
    }};
}

macro_rules! bind_row {
    ($q:expr, $r:expr, $n:expr, $row:expr) => {{
        let (r, row) = ($r, $row);
        $q.bind(&r.id)
            .bind($n as i64)
            .bind(&r.domain)
            .bind(&r.reporter)
            .bind(r.begin_at)
            .bind(r.end_at)
            .bind(row.source_ip.map(|ip| ip.to_string()))
            .bind(row.count.min(i64::MAX as u64) as i64)
            .bind(&row.disposition)
            .bind(&row.dmarc_dkim)
            .bind(&row.dmarc_spf)
            .bind(to_json(&row.reasons))
            .bind(&row.header_from)
            .bind(&row.envelope_from)
            .bind(&row.envelope_to)
            .bind(to_json(&row.dkim))
            .bind(to_json(&row.spf))
    }};
}

impl Db {
    async fn dmarc_put(
        &self,
        reports: &[DmarcReport],
        rejected: &[DmarcRejected],
    ) -> Result<DmarcPut, sqlx::Error> {
        let mut put = DmarcPut::default();
        let numbered = self.backend() == crate::Backend::Postgres;
        on!(self, p => {
            let mut tx = p.begin().await?;
            let mut new_ids = std::collections::HashSet::new();
            for chunk in reports.chunks(ROWS_PER_INSERT) {
                let sql = format!(
                    "INSERT INTO dmarc_reports ({REPORT_COLUMNS}) VALUES {} \
                     ON CONFLICT DO NOTHING RETURNING id",
                    placeholders(16, chunk.len(), numbered)
                );
                let mut q = sqlx::query(&sql);
                for r in chunk {
                    q = bind_report!(q, r);
                }
                for row in q.fetch_all(&mut *tx).await? {
                    new_ids.insert(row.try_get::<String, _>(0)?);
                }
            }
            // Rows only of reports stored now: a duplicate adds nothing.
            let mut rows = Vec::new();
            for r in reports {
                let new = new_ids.contains(&r.id);
                put.report_new.push(new);
                if new {
                    put.stored += 1;
                    rows.extend(r.rows.iter().enumerate().map(|(n, row)| (r, n, row)));
                } else {
                    put.duplicates += 1;
                }
            }
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let sql = format!(
                    "INSERT INTO dmarc_rows ({ROW_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING",
                    placeholders(17, chunk.len(), numbered)
                );
                let mut q = sqlx::query(&sql);
                for (r, n, row) in chunk {
                    q = bind_row!(q, *r, *n, *row);
                }
                q.execute(&mut *tx).await?;
            }
            for j in rejected {
                let done = sqlx::query(INSERT_REJECTED)
                    .bind(&j.sha256)
                    .bind(j.received_at)
                    .bind(&j.source)
                    .bind(&j.error)
                    .bind(&j.raw)
                    .execute(&mut *tx)
                    .await?;
                put.rejected_new.push(done.rows_affected() == 1);
                if done.rows_affected() == 0 {
                    put.rejected_again += 1;
                } else {
                    put.rejected += 1;
                }
            }
            tx.commit().await?;
        });
        Ok(put)
    }
}

impl Store {
    /// Stores received reports and rejected inputs in one transaction: all of them, or (on
    /// error) none. A report already stored (same reporter, report id, policy domain and date
    /// range) and an input already rejected (same bytes) are counted and skipped.
    pub async fn dmarc_put(
        &self,
        reports: &[DmarcReport],
        rejected: &[DmarcRejected],
    ) -> Result<DmarcPut, StoreError> {
        let shared = &self.inner.shared;
        let db = &self.inner.db;
        let _turn = shared.write_turn(db.backend()).await;
        let wait = self.inner.config.db_timeout() * 4;
        match timeout(wait, db.dmarc_put(reports, rejected)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout(wait)),
        }
    }

    /// Stored rows whose policy domain is `domain` or one of its subdomains, or whose header
    /// From is, for reports whose date range overlaps `[since, until)`.
    pub async fn dmarc_rows(
        &self,
        domain: &str,
        since: i64,
        until: i64,
    ) -> Result<Vec<DmarcStoredRow>, StoreError> {
        let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let sub = format!("%.{}", like_escape(&d));
        let sql = "SELECT report, reporter, domain, begin_at, end_at, source_ip, count, \
                   disposition, dmarc_dkim, dmarc_spf, reasons, header_from, envelope_from, \
                   envelope_to, dkim, spf FROM dmarc_rows \
                   WHERE (domain = $1 OR domain LIKE $2 ESCAPE '\\' OR header_from = $1 \
                          OR header_from LIKE $2 ESCAPE '\\') \
                   AND end_at >= $3 AND begin_at < $4 ORDER BY begin_at, report, n";
        let out = on!(&self.inner.db, p => {
            let rows = sqlx::query(sql).bind(&d).bind(&sub).bind(since).bind(until)
                .fetch_all(p).await?;
            rows.iter().map(|r| Ok(stored_row!(r))).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(out)
    }

    /// Stored reports, newest date range first (at most `limit`).
    pub async fn dmarc_reports(
        &self,
        domain: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DmarcReportInfo>, StoreError> {
        let sql = "SELECT id, reporter, reporter_email, report_id, domain, begin_at, end_at, \
                   format, messages, source FROM dmarc_reports \
                   WHERE ($1 = '' OR domain = $1) ORDER BY begin_at DESC, id DESC LIMIT $2";
        let d = domain.unwrap_or("").to_ascii_lowercase();
        let out = on!(&self.inner.db, p => {
            let rows = sqlx::query(sql).bind(&d).bind(i64::from(limit)).fetch_all(p).await?;
            rows.iter().map(|r| Ok(DmarcReportInfo {
                id: r.try_get("id")?,
                reporter: r.try_get("reporter")?,
                reporter_email: r.try_get("reporter_email")?,
                report_id: r.try_get("report_id")?,
                domain: r.try_get("domain")?,
                begin_at: r.try_get("begin_at")?,
                end_at: r.try_get("end_at")?,
                format: r.try_get("format")?,
                messages: r.try_get("messages")?,
                source: r.try_get("source")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(out)
    }

    /// How many reports, rows and rejected inputs are stored.
    pub async fn dmarc_counts(&self) -> Result<(i64, i64, i64), StoreError> {
        let out = on!(&self.inner.db, p => {
            let r = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM dmarc_reports), (SELECT COUNT(*) FROM dmarc_rows), \
                 (SELECT COUNT(*) FROM dmarc_rejected)",
            )
            .fetch_one(p)
            .await?;
            (r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?, r.try_get::<i64, _>(2)?)
        });
        Ok(out)
    }

    /// The rejected inputs, newest first, without their bytes.
    pub async fn dmarc_rejected(&self, limit: u32) -> Result<Vec<DmarcRejected>, StoreError> {
        let out = on!(&self.inner.db, p => {
            let rows = sqlx::query(
                "SELECT sha256, received_at, source, error FROM dmarc_rejected \
                 ORDER BY received_at DESC, sha256 LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| Ok(DmarcRejected {
                sha256: r.try_get("sha256")?,
                received_at: r.try_get("received_at")?,
                source: r.try_get("source")?,
                error: r.try_get("error")?,
                raw: Vec::new(),
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(out)
    }

    /// The message verdicts received in `[since, until)` on the inbound listener or the milter
    /// (not our own submission), oldest first, with the engine's analysis.
    pub async fn dmarc_verdicts(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<DmarcVerdict>, StoreError> {
        let sql = "SELECT id, received_at, listener, client_ip, mail_from, from_domain, \
                   recipients, action, analysis FROM messages \
                   WHERE received_at >= $1 AND received_at < $2 AND listener <> 'submission' \
                   ORDER BY received_at, id";
        let out = on!(&self.inner.db, p => {
            let rows = sqlx::query(sql).bind(since).bind(until).fetch_all(p).await?;
            rows.iter().map(|r| {
                let recipients: String = r.try_get("recipients")?;
                Ok(DmarcVerdict {
                    id: r.try_get("id")?,
                    received_at: r.try_get("received_at")?,
                    listener: r.try_get("listener")?,
                    client_ip: r.try_get("client_ip")?,
                    mail_from: r.try_get("mail_from")?,
                    from_domain: r.try_get("from_domain")?,
                    recipients: recipients.split_whitespace().map(str::to_string).collect(),
                    action: r.try_get("action")?,
                    analysis: r.try_get("analysis")?,
                })
            }).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(out)
    }

    /// Claims the report for `domain` and `day` (Unix day number) for this node: `Some(report
    /// id)` when this node may build and send it, `None` when another node has (or had) it. A
    /// claim left `claimed` longer than `lease` seconds (its node died while building) is taken
    /// over, keeping its report id.
    pub async fn dmarc_claim(
        &self,
        domain: &str,
        day: i64,
        report_id: &str,
        now: i64,
        lease: i64,
    ) -> Result<Option<String>, StoreError> {
        let node = &self.inner.config.node;
        let _turn = self.inner.shared.write_turn(self.inner.db.backend()).await;
        let out = on!(&self.inner.db, p => {
            let done = sqlx::query(
                "INSERT INTO dmarc_outgoing (domain, day, node, claimed_at, status, report_id) \
                 VALUES ($1, $2, $3, $4, 'claimed', $5) ON CONFLICT DO NOTHING",
            )
            .bind(domain).bind(day).bind(node).bind(now).bind(report_id)
            .execute(p).await?;
            if done.rows_affected() == 1 {
                Some(report_id.to_string())
            } else {
                let taken = sqlx::query(
                    "UPDATE dmarc_outgoing SET node = $3, claimed_at = $4 \
                     WHERE domain = $1 AND day = $2 AND status = 'claimed' AND claimed_at < $5",
                )
                .bind(domain).bind(day).bind(node).bind(now).bind(now - lease)
                .execute(p).await?;
                if taken.rows_affected() == 1 {
                    let r = sqlx::query(
                        "SELECT report_id FROM dmarc_outgoing WHERE domain = $1 AND day = $2",
                    )
                    .bind(domain).bind(day).fetch_one(p).await?;
                    Some(r.try_get::<String, _>(0)?)
                } else {
                    None
                }
            }
        });
        Ok(out)
    }

    /// Sets the status of a claimed report (see [`DmarcOutgoing::status`]).
    pub async fn dmarc_outgoing_set(
        &self,
        domain: &str,
        day: i64,
        status: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let _turn = self.inner.shared.write_turn(self.inner.db.backend()).await;
        on!(&self.inner.db, p => {
            sqlx::query("UPDATE dmarc_outgoing SET status = $3, detail = $4 WHERE domain = $1 AND day = $2")
                .bind(domain).bind(day).bind(status).bind(detail)
                .execute(p).await?;
        });
        Ok(())
    }

    /// Every report we send or sent, newest day first.
    pub async fn dmarc_outgoing(&self, limit: u32) -> Result<Vec<DmarcOutgoing>, StoreError> {
        let out = on!(&self.inner.db, p => {
            let rows = sqlx::query(
                "SELECT domain, day, node, claimed_at, status, report_id, detail \
                 FROM dmarc_outgoing ORDER BY day DESC, domain LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| Ok(DmarcOutgoing {
                domain: r.try_get("domain")?,
                day: r.try_get("day")?,
                node: r.try_get("node")?,
                claimed_at: r.try_get("claimed_at")?,
                status: r.try_get("status")?,
                report_id: r.try_get("report_id")?,
                detail: r.try_get("detail")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(out)
    }

    /// Records a destination of a report (insert, or replace its state).
    pub async fn dmarc_delivery_put(&self, d: &DmarcDelivery) -> Result<(), StoreError> {
        let _turn = self.inner.shared.write_turn(self.inner.db.backend()).await;
        on!(&self.inner.db, p => {
            sqlx::query(
                "INSERT INTO dmarc_deliveries (domain, day, address, status, attempts, next_try, \
                 last_error, message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (domain, day, address) DO UPDATE SET status = excluded.status, \
                 attempts = excluded.attempts, next_try = excluded.next_try, \
                 last_error = excluded.last_error, message = excluded.message",
            )
            .bind(&d.domain).bind(d.day).bind(&d.address).bind(&d.status).bind(d.attempts)
            .bind(d.next_try).bind(&d.last_error).bind(&d.message)
            .execute(p).await?;
        });
        Ok(())
    }

    /// Destinations still `pending` whose next try is due at `now`, with their mail.
    pub async fn dmarc_deliveries_due(&self, now: i64) -> Result<Vec<DmarcDelivery>, StoreError> {
        let out = on!(&self.inner.db, p => {
            let rows = sqlx::query(
                "SELECT domain, day, address, status, attempts, next_try, last_error, message \
                 FROM dmarc_deliveries WHERE status = 'pending' AND next_try <= $1 \
                 ORDER BY next_try, domain, address",
            )
            .bind(now)
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| Ok(delivery_row!(r))).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(out)
    }

    /// Every destination, newest day first, without the mail.
    pub async fn dmarc_deliveries(&self, limit: u32) -> Result<Vec<DmarcDelivery>, StoreError> {
        let out = on!(&self.inner.db, p => {
            let rows = sqlx::query(
                "SELECT domain, day, address, status, attempts, next_try, last_error, \
                 NULL AS message FROM dmarc_deliveries ORDER BY day DESC, domain, address LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| Ok(delivery_row!(r))).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(out)
    }

    /// Takes a due destination for this process: moves its next try to `until` only if it is
    /// still what `d` says, so two senders of a fleet never send the same try twice.
    pub async fn dmarc_delivery_take(
        &self,
        d: &DmarcDelivery,
        until: i64,
    ) -> Result<bool, StoreError> {
        let _turn = self.inner.shared.write_turn(self.inner.db.backend()).await;
        let out = on!(&self.inner.db, p => {
            sqlx::query(
                "UPDATE dmarc_deliveries SET next_try = $5 WHERE domain = $1 AND day = $2 \
                 AND address = $3 AND status = 'pending' AND next_try = $4",
            )
            .bind(&d.domain).bind(d.day).bind(&d.address).bind(d.next_try).bind(until)
            .execute(p).await?.rows_affected() == 1
        });
        Ok(out)
    }

    /// Puts `address` on the suppression list until `until` (replacing an earlier entry).
    pub async fn dmarc_suppress(
        &self,
        address: &str,
        now: i64,
        until: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let a = address.trim().to_ascii_lowercase();
        let _turn = self.inner.shared.write_turn(self.inner.db.backend()).await;
        on!(&self.inner.db, p => {
            sqlx::query(
                "INSERT INTO dmarc_suppressed (address, since, until_at, reason) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (address) DO UPDATE SET \
                 since = excluded.since, until_at = excluded.until_at, reason = excluded.reason",
            )
            .bind(&a).bind(now).bind(until).bind(reason)
            .execute(p).await?;
        });
        Ok(())
    }

    /// Removes `address` from the suppression list; false when it was not on it.
    pub async fn dmarc_unsuppress(&self, address: &str) -> Result<bool, StoreError> {
        let a = address.trim().to_ascii_lowercase();
        let out = on!(&self.inner.db, p => {
            sqlx::query("DELETE FROM dmarc_suppressed WHERE address = $1")
                .bind(&a).execute(p).await?.rows_affected() > 0
        });
        Ok(out)
    }

    /// The suppression entry for `address` in force at `now`, if any.
    pub async fn dmarc_suppressed(
        &self,
        address: &str,
        now: i64,
    ) -> Result<Option<DmarcSuppressed>, StoreError> {
        let a = address.trim().to_ascii_lowercase();
        Ok(self
            .dmarc_suppression_list()
            .await?
            .into_iter()
            .find(|s| s.address == a && s.until > now))
    }

    /// The whole suppression list.
    pub async fn dmarc_suppression_list(&self) -> Result<Vec<DmarcSuppressed>, StoreError> {
        let out = on!(&self.inner.db, p => {
            let rows = sqlx::query(
                "SELECT address, since, until_at, reason FROM dmarc_suppressed ORDER BY address",
            )
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| Ok(DmarcSuppressed {
                address: r.try_get("address")?,
                since: r.try_get("since")?,
                until: r.try_get("until_at")?,
                reason: r.try_get("reason")?,
            })).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(out)
    }
}

/// `LIKE` pattern text with `%`, `_` and `\` taken literally (with `ESCAPE '\'`).
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
