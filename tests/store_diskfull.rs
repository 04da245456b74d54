//! A full disk: a snapshot or restore that cannot write says which path failed and leaves no
//! half-written or temp file behind. Uses a real 64 KiB tmpfs, which needs root.

// A test that needs root says so on stdout when it skips.
#![allow(clippy::print_stdout)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use safe_reload::conf::ConfFile;
use safe_reload::store::{is_root, Outcome, SnapshotMeta, Store, TEMP_PREFIX};

/// A small tmpfs, unmounted when the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        outcome: Outcome::Pending,
        user: "tester".into(),
        command: "safe-reload test".into(),
        note: None,
        changed_files: Vec::new(),
    }
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        })
        .collect()
}

/// Config bytes larger than the whole tmpfs.
fn big_config() -> Vec<u8> {
    "# filler line for a config larger than the file system\n"
        .repeat(4000)
        .into_bytes()
}

#[test]
fn snapshot_on_a_full_disk_names_the_path_and_leaves_no_temp_files() {
    if !is_root() {
        println!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fs_dir = tmp.path().join("small");
    let _mount = Tmpfs::mount(&fs_dir);
    let store = Store::open(&fs_dir.join("state")).unwrap();
    let root = tmp.path().join("nginx");
    fs::create_dir_all(&root).unwrap();
    let files = [ConfFile {
        path: root.join("nginx.conf"),
        bytes: big_config().into(),
        via: None,
    }];
    fs::write(&files[0].path, &files[0].bytes).unwrap();

    let err = store.snapshot(&root, &files, meta()).unwrap_err();
    let text = err.to_string();
    let object = store.object_path(&blake3::hash(&files[0].bytes).to_hex());
    assert!(text.contains(&object.display().to_string()), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert_eq!(temp_files(&fs_dir), Vec::<PathBuf>::new());
    assert!(!object.exists());
    assert!(
        store.list().unwrap().is_empty(),
        "no manifest without its objects"
    );
}

#[test]
fn restore_on_a_full_disk_reports_the_path_and_keeps_the_old_file_whole() {
    if !is_root() {
        println!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let source = tmp.path().join("source");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("nginx.conf"), big_config()).unwrap();
    let files = [ConfFile {
        path: source.join("nginx.conf"),
        bytes: big_config().into(),
        via: None,
    }];
    let snap = store.snapshot(&source, &files, meta()).unwrap();

    let root = tmp.path().join("small");
    let _mount = Tmpfs::mount(&root);
    fs::write(root.join("nginx.conf"), "events {}\n").unwrap();
    let report = store.restore(&snap, &root, &[], None).unwrap();

    assert!(!report.is_clean());
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].path, Path::new("nginx.conf"));
    let reason = &report.failed[0].reason;
    assert!(
        reason.contains(&root.join("nginx.conf").display().to_string()),
        "{reason}"
    );
    assert!(reason.contains("No space left on device"), "{reason}");
    assert_eq!(fs::read(root.join("nginx.conf")).unwrap(), b"events {}\n");
    assert_eq!(temp_files(&root), Vec::<PathBuf>::new());
    assert_eq!(
        report.mismatches.len(),
        1,
        "verification sees the file was not restored"
    );
}
