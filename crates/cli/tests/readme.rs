//! The README's main command, exactly: `./scripts/run.sh` starts the gateway on the embedded
//! defaults, and a message sent to it with swaks lands in the Maildir with
//! Authentication-Results.

use std::{
    net::TcpStream,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The first run builds the release binary: allow for that on a 2-core machine.
const START_BOUND: Duration = Duration::from_secs(1800);

struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        // SIGTERM the whole process group: cargo run and the gateway it started.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0)])
            .status();
    }
}

#[test]
fn readme_main_command_serves_and_delivers() {
    if Command::new("swaks").arg("--version").output().is_err() {
        panic!("swaks is missing: scripts/deps-gateway.sh installs it (scripts/test.sh runs it)");
    }
    if TcpStream::connect("127.0.0.1:2525").is_ok() {
        panic!("something already listens on 127.0.0.1:2525; the embedded default needs it");
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::temp_dir().join(format!("unspoof-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(repo.join("scripts/run.sh"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let _group = Group(child.id());

    let started = Instant::now();
    while TcpStream::connect("127.0.0.1:2525").is_err() {
        assert!(
            started.elapsed() < START_BOUND,
            "the gateway did not start: {}",
            std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1:2525",
            "--to",
            "postmaster@localhost",
            "--from",
            "alice@example.org",
        ])
        .args([
            "--h-Subject",
            "readme test",
            "--body",
            "Hello from the README test.",
        ])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");

    let new = dir.join("unspoof-data/maildir/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one message in {}", new.display());
    let message = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(message.contains("Authentication-Results: "), "{message}");
    assert!(
        message.contains("smtp.mailfrom=alice@example.org"),
        "{message}"
    );
    assert!(message.contains("Hello from the README test."), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}
