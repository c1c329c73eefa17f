//! Secret masking in one place: every log line, event and diff goes through a `Redactor`.

use std::sync::{Arc, RwLock};

pub const MASK: &str = "********";

/// Holds the secret values of a run and replaces them wherever they would be shown. Clones
/// share one list, so a secret learnt during the run (a registered secret value) is masked by
/// every log and reporter from then on.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        // Longest first, so a secret that contains another is masked whole.
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets: Arc::new(RwLock::new(secrets)),
        }
    }

    /// Adds a secret learnt during the run; every clone masks it from now on.
    pub fn add(&self, secret: &str) {
        if secret.len() < 4 {
            return;
        }
        let mut list = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|s| s == secret) {
            list.push(secret.to_string());
            list.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    fn list(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.secrets.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.list().iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    pub fn redact_bytes(&self, bytes: &[u8]) -> String {
        self.redact(&String::from_utf8_lossy(bytes))
    }

    pub fn contains_secret(&self, text: &str) -> bool {
        self.list().iter().any(|s| text.contains(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_longest_first() {
        let r = Redactor::new(["hunter22".to_string(), "hunter22-extended".to_string()]);
        assert_eq!(
            r.redact("a hunter22-extended b hunter22"),
            format!("a {MASK} b {MASK}")
        );
        assert!(!r.contains_secret(&r.redact("hunter22")));
    }

    #[test]
    fn a_secret_added_later_is_masked_by_every_clone() {
        let r = Redactor::new(["hunter22".to_string()]);
        let clone = r.clone();
        r.add("sekrit-token.abcdef");
        assert_eq!(
            clone.redact("join sekrit-token.abcdef"),
            format!("join {MASK}")
        );
        assert!(clone.contains_secret("x sekrit-token.abcdef"));
    }

    #[test]
    fn very_short_values_are_not_treated_as_secrets() {
        // Masking "a" would shred all output; secrets init never makes values that short.
        let r = Redactor::new(["a".to_string()]);
        assert_eq!(r.redact("banana"), "banana");
    }
}
