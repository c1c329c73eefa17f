//! Facts: what a host reports about itself before its steps are rendered (OS facts every play
//! gets, plus each playbook's own `[facts]`), asked for one or several playbooks in one script.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::modules::probe_util;
use crate::playbook::Playbook;
use crate::runner::batch::Batch;

/// The facts every play can read, gathered by `OS_FACTS`.
pub const OS_FACT_NAMES: &[&str] = &["os_id", "os_version", "os_codename", "arch", "hostname"];

/// The read-only facts every play starts with.
const OS_FACTS: &str = r#". /etc/os-release 2>/dev/null
echo "os_id=${ID:-}"
echo "os_version=${VERSION_ID:-}"
echo "os_codename=${VERSION_CODENAME:-}"
echo "arch=$(dpkg --print-architecture 2>/dev/null || uname -m)"
echo "hostname=$(hostname 2>/dev/null || cat /etc/hostname)""#;

pub type Facts = BTreeMap<String, String>;

/// Fact commands running at once on a host.
const FACTS_CONCURRENCY: usize = 4;

/// The facts script for some playbooks, and which batch part answers which fact of which
/// playbook, by name: two facts with the same command share one part (the batch sends it
/// once), so parts are not one per fact.
pub struct FactsRequest {
    batch: Batch,
    os_part: usize,
    /// Per playbook (in the order given): its path and its facts' parts.
    playbooks: Vec<(PathBuf, Vec<(String, usize)>)>,
}

impl FactsRequest {
    pub fn new(playbook: &Playbook) -> FactsRequest {
        FactsRequest::for_playbooks(&[playbook])
    }

    /// One script answering the facts of every playbook given (a host's whole run).
    pub fn for_playbooks(playbooks: &[&Playbook]) -> FactsRequest {
        // Facts are read-only queries (a cluster list, a version, an API lookup): a few at a
        // time, so the lock's round trip lasts about as long as the slowest one.
        let mut batch = Batch::concurrent(FACTS_CONCURRENCY);
        let os_part = batch.push(OS_FACTS);
        let playbooks = playbooks
            .iter()
            .map(|playbook| {
                let parts = playbook
                    .facts
                    .iter()
                    .map(|(name, cmd)| {
                        (
                            name.clone(),
                            batch.push(&format!("{{ {cmd}\n}} 2>/dev/null")),
                        )
                    })
                    .collect();
                (playbook.path.clone(), parts)
            })
            .collect();
        FactsRequest {
            batch,
            os_part,
            playbooks,
        }
    }

    pub fn script(&self) -> String {
        self.batch.script()
    }

    /// The first playbook's facts (the one `new` was given).
    pub fn read(&self, stdout: &str) -> Facts {
        self.read_all(stdout)
            .into_values()
            .next()
            .unwrap_or_default()
    }

    /// Each playbook's facts, by playbook path. A fact that fails or prints nothing stays
    /// absent, so templates using it say so instead of rendering an empty string.
    pub fn read_all(&self, stdout: &str) -> BTreeMap<PathBuf, Facts> {
        let parsed = self.batch.parse(stdout);
        let mut os = Facts::new();
        if let Some(Some((_, text))) = parsed.get(self.os_part) {
            os.extend(
                probe_util::key_values(text)
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty()),
            );
        }
        self.playbooks
            .iter()
            .map(|(path, parts)| {
                let mut facts = os.clone();
                for (name, part) in parts {
                    if let Some(Some((0, text))) = parsed.get(*part) {
                        let value = text.trim();
                        if !value.is_empty() {
                            facts.insert(name.clone(), value.to_string());
                        }
                    }
                }
                (path.clone(), facts)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playbook(path: &str, facts: &str) -> Playbook {
        Playbook::parse(
            std::path::Path::new(path),
            &format!("name = \"p\"\nhosts = \"all\"\n[facts]\n{facts}"),
        )
        .unwrap()
    }

    fn run(script: &str) -> String {
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn facts_with_the_same_command_shifted_every_later_fact() {
        let p = playbook(
            "p.toml",
            "a = \"echo same\"\nb = \"echo same\"\nc = \"echo third\"\n",
        );
        let request = FactsRequest::new(&p);
        let facts = request.read(&run(&request.script()));
        assert_eq!(facts.get("a").map(String::as_str), Some("same"));
        assert_eq!(facts.get("b").map(String::as_str), Some("same"));
        assert_eq!(facts.get("c").map(String::as_str), Some("third"));
    }

    #[test]
    fn facts_of_several_playbooks_in_one_script_stay_apart() {
        // Same fact name, different commands: each playbook gets its own answer.
        let one = playbook("one.toml", "v = \"echo first\"\nshared = \"echo both\"\n");
        let two = playbook("two.toml", "v = \"echo second\"\nshared = \"echo both\"\n");
        let request = FactsRequest::for_playbooks(&[&one, &two]);
        let all = request.read_all(&run(&request.script()));
        let get = |p: &str, k: &str| all[&PathBuf::from(p)].get(k).cloned();
        assert_eq!(get("one.toml", "v").as_deref(), Some("first"));
        assert_eq!(get("two.toml", "v").as_deref(), Some("second"));
        assert_eq!(get("two.toml", "shared").as_deref(), Some("both"));
        // OS facts reach every playbook.
        assert!(get("one.toml", "arch").is_some() && get("two.toml", "arch").is_some());
        // The shared command ran once.
        assert_eq!(request.script().matches("echo both").count(), 1);
    }
}
