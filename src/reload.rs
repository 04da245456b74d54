//! Reloading nginx and proving the reload took effect.
//!
//! `nginx -s reload` returning 0 proves nothing: the master reads the new configuration after
//! the signal, and a bind failure, an unwritable log or a shared-memory clash leaves the old
//! configuration running with only an `[emerg]` in the error log. So the proof is read from the
//! processes themselves (`/proc`): the same master, new workers in `nginx: worker process` state,
//! old workers draining (`is shutting down`) or gone.
//!
//! An `[emerg]` alone does not decide either way. nginx starts new workers only once the new
//! configuration's cycle was set up, and some `[emerg]` lines come from a cycle that was: the
//! `unlink()` of a removed `listen unix:` socket whose file someone deleted, say. So after an
//! `[emerg]` the proof waits for the master to be idle again and asks its workers: none new
//! (the old ones still accepting) is a failed reload; new ones mean it took effect, and the
//! `[emerg]` lines stay in the proof for the operator to read.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::errorlog::{Cursors, Level};

mod master;

pub use master::{find_master, unnamed_master, Invocation, Master};

/// What a worker is doing, from its process title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// `nginx: worker process`: accepting connections.
    Ready,
    /// `nginx: worker process is shutting down`: no longer accepting, finishing requests.
    ShuttingDown,
    /// Just forked (still titled like the master), exiting, or a zombie.
    Other,
}

/// One child process of the master that serves traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Worker {
    pub pid: i32,
    pub state: WorkerState,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

/// The workers of the master now (cache manager and loader excluded: they are not replaced in
/// the same way and do not serve requests).
pub fn workers(master: &Master) -> Vec<Worker> {
    children(master.pid)
        .into_iter()
        .filter_map(Proc::read)
        .filter(|p| p.ppid == master.pid && !p.title.contains("cache "))
        .map(|p| Worker {
            pid: p.pid,
            state: p.worker_state(),
            start_ticks: p.start_ticks,
        })
        .collect()
}

/// The pids of the master's workers that accept connections: the ones serving the
/// configuration it runs now. Workers still finishing requests of a configuration it replaced
/// (`is shutting down`) are not among them.
pub fn serving(master: &Master) -> Vec<i32> {
    (workers(master).into_iter())
        .filter(|w| w.state == WorkerState::Ready)
        .map(|w| w.pid)
        .collect()
}

/// When the master last loaded its configuration: the start of its oldest worker that accepts
/// connections (a reload or a start replaces them all; a worker respawned after a crash is
/// newer than the rest). `None` without a ready worker.
pub fn loaded_at(master: &Master) -> Option<std::time::SystemTime> {
    let oldest = (workers(master).into_iter())
        .filter(|w| w.state == WorkerState::Ready)
        .map(|w| w.start_ticks)
        .min()?;
    since_boot(oldest)
}

/// A time in clock ticks since boot (`/proc/PID/stat` start times) as wall-clock time, to the
/// tick: the boot instant is now less the time since boot (`CLOCK_BOOTTIME`, which the start
/// times count in), not the whole seconds of `/proc/stat`'s `btime`.
pub fn since_boot(ticks: u64) -> Option<std::time::SystemTime> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let up = Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    );
    let boot = std::time::SystemTime::now().checked_sub(up)?;
    // SAFETY: sysconf takes a plain constant and has no side effects.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    (hz > 0).then(|| boot + Duration::from_millis(ticks.saturating_mul(1000) / hz))
}

/// How to ask nginx to reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadMethod {
    /// SIGHUP to the master, right after our own `nginx -t`.
    Signal,
    /// The operator's command, as argv (e.g. `systemctl reload nginx`).
    Command(Vec<String>),
}

/// Ask nginx to reload. Only the request: whether it took effect is [`prove`]'s job.
pub fn trigger(master: &Master, method: &ReloadMethod, timeout: Duration) -> Result<()> {
    match method {
        ReloadMethod::Signal => {
            // SAFETY: kill(2) takes plain integers; the pid was checked to be an nginx master.
            let rc = unsafe { libc::kill(master.pid, libc::SIGHUP) };
            if rc == 0 {
                Ok(())
            } else {
                Err(Error::Command {
                    command: format!("kill -HUP {}", master.pid),
                    status: "failed".into(),
                    stderr: std::io::Error::last_os_error().to_string(),
                })
            }
        }
        ReloadMethod::Command(argv) => crate::nginx::run_command(argv, timeout).map(|_| ()),
    }
}

