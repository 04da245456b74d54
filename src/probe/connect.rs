//! The connect probes themselves: one non-blocking `connect(2)` per address, all in flight at
//! once (up to a window) and waited on together with `poll(2)`.
//!
//! Waiting on sockets instead of threads makes the total time about one timeout however many
//! targets time out: a thread pool of N would take one timeout per N hung targets. Unix sockets
//! are connected non-blocking too because that is what nginx does: a full accept queue gives
//! nginx `EAGAIN` and an immediate 502, not a wait.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::Status;
use std::net::SocketAddr;

/// One address to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What one connect attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// `111: Connection refused`, as nginx prints errno in its error log.
    pub errno: Option<String>,
    pub elapsed: Duration,
}

struct Pending {
    index: usize,
    socket: Socket,
    started: Instant,
}

/// Endpoints handed to one lane before a second lane is worth a thread.
const LANE_MIN: usize = 256;
/// Most lanes: starting connects is what costs CPU, and more threads than cores do not help.
const LANES_MAX: usize = 4;

/// Connect to every endpoint, at most `window` at a time, each for at most `timeout`.
/// Results are in the order of `endpoints`.
///
/// Large runs are split into interleaved lanes on a few threads, so that a hung target late in
/// the list starts its timeout early and the total stays near one timeout.
pub fn probe_endpoints(endpoints: &[Endpoint], timeout: Duration, window: usize) -> Vec<Outcome> {
    let window = window.clamp(1, fd_budget());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lanes = (endpoints.len() / LANE_MIN).clamp(1, cores.min(LANES_MAX));
    let per_lane = (window / lanes).max(1);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; endpoints.len()];
    let finished: Vec<Vec<(usize, Outcome)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..lanes)
            .map(|lane| {
                let mine: Vec<(usize, &Endpoint)> = endpoints
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
            })
        })
        .collect()
}

/// One poll loop over its share of the endpoints.
fn run_lane(
    endpoints: &[(usize, &Endpoint)],
    timeout: Duration,
    window: usize,
) -> Vec<(usize, Outcome)> {
    let mut done = Vec::with_capacity(endpoints.len());
    let mut pending: Vec<Pending> = Vec::new();
    let mut rest = endpoints.iter();
    let mut exhausted = false;
    while !exhausted || !pending.is_empty() {
        while pending.len() < window {
            let Some(&(index, endpoint)) = rest.next() else {
                exhausted = true;
                break;
            };
            let started = Instant::now();
            match start(endpoint) {
                Started::Done(status, errno) => done.push((index, outcome(status, errno, started))),
                Started::Pending(socket) => pending.push(Pending {
                    index,
                    socket,
                    started,
                }),
            }
        }
        if !pending.is_empty() {
            done.extend(wait(&mut pending, timeout));
        }
    }
    done
}

enum Started {
    Done(Status, Option<String>),
    Pending(Socket),
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
        Ok(()) => Started::Done(Status::Ok, None),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Started::Pending(socket),
        Err(e) => {
            let unix = matches!(endpoint, Endpoint::Unix(_));
            Started::Done(classify(&e, unix), Some(errno_text(&e)))
        }
    }
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

/// Wait until at least one pending connect finishes or the earliest deadline passes; return the
/// finished ones and keep the rest.
fn wait(pending: &mut Vec<Pending>, timeout: Duration) -> Vec<(usize, Outcome)> {
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
            events: libc::POLLOUT,
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
    for (p, fd) in pending.drain(..).zip(fds) {
        if polled && fd.revents != 0 {
            let (status, errno) = match p.socket.take_error() {
                Ok(None) => (Status::Ok, None),
                Ok(Some(e)) | Err(e) => (classify(&e, false), Some(errno_text(&e))),
            };
            done.push((p.index, outcome(status, errno, p.started)));
        } else if p.started.elapsed() >= timeout {
            done.push((p.index, outcome(Status::Timeout, None, p.started)));
        } else {
            keep.push(p);
        }
    }
    *pending = keep;
    done
}

fn outcome(status: Status, errno: Option<String>, started: Instant) -> Outcome {
    Outcome {
        status,
        errno,
        elapsed: started.elapsed(),
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
