//! Debian packages through apt.
//!
//! Arguments:
//! - `packages` (required): names, each optionally pinned to an exact version with `=`
//!   (`"kubelet=1.30.4-1.1"`; include the epoch if the version has one).
//! - `state` (default `"present"`):
//!   - `"present"`: installed (at the pinned version, when pinned);
//!   - `"latest"`: installed at the candidate version of fresh package lists;
//!   - `"held"`: installed (at the pinned version) and held with `apt-mark hold`, so upgrades
//!     leave it alone; a package held at another version is unheld, installed, held again;
//!   - `"absent"`: removed (`apt-get remove`, configuration kept).
//! - `cache_valid_time` (seconds, optional): package lists older than this count as stale.
//!   Stale lists are refreshed only when something must be installed (or for `latest`), so a
//!   converged host stays untouched however old its lists are. Lists that were never
//!   downloaded, or that lack a wanted package or version, are always refreshed first.
//!   For `latest` it defaults to one hour: "latest" means the candidate of fresh lists, so
//!   lists are refreshed (a change) at most once an hour however often it runs.
//!
//! A virtual package (`awk`, `mail-transport-agent`) is present when an installed package
//! provides it: it has no dpkg record of its own.
//!
//! ```toml
//! [[steps]]
//! name = "kubernetes packages"
//! apt = { packages = ["kubelet=1.30.4-1.1", "kubeadm=1.30.4-1.1"], state = "held", cache_valid_time = 3600 }
//! ```
//!
//! Installs never prompt (`DEBIAN_FRONTEND=noninteractive`, keep existing config files) and wait
//! up to 10 minutes for the dpkg lock (unattended-upgrades on a fresh host) instead of failing.

use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
    Held,
    Latest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    packages: Vec<String>,
    #[serde(default)]
    state: State,
    #[serde(default)]
    cache_valid_time: Option<u64>,
}

/// One wanted package, with its pinned version if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
}

impl Package {
    /// `name` or `name=version`, as apt-get takes it.
    fn spec(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={v}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug)]
pub struct Apt {
    pub packages: Vec<Package>,
    pub state: State,
    pub cache_valid_time: Option<u64>,
}

/// Shared apt-get options: no prompts, keep local config files, wait for the dpkg lock.
pub(crate) const APT_GET: &str = "DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get -y -q \
     -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

/// How old the lists may be for `latest` when `cache_valid_time` is not given.
const LATEST_DEFAULT_VALID_SECS: u64 = 3600;

/// Touched after each refresh: list files keep the archive's dates, not the download's.
const UPDATE_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";

fn valid_name(name: &str) -> bool {
    let (base, arch) = match name.split_once(':') {
        Some((b, a)) => (b, Some(a)),
        None => (name, None),
    };
    let base_ok = base.len() >= 2
        && base.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && base
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let arch_ok = arch
        .is_none_or(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    base_ok && arch_ok
}

fn valid_version(v: &str) -> bool {
    v.starts_with(|c: char| c.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b))
}

impl Apt {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: Args = parse_args("apt", args, ctx)?;
        let err = |msg: String, hint: &str| InputError::new(ctx.playbook, ctx.line, msg).hint(hint);
        if a.packages.is_empty() {
            return Err(err(
                "`packages` is empty".into(),
                "list at least one package, e.g. packages = [\"curl\"]",
            ));
        }
        let mut packages: Vec<Package> = Vec::new();
        for spec in &a.packages {
            let (name, version) = match spec.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (spec.as_str(), None),
            };
            if !valid_name(name) {
                return Err(err(
                    format!("{spec:?} is not a Debian package name"),
                    "names are lowercase letters, digits, '+', '-', '.' (optionally :arch)",
                ));
            }
            if let Some(v) = &version {
                if !valid_version(v) {
                    return Err(err(
                        format!("{spec:?}: {v:?} is not a Debian version"),
                        "pin an exact version as shown by `apt-cache policy NAME`",
                    ));
                }
                if a.state == State::Absent || a.state == State::Latest {
                    return Err(err(
                        format!(
                            "{spec:?}: a pinned version makes no sense with state {:?}",
                            a.state
                        ),
                        "drop the `=version`, or use state = \"present\" or \"held\"",
                    ));
                }
            }
            if packages.iter().any(|p| p.name == name) {
                return Err(err(
                    format!("package `{name}` is listed twice"),
                    "list each package once",
                ));
            }
            packages.push(Package {
                name: name.to_string(),
                version,
            });
        }
        Ok(Apt {
            packages,
            state: a.state,
            cache_valid_time: a.cache_valid_time,
        })
    }
}

