//! `<dnsmasq:options>`: libvirt passes each `<dnsmasq:option value>` to the
//! network's dnsmasq as a configuration line. slipway runs no dnsmasq; its
//! own DHCP/DNS service honours the options that map onto what it already
//! does, and the manager warns about every other one at define time (the
//! option stays in the definition, so the XML round-trips).
//!
//! Honoured: `server=ADDRESS` (an upstream DNS server, as a
//! `<dns><forwarder addr>`) and `host-record=NAME[,NAME…],ADDRESS[,ADDRESS]`
//! (names answered with those addresses, as a `<dns><host>`). Everything
//! else (domain-specific `server=/d/…`, ports, `cname=`, `dhcp-option=`, …)
//! is reported as ignored.

use std::net::IpAddr;

/// What slipway makes of one dnsmasq option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsmasqOption {
    /// `server=ADDRESS`: one more upstream DNS server.
    Server(IpAddr),
    /// `host-record=…`: names answered with these addresses.
    HostRecord {
        /// The names (each a DNS name).
        names: Vec<String>,
        /// One IPv4 and/or one IPv6 address.
        addrs: Vec<IpAddr>,
    },
    /// Anything else: kept in the definition, not acted on.
    Ignored,
}

/// True for a name slipway's DNS can serve (letters, digits, `-`, `_`, `.`).
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Interprets one option value (`key=value`, as in dnsmasq.conf).
pub fn interpret(option: &str) -> DnsmasqOption {
    let Some((key, value)) = option.split_once('=') else {
        return DnsmasqOption::Ignored;
    };
    match key.trim() {
        "server" => value
            .trim()
            .parse::<IpAddr>()
            .map_or(DnsmasqOption::Ignored, DnsmasqOption::Server),
        "host-record" => {
            let mut names = Vec::new();
            let mut addrs: Vec<IpAddr> = Vec::new();
            for (i, field) in value.split(',').map(str::trim).enumerate() {
                match field.parse::<IpAddr>() {
                    Ok(a) if !addrs.iter().any(|b| b.is_ipv4() == a.is_ipv4()) => addrs.push(a),
                    Ok(_) => return DnsmasqOption::Ignored,
                    // A TTL may follow the addresses.
                    Err(_) if !addrs.is_empty() && i > 0 && field.parse::<u32>().is_ok() => {}
                    Err(_) if addrs.is_empty() && is_dns_name(field) => {
                        names.push(field.to_string())
                    }
                    Err(_) => return DnsmasqOption::Ignored,
                }
            }
            if names.is_empty() || addrs.is_empty() {
                DnsmasqOption::Ignored
            } else {
                DnsmasqOption::HostRecord { names, addrs }
            }
        }
        _ => DnsmasqOption::Ignored,
    }
}

/// The define-time warnings: one per option slipway does not act on.
pub fn warnings(options: &[String]) -> Vec<String> {
    options
        .iter()
        .filter(|o| interpret(o) == DnsmasqOption::Ignored)
        .map(|o| {
            format!(
                "<dnsmasq:option value='{o}'> ignored: slipway runs no dnsmasq; \
                 of the dnsmasq options it honours only server=ADDRESS and host-record="
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honoured_and_ignored_options() {
        assert_eq!(
            interpret("server=192.0.2.53"),
            DnsmasqOption::Server("192.0.2.53".parse().unwrap())
        );
        assert_eq!(
            interpret("host-record=nas,nas.lan,10.0.0.9,fd00::9,300"),
            DnsmasqOption::HostRecord {
                names: vec!["nas".into(), "nas.lan".into()],
                addrs: vec!["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
            }
        );
        for ignored in [
            "foo=bar",
            "cname=*.cloudapps.example.com,master.example.com",
            "server=/example.com/192.0.2.1",
            "server=192.0.2.1#5353",
            "host-record=10.0.0.1",
            "host-record=a b,10.0.0.1",
            "host-record=n,10.0.0.1,10.0.0.2",
            "no-resolv",
        ] {
            assert_eq!(interpret(ignored), DnsmasqOption::Ignored, "{ignored}");
        }
        let w = warnings(&["server=192.0.2.53".into(), "foo=bar".into()]);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("<dnsmasq:option value='foo=bar'> ignored"),
            "{w:?}"
        );
    }
}
