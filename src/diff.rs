//! The difference between two configuration file sets, as data: which files were added,
//! removed, modified, re-moded or re-linked, each with a unified diff from `similar`.
//!
//! Both sides are built the same way (`FileSet::from_candidate` uses the same scan a snapshot
//! does), so a file set compared with its own snapshot is always empty. Printing is `output`'s.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use similar::{ChangeTag, TextDiff};

use crate::conf::ConfFile;
use crate::error::Result;
use crate::store::{scan, Scanned, Snapshot, Store};

/// One file's content and metadata as diffed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// The content (for a symlink: the content read through it).
    pub bytes: Arc<[u8]>,
    /// Permission bits.
    pub mode: u32,
    /// The link target, for a symlink.
    pub link: Option<PathBuf>,
}

/// Files by path: relative to the config root, absolute for files outside it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSet {
    /// Path (as shown) to state.
    pub files: BTreeMap<String, FileState>,
}

impl FileSet {
    /// The file set a snapshot recorded, contents read (and hash-checked) from the store.
    pub fn from_snapshot(store: &Store, snap: &Snapshot) -> Result<FileSet> {
        FileSet::from_snapshot_against(store, snap, &Scanned::default())
    }

    /// The file set a snapshot recorded, for comparing with `candidate`: an entry whose hash
    /// the candidate has at the same path takes the candidate's bytes (equal by hash), so only
    /// the objects of files that changed are read from the store.
    pub fn from_snapshot_against(
        store: &Store,
        snap: &Snapshot,
        candidate: &Scanned,
    ) -> Result<FileSet> {
        let mut known: HashMap<(&Path, &str), &Arc<[u8]>> = HashMap::new();
        for item in &candidate.files {
            known.insert((&item.entry.path, &item.entry.hash), &item.bytes);
        }
        for item in &candidate.external {
            known.insert((&item.entry.path, &item.entry.hash), &item.bytes);
        }
        // Inside and outside the root alike: (path, mode, link target, hash).
        let recorded = (snap.files.iter())
            .map(|e| (&e.path, e.mode, &e.target, &e.hash))
            .chain((snap.external.iter()).map(|e| (&e.path, e.mode, &e.target, &e.hash)));
        let mut set = FileSet::default();
        for (path, mode, target, hash) in recorded {
            let bytes = match known.get(&(path.as_path(), hash.as_str())) {
                Some(b) => Arc::clone(b),
                None => store.read_object(hash)?.into(),
            };
            let state = FileState {
                bytes,
                mode,
                link: target.clone(),
            };
            set.files.insert(shown(path), state);
        }
        Ok(set)
    }

    /// The candidate's file set, from the bytes the config model read.
    pub fn from_candidate(config_root: &Path, files: &[ConfFile]) -> Result<FileSet> {
        Ok(FileSet::from_scanned(scan(config_root, files)?))
    }

    /// The candidate's file set from an existing scan.
    pub fn from_scanned(scanned: Scanned) -> FileSet {
        let inside = (scanned.files.into_iter())
            .map(|i| (i.entry.path, i.entry.mode, i.entry.target, i.bytes));
        let outside = (scanned.external.into_iter())
            .map(|i| (i.entry.path, i.entry.mode, i.entry.target, i.bytes));
        let files = inside
            .chain(outside)
            .map(|(path, mode, link, bytes)| (shown(&path), FileState { bytes, mode, link }))
            .collect();
        FileSet { files }
    }
}

/// A recorded file set read back as a configuration: the last-good tree is parsed from the
/// bytes a snapshot holds, never from files on disk that may have changed since. A path is
/// followed through the directory links the set recorded (`current -> releases/v1`), not
/// through the disk, where they may point elsewhere now.
pub struct Recorded<'a> {
    /// The config root the set's relative paths are relative to.
    root: &'a Path,
    set: &'a FileSet,
    links: HashMap<PathBuf, PathBuf>,
}

