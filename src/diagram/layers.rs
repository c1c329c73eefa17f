//! The three pages of seeds/000 built from the platform model: 1 servers, 2 namespaces and
//! services, 3 pods and what they read.

use super::graph::{id, Diagram, Flow, Group, Node, Tone};
use super::model::{HostInfo, Object, Platform};
use super::refs::{flow_between, host_services, targets, tone_of, Target, API_DNS};

fn node(id: String, tone: Tone, lines: Vec<String>) -> Node {
    Node { id, lines, tone }
}

fn is_cluster(h: &HostInfo) -> bool {
    h.roles.iter().any(|r| r == "master" || r == "worker")
}

fn obj_id(o: &Object) -> String {
    id(&["obj", &o.kind, &o.namespace, &o.name])
}

fn obj_tone(o: &Object) -> Tone {
    tone_of(&format!("{} {}", o.namespace, o.name))
}

fn host_id(h: &HostInfo) -> String {
    id(&["host", &h.name])
}

fn service_node_id(h: &HostInfo, port: u16) -> String {
    id(&["hostsvc", &h.name, &port.to_string()])
}

fn api_id() -> String {
    "api_server".to_string()
}

fn master(p: &Platform) -> Option<&HostInfo> {
    p.hosts
        .iter()
        .find(|h| h.roles.iter().any(|r| r == "master"))
}

fn first_worker(p: &Platform) -> Option<&HostInfo> {
    p.hosts
        .iter()
        .find(|h| h.roles.iter().any(|r| r == "worker"))
}

fn api_lines(p: &Platform) -> Option<Vec<String>> {
    let m = master(p)?;
    let port = p.api_port.map_or(String::new(), |n| format!(":{n}"));
    Some(vec![
        "kube-apiserver".into(),
        format!("https://{}{port}", m.address),
        format!("in pods: {API_DNS}"),
    ])
}

/// A host's box: address, roles and what its firewall lets in.
fn host_lines(h: &HostInfo, p: &Platform) -> Vec<String> {
    let mut lines = vec![
        format!("{} ({})", h.name, h.roles.join(", ")),
        h.address.clone(),
    ];
    match &h.firewall {
        None => lines.push("firewall: no ufw step in the playbooks".into()),
        Some(fw) => {
            lines.push(format!("ufw: incoming {} by default", fw.default_incoming));
            for open in &fw.open {
                let from: Vec<String> = open
                    .from
                    .iter()
                    .map(|a| {
                        p.hosts
                            .iter()
                            .find(|h| &h.address == a)
                            .map_or(a.clone(), |h| h.name.clone())
                    })
                    .collect();
                let what = if open.comment.is_empty() {
                    String::new()
                } else {
                    format!(" {}", open.comment)
                };
                lines.push(format!("open {}{what}", open.port));
                for chunk in wrap(&from, 40) {
                    lines.push(format!("· from {chunk}"));
                }
            }
            for port in &fw.denied {
                lines.push(format!("deny {port} from the rest"));
            }
        }
    }
    lines
}

/// Joins items with ", " into lines of at most `width` characters (one item may be longer).
pub fn wrap(items: &[String], width: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        match out.last_mut() {
            Some(line) if line.len() + 2 + item.len() <= width => {
                line.push_str(", ");
                line.push_str(item);
            }
            _ => out.push(item.clone()),
        }
    }
    out
}

fn workloads(p: &Platform) -> impl Iterator<Item = &Object> {
    p.objects.iter().filter(|o| o.is_workload())
}

fn workload_summary(o: &Object) -> String {
    match (o.kind.as_str(), o.replicas) {
        ("DaemonSet", _) => format!("{} (one per node)", o.name),
        ("CronJob", _) => format!("{} (cron {})", o.name, o.schedule.as_deref().unwrap_or("")),
        (_, Some(n)) => format!("{} x{n}", o.name),
        _ => o.name.clone(),
    }
}

