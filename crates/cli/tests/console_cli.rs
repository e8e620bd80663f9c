//! `unspoof console user` and `unspoof console serve`: an account made from the command line
//! (password on standard input, argon2id) logs in to the served console over HTTP (curl), on
//! SQLite in the data directory; a bad role or scope is a usage error.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn unspoof_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_unspoof"))
        .args(args)
        .env_remove("UNSPOOF_STORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-i"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_account_made_on_the_command_line_logs_in_to_the_served_console() {
    let dir = std::env::temp_dir().join(format!("unspoof-console-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.to_str().unwrap();
    let bad = unspoof_stdin(
        &[
            "console",
            "user",
            "add",
            "--data-dir",
            data,
            "ann",
            "--role",
            "recipient",
        ],
        "pw\n",
    );
    assert_eq!(bad.status.code(), Some(64), "a recipient needs a scope");
    let bad = unspoof_stdin(
        &[
            "console",
            "user",
            "add",
            "--data-dir",
            data,
            "ann",
            "--role",
            "owner",
        ],
        "pw\n",
    );
    assert_eq!(bad.status.code(), Some(64));
    let add = unspoof_stdin(
        &[
            "console",
            "user",
            "add",
            "--data-dir",
            data,
            "ann",
            "--role",
            "recipient",
            "--scope",
            "Ann@Site.test",
        ],
        "s3cret horse\n",
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let list = unspoof_stdin(&["console", "user", "list", "--data-dir", data], "");
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.contains("ann") && list.contains("recipient") && list.contains("ann@site.test"),
        "{list}"
    );
    assert!(!list.contains("argon2"), "the hash is not printed: {list}");

    let port = unspoof_testkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = Kill(
        Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["console", "serve", "--data-dir", data, "--listen", &listen])
            .env_remove("UNSPOOF_STORE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://{listen}");
    let mut page = String::new();
    for _ in 0..100 {
        page = curl(&[&format!("{base}/login")]);
        if page.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let cookie = page
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: unspoof_login="))
        .and_then(|v| v.split(';').next())
        .expect("the login form's cookie")
        .to_string();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let login = |password: &str| {
        curl(&[
            "-H",
            &format!("Cookie: unspoof_login={cookie}"),
            "--data-urlencode",
            "name=ann",
            "--data-urlencode",
            &format!("password={password}"),
            "--data-urlencode",
            &format!("csrf={csrf}"),
            &format!("{base}/login"),
        ])
    };
    assert!(login("wrong").starts_with("HTTP/1.1 401"));
    let ok = login("s3cret horse");
    assert!(ok.starts_with("HTTP/1.1 303"), "{ok}");
    let session = ok
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: unspoof_session="))
        .expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    let session = session.split(';').next().unwrap();
    let q = curl(&[
        "-H",
        &format!("Cookie: unspoof_session={session}"),
        &format!("{base}/quarantine"),
    ]);
    assert!(
        q.starts_with("HTTP/1.1 200") && q.contains("0 messages"),
        "{q}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[console] tls_cert`/`tls_key`: the console speaks HTTPS itself and its cookies are
/// `Secure`; plain HTTP to the same port gets no page.
#[test]
fn the_console_serves_https_with_secure_cookies_when_given_a_certificate() {
    let dir = std::env::temp_dir().join(format!("unspoof-console-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let port = unspoof_testkit::free_port();
    let config = dir.join("unspoof.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.site.test\"\n\n[gateway]\ndata_dir = \"{data}\"\n\n[console]\n\
             listen = \"127.0.0.1:{port}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n",
            data = dir.join("data").display(),
            cert = dir.join("cert.pem").display(),
            key = dir.join("key.pem").display(),
        ),
    )
    .unwrap();
    // The first account makes the store.
    let add = unspoof_stdin(
        &[
            "console",
            "user",
            "add",
            "--config",
            config.to_str().unwrap(),
            "admin",
            "--role",
            "administrator",
        ],
        "pw\n",
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );
    let _server = Kill(
        Command::new(env!("CARGO_BIN_EXE_unspoof"))
            .args(["console", "serve", "--offline", "--config"])
            .arg(&config)
            .env_remove("UNSPOOF_STORE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("https://127.0.0.1:{port}");
    let mut page = String::new();
    for _ in 0..100 {
        page = curl(&["-k", &format!("{base}/login")]);
        if page.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let cookie = page
        .lines()
        .find(|l| l.starts_with("set-cookie: unspoof_login="))
        .expect("the login form's cookie");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let plain = curl(&["--max-time", "5", &format!("http://127.0.0.1:{port}/login")]);
    assert!(!plain.contains("HTTP/1.1 200"), "{plain}");
    let _ = std::fs::remove_dir_all(&dir);
}
