//! The one function every change passes through. In check mode it only records the sentence,
//! so a dry run cannot be bypassed by any module.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::modules::{Action, Change};
use crate::runner::log::HostLog;
use crate::transport::{shell, Session};

#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// `--check`: change nothing anywhere.
    pub check: bool,
    /// `--diff`: show file content differences.
    pub diff: bool,
}

/// Seconds after which an armed firewall rollback fires unless disarmed.
const ROLLBACK_AFTER_SECS: u32 = 90;

/// Applies one change; returns what a shell change printed on stdout (for `register`).
/// `sensitive`: the output may hold a secret not known yet (a value about to be registered as
/// secret), so it is neither logged nor quoted in an error.
pub async fn apply(
    session: &Session,
    change: &Change,
    mode: Mode,
    log: &HostLog,
    cache_dir: &Path,
    sensitive: bool,
) -> Result<Option<String>> {
    if mode.check {
        log.write("would change", &change.summary);
        return Ok(None);
    }
    log.write("change", &change.summary);
    match &change.action {
        Action::Shell { script, stdin } => {
            // argv is visible to every user of the host (`ps`): secrets travel on stdin.
            if log.redactor().contains_secret(script) {
                bail!(
                    "{}: refused, a secret would be on the command line; pass it with `stdin`",
                    change.summary
                );
            }
            log.write("run", script);
            let out = session.exec(script, stdin.as_deref()).await?;
            if sensitive {
                log.write(
                    &format!("exit {}", out.exit_status),
                    "(sensitive output not logged)",
                );
            } else {
                log_output(log, &out);
            }
            if !out.success() {
                let said = if sensitive {
                    out.stderr_str().to_string()
                } else {
                    last_lines(&out.stderr_str(), &out.stdout_str())
                };
                bail!(
                    "{} failed (exit {}): {}",
                    change.summary,
                    out.exit_status,
                    log.redactor().redact(said.trim())
                );
            }
            return Ok(Some(out.stdout_str()));
        }
        Action::Upload {
            dest,
            content,
            attrs,
            validate,
            backup,
        } => {
            log.write("upload", &format!("{dest} ({} bytes)", content.len()));
            session
                .upload(content, dest, attrs, validate.as_deref(), *backup)
                .await
                .with_context(|| format!("upload of {dest}"))?;
        }
        Action::Fetch {
            remote,
            local,
            mode: file_mode,
        } => {
            log.write("fetch", &format!("{remote} -> {}", local.display()));
            let bytes = session.read_file(remote).await?;
            write_local(local, &bytes, *file_mode)
                .with_context(|| format!("writing {}", local.display()))?;
        }
        Action::Download {
            url,
            sha256,
            dest,
            attrs,
        } => {
            log.write("download", &format!("{url} (sha256 {sha256}) -> {dest}"));
            let (url_owned, sha_owned, dir) =
                (url.clone(), sha256.clone(), cache_dir.to_path_buf());
            let cached = tokio::task::spawn_blocking(move || {
                crate::modules::download::fetch_to_cache(&url_owned, &sha_owned, &dir)
            })
            .await??;
            let content = std::fs::read(&cached)?;
            session.upload(&content, dest, attrs, None, false).await?;
        }
        Action::GuardedFirewall { script, rollback } => {
            guarded_firewall_change(session, script, rollback, log).await?;
        }
    }
    Ok(None)
}

/// Applies a firewall change that could cut us off: arm a rollback on the host, make the change,
/// prove a brand-new SSH login still works, and only then disarm the rollback.
async fn guarded_firewall_change(
    session: &Session,
    script: &str,
    rollback: &str,
    log: &HostLog,
) -> Result<()> {
    let unit = format!("bootstrap-fw-rollback-{}", std::process::id());
    let arm = format!(
        "systemctl stop {unit}.timer {unit}.service 2>/dev/null; systemctl reset-failed {unit}.service {unit}.timer 2>/dev/null; \
         systemd-run --quiet --unit={unit} --on-active={ROLLBACK_AFTER_SECS} --timer-property=AccuracySec=1s /bin/sh -c {}",
        shell::quote(rollback)
    );
    let disarm = format!(
        "systemctl stop {unit}.timer 2>/dev/null; systemctl reset-failed {unit}.service {unit}.timer 2>/dev/null; true"
    );
    log.write("arm firewall rollback", &arm);
    let armed = session.exec(&arm, None).await?;
    log_output(log, &armed);
    if !armed.success() {
        bail!(
            "cannot arm the firewall rollback timer (systemd-run): {}; refusing to change the firewall without it",
            armed.stderr_str().trim()
        );
    }
    log.write("run", script);
    let out = session.exec(script, None).await?;
    log_output(log, &out);
    if !out.success() {
        let undo = session.exec(rollback, None).await;
        let _ = session.exec(&disarm, None).await;
        bail!(
            "firewall change failed (exit {}): {}; rolled back ({})",
            out.exit_status,
            out.stderr_str().trim(),
            if undo.is_ok_and(|o| o.success()) {
                "ok"
            } else {
                "rollback failed too: check the host"
            }
        );
    }
    log.write("verify", "fresh SSH login after the firewall change");
    if let Err(e) = session.verify_fresh_login().await {
        // The established connection usually survives (conntrack); use it to undo at once.
        let undo = session.exec(rollback, None).await;
        let undone = undo.as_ref().is_ok_and(|o| o.success());
        if undone {
            let _ = session.exec(&disarm, None).await;
        }
        bail!(
            "after the firewall change a new SSH login failed ({e}); {}",
            if undone {
                "the change was rolled back".to_string()
            } else {
                format!("the armed rollback restores access within {ROLLBACK_AFTER_SECS}s")
            }
        );
    }
    log.write("disarm firewall rollback", &disarm);
    let out = session.exec(&disarm, None).await?;
    if !out.success() {
        bail!(
            "firewall changed and verified, but disarming rollback unit {unit} failed: {}",
            out.stderr_str().trim()
        );
    }
    Ok(())
}

fn log_output(log: &HostLog, out: &crate::transport::ExecOutput) {
    log.write(
        &format!("exit {}", out.exit_status),
        &format!("{}{}", out.stdout_str(), out.stderr_str()),
    );
}

/// The tail of what a failed command said: stderr, or stdout when stderr is empty.
pub fn last_lines(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Temp file created with its final mode (never briefly readable by others), then renamed.
fn write_local(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("bootstrap-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
