//! The remote side of `Session::upload`: one sh script, run as the upload's command, reading
//! the content from stdin.
//!
//! Every exit path leaves nothing behind. The script keeps running when the connection is cut
//! (SIGPIPE ignored, so a write to the dead connection fails instead of killing the shell before
//! its EXIT trap; HUP/INT/TERM end through the trap). What no trap survives (SIGKILL, a crash, a
//! reboot) is collected by the next upload beside the same file: temp files carry the PID of the
//! shell that made them and are removed once that shell is gone. A backup is copied to a temp
//! file and renamed, so a full disk never leaves a truncated `.bak`.

use super::shell::quote;
use crate::modules::FileAttrs;

/// Temp files are `<dir>/.bootstrap-upload.<dest name>.<pid>.<random>`.
pub const TEMP_PREFIX: &str = ".bootstrap-upload.";

pub fn script(
    dest: &str,
    sha256: &str,
    attrs: &FileAttrs,
    validate: Option<&str>,
    backup: bool,
) -> String {
    let mut s = String::new();
    s.push_str("set -e\n");
    s.push_str("trap '' PIPE\ntrap 'exit 129' HUP\ntrap 'exit 130' INT\ntrap 'exit 143' TERM\n");
    s.push_str(&format!("dest={}\n", quote(dest)));
    s.push_str("dir=$(dirname -- \"$dest\")\n");
    s.push_str(&format!(
        "prefix=\"$dir/{TEMP_PREFIX}$(basename -- \"$dest\").\"\n"
    ));
    // Leftovers of earlier uploads to this file whose shell is gone; quoted parts of a glob
    // are literal, so a name with `*` or `[` in it matches only itself.
    s.push_str(concat!(
        "for old in \"$prefix\"*; do\n",
        "  [ -e \"$old\" ] || continue\n",
        "  pid=${old#\"$prefix\"}; pid=${pid%%.*}\n",
        "  case $pid in ''|*[!0-9]*) continue ;; esac\n",
        // Gone, or a zombie nobody reaped yet: its shell will never clean up.
        "  state=$(cat \"/proc/$pid/stat\" 2>/dev/null || true); state=${state##*) }\n",
        "  case $state in ''|Z*|X*) rm -f -- \"$old\" ;; esac\n",
        "done\n",
    ));
    s.push_str("bak=\n");
    s.push_str("trap 'rm -f -- \"$tmp\" ${bak:+\"$bak\"}' EXIT\n");
    s.push_str("tmp=$(umask 077 && mktemp \"$prefix$$.XXXXXXXX\")\n");
    s.push_str("cat > \"$tmp\"\n");
    s.push_str("sum=$(sha256sum < \"$tmp\")\n");
    s.push_str(&format!(
        "if [ \"${{sum%% *}}\" != {sha256} ]; then echo \"checksum mismatch after transfer to $dest\" >&2; exit 1; fi\n"
    ));
    match &attrs.mode {
        Some(mode) => s.push_str(&format!("chmod {} \"$tmp\"\n", quote(mode))),
        // No mode asked: keep the existing file's, else the usual 0644 rather than mktemp's 0600.
        None => s.push_str(
            "if [ -e \"$dest\" ]; then chmod --reference=\"$dest\" \"$tmp\"; else chmod 0644 \"$tmp\"; fi\n",
        ),
    }
    match owner_spec(attrs) {
        Some(spec) => s.push_str(&format!("chown {} \"$tmp\"\n", quote(&spec))),
        // Best effort: keeping the old owner may be impossible without root.
        None => s.push_str(
            "if [ -e \"$dest\" ]; then chown --reference=\"$dest\" \"$tmp\" 2>/dev/null || true; fi\n",
        ),
    }
    if let Some(validate) = validate {
        let command = validate.replace("%s", "\"$tmp\"");
        s.push_str(&format!(
            "if ! {{ {command}\n}} >&2; then echo \"validation failed for $dest: \"{} >&2; exit 1; fi\n",
            quote(validate)
        ));
    }
    if backup {
        s.push_str(concat!(
            "if [ -e \"$dest\" ]; then\n",
            "  bak=$(umask 077 && mktemp \"$prefix$$.bak.XXXXXXXX\")\n",
            "  cp -p -- \"$dest\" \"$bak\"\n",
            "  mv -f -- \"$bak\" \"$dest.$(date +%s).bak\"\n",
            "  bak=\n",
            "fi\n",
        ));
    }
    s.push_str("mv -f -- \"$tmp\" \"$dest\"\n");
    s.push_str("trap - EXIT\n");
    s
}

fn owner_spec(attrs: &FileAttrs) -> Option<String> {
    match (&attrs.owner, &attrs.group) {
        (Some(o), Some(g)) => Some(format!("{o}:{g}")),
        (Some(o), None) => Some(o.clone()),
        (None, Some(g)) => Some(format!(":{g}")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;
    use std::path::Path;

    #[test]
    fn owner_spec_covers_owner_and_group() {
        let attrs = |o: Option<&str>, g: Option<&str>| FileAttrs {
            mode: None,
            owner: o.map(String::from),
            group: g.map(String::from),
        };
        assert_eq!(owner_spec(&attrs(Some("a"), Some("b"))).unwrap(), "a:b");
        assert_eq!(owner_spec(&attrs(None, Some("b"))).unwrap(), ":b");
        assert_eq!(owner_spec(&attrs(None, None)), None);
    }

    /// The upload script is plain sh; run it locally to check its logic without SSH.
    fn run_upload(dest: &Path, content: &[u8], sha: &str, validate: Option<&str>) -> bool {
        use std::io::Write;
        let attrs = FileAttrs {
            mode: Some("0640".into()),
            owner: None,
            group: None,
        };
        let script = script(dest.to_str().unwrap(), sha, &attrs, validate, true);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(content).unwrap();
        child.wait().unwrap().success()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn refuses_a_wrong_checksum_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.conf");
        assert!(!run_upload(&dest, b"data", &"0".repeat(64), None));
        assert!(names(dir.path()).is_empty());
        let sha = hex::encode(sha2::Sha256::digest(b"data"));
        assert!(run_upload(&dest, b"data", &sha, Some("grep -q data %s")));
        assert_eq!(std::fs::read(&dest).unwrap(), b"data");
    }

    #[test]
    fn leftovers_of_dead_shells_go_and_those_of_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a[1].conf");
        // PID 1 is alive; a PID above pid_max never is.
        let live = format!("{TEMP_PREFIX}a[1].conf.1.abcdefgh");
        let dead = format!("{TEMP_PREFIX}a[1].conf.99999999.abcdefgh");
        let dead_bak = format!("{TEMP_PREFIX}a[1].conf.99999999.bak.abcdefgh");
        let other_file = format!("{TEMP_PREFIX}b.conf.99999999.abcdefgh");
        for name in [&live, &dead, &dead_bak, &other_file] {
            std::fs::write(dir.path().join(name), "partial").unwrap();
        }
        let sha = hex::encode(sha2::Sha256::digest(b"new"));
        assert!(run_upload(&dest, b"new", &sha, None));
        let mut expected = vec!["a[1].conf".to_string(), live, other_file];
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }
}
