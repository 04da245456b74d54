//! What a reload starts while `nginx -t` runs, once the impact analysis has said which servers
//! the change affects: the baseline, the candidate's checks against the running configuration
//! and a read-back of its recent error log (the difference a change made is measured against
//! it, see `verdict`). On a large configuration `nginx -t` is the longest step, and the
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

/// How far back the baseline reads the running configuration's error logs: long enough to
/// cover nginx's default `fail_timeout` (10 s) many times over, short enough that the errors
/// are this configuration's and not an older one's.
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

/// A baseline being taken on a thread of its own. Dropping it waits for the thread: no request
/// of a run outlives it.
pub struct Pending {
    handle: Option<JoinHandle<Taken>>,
}

impl Pending {
    /// Send `checks` to the running configuration and read back `logs` (its error logs).
    /// `held` are the sockets the running nginx listens on, read before `nginx -t` could bind
    /// any (see [`take`]).
    pub fn start(
        checks: Vec<Check>,
        logs: Vec<PathBuf>,
        opts: HealthOptions,
        held: Option<Listeners>,
    ) -> Pending {
        let handle = std::thread::spawn(move || take(&checks, &logs, &opts, held.as_ref()));
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
    pub began: Instant,
    pub elapsed: Duration,
}

/// The checks against the running configuration, and what its error logs hold of the recent
/// past: a worker that saw a pool server fail skips it for a while (`fail_timeout`) and logs
/// nothing about it meanwhile, while the new workers of a reload try it afresh.
///
/// With `held` (the listening sockets of the running nginx's master and workers), a check
/// aimed at an address none of them accepts is not sent: it is recorded as refused, as the
/// running configuration would answer it. `nginx -t` briefly binds every free address the
/// candidate names, so such a request sent while it runs can reach `nginx -t`'s socket and be
/// taken for an answer of the running configuration.
pub fn take(
    checks: &[Check],
    logs: &[PathBuf],
    opts: &HealthOptions,
    held: Option<&Listeners>,
) -> Taken {
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
        began,
        elapsed: began.elapsed(),
    }
}

impl Taken {
    /// The window, its connect errors to `expected_down` peers (the probe's, see
    /// `ProbeReport::expected_down`) set apart, and only the errors of the recent past kept.
    pub fn finish(mut self, expected_down: &[String]) -> HealthReport {
        health::expect_down(&mut self.window, expected_down);
        let since = self.since;
        (self.window.upstream_errors).retain(|e| {
            since
                .as_ref()
                .is_some_and(|s| errorlog::written_since(&e.text, s))
        });
        self.window
    }
}
