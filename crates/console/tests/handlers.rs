//! The console's handlers without sockets (`tower::ServiceExt::oneshot`): logins, rights,
//! CSRF, the throttle, escaping, search, release and delete, on a store seeded through the
//! real engine.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use tower::ServiceExt;
use unspoof_console::ConsoleConfig;
use unspoof_store::QuarantineStatus;

/// A browser without a browser: the router and a cookie jar.
struct Agent {
    app: Router,
    cookies: Vec<(String, String)>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a csrf field");
        let rest = &self.body[at + 19..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Agent {
    fn new(app: Router) -> Agent {
        Agent {
            app,
            cookies: Vec::new(),
        }
    }

    async fn send(&mut self, req: axum::http::request::Builder, body: Body) -> Answer {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = req.header(header::HOST, "console.test");
        if !cookie.is_empty() {
            req = req.header(header::COOKIE, cookie);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        for v in headers.get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (kv, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !val.is_empty() && !v.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send(
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from(body),
        )
        .await
    }

    async fn login(&mut self, name: &str, password: &str) -> Answer {
        let page = self.get("/login").await;
        let csrf = page.csrf();
        self.post(
            "/login",
            &[("name", name), ("password", password), ("csrf", &csrf)],
        )
        .await
    }

    /// Logs in and returns the session's CSRF token (from the overview page).
    async fn logged_in(&mut self, name: &str) -> String {
        let r = self.login(name, PASSWORD).await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/"),
            "{}",
            r.body
        );
        let home = self.get("/").await;
        assert_eq!(home.status, StatusCode::OK);
        home.csrf()
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn config() -> ConsoleConfig {
    ConsoleConfig::default()
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_pages_need_a_login() {
    let w = world("headers").await;
    let mut a = Agent::new(unspoof_console::router(w.console(config())));
    for path in [
        "/",
        "/search",
        "/quarantine",
        &format!("/message/{}", w.ann_spoof.record),
    ] {
        let r = a.get(path).await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, "/login"),
            "{path}"
        );
    }
    let r = a.get("/login").await;
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    // No inline script or style in any page: only the vendored files.
    assert!(
        !r.body.contains("<script>") && !r.body.contains("style="),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("<script src=\"/static/htmx.min.js\" defer></script>")
    );
    let js = a.get("/static/htmx.min.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.body.starts_with("var htmx=function()"));
}

#[tokio::test]
async fn login_sets_an_httponly_samesite_cookie_and_refuses_wrong_passwords_and_forged_forms() {
    let w = world("login").await;
    let mut a = Agent::new(unspoof_console::router(w.console(config())));
    let wrong = a.login("admin", "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("The name or the password is wrong."));
    let unknown = a.login("nobody", PASSWORD).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    // A login form posted from elsewhere carries no token matching our cookie.
    let forged = a
        .post(
            "/login",
            &[("name", "admin"), ("password", PASSWORD), ("csrf", "guess")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let ok = a.login("admin", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let cookie = ok
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("unspoof_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback by default: {cookie}"
    );
    // A foreign Origin is refused even with the right token.
    let csrf = a.get("/").await.csrf();
    for origin in ["http://evil.test", "null"] {
        let req = Request::post("/logout")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin);
        let cross = a.send(req, Body::from(format!("csrf={csrf}"))).await;
        assert_eq!(cross.status, StatusCode::FORBIDDEN, "{origin}");
    }
    assert_eq!(a.get("/").await.status, StatusCode::OK, "still logged in");
    // Logging out without the token is refused; with it, the session ends.
    assert_eq!(a.post("/logout", &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        a.post("/logout", &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(a.get("/").await.location(), "/login");
    let actions = w.store.console_actions(None, 50).await.unwrap();
    let names: Vec<&str> = actions.iter().map(|x| x.action.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "login_refused").count(),
        2,
        "{names:?}"
    );
    assert!(
        names.contains(&"login") && names.contains(&"logout"),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_throttle_refuses_even_the_right_password_after_five_failures() {
    let w = world("throttle").await;
    let mut a = Agent::new(unspoof_console::router(w.console(config())));
    for _ in 0..5 {
        assert_eq!(
            a.login("ann", "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = a.login("ann", PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.body.contains("Too many failed logins"));
    // Another account from another client is not affected (tests have no client address, so
    // the address key is shared: a fresh console stands for another client).
    let mut b = Agent::new(unspoof_console::router(w.console(config())));
    b.logged_in("bob").await;
}

#[tokio::test]
async fn a_recipient_sees_only_their_own_quarantine() {
    let w = world("rights").await;
    let mut ann = Agent::new(unspoof_console::router(w.console(config())));
    let csrf = ann.logged_in("ann").await;
    let list = ann.get("/quarantine").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains(&w.ann_spoof.record), "{}", list.body);
    assert!(!list.body.contains("Invoice for Bob") && !list.body.contains(&w.bob_spoof.record));
    assert!(!list.body.contains("Carol"));
    // Asking for Bob's mail by recipient finds nothing either.
    let search = ann.get("/search?rcpt=bob%40site.test").await;
    assert!(search.body.contains("0 messages"), "{}", search.body);
    // Bob's message, its download and its release: as if it did not exist.
    let bob = &w.bob_spoof.record;
    assert_eq!(
        ann.get(&format!("/message/{bob}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ann.get(&format!("/message/{bob}/eml")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = ann
        .post(&format!("/message/{bob}/release"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = ann
        .post(&format!("/message/{bob}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let held = w
        .store
        .quarantine_get(w.bob_spoof.quarantine.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.status, QuarantineStatus::Held);
    // Ann's own: visible, downloadable byte for byte.
    let own = ann
        .get(&format!("/message/{}/eml", w.ann_spoof.record))
        .await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(
        own.headers[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    assert!(
        own.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    assert_eq!(own.body.as_bytes(), &w.ann_spoof.raw[..]);
    // The actions page is for administrators.
    assert_eq!(ann.get("/actions").await.status, StatusCode::FORBIDDEN);

    // A domain administrator sees the domain's mail, not another domain's.
    let mut dana = Agent::new(unspoof_console::router(w.console(config())));
    dana.logged_in("dana").await;
    let list = dana.get("/quarantine").await;
    assert!(list.body.contains(&w.ann_spoof.record) && list.body.contains(&w.bob_spoof.record));
    assert!(!list.body.contains(&w.carol_spoof.record));
    let carol = &w.carol_spoof.record;
    assert_eq!(
        dana.get(&format!("/message/{carol}")).await.status,
        StatusCode::NOT_FOUND
    );
    // Its overview counts only its domain: three messages to site.test.
    let home = dana.get("/?days=1").await;
    assert!(
        home.body.contains("<strong>3</strong> messages"),
        "{}",
        home.body
    );
}

#[tokio::test]
async fn a_hostile_subject_and_body_are_text_never_markup() {
    let w = world("escape").await;
    let mut a = Agent::new(unspoof_console::router(w.console(config())));
    a.logged_in("admin").await;
    for page in [
        a.get("/quarantine").await,
        a.get(&format!("/message/{}", w.ann_spoof.record)).await,
        a.get("/search?subject=your+account").await,
    ] {
        assert_eq!(page.status, StatusCode::OK);
        assert!(!page.body.contains("<script>document"), "{}", page.body);
        assert!(!page.body.contains("<img src=x"), "{}", page.body);
        assert!(
            page.body.contains("&lt;script&gt;document.title="),
            "{}",
            page.body
        );
    }
    let m = a.get(&format!("/message/{}", w.ann_spoof.record)).await;
    // The HTML body is shown as its text: the words, none of its tags or addresses to load.
    assert!(
        m.body.contains("Please verify your account at"),
        "{}",
        m.body
    );
    assert!(!m.body.contains("track.png\">") && !m.body.contains("<style>body"));
    // And in plain words, why it was held.
    assert!(m.body.contains("dmarc.quarantine"), "{}", m.body);
    assert!(m.body.contains("Hop trace") && m.body.contains("192.0.2.7"));
}

#[tokio::test]
async fn search_by_reason_code_subject_sender_and_pages() {
    let w = world("search").await;
    let mut config = config();
    config.page_size = 2;
    let mut a = Agent::new(unspoof_console::router(w.console(config)));
    a.logged_in("admin").await;
    let r = a.get("/search?reason=dmarc.quarantine").await;
    assert!(
        r.body.contains("2 messages, page 1, more older"),
        "{}",
        r.body
    );
    assert!(r.body.contains("rel=\"next\""));
    let p2 = a.get("/search?reason=dmarc.quarantine&page=2").await;
    assert!(
        p2.body.contains("1 message, page 2, the last") && p2.body.contains(&w.ann_spoof.record),
        "{}",
        p2.body
    );
    let r = a.get("/search?sender=news.test").await;
    assert!(
        r.body.contains("1 message,") && r.body.contains(&w.ann_plain.record),
        "{}",
        r.body
    );
    let r = a
        .get("/search?sender=SECURITY%40bank.test&verdict=quarantine")
        .await;
    assert!(
        r.body.contains("2 messages, page 1, more older"),
        "{}",
        r.body
    );
    let r = a.get("/search?subject=INVOICE").await;
    assert!(r.body.contains("1 message,") && r.body.contains(&w.bob_spoof.record));
    let r = a
        .get("/search?client=192.0.2.0%2F24&since=2000-01-01")
        .await;
    assert!(
        r.body.contains("2 messages, page 1, more older"),
        "{}",
        r.body
    );
    let r = a.get("/search?client=not-an-address").await;
    assert!(
        r.body.contains("is not an address or a network"),
        "{}",
        r.body
    );
    // htmx asks for the results alone.
    let mut req = Request::get("/search?reason=dmarc.quarantine");
    req = req.header("hx-request", "true");
    let partial = a.send(req, Body::empty()).await;
    assert!(
        partial.body.starts_with("<div id=\"results\">"),
        "{}",
        partial.body
    );
}

#[tokio::test]
async fn release_delivers_the_exact_bytes_once_and_records_who() {
    let w = world("release").await;
    let mut config = config();
    config.maildir = Some(w.maildir());
    let mut a = Agent::new(unspoof_console::router(w.console(config)));
    let csrf = a.logged_in("ann").await;
    let id = &w.ann_spoof.record;
    // Without the token nothing happens.
    let r = a
        .post(&format!("/message/{id}/release"), &[("csrf", "wrong")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = a
        .post(&format!("/message/{id}/release"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, format!("/message/{id}").as_str())
    );
    let qid = w.ann_spoof.quarantine.as_ref().unwrap();
    let e = w.store.quarantine_get(qid).await.unwrap().unwrap();
    assert_eq!(
        (e.status, e.actor.as_deref()),
        (QuarantineStatus::Released, Some("ann"))
    );
    let delivered: Vec<_> = std::fs::read_dir(w.maildir().join("new"))
        .unwrap()
        .collect();
    assert_eq!(delivered.len(), 1);
    let bytes = std::fs::read(delivered[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(bytes, w.ann_spoof.raw);
    let page = a.get(&format!("/message/{id}")).await;
    assert!(
        page.body.contains("released") && page.body.contains("ann · release"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Release to the recipients"));
    // A second release finds it no longer held: nothing delivered twice.
    a.post(&format!("/message/{id}/release"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        std::fs::read_dir(w.maildir().join("new")).unwrap().count(),
        1
    );
    let actions = w.store.console_actions(Some(qid), 10).await.unwrap();
    let names: Vec<&str> = actions.iter().map(|x| x.action.as_str()).collect();
    assert_eq!(names, ["release_refused", "release"]);
}

#[tokio::test]
async fn delete_drops_the_bytes_and_keeps_who_and_when() {
    let w = world("delete").await;
    let mut a = Agent::new(unspoof_console::router(w.console(config())));
    let csrf = a.logged_in("dana").await;
    let id = &w.bob_spoof.record;
    let r = a
        .post(&format!("/message/{id}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let e = w
        .store
        .quarantine_get(w.bob_spoof.quarantine.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.status, e.actor.as_deref()),
        (QuarantineStatus::Deleted, Some("dana"))
    );
    assert!(e.message.raw.is_empty());
    assert_eq!(
        a.get(&format!("/message/{id}/eml")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn recipients_may_be_kept_from_releasing() {
    let w = world("norelease").await;
    let mut config = config();
    config.recipients_may_release = false;
    let mut a = Agent::new(unspoof_console::router(w.console(config)));
    let csrf = a.logged_in("ann").await;
    let id = &w.ann_spoof.record;
    assert!(
        !a.get(&format!("/message/{id}"))
            .await
            .body
            .contains("Release to the recipients")
    );
    let r = a
        .post(&format!("/message/{id}/release"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_removed_account_loses_its_session_at_once() {
    let w = world("removed").await;
    let mut a = Agent::new(unspoof_console::router(w.console(config())));
    a.logged_in("bob").await;
    assert_eq!(a.get("/quarantine").await.status, StatusCode::OK);
    assert!(w.store.console_account_remove("bob").await.unwrap());
    assert_eq!(a.get("/quarantine").await.location(), "/login");
}

#[tokio::test]
async fn the_overview_draws_its_charts_on_the_server() {
    let w = world("overview").await;
    let mut a = Agent::new(unspoof_console::router(w.console(config())));
    a.logged_in("admin").await;
    let r = a.get("/?days=1").await;
    assert!(r.body.contains("<strong>4</strong> messages"), "{}", r.body);
    assert!(r.body.contains("<strong>3</strong> held now"), "{}", r.body);
    assert!(r.body.contains("<svg class=\"chart\""), "{}", r.body);
    assert!(
        r.body.contains("3 quarantine,"),
        "the bar's tooltip: {}",
        r.body
    );
    assert!(
        r.body.contains("href=\"/search?reason=dmarc.quarantine\""),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("href=\"/search?sender=bank.test\""),
        "{}",
        r.body
    );
}

/// The console's own SQL (overview aggregates, the visible-recipient limit, subject and
/// sender search, paging, accounts and actions) on PostgreSQL.
#[tokio::test]
async fn the_same_pages_on_postgresql() {
    let url = fresh_pg("pages");
    let w = world_on("pg", &url).await;
    let mut config = config();
    config.page_size = 2;
    config.maildir = Some(w.maildir());
    let console = w.console(config);
    let mut dana = Agent::new(unspoof_console::router(console.clone()));
    let csrf = dana.logged_in("dana").await;
    let home = dana.get("/?days=1").await;
    assert!(
        home.body.contains("<strong>3</strong> messages"),
        "{}",
        home.body
    );
    assert!(
        home.body.contains("<strong>2</strong> held now"),
        "{}",
        home.body
    );
    assert!(
        home.body.contains("href=\"/search?sender=bank.test\""),
        "{}",
        home.body
    );
    let r = dana.get("/search?reason=dmarc.quarantine").await;
    assert!(
        r.body.contains("2 messages, page 1, the last"),
        "{}",
        r.body
    );
    let r = dana.get("/search?subject=%25invoice_").await;
    assert!(
        r.body.contains("0 messages"),
        "LIKE wildcards are literal: {}",
        r.body
    );
    let r = dana
        .get("/search?subject=INVOICE&sender=Security%40Bank.test")
        .await;
    assert!(
        r.body.contains("1 message,") && r.body.contains(&w.bob_spoof.record),
        "{}",
        r.body
    );
    assert_eq!(
        dana.get(&format!("/message/{}", w.carol_spoof.record))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let id = &w.bob_spoof.record;
    let r = dana
        .post(&format!("/message/{id}/release"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = dana.get(&format!("/message/{id}")).await;
    assert!(page.body.contains("dana · release"), "{}", page.body);
    assert_eq!(
        std::fs::read_dir(w.maildir().join("new")).unwrap().count(),
        1
    );

    let mut admin = Agent::new(unspoof_console::router(console));
    admin.logged_in("admin").await;
    let r = admin.get("/search?reason=dmarc.quarantine&page=2").await;
    assert!(r.body.contains("1 message, page 2, the last"), "{}", r.body);
    let actions = admin.get("/actions").await;
    assert!(actions.body.contains("release") && actions.body.contains("dana"));
    w.store.close().await;
    drop_pg(&url);
}

#[tokio::test]
async fn the_dmarc_sources_page_shows_a_domains_senders_to_its_administrators() {
    let w = world("dmarc").await;
    ingest_dmarc_report(&w.store).await;

    let mut dana = Agent::new(unspoof_console::router(w.console(config())));
    dana.logged_in("dana").await;
    let r = dana.get("/dmarc?domain=site.test").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("<strong>12</strong> messages in 1 reports"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("192.0.2.66") && r.body.contains("spoofing"),
        "{}",
        r.body
    );
    assert!(r.body.contains("receiver.example"));
    // Another domain's reports are not a domain administrator's to read.
    assert_eq!(
        dana.get("/dmarc?domain=bank.test").await.status,
        StatusCode::FORBIDDEN
    );
    let mut ann = Agent::new(unspoof_console::router(w.console(config())));
    ann.logged_in("ann").await;
    assert_eq!(
        ann.get("/dmarc?domain=site.test").await.status,
        StatusCode::FORBIDDEN
    );
    let mut admin = Agent::new(unspoof_console::router(w.console(config())));
    admin.logged_in("admin").await;
    let r = admin.get("/dmarc?domain=site.test&days=3").await;
    assert!(r.body.contains("192.0.2.66"));
    let r = admin.get("/dmarc?domain=bank.test").await;
    assert!(
        r.body.contains("No report covers this domain"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn release_and_allow_takes_the_scope_the_role_may_give() {
    let w = world("allow").await;
    let mut config = config();
    config.maildir = Some(w.maildir());
    let console = w.console(config);
    let mut ann = Agent::new(unspoof_console::router(console.clone()));
    let csrf = ann.logged_in("ann").await;
    let id = &w.ann_spoof.record;
    let qid = w.ann_spoof.quarantine.as_ref().unwrap();
    // A recipient may not allow a sender for everyone: nothing is released either.
    let r = ann
        .post(
            &format!("/message/{id}/release"),
            &[("csrf", &csrf), ("allow", "everyone")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let e = w.store.quarantine_get(qid).await.unwrap().unwrap();
    assert_eq!(e.status, QuarantineStatus::Held);
    assert!(w.store.allow_list().await.unwrap().is_empty());
    // For herself: released, and the sender allowed for ann only.
    let r = ann
        .post(
            &format!("/message/{id}/release"),
            &[("csrf", &csrf), ("allow", "recipient")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let e = w.store.quarantine_get(qid).await.unwrap().unwrap();
    assert_eq!(e.status, QuarantineStatus::Released);
    let from = "Sender <Security@Bank.test>";
    assert!(
        w.store
            .allowed(from, &["ann@site.test".into()])
            .await
            .unwrap()
    );
    assert!(
        !w.store
            .allowed(from, &["bob@site.test".into()])
            .await
            .unwrap()
    );
    assert!(
        !w.store
            .allowed(from, &["ann@site.test".into(), "bob@site.test".into()])
            .await
            .unwrap(),
        "every recipient must be covered"
    );
    assert!(
        !w.store
            .allowed("other@bank.test", &["ann@site.test".into()])
            .await
            .unwrap()
    );
    let actions = w.store.console_actions(Some(id), 10).await.unwrap();
    assert!(
        actions.iter().any(|a| a.action == "allow_sender"
            && a.actor == "ann"
            && a.detail
                .as_deref()
                .is_some_and(|d| d.ends_with("for ann@site.test"))),
        "{actions:?}"
    );
    // A recipient does not see the allow list page.
    assert_eq!(ann.get("/allow").await.status, StatusCode::FORBIDDEN);

    // The domain administrator allows for the domain: every site.test recipient.
    let mut dana = Agent::new(unspoof_console::router(console));
    let csrf = dana.logged_in("dana").await;
    let bob = &w.bob_spoof.record;
    let r = dana
        .post(
            &format!("/message/{bob}/release"),
            &[("csrf", &csrf), ("allow", "domain")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert!(
        w.store
            .allowed(from, &["zed@site.test".into()])
            .await
            .unwrap()
    );
    assert!(
        !w.store
            .allowed(from, &["carol@other.test".into()])
            .await
            .unwrap()
    );
    let page = dana.get("/allow").await;
    assert!(page.body.contains("security@bank.test") && page.body.contains("@site.test"));
    // Removing the domain's entry takes it away.
    let list = w.store.allow_list().await.unwrap();
    let domain_entry = list
        .iter()
        .find(|a| matches!(a.scope, unspoof_store::console::AllowScope::Domain(_)))
        .unwrap();
    let r = dana
        .post(
            &format!("/allow/{}/remove", domain_entry.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(
        !w.store
            .allowed(from, &["zed@site.test".into()])
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn bulk_actions_and_false_positives_are_recorded_with_who() {
    let w = world("bulk").await;
    let mut config = config();
    config.maildir = Some(w.maildir());
    let mut a = Agent::new(unspoof_console::router(w.console(config)));
    let csrf = a.logged_in("admin").await;
    let q = a.get("/quarantine").await;
    assert!(q.body.contains("action=\"/quarantine/bulk\""), "{}", q.body);
    assert!(
        q.body
            .contains(&format!("value=\"{}\"", w.bob_spoof.record))
    );
    let r = a
        .post(
            "/quarantine/bulk",
            &[
                ("csrf", &csrf),
                ("do", "delete"),
                ("id", &w.bob_spoof.record),
                ("id", &w.carol_spoof.record),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/quarantine")
    );
    for s in [&w.bob_spoof, &w.carol_spoof] {
        let e = w
            .store
            .quarantine_get(s.quarantine.as_ref().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.status, e.actor.as_deref()),
            (QuarantineStatus::Deleted, Some("admin"))
        );
    }
    // Without the token: refused, nothing done.
    let r = a
        .post(
            "/quarantine/bulk",
            &[("do", "release"), ("id", &w.ann_spoof.record)],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A message no longer held: the bulk answer says not everything was done.
    let r = a
        .post(
            "/quarantine/bulk",
            &[
                ("csrf", &csrf),
                ("do", "release"),
                ("id", &w.bob_spoof.record),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = a
        .post(
            &format!("/message/{}/false-positive", w.ann_spoof.record),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let fp = w
        .store
        .console_actions(Some(&w.ann_spoof.record), 10)
        .await
        .unwrap();
    assert!(
        fp.iter().any(|x| x.action == "false_positive"
            && x.actor == "admin"
            && x.detail
                .as_deref()
                .is_some_and(|d| d.contains("dmarc.quarantine"))),
        "{fp:?}"
    );
    let actions = a.get("/actions").await;
    assert!(actions.body.contains("false_positive"));
}

#[tokio::test]
async fn sessions_outlive_a_restart_of_the_console() {
    let w = world("sessions").await;
    let mut a = Agent::new(unspoof_console::router(w.console(config())));
    a.logged_in("bob").await;
    // The same cookie against a new console process on the same store.
    a.app = unspoof_console::router(w.console(config()));
    let r = a.get("/quarantine").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains(&w.bob_spoof.record));
    // The store keeps the token's hash, not the token.
    let token = a
        .cookies
        .iter()
        .find(|(k, _)| k == "unspoof_session")
        .unwrap()
        .1
        .clone();
    assert!(
        w.store
            .console_session(&unspoof_console::auth::token_hash(&token))
            .await
            .unwrap()
            .is_some()
    );
    assert!(w.store.console_session(&token).await.unwrap().is_none());
    // Logging out ends it for every process.
    let csrf = r.csrf();
    a.post("/logout", &[("csrf", &csrf)]).await;
    a.cookies.push(("unspoof_session".into(), token));
    a.app = unspoof_console::router(w.console(config()));
    assert_eq!(a.get("/quarantine").await.location(), "/login");
}

/// The digest's release link, from the mail as it was written into the Maildir.
fn digest_link(mail: &str) -> (String, String) {
    let at = mail.find("/digest/release?").expect("a release link");
    let link = mail[at..].split_whitespace().next().unwrap().to_string();
    let query = link.split_once('?').unwrap().1.to_string();
    (link, query)
}

#[tokio::test]
async fn a_digest_link_releases_once_and_only_as_signed() {
    let w = world("digest").await;
    let mut config = config();
    config.maildir = Some(w.maildir());
    config.public_url = "https://console.test".into();
    let console = w.console(config);
    let run = unspoof_console::digest::send_digests(&console, true)
        .await
        .unwrap();
    let mut to: Vec<&str> = run.sent.iter().map(|(r, _, _)| r.as_str()).collect();
    to.sort();
    assert_eq!(to, ["ann@site.test", "bob@site.test", "carol@other.test"]);
    // Not due again: nothing new is held and a day has not passed.
    let again = unspoof_console::digest::send_digests(&console, false)
        .await
        .unwrap();
    assert!(again.sent.is_empty(), "{again:?}");
    let mails: Vec<String> = std::fs::read_dir(w.maildir().join("new"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let ann_mail = mails
        .iter()
        .find(|m| m.contains("To: <ann@site.test>"))
        .expect("ann's digest");
    // The hostile subject is in a text/plain mail, one line, no header of its own.
    assert!(ann_mail.contains("Content-Type: text/plain"));
    assert!(!ann_mail.contains("Invoice for Bob"), "only ann's mail");
    let (link, query) = digest_link(ann_mail);
    assert!(
        link.starts_with("/digest/release?")
            && ann_mail.contains("https://console.test/digest/release?")
    );
    let mut anyone = Agent::new(unspoof_console::router(console.clone()));
    // The link's page releases nothing by itself (mail scanners follow links).
    let page = anyone.get(&link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Release it to me"));
    let qid = w.ann_spoof.quarantine.as_ref().unwrap();
    assert_eq!(
        w.store.quarantine_get(qid).await.unwrap().unwrap().status,
        QuarantineStatus::Held
    );
    let fields: Vec<(String, String)> = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.replace("%40", "@"))
        })
        .collect();
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.clone();
    // A changed recipient, expiry or signature is refused.
    for (k, bad) in [
        ("r", "bob@site.test".to_string()),
        ("e", (field("e").parse::<i64>().unwrap() + 1).to_string()),
        ("s", format!("A{}", &field("s")[1..])),
    ] {
        let form: Vec<(&str, String)> = ["m", "r", "e", "s"]
            .iter()
            .map(|n| (*n, if *n == k { bad.clone() } else { field(n) }))
            .collect();
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = anyone.post("/digest/release", &form).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{k}");
    }
    // Expired: signed for a time already past.
    let key = unspoof_console::digest::key(&w.dir).unwrap();
    let past = unspoof_store::now() - 1;
    let sig = unspoof_console::digest::sign(&key, &field("m"), "ann@site.test", past);
    let past_s = past.to_string();
    let r = anyone
        .post(
            "/digest/release",
            &[
                ("m", &field("m")),
                ("r", "ann@site.test"),
                ("e", &past_s),
                ("s", &sig),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // As signed: released, by the digest's recipient.
    let (m, r_, exp, s) = (field("m"), field("r"), field("e"), field("s"));
    let r = anyone
        .post(
            "/digest/release",
            &[("m", &m), ("r", &r_), ("e", &exp), ("s", &s)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Released"), "{}", r.body);
    let e = w.store.quarantine_get(qid).await.unwrap().unwrap();
    assert_eq!(
        (e.status, e.actor.as_deref()),
        (QuarantineStatus::Released, Some("digest:ann@site.test"))
    );
    // Twice: not again.
    let r2 = anyone
        .post(
            "/digest/release",
            &[("m", &m), ("r", &r_), ("e", &exp), ("s", &s)],
        )
        .await;
    assert!(r2.body.contains("Not released"), "{}", r2.body);
    assert_eq!(
        w.store
            .quarantine_get(qid)
            .await
            .unwrap()
            .unwrap()
            .actor
            .as_deref(),
        Some("digest:ann@site.test")
    );
}

#[tokio::test]
async fn the_abuse_report_and_the_audit_are_pages_for_administrators() {
    let w = world("arf").await;
    let console = unspoof_console::Console::with_engine(
        w.store.clone(),
        config(),
        w.engine.clone(),
        "mx.site.test",
    );
    let mut admin = Agent::new(unspoof_console::router(console.clone()));
    admin.logged_in("admin").await;
    let id = &w.ann_spoof.record;
    let page = admin.get(&format!("/message/{id}")).await;
    assert!(page.body.contains("/abuse-report"));
    let r = admin.get(&format!("/message/{id}/abuse-report")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.contains("Feedback-Type: abuse") && r.body.contains("abuse@bank.test"),
        "{}",
        r.body
    );
    // The hostile subject is escaped in the report's text too.
    assert!(!r.body.contains("<script>document.title"), "escaped");
    let d = admin
        .get(&format!("/message/{id}/abuse-report?download=1"))
        .await;
    assert_eq!(d.headers[header::CONTENT_TYPE], "application/octet-stream");
    assert!(d.body.contains("message/feedback-report"));
    let acts = w.store.console_actions(Some(id), 10).await.unwrap();
    assert!(
        acts.iter()
            .any(|a| a.action == "abuse_report" && a.actor == "admin")
    );
    let mut ann = Agent::new(unspoof_console::router(console.clone()));
    ann.logged_in("ann").await;
    assert_eq!(
        ann.get(&format!("/message/{id}/abuse-report")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        ann.get("/audit?domain=bank.test").await.status,
        StatusCode::FORBIDDEN
    );
    // The audit of bank.test from the zone: p=quarantine, no DKIM key found.
    let a = admin.get("/audit?domain=bank.test").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.body.contains("Grade") && a.body.contains("dmarc."),
        "{}",
        a.body
    );
    let mut dana = Agent::new(unspoof_console::router(console));
    dana.logged_in("dana").await;
    assert_eq!(
        dana.get("/audit?domain=bank.test").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_message_page_joins_the_mail_log() {
    let w = world("maillog").await;
    let raw = String::from_utf8_lossy(&w.ann_spoof.raw).into_owned();
    let mid = raw
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: <"))
        .unwrap()
        .trim_end_matches('>')
        .to_string();
    let log = w.dir.join("mail.log");
    std::fs::write(
        &log,
        format!(
            "Dec  7 06:00:00 mx postfix/smtpd[100]: 4AB12C: client=mail.example[192.0.2.7]\n\
             Dec  7 06:00:00 mx postfix/cleanup[101]: 4AB12C: message-id=<{mid}>\n\
             Dec  7 06:00:01 mx postfix/qmgr[102]: 4AB12C: from=<security@bank.test>, size=900, nrcpt=1 (queue active)\n\
             Dec  7 06:00:02 mx postfix/smtpd[100]: 9ZZ99Z: client=other.example[203.0.113.9]\n"
        ),
    )
    .unwrap();
    let mut config = config();
    config.mail_logs = vec![log];
    let mut a = Agent::new(unspoof_console::router(w.console(config)));
    a.logged_in("admin").await;
    let page = a.get(&format!("/message/{}", w.ann_spoof.record)).await;
    assert!(page.body.contains("The mail log"), "{}", page.body);
    assert!(page.body.contains("4AB12C") && page.body.contains("client=mail.example[192.0.2.7]"));
    assert!(
        !page.body.contains("9ZZ99Z: client=other.example"),
        "another message's line"
    );
    // A log that cannot be read says so.
    let config2 = ConsoleConfig {
        mail_logs: vec![w.dir.join("missing.log")],
        ..Default::default()
    };
    let mut b = Agent::new(unspoof_console::router(w.console(config2)));
    b.logged_in("admin").await;
    let page = b.get(&format!("/message/{}", w.ann_spoof.record)).await;
    assert!(page.body.contains("could not be read"), "{}", page.body);
}
