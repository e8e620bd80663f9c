//! The routes: who may ask what, and what each answer is made of. The HTML is `pages.rs`'.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use unspoof_store::console::ConsoleAction;
use unspoof_store::{IpNet, MessageRecord, QuarantineStatus, new_id, now};

use crate::Console;
use crate::auth::{self, Role, Session};
use crate::pages;
use crate::release::ReleaseError;

const SESSION_COOKIE: &str = "unspoof_session";
/// Double-submit token of the login form (there is no session to hold a CSRF token yet).
const LOGIN_COOKIE: &str = "unspoof_login";

/// The one script the pages load (htmx 2, 0BSD, from the npm package `htmx.org`).
const HTMX: &str = include_str!("../static/htmx.min.js");
const CSS: &str = include_str!("../static/console.css");

/// Nothing inline, nothing remote: scripts, styles and images only from the console itself,
/// forms only to it, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/search", get(search))
        .route("/quarantine", get(quarantine))
        .route("/message/{id}", get(message))
        .route("/message/{id}/eml", get(eml))
        .route("/message/{id}/release", post(release))
        .route("/message/{id}/delete", post(delete))
        .route("/message/{id}/false-positive", post(false_positive))
        .route("/message/{id}/abuse-report", get(abuse_report))
        .route("/quarantine/bulk", post(bulk))
        .route("/digest/release", get(digest_link).post(digest_release))
        .route("/allow", get(allow_page))
        .route("/allow/{id}/remove", post(allow_remove))
        .route("/actions", get(actions))
        .route("/dmarc", get(dmarc))
        .route("/audit", get(audit))
        .route("/static/htmx.min.js", get(htmx))
        .route("/static/console.css", get(css))
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

async fn security_headers(req: axum::extract::Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it Chromium sends `Origin: null` with our own form posts, and
    // the Origin check could no longer tell our pages from others.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show private mail: never kept by a browser or a proxy.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

async fn htmx() -> Response {
    static_file("text/javascript; charset=utf-8", HTMX)
}

async fn css() -> Response {
    static_file("text/css; charset=utf-8", CSS)
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The client's address, when the server knows it (tests without sockets have none).
struct Client(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .or_else(|| {
                    parts
                        .extensions
                        .get::<ConnectInfo<crate::TlsPeer>>()
                        .map(|c| c.0.0.ip())
                }),
        ))
    }
}

/// A logged-in request; anything else is sent to the login page.
struct Authed {
    session: Session,
    token: String,
}

impl FromRequestParts<Arc<Console>> for Authed {
    type Rejection = Response;
    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(Redirect::to("/login").into_response());
        };
        let mut session = match console.sessions.get(&console.store, &token).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(Redirect::to("/login").into_response()),
            Err(e) => return Err(store_failed(e)),
        };
        // An account removed or disabled since its login loses its sessions at once.
        match console.store.console_account(&session.name).await {
            Ok(Some(a)) if !a.disabled && Role::parse(&a.role) == Some(session.role) => {
                // The scope as it is now, not as it was at login.
                session.scope = a.scope.iter().map(|s| s.to_ascii_lowercase()).collect();
                Ok(Authed { session, token })
            }
            Ok(_) => {
                let _ = console.sessions.end(&console.store, &token).await;
                Err(Redirect::to("/login").into_response())
            }
            Err(e) => Err(store_failed(e)),
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(console: &Console, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if console.config.secure_cookies {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A state change must come from our own pages: the Origin (when the browser sends one) names
/// this host, and the form carries the session's CSRF token.
fn check_post(
    headers: &HeaderMap,
    form_token: Option<&str>,
    expected: &str,
) -> Result<(), Response> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if host.is_empty() || origin_host != host {
            return Err(forbidden(
                "This request did not come from the console's own page.",
            ));
        }
    }
    match form_token {
        Some(t) if !expected.is_empty() && auth::same_token(t, expected) => Ok(()),
        _ => Err(forbidden(
            "This form has expired or did not come from the console. Reload the page and try again.",
        )),
    }
}

fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(pages::problem("Refused", why).into_string()),
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(
            pages::problem(
                "Not found",
                "There is no such message, or it is not yours to see.",
            )
            .into_string(),
        ),
    )
        .into_response()
}

fn store_failed(e: impl std::fmt::Display) -> Response {
    eprintln!("unspoof-console: store: {e}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::problem("The store did not answer", "Try again in a moment.").into_string()),
    )
        .into_response()
}

