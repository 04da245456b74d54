//! The reload transaction: snapshot the candidate, signal nginx, prove the reload, verify
//! through nginx, and on any failure after the signal restore the last good configuration
//! through the same test-reload-prove-verify path. The journal records every phase before it
//! starts, so a run killed at any point is found by the next one.

use std::path::PathBuf;
use std::time::Instant;

use crate::conf::{Config, Server};
use crate::error::{Error, Result};
use crate::errorlog::{Cursors, Sight};
use crate::exit::Exit;
use crate::health::samples::AroundReload;
use crate::health::{self, Check, HealthOptions, HealthReport, Known, Plan};
use crate::nginx;
use crate::pipeline::env::Env;
use crate::pipeline::{alongside, inspect};
use crate::reload::{self, Master, Proof, ReloadMethod};
use crate::report::{Outcome, Report, RollbackReport};
use crate::settings::Settings;
use crate::signals::{self, Phase};
use crate::store::{Drift, Outcome as SnapOutcome, Phase as JournalPhase, Snapshot, Store};
use crate::verdict::{self, AfterRollback, Baseline, Restored, Verdict};

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
    /// Which servers the change affects: the ones health requests check.
    pub impact: crate::impact::Impact,
    /// The candidate's error logs and worker count. Its logs also stand for those of the
    /// configuration running before the reload (not parsed: they are where a change that keeps
    /// its `error_log` lines logs), and during a rollback they are the running one's.
    pub watch: Watch,
    /// How long the master may take to bring up new workers.
    pub reload_deadline: std::time::Duration,
    /// Whether this run began the journal record or continues a caller's.
    pub journal: crate::pipeline::Journal,
    /// What the configuration nginx runs now is to this change.
    pub running: Running,
    /// Peers the probe found down without refusing the change (`ProbeReport::expected_down`):
    /// their connect errors in the log during verification are nginx failing over.
    pub expected_down: Vec<String>,
    /// The checks and the baseline, when worked out before; else both are made in `run`.
    pub prepared: Option<Prepared>,
    /// The pools the change edits, asked again before the signal and after the reload where
    /// no shadow asked them (see [`AroundReload`]).
    pub pools: Option<AroundReload>,
}

/// What the configuration nginx runs before the signal is to the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Running {
    /// The configuration the change replaces: its answers are the baseline.
    Baseline,
    /// Possibly an interrupted run's unverified candidate (`recover`): nothing to compare
    /// with, so every failure counts as the change's.
    Unverified,
}

/// What proving a reload of one configuration needs from it: where it logs and how many
/// workers it starts. Taken from the directive tree so the tree itself can be dropped before
/// the reload: on a 10,000-server configuration it is most of a run's memory.
pub struct Watch {
    pub logs: Vec<PathBuf>,
    pub workers: Option<usize>,
    /// The servers (and the reload) whose lines no log shows safe-reload.
    pub sight: Sight,
    /// Where the candidate sets the directives an `[alert]` after the reload can name.
    pub alert_places: Vec<verdict::alerts::Place>,
}

impl Watch {
    pub fn of(env: &Env, config: &Config) -> Watch {
        Watch {
            logs: env.error_logs(config),
            workers: nginx::worker_processes(config),
            sight: env.log_sight(config),
            alert_places: verdict::alerts::places(config),
        }
    }
}

/// The candidate's checks as the run worked them out before the transaction (the ones the
/// shadow sent), and the baseline taken with them alongside `nginx -t`.
pub struct Prepared {
    pub plan: Plan,
    /// `None`: the baseline is taken right before the signal.
    pub baseline: Option<HealthReport>,
}

/// What one reload attempt showed.
struct Attempt {
    proof: Proof,
    health: Option<HealthReport>,
    /// Files that changed between the test and the proof (forward only): nginx may have read
    /// them, so nothing was verified.
    drift: Option<Drift>,
    /// The signal was sent, or the reload command exited 0.
    sent: bool,
}

