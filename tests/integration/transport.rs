//! The SSH transport against a real OpenSSH sshd.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use bootstrap::modules::FileAttrs;
use bootstrap::transport::{Session, TransportError};
use sha2::Digest;

use crate::support::{
    keygen, user_without_sudo, wait_for_file, BlackHoleProxy, TestSshd, SUDO_USER,
};

async fn connect_root(sshd: &TestSshd) -> Session {
    Session::connect(&sshd.target("root"), &sshd.options())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\nsshd log:\n{}", sshd.log()))
}

#[tokio::test]
async fn non_zero_exit_is_a_result_not_an_error() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let out = session
        .exec("echo out; echo err >&2; exit 3", None)
        .await
        .unwrap();
    assert_eq!(out.exit_status, 3);
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n");
    let ok = session.exec("true", None).await.unwrap();
    assert!(ok.success());
    session.close().await;
}

#[tokio::test]
async fn stdin_reaches_the_command_and_not_its_command_line() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let secret = format!("s3cret-{}", std::process::id());
    let script = "IFS= read -r line; echo \"got:$line\"; ps -eo args";
    let out = session
        .exec(script, Some(format!("{secret}\n").as_bytes()))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr_str());
    let stdout = out.stdout_str();
    assert!(stdout.starts_with(&format!("got:{secret}\n")));
    // The process list (which includes our own shell) must not show the secret.
    assert_eq!(stdout.matches(&secret).count(), 1, "{stdout}");
    session.close().await;
}

/// Regression: scripts travelled as one argv word, so a big probe batch failed with E2BIG.
#[tokio::test]
async fn script_larger_than_the_argument_limit_runs_through_sudo() {
    let sshd = TestSshd::start();
    let session = Session::connect(&sshd.target(SUDO_USER), &sshd.options())
        .await
        .unwrap();
    let script = format!(": '{}'\nid -u\ncat", "x".repeat(210 * 1024));
    assert!(script.len() > 200 * 1024);
    let out = session
        .exec(&script, Some(b"input after the script"))
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "0\ninput after the script");
    session.close().await;
}

/// Regression: the script was the argument of the login shell and of `sudo sh -c`, so every
/// local user saw it in `ps` and sudo logged it.
#[tokio::test]
async fn secret_in_a_script_is_absent_from_ps_and_argv() {
    let sshd = TestSshd::start();
    let session = Session::connect(&sshd.target(SUDO_USER), &sshd.options())
        .await
        .unwrap();
    let secret = format!("pssst-{}-{}", std::process::id(), rand_word());
    let running = sshd.dir().join("running.pid");
    let go = sshd.dir().join("go");
    let script = format!(
        "token='{secret}'; echo $$ > {running}; i=0\n\
         while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; echo \"${{#token}}\"",
        running = running.display(),
        go = go.display()
    );
    let command = session.exec(&script, None);
    let observer = async {
        let pid = wait_for_file(&running).await.trim().to_string();
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout).to_string();
        let mut argvs = String::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
                argvs.push_str(&String::from_utf8_lossy(&cmdline));
                argvs.push('\n');
            }
        }
        let own = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        fs::write(&go, "").unwrap();
        (ps, argvs, String::from_utf8_lossy(&own).to_string())
    };
    let (out, (ps, argvs, own)) = tokio::join!(command, observer);
    let out = out.unwrap();
    assert_eq!(out.stdout_str().trim(), secret.len().to_string());
    assert!(own.starts_with("sh"), "the script's shell: {own}");
    assert!(!own.contains(&secret), "{own}");
    assert!(!ps.contains(&secret), "ps shows the secret:\n{ps}");
    assert!(!argvs.contains(&secret), "an argv holds the secret");
    session.close().await;
}

fn rand_word() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(10)
        .map(char::from)
        .collect()
}

