//! Talking to hosts: russh, one connection per host for the whole run, a channel per command.
//!
//! Sudo wrapping and shell quoting live in `shell` and nowhere else. A command's exit status is
//! an `ExecOutput`, never an error: errors here are transport failures only.

mod abandon;
mod handler;
pub mod keys;
pub mod known_hosts;
pub mod shell;
pub mod ssh;
pub mod upload;

use std::path::PathBuf;
use std::time::Duration;

pub use ssh::Session;

/// Where and how to reach one host. Built by the inventory layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Inventory name, used in messages.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Private key file (ed25519 or RSA, unencrypted). `None` means: use ssh-agent.
    pub key_file: Option<PathBuf>,
    /// Wrap commands in `sudo -n` (ignored when the user is root).
    pub become_root: bool,
    /// A host key pinned in the inventory, as in known_hosts: "ssh-ed25519 AAAA...". Wins over files.
    pub pinned_host_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Bound of one setup attempt (TCP connect, then handshake and authentication).
    pub connect_timeout: Duration,
    /// Idle time before a keepalive is sent; see `dead_peer_timeout`.
    pub keepalive_interval: Duration,
    /// Refuse hosts whose key is not known yet (instead of accepting and recording them).
    pub strict_host_keys: bool,
    /// Files read for known keys, e.g. ~/.ssh/known_hosts. Missing files are fine.
    pub known_hosts_files: Vec<PathBuf>,
    /// The project's own known-hosts file: also read, and where newly accepted keys are written.
    pub project_known_hosts: PathBuf,
    /// Attempts at connection setup (only setup is ever retried), with backoff between them.
    pub connect_attempts: u32,
    /// Setup keeps being retried for at least this long after the first attempt (a host that
    /// is rebooting); `connect_attempts` still applies when it is longer.
    pub wait_for_host: Duration,
    /// Cap on the kernel's send buffer for the connection (`None`: the system's autotuning).
    /// On a slow link a smaller buffer keeps keepalives from queuing behind megabytes of upload.
    pub send_buffer: Option<u32>,
    /// Deadline of a remote command run by `exec` when the caller gives none (`None`: no bound).
    pub command_deadline: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            strict_host_keys: false,
            known_hosts_files: Vec::new(),
            project_known_hosts: PathBuf::from(".bootstrap/known_hosts"),
            connect_attempts: 3,
            wait_for_host: Duration::ZERO,
            send_buffer: None,
            // A bound for a command that hangs (a stuck restart), far above any honest step.
            command_deadline: Some(Duration::from_secs(3600)),
        }
    }
}

impl ConnectOptions {
    /// A connection with no traffic from the peer for this long (keepalives unanswered) or a
    /// write that makes no progress for this long is declared dead.
    pub fn dead_peer_timeout(&self) -> Duration {
        self.keepalive_interval * (KEEPALIVE_MAX as u32 + 1)
    }
}

/// Keepalives without an answer before the connection is declared dead.
pub(crate) const KEEPALIVE_MAX: usize = 3;

/// What a finished remote command left behind. A non-zero status is not a transport error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.exit_status == 0
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Transport failures: the caller branches on these (retry setup, report a changed key, ...).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("connection to {address} timed out after {seconds}s")]
    Timeout { address: String, seconds: u64 },
    #[error("authentication as {user} failed ({method})")]
    Auth { user: String, method: String },
    #[error(
        "HOST KEY CHANGED for {address}: expected {expected} ({source_of_expected}), got {presented}; \
         if the host was reinstalled on purpose, remove its line from {source_of_expected}"
    )]
    HostKeyChanged {
        address: String,
        expected: String,
        presented: String,
        source_of_expected: String,
    },
    #[error(
        "unknown host key for {address} ({fingerprint}) and --strict-host-keys is set; \
         pin it in the inventory (host_key) or add it to a known_hosts file"
    )]
    HostKeyUnknown {
        address: String,
        fingerprint: String,
    },
    #[error(
        "REVOKED host key for {address} ({fingerprint}), marked @revoked in {location}; \
         refusing to connect"
    )]
    HostKeyRevoked {
        address: String,
        fingerprint: String,
        location: String,
    },
    #[error(
        "{address} is known only through a @cert-authority line ({location}), and host \
         certificates are not supported; pin the host key in the inventory (host_key) or add a \
         plain known_hosts line for it"
    )]
    HostKeyCertAuthority { address: String, location: String },
    #[error("cannot load key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("connection to {address} lost: {reason}")]
    Disconnected { address: String, reason: String },
    /// The connection dropped and was re-established: what was running has an unknown
    /// outcome (this command may or may not have run). Probe again before changing anything.
    #[error(
        "connection to {address} lost ({reason}) and re-established; the command's outcome is \
         unknown: probe again"
    )]
    Reconnected { address: String, reason: String },
    #[error(
        "sudo -n failed for {user} on {address}: {message}; {}",
        if *missing {
            "install sudo on the host, or log in as root (user = \"root\")"
        } else {
            "give the user passwordless sudo (a sudoers line with NOPASSWD), or set become = false"
        }
    )]
    Sudo {
        address: String,
        user: String,
        /// sudo is not installed (the login shell said "not found").
        missing: bool,
        /// sudo's own words, e.g. "sudo: a password is required".
        message: String,
    },
    #[error(
        "a command on {address} did not finish within its deadline of {seconds}s and was stopped"
    )]
    Deadline { address: String, seconds: u64 },
    #[error("ssh error with {address}: {reason}")]
    Protocol { address: String, reason: String },
}

impl TransportError {
    /// Only failures during setup that may pass are retried; never host-key or auth problems.
    pub fn is_retryable_setup(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. } | TransportError::Timeout { .. }
        )
    }
}
