//! Person names as a reader sees them, for display-name impersonation.
//!
//! A name becomes a set of tokens:
//! 1. NFKD with combining marks dropped ("Müller" = "Muller", fullwidth letters = ASCII);
//!    invisible characters (zero-width space, soft hyphen: anything the UTS #39 skeleton drops)
//!    removed;
//! 2. split on everything that is not a letter or digit (spaces, commas, dots, hyphens,
//!    brackets, symbols such as ™); apostrophes join ("O'Brien" = "OBrien");
//! 3. each token compared by two keys, [`fold`] (lower case, then skeleton: "JOE" = "jоe" with a
//!    Cyrillic о) and [`visual_fold`] (skeleton as written, then lower case: "PaypaI" with a
//!    capital I = "Paypal"); two tokens are the same when either key agrees;
//! 4. a run of single letters joined into one word ("C o i n b a s e", "P.A.Y.P.A.L"); a lone
//!    single letter (a middle initial, "Suzie Q. Public") dropped; titles and suffixes
//!    ([`TITLES`]: Dr, Mr, Prof, CEO, Jr, III, PhD, ...) dropped;
//! 5. duplicates dropped.
//!
//! Order does not count, so "SixPack, Joe" is "Joe SixPack". See [`compare`] for the rule.

use std::{collections::HashSet, sync::LazyLock};

use unicode_normalization::char::is_combining_mark;

