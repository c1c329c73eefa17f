//! A third-party apt repository: its signing key and one sources entry.
//!
//! Arguments:
//! - `name` (required): file name stem; the key goes to `/etc/apt/keyrings/<name>.asc` and the
//!   entry to `/etc/apt/sources.list.d/<name>.list`.
//! - `url` (required): repository base URL (`http://` or `https://`).
//! - `suite` (required): distribution, e.g. `"bookworm"`, or a flat-repository path ending in
//!   `/` such as `"/"` (then `components` must be empty).
//! - `components` (default `[]`): e.g. `["main"]`; required unless `suite` ends in `/`.
//! - `key_url` (required): the repository's signing key (ASCII-armored or binary OpenPGP). It
//!   is downloaded on the admin machine and checked against the pin before anything reaches
//!   the host.
//! - `key_sha256` or `key_fingerprint` (exactly one; an empty string counts as not given, so a
//!   playbook can pass both inventory variables through and the inventory sets one):
//!   - `key_sha256`: sha256 of the key file, 64 hex digits. The file must be exactly these bytes.
//!   - `key_fingerprint`: the OpenPGP fingerprint of the repository's primary key, 40 hex digits,
//!     spaces allowed, e.g. `"DE15 B144 86CD 377B 9E87 6E1A 2346 54DA 9A29 6436"`. The file is
//!     accepted only if it holds exactly one primary key (a version 4 key) with this
//!     fingerprint; use it when the project publishes the fingerprint but the file's bytes
//!     may change (new self-signatures, re-armored). An installed key with this fingerprint is
//!     left alone until it expires within 30 days: then it is downloaded again (the project
//!     extends the same key's expiry; a kept copy would expire and `apt-get update` fail).
//! - `arch` (optional): limit the entry to architectures, e.g. `"amd64"` or `"amd64,arm64"`.
//!
//! ```toml
//! [[steps]]
//! name = "kubernetes apt repository"
//! apt_repo = { name = "kubernetes", url = "https://pkgs.k8s.io/core:/stable:/v1.30/deb/", suite = "/", key_url = "https://pkgs.k8s.io/core:/stable:/v1.30/deb/Release.key", key_fingerprint = "{{ k8s_repo_key_fingerprint }}" }
//! ```
//!
//! The entry is one line, `deb [signed-by=/etc/apt/keyrings/<name>.asc] URL SUITE COMPONENTS`,
//! so the key signs this repository only. When the key or the entry changed, the package lists
//! are refreshed in the same step, so a later `apt` step sees the repository's packages.

use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use base64::Engine as _;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    name: String,
    url: String,
    suite: String,
    #[serde(default)]
    components: Vec<String>,
    key_url: String,
    #[serde(default)]
    key_sha256: Option<String>,
    #[serde(default)]
    key_fingerprint: Option<String>,
    #[serde(default)]
    arch: Option<String>,
}

#[derive(Debug)]
pub struct AptRepo {
    pub name: String,
    pub key_url: String,
    pub key_pin: KeyPin,
    /// The sources line, newline-terminated.
    pub line: String,
}

/// How the downloaded key file is checked before it is uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPin {
    /// sha256 of the file, lower-case hex.
    Sha256(String),
    /// OpenPGP fingerprint of its one primary key, 40 upper-case hex digits.
    Fingerprint(String),
}

const KEYRINGS: &str = "/etc/apt/keyrings";

/// A word that can stand in a one-line sources entry without quoting.
fn plain_word(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "[]#\"'".contains(c))
}

