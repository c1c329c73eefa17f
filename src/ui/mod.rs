//! Output, driven only by runner events: indicatif bars on a terminal, plain lines otherwise,
//! JSON Lines with `--json`.

pub mod json;
pub mod ping;
pub mod plain;
pub mod progress;

use std::io::IsTerminal;
use std::sync::Arc;

use crate::runner::{Mode, Reporter};

pub fn reporter(json: bool, verbose: u8, mode: Mode) -> Arc<dyn Reporter> {
    if json {
        Arc::new(json::JsonReporter)
    } else if std::io::stdout().is_terminal() {
        Arc::new(progress::ProgressReporter::new(verbose, mode))
    } else {
        Arc::new(plain::PlainReporter::new(verbose, mode))
    }
}
