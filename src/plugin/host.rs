//! Outbound host names as a plugin manifest declares them (`network.outbound_hosts`): an
//! RFC 1123 host name with an optional `:port` (1-65535). The egress proxy matches hosts
//! exactly, so wildcards are refused, and IP literals are refused because an address says
//! nothing a reviewer can check and bypasses DNS-based policy.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest host name (RFC 1035 §2.3.4, without the trailing dot).
const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Checks one `outbound_hosts` entry; the error is a sentence about what is wrong.
pub fn check_outbound_host(entry: &str) -> Result<(), String> {
    if entry.contains('*') {
        return Err(format!("{entry:?}: wildcards are not allowed; list every host the plugin calls"));
    }
    if entry.contains("://") || entry.contains('/') {
        return Err(format!("{entry:?}: write a host name (optionally host:port), not a URL or path"));
    }
    if entry.starts_with('[') || entry.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("{entry:?}: IP address literals are not allowed; use a host name"));
    }
    let (host, port) = match entry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (entry, None),
    };
    if let Some(port) = port {
        match port.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) && !port.starts_with('+') => {}
            _ => return Err(format!("{entry:?}: port must be a number from 1 to 65535, found {port:?}")),
        }
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Err(format!("{entry:?}: IP address literals are not allowed; use a host name"));
    }
    check_host_name(host).map_err(|why| format!("{entry:?}: {why}"))
}

fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host name is empty".to_string());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!("host name is {} characters long; at most {MAX_HOST_LEN} are allowed", host.len()));
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("host name has an empty label (leading, trailing or doubled '.')".to_string());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("label {label:?} is longer than {MAX_LABEL_LEN} characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("label {label:?} may hold only letters, digits and '-' (RFC 1123)"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} must not start or end with '-'"));
        }
    }
    // A numeric top-level label never names a real domain; forms such as 10.1 or 1.2.3 are
    // addresses in disguise (inet_aton accepts them), so treat them as literals.
    if host.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err("looks like an IP address literal; use a host name".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_outbound_host;

    #[test]
    fn accepts_host_names_and_ports() {
        for ok in ["api.example.com", "localhost", "a-b.example.co.uk:8443", "x1.io:1", "svc:65535", "API.Example.COM"]
        {
            assert_eq!(check_outbound_host(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_wildcards_ips_bad_ports_and_bad_labels() {
        let cases = [
            ("*.example.com", "wildcard"),
            ("10.0.0.1", "IP address"),
            ("10.0.0.1:443", "IP address"),
            ("[::1]:443", "IP address"),
            ("::1", "IP address"),
            ("10.1", "IP address"),
            ("example.com:0", "port"),
            ("example.com:65536", "port"),
            ("example.com:", "port"),
            ("example.com:https", "port"),
            ("https://example.com", "not a URL"),
            ("example.com/path", "not a URL"),
            ("-bad.example.com", "must not start"),
            ("bad_.example.com", "only letters"),
            ("example..com", "empty label"),
            ("example.com.", "empty label"),
            ("", "empty"),
        ];
        for (entry, why) in cases {
            let err = check_outbound_host(entry).expect_err(entry);
            assert!(err.contains(why), "{entry}: {err}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(check_outbound_host(&long_label).is_err());
    }
}
