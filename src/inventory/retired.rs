//! Inventory variables that a newer bootstrap no longer reads. An inventory written for an older
//! version must not pass with them silently ignored (the logs would go nowhere new, the ingress
//! pins would be unused): each one stops `check` and every run with its line and what to write.

use std::path::Path;

use crate::error::InputError;

use super::{key_line, Host};

/// (old name, what replaced it, what to write instead).
const RETIRED: &[(&str, &str, &str)] = &[
    (
        "log_index",
        "container logs now go to a data stream with a lifecycle, not an index",
        "replace the line with log_data_stream = \"k8s-containers\" and add log_retention, \
         log_buffer_limit and log_retry_limit (see the shipped inventory.toml); the old index \
         stays readable and is never deleted",
    ),
    (
        "ingress_nginx_manifest_url",
        "the retired ingress-nginx was replaced by F5's NGINX Ingress Controller",
        "replace ingress_nginx_manifest_url and ingress_nginx_manifest_sha256 with \
         nginx_ingress_manifests_url and the nginx_ingress_manifests.\"...\" pins of the shipped \
         inventory.toml, and set ingress_namespace = \"nginx-ingress\"",
    ),
    (
        "ingress_nginx_manifest_sha256",
        "the retired ingress-nginx was replaced by F5's NGINX Ingress Controller",
        "replace it with the nginx_ingress_manifests.\"...\" pins of the shipped inventory.toml",
    ),
];

pub fn check_retired_values(path: &Path, text: &str, hosts: &[Host]) -> Result<(), InputError> {
    for host in hosts {
        for (name, why, fix) in RETIRED {
            if host.vars.contains_key(*name) {
                return Err(InputError::new(
                    path,
                    key_line(text, name),
                    format!("`{name}` is no longer read: {why}"),
                )
                .hint(*fix));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::inventory::Inventory;

    #[test]
    fn an_old_variable_is_refused_with_its_line_and_its_replacement() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let shipped = std::fs::read_to_string(root.join("inventory.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.toml");
        for (old, want) in [
            ("log_index = \"fluentbit-k8s\"", "log_data_stream"),
            (
                "ingress_nginx_manifest_url = \"https://example.invalid/deploy.yaml\"",
                "nginx_ingress_manifests_url",
            ),
        ] {
            let text = shipped.replacen("[vars]\n", &format!("[vars]\n{old}\n"), 1);
            let line = text.lines().position(|l| l == old).unwrap() + 1;
            std::fs::write(&path, &text).unwrap();
            let err = Inventory::load(&path).unwrap_err();
            assert_eq!(err.line, Some(line), "{old}");
            assert!(err.message.contains("no longer read"), "{}", err.message);
            assert!(
                err.hint.as_deref().unwrap_or("").contains(want),
                "{:?}",
                err.hint
            );
        }
        // The shipped inventory has none of them.
        std::fs::write(&path, &shipped).unwrap();
        Inventory::load(&path).unwrap();
    }
}
