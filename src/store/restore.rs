//! Putting a snapshot back into the config tree and the files outside it.
//!
//! Every object is read and hash-checked before the first write, so a damaged store stops the
//! restore with the tree untouched. A version found on disk that neither the restored snapshot
//! nor the rejected candidate holds (another writer's edit) is recorded as a snapshot of its
//! own before anything overwrites it. Each differing file is then replaced atomically with its
//! recorded mode, owner and symlink target. A write never passes through a symlink that leads
//! out of the config root (the last component is replaced, not followed, and every parent
//! directory is checked); a symlink entry keeps the link, and the file behind it is its own
//! entry, written in its own directory. A path outside the root is written only when the
//! configuration read from disk names it, so a tampered manifest cannot steer a write anywhere
//! else. A file the snapshot lacks is removed only once a snapshot holds its content:
//! the rejected candidate (a file the change added) or the displaced one (a file another
//! writer added, which a glob of the restored configuration would pick up). Finally everything
//! written is read back and compared with the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::atomic::{self, is_root, Attrs};
use super::manifest::{self, Entry, EntryKind, Outcome, Snapshot, SnapshotMeta};
use super::scan::{absolute, links_followed, place, relative_to, writable_paths, Place};
use super::Store;
use crate::conf::ConfFile;
use crate::error::Result;

/// A path and what went wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreFailure {
    /// Relative to the config root (absolute for files outside it).
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Versions a restore kept before overwriting or removing them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Displaced {
    /// The snapshot holding them (outcome `displaced`).
    pub snapshot: String,
    /// Their paths (relative to the config root, absolute outside it).
    pub paths: Vec<PathBuf>,
}

impl Displaced {
    /// One sentence for the operator.
    pub fn describe(&self) -> String {
        let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        format!(
            "{} held a version that neither the restored nor the rejected snapshot has \
             (another writer's change?): it is kept as snapshot {} (`safe-reload history`) \
             before the restore replaced or removed it",
            paths.join(", "),
            self.snapshot
        )
    }
}

/// A symlink a restore pointed back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Relinked {
    /// Relative to the config root, absolute outside it.
    pub path: PathBuf,
    /// The recorded target it points at again.
    pub target: PathBuf,
    /// What it pointed at before the restore, if it was a link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<PathBuf>,
    /// The snapshot had a directory here, and the link gave way to one (`target` is empty).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub to_directory: bool,
}

/// What a restore did, path by path (relative to the config root, absolute outside it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// Written back because content or metadata differed.
    pub restored: Vec<PathBuf>,
    /// Already as recorded; not written.
    pub unchanged: Vec<PathBuf>,
    /// Not in the restored snapshot and removed: their content is in the rejected snapshot, or
    /// in the displaced one when another writer added them.
    pub removed: Vec<PathBuf>,
    /// Not in the restored snapshot but left in place: not a file or link whose version could
    /// be kept (a directory, an unreadable file).
    pub kept: Vec<PathBuf>,
    /// Not in the restored snapshot and left in place as they are: the restored configuration
    /// does not read them (a shared snippet the change began to include, which was there
    /// before it and may be another configuration's), so removing them undoes nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<PathBuf>,
    /// Versions on disk that no snapshot held, saved before the restore replaced or removed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub displaced: Option<Displaced>,
    /// Symlinks pointed back at their recorded target (also in `restored`): a release switched
    /// by re-pointing a link (`current -> releases/v2`) is undone by pointing it back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relinked: Vec<Relinked>,
    /// Writes or removals that failed.
    pub failed: Vec<RestoreFailure>,
    /// Paths that, read back after the restore, do not equal the snapshot.
    pub mismatches: Vec<RestoreFailure>,
    /// Files outside the config root that differ from the snapshot and were not written:
    /// the configuration on disk no longer names them.
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

/// The symlinks inside the root, on the way to an entry of the snapshot restored (`items`),
/// where it recorded a directory (no symlink entry at that path): a deploy replaced the
/// directory.
fn links_in_place_of_dirs(root: &Path, items: &[Item]) -> BTreeSet<PathBuf> {
    let recorded_links: BTreeSet<&Path> = (items.iter())
        .filter(|i| i.kind == EntryKind::Symlink)
        .map(|i| i.abs.as_path())
        .collect();
    let mut out = BTreeSet::new();
    for rel in items.iter().filter_map(|i| i.rel) {
        let mut cur = root.to_path_buf();
        let Some(parent) = rel.parent() else { continue };
        for component in parent.components() {
            cur.push(component);
            let is_link = std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink());
            if is_link && !recorded_links.contains(cur.as_path()) {
                out.insert(cur.clone());
                break;
            }
        }
    }
    out
}

