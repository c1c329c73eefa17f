//! `bootstrap diagram` from the command line: runs without secrets and without connecting,
//! writes one page or the three, and refuses an output it cannot honour (exit 2).

use std::path::Path;
use std::process::Command;

use crate::support::shipped_project as project;

fn bootstrap(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
        .current_dir(dir)
        .args(["-i", "inventory.toml"])
        .args(args)
        .env_remove("BOOTSTRAP_INVENTORY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn diagram_prints_one_layer_without_secrets_or_hosts() {
    let p = project();
    let (code, out, err) = bootstrap(p.path(), &["diagram", "--layer", "1", "--format", "dot"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("digraph"), "{out}");
    assert!(
        out.contains("192.0.2.12") && out.contains("5432/tcp"),
        "{out}"
    );
    assert!(!p.path().join("secrets.toml").exists());
    let (code, out, err) = bootstrap(
        p.path(),
        &["diagram", "--layer", "3", "--format", "mermaid"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("flowchart LR") && out.contains("Secret crypto-exchange-secret"));
}

#[test]
fn diagram_writes_the_three_svg_pages_into_a_directory() {
    let p = project();
    let dir = p.path().join("pages");
    std::fs::create_dir(&dir).unwrap();
    let (code, out, err) = bootstrap(p.path(), &["diagram", "-o", "pages"]);
    assert_eq!(code, 0, "{err}");
    for n in 1..=3 {
        let page = std::fs::read_to_string(dir.join(format!("architecture-layer{n}.svg"))).unwrap();
        assert!(
            page.starts_with("<svg") && page.contains("192.0.2.11"),
            "layer {n}"
        );
        assert!(out.contains(&format!("layer {n}:")), "{out}");
    }
}

#[test]
fn diagram_refuses_three_svg_pages_on_one_stream() {
    let p = project();
    let (code, out, err) = bootstrap(p.path(), &["diagram"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--layer N"), "{err}");
    let (code, _, err) = bootstrap(p.path(), &["diagram", "-o", "one.svg"]);
    assert_eq!(code, 2, "{err}");
    assert!(!p.path().join("one.svg").exists());
}
