//! Turns parsed flags into work: load and validate everything first (exit 2 on bad input,
//! before any host is touched), then hand a `RunRequest` to the runner.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::{Cli, Command, GlobalArgs, SecretsCommand};
use crate::error::{exit, InputError};
use crate::inventory::{secrets, Host, Inventory, Secrets};
use crate::manifests;
use crate::playbook::template::{RenderError, Renderer};
use crate::playbook::Playbook;
use crate::runner::{self, Interrupt, Mode, RunRequest, Stage, TagFilter};

/// The tag of the steps that apply the cluster manifests (playbooks/manifests.toml).
const MANIFESTS_TAG: &str = "manifests";

pub fn main(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match &cli.command {
        Command::Secrets {
            command: SecretsCommand::Init,
        } => secrets_init(g),
        Command::Check => check(g),
        Command::Diagram {
            layer,
            format,
            output,
        } => diagram(g, *layer, *format, output.as_deref()),
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
            run_part(g, None)
        }
        Command::Master => run_part(g, Some("master")),
        Command::Worker => run_part(g, Some("worker")),
        Command::Elk => run_part(g, Some("elk")),
        Command::Manifests {
            render_only,
            out,
            offline,
        } => {
            render_manifests(g, out.as_deref(), !offline)?;
            if *render_only {
                return Ok(exit::OK);
            }
            run_part(g, Some("manifests"))
        }
        Command::Reset { yes } => reset(g, *yes),
    }
}

/// `bootstrap diagram`: the playbooks of `all` and the manifests rendered in memory with
/// placeholder secrets; nothing is written but the pages, nothing connects.
fn diagram(
    g: &GlobalArgs,
    layer: Option<u8>,
    format: crate::diagram::Format,
    output: Option<&std::path::Path>,
) -> Result<i32> {
    let inventory = Inventory::load(&g.inventory)?;
    let pages = crate::diagram::destinations(layer, format, output)?;
    let site = site(g)?;
    let playbooks = site.all_playbooks()?;
    let secrets = Secrets::placeholders(inventory.secret_names.keys());
    let rendered = manifests::render_for_master(&inventory, &secrets, &files_dir(g)?)?;
    let platform = crate::diagram::model::extract(&inventory, &playbooks, &rendered.files)?;
    for (n, dest) in pages {
        let text = crate::diagram::render(&crate::diagram::build(&platform, n), format);
        match dest {
            Some(path) => {
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("layer {n}: {}", path.display());
            }
            None => print!("{text}"),
        }
    }
    Ok(exit::OK)
}

/// `all` or one part of the platform, from the playbook set the run says it uses.
fn run_part(g: &GlobalArgs, part: Option<&str>) -> Result<i32> {
    Inventory::load(&g.inventory)?.check_platform_roles()?;
    let site = site(g)?;
    let stages = site.stages_for(part)?;
    announce_playbooks(g, &site);
    // A part named after a role runs on that role's hosts only (plus its steps' delegates).
    let role = part.filter(|p| crate::inventory::ROLES.contains(p));
    run_stages(g, stages, &site.file.supported_vars, role)
}

/// One line (one JSON object with --json) saying which playbook set this run uses.
fn announce_playbooks(g: &GlobalArgs, site: &Site) {
    if g.json {
        println!(
            "{}",
            serde_json::json!({
                "type": "playbooks",
                "dir": site.dir.display().to_string(),
                "source": site.source.as_str(),
            })
        );
    } else {
        println!(
            "playbooks: {} ({})",
            site.dir.display(),
            site.source.as_str()
        );
    }
}

