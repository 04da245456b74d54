//! What listens on this machine right now: TCP listeners asked of the kernel over netlink
//! (see `diag`; read from `/proc/net/{tcp,tcp6}` when it does not answer), unix ones read
//! from `/proc/net/unix`; and which process owns each listening socket (from the
//! `socket:[inode]` links under `/proc/*/fd`); which UDP sockets receive datagrams
//! (`/proc/net/{udp,udp6}`), for the targets only datagrams reach (see `udp`).
//!
//! Diagnosis and the listen preflight both need this picture; asking the kernel directly avoids
//! running `ss` or `lsof`, which may not be installed and whose output differs between versions.
//! Owners are only visible for processes we may inspect (all of them as root); an invisible
//! owner is `None`, never a guess.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Serialize;

mod diag;

/// `st` column of `/proc/net/tcp*` for a socket in LISTEN state.
const TCP_LISTEN: &str = "0A";
/// `st` column of `/proc/net/udp*` for a socket that is not connected (`TCP_CLOSE`): it
/// receives datagrams from anyone. A connected one takes only its peer's.
const UDP_UNCONNECTED: &str = "07";
/// `__SO_ACCEPTCON` in the `Flags` column of `/proc/net/unix`: the socket called `listen(2)`.
const UNIX_ACCEPTCON: u32 = 0x0001_0000;

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: i32,
    /// `/proc/PID/comm`: the program name as `ps` shows it.
    pub program: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.program, self.pid)
    }
}

/// A listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpListen {
    /// IPv4-mapped IPv6 addresses are turned back into IPv4.
    pub addr: SocketAddr,
    pub inode: u64,
    /// Every process that holds the socket (a master and its forked workers share one).
    pub holders: Vec<Owner>,
}

/// A listening unix stream socket bound to a path (abstract sockets are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixListen {
    pub path: PathBuf,
    pub inode: u64,
    pub holders: Vec<Owner>,
}

/// Every listening socket visible in this network namespace.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    pub tcp: Vec<TcpListen>,
    pub unix: Vec<UnixListen>,
    /// Unconnected UDP sockets (a datagram to their address from anyone reaches them), in the
    /// same shape as the TCP listeners.
    pub udp: Vec<TcpListen>,
}

impl Listeners {
    /// Read the current listeners and their owners. Unreadable procfs files give an empty list:
    /// diagnosis then has less to say, which is better than failing the probe run.
    pub fn snapshot() -> Listeners {
        let mut listeners = Listeners::tables();
        listeners.attach_owners();
        listeners
    }

    /// The listening sockets as the kernel lists them now, without their owners (cheap: the
    /// listeners only, however many connections there are). `attach_owners` adds the owners
    /// later.
    pub fn tables() -> Listeners {
        let tcp = diag::tcp_listeners().unwrap_or_else(|| {
            let mut tcp = Vec::new();
            for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
                if let Ok(text) = fs_err::read_to_string(file) {
                    tcp.extend(parse_tcp(&text));
                }
            }
            tcp
        });
        let unix = fs_err::read_to_string("/proc/net/unix")
            .map(|t| parse_unix(&t))
            .unwrap_or_default();
        let udp = ["/proc/net/udp", "/proc/net/udp6"]
            .iter()
            .filter_map(|f| fs_err::read_to_string(f).ok())
            .flat_map(|text| parse_udp_sockets(&text))
            .collect();
        Listeners { tcp, unix, udp }
    }

    /// Find the process holding each socket (a scan of every process's open files).
    pub fn attach_owners(&mut self) {
        let wanted: HashSet<u64> = self
            .tcp
            .iter()
            .map(|l| l.inode)
            .chain(self.unix.iter().map(|l| l.inode))
            .chain(self.udp.iter().map(|l| l.inode))
            .collect();
        let owners = socket_owners(&wanted);
        for l in &mut self.tcp {
            l.holders = owners.get(&l.inode).cloned().unwrap_or_default();
        }
        for l in &mut self.unix {
            l.holders = owners.get(&l.inode).cloned().unwrap_or_default();
        }
        for l in &mut self.udp {
            l.holders = owners.get(&l.inode).cloned().unwrap_or_default();
        }
    }
}

