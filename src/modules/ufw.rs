//! The host firewall, through ufw.
//!
//! Arguments:
//! - `state` (default `"enabled"`): `"enabled"` or `"disabled"`.
//! - `ssh_port` (default `22`): always allowed (`ufw allow PORT/tcp`, comment `bootstrap: ssh`)
//!   before anything that could lock the run out.
//! - `default_incoming` (default `"deny"`), `default_outgoing` (default `"allow"`),
//!   `default_routed` (unmanaged when absent): `"allow"`, `"deny"` or `"reject"`.
//! - `rules`: rules for traffic to this host; `route_rules`: the same for forwarded traffic
//!   (`ufw route ...`, e.g. pod traffic). Each rule:
//!   - `action`: `"allow"`, `"deny"` or `"reject"`;
//!   - `port` (optional): `"5432"` or a range `"30000:32767"` (a range needs `tcp` or `udp`);
//!   - `proto` (default `"any"`): `"tcp"`, `"udp"`, `"any"`, or without a port one of
//!     `"gre"`, `"esp"`, `"ah"`, `"vrrp"`, `"ipv6"`, `"igmp"`. ufw cannot name IP-in-IP
//!     (protocol 4, Calico's default encapsulation): allow everything from the other nodes
//!     instead (`{ action = "allow", from = "10.0.0.5" }`, no `proto`, no `port`);
//!   - `from`, `to` (default `"any"`): an address or CIDR (IPv4 or IPv6);
//!   - `comment` (optional): stored as `bootstrap: <comment>`.
//!
//! ```toml
//! [[steps]]
//! name = "firewall"
//! [steps.ufw]
//! state = "enabled"
//! ssh_port = 22
//! rules = [
//!   { action = "allow", port = "5432", proto = "tcp", from = "10.0.0.5", comment = "postgres from master" },
//!   { action = "deny", port = "5432", proto = "tcp", comment = "postgres from anyone else" },
//! ]
//! route_rules = [{ action = "allow", from = "192.168.0.0/16", comment = "pod network" }]
//! ```
//!
//! Ownership: rules whose comment starts with `bootstrap:` belong to this module. Managed rules
//! that are no longer wanted are deleted and missing ones added, so changing one inventory value
//! changes exactly that rule; rules added by hand (other comments) are left alone.
//!
//! Order (ufw stops at the first matching rule): allow rules are *prepended* (`ufw prepend`) and
//! deny/reject rules *appended*, so every managed allow sits above every managed deny and a deny
//! is the fallback for traffic no allow matched (5432 from the master: allowed; from anyone
//! else: denied). This needs no rule numbers, which ufw only shows while active and which shift
//! under concurrent edits. A managed deny found above a managed allow is deleted and appended
//! again. Order between allows (or between denies) does not change what passes.
//!
//! IPv6: a rule with an IPv4 address exists for IPv4 only; a rule without addresses for both
//! families. So an IPv4-only allow list plus a deny without addresses also denies over IPv6.
//!
//! Lock-out guard: changes that could cut access (enabling ufw, changing a default policy,
//! deleting any rule, adding a deny/reject rule) go into one `GuardedFirewall` change. Its script
//! first saves /etc/ufw/{user,user6}.rules, /etc/ufw/ufw.conf and /etc/default/ufw, then makes
//! sure the SSH rule exists. Its rollback puts the saved files back and reloads ufw (or disables
//! it when it was disabled before, or when the reload fails): the host returns to the firewall it
//! had when the run reached it over SSH, instead of being left wide open as a bare
//! `ufw disable` would; disabling remains the fallback because it always restores access.
//! Allow additions and comment updates only ever let more through: alone, they are plain shell
//! changes; beside a guarded change they go inside it (first), so that a rollback returns the
//! firewall exactly to what it was before the step.

use super::*;
use crate::error::InputError;
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Allow,
    Deny,
    Reject,
}

impl Policy {
    fn word(self) -> &'static str {
        match self {
            Policy::Allow => "allow",
            Policy::Deny => "deny",
            Policy::Reject => "reject",
        }
    }
    /// From /etc/default/ufw's iptables target names.
    fn from_target(target: &str) -> Option<Policy> {
        match target {
            "ACCEPT" => Some(Policy::Allow),
            "DROP" => Some(Policy::Deny),
            "REJECT" => Some(Policy::Reject),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default)]
    state: State,
    #[serde(default = "default_ssh_port")]
    ssh_port: u16,
    #[serde(default = "deny")]
    default_incoming: Policy,
    #[serde(default = "allow")]
    default_outgoing: Policy,
    #[serde(default)]
    default_routed: Option<Policy>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    route_rules: Vec<RuleSpec>,
}

pub(super) fn default_ssh_port() -> u16 {
    22
}
fn deny() -> Policy {
    Policy::Deny
}
fn allow() -> Policy {
    Policy::Allow
}

/// A rule as written in the playbook: `from` and `to` may list several addresses, which
/// stands for one rule per address (so an inventory list becomes rules without a loop).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    action: Policy,
    #[serde(default)]
    port: Option<Text>,
    #[serde(default)]
    proto: Option<String>,
    #[serde(default)]
    from: Option<OneOrMany<String>>,
    #[serde(default)]
    to: Option<OneOrMany<String>>,
    #[serde(default)]
    comment: Option<String>,
}

impl RuleSpec {
    /// One `RuleArgs` per (from, to) pair; repeated addresses in a list count once.
    fn expand(self) -> Vec<RuleArgs> {
        let list = |v: Option<OneOrMany<String>>| -> Vec<Option<String>> {
            match v {
                None => vec![None],
                Some(v) => {
                    // A set beside the list: a node list of thousands stays linear.
                    let mut seen = std::collections::HashSet::new();
                    v.into_vec()
                        .into_iter()
                        .filter(|a| seen.insert(a.clone()))
                        .map(Some)
                        .collect()
                }
            }
        };
        let (froms, tos) = (list(self.from), list(self.to));
        let mut out = Vec::new();
        for from in &froms {
            for to in &tos {
                out.push(RuleArgs {
                    action: self.action,
                    port: self.port.clone().map(|t| t.0),
                    proto: self.proto.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    comment: self.comment.clone(),
                });
            }
        }
        out
    }
}

struct RuleArgs {
    action: Policy,
    port: Option<String>,
    proto: Option<String>,
    from: Option<String>,
    to: Option<String>,
    comment: Option<String>,
}

/// Comment prefix marking the rules this module owns.
pub const MANAGED_PREFIX: &str = "bootstrap:";

/// The saved firewall files, as named inside the run's snapshot directory `$snap`.
const SAVED: &[(&str, &str)] = &[
    ("/etc/ufw/user.rules", "user.rules"),
    ("/etc/ufw/user6.rules", "user6.rules"),
    ("/etc/ufw/ufw.conf", "ufw.conf"),
    ("/etc/default/ufw", "default-ufw"),
];

