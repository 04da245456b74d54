//! What a run found and did, as data. `pipeline` fills a [`Report`]; `output` renders it as text
//! or as one JSON document. Both renderings come from this one struct, so they carry the same
//! facts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::conf::targets::{Finding, Target};
use crate::diff::ConfigDiff;
use crate::exit::Exit;
use crate::health::HealthReport;
use crate::nginx::TestOutcome;
use crate::preflight::ListenConflict;
use crate::probe::ProbeReport;
use crate::reload::Proof;
use crate::shadow::{Leftover, ShadowReport};
use crate::store::{JournalRecord, RestoreReport, Snapshot};
use crate::verdict::{Coverage, RollbackVerdict, Verdict};

/// How a command ended, the JSON report's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A read-only command found nothing wrong (`targets`, `check`, `probe`, `diff`, ...).
    Ok,
    /// The candidate went live and verified.
    Reloaded,
    /// Nothing changed since last-good; no reload.
    Unchanged,
    /// Stopped before reloading; nginx untouched.
    Refused,
    /// Reloaded, the change broke a check, the previous config is live and back to its
    /// baseline.
    RolledBack,
    /// The rollback failed, or the restored configuration fails checks it passed before.
    RollbackFailed,
    /// The candidate is live and made nothing worse, but a check failed before the change and
    /// still does: nothing was rolled back, an operator must act.
    AlreadyFailing,
    /// A baseline was recorded (`init`).
    Recorded,
    /// The operator answered no at the prompt; nothing changed.
    Cancelled,
    /// `recover` put last-good's files back with nginx not running: nothing was signalled or
    /// verified; nginx reads them when it starts.
    NotRunning,
    /// Stopped by a signal before anything changed.
    Interrupted,
    /// An error stopped the command (exit 2, or 1 for configuration errors).
    Error,
}

/// One pipeline step with its timing. Steps are listed as they are recorded, which for the
/// ones run alongside `nginx -t` is after they ended: `started` says when each began.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    /// Since the run began.
    #[serde(rename = "started_ms", serialize_with = "ms")]
    pub started: Duration,
    #[serde(rename = "elapsed_ms", serialize_with = "ms")]
    pub elapsed: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A duration as milliseconds with microsecond precision: every `elapsed_ms` of the JSON report.
pub fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

/// An optional duration as milliseconds (see [`ms`]).
pub fn ms_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ms(d, s),
        None => s.serialize_none(),
    }
}

/// A problem in the configuration with its place: from `nginx -t` or from our own reading.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `emerg`, `alert`, `crit`, `error`, `warn` (nginx's levels) or `config`.
    pub level: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Problem {
    /// A configuration error (`Error::Config`) as a problem at its file and line.
    pub fn from_config_error(e: &crate::Error, level: &str) -> Option<Problem> {
        match e {
            crate::Error::Config {
                file,
                line,
                message,
            } => Some(Problem {
                level: level.into(),
                message: message.clone(),
                file: Some(file.clone()),
                line: Some(*line),
                hint: None,
            }),
            _ => None,
        }
    }
}

impl From<&Finding> for Problem {
    fn from(f: &Finding) -> Problem {
        Problem {
            level: "config".into(),
            message: f.message.clone(),
            file: Some(f.file.to_path_buf()),
            line: Some(f.line),
            hint: f.hint.clone(),
        }
    }
}

/// The report of one command.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub outcome: Outcome,
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<Target>>,
    /// `nginx -t` as run on the candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<TestOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
    /// New `listen` addresses held by another program.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ListenConflict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<ConfigDiff>,
    /// Which servers the change affects, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<crate::impact::Impact>,
    /// The candidate's checks through a throwaway nginx, before the reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowReport>,
    /// The candidate's snapshot id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Evidence that the reload took effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<Proof>,
    /// The same checks against the running configuration, before the signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<HealthReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// What the reload did, judged against the baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// How many of the servers the change affects were verified, and what was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<Snapshot>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    /// Said before the reload, loudly: e.g. no baseline to roll back to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Plain-language notes: what was done, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The details were already shown (e.g. before `edit` asked what to do next): the final
    /// rendering only repeats the notes and the outcome.
    #[serde(skip)]
    pub rendered: bool,
    /// When the run began: what each step's `started` counts from.
    #[serde(skip)]
    pub began: Instant,
}

