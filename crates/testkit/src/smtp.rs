//! A loopback SMTP server that keeps what it is sent: the relay behind the tests of everything
//! that sends mail (DMARC reports, `unspoof dmarc send`, `unspoof report --send`).

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
};

/// What a [`SmtpSink`] answers to `RCPT TO:<address>`: `None` accepts it (`250 ok`), `Some` is
/// the whole reply line to send instead (`"550 5.1.1 no such mailbox"`).
pub type RcptReply = dyn Fn(&str) -> Option<String> + Send + Sync;

/// What a sink was sent: (recipient, message) in the order received.
type Mails = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A loopback SMTP server on a port of its own: every connection served on a thread of its
/// own, every message kept once per accepted recipient, as (recipient, message bytes without
/// the dot-stuffing).
pub struct SmtpSink {
    pub port: u16,
    got: Mails,
}

impl SmtpSink {
    /// A sink that accepts every recipient.
    pub fn start() -> SmtpSink {
        SmtpSink::answering(|_| None)
    }

    /// A sink whose answer to each `RCPT` is `rcpt_reply`'s.
    pub fn answering(
        rcpt_reply: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let got: Mails = Arc::default();
        let keep = got.clone();
        let rcpt_reply: Arc<RcptReply> = Arc::new(rcpt_reply);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (keep, rcpt_reply) = (keep.clone(), rcpt_reply.clone());
                std::thread::spawn(move || session(conn, &keep, &*rcpt_reply));
            }
        });
        SmtpSink { port, got }
    }

    /// What it was sent so far, (recipient, message) in the order received.
    pub fn mails(&self) -> Vec<(String, Vec<u8>)> {
        self.got.lock().unwrap().clone()
    }
}

fn session(conn: TcpStream, keep: &Mutex<Vec<(String, Vec<u8>)>>, rcpt_reply: &RcptReply) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    let _ = w.write_all(b"220 sink.test ESMTP\r\n");
    let mut rcpts = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250 sink.test".to_string()
        } else if upper.starts_with("MAIL") || upper.starts_with("RSET") {
            rcpts.clear();
            "250 ok".to_string()
        } else if upper.starts_with("RCPT") {
            let address = line.split(['<', '>']).nth(1).unwrap_or("").to_string();
            match rcpt_reply(&address) {
                Some(refusal) => refusal,
                None => {
                    rcpts.push(address);
                    "250 ok".to_string()
                }
            }
        } else if upper.starts_with("DATA") {
            let _ = w.write_all(b"354 go\r\n");
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                    return;
                }
                if l == b".\r\n" {
                    break;
                }
                data.extend_from_slice(if l.starts_with(b"..") { &l[1..] } else { &l });
            }
            let mut kept = keep.lock().unwrap();
            for a in rcpts.drain(..) {
                kept.push((a, data.clone()));
            }
            "250 queued".to_string()
        } else if upper.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            "250 ok".to_string()
        };
        let _ = w.write_all(format!("{reply}\r\n").as_bytes());
    }
}
