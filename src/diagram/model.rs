//! What the drawing shows, read from the inputs and nothing else: each host's address and the
//! ports its firewall opens (the playbooks' `ufw` steps rendered for that host, as a run would
//! render them), and the cluster's objects (the rendered manifests, parsed as YAML). Nothing
//! here connects to a host; secrets are placeholders and never reach the drawing.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::InputError;
use crate::inventory::{Inventory, Secrets};
use crate::manifests::RenderedFile;
use crate::modules::ufw::{Policy, Ufw};
use crate::modules::BuildContext;
use crate::playbook::template::{RenderError, Renderer};
use crate::playbook::Playbook;

/// The platform as the inventory and playbooks would make it.
#[derive(Debug, Clone, Default)]
pub struct Platform {
    pub hosts: Vec<HostInfo>,
    pub objects: Vec<Object>,
    /// The inventory's `api_port` (the Kubernetes API on the master), when set.
    pub api_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub name: String,
    pub address: String,
    pub roles: Vec<String>,
    /// `None`: no playbook puts a firewall on this host.
    pub firewall: Option<Firewall>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Firewall {
    pub default_incoming: String,
    /// Incoming allow rules, one per (port, proto, comment), sources merged in rule order.
    pub open: Vec<OpenPort>,
    /// Ports with a managed deny (the fallback for sources no allow matched).
    pub denied: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPort {
    /// `5432/tcp`, `30000:32767/tcp`, or `all` (every port, e.g. from the cluster nodes).
    pub port: String,
    /// The port number when it is a single port.
    pub number: Option<u16>,
    /// `any`, or the addresses/CIDRs allowed.
    pub from: Vec<String>,
    /// The rule's comment without the `bootstrap:` prefix (`postgres`, `ssh`...).
    pub comment: String,
}

/// One Kubernetes object of the rendered manifests, with what the drawing needs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    pub kind: String,
    pub name: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Workloads: replicas (None for a DaemonSet: one per node).
    pub replicas: Option<u64>,
    /// Workloads: container ports (name, number).
    pub container_ports: Vec<(String, u16)>,
    pub config_maps: Vec<String>,
    /// Secrets by name only: values are never read.
    pub secrets: Vec<String>,
    pub pvcs: Vec<String>,
    pub service_account: Option<String>,
    pub host_paths: Vec<String>,
    pub images: Vec<String>,
    /// Role/ClusterRole: the object names its rules are limited to.
    pub resource_names: Vec<String>,
    /// Services: type, selector, ports.
    pub service_type: Option<String>,
    pub selector: BTreeMap<String, String>,
    pub service_ports: Vec<ServicePort>,
    /// Ingress: (host, path, service, port).
    pub rules: Vec<(String, String, String, String)>,
    /// ServiceAccount subjects of a (Cluster)RoleBinding, and the role it binds.
    pub binds: Vec<String>,
    pub role_ref: Option<String>,
    /// A CronJob's schedule.
    pub schedule: Option<String>,
    /// ConfigMap and Secret: the keys of `data`/`stringData` (names, never a Secret's values).
    pub keys: Vec<String>,
    /// ConfigMaps only: the data values (never a Secret's), searched for addresses.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// A number or a container port's name.
    pub target: String,
    pub node_port: Option<u16>,
}

impl Object {
    pub fn is_workload(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "Deployment" | "DaemonSet" | "StatefulSet" | "CronJob" | "Job"
        )
    }
    /// `80->8000` for a service port whose target names a container port of `workload`.
    pub fn resolve_target(&self, port: &ServicePort) -> String {
        match port.target.parse::<u16>() {
            Ok(n) => n.to_string(),
            Err(_) => self
                .container_ports
                .iter()
                .find(|(name, _)| *name == port.target)
                .map_or(port.target.clone(), |(_, n)| n.to_string()),
        }
    }
}

/// Reads the hosts' firewalls from the playbooks and the objects from the rendered manifests.
pub fn extract(
    inventory: &Inventory,
    playbooks: &[Playbook],
    manifests: &[RenderedFile],
) -> Result<Platform, InputError> {
    let secrets = Secrets::placeholders(inventory.secret_names.keys());
    let mut hosts = Vec::new();
    for host in &inventory.hosts {
        let mut firewall = None;
        for playbook in playbooks {
            if !inventory
                .hosts_with_role(&playbook.hosts)
                .any(|h| h.name == host.name)
            {
                continue;
            }
            for ufw in ufw_steps(inventory, &secrets, playbook, &host.name)? {
                firewall = Some(firewall_of(&ufw));
            }
        }
        hosts.push(HostInfo {
            name: host.name.clone(),
            address: host.ssh.address.clone(),
            roles: host.roles.clone(),
            firewall,
        });
    }
    let mut objects = Vec::new();
    for file in manifests {
        objects.extend(parse_objects(&file.path, &file.content)?);
    }
    let api_port = inventory
        .vars
        .get("api_port")
        .and_then(|v| v.as_integer())
        .and_then(|n| u16::try_from(n).ok());
    Ok(Platform {
        hosts,
        objects,
        api_port,
    })
}

