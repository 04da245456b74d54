//! A throwaway copy of an untrusted configuration for `nginx -t` (`check --untrusted`).
//!
//! `nginx -t` is not read-only: it opens (and creates) the pid file and every log file, and
//! creates the temp and cache directories, chowning them to the `user` when run as root. A
//! configuration from someone else could point any of these at a file of the machine
//! (`pid /etc/passwd;`, `proxy_temp_path /etc;`). So the repository's files are copied into a
//! private temp dir with the same relative layout, every file-writing directive is removed
//! where it stands, found by its position as nginx's tokenizer reads it (its newlines stay, so
//! lines keep their numbers and nginx's messages still point at the right line), the pid file
//! is the copy's own (never the configuration's nor the build default `/run/nginx.pid`, which
//! `nginx -t` would empty), and nginx is then run on the copy, as an unprivileged user when we are root (see
//! [`crate::nginx::test_isolated`]). Its messages name the copy; they are mapped back to the
//! repository's paths.
//!
//! Commenting out a `*_temp_path` is not enough: nginx then falls back to the compiled-in
//! paths (Debian: `/var/lib/nginx/body`, `/var/lib/nginx/proxy`, ...), and `nginx -t` creates
//! them (`ngx_init_cycle` calls `ngx_create_paths` in test mode too), which an unprivileged
//! user cannot do on a machine where nginx never ran. So `http {` of the copy also includes a
//! file that sets every temp path of the compiled-in modules inside the copy: the test needs
//! nothing of the machine.
//!
//! `nginx -t` also binds every `listen` (it ignores only "address in use"), so `listen 80;` as
//! an unprivileged user fails with "Permission denied" on every real configuration, and
//! `listen unix:/run/x.sock` would create a socket on the machine. Each listen of the copy is
//! moved onto a stand-in, as for the shadow nginx (`shadow::remap_listens`): a free loopback
//! port, or a socket inside the copy; messages that name a stand-in name the listen as
//! written.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::conf::{ConfFile, Config};
use crate::error::{Error, Result};
use crate::nginx::{self, TestOutcome};
use crate::shadow;

/// Most files copied besides the configuration (certificates, maps, mime types).
const MAX_EXTRA_FILES: usize = 20_000;
/// Most bytes copied besides the configuration.
const MAX_EXTRA_BYTES: u64 = 256 * 1024 * 1024;
/// The file, beside the main file's copy, that sets the temp paths (see the module text).
/// A relative `include` is read from the main file's directory (nginx's conf prefix), wherever
/// the `http` block is.
const TEMP_PATHS_FILE: &str = ".safe-reload-temp-paths.conf";
/// The directory of the copy where `listen unix:` stand-ins are bound.
const SOCKETS_DIR: &str = ".safe-reload-sockets";

/// Every temp path an http module registers with `ngx_conf_merge_path_value`, and the
/// `./configure` switch that leaves the module out (its directive is then unknown).
const TEMP_PATHS: [(&str, Option<&str>); 5] = [
    ("client_body_temp_path", None),
    ("proxy_temp_path", Some("--without-http_proxy_module")),
    ("fastcgi_temp_path", Some("--without-http_fastcgi_module")),
    ("uwsgi_temp_path", Some("--without-http_uwsgi_module")),
    ("scgi_temp_path", Some("--without-http_scgi_module")),
];

/// Directives that make `nginx -t` create or open a file or directory for writing.
fn writes_files(name: &str) -> bool {
    matches!(
        name,
        "pid" | "lock_file" | "error_log" | "access_log" | "working_directory" | "ssl_session_log"
    ) || name.ends_with("_temp_path")
        || name.ends_with("_cache_path")
        || name.starts_with("google_perftools")
}

/// The copy of a repository in a temp dir; removed on drop.
#[derive(Debug)]
pub struct Sandbox {
    dir: tempfile::TempDir,
    root: PathBuf,
    main: PathBuf,
    /// Each listen's stand-in in the copy and the listen as the repository writes it.
    stand_ins: Vec<(String, String)>,
}

