//! The optional SSRF guard: refuses webhook deliveries to loopback, private,
//! link-local and cloud-metadata addresses, except networks the operator allows.
//! It checks the addresses actually connected to, at delivery time, because DNS
//! can change after a trigger was saved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Which addresses deliveries may reach.
#[derive(Clone, Debug, Default)]
pub struct NetworkGuard {
    /// Networks allowed even though they are private.
    pub allowed: Vec<IpNet>,
}

/// The error a refused connection carries; the engine fails the event log at once.
#[derive(Debug, thiserror::Error)]
#[error("refused by HERALD_BLOCK_PRIVATE_NETWORKS: {host} resolves only to blocked addresses ({addrs})")]
pub struct Blocked {
    pub host: String,
    pub addrs: String,
}

fn blocked_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || a >= 240 // reserved, 240.0.0.0/4
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18.0.0/15
        || (a == 192 && b == 0 && (c == 0 || c == 2)) // IETF protocol assignments, TEST-NET-1
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
}

/// The IPv4 address an IPv6 address carries and that a gateway or the host's own
/// stack may connect to: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
/// (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] {
        return Some(v4(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    None
}

fn blocked_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return blocked_v4(v4) || ip.is_loopback() || ip.is_unspecified();
    }
    let s = ip.segments();
    let first = s[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7 (includes fd00:ec2::254)
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
        || (s[0] == 0x2001 && s[1] == 0) // Teredo, 2001::/32: hides an IPv4 address
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation, 2001:db8::/32
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only, 100::/64
}

impl NetworkGuard {
    /// True when a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !match ip {
            IpAddr::V4(v4) => blocked_v4(v4),
            IpAddr::V6(v6) => blocked_v6(v6),
        }
    }
}

/// A DNS resolver for reqwest that drops blocked addresses, so the client can
/// only ever connect to permitted ones.
pub(crate) struct GuardedResolver(pub Arc<NetworkGuard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = all.iter().copied().filter(|a| guard.permits(a.ip())).collect();
            if permitted.is_empty() && !all.is_empty() {
                let addrs = all.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ");
                return Err(Box::new(Blocked { host, addrs }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_private_ranges_and_allows_listed_networks() {
        let g = NetworkGuard::default();
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
                   "100.64.0.1", "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1",
                   // Issue 14, item 12: IPv4 hidden in IPv6, and reserved IPv4 ranges.
                   "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a9fe:a9fe::", "::127.0.0.1",
                   "::10.0.0.1", "198.18.0.1", "198.19.255.254", "240.0.0.1", "255.255.255.254",
                   "64:ff9b:1::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "fec0::1"] {
            assert!(!g.permits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "64:ff9b::808:808",
                   "2002:808:808::1", "198.20.0.1"] {
            assert!(g.permits(ip.parse().unwrap()), "{ip}");
        }
        let g = NetworkGuard { allowed: vec!["10.0.0.0/8".parse().unwrap()] };
        assert!(g.permits("10.9.9.9".parse().unwrap()));
        assert!(!g.permits("192.168.0.1".parse().unwrap()));
    }
}
