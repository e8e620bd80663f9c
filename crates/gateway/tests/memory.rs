//! The memory held by messages in flight is capped (issue 13, item 4): eight clients sending
//! 24 MB each at once must not grow the gateway by hundreds of MB. Beyond
//! `max_inflight_memory`, messages are answered `452 4.3.1` and the clients retry later.
//!
//! The gateway runs in a child process (this test binary again, running only
//! [`gateway_process`]), so that its resident set size in `/proc/<pid>/status` is the
//! gateway's alone, with the real engine (offline) deciding and the Maildir receiving.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::Barrier;
use unspoof_engine::{Dns, Engine, Policy};
use unspoof_gateway::{EngineDecider, Gateway};

const CHILD: &str = "UNSPOOF_GW_MEMORY_CHILD";
const MIB: usize = 1024 * 1024;
/// The cap the child runs with.
const CAP: usize = 64 * MIB;
/// Each client's message: 24 MB.
const MESSAGE: usize = 24_000_000;
const CLIENTS: usize = 8;

/// Not a test of its own: the gateway of the test below, when run as its child. Prints
/// `LISTENING <port> <data dir>` and serves until its stdin closes.
#[test]
fn gateway_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = config("memory");
        c.limits.max_inflight_memory = CAP;
        c.limits.max_message_size = 25 * MIB;
        let dir = c.data_dir.clone();
        let decider = Arc::new(EngineDecider::new(
            Engine::new(
                Policy::parse("hostname = \"mx.test\"\n", "p.toml").unwrap(),
                Dns::offline(),
            ),
            None,
        ));
        let handle = Gateway::new(c, decider).start().await.unwrap();
        println!("LISTENING {} {}", handle.inbound.port(), dir.display());
        std::io::stdout().flush().unwrap();
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        })
        .await
        .unwrap();
        handle.shutdown().await;
    });
}

/// `VmRSS` or `VmHWM` (peak) of `pid`, in bytes.
fn vm(pid: u32, key: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    let kb: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// One client: the whole message from a 64 KiB buffer written again and again, with or
/// without SIZE; the end of data only once every client has written its message, so that
/// all eight are in flight at once. Returns the reply to the end of data.
async fn send_large(port: u16, n: usize, declare_size: bool, all_sent: Arc<Barrier>) -> String {
    let mut raw = Raw::hello(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let header =
        format!("From: a{n}@remote.test\r\nTo: x@example.org\r\nSubject: large {n}\r\n\r\n");
    let size = if declare_size {
        format!(" SIZE={MESSAGE}")
    } else {
        String::new()
    };
    let r = raw
        .cmd(&format!("MAIL FROM:<a{n}@remote.test>{size}\r\n"))
        .await;
    if !r.starts_with("250") {
        all_sent.wait().await;
        return r;
    }
    assert!(
        raw.cmd("RCPT TO:<x@example.org>\r\n")
            .await
            .starts_with("250")
    );
    assert!(raw.cmd("DATA\r\n").await.starts_with("354"));
    let line = [b"x".repeat(76), b"\r\n".to_vec()].concat();
    let chunk: Vec<u8> = line.repeat(64 * 1024 / line.len());
    let (mut r, mut w) = raw.into_parts();
    w.write_all(header.as_bytes()).await.unwrap();
    let mut sent = header.len();
    while sent < MESSAGE {
        let take = chunk.len().min(MESSAGE - sent);
        let take = take - take % line.len();
        if take == 0 {
            break;
        }
        w.write_all(&chunk[..take]).await.unwrap();
        sent += take;
    }
    all_sent.wait().await;
    w.write_all(b".\r\nQUIT\r\n").await.unwrap();
    let mut reply = String::new();
    r.read_line(&mut reply).await.unwrap();
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_sending_24_mb_each_do_not_grow_the_gateway_by_hundreds_of_mb() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "gateway_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (port, dir) = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended");
        // libtest may have written `test gateway_process ... ` on the same line.
        if let Some((_, rest)) = line.split_once("LISTENING ") {
            let (port, dir) = rest.trim().split_once(' ').unwrap();
            break (port.parse::<u16>().unwrap(), std::path::PathBuf::from(dir));
        }
    };
    // One small message first, so the engine's tables are part of the baseline.
    let r = send_small(port).await;
    assert!(r.starts_with("250"), "{r}");
    let baseline = vm(pid, "VmRSS");

    let all_sent = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(send_large(port, n, n % 2 == 0, all_sent.clone())))
        .collect();
    let mut replies = Vec::new();
    for c in clients {
        replies.push(
            tokio::time::timeout(Duration::from_secs(600), c)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let peak = vm(pid, "VmHWM");
    drop(child.stdin.take());
    let _ = child.wait();

    let delivered = replies.iter().filter(|r| r.starts_with("250")).count();
    let deferred = replies
        .iter()
        .filter(|r| r.starts_with("452 4.3.1"))
        .count();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "baseline RSS {} MiB, peak {} MiB, growth {} MiB; {delivered} delivered, {deferred} deferred: {replies:?}",
        baseline / MIB,
        peak / MIB,
        growth / MIB
    );
    assert_eq!(delivered + deferred, CLIENTS, "{replies:?}");
    assert!(delivered >= 1, "{replies:?}");
    assert_eq!(maildir_messages(&dir.join("maildir")).len(), delivered + 1);
    // Unbounded, the eight messages alone are 183 MiB at the moment all have been sent (the
    // process grew by 181 MiB in a run with a cap of 4 GiB). With a cap of 64 MiB the messages
    // in flight hold at most that, plus what deciding and delivering them take (46 MiB in all
    // when this was written).
    assert!(growth < 120 * MIB, "grew by {} MiB", growth / MIB);
}

async fn send_small(port: u16) -> String {
    let mut raw = Raw::hello(format!("127.0.0.1:{port}").parse().unwrap()).await;
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    raw.cmd("RCPT TO:<x@example.org>\r\n").await;
    raw.cmd("DATA\r\n").await;
    raw.cmd("From: a@remote.test\r\nSubject: small\r\n\r\nhi\r\n.\r\n")
        .await
}
