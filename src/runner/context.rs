//! The variables a host's templates see: inventory vars flat, plus `host`, `hosts`, `groups`,
//! `secrets`, `facts` and `registered` (values kept by `register` steps, per host).

use std::collections::BTreeMap;
use std::sync::Mutex;

use minijinja::Value;
use serde::Serialize;

use crate::inventory::{Host, Inventory, Secrets, SharedView};

#[derive(Serialize)]
struct HostView<'a> {
    name: &'a str,
    address: &'a str,
    port: u16,
    user: &'a str,
    roles: &'a [String],
}

impl<'a> HostView<'a> {
    fn of(h: &'a Host) -> Self {
        HostView {
            name: &h.name,
            address: &h.ssh.address,
            port: h.ssh.port,
            user: &h.ssh.user,
            roles: &h.roles,
        }
    }
}

/// host name -> register name -> value.
pub type RegisteredValues = BTreeMap<String, BTreeMap<String, String>>;

/// The values `register` steps kept during a run, shared by every host's plays: a value made
/// on one host (a join command minted on the master) is read by a later step on another.
#[derive(Debug, Default)]
pub struct Registry {
    values: Mutex<RegisteredValues>,
}

impl Registry {
    pub fn set(&self, host: &str, name: &str, value: String) {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(host.to_string())
            .or_default()
            .insert(name.to_string(), value);
    }

    pub fn snapshot(&self) -> RegisteredValues {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The host a `delegate_to` names: a host of that name, else the one host of that role.
pub fn resolve_delegate<'a>(inventory: &'a Inventory, target: &str) -> Result<&'a Host, String> {
    if let Some(h) = inventory.host(target) {
        return Ok(h);
    }
    let with_role: Vec<&Host> = inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(target))
        .collect();
    match with_role.as_slice() {
        [one] if target != "all" => Ok(one),
        [] => Err(format!(
            "delegate_to = \"{target}\" names no host and no role with a host"
        )),
        many => Err(format!(
            "delegate_to = \"{target}\" is a role with {} hosts; it must name exactly one",
            many.len()
        )),
    }
}

pub fn host_context(
    inventory: &Inventory,
    host: &Host,
    secrets: &Secrets,
    facts: &BTreeMap<String, String>,
) -> Value {
    host_context_with(inventory, host, secrets, facts, &RegisteredValues::new())
}

pub fn host_context_with(
    inventory: &Inventory,
    host: &Host,
    secrets: &Secrets,
    facts: &BTreeMap<String, String>,
    registered: &RegisteredValues,
) -> Value {
    let shared = inventory
        .template_view
        .get_or_init(|| shared_view(inventory));
    let mut ctx: BTreeMap<String, Value> = host
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::from_serialize(v)))
        .collect();
    ctx.insert("host".into(), Value::from_serialize(HostView::of(host)));
    ctx.insert("hosts".into(), shared.hosts.clone());
    ctx.insert("groups".into(), shared.groups.clone());
    ctx.insert("role_addresses".into(), shared.role_addresses.clone());
    ctx.insert(
        "secrets".into(),
        Value::from_serialize(secrets.to_template_value()),
    );
    ctx.insert("facts".into(), Value::from_serialize(facts));
    ctx.insert("registered".into(), Value::from_serialize(registered));
    Value::from(ctx)
}

/// The part of every host's context that is the same for all hosts, built once per inventory:
/// built per host it made a 5,000-host check quadratic (and cubic with the name look-ups).
fn shared_view(inventory: &Inventory) -> SharedView {
    let mut groups: BTreeMap<&str, Vec<&str>> = crate::inventory::ROLES
        .iter()
        .map(|r| (*r, Vec::new()))
        .collect();
    // role -> addresses, for firewall rules and pg_hba lines built from the inventory.
    let mut role_addresses: BTreeMap<&str, Vec<&str>> =
        groups.keys().map(|r| (*r, Vec::new())).collect();
    for h in &inventory.hosts {
        for r in &h.roles {
            groups.entry(r.as_str()).or_default().push(&h.name);
            role_addresses
                .entry(r.as_str())
                .or_default()
                .push(&h.ssh.address);
        }
    }
    let hosts: BTreeMap<&str, HostView> = inventory
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), HostView::of(h)))
        .collect();
    SharedView {
        hosts: Value::from_serialize(&hosts),
        groups: Value::from_serialize(&groups),
        role_addresses: Value::from_serialize(&role_addresses),
    }
}
