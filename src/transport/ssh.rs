//! One SSH connection per host (russh), a channel per command.
//!
//! The host key is checked inside the handshake (`check_server_key`), before any credential
//! leaves this machine. Setup failures that may pass (refused, timed out) are retried; nothing
//! after setup ever is.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use russh::client::{self, AuthResult, DisconnectReason};
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};
use sha2::Digest as _;

use super::known_hosts::{self, Entry, Lookup};
use super::shell::{quote, wrap};
use super::*;

/// Keepalives without an answer before the connection is declared dead.
const KEEPALIVE_MAX: usize = 3;
/// First pause between setup attempts; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

pub struct Session {
    /// Shared with the tasks that stop abandoned commands.
    handle: Arc<client::Handle<Client>>,
    target: SshTarget,
    opts: ConnectOptions,
    new_host_key: Option<String>,
    /// Why the connection ended, as told to the handler; read when a channel breaks.
    lost: Arc<Mutex<Option<String>>>,
}

impl Session {
    /// Connect + authenticate + verify host key, retrying only retryable setup errors.
    pub async fn connect(
        target: &SshTarget,
        opts: &ConnectOptions,
    ) -> Result<Session, TransportError> {
        let attempts = opts.connect_attempts.max(1);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=attempts {
            match connect_once(target, opts).await {
                Err(e) if e.is_retryable_setup() && attempt < attempts => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                result => return result,
            }
        }
        unreachable!("the last attempt always returns")
    }

