//! The role playbooks and templates, built into the binary so that `bootstrap` is one file: when
//! no `playbooks/` directory is at hand, the built-in copy is written out once (per content
//! hash) under the state directory and used from there.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};
use sha2::{Digest, Sha256};

static PLAYBOOKS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/playbooks");
static FILES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/files");

/// The `playbooks` directory of the built-in copy, written under `state_dir` if not there yet.
pub fn playbooks_dir(state_dir: &Path) -> std::io::Result<PathBuf> {
    let mut hasher = Sha256::new();
    for dir in [&PLAYBOOKS, &FILES] {
        for file in all_files(dir) {
            hasher.update(file.path().to_string_lossy().as_bytes());
            hasher.update(file.contents());
        }
    }
    let hash = hex::encode(hasher.finalize());
    let root = state_dir.join("builtin").join(&hash[..16]);
    if !root.join("playbooks/site.toml").exists() {
        // Written beside, then renamed: a run never sees half a copy.
        let tmp = state_dir
            .join("builtin")
            .join(format!(".tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for (dir, name) in [(&PLAYBOOKS, "playbooks"), (&FILES, "files")] {
            for file in all_files(dir) {
                let path = tmp.join(name).join(file.path());
                std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
                std::fs::write(&path, file.contents())?;
            }
        }
        if std::fs::rename(&tmp, &root).is_err() {
            // Another run wrote the same content first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    Ok(root.join("playbooks"))
}

fn all_files<'a>(dir: &'a Dir<'a>) -> Vec<&'a include_dir::File<'a>> {
    let mut out: Vec<&include_dir::File> = dir.files().collect();
    for sub in dir.dirs() {
        out.extend(all_files(sub));
    }
    out.sort_by_key(|f| f.path());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_copy_matches_the_repository() {
        let state = tempfile::tempdir().unwrap();
        let dir = playbooks_dir(state.path()).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for rel in [
            "playbooks/site.toml",
            "playbooks/worker.toml",
            "files/postgres/pg_hba.conf.j2",
        ] {
            let built = dir.parent().unwrap().join(rel);
            assert_eq!(
                std::fs::read(&built).unwrap(),
                std::fs::read(repo.join(rel)).unwrap(),
                "{rel}"
            );
        }
        // A second call reuses the copy.
        assert_eq!(playbooks_dir(state.path()).unwrap(), dir);
    }

    /// Every string of a TOML value, depth first.
    fn strings(value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            toml::Value::Table(t) => t.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }

    /// kubectl's jsonpath refuses a raw newline in a quoted string ("unterminated quoted
    /// string"): in a TOML basic string `{"\n"}` must be written with the backslash doubled.
    #[test]
    fn no_jsonpath_string_in_a_playbook_holds_a_raw_newline() {
        for file in all_files(&PLAYBOOKS) {
            let text = std::str::from_utf8(file.contents()).unwrap();
            let value: toml::Value = toml::from_str(text).unwrap();
            let mut all = Vec::new();
            strings(&value, &mut all);
            for s in all.iter().filter(|s| s.contains("jsonpath=")) {
                let mut rest = s.as_str();
                while let Some(start) = rest.find("{\"") {
                    let tail = &rest[start + 2..];
                    let end = tail.find("\"}").unwrap_or(tail.len());
                    assert!(
                        !tail[..end].contains('\n'),
                        "{}: a jsonpath string holds a raw newline in: {s}",
                        file.path().display()
                    );
                    rest = &tail[end..];
                }
            }
        }
    }
}