impl Sandbox {
    /// Copy the repository at `root` (the loaded, confined `config` and the plain files beside
    /// it) into a temp dir, neutralising the file-writing directives of the configuration.
    pub fn prepare(config: &Config, root: &Path) -> Result<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix("safe-reload-untrusted.")
            .tempdir()?;
        let mut sandbox = Sandbox {
            main: dir.path().join(relative(root, &config.main)?),
            dir,
            root: root.to_path_buf(),
            stand_ins: Vec::new(),
        };
        let mut budget = (MAX_EXTRA_FILES, MAX_EXTRA_BYTES);
        sandbox.copy_plain_files(root, &mut budget)?;
        let sockets = sandbox.dir().join(SOCKETS_DIR);
        fs_err::create_dir_all(&sockets)?;
        let listens = shadow::stand_ins(config, &sockets)?;
        for file in &config.files {
            let to = sandbox.dir.path().join(relative(root, &file.path)?);
            let neutralised = ConfFile {
                path: file.path.clone(),
                bytes: Arc::from(neutralise(file)?),
                via: None,
            };
            write(&to, &shadow::remap_listens(&neutralised, &listens)?)?;
        }
        sandbox.stand_ins = (listens.ports.rows().into_iter())
            .map(|r| (r.shadow, r.listen))
            .collect();
        Ok(sandbox)
    }

    /// The temp dir (the prefix nginx gets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The main file's copy.
    pub fn main(&self) -> &Path {
        &self.main
    }

    /// Run `nginx -t` on the copy; messages name the repository's files. `configure_args` are
    /// the binary's (`nginx -V`): they say which modules, and so which temp paths, it has.
    pub fn test(
        &self,
        binary: &Path,
        configure_args: &[String],
        timeout: Duration,
    ) -> Result<TestOutcome> {
        let temp = temp_paths(self.dir(), configure_args);
        let temp_file = self.main.with_file_name(TEMP_PATHS_FILE);
        write(&temp_file, temp.as_bytes())?;
        // The copy's pid file is ours: whatever the repository put under that name goes.
        match fs_err::remove_file(self.dir().join(nginx::ISOLATED_PID)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let run_as = unprivileged_user();
        if let Some((uid, gid)) = run_as {
            // nginx -t creates the temp paths in the copy, and binds the unix stand-ins.
            for dir in [self.dir().to_path_buf(), self.dir().join(SOCKETS_DIR)] {
                hand_over(&dir, uid, gid)?;
            }
        }
        nginx::test_isolated(&nginx::IsolatedTest {
            binary,
            prefix: self.dir(),
            conf: &self.main,
            run_as,
            map: (self.dir(), &self.root),
            addresses: &self.stand_ins,
            timeout,
        })
    }

    /// Files of the repository that are not configuration (certificates, data files), so that
    /// relative references to them still resolve. Symlinks and `.git` are skipped.
    fn copy_plain_files(&self, dir: &Path, budget: &mut (usize, u64)) -> Result<()> {
        for entry in fs_err::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if entry.file_name() == ".git" || kind.is_symlink() {
                continue;
            }
            if kind.is_dir() {
                self.copy_plain_files(&path, budget)?;
            } else if kind.is_file() {
                let len = entry.metadata()?.len();
                if budget.0 == 0 || budget.1 < len {
                    return Err(Error::Usage(format!(
                        "{} holds more than {MAX_EXTRA_FILES} files or {MAX_EXTRA_BYTES} bytes: \
                         too large to copy for an untrusted check",
                        self.root.display()
                    )));
                }
                *budget = (budget.0 - 1, budget.1 - len);
                let to = self.dir().join(relative(&self.root, &path)?);
                write(&to, &fs_err::read(&path)?)?;
            }
        }
        Ok(())
    }
}

/// `dir` owned by the user nginx -t runs as.
fn hand_over(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| Error::Internal(e.to_string()))?;
    // SAFETY: chown(2) on a NUL-terminated path we created; failure is checked.
    if unsafe { libc::chown(path.as_ptr(), uid, gid) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::Usage(format!(
            "cannot hand {} to uid {uid} for nginx -t: {e}",
            dir.display()
        )));
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> Result<PathBuf> {
    path.strip_prefix(root).map(Path::to_path_buf).map_err(|_| {
        Error::Usage(format!(
            "{} is outside {}: refused for untrusted configuration",
            path.display(),
            root.display()
        ))
    })
}

