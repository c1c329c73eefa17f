use super::*;
use crate::inventory::Inventory;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_inventory() -> Inventory {
    Inventory::load(&repo().join("inventory.toml")).unwrap()
}

/// The shipped inventory's manifests, secrets replaced by `<secret NAME>` placeholders.
fn shipped() -> Rendered {
    let inv = shipped_inventory();
    let secrets = Secrets::placeholders(inv.secret_names.keys());
    render_for_master(&inv, &secrets, &repo().join("files")).unwrap()
}

fn file<'a>(r: &'a Rendered, path: &str) -> &'a str {
    &r.files
        .iter()
        .find(|f| f.path == Path::new(path))
        .unwrap_or_else(|| panic!("{path} not rendered"))
        .content
}

/// Every YAML document of every rendered file, with its file.
fn documents(r: &Rendered) -> Vec<(PathBuf, serde_yaml::Value)> {
    let mut docs = Vec::new();
    for f in &r.files {
        for doc in serde_yaml::Deserializer::from_str(&f.content) {
            let v = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", f.path.display()));
            if !v.is_null() {
                docs.push((f.path.clone(), v));
            }
        }
    }
    docs
}

fn objects_of_kind<'a>(
    docs: &'a [(PathBuf, serde_yaml::Value)],
    kind: &str,
) -> Vec<&'a serde_yaml::Value> {
    docs.iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

#[test]
fn every_rendered_manifest_of_the_shipped_inventory() {
    let r = shipped();
    for f in &r.files {
        let name = f.path.to_string_lossy().replace('/', "__");
        insta::assert_snapshot!(name, f.content);
    }
}

#[test]
fn the_layout_is_a_kustomize_base_per_namespace_and_one_at_the_top() {
    let r = shipped();
    let paths: Vec<String> = r
        .files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect();
    for dir in [
        "",
        "crypto-exchange/",
        "monitoring/",
        "logging/",
        "nginx-ingress/",
    ] {
        assert!(
            paths.contains(&format!("{dir}kustomization.yaml")),
            "{dir}kustomization.yaml missing from {paths:?}"
        );
    }
    // Every resource a kustomization names is a rendered file, an upstream download or a
    // directory with its own kustomization; and every rendered manifest is named by one.
    let upstream: Vec<&Path> = r.upstream.iter().map(|u| u.path.as_path()).collect();
    let mut named = Vec::new();
    for f in r
        .files
        .iter()
        .filter(|f| f.path.ends_with("kustomization.yaml"))
    {
        let k: serde_yaml::Value = serde_yaml::from_str(&f.content).unwrap();
        let dir = f.path.parent().unwrap();
        for res in k["resources"].as_sequence().unwrap() {
            let p = dir.join(res.as_str().unwrap());
            let ok = r.files.iter().any(|g| g.path == p)
                || upstream.contains(&p.as_path())
                || r.files
                    .iter()
                    .any(|g| g.path == p.join("kustomization.yaml"));
            assert!(
                ok,
                "{} names {}, which is not there",
                f.path.display(),
                p.display()
            );
            named.push(p);
        }
    }
    for f in r
        .files
        .iter()
        .filter(|f| !f.path.ends_with("kustomization.yaml"))
    {
        assert!(
            named.contains(&f.path),
            "{} is in no kustomization",
            f.path.display()
        );
    }
}

