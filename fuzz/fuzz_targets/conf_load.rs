#![no_main]

use std::sync::OnceLock;

#[path = "../common.rs"]
mod common;

/// One tree directory for the whole run, rewritten by each input.
fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir")).path()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::conf_load(dir(), data));