impl<'a> Recorded<'a> {
    pub fn new(root: &'a Path, set: &'a FileSet) -> Recorded<'a> {
        let links = (set.files.iter())
            .filter_map(|(k, state)| Some((root.join(k), state.link.clone()?)))
            .collect();
        Recorded { root, set, links }
    }

    fn key(&self, path: &Path) -> String {
        let path = crate::store::resolve_recorded(path, &self.links);
        shown(path.strip_prefix(self.root).unwrap_or(&path))
    }
}

impl crate::conf::load::Source for Recorded<'_> {
    fn read(&self, path: &Path, max: u64) -> std::result::Result<Arc<[u8]>, String> {
        let state = (self.set.files.get(&self.key(path)))
            .ok_or_else(|| "it is not in the snapshot".to_string())?;
        if state.bytes.len() as u64 > max {
            return Err(format!(
                "it is more than the {max} byte limit for a configuration file"
            ));
        }
        Ok(Arc::clone(&state.bytes))
    }

    fn glob(&self, pattern: &Path) -> std::result::Result<Vec<PathBuf>, String> {
        let text = pattern.to_string_lossy();
        let pat = glob::Pattern::new(&text)
            .map_err(|e| format!("invalid include pattern \"{text}\": {e}"))?;
        // A pattern in the last component only (`conf.d/*.conf`): its directory as the set
        // recorded it, each match named through the pattern's own directory, as nginx names it.
        let magic = |p: &Path| p.to_string_lossy().contains(['*', '?', '[']);
        if let (Some(dir), Some(last)) = (pattern.parent(), pattern.file_name()) {
            if !magic(dir) && !self.links.is_empty() {
                let real = crate::store::resolve_recorded_dir(dir, &self.links);
                let last = glob::Pattern::new(&last.to_string_lossy())
                    .map_err(|e| format!("invalid include pattern \"{text}\": {e}"))?;
                let mut out: Vec<PathBuf> = (self.set.files.keys())
                    .map(|k| self.root.join(k))
                    .filter(|p| p.parent() == Some(real.as_path()))
                    .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
                    .filter(|n| {
                        last.matches_with(&n.to_string_lossy(), crate::conf::load::GLOB_OPTIONS)
                    })
                    .map(|n| dir.join(n))
                    .collect();
                out.sort();
                return Ok(out);
            }
        }
        let mut out: Vec<PathBuf> = (self.set.files.keys())
            .map(|k| self.root.join(k))
            .filter(|p| pat.matches_path_with(p, crate::conf::load::GLOB_OPTIONS))
            .collect();
        out.sort();
        Ok(out)
    }
}

fn shown(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// New in the candidate (including a file a glob now picks up).
    Added,
    /// Gone from the candidate.
    Removed,
    /// Content changed (mode or link may have changed too).
    Modified,
    /// Only the permission bits changed.
    ModeChanged,
    /// Only the symlink target changed.
    LinkChanged,
}

/// One file's difference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileDiff {
    /// Relative to the config root, absolute for files outside it.
    pub path: String,
    /// What happened.
    pub change: Change,
    /// Unified diff (3 lines of context, `a/` and `b/` headers; bytes that are not UTF-8 shown
    /// as `\xNN`), or `binary files differ` for data with a NUL byte; none when the content is
    /// the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unified: Option<String>,
    /// Lines added.
    pub added: usize,
    /// Lines removed.
    pub removed: usize,
    /// Old and new permission bits, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<(u32, u32)>,
    /// Old and new symlink targets, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<(Option<PathBuf>, Option<PathBuf>)>,
    /// The unchanged symlinks nginx reads this file through (`sites-enabled/app` for
    /// `sites-available/app`): an edit through a link changes one file, the link's target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub through: Vec<String>,
    /// For a removed file: the removed symlinks nginx read it through (`sites-enabled/app`
    /// for `sites-available/app` when a site is disabled). The change is the link's; the file
    /// is no longer included, whether or not it is still on disk.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unlinked: Vec<String>,
}

impl FileDiff {
    /// A removed file whose removal is that of the links nginx read it through.
    pub fn only_unlinked(&self) -> bool {
        self.change == Change::Removed && !self.unlinked.is_empty()
    }
}

/// Every file that differs, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConfigDiff {
    /// The differing files.
    pub files: Vec<FileDiff>,
}

