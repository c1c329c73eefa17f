use std::path::Path;

use super::graph::{Diagram, Edge, Flow, Group, Node, Tone};
use super::layout::{layout, node_size, Layout, Rect};
use super::model::{extract, parse_objects, Platform};
use super::*;
use crate::inventory::{Inventory, Secrets};
use crate::playbook::Playbook;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_text() -> String {
    std::fs::read_to_string(repo().join("inventory.toml")).unwrap()
}

/// The model of an inventory text, with the repository's playbooks and templates.
fn platform_of(inventory_text: &str) -> Platform {
    let inv = Inventory::parse(&repo().join("inventory.toml"), inventory_text).unwrap();
    let playbooks = site_playbooks();
    let secrets = Secrets::placeholders(inv.secret_names.keys());
    let rendered =
        crate::manifests::render_for_master(&inv, &secrets, &repo().join("files")).unwrap();
    extract(&inv, &playbooks, &rendered.files).unwrap()
}

/// Every playbook `bootstrap all` runs (playbooks/site.toml), as the command reads them.
fn site_playbooks() -> Vec<Playbook> {
    let site: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("playbooks/site.toml")).unwrap())
            .unwrap();
    site["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["playbooks"].as_array().unwrap().clone())
        .map(|f| Playbook::load(&repo().join("playbooks").join(f.as_str().unwrap())).unwrap())
        .collect()
}

fn shipped() -> Platform {
    platform_of(&shipped_text())
}

fn var(name: &str) -> String {
    let inv = Inventory::parse(&repo().join("inventory.toml"), &shipped_text()).unwrap();
    inv.vars[name].to_string().trim_matches('"').to_string()
}

#[test]
fn open_ports_come_from_the_rendered_ufw_rules() {
    let p = shipped();
    let worker = p.hosts.iter().find(|h| h.name == "worker").unwrap();
    let fw = worker
        .firewall
        .as_ref()
        .expect("worker.toml has a ufw step");
    assert_eq!(fw.default_incoming, "deny");
    let db = format!("{}/tcp", var("db_port"));
    let postgres = fw
        .open
        .iter()
        .find(|o| o.port == db)
        .expect("postgres port open");
    assert_eq!(postgres.comment, "postgres");
    let master = p.hosts.iter().find(|h| h.name == "master").unwrap();
    assert!(postgres.from.contains(&master.address), "{postgres:?}");
    assert!(postgres.from.contains(&var("pod_cidr")), "{postgres:?}");
    assert!(fw
        .open
        .iter()
        .any(|o| o.port == "22/tcp" && o.comment == "ssh"));
    assert!(fw.open.iter().any(|o| o.port == "30000:32767/tcp"));
    assert_eq!(fw.denied, vec![db]);
    // A host has a firewall on the drawing exactly when a playbook for it has a ufw step: a
    // host without one is drawn as such, not given invented ports.
    let inv = Inventory::parse(&repo().join("inventory.toml"), &shipped_text()).unwrap();
    for h in &p.hosts {
        let has_step = site_playbooks().iter().any(|pb| {
            inv.hosts_with_role(&pb.hosts).any(|x| x.name == h.name)
                && pb.steps.iter().any(|s| s.module == "ufw")
        });
        assert_eq!(h.firewall.is_some(), has_step, "{}", h.name);
    }
}

