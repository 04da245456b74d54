//! What a reload starts while `nginx -t` runs, once the impact analysis has said which servers
//! the change affects: the baseline, the candidate's checks against the running configuration
//! and a read-back of its recent error log (see `health::recent`; the difference a change made
//! is measured against it, see `verdict`). On a large configuration `nginx -t` is the longest
//! step, and the baseline only reads and talks to nginx over loopback, so it runs beside it at
//! no wall time of its own. Its result is used only when nothing refuses the change, and only
//! for a signal sent after it ended; the pipeline decides both.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::health::recent::{self, Serving, Taken};
use crate::health::{Check, HealthOptions, Plan};
use crate::impact::Impact;
use crate::reload::{self, Master};

/// Worked out as soon as both trees were reduced, before `nginx -t` is done: which servers
/// the change affects, their checks (the same for the shadow, the baseline and verification),
/// and the baseline of those checks when one is wanted.
pub struct Ahead {
    pub impact: Impact,
    pub plan: Plan,
    pub baseline: Option<Pending>,
    /// Why files that equal last-good are not what nginx runs (see
    /// `pipeline::not_what_nginx_loaded`): such a run reloads, and the shadow and the
    /// baseline go as for a change.
    pub stale: Option<String>,
    /// When the impact and the checks were worked out, and how long that took.
    pub took: (Instant, Duration),
}

/// The running nginx's workers now (see [`Serving`]); every check is sent (nothing binds the
/// candidate's addresses meanwhile).
pub fn serving(master: &Master) -> Serving {
    Serving {
        held: None,
        workers: reload::serving(master),
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
    /// could bind any (see [`recent::take`]).
    pub fn start(
        checks: Vec<Check>,
        logs: Vec<PathBuf>,
        opts: HealthOptions,
        running: Serving,
    ) -> Pending {
        let handle = std::thread::spawn(move || recent::take(&checks, &logs, &opts, running));
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