/// A rule as ufw keeps it in its `### tuple ###` lines, normalised so equal rules compare equal.
/// Fields this module never sets (source port, direction, logging) are kept so that a managed
/// rule edited by hand never passes for a wanted one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    pub route: bool,
    /// `allow`, `deny`, `reject`, or with ufw's logging suffix (`allow_log`).
    pub action: String,
    pub proto: String,
    pub dport: String,
    pub dst: String,
    pub sport: String,
    pub src: String,
    /// `in`, `out`, `in_eth0`...
    pub direction: String,
}

impl RuleKey {
    fn base_action(&self) -> &str {
        self.action.split('_').next().unwrap_or("")
    }
    fn is_allow(&self) -> bool {
        matches!(self.base_action(), "allow" | "limit")
    }
    /// The rule in ufw's full syntax, without `ufw`, `delete` or a comment.
    fn spec_words(&self) -> Vec<String> {
        let mut w: Vec<String> = self.action.split('_').map(str::to_string).collect();
        match self.direction.split_once('_') {
            Some((dir, iface)) => w.extend([dir.to_string(), "on".into(), iface.to_string()]),
            None if self.direction != "in" => w.push(self.direction.clone()),
            None => {}
        }
        if self.proto != "any" {
            w.extend(["proto".into(), self.proto.clone()]);
        }
        w.extend(["from".into(), self.src.clone()]);
        if self.sport != "any" {
            w.extend(["port".into(), self.sport.clone()]);
        }
        w.extend(["to".into(), self.dst.clone()]);
        if self.dport != "any" {
            w.extend(["port".into(), self.dport.clone()]);
        }
        w
    }
    /// `ufw [route] VERB SPEC [comment C]` with every word quoted.
    fn command(&self, verb: Option<&str>, comment: Option<&str>) -> String {
        let mut words: Vec<String> = vec!["ufw".into()];
        if verb == Some("delete") {
            // --force: never wait for a confirmation prompt.
            words.push("--force".into());
        }
        if self.route {
            words.push("route".into());
        }
        words.extend(verb.map(str::to_string));
        words.extend(self.spec_words());
        if let Some(c) = comment {
            words.extend(["comment".into(), c.to_string()]);
        }
        crate::transport::shell::join(words)
    }
    /// Human form for summaries: `allow 5432/tcp from 10.0.0.5`.
    fn describe(&self) -> String {
        let mut s = String::new();
        if self.route {
            s += "route ";
        }
        s += &self.action;
        if self.direction != "in" {
            s += &format!(" {}", self.direction);
        }
        match (self.dport.as_str(), self.proto.as_str()) {
            ("any", "any") => {}
            ("any", p) => s += &format!(" proto {p}"),
            (port, "any") => s += &format!(" {port}"),
            (port, p) => s += &format!(" {port}/{p}"),
        }
        s += &format!(" from {}", self.src);
        if self.sport != "any" {
            s += &format!(" port {}", self.sport);
        }
        if self.dst != "any" {
            s += &format!(" to {}", self.dst);
        }
        s
    }
    /// Address families this rule exists in, as ufw would add it.
    fn families(&self, ipv6_enabled: bool) -> Vec<u8> {
        let fam = |a: &str| match a.parse::<IpAddr>().ok().or_else(|| {
            a.split_once('/')
                .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
        }) {
            Some(IpAddr::V4(_)) => Some(4),
            Some(IpAddr::V6(_)) => Some(6),
            None => None,
        };
        match fam(&self.src).or(fam(&self.dst)) {
            Some(f) => vec![f],
            // ipv6 (6in4) and igmp exist for IPv4 only.
            None if !ipv6_enabled || matches!(self.proto.as_str(), "ipv6" | "igmp") => vec![4],
            None => vec![4, 6],
        }
    }
}

/// A rule this module wants, with its full comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedRule {
    pub key: RuleKey,
    pub comment: String,
}

#[derive(Debug)]
pub struct Ufw {
    pub state: State,
    pub ssh_port: u16,
    pub default_incoming: Policy,
    pub default_outgoing: Policy,
    pub default_routed: Option<Policy>,
    /// The SSH rule first, then `rules`, then `route_rules`.
    pub rules: Vec<WantedRule>,
}

/// `"5432"` or `"30000:32767"` as (first, last): numbers from 1 without leading zeros, a range
/// rising. Shared with `nodeport_filter`, whose ports are written the same way.
pub(super) fn parse_ports(p: &str) -> Option<(u16, u16)> {
    let num = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|n| *n > 0 && !s.starts_with('0'))
    };
    match p.split_once(':') {
        Some((a, b)) => Some((num(a)?, num(b)?)).filter(|(a, b)| a < b),
        None => num(p).map(|n| (n, n)),
    }
}

const PORTLESS_PROTOS: &[&str] = &["gre", "esp", "ah", "vrrp", "ipv6", "igmp"];

fn wanted_rule(r: RuleArgs, route: bool) -> Result<WantedRule, (String, &'static str)> {
    let proto = r.proto.unwrap_or_else(|| "any".into());
    if proto == "ipip" || proto == "4" {
        return Err((
            "ufw cannot match IP-in-IP (protocol 4) by name".into(),
            "allow all protocols from the peer instead: { action = \"allow\", from = \"NODE_IP\" }",
        ));
    }
    let known = ["tcp", "udp", "any"].contains(&proto.as_str())
        || PORTLESS_PROTOS.contains(&proto.as_str());
    if !known {
        return Err((
            format!("unknown proto {proto:?}"),
            "use tcp, udp, any, gre, esp, ah, vrrp, ipv6 or igmp",
        ));
    }
    let dport = match r.port {
        None => "any".to_string(),
        Some(p) => {
            if parse_ports(&p).is_none() {
                return Err((
                    format!("port {p:?} is not a port or a range"),
                    "write \"5432\" or \"30000:32767\"",
                ));
            }
            if PORTLESS_PROTOS.contains(&proto.as_str()) {
                return Err((format!("proto {proto} takes no port"), "drop `port`"));
            }
            if p.contains(':') && proto == "any" {
                return Err((
                    format!("port range {p} needs a protocol"),
                    "add proto = \"tcp\" or \"udp\"",
                ));
            }
            p
        }
    };
    let addr = |a: Option<String>| {
        super::address::normalise(a.as_deref().unwrap_or("any")).map_err(|e| {
            (
                e,
                "write \"any\", an address like \"10.0.0.5\", or a CIDR like \"10.0.0.0/24\"",
            )
        })
    };
    let src = addr(r.from)?;
    let dst = addr(r.to)?;
    let v6 = |a: &str| a.contains(':');
    if src != "any" && dst != "any" && v6(&src) != v6(&dst) {
        return Err((
            format!("from {src} and to {dst} are of different IP versions"),
            "use two addresses of the same family",
        ));
    }
    let key = RuleKey {
        route,
        action: r.action.word().to_string(),
        proto,
        dport,
        dst,
        sport: "any".into(),
        src,
        direction: "in".into(),
    };
    let comment = match r.comment {
        Some(c) if c.chars().any(|ch| ch.is_control()) || c.contains('\'') => {
            return Err((
                format!("comment {c:?} has control characters or quotes"),
                "use plain text",
            ))
        }
        Some(c) => format!("{MANAGED_PREFIX} {c}"),
        None => format!("{MANAGED_PREFIX} {}", key.describe()),
    };
    Ok(WantedRule { key, comment })
}

