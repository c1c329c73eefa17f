//! `wait_for`: waits until a TCP port accepts connections, a URL answers with a status, or a
//! command succeeds.
//!
//! Arguments (exactly one of `port`, `url`, `cmd`):
//! - `port` with `host` (default `"127.0.0.1"`): a TCP connect succeeds (checked with `nc -z`,
//!   else bash's `/dev/tcp`, else python3; as found on the host).
//! - `url` with `status` (default `200`): an HTTP GET answers with that status (curl, else
//!   wget).
//! - `cmd`: a shell command exits 0.
//! - `timeout`: how long to wait, `"60s"` (default), `"5m"`, `"1h"` or an integer of seconds.
//! - `interval`: pause between tries, default `"2s"`.
//!
//! ```toml
//! [[steps]]
//! name = "PostgreSQL accepts connections"
//! wait_for = { port = 5432, timeout = "60s" }
//!
//! [[steps]]
//! name = "Elasticsearch answers"
//! wait_for = { url = "http://127.0.0.1:9200/", status = 401, timeout = "3m" }
//! ```
//!
//! The probe tries once. When that succeeds, nothing is planned (ok). Otherwise one change is
//! planned, "wait for ... (up to 60s)", whose script retries until success and fails with a
//! clear message at the timeout. A wait is not a change to the host, but it is reported as one
//! because a plan is the only way a module acts; in check mode it is shown and not waited on.
use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationArg {
    Seconds(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitForArgs {
    port: Option<i64>,
    host: Option<String>,
    url: Option<String>,
    status: Option<i64>,
    cmd: Option<String>,
    timeout: Option<DurationArg>,
    interval: Option<DurationArg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Port { host: String, port: u16 },
    Url { url: String, status: u16 },
    Cmd(String),
}

#[derive(Debug)]
pub struct WaitFor {
    target: Target,
    timeout_secs: u64,
    interval_secs: u64,
}

/// Exit status of the check when the host has no tool to perform it.
const NO_TOOL: i32 = 127;

/// Parses "60s", "5m", "1h", "90" or an integer into seconds (zero is refused here).
fn parse_duration(arg: &DurationArg) -> Option<u64> {
    let value = match arg {
        DurationArg::Seconds(n) => toml::Value::Integer(*n),
        DurationArg::Text(t) => toml::Value::String(t.clone()),
    };
    super::parse_duration(&value)
        .map(|d| d.as_secs())
        .filter(|s| *s > 0)
}

impl WaitFor {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: WaitForArgs = parse_args("wait_for", args, ctx)?;
        let err =
            |msg: String, hint: &str| Err(InputError::new(ctx.playbook, ctx.line, msg).hint(hint));
        let target = match (a.port, &a.url, &a.cmd) {
            (Some(port), None, None) => {
                if a.status.is_some() {
                    return err(
                        "`wait_for`: status goes with url, not port".into(),
                        "remove status",
                    );
                }
                let Ok(port) = u16::try_from(port).map_err(|_| ()).and_then(|p| {
                    if p == 0 {
                        Err(())
                    } else {
                        Ok(p)
                    }
                }) else {
                    return err(
                        format!("`wait_for`: port {port} is not a TCP port"),
                        "ports are 1 to 65535",
                    );
                };
                let host = a.host.clone().unwrap_or_else(|| "127.0.0.1".into());
                if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                    return err(
                        format!("`wait_for`: host {host:?} is not a host name or address"),
                        "e.g. host = \"10.0.0.5\"",
                    );
                }
                Target::Port { host, port }
            }
            (None, Some(url), None) => {
                if a.host.is_some() {
                    return err(
                        "`wait_for`: host goes with port, not url".into(),
                        "put the host in the url",
                    );
                }
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.contains(char::is_whitespace)
                {
                    return err(
                        format!("`wait_for`: url {url:?} is not an http(s) URL"),
                        "e.g. url = \"http://127.0.0.1:9200/\"",
                    );
                }
                let status = a.status.unwrap_or(200);
                let Some(status) = u16::try_from(status)
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                else {
                    return err(
                        format!("`wait_for`: status {status} is not an HTTP status"),
                        "e.g. status = 200",
                    );
                };
                Target::Url {
                    url: url.clone(),
                    status,
                }
            }
            (None, None, Some(cmd)) => {
                if a.host.is_some() || a.status.is_some() {
                    return err(
                        "`wait_for`: host and status do not go with cmd".into(),
                        "remove them",
                    );
                }
                if cmd.trim().is_empty() {
                    return err(
                        "`wait_for`: cmd is empty".into(),
                        "give a command that exits 0 when ready",
                    );
                }
                Target::Cmd(cmd.clone())
            }
            _ => return err(
                "`wait_for` needs exactly one of port, url or cmd".into(),
                "e.g. wait_for = { port = 5432 } or { url = \"http://...\" } or { cmd = \"...\" }",
            ),
        };
        let duration = |arg: &Option<DurationArg>, default: u64, key: &str| match arg {
            None => Ok(default),
            Some(d) => parse_duration(d).ok_or_else(|| {
                InputError::new(
                    ctx.playbook,
                    ctx.line,
                    format!("`wait_for`: {key} {d:?} is not a duration"),
                )
                .hint(format!(
                    "write {key} = \"60s\", \"5m\", \"1h\" or a number of seconds"
                ))
            }),
        };
        Ok(WaitFor {
            target,
            timeout_secs: duration(&a.timeout, 60, "timeout")?,
            interval_secs: duration(&a.interval, 2, "interval")?,
        })
    }

    fn what(&self) -> String {
        match &self.target {
            Target::Port { host, port } => format!("{host}:{port}"),
            Target::Url { url, status } => format!("{url} to answer {status}"),
            Target::Cmd(cmd) => format!("`{}` to succeed", cmd.lines().next().unwrap_or("").trim()),
        }
    }

    /// A `check` shell function: returns 0 when ready, NO_TOOL when it cannot check at all.
    fn check_fn(&self) -> String {
        match &self.target {
            Target::Port { host, port } => {
                let (h, p) = (quote(host), port);
                format!(
                    concat!(
                        "check() {{\n",
                        "  if command -v nc >/dev/null 2>&1; then timeout 5 nc -z -w 3 {h} {p} >/dev/null 2>&1\n",
                        "  elif command -v bash >/dev/null 2>&1; then timeout 5 bash -c 'exec 3<>\"/dev/tcp/$1/$2\"' _ {h} {p} >/dev/null 2>&1\n",
                        "  elif command -v python3 >/dev/null 2>&1; then timeout 5 python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3).close()' {h} {p} >/dev/null 2>&1\n",
                        "  else echo 'wait_for: the host has none of nc, bash, python3 to test a TCP port' >&2; return {nt}; fi\n",
                        "}}\n"
                    ),
                    h = h,
                    p = p,
                    nt = NO_TOOL
                )
            }
            Target::Url { url, status } => format!(
                concat!(
                    "check() {{\n",
                    "  if command -v curl >/dev/null 2>&1; then code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 -- {u})\n",
                    "  elif command -v wget >/dev/null 2>&1; then code=$(wget -q -S -O /dev/null -T 5 -t 1 -- {u} 2>&1 | awk '/^ *HTTP\\//{{c=$2}} END{{print c}}')\n",
                    "  else echo 'wait_for: the host has neither curl nor wget to test a URL' >&2; return {nt}; fi\n",
                    "  [ \"$code\" = {s} ]\n",
                    "}}\n"
                ),
                u = quote(url),
                s = status,
                nt = NO_TOOL
            ),
            Target::Cmd(cmd) => format!(
                "check() {{ timeout {} sh -c {} </dev/null >/dev/null 2>&1; }}\n",
                self.timeout_secs.min(30),
                quote(cmd)
            ),
        }
    }

    /// The loop run as the change: retries until ready, fails with a message at the timeout.
    fn wait_script(&self) -> String {
        let no_tool = if matches!(self.target, Target::Cmd(_)) {
            String::new()
        } else {
            format!("  [ $r -eq {NO_TOOL} ] && exit 1\n")
        };
        format!(
            concat!(
                "(\n{check}",
                "deadline=$(( $(date +%s) + {t} ))\n",
                "while :; do\n",
                "  check; r=$?\n",
                "  [ $r -eq 0 ] && break\n",
                "{no_tool}",
                "  if [ \"$(date +%s)\" -ge \"$deadline\" ]; then echo {msg} >&2; exit 1; fi\n",
                "  sleep {i}\n",
                "done\n)"
            ),
            check = self.check_fn(),
            t = self.timeout_secs,
            no_tool = no_tool,
            msg = quote(&format!(
                "timed out after {}s waiting for {}",
                self.timeout_secs,
                self.what()
            )),
            i = self.interval_secs,
        )
    }
}

