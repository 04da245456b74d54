//! The files a snapshot's includes pick up on disk now, whatever those files hold.
//!
//! A restore must find every file another writer added that an include glob matches, or the
//! restored configuration loads it. Reading the tree from disk finds them only while they
//! parse: an unclosed `server {` dropped into `conf.d/` stops the load, the file stays, and
//! nginx keeps running the rejected candidate. Here the snapshot's own files are read from
//! its recorded bytes (they parsed when it was taken) and the globs are expanded on disk; a
//! file the snapshot does not hold is listed without being read, so its content cannot hide it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::scan::{relative_to, resolve_parent};
use super::{Snapshot, Store};
use crate::conf::load::{Disk, Source};
use crate::conf::{load_from, LoadOptions};

/// A snapshot's bytes for the files it holds, the disk for everything else.
struct Recorded<'a> {
    store: &'a Store,
    snap: &'a Snapshot,
    /// The snapshot's links ([`Snapshot::links`]): a path is looked up where it recorded it.
    links: std::collections::HashMap<PathBuf, PathBuf>,
}

impl Recorded<'_> {
    fn hash(&self, path: &Path) -> Option<&str> {
        let path = &super::scan::resolve_recorded(path, &self.links);
        if let Some(e) = relative_to(&self.snap.config_root, path).and_then(|r| self.snap.entry(&r))
        {
            return Some(&e.hash);
        }
        let outside = |p: &Path| self.snap.external_entry(p).map(|e| e.hash.as_str());
        outside(path).or_else(|| resolve_parent(path).ok().and_then(|p| outside(&p)))
    }
}

impl Source for Recorded<'_> {
    fn read(&self, path: &Path, max: u64) -> std::result::Result<Arc<[u8]>, String> {
        if let Some(bytes) = self.hash(path).and_then(|h| self.store.read_object(h).ok()) {
            return Ok(bytes.into());
        }
        match std::fs::symlink_metadata(path) {
            // Held by no snapshot: another writer's file. Only its path matters here, and
            // that it is there; what it includes is not read once it leaves the tree.
            Ok(_) if self.hash(path).is_none() => Ok(Arc::from(&[][..])),
            Ok(_) => Disk.read(path, max),
            Err(e) => Err(e.to_string()),
        }
    }

    fn glob(&self, pattern: &Path) -> std::result::Result<Vec<PathBuf>, String> {
        Disk.glob(pattern)
    }
}

impl Store {
    /// Every path the configuration `snap` records, with its main file at `main`, reads
    /// now: its includes followed through its recorded bytes, its globs matched on disk. A
    /// file on disk the snapshot does not hold is listed whether or not it parses. Empty when
    /// even the recorded tree does not load (a literal include gone from disk).
    pub fn globbed_paths(&self, snap: &Snapshot, main: &Path) -> Vec<PathBuf> {
        let source = Recorded {
            store: self,
            snap,
            links: snap.links(),
        };
        match load_from(main, &LoadOptions::default(), &source) {
            Ok(config) => config.paths().map(PathBuf::from).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::conf::ConfFile;
    use crate::store::{Outcome, SnapshotMeta, Store};

    #[test]
    fn a_file_a_glob_matches_is_listed_though_it_does_not_parse() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("nginx");
        std::fs::create_dir_all(root.join("conf.d")).unwrap();
        let main = root.join("nginx.conf");
        let app = root.join("conf.d/app.conf");
        std::fs::write(&main, "include conf.d/*.conf;\n").unwrap();
        std::fs::write(&app, "server {}\n").unwrap();
        let store = Store::open(&t.path().join("state")).unwrap();
        let meta = SnapshotMeta {
            outcome: Outcome::Pending,
            user: "t".into(),
            command: "t".into(),
            note: None,
            changed_files: Vec::new(),
        };
        let files: Vec<ConfFile> = [&main, &app]
            .iter()
            .map(|p| ConfFile {
                path: p.to_path_buf(),
                bytes: std::fs::read(p).unwrap().into(),
                via: None,
            })
            .collect();
        let snap = store.snapshot(&root, &files, meta).unwrap();

        // Another writer: a broken file the glob matches, and the recorded file made broken.
        let other = root.join("conf.d/zz-other.conf");
        std::fs::write(&other, "server { listen 127.0.0.1:1;\n").unwrap();
        std::fs::write(&app, "server {\n").unwrap();
        assert!(crate::conf::load(&main, &Default::default()).is_err());
        assert_eq!(
            store.globbed_paths(&snap, &main),
            vec![main.clone(), app.clone(), other.clone()]
        );

        std::fs::remove_file(&app).unwrap();
        assert_eq!(store.globbed_paths(&snap, &main), vec![main, other]);
    }
}