/// NodePort services: (object, node ports).
fn node_ports(p: &Platform) -> Vec<(&Object, Vec<u16>)> {
    p.objects
        .iter()
        .filter(|o| o.kind == "Service")
        .filter_map(|o| {
            let ports: Vec<u16> = o
                .service_ports
                .iter()
                .filter_map(|sp| sp.node_port)
                .collect();
            (!ports.is_empty()).then_some((o, ports))
        })
        .collect()
}

fn ports_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|n| format!(":{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Host services (firewall ports with a name) as boxes, e.g. `postgres` on the worker.
fn host_service_nodes(h: &HostInfo) -> Vec<Node> {
    host_services(h)
        .into_iter()
        .filter_map(|o| {
            let n = o.number?;
            Some(node(
                service_node_id(h, n),
                tone_of(&o.comment),
                vec![
                    o.comment.clone(),
                    format!("{}:{n} on {}", h.address, h.name),
                ],
            ))
        })
        .collect()
}

fn outside_groups(d: &mut Diagram, p: &Platform, column: usize) {
    d.groups.push(Group {
        id: "people".into(),
        title: "people".into(),
        tone: Tone::External,
        column,
        nodes: vec![
            node(
                "user".into(),
                Tone::UserFacing,
                vec!["user (browser)".into()],
            ),
            node("admin".into(), Tone::UserFacing, vec!["admin".into()]),
        ],
    });
    let images: Vec<String> = workloads(p)
        .filter(|o| obj_tone(o) == Tone::App && o.kind == "Deployment")
        .flat_map(|o| o.images.clone())
        .collect();
    let mut registry = vec!["image registry".into()];
    registry.extend(images);
    d.groups.push(Group {
        id: "cicd".into(),
        title: "CI/CD".into(),
        tone: Tone::CiCd,
        column,
        nodes: vec![
            node(
                "github".into(),
                Tone::CiCd,
                vec!["GitHub repository".into(), "push to main".into()],
            ),
            node(
                "actions".into(),
                Tone::CiCd,
                vec![
                    "GitHub Actions".into(),
                    "build, push, kubectl set image".into(),
                ],
            ),
            node("registry".into(), Tone::CiCd, registry),
        ],
    });
}

fn user_edges(d: &mut Diagram, p: &Platform, to: impl Fn(&Object) -> String) {
    for (svc, ports) in node_ports(p) {
        let who = if obj_tone(svc) == Tone::UserFacing {
            "user"
        } else {
            "admin"
        };
        d.connect(
            who,
            &to(svc),
            format!("HTTP {}", ports_text(&ports)),
            Flow::User,
        );
    }
    for h in &p.hosts {
        for o in host_services(h) {
            if o.from.iter().any(|a| a == "any") {
                if let Some(n) = o.number {
                    d.connect(
                        "admin",
                        &service_node_id(h, n),
                        format!("HTTP :{n}"),
                        Flow::User,
                    );
                }
            }
        }
    }
}

fn cicd_edges(d: &mut Diagram, p: &Platform, deploy_to: impl Fn(&Object) -> String, pull_to: &str) {
    d.connect("github", "actions", "on push: build", Flow::CiCd);
    d.connect("actions", "registry", "push image", Flow::CiCd);
    let port = p.api_port.map_or(String::new(), |n| format!(" :{n}"));
    d.connect(
        "actions",
        &api_id(),
        format!("kubectl set image{port}"),
        Flow::CiCd,
    );
    for role in p
        .objects
        .iter()
        .filter(|o| o.kind == "Role" && obj_tone(o) == Tone::CiCd)
    {
        for name in &role.resource_names {
            if let Some(w) = workloads(p).find(|w| &w.name == name && w.namespace == role.namespace)
            {
                d.connect("actions", &deploy_to(w), "rollout (deployer)", Flow::CiCd);
            }
        }
    }
    d.connect("registry", pull_to, "pull image", Flow::CiCd);
}

/// Arrows from a workload to what its configuration names.
fn reference_edges(
    d: &mut Diagram,
    p: &Platform,
    w: &Object,
    from: &str,
    service_to: impl Fn(&Object) -> String,
    host_to: impl Fn(&HostInfo) -> String,
) {
    let tone = obj_tone(w);
    for t in targets(p, w) {
        match t {
            Target::Service(svc, port) => {
                let sp = match port {
                    Some(n) => svc.service_ports.iter().find(|s| s.port == n),
                    None => svc.service_ports.first(),
                };
                // The port's name says the protocol (`http`, `metrics`, `web`).
                let label = match (sp, port) {
                    (Some(sp), _) if !sp.name.is_empty() => format!("{} :{}", sp.name, sp.port),
                    (Some(sp), _) => format!(":{}", sp.port),
                    (None, Some(n)) => format!(":{n}"),
                    (None, None) => String::new(),
                };
                d.connect(
                    from,
                    &service_to(svc),
                    label,
                    flow_between(tone, obj_tone(svc)),
                );
            }
            Target::Api => {
                let flow = if tone == Tone::Monitoring {
                    Flow::Metrics
                } else {
                    Flow::Control
                };
                let port = p.api_port.map_or(String::new(), |n| format!(" :{n}"));
                d.connect(from, &api_id(), format!("API{port}"), flow);
            }
            Target::Host(h, Some(open)) => {
                let n = open.number.unwrap_or(0);
                let to_tone = tone_of(&open.comment);
                let proto = if to_tone == Tone::Data { "SQL" } else { "TCP" };
                d.connect(
                    from,
                    &service_node_id(h, n),
                    format!("{proto} :{n}"),
                    flow_between(tone, to_tone),
                );
            }
            Target::Host(h, None) => {
                let label = format!("to {} {}", h.name, h.address);
                d.connect(from, &host_to(h), label, flow_between(tone, tone));
            }
        }
    }
}

/// Layer 1: the servers with their addresses and open ports, and who reaches them.
pub fn layer1(p: &Platform) -> Diagram {
    let mut d = Diagram {
        title: "Layer 1: servers, addresses, open ports and flows".into(),
        ..Diagram::default()
    };
    outside_groups(&mut d, p, 0);
    let pods_host = first_worker(p).map(|h| h.name.clone());
    for h in &p.hosts {
        let mut nodes = vec![node(host_id(h), Tone::Server, host_lines(h, p))];
        if h.roles.iter().any(|r| r == "master") {
            if let Some(lines) = api_lines(p) {
                nodes.push(node(api_id(), Tone::App, lines));
            }
        }
        if pods_host.as_deref() == Some(h.name.as_str()) {
            let mut lines = vec!["cluster workloads (pods)".to_string()];
            lines.extend(workloads(p).map(workload_summary));
            for (svc, ports) in node_ports(p) {
                lines.push(format!("NodePort {} {}", ports_text(&ports), svc.name));
            }
            nodes.push(node("pods".into(), Tone::App, lines));
        }
        nodes.extend(host_service_nodes(h));
        d.groups.push(Group {
            id: id(&["server", &h.name]),
            title: format!("server {}", h.name),
            tone: Tone::Server,
            column: if is_cluster(h) { 1 } else { 2 },
            nodes,
        });
    }
    user_edges(&mut d, p, |_| "pods".into());
    cicd_edges(&mut d, p, |_| "pods".into(), "pods");
    for w in workloads(p) {
        if w.kind == "DaemonSet" {
            for h in p.hosts.iter().filter(|h| is_cluster(h)) {
                reference_edges(&mut d, p, w, &host_id(h), |_| "pods".into(), host_id);
            }
        } else {
            reference_edges(&mut d, p, w, "pods", |_| "pods".into(), host_id);
        }
    }
    d
}

/// The namespaces, in the order a request travels: user-facing, application, then the rest.
fn namespaces(p: &Platform) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for o in &p.objects {
        let ns = if o.kind == "Namespace" {
            &o.name
        } else {
            &o.namespace
        };
        if !ns.is_empty() && !names.contains(ns) {
            names.push(ns.clone());
        }
    }
    names.sort_by_key(|n| tone_of(n));
    names
}

