//! A private Postfix in front of a milter: its own config dir, queue, data dir and Maildir in a
//! [`TempDir`]; smtpd on a free loopback port; every recipient at example.net delivered by
//! virtual(8) into one Maildir. Needs root (see [`crate::postfix_missing`]); stopped on drop.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{TempDir, free_port, wait_listening};

/// The host name Postfix gives itself (its Received fields name it).
const POSTFIX_HOST: &str = "mx.unspoof.test";

/// How long a test waits for a message to be delivered or held.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

pub struct Postfix {
    dir: TempDir,
    /// Where smtpd listens.
    pub smtp: SocketAddr,
}

impl Postfix {
    /// Starts Postfix with `smtpd_milters = inet:127.0.0.1:<milter_port>` (what docs/milter.md
    /// tells an admin to write) and waits until smtpd answers.
    pub fn start(milter_port: u16) -> Postfix {
        let dir = TempDir::new("postfix");
        let d = dir.path();
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let chown = |who: &str, p: &Path| {
            let ok = Command::new("chown")
                .arg(who)
                .arg(p)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown {who} {}", p.display());
        };
        // The data directory belongs to the mail owner; the Maildir to the delivery uid.
        chown("postfix", &d.join("data"));
        chown("65534:65534", &d.join("mail"));
        let smtp = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/queue\n\
             data_directory = {d}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = {POSTFIX_HOST}\n\
             mydomain = unspoof.test\n\
             myorigin = $myhostname\n\
             mydestination =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             # The milter's hub bypass test plays other clients (the gateway, an outsider) by XCLIENT.\n\
             smtpd_authorized_xclient_hosts = 127.0.0.0/8\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             relayhost =\n\
             smtputf8_enable = no\n\
             biff = no\n\
             virtual_mailbox_domains = example.net\n\
             virtual_mailbox_base = {d}/mail\n\
             virtual_mailbox_maps = static:box/\n\
             virtual_uid_maps = static:65534\n\
             virtual_gid_maps = static:65534\n\
             maillog_file = {d}/maillog\n\
             maillog_file_prefixes = {d}\n\
             # What docs/milter.md tells an admin to write:\n\
             smtpd_milters = inet:127.0.0.1:{milter_port}\n\
             non_smtpd_milters =\n\
             milter_default_action = tempfail\n\
             milter_protocol = 6\n",
            d = d.display()
        );
        std::fs::write(d.join("conf/main.cf"), main_cf).unwrap();
        // Nothing chrooted, smtpd only on our loopback port.
        let master_cf = format!(
            "{smtp} inet n - n - - smtpd\n\
             pickup unix n - n 60 1 pickup\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             showq unix n - n - - showq\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             virtual unix - n n - - virtual\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(d.join("conf/master.cf"), master_cf).unwrap();
        let out = Command::new("postfix")
            .arg("-c")
            .arg(d.join("conf"))
            .arg("start")
            .output()
            .expect("run postfix");
        let pf = Postfix { dir, smtp };
        assert!(
            out.status.success(),
            "postfix start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            pf.log()
        );
        wait_listening(smtp.port(), "postfix smtpd", &pf.dir.join("maillog"));
        pf
    }

    /// Postfix's own log (`maillog_file`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The Maildir folder delivered messages are written into.
    pub fn maildir(&self) -> PathBuf {
        self.dir.join("mail/box/new")
    }

    /// Every message delivered so far.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.maildir())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.extend(std::fs::read(e.path()));
        }
        out
    }

    /// The delivered message that contains `marker`, if there is one yet.
    pub fn find(&self, marker: &str) -> Option<Vec<u8>> {
        self.delivered()
            .into_iter()
            .find(|m| String::from_utf8_lossy(m).contains(marker))
    }

    /// The delivered message that contains `marker`, waiting up to 20 s for it (blocking: from
    /// an async test, call it inside `tokio::task::block_in_place`).
    pub fn wait_for(&self, marker: &str) -> Vec<u8> {
        let deadline = Instant::now() + DELIVERY_WAIT;
        loop {
            if let Some(m) = self.find(marker) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "no delivery containing {marker:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The queue files of the messages on hold (the milter's quarantine).
    pub fn held(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.join("queue/hold")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

/// swaks (the SMTP test client) to `port` on loopback, from `from` to `bob@example.net`, with
/// the message in `file`; returns its exit code and its transcript.
pub fn swaks(port: u16, from: &str, file: &Path) -> (Option<i32>, String) {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--helo", "client.example", "--from", from])
        .args(["--to", "bob@example.net", "--timeout", "60"])
        .arg("--data")
        .arg(format!("@{}", file.display()))
        .output()
        .expect("swaks runs");
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), transcript)
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .arg("stop")
            .output();
    }
}
