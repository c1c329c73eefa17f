//! Helpers for the crate's unit tests.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// Runs `command` with `stdin` written to it (then closed) and its stdout and stderr captured.
pub(crate) fn output_with_stdin(command: &mut Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}
