//! `sysctl`: a kernel parameter, set now and kept across reboots.
//!
//! Arguments:
//! - `name` (required): the key, e.g. `"net.ipv4.ip_forward"`.
//! - `value` (required): a string or an integer; whitespace inside is compared loosely
//!   (`"4096 87380 6291456"` matches the tab-separated value the kernel prints).
//! - `file`: where the setting is persisted, default `"/etc/sysctl.d/99-bootstrap.conf"`.
//!   The `name = value` line there is replaced or appended; other lines are left alone.
//!
//! ```toml
//! [[steps]]
//! name = "forward IPv4 packets (kubeadm preflight)"
//! sysctl = { name = "net.ipv4.ip_forward", value = "1" }
//! ```
//!
//! The probe reads the runtime value (`sysctl -n`) and the file; the plan writes the file and
//! runs `sysctl -w` only where they differ. A key the kernel does not have yet (its module is
//! loaded by an earlier step) is planned as a change, and `sysctl -w` tells if it still is not
//! there.
use super::file::{merged_attrs, parse_remote_file, remote_file_probe, Kind};
use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

pub const DEFAULT_FILE: &str = "/etc/sysctl.d/99-bootstrap.conf";

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Value {
    Text(String),
    Int(i64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SysctlArgs {
    name: String,
    value: Value,
    file: Option<String>,
}

#[derive(Debug)]
pub struct Sysctl {
    name: String,
    value: String,
    file: String,
}

/// Whitespace-insensitive form of a value.
fn normalize(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The key's path under /proc/sys, by the rule of sysctl.d(5) and sysctl(8): when the first
/// separator is `/`, the key already is the path (dots are part of names, as in `eth0.100`);
/// when it is `.`, dots separate and slashes stand for literal dots
/// (`net.ipv4.conf.eth0/100.forwarding` is `net/ipv4/conf/eth0.100/forwarding`).
fn proc_path(key: &str) -> String {
    let key = key.trim().trim_start_matches('-').trim();
    match key.find(['.', '/']) {
        Some(i) if key.as_bytes()[i] == b'/' => key.to_string(),
        _ => swap_dots_and_slashes(key),
    }
}

fn swap_dots_and_slashes(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

/// One spelling per key, the dotted one (`/` only inside a name), so `net/ipv4/ip_forward` in
/// a file matches `net.ipv4.ip_forward`, and `eth0.100` never becomes `eth0/100`.
fn normalize_key(key: &str) -> String {
    swap_dots_and_slashes(&proc_path(key))
}

impl Sysctl {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: SysctlArgs = parse_args("sysctl", args, ctx)?;
        let valid_name = !a.name.is_empty()
            && !a.name.starts_with(['-', '.', '/'])
            && a.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
        if !valid_name {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                format!("`sysctl`: {:?} is not a sysctl key", a.name),
            )
            .hint("keys look like net.ipv4.ip_forward"));
        }
        let value = match a.value {
            Value::Text(t) => t,
            Value::Int(i) => i.to_string(),
        };
        if value.contains(['\n', '\r']) || normalize(&value).is_empty() {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                format!("`sysctl` {}: the value must be one non-empty line", a.name),
            )
            .hint("e.g. value = \"1\""));
        }
        let file = a.file.unwrap_or_else(|| DEFAULT_FILE.to_string());
        super::file::check_abs_path(&file, "sysctl", "file", ctx)?;
        Ok(Sysctl {
            name: normalize_key(&a.name),
            value: normalize(&value),
            file,
        })
    }

    /// The file's new content, or None when it already persists our value.
    fn edit(&self, old: &str) -> Option<String> {
        let wanted = format!("{} = {}", self.name, self.value);
        let is_ours = |l: &str| {
            let t = l.trim_start();
            !t.starts_with(['#', ';'])
                && t.split_once('=')
                    .is_some_and(|(k, _)| normalize_key(k) == self.name)
        };
        let ours: Vec<&str> = old.lines().filter(|l| is_ours(l)).collect();
        if let [only] = ours[..] {
            let value = only
                .split_once('=')
                .map(|(_, v)| normalize(v))
                .unwrap_or_default();
            if value == self.value {
                return None;
            }
        }
        let mut out = Vec::new();
        let mut placed = false;
        for l in old.lines() {
            if !is_ours(l) {
                out.push(l);
            } else if !placed {
                out.push(&wanted);
                placed = true;
            }
        }
        if !placed {
            out.push(&wanted);
        }
        Some(out.join("\n") + "\n")
    }
}

