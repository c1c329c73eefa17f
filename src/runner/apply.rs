//! The one function every change passes through. In check mode it only records the sentence,
//! so a dry run cannot be bypassed by any module.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::modules::{Action, Change, FileVersion};
use crate::runner::log::HostLog;
use crate::runner::{deadline, firewall_guard};
use crate::transport::{shell, Session};

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

/// Applies one change within `limit` (see `deadline`); returns what a shell change printed on
/// stdout (for `register`). `sensitive`: the output may hold a secret not known yet (a value
/// about to be registered as secret), so it is neither logged nor quoted in an error.
pub async fn apply(
    ctx: &ApplyCtx<'_>,
    change: &Change,
    limit: Duration,
    sensitive: bool,
) -> Result<Option<String>> {
    let (session, log) = (ctx.session, ctx.log);
    if ctx.mode.check {
        log.write("would change", &change.summary);
        return Ok(None);
    }
    log.write("change", &change.summary);
    if let Some(version) = &change.planned_from {
        still_as_planned(session, log, version).await?;
    }
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
            let out = deadline::exec_with_limit(session, script, stdin.as_deref(), limit).await?;
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
            sha256,
        } => {
            log.write("fetch", &format!("{remote} -> {}", local.display()));
            let bytes = deadline::within(limit, session.read_file(remote)).await?;
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
        Action::DownloadKey {
            url,
            fingerprint,
            dest,
            attrs,
        } => {
            log.write(
                "download key",
                &format!("{url} (OpenPGP fingerprint {fingerprint}) -> {dest}"),
            );
            let (url_owned, fpr_owned) = (url.clone(), fingerprint.clone());
            let work = async {
                let key = tokio::task::spawn_blocking(move || {
                    crate::modules::download::fetch_key(&url_owned, &fpr_owned)
                })
                .await??;
                session.upload(&key, dest, attrs, None, false).await
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
    Ok(None)
}

/// Exit status of `unchanged_script` when the file moved on since the probe.
const CHANGED_SINCE_PROBED: u32 = 9;

/// Exits 0 when `version.path` is still what the plan saw, `CHANGED_SINCE_PROBED` (printing
/// what is there now) otherwise.
pub fn unchanged_script(version: &FileVersion) -> String {
    let want = version.sha256.as_deref().unwrap_or("absent");
    format!(
        "f={}
         if [ -e \"$f\" ] || [ -L \"$f\" ]; then now=$(sha256sum < \"$f\" | cut -d' ' -f1) || exit 1; else now=absent; fi
         [ \"$now\" = {} ] || {{ echo \"$now\"; exit {CHANGED_SINCE_PROBED}; }}
",
        shell::quote(&version.path),
        shell::quote(want),
    )
}

/// Refuses to replace a file that changed since it was probed: the plan was computed from the
/// old one, and writing it would lose the other writer's change.
async fn still_as_planned(session: &Session, log: &HostLog, version: &FileVersion) -> Result<()> {
    let out = session.exec(&unchanged_script(version), None).await?;
    if out.exit_status == CHANGED_SINCE_PROBED {
        let now = out.stdout_str().trim().to_string();
        log.write(
            "changed since probed",
            &format!("{}: now {now}", version.path),
        );
        bail!(
            "{} changed since probed (sha256 {} then, {} now): something else wrote it \
             meanwhile; nothing was written, rerun to plan from what is there now",
            version.path,
            version.sha256.as_deref().unwrap_or("absent"),
            now
        );
    }
    if !out.success() {
        bail!(
            "cannot check {} before replacing it (exit {}): {}",
            version.path,
            out.exit_status,
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

    fn check(version: &FileVersion) -> (i32, String) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(unchanged_script(version))
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }

    #[test]
    fn a_file_written_since_the_probe_is_not_replaced() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("it's.conf");
        let path_s = path.to_str().unwrap().to_string();
        let absent = FileVersion {
            path: path_s.clone(),
            sha256: None,
        };
        assert_eq!(check(&absent).0, 0, "absent as planned");
        std::fs::write(&path, "a = 1\n").unwrap();
        let probed = hex::encode(sha2::Sha256::digest(b"a = 1\n"));
        assert_eq!(check(&absent), (9, probed.clone()), "created meanwhile");
        let planned = FileVersion {
            path: path_s,
            sha256: Some(probed),
        };
        assert_eq!(check(&planned).0, 0, "unchanged");
        std::fs::write(&path, "a = 1\nb = 2\n").unwrap();
        assert_eq!(check(&planned).0, 9, "another writer added a line");
    }
}