/// A device, FIFO or socket: never a configuration file a restore writes or checks.
fn is_special(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        !t.is_file() && !t.is_symlink() && !t.is_dir()
    })
}

/// Nothing at `path`, in a directory that exists.
fn gone_from_its_directory(path: &Path) -> bool {
    let missing = matches!(fs_err::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    missing && path.parent().is_some_and(Path::is_dir)
}

/// How far a file's time may lag the clock a snapshot's time was read from.
const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// Which of the files a restored snapshot lacks stay where they are.
struct Keep {
    /// What the restored configuration reads: these go, or it would load them.
    reads: BTreeSet<PathBuf>,
    /// Files created after this are the change's own and go too.
    added_since: Option<SystemTime>,
}

impl Keep {
    fn leaves(&self, path: &Path, abs: &Path) -> bool {
        if self.reads.contains(path) || self.reads.contains(abs) {
            return false;
        }
        let born = fs_err::symlink_metadata(abs).and_then(|m| m.created()).ok();
        // File times come from the kernel's coarse clock, a tick (up to 10 ms) behind the
        // clock the snapshot's time was read from: a file written right after the snapshot
        // can carry a time just before it.
        !matches!((born, self.added_since), (Some(b), Some(t)) if b + CLOCK_TICK > t)
    }
}

/// One path to restore, inside the root or outside it.
struct Item<'a> {
    /// As reported: relative inside the root, absolute outside it.
    shown: PathBuf,
    abs: PathBuf,
    /// The relative path, for an entry inside the root (its parents are checked).
    rel: Option<&'a Path>,
    kind: EntryKind,
    mode: u32,
    owner: Option<(u32, u32)>,
    target: Option<&'a Path>,
    size: u64,
    hash: &'a str,
}

impl<'a> Item<'a> {
    fn inside(root: &Path, e: &'a Entry) -> Item<'a> {
        Item {
            shown: e.path.clone(),
            abs: root.join(&e.path),
            rel: Some(&e.path),
            kind: e.kind,
            mode: e.mode,
            owner: Some((e.uid, e.gid)),
            target: e.target.as_deref(),
            size: e.size,
            hash: &e.hash,
        }
    }

    fn outside(e: &'a manifest::ExternalEntry) -> Item<'a> {
        Item {
            shown: e.path.clone(),
            abs: e.path.clone(),
            rel: None,
            kind: e.kind,
            mode: e.mode,
            owner: e.uid.zip(e.gid),
            target: e.target.as_deref(),
            size: e.size,
            hash: &e.hash,
        }
    }
}

struct Tree<'a> {
    root: &'a Path,
    canon_root: PathBuf,
}

/// What is at a path on disk, as far as a restore cares: a version to keep or not.
#[derive(Debug, PartialEq, Eq)]
enum OnDisk {
    Missing,
    File { hash: String },
    Link { target: PathBuf },
    Other,
}

fn on_disk(abs: &Path) -> OnDisk {
    match std::fs::symlink_metadata(abs) {
        Err(_) => OnDisk::Missing,
        Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(abs) {
            Ok(target) => OnDisk::Link { target },
            Err(_) => OnDisk::Other,
        },
        Ok(m) if m.file_type().is_file() => match hash_file(abs, true) {
            Ok(hash) => OnDisk::File { hash },
            Err(_) => OnDisk::Other,
        },
        Ok(_) => OnDisk::Other,
    }
}

/// Whether a snapshot holds the version on disk at `abs`: a file's content anywhere in it (a
/// link replaced by a copy of its file is held by the file's entry), a link at the same path
/// with the same target.
fn holds(snap: &Snapshot, abs: &Path, found: &OnDisk) -> bool {
    match found {
        OnDisk::Missing | OnDisk::Other => true,
        OnDisk::File { hash } => {
            snap.files.iter().any(|e| e.hash == *hash)
                || snap.external.iter().any(|e| e.hash == *hash)
        }
        OnDisk::Link { target } => {
            let inside = relative_to(&snap.config_root, abs).and_then(|rel| snap.entry(&rel));
            let recorded = match inside {
                Some(e) => e.target.as_ref(),
                None => snap.external_entry(abs).and_then(|e| e.target.as_ref()),
            };
            recorded == Some(target)
        }
    }
}

impl Store {
    /// Restores `snap` into `config_root` (and the files outside it that the configuration on
    /// disk still names). `current` is the file set read from disk now (absolute paths, as
    /// nginx names them); those of its files `snap` lacks are removed, each once `rejected`
    /// or the displaced snapshot holds its content. Fails before touching anything when an object is missing or corrupt, or a
    /// displaced version cannot be saved; failures after the first write are reported per path
    /// instead, so the caller knows exactly which files are in which state.
    pub fn restore(
        &self,
        snap: &Snapshot,
        config_root: &Path,
        current: &[PathBuf],
        rejected: Option<&Snapshot>,
    ) -> Result<RestoreReport> {
        self.restore_with(snap, config_root, current, rejected, None)
    }

