//! Who a request comes from: the peer's address, or, when the peer is a
//! trusted reverse proxy, the client it names in `Forwarded` or
//! `X-Forwarded-For`.
//!
//! Those headers are written by whoever sends the request, so they are read
//! only when the connection comes from an address in `trusted_proxies`, and
//! then from the right: each trusted proxy appends the address it got the
//! request from, so the first address from the right that is not itself a
//! trusted proxy is the client, and anything left of it may be forged.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use ipnet::IpNet;

use crate::registry::AppState;

/// The address a request came from, when the server was started with
/// connection info (it always is by [`crate::serve`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<Arc<AppState>> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(Self(peer.map(|peer| {
            client_of(peer, &parts.headers, &state.trusted_proxies)
        })))
    }
}

impl ClientAddr {
    /// The client of a request with `headers` that came from `peer`.
    pub(crate) fn of(peer: IpAddr, headers: &HeaderMap, state: &AppState) -> Self {
        Self(Some(client_of(peer, headers, &state.trusted_proxies)))
    }
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy.
pub(crate) fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |addr: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*addr)));
    if !is_trusted(&peer) {
        return peer;
    }
    let chain = forwarded_for(headers);
    // From the right: the nearest address that is not one of our proxies.
    chain
        .iter()
        .rev()
        .find(|addr| !is_trusted(addr))
        .or(chain.first())
        .copied()
        .unwrap_or(peer)
}

/// The addresses a request passed through, oldest first: `Forwarded`'s
/// `for=` parameters when there is a `Forwarded` header, else
/// `X-Forwarded-For`. Entries that are not addresses (`unknown`, obfuscated
/// names) are left out.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<IpAddr> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))
                    .flatten()
            })
        })
        .collect();
    if headers.contains_key("forwarded") {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|node| parse_node(node.trim()))
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(addr) = node.parse::<IpAddr>() {
        return Some(canonical(addr));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    let inner = node.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

/// IPv4 addresses seen through an IPv6 socket (`::ffff:a.b.c.d`) as IPv4,
/// so that one client has one address and IPv4 CIDRs match it.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let forged = headers(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("forwarded", "for=10.9.9.9"),
        ]);
        assert_eq!(client_of(ip("192.0.2.7"), &forged, &[]), ip("192.0.2.7"));
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_of(ip("192.0.2.7"), &forged, &trusted),
            ip("192.0.2.7")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_nearest_to_it() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        // A client may forge the left of the list; the right is the proxies'.
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.1.2.3")]);
        assert_eq!(
            client_of(ip("127.0.0.1"), &xff, &trusted),
            ip("198.51.100.4")
        );
        let two_lines = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.5"),
        ]);
        assert_eq!(
            client_of(ip("127.0.0.1"), &two_lines, &trusted),
            ip("198.51.100.5")
        );
        let forwarded = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.2",
        )]);
        assert_eq!(
            client_of(ip("10.0.0.1"), &forwarded, &trusted),
            ip("2001:db8:cafe::17")
        );
        // Forwarded wins over X-Forwarded-For when both are there.
        let both = headers(&[
            ("forwarded", "for=198.51.100.9"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        assert_eq!(
            client_of(ip("127.0.0.1"), &both, &trusted),
            ip("198.51.100.9")
        );
        // Nothing usable: the proxy itself.
        let junk = headers(&[("x-forwarded-for", "unknown, _hidden")]);
        assert_eq!(client_of(ip("127.0.0.1"), &junk, &trusted), ip("127.0.0.1"));
        // Only proxies: the farthest one.
        let all = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(client_of(ip("127.0.0.1"), &all, &trusted), ip("10.0.0.5"));
    }

    #[test]
    fn ipv4_through_an_ipv6_socket_is_ipv4() {
        let trusted = ["127.0.0.1/32".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "198.51.100.4")]);
        assert_eq!(
            client_of(ip("::ffff:127.0.0.1"), &xff, &trusted),
            ip("198.51.100.4")
        );
    }
}
