//! Helpers shared by the configuration-model tests: a throwaway config tree on disk and line
//! lookup by text, so assertions name file:line without counting lines by hand.

#![allow(dead_code, clippy::print_stderr)]

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

/// The shared corpus of real configurations: `$SAFE_RELOAD_CORPUS`, else `../shared/corpus`
/// beside the crate (or two levels up, for a git worktree). `None`, after saying so loudly, when
/// it is absent: the corpus is not part of the crate.
pub fn corpus_dir() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tried: Vec<PathBuf> = match std::env::var_os("SAFE_RELOAD_CORPUS") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            manifest.join("../shared/corpus"),
            manifest.join("../../shared/corpus"),
        ],
    };
    if let Some(found) = tried.iter().find(|p| p.is_dir()) {
        // Without the `..`: the loader names files as nginx opens them, so file names in
        // errors and reports compare equal to paths built from this one.
        return Some(fs_err::canonicalize(found).unwrap_or_else(|_| found.clone()));
    }
    eprintln!("==============================================================");
    eprintln!("CORPUS ABSENT: tried {tried:?}");
    eprintln!("set SAFE_RELOAD_CORPUS to the corpus folder; corpus checks NOT RUN");
    eprintln!("==============================================================");
    None
}

/// Every regular file under `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).expect("stat");
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("dir entry").path());
            }
        } else if meta.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The nginx binary tests run, with a clear failure when it is missing.
pub fn nginx_bin() -> PathBuf {
    let p = PathBuf::from(
        std::env::var_os("SAFE_RELOAD_NGINX").unwrap_or_else(|| "/usr/sbin/nginx".into()),
    );
    assert!(
        p.is_file(),
        "nginx is not installed at {} (scripts/test.sh installs it: apt-get install nginx libnginx-mod-stream)",
        p.display()
    );
    p
}

/// Run `nginx -t` (or `-T` with `dump`) on `conf` with prefix `prefix`; pid and error log go
/// into the prefix through `-g` so nothing outside it is written. Returns (success, stderr+stdout).
pub fn nginx_test(conf: &Path, prefix: &Path, dump: bool) -> (bool, String, String) {
    let globals = format!(
        "pid {}/nginx.pid; error_log {}/error.log;",
        prefix.display(),
        prefix.display()
    );
    nginx_run(conf, prefix, dump, Some(&globals))
}

/// As [`nginx_test`], with `-g` only when given (a config that sets its own pid).
pub fn nginx_run(
    conf: &Path,
    prefix: &Path,
    dump: bool,
    globals: Option<&str>,
) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(nginx_bin());
    cmd.arg(if dump { "-T" } else { "-t" })
        .arg("-q")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(conf);
    if let Some(g) = globals {
        cmd.arg("-g").arg(g);
    }
    let out = cmd.output().expect("run nginx");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `file:line` of nginx's first `[emerg]` line.
pub fn emerg_location(stderr: &str) -> Option<(PathBuf, u32)> {
    let line = stderr.lines().find(|l| l.contains("[emerg]"))?;
    let tail = line.rsplit_once(" in ")?.1;
    let (file, num) = tail.rsplit_once(':')?;
    Some((PathBuf::from(file), num.trim().parse().ok()?))
}
