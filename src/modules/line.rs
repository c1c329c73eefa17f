//! `line`: makes sure one line is in a text file (or is not), leaving the rest of the file alone.
//!
//! Arguments:
//! - `path` (required): absolute path on the host.
//! - `line`: the exact line wanted (required with `state = "present"`).
//! - `regexp`: a regular expression (Rust `regex` syntax) naming the line to replace: the last
//!   line matching it becomes `line`. When nothing matches, `line` is appended (unless it is
//!   already in the file). With `state = "absent"`, every line matching it is removed.
//! - `state`: `"present"` (default) or `"absent"` (lines equal to `line`, or matching
//!   `regexp`, are removed).
//! - `create` (default `false`): create the file when it is missing; otherwise a missing file
//!   is an error (with `state = "absent"` a missing file is fine).
//! - `mode`, `owner`, `group`: applied when given; an existing file otherwise keeps its own.
//!
//! ```toml
//! [[step]]
//! name = "PostgreSQL listens on all addresses"
//! line = { path = "/etc/postgresql/15/main/postgresql.conf", regexp = "^#?listen_addresses\\s*=", line = "listen_addresses = '*'" }
//! ```
//!
//! The probe reads the whole file; the new content is computed locally and uploaded whole
//! (temp file + rename, so the file is never half written), with a diff.
use super::file::{
    attr_changes, check_abs_path, check_mode, merged_attrs, parse_remote_file, remote_file_probe,
    Kind,
};
use super::*;
use crate::error::InputError;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum LineState {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineArgs {
    path: String,
    line: Option<String>,
    regexp: Option<String>,
    #[serde(default)]
    state: LineState,
    #[serde(default)]
    create: bool,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
}

#[derive(Debug)]
pub struct Line {
    path: String,
    line: Option<String>,
    regexp: Option<regex::Regex>,
    state: LineState,
    create: bool,
    attrs: FileAttrs,
}

impl Line {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: LineArgs = parse_args("line", args, ctx)?;
        check_abs_path(&a.path, "line", "path", ctx)?;
        check_mode(a.mode.as_deref(), "line", ctx)?;
        let err =
            |msg: String, hint: &str| Err(InputError::new(ctx.playbook, ctx.line, msg).hint(hint));
        if a.line.as_deref().is_some_and(|l| l.contains('\n')) {
            return err(
                "`line`: line contains a newline".into(),
                "manage one line per step, or use `copy`",
            );
        }
        match a.state {
            LineState::Present if a.line.is_none() => {
                return err(
                    "`line`: state = \"present\" needs line".into(),
                    "add line = \"the exact line\"",
                )
            }
            LineState::Absent if a.line.is_none() && a.regexp.is_none() => {
                return err(
                    "`line`: state = \"absent\" needs line or regexp".into(),
                    "say which lines to remove",
                )
            }
            _ => {}
        }
        let regexp = match &a.regexp {
            Some(r) => Some(regex::Regex::new(r).map_err(|e| {
                InputError::new(ctx.playbook, ctx.line, format!("`line`: bad regexp {r:?}: {e}"))
                    .hint("the syntax is Rust's regex crate (like RE2); in TOML, prefer '...' strings for backslashes")
            })?),
            None => None,
        };
        Ok(Line {
            path: a.path,
            line: a.line,
            regexp,
            state: a.state,
            create: a.create,
            attrs: FileAttrs {
                mode: a.mode,
                owner: a.owner,
                group: a.group,
            },
        })
    }

    /// The file's new content, or None when it already has the wanted lines.
    fn edit(&self, old: &str) -> Option<String> {
        let mut lines: Vec<&str> = match old.strip_suffix('\n').unwrap_or(old) {
            "" if old.is_empty() => vec![],
            body => body.split('\n').collect(),
        };
        let before = lines.clone();
        let matches = |l: &str| match &self.regexp {
            Some(re) => re.is_match(l),
            None => Some(l) == self.line.as_deref(),
        };
        match self.state {
            LineState::Present => {
                let wanted = self.line.as_deref().unwrap_or_default();
                match lines
                    .iter()
                    .rposition(|l| self.regexp.as_ref().is_some_and(|re| re.is_match(l)))
                {
                    Some(i) => lines[i] = wanted,
                    None if lines.contains(&wanted) => {}
                    None => lines.push(wanted),
                }
            }
            LineState::Absent => lines.retain(|l| !matches(l)),
        }
        if lines == before {
            return None;
        }
        let mut new = lines.join("\n");
        if !lines.is_empty() {
            new.push('\n');
        }
        Some(new)
    }
}

