//! `unspoof serve`'s DMARC report duties (`[dmarc]`): mail to our own `rua` addresses is
//! captured into `<data_dir>/dmarc-inbox` (a Maildir, fsync'd before the 250) and ingested from
//! there into the store (moved to `cur/` once committed: a crash in between ingests it again,
//! and the store skips the duplicate); with `send = true`, yesterday's reports are built and
//! sent every hour until done (the fleet's claim row makes that once per domain and day).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use unspoof_gateway::rua::ReportCapture;
use unspoof_gateway::{Decide, Envelope, Gateway, Maildir};
use unspoof_reports::{DmarcConfig, Ingestor};
use unspoof_store::Store;

use crate::analyze::{DnsArgs, dns_view};

/// How often the inbox is read without a new capture waking it (mail left by a crash, a
/// store that was down).
const INBOX_RETRY: Duration = Duration::from_secs(30);
/// How often the daily sender looks whether yesterday's reports are done.
const SEND_EVERY: Duration = Duration::from_secs(3600);

struct InboxCapture {
    maildir: Maildir,
    config: DmarcConfig,
    wake: Arc<Notify>,
}

impl ReportCapture for InboxCapture {
    fn is_report_address(&self, rcpt: &str) -> bool {
        self.config.is_rua(rcpt)
    }

    fn deliver_too(&self) -> bool {
        self.config.deliver_reports
    }

    fn capture(&self, queue_id: &str, _: &Envelope, message: &[u8]) -> std::io::Result<String> {
        let at = self.maildir.store(queue_id, message)?;
        self.wake.notify_one();
        Ok(at.display().to_string())
    }
}

/// Plugs the `[dmarc]` duties into the gateway being built.
pub async fn attach<D: Decide>(
    gateway: Gateway<D>,
    file: &crate::config::Config,
    store: &Store,
    data_dir: &Path,
    hostname: &str,
    dns: &DnsArgs,
) -> Result<Gateway<D>, String> {
    let config = file.dmarc.clone();
    let mut gateway = gateway;
    if !config.rua.is_empty() {
        let dir = data_dir.join("dmarc-inbox");
        let maildir =
            Maildir::open(&dir, hostname).map_err(|e| format!("{}: {e}", dir.display()))?;
        let wake = Arc::new(Notify::new());
        tokio::spawn(inbox_loop(store.clone(), config.clone(), dir, wake.clone()));
        gateway = gateway.report_capture(Arc::new(InboxCapture {
            maildir,
            config: config.clone(),
            wake,
        }));
        eprintln!(
            "unspoof serve: DMARC reports to {} are stored",
            config.rua.join(", ")
        );
    }
    if config.send {
        let signer = crate::dmarc::signer(file)?;
        let dns = dns_view(dns).await.map_err(|(_, m)| m)?;
        tokio::spawn(send_loop(store.clone(), dns, config, signer));
    }
    Ok(gateway)
}

async fn inbox_loop(store: Store, config: DmarcConfig, dir: PathBuf, wake: Arc<Notify>) {
    loop {
        if let Err(e) = ingest_inbox(&store, &config, &dir).await {
            eprintln!("unspoof serve: DMARC inbox: {e} (retrying)");
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(INBOX_RETRY) => {}
        }
    }
}

/// Ingests `new/`, then moves what was committed to `cur/`.
pub async fn ingest_inbox(
    store: &Store,
    config: &DmarcConfig,
    dir: &Path,
) -> Result<usize, String> {
    let new = dir.join("new");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&new)
        .map_err(|e| format!("{}: {e}", new.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(0);
    }
    let mut ingestor = Ingestor::new(store.clone(), config.clone());
    for f in &files {
        let raw = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        ingestor
            .add(&format!("smtp:{name}"), &raw)
            .await
            .map_err(|e| e.to_string())?;
    }
    ingestor.commit().await.map_err(|e| e.to_string())?;
    for (source, outcome) in &ingestor.outcomes {
        eprintln!("unspoof serve: DMARC report {source}: {outcome}");
    }
    for f in &files {
        if let Some(name) = f.file_name().and_then(|n| n.to_str()) {
            let _ = std::fs::rename(f, dir.join("cur").join(format!("{name}:2,S")));
        }
    }
    Ok(files.len())
}

async fn send_loop(
    store: Store,
    dns: unspoof_engine::Dns,
    config: DmarcConfig,
    signer: Box<dyn unspoof_reports::send::Signer>,
) {
    loop {
        let now = unspoof_store::now();
        let day = unspoof_reports::day_of(now) - 1;
        match unspoof_reports::send::send_day(&store, &dns, &config, signer.as_ref(), day, now)
            .await
        {
            Ok(s) => {
                for b in &s.built {
                    eprintln!(
                        "unspoof serve: DMARC report {} for {}: {} messages, {} destination(s)",
                        b.report_id,
                        b.domain,
                        b.messages,
                        b.destinations.len()
                    );
                }
                for (addr, domain, outcome) in &s.attempts {
                    eprintln!("unspoof serve: DMARC report for {domain} to {addr}: {outcome}");
                }
            }
            Err(e) => eprintln!("unspoof serve: DMARC reports: {e} (retrying)"),
        }
        tokio::time::sleep(SEND_EVERY).await;
    }
}
