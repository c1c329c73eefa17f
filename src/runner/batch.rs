//! Many read-only scripts sent as one remote script, so a host's checks cost one round trip.
//! Each part runs in its own subshell between markers carrying a per-batch nonce, so a part's
//! output can never be mistaken for a marker. Each end marker carries the host's clock (read
//! from /proc/uptime by the shell's `read`, no fork), kept apart from the part's output.
//!
//! A concurrent batch (`Batch::concurrent`) runs up to N parts at once, each writing to its own
//! temporary file, and prints the files in order when all are done: a host's probe time is
//! near its slowest probe instead of the sum. Parts that read input still run one after the
//! other, in order, so each takes exactly its own share of the batch's stdin.

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
    /// At most this many parts at once; `None`: one after the other.
    concurrency: Option<usize>,
}

/// Reads the host's clock (seconds since boot, 1/100 s) into `var` without a fork; empty when
/// the host has no /proc/uptime.
fn read_clock(var: &str) -> String {
    format!("read {var} __bs_idle 2>/dev/null </proc/uptime || {var}=\n")
}

impl Batch {
    /// Runs the batch in a local `sh` in `dir`, its input on stdin, and parses the answer: how
    /// the tests of the batch and of modules whose probes read stdin run it without SSH.
    #[cfg(test)]
    pub fn run_locally(&self, dir: &std::path::Path) -> Vec<Option<(i32, String)>> {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(self.script())
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(self.input()).unwrap();
        let out = child.wait_with_output().unwrap();
        self.parse(&String::from_utf8(out.stdout).unwrap())
    }

    pub fn new() -> Batch {
        let nonce: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(12)
            .map(char::from)
            .collect();
        let mut b = Batch {
            nonce,
            count: 0,
            script: String::new(),
            seen: std::collections::HashMap::new(),
            input: Vec::new(),
            concurrency: None,
        };
        // The clock before the first part: the first part's elapsed time is measured from here.
        b.script = format!(
            "{}printf '%s %s\\n' '__BS{n}_T0' \"$__bs_t\"\n",
            read_clock("__bs_t"),
            n = b.nonce
        );
        b
    }

    /// A batch whose parts run up to `limit` at a time (read-only probes only: they must not
    /// depend on each other).
    pub fn concurrent(limit: usize) -> Batch {
        let mut b = Batch::new();
        let limit = limit.max(1);
        b.concurrency = Some(limit);
        // A FIFO holding `limit` tokens: a part takes one to start and gives it back when done.
        b.script = format!(
            "__bs_d=$(mktemp -d) || exit 1\n\
             mkfifo \"$__bs_d/slots\" && exec 9<>\"$__bs_d/slots\" || exit 1\n\
             __bs_k=0; while [ \"$__bs_k\" -lt {limit} ]; do echo >&9; __bs_k=$((__bs_k + 1)); done\n"
        );
        b
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
        let body = format!("( {script}\n) </dev/null 9>&-\n");
        self.add_part(i, &body, false);
        i
    }

    /// Adds a part that reads `input` on its stdin (a secret a guard checks, say): the bytes
    /// travel in the batch's stdin, never in the script, and the part takes exactly its own
    /// share (`dd bs=1` never reads ahead), so later parts are not affected. Never shared.
    pub fn push_with_input(&mut self, script: &str, input: &[u8]) -> usize {
        let i = self.count;
        self.count += 1;
        self.input.extend_from_slice(input);
        let body = format!(
            "dd bs=1 count={len} 2>/dev/null | ( {script}\n) 9>&-\n",
            len = input.len()
        );
        self.add_part(i, &body, true);
        i
    }

