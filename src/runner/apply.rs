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

pub async fn apply(
    session: &Session,
    change: &Change,
    mode: Mode,
    log: &HostLog,
    cache_dir: &Path,
) -> Result<()> {
    if mode.check {
        log.write("would change", &change.summary);
        return Ok(());
    }
    log.write("change", &change.summary);
    match &change.action {
        Action::Shell { script, stdin } => {
            log.write("run", script);
            let out = session.exec(script, stdin.as_deref()).await?;
            log_output(log, &out);
            if !out.success() {
                bail!(
                    "{} failed (exit {}): {}",
                    change.summary,
                    out.exit_status,
                    log.redactor()
                        .redact(last_lines(&out.stderr_str(), &out.stdout_str()).trim())
                );
            }
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
            sha256,
        } => {
            log.write("fetch", &format!("{remote} -> {}", local.display()));
            let bytes = session.read_file(remote).await?;
            check_fetched(remote, &bytes, sha256)?;
            write_local(local, &bytes, *file_mode)
                .with_context(|| format!("writing {}", local.display()))?;
        }
        Action::LocalMode { path, mode } => {
            use std::os::unix::fs::PermissionsExt;
            log.write("local mode", &format!("{:04o} {}", mode, path.display()));
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
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
    Ok(())
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
/// The bytes read back must be the file the probe saw: nothing is written otherwise.
fn check_fetched(remote: &str, bytes: &[u8], probed_sha256: &str) -> Result<()> {
    let got = crate::modules::file::sha256_hex(bytes);
    if got != probed_sha256 {
        bail!(
            "{remote} read back with sha256 {got}, not the probed {probed_sha256}: it changed \
             on the host meanwhile (or the transfer was damaged); nothing was written"
        );
    }
    Ok(())
}

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
    // Exactly `mode`, whatever the umask.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_content_not_checked_against_the_probed_sha256() {
        let probed = crate::modules::file::sha256_hex(b"v1\n");
        check_fetched("/etc/k", b"v1\n", &probed).unwrap();
        let err = check_fetched("/etc/k", b"v2\n", &probed).unwrap_err();
        assert!(err.to_string().contains("nothing was written"), "{err}");
    }

    #[test]
    fn a_fetched_file_gets_exactly_its_mode_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kubeconfig");
        write_local(&path, b"x", 0o640).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
    }
}
