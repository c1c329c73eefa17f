//! What a run keeps on each host, under one root-only directory (`/var/lib/bootstrap` unless
//! `BOOTSTRAP_HOST_STATE_DIR` says otherwise): the run lock, the handlers still owed, and the
//! firewall guard's snapshots and verdicts.
//!
//! The lock is an `flock` held by a keeper process started over the run's own SSH connection,
//! reading its stdin: the run ends it by sending `unlock` (its `lock.info` is then removed);
//! when the connection is gone its stdin ends, it exits and the kernel releases the lock, but
//! `lock.info` stays behind and the next run reports it as a stale lock taken over.

use base64::Engine as _;
use std::collections::{BTreeMap, BTreeSet};

use crate::transport::shell::quote;
use crate::transport::ssh::Held;
use crate::transport::Session;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/bootstrap";

/// The systemd unit of the firewall rollback watchdog: one per host, whatever the run.
pub const FW_UNIT: &str = "bootstrap-fw-rollback.service";

/// The state directory on inventory host `host`. `BOOTSTRAP_HOST_STATE_DIR` may move it
/// (absolute; `{host}` in it becomes the inventory name, for test rigs where several inventory
/// hosts are one machine).
pub fn state_dir(host: &str) -> String {
    std::env::var("BOOTSTRAP_HOST_STATE_DIR")
        .ok()
        .filter(|d| d.starts_with('/'))
        .map(|d| d.replace("{host}", host))
        .unwrap_or_else(|| DEFAULT_STATE_DIR.to_string())
}

/// Who runs: written into the lock, shown to whoever finds it held.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: String,
    pub admin: String,
    pub started: String,
}

impl RunInfo {
    pub fn new(run_id: &str) -> RunInfo {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| format!("uid {}", nix_uid()));
        RunInfo {
            run_id: run_id.to_string(),
            admin: format!("{user}@{host} pid {}", std::process::id()),
            started: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }
}

fn nix_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        })
        .unwrap_or_else(|| "?".into())
}

/// What the host said when the run took (or, in check mode, looked at) its lock.
#[derive(Debug, Default)]
pub struct Found {
    /// `lock.info` of a holder that is gone ("run=... admin=... started=...").
    pub stale_lock: Option<String>,
    /// Another run holds the lock now.
    pub busy: Option<String>,
    /// Handlers notified by an earlier run and never run: playbook key -> names.
    pub pending: BTreeMap<String, BTreeSet<String>>,
    /// A firewall rollback watchdog is still armed (by a run that never disarmed it).
    pub fw_pending: Option<String>,
    /// A firewall rollback fired since the last run looked.
    pub fw_fired: Option<String>,
    keeper_pid: Option<String>,
    /// What the facts script printed, when one was sent with the lock.
    pub facts: Option<String>,
    /// What the early probe batch printed, when one was sent with the lock.
    pub probes: Option<String>,
}

/// Reports what is pending and what fired; the part shared by the lock and the check-mode look.
fn report_script(acknowledge: bool) -> String {
    // Runs after `d=<state dir>` in the lock and look scripts.
    let ack = if acknowledge {
        "mv -f \"$d/fw/fired\" \"$d/fw/fired.reported\"\n"
    } else {
        ""
    };
    format!(
        "for f in \"$d\"/handlers/*; do [ -f \"$f\" ] || continue\n\
         while IFS= read -r h; do [ -n \"$h\" ] && printf 'pending %s %s\\n' \"${{f##*/}}\" \"$h\"; done < \"$f\"\n\
         done\n\
         if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet {FW_UNIT}; then\n\
         printf 'fw-pending %s\\n' \"$(tr '\\n' ' ' < \"$d/fw/armed\" 2>/dev/null)\"\n\
         fi\n\
         if [ -f \"$d/fw/fired\" ]; then printf 'fw-fired %s\\n' \"$(tr '\\n' ' ' < \"$d/fw/fired\")\"\n{ack}fi\n"
    )
}

