//! The console in headless Chromium (Debian's chromium and chromium-driver, installed by
//! scripts/deps-console.sh), driven through chromedriver (WebDriver): log in, search by reason
//! code, open a quarantined message whose subject and HTML body are hostile and check in the
//! browser that nothing ran, release it and see it arrive at a downstream SMTP server, a
//! recipient who cannot see another's quarantine, and the core actions with JavaScript off.
//! Screenshots of each page go to docs/console/.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use fantoccini::{Client, Locator};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use unspoof_console::ConsoleConfig;
use unspoof_store::QuarantineStatus;
use unspoof_testkit::browser::{Driver, click, follow, login, open, shot};

/// One message as the downstream received it: MAIL FROM, RCPT TOs, the bytes.
type Received = (String, Vec<String>, Vec<u8>);

/// A downstream MTA that accepts everything and keeps each message's envelope and bytes.
#[derive(Clone, Default)]
struct Downstream {
    received: Arc<Mutex<Vec<Received>>>,
}

impl Downstream {
    async fn start() -> (Downstream, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Downstream::default();
        let keep = sink.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let (r, mut w) = conn.into_split();
                    let mut r = BufReader::new(r);
                    let _ = w.write_all(b"220 downstream.test ESMTP\r\n").await;
                    let (mut from, mut rcpt) = (String::new(), Vec::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO")
                        {
                            b"250 downstream.test\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            from = line[10..].trim().trim_matches(['<', '>']).to_string();
                            b"250 ok\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            rcpt.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                            b"250 ok\r\n"
                        } else if upper.starts_with("DATA") {
                            let _ = w.write_all(b"354 go on\r\n").await;
                            let mut data = Vec::new();
                            loop {
                                let mut l = Vec::new();
                                if r.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if l == b".\r\n" {
                                    break;
                                }
                                // Dot-unstuffing (RFC 5321 4.5.2).
                                let l = if l.starts_with(b"..") {
                                    l[1..].to_vec()
                                } else {
                                    l
                                };
                                data.extend_from_slice(&l);
                            }
                            keep.received
                                .lock()
                                .unwrap()
                                .push((from.clone(), rcpt.clone(), data));
                            b"250 2.0.0 queued as D1\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        let _ = w.write_all(reply).await;
                    }
                });
            }
        });
        (sink, addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn logout(c: &Client) {
    follow(c, Locator::Css("form.logout button"), "form.login").await;
}

/// The text of the first element matching `css`, found again when htmx replaced it meanwhile.
async fn text(c: &Client, css: &str) -> String {
    let mut last = None;
    for _ in 0..20 {
        match c.find(Locator::Css(css)).await {
            Ok(e) => match e.text().await {
                Ok(t) => return t,
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no text at {css}: {last:?}");
}

/// What hostile content could have done if it had run or been rendered as HTML.
/// The hostile scripts and handlers set the title to `pwned`: it must still be the page's own.
async fn nothing_ran(c: &Client, page_title: &str) {
    let title = c.title().await.unwrap();
    assert_eq!(title, format!("{page_title} · unspoof console"));
    let found = c
        .execute(
            "return [document.querySelectorAll('script').length,
                     document.querySelectorAll('img').length,
                     document.querySelectorAll('[onerror],[onmouseover],style').length,
                     document.querySelector('main').offsetHeight > 0];",
            vec![],
        )
        .await
        .unwrap();
    // Only the vendored htmx script element; no image, handler or style element from mail;
    // the page is displayed (the body's `display:none` style did not apply).
    assert_eq!(
        found,
        serde_json::json!([1, 0, 0, true]),
        "hostile markup in the DOM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_headless_chromium() {
    let w = world("browser").await;
    let (downstream, down_addr) = Downstream::start().await;
    let config = ConsoleConfig {
        downstream: down_addr.to_string(),
        ..Default::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(unspoof_console::serve(w.console(config), listener));
    let driver = Driver::start();
    let c = driver.browser(true).await;

    // Log in as the administrator.
    open(&c, &format!("{base}/"), "form.login").await;
    assert!(c.current_url().await.unwrap().path() == "/login");
    shot(&c, "login").await;
    login(&c, &base, "admin", PASSWORD).await;
    c.goto(&format!("{base}/?days=1")).await.unwrap();
    assert!(text(&c, "section.numbers").await.contains("4 messages"));
    assert_eq!(
        c.find_all(Locator::Css("svg.chart rect"))
            .await
            .unwrap()
            .len(),
        2,
        "accept and quarantine bars"
    );
    shot(&c, "overview").await;

    // Search by reason code through the form (htmx swaps the results in).
    c.goto(&format!("{base}/search")).await.unwrap();
    c.find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys("dmarc.quarantine")
        .await
        .unwrap();
    click(&c, "form.search button").await;
    let mut count = String::new();
    for _ in 0..100 {
        count = text(&c, "#results p.count").await;
        if count.starts_with("3 messages") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(count.starts_with("3 messages"), "{count}");
    assert!(
        c.current_url()
            .await
            .unwrap()
            .query()
            .unwrap_or("")
            .contains("reason=dmarc.quarantine")
    );
    nothing_ran(&c, "Search").await;
    shot(&c, "search").await;

    // Open the hostile one: its subject is the page's heading, as text.
    let link = format!("td.subject a[href='/message/{}']", w.ann_spoof.record);
    assert_eq!(text(&c, &link).await, HOSTILE_SUBJECT);
    follow(&c, Locator::Css(&link), "section.quarantine").await;
    assert_eq!(text(&c, "h1").await, HOSTILE_SUBJECT);
    nothing_ran(&c, HOSTILE_SUBJECT).await;
    let preview = text(&c, "pre.body").await;
    assert!(
        preview.contains("Please verify your account at"),
        "{preview}"
    );
    assert!(
        text(&c, "section.verdict")
            .await
            .contains("dmarc.quarantine")
    );
    shot(&c, "message").await;

    // Release it: it arrives downstream, byte for byte, to its recipient.
    assert!(downstream.received().is_empty());
    click(&c, "button.release").await;
    let mut status = String::new();
    for _ in 0..100 {
        status = text(&c, "section.quarantine .status").await;
        if status == "released" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "released");
    let got = downstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "security@bank.test");
    assert_eq!(got[0].1, vec!["ann@site.test".to_string()]);
    assert_eq!(got[0].2, w.ann_spoof.raw);
    assert!(
        text(&c, "section.quarantine")
            .await
            .contains("250 2.0.0 queued as D1")
    );
    assert!(
        text(&c, "section.history")
            .await
            .contains("admin · release")
    );
    shot(&c, "released").await;

    c.goto(&format!("{base}/quarantine")).await.unwrap();
    shot(&c, "quarantine").await;
    c.goto(&format!("{base}/actions")).await.unwrap();
    shot(&c, "actions").await;
    ingest_dmarc_report(&w.store).await;
    c.goto(&format!("{base}/dmarc?domain=site.test"))
        .await
        .unwrap();
    assert!(text(&c, "table.results").await.contains("192.0.2.66"));
    shot(&c, "dmarc").await;
    logout(&c).await;

    // Bob, a recipient: his quarantine only; Ann's message is not there for him.
    login(&c, &base, "bob", PASSWORD).await;
    c.goto(&format!("{base}/quarantine")).await.unwrap();
    let rows = c
        .find_all(Locator::Css("table.results tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].text().await.unwrap().contains("Invoice for Bob"));
    shot(&c, "recipient-quarantine").await;
    c.goto(&format!("{base}/message/{}", w.ann_spoof.record))
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "Not found");
    c.goto(&format!("{base}/message/{}", w.carol_spoof.record))
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "Not found");
    c.close().await.unwrap();

    // Without JavaScript: log in, find by reason code, release (plain forms and links).
    let nojs = driver.browser(false).await;
    login(&nojs, &base, "dana", PASSWORD).await;
    nojs.goto(&format!(
        "{base}/search?reason=dmarc.quarantine&rcpt=bob%40site.test"
    ))
    .await
    .unwrap();
    let bob_link = format!("td.subject a[href='/message/{}']", w.bob_spoof.record);
    follow(&nojs, Locator::Css(&bob_link), "button.release").await;
    follow(&nojs, Locator::Css("button.release"), "section.history").await;
    assert_eq!(text(&nojs, "section.quarantine .status").await, "released");
    let e = w
        .store
        .quarantine_get(w.bob_spoof.quarantine.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.status, e.actor.as_deref()),
        (QuarantineStatus::Released, Some("dana"))
    );
    assert_eq!(downstream.received().len(), 2);
    nojs.close().await.unwrap();
}