impl AptRepo {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: Args = parse_args("apt_repo", args, ctx)?;
        let err = |msg: String, hint: &str| InputError::new(ctx.playbook, ctx.line, msg).hint(hint);
        let name_ok = !a.name.is_empty()
            && a.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && !a.name.starts_with('.');
        if !name_ok {
            return Err(err(
                format!("`name` {:?} cannot be a file name", a.name),
                "use letters, digits, '-', '_' and '.', e.g. name = \"kubernetes\"",
            ));
        }
        for (field, url) in [("url", &a.url), ("key_url", &a.key_url)] {
            let scheme = url.starts_with("https://") || url.starts_with("http://");
            if !scheme || !plain_word(url) {
                return Err(err(
                    format!("`{field}` {url:?} is not an http(s) URL"),
                    "give the full URL, e.g. \"https://pkgs.k8s.io/core:/stable:/v1.30/deb/\"",
                ));
            }
        }
        if !plain_word(&a.suite) || a.components.iter().any(|c| !plain_word(c)) {
            return Err(err(
                "`suite` and `components` must be single words".into(),
                "e.g. suite = \"bookworm\", components = [\"main\"]",
            ));
        }
        let flat = a.suite.ends_with('/');
        if flat != a.components.is_empty() {
            return Err(err(
                format!(
                    "suite {:?} {} components",
                    a.suite,
                    if flat { "is a flat path and takes no" } else { "needs" }
                ),
                "a suite ending in '/' (like \"/\") has no components; any other needs at least one",
            ));
        }
        let given = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let key_pin =
            match (given(a.key_sha256), given(a.key_fingerprint)) {
                (Some(sha), None) => {
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(err(
                            format!("`key_sha256` {sha:?} is not 64 hex digits"),
                            "compute it with: curl -fsSL KEY_URL | sha256sum",
                        ));
                    }
                    KeyPin::Sha256(sha.to_ascii_lowercase())
                }
                (None, Some(fpr)) => match openpgp::normalize_fingerprint(&fpr) {
                    Some(fpr) => KeyPin::Fingerprint(fpr),
                    None => {
                        return Err(err(
                            format!("`key_fingerprint` {fpr:?} is not 40 hex digits"),
                            "give the OpenPGP fingerprint the repository publishes, e.g. \
                         \"DE15 B144 86CD 377B 9E87 6E1A 2346 54DA 9A29 6436\" (spaces allowed)",
                        ))
                    }
                },
                (Some(_), Some(_)) => {
                    return Err(err(
                        "both `key_sha256` and `key_fingerprint` are given".into(),
                        "pin the key one way: set the other to \"\" or leave it out",
                    ))
                }
                (None, None) => return Err(err(
                    "the signing key is not pinned: `key_sha256` or `key_fingerprint` is required"
                        .into(),
                    "give key_fingerprint = \"<the repository's published fingerprint>\" or \
                     key_sha256 = \"<sha256 of the key file>\"",
                )),
            };
        let arch_ok = a.arch.as_deref().is_none_or(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b",-".contains(&b))
        });
        if !arch_ok {
            return Err(err(
                format!(
                    "`arch` {:?} is not a list of architectures",
                    a.arch.unwrap_or_default()
                ),
                "e.g. arch = \"amd64\" or \"amd64,arm64\"",
            ));
        }
        let mut options = String::new();
        if let Some(arch) = &a.arch {
            options += &format!("arch={arch} ");
        }
        options += &format!("signed-by={KEYRINGS}/{}.asc", a.name);
        let mut line = format!("deb [{options}] {} {}", a.url, a.suite);
        for c in &a.components {
            line += &format!(" {c}");
        }
        line.push('\n');
        Ok(AptRepo {
            key_pin,
            name: a.name,
            key_url: a.key_url,
            line,
        })
    }

    fn key_path(&self) -> String {
        format!("{KEYRINGS}/{}.asc", self.name)
    }

    fn list_path(&self) -> String {
        format!("/etc/apt/sources.list.d/{}.list", self.name)
    }
}

/// An installed key is refreshed (downloaded again, its fingerprint checked) this long before it
/// expires: the project extends the same key's expiry, and apt refuses a repository signed by an
/// expired key.
const KEY_REFRESH_MARGIN_SECS: u64 = 30 * 86_400;

/// Why a key pinned by fingerprint must be (re)installed; None when the installed one will do.
#[derive(Debug, PartialEq, Eq)]
enum KeyState {
    /// No key, another key, or a file that is not one.
    Missing,
    /// The pinned key, expired or expiring within KEY_REFRESH_MARGIN_SECS (days left, < 0 past).
    Expiring { days: i64 },
}

