//! minijinja rendering of step arguments, `when` expressions and template files. Undefined
//! variables are errors naming the file and line, never silently empty strings.

use std::collections::BTreeMap;
use std::error::Error as _;
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
        env.add_filter("fill", fill);
        env.add_filter("sha256", sha256_filter);
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
            .map_err(|e| self.template_error(&file, &e, None))?;
        template
            .render(ctx)
            .map_err(|e| self.template_error(&file, &e, Some(ctx)))
    }

    /// A template error at the template and line where it happened: an error inside an
    /// `{% include %}` names the included file and line, and where it was included from.
    fn template_error(&self, file: &Path, e: &minijinja::Error, ctx: Option<&Value>) -> InputError {
        let mut innermost = e;
        let mut included_from = Vec::new();
        while let Some(inner) = innermost
            .source()
            .and_then(|s| s.downcast_ref::<minijinja::Error>())
        {
            if inner.name().is_none() {
                break;
            }
            included_from.push(format!(
                "{}:{}",
                innermost.name().unwrap_or("?"),
                innermost.line().unwrap_or(0)
            ));
            innermost = inner;
        }
        let at = match innermost.name() {
            Some(name) if !included_from.is_empty() => self.files_dir.join(name),
            _ => file.to_path_buf(),
        };
        let mut err = template_error(&at, innermost);
        if let Some(ctx) = ctx {
            if let Ok(source) = std::fs::read_to_string(&at) {
                if let Some(name) = undefined_name(&self.env, &source, ctx, false) {
                    err.message.push_str(&format!(" (`{name}` is undefined)"));
                }
            }
        }
        if !included_from.is_empty() {
            err.message
                .push_str(&format!(" (included from {})", included_from.join(" <- ")));
        }
        err
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
        let at = |e: &minijinja::Error, source: &str, is_expression: bool| {
            let mut msg = format!("step `{}`: {}", step.name, describe(e));
            if e.kind() != minijinja::ErrorKind::SyntaxError {
                if let Some(name) = undefined_name(&self.env, source, ctx, is_expression) {
                    msg.push_str(&format!(" (`{name}` is undefined)"));
                }
            }
            InputError::new(&playbook.path, Some(step.line), msg)
        };
        if let Some(when) = &step.when {
            let expr = self
                .env
                .compile_expression(when)
                .map_err(|e| RenderError::Input(at(&e, when, true)))?;
            let result = expr
                .eval(ctx)
                .map_err(|e| RenderError::Input(at(&e, when, true)))?;
            if !result.is_true() {
                return Ok(None);
            }
        }
        render_value(&self.env, &step.args, ctx)
            .map(Some)
            .map_err(|e| RenderError::Input(at(&e, &step.args.to_string(), false)))
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
            .map_err(|e| self.template_error(&file, &e, None))
    }
}

/// `{{ "https://example.com/{os_id}" | fill(facts) }}`: each `{name}` in the text replaced by
/// the mapping's `name`, so an inventory value can name a host's facts (a repository URL per
/// distribution) without being a template itself. A `{name}` the mapping lacks is an error, so a
/// typo is not sent to a host.
/// `{{ text | sha256 }}`: the hex sha256 of a rendered text, e.g. a configuration's digest in a
/// pod template annotation, so that a changed configuration rolls the pods that read it at start.
fn sha256_filter(text: String) -> String {
    crate::modules::file::sha256_hex(text.as_bytes())
}

fn fill(text: String, values: Value) -> Result<String, minijinja::Error> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name = after
            .find('}')
            .map(|close| &after[..close])
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let Some(name) = name else {
            out.push('{');
            rest = after;
            continue;
        };
        let value = values
            .get_attr(name)
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_none());
        let Some(value) = value else {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("fill: `{{{name}}}` in {text:?} has no value"),
            ));
        };
        out.push_str(&value.to_string());
        rest = &after[name.len() + 1..];
    }
    out.push_str(rest);
    Ok(out)
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

const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "elif",
    "endif",
    "for",
    "endfor",
    "set",
    "endset",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "defined",
    "undefined",
    "loop",
    "include",
    "import",
    "from",
    "as",
    "with",
    "endwith",
    "macro",
    "endmacro",
    "call",
    "filter",
    "block",
    "endblock",
    "extends",
    "raw",
    "endraw",
    "recursive",
    "self",
    "super",
    "varargs",
    "kwargs",
    "caller",
    "namespace",
    "range",
    "dict",
    "debug",
    "lipsum",
    "cycler",
    "joiner",
];

