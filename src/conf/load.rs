//! Reading a configuration the way nginx does: the main file, then every `include` in place.
//!
//! Relative include paths resolve against the main file's directory (nginx's conf prefix). A
//! path with `*`, `?` or `[` is a `glob(3)` pattern: matches are sorted, `*` does not match a
//! leading dot, no match is fine. A literal path must exist. A file included from several places
//! is spliced into each (read from disk once, parsed at each include). A cycle is an error, not an endless loop.
//! Limits on file size, file count and nesting keep hostile input bounded.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::conf::tree::{self, Directive};
use crate::conf::{ConfFile, Config};
use crate::error::{Error, Result};

/// Bounds and test hooks for loading.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Absolute include paths starting with `.0` are read from `.1` instead (for trees copied
    /// away from `/etc/nginx`, such as test fixtures). Empty in production.
    pub remap: Vec<(PathBuf, PathBuf)>,
    /// A file larger than this is refused.
    pub max_file_size: u64,
    /// More files than this in one configuration are refused.
    pub max_files: usize,
    /// Includes nested deeper than this are refused.
    pub max_include_depth: usize,
    /// For configuration from an untrusted source: an include (or a symlink it follows) that
    /// leads outside this directory is refused before anything outside is read.
    pub confine: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            remap: Vec::new(),
            max_file_size: 32 * 1024 * 1024,
            max_files: 20_000,
            max_include_depth: 32,
            confine: None,
        }
    }
}

/// Where the files of a configuration come from: the disk, or a recorded snapshot (the
/// last-good tree is parsed from the store's objects, never from files that may have changed).
pub trait Source: Sync {
    /// The bytes of one file, at most `max` of them; the error is a plain reason.
    fn read(&self, path: &Path, max: u64) -> std::result::Result<Arc<[u8]>, String>;
    /// The files an include pattern matches, sorted as `glob(3)` sorts them.
    fn glob(&self, pattern: &Path) -> std::result::Result<Vec<PathBuf>, String>;
}

/// The files as they are on disk now.
pub struct Disk;

/// `*` and `?` do not match a leading dot, nor a `/`: `glob(3)` as nginx calls it.
pub const GLOB_OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

impl Source for Disk {
    fn read(&self, path: &Path, max: u64) -> std::result::Result<Arc<[u8]>, String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if meta.is_dir() {
            return Err("it is a directory".into());
        }
        if meta.len() > max {
            return Err(format!(
                "it is {} bytes, more than the {max} byte limit for a configuration file",
                meta.len(),
            ));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() as u64 > max {
            return Err(format!(
                "it is more than the {max} byte limit for a configuration file"
            ));
        }
        Ok(bytes.into())
    }

    fn glob(&self, pattern: &Path) -> std::result::Result<Vec<PathBuf>, String> {
        glob_sorted(pattern)
    }
}

/// Load the configuration whose main file is `main`.
pub fn load(main: &Path, opts: &LoadOptions) -> Result<Config> {
    let main = absolute(main)?;
    let meta = std::fs::metadata(&main).map_err(|e| Error::MainConfig {
        path: main.clone(),
        reason: e.to_string(),
    })?;
    if meta.is_dir() {
        return Err(Error::MainConfig {
            path: main,
            reason: "it is a directory; -c/--conf takes the main configuration file".into(),
        });
    }
    load_from(&main, opts, &Disk)
}

/// Load a configuration whose files come from `source`; `main` is absolute. A `..` in it is
/// spelled out as in an include (`-c /etc/nginx/../nginx/nginx.conf` is `/etc/nginx/nginx.conf`),
/// so its includes, and its servers, are the same files whichever way it was named.
pub fn load_from(main: &Path, opts: &LoadOptions, source: &dyn Source) -> Result<Config> {
    let main = as_opened(main);
    let conf_prefix = main
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut loader = Loader {
        opts,
        source,
        conf_prefix: conf_prefix.clone(),
        files: Vec::new(),
        index: HashMap::new(),
        stack: Vec::new(),
        tables: 0,
    };
    let bytes = loader.read(&main).map_err(|reason| Error::MainConfig {
        path: main.clone(),
        reason,
    })?;
    let tree = loader.expand_file(&main, bytes)?;
    Ok(Config {
        main,
        conf_prefix,
        files: loader.files,
        tree,
    })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()?.join(p))
}

struct Loader<'a> {
    opts: &'a LoadOptions,
    source: &'a dyn Source,
    conf_prefix: PathBuf,
    files: Vec<ConfFile>,
    /// Index into `files` by path.
    index: HashMap<PathBuf, usize>,
    /// Files being expanded, outermost first, for cycle detection.
    stack: Vec<PathBuf>,
    /// How many table blocks (`map`, `geo`, `types`, ...) enclose what is being spliced: a
    /// file included there holds entries, not directives.
    tables: usize,
}

