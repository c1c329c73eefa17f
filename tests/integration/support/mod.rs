//! Test harness: a throwaway OpenSSH `sshd` on 127.0.0.1, its keys and config in a tempdir.
//!
//! Needs root (sshd switches users) and the user `bootstrap-test` with passwordless sudo
//! (created by .ci/run) for `become` tests.

#![allow(dead_code)] // Each test module uses its own part of the harness.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bootstrap::transport::{ConnectOptions, SshTarget};

/// The non-root user with NOPASSWD sudo that `become` tests log in as.
pub const SUDO_USER: &str = "bootstrap-test";

/// A non-root user with no sudo rights at all; made on first use by `user_without_sudo`.
pub const NO_SUDO_USER: &str = "bootstrap-nosudo";

/// Creates `NO_SUDO_USER` (once per test process) and returns its name. Its password field
/// is `*` so sshd lets it in by key (a `!` would mean a locked account).
pub fn user_without_sudo() -> &'static str {
    static MADE: std::sync::Once = std::sync::Once::new();
    MADE.call_once(|| {
        let exists = Command::new("id")
            .arg(NO_SUDO_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if !exists {
            let made = Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/sh", NO_SUDO_USER])
                .status()
                .expect("useradd");
            assert!(made.success(), "useradd {NO_SUDO_USER} failed");
        }
        let unlocked = Command::new("usermod")
            .args(["-p", "*", NO_SUDO_USER])
            .status()
            .expect("usermod");
        assert!(unlocked.success());
        let _ = fs::remove_file(format!("/etc/sudoers.d/{NO_SUDO_USER}"));
    });
    NO_SUDO_USER
}

const SSHD: &str = "/usr/sbin/sshd";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TestSshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Bumped on each start so every run of sshd has its own log.
    generation: u32,
    /// `ssh-keygen -t` of the host key: ed25519 unless a test changes it.
    host_key_type: String,
}

impl TestSshd {
    /// Generates host and client keys, authorizes the client key for root and `SUDO_USER`,
    /// starts sshd and waits until it accepts connections.
    pub fn start() -> TestSshd {
        let dir = tempfile::tempdir().expect("tempdir");
        // sshd reads authorized_keys as the logging-in user, who must be able to traverse the dir.
        set_mode(dir.path(), 0o755);
        fs::create_dir_all(dir.path().join("authorized_keys")).unwrap();
        set_mode(&dir.path().join("authorized_keys"), 0o755);
        let mut sshd = TestSshd {
            dir,
            port: 0,
            child: None,
            generation: 0,
            host_key_type: "ed25519".into(),
        };
        sshd.generate_host_key();
        keygen(&sshd.client_key(), "ed25519", &[]);
        let client_pub = fs::read_to_string(sshd.client_key().with_extension("pub")).unwrap();
        for user in ["root", SUDO_USER, NO_SUDO_USER] {
            sshd.authorize(user, &client_pub);
        }
        // A free port can be taken between our probe and sshd's bind; try a few.
        for _ in 0..5 {
            sshd.port = free_port();
            if sshd.spawn() {
                return sshd;
            }
        }
        panic!("sshd would not start:\n{}", sshd.log());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client's private key (ed25519, unencrypted), authorized for root and `SUDO_USER`.
    pub fn client_key(&self) -> PathBuf {
        self.dir().join("client_key")
    }

    /// Appends a public key line to `user`'s authorized keys.
    pub fn authorize(&self, user: &str, public_key_line: &str) {
        let path = self.dir().join("authorized_keys").join(user);
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(public_key_line.trim());
        text.push('\n');
        fs::write(&path, text).unwrap();
        set_mode(&path, 0o644);
    }

    /// The host key as known_hosts writes it: "ssh-ed25519 AAAA...".
    pub fn host_public_key(&self) -> String {
        let line = fs::read_to_string(self.host_key().with_extension("pub")).unwrap();
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The host key's fingerprint as `ssh-keygen -l` prints it.
    pub fn host_fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.host_key().with_extension("pub"))
            .output()
            .expect("ssh-keygen -l");
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string()
    }

    /// A target for `user` on this sshd; `become` is on for anyone but root.
    pub fn target(&self, user: &str) -> SshTarget {
        SshTarget {
            name: format!("test-{user}"),
            address: "127.0.0.1".into(),
            port: self.port,
            user: user.into(),
            key_file: Some(self.client_key()),
            become_root: user != "root",
            pinned_host_key: None,
        }
    }

