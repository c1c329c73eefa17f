//! `containerd_hosts`: containerd's per-registry host files (`<dir>/<registry>/hosts.toml`), one
//! per registry mirror, so images keep their names (`registry.k8s.io/pause:3.10.1`) and are
//! pulled from the mirror first.
//!
//! Arguments:
//! - `dir` (default `"/etc/containerd/certs.d"`): containerd's `config_path`.
//! - `mirrors` (required, may be empty): registry -> mirror, usually the inventory's
//!   `registry_mirrors`. The registry is a host name with an optional port
//!   (`"registry.k8s.io"`, `"registry.example.com:5000"`) or `"_default"` (every registry
//!   without a file of its own). Each mirror is a table:
//!   - `url` (required): the mirror, `https://...` or `http://...` (plain HTTP);
//!   - `ca_file` (optional, https only): absolute path on the host of the CA certificate the
//!     mirror's certificate is checked against;
//!   - `server` (optional): the registry itself, tried after the mirror; default
//!     `https://<registry>` (`https://registry-1.docker.io` for `docker.io`, none for
//!     `_default`).
//!
//! ```toml
//! [[steps]]
//! name = "registry mirrors"
//! containerd_hosts = { mirrors = { "registry.k8s.io" = { url = "http://10.0.0.5:5000" } } }
//! ```
//!
//! Each file starts with a marker line: a file with the marker whose registry is no longer
//! listed is removed (with its directory when that is then empty); files without it (written
//! by hand) are left alone unless their registry is listed. The mirror may pull and resolve
//! (tags to digests): it is a private mirror the operator trusts. containerd reads these files
//! on each pull, so no restart is needed.

use std::collections::BTreeMap;

use super::file::sha256_hex;
use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

/// The first line of every file this module writes.
pub const MARKER: &str =
    "# Written by bootstrap from the inventory's registry_mirrors; removed when that entry is.";

const DEFAULT_DIR: &str = "/etc/containerd/certs.d";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default)]
    dir: Option<String>,
    mirrors: BTreeMap<String, toml::Value>,
}

/// One registry's mirror, as the inventory gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub url: String,
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
}

#[derive(Debug)]
pub struct ContainerdHosts {
    dir: String,
    /// registry -> the whole hosts.toml.
    files: BTreeMap<String, String>,
}

/// An http(s) URL that can stand in a TOML string and a shell word unquoted by accident.
fn url_ok(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && r.bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"'\\`$<>{}|^".contains(&b))
    })
}

/// `_default`, or a registry host name or address with an optional port.
fn registry_ok(name: &str) -> bool {
    if name == "_default" {
        return true;
    }
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (name, None),
    };
    let host_ok = !host.is_empty()
        && !host.starts_with(['-', '.'])
        && !host.ends_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

/// Checks one entry of `registry_mirrors`: what is wrong with it, with a hint, or the mirror.
/// Shared by the inventory's validation (which names the line) and the module.
pub fn check_entry(registry: &str, value: &toml::Value) -> Result<Mirror, (String, String)> {
    if !registry_ok(registry) {
        return Err((
            format!("registry_mirrors: `{registry}` is not a registry host name"),
            "name the registry as images do, e.g. \"registry.k8s.io\", \"docker.io\", \
             \"registry.example.com:5000\", or \"_default\" for every registry"
                .into(),
        ));
    }
    let mirror = Mirror::deserialize(value.clone()).map_err(|e| {
        (
            format!("registry_mirrors.\"{registry}\": {}", e.message()),
            "write it as { url = \"http://10.0.0.5:5000\" }, optionally with ca_file = \
             \"/path/on/the/host.pem\" and server = \"https://upstream\""
                .into(),
        )
    })?;
    if !url_ok(&mirror.url) {
        return Err((
            format!(
                "registry_mirrors.\"{registry}\": url {:?} is not an http(s) URL",
                mirror.url
            ),
            "give the mirror's base URL, e.g. \"https://mirror.example.com\" or \
             \"http://10.0.0.5:5000\" (plain HTTP)"
                .into(),
        ));
    }
    if let Some(server) = &mirror.server {
        if !url_ok(server) {
            return Err((
                format!("registry_mirrors.\"{registry}\": server {server:?} is not an http(s) URL"),
                "the registry itself, e.g. \"https://registry.k8s.io\"; leave it out for the \
                 default"
                    .into(),
            ));
        }
    }
    if let Some(ca) = &mirror.ca_file {
        let path_ok = ca.starts_with('/')
            && ca
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"\"'\\`$".contains(&b));
        if !path_ok {
            return Err((
                format!("registry_mirrors.\"{registry}\": ca_file {ca:?} is not an absolute path"),
                "the CA certificate's path on the hosts, e.g. \"/etc/ssl/certs/mirror-ca.pem\""
                    .into(),
            ));
        }
        if !mirror.url.starts_with("https://") {
            return Err((
                format!(
                    "registry_mirrors.\"{registry}\": ca_file is given but url {:?} is plain HTTP",
                    mirror.url
                ),
                "a CA checks an https mirror's certificate: use an https:// url or drop ca_file"
                    .into(),
            ));
        }
    }
    Ok(mirror)
}

