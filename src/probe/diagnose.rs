//! Turn a failed probe into the likely fix, from what really listens on this machine: the same
//! port on another address, other ports of the programs listening at that address, a socket of
//! a similar path, a stale socket file.
//!
//! These are the checks an operator does by hand with `ss -ltnp` after a 502 (the article's
//! steps 1 and 4). Every hint names what it saw, so a wrong guess is easy to dismiss.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::handshake::Kind;
use super::netstat::{main_holder, Listeners, Owner, TcpListen};
use super::{Hint, Status};

/// Most listeners named in one hint; the rest would not fit on an operator's screen.
const MAX_NAMED: usize = 4;

/// The TCP listeners by port and by address, so that thousands of failed targets are each
/// diagnosed without a scan of every listener.
pub struct TcpIndex<'a> {
    by_port: HashMap<u16, Vec<&'a TcpListen>>,
    by_ip: HashMap<IpAddr, Vec<&'a TcpListen>>,
}

impl<'a> TcpIndex<'a> {
    pub fn new(listeners: &'a Listeners) -> TcpIndex<'a> {
        let mut by_port: HashMap<u16, Vec<&TcpListen>> = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Vec<&TcpListen>> = HashMap::new();
        for l in &listeners.tcp {
            by_port.entry(l.addr.port()).or_default().push(l);
            by_ip.entry(l.addr.ip()).or_default().push(l);
        }
        TcpIndex { by_port, by_ip }
    }

    fn on_port(&self, port: u16) -> &[&'a TcpListen] {
        self.by_port.get(&port).map_or(&[], Vec::as_slice)
    }

    /// Listeners on `ip` itself, then the wildcard ones that also accept connections to it.
    fn reachable_at(&self, ip: IpAddr) -> Vec<&'a TcpListen> {
        let wildcards = [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ];
        std::iter::once(ip)
            .chain(wildcards.into_iter().filter(|w| *w != ip))
            .flat_map(|a| self.by_ip.get(&a).into_iter().flatten())
            .filter(|l| reachable_at(l.addr.ip(), ip))
            .copied()
            .collect()
    }
}

/// Which listeners a hint may tell the operator to point the config at.
#[derive(Debug, Clone, Copy)]
pub enum Candidates<'a> {
    /// nginx answers 502 for this target: any listener that could be the backend is named.
    Any,
    /// nginx fails over to live members: only these addresses (shown as probe addresses,
    /// `127.0.0.1:8000` or `unix:/run/app.sock`), which the probes found speaking the
    /// directive's protocol and which are not members of the pool already. Pointing the config
    /// at anything else would trade a warning for a refusal.
    Only(&'a HashSet<String>),
}

impl Candidates<'_> {
    fn admits(self, address: &str) -> bool {
        match self {
            Candidates::Any => true,
            Candidates::Only(set) => set.contains(address),
        }
    }
}

/// Hints for a TCP address that refused or timed out: one line for the address, however many
/// kinds of listener it names.
pub fn tcp(addr: SocketAddr, status: Status, index: &TcpIndex, allowed: Candidates) -> Vec<Hint> {
    let same_port = index.on_port(addr.port());
    if let Some(l) = same_port.iter().find(|l| l.addr == addr) {
        if status == Status::Timeout {
            return vec![Hint::new(format!(
                "{} listens on {addr} but did not accept the connection in time: its accept \
                 queue is full (the backend is overloaded or stuck)",
                who(l)
            ))];
        }
        return Vec::new();
    }
    if let Some(w) = same_port.iter().find(|l| covers(l.addr.ip(), addr.ip())) {
        return vec![Hint::new(format!(
            "{} listens on {}, which includes {}: the connection failed for another reason \
             (a firewall rule, or an accept queue that is full)",
            who(w),
            w.addr,
            addr.ip()
        ))];
    }
    let same_port: Vec<&TcpListen> = (same_port.iter().copied())
        .filter(|l| allowed.admits(&l.addr.to_string()))
        .collect();
    let mut others = likely_backends(index, addr);
    others.retain(|l| allowed.admits(&SocketAddr::new(addr.ip(), l.addr.port()).to_string()));
    let mut seen = Vec::new();
    let mut suggestion = None;
    if let Some(first) = same_port.first() {
        seen.push(format!(", but {}", name_listeners(&same_port)));
        suggestion = Some(format!(
            "point the config at {}, or bind the backend to {}",
            first.addr,
            addr.ip()
        ));
    }
    if let Some(first) = others.first() {
        seen.push(format!("; {}", name_listeners(&others)));
        let first = SocketAddr::new(addr.ip(), first.addr.port());
        suggestion.get_or_insert_with(|| {
            format!(
                "if that is the backend, point the config at {first}, or start the backend \
                 on port {}",
                addr.port()
            )
        });
    }
    let hint = match (suggestion, allowed) {
        (Some(s), _) => {
            Hint::new(format!("nothing listens on {addr}{}", seen.concat())).with_suggestion(s)
        }
        (None, Candidates::Only(_)) => Hint::new(format!("nothing listens on {addr}")),
        (None, Candidates::Any) if is_local(addr.ip()) => Hint::new(format!(
            "nothing listens on port {} on any address of this machine",
            addr.port()
        ))
        .with_suggestion("start the backend, or check the port in its configuration"),
        (None, Candidates::Any) => return Vec::new(),
    };
    vec![hint]
}

