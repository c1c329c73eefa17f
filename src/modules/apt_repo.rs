//! A third-party apt repository: its signing key and one sources entry.
//!
//! Arguments:
//! - `name` (required): file name stem; the key goes to `/etc/apt/keyrings/<name>.asc` and the
//!   entry to `/etc/apt/sources.list.d/<name>.list`.
//! - `url` (required): repository base URL (`http://` or `https://`).
//! - `suite` (required): distribution, e.g. `"bookworm"`, or a flat-repository path ending in
//!   `/` such as `"/"` (then `components` must be empty).
//! - `components` (default `[]`): e.g. `["main"]`; required unless `suite` ends in `/`.
//! - `key_url` (required): the repository's ASCII-armored signing key. It is downloaded on the
//!   admin machine and checked against `key_sha256` before anything reaches the host.
//! - `key_sha256` (required): sha256 of the key file, 64 hex digits.
//! - `arch` (optional): limit the entry to architectures, e.g. `"amd64"` or `"amd64,arm64"`.
//!
//! ```toml
//! [[steps]]
//! name = "kubernetes apt repository"
//! apt_repo = { name = "kubernetes", url = "https://pkgs.k8s.io/core:/stable:/v1.30/deb/", suite = "/", key_url = "https://pkgs.k8s.io/core:/stable:/v1.30/deb/Release.key", key_sha256 = "{{ k8s_repo_key_sha256 }}" }
//! ```
//!
//! The entry is one line, `deb [signed-by=/etc/apt/keyrings/<name>.asc] URL SUITE COMPONENTS`,
//! so the key signs this repository only. When the key or the entry changed, the package lists
//! are refreshed in the same step, so a later `apt` step sees the repository's packages.

use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
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
    key_sha256: String,
    #[serde(default)]
    arch: Option<String>,
}

#[derive(Debug)]
pub struct AptRepo {
    pub name: String,
    pub key_url: String,
    pub key_sha256: String,
    /// The sources line, newline-terminated.
    pub line: String,
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
        let sha_ok =
            a.key_sha256.len() == 64 && a.key_sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !sha_ok {
            return Err(err(
                format!("`key_sha256` {:?} is not 64 hex digits", a.key_sha256),
                "compute it with: curl -fsSL KEY_URL | sha256sum",
            ));
        }
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
            key_sha256: a.key_sha256.to_ascii_lowercase(),
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

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn root_file(mode: &str) -> FileAttrs {
    FileAttrs {
        mode: Some(mode.to_string()),
        owner: Some("root".into()),
        group: Some("root".into()),
    }
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
        if field("key_sha256")? != self.key_sha256 {
            changes.push(Change::new(
                format!(
                    "install signing key {} from {}",
                    self.key_path(),
                    self.key_url
                ),
                Action::Download {
                    url: self.key_url.clone(),
                    sha256: self.key_sha256.clone(),
                    dest: self.key_path(),
                    attrs: root_file("0644"),
                },
            ));
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
                        attrs: root_file("0644"),
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
