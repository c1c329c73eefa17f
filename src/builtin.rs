//! The role playbooks and templates, built into the binary so that `bootstrap` is one file: when
//! no `playbooks/` directory is at hand, the built-in copy is written out once (per content
//! hash) under the state directory and used from there.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};
use sha2::{Digest, Sha256};

static PLAYBOOKS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/playbooks");
static FILES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/files");

/// The `playbooks` directory of the built-in copy, written under `state_dir` if not there yet.
pub fn playbooks_dir(state_dir: &Path) -> std::io::Result<PathBuf> {
    let mut hasher = Sha256::new();
    for dir in [&PLAYBOOKS, &FILES] {
        for file in all_files(dir) {
            hasher.update(file.path().to_string_lossy().as_bytes());
            hasher.update(file.contents());
        }
    }
    let hash = hex::encode(hasher.finalize());
    let root = state_dir.join("builtin").join(&hash[..16]);
    if !root.join("playbooks/site.toml").exists() {
        // Written beside, then renamed: a run never sees half a copy.
        let tmp = state_dir
            .join("builtin")
            .join(format!(".tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for (dir, name) in [(&PLAYBOOKS, "playbooks"), (&FILES, "files")] {
            for file in all_files(dir) {
                let path = tmp.join(name).join(file.path());
                std::fs::create_dir_all(path.parent().expect("a file has a parent"))?;
                std::fs::write(&path, file.contents())?;
            }
        }
        if std::fs::rename(&tmp, &root).is_err() {
            // Another run wrote the same content first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    Ok(root.join("playbooks"))
}

fn all_files<'a>(dir: &'a Dir<'a>) -> Vec<&'a include_dir::File<'a>> {
    let mut out: Vec<&include_dir::File> = dir.files().collect();
    for sub in dir.dirs() {
        out.extend(all_files(sub));
    }
    out.sort_by_key(|f| f.path());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_copy_matches_the_repository() {
        let state = tempfile::tempdir().unwrap();
        let dir = playbooks_dir(state.path()).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for rel in [
            "playbooks/site.toml",
            "playbooks/worker.toml",
            "files/postgres/pg_hba.conf.j2",
        ] {
            let built = dir.parent().unwrap().join(rel);
            assert_eq!(
                std::fs::read(&built).unwrap(),
                std::fs::read(repo.join(rel)).unwrap(),
                "{rel}"
            );
        }
        // A second call reuses the copy.
        assert_eq!(playbooks_dir(state.path()).unwrap(), dir);
    }

    /// Every string of a TOML value, depth first.
    fn strings(value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            toml::Value::Table(t) => t.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }

    /// kubectl's jsonpath refuses a raw newline in a quoted string ("unterminated quoted
    /// string"): in a TOML basic string `{"\n"}` must be written with the backslash doubled.
    #[test]
    fn no_jsonpath_string_in_a_playbook_holds_a_raw_newline() {
        for file in all_files(&PLAYBOOKS) {
            let text = std::str::from_utf8(file.contents()).unwrap();
            let value: toml::Value = toml::from_str(text).unwrap();
            let mut all = Vec::new();
            strings(&value, &mut all);
            for s in all.iter().filter(|s| s.contains("jsonpath=")) {
                let mut rest = s.as_str();
                while let Some(start) = rest.find("{\"") {
                    let tail = &rest[start + 2..];
                    let end = tail.find("\"}").unwrap_or(tail.len());
                    assert!(
                        !tail[..end].contains('\n'),
                        "{}: a jsonpath string holds a raw newline in: {s}",
                        file.path().display()
                    );
                    rest = &tail[end..];
                }
            }
        }
    }
}

#[cfg(test)]
mod elk_tests {
    use super::*;

    /// The built-in elk.toml, parsed.
    fn elk_playbook() -> toml::Value {
        let file = PLAYBOOKS.get_file("elk.toml").unwrap();
        toml::from_str(file.contents_utf8().unwrap()).unwrap()
    }

    /// The `unless` of elk.toml's Kibana status step, its curl replaced by a recorded answer.
    fn kibana_serves(status_json: &str) -> bool {
        let value = elk_playbook();
        let step = value["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"].as_str() == Some("Kibana reports available (up to 5 minutes)"))
            .unwrap();
        let unless = step["command"]["unless"].as_str().unwrap();
        let curl = "curl -fsS --cacert /etc/elasticsearch/certs/http_ca.crt -K - {{ elasticsearch_scheme }}://{{ host.address }}:{{ kibana_port }}/api/status";
        assert!(unless.contains(curl), "{unless}");
        let script = unless.replace(curl, "printf '%s' \"$STATUS\"");
        std::process::Command::new("sh")
            .args(["-c", &script])
            .env("STATUS", status_json)
            .status()
            .unwrap()
            .success()
    }

    // The shape of Kibana's GET /api/status; overall.level is one of Kibana's ServiceStatusLevels
    // (available, degraded, unavailable, critical).
    #[test]
    fn kibana_counts_as_serving_when_available_or_degraded_only() {
        let status = |level: &str| {
            format!(
                "{{\"name\":\"elk\",\"version\":{{\"number\":\"9.1.0\"}},\"status\":{{\"overall\":{{\"level\":\"{level}\",\"summary\":\"x\"}},\"core\":{{}}}}}}"
            )
        };
        assert!(kibana_serves(&status("available")));
        assert!(kibana_serves(&status("degraded")));
        assert!(!kibana_serves(&status("unavailable")));
        assert!(!kibana_serves(&status("critical")));
    }

    /// The heap_default_mb fact of elk.toml for a host with `total_mib` of memory.
    fn default_heap_mb(total_mib: u64) -> u64 {
        let value = elk_playbook();
        let fact = value["facts"]["heap_default_mb"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let meminfo = dir.path().join("meminfo");
        std::fs::write(
            &meminfo,
            format!("MemTotal:       {} kB\nMemFree: 1 kB\n", total_mib * 1024),
        )
        .unwrap();
        let script = fact.replace("/proc/meminfo", &meminfo.to_string_lossy());
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn elasticsearch_leaves_kibana_its_share_of_the_memory() {
        // 8 GiB: Kibana's 1 GiB first, then half of the rest (not half of the 8).
        assert_eq!(default_heap_mb(8192), 3584);
        assert_eq!(default_heap_mb(4096), 1536);
        // Small hosts keep the 256 MiB floor; big ones the 31 GiB ceiling.
        assert_eq!(default_heap_mb(1024), 256);
        assert_eq!(default_heap_mb(131072), 31744);
    }
}
