//! Probe 10,000 loopback targets, half listening, half refused and 100 behind a full accept
//! queue (timing out at 1 s), and print the wall time. The aim is under 1.5 s: about one
//! timeout, however many targets.
#![allow(clippy::print_stdout)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use safe_reload::conf::targets::{Context, Name};
use safe_reload::conf::{Reference, Target, TargetAddr, Targets};
use safe_reload::probe::{probe_all, ProbeOptions, Status};
use socket2::{Domain, Socket, Type};

const LISTENING: usize = 5_000;
const TIMING_OUT: usize = 100;
const REFUSED: usize = 10_000 - LISTENING - TIMING_OUT;

fn main() {
    raise_fd_limit();
    let listeners: Vec<TcpListener> = (0..LISTENING)
        .map(|i| TcpListener::bind(format!("127.85.0.{}:0", 1 + i % 200)).expect("bind"))
        .collect();
    let hung: Vec<(Socket, TcpStream, SocketAddr)> = (0..TIMING_OUT).map(hung).collect();
    let refused: Vec<SocketAddr> = (0..REFUSED)
        .map(|i| {
            let l = TcpListener::bind(format!("127.85.1.{}:0", 1 + i % 200)).expect("bind");
            l.local_addr().expect("addr")
        })
        .collect();

    let mut list: Vec<Target> = Vec::with_capacity(10_000);
    list.extend(
        listeners
            .iter()
            .map(|l| target(l.local_addr().expect("addr"))),
    );
    list.extend(refused.iter().map(|&sa| target(sa)));
    list.extend(hung.iter().map(|h| target(h.2)));
    let targets = Targets {
        targets: list,
        findings: Vec::new(),
    };

    let opts = ProbeOptions::default();
    let t0 = Instant::now();
    let report = probe_all(&targets, &opts);
    let wall = t0.elapsed();
    let count = |s: Status| report.results.iter().filter(|r| r.status == s).count();
    println!(
        "probe: {} targets in {:.3} s (timeout {:?}): {} ok, {} refused, {} timeout",
        report.results.len(),
        wall.as_secs_f64(),
        opts.timeout,
        count(Status::Ok),
        count(Status::Refused),
        count(Status::Timeout),
    );
}

fn target(sa: SocketAddr) -> Target {
    Target {
        address: TargetAddr::Ip(sa),
        references: vec![Reference {
            file: std::path::Path::new("/etc/nginx/nginx.conf").into(),
            line: 1,
            directive: Name::SERVER,
            context: Context::Http,
            upstream: Some("bench".into()),
            backup: false,
            down: false,
            scheme: None,
            per_request: false,
            udp: false,
            also_udp: false,
            mirror: false,
            websocket: false,
            ssl: false,
        }]
        .into(),
    }
}

/// A backlog-0 listener with one connection it never accepts: further connects hang.
fn hung(i: usize) -> (Socket, TcpStream, SocketAddr) {
    let addr: SocketAddr = format!("127.85.2.{}:0", 1 + i % 200).parse().expect("addr");
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.bind(&addr.into()).expect("bind");
    s.listen(0).expect("listen");
    let addr = s.local_addr().expect("addr").as_socket().expect("inet");
    let c = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("first connect");
    (s, c, addr)
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct through valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
