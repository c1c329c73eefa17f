//! `nodeport_filter`: Kubernetes NodePorts reachable only from the sources listed.
//!
//! Arguments:
//! - `ssh_port` (default `22`): always let through, even inside `range`.
//! - `range` (default `"30000:32767"`, the API server's `--service-node-port-range`): the ports
//!   filtered, TCP and UDP.
//! - `allow`: who may open a connection to a port of `range`. Each entry:
//!   - `from`: an address, a CIDR or `"any"`, or a list of them; an empty list allows nobody
//!     (so an empty inventory list adds nothing). IPv6 entries are skipped: an IPv4 cluster's
//!     NodePorts are IPv4 only;
//!   - `port` (optional): one port or a range inside `range`; absent: all of `range`;
//!   - `proto` (optional): `"tcp"` or `"udp"`; absent: both.
//!
//! ```toml
//! [[steps]]
//! name = "NodePorts: ingress from anyone, the rest from the nodes"
//! [steps.nodeport_filter]
//! ssh_port = 22
//! allow = [
//!   { port = 30080, proto = "tcp", from = "any" },
//!   { from = ["10.0.0.5", "10.0.0.6", "10.244.0.0/16"] },
//! ]
//! ```
//!
//! Why not ufw: kube-proxy DNATs a NodePort connection in nat PREROUTING to a pod, so the
//! packet is forwarded (FORWARD), never delivered to the host (INPUT), and Calico puts its own
//! FORWARD chain first and accepts traffic to workloads: ufw's rules, route rules included, are
//! never asked. This module matches before any DNAT: a chain of its own in the mangle table's
//! PREROUTING (after conntrack, before nat), so it sees the NodePort as the client sent it,
//! whatever the CNI and kube-proxy put in filter and nat. It drops a connection's first packet
//! (conntrack state NEW) to a local address on a port of `range` unless an `allow` matches;
//! replies and established connections, traffic to other addresses (pods, forwarded) and the
//! SSH port are never touched. DROP, since REJECT is not allowed outside the filter table.
//!
//! Where it lives: the rules in /etc/bootstrap/nodeport-filter.rules (iptables-restore input,
//! the chain flushed and refilled in one commit), loaded by bootstrap-nodeport-filter.service
//! at boot before the network comes up (as ufw is) and by this module on a change. ufw never
//! touches the mangle table, so `ufw reload` and `ufw disable` leave the filter in place.
//!
//! The probe reads the unit, the rules file and the live chain (`iptables -S`); the chain's
//! first rule is a no-op whose comment carries a digest of the wanted rules, so a changed
//! inventory, a flushed chain or a missing jump is seen and reloaded; an unchanged host plans
//! nothing. The load is a guarded firewall change (snapshot, rollback armed on the host, fresh
//! SSH login) like ufw's: its rollback puts the previous rules file back, or removes the
//! filter when there was none.

use super::ufw::{default_ssh_port, parse_ports};
use super::*;
use crate::error::InputError;
use crate::transport::shell::quote;
use serde::Deserialize;

/// The chain in the mangle table (iptables chain names have at most 28 characters).
pub const CHAIN: &str = "BOOTSTRAP-NODEPORTS";
pub const RULES_PATH: &str = "/etc/bootstrap/nodeport-filter.rules";
pub const UNIT: &str = "bootstrap-nodeport-filter.service";
const UNIT_PATH: &str = "/etc/systemd/system/bootstrap-nodeport-filter.service";
/// The comment of the chain's first rule: this text, then the digest of the rules.
const MARKER: &str = "bootstrap: nodeport filter";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default = "default_ssh_port")]
    ssh_port: u16,
    #[serde(default)]
    range: Option<Text>,
    #[serde(default)]
    allow: Vec<AllowSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowSpec {
    from: OneOrMany<String>,
    #[serde(default)]
    port: Option<Text>,
    #[serde(default)]
    proto: Option<String>,
}