impl Module for Line {
    fn probe(&self, _opts: ProbeOptions) -> String {
        remote_file_probe(&self.path, false, true)
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let remote = parse_remote_file(&probe.stdout)?;
        let (old, stat) = match &remote.stat {
            None if self.state == LineState::Absent => return Ok(vec![]),
            None if !self.create => {
                return Err(PlanError::not_yet(format!(
                    "{} does not exist (set create = true to create it)",
                    self.path
                )))
            }
            None => (String::new(), None),
            Some(st) if st.kind != Kind::File => {
                return Err(PlanError(format!(
                    "{} is a {}, not a regular file",
                    self.path, st.kind
                )))
            }
            Some(st) => {
                let bytes = remote.content.ok_or_else(|| {
                    PlanError(format!("probe printed no content for {}", self.path))
                })?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| PlanError(format!("{} is not a UTF-8 text file", self.path)))?;
                (text, Some(st))
            }
        };
        let Some(new) = self.edit(&old) else {
            return Ok(stat
                .map(|st| attr_changes(&self.path, &self.attrs, st))
                .unwrap_or_default());
        };
        let summary = match (self.state, stat) {
            (LineState::Absent, _) => format!("remove matching lines from {}", self.path),
            (LineState::Present, None) => format!("create {} with its line", self.path),
            (LineState::Present, Some(_)) => format!("set line in {}", self.path),
        };
        Ok(vec![Change::new(
            summary,
            Action::Upload {
                dest: self.path.clone(),
                content: new.clone().into_bytes(),
                attrs: merged_attrs(&self.attrs, stat),
                validate: None,
                backup: false,
            },
        )
        .with_diff(old, new)])
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::testing::*;
    use super::*;
    use base64::Engine as _;

    fn line(args: &str) -> Result<Line, InputError> {
        build_simple(args, Line::from_args)
    }

    fn existing(content: &str) -> ProbeOutput {
        probe(&format!(
            "type=regular file\nmode=640\nuid=105\nowner=postgres\ngid=106\ngroup=postgres\ncontent={}\n",
            base64::engine::general_purpose::STANDARD.encode(content)
        ))
    }

    fn new_content(changes: &[Change]) -> String {
        match changes {
            [Change {
                action: Action::Upload { content, .. },
                ..
            }] => String::from_utf8(content.clone()).unwrap(),
            other => panic!("expected one upload, got {other:?}"),
        }
    }

    const PG: &str = "path = \"/etc/pg.conf\"\nregexp = '^#?listen_addresses\\s*='\nline = \"listen_addresses = '*'\"";

