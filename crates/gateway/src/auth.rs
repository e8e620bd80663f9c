//! Submission authentication (RFC 4954, SASL PLAIN RFC 4616, LOGIN) and the login-to-sender
//! binding: an authenticated user may send only as the addresses configured for it, in MAIL
//! FROM and in the header From and Sender.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use data_encoding::BASE64;

use crate::config::UserConfig;

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

#[cfg(test)]
mod tests {
    use super::*;

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
