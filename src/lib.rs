//! `bootstrap`: takes bare Debian/Ubuntu servers to a working platform over SSH.
//!
//! Layers, calling downwards only: cli -> inventory / playbook -> runner -> modules -> transport,
//! with ui fed by runner events.

pub mod app;
pub mod builtin;
pub mod cli;
pub mod diagram;
pub mod error;
pub mod inventory;
pub mod manifests;
pub mod modules;
pub mod playbook;
pub mod redact;
pub mod runner;
#[cfg(test)]
pub(crate) mod testing;
pub mod transport;
pub mod ui;
