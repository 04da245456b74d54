//! What each fuzz target does with one input, shared by the fuzz targets and by
//! `tests/fuzz_regressions.rs`, which replays the kept corpus through the same code.
//! Every function must return normally for any input: errors are fine, panics are bugs.

use std::path::Path;
use std::sync::Arc;

use safe_reload::conf::{self, tree, ConfFile, LoadOptions};

/// The tokenizer and tree builder on arbitrary bytes, and the untrusted-mode rewrite of the
/// same file (it re-parses it and edits lines by number).
pub fn conf_tree(data: &[u8]) {
    let name: Arc<Path> = Arc::from(Path::new("/fuzz/nginx.conf"));
    if tree::parse(&name, data).is_ok() {
        let file = ConfFile {
            path: name.to_path_buf(),
            bytes: Arc::from(data),
            via: None,
        };
        let _ = safe_reload::sandbox::neutralise(&file);
    }
}

/// Names the loader's small generated tree uses: includes in the inputs can reach each other
/// by these names, by globs over them, and in cycles.
const NAMES: [&str; 4] = ["nginx.conf", "a.conf", "sub/b.conf", "sub/c.conf"];

/// The include resolver on a small tree written from the input: the bytes are split at 0xFF
/// into up to four files, then loaded (confined to the tree, as untrusted mode does) and the
/// targets and servers extracted.
pub fn conf_load(dir: &Path, data: &[u8]) {
    let _ = std::fs::create_dir_all(dir.join("sub"));
    let mut parts = data.splitn(NAMES.len(), |b| *b == 0xFF);
    for name in NAMES {
        let _ = std::fs::write(dir.join(name), parts.next().unwrap_or_default());
    }
    let opts = LoadOptions {
        confine: Some(dir.to_path_buf()),
        max_files: 64,
        max_include_depth: 8,
        ..LoadOptions::default()
    };
    if let Ok(config) = conf::load(&dir.join("nginx.conf"), &opts) {
        let _ = conf::targets::extract(&config);
        let _ = conf::servers::extract(&config);
        let _ = conf::untrusted::violations(&config, None);
    }
}

/// The parser of nginx's stderr on arbitrary text.
pub fn errorlog(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for m in safe_reload::errorlog::parse_messages(&text) {
        let _ = m.level.as_str();
    }
}