/// The listening sockets `pids` hold (a master and its workers), or `None` when none of their
/// open files can be read: then nothing can be said about what they listen on. Reads only
/// those processes' descriptors, not every process's.
pub fn held_by(pids: &[i32]) -> Option<Listeners> {
    let mut inodes = HashSet::new();
    let mut seen = false;
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        seen = true;
        inodes.extend(fds.flatten().filter_map(|fd| socket_inode(&fd.path())));
    }
    if !seen {
        return None;
    }
    let mut listeners = Listeners::tables();
    listeners.tcp.retain(|l| inodes.contains(&l.inode));
    listeners.unix.retain(|l| inodes.contains(&l.inode));
    listeners.udp.retain(|l| inodes.contains(&l.inode));
    Some(listeners)
}

impl Listeners {
    /// Whether a connection to `addr` may reach one of these sockets: the address itself, or
    /// a wildcard on its port: `0.0.0.0` for IPv4, `[::]` for both (whether it is `ipv6only`
    /// is not in the table, so it is taken to accept IPv4 too: the check is then sent).
    pub fn accepts(&self, addr: SocketAddr) -> bool {
        self.tcp.iter().any(|l| {
            let wildcard = match l.addr.ip() {
                IpAddr::V4(ip) => ip.is_unspecified() && addr.is_ipv4(),
                IpAddr::V6(ip) => ip.is_unspecified(),
            };
            l.addr == addr || (l.addr.port() == addr.port() && wildcard)
        })
    }

    /// Whether a socket listens on the unix path `path`.
    pub fn accepts_unix(&self, path: &Path) -> bool {
        self.unix.iter().any(|l| l.path == path)
    }
}

/// The holder to name in a message: the process whose parent does not hold the socket too
/// (the master rather than one of its workers).
pub fn main_holder(holders: &[Owner]) -> Option<&Owner> {
    let pids: HashSet<i32> = holders.iter().map(|o| o.pid).collect();
    holders
        .iter()
        .find(|o| parent_pid(o.pid).is_none_or(|pp| !pids.contains(&pp)))
        .or_else(|| holders.iter().min_by_key(|o| o.pid))
}

/// The local addresses of every UDP socket that receives datagrams from anyone, from
/// `/proc/net/udp` and `/proc/net/udp6` (unreadable files give none).
pub fn udp_bound() -> Vec<SocketAddr> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|f| fs_err::read_to_string(f).ok())
        .flat_map(|text| parse_udp(&text))
        .collect()
}

/// Parse `/proc/net/udp` or `/proc/net/udp6`, keeping unconnected sockets' addresses.
pub fn parse_udp(text: &str) -> Vec<SocketAddr> {
    parse_udp_sockets(text)
        .into_iter()
        .map(|s| s.addr)
        .collect()
}

/// [`parse_udp`] with each socket's inode, for its owners.
pub fn parse_udp_sockets(text: &str) -> Vec<TcpListen> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&UDP_UNCONNECTED) {
                return None;
            }
            Some(TcpListen {
                addr: parse_hex_sockaddr(cols.get(1)?)?,
                inode: cols.get(9)?.parse().ok()?,
                holders: Vec::new(),
            })
        })
        .collect()
}

/// An address of this machine: binding to it succeeds only here (and sends nothing).
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Parse `/proc/net/tcp` or `/proc/net/tcp6`, keeping sockets in LISTEN state.
pub fn parse_tcp(text: &str) -> Vec<TcpListen> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            let addr = parse_hex_sockaddr(cols.get(1)?)?;
            let inode = cols.get(9)?.parse().ok()?;
            Some(TcpListen {
                addr,
                inode,
                holders: Vec::new(),
            })
        })
        .collect()
}

/// `0100007F:1F90` or a 32-digit IPv6 form. The kernel prints each 32-bit word of the address
/// in host byte order, so the bytes come back with `to_ne_bytes`.
fn parse_hex_sockaddr(text: &str) -> Option<SocketAddr> {
    let (ip_hex, port_hex) = text.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for chunk in ip_hex.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            let v6 = Ipv6Addr::from(octets);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parse `/proc/net/unix`, keeping listening sockets bound to a filesystem path.
pub fn parse_unix(text: &str) -> Vec<UnixListen> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let _num = cols.next()?;
            let _refcount = cols.next()?;
            let _protocol = cols.next()?;
            let flags = u32::from_str_radix(cols.next()?, 16).ok()?;
            let _type = cols.next()?;
            let _state = cols.next()?;
            let inode = cols.next()?.parse().ok()?;
            let path = cols.collect::<Vec<_>>().join(" ");
            if flags & UNIX_ACCEPTCON == 0 || !path.starts_with('/') {
                return None;
            }
            Some(UnixListen {
                path: PathBuf::from(path),
                inode,
                holders: Vec::new(),
            })
        })
        .collect()
}

