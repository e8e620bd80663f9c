//! The CLI's glue over the test kit (`crates/testkit`): what needs this crate's binary
//! (`CARGO_BIN_EXE_unspoof` exists only in the CLI's own tests). Everything generic (ports,
//! folders, the repository, spawning and stopping `unspoof serve`) is the kit's.
#![allow(dead_code)]

use std::{
    path::Path,
    process::{Child, Command, Output},
};

/// The `unspoof` binary under test.
pub const UNSPOOF: &str = env!("CARGO_BIN_EXE_unspoof");

/// Runs the `unspoof` binary; the store comes only from the arguments, never from the caller's
/// `UNSPOOF_STORE`.
pub fn unspoof(args: &[&str]) -> Output {
    Command::new(UNSPOOF)
        .args(args)
        .env_remove("UNSPOOF_STORE")
        .output()
        .unwrap()
}

/// [`unspoof_testkit::spawn_serve`] of this binary.
pub fn spawn_serve(config: &Path, zone: &Path, log: &Path, port: u16) -> Child {
    unspoof_testkit::spawn_serve(UNSPOOF, config, zone, log, port)
}
