//! The shared integration-test harness: a real nginx in a private prefix, and real backends.
//!
//! ```ignore
//! mod support;
//! use support::*;
//!
//! let ip = unique_loopback();
//! let app = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
//! let port = free_port(ip);
//! let nginx = TestNginx::builder()
//!     .http(&format!("server {{ listen {ip}:{port}; location / {{ proxy_pass http://{}; }} }}", app.addr))
//!     .start();
//! assert_eq!(http_get(SocketAddr::new(ip, port), "x", "/").unwrap().1, "app-v1");
//! nginx.write_http("...new http body...");   // rewrite nginx.conf, then reload it however the test likes
//! ```
//!
//! - [`TestNginx`] writes `DIR/nginx.conf` in a fresh tempdir: `pid DIR/logs/nginx.pid`,
//!   `error_log DIR/logs/error.log notice` (notice, so reloads show in the log), every
//!   `*_temp_path` inside DIR, `daemon off` (the master is our child, stopped by PID and reaped),
//!   `worker_processes` 1 by default, `user root` when the tests run as root (so workers can
//!   reach sockets in tempdirs), optional `load_module` of the stream module with a `stream {}`
//!   body. It also adds a control server on a free port of a unique loopback address
//!   (`ctrl`, answering `GET /__ready` with 200), waits until that answers through a worker, and
//!   in `Drop` sends SIGTERM to the master, waits for it and its workers, and SIGKILLs leftovers.
//! - Addresses: [`unique_loopback`] gives a 127.x.y.z no other test process uses;
//!   [`free_port`] a port free on an address (bind port 0).
//! - Backends, each stopped on `Drop`: [`HttpBackend`] (200 with its name as the body, TCP or
//!   unix socket), [`CloseBackend`] (passes the probes, closes real requests: nginx answers
//!   502 after the reload), [`FlakyBackend`] (fails every n-th request, counted: closes it or
//!   answers it late), [`AcceptCloseBackend`] (closes every connection unanswered),
//!   [`HangingListener`] (backlog full: connects hang, for timeouts), [`UdpEcho`] (a UDP
//!   server answering each datagram, for stream `listen ... udp`), and [`AppServer`], real
//!   application servers (php-fpm, gunicorn, uWSGI, an HTTPS server, a gRPC server, Python's
//!   `http.server`).
//! - [`ClientLoop`]: requests through nginx on fresh connections until stopped, every answer
//!   kept, to show what visitors saw during a run.
//! - [`http_get`]: a tiny client (fresh connection, `Connection: close`) returning status and body;
//!   [`h2c_get`] the same over HTTP/2 with prior knowledge (curl), for plaintext `http2` listens.
//! - [`wait_for`]: poll a condition until a deadline instead of sleeping.
//! - The binary: [`SafeReload`] runs `safe-reload -c CONF -p PREFIX --state-dir DIR` with the
//!   real nginx and a private (empty) settings file, returning a [`Run`] (exit status, stdout,
//!   stderr, the `--json` report; any "panicked" in the output fails the test). A builder's
//!   `prepare()` writes a prefix without starting nginx; [`syn_sent_to`] sees a connect
//!   waiting on a [`HangingListener`].
//! - [`ProxiedSite`]: a site proxying `/` to one upstream with a baseline recorded, a change
//!   to it, and a run with a client looping through it (`refused_before_reload` asserts the
//!   whole "refused, untouched, no client saw it" shape); [`probe_result`] finds a target's
//!   probe result in a report.
//! - [`self_signed`]: a fresh self-signed certificate and key (openssl) for TLS listens and
//!   backends.

#![allow(dead_code, unused_imports)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The nginx the tests run.
pub const NGINX: &str = "/usr/sbin/nginx";
/// The dynamic stream module of Debian's nginx.
pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Poll `cond` every few milliseconds until it holds or `within` passes; true if it held.
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// A loopback address unique to this test process and call: 127.x.y.z from the pid and a
/// counter, so parallel test processes do not collide on ports either.
pub fn unique_loopback() -> IpAddr {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n =
        (std::process::id() % (1 << 18)) << 6 | (1 + COUNTER.fetch_add(1, Ordering::Relaxed) % 63);
    let [_, a, b, c] = n.to_be_bytes();
    // Keep clear of 127.0.0.x, where real services on the machine listen.
    IpAddr::V4(Ipv4Addr::new(127, a | 0x80, b, c))
}

