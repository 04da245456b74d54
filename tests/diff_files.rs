//! Diffs between a snapshot and a candidate file set: exact unified text, counts and summary.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;

mod store_util;

use safe_reload::diff::{diff, Change, ConfigDiff, FileSet};
use safe_reload::store::{Outcome, Store};
use store_util::{conf_files_in as conf_files, meta, write};

/// Each changed path with its kind, in the diff's order.
fn kinds(d: &ConfigDiff) -> Vec<(&str, Change)> {
    d.files
        .iter()
        .map(|f| (f.path.as_str(), f.change))
        .collect()
}

const MAIN_OLD: &str = "worker_processes 1;\nevents {}\nhttp {\n    include conf.d/*.conf;\n    sendfile on;\n    tcp_nopush on;\n    types_hash_max_size 2048;\n    keepalive_timeout 65;\n    server_tokens off;\n    gzip on;\n}\n";
const MAIN_NEW: &str = "worker_processes 2;\nevents {}\nhttp {\n    include conf.d/*.conf;\n    sendfile on;\n    tcp_nopush on;\n    types_hash_max_size 2048;\n    keepalive_timeout 65;\n    server_tokens off;\n    gzip off;\n}\n";

#[test]
fn snapshot_against_candidate_lists_each_change_with_exact_unified_text() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    write(&root.join("nginx.conf"), MAIN_OLD.as_bytes(), 0o644);
    write(
        &root.join("conf.d/old.conf"),
        b"server { listen 127.0.0.1:8001; }\n",
        0o644,
    );
    write(
        &root.join("conf.d/keys.conf"),
        b"ssl_ciphers HIGH;\n",
        0o644,
    );
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let rels = ["nginx.conf", "conf.d/old.conf", "conf.d/keys.conf"];
    let snap = store
        .snapshot(&root, &conf_files(&root, &rels), meta(Outcome::Good))
        .unwrap();

    write(&root.join("nginx.conf"), MAIN_NEW.as_bytes(), 0o644);
    fs::remove_file(root.join("conf.d/old.conf")).unwrap();
    write(
        &root.join("conf.d/new.conf"),
        b"server {\n    listen 127.0.0.1:8002;\n}\n",
        0o644,
    );
    fs::set_permissions(
        root.join("conf.d/keys.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let rels = ["nginx.conf", "conf.d/new.conf", "conf.d/keys.conf"];
    let old = FileSet::from_snapshot(&store, &snap).unwrap();
    let new = FileSet::from_candidate(&root, &conf_files(&root, &rels)).unwrap();
    let d = diff(&old, &new);

    assert_eq!(
        kinds(&d),
        vec![
            ("conf.d/keys.conf", Change::ModeChanged),
            ("conf.d/new.conf", Change::Added),
            ("conf.d/old.conf", Change::Removed),
            ("nginx.conf", Change::Modified),
        ]
    );
    assert_eq!(d.files[0].mode, Some((0o644, 0o600)));
    assert_eq!(d.files[0].unified, None);
    assert_eq!(
        d.files[1].unified.as_deref(),
        Some("--- a/conf.d/new.conf\n+++ b/conf.d/new.conf\n@@ -0,0 +1,3 @@\n+server {\n+    listen 127.0.0.1:8002;\n+}\n")
    );
    assert_eq!(
        d.files[2].unified.as_deref(),
        Some("--- a/conf.d/old.conf\n+++ b/conf.d/old.conf\n@@ -1 +0,0 @@\n-server { listen 127.0.0.1:8001; }\n")
    );
    assert_eq!(
        d.files[3].unified.as_deref(),
        Some(concat!(
            "--- a/nginx.conf\n+++ b/nginx.conf\n",
            "@@ -1,4 +1,4 @@\n-worker_processes 1;\n+worker_processes 2;\n events {}\n http {\n     include conf.d/*.conf;\n",
            "@@ -7,5 +7,5 @@\n     types_hash_max_size 2048;\n     keepalive_timeout 65;\n     server_tokens off;\n-    gzip on;\n+    gzip off;\n }\n",
        ))
    );
    assert_eq!((d.files[3].added, d.files[3].removed), (2, 2));
    assert_eq!(d.summary(), "4 files changed, 1 added, 1 removed: +5 -3");
}

#[test]
fn unchanged_tree_with_symlinks_diffs_empty_and_link_changes_are_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    write(&root.join("nginx.conf"), b"events {}\n", 0o644);
    write(&root.join("sites-available/a"), b"server {}\n", 0o644);
    write(&root.join("sites-available/b"), b"server {}\n", 0o644);
    fs::create_dir_all(root.join("sites-enabled")).unwrap();
    symlink("../sites-available/a", root.join("sites-enabled/site")).unwrap();
    let rels = ["nginx.conf", "sites-enabled/site"];
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let snap = store
        .snapshot(&root, &conf_files(&root, &rels), meta(Outcome::Good))
        .unwrap();
    let old = FileSet::from_snapshot(&store, &snap).unwrap();

    let same = FileSet::from_candidate(&root, &conf_files(&root, &rels)).unwrap();
    let d = diff(&old, &same);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(d.summary(), "no changes");

    fs::remove_file(root.join("sites-enabled/site")).unwrap();
    symlink("../sites-available/b", root.join("sites-enabled/site")).unwrap();
    let relinked = FileSet::from_candidate(&root, &conf_files(&root, &rels)).unwrap();
    let d = diff(&old, &relinked);
    // The link now brings b along and no longer a.
    assert_eq!(
        kinds(&d),
        vec![
            ("sites-available/a", Change::Removed),
            ("sites-available/b", Change::Added),
            ("sites-enabled/site", Change::LinkChanged),
        ]
    );
    let link = &d.files[2].link;
    let expect = (
        Some(PathBuf::from("../sites-available/a")),
        Some(PathBuf::from("../sites-available/b")),
    );
    assert_eq!(link.as_ref(), Some(&expect));
}

