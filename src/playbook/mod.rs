//! `playbooks/*.toml` -> ordered steps. A step is a name plus exactly one module table, with
//! optional `when`, `notify` and `tags`. Arguments stay unrendered here: they are rendered per
//! host by `template::Renderer`, just before the step is probed.

pub mod template;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::InputError;
use crate::modules::MODULE_NAMES;

#[derive(Debug, Clone)]
pub struct Playbook {
    pub path: PathBuf,
    pub name: String,
    /// A role name, roles joined by commas (`hosts = ["master", "worker"]`), or "all".
    pub hosts: String,
    /// Facts gathered on each host before the steps: name -> read-only shell command whose
    /// trimmed stdout becomes `facts.NAME` (absent when it fails or prints nothing).
    pub facts: Vec<(String, String)>,
    pub steps: Vec<Step>,
    pub handlers: Vec<Step>,
    /// Whether any step, handler or template may read `facts`: when none does, a run skips
    /// gathering them and a no-op rerun costs one round trip per host instead of two.
    pub uses_facts: bool,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub line: usize,
    pub module: String,
    pub args: toml::Value,
    pub when: Option<String>,
    pub notify: Vec<String>,
    pub tags: Vec<String>,
    /// `sensitive = true`: no file content, diff, command text or output of this step in the
    /// terminal, `--json` events or the host log; only its name and status.
    pub sensitive: bool,
    /// `timeout = "10m"`: the step's changes are stopped after this long (remote `timeout -k`
    /// and a local deadline). `None`: the module's default (see `runner::deadline`).
    pub timeout: Option<std::time::Duration>,
    /// `register = "NAME"`: the step's output (a `read_only` command's stdout, or the stdout
    /// of the command it ran), trimmed, becomes `registered.<play host>.NAME` for later steps.
    pub register: Option<String>,
    /// `register_secret = true`: the registered value is masked like a secret everywhere it
    /// would be shown, and refused on a command line.
    pub register_secret: bool,
    /// `delegate_to = "master"`: a host name, or a role with exactly one host; the step is
    /// probed and applied there, with the play host's variables, and reported under the play
    /// host.
    pub delegate_to: Option<String>,
    /// `retries = N`: a failed step is tried again up to N more times, `delay` apart.
    pub retries: u32,
    pub delay: std::time::Duration,
}

/// Upper bound of `retries`, so a typo cannot make a run wait for days.
pub const MAX_RETRIES: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    name: String,
    hosts: Spanned<toml::Value>,
    #[serde(default)]
    facts: toml::Table,
    #[serde(default)]
    steps: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    handlers: Vec<Spanned<toml::Table>>,
}

impl Playbook {
    pub fn load(path: &Path) -> Result<Playbook, InputError> {
        let text = crate::error::read_text(path, "playbook")?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Playbook, InputError> {
        let raw: RawPlaybook =
            toml::from_str(text).map_err(|e| crate::inventory::toml_error(path, text, &e))?;
        let hosts_line = InputError::line_of(text, raw.hosts.span().start);
        let roles: Vec<String> = match raw.hosts.into_inner() {
            toml::Value::String(s) => vec![s],
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| v.as_str().map(str::to_string).unwrap_or_default())
                .collect(),
            _ => vec![String::new()],
        };
        for role in &roles {
            if role != "all" && !crate::inventory::ROLES.contains(&role.as_str()) {
                return Err(InputError::new(
                    path,
                    Some(hosts_line),
                    format!("`hosts`: \"{role}\" is not a role"),
                )
                .hint(format!(
                    "use all, one of {}, or a list of them",
                    crate::inventory::ROLES.join(", ")
                )));
            }
        }
        if roles.is_empty() {
            return Err(InputError::new(
                path,
                Some(hosts_line),
                "`hosts` lists no role",
            ));
        }
        let hosts = roles.join(",");
        let mut facts = Vec::new();
        for (name, cmd) in raw.facts {
            match cmd {
                toml::Value::String(cmd) => facts.push((name, cmd)),
                _ => {
                    return Err(InputError::new(
                        path,
                        crate::inventory::key_line(text, &name),
                        format!("fact `{name}` must be a shell command string"),
                    )
                    .hint(format!(
                        "{name} = \"a read-only command whose output is the fact\""
                    )))
                }
            }
        }
        let parse_all = |tables: Vec<Spanned<toml::Table>>| -> Result<Vec<Step>, InputError> {
            tables
                .into_iter()
                .map(|t| {
                    let line = InputError::line_of(text, t.span().start);
                    parse_step(path, line, t.into_inner())
                })
                .collect()
        };
        let steps = parse_all(raw.steps)?;
        let handlers = parse_all(raw.handlers)?;
        for step in &steps {
            for wanted in &step.notify {
                if !handlers.iter().any(|h| &h.name == wanted) {
                    return Err(InputError::new(
                        path,
                        Some(step.line),
                        format!(
                            "step `{}` notifies `{wanted}`, which is not a handler",
                            step.name
                        ),
                    )
                    .hint("add a [[handlers]] entry with that name"));
                }
            }
        }
        let mut playbook = Playbook {
            path: path.to_path_buf(),
            name: raw.name,
            hosts,
            facts,
            steps,
            handlers,
            uses_facts: true,
        };
        playbook.uses_facts = mentions_facts(text) || playbook.templates_mention_facts();
        Ok(playbook)
    }

