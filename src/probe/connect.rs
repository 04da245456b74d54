//! The probes themselves: one non-blocking `connect(2)` per address, then the protocol
//! exchange of `handshake` on the same socket, all in flight at once (up to a window) and
//! waited on together with `poll(2)`.
//!
//! Waiting on sockets instead of threads makes the total time about one timeout however many
//! targets time out: a thread pool of N would take one timeout per N hung targets. Unix sockets
//! are connected non-blocking too because that is what nginx does: a full accept queue gives
//! nginx `EAGAIN` and an immediate 502, not a wait.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::handshake::{Protocol, Reply, MAX_REPLY};
use super::Status;
use std::net::SocketAddr;

/// One address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One probe: connect to the endpoint, then run the protocol exchange, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub endpoint: Endpoint,
    pub protocol: Option<Protocol>,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// `111: Connection refused`, as nginx prints errno in its error log.
    pub errno: Option<String>,
    pub elapsed: Duration,
    /// The protocol exchange after a connect that succeeded: the last exchange tried and its
    /// reply (`Incomplete` when the time ran out).
    pub exchange: Option<(Protocol, Reply)>,
}

/// Where a probe is.
enum Phase {
    Connecting,
    Sending { hello: Vec<u8>, sent: usize },
    Reading { buf: Vec<u8> },
}

struct Pending<'a> {
    index: usize,
    socket: Socket,
    started: Instant,
    probe: &'a Probe,
    /// The exchange under way: the probe's own, or one tried after the server closed on it.
    protocol: Option<Protocol>,
    phase: Phase,
    /// Set once the server closed on the probe's own exchange.
    identify: Option<Identify>,
}

/// Probes handed to one lane before a second lane is worth a thread.
const LANE_MIN: usize = 256;
/// Most lanes: starting connects is what costs CPU, and more threads than cores do not help.
const LANES_MAX: usize = 4;

/// Run every probe, at most `window` at a time, each for at most `timeout` (the connect and
/// the exchange together). Results are in the order of `probes`.
///
/// Large runs are split into interleaved lanes on a few threads, so that a hung target late in
/// the list starts its timeout early and the total stays near one timeout.
pub fn probe_endpoints(probes: &[Probe], timeout: Duration, window: usize) -> Vec<Outcome> {
    let window = window.clamp(1, fd_budget());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lanes = (probes.len() / LANE_MIN).clamp(1, cores.min(LANES_MAX));
    let per_lane = (window / lanes).max(1);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; probes.len()];
    let finished: Vec<Vec<(usize, Outcome)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let mine: Vec<(usize, &Probe)> = probes
                    .iter()
                    .enumerate()
                    .skip(lane)
                    .step_by(lanes)
                    .collect();
                scope.spawn(move || run_lane(&mine, timeout, per_lane))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (index, out) in finished.into_iter().flatten() {
        if let Some(slot) = outcomes.get_mut(index) {
            *slot = Some(out);
        }
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or(Outcome {
                status: Status::Error,
                errno: Some("the probe did not run".into()),
                elapsed: Duration::ZERO,
                exchange: None,
            })
        })
        .collect()
}

/// One poll loop over its share of the probes.
fn run_lane(probes: &[(usize, &Probe)], timeout: Duration, window: usize) -> Vec<(usize, Outcome)> {
    let mut done = Vec::with_capacity(probes.len());
    let mut pending: Vec<Pending> = Vec::new();
    let mut rest = probes.iter();
    let mut exhausted = false;
    while !exhausted || !pending.is_empty() {
        while pending.len() < window {
            let Some(&(index, probe)) = rest.next() else {
                exhausted = true;
                break;
            };
            let started = Instant::now();
            let protocol = probe.protocol.clone();
            if let Some(out) = begin(index, probe, protocol, started, &mut pending) {
                done.push((index, out));
            }
        }
        if !pending.is_empty() {
            done.extend(wait(&mut pending, timeout));
        }
    }
    done
}

