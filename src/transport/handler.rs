//! The russh client handler: checks the host key inside the handshake (before any credential
//! leaves this machine) against the pinned key and the known_hosts files, and remembers why a
//! connection ended.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client::{self, DisconnectReason};
use russh::keys::{Algorithm, PublicKeyOrCertificate};

use super::known_hosts::{self, Entry, Lookup};
use super::ssh::{address_of, expand_home};
use super::{ConnectOptions, SshTarget, TransportError};

/// Every known_hosts file that exists, parsed; the project's own file last.
pub(super) fn read_known_hosts(opts: &ConnectOptions) -> Vec<(PathBuf, Vec<Entry>)> {
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

/// The host key algorithms to negotiate: when keys are on record for the host (pinned or in a
/// known_hosts file), only algorithms of those types, so a server (or a man in the middle)
/// cannot switch to a type we have no record of; else all of them.
pub(super) fn host_key_algorithms(known_types: &[String]) -> Vec<Algorithm> {
    let all = russh::Preferred::DEFAULT.key.to_vec();
    if known_types.is_empty() {
        return all;
    }
    let type_of = |alg: &Algorithm| {
        if alg.clone().is_rsa() {
            "ssh-rsa".to_string()
        } else {
            alg.as_str().to_string()
        }
    };
    all.into_iter()
        .filter(|alg| known_types.contains(&type_of(alg)))
        .collect()
}

/// russh handler: checks the host key during the handshake and remembers why a connection ended.
pub(super) struct Client {
    address: String,
    /// The known_hosts host field for the target, e.g. `[10.0.0.1]:2222`.
    host: String,
    pinned: Option<String>,
    files: Vec<(PathBuf, Vec<Entry>)>,
    strict: bool,
    project_file: PathBuf,
    target: (String, u16),
    pub(super) new_host_key: Arc<Mutex<Option<String>>>,
    pub(super) lost: Arc<Mutex<Option<String>>>,
    /// Only look at the key to report it: never accept or record it.
    pub(super) probe_only: bool,
}

#[derive(Debug)]
pub(super) enum HandlerError {
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
    pub(super) fn into_transport(self, address: &str) -> TransportError {
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
    pub(super) fn new(
        target: &SshTarget,
        opts: &ConnectOptions,
        files: Vec<(PathBuf, Vec<Entry>)>,
    ) -> Client {
        Client {
            address: address_of(target),
            host: known_hosts::host_field(&target.address, target.port),
            pinned: target.pinned_host_key.clone(),
            files,
            strict: opts.strict_host_keys,
            project_file: opts.project_known_hosts.clone(),
            target: (target.address.clone(), target.port),
            new_host_key: Arc::new(Mutex::new(None)),
            lost: Arc::new(Mutex::new(None)),
            probe_only: false,
        }
    }

    /// Revocations, then the pinned key, then the known_hosts files; a key of a type not on
    /// record for a known host is a changed key; an unknown key is recorded unless strict.
    fn verify(&self, key_type: &str, key: &[u8]) -> Result<(), TransportError> {
        let presented = known_hosts::fingerprint(key);
        for (path, entries) in &self.files {
            if let Lookup::Revoked { line } =
                known_hosts::lookup(entries, &self.host, key_type, key)
            {
                return Err(TransportError::HostKeyRevoked {
                    address: self.address.clone(),
                    fingerprint: presented,
                    location: format!("{}:{line}", path.display()),
                });
            }
        }
        if let Some(pinned) = &self.pinned {
            let (pinned_type, pinned_key) =
                known_hosts::parse_public_key(pinned).ok_or_else(|| TransportError::Protocol {
                    address: self.address.clone(),
                    reason: "the inventory host_key is not a `type base64` public key".into(),
                })?;
            if pinned_type == key_type && pinned_key == key {
                return self.accept_known();
            }
            return Err(self.changed(&pinned_key, presented, "inventory host_key".into()));
        }
        let mut changed = None;
        let mut cert_authority = None;
        for (path, entries) in &self.files {
            let at = |line: usize| format!("{}:{line}", path.display());
            match known_hosts::lookup(entries, &self.host, key_type, key) {
                Lookup::Known => return self.accept_known(),
                Lookup::Changed { expected, line } if changed.is_none() => {
                    changed = Some((expected, at(line)));
                }
                Lookup::CertAuthorityOnly { line } if cert_authority.is_none() => {
                    cert_authority = Some(at(line));
                }
                _ => {}
            }
        }
        if let Some((expected, source)) = changed {
            return Err(self.changed(&expected, presented, source));
        }
        if let Some(source) = cert_authority {
            return Err(TransportError::HostKeyCertAuthority {
                address: self.address.clone(),
                location: source,
            });
        }
        if self.strict || self.probe_only {
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

    /// A key on record; a probe connection still never goes further.
    fn accept_known(&self) -> Result<(), TransportError> {
        if self.probe_only {
            return Err(TransportError::Protocol {
                address: self.address.clone(),
                reason: "no host key algorithm in common with the server".into(),
            });
        }
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