impl Report {
    /// An empty report for a command; the outcome is set as the run ends.
    pub fn new(command: &str) -> Report {
        Report {
            command: command.to_string(),
            outcome: Outcome::Ok,
            exit_code: 0,
            config: None,
            steps: Vec::new(),
            problems: Vec::new(),
            targets: None,
            test: None,
            probe: None,
            conflicts: Vec::new(),
            diff: None,
            impact: None,
            shadow: None,
            snapshot: None,
            reload: None,
            baseline: None,
            health: None,
            verdict: None,
            coverage: None,
            rollback: None,
            history: None,
            last_good: None,
            status: None,
            warnings: Vec::new(),
            notes: Vec::new(),
            error: None,
            rendered: false,
            began: Instant::now(),
        }
    }

    /// Set the outcome and the exit status that goes with it.
    pub fn finish(&mut self, outcome: Outcome, exit: Exit) -> Exit {
        self.outcome = outcome;
        self.exit_code = exit.code();
        exit
    }

    /// Record a step that ends now.
    pub fn step(
        &mut self,
        name: &'static str,
        ok: bool,
        elapsed: Duration,
        detail: Option<String>,
    ) {
        let started = Instant::now().checked_sub(elapsed).unwrap_or(self.began);
        self.step_from(name, ok, started, elapsed, detail);
    }

    /// Record a step that began at `started`: one that ran on a thread of its own and ended
    /// before it is recorded.
    pub fn step_from(
        &mut self,
        name: &'static str,
        ok: bool,
        started: Instant,
        elapsed: Duration,
        detail: Option<String>,
    ) {
        self.steps.push(Step {
            name,
            ok,
            started: started.saturating_duration_since(self.began),
            elapsed,
            detail,
        });
    }
}

/// How the reason of a rollback `recover` makes for a run killed before it judged its
/// reloaded candidate begins (see [`RollbackReport::of_unjudged_kill`]).
pub const KILLED_UNJUDGED: &str = "the run was killed while";

/// How that reason begins where nginx had not loaded the candidate yet: the run was killed
/// between recording its signal and nginx's reload (a `--reload-cmd` still running), so the
/// rollback only makes sure a signal still on its way loads nothing untested.
pub const KILLED_BEFORE_LOAD: &str = "the run was killed while it signalled nginx, before nginx";

/// What a rollback did and where it left things.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// Why the candidate was rejected.
    pub reason: String,
    /// The rejected candidate's snapshot: the edit is kept there.
    pub rejected: String,
    /// The snapshot restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<TestOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<Proof>,
    /// Checks not made again: they belong to listens only the rejected configuration had
    /// (the running configuration refused them before the change).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// The restored configuration judged against the baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<RollbackVerdict>,
    /// Where things stand, in words an operator can act on.
    pub state: String,
    /// From the decision to roll back to the end of the rollback: restore, test, reload,
    /// proof and verification of the last good configuration.
    #[serde(rename = "elapsed_ms", serialize_with = "ms")]
    pub elapsed: Duration,
}

impl RollbackReport {
    /// `recover`'s rollback of a run killed before it judged its candidate (it signalled
    /// nginx or was verifying), not of one killed while it rolled back a failed change.
    pub fn of_unjudged_kill(&self) -> bool {
        self.reason.starts_with(KILLED_UNJUDGED)
    }

    /// `recover`'s rollback of a run killed before nginx loaded its candidate (see
    /// [`KILLED_BEFORE_LOAD`]).
    pub fn of_kill_before_load(&self) -> bool {
        self.reason.starts_with(KILLED_BEFORE_LOAD)
    }

    /// A rollback of `rejected` for `reason`, before anything is done.
    pub fn new(reason: String, rejected: &Snapshot) -> RollbackReport {
        RollbackReport {
            reason,
            rejected: rejected.id.clone(),
            restored_to: None,
            restore: None,
            test: None,
            reload: None,
            dropped: Vec::new(),
            health: None,
            verdict: None,
            state: String::new(),
            elapsed: Duration::ZERO,
        }
    }
}

/// `status`: is nginx running, is the config on disk the last good one, is a run unfinished.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_pid: Option<i32>,
    /// Why nginx is not considered running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_running: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_good: Option<String>,
    /// The journal of a run that did not finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<JournalRecord>,
    /// The configuration on disk does not load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// Shadow nginx instances whose run was killed before it could stop them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub leftover_shadows: Vec<Leftover>,
    /// The files equal last-good, but nginx does not run them: why (reloaded outside
    /// safe-reload since, or a certificate renewed since it loaded); the next run reloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_loaded: Option<String>,
    /// The files differ from last-good, and nginx loaded its configuration after last-good
    /// was recorded (by hand, outside safe-reload): it may run these files already.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_outside: Option<String>,
    /// nginx loaded its configuration (RFC 3339) after the interrupted run signalled it: the
    /// run's own reload, which `recover` verifies or undoes, not one outside safe-reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupted_reload: Option<String>,
    /// Another run holds the lock now: who (its pid, start and command).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_in_progress: Option<String>,
}
