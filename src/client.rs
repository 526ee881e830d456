//! Where a request comes from: the client's IP address (through trusted proxies only) and
//! user agent.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::{HeaderMap, HeaderValue};

/// Where a request came from, as far as the layer can tell.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client {
    /// The client's address, as recorded in sessions and logs.
    pub(crate) ip: Option<IpAddr>,
    /// The address per-address limits count it under (see [`aggregate`]).
    pub(crate) address: Option<IpAddr>,
    pub(crate) user_agent: Option<HeaderValue>,
}

/// User agents are kept (and logged) cut to this many bytes.
const MAX_USER_AGENT_BYTES: usize = 512;

impl Client {
    pub(crate) fn new(ip: Option<IpAddr>, v6_prefix: u8, user_agent: Option<HeaderValue>) -> Self {
        Self {
            ip,
            address: ip.map(|ip| aggregate(ip, v6_prefix)),
            user_agent,
        }
    }

    /// The user agent as text: lossy UTF-8, cut to a bounded length.
    pub(crate) fn user_agent(&self) -> Option<String> {
        self.user_agent.as_ref().map(|value| {
            let bytes = value.as_bytes();
            let cut = &bytes[..bytes.len().min(MAX_USER_AGENT_BYTES)];
            String::from_utf8_lossy(cut).into_owned()
        })
    }
}

/// The address per-address limits count under: an IPv4 address as it is, an IPv6 address cut to
/// its first `v6_prefix` bits (an attacker who holds one IPv6 address usually holds its whole
/// /64). IPv4-mapped IPv6 addresses count as the IPv4 address.
pub(crate) fn aggregate(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// The client's address: the socket peer, unless the peer is a trusted proxy; then the
/// nearest address in `X-Forwarded-For` (read from the right) that is not a trusted proxy.
/// `X-Forwarded-For` from any other peer is ignored, so a client cannot choose its address.
/// IPv4-mapped IPv6 addresses (an IPv4 peer of a dual-stack listener on `[::]`) are taken as
/// the IPv4 address they carry, so a proxy configured as `10.0.0.1` is recognised there too.
/// `trusted_proxies` is in that form already (`AuthLayerBuilder::trusted_proxies` makes it so).
pub(crate) fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted_proxies: &[IpAddr],
) -> Option<IpAddr> {
    let mut ip = peer?.to_canonical();
    if !trusted_proxies.contains(&ip) {
        return Some(ip);
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','));
    for hop in hops.rev() {
        let parsed = std::str::from_utf8(hop.trim_ascii())
            .ok()
            .and_then(hop_address)
            .map(|hop| hop.to_canonical());
        // An entry that is not an address ends what can be trusted: keep the last proxy.
        let Some(hop) = parsed else { break };
        ip = hop;
        if !trusted_proxies.contains(&hop) {
            break;
        }
    }
    Some(ip)
}

/// A hop as proxies write it: an address, with or without a port (`203.0.113.7:41236`,
/// `[2001:db8::1]:443`, `[2001:db8::1]`); some proxies add the client's port.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in xff {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_count_per_prefix() {
        assert_eq!(aggregate(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(
            aggregate(ip("2001:db8:1:2:aaaa::1"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            aggregate(ip("2001:db8:1:2:aaaa::1"), 64),
            aggregate(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64)
        );
        assert_ne!(
            aggregate(ip("2001:db8:1:3::1"), 64),
            aggregate(ip("2001:db8:1:2::1"), 64)
        );
        assert_eq!(aggregate(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(aggregate(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let peer = Some(ip("203.0.113.9"));
        assert_eq!(client_ip(peer, &headers(&["1.2.3.4"]), &[]), peer);
        assert_eq!(
            client_ip(peer, &headers(&["1.2.3.4"]), &[ip("10.0.0.1")]),
            peer
        );
    }

    #[test]
    fn a_trusted_proxy_passes_on_the_nearest_untrusted_hop() {
        let proxy = ip("10.0.0.1");
        let inner = ip("10.0.0.2");
        let trusted = [proxy, inner];
        let peer = Some(proxy);
        // The client may forge the leftmost entries; the proxies append the real ones.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(client_ip(peer, &h, &trusted), Some(ip("198.51.100.7")));
        assert_eq!(client_ip(peer, &headers(&[]), &trusted), peer);
        assert_eq!(
            client_ip(peer, &headers(&["garbage, 10.0.0.2"]), &trusted),
            Some(inner)
        );
        assert_eq!(client_ip(None, &h, &trusted), None);
    }

    /// Behind a proxy that writes the client's port too, each client is still its own address
    /// (before, such an entry ended the walk, and every client was the proxy).
    #[test]
    fn hops_with_a_port_or_brackets_are_addresses() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let peer = Some(ip("10.0.0.1"));
        for (hop, client) in [
            ("198.51.100.7:41236", "198.51.100.7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("[::ffff:198.51.100.7]:80", "198.51.100.7"),
        ] {
            let h = headers(&[&format!("{hop}, 10.0.0.2:9000")]);
            assert_eq!(client_ip(peer, &h, &trusted), Some(ip(client)), "{hop}");
        }
        for garbage in ["198.51.100.7:", "[2001:db8::7", "host.example:80"] {
            let h = headers(&[&format!("{garbage}, 10.0.0.2")]);
            assert_eq!(
                client_ip(peer, &h, &trusted),
                Some(ip("10.0.0.2")),
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_dual_stack_listener_sees_ipv4_peers_and_hops_as_ipv4() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let mapped_proxy = Some(ip("::ffff:10.0.0.1"));
        let h = headers(&["198.51.100.7, ::ffff:10.0.0.2"]);
        assert_eq!(
            client_ip(mapped_proxy, &h, &trusted),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            client_ip(Some(ip("::ffff:203.0.113.9")), &h, &trusted),
            Some(ip("203.0.113.9"))
        );
    }
}
