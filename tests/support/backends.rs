//! Backends the tests point nginx at: real listeners on loopback or unix sockets.

use super::*;

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// How a backend answers one connection.
type Serve = Arc<dyn Fn(&mut dyn ReadWrite, &str) + Send + Sync>;

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
        Server::run_with(bound, Arc::new(serve), name)
    }

    fn run_with(bound: Bound, serve: Serve, name: String) -> Server {
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
                let (name, serve) = (name.clone(), serve.clone());
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

/// Read until the end of the request headers (or timeout/close); the bytes read.
fn read_request(c: &mut dyn ReadWrite) -> Vec<u8> {
    c.set_timeout(Duration::from_secs(2));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // A body too (a POST's), so closing after the answer is a clean FIN, not a reset.
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let length = end.and_then(|end| {
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let line = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))?;
        Some(end + line.trim().parse::<usize>().ok()?.min(64 * 1024))
    });
    while length.is_some_and(|want| buf.len() < want) {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
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

fn answer_502(c: &mut dyn ReadWrite, _name: &str) {
    read_request(c);
    let _ = write!(
        c,
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad"
    );
    let _ = c.flush();
}

/// Answer every request with the status in `name` (`"504"`), as the backend's own answer.
fn answer_status(c: &mut dyn ReadWrite, name: &str) {
    read_request(c);
    let _ = write!(
        c,
        "HTTP/1.1 {name} Status\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{name}"
    );
    let _ = c.flush();
}

fn close_without_answer(c: &mut dyn ReadWrite, _name: &str) {
    // Read the request first so the close is a clean FIN, not a reset.
    read_request(c);
}

/// Answer 200 with the name, after a pause longer than a short probe timeout.
fn answer_200_late(c: &mut dyn ReadWrite, name: &str) {
    read_request(c);
    std::thread::sleep(SlowBackend::DELAY);
    let _ = write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
    let _ = c.flush();
}

/// An app that speaks no WebSocket: 200 and its name to a plain request, its own 400 to a
/// WebSocket handshake (as Django or Rails answer one at a path that is not a socket).
fn answer_200_refusing_upgrades(c: &mut dyn ReadWrite, name: &str) {
    let req = read_request(c);
    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
    let (status, body) = match text.contains("upgrade: websocket") {
        true => ("400 Bad Request", "no websocket here"),
        false => ("200 OK", name),
    };
    let _ = write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = c.flush();
}

/// Answer the protocol probe's `OPTIONS *` as a healthy server would; close on anything else.
fn answer_probe_close_requests(c: &mut dyn ReadWrite, _name: &str) {
    if read_request(c).starts_with(b"OPTIONS * ") {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = c.flush();
    }
}

/// A WebSocket-only backend: `101 Switching Protocols` to a handshake (held open until the
/// peer closes or 2 s pass), and a close without a byte for any other request (the protocol
/// probe's `OPTIONS *` too), as WebSocket servers that speak nothing else do.
fn answer_websocket_only(c: &mut dyn ReadWrite, _name: &str) {
    let req = read_request(c);
    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
    if text.contains("upgrade: websocket") {
        switch_protocols(c);
    }
}

/// Answer a WebSocket handshake with `101 Switching Protocols` and hold the connection open
/// until the peer closes or 2 s pass.
fn switch_protocols(c: &mut dyn ReadWrite) {
    let _ = c.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    );
    let _ = c.flush();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 256];
    while std::time::Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// A Socket.IO server: the handshake of its clients (`?EIO=4&transport=websocket`) is
