//! The run lifecycle against a real sshd: the host lock, handlers owed across runs, time
//! limits, signals, and check mode's planning errors.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{Project, Run};
use crate::support::TestSshd;

/// Polls (bounded) for a condition the run makes observable on the "host".
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(p: &Project, args: &[&str]) -> Child {
    p.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Processes whose command line contains `needle` (a marker unique to one test).
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(text);
            }
        }
    }
    found
}

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// A step that waits (bounded) for the test to create `release`, after saying it started.
const HOLDING: &str = r#"
name = "holding"
hosts = "all"
[[steps]]
name = "line a"
line = { path = "{{ root }}/lines.conf", line = "a = 1", create = true }
[[steps]]
name = "wait for release"
command = { cmd = "touch {{ root }}/started; i=0; while [ ! -e {{ root }}/release ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done", creates = "{{ root }}/release-seen" }
"#;

const OTHER: &str = r#"
name = "other"
hosts = "all"
[[steps]]
name = "line b"
line = { path = "{{ root }}/lines.conf", line = "b = 2", create = true }
"#;

#[test]
fn a_second_run_on_a_locked_host_fails_naming_the_holder_and_loses_no_line() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write("playbooks/holding.toml", HOLDING);
    p.write("playbooks/other.toml", OTHER);
    let first = spawn(&p, &["--json", "run", "playbooks/holding.toml"]);
    wait_until("the first run's long step", Duration::from_secs(30), || {
        p.remote("started").exists()
    });
    let second = p.run("playbooks/other.toml", &[]);
    assert_eq!(second.code, 1, "{}", second.all());
    assert!(
        second
            .all()
            .contains("another bootstrap run is working on this host"),
        "{}",
        second.all()
    );
    let holder = fs::read_to_string(p.host_state("a").join("lock.info")).unwrap();
    let run_id = holder
        .lines()
        .find_map(|l| l.strip_prefix("run="))
        .unwrap()
        .to_string();
    assert!(
        second.all().contains(&run_id),
        "names the holder: {}",
        second.all()
    );
    fs::write(p.remote("release"), "").unwrap();
    let first = Run::from(first.wait_with_output().unwrap());
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(
        !p.host_state("a").join("lock.info").exists(),
        "lock given back"
    );
    // Now the other run gets its turn, and both lines are there.
    assert_eq!(p.run("playbooks/other.toml", &[]).code, 0);
    let lines = fs::read_to_string(p.remote("lines.conf")).unwrap();
    assert!(
        lines.contains("a = 1") && lines.contains("b = 2"),
        "{lines}"
    );
}

#[test]
fn a_stale_lock_from_a_killed_run_is_reported_and_taken_over() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write("playbooks/holding.toml", HOLDING);
    p.write("playbooks/other.toml", OTHER);
    let mut first = spawn(&p, &["run", "playbooks/holding.toml"]);
    wait_until("the first run's long step", Duration::from_secs(30), || {
        p.remote("started").exists()
    });
    let info = fs::read_to_string(p.host_state("a").join("lock.info")).unwrap();
    let keeper = info
        .lines()
        .find_map(|l| l.strip_prefix("keeper="))
        .unwrap()
        .to_string();
    signal(&first, "-KILL");
    let _ = first.wait();
    // The keeper dies with the SSH session (its next write fails), which frees the lock.
    wait_until("the keeper's exit", Duration::from_secs(20), || {
        !pid_alive(&keeper)
    });
    let run = p.run("playbooks/other.toml", &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let note = run
        .events()
        .into_iter()
        .find(|e| e["type"] == "note")
        .unwrap_or_else(|| panic!("no note about the stale lock: {}", run.all()));
    let run_id = info.lines().find_map(|l| l.strip_prefix("run=")).unwrap();
    let message = note["message"].as_str().unwrap();
    assert!(
        message.contains("stale run lock") && message.contains(run_id),
        "{message}"
    );
    fs::write(p.remote("release"), "").unwrap();
}

/// A file whose change notifies a handler, then a step that fails while `fail` exists.
const NOTIFYING: &str = r#"
name = "notifying"
hosts = "all"
[[steps]]
name = "conf"
line = { path = "{{ root }}/app.conf", line = "{{ setting }}", create = true }
notify = ["restart app"]
tags = ["conf"]
[[steps]]
name = "later step"
command = { cmd = "echo broken >&2; exit 1", unless = "test ! -e {{ root }}/fail" }
tags = ["other"]
[[handlers]]
name = "restart app"
command = { cmd = "echo restarted >> {{ root }}/restarts" }
tags = ["other"]
"#;