/// Blocks whose lines are entries of a table, not directives: a byte-order mark at the top
/// of a file included there is part of the first entry's key, which nginx takes as it is.
const TABLE_BLOCKS: &[&str] = &["map", "geo", "types", "split_clients", "charset_map"];

impl Loader<'_> {
    /// Read a file once, recording it in the file set. The error is a plain reason; the caller
    /// knows whether it is the main file or an include.
    fn read(&mut self, path: &Path) -> std::result::Result<Arc<[u8]>, String> {
        if let Some(&i) = self.index.get(path) {
            return Ok(self.files[i].bytes.clone());
        }
        if self.files.len() >= self.opts.max_files {
            return Err(format!(
                "more than {} files in one configuration",
                self.opts.max_files
            ));
        }
        let bytes = self.source.read(path, self.opts.max_file_size)?;
        self.index.insert(path.to_path_buf(), self.files.len());
        self.files.push(ConfFile {
            path: path.to_path_buf(),
            bytes: bytes.clone(),
            via: None,
        });
        Ok(bytes)
    }

    /// Parse a file (once) and splice its includes.
    fn expand_file(&mut self, path: &Path, bytes: Arc<[u8]>) -> Result<Vec<Directive>> {
        if let Some(nul) = bytes.iter().position(|&b| b == 0) {
            let line = 1 + bytes[..nul].iter().filter(|&&b| b == b'\n').count() as u32;
            return Err(Error::config(
                path,
                line,
                "binary data (a NUL byte): this is not an nginx configuration file",
            ));
        }
        if bytes.starts_with(BOM) && self.tables == 0 {
            return Err(Error::config(path, 1, bom_message(path)));
        }
        // A file included again is parsed again from its cached bytes: cheaper than keeping a
        // copy of every parsed tree for the rare file that is included twice.
        let file: Arc<Path> = Arc::from(path);
        let dirs = tree::parse(&file, &bytes)?;
        self.stack.push(path.to_path_buf());
        let out = self.splice(dirs);
        self.stack.pop();
        out
    }

    /// Replace each `include` by what it names, at any depth. A list without an `include`
    /// keeps its allocation: only the blocks that include something are rebuilt.
    fn splice(&mut self, mut dirs: Vec<Directive>) -> Result<Vec<Directive>> {
        if !dirs.iter().any(is_include) {
            for d in &mut dirs {
                self.splice_block(d)?;
            }
            return Ok(dirs);
        }
        let mut out = Vec::with_capacity(dirs.len());
        for mut d in dirs {
            if is_include(&d) {
                out.extend(self.include(&d)?);
                continue;
            }
            self.splice_block(&mut d)?;
            out.push(d);
        }
        Ok(out)
    }

    fn splice_block(&mut self, d: &mut Directive) -> Result<()> {
        if d.name.ends_with("_by_lua_block") {
            return Ok(());
        }
        if let Some(children) = d.block.as_mut() {
            let table = TABLE_BLOCKS.contains(&d.name.as_str());
            self.tables += usize::from(table);
            let taken = std::mem::take(children).into_vec();
            let spliced = self.splice(taken);
            self.tables -= usize::from(table);
            *children = spliced?.into_boxed_slice();
        }
        Ok(())
    }

    fn include(&mut self, d: &Directive) -> Result<Vec<Directive>> {
        if d.args.len() != 1 {
            return Err(Error::config(
                d.file.to_path_buf(),
                d.line,
                "invalid number of arguments in \"include\" directive",
            ));
        }
        if self.stack.len() > self.opts.max_include_depth {
            return Err(Error::config(
                d.file.to_path_buf(),
                d.line,
                format!(
                    "includes nested deeper than {} levels",
                    self.opts.max_include_depth
                ),
            ));
        }
        let pattern = self.resolve(&d.args[0]);
        self.check_confined(d, &pattern)?;
        let paths = if d.args[0].contains(['*', '?', '[']) {
            (self.source.glob(&pattern))
                .map_err(|m| Error::config(d.file.to_path_buf(), d.line, m))?
        } else {
            vec![pattern]
        };
        let mut out = Vec::new();
        for path in paths {
            self.check_confined(d, &path)?;
            if let Some(pos) = self.stack.iter().position(|p| *p == path) {
                let chain: Vec<String> = self.stack[pos..]
                    .iter()
                    .chain(std::iter::once(&path))
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(Error::config(
                    d.file.to_path_buf(),
                    d.line,
                    format!("include cycle: {}", chain.join(" -> ")),
                ));
            }
            let bytes = self.read(&path).map_err(|reason| {
                // A link made before its file (`sites-enabled/new -> ../sites-available/new`).
                let dangling = match std::fs::read_link(&path) {
                    Ok(to) if !path.exists() => {
                        format!(" (a symlink to {}, which does not exist)", to.display())
                    }
                    _ => String::new(),
                };
                Error::config(
                    d.file.to_path_buf(),
                    d.line,
                    format!("cannot include \"{}\": {reason}{dangling}", path.display()),
                )
            })?;
            if let Some(written) = self.through_link(&d.args[0], &path) {
                let i = self.index[&path];
                self.files[i].via.get_or_insert(written);
            }
            out.extend(self.expand_file(&path, bytes)?);
        }
        Ok(out)
    }

    /// With `confine`, refuse a path (or what its symlinks lead to) outside the directory.
    fn check_confined(&self, d: &Directive, path: &Path) -> Result<()> {
        let Some(root) = &self.opts.confine else {
            return Ok(());
        };
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
        let lexical_ok = normalize(path).starts_with(&root);
        let real_ok = match std::fs::canonicalize(path) {
            Ok(real) => real.starts_with(&root),
            Err(_) => true,
        };
        if lexical_ok && real_ok {
            return Ok(());
        }
        Err(Error::config(
            d.file.to_path_buf(),
            d.line,
            format!(
                "include \"{}\" leads outside {}: refused for untrusted configuration",
                path.display(),
                root.display()
            ),
        ))
    }

    /// The include's path as written (absolute), when a `..` in it follows a symlink, so that
    /// the file it opens (`opened`) is not the one the same path spelled lexically names.
    fn through_link(&self, arg: &str, opened: &Path) -> Option<PathBuf> {
        let p = Path::new(arg);
        let has_dotdot = p.components().any(|c| c == std::path::Component::ParentDir);
        if !has_dotdot || arg.contains(['*', '?', '[']) || !self.opts.remap.is_empty() {
            return None;
        }
        let written = match p.is_absolute() {
            true => p.to_path_buf(),
            false => self.conf_prefix.join(p),
        };
        (normalize(&written) != opened).then_some(written)
    }

    /// The path an include names, as nginx opens it: a `..` is spelled out of the path, so
    /// `sites/../sites-enabled/a.conf` is the same file, and the same server, as
    /// `sites-enabled/a.conf` in the file set, the snapshot and the impact.
    fn resolve(&self, arg: &str) -> PathBuf {
        let p = Path::new(arg);
        if p.is_absolute() {
            let p = as_opened(p);
            for (from, to) in &self.opts.remap {
                if let Ok(rest) = p.strip_prefix(from) {
                    return as_opened(&to.join(rest));
                }
            }
            p
        } else {
            as_opened(&self.conf_prefix.join(p))
        }
    }
}

