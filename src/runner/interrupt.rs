//! SIGINT/SIGTERM: the first stops scheduling and lets the running change finish within
//! `GRACE`; the app aborts at once on the second.

use std::time::Duration;

use tokio::sync::watch;

/// How long the change that is running when the first signal arrives may take to finish.
pub const GRACE: Duration = Duration::from_secs(30);

/// Shared by the whole run; raised by the app's signal handler.
#[derive(Debug)]
pub struct Interrupt {
    tx: watch::Sender<Option<i32>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt {
            tx: watch::channel(None).0,
        }
    }
}

impl Interrupt {
    /// Records the first signal (its number); later ones keep the first.
    pub fn raise(&self, signal: i32) {
        self.tx.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(signal);
                true
            } else {
                false
            }
        });
    }

    /// The first signal received, if any.
    pub fn signal(&self) -> Option<i32> {
        *self.tx.borrow()
    }

    pub fn requested(&self) -> bool {
        self.signal().is_some()
    }

    /// Resolves once a signal arrived.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| s.is_some()).await;
    }

    /// Resolves `GRACE` after a signal: the bound on the change that was running then.
    pub async fn grace_over(&self) {
        self.wait().await;
        tokio::time::sleep(GRACE).await;
    }
}
