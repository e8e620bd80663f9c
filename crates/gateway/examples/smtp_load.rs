//! SMTP load generator for the gateway benchmark (`scripts/bench-gateway.sh`): drives N
//! messages over C concurrent connections, K messages per connection (K = 1: one message per
//! connection), with or without PIPELINING, at full speed or at a fixed rate, and reports
//! msg/s and three latencies per message: the transaction (MAIL FROM written to the final
//! reply after the data, the client's view), the data (the end-of-data marker written to the
//! final reply: what a server adds by deciding before it answers, the figure compared between
//! the gateway and the sink), and at a fixed rate the open-loop latency (from the message's
//! slot in the schedule to the final reply, so a message that waited for a free connection
//! counts its wait: the generator keeps offering the rate while the server is slow, it does
//! not back off with it).
//!
//! ```sh
//! cargo run --release -p unspoof-gateway --example smtp_load -- \
//!     --addr 127.0.0.1:2525 --manifest ../shared/bench/data/manifest.jsonl -n 20000 -c 32 -k 20
//! ```
//!
//! Messages come from a bench-kit manifest (`{"file", "ip", "helo", "mailfrom", "rcpt"}` per
//! line, files relative to the manifest) or from `--eml FILE` (repeatable, with `--from`,
//! `--to`, `--helo`). They are read, checked for CRLF and dot-stuffed once at start-up, so the
//! generator costs little per message. A connection carries messages of one (IP, HELO) group,
//! as a real sending MTA does; with `--bind-source` it binds to that IP (the benchmark adds the
//! manifest's addresses to `lo` inside a private network namespace), so the gateway's engine
//! sees the sender's real address and the checks give the manifest's results.
//! `--rcpt-domain D` puts every recipient in domain D (the corpus's list messages are
//! addressed to the list's own domain, which the gateway would rightly refuse to relay).
//!
//! `--watch NAME=PID` (repeatable) reads `/proc/PID/stat` at the start and the end of the
//! measured run and reports that process's CPU per message, and its context switches per
//! message (voluntary: a thread went to sleep, the cost of each hand-off between threads;
//! involuntary: it was preempted), from `/proc/PID/task/*/status`, by thread name (threads
//! that ended during the run are not counted). `--idle K` instead opens K
//! connections, says EHLO on each, reports the watched processes' RSS (`VmRSS`) before and
//! with all K open, and closes them.
//!
//! The last line of output is `RESULT {json}` for scripts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct Opts {
    addr: SocketAddr,
    manifest: Option<PathBuf>,
    eml: Vec<PathBuf>,
    from: String,
    to: String,
    helo: String,
    n: usize,
    conns: usize,
    per_conn: usize,
    pipeline: bool,
    rate: f64,
    bind_source: bool,
    threads: usize,
    watch: Vec<(String, u32)>,
    idle: usize,
    idle_per_ip: usize,
    label: String,
    limit: usize,
    /// `--replies FILE`: one line per message that got a final reply to its data, the queue
    /// id in that reply (`queued as ID`, else `-`) and its data latency in µs, tab-separated.
    replies: Option<PathBuf>,
    rcpt_domain: Option<String>,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "smtp_load: {msg}\n\
usage: smtp_load --addr HOST:PORT (--manifest FILE | --eml FILE... [--from A] [--to A] [--helo H])\n\
       [-n N] [-c CONNS] [-k MSGS_PER_CONN] [--no-pipelining] [--rate MSG_PER_S]\n\
       [--bind-source] [--rcpt-domain D] [--threads T] [--watch NAME=PID]... [--label L]\n\
       [--limit MSGS] [--replies FILE]\n\
       smtp_load --addr HOST:PORT --idle K [--idle-per-ip M] [--watch NAME=PID]..."
    );
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        addr: "127.0.0.1:2525".parse().unwrap(),
        manifest: None,
        eml: Vec::new(),
        from: "sender@example.com".into(),
        to: "postmaster@localhost".into(),
        helo: "loadgen.example.com".into(),
        n: 10_000,
        conns: 16,
        per_conn: 20,
        pipeline: true,
        rate: 0.0,
        bind_source: false,
        threads: 1,
        watch: Vec::new(),
        idle: 0,
        idle_per_ip: 40,
        label: String::new(),
        limit: 0,
        replies: None,
        rcpt_domain: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        fn num<T: std::str::FromStr>(s: String, what: &str) -> T {
            s.parse().unwrap_or_else(|_| usage(&format!("bad {what}")))
        }
        match a.as_str() {
            "--addr" => o.addr = num(val(), "--addr"),
            "--manifest" => o.manifest = Some(PathBuf::from(val())),
            "--eml" => o.eml.push(PathBuf::from(val())),
            "--from" => o.from = val(),
            "--to" => o.to = val(),
            "--helo" => o.helo = val(),
            "-n" => o.n = num(val(), "-n"),
            "-c" => o.conns = num(val(), "-c"),
            "-k" => o.per_conn = num(val(), "-k"),
            "--no-pipelining" => o.pipeline = false,
            "--rate" => o.rate = num(val(), "--rate"),
            "--bind-source" => o.bind_source = true,
            "--threads" => o.threads = num(val(), "--threads"),
            "--watch" => {
                let v = val();
                let (name, pid) = v
                    .split_once('=')
                    .unwrap_or_else(|| usage("--watch NAME=PID"));
                o.watch
                    .push((name.to_string(), num(pid.to_string(), "--watch pid")));
            }
            "--idle" => o.idle = num(val(), "--idle"),
            "--idle-per-ip" => o.idle_per_ip = num(val(), "--idle-per-ip"),
            "--label" => o.label = val(),
            "--limit" => o.limit = num(val(), "--limit"),
            "--replies" => o.replies = Some(PathBuf::from(val())),
            "--rcpt-domain" => o.rcpt_domain = Some(val()),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    if o.conns == 0 || o.per_conn == 0 || o.idle_per_ip == 0 {
        usage("-c, -k and --idle-per-ip must be at least 1");
    }
    o
}

