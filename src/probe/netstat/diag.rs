//! Listening TCP sockets asked of the kernel over netlink (`sock_diag`, as `ss` asks). Only
//! sockets in LISTEN state come back, where `/proc/net/tcp` lists every connection too: on a
//! busy host (or one that just made thousands of requests, whose sockets sit in TIME-WAIT)
//! the kernel formats tens of thousands of lines for the few listeners wanted, and the run
//! waits for them before `nginx -t` may start.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::TcpListen;

/// `SOCK_DIAG_BY_FAMILY`, the request and answer type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// `TCP_LISTEN` in the kernel's TCP state numbering.
const TCP_LISTEN: u32 = 10;
const HEADER: usize = 16;
/// `struct inet_diag_msg`: family, state, timer, retrans, the socket id (ports, addresses,
/// interface, cookie), expires, queues, uid and inode.
const MSG: usize = 72;
/// A kernel that does not answer within this has no business being waited for: the caller
/// reads procfs instead.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The listening TCP sockets of both address families, or `None` when netlink does not
/// answer for one of them (a kernel without `inet_diag`).
pub fn tcp_listeners() -> Option<Vec<TcpListen>> {
    let mut out = dump(libc::AF_INET as u8)?;
    out.extend(dump(libc::AF_INET6 as u8)?);
    Some(out)
}

/// One dump request for `family`'s listening TCP sockets, and its answers.
fn dump(family: u8) -> Option<Vec<TcpListen>> {
    let socket = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW.cloexec(),
        Some(Protocol::from(libc::NETLINK_SOCK_DIAG)),
    )
    .ok()?;
    socket.set_read_timeout(Some(TIMEOUT)).ok()?;
    // An unconnected netlink socket sends to the kernel.
    socket.send(&request(family)).ok()?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&socket).read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        match answers(&buf[..n], &mut out)? {
            true => return Some(out),
            false => continue,
        }
    }
}

/// `struct nlmsghdr` and `struct inet_diag_req_v2` asking for every TCP socket of `family`
/// in LISTEN state, in host byte order as netlink takes it.
fn request(family: u8) -> Vec<u8> {
    let len = (HEADER + 56) as u32;
    let mut req = Vec::with_capacity(len as usize);
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&[0; 8]);
    req.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // The socket id to match: all zero, every socket.
    req.extend_from_slice(&[0; 48]);
    req
}

/// The sockets in one datagram of answers, into `out`: `Some(true)` once the dump is done,
/// `Some(false)` when more datagrams follow, `None` on an error answer or a malformed one.
fn answers(mut buf: &[u8], out: &mut Vec<TcpListen>) -> Option<bool> {
    while buf.len() >= HEADER {
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
        if len < HEADER || len > buf.len() {
            return None;
        }
        match kind {
            NLMSG_DONE => return Some(true),
            NLMSG_ERROR => return None,
            SOCK_DIAG_BY_FAMILY => out.extend(listen(&buf[HEADER..len])),
            _ => {}
        }
        // Messages are 4-byte aligned.
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Some(false)
}

/// One `struct inet_diag_msg`: the local address and port (network byte order), the inode.
/// An IPv4-mapped IPv6 address is turned back into IPv4, as `parse_tcp` does.
fn listen(msg: &[u8]) -> Option<TcpListen> {
    if msg.len() < MSG {
        return None;
    }
    let port = u16::from_be_bytes(msg[4..6].try_into().ok()?);
    let ip = match msg[0] as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(msg[8], msg[9], msg[10], msg[11])),
        libc::AF_INET6 => {
            let octets: [u8; 16] = msg[8..24].try_into().ok()?;
            let v6 = Ipv6Addr::from(octets);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    let inode = u32::from_ne_bytes(msg[68..72].try_into().ok()?);
    Some(TcpListen {
        addr: SocketAddr::new(ip, port),
        inode: u64::from(inode),
        holders: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_lists_a_listening_socket_and_not_a_connected_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let from = client.local_addr().expect("client addr");
        let Some(found) = tcp_listeners() else {
            // A kernel without inet_diag: procfs is read instead.
            return;
        };
        assert!(!found.iter().any(|l| l.addr == from), "{found:?}");
        if let Some(v6) = v6.and_then(|l| l.local_addr().ok()) {
            assert!(found.iter().any(|l| l.addr == v6), "{found:?}");
        }
        // The very socket procfs lists, by inode.
        let mut procfs = Vec::new();
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            procfs.extend(super::super::parse_tcp(
                &std::fs::read_to_string(file).unwrap(),
            ));
        }
        let ours = procfs.iter().find(|l| l.addr == addr).expect("in procfs");
        assert!(
            found
                .iter()
                .any(|l| l.addr == addr && l.inode == ours.inode),
            "{found:?}"
        );
    }

    #[test]
    fn answers_are_read_to_the_end_of_the_dump() {
        let mut msg = vec![0u8; HEADER + MSG];
        msg[0..4].copy_from_slice(&((HEADER + MSG) as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let body = &mut msg[HEADER..];
        body[0] = libc::AF_INET as u8;
        body[4..6].copy_from_slice(&8080u16.to_be_bytes());
        body[8..12].copy_from_slice(&[127, 0, 0, 1]);
        body[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        let mut done = vec![0u8; HEADER + 4];
        done[0..4].copy_from_slice(&((HEADER + 4) as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        let mut out = Vec::new();
        assert_eq!(answers(&msg, &mut out), Some(false));
        assert_eq!(answers(&[msg.clone(), done].concat(), &mut out), Some(true));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(out[0].inode, 4242);
        let mut error = msg;
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(answers(&error, &mut out), None);
    }
}
