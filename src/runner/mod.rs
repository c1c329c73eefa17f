//! Runs stages of playbooks over inventory hosts: hosts in parallel (bounded by `--forks`),
//! steps in order on each host, one SSH connection per host for the whole run.

pub mod apply;
pub mod batch;
pub mod context;
pub mod deadline;
pub mod events;
pub mod facts;
pub mod firewall_guard;
pub mod host;
pub mod interrupt;
pub mod log;
pub mod play;
pub mod prefetch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use tokio::sync::{Mutex, OnceCell, Semaphore};

use crate::inventory::{Host, Inventory, Secrets};
use crate::playbook::template::Renderer;
use crate::playbook::Playbook;
use crate::transport::{ConnectOptions, Session};

pub use apply::Mode;
pub use events::{Event, HostRecap, Reporter, Status, StepResult, Summary};
pub use interrupt::Interrupt;
pub use play::TagFilter;

/// Playbooks that run together; a stage starts only when the one before it succeeded.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub playbooks: Vec<Playbook>,
}

pub struct RunRequest {
    pub inventory: Inventory,
    pub secrets: Secrets,
    pub stages: Vec<Stage>,
    /// Only these host names, when given.
    pub limit: Option<Vec<String>>,
    pub mode: Mode,
    /// Hosts worked on at once; `None` = all.
    pub forks: Option<usize>,
    pub tags: TagFilter,
    pub connect: ConnectOptions,
    /// `--force-handlers`: run notified handlers even after a step failed.
    pub force_handlers: bool,
    /// Raised by the app's signal handler.
    pub interrupt: Arc<Interrupt>,
}

/// A host the run works on: its connection, the lock this run holds there, and what the
/// host said when the lock was taken.
pub(crate) struct HostConn {
    pub(crate) session: Session,
    /// The host-side state directory (`host::state_dir`).
    state_dir: String,
    lock: Mutex<Option<host::HostLock>>,
    found: host::Found,
    /// What the host answered with the lock: its plays' facts and the probes that need none.
    known: Option<prefetch::Prefetched>,
}

/// Why a host gets no work: it does not answer, or it must not be touched now.
#[derive(Clone)]
enum HostRefusal {
    Unreachable,
    Refused,
}

type SessionCell = OnceCell<Result<Arc<HostConn>, HostRefusal>>;

pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    )
}

