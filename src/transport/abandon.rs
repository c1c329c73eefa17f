//! Commands left running on the host: one whose result nobody waits for any more is stopped
//! there (`AbandonGuard`), and one held on purpose (`Held`, e.g. a lock) until released.
//!
//! A stop runs in a task of its own (the guard is dropped where nothing can be awaited), but it
//! is registered in the session's `Stops`: the runner awaits them (`Session::settle_stops`)
//! before it gives the host's lock back, so a run never exits, nor frees the host for another
//! run, while something it abandoned may still be running there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::ChannelMsg;

use super::shell;
use super::ssh::Link;

/// Numbers the commands of this process, for their tokens.
pub(super) static COMMANDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The bound on one stop: a channel, TERM, up to `TERM_WAIT` for the processes to go, KILL to
/// what is left, and the host's answer. Past it the stop is reported as not confirmed.
const STOP_BOUND: Duration = Duration::from_secs(20);

/// A remote command whose result nobody waits for any more.
pub(super) struct Abandoned {
    pub(super) link: Arc<Link>,
    pub(super) writer: Arc<russh::ChannelWriteHalf<client::Msg>>,
    pub(super) token: String,
    pub(super) user: String,
    pub(super) privileged: bool,
    pub(super) stops: Arc<Stops>,
}

/// The stops under way on one session, awaited before its host is given back.
#[derive(Default)]
pub(super) struct Stops(Mutex<Vec<tokio::task::JoinHandle<Result<(), String>>>>);

impl Stops {
    /// Waits for every stop registered so far; each is bounded by `STOP_BOUND` on its own and
    /// they run at once, so this takes at most about that long. Returns why each stop that could
    /// not be confirmed was not.
    pub(super) async fn settle(&self) -> Vec<String> {
        let pending = std::mem::take(&mut *self.0.lock().unwrap());
        let mut unconfirmed = Vec::new();
        for stop in pending {
            match stop.await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => unconfirmed.push(why),
                Err(e) => unconfirmed.push(format!("the stop did not run to its end: {e}")),
            }
        }
        unconfirmed
    }
}

/// Stops the command on the host when dropped before it finished (see `stop_on_host`).
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
        let stops = a.stops.clone();
        let stop = rt.spawn(stop_on_host(a));
        stops.0.lock().unwrap().push(stop);
    }
}

/// How long the processes get to end after TERM before they are sent KILL.
const TERM_WAIT: &str = "50"; // tenths of a second

/// The stop, run on the host: TERM to the processes whose command line carries the token
/// (the login shell, sudo, timeout and the loader under them) and everything below them, then
/// KILL to whatever is still there after `TERM_WAIT`; answers `stopped` once none of them is
/// left (zombies count as gone), or `left PIDS`. Its own command line has no token (the script
/// travels on stdin), so it never finds itself.
fn stop_script(token: &str) -> String {
    format!(
        "all=''; frontier=$(pgrep -f -- {token} | tr '\\n' ' ')\n\
         while [ -n \"$frontier\" ]; do\n\
         all=\"$all $frontier\"; next=''\n\
         for p in $frontier; do next=\"$next $(pgrep -P \"$p\" | tr '\\n' ' ')\"; done\n\
         frontier=$(echo $next)\n\
         done\n\
         alive() {{ left=''; for p in $all; do s=$(ps -o stat= -p \"$p\" 2>/dev/null) && [ \"${{s#Z}}\" = \"$s\" ] && left=\"$left $p\"; done; [ -n \"$left\" ]; }}\n\
         settle() {{ i=0; while alive && [ $i -lt \"$1\" ]; do sleep 0.1; i=$((i+1)); done; }}\n\
         if [ -n \"$all\" ]; then\n\
         kill -TERM $all 2>/dev/null; settle {TERM_WAIT}\n\
         if alive; then kill -KILL $left 2>/dev/null; settle 20; fi\n\
         fi\n\
         if [ -n \"$all\" ] && alive; then echo \"left$left\"; else echo stopped; fi\n",
        token = token
    )
}