fn service_lines(o: &Object, p: &Platform, dns: bool) -> Vec<String> {
    let mut lines = vec![
        format!("Service {}", o.name),
        o.service_type.clone().unwrap_or_else(|| "ClusterIP".into()),
    ];
    if dns {
        lines.push(format!("{}.{}.svc", o.name, o.namespace));
    }
    let backend = workloads(p).find(|w| selects(o, w));
    for sp in &o.service_ports {
        let target = backend.map_or(sp.target.clone(), |w| w.resolve_target(sp));
        let node = sp
            .node_port
            .map_or(String::new(), |n| format!(" nodePort {n}"));
        let name = if sp.name.is_empty() {
            String::new()
        } else {
            format!(" {}", sp.name)
        };
        lines.push(format!("{}->{target}{name}{node}", sp.port));
    }
    lines
}

fn selects(svc: &Object, w: &Object) -> bool {
    !svc.selector.is_empty()
        && svc.namespace == w.namespace
        && w.is_workload()
        && svc.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
}

fn upstream_id(svc: &Object) -> String {
    id(&["upstream", &svc.namespace, &svc.name])
}

/// The cluster's objects drawn per namespace; `detail` adds layer 3's pods and addresses.
fn namespace_groups(d: &mut Diagram, p: &Platform, column: usize, detail: bool) {
    for ns in namespaces(p) {
        let mut nodes = Vec::new();
        let mut objects: Vec<&Object> = p.objects.iter().filter(|o| o.namespace == ns).collect();
        // In the order a request travels.
        objects.sort_by_key(|o| {
            [
                "Ingress",
                "Service",
                "Deployment",
                "StatefulSet",
                "DaemonSet",
                "CronJob",
                "Job",
            ]
            .iter()
            .position(|k| *k == o.kind)
            .unwrap_or(9)
        });
        for o in objects {
            match o.kind.as_str() {
                "Ingress" => {
                    let mut lines = vec![format!("Ingress {}", o.name)];
                    for (host, path, svc, port) in &o.rules {
                        lines.push(format!("{host}{path} -> {svc}:{port}"));
                    }
                    nodes.push(node(obj_id(o), Tone::UserFacing, lines));
                }
                "Service" => {
                    nodes.push(node(obj_id(o), obj_tone(o), service_lines(o, p, detail)));
                    if !workloads(p).any(|w| selects(o, w)) && !o.selector.is_empty() {
                        let sel: Vec<String> =
                            o.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        let mut lines = vec![format!("{ns} controller pods")];
                        lines.push("(upstream release manifest)".into());
                        lines.extend(wrap(&sel, 44));
                        nodes.push(node(upstream_id(o), obj_tone(o), lines));
                    }
                }
                _ if o.is_workload() => {
                    if detail && o.kind == "DaemonSet" {
                        for h in p.hosts.iter().filter(|h| is_cluster(h)) {
                            let mut lines = vec![format!("pod {} on {}", o.name, h.name)];
                            lines.push(format!("node {}", h.address));
                            lines.extend(pod_detail(o));
                            nodes.push(node(id(&[&obj_id(o), &h.name]), obj_tone(o), lines));
                        }
                        continue;
                    }
                    let mut lines = vec![format!("{} {}", o.kind, workload_summary(o))];
                    if detail {
                        lines.extend(pod_detail(o));
                    }
                    nodes.push(node(obj_id(o), obj_tone(o), lines));
                }
                _ => {}
            }
        }
        if !nodes.is_empty() {
            d.groups.push(Group {
                id: id(&["ns", &ns]),
                title: format!("namespace {ns}"),
                tone: tone_of(&ns),
                column,
                nodes,
            });
        }
    }
}

