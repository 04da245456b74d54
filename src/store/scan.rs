//! From the config model's file set to manifest entries: relative path, kind, mode, owner,
//! symlink target, size and hash of each file, using the bytes the model already read.
//!
//! Both a snapshot and the candidate side of a diff come from here, so the two always agree on
//! what a file set contains: a symlink whose real file lies inside the config root brings that
//! file along (so restore can put its content back), and files outside the root are kept apart
//! as external (checked, never written).

use std::collections::BTreeSet;
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
    /// The content.
    pub bytes: Arc<[u8]>,
}

/// A file set turned into entries.
#[derive(Debug, Clone, Default)]
pub struct Scanned {
    /// Files and symlinks inside the config root, in the file set's order, link targets last.
    pub files: Vec<ScannedEntry>,
    /// Files outside the config root.
    pub external: Vec<ScannedExternal>,
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

/// Describes every file of `files` relative to `config_root`. Only metadata is read from disk
/// (lstat, readlink, canonicalize); contents come from the model.
pub fn scan(config_root: &Path, files: &[ConfFile]) -> Result<Scanned> {
    let canon_root = fs_err::canonicalize(config_root)?;
    let mut out = Scanned::default();
    let mut seen = BTreeSet::new();
    let mut link_targets = Vec::new();
    for file in files {
        // A path below a directory symlink that leads out of the root is outside in fact:
        // restore will not write through that link, so it is recorded as external.
        let rel =
            relative_to(config_root, &file.path).filter(|_| parent_inside(&canon_root, &file.path));
        let Some(rel) = rel else {
            out.external.push(external(file)?);
            continue;
        };
        if !seen.insert(rel.clone()) {
            continue;
        }
        let meta = fs_err::symlink_metadata(&file.path)?;
        let mut entry = file_entry(rel, &meta, &file.bytes);
        if meta.file_type().is_symlink() {
            entry.kind = EntryKind::Symlink;
            entry.target = Some(fs_err::read_link(&file.path)?);
            if let Some(target) = link_target(&canon_root, file)? {
                link_targets.push(target);
            }
        }
        out.files.push(ScannedEntry {
            entry,
            bytes: file.bytes.clone(),
        });
    }
    for target in link_targets {
        if seen.insert(target.entry.path.clone()) {
            out.files.push(target);
        }
    }
    Ok(out)
}

fn parent_inside(canon_root: &Path, path: &Path) -> bool {
    path.parent()
        .and_then(|dir| std::fs::canonicalize(dir).ok())
        .is_some_and(|dir| dir.starts_with(canon_root))
}

/// A regular-file entry for `bytes` with the mode and owner from `meta`.
fn file_entry(path: PathBuf, meta: &std::fs::Metadata, bytes: &[u8]) -> Entry {
    Entry {
        path,
        kind: EntryKind::File,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        target: None,
        size: bytes.len() as u64,
        hash: hash(bytes),
    }
}

/// The real file behind a symlink, when it lies inside the config root.
fn link_target(canon_root: &Path, file: &ConfFile) -> Result<Option<ScannedEntry>> {
    let real = fs_err::canonicalize(&file.path)?;
    let Some(rel) = relative_to(canon_root, &real) else {
        return Ok(None);
    };
    let meta = fs_err::metadata(&real)?;
    Ok(Some(ScannedEntry {
        entry: file_entry(rel, &meta, &file.bytes),
        bytes: file.bytes.clone(),
    }))
}

fn external(file: &ConfFile) -> Result<ScannedExternal> {
    let meta = fs_err::metadata(&file.path)?;
    Ok(ScannedExternal {
        entry: ExternalEntry {
            path: file.path.clone(),
            mode: meta.mode() & 0o7777,
            size: file.bytes.len() as u64,
            hash: hash(&file.bytes),
        },
        bytes: file.bytes.clone(),
    })
}