impl Ufw {
    pub fn from_args(args: &toml::Value, ctx: &BuildContext<'_>) -> Result<Self, InputError> {
        let a: Args = parse_args("ufw", args, ctx)?;
        let err = |msg: String, hint: &str| InputError::new(ctx.playbook, ctx.line, msg).hint(hint);
        if a.ssh_port == 0 {
            return Err(err(
                "`ssh_port` cannot be 0".into(),
                "the port sshd listens on, e.g. 22",
            ));
        }
        let mut rules = vec![WantedRule {
            key: RuleKey {
                route: false,
                action: "allow".into(),
                proto: "tcp".into(),
                dport: a.ssh_port.to_string(),
                dst: "any".into(),
                sport: "any".into(),
                src: "any".into(),
                direction: "in".into(),
            },
            comment: format!("{MANAGED_PREFIX} ssh"),
        }];
        // Errors name the rule as written (`rules[2]`, and the address of an expanded `from`
        // or `to` list), not its place in the expanded list. Duplicates are found with a set:
        // a rule per cluster node must not make validation quadratic.
        let mut seen: std::collections::HashSet<RuleKey> =
            std::collections::HashSet::from([rules[0].key.clone()]);
        let written = a
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| ("rules", i + 1, r, false))
            .chain(
                a.route_rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| ("route_rules", i + 1, r, true)),
            );
        for (list, n, spec, route) in written {
            for r in spec.expand() {
                let which = match (&r.from, &r.to) {
                    (Some(f), Some(t)) => format!("{list}[{n}] (from {f} to {t})"),
                    (Some(f), None) => format!("{list}[{n}] (from {f})"),
                    (None, Some(t)) => format!("{list}[{n}] (to {t})"),
                    (None, None) => format!("{list}[{n}]"),
                };
                let w = wanted_rule(r, route).map_err(|(m, h)| err(format!("{which}: {m}"), h))?;
                if !seen.insert(w.key.clone()) {
                    return Err(err(
                        format!(
                            "{which}: `{}` is listed twice (or repeats the ssh rule)",
                            w.key.describe()
                        ),
                        "list each rule once; the ssh_port rule is added for you",
                    ));
                }
                rules.push(w);
            }
        }
        Ok(Ufw {
            state: a.state,
            ssh_port: a.ssh_port,
            default_incoming: a.default_incoming,
            default_outgoing: a.default_outgoing,
            default_routed: a.default_routed,
            rules,
        })
    }
}

/// One `### tuple ###` line of user.rules / user6.rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub family: u8,
    pub key: RuleKey,
    /// Decoded comment ("" when none).
    pub comment: String,
    /// An application-profile rule (`dapp`/`sapp` fields): not expressible by this module.
    pub app: bool,
}

/// Parses the text after `### tuple ### `: `action proto dport dst sport src [dapp sapp] dir`,
/// with an optional trailing ` comment=<hex>`.
pub fn parse_tuple(line: &str, family: u8) -> Option<Tuple> {
    let (body, comment) = match line.split_once(" comment=") {
        Some((b, hexed)) => (
            b,
            hex::decode(hexed.trim())
                .ok()
                .and_then(|c| String::from_utf8(c).ok())?,
        ),
        None => (line, String::new()),
    };
    let f: Vec<&str> = body.split_whitespace().collect();
    if !(6..=9).contains(&f.len()) {
        return None;
    }
    let any = |a: &str| match a {
        "0.0.0.0/0" | "::/0" => "any".to_string(),
        other => other.to_string(),
    };
    let (route, action) = match f[0].split_once(':') {
        Some(("route", a)) => (true, a),
        Some(_) => return None,
        None => (false, f[0]),
    };
    let direction = if f.len() == 7 || f.len() == 9 {
        f[f.len() - 1]
    } else {
        "in"
    };
    Some(Tuple {
        family,
        key: RuleKey {
            route,
            action: action.to_string(),
            proto: f[1].to_string(),
            dport: f[2].to_string(),
            dst: any(f[3]),
            sport: f[4].to_string(),
            src: any(f[5]),
            direction: direction.to_string(),
        },
        comment,
        app: f.len() >= 8,
    })
}

/// What the probe found.
#[derive(Debug, Default)]
struct Facts {
    active: bool,
    incoming: Option<Policy>,
    outgoing: Option<Policy>,
    routed: Option<Policy>,
    ipv6: bool,
    tuples: Vec<Tuple>,
}

fn parse_facts(stdout: &str) -> Facts {
    let kv = probe_util::key_values(stdout);
    let get = |k: &str| kv.get(k).map(|v| v.trim());
    let installed = get("ufw") == Some("installed");
    if !installed {
        // Not installed yet (check mode on a fresh host): the package's defaults.
        return Facts {
            ipv6: true,
            incoming: Some(Policy::Deny),
            outgoing: Some(Policy::Allow),
            routed: Some(Policy::Deny),
            ..Facts::default()
        };
    }
    let policy = |k: &str| get(k).and_then(Policy::from_target);
    let tuples = stdout
        .lines()
        .filter_map(|l| {
            l.strip_prefix("rule4=")
                .map(|t| (t, 4))
                .or_else(|| l.strip_prefix("rule6=").map(|t| (t, 6)))
        })
        .filter_map(|(t, fam)| parse_tuple(t, fam))
        .collect();
    Facts {
        active: get("ENABLED").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        incoming: policy("DEFAULT_INPUT_POLICY"),
        outgoing: policy("DEFAULT_OUTPUT_POLICY"),
        routed: policy("DEFAULT_FORWARD_POLICY"),
        ipv6: get("IPV6") != Some("no"),
        tuples,
    }
}

impl Module for Ufw {
    fn probe(&self, _opts: ProbeOptions) -> String {
        // ufw's own files, not `ufw status`: its Python front end costs about a second, and
        // `ufw status` says "active" exactly when ufw.conf has ENABLED=yes (a quoted value
        // counts, case does not matter, the last line wins, as in ufw's own reader).
        "if command -v ufw >/dev/null 2>&1; then\n\
         echo ufw=installed\n\
         grep -E '^ENABLED=' /etc/ufw/ufw.conf 2>/dev/null | tr -d '\"'\n\
         grep -E '^(DEFAULT_[A-Z]+_POLICY|IPV6)=' /etc/default/ufw | tr -d '\"'\n\
         sed -n 's/^### tuple ### /rule4=/p' /etc/ufw/user.rules 2>/dev/null\n\
         sed -n 's/^### tuple ### /rule6=/p' /etc/ufw/user6.rules 2>/dev/null\n\
         else echo ufw=missing; fi\n"
            .to_string()
    }

