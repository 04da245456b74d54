//! Snapshots: what a manifest records, objects stored once, manifest validation on read, the
//! state directory's permissions, prune and the journal.

// A test that needs root says so on stdout when it skips.
#![allow(clippy::print_stdout)]

mod store_util;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use safe_reload::store::{EntryKind, JournalRecord, Outcome, Phase, Snapshot, Store};
use safe_reload::Error;
use store_util::*;

fn count_objects(store: &Store) -> usize {
    walk(&store.root().join("objects")).len()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn manifest_records_modes_symlinks_link_targets_and_external_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    write(&root.join("nginx.conf"), "events {}\n", 0o644);
    write(&root.join("sites-available/app"), "server {}\n", 0o640);
    fs::create_dir_all(root.join("sites-enabled")).unwrap();
    symlink("../sites-available/app", root.join("sites-enabled/app")).unwrap();
    let outside = tmp.path().join("shared/upstreams.conf");
    write(&outside, "upstream u { server 127.0.0.1:1; }\n", 0o600);
    symlink(tmp.path().join("shared"), root.join("shared.d")).unwrap();
    let via_dir_link = root.join("shared.d/upstreams.conf");
    let paths = [
        root.join("nginx.conf"),
        root.join("sites-enabled/app"),
        outside.clone(),
        via_dir_link.clone(),
    ];

    let store = Store::open(&tmp.path().join("state")).unwrap();
    let snap = store
        .snapshot(&root, &conf_files(&paths), meta(Outcome::Good))
        .unwrap();

    let link = snap.entry(Path::new("sites-enabled/app")).unwrap();
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(
        link.target.as_deref(),
        Some(Path::new("../sites-available/app"))
    );
    let target = snap.entry(Path::new("sites-available/app")).unwrap();
    assert_eq!(
        (target.kind, target.mode, target.size),
        (EntryKind::File, 0o640, 10)
    );
    assert_eq!(target.hash, link.hash);
    let main = snap.entry(Path::new("nginx.conf")).unwrap();
    assert_eq!(main.mode, 0o644);
    assert_eq!(
        main.uid,
        fs::metadata(root.join("nginx.conf")).unwrap().uid()
    );
    assert_eq!(snap.files.len(), 3);
    // Outside files are recorded where they really are: the path through the directory link
    // and the direct one are the same file, recorded once, by its resolved path.
    let external: Vec<&Path> = snap.external.iter().map(|e| e.path.as_path()).collect();
    assert_eq!(external, vec![outside.as_path()]);
    assert_eq!(
        (snap.external[0].uid, snap.external[0].mode),
        (Some(fs::metadata(&outside).unwrap().uid()), 0o600)
    );
    assert!(via_dir_link.exists());
    // Objects are plain files holding the content.
    assert_eq!(
        fs::read(store.object_path(&main.hash)).unwrap(),
        b"events {}\n"
    );
    assert_eq!(store.get(&snap.id).unwrap(), snap);
}

#[test]
fn two_snapshots_of_the_same_file_share_one_object() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    write(&root.join("nginx.conf"), "events {}\n", 0o644);
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let files = conf_files(&[root.join("nginx.conf")]);
    let first = store.snapshot(&root, &files, meta(Outcome::Good)).unwrap();
    let object = store.object_path(&first.files[0].hash);
    let written = fs::metadata(&object).unwrap().modified().unwrap();
    let second = store
        .snapshot(&root, &files, meta(Outcome::Pending))
        .unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(count_objects(&store), 1);
    assert_eq!(fs::metadata(&object).unwrap().modified().unwrap(), written);
    let ids: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![second.id, first.id], "list is newest first");
}

#[test]
fn corrupt_object_is_refused_on_read() {
    let (_tmp, store, snap) = one_file_snapshot();
    let hash = &snap.files[0].hash;
    fs::write(store.object_path(hash), "events { tampered }\n").unwrap();
    let err = store.read_object(hash).unwrap_err();
    assert!(err.to_string().contains("object is corrupt"), "{err}");
}

