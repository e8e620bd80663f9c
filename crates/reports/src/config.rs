//! The `[dmarc]` section of `unspoof.toml`. Every limit has a name, a default and a documented
//! effect here (also in `examples/unspoof.toml` and `docs/dmarc-reports.md`).
//!
//! ```toml
//! [dmarc]
//! rua = ["dmarc-reports@example.org"]   # our own rua addresses: `unspoof serve` captures them
//! org_name = "example.org"              # who we are in the reports we send
//! from = "dmarc-noreply@example.org"    # their From (DKIM-signed with [[gateway.dkim]])
//! relay = "127.0.0.1:25"                # where they go out
//! send = true                           # `unspoof serve` sends yesterday's reports daily
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DmarcConfig {
    /// Our own report addresses (the `rua=` of our DMARC records). `unspoof serve` stores
    /// accepted inbound mail to them as reports (into `<data_dir>/dmarc-inbox`, then the
    /// store). Default none.
    pub rua: Vec<String>,
    /// Also deliver captured report mail like any other mail. Default `false`: stored only.
    pub deliver_reports: bool,
    /// A file or mail larger than this is refused unread (kept aside). Default 50 MiB.
    pub max_input_bytes: usize,
    /// Most octets of XML one report may decompress to; a larger one (or a zip bomb) is
    /// refused. Default 25 MiB (the largest real reports are a few MiB).
    pub max_xml_bytes: usize,
    /// Most files read from one zip archive; more are refused. Default 16.
    pub max_zip_entries: usize,
    /// Inputs per store transaction when ingesting many (a batch is all or nothing; a crash
    /// redoes at most one batch, and deduplication makes that harmless). Default 500.
    pub batch_inputs: usize,
    /// Send our own aggregate reports from `unspoof serve` once a day (yesterday's, UTC),
    /// checked every hour. Default `false` (`unspoof dmarc send` does it by hand or from cron).
    pub send: bool,
    /// `org_name` of the reports we send. Default: the gateway's host name.
    pub org_name: String,
    /// From address of the reports we send; its domain should have a `[[gateway.dkim]]` key
    /// so the report passes DMARC itself. Default `dmarc-noreply@<host name>`.
    pub from: String,
    /// `extra_contact_info` of the reports we send. Default none.
    pub contact: Option<String>,
    /// SMTP relay (`host:port`) the reports go out through. Default: none, and `send` only
    /// builds and queues them (the `send` command says so).
    pub relay: Option<String>,
    /// Largest gzip'd report we attach, in octets; a larger report is split into several
    /// (each a complete report with its own report id, RFC 9990 allows it). A smaller `!size`
    /// on an RFC 7489 `rua` URI wins for that destination. Default 10 MiB.
    pub max_report_bytes: usize,
    /// Most `rua` destinations per report (RFC 9990: at least two must be supported); more are
    /// ignored. Default 4.
    pub max_destinations: usize,
    /// Minutes to wait before each retry of a destination that failed temporarily; after the
    /// last one the destination is given up (`failed`). Default 5, 30, 120, 480, 1440.
    pub retry_minutes: Vec<u64>,
    /// Days a destination that answered with a permanent failure (5xx) stays on the
    /// suppression list: no reports to it meanwhile. Default 30.
    pub suppress_days: u32,
    /// Seconds after which another node of the fleet may take over a report claimed but not
    /// finished (its node died while building it). Default 3600.
    pub claim_lease_secs: i64,
}

impl Default for DmarcConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        DmarcConfig {
            rua: Vec::new(),
            deliver_reports: false,
            max_input_bytes: 50 << 20,
            max_xml_bytes: 25 << 20,
            max_zip_entries: 16,
            batch_inputs: 500,
            send: false,
            org_name: host.clone(),
            from: format!("dmarc-noreply@{host}"),
            contact: None,
            relay: None,
            max_report_bytes: 10 << 20,
            max_destinations: 4,
            retry_minutes: vec![5, 30, 120, 480, 1440],
            suppress_days: 30,
            claim_lease_secs: 3600,
        }
    }
}

impl DmarcConfig {
    /// The `[dmarc]` table of a whole `unspoof.toml` text (defaults without one).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        Self::from_table(&file)
    }

    /// The `[dmarc]` table of a parsed `unspoof.toml` (defaults without one).
    pub fn from_table(file: &toml::Table) -> Result<Self, String> {
        let Some(section) = file.get("dmarc") else {
            return Ok(DmarcConfig::default());
        };
        let config: DmarcConfig = section
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| format!("[dmarc]: {e}"))?;
        config.validated()
    }

    /// Checks values that would make the section unusable.
    pub fn validated(mut self) -> Result<Self, String> {
        for a in &mut self.rua {
            *a = a.trim().trim_start_matches("mailto:").to_ascii_lowercase();
            if !a.contains('@') {
                return Err(format!("[dmarc] rua: {a:?} is not an address"));
            }
        }
        if !self.from.contains('@') {
            return Err(format!("[dmarc] from: {:?} is not an address", self.from));
        }
        if self.max_xml_bytes == 0 || self.max_input_bytes == 0 || self.max_report_bytes < 1024 {
            return Err("[dmarc]: max_xml_bytes and max_input_bytes must be positive, max_report_bytes at least 1024".into());
        }
        if self.max_destinations < 2 {
            return Err("[dmarc] max_destinations: RFC 9990 asks for at least 2".into());
        }
        self.batch_inputs = self.batch_inputs.max(1);
        self.max_zip_entries = self.max_zip_entries.max(1);
        Ok(self)
    }

    /// Whether `address` is one of our report addresses.
    pub fn is_rua(&self, address: &str) -> bool {
        let a = address.trim().to_ascii_lowercase();
        self.rua.contains(&a)
    }

    /// The domain of `from`.
    pub fn from_domain(&self) -> &str {
        self.from.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}
