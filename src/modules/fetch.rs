//! `fetch`: copies a file from the host back to the admin machine (e.g. the cluster's admin
//! kubeconfig).
//!
//! Arguments:
//! - `src` (required): absolute path on the host.
//! - `dest` (required): local path, relative to the local output directory (absolute paths
//!   are taken as they are).
//! - `mode`: mode of the local file, default `"0600"` (fetched files are usually credentials).
//!
//! ```toml
//! [[steps]]
//! name = "admin kubeconfig to the admin machine"
//! fetch = { src = "/etc/kubernetes/admin.conf", dest = "kubeconfig" }
//! ```
//!
//! The probe takes the sha256 of the remote file; the local file is read when planning. A
//! fetch is planned when the local file is missing or differs. A missing remote file is an
//! error.
use super::file::{
    check_abs_path, check_mode, parse_remote_file, remote_file_probe, sha256_hex, Kind,
};
use super::*;
use crate::error::InputError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchArgs {
    src: String,
    dest: String,
    mode: Option<String>,
}

#[derive(Debug)]
pub struct Fetch {
    src: String,
    local: PathBuf,
    mode: String,
}

impl Fetch {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: FetchArgs = parse_args("fetch", args, ctx)?;
        check_abs_path(&a.src, "fetch", "src", ctx)?;
        check_mode(a.mode.as_deref(), "fetch", ctx)?;
        if a.dest.trim().is_empty() || a.dest.ends_with('/') {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                format!("`fetch`: dest {:?} is not a file name", a.dest),
            )
            .hint("e.g. dest = \"kubeconfig\" (relative to the local output directory)"));
        }
        Ok(Fetch {
            src: a.src,
            local: ctx.local_dir.join(&a.dest),
            mode: a.mode.unwrap_or_else(|| "0600".into()),
        })
    }

    /// Local path the file is written to.
    pub fn local_path(&self) -> &std::path::Path {
        &self.local
    }

    /// Mode the local file should have (octal string).
    pub fn mode(&self) -> &str {
        &self.mode
    }
}

