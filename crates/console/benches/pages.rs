//! `cargo bench -p unspoof-console`: the search and message pages over a million logged
//! messages, on SQLite and on PostgreSQL: each page asked through the whole router (session
//! check, store queries, rendering; no socket), 50 times, p50/p95/max.
//!
//! Environment: `UNSPOOF_BENCH_RECORDS` (default 1 000 000), `UNSPOOF_BENCH_PG` (default
//! `postgres://postgres@127.0.0.1:5432`; `none` skips PostgreSQL), `UNSPOOF_BENCH_SQLITE`
//! (`none` skips SQLite). Records: those of `cargo bench -p unspoof-store` (one generator,
//! `unspoof_store::bench`), 30 days of mail ending now, from 5 000 client addresses in 20
//! networks, 2 000 sender domains, to 500 recipients; 90 % accept, 5 % tag, 3 % quarantine,
//! 2 % reject; a small analysis JSON each, and the engine's whole analysis on the 1 000 newest
//! quarantined messages, whose bytes are in the quarantine too (the message page reads those).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use unspoof_console::{Console, ConsoleConfig};
use unspoof_store::bench::Rng;
use unspoof_store::console::ConsoleAccount;
use unspoof_store::{MessageRecord, NewQuarantine, Store, StoreConfig, new_id, now};

const RUNS: usize = 50;
const HELD: u64 = 1_000;

const RAW: &str = "Received: from mail.d7.example (mail.d7.example [198.18.0.7]) by mx.site.test with ESMTPS id Q1; Mon, 7 Dec 2026 06:00:00 +0000\r\n\
From: Person <p@d7.example>\r\nTo: <user7@site.test>\r\nSubject: Invoice 7\r\nMessage-ID: <7@mail.d7.example>\r\n\
Date: Mon, 7 Dec 2026 05:59:58 +0000\r\nContent-Type: text/plain\r\n\r\nHello,\r\nplease find the invoice attached.\r\n";

/// Record `i` of `n`: the store bench's (`unspoof_store::bench`), with an "Invoice" subject
/// every hundredth (the subject search finds them), and the engine's whole analysis on the
/// newest quarantined ones (the message page reads it); the others keep only their verdict.
fn record(rng: &mut Rng, i: u64, n: u64, t0: i64, full: &str) -> MessageRecord {
    let mut r = unspoof_store::bench::record(rng, i, n, t0);
    if i.is_multiple_of(100) {
        r.subject = Some(format!("Invoice {i}"));
    }
    let newest = i + 40 * HELD >= n;
    r.analysis = Some(if r.action == "quarantine" && newest {
        unspoof_store::JsonText(full.to_string())
    } else {
        serde_json::json!({
            "schema": "unspoof.analysis/1",
            "verdict": {"action": r.action, "reasons": r.reasons.iter().map(|c| serde_json::json!({"code": c, "action": r.action, "message": "generated"})).collect::<Vec<_>>()},
        })
        .into()
    });
    r
}

/// The engine's whole analysis of one message (offline DNS): what a real record carries.
async fn full_analysis() -> String {
    let engine = unspoof_engine::Engine::new(
        unspoof_engine::Policy::default(),
        unspoof_engine::Dns::offline(),
    );
    let a = engine
        .evaluate(RAW.as_bytes(), &unspoof_engine::Envelope::default())
        .await;
    serde_json::to_string(&a).unwrap()
}