    /// A template whose path is itself templated, or cannot be read, counts as using facts.
    fn templates_mention_facts(&self) -> bool {
        let files = self.files_dir();
        self.steps
            .iter()
            .chain(&self.handlers)
            .filter(|s| s.module == "template")
            .any(|s| match s.args.get("src").and_then(|v| v.as_str()) {
                Some(src) if !src.contains("{{") => std::fs::read_to_string(files.join(src))
                    .map(|t| {
                        mentions_facts(&t)
                            || t.contains("{% include")
                            || t.contains("{% extends")
                            || t.contains("{% import")
                    })
                    .unwrap_or(true),
                _ => true,
            })
    }

    /// The `files/` directory beside the playbooks directory: where template/copy `src` live.
    pub fn files_dir(&self) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.parent().unwrap_or(Path::new(".")).join("files")
    }
}

fn mentions_facts(text: &str) -> bool {
    text.contains("facts")
}

fn parse_step(path: &Path, line: usize, mut table: toml::Table) -> Result<Step, InputError> {
    let err = |msg: String| InputError::new(path, Some(line), msg);
    let name = match table.remove("name") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s,
        _ => return Err(err("step has no `name`".into()).hint("every step needs name = \"...\"")),
    };
    let when = match table.remove("when") {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => {
            return Err(err(format!(
                "step `{name}`: `when` must be a string expression"
            )))
        }
    };
    let string_list = |v: Option<toml::Value>, key: &str| -> Result<Vec<String>, InputError> {
        match v {
            None => Ok(Vec::new()),
            Some(toml::Value::String(s)) => Ok(vec![s]),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .map(|i| match i {
                    toml::Value::String(s) => Ok(s),
                    _ => Err(err(format!("step `{name}`: `{key}` must list strings"))),
                })
                .collect(),
            Some(_) => Err(err(format!(
                "step `{name}`: `{key}` must be a string or a list"
            ))),
        }
    };
    let sensitive = match table.remove("sensitive") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => {
            return Err(err(format!(
                "step `{name}`: `sensitive` must be true or false"
            )))
        }
    };
    let notify = string_list(table.remove("notify"), "notify")?;
    let tags = string_list(table.remove("tags"), "tags")?;
    let timeout = match table.remove("timeout") {
        None => None,
        Some(v) => Some(
            parse_duration(&v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    err(format!("step `{name}`: `timeout` must be a duration like \"90s\", \"10m\", \"1h\" or a number of seconds, got {v}"))
                })?,
        ),
    };
    let register =
        match table.remove("register") {
            None => None,
            Some(toml::Value::String(s)) if is_identifier(&s) => Some(s),
            Some(_) => return Err(err(format!(
                "step `{name}`: `register` must be a name (letters, digits, _)"
            ))
            .hint(
                "e.g. register = \"join_command\"; later steps read registered.<host>.join_command",
            )),
        };
    let register_secret = match table.remove("register_secret") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => {
            return Err(err(format!(
                "step `{name}`: `register_secret` must be true or false"
            )))
        }
    };
    if register_secret && register.is_none() {
        return Err(err(format!(
            "step `{name}`: `register_secret` without `register`"
        ))
        .hint("add register = \"NAME\" or remove register_secret"));
    }
    let delegate_to = match table.remove("delegate_to") {
        None => None,
        Some(toml::Value::String(s)) if !s.trim().is_empty() && !s.contains("{{") => Some(s),
        Some(_) => {
            return Err(err(format!(
                "step `{name}`: `delegate_to` must be a host name or a role with one host"
            ))
            .hint("e.g. delegate_to = \"master\" (a literal, not a template)"))
        }
    };
    let retries = match table.remove("retries") {
        None => 0,
        Some(toml::Value::Integer(n)) if (0..=MAX_RETRIES as i64).contains(&n) => n as u32,
        Some(_) => {
            return Err(err(format!(
                "step `{name}`: `retries` must be a whole number from 0 to {MAX_RETRIES}"
            )))
        }
    };
    let delay = match table.remove("delay") {
        None => std::time::Duration::from_secs(5),
        Some(v) => parse_duration(&v).ok_or_else(|| {
            err(format!(
                "step `{name}`: `delay` must be a duration such as \"5s\", \"2m\" or a number of seconds"
            ))
        })?,
    };

    let mut modules: Vec<(String, toml::Value)> = table.into_iter().collect();
    if modules.len() != 1 {
        let found: Vec<&str> = modules.iter().map(|(k, _)| k.as_str()).collect();
        return Err(err(format!(
            "step `{name}` must have exactly one module table, found {}",
            if found.is_empty() {
                "none".to_string()
            } else {
                found.join(", ")
            }
        ))
        .hint(format!("modules: {}", MODULE_NAMES.join(", "))));
    }
    let (module, args) = modules.remove(0);
    if !MODULE_NAMES.contains(&module.as_str()) {
        return Err(
            err(format!("step `{name}`: unknown module or key `{module}`")).hint(format!(
                "modules: {}; step keys: name, when, notify, tags, timeout, sensitive, register, register_secret, delegate_to, retries, delay",
                MODULE_NAMES.join(", ")
            )),
        );
    }
    if !args.is_table() {
        return Err(err(format!(
            "step `{name}`: `{module}` must be a table, e.g. {module} = {{ ... }}"
        )));
    }
    Ok(Step {
        name,
        line,
        module,
        args,
        when,
        notify,
        tags,
        sensitive,
        timeout,
        register,
        register_secret,
        delegate_to,
        retries,
        delay,
    })
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub use crate::modules::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Playbook, InputError> {
        Playbook::parse(Path::new("pb.toml"), text)
    }

    #[test]
    fn non_string_fact_reported_without_a_line() {
        let err = parse("name = \"p\"\nhosts = \"all\"\n[facts]\nok = \"true\"\nversion = 15\n")
            .unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(err.message.contains("`version`"), "{err}");
    }

    #[test]
    fn parses_steps_in_order_with_options() {
        let pb = parse(
            r#"
name = "demo"
hosts = "worker"
[facts]
pg = "ls /usr/lib/postgresql"
[[steps]]
name = "a"
file = { path = "/tmp/a", state = "directory" }
tags = "dirs"
[[steps]]
name = "b"
when = "facts.pg == '15'"
command = { cmd = "true" }
notify = ["h"]
[[handlers]]
name = "h"
service = { name = "x", state = "restarted" }
"#,
        )
        .unwrap();
        assert_eq!(pb.steps.len(), 2);
        assert_eq!(pb.steps[0].module, "file");
        assert_eq!(pb.steps[0].line, 6);
        assert_eq!(pb.steps[0].tags, vec!["dirs"]);
        assert_eq!(pb.steps[1].notify, vec!["h"]);
        assert_eq!(pb.facts[0].0, "pg");
        assert_eq!(pb.handlers[0].module, "service");
    }

    #[test]
    fn two_modules_in_one_step_are_refused_with_the_line() {
        let err = parse(
            "name = \"x\"\nhosts = \"all\"\n\n[[steps]]\nname = \"s\"\nfile = { path = \"/a\" }\ncopy = { dest = \"/b\" }\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("exactly one module"), "{err}");
    }

    #[test]
    fn unknown_module_is_refused() {
        let err = parse("name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\ncopyy = { }\n")
            .unwrap_err();
        assert!(err.message.contains("copyy"), "{err}");
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn notify_of_a_missing_handler_is_refused() {
        let err = parse(
            "name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\ncommand = { cmd = \"true\" }\nnotify = \"nope\"\n",
        )
        .unwrap_err();
        assert!(err.message.contains("nope"), "{err}");
    }

    #[test]
    fn step_timeout_takes_the_wait_for_duration_syntax() {
        let pb = parse("name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\ntimeout = \"10m\"\ncommand = { cmd = \"true\" }\n").unwrap();
        assert_eq!(
            pb.steps[0].timeout,
            Some(std::time::Duration::from_secs(600))
        );
        let err = parse("name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\ntimeout = \"soon\"\ncommand = { cmd = \"true\" }\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("timeout"), "{err}");
    }

    #[test]
    fn unknown_role_in_hosts_is_refused() {
        let err = parse("name = \"x\"\nhosts = \"db\"\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        let err = parse("name = \"x\"\nhosts = [\"master\", \"db\"]\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("db"), "{err}");
    }

    #[test]
    fn hosts_may_list_several_roles() {
        let pb = parse("name = \"x\"\nhosts = [\"master\", \"worker\"]\n").unwrap();
        assert_eq!(pb.hosts, "master,worker");
    }

    #[test]
    fn facts_are_gathered_only_when_something_reads_them() {
        let without = parse(
            "name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\nfile = { path = \"/a\" }\n",
        )
        .unwrap();
        assert!(!without.uses_facts);
        let with = parse("name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\nfile = { path = \"/{{ facts.arch }}\" }\n").unwrap();
        assert!(with.uses_facts);
        // A template that cannot be read here might read facts: gather them.
        let templated = parse("name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\ntemplate = { src = \"missing.j2\", dest = \"/a\" }\n").unwrap();
        assert!(templated.uses_facts);
    }

    #[test]
    fn register_delegate_and_retries_are_parsed() {
        let pb = parse(
            "name = \"x\"\nhosts = \"worker\"\n[[steps]]\nname = \"s\"\ncommand = { cmd = \"true\" }\nregister = \"join_command\"\nregister_secret = true\ndelegate_to = \"master\"\nretries = 30\ndelay = \"2m\"\n",
        )
        .unwrap();
        let s = &pb.steps[0];
        assert_eq!(s.register.as_deref(), Some("join_command"));
        assert!(s.register_secret);
        assert_eq!(s.delegate_to.as_deref(), Some("master"));
        assert_eq!(s.retries, 30);
        assert_eq!(s.delay, std::time::Duration::from_secs(120));
        let plain = parse("name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\ncommand = { cmd = \"true\" }\n").unwrap();
        assert_eq!(
            (plain.steps[0].retries, plain.steps[0].register.as_ref()),
            (0, None)
        );
    }

    #[test]
    fn bad_register_delegate_and_retries_are_refused_with_the_line() {
        for (extra, needle) in [
            ("register = \"join-command\"", "register"),
            ("register_secret = true", "without `register`"),
            ("delegate_to = \"{{ master }}\"", "delegate_to"),
            ("retries = -1", "retries"),
            ("retries = 5000", "retries"),
            ("retries = 3\ndelay = \"soon\"", "delay"),
        ] {
            let err = parse(&format!(
                "name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\ncommand = {{ cmd = \"true\" }}\n{extra}\n"
            ))
            .unwrap_err();
            assert!(err.message.contains(needle), "{extra}: {err}");
            assert_eq!(err.line, Some(3), "{extra}");
        }
    }

    #[test]
    fn shipped_playbooks_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml")
                && path.file_name().unwrap() != "site.toml"
            {
                Playbook::load(&path).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}