/// The `ufw` steps of `playbook` rendered for one host and built by the ufw module itself.
fn ufw_steps(
    inventory: &Inventory,
    secrets: &Secrets,
    playbook: &Playbook,
    host_name: &str,
) -> Result<Vec<Ufw>, InputError> {
    let Some(host) = inventory.host(host_name) else {
        return Ok(Vec::new());
    };
    let renderer = Renderer::new(&playbook.files_dir());
    let facts = BTreeMap::new();
    let vars = crate::runner::context::host_context(inventory, host, secrets, &facts);
    let mut out = Vec::new();
    for step in playbook.steps.iter().filter(|s| s.module == "ufw") {
        // A `when` that needs a fact is left out of the rendering: the rule is drawn as wanted.
        let unguarded = crate::playbook::Step {
            when: None,
            ..step.clone()
        };
        let args = match renderer.render_step(playbook, &unguarded, &vars, &facts) {
            Ok(Some(args)) => args,
            Ok(None) | Err(RenderError::FactNotKnownYet(_)) => continue,
            Err(RenderError::Input(e)) => return Err(e),
        };
        let render_template = |src: &str| renderer.render_file(src, &vars);
        let ctx = BuildContext {
            playbook: &playbook.path,
            line: Some(step.line),
            files_dir: renderer.files_dir(),
            render_template: &render_template,
            local_dir: inventory.state_dir(),
        };
        out.push(Ufw::from_args(&args, &ctx)?);
    }
    Ok(out)
}

fn firewall_of(ufw: &Ufw) -> Firewall {
    let mut fw = Firewall {
        default_incoming: policy_word(ufw.default_incoming).to_string(),
        ..Firewall::default()
    };
    for rule in &ufw.rules {
        let key = &rule.key;
        if key.route || key.direction != "in" {
            continue;
        }
        let port = match (key.dport.as_str(), key.proto.as_str()) {
            ("any", _) => "all".to_string(),
            (p, "any") => p.to_string(),
            (p, proto) => format!("{p}/{proto}"),
        };
        let comment = rule
            .comment
            .strip_prefix(crate::modules::ufw::MANAGED_PREFIX)
            .unwrap_or(&rule.comment)
            .trim()
            .to_string();
        if !key.action.starts_with("allow") && !key.action.starts_with("limit") {
            if !fw.denied.contains(&port) {
                fw.denied.push(port);
            }
            continue;
        }
        match fw
            .open
            .iter_mut()
            .find(|o| o.port == port && o.comment == comment)
        {
            Some(open) => {
                if !open.from.contains(&key.src) {
                    open.from.push(key.src.clone());
                }
            }
            None => fw.open.push(OpenPort {
                number: key.dport.parse().ok(),
                port,
                from: vec![key.src.clone()],
                comment,
            }),
        }
    }
    fw
}

fn policy_word(p: Policy) -> &'static str {
    match p {
        Policy::Allow => "allow",
        Policy::Deny => "deny",
        Policy::Reject => "reject",
    }
}

/// Every object of one rendered file (`---`-separated documents); Kustomizations are skipped.
pub fn parse_objects(path: &Path, text: &str) -> Result<Vec<Object>, InputError> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| {
            InputError::new(
                path,
                e.location().map(|l| l.line()),
                format!("rendered manifest is not YAML: {e}"),
            )
            .hint("fix the template under files/manifests/")
        })?;
        if value.is_null() {
            continue;
        }
        let kind = s(&value["kind"]);
        if kind.is_empty() || kind == "Kustomization" {
            continue;
        }
        out.push(object_of(kind, &value));
    }
    Ok(out)
}

fn s(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn seq(v: &serde_yaml::Value) -> &[serde_yaml::Value] {
    v.as_sequence().map_or(&[], |s| s.as_slice())
}

fn string_map(v: &serde_yaml::Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| m.iter().map(|(k, v)| (s(k), s(v))).collect())
        .unwrap_or_default()
}

fn push_unique(list: &mut Vec<String>, name: String) {
    if !name.is_empty() && !list.contains(&name) {
        list.push(name);
    }
}

