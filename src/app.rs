//! Turns parsed flags into work: load and validate everything first (exit 2 on bad input,
//! before any host is touched), then hand a `RunRequest` to the runner.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::{Cli, Command, GlobalArgs, SecretsCommand};
use crate::error::{exit, InputError};
use crate::inventory::{secrets, Inventory, Secrets};
use crate::manifests;
use crate::playbook::template::{RenderError, Renderer};
use crate::playbook::Playbook;
use crate::runner::{self, Mode, RunRequest, Stage, TagFilter};

/// The tag of the steps that apply the cluster manifests (playbooks/manifests.toml).
const MANIFESTS_TAG: &str = "manifests";

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
        Command::All => {
            let stages = site(g)?.stages_for(None)?;
            // The hand-off copy on this machine, beside what the master applies; not when the
            // tag filter leaves the manifests out.
            let skipped = g.skip_tags.iter().any(|t| t == MANIFESTS_TAG)
                || (!g.tags.is_empty() && !g.tags.iter().any(|t| t == MANIFESTS_TAG));
            let applies_manifests = stages
                .iter()
                .flat_map(|s| &s.playbooks)
                .flat_map(|p| &p.steps)
                .any(|s| s.tags.iter().any(|t| t == MANIFESTS_TAG));
            if applies_manifests && !skipped {
                render_manifests(g, None, true)?;
            }
            run_stages(g, stages)
        }
        Command::Master => run_stages(g, site(g)?.stages_for(Some("master"))?),
        Command::Worker => run_stages(g, site(g)?.stages_for(Some("worker"))?),
        Command::Elk => run_stages(g, site(g)?.stages_for(Some("elk"))?),
        Command::Manifests {
            render_only,
            out,
            offline,
        } => {
            render_manifests(g, out.as_deref(), !offline)?;
            if *render_only {
                return Ok(exit::OK);
            }
            run_stages(g, site(g)?.stages_for(Some("manifests"))?)
        }
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
    for playbook in playbooks {
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
            let vars = runner::context::host_context(inventory, host, secrets, &facts);
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

/// The `files/` directory the playbooks in use read their templates from.
fn files_dir(g: &GlobalArgs) -> Result<PathBuf, InputError> {
    let playbooks = playbooks_dir(g)?;
    Ok(playbooks
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("files"))
}

/// Renders the manifests into their hand-off directory (0700, files 0600) and downloads the
/// pinned upstream files into it. Connects to no host.
fn render_manifests(g: &GlobalArgs, out: Option<&std::path::Path>, download: bool) -> Result<()> {
    let inventory = Inventory::load(&g.inventory)?;
    let secrets = Secrets::resolve(&inventory.secret_names, &secrets_file(g), &g.inventory)?;
    let rendered = manifests::render_for_master(&inventory, &secrets, &files_dir(g)?)?;
    let dir = out
        .map(PathBuf::from)
        .unwrap_or_else(|| manifests::default_out_dir(&inventory));
    if g.check {
        println!(
            "manifests: {} files would be written to {} (--check: nothing written)",
            rendered.files.len(),
            dir.display()
        );
        return Ok(());
    }
    let changed = manifests::write_tree(&dir, &rendered.files)?;
    if download {
        manifests::vendor_upstream(
            &dir,
            &rendered.upstream,
            &inventory.state_dir().join("cache"),
        )?;
    }
    println!(
        "manifests: {} files in {} ({} changed); upstream files {}",
        rendered.files.len(),
        dir.display(),
        changed.len(),
        if download {
            format!("{} downloaded, sha256 checked", rendered.upstream.len())
        } else {
            "not downloaded (--offline)".to_string()
        }
    );
    for path in changed {
        println!("  wrote {}", path.display());
    }
    Ok(())
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
    let files = files_dir(g)?;
    let has_master = inventory.hosts_with_role("master").next().is_some();
    if has_master && files.join(manifests::TEMPLATE_DIR).is_dir() {
        let rendered = manifests::render_for_master(&inventory, &secrets, &files)?;
        println!(
            "manifests: {} files rendered, {} upstream pins (nothing written or downloaded)",
            rendered.files.len(),
            rendered.upstream.len()
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
    fn every_manifest_template_is_uploaded_by_the_manifests_playbook() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let playbook = Playbook::load(&root.join("playbooks/manifests.toml")).unwrap();
        let uploaded: Vec<(String, String)> = playbook
            .steps
            .iter()
            .filter(|s| s.module == "template")
            .map(|s| {
                let arg = |k: &str| s.args[k].as_str().unwrap().to_string();
                (arg("src"), arg("dest"))
            })
            .collect();
        let inventory = Inventory::load(&root.join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let rendered =
            manifests::render_for_master(&inventory, &secrets, &root.join("files")).unwrap();
        for f in &rendered.files {
            let src = format!("manifests/{}.j2", f.path.display());
            let dest = format!("{{{{ manifests_remote_dir }}}}/{}", f.path.display());
            assert!(
                uploaded.contains(&(src.clone(), dest)),
                "{src} has no template step in playbooks/manifests.toml"
            );
        }
        assert_eq!(uploaded.len(), rendered.files.len(), "{uploaded:?}");
        for u in &rendered.upstream {
            let dest = format!("{{{{ manifests_remote_dir }}}}/{}", u.path.display());
            assert!(
                playbook
                    .steps
                    .iter()
                    .any(|s| s.module == "download" && s.args["dest"].as_str() == Some(&dest)),
                "{} has no download step",
                u.path.display()
            );
        }
    }

    #[test]
    fn manifests_are_applied_namespaces_first_and_the_app_last_each_when_its_files_change() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let playbook = Playbook::load(&root.join("playbooks/manifests.toml")).unwrap();
        let handlers: Vec<&str> = playbook.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            handlers,
            [
                "apply namespaces",
                "apply ingress-nginx",
                "apply logging",
                "apply monitoring",
                "apply crypto-exchange"
            ]
        );
        for step in playbook.steps.iter().filter(|s| s.module == "template") {
            let src = step.args["src"].as_str().unwrap();
            let rel = src.strip_prefix("manifests/").unwrap();
            let want: Vec<String> = match rel.split_once('/') {
                Some((dir, _)) => vec![format!("apply {dir}")],
                None if rel == "namespaces.yaml.j2" => vec!["apply namespaces".into()],
                // The top-level kustomization is the app team's entry point, not applied here.
                None => vec![],
            };
            assert_eq!(step.notify, want, "{src}");
        }
        // Every handler but the namespaces' waits for what it applied.
        for h in &playbook.handlers[1..] {
            let cmd = h.args["cmd"].as_str().unwrap();
            assert!(cmd.contains("rollout status"), "{}: {cmd}", h.name);
            assert!(
                cmd.contains("--timeout={{ rollout_timeout }}"),
                "{}",
                h.name
            );
        }
    }

    #[test]
    fn shipped_playbooks_validate_against_the_shipped_inventory() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let inventory = Inventory::load(&root.join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        for name in ["worker.toml", "manifests.toml"] {
            let playbook = Playbook::load(&root.join("playbooks").join(name)).unwrap();
            let checked = validate(&inventory, &secrets, &[&playbook], None).unwrap();
            assert_eq!(
                checked,
                playbook.steps.len() + playbook.handlers.len(),
                "{name}"
            );
        }
    }
}
