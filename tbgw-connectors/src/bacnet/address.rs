//! Device addresses as upstream's config writes them, and matching I-Am sources against
//! them. Forms: `ip`, `ip:port`, `ip/mask:port` (or `host` + `port` + `mask`), patterns
//! (`*`, `*:*`, `*:*:*`, `192.168.1.X`, `192.168.1.X:47809`, `10.*:*`), and devices behind
//! routers: `net:mac` (`2:5`, `2:0x0a0b`, `2:192.168.1.5:47808`), optionally
//! `net:mac@router-ip[:port]`.
//!
//! Unlike upstream, the mask never takes part in matching: upstream compares
//! `127.0.0.4/8:PORT` with the reply's `127.0.0.4:PORT` and never finds the device it was
//! given as host + port + mask (as its own sample does).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use fancy_regex::Regex;
use serde_json::Value as Json;

use super::client::Peer;
use super::proto::frame::Remote;

/// The default BACnet/IP port.
pub const DEFAULT_PORT: u16 = 47808;

/// A parsed `address`.
#[derive(Debug, Clone)]
pub enum AddrSpec {
    /// One IP device.
    Ip(SocketAddrV4),
    /// A device behind a router.
    Routed {
        /// Its network.
        net: u16,
        /// Its MAC on that network.
        mac: Vec<u8>,
        /// The router's endpoint, if given.
        router: Option<SocketAddrV4>,
    },
    /// A pattern: which sources match, and where a Who-Is goes.
    Pattern {
        /// Matched against `ip:port` of IP devices.
        local: Option<Regex>,
        /// Devices behind routers match too.
        routed: bool,
        /// The port for a broadcast Who-Is.
        port: u16,
    },
}

/// Upstream's `update_address_in_config_util`: `host` + `/mask` + `:port` when `address`
/// is absent.
pub fn merge(
    address: Option<&str>,
    host: Option<&str>,
    port: Option<&Json>,
    mask: Option<&Json>,
) -> Option<String> {
    if let Some(a) = address.filter(|a| !a.trim().is_empty()) {
        return Some(a.trim().to_string());
    }
    let host = host?.trim().trim_end_matches('/');
    let mut s = host.to_string();
    if let Some(m) = mask.and_then(json_text).filter(|m| !m.is_empty()) {
        s.push('/');
        s.push_str(&m);
    }
    if let Some(p) = port.and_then(json_text).filter(|p| !p.is_empty()) {
        s.push(':');
        s.push_str(&p);
    }
    Some(s)
}

/// A JSON number or string as text.
pub fn json_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.trim().to_string()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn glob(p: &str) -> String {
    let mut out = String::new();
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            'X' => {
                while chars.peek() == Some(&'X') {
                    chars.next();
                }
                out.push_str(r"\d+");
            }
            '*' => out.push_str(r"[^:]*"),
            c => out.push_str(&fancy_regex::escape(&c.to_string())),
        }
    }
    out
}

fn parse_ip_port(s: &str) -> Result<SocketAddrV4, String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port"))?,
        ),
        None => (s, DEFAULT_PORT),
    };
    let host = host.split('/').next().unwrap_or(host);
    let ip: Ipv4Addr = host
        .parse()
        .map_err(|_| format!("{host:?} is not an IPv4 address"))?;
    Ok(SocketAddrV4::new(ip, port))
}

fn parse_mac(s: &str) -> Result<Vec<u8>, String> {
    if let Some(h) = s.strip_prefix("0x") {
        if h.is_empty() || !h.len().is_multiple_of(2) || !h.is_ascii() {
            return Err(format!("{s:?} is not a hex MAC"));
        }
        return (0..h.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| format!("{s:?} is not a hex MAC"))
            })
            .collect();
    }
    if let Ok(b) = s.parse::<u8>() {
        return Ok(vec![b]);
    }
    let a = parse_ip_port(s)?;
    Ok(super::client::ip_mac(a))
}