/// Start the connect of `probe` for the exchange `protocol`: pending, or already finished.
fn begin<'a>(
    index: usize,
    probe: &'a Probe,
    protocol: Option<Protocol>,
    started: Instant,
    pending: &mut Vec<Pending<'a>>,
) -> Option<Outcome> {
    let (socket, phase) = match start(&probe.endpoint) {
        Started::Done(status, errno) => return Some(outcome(status, errno, started, None)),
        Started::Pending(socket) => (socket, Phase::Connecting),
        Started::Connected(socket) => match &protocol {
            None => return Some(outcome(Status::Ok, None, started, None)),
            Some(p) => (socket, sending(p)),
        },
    };
    pending.push(Pending {
        index,
        socket,
        started,
        probe,
        protocol,
        phase,
        identify: None,
    });
    None
}

fn sending(p: &Protocol) -> Phase {
    Phase::Sending {
        hello: p.hello(),
        sent: 0,
    }
}

enum Started {
    Done(Status, Option<String>),
    Pending(Socket),
    /// Connected at once (unix sockets): the exchange, if any, starts now.
    Connected(Socket),
}

fn start(endpoint: &Endpoint) -> Started {
    if let Endpoint::Unix(path) = endpoint {
        if let Some((status, errno)) = unix_precheck(path) {
            return Started::Done(status, errno);
        }
    }
    let (domain, addr) = match endpoint {
        Endpoint::Tcp(sa) => (Domain::for_address(*sa), SockAddr::from(*sa)),
        Endpoint::Unix(path) => match SockAddr::unix(path) {
            Ok(a) => (Domain::UNIX, a),
            Err(e) => return Started::Done(Status::Error, Some(errno_text(&e))),
        },
    };
    let socket = match Socket::new(domain, Type::STREAM.nonblocking().cloexec(), None) {
        Ok(s) => s,
        Err(e) => return Started::Done(Status::Error, Some(errno_text(&e))),
    };
    match socket.connect(&addr) {
        Ok(()) if connected_to_itself(&socket) => {
            let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
            Started::Done(Status::Refused, Some(errno_text(&e)))
        }
        Ok(()) => Started::Connected(socket),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Started::Pending(socket),
        Err(e) => {
            let unix = matches!(endpoint, Endpoint::Unix(_));
            Started::Done(classify(&e, unix), Some(errno_text(&e)))
        }
    }
}

/// A TCP connect to a loopback port nothing listens on that the kernel gave the same port as
/// its source (the port is in the ephemeral range): the socket meets itself (a simultaneous
/// open), and the connect succeeds with no listener at all. nginx's connect would be refused.
fn connected_to_itself(socket: &Socket) -> bool {
    let (Ok(local), Ok(peer)) = (socket.local_addr(), socket.peer_addr()) else {
        return false;
    };
    local.as_socket().is_some() && local.as_socket() == peer.as_socket()
}

/// A unix path that is missing or not a socket fails before any connect: `connect(2)` would
/// only say "refused" for a regular file, which hides the real problem.
fn unix_precheck(path: &Path) -> Option<(Status, Option<String>)> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => None,
        Ok(_) => Some((Status::NotASocket, None)),
        Err(e) => Some((classify(&e, true), Some(errno_text(&e)))),
    }
}

/// Wait until at least one pending probe can move or the earliest deadline passes; return the
/// finished ones and keep the rest.
fn wait<'a>(pending: &mut Vec<Pending<'a>>, timeout: Duration) -> Vec<(usize, Outcome)> {
    let now = Instant::now();
    let earliest = pending
        .iter()
        .map(|p| (p.started + timeout).saturating_duration_since(now))
        .min()
        .unwrap_or(Duration::ZERO);
    let mut fds: Vec<libc::pollfd> = pending
        .iter()
        .map(|p| libc::pollfd {
            fd: p.socket.as_raw_fd(),
            events: match p.phase {
                Phase::Reading { .. } => libc::POLLIN,
                _ => libc::POLLOUT,
            },
            revents: 0,
        })
        .collect();
    let ms = earliest.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs whose
    // descriptors stay open (owned by `pending`) for the duration of the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms.max(1)) };
    let polled = rc >= 0;
    let mut done = Vec::new();
    let mut keep = Vec::with_capacity(pending.len());
    for (mut p, fd) in pending.drain(..).zip(fds) {
        if polled && fd.revents != 0 {
            match step(&mut p) {
                Step::Continue => keep.push(p),
                Step::Done(out) => match p.identify.take() {
                    None => done.push((p.index, out)),
                    Some(id) => match id.heard(out) {
                        Ok(out) => done.push((p.index, out)),
                        Err(id) => next_exchange(p, id, &mut done, &mut keep),
                    },
                },
                Step::Closed(errno) => {
                    let id = match p.identify.take() {
                        Some(id) => id,
                        None => match p.protocol.as_ref() {
                            None => {
                                done.push((
                                    p.index,
                                    outcome(Status::Closed, errno, p.started, None),
                                ));
                                continue;
                            }
                            Some(pr) => Identify::after(pr.clone(), errno),
                        },
                    };
                    next_exchange(p, id, &mut done, &mut keep);
                }
            }
        } else if p.started.elapsed() >= timeout {
            let out = match (p.identify, p.phase, p.protocol) {
                (Some(id), ..) => id.closed(p.started),
                (None, Phase::Connecting, _) | (None, _, None) => {
                    outcome(Status::Timeout, None, p.started, None)
                }
                (None, _, Some(pr)) => outcome(
                    Status::NoReply,
                    None,
                    p.started,
                    Some((pr, Reply::Incomplete)),
                ),
            };
            done.push((p.index, out));
        } else {
            keep.push(p);
        }
    }
    *pending = keep;
    done
}

