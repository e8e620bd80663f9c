//! `unspoof log search` and `unspoof log show`: the session and message records in the store
//! (SQLite in the data directory, or the fleet's PostgreSQL).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use unspoof_store::{MessageRecord, Query, Store, StoreConfig};
// Shared with the console: one reading and one printing of times.
pub(crate) use unspoof_store::{format_time, parse_time};

use crate::exit;

/// Where the store is: found the way `unspoof serve` finds it, from the same configuration
/// file, or given directly.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// The configuration file `unspoof serve` (or `unspoof milter`) runs with: its `[store]`
    /// and its data directory (`[gateway] data_dir`) say where the records are.
    #[arg(long, short, value_name = "FILE", env = "UNSPOOF_CONFIG")]
    pub config: Option<PathBuf>,
    /// The database: `postgres://user@host/db`, `sqlite:///path/unspoof.db` or a file path
    /// (overrides `[store] url`). Default: `<data-dir>/unspoof.db`.
    #[arg(long, value_name = "URL", env = "UNSPOOF_STORE")]
    pub store: Option<String>,
    /// The data directory (SQLite database, spool, Maildir). Default: the configuration's
    /// `[gateway] data_dir`, else ./unspoof-data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Where a command's store and data directory are.
pub struct Located {
    pub store: StoreConfig,
    /// The gateway's data directory (its Maildir is `<data_dir>/maildir`).
    pub data_dir: PathBuf,
    /// The whole configuration file (every default without one).
    pub file: crate::config::Config,
}

impl StoreArgs {
    /// The store the arguments name. A SQLite store that does not exist yet (neither its
    /// database nor a spool) is an error, not an empty database made in the current folder:
    /// the person is almost always in the wrong folder or forgot `--config`.
    pub fn locate(&self) -> Result<Located, (u8, String)> {
        self.resolve(true)
    }

    /// The store the arguments name; `must_exist` false for the commands that fill a store
    /// (`unspoof dmarc ingest`), for which a new one is right.
    pub fn resolve(&self, must_exist: bool) -> Result<Located, (u8, String)> {
        let file = crate::config::Config::load_or_default(self.config.as_deref()).map_err(|e| {
            let code = crate::serve::config_exit(&e);
            (code, e.to_string())
        })?;
        let mut data_dir = file.gateway.data_dir.clone();
        if let Some(dir) = &self.data_dir {
            data_dir = dir.clone();
        }
        let mut c = crate::store_adapter::store_config(&file, &data_dir, "");
        if let Some(url) = &self.store {
            c.url = url.clone();
        }
        if self.data_dir.is_some() {
            c.data_dir = data_dir.clone();
        }
        // The command line reads and marks; it prunes nothing.
        c.retention_days = None;
        if !file.sets("store.node") {
            c.node = format!("{}/cli", c.node);
        }
        if let Some(db) = sqlite_file(&c.database_url()).filter(|_| must_exist)
            && !db.exists()
            && !c.spool_dir().exists()
        {
            let how = if self.config.is_some() {
                "is [store] or [gateway] data_dir of that file the one `unspoof serve` uses?"
            } else {
                "give the configuration `unspoof serve` runs with (--config FILE or \
                 UNSPOOF_CONFIG), or --data-dir or --store"
            };
            return Err((
                exit::NO_INPUT,
                format!(
                    "no store at {} (nothing recorded there yet): {how}",
                    db.display()
                ),
            ));
        }
        Ok(Located {
            store: c,
            data_dir,
            file,
        })
    }
}

/// The file of a SQLite database URL (`sqlite://path`, `sqlite:path`, with `?options`), or
/// `None` for another database or SQLite in memory.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Find message records; every filter given must match. Newest first.
    Search(SearchArgs),
    /// Print one whole record with its hop trace: a record id, a queue id or a Message-ID.
    Show(ShowArgs),
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Message-ID (angle brackets optional).
    #[arg(long)]
    message_id: Option<String>,
    /// Queue id.
    #[arg(long)]
    queue_id: Option<String>,
    /// Client address or network: 192.0.2.7, 192.0.2.0/24, 2001:db8::/32.
    #[arg(long, value_name = "IP|CIDR")]
    client: Option<String>,
    /// MAIL FROM domain.
    #[arg(long, value_name = "DOMAIN")]
    mail_from: Option<String>,
    /// From header domain.
    #[arg(long, value_name = "DOMAIN")]
    from: Option<String>,
    /// Recipient address, or @domain.
    #[arg(long, value_name = "ADDRESS|@DOMAIN")]
    rcpt: Option<String>,
    /// Verdict action: accept, tag, quarantine, reject (or refused, tempfail).
    #[arg(long)]
    action: Option<String>,
    /// Reason code, e.g. dmarc.reject.
    #[arg(long)]
    reason: Option<String>,
    /// What others told us about forgeries (docs/reaction.md): `report` (user reports),
    /// `backscatter` (bounces and auto-replies of forgeries in our name), `bypass` (mail that
    /// skipped the gateway). The same as --reason with the kind's code.
    #[arg(long, value_parser = ["report", "backscatter", "bypass"], conflicts_with = "reason")]
    kind: Option<String>,
    /// From this time: Unix seconds, 2026-11-23, 2026-11-23T10:00:00Z, or an age (90m, 6h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = unspoof_store::DEFAULT_LIMIT)]
    limit: u32,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Record id, queue id or Message-ID.
    id: String,
    /// The record as JSON (with the whole analysis).
    #[arg(long)]
    json: bool,
}