/// What the probe said about one package.
#[derive(Debug, Default)]
struct PkgFacts {
    /// dpkg's three-letter abbreviation, e.g. "ii " (wanted install, installed) or "hi ".
    status: String,
    version: String,
    candidate: Option<String>,
    known: Vec<String>,
    /// An installed package that provides this name (a virtual package has no record itself).
    provided_by: Option<String>,
}

impl PkgFacts {
    fn installed(&self) -> bool {
        // Second letter: 'i' installed; anything else (unpacked, half-configured...) needs work.
        self.status.as_bytes().get(1) == Some(&b'i')
    }
    /// Present on disk in some form apt-get remove would act on.
    fn on_disk(&self) -> bool {
        matches!(self.status.as_bytes().get(1), Some(s) if !b"nc".contains(s))
    }
    fn held(&self) -> bool {
        self.status.starts_with('h')
    }
}

impl Module for Apt {
    fn probe(&self, _opts: ProbeOptions) -> String {
        let mut s = String::from(
            "apt_ask=\n\
             apt_now=$(date +%s); echo \"apt_now=$apt_now\"\n\
             apt_lists=$(find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -printf '%T@\\n' 2>/dev/null | cut -d. -f1 | sort -n | tail -n 1)\n\
             if [ -z \"$apt_lists\" ]; then echo apt_lists=never; else\n",
        );
        s += &format!(
            "apt_stamp=$(stat -c %Y {UPDATE_STAMP} /var/cache/apt/pkgcache.bin 2>/dev/null | sort -n | tail -n 1)\n\
             echo \"apt_lists=$apt_lists\"; echo \"apt_stamp=${{apt_stamp:-0}}\"; fi\n"
        );
        for (i, p) in self.packages.iter().enumerate() {
            let name = quote(&p.name);
            let fmt = quote(&format!(
                "pkg.{i}.status=${{db:Status-Abbrev}}\\npkg.{i}.version=${{Version}}\\n"
            ));
            s += &format!(
                "apt_q=$(dpkg-query -W -f={fmt} {name} 2>/dev/null | head -n 2)\n\
                 [ -n \"$apt_q\" ] && printf '%s\\n' \"$apt_q\"\n"
            );
            if self.state == State::Present && p.version.is_none() {
                // Not installed under its own name: maybe a virtual package some installed
                // package provides (apt-cache lists the providers under "Reverse Provides:").
                s += &format!(
                    "if ! dpkg-query -W -f='${{db:Status-Abbrev}}' {name} 2>/dev/null | grep -q '^.i'; then \
                     for q in $(apt-cache showpkg {name} 2>/dev/null | awk '/^Reverse Provides:/ {{f = 1; next}} f && NF {{print $1}}' | sort -u); do \
                     if dpkg-query -W -f='${{db:Status-Abbrev}}' \"$q\" 2>/dev/null | grep -q '^.i'; then echo \"pkg.{i}.provided_by=$q\"; break; fi; \
                     done; fi\n"
                );
            }
            // apt-cache policy costs ~0.25 s a call: asked only for what the plan may need
            // (a package not installed, a pin not met, or `latest`), once for all of them.
            if self.state != State::Absent {
                let met = match (&p.version, self.state) {
                    (_, State::Latest) => "false".to_string(),
                    (Some(v), _) => format!(
                        "case \"$apt_q\" in 'pkg.{i}.status='?i*'\npkg.{i}.version='{}) true ;; *) false ;; esac",
                        quote(v)
                    ),
                    (None, _) => format!(
                        "case \"$apt_q\" in 'pkg.{i}.status='?i*) true ;; *) false ;; esac"
                    ),
                };
                s += &format!("{met} || apt_ask=\"$apt_ask {i}={name}\"\n");
            }
        }
        if self.state != State::Absent {
            // One call for all asked packages; each section starts with the name apt knows it
            // by (`name:` or `name:arch:`), mapped back to the package's index.
            s += "if [ -n \"$apt_ask\" ]; then\n\
                  apt-cache policy $(for a in $apt_ask; do printf '%s ' \"${a#*=}\"; done) 2>/dev/null | \
                  awk -v ask=\"$apt_ask\" '\n\
                  BEGIN { n = split(ask, w, \" \"); for (k = 1; k <= n; k++) { e = index(w[k], \"=\"); i = substr(w[k], 1, e - 1); name = substr(w[k], e + 1); idx[name] = i; base = name; sub(/:.*/, \"\", base); if (!(base in idx)) idx[base] = i } }\n\
                  function flush() { if (cur != \"\") { print \"pkg.\" cur \".known=\" v } cur = \"\"; v = \"\" }\n\
                  /^[^ ].*:$/ { flush(); h = substr($0, 1, length($0) - 1); if (!(h in idx)) sub(/:[^:]*$/, \"\", h); cur = (h in idx) ? idx[h] : \"\"; next }\n\
                  cur == \"\" { next }\n\
                  /^  Candidate:/ { print \"pkg.\" cur \".candidate=\" $2 }\n\
                  /^ (\\*\\*\\*|   ) [^ ]/ { v = v \" \" ($1 == \"***\" ? $2 : $1) }\n\
                  END { flush() }'\n\
                  fi\n";
        }
        s
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let kv = probe_util::key_values(&probe.stdout);
        let now: u64 = kv
            .get("apt_now")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| PlanError("apt probe printed no time".into()))?;
        let facts: Vec<PkgFacts> = (0..self.packages.len())
            .map(|i| {
                let get = |k: &str| kv.get(&format!("pkg.{i}.{k}")).map(|v| v.trim());
                PkgFacts {
                    status: kv
                        .get(&format!("pkg.{i}.status"))
                        .cloned()
                        .unwrap_or_default(),
                    version: get("version").unwrap_or("").to_string(),
                    candidate: get("candidate")
                        .filter(|c| !c.is_empty() && *c != "(none)")
                        .map(str::to_string),
                    known: get("known")
                        .unwrap_or("")
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                    provided_by: get("provided_by")
                        .filter(|p| !p.is_empty())
                        .map(str::to_string),
                }
            })
            .collect();
        let lists_age = match kv.get("apt_lists").map(|v| v.trim()) {
            Some("never") | None => None,
            Some(t) => {
                let lists: u64 = t.parse().unwrap_or(0);
                let stamp: u64 = kv
                    .get("apt_stamp")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                Some(now.saturating_sub(lists.max(stamp)))
            }
        };
        Ok(self.plan_from(&facts, lists_age))
    }
}

