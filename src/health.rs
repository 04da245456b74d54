//! Health verification through nginx, after a proven reload.
//!
//! A reload can be perfect and the site still broken: the backend the new config names answers
//! connects but not requests (502), or is down and failover hides it from clients. So requests
//! go through nginx itself, on a fresh connection each (so new workers answer), over a short
//! window that ends as soon as the evidence is enough; and the error log lines written meanwhile
//! are read, because an upstream error there fails verification even when the client saw 200.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use serde::Serialize;

use crate::conf::{ListenAddr, Server};
use crate::error::{Error, Result};

mod affected;
mod select;
mod tls;

pub use affected::affected;
pub use select::{focused_checks, MAX_CHANGED, MAX_SPREAD};

/// One request to make through nginx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// As shown to the operator.
    pub url: String,
    /// Where to connect (nginx's listen address).
    pub connect: SocketAddr,
    /// The Host header value (also the TLS SNI), without a port.
    pub host: String,
    /// Path and query.
    pub path: String,
    pub tls: bool,
}

/// Parse a `--health` URL. `resolve` entries are curl-style `HOST:PORT:ADDR`: the URL's host
/// stays the Host header and SNI while the connection goes to ADDR.
pub fn parse_url(url: &str, resolve: &[String]) -> Result<Check> {
    let bad = |why: &str| Error::Usage(format!("--health {url}: {why}"));
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(bad("the URL must start with http:// or https://"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(bad("user information in the URL is not supported"));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| bad("no valid host"))?;
    let port = port.unwrap_or(if tls { 443 } else { 80 });
    let path = match tail.split('#').next().unwrap_or("") {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let connect = match resolve_entry(resolve, &host, port)? {
        Some(addr) => addr,
        None => match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    bad(&format!(
                        "cannot resolve {host}; pass --resolve {host}:{port}:ADDR"
                    ))
                })?,
        },
    };
    Ok(Check {
        url: url.to_string(),
        connect,
        host,
        path,
        tls,
    })
}

/// `host[:port]` or `[v6][:port]`; the host without brackets.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (authority, None),
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

fn resolve_entry(resolve: &[String], host: &str, port: u16) -> Result<Option<SocketAddr>> {
    for entry in resolve {
        let mut parts = entry.splitn(3, ':');
        let (Some(h), Some(p), Some(a)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::Usage(format!(
                "--resolve {entry}: expected HOST:PORT:ADDR"
            )));
        };
        let ip: IpAddr = a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| Error::Usage(format!("--resolve {entry}: {a} is not an IP address")))?;
        if h.eq_ignore_ascii_case(host) && p.parse() == Ok(port) {
            return Ok(Some(SocketAddr::new(ip, port)));
        }
    }
    Ok(None)
}

/// Requests derived from the configuration: each proxied prefix location of each http server
/// whose listen this machine can reach, with the server's first literal name as Host.
pub fn derive_checks<'a>(servers: impl IntoIterator<Item = &'a Server>) -> Vec<Check> {
    candidates(servers).iter().map(Candidate::check).collect()
}

/// A derived check before any of its strings is built: everything that tells two apart,
/// borrowed from the servers. 10,000 servers make 20,000 of these, and a reload keeps only a
/// few, so only those become `Check`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Candidate<'a> {
    connect: SocketAddr,
    host: Host<'a>,
    path: &'a str,
    tls: bool,
}

/// The Host header: the server's name, or the listen's IP when it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Host<'a> {
    Name(&'a str),
    Ip(IpAddr),
}

impl Candidate<'_> {
    pub(crate) fn check(&self) -> Check {
        let host = match self.host {
            Host::Name(name) => name.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
        };
        let scheme = if self.tls { "https" } else { "http" };
        Check {
            url: format!("{scheme}://{host}{} (via {})", self.path, self.connect),
            connect: self.connect,
            host,
            path: self.path.to_string(),
            tls: self.tls,
        }
    }
}

/// The distinct candidates of these servers, in the order they are first met.
pub(crate) fn candidates<'a>(servers: impl IntoIterator<Item = &'a Server>) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for server in servers
        .into_iter()
        .filter(|s| s.context == crate::conf::targets::Context::Http)
    {
        let name = server
            .server_names
            .iter()
            .find(|n| !n.is_empty() && !n.contains('*') && !n.starts_with('~'));
        for listen in server.listens.iter().filter(|l| !l.udp) {
            let Some(connect) = reachable(&listen.addr) else {
                continue;
            };
            let host = name.map_or(Host::Ip(connect.ip()), |n| Host::Name(n));
            for loc in &server.locations {
                let regex = matches!(loc.modifier.as_deref(), Some("~") | Some("~*"));
                if regex || loc.path.starts_with('@') {
                    continue;
                }
                out.push(Candidate {
                    connect,
                    host,
                    path: &loc.path,
                    tls: listen.ssl,
                });
            }
        }
    }
    keep_first_of_each(&mut out);
    out
}

