//! A firewall change that could cut us off, applied with a rollback armed on the host.
//!
//! 1. Snapshot: the module's `snapshot` saves the firewall into a fresh directory of this run
//!    (`<state>/fw/<run>-<n>`); an incomplete copy stops here, nothing changed.
//! 2. Arm: a watchdog service with one fixed name per host (`bootstrap-fw-rollback.service`;
//!    arming fails if one is already pending). It rolls back at a deadline written when the
//!    change ends (end + 90 s), or at a hard cap (the step's time limit + 90 s) if the change
//!    never ends.
//! 3. The change; then a brand-new SSH login must work.
//! 4. Disarm, or roll back at once. Either side first creates `<snap>/decided` (atomic
//!    `mkdir`), so a disarm that succeeds proves the watchdog had not fired, and a watchdog
//!    that fired is reported as such, never as disarmed.
//!
//! A rollback that had to disable the firewall (snapshot unusable) says `FAIL-OPEN`, and the
//! step's message says the firewall is now open.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::runner::host::FW_UNIT;
use crate::runner::log::HostLog;
use crate::transport::shell::quote;
use crate::transport::Session;

/// Seconds after the end of the change at which the rollback fires unless disarmed.
pub const ROLLBACK_AFTER_SECS: u64 = 90;

static GUARDED_CHANGES: AtomicUsize = AtomicUsize::new(0);

pub struct Guard<'a> {
    pub session: &'a Session,
    pub log: &'a HostLog,
    pub state_dir: &'a str,
    pub run_id: &'a str,
    /// The step's time limit: bounds the change, and with 90 s the watchdog's hard cap.
    pub limit: Duration,
}

