//! Which process gets the signal: the master the pid file names, and only when it is this
//! configuration's master.
//!
//! A pid file is a claim, not a proof. Two instances without a `pid` directive share the build
//! default (`/run/nginx.pid`): with A stopped and B started, A's pid file names B's master. A pid
//! file left behind by a crash can name a pid the kernel has since given to something else. So
//! the process the pid file names must be an nginx master (its title), of this run's binary
//! (`/proc/PID/exe`), started before the pid file was written (a younger process reused the pid),
//! and started for this run's main file and prefix: nginx keeps its argv in the master's title
//! (`nginx: master process /usr/sbin/nginx -c FILE -p DIR`), and a master started without `-c`
//! or `-p` (systemd's `nginx -g 'daemon on; master_process on;'`) uses the build defaults.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Proc;
use crate::error::{Error, Result};
use crate::nginx::{BuildInfo, Nginx};

/// The running nginx master process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Master {
    pub pid: i32,
}

/// The title nginx gives its master, followed by its argv joined with spaces.
const MASTER_TITLE: &str = "nginx: master process";

/// The pid file's mtime may lag the process start by the clock's granularity: `btime` in
/// `/proc/stat` is whole seconds.
const START_SLACK: Duration = Duration::from_secs(2);

/// Find the master from the pid file and check it is this configuration's master; anything
/// else is refused before a signal could reach it.
pub fn find_master(pid_file: &Path, nginx: &Nginx, info: &BuildInfo) -> Result<Master> {
    let pid = read_pid_file(pid_file)?;
    let Some(proc) = Proc::read(pid) else {
        return Err(not_running(format!(
            "no process {pid} (named by {}) is running",
            pid_file.display()
        )));
    };
    let Some(invocation) = Invocation::from_title(&proc.title) else {
        return Err(not_running(format!(
            "process {pid} (named by {}) is not an nginx master: {:?}",
            pid_file.display(),
            proc.title
        )));
    };
    let wrong = |found: String| Error::WrongMaster {
        pid_file: pid_file.to_path_buf(),
        pid,
        title: proc.title.clone(),
        found,
    };
    if let Some(exe) = exe_of(pid) {
        if !same_file(&exe, &nginx.binary) {
            return Err(wrong(format!(
                "a master of a different binary ({}, not {})",
                exe.display(),
                nginx.binary.display()
            )));
        }
    }
    if let (Some(started), Ok(written)) = (super::since_boot(proc.start_ticks), mtime(pid_file)) {
        if started > written + START_SLACK {
            return Err(wrong(format!(
                "started {} after the pid file was written: the pid file is stale and its pid \
                 was reused",
                humantime::format_duration(secs(started.duration_since(written)))
            )));
        }
    }
    // Relative paths in the master's argv are relative to where it was started; the master
    // never changes directory (only workers do, for `working_directory`).
    let cwd = crate::nginx::master_cwd(pid).unwrap_or_else(|| "/".into());
    let (conf, prefix) = invocation.resolve(&cwd, info);
    if !same_file(&conf, &nginx.conf) || !same_file(&prefix, &nginx.prefix) {
        return Err(wrong(format!(
            "the master of main file {} with prefix {}, not {} with prefix {}",
            conf.display(),
            prefix.display(),
            nginx.conf.display(),
            nginx.prefix.display()
        )));
    }
    Ok(Master { pid })
}

/// This configuration's master when no pid file names it (deleted, or emptied by an `nginx
/// -t` of another prefix): a process titled as nginx's master, of this binary (where its exe
/// is readable), started for this main file and prefix. Only said, never signalled: the pid
/// file is what says which master an operator runs.
pub fn unnamed_master(nginx: &Nginx, info: &BuildInfo) -> Option<i32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let mut pids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|&pid| {
        let Some(proc) = Proc::read(pid) else {
            return false;
        };
        let Some(invocation) = Invocation::from_title(&proc.title) else {
            return false;
        };
        if exe_of(pid).is_some_and(|exe| !same_file(&exe, &nginx.binary)) {
            return false;
        }
        let cwd = crate::nginx::master_cwd(pid).unwrap_or_else(|| "/".into());
        let (conf, prefix) = invocation.resolve(&cwd, info);
        same_file(&conf, &nginx.conf) && same_file(&prefix, &nginx.prefix)
    })
}

fn not_running(reason: String) -> Error {
    Error::NotRunning { reason }
}

fn read_pid_file(pid_file: &Path) -> Result<i32> {
    let text = match std::fs::read_to_string(pid_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_running(format!("no pid file {}", pid_file.display())));
        }
        Err(e) => {
            return Err(not_running(format!(
                "cannot read the pid file {}: {e}",
                pid_file.display()
            )))
        }
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(not_running(format!(
            "the pid file {} is empty (as `nginx -t` leaves it)",
            pid_file.display()
        )));
    }
    text.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
        not_running(format!(
            "the pid file {} does not hold a pid: {:?}",
            pid_file.display(),
            text
        ))
    })
}

/// The binary a process runs. A binary replaced on disk since the master started shows as
/// `PATH (deleted)`. `None` when not readable (no privileges over that process): the other
/// checks must do.
fn exe_of(pid: i32) -> Option<PathBuf> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = exe.to_string_lossy();
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(&text),
    ))
}

/// The same file or directory, through symlinks and trailing slashes; compared as written when
/// either side does not exist.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.components().eq(b.components()),
    }
}

