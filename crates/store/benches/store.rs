//! `cargo bench -p unspoof-store`: write throughput (records per second, through the batching
//! writer) and search latency over 1 million records, on SQLite and on PostgreSQL.
//!
//! Environment: `UNSPOOF_BENCH_RECORDS` (default 1 000 000), `UNSPOOF_BENCH_PG` (default
//! `postgres://postgres@127.0.0.1:5432`; `none` skips PostgreSQL), `UNSPOOF_BENCH_SQLITE`
//! (`none` skips SQLite), `UNSPOOF_BENCH_BATCH` (records per transaction, default the store's
//! `batch_size`). `UNSPOOF_BENCH_DURABLE=rate` instead measures the durable path (`log_durable`,
//! journal and batch writer; `UNSPOOF_BENCH_JOURNAL` picks the journal settings it alternates,
//! `UNSPOOF_BENCH_CONTROL` adds a round of the dispatch alone), and `UNSPOOF_BENCH_WRITES=n` the
//! batch writer alone in fixed batches of 75 (for instruction counts). Records:
//! `unspoof_store::bench` (the generator the console's bench shares):
//! 30 days of mail from 5 000 client addresses in 20 networks, 2 000 sender domains, 500
//! recipients; 90 % accept, 5 % tag, 3 % quarantine, 2 % reject, each with a small analysis
//! JSON (~400 bytes), not a full one (~3-10 KB), to keep the bench's disk use near 1 GB.

use std::time::{Duration, Instant};

use unspoof_store::bench::{Rng, SPAN};
use unspoof_store::{MessageRecord, NewQuarantine, Query, Store, StoreConfig};
use unspoof_testkit::try_psql;

/// The newest record's time.
const T0: i64 = 1_795_428_000;

fn record(rng: &mut Rng, i: u64, n: u64) -> MessageRecord {
    unspoof_store::bench::record(rng, i, n, T0)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn fill(store: &Store, n: u64) -> (Duration, Duration) {
    let mut rng = Rng::seeded();
    let mut generate = Duration::ZERO;
    let start = Instant::now();
    let chunk = 5_000;
    let mut i = 0;
    while i < n {
        let g = Instant::now();
        let batch: Vec<MessageRecord> = (i..(i + chunk).min(n))
            .map(|k| record(&mut rng, k, n))
            .collect();
        generate += g.elapsed();
        i += batch.len() as u64;
        for r in batch {
            store.log_message(r);
        }
        // Keep the producer within the queue (10 000): the bench measures the writer.
        store.flush().await;
        if i % 100_000 == 0 {
            eprintln!("  {i} records, {:.0} s", secs(start.elapsed()));
        }
    }
    (start.elapsed() - generate, generate)
}

async fn latency(store: &Store, name: &str, q: &Query) {
    let mut times = Vec::new();
    let mut hits = 0;
    for _ in 0..15 {
        let t = Instant::now();
        hits = store.search(q).await.unwrap().len();
        times.push(t.elapsed());
    }
    times.sort();
    let total = store
        .count(&Query {
            limit: None,
            ..q.clone()
        })
        .await
        .unwrap();
    println!(
        "| {name} | {hits} of {total} | {:.2} | {:.2} |",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() * 9 / 10].as_secs_f64() * 1e3
    );
}

