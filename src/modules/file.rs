//! `file`: makes sure a path is a directory, an existing file, or absent, with the given mode,
//! owner and group.
//!
//! Arguments:
//! - `path` (required): absolute path on the host.
//! - `state`: `"file"` (default: the file must already exist; only its attributes are managed),
//!   `"directory"` (created with `mkdir -p` when missing), `"touch"` (an empty file is created
//!   when missing; an existing file's times are left alone so reruns change nothing) or
//!   `"absent"` (removed with `rm -rf`, whatever it is).
//! - `mode`: octal string, `"0755"` and `"755"` are the same. Symbolic modes are not accepted.
//! - `owner`, `group`: names or numeric ids.
//! - `recurse` (default `false`, directories only): apply `mode`, `owner` and `group` to
//!   everything below `path` as well (`chmod -R` / `chown -R`), when anything there differs.
//!
//! ```toml
//! [[steps]]
//! name = "kubelet state directory"
//! file = { path = "/var/lib/kubelet", state = "directory", mode = "0700", owner = "root", group = "root" }
//! ```
//!
//! The probe is `stat` of the path (type, mode, owner, group); the plan holds only the
//! differences: create, `chmod`, `chown`/`chgrp`, or remove.
//!
//! This file also holds the helpers the other file-writing modules share (mode parsing, the
//! stat/sha256/content probe of one remote file and the attribute changes derived from it).
use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use base64::Engine as _;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    #[default]
    File,
    Directory,
    Touch,
    Absent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArgs {
    path: String,
    #[serde(default)]
    state: FileState,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    recurse: bool,
}

#[derive(Debug)]
pub struct File {
    path: String,
    state: FileState,
    attrs: FileAttrs,
    recurse: bool,
}

impl File {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: FileArgs = parse_args("file", args, ctx)?;
        check_abs_path(&a.path, "file", "path", ctx)?;
        check_mode(a.mode.as_deref(), "file", ctx)?;
        let has_attrs = a.mode.is_some() || a.owner.is_some() || a.group.is_some();
        if a.state == FileState::Absent && (has_attrs || a.recurse) {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                "`file` with state = \"absent\" takes no mode, owner, group or recurse",
            )
            .hint("remove those keys, or choose another state"));
        }
        if a.recurse && a.state != FileState::Directory {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                "`file`: recurse = true needs state = \"directory\"",
            )
            .hint("set state = \"directory\" or drop recurse"));
        }
        if a.recurse && !has_attrs {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                "`file`: recurse = true without mode, owner or group does nothing",
            )
            .hint("add mode, owner or group, or drop recurse"));
        }
        Ok(File {
            path: a.path,
            state: a.state,
            attrs: FileAttrs {
                mode: a.mode,
                owner: a.owner,
                group: a.group,
            },
            recurse: a.recurse,
        })
    }

    /// `find` test matching entries whose attributes differ from the wanted ones.
    fn find_differs(&self) -> String {
        let mut tests = Vec::new();
        if let Some(mode) = &self.attrs.mode {
            tests.push(format!(
                "! -perm {}",
                quote(&format!("{:04o}", mode_value(mode)))
            ));
        }
        if let Some(owner) = &self.attrs.owner {
            tests.push(format!("! -user {}", quote(owner)));
        }
        if let Some(group) = &self.attrs.group {
            tests.push(format!("! -group {}", quote(group)));
        }
        format!("\\( {} \\)", tests.join(" -o "))
    }
}

