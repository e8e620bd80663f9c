//! Backscatter's question to the store (`unspoof_engine::bounce::OutboundHistory`): a
//! Message-ID we sent (from a submission client) is known; the same Message-ID arriving from
//! outside is not "sent by us"; an unknown one is not; on both backends.

mod common;

use common::message;
use unspoof_engine::bounce::OutboundHistory;

const T0: i64 = 1_796_600_000;

both! {
    async fn sent_mail_is_known_by_message_id(db) {
        let store = db.open("mx1").await;
        let mut ours = message("mx1", T0, "10.0.0.44", "suzie@shopping.example.net",
            "suzie@shopping.example.net", &["nobody@partner.example"], "accept", &[]);
        ours.listener = "submission".into();
        ours.auth_user = Some("suzie".into());
        ours.message_id = Some("20261207073000.01JEQ5A1B2C3@shopping.example.net".into());
        let mut inbound = message("mx1", T0 + 1, "203.0.113.66", "suzie@shopping.example.net",
            "suzie@shopping.example.net", &["bob@shopping.example.net"], "reject", &["spoof.own_domain"]);
        inbound.message_id = Some("a81f0c2e9d.7730@bot.example".into());
        store.log_message(ours);
        store.log_message(inbound);
        store.flush().await;
        let history: &dyn OutboundHistory = &store;
        assert_eq!(history.sent("<20261207073000.01JEQ5A1B2C3@shopping.example.net>").await, Some(true));
        assert_eq!(history.sent("a81f0c2e9d.7730@bot.example").await, Some(false));
        assert_eq!(history.sent("never@seen.example").await, Some(false));
        store.close().await;
    }
}
