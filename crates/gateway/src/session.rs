//! One SMTP session: the state machine of RFC 5321 with the extensions we advertise, relay
//! control, submission AUTH, and the decide-before-answering DATA end.
//!
//! **Invariant:** the final reply to DATA is sent only after the message's fate is durable:
//! relayed and accepted by the downstream, written and fsynced into the Maildir or quarantine,
//! or refused. Every other path answers 4xx, so the client keeps the message and retries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8};
use smtp_proto::{Error as ProtoError, Request};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::Shared;
use crate::auth;
use crate::conn::{Conn, DataPace, Line, Stream};
use crate::data::{DataDefect, DotReader, check_shape};
use crate::decide::{Action, Decide, Decision, Envelope, HeaderEdit};
use crate::message;
use crate::relay::{Downstream, RelayError};
use crate::reply;
use crate::store::{MessageRecord, QuarantineItem, SessionRecord, TlsInfo};
use unspoof_engine::Outcome;
use unspoof_engine::message::auth_results;

/// Which listener a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 25: unauthenticated mail for our domains, decided by the engine.
    Inbound,
    /// Submission: authenticated users, relayed outward, DKIM-signed.
    Submission,
}

impl Listener {
    fn as_str(self) -> &'static str {
        match self {
            Listener::Inbound => "inbound",
            Listener::Submission => "submission",
        }
    }
}

enum Flow {
    Continue,
    Close,
}

struct Transaction {
    mail_from: String,
    eightbit: bool,
    smtputf8: bool,
    rcpts: Vec<String>,
    /// The downstream connection broke during this transaction: only 451 from here on.
    downstream_broken: bool,
}

enum Rdns {
    Pending(JoinHandle<Option<String>>),
    Done(Option<String>),
}

pub(crate) struct Session<D: Decide> {
    shared: Arc<Shared<D>>,
    /// UUIDv7: unique across the gateways of a fleet.
    id: String,
    started_unix: i64,
    messages: u32,
    /// How the session ended, for its record (see [`SessionRecord::outcome`]).
    end: &'static str,
    conn: Conn,
    listener: Listener,
    peer: SocketAddr,
    rdns: Rdns,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<TlsInfo>,
    auth_user: Option<String>,
    errors: u32,
    /// Refusals at MAIL/RCPT put on record so far (bounded by `max_refusal_records`).
    refusals_recorded: u32,
    /// Whether the session's record (as it stands) went with a message's durable record.
    session_on_record: bool,
    tx: Option<Transaction>,
    downstream: Option<Downstream>,
    started: Instant,
}

impl<D: Decide> Session<D> {
    pub fn new(
        shared: Arc<Shared<D>>,
        tcp: TcpStream,
        peer: SocketAddr,
        listener: Listener,
    ) -> Self {
        let _ = tcp.set_nodelay(true);
        let rdns = if shared.config.reverse_dns {
            let r = shared.rdns.clone();
            let ip = peer.ip();
            Rdns::Pending(tokio::spawn(async move {
                timeout(Duration::from_secs(10), r.lookup(ip))
                    .await
                    .ok()
                    .flatten()
            }))
        } else {
            Rdns::Done(None)
        };
        Session {
            shared,
            id: uuid::Uuid::now_v7().to_string(),
            started_unix: unix_now(),
            messages: 0,
            end: "dropped",
            conn: Conn::new(tcp),
            listener,
            peer,
            rdns,
            helo: None,
            esmtp: false,
            tls: None,
            auth_user: None,
            errors: 0,
            refusals_recorded: 0,
            session_on_record: false,
            tx: None,
            downstream: None,
            started: Instant::now(),
        }
    }

    async fn reverse_name(&mut self) -> Option<String> {
        if let Rdns::Pending(h) = &mut self.rdns {
            let name = h.await.ok().flatten();
            self.rdns = Rdns::Done(name);
        }
        match &self.rdns {
            Rdns::Done(n) => n.clone(),
            Rdns::Pending(_) => None,
        }
    }