impl Module for File {
    fn probe(&self, _opts: ProbeOptions) -> String {
        let mut s = format!("(\np={}\n{}", quote(&self.path), stat_snippet());
        if self.recurse {
            // The first entry below the path whose attributes differ, if any.
            s.push_str(&format!(
                "if [ -d \"$p\" ]; then echo \"recurse_diff=$(find \"$p\" {} -print -quit 2>/dev/null | head -n 1)\"; fi\n",
                self.find_differs()
            ));
        }
        s.push_str(")\n");
        s
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let kv = probe_util::key_values(&probe.stdout);
        let stat = parse_stat(&kv)?;
        let p = quote(&self.path);
        match (self.state, &stat) {
            (FileState::Absent, None) => Ok(vec![]),
            (FileState::Absent, Some(_)) => Ok(vec![Change::new(
                format!("remove {}", self.path),
                shell(format!("rm -rf -- {p}")),
            )]),
            (FileState::Directory, None) => {
                let mut script = format!("mkdir -p -- {p}");
                for cmd in attr_commands(&self.path, &self.attrs, None, false) {
                    script.push_str(&format!(" && {cmd}"));
                }
                Ok(vec![Change::new(
                    format!("create directory {}{}", self.path, describe_attrs(&self.attrs)),
                    shell(script),
                )])
            }
            (FileState::Touch, None) => {
                let mut script = format!("touch -- {p}");
                for cmd in attr_commands(&self.path, &self.attrs, None, false) {
                    script.push_str(&format!(" && {cmd}"));
                }
                Ok(vec![Change::new(
                    format!("create empty file {}{}", self.path, describe_attrs(&self.attrs)),
                    shell(script),
                )])
            }
            (FileState::File, None) => Err(PlanError::not_yet(format!(
                "{} does not exist (state = \"file\" only manages an existing file; use state = \"touch\" to create it)",
                self.path
            ))),
            (FileState::Directory, Some(st)) if st.kind != Kind::Directory => Err(PlanError(
                format!("{} exists but is a {}, not a directory", self.path, st.kind),
            )),
            (FileState::File | FileState::Touch, Some(st)) if st.kind != Kind::File => Err(
                PlanError(format!("{} exists but is a {}, not a regular file", self.path, st.kind)),
            ),
            (_, Some(st)) => {
                if self.recurse {
                    let first = kv.get("recurse_diff").map(|s| s.trim()).unwrap_or("");
                    if first.is_empty() {
                        return Ok(vec![]);
                    }
                    let cmds = attr_commands(&self.path, &self.attrs, None, true);
                    return Ok(vec![Change::new(
                        format!(
                            "set{} recursively on {} (differs at {first})",
                            describe_attrs(&self.attrs),
                            self.path
                        ),
                        shell(cmds.join(" && ")),
                    )]);
                }
                Ok(attr_changes(&self.path, &self.attrs, st))
            }
        }
    }
}

fn shell(script: String) -> Action {
    Action::Shell {
        script,
        stdin: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the file-writing modules (copy, template, line, sysctl, kernel_module,
// download, fetch).

/// Numeric value of a validated octal mode string.
pub(crate) fn mode_value(mode: &str) -> u32 {
    parse_mode(mode).unwrap_or(0)
}

/// Parses an octal mode ("0644", "644", "2775"); None when it is not one.
pub(crate) fn parse_mode(mode: &str) -> Option<u32> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

pub(crate) fn check_mode(
    mode: Option<&str>,
    module: &str,
    ctx: &BuildContext<'_>,
) -> Result<(), InputError> {
    match mode {
        Some(m) if parse_mode(m).is_none() => Err(InputError::new(
            ctx.playbook,
            ctx.line,
            format!("`{module}`: mode {m:?} is not an octal mode"),
        )
        .hint("write it as a quoted octal string, e.g. mode = \"0644\"")),
        _ => Ok(()),
    }
}

pub(crate) fn check_abs_path(
    path: &str,
    module: &str,
    key: &str,
    ctx: &BuildContext<'_>,
) -> Result<(), InputError> {
    if !path.starts_with('/') || path.contains('\n') {
        return Err(InputError::new(
            ctx.playbook,
            ctx.line,
            format!("`{module}`: {key} {path:?} is not an absolute path"),
        )
        .hint(format!(
            "give the full path on the host, e.g. {key} = \"/etc/example.conf\""
        )));
    }
    Ok(())
}

/// Shell snippet printing `type=` and, when the path exists, `mode= uid= owner= gid= group=`
/// for the path in `$p` (links followed).
pub(crate) fn stat_snippet() -> String {
    concat!(
        "if [ -e \"$p\" ]; then stat -L --printf 'type=%F\\nmode=%a\\nuid=%u\\nowner=%U\\ngid=%g\\ngroup=%G\\n' -- \"$p\"\n",
        "elif [ -L \"$p\" ]; then echo 'type=dangling symbolic link'\n",
        "else echo type=missing; fi\n"
    )
    .to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Directory,
    Other(String),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::File => f.write_str("regular file"),
            Kind::Directory => f.write_str("directory"),
            Kind::Other(s) => f.write_str(s),
        }
    }
}

/// What `stat_snippet` reported about an existing path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub kind: Kind,
    pub mode: u32,
    pub uid: String,
    pub owner: String,
    pub gid: String,
    pub group: String,
}

