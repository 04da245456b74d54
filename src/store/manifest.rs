//! Snapshot manifests: what a snapshot records about each file, and the validation every
//! manifest passes when read back.
//!
//! Manifests live in the state directory, which another tool or a person could edit. A tampered
//! manifest must not steer a restore outside the config tree, so every path is checked on read:
//! relative, no `..`, no NUL, no entry below a symlink entry, hashes of the right shape.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Manifest format version, bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 1;

/// What became of the configuration a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Recorded before the run decided (a candidate under test).
    Pending,
    /// Reloaded and verified.
    Good,
    /// Reloaded, and no check was worse than before it, but a site that failed before it
    /// still fails (exit 4): live and last-good all the same, since the configuration it
    /// replaced failed the same way.
    AlreadyFailing,
    /// Recorded by `init` as the known-good starting point.
    Baseline,
    /// Failed after reload and was rolled back; the user's edit is kept here.
    Rejected,
    /// Refused before reload (kept for `edit`).
    Refused,
    /// Its run was stopped (a signal, or killed and recovered) before it signalled nginx:
    /// never loaded, never judged.
    Interrupted,
    /// Taken before an `edit` session.
    Edit,
    /// The configuration on disk before `rollback` replaced it.
    Replaced,
    /// Versions a restore found on disk that neither the restored snapshot nor the rejected
    /// candidate holds (another writer's edit), kept before the restore overwrote them.
    Displaced,
}

impl Outcome {
    /// Whether this configuration was live and no worse than the one before it (or recorded
    /// as such by `init`): one to go back to.
    pub fn is_good(self) -> bool {
        matches!(
            self,
            Outcome::Good | Outcome::AlreadyFailing | Outcome::Baseline
        )
    }

    /// The name the manifest and the JSON report use: `good`, `already_failing`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Good => "good",
            Outcome::AlreadyFailing => "already_failing",
            Outcome::Baseline => "baseline",
            Outcome::Rejected => "rejected",
            Outcome::Refused => "refused",
            Outcome::Interrupted => "interrupted",
            Outcome::Edit => "edit",
            Outcome::Replaced => "replaced",
            Outcome::Displaced => "displaced",
        }
    }
}

/// Who made a snapshot, why, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// What became of this configuration.
    pub outcome: Outcome,
    /// The person behind the run (`$SUDO_USER`, `$USER` or the uid).
    pub user: String,
    /// The command line of the run.
    pub command: String,
    /// Free text, e.g. why a candidate was rejected.
    #[serde(default)]
    pub note: Option<String>,
    /// Paths (relative to the config root) that differ from the previous good snapshot.
    #[serde(default)]
    pub changed_files: Vec<String>,
}

/// Whether a manifest entry is a regular file or a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A symlink; `target` holds what readlink returned.
    Symlink,
}

/// One path inside the config root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the config root.
    pub path: PathBuf,
    /// File or symlink.
    pub kind: EntryKind,
    /// Permission bits (`0o7777` part of the mode).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The link target as written by readlink (symlinks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    /// Content size in bytes (for a symlink: the content read through it).
    pub size: u64,
    /// blake3 of the content, lowercase hex.
    pub hash: String,
}

/// A file of the set outside the config root, by absolute path: snapshotted, restored and
/// verified like the rest, but only ever written when the configuration read from disk names it
/// (see `restore`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalEntry {
    /// Absolute path, directories resolved.
    pub path: PathBuf,
    /// File or symlink (manifests from before outside files were restored hold files only).
    #[serde(default = "file_kind")]
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The link target as written by readlink (symlinks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    /// Content size in bytes.
    pub size: u64,
    /// blake3 of the content, lowercase hex.
    pub hash: String,
}

fn file_kind() -> EntryKind {
    EntryKind::File
}

/// A recorded configuration file set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Manifest format version.
    pub version: u32,
    /// Sortable by time, e.g. `20261121T153012Z-041230-1a2b3c`.
    pub id: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// The config root the relative paths are relative to.
    pub config_root: PathBuf,
    /// Who, why, what became of it.
    pub meta: SnapshotMeta,
    /// Files and symlinks inside the config root.
    pub files: Vec<Entry>,
    /// Files of the set outside the config root.
    #[serde(default)]
    pub external: Vec<ExternalEntry>,
}

impl Snapshot {
    /// The entry at a relative path.
    pub fn entry(&self, rel: &Path) -> Option<&Entry> {
        self.files.iter().find(|e| e.path == rel)
    }

    /// The entry outside the root at an absolute path.
    pub fn external_entry(&self, abs: &Path) -> Option<&ExternalEntry> {
        self.external.iter().find(|e| e.path == abs)
    }

    /// How many paths are recorded, inside and outside the root (a symlink and the file
    /// behind it are two): the one count `init`, `history` and the report use.
    pub fn count(&self) -> usize {
        self.files.len() + self.external.len()
    }