pub fn run(command: LogCommand) -> u8 {
    let Some(rt) = runtime() else {
        return exit::SOFTWARE;
    };
    rt.block_on(async {
        match command {
            LogCommand::Search(args) => search(args).await,
            LogCommand::Show(args) => show(args).await,
        }
    })
}

pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("unspoof: cannot start the runtime: {e}"))
        .ok()
}

pub(crate) async fn open(args: &StoreArgs) -> Result<Store, u8> {
    open_resolved(args, true).await
}

/// [`open`] for the commands that fill a store (`unspoof console user add`): a store that does
/// not exist yet is made.
pub(crate) async fn open_or_create(args: &StoreArgs) -> Result<Store, u8> {
    open_resolved(args, false).await
}

async fn open_resolved(args: &StoreArgs, must_exist: bool) -> Result<Store, u8> {
    let located = args.resolve(must_exist).map_err(|(code, e)| {
        eprintln!("unspoof: {e}");
        code
    })?;
    let store = Store::open(located.store).await.map_err(|e| {
        eprintln!("unspoof: store: {e}");
        exit::SOFTWARE
    })?;
    // The store syncs what waits in the data directory's spool (a quarantined message or
    // records of a gateway that died before its writer did) when it starts; the flush waits
    // for that, so that what a person asks for is found.
    store.flush().await;
    Ok(store)
}

async fn search(args: SearchArgs) -> u8 {
    let now = unspoof_store::now();
    let time = |s: &Option<String>| s.as_deref().map(|t| parse_time(t, now)).transpose();
    let (since, until) = match (time(&args.since), time(&args.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("unspoof: {e}");
            return exit::USAGE;
        }
    };
    let client = match args.client.as_deref().map(parse_net).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("unspoof: --client: {e}");
            return exit::USAGE;
        }
    };
    let reason = match args.kind.as_deref() {
        Some(kind) => Some(kind_code(kind).to_string()),
        None => args.reason,
    };
    let query = Query {
        message_id: args.message_id,
        queue_id: args.queue_id,
        client,
        mail_from_domain: args.mail_from,
        from_domain: args.from,
        recipient: args.rcpt,
        action: args.action,
        reason,
        since,
        until,
        limit: Some(args.limit),
        ..Default::default()
    };
    let store = match open(&args.store).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let found = store.search(&query).await;
    store.close().await;
    let records = match found {
        Ok(r) => r,
        Err(e) => {
            eprintln!("unspoof: search: {e}");
            return exit::SOFTWARE;
        }
    };
    if args.json {
        for r in &records {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
    } else {
        print_table(&records);
    }
    exit::ACCEPT
}

/// The reason code a `--kind` stands for.
fn kind_code(kind: &str) -> &'static str {
    match kind {
        "report" => unspoof_engine::user_report::USER_REPORT,
        "backscatter" => unspoof_engine::findings::BACKSCATTER_FORGED,
        _ => unspoof_engine::findings::HUB_BYPASS,
    }
}

fn print_table(records: &[MessageRecord]) {
    println!(
        "{:<20} {:<36} {:<15} {:<10} {:<28} {:<28} REASONS",
        "TIME (UTC)", "ID", "CLIENT", "ACTION", "MAIL FROM", "RCPT"
    );
    for r in records {
        let rcpt = match r.recipients.len() {
            0 => String::new(),
            1 => r.recipients[0].clone(),
            n => format!("{} (+{})", r.recipients[0], n - 1),
        };
        println!(
            "{:<20} {:<36} {:<15} {:<10} {:<28} {:<28} {}",
            format_time(r.received_at),
            r.id,
            r.client_ip.map(|i| i.to_string()).unwrap_or_default(),
            clean(&r.action),
            clean(&cut(r.mail_from.as_deref().unwrap_or(""), 28)),
            clean(&cut(&rcpt, 28)),
            clean(&r.reasons.join(" "))
        );
    }
    println!("{} record(s)", records.len());
}

