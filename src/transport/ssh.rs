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
use russh::client::{self, AuthResult};
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg};
use russh::{ChannelMsg, Disconnect, Sig};
use sha2::Digest as _;

use super::abandon::{AbandonGuard, Abandoned, Stops, COMMANDS};
use super::handler::{host_key_algorithms, read_known_hosts, Client, HandlerError};
use super::known_hosts::{self, Entry};
use super::shell::{self, quote};
use super::*;

pub use super::abandon::Held;

/// Extra local wait past a command's deadline and `timeout`'s KILL, before giving up on the host.
const LOCAL_DEADLINE_MARGIN: Duration = Duration::from_secs(5);
/// First pause between setup attempts; doubled after each failure, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Connections lost in one session that are re-established; past this, a drop is final.
const MAX_RECONNECTS: u32 = 3;

pub struct Session {
    /// The live connection; replaced when a dropped one is re-established.
    link: Mutex<Arc<Link>>,
    /// One reconnection at a time.
    reconnecting: tokio::sync::Mutex<()>,
    reconnects: std::sync::atomic::AtomicU32,
    target: SshTarget,
    opts: ConnectOptions,
    new_host_key: Option<String>,
    /// Stops of abandoned commands still under way (see `abandon`).
    stops: Arc<Stops>,
}

/// One SSH connection.
pub(super) struct Link {
    pub(super) handle: client::Handle<Client>,
    /// Why the connection ended, as told to the handler; read when a channel breaks.
    lost: Arc<Mutex<Option<String>>>,
    /// 0 for the first connection of a session, then 1, 2, ... after each reconnection.
    generation: u32,
    /// A channel opened ahead of need (`open_spare_channel`): the next command uses it instead
    /// of waiting a round trip for a new one.
    spare: Mutex<Option<russh::Channel<client::Msg>>>,
}

impl Link {
    /// The spare channel if there is one, else a new channel (one round trip).
    async fn channel(&self) -> Result<russh::Channel<client::Msg>, russh::Error> {
        let spare = self.spare.lock().unwrap().take();
        match spare {
            Some(channel) => Ok(channel),
            None => self.handle.channel_open_session().await,
        }
    }
}

impl Session {
    /// Connect + authenticate + verify host key, retrying only retryable setup errors.
    pub async fn connect(
        target: &SshTarget,
        opts: &ConnectOptions,
    ) -> Result<Session, TransportError> {
        // A key that cannot be used stops here, before anything reaches the host.
        if let Some(path) = &target.key_file {
            let path = expand_home(path);
            super::keys::check(&path).map_err(|problem| TransportError::Key {
                reason: format!("{problem}; {}", problem.hint(&path)),
                path,
            })?;
        }
        let (link, new_host_key) = connect_with_retries(target, opts, 0).await?;
        Ok(Session {
            link: Mutex::new(Arc::new(link)),
            reconnecting: tokio::sync::Mutex::new(()),
            reconnects: std::sync::atomic::AtomicU32::new(0),
            target: target.clone(),
            opts: opts.clone(),
            new_host_key,
            stops: Arc::default(),
        })
    }

