//! A fast SMTP sink for the gateway load benchmark (`scripts/bench-gateway.sh`): accepts every
//! transaction and discards the message. It answers pipelined commands in one write and looks
//! for the end of data with memchr, so it costs a few µs per message and is never the
//! bottleneck (the benchmark measures it alone first to show that).
//!
//! ```sh
//! cargo run --release -p unspoof-gateway --example sink -- --listen 127.0.0.1:10025 [--threads 1]
//! ```
//!
//! It prints `sink: listening on ADDR` when ready and, on SIGTERM/SIGINT, `sink: N messages`.
//! Not for production: no limits, no timeouts, no TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:10025".parse().unwrap();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--listen" => listen = val().parse().unwrap_or_else(|_| usage("bad --listen")),
            "--threads" => threads = val().parse().unwrap_or_else(|_| usage("bad --threads")),
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.expect("bind");
        println!("sink: listening on {}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicU64::new(0));
        let c2 = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let c = c2.clone();
                tokio::spawn(session(s, c));
            }
        });
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).unwrap();
        let mut int = signal(SignalKind::interrupt()).unwrap();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        println!("sink: {} messages", count.load(Ordering::Relaxed));
    });
}

fn usage(msg: &str) -> ! {
    eprintln!("sink: {msg}\nusage: sink [--listen ADDR] [--threads N]");
    std::process::exit(2)
}

const EHLO: &[u8] = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600\r\n";

async fn session(mut s: TcpStream, count: Arc<AtomicU64>) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    out.extend_from_slice(b"220 sink ESMTP\r\n");
    // In DATA: how many bytes of "\r\n.\r\n" we have matched so far (starts at 2: the DATA
    // line's own CRLF counts as the first one).
    let mut data: Option<usize> = None;
    loop {
        // Process everything buffered.
        loop {
            if let Some(matched) = data.as_mut() {
                // Scan for the end marker, carrying a partial match across reads.
                let mut i = start;
                let mut done = false;
                while i < end {
                    if *matched == 0 {
                        // Jump to the next CR.
                        match memchr::memchr(b'\r', &buf[i..end]) {
                            Some(p) => i += p,
                            None => {
                                i = end;
                                break;
                            }
                        }
                    }
                    const MARK: &[u8] = b"\r\n.\r\n";
                    let b = buf[i];
                    i += 1;
                    if b == MARK[*matched] {
                        *matched += 1;
                        if *matched == MARK.len() {
                            done = true;
                            break;
                        }
                    } else {
                        *matched = usize::from(b == b'\r');
                    }
                }
                start = i;
                if done {
                    data = None;
                    let n = count.fetch_add(1, Ordering::Relaxed);
                    out.extend_from_slice(format!("250 2.0.0 Ok: queued as S{n}\r\n").as_bytes());
                    continue;
                }
                break;
            }
            let Some(p) = memchr::memchr(b'\n', &buf[start..end]) else {
                break;
            };
            let line = &buf[start..start + p + 1];
            start += p + 1;
            let verb = line.get(..4).map(|v| v.to_ascii_uppercase());
            match verb.as_deref() {
                Some(b"EHLO") => out.extend_from_slice(EHLO),
                Some(b"HELO") => out.extend_from_slice(b"250 sink\r\n"),
                Some(b"MAIL") => out.extend_from_slice(b"250 2.1.0 Ok\r\n"),
                Some(b"RCPT") => out.extend_from_slice(b"250 2.1.5 Ok\r\n"),
                Some(b"DATA") => {
                    out.extend_from_slice(b"354 Go ahead\r\n");
                    data = Some(2);
                }
                Some(b"RSET") | Some(b"NOOP") => out.extend_from_slice(b"250 2.0.0 Ok\r\n"),
                Some(b"QUIT") => {
                    out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                    let _ = s.write_all(&out).await;
                    return;
                }
                _ => out.extend_from_slice(b"502 5.5.1 Not implemented\r\n"),
            }
        }
        if !out.is_empty() {
            if s.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if end == buf.len() {
                // A command line longer than the buffer: not SMTP; hang up.
                return;
            }
        }
        match s.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => end += n,
        }
    }
}
