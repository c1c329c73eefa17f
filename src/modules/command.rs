//! `command`: runs a shell command as root, unless a guard says it has already done its work.
//!
//! Arguments:
//! - `cmd` (required): the script, run by `sh`.
//! - `creates`: a path; when it exists the command is skipped. Relative paths are taken from
//!   `chdir`.
//! - `unless`: a shell command run (read-only, please) by the probe; when it exits 0 the
//!   command is skipped.
//! - `chdir`: directory to run `cmd` (and `unless`) in.
//! - `stdin`: text fed to the command's standard input. Use it for secrets: it never appears
//!   on a command line. The `unless` guard reads the same text on its stdin (sent beside the
//!   probe script, not in it), so a guard can authenticate with the secret, e.g.
//!   `unless = "curl -fsS -K - http://127.0.0.1:9200/_security/_authenticate"`; without
//!   `stdin` the guard's stdin is empty.
//! - `read_only` (default `false`): the command only reads (a query such as `kubectl get node
//!   NAME`): it runs with the probe, also in `--check`, never counts as a change, and the step
//!   fails when it exits non-zero (with `retries`, that makes a bounded wait). Its stdout is
//!   what `register` keeps. Not with `creates`, `unless` or `stdin`.
//!
//! ```toml
//! [[steps]]
//! name = "initialise the control plane"
//! command = { cmd = "kubeadm init --config /etc/kubernetes/kubeadm.yaml", creates = "/etc/kubernetes/admin.conf" }
//! ```
//!
//! Without a guard the command runs on every run and is reported as changed.
use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandArgs {
    cmd: String,
    creates: Option<String>,
    unless: Option<String>,
    chdir: Option<String>,
    stdin: Option<String>,
    #[serde(default)]
    read_only: bool,
}

#[derive(Debug)]
pub struct Command {
    cmd: String,
    creates: Option<String>,
    unless: Option<String>,
    chdir: Option<String>,
    stdin: Option<String>,
    read_only: bool,
}

impl Command {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: CommandArgs = parse_args("command", args, ctx)?;
        if a.cmd.trim().is_empty() {
            return Err(
                InputError::new(ctx.playbook, ctx.line, "`command`: cmd is empty")
                    .hint("give the shell command to run, e.g. cmd = \"kubeadm init\""),
            );
        }
        for (key, value) in [
            ("creates", &a.creates),
            ("unless", &a.unless),
            ("chdir", &a.chdir),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(InputError::new(
                    ctx.playbook,
                    ctx.line,
                    format!("`command`: {key} is empty"),
                )
                .hint(format!("remove {key} or give it a value")));
            }
        }
        if let Some(dir) = &a.chdir {
            super::file::check_abs_path(dir, "command", "chdir", ctx)?;
        }
        if a.read_only && (a.creates.is_some() || a.unless.is_some() || a.stdin.is_some()) {
            return Err(InputError::new(
                ctx.playbook,
                ctx.line,
                "`command`: read_only cannot be combined with creates, unless or stdin",
            )
            .hint("a read-only query runs with the probe: it needs no guard and gets no input"));
        }
        Ok(Command {
            read_only: a.read_only,
            cmd: a.cmd,
            creates: a.creates,
            unless: a.unless,
            chdir: a.chdir,
            stdin: a.stdin,
        })
    }

    /// `cd DIR && ` prefix when a directory is given.
    fn cd_prefix(&self) -> String {
        match &self.chdir {
            Some(dir) => format!("cd {} && ", quote(dir)),
            None => String::new(),
        }
    }

    /// First line of the command, shortened, for summaries.
    fn short(&self) -> String {
        let first = self.cmd.trim().lines().next().unwrap_or("");
        let mut s: String = first.chars().take(80).collect();
        if s.len() < first.len() || self.cmd.trim().lines().count() > 1 {
            s.push_str(" …");
        }
        s
    }
}