/// r14 u F5: a corrupt object under the hash of a file's bytes is written again by the next
/// snapshot of those bytes (`init` mends the store); it was kept, and every later run failed
/// on it with nothing to repair it.
#[test]
fn a_snapshot_of_the_same_bytes_mends_a_corrupt_object() {
    let (tmp, store, snap) = one_file_snapshot();
    let hash = &snap.files[0].hash;
    fs::write(
        store.object_path(hash),
        "events {}\n# appended by a disk error\n",
    )
    .unwrap();
    assert!(store.read_object(hash).is_err());
    let root = tmp.path().join("nginx");
    let files = conf_files(&[root.join("nginx.conf")]);
    store.snapshot(&root, &files, meta(Outcome::Good)).unwrap();
    assert_eq!(store.read_object(hash).unwrap(), b"events {}\n");
}

/// A store holding one good snapshot of a one-file tree.
fn one_file_snapshot() -> (tempfile::TempDir, Store, Snapshot) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    write(&root.join("nginx.conf"), "events {}\n", 0o644);
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let files = conf_files(&[root.join("nginx.conf")]);
    let snap = store.snapshot(&root, &files, meta(Outcome::Good)).unwrap();
    (tmp, store, snap)
}

fn tamper(path_in_manifest: &str) -> (tempfile::TempDir, Store, String) {
    let (tmp, store, snap) = one_file_snapshot();
    let file = store
        .root()
        .join("snapshots")
        .join(format!("{}.json", snap.id));
    let text = fs::read_to_string(&file).unwrap();
    let quoted = serde_json::to_string(path_in_manifest).unwrap();
    fs::write(&file, text.replace("\"nginx.conf\"", &quoted)).unwrap();
    (tmp, store, snap.id)
}

#[test]
fn manifest_with_dotdot_is_refused() {
    let (_tmp, store, id) = tamper("../../etc/passwd");
    let err = store.get(&id).unwrap_err();
    assert!(matches!(err, Error::State { .. }));
    let text = err.to_string();
    assert!(text.contains(&format!("{id}.json")), "{text}");
    assert!(
        text.contains("'../../etc/passwd' leaves the config root"),
        "{text}"
    );
    assert!(
        store.list().is_err(),
        "a tampered manifest must not be skipped silently"
    );
}

#[test]
fn manifest_with_absolute_path_is_refused() {
    let (_tmp, store, id) = tamper("/etc/passwd");
    let text = store.get(&id).unwrap_err().to_string();
    assert!(text.contains("'/etc/passwd' is an absolute path"), "{text}");
}

#[test]
fn manifest_with_nul_or_empty_path_is_refused() {
    let (_tmp, store, id) = tamper("a\u{0}b");
    assert!(store.get(&id).unwrap_err().to_string().contains("NUL"));
    let (_tmp, store, id) = tamper("");
    assert!(store
        .get(&id)
        .unwrap_err()
        .to_string()
        .contains("empty path"));
}

#[test]
fn snapshot_id_with_separators_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    assert!(matches!(store.get("../lock"), Err(Error::Usage(_))));
}

#[test]
fn state_dir_is_created_0700_and_refused_when_others_can_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/safe-reload");
    Store::open(&dir).unwrap();
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o770)).unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::State { path, .. } if path == &dir),
        "{err}"
    );
    assert!(
        err.to_string().contains("writable by group or others"),
        "{err}"
    );

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o707)).unwrap();
    assert!(Store::open(&dir).is_err());
}

#[test]
fn state_dir_owned_by_another_user_is_refused() {
    if !safe_reload::store::is_root() {
        println!("skipped: changing a directory's owner needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
}

#[test]
fn prune_keeps_the_newest_and_last_good_and_drops_unreferenced_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let mut snaps = Vec::new();
    for i in 0..5 {
        write(&root.join("nginx.conf"), format!("# version {i}\n"), 0o644);
        let files = conf_files(&[root.join("nginx.conf")]);
        snaps.push(store.snapshot(&root, &files, meta(Outcome::Good)).unwrap());
    }
    store.set_last_good(&snaps[0]).unwrap();
    let report = store.prune(2).unwrap();

    let left: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    let expect = vec![
        snaps[4].id.clone(),
        snaps[3].id.clone(),
        snaps[0].id.clone(),
    ];
    assert_eq!(left, expect);
    assert_eq!(
        report.snapshots,
        vec![snaps[2].id.clone(), snaps[1].id.clone()]
    );
    assert_eq!(report.objects, 2);
    assert_eq!(count_objects(&store), 3);
    assert_eq!(store.last_good().unwrap().unwrap().id, snaps[0].id);
    assert_eq!(
        store.read_object(&snaps[0].files[0].hash).unwrap(),
        b"# version 0\n"
    );
}

#[test]
fn prune_keeps_snapshots_the_journal_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let mut snaps = Vec::new();
    for i in 0..3 {
        write(&root.join("nginx.conf"), format!("# version {i}\n"), 0o644);
        let files = conf_files(&[root.join("nginx.conf")]);
        snaps.push(
            store
                .snapshot(&root, &files, meta(Outcome::Pending))
                .unwrap(),
        );
    }
    let rec = JournalRecord::new("reload".into(), Some(snaps[0].id.clone()), None);
    store.journal_begin(&rec).unwrap();
    store.prune(1).unwrap();
    let left: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(left, vec![snaps[2].id.clone(), snaps[0].id.clone()]);
}