/// Other listeners a client of `addr`'s address reaches, trimmed to the plausible backends so
/// the hint names the right port and not every daemon on the machine: listeners on the very
/// address written win over wildcard ones, and nginx itself and processes we cannot see are
/// named only when nothing else is left.
fn likely_backends<'a>(index: &TcpIndex<'a>, addr: SocketAddr) -> Vec<&'a TcpListen> {
    let mut others = index.reachable_at(addr.ip());
    others.retain(|l| l.addr.port() != addr.port());
    if others.iter().any(|l| l.addr.ip() == addr.ip()) {
        others.retain(|l| l.addr.ip() == addr.ip());
    }
    // As root every process of this machine is visible: a listener with no owner belongs to
    // another namespace and is not the backend.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        others.retain(|l| main_holder(&l.holders).is_some());
    }
    // nginx is no backend to point a `*_pass` at on another port: its own listens would make
    // a loop, and the throwaway shadow nginx this run started (a child of this process)
    // listens on ports that are gone a moment later.
    others.retain(|l| main_holder(&l.holders).is_none_or(|o| o.program != "nginx"));
    // The likeliest first: the port one typo away (9011 for 9001, 8010 for 8001), then the
    // nearest, not the lowest (another site's backend, or a retired one).
    let port = addr.port();
    others.sort_by_key(|l| {
        let p = l.addr.port();
        (
            strsim::osa_distance(&p.to_string(), &port.to_string()),
            p.abs_diff(port),
            p,
        )
    });
    others
}

