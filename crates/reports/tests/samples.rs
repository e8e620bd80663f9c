//! Every aggregate report sample of `../shared/testdata` (parsedmarc's aggregate folder, the
//! mail-dmarc-perl report in its three encodings, mail-auth's dmarc-feedback) goes into a
//! SQLite store: the good ones stored with the right counts, the deliberately broken ones
//! refused with a clear error and kept aside whole; a second ingest stores nothing new.

#[path = "../../store/tests/common/mod.rs"]
mod store_common;

use std::path::{Path, PathBuf};

use unspoof_reports::{DmarcConfig, Ingestor, InputOutcome};
use unspoof_store::{Store, StoreConfig};

/// The shared test data's root, when it holds the reports (absent: a skip line, or a failure
/// under `CI=true`).
fn testdata() -> Option<PathBuf> {
    unspoof_testkit::testdata("dmarc report samples", "dmarc-reports")?;
    Some(unspoof_testkit::testdata_root())
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unspoof-reports-{tag}-{}", unspoof_store::new_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The sample files: (path, expected outcome: Ok(messages) or Err(words of the error)).
fn samples(td: &Path) -> Vec<(PathBuf, Result<u64, &'static str>)> {
    let agg = td.join("dmarc-reports/parsedmarc/aggregate");
    let mut v: Vec<(PathBuf, Result<u64, &'static str>)> = Vec::new();
    let broken: &[(&str, &str)] = &[
        ("invalid_xml.xml", "not well-formed XML"),
        ("invalid_utf_8.xml", "not UTF-8"),
        (
            "empty_reason.xml",
            "feedback/record/row/policy_evaluated/reason/type: must be one of",
        ),
    ];
    for f in std::fs::read_dir(&agg).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        match broken.iter().find(|(b, _)| *b == name) {
            Some((_, why)) => v.push((p, Err(why))),
            None => v.push((p, Ok(0))),
        }
    }
    v.push((
        td.join("dmarc-reports/parsedmarc/empty.xml"),
        Err("empty input"),
    ));
    v.push((
        td.join("dmarc-reports/parsedmarc/aggregate_invalid/report_with_upper_cased_pass.xml"),
        Err("policy_evaluated/disposition: must be one of none, quarantine, reject, pass (found \"None\")"),
    ));
    for f in ["test_dmarc.xml", "test_dmarc.xml.gz", "test_dmarc.xml.zip"] {
        v.push((td.join("dmarc-reports/mail-dmarc-perl").join(f), Ok(0)));
    }
    let fb = td.join("mail-auth-stalwart/dmarc-feedback");
    for f in std::fs::read_dir(&fb).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "xml" || e == "eml") {
            v.push((p, Ok(0)));
        }
    }
    v.sort();
    v
}

/// Messages counted in mail-auth's expected parse (`NNN.json`) of a dmarc-feedback sample.
fn expected_messages(json: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(json).ok()?).ok()?;
    Some(
        v["record"]
            .as_array()?
            .iter()
            .map(|r| r["row"]["count"].as_u64().unwrap_or(0))
            .sum(),
    )
}

