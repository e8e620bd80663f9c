//! One MTA connection: option negotiation, then for each SMTP session the envelope from
//! CONNECT/HELO/MAIL/RCPT and the macros, the message from the header and body callbacks, and
//! at end of message the engine's verdict as replies.
//!
//! Every step is bounded: the next packet must come within `idle_timeout`, be at most
//! `max_packet_size`, and a reply must be written within `write_timeout`; the engine gets
//! `eval_timeout`, with SMFIR_PROGRESS every `progress_interval` meanwhile. Whatever goes
//! wrong ends in a reply or a closed connection, never a silent wait.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use unspoof_engine::auth::ar_value;
use unspoof_engine::{Analysis, Disposition, Envelope, Outcome};

use crate::actions::{self, Caps, VERDICT_HEADER};
use crate::config::OnError;
use crate::message::Message;
use crate::wire::{self, Command, Reply, action, proto, stage};
use crate::{Decided, Peer, Quarantined, Shared};

/// Edits we may ask for. Recipients and the sender are never changed.
const WANTED_ACTIONS: u32 =
    action::ADDHDRS | action::CHGHDRS | action::CHGBODY | action::QUARANTINE;

/// Steps we do not answer (we decide only at end of message) or do not want, and the leading
/// space of header values. Taken only where the MTA offers them.
const WANTED_PROTOCOL: u32 = proto::NR_CONN
    | proto::NR_HELO
    | proto::NR_MAIL
    | proto::NR_RCPT
    | proto::NR_DATA
    | proto::NR_UNKN
    | proto::NR_EOH
    | proto::NR_BODY
    | proto::NR_HDR
    | proto::NOUNKNOWN
    | proto::HDR_LEADSPC;

/// The macros we ask for when the MTA lets us choose (SMFIF_SETSYMLIST). Postfix's defaults
/// lack `{client_addr}` and `{client_name}` at connect.
const MACRO_LISTS: &[(u32, &str)] = &[
    (
        stage::CONNECT,
        "j _ {daemon_name} {client_addr} {client_name} {client_ptr}",
    ),
    (stage::HELO, "{tls_version} {cipher}"),
    (stage::ENVFROM, "i {auth_type} {auth_authen} {mail_addr}"),
    (stage::ENVRCPT, "{rcpt_addr}"),
    (stage::DATA, "i"),
    (stage::EOM, "i"),
];

/// Recipients kept per message (Postfix's `smtpd_recipient_limit` is 1000); more are
/// accepted but not passed to the engine, which does not judge by recipient count.
const MAX_RCPT: usize = 10_000;

/// Macros by the command they came with, each stage as the MTA sent it (`name\0value\0...`,
/// made valid UTF-8); the latest stage wins on lookup.
#[derive(Default)]
struct Macros {
    stages: Vec<(u8, String)>,
}

/// Lookup order: the latest stage of a message first (libmilter keeps one list per stage).
const STAGE_ORDER: &[u8] = b"ENBLTRMHC";

fn bare(name: &str) -> &str {
    name.trim_start_matches('{').trim_end_matches('}')
}

/// The name/value pairs of one stage (see [`wire::macro_pairs`]).
fn pairs(text: &str) -> impl Iterator<Item = (&str, &str)> {
    // Split at NUL octets (ASCII, so every piece is still valid UTF-8).
    fn piece(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap_or_default()
    }
    wire::macro_pairs(text.as_bytes()).map(|(n, v)| (piece(n), piece(v)))
}

