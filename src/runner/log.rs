//! Per-host log of every command and its output under `.bootstrap/logs/<run>/<host>.log`,
//! secrets redacted, file private to the user.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::redact::Redactor;

pub struct HostLog {
    file: Option<Arc<Mutex<std::fs::File>>>,
    redactor: Redactor,
    pub path: PathBuf,
    /// For a `sensitive` step: sections are logged by name only, never their text.
    muted: bool,
}

impl HostLog {
    pub fn create(dir: &Path, host: &str, redactor: Redactor) -> HostLog {
        let path = dir.join(format!("{host}.log"));
        // Logging must never stop a run; a log we can't open is reported once by the caller
        // (`is_open`).
        let file = std::fs::create_dir_all(dir).ok().and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .ok()
        });
        HostLog {
            file: file.map(|f| Arc::new(Mutex::new(f))),
            redactor,
            path,
            muted: false,
        }
    }

    /// The same log for a `sensitive` step: what happened is logged, not what was sent or read.
    pub fn muted(&self) -> HostLog {
        HostLog {
            file: self.file.clone(),
            redactor: self.redactor.clone(),
            path: self.path.clone(),
            muted: true,
        }
    }

    pub fn write(&self, section: &str, text: &str) {
        let Some(file) = &self.file else { return };
        let stamp = chrono::Utc::now().format("%H:%M:%S%.3f");
        let body = if self.muted {
            "(sensitive step: not logged)".to_string()
        } else {
            summarize_file_contents(&self.redactor.redact(text))
        };
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "--- {stamp} {section}");
        if !body.is_empty() {
            let _ = writeln!(f, "{}", body.trim_end_matches('\n'));
        }
    }

    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }
}

/// Probe output carries whole files as `content=<base64>` lines (line, sysctl, kernel_module,
/// and copy/template under --diff). Redaction matches literal secrets only, so a secret inside
/// a file would reach the log encoded: such lines are logged as their size and sha256.
pub fn summarize_file_contents(text: &str) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    if !text.contains("content=") {
        return text.to_string();
    }
    text.split_inclusive('\n')
        .map(|line| {
            let Some(b64) = line
                .trim_end()
                .strip_prefix("content=")
                .filter(|b| !b.is_empty())
            else {
                return line.to_string();
            };
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(bytes) => format!(
                    "content: {} bytes, sha256 {} (not logged)\n",
                    bytes.len(),
                    hex::encode(Sha256::digest(&bytes))
                ),
                Err(_) => "content: (not logged)\n".to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn file_contents_probed_by_line_reached_the_log_base64_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let log = HostLog::create(dir.path(), "h", Redactor::new(["s3cret".to_string()]));
        let file = "password = s3cret\n";
        let encoded = base64::engine::general_purpose::STANDARD.encode(file);
        log.write(
            "probe result 0",
            &format!("exit 0\ntype=regular file\ncontent={encoded}\n"),
        );
        log.muted()
            .write("change", "run: echo s3cret-free-but-private");
        let text = std::fs::read_to_string(&log.path).unwrap();
        assert!(!text.contains(&encoded), "{text}");
        assert!(text.contains("content: 18 bytes, sha256 "), "{text}");
        assert!(text.contains("type=regular file"), "{text}");
        assert!(
            !text.contains("private"),
            "a muted log writes no text: {text}"
        );
        assert!(
            text.contains("--- ") && text.contains(" change\n(sensitive step: not logged)"),
            "{text}"
        );
    }
}
