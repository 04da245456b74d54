//! Shared pieces for the probe tests: targets built by hand (extraction is tested elsewhere),
//! listeners that hang, child processes stopped by PID on drop, and polling with a deadline.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use safe_reload::conf::targets::{Context, Name};
use safe_reload::conf::{Listen, ListenAddr, Reference, Server, Target, TargetAddr, Targets};
use safe_reload::probe::{ProbeOptions, ProbeResult};
use socket2::{Domain, Socket, Type};

/// A reference at `nginx.conf:line`: a `server` line of no pool, which gets a connect probe
/// only and fails alone (these tests are about connects; `probe_protocols` tests the protocol
/// probes, `policy` pools).
pub fn reference(line: u32) -> Reference {
    Reference {
        file: PathBuf::from("/etc/nginx/nginx.conf").into(),
        line,
        directive: Name::SERVER,
        context: Context::Http,
        upstream: None,
        backup: false,
        down: false,
        scheme: None,
        per_request: false,
        udp: false,
        also_udp: false,
        mirror: false,
        websocket: false,
        ssl: false,
    }
}

pub fn target(address: TargetAddr) -> Target {
    Target {
        address,
        references: vec![reference(10)].into(),
    }
}

pub fn ip(sa: SocketAddr) -> Target {
    target(TargetAddr::Ip(sa))
}

pub fn unix(path: &Path) -> Target {
    target(TargetAddr::Unix(path.to_path_buf()))
}

pub fn targets(list: Vec<Target>) -> Targets {
    Targets {
        targets: list,
        findings: Vec::new(),
    }
}

pub fn opts(timeout_ms: u64) -> ProbeOptions {
    ProbeOptions {
        timeout: Duration::from_millis(timeout_ms),
        ..ProbeOptions::default()
    }
}

/// A port on `ip` where nothing listens: bound once to learn a free one, then released.
pub fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A listener whose accept queue is full: connects to it hang until they time out.
pub struct Hung {
    pub addr: SocketAddr,
    _listener: Socket,
    _clients: Vec<TcpStream>,
}

pub fn hung_listener(ip: &str) -> Hung {
    let addr: SocketAddr = format!("{ip}:0").parse().expect("address");
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    listener.bind(&addr.into()).expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener
        .local_addr()
        .expect("local")
        .as_socket()
        .expect("inet");
    let mut clients = Vec::new();
    // Kernels differ in how many connections a backlog of 0 admits; fill until one hangs.
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => clients.push(c),
            Err(_) => break,
        }
    }
    Hung {
        addr,
        _listener: listener,
        _clients: clients,
    }
}

/// A child process stopped by PID (SIGTERM, then SIGKILL) when dropped, also on a failed test.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// All hint text of a result, for assertions and failure messages.
pub fn hint_text(r: &ProbeResult) -> String {
    r.hints
        .iter()
        .map(|h| {
            format!(
                "{} / {}",
                h.message,
                h.suggestion.clone().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// This process's program name as /proc shows it.
pub fn own_program() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .expect("comm")
        .trim()
        .to_string()
}

/// A server block with one listen at `addr`, declared at `nginx.conf:line`.
pub fn server_listening(addr: ListenAddr, line: u32) -> Server {
    let file: std::sync::Arc<std::path::Path> = PathBuf::from("/etc/nginx/nginx.conf").into();
    Server {
        context: Context::Http,
        file: file.clone(),
        line,
        listens: vec![Listen {
            addr,
            ssl: false,
            udp: false,
            ipv6only: false,
            default_server: false,
            proxy_protocol: false,
            http2: false,
            bind: false,
            file,
            line,
        }],
        server_names: vec![],
        locations: vec![],
        unbacked: vec![],
        static_files: vec![],
        redirects_plain: false,
        answers: None,
        plain_answer: None,
        check_headers: vec![],
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
