//! The store's behaviour, the same on both backends (`sqlite::*` and `postgres::*`).

mod common;

use common::message;
use unspoof_store::{NewQuarantine, QuarantineStatus, Query, SessionRecord, StoreError};

const T0: i64 = 1_763_900_000;

both! {
    async fn records_round_trip_whole(db) {
        let store = db.open("mx1").await;
        let session = SessionRecord {
            id: unspoof_store::new_id(),
            started_at: T0,
            ended_at: Some(T0 + 3),
            node: "mx1".into(),
            listener: "inbound".into(),
            client_ip: Some("2001:db8::7".parse().unwrap()),
            client_port: Some(51000),
            reverse_dns: Some("mail.example.com".into()),
            helo: Some("mail.example.com".into()),
            tls: Some("TLSv1.3 TLS_AES_256_GCM_SHA384".into()),
            auth_user: None,
            messages: 1,
            outcome: "quit".into(),
        };
        let mut m = message("mx1", T0 + 2, "2001:db8::7", "bounce@Example.COM",
            "Alice <alice@example.com>", &["bob@site.test"], "tag", &["dmarc.fail_policy_none"]);
        m.session_id = Some(session.id.clone());
        m.downstream_reply = Some("250 2.0.0 Ok: queued as 4F2".into());
        m.dns = Some(serde_json::json!({"view": "zone files"}));
        m.analysis = Some(serde_json::json!({"schema": "unspoof.analysis/1", "trace": {"hops": []}}).into());
        store.log_session(session.clone());
        store.log_message(m.clone());
        store.flush().await;
        assert_eq!(store.session(&session.id).await.unwrap(), Some(session));
        assert_eq!(store.message(&m.id).await.unwrap(), Some(m.clone()));
        // `find` also takes a queue id or a Message-ID.
        let by_queue = store.find(m.queue_id.as_deref().unwrap()).await.unwrap().unwrap();
        assert_eq!(by_queue.id, m.id);
        let mid = format!("<{}>", m.message_id.as_deref().unwrap());
        assert_eq!(store.find(&mid).await.unwrap().unwrap().analysis, m.analysis);
        let s = store.stats();
        assert_eq!((s.logged, s.written, s.spooled), (2, 2, 0));
        store.close().await;
    }

    async fn search_filters(db) {
        let store = db.open("mx1").await;
        let a = message("mx1", T0, "192.0.2.10", "x@spf.example", "Boss <ceo@corp.test>",
            &["ann@site.test", "Bob@Site.test"], "quarantine", &["impersonation.display_name", "dmarc.fail_policy_none"]);
        let b = message("mx1", T0 + 60, "192.0.2.200", "y@other.example", "y@other.example",
            &["carl@elsewhere.test"], "accept", &[]);
        let c = message("mx1", T0 + 120, "198.51.100.5", "z@spf.example", "z@corp.test",
            &["bob@site.test"], "reject", &["dmarc.reject"]);
        for m in [&a, &b, &c] {
            store.log_message(m.clone());
        }
        store.flush().await;
        let ids = |v: Vec<unspoof_store::MessageRecord>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        let q = |f: fn(&mut Query)| { let mut q = Query::default(); f(&mut q); q };

        assert_eq!(ids(store.search(&Query::default()).await.unwrap()), [c.id.clone(), b.id.clone(), a.id.clone()], "newest first");
        let by_mid = Query { message_id: Some(format!("<{}>", b.message_id.as_deref().unwrap())), ..Default::default() };
        assert_eq!(ids(store.search(&by_mid).await.unwrap()), [b.id.clone()]);
        let by_queue = Query { queue_id: c.queue_id.clone(), ..Default::default() };
        assert_eq!(ids(store.search(&by_queue).await.unwrap()), [c.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.client = Some("192.0.2.0/24".parse().unwrap()))).await.unwrap()), [b.id.clone(), a.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.client = Some("192.0.2.10/32".parse().unwrap()))).await.unwrap()), [a.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.mail_from_domain = Some("SPF.example".into()))).await.unwrap()), [c.id.clone(), a.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.from_domain = Some("corp.test".into()))).await.unwrap()), [c.id.clone(), a.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.recipient = Some("BOB@site.test".into()))).await.unwrap()), [c.id.clone(), a.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.recipient = Some("@elsewhere.test".into()))).await.unwrap()), [b.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.action = Some("reject".into()))).await.unwrap()), [c.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.reason = Some("dmarc.fail_policy_none".into()))).await.unwrap()), [a.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| { q.since = Some(T0 + 60); q.until = Some(T0 + 120); })).await.unwrap()), [b.id.clone()]);
        assert_eq!(ids(store.search(&q(|q| q.limit = Some(1))).await.unwrap()), [c.id.clone()]);
        let combined = q(|q| { q.mail_from_domain = Some("spf.example".into()); q.action = Some("quarantine".into()); });
        assert_eq!(ids(store.search(&combined).await.unwrap()), [a.id.clone()]);
        assert_eq!(store.count(&q(|q| q.recipient = Some("bob@site.test".into()))).await.unwrap(), 2);
        assert!(store.search(&q(|q| q.reason = Some("nope".into()))).await.unwrap().is_empty());
        store.close().await;
    }

    async fn a_record_written_twice_is_stored_once(db) {
        let store = db.open("mx1").await;
        let m = message("mx1", T0, "192.0.2.1", "a@b.example", "a@b.example", &["r@site.test"], "accept", &["x.y"]);
        store.log_message(m.clone());
        store.flush().await;
        store.log_message(m.clone());
        store.flush().await;
        assert_eq!(store.count(&Query::default()).await.unwrap(), 1);
        assert_eq!(store.count(&Query { reason: Some("x.y".into()), ..Default::default() }).await.unwrap(), 1);
        store.close().await;
    }

    async fn quarantine_put_release_delete(db) {
        let store = db.open("mx1").await;
        let raw: Vec<u8> = b"From: ceo@corp.test\r\nSubject: wire\r\n\r\n\x00\xff binary \r\n.\r\n".to_vec();
        let q = NewQuarantine {
            id: unspoof_store::new_id(),
            quarantined_at: T0,
            node: "mx1".into(),
            queue_id: Some("Q1".into()),
            mail_from: Some("x@evil.example".into()),
            recipients: vec!["ann@site.test".into()],
            from: Some("ceo@corp.test".into()),
            subject: Some("wire".into()),
            reasons: vec!["impersonation.display_name".into()],
            raw: raw.clone(),
            ..Default::default()
        };
        store.quarantine_put(q.clone()).await.unwrap();
        // Durable in the journal; in the database with the writer's next batch, where a
        // second store (another pool) sees it.
        store.flush().await;
        let other = db.open("cli").await;
        let got = other.quarantine_get(&q.id).await.unwrap().unwrap();
        assert_eq!(got.message.raw, raw);
        assert_eq!((got.status, got.size), (QuarantineStatus::Held, raw.len() as u64));
        let listed = other.quarantine_list(Some(QuarantineStatus::Held), 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].message.raw.is_empty(), "listings carry no bytes");
        assert!(!other.has_seen("corp.test", Some("ann@site.test")).await.unwrap());
        assert!(!other.has_seen("ceo@corp.test", Some(unspoof_engine::contact::ANY_RECIPIENT)).await.unwrap());

        let claimed = other.release_begin(&q.id, "admin@site.test").await.unwrap();
        assert_eq!(claimed.message.raw, raw);
        assert!(matches!(store.release_begin(&q.id, "someone").await, Err(StoreError::NotHeld(..))));
        // A failed delivery puts it back.
        other.release_end(&q.id, "admin@site.test", Err("connection refused")).await.unwrap();
        assert_eq!(other.quarantine_get(&q.id).await.unwrap().unwrap().status, QuarantineStatus::Held);
        other.release_begin(&q.id, "admin@site.test").await.unwrap();
        other.release_end(&q.id, "admin@site.test", Ok("250 2.0.0 queued as X")).await.unwrap();
        let done = other.quarantine_get(&q.id).await.unwrap().unwrap();
        assert_eq!(done.status, QuarantineStatus::Released);
        assert_eq!(done.actor.as_deref(), Some("admin@site.test"));
        assert_eq!(done.result.as_deref(), Some("250 2.0.0 queued as X"));
        assert!(done.acted_at.is_some());
        // A person's release makes the sender known to the recipient, and its From address a
        // correspondent of the site (to this process at once, to others from the database).
        assert!(other.has_seen("corp.test", Some("ann@site.test")).await.unwrap());
        let any = unspoof_engine::contact::ANY_RECIPIENT;
        assert!(other.has_seen("ceo@corp.test", Some(any)).await.unwrap());
        assert!(store.has_seen("ceo@corp.test", Some(any)).await.unwrap());
        assert!(!other.quarantine_delete(&q.id, "admin").await.unwrap(), "released, not held");

        let q2 = NewQuarantine { id: unspoof_store::new_id(), raw: b"x".to_vec(), ..q.clone() };
        store.quarantine_put(q2.clone()).await.unwrap();
        store.flush().await;
        assert!(store.quarantine_delete(&q2.id, "admin").await.unwrap());
        let gone = store.quarantine_get(&q2.id).await.unwrap().unwrap();
        assert_eq!(gone.status, QuarantineStatus::Deleted);
        assert!(gone.message.raw.is_empty());
        // The same id put twice (a journal or spool replay) keeps the first.
        store.quarantine_put(q.clone()).await.unwrap();
        store.flush().await;
        assert_eq!(store.quarantine_get(&q.id).await.unwrap().unwrap().status, QuarantineStatus::Released);
        other.close().await;
        store.close().await;
    }

    async fn first_contact(db) {
        let store = db.open("mx1").await;
        assert!(!store.has_seen("partner.example", None).await.unwrap());
        store.log_message(message("mx1", T0, "192.0.2.1", "b@bounce.partner.example",
            "Pat <pat@Partner.example>", &["ann@site.test"], "accept", &[]));
        // Rejected or quarantined mail establishes nothing.
        store.log_message(message("mx1", T0, "192.0.2.1", "x@evil.example", "x@evil.example",
            &["ann@site.test"], "reject", &["dmarc.reject"]));
        store.log_message(message("mx1", T0, "192.0.2.1", "x@evil.example", "x@evil.example",
            &["bob@site.test"], "quarantine", &["dmarc.quarantine"]));
        // Our user writing to a domain makes that domain known to the user.
        let mut out = message("mx1", T0, "10.0.0.5", "carl@site.test", "carl@site.test",
            &["someone@newpartner.example"], "accept", &[]);
        out.listener = "submission".into();
        store.log_message(out);
        // This process knows at once what it delivered, before the writer commits it.
        assert!(store.has_seen("Partner.example", Some("ann@site.test")).await.unwrap());
        assert!(!store.has_seen("evil.example", Some("ann@site.test")).await.unwrap());
        store.flush().await;
        // Another process (a fleet member) learns it from the database.
        let other = db.open("mx2").await;
        assert!(other.has_seen("partner.example", Some("ann@site.test")).await.unwrap());
        assert!(!other.has_seen("partner.example", Some("bob@site.test")).await.unwrap());
        other.close().await;
        assert!(store.has_seen("partner.example", Some("ann@site.test")).await.unwrap());
        assert!(store.has_seen("PARTNER.example.", Some("Ann@Site.test")).await.unwrap());
        assert!(!store.has_seen("partner.example", Some("bob@site.test")).await.unwrap());
        assert!(store.has_seen("partner.example", None).await.unwrap());
        assert!(!store.has_seen("evil.example", None).await.unwrap());
        assert!(store.has_seen("newpartner.example", Some("carl@site.test")).await.unwrap());
        // The correspondent memory: the From address of delivered mail, site-wide.
        let any = unspoof_engine::contact::ANY_RECIPIENT;
        let other = db.open("mx3").await;
        assert!(other.has_seen("pat@partner.example", Some(any)).await.unwrap());
        assert!(!other.has_seen("pat2@partner.example", Some(any)).await.unwrap());
        assert!(!other.has_seen("x@evil.example", Some(any)).await.unwrap());
        // An address key never answers a domain's question, nor the other way round.
        assert!(!other.has_seen("partner.example", Some(any)).await.unwrap());
        assert!(!other.has_seen("pat@partner.example", Some("ann@site.test")).await.unwrap());
        other.close().await;
        store.close().await;
    }

    async fn prune_by_age_and_size(db) {
        let mut config = db.config("mx1");
        config.retention_days = Some(30);
        config.max_bytes = None;
        let store = unspoof_store::Store::open(config.clone()).await.unwrap();
        let day = 86_400;
        for i in 0..10 {
            store.log_message(message("mx1", T0 - i * 10 * day, "192.0.2.1", "a@b.example",
                "a@b.example", &["r@site.test"], "reject", &["r.x"]));
        }
        store.quarantine_put(NewQuarantine { id: unspoof_store::new_id(), quarantined_at: T0 - 100 * day,
            raw: vec![b'x'; 1000], ..Default::default() }).await.unwrap();
        store.flush().await;
        let report = store.prune(T0).await.unwrap();
        // Kept: ages 0, 10, 20 and 30 days (older than 30 days go).
        assert_eq!((report.messages, report.quarantined), (6, 1));
        assert_eq!(store.count(&Query::default()).await.unwrap(), 4);
        assert_eq!(store.count(&Query { reason: Some("r.x".into()), ..Default::default() }).await.unwrap(), 4);
        store.close().await;

        // Size: keep only what fits, newest first.
        let one = report.bytes_after / 4;
        config.retention_days = None;
        config.max_bytes = Some(one * 2 + one / 2);
        let store = unspoof_store::Store::open(config).await.unwrap();
        let report = store.prune(T0).await.unwrap();
        assert_eq!(report.messages, 2);
        assert!(report.bytes_after <= one * 2 + one / 2);
        let left = store.search(&Query::default()).await.unwrap();
        assert_eq!(left.iter().map(|m| m.received_at).collect::<Vec<_>>(), [T0, T0 - 10 * day]);
        store.close().await;
    }

    // The overview's hourly rollups (migration 0021) count what the records count: for whole
    // and partial hours, after a replay of every record, and after retention deleted some. An
    // account limited to recipients reads the records; one seeing everything, the rollups.
    async fn overview_rollups_count_what_the_records_count(db) {
        let mut config = db.config("mx1");
        config.retention_days = Some(30);
        config.max_bytes = None;
        let store = unspoof_store::Store::open(config).await.unwrap();
        let (hour, day) = (3_600, 86_400);
        let h0 = T0 - T0 % hour;
        let mut all = Vec::new();
        for i in 0..40i64 {
            let (action, reasons): (&str, &[&str]) = match i % 4 {
                0 => ("accept", &[]),
                1 => ("tag", &["dmarc.fail_policy_none"]),
                2 => ("quarantine", &["dmarc.quarantine", "spf.fail"]),
                _ => ("reject", &["dmarc.reject"]),
            };
            all.push(message("mx1", h0 - 5 * hour + i * 911, &format!("192.0.2.{}", i % 3 + 1),
                &format!("b@d{}.example", i % 5), &format!("P <p@d{}.example>", i % 7),
                &["r@site.test"], action, reasons));
        }
        let old = message("mx1", T0 - 40 * day, "198.51.100.9", "b@old.example", "p@old.example",
            &["r@site.test"], "quarantine", &["dmarc.quarantine"]);
        for m in all.iter().chain([&old]) {
            store.log_message(m.clone());
        }
        store.flush().await;
        // A replay writes every record again (journal after a crash): each is counted once.
        for m in all.iter().chain([&old]) {
            store.log_message(m.clone());
        }
        store.flush().await;
        let everything: Vec<String> = Vec::new();
        let every_recipient = vec!["@site.test".to_string()];
        let periods = [
            (h0 - 6 * hour, h0 + 6 * hour, hour),
            (h0 - 6 * hour + 100, h0 + 5 * hour + 7, hour),
            (T0 - 50 * day, T0 + day, day),
        ];
        let total = |o: &unspoof_store::console::Overview| o.per_bucket.iter().map(|b| b.2).sum::<i64>();
        for (kept, after_prune) in [(41, false), (40, true)] {
            if after_prune {
                let report = store.prune(T0).await.unwrap();
                assert_eq!(report.messages, 1);
            }
            for (since, until, bucket) in periods {
                let rolled = store.console_overview(since, until, bucket, &everything).await.unwrap();
                let counted = store.console_overview(since, until, bucket, &every_recipient).await.unwrap();
                assert_eq!(rolled, counted, "{since}..{until} by {bucket}");
            }
            let wide = store.console_overview(T0 - 50 * day, T0 + day, day, &everything).await.unwrap();
            assert_eq!(total(&wide), kept);
            let quarantined = wide.per_bucket.iter().filter(|b| b.1 == "quarantine").map(|b| b.2).sum::<i64>();
            assert_eq!(quarantined, kept - 30);
            assert_eq!(wide.top_reasons.iter().find(|r| r.0 == "dmarc.quarantine").map(|r| r.1), Some(kept - 30));
            assert_eq!(wide.top_forged_domains.iter().map(|d| d.1).sum::<i64>(), kept - 20);
        }
        store.close().await;
    }

    // The rollups' invariant, read from the table itself: every row of `overview_hours` is
    // what a recount of the records gives (migration 0021's definitions), and nothing else,
    // after each batch: records over two hours, quarantines and rejects with and without a
    // From domain or client address, batches that replay stored records beside new ones, a
    // replay of everything, and retention's delete. On SQLite the batch writer counts (0023),
    // on PostgreSQL statement triggers.
    async fn overview_hours_equal_a_recount_of_the_records(db) {
        let mut config = db.config("mx1");
        config.retention_days = Some(30);
        config.max_bytes = None;
        // Batches only when flushed, so each step below is one batch.
        config.flush_interval_ms = 3_600_000;
        let store = unspoof_store::Store::open(config).await.unwrap();
        let (hour, day) = (3_600, 86_400);
        let h0 = T0 - T0 % hour;
        let make = |i: i64, at: i64| {
            let (action, reasons): (&str, &[&str]) = match i % 5 {
                0 => ("accept", &[]),
                1 => ("tag", &["dmarc.fail_policy_none"]),
                2 => ("quarantine", &["dmarc.quarantine", "spf.fail", "impersonation.display_name"]),
                3 => ("reject", &["dmarc.reject"]),
                _ => ("quarantine", &["spf.fail"]),
            };
            let mut m = message("mx1", at, &format!("192.0.2.{}", i % 3 + 1),
                &format!("b@d{}.example", i % 4), &format!("P <p@d{}.example>", i % 3),
                &["r@site.test"], action, reasons);
            // Some quarantines and rejects without a From domain or a client address.
            if i % 7 == 3 {
                m.from = None;
            }
            if i % 6 == 2 {
                m.client_ip = None;
            }
            m
        };
        // Two hours, the second one's records first.
        let first: Vec<_> = (0..30).map(|i| make(i, h0 - hour + (29 - i) * 240)).collect();
        let second: Vec<_> = (30..50).map(|i| make(i, h0 + (i - 30) * 170)).collect();
        let old: Vec<_> = (50..56).map(|i| make(i, T0 - 40 * day + i)).collect();
        assert!(first.iter().any(|m| m.from.is_none() && m.action == "quarantine"));
        assert!(first.iter().any(|m| m.client_ip.is_none() && m.action == "reject"));
        let check = |step: &'static str| {
            let url = db.url.clone();
            async move {
                let (rolled, counted) = rollups_and_recount(&url).await;
                assert!(!counted.is_empty(), "{step}");
                assert_eq!(rolled, counted, "{step}: overview_hours against a recount");
            }
        };
        let batch = |records: Vec<&unspoof_store::MessageRecord>| {
            for m in records {
                store.log_message(m.clone());
            }
            store.flush()
        };
        batch(first.iter().chain(&old).collect()).await;
        check("the first batch").await;
        // Stored records again (a journal replayed, a second node) beside new ones, in one
        // batch: only the new ones count.
        batch(first[..10].iter().chain(&second).chain(&first[10..20]).collect()).await;
        check("replays beside new records").await;
        batch(first.iter().chain(&second).chain(&old).collect()).await;
        check("a replay of everything").await;
        let report = store.prune(T0).await.unwrap();
        assert_eq!(report.messages, old.len() as u64);
        check("after retention").await;
        // Replays of the deleted records count again: they are records again.
        batch(old.iter().chain(&second[..3]).collect()).await;
        check("the deleted records written again").await;
        store.close().await;
    }

    // Two writers on one database (two processes on one SQLite file, two nodes on one
    // PostgreSQL), at the same time, each also writing records the other wrote: the rollups
    // still count each record once.
    async fn overview_hours_with_two_writers_at_once(db) {
        let (one, two) = (db.open("mx1").await, db.open("mx2").await);
        let hour = 3_600;
        let records: Vec<_> = (0..400i64).map(|i| {
            let action = ["accept", "tag", "quarantine", "reject"][i as usize % 4];
            message("mx1", T0 - 2 * hour + i * 17, &format!("192.0.2.{}", i % 9 + 1),
                "b@d.example", &format!("p@d{}.example", i % 11), &["r@site.test"], action,
                &["dmarc.reject", "spf.fail"][..i as usize % 3])
        }).collect();
        let write = |store: unspoof_store::Store, records: Vec<unspoof_store::MessageRecord>| {
            tokio::spawn(async move {
                for chunk in records.chunks(25) {
                    for m in chunk {
                        store.log_message(m.clone());
                    }
                    store.flush().await;
                }
                store.close().await;
            })
        };
        // Each writes three quarters of the records, the middle half by both.
        let a = write(one, records[..300].to_vec());
        let b = write(two, records[100..].iter().rev().cloned().collect());
        a.await.unwrap();
        b.await.unwrap();
        let (rolled, counted) = rollups_and_recount(&db.url).await;
        let verdicts: i64 = counted.iter().filter(|r| r.0 == "verdict").map(|r| r.3).sum();
        assert_eq!(verdicts, 400);
        assert_eq!(rolled, counted);
    }

    async fn a_full_queue_spills_to_the_spool_and_loses_nothing(db) {
        let mut config = db.config("mx1");
        config.queue_capacity = 1;
        config.flush_interval_ms = 1_000;
        let store = unspoof_store::Store::open(config).await.unwrap();
        for i in 0..200 {
            store.log_message(message("mx1", T0 + i, "192.0.2.1", "a@b.example", "a@b.example",
                &["r@site.test"], "accept", &[]));
        }
        store.flush().await;
        let s = store.stats();
        assert!(s.spooled > 0, "{s:?}");
        assert_eq!(store.count(&Query::default()).await.unwrap(), 200);
        assert_eq!(s.written, 200, "{s:?}");
        store.close().await;
    }

    // `log_durable`: the records are in the journal when it returns, reach the database by
    // the batch writer, and the journal is gone once they are settled; the session's open
    // record is replaced by its final one, never the other way round.
    async fn durable_records_and_the_session_as_it_stands(db) {
        let store = db.open("mx1").await;
        let open = SessionRecord {
            id: unspoof_store::new_id(),
            started_at: T0,
            ended_at: None,
            node: "mx1".into(),
            listener: "inbound".into(),
            messages: 0,
            outcome: "open".into(),
            ..Default::default()
        };
        let mut m = message("mx1", T0 + 1, "192.0.2.1", "a@b.example", "a@b.example",
            &["r@site.test"], "accept", &[]);
        m.session_id = Some(open.id.clone());
        store.log_durable(m.clone(), Some(open.clone())).await.unwrap();
        let spool = db.config("mx1").spool_dir();
        let journal = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("journal-"))
            .count();
        assert_eq!(journal(&spool), 1, "fsync'd into the journal before log_durable returned");
        store.flush().await;
        assert_eq!(store.message(&m.id).await.unwrap(), Some(m.clone()));
        assert_eq!(store.session(&open.id).await.unwrap(), Some(open.clone()));
        let ended = SessionRecord { ended_at: Some(T0 + 5), messages: 1, outcome: "quit".into(), ..open.clone() };
        store.log_session(ended.clone());
        store.flush().await;
        assert_eq!(store.session(&open.id).await.unwrap(), Some(ended.clone()));
        // The open record again (a journal replayed after a crash): the ended one stays.
        store.log_session(open.clone());
        store.flush().await;
        assert_eq!(store.session(&open.id).await.unwrap(), Some(ended.clone()));
        // Both in one batch, in either order: one row, the ended one.
        let other = SessionRecord { id: unspoof_store::new_id(), ..open.clone() };
        let other_ended = SessionRecord { id: other.id.clone(), ..ended.clone() };
        store.log_session(other_ended.clone());
        store.log_session(other.clone());
        store.flush().await;
        assert_eq!(store.session(&other.id).await.unwrap(), Some(other_ended));
        store.close().await;
        assert_eq!(journal(&spool), 0, "settled segments are removed");
    }

    // A journal segment left by a process that died (nobody holds its lock) is replayed
    // into the database by the next store on the directory, without duplicates.
    async fn a_dead_process_journal_is_replayed(db) {
        // The writer of mx1 never gets to write: an hour between batches.
        let mut config = db.config("mx1");
        config.flush_interval_ms = 3_600_000;
        let dying = unspoof_store::Store::open(config.clone()).await.unwrap();
        let records: Vec<_> = (0..5).map(|i| message("mx1", T0 + i, "192.0.2.1", "a@b.example",
            "a@b.example", &["r@site.test"], "reject", &["dmarc.reject"])).collect();
        for m in &records {
            dying.log_durable(m.clone(), None).await.unwrap();
        }
        // What a kill -9 leaves: the segment, with no lock on it (a copy: this process still
        // holds the original's lock).
        let spool = config.spool_dir();
        let heir = db.config("mx2");
        std::fs::create_dir_all(heir.spool_dir()).unwrap();
        for e in std::fs::read_dir(&spool).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with("journal-") {
                std::fs::copy(e.path(), heir.spool_dir().join(e.file_name())).unwrap();
            }
        }
        let store = unspoof_store::Store::open(heir).await.unwrap();
        store.flush().await;
        for m in &records {
            assert_eq!(store.message(&m.id).await.unwrap().as_ref(), Some(m));
        }
        store.close().await;
        // The dying store's own batch, when it does come, adds nothing twice.
        dying.close().await;
        let store = db.open("mx3").await;
        assert_eq!(store.count(&Query::default()).await.unwrap(), 5);
        store.close().await;
    }
}