    /// The fingerprint of a host key this connection accepted and recorded (accept-new).
    pub fn new_host_key(&self) -> Option<&str> {
        self.new_host_key.as_deref()
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Runs `script` (as root when the target says `become_root`); a non-zero exit is `Ok`.
    pub async fn exec(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, TransportError> {
        self.run_command(script, self.target.become_root, stdin)
            .await
    }

    /// Runs `script` as the login user, never through sudo.
    pub async fn exec_unprivileged(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, TransportError> {
        self.run_command(script, false, stdin).await
    }

    /// Atomic upload in one round trip: temp file beside `dest`, sha256 check, attributes,
    /// optional validation and backup, then rename over `dest`.
    pub async fn upload(
        &self,
        content: &[u8],
        dest: &str,
        attrs: &crate::modules::FileAttrs,
        validate: Option<&str>,
        backup: bool,
    ) -> anyhow::Result<()> {
        let sha256 = hex::encode(sha2::Sha256::digest(content));
        let script = upload_script(dest, &sha256, attrs, validate, backup);
        let out = self.exec(&script, Some(content)).await?;
        if !out.success() {
            bail!(
                "upload to {dest} failed (exit {}): {}",
                out.exit_status,
                out.stderr_str().trim()
            );
        }
        Ok(())
    }

    /// Reads a remote file (as root when `become_root`) into memory.
    pub async fn read_file(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let out = self
            .exec(&format!("cat -- {}", quote(path)), None)
            .await
            .with_context(|| format!("reading {path}"))?;
        if !out.success() {
            bail!("cannot read {path}: {}", out.stderr_str().trim());
        }
        Ok(out.stdout)
    }

    /// Proves a brand-new login still works (e.g. after a firewall change).
    pub async fn verify_fresh_login(&self) -> Result<(), TransportError> {
        let opts = ConnectOptions {
            connect_attempts: 1,
            ..self.opts.clone()
        };
        let fresh = Session::connect(&self.target, &opts).await?;
        let result = fresh.exec_unprivileged("true", None).await;
        fresh.close().await;
        match result? {
            out if out.success() => Ok(()),
            out => Err(TransportError::Protocol {
                address: address_of(&self.target),
                reason: format!("`true` exited {} on a fresh login", out.exit_status),
            }),
        }
    }

    /// Starts a long-lived `script` (as root when `become_root`) and reads its stdout until a
    /// line equal to `ready` (returned: what came before it), or until it ends (`Err` with its
    /// output in `Ok(Err(..))`). A `Held` command keeps running until released or until this
    /// connection ends: it holds whatever the script holds (e.g. a lock) for the session.
    pub async fn hold(
        &self,
        script: &str,
        ready: &str,
    ) -> Result<Result<(String, Held), ExecOutput>, TransportError> {
        let command = wrap(script, &self.target.user, self.target.become_root);
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.broken("opening a channel", &e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.broken("starting a command", &e))?;
        let (mut reader, writer) = channel.split();
        let mut out = ExecOutput::default();
        let marker = format!("{ready}\n");
        loop {
            match reader.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    out.stdout.extend_from_slice(&data);
                    let text = out.stdout_str();
                    if let Some(at) = text.find(&marker) {
                        // Drain what the command prints later, so its output never blocks it.
                        let drain =
                            tokio::spawn(async move { while reader.wait().await.is_some() {} });
                        return Ok(Ok((
                            text[..at].to_string(),
                            Held {
                                writer: Some(writer),
                                drain,
                            },
                        )));
                    }
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    out.stderr.extend_from_slice(&data)
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => out.exit_status = exit_status,
                Some(ChannelMsg::Close) | None => return Ok(Err(out)),
                Some(_) => {}
            }
        }
    }

    pub async fn close(self) {
        // The peer may already be gone; there is nothing useful to do about it then.
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }

    async fn run_command(
        &self,
        script: &str,
        become_root: bool,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, TransportError> {
        // A word in the command line that names this command on the host, so an abandoned
        // one can be found and stopped there (OpenSSH refuses `signal` requests).
        let token = format!(
            "bootstrap-cmd-{}-{}-end",
            std::process::id(),
            COMMANDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let command = wrap(
            &format!(": {token}\n{script}"),
            &self.target.user,
            become_root,
        );
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.broken("opening a channel", &e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.broken("starting a command", &e))?;
        let (mut reader, writer) = channel.split();
        // Dropped before the command ended (a deadline, an interrupt): stop it on the host
        // rather than leave it running detached from us.
        let writer = Arc::new(writer);
        let abandon = AbandonGuard(Some(Abandoned {
            handle: self.handle.clone(),
            writer: writer.clone(),
            token,
            user: self.target.user.clone(),
            become_root,
        }));

        let input = async {
            if let Some(bytes) = stdin {
                writer.data(bytes).await?;
            }
            writer.eof().await
        };
        let mut input = std::pin::pin!(input);
        let mut input_done = false;
        let mut out = ExecOutput::default();
        let mut status = None;
        let mut signal = None;
        loop {
            tokio::select! {
                // A command may exit without reading its stdin; the read side tells what happened.
                _ = &mut input, if !input_done => input_done = true,
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => out.stdout.extend_from_slice(&data),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        out.stderr.extend_from_slice(&data)
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => signal = Some(signal_name),
                    Some(ChannelMsg::Failure) => {
                        return Err(TransportError::Protocol {
                            address: address_of(&self.target),
                            reason: "the server refused to run the command".into(),
                        })
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
        }
        match (status, signal) {
            (Some(code), _) => out.exit_status = code,
            (None, Some(sig)) => {
                out.exit_status = 128 + signal_number(&sig);
                let note = format!("\n[remote command killed by signal {sig:?}]\n");
                out.stderr.extend_from_slice(note.as_bytes());
            }
            (None, None) => return Err(self.lost_error("a command was running")),
        }
        abandon.finished();
        Ok(out)
    }

    /// A channel operation failed: name the cause the handler saw if the connection is gone.
    fn broken(&self, doing: &str, error: &russh::Error) -> TransportError {
        if self.handle.is_closed() || self.lost.lock().unwrap().is_some() {
            return self.lost_error(doing);
        }
        match error {
            russh::Error::SendError | russh::Error::Disconnect | russh::Error::HUP => {
                self.lost_error(doing)
            }
            other => TransportError::Protocol {
                address: address_of(&self.target),
                reason: format!("{doing}: {other}"),
            },
        }
    }

    fn lost_error(&self, doing: &str) -> TransportError {
        let why = self.lost.lock().unwrap().clone();
        TransportError::Disconnected {
            address: address_of(&self.target),
            reason: match why {
                Some(why) => format!("{why}, while {doing}"),
                None => format!("the channel closed without an exit status while {doing}"),
            },
        }
    }
}

/// Numbers the commands of this process, for their tokens.
static COMMANDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A remote command whose result nobody waits for any more.
struct Abandoned {
    handle: Arc<client::Handle<Client>>,
    writer: Arc<russh::ChannelWriteHalf<client::Msg>>,
    token: String,
    user: String,
    become_root: bool,
}

/// Stops the command on the host when dropped before it finished: TERM to the process groups
/// of the processes whose command line carries its token (sudo and the shell in it), through
/// a channel of its own, then its channel is closed.
struct AbandonGuard(Option<Abandoned>);

impl AbandonGuard {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        let Some(a) = self.0.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let _ = a.writer.eof().await;
            let kill = format!(
                "anc=\" $$ \"; p=$$\n\
                 while [ \"$p\" -gt 1 ] 2>/dev/null; do p=$(ps -o ppid= -p \"$p\" | tr -d ' '); anc=\"$anc$p \"; done\n\
                 # This killer's own command line carries the token too: never itself or its parents.\n\
                 all=''; frontier=''\n\
                 for p in $(pgrep -f -- {token}); do case \"$anc\" in *\" $p \"*) ;; *) frontier=\"$frontier $p\";; esac; done\n\
                 while [ -n \"$frontier\" ]; do\n\
                 all=\"$all $frontier\"; next=''\n\
                 for p in $frontier; do next=\"$next $(pgrep -P \"$p\" | tr '\\n' ' ')\"; done\n\
                 frontier=$(echo $next)\n\
                 done\n\
                 [ -n \"$all\" ] && kill -TERM $all 2>/dev/null\n\
                 true\n",
                token = a.token
            );
            let command = wrap(&kill, &a.user, a.become_root);
            if let Ok(channel) = a.handle.channel_open_session().await {
                if channel.exec(true, command).await.is_ok() {
                    let (mut reader, _w) = channel.split();
                    let _ = tokio::time::timeout(Duration::from_secs(10), async {
                        while reader.wait().await.is_some() {}
                    })
                    .await;
                }
            }
            let _ = a.writer.close().await;
        });
    }
}

/// A command started by `Session::hold`, still running on the host.
pub struct Held {
    writer: Option<russh::ChannelWriteHalf<client::Msg>>,
    drain: tokio::task::JoinHandle<()>,
}

/// How long `Held::release` waits for the command to end after its input did.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

impl Held {
    /// Sends `last_words` and the end of input, then waits (bounded) for the command to end,
    /// so whatever it does on the way out is done when this returns.
    pub async fn release(mut self, last_words: &[u8]) {
        if let Some(w) = self.writer.take() {
            if !last_words.is_empty() {
                let _ = w.data(last_words).await;
            }
            let _ = w.eof().await;
            let _ = tokio::time::timeout(RELEASE_WAIT, &mut self.drain).await;
            let _ = w.close().await;
        }
        self.drain.abort();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// One setup attempt: TCP (bounded by the timeout), handshake with host key check, auth.
async fn connect_once(
    target: &SshTarget,
    opts: &ConnectOptions,
) -> Result<Session, TransportError> {
    let address = address_of(target);
    let timeout = |_| TransportError::Timeout {
        address: address.clone(),
        seconds: opts.connect_timeout.as_secs().max(1),
    };
    let stream = tokio::time::timeout(
        opts.connect_timeout,
        tokio::net::TcpStream::connect((target.address.as_str(), target.port)),
    )
    .await
    .map_err(timeout)?
    .map_err(|e| TransportError::Connect {
        address: address.clone(),
        reason: e.to_string(),
    })?;
    // Small request/response packets: don't let Nagle hold them back.
    let _ = stream.set_nodelay(true);

    let files = read_known_hosts(opts);
    let host = known_hosts::host_field(&target.address, target.port);
    let preferred_types = match &target.pinned_host_key {
        Some(pinned) => pinned
            .split_whitespace()
            .take(1)
            .map(String::from)
            .collect(),
        None => {
            let all: Vec<Entry> = files.iter().flat_map(|(_, e)| e.clone()).collect();
            known_hosts::known_key_types(&all, &host)
        }
    };
    let config = Arc::new(client::Config {
        keepalive_interval: Some(opts.keepalive_interval),
        keepalive_max: KEEPALIVE_MAX,
        inactivity_timeout: None,
        nodelay: true,
        preferred: russh::Preferred {
            key: Cow::Owned(host_key_preference(&preferred_types)),
            ..Default::default()
        },
        ..Default::default()
    });
    let new_host_key = Arc::new(Mutex::new(None));
    let lost = Arc::new(Mutex::new(None));
    let handler = Client {
        address: address.clone(),
        host,
        pinned: target.pinned_host_key.clone(),
        files,
        strict: opts.strict_host_keys,
        project_file: opts.project_known_hosts.clone(),
        target: (target.address.clone(), target.port),
        new_host_key: new_host_key.clone(),
        lost: lost.clone(),
    };

    let setup = async {
        let mut handle = client::connect_stream(config, stream, handler)
            .await
            .map_err(|e| e.into_transport(&address))?;
        authenticate(&mut handle, target).await?;
        Ok::<_, TransportError>(handle)
    };
    let handle = tokio::time::timeout(opts.connect_timeout, setup)
        .await
        .map_err(timeout)??;
    let new_host_key = new_host_key.lock().unwrap().take();
    Ok(Session {
        handle: Arc::new(handle),
        target: target.clone(),
        opts: opts.clone(),
        new_host_key,
        lost,
    })
}

async fn authenticate(
    handle: &mut client::Handle<Client>,
    target: &SshTarget,
) -> Result<(), TransportError> {
    let address = address_of(target);
    let protocol = |e: russh::Error| TransportError::Protocol {
        address: address.clone(),
        reason: format!("during authentication: {e}"),
    };
    match &target.key_file {
        Some(path) => {
            let path = expand_home(path);
            let key =
                russh::keys::load_secret_key(&path, None).map_err(|e| TransportError::Key {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let hash = rsa_hash(handle, key.algorithm()).await.map_err(protocol)?;
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            let result = handle
                .authenticate_publickey(&target.user, key)
                .await
                .map_err(protocol)?;
            auth_outcome(result, target, format!("publickey {}", path.display()))
        }
        None => authenticate_with_agent(handle, target).await,
    }
}

/// Tries each identity of the ssh-agent named by SSH_AUTH_SOCK in turn.
async fn authenticate_with_agent(
    handle: &mut client::Handle<Client>,
    target: &SshTarget,
) -> Result<(), TransportError> {
    let auth_error = |method: String| TransportError::Auth {
        user: target.user.clone(),
        method,
    };
    let mut agent = AgentClient::connect_env()
        .await
        .map_err(|e| auth_error(format!("no key_file and no usable ssh-agent: {e}")))?;
    let identities = agent
        .request_identities()
        .await
        .map_err(|e| auth_error(format!("ssh-agent: {e}")))?;
    for identity in &identities {
        let key = identity.public_key().into_owned();
        let hash = rsa_hash(handle, key.algorithm())
            .await
            .map_err(|e| auth_error(format!("ssh-agent: {e}")))?;
        let result = handle
            .authenticate_publickey_with(&target.user, key, hash, &mut agent)
            .await;
        // An identity the agent cannot sign with is skipped, like OpenSSH does.
        if let Ok(AuthResult::Success) = result {
            return Ok(());
        }
    }
    Err(auth_error(format!(
        "ssh-agent, {} identities tried",
        identities.len()
    )))
}

fn auth_outcome(
    result: AuthResult,
    target: &SshTarget,
    method: String,
) -> Result<(), TransportError> {
    if result.success() {
        Ok(())
    } else {
        Err(TransportError::Auth {
            user: target.user.clone(),
            method,
        })
    }
}

/// RSA keys sign with the best SHA-2 hash the server accepts; other keys have no choice.
async fn rsa_hash(
    handle: &client::Handle<Client>,
    algorithm: Algorithm,
) -> Result<Option<HashAlg>, russh::Error> {
    if !algorithm.clone().is_rsa() {
        return Ok(None);
    }
    Ok(handle.best_supported_rsa_hash().await?.flatten())
}

/// Host key algorithms with those of keys already on record first, so the server shows the one we know.
fn host_key_preference(known_types: &[String]) -> Vec<Algorithm> {
    let mut algorithms = russh::Preferred::DEFAULT.key.to_vec();
    let rank = |alg: &Algorithm| {
        let name = if alg.clone().is_rsa() {
            "ssh-rsa"
        } else {
            alg.as_str()
        };
        known_types
            .iter()
            .position(|t| t == name)
            .unwrap_or(known_types.len())
    };
    algorithms.sort_by_key(rank);
    algorithms
}

/// Every known_hosts file that exists, parsed; the project's own file last.
fn read_known_hosts(opts: &ConnectOptions) -> Vec<(PathBuf, Vec<Entry>)> {
    opts.known_hosts_files
        .iter()
        .chain(std::iter::once(&opts.project_known_hosts))
        .map(|path| expand_home(path))
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path, known_hosts::parse(&text)))
        })
        .collect()
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

fn address_of(target: &SshTarget) -> String {
    if target.address.contains(':') {
        format!("[{}]:{}", target.address, target.port)
    } else {
        format!("{}:{}", target.address, target.port)
    }
}

fn signal_number(sig: &Sig) -> u32 {
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 127,
    }
}

/// The remote side of `upload`: everything in one script, the temp file removed on any failure.
fn upload_script(
    dest: &str,
    sha256: &str,
    attrs: &crate::modules::FileAttrs,
    validate: Option<&str>,
    backup: bool,
) -> String {
    let mut s = String::new();
    s.push_str("set -e\n");
    s.push_str(&format!("dest={}\n", quote(dest)));
    s.push_str("dir=$(dirname -- \"$dest\")\n");
    s.push_str("tmp=$(umask 077 && mktemp \"$dir/.bootstrap-upload.XXXXXXXX\")\n");
    s.push_str("trap 'rm -f -- \"$tmp\"' EXIT\n");
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
        s.push_str("if [ -e \"$dest\" ]; then cp -p -- \"$dest\" \"$dest.$(date +%s).bak\"; fi\n");
    }
    s.push_str("mv -f -- \"$tmp\" \"$dest\"\n");
    s.push_str("trap - EXIT\n");
    s
}

fn owner_spec(attrs: &crate::modules::FileAttrs) -> Option<String> {
    match (&attrs.owner, &attrs.group) {
        (Some(o), Some(g)) => Some(format!("{o}:{g}")),
        (Some(o), None) => Some(o.clone()),
        (None, Some(g)) => Some(format!(":{g}")),
        (None, None) => None,
    }
}

/// russh handler: checks the host key during the handshake and remembers why a connection ended.
struct Client {
    address: String,
    /// The known_hosts host field for the target, e.g. `[10.0.0.1]:2222`.
    host: String,
    pinned: Option<String>,
    files: Vec<(PathBuf, Vec<Entry>)>,
    strict: bool,
    project_file: PathBuf,
    target: (String, u16),
    new_host_key: Arc<Mutex<Option<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

#[derive(Debug)]
enum HandlerError {
    Ssh(russh::Error),
    HostKey(TransportError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Ssh(e) => write!(f, "{e}"),
            HandlerError::HostKey(e) => write!(f, "{e}"),
        }
    }
}

impl HandlerError {
    /// Errors before the session is up: network trouble may pass, the rest won't.
    fn into_transport(self, address: &str) -> TransportError {
        match self {
            HandlerError::HostKey(e) => e,
            HandlerError::Ssh(
                e @ (russh::Error::IO(_)
                | russh::Error::HUP
                | russh::Error::Disconnect
                | russh::Error::ConnectionTimeout),
            ) => TransportError::Connect {
                address: address.to_string(),
                reason: format!("during the SSH handshake: {e}"),
            },
            HandlerError::Ssh(e) => TransportError::Protocol {
                address: address.to_string(),
                reason: e.to_string(),
            },
        }
    }
}

impl Client {
    /// Pinned key, then the known_hosts files; an unknown key is recorded unless strict.
    fn verify(&self, key_type: &str, key: &[u8]) -> Result<(), TransportError> {
        let presented = known_hosts::fingerprint(key);
        if let Some(pinned) = &self.pinned {
            let (pinned_type, pinned_key) =
                known_hosts::parse_public_key(pinned).ok_or_else(|| TransportError::Protocol {
                    address: self.address.clone(),
                    reason: "the inventory host_key is not a `type base64` public key".into(),
                })?;
            if pinned_type == key_type && pinned_key == key {
                return Ok(());
            }
            return Err(self.changed(&pinned_key, presented, "inventory host_key".into()));
        }
        let mut changed = None;
        for (path, entries) in &self.files {
            match known_hosts::lookup(entries, &self.host, key_type, key) {
                Lookup::Known => return Ok(()),
                Lookup::Changed { expected, line } if changed.is_none() => {
                    changed = Some((expected, format!("{}:{line}", path.display())));
                }
                _ => {}
            }
        }
        if let Some((expected, source)) = changed {
            return Err(self.changed(&expected, presented, source));
        }
        if self.strict {
            return Err(TransportError::HostKeyUnknown {
                address: self.address.clone(),
                fingerprint: presented,
            });
        }
        let line = known_hosts::format_entry(&self.target.0, self.target.1, key_type, key);
        known_hosts::append_entry(&self.project_file, &line).map_err(|e| {
            TransportError::Protocol {
                address: self.address.clone(),
                reason: format!(
                    "cannot record the new host key in {}: {e}",
                    self.project_file.display()
                ),
            }
        })?;
        *self.new_host_key.lock().unwrap() = Some(presented);
        Ok(())
    }

    fn changed(&self, expected: &[u8], presented: String, source: String) -> TransportError {
        TransportError::HostKeyChanged {
            address: self.address.clone(),
            expected: known_hosts::fingerprint(expected),
            presented,
            source_of_expected: source,
        }
    }
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // We never advertise certificate host key algorithms, so a certificate is a protocol error.
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            return Err(HandlerError::HostKey(TransportError::Protocol {
                address: self.address.clone(),
                reason: "the server presented a host certificate we did not ask for".into(),
            }));
        };
        let unreadable = || {
            HandlerError::HostKey(TransportError::Protocol {
                address: self.address.clone(),
                reason: "cannot encode the server's host key".into(),
            })
        };
        let openssh = key.to_openssh().map_err(|_| unreadable())?;
        let (key_type, blob) = known_hosts::parse_public_key(&openssh).ok_or_else(unreadable)?;
        self.verify(&key_type, &blob)
            .map(|()| true)
            .map_err(HandlerError::HostKey)
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let why = match &reason {
            DisconnectReason::ReceivedDisconnect(info) => format!(
                "the server disconnected ({:?}{}{})",
                info.reason_code,
                if info.message.is_empty() { "" } else { ": " },
                info.message
            ),
            DisconnectReason::Error(HandlerError::Ssh(russh::Error::KeepaliveTimeout)) => {
                "no answer to keepalives".to_string()
            }
            DisconnectReason::Error(HandlerError::Ssh(russh::Error::IO(e)))
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                "the server or the network closed the connection".to_string()
            }
            DisconnectReason::Error(e) => format!("connection error: {e}"),
        };
        *self.lost.lock().unwrap() = Some(why);
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::FileAttrs;

