//! PLACEHOLDER: being written (transport branch).
use super::*;

pub struct Session;

impl Session {
    pub async fn connect(
        _target: &SshTarget,
        _opts: &ConnectOptions,
    ) -> Result<Session, TransportError> {
        todo!()
    }
    pub fn new_host_key(&self) -> Option<&str> {
        todo!()
    }
    pub fn target(&self) -> &SshTarget {
        todo!()
    }
    pub async fn exec(
        &self,
        _script: &str,
        _stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, TransportError> {
        todo!()
    }
    pub async fn exec_unprivileged(
        &self,
        _script: &str,
        _stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, TransportError> {
        todo!()
    }
    pub async fn upload(
        &self,
        _content: &[u8],
        _dest: &str,
        _attrs: &crate::modules::FileAttrs,
        _validate: Option<&str>,
        _backup: bool,
    ) -> anyhow::Result<()> {
        todo!()
    }
    pub async fn read_file(&self, _path: &str) -> anyhow::Result<Vec<u8>> {
        todo!()
    }
    pub async fn verify_fresh_login(&self) -> Result<(), TransportError> {
        todo!()
    }
    pub async fn close(self) {}
}
