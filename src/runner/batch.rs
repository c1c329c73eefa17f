//! Many read-only scripts sent as one remote script, so a host's checks cost one round trip.
//! Each part runs in its own subshell between markers carrying a per-batch nonce, so a part's
//! output can never be mistaken for a marker. Each end marker carries the host's clock
//! (`date +%s%N`, one fork per part), so a part's elapsed time is the gap to the marker before
//! it, kept apart from the part's output.

use std::time::Duration;

use rand::Rng;

pub struct Batch {
    nonce: String,
    count: usize,
    script: String,
    /// Identical probes (ten `line` steps on one file) run once and share their output.
    seen: std::collections::HashMap<String, usize>,
    /// What parts pushed with input read, in order: the batch's stdin.
    input: Vec<u8>,
}

impl Batch {
    pub fn new() -> Batch {
        let nonce: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(12)
            .map(char::from)
            .collect();
        Batch {
            nonce,
            count: 0,
            script: String::new(),
            seen: std::collections::HashMap::new(),
            input: Vec::new(),
        }
        .with_start_stamp()
    }

    /// The clock before the first part: the first part's elapsed time is measured from here.
    fn with_start_stamp(mut self) -> Batch {
        self.script = format!(
            "printf '%s %s\\n' '__BS{n}_T0' \"$(date +%s%N 2>/dev/null)\"\n",
            n = self.nonce
        );
        self
    }

    /// Adds a part; returns its index for `parse`. A script already in the batch is not sent
    /// again: its index is returned.
    pub fn push(&mut self, script: &str) -> usize {
        if let Some(&i) = self.seen.get(script) {
            return i;
        }
        let i = self.count;
        self.seen.insert(script.to_string(), i);
        self.count += 1;
        // stdin from /dev/null: a part must not eat the next part's input or wait on a terminal.
        self.script.push_str(&format!(
            "printf '%s\\n' '__BS{n}_BEGIN_{i}'\n( {script}\n) </dev/null\n{END}",
            n = self.nonce,
            END = end_marker(&self.nonce, i)
        ));
        i
    }

    /// Adds a part that reads `input` on its stdin (a secret a guard checks, say): the bytes
    /// travel in the batch's stdin, never in the script, and the part takes exactly its own
    /// share (`dd bs=1` never reads ahead), so later parts are not affected. Never shared.
    pub fn push_with_input(&mut self, script: &str, input: &[u8]) -> usize {
        let i = self.count;
        self.count += 1;
        self.input.extend_from_slice(input);
        self.script.push_str(&format!(
            "printf '%s\\n' '__BS{n}_BEGIN_{i}'\ndd bs=1 count={len} 2>/dev/null | ( {script}\n)\n{END}",
            n = self.nonce,
            len = input.len(),
            END = end_marker(&self.nonce, i)
        ));
        i
    }

    /// The bytes to send as the batch's stdin (empty when no part reads input).
    pub fn input(&self) -> &[u8] {
        &self.input
    }

