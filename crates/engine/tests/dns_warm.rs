//! A warm engine asks the DNS nothing: every answer it needs, positive or negative, is cached.

use std::{path::Path, time::Duration};

use unspoof_engine::{Dns, Engine, Envelope, Policy, dns::Zone};

#[tokio::test]
async fn warm_analysis_sends_no_queries() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut zone = Zone::new();
    zone.load_file(&examples.join("sample.zone")).unwrap();
    let dns = Dns::zones(zone, Duration::from_secs(2)).await.unwrap();
    let engine = Engine::new(Policy::default(), dns);
    for name in ["sample-spoof.eml", "sample-genuine.eml"] {
        let raw = std::fs::read(examples.join(name)).unwrap();
        let envelope = Envelope::default();
        engine.evaluate(&raw, &envelope).await;
        let cold = engine.dns().zone_queries().unwrap();
        assert!(cold > 0);
        for _ in 0..5 {
            engine.evaluate(&raw, &envelope).await;
        }
        let warm = engine.dns().zone_queries().unwrap() - cold;
        assert_eq!(warm, 0, "{name}: {warm} queries on a warm cache");
    }
}
