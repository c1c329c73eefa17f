//! Private key files, checked before any connection: OpenSSH refuses a key others can read, and
//! a key that cannot be used should stop the run before any host is touched, not after a login.

use std::path::Path;

/// Why a key file cannot be used, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("does not exist")]
    Missing,
    #[error("cannot be read: {0}")]
    Unreadable(String),
    #[error("is readable by group or others (mode {mode:04o}); OpenSSH refuses such a key")]
    TooOpen { mode: u32 },
    #[error("is protected by a passphrase, which bootstrap cannot ask for")]
    Encrypted,
    #[error("is not a private key bootstrap can use: {0}")]
    Unparseable(String),
}

impl KeyProblem {
    /// What the user should do, naming the file.
    pub fn hint(&self, path: &Path) -> String {
        let file = path.display();
        match self {
            KeyProblem::Missing | KeyProblem::Unreadable(_) => {
                "set `key` to a private key file, or remove it to use ssh-agent".into()
            }
            KeyProblem::TooOpen { .. } => format!("run: chmod 600 {file}"),
            KeyProblem::Encrypted => format!(
                "load it into ssh-agent (ssh-add {file}) and remove `key` from the inventory"
            ),
            KeyProblem::Unparseable(_) => format!(
                "regenerate it (ssh-keygen -t ed25519 -f {file}), or remove `key` to use ssh-agent"
            ),
        }
    }
}

/// Loads a private key after checking its file's permissions.
pub fn load(path: &Path) -> Result<russh::keys::PrivateKey, KeyProblem> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyProblem::Missing),
        Err(e) => return Err(KeyProblem::Unreadable(e.to_string())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyProblem::TooOpen { mode });
    }
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => KeyProblem::Unparseable("not text".into()),
        _ => KeyProblem::Unreadable(e.to_string()),
    })?;
    russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => KeyProblem::Encrypted,
        other if is_encrypted_openssh_key(&text) => {
            let _ = other;
            KeyProblem::Encrypted
        }
        other => KeyProblem::Unparseable(other.to_string()),
    })
}

/// Checks a key file without keeping the key.
pub fn check(path: &Path) -> Result<(), KeyProblem> {
    load(path).map(|_| ())
}

/// An OpenSSH-format key names its cipher in clear: "none" unless it has a passphrase.
fn is_encrypted_openssh_key(text: &str) -> bool {
    use base64::Engine;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(body.trim()) else {
        return text.contains("ENCRYPTED");
    };
    // "openssh-key-v1\0", then the cipher name as an SSH string (u32 length + bytes).
    let rest = bytes
        .strip_prefix(b"openssh-key-v1\0".as_slice())
        .unwrap_or(&[]);
    match rest.get(..4) {
        Some(len) => {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            rest.get(4..4 + len).is_some_and(|name| name != b"none")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    fn keygen(path: &Path, passphrase: &str) -> bool {
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
            .arg(path)
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn each_problem_is_told_apart_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        if !keygen(&key, "") {
            eprintln!("ssh-keygen not installed; skipping");
            return;
        }
        assert_eq!(check(&key), Ok(()));

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let problem = check(&key).unwrap_err();
        assert_eq!(problem, KeyProblem::TooOpen { mode: 0o644 });
        assert!(problem.hint(&key).contains("chmod 600"));

        let locked = dir.path().join("locked");
        assert!(keygen(&locked, "a passphrase"));
        assert_eq!(check(&locked), Err(KeyProblem::Encrypted));

        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "not a key\n").unwrap();
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
        let problem = check(&garbage).unwrap_err();
        assert!(matches!(problem, KeyProblem::Unparseable(_)), "{problem:?}");
        assert!(problem.hint(&garbage).contains("regenerate"));

        assert_eq!(check(&dir.path().join("none")), Err(KeyProblem::Missing));
    }
}