    fn plan(&self, probe: &ProbeOutput) -> Result<Vec<Change>, PlanError> {
        self.plan_from(&parse_facts(&probe.stdout))
    }
}

fn shell(summary: String, script: String) -> Change {
    Change::new(
        summary,
        Action::Shell {
            script,
            stdin: None,
        },
    )
}

impl Ufw {
    fn plan_from(&self, facts: &Facts) -> Result<Vec<Change>, PlanError> {
        let managed: Vec<&Tuple> = facts
            .tuples
            .iter()
            .filter(|t| t.comment.starts_with(MANAGED_PREFIX))
            .collect();
        if let Some(app) = managed.iter().find(|t| t.app) {
            return Err(PlanError(format!(
                "a rule marked `{}` uses an application profile ({}); delete it by hand",
                app.comment,
                app.key.describe()
            )));
        }
        let wanted = |k: &RuleKey| self.rules.iter().any(|w| &w.key == k);

        // Managed rules not wanted, and managed denies found above a managed allow.
        let mut delete: Vec<RuleKey> = Vec::new();
        for t in &managed {
            if !wanted(&t.key) && !delete.contains(&t.key) {
                delete.push(t.key.clone());
            }
        }
        let mut reappend: Vec<RuleKey> = Vec::new();
        for family in [4u8, 6] {
            for route in [false, true] {
                let chain: Vec<&RuleKey> = managed
                    .iter()
                    .filter(|t| t.family == family && t.key.route == route && wanted(&t.key))
                    .map(|t| &t.key)
                    .collect();
                for (i, k) in chain.iter().enumerate() {
                    let allow_below = chain[i + 1..].iter().any(|b| b.is_allow());
                    if !k.is_allow() && allow_below && !reappend.contains(k) {
                        reappend.push((*k).clone());
                    }
                }
            }
        }

        // Wanted rules missing from one of their families, or carrying another comment.
        let present = |k: &RuleKey| {
            k.families(facts.ipv6)
                .iter()
                .all(|f| facts.tuples.iter().any(|t| t.family == *f && &t.key == k))
        };
        let mut add_allow: Vec<&WantedRule> = Vec::new();
        let mut add_block: Vec<&WantedRule> = Vec::new();
        let mut recomment: Vec<&WantedRule> = Vec::new();
        for w in &self.rules {
            if reappend.contains(&w.key) {
                add_block.push(w);
            } else if !present(&w.key) {
                if w.key.is_allow() {
                    add_allow.push(w);
                } else {
                    add_block.push(w);
                }
            } else if !facts
                .tuples
                .iter()
                .any(|t| t.key == w.key && t.comment == w.comment)
            {
                recomment.push(w);
            }
        }

        let mut defaults: Vec<(Policy, &str)> = Vec::new();
        let want_defaults = [
            (Some(self.default_incoming), facts.incoming, "incoming"),
            (Some(self.default_outgoing), facts.outgoing, "outgoing"),
            (self.default_routed, facts.routed, "routed"),
        ];
        for (want, have, dir) in want_defaults {
            if let Some(want) = want {
                if have != Some(want) {
                    defaults.push((want, dir));
                }
            }
        }

        let mut changes = Vec::new();
        let enabling = self.state == State::Enabled && !facts.active;
        if self.state == State::Disabled && facts.active {
            // Off first: later edits then cannot cut anything.
            changes.push(shell("disable ufw".into(), "ufw --force disable".into()));
        }
        // Rules that only let more through: (sentence without the "ufw: " prefix, command).
        let mut widen: Vec<(String, String)> = Vec::new();
        for w in &add_allow {
            // An unmanaged rule with the same spec takes our comment with a plain add (prepend
            // cannot change comments); a new one goes on top.
            let adopt = facts
                .tuples
                .iter()
                .any(|t| t.key == w.key && t.comment != w.comment);
            let verb = if adopt { None } else { Some("prepend") };
            widen.push((
                format!("add {} ({})", w.key.describe(), w.comment),
                w.key.command(verb, Some(&w.comment)),
            ));
        }
        for w in &recomment {
            widen.push((
                format!("comment {} as '{}'", w.key.describe(), w.comment),
                w.key.command(None, Some(&w.comment)),
            ));
        }

        // Everything below can cut access: guarded when the firewall is (or goes) on.
        let mut what: Vec<String> = Vec::new();
        let mut lines: Vec<String> = Vec::new();
        for k in delete.iter().chain(&reappend) {
            what.push(format!("delete {}", k.describe()));
            lines.push(k.command(Some("delete"), None));
        }
        for w in &add_block {
            what.push(format!("add {} ({})", w.key.describe(), w.comment));
            lines.push(w.key.command(None, Some(&w.comment)));
        }
        for (policy, dir) in &defaults {
            what.push(format!("default {dir} {}", policy.word()));
            lines.push(format!("ufw default {} {dir}", policy.word()));
        }
        if enabling {
            what.push("enable ufw".into());
            lines.push("ufw --force enable".into());
        }
        if lines.is_empty() || self.state == State::Disabled {
            // Nothing can cut access: each widening is a change of its own.
            for (sentence, command) in widen.drain(..) {
                changes.push(shell(format!("ufw: {sentence}"), command));
            }
        } else {
            // A guarded change is coming: the widenings go inside it, so a rollback returns
            // the firewall exactly to what it was before this step.
            for (sentence, command) in widen.drain(..).rev() {
                what.insert(0, sentence);
                lines.insert(0, command);
            }
        }
        if lines.is_empty() {
            return Ok(changes);
        }
        let summary = format!("ufw: {}", what.join("; "));
        if self.state == State::Disabled {
            changes.push(shell(summary, format!("set -e\n{}\n", lines.join("\n"))));
        } else {
            changes.push(Change::new(
                summary,
                Action::GuardedFirewall {
                    snapshot: snapshot_script(),
                    script: self.guarded_script(&lines),
                    rollback: rollback_script(),
                },
            ));
        }
        Ok(changes)
    }

    /// Makes sure SSH stays open, then `lines` (the runner saved the firewall before).
    fn guarded_script(&self, lines: &[String]) -> String {
        let ssh = &self.rules[0];
        format!(
            "set -e\n{}\n{}\n",
            ssh.key.command(Some("prepend"), Some(&ssh.comment)),
            lines.join("\n")
        )
    }
}

/// Saves the firewall files into `$snap`; fails (and so refuses the change) unless every file
/// was copied.
fn snapshot_script() -> String {
    let mut s = String::from("set -e\n");
    for (from, name) in SAVED {
        s.push_str(&format!("cp -p {from} \"$snap\"/{name}.tmp\n"));
    }
    // Renamed only once every copy succeeded: a present file is a complete one.
    for (_, name) in SAVED {
        s.push_str(&format!("mv -f \"$snap\"/{name}.tmp \"$snap\"/{name}\n"));
    }
    s
}