impl Macros {
    /// The macros that came with the next command `stage`, as the MACRO packet's data.
    fn set(&mut self, stage: u8, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        match self.stages.iter_mut().find(|(s, _)| *s == stage) {
            Some(slot) => {
                slot.1.clear();
                slot.1.push_str(&text);
            }
            None => self.stages.push((stage, text.into_owned())),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        let name = bare(name);
        let known = STAGE_ORDER
            .iter()
            .filter_map(|&s| self.stages.iter().find(|(x, _)| *x == s));
        let other = self.stages.iter().filter(|(s, _)| !STAGE_ORDER.contains(s));
        for (_, text) in known.chain(other) {
            for (n, v) in pairs(text) {
                if bare(n) == name {
                    return Some(v).filter(|v| !v.is_empty());
                }
            }
        }
        None
    }

    /// Forgets the macros of the message (MAIL and later), keeping the connection's.
    fn clear_message(&mut self) {
        self.stages.retain(|(s, _)| matches!(s, b'C' | b'H'));
    }
}

/// `<a@b>` (plus ESMTP arguments in later strings) to `a@b`; `<>` to the empty string.
fn address(arg: &[u8]) -> String {
    let s = String::from_utf8_lossy(arg);
    let s = s.trim();
    let s = s.strip_prefix('<').unwrap_or(s);
    let s = s.strip_suffix('>').unwrap_or(s);
    s.trim().to_string()
}

/// The address inside `[...]` of Sendmail's `_` macro (`name [192.0.2.1]`).
fn bracketed_ip(v: &str) -> Option<IpAddr> {
    let start = v.rfind('[')? + 1;
    let end = start + v[start..].find(']')?;
    let s = &v[start..end];
    s.strip_prefix("IPv6:").unwrap_or(s).parse().ok()
}

enum Flow {
    Continue,
    Close,
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    peer: Peer,
    negotiated: bool,
    version: u32,
    actions: u32,
    protocol: u32,
    macros: Macros,
    client_name: Option<String>,
    ip: Option<IpAddr>,
    helo: Option<String>,
    mail_from: Option<String>,
    rcpt: Vec<String>,
    in_transaction: bool,
    message: Message,
}

/// Serves one MTA connection (its read and write halves) to its end. Never panics on what
/// the MTA sends.
pub(crate) async fn run<R, W>(
    mut r: R,
    mut w: W,
    peer: Peer,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut session = Session {
        shared,
        peer,
        negotiated: false,
        version: wire::VERSION,
        actions: 0,
        protocol: 0,
        macros: Macros::default(),
        client_name: None,
        ip: None,
        helo: None,
        mail_from: None,
        rcpt: Vec::new(),
        in_transaction: false,
        message: Message::default(),
    };
    session.serve(&mut r, &mut w, shutdown).await;
    // Dropping the socket closes it (FIN after what was written): no separate shutdown call.
}

pub(crate) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        // The handle is gone without a shutdown: keep serving.
        std::future::pending::<()>().await;
    }
}