impl Stat {
    /// The current attributes, in the form an upload takes.
    pub fn attrs(&self) -> FileAttrs {
        FileAttrs {
            mode: Some(format!("{:04o}", self.mode)),
            owner: Some(
                if self.owner == "UNKNOWN" {
                    &self.uid
                } else {
                    &self.owner
                }
                .clone(),
            ),
            group: Some(
                if self.group == "UNKNOWN" {
                    &self.gid
                } else {
                    &self.group
                }
                .clone(),
            ),
        }
    }
}

/// Parses the output of `stat_snippet`; None when the path is missing.
pub(crate) fn parse_stat(
    kv: &std::collections::BTreeMap<String, String>,
) -> Result<Option<Stat>, PlanError> {
    let kind = kv
        .get("type")
        .ok_or_else(|| PlanError("probe printed no file type (is GNU stat installed?)".into()))?;
    let kind = match kind.as_str() {
        "missing" => return Ok(None),
        "regular file" | "regular empty file" => Kind::File,
        "directory" => Kind::Directory,
        other => Kind::Other(other.to_string()),
    };
    if let Kind::Other(s) = &kind {
        if s == "dangling symbolic link" {
            return Ok(Some(Stat {
                kind,
                mode: 0,
                uid: String::new(),
                owner: String::new(),
                gid: String::new(),
                group: String::new(),
            }));
        }
    }
    let get = |k: &str| {
        kv.get(k)
            .cloned()
            .ok_or_else(|| PlanError(format!("probe printed no `{k}`")))
    };
    let mode_text = get("mode")?;
    let mode = u32::from_str_radix(mode_text.trim(), 8)
        .map_err(|_| PlanError(format!("probe printed a bad mode {mode_text:?}")))?;
    Ok(Some(Stat {
        kind,
        mode,
        uid: get("uid")?,
        owner: get("owner")?,
        gid: get("gid")?,
        group: get("group")?,
    }))
}

/// The `chmod`/`chown`/`chgrp` commands needed to go from `current` (None: unknown, e.g. just
/// created) to the wanted attributes.
pub(crate) fn attr_commands(
    path: &str,
    wanted: &FileAttrs,
    current: Option<&Stat>,
    recursive: bool,
) -> Vec<String> {
    let r = if recursive { "-R " } else { "" };
    let p = quote(path);
    let mut cmds = Vec::new();
    if let Some(mode) = &wanted.mode {
        if current.is_none_or(|c| c.mode != mode_value(mode)) {
            // Five digits: GNU chmod keeps a directory's setuid/setgid bits on a 4-digit mode
            // ("0755" under a setgid parent stays 2755 and reports changed on every run).
            cmds.push(format!("chmod {r}{:05o} -- {p}", mode_value(mode)));
        }
    }
    let owner = wanted
        .owner
        .as_ref()
        .filter(|o| current.is_none_or(|c| c.owner != **o && c.uid != **o));
    let group = wanted
        .group
        .as_ref()
        .filter(|g| current.is_none_or(|c| c.group != **g && c.gid != **g));
    match (owner, group) {
        (Some(o), Some(g)) => cmds.push(format!("chown {r}{} -- {p}", quote(&format!("{o}:{g}")))),
        (Some(o), None) => cmds.push(format!("chown {r}{} -- {p}", quote(o))),
        (None, Some(g)) => cmds.push(format!("chgrp {r}{} -- {p}", quote(g))),
        (None, None) => {}
    }
    cmds
}