/// Drop repeats, keeping each candidate's first place: sort positions by value, mark every
/// repeat, keep the unmarked. No set of keys, so nothing per candidate beyond a position.
fn keep_first_of_each(list: &mut Vec<Candidate<'_>>) {
    let mut order: Vec<u32> = (0..list.len() as u32).collect();
    order.sort_unstable_by_key(|&i| (list[i as usize], i));
    let mut repeat = vec![false; list.len()];
    for pair in order.windows(2) {
        if list[pair[0] as usize] == list[pair[1] as usize] {
            repeat[pair[1] as usize] = true;
        }
    }
    let mut i = 0;
    list.retain(|_| {
        i += 1;
        !repeat[i - 1]
    });
}

/// Where to connect for a listen, if this machine can: wildcards through loopback, loopback
/// and local addresses as they are; names other than `localhost` and unix sockets are skipped.
fn reachable(addr: &ListenAddr) -> Option<SocketAddr> {
    match addr {
        ListenAddr::Tcp(sa) if sa.ip().is_unspecified() => {
            let ip = match sa.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            Some(SocketAddr::new(ip, sa.port()))
        }
        ListenAddr::Tcp(sa) if sa.ip().is_loopback() || is_local(sa.ip()) => Some(*sa),
        ListenAddr::Host { name, port } if name == "localhost" => {
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port))
        }
        _ => None,
    }
}

/// An address of this machine: binding to it succeeds only here (and sends nothing).
fn is_local(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

mod verify;
pub use verify::{
    baseline, is_failure, verify, verify_against, CheckResult, HealthOptions, HealthReport, Known,
    NothingKnown,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::targets::Context;
    use crate::conf::{Listen, Location};
    use std::path::PathBuf;

    #[test]
    fn urls_with_resolve_entries_ports_and_ipv6() {
        let c = parse_url(
            "https://App.Test:8443/a?b",
            &["app.test:8443:127.0.0.9".into()],
        )
        .unwrap();
        assert_eq!(c.connect, "127.0.0.9:8443".parse().unwrap());
        assert_eq!(
            (c.host.as_str(), c.path.as_str(), c.tls),
            ("app.test", "/a?b", true)
        );
        let c = parse_url("http://[::1]:81", &[]).unwrap();
        assert_eq!(
            (c.connect, c.path.as_str()),
            ("[::1]:81".parse().unwrap(), "/")
        );
        let c = parse_url("http://127.0.0.2?q", &[]).unwrap();
        assert_eq!((c.connect.port(), c.path.as_str()), (80, "/?q"));
        assert!(parse_url("ftp://x/", &[]).is_err());
        assert!(parse_url("http://a:b@x/", &[]).is_err());
        assert!(parse_url("http://x:99999/", &[]).is_err());
        assert!(parse_url("http://x/", &["bad".into()]).is_err());
    }

    fn listen(addr: ListenAddr, ssl: bool) -> Listen {
        Listen {
            addr,
            ssl,
            udp: false,
            ipv6only: false,
            default_server: false,
            file: PathBuf::from("/c").into(),
            line: 1,
        }
    }

    fn location(modifier: Option<&str>, path: &str) -> Location {
        Location {
            modifier: modifier.map(String::from),
            path: path.into(),
            pass: "proxy_pass",
            file: PathBuf::from("/c").into(),
            line: 2,
        }
    }

    #[test]
    fn checks_derive_from_reachable_listens_and_prefix_locations() {
        let server = Server {
            context: Context::Http,
            file: PathBuf::from("/c").into(),
            line: 1,
            listens: vec![
                listen(ListenAddr::Tcp("0.0.0.0:80".parse().unwrap()), false),
                listen(ListenAddr::Tcp("[::]:443".parse().unwrap()), true),
                listen(ListenAddr::Unix("/run/n.sock".into()), false),
            ],
            server_names: vec!["*.example".into(), "~^re".into(), "app.test".into()],
            locations: vec![
                location(None, "/api/"),
                location(Some("~"), "\\.php$"),
                location(None, "@fallback"),
                location(Some("="), "/exact"),
            ],
        };
        let checks = derive_checks(&[server]);
        let got: Vec<_> = checks
            .iter()
            .map(|c| {
                (
                    c.connect.to_string(),
                    c.host.as_str(),
                    c.path.as_str(),
                    c.tls,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("127.0.0.1:80".to_string(), "app.test", "/api/", false),
                ("127.0.0.1:80".to_string(), "app.test", "/exact", false),
                ("[::1]:443".to_string(), "app.test", "/api/", true),
                ("[::1]:443".to_string(), "app.test", "/exact", true),
            ]
        );
    }
}