impl Module for Command {
    fn probe(&self, _opts: ProbeOptions) -> String {
        if self.read_only {
            // Its own subshell, stderr kept apart: the stdout is the answer, the exit its verdict.
            return format!("{}(\n{}\n)\n", self.cd_prefix(), self.cmd);
        }
        if self.creates.is_none() && self.unless.is_none() {
            return String::new();
        }
        let mut s = String::from("(\n");
        if let Some(path) = &self.creates {
            s.push_str(&format!(
                "if ({}[ -e {} ]); then echo creates=exists; else echo creates=missing; fi\n",
                self.cd_prefix(),
                quote(path)
            ));
        }
        if let Some(unless) = &self.unless {
            // Its output is not ours to parse. Its stdin is the step's `stdin`, which the runner
            // hands to this probe alone (see `probe_stdin`); otherwise it is closed.
            let input = if self.stdin.is_some() {
                ""
            } else {
                " </dev/null"
            };
            s.push_str(&format!(
                "if ({}sh -c {}){input} >/dev/null 2>&1; then echo unless=ok; else echo unless=failed; fi\n",
                self.cd_prefix(),
                quote(unless)
            ));
        }
        s.push_str(")\n");
        s
    }

    fn probe_stdin(&self) -> Option<&[u8]> {
        // Only a guard reads it; `creates` alone needs no input.
        self.unless.as_ref()?;
        self.stdin.as_deref().map(str::as_bytes)
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        if self.read_only {
            if probe.exit_status != 0 {
                let said = probe.stdout.trim();
                // "Not yet": a query such as "is this node Ready" fails in --check on a fresh
                // host because the steps before it did not run; a real run still fails it.
                return Err(PlanError::not_yet(format!(
                    "`{}` failed (exit {}){}{}",
                    self.short(),
                    probe.exit_status,
                    if said.is_empty() { "" } else { ": " },
                    said.lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                )));
            }
            return Ok(vec![]);
        }
        let kv = probe_util::key_values(&probe.stdout);
        if let Some(path) = &self.creates {
            match kv.get("creates").map(String::as_str) {
                Some("exists") => return Ok(vec![]),
                Some("missing") => {}
                _ => {
                    return Err(PlanError(format!(
                        "probe did not check whether {path} exists"
                    )))
                }
            }
        }
        if self.unless.is_some() {
            match kv.get("unless").map(String::as_str) {
                Some("ok") => return Ok(vec![]),
                Some("failed") => {}
                _ => return Err(PlanError("probe did not run the `unless` check".into())),
            }
        }
        // A subshell keeps an `exit` inside cmd from ending more than the command.
        let script = format!("{}(\n{}\n)", self.cd_prefix(), self.cmd);
        Ok(vec![Change::new(
            format!("run `{}`", self.short()),
            Action::Shell {
                script,
                stdin: self.stdin.as_ref().map(|s| s.as_bytes().to_vec()),
            },
        )])
    }