/// The helper the front doors use to fill a record from the engine's analysis.
#[tokio::test]
async fn with_analysis_fills_verdict_and_summaries() {
    use unspoof_engine::{Dns, Engine, Envelope, Policy};
    let engine = Engine::new(Policy::default(), Dns::offline());
    let raw = b"Received: from mail.example.com (mail.example.com [192.0.2.7]) by mx.site.test; Sun, 23 Nov 2025 10:00:00 +0000\r\n\
From: Alice <alice@example.com>\r\nTo: bob@site.test\r\nSubject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nbody\r\n";
    let env = Envelope {
        ip: Some("192.0.2.7".parse().unwrap()),
        mail_from: Some("alice@example.com".into()),
        rcpt: vec!["bob@site.test".into()],
        ..Default::default()
    };
    let analysis = engine.evaluate(raw, &env).await;
    let m = unspoof_store::MessageRecord::default().with_analysis(&analysis);
    assert_eq!(m.action, analysis.verdict.action.as_str());
    assert_eq!(m.reasons, analysis.verdict.codes());
    assert_eq!(m.message_id.as_deref(), Some("m1@example.com"));
    assert_eq!(
        m.from.as_deref(),
        Some("Alice <alice@example.com>").or(m.from.as_deref())
    );
    assert!(
        m.auth_summary.as_deref().unwrap().starts_with("spf="),
        "{:?}",
        m.auth_summary
    );
    assert!(
        m.trace_summary.as_deref().unwrap().contains("hop"),
        "{:?}",
        m.trace_summary
    );
    assert_eq!(
        m.analysis.as_ref().unwrap().value()["schema"],
        "unspoof.analysis/1"
    );
    // The analysis is stored as the engine's JSON, whole.
    assert_eq!(
        m.analysis.as_ref().unwrap().value(),
        serde_json::to_value(&analysis).unwrap()
    );
    assert_eq!(
        m.auth_summary.as_deref(),
        Some(
            format!(
                "spf={} dkim=none dmarc={} arc={}",
                analysis.auth.spf.result, analysis.auth.dmarc.result, analysis.auth.arc.result
            )
            .as_str()
        )
    );
    assert_eq!(
        m.dns.as_ref().unwrap()["view"],
        serde_json::json!(analysis.dns)
    );
    // The summary (a plain accept, `[store] full_analysis`): everything but the analysis, of
    // which only what the day's DMARC report counts, at the same paths.
    let summary = unspoof_store::MessageRecord::default().with_analysis_summary(&analysis);
    let (whole, kept) = (
        m.analysis.as_ref().unwrap().value(),
        summary.analysis.as_ref().unwrap().value(),
    );
    assert_eq!(kept["summary"], true);
    assert_eq!(kept["auth"]["dmarc"], whole["auth"]["dmarc"]);
    assert_eq!(kept["auth"]["checked"], whole["auth"]["checked"]);
    assert_eq!(
        kept["envelope"]["mail_from"],
        whole["envelope"]["mail_from"]
    );
    // Exactly the picked fields, as the whole analysis has them (the report reads these).
    let pick = |v: &serde_json::Value, keys: &[&str]| -> serde_json::Value {
        keys.iter()
            .map(|k| (k.to_string(), v[*k].clone()))
            .collect()
    };
    assert_eq!(
        kept["envelope"],
        pick(&whole["envelope"], &["ip", "mail_from", "helo"])
    );
    for spf in ["spf", "spf_helo"] {
        assert_eq!(
            kept["auth"][spf],
            pick(&whole["auth"][spf], &["domain", "result"])
        );
    }
    let sigs: Vec<serde_json::Value> = whole["auth"]["dkim"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| pick(s, &["domain", "selector", "result"]))
        .collect();
    assert_eq!(kept["auth"]["dkim"], serde_json::Value::Array(sigs));
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&kept), ["auth", "envelope", "summary"]);
    assert_eq!(
        keys(&kept["auth"]),
        ["checked", "dkim", "dmarc", "spf", "spf_helo"]
    );
    assert!(
        kept["trace"].is_null() && kept["verdict"].is_null(),
        "{kept}"
    );
    assert!(
        kept.to_string().len() * 3 < whole.to_string().len(),
        "{kept}"
    );
    assert_eq!(
        unspoof_store::MessageRecord {
            analysis: None,
            ..m
        },
        unspoof_store::MessageRecord {
            analysis: None,
            ..summary
        }
    );
}