/// Fills the store; returns the record ids of the messages held in the quarantine.
async fn fill(store: &Store, n: u64) -> Vec<String> {
    let full = full_analysis().await;
    let mut rng = Rng::seeded();
    let t0 = now();
    let start = Instant::now();
    let mut held = Vec::new();
    let mut i = 0;
    while i < n {
        let end = (i + 5_000).min(n);
        for k in i..end {
            let mut r = record(&mut rng, k, n, t0, &full);
            if r.action == "quarantine" && k + 40 * HELD >= n && (held.len() as u64) < HELD {
                let qid = new_id();
                r.stored_at = Some(qid.clone());
                store
                    .quarantine_put(NewQuarantine {
                        id: qid,
                        message_record: Some(r.id.clone()),
                        quarantined_at: r.received_at,
                        node: r.node.clone(),
                        recipients: r.recipients.clone(),
                        subject: r.subject.clone(),
                        reasons: r.reasons.clone(),
                        raw: RAW.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                held.push(r.id.clone());
            }
            store.log_message(r);
        }
        i = end;
        store.flush().await;
        if i % 200_000 == 0 {
            eprintln!("  {i} records, {:.0} s", start.elapsed().as_secs_f64());
        }
    }
    store.analyze().await.unwrap();
    eprintln!("  filled {n} in {:.0} s", start.elapsed().as_secs_f64());
    held
}

fn hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"unspoof-console-bench").unwrap();
    a2.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// Logs `name` in through the router; returns the session cookie.
async fn session(app: &axum::Router, name: &str) -> String {
    let page = app
        .clone()
        .oneshot(Request::get("/login").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookie = page.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let body = page.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    let at = body.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &body[at..at + body[at..].find('"').unwrap()];
    let res = app
        .clone()
        .oneshot(
            Request::post("/login")
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "name={name}&password=bench&csrf={csrf}"
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    let c = res.headers()[header::SET_COOKIE].to_str().unwrap();
    c.split(';').next().unwrap().to_string()
}

async fn page(app: &axum::Router, cookie: &str, path: &str) -> (Duration, usize) {
    let t = Instant::now();
    let res = app
        .clone()
        .oneshot(
            Request::get(path)
                .header(header::COOKIE, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (t.elapsed(), body.len())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

async fn run(backend: &str, url: &str, n: u64) {
    let dir = std::env::temp_dir().join(format!("unspoof-console-bench-{backend}-{}", new_id()));
    let mut config = StoreConfig::new(url, &dir);
    config.retention_days = None;
    let store = Store::open(config).await.unwrap();
    eprintln!("{backend}: filling {n} records");
    let held = fill(&store, n).await;
    for (name, role, scope) in [
        ("admin", "administrator", vec![]),
        ("user7", "recipient", vec!["user7@site.test".to_string()]),
    ] {
        store
            .console_account_put(&ConsoleAccount {
                name: name.into(),
                password_hash: hash("bench"),
                role: role.into(),
                scope,
                created_at: now(),
                disabled: false,
            })
            .await
            .unwrap();
    }
    let app = unspoof_console::router(Console::new(store.clone(), ConsoleConfig::default()));
    let admin = session(&app, "admin").await;
    let user7 = session(&app, "user7").await;
    let day_ago = unspoof_store::format_time(now() - 86_400)[..10].to_string();
    let pages: Vec<(&str, &str, String)> = vec![
        ("newest, no filter", "admin", "/search".into()),
        ("reason code", "admin", "/search?reason=dmarc.reject".into()),
        ("verdict", "admin", "/search?verdict=quarantine".into()),
        (
            "sender domain",
            "admin",
            "/search?sender=d123.example".into(),
        ),
        (
            "sender address",
            "admin",
            "/search?sender=bounce%40d123.example".into(),
        ),
        (
            "recipient",
            "admin",
            "/search?rcpt=user7%40site.test".into(),
        ),
        (
            "client network",
            "admin",
            "/search?client=198.18.30.0%2F24".into(),
        ),
        (
            "subject, last day",
            "admin",
            format!("/search?subject=invoice&since={day_ago}"),
        ),
        (
            "reason, page 20",
            "admin",
            "/search?reason=dmarc.reject&page=20".into(),
        ),
        ("quarantine, recipient", "user7", "/quarantine".into()),
        ("overview, 7 days", "admin", "/?days=7".into()),
    ];
    println!(
        "\n{backend}, {n} records: page (50 runs each)        p50 ms   p95 ms   max ms   bytes"
    );
    for (name, who, path) in &pages {
        let cookie = if *who == "admin" { &admin } else { &user7 };
        let mut times = Vec::with_capacity(RUNS);
        let mut size = 0;
        for _ in 0..RUNS {
            let (t, s) = page(&app, cookie, path).await;
            times.push(t);
            size = s;
        }
        times.sort();
        println!(
            "  {:<38} {:>8.1} {:>8.1} {:>8.1} {:>7}",
            name,
            ms(times[RUNS / 2]),
            ms(times[RUNS * 95 / 100]),
            ms(times[RUNS - 1]),
            size
        );
    }
    // The baseline, in the same run: what each of these pages also paid before it stopped
    // counting every match (the store's COUNT of the same filter, alone).
    let network: unspoof_store::IpNet = "198.18.30.0/24".parse().unwrap();
    let counts: Vec<(&str, unspoof_store::Query)> = vec![
        ("count before: no filter", unspoof_store::Query::default()),
        (
            "count before: reason code",
            unspoof_store::Query {
                reason: Some("dmarc.reject".into()),
                ..Default::default()
            },
        ),
        (
            "count before: client network",
            unspoof_store::Query {
                client: Some(network),
                ..Default::default()
            },
        ),
    ];
    for (name, q) in &counts {
        let mut times = Vec::with_capacity(RUNS);
        let mut matches = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            matches = store.count(q).await.unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "  {:<38} {:>8.1} {:>8.1} {:>8.1} {:>7} matches",
            name,
            ms(times[RUNS / 2]),
            ms(times[RUNS * 95 / 100]),
            ms(times[RUNS - 1]),
            matches
        );
    }
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let id = &held[i * held.len() / RUNS];
        times.push(page(&app, &admin, &format!("/message/{id}")).await.0);
    }
    times.sort();
    println!(
        "  {:<38} {:>8.1} {:>8.1} {:>8.1}",
        "message page (50 different)",
        ms(times[RUNS / 2]),
        ms(times[RUNS * 95 / 100]),
        ms(times[RUNS - 1])
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let n = unspoof_store::bench::records();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if std::env::var("UNSPOOF_BENCH_SQLITE").as_deref() != Ok("none") {
            run("sqlite", "", n).await;
        }
        let pg = std::env::var("UNSPOOF_BENCH_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        if pg != "none" {
            let db = format!("unspoof_console_bench_{}", std::process::id());
            let pg = pg.trim_end_matches('/');
            unspoof_testkit::psql(pg, &format!("CREATE DATABASE {db}"));
            run("postgres", &format!("{pg}/{db}"), n).await;
            unspoof_testkit::psql(pg, &format!("DROP DATABASE {db} WITH (FORCE)"));
        }
    });
}
