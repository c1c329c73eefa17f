//! Shell quoting and privilege wrapping, in one place for the whole program.

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

/// The command line sent over SSH for `script`: run by `sh`, as root through `sudo -n` when
/// `become_root` is set and the login user is not root. A fixed C locale keeps probe output
/// parseable whatever the host's language is.
pub fn wrap(script: &str, login_user: &str, become_root: bool) -> String {
    let inner = format!("export LC_ALL=C; {script}");
    if become_root && login_user != "root" {
        // -n: never prompt (a prompt would hang the run); -H: root's HOME for tools like psql.
        format!("sudo -n -H -- sh -c {}", quote(&inner))
    } else {
        format!("sh -c {}", quote(&inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(wrap("id -u", "vagrant", true).starts_with("sudo -n -H -- sh -c "));
        assert!(wrap("id -u", "root", true).starts_with("sh -c "));
        assert!(wrap("id -u", "vagrant", false).starts_with("sh -c "));
    }

    #[test]
    fn wrapped_script_survives_a_real_shell() {
        let script = r#"printf '%s|' "it's" "$HOME" `echo x`"#;
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(wrap(script, "root", false))
            .env("HOME", "/h")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's|/h|x|");
    }
}