/// `overview_hours`' rows and a recount of the records by migration 0021's definitions, both
/// as (kind, hour, key, n) in order.
async fn rollups_and_recount(
    url: &str,
) -> (
    Vec<(String, i64, String, i64)>,
    Vec<(String, i64, String, i64)>,
) {
    const ROLLED: &str = "SELECT kind, hour, k, n FROM overview_hours ORDER BY kind, hour, k";
    const COUNTED: &str = "SELECT kind, hour, k, n FROM ( \
        SELECT 'verdict' AS kind, (received_at / 3600) * 3600 AS hour, action AS k, \
               COUNT(*) AS n FROM messages GROUP BY 2, 3 \
        UNION ALL \
        SELECT 'reason', (received_at / 3600) * 3600, code, COUNT(*) FROM message_reason \
        GROUP BY 2, 3 \
        UNION ALL \
        SELECT 'forged', (received_at / 3600) * 3600, from_domain, COUNT(*) FROM messages \
        WHERE action IN ('quarantine', 'reject') AND from_domain IS NOT NULL GROUP BY 2, 3 \
        UNION ALL \
        SELECT 'source', (received_at / 3600) * 3600, client_ip, COUNT(*) FROM messages \
        WHERE action IN ('quarantine', 'reject') AND client_ip IS NOT NULL GROUP BY 2, 3 \
        ) c ORDER BY kind, hour, k";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rolled = sqlx::query_as(ROLLED).fetch_all(&pool).await.unwrap();
        let counted = sqlx::query_as(COUNTED).fetch_all(&pool).await.unwrap();
        pool.close().await;
        (rolled, counted)
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let rolled = sqlx::query_as(ROLLED).fetch_all(&pool).await.unwrap();
        let counted = sqlx::query_as(COUNTED).fetch_all(&pool).await.unwrap();
        pool.close().await;
        (rolled, counted)
    }
}
