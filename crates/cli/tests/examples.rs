//! `examples/unspoof.toml` as shipped: the example policy does not quarantine the shipped
//! genuine sample and refuses the spoof. That it names every key of every section's type (set,
//! or commented out with a working value) and no other, as the docs' tables do, is checked
//! against the types by the configuration's own tests (crates/cli/src/config/tests.rs); that it
//! starts as it is (with `./scripts/run.sh`) beside the README's commands (tests/readme.rs).

use std::{path::PathBuf, process::Command};

fn examples(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

#[test]
fn the_example_policy_passes_the_genuine_sample_and_refuses_the_spoof() {
    let run = |sample: &str| {
        Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["analyze", "--policy"])
            .arg(examples("unspoof.toml"))
            .arg("--dns-zone")
            .arg(examples("sample.zone"))
            .arg(examples(sample))
            .output()
            .unwrap()
    };
    let genuine = run("sample-genuine.eml");
    let said = String::from_utf8_lossy(&genuine.stdout);
    assert_eq!(genuine.status.code(), Some(0), "{said}");
    let spoof = run("sample-spoof.eml");
    let said = String::from_utf8_lossy(&spoof.stdout);
    assert_eq!(spoof.status.code(), Some(3), "{said}");
    // And the file is valid as it stands.
    let check = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(["policy", "check"])
        .arg(examples("unspoof.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
