//! The synthetic mail the store's and the console's benches write (feature `bench`, which only
//! their `[dev-dependencies]` turn on: no door builds it). One generator, so that both benches
//! measure the same kind of records: [`SPAN`] (30 days) of mail ending at `t0`, from 5 000
//! client addresses in 20 networks, 2 000 sender domains, to 500 recipients; 90 % accept, 5 %
//! tag, 3 % quarantine, 2 % reject. Each carries a small analysis JSON (~400 bytes), not a full
//! one (~3-10 KB): a million records stay near 1 GB on disk.

use crate::{MessageRecord, new_id};

/// Records a bench writes: `UNSPOOF_BENCH_RECORDS`, default 1 000 000.
pub fn records() -> u64 {
    std::env::var("UNSPOOF_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// How far back the records go from the newest.
pub const SPAN: i64 = 30 * 86_400;

/// A small deterministic generator (xorshift), so every run writes the same mix.
pub struct Rng(pub u64);

impl Rng {
    /// The seed both benches start from.
    pub fn seeded() -> Rng {
        Rng(0x5eed_1234_5678_9abc)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Record `i` of `n`, spread evenly over the [`SPAN`] that ends at `t0`.
pub fn record(rng: &mut Rng, i: u64, n: u64, t0: i64) -> MessageRecord {
    let ip = rng.below(5_000);
    let net = ip % 20;
    let domain = rng.below(2_000);
    let rcpt = rng.below(500);
    let roll = rng.below(100);
    let (action, reasons): (&str, Vec<String>) = match roll {
        0..=89 => ("accept", vec![]),
        90..=94 => ("tag", vec!["dmarc.fail_policy_none".into()]),
        95..=97 => (
            "quarantine",
            vec!["impersonation.display_name".into(), "spf.fail".into()],
        ),
        _ => ("reject", vec!["dmarc.reject".into()]),
    };
    let at = t0 - SPAN + (i as i64 * SPAN / n as i64);
    let id = new_id();
    MessageRecord {
        queue_id: Some(format!(
            "{:013x}{:04x}",
            at as u64 * 1_000_000 + i,
            i % 65_536
        )),
        message_id: Some(format!("{i}.{domain}@mail.d{domain}.example")),
        id,
        received_at: at,
        node: format!("mx{}", i % 2 + 1),
        listener: "inbound".into(),
        client_ip: Some(
            format!("198.{}.{}.{}", 18 + net / 10, net * 10, ip % 250 + 1)
                .parse()
                .unwrap(),
        ),
        client_port: Some(40_000 + (i % 20_000) as u16),
        reverse_dns: Some(format!("mail.d{domain}.example")),
        helo: Some(format!("mail.d{domain}.example")),
        tls: Some("TLSv1.3 TLS_AES_256_GCM_SHA384".into()),
        mail_from: Some(format!("bounce@d{domain}.example")),
        recipients: vec![format!("user{rcpt}@site.test")],
        from: Some(format!("Person <p@d{domain}.example>")),
        subject: Some(format!("Message {i}")),
        size: 2_000 + rng.below(50_000),
        action: action.into(),
        reply: Some("250 2.0.0 queued".into()),
        downstream_reply: Some("250 2.0.0 Ok: queued".into()),
        latency_us: Some(1_000 + rng.below(100_000)),
        auth_summary: Some("spf=pass dkim=pass(d.example) dmarc=pass arc=none".into()),
        trace_summary: Some("2 hops; origin 198.18.0.1 (mail.d.example)".into()),
        dns: Some(serde_json::json!({"view": "system resolver"})),
        analysis: Some(small_analysis(action, &reasons, domain).into()),
        reasons,
        ..Default::default()
    }
}

/// The small analysis JSON of a generated record: its verdict and one hop.
fn small_analysis(action: &str, reasons: &[String], domain: u64) -> serde_json::Value {
    serde_json::json!({
        "schema": "unspoof.analysis/1",
        "verdict": {"action": action, "reasons": reasons.iter().map(|c| serde_json::json!({"code": c, "action": action, "message": "generated"})).collect::<Vec<_>>()},
        "trace": {"hops": [{"index": 0, "raw": format!("from mail.d{domain}.example by mx.site.test")}]},
    })
}
