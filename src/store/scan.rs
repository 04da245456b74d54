//! From the config model's file set to manifest entries: path, kind, mode, owner, symlink
//! target, size and hash of each file, using the bytes the model already read.
//!
//! Both a snapshot and the candidate side of a diff come from here, so the two always agree on
//! what a file set contains. Every file nginx reads is recorded wherever it lives: inside the
//! config root by a relative path, outside it (`include /srv/app/nginx/*.conf;`, Debian's
//! `modules-enabled/*.conf` links into `/usr/share/nginx`) by an absolute path whose directories
//! are resolved, so a restore writes where nginx reads and never through a directory link. A
//! symlink brings its real file along, so a restore can put the content back behind the link
//! and keep the link.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{relative_path_problem, Entry, EntryKind, ExternalEntry};
use crate::conf::ConfFile;
use crate::error::Result;

/// A manifest entry with the content it describes.
#[derive(Debug, Clone)]
pub struct ScannedEntry {
    /// The entry as recorded.
    pub entry: Entry,
    /// The content (for a symlink: the content read through it).
    pub bytes: Arc<[u8]>,
}

/// A file outside the config root with its content.
#[derive(Debug, Clone)]
pub struct ScannedExternal {
    /// The entry as recorded.
    pub entry: ExternalEntry,
    /// The content (for a symlink: the content read through it).
    pub bytes: Arc<[u8]>,
}

/// A file set turned into entries.
#[derive(Debug, Clone, Default)]
pub struct Scanned {
    /// Files and symlinks inside the config root, in the file set's order, link targets last.
    pub files: Vec<ScannedEntry>,
    /// Files and symlinks outside the config root, by absolute path.
    pub external: Vec<ScannedExternal>,
}

/// Where a path of the file set is recorded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// Relative to the config root.
    Inside(PathBuf),
    /// Absolute, its directories resolved (no symlink, no `..`).
    Outside(PathBuf),
}

/// The path of `path` relative to `root`, if it lies inside it (lexically).
pub fn relative_to(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    relative_path_problem(rel)
        .is_none()
        .then(|| rel.to_path_buf())
}

fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Where `path` (as nginx named it) is recorded: by its path inside the root when no
/// directory on the way there is a symlink; otherwise by its resolved directory, inside the
/// root (`conf.d -> conf.d.v2` records `conf.d.v2/app.conf`, and the link as an entry of its
/// own) or outside it. A file is never recorded below a link, so a restore that points the
/// link back writes the old release's file into the old release, not into the new one.
pub fn place(root: &Path, canon_root: &Path, path: &Path) -> Result<Place> {
    if let Some(rel) = relative_to(root, path) {
        if parent_is(canon_root, &rel) {
            return Ok(Place::Inside(rel));
        }
    }
    let resolved = resolve_parent(path)?;
    Ok(match relative_to(canon_root, &resolved) {
        Some(rel) => Place::Inside(rel),
        None => Place::Outside(resolved),
    })
}

/// `path` with its directory resolved through every symlink; the last component is kept.
pub fn resolve_parent(path: &Path) -> Result<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(path.to_path_buf());
    };
    Ok(fs_err::canonicalize(dir)?.join(name))
}

/// Every path a file set may write: each file as placed, every symlink nginx follows to open
/// it, and the real file behind them. A manifest's outside paths are only ever written when
/// they are in this set.
pub fn writable_paths(root: &Path, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let canon_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut set = BTreeSet::new();
    for path in files {
        if let Ok(place) = place(root, &canon_root, path) {
            set.insert(absolute(root, &place));
        }
        if let Ok(real) = std::fs::canonicalize(path) {
            set.insert(real);
        }
        set.extend(links_followed(root, path).into_iter().map(|(link, _)| link));
    }
    set
}

/// How many symlinks the kernel follows resolving one path before it gives up (ELOOP).
const MAX_LINKS: usize = 40;