    /// How many times a dropped connection was re-established in this session.
    pub fn reconnections(&self) -> u32 {
        self.reconnects.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn link(&self) -> Arc<Link> {
        self.link.lock().unwrap().clone()
    }

    /// After `failed` (a `Disconnected` on `link`): connect again, once, with the usual
    /// retries and wait for the host. Success is `Reconnected` (the command's outcome is
    /// unknown: the caller probes again); failure keeps the original error, with why.
    async fn reconnect(&self, link: &Link, failed: TransportError) -> TransportError {
        use std::sync::atomic::Ordering;
        let TransportError::Disconnected { address, reason } = failed else {
            return failed;
        };
        let _one_at_a_time = self.reconnecting.lock().await;
        if self.link().generation != link.generation {
            // Another command already reconnected after the same drop.
            return TransportError::Reconnected { address, reason };
        }
        if self.reconnects.load(Ordering::SeqCst) >= MAX_RECONNECTS {
            return TransportError::Disconnected {
                address,
                reason: format!("{reason}; not reconnecting: {MAX_RECONNECTS} drops already"),
            };
        }
        match connect_with_retries(&self.target, &self.opts, link.generation + 1).await {
            Ok((fresh, _)) => {
                self.reconnects.fetch_add(1, Ordering::SeqCst);
                *self.link.lock().unwrap() = Arc::new(fresh);
                TransportError::Reconnected { address, reason }
            }
            Err(e) => TransportError::Disconnected {
                address,
                reason: format!("{reason}; reconnecting failed: {e}"),
            },
        }
    }

    /// The fingerprint of a host key this connection accepted and recorded (accept-new).
    pub fn new_host_key(&self) -> Option<&str> {
        self.new_host_key.as_deref()
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Runs `script` (as root when the target says `become_root`); a non-zero exit is `Ok`.
    /// Bounded by the options' default command deadline.
    pub async fn exec(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, TransportError> {
        self.exec_with_deadline(script, stdin, self.opts.command_deadline)
            .await
    }

    /// Like `exec`, with this command's own deadline (`None`: none). On the host, `timeout`
    /// stops the script and everything it started (TERM, then KILL); here, the wait is bounded
    /// too, in case the host cannot act. Past the deadline: `TransportError::Deadline`.
    pub async fn exec_with_deadline(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        deadline: Option<Duration>,
    ) -> Result<ExecOutput, TransportError> {
        let privileged = shell::uses_sudo(&self.target.user, self.target.become_root);
        self.run_script(script, stdin, privileged, deadline).await
    }

    /// Runs `script` as the login user, never through sudo.
    pub async fn exec_unprivileged(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, TransportError> {
        self.run_script(script, stdin, false, self.opts.command_deadline)
            .await
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
        let script = super::upload::script(dest, &sha256, attrs, validate, backup);
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

    /// Opens a channel for the next command ahead of need, so that command does not wait a
    /// round trip for it (the run opens one while the lock's command runs). Best effort: on
    /// failure the next command opens its own and reports what is wrong.
    pub async fn open_spare_channel(&self) {
        let link = self.link();
        if link.spare.lock().unwrap().is_some() {
            return;
        }
        if let Ok(channel) = link.handle.channel_open_session().await {
            let mut spare = link.spare.lock().unwrap();
            if spare.is_none() {
                *spare = Some(channel);
            }
        }
    }

    /// Waits (bounded) until every command this session abandoned (a deadline, an interrupt)
    /// is confirmed stopped on the host. Returns, per command, why its stop is not confirmed.
    pub async fn settle_stops(&self) -> Vec<String> {
        self.stops.settle().await
    }

    pub async fn close(self) {
        // Nothing abandoned may outlive the connection unseen: its stop needs the connection.
        let _ = self.settle_stops().await;
        // The peer may already be gone; there is nothing useful to do about it then.
        let _ = self
            .link()
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }

    /// Starts a long-lived `script` (as root when `become_root`) and reads its stdout until a
    /// line equal to `ready` (returned: what came before it), or until it ends (`Err` with its
    /// output in `Ok(Err(..))`). A `Held` command keeps running until released or until this
    /// connection ends: it holds whatever the script holds (e.g. a lock) for the session.
    /// Its stdin stays open after the script: the end of input tells it to let go.
    pub async fn hold(
        &self,
        script: &str,
        ready: &str,
    ) -> Result<Result<(String, Held), ExecOutput>, TransportError> {
        let privileged = shell::uses_sudo(&self.target.user, self.target.become_root);
        let command = shell::command_line(&self.target.user, privileged, None);
        let link = self.link();
        let channel = link
            .channel()
            .await
            .map_err(|e| self.broken(&link, "opening a channel", &e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.broken(&link, "starting a command", &e))?;
        let (mut reader, writer) = channel.split();
        writer
            .data(&shell::frame(script, None)[..])
            .await
            .map_err(|e| self.broken(&link, "sending a script", &e))?;
        let mut out = ExecOutput::default();
        let marker = format!("{ready}\n");
        loop {
            match reader.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    out.stdout.extend_from_slice(&data);
                    let mut stdout = out.stdout.clone();
                    if privileged && shell::strip_privileged_marker(&mut stdout).is_none() {
                        continue;
                    }
                    let text = String::from_utf8_lossy(&stdout).into_owned();
                    // The marker is a whole line: "already\n" is not "ready\n".
                    let at = if text.starts_with(&marker) {
                        Some(0)
                    } else {
                        text.find(&format!("\n{marker}")).map(|i| i + 1)
                    };
                    if let Some(at) = at {
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
                Some(ChannelMsg::Close) | None => {
                    if privileged && shell::strip_privileged_marker(&mut out.stdout).is_none() {
                        return Err(self.sudo_refused(&out));
                    }
                    return Ok(Err(out));
                }
                Some(_) => {}
            }
        }
    }

    /// A command whose output lacks the privileged marker never got past `sudo -n`: told with
    /// sudo's own words.
    fn sudo_refused(&self, out: &ExecOutput) -> TransportError {
        TransportError::Sudo {
            address: address_of(&self.target),
            user: self.target.user.clone(),
            missing: out.exit_status == 127,
            message: sudo_message(out),
        }
    }

    /// Sends `script` on stdin behind the constant loader (see `shell`), then `stdin`.
    async fn run_script(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        privileged: bool,
        deadline: Option<Duration>,
    ) -> Result<ExecOutput, TransportError> {
        // A word in the command line (the loader's $0) that names this command on the host, so
        // an abandoned one can be found and stopped there (OpenSSH refuses `signal` requests).
        let token = format!(
            "bootstrap-cmd-{}-{}-end",
            std::process::id(),
            COMMANDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let command = shell::tagged_command_line(&self.target.user, privileged, deadline, &token);
        let input = shell::frame(script, stdin);
        let started = std::time::Instant::now();
        let link = self.link();
        let run = self.run_command(&link, command, &input, token, privileged);
        let result = match deadline {
            // The host's `timeout` acts first; this bound only matters when the host cannot.
            Some(d) => tokio::time::timeout(d + shell::KILL_AFTER + LOCAL_DEADLINE_MARGIN, run)
                .await
                .map_err(|_| self.deadline_error(d))?,
            None => run.await,
        };
        let mut out = match result {
            Ok(out) => out,
            Err(e @ TransportError::Disconnected { .. }) => {
                return Err(self.reconnect(&link, e).await)
            }
            Err(e) => return Err(e),
        };
        if privileged && shell::strip_privileged_marker(&mut out.stdout).is_none() {
            return Err(self.sudo_refused(&out));
        }
        if let Some(d) = deadline {
            // 124: stopped by TERM; 137: by the KILL that followed.
            if matches!(out.exit_status, 124 | 137) && started.elapsed() >= d {
                return Err(self.deadline_error(d));
            }
        }
        Ok(out)
    }

    fn deadline_error(&self, deadline: Duration) -> TransportError {
        TransportError::Deadline {
            address: address_of(&self.target),
            seconds: deadline.as_secs().max(1),
        }
    }

    async fn run_command(
        &self,
        link: &Arc<Link>,
        command: String,
        stdin: &[u8],
        token: String,
        privileged: bool,
    ) -> Result<ExecOutput, TransportError> {
        let channel = link
            .channel()
            .await
            .map_err(|e| self.broken(link, "opening a channel", &e))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| self.broken(link, "starting a command", &e))?;
        let (mut reader, writer) = channel.split();
        // Dropped before the command ended (a deadline, an interrupt): stop it on the host
        // rather than leave it running detached from us.
        let writer = Arc::new(writer);
        let abandon = AbandonGuard(Some(Abandoned {
            link: link.clone(),
            writer: writer.clone(),
            token,
            user: self.target.user.clone(),
            privileged,
            stops: self.stops.clone(),
        }));

        // Whatever ends the reading (the command's end, a refusal, the connection's loss) ends
        // the command: only a drop of this future before then abandons it.
        let outcome = self.read_command(link, &mut reader, &writer, stdin).await;
        abandon.finished();
        outcome
    }

    /// Sends `stdin` and reads the command's output until its channel closes.
    async fn read_command(
        &self,
        link: &Link,
        reader: &mut russh::ChannelReadHalf,
        writer: &russh::ChannelWriteHalf<client::Msg>,
        stdin: &[u8],
    ) -> Result<ExecOutput, TransportError> {
        let input = async {
            writer.data(stdin).await?;
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
            (None, None) => return Err(self.lost_error(link, "a command was running")),
        }
        Ok(out)
    }

    /// A channel operation failed: name the cause the handler saw if the connection is gone.
    fn broken(&self, link: &Link, doing: &str, error: &russh::Error) -> TransportError {
        if link.handle.is_closed() || link.lost.lock().unwrap().is_some() {
            return self.lost_error(link, doing);
        }
        match error {
            russh::Error::SendError | russh::Error::Disconnect | russh::Error::HUP => {
                self.lost_error(link, doing)
            }
            other => TransportError::Protocol {
                address: address_of(&self.target),
                reason: format!("{doing}: {other}"),
            },
        }
    }

    fn lost_error(&self, link: &Link, doing: &str) -> TransportError {
        let why = link.lost.lock().unwrap().clone();
        TransportError::Disconnected {
            address: address_of(&self.target),
            reason: match why {
                Some(why) => format!("{why}, while {doing}"),
                None => format!("the channel closed without an exit status while {doing}"),
            },
        }
    }
}

/// Setup attempts until one succeeds or the attempts and the wait for the host are used up;
/// only failures that may pass (refused, timed out, dropped during the handshake) are retried.
async fn connect_with_retries(
    target: &SshTarget,
    opts: &ConnectOptions,
    generation: u32,
) -> Result<(Link, Option<String>), TransportError> {
    let attempts = opts.connect_attempts.max(1);
    let started = std::time::Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match connect_once(target, opts, generation).await {
            // A host that is rebooting refuses or drops connections for a while: keep
            // trying until both the attempts and the wait for the host are used up.
            Err(e)
                if e.is_retryable_setup()
                    && (attempt < attempts || started.elapsed() + backoff < opts.wait_for_host) =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// One setup attempt: TCP (bounded by the timeout), handshake with host key check, auth.
async fn connect_once(
    target: &SshTarget,
    opts: &ConnectOptions,
    generation: u32,
) -> Result<(Link, Option<String>), TransportError> {
    let address = address_of(target);
    let timeout = |_| TransportError::Timeout {
        address: address.clone(),
        seconds: opts.connect_timeout.as_secs().max(1),
    };
    let stream = tokio::time::timeout(opts.connect_timeout, open_socket(target, opts))
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
        // Keepalives alone cannot catch a peer that vanished while our send queue is full (a
        // black hole during an upload): nothing is sent, so nothing goes unanswered. This bound
        // also covers a write that makes no progress.
        inactivity_timeout: Some(opts.dead_peer_timeout()),
        nodelay: true,
        preferred: russh::Preferred {
            key: Cow::Owned(host_key_algorithms(&preferred_types)),
            ..Default::default()
        },
        ..Default::default()
    });
    let handler = Client::new(target, opts, files);
    let new_host_key = handler.new_host_key.clone();
    let lost = handler.lost.clone();

    let setup = async {
        let mut handle = match client::connect_stream(config, stream, handler).await {
            Ok(handle) => handle,
            // The server has no key of a type on record: a changed key; find which it offers.
            Err(HandlerError::Ssh(russh::Error::NoCommonAlgo {
                kind: russh::AlgorithmKind::Key,
                theirs,
                ..
            })) if !preferred_types.is_empty() => {
                return Err(key_of_another_type(target, opts, &theirs).await)
            }
            Err(e) => return Err(e.into_transport(&address)),
        };
        authenticate(&mut handle, target).await?;
        Ok::<_, TransportError>(handle)
    };
    let handle = tokio::time::timeout(opts.connect_timeout, setup)
        .await
        .map_err(timeout)??;
    let new_host_key = new_host_key.lock().unwrap().take();
    let link = Link {
        handle,
        lost,
        generation,
        spare: Mutex::new(None),
    };
    Ok((link, new_host_key))
}

/// TCP to the target, with the send buffer capped when the options say so.
async fn open_socket(
    target: &SshTarget,
    opts: &ConnectOptions,
) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for address in tokio::net::lookup_host((target.address.as_str(), target.port)).await? {
        let socket = if address.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(bytes) = opts.send_buffer {
            socket.set_send_buffer_size(bytes)?;
        }
        match socket.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolves to no address",
        )
    }))
}

/// After a refused negotiation: a second handshake offering every type, only to show the
/// fingerprint of the key the server has (it is never accepted), as a changed key.
async fn key_of_another_type(
    target: &SshTarget,
    opts: &ConnectOptions,
    offered: &[String],
) -> TransportError {
    let address = address_of(target);
    let fallback = TransportError::Protocol {
        address: address.clone(),
        reason: format!(
            "the server offers only host keys of types we have no record of ({}); treat it as a changed key",
            offered.join(", ")
        ),
    };
    let Ok(Ok(stream)) =
        tokio::time::timeout(opts.connect_timeout, open_socket(target, opts)).await
    else {
        return fallback;
    };
    let config = Arc::new(client::Config {
        preferred: russh::Preferred {
            key: Cow::Owned(host_key_algorithms(&[])),
            ..Default::default()
        },
        ..Default::default()
    });
    let mut handler = Client::new(target, opts, read_known_hosts(opts));
    handler.probe_only = true;
    match tokio::time::timeout(
        opts.connect_timeout,
        client::connect_stream(config, stream, handler),
    )
    .await
    {
        Ok(Err(HandlerError::HostKey(e))) => e,
        _ => fallback,
    }
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
            let key = super::keys::load(&path).map_err(|problem| TransportError::Key {
                reason: format!("{problem}; {}", problem.hint(&path)),
                path: path.clone(),
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

/// What sudo said when it refused to run the loader (its own lines only, not a login's noise).
fn sudo_message(out: &ExecOutput) -> String {
    let stderr = out.stderr_str();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("sudo")).collect();
    let text = if lines.is_empty() {
        stderr.trim().to_string()
    } else {
        lines.join("; ")
    };
    if text.is_empty() {
        format!("exit {} and no message", out.exit_status)
    } else {
        text
    }
}

pub(super) fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

pub(super) fn address_of(target: &SshTarget) -> String {
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
    fn only_key_types_on_record_are_negotiated() {
        let algs = host_key_algorithms(&["ssh-rsa".to_string()]);
        assert!(!algs.is_empty());
        assert!(algs.iter().all(|a| a.clone().is_rsa()), "{algs:?}");
        let algs = host_key_algorithms(&["ssh-ed25519".to_string()]);
        assert_eq!(algs, vec![Algorithm::Ed25519]);
        let algs = host_key_algorithms(&[]);
        assert_eq!(algs, russh::Preferred::DEFAULT.key.to_vec());
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
}
