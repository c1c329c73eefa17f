//! Turns parsed flags into work: load and validate everything first (exit 2 on bad input,
//! before any host is touched), then hand a `RunRequest` to the runner.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::{Cli, Command, GlobalArgs, SecretsCommand};
use crate::error::{exit, InputError};
use crate::inventory::{secrets, Inventory, Secrets};
use crate::playbook::template::{RenderError, Renderer};
use crate::playbook::Playbook;
use crate::runner::{self, Mode, RunRequest, Stage, TagFilter};

pub fn main(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match &cli.command {
        Command::Secrets {
            command: SecretsCommand::Init,
        } => secrets_init(g),
        Command::Check => check(g),
        Command::Ping => crate::ui::ping::ping(g),
        Command::Run { playbook } => {
            let pb = Playbook::load(playbook)?;
            let name = pb.name.clone();
            run_stages(
                g,
                vec![Stage {
                    name,
                    playbooks: vec![pb],
                }],
            )
        }
        Command::All => run_stages(g, site(g)?.stages_for(None)?),
        Command::Master => run_stages(g, site(g)?.stages_for(Some("master"))?),
        Command::Worker => run_stages(g, site(g)?.stages_for(Some("worker"))?),
        Command::Elk => run_stages(g, site(g)?.stages_for(Some("elk"))?),
        Command::Manifests => run_stages(g, site(g)?.stages_for(Some("manifests"))?),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn secrets_file(g: &GlobalArgs) -> PathBuf {
    g.secrets
        .clone()
        .unwrap_or_else(|| secrets::default_file(&g.inventory))
}

fn secrets_init(g: &GlobalArgs) -> Result<i32> {
    let inv = Inventory::load(&g.inventory)?;
    let file = secrets_file(g);
    let report = secrets::init(&inv.secret_names, &file)?;
    for name in &report.generated {
        println!("generated {name}");
    }
    for name in &report.kept {
        println!("kept      {name} (already set)");
    }
    if report.generated.is_empty() {
        println!("nothing to do: every declared secret has a value");
    } else {
        println!("wrote {} (mode 0600); values are not shown", file.display());
    }
    Ok(exit::OK)
}

/// `playbooks/site.toml`: the stages of `bootstrap all` and which playbooks make each part.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    stages: Vec<SiteStage>,
    #[serde(default)]
    parts: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteStage {
    name: String,
    playbooks: Vec<String>,
}

struct Site {
    path: PathBuf,
    dir: PathBuf,
    file: SiteFile,
}

/// `--playbooks`, else ./playbooks, else the built-in copy (written beside the inventory).
fn playbooks_dir(g: &GlobalArgs) -> Result<PathBuf, InputError> {
    if let Some(dir) = &g.playbooks {
        return Ok(dir.clone());
    }
    let local = PathBuf::from("playbooks");
    if local.join("site.toml").exists() {
        return Ok(local);
    }
    let state = Inventory::state_dir_for(&g.inventory);
    crate::builtin::playbooks_dir(&state).map_err(|e| {
        InputError::new(
            &state,
            None,
            format!("cannot write the built-in playbooks: {e}"),
        )
        .hint("pass --playbooks DIR")
    })
}

fn site(g: &GlobalArgs) -> Result<Site, InputError> {
    let dir = playbooks_dir(g)?;
    let path = dir.join("site.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        InputError::new(&path, None, format!("cannot read: {e}"))
            .hint("run from the repository root, or pass --playbooks DIR")
    })?;
    let file: SiteFile =
        toml::from_str(&text).map_err(|e| crate::inventory::toml_error(&path, &text, &e))?;
    Ok(Site { path, dir, file })
}

impl Site {
    /// The stages for `all` (None) or for one part, keeping the order of `all`.
    fn stages_for(&self, part: Option<&str>) -> Result<Vec<Stage>, InputError> {
        let wanted: Option<&Vec<String>> = match part {
            None => None,
            Some(p) => Some(self.file.parts.get(p).filter(|l| !l.is_empty()).ok_or_else(|| {
                InputError::new(
                    &self.path,
                    None,
                    format!("`{p}` has no playbooks yet: this part of the platform has not landed"),
                )
                .hint(format!(
                    "parts available: {}",
                    self.file.parts.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
                ))
            })?),
        };
        let mut stages = Vec::new();
        for stage in &self.file.stages {
            let mut playbooks = Vec::new();
            for file in &stage.playbooks {
                if wanted.is_some_and(|w| !w.contains(file)) {
                    continue;
                }
                playbooks.push(Playbook::load(&self.dir.join(file))?);
            }
            if !playbooks.is_empty() {
                stages.push(Stage {
                    name: stage.name.clone(),
                    playbooks,
                });
            }
        }
        if let Some(w) = wanted {
            for file in w {
                if !self.file.stages.iter().any(|s| s.playbooks.contains(file)) {
                    return Err(InputError::new(
                        &self.path,
                        None,
                        format!("part lists {file}, which no stage runs"),
                    ));
                }
            }
        }
        Ok(stages)
    }

    fn all_playbooks(&self) -> Result<Vec<Playbook>, InputError> {
        Ok(self
            .stages_for(None)?
            .into_iter()
            .flat_map(|s| s.playbooks)
            .collect())
    }
}

/// Renders every step and handler of every playbook for every host it targets, and builds its
/// module, with placeholder facts: catches bad arguments, undefined variables and template
/// errors before anything connects.
pub fn validate(
    inventory: &Inventory,
    secrets: &Secrets,
    playbooks: &[&Playbook],
    limit: Option<&[String]>,
) -> Result<usize, InputError> {
    let mut checked = 0;
    // Values `register` steps keep exist only during a run: check with stand-ins for them, for
    // every host (a delegated step registers under its play's host).
    let names: BTreeSet<&str> = playbooks
        .iter()
        .flat_map(|p| p.steps.iter().chain(&p.handlers))
        .filter_map(|s| s.register.as_deref())
        .collect();
    let registered: runner::context::RegisteredValues = inventory
        .hosts
        .iter()
        .map(|h| {
            let values = names
                .iter()
                .map(|n| (n.to_string(), format!("<registered {n}>")))
                .collect();
            (h.name.clone(), values)
        })
        .collect();
    for playbook in playbooks {
        for step in playbook.steps.iter().chain(&playbook.handlers) {
            if let Some(target) = &step.delegate_to {
                runner::context::resolve_delegate(inventory, target).map_err(|e| {
                    InputError::new(
                        &playbook.path,
                        Some(step.line),
                        format!("step `{}`: {e}", step.name),
                    )
                    .hint("name a host of the inventory, or a role that has exactly one host")
                })?;
            }
        }
        let renderer = Renderer::new(&playbook.files_dir());
        let mut facts: BTreeMap<String, String> = runner::play::OS_FACT_NAMES
            .iter()
            .map(|f| (f.to_string(), format!("<fact {f}>")))
            .collect();
        for (name, _) in &playbook.facts {
            facts.insert(name.clone(), format!("<fact {name}>"));
        }
        let local_dir = inventory.state_dir();
        let hosts = inventory
            .hosts_with_role(&playbook.hosts)
            .filter(|h| limit.is_none_or(|l| l.contains(&h.name)));
        for host in hosts {
            let vars =
                runner::context::host_context_with(inventory, host, secrets, &facts, &registered);
            for step in playbook.steps.iter().chain(&playbook.handlers) {
                match runner::play::build_step(playbook, &renderer, step, &vars, &facts, &local_dir)
                {
                    Ok(Some(_)) => checked += 1,
                    Ok(None) | Err(RenderError::FactNotKnownYet(_)) => {}
                    Err(RenderError::Input(e)) => return Err(e),
                }
            }
        }
    }
    Ok(checked)
}

fn check(g: &GlobalArgs) -> Result<i32> {
    let inventory = Inventory::load(&g.inventory)?;
    println!(
        "inventory {}: {} hosts",
        g.inventory.display(),
        inventory.hosts.len()
    );
    let secrets = match Secrets::resolve(&inventory.secret_names, &secrets_file(g), &g.inventory) {
        Ok(s) => s,
        Err(e) => {
            // Templates are still checked, with stand-in values; a real run would stop here.
            println!("warning: {e}");
            Secrets::placeholders(inventory.secret_names.keys())
        }
    };
    let site = site(g)?;
    let mut playbooks = site.all_playbooks()?;
    // Also playbooks not in any stage yet, so a typo anywhere in playbooks/ is caught.
    for entry in
        std::fs::read_dir(&site.dir).with_context(|| format!("reading {}", site.dir.display()))?
    {
        let path = entry?.path();
        let is_playbook =
            path.extension().is_some_and(|e| e == "toml") && !path.ends_with("site.toml");
        if is_playbook && !playbooks.iter().any(|p| p.path == path) {
            playbooks.push(Playbook::load(&path)?);
        }
    }
    let refs: Vec<&Playbook> = playbooks.iter().collect();
    let checked = validate(&inventory, &secrets, &refs, g.limit.as_deref())?;
    for p in &playbooks {
        println!(
            "playbook {}: {} steps, {} handlers (hosts: {})",
            p.path.display(),
            p.steps.len(),
            p.handlers.len(),
            p.hosts
        );
    }
    println!("ok: {checked} step renderings checked; nothing was contacted");
    Ok(exit::OK)
}

fn run_stages(g: &GlobalArgs, stages: Vec<Stage>) -> Result<i32> {
    let inventory = Inventory::load(&g.inventory)?;
    let secrets = Secrets::resolve(&inventory.secret_names, &secrets_file(g), &g.inventory)?;
    if let Some(limit) = &g.limit {
        for name in limit {
            if inventory.host(name).is_none() {
                return Err(InputError::new(
                    &g.inventory,
                    None,
                    format!("--limit names `{name}`, which is not in the inventory"),
                )
                .into());
            }
        }
    }
    let playbooks: Vec<&Playbook> = stages.iter().flat_map(|s| &s.playbooks).collect();
    validate(&inventory, &secrets, &playbooks, g.limit.as_deref())?;
    let targeted: Vec<_> = inventory
        .hosts
        .iter()
        .filter(|h| g.limit.as_ref().is_none_or(|l| l.contains(&h.name)))
        .filter(|h| playbooks.iter().any(|p| h.has_role(&p.hosts)))
        .collect();
    inventory.check_key_files(targeted.iter().copied())?;

    let mode = Mode {
        check: g.check,
        diff: g.diff,
    };
    let reporter = crate::ui::reporter(g.json, g.verbose, mode);
    let req = RunRequest {
        connect: runner::default_connect_options(&inventory, g.strict_host_keys),
        inventory,
        secrets,
        stages,
        limit: g.limit.clone(),
        mode,
        forks: g.forks.map(|f| f as usize),
        tags: TagFilter {
            only: g.tags.clone(),
            skip: g.skip_tags.clone(),
        },
    };
    let summary = runtime()?.block_on(runner::run(req, reporter));
    Ok(if summary.success() {
        exit::OK
    } else {
        exit::FAILED
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's rendered PostgreSQL files for the shipped inventory, as the host gets them.
    fn render_for_shipped_worker(src: &str) -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let inventory = Inventory::load(&root.join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let worker = inventory.host("worker").unwrap();
        let facts = BTreeMap::from([("postgres_version".to_string(), "15".to_string())]);
        let vars = runner::context::host_context(&inventory, worker, &secrets, &facts);
        Renderer::new(&root.join("files"))
            .render_file(src, &vars)
            .unwrap()
    }

    #[test]
    fn worker_pg_hba_admits_exactly_the_inventory_sources() {
        insta::assert_snapshot!(render_for_shipped_worker("postgres/pg_hba.conf.j2"));
    }

    #[test]
    fn worker_postgres_listens_on_its_address_and_localhost() {
        insta::assert_snapshot!(render_for_shipped_worker("postgres/bootstrap.conf.j2"));
    }

    #[test]
    fn shipped_playbooks_validate_against_the_shipped_inventory() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let inventory = Inventory::load(&root.join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let worker = Playbook::load(&root.join("playbooks/worker.toml")).unwrap();
        let checked = validate(&inventory, &secrets, &[&worker], None).unwrap();
        assert_eq!(checked, worker.steps.len() + worker.handlers.len());
    }
}
