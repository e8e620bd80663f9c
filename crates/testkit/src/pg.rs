//! The PostgreSQL server the store's, the console's and the CLI's tests and benches use
//! (127.0.0.1:5432, trust auth, `$UNSPOOF_TEST_PG` to name another), driven with `psql`.

use std::process::Command;

/// The server's URL without a database (`postgres://postgres@127.0.0.1:5432`, or
/// `$UNSPOOF_TEST_PG`), no trailing slash.
pub fn pg_server() -> String {
    std::env::var("UNSPOOF_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
        .trim_end_matches('/')
        .to_string()
}

/// Runs one SQL statement against the `postgres` database of `server` with psql; whether it
/// succeeded (false also when psql is not installed or the server is down).
pub fn try_psql(server: &str, sql: &str) -> bool {
    run(server, sql).is_ok_and(|o| o.status.success())
}

/// [`try_psql`] that must succeed: panics with psql's error otherwise.
pub fn psql(server: &str, sql: &str) {
    let out =
        run(server, sql).expect("psql (postgresql-client) is installed by scripts/deps-store.sh");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(server: &str, sql: &str) -> std::io::Result<std::process::Output> {
    Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
}
