//! PLACEHOLDER: being written.
use super::*;
use crate::error::InputError;

#[derive(Debug)]
pub struct PostgresRole;

impl PostgresRole {
    pub fn from_args(_args: &toml::Value, _ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        todo!()
    }
}

impl Module for PostgresRole {
    fn probe(&self, _opts: ProbeOptions) -> String {
        todo!()
    }
    fn plan(&self, _probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        todo!()
    }
}

#[derive(Debug)]
pub struct PostgresDb;

impl PostgresDb {
    pub fn from_args(_args: &toml::Value, _ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        todo!()
    }
}

impl Module for PostgresDb {
    fn probe(&self, _opts: ProbeOptions) -> String {
        todo!()
    }
    fn plan(&self, _probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        todo!()
    }
}