/// The keeper: takes the lock (or says who holds it), reports, then holds it for the session.
///
/// The gate (`lock.gate`, held only for an instant) makes taking the lock and writing the
/// holder's details one step for anyone who looks: a run that finds the lock held reads
/// `lock.info` under the gate, so it always names the current holder, never a half-written
/// file nor a dead run's leftover. The keeper gives the lock back under the gate too.
fn lock_script(d: &str, who: &RunInfo, early: &Early) -> String {
    format!(
        "d={d}\n\
         umask 077\n\
         mkdir -p \"$d/handlers\" \"$d/fw\" && chmod 700 \"$d\" || exit 3\n\
         exec 9>>\"$d/lock\" 8>>\"$d/lock.gate\" || exit 3\n\
         flock -w {GATE_WAIT} 8 || {{ echo \"the lock's gate $d/lock.gate stayed held for {GATE_WAIT}s\" >&2; exit 3; }}\n\
         if ! flock -n 9; then echo busy; tr '\\n' ' ' < \"$d/lock.info\" 2>/dev/null; echo; exit 75; fi\n\
         if [ -s \"$d/lock.info\" ]; then printf 'stale %s\\n' \"$(tr '\\n' ' ' < \"$d/lock.info\")\"; fi\n\
         printf 'run=%s\\nadmin=%s\\nstarted=%s\\nkeeper=%s\\n' {run} {admin} {started} \"$$\" > \"$d/lock.info.tmp\" && mv -f \"$d/lock.info.tmp\" \"$d/lock.info\" || exit 3\n\
         exec 8>&-\n\
         echo \"keeper $$\"\n\
         {report}\
         {facts}\
         echo ready\n\
         IFS= read -r word || true\n\
         if [ \"$word\" = unlock ]; then exec 8>>\"$d/lock.gate\" && flock -w {GATE_WAIT} 8; rm -f \"$d/lock.info\"; fi\n\
         exit 0\n",
        d = quote(d),
        run = quote(&who.run_id),
        admin = quote(&who.admin),
        started = quote(&who.started),
        report = report_script(true),
        facts = early_block(early),
    )
}

/// Seconds a run waits for the lock's gate (held by others only while they take, describe or
/// give back the lock: an instant).
const GATE_WAIT: u32 = 10;

/// Check mode: the same answers, read-only (nothing created, the lock not taken).
fn look_script(d: &str, early: &Early) -> String {
    format!(
        "d={d}\n\
         {facts}\
         [ -d \"$d\" ] || {{ echo ready; exit 0; }}\n\
         if [ -f \"$d/lock.gate\" ] && exec 8<\"$d/lock.gate\"; then flock -w {GATE_WAIT} 8; fi\n\
         if [ -f \"$d/lock\" ] && ! flock -n \"$d/lock\" true; then echo busy; tr '\\n' ' ' < \"$d/lock.info\" 2>/dev/null; echo; fi\n\
         exec 8<&-\n\
         {report}\
         echo ready\n",
        d = quote(d),
        report = report_script(false),
        facts = early_block(early),
    )
}

/// What the run asks a host together with its lock (see `prefetch`): scripts whose output
/// comes back whole on the lock's answer.
#[derive(Debug, Default)]
pub struct Early {
    /// The facts of the host's plays.
    pub facts: Option<String>,
    /// The probes that need no fact (a batch with no stdin of its own).
    pub probes: Option<String>,
    /// Bound on each script, like any command's (`timeout` stops it and what it started).
    pub deadline: Option<std::time::Duration>,
}

/// The early scripts, both at once, each's whole output on one line (`facts ...`, `probes
/// ...`), base64: nothing they print can pass for a lock word or the ready line. No stdin (the
/// keeper's is the unlock word) and not the lock's descriptor (a daemon a command started must
/// not keep the lock).
fn early_block(early: &Early) -> String {
    let asked: Vec<(&str, &String)> = [("facts", &early.facts), ("probes", &early.probes)]
        .into_iter()
        .filter_map(|(word, script)| script.as_ref().map(|s| (word, s)))
        .collect();
    if asked.is_empty() {
        return String::new();
    }
    let mut block = String::from("if __bs_e=$(mktemp -d 2>/dev/null); then\n");
    // Each script goes to a file (a script may be larger than an argument can be), then runs
    // under `timeout` when there is a deadline, so a hung fact cannot keep the lock's answer.
    let bound = match early.deadline {
        Some(d) => format!(
            "timeout -k {} {} ",
            crate::transport::shell::KILL_AFTER.as_secs(),
            d.as_secs().max(1)
        ),
        None => String::new(),
    };
    let nonce: String =
        rand::Rng::sample_iter(rand::thread_rng(), &rand::distributions::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
    for (word, script) in &asked {
        block.push_str(&format!(
            "cat >\"$__bs_e/{word}.sh\" <<'__BS_EARLY_{nonce}'\n{script}\n__BS_EARLY_{nonce}\n\
             ( {bound}sh \"$__bs_e/{word}.sh\" >\"$__bs_e/{word}\" 2>/dev/null ) </dev/null 9>&- &\n"
        ));
    }
    block.push_str("wait\n");
    for (word, _) in &asked {
        block.push_str(&format!(
            "printf '{word} %s\\n' \"$(base64 -w0 < \"$__bs_e/{word}\")\"\n"
        ));
    }
    block.push_str("rm -rf \"$__bs_e\"\nfi\n");
    block
}

fn decode(base64_text: &str) -> Option<String> {
    base64::engine::general_purpose::STANDARD
        .decode(base64_text.trim())
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn parse(text: &str) -> Found {
    let mut found = Found::default();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "busy" => found.busy = Some(lines.next().unwrap_or("").trim().to_string()),
            "stale" => found.stale_lock = Some(rest.trim().to_string()),
            "keeper" => found.keeper_pid = Some(rest.trim().to_string()),
            "pending" => {
                if let Some((key, name)) = rest.split_once(' ') {
                    found
                        .pending
                        .entry(key.to_string())
                        .or_default()
                        .insert(name.to_string());
                }
            }
            "fw-pending" => found.fw_pending = Some(rest.trim().to_string()),
            "fw-fired" => found.fw_fired = Some(rest.trim().to_string()),
            "facts" => found.facts = decode(rest),
            "probes" => found.probes = decode(rest),
            _ => {}
        }
    }
    found
}

