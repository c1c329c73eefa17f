//! What the runner reports. The UI is driven only by these events.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Changed,
    Failed,
    Skipped,
}

/// The outcome of one step (or handler) on one host.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub host: String,
    pub playbook: String,
    pub step: String,
    pub handler: bool,
    pub status: Status,
    /// Sentences of what changed (or would change in check mode).
    pub changes: Vec<String>,
    /// Unified diffs, secrets already masked.
    pub diffs: Vec<String>,
    /// Why it failed or was skipped.
    pub message: Option<String>,
    pub duration: Duration,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HostRecap {
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub unreachable: bool,
}

impl HostRecap {
    /// Adds another recap of the same host (another play or stage).
    pub fn add(&mut self, other: &HostRecap) {
        self.ok += other.ok;
        self.changed += other.changed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.unreachable |= other.unreachable;
    }

    pub fn count(&mut self, status: Status) {
        match status {
            Status::Ok => self.ok += 1,
            Status::Changed => self.changed += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub unreachable: usize,
    pub check: bool,
    pub hosts: BTreeMap<String, HostRecap>,
    /// Stages not run because an earlier one failed.
    pub stages_not_run: Vec<String>,
    pub duration_ms: u128,
}

impl Summary {
    pub fn success(&self) -> bool {
        self.failed == 0 && self.unreachable == 0 && self.stages_not_run.is_empty()
    }

    pub fn from_hosts(hosts: BTreeMap<String, HostRecap>, check: bool) -> Summary {
        let mut s = Summary {
            check,
            ..Summary::default()
        };
        for r in hosts.values() {
            s.ok += r.ok;
            s.changed += r.changed;
            s.failed += r.failed;
            s.skipped += r.skipped;
            s.unreachable += usize::from(r.unreachable);
        }
        s.hosts = hosts;
        s
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        run_id: String,
        log_dir: String,
        hosts: Vec<String>,
        check: bool,
    },
    HostConnected {
        host: String,
        new_host_key: Option<String>,
    },
    Unreachable {
        host: String,
        error: String,
    },
    PlayStarted {
        host: String,
        playbook: String,
        steps: usize,
    },
    StepStarted {
        host: String,
        step: String,
        index: usize,
        total: usize,
    },
    StepFinished(StepResult),
    PlayFinished {
        host: String,
        playbook: String,
    },
    StageSkipped {
        stage: String,
        reason: String,
    },
    Finished(Summary),
}

/// Receives events; implementations live in `ui`.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}