fn pod_detail(o: &Object) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(n) = o.replicas {
        lines.push(format!("{n} pod(s)"));
    }
    for image in &o.images {
        lines.push(format!("image {image}"));
    }
    if !o.container_ports.is_empty() {
        let ports: Vec<String> = o
            .container_ports
            .iter()
            .map(|(name, n)| {
                if name.is_empty() {
                    n.to_string()
                } else {
                    format!("{name} {n}")
                }
            })
            .collect();
        lines.push(format!("ports {}", ports.join(", ")));
    }
    for path in &o.host_paths {
        lines.push(format!("hostPath {path}"));
    }
    lines
}

/// The objects' nodes in a namespace group, by object (DaemonSets: one box per node).
fn workload_node_ids(d: &Diagram, w: &Object) -> Vec<String> {
    let base = obj_id(w);
    d.groups
        .iter()
        .flat_map(|g| &g.nodes)
        .filter(|n| n.id == base || n.id.starts_with(&format!("{base}_")))
        .map(|n| n.id.clone())
        .collect()
}

fn externals_group(d: &mut Diagram, p: &Platform, column: usize) {
    let mut nodes = Vec::new();
    if let Some(lines) = api_lines(p) {
        nodes.push(node(api_id(), Tone::External, lines));
    }
    for h in &p.hosts {
        let services = host_service_nodes(h);
        if services.is_empty() && !is_cluster(h) {
            nodes.push(node(
                host_id(h),
                Tone::External,
                vec![h.name.clone(), h.address.clone()],
            ));
        }
        nodes.extend(services);
    }
    d.groups.push(Group {
        id: "external".into(),
        title: "outside the cluster (on the servers)".into(),
        tone: Tone::External,
        column,
        nodes,
    });
}

