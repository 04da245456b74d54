//! The journal of a run in flight: `journal.json`, written before any config file changes or
//! nginx is signalled, rewritten at every phase transition, removed when the run finishes.
//!
//! A run killed at any point leaves the journal behind; the next run sees it and `recover`
//! knows how far the dead run got. Every write is atomic and fsynced, so the journal on disk is
//! always one whole record.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::atomic::{self, io_err, Attrs};
use super::{new_id, now_rfc3339, Store};
use crate::error::{Error, Result};

/// How far a run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Intent recorded; nothing changed yet.
    Started,
    /// Putting a snapshot's files in place before the pipeline (`rollback ID`); nginx not
    /// touched. The record's `candidate` names the files from before, which `recover` puts back.
    Restoring,
    /// The candidate is recorded as a snapshot.
    Snapshotted,
    /// `nginx -t` and preflight passed.
    Tested,
    /// About to recheck the file set and signal nginx (or run the reload command); nginx is
    /// not signalled before the next phase is written.
    Reloading,
    /// The signal (or the reload command) is being sent: nginx may be loading the candidate,
    /// though nothing has proven or judged it.
    Signalled,
    /// nginx was signalled and the reload proven.
    Reloaded,
    /// Health verification through nginx in progress.
    Verifying,
    /// Verified; recording the candidate as last-good.
    Verified,
    /// Restoring the last-good files.
    RollingBack,
    /// Last-good files restored; reloading them.
    Restored,
    /// Rolled back and verified.
    RolledBack,
}

impl Phase {
    /// Whether nginx may have been signalled: from here on nginx may run an unverified
    /// configuration, so `recover` must verify it or go back to last-good.
    pub fn nginx_touched(self) -> bool {
        !matches!(
            self,
            Phase::Started | Phase::Restoring | Phase::Snapshotted | Phase::Tested
        )
    }

    /// The name used in the journal and by [`test_pause`].
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Test hook, inert unless `SAFE_RELOAD_TEST_PAUSE` is set: when its comma-separated list
/// names `point` (a journal phase such as `reloading` or `signalled`, or `snapshot-object`,
/// `signal-sent`, `restore-file`, `displaced-saved`, `recheck-before-signal`,
/// `recheck-after-proof`, `rollback-verifying`),
/// the process stops itself with SIGSTOP right there, so a crash or
/// signal test can act on it at a known moment instead of guessing with timers.
pub fn test_pause(point: &str) {
    let Some(list) = std::env::var_os("SAFE_RELOAD_TEST_PAUSE") else {
        return;
    };
    if list.to_string_lossy().split(',').any(|p| p == point) {
        // SAFETY: raising a signal on ourselves has no preconditions.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// One run in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// Unique per run.
    pub run_id: String,
    /// The run's process.
    pub pid: u32,
    /// Start time, RFC 3339 UTC.
    pub started: String,
    /// The run's command line.
    pub command: String,
    /// The candidate snapshot, once recorded.
    pub candidate: Option<String>,
    /// The last-good snapshot at the start of the run.
    pub last_good: Option<String>,
    /// The current phase.
    pub phase: Phase,
    /// Time of the last phase transition, RFC 3339 UTC.
    #[serde(default)]
    pub updated: String,
    /// For `edit FILE`: the file the edit was put in, to be put back unless the edit verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<EditRecord>,
    /// For `rollback ID` (phase `Restoring`): the file set the configuration on disk named
    /// before the restore, so `recover` can put back a file outside the root that the
    /// half-restored tree no longer names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_before: Vec<PathBuf>,
}

/// The file an `edit` run put the operator's edit into, and what it held before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditRecord {
    /// The path as the operator named it.
    pub path: PathBuf,
    /// Where the edit was written: the file behind the symlinks.
    pub real: PathBuf,
    /// The object holding the file's bytes before the edit; none when it did not exist.
    pub original: Option<String>,
    /// The hash of the edit's bytes, to tell them from another writer's.
    pub edited: String,
    /// The file's mode before the edit.
    pub mode: u32,
    /// The file's owner before the edit.
    pub owner: Option<(u32, u32)>,
    /// Where the edit is kept (`STATE/edits/...`).
    pub kept: PathBuf,
}

impl JournalRecord {
    /// A record for this process, in phase `Started`.
    pub fn new(command: String, candidate: Option<String>, last_good: Option<String>) -> Self {
        let now = now_rfc3339();
        JournalRecord {
            run_id: new_id(),
            pid: std::process::id(),
            started: now.clone(),
            command,
            candidate,
            last_good,
            phase: Phase::Started,
            updated: now,
            edit: None,
            files_before: Vec::new(),
        }
    }
}

impl Store {
    fn journal_path(&self) -> PathBuf {
        self.root.join("journal.json")
    }

    fn write_journal(&self, rec: &JournalRecord) -> Result<()> {
        let path = self.journal_path();
        let json = serde_json::to_vec_pretty(rec).map_err(|e| Error::State {
            path: path.clone(),
            message: format!("cannot encode the journal: {e}"),
        })?;
        atomic::write_atomic(&path, &json, Attrs::private())?;
        test_pause(&rec.phase.name());
        Ok(())
    }

    /// Records a run's intent durably. Refuses while another run's record is there.
    pub fn journal_begin(&self, rec: &JournalRecord) -> Result<()> {
        if let Some(old) = self.journal()? {
            return Err(Error::State {
                path: self.journal_path(),
                message: format!(
                    "run {} (pid {}, `{}`) did not finish (phase {:?}); run `safe-reload recover`",
                    old.run_id, old.pid, old.command, old.phase
                ),
            });
        }
        self.write_journal(rec)
    }

    /// Records a phase transition durably.
    pub fn journal_phase(&self, phase: Phase) -> Result<()> {
        self.journal_update(|rec| rec.phase = phase)
    }

    /// Changes the record durably (e.g. to name the candidate once it is recorded).
    pub fn journal_update(&self, change: impl FnOnce(&mut JournalRecord)) -> Result<()> {
        let mut rec = self.journal()?.ok_or_else(|| Error::State {
            path: self.journal_path(),
            message: "no run in progress to record a phase for".into(),
        })?;
        change(&mut rec);
        rec.updated = now_rfc3339();
        self.write_journal(&rec)
    }

    /// Marks the run finished.
    pub fn journal_clear(&self) -> Result<()> {
        let path = self.journal_path();
        match std::fs::remove_file(&path) {
            Ok(()) => atomic::sync_dir(&self.root),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, "remove", e)),
        }
    }

    /// The record of an unfinished run, if any.
    pub fn journal(&self) -> Result<Option<JournalRecord>> {
        let path = self.journal_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "read", e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::State {
                path,
                message: format!("unreadable journal: {e}"),
            })
    }
}