/// Which way a reload of the transaction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// To the candidate: the journal follows it.
    Forward,
    /// Back to last-good: the journal stays at `Restored`.
    Rollback,
}

/// How far `restore_and_verify` got.
enum Reached {
    NoLastGood,
    FilesDiffer,
    Reloaded(Box<Attempt>),
}

impl Transaction<'_> {
    fn method(&self) -> ReloadMethod {
        match &self.s.reload_cmd {
            Some(argv) => ReloadMethod::Command(argv.clone()),
            None => ReloadMethod::Signal,
        }
    }

    /// The candidate's checks (see [`inspect::candidate_checks`]): the same the shadow sent.
    pub fn checks(&self, servers: &[Server]) -> Plan {
        let root = &self.candidate.config_root;
        inspect::candidate_checks(self.s, servers, &self.impact, root)
    }

    fn health_options(&self) -> HealthOptions {
        HealthOptions {
            expected_down: self.expected_down.clone(),
            ..inspect::health_options(self.s, None)
        }
    }

    /// The checks against the running configuration, right before the signal: what the
    /// change is measured against, when it was not taken alongside `nginx -t` (none runs now
    /// to bind an address the running configuration does not have).
    fn baseline(&self, checks: &[Check], report: &mut Report) -> HealthReport {
        let running = alongside::serving(&self.master);
        let taken = health::recent::take(checks, &self.watch.logs, &self.health_options(), running);
        report.step_from("baseline", true, taken.began, taken.elapsed, None);
        taken.finish(&self.expected_down)
    }

    /// Signal, prove, verify with `checks`; `known` says which failures are not news. Errors
    /// here are failures to even try (signal refused).
    fn attempt(
        &self,
        watch: &Watch,
        checks: &[Check],
        known: &dyn Known,
        direction: Direction,
        report: &mut Report,
        unknown_before: bool,
    ) -> Result<Attempt> {
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
        // Written before the signal, never after: a kill between the two must leave a phase
        // that says nginx may run the candidate (`recover` rolls it back), and `reloading`
        // stays the phase of a run stopped before the signal, whose edit `recover` keeps.
        if direction == Direction::Forward {
            self.store.journal_phase(JournalPhase::Signalled)?;
        }
        let t = Instant::now();
        let sent = reload::trigger(&self.master, &self.method(), self.s.reload_timeout);
        if direction == Direction::Forward {
            crate::store::test_pause("signal-sent");
        }
        if let Err(e) = sent {
            // A failed signal or reload command that left nginx as it was never reached it;
            // one that did (a command failing after its signal) is proven as a signal is, on
            // the way forward and back alike: what nginx runs decides, not the exit status.
            if reload::not_begun(&self.master, &before) {
                report.step("reload", false, t.elapsed(), Some("not sent".into()));
                let proof = Proof::not_sent(&self.master, &before, e.to_string());
                return Ok(Attempt {
                    proof,
                    health: None,
                    drift: None,
                    sent: false,
                });
            }
            let then = match reload::master_alive(&self.master) {
                true => {
                    "nginx began a reload all the same: it is proven from its processes".to_string()
                }
                false => format!(
                    "nginx is not running any more: its master process {} is gone (stopped \
                     while the run reloaded it)",
                    self.master.pid
                ),
            };
            report.notes.push(format!("{e}\n{then}"));
        }
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
                drift: None,
                sent: true,
            });
        }
        // Read again once the reload is proven, before the checks: the master has parsed what
        // it loads by the time its new workers run, so a file that changed up to here may be
        // in it, and one that changes later (while the checks run) is not.
        if direction == Direction::Forward {
            let drift = self.recheck("recheck-after-proof", report);
            if !drift.is_empty() {
                return Ok(Attempt {
                    proof,
                    health: None,
                    drift: Some(drift),
                    sent: true,
                });
            }
        }
        match direction {
            Direction::Rollback => crate::store::test_pause("rollback-verifying"),
            Direction::Forward => {
                self.record(JournalPhase::Reloaded, report);
                self.record(JournalPhase::Verifying, report);
            }
        }
        if checks.is_empty() {
            let why = if direction == Direction::Rollback {
                "none of the change's checks applies to the restored configuration (they are \
                 of listens only the change has)"
            } else if self.impact.affected.is_empty() {
                "the change affects no server"
            } else {
                "no affected server has a proxied location on a local listen, and no --health URL"
            };
            report.notes.push(format!(
                "no health requests: {why}; only the reload itself was verified"
            ));
        }
        let t = Instant::now();
        let opts = HealthOptions {
            unknown_before,
            ..self.health_options()
        };
        let mut h = health::verify_against(checks, &mut logs, &opts, known);
        // The restored configuration answered these before the change: one that is only
        // slower now is not worse for it (see `health::wait_longer`). The candidate's checks
        // keep `--health-timeout` as their limit.
        // With what nginx ran before unknown (loaded outside safe-reload), a timeout is held
        // against the change: the candidate's checks are waited for as long first, so a site
        // that is only slow stays (an intermittent warning) and one that never answers goes.
        if direction == Direction::Rollback || self.running == Running::Unverified {
            health::wait_longer(&mut h, &mut logs, &opts, known);
        }
        report.step("verify", h.passed, t.elapsed(), None);
        Ok(Attempt {
            proof,
            health: Some(h),
            drift: None,
            sent: true,
        })
    }

    /// Run it: the candidate is on disk and tested; nginx has not been touched yet.
    pub fn run(mut self, report: &mut Report) -> Result<Exit> {
        // From the phase change on, a signal is only reported; one that came before it
        // still stops the run here, with nginx untouched.
        signals::set_phase(Phase::Verifying);
        if signals::interrupted() {
            signals::set_phase(Phase::Idle);
            // Never loaded: not left "pending" in `history` (best effort, nothing changed).
            let _ = self.store.set_outcome(
                &self.candidate.id,
                SnapOutcome::Interrupted,
                Some("interrupted before the reload: nginx was not touched".into()),
            );
            if self.journal == crate::pipeline::Journal::Begin {
                self.store.journal_clear()?;
            }
            return Err(Error::Interrupted);
        }
        // The candidate's servers are not needed past their checks. The baseline only reads,
        // so it runs before the journal says nginx is being reloaded.
        let servers = std::mem::take(&mut self.servers);
        let (plan, taken) = match self.prepared.take() {
            Some(p) => (p.plan, p.baseline),
            None => (self.checks(&servers), None),
        };
        // Coverage is of the affected servers, also when `--health` URLs replace their checks:
        // a URL that names none of them verifies none of them.
        let affected = if self.s.health.is_empty() {
            health::affected(&plan)
        } else {
            let root = &self.candidate.config_root;
            let derived = health::focused_checks(&servers, &self.impact, root);
            health::affected_by(&derived, &plan.checks)
        };
        drop(servers);
        let Plan {
            checks,
            not_checked,
            ..
        } = plan;
        let mut window = match (self.running, taken) {
            (Running::Baseline, Some(window)) => Some(window),
            (Running::Baseline, None) => Some(self.baseline(&checks, report)),
            (Running::Unverified, _) => None,
        };
        let mut pools = self.pools.take().filter(|_| window.is_some());
        // Its answers are the baseline's too: a pool that failed its share before the change
        // says so next to the same share after it.
        if let (Some(pools), Some(window)) = (pools.as_mut(), window.as_mut()) {
            pools.before(&checks, window, &self.health_options(), &self.watch.logs);
        }
        let baseline = window.as_ref().map_or_else(Baseline::unknown, Baseline::of);
        report.baseline = window;
        let prior = self.store.journal()?.map(|r| r.phase);
        let candidate = self.candidate.id.clone();
        self.store.journal_update(|r| {
            r.candidate = Some(candidate);
            r.phase = JournalPhase::Reloading;
        })?;
        // As late as it can be: right before the signal, after the baseline requests.
        let drift = self.recheck("recheck-before-signal", report);
        if !drift.is_empty() {
            return self.refuse_drift(report, &drift, prior);
        }
        // With what nginx ran before unknown, the candidate's 500 or 503 fails (and last-good's
        // answer decides, see `verdict::after_rollback`).
        let unknown = self.running == Running::Unverified;
        let attempt = self.attempt(
            &self.watch,
            &checks,
            &baseline,
            Direction::Forward,
            report,
            unknown,
        );
        let mut attempt = match attempt {
            Ok(a) if a.proof.untouched => return self.not_reloaded(report, a, prior),
            Ok(a) => a,
            Err(e) => {
                // The signal or reload command failed; nginx may or may not have reloaded.
                report.notes.push(format!("reloading failed: {e}"));
                let why = format!("reloading failed: {e}");
                return self.rollback(report, why, &baseline, &checks);
            }
        };
        if let Some(h) = attempt.health.as_mut() {
            h.not_checked = not_checked;
        }
        if let Some(drift) = attempt.drift.take() {
            report.reload = Some(attempt.proof);
            report.health = attempt.health;
            // A file nginx may have read since the signal is rolled back too.
            self.candidate_paths
                .extend(drift.added().map(PathBuf::from));
            let why = format!(
                "the configuration changed during the reload ({}): nginx may have loaded \
                 content that was never tested, and the verification cannot vouch for it",
                drift.describe()
            );
            return self.rollback(report, why, &baseline, &checks);
        }
        // One request through a pool the change edits most likely reached a server that
        // worked before it: the pool is asked again, as the shadow would have asked it.
        if let (Some(pools), Some(h)) = (&pools, attempt.health.as_mut()) {
            if h.passed {
                let t = Instant::now();
                pools.after(h, &self.health_options(), &self.watch.logs);
                report.step("pool samples", h.passed, t.elapsed(), None);
            }
        }
        let mut verdict = verdict::after_reload(&baseline, attempt.health.as_ref(), &attempt.proof);
        if let Verdict::Keep(kept) = &mut verdict {
            kept.alerts = verdict::alerts::of(&attempt.proof.alerts, &self.watch.alert_places);
        }
        report.coverage = Some(&affected[..])
            .zip(attempt.health.as_ref())
            .map(|(a, h)| {
                verdict::coverage(a, h, &self.watch.sight.servers).with_certificates(h, &baseline)
            });
        if !self.watch.sight.reload.is_empty() {
            let logs: Vec<String> = (self.watch.sight.reload.iter())
                .map(|u| u.describe())
                .collect();
            report.notes.push(format!(
                "the reload's [emerg] lines cannot be read ({}): nginx's workers alone proved it",
                logs.join("; ")
            ));
        }
        report.reload = Some(attempt.proof);
        report.health = attempt.health;
        let kept = match &verdict {
            Verdict::Keep(kept) => Some(kept.outcome()),
            Verdict::RollBack { .. } => None,
        };
        let why = verdict.reason().unwrap_or_default();
        report.verdict = Some(verdict);
        let Some((outcome, exit)) = kept else {
            return self.rollback(report, why, &baseline, &checks);
        };
        self.record(JournalPhase::Verified, report);
        let later = self.recheck("recheck-after-verify", report);
        if !later.is_empty() {
            report.notes.push(format!(
                "the configuration changed after the reload was proven ({}): nginx runs the \
                 tested snapshot {}, not the new content; run safe-reload again to apply it",
                later.describe(),
                self.candidate.id
            ));
        }
        // A change that stays while a site fails as it did before it (exit 4) is last-good
        // all the same: it is live, no check is worse than before it, and the configuration it
        // replaced failed the same way, so going back to that one mends nothing and would undo
        // a change the verdict kept (the next rollback would restore two changes back). Its
        // snapshot says it was already failing, so `history` tells it from a verified one.
        let (recorded, note) = match (outcome, &report.verdict) {
            (Outcome::AlreadyFailing, Some(Verdict::Keep(kept))) => {
                let first = kept.still_failing.first().map(|c| c.describe());
                let note = first.map(|f| format!("live, nothing worse than before it; {f}"));
                (SnapOutcome::AlreadyFailing, note)
            }
            _ => (SnapOutcome::Good, None),
        };
        let stored = (self.store.set_outcome(&self.candidate.id, recorded, note))
            .and_then(|_| self.store.set_last_good(&self.candidate))
            .and_then(|_| self.store.prune(self.s.retention))
            .and_then(|_| self.store.journal_clear());
        signals::set_phase(Phase::Idle);
        if let Err(e) = stored {
            // Live and verified, and not recorded as last-good. Its journal goes (a removal
            // works on a full disk): left at `verifying`, `recover` would roll a verified
            // change back. The next run finds the files differing from last-good, verifies
            // them and records them.
            let cleared = self.store.journal_clear().is_ok();
            let then = match cleared {
                true => {
                    "make room in the state directory, then run safe-reload again: it \
                         verifies the files on disk and records them as last-good"
                }
                false => {
                    "the journal still records this run; make room in the state \
                          directory, then run `safe-reload recover`"
                }
            };
            report.notes.push(format!(
                "the change is live and verified, but recording it as last-good failed: {e}; \
                 {then}"
            ));
        }
        Ok(report.finish(outcome, exit))
    }

    /// Record `phase` in the journal once nginx has been signalled, best effort: a state
    /// directory that fills up (or goes away) then must not stop the verification or the
    /// rollback that nginx's state needs. What could not be written is said; `status` and
    /// `recover` then read the phase before it, which asks them for no less.
    fn record(&self, phase: JournalPhase, report: &mut Report) {
        if let Err(e) = self.store.journal_phase(phase) {
            report.notes.push(format!(
                "could not record the run's phase ({}) in its journal: {e}; the run goes on",
                phase.name()
            ));
        }
    }

    /// The file set on disk against the candidate's snapshot: read again, globs included.
    fn recheck(&self, point: &str, report: &mut Report) -> Drift {
        crate::store::test_pause(point);
        let t = Instant::now();
        let drift = match self.env.load() {
            Ok(now) => crate::store::recheck(&self.candidate, &now.files)
                .unwrap_or_else(|e| Drift::unloadable(e.to_string())),
            Err(e) => Drift::unloadable_from(&self.candidate, e.to_string()),
        };
        report.step("recheck", drift.is_empty(), t.elapsed(), None);
        drift
    }

    /// Another writer changed the files after they were tested: nothing was signalled, and
    /// the run stops as a refusal that can be repeated.
    fn refuse_drift(
        &self,
        report: &mut Report,
        drift: &Drift,
        prior: Option<JournalPhase>,
    ) -> Result<Exit> {
        signals::set_phase(Phase::Idle);
        let what = drift.describe();
        for f in &drift.files {
            report.problems.push(crate::report::Problem {
                level: "error".into(),
                message: f.change.since_the_test().into(),
                file: Some(f.path.clone()),
                line: None,
                hint: None,
            });
        }
        let head = if drift.only_removed() && drift.files.len() == 1 {
            format!(
                "{} was removed after it was tested",
                drift.files[0].path.display()
            )
        } else if drift.only_removed() {
            format!("files were removed after they were tested ({what})")
        } else {
            format!("the configuration changed after it was tested ({what})")
        };
        report.notes.push(format!(
            "{head}; nginx was not signalled. Run again to test and reload what is on disk now"
        ));
        let note = format!("not reloaded: changed on disk after the test ({what})");
        self.store
            .set_outcome(&self.candidate.id, SnapOutcome::Refused, Some(note))?;
        self.leave_journal(prior)?;
        Ok(report.finish(Outcome::Refused, Exit::Refused))
    }

    /// nginx was not signalled: a run of our own leaves no journal, a caller's record goes
    /// back to the phase the caller left it in.
    fn leave_journal(&self, prior: Option<JournalPhase>) -> Result<()> {
        match (self.journal, prior) {
            (crate::pipeline::Journal::Begin, _) => self.store.journal_clear(),
            (_, Some(phase)) => self.store.journal_phase(phase),
            (_, None) => Ok(()),
        }
    }

    /// nginx never took the reload: it still runs what it ran, so there is nothing to roll
    /// back. The candidate stays on disk and in its snapshot, marked rejected; exit 1.
    fn not_reloaded(
        &self,
        report: &mut Report,
        attempt: Attempt,
        prior: Option<JournalPhase>,
    ) -> Result<Exit> {
        let why = format!(
            "the reload did not take effect: {}",
            attempt.proof.reason.as_deref().unwrap_or("no new workers")
        );
        self.store
            .set_outcome(&self.candidate.id, SnapOutcome::Rejected, Some(why.clone()))?;
        self.leave_journal(prior)?;
        signals::set_phase(Phase::Idle);
        report.notes.push(format!(
            "{why}\nnginx still runs the previous configuration; nothing was rolled back. The \
             candidate is on disk and kept as snapshot {}",
            self.candidate.id
        ));
        // A command that exited 0 may have handed the reload to something that does it later
        // (a queued systemd job, a wrapper that backgrounds it): nothing vouches for that.
        if let (ReloadMethod::Command(argv), true) = (self.method(), attempt.sent) {
            report.notes.push(format!(
                "the reload command ({}) exited 0: if it reloads nginx later, nginx loads the \
                 candidate unverified; `safe-reload rollback` puts last-good back, or run again \
                 with a reload command that returns once nginx has reloaded",
                crate::nginx::shell_line(&argv)
            ));
        }
        report.reload = Some(attempt.proof);
        Ok(report.finish(Outcome::Refused, Exit::Refused))
    }

    /// Put last-good back and prove it; the verdict on where that left things chooses the
    /// exit: 3 when it is back to its baseline, 4 otherwise. `recover` calls it too, to finish
    /// a rollback a killed run had begun.
    pub fn rollback(
        &self,
        report: &mut Report,
        why: String,
        baseline: &Baseline,
        checks: &[Check],
    ) -> Result<Exit> {
        let started = Instant::now();
        signals::set_phase(Phase::RollingBack);
        // Rejected before the phase says a restore began: a kill in between leaves a candidate
        // that `recover` finds already marked, never one left "pending".
        let _ =
            self.store
                .set_outcome(&self.candidate.id, SnapOutcome::Rejected, Some(why.clone()));
        self.record(JournalPhase::RollingBack, report);
        let mut rb = RollbackReport::new(why, &self.candidate);
        // The rejected change's window, out of the report while the rollback adds steps to it.
        let candidate = report.health.take();
        let known = AfterRollback {
            baseline,
            candidate: candidate.as_ref(),
        };
        let reached = self.restore_and_verify(&mut rb, checks, &known, report);
        report.health = candidate;
        rb.elapsed = started.elapsed();
        let reached = match reached {
            Ok(reached) => reached,
            Err(e) => {
                rb.state = format!(
                    "{e}. The rejected candidate is kept as snapshot {}; the journal still \
                     records this run: run `safe-reload status` and `safe-reload recover`",
                    self.candidate.id
                );
                report.rollback = Some(rb);
                return Ok(report.finish(Outcome::RollbackFailed, Exit::MustAct));
            }
        };
        let restored = match &reached {
            Reached::NoLastGood => Restored::NoLastGood,
            Reached::FilesDiffer => Restored::FilesDiffer,
            Reached::Reloaded(a) => Restored::Reloaded {
                proof: &a.proof,
                health: a.health.as_ref(),
            },
        };
        let v = verdict::after_rollback(baseline, report.health.as_ref(), restored);
        let (outcome, exit) = v.outcome();
        // Once last-good is back and live the run is over, even when it fails checks too;
        // with no last-good there is nothing to go back to. Either way nothing is left for
        // `recover` to finish.
        let restored_live = matches!(&reached, Reached::Reloaded(a) if a.proof.took_effect);
        if restored_live {
            // Best effort: without the mark, the next run only reloads once more.
            let _ = self.store.mark_loaded();
        }
        let nothing_to_restore = self.last_good.is_none();
        if let Reached::Reloaded(a) = reached {
            rb.reload = Some(a.proof);
            rb.health = a.health;
        }
        rb.state = v.state(rb.restored_to.as_deref());
        rb.verdict = Some(v);
        report.rollback = Some(rb);
        if exit == Exit::RolledBack {
            self.record(JournalPhase::RolledBack, report);
        }
        if exit == Exit::RolledBack || restored_live || nothing_to_restore {
            if let Err(e) = self.store.journal_clear() {
                report.notes.push(format!(
                    "could not remove the run's journal: {e}; `safe-reload recover` finds \
                     nothing left to do"
                ));
            }
        }
        signals::set_phase(Phase::Idle);
        Ok(report.finish(outcome, exit))
    }

    /// The candidate's file set and what the configuration on disk reads now: a file another
    /// writer added since the last recheck (a glob picks it up) is one the restore must find,
    /// save and move out, or the restored configuration would load it. The globs of the
    /// candidate and of last-good are matched on disk through their recorded bytes, so such a
    /// file is found even when it does not parse (and the tree on disk does not load).
    fn files_now(&self) -> Vec<PathBuf> {
        let main = &self.env.nginx.conf;
        let mut paths = self.candidate_paths.clone();
        paths.extend(self.store.globbed_paths(&self.candidate, main));
        if let Some(good) = &self.last_good {
            paths.extend(self.store.globbed_paths(good, main));
        }
        if let Ok(now) = self.env.load() {
            paths.extend(now.paths().map(PathBuf::from));
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// Restore last-good, reload it (no second `nginx -t`) and verify the checks that apply to
    /// it: the ones the running configuration answered before the change.
    fn restore_and_verify(
        &self,
        rb: &mut RollbackReport,
        checks: &[Check],
        known: &AfterRollback,
        report: &mut Report,
    ) -> Result<Reached> {
        let Some(good) = &self.last_good else {
            return Ok(Reached::NoLastGood);
        };
        rb.restored_to = Some(good.id.clone());
        let t = Instant::now();
        let current = self.files_now();
        let restore = self.store.restore_reading(
            good,
            &self.candidate.config_root,
            &current,
            Some(&self.candidate),
            &self.env.nginx.conf,
            good.created_time(),
        )?;
        report.step("restore", restore.is_clean(), t.elapsed(), None);
        if let Some(d) = &restore.displaced {
            report.notes.push(d.describe());
        }
        let clean = restore.is_clean();
        rb.restore = Some(restore);
        if !clean {
            return Ok(Reached::FilesDiffer);
        }
        self.record(JournalPhase::Restored, report);
        // No second `nginx -t`: the bytes are last-good's, hash-verified above, and the master
        // parses them itself on the signal. If they no longer load (a file outside the set is
        // gone), it logs the [emerg] and keeps running the candidate, which the proof reads
        // just as it would a refusing `nginx -t`: one parse and one reload, not two of each.
        let restored = self.env.load().map_err(|e| {
            Error::Internal(format!(
                "the restored last-good configuration does not load: {e}"
            ))
        })?;
        let watch = Watch::of(self.env, &restored);
        drop(restored);
        let running = checks.iter().map(Check::to_running).collect();
        let (applicable, dropped) = known.baseline.applicable(running);
        rb.dropped = dropped.into_iter().map(|c| c.url).collect();
        // Judged as the candidate was, where it was (not by `recover`: no answer of it to
        // compare with, and a restored 500 is then no failure).
        let unknown = self.running == Running::Unverified && known.candidate.is_some();
        let attempt = self.attempt(
            &watch,
            &applicable,
            known,
            Direction::Rollback,
            report,
            unknown,
        )?;
        Ok(Reached::Reloaded(Box::new(attempt)))
    }
}
