//! Public Suffix List test vectors (`publicsuffix/tests.txt`, 78 cases) against
//! `domain::registrable`.
//!
//! Each line is `input expected`, `null` standing for "no value". `registrable` returns IDNs in
//! A-label form by contract (that is how names arrive from DNS and SMTP), so an expected U-label
//! answer is compared in its A-label form; the vectors' own punycoded copies check the same.
//! Case id: the line number in tests.txt and the input, e.g. `L8:example.COM`.

mod support;

use unspoof_engine::domain::registrable;

const SUITE: &str = "publicsuffix";

#[test]
fn public_suffix_test_vectors() {
    let Some(dir) = support::testdata(SUITE, "publicsuffix") else {
        return;
    };
    let text = support::read_text(&dir.join("tests.txt"));
    let mut suite = support::Suite::new(SUITE);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(input), Some(expected)) = (fields.next(), fields.next()) else {
            panic!("tests.txt:{}: want `input expected`: {line}", n + 1);
        };
        let input_value = if input == "null" { "" } else { input };
        let expected_value = (expected != "null").then(|| {
            idna::domain_to_ascii(expected)
                .unwrap_or_else(|e| panic!("tests.txt:{}: expected {expected}: {e}", n + 1))
        });
        let ours = registrable(input_value);
        suite.record(
            format!("L{}:{input}", n + 1),
            ours == expected_value,
            ours.as_deref().unwrap_or("null").to_string(),
            expected.to_string(),
        );
    }
    suite.finish(Some(78));
}
