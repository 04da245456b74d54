//! The state directory: content-addressed snapshots of the config file set, the `last-good`
//! pointer, the journal of a run in flight, the run lock and saved edits.
//!
//! Everything a run needs to put a working configuration back lives here, so the directory is
//! private (0700, ours) and every write is atomic (see `atomic`). File contents are stored once
//! under `objects/ab/cdef...` by blake3 hash as plain files an operator can read with standard
//! tools; a snapshot is a JSON manifest under `snapshots/ID.json`.

mod atomic;
mod drift;
mod globbed;
mod journal;
mod lock;
mod manifest;
mod restore;
mod scan;
mod snapshot;
mod writable;

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use atomic::{is_root, sweep_temp_files, write_atomic, Attrs, TEMP_PREFIX};
pub use drift::{recheck, Drift, DriftChange, Drifted};
pub use journal::{test_pause, EditRecord, JournalRecord, Phase};
pub use lock::LockGuard;
pub use manifest::{valid_hash, Entry, EntryKind, ExternalEntry, Outcome, Snapshot, SnapshotMeta};
pub use restore::{Displaced, RestoreFailure, RestoreReport};
pub use scan::{
    relative_to, resolve_parent, resolve_recorded, resolve_recorded_dir, scan, Scanned,
    ScannedEntry, ScannedExternal,
};
pub use snapshot::PruneReport;
pub use writable::{obstacles, Obstacle};

use crate::error::{Error, Result};

/// An opened, checked state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the state directory, creating it (mode 0700, parents as needed) if missing.
    /// Refuses a directory another user owns or that group or others can write: whoever can
    /// write it can make a restore put arbitrary content into the nginx config.
    pub fn open(root: &Path) -> Result<Store> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| atomic::io_err(root, "create the state directory", e))?;
        check_private(root)?;
        let store = Store {
            root: root.to_path_buf(),
        };
        for sub in ["objects", "snapshots", "edits"] {
            store.ensure_dir(&root.join(sub))?;
        }
        Ok(store)
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| atomic::io_err(dir, "create", e))
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Where the object with this hash is (or would be) stored.
    pub fn object_path(&self, hash: &str) -> PathBuf {
        let (dir, rest) = hash.split_at(hash.len().min(2));
        self.root.join("objects").join(dir).join(rest)
    }

    /// Reads an object and checks its content still has its hash.
    pub fn read_object(&self, hash: &str) -> Result<Vec<u8>> {
        if !valid_hash(hash) {
            return Err(self.state_err(format!("malformed object hash '{hash}'")));
        }
        let path = self.object_path(hash);
        let bytes = fs_err::read(&path)?;
        let actual = blake3::hash(&bytes).to_hex();
        if actual.as_str() != hash {
            return Err(Error::State {
                path,
                message: format!("object is corrupt: its content hashes to {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Stores `bytes` under `hash` unless an object with that hash and these bytes is already
    /// there. One whose bytes differ (a disk error, a hand edit) is written again: a snapshot
    /// (`init` of the files it was taken from) mends the store instead of recording a corrupt
    /// object as its own, which every later read refused.
    fn put_object(&self, hash: &str, bytes: &[u8]) -> Result<()> {
        let path = self.object_path(hash);
        let same = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
                && std::fs::read(p).is_ok_and(|b| b == bytes)
        };
        if same(&path) {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            self.ensure_dir(dir)?;
        }
        atomic::write_atomic(&path, bytes, atomic::Attrs::private())?;
        journal::test_pause("snapshot-object");
        Ok(())
    }

    /// Stores `bytes` as an object (e.g. a file's content before an edit); returns its hash.
    pub fn keep_bytes(&self, bytes: &[u8]) -> Result<String> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        self.put_object(&hash, bytes)?;
        Ok(hash)
    }

    /// Keeps a copy of an edited or rejected file under `edits/`; returns where.
    pub fn save_edit(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path =
            self.root
                .join("edits")
                .join(format!("{}-{}", new_id(), clean.trim_start_matches('.')));
        atomic::write_atomic(&path, bytes, atomic::Attrs::private())?;
        Ok(path)
    }

    fn state_err(&self, message: String) -> Error {
        Error::State {
            path: self.root.clone(),
            message,
        }
    }
}

fn check_private(root: &Path) -> Result<()> {
    let meta = fs_err::metadata(root)?;
    let refuse = |message: String| {
        Err(Error::State {
            path: root.to_path_buf(),
            message,
        })
    };
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return refuse(format!(
            "is owned by uid {}, not by us (uid {me}); fix with chown",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "is writable by group or others (mode {:o}); fix with chmod 700",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The current time as RFC 3339 UTC, seconds precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A new id, sortable by time: `20261121T153012Z-041230-1a2b3c` (UTC time, microseconds
/// within the second, random suffix against two ids in the same microsecond).
pub fn new_id() -> String {
    let now = SystemTime::now();
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let micros = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    format!("{stamp}-{micros:06}-{}", random_hex(6))
}

/// `n` hex digits, unique enough for temp and id suffixes (no cryptographic claim).
pub(crate) fn random_hex(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.update(&nanos.to_le_bytes());
    let hex = hasher.finalize().to_hex();
    hex[..n.min(64)].to_string()
}

/// The person behind this run: `$SUDO_USER`, else `$USER`, else `uid N`.
pub fn current_user() -> String {
    ["SUDO_USER", "USER"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| {
            // SAFETY: getuid has no preconditions and cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// This process's command line, arguments joined by spaces, with credentials redacted: it is
/// stored in snapshots and the journal.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    redact_args(&args).join(" ")
}

/// Passwords in URLs and `--health-header` values (often a token) as `***`.
fn redact_args(args: &[String]) -> Vec<String> {
    let header_value = |h: &str| match h.split_once(':') {
        Some((name, _)) => format!("{name}: ***"),
        None => "***".to_string(),
    };
    let mut out = Vec::with_capacity(args.len());
    for (i, a) in args.iter().enumerate() {
        let after_flag = i > 0 && args[i - 1] == "--health-header";
        out.push(if after_flag {
            header_value(a)
        } else if let Some(h) = a.strip_prefix("--health-header=") {
            format!("--health-header={}", header_value(h))
        } else {
            crate::health::redact(a)
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_command_lines_hold_no_credentials() {
        let args: Vec<String> = [
            "safe-reload",
            "--health",
            "http://ops:s3cret@a.test/",
            "--health-header",
            "X-Token: t0ken",
            "--health-header=Authorization: Bearer b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            redact_args(&args).join(" "),
            "safe-reload --health http://ops:***@a.test/ --health-header X-Token: *** \
             --health-header=Authorization: ***"
        );
    }
}
