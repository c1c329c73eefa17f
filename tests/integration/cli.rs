//! The `bootstrap` binary end to end against a real sshd on loopback: convergence, no-op reruns,
//! check mode, host keys, become, dropped connections, failures and bad input.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{user_without_sudo, TestSshd, SUDO_USER};

/// A project directory (inventory, playbooks, files) pointed at a test sshd, plus a scratch
/// directory that the playbooks change "on the host" (the same machine, through SSH).
pub(crate) struct Project {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) remote: tempfile::TempDir,
}

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// JSON Lines of a `--json` run.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
            .collect()
    }

    pub(crate) fn summary(&self) -> Value {
        self.events()
            .into_iter()
            .find(|e| e["type"] == "summary")
            .unwrap_or_else(|| panic!("no summary in:\n{}\n{}", self.stdout, self.stderr))
    }

    pub(crate) fn changed_steps(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == "step" && e["status"] == "changed")
            .map(|e| e["step"].as_str().unwrap().to_string())
            .collect()
    }

    pub(crate) fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Project {
    /// `hosts`: (name, user) pairs, all served by `sshd`.
    pub(crate) fn new(sshd: &TestSshd, hosts: &[(&str, &str)]) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let remote = tempfile::tempdir().unwrap();
        let mut inv = format!(
            "[ssh]\nport = {}\nkey = \"{}\"\n\n[vars]\nroot = \"{}\"\n\n[secrets]\napp_token = \"a test secret\"\n",
            sshd.port(),
            sshd.client_key().display(),
            remote.path().display()
        );
        assert!(hosts.len() <= crate::support::LOOPBACK_HOSTS);
        for (i, (name, user)) in hosts.iter().enumerate() {
            inv.push_str(&format!(
                "\n[hosts.{name}]\naddress = \"127.0.0.{}\"\nroles = [\"worker\"]\nuser = \"{user}\"\n",
                i + 1
            ));
        }
        fs::write(dir.path().join("inventory.toml"), inv).unwrap();
        fs::create_dir_all(dir.path().join("playbooks")).unwrap();
        fs::create_dir_all(dir.path().join("files")).unwrap();
        Project { dir, remote }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(crate) fn remote(&self, rel: &str) -> PathBuf {
        self.remote.path().join(rel)
    }

    pub(crate) fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// The binary with this project's inventory, HOME and host-side state directory.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bootstrap"));
        cmd.current_dir(self.dir.path())
            // ~/.ssh/known_hosts of the test, not of whoever runs it.
            .env("HOME", self.dir.path())
            .env("BOOTSTRAP_SECRET_APP_TOKEN", SECRET)
            // Every test's "host" is this machine: each keeps its lock and state apart.
            .env(
                "BOOTSTRAP_HOST_STATE_DIR",
                self.remote("host-state-{host}").display().to_string(),
            )
            .args(["-i", "inventory.toml"])
            .args(args);
        cmd
    }

    /// Where runs keep their state on inventory host `host` (lock, pending handlers).
    pub(crate) fn host_state(&self, host: &str) -> PathBuf {
        self.remote(&format!("host-state-{host}"))
    }

    pub(crate) fn bootstrap(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run bootstrap"))
    }

    pub(crate) fn run(&self, playbook: &str, extra: &[&str]) -> Run {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["run", playbook]);
        self.bootstrap(&args, &[])
    }

    pub(crate) fn logs(&self) -> String {
        let mut all = String::new();
        collect_files(&self.path(".bootstrap/logs"), &mut all);
        all
    }
}

const SECRET: &str = "tok-8f1b2c3d4e5f6a7b";

fn collect_files(dir: &Path, into: &mut String) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, into);
        } else {
            into.push_str(&fs::read_to_string(&p).unwrap_or_default());
        }
    }
}

/// Ten directories, a file of lines, and a template that uses a secret.
const CONVERGE: &str = r#"
name = "converge"
hosts = "worker"

[[steps]]
name = "app dir"
file = { path = "{{ root }}/{{ host.name }}/app", state = "directory", mode = "0750" }

[[steps]]
name = "setting a"
line = { path = "{{ root }}/{{ host.name }}/app/settings.conf", line = "a = 1", create = true }

