//! A host's run asks it everything it can, early: with the lock, the facts of every play the
//! host runs and the probes of their steps that need no fact (rendered before connecting); then
//! the probes of every other step of those plays that can be rendered with the facts, in this
//! stage and later ones, and of the steps they delegate to other hosts (on those hosts, at the
//! same time). A play then takes its answers from here instead of asking again, so a converged
//! host costs at most two commands after connecting, however many plays and stages it has.
//!
//! An answer is only as good as the state it saw: it is used while this run has applied no
//! change anywhere since it was asked (`Moves`), and for exactly the script it answered
//! (a step rendered differently, after a registered value or new facts, asks again). Once
//! anything changed, everything is asked afresh, as if there were no prefetch. Retries and
//! the re-probe after a reconnection never use it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;

use crate::inventory::{Host, Inventory, Secrets};
use crate::modules::{Module, ProbeOptions, ProbeOutput};
use crate::playbook::template::Renderer;
use crate::playbook::Playbook;
use crate::runner::batch::Batch;
use crate::runner::context::{host_context_with, RegisteredValues};
use crate::runner::facts::Facts;
use crate::runner::log::HostLog;
use crate::runner::play::{self, PlayCtx, Prepared, TagFilter};

/// How many times this run has applied a change, on any host. A change on one host can change
/// what another host's probe sees (a node joining shows in the master's API), so one counter.
#[derive(Debug, Default)]
pub struct Moves(AtomicU64);

impl Moves {
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Counted when a change has been attempted (made or not: a failed change may have
    /// changed the host too), so an answer asked while it ran is never used.
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A probe as sent: where it runs, its script and its input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    target: String,
    script: String,
    input: Option<Vec<u8>>,
}

/// A probe's answer and how long it took on the host.
#[derive(Debug, Clone)]
pub struct Answer {
    pub output: Option<ProbeOutput>,
    pub took: Option<Duration>,
}

/// What a host said early in the run.
#[derive(Debug, Default, Clone)]
pub struct Prefetched {
    /// `Moves::now()` before the first of these questions was sent.
    asked_at: u64,
    facts: BTreeMap<PathBuf, Facts>,
    answers: HashMap<Question, Answer>,
}

impl Prefetched {
    /// Facts known before any probe: the ones that came with the lock.
    pub fn with_facts(asked_at: u64, facts: BTreeMap<PathBuf, Facts>) -> Prefetched {
        Prefetched {
            asked_at,
            facts,
            answers: HashMap::new(),
        }
    }

    /// Adds answers asked no earlier than `asked_at` (the lock's).
    pub fn with_answers(mut self, answers: Vec<(Question, Answer)>) -> Prefetched {
        self.answers.extend(answers);
        self
    }

    fn current(&self, moves: &Moves) -> bool {
        moves.now() == self.asked_at
    }

    /// The playbook's facts, while nothing has changed since they were read.
    pub fn facts(&self, moves: &Moves, playbook: &Path) -> Option<&Facts> {
        self.current(moves)
            .then(|| self.facts.get(playbook))
            .flatten()
    }

