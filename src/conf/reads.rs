//! Whether a configuration reads a given file, for `edit FILE`: a file nginx does not read is
//! not the configuration, and editing it through the pipeline would test and reload nothing
//! of it. A path that does not exist yet counts as read when an `include` would read it once
//! it is there (a new `conf.d/*.conf` file), so `edit` can create it on purpose.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::conf::load::{Disk, GLOB_OPTIONS};
use crate::conf::{load_from, LoadOptions, Source};

/// How the configuration stands to one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// nginx reads it (as this path or through a link to it).
    Yes,
    /// It does not exist; an include would read it once created.
    OnceCreated,
    /// Nothing in the configuration reads it.
    No,
    /// The configuration does not load now (why), so it cannot be told.
    Unknown(String),
}

/// The disk, with `new` present as an empty file: a glob matching it lists it, a literal
/// include of it reads it.
struct WithNew<'a> {
    new: &'a Path,
}

impl Source for WithNew<'_> {
    fn read(&self, path: &Path, max: u64) -> Result<Arc<[u8]>, String> {
        if path == self.new {
            return Ok(Arc::from(&[][..]));
        }
        Disk.read(path, max)
    }

    fn glob(&self, pattern: &Path) -> Result<Vec<PathBuf>, String> {
        let mut found = Disk.glob(pattern)?;
        let matches = glob::Pattern::new(&pattern.to_string_lossy())
            .is_ok_and(|p| p.matches_path_with(self.new, GLOB_OPTIONS));
        if matches && !found.iter().any(|f| f == self.new) {
            found.push(self.new.to_path_buf());
            found.sort();
        }
        Ok(found)
    }
}

/// The file a path opens: itself resolved when it exists, else its lexical absolute form.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether the configuration whose main file is `main` (absolute) reads `path` (absolute).
pub fn reads(main: &Path, path: &Path) -> Reads {
    let exists = std::fs::metadata(path).is_ok();
    let config = if exists {
        load_from(main, &LoadOptions::default(), &Disk)
    } else {
        load_from(main, &LoadOptions::default(), &WithNew { new: path })
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => return Reads::Unknown(e.to_string()),
    };
    let wanted = identity(path);
    let read = config
        .paths()
        .any(|p| p == path || (exists && identity(p) == wanted));
    match (read, exists) {
        (true, true) => Reads::Yes,
        (true, false) => Reads::OnceCreated,
        (false, _) => Reads::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_read_through_a_link_a_stray_file_and_a_new_file_a_glob_would_read() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("sites-available")).unwrap();
        std::fs::create_dir_all(root.join("sites-enabled")).unwrap();
        std::fs::create_dir_all(root.join("conf.d")).unwrap();
        let main = root.join("nginx.conf");
        std::fs::write(&main, "include sites-enabled/*;\ninclude conf.d/*.conf;\n").unwrap();
        std::fs::write(root.join("sites-available/app"), "server {}\n").unwrap();
        std::os::unix::fs::symlink("../sites-available/app", root.join("sites-enabled/app"))
            .unwrap();
        std::fs::write(root.join("notes.conf"), "# not included\n").unwrap();

        assert_eq!(reads(&main, &main), Reads::Yes);
        assert_eq!(reads(&main, &root.join("sites-enabled/app")), Reads::Yes);
        assert_eq!(reads(&main, &root.join("sites-available/app")), Reads::Yes);
        assert_eq!(reads(&main, &root.join("notes.conf")), Reads::No);
        assert_eq!(
            reads(&main, &root.join("conf.d/new.conf")),
            Reads::OnceCreated
        );
        assert_eq!(reads(&main, &root.join("conf.d/.hidden.conf")), Reads::No);
        assert_eq!(reads(&main, &root.join("conf.d/new.txt")), Reads::No);
        assert_eq!(reads(&main, &root.join("elsewhere/new.conf")), Reads::No);
    }
}
