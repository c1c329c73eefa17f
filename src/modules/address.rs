//! Addresses as the firewall modules take them: `any`, an address, or a CIDR.

use std::net::IpAddr;

/// `any`, an address, or a CIDR with no host bits set; `/32` and `/128` become bare addresses
/// as ufw stores them.
pub fn normalise(a: &str) -> Result<String, String> {
    if a == "any" {
        return Ok("any".into());
    }
    let (ip, len) = match a.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (a, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{a:?} is not an address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 = match len {
        None => max,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{a:?}: bad prefix length"))?,
    };
    if len == max {
        return Ok(ip.to_string());
    }
    let network = match ip {
        IpAddr::V4(v4) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    };
    if network != ip {
        return Err(format!(
            "{a:?} has host bits set (did you mean {network}/{len}?)"
        ));
    }
    Ok(format!("{ip}/{len}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_cidrs_normalise_as_ufw_stores_them() {
        assert_eq!(normalise("any").unwrap(), "any");
        assert_eq!(normalise("10.0.0.5/32").unwrap(), "10.0.0.5");
        assert_eq!(normalise("10.244.0.0/16").unwrap(), "10.244.0.0/16");
        assert_eq!(normalise("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert!(normalise("10.0.0.7/24").unwrap_err().contains("host bits"));
        assert!(normalise("10.0.0.0/33").is_err());
        assert!(normalise("example.com").is_err());
    }
}
