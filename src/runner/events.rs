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
    /// The run stopped on this host because of a signal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Handlers notified and not run (recorded on the host: the next run fires them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_handlers: Vec<String>,
    /// How long each probe and step took, for `--timings` (the JSON step events carry
    /// `duration_ms` already).
    #[serde(skip)]
    pub timings: Vec<Timing>,
}

/// One measured piece of a run on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub kind: TimingKind,
    /// `playbook: step`.
    pub what: String,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingKind {
    /// The step's read-only check, on the host's clock, inside the batch.
    Probe,
    /// Planning and applying the step (its probe not included).
    Step,
}

impl HostRecap {
    /// Adds another recap of the same host (another play or stage).
    pub fn add(&mut self, other: &HostRecap) {
        self.ok += other.ok;
        self.changed += other.changed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.unreachable |= other.unreachable;
        self.interrupted |= other.interrupted;
        self.timings.extend(other.timings.iter().cloned());
        for h in &other.pending_handlers {
            if !self.pending_handlers.contains(h) {
                self.pending_handlers.push(h.clone());
            }
        }
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
    /// A signal stopped the run before it was done.
    pub interrupted: bool,
    pub hosts: BTreeMap<String, HostRecap>,
    /// Stages not run because an earlier one failed.
    pub stages_not_run: Vec<String>,
    /// Commands the run stopped on a host (signal grace, deadline) whose end the host did not
    /// confirm: `host: command (why)`. They may still be running there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed_stops: Vec<String>,
    pub duration_ms: u128,
}

impl Summary {
    pub fn success(&self) -> bool {
        self.failed == 0
            && self.unreachable == 0
            && self.stages_not_run.is_empty()
            && !self.interrupted
            && self.unconfirmed_stops.is_empty()
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
    /// Something about a host worth telling (a stale lock taken over, a rollback that fired).
    HostNote {
        host: String,
        message: String,
    },
    /// A signal arrived: nothing new starts; `abort_hint` says how to stop at once.
    Interrupted {
        signal: String,
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
