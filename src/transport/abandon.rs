//! Commands left running on the host: one whose result nobody waits for any more is stopped
//! there (`AbandonGuard`), and one held on purpose (`Held`, e.g. a lock) until released.

use std::sync::Arc;
use std::time::Duration;

use russh::client;

use super::shell;
use super::ssh::Link;

/// Numbers the commands of this process, for their tokens.
pub(super) static COMMANDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A remote command whose result nobody waits for any more.
pub(super) struct Abandoned {
    pub(super) link: Arc<Link>,
    pub(super) writer: Arc<russh::ChannelWriteHalf<client::Msg>>,
    pub(super) token: String,
    pub(super) user: String,
    pub(super) privileged: bool,
}

/// Stops the command on the host when dropped before it finished: TERM to the processes whose
/// command line carries its token (sudo, timeout and the shell under them) and all below them,
/// through a channel of its own, then its channel is closed.
pub(super) struct AbandonGuard(pub(super) Option<Abandoned>);

impl AbandonGuard {
    pub(super) fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        let Some(a) = self.0.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let _ = a.writer.eof().await;
            // The killer's own command line has no token (its script travels on stdin).
            let kill = format!(
                "all=''; frontier=$(pgrep -f -- {token} | tr '\\n' ' ')\n\
                 while [ -n \"$frontier\" ]; do\n\
                 all=\"$all $frontier\"; next=''\n\
                 for p in $frontier; do next=\"$next $(pgrep -P \"$p\" | tr '\\n' ' ')\"; done\n\
                 frontier=$(echo $next)\n\
                 done\n\
                 [ -n \"$all\" ] && kill -TERM $all 2>/dev/null\n\
                 true\n",
                token = a.token
            );
            let command = shell::command_line(&a.user, a.privileged, None);
            if let Ok(channel) = a.link.handle.channel_open_session().await {
                if channel.exec(true, command).await.is_ok() {
                    let (mut reader, w) = channel.split();
                    let _ = w.data(&shell::frame(&kill, None)[..]).await;
                    let _ = w.eof().await;
                    let _ = tokio::time::timeout(Duration::from_secs(10), async {
                        while reader.wait().await.is_some() {}
                    })
                    .await;
                }
            }
            let _ = a.writer.close().await;
        });
    }
}

/// A command started by `Session::hold`, still running on the host.
pub struct Held {
    pub(super) writer: Option<russh::ChannelWriteHalf<client::Msg>>,
    pub(super) drain: tokio::task::JoinHandle<()>,
}

/// How long `Held::release` waits for the command to end after its input did.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

impl Held {
    /// Sends `last_words` and the end of input, then waits (bounded) for the command to end,
    /// so whatever it does on the way out is done when this returns.
    pub async fn release(mut self, last_words: &[u8]) {
        if let Some(w) = self.writer.take() {
            if !last_words.is_empty() {
                let _ = w.data(last_words).await;
            }
            let _ = w.eof().await;
            let _ = tokio::time::timeout(RELEASE_WAIT, &mut self.drain).await;
            let _ = w.close().await;
        }
        self.drain.abort();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.drain.abort();
    }
}
