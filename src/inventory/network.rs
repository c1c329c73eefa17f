//! The cluster's own address ranges (`pod_cidr`, `service_cidr`) checked against each other and
//! against the hosts: a pod network that covers a host address makes that host unreachable
//! from the pods (and Calico routes its traffic into the overlay).
//!
//! The lab networks are covered the same way: the container lab (10.213.7.0/24) and the
//! Vagrant lab (192.168.56.0/24) are the addresses of the hosts in their inventories.

use std::net::IpAddr;
use std::path::Path;

use crate::error::InputError;

use super::{key_line, Host};

/// The variables holding the cluster's ranges, checked when present.
pub const CIDR_VARS: &[&str] = &["pod_cidr", "service_cidr"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let network: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    /// The address as a 128-bit number with its width, so v4 and v6 share one comparison.
    fn bits(addr: IpAddr) -> (u128, u8) {
        match addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    fn mask(&self, width: u8) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            let all = if width == 128 {
                u128::MAX
            } else {
                (1u128 << width) - 1
            };
            all & !((1u128 << (width - self.prefix)) - 1)
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        let (net, width) = Self::bits(self.network);
        let (a, a_width) = Self::bits(addr);
        width == a_width && (net & self.mask(width)) == (a & self.mask(width))
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if std::ptr::eq(shorter, self) {
            other
        } else {
            self
        };
        shorter.contains(longer.network)
    }
}

/// Checks every host's `pod_cidr`/`service_cidr` (global or per host): they parse, they do not
/// overlap each other, and no host address of the inventory is inside either.
pub fn check_cluster_ranges(path: &Path, text: &str, hosts: &[Host]) -> Result<(), InputError> {
    let addresses: Vec<(IpAddr, &str)> = hosts
        .iter()
        .filter_map(|h| Some((h.ssh.address.parse().ok()?, h.name.as_str())))
        .collect();
    // Most inventories share one value: check each distinct pair of values once.
    let mut seen: Vec<(String, String)> = Vec::new();
    for host in hosts {
        let mut ranges = Vec::new();
        for (var, v) in CIDR_VARS
            .iter()
            .filter_map(|var| host.vars.get(*var).map(|v| (*var, v)))
        {
            let at = || key_line(text, var);
            let parsed = v.as_str().and_then(Cidr::parse).ok_or_else(|| {
                InputError::new(path, at(), format!("`{var}` = {v} is not a CIDR"))
                    .hint("write it like \"10.244.0.0/16\"")
            })?;
            ranges.push((var, v.to_string(), parsed));
        }
        let key = (
            ranges.first().map(|r| r.1.clone()).unwrap_or_default(),
            ranges.get(1).map(|r| r.1.clone()).unwrap_or_default(),
        );
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        if let [(a_var, a_text, a), (b_var, b_text, b)] = &ranges[..] {
            if a.overlaps(b) {
                return Err(InputError::new(
                    path,
                    key_line(text, b_var),
                    format!("`{b_var}` = {b_text} overlaps `{a_var}` = {a_text}"),
                )
                .hint("pods and services need separate ranges"));
            }
        }
        for (var, range_text, range) in &ranges {
            if let Some((addr, name)) = addresses.iter().find(|(a, _)| range.contains(*a)) {
                return Err(InputError::new(
                    path,
                    key_line(text, var),
                    format!("`{var}` = {range_text} contains the address {addr} of host `{name}`"),
                )
                .hint(format!(
                    "choose a `{var}` outside the hosts' networks (the container lab uses \
                     10.213.7.0/24, the Vagrant lab 192.168.56.0/24)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_contain_and_overlap() {
        let pods = Cidr::parse("10.244.0.0/16").unwrap();
        assert!(pods.contains("10.244.3.4".parse().unwrap()));
        assert!(!pods.contains("10.245.0.1".parse().unwrap()));
        assert!(!pods.contains("::1".parse().unwrap()));
        let services = Cidr::parse("10.96.0.0/12").unwrap();
        assert!(!pods.overlaps(&services));
        let wide = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(wide.overlaps(&pods) && pods.overlaps(&wide));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "ten/8", "10.0.0.0/-1", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }
}
