//! Who is logged in: password checks (argon2 PHC strings, as `unspoof hash-password` makes
//! them), sessions (a random token in an HttpOnly SameSite=Strict cookie; the store keeps
//! its SHA-256), the CSRF token of each session, and the login throttle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand_core::RngCore;
use unspoof_store::console::{ConsoleAccount, StoredSession};
use unspoof_store::{Store, StoreError};

/// What an account may see and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Administrator,
    /// Mail to its domains.
    DomainAdministrator,
    /// Mail to its own addresses.
    Recipient,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "administrator" => Role::Administrator,
            "domain_administrator" => Role::DomainAdministrator,
            "recipient" => Role::Recipient,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::DomainAdministrator => "domain_administrator",
            Role::Recipient => "recipient",
        }
    }
}

/// A logged-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub role: Role,
    /// Domains (domain administrator) or addresses (recipient), lower case.
    pub scope: Vec<String>,
    /// Sent back in every form that changes something.
    pub csrf: String,
}

impl Session {
    /// The store's `Query::visible_to` for this account: empty for an administrator (all
    /// mail), `@domain` words for a domain administrator, addresses for a recipient.
    pub fn visible_to(&self) -> Vec<String> {
        match self.role {
            Role::Administrator => Vec::new(),
            Role::DomainAdministrator => self.scope.iter().map(|d| format!("@{d}")).collect(),
            Role::Recipient => self.scope.clone(),
        }
    }

    /// May this account see a message to these recipients?
    pub fn may_see(&self, recipients: &[String]) -> bool {
        match self.role {
            Role::Administrator => true,
            Role::DomainAdministrator => recipients
                .iter()
                .any(|r| unspoof_store::domain_of(r).is_some_and(|d| self.scope.contains(&d))),
            Role::Recipient => recipients
                .iter()
                .any(|r| self.scope.iter().any(|s| s.eq_ignore_ascii_case(r.trim()))),
        }
    }
}

/// 32 random bytes, base64url: session tokens and CSRF tokens.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    data_encoding::BASE64URL_NOPAD.encode(&b)
}

/// Equal without telling, by its timing, how much of a guess was right.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a password against an account (`None`: no such account, or disabled). Unknown
/// names cost the same argon2 work as known ones, so timing does not tell which exist.
/// Blocking (argon2 is deliberately slow): call it on a blocking thread.
pub fn check_password(account: Option<&ConsoleAccount>, password: &str) -> bool {
    let hash = account
        .filter(|a| !a.disabled)
        .map(|a| a.password_hash.as_str());
    match hash.and_then(|h| PasswordHash::new(h).ok()) {
        Some(h) => {
            // The parameters are the hash's own (a cheap test hash verifies cheaply).
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        }
        None => {
            if let Ok(salt) = SaltString::from_b64("dW5zcG9vZmNvbnNvbGU") {
                let _ = Argon2::default().hash_password(password.as_bytes(), &salt);
            }
            false
        }
    }
}

/// How long sessions last and how many failed logins are tolerated. Each has a default in
/// [`crate::ConsoleConfig`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub session_idle: Duration,
    pub session_max: Duration,
    pub login_failures: u32,
    pub login_window: Duration,
}

/// Sessions (kept in the store, by the SHA-256 of their token: a restart of the console does
/// not log anyone out, and a copy of the database logs no one in) and the login throttle (in
/// this process's memory).
pub struct Sessions {
    limits: Limits,
    /// Failed logins per client address and per account name: (count, first failure).
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// How stale a session's last-seen time may get before a request writes it again (so a page
/// view is not a database write).
const SEEN_GRANULARITY_SECS: i64 = 60;

/// The store's key of a session token.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(token.as_bytes()))
}

