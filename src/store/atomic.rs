//! Atomic file replacement: the only way anything under the state directory or the config tree
//! is written.
//!
//! A write goes to a temp file in the target's own directory, is fsynced, renamed over the target
//! and the directory is fsynced, so a crash or power loss leaves either the old or the new
//! content, never a mix. A failed write (disk full, read-only file system) removes its temp file
//! and returns an error naming the target path.

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of every temp file. The leading dot keeps it out of nginx's `include *.conf` globs
/// (glob(3) never matches a leading dot with `*`), and the fixed prefix lets a later run sweep
/// what a killed run left behind.
pub const TEMP_PREFIX: &str = ".safe-reload-tmp.";

/// Ownership and permissions to give a written file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs {
    /// Permission bits (`0o7777` part of the mode).
    pub mode: u32,
    /// Owner to set; only applied when we run as root.
    pub owner: Option<(u32, u32)>,
}

impl Attrs {
    /// A private file: mode 0600, owner unchanged.
    pub fn private() -> Attrs {
        Attrs {
            mode: 0o600,
            owner: None,
        }
    }
}

/// An I/O error that names the path and what was being done to it.
pub fn io_err(path: &Path, action: &str, err: io::Error) -> Error {
    Error::Io(io::Error::new(
        err.kind(),
        format!("cannot {action} {}: {err}", path.display()),
    ))
}

fn parent_of(path: &Path) -> Result<&Path> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => Err(Error::State {
            path: path.to_path_buf(),
            message: "has no parent directory to write a temp file in".into(),
        }),
    }
}

/// Replaces `path` with `bytes` atomically. `path` itself is replaced, never a file a symlink
/// at `path` points to: rename acts on the link, not its target.
pub fn write_atomic(path: &Path, bytes: &[u8], attrs: Attrs) -> Result<()> {
    let dir = parent_of(path)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| io_err(path, "create a temp file for", e))?;
    let file = tmp.as_file_mut();
    file.write_all(bytes)
        .map_err(|e| io_err(path, "write", e))?;
    apply_attrs(file, attrs).map_err(|e| io_err(path, "set mode/owner of", e))?;
    file.sync_all().map_err(|e| io_err(path, "fsync", e))?;
    // On failure the temp file is removed when `persist`'s error value drops.
    tmp.persist(path)
        .map_err(|e| io_err(path, "rename a temp file onto", e.error))?;
    sync_dir(dir)
}

fn apply_attrs(file: &File, attrs: Attrs) -> io::Result<()> {
    if let Some((uid, gid)) = attrs.owner {
        if is_root() {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
        }
    }
    // After chown: chown clears set-id bits, which the mode must keep.
    file.set_permissions(Permissions::from_mode(attrs.mode & 0o7777))
}

/// Replaces `path` with a symlink to `target` atomically (the old entry, whatever it was, is
/// renamed over, never followed).
pub fn symlink_atomic(path: &Path, target: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let dir = parent_of(path)?;
    let tmp = loop {
        let candidate = dir.join(format!("{TEMP_PREFIX}{}", crate::store::random_hex(6)));
        match std::os::unix::fs::symlink(target, &candidate) {
            Ok(()) => break candidate,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(path, "create a symlink for", e)),
        }
    };
    let result = finish_symlink(&tmp, path, owner);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

fn finish_symlink(tmp: &Path, path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        if is_root() {
            std::os::unix::fs::lchown(tmp, Some(uid), Some(gid))
                .map_err(|e| io_err(path, "set the owner of", e))?;
        }
    }
    std::fs::rename(tmp, path).map_err(|e| io_err(path, "rename a symlink onto", e))
}

/// Makes a directory's entries (a rename, a removal) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "fsync the directory", e))
}

/// Removes temp files a killed run left in `dir`; returns what it removed.
pub fn sweep_temp_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err(dir, "list", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err(dir, "list", e))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| io_err(&path, "remove", e))?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Whether we run with root's effective uid (owners are only restored then).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