#[test]
fn the_ingress_controller_comes_from_the_pinned_f5_release_manifests() {
    let r = shipped();
    let paths: Vec<&Path> = r.upstream.iter().map(|u| u.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            "crds.yaml",
            "ns-and-sa.yaml",
            "rbac.yaml",
            "nginx-config.yaml",
            "ingress-class.yaml",
            "nginx-ingress.yaml"
        ]
        .map(|f| Path::new("nginx-ingress/upstream").join(f))
    );
    for u in &r.upstream {
        // The maintained F5 controller at a release tag, never the retired kubernetes/ingress-nginx.
        assert!(
            u.url
                .starts_with("https://raw.githubusercontent.com/nginx/kubernetes-ingress/v"),
            "{}",
            u.url
        );
        assert!(
            u.url
                .ends_with(u.path.file_name().unwrap().to_str().unwrap()),
            "{u:?}"
        );
        assert_eq!(u.sha256.len(), 64);
    }
    // Fixed NodePorts from the inventory, on the Service the release's Deployment names in its
    // `-external-service=nginx-ingress` flag, selecting the release's pod label `app: nginx-ingress`.
    let s: serde_yaml::Value =
        serde_yaml::from_str(file(&r, "nginx-ingress/service.yaml")).unwrap();
    assert_eq!(s["metadata"]["name"], "nginx-ingress");
    assert_eq!(s["metadata"]["namespace"], "nginx-ingress");
    assert_eq!(s["spec"]["type"], "NodePort");
    assert_eq!(s["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(s["spec"]["ports"][1]["nodePort"], 30443);
    assert_eq!(s["spec"]["selector"]["app"], "nginx-ingress");
    // The seed's Ingress keeps class `nginx`, the release's IngressClass name.
    let ing: serde_yaml::Value =
        serde_yaml::from_str(file(&r, "crypto-exchange/ingress.yaml")).unwrap();
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
}

#[test]
fn every_object_has_a_kind_a_name_and_a_namespace_when_it_needs_one() {
    let r = shipped();
    let docs = documents(&r);
    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (path, d) in docs
        .iter()
        .filter(|(p, _)| !p.ends_with("kustomization.yaml"))
    {
        let kind = d["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no kind", path.display()));
        let name = d["metadata"]["name"].as_str().unwrap();
        let ns = d["metadata"]["namespace"].as_str();
        assert_eq!(
            ns.is_none(),
            cluster_scoped.contains(&kind),
            "{}: {kind}/{name} namespace {ns:?}",
            path.display()
        );
        assert!(seen.insert((kind, ns, name)), "{kind}/{name} twice");
    }
    let names: Vec<String> = seen
        .iter()
        .map(|(k, ns, n)| format!("{k}/{}/{n}", ns.unwrap_or("")))
        .collect();
    for want in [
        "Namespace//crypto-exchange",
        "Namespace//monitoring",
        "Namespace//logging",
        "ConfigMap/crypto-exchange/crypto-exchange-config",
        "Secret/crypto-exchange/crypto-exchange-secret",
        "Deployment/crypto-exchange/django-app",
        "Service/crypto-exchange/django-service",
        "Ingress/crypto-exchange/crypto-exchange-ingress",
        "CronJob/crypto-exchange/postgres-daily-backup",
        "PersistentVolumeClaim/crypto-exchange/postgres-backup-pvc",
        "PersistentVolume//postgres-backup-pv",
        "Deployment/monitoring/prometheus",
        "Service/monitoring/prometheus-service",
        "Deployment/monitoring/grafana",
        "Service/monitoring/grafana-service",
        "DaemonSet/logging/fluent-bit",
        "ServiceAccount/logging/fluent-bit",
        "ClusterRole//fluent-bit",
        "ClusterRoleBinding//fluent-bit",
        "ConfigMap/logging/fluent-bit-config",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing: {names:?}"
        );
    }
}