impl ConfigDiff {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The paths that differ.
    pub fn paths(&self) -> Vec<String> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// One line, e.g. `2 files changed, 1 added: +5 -2`, or `no changes`.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no changes".to_string();
        }
        // A file no longer read because its link is gone is said once, as the link's removal.
        let changed = || self.files.iter().filter(|f| !f.only_unlinked());
        let count = |c: Change| changed().filter(|f| f.change == c).count();
        let n = changed().count();
        let mut text = format!("{n} file{} changed", if n == 1 { "" } else { "s" });
        let unlinked = self.files.len() - n;
        for (what, k) in [
            ("added", count(Change::Added)),
            ("removed", count(Change::Removed)),
            ("no longer included", unlinked),
        ] {
            if k > 0 {
                text.push_str(&format!(", {k} {what}"));
            }
        }
        let plus: usize = changed().map(|f| f.added).sum();
        let minus: usize = changed().map(|f| f.removed).sum();
        text.push_str(&format!(": +{plus} -{minus}"));
        text
    }
}

/// The difference from `old` to `new`, file by file.
pub fn diff(old: &FileSet, new: &FileSet) -> ConfigDiff {
    let mut files = Vec::new();
    for (path, before) in &old.files {
        match new.files.get(path) {
            None => files.push(content_diff(path, Change::Removed, &before.bytes, &[])),
            Some(after) => files.extend(compare(path, before, after)),
        }
    }
    for (path, after) in &new.files {
        if !old.files.contains_key(path) {
            files.push(content_diff(path, Change::Added, &[], &after.bytes));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    fold_links(old, new, &mut files);
    mark_unlinked(old, &mut files);
    ConfigDiff { files }
}

/// A removed symlink whose target file is removed from the set with it (`rm
/// sites-enabled/app`: nginx no longer reads `sites-available/app`, which stays on disk):
/// the target names the link, and is shown as no longer included, not as a deleted file.
fn mark_unlinked(old: &FileSet, files: &mut [FileDiff]) {
    let mut marks: Vec<(usize, String)> = Vec::new();
    for f in files.iter().filter(|f| f.change == Change::Removed) {
        let Some(before) = old.files.get(&f.path) else {
            continue;
        };
        let Some(target) = &before.link else {
            continue;
        };
        let real = files.iter().position(|t| {
            t.change == Change::Removed
                && t.path != f.path
                && old.files.get(&t.path).is_some_and(|s| s.link.is_none())
                && points_at(&f.path, target, &t.path)
        });
        if let Some(real) = real {
            marks.push((real, f.path.clone()));
        }
    }
    for (real, link) in marks {
        files[real].unlinked.push(link);
    }
}

/// A symlink whose target stayed while the bytes read through it changed is the edit of its
/// target, which the file set holds too (a snapshot brings a link's real file along): the
/// change is counted once, on the target, which names the link. A link that points elsewhere
/// now stays a change of its own.
fn fold_links(old: &FileSet, new: &FileSet, files: &mut Vec<FileDiff>) {
    let mut folded: Vec<(usize, String)> = Vec::new();
    for f in files.iter() {
        if f.change != Change::Modified || f.link.is_some() || f.mode.is_some() {
            continue;
        }
        let (Some(before), Some(after)) = (old.files.get(&f.path), new.files.get(&f.path)) else {
            continue;
        };
        let Some(target) = &after.link else {
            continue;
        };
        let real = files.iter().position(|t| {
            let same = |set: &FileSet, link: &FileState| {
                set.files
                    .get(&t.path)
                    .is_some_and(|s| s.bytes == link.bytes)
            };
            t.change == Change::Modified
                && t.path != f.path
                && points_at(&f.path, target, &t.path)
                && same(old, before)
                && same(new, after)
        });
        if let Some(real) = real {
            folded.push((real, f.path.clone()));
        }
    }
    for (real, link) in &folded {
        if let Some(t) = files.get_mut(*real) {
            t.through.push(link.clone());
        }
    }
    let links: Vec<String> = folded.into_iter().map(|(_, link)| link).collect();
    files.retain(|f| !links.contains(&f.path));
}

/// Does the symlink at `link` (a file set path) with `target` (as readlink gives it) lead to
/// the file set path `real`? Lexically: inside the root a target resolves relative to the
/// link's directory; an absolute one is compared by its trailing components, since paths
/// inside the root are recorded relative to it.
fn points_at(link: &str, target: &Path, real: &str) -> bool {
    let joined = match Path::new(link).parent() {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target.to_path_buf(),
    };
    let mut resolved = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                if !resolved.pop() {
                    return false;
                }
            }
            std::path::Component::CurDir => {}
            other => resolved.push(other),
        }
    }
    let real = Path::new(real);
    resolved == real || (resolved.is_absolute() && real.is_relative() && resolved.ends_with(real))
}