fn html(m: maud::Markup) -> Response {
    Html(m.into_string()).into_response()
}

async fn record(console: &Console, a: &ConsoleAction) {
    if let Err(e) = console.store.console_action_put(a).await {
        eprintln!(
            "unspoof-console: cannot record {} by {}: {e}",
            a.action, a.actor
        );
    }
}

fn action(
    actor: &str,
    what: &str,
    target: Option<&str>,
    client: &Client,
    detail: Option<String>,
) -> ConsoleAction {
    ConsoleAction {
        id: new_id(),
        at: now(),
        actor: actor.to_string(),
        action: what.to_string(),
        target: target.map(str::to_string),
        client: client.0.map(|i| i.to_string()),
        detail,
    }
}

// Log in and out.

async fn login_page(State(console): State<Arc<Console>>) -> Response {
    let token = auth::random_token();
    let mut res = html(pages::login(&token, None));
    res.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&console, LOGIN_COOKIE, &token, Some(3_600)),
    );
    res
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(console): State<Arc<Console>>,
    client: Client,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if let Err(r) = check_post(&headers, Some(&form.csrf), &expected) {
        return r;
    }
    let name = form.name.trim().to_string();
    let keys = vec![
        format!("ip:{}", client.0.map(|i| i.to_string()).unwrap_or_default()),
        format!("name:{}", name.to_ascii_lowercase()),
    ];
    let again = |why: &str, status: StatusCode| {
        let token = auth::random_token();
        let mut res = (status, Html(pages::login(&token, Some(why)).into_string())).into_response();
        res.headers_mut().insert(
            header::SET_COOKIE,
            set_cookie(&console, LOGIN_COOKIE, &token, Some(3_600)),
        );
        res
    };
    if console.sessions.throttled(&keys) {
        record(
            &console,
            &action(&name, "login_throttled", None, &client, None),
        )
        .await;
        return again(
            "Too many failed logins. Wait a quarter of an hour, then try again.",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let account = match console.store.console_account(&name).await {
        Ok(a) => a,
        Err(e) => return store_failed(e),
    };
    let password = form.password;
    let checked = account.clone();
    let ok = tokio::task::spawn_blocking(move || auth::check_password(checked.as_ref(), &password))
        .await
        .unwrap_or(false);
    let role = account.as_ref().and_then(|a| Role::parse(&a.role));
    match (ok, account, role) {
        (true, Some(account), Some(role)) => {
            console.sessions.succeeded(&keys[1]);
            let token = match console.sessions.start(&console.store, &account, role).await {
                Ok(t) => t,
                Err(e) => return store_failed(e),
            };
            record(
                &console,
                &action(&account.name, "login", None, &client, None),
            )
            .await;
            let mut res = Redirect::to("/").into_response();
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(&console, SESSION_COOKIE, &token, None),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(&console, LOGIN_COOKIE, "", Some(0)),
            );
            res
        }
        _ => {
            console.sessions.failed(&keys);
            record(
                &console,
                &action(&name, "login_refused", None, &client, None),
            )
            .await;
            again(
                "The name or the password is wrong.",
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(console): State<Arc<Console>>,
    authed: Authed,
    client: Client,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Err(r) = check_post(&headers, Some(&form.csrf), &authed.session.csrf) {
        return r;
    }
    if let Err(e) = console.sessions.end(&console.store, &authed.token).await {
        return store_failed(e);
    }
    record(
        &console,
        &action(&authed.session.name, "logout", None, &client, None),
    )
    .await;
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&console, SESSION_COOKIE, "", Some(0)),
    );
    res
}

// The overview.

#[derive(Deserialize, Default)]
struct OverviewParams {
    days: Option<u32>,
}

async fn overview(
    State(console): State<Arc<Console>>,
    authed: Authed,
    Query(p): Query<OverviewParams>,
) -> Response {
    let days = p.days.filter(|d| [1, 7, 30].contains(d)).unwrap_or(7);
    let bucket = if days == 1 { 3_600 } else { 86_400 };
    let until = (now() / bucket + 1) * bucket;
    let since = until - i64::from(days) * 86_400;
    match console
        .store
        .console_overview(since, until, bucket, &authed.session.visible_to())
        .await
    {
        Ok(o) => html(pages::overview(
            &authed.session,
            days,
            since,
            until,
            bucket,
            &o,
        )),
        Err(e) => store_failed(e),
    }
}

// Search and the quarantine list.

/// The search form's fields, as the browser sends them (empty fields are "any").
#[derive(Deserialize, Default, Clone)]
pub(crate) struct SearchParams {
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub rcpt: String,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub message_id: String,
    #[serde(default)]
    pub queue_id: String,
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub verdict: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub page: Option<u32>,
}

impl SearchParams {
    /// The store query, or what is wrong with a field.
    fn query(&self, session: &Session, page_size: u32) -> Result<unspoof_store::Query, String> {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let time = |s: &str, end: bool| -> Result<Option<i64>, String> {
            let Some(s) = opt(s) else { return Ok(None) };
            let t = unspoof_store::parse_time(&s, now())?;
            // A bare date as the end of a range includes that whole day.
            Ok(Some(if end && s.len() == 10 { t + 86_400 } else { t }))
        };
        let client = match opt(&self.client) {
            None => None,
            Some(c) => Some(
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{c:?} is not an address or a network"))?,
            ),
        };
        let page = self.page.unwrap_or(1).max(1);
        Ok(unspoof_store::Query {
            message_id: opt(&self.message_id),
            queue_id: opt(&self.queue_id),
            client,
            recipient: opt(&self.rcpt),
            action: opt(&self.verdict),
            reason: opt(&self.reason),
            since: time(&self.since, false)?,
            until: time(&self.until, true)?,
            subject: opt(&self.subject),
            sender: opt(&self.sender),
            visible_to: session.visible_to(),
            limit: Some(page_size),
            offset: Some((page - 1).saturating_mul(page_size)),
            ..Default::default()
        })
    }
}

/// One page of results: the records, whether older ones follow, and the quarantine status of
/// those held. Matches are not counted: a count reads every match (on a million records, the
/// slowest part of a search page); one record past the page says whether there is a next.
pub(crate) struct Results {
    pub records: Vec<MessageRecord>,
    pub more: bool,
    pub page: u32,
    pub states: HashMap<String, QuarantineStatus>,
}

async fn run_search(
    console: &Console,
    q: &unspoof_store::Query,
    page: u32,
) -> Result<Results, unspoof_store::StoreError> {
    let page_size = q.limit.unwrap_or(unspoof_store::DEFAULT_LIMIT);
    let mut one_more = q.clone();
    one_more.limit = Some(page_size.saturating_add(1));
    let mut records = console.store.search(&one_more).await?;
    let more = records.len() > page_size as usize;
    records.truncate(page_size as usize);
    let held: Vec<String> = records.iter().filter_map(|r| r.stored_at.clone()).collect();
    let states = console
        .store
        .quarantine_states(&held)
        .await?
        .into_iter()
        .collect();
    Ok(Results {
        records,
        more,
        page,
        states,
    })
}

async fn search(
    State(console): State<Arc<Console>>,
    authed: Authed,
    headers: HeaderMap,
    Query(p): Query<SearchParams>,
) -> Response {
    let page_size = console.config.page_size.max(1);
    // The empty form lists the newest records.
    let (results, error) = match p.query(&authed.session, page_size) {
        Ok(q) => match run_search(&console, &q, p.page.unwrap_or(1).max(1)).await {
            Ok(r) => (Some(r), None),
            Err(e) => return store_failed(e),
        },
        Err(why) => (None, Some(why)),
    };
    // htmx asks for the results alone when the form changes.
    let partial = headers.contains_key("hx-request") && !headers.contains_key("hx-boosted");
    html(pages::search(
        &authed.session,
        &p,
        results.as_ref(),
        error.as_deref(),
        partial,
    ))
}

async fn quarantine(
    State(console): State<Arc<Console>>,
    authed: Authed,
    Query(mut p): Query<SearchParams>,
) -> Response {
    p.verdict = "quarantine".into();
    let page_size = console.config.page_size.max(1);
    let q = match p.query(&authed.session, page_size) {
        Ok(q) => q,
        Err(why) => return html(pages::search(&authed.session, &p, None, Some(&why), false)),
    };
    match run_search(&console, &q, p.page.unwrap_or(1).max(1)).await {
        Ok(r) => html(pages::quarantine(
            &authed.session,
            &p,
            &r,
            may_act(&console, &authed.session),
        )),
        Err(e) => store_failed(e),
    }
}

// One message.

/// The record `id` if this session may see it.
async fn visible_record(
    console: &Console,
    session: &Session,
    id: &str,
) -> Result<MessageRecord, Response> {
    match console.store.message(id).await {
        Ok(Some(m)) if session.may_see(&m.recipients) => Ok(m),
        Ok(_) => Err(not_found()),
        Err(e) => Err(store_failed(e)),
    }
}

async fn message(
    State(console): State<Arc<Console>>,
    authed: Authed,
    Path(id): Path<String>,
) -> Response {
    let m = match visible_record(&console, &authed.session, &id).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let held = match &m.stored_at {
        Some(q) => match console.store.quarantine_get(q).await {
            Ok(e) => e,
            Err(e) => return store_failed(e),
        },
        None => None,
    };
    let mut history = Vec::new();
    for target in [Some(m.id.as_str()), m.stored_at.as_deref()]
        .into_iter()
        .flatten()
    {
        match console.store.console_actions(Some(target), 50).await {
            Ok(a) => history.extend(a),
            Err(e) => return store_failed(e),
        }
    }
    history.sort_by(|a, b| b.at.cmp(&a.at).then(b.id.cmp(&a.id)));
    let may_act = may_act(&console, &authed.session);
    // The MTA's log lines, joined by the hop trace of the stored bytes (no DNS needed).
    let logs = match held.as_ref().filter(|q| !q.message.raw.is_empty()) {
        Some(q) if !console.config.mail_logs.is_empty() => {
            let analysis =
                crate::provenance::analyse(&console.trace_engine, &m, &q.message.raw).await;
            let paths = console.config.mail_logs.clone();
            let at = m.received_at;
            tokio::task::spawn_blocking(move || crate::provenance::log_trace(&paths, &analysis, at))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
                .transpose()
        }
        _ => None,
    };
    html(pages::message(
        &authed.session,
        &m,
        held.as_ref(),
        &history,
        may_act,
        logs.as_ref(),
    ))
}

#[derive(Deserialize, Default)]
struct ReportParams {
    #[serde(default)]
    download: Option<u8>,
}

/// The one-click ARF abuse report of `unspoof report abuse`: built here, shown and
/// downloaded, never sent (whoever downloads it sends it from their own mail).
async fn abuse_report(
    State(console): State<Arc<Console>>,
    authed: Authed,
    client: Client,
    Path(id): Path<String>,
    Query(p): Query<ReportParams>,
) -> Response {
    if authed.session.role == Role::Recipient {
        return forbidden("Abuse reports are made by administrators.");
    }
    let m = match visible_record(&console, &authed.session, &id).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let entry = match &m.stored_at {
        Some(q) => match console.store.quarantine_get(q).await {
            Ok(Some(e)) if !e.message.raw.is_empty() => e,
            Ok(_) => return not_found(),
            Err(e) => return store_failed(e),
        },
        None => return not_found(),
    };
    let raw = entry.message.raw;
    let analysis = crate::provenance::analyse(&console.engine, &m, &raw).await;
    let paths = console.config.mail_logs.clone();
    let at = m.received_at;
    let hostname = console.hostname.clone();
    let built = tokio::task::spawn_blocking(move || {
        let log = crate::provenance::log_trace(&paths, &analysis, at)
            .ok()
            .flatten();
        crate::provenance::abuse_report(&raw, &analysis, log.as_ref(), &hostname, false)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let (to, report) = match built {
        Ok(r) => r,
        Err(why) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Html(pages::problem("No abuse report", &why).into_string()),
            )
                .into_response();
        }
    };
    if p.download.is_some() {
        record(
            &console,
            &action(
                &authed.session.name,
                "abuse_report",
                Some(&m.id),
                &client,
                Some(to.join(", ")),
            ),
        )
        .await;
        let name = format!("attachment; filename=\"{}.abuse-report.eml\"", m.id);
        return (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_DISPOSITION, name),
            ],
            report,
        )
            .into_response();
    }
    html(pages::abuse_report(
        &authed.session,
        &m,
        &to,
        &String::from_utf8_lossy(&report),
    ))
}

