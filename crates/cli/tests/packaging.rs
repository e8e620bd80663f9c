//! What a packaged server has: `scripts/install.sh` lays out the binary, man pages, shell
//! completions, a configuration that `unspoof policy check` accepts and a hardened systemd
//! unit that `systemd-analyze verify` accepts; the man page reads with `man -l`; the licence
//! files the README names exist; `--version` names the commit.

use unspoof_testkit::repo;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const UNSPOOF: &str = env!("CARGO_BIN_EXE_unspoof");

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn temp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn install_script_lays_out_a_hardened_unit_a_config_and_docs() {
    let dir = temp("install");
    let (prefix, etc, units) = (dir.join("usr"), dir.join("etc"), dir.join("units"));
    let out = Command::new(repo().join("scripts/install.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--sysconfdir")
        .arg(&etc)
        .arg("--unitdir")
        .arg(&units)
        .args(["--binary", UNSPOOF])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let bin = prefix.join("bin/unspoof");
    assert!(bin.is_file(), "{said}");

    // The configuration is one `unspoof policy check` accepts, and it is never overwritten.
    let config = etc.join("unspoof/unspoof.toml");
    let check = Command::new(&bin)
        .args(["policy", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    std::fs::write(&config, "protected_domains = [\"site.example\"]\n").unwrap();
    let again = Command::new(repo().join("scripts/install.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--sysconfdir")
        .arg(&etc)
        .arg("--unitdir")
        .arg("")
        .args(["--binary", UNSPOOF])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "protected_domains = [\"site.example\"]\n"
    );

    // The unit: systemd's own reading of it finds nothing wrong, and it is hardened.
    let unit = units.join("unspoof.service");
    // It also reads the man pages the unit names (Documentation=): installed here, not in
    // /usr/local/share/man as on a server.
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", prefix.join("share/man"))
        .output()
        .expect("systemd-analyze (scripts/deps-cli.sh installs it)");
    let verdict = text(&verify);
    assert!(verify.status.success(), "{verdict}");
    assert!(
        !verdict.contains("unspoof.service:"),
        "systemd-analyze complains about the unit:\n{verdict}"
    );
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        format!(
            "ExecStart={} serve --config {}",
            bin.display(),
            config.display()
        ),
        "DynamicUser=yes".into(),
        "StateDirectory=unspoof".into(),
        "ProtectSystem=strict".into(),
        "NoNewPrivileges=yes".into(),
        "AmbientCapabilities=CAP_NET_BIND_SERVICE".into(),
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE".into(),
    ] {
        assert!(
            unit_text.lines().any(|l| l == line),
            "{line} missing:\n{unit_text}"
        );
    }
    // No capability but that one anywhere in the unit.
    let caps: Vec<&str> = unit_text
        .lines()
        .filter(|l| l.contains("CAP_"))
        .flat_map(|l| l.split(['=', ' ']).filter(|w| w.starts_with("CAP_")))
        .collect();
    assert!(
        caps.iter().all(|c| *c == "CAP_NET_BIND_SERVICE"),
        "{caps:?}"
    );

    // Man pages that man reads, one per subcommand too.
    let man1 = prefix.join("share/man/man1");
    for page in ["unspoof.1", "unspoof-serve.1", "unspoof-log-show.1"] {
        let read = Command::new("man")
            .arg("-l")
            .arg(man1.join(page))
            .env("MANWIDTH", "100")
            .env("PAGER", "cat")
            .output()
            .expect("man (scripts/deps-cli.sh installs man-db)");
        let shown = String::from_utf8_lossy(&read.stdout);
        assert!(read.status.success(), "{page}: {}", text(&read));
        assert!(shown.contains("SYNOPSIS"), "{page}:\n{shown}");
        if page == "unspoof-serve.1" {
            assert!(shown.contains("--config"), "{page}:\n{shown}");
        }
    }

    // Completions bash can load, naming the subcommands.
    let bash = prefix.join("share/bash-completion/completions/unspoof");
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p unspoof", bash.display()))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", text(&loaded));
    let script = std::fs::read_to_string(&bash).unwrap();
    assert!(script.contains("quarantine") && script.contains("analyze"));
    for file in [
        "share/zsh/site-functions/_unspoof",
        "share/fish/vendor_completions.d/unspoof.fish",
    ] {
        let s = std::fs::read_to_string(prefix.join(file)).unwrap();
        assert!(s.contains("serve"), "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn man_page_on_standard_output_reads_with_man() {
    let dir = temp("man");
    let out = Command::new(UNSPOOF).arg("man").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let page = dir.join("unspoof.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let read = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "100")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&read.stdout);
    assert!(read.status.success(), "{}", text(&read));
    for word in [
        "NAME",
        "SYNOPSIS",
        "analyze",
        "serve",
        "quarantine",
        "completions",
    ] {
        assert!(shown.contains(word), "{word}:\n{shown}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_for_every_shell_clap_knows() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(UNSPOOF)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("unspoof"),
            "{shell}"
        );
    }
    let bad = Command::new(UNSPOOF)
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(UNSPOOF).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success());
    let head = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(
        version,
        format!("unspoof {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

/// The README says "Apache-2.0 OR MIT": both texts are there, and the Cargo metadata agrees.
#[test]
fn licence_files_and_changelog_exist() {
    let root = repo();
    let apache = std::fs::read_to_string(root.join("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    let mit = std::fs::read_to_string(root.join("LICENSE-MIT")).unwrap();
    assert!(mit.contains("Permission is hereby granted, free of charge"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("Apache-2.0 OR MIT"));
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("license = \"Apache-2.0 OR MIT\""));
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    assert!(changelog.starts_with("# Changelog") && changelog.contains("## [Unreleased]"));
}