use super::confusables::{fold, is_invisible, strip_marks, visual_fold};

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{2bc}' | '`')
}

/// Only this many characters of a name are read: a reader sees the start of a long display
/// name, and the cost of comparing stays bounded on crafted input.
pub const MAX_NAME_CHARS: usize = 256;

/// Honorifics, job titles and generational or degree suffixes that say nothing about who the
/// person is; compared in [`fold`] form (both sides folded).
pub const TITLES: &[&str] = &[
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "prof",
    "professor",
    "sir",
    "dame",
    "rev",
    "fr",
    "hon",
    "ceo",
    "cfo",
    "coo",
    "cto",
    "cio",
    "ciso",
    "cmo",
    "chro",
    "president",
    "vp",
    "chairman",
    "chair",
    "director",
    "jr",
    "sr",
    "junior",
    "senior",
    "ii",
    "iii",
    "iv",
    "phd",
    "md",
    "esq",
    "mba",
    "cpa",
];

/// Words that turn a name into a department or a role without pointing anywhere else
/// ("Microsoft account team", "PayPal Service", "Support Netflix"). A display name that is a
/// protected name plus only these words is the protected name; a display name with any other
/// extra word ("Joe SixPack via LinkedIn") is only a partial match. Compared in [`fold`] form.
pub const ROLE_WORDS: &[&str] = &[
    "team",
    "support",
    "service",
    "services",
    "customer",
    "customers",
    "care",
    "client",
    "account",
    "accounts",
    "security",
    "secure",
    "safety",
    "privacy",
    "billing",
    "payment",
    "payments",
    "invoice",
    "invoices",
    "notification",
    "notifications",
    "notice",
    "alert",
    "alerts",
    "help",
    "helpdesk",
    "desk",
    "department",
    "dept",
    "center",
    "centre",
    "official",
    "online",
    "noreply",
    "no",
    "reply",
    "do",
    "not",
    "info",
    "information",
    "admin",
    "administrator",
    "administration",
    "it",
    "office",
    "mail",
    "email",
    "message",
    "messages",
    "update",
    "updates",
    "verification",
    "verify",
    "member",
    "members",
    "inc",
    "ltd",
    "llc",
    "corp",
    "corporation",
    "company",
    "co",
    "group",
    "bank",
    "banking",
    "app",
    "assistant",
    "the",
    "from",
    "of",
    "and",
    "at",
    "com",
    "net",
    "org",
    "system",
    "systems",
    "server",
    "webmail",
    "helpline",
    "hr",
    "payroll",
    "finance",
    "legal",
    "compliance",
    "fraud",
    "prevention",
    "staff",
    "headquarters",
    "hq",
    "operations",
    "ops",
    "sales",
    "contact",
];

/// [`TITLES`] and [`ROLE_WORDS`] in [`fold`] form ("mr" folds to "rnr": UTS #39 maps m to rn).
static FOLDED_TITLES: LazyLock<HashSet<String>> =
    LazyLock::new(|| TITLES.iter().map(|w| fold(w)).collect());
static FOLDED_ROLE_WORDS: LazyLock<HashSet<String>> =
    LazyLock::new(|| ROLE_WORDS.iter().map(|w| fold(w)).collect());

/// One token of a name, in its two comparison keys.
#[derive(Debug, Clone)]
pub struct Token {
    folded: String,
    visual: String,
}

impl Token {
    fn new(raw: &str) -> Self {
        Token {
            folded: fold(raw),
            visual: visual_fold(raw),
        }
    }

    /// Whether a reader would take the two tokens for the same word.
    pub fn same(&self, other: &Token) -> bool {
        self.folded == other.folded || self.visual == other.visual
    }

    fn is_title(&self) -> bool {
        FOLDED_TITLES.contains(&self.folded)
    }

    /// A role word, or a number ("DocuSign 93978"): words that add no one else's name.
    fn is_filler(&self) -> bool {
        self.folded.chars().all(|c| c.is_numeric()) || FOLDED_ROLE_WORDS.contains(&self.folded)
    }
}

/// A normalised name: its significant tokens in written order.
#[derive(Debug, Clone)]
pub struct Name {
    tokens: Vec<Token>,
}

impl Name {
    pub fn parse(name: &str) -> Self {
        let name = match name.char_indices().nth(MAX_NAME_CHARS) {
            Some((cut, _)) => &name[..cut],
            None => name,
        };
        // Split on what is not a letter or digit as written (so "Mcafee™" is one word, not
        // "McafeeTM"), then NFKD each piece and split again (a compatibility form may hold
        // punctuation).
        let mut pieces: Vec<String> = Vec::new();
        let mut current = String::new();
        for c in name.chars() {
            if is_invisible(c) || is_combining_mark(c) || is_apostrophe(c) {
                continue;
            }
            if c.is_alphanumeric() {
                current.push(c);
            } else if !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
            }
        }
        pieces.push(current);
        let mut raw: Vec<String> = Vec::new();
        for piece in pieces {
            let base = strip_marks(&piece);
            raw.extend(
                base.split(|c: char| !c.is_alphanumeric() && !is_apostrophe(c))
                    .map(|w| w.chars().filter(|c| !is_apostrophe(*c)).collect::<String>())
                    .filter(|w| !w.is_empty()),
            );
        }
        // A run of single letters is a word spelled out ("C o i n b a s e"); a lone letter is an
        // initial and says nothing.
        let mut words: Vec<String> = Vec::new();
        let mut run = String::new();
        let mut run_len = 0;
        for w in raw {
            if w.chars().count() == 1 {
                run.push_str(&w);
                run_len += 1;
                continue;
            }
            if run_len >= 2 {
                words.push(std::mem::take(&mut run));
            }
            run.clear();
            run_len = 0;
            words.push(w);
        }
        if run_len >= 2 {
            words.push(run);
        }
        let mut tokens: Vec<Token> = Vec::new();
        for w in words {
            let t = Token::new(&w);
            if t.folded.is_empty() || t.is_title() {
                continue;
            }
            if !tokens.iter().any(|u| u.same(&t)) {
                tokens.push(t);
            }
        }
        Name { tokens }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// All tokens joined, in one of the two keys.
    fn joined(tokens: &[Token], visual: bool) -> String {
        tokens
            .iter()
            .map(|t| if visual { &t.visual } else { &t.folded })
            .map(String::as_str)
            .collect()
    }
}

/// How a display name relates to a protected name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    /// The same token set, or the same letters with the spaces moved ("Joe Six Pack").
    Exact,
    /// The protected name plus only [`ROLE_WORDS`] ("PayPal Customer Service").
    WithRoleWords,
    /// The protected name plus other words ("Joe SixPack via LinkedIn").
    Partial,
}

/// Compares a display name with a protected name.
///
/// The rule: let D and P be the token sets of the display and the protected name (see the
/// module comment). Then
/// - **Exact** when D = P (every token of each has a same token in the other), or when the
///   tokens of D joined in order spell the tokens of P joined in written order or rotated
///   ("SixPack Joe"), so that moved or doubled spaces change nothing;
/// - **WithRoleWords** when P ⊂ D and every extra token of D is a role word or a number; or
///   when D less its role words and numbers, joined, spells P joined ("TrustWallet APP" for
///   "Trust Wallet");
/// - **Partial** when P ⊂ D with other extra tokens;
/// - no match otherwise, and never for an empty P.
pub fn compare(display: &Name, protected: &Name) -> Option<NameMatch> {
    let (d, p) = (&display.tokens, &protected.tokens);
    if p.is_empty() || d.is_empty() {
        return None;
    }
    if !p.iter().all(|pt| d.iter().any(|dt| dt.same(pt))) {
        if joined_equal(d, p) {
            return Some(NameMatch::Exact);
        }
        let core: Vec<Token> = d.iter().filter(|t| !t.is_filler()).cloned().collect();
        return (!core.is_empty() && core.len() < d.len() && joined_equal(&core, p))
            .then_some(NameMatch::WithRoleWords);
    }
    let extra: Vec<&Token> = d
        .iter()
        .filter(|dt| !p.iter().any(|pt| pt.same(dt)))
        .collect();
    Some(if extra.is_empty() {
        NameMatch::Exact
    } else if extra.iter().all(|t| t.is_filler()) {
        NameMatch::WithRoleWords
    } else {
        NameMatch::Partial
    })
}

/// Whether the display tokens joined spell the protected tokens joined, in written order or
/// any rotation of it ("Last First").
fn joined_equal(d: &[Token], p: &[Token]) -> bool {
    [false, true].into_iter().any(|visual| {
        let dj = Name::joined(d, visual);
        (0..p.len()).any(|r| {
            let mut rotated = p[r..].to_vec();
            rotated.extend_from_slice(&p[..r]);
            Name::joined(&rotated, visual) == dj
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(display: &str, protected: &str) -> Option<NameMatch> {
        compare(&Name::parse(display), &Name::parse(protected))
    }

    #[test]
    fn exact_forms() {
        let joe = "Joe SixPack";
        for d in [
            "Joe SixPack",
            "joe sixpack",
            "JOE SIXPACK",
            "SixPack, Joe",
            "Sixpack, Joe Q.",
            "Dr. Joe SixPack, Jr.",
            "Mr Joe  SixPack (CEO)",
            "J\u{f6}e S\u{ee}xPack",
            "J\u{43e}e SixPack",   // Cyrillic о
            "Joe Six\u{200b}Pack", // zero-width space
            "Joe Six Pack",        // spaces moved
            "\u{ff2a}oe SixPack",  // fullwidth J
            "\"Joe SixPack\"",
        ] {
            assert_eq!(m(d, joe), Some(NameMatch::Exact), "{d}");
        }
        assert_eq!(m("Suzie Public", "Suzie Q. Public"), Some(NameMatch::Exact));
        assert_eq!(m("PaypaI", "PayPal"), Some(NameMatch::Exact));
        assert_eq!(m("Pay Pal", "PayPal"), Some(NameMatch::Exact));
        assert_eq!(m("Sean O'Brien", "Sean OBrien"), Some(NameMatch::Exact));
        assert_eq!(m("C o i n b a s e", "Coinbase"), Some(NameMatch::Exact));
        assert_eq!(m("Mcafee\u{2122}", "McAfee"), Some(NameMatch::Exact));
    }

    #[test]
    fn partial_forms() {
        assert_eq!(
            m("Microsoft account team", "Microsoft"),
            Some(NameMatch::WithRoleWords)
        );
        assert_eq!(
            m("Support Netflix", "Netflix"),
            Some(NameMatch::WithRoleWords)
        );
        assert_eq!(
            m("TrustWallet APP", "Trust Wallet"),
            Some(NameMatch::WithRoleWords)
        );
        assert_eq!(
            m("DocuSign 93978", "DocuSign"),
            Some(NameMatch::WithRoleWords)
        );
        assert_eq!(m("Amazon.com", "Amazon"), Some(NameMatch::WithRoleWords));
        assert_eq!(
            m("Joe SixPack via LinkedIn", "Joe SixPack"),
            Some(NameMatch::Partial)
        );
    }

    #[test]
    fn long_names_are_cut() {
        let long = format!("Joe SixPack {}", "x".repeat(100_000));
        assert_eq!(m(&long, "Joe SixPack"), Some(NameMatch::Partial));
        let many: String = (0..50_000).map(|i| format!("w{i} ")).collect();
        assert_eq!(m(&many, "Joe SixPack"), None);
    }

    #[test]
    fn different_people() {
        assert_eq!(m("Joe Smith", "Joe SixPack"), None);
        assert_eq!(m("Joe", "Joe SixPack"), None);
        assert_eq!(m("J. SixPack", "Joe SixPack"), None);
        assert_eq!(m("Joseph SixPack", "Joe SixPack"), None);
        assert_eq!(m("", "Joe SixPack"), None);
        assert_eq!(m("Dr.", "Dr."), None);
    }
}
