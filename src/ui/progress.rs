//! On a terminal: a bar per host with its current step and count; changes and failures are
//! printed above the bars as they happen.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::runner::events::{Event, Status};
use crate::runner::{Mode, Reporter};

pub struct ProgressReporter {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    verbose: u8,
    mode: Mode,
}

impl ProgressReporter {
    pub fn new(verbose: u8, mode: Mode) -> Self {
        ProgressReporter {
            multi: MultiProgress::new(),
            bars: Mutex::new(BTreeMap::new()),
            verbose,
            mode,
        }
    }

    fn bar(&self, host: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(host.to_string())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<12} [{pos}/{len}] {wide_msg}")
                        .expect("static template")
                        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
                );
                bar.set_prefix(host.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }

    fn print(&self, lines: Vec<String>) {
        for line in lines {
            let _ = self.multi.println(line);
        }
    }
}

impl Reporter for ProgressReporter {
    fn event(&self, event: &Event) {
        match event {
            Event::PlayStarted {
                host,
                steps,
                playbook,
            } => {
                let bar = self.bar(host);
                bar.set_length(*steps as u64);
                bar.set_position(0);
                bar.set_message(playbook.clone());
            }
            Event::StepStarted {
                host, step, index, ..
            } => {
                let bar = self.bar(host);
                bar.set_position(index.saturating_sub(1) as u64);
                bar.set_message(step.clone());
            }
            Event::StepFinished(r) => {
                if !r.handler {
                    self.bar(&r.host).inc(1);
                }
                // Quiet steps stay off the screen on a terminal; the bar shows progress.
                if !matches!(r.status, Status::Ok | Status::Skipped) || self.verbose > 0 {
                    self.print(super::plain::render(event, self.verbose, self.mode));
                }
            }
            Event::PlayFinished { host, .. } => self.bar(host).set_message("done"),
            Event::Unreachable { host, .. } => {
                self.bar(host).finish_with_message("unreachable");
                self.print(super::plain::render(event, self.verbose, self.mode));
            }
            Event::Finished(_) => {
                for bar in self.bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
                    bar.finish_and_clear();
                }
                for line in super::plain::render(event, self.verbose, self.mode) {
                    println!("{line}");
                }
            }
            other => self.print(super::plain::render(other, self.verbose, self.mode)),
        }
    }
}