    /// Runs the session to its end.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let limits = self.shared.config.limits.clone();
        self.conn.reply(&format!(
            "220 {} ESMTP unspoof\r\n",
            self.shared.config.hostname
        ));
        loop {
            if *shutdown.borrow() && !self.conn.has_buffered_input() {
                self.conn.reply(reply::SHUTTING_DOWN);
                self.end = "shutdown";
                break;
            }
            if self.started.elapsed() > limits.session_timeout() {
                self.conn.reply(reply::TIMEOUT);
                self.end = "timeout";
                break;
            }
            let max = limits.max_command_line;
            let line_timeout = limits.line_timeout();
            let read = tokio::select! {
                r = timeout(limits.command_timeout(), self.conn.read_line(max, line_timeout)) => r,
                // Err: the ServeHandle was dropped, which also means shut down.
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        self.conn.reply(reply::SHUTTING_DOWN);
                        self.end = "shutdown";
                        break;
                    }
                    continue;
                }
            };
            let line = match read {
                Err(_) => {
                    self.conn.reply(reply::TIMEOUT);
                    self.end = "timeout";
                    break;
                }
                // A line begun and not finished within `line_timeout`.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    self.conn.reply(reply::TIMEOUT);
                    self.end = "timeout";
                    break;
                }
                Ok(Err(_)) => break,
                Ok(Ok(Line::TooLong)) => {
                    self.error(reply::LINE_TOO_LONG);
                    Flow::Continue
                }
                Ok(Ok(Line::Line(l))) => self.command(l, &mut shutdown).await,
            };
            if matches!(line, Flow::Close) {
                break;
            }
            if self.errors >= limits.max_errors {
                self.conn.reply(reply::TOO_MANY_ERRORS);
                self.end = "errors";
                break;
            }
        }
        let _ = self.conn.flush().await;
        if let Some(d) = self.downstream.take() {
            d.quit().await;
        }
        self.shared.metrics.session_end(self.end);
        let record = self.session_record(Some(unix_now())).await;
        self.shared.log.session(&record);
    }

    /// The session's record: as it ended (`ended_at` given), or as it stands (`open`).
    async fn session_record(&mut self, ended_at: Option<i64>) -> SessionRecord {
        SessionRecord {
            id: self.id.clone(),
            started_at: self.started_unix,
            ended_at,
            listener: self.listener.as_str(),
            client_ip: self.peer.ip().to_string(),
            client_port: self.peer.port(),
            reverse_dns: self.reverse_name().await,
            helo: self.helo.clone(),
            tls: self.tls.clone(),
            auth_user: self.auth_user.clone(),
            messages: self.messages,
            outcome: if ended_at.is_some() { self.end } else { "open" },
        }
    }

    /// Refuses a transaction at MAIL FROM or RCPT TO and puts the attempt on record: a
    /// `refused` message record with the reason `code`, the sender and the refused recipient
    /// (at most `max_refusal_records` per connection; the rest are only counted). `error`:
    /// the refusal also counts towards `max_errors`.
    async fn refuse_envelope(
        &mut self,
        text: &str,
        code: &str,
        mail_from: Option<String>,
        rcpt: Option<String>,
        error: bool,
    ) {
        if error {
            self.error(text);
        } else {
            self.conn.reply(text);
        }
        let metrics = &self.shared.metrics;
        metrics.refusal(code);
        if self.refusals_recorded >= self.shared.config.limits.max_refusal_records {
            metrics.refusals_unrecorded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.refusals_recorded += 1;
        let record = MessageRecord {
            time: unix_now(),
            queue_id: String::new(),
            session_id: self.id.clone(),
            listener: self.listener.as_str(),
            client_ip: self.peer.ip().to_string(),
            client_port: self.peer.port(),
            reverse_dns: self.reverse_name().await,
            helo: self.helo.clone(),
            tls: self.tls.clone(),
            auth_user: self.auth_user.clone(),
            mail_from,
            recipients: rcpt.into_iter().collect(),
            message_id: None,
            size: 0,
            outcome: Outcome::Refused,
            reasons: vec![code.to_string()],
            reply: text.trim_end().to_string(),
            downstream_reply: None,
            stored_at: None,
            latency_us: 0,
            analysis: None,
        };
        self.shared.log.record(&record);
    }

    fn error(&mut self, text: &str) {
        self.errors += 1;
        self.conn.reply(text);
    }

    async fn reset_transaction(&mut self) {
        self.tx = None;
        if let Some(d) = &mut self.downstream
            && d.rset().await.is_err()
        {
            self.downstream = None;
        }
    }

    async fn command(&mut self, line: Vec<u8>, shutdown: &mut watch::Receiver<bool>) -> Flow {
        // Commands end in CRLF (RFC 5321 2.3.8); a lone LF is tolerated, a CR elsewhere is not.
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        // RFC 5321 2.4 / RFC 6531 3.3: commands are ASCII, or UTF-8 with SMTPUTF8; never
        // other 8-bit text, which each program would read differently.
        if body.contains(&b'\r') || body.contains(&0) || std::str::from_utf8(body).is_err() {
            self.error(reply::SYNTAX);
            return Flow::Continue;
        }
        let mut normalized = body.to_vec();
        normalized.extend_from_slice(b"\r\n");
        let request = Request::parse(&mut normalized.iter()).map(|r| r.into_owned());
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                // A malformed address is an attempt on record, with what the client wrote.
                let written = || Some(written_address(body));
                match e {
                    ProtoError::InvalidSenderAddress => {
                        let (text, code) = (reply::BAD_SENDER_SYNTAX, "smtp.bad_sender_syntax");
                        self.refuse_envelope(text, code, written(), None, true)
                            .await
                    }
                    ProtoError::InvalidRecipientAddress => {
                        let from = self.tx.as_ref().map(|t| t.mail_from.clone());
                        let (text, code) =
                            (reply::BAD_RECIPIENT_SYNTAX, "smtp.bad_recipient_syntax");
                        self.refuse_envelope(text, code, from, written(), true)
                            .await
                    }
                    ProtoError::UnknownCommand => self.error(reply::UNKNOWN_COMMAND),
                    ProtoError::UnsupportedParameter { .. } => self.error(reply::PARAM_UNSUPPORTED),
                    _ => self.error(reply::SYNTAX),
                }
                return Flow::Continue;
            }
        };
        match request {
            Request::Ehlo { host } => self.hello(host, true).await,
            Request::Helo { host } => self.hello(host, false).await,
            Request::Mail { from } => self.mail(from, body).await,
            // The futures of RCPT (downstream connect), DATA (engine, relay, store) and
            // STARTTLS (handshake) are large; boxed, they exist only while they run, and the
            // state every idle session keeps stays small (see `docs/gateway.md`, memory).
            Request::Rcpt { to } => Box::pin(self.rcpt(to.address, body)).await,
            Request::Data => return Box::pin(self.data(shutdown)).await,
            Request::Rset => {
                self.reset_transaction().await;
                self.conn.reply(reply::RESET_OK);
            }
            Request::Noop { .. } => self.conn.reply(reply::OK),
            Request::Quit => {
                self.conn.reply(reply::BYE);
                self.end = "quit";
                return Flow::Close;
            }
            Request::Vrfy { .. } => self.conn.reply(reply::VRFY),
            Request::Help { .. } => self.conn.reply(reply::HELP),
            Request::StartTls => return Box::pin(self.starttls()).await,
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, initial_response).await,
            Request::Lhlo { .. } => self.error(reply::UNKNOWN_COMMAND),
            // BDAT (CHUNKING), EXPN, ETRN, ATRN, BURL: not offered.
            _ => self.error(reply::NOT_IMPLEMENTED),
        }
        Flow::Continue
    }

    async fn hello(&mut self, host: String, esmtp: bool) {
        let ok = !host.is_empty()
            && host.len() <= 255
            && host
                .chars()
                .all(|c| c.is_alphanumeric() || "-._:[]".contains(c) || !c.is_ascii());
        if !ok {
            self.error(reply::SYNTAX);
            return;
        }
        // RFC 5321 4.1.4: EHLO/HELO also resets the transaction.
        self.reset_transaction().await;
        self.helo = Some(host);
        self.esmtp = esmtp;
        let name = &self.shared.config.hostname;
        if !esmtp {
            self.conn.reply(&format!("250 {name}\r\n"));
            return;
        }
        let mut ext = vec![
            "PIPELINING".to_string(),                                       // RFC 2920
            format!("SIZE {}", self.shared.config.limits.max_message_size), // RFC 1870
            "8BITMIME".to_string(),                                         // RFC 6152
            "SMTPUTF8".to_string(),                                         // RFC 6531
            "ENHANCEDSTATUSCODES".to_string(),                              // RFC 2034
        ];
        if self.tls.is_none() && self.shared.tls.is_some() {
            ext.push("STARTTLS".to_string()); // RFC 3207
        }
        if self.listener == Listener::Submission && self.tls.is_some() && self.auth_user.is_none() {
            ext.push("AUTH PLAIN LOGIN".to_string()); // RFC 4954
        }
        let mut out = format!("250-{name}\r\n");
        for (i, e) in ext.iter().enumerate() {
            let sep = if i + 1 == ext.len() { ' ' } else { '-' };
            out.push_str(&format!("250{sep}{e}\r\n"));
        }
        self.conn.reply(&out);
    }

    async fn mail(&mut self, from: smtp_proto::MailFrom<String>, line: &[u8]) {
        if self.helo.is_none() {
            return self.error(reply::NEED_HELO);
        }
        if self.tx.is_some() {
            return self.error(reply::NESTED_MAIL);
        }
        if self.listener == Listener::Submission && self.auth_user.is_none() {
            return self.error(reply::AUTH_REQUIRED);
        }
        let cfg = &self.shared.config;
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.error(reply::PARAM_UNSUPPORTED);
        }
        // RFC 1870 6: a declared size over our limit is refused now, and one that does not fit
        // in the memory left for messages in flight is deferred now (452, RFC 1870 6.1).
        if from.size > cfg.limits.max_message_size {
            self.conn.reply(reply::SIZE_EXCEEDED);
            return;
        }
        if !self.shared.memory.would_fit(from.size) {
            self.shared
                .metrics
                .memory_refusals
                .fetch_add(1, Ordering::Relaxed);
            self.conn.reply(reply::INSUFFICIENT_STORAGE);
            return;
        }
        let address = from.address;
        // smtp-proto reads `<postmaster>` as the null path; only `<>` is the null path here
        // (RFC 5321 4.5.1 allows the bare postmaster in RCPT only).
        if address.is_empty() && !angle_content(line).is_some_and(<[u8]>::is_empty) {
            let written = Some(written_address(line));
            return self
                .refuse_envelope(
                    reply::BAD_SENDER_SYNTAX,
                    "smtp.bad_sender_syntax",
                    written,
                    None,
                    true,
                )
                .await;
        }
        // RFC 6531 3.4: a non-ASCII address needs SMTPUTF8 on the MAIL command.
        if !address.is_ascii() && from.flags & MAIL_SMTPUTF8 == 0 {
            let (text, code) = (reply::NON_ASCII_ADDRESS, "smtp.non_ascii_address");
            return self
                .refuse_envelope(text, code, Some(address), None, true)
                .await;
        }
        // The null reverse-path (bounces) is allowed inbound only; anything else must parse.
        let domain = if address.is_empty() {
            None
        } else {
            match message::split_address(&address) {
                Some((_, d)) => Some(d.to_string()),
                None => {
                    let (text, code) = (reply::BAD_SENDER_SYNTAX, "smtp.bad_sender_syntax");
                    return self
                        .refuse_envelope(text, code, Some(address), None, true)
                        .await;
                }
            }
        };
        match self.listener {
            Listener::Inbound => {
                if let Some(d) = &domain
                    && cfg.refuse_own_domain_senders
                    && cfg.is_local_domain(d)
                    && !cfg
                        .trusted_networks
                        .iter()
                        .any(|n| n.contains(&self.peer.ip()))
                {
                    let (text, code) = (reply::OWN_DOMAIN_SENDER, "smtp.own_domain_sender");
                    return self
                        .refuse_envelope(text, code, Some(address), None, false)
                        .await;
                }
            }
            Listener::Submission => {
                let user = self.auth_user.as_deref().unwrap_or("");
                if address.is_empty() || !auth::owns(&cfg.users, user, &address) {
                    let (text, code) = (reply::SENDER_NOT_OWNED, "submission.sender_not_owned");
                    return self
                        .refuse_envelope(text, code, Some(address), None, false)
                        .await;
                }
            }
        }
        self.tx = Some(Transaction {
            mail_from: address,
            eightbit: from.flags & MAIL_BODY_8BITMIME != 0,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            rcpts: Vec::new(),
            downstream_broken: false,
        });
        self.conn.reply(reply::SENDER_OK);
    }

    async fn rcpt(&mut self, to: String, line: &[u8]) {
        let Some(tx) = &self.tx else {
            return self.error(reply::NEED_MAIL);
        };
        let cfg = &self.shared.config;
        // RFC 5321 4.5.1: `RCPT TO:<postmaster>` (no domain) MUST be accepted. smtp-proto reads
        // it (and `<>`) as an empty address; it is our postmaster at our first domain.
        let to = if to.is_empty() {
            match angle_content(line) {
                Some(a) if a.eq_ignore_ascii_case(b"postmaster") => {
                    let domain = cfg.domains.first().unwrap_or(&cfg.hostname);
                    format!("postmaster@{domain}")
                }
                _ => written_address(line),
            }
        } else {
            to
        };
        let from = Some(tx.mail_from.clone());
        let refused = if !to.is_ascii() && !tx.smtputf8 {
            Some((reply::NON_ASCII_ADDRESS, "smtp.non_ascii_address"))
        } else {
            match message::split_address(&to) {
                None => Some((reply::BAD_RECIPIENT_SYNTAX, "smtp.bad_recipient_syntax")),
                // Never an open relay: inbound mail only for our domains.
                Some((_, domain))
                    if self.listener == Listener::Inbound && !cfg.is_local_domain(domain) =>
                {
                    Some((reply::RELAY_DENIED, "smtp.relay_denied"))
                }
                Some(_) => None,
            }
        };
        if let Some((text, code)) = refused {
            return self.refuse_envelope(text, code, from, Some(to), true).await;
        }
        if tx.rcpts.iter().any(|r| r.eq_ignore_ascii_case(&to)) {
            self.conn.reply(reply::RECIPIENT_OK);
            return;
        }
        if tx.rcpts.len() >= cfg.limits.max_recipients {
            self.conn.reply(reply::TOO_MANY_RECIPIENTS);
            return;
        }
        if tx.downstream_broken {
            self.conn.reply(reply::DOWNSTREAM_LOST);
            return;
        }
        let captured_only = crate::rua::captured_only(self.shared.capture.as_ref(), &to);
        let Some(addr) = cfg.downstream.clone().filter(|_| !captured_only) else {
            if let Some(tx) = &mut self.tx {
                tx.rcpts.push(to);
            }
            self.conn.reply(reply::RECIPIENT_OK);
            return;
        };
        let text = self.downstream_rcpt(&addr, &to).await;
        self.conn.reply(&text);
    }

    /// Forwards RCPT (and MAIL first, if needed) to the downstream; returns our reply line.
    async fn downstream_rcpt(&mut self, addr: &str, to: &str) -> String {
        let wait = self.shared.config.limits.downstream_timeout();
        if self.downstream.is_none() {
            match Downstream::connect(addr, &self.shared.config.hostname, wait).await {
                Ok(d) => self.downstream = Some(d),
                Err(_) => return reply::DOWNSTREAM_DOWN.to_string(),
            }
        }
        let (Some(d), Some(tx)) = (&mut self.downstream, &mut self.tx) else {
            return reply::LOCAL_ERROR.to_string();
        };
        let result = if d.in_transaction {
            d.rcpt(to).await
        } else {
            d.mail_rcpt(&tx.mail_from, tx.eightbit, tx.smtputf8, to)
                .await
        };
        match result {
            Ok(r) => {
                if r.is_positive() {
                    tx.rcpts.push(to.to_string());
                }
                r.to_client_line()
            }
            Err(_) => {
                // A transaction with recipients already accepted downstream cannot continue
                // on a new connection: the rest of it gets 451 and the client retries.
                tx.downstream_broken = !tx.rcpts.is_empty();
                self.downstream = None;
                reply::DOWNSTREAM_LOST.to_string()
            }
        }
    }

    async fn starttls(&mut self) -> Flow {
        if self.tls.is_some() {
            self.error(reply::ALREADY_TLS);
            return Flow::Continue;
        }
        let Some(acceptor) = self.shared.tls.clone() else {
            self.error(reply::TLS_UNAVAILABLE);
            return Flow::Continue;
        };
        // RFC 3207 4 / CVE-2011-0411: plaintext pipelined after STARTTLS must not be executed.
        if self.conn.has_buffered_input() {
            self.conn.discard_input();
            self.error(reply::TLS_PIPELINED);
            return Flow::Continue;
        }
        self.conn.reply(reply::READY_TLS);
        if self.conn.flush().await.is_err() {
            return Flow::Close;
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.conn.stream, Stream::Closed) else {
            return Flow::Close;
        };
        // The handshake is a few round trips: a client that dribbles it is cut like a line.
        let limits = &self.shared.config.limits;
        let wait = limits.command_timeout().min(limits.line_timeout());
        match timeout(wait, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let (_, c) = tls.get_ref();
                self.tls = Some(TlsInfo {
                    version: c
                        .protocol_version()
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default(),
                    cipher: c
                        .negotiated_cipher_suite()
                        .map(|s| format!("{:?}", s.suite()))
                        .unwrap_or_default(),
                });
                self.conn.stream = Stream::Tls(Box::new(tls));
                // RFC 3207 4.2: forget everything learned before TLS.
                self.helo = None;
                self.esmtp = false;
                self.tx = None;
                Flow::Continue
            }
            _ => Flow::Close,
        }
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Flow {
        if self.listener != Listener::Submission {
            self.error(reply::NOT_IMPLEMENTED);
            return Flow::Continue;
        }
        if self.tls.is_none() {
            self.error(reply::AUTH_NEEDS_TLS);
            return Flow::Continue;
        }
        if self.auth_user.is_some() || self.tx.is_some() || self.helo.is_none() {
            self.error(if self.auth_user.is_some() {
                reply::ALREADY_AUTH
            } else {
                reply::BAD_SEQUENCE
            });
            return Flow::Continue;
        }
        // A locked-out network gets nothing checked, not even the right password.
        let ip = self.peer.ip();
        if self.shared.auth_throttle.ip_locked(ip) {
            self.shared
                .metrics
                .auth_lockouts
                .fetch_add(1, Ordering::Relaxed);
            self.error(reply::AUTH_LOCKED);
            return Flow::Continue;
        }
        let creds = if mechanism == AUTH_PLAIN {
            let resp = if initial.is_empty() {
                match self.sasl_line("334 \r\n").await {
                    Some(r) => r,
                    None => return Flow::Close,
                }
            } else {
                initial
            };
            if resp == "*" {
                self.error(reply::AUTH_CANCELLED);
                return Flow::Continue;
            }
            auth::decode_plain(&resp)
        } else if mechanism == AUTH_LOGIN {
            let user = if initial.is_empty() {
                match self.sasl_line("334 VXNlcm5hbWU6\r\n").await {
                    Some(r) => r,
                    None => return Flow::Close,
                }
            } else {
                initial
            };
            if user == "*" {
                self.error(reply::AUTH_CANCELLED);
                return Flow::Continue;
            }
            let pass = match self.sasl_line("334 UGFzc3dvcmQ6\r\n").await {
                Some(r) => r,
                None => return Flow::Close,
            };
            if pass == "*" {
                self.error(reply::AUTH_CANCELLED);
                return Flow::Continue;
            }
            auth::decode_b64_text(&user).zip(auth::decode_b64_text(&pass))
        } else {
            self.error(reply::AUTH_MECH_UNSUPPORTED);
            return Flow::Continue;
        };
        let Some((user, pass)) = creds else {
            // Undecodable credentials are a failed attempt too (a guesser's tool may send them).
            let delay = self.shared.auth_throttle.failed(ip, None);
            tokio::time::sleep(delay).await;
            self.error(reply::SYNTAX);
            return Flow::Continue;
        };
        if self.shared.auth_throttle.account_locked(&user) {
            self.shared
                .metrics
                .auth_lockouts
                .fetch_add(1, Ordering::Relaxed);
            self.error(reply::AUTH_LOCKED);
            return Flow::Continue;
        }
        let shared = self.shared.clone();
        let name = user.clone();
        let verified =
            tokio::task::spawn_blocking(move || auth::verify(&shared.config.users, &name, &pass))
                .await
                .ok()
                .flatten();
        match verified {
            Some(u) => {
                self.shared.auth_throttle.succeeded(&user);
                self.auth_user = Some(u);
                self.conn.reply(reply::AUTH_OK);
            }
            None => {
                // The reply is held back, longer with each failure of this network or account,
                // so guessing goes slowly long before the lockout.
                let delay = self.shared.auth_throttle.failed(ip, Some(&user));
                tokio::time::sleep(delay).await;
                self.error(reply::AUTH_FAILED);
            }
        }
        Flow::Continue
    }

    /// Sends a SASL challenge and reads the client's one-line answer (`None`: hang up).
    async fn sasl_line(&mut self, challenge: &str) -> Option<String> {
        self.conn.reply(challenge);
        let limits = &self.shared.config.limits;
        match timeout(
            limits.command_timeout(),
            self.conn
                .read_line(limits.max_command_line, limits.line_timeout()),
        )
        .await
        {
            Ok(Ok(Line::Line(l))) => Some(
                String::from_utf8_lossy(&l)
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            _ => None,
        }
    }

    async fn data(&mut self, shutdown: &mut watch::Receiver<bool>) -> Flow {
        let _ = shutdown;
        let Some(tx) = &self.tx else {
            self.error(reply::NEED_MAIL);
            return Flow::Continue;
        };
        if tx.rcpts.is_empty() {
            // RFC 5321 3.3 / RFC 2920 3.1: DATA with no accepted recipient.
            self.error(if tx.downstream_broken {
                reply::DOWNSTREAM_LOST
            } else {
                reply::NO_VALID_RECIPIENTS
            });
            return Flow::Continue;
        }
        if tx.downstream_broken {
            self.conn.reply(reply::DOWNSTREAM_LOST);
            self.reset_transaction().await;
            return Flow::Continue;
        }
        self.conn.reply(reply::START_DATA);
        let limits = self.shared.config.limits.clone();
        let mut reader = DotReader::new(limits.max_message_size).with_budget(&self.shared.memory);
        let pace = DataPace {
            line_timeout: limits.line_timeout(),
            min_rate: limits.min_data_rate,
        };
        match timeout(
            limits.data_timeout(),
            self.conn.read_data(&mut reader, pace),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.conn.reply(reply::TIMEOUT);
                self.end = "timeout";
                return Flow::Close;
            }
            Ok(Err(_)) => return Flow::Close,
            Err(_) => {
                self.conn.reply(reply::TIMEOUT);
                self.end = "timeout";
                return Flow::Close;
            }
        }
        self.messages += 1;
        self.end_of_data(reader).await;
        self.reset_transaction().await;
        Flow::Continue
    }

    async fn end_of_data(&mut self, mut reader: DotReader) {
        let ended = Instant::now();
        // The message's share of `max_inflight_memory`, held until its final reply.
        let _charge = reader.take_charge();
        let now = unix_now();
        let queue_id = self.shared.queue_ids.next();
        let limits = &self.shared.config.limits;
        let checked = reader.finish().and_then(|m| {
            check_shape(
                &m,
                limits.max_line_length,
                limits.max_header_fields,
                limits.max_header_size,
            )
            .map(|()| m)
        });
        let tx = self.tx.take().expect("DATA without transaction");
        let envelope = Envelope {
            ip: Some(self.peer.ip()),
            helo: self.helo.clone(),
            mail_from: Some(tx.mail_from.clone()),
            rcpt: tx.rcpts.clone(),
            received_at: Some(now),
            auth_user: self.auth_user.clone(),
        };
        let mut out = Fate::default();
        let mut size = 0;
        let mut message_id = None;
        match checked {
            Err(defect) if defect.is_temporary() => {
                self.shared
                    .metrics
                    .memory_refusals
                    .fetch_add(1, Ordering::Relaxed);
                out.tempfail(reply::INSUFFICIENT_STORAGE, defect.code());
            }
            Err(defect) => {
                out.refuse(defect_reply(defect), defect.code());
            }
            Ok(msg) => {
                size = msg.len();
                message_id = message::header(&msg, "Message-ID");
                match self.listener {
                    Listener::Inbound => {
                        self.decide_inbound(&queue_id, &envelope, msg, &mut out)
                            .await
                    }
                    Listener::Submission => self.submit(&queue_id, &envelope, msg, &mut out).await,
                }
            }
        }
        self.tx = Some(tx);
        let latency = ended.elapsed();
        let held = out.held.take();
        let mut record = MessageRecord {
            time: now,
            queue_id,
            session_id: self.id.clone(),
            listener: self.listener.as_str(),
            client_ip: self.peer.ip().to_string(),
            client_port: self.peer.port(),
            reverse_dns: self.reverse_name().await,
            helo: self.helo.clone(),
            tls: self.tls.clone(),
            auth_user: self.auth_user.clone(),
            mail_from: envelope.mail_from,
            recipients: envelope.rcpt,
            message_id,
            size,
            outcome: out.outcome,
            reasons: out.reasons,
            reply: out.reply.trim_end().to_string(),
            downstream_reply: out.downstream_reply,
            stored_at: out.stored_at,
            latency_us: latency.as_micros() as u64,
            analysis: out.analysis,
        };
        // The record is made durable before the reply, as the message is: a 250 the client
        // heard always has its record, even after kill -9. The session's record goes with the
        // first message, as it stands (its final form replaces it when the session ends).
        let session = if self.session_on_record {
            None
        } else {
            Some(self.session_record(None).await)
        };
        let log = &self.shared.log;
        let durable = match held {
            None => log.record_durable(&record, session.as_ref()).await,
            // A quarantined message and its record in one durable write.
            Some(item) => match self
                .shared
                .quarantine
                .quarantine_with_record(item, &mut record, session.as_ref())
                .await
            {
                Ok(()) => log.record_held(&record, session.as_ref()).await,
                Err(_) => {
                    // Neither is stored: the client retries, and this is what is on record.
                    out.reply = reply::LOCAL_ERROR.into();
                    record.outcome = Outcome::Tempfail;
                    record.reasons.push("store.quarantine_failed".into());
                    record.reply = out.reply.trim_end().to_string();
                    record.stored_at = None;
                    log.record_durable(&record, session.as_ref()).await
                }
            },
        };
        if durable.is_ok() {
            self.session_on_record = true;
        } else {
            // The message's fate is settled (relayed, stored or refused): the reply stands.
            self.shared
                .metrics
                .records_not_durable
                .fetch_add(1, Ordering::Relaxed);
        }
        self.conn.reply(&out.reply);
        // The client waits for this reply (it ends a PIPELINING group, RFC 2920 3.1). A write
        // error shows at the next read.
        let _ = self.conn.flush().await;
        self.shared.metrics.message(record.outcome, ended.elapsed());
    }

    /// Inbound: the engine decides, then we act.
    async fn decide_inbound(
        &mut self,
        queue_id: &str,
        envelope: &Envelope,
        msg: Vec<u8>,
        out: &mut Fate,
    ) {
        let cfg = &self.shared.config;
        let decided = timeout(
            cfg.limits.decide_timeout(),
            self.shared.decider.decide(&msg, envelope, &cfg.hostname),
        )
        .await;
        let Ok(decision) = decided else {
            out.tempfail(reply::LOCAL_ERROR, "engine.timeout");
            return;
        };
        out.reasons = decision.reasons.iter().map(|r| r.code.clone()).collect();
        out.analysis = decision.analysis.clone();
        let Decision {
            action,
            reply: engine_reply,
            edits,
            body,
            ..
        } = decision;
        let on_top = edits
            .iter()
            .filter(|e| matches!(e, HeaderEdit::Insert { .. }))
            .count();
        match action {
            Action::Reject | Action::Defer => {
                out.outcome = Outcome::from(action);
                // The engine's reply with our queue id; the codes are in the record.
                out.reply = format!("{}\r\n", engine_reply.line(Some(queue_id)));
            }
            Action::Quarantine => {
                let edited = unspoof_engine::decision::apply(&msg, &edits, body.as_deref());
                drop(msg);
                let full = self.with_received(queue_id, envelope, edited, on_top).await;
                let q = self.shared.quarantine.clone();
                let item = QuarantineItem {
                    queue_id: queue_id.to_string(),
                    session_id: self.id.clone(),
                    envelope: envelope.clone(),
                    message: full,
                    reasons: out.reasons.clone(),
                    analysis: out.analysis.clone(),
                };
                if q.keeps_records() {
                    // Stored with its record in one write (`end_of_data`), one wait before
                    // the 250 instead of one for the message and one for the record.
                    out.outcome = Outcome::Quarantine;
                    out.reply = queued(queue_id);
                    out.held = Some(item);
                    return;
                }
                let stored = tokio::task::spawn_blocking(move || q.quarantine(item)).await;
                match stored {
                    Ok(Ok(at)) => {
                        out.outcome = Outcome::Quarantine;
                        out.stored_at = Some(at);
                        out.reply = queued(queue_id);
                    }
                    _ => out.tempfail(reply::LOCAL_ERROR, "store.quarantine_failed"),
                }
            }
            Action::Accept | Action::Tag => {
                // One copy of the message at a time: the edited one replaces the original.
                let edited = unspoof_engine::decision::apply(&msg, &edits, body.as_deref());
                drop(msg);
                let full = self.with_received(queue_id, envelope, edited, on_top).await;
                use crate::rua::{Captured, capture};
                match capture(self.shared.capture.as_ref(), queue_id, envelope, &full).await {
                    Captured::None => {}
                    Captured::AndDeliver => out.reasons.push("dmarc.report_captured".into()),
                    Captured::Done(at) => {
                        out.reasons.push("dmarc.report_captured".into());
                        out.outcome = Outcome::from(action);
                        out.reply = queued(queue_id);
                        out.stored_at = Some(at);
                        return;
                    }
                    Captured::Failed => {
                        return out.tempfail(reply::LOCAL_ERROR, "store.report_capture_failed");
                    }
                }
                self.deliver(queue_id, envelope, full, Outcome::from(action), out)
                    .await;
            }
        }
    }

    /// Submission: the header From/Sender must be the user's; DKIM-sign; relay.
    async fn submit(&mut self, queue_id: &str, envelope: &Envelope, msg: Vec<u8>, out: &mut Fate) {
        let cfg = &self.shared.config;
        let user = self.auth_user.clone().unwrap_or_default();
        let Some(from_domain) = header_senders_owned(&msg, &cfg.users, &user) else {
            out.refuse(
                reply::HEADER_FROM_NOT_OWNED,
                "submission.header_from_not_owned",
            );
            return;
        };
        let mut headers = String::new();
        match self.shared.dkim.sign(&from_domain, &msg) {
            Some(Ok(sig)) => {
                headers.push_str(&sig);
                out.reasons.push("dkim.signed".into());
            }
            Some(Err(_)) => out.reasons.push("dkim.sign_failed".into()),
            None => out.reasons.push("dkim.no_key".into()),
        }
        let full = self
            .with_our_headers(queue_id, envelope, &headers, msg)
            .await;
        self.deliver(queue_id, envelope, full, Outcome::Accept, out)
            .await;
    }

    /// Our Received field, then `extra` (the DKIM-Signature of a submission), then the
    /// message without the fields only we may write: Authentication-Results claiming our
    /// authserv-id in any RFC 8601 form (the engine's reader, the one every door uses), and
    /// every X-Unspoof-Verdict. Works on the message in place: a large message is never held
    /// twice. (Inbound mail gets these removals as the engine's edits instead.)
    async fn with_our_headers(
        &mut self,
        queue_id: &str,
        envelope: &Envelope,
        extra: &str,
        mut body: Vec<u8>,
    ) -> Vec<u8> {
        let hostname = self.shared.config.hostname.clone();
        auth_results::remove_forged(&mut body, &hostname);
        let received = self.received_field(queue_id, envelope).await;
        prepend(&mut body, format!("{extra}{received}").as_bytes());
        body
    }

    /// Our Received field in a message the engine's edits made: right below the fields the
    /// engine inserted on top (`on_top`: our Authentication-Results and verdict field), where
    /// the milter's MTA has its own.
    async fn with_received(
        &mut self,
        queue_id: &str,
        envelope: &Envelope,
        mut body: Vec<u8>,
        on_top: usize,
    ) -> Vec<u8> {
        let received = self.received_field(queue_id, envelope).await;
        let at = {
            let headers = unspoof_engine::Headers::parse(&body);
            match headers.fields.get(on_top) {
                Some(f) => f.offset,
                None => headers.fields.last().map_or(0, |f| f.end(&body)),
            }
        };
        body.splice(at..at, received.bytes());
        body
    }

    /// Our Received field (RFC 5321 4.4), ending in CRLF.
    async fn received_field(&mut self, queue_id: &str, envelope: &Envelope) -> String {
        let hostname = self.shared.config.hostname.clone();
        let rdns = self.reverse_name().await;
        let proto = match (self.esmtp, self.tls.is_some(), self.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let tls = self
            .tls
            .as_ref()
            .map(|t| format!("\r\n\t(using {} with cipher {})", t.version, t.cipher))
            .unwrap_or_default();
        // RFC 5321 4.4: "for" only with a single recipient, so a copy names no one else.
        let for_clause = match envelope.rcpt.as_slice() {
            [one] => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        format!(
            "Received: from {} ({} [{}]){tls}\r\n\tby {hostname} (unspoof) with {proto} id {queue_id}{for_clause};\r\n\t{}\r\n",
            self.helo.as_deref().unwrap_or("unknown"),
            rdns.as_deref().unwrap_or("unknown"),
            self.peer.ip(),
            message::rfc5322_date(envelope.received_at.unwrap_or_else(unix_now)),
        )
    }

    /// Relays to the downstream (its reply becomes ours) or delivers into the Maildir.
    async fn deliver(
        &mut self,
        queue_id: &str,
        envelope: &Envelope,
        full: Vec<u8>,
        action: Outcome,
        out: &mut Fate,
    ) {
        if self.shared.config.downstream.is_some() {
            let Some(d) = &mut self.downstream else {
                out.tempfail(reply::DOWNSTREAM_LOST, "downstream.lost");
                return;
            };
            match d.data(&full).await {
                Ok(r) if r.is_positive() => {
                    out.outcome = action;
                    out.reply = queued(queue_id);
                    out.downstream_reply = Some(r.to_string());
                }
                Ok(r) => {
                    out.outcome = if r.code >= 500 {
                        Outcome::Refused
                    } else {
                        Outcome::Tempfail
                    };
                    out.reasons.push("downstream.refused".into());
                    out.reply = r.to_client_line();
                    out.downstream_reply = Some(r.to_string());
                }
                Err(e) => {
                    self.downstream = None;
                    out.tempfail(reply::DOWNSTREAM_LOST, "downstream.lost");
                    out.downstream_reply = Some(match e {
                        RelayError::Unavailable(s) | RelayError::Lost(s) => s,
                    });
                }
            }
            return;
        }
        // RFC 5321 4.4: final delivery adds Return-Path.
        let mut local = full;
        let return_path = format!(
            "Return-Path: <{}>\r\n",
            envelope.mail_from.as_deref().unwrap_or("")
        );
        prepend(&mut local, return_path.as_bytes());
        let sink = self.shared.local.clone();
        let (qid, env) = (queue_id.to_string(), envelope.clone());
        match tokio::task::spawn_blocking(move || sink.deliver(&qid, &env, &local)).await {
            Ok(Ok(at)) => {
                out.outcome = action;
                out.reply = queued(queue_id);
                out.stored_at = Some(at);
            }
            _ => out.tempfail(reply::LOCAL_ERROR, "store.delivery_failed"),
        }
    }
}

/// The fate of one message, as it will be answered, counted and logged.
struct Fate {
    outcome: Outcome,
    reasons: Vec<String>,
    reply: String,
    downstream_reply: Option<String>,
    stored_at: Option<String>,
    analysis: Option<Arc<unspoof_engine::Analysis>>,
    /// A quarantined message not stored yet: the quarantine keeps records too, and stores it
    /// with its record (`Quarantine::quarantine_with_record`).
    held: Option<QuarantineItem>,
}

impl Default for Fate {
    fn default() -> Self {
        Fate {
            outcome: Outcome::Tempfail,
            reasons: Vec::new(),
            reply: reply::LOCAL_ERROR.into(),
            downstream_reply: None,
            stored_at: None,
            analysis: None,
            held: None,
        }
    }
}

impl Fate {
    fn refuse(&mut self, reply: &str, code: &str) {
        self.outcome = Outcome::Refused;
        self.reasons.push(code.into());
        self.reply = reply.into();
    }
    fn tempfail(&mut self, reply: &str, code: &str) {
        self.outcome = Outcome::Tempfail;
        self.reasons.push(code.into());
        self.reply = reply.into();
    }
}

fn queued(queue_id: &str) -> String {
    format!("250 2.0.0 Ok: queued as {queue_id}\r\n")
}

fn defect_reply(d: DataDefect) -> &'static str {
    match d {
        DataDefect::BareLf | DataDefect::BareCr => reply::BARE_LINE_ENDING,
        DataDefect::TooBig => reply::SIZE_EXCEEDED,
        DataDefect::LineTooLong => reply::LINE_TOO_LONG_DATA,
        DataDefect::TooManyHeaderFields | DataDefect::HeaderTooBig => reply::HEADER_TOO_BIG,
        DataDefect::Nul => reply::NUL_IN_MESSAGE,
        DataDefect::NoMemory => reply::INSUFFICIENT_STORAGE,
        DataDefect::FoldedFirstLine => reply::FOLDED_FIRST_LINE,
    }
}

