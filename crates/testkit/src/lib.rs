//! The tests' own kit (dev-only, never published): what the test suites of every crate used to
//! write for themselves, once.
//!
//! - [`testdata`]: the shared test data (`../shared/testdata`, or `$UNSPOOF_TESTDATA`). Absent,
//!   a test prints its skip line and passes, except under `CI=true`, where a missing corpus is
//!   a failure: a CI run that skipped the corpus must not read as one that checked it.
//! - [`free_port`], [`TempDir`], [`repo`], [`example`]: loopback ports chosen by the system,
//!   folders removed on drop, the workspace's files; [`ok_stdout`] of a command that must
//!   succeed.
//! - [`PolicyBuilder`] and [`ZoneBuilder`]: a policy and a DNS zone written key by key, as
//!   `unspoof.toml` and a master file would say them.
//! - [`Serve`]: a real `unspoof serve` on free ports with a zone file for its DNS, stopped on drop;
//!   [`spawn_serve`] and [`stop`] for a test that writes its own configuration and restarts it.
//! - [`SmtpSink`]: a loopback SMTP server that keeps what it is sent.
//! - [`psql`], [`try_psql`], [`pg_server`]: the PostgreSQL server of the store's tests.
//! - [`Postfix`]: a private Postfix in front of a milter, [`swaks`] to send it (or any door) a
//!   message; [`postfix_missing`]: why a real Postfix cannot run here.
//! - [`eml_files`], [`corpus_files`]: a corpus folder's messages, in the same order everywhere.
//! - `browser` (feature `browser`): chromedriver, a headless Chromium, login, click and
//!   screenshots for the console's browser tests.
//! - [`verdict_cases`]: the table of verdict cases (`crates/engine/tests/verdicts/`), which
//!   `crates/engine/tests/verdicts.rs` runs through the engine.

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use unspoof_engine::{
    Policy,
    dns::{Dns, Zone},
};

#[cfg(feature = "browser")]
pub mod browser;
mod cases;
mod pg;
mod postfix;
mod smtp;
pub use cases::{VerdictCase, verdict_cases};
pub use pg::{pg_server, psql, try_psql};
pub use postfix::{Postfix, swaks};
pub use smtp::{RcptReply, SmtpSink};

/// The workspace's root folder (canonical: some tests compare paths).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace's root")
}

/// A file of `examples/`.
pub fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

/// The policy of `examples/unspoof.toml`, as `unspoof analyze --policy` reads it: the doors'
/// sections left to their owners, `[gateway] gateway_names` handed to the policy.
pub fn example_policy() -> Policy {
    let path = example("unspoof.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let gateway_names: Vec<String> = table
        .get("gateway")
        .and_then(|g| g.get("gateway_names"))
        .and_then(|n| n.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for door in ["gateway", "milter", "store", "dmarc", "console"] {
        table.remove(door);
    }
    let mut policy = Policy::parse(&toml::to_string(&table).unwrap(), "examples/unspoof.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    policy.gateway_names = gateway_names;
    policy.validate().unwrap_or_else(|e| panic!("{e:?}"));
    policy
}

/// Prints a line that shows even when the test harness captures output (summary and skip
/// lines belong in every test log).
pub fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether this is a CI run (`CI=true`, as GitHub Actions, GitLab and most others set it).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The shared test data's root: `$UNSPOOF_TESTDATA`, else `../shared/testdata` beside the
/// workspace.
pub fn testdata_root() -> PathBuf {
    match std::env::var_os("UNSPOOF_TESTDATA") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo().join("../shared/testdata"),
    }
}

/// The folder `sub` of the shared test data (`""` for the root), or `None` after the skip line
/// naming `who` when it is absent. Under `CI=true` an absent folder panics instead: CI must
/// check the corpus, not skip it.
pub fn testdata(who: &str, sub: &str) -> Option<PathBuf> {
    testdata_in(&testdata_root(), who, sub, is_ci())
}

/// [`testdata`] with its root and CI-ness given.
fn testdata_in(root: &Path, who: &str, sub: &str, ci: bool) -> Option<PathBuf> {
    let dir = root.join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    let line = format!(
        "{who}: ../shared/testdata/{sub} not found at {} (set UNSPOOF_TESTDATA)",
        dir.display()
    );
    if ci {
        panic!("{line}; CI=true: a test that needs the shared test data fails without it");
    }
    say(&format!("{who}: skipped: {line}"));
    None
}

/// Every `.eml` file below `dir`, folders read recursively, in path order (a corpus is read in
/// the same order on every machine). A missing folder gives none.
pub fn eml_files(dir: &Path) -> Vec<PathBuf> {
    corpus_files(dir, &["eml"])
}

/// Every file below `dir` whose extension is one of `extensions` (`"mbox"`), as [`eml_files`].
pub fn corpus_files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    corpus_files_into(dir, extensions, &mut out);
    out
}

fn corpus_files_into(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            corpus_files_into(&p, extensions, out);
        } else if p
            .extension()
            .is_some_and(|e| extensions.iter().any(|x| e == *x))
        {
            out.push(p);
        }
    }
}

