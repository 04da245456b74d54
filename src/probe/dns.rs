//! A DNS client for one job: ask the `resolver` a configuration names for the A and AAAA
//! records of a host, over UDP, as nginx's own resolver does for a `*_pass` built from
//! variables (`ngx_resolver.c`: one query per type, recursion desired, to the servers in
//! turn, `resolver_timeout` in all). The messages are bytes in, bytes out (`query`,
//! `read_reply`), tested on fixtures; `lookup` does the socket work with a deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Record type A (RFC 1035).
pub const A: u16 = 1;
/// Record type AAAA (RFC 3596).
pub const AAAA: u16 = 28;
/// The largest UDP reply read (EDNS is not asked for, so 512 would do).
const MAX_REPLY: usize = 4096;

/// What a server said to one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// NOERROR with these addresses (possibly none: the name has no record of the type).
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// Another response code (SERVFAIL, REFUSED, ...).
    Failed(u8),
}

/// The query for `name`'s records of `qtype`, with `id`; `None` for a name DNS cannot carry.
pub fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 18);
    out.extend(id.to_be_bytes());
    // Flags: a standard query with recursion desired; one question.
    out.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend(label.as_bytes());
    }
    out.push(0);
    out.extend(qtype.to_be_bytes());
    out.extend(1u16.to_be_bytes());
    (out.len() <= 512).then_some(out)
}

/// The reply to the query `id`, or `None` when `bytes` is not one (another id, not a
/// response, truncated or malformed: ignored, as nginx ignores them).
pub fn read_reply(bytes: &[u8], id: u16) -> Option<Reply> {
    let header = bytes.get(..12)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    if u16::from_be_bytes([header[0], header[1]]) != id || flags & 0x8000 == 0 {
        return None;
    }
    match (flags & 0x000f) as u8 {
        0 => {}
        3 => return Some(Reply::NoSuchName),
        rcode => return Some(Reply::Failed(rcode)),
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    let (questions, answers) = (count(4), count(6));
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(bytes, at)? + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..answers {
        at = skip_name(bytes, at)?;
        let fixed = bytes.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = bytes.get(at + 10..at + 10 + len)?;
        // A CNAME's target comes with its own A/AAAA records in a recursive answer.
        match (rtype, len) {
            (A, 4) => addrs.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                addrs.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
        at += 10 + len;
    }
    Some(Reply::Addresses(addrs))
}

/// The offset after a (possibly compressed) name at `at`.
fn skip_name(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2).filter(|e| *e <= bytes.len()),
            l => at += 1 + usize::from(l),
        }
    }
}

/// What asking the resolver found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The addresses of the name (both types asked for, as nginx does by default).
    Found(Vec<IpAddr>),
    /// Every answer said the name does not exist, or has no address.
    NoSuchName,
    /// No server answered within the deadline, or each failed: why.
    NoAnswer(String),
}

/// Ask `servers` in turn for `name`'s records of `types`, until one answers every type or
/// `deadline` passes (shared between the servers).
pub fn lookup(servers: &[SocketAddr], name: &str, types: &[u16], deadline: Duration) -> Lookup {
    let end = Instant::now() + deadline;
    let mut why = String::from("no resolver address");
    for (i, server) in servers.iter().enumerate() {
        let left = end.saturating_duration_since(Instant::now());
        let share = left / (servers.len() - i) as u32;
        match ask(*server, name, types, share) {
            Ok(Some(addrs)) if addrs.is_empty() => return Lookup::NoSuchName,
            Ok(Some(addrs)) => return Lookup::Found(addrs),
            Ok(None) => why = format!("{server} did not answer within {}", humantime(share)),
            Err(e) => why = format!("{server}: {e}"),
        }
    }
    Lookup::NoAnswer(why)
}

fn humantime(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// One server: every type's addresses, `None` on timeout.
fn ask(
    server: SocketAddr,
    name: &str,
    types: &[u16],
    within: Duration,
) -> std::io::Result<Option<Vec<IpAddr>>> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(server)?;
    let base: u16 = rand_id();
    let mut pending: Vec<u16> = Vec::new();
    for (i, t) in types.iter().enumerate() {
        let id = base.wrapping_add(i as u16);
        let q = query(id, name, *t).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a DNS name")
        })?;
        socket.send(&q)?;
        pending.push(id);
    }
    let end = Instant::now() + within;
    let mut addrs = Vec::new();
    let mut buf = vec![0u8; MAX_REPLY];
    let mut no_such_name = false;
    while !pending.is_empty() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let reply = pending
            .iter()
            .position(|id| read_reply(&buf[..n], *id).is_some())
            .map(|i| (pending.remove(i), i));
        let Some((id, _)) = reply else { continue };
        match read_reply(&buf[..n], id) {
            Some(Reply::Addresses(a)) => addrs.extend(a),
            Some(Reply::NoSuchName) => no_such_name = true,
            Some(Reply::Failed(rcode)) => {
                return Err(std::io::Error::other(format!(
                    "answered with rcode {rcode}"
                )))
            }
            None => {}
        }
    }
    if no_such_name && addrs.is_empty() {
        return Ok(Some(Vec::new()));
    }
    addrs.sort();
    addrs.dedup();
    Ok(Some(addrs))
}

/// A query id hard to guess from outside (nginx uses `ngx_random`): the clock's nanoseconds
/// mixed with the pid.
fn rand_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ std::process::id().rotate_left(16) ^ (nanos >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `q` with `answers` (type, rdata), each owner a pointer to the question.
    fn reply(q: &[u8], rcode: u8, answers: &[(u16, &[u8])]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[3] = 0x80 | rcode;
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (t, data) in answers {
            r.extend([0xc0, 12]);
            r.extend(t.to_be_bytes());
            r.extend([0, 1, 0, 0, 0, 60]);
            r.extend((data.len() as u16).to_be_bytes());
            r.extend(*data);
        }
        r
    }

    #[test]
    fn a_query_is_a_recursive_question_for_one_type() {
        let q = query(0x1234, "app.service.consul", AAAA).unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..16], b"\x03app");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 28, 0, 1]);
        assert_eq!(query(1, "a..b", A), None);
        assert_eq!(query(1, &"x".repeat(64), A), None);
    }

    #[test]
    fn replies_give_addresses_or_say_the_name_does_not_exist() {
        let q = query(7, "app.test", A).unwrap();
        let cname_then_a = reply(&q, 0, &[(5, b"\x03www\xc0\x0c"), (A, &[127, 0, 0, 9])]);
        assert_eq!(
            read_reply(&cname_then_a, 7),
            Some(Reply::Addresses(vec!["127.0.0.9".parse().unwrap()]))
        );
        let v6 = reply(&q, 0, &[(AAAA, &Ipv6Addr::LOCALHOST.octets())]);
        assert_eq!(
            read_reply(&v6, 7),
            Some(Reply::Addresses(vec!["::1".parse().unwrap()]))
        );
        assert_eq!(read_reply(&reply(&q, 3, &[]), 7), Some(Reply::NoSuchName));
        assert_eq!(read_reply(&reply(&q, 2, &[]), 7), Some(Reply::Failed(2)));
        // Another id, a query, a short or cut message: not a reply to this query.
        assert_eq!(read_reply(&reply(&q, 0, &[]), 8), None);
        assert_eq!(read_reply(&q, 7), None);
        assert_eq!(read_reply(&q[..5], 7), None);
        let cut = reply(&q, 0, &[(A, &[127, 0, 0, 9])]);
        assert_eq!(read_reply(&cut[..cut.len() - 2], 7), None);
    }
}
