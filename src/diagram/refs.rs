//! Who talks to whom, read from the rendered manifests: a workload's own env values and args
//! and the ConfigMaps it reads are searched for the cluster's Service DNS names, the API
//! server's name and the inventory hosts' addresses (never a Secret's values).

use super::graph::{Flow, Tone};
use super::model::{HostInfo, Object, OpenPort, Platform};

/// The in-cluster name of the Kubernetes API.
pub const API_DNS: &str = "kubernetes.default.svc";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    Service(&'a Object, Option<u16>),
    Api,
    /// A host, and the service port of it the text names (when its firewall opens it).
    Host(&'a HostInfo, Option<&'a OpenPort>),
}

/// The text a workload reads: its own values and its ConfigMaps' data.
pub fn workload_text(p: &Platform, w: &Object) -> String {
    let mut text = w.text.clone();
    for cm in &w.config_maps {
        if let Some(o) = p
            .objects
            .iter()
            .find(|o| o.kind == "ConfigMap" && &o.name == cm && o.namespace == w.namespace)
        {
            text.push_str(&o.text);
        }
    }
    text
}

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '.'));
        edge(before) && edge(after)
    })
}

/// The port written right after `name:` in the text, if any.
fn port_after(text: &str, name: &str) -> Option<u16> {
    text.match_indices(name).find_map(|(i, _)| {
        let rest = &text[i + name.len()..];
        let rest = rest.strip_prefix(".svc").unwrap_or(rest);
        let rest = rest.strip_prefix(".cluster.local").unwrap_or(rest);
        let digits: String = rest
            .strip_prefix(':')?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// A Prometheus job that keeps the EndpointSlices of `svc` (its pods, scraped one by one): a
/// `regex: <service>;<port name>` keep rule in a job limited to the service's namespace. The
/// port is the service port of that name. None when the text has no such job.
fn endpointslice_port(text: &str, svc: &Object) -> Option<Option<u16>> {
    if !text.contains("role: endpointslice")
        || !text.contains(&format!("names: [{}]", svc.namespace))
    {
        return None;
    }
    let prefix = format!("regex: {};", svc.name);
    let port_name: String = text.match_indices(&prefix).next().map(|(i, _)| {
        text[i + prefix.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect()
    })?;
    Some(
        svc.service_ports
            .iter()
            .find(|p| p.name == port_name)
            .map(|p| p.port),
    )
}

pub fn targets<'a>(p: &'a Platform, w: &Object) -> Vec<Target<'a>> {
    let text = workload_text(p, w);
    let mut out = Vec::new();
    for svc in p.objects.iter().filter(|o| o.kind == "Service") {
        let dns = format!("{}.{}", svc.name, svc.namespace);
        if text.contains(&dns) {
            out.push(Target::Service(svc, port_after(&text, &dns)));
        } else if let Some(port) = endpointslice_port(&text, svc) {
            out.push(Target::Service(svc, port));
        }
    }
    if text.contains(API_DNS) {
        out.push(Target::Api);
    }
    for host in &p.hosts {
        if !has_word(&text, &host.address) {
            continue;
        }
        let port = host_services(host)
            .into_iter()
            .find(|o| o.number.is_some_and(|n| has_word(&text, &n.to_string())));
        out.push(Target::Host(host, port));
    }
    out
}

/// The services a host's firewall opens on one port with a name (not SSH, not ranges), less the
/// node's Kubernetes plumbing drawn elsewhere: the API has a box of its own, NodePorts are the
/// cluster's Services, the kubelet belongs to the node.
pub fn host_services(h: &HostInfo) -> Vec<&OpenPort> {
    h.firewall
        .iter()
        .flat_map(|f| &f.open)
        .filter(|o| o.number.is_some() && !o.comment.is_empty())
        .filter(|o| !matches!(o.comment.as_str(), "ssh" | "kubernetes api" | "kubelet"))
        .filter(|o| !o.comment.contains("nodeport"))
        .collect()
}

/// The kind of component a name belongs to (the seed's colour per kind); the names are the
/// ones the platform's manifests and firewall comments use.
pub fn tone_of(words: &str) -> Tone {
    let w = words.to_ascii_lowercase();
    let any = |keys: &[&str]| keys.iter().any(|k| w.contains(k));
    if any(&["prometheus", "grafana", "monitoring", "metrics"]) {
        Tone::Monitoring
    } else if any(&["fluent", "logging", "elastic", "kibana", "log"]) {
        Tone::Logging
    } else if any(&["postgres", "database", "backup", "sql"]) {
        Tone::Data
    } else if any(&["ingress", "nginx"]) {
        Tone::UserFacing
    } else if any(&["deployer", "ci"]) {
        Tone::CiCd
    } else {
        Tone::App
    }
}

/// The flow an arrow from `source` into a component of tone `to` carries.
pub fn flow_between(source: Tone, to: Tone) -> Flow {
    match (source, to) {
        (_, Tone::Data) => Flow::Database,
        (Tone::Logging, _) | (_, Tone::Logging) => Flow::Logs,
        (Tone::Monitoring, _) => Flow::Metrics,
        (Tone::CiCd, _) => Flow::CiCd,
        _ => Flow::User,
    }
}