/// The first part and the signature of a multipart/signed message (CRLF), exactly as
/// written: what the signed-mail tests hand to gpg and openssl after delivery (the CLI's
/// `tests/signed.rs`, the milter's Postfix tests).
pub fn split_signed(m: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let text = String::from_utf8_lossy(m);
    let boundary = text
        .split("boundary=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let delim = format!("\r\n--{boundary}");
    // Keep the CRLF before the first delimiter.
    let body = &text[text.find("\r\n\r\n").unwrap() + 2..];
    let mut parts = body.split(&delim).skip(1);
    let first = parts
        .next()
        .unwrap()
        .strip_prefix("\r\n")
        .unwrap()
        .to_string();
    let sig = parts
        .next()
        .unwrap()
        .split_once("\r\n\r\n")
        .unwrap()
        .1
        .to_string();
    (first.into_bytes(), sig.into_bytes())
}

/// A loopback port that is free for TCP and UDP now and that no other caller of this
/// function, in this process or in another one, is given while this process runs.
///
/// Why not bind `:0` and release it: the kernel hands the ports of `:0` out of its ephemeral
/// range (`net.ipv4.ip_local_port_range`, 32768–60999 here), so between the release and the
/// moment a spawned server binds the port, any other test binding `:0` (or connecting) may get
/// the same port. CI saw a "closed" downstream port turn into another test's submission port.
/// The ports here come from 20000–32767, below that range, where only this function picks;
/// the counter keeps two callers of one test binary apart, and binding checks other users.
///
/// Other test processes (other binaries, or the suites of several checkouts run at once on
/// one machine) pick from the same range, each from its own place: a port one of them had
/// just found free and not yet bound was handed to the next that reached it, and its server
/// failed with "Address already in use" (`allowed_sender_lifts_quarantine_through_postfix`).
/// So each port is reserved first, with a lock (`flock`) on a file named after it in
/// `$TMPDIR/unspoof-test-ports/`, held until this process ends (the kernel drops it even on
/// kill -9): a port locked by another process is skipped, and is never probed by bind
/// either, which could fail that process's own bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Test binaries run one after another, but a stale server of an earlier one may still hold
    // a port: start each process at a different place.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(2_654_435_761)) % PORT_SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    free_port_from(&NEXT)
}

const PORT_LOW: u32 = 20_000;
const PORT_SPAN: u32 = 12_768;

/// [`free_port`] with its counter: the next port tried is `PORT_LOW + next % PORT_SPAN`.
fn free_port_from(next: &std::sync::atomic::AtomicU32) -> u16 {
    use std::sync::atomic::Ordering;
    for _ in 0..PORT_SPAN {
        let port = (PORT_LOW + next.fetch_add(1, Ordering::SeqCst) % PORT_SPAN) as u16;
        let Some(lock) = reserve_port(port) else {
            continue; // another process's
        };
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            RESERVED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(lock);
            return port;
        }
    }
    panic!(
        "no free loopback port in {PORT_LOW}..{}",
        PORT_LOW + PORT_SPAN
    );
}