    /// Each part's elapsed time on the host's clock, from the end markers' stamps. `None` when
    /// the host's `date` has no `%N` or a marker is missing.
    pub fn elapsed(&self, stdout: &str) -> Vec<Option<Duration>> {
        // The stamp is the `field`th word after the marker (an end marker has the status first).
        let stamp = |marker: String, field: usize| -> Option<u128> {
            let at = stdout.find(&marker)? + marker.len();
            let line = stdout[at..].lines().next()?;
            line.split_whitespace().nth(field)?.parse().ok()
        };
        let mut previous = stamp(format!("__BS{}_T0 ", self.nonce), 0);
        (0..self.count)
            .map(|i| {
                let now = stamp(format!("\n__BS{}_END_{i} ", self.nonce), 1);
                let took = match (previous, now) {
                    (Some(a), Some(b)) if b >= a => {
                        Some(Duration::from_nanos(u64::try_from(b - a).ok()?))
                    }
                    _ => None,
                };
                previous = now;
                took
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn script(&self) -> &str {
        &self.script
    }

    /// Splits the batch's stdout into (exit status, stdout) per part. A part whose markers are
    /// missing (the script died) is `None`.
    pub fn parse(&self, stdout: &str) -> Vec<Option<(i32, String)>> {
        (0..self.count)
            .map(|i| {
                let begin = format!("__BS{}_BEGIN_{i}\n", self.nonce);
                let end = format!("\n__BS{}_END_{i} ", self.nonce);
                let start = stdout.find(&begin)? + begin.len();
                let stop = start + stdout[start..].find(&end)?;
                let after = &stdout[stop + end.len()..];
                let status = after.split_whitespace().next()?.parse().ok()?;
                Some((status, stdout[start..stop].to_string()))
            })
            .collect()
    }
}

/// A part's end marker: its exit status, then the host's clock in nanoseconds.
fn end_marker(nonce: &str, i: usize) -> String {
    format!(
        "__bs_status=$?\nprintf '\\n%s %s %s\\n' '__BS{nonce}_END_{i}' \"$__bs_status\" \"$(date +%s%N 2>/dev/null)\"\n"
    )
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_sh(script: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn parts_keep_their_own_output_and_status_in_a_real_shell() {
        let mut b = Batch::new();
        b.push("echo one; echo two");
        b.push("printf 'no newline'; exit 3");
        b.push("cat; echo after-cat");
        b.push("true");
        let parsed = b.parse(&run_sh(b.script()));
        assert_eq!(parsed[0], Some((0, "one\ntwo\n".to_string())));
        assert_eq!(parsed[1], Some((3, "no newline".to_string())));
        assert_eq!(parsed[2], Some((0, "after-cat\n".to_string())));
        assert_eq!(parsed[3], Some((0, String::new())));
    }

    #[test]
    fn parts_with_input_read_exactly_their_own_share() {
        let mut b = Batch::new();
        b.push("cat; echo plain");
        b.push_with_input("cat", b"first secret");
        b.push("echo between");
        b.push_with_input("read -r line; echo \"got $line\"", b"second\n");
        assert_eq!(b.input(), b"first secretsecond\n");
        assert!(
            !b.script().contains("secret"),
            "input stays out of the script"
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(b.script())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b.input()).unwrap();
        let out = child.wait_with_output().unwrap();
        let parsed = b.parse(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(parsed[0], Some((0, "plain\n".to_string())));
        assert_eq!(parsed[1], Some((0, "first secret".to_string())));
        assert_eq!(parsed[2], Some((0, "between\n".to_string())));
        assert_eq!(parsed[3], Some((0, "got second\n".to_string())));
    }

    #[test]
    fn identical_parts_run_once_and_share_their_output() {
        let mut b = Batch::new();
        let first = b.push("echo x >> counter; cat counter");
        b.push("true");
        let again = b.push("echo x >> counter; cat counter");
        assert_eq!(first, again);
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(b.script())
            .current_dir(dir.path())
            .output()
            .unwrap();
        let parsed = b.parse(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(
            parsed[again],
            Some((0, "x\n".to_string())),
            "the probe ran once"
        );
    }

    #[test]
    fn output_that_looks_like_a_marker_without_the_nonce_is_just_output() {
        let mut b = Batch::new();
        b.push("echo '__BS_END_0 0'");
        let parsed = b.parse(&run_sh(b.script()));
        assert_eq!(parsed[0], Some((0, "__BS_END_0 0\n".to_string())));
    }

    #[test]
    fn each_part_reports_its_own_elapsed_time_apart_from_its_output() {
        let mut b = Batch::new();
        b.push("echo quick");
        // A part that really takes time: the measured gap must cover it, the others must not.
        b.push("sleep 0.3; echo slow");
        b.push("echo quick again");
        let out = run_sh(b.script());
        let parsed = b.parse(&out);
        assert_eq!(parsed[1], Some((0, "slow\n".to_string())));
        let took = b.elapsed(&out);
        assert_eq!(took.len(), 3);
        let slow = took[1].expect("GNU date gives nanoseconds");
        assert!(slow >= Duration::from_millis(300), "{slow:?}");
        assert!(took[0].unwrap() < Duration::from_millis(300), "{took:?}");
        assert!(took[2].unwrap() < Duration::from_millis(300), "{took:?}");
    }

    #[test]
    fn a_clock_without_nanoseconds_gives_no_elapsed_time_not_a_wrong_one() {
        let mut b = Batch::new();
        b.push("echo a");
        let out = run_sh(&b.script().replace("+%s%N", "+%s%Q"));
        assert_eq!(b.parse(&out)[0], Some((0, "a\n".to_string())));
        assert_eq!(b.elapsed(&out), vec![None]);
    }

    #[test]
    fn a_truncated_run_yields_none_for_missing_parts() {
        let mut b = Batch::new();
        b.push("echo a");
        b.push("echo b");
        let out = run_sh(b.script());
        let cut = &out[..out.find("b\n").unwrap()];
        let parsed = b.parse(cut);
        assert!(parsed[0].is_some());
        assert!(parsed[1].is_none());
    }
}