#[test]
fn the_deployer_role_grants_only_the_django_app_deployment_and_its_rollout() {
    let r = shipped();
    let docs = documents(&r);
    let roles: Vec<_> = objects_of_kind(&docs, "Role")
        .into_iter()
        .filter(|d| d["metadata"]["name"] == "deployer")
        .collect();
    assert_eq!(roles.len(), 1);
    let rules = roles[0]["rules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1, "one rule only: {rules:?}");
    let rule = &rules[0];
    let strings = |key: &str| -> Vec<&str> {
        rule[key]
            .as_sequence()
            .unwrap_or_else(|| panic!("{key} missing"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect()
    };
    assert_eq!(strings("apiGroups"), ["apps"]);
    assert_eq!(
        strings("resources"),
        ["deployments"],
        "no subresources, no other kinds"
    );
    assert_eq!(strings("resourceNames"), ["django-app"]);
    let mut verbs = strings("verbs");
    verbs.sort();
    // set image: get + patch; rollout status: get + list/watch with fieldSelector metadata.name.
    assert_eq!(verbs, ["get", "list", "patch", "watch"]);
    assert!(rule.get("nonResourceURLs").is_none());
    // Bound once, to the deployer account only, by a RoleBinding (never cluster-wide).
    let bindings: Vec<_> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| {
            d["subjects"]
                .as_sequence()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "deployer"))
        })
        .collect();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["kind"], "RoleBinding");
    assert_eq!(bindings[0]["roleRef"]["kind"], "Role");
    assert_eq!(bindings[0]["roleRef"]["name"], "deployer");
    assert_eq!(bindings[0]["subjects"].as_sequence().unwrap().len(), 1);
    // Its token Secret, for the CI kubeconfig.
    let token: Vec<_> = objects_of_kind(&docs, "Secret")
        .into_iter()
        .filter(|d| d["type"] == "kubernetes.io/service-account-token")
        .collect();
    assert_eq!(token.len(), 1);
    assert_eq!(
        token[0]["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "deployer"
    );
}

fn render_with(
    secrets: &[(&str, &str)],
    vars: &[(&str, toml::Value)],
    facts: &[(&str, &str)],
) -> Rendered {
    let mut inv = shipped_inventory();
    let master_vars = &mut inv
        .hosts
        .iter_mut()
        .find(|h| h.has_role("master"))
        .unwrap()
        .vars;
    for (k, v) in vars {
        master_vars.insert(k.to_string(), v.clone());
    }
    // Through a real secrets file (0600), as a run reads them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    let mut table = toml::Table::new();
    for name in inv.secret_names.keys() {
        table.insert(name.clone(), format!("<secret {name}>").into());
    }
    for (k, v) in secrets {
        table.insert(k.to_string(), v.to_string().into());
    }
    write_private(&path, toml::to_string(&table).unwrap().as_bytes()).unwrap();
    let all = Secrets::resolve(&inv.secret_names, &path, &inv.path).unwrap();
    let master = inv.hosts_with_role("master").next().unwrap();
    let facts: BTreeMap<String, String> = facts
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ctx = crate::runner::context::host_context(&inv, master, &all, &facts);
    render_tree(&Renderer::new(&repo().join("files")), &ctx).unwrap()
}

