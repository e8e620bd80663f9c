//! Puts the git commit the binary is built from into `unspoof --version`.
//!
//! Without git or outside a repository (a source tarball, `cargo install` from a registry)
//! the build still succeeds: `UNSPOOF_COMMIT` from the environment is used if set, else the
//! version says the commit is unknown.

use std::{path::PathBuf, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=UNSPOOF_COMMIT");
    let commit = std::env::var("UNSPOOF_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            // Built again when HEAD moves: HEAD itself, the branch it names, packed refs.
            let git_dir = PathBuf::from(git(&["rev-parse", "--absolute-git-dir"])?);
            let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
                .map(PathBuf::from)
                .unwrap_or_else(|| git_dir.clone());
            // Only files that exist: cargo reruns a build script on every build while a file it
            // watches is missing (a repository often has no packed-refs).
            let mut watch = vec![git_dir.join("HEAD"), common.join("packed-refs")];
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch.push(common.join(branch));
            }
            for file in watch.iter().filter(|f| f.exists()) {
                println!("cargo:rerun-if-changed={}", file.display());
            }
            Some(commit)
        });
    let version = env!("CARGO_PKG_VERSION");
    let long = match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => format!("{version} (commit unknown: built without git)"),
    };
    println!("cargo:rustc-env=UNSPOOF_VERSION={long}");
}
