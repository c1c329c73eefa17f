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

impl InputError {
    pub fn new(file: impl AsRef<Path>, line: Option<usize>, message: impl Into<String>) -> Self {
        InputError {
            file: file.as_ref().to_path_buf(),
            line,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
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