[[steps]]
name = "setting b"
line = { path = "{{ root }}/{{ host.name }}/app/settings.conf", line = "b = 2", create = true }

[[steps]]
name = "config with token"
template = { src = "app.conf.j2", dest = "{{ root }}/{{ host.name }}/app/app.conf", mode = "0600" }
"#;

const APP_CONF: &str = "host = {{ host.name }}\ntoken = {{ secrets.app_token }}\n";

fn converge_project(sshd: &TestSshd, hosts: &[(&str, &str)]) -> Project {
    let p = Project::new(sshd, hosts);
    p.write("playbooks/converge.toml", CONVERGE);
    p.write("files/app.conf.j2", APP_CONF);
    p
}

#[test]
fn first_run_changes_and_a_rerun_changes_nothing() {
    let sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", "root"), ("b", "root")]);

    let first = p.run("playbooks/converge.toml", &[]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert_eq!(first.summary()["changed"], 8, "{}", first.all());
    let conf = fs::read_to_string(p.remote("a/app/app.conf")).unwrap();
    assert_eq!(conf, format!("host = a\ntoken = {SECRET}\n"));
    assert_eq!(
        fs::read_to_string(p.remote("b/app/settings.conf")).unwrap(),
        "a = 1\nb = 2\n"
    );

    let second = p.run("playbooks/converge.toml", &[]);
    assert_eq!(second.code, 0, "{}", second.all());
    let s = second.summary();
    assert_eq!(s["changed"], 0, "{}", second.all());
    assert_eq!(s["ok"], 8);
}

#[test]
fn check_after_drift_reports_exactly_the_drift_and_leaves_the_host_alone() {
    let sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", "root")]);
    assert_eq!(p.run("playbooks/converge.toml", &[]).code, 0);

    // Drift: someone edits a setting by hand.
    let settings = p.remote("a/app/settings.conf");
    fs::write(&settings, "a = 1\nb = 3\n").unwrap();

    let check = p.run("playbooks/converge.toml", &["--check", "--diff"]);
    assert_eq!(check.code, 0, "{}", check.all());
    assert_eq!(check.changed_steps(), vec!["setting b"], "{}", check.all());
    assert_eq!(
        fs::read_to_string(&settings).unwrap(),
        "a = 1\nb = 3\n",
        "check mode changed the host"
    );
    let diffs = check
        .events()
        .into_iter()
        .find(|e| e["step"] == "setting b")
        .unwrap()["diffs"]
        .to_string();
    assert!(
        diffs.contains("+b = 2"),
        "diff should show the line to add: {diffs}"
    );

    let fix = p.run("playbooks/converge.toml", &[]);
    assert_eq!(fix.changed_steps(), vec!["setting b"]);
    assert!(fs::read_to_string(&settings).unwrap().contains("b = 2"));
}

#[test]
fn a_changed_host_key_is_refused_and_nothing_runs() {
    let mut sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", "root")]);
    let first = p.run("playbooks/converge.toml", &[]);
    assert!(first
        .events()
        .iter()
        .any(|e| e["type"] == "connected" && e["new_host_key"].is_string()));
    let old_fp = sshd.host_fingerprint();

    sshd.restart_with_new_host_key();
    fs::remove_dir_all(p.remote("a")).unwrap();
    let run = p.run("playbooks/converge.toml", &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("HOST KEY CHANGED"), "{}", run.all());
    assert!(
        run.all().contains(&old_fp) && run.all().contains(&sshd.host_fingerprint()),
        "{}",
        run.all()
    );
    assert_eq!(run.summary()["unreachable"], 1);
    assert!(
        !p.remote("a").exists(),
        "a host with a changed key must not be touched"
    );
}

#[test]
fn strict_host_keys_refuses_an_unknown_host() {
    let sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", "root")]);
    let run = p.run("playbooks/converge.toml", &["--strict-host-keys"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("unknown host key"), "{}", run.all());
    assert!(!p.remote("a").exists());
}

#[test]
fn a_non_root_user_with_become_changes_root_owned_places() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", SUDO_USER)]);
    p.write(
        "playbooks/root.toml",
        r#"
name = "as root"
hosts = "all"
[[steps]]
name = "root-only dir"
file = { path = "{{ root }}/owned-by-root", state = "directory", mode = "0700", owner = "root" }
[[steps]]
name = "who am i"
command = { cmd = "id -u > {{ root }}/owned-by-root/uid", creates = "{{ root }}/owned-by-root/uid" }
"#,
    );
    // Only root may write here, so success proves sudo was used.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p.remote.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let run = p.run("playbooks/root.toml", &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        fs::read_to_string(p.remote("owned-by-root/uid"))
            .unwrap()
            .trim(),
        "0"
    );
    assert_eq!(p.run("playbooks/root.toml", &[]).summary()["changed"], 0);
}

