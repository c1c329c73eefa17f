//! The one function every change passes through. In check mode it only records the sentence,
//! so a dry run cannot be bypassed by any module.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::modules::{Action, Change};
use crate::runner::log::HostLog;
use crate::runner::{deadline, firewall_guard};
use crate::transport::Session;

#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// `--check`: change nothing anywhere.
    pub check: bool,
    /// `--diff`: show file content differences.
    pub diff: bool,
}

/// Where and how a change is applied on one host.
pub struct ApplyCtx<'a> {
    pub session: &'a Session,
    pub mode: Mode,
    pub log: &'a HostLog,
    pub cache_dir: &'a Path,
    /// The host-side state directory (firewall snapshots live there).
    pub state_dir: &'a str,
    pub run_id: &'a str,
}

/// Applies one change within `limit` (see `deadline`).
pub async fn apply(ctx: &ApplyCtx<'_>, change: &Change, limit: Duration) -> Result<()> {
    let (session, log) = (ctx.session, ctx.log);
    if ctx.mode.check {
        log.write("would change", &change.summary);
        return Ok(());
    }
    log.write("change", &change.summary);
    match &change.action {
        Action::Shell { script, stdin } => {
            log.write("run", script);
            let out = deadline::exec_with_limit(session, script, stdin.as_deref(), limit).await?;
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
            deadline::within(
                limit,
                session.upload(content, dest, attrs, validate.as_deref(), *backup),
            )
            .await
            .with_context(|| format!("upload of {dest}"))?;
        }
        Action::Fetch {
            remote,
            local,
            mode: file_mode,
        } => {
            log.write("fetch", &format!("{remote} -> {}", local.display()));
            let bytes = deadline::within(limit, session.read_file(remote)).await?;
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
                (url.clone(), sha256.clone(), ctx.cache_dir.to_path_buf());
            let work = async {
                let cached = tokio::task::spawn_blocking(move || {
                    crate::modules::download::fetch_to_cache(&url_owned, &sha_owned, &dir)
                })
                .await??;
                let content = std::fs::read(&cached)?;
                session.upload(&content, dest, attrs, None, false).await
            };
            deadline::within(limit, work).await?;
        }
        Action::GuardedFirewall {
            snapshot,
            script,
            rollback,
        } => {
            let guard = firewall_guard::Guard {
                session,
                log,
                state_dir: ctx.state_dir,
                run_id: ctx.run_id,
                limit,
            };
            guard.apply(snapshot, script, rollback).await?;
        }
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
