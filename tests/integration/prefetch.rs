//! A host's plays, over several stages, probed in one round trip (facts with the lock), and
//! never from a stale answer: after any change, later plays ask the host again.

use std::fs;

use crate::cli::Project;
use crate::support::TestSshd;

const SITE: &str = r#"
[[stages]]
name = "first"
playbooks = ["one.toml", "two.toml"]

[[stages]]
name = "second"
playbooks = ["three.toml"]
"#;

// Reads a fact, so its facts come with the lock; makes the marker the third play looks for.
const ONE: &str = r#"
name = "one"
hosts = "worker"
[facts]
flavour = "echo vanilla"
[[steps]]
name = "a setting from a fact"
line = { path = "{{ root }}/w/one.conf", line = "flavour = {{ facts.flavour }}", create = true }
[[steps]]
name = "the marker"
line = { path = "{{ root }}/w/marker", line = "made by one", create = true }
"#;

const TWO: &str = r#"
name = "two"
hosts = "worker"
[[steps]]
name = "a directory"
file = { path = "{{ root }}/w/dir", state = "directory", mode = "0755" }
[[steps]]
name = "a line"
line = { path = "{{ root }}/w/two.conf", line = "two = yes", create = true }
"#;

// Runs its command only when the marker is missing: a stale answer from before the first
// play made it would run it.
const THREE: &str = r#"
name = "three"
hosts = "worker"
[[steps]]
name = "only before the marker exists"
command = { cmd = "echo ran >> {{ root }}/ran", creates = "{{ root }}/w/marker" }
[[steps]]
name = "a third line"
line = { path = "{{ root }}/w/three.conf", line = "three = yes", create = true }
"#;

fn project(sshd: &TestSshd) -> Project {
    let p = Project::new(sshd, &[("worker", "root")]);
    let inv = fs::read_to_string(p.path("inventory.toml")).unwrap();
    // `all` wants one master and one elk; they have no play here, so they are not connected.
    p.write(
        "inventory.toml",
        &format!(
            "{inv}\n[hosts.master]\naddress = \"127.0.0.2\"\nroles = [\"master\"]\n\n[hosts.elk]\naddress = \"127.0.0.3\"\nroles = [\"elk\"]\n"
        ),
    );
    fs::create_dir_all(p.remote("w")).unwrap();
    p.write("playbooks/site.toml", SITE);
    p.write("playbooks/one.toml", ONE);
    p.write("playbooks/two.toml", TWO);
    p.write("playbooks/three.toml", THREE);
    p
}

/// Commands sshd started (each a channel with `exec`), from its log.
fn commands_in(log: &str) -> usize {
    log.matches("Starting session: command").count()
}

#[test]
fn a_change_in_an_earlier_play_makes_later_plays_ask_the_host_again() {
    let sshd = TestSshd::start();
    let p = project(&sshd);
    let first = p.bootstrap(&["--json", "all"], &[]);
    assert_eq!(first.code, 0, "{}", first.all());
    // The prefetch saw no marker; the first play made it; the third play asked again.
    assert!(
        !p.remote("ran").exists(),
        "a later play planned from an answer older than a change:\n{}",
        first.all()
    );
    assert_eq!(
        fs::read_to_string(p.remote("w/one.conf")).unwrap(),
        "flavour = vanilla\n"
    );
    assert!(first.changed_steps().len() >= 5, "{}", first.all());
}

#[test]
fn a_converged_host_costs_two_commands_whatever_its_plays_and_stages() {
    let sshd = TestSshd::start();
    let p = project(&sshd);
    let first = p.bootstrap(&["--json", "all"], &[]);
    assert_eq!(first.code, 0, "{}", first.all());
    let before = sshd.log().len();
    let rerun = p.bootstrap(&["--json", "all"], &[]);
    assert_eq!(rerun.code, 0, "{}", rerun.all());
    assert_eq!(rerun.summary()["changed"], 0, "{}", rerun.all());
    let log = sshd.log();
    let during = &log[before..];
    // The lock (with every play's facts) and one batch of every probe of the three plays:
    // before, each play cost two more (facts, probes).
    assert_eq!(commands_in(during), 2, "{during}");
    assert!(
        p.logs().contains("answered by the run's prefetch"),
        "{}",
        rerun.all()
    );
    // A rerun after drift on the host still sees it.
    fs::write(p.remote("w/two.conf"), "two = no\n").unwrap();
    let drifted = p.bootstrap(&["--json", "all"], &[]);
    assert_eq!(drifted.changed_steps(), vec!["a line"], "{}", drifted.all());
}

#[test]
fn a_converged_host_whose_steps_need_no_fact_costs_one_command() {
    let sshd = TestSshd::start();
    let p = project(&sshd);
    // The same plays without the fact-reading one: every probe travels with the lock.
    p.write(
        "playbooks/site.toml",
        "[[stages]]\nname = \"first\"\nplaybooks = [\"two.toml\"]\n\n[[stages]]\nname = \"second\"\nplaybooks = [\"three.toml\"]\n",
    );
    // The first play that made the marker is gone: the marker is there already.
    fs::write(p.remote("w/marker"), "made by hand\n").unwrap();
    let first = p.bootstrap(&["--json", "all"], &[]);
    assert_eq!(first.code, 0, "{}", first.all());
    let before = sshd.log().len();
    let rerun = p.bootstrap(&["--json", "all"], &[]);
    assert_eq!(rerun.summary()["changed"], 0, "{}", rerun.all());
    let log = sshd.log();
    assert_eq!(commands_in(&log[before..]), 1, "{}", &log[before..]);
    // Drift is still seen.
    fs::write(p.remote("w/three.conf"), "three = no\n").unwrap();
    let drifted = p.bootstrap(&["--json", "all"], &[]);
    assert_eq!(
        drifted.changed_steps(),
        vec!["a third line"],
        "{}",
        drifted.all()
    );
}
