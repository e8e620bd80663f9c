//! Submission authentication (RFC 4954, SASL PLAIN RFC 4616, LOGIN) and the login-to-sender
//! binding: an authenticated user may send only as the addresses configured for it, in MAIL
//! FROM and in the header From and Sender.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use data_encoding::BASE64;

use crate::config::{Limits, UserConfig};

/// Hashes `password` with Argon2id and default parameters, as a PHC string for
/// `[[gateway.users]] password_hash`.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Checks a login. Constant work for unknown users too (a dummy hash is verified), so timing
/// does not tell which user names exist.
pub fn verify(users: &[UserConfig], name: &str, password: &str) -> Option<String> {
    let Some(user) = users.iter().find(|u| u.name == name) else {
        // Same work as a real check with default parameters, then refuse.
        if let Ok(salt) = SaltString::from_b64("dW5zcG9vZnVuc3Bvb2Y") {
            let _ = Argon2::default().hash_password(password.as_bytes(), &salt);
        }
        return None;
    };
    let ok = PasswordHash::new(&user.password_hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    ok.then(|| user.name.clone())
}

/// Decodes a SASL PLAIN response (`authzid NUL authcid NUL passwd`, RFC 4616 2). An authzid
/// other than empty or the authcid is refused: nobody logs in as someone else.
pub fn decode_plain(b64: &str) -> Option<(String, String)> {
    let raw = BASE64.decode(b64.trim().as_bytes()).ok()?;
    let mut parts = raw.split(|&b| b == 0);
    let authz = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let pass = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || user.is_empty() {
        return None;
    }
    if !authz.is_empty() && authz != user.as_bytes() {
        return None;
    }
    Some((user.to_string(), pass.to_string()))
}

/// Decodes one base64 line of AUTH LOGIN.
pub fn decode_b64_text(b64: &str) -> Option<String> {
    let raw = BASE64.decode(b64.trim().as_bytes()).ok()?;
    String::from_utf8(raw).ok()
}

/// May `user` send as `address`? Matches an exact address (case-insensitive) or `@domain`.
pub fn owns(users: &[UserConfig], user: &str, address: &str) -> bool {
    let Some(u) = users.iter().find(|u| u.name == user) else {
        return false;
    };
    let address = address.trim();
    let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    u.addresses.iter().any(|a| {
        if let Some(d) = a.strip_prefix('@') {
            !domain.is_empty() && d.eq_ignore_ascii_case(domain)
        } else {
            a.eq_ignore_ascii_case(address)
        }
    })
}

/// Failed logins are remembered for at most this many client networks and as many account
/// names; beyond that, new ones are not tracked until old ones are forgotten (the delays and
/// lockouts of those already tracked go on). Bounds the memory an attacker can make us use.
pub const MAX_TRACKED: usize = 100_000;

/// AUTH failures per client network and per account: growing delays, then a lockout
/// (`auth_failure_*`, `auth_failures_per_*`, `auth_lockout` in [`Limits`]).
pub struct AuthThrottle {
    delay: Duration,
    delay_max: Duration,
    per_ip: u32,
    per_account: u32,
    window: Duration,
    lockout: Duration,
    ips: Mutex<HashMap<IpAddr, Failures>>,
    accounts: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// The key of a client: its IPv4 address, or the /64 of an IPv6 address (one site's hosts;
/// an attacker gets a whole /64 as easily as one address).
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

/// Account names are tracked by at most this many bytes of them.
const MAX_NAME: usize = 256;

fn account_key(name: &str) -> String {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

impl AuthThrottle {
    pub fn new(limits: &Limits) -> Self {
        AuthThrottle {
            delay: Duration::from_millis(limits.auth_failure_delay_ms),
            delay_max: Duration::from_millis(limits.auth_failure_delay_max_ms),
            per_ip: limits.auth_failures_per_ip,
            per_account: limits.auth_failures_per_account,
            window: Duration::from_secs(limits.auth_failure_window),
            lockout: Duration::from_secs(limits.auth_lockout),
            ips: Mutex::new(HashMap::new()),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Is the client's network locked out now? (Asked before anything is checked.)
    pub fn ip_locked(&self, ip: IpAddr) -> bool {
        locked(&self.ips, &network_of(ip), Instant::now())
    }

    /// Is the account locked out now? (Asked before its password is checked.)
    pub fn account_locked(&self, name: &str) -> bool {
        locked(&self.accounts, &account_key(name), Instant::now())
    }

    /// Records a failed AUTH from `ip` for `account` (if one was named) and returns how long
    /// to hold back the reply: `auth_failure_delay_ms` doubled for each earlier failure of the
    /// network or the account (whichever has more), at most `auth_failure_delay_max_ms`.
    pub fn failed(&self, ip: IpAddr, account: Option<&str>) -> Duration {
        let now = Instant::now();
        let net = network_of(ip);
        let (n_ip, locked) = record(&self.ips, net, now, self.window, self.per_ip, self.lockout);
        if locked {
            // Rare and worth an operator's attention (a guessing attack, or a user's device
            // with an old password).
            eprintln!(
                "unspoof: AUTH locked out for {} s: client network {net} ({n_ip} failures)",
                self.lockout.as_secs()
            );
        }
        let n_account = account.map_or(0, |a| {
            let (n, locked) = record(
                &self.accounts,
                account_key(a),
                now,
                self.window,
                self.per_account,
                self.lockout,
            );
            if locked {
                eprintln!(
                    "unspoof: AUTH locked out for {} s: account {:?} ({n} failures, the last from {ip})",
                    self.lockout.as_secs(),
                    account_key(a)
                );
            }
            n
        });
        let n = n_ip.max(n_account).max(1);
        let factor = 1u32.checked_shl(n - 1).unwrap_or(u32::MAX);
        self.delay.saturating_mul(factor).min(self.delay_max)
    }

    /// A successful login forgets the account's failures (not the network's: a guesser with
    /// an account of its own must not reset its count by logging in to it).
    pub fn succeeded(&self, account: &str) {
        let mut m = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&account_key(account));
    }
}

fn locked<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Failures>>,
    key: &K,
    now: Instant,
) -> bool {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = m.get(key) else {
        return false;
    };
    match f.locked_until {
        Some(until) if until > now => true,
        // The lockout is over: start again from nothing.
        Some(_) => {
            m.remove(key);
            false
        }
        None => false,
    }
}

/// Counts one failure for `key`; returns its count within the window, and whether this one
/// locked the key out (reaching `max` locks it for `lockout`).
fn record<K: std::hash::Hash + Eq>(
    map: &Mutex<HashMap<K, Failures>>,
    key: K,
    now: Instant,
    window: Duration,
    max: u32,
    lockout: Duration,
) -> (u32, bool) {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() >= MAX_TRACKED && !m.contains_key(&key) {
        m.retain(|_, f| {
            f.locked_until.is_some_and(|u| u > now) || now.duration_since(f.last) <= window
        });
        if m.len() >= MAX_TRACKED {
            return (1, false);
        }
    }
    let f = m.entry(key).or_insert(Failures {
        count: 0,
        last: now,
        locked_until: None,
    });
    if now.duration_since(f.last) > window && f.locked_until.is_none() {
        f.count = 0;
    }
    f.count = f.count.saturating_add(1);
    f.last = now;
    let locks = f.count >= max && f.locked_until.is_none();
    if locks {
        f.locked_until = Some(now + lockout);
    }
    (f.count, locks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_the_network_is_locked_out() {
        let limits = Limits {
            auth_failure_delay_ms: 100,
            auth_failure_delay_max_ms: 350,
            auth_failures_per_ip: 4,
            auth_failures_per_account: 100,
            ..Limits::default()
        };
        let t = AuthThrottle::new(&limits);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same_net: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let ms = |d: Duration| d.as_millis();
        assert!(!t.ip_locked(ip));
        assert_eq!(ms(t.failed(ip, Some("a"))), 100);
        assert_eq!(ms(t.failed(same_net, Some("b"))), 200);
        assert_eq!(ms(t.failed(ip, None)), 350);
        assert!(!t.ip_locked(ip));
        t.failed(ip, Some("c"));
        assert!(t.ip_locked(same_net));
        assert!(!t.ip_locked("2001:db8:1::1".parse().unwrap()));
        assert!(!t.account_locked("a"));
    }

    #[test]
    fn an_account_is_locked_from_everywhere_and_success_forgets_it() {
        let limits = Limits {
            auth_failure_delay_ms: 10,
            auth_failures_per_ip: 100,
            auth_failures_per_account: 2,
            ..Limits::default()
        };
        let t = AuthThrottle::new(&limits);
        t.failed("192.0.2.1".parse().unwrap(), Some("alice"));
        t.succeeded("alice");
        t.failed("192.0.2.1".parse().unwrap(), Some("alice"));
        assert!(!t.account_locked("alice"));
        t.failed("198.51.100.1".parse().unwrap(), Some("alice"));
        assert!(t.account_locked("alice"));
        assert!(!t.account_locked("bob"));
        assert!(!t.ip_locked("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn a_lockout_ends() {
        let limits = Limits {
            auth_failures_per_ip: 1,
            auth_lockout: 0,
            ..Limits::default()
        };
        let t = AuthThrottle::new(&limits);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        t.failed(ip, None);
        assert!(!t.ip_locked(ip), "a lockout of 0 s is over at once");
    }

    fn users() -> Vec<UserConfig> {
        // Cheap parameters: the debug build's Argon2 is slow.
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let a2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut rand_core::OsRng);
        let hash = a2.hash_password(b"s3cret", &salt).unwrap().to_string();
        vec![UserConfig {
            name: "alice".into(),
            password_hash: hash,
            addresses: vec!["alice@example.org".into(), "@alice.example".into()],
        }]
    }

    #[test]
    fn verify_accepts_only_the_right_password() {
        let u = users();
        assert_eq!(verify(&u, "alice", "s3cret").as_deref(), Some("alice"));
        assert_eq!(verify(&u, "alice", "wrong"), None);
        assert_eq!(verify(&u, "bob", "s3cret"), None);
    }

    #[test]
    fn plain_refuses_acting_as_someone_else() {
        let enc = |s: &[u8]| BASE64.encode(s);
        assert_eq!(
            decode_plain(&enc(b"\0alice\0pw")),
            Some(("alice".into(), "pw".into()))
        );
        assert_eq!(
            decode_plain(&enc(b"alice\0alice\0pw")),
            Some(("alice".into(), "pw".into()))
        );
        assert_eq!(decode_plain(&enc(b"bob\0alice\0pw")), None);
        assert_eq!(decode_plain("!!"), None);
    }

    #[test]
    fn ownership_is_exact_or_whole_domain() {
        let u = users();
        assert!(owns(&u, "alice", "Alice@Example.org"));
        assert!(owns(&u, "alice", "anything@alice.example"));
        assert!(!owns(&u, "alice", "bob@example.org"));
        assert!(!owns(&u, "alice", "alice@example.org.evil"));
        assert!(!owns(&u, "bob", "alice@example.org"));
    }
}
