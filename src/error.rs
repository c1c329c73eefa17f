//! Errors a caller must branch on. Bad input (exit 2) is kept apart from failures on hosts (exit 1).

use std::fmt;
use std::path::{Path, PathBuf};

/// Bad input: inventory, playbook, template or flags. Reported with file and line, exit code 2,
/// always before any host is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
    /// What the user should do about it.
    pub hint: Option<String>,
}

/// Longest message or hint shown whole: a value pasted into a message (a 1 MB variable) is cut.
const LONGEST_MESSAGE: usize = 600;

/// `text` whole when short, else its start and end around a note of how much was cut.
pub fn cut_long(text: String) -> String {
    if text.len() <= LONGEST_MESSAGE {
        return text;
    }
    let head_end = floor_char_boundary(&text, 400);
    let tail_start = floor_char_boundary(&text, text.len() - 120);
    format!(
        "{} …[{} bytes cut]… {}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Reads a text input file; bytes that are not UTF-8 are bad input at their line.
pub fn read_text(path: &Path, what: &str) -> Result<String, InputError> {
    let bytes = std::fs::read(path)
        .map_err(|e| InputError::new(path, None, format!("cannot read {what}: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..valid].iter().filter(|b| **b == b'\n').count() + 1;
        let column = valid
            - bytes[..valid]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1)
            + 1;
        InputError::new(
            path,
            Some(line),
            format!(
                "{what} is not UTF-8 text (byte {:#04x} at column {column})",
                bytes[valid]
            ),
        )
        .hint("save the file as UTF-8")
    })
}

impl InputError {
    pub fn new(file: impl AsRef<Path>, line: Option<usize>, message: impl Into<String>) -> Self {
        InputError {
            file: file.as_ref().to_path_buf(),
            line,
            message: cut_long(message.into()),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(cut_long(hint.into()));
        self
    }

    /// Line number (1-based) of a byte offset in `text`.
    pub fn line_of(text: &str, offset: usize) -> usize {
        text[..offset.min(text.len())].matches('\n').count() + 1
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message)?,
            None => write!(f, "{}: {}", self.file.display(), self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InputError {}

/// Exit codes of the binary.
pub mod exit {
    pub const OK: i32 = 0;
    /// A step or a connection failed.
    pub const FAILED: i32 = 1;
    /// Bad input (flags, inventory, playbook, template); nothing was touched.
    pub const BAD_INPUT: i32 = 2;
    /// A command the run stopped on a host (signal grace, deadline) was not confirmed gone: it
    /// may still be running there. Wins over the signal's 128 + N.
    pub const STOP_NOT_CONFIRMED: i32 = 3;
}

/// Maps an error chain to the exit code: any `InputError` in the chain means bad input.
pub fn exit_code_for(err: &anyhow::Error) -> i32 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<InputError>().is_some())
    {
        exit::BAD_INPUT
    } else {
        exit::FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_megabyte_value_echoed_whole_in_a_message() {
        let value = "x".repeat(1 << 20);
        let err = InputError::new("f.toml", Some(3), format!("`{value}` is not a port"))
            .hint(format!("not {value}"));
        let shown = err.to_string();
        assert!(shown.len() < 2000, "{} bytes shown", shown.len());
        assert!(
            shown.contains("is not a port"),
            "the end of the message stays"
        );
        assert!(shown.contains("bytes cut"));
        let multibyte = cut_long("é".repeat(1000));
        assert!(multibyte.contains("bytes cut"));
    }

    #[test]
    fn non_utf8_bytes_reported_without_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inventory.toml");
        std::fs::write(&file, b"[vars]\nname = \"caf\xe9\"\n").unwrap();
        let err = read_text(&file, "inventory").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("0xe9 at column 12"), "{err}");
    }
}
