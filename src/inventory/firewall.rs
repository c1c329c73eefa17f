//! Who may reach what, as the inventory says it: `admin_allowed` (the Kubernetes API, Kibana,
//! Grafana and every NodePort but the ingress ones) and `ingress_allowed` (the ingress
//! NodePorts). Checked per host when present, so a typo stops `check` and every run with the
//! inventory line instead of reaching a firewall as a broken rule.

use std::path::Path;

use crate::error::InputError;
use crate::modules::address;

use super::{key_line, Host};

/// Lists of sources the playbooks' firewall rules take.
const SOURCE_LISTS: &[&str] = &["admin_allowed", "ingress_allowed"];

pub fn check_firewall_values(path: &Path, text: &str, hosts: &[Host]) -> Result<(), InputError> {
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
    // Renamed when it came to cover the API and Grafana too: an old inventory must not pass
    // with its Kibana list silently ignored.
    if let Some(value) = vars.get("kibana_allowed") {
        return Err(InputError::new(
            path,
            key_line(text, "kibana_allowed"),
            "`kibana_allowed` is now `admin_allowed`: it admits to Kibana, Grafana, the Kubernetes \
             API and the NodePorts other than the ingress ones"
                .to_string(),
        )
        .hint(format!(
            "rename the line: admin_allowed = {value} (\"any\" opens all of these to everyone)"
        )));
    }
    for name in SOURCE_LISTS {
        let Some(value) = vars.get(*name) else {
            continue;
        };
        let bad = |msg: String| {
            InputError::new(path, key_line(text, name), msg).hint(
                "a list of \"any\", addresses like \"203.0.113.7\" or CIDRs like \"203.0.113.0/24\"",
            )
        };
        let Some(items) = value.as_array() else {
            return Err(bad(format!("`{name}` = {value} is not a list")));
        };
        for item in items {
            let Some(s) = item.as_str() else {
                return Err(bad(format!("`{name}`: {item} is not a string")));
            };
            address::normalise(s).map_err(|e| bad(format!("`{name}`: {e}")))?;
        }
    }
    Ok(())
}

/// What `check` says about the firewall values: an empty `admin_allowed` is safe but leaves the
/// admin machine outside (the fetched kubeconfig, Kibana and Grafana need a tunnel then).
pub fn warnings(hosts: &[Host]) -> Vec<String> {
    let empty = hosts.iter().any(|h| {
        h.vars
            .get("admin_allowed")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.is_empty())
    });
    if empty {
        vec![
            "admin_allowed is empty: the Kubernetes API, Kibana, Grafana and the NodePorts other \
             than the ingress ones answer only the cluster nodes (reach them through an SSH \
             tunnel, or list the admin machine's address)"
                .to_string(),
        ]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {

    use crate::inventory::parse_with_vars as parse;

    #[test]
    fn the_old_kibana_allowed_is_refused_with_its_line_and_the_new_name() {
        let err = parse("kibana_allowed = [\"any\"]").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("`admin_allowed`"), "{err}");
        assert!(
            err.hint.unwrap().contains("admin_allowed = [\"any\"]"),
            "the hint is the line to write"
        );
    }

    #[test]
    fn source_lists_of_the_wrong_shape_name_their_line() {
        for (vars, needle) in [
            ("admin_allowed = \"203.0.113.7\"", "not a list"),
            ("admin_allowed = [7]", "not a string"),
            ("ingress_allowed = [\"203.0.113.7/24\"]", "host bits"),
            ("ingress_allowed = [\"everyone\"]", "not an address"),
        ] {
            let err = parse(vars).unwrap_err();
            assert_eq!(err.line, Some(3), "{vars}: {err}");
            assert!(err.message.contains(needle), "{vars}: {err}");
        }
    }

    #[test]
    fn good_lists_pass_and_an_empty_admin_list_is_a_warning() {
        let inv = parse(
            "admin_allowed = []\ningress_allowed = [\"any\", \"203.0.113.0/24\", \"2001:db8::1\"]",
        )
        .unwrap();
        assert_eq!(super::warnings(&inv.hosts).len(), 1);
        let inv = parse("admin_allowed = [\"203.0.113.7\"]").unwrap();
        assert!(super::warnings(&inv.hosts).is_empty());
    }
}