fn may_act(console: &Console, session: &Session) -> bool {
    session.role != Role::Recipient || console.config.recipients_may_release
}

async fn eml(
    State(console): State<Arc<Console>>,
    authed: Authed,
    Path(id): Path<String>,
) -> Response {
    let m = match visible_record(&console, &authed.session, &id).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let entry = match &m.stored_at {
        Some(q) => match console.store.quarantine_get(q).await {
            Ok(e) => e,
            Err(e) => return store_failed(e),
        },
        None => None,
    };
    match entry {
        Some(e) if !e.message.raw.is_empty() => {
            let name = format!("attachment; filename=\"{}.eml\"", e.message.id);
            (
                [
                    // Served as a download, never shown: the browser does not render it.
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_DISPOSITION, name),
                ],
                e.message.raw,
            )
                .into_response()
        }
        _ => not_found(),
    }
}

#[derive(Deserialize)]
struct ActForm {
    #[serde(default)]
    csrf: String,
    /// For a release: also allow the sender for `recipient`, `domain` or `everyone`.
    #[serde(default)]
    allow: String,
}

async fn release(
    State(console): State<Arc<Console>>,
    authed: Authed,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Response {
    let what = AllowKind::parse(&form.allow)
        .map(Act::Release)
        .map_err(forbidden);
    act_form(&console, &authed, &client, &headers, &id, &form, what).await
}

async fn delete(
    State(console): State<Arc<Console>>,
    authed: Authed,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Response {
    act_form(
        &console,
        &authed,
        &client,
        &headers,
        &id,
        &form,
        Ok(Act::Delete),
    )
    .await
}

async fn false_positive(
    State(console): State<Arc<Console>>,
    authed: Authed,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Response {
    let what = Ok(Act::FalsePositive);
    act_form(&console, &authed, &client, &headers, &id, &form, what).await
}

/// One message's action from the form on its page: the CSRF check first (a refused form is
/// refused whatever it asks), then the action, then back to the message's page.
async fn act_form(
    console: &Console,
    authed: &Authed,
    client: &Client,
    headers: &HeaderMap,
    id: &str,
    form: &ActForm,
    what: Result<Act, Response>,
) -> Response {
    if let Err(r) = check_post(headers, Some(&form.csrf), &authed.session.csrf) {
        return r;
    }
    let result = match what {
        Ok(what) => act(console, authed, client, id, what).await,
        Err(r) => Err(r),
    };
    match result {
        Ok(()) => Redirect::to(&format!("/message/{}", pages::enc(id))).into_response(),
        Err(r) => r,
    }
}

/// Most messages one bulk action takes (a page of the quarantine list at the most).
pub const BULK_MAX: usize = 500;

/// The quarantine list's bulk form: `id` repeated, `do` the action, `allow` its scope.
async fn bulk(
    State(console): State<Arc<Console>>,
    authed: Authed,
    client: Client,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if let Err(r) = check_post(&headers, Some(field("csrf")), &authed.session.csrf) {
        return r;
    }
    let what = match (field("do"), AllowKind::parse(field("allow"))) {
        ("release", Ok(allow)) => Act::Release(allow),
        ("delete", _) => Act::Delete,
        ("false_positive", _) => Act::FalsePositive,
        (_, Err(why)) => return forbidden(why),
        _ => return forbidden("Choose what to do with the selected messages."),
    };
    let ids: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n == "id")
        .map(|(_, v)| v.as_str())
        .take(BULK_MAX)
        .collect();
    let mut failed = 0usize;
    for id in &ids {
        if act(&console, &authed, &client, id, what).await.is_err() {
            failed += 1;
        }
    }
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .filter(|p| p.starts_with("/quarantine"))
        .unwrap_or("/quarantine")
        .to_string();
    if failed > 0 {
        return (
            StatusCode::CONFLICT,
            Html(
                pages::problem(
                    "Not every message was done",
                    &format!(
                        "{} of {} selected messages could not be acted on (no longer held, not \
                         yours, or the delivery failed); their pages say why.",
                        failed,
                        ids.len()
                    ),
                )
                .into_string(),
            ),
        )
            .into_response();
    }
    Redirect::to(&back).into_response()
}

/// The scope of "release and allow the sender".
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum AllowKind {
    Recipient,
    Domain,
    Everyone,
}

impl AllowKind {
    fn parse(s: &str) -> Result<Option<AllowKind>, &'static str> {
        match s.trim() {
            "" => Ok(None),
            "recipient" => Ok(Some(AllowKind::Recipient)),
            "domain" => Ok(Some(AllowKind::Domain)),
            "everyone" => Ok(Some(AllowKind::Everyone)),
            _ => Err("Allow the sender for the recipient, the domain or everyone."),
        }
    }

    /// Whether this role may allow a sender this widely: a recipient for their own address,
    /// a domain administrator for their domains, only an administrator for everyone.
    pub(crate) fn allowed_for(self, role: Role) -> bool {
        match self {
            AllowKind::Recipient => true,
            AllowKind::Domain => role != Role::Recipient,
            AllowKind::Everyone => role == Role::Administrator,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    Release(Option<AllowKind>),
    Delete,
    FalsePositive,
}

/// One action on one message, recorded with who did it. `Err`: the page to answer with.
async fn act(
    console: &Console,
    authed: &Authed,
    client: &Client,
    id: &str,
    what: Act,
) -> Result<(), Response> {
    let m = visible_record(console, &authed.session, id).await?;
    let who = &authed.session.name;
    if what == Act::FalsePositive {
        // Anyone who sees the message may say it was wrongly stopped; administrators read
        // these in the record of actions (with the reason codes that stopped it).
        let detail = format!("{} {}", m.action, m.reasons.join(" "));
        record(
            console,
            &action(who, "false_positive", Some(&m.id), client, Some(detail)),
        )
        .await;
        return Ok(());
    }
    if !may_act(console, &authed.session) {
        return Err(forbidden(
            "Ask an administrator to release or delete this message.",
        ));
    }
    if let Act::Release(Some(kind)) = what
        && !kind.allowed_for(authed.session.role)
    {
        return Err(forbidden(
            "Your account may not allow a sender that widely.",
        ));
    }
    let Some(qid) = m.stored_at.clone() else {
        return Err(not_found());
    };
    let (name, outcome) = match what {
        Act::Release(_) => {
            let r = crate::release::release(&console.store, &qid, who, &console.release_to).await;
            match r {
                Ok(to) => ("release", Ok(to)),
                Err(ReleaseError::Delivery(e)) => ("release_failed", Err(e)),
                Err(ReleaseError::Store(e)) => ("release_refused", Err(e.to_string())),
            }
        }
        Act::Delete | Act::FalsePositive => {
            match console.store.quarantine_delete(&qid, who).await {
                Ok(true) => ("delete", Ok(String::new())),
                Ok(false) => ("delete_refused", Err("it is no longer held".to_string())),
                Err(e) => ("delete_refused", Err(e.to_string())),
            }
        }
    };
    let detail = match &outcome {
        Ok(s) if !s.is_empty() => Some(s.clone()),
        Ok(_) => None,
        Err(e) => Some(e.clone()),
    };
    record(console, &action(who, name, Some(&qid), client, detail)).await;
    if outcome.is_err() {
        return Err(forbidden(
            "The message was not released or deleted; its page says why.",
        ));
    }
    if let Act::Release(Some(kind)) = what {
        allow_sender(console, authed, client, &m, kind).await?;
    }
    Ok(())
}

/// Puts the message's From address on the allow list for `kind`, within what the account
/// sees: a recipient for their own addresses among the message's recipients, a domain
/// administrator for their domains among them.
async fn allow_sender(
    console: &Console,
    authed: &Authed,
    client: &Client,
    m: &MessageRecord,
    kind: AllowKind,
) -> Result<(), Response> {
    use unspoof_store::console::{AllowScope, AllowedSender};
    let s = &authed.session;
    let Some(from) = m.from.as_deref().filter(|f| !f.trim().is_empty()) else {
        return Err(forbidden(
            "The message was released, but it has no From address to allow.",
        ));
    };
    let mine: Vec<String> = m
        .recipients
        .iter()
        .map(|r| r.trim().to_ascii_lowercase())
        .filter(|r| s.may_see(std::slice::from_ref(r)))
        .collect();
    let mut scopes: Vec<AllowScope> = match kind {
        AllowKind::Everyone => vec![AllowScope::Everyone],
        AllowKind::Recipient => mine.iter().cloned().map(AllowScope::Recipient).collect(),
        AllowKind::Domain => mine
            .iter()
            .filter_map(|r| unspoof_store::domain_of(r))
            .map(AllowScope::Domain)
            .collect(),
    };
    scopes.dedup();
    for scope in scopes {
        let entry = AllowedSender {
            id: new_id(),
            sender: from.to_string(),
            scope: scope.clone(),
            created_at: now(),
            created_by: s.name.clone(),
            origin: Some(m.id.clone()),
        };
        if let Err(e) = console.store.allow_put(&entry).await {
            return Err(store_failed(e));
        }
        let scope_words = match &scope {
            AllowScope::Recipient(a) => format!("for {a}"),
            AllowScope::Domain(d) => format!("for @{d}"),
            AllowScope::Everyone => "for everyone".to_string(),
        };
        record(
            console,
            &action(
                &s.name,
                "allow_sender",
                Some(&m.id),
                client,
                Some(format!("{from} {scope_words}")),
            ),
        )
        .await;
    }
    Ok(())
}

// The allow list: who allowed which sender for whom.

async fn allow_page(State(console): State<Arc<Console>>, authed: Authed) -> Response {
    if authed.session.role == Role::Recipient {
        return forbidden("The allow list is for administrators.");
    }
    match console.store.allow_list().await {
        Ok(list) => {
            let list: Vec<_> = list
                .into_iter()
                .filter(|a| allow_visible(&authed.session, a))
                .collect();
            html(pages::allow_list(&authed.session, &list))
        }
        Err(e) => store_failed(e),
    }
}

/// A domain administrator sees (and may remove) the entries for their domains and their
/// recipients; an administrator every entry.
fn allow_visible(s: &Session, a: &unspoof_store::console::AllowedSender) -> bool {
    use unspoof_store::console::AllowScope;
    match (&s.role, &a.scope) {
        (Role::Administrator, _) => true,
        (Role::DomainAdministrator, AllowScope::Domain(d)) => s.scope.contains(d),
        (Role::DomainAdministrator, AllowScope::Recipient(r)) => s.may_see(std::slice::from_ref(r)),
        _ => false,
    }
}

async fn allow_remove(
    State(console): State<Arc<Console>>,
    authed: Authed,
    client: Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Response {
    if let Err(r) = check_post(&headers, Some(&form.csrf), &authed.session.csrf) {
        return r;
    }
    let list = match console.store.allow_list().await {
        Ok(l) => l,
        Err(e) => return store_failed(e),
    };
    let Some(entry) = list
        .into_iter()
        .find(|a| a.id == id && allow_visible(&authed.session, a))
    else {
        return not_found();
    };
    if let Err(e) = console.store.allow_remove(&entry.id).await {
        return store_failed(e);
    }
    record(
        &console,
        &action(
            &authed.session.name,
            "allow_removed",
            Some(&entry.id),
            &client,
            Some(entry.sender.clone()),
        ),
    )
    .await;
    Redirect::to("/allow").into_response()
}

// Administrators: what was done through the console.

async fn actions(State(console): State<Arc<Console>>, authed: Authed) -> Response {
    if authed.session.role != Role::Administrator {
        return forbidden("Only administrators see the console's record of actions.");
    }
    match console.store.console_actions(None, 200).await {
        Ok(a) => html(pages::actions(&authed.session, &a)),
        Err(e) => store_failed(e),
    }
}

// DMARC sources: who sends as a domain, from the aggregate reports (`unspoof dmarc sources`).

/// Most days the DMARC page looks back.
const DMARC_MAX_DAYS: u32 = 90;

#[derive(Deserialize, Default)]
struct DmarcParams {
    #[serde(default)]
    domain: String,
    days: Option<u32>,
}

async fn dmarc(
    State(console): State<Arc<Console>>,
    authed: Authed,
    Query(p): Query<DmarcParams>,
) -> Response {
    let s = &authed.session;
    // A domain administrator reads its own domains' reports (and their subdomains': the
    // store's rows of a domain include them).
    let domain = match asked_domain(
        s,
        &p.domain,
        "The DMARC reports are for administrators of the domain.",
    ) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let days = p.days.unwrap_or(7).clamp(1, DMARC_MAX_DAYS);
    if domain.is_empty() {
        return html(pages::dmarc(s, &domain, days, None));
    }
    let until = now();
    let since = until - i64::from(days) * 86_400;
    let rows = match console.store.dmarc_rows(&domain, since, until).await {
        Ok(r) => r,
        Err(e) => return store_failed(e),
    };
    // No reverse DNS from a page view: `unspoof dmarc sources` names the addresses.
    let picture =
        unspoof_reports::sources::picture(&domain, since, until, &rows, &|_| None, &|day| {
            unspoof_store::format_time(day * 86_400)[..10].to_string()
        });
    html(pages::dmarc(s, &domain, days, Some(&picture)))
}

// A digest's release link: signed, expiring, no session needed.

#[derive(Deserialize, Default)]
struct DigestLink {
    #[serde(default)]
    m: String,
    #[serde(default)]
    r: String,
    #[serde(default)]
    e: i64,
    #[serde(default)]
    s: String,
}

/// The held message a valid link names, for the recipient it names.
async fn digest_target(console: &Console, l: &DigestLink) -> Result<MessageRecord, Response> {
    let key = crate::digest::key(&console.store.config().data_dir).map_err(store_failed)?;
    let rcpt = l.r.trim().to_ascii_lowercase();
    if !crate::digest::verify(&key, &l.m, &rcpt, l.e, &l.s, now()) {
        return Err(forbidden(
            "This release link is not valid or has expired. Ask for a new digest, or log in to the console.",
        ));
    }
    match console.store.message(&l.m).await {
        Ok(Some(m))
            if m.recipients
                .iter()
                .any(|x| x.trim().eq_ignore_ascii_case(&rcpt)) =>
        {
            Ok(m)
        }
        Ok(_) => Err(not_found()),
        Err(e) => Err(store_failed(e)),
    }
}

async fn digest_link(State(console): State<Arc<Console>>, Query(l): Query<DigestLink>) -> Response {
    match digest_target(&console, &l).await {
        Ok(m) => html(pages::digest_release(&m, &l.m, &l.r, l.e, &l.s, None)),
        Err(r) => r,
    }
}

async fn digest_release(
    State(console): State<Arc<Console>>,
    client: Client,
    headers: HeaderMap,
    Form(l): Form<DigestLink>,
) -> Response {
    // The signature is the form's token; the Origin must still be ours.
    if let Err(r) = check_post(&headers, Some("x"), "x") {
        return r;
    }
    let m = match digest_target(&console, &l).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if !console.config.recipients_may_release {
        return forbidden("Ask an administrator to release this message.");
    }
    let Some(qid) = m.stored_at.clone() else {
        return not_found();
    };
    let who = format!("digest:{}", l.r.trim().to_ascii_lowercase());
    let r = crate::release::release(&console.store, &qid, &who, &console.release_to).await;
    let (name, outcome) = match r {
        Ok(to) => ("release", Ok(to)),
        Err(ReleaseError::Delivery(e)) => ("release_failed", Err(e)),
        Err(ReleaseError::Store(e)) => ("release_refused", Err(e.to_string())),
    };
    let detail = match &outcome {
        Ok(s) | Err(s) => Some(s.clone()),
    };
    record(&console, &action(&who, name, Some(&qid), &client, detail)).await;
    let said = match outcome {
        Ok(_) => "Released: the message is on its way to your mailbox.".to_string(),
        Err(e) => format!("Not released: {e}"),
    };
    html(pages::digest_release(
        &m,
        &l.m,
        &l.r,
        l.e,
        &l.s,
        Some(&said),
    ))
}

/// The domain a domain page was asked for, in lower case without a trailing dot, or the
/// refusal: a recipient sees no domain page (`for_recipient` says why), a domain administrator
/// only its own domains ("" asks for the page's form).
fn asked_domain(s: &Session, asked: &str, for_recipient: &str) -> Result<String, Response> {
    if s.role == Role::Recipient {
        return Err(forbidden(for_recipient));
    }
    let domain = asked.trim().trim_end_matches('.').to_ascii_lowercase();
    if s.role == Role::DomainAdministrator && !domain.is_empty() && !s.scope.contains(&domain) {
        return Err(forbidden("That domain is not one of yours."));
    }
    Ok(domain)
}

// The domain audit (`unspoof audit`), run when asked for one domain.

async fn audit(
    State(console): State<Arc<Console>>,
    authed: Authed,
    Query(p): Query<DmarcParams>,
) -> Response {
    let s = &authed.session;
    let domain = match asked_domain(
        s,
        &p.domain,
        "The domain audit is for administrators of the domain.",
    ) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    if domain.is_empty() {
        return html(pages::audit(s, &domain, None));
    }
    let Some(d) = unspoof_audit::dns::normalise(&domain) else {
        return html(pages::audit(s, &domain, None));
    };
    let report = unspoof_audit::audit(console.engine.dns(), &d, &console.audit_options()).await;
    html(pages::audit(s, &d, Some(&report)))
}