/// One message, ready to send.
struct Msg {
    ip: Option<IpAddr>,
    helo: String,
    /// `MAIL FROM`, `RCPT TO` and `DATA` lines.
    commands: [Vec<u8>; 3],
    /// The content, dot-stuffed, with the end marker.
    body: Vec<u8>,
}

fn to_crlf_stuffed(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50 + 8);
    let mut at_start = true;
    let mut prev = 0u8;
    for &b in raw {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_start = b == b'\n';
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn message(ip: Option<IpAddr>, helo: &str, from: &str, to: &str, raw: &[u8]) -> Msg {
    Msg {
        ip,
        helo: helo.to_string(),
        commands: [
            format!("MAIL FROM:<{from}>\r\n").into_bytes(),
            format!("RCPT TO:<{to}>\r\n").into_bytes(),
            b"DATA\r\n".to_vec(),
        ],
        body: to_crlf_stuffed(raw),
    }
}

fn load_messages(o: &Opts) -> Vec<Msg> {
    let mut msgs = Vec::new();
    if let Some(m) = &o.manifest {
        let text = std::fs::read_to_string(m).unwrap_or_else(|e| usage(&format!("{m:?}: {e}")));
        let base = m.parent().unwrap_or(Path::new("."));
        let mut skipped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let e: serde_json::Value = serde_json::from_str(line).expect("manifest line");
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            let ip: Option<IpAddr> = s("ip").parse().ok();
            // A connection to an IPv4 address cannot come from an IPv6 one.
            if o.bind_source && ip.is_some_and(|ip| ip.is_ipv4() != o.addr.is_ipv4()) {
                skipped += 1;
                continue;
            }
            let raw = std::fs::read(base.join(s("file"))).expect("message file");
            let ip = if o.bind_source { ip } else { None };
            let mut rcpt = s("rcpt");
            if let Some(d) = &o.rcpt_domain {
                let local = rcpt.rsplit_once('@').map_or(rcpt.as_str(), |(l, _)| l);
                rcpt = format!("{local}@{d}");
            }
            msgs.push(message(ip, &s("helo"), &s("mailfrom"), &rcpt, &raw));
            if o.limit > 0 && msgs.len() >= o.limit {
                break;
            }
        }
        if skipped > 0 {
            println!("skipped {skipped} messages whose source address family differs from --addr");
        }
    }
    for p in &o.eml {
        let raw = std::fs::read(p).unwrap_or_else(|e| usage(&format!("{p:?}: {e}")));
        msgs.push(message(None, &o.helo, &o.from, &o.to, &raw));
    }
    if msgs.is_empty() {
        usage("no messages (--manifest or --eml)");
    }
    msgs
}

