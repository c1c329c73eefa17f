//! minijinja rendering of step arguments, `when` expressions and template files. Undefined
//! variables are errors naming the file and line, never silently empty strings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::error::InputError;
use crate::playbook::{Playbook, Step};

/// One environment per playbook: templates come from the playbook's `files/` directory.
pub struct Renderer {
    env: Environment<'static>,
    files_dir: PathBuf,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("files_dir", &self.files_dir)
            .finish()
    }
}

/// Why a step could not be rendered.
#[derive(Debug)]
pub enum RenderError {
    Input(InputError),
    /// The step uses a fact the host does not have yet (e.g. a version that an earlier step's
    /// install would provide). In check mode that earlier step did not run.
    FactNotKnownYet(String),
}

impl Renderer {
    pub fn new(files_dir: &Path) -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files, not HTML: never escape.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_loader(minijinja::path_loader(files_dir));
        Renderer {
            env,
            files_dir: files_dir.to_path_buf(),
        }
    }

    pub fn files_dir(&self) -> &Path {
        &self.files_dir
    }

    /// Renders a template file from `files/`; errors name `files/<src>:<line>`.
    pub fn render_file(&self, src: &str, ctx: &Value) -> Result<String, InputError> {
        let file = self.files_dir.join(src);
        let template = self
            .env
            .get_template(src)
            .map_err(|e| template_error(&file, &e))?;
        template.render(ctx).map_err(|e| template_error(&file, &e))
    }

    /// Renders every string inside a step's arguments, and evaluates its `when`.
    /// Returns `Ok(None)` when `when` is false.
    pub fn render_step(
        &self,
        playbook: &Playbook,
        step: &Step,
        ctx: &Value,
        known_facts: &BTreeMap<String, String>,
    ) -> Result<Option<toml::Value>, RenderError> {
        // A fact the playbook declares but the host did not report: say so plainly instead of
        // failing on an undefined variable.
        let text = format!("{} {}", step.when.as_deref().unwrap_or(""), step.args);
        for (fact, _) in &playbook.facts {
            if !known_facts.contains_key(fact)
                && (text.contains(&format!("facts.{fact}"))
                    || text.contains(&format!("facts[\"{fact}\"]")))
            {
                return Err(RenderError::FactNotKnownYet(fact.clone()));
            }
        }
        let at = |e: &minijinja::Error| {
            InputError::new(
                &playbook.path,
                Some(step.line),
                format!("step `{}`: {}", step.name, describe(e)),
            )
        };
        if let Some(when) = &step.when {
            let expr = self
                .env
                .compile_expression(when)
                .map_err(|e| RenderError::Input(at(&e)))?;
            let result = expr.eval(ctx).map_err(|e| RenderError::Input(at(&e)))?;
            if !result.is_true() {
                return Ok(None);
            }
        }
        render_value(&self.env, &step.args, ctx)
            .map(Some)
            .map_err(|e| RenderError::Input(at(&e)))
    }

    /// Renders a short text such as a step name.
    pub fn render_text(&self, text: &str, ctx: &Value) -> Result<String, minijinja::Error> {
        self.env.render_str(text, ctx)
    }

    /// Checks that a template file compiles (syntax) without rendering it.
    pub fn check_file_syntax(&self, src: &str) -> Result<(), InputError> {
        let file = self.files_dir.join(src);
        self.env
            .get_template(src)
            .map(|_| ())
            .map_err(|e| template_error(&file, &e))
    }
}

/// A string that is exactly one `{{ expression }}` keeps the expression's type, so a list or a
/// number can come from the inventory: `from = "{{ role_addresses.master + extra }}"`.
fn whole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner)
}

fn render_value(
    env: &Environment<'static>,
    value: &toml::Value,
    ctx: &Value,
) -> Result<toml::Value, minijinja::Error> {
    Ok(match value {
        toml::Value::String(s) if whole_expression(s).is_some() => {
            let expr = env.compile_expression(whole_expression(s).unwrap_or_default())?;
            let result = expr.eval(ctx)?;
            if result.is_undefined() {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::UndefinedError,
                    format!("`{s}` is undefined"),
                ));
            }
            to_toml(&result).map_err(|e| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("`{s}`: {e}"),
                )
            })?
        }
        toml::Value::String(s) if s.contains("{{") || s.contains("{%") => {
            toml::Value::String(env.render_str(s, ctx)?)
        }
        toml::Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|i| render_value(env, i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(env, v, ctx)?)))
                .collect::<Result<_, minijinja::Error>>()?,
        ),
        other => other.clone(),
    })
}