#[derive(Debug)]
pub struct NodeportFilter {
    range: (u16, u16),
    /// The chain's rules in iptables-restore syntax, the marker first.
    rules: Vec<String>,
    /// For summaries: `30080/tcp from any; all from 10.0.0.5, ...`.
    allowed: Vec<String>,
}

fn port_words((a, b): (u16, u16)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}:{b}")
    }
}

impl NodeportFilter {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: Args = parse_args("nodeport_filter", args, ctx)?;
        let err = |msg: String, hint: &str| InputError::new(ctx.playbook, ctx.line, msg).hint(hint);
        if a.ssh_port == 0 {
            return Err(err(
                "`ssh_port` cannot be 0".into(),
                "the port sshd listens on, e.g. 22",
            ));
        }
        let range_text = a.range.map_or_else(|| "30000:32767".to_string(), |t| t.0);
        let range = parse_ports(&range_text)
            .filter(|(a, b)| a < b)
            .ok_or_else(|| {
                err(
                    format!("`range` {range_text:?} is not a port range"),
                    "write it like \"30000:32767\"",
                )
            })?;
        let (ssh, range_words) = (a.ssh_port, port_words(range));
        let mut body = vec![
            // The SSH port first: this filter must never cut the run's access.
            format!("-p tcp -m tcp --dport {ssh} -j RETURN"),
            // A connection's first packet only: replies to the host's own connections (a
            // masqueraded source port may fall inside the range) and accepted ones pass.
            "-m conntrack ! --ctstate NEW -j RETURN".to_string(),
            // NodePorts are the host's own addresses (kube-proxy matches the same way).
            "-m addrtype ! --dst-type LOCAL -j RETURN".to_string(),
        ];
        let mut allowed = Vec::new();
        for (n, spec) in a.allow.into_iter().enumerate() {
            let which = format!("allow[{}]", n + 1);
            let ports = match &spec.port {
                None => None,
                Some(p) => {
                    let ports = parse_ports(&p.0).ok_or_else(|| {
                        err(
                            format!("{which}: port {:?} is not a port or a range", p.0),
                            "write \"30080\" or \"30000:30100\"",
                        )
                    })?;
                    if ports.0 < range.0 || ports.1 > range.1 {
                        return Err(err(
                            format!("{which}: port {} is outside the range {range_words}", p.0),
                            "only ports of `range` are filtered; list one of them",
                        ));
                    }
                    Some(ports)
                }
            };
            let protos: Vec<&str> = match spec.proto.as_deref() {
                None => vec!["tcp", "udp"],
                Some(p @ ("tcp" | "udp")) => vec![p],
                Some(other) => {
                    return Err(err(
                        format!("{which}: proto {other:?} is not tcp or udp"),
                        "write proto = \"tcp\" or \"udp\", or leave it out for both",
                    ))
                }
            };
            let mut sources = Vec::new();
            for from in spec.from.into_vec() {
                let addr = super::address::normalise(&from).map_err(|e| {
                    err(
                        format!("{which} (from {from}): {e}"),
                        "write \"any\", an address like \"10.0.0.5\", or a CIDR like \"10.0.0.0/24\"",
                    )
                })?;
                if addr.contains(':') {
                    continue;
                }
                if !sources.contains(&addr) {
                    sources.push(addr);
                }
            }
            if sources.is_empty() {
                continue;
            }
            let what = match (ports, spec.proto.as_deref()) {
                (None, None) => "all".to_string(),
                (None, Some(p)) => format!("all/{p}"),
                (Some(p), None) => port_words(p),
                (Some(p), Some(proto)) => format!("{}/{proto}", port_words(p)),
            };
            allowed.push(format!("{what} from {}", sources.join(", ")));
            for src in &sources {
                let s = if src == "any" {
                    String::new()
                } else if src.contains('/') {
                    format!("-s {src} ")
                } else {
                    format!("-s {src}/32 ")
                };
                match (ports, spec.proto.is_some()) {
                    // Every port of the range from this source, every protocol.
                    (None, false) => body.push(format!("{s}-j RETURN")),
                    (None, true) => body.push(format!("{s}-p {} -j RETURN", protos[0])),
                    (Some(p), _) => {
                        for proto in &protos {
                            body.push(format!(
                                "{s}-p {proto} -m {proto} --dport {} -j RETURN",
                                port_words(p)
                            ));
                        }
                    }
                }
            }
        }
        for proto in ["tcp", "udp"] {
            body.push(format!(
                "-p {proto} -m {proto} --dport {range_words} -j DROP"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        body.retain(|r| seen.insert(r.clone()));
        let digest = &super::file::sha256_hex(body.join("\n").as_bytes())[..16];
        let mut rules = vec![format!("-m comment --comment \"{MARKER} {digest}\"")];
        rules.extend(body);
        Ok(NodeportFilter {
            range,
            rules,
            allowed,
        })
    }

    /// The chain the host runs is this one: jumped to, as many rules, the same digest.
    fn live_current(&self, facts: &Facts) -> bool {
        facts.jump
            && facts.chain.len() == self.rules.len()
            && facts
                .chain
                .first()
                .is_some_and(|r| r.contains(self.digest()))
    }

    fn digest(&self) -> &str {
        self.rules[0]
            .trim_end_matches('"')
            .rsplit(' ')
            .next()
            .unwrap_or("")
    }

    /// The rules file: the chain declared, flushed and refilled in one iptables-restore commit.
    pub fn rules_file(&self) -> String {
        let mut s = format!(
            "# Written by bootstrap (nodeport_filter); loaded by {UNIT}. A run replaces edits.\n\
             *mangle\n:{CHAIN} - [0:0]\n-F {CHAIN}\n"
        );
        for r in &self.rules {
            s.push_str(&format!("-A {CHAIN} {r}\n"));
        }
        s.push_str("COMMIT\n");
        s
    }
}

/// Loads the rules file and makes sure PREROUTING jumps to the chain (once); the unit and the
/// module's change run this same line.
fn load_command() -> String {
    format!(
        "iptables-restore -w --noflush {RULES_PATH} && \
         {{ iptables -w -t mangle -C PREROUTING -j {CHAIN} 2>/dev/null || \
         iptables -w -t mangle -I PREROUTING 1 -j {CHAIN}; }}"
    )
}

/// Removes the jump and the chain: no filter at all (what the host had before the first run).
fn unload_command() -> String {
    format!(
        "while iptables -w -t mangle -D PREROUTING -j {CHAIN} 2>/dev/null; do :; done; \
         iptables -w -t mangle -F {CHAIN} 2>/dev/null; iptables -w -t mangle -X {CHAIN} 2>/dev/null; true"
    )
}

/// Started before the network, as ufw.service is: no window at boot where NodePorts are open.
pub fn unit_file() -> String {
    format!(
        "# Written by bootstrap (nodeport_filter). A run replaces edits.\n\
         [Unit]\n\
         Description=bootstrap NodePort filter (iptables mangle PREROUTING, before kube-proxy's DNAT)\n\
         ConditionPathExists={RULES_PATH}\n\
         DefaultDependencies=no\n\
         Wants=network-pre.target\n\
         Before=network-pre.target kubelet.service\n\
         After=local-fs.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart=/bin/sh -c '{}'\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        load_command()
    )
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Facts {
    iptables: bool,
    unit_sha: Option<String>,
    rules_sha: Option<String>,
    enabled: bool,
    jump: bool,
    /// `iptables -S` lines of the chain that add rules (`-A ...`).
    chain: Vec<String>,
}

fn parse_facts(stdout: &str) -> Facts {
    let kv = probe_util::key_values(stdout);
    let sha = |k: &str| {
        kv.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| v.len() == 64)
    };
    Facts {
        iptables: kv.get("iptables").map(|v| v.trim()) == Some("yes"),
        unit_sha: sha("unit_sha"),
        rules_sha: sha("rules_sha"),
        enabled: kv.get("enabled").map(|v| v.trim()) == Some("enabled"),
        jump: kv.get("jump").map(|v| v.trim()) == Some("yes"),
        chain: stdout
            .lines()
            .filter_map(|l| l.strip_prefix("chain="))
            .filter(|l| l.starts_with("-A "))
            .map(str::to_string)
            .collect(),
    }
}

impl Module for NodeportFilter {
    fn probe(&self, _opts: ProbeOptions) -> String {
        let sha = |key: &str, path: &str| {
            format!(
                "if [ -f {p} ]; then echo {key}=$(sha256sum < {p} | cut -d' ' -f1); else echo {key}=absent; fi\n",
                p = quote(path)
            )
        };
        format!(
            "if command -v iptables >/dev/null 2>&1 && command -v iptables-restore >/dev/null 2>&1; then\n\
             echo iptables=yes\n\
             if iptables -w -t mangle -C PREROUTING -j {CHAIN} 2>/dev/null; then echo jump=yes; else echo jump=no; fi\n\
             iptables -w -t mangle -S {CHAIN} 2>/dev/null | sed 's/^/chain=/'\n\
             else echo iptables=missing; fi\n\
             {}{}echo enabled=$(systemctl is-enabled {UNIT} 2>/dev/null)\n",
            sha("unit_sha", UNIT_PATH),
            sha("rules_sha", RULES_PATH),
        )
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        self.plan_from(&parse_facts(&probe.stdout))
    }
}

impl NodeportFilter {
    fn plan_from(&self, facts: &Facts) -> Result<Vec<Change>, PlanError> {
        if !facts.iptables {
            return Err(PlanError::not_yet(
                "iptables is not installed (iptables and iptables-restore are needed)",
            ));
        }
        let mut changes = Vec::new();
        let unit = unit_file();
        let unit_current =
            facts.unit_sha.as_deref() == Some(&super::file::sha256_hex(unit.as_bytes()));
        if !unit_current {
            changes.push(Change::new(
                format!("write {UNIT_PATH}"),
                Action::Upload {
                    dest: UNIT_PATH.to_string(),
                    content: unit.into_bytes(),
                    attrs: FileAttrs::root("0644"),
                    validate: None,
                    backup: false,
                },
            ));
        }
        if !unit_current || !facts.enabled {
            changes.push(Change::new(
                format!("load the NodePort filter at boot (enable {UNIT})"),
                Action::Shell {
                    script: format!("systemctl daemon-reload && systemctl enable {UNIT}"),
                    stdin: None,
                },
            ));
        }
        let rules = self.rules_file();
        let file_current =
            facts.rules_sha.as_deref() == Some(&super::file::sha256_hex(rules.as_bytes()));
        if !file_current || !self.live_current(facts) {
            let range = port_words(self.range);
            let what = if self.allowed.is_empty() {
                "from nobody".to_string()
            } else {
                self.allowed.join("; ")
            };
            changes.push(Change::new(
                format!("nodeport filter: new connections to {range} only {what}"),
                Action::GuardedFirewall {
                    snapshot: snapshot_script(),
                    script: install_script(&rules),
                    rollback: rollback_script(),
                },
            ));
        }
        Ok(changes)
    }
}

/// Writes the rules file (temp file, then rename) and loads it through the unit.
fn install_script(rules: &str) -> String {
    format!(
        "set -e\nmkdir -p {dir}\ncat > {p}.tmp <<'BOOTSTRAP_NODEPORT_RULES'\n{rules}BOOTSTRAP_NODEPORT_RULES\n\
         chmod 0644 {p}.tmp\nmv -f {p}.tmp {p}\n\
         systemctl restart {UNIT} || {{ journalctl -u {UNIT} -n 20 --no-pager >&2; exit 1; }}\n",
        dir = quote(RULES_PATH.rsplit_once('/').map_or("/", |(d, _)| d)),
        p = quote(RULES_PATH),
    )
}

/// Saves the current rules file into `$snap` (or records that there was none).
fn snapshot_script() -> String {
    format!(
        "if [ -f {p} ]; then cp -p {p} \"$snap\"/nodeport-filter.rules.tmp && \
         mv -f \"$snap\"/nodeport-filter.rules.tmp \"$snap\"/nodeport-filter.rules; \
         else : > \"$snap\"/nodeport-filter.absent; fi\n",
        p = quote(RULES_PATH)
    )
}

/// Puts the saved rules back and loads them, or removes the filter when there was none; when
/// that fails, removes the filter (which never blocks more than before) and says FAIL-OPEN.
fn rollback_script() -> String {
    format!(
        "if [ -f \"$snap\"/nodeport-filter.rules ]; then\n\
         if cp -p \"$snap\"/nodeport-filter.rules {p} && {load}; then echo RESTORED; exit 0; fi\n\
         elif [ -f \"$snap\"/nodeport-filter.absent ]; then\n\
         rm -f {p}; {unload}; echo RESTORED; exit 0\n\
         fi\n\
         rm -f {p}; {unload}\n\
         echo 'FAIL-OPEN: the previous NodePort filter could not be restored; the filter is REMOVED'\n",
        p = quote(RULES_PATH),
        load = load_command(),
        unload = unload_command(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::file::{sha256_hex, testing::*};
    use super::*;

    fn filter(args: &str) -> Result<NodeportFilter, InputError> {
        build_simple(args, NodeportFilter::from_args)
    }

    const NODES: &str = r#"ssh_port = 2222
allow = [
  { port = 30080, proto = "tcp", from = "any" },
  { port = "30443", proto = "tcp", from = ["any"] },
  { from = ["198.51.100.7", "10.0.0.5", "10.0.0.6", "10.244.0.0/16", "10.0.0.5", "2001:db8::1"] },
  { from = [] },
]"#;

    /// Probe output of a host where `f` was loaded and installed as this module does.
    fn converged(f: &NodeportFilter) -> String {
        let mut s = format!(
            "iptables=yes\njump=yes\nchain=-N {CHAIN}\nunit_sha={}\nrules_sha={}\nenabled=enabled\n",
            sha256_hex(unit_file().as_bytes()),
            sha256_hex(f.rules_file().as_bytes())
        );
        for r in &f.rules {
            // As iptables -S prints them (the same rules, in its own words).
            s.push_str(&format!("chain=-A {CHAIN} {}\n", r.replace(" -m tcp", "")));
        }
        s
    }

    fn kinds(changes: &[Change]) -> Vec<&str> {
        changes
            .iter()
            .map(|c| match &c.action {
                Action::Upload { .. } => "upload",
                Action::Shell { .. } => "shell",
                Action::GuardedFirewall { .. } => "guarded",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn rules_let_ssh_replies_and_allowed_sources_through_then_drop_the_range() {
        let f = filter(NODES).unwrap();
        let file = f.rules_file();
        let body: Vec<&str> = file.lines().filter(|l| l.starts_with("-A ")).collect();
        let want = [
            "-A BOOTSTRAP-NODEPORTS -p tcp -m tcp --dport 2222 -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -m conntrack ! --ctstate NEW -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -m addrtype ! --dst-type LOCAL -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -p tcp -m tcp --dport 30080 -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -p tcp -m tcp --dport 30443 -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -s 198.51.100.7/32 -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -s 10.0.0.5/32 -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -s 10.0.0.6/32 -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -s 10.244.0.0/16 -j RETURN",
            "-A BOOTSTRAP-NODEPORTS -p tcp -m tcp --dport 30000:32767 -j DROP",
            "-A BOOTSTRAP-NODEPORTS -p udp -m udp --dport 30000:32767 -j DROP",
        ];
        // The marker first (a rule without a target: it only carries the digest).
        assert!(
            body[0].starts_with(
                "-A BOOTSTRAP-NODEPORTS -m comment --comment \"bootstrap: nodeport filter "
            ),
            "{file}"
        );
        assert_eq!(body[1..], want, "{file}");
        // One commit: declared (created or kept), flushed and refilled together.
        assert!(file.contains("*mangle\n:BOOTSTRAP-NODEPORTS - [0:0]\n-F BOOTSTRAP-NODEPORTS\n"));
        assert!(file.ends_with("COMMIT\n"));
        assert_eq!(
            f.allowed,
            vec![
                "30080/tcp from any",
                "30443/tcp from any",
                "all from 198.51.100.7, 10.0.0.5, 10.0.0.6, 10.244.0.0/16"
            ]
        );
    }

    #[test]
    fn a_port_without_proto_stands_for_tcp_and_udp() {
        let f = filter(r#"allow = [{ port = "31000:31010", from = "10.0.0.5" }]"#).unwrap();
        assert!(f
            .rules
            .contains(&"-s 10.0.0.5/32 -p tcp -m tcp --dport 31000:31010 -j RETURN".to_string()));
        assert!(f
            .rules
            .contains(&"-s 10.0.0.5/32 -p udp -m udp --dport 31000:31010 -j RETURN".to_string()));
        // The default SSH port is let through first.
        assert_eq!(f.rules[1], "-p tcp -m tcp --dport 22 -j RETURN");
    }

    #[test]
    fn rejects_bad_arguments_with_hints() {
        for bad in [
            "ssh_port = 0",
            "range = \"32767:30000\"",
            "range = \"30000\"",
            "allow = [{ port = \"29999\", from = \"any\" }]",
            "allow = [{ port = \"30000:40000\", from = \"any\" }]",
            "allow = [{ port = \"30080\", proto = \"sctp\", from = \"any\" }]",
            "allow = [{ from = \"10.0.0.7/24\" }]",
            "allow = [{ from = \"not an address\" }]",
            "allow = [{ port = \"30080\" }]",
            "allow = [{ from = \"any\", src = \"10.0.0.5\" }]",
        ] {
            let e = filter(bad)
                .err()
                .unwrap_or_else(|| panic!("accepted: {bad}"));
            assert_eq!(e.line, Some(7), "{bad}");
        }
    }

    #[test]
    fn converged_host_plans_nothing() {
        let f = filter(NODES).unwrap();
        assert_eq!(f.plan(&probe(&converged(&f))).unwrap(), vec![]);
    }

    #[test]
    fn fresh_host_installs_the_unit_then_loads_under_the_guard() {
        let f = filter(NODES).unwrap();
        let changes = f
            .plan(&probe(
                "iptables=yes\njump=no\nunit_sha=absent\nrules_sha=absent\nenabled=\n",
            ))
            .unwrap();
        assert_eq!(kinds(&changes), ["upload", "shell", "guarded"]);
        assert_eq!(
            changes[2].summary,
            "nodeport filter: new connections to 30000:32767 only 30080/tcp from any; \
             30443/tcp from any; all from 198.51.100.7, 10.0.0.5, 10.0.0.6, 10.244.0.0/16"
        );
        let Action::GuardedFirewall {
            snapshot,
            script,
            rollback,
        } = &changes[2].action
        else {
            unreachable!()
        };
        assert!(script.contains(&f.rules_file()));
        assert!(script.contains(&format!("systemctl restart {UNIT}")));
        assert!(snapshot.contains("nodeport-filter.absent"));
        assert!(rollback.contains("RESTORED") && rollback.contains("FAIL-OPEN"));
    }

    #[test]
    fn a_flushed_chain_a_lost_jump_or_a_changed_list_is_reloaded_alone() {
        let f = filter(NODES).unwrap();
        let host = converged(&f);
        let flushed: String = host
            .lines()
            .filter(|l| !l.starts_with("chain=-A"))
            .map(|l| format!("{l}\n"))
            .collect();
        let no_jump = host.replace("jump=yes", "jump=no");
        let one_rule_less =
            host.replace(&format!("chain=-A {CHAIN} -s 10.0.0.6/32 -j RETURN\n"), "");
        for drifted in [flushed, no_jump, one_rule_less] {
            assert_eq!(kinds(&f.plan(&probe(&drifted)).unwrap()), ["guarded"]);
        }
        // Another admin address: a new digest, so the loaded chain is not the wanted one.
        let other = filter(&NODES.replace("198.51.100.7", "198.51.100.8")).unwrap();
        assert_ne!(other.digest(), f.digest());
        assert_eq!(kinds(&other.plan(&probe(&host)).unwrap()), ["guarded"]);
        // A disabled unit is enabled again, nothing else.
        let disabled = host.replace("enabled=enabled", "enabled=disabled");
        assert_eq!(kinds(&f.plan(&probe(&disabled)).unwrap()), ["shell"]);
    }

    #[test]
    fn no_iptables_yet_is_not_yet() {
        let f = filter(NODES).unwrap();
        let e = f.plan(&probe("iptables=missing\nenabled=\n")).unwrap_err();
        assert!(e.is_not_yet(), "{e}");
    }

    /// Runs `script` as root in a network namespace of its own (real iptables, no effect on
    /// this machine); `None` where that is not possible (no root, no unshare, no iptables).
    fn in_netns(script: &str) -> Option<String> {
        let out = std::process::Command::new("unshare")
            .args(["-n", "sh", "-c", script])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn real_iptables_loads_the_rules_twice_without_duplicates_and_the_probe_sees_them() {
        if in_netns("iptables -w -t mangle -S >/dev/null && command -v iptables-restore").is_none()
        {
            eprintln!("skipped: no network namespace with iptables here");
            return;
        }
        let f = filter(NODES).unwrap();
        let other = filter(&NODES.replace("198.51.100.7", "198.51.100.8")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (mine, theirs) = (
            dir.path().join("mine.rules"),
            dir.path().join("other.rules"),
        );
        std::fs::write(&mine, f.rules_file()).unwrap();
        std::fs::write(&theirs, other.rules_file()).unwrap();
        let load = |p: &std::path::Path| load_command().replace(RULES_PATH, p.to_str().unwrap());
        let probe_script = f.probe(ProbeOptions::default());
        // Loaded twice (a rerun, a reboot after a run): one jump, the rules once.
        let twice = in_netns(&format!(
            "set -e\n{l}\n{l}\n{probe_script}\niptables -w -t mangle -S PREROUTING | grep -c {CHAIN}\n",
            l = load(&mine)
        ))
        .expect("loads in a namespace");
        let facts = parse_facts(&twice);
        assert!(facts.iptables && facts.jump, "{twice}");
        assert!(f.live_current(&facts), "{twice}");
        assert!(
            !other.live_current(&facts),
            "another list is not the loaded one"
        );
        assert_eq!(twice.lines().last(), Some("1"), "one jump:\n{twice}");
        // Another list replaces the chain in one commit; the unload removes all of it.
        let replaced = in_netns(&format!(
            "set -e\n{}\n{}\n{probe_script}",
            load(&mine),
            load(&theirs)
        ))
        .unwrap();
        assert!(other.live_current(&parse_facts(&replaced)), "{replaced}");
        let unloaded = in_netns(&format!(
            "set -e\n{}\n{}\n{probe_script}iptables -w -t mangle -S\n",
            load(&mine),
            unload_command()
        ))
        .unwrap();
        let facts = parse_facts(&unloaded);
        assert!(!facts.jump && facts.chain.is_empty(), "{unloaded}");
        assert!(!unloaded.contains(CHAIN), "{unloaded}");
    }
}
