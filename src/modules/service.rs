//! `service`: a systemd unit's running state and whether it starts at boot.
//!
//! Arguments:
//! - `name` (required): the unit, e.g. `"containerd"` (`.service` is implied) or `"kubelet.service"`.
//! - `state`: `"started"`, `"stopped"`, `"restarted"` or `"reloaded"`. `restarted` and
//!   `reloaded` always plan a change: that is how a handler-like step ("restart after the
//!   config changed") is written. `reloaded` starts a unit that is not running.
//! - `enabled`: `true` / `false`: start at boot or not. Units that cannot be enabled
//!   (`static`, `indirect`, `generated`, ...) are left as they are.
//! - `daemon_reload`: `"auto"` (default: `systemctl daemon-reload` first when systemd says the
//!   unit's files changed on disk), `true` (always, reported as a change on every run) or
//!   `false` (never).
//!
//! ```toml
//! [[step]]
//! name = "kubelet runs and starts at boot"
//! service = { name = "kubelet", state = "started", enabled = true }
//! ```
//!
//! The probe asks `systemctl` for the unit's load state, `is-active`, `is-enabled` and
//! `NeedDaemonReload`. A unit systemd does not know is an error.
use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ServiceState {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum DaemonReloadArg {
    Bool(bool),
    Word(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DaemonReload {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceArgs {
    name: String,
    state: Option<ServiceState>,
    enabled: Option<bool>,
    daemon_reload: Option<DaemonReloadArg>,
}

#[derive(Debug)]
pub struct Service {
    name: String,
    state: Option<ServiceState>,
    enabled: Option<bool>,
    daemon_reload: DaemonReload,
}

impl Service {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: ServiceArgs = parse_args("service", args, ctx)?;
        let err = |msg: String, hint: &str| InputError::new(ctx.playbook, ctx.line, msg).hint(hint);
        if a.name.is_empty()
            || a.name.starts_with('-')
            || a.name.chars().any(|c| c.is_whitespace() || c == '/')
        {
            return Err(err(
                format!("`service`: {:?} is not a unit name", a.name),
                "give the unit's name, e.g. name = \"containerd\" or \"kubelet.service\"",
            ));
        }
        let daemon_reload = match a.daemon_reload {
            None => DaemonReload::Auto,
            Some(DaemonReloadArg::Word(w)) if w == "auto" => DaemonReload::Auto,
            Some(DaemonReloadArg::Bool(true)) => DaemonReload::Always,
            Some(DaemonReloadArg::Bool(false)) => DaemonReload::Never,
            Some(DaemonReloadArg::Word(w)) => {
                return Err(err(
                    format!("`service`: daemon_reload = {w:?} is not understood"),
                    "use \"auto\", true or false",
                ))
            }
        };
        if a.state.is_none() && a.enabled.is_none() && daemon_reload != DaemonReload::Always {
            return Err(err(
                format!("`service` {}: nothing to manage", a.name),
                "add state = \"started\" and/or enabled = true",
            ));
        }
        Ok(Service {
            name: a.name,
            state: a.state,
            enabled: a.enabled,
            daemon_reload,
        })
    }

    fn systemctl(&self, verb: &str, summary: String) -> Change {
        Change::new(
            summary,
            Action::Shell {
                script: format!("systemctl {verb} -- {}", quote(&self.name)),
                stdin: None,
            },
        )
    }
}

impl Module for Service {
    fn probe(&self, _opts: ProbeOptions) -> String {
        format!(
            concat!(
                "(\nu={}\n",
                "if command -v systemctl >/dev/null 2>&1; then\n",
                "  echo \"load=$(systemctl show -p LoadState --value -- \"$u\" 2>/dev/null)\"\n",
                "  echo \"active=$(systemctl is-active -- \"$u\" 2>/dev/null)\"\n",
                "  echo \"enabled=$(systemctl is-enabled -- \"$u\" 2>/dev/null)\"\n",
                "  echo \"need_reload=$(systemctl show -p NeedDaemonReload --value -- \"$u\" 2>/dev/null)\"\n",
                "else echo systemctl=missing; fi\n)\n"
            ),
            quote(&self.name)
        )
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        let kv = probe_util::key_values(&probe.stdout);
        if kv.contains_key("systemctl") {
            return Err(PlanError(
                "systemctl is not installed on this host (service needs systemd)".into(),
            ));
        }
        let get = |k: &str| kv.get(k).map(|v| v.trim()).unwrap_or("");
        match get("load") {
            "loaded" => {}
            "" => return Err(PlanError(format!("systemd did not answer about {} (is systemd running?)", self.name))),
            "not-found" => {
                return Err(PlanError::not_yet(format!(
                    "unit {} is not known to systemd (is its package installed, or its unit file written?)",
                    self.name
                )))
            }
            "masked" if self.enabled == Some(true) || matches!(self.state, Some(s) if s != ServiceState::Stopped) => {
                return Err(PlanError(format!("unit {} is masked; unmask it first", self.name)))
            }
            "masked" => {}
            other => return Err(PlanError(format!("unit {} failed to load (LoadState={other})", self.name))),
        }

        let mut changes = Vec::new();
        let needs_reload = get("need_reload") == "yes";
        if self.daemon_reload == DaemonReload::Always
            || (self.daemon_reload == DaemonReload::Auto && needs_reload)
        {
            changes.push(Change::new(
                "reload systemd unit files (systemctl daemon-reload)",
                Action::Shell {
                    script: "systemctl daemon-reload".into(),
                    stdin: None,
                },
            ));
        }

        let enabled = get("enabled");
        match self.enabled {
            Some(true) if matches!(enabled, "disabled" | "linked" | "linked-runtime" | "") => {
                changes.push(self.systemctl(
                    "enable",
                    format!("enable {} at boot (was {})", self.name, or_unknown(enabled)),
                ))
            }
            Some(false) if matches!(enabled, "enabled" | "enabled-runtime") => {
                changes.push(self.systemctl("disable", format!("disable {} at boot", self.name)))
            }
            _ => {}
        }

        let active = get("active");
        let running = matches!(active, "active" | "activating" | "reloading");
        match self.state {
            Some(ServiceState::Started) if !running => changes.push(self.systemctl(
                "start",
                format!("start {} (was {})", self.name, or_unknown(active)),
            )),
            Some(ServiceState::Stopped) if running || active == "deactivating" => {
                changes.push(self.systemctl("stop", format!("stop {}", self.name)))
            }
            Some(ServiceState::Restarted) => {
                changes.push(self.systemctl("restart", format!("restart {}", self.name)))
            }
            Some(ServiceState::Reloaded) if running => {
                changes.push(self.systemctl("reload", format!("reload {}", self.name)))
            }
            Some(ServiceState::Reloaded) => changes.push(self.systemctl(
                "start",
                format!(
                    "start {} (reload asked, it was {})",
                    self.name,
                    or_unknown(active)
                ),
            )),
            _ => {}
        }
        Ok(changes)
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::testing::*;
    use super::*;

    fn service(args: &str) -> Result<Service, InputError> {
        build_simple(args, Service::from_args)
    }

    fn facts(active: &str, enabled: &str, need_reload: &str) -> ProbeOutput {
        probe(&format!(
            "load=loaded\nactive={active}\nenabled={enabled}\nneed_reload={need_reload}\n"
        ))
    }

    #[test]
    fn started_and_enabled() {
        let s = service("name = \"kubelet\"\nstate = \"started\"\nenabled = true").unwrap();
        assert!(s
            .plan(&facts("active", "enabled", "no"))
            .unwrap()
            .is_empty());
        assert!(s
            .plan(&facts("activating", "static", "no"))
            .unwrap()
            .is_empty());
        assert_eq!(
            scripts(&s.plan(&facts("inactive", "disabled", "no")).unwrap()),
            vec!["systemctl enable -- kubelet", "systemctl start -- kubelet"]
        );
        assert_eq!(
            scripts(&s.plan(&facts("failed", "enabled", "no")).unwrap()),
            vec!["systemctl start -- kubelet"]
        );
    }

    #[test]
    fn daemon_reload_comes_first_when_needed() {
        let s = service("name = \"kubelet\"\nstate = \"started\"").unwrap();
        assert_eq!(
            scripts(&s.plan(&facts("inactive", "enabled", "yes")).unwrap()),
            vec!["systemctl daemon-reload", "systemctl start -- kubelet"]
        );
        let never =
            service("name = \"kubelet\"\nstate = \"started\"\ndaemon_reload = false").unwrap();
        assert!(never
            .plan(&facts("active", "enabled", "yes"))
            .unwrap()
            .is_empty());
        let always = service("name = \"kubelet\"\ndaemon_reload = true").unwrap();
        assert_eq!(
            scripts(&always.plan(&facts("active", "enabled", "no")).unwrap()),
            vec!["systemctl daemon-reload"]
        );
    }

    #[test]
    fn restarted_and_reloaded_always_change() {
        let r = service("name = \"postgresql\"\nstate = \"restarted\"").unwrap();
        assert_eq!(
            scripts(&r.plan(&facts("active", "enabled", "no")).unwrap()),
            vec!["systemctl restart -- postgresql"]
        );
        let l = service("name = \"postgresql\"\nstate = \"reloaded\"").unwrap();
        assert_eq!(
            scripts(&l.plan(&facts("active", "enabled", "no")).unwrap()),
            vec!["systemctl reload -- postgresql"]
        );
        assert_eq!(
            scripts(&l.plan(&facts("inactive", "enabled", "no")).unwrap()),
            vec!["systemctl start -- postgresql"]
        );
    }

    #[test]
    fn stopped_and_disabled() {
        let s = service("name = \"ufw\"\nstate = \"stopped\"\nenabled = false").unwrap();
        assert!(s
            .plan(&facts("inactive", "disabled", "no"))
            .unwrap()
            .is_empty());
        assert!(s.plan(&facts("failed", "static", "no")).unwrap().is_empty());
        assert_eq!(
            scripts(&s.plan(&facts("active", "enabled", "no")).unwrap()),
            vec!["systemctl disable -- ufw", "systemctl stop -- ufw"]
        );
    }

    #[test]
    fn unknown_or_masked_units_are_errors() {
        let s = service("name = \"nope\"\nstate = \"started\"").unwrap();
        let e = s
            .plan(&probe(
                "load=not-found\nactive=inactive\nenabled=\nneed_reload=no\n",
            ))
            .unwrap_err();
        assert!(e.0.contains("not known to systemd"), "{}", e.0);
        let e = s
            .plan(&probe(
                "load=masked\nactive=inactive\nenabled=masked\nneed_reload=no\n",
            ))
            .unwrap_err();
        assert!(e.0.contains("masked"));
        assert!(s
            .plan(&probe("systemctl=missing\n"))
            .unwrap_err()
            .0
            .contains("systemctl"));
        assert!(s.plan(&probe("")).is_err());
        // Stopping a masked unit is fine.
        let stop = service("name = \"nope\"\nstate = \"stopped\"").unwrap();
        assert!(stop
            .plan(&probe(
                "load=masked\nactive=inactive\nenabled=masked\nneed_reload=no\n"
            ))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_arguments() {
        for (args, needle) in [
            ("name = \"kubelet\"", "nothing to manage"),
            ("name = \"a b\"\nstate = \"started\"", "not a unit name"),
            ("name = \"x\"\nstate = \"running\"", "unknown variant"),
            (
                "name = \"x\"\nstate = \"started\"\ndaemon_reload = \"sometimes\"",
                "daemon_reload",
            ),
            (
                "name = \"x\"\nstate = \"started\"\nenable = true",
                "unknown field",
            ),
        ] {
            let e = service(args).unwrap_err();
            assert!(e.message.contains(needle), "{args}: {}", e.message);
        }
    }

    #[test]
    fn probe_is_valid_sh_and_reports() {
        // Whatever systemd state this machine is in, the probe must run and say something
        // the plan understands (or a clear error), never a shell syntax error.
        let s = service("name = \"bootstrap-test-nonexistent-unit\"\nstate = \"started\"").unwrap();
        let out = run_probe(&s.probe(ProbeOptions::default()));
        assert_eq!(out.exit_status, 0);
        let e = s.plan(&out).unwrap_err();
        assert!(
            e.0.contains("not known")
                || e.0.contains("systemd did not answer")
                || e.0.contains("not installed"),
            "{}",
            e.0
        );
    }
}
