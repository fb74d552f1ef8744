//! The outbound address policy for endpoints an administrator types in — a CIPP base URL, a
//! Vault address: they must reach public addresses only, unless private endpoints are
//! explicitly allowed (`ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS`, for the demo, tests and
//! deployments that really run CIPP or Vault on a private network).
//!
//! Why at connect time: a host name checked once when saved can later resolve elsewhere (DNS
//! rebinding). [`PublicOnlyResolver`] is the HTTP client's resolver, so every new connection
//! resolves again and only public addresses are ever dialled; a URL whose host is an IP
//! literal (which the client does not resolve) is checked by [`check_url`] before any
//! request. Refusals name the setting, never what the host would have answered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::Url;

/// Whether `address` is publicly routable: not loopback, private (RFC 1918, unique local),
/// link-local, shared (CGNAT), unspecified, broadcast, multicast, documentation, benchmarking
/// or reserved space; IPv4 addresses embedded in IPv6 (mapped, NAT64, 6to4) are judged as
/// IPv4.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(address: Ipv4Addr) -> bool {
    let [a, b, c, _] = address.octets();
    !(a == 0                                    // "this network"
        || a == 10                              // private
        || a == 127                             // loopback
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254)               // link-local (cloud metadata lives here)
        || (a == 172 && (16..32).contains(&b))  // private
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)       // documentation
        || (a == 192 && b == 88 && c == 99)     // 6to4 relay anycast
        || (a == 192 && b == 168)               // private
        || (a == 198 && (18..20).contains(&b))  // benchmarking
        || (a == 198 && b == 51 && c == 100)    // documentation
        || (a == 203 && b == 0 && c == 113)     // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(address: Ipv6Addr) -> bool {
    if let Some(v4) = address.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = address.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded_v4(segments[6], segments[7]));
    }
    // 6to4 (2002::/16) carries one in bits 16..48.
    if segments[0] == 0x2002 {
        return is_public_v4(embedded_v4(segments[1], segments[2]));
    }
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || segments[..6] == [0, 0, 0, 0, 0, 0]        // IPv4-compatible (deprecated)
        || (segments[0] & 0xfe00) == 0xfc00           // unique local
        || (segments[0] & 0xffc0) == 0xfe80           // link-local
        || (segments[0] & 0xffc0) == 0xfec0           // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[..4] == [0x100, 0, 0, 0]) // discard-only
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Why an endpoint was refused. Its text names the setting that allows it, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is not a public address (loopback, private, link-local or reserved); set ENTRA_SYNC_ALLOW_PRIVATE_ENDPOINTS=true to allow private endpoints")]
pub struct PrivateEndpoint {
    pub host: String,
}

/// Refuses a URL whose host is a non-public IP literal (names are checked when resolved).
pub fn check_url(url: &Url) -> Result<(), PrivateEndpoint> {
    let refused = match url.host() {
        Some(url::Host::Ipv4(v4)) => !is_public_v4(v4),
        Some(url::Host::Ipv6(v6)) => !is_public_v6(v6),
        Some(url::Host::Domain(_)) => false,
        None => true,
    };
    if refused {
        return Err(PrivateEndpoint {
            host: url.host_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(())
}

/// A DNS resolver for reqwest that answers only the public addresses of a name, and fails
/// with [`PrivateEndpoint`] when there are none.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> =
                resolved.filter(|address| is_public(address.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(PrivateEndpoint { host }) as _);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Applies the policy to a client builder: with `allow_private` false, names resolve through
/// [`PublicOnlyResolver`].
pub fn apply(builder: reqwest::ClientBuilder, allow_private: bool) -> reqwest::ClientBuilder {
    if allow_private {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnlyResolver))
    }
}

/// Whether a transport error is this policy's refusal (somewhere in its source chain).
pub fn refused(error: &(dyn std::error::Error + 'static)) -> Option<PrivateEndpoint> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(refusal) = error.downcast_ref::<PrivateEndpoint>() {
            return Some(refusal.clone());
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.10",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
            "2001:db8::1",
            "ff02::1",
        ] {
            let ip: IpAddr = address.parse().expect(address);
            assert!(!is_public(ip), "{address} should not be public");
        }
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "20.190.128.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            let ip: IpAddr = address.parse().expect(address);
            assert!(is_public(ip), "{address} should be public");
        }
    }

    #[test]
    fn ip_literal_urls_are_checked_names_are_left_to_the_resolver() {
        for url in [
            "http://127.0.0.1:8080/",
            "https://[::1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.5/api",
        ] {
            assert!(check_url(&Url::parse(url).expect(url)).is_err(), "{url}");
        }
        for url in ["https://cipp.example.com/", "https://8.8.8.8/"] {
            assert!(check_url(&Url::parse(url).expect(url)).is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_only_to_loopback() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let error = match PublicOnlyResolver.resolve(name).await {
            Ok(addresses) => panic!("resolved {:?}", addresses.collect::<Vec<_>>()),
            Err(error) => error,
        };
        assert_eq!(
            refused(error.as_ref()),
            Some(PrivateEndpoint {
                host: "localhost".to_owned()
            })
        );
    }

    #[tokio::test]
    async fn a_client_under_the_policy_never_connects_to_a_loopback_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let client = apply(reqwest::Client::builder(), false)
            .build()
            .expect("client");
        let error = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect_err("refused");
        assert!(refused(&error).is_some(), "{error:?}");
        // Nobody knocked.
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "the client connected anyway");
        // With private endpoints allowed, the same request reaches the server.
        let allowed = apply(reqwest::Client::builder(), true)
            .build()
            .expect("client");
        let request = tokio::spawn(async move {
            allowed
                .get(format!("http://localhost:{port}/"))
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await
        });
        let accepted =
            tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept()).await;
        assert!(accepted.is_ok(), "the allowed client did not connect");
        request.abort();
    }
}
