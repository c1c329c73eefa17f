//! PLACEHOLDER: being written.
use super::*;

pub struct Session;

impl Session {
    pub async fn connect(
        _target: &SshTarget,
        _opts: &ConnectOptions,
    ) -> Result<Session, TransportError> {
        todo!()
    }
    pub async fn exec(
        &self,
        _script: &str,
        _stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, TransportError> {
        todo!()
    }
}