    fn add_part(&mut self, i: usize, body: &str, reads_input: bool) {
        let n = &self.nonce;
        let begin = format!("printf '%s\\n' '__BS{n}_BEGIN_{i}'\n");
        let end = format!(
            "__bs_status=$?\n{}printf '\\n%s %s %s %s\\n' '__BS{n}_END_{i}' \"$__bs_status\" \"$__bs_t\" \"$__bs_t0\"\n",
            read_clock("__bs_t")
        );
        match self.concurrency {
            None => {
                // Sequential: the start is the previous part's end stamp.
                self.script
                    .push_str(&format!("__bs_t0=\n{begin}{body}{end}"));
            }
            Some(_) => {
                let timed = format!("{}{begin}{body}{end}", read_clock("__bs_t0"));
                let file = format!("\"$__bs_d/p{i:08}\"");
                if reads_input {
                    // In the foreground, in order: the batch's stdin is consumed part by part.
                    self.script.push_str(&format!("{{\n{timed}}} >{file}\n"));
                } else {
                    self.script.push_str(&format!(
                        "read __bs_slot <&9\n(\n{timed}echo >&9\n) >{file} &\n"
                    ));
                }
            }
        }
    }

    /// The bytes to send as the batch's stdin (empty when no part reads input).
    pub fn input(&self) -> &[u8] {
        &self.input
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn script(&self) -> String {
        match self.concurrency {
            None => self.script.clone(),
            // All parts done, their outputs in order (zero-padded names sort as numbers), one `cat`.
            Some(_) => format!(
                "{}wait\nexec 9>&-\ncat \"$__bs_d\"/p* 2>/dev/null\nrm -rf \"$__bs_d\"\n",
                self.script
            ),
        }
    }

    /// Each part's elapsed time on the host's clock, from its end marker's stamps (or, with no
    /// start stamp of its own, from the previous part's end). `None` when the host has no
    /// clock to read or a marker is missing.
    pub fn elapsed(&self, stdout: &str) -> Vec<Option<Duration>> {
        // The words after a marker, up to the end of its line.
        let words = |marker: String| -> Option<Vec<&str>> {
            let at = stdout.find(&marker)? + marker.len();
            Some(stdout[at..].lines().next()?.split_whitespace().collect())
        };
        let seconds = |w: Option<&&str>| -> Option<f64> { w?.parse().ok() };
        let mut previous =
            words(format!("__BS{}_T0 ", self.nonce)).and_then(|w| seconds(w.first()));
        (0..self.count)
            .map(|i| {
                let w = words(format!("\n__BS{}_END_{i} ", self.nonce));
                let end = w.as_ref().and_then(|w| seconds(w.get(1)));
                let start = w.as_ref().and_then(|w| seconds(w.get(2))).or(previous);
                previous = end;
                match (start, end) {
                    (Some(a), Some(b)) if b >= a => Some(Duration::from_secs_f64(b - a)),
                    _ => None,
                }
            })
            .collect()
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

    /// Both kinds of batch: the same tests hold for each.
    fn both() -> [Batch; 2] {
        [Batch::new(), Batch::concurrent(2)]
    }

    #[test]
    fn parts_keep_their_own_output_and_status_in_a_real_shell() {
        for mut b in both() {
            b.push("echo one; echo two");
            b.push("printf 'no newline'; exit 3");
            b.push("cat; echo after-cat");
            b.push("true");
            let parsed = b.parse(&run_sh(&b.script()));
            assert_eq!(parsed[0], Some((0, "one\ntwo\n".to_string())));
            assert_eq!(parsed[1], Some((3, "no newline".to_string())));
            assert_eq!(parsed[2], Some((0, "after-cat\n".to_string())));
            assert_eq!(parsed[3], Some((0, String::new())));
        }
    }

    #[test]
    fn parts_with_input_read_exactly_their_own_share() {
        for mut b in both() {
            b.push("cat; echo plain");
            b.push_with_input("cat", b"first secret");
            b.push("echo between");
            b.push_with_input("read -r line; echo \"got $line\"", b"second\n");
            assert_eq!(b.input(), b"first secretsecond\n");
            assert!(
                !b.script().contains("secret"),
                "input stays out of the script"
            );
            let parsed = b.run_locally(std::path::Path::new("."));
            assert_eq!(parsed[0], Some((0, "plain\n".to_string())));
            assert_eq!(parsed[1], Some((0, "first secret".to_string())));
            assert_eq!(parsed[2], Some((0, "between\n".to_string())));
            assert_eq!(parsed[3], Some((0, "got second\n".to_string())));
        }
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
        let parsed = b.parse(&run_sh(&b.script()));
        assert_eq!(parsed[0], Some((0, "__BS_END_0 0\n".to_string())));
    }

    #[test]
    fn each_part_reports_its_own_elapsed_time_apart_from_its_output() {
        for mut b in both() {
            b.push("echo quick");
            // A part that really takes time: the measured gap must cover it, the others must not.
            b.push("sleep 0.3; echo slow");
            b.push("echo quick again");
            let out = run_sh(&b.script());
            let parsed = b.parse(&out);
            assert_eq!(parsed[1], Some((0, "slow\n".to_string())));
            let took = b.elapsed(&out);
            assert_eq!(took.len(), 3);
            let slow = took[1].expect("Linux has /proc/uptime");
            // The clock ticks in 1/100 s: a stamp may lose up to 10 ms.
            assert!(slow >= Duration::from_millis(290), "{slow:?}");
            assert!(took[0].unwrap() < Duration::from_millis(290), "{took:?}");
            assert!(took[2].unwrap() < Duration::from_millis(290), "{took:?}");
        }
    }

    #[test]
    fn a_host_without_a_clock_gives_no_elapsed_time_not_a_wrong_one() {
        for mut b in both() {
            b.push("echo a");
            let out = run_sh(&b.script().replace("/proc/uptime", "/nonexistent/uptime"));
            assert_eq!(b.parse(&out)[0], Some((0, "a\n".to_string())));
            assert_eq!(b.elapsed(&out), vec![None]);
        }
    }

    /// A part that waits (up to 5 s) for a file the next part creates: it sees it only when
    /// both run at once.
    #[test]
    fn concurrent_parts_run_at_the_same_time_and_print_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let run = |mut b: Batch| {
            let first = b.push(
                "i=0; while [ ! -e second ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
                 [ -e second ] && echo saw-second",
            );
            let second = b.push("touch second; echo made");
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(b.script())
                .current_dir(dir.path())
                .output()
                .unwrap();
            std::fs::remove_file(dir.path().join("second")).unwrap();
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert!(
                stdout.find("BEGIN_0").unwrap() < stdout.find("BEGIN_1").unwrap(),
                "printed in order: {stdout}"
            );
            let parsed = b.parse(&stdout);
            (parsed[first].clone(), parsed[second].clone())
        };
        let (first, second) = run(Batch::concurrent(4));
        assert_eq!(first, Some((0, "saw-second\n".to_string())));
        assert_eq!(second, Some((0, "made\n".to_string())));
        let (first, _) = run(Batch::new());
        assert_eq!(
            first,
            Some((1, String::new())),
            "one after the other: never seen"
        );
    }

    /// Three parts each print how many parts had finished when it started, then wait (up to
    /// 2 s) to see all three started. With room for two at a time the third starts only after
    /// one finished; with room for three none had.
    #[test]
    fn concurrent_parts_never_exceed_the_limit() {
        let finished_before_start = |limit: usize| {
            let dir = tempfile::tempdir().unwrap();
            let mut b = Batch::concurrent(limit);
            for name in ["a", "b", "c"] {
                b.push(&format!(
                    "n=$(ls | grep -c '^done_'); touch {name}; i=0; \
                     while [ $(ls a b c 2>/dev/null | wc -l) -lt 3 ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done; \
                     touch done_{name}; echo $n"
                ));
            }
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(b.script())
                .current_dir(dir.path())
                .output()
                .unwrap();
            let parsed = b.parse(&String::from_utf8(out.stdout).unwrap());
            parsed
                .iter()
                .map(|p| p.as_ref().unwrap().1.trim().parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        };
        let two = finished_before_start(2);
        assert_eq!(&two[..2], &[0, 0], "{two:?}");
        assert!(two[2] >= 1, "the third waited for a slot: {two:?}");
        assert_eq!(finished_before_start(3), vec![0, 0, 0]);
    }

    #[test]
    fn a_truncated_run_yields_none_for_missing_parts() {
        let mut b = Batch::new();
        b.push("echo a");
        b.push("echo b");
        let out = run_sh(&b.script());
        let cut = &out[..out.find("b\n").unwrap()];
        let parsed = b.parse(cut);
        assert!(parsed[0].is_some());
        assert!(parsed[1].is_none());
    }
}