/// The lock a run holds on one host.
pub struct HostLock {
    held: Held,
}

/// Takes the host's lock for this run (`take`), or only looks (check mode). `Ok((None, found))`
/// with `found.busy` set when another run holds it.
pub async fn lock(
    session: &Session,
    dir: &str,
    who: &RunInfo,
    take: bool,
    early: &Early,
) -> anyhow::Result<(Option<HostLock>, Found)> {
    let script = if take {
        lock_script(dir, who, early)
    } else {
        look_script(dir, early)
    };
    match session.hold(&script, "ready").await? {
        Ok((text, held)) => {
            let found = parse(&text);
            if !take {
                held.release(b"").await;
                return Ok((None, found));
            }
            let lock = HostLock { held };
            Ok((Some(lock), found))
        }
        Err(out) if out.exit_status == 75 => Ok((None, parse(&out.stdout_str()))),
        Err(out) => anyhow::bail!(
            "cannot take the run lock under {dir} (exit {}): {}{}",
            out.exit_status,
            out.stderr_str().trim(),
            if out.exit_status == 127 || out.stderr_str().contains("flock") {
                " (is util-linux's flock installed?)"
            } else {
                ""
            }
        ),
    }
}

impl HostLock {
    /// Gives the lock back: the keeper removes our `lock.info` and exits.
    pub async fn unlock(self) {
        self.held.release(b"unlock\n").await;
    }
}

/// A file name for a playbook's pending handlers: its file stem, made safe.
pub fn playbook_key(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "playbook".into());
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Adds `names` to the handlers owed by `key`'s playbook on the host.
pub fn record_pending_script(dir: &str, key: &str, names: &BTreeSet<String>) -> String {
    let lines: Vec<String> = names.iter().map(|n| quote(n)).collect();
    format!(
        "d={}; f=\"$d/handlers\"/{}\n\
         umask 077; mkdir -p \"$d/handlers\" && chmod 700 \"$d\" || exit 3\n\
         {{ cat \"$f\" 2>/dev/null; printf '%s\\n' {}; }} | sort -u > \"$f.tmp\" && mv -f \"$f.tmp\" \"$f\"\n",
        quote(dir),
        quote(key),
        lines.join(" ")
    )
}