/// `--limit` names inventory hosts only: a typo must not make a run (or a check) of nothing.
fn check_limit(g: &GlobalArgs, inventory: &Inventory) -> Result<(), InputError> {
    for name in g.limit.iter().flatten() {
        if inventory.host(name).is_none() {
            return Err(InputError::new(
                &g.inventory,
                None,
                format!("--limit names `{name}`, which is not in the inventory"),
            )
            .hint(format!(
                "hosts: {}",
                inventory
                    .hosts
                    .iter()
                    .take(20)
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

/// `--tags`/`--skip-tags` must each name a tag some step or handler of the run has: a typo
/// would otherwise run everything (or nothing) without a word.
fn check_tags(g: &GlobalArgs, playbooks: &[&Playbook]) -> Result<(), InputError> {
    let known: std::collections::BTreeSet<&str> = playbooks
        .iter()
        .flat_map(|p| p.steps.iter().chain(&p.handlers))
        .flat_map(|s| s.tags.iter().map(String::as_str))
        .collect();
    for (flag, tags) in [("--tags", &g.tags), ("--skip-tags", &g.skip_tags)] {
        if let Some(unknown) = tags.iter().find(|t| !known.contains(t.as_str())) {
            let files: Vec<String> = playbooks
                .iter()
                .map(|p| p.path.display().to_string())
                .collect();
            return Err(InputError::new(
                playbooks
                    .first()
                    .map_or(PathBuf::from(flag), |p| p.path.clone()),
                None,
                format!(
                    "{flag} names `{unknown}`, which no step of this run has ({})",
                    files.join(", ")
                ),
            )
            .hint(if known.is_empty() {
                "these playbooks have no tags".to_string()
            } else {
                format!(
                    "tags: {}",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                )
            }));
        }
    }
    Ok(())
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
    /// Where the set comes from, as told to the user.
    source: PlaybookSource,
    file: SiteFile,
}

/// Which playbook set a run uses: said on every run, so `-i /elsewhere/inventory.toml` never
/// switches sets silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybookSource {
    /// `--playbooks DIR` (or BOOTSTRAP_PLAYBOOKS).
    Flag,
    /// `playbooks/` in the inventory's directory.
    BesideInventory,
    /// The copy built into the binary.
    BuiltIn,
}

impl PlaybookSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PlaybookSource::Flag => "--playbooks",
            PlaybookSource::BesideInventory => "beside the inventory",
            PlaybookSource::BuiltIn => "built into the binary",
        }
    }
}

/// `--playbooks`, else `playbooks/` beside the inventory, else the built-in copy (written under
/// the inventory's state directory). The current directory plays no part.
fn playbooks_dir(g: &GlobalArgs) -> Result<(PathBuf, PlaybookSource), InputError> {
    if let Some(dir) = &g.playbooks {
        return Ok((dir.clone(), PlaybookSource::Flag));
    }
    let beside = match g.inventory.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("playbooks"),
        _ => PathBuf::from("playbooks"),
    };
    if beside.join("site.toml").exists() {
        return Ok((beside, PlaybookSource::BesideInventory));
    }
    let state = Inventory::state_dir_for(&g.inventory);
    crate::builtin::playbooks_dir(&state)
        .map(|dir| (dir, PlaybookSource::BuiltIn))
        .map_err(|e| {
            InputError::new(
                &state,
                None,
                format!("cannot write the built-in playbooks: {e}"),
            )
            .hint("pass --playbooks DIR")
        })
}

fn site(g: &GlobalArgs) -> Result<Site, InputError> {
    let (dir, source) = playbooks_dir(g)?;
    let path = dir.join("site.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        InputError::new(&path, None, format!("cannot read: {e}"))
            .hint("run from the repository root, or pass --playbooks DIR")
    })?;
    let file: SiteFile =
        toml::from_str(&text).map_err(|e| crate::inventory::toml_error(&path, &text, &e))?;
    Ok(Site {
        path,
        dir,
        source,
        file,
    })
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
        let mut facts: BTreeMap<String, String> = runner::facts::OS_FACT_NAMES
            .iter()
            .map(|f| (f.to_string(), fact_placeholder(f)))
            .collect();
        for (name, _) in &playbook.facts {
            facts.insert(name.clone(), fact_placeholder(name));
        }
        check_fetch_dests_per_host(inventory, playbook)?;
        let local_dir = inventory.state_dir();
        let hosts = inventory
            .hosts_with_role(&playbook.hosts)
            .filter(|h| limit.is_none_or(|l| l.contains(&h.name)));
        for host in representatives(hosts) {
            let vars =
                runner::context::host_context_with(inventory, host, secrets, &facts, &registered);
            for step in playbook.steps.iter().chain(&playbook.handlers) {
                match runner::play::build_step(playbook, &renderer, step, &vars, &facts, &local_dir)
                {
                    Ok(Some(_)) => checked += 1,
                    // `when` is false with placeholder facts, but may be true on a host: its
                    // arguments are checked all the same, or a relative dest fails mid-run.
                    Ok(None) => {
                        runner::play::build_step_ignoring_when(
                            playbook, &renderer, step, &vars, &facts, &local_dir,
                        )?;
                        checked += 1;
                    }
                    Err(RenderError::FactNotKnownYet(_)) => {}
                    Err(RenderError::Input(e)) => return Err(e),
                }
            }
        }
    }
    Ok(checked)
}

/// What a fact reads as during validation: a word that is valid wherever a fact is typically
/// spliced in (a path part, a unit or package name), so `postgresql@{{ facts.v }}-main` checks.
fn fact_placeholder(name: &str) -> String {
    format!("fact-{}", name.replace('_', "-").to_ascii_lowercase())
}

/// A `fetch` on a play of several hosts must write each host's file to its own place: a `dest`
/// that names no host value makes the hosts overwrite each other, and every rerun "changes".
fn check_fetch_dests_per_host(
    inventory: &Inventory,
    playbook: &Playbook,
) -> Result<(), InputError> {
    let targeted = inventory.hosts_with_role(&playbook.hosts).take(2).count();
    if targeted < 2 {
        return Ok(());
    }
    for step in playbook.steps.iter().chain(&playbook.handlers) {
        let dest = step.args.get("dest").and_then(|d| d.as_str()).unwrap_or("");
        if step.module == "fetch" && !dest.contains("host") {
            return Err(InputError::new(
                &playbook.path,
                Some(step.line),
                format!(
                    "step `{}`: `fetch` dest {dest:?} is the same for every host of `{}`: the \
                     hosts would overwrite each other's file",
                    step.name, playbook.hosts
                ),
            )
            .hint("put the host in it, e.g. dest = \"{{ host.name }}/kubeconfig\""));
        }
    }
    Ok(())
}

