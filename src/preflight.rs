//! Preflight: what `nginx -t` does not catch. `nginx -t` never binds its `listen` addresses, so
//! a port held by another program passes the test and the reload then fails after nginx's
//! bind retries; this module finds such listens before the reload.
//!
//! A listen is in conflict when a listening socket of a process other than this nginx (its
//! master and workers) overlaps it: the same address, or a wildcard on the same port
//! (`0.0.0.0:80` and `127.0.0.1:80` clash either way). IPv6 follows `ipv6only`: nginx binds
//! `listen [::]:80;` with `IPV6_V6ONLY` (its default `ipv6only=on`), which leaves every IPv4
//! address of the port to others; `ipv6only=off` takes them too. Whether another program's
//! `[::]:80` takes IPv4 (`/proc/net/tcp6` does not say) is found the way the kernel decides
//! it: a trial `bind` of the IPv4 address, without `listen`, closed at once.
//!
//! nginx can be in its own way too, where `nginx -t` (which ignores "address in use") cannot
//! see it. A reload opens the candidate's sockets while the running nginx's stay open, reusing
//! only those of exactly the same address: a wildcard (`listen 8181;`) added on a port where
//! the running nginx holds a specific address (`127.77.11.1:8181`) fails to bind, and only a
//! restart can switch a port from specific addresses to a wildcard (the reverse is fine: nginx
//! serves a specific address of a port from the wildcard socket it holds). And `http {}` and
//! `stream {}` never share a socket: the same address (or a wildcard of its port) in both fails
//! to bind on every reload or start.
//!
//! Each `listen` line is reported once, naming the first socket in its way.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::Serialize;

use crate::conf::targets::Context;
use crate::conf::{Listen, ListenAddr, Server};
use crate::probe::netstat::{self, Listeners, Owner};

/// A `listen` whose address another program holds, or nginx itself keeps from binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenConflict {
    /// The listen as written in the config: `127.0.0.1:8080`, `unix:/run/app.sock`.
    pub listen: ListenAddr,
    /// The address the holder listens on (may be a wildcard covering the listen); for nginx
    /// in its own way, the running nginx's socket or the `http {}` listen in the way.
    pub held: String,
    pub file: PathBuf,
    pub line: u32,
    /// The processes holding it; empty when they cannot be seen (not running as root).
    pub holders: Vec<Owner>,
    /// Set when nginx itself is in the way: the other listen, with its place, and what nginx
    /// does with the two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nginx: Option<String>,
}

impl ListenConflict {
    /// "nginx cannot listen on 127.0.0.1:8080 (conf.d/app.conf:3): nc (pid 99) listens on
    /// 0.0.0.0:8080".
    pub fn message(&self) -> String {
        if let Some(why) = &self.nginx {
            return format!(
                "nginx cannot listen on {} ({}:{}): {why}",
                self.listen,
                self.file.display(),
                self.line
            );
        }
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

/// Whether `path` is a socket file nothing listens on: a connect to it is refused (a crashed
/// app's, an nginx killed with SIGKILL). `nginx -t`, which runs meanwhile, binds the file for
/// a moment and removes it: one made in the last seconds is its, not a stale one.
fn stale_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let old = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(5))
    };
    let socket =
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket() && old(&m));
    socket
        && matches!(
            std::os::unix::net::UnixStream::connect(path),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
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
    for listen in servers.iter().flat_map(|s| &s.listens) {
        let mut push = |held: String, holders: &[Owner], nginx: Option<String>| {
            let c = ListenConflict {
                listen: listen.addr.clone(),
                held,
                file: listen.file.to_path_buf(),
                line: listen.line,
                holders: holders.to_vec(),
                nginx,
            };
            let same_line =
                |o: &ListenConflict| o.listen == c.listen && o.file == c.file && o.line == c.line;
            if !out.iter().any(same_line) {
                out.push(c);
            }
        };
        match &listen.addr {
            ListenAddr::Unix(path) => {
                let mut held = false;
                for l in listeners.unix.iter().filter(|l| &l.path == path) {
                    held = true;
                    if foreign(&l.holders) {
                        push(format!("unix:{}", l.path.display()), &l.holders, None);
                    }
                }
                if !held && stale_socket(path) {
                    let why = format!(
                        "the socket file {} is left by a process that is gone (nothing \
                         listens on it), and nginx does not remove it before it binds: the \
                         reload would fail with \"Address already in use\"; remove it (rm {})",
                        path.display(),
                        path.display()
                    );
                    push(format!("unix:{}", path.display()), &[], Some(why));
                }
            }
            addr => {
                for sa in socket_addrs(addr) {
                    let want = Want {
                        addr: sa,
                        v6only: listen.ipv6only,
                    };
                    // A `listen ... udp` binds a datagram socket: only those are in its way.
                    let (table, kind, suffix) = match listen.udp {
                        true => (&listeners.udp, socket2::Type::DGRAM, " (udp)"),
                        false => (&listeners.tcp, socket2::Type::STREAM, ""),
                    };
                    let taken = |a: SocketAddr| ipv4_taken(a, kind);
                    for l in table.iter().filter(|l| overlaps_with(l.addr, want, taken)) {
                        if foreign(&l.holders) {
                            push(format!("{}{suffix}", l.addr), &l.holders, None);
                        }
                    }
                }
            }
        }
    }
    for c in nginx_in_its_own_way(servers, own_pids, listeners) {
        let same_line = |o: &ListenConflict| o.file == c.file && o.line == c.line;
        if !out.iter().any(same_line) {
            out.push(c);
        }
    }
    out
}