fn restarts(p: &Project) -> usize {
    fs::read_to_string(p.remote("restarts"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn notifying_project(sshd: &TestSshd) -> Project {
    let p = Project::new(sshd, &[("a", "root")]);
    p.write("playbooks/notifying.toml", NOTIFYING);
    p
}

#[test]
fn a_notified_handler_runs_even_when_tags_exclude_it() {
    let sshd = TestSshd::start();
    let p = notifying_project(&sshd);
    set_setting(&p, "port = 1");
    let run = p.run("playbooks/notifying.toml", &["--tags", "conf"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(restarts(&p), 1, "{}", run.all());
}

fn set_setting(p: &Project, value: &str) {
    let inv = fs::read_to_string(p.path("inventory.toml")).unwrap();
    let inv: String = inv
        .lines()
        .filter(|l| !l.starts_with("setting = "))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(
        p.path("inventory.toml"),
        inv.replace("[vars]\n", &format!("[vars]\nsetting = \"{value}\"\n")),
    )
    .unwrap();
}

#[test]
fn handlers_owed_by_a_failed_run_fire_on_the_rerun_and_only_once() {
    let sshd = TestSshd::start();
    let p = notifying_project(&sshd);
    set_setting(&p, "port = 1");
    fs::write(p.remote("fail"), "").unwrap();
    let failed = p.run("playbooks/notifying.toml", &[]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert_eq!(restarts(&p), 0, "a failed play runs no handler");
    assert_eq!(
        failed.summary()["hosts"]["a"]["pending_handlers"][0],
        "restart app",
        "{}",
        failed.all()
    );
    fs::remove_file(p.remote("fail")).unwrap();
    // The file is converged now; only the record on the host knows the restart is owed.
    let rerun = p.run("playbooks/notifying.toml", &[]);
    assert_eq!(rerun.code, 0, "{}", rerun.all());
    assert_eq!(restarts(&p), 1, "{}", rerun.all());
    let again = p.run("playbooks/notifying.toml", &[]);
    assert_eq!(again.summary()["changed"], 0, "{}", again.all());
    assert_eq!(restarts(&p), 1);
}

#[test]
fn force_handlers_runs_notified_handlers_after_a_failure() {
    let sshd = TestSshd::start();
    let p = notifying_project(&sshd);
    set_setting(&p, "port = 2");
    fs::write(p.remote("fail"), "").unwrap();
    let run = p.run("playbooks/notifying.toml", &["--force-handlers"]);
    assert_eq!(
        run.code,
        1,
        "the failure still fails the run: {}",
        run.all()
    );
    assert_eq!(restarts(&p), 1, "{}", run.all());
    assert!(run.summary()["hosts"]["a"]["pending_handlers"].is_null());
}

#[test]
fn a_step_timeout_stops_a_stuck_command_on_the_host() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    let marker = format!("98{}", std::process::id() % 10000);
    p.write(
        "playbooks/stuck.toml",
        &format!(
            r#"
name = "stuck"
hosts = "all"
[[steps]]
name = "stuck"
timeout = "2s"
command = {{ cmd = "sleep {marker}.5" }}
"#
        ),
    );
    let started = Instant::now();
    let run = p.run("playbooks/stuck.toml", &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.all().contains("timed out after 2s"), "{}", run.all());
    assert!(started.elapsed() < Duration::from_secs(30));
    let left: Vec<String> = processes_with(&format!("sleep {marker}.5"));
    assert!(left.is_empty(), "still running on the host: {left:?}");
}

const SLOW_STEPS: &str = r#"
name = "slow"
hosts = "all"
[[steps]]
name = "running change"
command = { cmd = "touch {{ root }}/started; sleep 2; touch {{ root }}/finished", creates = "{{ root }}/finished" }
[[steps]]
name = "next change"
file = { path = "{{ root }}/next", state = "directory" }
"#;

#[test]
fn sigint_lets_the_running_change_finish_then_stops_with_a_recap_and_exit_130() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write("playbooks/slow.toml", SLOW_STEPS);
    let child = spawn(&p, &["--json", "run", "playbooks/slow.toml"]);
    wait_until("the running change", Duration::from_secs(30), || {
        p.remote("started").exists()
    });
    signal(&child, "-INT");
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(p.remote("finished").exists(), "the running change finished");
    assert!(!p.remote("next").exists(), "nothing new started");
    let summary = run.summary();
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert_eq!(summary["hosts"]["a"]["interrupted"], true, "{summary}");
    assert!(
        !p.host_state("a").join("lock.info").exists(),
        "lock given back"
    );
}

#[test]
fn sigterm_exits_143_and_a_second_signal_aborts_at_once() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write("playbooks/slow.toml", SLOW_STEPS);
    let child = spawn(&p, &["--json", "run", "playbooks/slow.toml"]);
    wait_until("the running change", Duration::from_secs(30), || {
        p.remote("started").exists()
    });
    signal(&child, "-TERM");
    // The second signal only once the first was taken (signals of one kind coalesce).
    use std::io::BufRead;
    let mut child = child;
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no interrupted event: {seen}"
        );
        seen.push_str(&line);
        if line.contains("\"type\":\"interrupted\"") {
            break;
        }
    }
    signal(&child, "-TERM");
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 143, "{seen}{}", run.all());
    assert!(run.stderr.contains("aborting at once"), "{}", run.all());
    assert!(
        !run.stdout.contains("\"type\":\"summary\""),
        "aborted before the recap"
    );
}

