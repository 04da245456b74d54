//! Replays every kept fuzz input (`tests/fuzz-corpus/TARGET/*`: crashes the fuzzers found,
//! fixed since, and hand-written seeds) through the same code the fuzz targets run
//! (`fuzz/common.rs`), plus a few inputs written here. Passing means none of them panics.
//! `scripts/fuzz.sh` runs the fuzzers and adds new crashes to the corpus.

#[path = "../fuzz/common.rs"]
mod common;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Inputs written by hand for the edges each target should survive.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"{{{{".to_vec(),
        b"}}}}".to_vec(),
        b"\"unterminated".to_vec(),
        b"a ${b".to_vec(),
        b"x '\\".to_vec(),
        b"include nginx.conf;".to_vec(),
        b"http { include sub/*.conf; }\xffserver { listen 80; }\xffinclude ../nginx.conf;".to_vec(),
        b"include a.conf;\xffinclude sub/b.conf;\xffinclude ../a.conf;".to_vec(),
        b"pid /x;\nhttp # {\n{\n  access_log /y;\n}\n".to_vec(),
        b"content_by_lua_block { if a then b end }".to_vec(),
        vec![0xff; 64],
        b"nginx: [emerg] unknown directive \"x\" in /a.conf:".to_vec(),
        b"2024/01/01 00:00:00 [emerg] 1#1: x in :99999999999999999999".to_vec(),
        b"[crit] in \xe2\x80 /a:1\n[alert]".to_vec(),
    ]
}

fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
    let files = corpus(target);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        run(&bytes);
    }
    for s in seeds() {
        run(&s);
    }
    files.len()
}

#[test]
fn conf_tree_corpus_does_not_panic() {
    replay("conf_tree", common::conf_tree);
}

#[test]
fn conf_load_corpus_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    replay("conf_load", |b| common::conf_load(dir.path(), b));
}

#[test]
fn errorlog_corpus_does_not_panic() {
    replay("errorlog", common::errorlog);
}