impl Apt {
    /// `lists_age`: seconds since the package lists were refreshed; `None` if never.
    fn plan_from(&self, facts: &[PkgFacts], lists_age: Option<u64>) -> Vec<Change> {
        let pairs = || self.packages.iter().zip(facts);
        if self.state == State::Absent {
            let gone: Vec<&Package> = pairs()
                .filter(|(_, f)| f.on_disk())
                .map(|(p, _)| p)
                .collect();
            if gone.is_empty() {
                return vec![];
            }
            let names: Vec<String> = gone.iter().map(|p| p.name.clone()).collect();
            // apt refuses to remove held packages: lift the hold first.
            let held: Vec<String> = pairs()
                .filter(|(_, f)| f.on_disk() && f.held())
                .map(|(p, _)| p.name.clone())
                .collect();
            let mut changes = Vec::new();
            if !held.is_empty() {
                changes.push(apt_mark("unhold", &held));
            }
            changes.push(apt_change(
                format!("remove {}", names.join(", ")),
                "remove",
                &names,
            ));
            return changes;
        }

        let at_wanted = |p: &Package, f: &PkgFacts| {
            let virtual_present = self.state == State::Present
                && p.version.is_none()
                && !f.installed()
                && f.provided_by.is_some();
            virtual_present
                || f.installed()
                    && match (&p.version, self.state) {
                        (Some(v), _) => &f.version == v,
                        (None, State::Latest) => f.candidate.as_deref() == Some(f.version.as_str()),
                        (None, _) => true,
                    }
        };
        let valid_for = match (self.cache_valid_time, self.state) {
            (Some(valid), _) => Some(valid),
            (None, State::Latest) => Some(LATEST_DEFAULT_VALID_SECS),
            (None, _) => None,
        };
        let stale = match (lists_age, valid_for) {
            (None, _) => true,
            (Some(age), Some(valid)) => age > valid,
            (Some(_), None) => false,
        };
        let mut install: Vec<(&Package, &PkgFacts)> =
            pairs().filter(|(p, f)| !at_wanted(p, f)).collect();
        // After a refresh every `latest` package may have a newer candidate: ask apt for all.
        let refresh_for_latest = self.state == State::Latest && stale;
        if refresh_for_latest {
            install = pairs().collect();
        }
        let unknown = install.iter().any(|(p, f)| match &p.version {
            Some(v) => !f.known.contains(v),
            None => f.candidate.is_none(),
        });

        let mut changes = Vec::new();
        if refresh_for_latest || (!install.is_empty() && (stale || unknown)) {
            let why = match lists_age {
                None => "never downloaded".to_string(),
                Some(_) if unknown => "a wanted package or version is unknown".to_string(),
                Some(age) => format!("{} old", human_age(age)),
            };
            changes.push(Change::new(
                format!("refresh apt package lists ({why})"),
                Action::Shell {
                    script: refresh_script(),
                    stdin: None,
                },
            ));
        }
        let holds_in_the_way: Vec<String> = install
            .iter()
            .filter(|(_, f)| f.held())
            .map(|(p, _)| p.name.clone())
            .collect();
        if self.state == State::Held && !holds_in_the_way.is_empty() {
            changes.push(apt_mark("unhold", &holds_in_the_way));
        }
        if !install.is_empty() {
            let specs: Vec<String> = install.iter().map(|(p, _)| p.spec()).collect();
            let verb = if self.state == State::Latest {
                "install/upgrade"
            } else {
                "install"
            };
            // A pin below the installed version is a downgrade; other states' holds stay put
            // unless the user pinned through them.
            let downgrade = install
                .iter()
                .any(|(p, f)| p.version.is_some() && f.installed());
            let through_hold = self.state != State::Held && !holds_in_the_way.is_empty();
            let mut args = vec!["install".to_string(), "--no-install-recommends".to_string()];
            if downgrade {
                args.push("--allow-downgrades".into());
            }
            if through_hold {
                args.push("--allow-change-held-packages".into());
            }
            changes.push(apt_change(
                format!("{verb} {}", specs.join(", ")),
                &args.join(" "),
                &specs,
            ));
        }
        if self.state == State::Held {
            // Unheld now, or unheld by this plan just above.
            let to_hold: Vec<String> = pairs()
                .filter(|(p, f)| !f.held() || holds_in_the_way.contains(&p.name))
                .map(|(p, _)| p.name.clone())
                .collect();
            if !to_hold.is_empty() {
                changes.push(apt_mark("hold", &to_hold));
            }
        }
        changes
    }
}

