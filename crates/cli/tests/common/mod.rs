//! What the CLI's tests share: the repository, free loopback ports, running `unspoof`, and an
//! `unspoof serve` process on a written configuration and zone file. One copy, used by every
//! test file (`mod common;`); each file uses some of it.
#![allow(dead_code)]

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The repository root (canonical: some tests compare paths).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A loopback port nobody listens on right now (tests never use fixed ports).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the `unspoof` binary; the store comes only from the arguments, never from the caller's
/// `UNSPOOF_STORE`.
pub fn unspoof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(args)
        .env_remove("UNSPOOF_STORE")
        .output()
        .unwrap()
}

/// The stdout of a command that must have succeeded (else its stdout and stderr in the panic).
pub fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh, empty directory under the system's temporary directory, named by `tag` and this
/// process.
pub fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unspoof-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `unspoof serve --config <config> --dns-zone <zone>`, its stderr appended to `log`
/// (kept across restarts), and waits until it accepts on `port`: at most 60 s, then panics
/// with the log.
pub fn spawn_serve(config: &Path, zone: &Path, log: &Path, port: u16) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--dns-zone")
        .arg(zone)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "unspoof serve did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Kills and reaps a process the test started (its `Drop`).
pub fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