async fn run(label: &str, config: StoreConfig, n: u64) {
    println!("\n## {label}, {n} records\n");
    let store = Store::open(config).await.unwrap();
    let (write, generate) = fill(&store, n).await;
    let stats = store.stats();
    assert_eq!(
        stats.spooled, 0,
        "nothing spooled during the bench: {stats:?}"
    );
    println!(
        "write: {n} records in {:.1} s = {:.0} records/s (generation, not counted: {:.1} s)\n",
        secs(write),
        n as f64 / secs(write),
        secs(generate)
    );

    // What `prune` (daily) or autovacuum would have done by now.
    let t = Instant::now();
    store.analyze().await.unwrap();
    println!("ANALYZE after the load: {:.1} s\n", secs(t.elapsed()));

    // The quarantine's durable put (a journal fsync), as the gateway waits for it before 250.
    let mut times = Vec::new();
    for k in 0..100 {
        let q = NewQuarantine {
            id: unspoof_store::new_id(),
            quarantined_at: T0 - k,
            recipients: vec!["user1@site.test".into()],
            raw: vec![b'x'; 20_000],
            ..Default::default()
        };
        let t = Instant::now();
        store.quarantine_put(q.clone()).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "quarantine_put (20 KB, journal fsync): median {:.2} ms, p90 {:.2} ms\n",
        times[50].as_secs_f64() * 1e3,
        times[90].as_secs_f64() * 1e3
    );

    println!("| search (limit 100) | returned of matching | median ms | p90 ms |");
    println!("| --- | --- | --- | --- |");
    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = Query::default();
        f(&mut q);
        q
    };
    latency(&store, "newest, no filter", &Query::default()).await;
    // A record from the middle of the range to look up by its own keys.
    let probe = store
        .search(&Query {
            until: Some(T0 - SPAN / 2),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    latency(
        &store,
        "Message-ID",
        &q(&|q| q.message_id = probe.message_id.clone()),
    )
    .await;
    latency(
        &store,
        "queue id",
        &q(&|q| q.queue_id = probe.queue_id.clone()),
    )
    .await;
    latency(
        &store,
        "client IP",
        &q(&|q| q.client = probe.client_ip.map(Into::into)),
    )
    .await;
    latency(
        &store,
        "client /16 network",
        &q(&|q| q.client = Some("198.18.0.0/16".parse().unwrap())),
    )
    .await;
    latency(
        &store,
        "MAIL FROM domain",
        &q(&|q| q.mail_from_domain = Some("d7.example".into())),
    )
    .await;
    latency(
        &store,
        "From domain",
        &q(&|q| q.from_domain = Some("d7.example".into())),
    )
    .await;
    latency(
        &store,
        "recipient",
        &q(&|q| q.recipient = Some("user7@site.test".into())),
    )
    .await;
    latency(
        &store,
        "action reject",
        &q(&|q| q.action = Some("reject".into())),
    )
    .await;
    latency(
        &store,
        "reason dmarc.reject",
        &q(&|q| q.reason = Some("dmarc.reject".into())),
    )
    .await;
    latency(
        &store,
        "one day",
        &q(&|q| {
            q.since = Some(T0 - 10 * 86_400);
            q.until = Some(T0 - 9 * 86_400);
        }),
    )
    .await;
    latency(
        &store,
        "reason + recipient + 7 days",
        &q(&|q| {
            q.reason = Some("impersonation.display_name".into());
            q.recipient = Some("user7@site.test".into());
            q.since = Some(T0 - 7 * 86_400);
        }),
    )
    .await;
    let t = Instant::now();
    let seen = store
        .has_seen("d7.example", Some("user7@site.test"))
        .await
        .unwrap();
    println!(
        "\nhas_seen (first contact): {:.2} ms ({seen})",
        t.elapsed().as_secs_f64() * 1e3
    );
    store.close().await;
}

/// CPU time of the whole process (every thread), from /proc/self/stat (utime + stime).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here; in clock ticks (100/s).
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The records of a durable-path or writes round: the same `n` every round.
fn round_records(n: u64) -> Vec<MessageRecord> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    (0..n).map(|i| record(&mut rng, i, n)).collect()
}

/// Hands `records` to 32 tasks at `rate` a second, each a record's due time; a task logs its
/// record through `store`'s `log_durable` (or, without a store, drops it: the dispatch alone).
/// Returns each record's wait from its due time to the end of its handling.
async fn paced(records: Vec<MessageRecord>, rate: u64, store: Option<Store>) -> Vec<Duration> {
    let start = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(MessageRecord, Instant)>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (store, rx) = (store.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((r, due)) = next else { break };
                match &store {
                    Some(store) => store.log_durable(r, None).await.unwrap(),
                    None => drop(std::hint::black_box(r)),
                }
                waits.push(due.elapsed());
            }
            waits
        }));
    }
    for (i, r) in records.into_iter().enumerate() {
        let due = start + Duration::from_micros(i as u64 * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        tx.send((r, Instant::now())).unwrap();
    }
    drop(tx);
    let mut waits = Vec::new();
    for t in tasks {
        waits.extend(t.await.unwrap());
    }
    waits
}

