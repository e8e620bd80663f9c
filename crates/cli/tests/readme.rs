//! The README's commands, exactly as a newcomer types them:
//!
//! - the demo from a clean clone: `cargo install --path crates/cli --locked`, `unspoof serve`
//!   on the embedded defaults, a genuine message delivered, a forged CEO message refused, and
//!   `unspoof log show <queue id>` saying why (plus `/healthz` and `--version`);
//! - the main command `./scripts/run.sh`, which serves and delivers;
//! - `./scripts/run.sh --config examples/unspoof.toml`, which starts as it is and delivers the
//!   shipped genuine sample;
//! - `./scripts/run.sh` run from inside `cargo test` and from a shell in turn does not rebuild
//!   the release binary each time.
//!
//! Each gateway runs in a network namespace of its own (`ip netns`, loopback only), so the
//! README's fixed ports (2525, 5587, 9425) cannot collide with anything else on the machine.
//! Inside it, the system resolvers' addresses belong to the test's own Knot DNS server, which
//! serves only the root zone: the names of the demo (`partner.test`, `example.localhost`) get
//! NXDOMAIN, as they do on the internet, and no DNS query leaves the namespace. Without network
//! namespaces (not root), the same defaults run on free ports with `--resolver` naming that
//! Knot on loopback.

use unspoof_testkit::repo;