/// After the server closed on the probe's exchange: the exchanges left to try on fresh
/// connections, to tell what it does speak (an HTTP probe to php-fpm is closed at once; a
/// FastCGI one is answered), or, for a protocol with a second way in, that way first.
struct Identify {
    /// The exchange the directive asked for, which the server closed on.
    original: Protocol,
    /// Still to try, in order; `original` itself may come back as its own second way in.
    rest: Vec<Protocol>,
    errno: Option<String>,
}

impl Identify {
    fn after(original: Protocol, errno: Option<String>) -> Identify {
        let mut rest = original.identify_with();
        rest.reverse();
        if let Some(again) = original.after_close() {
            rest.push(again);
        }
        Identify {
            original,
            rest,
            errno,
        }
    }

    /// The outcome once an exchange answered: the original's own second way in passes;
    /// another protocol's answer says what the server speaks. `Err` means keep trying.
    fn heard(self, out: Outcome) -> Result<Outcome, Identify> {
        let Some((tried, reply)) = &out.exchange else {
            return Err(self);
        };
        let kind = self.original.kind();
        let speaks = match reply {
            Reply::Answered(_) if tried.kind() == kind => return Ok(out),
            Reply::Answered(text) => Reply::Speaks(tried.kind(), text.clone()),
            Reply::Speaks(k, text) if *k != kind => Reply::Speaks(*k, text.clone()),
            Reply::TlsAlert { description, .. } if kind != super::handshake::Kind::Tls => {
                Reply::Speaks(
                    super::handshake::Kind::Tls,
                    super::handshake::alert_text(*description),
                )
            }
            _ => return Err(self),
        };
        let exchange = Some((self.original, speaks));
        Ok(Outcome {
            status: Status::WrongProtocol,
            errno: None,
            elapsed: out.elapsed,
            exchange,
        })
    }

    /// Nothing answered: the server accepts and closes.
    fn closed(self, started: Instant) -> Outcome {
        let exchange = Some((self.original, Reply::Closed));
        outcome(Status::Closed, self.errno, started, exchange)
    }
}

/// Start the next exchange of `id` on a fresh connection, or finish as closed.
fn next_exchange<'a>(
    p: Pending<'a>,
    mut id: Identify,
    done: &mut Vec<(usize, Outcome)>,
    keep: &mut Vec<Pending<'a>>,
) {
    let Some(next) = id.rest.pop() else {
        done.push((p.index, id.closed(p.started)));
        return;
    };
    let mut again = Vec::new();
    match begin(p.index, p.probe, Some(next), p.started, &mut again) {
        Some(out) => match id.heard(out) {
            Ok(out) => done.push((p.index, out)),
            Err(id) => done.push((p.index, id.closed(p.started))),
        },
        None => keep.extend(again.into_iter().map(|mut q| {
            q.identify = Some(Identify {
                original: id.original.clone(),
                rest: std::mem::take(&mut id.rest),
                errno: id.errno.clone(),
            });
            q
        })),
    }
}

