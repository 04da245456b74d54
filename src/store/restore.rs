//! Putting a snapshot back into the config tree.
//!
//! Every object is read and hash-checked before the first write, so a damaged store stops the
//! restore with the tree untouched. Each differing file is then replaced atomically with its
//! recorded mode, owner and symlink target; a write never passes through a symlink that leads
//! out of the config root (the last component is replaced, not followed, and every parent
//! directory is checked). Files the rejected change added are removed only when the rejected
//! snapshot holds their content. Finally the tree is read back and compared with the snapshot.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::atomic::{self, is_root, Attrs};
use super::manifest::{self, Entry, EntryKind, Snapshot};
use super::scan::relative_to;
use super::Store;
use crate::error::Result;

/// A path and what went wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreFailure {
    /// Relative to the config root (absolute for files outside it).
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// What a restore did, path by path (relative to the config root).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// Written back because content or metadata differed.
    pub restored: Vec<PathBuf>,
    /// Already as recorded; not written.
    pub unchanged: Vec<PathBuf>,
    /// Added by the rejected change and removed (their content is in the rejected snapshot).
    pub removed: Vec<PathBuf>,
    /// Added by the change but left in place: no rejected snapshot holds their content.
    pub kept: Vec<PathBuf>,
    /// Writes or removals that failed.
    pub failed: Vec<RestoreFailure>,
    /// Paths that, read back after the restore, do not equal the snapshot.
    pub mismatches: Vec<RestoreFailure>,
    /// Files outside the config root (never written) that differ from the snapshot.
    pub external_differs: Vec<PathBuf>,
    /// Temp files a killed earlier run had left and this restore removed.
    pub swept: Vec<PathBuf>,
}

impl RestoreReport {
    /// Whether the tree now equals the snapshot (outside files aside).
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.mismatches.is_empty()
    }
}

struct Tree<'a> {
    root: &'a Path,
    canon_root: PathBuf,
}

impl Store {
    /// Restores `snap` into `config_root`. `current` is the candidate's file set (absolute
    /// paths); those of its files `snap` lacks are removed only when `rejected` holds them.
    /// Fails before touching anything when an object is missing or corrupt; failures after the
    /// first write are reported per path in the report instead, so the caller knows exactly
    /// which files are in which state.
    pub fn restore(
        &self,
        snap: &Snapshot,
        config_root: &Path,
        current: &[PathBuf],
        rejected: Option<&Snapshot>,
    ) -> Result<RestoreReport> {
        manifest::validate_entries(&self.manifest_path(&snap.id), snap)?;
        let tree = Tree {
            root: config_root,
            canon_root: fs_err::canonicalize(config_root)?,
        };
        let mut contents = BTreeMap::new();
        for entry in &snap.files {
            if !contents.contains_key(&entry.hash) {
                contents.insert(entry.hash.clone(), self.read_object(&entry.hash)?);
            }
        }
        let mut report = RestoreReport::default();
        for entry in &snap.files {
            let bytes = contents
                .get(&entry.hash)
                .map(Vec::as_slice)
                .unwrap_or_default();
            tree.put(entry, bytes, &mut report);
        }
        for path in current {
            self.remove_added(&tree, snap, path, rejected, &mut report);
        }
        for entry in &snap.files {
            tree.verify(entry, &mut report);
        }
        for ext in &snap.external {
            if hash_file(&ext.path, false).ok().as_deref() != Some(ext.hash.as_str()) {
                report.external_differs.push(ext.path.clone());
            }
        }
        Ok(report)
    }

    fn remove_added(
        &self,
        tree: &Tree,
        snap: &Snapshot,
        path: &Path,
        rejected: Option<&Snapshot>,
        report: &mut RestoreReport,
    ) {
        let Some(rel) = relative_to(tree.root, path) else {
            return;
        };
        if snap.entry(&rel).is_some() || report.removed.contains(&rel) {
            return;
        }
        let held = rejected
            .and_then(|r| r.entry(&rel))
            .is_some_and(|e| self.object_path(&e.hash).is_file());
        if !held {
            report.kept.push(rel);
            return;
        }
        let abs = tree.root.join(&rel);
        let result = tree
            .check_parents(&rel, false)
            .and_then(|()| match std::fs::remove_file(&abs) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove: {e}"))
                }
                _ => Ok(()),
            })
            .and_then(|()| sync_parent(&abs));
        match result {
            Ok(()) => report.removed.push(rel),
            Err(reason) => report.failed.push(RestoreFailure { path: rel, reason }),
        }
    }
}

