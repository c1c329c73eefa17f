//! The Kubernetes node values whose shape the templates rely on (`registry_mirrors`, the
//! kubelet, kube-proxy and kubeadm knobs), checked per host when present, so a typo stops
//! `check` and every run with the inventory line instead of reaching a host as a broken file.
//! Values that pick one of a few words (`containerd_source`, `calico_encapsulation`) are
//! `[supported_vars]` of playbooks/site.toml.

use std::path::Path;

use crate::error::InputError;
use crate::modules::containerd_hosts;

use super::{key_line, Host};

/// kube-proxy's `conntrack.maxPerCore` is an int32.
const MAX_PER_CORE: i64 = i32::MAX as i64;

pub fn check_node_values(path: &Path, text: &str, hosts: &[Host]) -> Result<(), InputError> {
    // Most inventories share one [vars]: check each distinct table once.
    let mut seen: Vec<&toml::Table> = Vec::new();
    for host in hosts {
        if seen.contains(&&host.vars) {
            continue;
        }
        seen.push(&host.vars);
        check_table(path, text, &host.vars)?;
    }
    Ok(())
}

fn check_table(path: &Path, text: &str, vars: &toml::Table) -> Result<(), InputError> {
    let at = |var: &str| key_line(text, var);
    if let Some(value) = vars.get("registry_mirrors") {
        let Some(table) = value.as_table() else {
            return Err(InputError::new(
                path,
                at("registry_mirrors"),
                format!("`registry_mirrors` = {value} is not a table"),
            )
            .hint("registry_mirrors = {} for none, or { \"registry.k8s.io\" = { url = \"http://10.0.0.5:5000\" } }"));
        };
        for (registry, entry) in table {
            containerd_hosts::check_entry(registry, entry).map_err(|(msg, hint)| {
                InputError::new(path, at(registry).or(at("registry_mirrors")), msg).hint(hint)
            })?;
        }
    }
    for (name, hint) in [
        (
            "kubelet_fail_cgroup_v1",
            "true (the kubelet's default: refuse a cgroup v1 host) or false",
        ),
        (
            "containerd_restrict_oom_score_adj",
            "false (containerd's default) or true (a node without CAP_SYS_RESOURCE)",
        ),
    ] {
        if let Some(value) = vars.get(name) {
            if value.as_bool().is_none() {
                return Err(InputError::new(
                    path,
                    at(name),
                    format!("`{name}` = {value} is not true or false"),
                )
                .hint(hint));
            }
        }
    }
    if let Some(value) = vars.get("kubelet_eviction_hard") {
        let ok = value.as_table().is_some_and(|t| {
            t.iter().all(|(k, v)| {
                !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
                    && v.as_str().is_some_and(|v| {
                        !v.is_empty()
                            && v.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'%' || b == b'.')
                    })
            })
        });
        if !ok {
            return Err(InputError::new(
                path,
                at("kubelet_eviction_hard"),
                format!("`kubelet_eviction_hard` = {value} is not a table of signal = \"threshold\""),
            )
            .hint("e.g. { \"memory.available\" = \"100Mi\", \"nodefs.available\" = \"1Gi\", \"imagefs.available\" = \"1Gi\", \"nodefs.inodesFree\" = \"5%\" }"));
        }
    }
    if let Some(value) = vars.get("kubeadm_ignore_preflight_errors") {
        let names = value.as_array().map(|items| {
            items
                .iter()
                .map(|i| i.as_str().filter(|s| preflight_check_name(s)))
                .collect::<Option<Vec<_>>>()
        });
        if !matches!(names, Some(Some(_))) {
            return Err(InputError::new(
                path,
                at("kubeadm_ignore_preflight_errors"),
                format!(
                    "`kubeadm_ignore_preflight_errors` = {value} is not a list of kubeadm \
                     preflight check names"
                ),
            )
            .hint("e.g. [] (none) or [\"SystemVerification\"]"));
        }
    }
    if let Some(value) = vars.get("kube_proxy_conntrack_max_per_core") {
        if !value
            .as_integer()
            .is_some_and(|n| (0..=MAX_PER_CORE).contains(&n))
        {
            return Err(InputError::new(
                path,
                at("kube_proxy_conntrack_max_per_core"),
                format!(
                    "`kube_proxy_conntrack_max_per_core` = {value} is not a whole number in \
                     0-{MAX_PER_CORE}"
                ),
            )
            .hint("0 leaves the host's nf_conntrack_max alone; leave the line out for kube-proxy's default"));
        }
    }
    Ok(())
}

/// kubeadm's check names: `SystemVerification`, `Swap`, `all`,
/// `FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml`.
fn preflight_check_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {

    use crate::inventory::parse_with_vars as parse;

    #[test]
    fn node_values_of_the_wrong_shape_name_their_line() {
        for (vars, line, needle) in [
            ("registry_mirrors = \"http://m\"", 3, "not a table"),
            (
                "[vars.registry_mirrors]\n\"registry.k8s.io\" = { url = \"10.0.0.5:5000\" }",
                4,
                "not an http(s) URL",
            ),
            (
                "registry_mirrors = { \"bad host\" = { url = \"http://m\" } }",
                3,
                "not a registry host",
            ),
            ("kubelet_fail_cgroup_v1 = \"no\"", 3, "true or false"),
            ("containerd_restrict_oom_score_adj = 1", 3, "true or false"),
            (
                "kubelet_eviction_hard = \"1Gi\"",
                3,
                "signal = \"threshold\"",
            ),
            (
                "kubelet_eviction_hard = { \"nodefs.available\" = \"1 Gi\" }",
                3,
                "signal = \"threshold\"",
            ),
            ("kubeadm_ignore_preflight_errors = \"Swap\"", 3, "list"),
            ("kubeadm_ignore_preflight_errors = [\"a b\"]", 3, "list"),
            ("kube_proxy_conntrack_max_per_core = -1", 3, "0-2147483647"),
            (
                "kube_proxy_conntrack_max_per_core = \"0\"",
                3,
                "whole number",
            ),
        ] {
            let err = parse(vars).unwrap_err();
            assert_eq!(err.line, Some(line), "{vars}: {err}");
            assert!(err.message.contains(needle), "{vars}: {err}");
        }
    }

    #[test]
    fn good_node_values_pass() {
        parse(
            "registry_mirrors = { \"registry.k8s.io\" = { url = \"http://10.0.0.5:5000\" }, \"quay.io\" = { url = \"https://m.example.com\", ca_file = \"/etc/ssl/m.pem\" } }\n\
             kubelet_fail_cgroup_v1 = false\n\
             containerd_restrict_oom_score_adj = true\n\
             kubelet_eviction_hard = { \"nodefs.available\" = \"1Gi\", \"nodefs.inodesFree\" = \"5%\" }\n\
             kubeadm_ignore_preflight_errors = [\"SystemVerification\", \"FileAvailable--etc-kubernetes-kubelet.conf\"]\n\
             kube_proxy_conntrack_max_per_core = 0",
        )
        .unwrap();
        parse("registry_mirrors = {}\nkubeadm_ignore_preflight_errors = []").unwrap();
    }
}