#[test]
fn a_failing_command_exits_1_shows_its_stderr_and_stops_only_that_host() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root"), ("b", "root")]);
    p.write(
        "playbooks/fail.toml",
        r#"
name = "fail on a"
hosts = "all"
[[steps]]
name = "breaks on a"
command = { cmd = "if [ {{ host.name }} = a ]; then echo 'disk on fire' >&2; exit 7; fi; true" }
[[steps]]
name = "after"
file = { path = "{{ root }}/{{ host.name }}-after", state = "directory" }
"#,
    );
    let run = p.bootstrap(&["run", "playbooks/fail.toml"], &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("disk on fire"),
        "stderr of the command must be shown:\n{}",
        run.all()
    );
    assert!(run.stdout.contains("exit 7"), "{}", run.all());
    assert!(
        !p.remote("a-after").exists(),
        "a failed step stops its host"
    );
    assert!(p.remote("b-after").exists(), "the other host goes on");
}

#[test]
fn a_connection_dropped_mid_run_is_reported_and_a_rerun_converges() {
    let mut sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    let started = p.remote("started");
    p.write(
        "playbooks/slow.toml",
        r#"
name = "slow"
hosts = "all"
[[steps]]
name = "long job"
command = { cmd = "if [ ! -e {{ root }}/started ]; then touch {{ root }}/started; sleep 60; fi; touch {{ root }}/done", creates = "{{ root }}/done" }
[[steps]]
name = "after"
file = { path = "{{ root }}/after", state = "directory" }
"#,
    );
    let child = p
        .command(&["run", "playbooks/slow.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Poll for the file the command writes: the observable sign that it is running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the long job never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    sshd.stop();
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("connection"),
        "a clear transport error: {}",
        run.all()
    );
    assert!(!p.remote("after").exists());

    sshd.restart();
    let rerun = p.run("playbooks/slow.toml", &[]);
    assert_eq!(rerun.code, 0, "{}", rerun.all());
    assert!(p.remote("done").exists() && p.remote("after").exists());
    assert_eq!(p.run("playbooks/slow.toml", &[]).summary()["changed"], 0);
}

/// Regression: a connection cut mid-step failed the host even though the host still answered;
/// now the connection is re-established once and the step probed again (its plan is recomputed).
#[test]
fn a_connection_cut_mid_step_is_reestablished_and_the_step_probed_again() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    let started = p.remote("started");
    p.write(
        "playbooks/slow.toml",
        r#"
name = "slow"
hosts = "all"
[[steps]]
name = "long job"
command = { cmd = "if [ ! -e {{ root }}/started ]; then touch {{ root }}/started; sleep 60; fi; touch {{ root }}/done", creates = "{{ root }}/done" }
[[steps]]
name = "after"
file = { path = "{{ root }}/after", state = "directory" }
"#,
    );
    let child = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .current_dir(p.dir.path())
        .env("HOME", p.dir.path())
        .env("BOOTSTRAP_SECRET_APP_TOKEN", SECRET)
        .args([
            "-i",
            "inventory.toml",
            "--json",
            "run",
            "playbooks/slow.toml",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the long job never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The connection dies with what it ran; the host (sshd) still answers.
    sshd.cut_connections(true);
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(p.remote("done").exists() && p.remote("after").exists());
    assert!(p.logs().contains("reconnected"), "{}", p.logs());
    assert_eq!(sshd.log().matches("Accepted publickey").count(), 2);
}

#[test]
fn bad_input_exits_2_with_file_and_line_and_touches_no_host() {
    let sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", "root")]);
    p.write(
        "files/app.conf.j2",
        "host = {{ host.name }}\nport = {{ no_such_var }}\n",
    );
    let run = p.run("playbooks/converge.toml", &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("app.conf.j2:2"),
        "file:line expected: {}",
        run.stderr
    );
    assert!(
        !sshd.log().contains("Accepted"),
        "no host may be contacted on bad input"
    );

    p.write(
        "playbooks/typo.toml",
        "name = \"t\"\nhosts = \"all\"\n[[steps]]\nname = \"x\"\nfiel = { path = \"/tmp/x\" }\n",
    );
    let run = p.run("playbooks/typo.toml", &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("typo.toml:3"), "{}", run.stderr);
    assert!(run.stderr.contains("fiel"), "{}", run.stderr);

    let run = p.bootstrap(&["--forks", "0", "run", "playbooks/converge.toml"], &[]);
    assert_eq!(run.code, 2, "bad flags: {}", run.all());
    assert!(!sshd.log().contains("Accepted"));
}

#[test]
fn secrets_never_reach_output_or_logs() {
    let sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", "root")]);
    let run = p.run("playbooks/converge.toml", &["--diff", "-v"]);
    assert_eq!(run.code, 0, "{}", run.all());
    // The template with the token was written, so the secret passed through the run...
    assert!(fs::read_to_string(p.remote("a/app/app.conf"))
        .unwrap()
        .contains(SECRET));
    // ...but never into what the user or the logs see.
    assert!(
        !run.all().contains(SECRET),
        "secret in output:\n{}",
        run.all()
    );
    let logs = p.logs();
    assert!(!logs.is_empty(), "a log was written");
    assert!(!logs.contains(SECRET), "secret in logs");
    let plain = p.bootstrap(
        &["--diff", "-v", "--check", "run", "playbooks/converge.toml"],
        &[],
    );
    assert!(!plain.all().contains(SECRET));
}

#[test]
fn check_mode_on_a_fresh_host_changes_nothing() {
    let sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", "root")]);
    let run = p.run("playbooks/converge.toml", &["--check"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.summary()["changed"].as_u64().unwrap() >= 2);
    assert!(!p.remote("a").exists(), "check mode created something");
}

#[test]
fn fetch_brings_a_file_back_private_and_only_once() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    fs::write(p.remote("admin.conf"), "apiVersion: v1\n").unwrap();
    p.write(
        "playbooks/fetch.toml",
        r#"
name = "fetch"
hosts = "all"
[[steps]]
name = "kubeconfig back home"
fetch = { src = "{{ root }}/admin.conf", dest = "kubeconfig-{{ host.name }}" }
"#,
    );
    let run = p.run("playbooks/fetch.toml", &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let local = p.path(".bootstrap/kubeconfig-a");
    assert_eq!(fs::read_to_string(&local).unwrap(), "apiVersion: v1\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&local).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(p.run("playbooks/fetch.toml", &[]).summary()["changed"], 0);
}

/// Serves `body` to every request on a loopback port until `count` requests were answered.
fn serve(body: &'static [u8], count: usize) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(body).unwrap();
        }
    });
    (port, handle)
}

#[test]
fn download_is_fetched_once_on_the_admin_side_verified_and_uploaded() {
    use sha2::Digest;
    const BODY: &[u8] = b"#!/bin/sh\necho pinned tool\n";
    let sha = hex::encode(sha2::Sha256::digest(BODY));
    let (port, server) = serve(BODY, 1);
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write(
        "playbooks/dl.toml",
        &format!(
            r#"
name = "download"
hosts = "all"
[[steps]]
name = "pinned tool"
download = {{ url = "http://127.0.0.1:{port}/tool", sha256 = "{sha}", dest = "{{{{ root }}}}/tool", mode = "0755" }}
"#
        ),
    );
    let run = p.run("playbooks/dl.toml", &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    server.join().unwrap();
    assert_eq!(fs::read(p.remote("tool")).unwrap(), BODY);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(p.remote("tool")).unwrap().permissions().mode() & 0o777,
        0o755
    );

    // The server is gone: a drifted host is repaired from the admin-side cache.
    fs::write(p.remote("tool"), "tampered").unwrap();
    let repair = p.run("playbooks/dl.toml", &[]);
    assert_eq!(
        repair.changed_steps(),
        vec!["pinned tool"],
        "{}",
        repair.all()
    );
    assert_eq!(fs::read(p.remote("tool")).unwrap(), BODY);
    assert_eq!(p.run("playbooks/dl.toml", &[]).summary()["changed"], 0);
}

#[test]
fn a_download_whose_sha256_does_not_match_fails_and_uploads_nothing() {
    let (port, server) = serve(b"not what was pinned", 1);
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    let pinned = "0".repeat(64);
    p.write(
        "playbooks/dl.toml",
        &format!(
            "name = \"d\"\nhosts = \"all\"\n[[steps]]\nname = \"tool\"\ndownload = {{ url = \"http://127.0.0.1:{port}/t\", sha256 = \"{pinned}\", dest = \"{{{{ root }}}}/tool\" }}\n"
        ),
    );
    let run = p.run("playbooks/dl.toml", &[]);
    server.join().unwrap();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains(&pinned),
        "expected sha shown: {}",
        run.all()
    );
    assert!(!p.remote("tool").exists());
}