    /// The answer to exactly this probe on `target`, while nothing has changed since.
    pub fn answer(
        &self,
        moves: &Moves,
        target: &str,
        script: &str,
        input: Option<&[u8]>,
    ) -> Option<&Answer> {
        if !self.current(moves) {
            return None;
        }
        self.answers.get(&Question {
            target: target.to_string(),
            script: script.to_string(),
            input: input.map(<[u8]>::to_vec),
        })
    }
}

/// One probe to send, and whether its script or output may be logged.
pub(crate) struct Asked {
    question: Question,
    /// The step is `sensitive`: its probe script is not logged either.
    hide_script: bool,
    /// Its output is not logged (a secret, a password verifier).
    hide_output: bool,
}

impl Asked {
    /// `step_sensitive`: the step says `sensitive = true`; `secret_output`: it registers a
    /// secret. Either, or a module whose probe reads secrets, keeps the output out of logs.
    pub(crate) fn new(
        target: &str,
        module: &dyn Module,
        script: String,
        step_sensitive: bool,
        secret_output: bool,
    ) -> Asked {
        Asked {
            question: Question {
                target: target.to_string(),
                script,
                input: module.probe_stdin().map(<[u8]>::to_vec),
            },
            hide_script: step_sensitive,
            hide_output: step_sensitive || secret_output || module.probe_is_sensitive(),
        }
    }
}

/// Asks every probe of `plays` (the host's plays in run order) that can be rendered with the
/// facts already read, on the host and on the hosts steps are delegated to, one batch per host,
/// all at once. A probe that cannot be asked now (needs a registered value, a fact the host
/// does not report yet, a delegate with no connection) is left to its play.
pub async fn ask(
    ctx: &PlayCtx<'_>,
    plays: &[(&Playbook, &Renderer)],
    mut known: Prefetched,
) -> Prefetched {
    if !known.current(ctx.moves) {
        return known;
    }
    let opts = ProbeOptions {
        want_content: ctx.mode.diff,
    };
    let mut by_target: BTreeMap<String, Vec<Asked>> = BTreeMap::new();
    for (playbook, renderer) in plays {
        let facts = if playbook.uses_facts {
            match known.facts.get(&playbook.path) {
                Some(f) => f.clone(),
                None => continue,
            }
        } else {
            Facts::new()
        };
        for prepared in play::prepare(ctx, playbook, renderer, &playbook.steps, &facts, true) {
            let Prepared::Ready {
                module,
                delegate,
                secret_output,
                sensitive,
            } = prepared
            else {
                continue;
            };
            let script = module.probe(opts);
            if script.trim().is_empty() {
                continue;
            }
            let target = delegate.unwrap_or_else(|| ctx.host.name.clone());
            let asked = Asked::new(&target, module.as_ref(), script, sensitive, secret_output);
            // Asked with the lock already.
            if known.answers.contains_key(&asked.question) {
                continue;
            }
            by_target.entry(target).or_default().push(asked);
        }
    }
    let asks = by_target
        .into_iter()
        .map(|(target, asked)| ask_one_host(ctx, target, asked));
    for answers in join_all(asks).await {
        known.answers.extend(answers);
    }
    known
}

/// One batch on one host; nothing when the host cannot be asked (its play asks again and
/// reports what goes wrong).
async fn ask_one_host(
    ctx: &PlayCtx<'_>,
    target: String,
    asked: Vec<Asked>,
) -> Vec<(Question, Answer)> {
    let session = if target == ctx.host.name {
        ctx.session
    } else {
        match ctx.delegates.get(&target) {
            Some(conn) => &conn.session,
            None => return Vec::new(),
        }
    };
    let early = ProbeBatch::of(asked);
    let on = if target == ctx.host.name {
        String::new()
    } else {
        format!(" on {target}")
    };
    ctx.log.write(
        &format!("prefetch{on}"),
        &format!(
            "every probe of this host's plays that can be asked now\n{}",
            early.logged
        ),
    );
    let input = Some(early.input()).filter(|i| !i.is_empty());
    let out = match session.exec(&early.script(), input).await {
        Ok(out) => out,
        Err(e) => {
            ctx.log.write(
                &format!("prefetch{on} failed"),
                &format!("{e:#}; each play probes for itself"),
            );
            return Vec::new();
        }
    };
    early.read(&out.stdout_str(), ctx.log, &format!("prefetch{on}"))
}

/// What a host is asked with its lock: its plays' facts, and the probes that need none.
pub struct WithTheLock {
    pub facts: crate::runner::facts::FactsRequest,
    pub probes: Option<ProbeBatch>,
}

/// Probes running at once on a host (each a process or two: bounded for small machines).
const PROBE_CONCURRENCY: usize = 4;

/// Probes in one concurrent batch on one host, with what may be logged of each: the prefetch's,
/// the lock's and each play's own.
pub struct ProbeBatch {
    batch: Batch,
    asked: Vec<Asked>,
    parts: Vec<usize>,
    hidden: Vec<bool>,
    logged: String,
}

impl ProbeBatch {
    pub(crate) fn of(asked: Vec<Asked>) -> ProbeBatch {
        let mut batch = Batch::concurrent(PROBE_CONCURRENCY);
        let mut logged = String::new();
        let mut hidden = Vec::new();
        let parts: Vec<usize> = asked
            .iter()
            .map(|a| {
                let part = match &a.question.input {
                    Some(input) => batch.push_with_input(&a.question.script, input),
                    None => batch.push(&a.question.script),
                };
                if hidden.len() <= part {
                    hidden.resize(part + 1, false);
                }
                hidden[part] |= a.hide_output;
                if a.hide_script {
                    logged.push_str(&format!(
                        "# part {part}: a sensitive step's probe (not logged)\n"
                    ));
                } else {
                    logged.push_str(&format!("# part {part}\n{}\n", a.question.script));
                }
                part
            })
            .collect();
        ProbeBatch {
            batch,
            asked,
            parts,
            hidden,
            logged,
        }
    }