/// switched as [`answer_websocket_only`] does; any other request gets its own 400 ("Transport
/// unknown"), a handshake without that query too.
fn answer_socket_io(c: &mut dyn ReadWrite, _name: &str) {
    let req = read_request(c);
    let line = String::from_utf8_lossy(&req)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if line.contains("EIO=4") && line.contains("transport=websocket") {
        let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
        if text.contains("upgrade: websocket") {
            switch_protocols(c);
            return;
        }
    }
    let body = r#"{"code":0,"message":"Transport unknown"}"#;
    let _ = write!(
        c,
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = c.flush();
}

/// A Node app: its page (200, its name) to a plain request, `101 Switching Protocols` to a
/// WebSocket handshake on the same path (see [`answer_websocket_only`]).
fn answer_page_and_websocket(c: &mut dyn ReadWrite, name: &str) {
    let req = read_request(c);
    let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
    if text.contains("upgrade: websocket") {
        switch_protocols(c);
        return;
    }
    let _ = write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
    let _ = c.flush();
}

/// A backend that speaks only WebSocket (see [`answer_websocket_only`]).
pub struct WebSocketBackend {
    pub addr: SocketAddr,
    _server: Server,
}

impl WebSocketBackend {
    pub fn start(addr: SocketAddr) -> WebSocketBackend {
        let l = TcpListener::bind(addr).expect("bind WebSocket backend");
        WebSocketBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), answer_websocket_only, String::new()),
        }
    }

    /// A Node app on `addr` serving pages and WebSockets on every path (see
    /// [`answer_page_and_websocket`]).
    pub fn start_with_pages(addr: SocketAddr, name: &str) -> WebSocketBackend {
        let l = TcpListener::bind(addr).expect("bind Node backend");
        WebSocketBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), answer_page_and_websocket, name.to_string()),
        }
    }

    /// A Socket.IO server on `addr` (see [`answer_socket_io`]).
    pub fn start_socket_io(addr: SocketAddr) -> WebSocketBackend {
        let l = TcpListener::bind(addr).expect("bind Socket.IO backend");
        WebSocketBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), answer_socket_io, String::new()),
        }
    }
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

    /// On `addr`, answering a WebSocket handshake with its own 400 (see
    /// [`answer_200_refusing_upgrades`]).
    pub fn start_refusing_upgrades(addr: SocketAddr, name: &str) -> HttpBackend {
        let l = TcpListener::bind(addr).expect("bind backend");
        HttpBackend {
            addr: Some(l.local_addr().expect("local addr")),
            path: None,
            _server: Server::run(
                Bound::Tcp(l),
                answer_200_refusing_upgrades,
                name.to_string(),
            ),
        }
    }

    /// Connections accepted so far: which listener nginx really connected to.
    pub fn hits(&self) -> u32 {
        self._server.hits.load(Ordering::SeqCst)
    }

    /// Listen on `addr` and answer 200 after `delay`: a healthy but slow backend.
    pub fn start_slow(addr: SocketAddr, name: &str, delay: Duration) -> HttpBackend {
        let l = TcpListener::bind(addr).expect("bind backend");
        let addr = l.local_addr().expect("local addr");
        let serve: Serve = Arc::new(move |c: &mut dyn ReadWrite, name: &str| {
            std::thread::sleep(delay);
            answer_200(c, name)
        });
        HttpBackend {
            addr: Some(addr),
            path: None,
            _server: Server::run_with(Bound::Tcp(l), serve, name.to_string()),
        }
    }

    /// Listen on `addr` and answer 200 after as many milliseconds as `delay_ms` holds when
    /// the request comes: a healthy backend the test slows down when it says.
    pub fn start_delayed(addr: SocketAddr, name: &str, delay_ms: Arc<AtomicU64>) -> HttpBackend {
        let l = TcpListener::bind(addr).expect("bind backend");
        let addr = l.local_addr().expect("local addr");
        let serve: Serve = Arc::new(move |c: &mut dyn ReadWrite, name: &str| {
            read_request(c);
            std::thread::sleep(Duration::from_millis(delay_ms.load(Ordering::SeqCst)));
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                name.len()
            );
            let _ = c.flush();
        });
        HttpBackend {
            addr: Some(addr),
            path: None,
            _server: Server::run_with(Bound::Tcp(l), serve, name.to_string()),
        }
    }

    /// `IP:PORT` for a config (`proxy_pass http://{}`).
    pub fn host_port(&self) -> String {
        self.addr.map(|a| a.to_string()).unwrap_or_default()
    }
}

/// A backend that passes the probes (it answers the protocol probe's `OPTIONS *`) and closes
/// every real request without a word, like an application that crashes on each page: nginx
/// answers 502 (`upstream prematurely closed connection`), which only the verification after
/// the reload can see.
pub struct CloseBackend {
    pub addr: SocketAddr,
    _server: Server,
}

impl CloseBackend {
    pub fn start(addr: SocketAddr) -> CloseBackend {
        let l = TcpListener::bind(addr).expect("bind close backend");
        CloseBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), answer_probe_close_requests, String::new()),
        }
    }
}

/// A Server-Sent-Events backend: `200 text/event-stream` at once, then an event every 200 ms
/// for as long as the client reads (at most a minute), as a live feed does. The probe's
/// `OPTIONS *` gets a plain 204.
pub struct SseBackend {
    pub addr: SocketAddr,
    _server: Server,
}