/// Regression: a login without passwordless sudo read "the probe did not finish (connection
/// or shell died)".
#[tokio::test]
async fn sudo_that_needs_a_password_is_named_with_its_own_message() {
    let sshd = TestSshd::start();
    let user = user_without_sudo();
    let target = sshd.target(user);
    assert!(target.become_root);
    let session = Session::connect(&target, &sshd.options())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    // Without sudo the login works.
    let plain = session.exec_unprivileged("id -un", None).await.unwrap();
    assert_eq!(plain.stdout_str(), format!("{user}\n"));
    let err = session.exec("id -u", None).await.unwrap_err();
    match &err {
        TransportError::Sudo {
            user: u,
            missing,
            message,
            ..
        } => {
            assert_eq!(u, user);
            assert!(!missing);
            assert!(
                message.contains("sudo: a password is required"),
                "{message}"
            );
        }
        other => panic!("expected Sudo, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("NOPASSWD") && text.contains(user), "{text}");
    session.close().await;
}

#[tokio::test]
async fn large_stdin_arrives_whole() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = session.exec("sha256sum", Some(&data)).await.unwrap();
    let expected = hex::encode(sha2::Sha256::digest(&data));
    assert!(
        out.stdout_str().starts_with(&expected),
        "{}",
        out.stdout_str()
    );
    session.close().await;
}

#[tokio::test]
async fn channels_run_concurrently_on_one_connection() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    // Each command waits until all have started: run one after another they would never finish.
    let dir = sshd.dir().join("barrier");
    fs::create_dir(&dir).unwrap();
    let scripts: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "touch {d}/{i}; while [ $(ls {d} | wc -l) -lt 6 ]; do sleep 0.05; done; echo {i}",
                d = dir.display()
            )
        })
        .collect();
    let runs = scripts.iter().map(|s| session.exec(s, None));
    let outs = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(runs))
        .await
        .expect("commands on separate channels must run at the same time");
    for (i, out) in outs.into_iter().enumerate() {
        assert_eq!(out.unwrap().stdout_str(), format!("{i}\n"));
    }
    session.close().await;
}

#[tokio::test]
async fn become_runs_as_root_while_unprivileged_shows_the_login_user() {
    let sshd = TestSshd::start();
    let target = sshd.target(SUDO_USER);
    assert!(target.become_root);
    let session = Session::connect(&target, &sshd.options())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    let root = session.exec("id -u", None).await.unwrap();
    assert_eq!(root.stdout_str(), "0\n", "{}", root.stderr_str());
    let user = session.exec_unprivileged("id -un", None).await.unwrap();
    assert_eq!(user.stdout_str(), format!("{SUDO_USER}\n"));
    // stdin also passes through sudo.
    let piped = session.exec("cat", Some(b"through sudo")).await.unwrap();
    assert_eq!(piped.stdout_str(), "through sudo");
    session.close().await;
}

#[tokio::test]
async fn unknown_host_key_is_recorded_then_accepted_silently() {
    let sshd = TestSshd::start();
    let opts = sshd.options();
    assert!(!opts.project_known_hosts.exists());

    let first = connect_root(&sshd).await;
    assert_eq!(first.new_host_key(), Some(sshd.host_fingerprint().as_str()));
    first.close().await;

    let recorded = fs::read_to_string(&opts.project_known_hosts).unwrap();
    assert_eq!(
        recorded,
        format!("[127.0.0.1]:{} {}\n", sshd.port(), sshd.host_public_key())
    );
    let mode = fs::metadata(&opts.project_known_hosts)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Known now: accepted without a new record, even when strict.
    let strict = bootstrap::transport::ConnectOptions {
        strict_host_keys: true,
        ..opts.clone()
    };
    let second = Session::connect(&sshd.target("root"), &strict)
        .await
        .unwrap();
    assert_eq!(second.new_host_key(), None);
    second.close().await;
    assert_eq!(
        fs::read_to_string(&opts.project_known_hosts).unwrap(),
        recorded
    );
}

#[tokio::test]
async fn changed_host_key_is_refused_before_authenticating() {
    let mut sshd = TestSshd::start();
    connect_root(&sshd).await.close().await;
    let old = sshd.host_fingerprint();

    sshd.restart_with_new_host_key();
    let new = sshd.host_fingerprint();
    assert_ne!(old, new);
    let err = Session::connect(&sshd.target("root"), &sshd.options())
        .await
        .err()
        .expect("a changed host key must be refused");
    match &err {
        TransportError::HostKeyChanged {
            expected,
            presented,
            source_of_expected,
            ..
        } => {
            assert_eq!(expected, &old);
            assert_eq!(presented, &new);
            let file = sshd.project_known_hosts().display().to_string();
            assert!(
                source_of_expected.starts_with(&file),
                "{source_of_expected}"
            );
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&old) && message.contains(&new),
        "{message}"
    );
    // The check happened during the handshake: no credential was ever offered.
    let log = sshd.log();
    assert!(!log.contains("publickey"), "{log}");
}

