//! Restore: byte-identical content, modes and symlinks back; added files removed only once a
//! snapshot holds them (the rejected one, or a displaced one for another writer's file); never
//! a write through a symlink that leads out of the tree.

// A test that needs root says so on stdout when it skips.
#![allow(clippy::print_stdout)]

mod store_util;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use safe_reload::store::{Outcome, Snapshot, Store, TEMP_PREFIX};
use store_util::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    store: Store,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    Fixture {
        _tmp: tmp,
        root,
        outside,
        store,
    }
}

impl Fixture {
    fn snap(&self, rels: &[&str], outcome: Outcome) -> Snapshot {
        let paths: Vec<PathBuf> = rels.iter().map(|r| self.root.join(r)).collect();
        self.store
            .snapshot(&self.root, &conf_files(&paths), meta(outcome))
            .unwrap()
    }
}

#[test]
fn round_trip_restores_content_modes_and_symlinks() {
    let f = fixture();
    write(
        &f.root.join("nginx.conf"),
        "events {}\nhttp { include conf.d/*.conf; }\n",
        0o644,
    );
    write(
        &f.root.join("conf.d/app.conf"),
        "server { listen 127.0.0.1:8080; }\n",
        0o640,
    );
    write(&f.root.join("sites-available/site"), "server {}\n", 0o600);
    fs::create_dir_all(f.root.join("sites-enabled")).unwrap();
    symlink("../sites-available/site", f.root.join("sites-enabled/site")).unwrap();
    let good = f.snap(
        &["nginx.conf", "conf.d/app.conf", "sites-enabled/site"],
        Outcome::Good,
    );

    write(
        &f.root.join("nginx.conf"),
        "events {}\nhttp { broken\n",
        0o644,
    );
    fs::set_permissions(
        f.root.join("conf.d/app.conf"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    fs::remove_file(f.root.join("sites-enabled/site")).unwrap();
    write(
        &f.root.join("sites-enabled/site"),
        "a copy, not a link\n",
        0o644,
    );
    fs::remove_dir_all(f.root.join("sites-available")).unwrap();

    let report = f.store.restore(&good, &f.root, &[], None).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut restored = report.restored.clone();
    restored.sort();
    let expect: Vec<PathBuf> = [
        "conf.d/app.conf",
        "nginx.conf",
        "sites-available/site",
        "sites-enabled/site",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(restored, expect);
    assert_eq!(
        fs::read(f.root.join("nginx.conf")).unwrap(),
        b"events {}\nhttp { include conf.d/*.conf; }\n"
    );
    assert_eq!(mode(&f.root.join("conf.d/app.conf")), 0o640);
    assert_eq!(mode(&f.root.join("sites-available/site")), 0o600);
    assert_eq!(
        fs::read_link(f.root.join("sites-enabled/site")).unwrap(),
        Path::new("../sites-available/site")
    );
    assert_eq!(
        fs::read(f.root.join("sites-enabled/site")).unwrap(),
        b"server {}\n"
    );

    let again = f.store.restore(&good, &f.root, &[], None).unwrap();
    assert!(
        again.restored.is_empty(),
        "only differing files are written: {again:?}"
    );
    assert_eq!(again.unchanged.len(), 4);
}

#[test]
fn an_added_file_is_removed_once_a_snapshot_holds_it_and_another_writers_is_displaced_first() {
    let f = fixture();
    write(
        &f.root.join("nginx.conf"),
        "http { include conf.d/*.conf; }\n",
        0o644,
    );
    let good = f.snap(&["nginx.conf"], Outcome::Good);
    write(
        &f.root.join("conf.d/new.conf"),
        "server { listen 127.0.0.1:81; }\n",
        0o644,
    );
    let rejected = f.snap(&["nginx.conf", "conf.d/new.conf"], Outcome::Rejected);
    write(
        &f.root.join("conf.d/late.conf"),
        "# written after the candidate\n",
        0o644,
    );
    std::fs::create_dir_all(f.root.join("conf.d/dir.conf")).unwrap();
    let current: Vec<PathBuf> = [
        "nginx.conf",
        "conf.d/new.conf",
        "conf.d/late.conf",
        "conf.d/dir.conf",
    ]
    .iter()
    .map(|r| f.root.join(r))
    .collect();

    let report = f
        .store
        .restore(&good, &f.root, &current, Some(&rejected))
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        report.removed,
        vec![
            PathBuf::from("conf.d/new.conf"),
            PathBuf::from("conf.d/late.conf")
        ]
    );
    // Nothing a glob could pick up is left but what has no version to keep.
    assert_eq!(report.kept, vec![PathBuf::from("conf.d/dir.conf")]);
    assert!(!f.root.join("conf.d/new.conf").exists());
    assert!(!f.root.join("conf.d/late.conf").exists());
    let held = rejected.entry(Path::new("conf.d/new.conf")).unwrap();
    assert_eq!(
        f.store.read_object(&held.hash).unwrap(),
        b"server { listen 127.0.0.1:81; }\n"
    );
    // The other writer's file was saved before it was removed, in a snapshot of its own.
    let displaced = report.displaced.expect("a displaced snapshot");
    assert_eq!(displaced.paths, vec![PathBuf::from("conf.d/late.conf")]);
    let saved = f.store.get(&displaced.snapshot).unwrap();
    assert_eq!(saved.meta.outcome, Outcome::Displaced);
    let entry = saved.entry(Path::new("conf.d/late.conf")).unwrap();
    assert_eq!(
        f.store.read_object(&entry.hash).unwrap(),
        b"# written after the candidate\n"
    );

    // With no rejected snapshot, the file is displaced first, never deleted unsaved.
    write(
        &f.root.join("conf.d/new.conf"),
        "server { listen 127.0.0.1:82; }\n",
        0o644,
    );
    let without = f.store.restore(&good, &f.root, &current, None).unwrap();
    assert_eq!(without.removed, vec![PathBuf::from("conf.d/new.conf")]);
    let displaced = without.displaced.expect("a displaced snapshot");
    let saved = f.store.get(&displaced.snapshot).unwrap();
    let entry = saved.entry(Path::new("conf.d/new.conf")).unwrap();
    assert_eq!(
        f.store.read_object(&entry.hash).unwrap(),
        b"server { listen 127.0.0.1:82; }\n"
    );
}

#[test]
fn restore_never_writes_through_a_symlink_leading_out_of_the_tree() {
    let f = fixture();
    write(&f.root.join("nginx.conf"), "events {}\n", 0o644);
    write(&f.root.join("conf.d/app.conf"), "server {}\n", 0o644);
    let good = f.snap(&["nginx.conf", "conf.d/app.conf"], Outcome::Good);

    // A directory swapped for a link to elsewhere, and a file swapped for a link to elsewhere.
    write(&f.outside.join("app.conf"), "not yours\n", 0o644);
    write(&f.outside.join("victim"), "precious\n", 0o644);
    fs::remove_dir_all(f.root.join("conf.d")).unwrap();
    symlink(&f.outside, f.root.join("conf.d")).unwrap();
    fs::remove_file(f.root.join("nginx.conf")).unwrap();
    symlink(f.outside.join("victim"), f.root.join("nginx.conf")).unwrap();

    let report = f.store.restore(&good, &f.root, &[], None).unwrap();
    assert_eq!(
        fs::read(f.outside.join("app.conf")).unwrap(),
        b"not yours\n"
    );
    assert_eq!(fs::read(f.outside.join("victim")).unwrap(), b"precious\n");
    // The snapshot had a directory there: the link gives way to one, and the file is
    // written in it, never through the link.
    assert!(report.is_clean(), "{report:?}");
    assert!(fs::symlink_metadata(f.root.join("conf.d"))
        .unwrap()
        .is_dir());
    assert_eq!(
        fs::read(f.root.join("conf.d/app.conf")).unwrap(),
        b"server {}\n"
    );
    assert!(report.relinked.iter().any(|l| l.to_directory), "{report:?}");
    // The link at nginx.conf itself was replaced by the file, not followed.
    let meta = fs::symlink_metadata(f.root.join("nginx.conf")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(fs::read(f.root.join("nginx.conf")).unwrap(), b"events {}\n");
}

#[test]
fn tampered_snapshot_with_absolute_path_is_refused_before_any_write() {
    let f = fixture();
    write(&f.root.join("nginx.conf"), "events {}\n", 0o644);
    let mut snap = f.snap(&["nginx.conf"], Outcome::Good);
    let target = f.outside.join("owned");
    snap.files[0].path = target.clone();
    let err = f.store.restore(&snap, &f.root, &[], None).unwrap_err();
    assert!(err.to_string().contains("is an absolute path"), "{err}");
    assert!(!target.exists());
}

#[test]
fn external_files_are_compared_never_written_and_temp_files_are_swept() {
    let f = fixture();
    write(&f.root.join("nginx.conf"), "events {}\n", 0o644);
    let shared = f.outside.join("shared.conf");
    write(&shared, "upstream u { server 127.0.0.1:9; }\n", 0o644);
    let paths = [f.root.join("nginx.conf"), shared.clone()];
    let good = f
        .store
        .snapshot(&f.root, &conf_files(&paths), meta(Outcome::Good))
        .unwrap();
    write(&shared, "upstream u { server 127.0.0.1:10; }\n", 0o644);
    let stale = f.root.join(format!("{TEMP_PREFIX}left-by-a-killed-run"));
    fs::write(&stale, "partial").unwrap();

    let report = f.store.restore(&good, &f.root, &[], None).unwrap();
    assert_eq!(report.external_differs, vec![shared.clone()]);
    assert_eq!(
        fs::read(&shared).unwrap(),
        b"upstream u { server 127.0.0.1:10; }\n"
    );
    assert_eq!(report.swept, vec![stale.clone()]);
    assert!(!stale.exists());
    assert!(report.is_clean());
}

#[test]
fn owner_is_restored_when_root() {
    if !safe_reload::store::is_root() {
        println!("skipped: restoring a file's owner needs root");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let f = fixture();
    write(&f.root.join("nginx.conf"), "events {}\n", 0o640);
    let good = f.snap(&["nginx.conf"], Outcome::Good);
    std::os::unix::fs::chown(f.root.join("nginx.conf"), Some(65534), Some(65534)).unwrap();
    let report = f.store.restore(&good, &f.root, &[], None).unwrap();
    assert_eq!(
        report.restored,
        vec![PathBuf::from("nginx.conf")],
        "{report:?}"
    );
    let meta = fs::metadata(f.root.join("nginx.conf")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (good.files[0].uid, good.files[0].gid)
    );
    assert_eq!(meta.mode() & 0o7777, 0o640);
}

#[test]
fn a_version_neither_snapshot_holds_is_saved_before_the_restore_replaces_it() {
    let f = fixture();
    write(&f.root.join("nginx.conf"), "events {}\n# good\n", 0o644);
    let good = f.snap(&["nginx.conf"], Outcome::Good);
    write(
        &f.root.join("nginx.conf"),
        "events {}\n# candidate\n",
        0o644,
    );
    let rejected = f.snap(&["nginx.conf"], Outcome::Rejected);

    // The candidate's own content is overwritten without a copy: the rejected snapshot has it.
    let report = f
        .store
        .restore(
            &good,
            &f.root,
            &[f.root.join("nginx.conf")],
            Some(&rejected),
        )
        .unwrap();
    assert!(report.displaced.is_none(), "{report:?}");

    // Another writer's version is saved first, in a snapshot of its own.
    write(&f.root.join("nginx.conf"), "events {}\n# third\n", 0o644);
    let report = f
        .store
        .restore(
            &good,
            &f.root,
            &[f.root.join("nginx.conf")],
            Some(&rejected),
        )
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    let displaced = report.displaced.expect("the third version is saved");
    assert_eq!(displaced.paths, vec![PathBuf::from("nginx.conf")]);
    let saved = f.store.get(&displaced.snapshot).unwrap();
    assert_eq!(saved.meta.outcome, Outcome::Displaced);
    let entry = saved.entry(Path::new("nginx.conf")).unwrap();
    assert_eq!(
        f.store.read_object(&entry.hash).unwrap(),
        b"events {}\n# third\n"
    );
    assert_eq!(
        fs::read(f.root.join("nginx.conf")).unwrap(),
        b"events {}\n# good\n"
    );
    assert!(displaced.describe().contains(&displaced.snapshot));
}

#[test]
fn an_added_file_with_another_writers_content_is_saved_before_it_is_removed() {
    let f = fixture();
    write(
        &f.root.join("nginx.conf"),
        "include conf.d/*.conf;\n",
        0o644,
    );
    let good = f.snap(&["nginx.conf"], Outcome::Good);
    write(&f.root.join("conf.d/new.conf"), "# candidate\n", 0o644);
    let rejected = f.snap(&["nginx.conf", "conf.d/new.conf"], Outcome::Rejected);
    write(
        &f.root.join("conf.d/new.conf"),
        "# rewritten since\n",
        0o644,
    );
    let current = [f.root.join("nginx.conf"), f.root.join("conf.d/new.conf")];
    let report = f
        .store
        .restore(&good, &f.root, &current, Some(&rejected))
        .unwrap();
    assert_eq!(report.removed, vec![PathBuf::from("conf.d/new.conf")]);
    let displaced = report.displaced.expect("saved before removal");
    let saved = f.store.get(&displaced.snapshot).unwrap();
    let entry = saved.entry(Path::new("conf.d/new.conf")).unwrap();
    assert_eq!(
        f.store.read_object(&entry.hash).unwrap(),
        b"# rewritten since\n"
    );
}

#[test]
fn an_outside_file_is_restored_only_while_the_configuration_names_it() {
    let f = fixture();
    write(
        &f.root.join("nginx.conf"),
        "include /srv/app/*.conf;\n",
        0o644,
    );
    let shared = f.outside.join("app.conf");
    write(&shared, "server { listen 127.0.0.1:1; }\n", 0o640);
    let paths = [f.root.join("nginx.conf"), shared.clone()];
    let good = f
        .store
        .snapshot(&f.root, &conf_files(&paths), meta(Outcome::Good))
        .unwrap();
    write(&shared, "server { listen 127.0.0.1:2; }\n", 0o640);

    // Not named by the configuration read now: compared, not written.
    let report = f.store.restore(&good, &f.root, &paths[..1], None).unwrap();
    assert_eq!(report.external_differs, vec![shared.clone()]);
    assert_eq!(
        fs::read(&shared).unwrap(),
        b"server { listen 127.0.0.1:2; }\n"
    );

    // Named: restored and verified like a file inside the root.
    let report = f.store.restore(&good, &f.root, &paths, None).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.restored, vec![shared.clone()]);
    assert_eq!(
        fs::read(&shared).unwrap(),
        b"server { listen 127.0.0.1:1; }\n"
    );
    assert_eq!(mode(&shared), 0o640);

    // A tampered entry naming another file outside the set is never written.
    let victim = f.outside.join("victim");
    write(&victim, "precious\n", 0o644);
    let mut tampered = good.clone();
    tampered.external[0].path = victim.clone();
    let report = f.store.restore(&tampered, &f.root, &paths, None).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious\n");
    assert_eq!(report.external_differs, vec![victim]);

    // And one with `..` is refused before anything is written.
    let mut dotted = good.clone();
    dotted.external[0].path = f.outside.join("../escape");
    let err = f.store.restore(&dotted, &f.root, &paths, None).unwrap_err();
    assert!(err.to_string().contains("contains '..'"), "{err}");
}