/// Restores the firewall saved in `$snap`. Only when that is impossible (snapshot incomplete,
/// reload failing) does it disable ufw, which always restores access, and then it says so.
fn rollback_script() -> String {
    let all_saved = SAVED
        .iter()
        .map(|(_, name)| format!("[ -f \"$snap\"/{name} ]"))
        .collect::<Vec<_>>()
        .join(" && ");
    let restore = SAVED
        .iter()
        .map(|(to, name)| format!("cp -p \"$snap\"/{name} {to}"))
        .collect::<Vec<_>>()
        .join(" && ");
    format!(
        "if {all_saved}; then\n\
         if {restore}; then\n\
         if grep -q '^ENABLED=yes' /etc/ufw/ufw.conf; then\n\
         ufw reload && echo RESTORED && exit 0\n\
         ufw --force disable; echo 'FAIL-OPEN: ufw reload failed after restoring the saved rules; ufw is DISABLED'; exit 0\n\
         else ufw --force disable && echo RESTORED && exit 0; fi\n\
         fi\n\
         fi\n\
         ufw --force disable; echo 'FAIL-OPEN: the firewall snapshot was incomplete; ufw is DISABLED'\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ufw(args: &str) -> Result<Ufw, InputError> {
        crate::modules::testing::build_simple(args, Ufw::from_args)
    }

    #[test]
    fn error_counted_rules_after_expanding_from_lists() {
        // Two rules written; the bad one is the second, whose `from` list is the third address.
        let err = ufw(r#"rules = [
  { action = "allow", port = "5432", proto = "tcp", from = ["10.0.0.1", "10.0.0.2", "10.0.0.3"] },
  { action = "allow", port = "80", proto = "tcp", from = ["10.0.0.1", "10.0.0.2", "not an address"] },
]"#)
        .unwrap_err();
        assert!(
            err.message.starts_with("rules[2] (from not an address):"),
            "{err}"
        );
        let dup = ufw(r#"rules = [
  { action = "allow", port = "80", proto = "tcp", from = ["10.0.0.1", "10.0.0.2"] },
]
route_rules = [{ action = "allow", from = "10.0.0.9" }, { action = "allow", from = "10.0.0.9" }]"#)
        .unwrap_err();
        assert!(
            dup.message.starts_with("route_rules[2] (from 10.0.0.9):"),
            "{dup}"
        );
    }

    #[test]
    fn a_rule_per_node_for_thousands_of_nodes_is_built_quickly() {
        // Not a timing assertion: 20,000 expanded rules must build at all (the quadratic scan
        // took minutes); the figure is in bench/check-scale.sh.
        let nodes: Vec<String> = (0..20_000)
            .map(|i| format!("\"10.{}.{}.{}\"", i / 65536, (i / 256) % 256, i % 256))
            .collect();
        let u = ufw(&format!(
            "rules = [{{ action = \"allow\", from = [{}] }}]",
            nodes.join(", ")
        ))
        .unwrap();
        assert_eq!(u.rules.len(), 20_001);
    }

    /// The worker's firewall: PostgreSQL from the master, the ELK box and pods; denied otherwise.
    fn worker(master: &str) -> String {
        format!(
            "rules = [\n\
             {{ action = \"allow\", port = \"5432\", proto = \"tcp\", from = \"{master}\", comment = \"postgres from master\" }},\n\
             {{ action = \"allow\", port = \"5432\", proto = \"tcp\", from = \"10.0.0.7\", comment = \"postgres from elk\" }},\n\
             {{ action = \"deny\", port = \"5432\", proto = \"tcp\", comment = \"postgres from anyone else\" }},\n\
             {{ action = \"allow\", from = \"{master}\", comment = \"cluster peer\" }},\n\
             ]\n\
             route_rules = [{{ action = \"allow\", from = \"192.168.0.0/16\", comment = \"pods\" }}]\n"
        )
    }

    fn hexc(c: &str) -> String {
        format!(" comment={}", hex::encode(c))
    }

    /// Probe output of a host where the worker's rules were applied as this module does.
    fn converged(active: bool, master: &str) -> String {
        let enabled = if active { "yes" } else { "no" };
        format!(
            "ufw=installed\nENABLED={enabled}\nIPV6=yes\nDEFAULT_INPUT_POLICY=DROP\n\
             DEFAULT_OUTPUT_POLICY=ACCEPT\nDEFAULT_FORWARD_POLICY=DROP\n\
             rule4=allow any any 0.0.0.0/0 any {master} in{}\n\
             rule4=allow tcp 5432 0.0.0.0/0 any 10.0.0.7 in{}\n\
             rule4=allow tcp 5432 0.0.0.0/0 any {master} in{}\n\
             rule4=allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in{}\n\
             rule4=deny tcp 5432 0.0.0.0/0 any 0.0.0.0/0 in{}\n\
             rule4=route:allow any any 0.0.0.0/0 any 192.168.0.0/16 in{}\n\
             rule6=allow tcp 22 ::/0 any ::/0 in{}\n\
             rule6=deny tcp 5432 ::/0 any ::/0 in{}\n",
            hexc("bootstrap: cluster peer"),
            hexc("bootstrap: postgres from elk"),
            hexc("bootstrap: postgres from master"),
            hexc("bootstrap: ssh"),
            hexc("bootstrap: postgres from anyone else"),
            hexc("bootstrap: pods"),
            hexc("bootstrap: ssh"),
            hexc("bootstrap: postgres from anyone else"),
        )
    }

    fn plan(u: &Ufw, stdout: &str) -> Vec<Change> {
        u.plan(&ProbeOutput {
            exit_status: 0,
            stdout: stdout.to_string(),
        })
        .unwrap()
    }

    use crate::modules::testing::shell_script as shell_of;

    fn guarded_of(c: &Change) -> (&str, &str) {
        match &c.action {
            Action::GuardedFirewall {
                script, rollback, ..
            } => (script, rollback),
            other => panic!("expected GuardedFirewall for {:?}: {other:?}", c.summary),
        }
    }

    #[test]
    fn parses_real_tuple_lines() {
        // Lines written by ufw 0.36.2 on Debian bookworm.
        let t = parse_tuple(
            "allow tcp 5432 0.0.0.0/0 any 10.0.0.5 in comment=626f6f7473747261703a2070672066726f6d206d6173746572",
            4,
        )
        .unwrap();
        assert_eq!(t.comment, "bootstrap: pg from master");
        assert_eq!(t.key.describe(), "allow 5432/tcp from 10.0.0.5");
        assert!(!t.app);
        let r = parse_tuple("route:allow any any 0.0.0.0/0 any 192.168.0.0/16 in", 4).unwrap();
        assert!(r.key.route && r.comment.is_empty());
        assert_eq!(r.key.src, "192.168.0.0/16");
        let v6 = parse_tuple("deny tcp 5432 ::/0 any ::/0 in", 6).unwrap();
        assert_eq!((v6.key.src.as_str(), v6.key.dst.as_str()), ("any", "any"));
        let app = parse_tuple("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 OpenSSH - in", 4).unwrap();
        assert!(app.app);
        let logged = parse_tuple("allow_log tcp 80 0.0.0.0/0 any 0.0.0.0/0 in_eth0", 4).unwrap();
        assert_eq!(
            logged.key.command(Some("delete"), None),
            "ufw --force delete allow log in on eth0 proto tcp from any to any port 80"
        );
        assert!(parse_tuple("garbage", 4).is_none());
    }

    #[test]
    fn rejects_bad_rules_with_hints() {
        let e = ufw("rules = [{ action = \"allow\", proto = \"ipip\", from = \"10.0.0.5\" }]")
            .unwrap_err();
        assert_eq!(e.line, Some(7));
        assert!(e.hint.unwrap().contains("from = \"NODE_IP\""));
        for bad in [
            "rules = [{ action = \"allow\", port = \"30000:32767\" }]",
            "rules = [{ action = \"allow\", port = \"70000\", proto = \"tcp\" }]",
            "rules = [{ action = \"allow\", port = \"22\", proto = \"gre\" }]",
            "rules = [{ action = \"allow\", from = \"10.0.0.7/24\" }]",
            "rules = [{ action = \"allow\", from = \"10.0.0.300\" }]",
            "rules = [{ action = \"permit\" }]",
            "rules = [{ action = \"allow\", port = \"22\", proto = \"tcp\" }]",
            "rules = [{ action = \"allow\", from = \"10.0.0.5\", to = \"::1\" }]",
            "rules = [{ action = \"allow\", src = \"10.0.0.5\" }]",
            "default_incoming = \"drop\"",
        ] {
            assert!(ufw(bad).is_err(), "{bad}");
        }
        let ok = ufw("rules = [{ action = \"allow\", from = \"10.0.0.5/32\", port = \"30000:32767\", proto = \"udp\" }]").unwrap();
        assert_eq!(ok.rules[1].key.src, "10.0.0.5");
        assert_eq!(
            ok.rules[1].comment,
            "bootstrap: allow 30000:32767/udp from 10.0.0.5"
        );
    }

    #[test]
    fn fresh_host_guards_everything_with_allows_first_and_enable_last() {
        let u = ufw(&worker("10.0.0.5")).unwrap();
        let changes = plan(&u, "ufw=missing\n");
        // One guarded change: a rollback returns the firewall exactly to what it was.
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].summary,
            "ufw: add allow 22/tcp from any (bootstrap: ssh); \
             add allow 5432/tcp from 10.0.0.5 (bootstrap: postgres from master); \
             add allow 5432/tcp from 10.0.0.7 (bootstrap: postgres from elk); \
             add allow from 10.0.0.5 (bootstrap: cluster peer); \
             add route allow from 192.168.0.0/16 (bootstrap: pods); \
             add deny 5432/tcp from any (bootstrap: postgres from anyone else); enable ufw"
        );
        let (script, rollback) = guarded_of(&changes[0]);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "set -e");
        // The SSH rule is ensured before anything that could cut access; enabling comes last.
        assert_eq!(
            lines[1],
            "ufw prepend allow proto tcp from any to any port 22 comment 'bootstrap: ssh'"
        );
        assert!(lines.contains(
            &"ufw prepend allow proto tcp from 10.0.0.5 to any port 5432 comment 'bootstrap: postgres from master'"
        ));
        assert!(lines.contains(
            &"ufw route prepend allow from 192.168.0.0/16 to any comment 'bootstrap: pods'"
        ));
        let allow_at = lines
            .iter()
            .position(|l| l.contains("from 10.0.0.7"))
            .unwrap();
        let deny_at = lines
            .iter()
            .position(|l| l.starts_with("ufw deny"))
            .unwrap();
        assert!(allow_at < deny_at, "allows before the deny:\n{script}");
        assert_eq!(*lines.last().unwrap(), "ufw --force enable");
        assert!(rollback.contains("ufw reload && echo RESTORED"));
        assert!(
            rollback.contains("FAIL-OPEN"),
            "a disabling rollback says so"
        );
    }

    #[test]
    fn widening_alone_needs_no_guard() {
        let u = ufw(&worker("10.0.0.5")).unwrap();
        let converged = converged(true, "10.0.0.5");
        // Drop one allow from the converged host: only that allow is planned, unguarded.
        let line = converged
            .lines()
            .find(|l| l.contains("5432") && l.contains("10.0.0.7"))
            .unwrap()
            .to_string();
        let changes = plan(&u, &converged.replace(&format!("{line}\n"), ""));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            changes[0].summary,
            "ufw: add allow 5432/tcp from 10.0.0.7 (bootstrap: postgres from elk)"
        );
        assert!(shell_of(&changes[0]).starts_with("ufw prepend allow"));
    }

    #[test]
    fn an_empty_list_of_sources_stands_for_no_rule_and_its_old_rule_goes() {
        // How the playbooks write a rule that an inventory value turns off (an empty
        // admin_allowed, the other calico_encapsulation's rule).
        let u = ufw(r#"rules = [{ action = "allow", port = "4789", proto = "udp", from = [], comment = "calico vxlan" }]"#).unwrap();
        assert_eq!(u.rules.len(), 1, "the ssh rule only");
        let had = converged(true, "10.0.0.5")
            + &format!(
                "rule4=allow udp 4789 0.0.0.0/0 any 10.0.0.5 in{}\n",
                hexc("bootstrap: calico vxlan")
            );
        let changes = plan(&u, &had);
        assert_eq!(changes.len(), 1);
        assert!(
            changes[0]
                .summary
                .contains("delete allow 4789/udp from 10.0.0.5"),
            "{}",
            changes[0].summary
        );
    }

    #[test]
    fn a_list_of_sources_stands_for_one_rule_each_and_ports_may_be_numbers() {
        let u = ufw(r#"rules = [{ action = "allow", port = 5432, proto = "tcp", from = ["10.0.0.5", "10.0.0.6", "10.0.0.5"], comment = "pg" }]"#).unwrap();
        let pg: Vec<String> = u
            .rules
            .iter()
            .filter(|r| r.comment == "bootstrap: pg")
            .map(|r| r.key.describe())
            .collect();
        assert_eq!(
            pg,
            vec![
                "allow 5432/tcp from 10.0.0.5",
                "allow 5432/tcp from 10.0.0.6"
            ]
        );
    }

    #[test]
    fn converged_host_plans_nothing() {
        let u = ufw(&worker("10.0.0.5")).unwrap();
        assert_eq!(plan(&u, &converged(true, "10.0.0.5")), vec![]);
        // Rules added by hand are left alone.
        let extra = converged(true, "10.0.0.5") + "rule4=allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n";
        assert_eq!(plan(&u, &extra), vec![]);
    }

    #[test]
    fn inactive_firewall_with_all_rules_only_needs_a_guarded_enable() {
        let u = ufw(&worker("10.0.0.5")).unwrap();
        let changes = plan(&u, &converged(false, "10.0.0.5"));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].summary, "ufw: enable ufw");
        assert!(guarded_of(&changes[0]).0.ends_with("ufw --force enable\n"));
    }

    #[test]
    fn changing_one_address_changes_exactly_that_rule() {
        let u = ufw(&worker("10.0.0.6")).unwrap();
        let changes = plan(&u, &converged(true, "10.0.0.5"));
        let summaries: Vec<&str> = changes.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            vec![
                "ufw: add allow 5432/tcp from 10.0.0.6 (bootstrap: postgres from master); \
                 add allow from 10.0.0.6 (bootstrap: cluster peer); \
                 delete allow from 10.0.0.5; delete allow 5432/tcp from 10.0.0.5",
            ]
        );
        let (script, _) = guarded_of(&changes[0]);
        assert!(
            script.contains("ufw --force delete allow proto tcp from 10.0.0.5 to any port 5432\n")
        );
        assert!(!script.contains("enable"));
    }

    #[test]
    fn a_deny_above_a_managed_allow_is_moved_to_the_end() {
        let u = ufw(&worker("10.0.0.5")).unwrap();
        let c = converged(true, "10.0.0.5");
        let deny = format!(
            "rule4=deny tcp 5432 0.0.0.0/0 any 0.0.0.0/0 in{}\n",
            hexc("bootstrap: postgres from anyone else")
        );
        let misordered = c.replace(&deny, "");
        let misordered = misordered.replacen("rule4=", &format!("{deny}rule4="), 1);
        let changes = plan(&u, &misordered);
        assert_eq!(changes.len(), 1);
        let (script, _) = guarded_of(&changes[0]);
        let del = script
            .find("ufw --force delete deny proto tcp from any to any port 5432")
            .unwrap();
        let add = script
            .find("ufw deny proto tcp from any to any port 5432 comment")
            .unwrap();
        assert!(del < add);
    }

    #[test]
    fn defaults_and_comments() {
        let u = ufw(&(worker("10.0.0.5") + "default_routed = \"allow\"")).unwrap();
        let changes = plan(&u, &converged(true, "10.0.0.5"));
        assert_eq!(changes[0].summary, "ufw: default routed allow");
        assert!(guarded_of(&changes[0])
            .0
            .contains("ufw default allow routed\n"));
        // A comment-only change is a plain, unguarded re-add (ufw updates the comment).
        let renamed = worker("10.0.0.5").replace("pods", "pod network");
        let u = ufw(&renamed).unwrap();
        let changes = plan(&u, &converged(true, "10.0.0.5"));
        assert_eq!(changes.len(), 1);
        assert_eq!(
            shell_of(&changes[0]),
            "ufw route allow from 192.168.0.0/16 to any comment 'bootstrap: pod network'"
        );
    }

    #[test]
    fn disabling_goes_first_and_needs_no_guard() {
        let u = ufw("state = \"disabled\"").unwrap();
        let changes = plan(&u, &converged(true, "10.0.0.5"));
        assert_eq!(changes[0].summary, "disable ufw");
        assert!(changes
            .iter()
            .all(|c| matches!(c.action, Action::Shell { .. })));
    }

    #[test]
    fn an_ipv4_only_rule_is_not_missing_from_ipv6_but_an_any_rule_is() {
        let u = ufw("").unwrap();
        let only_v4 = "ufw=installed\nENABLED=yes\nIPV6=yes\nDEFAULT_INPUT_POLICY=DROP\n\
                       DEFAULT_OUTPUT_POLICY=ACCEPT\nDEFAULT_FORWARD_POLICY=DROP\n"
            .to_string()
            + &format!(
                "rule4=allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in{}\n",
                hexc("bootstrap: ssh")
            );
        let changes = plan(&u, &only_v4);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(shell_of(&changes[0])
            .starts_with("ufw prepend allow proto tcp from any to any port 22"));
        assert_eq!(plan(&u, &only_v4.replace("IPV6=yes", "IPV6=no")), vec![]);
    }

    /// A throwaway ufw: its own network namespace (iptables there only) and private copies of
    /// /etc/ufw, /etc/default/ufw and the rollback directory bind-mounted in a mount namespace,
    /// so this machine's own firewall and files are never touched.
    struct Sandbox {
        dir: tempfile::TempDir,
        netns: String,
    }

    impl Sandbox {
        /// What the runner sets before a guarded change's scripts: the run's snapshot dir.
        const SNAP: &'static str =
            "snap=/var/lib/bootstrap/fw-test; export snap; mkdir -p \"$snap\"";

        fn rollback(&self, rollback: &str) -> (bool, String) {
            self.run(&format!("{}\n{rollback}", Self::SNAP))
        }

        fn new() -> Sandbox {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let sh = |cmd: &str| {
                let st = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .status()
                    .unwrap();
                assert!(st.success(), "{cmd}");
            };
            sh(&format!(
                "cp -a /etc/ufw {0}/etc-ufw && cp -p /etc/default/ufw {0}/default-ufw && \
                 mkdir -p {0}/save /var/lib/bootstrap && \
                 for f in user.rules user6.rules; do sed -i '/^### tuple ###/,+1d' {0}/etc-ufw/$f; done && \
                 sed -i 's/^ENABLED=.*/ENABLED=no/' {0}/etc-ufw/ufw.conf",
                d.display()
            ));
            // One namespace per sandbox: the real-ufw tests run in parallel in one process.
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let netns = format!("bsufw{}-{n}", std::process::id());
            sh(&format!("ip netns add {netns}"));
            Sandbox { dir, netns }
        }

        fn run(&self, script: &str) -> (bool, String) {
            let out = std::process::Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(
                    "mount --bind \"$1/etc-ufw\" /etc/ufw && \
                     mount --bind \"$1/default-ufw\" /etc/default/ufw && \
                     mount --bind \"$1/save\" /var/lib/bootstrap && \
                     exec ip netns exec \"$2\" sh -c \"$3\"",
                )
                .args(["sh", self.dir.path().to_str().unwrap(), &self.netns, script])
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }

        fn probe(&self, u: &Ufw) -> Vec<Change> {
            let (ok, out) = self.run(&u.probe(ProbeOptions::default()));
            assert!(ok, "{out}");
            plan(u, &out)
        }

        fn apply(&self, changes: &[Change]) {
            for c in changes {
                let script = match &c.action {
                    Action::Shell { script, .. } => script.clone(),
                    Action::GuardedFirewall {
                        snapshot, script, ..
                    } => format!("{}\n{snapshot}\n{script}", Self::SNAP),
                    other => panic!("{other:?}"),
                };
                let (ok, out) = self.run(&script);
                assert!(ok, "{}: {out}", c.summary);
            }
        }

        fn user_rules(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("etc-ufw/user.rules")).unwrap()
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
        }
    }

    #[test]
    fn ufw_is_active_exactly_when_its_conf_says_enabled_yes() {
        let base = "ufw=installed\nIPV6=yes\nDEFAULT_INPUT_POLICY=DROP\n";
        for (line, active) in [
            ("ENABLED=yes", true),
            ("ENABLED=YES", true),
            ("ENABLED=no", false),
            ("", false),
            ("ENABLED=yes\nENABLED=no", false),
        ] {
            let facts = parse_facts(&format!("{base}{line}\n"));
            assert_eq!(facts.active, active, "{line:?}");
        }
    }

    /// Reads what `ufw status numbered` and `ufw status verbose` say: active, and the
    /// rules counted over both families.
    fn ufw_status_truth(sb: &Sandbox) -> (bool, usize) {
        let (ok, numbered) = sb.run("ufw status numbered");
        assert!(ok, "{numbered}");
        let active = numbered.starts_with("Status: active");
        let rules = numbered
            .lines()
            .filter(|l| l.trim_start().starts_with('['))
            .count();
        (active, rules)
    }

    /// The probe's file-based read, as facts.
    fn file_truth(sb: &Sandbox, u: &Ufw) -> Facts {
        let (ok, out) = sb.run(&u.probe(ProbeOptions::default()));
        assert!(ok, "{out}");
        assert!(
            !out.contains("Status:"),
            "no `ufw status` in a probe: {out}"
        );
        parse_facts(&out)
    }

    /// `BOOTSTRAP_UFW_TESTS=1 cargo test --lib ufw -- --include-ignored` (root, own netns).
    #[test]
    #[ignore]
    fn real_ufw_file_read_equals_ufw_status_inactive_active_and_after_a_hand_delete() {
        if std::env::var_os("BOOTSTRAP_UFW_TESTS").is_none() {
            return;
        }
        let sb = Sandbox::new();
        let u = ufw(&worker("10.0.0.5")).unwrap();
        let same = |when: &str| {
            let facts = file_truth(&sb, &u);
            let (active, rules) = ufw_status_truth(&sb);
            assert_eq!(facts.active, active, "{when}: active");
            if active {
                // Inactive ufw lists no rules; active lists every tuple of both files.
                assert_eq!(facts.tuples.len(), rules, "{when}: rules");
            }
            let (_, verbose) = sb.run("ufw status verbose");
            if active {
                let word = |p: Option<Policy>| p.map(Policy::word).unwrap_or("?");
                let defaults = format!(
                    "Default: {} (incoming), {} (outgoing)",
                    word(facts.incoming),
                    word(facts.outgoing)
                );
                assert!(
                    verbose.contains(&defaults),
                    "{when}: {defaults} in {verbose}"
                );
            }
            facts
        };
        let inactive = same("inactive");
        assert!(!inactive.active);
        sb.apply(&sb.probe(&u));
        let on = same("active with rules");
        assert!(on.active && on.tuples.len() > 4, "{:?}", on.tuples.len());
        let (ok, out) = sb.run("ufw --force delete 1");
        assert!(ok, "{out}");
        let after = same("after a hand `ufw delete`");
        assert_eq!(after.tuples.len(), on.tuples.len() - 1);
        assert!(
            !sb.probe(&u).is_empty(),
            "the rerun puts the deleted rule back"
        );
        let (ok, out) = sb.run("ufw disable");
        assert!(ok, "{out}");
        assert!(!same("disabled by hand").active);
        assert!(
            sb.probe(&u).iter().any(|c| c.summary.contains("enable")),
            "the rerun enables it again"
        );
    }

    /// Real ufw in a sandbox (root, ufw, unshare, ip netns):
    /// `BOOTSTRAP_UFW_TESTS=1 cargo test --lib ufw::tests::real -- --ignored`.
    #[test]
    #[ignore]
    fn real_ufw_converges_orders_rules_and_rolls_back() {
        if std::env::var_os("BOOTSTRAP_UFW_TESTS").is_none() {
            return;
        }
        let host_rules = std::fs::read("/etc/ufw/user.rules").unwrap();
        let sb = Sandbox::new();
        let u = ufw(&worker("10.0.0.5")).unwrap();
        let first = sb.probe(&u);
        assert!(matches!(
            first.last().unwrap().action,
            Action::GuardedFirewall { .. }
        ));
        // Rolling back the enabling run leaves ufw as it was: inactive.
        sb.apply(&first);
        let (_, rollback) = guarded_of(first.last().unwrap());
        let (ok, out) = sb.rollback(rollback);
        assert!(ok && out.contains("RESTORED"), "{out}");
        assert!(sb.run("ufw status").1.starts_with("Status: inactive"));
        assert_eq!(sb.probe(&u).len(), 1, "only the guarded change again");
        sb.apply(&sb.probe(&u));
        assert_eq!(sb.probe(&u), vec![], "second run changes nothing");

        // First match wins: both allows for 5432 sit above the deny, in iptables itself.
        let (_, chain) = sb.run("iptables -S ufw-user-input");
        let pos = |needle: &str| {
            chain
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} in {chain}"))
        };
        let deny = pos("--dport 5432 -j DROP");
        assert!(
            pos("-s 10.0.0.5/32 -p tcp -m tcp --dport 5432 -j ACCEPT") < deny
                && pos("-s 10.0.0.7/32 -p tcp -m tcp --dport 5432 -j ACCEPT") < deny
        );
        let (_, status) = sb.run("ufw status");
        assert!(status.starts_with("Status: active"), "{status}");

        // One inventory value changes: exactly that rule (and its twin) move.
        let moved = ufw(&worker("10.0.0.6")).unwrap();
        let changes = sb.probe(&moved);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let (_, rollback) = guarded_of(&changes[0]);
        sb.apply(&changes);
        assert_eq!(sb.probe(&moved), vec![]);
        let (_, chain) = sb.run("iptables -S ufw-user-input");
        assert!(
            !chain.contains("-s 10.0.0.5/32 ") && chain.contains("-s 10.0.0.6/32 "),
            "{chain}"
        );

        // The rollback puts back the firewall saved before the guarded script.
        let (ok, out) = sb.rollback(rollback);
        assert!(ok && out.contains("RESTORED"), "{out}");
        // Saved state = before the step: the additions are undone with the deletions.
        let restored = sb.user_rules();
        assert!(restored.contains(" 10.0.0.5 in") && !restored.contains(" 10.0.0.6 in"));
        let (_, chain) = sb.run("iptables -S ufw-user-input");
        assert!(
            chain.contains("-s 10.0.0.5/32 ") && !chain.contains("-s 10.0.0.6/32 "),
            "{chain}"
        );
        let (_, status) = sb.run("ufw status");
        assert!(status.starts_with("Status: active"), "{status}");

        // An incomplete snapshot never passes for a restore: ufw is disabled and that is said.
        sb.run("rm -f /var/lib/bootstrap/fw-test/user6.rules");
        let (_, out) = sb.rollback(rollback);
        assert!(out.contains("FAIL-OPEN"), "{out}");
        assert!(sb.run("ufw status").1.starts_with("Status: inactive"));

        assert_eq!(std::fs::read("/etc/ufw/user.rules").unwrap(), host_rules);
    }
}
