//! Recording, reading, listing and pruning snapshots, and the `last-good` pointer.
//!
//! A manifest is written only after every object it names is durable, so a crash never leaves
//! a manifest pointing at missing content. `last-good` is a one-line file replaced atomically.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::atomic::{self, io_err, Attrs};
use super::manifest::{self, valid_id, Outcome, Snapshot, SnapshotMeta, MANIFEST_VERSION};
use super::scan::scan;
use super::{new_id, Store};
use crate::conf::ConfFile;
use crate::error::{Error, Result};

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Ids of the removed snapshots.
    pub snapshots: Vec<String>,
    /// Number of objects no remaining snapshot referenced.
    pub objects: usize,
}

impl Store {
    /// Records `files` (the config model's file set) as a new snapshot.
    pub fn snapshot(
        &self,
        config_root: &Path,
        files: &[ConfFile],
        meta: SnapshotMeta,
    ) -> Result<Snapshot> {
        let scanned = scan(config_root, files)?;
        for item in &scanned.files {
            self.put_object(&item.entry.hash, &item.bytes)?;
        }
        for item in &scanned.external {
            self.put_object(&item.entry.hash, &item.bytes)?;
        }
        let mut snap = Snapshot {
            version: MANIFEST_VERSION,
            id: new_id(),
            // Microseconds: a restore tells the files a change created after it from older ones.
            created: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            config_root: config_root.to_path_buf(),
            meta,
            files: scanned.files.into_iter().map(|s| s.entry).collect(),
            external: scanned.external.into_iter().map(|s| s.entry).collect(),
        };
        while self.manifest_path(&snap.id).exists() {
            snap.id = new_id();
        }
        self.write_manifest(&snap)?;
        Ok(snap)
    }

    pub(super) fn manifest_path(&self, id: &str) -> std::path::PathBuf {
        self.snapshots_dir().join(format!("{id}.json"))
    }

    fn write_manifest(&self, snap: &Snapshot) -> Result<()> {
        let path = self.manifest_path(&snap.id);
        let json = serde_json::to_vec_pretty(snap).map_err(|e| Error::State {
            path: path.clone(),
            message: format!("cannot encode the manifest: {e}"),
        })?;
        atomic::write_atomic(&path, &json, Attrs::private())
    }

    /// Changes what a snapshot's outcome and note say (a pending candidate becomes good or
    /// rejected).
    pub fn set_outcome(
        &self,
        id: &str,
        outcome: Outcome,
        note: Option<String>,
    ) -> Result<Snapshot> {
        let mut snap = self.get(id)?;
        snap.meta.outcome = outcome;
        if note.is_some() {
            snap.meta.note = note;
        }
        self.write_manifest(&snap)?;
        Ok(snap)
    }

