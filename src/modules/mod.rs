//! Modules: one file per domain. A module is computed, not executed: from its arguments it
//! builds a read-only `probe` script; from the probe's output it plans the `Change`s that would
//! bring the host to the wanted state. An empty plan means the host already matches.
//!
//! Modules never talk to a host themselves: the runner runs probes and applies changes through
//! one function, so check mode cannot be bypassed. Modules are tested from data (arguments +
//! faked probe output -> expected changes), without SSH.

pub mod address;
pub mod apt;
pub mod apt_repo;
pub mod command;
pub mod containerd_hosts;
pub mod copy;
pub mod download;
pub mod fetch;
pub mod file;
pub mod kernel_module;
pub mod line;
pub mod nodeport_filter;
pub mod openpgp;
pub mod postgres;
pub mod service;
pub mod sysctl;
pub mod ufw;
pub mod wait_for;

use std::path::PathBuf;

/// Test helpers shared by the modules' tests (build from TOML, run a probe in a local `sh`).
#[cfg(test)]
pub(crate) use file::testing;

/// What the runner hands a module when building it from a step's (already rendered) arguments.
pub struct BuildContext<'a> {
    /// The playbook file and the step's line, for error messages.
    pub playbook: &'a std::path::Path,
    pub line: Option<usize>,
    /// Directory of templates and static files (the repo's `files/`).
    pub files_dir: &'a std::path::Path,
    /// Renders a template from `files_dir` with the host's variables (minijinja, strict undefined).
    pub render_template: &'a dyn Fn(&str) -> Result<String, crate::error::InputError>,
    /// Local directory on the admin machine where `fetch` puts files and `download` caches.
    pub local_dir: PathBuf,
}

/// Options that change what a probe gathers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeOptions {
    /// `--diff`: file modules also return the current content so a diff can be shown.
    pub want_content: bool,
}

/// Output of a module's probe script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeOutput {
    pub exit_status: i32,
    pub stdout: String,
}

/// Errors while planning: the probe said something the module cannot work with.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct PlanError(pub String);

/// Marks a `PlanError` that only says "what I manage does not exist yet" (a unit, a file):
/// in check mode an earlier step that would create it did not run, so that is no failure.
const NOT_YET: &str = "\u{1}not-yet\u{1}";

impl PlanError {
    /// The thing this step works on does not exist yet (an earlier step may create it).
    pub fn not_yet(message: impl Into<String>) -> Self {
        PlanError(format!("{NOT_YET}{}", message.into()))
    }

    /// True for `not_yet` errors; every other planning error means the probe's answer is wrong
    /// or missing, which an earlier change cannot explain.
    pub fn is_not_yet(&self) -> bool {
        self.0.starts_with(NOT_YET)
    }

    pub fn message(&self) -> &str {
        self.0.strip_prefix(NOT_YET).unwrap_or(&self.0)
    }
}

/// A module instance for one step on one host.
pub trait Module: Send + Sync + std::fmt::Debug {
    /// Read-only shell script (run as root through the transport) printing the facts the module
    /// needs. Must change nothing on the host. Empty string: no probe needed.
    fn probe(&self, opts: ProbeOptions) -> String;

    /// The changes needed, computed from the probe's output. Empty: the host already matches.
    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError>;

    /// True when the probe's output is sensitive (e.g. a password verifier): the runner then
    /// keeps it out of logs and events.
    fn probe_is_sensitive(&self) -> bool {
        false
    }

    /// How long applying this step may legitimately take when the module knows better than
    /// the default for its kind (e.g. `wait_for`: its own timeout).
    fn expected_duration(&self) -> Option<std::time::Duration> {
        None
    }

    /// Bytes the probe reads on its stdin (a secret a guard authenticates with): sent beside
    /// the probe script, never inside it, so they reach no command line and no log.
    fn probe_stdin(&self) -> Option<&[u8]> {
        None
    }

    /// What `register` keeps from the probe, for modules whose probe is the answer (a
    /// read-only command). `None`: the value is the output of the change, if one runs.
    fn registered_value(&self, _probe: &ProbeOutput) -> Option<String> {
        None
    }
}

/// One thing that would change on a host, with the sentence shown in check mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Human sentence: "create directory /etc/foo", "install postgresql".
    pub summary: String,
    pub action: Action,
    /// For `--diff`: (old, new) file contents; secrets are masked by the runner before printing.
    pub diff: Option<(String, String)>,
    /// The file this change replaces, as the probe saw it: the runner refuses to apply the
    /// change when the file is no longer that one (someone else changed it since).
    pub planned_from: Option<FileVersion>,
}

/// A file as a probe saw it: its sha256, or `None` when it did not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVersion {
    pub path: String,
    pub sha256: Option<String>,
}

impl Change {
    pub fn new(summary: impl Into<String>, action: Action) -> Self {
        Change {
            summary: summary.into(),
            action,
            diff: None,
            planned_from: None,
        }
    }