pub async fn run(req: RunRequest, reporter: Arc<dyn Reporter>) -> Summary {
    let started = Instant::now();
    let state_dir = req.inventory.state_dir();
    let run_id = new_run_id();
    let who = host::RunInfo::new(&run_id);
    let log_dir = state_dir.join("logs").join(&run_id);
    let redactor = req.secrets.redactor();

    let in_limit = |h: &Host| req.limit.as_ref().is_none_or(|l| l.contains(&h.name));
    let mut involved: Vec<&Host> = req
        .inventory
        .hosts
        .iter()
        .filter(|h| in_limit(h))
        .filter(|h| {
            req.stages
                .iter()
                .flat_map(|s| &s.playbooks)
                .any(|p| h.has_role(&p.hosts))
        })
        .collect();
    // Hosts that steps are delegated to are connected too, whatever --limit says.
    let delegates_of = |host: &Host, playbooks: &[&Playbook]| -> BTreeSet<String> {
        playbooks
            .iter()
            .filter(|p| host.has_role(&p.hosts))
            .flat_map(|p| p.steps.iter().chain(&p.handlers))
            .filter_map(|s| s.delegate_to.as_deref())
            .filter_map(|t| context::resolve_delegate(&req.inventory, t).ok())
            .map(|h| h.name.clone())
            .filter(|name| *name != host.name)
            .collect()
    };
    let all_playbooks: Vec<&Playbook> = req.stages.iter().flat_map(|s| &s.playbooks).collect();
    let delegate_hosts: BTreeSet<String> = involved
        .iter()
        .flat_map(|h| delegates_of(h, &all_playbooks))
        .collect();
    for name in delegate_hosts {
        if let Some(h) = req.inventory.host(&name) {
            if !involved.iter().any(|i| i.name == name) {
                involved.push(h);
            }
        }
    }
    let registry = context::Registry::default();
    reporter.event(&Event::RunStarted {
        run_id: run_id.clone(),
        log_dir: log_dir.display().to_string(),
        hosts: involved.iter().map(|h| h.name.clone()).collect(),
        check: req.mode.check,
    });

    let logs: BTreeMap<String, log::HostLog> = involved
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                log::HostLog::create(&log_dir, &h.name, redactor.clone()),
            )
        })
        .collect();
    if let Some(log) = logs.values().find(|l| !l.is_open()) {
        eprintln!(
            "warning: cannot write the run log {}; going on without logs",
            log.path.display()
        );
    }
    let sessions: BTreeMap<String, SessionCell> = involved
        .iter()
        .map(|h| (h.name.clone(), OnceCell::new()))
        .collect();
    let mut recaps: BTreeMap<String, HostRecap> = involved
        .iter()
        .map(|h| (h.name.clone(), HostRecap::default()))
        .collect();
    let forks = Arc::new(Semaphore::new(req.forks.unwrap_or(involved.len()).max(1)));
    let mut stages_not_run = Vec::new();
    let moves = prefetch::Moves::default();
    let stage_renderers: Vec<Vec<Renderer>> = req
        .stages
        .iter()
        .map(|stage| {
            stage
                .playbooks
                .iter()
                .map(|p| Renderer::new(&p.files_dir()))
                .collect()
        })
        .collect();
    // Every play a host runs in this run, in order: its facts are read with the lock and its
    // probes asked at once when the host starts (see `prefetch`).
    let plays_of = |host: &Host| -> Vec<(&Playbook, &Renderer)> {
        if !in_limit(host) {
            return Vec::new();
        }
        req.stages
            .iter()
            .zip(&stage_renderers)
            .flat_map(|(stage, renderers)| stage.playbooks.iter().zip(renderers))
            .filter(|(p, _)| host.has_role(&p.hosts))
            .collect()
    };
    let with_the_lock: BTreeMap<String, prefetch::WithTheLock> = involved
        .iter()
        .filter_map(|h| {
            let plays = plays_of(h);
            if plays.is_empty() {
                return None;
            }
            let playbooks: Vec<&Playbook> = plays.iter().map(|(p, _)| *p).collect();
            let probes = prefetch::ProbeBatch::before_connecting(
                &req.inventory,
                h,
                &req.secrets,
                &req.tags,
                &state_dir,
                req.mode.diff,
                &plays,
            );
            Some((
                h.name.clone(),
                prefetch::WithTheLock {
                    facts: facts::FactsRequest::for_playbooks(&playbooks),
                    probes,
                },
            ))
        })
        .collect();
    let prefetches: BTreeMap<String, OnceCell<prefetch::Prefetched>> = involved
        .iter()
        .map(|h| (h.name.clone(), OnceCell::new()))
        .collect();

    for (stage_index, stage) in req.stages.iter().enumerate() {
        let failed_before = recaps.values().any(|r| r.failed > 0 || r.unreachable);
        if req.interrupt.requested() {
            for later in &req.stages[stage_index..] {
                reporter.event(&Event::StageSkipped {
                    stage: later.name.clone(),
                    reason: "interrupted".into(),
                });
                stages_not_run.push(later.name.clone());
            }
            break;
        }
        if failed_before {
            for later in &req.stages[stage_index..] {
                reporter.event(&Event::StageSkipped {
                    stage: later.name.clone(),
                    reason: "an earlier stage failed".into(),
                });
                stages_not_run.push(later.name.clone());
            }
            break;
        }
        let renderers = &stage_renderers[stage_index];
        // Per host, its plays of this stage run one after another (one apt/dpkg at a time).
        let host_tasks = involved.iter().map(|host| {
            // A host that is here only as a delegate (outside --limit) runs no play of its own.
            let plays: Vec<(&Playbook, &Renderer)> = stage
                .playbooks
                .iter()
                .zip(renderers)
                .filter(|(p, _)| in_limit(host) && host.has_role(&p.hosts))
                .collect();
            let all_plays = plays_of(host);
            let forks = forks.clone();
            let reporter = reporter.clone();
            let req = &req;
            let sessions = &sessions;
            let logs = &logs;
            let state_dir = state_dir.clone();
            let who = &who;
            let registry = &registry;
            let moves = &moves;
            let with_the_lock = &with_the_lock;
            let prefetches = &prefetches;
            // The delegates of all the host's plays, later stages' too: the prefetch asks them
            // their probes now.
            let own_playbooks: Vec<&Playbook> = all_plays.iter().map(|(p, _)| *p).collect();
            let wanted_delegates = delegates_of(host, &own_playbooks);
            async move {
                let mut recap = HostRecap::default();
                if plays.is_empty() {
                    return (host.name.clone(), recap);
                }
                let _permit = forks.acquire().await.expect("semaphore never closed");
                if req.interrupt.requested() {
                    recap.interrupted = true;
                    return (host.name.clone(), recap);
                }
                let log = &logs[&host.name];
                let conn = match open_host(
                    &sessions[&host.name],
                    host,
                    req,
                    who,
                    log,
                    reporter.as_ref(),
                    (with_the_lock.get(&host.name), moves),
                )
                .await
                {
                    Ok(c) => c,
                    Err(HostRefusal::Unreachable) => {
                        recap.unreachable = true;
                        return (host.name.clone(), recap);
                    }
                    Err(HostRefusal::Refused) => {
                        // Reported as a failed "lock host" step when the host was opened; a
                        // failure stops later stages, so it is counted once.
                        recap.failed += 1;
                        return (host.name.clone(), recap);
                    }
                };
                let mut delegates = BTreeMap::new();
                for name in wanted_delegates {
                    let Some(target) = req.inventory.host(&name) else {
                        continue;
                    };
                    // A delegate is worked on too: connected and locked like a play host.
                    let cell = &sessions[&name];
                    let delegate_log = &logs[&name];
                    let early = (with_the_lock.get(&name), moves);
                    if let Ok(c) = open_host(
                        cell,
                        target,
                        req,
                        who,
                        delegate_log,
                        reporter.as_ref(),
                        early,
                    )
                    .await
                    {
                        delegates.insert(name, c);
                    }
                }
                let ctx = play::PlayCtx {
                    registry,
                    delegates: &delegates,
                    inventory: &req.inventory,
                    host,
                    secrets: &req.secrets,
                    session: &conn.session,
                    log,
                    mode: req.mode,
                    reporter: reporter.as_ref(),
                    tags: &req.tags,
                    local_dir: state_dir.clone(),
                    cache_dir: state_dir.join("cache"),
                    state_dir: &conn.state_dir,
                    run_id: &who.run_id,
                    interrupt: &req.interrupt,
                    force_handlers: req.force_handlers,
                    pending_from_host: &conn.found.pending,
                    moves,
                    prefetched: None,
                };
                let known = prefetches[&host.name]
                    .get_or_init(|| async {
                        let known = conn.known.clone().unwrap_or_default();
                        prefetch::ask(&ctx, &all_plays, known).await
                    })
                    .await;
                let ctx = play::PlayCtx {
                    prefetched: Some(known),
                    ..ctx
                };
                for (playbook, renderer) in plays {
                    let r = play::run_play(&ctx, playbook, renderer).await;
                    recap.add(&r);
                    if r.failed > 0 {
                        break;
                    }
                }
                (host.name.clone(), recap)
            }
        });
        for (name, r) in join_all(host_tasks).await {
            recaps.get_mut(&name).expect("recap per host").add(&r);
        }
    }

    let unconfirmed = give_back_hosts(sessions, &logs, reporter.as_ref()).await;
    let mut summary = Summary::from_hosts(recaps, req.mode.check);
    summary.interrupted = req.interrupt.requested();
    summary.unconfirmed_stops = unconfirmed;
    summary.stages_not_run = stages_not_run;
    summary.duration_ms = started.elapsed().as_millis();
    reporter.event(&Event::Finished(summary.clone()));
    summary
}