impl Guard<'_> {
    pub async fn apply(&self, snapshot: &str, script: &str, rollback: &str) -> Result<()> {
        let n = GUARDED_CHANGES.fetch_add(1, Ordering::Relaxed);
        let snap = format!("{}/fw/{}-{n}", self.state_dir, self.run_id);
        let vars = format!(
            "d={}; snap={}; export snap\n",
            quote(self.state_dir),
            quote(&snap)
        );

        let arm = self.arm_script(&vars, snapshot, rollback);
        self.log.write("snapshot and arm firewall rollback", &arm);
        let armed = self.session.exec(&arm, None).await?;
        self.log_output(&armed);
        if !armed.success() {
            bail!(
                "firewall not changed: {}",
                match armed.exit_status {
                    3 => format!(
                        "a firewall rollback is already pending on this host ({FW_UNIT}); \
                         wait for it to fire, or check access and stop it, then rerun"
                    ),
                    4 => format!(
                        "the firewall snapshot failed ({}); refusing to change the firewall without one",
                        armed.stderr_str().trim()
                    ),
                    _ => format!(
                        "cannot arm the rollback watchdog (systemd-run): {}; refusing to change \
                         the firewall without it",
                        armed.stderr_str().trim()
                    ),
                }
            );
        }

        let change = format!(
            "{vars}(\n{script}\n)\nrc=$?\necho $(( $(date +%s) + {ROLLBACK_AFTER_SECS} )) > \"$snap/deadline\"\nexit $rc\n"
        );
        self.log.write("run", &change);
        let out =
            crate::runner::deadline::exec_with_limit(self.session, &change, None, self.limit).await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // Connection lost or the time limit passed: the watchdog is still armed.
                bail!(
                    "{e:#}; the firewall rollback armed on the host restores the previous firewall \
                     within {ROLLBACK_AFTER_SECS}s of the change's end (at most {}s from now)",
                    self.limit.as_secs() + ROLLBACK_AFTER_SECS
                );
            }
        };
        self.log_output(&out);
        if !out.success() {
            let undone = self.roll_back_now(&vars, rollback).await;
            bail!(
                "firewall change failed (exit {}): {}; {undone}",
                out.exit_status,
                out.stderr_str().trim()
            );
        }

        self.log
            .write("verify", "fresh SSH login after the firewall change");
        if let Err(e) = self.session.verify_fresh_login().await {
            // The established connection usually survives (conntrack); undo at once through it.
            let undone = self.roll_back_now(&vars, rollback).await;
            bail!("after the firewall change a new SSH login failed ({e}); {undone}");
        }

        let disarm = disarm_script(&vars);
        self.log.write("disarm firewall rollback", &disarm);
        let out = self.session.exec(&disarm, None).await?;
        self.log_output(&out);
        if !out.success() {
            bail!(
                "the firewall change was verified, but its rollback had already fired before it \
                 could be disarmed ({}); the previous firewall is back: rerun to apply the change again",
                out.stdout_str().trim().replace('\n', " ")
            );
        }
        Ok(())
    }

    /// Snapshot (exit 4 if incomplete), refuse when a watchdog is already pending (exit 3),
    /// then arm a fresh one.
    fn arm_script(&self, vars: &str, snapshot: &str, rollback: &str) -> String {
        let cap = self.limit.as_secs() + 10 + ROLLBACK_AFTER_SECS;
        let watchdog = watchdog_script(vars, cap, rollback, self.run_id);
        format!(
            "{vars}umask 077\n\
             mkdir -p \"$d/fw\" && chmod 700 \"$d\" && rm -rf \"$snap\" && mkdir \"$snap\" || exit 4\n\
             systemctl reset-failed {FW_UNIT} 2>/dev/null\n\
             if systemctl is-active --quiet {FW_UNIT}; then exit 3; fi\n\
             ( set -e\n{snapshot}\n) || exit 4\n\
             cat > \"$snap/watchdog.sh\" <<'BOOTSTRAP_WATCHDOG_END'\n{watchdog}BOOTSTRAP_WATCHDOG_END\n\
             printf 'run=%s armed=%s\\n' {run} \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" > \"$d/fw/armed\"\n\
             systemd-run --quiet --collect --unit={FW_UNIT} /bin/sh \"$snap/watchdog.sh\" || exit 5\n",
            run = quote(self.run_id),
        )
    }

    /// Rolls back through the current connection, unless the watchdog already did; says what
    /// state the firewall is in.
    async fn roll_back_now(&self, vars: &str, rollback: &str) -> String {
        let script = format!(
            "{vars}if mkdir \"$snap/decided\" 2>/dev/null; then\n\
             systemctl stop {FW_UNIT} 2>/dev/null; rm -f \"$d/fw/armed\"\n\
             (\n{rollback}\n)\n\
             else echo 'ALREADY'; cat \"$d/fw/fired\" 2>/dev/null; fi\n"
        );
        self.log.write("roll back firewall now", &script);
        match self.session.exec(&script, None).await {
            Ok(out) => {
                self.log_output(&out);
                let text = out.stdout_str();
                if text.contains("FAIL-OPEN") {
                    "rolled back by DISABLING the firewall (the saved one could not be restored): \
                     the host is now unprotected; check it"
                        .into()
                } else if text.contains("RESTORED") {
                    "rolled back: the previous firewall is restored".into()
                } else if text.starts_with("ALREADY") {
                    format!(
                        "the armed rollback had already fired: {}",
                        text.lines().nth(1).unwrap_or("").trim()
                    )
                } else {
                    format!(
                        "the rollback did not confirm success (exit {}): check the host",
                        out.exit_status
                    )
                }
            }
            Err(_) => format!(
                "it could not be undone now; the armed rollback restores the previous firewall \
                 within {ROLLBACK_AFTER_SECS}s of the change's end"
            ),
        }
    }

    fn log_output(&self, out: &crate::transport::ExecOutput) {
        self.log.write(
            &format!("exit {}", out.exit_status),
            &format!("{}{}", out.stdout_str(), out.stderr_str()),
        );
    }
}

/// Waits for the deadline written at the end of the change (else the hard cap `cap` seconds
/// from arming), then rolls back unless the run decided first.
fn watchdog_script(vars: &str, cap: u64, rollback: &str, run_id: &str) -> String {
    format!(
        "{vars}cap=$(( $(date +%s) + {cap} ))\n\
         while :; do\n\
         now=$(date +%s)\n\
         dl=$(cat \"$snap/deadline\" 2>/dev/null || echo \"$cap\")\n\
         [ \"$now\" -ge \"$dl\" ] && break\n\
         sleep 1\n\
         done\n\
         mkdir \"$snap/decided\" 2>/dev/null || exit 0\n\
         result=$( (\n{rollback}\n) 2>&1 | tail -n 1)\n\
         printf 'run=%s at=%s result=%s\\n' {run} \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"$result\" > \"$d/fw/fired\"\n",
        run = quote(run_id),
    )
}

