//! The verdict table: every case of `tests/verdicts/` (a message, its envelope, the DNS as a
//! zone, the policy, and the action, reason codes and disposition the engine must give) run through
//! `Engine::evaluate`. A new case is two files, no code: `crates/testkit/src/cases.rs` says
//! the format.

use std::path::Path;

use unspoof_testkit::{dns_of, verdict_cases};

#[tokio::test]
async fn every_case_of_the_table_gets_its_action_and_exactly_its_codes() {
    let cases = verdict_cases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verdicts"));
    assert!(cases.len() >= 6, "the table lost cases: {}", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let engine = unspoof_engine::Engine::new(case.policy(), dns_of(&case.zone).await);
        let analysis = engine.evaluate(&case.raw(), &case.envelope()).await;
        let action = format!("{:?}", analysis.verdict.action).to_ascii_lowercase();
        let disposition = analysis.decision.disposition.as_str();
        let expected_disposition = case.expect.disposition.as_deref().unwrap_or(&action);
        let mut codes: Vec<String> = analysis
            .verdict
            .codes()
            .iter()
            .map(|c| c.to_string())
            .collect();
        codes.sort();
        let mut expected = case.expect.codes.clone();
        expected.sort();
        if action != case.expect.action || codes != expected || disposition != expected_disposition
        {
            wrong.push(format!(
                "{}: got {action} {codes:?} ({disposition}), the table says {} {expected:?} \
                 ({expected_disposition})",
                case.name, case.expect.action
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
