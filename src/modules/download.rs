//! PLACEHOLDER: being written.
use super::*;
use crate::error::InputError;

#[derive(Debug)]
pub struct Download;

impl Download {
    pub fn from_args(_args: &toml::Value, _ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        todo!()
    }
}

impl Module for Download {
    fn probe(&self, _opts: ProbeOptions) -> String {
        todo!()
    }
    fn plan(&self, _probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        todo!()
    }
}

pub fn fetch_to_cache(
    _url: &str,
    _sha256: &str,
    _cache_dir: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    todo!()
}