    /// Every symlink entry by its absolute path, with its recorded target: what
    /// [`super::scan::resolve_recorded`] follows to find where a path nginx opens was recorded.
    pub fn links(&self) -> std::collections::HashMap<PathBuf, PathBuf> {
        let inside = (self.files.iter())
            .filter(|e| e.kind == EntryKind::Symlink)
            .filter_map(|e| Some((self.config_root.join(&e.path), e.target.clone()?)));
        let outside = (self.external.iter())
            .filter(|e| e.kind == EntryKind::Symlink)
            .filter_map(|e| Some((e.path.clone(), e.target.clone()?)));
        inside.chain(outside).collect()
    }

    /// The recorded hash of whatever is at `abs` (inside or outside the root).
    pub fn hash_at(&self, abs: &Path) -> Option<&str> {
        let inside = abs
            .strip_prefix(&self.config_root)
            .ok()
            .and_then(|rel| self.entry(rel));
        inside
            .map(|e| e.hash.as_str())
            .or_else(|| self.external_entry(abs).map(|e| e.hash.as_str()))
    }

    /// Creation time, when the recorded text parses.
    pub fn created_time(&self) -> Option<std::time::SystemTime> {
        humantime::parse_rfc3339(&self.created).ok()
    }
}

/// Whether `hash` is 64 lowercase hex digits.
pub fn valid_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `id` is safe to use as a file name (no separators, no leading dot).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Why a relative entry path is unsafe, if it is.
pub fn relative_path_problem(path: &Path) -> Option<&'static str> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Some("has an empty path");
    }
    if bytes.contains(&0) {
        return Some("contains a NUL byte");
    }
    if path.is_absolute() {
        return Some("is an absolute path");
    }
    for component in path.components() {
        match component {
            Component::ParentDir => return Some("leaves the config root"),
            Component::RootDir | Component::Prefix(_) => return Some("is an absolute path"),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    None
}

/// Checks a manifest read from `file`; errors name the manifest and the entry.
pub fn validate(file: &Path, snap: &Snapshot) -> Result<()> {
    let bad = |what: &Path, why: &str| Error::State {
        path: file.to_path_buf(),
        message: format!("manifest entry '{}' {why}", what.display()),
    };
    if snap.version != MANIFEST_VERSION {
        return Err(Error::State {
            path: file.to_path_buf(),
            message: format!("unknown manifest version {}", snap.version),
        });
    }
    if !valid_id(&snap.id) || file.file_stem() != Some(std::ffi::OsStr::new(&snap.id)) {
        return Err(bad(Path::new(&snap.id), "is not this manifest's id"));
    }
    validate_entries(file, snap)
}

/// Checks every entry's path, hash and target; errors name the manifest and the entry.
pub fn validate_entries(file: &Path, snap: &Snapshot) -> Result<()> {
    let bad = |what: &Path, why: &str| Error::State {
        path: file.to_path_buf(),
        message: format!("manifest entry '{}' {why}", what.display()),
    };
    let mut seen = BTreeSet::new();
    let links: BTreeSet<&Path> = snap
        .files
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
        .map(|e| e.path.as_path())
        .collect();
    for entry in &snap.files {
        if let Some(why) = relative_path_problem(&entry.path) {
            return Err(bad(&entry.path, why));
        }
        if !valid_hash(&entry.hash) {
            return Err(bad(&entry.path, "has a malformed hash"));
        }
        if !seen.insert(entry.path.as_path()) {
            return Err(bad(&entry.path, "appears twice"));
        }
        if entry.path.ancestors().skip(1).any(|a| links.contains(a)) {
            return Err(bad(&entry.path, "lies below a symlink entry"));
        }
        check_target(entry.kind, entry.target.as_deref()).map_err(|why| bad(&entry.path, why))?;
    }
    for ext in &snap.external {
        let raw = ext.path.as_os_str().as_bytes();
        if !ext.path.is_absolute() || raw.contains(&0) {
            return Err(bad(&ext.path, "is not a clean absolute path"));
        }
        if ext.path.components().any(|c| c == Component::ParentDir) {
            return Err(bad(&ext.path, "contains '..'"));
        }
        if !valid_hash(&ext.hash) {
            return Err(bad(&ext.path, "has a malformed hash"));
        }
        check_target(ext.kind, ext.target.as_deref()).map_err(|why| bad(&ext.path, why))?;
        if !seen.insert(ext.path.as_path()) {
            return Err(bad(&ext.path, "appears twice"));
        }
    }
    Ok(())
}

fn check_target(kind: EntryKind, target: Option<&Path>) -> std::result::Result<(), &'static str> {
    match (kind, target) {
        (EntryKind::File, None) => Ok(()),
        (EntryKind::File, Some(_)) => Err("is a file with a symlink target"),
        (EntryKind::Symlink, None) => Err("is a symlink without a target"),
        (EntryKind::Symlink, Some(t)) => {
            let raw = t.as_os_str().as_bytes();
            if raw.is_empty() || raw.contains(&0) {
                Err("has an empty or NUL-containing symlink target")
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_are_the_manifests_own() {
        use Outcome::*;
        let all = [
            Pending,
            Good,
            AlreadyFailing,
            Baseline,
            Rejected,
            Refused,
            Edit,
            Replaced,
            Displaced,
        ];
        for o in all {
            assert_eq!(serde_json::to_value(o).expect("encode"), o.as_str());
        }
        assert!(AlreadyFailing.is_good() && !Rejected.is_good());
    }
}
