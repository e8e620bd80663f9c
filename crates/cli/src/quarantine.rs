//! `unspoof quarantine list | show | release | delete`: the messages the verdict held back.
//! Release re-injects the message to the downstream MTA (SMTP), or without one delivers it
//! into the Maildir, and records who released it and when (`unspoof_console::release`, the
//! path the web console takes too).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use unspoof_console::release::{ReleaseError, ReleaseTarget};
use unspoof_store::{MessageRecord, QuarantineEntry, QuarantineStatus, Store, StoreError};

use crate::exit;
use crate::log::{StoreArgs, clean, format_time, open, runtime};

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// Quarantined messages, newest first.
    List(ListArgs),
    /// One message: its envelope, status and reasons in words; `--raw` prints the message
    /// itself. Takes the quarantine id, or the queue id (as the gateway's reply and
    /// `unspoof log show` give it), record id or Message-ID.
    Show(ShowArgs),
    /// Deliver a held message after all: to --downstream (SMTP host:port), else into the
    /// Maildir.
    Release(ReleaseArgs),
    /// Throw a held message away (its record stays, with who and when).
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// held, releasing, released, deleted or all.
    #[arg(long, default_value = "held")]
    status: String,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    store: StoreArgs,
    id: String,
    /// Print the raw message (as it would have been delivered) instead of the summary.
    #[arg(long)]
    raw: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    store: StoreArgs,
    id: String,
    /// The downstream MTA, host:port (as in `[gateway] downstream`). Without it the message
    /// goes into --maildir.
    #[arg(long, value_name = "HOST:PORT")]
    downstream: Option<String>,
    /// The Maildir for release without a downstream. Default `<data-dir>/maildir`.
    #[arg(long, value_name = "DIR")]
    maildir: Option<PathBuf>,
    /// Who releases it, for the record. Default: $SUDO_USER, else $USER.
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    store: StoreArgs,
    id: String,
    /// Who deletes it, for the record. Default: $SUDO_USER, else $USER.
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
}

pub fn run(command: QuarantineCommand) -> u8 {
    let Some(rt) = runtime() else {
        return exit::SOFTWARE;
    };
    rt.block_on(async {
        match command {
            QuarantineCommand::List(a) => list(a).await,
            QuarantineCommand::Show(a) => show(a).await,
            QuarantineCommand::Release(a) => release(a).await,
            QuarantineCommand::Delete(a) => delete(a).await,
        }
    })
}

