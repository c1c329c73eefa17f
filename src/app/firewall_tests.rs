//! The hosts' firewalls as the playbooks render them from the shipped inventory (and from it
//! with single values changed): who reaches the API, the kubelet, the pod network, Kibana and
//! the NodePorts (issue 18).

use super::kubernetes_tests::{debian12, inventory_with, render_step, root, shipped};
use super::*;
use crate::modules::nodeport_filter::NodeportFilter;
use crate::modules::ufw::Ufw;
use std::path::Path;

const MASTER_FW: &str = "firewall: the API from admin_allowed";
const WORKER_FW: &str = "firewall: 5432 only from";
const ELK_FW: &str = "firewall: SSH, 9200";
const NODEPORTS: &str = "NodePorts:";

fn ctx_build<T>(
    args: &toml::Value,
    f: impl FnOnce(&toml::Value, &crate::modules::BuildContext<'_>) -> Result<T, InputError>,
) -> T {
    let no_template = |_: &str| Ok(String::new());
    let ctx = crate::modules::BuildContext {
        playbook: Path::new("playbooks/test.toml"),
        line: None,
        files_dir: &root().join("files"),
        render_template: &no_template,
        local_dir: std::env::temp_dir(),
    };
    f(args, &ctx).unwrap_or_else(|e| panic!("{e}"))
}

/// The ufw rules of a host's firewall step as `port/proto from src (comment)` lines.
fn ufw_rules(inventory: &Inventory, host: &str, playbook: &str, step: &str) -> Vec<String> {
    let none = runner::context::RegisteredValues::new();
    let args = render_step(inventory, host, playbook, step, &debian12(), &none).unwrap();
    let ufw = ctx_build(&args, Ufw::from_args);
    ufw.rules
        .iter()
        .map(|r| {
            let k = &r.key;
            let route = if k.route { "route " } else { "" };
            format!(
                "{route}{} {}/{} from {} to {} ({})",
                k.action, k.dport, k.proto, k.src, k.dst, r.comment
            )
        })
        .collect()
}

fn nodeport_rules(inventory: &Inventory, host: &str) -> String {
    let none = runner::context::RegisteredValues::new();
    let args = render_step(inventory, host, "node.toml", NODEPORTS, &debian12(), &none).unwrap();
    ctx_build(&args, NodeportFilter::from_args).rules_file()
}

fn addr(inventory: &Inventory, host: &str) -> String {
    inventory.host(host).unwrap().ssh.address.clone()
}

/// The rules that contain `needle`.
fn with(rules: &[String], needle: &str) -> Vec<String> {
    rules
        .iter()
        .filter(|r| r.contains(needle))
        .cloned()
        .collect()
}

#[test]
fn the_master_had_no_firewall_and_now_admits_the_api_only_from_admins_nodes_and_pods() {
    let inv = shipped();
    let (master, worker) = (addr(&inv, "master"), addr(&inv, "worker"));
    let rules = ufw_rules(&inv, "master", "master.toml", MASTER_FW);
    let api = with(&rules, "kubernetes api");
    // admin_allowed is empty in the shipped inventory: the nodes and pods only.
    assert_eq!(
        api,
        [
            format!("allow 6443/tcp from {master} to any (bootstrap: kubernetes api)"),
            format!("allow 6443/tcp from {worker} to any (bootstrap: kubernetes api)"),
            "allow 6443/tcp from 10.244.0.0/16 to any (bootstrap: kubernetes api)".to_string(),
        ]
    );
    assert_eq!(
        with(&rules, "10250/").len(),
        2,
        "the kubelet from the two nodes"
    );
    // etcd and the other control-plane ports: no rule, so the default deny.
    assert!(with(&rules, "2379").is_empty() && with(&rules, "2380").is_empty());
    assert!(rules.contains(
        &"route allow any/any from 10.244.0.0/16 to any (bootstrap: pods out)".to_string()
    ));
    assert!(rules.contains(
        &"route allow any/any from any to 10.244.0.0/16 (bootstrap: pods in)".to_string()
    ));
    // The firewall comes before kubeadm init.
    let pb = Playbook::load(&root().join("playbooks/master.toml")).unwrap();
    let at = |s: &str| {
        pb.steps
            .iter()
            .position(|st| st.name.starts_with(s))
            .unwrap()
    };
    assert!(at(MASTER_FW) < at("kubeadm init"));
}

#[test]
fn admin_allowed_opens_the_api_kibana_grafana_and_nodeports_and_ingress_allowed_the_ingress() {
    let (inv, _dir) = inventory_with(&[
        ("admin_allowed", "[\"203.0.113.7\"]"),
        ("ingress_allowed", "[\"198.51.100.0/24\"]"),
    ]);
    let admin = "from 203.0.113.7 to any";
    let master = ufw_rules(&inv, "master", "master.toml", MASTER_FW);
    assert_eq!(with(&with(&master, admin), "6443/tcp").len(), 1);
    for (host, pb, step) in [
        ("master", "master.toml", MASTER_FW),
        ("worker", "worker.toml", WORKER_FW),
    ] {
        let rules = ufw_rules(&inv, host, pb, step);
        assert_eq!(
            with(&rules, "ingress"),
            [
                "allow 30080/tcp from 198.51.100.0/24 to any (bootstrap: ingress http nodeport)",
                "allow 30443/tcp from 198.51.100.0/24 to any (bootstrap: ingress https nodeport)",
            ],
            "{host}"
        );
        assert_eq!(
            with(&with(&rules, admin), "30000:32767/tcp").len(),
            1,
            "{host}"
        );
        // The filter that decides for DNAT'ed NodePorts says the same.
        let filter = nodeport_rules(&inv, host);
        assert!(filter.contains("-s 203.0.113.7/32 -j RETURN\n"), "{filter}");
        assert!(
            filter.contains("-s 198.51.100.0/24 -p tcp -m tcp --dport 30080 -j RETURN\n"),
            "{filter}"
        );
        assert!(filter.contains("-s 10.244.0.0/16 -j RETURN\n"), "{filter}");
        assert!(filter.contains("--dport 30000:32767 -j DROP\n"), "{filter}");
    }
    let elk = ufw_rules(&inv, "elk", "elk.toml", ELK_FW);
    assert_eq!(with(&with(&elk, admin), "5601/tcp").len(), 1);
}

#[test]
fn the_shipped_nodeports_open_to_anyone_only_the_ingress_ones() {
    let inv = shipped();
    let worker = ufw_rules(&inv, "worker", "worker.toml", WORKER_FW);
    // Was `allow 30000:32767/tcp from any`.
    assert!(
        with(&with(&worker, "30000:32767"), "from any ").is_empty(),
        "{worker:#?}"
    );
    assert_eq!(with(&with(&worker, "from any "), "nodeport").len(), 2);
    let filter = nodeport_rules(&inv, "worker");
    assert!(filter.contains("-A BOOTSTRAP-NODEPORTS -p tcp -m tcp --dport 30080 -j RETURN\n"));
    assert!(filter.contains("-A BOOTSTRAP-NODEPORTS -p tcp -m tcp --dport 30443 -j RETURN\n"));
    let kibana = with(&ufw_rules(&inv, "elk", "elk.toml", ELK_FW), "5601/tcp")
        .iter()
        .map(|r| r.split(" from ").nth(1).unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(
        kibana,
        [
            format!("{} to any (bootstrap: kibana)", addr(&inv, "master")),
            format!("{} to any (bootstrap: kibana)", addr(&inv, "worker")),
        ],
        "Kibana was open to any"
    );
}

#[test]
fn the_pod_network_rules_follow_calico_encapsulation() {
    for (encapsulation, everything, vxlan) in [("ipip", 1, 0), ("vxlan", 0, 1)] {
        let (inv, _dir) =
            inventory_with(&[("calico_encapsulation", &format!("\"{encapsulation}\""))]);
        let worker = addr(&inv, "worker");
        for (host, pb, step) in [
            ("master", "master.toml", MASTER_FW),
            ("worker", "worker.toml", WORKER_FW),
        ] {
            let rules = ufw_rules(&inv, host, pb, step);
            let from_worker = with(&rules, &format!("from {worker} "));
            assert_eq!(
                with(&from_worker, "any/any").len(),
                everything,
                "{encapsulation} on {host}: everything from the nodes (IP-in-IP, BGP)\n{rules:#?}"
            );
            assert_eq!(
                with(&from_worker, "4789/udp").len(),
                vxlan,
                "{encapsulation} on {host}: VXLAN\n{rules:#?}"
            );
        }
    }
}
