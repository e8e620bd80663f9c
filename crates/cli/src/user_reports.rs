//! `unspoof serve`'s user report desk (`[gateway] report_address`, docs/reaction.md): mail to
//! the report address is captured into `<data_dir>/user-reports` (a Maildir, fsync'd before the
//! 250), then, off the SMTP path, the reported message is taken out
//! (`unspoof_engine::user_report`), matched with its record in the store (by Message-ID and
//! the reporter as recipient; an inline forward by sender domain and subject), analysed (the
//! quarantined original's bytes when the store holds them, else the forwarded ones, with the
//! record's envelope), recorded (`report.user` first among its reasons: `unspoof log search
//! --kind report`) and explained to the reporter in a reply sent through the downstream MTA
//! (or into the gateway's Maildir without one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use unspoof_engine::user_report::{self, Form, Outcome, Reported, USER_REPORT};
use unspoof_engine::{Engine, Envelope as EngineEnvelope};
use unspoof_gateway::rua::ReportCapture;
use unspoof_gateway::{Envelope, Maildir};
use unspoof_store::{MessageRecord, Query, Store};

/// Records looked through for an inline forward's original (same sender domain, reporter).
const INLINE_CANDIDATES: u32 = 50;

/// One captured report, for the desk's task.
struct Job {
    queue_id: String,
    envelope: Envelope,
    path: PathBuf,
}

/// The capture side (called on a blocking thread by the gateway).
pub struct ReportDesk {
    address: String,
    maildir: Maildir,
    jobs: mpsc::UnboundedSender<Job>,
}

impl ReportCapture for ReportDesk {
    fn is_report_address(&self, rcpt: &str) -> bool {
        rcpt.trim().eq_ignore_ascii_case(&self.address)
    }

    fn deliver_too(&self) -> bool {
        false
    }

    fn capture(
        &self,
        queue_id: &str,
        envelope: &Envelope,
        message: &[u8],
    ) -> std::io::Result<String> {
        let path = self.maildir.store(queue_id, message)?;
        let _ = self.jobs.send(Job {
            queue_id: queue_id.to_string(),
            envelope: envelope.clone(),
            path: path.clone(),
        });
        Ok(path.display().to_string())
    }
}

/// Where the answers go and who we are.
#[derive(Clone)]
pub struct DeskConfig {
    pub address: String,
    pub hostname: String,
    /// The downstream MTA (`host:port`) that delivers to our users; `None`: `maildir`.
    pub relay: Option<String>,
    /// Who is told of each report (`[gateway] report_notify`).
    pub notify: Vec<String>,
    pub data_dir: PathBuf,
}

/// Builds the desk and starts its task; returns the capture for the gateway.
pub fn start(config: DeskConfig, engine: Engine, store: Store) -> Result<ReportDesk, String> {
    let dir = config.data_dir.join("user-reports");
    let maildir =
        Maildir::open(&dir, &config.hostname).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let address = config.address.clone();
    let config = Arc::new(config);
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            if let Err(e) = handle(&config, &engine, &store, &job).await {
                eprintln!("unspoof serve: user report {}: {e}", job.queue_id);
            }
        }
    });
    Ok(ReportDesk {
        address,
        maildir,
        jobs: tx,
    })
}