/// One change per attribute that differs on an existing path.
pub(crate) fn attr_changes(path: &str, wanted: &FileAttrs, current: &Stat) -> Vec<Change> {
    attr_commands(path, wanted, Some(current), false)
        .into_iter()
        .map(|cmd| {
            let what = if cmd.starts_with("chmod") {
                format!(
                    "set mode {} on {path} (was {:04o})",
                    wanted.mode.as_deref().unwrap_or(""),
                    current.mode
                )
            } else {
                format!(
                    "set owner/group on {path} (was {}:{})",
                    current.owner, current.group
                )
            };
            Change::new(what, shell(cmd))
        })
        .collect()
}

/// " (mode 0644, owner root, group root)" or "" when nothing is asked.
pub(crate) fn describe_attrs(attrs: &FileAttrs) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &attrs.mode {
        parts.push(format!("mode {m}"));
    }
    if let Some(o) = &attrs.owner {
        parts.push(format!("owner {o}"));
    }
    if let Some(g) = &attrs.group {
        parts.push(format!("group {g}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Attributes for an upload over an existing file: what the user asked, else what is there,
/// so rewriting a file never silently changes its mode or owner.
pub(crate) fn merged_attrs(wanted: &FileAttrs, current: Option<&Stat>) -> FileAttrs {
    let cur = current.map(Stat::attrs).unwrap_or_default();
    FileAttrs {
        mode: wanted.mode.clone().or(cur.mode),
        owner: wanted.owner.clone().or(cur.owner),
        group: wanted.group.clone().or(cur.group),
    }
}

/// Read-only probe of one regular file: stat, plus `sha256=` and/or `content=` (base64, one
/// line) when it is a regular file. Wrapped in a subshell so it can be concatenated.
pub(crate) fn remote_file_probe(path: &str, sha: bool, content: bool) -> String {
    let mut s = format!("(\np={}\n{}", quote(path), stat_snippet());
    if sha || content {
        s.push_str("if [ -f \"$p\" ]; then\n");
        if sha {
            s.push_str("  echo \"sha256=$(sha256sum < \"$p\" | cut -d ' ' -f 1)\"\n");
        }
        if content {
            s.push_str("  echo \"content=$(base64 -w0 < \"$p\")\"\n");
            // Empty old content for a missing file, so a diff shows the whole new file.
            s.push_str("elif [ ! -e \"$p\" ]; then echo content=\n");
        }
        s.push_str("fi\n");
    }
    s.push_str(")\n");
    s
}

/// What `remote_file_probe` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteFile {
    pub stat: Option<Stat>,
    pub sha256: Option<String>,
    pub content: Option<Vec<u8>>,
}

pub(crate) fn parse_remote_file(stdout: &str) -> Result<RemoteFile, PlanError> {
    let kv = probe_util::key_values(stdout);
    let stat = parse_stat(&kv)?;
    let sha256 = kv
        .get("sha256")
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    let content = match kv.get("content") {
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| PlanError(format!("probe printed bad base64 content: {e}")))?,
        ),
        None => None,
    };
    Ok(RemoteFile {
        stat,
        sha256,
        content,
    })
}