impl Sessions {
    pub fn new(limits: Limits) -> Self {
        Sessions {
            limits,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session; returns its token (the cookie's value).
    pub async fn start(
        &self,
        store: &Store,
        account: &ConsoleAccount,
        role: Role,
    ) -> Result<String, StoreError> {
        let token = random_token();
        let now = unspoof_store::now();
        // Expired sessions go when a new one starts.
        let (idle, max) = self.limit_secs();
        store.console_sessions_prune(now - max, now - idle).await?;
        store
            .console_session_put(&StoredSession {
                token_hash: token_hash(&token),
                name: account.name.clone(),
                role: role.as_str().to_string(),
                csrf: random_token(),
                started_at: now,
                seen_at: now,
            })
            .await?;
        Ok(token)
    }

    fn limit_secs(&self) -> (i64, i64) {
        (
            self.limits.session_idle.as_secs() as i64,
            self.limits.session_max.as_secs() as i64,
        )
    }

    /// The live session of this token (its account's scope still to be filled in by the
    /// caller), its idle clock restarted.
    pub async fn get(&self, store: &Store, token: &str) -> Result<Option<Session>, StoreError> {
        let key = token_hash(token);
        let Some(s) = store.console_session(&key).await? else {
            return Ok(None);
        };
        let now = unspoof_store::now();
        let (idle, max) = self.limit_secs();
        if now - s.seen_at >= idle || now - s.started_at >= max {
            store.console_session_end(&key).await?;
            return Ok(None);
        }
        let Some(role) = Role::parse(&s.role) else {
            return Ok(None);
        };
        if now - s.seen_at >= SEEN_GRANULARITY_SECS {
            store.console_session_seen(&key, now).await?;
        }
        Ok(Some(Session {
            name: s.name,
            role,
            scope: Vec::new(),
            csrf: s.csrf,
        }))
    }

    pub async fn end(&self, store: &Store, token: &str) -> Result<(), StoreError> {
        store.console_session_end(&token_hash(token)).await
    }

    /// Whether a login for these keys (the client address, the account name) is refused for
    /// now: one of them failed `login_failures` times within `login_window`.
    pub fn throttled(&self, keys: &[String]) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        f.retain(|_, (_, first)| now.duration_since(*first) < self.limits.login_window);
        keys.iter().any(|k| {
            f.get(k)
                .is_some_and(|(n, _)| *n >= self.limits.login_failures)
        })
    }

    pub fn failed(&self, keys: &[String]) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for k in keys {
            let e = f.entry(k.clone()).or_insert((0, now));
            e.0 += 1;
        }
    }

    /// A successful login clears the name's failures (not the address's: an attacker with one
    /// account must not reset the counter of the address it guesses others' passwords from).
    pub fn succeeded(&self, name_key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(role: Role, scope: &[&str]) -> Session {
        Session {
            name: "x".into(),
            role,
            scope: scope.iter().map(|s| s.to_string()).collect(),
            csrf: String::new(),
        }
    }

    #[test]
    fn scopes_decide_who_sees_what() {
        let to = |s: &str| vec![s.to_string()];
        let ann = session(Role::Recipient, &["ann@site.test"]);
        assert!(ann.may_see(&to("Ann@Site.Test")));
        assert!(!ann.may_see(&to("bob@site.test")));
        assert_eq!(ann.visible_to(), to("ann@site.test"));
        let dom = session(Role::DomainAdministrator, &["site.test"]);
        assert!(dom.may_see(&to("bob@SITE.test")));
        assert!(!dom.may_see(&to("bob@site.test.evil")));
        assert_eq!(dom.visible_to(), to("@site.test"));
        let admin = session(Role::Administrator, &[]);
        assert!(admin.may_see(&to("anyone@anywhere.test")));
        assert!(admin.visible_to().is_empty());
    }

    #[test]
    fn tokens_compare_whole() {
        let t = random_token();
        assert_eq!(t.len(), 43);
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t, &t[..42]));
        assert!(!same_token(&t, &random_token()));
    }

    #[test]
    fn throttle_counts_per_key_within_the_window() {
        let s = Sessions::new(Limits {
            session_idle: Duration::from_secs(60),
            session_max: Duration::from_secs(60),
            login_failures: 3,
            login_window: Duration::from_secs(60),
        });
        let keys = vec!["ip:192.0.2.1".to_string(), "name:ann".to_string()];
        for _ in 0..3 {
            assert!(!s.throttled(&keys));
            s.failed(&keys);
        }
        assert!(s.throttled(&keys));
        assert!(s.throttled(&["ip:192.0.2.1".into(), "name:bob".into()]));
        assert!(!s.throttled(&["ip:192.0.2.2".into(), "name:bob".into()]));
    }
}
