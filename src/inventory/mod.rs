//! `inventory.toml` -> typed hosts, roles and variables, validated with file:line errors.
//!
//! Nothing here knows a particular host or IP: the shipped inventory.toml holds those.

pub mod firewall;
pub mod kubernetes;
pub mod network;
pub mod retired;
pub mod secrets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::InputError;
use crate::transport::SshTarget;

pub use secrets::Secrets;

/// The roles a host can have. Playbooks target one of these or `all`.
pub const ROLES: &[&str] = &["master", "worker", "elk"];

/// Names the templates get from the run itself: an inventory variable of the same name would
/// be silently shadowed, so it is refused.
pub const RESERVED_VARS: &[&str] = &[
    "host",
    "hosts",
    "groups",
    "role_addresses",
    "registered",
    "facts",
    "secrets",
];

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    /// Hosts in name order.
    pub hosts: Vec<Host>,
    /// Global variables (`[vars]`).
    pub vars: toml::Table,
    /// Declared secret names with their descriptions (`[secrets]`).
    pub secret_names: BTreeMap<String, String>,
    /// What every host's templates see of the whole inventory, built once on first use.
    pub template_view: std::sync::OnceLock<SharedView>,
    /// How patiently to connect (`[ssh]` connect_timeout, wait_for_host).
    pub connect: ConnectSettings,
}

/// `hosts`, `groups` and `role_addresses` as template values (see `runner::context`).
#[derive(Debug, Clone)]
pub struct SharedView {
    pub hosts: minijinja::Value,
    pub groups: minijinja::Value,
    pub role_addresses: minijinja::Value,
}

/// `[ssh]` settings about connecting, in seconds in the file; `None` keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Bound of one connection attempt.
    pub connect_timeout: Option<std::time::Duration>,
    /// How long to keep retrying a host that refuses or drops connections (rebooting).
    pub wait_for_host: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub roles: Vec<String>,
    pub ssh: SshTarget,
    /// Global vars overridden by this host's own `[hosts.NAME.vars]`.
    pub vars: toml::Table,
    /// Line of the host's table in the inventory, for messages.
    pub line: usize,
}

impl Host {
    /// `role` may list several, comma-separated (a playbook's `hosts = ["master", "worker"]`).
    pub fn has_role(&self, role: &str) -> bool {
        role.split(',')
            .any(|role| role == "all" || self.roles.iter().any(|r| r == role))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    ssh: RawSsh,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<RawHost>>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    user: Option<String>,
    port: Option<Spanned<i64>>,
    key: Option<String>,
    #[serde(rename = "become")]
    become_root: Option<bool>,
    connect_timeout: Option<Spanned<i64>>,
    wait_for_host: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: Spanned<String>,
    roles: Spanned<Vec<String>>,
    user: Option<String>,
    port: Option<Spanned<i64>>,
    key: Option<String>,
    #[serde(rename = "become")]
    become_root: Option<bool>,
    host_key: Option<Spanned<String>>,
    #[serde(default)]
    vars: toml::Table,
}

impl Inventory {
    /// Reads and validates an inventory file.
    pub fn load(path: &Path) -> Result<Inventory, InputError> {
        if !path.exists() {
            return Err(
                InputError::new(path, None, "cannot read inventory: no such file")
                    .hint("pass the inventory with -i FILE (default: inventory.toml)"),
            );
        }
        let text = crate::error::read_text(path, "inventory")?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Inventory, InputError> {
        let raw: RawInventory = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let line_at = |offset: usize| InputError::line_of(text, offset);

        if raw.hosts.is_empty() {
            return Err(InputError::new(path, None, "the inventory has no hosts")
                .hint("add a [hosts.NAME] table with `address` and `roles`"));
        }
        check_reserved_vars(path, text, &raw.vars, None)?;
        let mut hosts = Vec::new();
        for (name, spanned) in raw.hosts {
            let line = line_at(spanned.span().start);
            let h = spanned.into_inner();
            validate_name(path, Some(line), &name)?;

            let address = h.address.get_ref().trim().to_string();
            if address.is_empty() || address.contains(char::is_whitespace) {
                return Err(InputError::new(
                    path,
                    Some(line_at(h.address.span().start)),
                    format!("host `{name}`: address `{address}` is not an IP address or host name"),
                ));
            }
            for role in h.roles.get_ref() {
                if !ROLES.contains(&role.as_str()) {
                    return Err(InputError::new(
                        path,
                        Some(line_at(h.roles.span().start)),
                        format!("host `{name}`: unknown role `{role}`"),
                    )
                    .hint(format!("roles are: {}", ROLES.join(", "))));
                }
            }
            let port_value = h.port.as_ref().or(raw.ssh.port.as_ref());
            let port = match port_value {
                None => 22,
                Some(p) => u16::try_from(*p.get_ref())
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        InputError::new(
                            path,
                            Some(line_at(p.span().start)),
                            format!("host `{name}`: port {} is not in 1-65535", p.get_ref()),
                        )
                    })?,
            };
            let user = h
                .user
                .or_else(|| raw.ssh.user.clone())
                .unwrap_or_else(|| "root".to_string());
            let key_file = h
                .key
                .or_else(|| raw.ssh.key.clone())
                .map(|k| resolve_key_path(base_dir, &k));
            let host_key = match h.host_key {
                None => None,
                Some(k) => {
                    let value = k.get_ref().trim().to_string();
                    if value.split_whitespace().count() < 2 {
                        return Err(InputError::new(
                            path,
                            Some(line_at(k.span().start)),
                            format!(
                                "host `{name}`: host_key must look like \"ssh-ed25519 AAAA...\""
                            ),
                        ));
                    }
                    Some(value)
                }
            };
            check_reserved_vars(path, text, &h.vars, Some(line))?;
            let mut vars = raw.vars.clone();
            vars.extend(h.vars);
            hosts.push(Host {
                roles: h.roles.into_inner(),
                ssh: SshTarget {
                    name: name.clone(),
                    address,
                    port,
                    user,
                    key_file,
                    become_root: h.become_root.or(raw.ssh.become_root).unwrap_or(true),
                    pinned_host_key: host_key,
                },
                name,
                vars,
                line,
            });
        }

