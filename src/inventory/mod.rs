//! `inventory.toml` -> typed hosts, roles and variables, validated with file:line errors.
//!
//! Nothing here knows a particular host or IP: the shipped inventory.toml holds those.

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

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    /// Hosts in name order.
    pub hosts: Vec<Host>,
    /// Global variables (`[vars]`).
    pub vars: toml::Table,
    /// Declared secret names with their descriptions (`[secrets]`).
    pub secret_names: BTreeMap<String, String>,
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            InputError::new(path, None, format!("cannot read inventory: {e}"))
                .hint("pass the inventory with -i FILE (default: inventory.toml)")
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Inventory, InputError> {
        let raw: RawInventory = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let line_at = |offset: usize| InputError::line_of(text, offset);

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
            validate_name(path, None, name)?;
        }

        Ok(Inventory {
            path: path.to_path_buf(),
            hosts,
            vars: raw.vars,
            secret_names: raw.secrets,
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

    /// Key files must exist before we connect anywhere; checked only by commands that connect,
    /// so `check` works on a machine without the keys.
    pub fn check_key_files<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a Host>,
    ) -> Result<(), InputError> {
        for host in hosts {
            if let Some(key) = &host.ssh.key_file {
                if !key.exists() {
                    return Err(InputError::new(
                        &self.path,
                        Some(host.line),
                        format!(
                            "host `{}`: key file {} does not exist",
                            host.name,
                            key.display()
                        ),
                    )
                    .hint("set `key` to a private key file, or remove it to use ssh-agent"));
                }
            }
        }
        Ok(())
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Hosts with `role` (or every host for "all"), in name order.
    pub fn hosts_with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Host> + 'a {
        self.hosts.iter().filter(move |h| h.has_role(role))
    }
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
    fn missing_key_file_is_bad_input() {
        let inv = parse(
            "[ssh]\nkey = \"/nonexistent/id\"\n[hosts.a]\naddress = \"1.2.3.4\"\nroles = []\n",
        )
        .unwrap();
        let err = inv.check_key_files(&inv.hosts).unwrap_err();
        assert!(err.message.contains("/nonexistent/id"));
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