fn image(r: &Rendered) -> String {
    let d: serde_yaml::Value =
        serde_yaml::from_str(file(r, "crypto-exchange/deployment.yaml")).unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_rendered_deployment_always_names_the_inventory_image() {
    // What the cluster runs is kept by the apply handler (app.rs tests), not by the file: a CI
    // deploy must not change a file, or a rerun would report a change.
    let live = [("live_app_image", "example/crypto-exchange:ci-1234")];
    assert_eq!(
        image(&render_with(&[], &[], &live)),
        "username/crypto-exchange:latest"
    );
    let pinned = [("app_image_pinned", toml::Value::Boolean(true))];
    assert_eq!(
        image(&render_with(&[], &pinned, &[])),
        "username/crypto-exchange:latest"
    );
}

#[test]
fn secret_values_land_only_in_the_secret_manifests() {
    let values = [
        ("db_password", "pw-'quote\"-x"),
        ("django_secret_key", "dj-key-3"),
        ("grafana_admin_password", "gf-pass-4"),
        ("log_shipper_password", "ls-pass-5"),
        ("elastic_password", "el-pass-6"),
        ("kibana_system_password", "kb-pass-7"),
    ];
    let r = render_with(&values, &[], &[]);
    let docs = documents(&r);
    for (name, value) in values {
        let holders: Vec<String> = r
            .files
            .iter()
            .filter(|f| f.content.contains(value.split('\'').next().unwrap()))
            .map(|f| f.path.display().to_string())
            .collect();
        match name {
            "elastic_password" | "kibana_system_password" => {
                assert!(holders.is_empty(), "{name} in {holders:?}")
            }
            _ => assert_eq!(holders.len(), 1, "{name} in {holders:?}"),
        }
        for h in &holders {
            let f = r
                .files
                .iter()
                .find(|f| f.path.display().to_string() == *h)
                .unwrap();
            assert!(
                f.content.contains("kind: Secret"),
                "{name} outside a Secret: {h}"
            );
        }
    }
    // Quotes in a value survive as data (stringData is a JSON string).
    let app: Vec<_> = objects_of_kind(&docs, "Secret")
        .into_iter()
        .filter(|d| d["metadata"]["name"] == "crypto-exchange-secret")
        .collect();
    assert_eq!(app[0]["stringData"]["DATABASE_PASSWORD"], "pw-'quote\"-x");
    // Grafana never gets the spec's admin123.
    assert!(!r.files.iter().any(|f| f.content.contains("admin123")));
}

#[test]
fn changed_replicas_change_only_the_deployment() {
    let before = render_with(&[], &[], &[]);
    let after = render_with(&[], &[("app_replicas", toml::Value::Integer(5))], &[]);
    let changed: Vec<_> = before
        .files
        .iter()
        .zip(&after.files)
        .filter(|(a, b)| a.content != b.content)
        .map(|(a, _)| a.path.display().to_string())
        .collect();
    assert_eq!(changed, ["crypto-exchange/deployment.yaml"]);
    assert!(file(&after, "crypto-exchange/deployment.yaml").contains("replicas: 5"));
}

/// Prometheus reads its configuration at start only: a changed one must change the Deployment's
/// pod template (the digest annotation), so the apply rolls the pod.
#[test]
fn a_changed_prometheus_configuration_rolls_the_prometheus_pod() {
    let annotation = |r: &Rendered| -> String {
        let docs = documents(r);
        let d = objects_of_kind(&docs, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"].as_str() == Some("prometheus"))
            .unwrap()
            .clone();
        d["spec"]["template"]["metadata"]["annotations"]["bootstrap/prometheus-config-sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = render_with(&[], &[], &[]);
    let after = render_with(
        &[],
        &[("scrape_interval", toml::Value::String("30s".into()))],
        &[],
    );
    assert_eq!(annotation(&before).len(), 64);
    assert_ne!(annotation(&before), annotation(&after));
    // The digest is the configuration's: the same inventory gives the same pod template.
    assert_eq!(annotation(&before), annotation(&render_with(&[], &[], &[])));
}

/// Each app pod is its own scrape target (EndpointSlices of django-service), never the Service.
#[test]
fn prometheus_scrapes_every_app_pod_not_the_service() {
    let r = shipped();
    let cfg: serde_yaml::Value =
        serde_yaml::from_str(file(&r, "monitoring/prometheus-config.yaml")).unwrap();
    let prom: serde_yaml::Value =
        serde_yaml::from_str(cfg["data"]["prometheus.yml"].as_str().unwrap()).unwrap();
    let job = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"].as_str() == Some("django-app"))
        .unwrap();
    assert!(job.get("static_configs").is_none(), "{job:?}");
    assert_eq!(
        job["kubernetes_sd_configs"][0]["role"].as_str(),
        Some("endpointslice")
    );
    let keep = &job["relabel_configs"][0];
    assert_eq!(keep["action"].as_str(), Some("keep"));
    assert_eq!(keep["regex"].as_str(), Some("django-service;metrics"));
    // No role of the deprecated Endpoints API anywhere.
    assert!(!cfg["data"]["prometheus.yml"]
        .as_str()
        .unwrap()
        .contains("role: endpoints\n"));
    let deploy = file(&r, "monitoring/prometheus.yaml");
    assert!(!deploy.contains("- --web.enable-lifecycle"), "{deploy}");
}

#[test]
fn written_private_and_rewritten_only_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("manifests");
    let r = shipped();
    let first = write_tree(&out, &r.files).unwrap();
    assert_eq!(first.len(), r.files.len());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("crypto-exchange")), 0o700);
    for f in &r.files {
        assert_eq!(mode(&out.join(&f.path)), 0o600, "{}", f.path.display());
    }
    assert!(
        write_tree(&out, &r.files).unwrap().is_empty(),
        "a rerun rewrote files"
    );
    let mut edited = r.files.clone();
    edited[0].content.push_str("# edited\n");
    assert_eq!(
        write_tree(&out, &edited).unwrap(),
        vec![edited[0].path.clone()]
    );
}

#[test]
fn a_template_error_names_the_template_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("manifests/app");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("ok.yaml.j2"), "a: 1\n").unwrap();
    std::fs::write(t.join("bad.yaml.j2"), "a: 1\nb: {{ no_such_var }}\n").unwrap();
    let ctx = minijinja::Value::from_serialize(BTreeMap::<String, String>::new());
    let err = render_tree(&Renderer::new(dir.path()), &ctx).unwrap_err();
    assert!(err.file.ends_with("manifests/app/bad.yaml.j2"), "{err}");
    assert_eq!(err.line, Some(2), "{err}");
}