/// The connections to make: each a list of message indices of one (IP, HELO) group, taken in
/// the corpus order, so the mix of messages follows the corpus.
fn plan(msgs: &[Msg], n: usize, per_conn: usize) -> Vec<Vec<usize>> {
    let mut groups: HashMap<(Option<IpAddr>, &str), Vec<usize>> = HashMap::new();
    let mut group_of = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let key = (m.ip, m.helo.as_str());
        let g = groups.entry(key).or_default();
        g.push(i);
        group_of.push(key);
    }
    let mut cursor: HashMap<(Option<IpAddr>, &str), usize> = HashMap::new();
    let mut jobs = Vec::new();
    let mut planned = 0;
    let mut i = 0;
    while planned < n {
        let key = group_of[i % msgs.len()];
        i += 1;
        let g = &groups[&key];
        let c = cursor.entry(key).or_insert(0);
        let k = per_conn.min(n - planned);
        let job: Vec<usize> = (0..k).map(|j| g[(*c + j) % g.len()]).collect();
        *c += k;
        planned += k;
        jobs.push(job);
    }
    jobs
}

/// A buffered SMTP client connection.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Keep the last line of each reply in `last` (`--replies`).
    keep_replies: bool,
    last: Vec<u8>,
}

impl Client {
    async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        keep_replies: bool,
    ) -> std::io::Result<Client> {
        let s = match source {
            Some(ip) => {
                let sock = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(addr).await?
            }
            None => TcpStream::connect(addr).await?,
        };
        s.set_nodelay(true)?;
        Ok(Client {
            s,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
            keep_replies,
            last: Vec::new(),
        })
    }

    /// Reads one (possibly multi-line) reply; returns its code.
    async fn reply(&mut self) -> std::io::Result<u16> {
        loop {
            while let Some(p) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let line = &self.buf[self.start..self.start + p + 1];
                self.start += p + 1;
                let code = std::str::from_utf8(line.get(..3).unwrap_or(b""))
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| std::io::Error::other("malformed reply"))?;
                if line.get(3) != Some(&b'-') {
                    if self.keep_replies {
                        self.last.clear();
                        self.last.extend_from_slice(line);
                    }
                    return Ok(code);
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.s.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
    }

    async fn cmd(&mut self, line: &[u8]) -> std::io::Result<u16> {
        self.s.write_all(line).await?;
        self.reply().await
    }
}

#[derive(Default)]
struct Tally {
    /// Transaction latency (MAIL written to final reply), µs, for messages that got a final
    /// reply to their data.
    latency_us: Vec<u32>,
    /// Data latency (end-of-data marker written to final reply), µs, same messages.
    data_latency_us: Vec<u32>,
    /// At a fixed rate: the message's slot in the schedule to its final reply, µs.
    slot_latency_us: Vec<u32>,
    /// Connection latency (connect to final reply of the first message), µs, one per connection.
    conn_latency_us: Vec<u32>,
    /// `--replies`: (queue id, data latency µs) per message.
    replies: Vec<(String, u32)>,
    codes: HashMap<u16, u64>,
    /// Refused before the data (MAIL/RCPT/DATA not accepted).
    early_refusals: u64,
    errors: u64,
    late_starts: u64,
}

struct Shared {
    opts: Opts,
    msgs: Vec<Msg>,
    jobs: Vec<Vec<usize>>,
    next_job: AtomicUsize,
    next_slot: AtomicU64,
    t0: Instant,
}

