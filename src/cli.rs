//! Command-line types only (clap). `app` turns them into work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "bootstrap",
    version,
    about = "Takes bare Debian/Ubuntu servers to a working platform over SSH: kubeadm + Calico, \
             PostgreSQL behind UFW, Elasticsearch + Kibana. Idempotent: a rerun changes nothing."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Inventory file.
    #[arg(
        short = 'i',
        long = "inventory",
        global = true,
        default_value = "inventory.toml",
        env = "BOOTSTRAP_INVENTORY"
    )]
    pub inventory: PathBuf,
    /// Secrets file (default: secrets.toml beside the inventory; must be mode 0600).
    #[arg(long, global = true, env = "BOOTSTRAP_SECRETS_FILE")]
    pub secrets: Option<PathBuf>,
    /// Directory of role playbooks (templates in its sibling files/). Default: ./playbooks if
    /// present, else the copy built into the binary.
    #[arg(long, global = true, env = "BOOTSTRAP_PLAYBOOKS")]
    pub playbooks: Option<PathBuf>,
    /// Change nothing anywhere; print what would change.
    #[arg(long, global = true)]
    pub check: bool,
    /// Show unified diffs of file contents (secrets masked).
    #[arg(long, global = true)]
    pub diff: bool,
    /// JSON Lines on stdout: one object per step result and a final summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Hosts worked on at once (default: all).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub forks: Option<u32>,
    /// Refuse hosts whose key is not known yet instead of recording it.
    #[arg(long, global = true)]
    pub strict_host_keys: bool,
    /// Only these hosts (comma-separated inventory names).
    #[arg(long, global = true, value_delimiter = ',')]
    pub limit: Option<Vec<String>>,
    /// Only steps with one of these tags.
    #[arg(long, global = true, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Skip steps with one of these tags.
    #[arg(long, global = true, value_delimiter = ',')]
    pub skip_tags: Vec<String>,
    /// Also print steps that changed nothing, and where logs are.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything, in order: the hosts' roles, then the worker join, then the cluster manifests.
    All,
    /// The control plane host (role master).
    Master,
    /// The worker hosts: PostgreSQL, firewall, cluster join.
    Worker,
    /// The Elasticsearch + Kibana host.
    Elk,
    /// Render the cluster manifests and apply them through the master.
    Manifests,
    /// Undo the Kubernetes part of the --limit hosts (kubeadm reset, CNI state, their
    /// iptables rules, the node in the API) so they can join again. PostgreSQL is not touched.
    Reset {
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Run any playbook against the inventory hosts.
    Run {
        /// Path of the playbook (.toml).
        playbook: PathBuf,
    },
    /// Validate inventory, playbooks and templates without connecting to anything.
    Check,
    /// Connect to every host; print OS, login user and whether sudo works.
    Ping,
    /// Manage the secrets file.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Fill in strong random values for declared secrets that have none (existing ones are kept).
    Init,
}
