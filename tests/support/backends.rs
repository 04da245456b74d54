//! Backends the tests point nginx at: real listeners on loopback or unix sockets.

use super::*;

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Accept loop shared by the backends; `serve` gets each connection on its own thread.
struct Server {
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    hits: Arc<AtomicU32>,
    wake: Box<dyn Fn() + Send>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn run(bound: Bound, serve: fn(&mut dyn ReadWrite, &str), name: String) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let wake: Box<dyn Fn() + Send> = match &bound {
            Bound::Tcp(l) => {
                let addr = l.local_addr().expect("local addr");
                Box::new(move || drop(TcpStream::connect_timeout(&addr, Duration::from_secs(1))))
            }
            Bound::Unix(l) => {
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Path::to_path_buf));
                Box::new(move || {
                    if let Some(p) = &path {
                        drop(UnixStream::connect(p));
                    }
                })
            }
        };
        let thread = std::thread::spawn(move || loop {
            let conn: Option<Box<dyn ReadWrite>> = match &bound {
                Bound::Tcp(l) => l
                    .accept()
                    .ok()
                    .map(|(s, _)| Box::new(s) as Box<dyn ReadWrite>),
                Bound::Unix(l) => l
                    .accept()
                    .ok()
                    .map(|(s, _)| Box::new(s) as Box<dyn ReadWrite>),
            };
            if flag.load(Ordering::SeqCst) {
                return;
            }
            if let Some(mut c) = conn {
                counter.fetch_add(1, Ordering::SeqCst);
                let name = name.clone();
                std::thread::spawn(move || serve(&mut *c, &name));
            }
        });
        Server {
            stop,
            hits,
            wake,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        (self.wake)();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection of either kind.
pub trait ReadWrite: Read + Write + Send {
    fn set_timeout(&self, t: Duration);
}
impl ReadWrite for TcpStream {
    fn set_timeout(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
    }
}
impl ReadWrite for UnixStream {
    fn set_timeout(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
    }
}

/// Read until the end of the request headers (or timeout/close).
fn read_request(c: &mut dyn ReadWrite) {
    c.set_timeout(Duration::from_secs(2));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn answer_200(c: &mut dyn ReadWrite, name: &str) {
    read_request(c);
    let _ = write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
    let _ = c.flush();
}

fn close_without_answer(c: &mut dyn ReadWrite, _name: &str) {
    // Read the request first so the close is a clean FIN, not a reset.
    read_request(c);
}

/// An HTTP backend answering every request with 200 and its name as the body.
pub struct HttpBackend {
    /// Where it listens (TCP backends; the port is the real one when started on port 0).
    pub addr: Option<SocketAddr>,
    /// The socket path (unix backends).
    pub path: Option<PathBuf>,
    _server: Server,
}

impl HttpBackend {
    /// Listen on `addr` (port 0 picks a free port).
    pub fn start(addr: SocketAddr, name: &str) -> HttpBackend {
        let l = TcpListener::bind(addr).expect("bind backend");
        let addr = l.local_addr().expect("local addr");
        HttpBackend {
            addr: Some(addr),
            path: None,
            _server: Server::run(Bound::Tcp(l), answer_200, name.to_string()),
        }
    }

    /// Listen on a unix socket at `path` (world-connectable, like a typical app socket).
    pub fn start_unix(path: &Path, name: &str) -> HttpBackend {
        let l = UnixListener::bind(path).expect("bind unix backend");
        HttpBackend {
            addr: None,
            path: Some(path.to_path_buf()),
            _server: Server::run(Bound::Unix(l), answer_200, name.to_string()),
        }
    }

    /// Connections accepted so far: which listener nginx really connected to.
    pub fn hits(&self) -> u32 {
        self._server.hits.load(Ordering::SeqCst)
    }

    /// `IP:PORT` for a config (`proxy_pass http://{}`).
    pub fn host_port(&self) -> String {
        self.addr.map(|a| a.to_string()).unwrap_or_default()
    }
}

/// A backend that accepts, reads the request and closes without answering: nginx answers 502
/// (`upstream prematurely closed connection`), though a connect probe succeeds.
pub struct CloseBackend {
    pub addr: SocketAddr,
    _server: Server,
}

impl CloseBackend {
    pub fn start(addr: SocketAddr) -> CloseBackend {
        let l = TcpListener::bind(addr).expect("bind close backend");
        CloseBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), close_without_answer, String::new()),
        }
    }
}

/// A listener whose accept queue is full: further connects neither succeed nor get refused,
/// they hang until the caller's timeout (the loopback way to make a connect time out).
pub struct HangingListener {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

/// Start a [`HangingListener`] on `ip` (backlog 0, the queue filled by connections never
/// accepted).
pub fn hanging_listener(ip: IpAddr) -> HangingListener {
    use std::os::fd::FromRawFd;
    let IpAddr::V4(v4) = ip else {
        panic!("hanging_listener takes an IPv4 loopback address");
    };
    // SAFETY: plain socket syscalls on a fresh fd we own; std takes ownership after listen().
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket()");
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(v4).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len),
            0,
            "bind()"
        );
        assert_eq!(libc::listen(fd, 0), 0, "listen()");
        TcpListener::from_raw_fd(fd)
    };
    let addr = listener.local_addr().expect("local addr");
    let mut fillers = Vec::new();
    // Linux queues backlog+1 connections; fill until a connect no longer completes at once.
    while fillers.len() < 4 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    HangingListener {
        addr,
        _listener: listener,
        _fillers: fillers,
    }
}

impl Drop for HangingListener {
    fn drop(&mut self) {
        for f in &self._fillers {
            let _ = f.shutdown(Shutdown::Both);
        }
    }
}
