//! The Kubernetes node playbooks and templates rendered from the shipped inventory (and from
//! it with single values changed): containerd's source and configuration, registry mirrors,
//! the OS gate, the kubeadm/kubelet/kube-proxy knobs and Calico's encapsulation.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

pub(super) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped inventory with each `(var, toml)` line replaced, or added to `[vars]`.
pub(super) fn inventory_with(changes: &[(&str, &str)]) -> (Inventory, tempfile::TempDir) {
    let mut text = std::fs::read_to_string(root().join("inventory.toml")).unwrap();
    for (var, value) in changes {
        let prefix = format!("{var} =");
        let line = format!("{var} = {value}");
        if text.lines().any(|l| l.starts_with(&prefix)) {
            text = text
                .lines()
                .map(|l| {
                    if l.starts_with(&prefix) {
                        line.clone()
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        } else {
            text = text.replacen("[vars]\n", &format!("[vars]\n{line}\n"), 1);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.toml");
    std::fs::write(&path, text).unwrap();
    (Inventory::load(&path).unwrap(), dir)
}

pub(super) fn debian12() -> BTreeMap<String, String> {
    [
        ("os_id", "debian"),
        ("os_version", "12"),
        ("os_codename", "bookworm"),
        ("arch", "amd64"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn render_file(inventory: &Inventory, host: &str, src: &str) -> String {
    let secrets = Secrets::placeholders(inventory.secret_names.keys());
    let vars = runner::context::host_context(
        inventory,
        inventory.host(host).unwrap(),
        &secrets,
        &debian12(),
    );
    Renderer::new(&root().join("files"))
        .render_file(src, &vars)
        .unwrap()
}

/// The rendered arguments of a playbook's step (None: its `when` is false).
pub(super) fn render_step(
    inventory: &Inventory,
    host: &str,
    playbook: &str,
    step_starts: &str,
    facts: &BTreeMap<String, String>,
    registered: &runner::context::RegisteredValues,
) -> Option<toml::Value> {
    let pb = Playbook::load(&root().join("playbooks").join(playbook)).unwrap();
    let step = pb
        .steps
        .iter()
        .find(|s| s.name.starts_with(step_starts))
        .unwrap_or_else(|| panic!("no step `{step_starts}` in {playbook}"));
    let secrets = Secrets::placeholders(inventory.secret_names.keys());
    let vars = runner::context::host_context_with(
        inventory,
        inventory.host(host).unwrap(),
        &secrets,
        facts,
        registered,
    );
    Renderer::new(&pb.files_dir())
        .render_step(&pb, step, &vars, facts)
        .ok()
        .unwrap()
}

/// A step of a playbook on the master, on Debian 12, before anything was registered.
fn master_step(inventory: &Inventory, playbook: &str, step_starts: &str) -> Option<toml::Value> {
    let none = runner::context::RegisteredValues::new();
    render_step(
        inventory,
        "master",
        playbook,
        step_starts,
        &debian12(),
        &none,
    )
}

pub(super) fn shipped() -> Inventory {
    Inventory::load(&root().join("inventory.toml")).unwrap()
}

#[test]
fn containerd_config_is_version_3_with_systemd_cgroups_the_pause_image_and_the_mirror_directory() {
    let text = render_file(&shipped(), "master", "kubernetes/containerd-config.toml.j2");
    let parsed: toml::Table = text.parse().unwrap();
    assert_eq!(parsed["version"].as_integer(), Some(3));
    insta::assert_snapshot!(text);
}

#[test]
fn containerd_restricts_oom_score_adj_only_when_the_inventory_says_so() {
    let runtime = |text: &str| -> Option<bool> {
        let parsed: toml::Table = text.parse().unwrap();
        parsed["plugins"]["io.containerd.cri.v1.runtime"]
            .get("restrict_oom_score_adj")
            .and_then(|v| v.as_bool())
    };
    let shipped_text = render_file(&shipped(), "master", "kubernetes/containerd-config.toml.j2");
    assert_eq!(runtime(&shipped_text), None);
    let (inventory, _dir) = inventory_with(&[("containerd_restrict_oom_score_adj", "true")]);
    let text = render_file(&inventory, "master", "kubernetes/containerd-config.toml.j2");
    assert_eq!(runtime(&text), Some(true));
    // The runc runtime table under the same plugin is still there.
    let parsed: toml::Table = text.parse().unwrap();
    assert_eq!(
        parsed["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
            ["options"]["SystemdCgroup"]
            .as_bool(),
        Some(true)
    );
}

#[test]
fn kubeadm_config_of_the_shipped_inventory() {
    insta::assert_snapshot!(render_file(
        &shipped(),
        "master",
        "kubernetes/kubeadm-config.yaml.j2"
    ));
}

#[test]
fn kubeadm_config_with_the_cgroup_v1_preflight_and_conntrack_knobs() {
    let (inventory, _dir) = inventory_with(&[
        ("kubelet_fail_cgroup_v1", "false"),
        (
            "kubeadm_ignore_preflight_errors",
            "[\"SystemVerification\"]",
        ),
        ("kube_proxy_conntrack_max_per_core", "0"),
        (
            "kubelet_eviction_hard",
            "{ \"imagefs.available\" = \"2Gi\", \"nodefs.inodesFree\" = \"5%\" }",
        ),
    ]);
    let text = render_file(&inventory, "master", "kubernetes/kubeadm-config.yaml.j2");
    // Four YAML documents kubeadm reads, each well-formed.
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration",
            "KubeProxyConfiguration"
        ]
    );
    assert_eq!(
        docs[0]["nodeRegistration"]["ignorePreflightErrors"][0].as_str(),
        Some("SystemVerification")
    );
    assert_eq!(docs[2]["failCgroupV1"].as_bool(), Some(false));
    assert_eq!(docs[3]["conntrack"]["maxPerCore"].as_i64(), Some(0));
    assert_eq!(
        docs[2]["evictionHard"]["imagefs.available"].as_str(),
        Some("2Gi")
    );
    insta::assert_snapshot!(text);
}

#[test]
fn the_join_configuration_carries_the_ignored_preflight_checks_only_when_there_are_some() {
    let registered = super::tests::minted_join_for_worker();
    let mut facts = debian12();
    facts.insert("kubelet_conf".into(), "absent".into());
    facts.insert("join_leftovers".into(), "absent".into());
    let stdin = |inventory: &Inventory| {
        let args = render_step(
            inventory,
            "worker",
            "join.toml",
            "kubeadm join",
            &facts,
            &registered,
        )
        .unwrap();
        args["stdin"].as_str().unwrap().to_string()
    };
    assert!(!stdin(&shipped()).contains("ignorePreflightErrors"));
    let (lab_like, _dir) = inventory_with(&[(
        "kubeadm_ignore_preflight_errors",
        "[\"SystemVerification\"]",
    )]);
    let text = stdin(&lab_like);
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        doc["nodeRegistration"]["ignorePreflightErrors"][0].as_str(),
        Some("SystemVerification"),
        "{text}"
    );
}

#[test]
fn containerd_comes_from_dockers_repository_for_the_hosts_own_release_pinned_and_held() {
    let facts = debian12();
    let none = BTreeMap::new();
    let repo = master_step(&shipped(), "node.toml", "containerd's apt repository").unwrap();
    assert_eq!(
        repo["url"].as_str(),
        Some("https://download.docker.com/linux/debian")
    );
    assert_eq!(repo["suite"].as_str(), Some("bookworm"));
    assert_eq!(
        repo["key_url"].as_str(),
        Some("https://download.docker.com/linux/debian/gpg")
    );
    assert_eq!(
        repo["key_fingerprint"].as_str(),
        Some("9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88")
    );
    assert_eq!(repo["components"].as_array().unwrap().len(), 1);
    let pkg = master_step(&shipped(), "node.toml", "containerd (and runc)").unwrap();
    assert_eq!(
        pkg["packages"][0].as_str(),
        Some("containerd.io=2.3.3-1~debian.12~bookworm")
    );
    assert_eq!(pkg["state"].as_str(), Some("held"));
    let mut noble = facts.clone();
    noble.extend([
        ("os_id".to_string(), "ubuntu".to_string()),
        ("os_version".to_string(), "24.04".to_string()),
        ("os_codename".to_string(), "noble".to_string()),
    ]);
    let pkg = render_step(
        &shipped(),
        "master",
        "node.toml",
        "containerd (and runc)",
        &noble,
        &none,
    )
    .unwrap();
    assert_eq!(
        pkg["packages"][0].as_str(),
        Some("containerd.io=2.3.3-1~ubuntu.24.04~noble")
    );
    assert!(master_step(&shipped(), "node.toml", "containerd from the distribution").is_none());
    // The distribution's package instead: Docker's steps are skipped.
    let (distro, _dir) = inventory_with(&[("containerd_source", "\"distribution\"")]);
    for step in ["containerd's apt repository", "containerd (and runc)"] {
        assert!(master_step(&distro, "node.toml", step).is_none(), "{step}");
    }
    let pkg = master_step(&distro, "node.toml", "containerd from the distribution").unwrap();
    assert_eq!(pkg["packages"][0].as_str(), Some("containerd"));
}

#[test]
fn an_os_release_the_playbooks_do_not_support_stops_the_node_before_anything_changes() {
    let none = BTreeMap::new();
    let gate = |facts: &BTreeMap<String, String>| {
        render_step(
            &shipped(),
            "master",
            "node.toml",
            "the OS is a release",
            facts,
            &none,
        )
    };
    let node = Playbook::load(&root().join("playbooks/node.toml")).unwrap();
    assert!(
        node.steps[0].name.starts_with("the OS is a release"),
        "the gate comes first"
    );
    for (id, version) in [("debian", "12"), ("ubuntu", "22.04"), ("ubuntu", "24.04")] {
        let facts = BTreeMap::from([
            ("os_id".to_string(), id.to_string()),
            ("os_version".to_string(), version.to_string()),
        ]);
        assert!(gate(&facts).is_none(), "{id} {version} is supported");
    }
    let trixie = BTreeMap::from([
        ("os_id".to_string(), "debian".to_string()),
        ("os_version".to_string(), "13".to_string()),
    ]);
    let args = gate(&trixie).expect("Debian 13 is refused");
    assert_eq!(
        args["read_only"].as_bool(),
        Some(true),
        "refused in --check too"
    );
    let cmd = args["cmd"].as_str().unwrap();
    assert!(cmd.contains("debian 13 is not supported"), "{cmd}");
    assert!(cmd.contains("exit 1"), "{cmd}");
    // No os-release at all: refused with a readable reason, not an undefined-variable error.
    let args = gate(&BTreeMap::new()).expect("an unknown OS is refused");
    assert!(args["cmd"]
        .as_str()
        .unwrap()
        .contains("without /etc/os-release"));
}

#[test]
fn registry_mirrors_reach_the_containerd_hosts_step_as_a_table() {
    let args = master_step(&shipped(), "node.toml", "containerd registry mirrors").unwrap();
    assert_eq!(args["mirrors"].as_table().map(|t| t.len()), Some(0));
    let (mirrored, _dir) = inventory_with(&[(
        "registry_mirrors",
        "{ \"registry.k8s.io\" = { url = \"http://10.0.0.5:5000\" }, \"quay.io\" = { url = \"http://10.0.0.5:5000\" } }",
    )]);
    let args = master_step(&mirrored, "node.toml", "containerd registry mirrors").unwrap();
    let mirrors = args["mirrors"].as_table().unwrap();
    assert_eq!(
        mirrors.keys().collect::<Vec<_>>(),
        ["quay.io", "registry.k8s.io"]
    );
    assert_eq!(
        mirrors["quay.io"]["url"].as_str(),
        Some("http://10.0.0.5:5000")
    );
    // The whole node playbook still validates with mirrors set.
    let secrets = Secrets::placeholders(mirrored.secret_names.keys());
    let node = Playbook::load(&root().join("playbooks/node.toml")).unwrap();
    validate(&mirrored, &secrets, &[&node], None).unwrap();
}

#[test]
fn calico_kustomization_for_ipip() {
    insta::assert_snapshot!(render_file(
        &shipped(),
        "master",
        "kubernetes/calico-kustomization.yaml.j2"
    ));
}

#[test]
fn calico_kustomization_for_vxlan_drops_bird_everywhere() {
    let (inventory, _dir) = inventory_with(&[("calico_encapsulation", "\"vxlan\"")]);
    let text = render_file(
        &inventory,
        "master",
        "kubernetes/calico-kustomization.yaml.j2",
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let patches = doc["patches"].as_sequence().unwrap();
    let config: serde_yaml::Value =
        serde_yaml::from_str(patches[0]["patch"].as_str().unwrap()).unwrap();
    assert_eq!(config["data"]["calico_backend"].as_str(), Some("vxlan"));
    let node: serde_yaml::Value =
        serde_yaml::from_str(patches[1]["patch"].as_str().unwrap()).unwrap();
    let container = &node["spec"]["template"]["spec"]["containers"][0];
    let env: BTreeMap<&str, &str> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(env["CALICO_IPV4POOL_IPIP"], "Never");
    assert_eq!(env["CALICO_IPV4POOL_VXLAN"], "Always");
    assert_eq!(env["CALICO_IPV4POOL_CIDR"], "10.244.0.0/16");
    for probe in ["livenessProbe", "readinessProbe"] {
        let cmd: Vec<&str> = container[probe]["exec"]["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cmd.len(), 2, "{probe}: {cmd:?}");
        assert!(cmd.iter().all(|c| !c.contains("bird")), "{probe}: {cmd:?}");
    }
    insta::assert_snapshot!(text);
}

#[test]
fn an_existing_calico_pool_is_switched_to_the_inventorys_encapsulation_and_checked_back() {
    let (vxlan, _dir) = inventory_with(&[("calico_encapsulation", "\"vxlan\"")]);
    for (inventory, ipip, vxlan_mode, backend) in [
        (shipped(), "Always", "Never", "bird"),
        (vxlan, "Never", "Always", "vxlan"),
    ] {
        let pool = master_step(&inventory, "master.toml", "Calico IP pool encapsulation").unwrap();
        let cmd = pool["cmd"].as_str().unwrap();
        assert!(
            cmd.contains(&format!(
                "patch ippools.crd.projectcalico.org default-ipv4-ippool --type merge -p '{{\"spec\":{{\"ipipMode\":\"{ipip}\",\"vxlanMode\":\"{vxlan_mode}\"}}}}'"
            )),
            "{cmd}"
        );
        assert!(pool["unless"]
            .as_str()
            .unwrap()
            .contains(&format!("= '{ipip}/{vxlan_mode}' ]")));
        let settings =
            master_step(&inventory, "master.toml", "Calico settings in the cluster").unwrap();
        let unless = settings["unless"].as_str().unwrap();
        assert!(
            unless.contains(&format!("[ \"$backend\" = '{backend}' ]")),
            "{unless}"
        );
        assert!(
            unless.contains(&format!("CALICO_IPV4POOL_IPIP={ipip}'")),
            "{unless}"
        );
        assert!(
            unless.contains(&format!("CALICO_IPV4POOL_VXLAN={vxlan_mode}'")),
            "{unless}"
        );
        assert_eq!(unless.contains("-bird-live"), backend == "bird", "{unless}");
        assert_eq!(
            settings["cmd"].as_str(),
            Some("kubectl --kubeconfig /etc/kubernetes/admin.conf apply -k /etc/kubernetes/calico")
        );
    }
}

/// The pool check's shell, run against a stand-in kubectl: switched only when the pool exists
/// with other modes; a pool not created yet (or its CRD not registered yet) is left to the
/// settings calico-node starts with.
#[test]
fn the_pool_check_runs_the_patch_only_for_an_existing_pool_with_other_modes() {
    let (vxlan, _dir) = inventory_with(&[("calico_encapsulation", "\"vxlan\"")]);
    let pool = master_step(&vxlan, "master.toml", "Calico IP pool encapsulation").unwrap();
    let unless = pool["unless"].as_str().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let converged = |kubectl_says: &str, status: i32| {
        let kubectl = bin.path().join("kubectl");
        let said = bin.path().join("said");
        std::fs::write(&said, kubectl_says).unwrap();
        std::fs::write(
            &kubectl,
            format!("#!/bin/sh\ncat '{}'\nexit {status}\n", said.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap()
        );
        std::process::Command::new("sh")
            .args(["-c", unless])
            .env("PATH", path)
            .status()
            .unwrap()
            .success()
    };
    assert!(converged("Never/Always", 0));
    // ipipMode left out of the pool means Never.
    assert!(converged("/Always", 0));
    assert!(!converged("Always/Never", 0));
    assert!(converged("Error from server (NotFound): ippools.crd.projectcalico.org \"default-ipv4-ippool\" not found", 1));
    assert!(converged(
        "error: the server doesn't have a resource type \"ippools\"",
        1
    ));
    // Any other failure (API down) runs the patch, whose error then stops the run.
    assert!(!converged("The connection to the server was refused", 1));
}

#[test]
fn an_unknown_encapsulation_or_containerd_source_is_refused_with_its_line() {
    let site = std::fs::read_to_string(root().join("playbooks/site.toml")).unwrap();
    let supported: SiteFile = toml::from_str(&site).unwrap();
    check_supported_vars(&shipped(), &supported.supported_vars).unwrap();
    for (var, value) in [
        ("calico_encapsulation", "geneve"),
        ("containerd_source", "snap"),
    ] {
        let (inventory, dir) = inventory_with(&[(var, &format!("\"{value}\""))]);
        let err = check_supported_vars(&inventory, &supported.supported_vars).unwrap_err();
        let text = std::fs::read_to_string(dir.path().join("inventory.toml")).unwrap();
        assert_eq!(err.line, crate::inventory::key_line(&text, var), "{err}");
        assert!(err.message.contains(value), "{err}");
    }
}