/// The hosts.toml of one registry.
pub fn hosts_toml(registry: &str, mirror: &Mirror) -> String {
    let server = match (&mirror.server, registry) {
        (Some(s), _) => Some(s.clone()),
        (None, "_default") => None,
        // Images named docker.io/... are served by registry-1.docker.io.
        (None, "docker.io") => Some("https://registry-1.docker.io".to_string()),
        (None, r) => Some(format!("https://{r}")),
    };
    let mut s = format!("{MARKER}\n");
    match server {
        Some(server) => s += &format!(
            "# Pulls of {registry} images try the mirror first, then the registry itself.\nserver = \"{server}\"\n"
        ),
        None => s += "# Pulls of images without a file of their own try the mirror first.\n",
    }
    s += &format!(
        "\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        mirror.url
    );
    if let Some(ca) = &mirror.ca_file {
        s += &format!("  ca = \"{ca}\"\n");
    }
    s
}

impl ContainerdHosts {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: Args = parse_args("containerd_hosts", args, ctx)?;
        let dir = a.dir.unwrap_or_else(|| DEFAULT_DIR.to_string());
        super::file::check_abs_path(&dir, "containerd_hosts", "dir", ctx)?;
        let mut files = BTreeMap::new();
        for (registry, value) in &a.mirrors {
            let mirror = check_entry(registry, value).map_err(|(msg, hint)| {
                InputError::new(ctx.playbook, ctx.line, format!("`containerd_hosts`: {msg}"))
                    .hint(hint)
            })?;
            files.insert(registry.clone(), hosts_toml(registry, &mirror));
        }
        Ok(ContainerdHosts {
            dir: dir.trim_end_matches('/').to_string(),
            files,
        })
    }

    fn file_of(&self, registry: &str) -> String {
        format!("{}/{registry}/hosts.toml", self.dir)
    }
}

/// What the probe saw of one registry's hosts.toml.
#[derive(Debug, PartialEq, Eq)]
struct Existing {
    ours: bool,
    sha256: String,
}