/// Map socket inodes to the processes holding them, by reading every `/proc/PID/fd/*` link.
fn socket_owners(wanted: &HashSet<u64>) -> HashMap<u64, Vec<Owner>> {
    let mut owners: HashMap<u64, Vec<Owner>> = HashMap::new();
    if wanted.is_empty() {
        return owners;
    }
    for pid in all_pids() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut program = None;
        for fd in fds.flatten() {
            let Some(inode) = socket_inode(&fd.path()) else {
                continue;
            };
            if !wanted.contains(&inode) {
                continue;
            }
            let program = program.get_or_insert_with(|| program_name(pid)).clone();
            let list = owners.entry(inode).or_default();
            if !list.iter().any(|o| o.pid == pid) {
                list.push(Owner { pid, program });
            }
        }
    }
    owners
}

fn socket_inode(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let text = target.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every numeric entry of `/proc`.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The program name of a process: `comm`, or the first word of `cmdline` if `comm` is gone.
pub fn program_name(pid: i32) -> String {
    if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        let comm = comm.trim();
        if !comm.is_empty() {
            return comm.to_string();
        }
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|b| {
            let first = b.split(|&c| c == 0).next()?.to_vec();
            let first = String::from_utf8_lossy(&first).into_owned();
            Path::new(&first)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "?".to_string())
}

/// The parent pid from `/proc/PID/stat` (the field after the parenthesised, possibly spaced,
/// command name).
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_hex_byte_order_and_mapped_v6() {
        let text = "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123 1\n   1: 0100007F:0050 0100007F:C000 01 00000000:00000000 00:00000000 00000000     0        0 124 1\n";
        let l = parse_tcp(text);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(l[0].inode, 123);
        let v6 = "h\n   0: 0000000000000000FFFF00000100007F:0BB8 00000000000000000000000000000000:0000 0A 0 0 0 0 0 77 1\n   1: 00000000000000000000000001000000:0050 0:0 0A 0 0 0 0 0 78 1\n";
        let l = parse_tcp(v6);
        assert_eq!(l[0].addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(l[1].addr, "[::1]:80".parse().unwrap());
    }

    #[test]
    fn a_wildcard_accepts_every_address_on_its_port() {
        let listen = |addr: &str| TcpListen {
            addr: addr.parse().unwrap(),
            inode: 1,
            holders: Vec::new(),
        };
        let l = Listeners {
            tcp: vec![listen("0.0.0.0:80"), listen("127.0.0.2:8080")],
            unix: Vec::new(),
            udp: Vec::new(),
        };
        assert!(l.accepts("127.0.0.5:80".parse().unwrap()));
        assert!(l.accepts("127.0.0.2:8080".parse().unwrap()));
        assert!(!l.accepts("127.0.0.3:8080".parse().unwrap()));
        assert!(!l.accepts("127.0.0.2:8081".parse().unwrap()));
        assert!(
            !l.accepts("[::1]:80".parse().unwrap()),
            "0.0.0.0 is IPv4 only"
        );
    }

    #[test]
    fn udp_keeps_sockets_that_take_datagrams_from_anyone() {
        let text = "  sl  local_address rem_address   st\n\
                    1: 0100007F:14E9 00000000:0000 07 0 0 0 0 0 11 2\n\
                    2: 0100007F:9C40 0100007F:0035 01 0 0 0 0 0 12 2\n";
        assert_eq!(parse_udp(text), vec!["127.0.0.1:5353".parse().unwrap()]);
    }

    #[test]
    fn unix_keeps_listening_paths_only() {
        let text = "Num RefCount Protocol Flags Type St Inode Path\n0: 00000002 00000000 00010000 0001 01 5 /run/php/a b.sock\n0: 00000002 00000000 00000000 0001 03 6 /run/x.sock\n0: 00000002 00000000 00010000 0001 01 7 @abstract\n";
        let l = parse_unix(text);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].path, PathBuf::from("/run/php/a b.sock"));
    }
}
