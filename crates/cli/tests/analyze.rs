//! `unspoof analyze` end to end: the real binary, real files, DNS from zone files served by the
//! binary itself on loopback.

use unspoof_testkit::{TempDir, repo};

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::Duration,
};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_unspoof"))
}

fn examples(name: &str) -> String {
    repo().join("examples").join(name).display().to_string()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run unspoof")
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn zone() -> String {
    examples("sample.zone")
}

#[test]
fn genuine_signed_message_passes_everything() {
    let out = run(&[
        "analyze",
        "--json",
        "--dns-zone",
        &zone(),
        &examples("sample-genuine.eml"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = &json_lines(&out)[0];
    assert_eq!(v["schema"], "unspoof.analysis/1");
    assert_eq!(v["verdict"]["action"], "accept");
    assert_eq!(v["auth"]["spf"]["result"], "pass");
    assert_eq!(v["auth"]["spf"]["mechanism"], "ip4:213.165.64.12/32");
    let dkim = v["auth"]["dkim"].as_array().unwrap();
    assert_eq!(dkim.len(), 2);
    assert!(dkim.iter().all(|d| d["result"] == "pass"), "{dkim:?}");
    let algs: Vec<&str> = dkim
        .iter()
        .map(|d| d["algorithm"].as_str().unwrap())
        .collect();
    assert!(algs.contains(&"ed25519-sha256") && algs.contains(&"rsa-sha256"));
    assert_eq!(v["auth"]["dmarc"]["result"], "pass");
    assert_eq!(v["auth"]["dmarc"]["policy"], "reject");
    assert_eq!(v["trace"]["origin"]["ip"], "213.165.64.12");
    assert_eq!(v["trace"]["origin"]["rdns"], "mail.football.example.com");
    let inferred: Vec<&str> = v["envelope"]["inferred"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(inferred, ["ip", "helo", "mail_from"]);
}

#[test]
fn forged_message_is_rejected_with_reasons() {
    let out = run(&[
        "analyze",
        "--json",
        "--dns-zone",
        &zone(),
        &examples("sample-spoof.eml"),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let v = &json_lines(&out)[0];
    assert_eq!(v["verdict"]["action"], "reject");
    let codes: Vec<&str> = v["verdict"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"dmarc.reject"), "{codes:?}");
    assert!(codes.contains(&"spf.fail"), "{codes:?}");
    assert_eq!(v["auth"]["spf"]["mechanism"], "-all");
}

#[test]
fn same_input_same_output() {
    let args = [
        "analyze",
        "--json",
        "--dns-zone",
        &zone(),
        "--ip",
        "213.165.64.12",
        "--helo",
        "mail.football.example.com",
        "--mail-from",
        "joe@football.example.com",
        &examples("sample-genuine.eml"),
        &examples("sample-spoof.eml"),
    ];
    let a = run(&args);
    let b = run(&args);
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout, "two runs on the same input differ");
}

#[test]
fn lf_and_crlf_input_agree() {
    let raw = std::fs::read(examples("sample-genuine.eml")).unwrap();
    let lf: Vec<u8> = String::from_utf8(raw.clone())
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    let crlf: Vec<u8> = String::from_utf8(lf.clone())
        .unwrap()
        .replace('\n', "\r\n")
        .into_bytes();
    let dir = TempDir::new("lfcrlf");
    std::fs::write(dir.join("lf.eml"), &lf).unwrap();
    std::fs::write(dir.join("crlf.eml"), &crlf).unwrap();
    let out = run(&[
        "analyze",
        "--json",
        "--dns-zone",
        &zone(),
        &dir.join("lf.eml").display().to_string(),
        &dir.join("crlf.eml").display().to_string(),
    ]);
    let v = json_lines(&out);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["auth"], v[1]["auth"]);
    assert_eq!(v[0]["auth"]["dmarc"]["result"], "pass");
}

#[test]
fn mbox_maildir_and_stdin() {
    let genuine = std::fs::read_to_string(examples("sample-genuine.eml")).unwrap();
    let spoof = std::fs::read_to_string(examples("sample-spoof.eml")).unwrap();
    let dir = TempDir::new("inputs");

    // mbox: two messages, the second with a body line that must be >From-quoted.
    let mbox = format!(
        "From joe@football.example.com Fri Jul 11 21:00:37 2003\n{}\nFrom x@y Fri Nov 20 09:13:55 2026\n{}>From the desk of Joe\n",
        genuine.replace("\r\n", "\n"),
        spoof
    );
    std::fs::write(dir.join("box.mbox"), mbox).unwrap();
    let out = run(&[
        "analyze",
        "--json",
        "--dns-zone",
        &zone(),
        &dir.join("box.mbox").display().to_string(),
    ]);
    let v = json_lines(&out);
    assert_eq!(v.len(), 2);
    assert!(v[0]["file"].as_str().unwrap().ends_with("box.mbox#1"));
    assert_eq!(v[0]["verdict"]["action"], "accept");
    assert_eq!(v[1]["verdict"]["action"], "reject");
    assert_eq!(out.status.code(), Some(3));

    // Maildir: cur/ and new/.
    let md = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    std::fs::write(md.join("cur/1.host:2,S"), &genuine).unwrap();
    std::fs::write(md.join("new/2.host"), &spoof).unwrap();
    std::fs::write(md.join("tmp/3.host"), "half-written").unwrap();
    let out = run(&[
        "analyze",
        "--json",
        "--dns-zone",
        &zone(),
        &md.display().to_string(),
    ]);
    assert_eq!(json_lines(&out).len(), 2, "tmp/ must not be read");

    // stdin.
    let mut child = bin()
        .args(["analyze", "--json", "--dns-zone", &zone(), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spoof.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v = json_lines(&out);
    assert_eq!(v[0]["file"], "-");
    assert_eq!(v[0]["verdict"]["action"], "reject");
}

#[test]
fn offline_says_not_checked() {
    let out = run(&[
        "analyze",
        "--json",
        "--offline",
        &examples("sample-spoof.eml"),
    ]);
    let v = &json_lines(&out)[0];
    assert_eq!(v["auth"]["checked"], false);
    assert_eq!(v["auth"]["dmarc"]["result"], "none");
    let codes: Vec<&str> = v["verdict"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"auth.not_checked"));
    // The hop trace needs no DNS.
    assert_eq!(v["trace"]["origin"]["ip"], "203.0.113.66");
}

#[test]
fn silent_dns_server_gives_temperror_not_a_hang() {
    // A UDP and a TCP socket that never answer.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let _tcp = std::net::TcpListener::bind(("127.0.0.1", port));
    let resolver = format!("127.0.0.1:{port}");
    let mut child = bin()
        .args([
            "analyze",
            "--json",
            "--resolver",
            &resolver,
            "--dns-timeout",
            "0.5",
            &examples("sample-spoof.eml"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded wait: a hang is the failure being tested, not a speed figure.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("unspoof analyze hung on a silent DNS server");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let v = &json_lines(&out)[0];
    assert_eq!(v["auth"]["spf"]["result"], "temperror");
    assert_eq!(v["auth"]["dmarc"]["result"], "temperror");
    // What the doors would do is defer; analyze's exit says so (README, exit codes), never 0.
    assert_eq!(v["decision"]["disposition"], "defer", "{v:#}");
    assert_eq!(out.status.code(), Some(4), "{v:#}");
}

/// Splits an Authentication-Results value into its resinfo parts, honouring quoted strings and
/// comments the way an RFC 8601 parser must.
fn ar_results(header: &str) -> Vec<String> {
    let value = header.split_once(':').unwrap().1;
    let (mut parts, mut cur, mut quoted, mut depth, mut escaped) =
        (vec![], String::new(), false, 0, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            cur.push(c);
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            ';' if !quoted && depth == 0 => {
                parts.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        if depth == 0 && c != ')' {
            cur.push(c);
        }
    }
    parts.push(cur.trim().to_string());
    parts
}

#[test]
fn hostile_values_cannot_inject_results() {
    let dir = TempDir::new("hostile");
    let msg = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=legit.com'a.attacker.com;\r\n s=sel; h=from:subject; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=AAAA\r\n\
From: ceo@legit.com\r\nSubject: hi\r\n\r\nHi.\r\n";
    std::fs::write(dir.join("m.eml"), msg).unwrap();
    let out = run(&[
        "analyze",
        "--ar",
        "--dns-zone",
        &zone(),
        "--ip",
        "192.0.2.9",
        "--helo",
        "x.example",
        "--mail-from",
        "x@legit.com(a.attacker.com",
        &dir.join("m.eml").display().to_string(),
    ]);
    let ar = String::from_utf8(out.stdout)
        .unwrap()
        .replace("\r\n\t", " ");
    assert!(
        ar.contains("smtp.mailfrom=\"x@legit.com(a.attacker.com\""),
        "{ar}"
    );
    let results = ar_results(ar.trim_end());
    // authserv-id, then exactly: dkim, spf (mailfrom), spf (helo), dmarc, arc.
    assert_eq!(results.len(), 6, "{results:?}");
    assert!(results.iter().all(|r| !r.contains("=pass")), "{results:?}");
    assert!(ar.contains("header.d=\"legit.com'a.attacker.com\""), "{ar}");
}

/// `analyze --batch` over `manifest` with the test zone: one JSON value per output line.
fn batch(manifest: &std::path::Path) -> Vec<serde_json::Value> {
    json_lines(&run(&[
        "analyze",
        "--batch",
        &manifest.display().to_string(),
        "--dns-zone",
        &zone(),
    ]))
}

#[test]
fn batch_manifest_writes_one_line_per_entry() {
    let dir = TempDir::new("batch");
    std::fs::copy(examples("sample-genuine.eml"), dir.join("g.eml")).unwrap();
    std::fs::copy(examples("sample-spoof.eml"), dir.join("s.eml")).unwrap();
    std::fs::write(
        dir.join("manifest.jsonl"),
        "{\"file\": \"g.eml\", \"ip\": \"213.165.64.12\", \"helo\": \"mail.football.example.com\", \"mailfrom\": \"joe@football.example.com\", \"rcpt\": \"suzie@shopping.example.net\"}\n\
         {\"file\": \"s.eml\", \"ip\": \"198.51.100.7\", \"helo\": \"evil.example\", \"mailfrom\": \"joe@football.example.com\", \"rcpt\": [\"a@b.example\"]}\n",
    )
    .unwrap();
    let v = batch(&dir.join("manifest.jsonl"));
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["file"], "g.eml");
    assert_eq!(v[0]["dkim"], "pass");
    assert_eq!(
        v[0]["dkim_pass_d"],
        serde_json::json!(["football.example.com"])
    );
    assert_eq!(v[0]["spf"], "pass");
    assert_eq!(v[0]["dmarc"], "pass");
    assert_eq!(v[0]["arc"], "none");
    assert_eq!(v[1]["spf"], "fail");
    assert_eq!(v[1]["dmarc"], "fail");
    assert_eq!(v[1]["analysis"]["envelope"]["ip"], "198.51.100.7");
    assert_eq!(
        v[1]["analysis"]["envelope"]["inferred"],
        serde_json::json!([])
    );
}

/// The workers finish messages out of order (a signed genuine message costs more than a
/// spoof) and hand the output over in many pieces; the lines must still follow the manifest,
/// one each (the reordering across pieces; the other test's batch fits in one). A piece that
/// overtook the one made just before it (fixed by sending under the order lock) did not
/// show here in five runs: that race is ruled out by construction, not by this test.
#[test]
fn batch_output_follows_the_manifest_order() {
    let dir = TempDir::new("batch-order");
    let mut manifest = String::new();
    for i in 0..600 {
        let (sample, name) = if i % 3 == 0 {
            ("sample-genuine.eml", format!("g{i}.eml"))
        } else {
            ("sample-spoof.eml", format!("s{i}.eml"))
        };
        std::fs::copy(examples(sample), dir.join(&name)).unwrap();
        manifest.push_str(&format!(
            "{{\"file\": \"{name}\", \"ip\": \"213.165.64.12\", \"helo\": \"mail.football.example.com\", \"mailfrom\": \"joe@football.example.com\", \"rcpt\": \"n{i}@shopping.example.net\"}}\n"
        ));
    }
    std::fs::write(dir.join("manifest.jsonl"), manifest).unwrap();
    let v = batch(&dir.join("manifest.jsonl"));
    assert_eq!(v.len(), 600);
    for (i, line) in v.iter().enumerate() {
        let name = if i % 3 == 0 {
            format!("g{i}.eml")
        } else {
            format!("s{i}.eml")
        };
        assert_eq!(line["file"], name.as_str(), "line {i}");
    }
}

#[test]
fn bad_arguments_and_inputs_have_their_exit_codes() {
    assert_eq!(run(&["analyze", "--bogus"]).status.code(), Some(64));
    assert_eq!(
        run(&["analyze", "--offline", "/nonexistent/x.eml"])
            .status
            .code(),
        Some(66)
    );
    let dir = TempDir::new("badzone");
    std::fs::write(dir.join("z.zone"), "a.example. IN A 999.1.1.1\n").unwrap();
    let out = run(&[
        "analyze",
        "--dns-zone",
        &dir.join("z.zone").display().to_string(),
        &examples("sample-spoof.eml"),
    ]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

#[test]
fn malformed_messages_are_analysed_not_crashed() {
    let dir = TempDir::new("malformed");
    // Not messages at all: said so (exit 65), never judged (inputs_that_are_not_mail_say_so).
    let not_mail: [&[u8]; 3] = [
        b"",
        b"no header section at all",
        b"\xff\xfe\x00garbage\r\n\r\n",
    ];
    for (i, raw) in not_mail.iter().enumerate() {
        let p = dir.join(format!("not-{i}.eml"));
        std::fs::write(&p, raw).unwrap();
        let out = run(&[
            "analyze",
            "--json",
            "--dns-zone",
            &zone(),
            &p.display().to_string(),
        ]);
        assert_eq!(out.status.code(), Some(65), "case {i}: {out:?}");
        assert!(json_lines(&out).is_empty(), "case {i}");
    }
    // Messages with malformed fields: judged.
    let cases: [&[u8]; 2] = [
        b"From: \r\nReceived: from\r\nReceived: ;;;\r\nDKIM-Signature: v=1; d=\x00; s=\r\n\r\n",
        b"Subject: unterminated header",
    ];
    for (i, raw) in cases.iter().enumerate() {
        let p = dir.join(format!("{i}.eml"));
        std::fs::write(&p, raw).unwrap();
        let out = run(&[
            "analyze",
            "--json",
            "--dns-zone",
            &zone(),
            &p.display().to_string(),
        ]);
        assert!(
            out.status.code().is_some_and(|c| c <= 3),
            "case {i}: {:?}",
            out
        );
        assert_eq!(json_lines(&out).len(), 1, "case {i}");
    }
}

#[test]
fn shipped_example_policy_is_valid_and_errors_name_the_line() {
    let out = run(&["policy", "check", &examples("unspoof.toml")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = TempDir::new("policycheck");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "hostname = \"mx\"\n\n[actions]\nimpersonation = \"delete\"\n",
    )
    .unwrap();
    let out = run(&["policy", "check", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4:"), "{err}");
    std::fs::write(&bad, "[gateway]\nlisten = \"not an address\"\n").unwrap();
    let out = run(&["policy", "check", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:10: gateway.listen: "), "{err}");
    // A typo is an error where it is, in every section: it never silently does nothing.
    std::fs::write(
        &bad,
        "[milter]\nlisten = \"inet:127.0.0.1:8891\"\nonerror = \"accept\"\n",
    )
    .unwrap();
    let out = run(&["policy", "check", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:1: milter.onerror: unknown field"),
        "{err}"
    );
}

/// Empty files, binaries, random bytes and text files are not email messages: named on the
/// command line, each is reported as such with exit 65 (never ACCEPT with exit 0); found in a
/// folder, they are passed over with a note, and the folder is searched recursively.
#[test]
fn inputs_that_are_not_mail_say_so() {
    let dir = TempDir::new("not-mail");
    std::fs::write(dir.join("empty"), b"").unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_unspoof"), dir.join("binary")).unwrap();
    // Bytes from a fixed-seed generator: the same "random" file on every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("random"), &random).unwrap();
    std::fs::copy(repo().join("README.md"), dir.join("README.md")).unwrap();
    std::fs::write(dir.join("note.txt"), "Note: call Bob\nabout the invoice\n").unwrap();
    for name in ["empty", "binary", "random", "README.md", "note.txt"] {
        let path = dir.join(name).display().to_string();
        let out = run(&["analyze", "--offline", &path]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{name}: {said}");
        assert!(said.contains("not an email message"), "{name}: {said}");
        assert!(out.stdout.is_empty(), "{name}: no verdict is printed");
    }
    let mut stdin = bin()
        .args(["analyze", "--offline", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    stdin.stdin.take().unwrap().write_all(&random).unwrap();
    let out = stdin.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(65));

    // A corpus folder: two text files at the top, messages two levels down and in a Maildir.
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(corpus.join("easy_ham/2003")).unwrap();
    std::fs::create_dir_all(corpus.join("box/cur")).unwrap();
    std::fs::create_dir_all(corpus.join("box/new")).unwrap();
    std::fs::copy(repo().join("README.md"), corpus.join("README")).unwrap();
    std::fs::write(corpus.join("cmds"), "wget http://example.com/x.tar.bz2\n").unwrap();
    std::fs::copy(
        examples("sample-genuine.eml"),
        corpus.join("easy_ham/2003/00001.abc"),
    )
    .unwrap();
    std::fs::copy(examples("sample-spoof.eml"), corpus.join("box/new/1.x:2,")).unwrap();
    let out = run(&[
        "analyze",
        "--offline",
        "--json",
        &corpus.display().to_string(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    let files: Vec<String> = json_lines(&out)
        .iter()
        .map(|v| v["file"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 2, "{files:?} {said}");
    assert!(files[0].ends_with("box/new/1.x:2,"), "{files:?}");
    assert!(files[1].ends_with("easy_ham/2003/00001.abc"), "{files:?}");
    assert!(
        said.contains("README: skipped, not an email message"),
        "{said}"
    );
    assert!(
        said.contains("cmds: skipped, not an email message"),
        "{said}"
    );
    assert_ne!(
        out.status.code(),
        Some(65),
        "the messages have verdicts: {said}"
    );

    // A folder with nothing that is mail.
    let nothing = dir.join("nothing");
    std::fs::create_dir_all(&nothing).unwrap();
    std::fs::write(nothing.join("a.txt"), "hello\n").unwrap();
    let out = run(&["analyze", "--offline", &nothing.display().to_string()]);
    assert_eq!(out.status.code(), Some(65));
    let _ = std::fs::remove_dir_all(&dir);
}