/// Puts `head` in front of `msg` in place (one move of the message, no second copy of it).
/// The address a client wrote in a MAIL or RCPT command that could not be read, for the
/// record: what is between the angle brackets (else after the colon), at most 256 octets,
/// lossy UTF-8.
fn written_address(line: &[u8]) -> String {
    let raw = angle_content(line).unwrap_or_else(|| {
        let after = line
            .iter()
            .position(|&b| b == b':')
            .map_or(&line[..0], |i| &line[i + 1..]);
        after.trim_ascii()
    });
    String::from_utf8_lossy(&raw[..raw.len().min(256)]).into_owned()
}

fn prepend(msg: &mut Vec<u8>, head: &[u8]) {
    msg.splice(0..0, head.iter().copied());
}

/// The text between the first `<` of a command line and the next `>`.
fn angle_content(line: &[u8]) -> Option<&[u8]> {
    let open = memchr::memchr(b'<', line)?;
    let close = memchr::memchr(b'>', &line[open..])? + open;
    Some(line[open + 1..close].trim_ascii())
}

/// Checks that the header From (exactly one field, RFC 5322 3.6) and the Sender, if any, show
/// only what `user` owns, read as the engine reads an inbound From (`unspoof_engine::address`):
/// exactly one mailbox each, owned by the user; every address a person is shown (in a display
/// name, a comment, an RFC 2047 encoded-word) the user's; every domain another parser style
/// would read one of the mailbox's; no syntax that parsers repair differently; no `From:`
/// hidden in a continuation line. Inbound, the same tricks are `ambiguity.*` findings; here
/// they are the user's own message showing someone else. Returns the From domain (the DKIM
/// signing domain).
fn header_senders_owned(
    msg: &[u8],
    users: &[crate::config::UserConfig],
    user: &str,
) -> Option<String> {
    let headers = unspoof_engine::Headers::parse(msg);
    let section = &msg[..headers.body_offset.min(msg.len())];
    let hidden_from = section.split(|&b| b == b'\n').any(|l| {
        matches!(l.first(), Some(b' ' | b'\t'))
            && l.trim_ascii_start()
                .get(..5)
                .is_some_and(|n| n.eq_ignore_ascii_case(b"from:"))
    });
    if hidden_from || !headers.stray_lines.is_empty() {
        return None;
    }
    let mut froms = headers.all("From");
    let (Some(from), None) = (froms.next(), froms.next()) else {
        return None;
    };
    let domain = shown_mailbox_owned(from.value, users, user)?;
    let mut senders = headers.all("Sender");
    match (senders.next(), senders.next()) {
        (None, _) => {}
        (Some(sender), None) => {
            shown_mailbox_owned(sender.value, users, user)?;
        }
        (Some(_), Some(_)) => return None,
    }
    Some(domain)
}