#[test]
fn objects_come_from_the_rendered_manifests() {
    let p = shipped();
    let get = |kind: &str, name: &str| {
        p.objects
            .iter()
            .find(|o| o.kind == kind && o.name == name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"))
    };
    let app = get("Deployment", "django-app");
    assert_eq!(app.namespace, var("app_namespace"));
    assert_eq!(app.replicas, Some(var("app_replicas").parse().unwrap()));
    assert_eq!(app.config_maps, vec!["crypto-exchange-config"]);
    assert_eq!(app.secrets, vec!["crypto-exchange-secret"]);
    let svc = get("Service", "django-service");
    let http = &svc.service_ports[0];
    assert_eq!((http.port, http.target.as_str()), (80, "http"));
    assert_eq!(app.resolve_target(http), var("app_port"));
    let grafana = get("Service", "grafana-service");
    assert_eq!(
        grafana.service_ports[0].node_port,
        Some(var("grafana_node_port").parse().unwrap())
    );
    assert_eq!(
        get("CronJob", "postgres-daily-backup").pvcs,
        vec!["postgres-backup-pvc"]
    );
    let fb = get("DaemonSet", "fluent-bit");
    assert_eq!(fb.service_account.as_deref(), Some("fluent-bit"));
    assert_eq!(fb.replicas, None);
    let ing = get("Ingress", "crypto-exchange-ingress");
    assert_eq!(ing.rules[0].0, var("domain"));
    // Secrets: key names only; the placeholder values never enter the model.
    let secret = get("Secret", "crypto-exchange-secret");
    assert!(!secret.keys.is_empty());
    assert!(secret.text.is_empty());
}

#[test]
fn a_secret_value_never_reaches_any_page() {
    let p = shipped();
    for n in LAYERS {
        let d = build(&p, n);
        for format in [Format::Svg, Format::Mermaid, Format::Dot] {
            let text = render(&d, format);
            assert!(
                !text.contains("<secret "),
                "layer {n} {format:?} shows a secret"
            );
        }
    }
}

#[test]
fn references_become_coloured_flows() {
    let d = build(&shipped(), 2);
    let flow = |from: &str, to: &str| {
        d.edges
            .iter()
            .find(|e| e.from.contains(from) && e.to.contains(to))
            .map(|e| e.flow)
    };
    assert_eq!(
        flow("deployment_crypto_exchange_django_app", "hostsvc_worker"),
        Some(Flow::Database)
    );
    assert_eq!(
        flow(
            "deployment_monitoring_prometheus",
            "service_crypto_exchange_django"
        ),
        Some(Flow::Metrics)
    );
    assert_eq!(
        flow(
            "deployment_monitoring_grafana",
            "service_monitoring_prometheus"
        ),
        Some(Flow::Metrics)
    );
    assert_eq!(
        // The elk host, or its Elasticsearch port once a playbook opens it in the firewall.
        flow("daemonset_logging_fluent_bit", "_elk"),
        Some(Flow::Logs)
    );
    assert_eq!(flow("user", "ingress_nginx"), Some(Flow::User));
    assert_eq!(flow("actions", "api_server"), Some(Flow::CiCd));
    let scrape = d
        .edges
        .iter()
        .find(|e| e.from.contains("prometheus") && e.to.contains("django_service"))
        .unwrap();
    assert_eq!(scrape.label, format!("metrics :{}", var("metrics_port")));
}

#[test]
fn changing_an_address_or_a_port_in_the_inventory_changes_the_drawing() {
    let before = render(&build(&shipped(), 1), Format::Svg);
    let edited = shipped_text()
        .replace("91.107.171.123", "198.51.100.7")
        .replace("db_port = 5432", "db_port = 6543")
        .replace("grafana_node_port = 30300", "grafana_node_port = 31999");
    let p = platform_of(&edited);
    for n in LAYERS {
        let page = render(&build(&p, n), Format::Svg);
        assert!(page.contains("198.51.100.7"), "layer {n}");
        assert!(!page.contains("91.107.171.123"), "layer {n}");
    }
    let after = render(&build(&p, 1), Format::Svg);
    assert!(before.contains("5432/tcp") && before.contains(":30300"));
    assert!(
        after.contains("6543/tcp") && after.contains("SQL :6543"),
        "{after}"
    );
    assert!(after.contains(":31999") && !after.contains(":30300"));
}

#[test]
fn a_manifest_that_is_not_yaml_names_its_file() {
    let err = parse_objects(Path::new("logging/x.yaml"), "kind: [unclosed\n").unwrap_err();
    assert!(err.to_string().contains("logging/x.yaml"), "{err}");
}

/// Every box, group, label, legend and title pairwise disjoint (a box only inside its group).
fn assert_no_overlap(d: &Diagram, l: &Layout) {
    let mut items: Vec<(String, Rect)> = Vec::new();
    for (g, r) in d.groups.iter().zip(&l.groups) {
        items.push((format!("group {}", g.id), *r));
    }
    for e in &l.edges {
        items.push((format!("label {:?}", d.edges[e.edge].label), e.label));
    }
    items.push(("legend".into(), l.legend));
    items.push(("title".into(), l.title));
    for (i, (a, ra)) in items.iter().enumerate() {
        for (b, rb) in &items[i + 1..] {
            assert!(!ra.overlaps(rb), "{a} overlaps {b}: {ra:?} {rb:?}");
        }
    }
    for (i, n) in l.nodes.iter().enumerate() {
        assert!(
            l.groups[n.group].contains(&n.rect),
            "{} outside its group",
            n.id
        );
        for m in &l.nodes[i + 1..] {
            assert!(!n.rect.overlaps(&m.rect), "{} overlaps {}", n.id, m.id);
        }
        for e in &l.edges {
            assert!(!n.rect.overlaps(&e.label), "{} under a label", n.id);
        }
        // Text not cut: the box is at least as wide and tall as its lines need.
        let lines = &d.groups[n.group]
            .nodes
            .iter()
            .find(|x| x.id == n.id)
            .unwrap()
            .lines;
        let (w, h) = node_size(lines);
        assert!(n.rect.w >= w && n.rect.h >= h, "{} too small", n.id);
    }
    assert!(l
        .nodes
        .iter()
        .all(|n| n.rect.right() <= l.width && n.rect.bottom() <= l.height));
}

#[test]
fn no_boxes_or_labels_overlap_on_any_layer_of_the_shipped_inventory() {
    let p = shipped();
    for n in LAYERS {
        let d = build(&p, n);
        assert!(d.edges.len() > 5, "layer {n} has arrows");
        assert_no_overlap(&d, &layout(&d));
    }
}

#[test]
fn labels_crowding_one_gap_are_stacked_without_overlap() {
    let node = |id: &str, lines: usize| Node {
        id: id.into(),
        lines: (0..lines)
            .map(|i| format!("{id} line {i} with some text"))
            .collect(),
        tone: Tone::App,
    };
    let mut d = Diagram {
        title: "stress".into(),
        groups: vec![
            Group {
                id: "a".into(),
                title: "a".into(),
                tone: Tone::App,
                column: 0,
                nodes: vec![node("a1", 1), node("a2", 6)],
            },
            Group {
                id: "b".into(),
                title: "b".into(),
                tone: Tone::Data,
                column: 1,
                nodes: vec![node("b1", 1)],
            },
            Group {
                id: "c".into(),
                title: "c".into(),
                tone: Tone::Data,
                column: 1,
                nodes: vec![node("c1", 2), node("c2", 1)],
            },
        ],
        edges: Vec::new(),
    };
    for i in 0..30 {
        let (from, to) = [("a1", "b1"), ("c2", "a2"), ("b1", "c1"), ("a1", "a2")][i % 4];
        d.edges.push(Edge {
            from: from.into(),
            to: to.into(),
            label: format!("label number {i}"),
            flow: Flow::User,
        });
    }
    assert_no_overlap(&d, &layout(&d));
}

#[test]
fn mermaid_and_dot_of_the_shipped_inventory() {
    let p = shipped();
    for n in LAYERS {
        let d = build(&p, n);
        insta::assert_snapshot!(format!("layer{n}_mermaid"), render(&d, Format::Mermaid));
        insta::assert_snapshot!(format!("layer{n}_dot"), render(&d, Format::Dot));
    }
}

#[test]
fn all_layers_need_a_directory_or_a_pattern() {
    assert!(destinations(None, Format::Svg, None).is_err());
    assert_eq!(destinations(None, Format::Dot, None).unwrap().len(), 3);
    let pages = destinations(None, Format::Svg, Some(Path::new("out/page-{layer}.svg"))).unwrap();
    assert_eq!(pages[2].1.as_deref(), Some(Path::new("out/page-3.svg")));
    let dir = tempfile::tempdir().unwrap();
    let pages = destinations(None, Format::Mermaid, Some(dir.path())).unwrap();
    assert_eq!(pages[0].1, Some(dir.path().join("architecture-layer1.mmd")));
    assert!(destinations(None, Format::Svg, Some(Path::new("one.svg"))).is_err());
    assert_eq!(
        destinations(Some(2), Format::Svg, None).unwrap(),
        vec![(2, None)]
    );
}

#[test]
fn the_committed_layer1_picture_is_what_the_binary_draws() {
    let committed = std::fs::read_to_string(repo().join("docs/architecture-layer1.svg")).unwrap();
    let drawn = render(&build(&shipped(), 1), Format::Svg);
    assert!(
        committed == drawn,
        "docs/architecture-layer1.svg is stale: bootstrap diagram --layer 1 -o docs/architecture-layer1.svg"
    );
}