/// The lock files of the ports this process was given, held open (and so locked) until it
/// ends.
static RESERVED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// Locks `port`'s file in `$TMPDIR/unspoof-test-ports/`; `None` when another holder (another
/// process, or another open of it here) has it, or the file cannot be made.
fn reserve_port(port: u16) -> Option<std::fs::File> {
    let dir = std::env::temp_dir().join("unspoof-test-ports");
    std::fs::create_dir_all(&dir).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
        .ok()?;
    file.try_lock().ok()?;
    Some(file)
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

/// Why a real Postfix with swaks cannot run here, if it cannot: Postfix's master must start
/// as root; `scripts/deps-milter.sh` installs both.
pub fn postfix_missing() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (Postfix's master must start as root)".into());
    }
    for (tool, path) in [
        ("postfix", "/usr/sbin/postfix"),
        ("swaks", "/usr/bin/swaks"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!(
                "{tool} is not installed (run scripts/deps-milter.sh)"
            ));
        }
    }
    None
}

/// A fresh folder under the system's temporary folder, removed with its contents on drop
/// (kept when `UNSPOOF_KEEP_TEMP` is set, to look at after a failure).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "unspoof-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("UNSPOOF_KEEP_TEMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A TOML string (quoted and escaped).
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A policy written key by key, as `unspoof.toml` says it.
///
/// ```
/// let policy = unspoof_testkit::PolicyBuilder::new("mx.shop.example")
///     .protect(&["shop.example"])
///     .internal(&["10.0.0.0/8"])
///     .action("spf_fail", "quarantine")
///     .build();
/// assert!(policy.is_protected("mail.shop.example"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct PolicyBuilder {
    top: Vec<String>,
    actions: Vec<String>,
    tail: Vec<String>,
    gateway_names: Vec<String>,
}

impl PolicyBuilder {
    pub fn new(hostname: &str) -> Self {
        PolicyBuilder::default().key("hostname", &quoted(hostname))
    }

    /// A top-level key with its value as TOML (`"text"`, `["a", "b"]`, `true`).
    pub fn key(mut self, key: &str, toml_value: &str) -> Self {
        self.top.push(format!("{key} = {toml_value}"));
        self
    }

    pub fn protect(self, domains: &[&str]) -> Self {
        self.key("protected_domains", &list(domains))
    }

    pub fn internal(self, networks: &[&str]) -> Self {
        self.key("internal_networks", &list(networks))
    }

    pub fn watch(self, domains: &[&str]) -> Self {
        self.key("watched_domains", &list(domains))
    }

    /// `[actions] class = "action"`.
    pub fn action(mut self, class: &str, action: &str) -> Self {
        self.actions.push(format!("{class} = {}", quoted(action)));
        self
    }

    /// A protected person (`[[protected_people]]`).
    pub fn person(mut self, name: &str, addresses: &[&str]) -> Self {
        self.tail.push(format!(
            "[[protected_people]]\nname = {}\naddresses = {}",
            quoted(name),
            list(addresses)
        ));
        self
    }

    /// Any further TOML, after everything else (whole sections: `[dkim_replay]\n...`).
    pub fn raw(mut self, toml: &str) -> Self {
        self.tail.push(toml.to_string());
        self
    }

    /// `[gateway] gateway_names` of the site's file, which the CLI's configuration hands to
    /// the policy (the engine reads no door section).
    pub fn gateway_names(mut self, names: &[&str]) -> Self {
        self.gateway_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The policy's part of `unspoof.toml` (without `gateway_names`: see [`Self::gateway_toml`]).
    pub fn text(&self) -> String {
        let mut out = self.top.join("\n");
        out.push('\n');
        if !self.actions.is_empty() {
            out.push_str("\n[actions]\n");
            out.push_str(&self.actions.join("\n"));
            out.push('\n');
        }
        for t in &self.tail {
            out.push('\n');
            out.push_str(t);
            out.push('\n');
        }
        out
    }

    /// The `[gateway]` lines this policy needs in a whole `unspoof.toml` (its gateway names).
    pub fn gateway_toml(&self) -> String {
        if self.gateway_names.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = self.gateway_names.iter().map(String::as_str).collect();
            format!("gateway_names = {}\n", list(&names))
        }
    }

    /// The policy, checked as the engine checks it; panics with the error and the text.
    pub fn build(&self) -> Policy {
        let text = self.text();
        let mut policy = Policy::parse(&text, "test policy")
            .unwrap_or_else(|e| panic!("{e}\n--- the policy ---\n{text}"));
        policy.gateway_names = self.gateway_names.clone();
        policy.validate().unwrap_or_else(|e| panic!("{e:?}"));
        policy
    }
}