fn mtime(path: &Path) -> std::io::Result<SystemTime> {
    std::fs::metadata(path)?.modified()
}

fn secs(d: std::result::Result<Duration, std::time::SystemTimeError>) -> Duration {
    Duration::from_secs(d.map_or(0, |d| d.as_secs()))
}

/// The `-c` and `-p` a master was started with, read back from its title.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    pub conf: Option<String>,
    pub prefix: Option<String>,
}

impl Invocation {
    /// Read `nginx: master process ARGV...`. `None` when the title is not a master's.
    ///
    /// The title joins argv with spaces, so a word boundary inside an argument is lost. nginx
    /// takes no positional arguments (`ngx_get_options` refuses one), so after an option that
    /// takes a value every word up to the next one starting with `-` belongs to that value; a
    /// value may also be glued to its letter (`-cFILE`), and flags combine (`-tq`).
    pub fn from_title(title: &str) -> Option<Invocation> {
        let rest = title.strip_prefix(MASTER_TITLE)?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        let mut words = rest.split(' ').filter(|w| !w.is_empty()).skip(1).peekable();
        let mut inv = Invocation::default();
        while let Some(word) = words.next() {
            let Some(flags) = word.strip_prefix('-') else {
                continue;
            };
            for (at, letter) in flags.char_indices() {
                if !matches!(letter, 'c' | 'p' | 'g' | 's' | 'e') {
                    continue;
                }
                let glued = &flags[at + 1..];
                let mut value = glued.to_string();
                while words.peek().is_some_and(|w| !w.starts_with('-')) {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(words.next().unwrap_or_default());
                }
                match letter {
                    'c' => inv.conf = Some(value),
                    'p' => inv.prefix = Some(value),
                    _ => {}
                }
                break;
            }
        }
        Some(inv)
    }

    /// The main file and prefix nginx resolved for this argv (`ngx_process_options`): `-p`, else
    /// the build's `--prefix`; `-c`, else the build's `--conf-path`, else `conf/nginx.conf`; a
    /// relative `-c` is under the prefix, a relative `-p` under the master's working directory.
    pub fn resolve(&self, cwd: &Path, info: &BuildInfo) -> (PathBuf, PathBuf) {
        let conf_default = || {
            info.conf_path
                .clone()
                .unwrap_or_else(|| PathBuf::from("conf/nginx.conf"))
        };
        let conf_written = self.conf.as_ref().map_or_else(conf_default, PathBuf::from);
        let prefix = match &self.prefix {
            Some(p) => cwd.join(p),
            None => match &info.prefix {
                Some(p) => cwd.join(p),
                // The run's own rule for a build without `--prefix` (see `Env::discover`).
                None => cwd
                    .join(&conf_written)
                    .parent()
                    .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            },
        };
        (prefix.join(conf_written), prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(title: &str) -> Invocation {
        Invocation::from_title(title).expect("a master title")
    }

    fn debian() -> BuildInfo {
        BuildInfo {
            conf_path: Some("/etc/nginx/nginx.conf".into()),
            prefix: Some("/usr/share/nginx".into()),
            ..BuildInfo::default()
        }
    }

    #[test]
    fn flags_are_read_back_from_the_title() {
        let i = inv("nginx: master process /usr/sbin/nginx -p /srv/a/ -c /srv/a/nginx.conf");
        assert_eq!(i.prefix.as_deref(), Some("/srv/a/"));
        assert_eq!(i.conf.as_deref(), Some("/srv/a/nginx.conf"));
        let glued = inv("nginx: master process nginx -c/srv/b.conf -p/srv/");
        assert_eq!(glued.conf.as_deref(), Some("/srv/b.conf"));
        assert_eq!(glued.prefix.as_deref(), Some("/srv/"));
    }

    #[test]
    fn a_master_started_without_flags_uses_the_build_defaults() {
        let bare = inv("nginx: master process nginx");
        assert_eq!(bare, Invocation::default());
        let (conf, prefix) = bare.resolve(Path::new("/root"), &debian());
        assert_eq!(conf, Path::new("/etc/nginx/nginx.conf"));
        assert_eq!(prefix, Path::new("/usr/share/nginx"));
    }

    #[test]
    fn systemd_global_directives_are_not_taken_for_paths() {
        let i = inv("nginx: master process /usr/sbin/nginx -g daemon on; master_process on;");
        assert_eq!(i, Invocation::default());
        let i = inv("nginx: master process /usr/sbin/nginx -g daemon on; -c /x/n.conf");
        assert_eq!(i.conf.as_deref(), Some("/x/n.conf"));
    }

    #[test]
    fn relative_paths_resolve_as_nginx_does() {
        let i = inv("nginx: master process ./nginx -p site -c conf/site.conf");
        let (conf, prefix) = i.resolve(Path::new("/srv"), &debian());
        assert_eq!(prefix, Path::new("/srv/site"));
        assert_eq!(conf, Path::new("/srv/site/conf/site.conf"));
        // No --conf-path in the build: conf/nginx.conf under the prefix.
        let (conf, _) = inv("nginx: master process nginx -p /opt/n/")
            .resolve(Path::new("/"), &BuildInfo::default());
        assert_eq!(conf, Path::new("/opt/n/conf/nginx.conf"));
    }

    #[test]
    fn a_worker_or_another_program_is_not_a_master() {
        assert!(Invocation::from_title("nginx: worker process").is_none());
        assert!(Invocation::from_title("nginx: master processor").is_none());
        assert!(Invocation::from_title("sleep 30").is_none());
    }
}
