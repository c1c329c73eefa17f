//! Secrets: declared by name in the inventory, resolved from `BOOTSTRAP_SECRET_<NAME>` or from a
//! secrets file that must be private (mode 0600). Values never reach a log or the terminal.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::error::InputError;
use crate::redact::Redactor;

/// Resolved secret values by name.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

// Deliberately not derived: a Debug print must never show a value.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

pub fn env_name(name: &str) -> String {
    format!(
        "BOOTSTRAP_SECRET_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// The secrets file used when none is given: `secrets.toml` beside the inventory.
pub fn default_file(inventory: &Path) -> PathBuf {
    inventory
        .parent()
        .unwrap_or(Path::new("."))
        .join("secrets.toml")
}

impl Secrets {
    /// Resolves every declared secret. Env wins over the file; a missing one is bad input.
    pub fn resolve(
        declared: &BTreeMap<String, String>,
        file: &Path,
        inventory: &Path,
    ) -> Result<Secrets, InputError> {
        let from_file = read_file(file)?;
        check_file_names(declared, file)?;
        let mut values = BTreeMap::new();
        for name in declared.keys() {
            let value = std::env::var(env_name(name))
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| from_file.get(name).cloned());
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => {
                    return Err(InputError::new(
                        inventory,
                        None,
                        format!("secret `{name}` has no value"),
                    )
                    .hint(format!(
                        "run `bootstrap secrets init` to generate it into {}, or set {}",
                        file.display(),
                        env_name(name)
                    )))
                }
            }
        }
        Ok(Secrets { values })
    }

    /// Stand-in values for `check` when secrets are not set up yet: templates still render.
    pub fn placeholders<'a>(names: impl IntoIterator<Item = &'a String>) -> Secrets {
        Secrets {
            values: names
                .into_iter()
                .map(|n| (n.clone(), format!("<secret {n}>")))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.values.values().cloned())
    }

    /// For templates: `secrets.NAME`.
    pub fn to_template_value(&self) -> BTreeMap<String, String> {
        self.values.clone()
    }
}

/// Every name in the secrets file must be declared in the inventory: a typo would otherwise
/// leave the real secret unset (or, with an env value, silently unused).
pub fn check_file_names(
    declared: &BTreeMap<String, String>,
    file: &Path,
) -> Result<(), InputError> {
    let values = read_file(file)?;
    let Some(unknown) = values.keys().find(|n| !declared.contains_key(*n)) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut known: Vec<&str> = declared.keys().map(String::as_str).collect();
    known.sort_by_key(|k| strsim_distance(k, unknown));
    Err(InputError::new(
        file,
        super::key_line(&text, unknown),
        format!("`{unknown}` is not a secret the inventory declares"),
    )
    .hint(match known.first() {
        Some(k) => format!(
            "did you mean `{k}`? declared: {}",
            declared.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => "the inventory declares no [secrets]".to_string(),
    }))
}

/// A small edit distance, to suggest the declared name a typo was meant to be.
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Reads a secrets file; a missing file is empty, a readable-by-others file is refused.
pub fn read_file(file: &Path) -> Result<BTreeMap<String, String>, InputError> {
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(InputError::new(file, None, format!("cannot read: {e}"))),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(InputError::new(
            file,
            None,
            format!("secrets file is readable by others (mode {mode:04o}); refusing to use it"),
        )
        .hint(format!("chmod 600 {}", file.display())));
    }
    let text = crate::error::read_text(file, "secrets file")?;
    toml::from_str::<BTreeMap<String, String>>(&text).map_err(|e| {
        super::toml_error(file, &text, &e).hint("the file holds lines like: name = \"value\"")
    })
}

/// Outcome of `secrets init`: which names were generated and which were already set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    pub generated: Vec<String>,
    pub kept: Vec<String>,
}

/// Fills in strong random values for declared secrets that have none, keeping existing ones.
/// The file is written with mode 0600 from the start (never briefly world-readable).
pub fn init(declared: &BTreeMap<String, String>, file: &Path) -> Result<InitReport, InputError> {
    let mut values = read_file(file)?;
    let mut report = InitReport::default();
    for name in declared.keys() {
        if values.contains_key(name) || std::env::var(env_name(name)).is_ok_and(|v| !v.is_empty()) {
            report.kept.push(name.clone());
        } else {
            values.insert(name.clone(), random_secret());
            report.generated.push(name.clone());
        }
    }
    if report.generated.is_empty() {
        return Ok(report);
    }
    let mut text = String::from(
        "# Generated by `bootstrap secrets init`. Keep private (mode 0600), never commit.\n",
    );
    for (name, value) in &values {
        text.push_str(&format!(
            "{name} = {}\n",
            toml::Value::String(value.clone())
        ));
    }
    let tmp = file.with_extension("toml.tmp");
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    };
    write().map_err(|e| InputError::new(file, None, format!("cannot write secrets file: {e}")))?;
    Ok(report)
}

/// 32 alphanumeric characters: ~190 bits, and safe inside any config syntax or URL.
fn random_secret() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(names: &[&str]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|n| (n.to_string(), String::new()))
            .collect()
    }

    #[test]
    fn init_generates_missing_keeps_existing_and_writes_0600() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        let first = init(&declared(&["bs_test_a"]), &file).unwrap();
        assert_eq!(first.generated, vec!["bs_test_a"]);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let a1 = read_file(&file).unwrap()["bs_test_a"].clone();
        assert_eq!(a1.len(), 32);

        let second = init(&declared(&["bs_test_a", "bs_test_b"]), &file).unwrap();
        assert_eq!(second.generated, vec!["bs_test_b"]);
        assert_eq!(second.kept, vec!["bs_test_a"]);
        let values = read_file(&file).unwrap();
        assert_eq!(
            values["bs_test_a"], a1,
            "an existing secret must never be replaced"
        );
        assert_ne!(values["bs_test_a"], values["bs_test_b"]);
    }

    #[test]
    fn world_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "x = \"y\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_file(&file).unwrap_err();
        assert!(err.message.contains("readable by others"), "{err}");
        assert!(err.hint.unwrap().contains("chmod 600"));
    }

    #[test]
    fn missing_secret_is_bad_input_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let err = Secrets::resolve(
            &declared(&["bs_test_missing"]),
            &dir.path().join("secrets.toml"),
            Path::new("inventory.toml"),
        )
        .unwrap_err();
        assert!(err.message.contains("bs_test_missing"));
        assert!(err
            .hint
            .unwrap()
            .contains("BOOTSTRAP_SECRET_BS_TEST_MISSING"));
    }

    #[test]
    fn misspelt_name_in_the_secrets_file_silently_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "db_password = \"a\"\ndb_pasword = \"b\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Secrets::resolve(
            &declared(&["db_password"]),
            &file,
            Path::new("inventory.toml"),
        )
        .unwrap_err();
        assert_eq!(err.file, file);
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("`db_pasword`"), "{err}");
        assert!(err.hint.unwrap().contains("did you mean `db_password`"));
    }

    #[test]
    fn debug_never_shows_values() {
        let s = Secrets {
            values: [("db".to_string(), "s3cr3t-value".to_string())].into(),
        };
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }
}
