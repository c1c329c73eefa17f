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
    /// A role name, or "all".
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
    /// `timeout = "10m"`: the step's changes are stopped after this long (remote `timeout -k`
    /// and a local deadline). `None`: the module's default (see `runner::deadline`).
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    name: String,
    hosts: Spanned<String>,
    #[serde(default)]
    facts: toml::Table,
    #[serde(default)]
    steps: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    handlers: Vec<Spanned<toml::Table>>,
}

impl Playbook {
    pub fn load(path: &Path) -> Result<Playbook, InputError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, None, format!("cannot read playbook: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Playbook, InputError> {
        let raw: RawPlaybook =
            toml::from_str(text).map_err(|e| crate::inventory::toml_error(path, text, &e))?;
        let hosts_line = InputError::line_of(text, raw.hosts.span().start);
        let hosts = raw.hosts.into_inner();
        if hosts != "all" && !crate::inventory::ROLES.contains(&hosts.as_str()) {
            return Err(InputError::new(
                path,
                Some(hosts_line),
                format!("`hosts = \"{hosts}\"` is not a role"),
            )
            .hint(format!(
                "use all or one of: {}",
                crate::inventory::ROLES.join(", ")
            )));
        }
        let mut facts = Vec::new();
        for (name, cmd) in raw.facts {
            match cmd {
                toml::Value::String(cmd) => facts.push((name, cmd)),
                _ => {
                    return Err(InputError::new(
                        path,
                        None,
                        format!("fact `{name}` must be a shell command string"),
                    ))
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
                "modules: {}; step keys: name, when, notify, tags, timeout",
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
        timeout,
    })
}

/// "90s", "10m", "1h", "90" or an integer: the duration syntax of `wait_for`.
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Playbook, InputError> {
        Playbook::parse(Path::new("pb.toml"), text)
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