/// One report: extract, match, analyse, record, answer.
async fn handle(
    config: &DeskConfig,
    engine: &Engine,
    store: &Store,
    job: &Job,
) -> Result<(), String> {
    let raw = std::fs::read(&job.path).map_err(|e| format!("{}: {e}", job.path.display()))?;
    let report = unspoof_engine::Headers::parse(&raw);
    let reporter = job
        .envelope
        .mail_from
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or("a report with the null sender is not answered")?;
    let report_subject = report.first("Subject").map(|h| h.value_unfolded());
    let report_id = report.first("Message-ID").map(|h| h.value_unfolded());
    let Some(reported) = user_report::extract(&raw) else {
        let text = "Thank you for your report. We found no message in it: please forward the suspicious message as an attachment (Thunderbird: Message > Forward As > Attachment; Outlook: More actions > Forward as attachment).\n";
        let mut record = report_record(config, job, &reporter, None);
        record.reasons.push("report.empty".into());
        store.log_message(record);
        let subject = format!("Re: {}", report_subject.as_deref().unwrap_or("your report"));
        return send_mail(config, &[reporter], &subject, report_id, text).await;
    };
    // The original's record may still wait in the writer's batch (a report seconds after
    // delivery): written first, so that the lookup sees it.
    store.flush().await;
    let found = original_record(store, &reported, &reporter).await;
    let (bytes, envelope) = original_message(store, &reported, found.as_ref()).await;
    let analysis = engine.evaluate(&bytes, &envelope).await;
    let outcome = match &found {
        Some(r) => Outcome::Recorded(r.action.clone()),
        None => Outcome::NotFound,
    };
    let text = user_report::explain(&reported, &analysis, found.is_some(), &outcome);
    let mut record =
        report_record(config, job, &reporter, Some(&reported)).with_analysis(&analysis);
    record.action = "reported".into();
    record.reasons.insert(0, USER_REPORT.to_string());
    if reported.form == Form::Inline {
        record.reasons.insert(1, "report.inline".into());
    }
    record.stored_at = Some(job.path.display().to_string());
    record.reply = found.as_ref().map(|r| format!("original record {}", r.id));
    store.log_message(record);
    let subject = format!("Re: {}", report_subject.as_deref().unwrap_or("your report"));
    send_mail(
        config,
        std::slice::from_ref(&reporter),
        &subject,
        report_id,
        &text,
    )
    .await?;
    if config.notify.is_empty() {
        return Ok(());
    }
    let judgement = user_report::judge(&analysis);
    let copies = other_copies(store, &reported, found.as_ref()).await;
    let mut notice = format!(
        "{reporter} reported a message (queue id {qid}, {form}). Judgement: {judgement:?}.\n\n",
        qid = job.queue_id,
        form = match reported.form {
            Form::Attached => "forwarded as an attachment",
            Form::Inline => "forwarded inline: its headers were lost",
        },
    );
    match &found {
        Some(r) => notice.push_str(&format!(
            "The original is on record: unspoof log show {} (verdict {}).\n",
            r.id, r.action
        )),
        None => {
            notice.push_str("The original is not on record: it did not pass through the gateway.\n")
        }
    }
    if copies.is_empty() {
        notice.push_str("No other mailbox received it through us.\n");
    } else {
        notice.push_str("The same message (same Message-ID) also reached:\n");
        for (rcpt, action, id) in &copies {
            notice.push_str(&format!("  {rcpt} ({action}; record {id})\n"));
        }
    }
    if judgement == user_report::Judgement::Forged {
        // The message as analysed, kept for the abuse report to the origin's contacts.
        let path = job.path.with_extension("original.eml");
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        notice.push_str(&format!(
            "\nTo send the ARF abuse report to the origin's contacts (abuse@ and postmaster@):\n  unspoof report abuse {} --send --relay <your relay>\n",
            path.display()
        ));
    }
    notice.push_str("\nThe answer the reporter got:\n\n");
    notice.push_str(&text);
    let subject = format!(
        "User report ({judgement:?}): {}",
        reported.subject.as_deref().unwrap_or("(no subject)")
    );
    send_mail(config, &config.notify, &subject, None, &notice).await
}

/// Other mailboxes the reported message reached through us: (recipient, action, record id).
async fn other_copies(
    store: &Store,
    reported: &Reported,
    found: Option<&MessageRecord>,
) -> Vec<(String, String, String)> {
    let Some(id) = reported
        .message_id
        .clone()
        .or_else(|| found.and_then(|r| r.message_id.clone()))
    else {
        return Vec::new();
    };
    let q = Query {
        message_id: Some(id),
        limit: Some(INLINE_CANDIDATES),
        ..Query::default()
    };
    let mut out = Vec::new();
    for r in store.search(&q).await.unwrap_or_default() {
        if r.listener == "report" {
            continue;
        }
        for rcpt in &r.recipients {
            out.push((rcpt.clone(), r.action.clone(), r.id.clone()));
        }
    }
    out
}

/// The report's own record: the reporter as recipient, the reported message's identity.
fn report_record(
    config: &DeskConfig,
    job: &Job,
    reporter: &str,
    reported: Option<&Reported>,
) -> MessageRecord {
    MessageRecord {
        id: unspoof_store::new_id(),
        received_at: unspoof_store::now(),
        node: config.hostname.clone(),
        listener: "report".into(),
        queue_id: Some(job.queue_id.clone()),
        message_id: reported.and_then(|r| r.message_id.clone()),
        client_ip: job.envelope.ip,
        helo: job.envelope.helo.clone(),
        auth_user: job.envelope.auth_user.clone(),
        mail_from: Some(reporter.to_string()),
        recipients: vec![reporter.to_string()],
        from: reported.and_then(|r| r.from.clone()),
        subject: reported.and_then(|r| r.subject.clone()),
        action: "reported".into(),
        reasons: vec![USER_REPORT.to_string()],
        ..MessageRecord::default()
    }
}

