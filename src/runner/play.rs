//! One playbook on one host: gather facts, then probe the steps in one round trip, plan each,
//! apply what differs, and re-probe only the steps after one that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::error::InputError;
use crate::inventory::{Host, Inventory, Secrets};
use crate::modules::{self, BuildContext, Change, Module, ProbeOptions, ProbeOutput};
use crate::playbook::template::{RenderError, Renderer};
use crate::playbook::{Playbook, Step};
use crate::runner::apply::{apply, ApplyCtx, Mode};
use crate::runner::context::{host_context_with, resolve_delegate, Registry};
use crate::runner::events::{Event, HostRecap, Reporter, Status, StepResult, Timing, TimingKind};
use crate::runner::facts::FactsRequest;
use crate::runner::interrupt::{Interrupt, GRACE};
use crate::runner::log::HostLog;
use crate::runner::prefetch::{Answer, Asked, Moves, Prefetched, ProbeBatch};
use crate::runner::{deadline, host};
use crate::transport::Session;

/// Which steps run, from `--tags` / `--skip-tags`.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    pub only: Vec<String>,
    pub skip: Vec<String>,
}

impl TagFilter {
    pub fn allows(&self, tags: &[String]) -> bool {
        let wanted = self.only.is_empty() || tags.iter().any(|t| self.only.contains(t));
        wanted && !tags.iter().any(|t| self.skip.contains(t))
    }
}

pub struct PlayCtx<'a> {
    pub inventory: &'a Inventory,
    pub host: &'a Host,
    pub secrets: &'a Secrets,
    pub session: &'a Session,
    pub log: &'a HostLog,
    pub mode: Mode,
    pub reporter: &'a dyn Reporter,
    pub tags: &'a TagFilter,
    /// Where `fetch` puts files on the admin machine.
    pub local_dir: PathBuf,
    /// Admin-side cache for `download`.
    pub cache_dir: PathBuf,
    /// The host-side state directory (pending handlers, firewall snapshots).
    pub state_dir: &'a str,
    pub run_id: &'a str,
    pub interrupt: &'a Interrupt,
    /// `--force-handlers`: run notified handlers even after a step failed.
    pub force_handlers: bool,
    /// Handlers an earlier run notified and never ran, by playbook key (read at lock time).
    pub pending_from_host: &'a BTreeMap<String, BTreeSet<String>>,
    /// Values kept by `register` steps, shared by every host of the run.
    pub registry: &'a Registry,
    /// Sessions of the hosts this host's steps are delegated to (`delegate_to`), by host name.
    pub(crate) delegates: &'a BTreeMap<String, Arc<super::HostConn>>,
    /// Changes applied so far by this run, on any host.
    pub moves: &'a Moves,
    /// What the host answered early in the run (see `prefetch`), used while nothing changed.
    pub prefetched: Option<&'a Prefetched>,
}

pub(crate) enum Prepared {
    Skip(String),
    /// Needs a fact the host does not report yet.
    Deferred(String),
    Ready {
        module: Box<dyn Module>,
        /// The host the step runs on, when delegated to another one than the play's.
        delegate: Option<String>,
        /// The step registers a secret: its probe output and command output are never logged.
        secret_output: bool,
        /// `sensitive = true` on the step: nothing of its content reaches output or logs.
        sensitive: bool,
    },
    Broken(String),
}

