//! One plain line per event, for logs and pipes.

use std::io::Write;

use crate::runner::events::{Event, Status, StepResult, Summary};
use crate::runner::{Mode, Reporter};

pub struct PlainReporter {
    verbose: u8,
    mode: Mode,
}

impl PlainReporter {
    pub fn new(verbose: u8, mode: Mode) -> Self {
        PlainReporter { verbose, mode }
    }
}

impl Reporter for PlainReporter {
    fn event(&self, event: &Event) {
        let mut out = std::io::stdout().lock();
        for line in render(event, self.verbose, self.mode) {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// The lines an event prints as; shared with the progress UI.
pub fn render(event: &Event, verbose: u8, mode: Mode) -> Vec<String> {
    match event {
        Event::RunStarted {
            run_id,
            log_dir,
            hosts,
            check,
        } => {
            let mut line = format!("run {run_id} on {}", hosts.join(", "));
            if *check {
                line.push_str(" (check mode: nothing will be changed)");
            }
            let mut lines = vec![line];
            if verbose > 0 {
                lines.push(format!("logs: {log_dir}"));
            }
            lines
        }
        Event::HostConnected { host, new_host_key } => match new_host_key {
            Some(fp) => vec![format!("{host}: new host key accepted and recorded: {fp}")],
            None if verbose > 0 => vec![format!("{host}: connected")],
            None => vec![],
        },
        Event::Unreachable { host, error } => vec![format!("{host}: UNREACHABLE: {error}")],
        Event::HostNote { host, message } => vec![format!("{host}: {message}")],
        Event::Interrupted { signal } => vec![format!(
            "{signal} received: stopping; no new step starts, the running change may finish \
             (30s at most). Send it again to abort at once."
        )],
        Event::PlayStarted {
            host,
            playbook,
            steps,
        } if verbose > 0 => {
            vec![format!("{host}: play {playbook} ({steps} steps)")]
        }
        Event::StepFinished(r) => step_lines(r, verbose, mode),
        Event::StageSkipped { stage, reason } => vec![format!("stage {stage} not run: {reason}")],
        Event::Finished(summary) => recap_lines(summary),
        _ => vec![],
    }
}

fn step_lines(r: &StepResult, verbose: u8, mode: Mode) -> Vec<String> {
    let label = match (r.status, mode.check) {
        (Status::Changed, true) => "would change",
        (Status::Changed, false) => "changed",
        (Status::Ok, _) => "ok",
        (Status::Failed, _) => "FAILED",
        (Status::Skipped, _) => "skipped",
    };
    let quiet = matches!(r.status, Status::Ok | Status::Skipped) && verbose == 0;
    let name = if r.handler {
        format!("handler: {}", r.step)
    } else {
        r.step.clone()
    };
    let mut lines = vec![format!(
        "{}: {label}: {name} ({} ms)",
        r.host,
        r.duration.as_millis()
    )];
    if quiet {
        // Still one line per step, as promised for non-terminal output, but nothing more.
        return lines;
    }
    for c in &r.changes {
        lines.push(format!("    - {c}"));
    }
    if let Some(m) = &r.message {
        for l in m.lines() {
            lines.push(format!("    {l}"));
        }
    }
    for d in &r.diffs {
        for l in d.lines() {
            lines.push(format!("    {l}"));
        }
    }
    lines
}

pub fn recap_lines(s: &Summary) -> Vec<String> {
    let mut lines = vec![String::new(), "RECAP".to_string()];
    let width = s.hosts.keys().map(String::len).max().unwrap_or(4);
    for (host, r) in &s.hosts {
        let state = if r.unreachable {
            " UNREACHABLE"
        } else if r.failed > 0 {
            " FAILED"
        } else if r.interrupted {
            " INTERRUPTED"
        } else {
            ""
        };
        lines.push(format!(
            "{host:<width$}  ok={} {}={} failed={} skipped={}{state}",
            r.ok,
            if s.check { "would_change" } else { "changed" },
            r.changed,
            r.failed,
            r.skipped
        ));
    }
    for (host, r) in &s.hosts {
        if !r.pending_handlers.is_empty() {
            lines.push(format!(
                "{host}: handlers not run yet (recorded on the host; the next run fires them): {}",
                r.pending_handlers.join(", ")
            ));
        }
    }
    for stage in &s.stages_not_run {
        lines.push(format!("stage {stage}: not run"));
    }
    for stop in &s.unconfirmed_stops {
        lines.push(format!(
            "NOT CONFIRMED STOPPED (may still be running; look on the host): {stop}"
        ));
    }
    let verdict = if !s.unconfirmed_stops.is_empty() {
        "a stopped command may still be running on a host"
    } else if s.interrupted {
        "interrupted"
    } else if !s.success() {
        "failed"
    } else if s.changed == 0 {
        "nothing to change: every host already matches"
    } else if s.check {
        "check only: nothing was changed"
    } else {
        "done"
    };
    lines.push(format!(
        "{} changed, {} failed, {} unreachable in {:.1}s: {verdict}",
        s.changed,
        s.failed,
        s.unreachable,
        s.duration_ms as f64 / 1000.0
    ));
    lines
}

/// `--timings`: per host, the slowest probes and the slowest steps (plan and apply), slowest
/// first, at most `top` of each.
pub fn timing_lines(s: &Summary, top: usize) -> Vec<String> {
    use crate::runner::events::TimingKind;
    let mut lines = vec![String::new(), "TIMINGS".to_string()];
    for (host, r) in &s.hosts {
        for (kind, title) in [
            (TimingKind::Probe, "slowest probes (on the host's clock)"),
            (
                TimingKind::Step,
                "slowest steps (plan and apply, probe not included)",
            ),
        ] {
            let mut picked: Vec<_> = r.timings.iter().filter(|t| t.kind == kind).collect();
            if picked.is_empty() {
                continue;
            }
            picked.sort_by_key(|t| std::cmp::Reverse(t.duration));
            lines.push(format!("{host}: {title}"));
            for t in picked.into_iter().take(top) {
                lines.push(format!("  {:>8.3}s  {}", t.duration.as_secs_f64(), t.what));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::events::HostRecap;

    #[test]
    fn timings_list_the_slowest_probes_and_steps_per_host_slowest_first() {
        use crate::runner::events::{Timing, TimingKind};
        use std::time::Duration;
        let timing = |kind, what: &str, ms| Timing {
            kind,
            what: what.to_string(),
            duration: Duration::from_millis(ms),
        };
        let mut probes: Vec<Timing> = (1..=7)
            .map(|i| timing(TimingKind::Probe, &format!("worker: p{i}"), i * 100))
            .collect();
        probes.push(timing(TimingKind::Step, "worker: apply ufw", 1500));
        let hosts = [(
            "worker".to_string(),
            HostRecap {
                timings: probes,
                ..HostRecap::default()
            },
        )]
        .into_iter()
        .collect();
        let lines = timing_lines(&Summary::from_hosts(hosts, false), 5);
        let probe_lines: Vec<&String> = lines.iter().filter(|l| l.contains(": p")).collect();
        assert_eq!(probe_lines.len(), 5, "{lines:#?}");
        assert!(probe_lines[0].contains("0.700s  worker: p7"), "{lines:#?}");
        assert!(probe_lines[4].contains("0.300s  worker: p3"), "{lines:#?}");
        assert!(lines
            .iter()
            .any(|l| l.contains("1.500s  worker: apply ufw")));
        assert!(lines
            .iter()
            .any(|l| l == "worker: slowest probes (on the host's clock)"));
    }

    #[test]
    fn recap_of_a_run_with_a_failure_and_a_no_op_host() {
        let hosts = [
            (
                "elk",
                HostRecap {
                    ok: 12,
                    ..HostRecap::default()
                },
            ),
            (
                "worker",
                HostRecap {
                    ok: 5,
                    changed: 2,
                    failed: 1,
                    skipped: 1,
                    unreachable: false,
                    ..HostRecap::default()
                },
            ),
            (
                "master",
                HostRecap {
                    unreachable: true,
                    ..HostRecap::default()
                },
            ),
        ]
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
        let mut summary = Summary::from_hosts(hosts, false);
        summary.duration_ms = 1234;
        summary.stages_not_run = vec!["join".into()];
        insta::assert_snapshot!(recap_lines(&summary).join("\n"));
    }

    #[test]
    fn recap_of_a_no_op_rerun_says_nothing_changed() {
        let hosts = [(
            "worker".to_string(),
            HostRecap {
                ok: 10,
                ..HostRecap::default()
            },
        )]
        .into();
        let mut summary = Summary::from_hosts(hosts, false);
        summary.duration_ms = 230;
        insta::assert_snapshot!(recap_lines(&summary).join("\n"));
    }
}