    /// [`Store::restore`] for the configuration whose main file is `main`: of the files `snap`
    /// lacks, those its includes read once restored (a file a glob of its picks up) are
    /// removed, and so are those created after `added_since` (the change's own new files, when
    /// `snap` is the last-good it was made against); the rest are left as they are
    /// ([`RestoreReport::left`]). A change that begins to `include /etc/nginx/uwsgi_params;`
    /// did not add that file, and restoring a configuration that does not read it must not
    /// take it from the other configurations that do. A file whose creation time the file
    /// system does not keep is left. Every file is removed, as by [`Store::restore`], when
    /// `snap`'s tree does not load from its recorded bytes.
    pub fn restore_reading(
        &self,
        snap: &Snapshot,
        config_root: &Path,
        current: &[PathBuf],
        rejected: Option<&Snapshot>,
        main: &Path,
        added_since: Option<SystemTime>,
    ) -> Result<RestoreReport> {
        let reads: BTreeSet<PathBuf> = self.globbed_paths(snap, main).into_iter().collect();
        let keep = (!reads.is_empty()).then_some(Keep { reads, added_since });
        self.restore_with(snap, config_root, current, rejected, keep.as_ref())
    }

    fn restore_with(
        &self,
        snap: &Snapshot,
        config_root: &Path,
        current: &[PathBuf],
        rejected: Option<&Snapshot>,
        keep: Option<&Keep>,
    ) -> Result<RestoreReport> {
        manifest::validate_entries(&self.manifest_path(&snap.id), snap)?;
        let tree = Tree {
            root: config_root,
            canon_root: fs_err::canonicalize(config_root)?,
        };
        let named = writable_paths(config_root, current);
        let mut report = RestoreReport::default();
        let mut items: Vec<Item> = snap
            .files
            .iter()
            .map(|e| Item::inside(config_root, e))
            .collect();
        for ext in &snap.external {
            // Named by the configuration on disk, or gone from a directory still there: the
            // restored configuration reads it (a glob that matches nothing today names it
            // too), and writing a missing file overwrites nobody's version.
            if named.contains(&ext.path) || gone_from_its_directory(&ext.path) {
                items.push(Item::outside(ext));
            } else if hash_file(&ext.path, false).ok().as_deref() != Some(ext.hash.as_str()) {
                report.external_differs.push(ext.path.clone());
            }
        }
        let mut contents = BTreeMap::new();
        for item in &items {
            if !contents.contains_key(item.hash) {
                contents.insert(item.hash.to_string(), self.read_object(item.hash)?);
            }
        }
        // Links the restore points back: what a path through one of them reaches now is not
        // what it will reach, so nothing is removed through them (a release directory that
        // `current` pointed at is the deploy's, not the configuration's).
        let mut repointed: BTreeSet<PathBuf> = items
            .iter()
            .filter(|i| i.kind == EntryKind::Symlink && difference(i, &i.abs).is_some())
            .map(|i| i.abs.clone())
            .collect();
        // Directories of the snapshot a deploy replaced by a link (`mv sites-enabled
        // sites-enabled.old; ln -s /srv/deploy/enabled sites-enabled`): the link goes and the
        // directory comes back before anything is written in it, and nothing is removed
        // through the link (what it leads to is the deploy's).
        let links_for_dirs = links_in_place_of_dirs(config_root, &items);
        repointed.extend(links_for_dirs.iter().cloned());
        let removals = self.removals(&tree, snap, current, keep, &repointed, &mut report);
        report.displaced = self.save_displaced(snap, config_root, rejected, &items, &removals)?;
        // A link a deploy replaced by a real directory (`rm sites-enabled; mkdir
        // sites-enabled`) goes back once the files in it are moved out: the directory is
        // removed then, when it is empty, and the link made in its place.
        let is_real_dir = |i: &Item| {
            i.kind == EntryKind::Symlink
                && std::fs::symlink_metadata(&i.abs).is_ok_and(|m| m.file_type().is_dir())
        };
        let put = |item: &Item, report: &mut RestoreReport| {
            let bytes = contents
                .get(item.hash)
                .map(Vec::as_slice)
                .unwrap_or_default();
            tree.put(item, bytes, report);
        };
        for link in &links_for_dirs {
            let back = std::fs::read_link(link)
                .map_err(|e| e.to_string())
                .and_then(|was| {
                    fs_err::remove_file(link).map_err(|e| e.to_string())?;
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(link)
                        .map_err(|e| format!("cannot create the directory: {e}"))?;
                    sync_parent(link)?;
                    Ok(was)
                });
            match back {
                Ok(was) => report.relinked.push(Relinked {
                    path: relative_to(config_root, link).unwrap_or_else(|| link.clone()),
                    target: PathBuf::new(),
                    was: Some(was),
                    to_directory: true,
                }),
                Err(reason) => report.failed.push(RestoreFailure {
                    path: relative_to(config_root, link).unwrap_or_else(|| link.clone()),
                    reason: format!("cannot turn the link back into a directory: {reason}"),
                }),
            }
        }
        let (in_place_of_dirs, rest): (Vec<&Item>, Vec<&Item>) =
            items.iter().partition(|i| is_real_dir(i));
        for item in rest {
            put(item, &mut report);
        }
        for (shown, abs, rel) in &removals {
            tree.remove(shown, abs, rel.as_deref(), &mut report);
        }
        for item in in_place_of_dirs {
            if let Err(e) = fs_err::remove_dir(&item.abs) {
                let held: Vec<String> = (std::fs::read_dir(&item.abs).into_iter().flatten())
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .take(5)
                    .collect();
                let reason = format!(
                    "cannot put the link back: it is a directory now, and it still holds {} \
                     ({e})",
                    held.join(", ")
                );
                report.failed.push(failure(item, reason));
                continue;
            }
            put(item, &mut report);
        }
        for item in &items {
            tree.verify(item, &named, &mut report);
        }
        Ok(report)
    }