/// `0.0.0.0` accepts connections to every IPv4 address; `::` (without `ipv6only`) to every
/// address. Only these wildcard listeners cover an address other than their own.
fn covers(listener: IpAddr, target: IpAddr) -> bool {
    match listener {
        IpAddr::V4(v4) => v4.is_unspecified() && target.is_ipv4(),
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// A listener a client of `target`'s address can reach on some port.
fn reachable_at(listener: IpAddr, target: IpAddr) -> bool {
    listener == target || covers(listener, target)
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// "gunicorn (pid 12) listens on 127.0.0.1:3000 and 127.0.0.1:3001; sshd (pid 5) ...", grouped
/// by program so one backend with several ports reads as one.
fn name_listeners(listeners: &[&TcpListen]) -> String {
    let mut by_holder: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for l in listeners {
        let key = who(l);
        if !by_holder.contains_key(&key) {
            order.push(key.clone());
        }
        by_holder.entry(key).or_default().push(l.addr.to_string());
    }
    let parts: Vec<String> = order
        .iter()
        .take(MAX_NAMED)
        .map(|key| {
            let addrs = by_holder.get(key).cloned().unwrap_or_default();
            format!("{key} listens on {}", join_and(&addrs))
        })
        .collect();
    let mut text = parts.join("; ");
    if order.len() > MAX_NAMED {
        text.push_str(&format!("; and {} more", order.len() - MAX_NAMED));
    }
    text
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn who(l: &TcpListen) -> String {
    holder_text(main_holder(&l.holders))
}

fn holder_text(owner: Option<&Owner>) -> String {
    owner.map_or_else(|| "a process we cannot see".to_string(), |o| o.to_string())
}

/// Hints for a unix socket path that failed with `status` (and `errno`, as `connect` words it).
pub fn unix(
    path: &Path,
    status: Status,
    errno: Option<&str>,
    listeners: &Listeners,
    allowed: Candidates,
    expects: Option<Kind>,
) -> Vec<Hint> {
    let eagain = format!("{}:", libc::EAGAIN);
    let mut hints = Vec::new();
    match status {
        Status::NoSuchSocket => {
            if let Some(dir) = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty() && !d.exists())
            {
                hints.push(Hint::new(format!(
                    "the directory {} does not exist",
                    dir.display()
                )));
            }
        }
        Status::NotASocket => hints.push(Hint::new(format!(
            "{} is {}, not a socket",
            path.display(),
            kind_of(path)
        ))),
        Status::Refused => hints.push(stale_or_replaced(path, listeners)),
        Status::Error if errno.is_some_and(|e| e.starts_with(&eagain)) => hints.push(
            Hint::new(
                "the backend's accept queue is full: nginx gets (11: Resource temporarily \
                 unavailable) and answers 502 at once",
            )
            .with_suggestion("add backend workers, or raise its listen backlog"),
        ),
        _ => {}
    }
    // A socket that listens but may not be opened is a permission problem, not a wrong path:
    // other sockets of similar names are no hint there.
    let listening = listeners.unix.iter().any(|l| l.path == path);
    if status != Status::PermissionDenied && !listening {
        hints.extend(similar_sockets(path, listeners, allowed, expects));
    }
    hints
}

fn stale_or_replaced(path: &Path, listeners: &Listeners) -> Hint {
    match listeners.unix.iter().find(|l| l.path == path) {
        Some(l) => Hint::new(format!(
            "{} is bound to {}, but the file there now is not its socket (replaced or \
             recreated after it started)",
            holder_text(main_holder(&l.holders)),
            path.display()
        ))
        .with_suggestion("restart the backend so it binds the path again"),
        None => Hint::new(format!(
            "{} is a socket file, but nothing listens on it: it was left behind by a backend \
             that stopped",
            path.display()
        ))
        .with_suggestion("start the backend (it recreates the socket); remove the stale file"),
    }
}

fn kind_of(path: &Path) -> &'static str {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => "a directory",
        Ok(m) if m.is_file() => "a regular file",
        _ => "something else",
    }
}

/// How well the program holding a socket suits a directive that speaks `expects`: 0 a
/// program known to speak it (php-fpm for `fastcgi_pass`), 1 one not known either way, 2 one
/// known to speak another protocol (php-fpm for `proxy_pass http://`).
fn affinity(holder: Option<&Owner>, expects: Option<Kind>) -> u8 {
    let program = holder.map_or("", |o| o.program.as_str());
    let speaks = if program.starts_with("php-fpm")
        || program.starts_with("php") && program.contains("fpm")
    {
        Some(Kind::FastCgi)
    } else if program.starts_with("uwsgi") {
        Some(Kind::Uwsgi)
    } else if program == "memcached" {
        Some(Kind::Memcached)
    } else {
        None
    };
    match (speaks, expects) {
        (Some(s), Some(e)) if s == e => 0,
        (None, _) | (_, None) => 1,
        _ => 2,
    }
}

/// Listening sockets whose path looks like the one written, best first: those held by a
/// program that speaks the directive's protocol before those held by one that speaks another.
fn similar_sockets(
    path: &Path,
    listeners: &Listeners,
    allowed: Candidates,
    expects: Option<Kind>,
) -> Option<Hint> {
    let mut scored: Vec<(f64, &super::netstat::UnixListen)> = listeners
        .unix
        .iter()
        .filter(|l| l.path != path)
        .filter(|l| allowed.admits(&format!("unix:{}", l.path.display())))
        .map(|l| (super::similar::score(path, &l.path), l))
        .filter(|(s, _)| *s >= super::similar::THRESHOLD)
        .collect();
    let fit = |l: &super::netstat::UnixListen| affinity(main_holder(&l.holders), expects);
    scored.sort_by(|a, b| {
        (fit(a.1).cmp(&fit(b.1)))
            .then_with(|| b.0.total_cmp(&a.0))
            .then_with(|| a.1.path.cmp(&b.1.path))
    });
    scored.dedup_by(|a, b| a.1.path == b.1.path);
    let best = scored.first()?.1;
    let named: Vec<String> = scored
        .iter()
        .take(MAX_NAMED)
        .map(|(_, l)| {
            format!(
                "{} listens on {}",
                holder_text(main_holder(&l.holders)),
                l.path.display()
            )
        })
        .collect();
    Some(
        Hint::new(format!(
            "no backend listens on {}; {}",
            path.display(),
            named.join("; ")
        ))
        .with_suggestion(format!(
            "if that is the backend, point the config at unix:{}",
            best.path.display()
        )),
    )
}
