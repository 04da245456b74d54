//! A shadow's whole life on a thread of its own, from its start beside `nginx -t` to its stop.
//! Copying, spawning and the wait until it serves cost the run no time: its master parses the
//! candidate while `nginx -t` does. Its checks are sent as soon as the pipeline knows them
//! (for a reload, once the impact is worked out, while `nginx -t` still runs), and its result
//! is handed back before it is stopped: the stop (up to a grace period) runs while the
//! pipeline goes on. Dropping the [`Session`] waits for the thread, so the shadow is stopped
//! by pid and reaped before safe-reload exits, whatever path the run took.
//!
//! The thread that spawns the master is the one that reaps it, because the master's
//! parent-death signal follows the thread that spawned it: that thread ends only once the
//! master is gone, or with the whole process when safe-reload is killed.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::verify::{ask_running, run_checks, sample};
use super::{Deadline, NotServing, Shadow, ShadowCheck, ShadowReport, ShadowState, Source};
use crate::health::recent::Serving;
use crate::health::{Check, HealthOptions};

/// The checks to send through the shadow, and how to ask the running nginx those that fail.
pub struct Batch {
    pub checks: Vec<Check>,
    /// The running nginx's error logs, read while a failed check is asked of it.
    pub running_logs: Vec<PathBuf>,
    /// How requests are sent; its `expected_down` is not used: the probe may not have said
    /// yet which peers are down (see [`Session::expect_down`]).
    pub opts: HealthOptions,
    /// The running nginx's listening sockets, when `nginx -t` may still bind the candidate's,
    /// and its serving workers (see `health::recent`).
    pub running: Serving,
    /// The upstream blocks with more than one server nginx sends requests to, by name, and
    /// how many (see `conf::pool_sizes`): a check through one is asked again until round
    /// robin has reached each (see `verify::sample`).
    pub pools: std::collections::HashMap<String, usize>,
    /// Of those, the ones with `max_conns` on every server, and the sum (see
    /// `conf::pool_limits`): no more of a check's samples are in flight at once.
    pub pool_limits: std::collections::HashMap<String, usize>,
    /// Of those, the ones hashed on the path and not the query (see
    /// `conf::pools_hashed_on_path`): their samples vary the path.
    pub path_hashed: std::collections::HashSet<String>,
}

/// What the shadow showed, handed back when its checks ended.
pub enum Seen {
    /// It could not be started: why, when the start began and how long it took.
    NotStarted {
        why: String,
        began: Instant,
        took: Duration,
    },
    /// It ran: the report with no verdict yet (`judge` and `differs` read the candidate's
    /// tree, which the pipeline holds), and when the shadow was started. `ready` unset: it
    /// never served, and `reason` says why (with `state` refused when its workers died at
    /// startup).
    Ran {
        report: ShadowReport,
        began: Instant,
    },
}

/// A shadow on its own thread. See the module documentation.
pub struct Session {
    /// `None` once the shadow is not needed: it stops at once, whatever it is doing.
    checks: Option<Sender<Option<Batch>>>,
    down: Option<Sender<Vec<String>>>,
    seen: Receiver<Seen>,
    deadline: Arc<Deadline>,
    handle: Option<JoinHandle<()>>,
}

impl Session {
    /// Start the shadow of `source` on a thread of its own. Until [`Session::seen`] says how
    /// long to wait, it may take `nginx_timeout` to serve, as `nginx -t` may.
    pub fn start(source: Source, nginx_timeout: Duration) -> Session {
        let (checks, batches) = mpsc::channel();
        let (down, expected) = mpsc::channel();
        let (tell, seen) = mpsc::channel();
        let deadline = Arc::new(Deadline::after(nginx_timeout));
        let waits = deadline.clone();
        let handle = std::thread::spawn(move || {
            let (seen, shadow) = live(source, &waits, &batches, &expected);
            let _ = tell.send(seen);
            if let Some(shadow) = shadow {
                shadow.stop();
            }
        });
        Session {
            checks: Some(checks),
            down: Some(down),
            seen,
            deadline,
            handle: Some(handle),
        }
    }

    /// The checks to send once the shadow serves. Only the first batch is sent.
    pub fn send(&self, batch: Batch) {
        if let Some(checks) = &self.checks {
            let _ = checks.send(Some(batch));
        }
    }