/// The `files/` directory the playbooks in use read their templates from.
fn files_dir(g: &GlobalArgs) -> Result<PathBuf, InputError> {
    let (playbooks, _) = playbooks_dir(g)?;
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
    // With --json, stdout carries only the run's JSON events: this report goes to stderr.
    let say = |line: String| {
        if g.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let dir = out
        .map(PathBuf::from)
        .unwrap_or_else(|| manifests::default_out_dir(&inventory));
    if g.check {
        say(format!(
            "manifests: {} files would be written to {} (--check: nothing written)",
            rendered.files.len(),
            dir.display()
        ));
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
    say(format!(
        "manifests: {} files in {} ({} changed); upstream files {}",
        rendered.files.len(),
        dir.display(),
        changed.len(),
        if download {
            format!("{} downloaded, sha256 checked", rendered.upstream.len())
        } else {
            "not downloaded (--offline)".to_string()
        }
    ));
    for path in changed {
        say(format!("  wrote {}", path.display()));
    }
    Ok(())
}

/// One host per class of hosts whose templates see the same thing but for their identity.
///
/// Hosts with the same roles, variables, login user, `become` and kind of address (IPv4, IPv6
/// or name) render every step alike but for `host.name`, `host.address` and `host.port`, which
/// the inventory has already validated one by one; rendering each of them again made `check`
/// on thousands of workers quadratic (every worker's firewall lists every node). A template
/// that branches on one host's name or address value is checked for the class's first host.
fn representatives<'a>(hosts: impl Iterator<Item = &'a Host>) -> Vec<&'a Host> {
    let mut seen = std::collections::HashSet::new();
    hosts
        .filter(|h| {
            let address_kind = match h.ssh.address.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => 4,
                Ok(std::net::IpAddr::V6(_)) => 6,
                Err(_) => 0,
            };
            seen.insert((
                h.roles.clone(),
                h.vars.to_string(),
                h.ssh.user.clone(),
                h.ssh.become_root,
                address_kind,
            ))
        })
        .collect()
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
    inventory.check_platform_roles()?;
    for w in crate::inventory::firewall::warnings(&inventory.hosts) {
        println!("warning: {w}");
    }
    check_limit(g, &inventory)?;
    secrets::check_file_names(&inventory.secret_names, &secrets_file(g))?;
    let site = site(g)?;
    announce_playbooks(g, &site);
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
    check_tags(g, &refs)?;
    let checked = validate(&inventory, &secrets, &refs, g.limit.as_deref())?;
    let in_limit =
        |h: &&crate::inventory::Host| g.limit.as_ref().is_none_or(|l| l.contains(&h.name));
    for key in inventory.check_key_files(inventory.hosts.iter().filter(in_limit), true)? {
        println!(
            "warning: key file {} does not exist here (a run needs it)",
            key.display()
        );
    }
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