/// The evidence that a reload took effect, or why it did not.
#[derive(Debug, Clone, Serialize)]
pub struct Proof {
    pub took_effect: bool,
    pub master: i32,
    /// Workers before the reload.
    pub old_workers: Vec<i32>,
    /// Workers started by the reload and accepting connections.
    pub new_workers: Vec<i32>,
    /// `[emerg]` lines logged since the reload, verbatim: why it failed, or, with
    /// `took_effect`, what nginx could not do while it loaded the new configuration.
    pub emerg: Vec<String>,
    /// `[alert]` lines the master and the new workers logged since the reload, verbatim: what
    /// a worker could not do as it started (`setrlimit(RLIMIT_NOFILE, ...) failed`). The old
    /// workers' lines, logged as they drain, are not the change's and are left out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
    #[serde(rename = "elapsed_ms", serialize_with = "crate::report::ms")]
    pub elapsed: Duration,
    /// Why the reload is not proven (`None` when it took effect).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// nginx shows no sign of a reload at all: the same workers, all still accepting, no
    /// `[emerg]`, the master idle. It still runs the configuration it ran before.
    pub untouched: bool,
}

impl Proof {
    /// The request never reached nginx (the signal or the reload command failed) and its
    /// workers show it: nothing to prove, nothing changed.
    pub fn not_sent(master: &Master, before: &[Worker], reason: String) -> Proof {
        Proof {
            took_effect: false,
            master: master.pid,
            old_workers: before.iter().map(|w| w.pid).collect(),
            new_workers: Vec::new(),
            emerg: Vec::new(),
            alerts: Vec::new(),
            elapsed: Duration::ZERO,
            reason: Some(reason),
            untouched: true,
        }
    }
}

/// Whether the master's workers are exactly `before`, all still accepting: a reload has not
/// begun (or the master has not forked yet).
pub fn unchanged(master: &Master, before: &[Worker]) -> bool {
    let now = workers(master);
    now == before && now.iter().all(|w| w.state == WorkerState::Ready)
}

/// How long a master that a failed reload command left idle, with the same workers, is
/// watched before the request is taken as never sent: a signal the command sent before it
/// exited is pending by then, and a master with one pending is not idle.
const SETTLE: Duration = Duration::from_millis(100);

/// Whether a reload request that failed (the command exited non-zero, or timed out) shows no
/// sign of having reached nginx: the same workers, all accepting, and the master idle in its
/// wait for signals throughout [`SETTLE`]. Where the master's state cannot be seen, it may
/// have: the caller proves the reload as after a signal.
pub fn not_begun(master: &Master, before: &[Worker]) -> bool {
    let end = Instant::now() + SETTLE;
    loop {
        if !unchanged(master, before) || master_idle(master.pid) != Some(true) {
            return false;
        }
        if Instant::now() >= end {
            return true;
        }
        std::thread::sleep(FAST_POLL * 5);
    }
}

/// Poll intervals: fine while a reload normally completes, coarser for a slow one (a large
/// configuration can take seconds to parse) so the poll does not compete with nginx for CPU.
const FAST_POLL: Duration = Duration::from_millis(2);
const SLOW_POLL: Duration = Duration::from_millis(20);
const FAST_PHASE: Duration = Duration::from_millis(500);

/// Watch the master after [`trigger`] until the reload is proven, it failed (an `[emerg]` and
/// no new workers once the master is idle), the master dies, or `deadline` passes. `before` is
/// [`workers`] taken just before the trigger.
pub fn prove(master: &Master, before: &[Worker], logs: &mut Cursors, deadline: Duration) -> Proof {
    prove_with(master, before, logs, deadline, None)
}