/// `apt-get update`, then the stamp that tells later probes how old the lists are.
pub(crate) fn refresh_script() -> String {
    format!("{APT_GET} update && mkdir -p /var/lib/apt/periodic && touch {UPDATE_STAMP}")
}

fn apt_change(summary: String, subcommand: &str, words: &[String]) -> Change {
    let quoted: Vec<String> = words.iter().map(|w| quote(w)).collect();
    Change::new(
        summary,
        Action::Shell {
            script: format!("{APT_GET} {subcommand} {}", quoted.join(" ")),
            stdin: None,
        },
    )
}

fn apt_mark(what: &str, names: &[String]) -> Change {
    let quoted: Vec<String> = names.iter().map(|w| quote(w)).collect();
    Change::new(
        format!("{what} {}", names.join(", ")),
        Action::Shell {
            script: format!("apt-mark {what} {}", quoted.join(" ")),
            stdin: None,
        },
    )
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apt(args: &str) -> Result<Apt, InputError> {
        crate::modules::testing::build_simple(args, Apt::from_args)
    }

    /// Probe output as the real probe prints it; `pkgs` are (status, version, candidate, known).
    fn probe(lists: &str, pkgs: &[(&str, &str, &str, &str)]) -> ProbeOutput {
        let mut s = format!("apt_now=100000\n{lists}\n");
        for (i, (status, version, cand, known)) in pkgs.iter().enumerate() {
            if !status.is_empty() {
                s += &format!("pkg.{i}.status={status}\npkg.{i}.version={version}\n");
            }
            if !cand.is_empty() {
                s += &format!("pkg.{i}.candidate={cand}\n");
            }
            s += &format!("pkg.{i}.known= {known}\n");
        }
        ProbeOutput {
            exit_status: 0,
            stdout: s,
        }
    }

    const FRESH: &str = "apt_lists=99000\napt_stamp=0";

    fn summaries(changes: &[Change]) -> Vec<String> {
        changes.iter().map(|c| c.summary.clone()).collect()
    }

    use crate::modules::testing::shell_script as script;

    #[test]
    fn rejects_bad_arguments_with_file_and_line() {
        let e = apt("packages = []").unwrap_err();
        assert_eq!((e.line, e.hint.is_some()), (Some(7), true));
        assert!(apt("packages = [\"Bad Name\"]").is_err());
        assert!(apt("packages = [\"curl;reboot\"]").is_err());
        assert!(apt("packages = [\"curl=1.0 x\"]").is_err());
        assert!(apt("packages = [\"curl=1.0\"]\nstate = \"absent\"").is_err());
        assert!(apt("packages = [\"curl\", \"curl\"]").is_err());
        assert!(apt("packages = [\"curl\"]\nupdate_cache = true")
            .unwrap_err()
            .message
            .contains("update_cache"));
        assert!(apt("packages = [\"libc6:amd64\", \"g++\", \"kubelet=1:1.30.4-1.1\"]").is_ok());
    }

    #[test]
    fn virtual_package_never_read_as_installed() {
        let a = apt("packages = [\"awk\"]").unwrap();
        let provided = ProbeOutput {
            exit_status: 0,
            stdout: format!("apt_now=100000\n{FRESH}\npkg.0.known= \npkg.0.provided_by=mawk\n"),
        };
        assert_eq!(a.plan(&provided).unwrap(), vec![]);
        // No provider installed: install it (apt picks the provider).
        let none = probe(FRESH, &[("", "", "", "")]);
        assert!(summaries(&a.plan(&none).unwrap())
            .iter()
            .any(|s| s.starts_with("install awk")));
        // The probe asks apt and dpkg for real (awk is provided by mawk or gawk on Debian).
        let out = crate::modules::file::testing::run_probe(&a.probe(ProbeOptions::default()));
        assert!(out.stdout.contains("pkg.0.provided_by="), "{}", out.stdout);
        assert_eq!(a.plan(&out).unwrap(), vec![], "{}", out.stdout);
    }

    #[test]
    fn latest_without_cache_valid_time_never_refreshed_the_lists() {
        let a = apt("packages = [\"curl\"]\nstate = \"latest\"").unwrap();
        let two_hours_old = "apt_lists=92800\napt_stamp=0";
        let plan = a
            .plan(&probe(two_hours_old, &[("ii ", "7.88", "7.88", "7.88")]))
            .unwrap();
        assert!(
            summaries(&plan)[0].starts_with("refresh apt package lists"),
            "{plan:?}"
        );
        // Within the hour: nothing.
        let plan = a
            .plan(&probe(FRESH, &[("ii ", "7.88", "7.88", "7.88")]))
            .unwrap();
        assert_eq!(plan, vec![]);
    }

    #[test]
    fn converged_host_plans_nothing_even_with_old_lists() {
        let a = apt("packages = [\"postgresql\", \"curl\"]\ncache_valid_time = 3600").unwrap();
        let p = probe(
            "apt_lists=1\napt_stamp=0",
            &[("ii ", "15", "15", "15"), ("ii ", "7.88", "7.88", "7.88")],
        );
        assert_eq!(a.plan(&p).unwrap(), vec![]);
    }

    #[test]
    fn missing_packages_install_in_one_change_refreshing_when_stale() {
        let a =
            apt("packages = [\"postgresql\", \"curl\", \"ufw\"]\ncache_valid_time = 3600").unwrap();
        let pkgs = [
            ("un ", "", "15", "15"),
            ("ii ", "7.88", "7.88", "7.88"),
            ("", "", "0.36", "0.36"),
        ];
        let fresh = a.plan(&probe(FRESH, &pkgs)).unwrap();
        assert_eq!(summaries(&fresh), vec!["install postgresql, ufw"]);
        let s = script(&fresh[0]);
        assert!(s.starts_with("DEBIAN_FRONTEND=noninteractive "), "{s}");
        for part in [
            "-o DPkg::Lock::Timeout=600",
            "--force-confdef",
            "--force-confold",
            "install --no-install-recommends postgresql ufw",
        ] {
            assert!(s.contains(part), "{part} in {s}");
        }
        let stale = a
            .plan(&probe("apt_lists=1000\napt_stamp=2000", &pkgs))
            .unwrap();
        assert_eq!(stale[0].summary, "refresh apt package lists (27 h old)");
        assert!(script(&stale[0]).contains(" update && "));
        // The stamp we touch counts as a refresh even though list files keep archive dates.
        let stamped = a
            .plan(&probe("apt_lists=1000\napt_stamp=99000", &pkgs))
            .unwrap();
        assert_eq!(stamped.len(), 1);
        let never = a.plan(&probe("apt_lists=never", &pkgs)).unwrap();
        assert_eq!(
            never[0].summary,
            "refresh apt package lists (never downloaded)"
        );
    }

    #[test]
    fn unknown_candidate_or_version_forces_a_refresh() {
        let a = apt("packages = [\"kubelet=1.30.4-1.1\"]").unwrap();
        let unknown = a.plan(&probe(FRESH, &[("", "", "", "")])).unwrap();
        assert_eq!(
            summaries(&unknown),
            vec![
                "refresh apt package lists (a wanted package or version is unknown)",
                "install kubelet=1.30.4-1.1"
            ]
        );
        let known = a
            .plan(&probe(
                FRESH,
                &[("un ", "", "1.30.5-1.1", "1.30.5-1.1 1.30.4-1.1")],
            ))
            .unwrap();
        assert_eq!(summaries(&known), vec!["install kubelet=1.30.4-1.1"]);
        assert!(script(&known[0]).ends_with("install --no-install-recommends kubelet=1.30.4-1.1"));
    }

    #[test]
    fn held_packages_are_pinned_and_held() {
        let a =
            apt("packages = [\"kubelet=1.30.4-1.1\", \"kubeadm=1.30.4-1.1\"]\nstate = \"held\"")
                .unwrap();
        let k = "1.30.4-1.1 1.30.3-1.1";
        // Both installed at the version, only kubelet held: hold kubeadm.
        let p = probe(
            FRESH,
            &[
                ("hi ", "1.30.4-1.1", "1.30.4-1.1", k),
                ("ii ", "1.30.4-1.1", "1.30.4-1.1", k),
            ],
        );
        assert_eq!(summaries(&a.plan(&p).unwrap()), vec!["hold kubeadm"]);
        // Converged.
        let p = probe(
            FRESH,
            &[
                ("hi ", "1.30.4-1.1", "1.30.4-1.1", k),
                ("hi ", "1.30.4-1.1", "1.30.4-1.1", k),
            ],
        );
        assert_eq!(a.plan(&p).unwrap(), vec![]);
        // kubelet held at another version: unhold, install the pin, hold again.
        let p = probe(
            FRESH,
            &[
                ("hi ", "1.30.3-1.1", "1.30.4-1.1", k),
                ("hi ", "1.30.4-1.1", "1.30.4-1.1", k),
            ],
        );
        let changes = a.plan(&p).unwrap();
        assert_eq!(
            summaries(&changes),
            vec![
                "unhold kubelet",
                "install kubelet=1.30.4-1.1",
                "hold kubelet"
            ]
        );
        assert!(script(&changes[1]).contains("--allow-downgrades"));
        assert_eq!(script(&changes[2]), "apt-mark hold kubelet");
        // Fresh host: install both, hold both.
        let p = probe(
            FRESH,
            &[("", "", "1.30.4-1.1", k), ("", "", "1.30.4-1.1", k)],
        );
        assert_eq!(
            summaries(&a.plan(&p).unwrap()),
            vec![
                "install kubelet=1.30.4-1.1, kubeadm=1.30.4-1.1",
                "hold kubelet, kubeadm"
            ]
        );
    }

    #[test]
    fn present_pin_through_a_foreign_hold_says_so() {
        let a = apt("packages = [\"kubectl=1.30.4-1.1\"]").unwrap();
        let p = probe(
            FRESH,
            &[("hi ", "1.30.3-1.1", "1.30.4-1.1", "1.30.4-1.1 1.30.3-1.1")],
        );
        let changes = a.plan(&p).unwrap();
        assert_eq!(summaries(&changes), vec!["install kubectl=1.30.4-1.1"]);
        assert!(script(&changes[0]).contains("--allow-change-held-packages"));
    }

    #[test]
    fn absent_removes_only_what_is_there() {
        let a = apt("packages = [\"nano\", \"vim\", \"ed\"]\nstate = \"absent\"").unwrap();
        let p = probe(
            FRESH,
            &[("ii ", "7", "", ""), ("rc ", "9", "", ""), ("", "", "", "")],
        );
        let changes = a.plan(&p).unwrap();
        assert_eq!(summaries(&changes), vec!["remove nano"]);
        assert!(script(&changes[0]).ends_with(" remove nano"));
        let p = probe(
            FRESH,
            &[("un ", "", "", ""), ("rc ", "9", "", ""), ("", "", "", "")],
        );
        assert_eq!(a.plan(&p).unwrap(), vec![]);
        let p = probe(
            FRESH,
            &[("hi ", "7", "", ""), ("ii ", "9", "", ""), ("", "", "", "")],
        );
        assert_eq!(
            summaries(&a.plan(&p).unwrap()),
            vec!["unhold nano", "remove nano, vim"]
        );
    }

    #[test]
    fn latest_upgrades_when_behind_and_asks_apt_after_a_refresh() {
        let a = apt("packages = [\"curl\", \"jq\"]\nstate = \"latest\"\ncache_valid_time = 3600")
            .unwrap();
        let pkgs = [
            ("ii ", "7.88.1", "7.88.2", "7.88.2 7.88.1"),
            ("ii ", "1.6", "1.6", "1.6"),
        ];
        assert_eq!(
            summaries(&a.plan(&probe(FRESH, &pkgs)).unwrap()),
            vec!["install/upgrade curl"]
        );
        let stale = a.plan(&probe("apt_lists=1\napt_stamp=0", &pkgs)).unwrap();
        assert_eq!(stale.len(), 2);
        assert_eq!(stale[1].summary, "install/upgrade curl, jq");
        let current = [
            ("ii ", "7.88.2", "7.88.2", "7.88.2"),
            ("ii ", "1.6", "1.6", "1.6"),
        ];
        assert_eq!(a.plan(&probe(FRESH, &current)).unwrap(), vec![]);
    }

    #[test]
    fn half_installed_packages_are_installed_again() {
        let a = apt("packages = [\"postgresql\"]").unwrap();
        let p = probe(FRESH, &[("iF ", "15", "15", "15")]);
        assert_eq!(summaries(&a.plan(&p).unwrap()), vec!["install postgresql"]);
    }

    /// Runs the probe with stand-in `dpkg-query` and `apt-cache` on PATH (curl 7.88 and jq 1.6
    /// installed; every other name has candidate 2.0): returns the output and the
    /// `apt-cache policy` calls made.
    fn probe_with_fake_tools(a: &Apt) -> (ProbeOutput, Vec<String>) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write(
            "dpkg-query",
            "#!/bin/sh\nfmt=${2#-f=}\ncase \"$3\" in curl) st='ii '; v=7.88 ;; jq) st='ii '; v=1.6 ;; *) exit 1 ;; esac\n\
             printf \"$(printf '%s' \"$fmt\" | sed \"s/\\${db:Status-Abbrev}/$st/; s/\\${Version}/$v/\")\"\n",
        );
        let log = dir.path().join("calls");
        write(
            "apt-cache",
            &format!(
                "#!/bin/sh\n[ \"$1\" = policy ] || exit 0\necho \"$*\" >> {}\nshift\n\
                 for n; do printf '%s:\\n  Installed: (none)\\n  Candidate: 2.0\\n  Version table:\\n     2.0 500\\n        500 http://deb.example stable/main amd64 Packages\\n' \"$n\"; done\n",
                log.display()
            ),
        );
        let script = format!(
            "PATH={}:$PATH\n{}",
            dir.path().display(),
            a.probe(ProbeOptions::default())
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let output = ProbeOutput {
            exit_status: 0,
            stdout: String::from_utf8(out.stdout).unwrap(),
        };
        (output, calls)
    }

    #[test]
    fn installed_packages_are_not_asked_to_apt_cache_and_plan_nothing() {
        for args in [
            "packages = [\"curl\", \"jq\"]",
            "packages = [\"curl=7.88\"]",
            "packages = [\"curl\"]\nstate = \"held\"",
        ] {
            let a = apt(args).unwrap();
            let (out, calls) = probe_with_fake_tools(&a);
            assert_eq!(calls, Vec::<String>::new(), "{args}: {}", out.stdout);
            let plan = a.plan(&out).unwrap();
            assert!(
                plan.iter().all(|c| !c.summary.starts_with("install")),
                "{args}: {plan:?}"
            );
        }
    }

    #[test]
    fn packages_not_installed_are_asked_to_apt_cache_in_one_call() {
        let a = apt("packages = [\"curl\", \"ripgrep\", \"fd-find\"]").unwrap();
        let (out, calls) = probe_with_fake_tools(&a);
        assert_eq!(calls, vec!["policy ripgrep fd-find"], "{}", out.stdout);
        let kv = probe_util::key_values(&out.stdout);
        assert_eq!(kv["pkg.1.candidate"].trim(), "2.0", "{}", out.stdout);
        assert_eq!(kv["pkg.2.known"].trim(), "2.0", "{}", out.stdout);
        assert!(!kv.contains_key("pkg.0.candidate"), "{}", out.stdout);
        let plan = a.plan(&out).unwrap();
        assert_eq!(plan.last().unwrap().summary, "install ripgrep, fd-find");
    }

    #[test]
    fn an_unmet_pin_and_latest_still_ask_apt_cache() {
        let pinned = apt("packages = [\"curl=2.0\", \"jq=1.6\"]").unwrap();
        let (out, calls) = probe_with_fake_tools(&pinned);
        assert_eq!(calls, vec!["policy curl"], "{}", out.stdout);
        assert_eq!(
            pinned.plan(&out).unwrap().last().unwrap().summary,
            "install curl=2.0"
        );
        let latest = apt("packages = [\"curl\", \"jq\"]\nstate = \"latest\"").unwrap();
        let (out, calls) = probe_with_fake_tools(&latest);
        assert_eq!(calls, vec!["policy curl jq"], "{}", out.stdout);
        let plan = latest.plan(&out).unwrap();
        assert!(
            plan.iter()
                .any(|c| c.summary.contains("install/upgrade curl, jq")),
            "candidate 2.0 is newer than both: {plan:?}"
        );
        let gone = apt("packages = [\"curl\"]\nstate = \"absent\"").unwrap();
        assert_eq!(probe_with_fake_tools(&gone).1, Vec::<String>::new());
    }

    /// Runs the real probe on this (Debian) machine: read-only, needs dpkg and apt.
    #[test]
    fn real_probe_parses_on_this_machine() {
        if std::process::Command::new("dpkg-query")
            .arg("--version")
            .output()
            .is_err()
        {
            return;
        }
        let a = apt("packages = [\"dpkg\", \"no-such-package-bootstrap\"]").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(a.probe(ProbeOptions::default()))
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let kv = probe_util::key_values(&stdout);
        assert_eq!(kv["pkg.0.status"].trim(), "ii", "{stdout}");
        assert!(!kv["pkg.0.version"].is_empty());
        assert!(!kv.contains_key("pkg.1.status"), "{stdout}");
        assert!(kv["apt_now"].parse::<u64>().is_ok());
        let changes = a
            .plan(&ProbeOutput {
                exit_status: 0,
                stdout,
            })
            .unwrap();
        // dpkg is installed; the unknown package needs a refresh then an install.
        assert_eq!(
            changes.last().unwrap().summary,
            "install no-such-package-bootstrap"
        );
        assert!(changes[0].summary.starts_with("refresh apt package lists"));
    }

    /// `latest` asks apt-cache on this machine; an arch-qualified name still finds its section
    /// (apt prints the native package's header without the arch).
    #[test]
    fn real_policy_answer_is_read_for_an_arch_qualified_name() {
        let Ok(arch) = std::process::Command::new("dpkg")
            .arg("--print-architecture")
            .output()
        else {
            return;
        };
        let arch = String::from_utf8(arch.stdout).unwrap();
        let a = apt(&format!(
            "packages = [\"dpkg:{}\"]\nstate = \"latest\"",
            arch.trim()
        ))
        .unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(a.probe(ProbeOptions::default()))
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let kv = probe_util::key_values(&stdout);
        let installed = kv["pkg.0.version"].trim();
        assert!(
            kv["pkg.0.known"].split_whitespace().any(|v| v == installed),
            "{stdout}"
        );
        assert!(!kv["pkg.0.candidate"].trim().is_empty(), "{stdout}");
    }

    /// The module's probe run in a local `sh` (shared harness).
    fn run_probe(a: &Apt) -> ProbeOutput {
        crate::modules::file::testing::run_probe(&a.probe(ProbeOptions::default()))
    }

    fn apply(changes: &[Change]) {
        for c in changes {
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(script(c))
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "{}", c.summary);
        }
    }

    /// Installs, holds and removes the tiny `sl` package on this machine (root, Debian):
    /// `BOOTSTRAP_APT_TESTS=1 cargo test --lib apt::tests::real -- --ignored`.
    #[test]
    #[ignore]
    fn real_install_hold_remove_converges() {
        if std::env::var_os("BOOTSTRAP_APT_TESTS").is_none() {
            return;
        }
        let held = apt("packages = [\"sl\"]\nstate = \"held\"").unwrap();
        apply(&held.plan(&run_probe(&held)).unwrap());
        assert_eq!(held.plan(&run_probe(&held)).unwrap(), vec![]);
        let present = apt("packages = [\"sl\"]").unwrap();
        assert_eq!(present.plan(&run_probe(&present)).unwrap(), vec![]);
        let gone = apt("packages = [\"sl\"]\nstate = \"absent\"").unwrap();
        let changes = gone.plan(&run_probe(&gone)).unwrap();
        // apt refuses to remove a held package, so the plan lifts the hold first.
        assert_eq!(summaries(&changes), vec!["unhold sl", "remove sl"]);
        apply(&changes);
        assert_eq!(gone.plan(&run_probe(&gone)).unwrap(), vec![]);
    }
}