impl SseBackend {
    pub fn start(addr: SocketAddr) -> SseBackend {
        SseBackend::start_as(addr, "text/event-stream")
    }

    /// The same endless body under another `Content-Type` (a streamed download, a long poll).
    pub fn start_as(addr: SocketAddr, content_type: &str) -> SseBackend {
        let l = TcpListener::bind(addr).expect("bind SSE backend");
        SseBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), answer_events, content_type.to_string()),
        }
    }
}

/// `content_type` comes as the server's name.
fn answer_events(c: &mut dyn ReadWrite, content_type: &str) {
    if read_request(c).starts_with(b"OPTIONS * ") {
        let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        return;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\n\
         Connection: close\r\n\r\n"
    );
    if c.write_all(head.as_bytes())
        .and_then(|_| c.flush())
        .is_err()
    {
        return;
    }
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < until {
        if c.write_all(b"data: tick\n\n")
            .and_then(|_| c.flush())
            .is_err()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A healthy backend that is slow: every answer (200 with its name) comes after
/// [`SlowBackend::DELAY`].
pub struct SlowBackend {
    pub addr: SocketAddr,
    _server: Server,
}

impl SlowBackend {
    pub const DELAY: Duration = Duration::from_millis(700);

    pub fn start(addr: SocketAddr, name: &str) -> SlowBackend {
        let l = TcpListener::bind(addr).expect("bind slow backend");
        SlowBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), answer_200_late, name.to_string()),
        }
    }
}

/// How a [`FlakyBackend`] fails the requests it fails.
#[derive(Debug, Clone, Copy)]
pub enum Flake {
    /// Close the connection unanswered: nginx answers 502 and logs "upstream prematurely
    /// closed connection".
    Close,
    /// Answer 200, after this long: one slow answer.
    Slow(Duration),
}

/// An HTTP backend that fails every `every`-th request it gets, counted (not by chance), and
/// answers the others 200 with its name: a flaky application. The protocol probe's
/// `OPTIONS *` and connections that send nothing are answered as a healthy server would and
/// not counted.
pub struct FlakyBackend {
    pub addr: SocketAddr,
    requests: Arc<AtomicU32>,
    _server: Server,
}

impl FlakyBackend {
    pub fn start(addr: SocketAddr, name: &str, every: u32, flake: Flake) -> FlakyBackend {
        let l = TcpListener::bind(addr).expect("bind flaky backend");
        let requests = Arc::new(AtomicU32::new(0));
        let counter = requests.clone();
        let serve: Serve = Arc::new(move |c: &mut dyn ReadWrite, name: &str| {
            let req = read_request(c);
            if req.starts_with(b"OPTIONS * ") {
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            if req.is_empty() {
                return;
            }
            let fails = (counter.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every);
            match flake {
                Flake::Close if fails => return,
                Flake::Slow(delay) if fails => std::thread::sleep(delay),
                _ => {}
            }
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                name.len()
            );
            let _ = c.flush();
        });
        FlakyBackend {
            addr: l.local_addr().expect("local addr"),
            requests,
            _server: Server::run_with(Bound::Tcp(l), serve, name.to_string()),
        }
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }

    /// `IP:PORT` for a config (`proxy_pass http://{}`).
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }
}

/// A backend that accepts every connection, reads what is sent and closes without a byte,
/// whatever the protocol: a connect probe passes, the protocol probe does not.
pub struct AcceptCloseBackend {
    pub addr: SocketAddr,
    _server: Server,
}

impl AcceptCloseBackend {
    pub fn start(addr: SocketAddr) -> AcceptCloseBackend {
        let l = TcpListener::bind(addr).expect("bind accept-and-close backend");
        AcceptCloseBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), close_without_answer, String::new()),
        }
    }
}

/// An HTTP backend that answers every request with its own `502 Bad Gateway`: every probe
/// that asks for a status line passes, yet nginx passes the 502 on to the client.
pub struct BadGatewayBackend {
    pub addr: SocketAddr,
    _server: Server,
}

impl BadGatewayBackend {
    pub fn start(addr: SocketAddr) -> BadGatewayBackend {
        let l = TcpListener::bind(addr).expect("bind 502 backend");
        BadGatewayBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), answer_502, String::new()),
        }
    }
}

/// An HTTP backend that answers every request with one status of its own (`504` from an
/// application behind it that timed out, say): nginx passes it on and logs nothing.
pub struct StatusBackend {
    pub addr: SocketAddr,
    _server: Server,
}