        // One control plane and one ELK box today; any number of workers.
        for role in ["master", "elk"] {
            let with_role: Vec<&Host> = hosts.iter().filter(|h| h.has_role(role)).collect();
            if with_role.len() > 1 {
                return Err(InputError::new(
                    path,
                    Some(with_role[1].line),
                    format!(
                        "more than one host has role `{role}` ({}); only one is supported",
                        with_role
                            .iter()
                            .map(|h| h.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        for name in raw.secrets.keys() {
            validate_name(path, key_line(text, name), name)?;
        }
        // Two entries for one sshd would run two plays on one machine at once.
        let mut endpoints: std::collections::HashMap<(&str, u16), &Host> =
            std::collections::HashMap::new();
        for h in &hosts {
            if let Some(first) = endpoints.insert((h.ssh.address.as_str(), h.ssh.port), h) {
                return Err(InputError::new(
                    path,
                    Some(h.line),
                    format!(
                        "hosts `{}` and `{}` both have address {} port {}",
                        first.name, h.name, h.ssh.address, h.ssh.port
                    ),
                )
                .hint("one machine is one host: give it every role it has in `roles`"));
            }
        }
        network::check_cluster_ranges(path, text, &hosts)?;
        kubernetes::check_node_values(path, text, &hosts)?;
        firewall::check_firewall_values(path, text, &hosts)?;
        retired::check_retired_values(path, text, &hosts)?;
        let seconds =
            |value: &Option<Spanned<i64>>, name: &str, range: std::ops::RangeInclusive<i64>| {
                match value {
                    None => Ok(None),
                    Some(v) if range.contains(v.get_ref()) => {
                        Ok(Some(std::time::Duration::from_secs(*v.get_ref() as u64)))
                    }
                    Some(v) => Err(InputError::new(
                        path,
                        Some(line_at(v.span().start)),
                        format!(
                            "[ssh] {name} = {} is not in {}-{} (seconds)",
                            v.get_ref(),
                            range.start(),
                            range.end()
                        ),
                    )),
                }
            };
        let connect = ConnectSettings {
            connect_timeout: seconds(&raw.ssh.connect_timeout, "connect_timeout", 1..=600)?,
            wait_for_host: seconds(&raw.ssh.wait_for_host, "wait_for_host", 0..=3600)?,
        };

        Ok(Inventory {
            path: path.to_path_buf(),
            hosts,
            vars: raw.vars,
            secret_names: raw.secrets,
            template_view: std::sync::OnceLock::new(),
            connect,
        })
    }

    /// Directory for run state beside the inventory: known hosts, logs, fetched files.
    pub fn state_dir(&self) -> PathBuf {
        Self::state_dir_for(&self.path)
    }

    pub fn state_dir_for(inventory: &Path) -> PathBuf {
        match inventory.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(".bootstrap"),
            _ => PathBuf::from(".bootstrap"),
        }
    }

    /// Key files must be usable before we connect anywhere: present, private (mode 0600, as
    /// OpenSSH demands) and parseable without a passphrase. With `missing_ok` (for `check`,
    /// which may run on a machine without the keys) a missing file is returned, not an error.
    pub fn check_key_files<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a Host>,
        missing_ok: bool,
    ) -> Result<Vec<PathBuf>, InputError> {
        use crate::transport::keys::{self, KeyProblem};
        let mut missing = Vec::new();
        for host in hosts {
            let Some(key) = &host.ssh.key_file else {
                continue;
            };
            match keys::check(key) {
                Ok(()) => {}
                Err(KeyProblem::Missing) if missing_ok => {
                    if !missing.contains(key) {
                        missing.push(key.clone());
                    }
                }
                Err(problem) => {
                    return Err(InputError::new(
                        &self.path,
                        Some(host.line),
                        format!("host `{}`: key file {} {problem}", host.name, key.display()),
                    )
                    .hint(problem.hint(key)));
                }
            }
        }
        Ok(missing)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        // Hosts are kept in name order: a look-up is a binary search, not a scan.
        self.hosts
            .binary_search_by(|h| h.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.hosts[i])
    }

    /// The platform (`all`, its parts and `check`) needs exactly one control plane and one ELK
    /// box; `run PLAYBOOK` works on any inventory.
    pub fn check_platform_roles(&self) -> Result<(), InputError> {
        for role in ["master", "elk"] {
            if self.hosts_with_role(role).next().is_none() {
                return Err(InputError::new(
                    &self.path,
                    None,
                    format!("no host has role `{role}`; the platform needs exactly one"),
                )
                .hint(format!("add `{role}` to the `roles` of one host")));
            }
        }
        Ok(())
    }

    /// Hosts with `role` (or every host for "all"), in name order.
    pub fn hosts_with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Host> + 'a {
        self.hosts.iter().filter(move |h| h.has_role(role))
    }
}

fn check_reserved_vars(
    path: &Path,
    text: &str,
    vars: &toml::Table,
    host_line: Option<usize>,
) -> Result<(), InputError> {
    match RESERVED_VARS.iter().find(|r| vars.contains_key(**r)) {
        None => Ok(()),
        Some(name) => Err(InputError::new(
            path,
            key_line(text, name).or(host_line),
            format!("variable `{name}` would be hidden by the run's own `{name}`"),
        )
        .hint(format!(
            "rename it; these names are reserved: {}",
            RESERVED_VARS.join(", ")
        ))),
    }
}

/// Line of the first `key = ...` in a TOML text (bare or quoted key), for messages about a value
/// whose span the parsed table no longer has.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .or_else(|| l.strip_prefix(&format!("'{key}'")));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn validate_name(path: &Path, line: Option<usize>, name: &str) -> Result<(), InputError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(InputError::new(
            path,
            line,
            format!("`{name}` is not a valid name: use letters, digits, - and _"),
        ))
    }
}