/// Parses an `address`.
pub fn parse(s: &str) -> Result<AddrSpec, String> {
    let s = s.trim();
    let (s, router) = match s.split_once('@') {
        Some((a, r)) => (a, Some(parse_ip_port(r)?)),
        None => (s, None),
    };
    match s {
        "*" => {
            return Ok(AddrSpec::Pattern {
                local: Some(Regex::new(".*").map_err(|e| e.to_string())?),
                routed: false,
                port: DEFAULT_PORT,
            })
        }
        "*:*" | "*:*:*" => {
            return Ok(AddrSpec::Pattern {
                local: Some(Regex::new(".*").map_err(|e| e.to_string())?),
                routed: true,
                port: DEFAULT_PORT,
            })
        }
        _ => {}
    }
    let parts: Vec<&str> = s.split(':').collect();
    let first_is_net = parts.len() >= 2
        && !parts[0].is_empty()
        && parts[0] != "*"
        && parts[0]
            .chars()
            .all(|c| c.is_ascii_digit() || c == 'X' || c == '*')
        && !parts[0].contains('.');
    if first_is_net {
        let rest = parts[1..].join(":");
        if s.contains('X') || s.contains('*') {
            return Ok(AddrSpec::Pattern {
                local: None,
                routed: true,
                port: DEFAULT_PORT,
            });
        }
        let net = parts[0]
            .parse::<u16>()
            .map_err(|_| format!("{:?} is not a network number", parts[0]))?;
        return Ok(AddrSpec::Routed {
            net,
            mac: parse_mac(&rest)?,
            router,
        });
    }
    if s.contains('X') || s.contains('*') {
        let (ip, port) = match s.rsplit_once(':') {
            Some((ip, p)) => (ip, p),
            None => (s, "47808"),
        };
        let ip = ip.split('/').next().unwrap_or(ip);
        let port_re = if port == "*" {
            r"\d+".to_string()
        } else {
            port.parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port"))?
                .to_string()
        };
        let re = format!("^{}:{}$", glob(ip), port_re);
        return Ok(AddrSpec::Pattern {
            local: Some(Regex::new(&re).map_err(|e| e.to_string())?),
            routed: false,
            port: port.parse().unwrap_or(DEFAULT_PORT),
        });
    }
    Ok(AddrSpec::Ip(parse_ip_port(s)?))
}

impl AddrSpec {
    /// True when a device answering from `peer` is this address.
    pub fn matches(&self, peer: &Peer) -> bool {
        match (self, &peer.remote) {
            (AddrSpec::Ip(a), None) => peer.addr == SocketAddr::V4(*a),
            (AddrSpec::Routed { net, mac, router }, Some(r)) => {
                r.net == *net
                    && &r.addr == mac
                    && router.is_none_or(|ra| SocketAddr::V4(ra) == peer.addr)
            }
            (AddrSpec::Pattern { local, .. }, None) => local
                .as_ref()
                .is_some_and(|re| re.is_match(&peer.addr.to_string()).unwrap_or(false)),
            (AddrSpec::Pattern { routed, .. }, Some(_)) => *routed,
            _ => false,
        }
    }

    /// Where a Who-Is for this address goes: unicast endpoint (None = broadcast), the
    /// broadcast port, and the remote destination.
    pub fn who_is_target(&self) -> (Option<SocketAddrV4>, u16, Option<Remote>) {
        match self {
            AddrSpec::Ip(a) => (Some(*a), a.port(), None),
            AddrSpec::Routed { net, mac, router } => (
                *router,
                router.map(|r| r.port()).unwrap_or(DEFAULT_PORT),
                Some(Remote {
                    net: *net,
                    addr: if router.is_some() {
                        mac.clone()
                    } else {
                        vec![]
                    },
                }),
            ),
            AddrSpec::Pattern { routed, port, .. } => (
                None,
                *port,
                routed.then(|| Remote {
                    net: 0xffff,
                    addr: vec![],
                }),
            ),
        }
    }
}