/// The listens nginx itself keeps from binding (see the module header): a wildcard added on a
/// port where the running nginx (`own_pids`) holds a specific address, and a `stream {}` listen
/// that overlaps one of `http {}`.
fn nginx_in_its_own_way(
    servers: &[Server],
    own_pids: &[i32],
    listeners: &Listeners,
) -> Vec<ListenConflict> {
    let tcp = |ctx: Option<Context>| {
        servers
            .iter()
            .filter(move |s| ctx.is_none_or(|c| s.context == c))
            .flat_map(|s| &s.listens)
            .filter(|l| !l.udp)
            .filter_map(|l| match l.addr {
                ListenAddr::Tcp(sa) => Some((l, sa)),
                _ => None,
            })
    };
    let place = |l: &Listen| format!("{}:{}", l.file.display(), l.line);
    let conflict = |l: &Listen, held: String, holders: Vec<Owner>, why: String| ListenConflict {
        listen: l.addr.clone(),
        held,
        file: l.file.to_path_buf(),
        line: l.line,
        holders,
        nginx: Some(why),
    };
    // `the running nginx, nginx (pid N),`: the master holding a socket, for a message.
    let running_holder = |held: &netstat::TcpListen| {
        netstat::main_holder(&held.holders).map_or_else(
            || "the running nginx".to_string(),
            |o| format!("the running nginx, {o},"),
        )
    };
    let mut out = Vec::new();
    let running: Vec<_> = (listeners.tcp.iter())
        .filter(|l| l.holders.iter().any(|h| own_pids.contains(&h.pid)))
        .collect();
    for (listen, sa) in tcp(None).filter(|(_, sa)| sa.ip().is_unspecified()) {
        if running.iter().any(|r| r.addr == sa) {
            continue;
        }
        let want = Want {
            addr: sa,
            v6only: listen.ipv6only,
        };
        let Some(held) = (running.iter())
            .find(|r| !r.addr.ip().is_unspecified() && overlaps_with(r.addr, want, |_| false))
        else {
            continue;
        };
        let written = tcp(None)
            .find(|(_, a)| *a == held.addr)
            .map_or_else(String::new, |(l, _)| format!(" ({})", place(l)));
        let who = running_holder(held);
        out.push(conflict(
            listen,
            held.addr.to_string(),
            held.holders.clone(),
            format!(
                "{who} holds {}{written}, and a reload keeps it open while it binds the \
                 wildcard {sa}, which then fails with \"Address already in use\" (nginx -t \
                 ignores that error); a restart, not a reload, can switch port {} from specific \
                 addresses to a wildcard",
                held.addr,
                sa.port()
            ),
        ));
    }
    // The other way: a specific address added on a port where the running nginx holds the
    // wildcard and the candidate has no wildcard left to serve it through, so nginx binds
    // the address apart while its own wildcard socket still listens.
    for (listen, sa) in tcp(None).filter(|(_, sa)| !sa.ip().is_unspecified()) {
        if running.iter().any(|r| r.addr == sa) {
            continue;
        }
        let wildcard = |r: &SocketAddr| {
            r.port() == sa.port() && r.ip().is_unspecified() && r.is_ipv4() == sa.is_ipv4()
        };
        let Some(held) = running.iter().find(|r| wildcard(&r.addr)) else {
            continue;
        };
        if tcp(None).any(|(_, a)| wildcard(&a)) {
            continue;
        }
        let who = running_holder(held);
        out.push(conflict(
            listen,
            held.addr.to_string(),
            held.holders.clone(),
            format!(
                "{who} holds the wildcard {}, and a reload keeps it open while it binds {sa}, \
                 which then fails with \"Address already in use\" (nginx -t ignores that \
                 error); a restart, not a reload, can switch port {} from a wildcard to \
                 specific addresses",
                held.addr,
                sa.port()
            ),
        ));
    }
    // Two listens of the candidate that nginx binds apart on one port, where the second bind
    // fails: a dual-stack `[::]:P ipv6only=off` beside an IPv4 listen of P, or a wildcard
    // beside a specific address that binds its own socket (`bind`).
    for ctx in [Context::Http, Context::Stream] {
        for (listen, sa) in tcp(Some(ctx)) {
            let clash = tcp(Some(ctx)).find(|(other, oa)| {
                let (a, b) = (sa.ip(), oa.ip());
                oa.port() == sa.port()
                    && match (a, b) {
                        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.is_unspecified() && !listen.ipv6only,
                        _ if a.is_ipv4() != b.is_ipv4() => false,
                        _ => a.is_unspecified() && !b.is_unspecified() && other.bind,
                    }
            });
            let Some((other, oa)) = clash else { continue };
            let why = match sa.ip() {
                IpAddr::V6(_) if oa.is_ipv4() => format!(
                    "{} with ipv6only=off takes IPv4 port {} too, and {} ({}) is an IPv4 \
                     listen of that port: nginx binds the two apart and the second fails with \
                     \"Address already in use\" on every reload or start (nginx -t ignores that \
                     error); keep one of them",
                    listen.addr,
                    sa.port(),
                    other.addr,
                    place(other)
                ),
                _ => format!(
                    "{} ({}) binds a socket of its own (bind), so nginx binds the wildcard {} \
                     apart and that fails with \"Address already in use\" on every reload or \
                     start (nginx -t ignores that error); drop `bind`, or the wildcard",
                    other.addr,
                    place(other),
                    listen.addr
                ),
            };
            out.push(conflict(listen, oa.to_string(), Vec::new(), why));
        }
    }
    for (listen, sa) in tcp(Some(Context::Stream)) {
        let want = Want {
            addr: sa,
            v6only: listen.ipv6only,
        };
        let Some((http, _)) =
            tcp(Some(Context::Http)).find(|(h, a)| overlaps_with(*a, want, |_| !h.ipv6only))
        else {
            continue;
        };
        out.push(conflict(
            listen,
            http.addr.to_string(),
            Vec::new(),
            format!(
                "http listens on {} ({}), and http and stream never share a socket: the second \
                 bind fails with \"Address already in use\" on every reload or start (nginx -t \
                 ignores that error)",
                http.addr,
                place(http)
            ),
        ));
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

/// The address nginx would bind for a `listen`, and whether it sets `IPV6_V6ONLY`.
#[derive(Debug, Clone, Copy)]
struct Want {
    addr: SocketAddr,
    v6only: bool,
}

/// `overlaps`, with the trial bind for "does this IPv6 wildcard of another program take the
/// IPv4 address too?" passed in, so the rule is testable without sockets.
fn overlaps_with(held: SocketAddr, want: Want, ipv4_taken: impl Fn(SocketAddr) -> bool) -> bool {
    if held.port() != want.addr.port() {
        return false;
    }
    let (h, w) = (held.ip(), want.addr.ip());
    if h == w {
        return true;
    }
    match (h, w) {
        (IpAddr::V4(h4), IpAddr::V4(w4)) => h4.is_unspecified() || w4.is_unspecified(),
        (IpAddr::V6(h6), IpAddr::V6(w6)) => h6.is_unspecified() || w6.is_unspecified(),
        // nginx's `[::]` takes the IPv4 port only with `ipv6only=off`.
        (IpAddr::V4(_), IpAddr::V6(w6)) => w6.is_unspecified() && !want.v6only,
        // Another program's `[::]`: dual-stack unless it set IPV6_V6ONLY; ask the kernel.
        (IpAddr::V6(h6), IpAddr::V4(_)) => h6.is_unspecified() && ipv4_taken(want.addr),
    }
}

/// Whether binding the IPv4 address `addr` (a socket of `kind`) fails with "address in use"
/// right now. The socket never listens and is closed at once.
fn ipv4_taken(addr: SocketAddr, kind: socket2::Type) -> bool {
    let Ok(socket) = socket2::Socket::new(socket2::Domain::IPV4, kind, None) else {
        return true;
    };
    matches!(socket.bind(&addr.into()), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
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

    fn want(text: &str, v6only: bool) -> Want {
        Want {
            addr: text.parse().unwrap(),
            v6only,
        }
    }

    fn held(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn wildcards_overlap_both_ways() {
        let both = |h: &str, w: &str| {
            overlaps_with(held(h), want(w, false), |_| true)
                && overlaps_with(held(w), want(h, false), |_| true)
        };
        assert!(both("0.0.0.0:80", "127.0.0.1:80"));
        assert!(both("[::]:80", "[::1]:80"));
        assert!(!overlaps_with(
            held("127.0.0.1:80"),
            want("127.0.0.2:80", false),
            |_| true
        ));
        assert!(!overlaps_with(
            held("0.0.0.0:80"),
            want("0.0.0.0:81", false),
            |_| true
        ));
    }

    #[test]
    fn nginx_ipv6_wildcard_takes_ipv4_only_with_ipv6only_off() {
        for h in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            assert!(
                !overlaps_with(held(h), want("[::]:8080", true), |_| true),
                "{h}"
            );
            assert!(
                overlaps_with(held(h), want("[::]:8080", false), |_| true),
                "{h}"
            );
        }
        assert!(overlaps_with(
            held("[::]:8080"),
            want("[::]:8080", true),
            |_| false
        ));
    }

    #[test]
    fn another_programs_ipv6_wildcard_clashes_when_the_kernel_says_so() {
        let w = want("127.0.0.1:8080", false);
        assert!(overlaps_with(held("[::]:8080"), w, |_| true));
        assert!(!overlaps_with(held("[::]:8080"), w, |_| false));
        assert!(!overlaps_with(held("[::1]:8080"), w, |_| true));
    }
}
