//! What a reload starts while `nginx -t` runs, once the impact analysis has said which servers
//! the change affects: the baseline, the candidate's checks against the running configuration
//! and a read-back of its recent error log (the difference a change made is measured against
//! it, see `verdict`). Only what the workers serving the running configuration logged is its
//! baseline: the workers of a configuration nginx ran before it (a candidate of our own that
//! was rolled back among them) wrote the rest. On a large configuration `nginx -t` is the
//! longest step, and the
//! baseline only reads and talks to nginx over loopback, so it runs beside it at no wall time
//! of its own. Its result is used only when nothing refuses the change, and only for a signal
//! sent after it ended; the pipeline decides both.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::errorlog::{self, Cursors};
use crate::health::{self, Check, HealthOptions, HealthReport, Plan};
use crate::impact::Impact;
use crate::probe::netstat::Listeners;
use crate::reload::{self, Master};

/// How far back the baseline reads the running configuration's error logs: long enough to
/// cover nginx's default `fail_timeout` (10 s) many times over. Which lines of that are the
/// running configuration's, [`Serving`] says.
const RECENT_LOG: Duration = Duration::from_secs(600);
/// The most of each error log read back for [`RECENT_LOG`].
const RECENT_LOG_BYTES: u64 = 256 * 1024;

/// Worked out as soon as both trees were reduced, before `nginx -t` is done: which servers
/// the change affects, their checks (the same for the shadow, the baseline and verification),
/// and the baseline of those checks when one is wanted.
pub struct Ahead {
    pub impact: Impact,
    pub plan: Plan,
    pub baseline: Option<Pending>,
    /// When the impact and the checks were worked out, and how long that took.
    pub took: (Instant, Duration),
}

/// The running nginx as the baseline meets it, read before the baseline starts.
#[derive(Debug, Default)]
pub struct Serving {
    /// The sockets its master and workers listen on (see [`take`]); `None`: every check is
    /// sent.
    pub held: Option<Listeners>,
    /// Its workers that accept connections. A worker that saw a pool server fail skips it for
    /// its `fail_timeout` and logs nothing meanwhile, so what these logged in the recent past
    /// is the running configuration's. No other process's line is: the workers a reload
    /// replaced wrote it under a configuration that no longer runs, and when that was a
    /// candidate of ours that was rolled back, counting its lines would excuse the very
    /// failure it was rolled back for when the same change is tried again.
    pub workers: Vec<i32>,
}

impl Serving {
    /// The master's workers now; every check is sent (nothing binds the candidate's
    /// addresses meanwhile).
    pub fn of(master: &Master) -> Serving {
        Serving {
            held: None,
            workers: reload::serving(master),
        }
    }

    /// Whether the running configuration wrote this line, at `since` or later.
    fn wrote(&self, line: &str, since: Option<&str>) -> bool {
        since.is_some_and(|s| errorlog::written_since(line, s))
            && errorlog::writer(line).is_some_and(|pid| self.workers.contains(&pid))
    }
}

/// A baseline being taken on a thread of its own. Dropping it waits for the thread: no request
/// of a run outlives it.
pub struct Pending {
    handle: Option<JoinHandle<Taken>>,
}

impl Pending {
    /// Send `checks` to the running configuration and read back `logs` (its error logs).
    /// `running.held` are the sockets the running nginx listens on, read before `nginx -t`
    /// could bind any (see [`take`]).
    pub fn start(
        checks: Vec<Check>,
        logs: Vec<PathBuf>,
        opts: HealthOptions,
        running: Serving,
    ) -> Pending {
        let handle = std::thread::spawn(move || take(&checks, &logs, &opts, running));
        Pending {
            handle: Some(handle),
        }
    }

    /// Wait for it; `None` if its thread failed.
    pub fn join(mut self) -> Option<Taken> {
        self.handle.take()?.join().ok()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// A baseline as taken: its upstream errors are sorted by [`Taken::finish`] once the probe
/// has said which peers are down.
pub struct Taken {
    window: HealthReport,
    /// The oldest log line that still counts, as the error log writes its time.
    since: Option<String>,
    /// Whose lines count.
    running: Serving,
    pub began: Instant,
    pub elapsed: Duration,
}

/// The checks against the running configuration, and what its error logs hold of the recent
/// past: a worker that saw a pool server fail skips it for a while (`fail_timeout`) and logs
/// nothing about it meanwhile, while the new workers of a reload try it afresh. Only the lines
/// of `running.workers` count (see [`Serving`]).
///
/// With `running.held` (the listening sockets of the running nginx's master and workers), a
/// check aimed at an address none of them accepts is not sent: it is recorded as refused, as
/// the running configuration would answer it. `nginx -t` briefly binds every free address the
/// candidate names, so such a request sent while it runs can reach `nginx -t`'s socket and be
/// taken for an answer of the running configuration.
pub fn take(checks: &[Check], logs: &[PathBuf], opts: &HealthOptions, running: Serving) -> Taken {
    let held = running.held.as_ref();
    let since = errorlog::stamp(SystemTime::now() - RECENT_LOG);
    let mut cursors = Cursors::open_back(logs, RECENT_LOG_BYTES);
    let began = Instant::now();
    let answers = |c: &Check| {
        held.is_none_or(|l| match &c.unix {
            Some(path) => l.accepts_unix(path),
            None => l.accepts(c.connect),
        })
    };
    let (sent, unsent): (Vec<usize>, Vec<usize>) =
        (0..checks.len()).partition(|&i| answers(&checks[i]));
    let to_send: Vec<Check> = sent.iter().map(|&i| checks[i].clone()).collect();
    let mut window = health::baseline(&to_send, &mut cursors, opts);
    if !unsent.is_empty() {
        let mut results: Vec<Option<health::CheckResult>> = vec![None; checks.len()];
        for (&i, r) in sent.iter().zip(std::mem::take(&mut window.results)) {
            results[i] = Some(r);
        }
        for &i in &unsent {
            let why = format!(
                "the running configuration does not listen on {}: not sent",
                checks[i].via()
            );
            results[i] = Some(health::not_listening(&checks[i], why, opts));
        }
        window.results = results.into_iter().flatten().collect();
        window.passed &= !window.results.iter().any(|r| r.failed);
    }
    Taken {
        window,
        since,
        running,
        began,
        elapsed: began.elapsed(),
    }
}

impl Taken {
    /// The window, its connect errors to `expected_down` peers (the probe's, see
    /// `ProbeReport::expected_down`) set apart, and only the errors the running
    /// configuration's workers logged in the recent past kept.
    pub fn finish(mut self, expected_down: &[String]) -> HealthReport {
        let (since, running) = (self.since.as_deref(), &self.running);
        let ours = |e: &errorlog::UpstreamError| running.wrote(&e.text, since);
        let w = &mut self.window;
        w.upstream_errors.retain(ours);
        w.expected_upstream_errors.retain(ours);
        for r in &mut w.results {
            r.intermittent_errors.retain(ours);
        }
        health::expect_down(w, expected_down);
        self.window
    }
}
