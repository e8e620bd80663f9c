//! DMARC aggregate reports addressed to us: inbound mail to one of the site's own `rua`
//! addresses is captured (stored durably before the 250) for the report store, and delivered
//! like other mail only when the capture says so. What a report is and where it goes is the
//! [`ReportCapture`] implementation's business (`unspoof serve` writes it into a Maildir that
//! it ingests into the store); the gateway only asks per recipient and hands over the bytes.
//!
//! Only mail the engine accepted or tagged is captured: a forged "report" the engine rejects or
//! quarantines is treated like any other such message.

use std::io;

use crate::decide::Envelope;

/// Where captured report mail goes. Called from a blocking thread.
pub trait ReportCapture: Send + Sync + 'static {
    /// Whether `rcpt` is one of our report addresses.
    fn is_report_address(&self, rcpt: &str) -> bool;
    /// Whether captured mail is also delivered (to the downstream or the Maildir).
    fn deliver_too(&self) -> bool;
    /// Stores the message durably; returns where it went.
    fn capture(&self, queue_id: &str, envelope: &Envelope, message: &[u8]) -> io::Result<String>;
    /// Whether mail to this report address is also delivered; [`ReportCapture::deliver_too`]
    /// unless a capture serves addresses that differ ([`Both`]).
    fn delivers(&self, rcpt: &str) -> bool {
        let _ = rcpt;
        self.deliver_too()
    }
}

/// Two captures in one gateway (the DMARC `rua` inbox and the user report desk): each takes
/// the mail to its own addresses.
pub struct Both(
    pub std::sync::Arc<dyn ReportCapture>,
    pub std::sync::Arc<dyn ReportCapture>,
);

impl ReportCapture for Both {
    fn is_report_address(&self, rcpt: &str) -> bool {
        self.0.is_report_address(rcpt) || self.1.is_report_address(rcpt)
    }

    fn deliver_too(&self) -> bool {
        self.0.deliver_too() && self.1.deliver_too()
    }

    fn delivers(&self, rcpt: &str) -> bool {
        if self.0.is_report_address(rcpt) {
            self.0.delivers(rcpt)
        } else {
            self.1.delivers(rcpt)
        }
    }

    fn capture(&self, queue_id: &str, envelope: &Envelope, message: &[u8]) -> io::Result<String> {
        let mut at = Vec::new();
        for c in [&self.0, &self.1] {
            if envelope.rcpt.iter().any(|r| c.is_report_address(r)) {
                at.push(c.capture(queue_id, envelope, message)?);
            }
        }
        Ok(at.join(" "))
    }
}

/// For RCPT: a report address whose mail is captured only, so the downstream never sees it.
pub(crate) fn captured_only(
    capture: Option<&std::sync::Arc<dyn ReportCapture>>,
    rcpt: &str,
) -> bool {
    capture.is_some_and(|c| c.is_report_address(rcpt) && !c.delivers(rcpt))
}

/// What the capture left to do at the end of DATA.
pub(crate) enum Captured {
    /// No report address among the recipients: deliver as usual.
    None,
    /// Captured; deliver as usual too (other recipients, or `deliver_too`).
    AndDeliver,
    /// Captured, and nothing else to deliver.
    Done(String),
    /// The capture failed: the message must be refused temporarily.
    Failed,
}

/// Captures `message` when a recipient is a report address.
pub(crate) async fn capture(
    capture: Option<&std::sync::Arc<dyn ReportCapture>>,
    queue_id: &str,
    envelope: &Envelope,
    message: &[u8],
) -> Captured {
    let Some(c) = capture else {
        return Captured::None;
    };
    if !envelope.rcpt.iter().any(|r| c.is_report_address(r)) {
        return Captured::None;
    }
    // Nothing left to deliver when every recipient is a report address captured only.
    let all_captured = envelope
        .rcpt
        .iter()
        .all(|r| c.is_report_address(r) && !c.delivers(r));
    let (c, qid, env, msg) = (
        c.clone(),
        queue_id.to_string(),
        envelope.clone(),
        message.to_vec(),
    );
    match tokio::task::spawn_blocking(move || c.capture(&qid, &env, &msg)).await {
        Ok(Ok(at)) if all_captured => Captured::Done(at),
        Ok(Ok(_)) => Captured::AndDeliver,
        _ => Captured::Failed,
    }
}