    /// The runner holds sessions across tasks and spawns their futures.
    #[allow(dead_code)]
    fn sessions_and_their_futures_are_send(session: &Session) {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: T) {}
        send_sync(session);
        send(session.exec("true", None));
        send(session.upload(b"", "/x", &FileAttrs::default(), None, false));
        send(session.read_file("/x"));
        send(session.verify_fresh_login());
        send(Session::connect(&session.target, &session.opts));
    }

    #[test]
    fn known_key_types_come_first() {
        let prefs = host_key_preference(&["ssh-rsa".to_string()]);
        assert!(prefs[0].clone().is_rsa());
        let prefs = host_key_preference(&[]);
        assert_eq!(prefs, russh::Preferred::DEFAULT.key.to_vec());
    }

    #[test]
    fn home_is_expanded_only_in_front() {
        let home = std::env::var("HOME").unwrap();
        assert_eq!(
            expand_home(Path::new("~/.ssh/id")),
            Path::new(&home).join(".ssh/id")
        );
        assert_eq!(expand_home(Path::new("/k/~/x")), Path::new("/k/~/x"));
    }

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
    fn run_upload(dir: &Path, content: &[u8], sha: &str, validate: Option<&str>) -> bool {
        use std::io::Write;
        let dest = dir.join("f.conf");
        let attrs = FileAttrs {
            mode: Some("0640".into()),
            owner: None,
            group: None,
        };
        let script = upload_script(dest.to_str().unwrap(), sha, &attrs, validate, true);
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

    #[test]
    fn upload_script_refuses_a_wrong_checksum_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!run_upload(dir.path(), b"data", &"0".repeat(64), None));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let sha = hex::encode(sha2::Sha256::digest(b"data"));
        assert!(run_upload(
            dir.path(),
            b"data",
            &sha,
            Some("grep -q data %s")
        ));
        assert_eq!(std::fs::read(dir.path().join("f.conf")).unwrap(), b"data");
    }
}