fn fingerprint_key_state(installed: Option<&[u8]>, fpr: &str, now: u64) -> Option<KeyState> {
    let Some(key) = installed.filter(|k| openpgp::verify_key(k, fpr).is_ok()) else {
        return Some(KeyState::Missing);
    };
    let expires = openpgp::primary_expiry(key).ok().flatten()?;
    (expires <= now + KEY_REFRESH_MARGIN_SECS).then(|| KeyState::Expiring {
        days: (expires as i64 - now as i64).div_euclid(86_400),
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Module for AptRepo {
    fn probe(&self, opts: ProbeOptions) -> String {
        let key = quote(&self.key_path());
        let list = quote(&self.list_path());
        let mut s = format!(
            "if [ -d {KEYRINGS} ]; then echo keyrings=yes; else echo keyrings=no; fi\n\
             if [ -f {key} ]; then echo \"key_sha256=$(sha256sum < {key} | cut -d' ' -f1)\"; else echo key_sha256=none; fi\n\
             if [ -f {list} ]; then echo \"list_sha256=$(sha256sum < {list} | cut -d' ' -f1)\"; else echo list_sha256=none; fi\n"
        );
        if matches!(self.key_pin, KeyPin::Fingerprint(_)) {
            // The installed key itself, so the plan can read its fingerprint (a public key).
            s += &format!("if [ -f {key} ]; then echo \"key_base64=$(base64 -w0 < {key})\"; fi\n");
        }
        if opts.want_content {
            // The echo ends a last line that lacks its newline.
            s += &format!("if [ -f {list} ]; then sed 's/^/list_line=/' {list}; echo; fi\n");
        }
        s
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let kv = probe_util::key_values(&probe.stdout);
        let field = |k: &str| {
            kv.get(k)
                .map(|v| v.trim().to_string())
                .ok_or_else(|| PlanError(format!("apt_repo probe printed no {k}")))
        };
        let mut changes = Vec::new();
        if field("keyrings")? != "yes" {
            changes.push(Change::new(
                format!("create {KEYRINGS}"),
                Action::Shell {
                    script: format!("mkdir -p -m 0755 {KEYRINGS}"),
                    stdin: None,
                },
            ));
        }
        let installed_sha = field("key_sha256")?;
        let install = format!(
            "install signing key {} from {}",
            self.key_path(),
            self.key_url
        );
        let key_change = match &self.key_pin {
            KeyPin::Sha256(sha) => (installed_sha != *sha).then(|| {
                let action = Action::Download {
                    url: self.key_url.clone(),
                    sha256: sha.clone(),
                    dest: self.key_path(),
                    attrs: FileAttrs::root("0644"),
                };
                (install, action)
            }),
            KeyPin::Fingerprint(fpr) => {
                let installed = kv.get("key_base64").and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                });
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                fingerprint_key_state(installed.as_deref(), fpr, now).map(|state| {
                    let what = match state {
                        KeyState::Missing => install,
                        KeyState::Expiring { days } => format!(
                            "refresh signing key {} from {} (the installed copy {})",
                            self.key_path(),
                            self.key_url,
                            if days < 0 {
                                format!("expired {} days ago", -days)
                            } else {
                                format!("expires in {days} days")
                            }
                        ),
                    };
                    let action = Action::DownloadKey {
                        url: self.key_url.clone(),
                        fingerprint: fpr.clone(),
                        dest: self.key_path(),
                        attrs: FileAttrs::root("0644"),
                    };
                    (what, action)
                })
            }
        };
        if let Some((what, action)) = key_change {
            changes.push(Change::new(what, action));
        }
        let list_sha = field("list_sha256")?;
        if list_sha != sha256_hex(self.line.as_bytes()) {
            let old: String = probe
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix("list_line="))
                .map(|l| format!("{l}\n"))
                .collect();
            let verb = if list_sha == "none" { "add" } else { "update" };
            changes.push(
                Change::new(
                    format!("{verb} apt source {}", self.list_path()),
                    Action::Upload {
                        dest: self.list_path(),
                        content: self.line.clone().into_bytes(),
                        attrs: FileAttrs::root("0644"),
                        validate: None,
                        backup: false,
                    },
                )
                .with_diff(old, self.line.clone()),
            );
        }
        if !changes.is_empty() {
            changes.push(Change::new(
                format!("refresh apt package lists (repository {})", self.name),
                Action::Shell {
                    script: super::apt::refresh_script(),
                    stdin: None,
                },
            ));
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx() -> BuildContext<'static> {
        BuildContext {
            playbook: Path::new("playbooks/node.toml"),
            line: Some(12),
            files_dir: Path::new("files"),
            render_template: &|_| unreachable!(),
            local_dir: std::env::temp_dir(),
        }
    }

    const SHA: &str = "9a3f4a5a6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e";

    fn k8s(extra: &str) -> Result<AptRepo, InputError> {
        let args = format!(
            "name = \"kubernetes\"\nurl = \"https://pkgs.k8s.io/core:/stable:/v1.30/deb/\"\n\
             suite = \"/\"\nkey_url = \"https://pkgs.k8s.io/core:/stable:/v1.30/deb/Release.key\"\n\
             key_sha256 = \"{SHA}\"\n{extra}"
        );
        AptRepo::from_args(&toml::from_str(&args).unwrap(), &ctx())
    }

    fn out(s: &str) -> ProbeOutput {
        ProbeOutput {
            exit_status: 0,
            stdout: s.to_string(),
        }
    }

    #[test]
    fn renders_one_signed_by_line() {
        assert_eq!(
            k8s("").unwrap().line,
            "deb [signed-by=/etc/apt/keyrings/kubernetes.asc] https://pkgs.k8s.io/core:/stable:/v1.30/deb/ /\n"
        );
        let elastic = AptRepo::from_args(
            &toml::from_str(&format!(
                "name = \"elastic-8.x\"\nurl = \"https://artifacts.elastic.co/packages/8.x/apt\"\n\
                 suite = \"stable\"\ncomponents = [\"main\"]\narch = \"amd64\"\n\
                 key_url = \"https://artifacts.elastic.co/GPG-KEY-elasticsearch\"\nkey_sha256 = \"{SHA}\""
            ))
            .unwrap(),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            elastic.line,
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/elastic-8.x.asc] https://artifacts.elastic.co/packages/8.x/apt stable main\n"
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        let e = k8s("components = [\"main\"]").unwrap_err();
        assert_eq!(e.line, Some(12));
        assert!(e.hint.is_some());
        assert!(k8s("arch = \"amd64 ]\"").is_err());
        assert!(k8s("keyring = \"x\"")
            .unwrap_err()
            .message
            .contains("keyring"));
        let bad_sha = AptRepo::from_args(
            &toml::from_str(
                "name = \"x\"\nurl = \"https://e.org/\"\nsuite = \"/\"\nkey_url = \"https://e.org/k\"\nkey_sha256 = \"abc\"",
            )
            .unwrap(),
            &ctx(),
        );
        assert!(bad_sha.unwrap_err().message.contains("key_sha256"));
        let bad_name = AptRepo::from_args(
            &toml::from_str(&format!(
                "name = \"../x\"\nurl = \"https://e.org/\"\nsuite = \"/\"\nkey_url = \"https://e.org/k\"\nkey_sha256 = \"{SHA}\""
            ))
            .unwrap(),
            &ctx(),
        );
        assert!(bad_name.is_err());
        let ftp = AptRepo::from_args(
            &toml::from_str(&format!(
                "name = \"x\"\nurl = \"ftp://e.org/\"\nsuite = \"/\"\nkey_url = \"https://e.org/k\"\nkey_sha256 = \"{SHA}\""
            ))
            .unwrap(),
            &ctx(),
        );
        assert!(ftp.is_err());
    }

    #[test]
    fn fresh_host_gets_key_list_and_refresh() {
        let r = k8s("").unwrap();
        let changes = r
            .plan(&out("keyrings=no\nkey_sha256=none\nlist_sha256=none\n"))
            .unwrap();
        let summaries: Vec<&str> = changes.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            vec![
                "create /etc/apt/keyrings",
                "install signing key /etc/apt/keyrings/kubernetes.asc from https://pkgs.k8s.io/core:/stable:/v1.30/deb/Release.key",
                "add apt source /etc/apt/sources.list.d/kubernetes.list",
                "refresh apt package lists (repository kubernetes)",
            ]
        );
        assert!(matches!(
            &changes[1].action,
            Action::Download { sha256, dest, .. } if sha256 == SHA && dest == "/etc/apt/keyrings/kubernetes.asc"
        ));
        assert!(matches!(
            &changes[2].action,
            Action::Upload { content, .. } if content == r.line.as_bytes()
        ));
    }

    #[test]
    fn converged_host_plans_nothing_and_one_difference_changes_one_thing() {
        let r = k8s("").unwrap();
        let list_sha = sha256_hex(r.line.as_bytes());
        let same = format!("keyrings=yes\nkey_sha256={SHA}\nlist_sha256={list_sha}\n");
        assert_eq!(r.plan(&out(&same)).unwrap(), vec![]);
        let other_key = format!(
            "keyrings=yes\nkey_sha256={}\nlist_sha256={list_sha}\n",
            "0".repeat(64)
        );
        let changes = r.plan(&out(&other_key)).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(matches!(changes[0].action, Action::Download { .. }));
        let old_list = "keyrings=yes\nkey_sha256=".to_string()
            + SHA
            + "\nlist_sha256=abc\nlist_line=deb https://old/ /\n\n";
        let changes = r.plan(&out(&old_list)).unwrap();
        assert_eq!(
            changes[0].summary,
            "update apt source /etc/apt/sources.list.d/kubernetes.list"
        );
        assert_eq!(
            changes[0].diff,
            Some(("deb https://old/ /\n".to_string(), r.line.clone()))
        );
    }

    const K8S_FPR: &str = "DE15 B144 86CD 377B 9E87 6E1A 2346 54DA 9A29 6436";

    fn k8s_pinned_by(pins: &str) -> Result<AptRepo, InputError> {
        let args = format!(
            "name = \"kubernetes\"\nurl = \"https://pkgs.k8s.io/core:/stable:/v1.35/deb/\"\n\
             suite = \"/\"\nkey_url = \"https://pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key\"\n{pins}"
        );
        AptRepo::from_args(&toml::from_str(&args).unwrap(), &ctx())
    }

    #[test]
    fn exactly_one_key_pin_is_required_and_an_empty_one_is_absent() {
        let by_fpr =
            k8s_pinned_by(&format!("key_fingerprint = \"{}\"", K8S_FPR.to_lowercase())).unwrap();
        assert_eq!(
            by_fpr.key_pin,
            KeyPin::Fingerprint("DE15B14486CD377B9E876E1A234654DA9A296436".into())
        );
        // As node.toml passes both inventory variables: the empty one is not used.
        let both_passed = k8s_pinned_by(&format!(
            "key_sha256 = \"\"\nkey_fingerprint = \"{K8S_FPR}\""
        ))
        .unwrap();
        assert_eq!(both_passed.key_pin, by_fpr.key_pin);
        let by_sha =
            k8s_pinned_by(&format!("key_sha256 = \"{SHA}\"\nkey_fingerprint = \"\"")).unwrap();
        assert_eq!(by_sha.key_pin, KeyPin::Sha256(SHA.into()));
        for (pins, says) in [
            (
                format!("key_sha256 = \"{SHA}\"\nkey_fingerprint = \"{K8S_FPR}\""),
                "both",
            ),
            (String::new(), "not pinned"),
            (
                "key_sha256 = \"\"\nkey_fingerprint = \"\"".into(),
                "not pinned",
            ),
            ("key_fingerprint = \"DE15 B144\"".into(), "40 hex digits"),
            (
                format!("key_fingerprint = \"{}\"", "Z".repeat(40)),
                "40 hex digits",
            ),
        ] {
            let e = k8s_pinned_by(&pins).unwrap_err();
            assert!(e.message.contains(says), "{pins}: {}", e.message);
            assert_eq!(e.line, Some(12), "{pins}");
            assert!(e.hint.is_some(), "{pins}");
        }
    }

    #[test]
    fn a_pinned_key_is_refreshed_before_it_expires_and_kept_otherwise() {
        use crate::modules::openpgp::testing::Gpg;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Expires in 2 days: inside the 30-day margin, refreshed (the plan says why).
        let soon = Gpg::with_expiring_key("repo", "2d");
        let fpr = soon.fingerprints().remove(0);
        let key = soon.export(true, "");
        assert!(matches!(
            fingerprint_key_state(Some(&key), &fpr, now),
            Some(KeyState::Expiring { days: 1 | 2 })
        ));
        // Already past: still the pinned key, refreshed with the days since.
        assert!(matches!(
            fingerprint_key_state(Some(&key), &fpr, now + 10 * 86_400),
            Some(KeyState::Expiring { days }) if days < 0
        ));
        // The same key extended by its project (a new self-signature): kept.
        soon.set_expiry(&fpr, "400d");
        assert_eq!(
            fingerprint_key_state(Some(&soon.export(true, "")), &fpr, now),
            None
        );
        // A key that never expires: kept; none installed or another key: installed.
        let forever = Gpg::with_keys(&["forever"]);
        let ffpr = forever.fingerprints().remove(0);
        assert_eq!(
            fingerprint_key_state(Some(&forever.export(false, "")), &ffpr, now),
            None
        );
        assert_eq!(
            fingerprint_key_state(None, &ffpr, now),
            Some(KeyState::Missing)
        );
        assert_eq!(
            fingerprint_key_state(Some(&key), &ffpr, now),
            Some(KeyState::Missing)
        );
    }

    #[test]
    fn fingerprint_pin_installs_unless_the_installed_key_has_that_fingerprint() {
        use base64::Engine as _;
        let gpg = crate::modules::openpgp::testing::Gpg::with_keys(&["repo"]);
        let fpr = gpg.fingerprints().remove(0);
        let r = k8s_pinned_by(&format!("key_fingerprint = \"{fpr}\"")).unwrap();
        assert!(r
            .probe(ProbeOptions {
                want_content: false
            })
            .contains("key_base64="));
        let list_sha = sha256_hex(r.line.as_bytes());
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        let probe = |key: Option<&[u8]>| {
            let mut s = format!("keyrings=yes\nkey_sha256=x\nlist_sha256={list_sha}\n");
            if let Some(k) = key {
                s += &format!("key_base64={}\n", b64(k));
            }
            out(&s)
        };
        // Installed and the right key, armored or binary: nothing to do.
        assert_eq!(r.plan(&probe(Some(&gpg.export(true, "")))).unwrap(), vec![]);
        assert_eq!(
            r.plan(&probe(Some(&gpg.export(false, "")))).unwrap(),
            vec![]
        );
        // Missing, another key, or garbage: download and check the fingerprint, then refresh.
        let other = crate::modules::openpgp::testing::Gpg::with_keys(&["other"]);
        for installed in [None, Some(other.export(true, "")), Some(b"junk".to_vec())] {
            let changes = r.plan(&probe(installed.as_deref())).unwrap();
            assert_eq!(changes.len(), 2, "{installed:?}");
            assert_eq!(
                changes[0].action,
                Action::DownloadKey {
                    url: "https://pkgs.k8s.io/core:/stable:/v1.35/deb/Release.key".into(),
                    fingerprint: fpr.clone(),
                    dest: "/etc/apt/keyrings/kubernetes.asc".into(),
                    attrs: FileAttrs::root("0644"),
                }
            );
        }
    }

    #[test]
    fn fingerprint_probe_reads_the_installed_key_back_intact() {
        let gpg = crate::modules::openpgp::testing::Gpg::with_keys(&["repo"]);
        let fpr = gpg.fingerprints().remove(0);
        let r = k8s_pinned_by(&format!("key_fingerprint = \"{fpr}\"")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("kubernetes.asc");
        std::fs::write(&key, gpg.export(true, "")).unwrap();
        // The probe, pointed at a key in a scratch directory instead of /etc/apt/keyrings.
        let script = r
            .probe(ProbeOptions {
                want_content: false,
            })
            .replace(&quote(&r.key_path()), &quote(key.to_str().unwrap()));
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let changes = r.plan(&out(&stdout)).unwrap();
        assert!(
            !changes
                .iter()
                .any(|c| c.summary.starts_with("install signing key")),
            "{stdout}"
        );
    }

    #[test]
    fn real_probe_reads_files_on_this_machine() {
        // The probe is read-only; run it for a repository that does not exist here.
        let r = AptRepo::from_args(
            &toml::from_str(&format!(
                "name = \"bootstrap-test-none\"\nurl = \"https://e.org/\"\nsuite = \"/\"\nkey_url = \"https://e.org/k\"\nkey_sha256 = \"{SHA}\""
            ))
            .unwrap(),
            &ctx(),
        )
        .unwrap();
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(r.probe(ProbeOptions { want_content: true }))
            .output()
            .unwrap();
        let kv = probe_util::key_values(&String::from_utf8_lossy(&o.stdout));
        assert_eq!(kv["key_sha256"], "none");
        assert_eq!(kv["list_sha256"], "none");
        let changes = r.plan(&out(&String::from_utf8_lossy(&o.stdout))).unwrap();
        assert!(changes.len() >= 3);
    }

    #[test]
    fn probe_hashes_match_rust_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.list");
        std::fs::write(&f, "deb [signed-by=/k.asc] https://e.org/ /\n").unwrap();
        let script = format!("sha256sum < {} | cut -d' ' -f1", quote(f.to_str().unwrap()));
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            sha256_hex(b"deb [signed-by=/k.asc] https://e.org/ /\n")
        );
    }
}