    /// Applies only while `path` is still what the plan was computed from.
    pub fn planned_from(mut self, path: &str, sha256: Option<String>) -> Self {
        self.planned_from = Some(FileVersion {
            path: path.to_string(),
            sha256,
        });
        self
    }
    pub fn with_diff(mut self, old: impl Into<String>, new: impl Into<String>) -> Self {
        self.diff = Some((old.into(), new.into()));
        self
    }
}

/// File attributes applied with an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttrs {
    /// Octal mode as given by the user, e.g. "0644".
    pub mode: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl FileAttrs {
    /// Owned by root:root with `mode` (octal, e.g. "0644"): what system files get.
    pub fn root(mode: &str) -> FileAttrs {
        FileAttrs {
            mode: Some(mode.to_string()),
            owner: Some("root".into()),
            group: Some("root".into()),
        }
    }
}

/// What the runner does to apply a change. Everything goes through `runner::apply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a shell script as root. `stdin` carries secrets so they never appear on a command line.
    /// The step fails when the script exits non-zero.
    Shell {
        script: String,
        stdin: Option<Vec<u8>>,
    },
    /// Upload content to a temp file beside `dest`, verify its sha256, optionally run `validate`
    /// (with `%s` replaced by the temp path), keep a backup of the old file when asked, then
    /// rename atomically over `dest`.
    Upload {
        dest: String,
        content: Vec<u8>,
        attrs: FileAttrs,
        validate: Option<String>,
        backup: bool,
    },
    /// Copy a remote file back to the admin machine, written with `mode` (octal, e.g. "0600").
    Fetch {
        remote: String,
        local: PathBuf,
        mode: u32,
        /// The probed sha256: the bytes read must be these (the file may change in between).
        sha256: String,
    },
    /// Set the mode of a file on the admin machine (a fetched file with the right content).
    LocalMode { path: PathBuf, mode: u32 },
    /// Fetch `url` on the admin machine (cached by sha256), check the pinned sha256, then upload.
    Download {
        url: String,
        sha256: String,
        dest: String,
        attrs: FileAttrs,
    },
    /// Fetch the OpenPGP key at `url` on the admin machine, accept it only if it holds exactly
    /// one primary key with `fingerprint` (40 upper-case hex digits), then upload it.
    DownloadKey {
        url: String,
        fingerprint: String,
        dest: String,
        attrs: FileAttrs,
    },
    /// Firewall change guarded against lock-out. The runner gives all three scripts a fresh,
    /// root-only directory in `$snap` (one per run): `snapshot` saves the firewall there and
    /// fails unless the copy is complete; a watchdog armed on the host then runs `rollback`
    /// unless disarmed after a fresh SSH login proves access. `rollback` restores the snapshot,
    /// and prints `FAIL-OPEN` on a line of its own when it had to disable the firewall instead.
    GuardedFirewall {
        snapshot: String,
        script: String,
        rollback: String,
    },
}

/// Builds the module named by a step's module table from its rendered arguments.
pub fn build(
    kind: &str,
    args: &toml::Value,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Module>, crate::error::InputError> {
    let module: Box<dyn Module> = match kind {
        "command" => Box::new(command::Command::from_args(args, ctx)?),
        "file" => Box::new(file::File::from_args(args, ctx)?),
        "copy" => Box::new(copy::Copy::from_args(args, ctx, false)?),
        "template" => Box::new(copy::Copy::from_args(args, ctx, true)?),
        "line" => Box::new(line::Line::from_args(args, ctx)?),
        "apt" => Box::new(apt::Apt::from_args(args, ctx)?),
        "apt_repo" => Box::new(apt_repo::AptRepo::from_args(args, ctx)?),
        "containerd_hosts" => Box::new(containerd_hosts::ContainerdHosts::from_args(args, ctx)?),
        "service" => Box::new(service::Service::from_args(args, ctx)?),
        "sysctl" => Box::new(sysctl::Sysctl::from_args(args, ctx)?),
        "kernel_module" => Box::new(kernel_module::KernelModule::from_args(args, ctx)?),
        "ufw" => Box::new(ufw::Ufw::from_args(args, ctx)?),
        "nodeport_filter" => Box::new(nodeport_filter::NodeportFilter::from_args(args, ctx)?),
        "postgres_role" => Box::new(postgres::PostgresRole::from_args(args, ctx)?),
        "postgres_db" => Box::new(postgres::PostgresDb::from_args(args, ctx)?),
        "wait_for" => Box::new(wait_for::WaitFor::from_args(args, ctx)?),
        "fetch" => Box::new(fetch::Fetch::from_args(args, ctx)?),
        "download" => Box::new(download::Download::from_args(args, ctx)?),
        other => {
            return Err(crate::error::InputError::new(
                ctx.playbook,
                ctx.line,
                format!("unknown module `{other}`"),
            )
            .hint(format!("known modules: {}", MODULE_NAMES.join(", "))))
        }
    };
    Ok(module)
}

pub const MODULE_NAMES: &[&str] = &[
    "command",
    "file",
    "copy",
    "template",
    "line",
    "apt",
    "apt_repo",
    "containerd_hosts",
    "service",
    "sysctl",
    "kernel_module",
    "ufw",
    "nodeport_filter",
    "postgres_role",
    "postgres_db",
    "wait_for",
    "fetch",
    "download",
];

/// Deserializes a module's argument table, turning serde's message into a file:line error.
pub fn parse_args<T: serde::de::DeserializeOwned>(
    kind: &str,
    args: &toml::Value,
    ctx: &BuildContext<'_>,
) -> Result<T, crate::error::InputError> {
    T::deserialize(args.clone()).map_err(|e| {
        crate::error::InputError::new(
            ctx.playbook,
            ctx.line,
            format!("bad arguments for `{kind}`: {}", e.message()),
        )
    })
}

/// An argument given as one value or a list of them: a template expression such as
/// `"{{ role_addresses.master }}"` yields a list, a literal usually one value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A text argument that may arrive as a TOML number too (`port = "{{ db_port }}"` renders to
/// an integer, since a whole-expression string keeps its type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(Text(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::F(f) => f.to_string(),
            Raw::B(b) => b.to_string(),
        }))
    }
}

