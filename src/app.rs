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
            // A playbook outside a checkout still gets the site's version checks when there is one.
            let supported = site(g).map(|s| s.file.supported_vars).unwrap_or_default();
            let stage = Stage {
                name,
                playbooks: vec![pb],
            };
            run_stages(g, vec![stage], &supported, None)
        }
        Command::All => {
            let site = site(g)?;
            run_stages(g, site.stages_for(None)?, &site.file.supported_vars, None)
        }
        Command::Master => run_part(g, "master"),
        Command::Worker => run_part(g, "worker"),
        Command::Elk => run_part(g, "elk"),
        Command::Manifests => run_part(g, "manifests"),
        Command::Reset { yes } => reset(g, *yes),
    }
}

/// One part of `all`; a part named after a role runs on that role's hosts only.
fn run_part(g: &GlobalArgs, part: &str) -> Result<i32> {
    let site = site(g)?;
    let stages = site.stages_for(Some(part))?;
    let role = crate::inventory::ROLES.contains(&part).then_some(part);
    run_stages(g, stages, &site.file.supported_vars, role)
}

/// `bootstrap reset --limit HOST`: the Kubernetes part of the named hosts, undone.
fn reset(g: &GlobalArgs, yes: bool) -> Result<i32> {
    use std::io::{BufRead, IsTerminal, Write};
    let Some(limit) = g.limit.as_ref().filter(|l| !l.is_empty()) else {
        return Err(
            InputError::new(&g.inventory, None, "reset needs --limit HOST")
                .hint("name the node(s) to reset, e.g. bootstrap reset --limit worker")
                .into(),
        );
    };
    let site = site(g)?;
    let playbook = Playbook::load(&site.dir.join("reset.toml"))?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(InputError::new(
                &g.inventory,
                None,
                "reset asks for confirmation and stdin is not a terminal",
            )
            .hint("pass --yes to reset without asking")
            .into());
        }
        eprint!(
            "Reset the Kubernetes part of {} (kubeadm reset, CNI state, its iptables rules, the node in the API)? PostgreSQL is not touched. [y/N] ",
            limit.join(", ")
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing done");
            return Ok(exit::FAILED);
        }
    }
    let stage = Stage {
        name: "reset".into(),
        playbooks: vec![playbook],
    };
    run_stages(g, vec![stage], &site.file.supported_vars, None)
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
    /// Inventory variable -> the values the playbooks support (`*` globs).
    #[serde(default)]
    supported_vars: BTreeMap<String, Vec<String>>,
}