async fn show(args: ShowArgs) -> u8 {
    let store = match open(&args.store).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = async {
        let Some(m) = store.find(&args.id).await? else {
            return Ok(None);
        };
        let session = match &m.session_id {
            Some(id) => store.session(id).await?,
            None => None,
        };
        Ok::<_, unspoof_store::StoreError>(Some((m, session)))
    }
    .await;
    store.close().await;
    let (m, session) = match result {
        Ok(Some(found)) => found,
        Ok(None) => {
            eprintln!("unspoof: no record {}", args.id);
            return exit::NO_INPUT;
        }
        Err(e) => {
            eprintln!("unspoof: {e}");
            return exit::SOFTWARE;
        }
    };
    if args.json {
        let v = serde_json::json!({ "message": m, "session": session });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return exit::ACCEPT;
    }
    let opt = |o: &Option<String>| clean(o.as_deref().unwrap_or("-"));
    println!("record      {}", m.id);
    println!(
        "received    {} ({})",
        format_time(m.received_at),
        m.received_at
    );
    println!("node        {} ({})", clean(&m.node), clean(&m.listener));
    println!("queue id    {}", opt(&m.queue_id));
    println!("message-id  {}", opt(&m.message_id));
    println!(
        "client      {} port {} rdns {}",
        m.client_ip.map(|i| i.to_string()).unwrap_or("-".into()),
        m.client_port.map(|p| p.to_string()).unwrap_or("-".into()),
        opt(&m.reverse_dns)
    );
    println!("helo        {}", opt(&m.helo));
    println!("tls         {}", opt(&m.tls));
    println!("auth user   {}", opt(&m.auth_user));
    println!("mail from   {}", opt(&m.mail_from));
    for r in &m.recipients {
        println!("rcpt to     {}", clean(r));
    }
    println!("from        {}", opt(&m.from));
    println!("subject     {}", opt(&m.subject));
    println!("size        {}", m.size);
    println!("verdict     {}", clean(&m.action));
    let analysis = m.analysis.as_ref().map(|a| a.value());
    print_reasons(analysis.as_ref(), &m.reasons);
    println!("auth        {}", opt(&m.auth_summary));
    println!("trace       {}", opt(&m.trace_summary));
    if let Some(hops) = analysis
        .as_ref()
        .and_then(|a| a["trace"]["hops"].as_array())
    {
        for h in hops {
            println!(
                "  hop {:<5} {}{}",
                h["index"].as_u64().unwrap_or(0),
                clean(h["raw"].as_str().unwrap_or("")),
                if h["trusted"].as_bool() == Some(true) {
                    "  [trusted]"
                } else {
                    ""
                }
            );
        }
    }
    println!("reply       {}", opt(&m.reply));
    println!("downstream  {}", opt(&m.downstream_reply));
    println!("stored at   {}", opt(&m.stored_at));
    if let Some(us) = m.latency_us {
        println!("latency     {us} µs");
    }
    if let Some(dns) = &m.dns {
        println!("dns         {}", clean(&dns.to_string()));
    }
    if let Some(s) = session {
        println!(
            "session     {} from {} to {}, {} message(s), ended: {}",
            s.id,
            format_time(s.started_at),
            s.ended_at.map(format_time).unwrap_or("-".into()),
            s.messages,
            clean(&s.outcome)
        );
    }
    exit::ACCEPT
}

/// The verdict's reasons in words, with their evidence, from the record's analysis; without
/// one (a refusal by an SMTP rule, an old record), the codes alone.
pub(crate) fn print_reasons(analysis: Option<&serde_json::Value>, codes: &[String]) {
    match analysis.and_then(|a| a["verdict"]["reasons"].as_array()) {
        Some(rs) => {
            for r in rs {
                println!(
                    "  reason    {} ({}): {}",
                    clean(r["code"].as_str().unwrap_or("")),
                    clean(r["action"].as_str().unwrap_or("")),
                    clean(r["message"].as_str().unwrap_or(""))
                );
                for e in r["evidence"].as_array().into_iter().flatten() {
                    println!("            evidence: {}", clean(e.as_str().unwrap_or("")));
                }
            }
        }
        None => {
            for r in codes {
                println!("  reason    {}", clean(r));
            }
        }
    }
}

/// Control characters from mail (a hostile HELO, a Subject) never reach the terminal as such.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn parse_net(s: &str) -> Result<unspoof_store::IpNet, String> {
    if let Ok(n) = s.parse::<unspoof_store::IpNet>() {
        return Ok(n);
    }
    s.parse::<std::net::IpAddr>()
        .map(unspoof_store::IpNet::from)
        .map_err(|_| format!("{s:?} is not an address or a network"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_print() {
        assert_eq!(parse_time("2026-11-23T10:00:00Z", 0), Ok(1_795_428_000));
        assert_eq!(parse_time("2026-11-23", 0), Ok(1_795_392_000));
        assert_eq!(parse_time("1795428000", 0), Ok(1_795_428_000));
        assert_eq!(parse_time("2h", 10_000), Ok(2_800));
        assert!(parse_time("yesterday", 0).is_err());
        assert_eq!(format_time(1_795_428_000), "2026-11-23 10:00:00");
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
    }
}