#[test]
fn step_names_are_rendered_for_each_host_and_secrets_in_them_masked() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write(
        "playbooks/names.toml",
        r#"
name = "names"
hosts = "all"
[[steps]]
name = "dir for {{ host.name }} with {{ secrets.app_token }}"
file = { path = "{{ root }}/named", state = "directory" }
"#,
    );
    let run = p.run("playbooks/names.toml", &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.changed_steps(), vec!["dir for a with ********"]);
    assert!(!run.all().contains(SECRET));
}

/// A platform inventory (master, worker, elk) with its own playbook set, for commands that do
/// not connect.
fn platform_dir(step_name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut inv = String::new();
    for (i, role) in ["master", "worker", "elk"].iter().enumerate() {
        inv.push_str(&format!(
            "[hosts.{role}]\naddress = \"127.0.0.{}\"\nroles = [\"{role}\"]\n",
            i + 1
        ));
    }
    fs::write(dir.path().join("inventory.toml"), inv).unwrap();
    fs::create_dir_all(dir.path().join("playbooks")).unwrap();
    fs::write(
        dir.path().join("playbooks/site.toml"),
        "[[stages]]\nname = \"hosts\"\nplaybooks = [\"w.toml\"]\n[parts]\nworker = [\"w.toml\"]\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("playbooks/w.toml"),
        format!("name = \"w\"\nhosts = \"worker\"\n[[steps]]\nname = \"{step_name}\"\ntags = [\"t\"]\ncommand = {{ cmd = \"true\" }}\n"),
    )
    .unwrap();
    dir
}