/// [`prove`], also requiring `expected_workers` new ready workers (the new configuration's
/// `worker_processes`). Without it, every new worker must be ready: the master forks all of
/// them before it tells the old ones to stop, so a full set is present once old ones drain.
pub fn prove_with(
    master: &Master,
    before: &[Worker],
    logs: &mut Cursors,
    deadline: Duration,
    expected_workers: Option<usize>,
) -> Proof {
    let start = Instant::now();
    let mut proof = Proof {
        took_effect: false,
        master: master.pid,
        old_workers: before.iter().map(|w| w.pid).collect(),
        new_workers: Vec::new(),
        emerg: Vec::new(),
        alerts: Vec::new(),
        elapsed: Duration::ZERO,
        reason: None,
        untouched: false,
    };
    // Whether the master was seen idle after an [emerg]: its workers have told since.
    let mut settled = false;
    loop {
        read_log(logs, before, &mut proof);
        let mut state = observe(master, before, expected_workers);
        if !proof.emerg.is_empty() && !settled {
            // The master may still be inside the reload (a busy port's bind() is retried for
            // about 2.5 s; a loaded cycle still forks its workers). Its later [emerg] lines
            // belong to this attempt, and a signal sent before it is done would be read as
            // failing too: wait until it is idle, then its workers say what the [emerg] meant.
            wait_until_idle(master, deadline.saturating_sub(start.elapsed()));
            settled = true;
            read_log(logs, before, &mut proof);
            state = observe(master, before, expected_workers);
            if state.new_count == 0 {
                proof.new_workers = state.new_ready;
                proof.elapsed = start.elapsed();
                proof.reason = Some(format!(
                    "nginx logged [emerg] after the reload signal: {}",
                    emerg_message(&proof.emerg[0])
                ));
                return proof;
            }
        }
        proof.new_workers = state.new_ready.clone();
        proof.elapsed = start.elapsed();
        if !state.master_alive {
            proof.reason = Some(format!(
                "the master process {} is gone or no longer an nginx master",
                master.pid
            ));
            return proof;
        }
        if state.done {
            proof.took_effect = true;
            return proof;
        }
        if proof.elapsed >= deadline {
            // A master still busy (parsing a large configuration) may yet load it: only an
            // idle one with every old worker accepting and none new has ignored the request.
            proof.untouched = state.new_count == 0
                && state.old_accepting
                    == before
                        .iter()
                        .filter(|w| w.state == WorkerState::Ready)
                        .count()
                && master_idle(master.pid) != Some(false);
            proof.reason = Some(format!(
                "not in effect after {}: {} new worker(s) ready{}, {} old worker(s) still accepting",
                humantime::format_duration(Duration::from_millis(proof.elapsed.as_millis() as u64)),
                state.new_ready.len(),
                expected_workers.map_or(String::new(), |n| format!(" of {n}")),
                state.old_accepting
            ));
            return proof;
        }
        let pause = if proof.elapsed < FAST_PHASE {
            FAST_POLL
        } else {
            SLOW_POLL
        };
        std::thread::sleep(pause.min(deadline.saturating_sub(proof.elapsed)));
    }
}

/// The `[emerg]` lines logged since the last read, and the `[alert]` lines of processes that
/// are not among the old workers `before`, into `proof`, verbatim.
fn read_log(logs: &mut Cursors, before: &[Worker], proof: &mut Proof) {
    for l in logs.read_new() {
        match l.level {
            Some(Level::Emerg) => proof.emerg.push(l.text),
            Some(Level::Alert) if !logged_by(&l.text).is_some_and(|pid| old(before, pid)) => {
                proof.alerts.push(l.text)
            }
            _ => {}
        }
    }
}

fn old(before: &[Worker], pid: i32) -> bool {
    before.iter().any(|w| w.pid == pid)
}

/// The pid of a log file line (`2024/01/02 03:04:05 [alert] 123#123: ...`).
fn logged_by(line: &str) -> Option<i32> {
    let (_, rest) = line.split_once("] ")?;
    rest.split_once('#')?.0.parse().ok()
}

/// Poll until the master waits for signals again, it is gone, or `within` passes. Where the
/// kernel shows neither its syscall nor its wait channel there is nothing to wait for.
fn wait_until_idle(master: &Master, within: Duration) {
    let end = Instant::now() + within;
    while Instant::now() < end && master_idle(master.pid) == Some(false) {
        std::thread::sleep(SLOW_POLL);
    }
}

/// Whether the master sits in `sigsuspend`, its main loop's wait; `None` when not visible.
fn master_idle(pid: i32) -> Option<bool> {
    // `/proc/PID/syscall`: the syscall number it is blocked in, or "running".
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
        let first = text.split_whitespace().next()?;
        return Some(first.parse::<libc::c_long>().ok() == Some(libc::SYS_rt_sigsuspend));
    }
    // The wait channel names the kernel function; "0" while running or when hidden.
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    if wchan.contains("sigsuspend") {
        return Some(true);
    }
    let running = Proc::read(pid).is_some_and(|p| p.state == 'R');
    (running || !(wchan.is_empty() || wchan == "0")).then_some(false)
}

struct Observed {
    master_alive: bool,
    /// Workers that were not there before, in any state.
    new_count: usize,
    new_ready: Vec<i32>,
    old_accepting: usize,
    done: bool,
}