/// Lower-case hex sha256 of bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Test helpers shared by the modules of this area.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::path::Path;

    /// Builds a module from TOML arguments with a context whose templates render by replacing
    /// `{{ name }}` with `world`.
    pub fn build_with<T>(
        args: &str,
        files_dir: &Path,
        local_dir: &Path,
        f: impl FnOnce(&toml::Value, &BuildContext<'_>) -> Result<T, InputError>,
    ) -> Result<T, InputError> {
        let value: toml::Value = toml::from_str(args).expect("test args are TOML");
        let dir = files_dir.to_path_buf();
        let render = move |name: &str| -> Result<String, InputError> {
            std::fs::read_to_string(dir.join(name))
                .map(|t| t.replace("{{ name }}", "world"))
                .map_err(|e| InputError::new(dir.join(name), None, e.to_string()))
        };
        let ctx = BuildContext {
            playbook: Path::new("playbooks/test.toml"),
            line: Some(7),
            files_dir,
            render_template: &render,
            local_dir: local_dir.to_path_buf(),
        };
        f(&value, &ctx)
    }

    /// Builds with throwaway directories (for modules that read no local files).
    pub fn build_simple<T>(
        args: &str,
        f: impl FnOnce(&toml::Value, &BuildContext<'_>) -> Result<T, InputError>,
    ) -> Result<T, InputError> {
        build_with(
            args,
            Path::new("/nonexistent-files"),
            Path::new("/nonexistent-local"),
            f,
        )
    }

    /// The script of a `Shell` change; panics on any other action.
    pub fn shell_script(change: &Change) -> &str {
        match &change.action {
            Action::Shell { script, .. } => script,
            other => panic!("expected a Shell change, got {other:?}"),
        }
    }

    /// Runs a probe script in a local `sh`, as the runner would on a host.
    pub fn run_probe(script: &str) -> ProbeOutput {
        use crate::transport::shell;
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(shell::command_line("root", false, None))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        // The loader reads the whole frame before the probe prints anything: no deadlock.
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(&shell::frame(script, None))
            .expect("frame written");
        drop(stdin);
        let out = child.wait_with_output().expect("sh runs");
        ProbeOutput {
            exit_status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).expect("probe output is UTF-8"),
        }
    }

    pub fn probe(stdout: &str) -> ProbeOutput {
        ProbeOutput {
            exit_status: 0,
            stdout: stdout.to_string(),
        }
    }

    /// The current user's name and group name, for probes run locally.
    pub fn me() -> (String, String) {
        let out = |args: &[&str]| {
            let o = std::process::Command::new("id")
                .args(args)
                .output()
                .unwrap();
            String::from_utf8(o.stdout).unwrap().trim().to_string()
        };
        (out(&["-un"]), out(&["-gn"]))
    }

    /// A tiny HTTP server on 127.0.0.1 answering one connection per given (status, body), in
    /// order, then closing. The handle yields the request lines it saw.
    pub fn http_server(
        responses: Vec<(u16, Vec<u8>)>,
    ) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in responses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                seen.push(request_line.trim().to_string());
                // Skip the headers up to the blank line.
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let mut stream = reader.into_inner();
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
            seen
        });
        (port, handle)
    }

    pub fn scripts(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match &c.action {
                Action::Shell { script, .. } => script.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn file(args: &str) -> Result<File, InputError> {
        build_simple(args, File::from_args)
    }

    fn stat_out(kind: &str, mode: &str, owner: &str, group: &str) -> String {
        format!("type={kind}\nmode={mode}\nuid=0\nowner={owner}\ngid=0\ngroup={group}\n")
    }

    #[test]
    fn modes_compare_numerically() {
        assert_eq!(parse_mode("0755"), parse_mode("755"));
        assert_eq!(parse_mode("2775"), Some(0o2775));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        for bad in ["", "u+x", "0999", "17777", "rwx"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
        let f = file(
            r#"path = "/d"
state = "directory"
mode = "755""#,
        )
        .unwrap();
        let changes = f
            .plan(&probe(&stat_out("directory", "755", "root", "root")))
            .unwrap();
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn bad_arguments_are_input_errors_with_line_and_hint() {
        let cases = [
            (r#"path = "relative/x""#, "absolute"),
            (
                r#"path = "/x"
mode = "u+x""#,
                "octal",
            ),
            (
                r#"path = "/x"
state = "gone""#,
                "unknown variant",
            ),
            (
                r#"path = "/x"
colour = "red""#,
                "unknown field",
            ),
            (
                r#"path = "/x"
state = "absent"
mode = "0644""#,
                "absent",
            ),
            (
                r#"path = "/x"
recurse = true
owner = "a""#,
                "directory",
            ),
        ];
        for (args, needle) in cases {
            let err = file(args).unwrap_err();
            assert_eq!(err.line, Some(7));
            assert!(err.message.contains(needle), "{args}: {}", err.message);
        }
        assert!(file(r#"path = "x""#).unwrap_err().hint.is_some());
    }

    #[test]
    fn plans_only_differences() {
        let f = file(
            r#"path = "/etc/app"
state = "directory"
mode = "0750"
owner = "app"
group = "root""#,
        )
        .unwrap();
        let missing = f.plan(&probe("type=missing\n")).unwrap();
        assert_eq!(
            scripts(&missing),
            vec!["mkdir -p -- /etc/app && chmod 00750 -- /etc/app && chown app:root -- /etc/app"]
        );
        let wrong_mode = f
            .plan(&probe(&stat_out("directory", "755", "app", "root")))
            .unwrap();
        assert_eq!(scripts(&wrong_mode), vec!["chmod 00750 -- /etc/app"]);
        let wrong_owner = f
            .plan(&probe(&stat_out("directory", "750", "root", "root")))
            .unwrap();
        assert_eq!(scripts(&wrong_owner), vec!["chown app -- /etc/app"]);
        let ok = f
            .plan(&probe(&stat_out("directory", "750", "app", "root")))
            .unwrap();
        assert!(ok.is_empty());
        let not_dir = f.plan(&probe(&stat_out("regular file", "644", "app", "root")));
        assert!(not_dir.unwrap_err().0.contains("not a directory"));
    }

    #[test]
    fn numeric_owner_matches_uid() {
        let f = file(
            r#"path = "/x"
owner = "0"
group = "0""#,
        )
        .unwrap();
        assert!(f
            .plan(&probe(&stat_out(
                "regular empty file",
                "644",
                "root",
                "root"
            )))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn absent_touch_and_file_states() {
        let absent = file(
            r#"path = "/tmp/a b"
state = "absent""#,
        )
        .unwrap();
        assert!(absent.plan(&probe("type=missing\n")).unwrap().is_empty());
        assert_eq!(
            scripts(
                &absent
                    .plan(&probe(&stat_out("directory", "755", "root", "root")))
                    .unwrap()
            ),
            vec!["rm -rf -- '/tmp/a b'"]
        );
        assert_eq!(
            scripts(
                &absent
                    .plan(&probe("type=dangling symbolic link\n"))
                    .unwrap()
            ),
            vec!["rm -rf -- '/tmp/a b'"]
        );
        let touch = file(
            r#"path = "/t"
state = "touch"
mode = "0600""#,
        )
        .unwrap();
        assert_eq!(
            scripts(&touch.plan(&probe("type=missing\n")).unwrap()),
            vec!["touch -- /t && chmod 00600 -- /t"]
        );
        assert!(touch
            .plan(&probe(&stat_out(
                "regular empty file",
                "600",
                "root",
                "root"
            )))
            .unwrap()
            .is_empty());
        let existing = file(r#"path = "/f""#).unwrap();
        assert!(existing
            .plan(&probe("type=missing\n"))
            .unwrap_err()
            .0
            .contains("touch"));
        assert!(
            existing.plan(&probe("")).is_err(),
            "empty probe output is an error, not a plan"
        );
    }

    #[test]
    fn probe_reads_real_stat_output() {
        let dir = tempfile::tempdir().unwrap();
        let (user, group) = me();
        let sub = dir.path().join("sub dir");
        let args = format!(
            "path = {:?}\nstate = \"directory\"\nmode = \"0751\"\nowner = {user:?}\ngroup = {group:?}",
            sub.to_str().unwrap()
        );
        let f = file(&args).unwrap();
        let planned = f
            .plan(&run_probe(&f.probe(ProbeOptions::default())))
            .unwrap();
        assert_eq!(planned.len(), 1);
        assert!(planned[0].summary.starts_with("create directory"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let planned = f
            .plan(&run_probe(&f.probe(ProbeOptions::default())))
            .unwrap();
        assert_eq!(
            scripts(&planned),
            vec![format!("chmod 00751 -- {}", quote(sub.to_str().unwrap()))]
        );
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o751)).unwrap();
        assert!(f
            .plan(&run_probe(&f.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn directory_under_a_setgid_parent_reported_changed_on_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join("shared");
        std::fs::create_dir(&parent).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o2775)).unwrap();
        let sub = parent.join("app");
        std::fs::create_dir(&sub).unwrap();
        let inherited = std::fs::metadata(&sub).unwrap().permissions().mode();
        assert_ne!(
            inherited & 0o2000,
            0,
            "mkdir under a setgid parent inherits it"
        );
        let f = file(&format!(
            "path = {:?}\nstate = \"directory\"\nmode = \"0755\"",
            sub.to_str().unwrap()
        ))
        .unwrap();
        let plan = || {
            f.plan(&run_probe(&f.probe(ProbeOptions::default())))
                .unwrap()
        };
        for script in scripts(&plan()) {
            let status = std::process::Command::new("sh")
                .args(["-c", &script])
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        }
        assert_eq!(
            std::fs::metadata(&sub).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert!(plan().is_empty(), "the second run changes nothing");
    }

    #[test]
    fn all_probes_of_this_area_concatenate_in_one_sh_script() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let steps: &[(&str, String)] = &[
            (
                "command",
                format!("cmd = \"x\"\ncreates = \"{d}/c\"\nunless = \"exit 3\""),
            ),
            (
                "file",
                format!("path = \"{d}\"\nstate = \"directory\"\nmode = \"0700\"\nrecurse = true"),
            ),
            ("copy", format!("content = \"x\"\ndest = \"{d}/copy\"")),
            (
                "line",
                format!("path = \"{d}/line\"\nline = \"a\"\ncreate = true"),
            ),
            (
                "service",
                "name = \"bootstrap-none\"\nstate = \"started\"".into(),
            ),
            (
                "sysctl",
                format!("name = \"kernel.ostype\"\nvalue = \"Linux\"\nfile = \"{d}/s.conf\""),
            ),
            ("kernel_module", "name = \"bootstrap_none\"".into()),
            ("wait_for", "cmd = \"exit 0\"".into()),
            ("fetch", format!("src = \"{d}/copy\"\ndest = \"k\"")),
            (
                "download",
                format!(
                    "url = \"http://127.0.0.1:1/\"\nsha256 = \"{}\"\ndest = \"{d}/dl\"",
                    "0".repeat(64)
                ),
            ),
        ];
        let opts = ProbeOptions { want_content: true };
        let mut script = String::new();
        for (kind, args) in steps {
            let m = build_with(args, Path::new("/nonexistent"), dir.path(), |v, c| {
                super::super::build(kind, v, c)
            })
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
            script.push_str(&m.probe(opts));
        }
        script.push_str("echo reached=end\n");
        let out = run_probe(&script);
        assert_eq!(out.exit_status, 0, "{}", out.stdout);
        assert!(out.stdout.ends_with("reached=end\n"), "{}", out.stdout);
        assert!(out.stdout.contains("unless=failed") && out.stdout.contains("ready=0"));
    }

    #[test]
    fn recurse_finds_a_differing_child() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        std::fs::create_dir_all(top.join("a/b")).unwrap();
        std::fs::write(top.join("a/b/f"), "x").unwrap();
        for p in ["", "a", "a/b", "a/b/f"] {
            std::fs::set_permissions(top.join(p), std::fs::Permissions::from_mode(0o750)).unwrap();
        }
        let f = file(&format!(
            "path = {:?}\nstate = \"directory\"\nmode = \"0750\"\nrecurse = true",
            top.to_str().unwrap()
        ))
        .unwrap();
        assert!(f
            .plan(&run_probe(&f.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
        std::fs::set_permissions(top.join("a/b/f"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let planned = f
            .plan(&run_probe(&f.probe(ProbeOptions::default())))
            .unwrap();
        assert_eq!(planned.len(), 1);
        assert!(
            planned[0].summary.contains("a/b/f"),
            "{}",
            planned[0].summary
        );
        assert_eq!(
            scripts(&planned),
            vec![format!("chmod -R 00750 -- {}", top.to_str().unwrap())]
        );
    }
}
