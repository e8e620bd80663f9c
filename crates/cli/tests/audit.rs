//! `unspoof audit` as an administrator runs it: against a real Knot DNS server on loopback,
//! with the site's unspoof.toml naming its gateways and DKIM keys, `--connect-to` and
//! `--ca-file` reaching the test's SMTP and HTTPS servers; the human report, `--json` and the
//! exit code of the worst finding (README).

#[path = "../../audit/tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::{zones::*, *};

fn unspoof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_unspoof"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_reports_grades_and_exits_by_the_worst_finding() {
    let ca = Ca::new();
    let dir = temp_dir("cli");
    let ca_file = dir.join("ca.pem");
    write(&ca_file, &ca.pem);
    let (smtp_tls, _) = ca.acceptor(&["mx.good.test"]);
    let smtp = smtp_server("mx.good.test", Some(smtp_tls)).await;
    let (https_tls, _) = ca.acceptor(&["mta-sts.good.test"]);
    let https = https_server(https_tls, 200, "text/plain", POLICY_GOOD).await;
    let zones = vec![
        ZoneSpec::new("good.test", &good_zone()),
        ZoneSpec::new("127.in-addr.arpa", REVERSE),
        ZoneSpec::new("dmarc-weak.test", &dmarc_weak_zone()),
        ZoneSpec::new("bypass.test", BYPASS),
    ];
    let knot = tokio::task::spawn_blocking(move || Knot::start(&zones, "127.0.0.1", None))
        .await
        .unwrap();

    // The site's configuration: its gateway, and a signing key whose record is not published.
    let key = dir.join("s2027.key");
    let keygen = unspoof()
        .args([
            "dkim",
            "keygen",
            "--domain",
            "good.test",
            "--selector",
            "s2027",
            "--algorithm",
            "ed25519",
            "--out",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let printed = String::from_utf8_lossy(&keygen.stdout).to_string();
    let config = dir.join("unspoof.toml");
    write(
        &config,
        &format!(
            "protected_domains = [\"good.test\"]\n[gateway]\nhostname = \"mx.good.test\"\ngateway_names = [\"mx.good.test\"]\n\
             [[gateway.dkim]]\ndomain = \"good.test\"\nselector = \"s2027\"\nkey = \"{}\"\n",
            key.display()
        ),
    );
    let check = unspoof()
        .args(["policy", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let with = |domain: &str, config: &std::path::Path| {
        let mut c = unspoof();
        c.args([
            "audit",
            domain,
            "--resolver",
            &knot.addr.to_string(),
            "--config",
        ])
        .arg(config)
        .args(["--selector", "s2026", "--ca-file"])
        .arg(&ca_file)
        .args(["--connect-to", &format!("mx.good.test:25:{smtp}")])
        .args(["--connect-to", &format!("mta-sts.good.test:443:{https}")]);
        c
    };
    let base = |domain: &str| with(domain, &config);
    let env = |c: &mut Command| tokio::task::block_in_place(|| c.output().unwrap());

    // good.test with the unpublished key: one error (exit 2), and the fix is the key's record.
    let out = env(base("good.test").arg("--json"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["schema"], "unspoof.audit/1");
    let missing = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "dkim.missing_key")
        .expect("the configured selector without a record is reported");
    let record = missing["fix"][0]["value"]
        .as_str()
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert!(record.starts_with("v=DKIM1; k=ed25519; p="), "{record}");
    assert!(
        printed.contains(&record),
        "the fix is the record keygen printed: {printed} / {record}"
    );
    assert_eq!(report["entry"]["mx"][0]["gateway"], true);
    assert!(report["dns"]["queries"].as_u64().unwrap() < 100);

    // Without the unpublished key: clean, grade A, exit 0, and the human report says so.
    let plain = dir.join("plain.toml");
    write(
        &plain,
        "[gateway]\nhostname = \"mx.good.test\"\ngateway_names = [\"mx.good.test\"]\n",
    );
    let out = env(&mut with("good.test", &plain));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("good.test  grade A (100/100)"), "{text}");
    assert!(
        text.contains("MX     10 mx.good.test [127.0.1.1] gateway, STARTTLS"),
        "{text}"
    );
    assert!(
        text.contains("pass     SPF record published and valid"),
        "{text}"
    );

    // A weak domain: critical (exit 3), with the records to publish.
    let out = env(base("dmarc-weak.test").arg("--no-probe"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("CRITICAL dmarc.not_enforced"), "{text}");
    assert!(
        text.contains("replace:  _dmarc.dmarc-weak.test. 3600 IN TXT \"v=DMARC1; p=reject;"),
        "{text}"
    );
    assert!(text.contains("-40  dmarc.not_enforced"), "{text}");

    // Several domains: one JSON line each, the exit code is the worst.
    let out =
        env(base("good.test").args(["bypass.test", "--json", "--no-probe", "--no-lookalikes"]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // Selectors seen in recorded mail (the store of `unspoof serve`): looked up too.
    let store_dir = dir.join("store");
    let store = unspoof_store::Store::open(unspoof_store::StoreConfig::new("", &store_dir))
        .await
        .unwrap();
    store.log_message(unspoof_store::MessageRecord {
        id: unspoof_store::new_id(),
        received_at: 1_800_000_000,
        node: "mx1".into(),
        listener: "inbound".into(),
        from: Some("ann@good.test".into()),
        mail_from: Some("ann@good.test".into()),
        action: "accept".into(),
        dns: Some(serde_json::json!({"dkim": [
            {"domain": "good.test", "selector": "seen9", "result": "fail"},
            {"domain": "other.test", "selector": "elsewhere", "result": "pass"}
        ]})),
        ..Default::default()
    });
    store.close().await;
    let mut c = with("good.test", &plain);
    c.args(["--json", "--no-probe", "--no-lookalikes", "--data-dir"])
        .arg(&store_dir);
    let out = env(&mut c);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen: Vec<&serde_json::Value> = report["dkim"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["source"] == "seen")
        .collect();
    assert_eq!(seen.len(), 1, "{}", report["dkim"]);
    assert_eq!(seen[0]["selector"], "seen9");
    assert_eq!(seen[0]["status"], "missing");

    // No domain named: the configuration's protected_domains.
    let mut c = unspoof();
    c.args([
        "audit",
        "--json",
        "--no-probe",
        "--no-lookalikes",
        "--resolver",
        &knot.addr.to_string(),
        "--config",
    ])
    .arg(&config);
    let out = env(&mut c);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["domain"], "good.test");

    // No DNS at all: nothing can be checked, and that is not clean (fail closed).
    let out = env(unspoof().args(["audit", "good.test", "--offline", "--no-probe"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Not a domain: a usage error.
    let out = env(unspoof().args(["audit", "a..b", "--offline"]));
    assert_eq!(out.status.code(), Some(64));
    drop(knot);
    let _ = std::fs::remove_dir_all(&dir);
}