/// Regression: known as ed25519, the host offering only ecdsa or rsa was recorded and used.
#[tokio::test]
async fn host_key_of_another_type_is_a_changed_key() {
    for kind in ["ecdsa", "rsa"] {
        let mut sshd = TestSshd::start();
        connect_root(&sshd).await.close().await;
        let recorded = fs::read_to_string(sshd.project_known_hosts()).unwrap();
        let old = sshd.host_fingerprint();

        sshd.restart_with_host_key_type(kind);
        assert!(!sshd.host_public_key().starts_with("ssh-ed25519"));
        let new = sshd.host_fingerprint();
        let err = Session::connect(&sshd.target("root"), &sshd.options())
            .await
            .err()
            .unwrap_or_else(|| panic!("a {kind} key for an ed25519 host was accepted"));
        match &err {
            TransportError::HostKeyChanged {
                expected,
                presented,
                ..
            } => {
                assert_eq!(expected, &old, "{kind}");
                assert_eq!(presented, &new, "{kind}");
            }
            other => panic!("{kind}: expected HostKeyChanged, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&old) && message.contains(&new),
            "{message}"
        );
        // Nothing recorded, no credential offered.
        assert_eq!(
            fs::read_to_string(sshd.project_known_hosts()).unwrap(),
            recorded
        );
        assert!(!sshd.log().contains("publickey"), "{}", sshd.log());
    }
}

/// The same with the key pinned in the inventory instead of recorded in a file.
#[tokio::test]
async fn pinned_host_key_of_another_type_is_a_changed_key() {
    let mut sshd = TestSshd::start();
    let pinned = sshd.host_public_key();
    let old = sshd.host_fingerprint();
    sshd.restart_with_host_key_type("ecdsa");
    let mut target = sshd.target("root");
    target.pinned_host_key = Some(pinned);
    match Session::connect(&target, &sshd.options()).await {
        Err(TransportError::HostKeyChanged {
            expected,
            presented,
            source_of_expected,
            ..
        }) => {
            assert_eq!(expected, old);
            assert_eq!(presented, sshd.host_fingerprint());
            assert_eq!(source_of_expected, "inventory host_key");
        }
        Err(other) => panic!("expected HostKeyChanged, got {other:?}"),
        Ok(_) => panic!("an ecdsa key was accepted for a host pinned as ed25519"),
    }
    assert!(!sshd.project_known_hosts().exists());
}

#[tokio::test]
async fn revoked_host_key_is_refused() {
    let sshd = TestSshd::start();
    fs::write(
        sshd.user_known_hosts(),
        format!("@revoked * {}\n", sshd.host_public_key()),
    )
    .unwrap();
    match Session::connect(&sshd.target("root"), &sshd.options()).await {
        Err(TransportError::HostKeyRevoked {
            fingerprint,
            location,
            ..
        }) => {
            assert_eq!(fingerprint, sshd.host_fingerprint());
            assert!(location.ends_with("user_known_hosts:1"), "{location}");
        }
        Err(other) => panic!("expected HostKeyRevoked, got {other:?}"),
        Ok(_) => panic!("a revoked host key was accepted"),
    }
    assert!(!sshd.project_known_hosts().exists());
}

#[tokio::test]
async fn host_known_only_through_a_cert_authority_is_refused_as_unsupported() {
    let sshd = TestSshd::start();
    let ca = sshd.dir().join("ca_key");
    keygen(&ca, "ed25519", &[]);
    let ca_pub = fs::read_to_string(ca.with_extension("pub")).unwrap();
    fs::write(
        sshd.user_known_hosts(),
        format!("@cert-authority [127.0.0.1]:* {ca_pub}"),
    )
    .unwrap();
    let err = Session::connect(&sshd.target("root"), &sshd.options())
        .await
        .err()
        .expect("a host vouched for by a CA we cannot check must not be accepted as new");
    assert!(
        matches!(err, TransportError::HostKeyCertAuthority { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not supported"), "{err}");
    assert!(!sshd.project_known_hosts().exists());
}

#[tokio::test]
async fn strict_mode_refuses_an_unknown_host() {
    let sshd = TestSshd::start();
    let opts = bootstrap::transport::ConnectOptions {
        strict_host_keys: true,
        ..sshd.options()
    };
    match Session::connect(&sshd.target("root"), &opts).await {
        Err(TransportError::HostKeyUnknown { fingerprint, .. }) => {
            assert_eq!(fingerprint, sshd.host_fingerprint());
        }
        Err(other) => panic!("expected HostKeyUnknown, got {other:?}"),
        Ok(_) => panic!("strict mode accepted an unknown host"),
    }
    assert!(!opts.project_known_hosts.exists());
}

#[tokio::test]
async fn pinned_host_key_wins_over_known_hosts() {
    let sshd = TestSshd::start();
    let other = sshd.dir().join("other_host_key");
    keygen(&other, "ed25519", &[]);
    let other_pub = fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_key: String = other_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");

    // known_hosts says another key; the inventory pins the right one: accepted.
    let wrong_line = format!("[127.0.0.1]:{} {other_key}\n", sshd.port());
    fs::write(sshd.user_known_hosts(), &wrong_line).unwrap();
    let mut target = sshd.target("root");
    target.pinned_host_key = Some(sshd.host_public_key());
    let session = Session::connect(&target, &sshd.options()).await.unwrap();
    assert_eq!(session.new_host_key(), None);
    session.close().await;
    assert!(!sshd.project_known_hosts().exists());

    // Without the pin, the same known_hosts line is a changed key (named by file).
    let err = Session::connect(&sshd.target("root"), &sshd.options())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, TransportError::HostKeyChanged { source_of_expected, .. }
            if source_of_expected.contains("user_known_hosts")),
        "{err:?}"
    );

    // known_hosts right, pin wrong: the pin still wins.
    let right_line = format!("[127.0.0.1]:{} {}\n", sshd.port(), sshd.host_public_key());
    fs::write(sshd.user_known_hosts(), right_line).unwrap();
    target.pinned_host_key = Some(other_key);
    match Session::connect(&target, &sshd.options()).await {
        Err(TransportError::HostKeyChanged {
            source_of_expected,
            presented,
            ..
        }) => {
            assert_eq!(source_of_expected, "inventory host_key");
            assert_eq!(presented, sshd.host_fingerprint());
        }
        Err(other) => panic!("expected HostKeyChanged, got {other:?}"),
        Ok(_) => panic!("a wrong pinned key was accepted"),
    }
}

#[tokio::test]
async fn rsa_key_in_pem_format_authenticates() {
    let sshd = TestSshd::start();
    let key = sshd.dir().join("rsa_key");
    keygen(&key, "rsa", &["-b", "2048", "-m", "PEM"]);
    assert!(fs::read_to_string(&key)
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    sshd.authorize(
        "root",
        &fs::read_to_string(key.with_extension("pub")).unwrap(),
    );
    let mut target = sshd.target("root");
    target.key_file = Some(key);
    let session = Session::connect(&target, &sshd.options())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert!(session.exec("true", None).await.unwrap().success());
    session.close().await;
    // OpenSSH >= 8.8 refuses SHA-1 `ssh-rsa` signatures, so this proves rsa-sha2 was chosen.
    assert!(sshd.log().contains("Accepted publickey for root"));
}

#[tokio::test]
async fn wrong_or_unreadable_keys_are_reported_as_such() {
    let sshd = TestSshd::start();
    let stranger = sshd.dir().join("stranger_key");
    keygen(&stranger, "ed25519", &[]);
    let mut target = sshd.target("root");
    target.key_file = Some(stranger);
    match Session::connect(&target, &sshd.options()).await {
        Err(TransportError::Auth { user, .. }) => assert_eq!(user, "root"),
        Err(other) => panic!("expected Auth, got {other:?}"),
        Ok(_) => panic!("an unauthorized key was accepted"),
    }

    let missing = sshd.dir().join("no_such_key");
    target.key_file = Some(missing.clone());
    match Session::connect(&target, &sshd.options()).await {
        Err(TransportError::Key { path, .. }) => assert_eq!(path, missing),
        Err(other) => panic!("expected Key, got {other:?}"),
        Ok(_) => panic!("connected without a key"),
    }
}

#[tokio::test]
async fn upload_writes_content_mode_and_owner() {
    let sshd = TestSshd::start();
    let session = Session::connect(&sshd.target(SUDO_USER), &sshd.options())
        .await
        .unwrap();
    let dest = sshd.dir().join("app.conf");
    let attrs = FileAttrs {
        mode: Some("0640".into()),
        owner: Some(SUDO_USER.into()),
        group: Some(SUDO_USER.into()),
    };
    let content = b"key = 'value'\n\0binary too\n";
    session
        .upload(content, dest.to_str().unwrap(), &attrs, None, false)
        .await
        .unwrap();
    assert_eq!(fs::read(&dest).unwrap(), content);
    let meta = fs::metadata(&dest).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    let uid = session.exec("id -u bootstrap-test", None).await.unwrap();
    assert_eq!(meta.uid().to_string(), uid.stdout_str().trim());
    assert_no_leftovers(sshd.dir(), "app.conf");
    session.close().await;
}

#[tokio::test]
async fn failed_validation_leaves_dest_untouched() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let dest = sshd.dir().join("sudoers.conf");
    fs::write(&dest, "old\n").unwrap();
    let err = session
        .upload(
            b"broken\n",
            dest.to_str().unwrap(),
            &FileAttrs::default(),
            Some("grep -q '^valid' %s || { echo 'syntax error in' %s; exit 1; }"),
            true,
        )
        .await
        .expect_err("validation must fail");
    let message = format!("{err:#}");
    assert!(message.contains("syntax error in"), "{message}");
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
    // Neither the temp file nor a backup stays behind.
    assert_no_leftovers(sshd.dir(), "sudoers.conf");
    let bak = fs::read_dir(sshd.dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".bak")
        })
        .count();
    assert_eq!(bak, 0);

    session
        .upload(
            b"valid\n",
            dest.to_str().unwrap(),
            &FileAttrs::default(),
            Some("grep -q '^valid' %s"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(fs::read_to_string(&dest).unwrap(), "valid\n");
    session.close().await;
}

#[tokio::test]
async fn upload_keeps_a_backup_when_asked() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let dest = sshd.dir().join("hosts");
    fs::write(&dest, "old\n").unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o604)).unwrap();
    session
        .upload(
            b"new\n",
            dest.to_str().unwrap(),
            &FileAttrs::default(),
            None,
            true,
        )
        .await
        .unwrap();
    assert_eq!(fs::read_to_string(&dest).unwrap(), "new\n");
    // No mode asked: the old file's mode is kept.
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o604
    );
    let backups: Vec<_> = fs::read_dir(sshd.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("hosts.") && name.ends_with(".bak")
        })
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(fs::read_to_string(&backups[0]).unwrap(), "old\n");
    session.close().await;
}