impl Module for WaitFor {
    fn expected_duration(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(
            self.timeout_secs + self.interval_secs,
        ))
    }

    fn probe(&self, _opts: ProbeOptions) -> String {
        format!("(\n{}check; echo \"ready=$?\"\n)\n", self.check_fn())
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let kv = probe_util::key_values(&probe.stdout);
        let ready: i32 = kv
            .get("ready")
            .and_then(|r| r.trim().parse().ok())
            .ok_or_else(|| PlanError(format!("probe did not try {}", self.what())))?;
        if ready == 0 {
            return Ok(vec![]);
        }
        if ready == NO_TOOL && !matches!(self.target, Target::Cmd(_)) {
            let need = match self.target {
                Target::Url { .. } => "curl or wget",
                _ => "nc, bash or python3",
            };
            return Err(PlanError(format!(
                "cannot wait for {}: the host has no {need}",
                self.what()
            )));
        }
        Ok(vec![Change::new(
            format!("wait for {} (up to {}s)", self.what(), self.timeout_secs),
            Action::Shell {
                script: self.wait_script(),
                stdin: None,
            },
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::testing::*;
    use super::*;

    fn wait_for(args: &str) -> Result<WaitFor, InputError> {
        build_simple(args, WaitFor::from_args)
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(&DurationArg::Text(s.into()));
        assert_eq!(d("60s"), Some(60));
        assert_eq!(d("5m"), Some(300));
        assert_eq!(d("1h"), Some(3600));
        assert_eq!(d("90"), Some(90));
        assert_eq!(d("0s"), None);
        assert_eq!(d("soon"), None);
        assert_eq!(d("5d"), None);
        assert_eq!(parse_duration(&DurationArg::Seconds(30)), Some(30));
        assert_eq!(parse_duration(&DurationArg::Seconds(-1)), None);
        let w = wait_for("port = 5432\ntimeout = 120\ninterval = \"1s\"").unwrap();
        assert_eq!((w.timeout_secs, w.interval_secs), (120, 1));
    }

    #[test]
    fn plan_from_probe_data() {
        let w = wait_for("port = 5432").unwrap();
        assert!(w.plan(&probe("ready=0\n")).unwrap().is_empty());
        let changes = w.plan(&probe("ready=1\n")).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].summary, "wait for 127.0.0.1:5432 (up to 60s)");
        assert!(w
            .plan(&probe("ready=127\n"))
            .unwrap_err()
            .0
            .contains("nc, bash or python3"));
        assert!(w.plan(&probe("")).is_err());
        let c = wait_for("cmd = \"pg_isready\"").unwrap();
        assert_eq!(
            c.plan(&probe("ready=127\n")).unwrap().len(),
            1,
            "a cmd not found yet is just not ready"
        );
    }

    #[test]
    fn bad_arguments() {
        for (args, needle) in [
            ("timeout = \"5s\"", "exactly one"),
            ("port = 1\nurl = \"http://x\"", "exactly one"),
            ("port = 70000", "not a TCP port"),
            ("port = 1\nstatus = 200", "status goes with url"),
            ("url = \"ftp://x\"", "not an http"),
            ("url = \"http://x\"\nstatus = 42", "not an HTTP status"),
            ("url = \"http://x\"\nhost = \"a\"", "host goes with port"),
            ("cmd = \"true\"\ntimeout = \"forever\"", "not a duration"),
            ("cmd = \"true\"\nretries = 3", "unknown field"),
        ] {
            let e = wait_for(args).unwrap_err();
            assert!(e.message.contains(needle), "{args}: {}", e.message);
        }
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[test]
    fn real_probe_and_wait_against_a_local_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let w = wait_for(&format!("port = {port}\ntimeout = 5\ninterval = 1")).unwrap();
        assert!(w
            .plan(&run_probe(&w.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
        drop(listener);

        let w = wait_for(&format!(
            "port = {}\ntimeout = 1\ninterval = 1",
            closed_port()
        ))
        .unwrap();
        let changes = w
            .plan(&run_probe(&w.probe(ProbeOptions::default())))
            .unwrap();
        let Action::Shell { script, .. } = &changes[0].action else {
            panic!()
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains("timed out after 1s waiting for 127.0.0.1:"));
    }

    #[test]
    fn real_cmd_wait_succeeds_once_ready() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("flag");
        let w = wait_for(&format!(
            "cmd = {:?}\ntimeout = 10\ninterval = 1",
            format!("test -e {}", quote(flag.to_str().unwrap()))
        ))
        .unwrap();
        let changes = w
            .plan(&run_probe(&w.probe(ProbeOptions::default())))
            .unwrap();
        let Action::Shell { script, .. } = &changes[0].action else {
            panic!()
        };
        // The file appears while the loop is already waiting: it must then succeed.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .spawn()
            .unwrap();
        std::fs::write(&flag, "").unwrap();
        assert!(child.wait().unwrap().success());
        assert!(w
            .plan(&run_probe(&w.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn real_url_probe() {
        if std::process::Command::new("sh")
            .arg("-c")
            .arg("command -v curl || command -v wget")
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return; // no HTTP client here to exercise
        }
        let (port, server) = http_server(vec![(204, b"".to_vec())]);
        let w = wait_for(&format!(
            "url = \"http://127.0.0.1:{port}/health\"\nstatus = 204"
        ))
        .unwrap();
        assert!(w
            .plan(&run_probe(&w.probe(ProbeOptions::default())))
            .unwrap()
            .is_empty());
        server.join().unwrap();
        let (port, server) = http_server(vec![(503, b"busy".to_vec())]);
        let w = wait_for(&format!("url = \"http://127.0.0.1:{port}/\"")).unwrap();
        assert_eq!(
            w.plan(&run_probe(&w.probe(ProbeOptions::default())))
                .unwrap()
                .len(),
            1
        );
        server.join().unwrap();
    }
}
