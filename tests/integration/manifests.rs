//! `bootstrap manifests --render-only` and `bootstrap check` on the shipped playbooks and
//! templates: rendering connects to nothing, writes a private directory, and a broken template
//! is bad input (exit 2) naming its file and line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::shipped_project as project;

fn bootstrap(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .current_dir(dir)
        .args(["-i", "inventory.toml"])
        .args(args)
        .env_remove("BOOTSTRAP_INVENTORY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn render_only_writes_a_private_kustomize_directory_beside_the_inventory() {
    let p = project();
    let (code, out) = bootstrap(p.path(), &["secrets", "init"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = bootstrap(p.path(), &["manifests", "--render-only", "--offline"]);
    assert_eq!(code, 0, "{out}");
    let dir = p.path().join(".bootstrap/manifests");
    assert_eq!(mode(&dir), 0o700);
    let secret = dir.join("crypto-exchange/secret.yaml");
    assert_eq!(mode(&secret), 0o600);
    for k in [
        "",
        "crypto-exchange/",
        "monitoring/",
        "logging/",
        "nginx-ingress/",
    ] {
        assert!(dir.join(format!("{k}kustomization.yaml")).exists(), "{k}");
    }
    // The secret values are in the Secret, and nowhere in what the command printed.
    let secrets = std::fs::read_to_string(p.path().join("secrets.toml")).unwrap();
    let table: toml::Table = toml::from_str(&secrets).unwrap();
    let db_password = table["db_password"].as_str().unwrap();
    assert!(std::fs::read_to_string(&secret)
        .unwrap()
        .contains(db_password));
    assert!(!out.contains(db_password), "{out}");
    // A second render changes nothing.
    let (code, out) = bootstrap(p.path(), &["manifests", "--render-only", "--offline"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(0 changed)"), "{out}");
}

#[test]
fn a_broken_manifest_template_is_bad_input_with_file_and_line() {
    let p = project();
    let t = p
        .path()
        .join("files/manifests/crypto-exchange/service.yaml.j2");
    let mut text = std::fs::read_to_string(&t).unwrap();
    text.push_str("  extra: {{ no_such_variable }}\n");
    let line = text.lines().count();
    std::fs::write(&t, text).unwrap();
    let want = format!("files/manifests/crypto-exchange/service.yaml.j2:{line}");
    let (code, out) = bootstrap(p.path(), &["check"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&want), "check: {out}");
    let (code, out) = bootstrap(p.path(), &["secrets", "init"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = bootstrap(p.path(), &["manifests", "--render-only", "--offline"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&want), "render: {out}");
    assert!(
        !p.path().join(".bootstrap/manifests").exists(),
        "half a render was written"
    );
}

/// The lab's `--json` runs fed the render report to jq as if it were an event: with --json,
/// stdout carries only JSON lines and the report goes to stderr.
#[test]
fn json_mode_keeps_the_render_report_off_stdout() {
    let p = project();
    let (code, out) = bootstrap(p.path(), &["secrets", "init"]);
    assert_eq!(code, 0, "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .current_dir(p.path())
        .args(["-i", "inventory.toml", "--json"])
        .args(["manifests", "--render-only", "--offline"])
        .env_remove("BOOTSTRAP_INVENTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON on stdout: {line:?}"
        );
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("manifests: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
