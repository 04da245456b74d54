//! The reload transaction: snapshot the candidate, signal nginx, prove the reload, verify
//! through nginx, and on any failure after the signal restore the last good configuration
//! through the same test-reload-prove-verify path. The journal records every phase before it
//! starts, so a run killed at any point is found by the next one.

use std::path::PathBuf;
use std::time::Instant;

use crate::conf::{servers, Config, Server};
use crate::error::{Error, Result};
use crate::errorlog::Cursors;
use crate::exit::Exit;
use crate::health::{self, Check, HealthOptions, HealthReport};
use crate::nginx;
use crate::pipeline::env::Env;
use crate::reload::{self, Master, Proof, ReloadMethod};
use crate::report::{Outcome, Report, RollbackReport};
use crate::settings::Settings;
use crate::signals::{self, Phase};
use crate::store::{Outcome as SnapOutcome, Phase as JournalPhase, Snapshot, Store};

/// Everything the transaction needs, gathered by the caller before anything changes.
pub struct Transaction<'a> {
    pub s: &'a Settings,
    pub env: &'a Env,
    pub store: &'a Store,
    pub master: Master,
    /// The candidate as snapshotted (the user's edit: never lost).
    pub candidate: Snapshot,
    /// Where to go back to.
    pub last_good: Option<Snapshot>,
    /// The candidate's file set, for removing files the change added.
    pub candidate_paths: Vec<PathBuf>,
    pub servers: Vec<Server>,
    /// The candidate's error logs and worker count. Its logs also stand for those of the
    /// configuration running before the reload (not parsed: they are where a change that keeps
    /// its `error_log` lines logs), and during a rollback they are the running one's.
    pub watch: Watch,
    /// How long the master may take to bring up new workers.
    pub reload_deadline: std::time::Duration,
    /// Whether this run began the journal record or continues a caller's.
    pub journal: crate::pipeline::Journal,
    /// Peers the probe found down without refusing the change (`ProbeReport::expected_down`):
    /// their connect errors in the log during verification are nginx failing over.
    pub expected_down: Vec<String>,
}

/// What proving a reload of one configuration needs from it: where it logs and how many
/// workers it starts. Taken from the directive tree so the tree itself can be dropped before
/// the reload: on a 10,000-server configuration it is most of a run's memory.
pub struct Watch {
    pub logs: Vec<PathBuf>,
    pub workers: Option<usize>,
}

impl Watch {
    pub fn of(env: &Env, config: &Config) -> Watch {
        Watch {
            logs: env.error_logs(config),
            workers: nginx::worker_processes(config),
        }
    }
}

/// What one reload attempt showed.
struct Attempt {
    proof: Proof,
    health: Option<HealthReport>,
}

impl Attempt {
    fn passed(&self) -> bool {
        self.proof.took_effect && self.health.as_ref().is_none_or(|h| h.passed)
    }

    fn why(&self) -> String {
        if !self.proof.took_effect {
            return format!(
                "the reload did not take effect: {}",
                self.proof
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no new workers".into())
            );
        }
        match &self.health {
            Some(h) if !h.passed => {
                format!("verification through nginx failed: {}", health_summary(h))
            }
            _ => "verification failed".into(),
        }
    }
}