#[test]
fn playbooks_taken_from_the_current_directory_instead_of_beside_the_inventory() {
    let inventory_side = platform_dir("from beside the inventory");
    let cwd_side = platform_dir("from the current directory");
    let out = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .current_dir(cwd_side.path())
        .env("HOME", cwd_side.path())
        .arg("-i")
        .arg(inventory_side.path().join("inventory.toml"))
        .arg("check")
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{}", run.all());
    let beside = inventory_side.path().join("playbooks");
    assert!(
        run.stdout.contains(&format!(
            "playbooks: {} (beside the inventory)",
            beside.display()
        )),
        "{}",
        run.all()
    );
    assert!(
        !run.stdout.contains(&cwd_side.path().display().to_string()),
        "{}",
        run.all()
    );
}

#[test]
fn check_with_a_limit_or_tag_naming_nothing_exited_0() {
    let dir = platform_dir("s");
    let bootstrap = |args: &[&str]| {
        Run::from(
            Command::new(env!("CARGO_BIN_EXE_bootstrap"))
                .current_dir(dir.path())
                .env("HOME", dir.path())
                .args(args)
                .output()
                .unwrap(),
        )
    };
    assert_eq!(bootstrap(&["check"]).code, 0);
    let run = bootstrap(&["--limit", "nosuch", "check"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("`nosuch`"), "{}", run.all());
    let run = bootstrap(&["--tags", "nosuch", "check"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("--tags names `nosuch`"),
        "{}",
        run.all()
    );
    // A run refuses it before connecting to anything.
    let run = bootstrap(&["--skip-tags", "nosuch", "worker"]);
    assert_eq!(run.code, 2, "{}", run.all());
}

#[test]
fn a_line_written_to_a_file_reached_the_log_base64_encoded_and_sensitive_did_not_exist() {
    use base64::Engine as _;
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    // Not a declared secret: redaction cannot know it; only `sensitive` keeps it out.
    let private = "token = private-not-declared-7c1e";
    p.write(
        "playbooks/s.toml",
        &format!(
            "name = \"s\"\nhosts = \"all\"\n\n[[steps]]\nname = \"private line\"\nsensitive = true\nline = {{ path = \"{{{{ root }}}}/private.conf\", line = \"{private}\", create = true }}\n\n[[steps]]\nname = \"public line\"\nline = {{ path = \"{{{{ root }}}}/public.conf\", line = \"visible = 1\", create = true }}\n"
        ),
    );
    let first = p.bootstrap(&["--json", "--diff", "-v", "run", "playbooks/s.toml"], &[]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert_eq!(first.changed_steps(), vec!["private line", "public line"]);
    assert_eq!(
        fs::read_to_string(p.remote("private.conf")).unwrap(),
        format!("{private}\n")
    );
    // The rerun probes both files, whole.
    let rerun = p.bootstrap(&["--json", "--diff", "-v", "run", "playbooks/s.toml"], &[]);
    assert_eq!(rerun.summary()["changed"], 0, "{}", rerun.all());
    let everything = format!("{}{}{}", first.all(), rerun.all(), p.logs());
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert!(!everything.contains("private-not-declared"), "{everything}");
    assert!(!everything.contains(&b64(&format!("{private}\n"))));
    assert!(
        !everything.contains(&b64("visible = 1\n")),
        "file content logged"
    );
    assert!(
        p.logs().contains("content: 12 bytes, sha256 "),
        "{}",
        p.logs()
    );
    assert!(first
        .events()
        .iter()
        .any(|e| e["step"] == "private line" && e["diffs"].as_array().unwrap().is_empty()));
}

/// Regression: a key readable by others was used (OpenSSH refuses it), and a key that could
/// not be parsed was found only after connecting.
#[test]
fn unusable_key_files_are_bad_input_before_any_connection() {
    use std::os::unix::fs::PermissionsExt;
    let sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", "root")]);
    let key = p.path("id_shared");
    fs::copy(sshd.client_key(), &key).unwrap();
    let inventory = fs::read_to_string(p.path("inventory.toml"))
        .unwrap()
        .replace(
            &sshd.client_key().display().to_string(),
            &key.display().to_string(),
        );
    // `check` wants the platform's roles; these hosts are never connected to.
    let inventory = format!(
        "{inventory}\n[hosts.m]\naddress = \"127.0.0.2\"\nroles = [\"master\"]\n\n[hosts.e]\naddress = \"127.0.0.3\"\nroles = [\"elk\"]\n"
    );
    p.write("inventory.toml", &inventory);
    // `check` validates the project's own playbook set.
    p.write(
        "playbooks/site.toml",
        "[[stages]]\nname = \"converge\"\nplaybooks = [\"converge.toml\"]\n",
    );
    let sane = p.bootstrap(&["check"], &[]);
    assert_eq!(sane.code, 0, "{}", sane.all());
    let cases: [(u32, Option<&str>, &str); 2] = [
        (0o644, None, "chmod 600"),
        (
            0o600,
            Some("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n"),
            "regenerate",
        ),
    ];
    for (mode, content, advice) in cases {
        if let Some(text) = content {
            fs::write(&key, text).unwrap();
        }
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
        for args in [&["check"][..], &["run", "playbooks/converge.toml"][..]] {
            let run = p.bootstrap(args, &[]);
            assert_eq!(run.code, 2, "{args:?}: {}", run.all());
            let text = run.all();
            assert!(text.contains(&key.display().to_string()), "{text}");
            assert!(text.contains(advice), "{text}");
        }
    }
    // Nothing reached the host: the one connection in sshd's log is the harness's readiness probe.
    let log = sshd.log();
    assert_eq!(log.matches("Connection from").count(), 1, "{log}");
}

/// Regression: a login whose `sudo -n` wants a password read "the probe did not finish
/// (connection or shell died)".
#[test]
fn a_login_without_passwordless_sudo_is_told_so_with_sudos_message() {
    let sshd = TestSshd::start();
    let p = converge_project(&sshd, &[("a", user_without_sudo())]);
    let run = p.run("playbooks/converge.toml", &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    let text = run.all();
    assert!(text.contains("sudo: a password is required"), "{text}");
    assert!(text.contains("NOPASSWD"), "{text}");
    assert!(!text.contains("did not finish"), "{text}");
}

/// A master `m` (logging in as the sudo user, so its commands see $SUDO_USER) and two workers
/// `a`, `b` (root), all on the test sshd, each at its own loopback address.
fn cluster_project(sshd: &TestSshd) -> Project {
    let p = Project::new(sshd, &[]);
    let mut inv = fs::read_to_string(p.path("inventory.toml")).unwrap();
    inv.push_str(&format!(
        "\n[hosts.m]\naddress = \"127.0.0.1\"\nroles = [\"master\"]\nuser = \"{SUDO_USER}\"\n\
         \n[hosts.a]\naddress = \"127.0.0.2\"\nroles = [\"worker\"]\nuser = \"root\"\n\
         \n[hosts.b]\naddress = \"127.0.0.3\"\nroles = [\"worker\"]\nuser = \"root\"\n"
    ));
    p.write("inventory.toml", &inv);
    p
}

/// Each worker has a token minted "on the master" (a delegated step) and registered as a
/// secret, then reads it on stdin; a read-only query registers who ran it.
const REGISTER_AND_DELEGATE: &str = r#"
name = "join"
hosts = "worker"

[[steps]]
name = "who answers on the master"
delegate_to = "master"
command = { cmd = "echo ${SUDO_USER:-direct}", read_only = true }
register = "who"

[[steps]]
name = "mint a token on the master"
delegate_to = "m"
command = { cmd = "t=tok-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')-{{ host.name }}; echo \"$t\" >> {{ root }}/minted; echo \"$t\"" }
register = "token"
register_secret = true

[[steps]]
name = "the worker reads the token on stdin"
command = { cmd = "cat > {{ root }}/{{ host.name }}.got", stdin = "{{ registered[host.name].token }} by {{ registered[host.name].who }}" }
"#;

#[test]
fn a_value_registered_on_the_delegate_reaches_the_play_host_and_a_secret_one_is_never_shown() {
    let sshd = TestSshd::start();
    let p = cluster_project(&sshd);
    p.write("playbooks/join.toml", REGISTER_AND_DELEGATE);
    let run = p.run("playbooks/join.toml", &["-v"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let minted = fs::read_to_string(p.remote("minted")).unwrap();
    let tokens: Vec<&str> = minted.lines().collect();
    assert_eq!(tokens.len(), 2, "one token per worker: {minted}");
    for host in ["a", "b"] {
        let got = fs::read_to_string(p.remote(&format!("{host}.got"))).unwrap();
        let token = tokens
            .iter()
            .find(|t| t.ends_with(&format!("-{host}")))
            .unwrap();
        // Minted on the master's connection (the sudo user), for this worker, read on stdin.
        assert_eq!(got, format!("{token} by {SUDO_USER}"));
        assert!(
            !run.all().contains(token),
            "token in output:\n{}",
            run.all()
        );
        assert!(!p.logs().contains(token), "token in the logs");
    }
    let steps: Vec<String> = run
        .events()
        .into_iter()
        .filter(|e| e["type"] == "step")
        .map(|e| format!("{} {} {}", e["host"], e["step"], e["status"]))
        .collect();
    assert!(
        steps.contains(&"\"a\" \"mint a token on the master (on m)\" \"changed\"".to_string()),
        "{steps:?}"
    );
    assert!(
        steps.contains(&"\"b\" \"who answers on the master (on m)\" \"ok\"".to_string()),
        "a read-only query is never a change: {steps:?}"
    );
}

#[test]
fn a_secret_on_a_command_line_is_refused() {
    let sshd = TestSshd::start();
    let p = cluster_project(&sshd);
    p.write(
        "playbooks/leak.toml",
        "name = \"leak\"\nhosts = \"master\"\n[[steps]]\nname = \"argv\"\ncommand = { cmd = \"echo {{ secrets.app_token }} > {{ root }}/leaked\" }\n",
    );
    let run = p.run("playbooks/leak.toml", &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("secret would be on the command line"),
        "{}",
        run.all()
    );
    assert!(!p.remote("leaked").exists());
    assert!(!run.all().contains(SECRET));
}

/// A master play whose first step succeeds on its third look (a counter on the host says how
/// often it was tried), touching `up` then, and `rest` after it.
fn third_try_playbook(delay: &str, rest: &str) -> String {
    format!(
        r#"
name = "wait"
hosts = "master"
[[steps]]
name = "ready on the third try"
command = {{ cmd = "n=$(cat {{{{ root }}}}/count 2>/dev/null || echo 0); echo $((n + 1)) > {{{{ root }}}}/count; [ $n -ge 2 ] && touch {{{{ root }}}}/up", read_only = true }}
retries = 5
delay = {delay}
{rest}"#
    )
}

/// Regression: the steps after one that waited (retries) planned from the probe taken before
/// the wait, so a control plane that came up meanwhile was initialised again.
#[test]
fn steps_after_one_that_waited_are_probed_again() {
    let sshd = TestSshd::start();
    let p = cluster_project(&sshd);
    // The next step acts only while the "service" is down.
    p.write(
        "playbooks/wait.toml",
        &third_try_playbook(
            "0",
            "[[steps]]\nname = \"only while it is down\"\ncommand = { cmd = \"echo ran >> {{ root }}/ran\", unless = \"test -e {{ root }}/up\" }\n",
        ),
    );
    let run = p.run("playbooks/wait.toml", &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fs::read_to_string(p.remote("count")).unwrap().trim(), "3");
    assert!(
        !p.remote("ran").exists(),
        "planned from the probe taken before the wait: {}",
        run.all()
    );
}

#[test]
fn retries_wait_for_a_step_to_succeed_within_a_bound() {
    let sshd = TestSshd::start();
    let p = cluster_project(&sshd);
    // Fails twice, then succeeds.
    p.write("playbooks/wait.toml", &third_try_playbook("\"1s\"", ""));
    let run = p.run("playbooks/wait.toml", &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fs::read_to_string(p.remote("count")).unwrap().trim(), "3");
    p.write(
        "playbooks/never.toml",
        "name = \"never\"\nhosts = \"master\"\n[[steps]]\nname = \"never ready\"\ncommand = { cmd = \"echo not yet; echo x >> {{ root }}/tries; false\", read_only = true }\nretries = 2\ndelay = 0\n",
    );
    let run = p.run("playbooks/never.toml", &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.all().contains("gave up after 3 attempts"),
        "{}",
        run.all()
    );
    assert!(run.all().contains("not yet"), "{}", run.all());
    assert_eq!(
        fs::read_to_string(p.remote("tries"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn delegating_to_a_role_of_two_hosts_is_bad_input_with_the_line() {
    let sshd = TestSshd::start();
    let p = cluster_project(&sshd);
    p.write(
        "playbooks/bad.toml",
        "name = \"bad\"\nhosts = \"master\"\n\n[[steps]]\nname = \"where\"\ndelegate_to = \"worker\"\ncommand = { cmd = \"touch {{ root }}/touched\" }\n",
    );
    let run = p.run("playbooks/bad.toml", &[]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.all().contains("bad.toml:4"), "{}", run.all());
    assert!(run.all().contains("2 hosts"), "{}", run.all());
    assert!(!p.remote("touched").exists());
}

#[test]
fn a_delegate_outside_the_limit_runs_only_the_delegated_steps() {
    let sshd = TestSshd::start();
    let p = cluster_project(&sshd);
    p.write(
        "playbooks/both.toml",
        "name = \"both\"\nhosts = [\"master\", \"worker\"]\n[[steps]]\nname = \"own\"\ncommand = { cmd = \"touch {{ root }}/own-{{ host.name }}\" }\n[[steps]]\nname = \"via master\"\ndelegate_to = \"master\"\ncommand = { cmd = \"touch {{ root }}/via-{{ host.name }}\" }\n",
    );
    let run = p.run("playbooks/both.toml", &["--limit", "a"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(p.remote("own-a").exists() && p.remote("via-a").exists());
    // Regression: `reset --limit worker` reset the master too (it was connected as a delegate).
    assert!(!p.remote("own-m").exists(), "the delegate ran its own play");
    assert!(!p.remote("own-b").exists());
}