/// Disarms only if the watchdog has not decided yet (exit 4 and its verdict otherwise).
fn disarm_script(vars: &str) -> String {
    format!(
        "{vars}if mkdir \"$snap/decided\" 2>/dev/null; then\n\
         state=$(systemctl is-active {FW_UNIT})\n\
         systemctl stop {FW_UNIT}\n\
         rm -f \"$d/fw/armed\"; rm -rf \"$snap\"\n\
         echo \"disarmed (watchdog was $state)\"\n\
         else echo fired; cat \"$d/fw/fired\" 2>/dev/null; exit 4; fi\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> (i32, String) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn vars(d: &std::path::Path) -> String {
        let snap = d.join("fw/run-0");
        std::fs::create_dir_all(&snap).unwrap();
        format!(
            "d={}; snap={}; export snap\n",
            quote(d.to_str().unwrap()),
            quote(snap.to_str().unwrap())
        )
    }

    /// The watchdog and the disarm race for one `mkdir`: a disarm after the rollback fired
    /// says so, and a watchdog after a disarm does nothing.
    #[test]
    fn a_disarm_proves_the_rollback_had_not_fired() {
        let tmp = tempfile::tempdir().unwrap();
        let v = vars(tmp.path());
        let snap = tmp.path().join("fw/run-0");
        let rollback = format!(
            "touch {}/rolled-back; echo RESTORED",
            quote(tmp.path().to_str().unwrap())
        );
        // The change ended long ago: the deadline has passed.
        std::fs::write(snap.join("deadline"), "0\n").unwrap();
        let (code, _) = sh(&watchdog_script(&v, 3600, &rollback, "run-0"));
        assert_eq!(code, 0);
        assert!(tmp.path().join("rolled-back").exists());
        let fired = std::fs::read_to_string(tmp.path().join("fw/fired")).unwrap();
        assert!(
            fired.contains("run=run-0") && fired.contains("result=RESTORED"),
            "{fired}"
        );
        let (code, out) = sh(&disarm_script(&v));
        assert_eq!(
            code, 4,
            "a fired rollback is never reported as disarmed: {out}"
        );
        assert!(out.starts_with("fired"), "{out}");

        // Disarmed first: the watchdog, when its time comes, leaves the firewall alone.
        let tmp = tempfile::tempdir().unwrap();
        let v = vars(tmp.path());
        std::fs::write(tmp.path().join("fw/run-0/deadline"), "0\n").unwrap();
        let (code, out) = sh(&disarm_script(&v));
        assert_eq!(code, 0, "{out}");
        std::fs::create_dir_all(tmp.path().join("fw/run-0")).unwrap();
        std::fs::create_dir_all(tmp.path().join("fw/run-0/decided")).unwrap();
        std::fs::write(tmp.path().join("fw/run-0/deadline"), "0\n").unwrap();
        let rollback = format!("touch {}/rolled-back", quote(tmp.path().to_str().unwrap()));
        sh(&watchdog_script(&v, 3600, &rollback, "run-0"));
        assert!(!tmp.path().join("rolled-back").exists());
    }

    /// The deadline counts from the end of the change: before it is written, only the hard
    /// cap (from arming) applies.
    #[test]
    fn the_watchdog_waits_for_the_end_of_the_change() {
        let tmp = tempfile::tempdir().unwrap();
        let v = vars(tmp.path());
        let rollback = format!("touch {}/rolled-back", quote(tmp.path().to_str().unwrap()));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(watchdog_script(&v, 3600, &rollback, "run-0"))
            .spawn()
            .unwrap();
        // No deadline yet (the change is still running): the watchdog keeps waiting.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "fired before the change ended"
        );
        std::fs::write(tmp.path().join("fw/run-0/deadline"), "0\n").unwrap();
        let status = child.wait().unwrap();
        assert!(status.success());
        assert!(tmp.path().join("rolled-back").exists());
    }
}