async fn worker(sh: Arc<Shared>) -> Tally {
    let mut t = Tally::default();
    let o = &sh.opts;
    loop {
        let j = sh.next_job.fetch_add(1, Ordering::Relaxed);
        let Some(job) = sh.jobs.get(j) else {
            return t;
        };
        let first = &sh.msgs[job[0]];
        // One message per connection at a fixed rate: the connection itself waits for the slot.
        let mut slot = None;
        if o.per_conn == 1 && o.rate > 0.0 {
            slot = Some(wait_slot(&sh, &mut t).await);
        }
        let connected_at = Instant::now();
        let mut c = match Client::connect(o.addr, first.ip, o.replies.is_some()).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("connect: {e}");
                t.errors += job.len() as u64;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut helo = format!("EHLO {}\r\n", first.helo).into_bytes();
        match c.reply().await {
            Ok(220) => {}
            other => {
                eprintln!("greeting: {other:?}");
                t.errors += job.len() as u64;
                continue;
            }
        }
        if !matches!(c.cmd(&helo).await, Ok(250)) {
            t.errors += job.len() as u64;
            continue;
        }
        helo.clear();
        let mut broken = false;
        for (n, &m) in job.iter().enumerate() {
            if o.rate > 0.0 && slot.is_none() {
                slot = Some(wait_slot(&sh, &mut t).await);
            }
            match transaction(&mut c, &sh.msgs[m], o.pipeline, &mut t).await {
                Ok(Some((us, data_us))) => {
                    t.latency_us.push(us);
                    t.data_latency_us.push(data_us);
                    if let Some(at) = slot {
                        t.slot_latency_us.push(micros(at.elapsed()));
                    }
                    if n == 0 {
                        t.conn_latency_us
                            .push(connected_at.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    eprintln!("transaction: {e}");
                    t.errors += (job.len() - n) as u64;
                    broken = true;
                    break;
                }
            }
            slot = None;
        }
        if !broken {
            let _ = c.cmd(b"QUIT\r\n").await;
        }
    }
}

/// Waits for the next slot of the fixed-rate schedule and returns its time (in the past when
/// every connection was busy at that moment: the message starts late, and its open-loop
/// latency counts from the slot).
async fn wait_slot(sh: &Shared, t: &mut Tally) -> Instant {
    let i = sh.next_slot.fetch_add(1, Ordering::Relaxed);
    let at = sh.t0 + Duration::from_secs_f64(i as f64 / sh.opts.rate);
    let now = Instant::now();
    if at > now {
        tokio::time::sleep_until(at.into()).await;
    } else if now - at > Duration::from_millis(2) {
        t.late_starts += 1;
    }
    at
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// One transaction; `Some((transaction µs, data µs))` when the data got a final reply, `None`
/// when refused earlier.
async fn transaction(
    c: &mut Client,
    m: &Msg,
    pipeline: bool,
    t: &mut Tally,
) -> std::io::Result<Option<(u32, u32)>> {
    let started = Instant::now();
    let codes = if pipeline {
        let mut out = Vec::with_capacity(160);
        for cmd in &m.commands {
            out.extend_from_slice(cmd);
        }
        c.s.write_all(&out).await?;
        [c.reply().await?, c.reply().await?, c.reply().await?]
    } else {
        let mail = c.cmd(&m.commands[0]).await?;
        if mail != 250 {
            [mail, 0, 0]
        } else {
            let rcpt = c.cmd(&m.commands[1]).await?;
            if rcpt / 100 != 2 {
                [mail, rcpt, 0]
            } else {
                [mail, rcpt, c.cmd(&m.commands[2]).await?]
            }
        }
    };
    if codes[2] != 354 {
        if t.early_refusals < 3 {
            eprintln!(
                "refused before the data: {:?} for {}",
                codes,
                String::from_utf8_lossy(&m.commands[0]).trim_end()
            );
        }
        t.early_refusals += 1;
        let first_bad = codes.iter().find(|&&c| c / 100 != 2).copied().unwrap_or(0);
        *t.codes.entry(first_bad).or_default() += 1;
        c.cmd(b"RSET\r\n").await?;
        return Ok(None);
    }
    c.s.write_all(&m.body).await?;
    let data_written = Instant::now();
    let code = c.reply().await?;
    let us = micros(started.elapsed());
    let data_us = micros(data_written.elapsed());
    if c.keep_replies {
        let last = String::from_utf8_lossy(&c.last);
        let id = last
            .split_once("queued as ")
            .map_or("-", |(_, id)| id.split_whitespace().next().unwrap_or("-"));
        t.replies.push((id.to_string(), data_us));
    }
    *t.codes.entry(code).or_default() += 1;
    Ok(Some((us, data_us)))
}

/// utime + stime of a process, in seconds (`/proc/PID/stat` fields 14 and 15).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, so utime (14) is index 11 here.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// Context switches (voluntary, involuntary) of each thread of a process, summed by thread
/// name (`/proc/PID/task/TID/comm`, digits dropped so that numbered threads add up).
fn context_switches(pid: u32) -> HashMap<String, (u64, u64)> {
    let mut by_name: HashMap<String, (u64, u64)> = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("status")),
        ) else {
            continue;
        };
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let name: String = comm
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .into();
        let e = by_name.entry(name).or_default();
        e.0 += field("voluntary_ctxt_switches:");
        e.1 += field("nonvoluntary_ctxt_switches:");
    }
    by_name
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture we run on.
    100.0
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let opts = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    if opts.idle > 0 {
        rt.block_on(idle(opts));
        return;
    }
    let msgs = load_messages(&opts);
    let jobs = plan(&msgs, opts.n, opts.per_conn);
    let bytes: usize = msgs.iter().map(|m| m.body.len()).sum();
    println!(
        "{}: {} distinct messages ({} B average), {} messages over {} connections of up to {} \
         ({}), {}, {} concurrent",
        if opts.label.is_empty() {
            "run"
        } else {
            &opts.label
        },
        msgs.len(),
        bytes / msgs.len(),
        opts.n,
        jobs.len(),
        opts.per_conn,
        if opts.pipeline {
            "pipelined"
        } else {
            "not pipelined"
        },
        if opts.rate > 0.0 {
            format!("at {} msg/s", opts.rate)
        } else {
            "full speed".into()
        },
        opts.conns,
    );
    let watch: Vec<(String, u32)> = opts.watch.clone();
    let cpu_before: Vec<Option<f64>> = watch.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let switches_before: Vec<_> = watch.iter().map(|(_, p)| context_switches(*p)).collect();
    let self_before = cpu_seconds(std::process::id());
    let conns = opts.conns;
    let shared = Arc::new(Shared {
        opts,
        msgs,
        jobs,
        next_job: AtomicUsize::new(0),
        next_slot: AtomicU64::new(0),
        t0: Instant::now(),
    });
    let started = Instant::now();
    let tallies: Vec<Tally> = rt.block_on(async {
        let handles: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(worker(shared.clone())))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("worker"));
        }
        out
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after: Vec<Option<f64>> = watch.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let switches_after: Vec<_> = watch.iter().map(|(_, p)| context_switches(*p)).collect();
    let self_cpu = cpu_seconds(std::process::id())
        .zip(self_before)
        .map(|(a, b)| a - b);

    let mut all = Tally::default();
    for t in tallies {
        all.latency_us.extend(t.latency_us);
        all.data_latency_us.extend(t.data_latency_us);
        all.replies.extend(t.replies);
        all.slot_latency_us.extend(t.slot_latency_us);
        all.conn_latency_us.extend(t.conn_latency_us);
        for (c, n) in t.codes {
            *all.codes.entry(c).or_default() += n;
        }
        all.early_refusals += t.early_refusals;
        all.errors += t.errors;
        all.late_starts += t.late_starts;
    }
    if let Some(path) = &shared.opts.replies {
        use std::fmt::Write as _;
        let mut text = String::new();
        for (id, us) in &all.replies {
            let _ = writeln!(text, "{id}\t{us}");
        }
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    all.latency_us.sort_unstable();
    all.data_latency_us.sort_unstable();
    all.slot_latency_us.sort_unstable();
    all.conn_latency_us.sort_unstable();
    let done = all.latency_us.len() as u64 + all.early_refusals;
    let rate = done as f64 / elapsed;
    let lat = |p| percentile(&all.latency_us, p);
    let clat = |p| percentile(&all.conn_latency_us, p);
    let dlat = |p| percentile(&all.data_latency_us, p);
    let slat = |p| percentile(&all.slot_latency_us, p);
    let mut codes: Vec<_> = all.codes.iter().collect();
    codes.sort();
    println!(
        "  {done} transactions in {elapsed:.2} s = {rate:.0} msg/s; errors {}; final replies {:?}",
        all.errors, codes
    );
    println!(
        "  transaction latency (MAIL..final reply) µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
        lat(50.0),
        lat(90.0),
        lat(99.0),
        lat(99.9),
        all.latency_us.last().copied().unwrap_or(0)
    );
    println!(
        "  data latency (end of data..final reply) µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
        dlat(50.0),
        dlat(90.0),
        dlat(99.0),
        dlat(99.9),
        all.data_latency_us.last().copied().unwrap_or(0)
    );
    if shared.opts.rate > 0.0 {
        println!(
            "  open-loop latency (rate slot..final reply) µs: p50 {} p99 {} max {}",
            slat(50.0),
            slat(99.0),
            all.slot_latency_us.last().copied().unwrap_or(0)
        );
    }
    if shared.opts.per_conn == 1 {
        println!(
            "  connection latency (connect..final reply) µs: p50 {} p99 {}",
            clat(50.0),
            clat(99.0)
        );
    }
    if shared.opts.rate > 0.0 {
        println!(
            "  {} messages started over 2 ms after their slot",
            all.late_starts
        );
    }
    let mut cpu_json = Vec::new();
    for (i, (name, pid)) in watch.iter().enumerate() {
        if let (Some(a), Some(b)) = (cpu_after[i], cpu_before[i]) {
            let cpu = a - b;
            println!(
                "  {name} (pid {pid}): {cpu:.2} CPU-s = {:.1} µs/msg, {:.0}% of one core",
                cpu * 1e6 / done.max(1) as f64,
                cpu * 100.0 / elapsed
            );
            let per_msg = |n: u64| n as f64 / done.max(1) as f64;
            let mut threads: Vec<(String, u64, u64)> = switches_after[i]
                .iter()
                .map(|(t, &(v, n))| {
                    let (v0, n0) = switches_before[i].get(t).copied().unwrap_or_default();
                    (t.clone(), v.saturating_sub(v0), n.saturating_sub(n0))
                })
                .filter(|(_, v, n)| v + n > 0)
                .collect();
            threads.sort_by_key(|(_, v, n)| std::cmp::Reverse(v + n));
            let (vol, invol) = threads
                .iter()
                .fold((0, 0), |(a, b), (_, v, n)| (a + v, b + n));
            println!(
                "  {name} context switches per msg: {:.2} voluntary, {:.2} involuntary; by thread: {}",
                per_msg(vol),
                per_msg(invol),
                threads
                    .iter()
                    .map(|(t, v, n)| format!("{t} {:.2}+{:.2}", per_msg(*v), per_msg(*n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let threads_json: Vec<String> = threads
                .iter()
                .map(|(t, v, n)| format!("{t:?}:[{:.3},{:.3}]", per_msg(*v), per_msg(*n)))
                .collect();
            cpu_json.push(format!(
                "\"{name}\":{{\"cpu_s\":{cpu:.3},\"cpu_us_per_msg\":{:.2},\
                 \"switches_per_msg\":{{\"voluntary\":{:.3},\"involuntary\":{:.3},\
                 \"threads\":{{{}}}}}}}",
                cpu * 1e6 / done.max(1) as f64,
                per_msg(vol),
                per_msg(invol),
                threads_json.join(",")
            ));
        }
    }
    if let Some(cpu) = self_cpu {
        println!(
            "  load generator: {cpu:.2} CPU-s = {:.1} µs/msg",
            cpu * 1e6 / done.max(1) as f64
        );
        cpu_json.push(format!(
            "\"loadgen\":{{\"cpu_s\":{cpu:.3},\"cpu_us_per_msg\":{:.2}}}",
            cpu * 1e6 / done.max(1) as f64
        ));
    }
    let codes_json: Vec<String> = codes.iter().map(|(c, n)| format!("\"{c}\":{n}")).collect();
    println!(
        "RESULT {{\"label\":{:?},\"n\":{done},\"conns\":{},\"per_conn\":{},\"pipelining\":{},\
         \"rate_target\":{},\"elapsed_s\":{elapsed:.3},\"msg_per_s\":{rate:.1},\"errors\":{},\
         \"early_refusals\":{},\"late_starts\":{},\"codes\":{{{}}},\
         \"lat_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}},\
         \"data_lat_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}},\
         \"slot_lat_us\":{{\"p50\":{},\"p99\":{},\"max\":{}}},\
         \"conn_lat_us\":{{\"p50\":{},\"p99\":{}}},\"cpu\":{{{}}}}}",
        shared.opts.label,
        conns,
        shared.opts.per_conn,
        shared.opts.pipeline,
        shared.opts.rate,
        all.errors,
        all.early_refusals,
        all.late_starts,
        codes_json.join(","),
        lat(50.0),
        lat(90.0),
        lat(99.0),
        lat(99.9),
        all.latency_us.last().copied().unwrap_or(0),
        dlat(50.0),
        dlat(90.0),
        dlat(99.0),
        dlat(99.9),
        all.data_latency_us.last().copied().unwrap_or(0),
        slat(50.0),
        slat(99.0),
        all.slot_latency_us.last().copied().unwrap_or(0),
        clat(50.0),
        clat(99.0),
        cpu_json.join(","),
    );
}

/// Opens `--idle` connections (spread over source addresses 127.1.x.y, `--idle-per-ip` each, so
/// the per-IP limit stays at its default), says EHLO on each, and reports RSS.
async fn idle(o: Opts) {
    let rss = |w: &[(String, u32)]| -> Vec<(String, Option<u64>)> {
        w.iter().map(|(n, p)| (n.clone(), rss_kib(*p))).collect()
    };
    let before = rss(&o.watch);
    let mut clients = Vec::with_capacity(o.idle);
    let mut refused = 0;
    for i in 0..o.idle {
        let ip_n = i / o.idle_per_ip;
        let source = if o.addr.ip().is_loopback() && o.addr.is_ipv4() {
            Some(IpAddr::from([
                127,
                1,
                (ip_n / 250) as u8,
                (ip_n % 250 + 1) as u8,
            ]))
        } else {
            None
        };
        let mut c = match Client::connect(o.addr, source, false).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("connect {i}: {e}");
                refused += 1;
                continue;
            }
        };
        match c.reply().await {
            Ok(220) => {}
            other => {
                eprintln!("greeting {i}: {other:?}");
                refused += 1;
                continue;
            }
        }
        match c.cmd(b"EHLO idle.example.com\r\n").await {
            Ok(250) => clients.push(c),
            other => {
                eprintln!("EHLO {i}: {other:?}");
                refused += 1;
            }
        }
    }
    // Let the server settle (allocations of the last sessions, lazy pages).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss(&o.watch);
    println!(
        "idle: {} connections open, {refused} refused",
        clients.len()
    );
    let mut json = Vec::new();
    for ((name, b), (_, d)) in before.iter().zip(&during) {
        let (b, d) = (b.unwrap_or(0), d.unwrap_or(0));
        let per = (d.saturating_sub(b)) as f64 * 1024.0 / clients.len().max(1) as f64;
        println!(
            "  {name}: VmRSS {b} KiB before, {d} KiB with {} idle connections ({per:.0} B each)",
            clients.len()
        );
        json.push(format!(
            "\"{name}\":{{\"rss_before_kib\":{b},\"rss_idle_kib\":{d},\"bytes_per_conn\":{per:.0}}}"
        ));
    }
    let open = clients.len();
    for mut c in clients {
        let _ = c.cmd(b"QUIT\r\n").await;
    }
    println!(
        "RESULT {{\"label\":{:?},\"open\":{open},\"refused\":{refused},\"rss\":{{{}}}}}",
        if o.label.is_empty() { "idle" } else { &o.label },
        json.join(",")
    );
}