    /// Options whose known-hosts files all live in the tempdir; one attempt, not strict.
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            strict_host_keys: false,
            known_hosts_files: vec![self.user_known_hosts()],
            project_known_hosts: self.project_known_hosts(),
            connect_attempts: 1,
            ..ConnectOptions::default()
        }
    }

    /// Stands for ~/.ssh/known_hosts: read, never written by the tool.
    pub fn user_known_hosts(&self) -> PathBuf {
        self.dir().join("user_known_hosts")
    }

    /// The project's known-hosts file (its directory does not exist until a key is recorded).
    pub fn project_known_hosts(&self) -> PathBuf {
        self.dir().join("project/.bootstrap/known_hosts")
    }

    /// Kills sshd and every process under it, so live connections drop at once.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Collect the whole tree first: once the parent dies its children are re-parented.
        // The listener goes first, so no new connection can slip in while the rest die.
        let mut pids = vec![child.id()];
        pids.extend(descendants(child.id()));
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = child.wait();
    }

    /// Cuts every live connection (kills sshd's per-connection processes with SIGKILL) while
    /// the listener keeps accepting new ones. With `kill_commands` the remote commands die too
    /// (as in a crash or a reboot); without, they live on with their connection gone.
    pub fn cut_connections(&self, kill_commands: bool) {
        let Some(child) = &self.child else {
            return;
        };
        for pid in descendants(child.id()) {
            let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if kill_commands || name.starts_with("sshd") {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Starts sshd again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "sshd would not restart:\n{}", self.log());
    }

    /// Simulates a reinstalled host: new host key, same address and port.
    pub fn restart_with_new_host_key(&mut self) {
        self.stop();
        self.generate_host_key();
        assert!(self.spawn(), "sshd would not restart:\n{}", self.log());
    }

    /// Simulates a host (or a man in the middle) that now offers only a key of type `kind`.
    pub fn restart_with_host_key_type(&mut self, kind: &str) {
        self.stop();
        self.host_key_type = kind.to_string();
        self.generate_host_key();
        assert!(self.spawn(), "sshd would not restart:\n{}", self.log());
    }

    /// The log of the current (or last) run of sshd.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn host_key(&self) -> PathBuf {
        self.dir().join(format!("host_{}_key", self.host_key_type))
    }

    fn log_path(&self) -> PathBuf {
        self.dir().join(format!("sshd-{}.log", self.generation))
    }

    fn generate_host_key(&self) {
        let _ = fs::remove_file(self.host_key());
        let _ = fs::remove_file(self.host_key().with_extension("pub"));
        keygen(&self.host_key(), &self.host_key_type, &[]);
    }

    fn write_config(&self) -> PathBuf {
        let dir = self.dir().display();
        // Several loopback addresses on one port: an inventory refuses two hosts with the same
        // address and port, so multi-host tests give each host its own 127.0.0.N.
        let listen: String = (1..=LOOPBACK_HOSTS)
            .map(|n| format!("ListenAddress 127.0.0.{n}:{}\n", self.port))
            .collect();
        let config = format!(
            "{listen}\
             HostKey {host_key}\n\
             AuthorizedKeysFile {dir}/authorized_keys/%u\n\
             PidFile {dir}/sshd.pid\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             LogLevel VERBOSE\n",
            host_key = self.host_key().display(),
        );
        let path = self.dir().join("sshd_config");
        fs::write(&path, config).unwrap();
        path
    }

    /// Starts sshd and waits (bounded) until its port accepts; false if sshd exits first.
    fn spawn(&mut self) -> bool {
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd (privilege separation dir)");
        self.generation += 1;
        let config = self.write_config();
        let log = fs::File::create(self.log_path()).unwrap();
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run /usr/sbin/sshd (is openssh-server installed?)");
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs ssh-keygen for an unencrypted key of `kind` at `path` (extra args e.g. `-m PEM`).
pub fn keygen(path: &Path, kind: &str, extra: &[&str]) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "bootstrap-test", "-f"])
        .arg(path)
        .args(extra)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen -t {kind} failed");
}

/// Polls (bounded) until `path` exists with content; for waiting on a remote command's progress.
pub async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many loopback addresses (127.0.0.1 ..) the test sshd listens on.
pub const LOOPBACK_HOSTS: usize = 4;

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every process below `root`, from /proc's parent links.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A TCP proxy on 127.0.0.1 in front of a port, which can turn into a black hole: once
/// `swallow` is called it forwards nothing more in either direction and reads nothing more,
/// while keeping every connection open (a peer gone without a FIN or RST, as on a WAN).
pub struct BlackHoleProxy {
    port: u16,
    hole: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlackHoleProxy {
    pub fn start(upstream: u16) -> BlackHoleProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hole = Arc::new(AtomicBool::new(false));
        let flag = hole.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                // A small receive buffer, as on a slow link: a stalled peer fills it at once.
                small_receive_buffer(&client);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || forward(from, to, &flag));
                }
            }
        });
        fn forward(mut from: TcpStream, mut to: TcpStream, hole: &AtomicBool) {
            use std::io::{Read, Write};
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if hole.load(Ordering::SeqCst) {
                    // Swallow this chunk and read no more; keep both sockets open forever.
                    let _keep = (from, to);
                    loop {
                        std::thread::park();
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
        BlackHoleProxy { port, hole }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on nothing gets through.
    pub fn swallow(&self) {
        self.hole.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn small_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket descriptor and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

/// The repository's inventory, playbooks and templates in a scratch directory, with the hosts'
/// addresses moved to TEST-NET (nothing here may connect anywhere, but just in case); no
/// secrets file.
pub fn shipped_project() -> tempfile::TempDir {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let inventory = fs::read_to_string(repo.join("inventory.toml"))
        .unwrap()
        .replace("91.107.191.148", "192.0.2.11")
        .replace("91.107.171.123", "192.0.2.12")
        .replace("91.107.185.11", "192.0.2.13");
    fs::write(dir.path().join("inventory.toml"), inventory).unwrap();
    let status = Command::new("cp")
        .args(["-r", "playbooks", "files"])
        .arg(dir.path())
        .current_dir(repo)
        .status()
        .unwrap();
    assert!(status.success());
    dir
}