impl StatusBackend {
    pub fn start(addr: SocketAddr, status: u16) -> StatusBackend {
        let l = TcpListener::bind(addr).expect("bind status backend");
        StatusBackend {
            addr: l.local_addr().expect("local addr"),
            _server: Server::run(Bound::Tcp(l), answer_status, status.to_string()),
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

/// The test venv (`scripts/test.sh` makes it: gunicorn, grpcio): `$SAFE_RELOAD_TEST_VENV`, else
/// `target/test-venv`.
pub fn test_venv() -> PathBuf {
    std::env::var_os("SAFE_RELOAD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"))
}

/// A real application server the test starts in a private temporary directory: php-fpm,
/// gunicorn, uWSGI, a TLS (HTTPS) server, a gRPC server. Stopped by PID on drop (SIGTERM, a
/// grace period, SIGKILL), always reaped.
pub struct AppServer {
    /// Where it listens (a unix one: `0.0.0.0:0`, see `path`).
    pub addr: SocketAddr,
    /// The socket path of a unix listener.
    pub path: Option<PathBuf>,
    child: Child,
    dir: tempfile::TempDir,
}

/// A WSGI application answering 200 with its name, for gunicorn and uWSGI.
const WSGI_APP: &str = "def app(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'wsgi']\n";

/// An HTTPS server on Python's `ssl`: 200 to every request; logs `SNI NAME` for each
/// handshake. The handshake happens in the request's thread, so a client that stops
/// mid-handshake blocks nobody.
const TLS_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.send_response(200); self.send_header("Content-Length", "3"); self.end_headers()
        self.wfile.write(b"tls")
    do_GET = do_HEAD = do_OPTIONS = answer
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
def sni(sock, name, context):
    print("SNI", name, file=sys.stderr, flush=True)
ctx.sni_callback = sni
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
srv.serve_forever()
"#;

/// A gRPC server (grpcio) with no services: it speaks HTTP/2 and answers every call
/// UNIMPLEMENTED, which is all a probe needs.
const GRPC_SERVER: &str = r#"
import sys
from concurrent import futures
import grpc
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_insecure_port(sys.argv[1])
server.start()
server.wait_for_termination()
"#;

impl AppServer {
    fn spawn(cmd: &mut Command, addr: SocketAddr, dir: tempfile::TempDir, what: &str) -> AppServer {
        let ready = move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        AppServer::spawn_until(cmd, addr, None, dir, what, ready)
    }

    fn spawn_until(
        cmd: &mut Command,
        addr: SocketAddr,
        path: Option<PathBuf>,
        dir: tempfile::TempDir,
        what: &str,
        ready: impl FnMut() -> bool,
    ) -> AppServer {
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e} (scripts/test.sh installs it)"));
        let server = AppServer {
            addr,
            path,
            child,
            dir,
        };
        let up = wait_for(Duration::from_secs(20), ready);
        assert!(up, "{what} did not start listening: {}", server.log());
        server
    }

    /// What the server wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Debian's php-fpm with one static worker on `addr`.
    pub fn php_fpm(addr: SocketAddr) -> AppServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("php-fpm.conf");
        let text = format!(
            "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\
             [www]\nuser = nobody\ngroup = nogroup\nlisten = {addr}\npm = static\npm.max_children = 1\n",
            d = dir.path().display()
        );
        std::fs::write(&conf, text).expect("php-fpm.conf");
        let bin = std::fs::read_dir("/usr/sbin")
            .ok()
            .and_then(|d| {
                d.flatten().map(|e| e.path()).find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("php-fpm"))
                })
            })
            .expect("php-fpm in /usr/sbin (scripts/test.sh installs it)");
        let mut cmd = Command::new(bin);
        cmd.arg("-n")
            .arg("-F")
            .arg("-R")
            .arg("-y")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path());
        AppServer::spawn(&mut cmd, addr, dir, "php-fpm")
    }

    /// gunicorn (from the test venv) serving a WSGI app on `addr`.
    pub fn gunicorn(addr: SocketAddr) -> AppServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.py"), WSGI_APP).expect("app.py");
        let mut cmd = Command::new(test_venv().join("bin/gunicorn"));
        cmd.arg("--chdir").arg(dir.path()).args([
            "--workers",
            "1",
            "--bind",
            &addr.to_string(),
            "app:app",
        ]);
        AppServer::spawn(&mut cmd, addr, dir, "gunicorn")
    }

    /// Debian's uWSGI with its python3 plugin serving a WSGI app in the uwsgi protocol on
    /// `addr` (`--socket`), without the ping plugin, as Debian starts it.
    pub fn uwsgi(addr: SocketAddr) -> AppServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.py"), WSGI_APP).expect("app.py");
        let mut cmd = Command::new("uwsgi");
        cmd.args([
            "--plugins",
            "python3",
            "--socket",
            &addr.to_string(),
            "--chdir",
        ])
        .arg(dir.path())
        .args([
            "--wsgi-file",
            "app.py",
            "--callable",
            "app",
            "--processes",
            "1",
        ]);
        AppServer::spawn(
            &mut cmd,
            addr,
            dir,
            "uwsgi (uwsgi-core, uwsgi-plugin-python3)",
        )
    }

    /// The same on a unix socket at `path` (mode 0666, for nginx's workers).
    pub fn uwsgi_unix(path: &Path) -> AppServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("app.py"), WSGI_APP).expect("app.py");
        let mut cmd = Command::new("uwsgi");
        cmd.args(["--plugins", "python3", "--chmod-socket=666", "--socket"])
            .arg(path)
            .arg("--chdir")
            .arg(dir.path())
            .args([
                "--wsgi-file",
                "app.py",
                "--callable",
                "app",
                "--processes",
                "1",
            ]);
        let p = path.to_path_buf();
        let ready = move || UnixStream::connect(&p).is_ok();
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let what = "uwsgi (uwsgi-core, uwsgi-plugin-python3)";
        AppServer::spawn_until(&mut cmd, unspecified, Some(path.into()), dir, what, ready)
    }

    /// An HTTPS server with a fresh self-signed certificate for `tls.test`.
    pub fn tls(addr: SocketAddr) -> AppServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = super::self_signed(dir.path(), "tls.test");
        std::fs::write(dir.path().join("tls.py"), TLS_SERVER).expect("tls.py");
        let mut cmd = Command::new("python3");
        cmd.arg(dir.path().join("tls.py"))
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(&cert)
            .arg(&key);
        AppServer::spawn(&mut cmd, addr, dir, "the TLS test server")
    }

    /// Python's `http.server` on `addr`: an HTTP server that answers a request line it cannot
    /// read HTTP/0.9-style, with an HTML error page and no status line.
    pub fn python_http(addr: SocketAddr) -> AppServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "http.server", "--bind"])
            .arg(addr.ip().to_string())
            .arg("--directory")
            .arg(dir.path())
            .arg(addr.port().to_string());
        AppServer::spawn(&mut cmd, addr, dir, "python3 -m http.server")
    }

    /// A gRPC server (grpcio from the test venv) on `addr`, plaintext HTTP/2.
    pub fn grpc(addr: SocketAddr) -> AppServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("grpc_server.py"), GRPC_SERVER).expect("grpc_server.py");
        let mut cmd = Command::new(test_venv().join("bin/python"));
        cmd.arg(dir.path().join("grpc_server.py"))
            .arg(addr.to_string());
        AppServer::spawn(&mut cmd, addr, dir, "the gRPC test server (grpcio)")
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let exited = wait_for(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A UDP server answering each datagram with `echo:` and the datagram (a DNS or syslog
/// backend of a stream `listen ... udp`); it listens on TCP nowhere.
pub struct UdpEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Bind `addr` (port 0 picks a free port).
    pub fn start(addr: SocketAddr) -> UdpEcho {
        let socket = std::net::UdpSocket::bind(addr).expect("bind the UDP backend");
        let addr = socket.local_addr().expect("local addr");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&[b"echo:", &buf[..n]].concat(), from);
                }
            }
        });
        UdpEcho {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client making requests through nginx in a loop, each on a fresh connection, until
/// stopped: what a site's visitors see during a run.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Result<u16, String>>>>,
}

impl ClientLoop {
    /// Start requesting `GET path` with `Host: host` from `addr`.
    pub fn start(addr: SocketAddr, host: &str, path: &str) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (host, path) = (host.to_string(), path.to_string());
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                seen.push(
                    super::http_get(addr, &host, &path)
                        .map(|(status, _)| status)
                        .map_err(|e| e.to_string()),
                );
            }
            seen
        });
        ClientLoop {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop and return every answer: a status, or why there was none.
    pub fn finish(mut self) -> Vec<Result<u16, String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ClientLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
