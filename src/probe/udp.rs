//! Targets only datagrams reach: the `proxy_pass` of a stream server that listens on `udp`
//! only, and the upstream servers only such `proxy_pass`es use (`Target::is_datagram_only`).
//!
//! A TCP connect says nothing about them (a DNS or syslog server need not listen on TCP), and
//! a UDP probe cannot say more without sending a datagram, which the application reads as a
//! request: a connected UDP socket learns of an ICMP "port unreachable" only after sending
//! one. So nothing is sent. For an address of this machine the kernel's table of bound UDP
//! sockets (`/proc/net/udp`, `udp6`) says whether anything receives nginx's datagrams; any
//! other address, and a unix datagram socket, is reported as not probed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::connect::Endpoint;
use super::{netstat, AddrResult, Hint, Status};

/// What the table says about one address of a datagram target, and the hint that says what
/// a failure or a skip means.
pub fn look_up(endpoint: &Endpoint, bound: &[SocketAddr]) -> (AddrResult, Option<Hint>) {
    let (address, status, hint) = match endpoint {
        Endpoint::Tcp(sa) if !netstat::is_local(sa.ip()) => {
            let hint = Hint::new(format!(
                "udp: {sa} not probed: it is not an address of this machine, and finding out \
                 whether it answers would send it a datagram its application reads as a request"
            ));
            (sa.to_string(), Status::NotProbed, Some(hint))
        }
        Endpoint::Tcp(sa) if receives(*sa, bound) => (sa.to_string(), Status::Ok, None),
        Endpoint::Tcp(sa) => {
            let hint = Hint::new(format!(
                "nothing on this machine is bound to UDP {sa} (/proc/net/udp): nginx's \
                 datagrams to it are answered with ICMP port unreachable, and its clients get \
                 no answer"
            ))
            .with_suggestion(
                "start the UDP server, or point proxy_pass at the address it is bound to",
            );
            (sa.to_string(), Status::NotBound, Some(hint))
        }
        Endpoint::Unix(p) => {
            let address = format!("unix:{}", p.display());
            let hint = Hint::new(format!(
                "udp: {address} not probed: a datagram socket is not connected to without \
                 sending it something"
            ));
            (address, Status::NotProbed, Some(hint))
        }
    };
    let result = AddrResult {
        address,
        status,
        errno: None,
        elapsed: Duration::ZERO,
        protocol: None,
        reply: (status == Status::Ok).then(|| "a UDP socket is bound".to_string()),
        speaks: None,
    };
    (result, hint)
}

/// Whether a datagram to `addr` reaches one of the `bound` sockets: the address itself, or a
/// wildcard of its port. An IPv6 wildcard is taken to receive IPv4 too (whether it is
/// `IPV6_V6ONLY` the table does not say; a refusal needs certainty).
///
/// An IPv4-mapped IPv6 address (`[::ffff:127.0.0.2]:53`) is the IPv4 address: nginx's socket is
/// IPv6, and the kernel delivers its datagrams to the IPv4 socket bound there.
fn receives(addr: SocketAddr, bound: &[SocketAddr]) -> bool {
    let addr = match addr.ip() {
        IpAddr::V6(ip) => ip
            .to_ipv4_mapped()
            .map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    };
    bound.iter().any(|b| {
        b.port() == addr.port()
            && (b.ip() == addr.ip()
                || match b.ip() {
                    IpAddr::V4(ip) => ip.is_unspecified() && addr.is_ipv4(),
                    IpAddr::V6(ip) => ip.is_unspecified(),
                })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_datagram_reaches_the_address_or_a_wildcard_of_its_port() {
        let bound = [sa("127.0.0.2:53"), sa("0.0.0.0:5353"), sa("[::]:514")];
        assert!(receives(sa("127.0.0.2:53"), &bound));
        assert!(!receives(sa("127.0.0.3:53"), &bound));
        assert!(receives(sa("127.0.0.9:5353"), &bound));
        assert!(!receives(sa("[::1]:5353"), &bound), "0.0.0.0 is IPv4 only");
        assert!(
            receives(sa("[::ffff:127.0.0.2]:53"), &bound),
            "an IPv4-mapped address is its IPv4 address"
        );
        assert!(receives(sa("[::ffff:127.0.0.9]:5353"), &bound));
        assert!(!receives(sa("[::ffff:127.0.0.3]:53"), &bound));
        assert!(receives(sa("127.0.0.1:514"), &bound));
        assert!(!receives(sa("127.0.0.2:54"), &bound));
    }

    #[test]
    fn only_this_machines_addresses_are_looked_up() {
        let bound = [sa("127.0.0.2:53")];
        let (r, _) = look_up(&Endpoint::Tcp(sa("127.0.0.2:53")), &bound);
        assert_eq!(r.status, Status::Ok);
        let (r, hint) = look_up(&Endpoint::Tcp(sa("127.0.0.2:54")), &bound);
        assert_eq!(r.status, Status::NotBound);
        let hint = hint.expect("a hint").message;
        assert!(hint.contains("UDP 127.0.0.2:54"), "{hint}");
        // TEST-NET-1: documentation only, never an address of this machine.
        let (r, hint) = look_up(&Endpoint::Tcp(sa("192.0.2.1:53")), &bound);
        assert_eq!(r.status, Status::NotProbed);
        let hint = hint.expect("a hint").message;
        assert!(hint.starts_with("udp: 192.0.2.1:53 not probed"), "{hint}");
    }
}