/// The record of the reported message as it passed through us, if it did.
async fn original_record(
    store: &Store,
    reported: &Reported,
    reporter: &str,
) -> Option<MessageRecord> {
    let not_a_report = |r: &MessageRecord| r.listener != "report";
    if let Some(id) = &reported.message_id {
        for recipient in [Some(reporter.to_string()), None] {
            let q = Query {
                message_id: Some(id.clone()),
                recipient: recipient.clone(),
                limit: Some(5),
                ..Query::default()
            };
            if let Some(r) = store.search(&q).await.ok()?.into_iter().find(not_a_report) {
                return Some(r);
            }
        }
        return None;
    }
    // An inline forward without its Message-ID: the reporter's mail from the same sender
    // domain with the same subject.
    let from_domain = reported
        .from
        .as_deref()
        .and_then(unspoof_store::domain_of)?;
    let q = Query {
        from_domain: Some(from_domain),
        recipient: Some(reporter.to_string()),
        limit: Some(INLINE_CANDIDATES),
        ..Query::default()
    };
    let subject = reported.subject.as_deref()?;
    store
        .search(&q)
        .await
        .ok()?
        .into_iter()
        .filter(not_a_report)
        .find(|r| r.subject.as_deref().map(str::trim) == Some(subject.trim()))
}

/// The bytes and envelope to analyse: the quarantined original when the store holds it, else
/// the forwarded message; the record's envelope when there is a record.
async fn original_message(
    store: &Store,
    reported: &Reported,
    found: Option<&MessageRecord>,
) -> (Vec<u8>, EngineEnvelope) {
    let Some(r) = found else {
        return (reported.raw.clone(), EngineEnvelope::default());
    };
    let envelope = EngineEnvelope {
        ip: r.client_ip,
        helo: r.helo.clone(),
        mail_from: r.mail_from.clone(),
        rcpt: r.recipients.clone(),
        received_at: Some(r.received_at),
        ..EngineEnvelope::default()
    };
    if let Some(q) = r.stored_at.as_deref()
        && let Ok(Some(entry)) = store.quarantine_get(q).await
    {
        return (entry.message.raw, envelope);
    }
    (reported.raw.clone(), envelope)
}

/// Sends a plain-text auto-reply (RFC 3834: null MAIL FROM, `Auto-Submitted`) from the report
/// address: the answer to the reporter, or the notice to the administrators.
async fn send_mail(
    config: &DeskConfig,
    to: &[String],
    subject: &str,
    in_reply_to: Option<String>,
    text: &str,
) -> Result<(), String> {
    let now = unspoof_store::now();
    let subject: String = subject.chars().filter(|c| !c.is_control()).collect();
    let mut mail = format!(
        "From: {address}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}@{host}>\r\n",
        address = config.address,
        to = to.join(", "),
        date = unspoof_gateway::message::rfc5322_date(now),
        id = unspoof_store::new_id(),
        host = config.hostname,
    );
    if let Some(id) = in_reply_to.filter(|i| !i.contains(['\r', '\n'])) {
        mail.push_str(&format!("In-Reply-To: {id}\r\n"));
    }
    mail.push_str(
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    mail.push_str(&text.replace('\n', "\r\n"));
    match &config.relay {
        Some(relay) => {
            unspoof_forensics::send::send(relay, &config.hostname, "", to, mail.as_bytes())
                .await
                .map(|_| ())
        }
        None => {
            let root = config.data_dir.join("maildir");
            let maildir = Maildir::open(&root, &config.hostname).map_err(|e| e.to_string())?;
            maildir
                .store(
                    &format!("report-answer-{}", unspoof_store::new_id()),
                    mail.as_bytes(),
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

/// The report address of `[gateway]`, if any.
pub fn configured(data_dir: &Path, config: &unspoof_gateway::GatewayConfig) -> Option<DeskConfig> {
    let address = config.report_address.clone()?;
    Some(DeskConfig {
        address,
        hostname: config.hostname.clone(),
        relay: config.downstream.clone(),
        notify: config.report_notify.clone(),
        data_dir: data_dir.to_path_buf(),
    })
}