/// One durable-path round: `n` records through `log_durable` at `rate` a second from 32
/// tasks, then a flush into the database. Returns (p50, p99 wait, CPU per record).
async fn durable_round(
    writers: usize,
    wait_us: Option<u64>,
    n: u64,
    rate: u64,
) -> (Duration, Duration, Duration) {
    let dir = std::env::temp_dir().join(format!(
        "unspoof-store-durable-{}-{writers}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = StoreConfig::new(String::new(), dir.clone());
    config.journal_writers = writers;
    if let Some(w) = wait_us {
        config.journal_group_wait_us = w;
    }
    let store = Store::open(config).await.unwrap();
    let records = round_records(n);
    let cpu0 = process_cpu();
    let mut waits = paced(records, rate, Some(store.clone())).await;
    store.flush().await;
    let cpu = process_cpu().saturating_sub(cpu0);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    waits.sort();
    let at = |p: usize| waits[(waits.len() * p / 100).min(waits.len() - 1)];
    (at(50), at(99), cpu / n as u32)
}

fn durable(rt: &tokio::runtime::Runtime, rate: u64) {
    let n = rate * 5;
    // `UNSPOOF_BENCH_JOURNAL`: the settings to alternate, `writers` or `writers:wait_us`
    // (`journal_writers`, `journal_group_wait_us`; without a wait, the store's default),
    // comma-separated; default `1,2`.
    let settings: Vec<(usize, Option<u64>)> = std::env::var("UNSPOOF_BENCH_JOURNAL")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|s| {
            let mut it = s.trim().split(':');
            let writers = it.next()?.parse().ok()?;
            let wait = it.next().and_then(|w| w.parse().ok());
            Some((writers, wait))
        })
        .collect();
    println!(
        "# durable path: log_durable at {rate} records/s, {n} records a round, SQLite; \
         wait p50 / p99 and CPU per record (all threads), rounds alternating"
    );
    // The bench's own share: the same dispatch of the same records, without the store.
    if std::env::var("UNSPOOF_BENCH_CONTROL").is_ok() {
        let cpu = rt.block_on(dispatch_round(n, rate));
        println!(
            "control (dispatch only, no store): {:.1} µs CPU/record",
            secs(cpu) * 1e6
        );
    }
    for round in 1..=3 {
        for &(writers, wait) in &settings {
            let (p50, p99, cpu) = rt.block_on(durable_round(writers, wait, n, rate));
            let wait = wait.map(|w| format!(" wait_us={w}")).unwrap_or_default();
            println!(
                "round {round} journal_writers={writers}{wait}: wait p50 {:.2} ms, p99 {:.2} ms; \
                 {:.1} µs CPU/record",
                secs(p50) * 1e3,
                secs(p99) * 1e3,
                secs(cpu) * 1e6
            );
        }
    }
}

/// [`durable_round`]'s dispatch alone (the records paced to 32 tasks, which drop them): the
/// bench's own CPU per record, to tell from the store's.
async fn dispatch_round(n: u64, rate: u64) -> Duration {
    let records = round_records(n);
    let cpu0 = process_cpu();
    paced(records, rate, None).await;
    process_cpu().saturating_sub(cpu0) / n as u32
}

/// `UNSPOOF_BENCH_WRITES=n`: `n` records through `log_message`, flushed every 75 (the batch of
/// 50 ms at 1 500 a second), no journal: the batch writer and the database alone, in batches
/// that do not depend on timing, for instruction counts (`valgrind --tool=callgrind`).
fn writes(rt: &tokio::runtime::Runtime, n: u64) {
    let dir = std::env::temp_dir().join(format!("unspoof-store-writes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = StoreConfig::new(String::new(), dir.clone());
    config.flush_interval_ms = 3_600_000;
    let records = round_records(n);
    let cpu = rt.block_on(async {
        let store = Store::open(config).await.unwrap();
        let cpu0 = process_cpu();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            for r in records.by_ref().take(75) {
                store.log_message(r);
            }
            store.flush().await;
        }
        let cpu = process_cpu().saturating_sub(cpu0);
        assert_eq!(store.stats().written, n);
        store.close().await;
        cpu
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "writes: {n} records in batches of 75, {:.1} µs CPU/record",
        secs(cpu) * 1e6 / n as f64
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` must not run a long bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Some(rate) = std::env::var("UNSPOOF_BENCH_DURABLE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        return durable(&rt, rate);
    }
    if let Some(n) = std::env::var("UNSPOOF_BENCH_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        return writes(&rt, n);
    }
    let n = unspoof_store::bench::records();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("unspoof-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let batch: Option<usize> = std::env::var("UNSPOOF_BENCH_BATCH")
        .ok()
        .and_then(|s| s.parse().ok());
    let config = |url: String, data: std::path::PathBuf| {
        let mut c = StoreConfig::new(url, data);
        c.batch_size = batch.unwrap_or(c.batch_size);
        c
    };
    println!(
        "# unspoof-store bench (batches of {})",
        config(String::new(), dir.clone()).batch_size
    );
    if std::env::var("UNSPOOF_BENCH_SQLITE").as_deref() != Ok("none") {
        rt.block_on(run(
            "SQLite (WAL, synchronous=FULL)",
            config(String::new(), dir.join("sqlite")),
            n,
        ));
    }
    let server = std::env::var("UNSPOOF_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    if server != "none" {
        let name = format!("unspoof_bench_{}", std::process::id());
        if try_psql(&server, &format!("CREATE DATABASE {name}")) {
            rt.block_on(run(
                "PostgreSQL (127.0.0.1, synchronous_commit on)",
                config(format!("{server}/{name}"), dir.join("pg")),
                n,
            ));
            try_psql(&server, &format!("DROP DATABASE {name} WITH (FORCE)"));
        } else {
            println!("\nPostgreSQL at {server} not reachable: skipped");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