    /// The files of `current` that `snap` lacks (shown path, absolute path, relative path
    /// inside the root): each is removed once the rejected snapshot or a displaced one holds
    /// it. What is no file or link is reported as kept.
    fn removals(
        &self,
        tree: &Tree,
        snap: &Snapshot,
        current: &[PathBuf],
        keep: Option<&Keep>,
        repointed: &BTreeSet<PathBuf>,
        report: &mut RestoreReport,
    ) -> Vec<(PathBuf, PathBuf, Option<PathBuf>)> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        // Every path of `current` that names the same file: one through `..` after a link
        // (`current/../shared/site.conf`) passes a link the path spelled out does not.
        let mut names: std::collections::HashMap<PathBuf, Vec<&Path>> = Default::default();
        for path in current {
            if let Ok(p) = place(tree.root, &tree.canon_root, path) {
                names.entry(absolute(tree.root, &p)).or_default().push(path);
            }
        }
        for path in current {
            // Where a snapshot records it: through a directory link by the resolved path.
            let (shown, abs, rel) = match place(tree.root, &tree.canon_root, path) {
                Ok(Place::Inside(rel)) => (rel.clone(), tree.root.join(&rel), Some(rel)),
                Ok(Place::Outside(abs)) => (abs.clone(), abs, None),
                Err(_) => continue,
            };
            let in_snap = match &rel {
                Some(rel) => snap.entry(rel).is_some(),
                None => snap.external_entry(&abs).is_some(),
            };
            if in_snap || !seen.insert(abs.clone()) {
                continue;
            }
            let through_repointed = || {
                let all = names.get(&abs).map_or(&[][..], Vec::as_slice);
                (all.iter().flat_map(|p| links_followed(tree.root, p)))
                    .any(|(link, _)| repointed.contains(&link) && link != abs)
            };
            if keep.is_some_and(|k| k.leaves(path, &abs)) || through_repointed() {
                if !matches!(on_disk(&abs), OnDisk::Missing) {
                    report.left.push(shown);
                }
                continue;
            }
            // Whatever is there goes: the rejected snapshot holds it, or it is saved as a
            // displaced version first (another writer's file a glob picks up). Only what has
            // no version to save (a directory, an unreadable file) stays in place.
            match on_disk(&abs) {
                OnDisk::Missing => {}
                OnDisk::Other => report.kept.push(shown),
                OnDisk::File { .. } | OnDisk::Link { .. } => out.push((shown, abs, rel)),
            }
        }
        out
    }