enum Step {
    Continue,
    Done(Outcome),
    /// The server closed (or reset) the connection before any reply.
    Closed(Option<String>),
}

/// Move one probe on after `poll` said its socket is ready.
fn step(p: &mut Pending<'_>) -> Step {
    loop {
        match &mut p.phase {
            Phase::Connecting => {
                match p.socket.take_error() {
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => {
                        let status = classify(&e, false);
                        return Step::Done(outcome(status, Some(errno_text(&e)), p.started, None));
                    }
                }
                if connected_to_itself(&p.socket) {
                    let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
                    return Step::Done(outcome(
                        Status::Refused,
                        Some(errno_text(&e)),
                        p.started,
                        None,
                    ));
                }
                match &p.protocol {
                    None => return Step::Done(outcome(Status::Ok, None, p.started, None)),
                    Some(pr) => p.phase = sending(pr),
                }
            }
            // MSG_NOSIGNAL: a backend that closed early must not kill us with SIGPIPE.
            Phase::Sending { hello, sent } => match p
                .socket
                .send_with_flags(&hello[*sent..], libc::MSG_NOSIGNAL)
            {
                Ok(n) => {
                    *sent += n;
                    if *sent >= hello.len() {
                        p.phase = Phase::Reading { buf: Vec::new() };
                        return Step::Continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Step::Closed(Some(errno_text(&e))),
            },
            Phase::Reading { buf } => {
                let mut chunk = [0u8; 2048];
                let Some(protocol) = &p.protocol else {
                    return Step::Done(outcome(Status::Ok, None, p.started, None));
                };
                let reply = match (&p.socket).read(&mut chunk) {
                    Ok(0) if buf.is_empty() => return Step::Closed(None),
                    Ok(0) => protocol.read_closed(buf),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        match protocol.read_reply(buf) {
                            Reply::Incomplete if buf.len() < MAX_REPLY => continue,
                            Reply::Incomplete => protocol.read_closed(buf),
                            r => r,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if buf.is_empty() => return Step::Closed(Some(errno_text(&e))),
                    Err(_) => protocol.read_closed(buf),
                };
                let status = reply.status();
                let exchange = Some((protocol.clone(), reply));
                return Step::Done(outcome(status, None, p.started, exchange));
            }
        }
    }
}

fn outcome(
    status: Status,
    errno: Option<String>,
    started: Instant,
    exchange: Option<(Protocol, Reply)>,
) -> Outcome {
    Outcome {
        status,
        errno,
        elapsed: started.elapsed(),
        exchange,
    }
}

/// Map an errno to a probe status. `unix` matters for `EAGAIN`: a unix listener whose accept
/// queue is full refuses a non-blocking connect at once, and nginx answers 502 for it.
pub fn classify(err: &io::Error, unix: bool) -> Status {
    match err.raw_os_error() {
        Some(libc::ECONNREFUSED) => Status::Refused,
        Some(libc::ETIMEDOUT) => Status::Timeout,
        Some(libc::ENOENT) | Some(libc::ENOTDIR) if unix => Status::NoSuchSocket,
        Some(libc::EACCES) | Some(libc::EPERM) => Status::PermissionDenied,
        _ => Status::Error,
    }
}

/// `111: Connection refused`: the form nginx writes in `connect() ... failed (111: ...)`.
pub fn errno_text(err: &io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => {
            let plain = text.split(" (os error").next().unwrap_or(&text);
            format!("{code}: {plain}")
        }
        None => text,
    }
}

/// How many sockets may be open at once: half the soft `RLIMIT_NOFILE`, leaving the rest for
/// whatever else the process holds.
fn fd_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through a valid pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return 256;
    }
    usize::try_from(lim.rlim_cur / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket bound to a port and connected to that same address meets itself: the connect
    /// succeeds though nothing listens. Such a probe is a refusal, as nginx's connect is.
    #[test]
    fn a_connect_that_meets_itself_is_told_apart() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&SockAddr::from(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))))
            .expect("bind");
        let me = socket.local_addr().expect("local");
        socket
            .connect(&me)
            .expect("a simultaneous open with itself");
        assert!(connected_to_itself(&socket));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let other = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        other
            .connect(&SockAddr::from(listener.local_addr().expect("addr")))
            .expect("connect");
        assert!(!connected_to_itself(&other));
    }
}