/// A validate command that stops the upload half-way: it says it is running, waits for `go`
/// (bounded), then fails.
fn stalling_validate(dir: &std::path::Path) -> String {
    format!(
        "touch {d}/validating; i=0; while [ ! -e {d}/go ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; false",
        d = dir.display()
    )
}

/// Names of upload temp files in `dir`.
fn upload_temp_files(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bootstrap-upload"))
        .collect()
}

/// Regression: with the connection cut, the upload's shell died of SIGPIPE on its next write
/// to the connection, before its EXIT trap could remove the temp file.
#[tokio::test]
async fn upload_whose_connection_is_cut_removes_its_temp_file() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let work = sshd.dir().join("work");
    fs::create_dir(&work).unwrap();
    let dest = work.join("big.bin");
    let content = vec![7u8; 4 << 20];
    let validate = stalling_validate(sshd.dir());
    let attrs = FileAttrs::default();
    let upload = session.upload(
        &content,
        dest.to_str().unwrap(),
        &attrs,
        Some(&validate),
        false,
    );
    let cutter = async {
        wait_for_path(&sshd.dir().join("validating")).await;
        assert_eq!(upload_temp_files(&work).len(), 1, "the upload is under way");
        sshd.cut_connections(false);
        fs::write(sshd.dir().join("go"), "").unwrap();
    };
    let (result, ()) = tokio::join!(upload, cutter);
    assert!(result.is_err(), "the connection was cut");
    // The remote shell lives on and must clean up by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !upload_temp_files(&work).is_empty() {
        assert!(
            Instant::now() < deadline,
            "temp file left behind: {:?}",
            upload_temp_files(&work)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dest.exists());
}

