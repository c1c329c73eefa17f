//! Shell quoting, privilege wrapping and the framing of scripts on stdin, in one place for the
//! whole program.
//!
//! A script never travels as argv: the command line is a constant loader (visible in `ps` and
//! in sudo's log, so it must carry nothing), and stdin carries, in order, a header line with the
//! script's length in bytes, the script, then the command's own input (an upload's content, the
//! `stdin` of a `command` step). The loader reads exactly the script, checks it arrived whole, and
//! `eval`s it in the same shell, so the rest of stdin is the script's stdin, binary-clean.

use std::time::Duration;

/// First line of stdout when the loader runs under `sudo`: its absence means sudo itself failed.
pub const PRIVILEGED_MARKER: &str = "__BOOTSTRAP_PRIVILEGED__\n";

/// Exit status of the loader when the script did not arrive whole (connection cut while sending).
pub const INCOMPLETE_SCRIPT_STATUS: u32 = 125;

/// After a deadline's TERM, how long `timeout` waits before KILL.
pub const KILL_AFTER: Duration = Duration::from_secs(10);

/// Reads the header and the script from stdin, refuses a truncated one, and runs it. A fixed
/// C locale keeps probe output parseable (and `${#s}` a byte count) whatever the host's language.
const LOADER: &str = "export LC_ALL=C; IFS= read -r n && s=$(head -c \"$n\"; echo .) && s=${s%.} \
     && [ \"${#s}\" = \"$n\" ] || { echo 'bootstrap: the script did not arrive whole' >&2; exit 125; }; \
     unset n; eval \"$s\"";

/// Quotes one word for POSIX sh. Safe words are left bare so logs stay readable.
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r#"'\''"#))
    }
}

/// Quotes and joins words into one command line.
pub fn join<I, S>(words: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    words
        .into_iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether commands for this login go through `sudo -n` (never for root).
pub fn uses_sudo(login_user: &str, become_root: bool) -> bool {
    become_root && login_user != "root"
}

/// The command line sent over SSH: the same for every script (only the deadline varies).
/// Under sudo the loader first prints `PRIVILEGED_MARKER`, so a sudo failure is told apart
/// from the script's own failure. With a deadline, `timeout` stops the script and all it
/// started (TERM, then KILL after `KILL_AFTER`).
pub fn command_line(login_user: &str, become_root: bool, deadline: Option<Duration>) -> String {
    tagged_command_line(login_user, become_root, deadline, "")
}

/// `command_line` with `tag` as the loader's `$0`: a word (never a secret) that names the
/// command in `ps` on the host, so an abandoned one can be found and stopped.
pub fn tagged_command_line(
    login_user: &str,
    become_root: bool,
    deadline: Option<Duration>,
    tag: &str,
) -> String {
    let sudo = uses_sudo(login_user, become_root);
    let loader = if sudo {
        format!("printf %s {}; {LOADER}", quote(PRIVILEGED_MARKER))
    } else {
        LOADER.to_string()
    };
    let timeout = match deadline {
        Some(d) => format!(
            "timeout -k {}s {}s ",
            KILL_AFTER.as_secs(),
            d.as_secs().max(1)
        ),
        None => String::new(),
    };
    // -n: never prompt (a prompt would hang the run); -H: root's HOME for tools like psql.
    let sudo = if sudo { "sudo -n -H -- " } else { "" };
    let tag = if tag.is_empty() {
        String::new()
    } else {
        format!(" {}", quote(tag))
    };
    format!("{sudo}{timeout}sh -c {}{tag}", quote(&loader))
}

/// What is written to the command's stdin: header, script, then the command's own input.
pub fn frame(script: &str, input: Option<&[u8]>) -> Vec<u8> {
    let input = input.unwrap_or_default();
    let header = format!("{}\n", script.len());
    let mut bytes = Vec::with_capacity(header.len() + script.len() + input.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(script.as_bytes());
    bytes.extend_from_slice(input);
    bytes
}

/// Removes the loader's marker from a privileged command's stdout. `None` when it is missing:
/// the privileged shell never started (sudo refused, needs a password, or is not installed).
/// Anything before the marker (a login script's noise) goes with it.
pub fn strip_privileged_marker(stdout: &mut Vec<u8>) -> Option<()> {
    let marker = PRIVILEGED_MARKER.as_bytes();
    let at = stdout.windows(marker.len()).position(|w| w == marker)?;
    stdout.drain(..at + marker.len());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("/etc/hosts"), "/etc/hosts");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r#"'it'\''s'"#);
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn sudo_only_for_non_root_with_become() {
        assert!(command_line("vagrant", true, None).starts_with("sudo -n -H -- sh -c "));
        assert!(command_line("root", true, None).starts_with("sh -c "));
        assert!(command_line("vagrant", false, None).starts_with("sh -c "));
        let timed = command_line("vagrant", true, Some(Duration::from_secs(30)));
        assert!(
            timed.starts_with("sudo -n -H -- timeout -k 10s 30s sh -c "),
            "{timed}"
        );
    }

    /// Runs the command line in a local shell, like sshd does with the login shell.
    fn run_local(command: &str, stdin: &[u8]) -> std::process::Output {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("HOME", "/h")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let bytes = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&bytes);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    #[test]
    fn script_on_stdin_runs_and_leaves_the_rest_of_stdin_to_the_script() {
        let script = r#"printf '%s|' "it's" "$HOME" `echo x`; IFS= read -r first; printf '%s|' "$first"; wc -c"#;
        let input = b"line one\n\0\x01\xffbinary\n";
        let out = run_local(
            &command_line("root", false, None),
            &frame(script, Some(input)),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "it's|/h|x|line one|10");
    }

    #[test]
    fn command_line_is_the_same_for_every_script() {
        let a = command_line("u", true, None);
        assert_eq!(a, command_line("u", true, None));
        assert!(!a.contains("secret"));
        assert!(frame("echo secret", None).ends_with(b"echo secret"));
    }

    #[test]
    fn truncated_script_is_refused_not_run() {
        let mut framed = frame("touch /nonexistent/should-not-run; echo ran", None);
        framed.truncate(framed.len() - 4);
        let out = run_local(&command_line("root", false, None), &framed);
        assert_eq!(out.status.code(), Some(INCOMPLETE_SCRIPT_STATUS as i32));
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("did not arrive whole"));
    }

    #[test]
    fn script_larger_than_one_argument_may_be_runs() {
        // Linux refuses a single argv word above 128 KiB (E2BIG).
        let script = format!(": {}\necho done", "x".repeat(300 * 1024));
        let out = run_local(&command_line("root", false, None), &frame(&script, None));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    }

    #[test]
    fn marker_is_stripped_with_what_came_before_it() {
        let mut out = format!("motd noise\n{PRIVILEGED_MARKER}data\n").into_bytes();
        assert!(strip_privileged_marker(&mut out).is_some());
        assert_eq!(out, b"data\n");
        let mut missing = b"data\n".to_vec();
        assert!(strip_privileged_marker(&mut missing).is_none());
    }
}