/// Every symlink the kernel follows to open `path`, in order, each by its absolute path with
/// its directories resolved, and what readlink gives for it: a directory link on the way
/// (Capistrano's `current -> releases/v2`), each hop of a chain (`sites-enabled/app ->
/// ../sites-available/app -> /srv/app/app.conf`), the last component's own link. A release
/// switched by re-pointing any of them changes what nginx reads as much as an edit does, so a
/// snapshot records them all and a restore points them back. Links at or above the
/// configuration root are not the configuration's: they are left out. A path that does not
/// resolve gives the links up to where it stops.
pub fn links_followed(root: &Path, path: &Path) -> Vec<(PathBuf, PathBuf)> {
    let canon_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let above_root = |link: &Path| root.starts_with(link) || canon_root.starts_with(link);
    let mut links = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut cur = PathBuf::from("/");
    if path.is_relative() {
        match std::env::current_dir() {
            Ok(dir) => cur = dir,
            Err(_) => return links,
        }
    }
    while let Some(name) = pending.pop() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&next) else {
            break;
        };
        if !meta.file_type().is_symlink() {
            cur = next;
            continue;
        }
        let Ok(target) = std::fs::read_link(&next) else {
            break;
        };
        if links.len() == MAX_LINKS {
            break;
        }
        if !above_root(&next) {
            links.push((next, target.clone()));
        }
        if target.is_absolute() {
            cur = PathBuf::from("/");
        }
        push_components(&mut pending, &target);
    }
    links
}

/// Puts `path`'s components on `stack` so that they pop in order (`.` dropped).
fn push_components(stack: &mut Vec<std::ffi::OsString>, path: &Path) {
    use std::path::Component;
    let names: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    stack.extend(names.into_iter().rev());
}

/// The absolute path of a place.
pub fn absolute(root: &Path, place: &Place) -> PathBuf {
    match place {
        Place::Inside(rel) => root.join(rel),
        Place::Outside(abs) => abs.clone(),
    }
}