/// The first variable (or dotted path, `role_addresses.mastr`) in `source` that is undefined in
/// `ctx`: minijinja's "undefined value" does not say which. Looks inside `{{ }}` and `{% %}`
/// (or the whole text of an expression such as `when`); names bound by `for` and `set`, filter
/// and test names, and string literals are skipped.
fn undefined_name(
    env: &Environment<'static>,
    source: &str,
    ctx: &Value,
    is_expression: bool,
) -> Option<String> {
    let mut code = String::new();
    if is_expression {
        code.push_str(source);
    } else {
        let mut rest = source;
        while let Some(start) = rest.find(['{']) {
            let after = &rest[start + 1..];
            let close = match after.chars().next() {
                Some('{') => "}}",
                Some('%') => "%}",
                _ => {
                    rest = after;
                    continue;
                }
            };
            let body = &after[1..];
            let end = body.find(close).unwrap_or(body.len());
            code.push_str(&body[..end]);
            code.push('\n');
            rest = &body[end..];
        }
    }
    let mut bound: Vec<String> = Vec::new();
    let mut chains: Vec<String> = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    let mut previous_word = String::new();
    let mut after_pipe_or_is = false;
    // Between `for` and `in`: the loop's own names (`for k, v in ...`).
    let mut binding_loop_targets = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            // A string literal: skip to its end.
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if c == '|' {
            after_pipe_or_is = true;
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            let chain: String = chars[start..i]
                .iter()
                .collect::<String>()
                .trim_end_matches('.')
                .to_string();
            let preceded_by_dot = start > 0 && chars[start - 1] == '.';
            let first = chain.split('.').next().unwrap_or("").to_string();
            if first == "for" {
                binding_loop_targets = true;
            } else if first == "in" {
                binding_loop_targets = false;
            }
            if binding_loop_targets || previous_word == "set" {
                bound.push(first.clone());
            } else if !after_pipe_or_is && !preceded_by_dot && !KEYWORDS.contains(&first.as_str()) {
                chains.push(chain);
            }
            after_pipe_or_is = first == "is";
            previous_word = first;
            continue;
        }
        if !c.is_whitespace() {
            after_pipe_or_is = false;
            previous_word = c.to_string();
        }
        i += 1;
    }
    for chain in chains {
        let parts: Vec<&str> = chain.split('.').collect();
        if bound.iter().any(|b| b == parts[0]) {
            continue;
        }
        for n in 1..=parts.len() {
            let prefix = parts[..n].join(".");
            let Ok(expr) = env.compile_expression(&prefix) else {
                break;
            };
            match expr.eval(ctx) {
                Ok(v) if v.is_undefined() => return Some(prefix),
                Ok(_) => {}
                Err(e) if e.kind() == minijinja::ErrorKind::UndefinedError => return Some(prefix),
                Err(_) => break,
            }
        }
    }
    None
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
    fn fill_puts_the_hosts_facts_into_an_inventory_value_and_refuses_unknown_names() {
        let r = Renderer::new(Path::new("/nonexistent"));
        let ctx = minijinja::context! {
            url => "https://download.docker.com/linux/{os_id}",
            version => "2.3.3-1~{os_id}.{os_version}~{os_codename}",
            typo => "{os_name}",
            facts => BTreeMap::from([("os_id", "debian"), ("os_version", "12"), ("os_codename", "bookworm")]),
        };
        let render = |t: &str| r.render_text(t, &ctx);
        assert_eq!(
            render("{{ url | fill(facts) }}").unwrap(),
            "https://download.docker.com/linux/debian"
        );
        assert_eq!(
            render("{{ version | fill(facts) }}").unwrap(),
            "2.3.3-1~debian.12~bookworm"
        );
        // Braces that name nothing stay as they are.
        assert_eq!(
            render("{{ '{} {x-y} {' | fill(facts) }}").unwrap(),
            "{} {x-y} {"
        );
        let err = render("{{ typo | fill(facts) }}").unwrap_err();
        assert!(err.to_string().contains("os_name"), "{err}");
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
    fn undefined_value_did_not_name_the_variable() {
        let pb = playbook("name = \"x\"\nhosts = \"all\"\n\n[[steps]]\nname = \"s\"\nfile = { path = \"/srv/{{ app }}/{{ role_addresses.mastr | first }}\" }\n");
        let r = Renderer::new(Path::new("."));
        let ctx = minijinja::context! { app => "shop", role_addresses => BTreeMap::from([("master", vec!["10.0.0.1"])]) };
        match r.render_step(&pb, &pb.steps[0], &ctx, &BTreeMap::new()) {
            Err(RenderError::Input(e)) => {
                assert!(e.message.contains("`role_addresses.mastr`"), "{e}");
            }
            other => panic!("expected an input error, got {other:?}"),
        }
        let dir = files(&[(
            "t.j2",
            "{% for h in hosts %}{{ h }} {{ db_prot }}\n{% endfor %}",
        )]);
        let r = Renderer::new(dir.path());
        let err = r
            .render_file("t.j2", &minijinja::context! { hosts => vec!["a"] })
            .unwrap_err();
        assert!(err.message.contains("`db_prot`"), "{err}");
        assert!(!err.message.contains("`h`"), "{err}");
    }

    #[test]
    fn error_in_an_included_template_lost_its_cause_and_line() {
        let dir = files(&[
            ("outer.j2", "line one\n{% include \"inner.j2\" %}\n"),
            ("inner.j2", "a\nb\nc = {{ missing_var }}\n"),
        ]);
        let r = Renderer::new(dir.path());
        let err = r
            .render_file("outer.j2", &minijinja::context! {})
            .unwrap_err();
        assert!(err.file.ends_with("inner.j2"), "{err}");
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("`missing_var`"), "{err}");
        assert!(err.message.contains("outer.j2:2"), "{err}");
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
