//! Helpers shared by the store tests: snapshot metadata, a file set as the config model gives
//! it, and files written with a mode.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use safe_reload::conf::ConfFile;
use safe_reload::store::{Outcome, SnapshotMeta};

pub fn meta(outcome: Outcome) -> SnapshotMeta {
    SnapshotMeta {
        outcome,
        user: "tester".into(),
        command: "safe-reload test".into(),
        note: None,
        changed_files: Vec::new(),
    }
}

/// The file set as the config model would give it: path as named, bytes read through links.
pub fn conf_files(paths: &[PathBuf]) -> Vec<ConfFile> {
    paths
        .iter()
        .map(|p| ConfFile {
            path: p.clone(),
            bytes: fs::read(p).unwrap().into(),
            via: None,
        })
        .collect()
}

/// The file set of `rels` under `root`.
pub fn conf_files_in(root: &Path, rels: &[&str]) -> Vec<ConfFile> {
    conf_files(&rels.iter().map(|r| root.join(r)).collect::<Vec<_>>())
}

pub fn write(path: &Path, text: impl AsRef<[u8]>, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}
