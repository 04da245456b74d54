//! Drift: whether the file set nginx would read now is still the one a snapshot recorded.
//!
//! Another writer (configuration management, a second operator, certbot) can change a file
//! after a run read and tested it. The run reads the configuration again right before the
//! signal and once the reload is proven, and compares what it finds here with the candidate's
//! snapshot: every file by content hash and link target, and the set itself, so a glob that
//! now matches a new file counts too. Size, mtime and inode alone would not do: the model's
//! read comes before the snapshot's `lstat`, and a same-size write within one timestamp tick
//! keeps all three, so the content is compared; a configuration's files hash in milliseconds.
//! Mode and owner are not drift: nginx reads the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{EntryKind, Snapshot};
use super::scan::scan;
use crate::conf::ConfFile;
use crate::error::Result;

/// How one file differs from the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftChange {
    /// Its content is not the recorded content.
    Modified,
    /// Read now, not recorded (a new file, or a glob now matching one).
    Added,
    /// Recorded, no longer read.
    Removed,
    /// A symlink now points elsewhere, or a link became a file or the other way round.
    Relinked,
}

impl DriftChange {
    /// What happened to the file since the test: "removed after it was tested".
    pub fn since_the_test(self) -> &'static str {
        match self {
            DriftChange::Modified => "changed after it was tested",
            DriftChange::Added => "added after the configuration was tested",
            DriftChange::Removed => "removed after it was tested",
            DriftChange::Relinked => "its link changed after it was tested",
        }
    }
}

/// One file that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drifted {
    /// Absolute path.
    pub path: PathBuf,
    /// What changed.
    pub change: DriftChange,
}

/// What changed since the snapshot; empty when nothing did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The files that differ, by path.
    pub files: Vec<Drifted>,
    /// The configuration no longer loads (why), so what nginx would read is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unloadable: Option<String>,
}

impl Drift {
    /// The configuration cannot be read again.
    pub fn unloadable(reason: String) -> Drift {
        Drift {
            files: Vec::new(),
            unloadable: Some(reason),
        }
    }

    /// The configuration cannot be read again (`reason`); the files `snap` recorded that are
    /// gone from the disk are named as removed, since a removed include is the usual cause.
    pub fn unloadable_from(snap: &Snapshot, reason: String) -> Drift {
        let files = of_snapshot(snap)
            .into_keys()
            .filter(|p| {
                std::fs::symlink_metadata(p)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            })
            .map(|path| Drifted {
                path,
                change: DriftChange::Removed,
            })
            .collect();
        Drift {
            files,
            unloadable: Some(reason),
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.unloadable.is_none()
    }

    /// The absolute paths of files read now that the snapshot does not hold.
    pub fn added(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .filter(|f| f.change == DriftChange::Added)
            .map(|f| f.path.as_path())
    }

    /// Whether every change is a file that is gone.
    pub fn only_removed(&self) -> bool {
        !self.files.is_empty() && self.files.iter().all(|f| f.change == DriftChange::Removed)
    }

    /// `/etc/nginx/nginx.conf (modified), /etc/nginx/conf.d/new.conf (added)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .files
            .iter()
            .map(|f| {
                let what = match f.change {
                    DriftChange::Modified => "modified",
                    DriftChange::Added => "added",
                    DriftChange::Removed => "removed",
                    DriftChange::Relinked => "link changed",
                };
                format!("{} ({what})", f.path.display())
            })
            .collect();
        if let Some(why) = &self.unloadable {
            parts.push(format!("the configuration no longer loads: {why}"));
        }
        parts.join(", ")
    }
}

/// What a file set holds, path by path: kind, link target, content hash.
type Shape<'a> = BTreeMap<PathBuf, (EntryKind, Option<PathBuf>, String)>;

fn of_snapshot(snap: &Snapshot) -> Shape<'_> {
    let mut shape = Shape::new();
    for e in &snap.files {
        let path = snap.config_root.join(&e.path);
        shape.insert(path, (e.kind, e.target.clone(), e.hash.clone()));
    }
    for e in &snap.external {
        shape.insert(e.path.clone(), (e.kind, e.target.clone(), e.hash.clone()));
    }
    shape
}

/// Compares `now` (the file set as read again, with its bytes) with what `snap` recorded.
pub fn recheck(snap: &Snapshot, now: &[ConfFile]) -> Result<Drift> {
    let before = of_snapshot(snap);
    let scanned = scan(&snap.config_root, now)?;
    let mut after = Shape::new();
    for s in scanned.files {
        let e = s.entry;
        after.insert(snap.config_root.join(&e.path), (e.kind, e.target, e.hash));
    }
    for s in scanned.external {
        let e = s.entry;
        after.insert(e.path, (e.kind, e.target, e.hash));
    }
    let mut drift = Drift::default();
    for (path, (kind, target, hash)) in &before {
        let change = match after.get(path) {
            None => Some(DriftChange::Removed),
            Some((k, t, _)) if k != kind || t != target => Some(DriftChange::Relinked),
            Some((_, _, h)) if h != hash => Some(DriftChange::Modified),
            Some(_) => None,
        };
        if let Some(change) = change {
            drift.files.push(Drifted {
                path: path.clone(),
                change,
            });
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        drift.files.push(Drifted {
            path: path.clone(),
            change: DriftChange::Added,
        });
    }
    drift.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Outcome, SnapshotMeta, Store};
    use std::os::unix::fs::PermissionsExt;

    fn files(paths: &[PathBuf]) -> Vec<ConfFile> {
        paths
            .iter()
            .map(|p| ConfFile {
                path: p.clone(),
                bytes: std::fs::read(p).unwrap().into(),
                via: None,
            })
            .collect()
    }

    #[test]
    fn content_links_and_the_set_drift_but_a_mode_does_not() {
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
        let set = [main.clone(), app.clone()];
        let snap = store.snapshot(&root, &files(&set), meta).unwrap();
        assert!(recheck(&snap, &files(&set)).unwrap().is_empty());

        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            recheck(&snap, &files(&set)).unwrap().is_empty(),
            "mode only"
        );

        std::fs::write(&app, "server { }\n").unwrap();
        let late = root.join("conf.d/late.conf");
        std::fs::write(&late, "# new\n").unwrap();
        let drift = recheck(&snap, &files(&[main.clone(), app.clone(), late.clone()])).unwrap();
        assert_eq!(
            drift.files,
            vec![
                Drifted {
                    path: app.clone(),
                    change: DriftChange::Modified
                },
                Drifted {
                    path: late.clone(),
                    change: DriftChange::Added
                },
            ]
        );
        assert_eq!(drift.added().collect::<Vec<_>>(), vec![late.as_path()]);
        assert!(drift.describe().contains("late.conf (added)"));

        let drift = recheck(&snap, &files(&[main])).unwrap();
        assert_eq!(drift.files[0].change, DriftChange::Removed);
        assert!(!Drift::unloadable("x".into()).is_empty());
    }
}