/// Shared helpers for probe scripts and their parsing.
pub mod probe_util {
    /// Parses `key=value` lines of a probe's output; later keys win.
    pub fn key_values(stdout: &str) -> std::collections::BTreeMap<String, String> {
        stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.to_string()))
            .collect()
    }
}

/// "90s", "10m", "1h", "90" or an integer: the duration syntax of `wait_for`,
/// of a step's `timeout` and of `delay`.
pub fn parse_duration(value: &toml::Value) -> Option<std::time::Duration> {
    let secs = match value {
        toml::Value::Integer(n) => u64::try_from(*n).ok()?,
        toml::Value::String(t) => {
            let t = t.trim();
            let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
                Some(i) => t.split_at(i),
                None => (t, "s"),
            };
            let n: u64 = num.parse().ok()?;
            match unit.trim() {
                "s" | "sec" | "secs" => n,
                "m" | "min" => n.checked_mul(60)?,
                "h" => n.checked_mul(3600)?,
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod header_examples {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use crate::playbook::template::Renderer;
    use crate::playbook::Playbook;

    /// The ```toml blocks of a module file's `//!` header.
    fn examples(source: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current: Option<String> = None;
        for line in source
            .lines()
            .take_while(|l| l.starts_with("//!") || l.is_empty())
        {
            let text = line.strip_prefix("//!").unwrap_or("");
            let text = text.strip_prefix(' ').unwrap_or(text);
            match (&mut current, text.trim()) {
                (None, "```toml") => current = Some(String::new()),
                (Some(block), "```") => {
                    out.push(std::mem::take(block));
                    current = None;
                }
                (Some(block), _) => {
                    block.push_str(text);
                    block.push('\n');
                }
                (None, _) => {}
            }
        }
        out
    }

    #[test]
    fn module_header_examples_used_step_which_the_parser_rejects() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/modules");
        let mut documented = BTreeSet::new();
        let renderer = Renderer::new(Path::new("/nonexistent-files"));
        // The variables the examples use, with values of the right shape.
        let ctx = minijinja::context! {
            secrets => BTreeMap::from([("db_password", "example")]),
            k8s_repo_key_sha256 => "",
            k8s_repo_key_fingerprint => "DE15 B144 86CD 377B 9E87 6E1A 2346 54DA 9A29 6436",
            calico_manifest_sha256 => "0".repeat(64),
        };
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // Only the modules' sources (their snapshot directory sits beside them).
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for example in examples(&source) {
                let text = format!("name = \"example\"\nhosts = \"all\"\n\n{example}");
                let playbook = Playbook::parse(&path, &text).unwrap_or_else(|e| {
                    panic!("{}: header example: {e}\n{example}", path.display())
                });
                assert!(!playbook.steps.is_empty(), "{}: no step", path.display());
                for step in &playbook.steps {
                    documented.insert(step.module.clone());
                    let args = renderer
                        .render_step(&playbook, step, &ctx, &BTreeMap::new())
                        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
                        .expect("examples have no `when`");
                    let no_template = |_: &str| Ok(String::new());
                    let build_ctx = super::BuildContext {
                        playbook: &path,
                        line: Some(step.line),
                        files_dir: Path::new("/nonexistent-files"),
                        render_template: &no_template,
                        local_dir: std::env::temp_dir(),
                    };
                    if let Err(e) = super::build(&step.module, &args, &build_ctx) {
                        panic!("{}: header example does not build: {e}", path.display());
                    }
                }
            }
        }
        let missing: Vec<&&str> = super::MODULE_NAMES
            .iter()
            .filter(|m| !documented.contains(**m))
            .collect();
        assert!(
            missing.is_empty(),
            "modules without a header example: {missing:?}"
        );
    }
}