#[test]
fn journal_survives_reopening_and_records_each_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.journal().unwrap(), None);
    let rec = JournalRecord::new("safe-reload reload".into(), None, Some("good-1".into()));
    store.journal_begin(&rec).unwrap();
    store
        .journal_update(|r| r.candidate = Some("cand-1".into()))
        .unwrap();
    store.journal_phase(Phase::Reloading).unwrap();
    drop(store);

    let store = Store::open(&dir).unwrap();
    let seen = store.journal().unwrap().unwrap();
    assert_eq!(seen.phase, Phase::Reloading);
    assert_eq!(seen.candidate.as_deref(), Some("cand-1"));
    assert_eq!(
        (seen.run_id.as_str(), seen.pid),
        (rec.run_id.as_str(), std::process::id())
    );
    let again = JournalRecord::new("safe-reload reload".into(), None, None);
    let err = store.journal_begin(&again).unwrap_err();
    assert!(err.to_string().contains("safe-reload recover"), "{err}");

    store.journal_phase(Phase::RolledBack).unwrap();
    store.journal_clear().unwrap();
    assert_eq!(Store::open(&dir).unwrap().journal().unwrap(), None);
    assert!(store.journal_phase(Phase::Verifying).is_err());
}

#[test]
fn outcome_and_last_good_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    write(&root.join("nginx.conf"), "events {}\n", 0o644);
    let store = Store::open(&tmp.path().join("state")).unwrap();
    assert!(store.last_good().unwrap().is_none());
    let files = conf_files(&[root.join("nginx.conf")]);
    let snap = store
        .snapshot(&root, &files, meta(Outcome::Pending))
        .unwrap();
    let note = Some("502 from /api".to_string());
    let updated = store
        .set_outcome(&snap.id, Outcome::Rejected, note.clone())
        .unwrap();
    assert_eq!(
        (updated.meta.outcome, updated.meta.note),
        (Outcome::Rejected, note)
    );
    store.set_last_good(&snap).unwrap();
    assert_eq!(
        store.last_good().unwrap().unwrap().meta.outcome,
        Outcome::Rejected
    );
    let saved = store.save_edit("conf.d/app.conf", b"server {}\n").unwrap();
    assert_eq!(fs::read(&saved).unwrap(), b"server {}\n");
    assert!(saved.starts_with(store.root().join("edits")));
}

/// Good runs fill the retention count on a box that reloads on every converge; a rejected
/// edit and the version a restore displaced ("kept as snapshot X") were pruned by them, their
/// bytes with them (r16 x F3). Each kind has a count of its own.
#[test]
fn prune_counts_good_snapshots_apart_from_rejected_and_displaced_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let mut snaps = Vec::new();
    let outcomes = [
        Outcome::Displaced,
        Outcome::Rejected,
        Outcome::Good,
        Outcome::Good,
        Outcome::Good,
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        write(&root.join("nginx.conf"), format!("# version {i}\n"), 0o644);
        let files = conf_files(&[root.join("nginx.conf")]);
        snaps.push(store.snapshot(&root, &files, meta(outcome)).unwrap());
    }
    store.set_last_good(&snaps[4]).unwrap();
    let report = store.prune(2).unwrap();
    assert_eq!(report.snapshots, vec![snaps[2].id.clone()]);
    let left: Vec<String> = store.list().unwrap().into_iter().map(|s| s.id).collect();
    let expect: Vec<String> = [4, 3, 1, 0].iter().map(|&i| snaps[i].id.clone()).collect();
    assert_eq!(left, expect);
    assert_eq!(
        store.read_object(&snaps[0].files[0].hash).unwrap(),
        b"# version 0\n"
    );
}