fn compare(path: &str, before: &FileState, after: &FileState) -> Option<FileDiff> {
    let mode = (before.mode != after.mode).then_some((before.mode, after.mode));
    let link = (before.link != after.link).then(|| (before.link.clone(), after.link.clone()));
    let mut file = if before.bytes != after.bytes {
        content_diff(path, Change::Modified, &before.bytes, &after.bytes)
    } else if link.is_some() {
        bare(path, Change::LinkChanged)
    } else if mode.is_some() {
        bare(path, Change::ModeChanged)
    } else {
        return None;
    };
    file.mode = mode;
    file.link = link;
    Some(file)
}

fn bare(path: &str, change: Change) -> FileDiff {
    FileDiff {
        path: path.to_string(),
        change,
        unified: None,
        added: 0,
        removed: 0,
        mode: None,
        link: None,
        through: Vec::new(),
        unlinked: Vec::new(),
    }
}

/// The text a diff compares: `None` for binary data (a NUL byte). nginx reads configuration
/// as bytes, and a Latin-1 `é` in a comment is common: bytes that are not UTF-8 are shown as
/// `\xNN`, so the change is still seen and counted line by line.
fn text(bytes: &[u8]) -> Option<Cow<'_, str>> {
    if bytes.contains(&0) {
        return None;
    }
    if let Ok(t) = std::str::from_utf8(bytes) {
        return Some(Cow::Borrowed(t));
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    Some(Cow::Owned(out))
}

fn content_diff(path: &str, change: Change, old: &[u8], new: &[u8]) -> FileDiff {
    let mut file = bare(path, change);
    let (Some(old), Some(new)) = (text(old), text(new)) else {
        file.unified = Some("binary files differ".to_string());
        return file;
    };
    let lines = TextDiff::from_lines(&*old, &*new);
    for change in lines.iter_all_changes() {
        match change.tag() {
            ChangeTag::Insert => file.added += 1,
            ChangeTag::Delete => file.removed += 1,
            ChangeTag::Equal => {}
        }
    }
    let name = path.trim_start_matches('/');
    let unified = lines
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string();
    file.unified = Some(unified);
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_target_is_resolved_lexically() {
        let t = Path::new("../sites-available/app");
        assert!(points_at("sites-enabled/app", t, "sites-available/app"));
        assert!(!points_at("sites-enabled/app", t, "sites-enabled/app"));
        assert!(!points_at("app", t, "sites-available/app"));
        let abs = Path::new("/etc/nginx/sites-available/app");
        assert!(points_at("sites-enabled/app", abs, "sites-available/app"));
        assert!(points_at(
            "sites-enabled/app",
            abs,
            "/etc/nginx/sites-available/app"
        ));
        assert!(!points_at("sites-enabled/app", abs, "available/app"));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_and_diffed() {
        let d = content_diff(
            "a.conf",
            Change::Modified,
            b"# caf\xe9 1\n",
            b"# caf\xe9 2\n",
        );
        let unified = d.unified.unwrap_or_default();
        assert!(
            unified.contains("-# caf\\xe9 1\n+# caf\\xe9 2\n"),
            "{unified}"
        );
        assert_eq!((d.added, d.removed), (1, 1));
        // A NUL byte is binary data, not text.
        let d = content_diff("a.bin", Change::Modified, b"\0a", b"\0b");
        assert_eq!(d.unified.as_deref(), Some("binary files differ"));
    }
}
