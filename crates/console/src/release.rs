//! Releasing a quarantined message: the one path `unspoof quarantine release` and the console
//! both take. The message is claimed (`held` → `releasing`), delivered to the downstream MTA by
//! SMTP (or, without one, into a Maildir), and the outcome recorded with who released it; a
//! failed delivery leaves it held, with the error as its result.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use unspoof_store::{Store, StoreError};

/// Where released messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseTarget {
    /// The downstream MTA, `host:port` (as in `[gateway] downstream`).
    Downstream(String),
    /// A Maildir (`tmp/`, `new/`, `cur/` are made when missing).
    Maildir(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Not found, not held (someone else acted first), or the database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The delivery failed; the message is held again.
    #[error("{0} (still held)")]
    Delivery(String),
}

/// Releases quarantined message `id` on `actor`'s word. `Ok`: where it went (the downstream's
/// reply, or the Maildir file).
pub async fn release(
    store: &Store,
    id: &str,
    actor: &str,
    target: &ReleaseTarget,
) -> Result<String, ReleaseError> {
    let entry = store.release_begin(id, actor).await?;
    let m = &entry.message;
    let delivered = match target {
        ReleaseTarget::Downstream(relay) => {
            let helo = store.config().node.split('/').next().unwrap_or("localhost");
            unspoof_forensics::send::send(
                relay,
                helo,
                m.mail_from.as_deref().unwrap_or(""),
                &m.recipients,
                &m.raw,
            )
            .await
            .map(|reply| format!("{relay}: {}", reply.trim()))
            .map_err(|e| format!("{relay}: {e}"))
        }
        ReleaseTarget::Maildir(dir) => maildir_deliver(dir, &m.id, &m.raw)
            .map(|p| p.display().to_string())
            .map_err(|e| format!("{}: {e}", dir.display())),
    };
    store
        .release_end(id, actor, delivered.as_deref().map_err(|e| e.as_str()))
        .await?;
    delivered.map_err(ReleaseError::Delivery)
}

/// Maildir delivery: write into `tmp/`, fsync, rename into `new/`, fsync `new/`.
pub fn maildir_deliver(root: &Path, id: &str, raw: &[u8]) -> std::io::Result<PathBuf> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(root.join(sub))?;
    }
    let name = format!(
        "{}.{}.released.{}",
        unspoof_store::now(),
        id,
        std::process::id()
    );
    let tmp = root.join("tmp").join(&name);
    let new = root.join("new").join(&name);
    {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(raw)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &new)?;
    File::open(root.join("new"))?.sync_all()?;
    Ok(new)
}
