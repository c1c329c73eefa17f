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
    /// Directory of role playbooks (templates in its sibling files/). Default: playbooks/ beside
    /// the inventory if present, else the copy built into the binary.
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
    /// Run notified handlers even when a later step failed.
    #[arg(long, global = true)]
    pub force_handlers: bool,
    /// At the end, print per host the slowest probes and steps (top 5 of each).
    #[arg(long, global = true)]
    pub timings: bool,
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
    /// Render the cluster manifests (a Kustomize directory on this machine) and apply them
    /// through the master.
    Manifests {
        /// Only render (and download the pinned upstream files): connect to no host.
        #[arg(long)]
        render_only: bool,
        /// Where to write them (default: .bootstrap/manifests beside the inventory).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// With --render-only: do not download the upstream files (the directory then lacks
        /// them; for validating our own manifests offline).
        #[arg(long, requires = "render_only")]
        offline: bool,
    },
    /// Draw the platform this inventory and these playbooks produce (connects to nothing):
    /// layer 1 servers and ports, 2 namespaces and services, 3 pods and configuration.
    Diagram {
        /// One page (default: all three, which needs -o DIR or a name with {layer}).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
        layer: Option<u8>,
        /// svg (drawn by bootstrap itself), mermaid or dot (text).
        #[arg(long, value_enum, default_value = "svg")]
        format: crate::diagram::Format,
        /// File (one layer), directory or `name-{layer}.svg` (all layers); default stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
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