/// A shell killed outright (crash, reboot) cleans nothing: the next upload to the file does.
#[tokio::test]
async fn leftover_of_a_killed_upload_is_removed_by_the_next_upload() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let work = sshd.dir().join("work");
    fs::create_dir(&work).unwrap();
    let dest = work.join("big.bin");
    let content = vec![7u8; 4 << 20];
    let validate = stalling_validate(sshd.dir());
    let attrs = FileAttrs::default();
    let upload = session.upload(
        &content,
        dest.to_str().unwrap(),
        &attrs,
        Some(&validate),
        false,
    );
    let cutter = async {
        wait_for_path(&sshd.dir().join("validating")).await;
        sshd.cut_connections(true);
    };
    let (result, ()) = tokio::join!(upload, cutter);
    assert!(result.is_err(), "the connection was cut");
    let left = upload_temp_files(&work);
    assert_eq!(
        left.len(),
        1,
        "the killed shell could not clean up: {left:?}"
    );
    assert_eq!(fs::metadata(work.join(&left[0])).unwrap().len(), 4 << 20);

    let next = connect_root(&sshd).await;
    next.upload(
        b"small\n",
        dest.to_str().unwrap(),
        &FileAttrs::default(),
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"small\n");
    assert_eq!(upload_temp_files(&work), Vec::<String>::new());
    next.close().await;
}