use std::{
    net::UdpSocket,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

/// A release build on a shared 2-core machine.
const START_BOUND: Duration = Duration::from_secs(2400);

/// The release builds of these tests, one at a time: two at once on two cores only makes
/// both slower.
static BUILDS: Mutex<()> = Mutex::new(());

fn need(program: &str, what: &str) {
    if Command::new(program).arg("--version").output().is_err()
        && Command::new(program).arg("-V").output().is_err()
    {
        panic!("{program} is missing: {what}");
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Variables cargo sets for the processes it runs (this test among them); a person typing the
/// README's commands in a shell has none of them.
fn cargo_env_vars() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| {
            (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
                || k == "CARGO"
                || k == "OUT_DIR"
        })
        .collect()
}

/// Where the release builds of these tests go: the clean clone's `cargo install` and
/// `./scripts/run.sh` share it (the dependencies are built once), and it is kept between runs,
/// so a second run builds only what changed. It is not the work tree's own `target/release`,
/// so the tests never rebuild the binary a person runs `./scripts/run.sh` with.
fn release_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-target")
}

/// `./scripts/run.sh`, building into [`release_target`].
fn run_sh(cmd: &mut Command) -> &mut Command {
    cmd.env("CARGO_TARGET_DIR", release_target())
}

/// A shell's environment: this one without cargo's variables.
fn as_from_a_shell(cmd: &mut Command) -> &mut Command {
    for k in cargo_env_vars() {
        cmd.env_remove(k);
    }
    cmd
}

/// Where the gateway and its clients run: inside a network namespace of their own, or
/// (fallback) beside everything else on free ports.
struct Net {
    /// The namespace's name, when there is one.
    netns: Option<String>,
    smtp: u16,
    metrics: u16,
    /// Fallback only: the configuration that moves the defaults to free ports, and the
    /// loopback address of the test's DNS server.
    fallback: Option<(PathBuf, String)>,
    /// The test's DNS server.
    dns: Option<Group>,
}

/// A root zone and nothing else: every name the demo asks about (`partner.test`,
/// `_dmarc.example.localhost`, PTR records) is answered NXDOMAIN, as the internet's root
/// servers answer for the reserved `.test` and `.localhost` names.
const ROOT_ZONE: &str = ". 3600 IN SOA ns.root.test. hostmaster.root.test. 1 3600 600 86400 300\n\
                         . 3600 IN NS ns.root.test.\n";

/// The system's resolvers, as `unspoof serve` reads them.
fn system_resolvers() -> Vec<std::net::IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

impl Net {
    fn new(dir: &Path) -> Net {
        let name = format!("unspoof-readme-{}-{}", std::process::id(), dir_tag(dir));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let made = ok(&["netns", "add", &name])
            && ok(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        if made {
            // The system resolvers' addresses on the namespace's loopback, served by the test's
            // own DNS server: `unspoof serve` uses the system resolver as the README has it,
            // and no query leaves the namespace.
            let resolvers = system_resolvers();
            assert!(!resolvers.is_empty(), "no nameserver in /etc/resolv.conf");
            for ip in &resolvers {
                let prefix = if ip.is_ipv4() { "32" } else { "128" };
                if !ip.is_loopback() {
                    assert!(
                        ok(&[
                            "netns",
                            "exec",
                            &name,
                            "ip",
                            "addr",
                            "add",
                            &format!("{ip}/{prefix}"),
                            "dev",
                            "lo"
                        ]),
                        "cannot put {ip} on the namespace's loopback"
                    );
                }
            }
            let listen: Vec<String> = resolvers.iter().map(|ip| format!("{ip}@53")).collect();
            let mut net = Net {
                netns: Some(name),
                smtp: 2525,
                metrics: 9425,
                fallback: None,
                dns: None,
            };
            net.dns = Some(net.start_dns(dir, &listen, &resolvers[0].to_string(), 53));
            return net;
        }
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        eprintln!("readme test: no network namespace (not root?); free ports instead");
        let port = || unspoof_testkit::free_port();
        let (smtp, submission, metrics) = (port(), port(), port());
        let dns_port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("free-ports.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nlisten = \"127.0.0.1:{smtp}\"\nsubmission = \"127.0.0.1:{submission}\"\n\
                 metrics = \"127.0.0.1:{metrics}\"\n"
            ),
        )
        .unwrap();
        let mut net = Net {
            netns: None,
            smtp,
            metrics,
            fallback: Some((config, format!("127.0.0.1:{dns_port}"))),
            dns: None,
        };
        net.dns = Some(net.start_dns(
            dir,
            &[format!("127.0.0.1@{dns_port}")],
            "127.0.0.1",
            dns_port,
        ));
        net
    }

    /// Knot DNS serving [`ROOT_ZONE`] on `listen`, ready when `probe:port` answers.
    fn start_dns(&self, dir: &Path, listen: &[String], probe: &str, port: u16) -> Group {
        need(
            "knotd",
            "Knot DNS: scripts/deps-audit.sh installs it (scripts/test.sh runs it)",
        );
        let knot = dir.join("knot");
        std::fs::create_dir_all(&knot).unwrap();
        std::fs::write(knot.join("root.zone"), ROOT_ZONE).unwrap();
        let listen: String = listen
            .iter()
            .map(|l| format!("    listen: {l}\n"))
            .collect();
        std::fs::write(
            knot.join("knot.conf"),
            format!(
                "server:\n    rundir: \"{d}\"\n{listen}    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
                 database:\n    storage: \"{d}\"\n\
                 log:\n  - target: stderr\n    any: error\n\
                 template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    journal-content: none\n\
                 zone:\n  - domain: \".\"\n    file: \"root.zone\"\n",
                d = knot.display()
            ),
        )
        .unwrap();
        let log = knot.join("knotd.log");
        let mut knotd = self.command("knotd");
        knotd.arg("-c").arg(knot.join("knot.conf"));
        let mut group = Group::spawn(&mut knotd, &log);
        let started = Instant::now();
        loop {
            let answer = self
                .command("kdig")
                .args([
                    &format!("@{probe}"),
                    "-p",
                    &port.to_string(),
                    ".",
                    "SOA",
                    "+short",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if answer.contains("ns.root.test.") {
                return group;
            }
            let exited = group.0.try_wait().unwrap();
            assert!(
                exited.is_none() && started.elapsed() < Duration::from_secs(30),
                "knotd did not serve the root zone ({exited:?}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `program` run where the gateway's network is.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// The arguments that the fallback adds to `unspoof serve` (none in a namespace):
    /// `config` is the configuration the test gives itself, if any, which then also gets the
    /// free ports.
    fn serve_args(&self, config: Option<&Path>) -> Vec<String> {
        match &self.fallback {
            Some((free, resolver)) => {
                let config = match config {
                    Some(c) => {
                        let ports = std::fs::read_to_string(free).unwrap();
                        let text = std::fs::read_to_string(c).unwrap();
                        let mut merged = String::new();
                        for line in text.lines() {
                            let key = line.split('=').next().unwrap_or("").trim();
                            match ports.lines().find(|p| p.starts_with(&format!("{key} ="))) {
                                Some(p) if ["listen", "submission", "metrics"].contains(&key) => {
                                    merged.push_str(p)
                                }
                                _ => merged.push_str(line),
                            }
                            merged.push('\n');
                        }
                        let out = free.with_file_name("merged.toml");
                        std::fs::write(&out, merged).unwrap();
                        out
                    }
                    None => free.clone(),
                };
                vec![
                    "--config".into(),
                    config.display().to_string(),
                    "--resolver".into(),
                    resolver.clone(),
                ]
            }
            None => match config {
                Some(c) => vec!["--config".into(), c.display().to_string()],
                None => Vec::new(),
            },
        }
    }

    /// The arguments that the fallback adds to `unspoof log` (none in a namespace).
    fn store_args(&self) -> Vec<String> {
        match &self.fallback {
            Some((config, _)) => vec!["--config".into(), config.display().to_string()],
            None => Vec::new(),
        }
    }

    fn swaks(&self, args: &[&str]) -> Output {
        self.command("swaks")
            .arg("--server")
            .arg(format!("127.0.0.1:{}", self.smtp))
            .args(args)
            .output()
            .unwrap()
    }

    fn http_get(&self, path: &str) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{}; printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
            self.metrics
        );
        text(&self.command("bash").args(["-c", &script]).output().unwrap())
    }

    fn listening(&self, port: u16) -> bool {
        self.command("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        drop(self.dns.take());
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn dir_tag(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().chars().take(12).collect())
        .unwrap_or_default()
}

/// A process group started for a test, ended with SIGTERM (then SIGKILL) when dropped.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command, log: &Path) -> Group {
        let log = std::fs::File::create(log).unwrap();
        Group(
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

fn wait_for(net: &Net, server: &mut Group, log: &Path) {
    let started = Instant::now();
    while !net.listening(net.smtp) {
        let exited = server.0.try_wait().unwrap();
        assert!(
            exited.is_none() && started.elapsed() < START_BOUND,
            "the gateway did not start ({exited:?}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn maildir_new(data: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(data.join("maildir/new")) {
        Ok(d) => d.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A fresh folder under the test target directory (kept between runs only by name, so the
/// clean clone's release build is found again by sccache).
fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `git clone` of this repository, with the work tree's uncommitted changes to tracked files
/// applied (what is being tested is what is on disk; untracked files are not in a clone).
fn clean_clone(to: &Path) {
    let repo = repo();
    let out = Command::new("git")
        .arg("clone")
        .arg("--quiet")
        .arg(&repo)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "git clone: {}", text(&out));
    let diff = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["diff", "HEAD", "--binary"])
        .output()
        .unwrap();
    if !diff.stdout.is_empty() {
        let mut apply = Command::new("git")
            .arg("-C")
            .arg(to)
            .args(["apply", "--whitespace=nowarn", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        apply.stdin.take().unwrap().write_all(&diff.stdout).unwrap();
        assert!(
            apply.wait().unwrap().success(),
            "git apply of the work tree's changes"
        );
    }
}

#[test]
fn readme_demo_from_a_clean_clone() {
    need(
        "swaks",
        "scripts/deps-gateway.sh installs it (scripts/test.sh runs it)",
    );
    need("git", "the README starts with a git clone");
    let work = work_dir("readme-demo");
    let src = work.join("unspoof");
    clean_clone(&src);

    // The README's install command, in the clone, as from a shell: cargo shows its progress.
    let root = work.join("root");
    let install = {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        as_from_a_shell(&mut Command::new("cargo"))
            .args(["install", "--path", "crates/cli", "--locked", "--root"])
            .arg(&root)
            .current_dir(&src)
            .env(
                "CARGO_TARGET_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-target"),
            )
            .output()
            .unwrap()
    };
    let said = text(&install);
    assert!(install.status.success(), "cargo install failed:\n{said}");
    assert!(said.contains("Installed package `unspoof") || said.contains("Replaced package"));
    let unspoof = root.join("bin/unspoof");

    // `unspoof --version` names the commit.
    let head = Command::new("git")
        .arg("-C")
        .arg(&src)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let version = text(&Command::new(&unspoof).arg("--version").output().unwrap());
    assert_eq!(
        version.trim(),
        format!("unspoof {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );

    // `unspoof serve` on the embedded defaults, in an empty folder.
    let demo = work.join("demo");
    std::fs::create_dir_all(&demo).unwrap();
    let net = Net::new(&work);
    let log = work.join("serve.log");
    let mut server = Group::spawn(
        net.command(&unspoof)
            .arg("serve")
            .args(net.serve_args(None))
            .current_dir(&demo),
        &log,
    );
    wait_for(&net, &mut server, &log);
    let started = std::fs::read_to_string(&log).unwrap();
    assert!(started.contains("for example.localhost"), "{started}");

    // The genuine message: delivered, with our Authentication-Results.
    let genuine = net.swaks(&[
        "--to",
        "postmaster@example.localhost",
        "--from",
        "alice@partner.test",
        "--h-Subject",
        "Lunch on Friday?",
        "--body",
        "Shall we try the new place?",
    ]);
    let transcript = text(&genuine);
    assert!(genuine.status.success(), "swaks failed:\n{transcript}");
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");
    let data = demo.join("unspoof-data");
    let delivered = maildir_new(&data);
    assert_eq!(delivered.len(), 1, "one message delivered: {delivered:?}");
    let message = std::fs::read_to_string(&delivered[0]).unwrap();
    assert!(message.contains("Authentication-Results: "), "{message}");
    assert!(
        message.contains("smtp.mailfrom=alice@partner.test"),
        "{message}"
    );
    assert!(message.contains("Shall we try the new place?"), "{message}");

    // The forged one: the CEO of the demo site, written by someone else. Refused after DATA,
    // with the queue id to look it up by; nothing more delivered.
    let forged = net.swaks(&[
        "--to",
        "postmaster@example.localhost",
        "--from",
        "billing@partner.test",
        "--h-From",
        "CEO <ceo@example.localhost>",
        "--h-Subject",
        "Urgent wire transfer",
        "--body",
        "Please pay the attached invoice today.",
    ]);
    let transcript = text(&forged);
    assert!(
        !forged.status.success(),
        "the forged message was accepted:\n{transcript}"
    );
    let refusal = transcript
        .lines()
        .find(|l| l.starts_with("<** 550"))
        .unwrap_or_else(|| panic!("no 550 refusal:\n{transcript}"));
    assert_eq!(maildir_new(&data).len(), 1, "{transcript}");
    let queue_id = refusal
        .split_once("(queue id ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(id, _)| id.to_string())
        .unwrap_or_else(|| panic!("no queue id in the refusal: {refusal}"));

    // `unspoof log show <queue id>` (from the same folder) explains it.
    // The gateway writes its records in the background, in batches of at most
    // `flush_interval_ms` (50 ms): a person typing the command never sees the gap, a test
    // right after swaks may.
    let log_show = || {
        Command::new(&unspoof)
            .args(["log", "show"])
            .args(net.store_args())
            .arg(&queue_id)
            .current_dir(&demo)
            .env_remove("UNSPOOF_CONFIG")
            .env_remove("UNSPOOF_STORE")
            .output()
            .unwrap()
    };
    let asked = Instant::now();
    let mut show = log_show();
    while !show.status.success() && asked.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        show = log_show();
    }
    let shown = text(&show);
    assert!(show.status.success(), "{shown}");
    assert!(
        shown.contains(&format!("queue id    {queue_id}")),
        "{shown}"
    );
    assert!(shown.contains("verdict     reject"), "{shown}");
    assert!(
        shown.contains("from        CEO <ceo@example.localhost>"),
        "{shown}"
    );
    assert!(
        shown.contains("own_domain") && shown.contains("example.localhost"),
        "the reason names the spoofed domain: {shown}"
    );

    // Beside /metrics, /healthz.
    let health = net.http_get("/healthz");
    assert!(health.starts_with("HTTP/1.0 200 OK\r\n"), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
    let metrics = net.http_get("/metrics");
    assert!(
        metrics.contains("unspoof_messages_total{outcome=\"reject\"} 1\n"),
        "{metrics}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn readme_main_command_serves_and_delivers() {
    need(
        "swaks",
        "scripts/deps-gateway.sh installs it (scripts/test.sh runs it)",
    );
    let dir = work_dir("readme-run");
    let net = Net::new(&dir);
    let log = dir.join("serve.log");
    let server = {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let mut server = Group::spawn(
            run_sh(&mut net.command(repo().join("scripts/run.sh")))
                .args(net.serve_args(None))
                .current_dir(&dir),
            &log,
        );
        wait_for(&net, &mut server, &log);
        server
    };
    let out = net.swaks(&[
        "--to",
        "postmaster@example.localhost",
        "--from",
        "alice@partner.test",
        "--h-Subject",
        "readme test",
        "--body",
        "Hello from the README test.",
    ]);
    let transcript = text(&out);
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");
    let files = maildir_new(&dir.join("unspoof-data"));
    assert_eq!(files.len(), 1, "one message in {}", dir.display());
    let message = std::fs::read_to_string(&files[0]).unwrap();
    assert!(message.contains("Authentication-Results: "), "{message}");
    assert!(
        message.contains("smtp.mailfrom=alice@partner.test"),
        "{message}"
    );
    assert!(message.contains("Hello from the README test."), "{message}");
    // The build's progress was shown (cargo's "Finished" line at least).
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("Finished"), "{said}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `./scripts/run.sh` from a test (with cargo's variables) and from a shell (without) in turn:
/// once built, neither rebuilds anything. Before run.sh dropped those variables, ring's build
/// script (which asks to be rerun when CARGO_MANIFEST_DIR or CARGO_PKG_* change) ran again at
/// every switch, and the whole release binary was linked anew. (A commit made while this test
/// runs does rebuild: `--version` names the commit.)
#[test]
fn run_sh_does_not_rebuild_between_test_and_shell() {
    let run = |from_a_shell: bool| {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let mut cmd = Command::new(repo().join("scripts/run.sh"));
        run_sh(&mut cmd).arg("--help");
        if from_a_shell {
            as_from_a_shell(&mut cmd);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        !cargo_env_vars().is_empty(),
        "cargo test sets CARGO_MANIFEST_DIR and the like"
    );
    run(false);
    for from_a_shell in [true, false, true] {
        let said = run(from_a_shell);
        assert!(
            !said.contains("Compiling"),
            "rebuilt (from a shell: {from_a_shell}):\n{said}"
        );
        assert!(said.contains("Finished"), "{said}");
    }
}

/// `./scripts/run.sh --config examples/unspoof.toml` starts as it is (no DKIM key, nothing
/// under /var/lib), and the shipped genuine sample sent to it is delivered, not quarantined.
#[test]
fn the_example_configuration_starts_as_it_is() {
    need(
        "swaks",
        "scripts/deps-gateway.sh installs it (scripts/test.sh runs it)",
    );
    let dir = work_dir("readme-example");
    let examples = repo().join("examples");
    let net = Net::new(&dir);
    let log = dir.join("serve.log");
    let server = {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let mut server = Group::spawn(
            run_sh(&mut net.command(repo().join("scripts/run.sh")))
                .args(net.serve_args(Some(&examples.join("unspoof.toml"))))
                // The samples' own DNS records (their DKIM keys, SPF and DMARC).
                .arg("--dns-zone")
                .arg(examples.join("sample.zone"))
                .current_dir(&dir),
            &log,
        );
        wait_for(&net, &mut server, &log);
        server
    };
    let send = |sample: &str| {
        let path = examples.join(sample).display().to_string();
        net.swaks(&[
            "--to",
            "suzie@shopping.test",
            "--from",
            "joe@football.example.com",
            "--data",
            &path,
        ])
    };
    let genuine = send("sample-genuine.eml");
    let transcript = text(&genuine);
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");
    let spoof = send("sample-spoof.eml");
    let transcript = text(&spoof);
    assert!(transcript.contains("<** 550 5.7.1"), "{transcript}");
    let files = maildir_new(&dir.join("unspoof-data"));
    assert_eq!(files.len(), 1, "the genuine sample alone is delivered");
    let message = std::fs::read_to_string(&files[0]).unwrap();
    assert!(message.contains("Is dinner ready?"), "{message}");
    assert!(message.contains("dmarc=pass"), "{message}");
    // The sample was signed in 2018: received today its signature is old, which the example's
    // [dkim_replay] tags (dkim.old_signature) and which is the only thing held against it.
    if let Some(verdict) = message
        .lines()
        .find(|l| l.starts_with("X-Unspoof-Verdict:"))
    {
        assert!(
            verdict.starts_with("X-Unspoof-Verdict: tag; reasons=dkim.old_signature"),
            "{message}"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