#[test]
fn binary_content_is_reported_not_diffed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    write(&root.join("nginx.conf"), b"events {}\n", 0o644);
    let old = FileSet::from_candidate(&root, &conf_files(&root, &["nginx.conf"])).unwrap();
    write(&root.join("nginx.conf"), b"events {}\n\0\xff junk\n", 0o644);
    let new = FileSet::from_candidate(&root, &conf_files(&root, &["nginx.conf"])).unwrap();
    let d = diff(&old, &new);
    assert_eq!(d.files.len(), 1);
    assert_eq!(d.files[0].change, Change::Modified);
    assert_eq!(d.files[0].unified.as_deref(), Some("binary files differ"));
    assert_eq!(d.summary(), "1 file changed: +0 -0");
}

/// `rm sites-enabled/b` disables a site: the change is the link's, and `sites-available/b`
/// (still on disk) is no longer included, not a deleted file shown a second time.
#[test]
fn a_removed_link_is_one_change_and_its_target_is_no_longer_included() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("nginx");
    write(&root.join("nginx.conf"), b"events {}\n", 0o644);
    write(&root.join("sites-available/a"), b"server { a; }\n", 0o644);
    write(&root.join("sites-available/b"), b"server { b; }\n", 0o644);
    fs::create_dir_all(root.join("sites-enabled")).unwrap();
    symlink("../sites-available/a", root.join("sites-enabled/a")).unwrap();
    symlink("../sites-available/b", root.join("sites-enabled/b")).unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let rels = ["nginx.conf", "sites-enabled/a", "sites-enabled/b"];
    let snap = store
        .snapshot(&root, &conf_files(&root, &rels), meta(Outcome::Good))
        .unwrap();
    let old = FileSet::from_snapshot(&store, &snap).unwrap();

    fs::remove_file(root.join("sites-enabled/b")).unwrap();
    let rels = ["nginx.conf", "sites-enabled/a"];
    let new = FileSet::from_candidate(&root, &conf_files(&root, &rels)).unwrap();
    let d = diff(&old, &new);
    assert_eq!(
        kinds(&d),
        vec![
            ("sites-available/b", Change::Removed),
            ("sites-enabled/b", Change::Removed),
        ]
    );
    assert_eq!(d.files[0].unlinked, ["sites-enabled/b"]);
    assert!(d.files[1].unlinked.is_empty());
    assert_eq!(
        d.summary(),
        "1 file changed, 1 removed, 1 no longer included: +0 -1"
    );

    // A plain file removed with nothing linking to it is still a removal of its own.
    fs::remove_file(root.join("sites-available/a")).unwrap();
    fs::remove_file(root.join("sites-enabled/a")).unwrap();
    write(&root.join("sites-enabled/a"), b"server { a; }\n", 0o644);
    let rels = ["nginx.conf", "sites-enabled/a"];
    let new = FileSet::from_candidate(&root, &conf_files(&root, &rels)).unwrap();
    let d = diff(&old, &new);
    let a = d
        .files
        .iter()
        .find(|f| f.path == "sites-available/a")
        .unwrap();
    assert_eq!(a.change, Change::Removed);
    assert!(a.unlinked.is_empty(), "{d:?}");
}
