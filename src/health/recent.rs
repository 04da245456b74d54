//! A baseline of the running configuration: the checks sent to it, and what its error logs
//! hold of the recent past. A worker that saw a pool server fail skips it for a while
//! (`fail_timeout`) and logs nothing about it meanwhile, while the new workers of a reload try
//! it afresh: a failure read from that past is one the running configuration has too. Only
//! what the workers serving the running configuration logged is its baseline: the workers of
//! a configuration nginx ran before it (a candidate of ours that was rolled back among them)
//! wrote the rest. The pipeline takes one before a reload (see `verdict`); the shadow asks the
//! same of the running nginx for the checks that failed through it.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::{
    baseline, expect_down, not_listening, Check, CheckResult, HealthOptions, HealthReport,
};
use crate::errorlog::{self, Cursors};
use crate::probe::netstat::Listeners;

/// How far back a baseline reads the running configuration's error logs: long enough to cover
/// nginx's default `fail_timeout` (10 s) many times over. Which lines of that are the running
/// configuration's, [`Serving`] says.
const RECENT_LOG: Duration = Duration::from_secs(600);
/// The most of each error log read back for [`RECENT_LOG`].
const RECENT_LOG_BYTES: u64 = 256 * 1024;

/// The running nginx as a baseline meets it, read before the baseline starts.
#[derive(Debug, Clone, Default)]
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
    /// Whether the running configuration wrote this line, at `since` or later.
    fn wrote(&self, line: &str, since: Option<&str>) -> bool {
        since.is_some_and(|s| errorlog::written_since(line, s))
            && errorlog::writer(line).is_some_and(|pid| self.workers.contains(&pid))
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

/// The checks against the running configuration, and the upstream errors its error logs
/// (`logs`) hold of the recent past, read once for all of them. Only the lines of
/// `running.workers` count (see [`Serving`]).
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
    let to_send: Vec<Check> = sent.iter().map(|&i| checks[i].to_running()).collect();
    let mut window = baseline(&to_send, &mut cursors, opts);
    if !unsent.is_empty() {
        let mut results: Vec<Option<CheckResult>> = vec![None; checks.len()];
        for (&i, r) in sent.iter().zip(std::mem::take(&mut window.results)) {
            results[i] = Some(r);
        }
        for &i in &unsent {
            let why = format!(
                "the running configuration does not listen on {}: not sent",
                checks[i].via()
            );
            results[i] = Some(not_listening(&checks[i], why, opts));
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
        expect_down(w, expected_down);
        self.window
    }
}