#[test]
fn check_mode_fails_a_broken_plan_after_a_would_change_step() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write(
        "playbooks/check.toml",
        r#"
name = "check"
hosts = "all"
[[steps]]
name = "new dir"
file = { path = "{{ root }}/new", state = "directory" }
[[steps]]
name = "line in a file the dir step brings"
line = { path = "{{ root }}/new/conf", line = "x = 1" }
"#,
    );
    // Genuine: the file would exist once the earlier step ran, so it is skipped.
    let genuine = p.run("playbooks/check.toml", &["--check"]);
    assert_eq!(genuine.code, 0, "{}", genuine.all());
    assert_eq!(genuine.summary()["skipped"], 1, "{}", genuine.all());

    // Not genuine: the "file" is a directory; no earlier change can make that plan work.
    fs::create_dir_all(p.remote("is-a-dir")).unwrap();
    p.write(
        "playbooks/broken.toml",
        r#"
name = "broken"
hosts = "all"
[[steps]]
name = "new dir"
file = { path = "{{ root }}/new", state = "directory" }
[[steps]]
name = "line in a directory"
line = { path = "{{ root }}/is-a-dir", line = "x = 1" }
"#,
    );
    let broken = p.run("playbooks/broken.toml", &["--check"]);
    assert_eq!(broken.code, 1, "{}", broken.all());
    assert_eq!(broken.summary()["failed"], 1, "{}", broken.all());
    assert!(!p.remote("new").exists());
}

/// A command whose result we stop waiting for (a deadline, an interrupt) must not go on
/// running on the host, for the root login and through sudo alike.
#[tokio::test]
async fn an_abandoned_remote_command_is_stopped_on_the_host() {
    let sshd = TestSshd::start();
    for (i, user) in ["root", crate::support::SUDO_USER].into_iter().enumerate() {
        let session = bootstrap::transport::Session::connect(&sshd.target(user), &sshd.options())
            .await
            .unwrap();
        let marker = format!("sleep 97{}{i}.25", std::process::id() % 10000);
        let script = format!("{marker} & wait");
        let mut running = Box::pin(session.exec(&script, None));
        // Wait (bounded) until the command is seen on the host, then stop waiting for it.
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    r = &mut running => panic!("{user}: the command ended by itself: {r:?}"),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                if !processes_with(&marker).is_empty() {
                    break;
                }
            }
        })
        .await;
        assert!(seen.is_ok(), "{user}: the command never started");
        drop(running);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_with(&marker).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{user}: still running: {:?}\n{}",
                processes_with(&marker),
                sshd.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        session.close().await;
    }
}

/// A slow check and a quick one, both already satisfied: a no-op run whose time is the probes.
const SLOW_PROBE: &str = r#"
name = "probes"
hosts = "all"
[[steps]]
name = "quick check"
command = { cmd = "false", unless = "true" }
[[steps]]
name = "slow check"
command = { cmd = "false", unless = "sleep 0.4" }
"#;

