//! PLACEHOLDER: being written.
use super::*;
use crate::error::InputError;

#[derive(Debug)]
pub struct Copy;

impl Copy {
    pub fn from_args(
        _args: &toml::Value,
        _ctx: &BuildContext<'_>,
        _template: bool,
    ) -> Result<Self, InputError> {
        todo!()
    }
}

impl Module for Copy {
    fn probe(&self, _opts: ProbeOptions) -> String {
        todo!()
    }
    fn plan(&self, _probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        todo!()
    }
}
