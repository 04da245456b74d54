//! What a site's visitors see while a bad change goes through `safe-reload -y`: a client
//! requesting through nginx (a fresh connection each, as a browser opening a page would),
//! counting every answer that is not 200 and the time from the first such answer to the last.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the loop saw.
pub struct Seen {
    pub requests: usize,
    pub bad: usize,
    pub window: Duration,
}

pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Seen>>,
}

fn status(addr: SocketAddr, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

impl ClientLoop {
    pub fn start(addr: SocketAddr, host: &str) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let host = host.to_string();
        let thread = std::thread::spawn(move || {
            let mut seen = Seen {
                requests: 0,
                bad: 0,
                window: Duration::ZERO,
            };
            let mut first = None;
            while !flag.load(Ordering::SeqCst) {
                seen.requests += 1;
                if status(addr, &host) != Some(200) {
                    seen.bad += 1;
                    seen.window = first.get_or_insert_with(Instant::now).elapsed();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        });
        ClientLoop {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(Seen {
                requests: 0,
                bad: 0,
                window: Duration::ZERO,
            })
    }
}