#[test]
fn timings_name_the_slow_probe_first_and_the_log_keeps_each_duration() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write("playbooks/probes.toml", SLOW_PROBE);
    let run = p.run("playbooks/probes.toml", &["--timings"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.summary()["changed"], 0, "{}", run.all());
    // With --json the table goes to stderr; stdout stays JSON Lines.
    let table: Vec<&str> = run.stderr.lines().skip_while(|l| *l != "TIMINGS").collect();
    let probes: Vec<&str> = table
        .iter()
        .skip_while(|l| !l.starts_with("a: slowest probes"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .copied()
        .collect();
    assert_eq!(probes.len(), 2, "{}", run.all());
    assert!(probes[0].ends_with("probes: slow check"), "{probes:?}");
    let seconds: f64 = probes[0]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(seconds >= 0.4, "{probes:?}");
    assert!(
        table.iter().any(|l| l.starts_with("a: slowest steps")),
        "{}",
        run.all()
    );
    let logs = p.logs();
    assert!(logs.contains("probe of `slow check`: "), "{logs}");
    assert!(logs.contains("step `quick check`: Ok in "), "{logs}");
    for e in run.events().iter().filter(|e| e["type"] == "step") {
        assert!(e["duration_ms"].is_u64(), "{e}");
    }
}

/// A change that outlives the signal grace: a uniquely named process tree (a shell and its
/// `sleep`) that would run for an hour.
fn long_change(marker: &str) -> String {
    format!(
        r#"
name = "long"
hosts = "all"
[[steps]]
name = "a change that outlives the grace"
command = {{ cmd = "touch {{{{ root }}}}/started; sh -c '{marker} & wait' & wait" }}
"#
    )
}

/// Issue 23: the stop of a change abandoned at the end of the grace used to be a background
/// task that the runtime's teardown cancelled, so the command went on after `bootstrap` exited
/// (and after the lock was given back). Through sudo, as the field saw it.
#[test]
fn a_change_stopped_at_the_end_of_the_grace_is_gone_from_the_host_when_bootstrap_exits() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", crate::support::SUDO_USER)]);
    let marker = format!("sleep 3599.{}", std::process::id());
    p.write("playbooks/long.toml", &long_change(&marker));
    let child = spawn(&p, &["--json", "run", "playbooks/long.toml"]);
    wait_until(
        "the long change on the host",
        Duration::from_secs(30),
        || !processes_with(&marker).is_empty(),
    );
    signal(&child, "-TERM");
    let run = Run::from(child.wait_with_output().unwrap());
    // Looked at once, the moment bootstrap has exited: no waiting for it to go away.
    let left = processes_with(&marker);
    assert!(
        left.is_empty(),
        "still running on the host: {left:?}\n{}",
        run.all()
    );
    assert_eq!(run.code, 143, "{}", run.all());
    let summary = run.summary();
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert!(summary.get("unconfirmed_stops").is_none(), "{summary}");
    assert!(
        run.all().contains("was stopped on the host"),
        "{}",
        run.all()
    );
    assert!(
        !p.host_state("a").join("lock.info").exists(),
        "lock given back"
    );
}

/// Issue 23: two runs started together; the loser names the winner's run id, never "(its
/// details are not written yet)" nor the `lock.info` of a run that is gone.
#[test]
fn the_loser_of_two_runs_started_together_names_the_winner_every_time() {
    let sshd = TestSshd::start();
    let p = Project::new(&sshd, &[("a", "root")]);
    p.write("playbooks/holding.toml", HOLDING);
    let info = p.host_state("a").join("lock.info");
    let mut contested = 0;
    for round in 0..50 {
        let _ = fs::remove_file(p.remote("started"));
        let _ = fs::remove_file(p.remote("release"));
        // What a run that died holding the lock leaves: the next ones must never name it.
        fs::create_dir_all(p.host_state("a")).unwrap();
        fs::write(
            &info,
            "run=dead-run-of-round\nadmin=gone\nstarted=0\nkeeper=1\n",
        )
        .unwrap();
        let first = spawn(&p, &["--json", "run", "playbooks/holding.toml"]);
        let second = spawn(&p, &["--json", "run", "playbooks/holding.toml"]);
        wait_until("a run's long step", Duration::from_secs(30), || {
            p.remote("started").exists()
        });
        let winner_info = fs::read_to_string(&info).unwrap();
        let winner = winner_info
            .lines()
            .find_map(|l| l.strip_prefix("run="))
            .unwrap()
            .to_string();
        assert_ne!(winner, "dead-run-of-round", "round {round}");
        fs::write(p.remote("release"), "").unwrap();
        let runs = [
            Run::from(first.wait_with_output().unwrap()),
            Run::from(second.wait_with_output().unwrap()),
        ];
        for run in &runs {
            let text = run.all();
            if run.code == 0 {
                continue;
            }
            assert!(
                text.contains("another bootstrap run is working on this host"),
                "round {round}: {text}"
            );
            contested += 1;
            assert!(
                !text.contains("not written yet") && !text.contains("dead-run-of-round"),
                "round {round}: {text}"
            );
            assert!(
                text.contains(&winner),
                "round {round}: names {winner}: {text}"
            );
        }
    }
    // Started together, one of the two finds the lock held in (nearly) every round.
    assert!(
        contested >= 25,
        "only {contested} of 50 rounds were contested"
    );
}
