//! Domain names: registrable ("organisational") domains from the Public Suffix List.
//!
//! DMARC itself (RFC 9989) finds the organisational domain with a DNS tree walk, which
//! mail-auth does. The PSL is still what a person means by "the same organisation" when we
//! compare a Message-ID domain with a From domain, or a lookalike with a protected domain, and
//! it needs no DNS, so it keeps those checks offline. The list is compiled into the `psl` crate.

/// The registrable domain of `name` (lower case, no trailing dot), or `None` for a public
/// suffix, an empty name or a name with an empty label. IDNs are compared in A-label form.
pub fn registrable(name: &str) -> Option<String> {
    let name = name.trim().strip_suffix('.').unwrap_or(name.trim());
    if name.is_empty() || name.starts_with('.') || name.split('.').any(str::is_empty) {
        return None;
    }
    let ascii = idna::domain_to_ascii(name).ok()?;
    let domain = psl::domain(ascii.as_bytes())?;
    // An unlisted TLD is its own public suffix (the PSL's implicit "*" rule).
    let out = std::str::from_utf8(domain.as_bytes()).ok()?.to_string();
    Some(out)
}

/// Whether two names belong to the same registrable domain.
pub fn same_organisation(a: &str, b: &str) -> bool {
    match (registrable(a), registrable(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_domains() {
        assert_eq!(
            registrable("WwW.Example.COM").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            registrable("a.b.example.co.uk").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(registrable("com"), None);
        assert_eq!(registrable(".example.com"), None);
        assert!(same_organisation("mail.example.com", "example.com"));
        assert!(!same_organisation("example.com", "example.net"));
    }
}
