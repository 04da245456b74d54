//! Preflight: what `nginx -t` does not catch. `nginx -t` never binds its `listen` addresses, so
//! a port held by another program passes the test and the reload then fails after nginx's
//! bind retries; this module finds such listens before the reload.
//!
//! A listen is in conflict when a listening socket of a process other than this nginx (its
//! master and workers) overlaps it: the same address, or a wildcard on the same port
//! (`0.0.0.0:80` and `127.0.0.1:80` clash either way; `[::]:80` is treated as clashing with
//! every IPv4 address of that port, as it does unless `ipv6only` is set).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::Serialize;

use crate::conf::{ListenAddr, Server};
use crate::probe::netstat::{self, Listeners, Owner};

/// A `listen` whose address another program holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenConflict {
    /// The listen as written in the config: `127.0.0.1:8080`, `unix:/run/app.sock`.
    pub listen: ListenAddr,
    /// The address the holder listens on (may be a wildcard covering the listen).
    pub held: String,
    pub file: PathBuf,
    pub line: u32,
    /// The processes holding it; empty when they cannot be seen (not running as root).
    pub holders: Vec<Owner>,
}

impl ListenConflict {
    /// "nginx cannot listen on 127.0.0.1:8080 (conf.d/app.conf:3): nc (pid 99) listens on
    /// 0.0.0.0:8080".
    pub fn message(&self) -> String {
        let who = netstat::main_holder(&self.holders)
            .map_or_else(|| "another process".to_string(), |o| o.to_string());
        format!(
            "nginx cannot listen on {} ({}:{}): {who} listens on {}",
            self.listen,
            self.file.display(),
            self.line,
            self.held
        )
    }
}

/// Every listen of `servers` held by a process not in `own_pids` (this nginx's master and
/// workers, see `nginx_pids`). A holder we cannot see is reported only when nginx is not
/// running (`own_pids` empty), since it could otherwise be nginx itself.
pub fn listen_conflicts(servers: &[Server], own_pids: &[i32]) -> Vec<ListenConflict> {
    listen_conflicts_in(servers, own_pids, &Listeners::snapshot())
}

/// `listen_conflicts` against a given picture of the listeners.
pub fn listen_conflicts_in(
    servers: &[Server],
    own_pids: &[i32],
    listeners: &Listeners,
) -> Vec<ListenConflict> {
    let own: HashSet<i32> = own_pids.iter().copied().collect();
    let foreign = |holders: &[Owner]| {
        if holders.is_empty() {
            own.is_empty()
        } else {
            !holders.iter().any(|h| own.contains(&h.pid))
        }
    };
    let mut out: Vec<ListenConflict> = Vec::new();
    for listen in servers.iter().flat_map(|s| &s.listens).filter(|l| !l.udp) {
        let mut push = |held: String, holders: &[Owner]| {
            let c = ListenConflict {
                listen: listen.addr.clone(),
                held,
                file: listen.file.to_path_buf(),
                line: listen.line,
                holders: holders.to_vec(),
            };
            if !out.contains(&c) {
                out.push(c);
            }
        };
        match &listen.addr {
            ListenAddr::Unix(path) => {
                for l in listeners.unix.iter().filter(|l| &l.path == path) {
                    if foreign(&l.holders) {
                        push(format!("unix:{}", l.path.display()), &l.holders);
                    }
                }
            }
            addr => {
                for sa in socket_addrs(addr) {
                    for l in listeners.tcp.iter().filter(|l| overlaps(l.addr, sa)) {
                        if foreign(&l.holders) {
                            push(l.addr.to_string(), &l.holders);
                        }
                    }
                }
            }
        }
    }
    out
}

fn socket_addrs(addr: &ListenAddr) -> Vec<SocketAddr> {
    match addr {
        ListenAddr::Tcp(sa) => vec![*sa],
        ListenAddr::Host { name, port } => (name.as_str(), *port)
            .to_socket_addrs()
            .map(|it| it.collect())
            .unwrap_or_default(),
        ListenAddr::Unix(_) => Vec::new(),
    }
}

/// Would binding `want` fail because `held` is listening?
fn overlaps(held: SocketAddr, want: SocketAddr) -> bool {
    if held.port() != want.port() {
        return false;
    }
    let (h, w) = (held.ip(), want.ip());
    h == w || wildcard_covers(h, w) || wildcard_covers(w, h)
}

fn wildcard_covers(wild: IpAddr, other: IpAddr) -> bool {
    match wild {
        IpAddr::V4(v4) => v4.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// The pids of an nginx master and its direct children (the workers, cache manager and
/// loader): the processes whose listening sockets are this nginx's own.
pub fn nginx_pids(master: i32) -> Vec<i32> {
    let mut pids = vec![master];
    pids.extend(
        netstat::all_pids()
            .into_iter()
            .filter(|&p| p != master && netstat::parent_pid(p) == Some(master)),
    );
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_overlap_both_ways() {
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6any: SocketAddr = "[::]:80".parse().unwrap();
        assert!(overlaps(any, lo));
        assert!(overlaps(lo, any));
        assert!(overlaps(v6any, lo));
        assert!(overlaps(lo, v6any));
        assert!(!overlaps(lo, "127.0.0.2:80".parse().unwrap()));
        assert!(!overlaps(any, "0.0.0.0:81".parse().unwrap()));
    }
}
