//! Whether a rollback could put back the files a change touches, checked before the reload so
//! an obstacle stops the run while nothing has changed instead of breaking the rollback. Only
//! the changed files are checked: a rollback writes nothing else (a read-only `/usr` holding
//! Debian's stock module snippets does not block every reload).
//!
//! A restore writes a temp file in the file's own directory and renames it over the file. That
//! fails in a read-only directory or on a read-only mount (the temp file cannot be created:
//! found by creating and removing one), and on a file that is itself a mount point (a bind
//! mount: rename answers EBUSY; found in `/proc/self/mountinfo`). A hard-linked file would be
//! split by the rename, its other names keeping the old content; an in-place write would keep
//! the link but is not atomic, so such a file is refused up front with both names, and the
//! operator replaces the second name with a symlink, which restores keep.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::atomic::TEMP_PREFIX;

/// Why a path could not be restored by rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Obstacle {
    /// A file with more than one name.
    HardLink {
        path: PathBuf,
        /// Its other names found under the config root.
        others: Vec<PathBuf>,
        /// Its link count.
        links: u64,
    },
    /// A file that is a mount point itself.
    MountPoint { path: PathBuf },
    /// A directory where no file can be created.
    Unwritable { path: PathBuf, reason: String },
}

impl Obstacle {
    /// The path in question.
    pub fn path(&self) -> &Path {
        match self {
            Obstacle::HardLink { path, .. }
            | Obstacle::MountPoint { path }
            | Obstacle::Unwritable { path, .. } => path,
        }
    }

    /// What stands in the way and what to do (the path itself is the report's `file`).
    pub fn describe(&self) -> String {
        match self {
            Obstacle::HardLink { others, links, .. } => {
                let other = match others.first() {
                    Some(o) => format!("also {}", o.display()),
                    None => "the other names lie outside the config root".to_string(),
                };
                format!(
                    "hard-linked ({links} names; {other}): a restore by rename would leave the \
                     other name with the old content, and an in-place write is not atomic; \
                     replace the other name with a symlink"
                )
            }
            Obstacle::MountPoint { .. } => "a mount point (a bind mount?): a restore cannot \
                rename a file over it; edit the mounted source instead"
                .to_string(),
            Obstacle::Unwritable { reason, .. } => format!(
                "no file can be created in this directory ({reason}): a rollback could not put \
                 files back here"
            ),
        }
    }
}

/// Every obstacle to writing `paths` (absolute: the files a rollback would put back, those the
/// change touches) by rename; `root` is searched for the other names of a hard link.
pub fn obstacles(root: &Path, paths: &[PathBuf]) -> Vec<Obstacle> {
    let paths: BTreeSet<&PathBuf> = paths.iter().collect();
    let mounts = mount_points();
    let mut found = Vec::new();
    let mut dirs = BTreeSet::new();
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for path in &paths {
        if let Some(dir) = path.parent() {
            dirs.insert(dir.to_path_buf());
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if mounts.contains(*path) {
            found.push(Obstacle::MountPoint {
                path: path.to_path_buf(),
            });
        }
        if meta.file_type().is_file() && meta.nlink() > 1 {
            by_inode
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(path.to_path_buf());
        }
    }
    for ((dev, ino), names) in by_inode {
        let links = std::fs::symlink_metadata(&names[0]).map_or(2, |m| m.nlink());
        let mut others: Vec<PathBuf> = names[1..].to_vec();
        if others.is_empty() {
            others = same_inode_under(root, dev, ino, &names[0]);
        }
        found.push(Obstacle::HardLink {
            path: names[0].clone(),
            others,
            links,
        });
    }
    for dir in dirs {
        if let Err(reason) = probe_dir(&dir) {
            found.push(Obstacle::Unwritable { path: dir, reason });
        }
    }
    found
}

/// Creates and removes a temp file in `dir`; a directory that does not exist (yet) is left to
/// the restore, which creates it below the root.
fn probe_dir(dir: &Path) -> std::result::Result<(), String> {
    if !dir.is_dir() {
        return Ok(());
    }
    let probe = dir.join(format!("{TEMP_PREFIX}probe.{}", super::random_hex(8)));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|e| e.to_string())?;
    let wrote = file.write_all(b"x").map_err(|e| e.to_string());
    drop(file);
    let removed = std::fs::remove_file(&probe).map_err(|e| e.to_string());
    wrote.and(removed)
}

/// Other names of an inode under `root` (not following links; bounded, it is a search).
fn same_inode_under(root: &Path, dev: u64, ino: u64, not: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut budget = 20_000usize;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return found;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.dev() == dev && meta.ino() == ino && path != not {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Mount points of this process's mount namespace.
fn mount_points() -> BTreeSet<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn a_hard_link_is_found_with_its_other_name() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("sites-available")).unwrap();
        std::fs::write(root.join("sites-available/app"), "server {}\n").unwrap();
        std::fs::create_dir_all(root.join("sites-enabled")).unwrap();
        std::fs::hard_link(
            root.join("sites-available/app"),
            root.join("sites-enabled/app"),
        )
        .unwrap();
        let found = obstacles(root, &[root.join("sites-enabled/app")]);
        assert_eq!(
            found,
            vec![Obstacle::HardLink {
                path: root.join("sites-enabled/app"),
                others: vec![root.join("sites-available/app")],
                links: 2,
            }]
        );
        assert!(found[0].describe().contains("sites-available/app"));
    }
}