/// Whether `master` still runs as an nginx master (not gone, not a zombie, not another
/// program that took its pid).
pub fn master_alive(master: &Master) -> bool {
    Proc::read(master.pid)
        .is_some_and(|p| p.state != 'Z' && p.title.starts_with("nginx: master process"))
}

fn observe(master: &Master, before: &[Worker], expected: Option<usize>) -> Observed {
    let master_alive = master_alive(master);
    let now = workers(master);
    let is_old = |w: &Worker| {
        before
            .iter()
            .any(|b| b.pid == w.pid && b.start_ticks == w.start_ticks)
    };
    let (old, new): (Vec<&Worker>, Vec<&Worker>) = now.iter().partition(|w| is_old(w));
    let new_ready: Vec<i32> = new
        .iter()
        .filter(|w| w.state == WorkerState::Ready)
        .map(|w| w.pid)
        .collect();
    let old_accepting = old.iter().filter(|w| w.state == WorkerState::Ready).count();
    let enough = match expected {
        Some(n) => new_ready.len() >= n.max(1),
        None => !new_ready.is_empty() && new_ready.len() == new.len(),
    };
    Observed {
        master_alive,
        new_count: new.len(),
        done: master_alive && enough && old_accepting == 0,
        new_ready,
        old_accepting,
    }
}

/// When `pid` started (clock ticks since boot), and whether it is still running (not a
/// zombie): with the pid, it names one process even after the pid is reused.
pub fn started(pid: i32) -> Option<(u64, bool)> {
    Proc::read(pid).map(|p| (p.start_ticks, p.state != 'Z'))
}

/// The process title (`/proc/PID/cmdline`, NULs as spaces).
pub fn title(pid: i32) -> Option<String> {
    Proc::read(pid).map(|p| p.title)
}

/// What `/proc/PID/stat` and `/proc/PID/cmdline` say about one process.
struct Proc {
    pid: i32,
    ppid: i32,
    state: char,
    start_ticks: u64,
    /// The command line with NULs as spaces: nginx rewrites it to its process title.
    title: String,
}

impl Proc {
    fn read(pid: i32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        Some(Proc {
            pid,
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start_ticks: fields.get(19)?.parse().ok()?,
            title: title.trim().to_string(),
        })
    }

    fn worker_state(&self) -> WorkerState {
        if self.state == 'Z' {
            WorkerState::Other
        } else if self.title == "nginx: worker process" {
            WorkerState::Ready
        } else if self
            .title
            .starts_with("nginx: worker process is shutting down")
        {
            WorkerState::ShuttingDown
        } else {
            WorkerState::Other
        }
    }
}

/// Child pids of `pid`: from `/proc/PID/task/*/children` where the kernel offers it, else by
/// scanning every process's parent.
fn children(pid: i32) -> Vec<i32> {
    let mut found = false;
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                found = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    if found {
        return out;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| Proc::read(*p).is_some_and(|proc| proc.ppid == pid))
        .collect()
}

/// What an `[emerg]` line says, without its date, level and pid: `bind() to [::]:80 failed
/// (98: Address already in use)`.
fn emerg_message(line: &str) -> &str {
    let rest = line
        .split_once("[emerg]")
        .map_or(line, |(_, r)| r)
        .trim_start();
    // `1234#1234: ` (pid and thread), when there is one.
    match rest.split_once(": ") {
        Some((pid, msg)) if pid.bytes().all(|b| b.is_ascii_digit() || b == b'#') => msg,
        _ => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emerg_line_is_told_by_its_message() {
        let line = "2026/12/03 15:05:31 [emerg] 4242#4242: bind() to [::]:80 failed (98: \
                    Address already in use)";
        assert_eq!(
            emerg_message(line),
            "bind() to [::]:80 failed (98: Address already in use)"
        );
        assert_eq!(emerg_message("no prefix: x"), "no prefix: x");
    }

    #[test]
    fn an_alert_of_an_old_worker_draining_is_not_the_change_s() {
        let worker = |pid| Worker {
            pid,
            state: WorkerState::ShuttingDown,
            start_ticks: 1,
        };
        let line = |pid| format!("2026/01/02 03:04:05 [alert] {pid}#{pid}: open socket #9 left");
        assert_eq!(logged_by(&line(41)), Some(41));
        assert!(old(&[worker(41)], 41) && !old(&[worker(41)], 42));
        assert_eq!(logged_by("nginx: [alert] no pid here"), None);
    }
}