/// Regression: on a full disk `cp` left a truncated `.bak` beside the file.
#[tokio::test]
async fn backup_on_a_full_disk_leaves_no_truncated_copy() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let disk = TinyDisk::mount(&sshd.dir().join("disk"), "256k");
    let dest = disk.path.join("data.bin");
    let old = vec![1u8; 160 * 1024];
    fs::write(&dest, &old).unwrap();
    // The new content fits beside the old; a full copy of the old one does not.
    let err = session
        .upload(
            &[2u8; 40 * 1024],
            dest.to_str().unwrap(),
            &FileAttrs::default(),
            None,
            true,
        )
        .await
        .expect_err("the backup cannot fit");
    assert!(format!("{err:#}").contains("No space left"), "{err:#}");
    let names: Vec<String> = fs::read_dir(&disk.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lost+found")
        .collect();
    assert_eq!(names, vec!["data.bin".to_string()], "leftovers beside dest");
    assert_eq!(fs::read(&dest).unwrap(), old);
    session.close().await;
}

/// A small tmpfs, unmounted when dropped.
struct TinyDisk {
    path: std::path::PathBuf,
}

impl TinyDisk {
    fn mount(path: &std::path::Path, size: &str) -> TinyDisk {
        fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs (needs root)");
        TinyDisk {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// Polls (bounded) until `path` exists.
async fn wait_for_path(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn read_file_returns_bytes_or_names_the_path() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let path = sshd.dir().join("data.bin");
    let bytes: Vec<u8> = (0..=255u8).collect();
    fs::write(&path, &bytes).unwrap();
    assert_eq!(
        session.read_file(path.to_str().unwrap()).await.unwrap(),
        bytes
    );

    let missing = sshd.dir().join("missing file");
    let err = session
        .read_file(missing.to_str().unwrap())
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains(missing.to_str().unwrap()), "{message}");
    assert!(message.contains("No such file"), "{message}");
    session.close().await;
}

#[tokio::test]
async fn verify_fresh_login_opens_a_new_connection() {
    let mut sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    session.verify_fresh_login().await.unwrap();
    let accepted = sshd.log().matches("Accepted publickey").count();
    assert_eq!(accepted, 2, "{}", sshd.log());

    // With the server gone, the fresh login must fail even though we had a session.
    sshd.stop();
    let err = session.verify_fresh_login().await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn dropped_connection_mid_command_is_disconnected_not_an_exit_status() {
    let mut sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let pid_file = sshd.dir().join("running.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());

    let command = session.exec(&script, None);
    let killer = async {
        // The command is running once it has written its pid.
        wait_for_file(&pid_file).await;
        sshd.stop();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(command, killer)
    })
    .await
    .expect("exec must notice the dropped connection");
    match result {
        Err(TransportError::Disconnected { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    // Later commands on the dead session fail the same way, quickly.
    let again = session.exec("true", None).await;
    assert!(
        matches!(again, Err(TransportError::Disconnected { .. })),
        "{again:?}"
    );

    sshd.restart();
    let fresh = connect_root(&sshd).await;
    assert!(fresh.exec("true", None).await.unwrap().success());
    fresh.close().await;
}

#[tokio::test]
async fn setup_is_retried_with_backoff_then_reported() {
    let sshd = TestSshd::start();
    let mut target = sshd.target("root");
    // A port nobody listens on: taken then released.
    target.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = bootstrap::transport::ConnectOptions {
        connect_attempts: 3,
        ..sshd.options()
    };
    let started = Instant::now();
    let err = Session::connect(&target, &opts).await.err().unwrap();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert!(err.is_retryable_setup());
    // Two pauses between three attempts: 200ms + 400ms.
    assert!(started.elapsed() >= Duration::from_millis(600));
}

/// Only `keep` and files the harness made may be in `dir`: no temp file from an upload.
fn assert_no_leftovers(dir: &std::path::Path, keep: &str) {
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.starts_with(".bootstrap-upload"),
            "temp file {name} left beside {keep}"
        );
    }
}

/// Set in the child process that runs `agent_identities_are_tried_in_turn`.
const AGENT_CHILD: &str = "BOOTSTRAP_TEST_AGENT_CHILD";

/// SSH_AUTH_SOCK is process-wide: the agent test runs alone in a child test process.
#[test]
fn key_from_ssh_agent_authenticates() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "transport::agent_identities_are_tried_in_turn",
            "--ignored",
            "--nocapture",
        ])
        .env(AGENT_CHILD, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[tokio::test]
#[ignore = "run by key_from_ssh_agent_authenticates in its own process"]
async fn agent_identities_are_tried_in_turn() {
    if std::env::var_os(AGENT_CHILD).is_none() {
        return;
    }
    let sshd = TestSshd::start();
    let socket = sshd.dir().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "ssh-agent socket never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A key the server does not know first, so the right one is only found by trying the next.
    let stranger = sshd.dir().join("stranger_key");
    keygen(&stranger, "ed25519", &[]);
    for key in [&stranger, &sshd.client_key()] {
        let added = std::process::Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(added.success());
    }
    // Only this test runs in this process, so changing the environment races with nothing.
    std::env::set_var("SSH_AUTH_SOCK", &socket);
    let mut target = sshd.target("root");
    target.key_file = None;
    let result = Session::connect(&target, &sshd.options()).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let session = result.unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert!(session.exec("true", None).await.unwrap().success());
    session.close().await;
}

/// Regression: a black hole during an upload hung for ever (no inactivity bound, so with the
/// send queue full no keepalive was ever sent or missed).
#[tokio::test]
async fn black_hole_during_an_upload_fails_within_the_dead_peer_bound() {
    let sshd = TestSshd::start();
    let proxy = BlackHoleProxy::start(sshd.port());
    let mut target = sshd.target("root");
    target.port = proxy.port();
    let opts = bootstrap::transport::ConnectOptions {
        keepalive_interval: Duration::from_secs(1),
        // As on a WAN link: the buffer fills long before the SSH window is used up.
        send_buffer: Some(16 * 1024),
        // The one reconnection attempt after the drop meets the black hole too.
        connect_timeout: Duration::from_secs(3),
        ..sshd.options()
    };
    let bound = opts.dead_peer_timeout();
    assert_eq!(bound, Duration::from_secs(4));
    let session = Session::connect(&target, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert!(session.exec("true", None).await.unwrap().success());

    let content = vec![0u8; 128 << 20];
    let work = sshd.dir().join("work");
    fs::create_dir(&work).unwrap();
    let dest = work.join("never.bin");
    let attrs = FileAttrs::default();
    let upload = session.upload(&content, dest.to_str().unwrap(), &attrs, None, false);
    // The hole opens once data is flowing: the send queue is full of upload when it does.
    let hole = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while upload_temp_files(&work).is_empty() {
            assert!(Instant::now() < deadline, "the upload never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        proxy.swallow();
        Instant::now()
    };
    let (result, started) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(upload, hole)
    })
    .await
    .expect("the upload must fail, not hang");
    let err = result.expect_err("nothing got through");
    let waited = started.elapsed();
    assert!(
        matches!(
            err.downcast_ref::<TransportError>(),
            Some(TransportError::Disconnected { .. })
        ),
        "{err:#}"
    );
    assert!(
        format!("{err:#}").contains("reconnecting failed"),
        "{err:#}"
    );
    // Detection, then one bounded reconnection attempt, and a little slack.
    let limit = bound + opts.connect_timeout + Duration::from_secs(4);
    assert!(waited < limit, "took {waited:?}, more than {limit:?}");
}

/// Regression: no command had a deadline, so `sleep infinity` waited for ever.
#[tokio::test]
async fn command_past_its_deadline_is_stopped_on_the_host() {
    let sshd = TestSshd::start();
    let session = Session::connect(&sshd.target(SUDO_USER), &sshd.options())
        .await
        .unwrap();
    let pid_file = sshd.dir().join("sleeper.pid");
    let script = format!("sleep 3600 & echo $! > {}; wait", pid_file.display());
    let started = Instant::now();
    let err = session
        .exec_with_deadline(&script, None, Some(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Deadline { seconds: 2, .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // What the command started is gone too, not left running on the host.
    let pid = fs::read_to_string(&pid_file).unwrap().trim().to_string();
    let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state.rsplit(") ").next().unwrap_or("");
    assert!(
        state.is_empty() || state.starts_with('Z'),
        "sleep {pid} still runs: {state}"
    );
    // A command within its deadline is not affected.
    let ok = session
        .exec_with_deadline("echo fine", None, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(ok.stdout_str(), "fine\n");
    session.close().await;
}

/// Regression: a rebooting host got 3 tries 0.2 s and 0.4 s apart; `wait_for_host` keeps trying.
#[tokio::test(flavor = "multi_thread")]
async fn host_that_comes_back_within_wait_for_host_is_reached() {
    let mut sshd = TestSshd::start();
    sshd.stop();
    // The "rebooting" host: something on the port drops every connection, like a host whose
    // sshd is not up yet.
    // The port sshd just left may still be held for a moment (another test's connection can
    // have it as its local port): a bounded retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match std::net::TcpListener::bind(("127.0.0.1", sshd.port())) {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot take port {} back: {e}", sshd.port()),
        }
    };
    let opts = bootstrap::transport::ConnectOptions {
        connect_attempts: 3,
        wait_for_host: Duration::from_secs(60),
        ..sshd.options()
    };
    let target = sshd.target("root");
    let connect = tokio::spawn(async move { Session::connect(&target, &opts).await });
    let refused = tokio::task::spawn_blocking(move || {
        // One more than the old three attempts.
        for _ in 0..4 {
            let (stream, _) = listener.accept().unwrap();
            drop(stream);
        }
    });
    refused.await.unwrap();
    sshd.restart();
    let session = tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .expect("bounded")
        .unwrap()
        .unwrap_or_else(|e| panic!("the host came back but: {e}"));
    assert!(session.exec("true", None).await.unwrap().success());
    session.close().await;
}

/// A dropped connection is re-established once, and the caller is told so (the command's
/// outcome is unknown, so it probes again) instead of every later command failing.
#[tokio::test]
async fn dropped_connection_is_reestablished_and_reported_as_reconnected() {
    let sshd = TestSshd::start();
    let session = connect_root(&sshd).await;
    let pid_file = sshd.dir().join("running.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let command = session.exec(&script, None);
    let cutter = async {
        wait_for_file(&pid_file).await;
        // A crash of the connection: the command dies with it; the host still answers.
        sshd.cut_connections(true);
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(command, cutter)
    })
    .await
    .expect("bounded");
    match result {
        Err(TransportError::Reconnected { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("expected Reconnected, got {other:?}"),
    }
    assert_eq!(session.reconnections(), 1);
    let again = session.exec("echo again", None).await.unwrap();
    assert_eq!(again.stdout_str(), "again\n");
    assert_eq!(sshd.log().matches("Accepted publickey").count(), 2);
    session.close().await;
}