fn run_stages(
    g: &GlobalArgs,
    stages: Vec<Stage>,
    supported: &BTreeMap<String, Vec<String>>,
    only_role: Option<&str>,
) -> Result<i32> {
    let inventory = Inventory::load(&g.inventory)?;
    check_supported_vars(&inventory, supported)?;
    let secrets = Secrets::resolve(&inventory.secret_names, &secrets_file(g), &g.inventory)?;
    check_limit(g, &inventory)?;
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
    let playbooks: Vec<&Playbook> = stages.iter().flat_map(|s| &s.playbooks).collect();
    check_tags(g, &playbooks)?;
    validate(&inventory, &secrets, &playbooks, limit.as_deref())?;
    let targeted: Vec<_> = inventory
        .hosts
        .iter()
        .filter(|h| limit.as_ref().is_none_or(|l| l.contains(&h.name)))
        .filter(|h| playbooks.iter().any(|p| h.has_role(&p.hosts)))
        .collect();
    inventory.check_key_files(targeted.iter().copied(), false)?;

    let mode = Mode {
        check: g.check,
        diff: g.diff,
    };
    let reporter = crate::ui::reporter(g.json, g.verbose, mode);
    let interrupt = Arc::new(Interrupt::default());
    let req = RunRequest {
        force_handlers: g.force_handlers,
        interrupt: interrupt.clone(),
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
    let summary = runtime()?.block_on(async {
        tokio::spawn(watch_signals(interrupt.clone(), reporter.clone()));
        runner::run(req, reporter).await
    });
    if g.timings {
        let lines = crate::ui::plain::timing_lines(&summary, 5).join("\n");
        // With --json, stdout is JSON Lines only: the table goes to stderr.
        if g.json {
            eprintln!("{lines}");
        } else {
            println!("{lines}");
        }
    }
    Ok(exit_code_of(&summary, interrupt.signal()))
}

/// A run's exit code: a stop not confirmed on a host first (something may still be running
/// there), then the signal's (the shell's convention: 128 + the signal, 130 for SIGINT, 143 for
/// SIGTERM), then success or failure.
fn exit_code_of(summary: &runner::Summary, signal: Option<i32>) -> i32 {
    match signal {
        _ if !summary.unconfirmed_stops.is_empty() => exit::STOP_NOT_CONFIRMED,
        Some(signal) if summary.interrupted => 128 + signal,
        _ if summary.success() => exit::OK,
        _ => exit::FAILED,
    }
}

/// First SIGINT/SIGTERM: the run stops scheduling and ends through its tail (locks given back,
/// recap printed). Second: abort at once.
async fn watch_signals(interrupt: Arc<Interrupt>, reporter: Arc<dyn runner::Reporter>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    let mut received = 0;
    loop {
        let (number, name) = tokio::select! {
            _ = int.recv() => (2, "SIGINT"),
            _ = term.recv() => (15, "SIGTERM"),
        };
        received += 1;
        if received == 1 {
            interrupt.raise(number);
            reporter.event(&runner::Event::Interrupted {
                signal: name.to_string(),
            });
        } else {
            eprintln!(
                "{name} again: aborting at once, without a recap; remote commands are stopped by \
                 their time limit, run locks free themselves within seconds, and handlers owed \
                 are recorded on the hosts for the next run"
            );
            std::process::exit(128 + number);
        }
    }
}

#[cfg(test)]
mod firewall_tests;
#[cfg(test)]
mod kubernetes_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfirmed_stop_is_its_own_exit_code_even_after_a_signal() {
        let mut s = runner::Summary {
            interrupted: true,
            ..Default::default()
        };
        assert_eq!(exit_code_of(&s, Some(15)), 143);
        s.unconfirmed_stops = vec!["a: bootstrap-cmd-1-2-end (no answer)".into()];
        assert_eq!(exit_code_of(&s, Some(15)), exit::STOP_NOT_CONFIRMED);
        s.interrupted = false;
        assert_eq!(exit_code_of(&s, None), exit::STOP_NOT_CONFIRMED);
        assert!(!s.success());
        s.unconfirmed_stops.clear();
        assert_eq!(exit_code_of(&s, None), exit::OK);
    }

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

    fn small_inventory() -> Inventory {
        Inventory::parse(
            std::path::Path::new("inv.toml"),
            "[hosts.a]\naddress = \"10.0.0.1\"\nroles = [\"worker\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn bad_arguments_behind_a_false_when_passed_check() {
        let inventory = small_inventory();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        for (args, needle) in [
            (
                "file = { path = \"relative/dir\", state = \"directory\" }",
                "absolute",
            ),
            ("file = { path = \"/d\", mode = \"999\" }", "octal"),
        ] {
            let playbook = Playbook::parse(
                std::path::Path::new("p.toml"),
                &format!(
                    "name = \"p\"\nhosts = \"all\"\n[facts]\nkind = \"echo x\"\n\n[[steps]]\nname = \"ok\"\ncommand = {{ cmd = \"true\" }}\n\n[[steps]]\nname = \"guarded\"\nwhen = \"facts.kind == 'special'\"\n{args}\n"
                ),
            )
            .unwrap();
            let err = validate(&inventory, &secrets, &[&playbook], None).unwrap_err();
            assert_eq!(err.line, Some(10), "{err}");
            assert!(err.message.contains(needle), "{err}");
        }
        // A `when` that guards an undefined value still guards it.
        let guarded = Playbook::parse(
            std::path::Path::new("p.toml"),
            "name = \"p\"\nhosts = \"all\"\n[[steps]]\nname = \"g\"\nwhen = \"extra is defined\"\nfile = { path = \"{{ extra }}\" }\n",
        )
        .unwrap();
        assert_eq!(
            validate(&inventory, &secrets, &[&guarded], None).unwrap(),
            1
        );
        // So does a template file's value; its syntax is still checked.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("files")).unwrap();
        std::fs::create_dir_all(dir.path().join("playbooks")).unwrap();
        std::fs::write(dir.path().join("files/ok.j2"), "x = {{ extra }}\n").unwrap();
        std::fs::write(dir.path().join("files/bad.j2"), "{% if %}\n").unwrap();
        let templated = |src: &str| {
            Playbook::parse(
                &dir.path().join("playbooks/p.toml"),
                &format!("name = \"p\"\nhosts = \"all\"\n[[steps]]\nname = \"g\"\nwhen = \"extra is defined\"\ntemplate = {{ src = \"{src}\", dest = \"/etc/x\" }}\n"),
            )
            .unwrap()
        };
        validate(&inventory, &secrets, &[&templated("ok.j2")], None).unwrap();
        let err = validate(&inventory, &secrets, &[&templated("bad.j2")], None).unwrap_err();
        assert!(err.file.ends_with("bad.j2"), "{err}");
    }

    #[test]
    fn hosts_rendered_once_per_class_still_catch_one_hosts_bad_variable() {
        let inventory = Inventory::parse(
            std::path::Path::new("inv.toml"),
            "[vars]\ndir = \"/srv/app\"\n\n[hosts.a]\naddress = \"10.0.0.1\"\nroles = [\"worker\"]\n\n[hosts.b]\naddress = \"10.0.0.2\"\nroles = [\"worker\"]\n\n[hosts.c]\naddress = \"10.0.0.3\"\nroles = [\"worker\"]\n[hosts.c.vars]\ndir = \"srv/app\"\n",
        )
        .unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let playbook = Playbook::parse(
            std::path::Path::new("p.toml"),
            "name = \"p\"\nhosts = \"worker\"\n[[steps]]\nname = \"d\"\nfile = { path = \"{{ dir }}\", state = \"directory\" }\n",
        )
        .unwrap();
        assert_eq!(representatives(inventory.hosts.iter()).len(), 2);
        let err = validate(&inventory, &secrets, &[&playbook], None).unwrap_err();
        assert!(err.message.contains("absolute"), "{err}");
    }

    #[test]
    fn fetch_dest_shared_by_every_host_of_the_play() {
        let inventory = Inventory::parse(
            std::path::Path::new("inv.toml"),
            "[hosts.a]\naddress = \"10.0.0.1\"\nroles = [\"worker\"]\n[hosts.b]\naddress = \"10.0.0.2\"\nroles = [\"worker\"]\n",
        )
        .unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let with_dest = |dest: &str| {
            Playbook::parse(
                std::path::Path::new("p.toml"),
                &format!("name = \"p\"\nhosts = \"worker\"\n[[steps]]\nname = \"f\"\nfetch = {{ src = \"/etc/x.conf\", dest = \"{dest}\" }}\n"),
            )
            .unwrap()
        };
        let err = validate(&inventory, &secrets, &[&with_dest("x.conf")], None).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("overwrite"), "{err}");
        validate(
            &inventory,
            &secrets,
            &[&with_dest("{{ host.name }}/x.conf")],
            None,
        )
        .unwrap();
    }

    #[test]
    fn tags_naming_no_step_ran_everything_or_nothing() {
        let playbook = Playbook::parse(
            std::path::Path::new("p.toml"),
            "name = \"p\"\nhosts = \"all\"\n[[steps]]\nname = \"s\"\ntags = [\"postgres\"]\ncommand = { cmd = \"true\" }\n",
        )
        .unwrap();
        let flags = |args: &[&str]| {
            use clap::Parser;
            let mut argv = vec!["bootstrap"];
            argv.extend_from_slice(args);
            argv.push("check");
            Cli::parse_from(argv).global
        };
        check_tags(&flags(&["--tags", "postgres"]), &[&playbook]).unwrap();
        let err = check_tags(&flags(&["--tags", "postgre"]), &[&playbook]).unwrap_err();
        assert!(err.message.contains("--tags names `postgre`"), "{err}");
        assert!(err.hint.unwrap().contains("postgres"));
        let err = check_tags(&flags(&["--skip-tags", "ufw"]), &[&playbook]).unwrap_err();
        assert!(err.message.contains("--skip-tags"), "{err}");
    }

    #[test]
    fn worker_managed_the_postgresql_wrapper_unit_that_hides_a_failed_cluster() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let inventory = Inventory::load(&root.join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let worker = Playbook::load(&root.join("playbooks/worker.toml")).unwrap();
        let facts = BTreeMap::from([("postgres_version".to_string(), "15".to_string())]);
        let vars = runner::context::host_context(
            &inventory,
            inventory.host("worker").unwrap(),
            &secrets,
            &facts,
        );
        let renderer = Renderer::new(&root.join("files"));
        let unit_of = |step: &crate::playbook::Step| {
            let args = renderer
                .render_step(&worker, step, &vars, &facts)
                .unwrap()
                .unwrap();
            args["name"].as_str().unwrap().to_string()
        };
        let running = worker
            .steps
            .iter()
            .find(|s| s.module == "service" && s.args.get("state").is_some())
            .unwrap();
        assert_eq!(unit_of(running), "postgresql@15-main");
        for handler in worker.handlers.iter().filter(|h| h.module == "service") {
            assert_eq!(unit_of(handler), "postgresql@15-main", "{}", handler.name);
        }
        // Every notification also waits for the port, after the restart or reload.
        let last = worker.handlers.last().unwrap();
        assert_eq!(last.module, "wait_for");
        for step in worker.steps.iter().filter(|s| !s.notify.is_empty()) {
            assert!(step.notify.contains(&last.name), "{}", step.name);
        }
        // The version comes from postgresql-common's cluster list.
        assert!(worker.facts[0].1.starts_with("pg_lsclusters"));
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
                "remove the retired ingress-nginx",
                "apply nginx-ingress",
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
        // Every handler that applies a directory waits for what it applied; the removal of the
        // retired controller waits for its namespace to be gone (it holds the NodePorts).
        for h in &playbook.handlers[1..] {
            let cmd = h.args["cmd"].as_str().unwrap();
            let wait = if h.name.starts_with("remove") {
                "--wait=true"
            } else {
                "rollout status"
            };
            assert!(cmd.contains(wait), "{}: {cmd}", h.name);
            assert!(
                cmd.contains("--timeout={{ rollout_timeout }}"),
                "{}",
                h.name
            );
        }
    }

    /// Runs the rendered `apply crypto-exchange` handler (inventory var `pinned`) in a temp
    /// directory against a fake kubectl that says the Deployment runs `live` (none when empty);
    /// returns the image in the deployment.yaml kubectl was asked to apply, and the temp dir.
    fn apply_app_handler(pinned: bool, live: &str) -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("manifests");
        let app_dir = remote.join("crypto-exchange");
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::write(
            app_dir.join("deployment.yaml"),
            "spec:\n  containers:\n    - name: django-app\n      image: \"username/crypto-exchange:latest\"\n",
        )
        .unwrap();
        std::fs::write(
            app_dir.join("kustomization.yaml"),
            "resources: [deployment.yaml]\n",
        )
        .unwrap();
        // kubectl: `get` prints the live image; `apply -k DIR` copies DIR's deployment.yaml out.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fake = format!(
            "#!/bin/sh\ncase \"$*\" in\n  *' get deployment '*) printf '%s' '{live}' ;;\n  *' apply -k '*) for a; do d=$a; done; cp \"$d/deployment.yaml\" '{}/applied.yaml'; echo 'deployment.apps/django-app configured' ;;\n  *' rollout status '*) ;;\n  *) echo \"unexpected: $*\" >&2; exit 1 ;;\nesac\n",
            dir.path().display()
        );
        std::fs::write(bin.join("kubectl"), fake).unwrap();
        std::fs::set_permissions(
            bin.join("kubectl"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();

        let (inventory, _inv_dir) =
            shipped_inventory_with_var("manifests_remote_dir", &remote.display().to_string());
        let mut inventory = inventory;
        for h in inventory.hosts.iter_mut() {
            h.vars
                .insert("app_image_pinned".into(), toml::Value::Boolean(pinned));
        }
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let master = inventory.hosts_with_role("master").next().unwrap();
        let ctx = runner::context::host_context(&inventory, master, &secrets, &BTreeMap::new());
        let playbook = shipped_playbook("manifests.toml");
        let handler = playbook
            .handlers
            .iter()
            .find(|h| h.name == "apply crypto-exchange")
            .unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cmd = Renderer::new(&root.join("files"))
            .render_text(handler.args["cmd"].as_str().unwrap(), &ctx)
            .unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let applied = std::fs::read_to_string(dir.path().join("applied.yaml")).unwrap();
        let image = applied
            .lines()
            .find_map(|l| l.trim().strip_prefix("image: "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        // The rendered file is left as it is, and no copy stays behind (it holds the Secret).
        assert!(std::fs::read_to_string(app_dir.join("deployment.yaml"))
            .unwrap()
            .contains("username/crypto-exchange:latest"));
        let left: Vec<_> = std::fs::read_dir(&remote)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("crypto-exchange")]);
        (image, dir)
    }

    /// The no-downgrade guard of node.toml on a node whose kubelet package is `installed` (none
    /// when empty), against the shipped kubernetes_version: whether the step is satisfied
    /// (`unless` passes) and, if not, what its command says.
    fn downgrade_guard(installed: &str) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let fake = if installed.is_empty() {
            "#!/bin/sh\nexit 1\n".to_string()
        } else {
            format!("#!/bin/sh\nprintf '%s' '{installed}-1.1'\n")
        };
        std::fs::write(dir.path().join("dpkg-query"), fake).unwrap();
        std::fs::set_permissions(
            dir.path().join("dpkg-query"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let inventory = shipped_inventory();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let master = inventory.hosts_with_role("master").next().unwrap();
        let ctx = runner::context::host_context(&inventory, master, &secrets, &BTreeMap::new());
        let step = shipped_playbook("node.toml")
            .steps
            .into_iter()
            .find(|s| s.name.contains("never downgrades"))
            .unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let renderer = Renderer::new(&root.join("files"));
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        let run = |arg: &str| {
            let text = renderer
                .render_text(step.args[arg].as_str().unwrap(), &ctx)
                .unwrap();
            std::process::Command::new("sh")
                .arg("-c")
                .arg(text)
                .env("PATH", &path)
                .output()
                .unwrap()
        };
        if run("unless").status.success() {
            return (true, String::new());
        }
        let out = run("cmd");
        assert!(!out.status.success());
        (false, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[test]
    fn a_node_newer_than_the_inventory_stops_the_run_naming_the_lines_to_change() {
        let pinned = shipped_inventory().vars["kubernetes_version"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(downgrade_guard("").0, "a node without the packages yet");
        assert!(downgrade_guard(&pinned).0, "the pinned version");
        assert!(
            downgrade_guard("1.35.0").0,
            "an older patch is upgraded by the run"
        );
        let (ok, message) = downgrade_guard("1.36.3");
        assert!(!ok);
        assert!(message.contains("kubelet 1.36.3"), "{message}");
        assert!(
            message.contains("kubernetes_version = \"1.36.3\""),
            "{message}"
        );
        assert!(message.contains("kubernetes_minor = \"1.36\""), "{message}");
        assert!(message.contains(&pinned), "{message}");
    }

    #[test]
    fn the_app_handler_keeps_the_image_the_cluster_runs_unless_the_inventory_pins_it() {
        // First apply: no Deployment yet: the inventory's image.
        assert_eq!(
            apply_app_handler(false, "").0,
            "username/crypto-exchange:latest"
        );
        // CI moved the image: the apply keeps it.
        assert_eq!(
            apply_app_handler(false, "example/crypto-exchange:ci-1234").0,
            "example/crypto-exchange:ci-1234"
        );
        assert_eq!(
            apply_app_handler(false, "reg.example:5000/app@sha256:0123abcd").0,
            "reg.example:5000/app@sha256:0123abcd"
        );
        // Pinned: the inventory wins.
        assert_eq!(
            apply_app_handler(true, "example/crypto-exchange:ci-1234").0,
            "username/crypto-exchange:latest"
        );
    }

    #[test]
    fn every_step_of_the_manifests_stage_carries_its_tag() {
        // `all --skip-tags manifests` must skip the whole stage: a step without the tag would
        // run and read values of skipped steps (registered[...].in_cluster).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let playbook = Playbook::load(&root.join("playbooks/manifests.toml")).unwrap();
        for step in &playbook.steps {
            assert!(
                step.tags.iter().any(|t| t == "manifests"),
                "step `{}` (line {}) lacks the manifests tag",
                step.name,
                step.line
            );
        }
    }

    #[test]
    fn shipped_playbooks_validate_against_the_shipped_inventory() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let inventory = Inventory::load(&root.join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        for name in ["worker.toml", "elk.toml", "manifests.toml"] {
            let playbook = Playbook::load(&root.join("playbooks").join(name)).unwrap();
            let checked = validate(&inventory, &secrets, &[&playbook], None).unwrap();
            assert_eq!(
                checked,
                playbook.steps.len() + playbook.handlers.len(),
                "{name}"
            );
        }
    }

    fn render_for_shipped_elk(src: &str, facts: &[(&str, &str)]) -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let inventory = Inventory::load(&root.join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let elk = inventory.host("elk").unwrap();
        let facts: BTreeMap<String, String> = facts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let vars = runner::context::host_context(&inventory, elk, &secrets, &facts);
        Renderer::new(&root.join("files"))
            .render_file(src, &vars)
            .unwrap()
    }

    #[test]
    fn elasticsearch_yml_is_single_node_with_security_and_no_auto_configured_block() {
        let yml = render_for_shipped_elk("elk/elasticsearch.yml.j2", &[]);
        let elk = "91.107.185.11";
        assert!(yml.contains(&format!("network.host: [\"{elk}\", \"127.0.0.1\"]")));
        assert!(yml.contains("discovery.type: single-node"));
        assert!(yml.contains("xpack.security.enabled: true"));
        // TLS on HTTP by default (elasticsearch_scheme = "https"), with the package's keystore.
        assert!(yml.contains(
            "xpack.security.http.ssl:\n  enabled: true\n  keystore.path: certs/http.p12"
        ));
        assert!(yml.contains("xpack.security.transport.ssl:\n  enabled: true"));
        // Refused beside single-node, and what the package's auto-configuration appends.
        for absent in ["initial_master_nodes", "http.host", "AUTO CONFIGURATION"] {
            assert!(!yml.contains(absent), "{absent} in:\n{yml}");
        }
    }

    #[test]
    fn jvm_heap_comes_from_the_fact_unless_the_inventory_names_one() {
        let heap = render_for_shipped_elk("elk/heap.options.j2", &[("heap_default_mb", "1024")]);
        assert!(heap.contains("-Xms1024m\n-Xmx1024m"), "{heap}");
    }

    #[test]
    fn kibana_yml_names_kibana_system_and_holds_no_password() {
        let yml = render_for_shipped_elk("elk/kibana.yml.j2", &[]);
        assert!(yml.contains("elasticsearch.username: \"kibana_system\""));
        assert!(!yml.contains("password:"), "{yml}");
        // Over TLS, verifying the certificate against the CA the ELK part copies for Kibana.
        assert!(
            yml.contains("elasticsearch.hosts: [\"https://127.0.0.1:9200\"]"),
            "{yml}"
        );
        assert!(yml.contains(
            "elasticsearch.ssl.certificateAuthorities: [\"/etc/kibana/elasticsearch-http-ca.crt\"]"
        ));
        assert!(yml.contains("elasticsearch.ssl.verificationMode: full"));
        // One setting per line: the file is YAML with exactly these keys.
        let parsed: serde_yaml::Mapping = serde_yaml::from_str(&yml).unwrap();
        let keys: Vec<&str> = parsed.keys().filter_map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.port",
                "server.host",
                "server.name",
                "server.ssl.enabled",
                "server.ssl.certificate",
                "server.ssl.key",
                "elasticsearch.hosts",
                "elasticsearch.username",
                "elasticsearch.ssl.certificateAuthorities",
                "elasticsearch.ssl.verificationMode"
            ]
        );
    }

    #[test]
    fn every_call_to_elasticsearch_verifies_its_ca_and_follows_the_scheme() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("playbooks/elk.toml")).unwrap();
        // Loopback calls name the scheme from the inventory, never a fixed http://.
        assert!(
            !text.contains("http://127.0.0.1"),
            "a fixed http:// call in elk.toml"
        );
        for line in text
            .lines()
            .filter(|l| l.contains("127.0.0.1:{{ elasticsearch_port }}"))
        {
            assert!(
                line.contains("{{ elasticsearch_scheme }}://"),
                "no scheme: {line}"
            );
            if line.contains("curl") {
                assert!(
                    line.contains("--cacert /etc/elasticsearch/certs/http_ca.crt"),
                    "curl without the CA: {line}"
                );
            }
        }
    }

    fn shipped_inventory() -> Inventory {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        Inventory::load(&root.join("inventory.toml")).unwrap()
    }

    /// The shipped inventory with one `[vars]` line replaced.
    fn shipped_inventory_with_var(var: &str, value: &str) -> (Inventory, tempfile::TempDir) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("inventory.toml")).unwrap();
        let prefix = format!("{var} =");
        assert!(text.lines().any(|l| l.starts_with(&prefix)), "no {var}");
        let changed: String = text
            .lines()
            .map(|l| {
                if l.starts_with(&prefix) {
                    format!("{var} = {value:?}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inventory.toml"), changed).unwrap();
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
    fn every_shipped_playbook_validates_against_the_shipped_inventory() {
        let inventory = shipped_inventory();
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
    fn the_shipped_inventory_pins_the_k8s_key_by_its_published_fingerprint_and_needs_a_pin() {
        let node = shipped_playbook("node.toml");
        let inventory = shipped_inventory();
        assert_eq!(
            inventory
                .vars
                .get("k8s_repo_key_fingerprint")
                .and_then(|v| v.as_str()),
            Some("DE15 B144 86CD 377B 9E87 6E1A 2346 54DA 9A29 6436")
        );
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        validate(&inventory, &secrets, &[&node], None).unwrap();
        // Without the fingerprint nothing pins the key: refused, not installed unchecked.
        let (unpinned, _dir) = shipped_inventory_with_var("k8s_repo_key_fingerprint", "");
        let err = validate(&unpinned, &secrets, &[&node], None).unwrap_err();
        assert!(err.message.contains("not pinned"), "{err}");
    }

    #[test]
    fn kubeadm_config_carries_the_inventory_addresses_cidrs_and_version() {
        let inventory = shipped_inventory();
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

    /// What the master registered for `worker` in a run that minted its join token.
    pub(super) fn minted_join_for_worker() -> runner::context::RegisteredValues {
        BTreeMap::from([(
            "worker".to_string(),
            BTreeMap::from([
                (
                    "join".to_string(),
                    "abcdef.0123456789abcdef sha256:feed".to_string(),
                ),
                ("node_state".to_string(), "unknown".to_string()),
            ]),
        )])
    }

    #[test]
    fn the_join_configuration_gets_the_token_and_hash_registered_on_the_master() {
        let inventory = shipped_inventory();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let worker = inventory.host("worker").unwrap();
        let join = shipped_playbook("join.toml");
        let step = join
            .steps
            .iter()
            .find(|s| s.name.starts_with("kubeadm join"))
            .unwrap();
        let registered = minted_join_for_worker();
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
        let runs = |node_state: &str| -> Vec<String> {
            // A run that minted no token: only the node's state was registered.
            let mut known = registered.clone();
            let worker_values = known.get_mut("worker").unwrap();
            worker_values.clear();
            worker_values.insert("node_state".into(), node_state.into());
            let vars = runner::context::host_context_with(
                &inventory,
                worker,
                &secrets,
                &joined_facts,
                &known,
            );
            join.steps
                .iter()
                .filter(|s| s.when.is_some())
                .filter(|s| {
                    renderer
                        .render_step(&join, s, &vars, &joined_facts)
                        .unwrap()
                        .is_some()
                })
                .map(|s| s.name.clone())
                .collect()
        };
        // Joined and Ready: nothing to do, not even the wait.
        assert_eq!(runs("ready"), Vec::<String>::new());
        // Joined, not Ready yet: only the wait.
        assert_eq!(
            runs("known"),
            vec!["this node is Ready (asked on the master)"]
        );
    }

    #[test]
    fn a_hand_off_object_missing_from_the_cluster_reapplies_only_its_directory() {
        let inventory = shipped_inventory();
        let secrets = Secrets::placeholders(inventory.secret_names.keys());
        let master = inventory.host("master").unwrap();
        let manifests = shipped_playbook("manifests.toml");
        let renderer = Renderer::new(&manifests.files_dir());
        let facts = BTreeMap::new();
        let everything = [
            "Namespace//kube-system",
            "Namespace//crypto-exchange",
            "Deployment/nginx-ingress/nginx-ingress",
            "DaemonSet/logging/fluent-bit",
            "Deployment/monitoring/grafana",
            "Deployment/crypto-exchange/django-app",
            "Deployment/crypto-exchange/django-app-old",
        ];
        let runs = |in_cluster: Vec<&str>| -> Vec<String> {
            let registered = BTreeMap::from([(
                "master".to_string(),
                BTreeMap::from([("in_cluster".to_string(), in_cluster.join("\n"))]),
            )]);
            let vars = runner::context::host_context_with(
                &inventory,
                master,
                &secrets,
                &facts,
                &registered,
            );
            manifests
                .steps
                .iter()
                .filter(|s| s.when.as_deref().is_some_and(|w| w.contains("in_cluster")))
                .filter(|s| {
                    renderer
                        .render_step(&manifests, s, &vars, &facts)
                        .unwrap()
                        .is_some()
                })
                .map(|s| s.notify.join(","))
                .collect()
        };
        assert_eq!(runs(everything.to_vec()), Vec::<String>::new());
        // Grafana deleted by hand: the monitoring directory only. A longer name that merely
        // starts with a wanted one (django-app-old) does not count as the wanted one.
        let without = |gone: &str| everything.iter().copied().filter(|o| *o != gone).collect();
        assert_eq!(
            runs(without("Deployment/monitoring/grafana")),
            vec!["apply monitoring"]
        );
        assert_eq!(
            runs(without("Deployment/crypto-exchange/django-app")),
            vec!["apply crypto-exchange"]
        );
        // A fresh cluster: all five.
        assert_eq!(runs(vec!["Namespace//kube-system"]).len(), 5);
        // A cluster set up with the retired ingress-nginx: it is removed, then the F5 controller
        // applied (its handlers are declared in that order); nothing else is touched.
        let mut retired: Vec<&str> = without("Deployment/nginx-ingress/nginx-ingress");
        retired.push("Deployment/ingress-nginx/ingress-nginx-controller");
        assert_eq!(
            runs(retired),
            vec![
                "apply nginx-ingress",
                "remove the retired ingress-nginx,apply nginx-ingress"
            ]
        );
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