/// A DNS zone written record by record, as a master file (RFC 1035) says it; what
/// `--dns-zone` reads and the engine's loopback zone server answers from.
#[derive(Clone, Debug, Default)]
pub struct ZoneBuilder {
    lines: Vec<String>,
}

impl ZoneBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A TXT record; long values are split into 255-octet strings.
    pub fn txt(mut self, name: &str, value: &str) -> Self {
        let strings: Vec<String> = value
            .as_bytes()
            .chunks(255)
            .map(|c| quoted(&String::from_utf8_lossy(c)))
            .collect();
        self.lines
            .push(format!("{} IN TXT {}", fqdn(name), strings.join(" ")));
        self
    }

    pub fn spf(self, domain: &str, record: &str) -> Self {
        self.txt(domain, record)
    }

    pub fn dmarc(self, domain: &str, record: &str) -> Self {
        self.txt(&format!("_dmarc.{domain}"), record)
    }

    pub fn dkim(self, selector: &str, domain: &str, record: &str) -> Self {
        self.txt(&format!("{selector}._domainkey.{domain}"), record)
    }

    pub fn a(mut self, name: &str, ip: &str) -> Self {
        let kind = if ip.contains(':') { "AAAA" } else { "A" };
        self.lines.push(format!("{} IN {kind} {ip}", fqdn(name)));
        self
    }

    pub fn mx(mut self, domain: &str, preference: u16, host: &str) -> Self {
        self.lines.push(format!(
            "{} IN MX {preference} {}",
            fqdn(domain),
            fqdn(host)
        ));
        self
    }

    /// Any master-file text.
    pub fn raw(mut self, text: &str) -> Self {
        self.lines.push(text.to_string());
        self
    }

    /// The master file.
    pub fn text(&self) -> String {
        let mut out = self.lines.join("\n");
        out.push('\n');
        out
    }

    pub fn zone(&self) -> Zone {
        zone_of(&self.text())
    }

    /// The engine's DNS view of this zone (its loopback zone server).
    pub async fn dns(&self) -> Dns {
        dns_of(&self.text()).await
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A zone from master-file text; panics with the reader's error.
pub fn zone_of(text: &str) -> Zone {
    let mut zone = Zone::new();
    zone.load_text(text, None)
        .unwrap_or_else(|e| panic!("zone: {e}\n--- the zone ---\n{text}"));
    zone
}

/// The engine's DNS view of master-file text (an empty text: every name absent), as
/// `--dns-zone` makes it.
pub async fn dns_of(text: &str) -> Dns {
    Dns::zones(zone_of(text), Duration::from_secs(2))
        .await
        .expect("the loopback zone server starts")
}

/// A real `unspoof serve`: its own folder, `listen` on a free loopback port, no submission or
/// metrics listener, no reverse DNS, the DNS from a zone file. Killed on drop.
pub struct Serve {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
}

/// What a [`Serve`] runs with.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// The policy's part of the file (top-level keys and its sections).
    pub policy: String,
    /// More lines for `[gateway]` (`domains = [...]`, `downstream = ...`).
    pub gateway: String,
    /// More sections after `[gateway]` (`[store]`, `[gateway.limits]`, ...).
    pub sections: String,
    /// The zone file the gateway's DNS answers from.
    pub zone: String,
    /// More command-line arguments.
    pub args: Vec<String>,
}