/// Upstream's `deviceId`: a number, `"a-b"` (inclusive), a list of those, or `"*"`.
pub fn device_id_matches(pattern: &Json, id: u32) -> bool {
    fn range(s: &str) -> Option<(u64, u64)> {
        let s = s.trim();
        match s.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => {
                let v = s.parse().ok()?;
                Some((v, v))
            }
        }
    }
    let id64 = u64::from(id);
    match pattern {
        Json::String(s) if s.trim() == "*" => true,
        Json::String(s) => range(s).is_some_and(|(a, b)| a <= id64 && id64 <= b),
        Json::Number(n) => n.as_u64() == Some(id64),
        Json::Array(items) => items.iter().any(|i| device_id_matches(i, id)),
        _ => false,
    }
}

/// A single instance named by `deviceId`, for a Who-Is with an instance range.
pub fn device_id_range(pattern: &Json) -> Option<(u32, u32)> {
    match pattern {
        Json::Number(n) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(|v| (v, v)),
        Json::String(s) => {
            let (a, b) = s.trim().split_once('-')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn peer(s: &str) -> Peer {
        Peer {
            addr: s.parse().unwrap(),
            remote: None,
        }
    }

    #[test]
    fn host_port_mask_matches_the_reply() {
        let a = merge(
            None,
            Some("127.0.0.4"),
            Some(&json!("47809")),
            Some(&json!("8")),
        )
        .unwrap();
        assert_eq!(a, "127.0.0.4/8:47809");
        let spec = parse(&a).unwrap();
        assert!(spec.matches(&peer("127.0.0.4:47809")));
        assert!(!spec.matches(&peer("127.0.0.4:47808")));
        assert!(parse("192.168.2.110")
            .unwrap()
            .matches(&peer("192.168.2.110:47808")));
    }

    #[test]
    fn patterns() {
        let p = parse("192.168.1.X:47809").unwrap();
        assert!(p.matches(&peer("192.168.1.77:47809")));
        assert!(!p.matches(&peer("192.168.2.77:47809")));
        let p = parse("10.0.0.X").unwrap();
        assert!(p.matches(&peer("10.0.0.5:47808")));
        assert!(!p.matches(&peer("10.0.0.5:47809")));
        let p = parse("*:47809").unwrap();
        assert!(p.matches(&peer("10.1.2.3:47809")));
        assert!(!p.matches(&peer("10.1.2.3:47808")));
        assert!(parse("2:0xé1").is_err());
        let p = parse("*").unwrap();
        assert!(p.matches(&peer("1.2.3.4:5")));
        let routed = Peer {
            addr: "10.0.0.1:47808".parse().unwrap(),
            remote: Some(Remote {
                net: 2,
                addr: vec![5],
            }),
        };
        assert!(!p.matches(&routed));
        assert!(parse("*:*").unwrap().matches(&routed));
        assert!(parse("2:5").unwrap().matches(&routed));
        assert!(!parse("3:5").unwrap().matches(&routed));
        assert!(parse("2:5@10.0.0.1").unwrap().matches(&routed));
        assert!(!parse("2:5@10.0.0.2").unwrap().matches(&routed));
        assert!(parse("2:0x0a0b").is_ok());
        assert!(parse("2:192.168.1.5:47808").is_ok());
        assert!(parse("nonsense:x").is_err());
        assert!(parse("1.2.3.4:99999").is_err());
    }

    #[test]
    fn device_ids() {
        assert!(device_id_matches(&json!(5), 5));
        assert!(!device_id_matches(&json!(5), 6));
        assert!(device_id_matches(&json!("*"), 6));
        assert!(device_id_matches(&json!("1-10"), 10));
        assert!(!device_id_matches(&json!("1-10"), 11));
        assert!(device_id_matches(&json!([1, "5-6"]), 6));
        assert_eq!(device_id_range(&json!(7)), Some((7, 7)));
        assert_eq!(device_id_range(&json!("3-9")), Some((3, 9)));
        assert_eq!(device_id_range(&json!("*")), None);
    }
}