fn cluster_edges(d: &mut Diagram, p: &Platform) {
    for svc in p.objects.iter().filter(|o| o.kind == "Service") {
        let backends: Vec<&Object> = workloads(p).filter(|w| selects(svc, w)).collect();
        let mut targets: Vec<String> = backends
            .iter()
            .flat_map(|w| workload_node_ids(d, w))
            .collect();
        if backends.is_empty() {
            targets.push(upstream_id(svc));
        }
        for t in targets {
            let ports: Vec<String> = svc
                .service_ports
                .iter()
                .map(|sp| {
                    let to = backends
                        .first()
                        .map_or(sp.target.clone(), |w| w.resolve_target(sp));
                    format!("{}->{to}", sp.port)
                })
                .collect();
            let to_tone = d.node(&t).map_or(Tone::App, |n| n.tone);
            d.connect(
                &obj_id(svc),
                &t,
                ports.join(" "),
                flow_between(obj_tone(svc), to_tone),
            );
        }
    }
    for ing in p.objects.iter().filter(|o| o.kind == "Ingress") {
        for (svc, ports) in node_ports(p) {
            if obj_tone(svc) == Tone::UserFacing {
                let _ = ports;
                d.connect(
                    &upstream_id(svc),
                    &obj_id(ing),
                    "routes by host",
                    Flow::User,
                );
            }
        }
        for (host, path, name, port) in &ing.rules {
            if let Some(svc) = p
                .objects
                .iter()
                .find(|o| o.kind == "Service" && &o.name == name && o.namespace == ing.namespace)
            {
                d.connect(
                    &obj_id(ing),
                    &obj_id(svc),
                    format!("{host}{path} :{port}"),
                    Flow::User,
                );
            }
        }
    }
    for w in workloads(p) {
        for from in workload_node_ids(d, w) {
            reference_edges(d, p, w, &from, obj_id, host_id);
        }
    }
}

