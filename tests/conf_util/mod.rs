//! Helpers shared by the configuration-model tests: a throwaway config tree on disk and line
//! lookup by text, so assertions name file:line without counting lines by hand.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use safe_reload::conf::{load, Config, LoadOptions};

/// A temporary directory holding a configuration tree.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write `text` at `rel`, creating directories.
    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn load(&self, rel: &str) -> Config {
        load(&self.path(rel), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{rel} should load: {e}"))
    }
}

/// The 1-based line of the only line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> u32 {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "{needle:?} should be on exactly one line");
    hits[0] as u32
}

/// `file:line` as a pair for comparisons.
pub fn at(file: &Path, line: u32) -> (PathBuf, u32) {
    (file.to_path_buf(), line)
}