    fn registered_value(&self, probe: &ProbeOutput) -> Option<String> {
        self.read_only.then(|| probe.stdout.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::testing::*;
    use super::*;

    fn command(args: &str) -> Result<Command, InputError> {
        build_simple(args, Command::from_args)
    }

    #[test]
    fn without_guard_always_one_change() {
        let c = command(r#"cmd = "echo hi""#).unwrap();
        assert_eq!(c.probe(ProbeOptions::default()), "");
        let changes = c.plan(&probe("")).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].summary, "run `echo hi`");
        assert_eq!(
            changes[0].action,
            Action::Shell {
                script: "(\necho hi\n)".into(),
                stdin: None
            }
        );
    }

    #[test]
    fn guards_skip_from_probe_data() {
        let c = command(
            r#"cmd = "make install"
creates = "/usr/local/bin/x"
unless = "test -x /usr/local/bin/x""#,
        )
        .unwrap();
        assert!(c
            .plan(&probe("creates=exists\nunless=failed\n"))
            .unwrap()
            .is_empty());
        assert!(c
            .plan(&probe("creates=missing\nunless=ok\n"))
            .unwrap()
            .is_empty());
        assert_eq!(
            c.plan(&probe("creates=missing\nunless=failed\n"))
                .unwrap()
                .len(),
            1
        );
        assert!(
            c.plan(&probe("")).is_err(),
            "a probe that said nothing must not plan a run"
        );
    }

    #[test]
    fn chdir_and_stdin_reach_the_change() {
        let c = command(
            r#"cmd = "psql -f -"
chdir = "/var/lib/my app"
stdin = "secret""#,
        )
        .unwrap();
        let changes = c.plan(&probe("")).unwrap();
        assert_eq!(
            changes[0].action,
            Action::Shell {
                script: "cd '/var/lib/my app' && (\npsql -f -\n)".into(),
                stdin: Some(b"secret".to_vec())
            }
        );
        assert!(!changes[0].summary.contains("secret"));
    }

    #[test]
    fn unless_reads_the_step_stdin_so_a_guard_can_check_a_secret() {
        let c = command(
            r#"cmd = "true"
unless = "grep -qx right"
stdin = "right""#,
        )
        .unwrap();
        assert_eq!(c.probe_stdin(), Some(&b"right"[..]));
        let script = c.probe(ProbeOptions::default());
        assert!(!script.contains("right\n") && !script.contains("'right'"));
        let run = |input: &[u8]| {
            let mut b = crate::runner::batch::Batch::new();
            b.push_with_input(&script, input);
            let (status, stdout) = b.run_locally(std::path::Path::new("."))[0].clone().unwrap();
            c.plan(&ProbeOutput {
                exit_status: status,
                stdout,
            })
            .unwrap()
            .len()
        };
        assert_eq!(run(b"right"), 0, "the guard saw the right secret");
        assert_eq!(run(b"wrong"), 1, "a changed secret runs the command");
        let no_stdin = command("cmd = \"true\"\nunless = \"true\"").unwrap();
        assert_eq!(no_stdin.probe_stdin(), None);
        assert!(no_stdin
            .probe(ProbeOptions::default())
            .contains("</dev/null"));
    }

    #[test]
    fn bad_arguments() {
        for (args, needle) in [
            (r#"cmd = "  ""#, "empty"),
            (
                r#"cmd = "x"
chdir = "rel""#,
                "absolute",
            ),
            (
                r#"cmd = "x"
creates = """#,
                "empty",
            ),
            (r#"command = "x""#, "unknown field"),
            (r#"creates = "/x""#, "missing field"),
        ] {
            let e = command(args).unwrap_err();
            assert!(e.message.contains(needle), "{args}: {}", e.message);
            assert_eq!(e.line, Some(7));
        }
    }

    #[test]
    fn read_only_runs_in_the_probe_and_never_plans_a_change() {
        let c = command("cmd = \"echo node/worker; echo noise >&2\"\nread_only = true").unwrap();
        let out = run_probe(&c.probe(ProbeOptions::default()));
        assert_eq!(out.stdout.trim(), "node/worker");
        assert!(c.plan(&out).unwrap().is_empty());
        assert_eq!(c.registered_value(&out).as_deref(), Some("node/worker"));
        let failing = command("cmd = \"echo not ready; exit 3\"\nread_only = true").unwrap();
        let err = failing
            .plan(&run_probe(&failing.probe(ProbeOptions::default())))
            .unwrap_err();
        assert!(
            err.0.contains("exit 3") && err.0.contains("not ready"),
            "{err}"
        );
        // Regression: `--check` on a fresh worker failed at "this node is Ready" although the
        // join before it would have run.
        assert!(err.is_not_yet(), "{err}");
        // A command that changes things registers what it printed when run, not a probe.
        assert_eq!(
            command("cmd = \"x\"")
                .unwrap()
                .registered_value(&probe("x")),
            None
        );
    }

    #[test]
    fn read_only_with_a_guard_or_stdin_is_refused() {
        for extra in ["creates = \"/x\"", "unless = \"true\"", "stdin = \"s\""] {
            let e = command(&format!("cmd = \"x\"\nread_only = true\n{extra}")).unwrap_err();
            assert!(e.message.contains("read_only"), "{extra}: {}", e.message);
        }
    }

    #[test]
    fn probe_runs_guards_for_real() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let c = command(&format!(
            "cmd = \"touch done\"\nchdir = {d:?}\ncreates = \"done\"\nunless = \"test -e other\""
        ))
        .unwrap();
        let script = c.probe(ProbeOptions::default());
        assert_eq!(c.plan(&run_probe(&script)).unwrap().len(), 1);
        std::fs::write(dir.path().join("other"), "").unwrap();
        assert!(
            c.plan(&run_probe(&script)).unwrap().is_empty(),
            "unless runs in chdir"
        );
        std::fs::remove_file(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("done"), "").unwrap();
        assert!(
            c.plan(&run_probe(&script)).unwrap().is_empty(),
            "creates is relative to chdir"
        );
        // The probe is concatenable: two copies print two sets of answers and no early exit.
        let twice = run_probe(&format!("{script}{script}echo tail=1\n"));
        assert_eq!(twice.stdout.matches("creates=exists").count(), 2);
        assert!(twice.stdout.contains("tail=1"));
    }
}
