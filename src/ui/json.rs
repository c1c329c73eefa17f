//! `--json`: JSON Lines, one object per step result and a final summary.

use std::io::Write;

use serde_json::json;

use crate::runner::events::Event;
use crate::runner::Reporter;

#[derive(Default)]
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn event(&self, event: &Event) {
        let value = match event {
            Event::StepFinished(r) => json!({
                "type": "step",
                "host": r.host,
                "playbook": r.playbook,
                "step": r.step,
                "handler": r.handler,
                "status": r.status,
                "changed": r.status == crate::runner::Status::Changed,
                "duration_ms": r.duration.as_millis() as u64,
                "changes": r.changes,
                "diffs": r.diffs,
                "message": r.message,
            }),
            Event::HostConnected { host, new_host_key } => json!({
                "type": "connected", "host": host, "new_host_key": new_host_key,
            }),
            Event::Unreachable { host, error } => json!({
                "type": "unreachable", "host": host, "error": error,
            }),
            Event::HostNote { host, message } => json!({
                "type": "note", "host": host, "message": message,
            }),
            Event::Interrupted { signal } => json!({
                "type": "interrupted", "signal": signal,
            }),
            Event::StageSkipped { stage, reason } => json!({
                "type": "stage_skipped", "stage": stage, "reason": reason,
            }),
            Event::RunStarted {
                run_id,
                log_dir,
                hosts,
                check,
            } => json!({
                "type": "run", "run_id": run_id, "log_dir": log_dir, "hosts": hosts, "check": check,
            }),
            Event::Finished(summary) => {
                let mut v = serde_json::to_value(summary).unwrap_or_default();
                v["type"] = json!("summary");
                v
            }
            _ => return,
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}