fn actor(by: Option<String>) -> String {
    by.or_else(|| std::env::var("SUDO_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn fail(e: StoreError) -> u8 {
    eprintln!("unspoof: {e}");
    match e {
        StoreError::NotFound(_) => exit::NO_INPUT,
        StoreError::NotHeld(..) => exit::DATA,
        _ => exit::SOFTWARE,
    }
}

async fn list(args: ListArgs) -> u8 {
    let status = match args.status.as_str() {
        "all" => None,
        s => match QuarantineStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                eprintln!("unspoof: --status: held, releasing, released, deleted or all");
                return exit::USAGE;
            }
        },
    };
    let store = match open(&args.store).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listed = store.quarantine_list(status, args.limit).await;
    store.close().await;
    let entries = match listed {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    if args.json {
        for e in &entries {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        }
        return exit::ACCEPT;
    }
    println!(
        "{:<20} {:<36} {:<9} {:>8} {:<28} {:<28} REASONS",
        "TIME (UTC)", "ID", "STATUS", "SIZE", "FROM", "RCPT"
    );
    for e in &entries {
        let m = &e.message;
        println!(
            "{:<20} {:<36} {:<9} {:>8} {:<28} {:<28} {}",
            format_time(m.quarantined_at),
            m.id,
            e.status.as_str(),
            e.size,
            clean(m.from.as_deref().or(m.mail_from.as_deref()).unwrap_or("")),
            clean(&m.recipients.join(",")),
            clean(&m.reasons.join(" "))
        );
    }
    println!("{} message(s)", entries.len());
    exit::ACCEPT
}

/// The quarantine id that `id` names: a quarantine id itself, or the queue id, record id or
/// Message-ID of the message's record (what `unspoof log show` and the gateway's reply give).
async fn quarantine_id(store: &Store, id: &str) -> Result<String, StoreError> {
    if store.quarantine_get(id).await?.is_some() {
        return Ok(id.to_string());
    }
    match store.find(id).await? {
        Some(MessageRecord {
            stored_at: Some(at),
            action,
            ..
        }) if action == "quarantine" => Ok(at),
        _ => Err(StoreError::NotFound(id.into())),
    }
}

/// The entry, and the message's record when there is one (for the reasons in words).
async fn get(args: &StoreArgs, id: &str) -> Result<(QuarantineEntry, Option<MessageRecord>), u8> {
    let store = open(args).await?;
    let got = async {
        let qid = quarantine_id(&store, id).await?;
        let entry = store
            .quarantine_get(&qid)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        let m = &entry.message;
        let key = m.message_record.as_deref().or(m.queue_id.as_deref());
        let record = match key {
            Some(k) => store.find(k).await?,
            None => None,
        };
        Ok::<_, StoreError>((entry, record))
    }
    .await;
    store.close().await;
    got.map_err(fail)
}

/// Opens the store and resolves `id` for release and delete.
async fn open_for(args: &StoreArgs, id: &str) -> Result<(Store, String), u8> {
    let store = open(args).await?;
    match quarantine_id(&store, id).await {
        Ok(qid) => Ok((store, qid)),
        Err(e) => {
            store.close().await;
            Err(fail(e))
        }
    }
}

async fn show(args: ShowArgs) -> u8 {
    let (e, record) = match get(&args.store, &args.id).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    if args.raw {
        let _ = std::io::stdout().write_all(&e.message.raw);
        return exit::ACCEPT;
    }
    if args.json {
        let mut v = serde_json::to_value(&e).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("raw");
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return exit::ACCEPT;
    }
    let m = &e.message;
    let opt = |o: &Option<String>| clean(o.as_deref().unwrap_or("-"));
    println!("id          {}", m.id);
    println!(
        "quarantined {} by {}",
        format_time(m.quarantined_at),
        clean(&m.node)
    );
    println!("status      {}", e.status.as_str());
    if let Some(at) = e.acted_at {
        println!(
            "            by {} at {}: {}",
            opt(&e.actor),
            format_time(at),
            opt(&e.result)
        );
    }
    println!("record      {}", opt(&m.message_record));
    println!("queue id    {}", opt(&m.queue_id));
    println!("message-id  {}", opt(&m.message_id));
    println!("mail from   {}", opt(&m.mail_from));
    for r in &m.recipients {
        println!("rcpt to     {}", clean(r));
    }
    println!("from        {}", opt(&m.from));
    println!("subject     {}", opt(&m.subject));
    println!("size        {}", e.size);
    println!("reasons     {}", clean(&m.reasons.join(" ")));
    let analysis = record
        .as_ref()
        .and_then(|r| r.analysis.as_ref())
        .map(|a| a.value());
    crate::log::print_reasons(analysis.as_ref(), &[]);
    if analysis.is_none() {
        println!("            (no record of the analysis: `unspoof log show` has what there is)");
    }
    exit::ACCEPT
}

async fn release(args: ReleaseArgs) -> u8 {
    let who = actor(args.by);
    let (store, id) = match open_for(&args.store, &args.id).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    let target = match &args.downstream {
        Some(relay) => ReleaseTarget::Downstream(relay.clone()),
        None => ReleaseTarget::Maildir(match (&args.maildir, args.store.locate()) {
            (Some(dir), _) => dir.clone(),
            (None, Ok(located)) => located.data_dir.join("maildir"),
            (None, Err(_)) => PathBuf::from("./unspoof-data/maildir"),
        }),
    };
    let released = unspoof_console::release::release(&store, &id, &who, &target).await;
    store.close().await;
    match released {
        Ok(to) => {
            println!("released {id} by {who}: {}", clean(&to));
            exit::ACCEPT
        }
        Err(ReleaseError::Store(e)) => fail(e),
        Err(ReleaseError::Delivery(e)) => {
            eprintln!("unspoof: release {id}: {} (still held)", clean(&e));
            exit::SOFTWARE
        }
    }
}

async fn delete(args: DeleteArgs) -> u8 {
    let who = actor(args.by);
    let (store, id) = match open_for(&args.store, &args.id).await {
        Ok(found) => found,
        Err(code) => return code,
    };
    let done = store.quarantine_delete(&id, &who).await;
    let status = match &done {
        Ok(false) => store
            .quarantine_get(&id)
            .await
            .ok()
            .flatten()
            .map(|e| e.status.as_str()),
        _ => None,
    };
    store.close().await;
    match (done, status) {
        (Ok(true), _) => {
            println!("deleted {id} by {who}");
            exit::ACCEPT
        }
        (Ok(false), Some(s)) => fail(StoreError::NotHeld(id, s)),
        (Ok(false), None) => fail(StoreError::NotFound(id)),
        (Err(e), _) => fail(e),
    }
}