/// Refuses inventory values the playbooks are not written for (a Kubernetes minor they do not
/// support), naming the inventory line.
pub fn check_supported_vars(
    inventory: &Inventory,
    supported: &BTreeMap<String, Vec<String>>,
) -> Result<(), InputError> {
    let text = std::fs::read_to_string(&inventory.path).unwrap_or_default();
    let tables = std::iter::once(&inventory.vars).chain(inventory.hosts.iter().map(|h| &h.vars));
    for vars in tables {
        for (name, patterns) in supported {
            let Some(value) = vars.get(name) else {
                continue;
            };
            let shown = value
                .as_str()
                .map(str::to_string)
                .unwrap_or(value.to_string());
            if patterns.iter().any(|p| glob_matches(p, &shown)) {
                continue;
            }
            let line = text
                .lines()
                .position(|l| {
                    l.trim_start().starts_with(name.as_str())
                        && l.contains('=')
                        && l.trim_start()[name.len()..].trim_start().starts_with('=')
                })
                .map(|i| i + 1);
            return Err(InputError::new(
                &inventory.path,
                line,
                format!("{name} = {value} is not supported by these playbooks"),
            )
            .hint(format!("supported: {}", patterns.join(", "))));
        }
    }
    Ok(())
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() || !value.ends_with(last)
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
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
    check_supported_vars(&inventory, &site.file.supported_vars)?;
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

fn run_stages(
    g: &GlobalArgs,
    stages: Vec<Stage>,
    supported: &BTreeMap<String, Vec<String>>,
    only_role: Option<&str>,
) -> Result<i32> {
    let inventory = Inventory::load(&g.inventory)?;
    check_supported_vars(&inventory, supported)?;
    let secrets = Secrets::resolve(&inventory.secret_names, &secrets_file(g), &g.inventory)?;
    let limit: Option<Vec<String>> = match only_role {
        None => g.limit.clone(),
        Some(role) => Some(
            inventory
                .hosts_with_role(role)
                .map(|h| h.name.clone())
                .filter(|n| g.limit.as_ref().is_none_or(|l| l.contains(n)))
                .collect(),
        ),
    };
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
    validate(&inventory, &secrets, &playbooks, limit.as_deref())?;
    let targeted: Vec<_> = inventory
        .hosts
        .iter()
        .filter(|h| limit.as_ref().is_none_or(|l| l.contains(&h.name)))
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
        limit,
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

    /// The shipped inventory with a stand-in key pin: the real one is not known here (see
    /// inventory.toml), everything else is as shipped.
    fn shipped_inventory_with_a_key_pin() -> (Inventory, tempfile::TempDir) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("inventory.toml")).unwrap();
        let pinned: String = text
            .lines()
            .map(|l| {
                if l.starts_with("k8s_repo_key_sha256") {
                    format!("k8s_repo_key_sha256 = \"{}\"", "ab".repeat(32))
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inventory.toml"), pinned).unwrap();
        (
            Inventory::load(&dir.path().join("inventory.toml")).unwrap(),
            dir,
        )
    }

    fn shipped_playbook(name: &str) -> Playbook {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        Playbook::load(&root.join("playbooks").join(name)).unwrap()
    }

    #[test]
    fn every_shipped_playbook_validates_against_the_shipped_inventory_once_the_key_is_pinned() {
        let (inventory, _dir) = shipped_inventory_with_a_key_pin();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        for name in [
            "node.toml",
            "master.toml",
            "join.toml",
            "reset.toml",
            "worker.toml",
        ] {
            let pb = shipped_playbook(name);
            validate(&inventory, &secrets, &[&pb], None).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn the_unpinned_repository_key_of_the_shipped_inventory_is_refused() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let inventory = Inventory::load(&root.join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let node = shipped_playbook("node.toml");
        let err = validate(&inventory, &secrets, &[&node], None).unwrap_err();
        assert!(err.message.contains("key_sha256"), "{err}");
    }

    #[test]
    fn kubeadm_config_carries_the_inventory_addresses_cidrs_and_version() {
        let (inventory, _dir) = shipped_inventory_with_a_key_pin();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let master = inventory.host("master").unwrap();
        let vars = runner::context::host_context(&inventory, master, &secrets, &BTreeMap::new());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = Renderer::new(&root.join("files"))
            .render_file("kubernetes/kubeadm-config.yaml.j2", &vars)
            .unwrap();
        for want in [
            "advertiseAddress: \"91.107.191.148\"",
            "controlPlaneEndpoint: \"91.107.191.148:6443\"",
            "podSubnet: \"10.244.0.0/16\"",
            "serviceSubnet: \"10.96.0.0/12\"",
            "kubernetesVersion: \"v1.35.6\"",
            "value: \"91.107.191.148\"",
            "cgroupDriver: systemd",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    #[test]
    fn the_join_configuration_gets_the_token_and_hash_registered_on_the_master() {
        let (inventory, _dir) = shipped_inventory_with_a_key_pin();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let worker = inventory.host("worker").unwrap();
        let join = shipped_playbook("join.toml");
        let step = join
            .steps
            .iter()
            .find(|s| s.name.starts_with("kubeadm join"))
            .unwrap();
        let registered = BTreeMap::from([(
            "worker".to_string(),
            BTreeMap::from([
                (
                    "join".to_string(),
                    "abcdef.0123456789abcdef sha256:feed".to_string(),
                ),
                ("node_state".to_string(), "unknown".to_string()),
            ]),
        )]);
        let facts = BTreeMap::from([
            ("kubelet_conf".to_string(), "absent".to_string()),
            ("join_leftovers".to_string(), "absent".to_string()),
        ]);
        let vars =
            runner::context::host_context_with(&inventory, worker, &secrets, &facts, &registered);
        let renderer = Renderer::new(&join.files_dir());
        let args = renderer
            .render_step(&join, step, &vars, &facts)
            .ok()
            .flatten()
            .unwrap();
        let stdin = args["stdin"].as_str().unwrap();
        assert!(
            stdin.contains("token: \"abcdef.0123456789abcdef\""),
            "{stdin}"
        );
        assert!(stdin.contains("- \"sha256:feed\""), "{stdin}");
        assert!(
            stdin.contains("apiServerEndpoint: \"91.107.191.148:6443\""),
            "{stdin}"
        );
        // The token travels on stdin, never in the command.
        assert!(!args["cmd"].as_str().unwrap().contains("abcdef"));
        // A joined node (kubelet.conf and known to the API) skips the join.
        let joined_facts = BTreeMap::from([
            ("kubelet_conf".to_string(), "present".to_string()),
            ("join_leftovers".to_string(), "present".to_string()),
        ]);
        let mut known = registered.clone();
        known
            .get_mut("worker")
            .unwrap()
            .insert("node_state".into(), "known".into());
        let vars =
            runner::context::host_context_with(&inventory, worker, &secrets, &joined_facts, &known);
        for s in join.steps.iter().filter(|s| s.when.is_some()) {
            assert!(
                renderer
                    .render_step(&join, s, &vars, &joined_facts)
                    .ok()
                    .unwrap()
                    .is_none(),
                "{} runs on a joined node",
                s.name
            );
        }
    }

    #[test]
    fn an_unsupported_kubernetes_version_is_refused_with_the_inventory_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.toml");
        std::fs::write(
            &path,
            "[vars]\nkubernetes_minor = \"1.31\"\n\n[hosts.m]\naddress = \"10.0.0.1\"\nroles = [\"master\"]\n",
        )
        .unwrap();
        let inventory = Inventory::load(&path).unwrap();
        let supported =
            BTreeMap::from([("kubernetes_minor".to_string(), vec!["1.35".to_string()])]);
        let err = check_supported_vars(&inventory, &supported).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("1.31"), "{err}");
        let fine = BTreeMap::from([("kubernetes_minor".to_string(), vec!["1.3*".to_string()])]);
        check_supported_vars(&inventory, &fine).unwrap();
    }

    #[test]
    fn globs_match_whole_values() {
        assert!(glob_matches("1.35.*", "1.35.6"));
        assert!(!glob_matches("1.35.*", "1.36.0"));
        assert!(!glob_matches("1.35", "1.35.1"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXbYc"));
        assert!(!glob_matches("a*b*c", "aXcYb"));
    }
}