#[test]
fn an_upstream_pin_that_is_not_a_sha256_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("manifests/x");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(
        t.join("upstream.toml.j2"),
        "[[file]]\nurl = \"https://example.org/a.yaml\"\nsha256 = \"abc\"\npath = \"a.yaml\"\n",
    )
    .unwrap();
    let ctx = minijinja::Value::from_serialize(BTreeMap::<String, String>::new());
    let err = render_tree(&Renderer::new(dir.path()), &ctx).unwrap_err();
    assert!(err.message.contains("not a sha256"), "{err}");
}

#[test]
fn the_example_ci_workflow_only_does_what_the_deployer_role_allows() {
    let workflow = std::fs::read_to_string(repo().join("files/ci/ci-cd.yml")).unwrap();
    let _: serde_yaml::Value = serde_yaml::from_str(&workflow).unwrap();
    let kubectl: Vec<&str> = workflow
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl "))
        .collect();
    assert_eq!(kubectl.len(), 2, "{kubectl:?}");
    assert!(
        kubectl[0].contains(" set image \"deployment/$DEPLOYMENT\""),
        "{}",
        kubectl[0]
    );
    assert!(
        kubectl[1].contains(" rollout status \"deployment/$DEPLOYMENT\""),
        "{}",
        kubectl[1]
    );
    assert!(workflow.contains("DEPLOYMENT: django-app"));
    assert!(workflow.contains("context: ./Exchange"));
    assert!(workflow.contains("secrets.KUBE_CONFIG"));
}