/// Layer 2: namespaces with their services, ingress and workloads; PostgreSQL and ELK outside.
pub fn layer2(p: &Platform) -> Diagram {
    let mut d = Diagram {
        title: "Layer 2: namespaces, services, ingress, external PostgreSQL and ELK".into(),
        ..Diagram::default()
    };
    outside_groups(&mut d, p, 0);
    namespace_groups(&mut d, p, 1, false);
    externals_group(&mut d, p, 2);
    user_edges(&mut d, p, obj_id);
    let app = workloads(p)
        .find(|w| obj_tone(w) == Tone::App && w.kind == "Deployment")
        .map(obj_id)
        .unwrap_or_default();
    cicd_edges(&mut d, p, obj_id, &app);
    cluster_edges(&mut d, p);
    d
}

/// Layer 3: pods, their ConfigMaps, Secrets (names only), PVCs and ServiceAccounts, port
/// mappings, Fluent Bit on each node, and the API server.
pub fn layer3(p: &Platform) -> Diagram {
    let mut d = Diagram {
        title: "Layer 3: pods, configuration, secrets (names only), storage, API".into(),
        ..Diagram::default()
    };
    for ns in namespaces(p) {
        let mut nodes = Vec::new();
        for o in p.objects.iter().filter(|o| o.namespace == ns) {
            let lines = match o.kind.as_str() {
                "ConfigMap" => {
                    let mut lines = vec![format!("ConfigMap {}", o.name)];
                    lines.extend(wrap(&o.keys, 44).into_iter().map(|l| format!("· {l}")));
                    lines
                }
                "Secret" => {
                    let mut lines = vec![
                        format!("Secret {}", o.name),
                        if o.keys.is_empty() {
                            "(no keys)".into()
                        } else {
                            "keys, values not shown:".into()
                        },
                    ];
                    lines.extend(wrap(&o.keys, 44).into_iter().map(|l| format!("· {l}")));
                    lines
                }
                "PersistentVolumeClaim" => vec![format!("PVC {}", o.name)],
                "ServiceAccount" => {
                    let mut lines = vec![format!("ServiceAccount {}", o.name)];
                    for b in p.objects.iter().filter(|b| b.binds.contains(&o.name)) {
                        lines.push(format!("bound to {}", b.role_ref.as_deref().unwrap_or("")));
                    }
                    lines
                }
                _ => continue,
            };
            nodes.push(node(obj_id(o), Tone::Config, lines));
        }
        if !nodes.is_empty() {
            d.groups.push(Group {
                id: id(&["cfg", &ns]),
                title: format!("{ns}: configuration"),
                tone: Tone::Config,
                column: 0,
                nodes,
            });
        }
    }
    namespace_groups(&mut d, p, 1, true);
    externals_group(&mut d, p, 2);
    if let Some(g) = d.groups.iter_mut().find(|g| g.id == "external") {
        g.nodes.insert(
            0,
            node(
                "user".into(),
                Tone::UserFacing,
                vec!["user (browser)".into()],
            ),
        );
        g.nodes.insert(
            1,
            node("admin".into(), Tone::UserFacing, vec!["admin".into()]),
        );
    }
    user_edges(&mut d, p, obj_id);
    for w in workloads(p) {
        let ids = workload_node_ids(&d, w);
        for to in &ids {
            let find = |kind: &str, name: &str| {
                p.objects
                    .iter()
                    .find(|o| o.kind == kind && o.name == name && o.namespace == w.namespace)
                    .map(obj_id)
            };
            for cm in &w.config_maps {
                if let Some(from) = find("ConfigMap", cm) {
                    d.connect(&from, to, "env / files", Flow::Control);
                }
            }
            for s in &w.secrets {
                if let Some(from) = find("Secret", s) {
                    d.connect(&from, to, "env (secret)", Flow::Control);
                }
            }
            for c in &w.pvcs {
                if let Some(from) = find("PersistentVolumeClaim", c) {
                    d.connect(&from, to, "volume", Flow::Control);
                }
            }
            if let Some(sa) = &w.service_account {
                if let Some(from) = find("ServiceAccount", sa) {
                    d.connect(&from, to, "token", Flow::Control);
                }
            }
        }
    }
    cluster_edges(&mut d, p);
    d
}