    /// Saves, as one snapshot, every version on disk the restore would overwrite or remove
    /// that neither `snap` nor `rejected` holds.
    fn save_displaced(
        &self,
        snap: &Snapshot,
        config_root: &Path,
        rejected: Option<&Snapshot>,
        items: &[Item],
        removals: &[(PathBuf, PathBuf, Option<PathBuf>)],
    ) -> Result<Option<Displaced>> {
        // A version counts as held only while its object is in the store to restore it from.
        let stored = |found: &OnDisk| match found {
            OnDisk::File { hash } => self.object_path(hash).is_file(),
            _ => true,
        };
        let held = |abs: &Path, found: &OnDisk| {
            (holds(snap, abs, found) || rejected.is_some_and(|r| holds(r, abs, found)))
                && stored(found)
        };
        let mut found = Vec::new();
        let candidates = items
            .iter()
            .map(|i| (&i.shown, &i.abs))
            .chain(removals.iter().map(|(shown, abs, _)| (shown, abs)));
        for (shown, abs) in candidates {
            let state = on_disk(abs);
            if !held(abs, &state) {
                found.push((shown.clone(), abs.clone()));
            }
        }
        if found.is_empty() {
            return Ok(None);
        }
        let mut files = Vec::new();
        for (_, abs) in &found {
            // A dangling link has no content to read; the link itself is recorded.
            let bytes: Arc<[u8]> = std::fs::read(abs).unwrap_or_default().into();
            files.push(ConfFile {
                path: abs.clone(),
                bytes,
                via: None,
            });
        }
        let note = format!(
            "found on disk by a restore of {}: held by no snapshot (another writer's version), \
             kept before it was overwritten",
            snap.id
        );
        let meta = SnapshotMeta {
            outcome: Outcome::Displaced,
            user: super::current_user(),
            command: super::command_line(),
            note: Some(note),
            changed_files: found
                .iter()
                .map(|(shown, _)| shown.display().to_string())
                .collect(),
        };
        let saved = self.snapshot(config_root, &files, meta)?;
        super::journal::test_pause("displaced-saved");
        Ok(Some(Displaced {
            snapshot: saved.id,
            paths: found.into_iter().map(|(shown, _)| shown).collect(),
        }))
    }
}