/// Sends the stop over a channel of its own and reads the host's answer, within `STOP_BOUND`;
/// then closes the abandoned command's channel.
async fn stop_on_host(a: Abandoned) -> Result<(), String> {
    let _ = a.writer.eof().await;
    let asked = async {
        let channel = a
            .link
            .handle
            .channel_open_session()
            .await
            .map_err(|e| format!("no channel for the stop: {e}"))?;
        channel
            .exec(true, shell::command_line(&a.user, a.privileged, None))
            .await
            .map_err(|e| format!("the stop could not be started: {e}"))?;
        let (mut reader, w) = channel.split();
        let _ = w
            .data(&shell::frame(&stop_script(&a.token), None)[..])
            .await;
        let _ = w.eof().await;
        let mut answer = Vec::new();
        while let Some(msg) = reader.wait().await {
            if let ChannelMsg::Data { data } = msg {
                answer.extend_from_slice(&data);
            }
        }
        if a.privileged && shell::strip_privileged_marker(&mut answer).is_none() {
            return Err("the stop was refused by sudo".to_string());
        }
        let answer = String::from_utf8_lossy(&answer);
        match answer.lines().last().map(str::trim) {
            Some("stopped") => Ok(()),
            Some(left) if left.starts_with("left") => Err(format!(
                "processes still running after TERM and KILL:{}",
                &left["left".len()..]
            )),
            _ => Err(format!("the host gave no answer to the stop: {answer:?}")),
        }
    };
    let outcome = match tokio::time::timeout(STOP_BOUND, asked).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the host did not confirm the stop within {}s",
            STOP_BOUND.as_secs()
        )),
    };
    let _ = a.writer.close().await;
    outcome.map_err(|why| format!("{} ({why})", a.token))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn processes_with(needle: &str) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(needle))
                    .unwrap_or(false)
            })
            .count()
    }

    /// A tree under a tagged shell that ignores TERM (its `sleep` inherits that).
    fn start_tree(token: &str, marker: &str) -> std::process::Child {
        let child = Command::new("sh")
            .args(["-c", &format!("trap '' TERM; {marker} & wait"), token])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while processes_with(marker) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the tree never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    fn run_stop(token: &str, as_user: Option<&str>) -> String {
        let mut cmd = match as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "sh", "-s"]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.arg("-s");
                c
            }
        };
        let out = crate::testing::output_with_stdin(&mut cmd, stop_script(token).as_bytes());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn the_stop_kills_a_tree_that_ignores_term_and_confirms_it_is_gone() {
        let token = format!("bootstrap-cmd-{}-9001-end", std::process::id());
        let marker = format!("sleep 3597.{}", std::process::id());
        let mut tree = start_tree(&token, &marker);
        assert_eq!(run_stop(&token, None), "stopped");
        let _ = tree.wait();
        assert_eq!(processes_with(&marker), 0, "nothing of the tree is left");
        // Nothing to stop any more is also a confirmed stop.
        assert_eq!(run_stop(&token, None), "stopped");
    }

    /// Processes the stop may not signal (another user's, here root's seen from `nobody`) are
    /// reported with their pids, never as stopped.
    #[test]
    fn processes_the_stop_cannot_kill_are_named_not_called_stopped() {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if !is_root {
            eprintln!("skipped: needs root to run the stop as another user");
            return;
        }
        let token = format!("bootstrap-cmd-{}-9002-end", std::process::id());
        let marker = format!("sleep 3596.{}", std::process::id());
        let mut tree = start_tree(&token, &marker);
        let answer = run_stop(&token, Some("nobody"));
        assert!(answer.starts_with("left "), "{answer}");
        assert!(
            answer.contains(&tree.id().to_string()),
            "names the shell {}: {answer}",
            tree.id()
        );
        assert_eq!(run_stop(&token, None), "stopped");
        let _ = tree.wait();
    }
}