fn resolve_key_path(base_dir: &Path, key: &str) -> PathBuf {
    if let Some(rest) = key.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let p = PathBuf::from(key);
    if p.is_absolute() {
        p
    } else {
        base_dir.join(p)
    }
}

/// A TOML syntax or shape error, with the line it points at.
pub fn toml_error(path: &Path, text: &str, err: &toml::de::Error) -> InputError {
    let line = err.span().map(|s| InputError::line_of(text, s.start));
    InputError::new(path, line, err.message().to_string())
}

/// A one-host inventory (no roles) whose [vars] hold VARS after `ok = 1`, so VARS starts on
/// line 3: for the tests of the value checks that name an inventory line.
#[cfg(test)]
pub(crate) fn parse_with_vars(vars: &str) -> Result<Inventory, InputError> {
    Inventory::parse(
        Path::new("inv.toml"),
        &format!("[vars]\nok = 1\n{vars}\n\n[hosts.a]\naddress = \"10.0.0.1\"\nroles = []\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Inventory, InputError> {
        Inventory::parse(Path::new("inv.toml"), text)
    }

    const GOOD: &str = r#"
[ssh]
user = "admin"

[vars]
db_name = "crypto_exchange"

[secrets]
db_password = "password of the database role"

[hosts.master]
address = "10.0.0.1"
roles = ["master"]

[hosts.worker]
address = "10.0.0.2"
roles = ["worker"]
port = 2222
become = false
[hosts.worker.vars]
db_name = "other"
"#;

    #[test]
    fn parses_hosts_with_defaults_and_overrides() {
        let inv = parse(GOOD).unwrap();
        let master = inv.host("master").unwrap();
        assert_eq!(master.ssh.port, 22);
        assert_eq!(master.ssh.user, "admin");
        assert!(master.ssh.become_root);
        assert_eq!(master.vars["db_name"].as_str(), Some("crypto_exchange"));
        let worker = inv.host("worker").unwrap();
        assert_eq!(worker.ssh.port, 2222);
        assert!(!worker.ssh.become_root);
        assert_eq!(worker.vars["db_name"].as_str(), Some("other"));
        assert_eq!(inv.hosts_with_role("worker").count(), 1);
        assert_eq!(inv.hosts_with_role("all").count(), 2);
        assert!(inv.secret_names.contains_key("db_password"));
    }

    #[test]
    fn unknown_role_names_the_line() {
        let err = parse("[hosts.a]\naddress = \"10.0.0.1\"\nroles = [\"mastr\"]\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("unknown role `mastr`"), "{err}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = parse("[hosts.a]\naddress = \"10.0.0.1\nroles = []\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let err =
            parse("[hosts.a]\naddress = \"1.2.3.4\"\nroles = []\nadress = \"x\"\n").unwrap_err();
        assert!(err.message.contains("adress"), "{err}");
        assert_eq!(err.line, Some(4), "{err}");
    }

    #[test]
    fn bad_port_names_the_line() {
        let err =
            parse("[hosts.a]\naddress = \"1.2.3.4\"\nroles = []\nport = 70000\n").unwrap_err();
        assert_eq!(err.line, Some(4));
        assert!(err.message.contains("70000"));
    }

    #[test]
    fn two_masters_are_refused() {
        let err = parse(
            "[hosts.a]\naddress = \"1.2.3.4\"\nroles = [\"master\"]\n[hosts.b]\naddress = \"1.2.3.5\"\nroles = [\"master\"]\n",
        )
        .unwrap_err();
        assert!(err.message.contains("more than one host has role `master`"));
        assert_eq!(err.line, Some(4));
    }

    #[test]
    fn empty_inventory_accepted() {
        let err = parse("[vars]\nx = 1\n").unwrap_err();
        assert!(err.message.contains("no hosts"), "{err}");
    }

    #[test]
    fn two_hosts_with_the_same_address_and_port_accepted() {
        let err = parse(
            "[hosts.a]\naddress = \"10.0.0.1\"\nroles = []\n[hosts.b]\naddress = \"10.0.0.1\"\nroles = []\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("`a` and `b`"), "{err}");
        // Another port is another sshd (a test rig, a jump host): allowed.
        parse("[hosts.a]\naddress = \"10.0.0.1\"\nroles = []\n[hosts.b]\naddress = \"10.0.0.1\"\nroles = []\nport = 2222\n").unwrap();
    }

    #[test]
    fn reserved_variable_names_silently_shadowed() {
        for name in RESERVED_VARS {
            let err = parse(&format!(
                "[vars]\nok = 1\n{name} = \"x\"\n[hosts.a]\naddress = \"10.0.0.1\"\nroles = []\n"
            ))
            .unwrap_err();
            assert_eq!(err.line, Some(3), "{err}");
            assert!(err.message.contains(&format!("`{name}`")), "{err}");
        }
        let err =
            parse("[hosts.a]\naddress = \"10.0.0.1\"\nroles = []\n[hosts.a.vars]\nfacts = 1\n")
                .unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
    }

    #[test]
    fn pod_or_service_cidr_overlapping_a_host_accepted() {
        let inv = |vars: &str| {
            parse(&format!(
                "[vars]\n{vars}\n[hosts.a]\naddress = \"10.213.7.2\"\nroles = []\n"
            ))
        };
        inv("pod_cidr = \"10.244.0.0/16\"\nservice_cidr = \"10.96.0.0/12\"").unwrap();
        let err = inv("pod_cidr = \"10.0.0.0/8\"\nservice_cidr = \"172.16.0.0/12\"").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("10.213.7.2"), "{err}");
        let err =
            inv("pod_cidr = \"10.244.0.0/16\"\nservice_cidr = \"10.213.0.0/16\"").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        let err = inv("pod_cidr = \"10.96.0.0/16\"\nservice_cidr = \"10.96.0.0/12\"").unwrap_err();
        assert!(err.message.contains("overlaps"), "{err}");
        let err = inv("pod_cidr = \"10.244.0.0\"").unwrap_err();
        assert!(err.message.contains("not a CIDR"), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn invalid_secret_name_has_no_line() {
        let err = parse(
            "[hosts.a]\naddress = \"10.0.0.1\"\nroles = []\n[secrets]\n\"db password\" = \"x\"\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
    }

    #[test]
    fn platform_without_master_or_elk_accepted() {
        let inv = parse("[hosts.w]\naddress = \"10.0.0.1\"\nroles = [\"worker\"]\n").unwrap();
        let err = inv.check_platform_roles().unwrap_err();
        assert!(err.message.contains("`master`"), "{err}");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in ["inventory.toml", "vagrant/inventory.toml"] {
            Inventory::load(&root.join(file))
                .unwrap()
                .check_platform_roles()
                .unwrap();
        }
    }

    #[test]
    fn connect_settings_are_read_and_bounded() {
        let host = "[hosts.a]\naddress = \"1.2.3.4\"\nroles = []\n";
        let inv = parse(&format!(
            "[ssh]\nconnect_timeout = 5\nwait_for_host = 180\n{host}"
        ))
        .unwrap();
        assert_eq!(
            inv.connect,
            ConnectSettings {
                connect_timeout: Some(std::time::Duration::from_secs(5)),
                wait_for_host: Some(std::time::Duration::from_secs(180)),
            }
        );
        assert_eq!(parse(host).unwrap().connect, ConnectSettings::default());
        let err = parse(&format!("[ssh]\nuser = \"a\"\nwait_for_host = -1\n{host}")).unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("wait_for_host"), "{}", err.message);
    }

    #[test]
    fn missing_key_file_is_bad_input() {
        let inv = parse(
            "[ssh]\nkey = \"/nonexistent/id\"\n[hosts.a]\naddress = \"1.2.3.4\"\nroles = []\n",
        )
        .unwrap();
        let err = inv.check_key_files(&inv.hosts, false).unwrap_err();
        assert!(err.message.contains("/nonexistent/id"));
        // `check` may run where the keys are not: it hears of the file, not an error.
        let missing = inv.check_key_files(&inv.hosts, true).unwrap();
        assert_eq!(missing, vec![PathBuf::from("/nonexistent/id")]);
    }

    #[test]
    fn vagrant_lab_inventory_has_the_product_variables_and_secrets() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let product = Inventory::load(&root.join("inventory.toml")).unwrap();
        let lab = Inventory::load(&root.join("vagrant/inventory.toml")).unwrap();
        for key in product.vars.keys() {
            assert!(
                lab.vars.contains_key(key),
                "vagrant/inventory.toml lacks var `{key}`"
            );
        }
        assert_eq!(
            lab.secret_names.keys().collect::<Vec<_>>(),
            product.secret_names.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn shipped_inventory_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventory.toml");
        let inv = Inventory::load(&path).unwrap();
        assert_eq!(inv.hosts_with_role("master").count(), 1);
        assert_eq!(inv.hosts_with_role("worker").count(), 1);
        assert_eq!(inv.hosts_with_role("elk").count(), 1);
    }
}
