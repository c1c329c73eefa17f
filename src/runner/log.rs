//! Per-host log of every command and its output under `.bootstrap/logs/<run>/<host>.log`,
//! secrets redacted, file private to the user.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::redact::Redactor;

pub struct HostLog {
    file: Option<Mutex<std::fs::File>>,
    redactor: Redactor,
    pub path: PathBuf,
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
            file: file.map(Mutex::new),
            redactor,
            path,
        }
    }

    pub fn write(&self, section: &str, text: &str) {
        let Some(file) = &self.file else { return };
        let stamp = chrono::Utc::now().format("%H:%M:%S%.3f");
        let body = self.redactor.redact(text);
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