impl Tree<'_> {
    fn put(&self, entry: &Entry, bytes: &[u8], report: &mut RestoreReport) {
        let abs = self.root.join(&entry.path);
        if let Err(reason) = self.check_parents(&entry.path, true) {
            report.failed.push(failure(entry, reason));
            return;
        }
        if let Some(dir) = abs.parent() {
            if let Ok(swept) = atomic::sweep_temp_files(dir) {
                report.swept.extend(swept);
            }
        }
        if difference(entry, &abs).is_none() {
            report.unchanged.push(entry.path.clone());
            return;
        }
        let owner = Some((entry.uid, entry.gid));
        let written = match (&entry.kind, &entry.target) {
            (EntryKind::Symlink, Some(target)) => atomic::symlink_atomic(&abs, target, owner),
            _ => atomic::write_atomic(
                &abs,
                bytes,
                Attrs {
                    mode: entry.mode,
                    owner,
                },
            ),
        };
        match written {
            Ok(()) => {
                report.restored.push(entry.path.clone());
                super::journal::test_pause("restore-file");
            }
            Err(e) => report.failed.push(failure(entry, e.to_string())),
        }
    }

    fn verify(&self, entry: &Entry, report: &mut RestoreReport) {
        let abs = self.root.join(&entry.path);
        if let Some(reason) = difference(entry, &abs) {
            report.mismatches.push(failure(entry, reason));
            return;
        }
        if entry.kind != EntryKind::Symlink {
            return;
        }
        // The link is right; its content is ours to check only when it lies inside the tree.
        let inside = fs_err::canonicalize(&abs)
            .ok()
            .is_some_and(|real| real.starts_with(&self.canon_root));
        if hash_file(&abs, false).ok().as_deref() == Some(entry.hash.as_str()) {
            return;
        }
        if inside {
            let reason = "content behind the link differs from the snapshot".to_string();
            report.mismatches.push(failure(entry, reason));
        } else {
            report.external_differs.push(abs);
        }
    }

    /// Checks (and with `create`, makes) the directories above `rel`: each must be a directory
    /// or a symlink whose real path stays inside the config root.
    fn check_parents(&self, rel: &Path, create: bool) -> std::result::Result<(), String> {
        let mut cur = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for component in parent.components() {
            cur.push(component);
            match std::fs::symlink_metadata(&cur) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => self.check_link_dir(&cur)?,
                Ok(_) => return Err(format!("{} is not a directory", cur.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&cur)
                        .map_err(|e| format!("cannot create {}: {e}", cur.display()))?;
                    sync_parent(&cur)?;
                }
                Err(e) => return Err(format!("cannot inspect {}: {e}", cur.display())),
            }
        }
        Ok(())
    }

    fn check_link_dir(&self, link: &Path) -> std::result::Result<(), String> {
        let real = std::fs::canonicalize(link)
            .map_err(|e| format!("cannot resolve {}: {e}", link.display()))?;
        if !real.starts_with(&self.canon_root) {
            return Err(format!(
                "{} is a symlink leading out of the config root (to {}); not writing through it",
                link.display(),
                real.display()
            ));
        }
        if !real.is_dir() {
            return Err(format!("{} is not a directory", link.display()));
        }
        Ok(())
    }
}

fn failure(entry: &Entry, reason: String) -> RestoreFailure {
    RestoreFailure {
        path: entry.path.clone(),
        reason,
    }
}

fn sync_parent(path: &Path) -> std::result::Result<(), String> {
    match path.parent() {
        Some(dir) => atomic::sync_dir(dir).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// How the path on disk differs from the entry, if it does.
fn difference(entry: &Entry, abs: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(abs) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("missing: {e}")),
    };
    if is_root() && (meta.uid(), meta.gid()) != (entry.uid, entry.gid) {
        return Some(format!(
            "owner {}:{} instead of {}:{}",
            meta.uid(),
            meta.gid(),
            entry.uid,
            entry.gid
        ));
    }
    match entry.kind {
        EntryKind::Symlink => {
            if !meta.file_type().is_symlink() {
                return Some("not a symlink".into());
            }
            let target = std::fs::read_link(abs).ok();
            (target.as_ref() != entry.target.as_ref()).then(|| "symlink target differs".into())
        }
        EntryKind::File => {
            if !meta.file_type().is_file() {
                return Some("not a regular file".into());
            }
            if meta.mode() & 0o7777 != entry.mode {
                return Some(format!(
                    "mode {:o} instead of {:o}",
                    meta.mode() & 0o7777,
                    entry.mode
                ));
            }
            if meta.len() != entry.size {
                return Some("size differs".into());
            }
            match hash_file(abs, true) {
                Ok(hash) if hash == entry.hash => None,
                Ok(_) => Some("content differs".into()),
                Err(e) => Some(format!("unreadable: {e}")),
            }
        }
    }
}

/// blake3 of a file's content; with `no_follow`, a symlink at `path` is an error.
fn hash_file(path: &Path, no_follow: bool) -> std::io::Result<String> {
    let flags = if no_follow { libc::O_NOFOLLOW } else { 0 };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}
