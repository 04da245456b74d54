//! Small threaded HTTP backends on loopback for the reload benchmark: each listener answers
//! every request with `200 ok` and closes, on a few threads so nginx's health requests never
//! queue. A "bad" backend accepts and closes at once: a connect probe passes, a request through
//! nginx gets `502`, which is what the rollback measurement needs.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::thread;

const THREADS_PER_LISTENER: usize = 3;

/// Start `n` good backends on `ip`, ports chosen by the kernel; they live as long as the process.
pub fn start_good(ip: IpAddr, n: usize) -> std::io::Result<Vec<SocketAddr>> {
    (0..n).map(|_| start(ip, serve_ok)).collect()
}

/// Start one backend that accepts and closes without answering.
pub fn start_bad(ip: IpAddr) -> std::io::Result<SocketAddr> {
    start(ip, drop)
}

/// Start one backend that answers every request with its own `502 Bad Gateway`.
pub fn start_502(ip: IpAddr) -> std::io::Result<SocketAddr> {
    start(ip, serve_502)
}

fn start(ip: IpAddr, handle: fn(TcpStream)) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
    let addr = listener.local_addr()?;
    for _ in 0..THREADS_PER_LISTENER {
        let l = listener.try_clone()?;
        thread::spawn(move || {
            for conn in l.incoming().flatten() {
                handle(conn);
            }
        });
    }
    Ok(addr)
}

fn read_head(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

fn serve_502(mut conn: TcpStream) {
    if read_head(&mut conn) {
        let _ = conn.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad",
        );
    }
}

fn serve_ok(mut conn: TcpStream) {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    // Read the request head; a client that never finishes it is dropped on EOF or error.
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}
