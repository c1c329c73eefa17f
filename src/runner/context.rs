//! The variables a host's templates see: inventory vars flat, plus `host`, `hosts`, `groups`,
//! `secrets` and `facts`.

use std::collections::BTreeMap;

use minijinja::Value;
use serde::Serialize;

use crate::inventory::{Host, Inventory, Secrets};

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

pub fn host_context(
    inventory: &Inventory,
    host: &Host,
    secrets: &Secrets,
    facts: &BTreeMap<String, String>,
) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = crate::inventory::ROLES
        .iter()
        .map(|r| (*r, Vec::new()))
        .collect();
    for h in &inventory.hosts {
        for r in &h.roles {
            groups.entry(r.as_str()).or_default().push(&h.name);
        }
    }
    // role -> addresses, for firewall rules and pg_hba lines built from the inventory.
    let role_addresses: BTreeMap<&str, Vec<&str>> = groups
        .iter()
        .map(|(role, names)| {
            let addrs = names
                .iter()
                .filter_map(|n| inventory.host(n))
                .map(|h| h.ssh.address.as_str())
                .collect();
            (*role, addrs)
        })
        .collect();
    let hosts: BTreeMap<&str, HostView> = inventory
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), HostView::of(h)))
        .collect();
    let mut ctx: BTreeMap<String, Value> = host
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::from_serialize(v)))
        .collect();
    ctx.insert("host".into(), Value::from_serialize(HostView::of(host)));
    ctx.insert("hosts".into(), Value::from_serialize(&hosts));
    ctx.insert("groups".into(), Value::from_serialize(&groups));
    ctx.insert(
        "role_addresses".into(),
        Value::from_serialize(&role_addresses),
    );
    ctx.insert(
        "secrets".into(),
        Value::from_serialize(secrets.to_template_value()),
    );
    ctx.insert("facts".into(), Value::from_serialize(facts));
    Value::from_serialize(&ctx)
}
