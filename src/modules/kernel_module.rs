//! `kernel_module`: a kernel module loaded now and at every boot.
//!
//! Arguments:
//! - `name` (required): the module, e.g. `"br_netfilter"` or `"overlay"`.
//!
//! ```toml
//! [[steps]]
//! name = "bridge traffic goes through iptables"
//! kernel_module = { name = "br_netfilter" }
//! ```
//!
//! The probe looks for `/sys/module/NAME` (`-` and `_` are the same to the kernel) and reads
//! `/etc/modules-load.d/NAME.conf`. The plan runs `modprobe` when the module is not loaded and
//! writes that file (it belongs to this step) when it does not list the module.
use super::file::{parse_remote_file, remote_file_probe, Kind};
use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelModuleArgs {
    name: String,
}

#[derive(Debug)]
pub struct KernelModule {
    name: String,
}

/// The kernel treats `-` and `_` in module names alike.
fn same_module(a: &str, b: &str) -> bool {
    a.replace('-', "_") == b.replace('-', "_")
}

impl KernelModule {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: KernelModuleArgs = parse_args("kernel_module", args, ctx)?;
        let valid = !a.name.is_empty()
            && !a.name.starts_with('-')
            && a.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                format!("`kernel_module`: {:?} is not a module name", a.name),
            )
            .hint("module names look like br_netfilter or overlay"));
        }
        Ok(KernelModule { name: a.name })
    }

    fn conf_path(&self) -> String {
        format!("/etc/modules-load.d/{}.conf", self.name)
    }
}

impl Module for KernelModule {
    fn probe(&self, _opts: ProbeOptions) -> String {
        format!(
            concat!(
                "(\nm={}\n",
                "u=$(printf '%s' \"$m\" | tr - _)\n",
                "if [ -d \"/sys/module/$m\" ] || [ -d \"/sys/module/$u\" ]; then echo loaded=yes\n",
                // Built into the kernel: always there, and not always under /sys/module.
                "elif grep -Eq \"/($m|$u)\\.ko\" \"/lib/modules/$(uname -r)/modules.builtin\" 2>/dev/null; then echo loaded=yes\n",
                "else echo loaded=no; fi\n)\n{}"
            ),
            quote(&self.name),
            remote_file_probe(&self.conf_path(), false, true)
        )
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let kv = probe_util::key_values(&probe.stdout);
        let remote = parse_remote_file(&probe.stdout)?;
        let mut changes = Vec::new();
        match kv.get("loaded").map(String::as_str) {
            Some("yes") => {}
            Some("no") => changes.push(Change::new(
                format!("load kernel module {}", self.name),
                Action::Shell {
                    script: format!("modprobe -- {}", quote(&self.name)),
                    stdin: None,
                },
            )),
            _ => {
                return Err(PlanError(format!(
                    "probe did not say whether {} is loaded",
                    self.name
                )))
            }
        }
        let path = self.conf_path();
        let old = match (&remote.stat, &remote.content) {
            (Some(st), _) if st.kind != Kind::File => {
                return Err(PlanError(format!(
                    "{path} is a {}, not a regular file",
                    st.kind
                )))
            }
            (Some(_), Some(c)) => String::from_utf8_lossy(c).into_owned(),
            (Some(_), None) => {
                return Err(PlanError(format!("probe printed no content for {path}")))
            }
            (None, _) => String::new(),
        };
        let listed = old
            .lines()
            .map(str::trim)
            .any(|l| !l.starts_with(['#', ';']) && same_module(l, &self.name));
        if !listed {
            let new = format!("{}\n", self.name);
            changes.push(
                Change::new(
                    format!("load {} at boot ({path})", self.name),
                    Action::Upload {
                        dest: path,
                        content: new.clone().into_bytes(),
                        attrs: FileAttrs::root("0644"),
                        validate: None,
                        backup: false,
                    },
                )
                .with_diff(old, new),
            );
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::testing::*;
    use super::*;
    use base64::Engine as _;

    fn km(args: &str) -> Result<KernelModule, InputError> {
        build_simple(args, KernelModule::from_args)
    }

    fn facts(loaded: bool, conf: Option<&str>) -> ProbeOutput {
        let mut s = format!("loaded={}\n", if loaded { "yes" } else { "no" });
        match conf {
            Some(c) => s.push_str(&format!(
                "type=regular file\nmode=644\nuid=0\nowner=root\ngid=0\ngroup=root\ncontent={}\n",
                base64::engine::general_purpose::STANDARD.encode(c)
            )),
            None => s.push_str("type=missing\ncontent=\n"),
        }
        probe(&s)
    }

    #[test]
    fn plans_load_and_conf_only_when_missing() {
        let m = km("name = \"br_netfilter\"").unwrap();
        assert!(m
            .plan(&facts(true, Some("# k8s\nbr_netfilter\n")))
            .unwrap()
            .is_empty());
        assert!(m
            .plan(&facts(true, Some("br-netfilter\n")))
            .unwrap()
            .is_empty());
        let all = m.plan(&facts(false, None)).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(scripts(&all[..1]), vec!["modprobe -- br_netfilter"]);
        match &all[1].action {
            Action::Upload { dest, content, .. } => {
                assert_eq!(dest, "/etc/modules-load.d/br_netfilter.conf");
                assert_eq!(content, b"br_netfilter\n");
            }
            other => panic!("{other:?}"),
        }
        let conf_only = m.plan(&facts(true, Some("# br_netfilter\n"))).unwrap();
        assert_eq!(conf_only.len(), 1, "a commented name does not count");
        assert!(m.plan(&probe("type=missing\n")).is_err());
    }

    #[test]
    fn bad_names() {
        for bad in ["\"\"", "\"-r\"", "\"a b\"", "\"../x\""] {
            let e = km(&format!("name = {bad}")).unwrap_err();
            assert!(e.message.contains("not a module name"), "{}", e.message);
        }
        assert!(km("name = \"x\"\nstate = \"absent\"")
            .unwrap_err()
            .message
            .contains("unknown field"));
    }

    #[test]
    fn probe_runs_here() {
        // Some module is loaded on any Linux host that has /sys/module; pick one.
        let loaded = std::fs::read_dir("/sys/module")
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned());
        if let Some(name) = loaded {
            let m = km(&format!("name = {name:?}")).unwrap();
            let out = run_probe(&m.probe(ProbeOptions::default()));
            assert!(out.stdout.contains("loaded=yes"), "{}", out.stdout);
        }
        let m = km("name = \"bootstrap_no_such_module\"").unwrap();
        let changes = m
            .plan(&run_probe(&m.probe(ProbeOptions::default())))
            .unwrap();
        assert_eq!(changes.len(), 2);
    }
}