fn to_toml(v: &Value) -> Result<toml::Value, String> {
    if v.is_none() {
        return Err("evaluates to none, which has no TOML form".into());
    }
    // Strings stay strings (numbers in strings are not reinterpreted).
    if let Some(s) = v.as_str() {
        return Ok(toml::Value::String(s.to_string()));
    }
    toml::Value::try_from(v).map_err(|e| e.to_string())
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    msg
}

fn template_error(file: &Path, e: &minijinja::Error) -> InputError {
    let hint = match e.kind() {
        minijinja::ErrorKind::UndefinedError => {
            Some("define the variable in inventory.toml [vars] or the host's vars")
        }
        minijinja::ErrorKind::TemplateNotFound => Some("template paths are relative to files/"),
        _ => None,
    };
    let err = InputError::new(file, e.line(), describe(e));
    match hint {
        Some(h) => err.hint(h),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in pairs {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        dir
    }

    #[test]
    fn undefined_variable_in_template_names_file_and_line() {
        let dir = files(&[("t.conf.j2", "a = 1\nb = {{ nope }}\n")]);
        let r = Renderer::new(dir.path());
        let err = r
            .render_file(
                "t.conf.j2",
                &Value::from_serialize(BTreeMap::<String, String>::new()),
            )
            .unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.file.ends_with("t.conf.j2"));
        assert!(err.message.contains("undefined"), "{err}");
    }

    #[test]
    fn renders_loops_without_escaping_and_keeps_final_newline() {
        let dir = files(&[(
            "t.j2",
            "{% for h in hosts %}\nhost {{ h }} <ok>\n{% endfor %}\n",
        )]);
        let r = Renderer::new(dir.path());
        let ctx = Value::from_serialize(BTreeMap::from([("hosts", vec!["a", "b"])]));
        assert_eq!(
            r.render_file("t.j2", &ctx).unwrap(),
            "host a <ok>\nhost b <ok>\n"
        );
    }

    fn playbook(text: &str) -> Playbook {
        Playbook::parse(Path::new("pb.toml"), text).unwrap()
    }

    #[test]
    fn step_arguments_render_and_when_skips() {
        let pb = playbook(
            "name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\nfile = { path = \"/srv/{{ app }}\" }\n[[steps]]\nname = \"t\"\nwhen = \"app == 'other'\"\nfile = { path = \"/x\" }\n",
        );
        let r = Renderer::new(Path::new("."));
        let ctx = Value::from_serialize(BTreeMap::from([("app", "shop")]));
        let none = BTreeMap::new();
        let args = r
            .render_step(&pb, &pb.steps[0], &ctx, &none)
            .unwrap()
            .unwrap();
        assert_eq!(args["path"].as_str(), Some("/srv/shop"));
        assert!(r
            .render_step(&pb, &pb.steps[1], &ctx, &none)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_whole_expression_keeps_its_type() {
        let pb = playbook("name = \"x\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\nufw = { port = \"{{ port }}\", from = \"{{ a + ['127.0.0.1'] }}\", note = \"port {{ port }}\" }\n");
        let r = Renderer::new(Path::new("."));
        let ctx = Value::from_serialize(BTreeMap::from([
            ("a", Value::from(vec!["10.0.0.1"])),
            ("port", Value::from(5432)),
        ]));
        let args = r
            .render_step(&pb, &pb.steps[0], &ctx, &BTreeMap::new())
            .unwrap()
            .unwrap();
        assert_eq!(args["port"].as_integer(), Some(5432));
        let from: Vec<&str> = args["from"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(from, vec!["10.0.0.1", "127.0.0.1"]);
        assert_eq!(args["note"].as_str(), Some("port 5432"));
    }

    #[test]
    fn undefined_variable_in_step_names_playbook_line() {
        let pb = playbook("name = \"x\"\nhosts = \"all\"\n\n[[steps]]\nname = \"s\"\nfile = { path = \"/srv/{{ nope }}\" }\n");
        let r = Renderer::new(Path::new("."));
        let ctx = Value::from_serialize(BTreeMap::<String, String>::new());
        match r.render_step(&pb, &pb.steps[0], &ctx, &BTreeMap::new()) {
            Err(RenderError::Input(e)) => {
                assert_eq!(e.line, Some(4));
                assert!(e.message.contains("undefined"), "{e}");
            }
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn missing_declared_fact_is_reported_as_not_known_yet() {
        let pb = playbook("name = \"x\"\nhosts = \"all\"\n[facts]\npg = \"ls\"\n[[steps]]\nname = \"s\"\nfile = { path = \"/etc/{{ facts.pg }}\" }\n");
        let r = Renderer::new(Path::new("."));
        let ctx = Value::from_serialize(BTreeMap::<String, String>::new());
        assert!(matches!(
            r.render_step(&pb, &pb.steps[0], &ctx, &BTreeMap::new()),
            Err(RenderError::FactNotKnownYet(f)) if f == "pg"
        ));
    }
}