/// Serves `body` over HTTP on loopback for each of `requests` connections; returns its URL.
fn serve(body: &'static str, requests: usize) -> String {
    use std::io::{BufRead as _, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/deploy.yaml", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    url
}

#[test]
fn upstream_files_are_downloaded_only_when_their_sha256_matches() {
    use sha2::Digest as _;
    let body = "kind: List\n";
    let good = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("manifests");
    let upstream = |sha256: &str| Upstream {
        url: serve(body, 1),
        sha256: sha256.to_string(),
        path: PathBuf::from("nginx-ingress/upstream/crds.yaml"),
    };
    let bad = "0".repeat(64);
    let err = vendor_upstream(&out, &[upstream(&bad)], &dir.path().join("cache-1")).unwrap_err();
    assert!(format!("{err:#}").contains("sha256"), "{err:#}");
    assert!(!out.join("nginx-ingress/upstream/crds.yaml").exists());

    vendor_upstream(&out, &[upstream(&good)], &dir.path().join("cache-2")).unwrap();
    let written = out.join("nginx-ingress/upstream/crds.yaml");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), body);
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn fluent_bit_ships_to_the_data_stream_over_verified_tls_with_bounded_retries() {
    let r = shipped();
    let conf = file(&r, "logging/fluent-bit-config.yaml");
    for want in [
        "Index               k8s-containers",
        "Write_Operation     create",
        "Suppress_Type_Name  On",
        "Buffer_Size         False",
        "Trace_Error         On",
        "Retry_Limit         30",
        "storage.total_limit_size  2G",
        "storage.path               /var/lib/fluent-bit/buffer",
        "storage.type      filesystem",
        "Merge_Log_Key       log_processed",
        "tls                 On",
        "tls.verify          On",
        "tls.verify_hostname On",
        "tls.ca_file         /fluent-bit/etc/elasticsearch-ca/ca.crt",
    ] {
        assert!(conf.contains(want), "{want:?} not in:\n{conf}");
    }
    // Never retried forever (a chunk Elasticsearch refuses whole would block its input).
    assert!(!conf.contains("Retry_Limit         False"), "{conf}");
    // The CA is mounted where tls.ca_file points, from the ConfigMap of that name.
    let ds: serde_yaml::Value = serde_yaml::from_str(file(&r, "logging/fluent-bit.yaml")).unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "elasticsearch-ca")
        .expect("no elasticsearch-ca mount");
    assert_eq!(mount["mountPath"], "/fluent-bit/etc/elasticsearch-ca");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "elasticsearch-ca")
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "elasticsearch-ca");
    let cm: serde_yaml::Value =
        serde_yaml::from_str(file(&r, "logging/elasticsearch-ca.yaml")).unwrap();
    assert_eq!(cm["metadata"]["name"], "elasticsearch-ca");
    assert!(cm["data"]["ca.crt"].is_string());
}

#[test]
fn the_elasticsearch_ca_comes_from_the_copy_bootstrap_elk_fetched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("inventory.toml"),
        dir.path().join("inventory.toml"),
    )
    .unwrap();
    let render = || {
        let inv = Inventory::load(&dir.path().join("inventory.toml")).unwrap();
        let secrets = Secrets::placeholders(inv.secret_names.keys());
        render_for_master(&inv, &secrets, &repo().join("files")).unwrap()
    };
    let ca_of = |r: &Rendered| {
        let cm: serde_yaml::Value =
            serde_yaml::from_str(file(r, "logging/elasticsearch-ca.yaml")).unwrap();
        cm["data"]["ca.crt"].as_str().unwrap().to_string()
    };
    let annotation = |r: &Rendered| {
        let ds: serde_yaml::Value =
            serde_yaml::from_str(file(r, "logging/fluent-bit.yaml")).unwrap();
        ds["spec"]["template"]["metadata"]["annotations"]["bootstrap/elasticsearch-ca-sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Before `bootstrap elk` ever ran: empty, and the file says so.
    let before = render();
    assert_eq!(ca_of(&before), "");
    assert!(file(&before, "logging/elasticsearch-ca.yaml").contains("EMPTY"));
    // After it fetched the CA: that certificate, and Fluent Bit's pods roll (their annotation).
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBstandin\n-----END CERTIFICATE-----\n";
    std::fs::create_dir_all(dir.path().join(".bootstrap")).unwrap();
    std::fs::write(
        dir.path().join(".bootstrap").join(FETCHED_ELASTICSEARCH_CA),
        pem,
    )
    .unwrap();
    let after = render();
    assert_eq!(ca_of(&after), pem);
    assert!(!file(&after, "logging/elasticsearch-ca.yaml").contains("EMPTY"));
    assert_ne!(annotation(&before), annotation(&after));
}