impl Serve {
    /// Starts `bin` (the test's `env!("CARGO_BIN_EXE_unspoof")`) and waits until it listens.
    pub fn start(bin: &str, options: &ServeOptions) -> Serve {
        let dir = TempDir::new("serve");
        let port = free_port();
        std::fs::write(dir.join("z.zone"), &options.zone).unwrap();
        let config = format!(
            "{}\n[gateway]\ndata_dir = {}\nlisten = \"127.0.0.1:{port}\"\nsubmission = \"\"\n\
             metrics = \"\"\nreverse_dns = false\n{}\n{}\n",
            options.policy,
            quoted(&dir.join("data").display().to_string()),
            options.gateway,
            options.sections
        );
        std::fs::write(dir.join("unspoof.toml"), config).unwrap();
        let child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(dir.join("unspoof.toml"))
            .arg("--dns-zone")
            .arg(dir.join("z.zone"))
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        let mut serve = Serve { child, port, dir };
        wait(
            port,
            "unspoof serve",
            &serve.dir.join("serve.log"),
            Some(&mut serve.child),
        );
        serve
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// The process, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The messages delivered into its Maildir (`data/maildir/new`), oldest name first.
    pub fn delivered(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("data/maildir/new"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Starts `bin serve --config <config> --dns-zone <zone>` (`bin`: the test's
/// `env!("CARGO_BIN_EXE_unspoof")`), its stderr appended to `log` (kept across restarts), and
/// waits until it accepts on `port`. For a test that writes its own configuration; [`Serve`]
/// writes one.
pub fn spawn_serve(bin: &str, config: &Path, zone: &Path, log: &Path, port: u16) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .arg("--dns-zone")
        .arg(zone)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    wait(port, "unspoof serve", log, Some(&mut child));
    child
}

/// Waits until `what` accepts on loopback `port`; after 60 s panics with its `log`.
pub fn wait_listening(port: u16, what: &str, log: &Path) {
    wait(port, what, log, None);
}

/// [`wait_listening`], and a panic as soon as `child` (the process that should listen) exits.
fn wait(port: u16, what: &str, log: &Path, mut child: Option<&mut Child>) {
    let started = Instant::now();
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
            panic!("{what} exited ({status}): {}", log_text());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not listen: {}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills and reaps a process the test started.
pub fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two pickers walking the range from the same place, as two test processes may: the
    /// second never gets a port the first was given (on main it got the same one, whose
    /// probe bind had been released), and the first one's port stays reserved.
    #[test]
    fn two_pickers_from_the_same_place_get_different_ports() {
        use std::sync::atomic::AtomicU32;
        let start = (std::process::id() % 1000) * 7;
        let (a, b) = (AtomicU32::new(start), AtomicU32::new(start));
        let first = free_port_from(&a);
        let second = free_port_from(&b);
        assert_ne!(first, second);
        assert!(reserve_port(first).is_none(), "{first} stays reserved");
        assert!(reserve_port(second).is_none(), "{second} stays reserved");
    }

    #[test]
    fn missing_test_data_skips_locally_and_fails_under_ci() {
        let dir = TempDir::new("testdata");
        std::fs::create_dir_all(dir.join("corpus")).unwrap();
        assert_eq!(
            testdata_in(dir.path(), "t", "corpus", true),
            Some(dir.join("corpus"))
        );
        assert_eq!(testdata_in(dir.path(), "t", "absent", false), None);
        let under_ci = std::panic::catch_unwind(|| testdata_in(dir.path(), "t", "absent", true));
        assert!(under_ci.is_err(), "CI=true must fail without the test data");
    }

    #[test]
    fn the_builders_write_what_the_engine_reads() {
        let policy = PolicyBuilder::new("mx.shop.example")
            .protect(&["Shop.Example."])
            .watch(&["bank.example"])
            .person("Suzie Q", &["suzie@shop.example"])
            .action("lookalike", "reject")
            .gateway_names(&["MX1.shop.example."])
            .build();
        assert!(policy.is_protected("www.shop.example"));
        assert_eq!(policy.gateway_names, ["mx1.shop.example"]);
        assert_eq!(
            policy.actions.lookalike,
            unspoof_engine::verdict::Action::Reject
        );
        let zone = ZoneBuilder::new()
            .spf("shop.example", "v=spf1 -all")
            .dmarc("shop.example", "v=DMARC1; p=reject")
            .dkim(
                "s1",
                "shop.example",
                &format!("v=DKIM1; p={}", "A".repeat(400)),
            )
            .a("mx.shop.example", "192.0.2.1")
            .mx("shop.example", 10, "mx.shop.example")
            .zone();
        assert!(!zone.is_empty());
        let dir = TempDir::new("kit");
        let kept = dir.path().to_path_buf();
        assert!(kept.is_dir());
        drop(dir);
        assert!(!kept.exists() || std::env::var_os("UNSPOOF_KEEP_TEMP").is_some());
    }

    #[test]
    fn the_example_policy_is_the_shipped_one() {
        let policy = example_policy();
        assert_eq!(policy.protected_domains, ["shopping.test"]);
        assert!(!policy.gateway_names.is_empty());
    }
}
