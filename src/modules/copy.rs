//! `copy` and `template`: puts a whole file on the host, replacing it only when its content
//! differs.
//!
//! Arguments:
//! - `src`: a file under the repo's `files/` directory. `copy` sends it byte for byte;
//!   `template` renders it first with the host's variables (minijinja, undefined variables
//!   are errors).
//! - `content` (`copy` only, instead of `src`): the text to write.
//! - `dest` (required): absolute path on the host.
//! - `mode`, `owner`, `group`: attributes of the file. When left out, an existing file keeps
//!   its own.
//! - `validate`: a command checking the new file before it replaces the old one; `%s` is the
//!   path of the uploaded temp file, e.g. `"visudo -cf %s"`.
//! - `backup` (default `false`): keep the old file beside the new one.
//!
//! ```toml
//! [[steps]]
//! name = "kubeadm configuration"
//! template = { src = "kubeadm.yaml.j2", dest = "/etc/kubernetes/kubeadm.yaml", mode = "0600" }
//!
//! [[steps]]
//! name = "containerd uses the systemd cgroup driver"
//! copy = { content = "version = 2\n", dest = "/etc/containerd/config.toml", mode = "0644" }
//! ```
//!
//! The probe compares sha256 sums (ours is computed locally); with `--diff` it also reads the
//! current content to show a diff. When only the attributes differ, only `chmod`/`chown` run.
use super::file::{
    attr_changes, check_abs_path, check_mode, describe_attrs, merged_attrs, parse_remote_file,
    remote_file_probe, sha256_hex,
};
use super::*;
use crate::error::InputError;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyArgs {
    src: Option<String>,
    content: Option<String>,
    dest: String,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    validate: Option<String>,
    #[serde(default)]
    backup: bool,
}

#[derive(Debug)]
pub struct Copy {
    dest: String,
    content: Vec<u8>,
    sha256: String,
    attrs: FileAttrs,
    validate: Option<String>,
    backup: bool,
    /// Where the content came from, for summaries: "template kubeadm.yaml.j2".
    origin: String,
}

impl Copy {
    pub fn from_args(
        args: &toml::Value,
        ctx: &BuildContext<'_>,
        template: bool,
    ) -> Result<Self, InputError> {
        let kind = if template { "template" } else { "copy" };
        let a: CopyArgs = parse_args(kind, args, ctx)?;
        check_abs_path(&a.dest, kind, "dest", ctx)?;
        check_mode(a.mode.as_deref(), kind, ctx)?;
        if let Some(v) = &a.validate {
            if !v.contains("%s") {
                return Err(InputError::new(
                    ctx.playbook,
                    ctx.line,
                    format!("`{kind}`: validate {v:?} does not contain %s"),
                )
                .hint("%s stands for the uploaded file, e.g. validate = \"visudo -cf %s\""));
            }
        }
        let (content, origin) = match (&a.src, &a.content, template) {
            (Some(src), None, true) => (
                (ctx.render_template)(src)?.into_bytes(),
                format!("template {src}"),
            ),
            (Some(src), None, false) => {
                let path = ctx.files_dir.join(src);
                let bytes = std::fs::read(&path).map_err(|e| {
                    InputError::new(
                        ctx.playbook,
                        ctx.line,
                        format!("`copy`: cannot read {}: {e}", path.display()),
                    )
                    .hint(format!("src is relative to {}", ctx.files_dir.display()))
                })?;
                (bytes, format!("file {src}"))
            }
            (None, Some(text), false) => (text.clone().into_bytes(), "inline content".to_string()),
            (None, Some(_), true) => {
                return Err(InputError::new(
                    ctx.playbook,
                    ctx.line,
                    "`template` takes src, not content",
                )
                .hint(
                    "put the template in files/ and name it with src, or use `copy` with content",
                ))
            }
            (Some(_), Some(_), _) => {
                return Err(InputError::new(
                    ctx.playbook,
                    ctx.line,
                    format!("`{kind}`: give src or content, not both"),
                )
                .hint("keep one of the two"))
            }
            (None, None, _) => {
                let hint = if template {
                    "name the template with src = \"name.j2\""
                } else {
                    "add src = \"name\" (under files/) or content = \"...\""
                };
                return Err(InputError::new(
                    ctx.playbook,
                    ctx.line,
                    format!("`{kind}`: nothing to write"),
                )
                .hint(hint));
            }
        };
        Ok(Copy {
            dest: a.dest,
            sha256: sha256_hex(&content),
            content,
            attrs: FileAttrs {
                mode: a.mode,
                owner: a.owner,
                group: a.group,
            },
            validate: a.validate,
            backup: a.backup,
            origin,
        })
    }
}