/// Runs `playbook` on the host; returns its recap. A failed step stops the play.
pub async fn run_play(ctx: &PlayCtx<'_>, playbook: &Playbook, renderer: &Renderer) -> HostRecap {
    let host = &ctx.host.name;
    let mut recap = HostRecap::default();
    ctx.reporter.event(&Event::PlayStarted {
        host: host.clone(),
        playbook: playbook.name.clone(),
        steps: playbook.steps.len(),
    });
    ctx.log.write(
        "play",
        &format!("{} ({})", playbook.name, playbook.path.display()),
    );

    let prefetched_facts = ctx
        .prefetched
        .and_then(|p| p.facts(ctx.moves, &playbook.path));
    let gathered = if let (true, Some(facts)) = (playbook.uses_facts, prefetched_facts) {
        ctx.log.write(
            "facts",
            "as read with the run lock (nothing has changed since)",
        );
        Some(facts.clone())
    } else if playbook.uses_facts {
        gather_or_report(ctx, playbook, &mut recap).await
    } else {
        Some(BTreeMap::new())
    };
    let Some(mut facts) = gathered else {
        return recap;
    };

    let total = playbook.steps.len();
    let key = host::playbook_key(&playbook.path);
    // Owed by an earlier run (a change applied, its handler never ran): fired this time.
    let mut notified: BTreeSet<String> = ctx
        .pending_from_host
        .get(&key)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| playbook.handlers.iter().any(|h| &h.name == n))
        .collect();
    if !notified.is_empty() {
        ctx.log.write(
            "pending handlers",
            &format!(
                "notified by an earlier run, never run: {}",
                notified.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let mut next = 0;
    let mut stopped = false;
    // A connection that dropped and was re-established (see `Session::reconnect`): the step
    // that was running has an unknown outcome, so its probe is sent again, once per play.
    let mut reprobed_after_reconnect = false;
    // After a reconnection, nothing prefetched is trusted: the host may have moved under it.
    let mut fresh = false;
    'rounds: while next < total {
        if ctx.interrupt.requested() {
            recap.interrupted = true;
            stopped = true;
            break;
        }
        let prepared = prepare(
            ctx,
            playbook,
            renderer,
            &playbook.steps[next..],
            &facts,
            true,
        );
        let reconnects = ctx.session.reconnections();
        let (outputs, probe_times) = match probe_all(ctx, &prepared, fresh).await {
            Ok(o) => o,
            Err(e) if ctx.session.reconnections() > reconnects && !reprobed_after_reconnect => {
                reprobed_after_reconnect = true;
                fresh = true;
                ctx.log
                    .write("reconnected", &format!("{e:#}; probing again"));
                continue 'rounds;
            }
            Err(e) => {
                let result = Subject::new(
                    playbook,
                    &display_name(ctx, renderer, &playbook.steps[next], &facts),
                    false,
                )
                .failed(ctx, format!("{e:#}"));
                report(ctx, &mut recap, result);
                stopped = true;
                break;
            }
        };
        for (offset, prep) in prepared.into_iter().enumerate() {
            let index = next + offset;
            let step = &playbook.steps[index];
            if ctx.interrupt.requested() {
                // Stop scheduling: nothing new starts after a signal.
                recap.interrupted = true;
                stopped = true;
                break 'rounds;
            }
            let started = Instant::now();
            let name = step_name(ctx, renderer, step, &facts);
            ctx.reporter.event(&Event::StepStarted {
                host: host.clone(),
                step: name.clone(),
                index: index + 1,
                total,
            });
            if let Some(took) = probe_times.get(offset).copied().flatten() {
                ctx.log.write(
                    "timing",
                    &format!("probe of `{name}`: {} ms", took.as_millis()),
                );
                recap.timings.push(Timing {
                    kind: TimingKind::Probe,
                    what: format!("{}: {name}", playbook.name),
                    duration: took,
                });
            }
            let output = outputs.get(offset).cloned().flatten();
            let subject = Subject {
                playbook,
                step: &name,
                handler: false,
                started,
            };
            let reconnects = ctx.session.reconnections();
            let (mut result, mut value) =
                run_prepared(ctx, &subject, step, &key, prep, output, recap.changed > 0).await;
            let mut attempts = 1;
            while result.status == Status::Failed
                && attempts <= step.retries
                && !ctx.mode.check
                && !ctx.interrupt.requested()
                && ctx.session.reconnections() == reconnects
            {
                ctx.log.write(
                    "retry",
                    &format!(
                        "{name}: attempt {attempts} of {} failed; again in {}s",
                        step.retries + 1,
                        step.delay.as_secs()
                    ),
                );
                tokio::time::sleep(step.delay).await;
                attempts += 1;
                let again = prepare(
                    ctx,
                    playbook,
                    renderer,
                    std::slice::from_ref(step),
                    &facts,
                    true,
                );
                // Asked again for real: a prefetched answer is the state that just failed.
                (result, value) = match probe_all(ctx, &again, true).await {
                    Ok((outs, _)) => {
                        let prep = again.into_iter().next().expect("one step prepared");
                        let output = outs.into_iter().next().flatten();
                        run_prepared(ctx, &subject, step, &key, prep, output, recap.changed > 0)
                            .await
                    }
                    Err(e) => (subject.failed(ctx, format!("{e:#}")), None),
                };
            }
            if attempts > 1 {
                // The host was still moving while this step waited (an API coming up): what
                // was asked before, here and by any prefetch, may be out of date.
                ctx.moves.record();
            }
            if result.status == Status::Failed && attempts > 1 {
                result.message = result.message.map(|m| {
                    format!(
                        "gave up after {attempts} attempts, {}s apart: {m}",
                        step.delay.as_secs()
                    )
                });
            }
            // A failed step whose changes were attempted may have changed the host.
            let attempted = !result.changes.is_empty() && !ctx.mode.check;
            if result.status == Status::Failed
                && ctx.session.reconnections() > reconnects
                && !reprobed_after_reconnect
            {
                reprobed_after_reconnect = true;
                fresh = true;
                ctx.log.write(
                    "reconnected",
                    &format!(
                        "{}; probing again from `{name}`",
                        result
                            .message
                            .as_deref()
                            .unwrap_or("connection re-established")
                    ),
                );
                if attempted {
                    notified.extend(step.notify.iter().cloned());
                }
                next = index;
                continue 'rounds;
            }
            let status = report(ctx, &mut recap, result);
            if status == Status::Failed {
                if attempted {
                    notified.extend(step.notify.iter().cloned());
                }
                stopped = true;
                break 'rounds;
            }
            let registered = keep_registered(ctx, step, status, value);
            if status == Status::Changed {
                notified.extend(step.notify.iter().cloned());
            }
            if status == Status::Changed && !ctx.mode.check {
                // The host moved: later steps are probed again, with fresh facts.
                next = index + 1;
                if !playbook.facts.is_empty() {
                    match gather_or_report(ctx, playbook, &mut recap).await {
                        Some(f) => facts = f,
                        None => {
                            stopped = true;
                            break 'rounds;
                        }
                    }
                }
                continue 'rounds;
            }
            if registered || attempts > 1 {
                // Later steps may read the new value (in `when` too): render them again. After
                // a wait, their answers are as old as the wait: ask again.
                next = index + 1;
                continue 'rounds;
            }
        }
        break;
    }

    let run_them = !stopped || (ctx.force_handlers && !recap.interrupted);
    let owed = if run_them && !notified.is_empty() {
        run_handlers(ctx, playbook, renderer, &key, &notified, &facts, &mut recap).await
    } else {
        notified
    };
    if !owed.is_empty() && !ctx.mode.check {
        let names = owed.iter().cloned().collect::<Vec<_>>().join(", ");
        ctx.log.write(
            "handlers not run",
            &format!("still owed (recorded on the host, a rerun fires them): {names}"),
        );
        recap.pending_handlers.extend(owed);
    }
    ctx.reporter.event(&Event::PlayFinished {
        host: host.clone(),
        playbook: playbook.name.clone(),
    });
    recap
}

/// Runs the notified handlers; returns those still owed (failed or not reached).
async fn run_handlers(
    ctx: &PlayCtx<'_>,
    playbook: &Playbook,
    renderer: &Renderer,
    key: &str,
    notified: &BTreeSet<String>,
    facts: &BTreeMap<String, String>,
    recap: &mut HostRecap,
) -> BTreeSet<String> {
    let mut owed = notified.clone();
    // Handlers run once each, in the order they are declared, like Ansible's; whatever
    // `--tags` says: a change that was made needs its restart.
    for handler in playbook
        .handlers
        .iter()
        .filter(|h| notified.contains(&h.name))
    {
        if ctx.interrupt.requested() {
            recap.interrupted = true;
            break;
        }
        let name = display_name(ctx, renderer, handler, facts);
        let subject = Subject::new(playbook, &name, true);
        let prepared = prepare(
            ctx,
            playbook,
            renderer,
            std::slice::from_ref(handler),
            facts,
            false,
        );
        let result = match probe_all(ctx, &prepared, false).await {
            Ok((outputs, _)) => {
                let prep = prepared.into_iter().next().expect("one handler prepared");
                let output = outputs.into_iter().next().flatten();
                run_prepared(ctx, &subject, handler, key, prep, output, true)
                    .await
                    .0
            }
            Err(e) => subject.failed(ctx, format!("{e:#}")),
        };
        if report(ctx, recap, result) == Status::Failed {
            return owed;
        }
        if !ctx.mode.check {
            let clear = host::clear_pending_script(ctx.state_dir, key, &handler.name);
            match ctx.session.exec(&clear, None).await {
                Ok(out) if out.success() => {}
                _ => ctx.log.write(
                    "warning",
                    &format!(
                        "could not clear pending handler `{}` on the host; a rerun runs it again",
                        handler.name
                    ),
                ),
            }
        }
        owed.remove(&handler.name);
    }
    owed
}

/// Renders and builds each step; nothing touches the host here.
pub(crate) fn prepare(
    ctx: &PlayCtx<'_>,
    playbook: &Playbook,
    renderer: &Renderer,
    steps: &[Step],
    facts: &BTreeMap<String, String>,
    honour_tags: bool,
) -> Vec<Prepared> {
    let vars = host_context_with(
        ctx.inventory,
        ctx.host,
        ctx.secrets,
        facts,
        &ctx.registry.snapshot(),
    );
    steps
        .iter()
        .map(|step| {
            if honour_tags && !ctx.tags.allows(&step.tags) {
                return Prepared::Skip("excluded by tags".into());
            }
            let delegate = match delegate_of(ctx, step) {
                Ok(d) => d,
                Err(e) => return Prepared::Broken(e),
            };
            match build_step(playbook, renderer, step, &vars, facts, &ctx.local_dir) {
                Ok(Some(module)) => Prepared::Ready {
                    module,
                    delegate,
                    sensitive: step.sensitive,
                    secret_output: step.register_secret,
                },
                Ok(None) => Prepared::Skip("`when` is false".into()),
                Err(RenderError::FactNotKnownYet(f)) => Prepared::Deferred(f),
                Err(RenderError::Input(e)) => Prepared::Broken(e.to_string()),
            }
        })
        .collect()
}

/// The host a step is delegated to, when that is another host than the play's.
fn delegate_of(ctx: &PlayCtx<'_>, step: &Step) -> Result<Option<String>, String> {
    let Some(target) = &step.delegate_to else {
        return Ok(None);
    };
    let host = resolve_delegate(ctx.inventory, target)?;
    Ok((host.name != ctx.host.name).then(|| host.name.clone()))
}

/// The name shown for a step: rendered, and naming the host it is delegated to.
fn step_name(
    ctx: &PlayCtx<'_>,
    renderer: &Renderer,
    step: &Step,
    facts: &BTreeMap<String, String>,
) -> String {
    let name = display_name(ctx, renderer, step, facts);
    match delegate_of(ctx, step) {
        Ok(Some(d)) => format!("{name} (on {d})"),
        _ => name,
    }
}

/// Keeps a step's registered value (masked from now on when secret); true when one was kept.
fn keep_registered(ctx: &PlayCtx<'_>, step: &Step, status: Status, value: Option<String>) -> bool {
    let Some(name) = &step.register else {
        return false;
    };
    let value = match (value, status) {
        (Some(v), _) => v,
        // In check mode the command that would print it did not run.
        (None, Status::Changed) if ctx.mode.check => format!("<{name}: known after a real run>"),
        _ => return false,
    };
    if step.register_secret {
        // Whole and piece by piece: `TOKEN HASH` shown apart still shows neither.
        let redactor = ctx.log.redactor();
        redactor.add(&value);
        for piece in value.lines().chain(value.split_whitespace()) {
            redactor.add(piece.trim());
        }
    }
    ctx.log.write(
        "registered",
        &format!("{name} = {}", ctx.log.redactor().redact(&value)),
    );
    ctx.registry.set(&ctx.host.name, name, value);
    true
}

/// The session a prepared step runs on: its delegate's, or the play host's.
fn session_for<'a>(ctx: &'a PlayCtx<'_>, delegate: Option<&str>) -> Result<&'a Session, String> {
    match delegate {
        None => Ok(ctx.session),
        Some(d) => {
            ctx.delegates.get(d).map(|c| &c.session).ok_or_else(|| {
                format!("cannot run on {d}: no connection to it (see its error above)")
            })
        }
    }
}

/// A step's name as shown: rendered for this host (`"role {{ db_user }}"` -> "role
/// crypto_user"), or as written when it cannot be rendered yet.
fn display_name(
    ctx: &PlayCtx<'_>,
    renderer: &Renderer,
    step: &Step,
    facts: &BTreeMap<String, String>,
) -> String {
    if !step.name.contains("{{") {
        return step.name.clone();
    }
    let vars = host_context_with(
        ctx.inventory,
        ctx.host,
        ctx.secrets,
        facts,
        &ctx.registry.snapshot(),
    );
    let name = renderer
        .render_text(&step.name, &vars)
        .unwrap_or_else(|_| step.name.clone());
    // A name may show a secret; it is printed and logged like everything else: masked.
    ctx.log.redactor().redact(&name)
}

/// Renders a step's arguments for one host and builds its module; `None` when `when` is false.
/// Shared by runs and by the validation done before any host is touched.
pub fn build_step(
    playbook: &Playbook,
    renderer: &Renderer,
    step: &Step,
    vars: &minijinja::Value,
    facts: &BTreeMap<String, String>,
    local_dir: &std::path::Path,
) -> Result<Option<Box<dyn Module>>, RenderError> {
    let Some(args) = renderer.render_step(playbook, step, vars, facts)? else {
        return Ok(None);
    };
    let render_template = |src: &str| renderer.render_file(src, vars);
    let build_ctx = BuildContext {
        playbook: &playbook.path,
        line: Some(step.line),
        files_dir: renderer.files_dir(),
        render_template: &render_template,
        local_dir: local_dir.to_path_buf(),
    };
    modules::build(&step.module, &args, &build_ctx)
        .map(Some)
        .map_err(RenderError::Input)
}

/// Builds a step's module whatever its `when` says: validation checks the arguments of steps
/// that are skipped under placeholder facts but may run on a host. A rendering failure is
/// accepted (the `when` may be what guards an undefined value); a bad argument is not.
pub fn build_step_ignoring_when(
    playbook: &Playbook,
    renderer: &Renderer,
    step: &Step,
    vars: &minijinja::Value,
    facts: &BTreeMap<String, String>,
    local_dir: &std::path::Path,
) -> Result<(), InputError> {
    let unguarded = Step {
        when: None,
        ..step.clone()
    };
    let Ok(Some(args)) = renderer.render_step(playbook, &unguarded, vars, facts) else {
        return Ok(());
    };
    // A template file may use what the `when` guards: its syntax is checked, not its values.
    let render_template = |src: &str| {
        renderer
            .render_file(src, vars)
            .or_else(|_| renderer.check_file_syntax(src).map(|()| String::new()))
    };
    let build_ctx = BuildContext {
        playbook: &playbook.path,
        line: Some(step.line),
        files_dir: renderer.files_dir(),
        render_template: &render_template,
        local_dir: local_dir.to_path_buf(),
    };
    modules::build(&step.module, &args, &build_ctx).map(|_| ())
}

/// Each step's probe output, and how long its probe took on the host (when measurable).
type Probed = (Vec<Option<ProbeOutput>>, Vec<Option<std::time::Duration>>);

/// Asks every ready step's probe (the host's in one batch); returns the outputs by probe
/// index. `fresh`: ask the host even when the run's prefetch holds an answer.
async fn probe_all(
    ctx: &PlayCtx<'_>,
    prepared: &[Prepared],
    fresh: bool,
) -> anyhow::Result<Probed> {
    let opts = ProbeOptions {
        want_content: ctx.mode.diff,
    };
    // Each prepared step's answer, by index: from the prefetch, from its delegate (probed on
    // its own host, one by one), or from the host's batch. A step with nothing to probe gets
    // an empty answer.
    let mut answers: BTreeMap<usize, Answer> = BTreeMap::new();
    // Probes are read-only and independent: in one batch, four at a time, so the host's probe
    // time is near its slowest probe.
    let mut local: Vec<(usize, Asked)> = Vec::new();
    let mut from_prefetch = 0;
    let prefetched = ctx.prefetched.filter(|_| !fresh);
    for (i, p) in prepared.iter().enumerate() {
        let Prepared::Ready {
            module,
            delegate,
            sensitive,
            secret_output,
        } = p
        else {
            continue;
        };
        let script = module.probe(opts);
        if script.trim().is_empty() {
            continue;
        }
        let target = delegate.as_deref().unwrap_or(&ctx.host.name);
        if let Some(answer) =
            prefetched.and_then(|k| k.answer(ctx.moves, target, &script, module.probe_stdin()))
        {
            answers.insert(i, answer.clone());
            from_prefetch += 1;
            continue;
        }
        let Some(d) = delegate else {
            local.push((
                i,
                Asked::new(target, module.as_ref(), script, *sensitive, *secret_output),
            ));
            continue;
        };
        let Ok(session) = session_for(ctx, Some(d)) else {
            // Reported when the step runs: no output means "did not finish".
            answers.insert(
                i,
                Answer {
                    output: None,
                    took: None,
                },
            );
            continue;
        };
        let logged = if *sensitive {
            "(a sensitive step's probe, not logged)"
        } else {
            script.as_str()
        };
        ctx.log.write(&format!("probe on {d}"), logged);
        let out = session.exec(&script, module.probe_stdin()).await?;
        let shown = if *secret_output || *sensitive || module.probe_is_sensitive() {
            "(sensitive output not logged)".to_string()
        } else {
            format!("exit {}\n{}", out.exit_status, out.stdout_str())
        };
        ctx.log.write(&format!("probe result on {d}"), &shown);
        answers.insert(
            i,
            Answer {
                output: Some(ProbeOutput {
                    exit_status: out.exit_status as i32,
                    stdout: out.stdout_str(),
                }),
                took: None,
            },
        );
    }
    if from_prefetch > 0 {
        ctx.log.write(
            "probe",
            &format!(
                "{from_prefetch} answered by the run's prefetch (nothing has changed since it was asked)"
            ),
        );
    }
    if !local.is_empty() {
        let (indices, asked): (Vec<usize>, Vec<Asked>) = local.into_iter().unzip();
        let batch = ProbeBatch::of(asked);
        ctx.log.write("probe", batch.logged());
        let input = Some(batch.input()).filter(|i| !i.is_empty());
        let out = ctx.session.exec(&batch.script(), input).await?;
        let got = batch.answers(&out.stdout_str(), ctx.log, "probe");
        if !out.stderr.is_empty() {
            ctx.log.write("probe stderr", &out.stderr_str());
        }
        for (i, answer) in indices.into_iter().zip(got) {
            let unfinished = Answer {
                output: None,
                took: None,
            };
            answers.insert(i, answer.unwrap_or(unfinished));
        }
    }
    let outputs = (0..prepared.len())
        .map(|i| match answers.get(&i) {
            Some(a) => a.output.clone(),
            None => Some(ProbeOutput::default()),
        })
        .collect();
    let times = (0..prepared.len())
        .map(|i| answers.get(&i).and_then(|a| a.took))
        .collect();
    Ok((outputs, times))
}

/// Plans and applies one prepared step; also returns the value `register` would keep.
async fn run_prepared(
    ctx: &PlayCtx<'_>,
    subject: &Subject<'_>,
    step: &Step,
    playbook_key: &str,
    prep: Prepared,
    output: Option<ProbeOutput>,
    earlier_would_change: bool,
) -> (StepResult, Option<String>) {
    let skipped = |why: String| subject.finished(ctx, Status::Skipped, vec![], vec![], Some(why));
    let (module, delegate, sensitive, secret_output) = match prep {
        Prepared::Ready {
            module,
            delegate,
            sensitive,
            secret_output,
        } => (module, delegate, sensitive, secret_output),
        Prepared::Skip(why) => return (skipped(why), None),
        Prepared::Broken(msg) => return (subject.failed(ctx, msg), None),
        Prepared::Deferred(fact) => {
            let msg = format!("needs fact `{fact}`, which the host does not report yet");
            let result = if ctx.mode.check {
                // An earlier step would provide it; in check mode that step did not run.
                skipped(format!("{msg} (an earlier step would provide it)"))
            } else {
                subject.failed(ctx, msg)
            };
            return (result, None);
        }
    };
    let session = match session_for(ctx, delegate.as_deref()) {
        Ok(s) => s,
        Err(e) => return (subject.failed(ctx, e), None),
    };
    let Some(output) = output else {
        let result = subject.failed(
            ctx,
            "the probe did not finish (connection or shell died)".into(),
        );
        return (result, None);
    };
    let changes = match module.plan(&output) {
        Ok(c) => c,
        // In check mode an earlier step that would change (say, installing the package that
        // brings a unit) did not run, so what this one manages may not exist yet: say so,
        // don't fail. Any other planning error (a probe that did not answer) fails.
        Err(e) if ctx.mode.check && earlier_would_change && e.is_not_yet() => {
            let result = skipped(format!(
                "cannot be planned before earlier changes are made: {e}"
            ));
            return (result, None);
        }
        Err(_) if sensitive => return (subject.failed(ctx, SENSITIVE_FAILURE.into()), None),
        Err(e) => return (subject.failed(ctx, e.to_string()), None),
    };
    let probed_value = module.registered_value(&output);
    if changes.is_empty() {
        return (
            subject.finished(ctx, Status::Ok, vec![], vec![], None),
            probed_value,
        );
    }
    // A sensitive step's changes go through the same choke point with a muted log; output and
    // events name how many changes were made, not what they were.
    let muted;
    let log = if sensitive {
        muted = ctx.log.muted();
        &muted
    } else {
        ctx.log
    };
    let redactor = ctx.log.redactor();
    let sentences: Vec<String> = if sensitive {
        vec![format!(
            "{} change(s) (sensitive step: not shown)",
            changes.len()
        )]
    } else {
        changes
            .iter()
            .map(|c| redactor.redact(&c.summary))
            .collect()
    };
    let diffs: Vec<String> = if ctx.mode.diff && !sensitive {
        changes
            .iter()
            .filter_map(|c| diff_of(c, redactor))
            .collect()
    } else {
        Vec::new()
    };
    let apply_ctx = ApplyCtx {
        session,
        mode: ctx.mode,
        log,
        cache_dir: &ctx.cache_dir,
        state_dir: ctx.state_dir,
        run_id: ctx.run_id,
    };
    let limit = deadline::limit_for(step, module.as_ref());
    let mut applied = 0;
    let mut printed = None;
    let mut failure = None;
    for change in &changes {
        if let Some(d) = &delegate {
            ctx.log.write("delegated to", d);
        }
        // A signal lets the running change finish, within a bound.
        let outcome = tokio::select! {
            r = apply(&apply_ctx, change, limit, secret_output) => r,
            _ = ctx.interrupt.grace_over() => Err(anyhow::anyhow!(
                "interrupted: the change did not finish within {}s of the signal and was stopped on the host{}",
                GRACE.as_secs(),
                if matches!(change.action, modules::Action::GuardedFirewall { .. }) {
                    "; the firewall rollback armed on the host restores the previous firewall"
                } else {
                    ""
                }
            )),
        };
        match outcome {
            Ok(out) => {
                applied += 1;
                printed = out.or(printed);
            }
            Err(e) => {
                // The change may have been made even so: its handlers are owed.
                applied += 1;
                failure = Some(e);
                break;
            }
        }
    }
    if applied > 0 && !ctx.mode.check {
        ctx.moves.record();
    }
    if applied > 0 && !ctx.mode.check && !step.notify.is_empty() {
        // Recorded before anything else happens, so a run that stops here still owes them.
        let names: BTreeSet<String> = step.notify.iter().cloned().collect();
        let record = host::record_pending_script(ctx.state_dir, playbook_key, &names);
        ctx.log.write("record pending handlers", &record);
        match ctx.session.exec(&record, None).await {
            Ok(out) if out.success() => {}
            other => {
                let why = match other {
                    Ok(out) => format!("exit {}: {}", out.exit_status, out.stderr_str().trim()),
                    Err(e) => e.to_string(),
                };
                let mut result = subject.failed(
                    ctx,
                    format!(
                        "changed, but its handlers ({}) could not be recorded as owed on the host ({why})",
                        step.notify.join(", ")
                    ),
                );
                result.changes = sentences;
                return (result, None);
            }
        }
    }
    if let Some(e) = failure {
        let why = if sensitive {
            SENSITIVE_FAILURE.to_string()
        } else {
            format!("{e:#}")
        };
        let mut result = subject.failed(ctx, why);
        result.changes = sentences;
        return (result, None);
    }
    let value = probed_value.or_else(|| printed.map(|p| p.trim().to_string()));
    (
        subject.finished(ctx, Status::Changed, sentences, diffs, None),
        value,
    )
}

/// What a failed sensitive step says instead of its error (which may quote content or commands).
const SENSITIVE_FAILURE: &str =
    "failed (sensitive step: its error is not shown; run it without `sensitive` to see why)";

/// A unified diff of a file change, secrets masked on both sides before diffing.
fn diff_of(change: &Change, redactor: &crate::redact::Redactor) -> Option<String> {
    let (old, new) = change.diff.as_ref()?;
    let (old, new) = (redactor.redact(old), redactor.redact(new));
    let label = match &change.action {
        modules::Action::Upload { dest, .. } => dest.clone(),
        _ => change.summary.clone(),
    };
    Some(
        similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{label} (before)"), &format!("{label} (after)"))
            .to_string(),
    )
}

/// What a result is about: a step, a handler, or a pseudo-step such as "gather facts".
struct Subject<'a> {
    playbook: &'a Playbook,
    step: &'a str,
    handler: bool,
    started: Instant,
}