impl Session {
    async fn serve<R, W>(&mut self, r: &mut R, w: &mut W, shutdown: watch::Receiver<bool>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let limits = self.shared.config.limits.clone();
        let max = limits.max_packet_size;
        let mut packets = wire::PacketReader::default();
        // One shutdown watch for the connection's life, polled while idle.
        let stop = stopped(shutdown.clone());
        tokio::pin!(stop);
        // One timer for the connection's life, moved on (never earlier) as packets come: the
        // next packet must be complete within `idle_timeout` of when we began to wait for it.
        let idle = limits.idle_timeout();
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        let mut deadline = Some(timer.deadline());
        loop {
            // Every complete packet already read, without another read.
            loop {
                // Outside a transaction a shutdown closes the connection at once; inside one
                // the message is finished first.
                // (`has_changed` is a plain load; `borrow` takes the shared lock, and this runs
                // for every packet on every connection.)
                if !self.in_transaction
                    && matches!(shutdown.has_changed(), Ok(true))
                    && *shutdown.borrow()
                {
                    return;
                }
                let packet = match packets.next(max) {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        self.protocol_error(&e.to_string());
                        return;
                    }
                };
                deadline = None;
                let cmd = match wire::parse(packet) {
                    Ok(cmd) => cmd,
                    Err(e) => {
                        self.protocol_error(&e.to_string());
                        return;
                    }
                };
                match self.handle(cmd, w).await {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close) => return,
                    Err(e) => {
                        self.log(&format!("connection lost: {e}"));
                        return;
                    }
                }
            }
            if !self.in_transaction {
                packets.shrink();
            }
            let due = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + idle);
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            // Outside a transaction a shutdown ends the wait.
            let idle_wait = !self.in_transaction;
            let read = async {
                tokio::select! {
                    biased;
                    got = packets.fill(r) => Some(got),
                    _ = &mut timer => None,
                }
            };
            let got = if idle_wait {
                tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    got = read => got,
                }
            } else {
                read.await
            };
            let err = match got {
                Some(Ok(0)) if packets.is_empty() => return,
                Some(Ok(0)) => Some("connection closed inside a packet".to_string()),
                Some(Ok(_)) => None,
                Some(Err(_)) => return,
                None => Some(format!("no packet for {} s", limits.idle_timeout)),
            };
            if let Some(e) = err {
                self.protocol_error(&e);
                return;
            }
        }
    }

    fn protocol_error(&self, what: &str) {
        self.shared
            .stats
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        self.log(&format!("protocol error, closing: {what}"));
    }

    fn log(&self, what: &str) {
        eprintln!("unspoof milter: {}: {what}", self.peer);
    }

    /// Whether the MTA waits for a reply to the step with no-reply flag `nr`.
    fn wants_reply(&self, nr: u32) -> bool {
        self.protocol & nr == 0
    }

    async fn reply_unless<W: AsyncWrite + Unpin>(
        &self,
        nr: u32,
        w: &mut W,
    ) -> std::io::Result<Flow> {
        if self.wants_reply(nr) {
            self.send(w, &[Reply::Continue]).await?;
        }
        Ok(Flow::Continue)
    }

    async fn send<W: AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        replies: &[Reply],
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(512);
        for r in replies {
            r.encode(&mut out);
        }
        let write = async {
            w.write_all(&out).await?;
            w.flush().await
        };
        match tokio::time::timeout(self.shared.config.limits.write_timeout(), write).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "reply not written within write_timeout",
            )),
        }
    }

    fn reset_message(&mut self) {
        self.mail_from = None;
        self.rcpt.clear();
        self.message = Message::default();
        self.in_transaction = false;
        self.macros.clear_message();
    }

    fn reset_connection(&mut self) {
        self.reset_message();
        self.macros = Macros::default();
        self.client_name = None;
        self.ip = None;
        self.helo = None;
    }

    async fn handle<W: AsyncWrite + Unpin>(
        &mut self,
        cmd: Command<'_>,
        w: &mut W,
    ) -> std::io::Result<Flow> {
        if !self.negotiated && !matches!(cmd, Command::OptNeg { .. } | Command::Quit) {
            self.protocol_error("command before option negotiation");
            return Ok(Flow::Close);
        }
        let max = self.shared.config.limits.max_message_size;
        match cmd {
            Command::OptNeg {
                version,
                actions: offered_actions,
                protocol: offered_protocol,
            } => {
                if version < wire::MIN_VERSION {
                    self.protocol_error(&format!("MTA protocol version {version} is too old"));
                    return Ok(Flow::Close);
                }
                self.version = version.min(wire::VERSION);
                self.actions = WANTED_ACTIONS & offered_actions;
                self.protocol = WANTED_PROTOCOL & offered_protocol;
                let mut macros = Vec::new();
                if self.version >= 6 && offered_actions & action::SETSYMLIST != 0 {
                    self.actions |= action::SETSYMLIST;
                    macros = MACRO_LISTS
                        .iter()
                        .map(|(s, n)| (*s, n.to_string()))
                        .collect();
                }
                if self.actions & action::SETSYMLIST != 0 {
                    // The queue id comes with end of message (asked for above): DATA is one
                    // step and two packets we do not need.
                    self.protocol |= proto::NODATA & offered_protocol;
                }
                self.negotiated = true;
                self.reset_connection();
                self.send(
                    w,
                    &[Reply::OptNeg {
                        version: self.version,
                        actions: self.actions,
                        protocol: self.protocol,
                        macros,
                    }],
                )
                .await?;
                Ok(Flow::Continue)
            }
            Command::Macro { stage, data } => {
                self.macros.set(stage, data);
                Ok(Flow::Continue)
            }
            Command::Connect {
                hostname,
                family,
                port: _,
                address,
            } => {
                let macros = std::mem::take(&mut self.macros);
                self.reset_connection();
                self.macros = macros;
                self.ip = wire::connect_ip(family, address);
                let name = String::from_utf8_lossy(hostname).into_owned();
                self.client_name = (!name.is_empty()).then_some(name);
                self.reply_unless(proto::NR_CONN, w).await
            }
            Command::Helo(helo) => {
                let helo = String::from_utf8_lossy(helo).trim().to_string();
                self.helo = (!helo.is_empty()).then_some(helo);
                self.reply_unless(proto::NR_HELO, w).await
            }
            Command::Mail(args) => {
                let macros_mail = self.macros.stages.iter().position(|(s, _)| *s == b'M');
                // A new transaction: forget the last message but keep the MAIL macros that
                // came with this command.
                let kept = macros_mail.map(|i| self.macros.stages[i].clone());
                self.reset_message();
                if let Some(m) = kept {
                    self.macros.stages.push(m);
                }
                self.mail_from = args.first().map(|a| address(a));
                self.in_transaction = true;
                self.reply_unless(proto::NR_MAIL, w).await
            }
            Command::Rcpt(args) => {
                if let (Some(a), true) = (args.first(), self.rcpt.len() < MAX_RCPT) {
                    self.rcpt.push(address(a));
                }
                self.in_transaction = true;
                self.reply_unless(proto::NR_RCPT, w).await
            }
            Command::Data => self.reply_unless(proto::NR_DATA, w).await,
            Command::Header { name, value } => {
                let leadspc = self.protocol & proto::HDR_LEADSPC != 0;
                self.message.header(name, value, leadspc, max);
                self.reply_unless(proto::NR_HDR, w).await
            }
            Command::EndOfHeaders => {
                self.message.end_of_headers();
                self.reply_unless(proto::NR_EOH, w).await
            }
            Command::Body(chunk) => {
                self.message.body(chunk, max);
                self.reply_unless(proto::NR_BODY, w).await
            }
            Command::EndOfMessage(chunk) => {
                if !chunk.is_empty() {
                    self.message.body(chunk, max);
                }
                self.end_of_message(w).await?;
                self.reset_message();
                Ok(Flow::Continue)
            }
            Command::Abort => {
                self.reset_message();
                Ok(Flow::Continue)
            }
            Command::Quit => Ok(Flow::Close),
            Command::QuitNewConnection => {
                self.reset_connection();
                Ok(Flow::Continue)
            }
            Command::Unknown(_) => self.reply_unless(proto::NR_UNKN, w).await,
        }
    }

    /// The envelope from the commands, with the macros where a command said nothing.
    fn envelope(&self) -> Envelope {
        let m = &self.macros;
        let ip = self
            .ip
            .or_else(|| m.get("client_addr").and_then(|v| v.trim().parse().ok()))
            .or_else(|| m.get("_").and_then(bracketed_ip));
        let mail_from = self
            .mail_from
            .clone()
            .or_else(|| m.get("mail_addr").map(|v| address(v.as_bytes())));
        let mut rcpt = self.rcpt.clone();
        if rcpt.is_empty() {
            rcpt.extend(m.get("rcpt_addr").map(|v| address(v.as_bytes())));
        }
        let received_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs() as i64);
        Envelope {
            ip,
            helo: self.helo.clone().or_else(|| m.get("s").map(str::to_string)),
            mail_from,
            rcpt,
            received_at,
            auth_user: m.get("auth_authen").map(str::to_string),
            first_contact: None,
            known_sender: None,
            sent_by_us: None,
            allowed_sender: None,
            signing_keys_seen: None,
        }
    }

    fn caps(&self) -> Caps {
        Caps {
            actions: self.actions,
            leadspc: self.protocol & proto::HDR_LEADSPC != 0,
        }
    }

    /// Runs the engine on the message, sending progress while it works. (A panic in the engine
    /// is the engine's own defer: `Engine::evaluate` catches it, for every door.)
    async fn evaluate<W: AsyncWrite + Unpin>(
        &self,
        envelope: &Envelope,
        w: &mut W,
    ) -> std::io::Result<Result<Analysis, String>> {
        let limits = &self.shared.config.limits;
        let engine = &self.shared.engine;
        let begun = tokio::time::Instant::now();
        // Boxed: the engine's future is large, and inline it would make every connection's
        // task that large (allocated and copied at each accept).
        let mut run = Box::pin(engine.evaluate(self.message.bytes(), envelope));
        // The engine first: with warm caches it is done on the first poll and no timer is made.
        let first = std::future::poll_fn(|cx| match run.as_mut().poll(cx) {
            std::task::Poll::Ready(done) => std::task::Poll::Ready(Some(done)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        if let Some(done) = first {
            return Ok(Ok(done));
        }
        let deadline = tokio::time::sleep_until(begun + limits.eval_timeout());
        tokio::pin!(deadline);
        let every = limits.progress_interval();
        let mut progress = tokio::time::interval_at(begun + every, every);
        loop {
            tokio::select! {
                biased;
                done = &mut run => return Ok(Ok(done)),
                _ = &mut deadline => {
                    return Ok(Err(format!("no verdict within eval_timeout ({} s)", limits.eval_timeout)));
                }
                _ = progress.tick() => self.send(w, &[Reply::Progress]).await?,
            }
        }
    }

    async fn end_of_message<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        let started = Instant::now();
        let shared = self.shared.clone();
        let stats = &shared.stats;
        stats.messages.fetch_add(1, Ordering::Relaxed);
        let qid = self.macros.get("i").unwrap_or("-").to_string();
        let envelope = self.envelope();

        if let (true, Some(user)) = (shared.config.skip_authenticated, &envelope.auth_user) {
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            if shared.config.log_verdicts {
                self.log(&format!(
                    "{qid} accept: authenticated submission by {user:?}, not judged"
                ));
            }
            let hostname = shared.engine.policy().hostname.clone();
            let mut replies = actions::forged_deletions(&self.message, &hostname, self.caps());
            if self.actions & action::ADDHDRS != 0 {
                let value = format!(
                    "{}; auth=pass smtp.auth={}",
                    ar_value(&hostname),
                    ar_value(user)
                );
                let value = if self.caps().leadspc {
                    format!(" {value}")
                } else {
                    value
                };
                replies.push(Reply::InsertHeader {
                    index: 0,
                    name: "Authentication-Results".into(),
                    value,
                });
            }
            replies.push(Reply::Accept);
            self.record(
                &envelope,
                &qid,
                None,
                Outcome::Skipped,
                Vec::new(),
                None,
                started,
            );
            return self.send(w, &replies).await;
        }

        let decided = if self.message.oversized() {
            Err(format!(
                "message of {} octets is over max_message_size",
                self.message.size()
            ))
        } else {
            self.message.end_of_headers();
            self.evaluate(&envelope, w).await?
        };

        let replies = match decided {
            Ok(analysis) => {
                // Trust on first use: a delivered first use of a signing key teaches the store
                // (the gateway does the same after its decision).
                shared.engine.remember_signer(&analysis).await;
                let disposition = analysis.decision.disposition;
                let mut stored = None;
                if disposition == Disposition::Quarantine {
                    stored = self.store_quarantined(&analysis, &envelope, &qid).await;
                }
                let note = stored.as_ref().map(|id| format!("stored as {id}"));
                let replies = actions::replies(&analysis, self.caps(), note.as_deref(), &qid);
                let counter = match disposition {
                    Disposition::Accept => &stats.accepted,
                    Disposition::Tag => &stats.tagged,
                    Disposition::Quarantine => &stats.quarantined,
                    Disposition::Reject => &stats.rejected,
                    Disposition::Defer => &stats.deferred,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if shared.config.log_verdicts {
                    self.log(&format!(
                        "{qid} {disposition} reasons={} client={} from=<{}> ms={}",
                        actions::unique_codes(analysis.verdict.reasons.iter()).join(","),
                        envelope.ip.map_or("-".into(), |ip| ip.to_string()),
                        envelope.mail_from.as_deref().unwrap_or(""),
                        started.elapsed().as_millis()
                    ));
                }
                let codes = actions::unique_codes(analysis.verdict.reasons.iter());
                self.record(
                    &envelope,
                    &qid,
                    Some(&analysis),
                    Outcome::from(disposition),
                    codes,
                    stored.as_deref(),
                    started,
                );
                replies
            }
            Err(why) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                let outcome = match shared.config.on_error {
                    OnError::Tempfail => Outcome::Tempfail,
                    OnError::Accept => Outcome::Unchecked,
                };
                self.record(
                    &envelope,
                    &qid,
                    None,
                    outcome,
                    vec![why.clone()],
                    None,
                    started,
                );
                match shared.config.on_error {
                    OnError::Tempfail => {
                        stats.tempfailed.fetch_add(1, Ordering::Relaxed);
                        self.log(&format!("{qid} tempfail (on_error): {why}"));
                        vec![Reply::Tempfail]
                    }
                    OnError::Accept => {
                        stats.accepted.fetch_add(1, Ordering::Relaxed);
                        self.log(&format!("{qid} accept unchecked (on_error): {why}"));
                        let hostname = shared.engine.policy().hostname.clone();
                        let mut r =
                            actions::forged_deletions(&self.message, &hostname, self.caps());
                        if self.actions & action::ADDHDRS != 0 {
                            let value = if self.caps().leadspc {
                                " unchecked"
                            } else {
                                "unchecked"
                            };
                            r.push(Reply::InsertHeader {
                                index: 0,
                                name: VERDICT_HEADER.into(),
                                value: value.into(),
                            });
                        }
                        r.push(Reply::Accept);
                        r
                    }
                }
            }
        };
        self.send(w, &replies).await
    }

    /// Hands the message's record to the message log, if there is one.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        envelope: &Envelope,
        qid: &str,
        analysis: Option<&Analysis>,
        outcome: Outcome,
        reasons: Vec<String>,
        stored_at: Option<&str>,
        started: Instant,
    ) {
        let Some(log) = &self.shared.log else { return };
        let client_name = self.client_name.as_deref().filter(|n| !n.starts_with('['));
        // The store's answers the engine asked for, with the envelope they belong to.
        let answered;
        let envelope = match analysis {
            Some(a) => {
                let mut e = envelope.clone();
                e.first_contact = a.envelope.first_contact;
                e.known_sender = a.envelope.known_sender;
                e.sent_by_us = a.envelope.sent_by_us;
                answered = e;
                &answered
            }
            None => envelope,
        };
        log.record(&Decided {
            analysis,
            envelope,
            queue_id: (qid != "-").then_some(qid),
            client_name,
            outcome,
            reasons,
            stored_at,
            size: self.message.size(),
            latency_us: started.elapsed().as_micros() as u64,
        });
    }

    /// Hands the message to the quarantine store, if there is one; returns the copy's id.
    async fn store_quarantined(
        &self,
        analysis: &Analysis,
        envelope: &Envelope,
        qid: &str,
    ) -> Option<String> {
        let store = self.shared.store.clone()?;
        let item = Quarantined {
            raw: self.message.bytes(),
            analysis,
            envelope,
            queue_id: (qid != "-").then_some(qid),
        };
        let timeout = self.shared.config.limits.eval_timeout();
        match tokio::time::timeout(timeout, store.store(item)).await {
            Ok(Ok(id)) => Some(id),
            Ok(Err(e)) => {
                self.log(&format!(
                    "{qid} quarantine store failed (MTA hold only): {e}"
                ));
                None
            }
            Err(_) => {
                self.log(&format!("{qid} quarantine store timed out (MTA hold only)"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_latest_stage_wins_and_message_ones_are_forgotten() {
        let mut m = Macros::default();
        m.set(b'C', b"{client_addr}\x00192.0.2.1\0j\0mx\0");
        m.set(b'M', b"i\0Q1\0{auth_authen}\0joe\0");
        m.set(b'E', b"i\0Q2\0");
        assert_eq!(m.get("i"), Some("Q2"));
        assert_eq!(m.get("{auth_authen}"), Some("joe"));
        assert_eq!(m.get("client_addr"), Some("192.0.2.1"));
        m.clear_message();
        assert_eq!(m.get("i"), None);
        assert_eq!(m.get("j"), Some("mx"));
        // A stage sent again replaces the old one; an empty value is no value.
        m.set(b'C', b"j\0\0{client_addr}");
        assert_eq!(m.get("j"), None);
        assert_eq!(m.get("{client_addr}"), None);
        m.set(b'C', b"j\0\xffmx\0");
        assert_eq!(m.get("j"), Some("\u{fffd}mx"));
    }

    #[test]
    fn addresses() {
        assert_eq!(address(b"<a@example.com>"), "a@example.com");
        assert_eq!(address(b"<>"), "");
        assert_eq!(address(b" a@example.com "), "a@example.com");
        assert_eq!(
            bracketed_ip("mail.example [192.0.2.7]"),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(
            bracketed_ip("x [IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(bracketed_ip("unknown"), None);
    }
}