impl Module for Copy {
    fn probe(&self, opts: ProbeOptions) -> String {
        remote_file_probe(&self.dest, true, opts.want_content)
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let remote = parse_remote_file(&probe.stdout)?;
        if let Some(st) = &remote.stat {
            if st.kind != super::file::Kind::File {
                return Err(PlanError(format!(
                    "{} exists but is a {}, not a regular file",
                    self.dest, st.kind
                )));
            }
            if remote.sha256.is_none() {
                return Err(PlanError(format!(
                    "probe printed no sha256 for {}",
                    self.dest
                )));
            }
        }
        if let (Some(st), Some(sha)) = (&remote.stat, &remote.sha256) {
            if *sha == self.sha256 {
                return Ok(attr_changes(&self.dest, &self.attrs, st));
            }
        }
        let verb = if remote.stat.is_some() {
            "update"
        } else {
            "create"
        };
        let attrs = merged_attrs(&self.attrs, remote.stat.as_ref());
        let mut change = Change::new(
            format!(
                "{verb} {} from {}{}",
                self.dest,
                self.origin,
                describe_attrs(&self.attrs)
            ),
            Action::Upload {
                dest: self.dest.clone(),
                content: self.content.clone(),
                attrs,
                validate: self.validate.clone(),
                backup: self.backup,
            },
        )
        .planned_from(&self.dest, remote.sha256.clone());
        // `content=` is only printed when a diff was asked for (`--diff`).
        if let Some(old) = &remote.content {
            if let (Ok(old), Ok(new)) =
                (std::str::from_utf8(old), std::str::from_utf8(&self.content))
            {
                change = change.with_diff(old, new);
            }
        }
        Ok(vec![change])
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::testing::*;
    use super::*;
    use std::path::Path;

    fn copy_in(files: &Path, args: &str, template: bool) -> Result<Copy, InputError> {
        build_with(args, files, Path::new("/nonexistent"), |v, c| {
            Copy::from_args(v, c, template)
        })
    }

    fn copy(args: &str) -> Result<Copy, InputError> {
        copy_in(Path::new("/nonexistent"), args, false)
    }

    const HELLO_SHA: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    #[test]
    fn sha_is_computed_locally() {
        let c = copy("content = \"hello\\n\"\ndest = \"/etc/x\"").unwrap();
        assert_eq!(c.sha256, HELLO_SHA);
    }

    #[test]
    fn upload_only_when_content_differs() {
        let c = copy(
            "content = \"hello\\n\"\ndest = \"/etc/x\"\nmode = \"0640\"\nvalidate = \"check %s\"",
        )
        .unwrap();
        let stat = "type=regular file\nmode=640\nuid=0\nowner=root\ngid=4\ngroup=adm\n";
        assert!(c
            .plan(&probe(&format!("{stat}sha256={HELLO_SHA}\n")))
            .unwrap()
            .is_empty());

        let changed = c.plan(&probe(&format!("{stat}sha256=00\n"))).unwrap();
        assert_eq!(changed.len(), 1);
        assert!(changed[0].summary.starts_with("update /etc/x"));
        assert_eq!(changed[0].diff, None, "no content asked, no diff");
        let Action::Upload {
            dest,
            content,
            attrs,
            validate,
            backup,
        } = &changed[0].action
        else {
            panic!("{:?}", changed[0].action)
        };
        assert_eq!(
            (
                dest.as_str(),
                content.as_slice(),
                validate.as_deref(),
                *backup
            ),
            ("/etc/x", &b"hello\n"[..], Some("check %s"), false)
        );
        // Owner and group not asked: the existing ones are kept.
        assert_eq!(
            attrs,
            &FileAttrs {
                mode: Some("0640".into()),
                owner: Some("root".into()),
                group: Some("adm".into())
            }
        );

        let created = c.plan(&probe("type=missing\n")).unwrap();
        assert!(created[0].summary.starts_with("create /etc/x"));
        let Action::Upload { attrs, .. } = &created[0].action else {
            panic!()
        };
        assert_eq!(
            attrs,
            &FileAttrs {
                mode: Some("0640".into()),
                owner: None,
                group: None
            }
        );
    }

    #[test]
    fn only_attributes_differ() {
        let c = copy("content = \"hello\\n\"\ndest = \"/etc/x\"\nmode = \"0600\"\nowner = \"app\"")
            .unwrap();
        let out = format!("type=regular file\nmode=644\nuid=0\nowner=root\ngid=0\ngroup=root\nsha256={HELLO_SHA}\n");
        assert_eq!(
            scripts(&c.plan(&probe(&out)).unwrap()),
            vec!["chmod 00600 -- /etc/x", "chown app -- /etc/x"]
        );
    }

    #[test]
    fn diff_when_content_was_probed() {
        let c = copy("content = \"hello\\n\"\ndest = \"/etc/x\"").unwrap();
        let out = "type=regular file\nmode=644\nuid=0\nowner=root\ngid=0\ngroup=root\nsha256=ab\ncontent=b2xkCg==\n";
        let changes = c.plan(&probe(out)).unwrap();
        assert_eq!(changes[0].diff, Some(("old\n".into(), "hello\n".into())));
        let missing = c.plan(&probe("type=missing\ncontent=\n")).unwrap();
        assert_eq!(missing[0].diff, Some((String::new(), "hello\n".into())));
        // Binary old content: no diff, still an upload.
        let bin = "type=regular file\nmode=644\nuid=0\nowner=root\ngid=0\ngroup=root\nsha256=ab\ncontent=/w==\n";
        assert_eq!(c.plan(&probe(bin)).unwrap()[0].diff, None);
    }

    #[test]
    fn dest_that_is_a_directory_is_an_error() {
        let c = copy("content = \"x\"\ndest = \"/etc\"").unwrap();
        let out = "type=directory\nmode=755\nuid=0\nowner=root\ngid=0\ngroup=root\n";
        assert!(c.plan(&probe(out)).unwrap_err().0.contains("directory"));
    }

    #[test]
    fn src_and_template_read_from_files_dir() {
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("greet.j2"), "hello {{ name }}\n").unwrap();
        std::fs::write(files.path().join("bin"), [0u8, 159, 146, 150]).unwrap();
        let t = copy_in(files.path(), "src = \"greet.j2\"\ndest = \"/etc/g\"", true).unwrap();
        assert_eq!(t.content, b"hello world\n");
        let c = copy_in(files.path(), "src = \"greet.j2\"\ndest = \"/etc/g\"", false).unwrap();
        assert_eq!(c.content, b"hello {{ name }}\n");
        let b = copy_in(files.path(), "src = \"bin\"\ndest = \"/b\"", false).unwrap();
        assert_eq!(b.content, vec![0u8, 159, 146, 150]);
        let missing = copy_in(files.path(), "src = \"nope\"\ndest = \"/b\"", false).unwrap_err();
        assert!(
            missing.message.contains("cannot read"),
            "{}",
            missing.message
        );
    }

