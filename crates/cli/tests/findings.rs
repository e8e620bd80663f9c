//! The spoofing findings through `unspoof analyze`, each on a real message file with a DNS zone
//! file and a policy, asserting the action and the reason code; and the same message made
//! legitimate (signed and aligned, from the internal network, through a trusted forwarder)
//! asserting accept.

use unspoof_testkit::repo;

use std::{path::PathBuf, process::Command};

fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

/// The shared test data (absent: a skip line, or a failure under `CI=true`).
fn testdata() -> Option<PathBuf> {
    unspoof_testkit::testdata("findings", "")
}

struct Case {
    dir: PathBuf,
}

impl Case {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("unspoof-findings-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Case { dir }
    }

    fn file(&self, name: &str, content: impl AsRef<[u8]>) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    }

    /// Runs analyze --json and returns (action, reason codes, the whole analysis).
    fn analyze(&self, args: &[&str]) -> (String, Vec<String>, serde_json::Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .arg("analyze")
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(
            text.lines()
                .next()
                .unwrap_or_else(|| panic!("no output: {}", String::from_utf8_lossy(&out.stderr))),
        )
        .unwrap();
        let codes = v["verdict"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap().to_string())
            .collect();
        (
            v["verdict"]["action"].as_str().unwrap().to_string(),
            codes,
            v,
        )
    }
}

/// football.example.com publishes SPF -all for one host and DMARC p=none (monitoring only).
const ZONE_P_NONE: &str = r#"
$ORIGIN football.example.com.
@                     IN TXT "v=spf1 ip4:213.165.64.12/32 -all"
_dmarc                IN TXT "v=DMARC1; p=none"
brisbane._domainkey   IN TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
"#;

const POLICY_FOOTBALL: &str = r#"
hostname = "mx.football.example.com"
protected_domains = ["football.example.com"]
internal_networks = ["10.0.0.0/8"]
"#;

#[test]
fn own_domain_spoof_is_rejected_even_under_p_none() {
    let c = Case::new("own");
    let zone = c.file("z.zone", ZONE_P_NONE);
    let policy = c.file("p.toml", POLICY_FOOTBALL);
    let spoof = example("sample-spoof.eml").display().to_string();
    let (action, codes, _) = c.analyze(&["--dns-zone", &zone, "--policy", &policy, &spoof]);
    assert_eq!(action, "reject", "{codes:?}");
    assert!(codes.contains(&"spoof.own_domain".to_string()), "{codes:?}");
    assert!(
        codes.contains(&"dmarc.fail_policy_none".to_string()),
        "{codes:?}"
    );

    // Legitimate: the genuine message, signed by football.example.com (aligned) and sent from
    // its SPF-authorised host.
    let genuine = example("sample-genuine.eml").display().to_string();
    let (action, codes, _) = c.analyze(&["--dns-zone", &zone, "--policy", &policy, &genuine]);
    assert_eq!(action, "accept", "{codes:?}");
    assert!(!codes.iter().any(|c| c.starts_with("spoof.")), "{codes:?}");

    // Legitimate: the same forged-looking message, but handed in from our internal network.
    let (action, codes, _) = c.analyze(&[
        "--dns-zone",
        &zone,
        "--policy",
        &policy,
        "--ip",
        "10.1.2.3",
        "--helo",
        "desk.local",
        &spoof,
    ]);
    assert_eq!(action, "accept", "{codes:?}");
    assert!(
        codes.contains(&"auth.internal_network".to_string()),
        "{codes:?}"
    );

    // Without the policy protecting the domain, p=none is honoured: the sender asked for no action.
    let (action, codes, _) = c.analyze(&["--dns-zone", &zone, &spoof]);
    assert_ne!(action, "reject", "{codes:?}");
}

#[test]
fn dmarc_is_enforced_by_the_senders_policy() {
    let c = Case::new("dmarc");
    let quarantine = ZONE_P_NONE.replace("p=none", "p=quarantine");
    let zone = c.file("z.zone", quarantine);
    let spoof = example("sample-spoof.eml").display().to_string();
    let (action, codes, _) = c.analyze(&["--dns-zone", &zone, &spoof]);
    assert_eq!(action, "quarantine", "{codes:?}");
    assert!(codes.contains(&"dmarc.quarantine".to_string()), "{codes:?}");

    // sp= applies to a subdomain that exists, np= to one that does not (RFC 9989).
    let subdomain = ZONE_P_NONE.replace("p=none", "p=none; sp=reject; np=quarantine")
        + "news IN A 192.0.2.80\n";
    let zone = c.file("sub.zone", subdomain);
    let raw = std::fs::read_to_string(&spoof).unwrap();
    let news = c.file(
        "news.eml",
        raw.replace("joe@football.example.com", "joe@news.football.example.com"),
    );
    let (action, codes, v) = c.analyze(&["--dns-zone", &zone, &news]);
    assert_eq!(v["auth"]["dmarc"]["policy"], "reject", "{v}");
    assert_eq!(action, "reject", "{codes:?}");
    let ghost = c.file(
        "ghost.eml",
        raw.replace("joe@football.example.com", "joe@ghost.football.example.com"),
    );
    let (action, _, v) = c.analyze(&["--dns-zone", &zone, &ghost]);
    assert_eq!(v["auth"]["dmarc"]["policy"], "quarantine", "{v}");
    assert_eq!(action, "quarantine");
}