/// The tail every run goes through, every host at once: what the run abandoned there (a step
/// stopped at the end of the signal grace, a deadline) is confirmed stopped on the host, then
/// its lock is given back and the connection closed. Returns `host: command (why)` for each
/// stop that could not be confirmed: the host is given back all the same (the connection may be
/// gone), and the summary and the exit code say so.
async fn give_back_hosts(
    sessions: BTreeMap<String, SessionCell>,
    logs: &BTreeMap<String, log::HostLog>,
    reporter: &dyn Reporter,
) -> Vec<String> {
    let unconfirmed = join_all(sessions.into_iter().map(|(name, cell)| async move {
        let Some(Ok(conn)) = cell.into_inner() else {
            return Vec::new();
        };
        let Ok(conn) = Arc::try_unwrap(conn) else {
            return Vec::new();
        };
        let unconfirmed = conn.session.settle_stops().await;
        for why in &unconfirmed {
            let message = format!(
                "a command this run stopped could not be confirmed gone: {why}; it may still be \
                 running on the host: look before rerunning"
            );
            logs[&name].write("stop not confirmed", &message);
            reporter.event(&Event::HostNote {
                host: name.clone(),
                message,
            });
        }
        if let Some(lock) = conn.lock.into_inner() {
            lock.unlock().await;
            logs[&name].write("unlock", "run lock given back");
        }
        conn.session.close().await;
        unconfirmed
            .into_iter()
            .map(|why| format!("{name}: {why}"))
            .collect::<Vec<_>>()
    }))
    .await;
    unconfirmed.into_iter().flatten().collect()
}

