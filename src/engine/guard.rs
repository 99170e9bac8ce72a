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
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
}

fn blocked_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7 (includes fd00:ec2::254)
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
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
                   "100.64.0.1", "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1"] {
            assert!(!g.permits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(g.permits(ip.parse().unwrap()), "{ip}");
        }
        let g = NetworkGuard { allowed: vec!["10.0.0.0/8".parse().unwrap()] };
        assert!(g.permits("10.9.9.9".parse().unwrap()));
        assert!(!g.permits("192.168.0.1".parse().unwrap()));
    }
}