    /// Reads and validates the snapshot with this id.
    pub fn get(&self, id: &str) -> Result<Snapshot> {
        if !valid_id(id) {
            return Err(Error::Usage(format!("'{id}' is not a snapshot id")));
        }
        let path = self.manifest_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => parse_manifest(&path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Usage(format!(
                "no snapshot '{id}' in {}; `safe-reload history` lists them",
                self.root.display()
            ))),
            Err(e) => Err(io_err(&path, "read", e)),
        }
    }

    /// Every snapshot, newest first. A manifest that fails validation is an error: a tampered
    /// state directory must be noticed, not skipped.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let mut ids = self.ids()?;
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.iter().map(|id| self.get(id)).collect()
    }

    fn ids(&self) -> Result<Vec<String>> {
        let dir = self.snapshots_dir();
        let mut ids = Vec::new();
        for entry in fs_err::read_dir(&dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json") {
                if valid_id(id) {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// The snapshot `last-good` names, if one was recorded.
    pub fn last_good(&self) -> Result<Option<Snapshot>> {
        let path = self.root.join("last-good");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "read", e)),
        };
        let id = text.trim();
        if !valid_id(id) {
            return Err(Error::State {
                path,
                message: format!("names '{id}', which is not a snapshot id"),
            });
        }
        self.get(id).map(Some)
    }

    /// Makes `snap` the last known-good configuration.
    pub fn set_last_good(&self, snap: &Snapshot) -> Result<()> {
        let path = self.root.join("last-good");
        atomic::write_atomic(&path, format!("{}\n", snap.id).as_bytes(), Attrs::private())
    }

    /// Notes that nginx was just made to load last-good's files again (a rollback's reload
    /// that took effect): [`Store::good_since`] then counts from now, so that reload is not
    /// taken for one made outside safe-reload.
    pub fn mark_loaded(&self) -> Result<()> {
        let path = self.root.join("loaded");
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        atomic::write_atomic(&path, format!("{now}\n").as_bytes(), Attrs::private())
    }

    /// Since when nginx is known to run last-good's files: when last-good was recorded, or
    /// when a rollback last loaded it again, whichever is later. `None` without a last-good.
    pub fn good_since(&self) -> Option<std::time::SystemTime> {
        let at = |name: &str| {
            std::fs::metadata(self.root.join(name))
                .and_then(|m| m.modified())
                .ok()
        };
        let recorded = at("last-good")?;
        Some(at("loaded").map_or(recorded, |l| l.max(recorded)))
    }

    /// Removes all but the newest `keep` snapshots of each kind (see [`Kept`]), never the
    /// last-good one nor one the journal names, then every object no remaining snapshot
    /// references.
    pub fn prune(&self, keep: usize) -> Result<PruneReport> {
        // Nothing to remove: skip reading every manifest and walking every object (objects no
        // snapshot names are removed by the next prune that removes a snapshot).
        if self.ids()?.len() <= keep {
            return Ok(PruneReport::default());
        }
        let mut protected = BTreeSet::new();
        if let Some(good) = self.last_good()? {
            protected.insert(good.id);
        }
        if let Some(rec) = self.journal()? {
            protected.extend(rec.candidate);
            protected.extend(rec.last_good);
        }
        let mut report = PruneReport::default();
        let mut referenced = BTreeSet::new();
        let mut seen = [0usize; 3];
        for snap in self.list()? {
            let kind = Kept::of(snap.meta.outcome) as usize;
            seen[kind] += 1;
            if seen[kind] <= keep || protected.contains(&snap.id) {
                referenced.extend(snap.files.iter().map(|e| e.hash.clone()));
                referenced.extend(snap.external.iter().map(|e| e.hash.clone()));
            } else {
                fs_err::remove_file(self.manifest_path(&snap.id))?;
                report.snapshots.push(snap.id);
            }
        }
        atomic::sync_dir(&self.snapshots_dir())?;
        report.objects = self.remove_unreferenced(&referenced)?;
        Ok(report)
    }

    fn remove_unreferenced(&self, referenced: &BTreeSet<String>) -> Result<usize> {
        let mut removed = 0;
        for shard in fs_err::read_dir(self.root.join("objects"))? {
            let shard = shard?;
            let prefix = shard.file_name().to_string_lossy().into_owned();
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for object in fs_err::read_dir(shard.path())? {
                let object = object?;
                let hash = format!("{prefix}{}", object.file_name().to_string_lossy());
                if !referenced.contains(&hash) {
                    fs_err::remove_file(object.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// What the retention count is counted in: the configurations that were (or may be) live,
/// the edits no run let live (rejected, refused, interrupted, an `edit` or `rollback`'s copy
/// of what was on disk), and the versions a restore displaced (another writer's, whose only
/// copy may be here). A handler that reloads on every run fills the first with good
/// snapshots, and those must not push out an edit the run said it kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Configurations = 0,
    Edits = 1,
    Displaced = 2,
}

impl Kept {
    fn of(outcome: Outcome) -> Kept {
        match outcome {
            Outcome::Displaced => Kept::Displaced,
            Outcome::Rejected
            | Outcome::Refused
            | Outcome::Interrupted
            | Outcome::Edit
            | Outcome::Replaced => Kept::Edits,
            Outcome::Pending | Outcome::Good | Outcome::AlreadyFailing | Outcome::Baseline => {
                Kept::Configurations
            }
        }
    }
}

fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Snapshot> {
    let snap: Snapshot = serde_json::from_slice(bytes).map_err(|e| Error::State {
        path: path.to_path_buf(),
        message: format!("unreadable manifest: {e}"),
    })?;
    manifest::validate(path, &snap)?;
    Ok(snap)
}