#[test]
fn trusted_arc_sealer_overrides_dmarc_for_forwarded_mail() {
    let Some(data) = testdata() else {
        return;
    };
    // A real message from ekiri.ee forwarded by Gmail (tr.ee -> gmail.com), ARC-sealed twice by
    // google.com. We publish p=reject for ekiri.ee and no DKIM key for it, so DMARC fails here
    // the way it fails after any forwarder that changed the envelope.
    let c = Case::new("arc");
    let google_key = std::fs::read_to_string(data.join("mail-auth-stalwart/arc/001.txt")).unwrap();
    let key = google_key
        .lines()
        .next()
        .unwrap()
        .split_once(' ')
        .unwrap()
        .1
        .trim();
    let chunks: Vec<String> = key
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let zone = c.file(
        "z.zone",
        format!(
            "arc-20160816._domainkey.google.com. IN TXT ( {} )\n_dmarc.ekiri.ee. IN TXT \"v=DMARC1; p=reject\"\n",
            chunks.join(" ")
        ),
    );
    let msg = data
        .join("mailauth-fixtures/arc-pass.eml")
        .display()
        .to_string();
    let envelope = [
        "--ip",
        "209.85.220.41",
        "--helo",
        "mail-sor-f41.google.com",
        "--mail-from",
        "andris+caf_=andris.reinman=gmail.com@tr.ee",
    ];
    let mut args = vec!["--dns-zone", zone.as_str()];
    args.extend(envelope);
    args.push(&msg);
    let (action, codes, v) = c.analyze(&args);
    assert_eq!(v["auth"]["arc"]["result"], "pass", "{}", v["auth"]);
    assert_eq!(v["auth"]["dmarc"]["result"], "fail");
    assert_eq!(action, "reject", "{codes:?}");

    let policy = c.file("p.toml", "trusted_arc_sealers = [\"google.com\"]\n");
    let mut args = vec!["--dns-zone", zone.as_str(), "--policy", policy.as_str()];
    args.extend(envelope);
    args.push(&msg);
    let (action, codes, _) = c.analyze(&args);
    assert_eq!(action, "accept", "{codes:?}");
    assert!(
        codes.contains(&"dmarc.fail_arc_override".to_string()),
        "{codes:?}"
    );
}

#[test]
fn reply_to_diversion_on_protected_mail() {
    let c = Case::new("replyto");
    let zone = c.file("z.zone", ZONE_P_NONE);
    let policy = c.file("p.toml", POLICY_FOOTBALL);
    // The forged sample sends replies to a gmail.example address.
    let spoof = example("sample-spoof.eml").display().to_string();
    let (_, codes, _) = c.analyze(&["--dns-zone", &zone, "--policy", &policy, &spoof]);
    assert!(
        codes.contains(&"reply_to.diversion".to_string()),
        "{codes:?}"
    );

    // Made legitimate: the same message from the internal network with Reply-To inside the
    // organisation.
    let raw = std::fs::read_to_string(&spoof).unwrap();
    let fixed = c.file(
        "fixed.eml",
        raw.replace(
            "joe.sixpack.payments@gmail.example",
            "payments@football.example.com",
        ),
    );
    let (action, codes, _) = c.analyze(&[
        "--dns-zone",
        &zone,
        "--policy",
        &policy,
        "--ip",
        "10.9.9.9",
        "--helo",
        "desk",
        &fixed,
    ]);
    assert_eq!(action, "accept", "{codes:?}");
    assert!(
        !codes.contains(&"reply_to.diversion".to_string()),
        "{codes:?}"
    );
}

#[test]
fn forged_authentication_results_are_reported_and_ignored() {
    let c = Case::new("forged");
    let zone = c.file("z.zone", ZONE_P_NONE.replace("p=none", "p=reject"));
    let policy = c.file("p.toml", "hostname = \"mx.shopping.example.net\"\n");
    let raw = std::fs::read_to_string(example("sample-spoof.eml")).unwrap();
    // The forger adds our own verdict below our Received header.
    let forged = raw.replacen(
        "Return-Path:",
        "Authentication-Results: mx.shopping.example.net; dkim=pass header.d=football.example.com; dmarc=pass\r\nReturn-Path:",
        1,
    );
    let f = c.file("forged.eml", forged);
    let (action, codes, _) = c.analyze(&["--dns-zone", &zone, "--policy", &policy, &f]);
    assert!(
        codes.contains(&"trust.forged_auth_results".to_string()),
        "{codes:?}"
    );
    assert_eq!(
        action, "reject",
        "the forged pass must not count: {codes:?}"
    );

    // Legitimate: our own Authentication-Results on top, above our trusted Received header.
    let genuine = std::fs::read_to_string(example("sample-genuine.eml")).unwrap();
    let ours = c.file(
        "ours.eml",
        format!("Authentication-Results: mx.shopping.example.net; dkim=pass header.d=football.example.com\r\n{genuine}"),
    );
    let zone = c.file(
        "genuine.zone",
        std::fs::read_to_string(example("sample.zone")).unwrap(),
    );
    let (action, codes, _) = c.analyze(&["--dns-zone", &zone, "--policy", &policy, &ours]);
    assert_eq!(action, "accept", "{codes:?}");
    assert!(!codes.iter().any(|c| c.starts_with("trust.")), "{codes:?}");
}
