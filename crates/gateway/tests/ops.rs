//! Operations (issue 4, item 8): drain on shutdown, policy reload, Prometheus metrics.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_messages_by_outcome_with_a_latency_histogram() {
    let gw = start(config("metrics")).await;
    for subject in ["a", "b", "[reject] c", "[quarantine] d"] {
        swaks(
            gw.handle.inbound,
            &[
                "--from",
                "a@remote.test",
                "--to",
                "x@example.org",
                "--header",
                &format!("Subject: {subject}"),
            ],
        )
        .await;
    }
    let page = http_get(gw.handle.metrics.unwrap(), "/metrics").await;
    assert!(page.starts_with("HTTP/1.0 200 OK\r\n"), "{page}");
    assert!(
        page.contains("unspoof_messages_total{outcome=\"accept\"} 2\n"),
        "{page}"
    );
    assert!(
        page.contains("unspoof_messages_total{outcome=\"reject\"} 1\n"),
        "{page}"
    );
    assert!(
        page.contains("unspoof_messages_total{outcome=\"quarantine\"} 1\n"),
        "{page}"
    );
    assert!(page.contains("unspoof_message_seconds_count 4\n"), "{page}");
    assert!(
        page.contains("unspoof_message_seconds_bucket{le=\"+Inf\"} 4\n"),
        "{page}"
    );
    assert!(page.contains("unspoof_connections_total 4\n"), "{page}");
    assert!(
        http_get(gw.handle.metrics.unwrap(), "/other")
            .await
            .starts_with("HTTP/1.0 404")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reaches_the_decider_without_dropping_sessions() {
    let gw = start(config("reload")).await;
    let mut raw = Raw::hello(gw.handle.inbound).await;
    raw.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    gw.handle.reload().unwrap();
    assert_eq!(
        gw.decider.reloads.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(
        raw.cmd("RCPT TO:<x@example.org>\r\n")
            .await
            .starts_with("250")
    );
    raw.cmd("DATA\r\n").await;
    assert!(
        raw.cmd("Subject: s\r\n\r\nb\r\n.\r\n")
            .await
            .starts_with("250")
    );
    let page = http_get(gw.handle.metrics.unwrap(), "/metrics").await;
    assert!(page.contains("unspoof_policy_reloads_total 1\n"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_transaction_in_flight_finish_then_closes() {
    let mut c = config("drain");
    c.limits.drain_timeout = 5;
    let gw = start(c).await;
    let inbound = gw.handle.inbound;
    let mut busy = Raw::hello(inbound).await;
    busy.cmd("MAIL FROM:<a@remote.test>\r\n").await;
    busy.cmd("RCPT TO:<x@example.org>\r\n").await;
    assert!(busy.cmd("DATA\r\n").await.starts_with("354"));
    let mut idle = Raw::hello(inbound).await;
    let Running {
        handle, data_dir, ..
    } = gw;
    let drained = tokio::spawn(handle.shutdown());
    // The idle session is told to come back later.
    assert!(idle.reply().await.starts_with("421 4.3.2"));
    // New connections are no longer accepted.
    let mut refused = false;
    for _ in 0..100 {
        match tokio::net::TcpStream::connect(inbound).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "listener still open after shutdown");
    // The message in flight completes and is stored.
    assert!(
        busy.cmd("Subject: late\r\n\r\nb\r\n.\r\n")
            .await
            .starts_with("250")
    );
    assert!(busy.reply().await.starts_with("421 4.3.2"));
    assert!(drained.await.unwrap(), "drained in time");
    assert_eq!(maildir_messages(&data_dir.join("maildir")).len(), 1);
}
