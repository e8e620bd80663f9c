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
    // idna's own fast path for lower-case names is cheaper here than `to_ascii`'s scan.
    let ascii = idna::domain_to_ascii(name).ok()?;
    let domain = psl::domain(ascii.as_bytes())?;
    // An unlisted TLD is its own public suffix (the PSL's implicit "*" rule).
    let out = std::str::from_utf8(domain.as_bytes()).ok()?.to_string();
    Some(out)
}

/// Whether `name` is plain ASCII without an A-label (a label starting `xn--`, in any case):
/// then IDNA (UTS #46, as the `idna` crate's `domain_to_ascii` and `domain_to_unicode` run it:
/// no ASCII deny list, hyphens allowed) has nothing to do but lower-case it. UTS #46 maps no
/// ASCII character but the capitals, refuses none without a deny list, and a name without
/// right-to-left characters has no bidi rule to break; only an A-label is decoded and checked.
/// The test `plain_ascii_names_are_what_idna_makes_of_them` holds this against the crate.
pub(crate) fn plain_ascii(name: &str) -> bool {
    name.is_ascii()
        && !name
            .split('.')
            .any(|l| l.len() >= 4 && l.as_bytes()[..4].eq_ignore_ascii_case(b"xn--"))
}

/// IDNA ToASCII of `name` (`idna::domain_to_ascii`), `None` when it fails; a [`plain_ascii`]
/// name is only lower-cased, without the IDNA machinery (most names are).
pub(crate) fn to_ascii(name: &str) -> Option<String> {
    if plain_ascii(name) {
        Some(name.to_ascii_lowercase())
    } else {
        idna::domain_to_ascii(name).ok()
    }
}

/// IDNA ToUnicode of `name` (`idna::domain_to_unicode`), then lower case; `name` itself in
/// lower case when the conversion has errors. A [`plain_ascii`] name is only lower-cased.
pub(crate) fn to_unicode_lower(name: &str) -> String {
    if plain_ascii(name) {
        return name.to_ascii_lowercase();
    }
    let (u, result) = idna::domain_to_unicode(name);
    if result.is_ok() {
        u.to_lowercase()
    } else {
        name.to_lowercase()
    }
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
    fn plain_ascii_names_are_what_idna_makes_of_them() {
        let mut names: Vec<String> = [
            "example.com",
            "WwW.Example.COM",
            "a..b",
            ".x.",
            "",
            ".",
            "1und1.de",
            "_dmarc.example.com",
            "ab--cd.example",
            "-lead.trail-.example",
            "XN--80ak6aa92e.com",
            "xn--80ak6aa92e.com",
            "Xn--bad.example",
            "xn--.example",
            "xn--a",
            "a b.example",
            "a/b:c@d.example",
            "sub.xN--p1ai",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every ASCII character alone, inside a label and around dots.
        for b in 0u8..128 {
            let c = b as char;
            names.push(format!("{c}"));
            names.push(format!("a{c}b.example"));
            names.push(format!("{c}.{c}x.com"));
        }
        for name in &names {
            if !plain_ascii(name) {
                continue;
            }
            assert_eq!(
                to_ascii(name),
                idna::domain_to_ascii(name).ok(),
                "ToASCII of {name:?}"
            );
            let (u, result) = idna::domain_to_unicode(name);
            let expected = if result.is_ok() {
                u.to_lowercase()
            } else {
                name.to_lowercase()
            };
            assert_eq!(to_unicode_lower(name), expected, "ToUnicode of {name:?}");
        }
        assert!(!plain_ascii("XN--80ak6aa92e.com"));
        assert!(!plain_ascii("münchen.de"));
    }

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