impl Tree<'_> {
    fn put(&self, item: &Item, bytes: &[u8], report: &mut RestoreReport) {
        if let Err(reason) = self.check_item_parents(item, true) {
            report.failed.push(failure(item, reason));
            return;
        }
        // A device, FIFO or socket is never a configuration file to put back (an older
        // manifest may record `/dev/null` behind a masking link as one): nothing replaces it.
        if is_special(&item.abs) {
            report.unchanged.push(item.shown.clone());
            return;
        }
        if let Some(dir) = item.abs.parent() {
            if let Ok(swept) = atomic::sweep_temp_files(dir) {
                report.swept.extend(swept);
            }
        }
        if difference(item, &item.abs).is_none() {
            report.unchanged.push(item.shown.clone());
            return;
        }
        let owner = self.owner_for(item);
        let was = std::fs::read_link(&item.abs).ok();
        let written = match (&item.kind, item.target) {
            (EntryKind::Symlink, Some(target)) => atomic::symlink_atomic(&item.abs, target, owner),
            _ => atomic::write_atomic(
                &item.abs,
                bytes,
                Attrs {
                    mode: item.mode,
                    owner,
                },
            ),
        };
        match written {
            Ok(()) => {
                report.restored.push(item.shown.clone());
                if let (EntryKind::Symlink, Some(target)) = (&item.kind, item.target) {
                    report.relinked.push(Relinked {
                        path: item.shown.clone(),
                        target: target.to_path_buf(),
                        was,
                        to_directory: false,
                    });
                }
                super::journal::test_pause("restore-file");
            }
            Err(e) => report.failed.push(failure(item, e.to_string())),
        }
    }

    /// The recorded owner; for an outside entry of an older manifest (no owner recorded), the
    /// owner of the file on disk, so a restore does not hand it to us.
    fn owner_for(&self, item: &Item) -> Option<(u32, u32)> {
        item.owner.or_else(|| {
            std::fs::symlink_metadata(&item.abs)
                .ok()
                .map(|m| (m.uid(), m.gid()))
        })
    }

    fn remove(&self, shown: &Path, abs: &Path, rel: Option<&Path>, report: &mut RestoreReport) {
        let checked = match rel {
            Some(rel) => self.check_parents(rel, false),
            None => check_resolved(abs),
        };
        let result = checked
            .and_then(|()| match std::fs::remove_file(abs) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("cannot remove: {e}"))
                }
                _ => Ok(()),
            })
            .and_then(|()| sync_parent(abs));
        match result {
            Ok(()) => report.removed.push(shown.to_path_buf()),
            Err(reason) => report.failed.push(RestoreFailure {
                path: shown.to_path_buf(),
                reason,
            }),
        }
    }

    fn verify(&self, item: &Item, named: &BTreeSet<PathBuf>, report: &mut RestoreReport) {
        if is_special(&item.abs) {
            return;
        }
        if let Some(reason) = difference(item, &item.abs) {
            report.mismatches.push(failure(item, reason));
            return;
        }
        if item.kind != EntryKind::Symlink {
            return;
        }
        // The link is right; the content behind it is checked here unless the file behind it
        // is an entry of its own (verified as such) or lies outside what we may write.
        if hash_file(&item.abs, false).ok().as_deref() == Some(item.hash) || item.abs.is_dir() {
            return;
        }
        let real = fs_err::canonicalize(&item.abs).ok();
        let inside = real
            .as_ref()
            .is_some_and(|real| real.starts_with(&self.canon_root));
        let own_entry = real.as_ref().is_some_and(|real| named.contains(real));
        if inside || own_entry {
            let reason = "content behind the link differs from the snapshot".to_string();
            report.mismatches.push(failure(item, reason));
        } else {
            report.external_differs.push(item.abs.clone());
        }
    }

    fn check_item_parents(&self, item: &Item, create: bool) -> std::result::Result<(), String> {
        match item.rel {
            Some(rel) => self.check_parents(rel, create),
            None => check_resolved(&item.abs),
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

/// An outside path was recorded with its directories resolved: they must still resolve to
/// themselves (no directory swapped for a link since) and exist (nothing is created outside
/// the root).
fn check_resolved(abs: &Path) -> std::result::Result<(), String> {
    let Some(dir) = abs.parent() else {
        return Err(format!("{} has no directory", abs.display()));
    };
    match std::fs::canonicalize(dir) {
        Ok(real) if real == dir => Ok(()),
        Ok(real) => Err(format!(
            "{} now resolves to {}; not writing through it",
            dir.display(),
            real.display()
        )),
        Err(e) => Err(format!("cannot resolve {}: {e}", dir.display())),
    }
}

fn failure(item: &Item, reason: String) -> RestoreFailure {
    RestoreFailure {
        path: item.shown.clone(),
        reason,
    }
}

fn sync_parent(path: &Path) -> std::result::Result<(), String> {
    match path.parent() {
        Some(dir) => atomic::sync_dir(dir).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// How the path on disk differs from the item, if it does.
fn difference(item: &Item, abs: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(abs) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("missing: {e}")),
    };
    if let Some((uid, gid)) = item.owner.filter(|_| is_root()) {
        if (meta.uid(), meta.gid()) != (uid, gid) {
            return Some(format!(
                "owner {}:{} instead of {uid}:{gid}",
                meta.uid(),
                meta.gid(),
            ));
        }
    }
    match item.kind {
        EntryKind::Symlink => {
            if !meta.file_type().is_symlink() {
                return Some("not a symlink".into());
            }
            let target = std::fs::read_link(abs).ok();
            (target.as_deref() != item.target).then(|| "symlink target differs".into())
        }
        EntryKind::File => {
            if !meta.file_type().is_file() {
                return Some("not a regular file".into());
            }
            if meta.mode() & 0o7777 != item.mode {
                return Some(format!(
                    "mode {:o} instead of {:o}",
                    meta.mode() & 0o7777,
                    item.mode
                ));
            }
            if meta.len() != item.size {
                return Some("size differs".into());
            }
            match hash_file(abs, true) {
                Ok(hash) if hash == item.hash => None,
                Ok(_) => Some("content differs".into()),
                Err(e) => Some(format!("unreadable: {e}")),
            }
        }
    }
}

/// blake3 of a file's content; with `no_follow`, a symlink at `path` is an error.
pub(super) fn hash_file(path: &Path, no_follow: bool) -> std::io::Result<String> {
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