impl Module for Fetch {
    fn probe(&self, _opts: ProbeOptions) -> String {
        remote_file_probe(&self.src, true, false)
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let remote = parse_remote_file(&probe.stdout)?;
        match &remote.stat {
            None => {
                return Err(PlanError(format!(
                    "remote file {} does not exist, nothing to fetch",
                    self.src
                )))
            }
            Some(st) if st.kind != Kind::File => {
                return Err(PlanError(format!(
                    "remote {} is a {}, not a regular file",
                    self.src, st.kind
                )))
            }
            Some(_) => {}
        }
        let remote_sha = remote
            .sha256
            .ok_or_else(|| PlanError(format!("probe printed no sha256 for {}", self.src)))?;
        let mode = u32::from_str_radix(self.mode.trim_start_matches("0o"), 8).unwrap_or(0o600);
        let verb = match std::fs::read(&self.local) {
            Ok(bytes) if sha256_hex(&bytes) == remote_sha => {
                // The right content with a wrong mode (a kubeconfig left 0644) is not converged.
                let now = std::fs::metadata(&self.local)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                    .map_err(|e| {
                        PlanError(format!("cannot stat local {}: {e}", self.local.display()))
                    })?;
                if now == mode {
                    return Ok(vec![]);
                }
                return Ok(vec![Change::new(
                    format!(
                        "set mode {:04o} on local {} (was {now:04o})",
                        mode,
                        self.local.display()
                    ),
                    Action::LocalMode {
                        path: self.local.clone(),
                        mode,
                    },
                )]);
            }
            Ok(_) => "update",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "fetch",
            Err(e) => {
                return Err(PlanError(format!(
                    "cannot read local {}: {e}",
                    self.local.display()
                )))
            }
        };
        Ok(vec![Change::new(
            format!(
                "{verb} {} from the host into {}",
                self.src,
                self.local.display()
            ),
            Action::Fetch {
                remote: self.src.clone(),
                local: self.local.clone(),
                mode,
                sha256: remote_sha,
            },
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::testing::*;
    use super::*;
    use std::path::Path;

    fn fetch(args: &str, local: &Path) -> Result<Fetch, InputError> {
        build_with(args, Path::new("/nonexistent"), local, Fetch::from_args)
    }

    fn remote(sha: &str) -> ProbeOutput {
        probe(&format!(
            "type=regular file\nmode=600\nuid=0\nowner=root\ngid=0\ngroup=root\nsha256={sha}\n"
        ))
    }

    #[test]
    fn fetch_only_when_local_differs() {
        let local = tempfile::tempdir().unwrap();
        let f = fetch(
            "src = \"/etc/kubernetes/admin.conf\"\ndest = \"kubeconfig\"",
            local.path(),
        )
        .unwrap();
        assert_eq!(f.local_path(), local.path().join("kubeconfig"));
        assert_eq!(f.mode(), "0600");
        let sha = sha256_hex(b"apiVersion: v1\n");
        let missing = f.plan(&remote(&sha)).unwrap();
        assert_eq!(
            missing[0].action,
            Action::Fetch {
                remote: "/etc/kubernetes/admin.conf".into(),
                local: local.path().join("kubeconfig"),
                mode: 0o600,
                sha256: sha.clone(),
            }
        );
        assert!(missing[0].summary.starts_with("fetch "));
        std::fs::write(local.path().join("kubeconfig"), "old\n").unwrap();
        assert!(f.plan(&remote(&sha)).unwrap()[0]
            .summary
            .starts_with("update "));
        std::fs::write(local.path().join("kubeconfig"), "apiVersion: v1\n").unwrap();
        std::fs::set_permissions(
            local.path().join("kubeconfig"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(f.plan(&remote(&sha)).unwrap().is_empty());
    }

    #[test]
    fn a_fetched_file_with_the_right_content_kept_a_wrong_mode() {
        let local = tempfile::tempdir().unwrap();
        let f = fetch("src = \"/etc/k.conf\"\ndest = \"kubeconfig\"", local.path()).unwrap();
        let path = local.path().join("kubeconfig");
        std::fs::write(&path, "apiVersion: v1\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let changes = f.plan(&remote(&sha256_hex(b"apiVersion: v1\n"))).unwrap();
        assert_eq!(
            changes.iter().map(|c| &c.action).collect::<Vec<_>>(),
            vec![&Action::LocalMode {
                path: path.clone(),
                mode: 0o600
            }]
        );
        assert!(
            changes[0].summary.contains("(was 0644)"),
            "{}",
            changes[0].summary
        );
    }

    #[test]
    fn missing_remote_is_an_error() {
        let f = fetch(
            "src = \"/etc/kubernetes/admin.conf\"\ndest = \"kubeconfig\"",
            Path::new("/tmp"),
        )
        .unwrap();
        let e = f.plan(&probe("type=missing\n")).unwrap_err();
        assert!(e.0.contains("does not exist"), "{}", e.0);
        assert!(f
            .plan(&probe(
                "type=directory\nmode=755\nuid=0\nowner=root\ngid=0\ngroup=root\n"
            ))
            .is_err());
    }

    #[test]
    fn bad_arguments() {
        for (args, needle) in [
            ("src = \"admin.conf\"\ndest = \"k\"", "absolute"),
            ("src = \"/a\"\ndest = \"\"", "not a file name"),
            ("src = \"/a\"\ndest = \"k\"\nmode = \"rw\"", "octal"),
            ("src = \"/a\"\ndest = \"k\"\nflat = true", "unknown field"),
        ] {
            let e = fetch(args, Path::new("/tmp")).unwrap_err();
            assert!(e.message.contains(needle), "{args}: {}", e.message);
        }
    }

    #[test]
    fn real_probe() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("admin.conf");
        std::fs::write(&src, "secret\n").unwrap();
        let local = tempfile::tempdir().unwrap();
        let f = fetch(
            &format!("src = {:?}\ndest = \"out/kc\"", src.to_str().unwrap()),
            local.path(),
        )
        .unwrap();
        assert_eq!(
            f.plan(&run_probe(&f.probe(ProbeOptions::default())))
                .unwrap()
                .len(),
            1
        );
        std::fs::create_dir(local.path().join("out")).unwrap();
        std::fs::copy(&src, local.path().join("out/kc")).unwrap();
        std::fs::set_permissions(
            local.path().join("out/kc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(f
            .plan(&run_probe(&f.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
    }
}