    /// The probes of `plays` (the host's, in run order) that need no fact, no registered value
    /// and no input, rendered before the host is reached: they travel with the lock. `None`
    /// when there are none.
    #[allow(clippy::too_many_arguments)]
    pub fn before_connecting(
        inventory: &Inventory,
        host: &Host,
        secrets: &Secrets,
        tags: &TagFilter,
        local_dir: &Path,
        diff: bool,
        plays: &[(&Playbook, &Renderer)],
    ) -> Option<ProbeBatch> {
        let no_facts = Facts::new();
        let vars = host_context_with(
            inventory,
            host,
            secrets,
            &no_facts,
            &RegisteredValues::default(),
        );
        let opts = ProbeOptions { want_content: diff };
        let mut asked = Vec::new();
        for (playbook, renderer) in plays {
            for step in &playbook.steps {
                // Delegated steps run elsewhere; a step needing a fact or a registered value
                // fails to render here and is asked later.
                if !tags.allows(&step.tags) || step.delegate_to.is_some() {
                    continue;
                }
                let Ok(Some(module)) =
                    play::build_step(playbook, renderer, step, &vars, &no_facts, local_dir)
                else {
                    continue;
                };
                let script = module.probe(opts);
                if script.trim().is_empty() || module.probe_stdin().is_some() {
                    continue;
                }
                asked.push(Asked::new(
                    &host.name,
                    module.as_ref(),
                    script,
                    step.sensitive,
                    step.register_secret,
                ));
            }
        }
        (!asked.is_empty()).then(|| ProbeBatch::of(asked))
    }

    pub fn script(&self) -> String {
        self.batch.script()
    }

    /// What may be logged of the batch (sensitive steps' probes left out).
    pub fn logged(&self) -> &str {
        &self.logged
    }

    /// The bytes the batch reads on its stdin (empty when no probe reads input).
    pub fn input(&self) -> &[u8] {
        self.batch.input()
    }

    /// Each answer, by question; results logged under `label` (sensitive ones without their
    /// output). A part that did not finish is left out: its play asks again.
    pub fn read(&self, stdout: &str, log: &HostLog, label: &str) -> Vec<(Question, Answer)> {
        self.asked
            .iter()
            .zip(self.answers(stdout, log, label))
            .filter_map(|(a, answer)| Some((a.question.clone(), answer?)))
            .collect()
    }

    /// Each probe's answer, in the order asked (`None`: its part did not finish); results
    /// logged under `label`, sensitive ones without their output.
    pub(crate) fn answers(&self, stdout: &str, log: &HostLog, label: &str) -> Vec<Option<Answer>> {
        let parsed = self.batch.parse(stdout);
        let elapsed = self.batch.elapsed(stdout);
        for (i, part) in parsed.iter().enumerate() {
            let shown = match part {
                _ if self.hidden.get(i).copied().unwrap_or(false) => {
                    "(sensitive output not logged)".to_string()
                }
                Some((status, text)) => format!("exit {status}\n{text}"),
                None => "(no output: the probe script stopped early)".to_string(),
            };
            let took = elapsed[i]
                .map(|d| format!(" ({} ms)", d.as_millis()))
                .unwrap_or_default();
            log.write(&format!("{label} result {i}{took}"), &shown);
        }
        self.parts
            .iter()
            .map(|&part| {
                let (exit_status, stdout) = parsed[part].clone()?;
                Some(Answer {
                    output: Some(ProbeOutput {
                        exit_status,
                        stdout,
                    }),
                    took: elapsed[part],
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_used_only_while_nothing_changed_and_only_for_its_exact_probe() {
        let moves = Moves::default();
        let mut known = Prefetched::with_facts(
            moves.now(),
            BTreeMap::from([(PathBuf::from("p.toml"), Facts::new())]),
        );
        known.answers.insert(
            Question {
                target: "worker".into(),
                script: "stat /etc/x".into(),
                input: None,
            },
            Answer {
                output: Some(ProbeOutput {
                    exit_status: 0,
                    stdout: "type=regular file\n".into(),
                }),
                took: None,
            },
        );
        assert!(known
            .answer(&moves, "worker", "stat /etc/x", None)
            .is_some());
        // Another script, another host, or input the answer was not given for: asked again.
        assert!(known
            .answer(&moves, "worker", "stat /etc/y", None)
            .is_none());
        assert!(known
            .answer(&moves, "master", "stat /etc/x", None)
            .is_none());
        assert!(known
            .answer(&moves, "worker", "stat /etc/x", Some(b"secret"))
            .is_none());
        assert!(known.facts(&moves, Path::new("p.toml")).is_some());
        // A change anywhere in the run: nothing prefetched is used any more.
        moves.record();
        assert!(known
            .answer(&moves, "worker", "stat /etc/x", None)
            .is_none());
        assert!(known.facts(&moves, Path::new("p.toml")).is_none());
    }
}