    #[test]
    fn regexp_replaces_the_last_match_and_keeps_attributes() {
        let l = line(PG).unwrap();
        let old = "a = 1\n#listen_addresses = 'localhost'\nb = 2\n#listen_addresses = 'x'\nc = 3\n";
        let changes = l.plan(&existing(old)).unwrap();
        assert_eq!(
            new_content(&changes),
            "a = 1\n#listen_addresses = 'localhost'\nb = 2\nlisten_addresses = '*'\nc = 3\n"
        );
        let Action::Upload { attrs, .. } = &changes[0].action else {
            panic!()
        };
        assert_eq!(
            attrs,
            &FileAttrs {
                mode: Some("0640".into()),
                owner: Some("postgres".into()),
                group: Some("postgres".into())
            }
        );
        assert_eq!(changes[0].diff.as_ref().unwrap().0, old);
        // Second run: the line is there, nothing to do.
        assert!(l
            .plan(&existing(&new_content(&changes)))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn appends_when_nothing_matches() {
        let l = line(PG).unwrap();
        assert_eq!(
            new_content(&l.plan(&existing("a = 1")).unwrap()),
            "a = 1\nlisten_addresses = '*'\n"
        );
        assert_eq!(
            new_content(&l.plan(&existing("")).unwrap()),
            "listen_addresses = '*'\n"
        );
        let plain = line("path = \"/etc/hosts\"\nline = \"10.0.0.1 master\"").unwrap();
        assert!(plain
            .plan(&existing("127.0.0.1 localhost\n10.0.0.1 master\n"))
            .unwrap()
            .is_empty());
        assert_eq!(
            new_content(&plain.plan(&existing("127.0.0.1 localhost\n")).unwrap()),
            "127.0.0.1 localhost\n10.0.0.1 master\n"
        );
    }

    #[test]
    fn absent_removes_every_match() {
        let l = line("path = \"/etc/fstab\"\nregexp = '\\sswap\\s'\nstate = \"absent\"").unwrap();
        let old = "/dev/sda1 / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n/dev/sdb none swap sw 0 0\n";
        assert_eq!(
            new_content(&l.plan(&existing(old)).unwrap()),
            "/dev/sda1 / ext4 defaults 0 1\n"
        );
        assert!(l
            .plan(&existing("/dev/sda1 / ext4 defaults 0 1\n"))
            .unwrap()
            .is_empty());
        assert!(l
            .plan(&probe("type=missing\ncontent=\n"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn missing_file_needs_create() {
        let l = line("path = \"/etc/x\"\nline = \"k=v\"").unwrap();
        assert!(l
            .plan(&probe("type=missing\ncontent=\n"))
            .unwrap_err()
            .0
            .contains("create = true"));
        let c = line("path = \"/etc/x\"\nline = \"k=v\"\ncreate = true\nmode = \"0600\"").unwrap();
        let changes = c.plan(&probe("type=missing\ncontent=\n")).unwrap();
        assert_eq!(new_content(&changes), "k=v\n");
        let Action::Upload { attrs, .. } = &changes[0].action else {
            panic!()
        };
        assert_eq!(attrs.mode.as_deref(), Some("0600"));
    }

    #[test]
    fn attributes_alone() {
        let l = line("path = \"/etc/x\"\nline = \"k=v\"\nmode = \"0600\"").unwrap();
        assert_eq!(
            scripts(&l.plan(&existing("k=v\n")).unwrap()),
            vec!["chmod 0600 -- /etc/x"]
        );
    }

    #[test]
    fn bad_arguments() {
        for (args, needle) in [
            ("path = \"/x\"", "needs line"),
            ("path = \"/x\"\nstate = \"absent\"", "line or regexp"),
            ("path = \"/x\"\nline = \"a\"\nregexp = \"(\"", "bad regexp"),
            ("path = \"/x\"\nline = \"a\\nb\"", "newline"),
            (
                "path = \"/x\"\nline = \"a\"\nbackrefs = true",
                "unknown field",
            ),
        ] {
            let e = line(args).unwrap_err();
            assert!(e.message.contains(needle), "{args}: {}", e.message);
            assert!(
                e.hint.is_some() || needle == "unknown field",
                "{args}: no hint"
            );
        }
    }

    #[test]
    fn probe_reads_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg.conf");
        let args = format!(
            "path = {:?}\nregexp = '^#?port'\nline = \"port = 5432\"",
            path.to_str().unwrap()
        );
        let l = line(&args).unwrap();
        assert!(l
            .plan(&run_probe(&l.probe(ProbeOptions::default())))
            .unwrap_err()
            .0
            .contains("does not exist"));
        std::fs::write(&path, "# café\n#port = 5433\n").unwrap();
        let changes = l
            .plan(&run_probe(&l.probe(ProbeOptions::default())))
            .unwrap();
        assert_eq!(new_content(&changes), "# café\nport = 5432\n");
        std::fs::write(&path, new_content(&changes)).unwrap();
        assert!(l
            .plan(&run_probe(&l.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
    }
}