#[tokio::test]
async fn every_sample_is_stored_or_refused_clearly_and_twice_stores_once() {
    let Some(td) = testdata() else { return };
    let dir = temp_dir("samples");
    let store = Store::open(StoreConfig::new("", &dir)).await.unwrap();
    let samples = samples(&td);
    assert!(samples.len() >= 33, "{} samples", samples.len());

    let mut ing = Ingestor::new(store.clone(), DmarcConfig::default());
    let paths: Vec<PathBuf> = samples.iter().map(|(p, _)| p.clone()).collect();
    ing.ingest_paths(&paths).await.unwrap();
    assert_eq!(ing.outcomes.len(), samples.len());
    let mut stored_reports = 0;
    for ((path, expect), (source, outcome)) in samples.iter().zip(&ing.outcomes) {
        assert_eq!(*source, path.display().to_string());
        match (expect, outcome) {
            (Ok(_), InputOutcome::Stored { reports, messages }) => {
                stored_reports += reports;
                assert!(*messages > 0, "{source}: no messages");
                let json = path.with_extension("json");
                if let Some(m) = expected_messages(&json) {
                    assert_eq!(*messages, m, "{source}: messages against {json:?}");
                }
            }
            (Err(why), InputOutcome::Rejected(e)) => {
                assert!(e.contains(why), "{source}: {e:?} does not say {why:?}")
            }
            // The three encodings of the mail-dmarc-perl report are one report, and mail-auth's
            // 004.xml is RFC 9990's sample again (same reporter, id, domain and range as
            // parsedmarc's rfc9990-sample.xml, read before it).
            (Ok(_), InputOutcome::Duplicate { .. })
                if source.contains("test_dmarc.xml.") || source.ends_with("004.xml") => {}
            _ => panic!("{source}: expected {expect:?}, got {outcome:?}"),
        }
    }
    let (reports, rows, rejected) = store.dmarc_counts().await.unwrap();
    assert_eq!(reports as usize, stored_reports);
    assert_eq!(rejected, 5, "the five broken samples are kept aside");
    assert!(rows >= reports);
    // Kept aside whole, with the error.
    let kept = store.dmarc_rejected(100).await.unwrap();
    assert!(
        kept.iter()
            .any(|k| k.source.ends_with("invalid_xml.xml")
                && k.error.contains("not well-formed XML"))
    );

    // The RFC 9990 sample: its new fields came through.
    let r = store
        .dmarc_reports(Some("example.com"), 1000)
        .await
        .unwrap();
    let sample = r
        .iter()
        .find(|r| r.report_id == "3v98abbp8ya9n3va8yr8oa3ya")
        .expect("rfc9990-sample.xml stored");
    assert_eq!(sample.format, "rfc9990");
    assert_eq!(sample.messages, 123);
    let rows = store
        .dmarc_rows("example.com", 302_832_000, 302_918_400)
        .await
        .unwrap();
    assert!(
        rows.iter()
            .any(|r| r.row.disposition == "pass" && r.row.count == 123)
    );
    let old = r
        .iter()
        .find(|r| r.report_id == "9391651994964116463")
        .expect("old draft stored");
    assert_eq!(old.format, "draft");

    // Twice: nothing new, every good input a duplicate, every broken one known.
    let mut again = Ingestor::new(store.clone(), DmarcConfig::default());
    again.ingest_paths(&paths).await.unwrap();
    for (source, outcome) in &again.outcomes {
        assert!(
            matches!(
                outcome,
                InputOutcome::Duplicate { .. } | InputOutcome::RejectedAgain(_)
            ),
            "{source}: {outcome:?}"
        );
    }
    assert_eq!(
        store.dmarc_counts().await.unwrap(),
        (reports, rows_count(&store).await, 5)
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn rows_count(store: &Store) -> i64 {
    store.dmarc_counts().await.unwrap().1
}

/// An mbox of three report mails, one broken: two reports stored, the broken mail kept aside,
/// and the mbox's messages named `path#N`.
#[tokio::test]
async fn an_mbox_is_read_message_by_message() {
    let Some(td) = testdata() else { return };
    let dir = temp_dir("mbox");
    let fb = td.join("mail-auth-stalwart/dmarc-feedback");
    let mut mbox = Vec::new();
    for f in ["101.eml", "102.eml"] {
        mbox.extend_from_slice(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n");
        let msg = std::fs::read(fb.join(f)).unwrap();
        mbox.extend_from_slice(&msg);
        if !msg.ends_with(b"\n") {
            mbox.extend_from_slice(b"\n");
        }
        mbox.extend_from_slice(b"\n");
    }
    mbox.extend_from_slice(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n");
    mbox.extend_from_slice(b"From: a@b.example\nSubject: hello\n\njust text\n\n");
    let path = dir.join("reports.mbox");
    std::fs::write(&path, &mbox).unwrap();
    let store = Store::open(StoreConfig::new("", dir.join("data")))
        .await
        .unwrap();
    let mut ing = Ingestor::new(store.clone(), DmarcConfig::default());
    ing.ingest_paths(std::slice::from_ref(&path)).await.unwrap();
    let o: Vec<_> = ing
        .outcomes
        .iter()
        .map(|(s, o)| (s.clone(), o.clone()))
        .collect();
    assert_eq!(o.len(), 3, "{o:?}");
    assert!(o[0].0.ends_with("reports.mbox#1"));
    assert!(matches!(o[0].1, InputOutcome::Stored { .. }), "{o:?}");
    assert!(matches!(o[1].1, InputOutcome::Stored { .. }), "{o:?}");
    match &o[2].1 {
        InputOutcome::Rejected(e) => assert!(e.contains("no aggregate report"), "{e}"),
        other => panic!("{other:?}"),
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same on PostgreSQL (the fleet's store): every good sample stored once, a second ingest
/// of everything storing nothing.
#[tokio::test]
async fn on_postgresql_too_ingesting_twice_stores_once() {
    let Some(td) = testdata() else { return };
    let db = store_common::TestDb::new(store_common::Kind::Postgres);
    let store = db.open("cli").await;
    let paths: Vec<PathBuf> = samples(&td).into_iter().map(|(p, _)| p).collect();
    let mut first = Ingestor::new(store.clone(), DmarcConfig::default());
    first.ingest_paths(&paths).await.unwrap();
    let counts = store.dmarc_counts().await.unwrap();
    assert_eq!(counts.2, 5);
    assert!(counts.0 >= 25, "{counts:?}");
    let mut again = Ingestor::new(store.clone(), DmarcConfig::default());
    again.ingest_paths(&paths).await.unwrap();
    assert!(again.outcomes.iter().all(|(_, o)| matches!(
        o,
        InputOutcome::Duplicate { .. } | InputOutcome::RejectedAgain(_)
    )));
    assert_eq!(store.dmarc_counts().await.unwrap(), counts);
    store.close().await;
}
