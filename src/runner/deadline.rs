//! Every change has a time limit: the step's `timeout`, else a default for its module. It is
//! enforced twice: on the host (`timeout -k`, so a stuck command is killed even if we are
//! gone) and here (a deadline on the await, for a connection that stops answering).

use std::time::Duration;

use anyhow::{anyhow, Result};
use sha2::Digest as _;

use crate::modules::Module;
use crate::playbook::Step;
use crate::transport::{ExecOutput, Session};

/// Most modules: a few commands or a file.
pub const DEFAULT: Duration = Duration::from_secs(5 * 60);
/// Package installs and downloads: slow mirrors, big packages.
pub const SLOW: Duration = Duration::from_secs(20 * 60);
/// Margin added to a module's own expected duration (`wait_for`'s timeout).
const MARGIN: Duration = Duration::from_secs(60);
/// Grace between the remote TERM and KILL (`timeout -k`).
pub const KILL_AFTER: Duration = Duration::from_secs(10);
/// The local deadline waits this much longer than the remote one, so the host's own
/// `timeout` answers first when the connection is fine.
const LOCAL_SLACK: Duration = Duration::from_secs(5);

/// Exit status of `timeout` when it stopped the command (124), or killed it after -k (137).
const TIMED_OUT: [u32; 2] = [124, 137];

/// The time limit of a step's changes.
pub fn limit_for(step: &Step, module: &dyn Module) -> Duration {
    if let Some(t) = step.timeout {
        return t;
    }
    if let Some(own) = module.expected_duration() {
        return own + MARGIN;
    }
    match step.module.as_str() {
        "apt" | "apt_repo" | "download" => SLOW,
        _ => DEFAULT,
    }
}

/// "90s", "5m", "1h30m".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// `script` run under the host's `timeout -k`: the script itself is read by `sh` from a
/// here-document on fd 3, so it is never a command-line argument and stdin stays the step's.
pub fn with_remote_limit(script: &str, limit: Duration) -> String {
    let tag = hex::encode(&sha2::Sha256::digest(script.as_bytes())[..8]);
    format!(
        "timeout -k {}s {}s sh /dev/fd/3 3<<'BOOTSTRAP_SCRIPT_{tag}'\n{script}\nBOOTSTRAP_SCRIPT_{tag}\n",
        KILL_AFTER.as_secs(),
        limit.as_secs().max(1),
    )
}

/// Runs `script` with the limit on both sides. A remote timeout comes back as an `Err` saying
/// "timed out after N"; so does a local deadline (the abandoned command is stopped on the host).
pub async fn exec_with_limit(
    session: &Session,
    script: &str,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<ExecOutput> {
    let wrapped = with_remote_limit(script, limit);
    let local = limit + KILL_AFTER + LOCAL_SLACK;
    let started = std::time::Instant::now();
    // The step's own limit replaces the session's default command deadline.
    let run = session.exec_with_deadline(&wrapped, stdin, None);
    match tokio::time::timeout(local, run).await {
        Err(_) => Err(anyhow!(
            "timed out after {} (the host stopped answering; the command was stopped there)",
            human(limit)
        )),
        Ok(Err(e)) => Err(e.into()),
        // 124/137 alone could be the command's own status; having used up the limit cannot.
        Ok(Ok(out)) if TIMED_OUT.contains(&out.exit_status) && started.elapsed() >= limit => {
            Err(anyhow!(
                "timed out after {} (stopped on the host by `timeout`; set a larger `timeout` on \
                 the step if it needs longer)",
                human(limit)
            ))
        }
        Ok(Ok(out)) => Ok(out),
    }
}

/// A deadline for work that is not one remote command (an upload, a fetch).
pub async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit + KILL_AFTER + LOCAL_SLACK, work).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!("timed out after {}", human(limit))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_limit_stops_a_stuck_script_and_keeps_stdin() {
        let run = |script: &str, limit: u64, stdin: &str| {
            crate::testing::output_with_stdin(
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(with_remote_limit(script, Duration::from_secs(limit))),
                stdin.as_bytes(),
            )
        };
        let out = run("read x; echo \"got $x\"; exit 3", 5, "secret\n");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "got secret\n");
        assert_eq!(out.status.code(), Some(3));
        let started = std::time::Instant::now();
        let out = run("sleep infinity", 1, "");
        assert_eq!(out.status.code(), Some(124));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn durations_read_like_the_playbook_syntax() {
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(1200)), "20m");
        assert_eq!(human(Duration::from_secs(3)), "3s");
    }
}