    #[test]
    fn bad_arguments() {
        let files = tempfile::tempdir().unwrap();
        for (args, template, needle) in [
            (
                "content = \"x\"\nsrc = \"y\"\ndest = \"/x\"",
                false,
                "not both",
            ),
            ("dest = \"/x\"", false, "nothing to write"),
            ("content = \"x\"\ndest = \"/x\"", true, "not content"),
            ("content = \"x\"\ndest = \"x\"", false, "absolute"),
            (
                "content = \"x\"\ndest = \"/x\"\nvalidate = \"visudo -c\"",
                false,
                "%s",
            ),
            (
                "content = \"x\"\ndest = \"/x\"\nmode = 644",
                false,
                "invalid type",
            ),
            (
                "content = \"x\"\ndest = \"/x\"\nforce = true",
                false,
                "unknown field",
            ),
        ] {
            let e = copy_in(files.path(), args, template).unwrap_err();
            assert!(e.message.contains(needle), "{args}: {}", e.message);
        }
    }

    #[test]
    fn probe_reads_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("odd name's.conf");
        let (user, group) = me();
        let args = format!(
            "content = \"hello\\n\"\ndest = {:?}\nmode = \"0644\"\nowner = {user:?}\ngroup = {group:?}",
            dest.to_str().unwrap()
        );
        let c = copy(&args).unwrap();
        let with_content = ProbeOptions { want_content: true };
        let first = c.plan(&run_probe(&c.probe(with_content))).unwrap();
        assert_eq!(first[0].diff, Some((String::new(), "hello\n".into())));
        // Bytes that are not UTF-8 and no trailing newline survive the probe.
        std::fs::write(&dest, [b'h', 0xff, b'\n', 0]).unwrap();
        let remote = parse_remote_file(&run_probe(&c.probe(with_content)).stdout).unwrap();
        assert_eq!(remote.content, Some(vec![b'h', 0xff, b'\n', 0]));
        assert_eq!(
            remote.sha256.as_deref(),
            Some(sha256_hex(&[b'h', 0xff, b'\n', 0]).as_str())
        );
        std::fs::write(&dest, "hello\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        let attrs_only = c
            .plan(&run_probe(&c.probe(ProbeOptions::default())))
            .unwrap();
        assert_eq!(attrs_only.len(), 1);
        assert!(
            attrs_only[0].summary.starts_with("set mode 0644"),
            "{}",
            attrs_only[0].summary
        );
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(c
            .plan(&run_probe(&c.probe(with_content)))
            .unwrap()
            .is_empty());
    }
}