fn object_of(kind: String, v: &serde_yaml::Value) -> Object {
    let meta = &v["metadata"];
    let mut o = Object {
        name: s(&meta["name"]),
        namespace: s(&meta["namespace"]),
        labels: string_map(&meta["labels"]),
        kind,
        ..Object::default()
    };
    let spec = &v["spec"];
    let pod = match o.kind.as_str() {
        "Deployment" | "StatefulSet" => {
            o.replicas = Some(spec["replicas"].as_u64().unwrap_or(1));
            Some(&spec["template"]["spec"])
        }
        "DaemonSet" => Some(&spec["template"]["spec"]),
        "CronJob" => {
            o.schedule = Some(s(&spec["schedule"]));
            Some(&spec["jobTemplate"]["spec"]["template"]["spec"])
        }
        "Job" => Some(&spec["template"]["spec"]),
        _ => None,
    };
    if let Some(pod) = pod {
        read_pod(&mut o, pod);
    }
    match o.kind.as_str() {
        "Service" => {
            o.service_type = Some(s(&spec["type"])).filter(|t| !t.is_empty());
            o.selector = string_map(&spec["selector"]);
            for p in seq(&spec["ports"]) {
                let port = p["port"].as_u64().unwrap_or(0) as u16;
                let target = match s(&p["targetPort"]) {
                    t if t.is_empty() => port.to_string(),
                    t => t,
                };
                o.service_ports.push(ServicePort {
                    name: s(&p["name"]),
                    port,
                    target,
                    node_port: p["nodePort"].as_u64().map(|n| n as u16),
                });
            }
        }
        "Ingress" => {
            for rule in seq(&spec["rules"]) {
                for path in seq(&rule["http"]["paths"]) {
                    let svc = &path["backend"]["service"];
                    let port = match s(&svc["port"]["number"]) {
                        n if n.is_empty() => s(&svc["port"]["name"]),
                        n => n,
                    };
                    o.rules
                        .push((s(&rule["host"]), s(&path["path"]), s(&svc["name"]), port));
                }
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            for subject in seq(&v["subjects"]) {
                push_unique(&mut o.binds, s(&subject["name"]));
            }
            o.role_ref = Some(format!(
                "{}/{}",
                s(&v["roleRef"]["kind"]),
                s(&v["roleRef"]["name"])
            ));
        }
        "Role" | "ClusterRole" => {
            for rule in seq(&v["rules"]) {
                for name in seq(&rule["resourceNames"]) {
                    push_unique(&mut o.resource_names, s(name));
                }
            }
        }
        "Secret" => {
            for field in ["data", "stringData"] {
                o.keys.extend(string_map(&v[field]).into_keys());
            }
        }
        "ConfigMap" => {
            o.keys.extend(string_map(&v["data"]).into_keys());
            // Values only: the searchable text of what the workloads read.
            for (_, value) in string_map(&v["data"]) {
                o.text.push_str(&value);
                o.text.push('\n');
            }
        }
        _ => {}
    }
    o
}

fn read_pod(o: &mut Object, pod: &serde_yaml::Value) {
    o.service_account = Some(s(&pod["serviceAccountName"])).filter(|n| !n.is_empty());
    for vol in seq(&pod["volumes"]) {
        push_unique(&mut o.config_maps, s(&vol["configMap"]["name"]));
        push_unique(&mut o.secrets, s(&vol["secret"]["secretName"]));
        push_unique(&mut o.pvcs, s(&vol["persistentVolumeClaim"]["claimName"]));
        push_unique(&mut o.host_paths, s(&vol["hostPath"]["path"]));
    }
    for c in seq(&pod["containers"])
        .iter()
        .chain(seq(&pod["initContainers"]))
    {
        push_unique(&mut o.images, s(&c["image"]));
        for p in seq(&c["ports"]) {
            if let Some(n) = p["containerPort"].as_u64() {
                o.container_ports.push((s(&p["name"]), n as u16));
            }
        }
        for from in seq(&c["envFrom"]) {
            push_unique(&mut o.config_maps, s(&from["configMapRef"]["name"]));
            push_unique(&mut o.secrets, s(&from["secretRef"]["name"]));
        }
        for env in seq(&c["env"]) {
            let src = &env["valueFrom"];
            push_unique(&mut o.config_maps, s(&src["configMapKeyRef"]["name"]));
            push_unique(&mut o.secrets, s(&src["secretKeyRef"]["name"]));
            // Plain values (never a secret's) join the searchable text: `PGHOST: 10.0.0.5`.
            o.text.push_str(&s(&env["value"]));
            o.text.push('\n');
        }
        for arg in seq(&c["args"]).iter().chain(seq(&c["command"])) {
            o.text.push_str(&s(arg));
            o.text.push('\n');
        }
    }
}