/// A port nothing listens on at `ip` right now (the kernel's pick for port 0).
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind port 0 on a loopback address")
}

/// `GET path` with `Host: host` on a fresh connection; status and body.
/// The status nginx answers a client's WebSocket handshake for `path` with (`101` where it
/// passes the upgrade), read off the status line alone (a switched connection stays open).
pub fn handshake_status(addr: SocketAddr, host: &str, path: &str) -> Option<u16> {
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(handshake.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// `POST path` with a small form body: a request nginx does not pass on to the next server
/// once it has sent it (unless `*_next_upstream` has `non_idempotent`).
pub fn http_post(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: 3\r\nConnection: \
             close\r\n\r\na=1"
        ),
    )
}

/// `GET path` over HTTP/1.0 with no Host header: what nginx gives to the server named `""`.
pub fn http10_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    exchange(addr, &format!("GET {path} HTTP/1.0\r\n\r\n"))
}

/// One raw request on a fresh connection; status and body.
pub fn exchange(addr: SocketAddr, request: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// `GET path` for `host` over HTTP/2 with prior knowledge (what a plaintext `listen ... http2`
/// speaks), optionally after a PROXY protocol v1 header; status and body. curl with nghttp2
/// does it, so the answer is read by a client other than the one under test.
pub fn h2c_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    proxy_protocol: bool,
) -> std::io::Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2-prior-knowledge", "--max-time", "5"])
        .arg("--resolve")
        .arg(format!("{host}:{}:{}", addr.port(), addr.ip()))
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("http://{host}:{}{path}", addr.port()));
    if proxy_protocol {
        cmd.arg("--haproxy-protocol");
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    match tail.split_once(' ') {
        Some((code, "2")) if out.status.success() => code
            .parse()
            .map(|c| (c, body.to_string()))
            .map_err(std::io::Error::other),
        _ => Err(std::io::Error::other(format!(
            "curl --http2-prior-knowledge: {tail:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ))),
    }
}

/// `GET path` for `host` over TLS (any certificate accepted), with SNI `host`; the status.
/// curl does it, so the answer is read by a client other than the one under test.
pub fn https_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<u16> {
    https_get_as(addr, host, path, false)
}

/// [`https_get`], sending a PROXY protocol header first when `proxy_protocol` (as a load
/// balancer in front of a `listen ... ssl proxy_protocol` does).
pub fn https_get_as(
    addr: SocketAddr,
    host: &str,
    path: &str,
    proxy_protocol: bool,
) -> std::io::Result<u16> {
    let extra: &[&str] = if proxy_protocol {
        &["--haproxy-protocol"]
    } else {
        &[]
    };
    curl_https(addr, host, path, extra)
}

/// What a client that offers TLS 1.2 alone gets (`curl --tls-max 1.2`): the status, or `None`
/// for a handshake nginx refused (curl writes 000).
pub fn https_get_tls12(addr: SocketAddr, host: &str) -> Option<u16> {
    curl_https(addr, host, "/", &["--tls-max", "1.2"])
        .ok()
        .filter(|&code| code != 0)
}

/// `curl -k` for `https://HOST:PORT/PATH` at `addr`, with `extra` arguments: the status it got.
/// The status of `GET /` over HTTP/2 (ALPN `h2`, as browsers ask), by curl; `None` when it
/// got no answer (a refused stream, a reset).
pub fn https_get_h2(addr: SocketAddr, host: &str) -> Option<u16> {
    curl_https(addr, host, "/", &["--http2-prior-knowledge"])
        .ok()
        .filter(|&code| code != 0)
}

fn curl_https(addr: SocketAddr, host: &str, path: &str, extra: &[&str]) -> std::io::Result<u16> {
    let out = Command::new("curl")
        .args(extra)
        .args([
            "-sSk",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-w",
            "%{http_code}",
        ])
        .arg("--resolve")
        .arg(format!("{host}:{}:{}", addr.port(), addr.ip()))
        .arg(format!("https://{host}:{}{path}", addr.port()))
        .output()?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    code.parse().map_err(|_| {
        std::io::Error::other(format!(
            "curl https: {code:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// A self-signed P-256 certificate for `cn` and its key, written as `DIR/CN.pem` and
/// `DIR/CN.key`; valid for a day. Its only name is the CN (no subjectAltName).
pub fn self_signed(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    openssl_req(dir, cn, &[])
}

/// [`self_signed`] for `names`: the first is the CN, and all are its subjectAltName.
pub fn certificate_for(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let ext = format!("subjectAltName={}", san.join(","));
    openssl_req(dir, names[0], &["-addext", &ext])
}

/// [`certificate_for`], expired: valid for one day in 2020 (`openssl ca -selfsign` with
/// `-startdate`/`-enddate`, which `openssl req` lacks).
pub fn expired_certificate_for(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let sub = dir.join(format!("expired-{}", names[0]));
    std::fs::create_dir_all(&sub).expect("mkdir");
    let (cert, key, csr) = (
        sub.join("cert.pem"),
        sub.join("key.pem"),
        sub.join("req.csr"),
    );
    std::fs::write(sub.join("index.txt"), "").expect("index");
    std::fs::write(sub.join("serial"), "01\n").expect("serial");
    let cnf = sub.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = CA\n[CA]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n\
             serial = {d}/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n\
             unique_subject = no\n[p]\ncommonName = supplied\n",
            d = sub.display()
        ),
    )
    .expect("ca.cnf");
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run openssl");
        assert!(out.status.success(), "openssl: {out:?}");
    };
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", &format!("/CN={}", names[0])])
        .args(["-addext", &format!("subjectAltName={}", san.join(","))])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(Command::new("openssl")
        .args(["ca", "-batch", "-notext", "-selfsign", "-config"])
        .arg(&cnf)
        .arg("-keyfile")
        .arg(&key)
        .arg("-in")
        .arg(&csr)
        .arg("-out")
        .arg(&cert)
        .args([
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
        ]));
    (cert, key)
}

/// An X.509 v1 certificate for `/CN=cn` (`openssl x509 -req` with no extension file): it can
/// carry no subjectAltName, so browsers find no name in it.
pub fn v1_certificate(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{cn}-v1.pem")),
        dir.join(format!("{cn}-v1.key")),
    );
    let csr = dir.join(format!("{cn}-v1.csr"));
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run openssl");
        assert!(out.status.success(), "openssl: {out:?}");
    };
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", &format!("/CN={cn}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(&csr)
        .arg("-signkey")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// `openssl req -x509` for a P-256 key and `/CN=cn`, with `extra` arguments.
fn openssl_req(dir: &Path, cn: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .arg("-subj")
        .arg(format!("/CN={cn}"))
        .args(extra)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(out.status.success(), "openssl req: {out:?}");
    (cert, key)
}

/// The subject line (`subject=CN = a.test`) of the certificate the TLS server at `addr`
/// shows, for SNI `name` when given (`openssl s_client`).
pub fn tls_subject(addr: &str, name: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", addr]);
    if let Some(name) = name {
        cmd.args(["-servername", name]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no certificate from {addr}: {text}"))
        .to_string()
}

mod nginx;
pub use nginx::{alive, TestNginx, TestNginxBuilder};
mod backends;
pub use backends::{
    hanging_listener, test_venv, AcceptCloseBackend, AppServer, BadGatewayBackend, ClientLoop,
    CloseBackend, Flake, FlakyBackend, HangingListener, HttpBackend, SlowBackend, SseBackend,
    StatusBackend, UdpEcho, WebSocketBackend,
};
mod cli;
pub use cli::{finish, proxy_site, run_command, syn_sent_to, text, Run, SafeReload, BIN};
mod namespace;
pub use namespace::{
    fresh_machine, in_private_network, in_private_network_with_hosts, inside_private_network,
    namespaces_unavailable, NOT_FRESH,
};
mod dns;
pub use dns::DnsResponder;
mod site;
pub use site::{probe_result, ClientRun, ProxiedSite};