impl Module for Sysctl {
    fn probe(&self, _opts: ProbeOptions) -> String {
        format!(
            concat!(
                "(\nk={}\n",
                "if v=$(cat \"/proc/sys/$k\" 2>/dev/null); then echo \"runtime=$(printf '%s' \"$v\" | tr '\\n\\t' '  ')\"\n",
                "else echo runtime_missing=yes; fi\n)\n{}"
            ),
            quote(&proc_path(&self.name)),
            remote_file_probe(&self.file, false, true)
        )
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let kv = probe_util::key_values(&probe.stdout);
        let remote = parse_remote_file(&probe.stdout)?;
        let mut changes = Vec::new();

        let old = match &remote.stat {
            None => String::new(),
            Some(st) if st.kind != Kind::File => {
                return Err(PlanError(format!(
                    "{} is a {}, not a regular file",
                    self.file, st.kind
                )))
            }
            Some(_) => {
                let bytes = remote.content.clone().ok_or_else(|| {
                    PlanError(format!("probe printed no content for {}", self.file))
                })?;
                String::from_utf8(bytes)
                    .map_err(|_| PlanError(format!("{} is not UTF-8 text", self.file)))?
            }
        };
        if let Some(new) = self.edit(&old) {
            let defaults = FileAttrs {
                mode: Some("0644".into()),
                owner: Some("root".into()),
                group: Some("root".into()),
            };
            let attrs = match &remote.stat {
                Some(st) => merged_attrs(&FileAttrs::default(), Some(st)),
                None => defaults,
            };
            changes.push(
                Change::new(
                    format!("persist {} = {} in {}", self.name, self.value, self.file),
                    Action::Upload {
                        dest: self.file.clone(),
                        content: new.clone().into_bytes(),
                        attrs,
                        validate: None,
                        backup: false,
                    },
                )
                .with_diff(old, new),
            );
        }

        let runtime = match (kv.get("runtime"), kv.contains_key("runtime_missing")) {
            (Some(v), _) => Some(normalize(v)),
            (None, true) => None,
            (None, false) => return Err(PlanError(format!("probe did not read {}", self.name))),
        };
        if runtime.as_deref() != Some(self.value.as_str()) {
            let was = runtime.map_or("key not present yet".to_string(), |v| format!("was {v}"));
            changes.push(Change::new(
                format!("set {} = {} now ({was})", self.name, self.value),
                Action::Shell {
                    script: format!(
                        "sysctl -q -w {}",
                        quote(&format!("{}={}", self.name, self.value))
                    ),
                    stdin: None,
                },
            ));
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::testing::*;
    use super::*;
    use base64::Engine as _;

    fn sysctl(args: &str) -> Result<Sysctl, InputError> {
        build_simple(args, Sysctl::from_args)
    }

    fn facts(runtime: Option<&str>, file: Option<&str>) -> ProbeOutput {
        let mut s = match runtime {
            Some(v) => format!("runtime={v}\n"),
            None => "runtime_missing=yes\n".into(),
        };
        match file {
            Some(c) => s.push_str(&format!(
                "type=regular file\nmode=600\nuid=0\nowner=root\ngid=0\ngroup=root\ncontent={}\n",
                base64::engine::general_purpose::STANDARD.encode(c)
            )),
            None => s.push_str("type=missing\ncontent=\n"),
        }
        probe(&s)
    }

    fn upload(c: &Change) -> (String, String, FileAttrs) {
        match &c.action {
            Action::Upload {
                dest,
                content,
                attrs,
                ..
            } => (
                dest.clone(),
                String::from_utf8(content.clone()).unwrap(),
                attrs.clone(),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn converged_host_plans_nothing() {
        let s = sysctl("name = \"net.ipv4.ip_forward\"\nvalue = 1").unwrap();
        assert!(s
            .plan(&facts(Some("1"), Some("# x\nnet.ipv4.ip_forward=1\n")))
            .unwrap()
            .is_empty());
        let multi =
            sysctl("name = \"net.ipv4.tcp_rmem\"\nvalue = \"4096  131072 6291456\"").unwrap();
        assert!(multi
            .plan(&facts(
                Some("4096 131072 6291456 "),
                Some("net/ipv4/tcp_rmem = 4096\t131072 6291456\n")
            ))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn fresh_host_gets_file_and_runtime() {
        let s = sysctl("name = \"net.ipv4.ip_forward\"\nvalue = \"1\"").unwrap();
        let changes = s.plan(&facts(Some("0"), None)).unwrap();
        assert_eq!(changes.len(), 2);
        let (dest, content, attrs) = upload(&changes[0]);
        assert_eq!(
            (dest.as_str(), content.as_str()),
            (DEFAULT_FILE, "net.ipv4.ip_forward = 1\n")
        );
        assert_eq!(attrs.mode.as_deref(), Some("0644"));
        assert_eq!(
            scripts(&changes[1..]),
            vec!["sysctl -q -w net.ipv4.ip_forward=1"]
        );
        assert!(changes[1].summary.contains("was 0"));
    }

    #[test]
    fn only_the_part_that_differs() {
        let s =
            sysctl("name = \"vm.swappiness\"\nvalue = \"10\"\nfile = \"/etc/sysctl.d/50-x.conf\"")
                .unwrap();
        let runtime_only = s
            .plan(&facts(Some("60"), Some("vm.swappiness = 10\n")))
            .unwrap();
        assert_eq!(
            scripts(&runtime_only),
            vec!["sysctl -q -w vm.swappiness=10"]
        );
        let file_only = s
            .plan(&facts(
                Some("10"),
                Some("a = 1\nvm.swappiness = 60\nb = 2\n- vm.swappiness=5\n"),
            ))
            .unwrap();
        assert_eq!(file_only.len(), 1);
        let (dest, content, attrs) = upload(&file_only[0]);
        assert_eq!(dest, "/etc/sysctl.d/50-x.conf");
        assert_eq!(
            content, "a = 1\nvm.swappiness = 10\nb = 2\n",
            "replaced in place, duplicates dropped"
        );
        assert_eq!(
            attrs.mode.as_deref(),
            Some("0600"),
            "existing attributes kept"
        );
        assert!(file_only[0].diff.is_some());
    }

    #[test]
    fn key_not_present_yet_is_planned_not_an_error() {
        let s = sysctl("name = \"net.bridge.bridge-nf-call-iptables\"\nvalue = 1").unwrap();
        let changes = s.plan(&facts(None, None)).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(changes[1].summary.contains("key not present yet"));
        assert!(
            s.plan(&probe("type=missing\n")).is_err(),
            "no runtime answer at all is an error"
        );
    }

    #[test]
    fn bad_arguments() {
        for (args, needle) in [
            ("name = \"net ipv4\"\nvalue = 1", "not a sysctl key"),
            ("name = \"-w\"\nvalue = 1", "not a sysctl key"),
            ("name = \"a.b\"\nvalue = \" \"", "non-empty"),
            ("name = \"a.b\"\nvalue = true", "bad arguments"),
            ("name = \"a.b\"\nvalue = 1\nfile = \"x.conf\"", "absolute"),
            ("name = \"a.b\"\nvalue = 1\npersist = true", "unknown field"),
        ] {
            let e = sysctl(args).unwrap_err();
            assert!(e.message.contains(needle), "{args}: {}", e.message);
        }
    }

    #[test]
    fn key_with_a_dot_in_an_interface_name_rewritten_as_another_key() {
        // `eth0.100` is one interface: its key is spelled with a slash in the dotted form.
        let dotted = sysctl("name = \"net.ipv4.conf.eth0/100.forwarding\"\nvalue = 1").unwrap();
        let slashed = sysctl("name = \"net/ipv4/conf/eth0.100/forwarding\"\nvalue = 1").unwrap();
        for s in [&dotted, &slashed] {
            assert_eq!(s.name, "net.ipv4.conf.eth0/100.forwarding");
            let probe_script = s.probe(ProbeOptions::default());
            assert!(
                probe_script.contains("k=net/ipv4/conf/eth0.100/forwarding\n"),
                "{probe_script}"
            );
            let changes = s.plan(&facts(Some("0"), None)).unwrap();
            assert_eq!(
                upload(&changes[0]).1,
                "net.ipv4.conf.eth0/100.forwarding = 1\n"
            );
            assert!(scripts(&changes[1..])[0].contains("net.ipv4.conf.eth0/100.forwarding=1"));
        }
        // A line for interface `eth0` sub-key `100` is another key, not ours.
        let other = "net.ipv4.conf.eth0.100.forwarding = 1\n";
        let changes = dotted.plan(&facts(Some("1"), Some(other))).unwrap();
        assert_eq!(
            upload(&changes[0]).1,
            format!("{other}net.ipv4.conf.eth0/100.forwarding = 1\n")
        );
        // Written with slashes in the file, it is the same key: converged.
        let same = "net/ipv4/conf/eth0.100/forwarding = 1\n";
        assert!(dotted
            .plan(&facts(Some("1"), Some(same)))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn probe_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("99.conf");
        // A key every Linux has; the wanted value is whatever it is now, so only the file differs.
        let now = std::fs::read_to_string("/proc/sys/kernel/ostype").unwrap();
        let s = sysctl(&format!(
            "name = \"kernel.ostype\"\nvalue = {:?}\nfile = {:?}",
            now.trim(),
            file.to_str().unwrap()
        ))
        .unwrap();
        let changes = s
            .plan(&run_probe(&s.probe(ProbeOptions::default())))
            .unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        std::fs::write(&file, upload(&changes[0]).1).unwrap();
        assert!(s
            .plan(&run_probe(&s.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
        let missing = sysctl("name = \"bootstrap.no.such.key\"\nvalue = 1").unwrap();
        let out = run_probe(&missing.probe(ProbeOptions::default()));
        assert!(out.stdout.contains("runtime_missing=yes"), "{}", out.stdout);
    }
}