    /// The change gives the shadow nothing to show (see `Impact::shadow_needed`): it stops
    /// now, still starting or serving, and sends no checks.
    pub fn dismiss(&self) {
        self.deadline.set(Duration::ZERO);
        if let Some(checks) = &self.checks {
            let _ = checks.send(None);
        }
    }

    /// The peers the probe found down without refusing the change
    /// (`ProbeReport::expected_down`): the shadow's connect errors to them are nginx failing
    /// over. Its failed checks are asked of the running nginx only once these are known.
    pub fn expect_down(&self, peers: Vec<String>) {
        if let Some(down) = &self.down {
            let _ = down.send(peers);
        }
    }

    /// Wait for what the shadow showed, giving it `within` from now to serve if it does not
    /// yet (its checks, once it serves, take what they take). What was not sent by now is
    /// not coming: no batch means no checks, no peers known down means no failure is asked
    /// of the running nginx.
    pub fn seen(&mut self, within: Duration) -> Seen {
        drop((self.checks.take(), self.down.take()));
        self.deadline.set(within);
        self.seen.recv().unwrap_or_else(|_| Seen::NotStarted {
            why: "its thread failed".into(),
            began: Instant::now(),
            took: Duration::ZERO,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Nothing more comes: a shadow still starting stops waiting, one waiting for checks
        // sends none, and the thread stops it.
        self.deadline.set(Duration::ZERO);
        drop((self.checks.take(), self.down.take()));
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Start the shadow, wait for it to serve, send the first batch through it and ask the
/// running nginx about what failed there. The shadow comes back with what it showed, still
/// running: the caller stops it once that is handed on.
fn live(
    source: Source,
    deadline: &Deadline,
    batches: &Receiver<Option<Batch>>,
    expected: &Receiver<Vec<String>>,
) -> (Seen, Option<Shadow>) {
    let began = Instant::now();
    let started = Shadow::start(&source);
    // The candidate's bytes are not needed past the copy.
    drop(source);
    let mut shadow = match started {
        Ok(shadow) => shadow,
        Err(e) => {
            let why = e.to_string();
            let took = began.elapsed();
            return (Seen::NotStarted { why, began, took }, None);
        }
    };
    let mut rep = ShadowReport::new(ShadowState::NotVerified, None);
    rep.master_pid = Some(shadow.master_pid());
    rep.listens = shadow.ports().rows();
    match shadow.wait_ready(deadline) {
        Err(NotServing::WorkersDied(line)) => {
            // The reload would start the same workers: they would die alike, and the old ones
            // would leave with no one accepting in their place.
            rep.state = ShadowState::Refused;
            rep.reason = Some(format!(
                "the candidate's worker processes die at startup in the shadow nginx: {line}"
            ));
        }
        Err(NotServing::Other(why)) => {
            rep.reason = Some(format!("the shadow nginx did not start: {why}"));
        }
        Ok(()) => {
            crate::store::test_pause("shadow-running");
            if let Ok(Some(batch)) = batches.recv() {
                let (mut checks, skipped) = run_checks(&shadow, &batch.checks, &batch.opts);
                // Ctrl-C before the reload stops the run with nothing changed: what the shadow
                // would ask next (pool samples, the running nginx, longer waits) is not waited
                // for.
                let stopping = crate::signals::interrupted;
                if !stopping() {
                    sample(
                        &shadow,
                        &mut checks,
                        &batch.opts,
                        &batch.pools,
                        &batch.pool_limits,
                        &batch.path_hashed,
                        &batch.running_logs,
                    );
                }
                // Only a check the running nginx may be asked about waits for the probe to say
                // which peers are down.
                let asks = !stopping() && checks.iter().any(ShadowCheck::asks_running);
                if let Some(expected_down) = asks.then(|| expected.recv().ok()).flatten() {
                    let opts = HealthOptions {
                        expected_down,
                        ..batch.opts
                    };
                    let running = (&batch.running_logs[..], batch.running);
                    ask_running(&shadow, &mut checks, running, &opts);
                }
                (rep.checks, rep.skipped) = (checks, skipped);
                rep.disabled_peers = super::verify::disabled_peers(&shadow.error_log());
            }
        }
    }
    rep.elapsed = shadow.age();
    (rep.spawn, rep.ready) = (shadow.spawn_took, shadow.ready_after);
    let began = shadow.started();
    (Seen::Ran { report: rep, began }, Some(shadow))
}