impl Module for ContainerdHosts {
    fn probe(&self, _opts: ProbeOptions) -> String {
        let dir = quote(&self.dir);
        let marker = quote(MARKER);
        format!(
            "d={dir}\n\
             if [ -d \"$d\" ]; then echo dir=yes; else echo dir=no; fi\n\
             for f in \"$d\"/*/hosts.toml; do\n\
             \x20 [ -f \"$f\" ] || continue\n\
             \x20 r=${{f%/hosts.toml}}; r=${{r##*/}}\n\
             \x20 if head -n 1 \"$f\" | grep -qxF {marker}; then o=ours; else o=theirs; fi\n\
             \x20 echo \"file=$o $(sha256sum < \"$f\" | cut -d' ' -f1) $r\"\n\
             done\n"
        )
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let mut dir_present = None;
        let mut existing: BTreeMap<String, Existing> = BTreeMap::new();
        for line in probe.stdout.lines() {
            if let Some(v) = line.strip_prefix("dir=") {
                dir_present = Some(v.trim() == "yes");
            } else if let Some(v) = line.strip_prefix("file=") {
                let mut parts = v.splitn(3, ' ');
                let (Some(owner), Some(sha), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(PlanError(format!("containerd_hosts probe line {line:?}")));
                };
                existing.insert(
                    name.to_string(),
                    Existing {
                        ours: owner == "ours",
                        sha256: sha.to_string(),
                    },
                );
            }
        }
        let dir_present =
            dir_present.ok_or_else(|| PlanError("containerd_hosts probe printed no dir".into()))?;
        let mut changes = Vec::new();
        if !dir_present {
            changes.push(Change::new(
                format!("create {}", self.dir),
                Action::Shell {
                    script: format!("mkdir -p -m 0755 {}", quote(&self.dir)),
                    stdin: None,
                },
            ));
        }
        for (registry, content) in &self.files {
            let path = self.file_of(registry);
            let sha = sha256_hex(content.as_bytes());
            let current = existing.get(registry);
            if current.is_some_and(|c| c.sha256 == sha) {
                continue;
            }
            if current.is_none() {
                changes.push(Change::new(
                    format!("create {}/{registry}", self.dir),
                    Action::Shell {
                        script: format!(
                            "mkdir -p -m 0755 {}",
                            quote(&format!("{}/{registry}", self.dir))
                        ),
                        stdin: None,
                    },
                ));
            }
            let verb = match current {
                None => "write",
                Some(c) if c.ours => "update",
                Some(_) => "replace hand-written",
            };
            changes.push(
                Change::new(
                    format!("{verb} {path} (mirror of {registry})"),
                    Action::Upload {
                        dest: path.clone(),
                        content: content.clone().into_bytes(),
                        attrs: FileAttrs::root("0644"),
                        validate: None,
                        backup: false,
                    },
                )
                .planned_from(&path, current.map(|c| c.sha256.clone())),
            );
        }
        for (registry, seen) in &existing {
            if !seen.ours || self.files.contains_key(registry) {
                continue;
            }
            let path = self.file_of(registry);
            changes.push(
                Change::new(
                    format!("remove {path} (no longer in registry_mirrors)"),
                    Action::Shell {
                        script: format!(
                            "rm -f -- {} && {{ rmdir -- {} 2>/dev/null || true; }}",
                            quote(&path),
                            quote(&format!("{}/{registry}", self.dir))
                        ),
                        stdin: None,
                    },
                )
                .planned_from(&path, Some(seen.sha256.clone())),
            );
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{build_simple, probe, run_probe, shell_script};

    fn build(args: &str) -> Result<ContainerdHosts, InputError> {
        build_simple(args, ContainerdHosts::from_args)
    }

    const K8S: &str = r#"mirrors = { "registry.k8s.io" = { url = "http://10.0.0.5:5000" } }"#;

    #[test]
    fn a_mirror_becomes_a_hosts_toml_with_the_upstream_as_server() {
        let m = build(K8S).unwrap();
        insta::assert_snapshot!(m.files["registry.k8s.io"]);
        let tls = build(
            r#"mirrors = { "docker.io" = { url = "https://mirror.example.com", ca_file = "/etc/ssl/mirror.pem" }, "_default" = { url = "https://all.example.com" } }"#,
        )
        .unwrap();
        insta::assert_snapshot!("docker_io_with_ca", tls.files["docker.io"]);
        insta::assert_snapshot!("default_namespace", tls.files["_default"]);
    }

    #[test]
    fn bad_entries_are_refused_naming_the_registry() {
        for (args, needle) in [
            (
                r#"mirrors = { "registry k8s" = { url = "http://m" } }"#,
                "not a registry host",
            ),
            (
                r#"mirrors = { "r.io:99999" = { url = "http://m" } }"#,
                "not a registry host",
            ),
            (
                r#"mirrors = { "r.io" = { url = "ftp://m" } }"#,
                "not an http(s) URL",
            ),
            (
                r#"mirrors = { "r.io" = { url = "http://m\"x" } }"#,
                "not an http(s) URL",
            ),
            (r#"mirrors = { "r.io" = { uri = "http://m" } }"#, "uri"),
            (
                r#"mirrors = { "r.io" = { url = "http://m", ca_file = "/ca.pem" } }"#,
                "plain HTTP",
            ),
            (
                r#"mirrors = { "r.io" = { url = "https://m", ca_file = "ca.pem" } }"#,
                "absolute",
            ),
            (r#"mirrors = { "r.io" = "http://m" }"#, "r.io"),
        ] {
            let err = build(args).unwrap_err();
            assert!(err.message.contains(needle), "{args}: {err}");
            assert_eq!(err.line, Some(7));
        }
    }

    #[test]
    fn a_converged_directory_plans_nothing_and_leaves_hand_written_files_alone() {
        let m = build(K8S).unwrap();
        let sha = sha256_hex(m.files["registry.k8s.io"].as_bytes());
        let out = format!(
            "dir=yes\nfile=ours {sha} registry.k8s.io\nfile=theirs {} quay.io\n",
            "a".repeat(64)
        );
        assert_eq!(m.plan(&probe(&out)).unwrap(), vec![]);
    }

    #[test]
    fn a_fresh_host_gets_the_directory_and_the_file() {
        let m = build(K8S).unwrap();
        let changes = m.plan(&probe("dir=no\n")).unwrap();
        let summaries: Vec<&str> = changes.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            [
                "create /etc/containerd/certs.d",
                "create /etc/containerd/certs.d/registry.k8s.io",
                "write /etc/containerd/certs.d/registry.k8s.io/hosts.toml (mirror of registry.k8s.io)",
            ]
        );
        match &changes[2].action {
            Action::Upload { dest, content, .. } => {
                assert_eq!(dest, "/etc/containerd/certs.d/registry.k8s.io/hosts.toml");
                assert!(
                    String::from_utf8_lossy(content).contains("[host.\"http://10.0.0.5:5000\"]")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_mirror_removed_from_the_inventory_removes_only_our_file() {
        let m = build("mirrors = {}").unwrap();
        let out = format!(
            "dir=yes\nfile=ours {} registry.k8s.io\nfile=theirs {} quay.io\n",
            "b".repeat(64),
            "a".repeat(64)
        );
        let changes = m.plan(&probe(&out)).unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            changes[0].summary,
            "remove /etc/containerd/certs.d/registry.k8s.io/hosts.toml (no longer in registry_mirrors)"
        );
        assert!(shell_script(&changes[0]).starts_with("rm -f -- "));
    }

    #[test]
    fn a_changed_mirror_url_updates_the_file_planned_from_what_was_there() {
        let m = build(K8S).unwrap();
        let out = format!("dir=yes\nfile=ours {} registry.k8s.io\n", "c".repeat(64));
        let changes = m.plan(&probe(&out)).unwrap();
        assert_eq!(changes.len(), 1);
        assert!(
            changes[0].summary.starts_with("update "),
            "{}",
            changes[0].summary
        );
        assert_eq!(
            changes[0].planned_from.as_ref().unwrap().sha256.as_deref(),
            Some("c".repeat(64).as_str())
        );
    }

    #[test]
    fn the_probe_reports_ours_and_theirs_from_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let m = build(&format!("dir = \"{d}\"\n{K8S}")).unwrap();
        std::fs::create_dir_all(dir.path().join("registry.k8s.io")).unwrap();
        std::fs::write(
            dir.path().join("registry.k8s.io/hosts.toml"),
            &m.files["registry.k8s.io"],
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("old.example.com:5000")).unwrap();
        std::fs::write(
            dir.path().join("old.example.com:5000/hosts.toml"),
            format!("{MARKER}\nserver = \"https://old.example.com:5000\"\n"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("quay.io")).unwrap();
        std::fs::write(dir.path().join("quay.io/hosts.toml"), "server = \"x\"\n").unwrap();
        let out = run_probe(&m.probe(ProbeOptions::default()));
        assert_eq!(out.exit_status, 0, "{out:?}");
        let changes = m.plan(&out).unwrap();
        let summaries: Vec<&str> = changes.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            [format!(
                "remove {d}/old.example.com:5000/hosts.toml (no longer in registry_mirrors)"
            )]
        );
        // The removal script leaves no empty directory behind.
        let script = shell_script(&changes[0]);
        let status = std::process::Command::new("sh")
            .args(["-c", script])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(!dir.path().join("old.example.com:5000").exists());
        assert!(dir.path().join("quay.io/hosts.toml").exists());
    }
}