/// The UTF-8 byte-order mark some editors (Notepad, older Visual Studio) write first.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// nginx has no notion of a byte-order mark: `ngx_conf_read_token` reads its three bytes as the
/// start of the first word, so `nginx -t` says `unknown directive "server"` with invisible bytes
/// in the name, on any file that has one. Refusing here says why, and how to fix it.
///
/// GNU `sed -i` replaces a symlink with a regular file (the Debian `sites-enabled` link would
/// stop following `sites-available`), so for a link the hint edits what it points to.
fn bom_message(path: &Path) -> String {
    let follow = match fs_err::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => "--follow-symlinks ",
        _ => "",
    };
    format!(
        "the file starts with a UTF-8 byte-order mark (bytes EF BB BF), which nginx reads as part \
         of the first directive's name (nginx -t: unknown directive); remove it, e.g. \
         `sed -i {follow}'1s/^\\xEF\\xBB\\xBF//' {}`, or save the file as UTF-8 without BOM",
        shlex::try_quote(&path.to_string_lossy()).unwrap_or_else(|_| path.to_string_lossy())
    )
}

fn is_include(d: &Directive) -> bool {
    d.name == "include" && d.block.is_none()
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `path` with `.` and `..` taken out, naming the file the kernel opens for it: a `..` drops
/// the directory before it, unless that is a symlink, whose `..` is the parent of what it leads
/// to (the link is resolved there, and only there). Nothing else is resolved: the path stays
/// the one nginx names, links and all.
pub fn as_opened(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                let link = std::fs::symlink_metadata(&out).is_ok_and(|m| m.is_symlink());
                if let Some(real) = link.then(|| std::fs::canonicalize(&out).ok()).flatten() {
                    out = real;
                }
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `glob(3)` as nginx calls it: sorted, `*` and `?` do not match a leading dot.
fn glob_sorted(pattern: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    let iter = glob::glob_with(&text, GLOB_OPTIONS)
        .map_err(|e| format!("invalid include pattern \"{text}\": {e}"))?;
    let mut paths = Vec::new();
    for entry in iter {
        let path =
            entry.map_err(|e| format!("cannot read {}: {}", e.path().display(), e.error()))?;
        paths.push(path);
    }
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn includes_resolve_against_main_dir_and_glob_sorted_without_dotfiles() {
        let t = tempfile::tempdir().expect("tempdir");
        write(
            t.path(),
            "nginx.conf",
            "http {\n include conf.d/*.conf;\n}\n",
        );
        write(t.path(), "conf.d/b.conf", "b 1;\n");
        write(t.path(), "conf.d/a.conf", "a 1;\n");
        write(t.path(), "conf.d/.hidden.conf", "hidden 1;\n");
        write(t.path(), "conf.d/c.conf.bak", "bak 1;\n");
        let c = load(&t.path().join("nginx.conf"), &LoadOptions::default()).expect("loads");
        let http = &c.tree[0];
        let names: Vec<_> = http.children().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(http.children()[1].line, 1);
        assert!(http.children()[1].file.ends_with("conf.d/b.conf"));
        assert_eq!(c.files.len(), 3);
    }

    #[test]
    fn missing_literal_include_is_a_config_error_at_the_include() {
        let t = tempfile::tempdir().expect("tempdir");
        write(t.path(), "nginx.conf", "events {}\n\ninclude nope.conf;\n");
        let e = load(&t.path().join("nginx.conf"), &LoadOptions::default()).expect_err("fails");
        match e {
            Error::Config { line, message, .. } => {
                assert_eq!(line, 3);
                assert!(message.contains("nope.conf"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn cycles_are_reported() {
        let t = tempfile::tempdir().expect("tempdir");
        write(t.path(), "nginx.conf", "include a.conf;\n");
        write(t.path(), "a.conf", "x 1;\ninclude nginx.conf;\n");
        let e = load(&t.path().join("nginx.conf"), &LoadOptions::default()).expect_err("cycle");
        assert!(e.to_string().contains("include cycle"), "{e}");
        assert!(e.to_string().contains("a.conf:2"), "{e}");
    }

    #[test]
    fn an_include_through_dotdot_names_the_file_without_it() {
        let t = tempfile::tempdir().expect("tempdir");
        let name = t.path().file_name().expect("name").to_string_lossy();
        write(
            t.path(),
            "nginx.conf",
            &format!(
                "include sites/../sites-enabled/*.conf;\ninclude {}/../{name}/./conf.d/x.conf;\n",
                t.path().display()
            ),
        );
        std::fs::create_dir_all(t.path().join("sites")).expect("mkdir");
        write(t.path(), "sites-enabled/a.conf", "a 1;\n");
        write(t.path(), "conf.d/x.conf", "x 1;\n");
        let c = load(&t.path().join("nginx.conf"), &LoadOptions::default()).expect("loads");
        let paths: Vec<_> = c.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(
            paths[1..],
            [
                t.path().join("sites-enabled/a.conf"),
                t.path().join("conf.d/x.conf")
            ]
        );
        assert_eq!(*c.tree[0].file, *t.path().join("sites-enabled/a.conf"));
    }

    #[test]
    fn dotdot_after_a_symlink_is_the_parent_of_what_it_leads_to() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("real/inner")).expect("mkdir");
        std::os::unix::fs::symlink(t.path().join("real/inner"), t.path().join("link"))
            .expect("symlink");
        let real = std::fs::canonicalize(t.path()).expect("canonical");
        assert_eq!(
            as_opened(&t.path().join("link/../x.conf")),
            real.join("real/x.conf")
        );
        assert_eq!(
            as_opened(&t.path().join("real/inner/../x.conf")),
            t.path().join("real/x.conf")
        );
        assert_eq!(as_opened(Path::new("/a/./b/../../c")), Path::new("/c"));
    }

    #[test]
    fn a_file_included_twice_is_spliced_twice_but_listed_once() {
        let t = tempfile::tempdir().expect("tempdir");
        write(
            t.path(),
            "nginx.conf",
            "a { include p; }\nb { include p; }\n",
        );
        write(t.path(), "p", "x 1;\n");
        let c = load(&t.path().join("nginx.conf"), &LoadOptions::default()).expect("loads");
        assert_eq!(c.tree[0].children().len(), 1);
        assert_eq!(c.tree[1].children().len(), 1);
        assert_eq!(c.files.len(), 2);
    }
}