impl<'a> Subject<'a> {
    fn new(playbook: &'a Playbook, step: &'a str, handler: bool) -> Self {
        Subject {
            playbook,
            step,
            handler,
            started: Instant::now(),
        }
    }

    fn finished(
        &self,
        ctx: &PlayCtx<'_>,
        status: Status,
        changes: Vec<String>,
        diffs: Vec<String>,
        message: Option<String>,
    ) -> StepResult {
        StepResult {
            host: ctx.host.name.clone(),
            playbook: self.playbook.name.clone(),
            step: self.step.to_string(),
            handler: self.handler,
            status,
            changes,
            diffs,
            message,
            duration: self.started.elapsed(),
        }
    }

    fn failed(&self, ctx: &PlayCtx<'_>, message: String) -> StepResult {
        ctx.log
            .write("failed", &format!("{}: {message}", self.step));
        let message = ctx.log.redactor().redact(&message);
        self.finished(ctx, Status::Failed, Vec::new(), Vec::new(), Some(message))
    }
}

/// Counts a result in the recap and reports it; returns its status.
fn report(ctx: &PlayCtx<'_>, recap: &mut HostRecap, result: StepResult) -> Status {
    let status = result.status;
    recap.count(status);
    ctx.log.write(
        "timing",
        &format!(
            "step `{}`: {status:?} in {} ms (plan and apply)",
            result.step,
            result.duration.as_millis()
        ),
    );
    recap.timings.push(Timing {
        kind: TimingKind::Step,
        what: format!("{}: {}", result.playbook, result.step),
        duration: result.duration,
    });
    ctx.reporter.event(&Event::StepFinished(result));
    status
}

/// Gathers facts, or reports the failure as a failed "gather facts" step and returns `None`.
async fn gather_or_report(
    ctx: &PlayCtx<'_>,
    playbook: &Playbook,
    recap: &mut HostRecap,
) -> Option<BTreeMap<String, String>> {
    match gather_facts(ctx, playbook).await {
        Ok(facts) => Some(facts),
        Err(e) => {
            let result =
                Subject::new(playbook, "gather facts", false).failed(ctx, format!("{e:#}"));
            report(ctx, recap, result);
            None
        }
    }
}

/// OS facts plus the playbook's own, in one round trip. A fact that fails or prints nothing
/// stays absent, so templates using it say so instead of rendering an empty string.
async fn gather_facts(
    ctx: &PlayCtx<'_>,
    playbook: &Playbook,
) -> anyhow::Result<BTreeMap<String, String>> {
    let request = FactsRequest::new(playbook);
    ctx.log.write("facts", &request.script());
    let out = ctx.session.exec(&request.script(), None).await?;
    let facts = request.read(&out.stdout_str());
    ctx.log.write("facts result", &format!("{facts:?}"));
    Ok(facts)
}
