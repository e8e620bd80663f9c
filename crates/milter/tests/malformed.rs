//! A hostile or broken MTA connection: malformed, oversized, truncated and random packets.
//! Each one ends that connection (the MTA then applies its default action); none panics the
//! milter or stops it serving the next connection. Its own test binary, because it watches
//! for panics process-wide.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use unspoof_milter::{Milter, MilterConfig, MilterHandle};

async fn start(world: &World) -> MilterHandle {
    let mut config = MilterConfig {
        listen: vec!["inet:127.0.0.1:0".parse().unwrap()],
        log_verdicts: false,
        ..MilterConfig::default()
    };
    config.limits.idle_timeout = 2;
    Milter::new(config, world.engine(Duration::from_secs(1)).await)
        .start()
        .await
        .unwrap()
}

fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(cmd);
    p.extend_from_slice(data);
    p
}

fn optneg() -> Vec<u8> {
    let mut d = Vec::new();
    for v in [6u32, ALL_ACTIONS, ALL_PROTOCOL] {
        d.extend_from_slice(&v.to_be_bytes());
    }
    packet(b'O', &d)
}

/// Sends `bytes` and expects the milter to close the connection (after at most the replies it
/// owes), within the idle timeout plus a margin.
async fn closes(h: &MilterHandle, bytes: &[u8], what: &str) {
    let mut s = TcpStream::connect(h.tcp_addr().unwrap()).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut sink = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "{what}: the milter did not close the connection");
}

async fn still_serves(h: &MilterHandle, world: &World) {
    let s = TcpStream::connect(h.tcp_addr().unwrap()).await.unwrap();
    let mut m = postfix_like(s).await;
    let raw = good_message(world, "after abuse", true);
    let o = m
        .message(&Transaction::new(SENDER_IP, "alice@good.test", &raw))
        .await;
    assert_eq!(o.code, b'a', "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_close_the_connection_and_nothing_else() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));

    let world = World::new();
    let h = start(&world).await;
    let neg = optneg();
    let with_neg = |rest: &[u8]| [neg.clone(), rest.to_vec()].concat();

    closes(&h, &[0, 0, 0, 0], "length 0").await;
    closes(&h, &[0x7f, 0xff, 0xff, 0xff, b'B'], "2 GiB length").await;
    closes(
        &h,
        &with_neg(&packet(b'B', &vec![b'x'; 2 << 20])),
        "2 MiB body chunk",
    )
    .await;
    closes(
        &h,
        &packet(b'C', b"host\x004\x00\x19192.0.2.1\0"),
        "CONNECT before OPTNEG",
    )
    .await;
    closes(&h, &with_neg(&packet(b'Z', b"")), "unknown command").await;
    closes(
        &h,
        &with_neg(&packet(b'C', b"no-terminator")),
        "CONNECT without NUL",
    )
    .await;
    closes(
        &h,
        &with_neg(&packet(b'L', b"NameOnly")),
        "HEADER without value",
    )
    .await;
    closes(&h, &with_neg(&packet(b'O', b"\0\0")), "short OPTNEG").await;
    closes(
        &h,
        &packet(b'O', &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        "protocol version 1",
    )
    .await;
    closes(
        &h,
        &with_neg(&[0, 0, 0, 100, b'B', 1, 2, 3]),
        "truncated packet",
    )
    .await;
    closes(&h, &with_neg(b""), "silence until the idle timeout").await;
    still_serves(&h, &world).await;
    let errors = h.stats().protocol_errors;
    assert!(errors >= 10, "{:?}", h.stats());

    // Random packets with valid framing: every command letter, random contents, in random
    // order, including end of message at any point.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let letters = b"ABCDEHKLMNORTUQ";
    for _ in 0..60 {
        let mut bytes = neg.clone();
        for _ in 0..(next() % 20) {
            let letter = letters[(next() % letters.len() as u64) as usize];
            let len = (next() % 40) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    0 => 0,
                    1 => b'<',
                    _ => (next() % 256) as u8,
                })
                .collect();
            bytes.extend(packet(letter, &data));
        }
        let mut s = TcpStream::connect(h.tcp_addr().unwrap()).await.unwrap();
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    }
    still_serves(&h, &world).await;
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a session panicked");
}