/// Describes every file of `files` relative to `config_root`. Only metadata is read from disk
/// (lstat, readlink, canonicalize); contents come from the model.
pub fn scan(config_root: &Path, files: &[ConfFile]) -> Result<Scanned> {
    let canon_root = fs_err::canonicalize(config_root)?;
    let mut out = Scanned::default();
    let mut seen = BTreeSet::new();
    let mut link_targets = Vec::new();
    for file in files {
        let place = place(config_root, &canon_root, &file.path)?;
        if !seen.insert(place.clone()) {
            continue;
        }
        let meta = fs_err::symlink_metadata(&file.path)?;
        let mut entry = file_entry(&meta, &file.bytes);
        // A device nginx reads (`sites-enabled/old -> /dev/null`, a site masked) is no file
        // of the configuration: never recorded, so never written over by a restore.
        let special = !meta.file_type().is_symlink() && !meta.is_file();
        if meta.file_type().is_symlink() {
            entry.kind = EntryKind::Symlink;
            entry.target = Some(fs_err::read_link(&file.path)?);
            // A dangling link (`sites-enabled/new -> ../sites-available/new` made before the
            // file): the link is all there is to record, and to put back or remove.
            let dangling = matches!(
                std::fs::metadata(&file.path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound
            );
            let real = match dangling {
                true => None,
                false => Some(fs_err::canonicalize(&file.path)?),
            };
            let real_meta = real.as_ref().map(fs_err::metadata).transpose()?;
            if let (Some(real), Some(real_meta)) = (real, real_meta.filter(|m| m.is_file())) {
                let real_place = placed(&canon_root, real);
                link_targets.push((
                    real_place,
                    file_entry(&real_meta, &file.bytes),
                    file.bytes.clone(),
                ));
            }
        }
        if !special {
            out.push(place, entry, &file.bytes);
        }
        let via = file.via.as_deref().map(|v| links_followed(config_root, v));
        for (link, target) in links_followed(config_root, &file.path)
            .into_iter()
            .chain(via.into_iter().flatten())
        {
            let Ok(link_meta) = fs_err::symlink_metadata(&link) else {
                continue;
            };
            // A directory link has no content of its own; a hop of a chain reads the file.
            let leads_to_dir = std::fs::metadata(&link).is_ok_and(|m| m.is_dir());
            let bytes: Arc<[u8]> = if leads_to_dir {
                Arc::from(&[][..])
            } else {
                file.bytes.clone()
            };
            let place = placed(&canon_root, link);
            let mut entry = file_entry(&link_meta, &bytes);
            entry.kind = EntryKind::Symlink;
            entry.target = Some(target);
            link_targets.push((place, entry, bytes));
        }
    }
    for (place, entry, bytes) in link_targets {
        if seen.insert(place.clone()) {
            out.push(place, entry, &bytes);
        }
    }
    Ok(out)
}

/// Where a path whose directories are resolved is recorded.
fn placed(canon_root: &Path, resolved: PathBuf) -> Place {
    match relative_to(canon_root, &resolved) {
        Some(rel) => Place::Inside(rel),
        None => Place::Outside(resolved),
    }
}

impl Scanned {
    fn push(&mut self, place: Place, entry: Entry, bytes: &Arc<[u8]>) {
        match place {
            Place::Inside(path) => self.files.push(ScannedEntry {
                entry: Entry { path, ..entry },
                bytes: bytes.clone(),
            }),
            Place::Outside(path) => self.external.push(ScannedExternal {
                entry: ExternalEntry {
                    path,
                    kind: entry.kind,
                    mode: entry.mode,
                    uid: Some(entry.uid),
                    gid: Some(entry.gid),
                    target: entry.target,
                    size: entry.size,
                    hash: entry.hash,
                },
                bytes: bytes.clone(),
            }),
        }
    }

    /// How many paths are recorded, inside and outside the root: the one count `init`,
    /// `history` and the report use.
    pub fn count(&self) -> usize {
        self.files.len() + self.external.len()
    }
}

/// Whether the directory of `rel` (relative to the root) resolves to itself below the
/// resolved root: no symlink on the way.
fn parent_is(canon_root: &Path, rel: &Path) -> bool {
    let lexical: PathBuf = canon_root.join(rel);
    let Some(dir) = lexical.parent() else {
        return false;
    };
    let plain: PathBuf = dir.components().collect();
    std::fs::canonicalize(&plain).is_ok_and(|real| real == plain)
}

/// The directory `dir` (absolute) resolved through the links a snapshot recorded
/// (`links`: a link's absolute path to its recorded target), not through the disk: where
/// that snapshot's files below it were recorded. A component that is no recorded link is
/// taken as it is; `..` goes up from where a link led, as the kernel's does.
pub fn resolve_recorded_dir(dir: &Path, links: &HashMap<PathBuf, PathBuf>) -> PathBuf {
    if links.is_empty() || dir.is_relative() {
        return dir.to_path_buf();
    }
    let mut pending = Vec::new();
    push_components(&mut pending, dir);
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        match links.get(&next) {
            Some(target) if hops < MAX_LINKS => {
                hops += 1;
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                push_components(&mut pending, target);
            }
            _ => cur = next,
        }
    }
    cur
}

/// Where a snapshot with these recorded `links` recorded the file nginx opens as `path`
/// (absolute): its directory resolved by [`resolve_recorded_dir`], its own name kept.
pub fn resolve_recorded(path: &Path, links: &HashMap<PathBuf, PathBuf>) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !links.is_empty() => resolve_recorded_dir(dir, links).join(name),
        _ => path.to_path_buf(),
    }
}

/// A regular-file entry (path filled in by the caller) for `bytes` with the mode and owner
/// from `meta`.
fn file_entry(meta: &std::fs::Metadata, bytes: &[u8]) -> Entry {
    Entry {
        path: PathBuf::new(),
        kind: EntryKind::File,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        target: None,
        size: bytes.len() as u64,
        hash: hash(bytes),
    }
}