/// Readable by the unprivileged user nginx runs as; the temp dir above is private to it.
fn write(to: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs_err::create_dir_all(parent)?;
        fs_err::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
    }
    fs_err::write(to, bytes)?;
    fs_err::set_permissions(to, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// The file with each file-writing directive removed where it stands: its bytes go, its
/// newlines stay, so every line keeps its number and nothing else on the line is touched.
/// Directives are found by position, as nginx's tokenizer reads them: the name inside a
/// string, a comment, another directive's argument or a `map` entry is not a directive.
/// Right after the `{` of `http`, on the same line, the compiled-in access log is turned off
/// (nginx -t opens e.g. /var/log/nginx/access.log without an `access_log`) and the temp paths
/// are included.
pub fn neutralise(file: &ConfFile) -> Result<Vec<u8>> {
    shadow::edit(
        file,
        |name, args, _| -> shadow::EditResult {
            if name == "include" && args.first().is_some_and(|p| Path::new(p).is_absolute()) {
                return Err(
                    "an absolute include path cannot be checked in a throwaway copy; \
                            write it relative to the main file"
                        .into(),
                );
            }
            Ok(writes_files(name).then(String::new))
        },
        |name, _, top| -> shadow::EditResult {
            Ok((name == "http" && top)
                .then(|| format!(" access_log off; include {TEMP_PATHS_FILE};")))
        },
    )
}

/// The temp-path directives for a binary built with `configure_args`, each a directory of
/// `dir` that nginx -t creates itself (it makes the last component only).
pub fn temp_paths(dir: &Path, configure_args: &[String]) -> String {
    TEMP_PATHS
        .iter()
        .filter(|(_, without)| !without.is_some_and(|w| configure_args.iter().any(|a| a == w)))
        .map(|(name, _)| {
            let sub = name.trim_end_matches("_path");
            format!("{name} {};\n", quote(&dir.join(sub)))
        })
        .collect()
}

/// A path as one nginx word: quoted, with `"` and `\` escaped (a temp dir's name is ours,
/// but `TMPDIR` is not).
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `nobody` when we are root (nginx -t then cannot write where we could); `None` otherwise.
fn unprivileged_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once, before any
    // other call that could reuse its static buffer.
    let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
    if pw.is_null() {
        return Some((65534, 65534));
    }
    // SAFETY: non-null pointer from getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfFile {
        ConfFile {
            path: PathBuf::from("/repo/nginx.conf"),
            bytes: Arc::from(text.as_bytes()),
            via: None,
        }
    }

    fn neutralised(text: &str) -> String {
        String::from_utf8(neutralise(&file(text)).unwrap()).unwrap()
    }

    #[test]
    fn writers_are_removed_in_place() {
        let text = "pid /etc/passwd;\nevents {}\nhttp {\n  access_log /etc/x main;\n  proxy_temp_path /etc;\n}\n";
        assert_eq!(
            neutralised(text),
            "\nevents {}\nhttp { access_log off; include .safe-reload-temp-paths.conf;\n  \n  \n}\n"
        );
        let split = "http # c {\n\n  {\n}\n";
        assert_eq!(
            neutralised(split),
            "http # c {\n\n  { access_log off; include .safe-reload-temp-paths.conf;\n}\n"
        );
    }

    /// Regression: writers were found by searching each line's text, so one sharing its line
    /// was refused, and a line starting with a writer's name was commented out whole.
    #[test]
    fn writers_are_found_by_position_not_by_text() {
        // Two on one line, one after a block on its line, one spanning lines: each goes, the
        // rest of the line stays.
        assert_eq!(
            neutralised("events {} pid /etc/passwd; error_log /x;\nhttp { error_log /x; }\n"),
            "events {}  \nhttp { access_log off; include .safe-reload-temp-paths.conf;  }\n"
        );
        assert_eq!(
            neutralised("pid\n /etc/passwd;\nevents {}\n"),
            "\n\nevents {}\n"
        );
        // Names in a string, a comment, another directive's argument, a map entry: kept.
        let kept = "events {}\nhttp {\n  log_format x 'access_log $host'; # error_log /x;\n  \
                    add_header X-A \"proxy_temp_path /etc\";\n  \
                    map $uri $v { access_log 1; }\n  set $p pid;\n}\n";
        assert_eq!(
            neutralised(kept),
            kept.replacen(
                "http {",
                "http { access_log off; include .safe-reload-temp-paths.conf;",
                1
            )
        );
        // A writer after a comment on its line, and one whose argument is quoted.
        assert_eq!(
            neutralised("events {} # pid x;\naccess_log \"/a b;c\" ; lock_file /l;\n"),
            "events {} # pid x;\n \n"
        );
    }

    #[test]
    fn every_temp_path_of_the_built_modules_is_inside_the_copy() {
        let dir = Path::new("/tmp/copy \"x\"");
        let all = temp_paths(dir, &[]);
        assert_eq!(
            all,
            "client_body_temp_path \"/tmp/copy \\\"x\\\"/client_body_temp\";\n\
             proxy_temp_path \"/tmp/copy \\\"x\\\"/proxy_temp\";\n\
             fastcgi_temp_path \"/tmp/copy \\\"x\\\"/fastcgi_temp\";\n\
             uwsgi_temp_path \"/tmp/copy \\\"x\\\"/uwsgi_temp\";\n\
             scgi_temp_path \"/tmp/copy \\\"x\\\"/scgi_temp\";\n"
        );
        let light = temp_paths(
            Path::new("/d"),
            &[
                "--without-http_uwsgi_module".into(),
                "--without-http_scgi_module".into(),
            ],
        );
        assert!(
            !light.contains("uwsgi") && !light.contains("scgi"),
            "{light}"
        );
        assert!(
            light.contains("proxy_temp_path \"/d/proxy_temp\";"),
            "{light}"
        );
    }

    #[test]
    fn absolute_includes_are_refused() {
        let err = neutralise(&file("http {\ninclude /repo/a.conf;\n}\n")).unwrap_err();
        assert!(matches!(err, Error::Config { line: 2, .. }), "{err}");
    }
}
