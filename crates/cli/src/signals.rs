//! The one signal loop of every long-running command (`serve`, `milter`, `console serve`):
//! SIGHUP reloads, SIGTERM or SIGINT stops accepting and drains, and each of them is logged in
//! the same words whichever command got it.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a running door does for the loop.
pub trait Running {
    /// Re-reads what SIGHUP re-reads (the policy); on an error the old one stays.
    fn reload(&self) -> Result<(), String>;
    /// Stops accepting and lets the work in flight finish, up to the door's drain timeout;
    /// `true` if everything ended in time.
    fn shutdown(self) -> impl Future<Output = bool>;
}

/// The handlers, installed before the command starts listening: a signal that comes as soon as
/// the port answers is then handled, not taken with the default action (which ends the process
/// without a drain).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Runs until SIGTERM or SIGINT, reloading `running` on each SIGHUP, then drains it.
    /// `who` starts each log line (`unspoof`, `unspoof milter`). Returns whether the drain
    /// ended in time.
    pub async fn run(mut self, who: &str, running: impl Running) -> bool {
        self.until_stop(who, || running.reload()).await;
        eprintln!("{who}: shutting down, draining connections");
        let drained = running.shutdown().await;
        if !drained {
            eprintln!("{who}: drain timeout; some connections were cut off");
        }
        drained
    }

    /// Waits for SIGTERM or SIGINT; on each SIGHUP calls `reload` and logs what came of it.
    async fn until_stop(&mut self, who: &str, reload: impl Fn() -> Result<(), String>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => match reload() {
                    Ok(()) => eprintln!("{who}: policy reloaded"),
                    Err(e) => eprintln!("{who}: policy reload failed, keeping the old one: {e}"),
                },
            }
        }
    }
}