/// The domain of the one mailbox of a From or Sender value, when everything in the value that
/// any reader might show is an address `user` owns (see [`header_senders_owned`]).
fn shown_mailbox_owned(
    value: &[u8],
    users: &[crate::config::UserConfig],
    user: &str,
) -> Option<String> {
    use unspoof_engine::address::{self, Defect};
    let (list, readings) = address::read_address_list(value);
    // An address inside an encoded-word is judged below like any other shown address.
    if list
        .defects
        .iter()
        .any(|d| *d != Defect::AddressInEncodedWord)
    {
        return None;
    }
    let mut mailboxes = list.mailboxes();
    let (Some(mailbox), None) = (mailboxes.next(), mailboxes.next()) else {
        return None;
    };
    if !mailbox.route.is_empty() || !auth::owns(users, user, &mailbox.address()) {
        return None;
    }
    let domain = mailbox.domain_key();
    if readings.iter().any(|r| r.domain != domain) {
        return None;
    }
    let text = unspoof_engine::message::unfold(value);
    let mut shown = address::addresses_in_text(text.as_bytes());
    for word in address::decode_encoded_words(text.as_bytes()) {
        shown.extend(address::addresses_in_text(word.as_bytes()));
    }
    shown
        .iter()
        .all(|(a, _)| auth::owns(users, user, a))
        .then_some(domain)
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UserConfig;

    fn alice() -> Vec<UserConfig> {
        vec![UserConfig {
            name: "alice".into(),
            password_hash: String::new(),
            addresses: vec!["alice@example.org".into()],
        }]
    }

    #[test]
    fn hidden_and_repeated_senders_are_not_owned() {
        let owned = |m: &[u8]| header_senders_owned(m, &alice(), "alice");
        assert_eq!(
            owned(b"From: Alice <alice@example.org>\r\nSubject: x\r\n\r\nb\r\n").as_deref(),
            Some("example.org")
        );
        for m in [
            // A From folded into the Subject (RFC 5322 2.2.3), a new field for some parsers.
            &b"From: alice@example.org\r\nSubject: x\r\n From: ceo@example.org\r\n\r\nb\r\n"[..],
            b"From: alice@example.org\r\nFROM : ceo@example.org\r\n\r\nb\r\n",
            b"From: alice@example.org\r\nSender: ceo@example.org\r\n\r\nb\r\n",
            b"From: alice@example.org\r\nSender: alice@example.org\r\nSender: x@y.test\r\n\r\nb\r\n",
            b"From: alice@example.org\r\nno colon here\r\n\r\nb\r\n",
            b"Subject: no from\r\n\r\nb\r\n",
        ] {
            assert_eq!(owned(m), None, "{}", String::from_utf8_lossy(m));
        }
    }
}
