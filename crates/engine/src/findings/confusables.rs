//! Confusable characters, for names and domains: thin wrappers over the Unicode data of the
//! `unicode-security` (UTS #39) and `unicode-normalization` crates. No table here is written by
//! hand: what looks like what is Unicode's `confusables.txt`, compiled into unicode-security.

use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};
use unicode_security::{MixedScript, RestrictionLevel, RestrictionLevelDetection};

/// The UTS #39 skeleton of `s` (section 4): NFD, default-ignorable code points dropped, each
/// character replaced by its confusable prototype, NFD again. Two strings with equal skeletons
/// are visually confusable ("pаypal" with a Cyrillic а, "paypa1", "rnicrosoft").
pub fn skeleton(s: &str) -> String {
    unicode_security::skeleton(s).collect()
}

/// A case-insensitive, accent-insensitive skeleton: NFKD, combining marks dropped, lower case,
/// skeleton, lower case again. "Jöe", "JOE" and "Jоe" (Cyrillic о) all fold to "joe".
///
/// TR39 skeletons are case-sensitive on purpose (capital I looks like small l, small i does
/// not); [`visual_fold`] keeps that distinction for callers that need it.
pub fn fold(s: &str) -> String {
    let base = strip_marks(s).to_lowercase();
    strip_marks(&skeleton(&base)).to_lowercase()
}

/// The skeleton of `s` as written (capital I and small l are the same), then lower case:
/// catches "PaypaI" (capital I) for "Paypal", which [`fold`] lower-cases away before looking.
pub fn visual_fold(s: &str) -> String {
    let base = strip_marks(s);
    strip_marks(&skeleton(&base)).to_lowercase()
}

/// NFKD with every combining mark removed: "Müller" -> "Muller", "ﬁ" -> "fi".
pub fn strip_marks(s: &str) -> String {
    s.nfkd().filter(|c| !is_combining_mark(*c)).collect()
}

/// Whether `c` disappears in a skeleton (a default-ignorable code point such as a zero-width
/// space or a soft hyphen), so that a reader never sees it.
pub fn is_invisible(c: char) -> bool {
    let mut buf = [0u8; 4];
    unicode_security::skeleton(c.encode_utf8(&mut buf))
        .next()
        .is_none()
}

/// Whether a domain label (Unicode form) mixes scripts beyond what UTS #39 calls "highly
/// restrictive" (section 5.2): Latin with Cyrillic or Greek, or any mix a registry would refuse.
/// Latin + Han + Kana (Japanese) and Latin + Hangul are highly restrictive and pass; pure ASCII
/// and single-script labels pass.
pub fn is_mixed_script(label: &str) -> bool {
    if label.is_ascii() {
        return false;
    }
    if label.is_single_script() {
        return false;
    }
    label.detect_restriction_level() > RestrictionLevel::HighlyRestrictive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds() {
        assert_eq!(fold("PAYPAL"), fold("p\u{430}ypal")); // Cyrillic а
        assert_eq!(fold("Jöe"), "joe");
        assert_eq!(fold("paypa1"), fold("paypal"));
        assert_eq!(fold("rnicrosoft"), fold("microsoft"));
        assert_eq!(visual_fold("PaypaI"), visual_fold("Paypal"));
        assert_ne!(fold("ivan"), fold("lvan"));
        assert!(is_invisible('\u{200b}'));
        assert!(!is_invisible('a'));
    }

    #[test]
    fn mixed_scripts() {
        assert!(is_mixed_script("p\u{430}ypal"));
        assert!(!is_mixed_script("paypal"));
        assert!(!is_mixed_script("пример"));
        assert!(!is_mixed_script("münchen"));
        assert!(!is_mixed_script("東京ストア"));
    }
}