/// The head of a host's run, once per run on first use: connect, then take the host's lock
/// (check mode only looks) and say what an earlier run left behind.
async fn open_host(
    cell: &SessionCell,
    host: &Host,
    req: &RunRequest,
    who: &host::RunInfo,
    log: &log::HostLog,
    reporter: &dyn Reporter,
    (early, moves): (Option<&prefetch::WithTheLock>, &prefetch::Moves),
) -> Result<Arc<HostConn>, HostRefusal> {
    let remote_state = host::state_dir(&host.name);
    let remote_state = remote_state.as_str();
    cell.get_or_init(|| async {
        log.write(
            "connect",
            &format!("{}@{}:{}", host.ssh.user, host.ssh.address, host.ssh.port),
        );
        let session = match Session::connect(&host.ssh, &req.connect).await {
            Ok(session) => {
                reporter.event(&Event::HostConnected {
                    host: host.name.clone(),
                    new_host_key: session.new_host_key().map(str::to_string),
                });
                session
            }
            Err(e) => {
                let msg = e.to_string();
                log.write("unreachable", &msg);
                reporter.event(&Event::Unreachable {
                    host: host.name.clone(),
                    error: msg,
                });
                return Err(HostRefusal::Unreachable);
            }
        };
        let take = !req.mode.check;
        let refuse = |message: String| {
            log.write("failed", &message);
            reporter.event(&Event::StepFinished(StepResult {
                host: host.name.clone(),
                playbook: String::new(),
                step: "lock host".into(),
                handler: false,
                status: Status::Failed,
                changes: vec![],
                diffs: vec![],
                message: Some(message),
                duration: std::time::Duration::ZERO,
            }));
        };
        let asked_at = moves.now();
        let asked = host::Early {
            facts: early.map(|e| e.facts.script()),
            probes: early.and_then(|e| e.probes.as_ref()).map(|p| p.script()),
            deadline: req.connect.command_deadline,
        };
        if let Some(script) = &asked.facts {
            log.write("facts (with the lock)", script);
        }
        if let Some(probes) = early.and_then(|e| e.probes.as_ref()) {
            log.write(
                "probes with the lock",
                &format!("the probes that need no fact\n{}", probes.logged()),
            );
        }
        // The prefetch's channel is opened while the lock's command runs: a round trip saved.
        let locking = host::lock(&session, remote_state, who, take, &asked);
        let (locked, ()) = tokio::join!(locking, session.open_spare_channel());
        let (lock, found) = match locked {
            Ok(r) => r,
            Err(e) => {
                refuse(format!("{e:#}"));
                session.close().await;
                return Err(HostRefusal::Refused);
            }
        };
        let note = |message: String| {
            log.write("note", &message);
            reporter.event(&Event::HostNote {
                host: host.name.clone(),
                message,
            });
        };
        if let Some(holder) = &found.busy {
            let holder = if holder.is_empty() { "(its details are not written yet)" } else { holder };
            if take {
                refuse(format!(
                    "another bootstrap run is working on this host: {holder}; wait for it to end \
                     (a holder that is gone releases the lock by itself within seconds)"
                ));
                session.close().await;
                return Err(HostRefusal::Refused);
            }
            note(format!("another bootstrap run is working on this host ({holder}): what check mode reads may change under it"));
        }
        if let Some(stale) = &found.stale_lock {
            note(format!(
                "stale run lock found ({stale}): that run ended without giving it back; taken over"
            ));
        }
        if let Some(fired) = &found.fw_fired {
            note(format!(
                "a firewall rollback fired since the last run ({fired}): the firewall was put back \
                 to what it was before that run's change; this run plans from what is there now"
            ));
        }
        if let Some(armed) = &found.fw_pending {
            let armed = if armed.is_empty() {
                "armed by an unknown run"
            } else {
                armed
            };
            let message = format!(
                "a firewall rollback is still armed on this host ({armed}): the run that armed \
                 it never confirmed access, and it will restore that run's earlier firewall; wait \
                 until it has fired (about 90s after that change), or check access and stop it \
                 (systemctl stop {}), then rerun",
                host::FW_UNIT
            );
            if take {
                refuse(message);
                if let Some(lock) = lock {
                    lock.unlock().await;
                }
                session.close().await;
                return Err(HostRefusal::Refused);
            }
            note(message);
        }
        let known = match (early, &found.facts) {
            (Some(early), Some(text)) => {
                let all = early.facts.read_all(text);
                log.write("facts result", &format!("{all:?}"));
                let answers = match (&early.probes, &found.probes) {
                    (Some(batch), Some(out)) => batch.read(out, log, "probes with the lock"),
                    _ => Vec::new(),
                };
                Some(prefetch::Prefetched::with_facts(asked_at, all).with_answers(answers))
            }
            _ => None,
        };
        Ok(Arc::new(HostConn {
            session,
            state_dir: remote_state.to_string(),
            lock: Mutex::new(lock),
            found,
            known,
        }))
    })
    .await
    .clone()
}

/// The project's known-hosts file for an inventory, and the user's own.
pub fn default_connect_options(inventory: &Inventory, strict_host_keys: bool) -> ConnectOptions {
    let mut known = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        known.push(PathBuf::from(home).join(".ssh/known_hosts"));
    }
    let defaults = ConnectOptions::default();
    ConnectOptions {
        strict_host_keys,
        known_hosts_files: known,
        project_known_hosts: inventory.state_dir().join("known_hosts"),
        connect_timeout: inventory
            .connect
            .connect_timeout
            .unwrap_or(defaults.connect_timeout),
        wait_for_host: inventory
            .connect
            .wait_for_host
            .unwrap_or(defaults.wait_for_host),
        ..defaults
    }
}