impl Transaction<'_> {
    fn method(&self) -> ReloadMethod {
        match &self.s.reload_cmd {
            Some(argv) => ReloadMethod::Command(argv.clone()),
            None => ReloadMethod::Signal,
        }
    }

    fn checks(&self, servers: &[Server]) -> Result<Vec<Check>> {
        if self.s.health.is_empty() {
            let root = &self.candidate.config_root;
            let changed: Vec<PathBuf> = (self.candidate.meta.changed_files.iter())
                .map(|p| root.join(p))
                .collect();
            return Ok(health::focused_checks(servers, &changed));
        }
        self.s
            .health
            .iter()
            .map(|u| health::parse_url(u, &self.s.resolve))
            .collect()
    }

    fn health_options(&self) -> HealthOptions {
        HealthOptions {
            window: self.s.health_window,
            expect_status: (!self.s.expect_status.is_empty()).then(|| self.s.expect_status.clone()),
            expected_down: self.expected_down.clone(),
            ..HealthOptions::default()
        }
    }

    /// Signal, prove, verify. Errors here are failures to even try (signal refused). The
    /// journal follows the forward attempt; during a rollback it stays at `Restored`.
    fn attempt(
        &self,
        watch: &Watch,
        servers: &[Server],
        rollback: bool,
        report: &mut Report,
    ) -> Result<Attempt> {
        let checks = self.checks(servers)?;
        // A failed reload logs its [emerg] to the running configuration's logs, a successful
        // one to the new configuration's: watch both (the same files on the forward attempt).
        let mut paths = watch.logs.clone();
        for p in &self.watch.logs {
            if !paths.contains(p) {
                paths.push(p.clone());
            }
        }
        let mut logs = Cursors::open(&paths);
        let before = reload::workers(&self.master);
        let t = Instant::now();
        reload::trigger(&self.master, &self.method(), self.s.reload_timeout)?;
        let proof = reload::prove_with(
            &self.master,
            &before,
            &mut logs,
            self.reload_deadline,
            watch.workers,
        );
        report.step(
            "reload",
            proof.took_effect,
            t.elapsed(),
            proof.reason.clone(),
        );
        if !proof.took_effect {
            return Ok(Attempt {
                proof,
                health: None,
            });
        }
        if rollback {
            crate::store::test_pause("rollback-verifying");
        } else {
            self.store.journal_phase(JournalPhase::Reloaded)?;
            self.store.journal_phase(JournalPhase::Verifying)?;
        }
        if checks.is_empty() {
            report.notes.push(
                "no health requests: no proxied location on a local listen and no --health URL; \
                 only the reload itself was verified"
                    .into(),
            );
        }
        let t = Instant::now();
        let h = health::verify(&checks, &mut logs, &self.health_options());
        report.step("verify", h.passed, t.elapsed(), None);
        Ok(Attempt {
            proof,
            health: Some(h),
        })
    }

    /// Run it: the candidate is on disk and tested; nginx has not been touched yet.
    pub fn run(mut self, report: &mut Report) -> Result<Exit> {
        // From the phase change on, a signal is only reported; one that came before it
        // still stops the run here, with nginx untouched.
        signals::set_phase(Phase::Verifying);
        if signals::interrupted() {
            signals::set_phase(Phase::Idle);
            if self.journal == crate::pipeline::Journal::Begin {
                self.store.journal_clear()?;
            }
            return Err(Error::Interrupted);
        }
        let candidate = self.candidate.id.clone();
        self.store.journal_update(|r| {
            r.candidate = Some(candidate);
            r.phase = JournalPhase::Reloading;
        })?;
        // The candidate's servers are not needed past this attempt: a rollback parses the
        // restored configuration for its own.
        let servers = std::mem::take(&mut self.servers);
        let attempt = self.attempt(&self.watch, &servers, false, report);
        drop(servers);
        let attempt = match attempt {
            Ok(a) => a,
            Err(e) => {
                // The signal or reload command failed; nginx may or may not have reloaded.
                report.notes.push(format!("reloading failed: {e}"));
                return self.rollback(report, format!("reloading failed: {e}"));
            }
        };
        report.reload = Some(attempt.proof.clone());
        report.health = attempt.health.clone();
        if attempt.passed() {
            self.store.journal_phase(JournalPhase::Verified)?;
            self.store
                .set_outcome(&self.candidate.id, SnapOutcome::Good, None)?;
            self.store.set_last_good(&self.candidate)?;
            self.store.prune(self.s.retention)?;
            self.store.journal_clear()?;
            signals::set_phase(Phase::Idle);
            return Ok(report.finish(Outcome::Reloaded, Exit::Ok));
        }
        let why = attempt.why();
        self.rollback(report, why)
    }

    /// Put last-good back and prove it; exit 3 when it is live and verified, 4 otherwise.
    fn rollback(&self, report: &mut Report, why: String) -> Result<Exit> {
        let started = Instant::now();
        signals::set_phase(Phase::RollingBack);
        self.store.journal_phase(JournalPhase::RollingBack)?;
        let _ =
            self.store
                .set_outcome(&self.candidate.id, SnapOutcome::Rejected, Some(why.clone()));
        let mut rb = RollbackReport::new(why, &self.candidate);
        let exit = self.restore_and_verify(&mut rb, report);
        rb.elapsed = started.elapsed();
        // Once last-good is back and live the run is over, even when the backend fails it
        // too; with no last-good there is nothing to go back to. Either way nothing is left
        // for `recover` to finish.
        let restored_live = rb.reload.as_ref().is_some_and(|p| p.took_effect);
        let nothing_to_restore = self.last_good.is_none();
        report.rollback = Some(rb);
        match exit {
            Ok(exit) => {
                if exit == Exit::RolledBack {
                    self.store.journal_phase(JournalPhase::RolledBack)?;
                }
                if exit == Exit::RolledBack || restored_live || nothing_to_restore {
                    self.store.journal_clear()?;
                }
                signals::set_phase(Phase::Idle);
                let outcome = if exit == Exit::RolledBack {
                    Outcome::RolledBack
                } else {
                    Outcome::RollbackFailed
                };
                Ok(report.finish(outcome, exit))
            }
            Err(e) => {
                if let Some(rb) = report.rollback.as_mut() {
                    rb.state = format!(
                        "{e}. The rejected candidate is kept as snapshot {}; the journal still \
                         records this run: run `safe-reload status` and `safe-reload recover`",
                        self.candidate.id
                    );
                }
                Ok(report.finish(Outcome::RollbackFailed, Exit::RollbackFailed))
            }
        }
    }

    fn restore_and_verify(&self, rb: &mut RollbackReport, report: &mut Report) -> Result<Exit> {
        let Some(good) = &self.last_good else {
            rb.state = "there is no known-good snapshot to go back to: the failing configuration \
                        is on disk and may be live. Fix it, or restore a snapshot with \
                        `safe-reload rollback ID`"
                .into();
            return Ok(Exit::RollbackFailed);
        };
        rb.restored_to = Some(good.id.clone());
        let t = Instant::now();
        let restore = self.store.restore(
            good,
            &self.candidate.config_root,
            &self.candidate_paths,
            Some(&self.candidate),
        )?;
        report.step("restore", restore.is_clean(), t.elapsed(), None);
        let clean = restore.is_clean();
        rb.restore = Some(restore);
        if !clean {
            rb.state = "the restored files do not match the last-good snapshot (see restore); \
                        nginx was not reloaded again"
                .into();
            return Ok(Exit::RollbackFailed);
        }
        self.store.journal_phase(JournalPhase::Restored)?;
        // Our parse of the restored tree (for health checks) runs while nginx tests it. The
        // parse stays on this thread: the memory the candidate's tree gave back is in this
        // thread's allocator arena, and a parse on another thread would take as much again.
        let (restored, test) = std::thread::scope(|scope| {
            let testing = scope.spawn(|| self.env.nginx.test());
            let restored = self.env.load();
            let test = testing
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("the nginx -t thread failed".into())));
            (restored, test)
        });
        let restored = restored.map_err(|e| {
            Error::Internal(format!(
                "the restored last-good configuration does not load: {e}"
            ))
        })?;
        let test = test?;
        let passed = test.passed;
        rb.test = Some(test);
        if !passed {
            rb.state = "the restored last-good configuration fails nginx -t now (see test); the \
                        files are restored but nginx was not reloaded"
                .into();
            return Ok(Exit::RollbackFailed);
        }
        let (servers, watch) = (servers::extract(&restored), Watch::of(self.env, &restored));
        drop(restored);
        let attempt = self.attempt(&watch, &servers, true, report)?;
        rb.reload = Some(attempt.proof.clone());
        rb.health = attempt.health.clone();
        if attempt.passed() {
            rb.state = format!(
                "the last good configuration ({}) is live and verified",
                good.id
            );
            return Ok(Exit::RolledBack);
        }
        rb.state = if attempt.proof.took_effect {
            format!(
                "the last good configuration ({}) is live but fails verification too: the \
                 backend is failing, the configuration change is not the cause",
                good.id
            )
        } else {
            format!(
                "reloading the last good configuration failed: {}",
                attempt.why()
            )
        };
        Ok(Exit::RollbackFailed)
    }
}

/// One line on why verification failed.
fn health_summary(h: &HealthReport) -> String {
    if let Some(r) = h.results.iter().find(|r| r.failed) {
        let what = match (r.status, &r.error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        };
        return format!("{} (Host: {}) answered {what}", r.url, r.host);
    }
    if let Some(u) = h.upstream_errors.first() {
        return format!("nginx logged an upstream error: {}", u.text);
    }
    "no good answer within the verification window".into()
}