/// Removes one handler from what `key`'s playbook owes (it ran successfully).
pub fn clear_pending_script(dir: &str, key: &str, name: &str) -> String {
    format!(
        "f={}/handlers/{}\n\
         [ -f \"$f\" ] || exit 0\n\
         grep -vxF -- {} \"$f\" > \"$f.tmp\"\n\
         if [ -s \"$f.tmp\" ]; then mv -f \"$f.tmp\" \"$f\"; else rm -f \"$f\" \"$f.tmp\"; fi\n",
        quote(dir),
        quote(key),
        quote(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    }

    /// `flock` processes whose parent is `pid` (a lock script waiting for the gate).
    fn flock_children_of(pid: u32) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // "pid (comm) state ppid ..."
                let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
                let ppid = after.split(' ').nth(1).unwrap_or("");
                stat.contains("(flock)") && ppid == pid.to_string()
            })
            .count()
    }

    /// Issue 23: a run arriving between another run's `flock` and its `lock.info` used to show
    /// "(its details are not written yet)", or a dead run's leftover `lock.info` as the holder.
    /// Here the winner is held in that gap on purpose, with a dead run's file in place.
    #[test]
    fn a_run_finding_the_lock_taken_but_not_yet_described_names_the_new_holder() {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("state");
        let d = d.to_str().unwrap();
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(format!("{d}/lock.info"), "run=dead-run\nkeeper=1\n").unwrap();
        let winner_script = format!(
            "d={d}; exec 9>>\"$d/lock\" 8>>\"$d/lock.gate\"; flock 8; flock 9; echo held; read x; \
             printf 'run=winner-run\\n' > \"$d/lock.info\"; exec 8>&-; echo described; read y"
        );
        let mut winner = Command::new("sh")
            .args(["-c", &winner_script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut winner_in = winner.stdin.take().unwrap();
        let mut winner_out = std::io::BufReader::new(winner.stdout.take().unwrap());
        let mut line = String::new();
        winner_out.read_line(&mut line).unwrap();
        assert_eq!(line, "held\n");

        let mut loser = Command::new("sh")
            .args([
                "-c",
                &lock_script(d, &RunInfo::new("loser-run"), &Early::default()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Until the loser either answered already or waits at the gate.
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while loser.try_wait().unwrap().is_none() && flock_children_of(loser.id()) == 0 {
            assert!(
                std::time::Instant::now() < limit,
                "the loser neither answered nor waited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        winner_in.write_all(b"go\n").unwrap();
        line.clear();
        winner_out.read_line(&mut line).unwrap();
        assert_eq!(line, "described\n");
        let out = loser.wait_with_output().unwrap();
        let found = parse(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(found.busy.as_deref(), Some("run=winner-run"), "{found:?}");
        winner_in.write_all(b"end\n").unwrap();
        winner.wait().unwrap();
    }

    #[test]
    fn pending_handlers_are_recorded_listed_and_cleared_one_by_one() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("state");
        let d = d.to_str().unwrap();
        let names: BTreeSet<String> = ["restart postgresql".to_string(), "it's".to_string()].into();
        assert!(sh(&record_pending_script(d, "worker", &names))
            .status
            .success());
        let look = sh(&look_script(d, &Early::default()));
        let found = parse(&String::from_utf8_lossy(&look.stdout));
        assert_eq!(found.pending["worker"], names);
        assert!(found.busy.is_none() && found.fw_fired.is_none());
        assert!(sh(&clear_pending_script(d, "worker", "it's"))
            .status
            .success());
        let found = parse(&String::from_utf8_lossy(
            &sh(&look_script(d, &Early::default())).stdout,
        ));
        assert_eq!(
            found.pending["worker"],
            BTreeSet::from(["restart postgresql".to_string()])
        );
        assert!(sh(&clear_pending_script(d, "worker", "restart postgresql"))
            .status
            .success());
        let found = parse(&String::from_utf8_lossy(
            &sh(&look_script(d, &Early::default())).stdout,
        ));
        assert!(found.pending.is_empty());
        let mode = std::fs::metadata(d).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o700, "root-only state");
    }

    #[test]
    fn facts_sent_with_the_lock_come_back_whole_and_cannot_pass_for_lock_words() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("state");
        let d = d.to_str().unwrap();
        // A fact printing the keeper's own words, and one reading stdin (it must get none).
        let facts = "echo busy; echo ready; echo 'pending worker x'; cat; echo last";
        let early = Early {
            facts: Some(facts.to_string()),
            probes: Some("echo 'probes x'; echo stale; cat".to_string()),
            deadline: None,
        };
        let who = RunInfo::new("run-1");
        for script in [lock_script(d, &who, &early), look_script(d, &early)] {
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"unlock\n").unwrap();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let before_ready = &text[..text.find("\nready\n").expect("ready line") + 1];
            let found = parse(before_ready);
            assert_eq!(
                found.facts.as_deref(),
                Some("busy\nready\npending worker x\nlast\n"),
                "{text}"
            );
            assert_eq!(found.probes.as_deref(), Some("probes x\nstale\n"), "{text}");
            assert!(
                found.busy.is_none() && found.pending.is_empty() && found.stale_lock.is_none(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_hung_script_sent_with_the_lock_is_stopped_at_its_deadline() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("state");
        let early = Early {
            facts: Some("echo first; sleep 60; echo never".to_string()),
            probes: Some("echo probed".to_string()),
            deadline: Some(std::time::Duration::from_secs(1)),
        };
        let started = std::time::Instant::now();
        let out = sh(&look_script(d.to_str().unwrap(), &early));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the hung fact kept the answer {:?}",
            started.elapsed()
        );
        let found = parse(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(found.facts.as_deref(), Some("first\n"));
        assert_eq!(found.probes.as_deref(), Some("probed\n"));
    }

    #[test]
    fn playbook_keys_are_plain_file_names() {
        assert_eq!(
            playbook_key(std::path::Path::new("/x/worker.toml")),
            "worker"
        );
        assert_eq!(playbook_key(std::path::Path::new("a b;c.toml")), "a_b_c");
    }
}
