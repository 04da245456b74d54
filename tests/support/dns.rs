//! A tiny DNS responder on a loopback UDP port, for `resolver` tests: it answers A and AAAA
//! queries for the names it was given (other names: NXDOMAIN), and counts the queries it got.
//! [`DnsResponder::silent`] binds a port and never answers (a resolver that is down).
//! Stopped on `Drop`.

use super::*;
use std::net::UdpSocket;

pub struct DnsResponder {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub queries: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
    _silent: Option<UdpSocket>,
}

impl DnsResponder {
    /// Answer for `names` (name, addresses) on `ip`, a kernel-chosen port.
    pub fn start(ip: IpAddr, names: &[(&str, &[IpAddr])]) -> DnsResponder {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind the DNS responder");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU32::new(0));
        let table: Vec<(String, Vec<IpAddr>)> = names
            .iter()
            .map(|(n, a)| (n.to_ascii_lowercase(), a.to_vec()))
            .collect();
        let (s, q) = (stop.clone(), queries.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = answer(&buf[..n], &table) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        DnsResponder {
            addr,
            stop,
            queries,
            thread: Some(thread),
            _silent: None,
        }
    }

    /// A bound UDP port on `ip` that never answers.
    pub fn silent(ip: IpAddr) -> DnsResponder {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind");
        DnsResponder {
            addr: socket.local_addr().expect("local addr"),
            stop: Arc::new(AtomicBool::new(true)),
            queries: Arc::new(AtomicU32::new(0)),
            thread: None,
            _silent: Some(socket),
        }
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query: the question echoed, then the records of its type for the name.
fn answer(q: &[u8], table: &[(String, Vec<IpAddr>)]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    let question_end = at + 4;
    let name = labels.join(".");
    let found = table.iter().find(|(n, _)| *n == name);
    let records: Vec<Vec<u8>> = found
        .map(|(_, addrs)| {
            addrs
                .iter()
                .filter_map(|a| match (a, qtype) {
                    (IpAddr::V4(v4), 1) => Some(v4.octets().to_vec()),
                    (IpAddr::V6(v6), 28) => Some(v6.octets().to_vec()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut r = q.get(..question_end)?.to_vec();
    r[2] = 0x80 | (q[2] & 0x01); // a response, recursion desired as asked
    r[3] = 0x80 | if found.is_some() { 0 } else { 3 }; // recursion available; NXDOMAIN
    r[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
    r[8..12].copy_from_slice(&[0, 0, 0, 0]);
    for data in records {
        r.extend([0xc0, 12]);
        r.extend(qtype.to_be_bytes());
        r.extend([0, 1, 0, 0, 0, 5]);
        r.extend((data.len() as u16).to_be_bytes());
        r.extend(data);
    }
    Some(r)
}
