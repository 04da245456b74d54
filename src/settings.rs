//! Settings: command-line flags over `/etc/safe-reload.toml` (or `--config FILE`) over built-in
//! defaults. Flags always win. The file holds defaults for every flag an operator would want to
//! fix per machine: health URLs, reload command, timeouts, allowed-to-fail targets, retention.
//!
//! Every value is resolved to its type here, before any command starts: a health URL becomes a
//! [`Check`], the reload command an argv whose program exists. A bad one is a usage error
//! (exit 2) before the snapshot, the journal or nginx are touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{ColorWhen, Global};
use crate::error::{Error, Result};
use crate::health::{self, Check};

/// The settings file read when `--config` is not given and it exists.
pub const DEFAULT_FILE: &str = "/etc/safe-reload.toml";
/// The state directory when neither flag, environment nor file names one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/safe-reload";

/// The settings file, every key optional. Unknown keys are an error so typos do not pass quietly.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    pub nginx: Option<PathBuf>,
    pub conf: Option<PathBuf>,
    pub prefix: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub reload_cmd: Option<String>,
    pub health: Option<Vec<String>>,
    pub resolve: Option<Vec<String>>,
    pub health_header: Option<Vec<String>>,
    pub health_timeout: Option<String>,
    pub expect_status: Option<Vec<u16>>,
    pub no_probe: Option<bool>,
    pub no_shadow: Option<bool>,
    pub probe_timeout: Option<String>,
    pub allow_fail: Option<Vec<String>>,
    pub health_window: Option<String>,
    pub reload_timeout: Option<String>,
    pub nginx_timeout: Option<String>,
    pub retention: Option<usize>,
    pub color: Option<ColorWhen>,
}

/// Everything a command needs to know, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nginx: Option<PathBuf>,
    pub conf: Option<PathBuf>,
    pub prefix: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// The reload command as argv; its program was found when the settings were resolved.
    pub reload_cmd: Option<Vec<String>>,
    /// `--health` URLs, parsed (and their hosts resolved) up front.
    pub health: Vec<Check>,
    /// `--health-header` pairs, validated.
    pub health_headers: Vec<(String, String)>,
    /// Per health request.
    pub health_timeout: Duration,
    pub resolve: Vec<String>,
    pub expect_status: Vec<u16>,
    pub no_probe: bool,
    /// Do not start the candidate in a shadow nginx before the reload.
    pub no_shadow: bool,
    pub probe_timeout: Duration,
    pub allow_fail: Vec<String>,
    pub health_window: Duration,
    pub reload_timeout: Duration,
    pub nginx_timeout: Duration,
    pub retention: usize,
    pub color: ColorWhen,
    pub yes: bool,
    pub force: bool,
    pub wait: bool,
}

impl Settings {
    /// Merge flags over the settings file (if any) over defaults.
    pub fn resolve(g: &Global) -> Result<Settings> {
        let file = read_file(g.config_file.as_deref())?;
        let dur = |v: &Option<String>, key: &str, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(text) => humantime::parse_duration(text)
                    .map_err(|e| Error::Usage(format!("settings file: {key} = \"{text}\": {e}"))),
            }
        };
        let reload_cmd = match g.reload_cmd.clone().or(file.reload_cmd) {
            None => None,
            Some(text) => Some(reload_argv(&text)?),
        };
        let resolve = pick(&g.resolve, file.resolve);
        for entry in &resolve {
            health::parse_resolve(entry)?;
        }
        let health = pick(&g.health, file.health)
            .iter()
            .map(|u| health::parse_url(u, &resolve))
            .collect::<Result<Vec<Check>>>()?;
        Ok(Settings {
            nginx: g.nginx.clone().or(file.nginx),
            conf: g.conf.clone().or(file.conf),
            prefix: g.prefix.clone().or(file.prefix),
            state_dir: g
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            reload_cmd,
            health,
            resolve,
            health_headers: (pick(&g.health_header, file.health_header).iter())
                .map(|h| crate::health::parse_header(h))
                .collect::<Result<_>>()?,
            health_timeout: match g.health_timeout {
                Some(d) => d,
                None => dur(
                    &file.health_timeout,
                    "health-timeout",
                    crate::health::DEFAULT_REQUEST_TIMEOUT,
                )?,
            },
            expect_status: pick(&g.expect_status, file.expect_status),
            no_probe: g.no_probe || file.no_probe.unwrap_or(false),
            no_shadow: g.no_shadow || file.no_shadow.unwrap_or(false),
            probe_timeout: match g.probe_timeout {
                Some(d) => d,
                None => dur(&file.probe_timeout, "probe-timeout", Duration::from_secs(1))?,
            },
            allow_fail: pick(&g.allow_fail, file.allow_fail),
            health_window: dur(&file.health_window, "health-window", Duration::from_secs(3))?,
            reload_timeout: dur(
                &file.reload_timeout,
                "reload-timeout",
                Duration::from_secs(60),
            )?,
            nginx_timeout: dur(
                &file.nginx_timeout,
                "nginx-timeout",
                Duration::from_secs(120),
            )?,
            retention: file.retention.unwrap_or(50),
            color: if g.color == ColorWhen::Auto {
                file.color.unwrap_or(ColorWhen::Auto)
            } else {
                g.color
            },
            yes: g.yes,
            force: g.force,
            wait: g.wait,
        })
    }
}

fn pick<T: Clone>(flag: &[T], file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag.to_vec()
    }
}

fn read_file(explicit: Option<&Path>) -> Result<FileSettings> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
        None => return Ok(FileSettings::default()),
    };
    let text = fs_err::read_to_string(&path)?;
    let bad = |e: String| Error::Usage(format!("{}: {e}", path.display()));
    if let Ok(table) = text.parse::<toml::Table>() {
        if let Some(key) = PER_RUN.iter().find(|k| table.contains_key(**k)) {
            return Err(bad(format!(
                "`{key}` is a flag of one run, not a setting: pass --{key} on the command line \
                 (the settings file holds what every run shares, see `safe-reload --help`)"
            )));
        }
    }
    toml::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// Flags that say how one run goes (answer yes, print JSON, write a report, be quiet or
/// verbose, force past a lock, wait for one): a default for every run would answer "yes" for
/// an operator at a terminal or mix JSON into a unit's log, so the file does not take them.
const PER_RUN: [&str; 7] = ["yes", "json", "report", "quiet", "verbose", "force", "wait"];

/// Split a command like a shell would split words (quotes honoured), without running a shell.
pub fn split_command(text: &str) -> Result<Vec<String>> {
    match shlex::split(text) {
        Some(words) if !words.is_empty() => Ok(words),
        _ => Err(Error::Usage(format!(
            "cannot split the reload command \"{text}\" into words (unbalanced quotes?)"
        ))),
    }
}

/// The reload command's argv, refused up front when its program cannot be run: found only at
/// the reload, a missing one would fail after the snapshot and the journal.
fn reload_argv(text: &str) -> Result<Vec<String>> {
    let argv = split_command(text)?;
    let program = Path::new(&argv[0]);
    let found = if argv[0].contains('/') {
        is_executable(program)
    } else {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
        })
    };
    if found {
        Ok(argv)
    } else {
        Err(Error::Usage(format!(
            "the reload command \"{text}\": no executable {} (looked {}); nothing was changed",
            argv[0],
            if argv[0].contains('/') {
                "at that path"
            } else {
                "on PATH"
            }
        )))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "probe-timeout = \"2s\"\nhealth = [\"http://127.0.0.1/\"]\nretention = 7\n",
        )
        .expect("write");
        let cli = Cli::parse_from([
            "safe-reload",
            "--config",
            file.to_str().expect("utf8"),
            "--probe-timeout",
            "300ms",
        ]);
        let s = Settings::resolve(&cli.global).expect("resolves");
        assert_eq!(s.probe_timeout, Duration::from_millis(300));
        let urls: Vec<&str> = s.health.iter().map(|c| c.url.as_str()).collect();
        assert_eq!(urls, ["http://127.0.0.1/"]);
        assert_eq!(s.retention, 7);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "probe-timout = \"2s\"\n").expect("write");
        let cli = Cli::parse_from(["safe-reload", "--config", file.to_str().expect("utf8")]);
        let e = Settings::resolve(&cli.global).expect_err("typo refused");
        assert!(e.to_string().contains("probe-timout"), "{e}");
    }

    #[test]
    fn a_per_run_flag_in_the_file_is_refused_with_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "yes = true\n").expect("write");
        let cli = Cli::parse_from(["safe-reload", "--config", file.to_str().expect("utf8")]);
        let e = Settings::resolve(&cli.global).expect_err("refused");
        assert!(
            e.to_string()
                .contains("`yes` is a flag of one run, not a setting: pass --yes"),
            "{e}"
        );
    }

    #[test]
    fn bad_inputs_are_usage_errors_when_resolved() {
        let resolve = |args: &[&str]| {
            let mut argv = vec!["safe-reload", "--config", "/dev/null"];
            argv.extend_from_slice(args);
            Settings::resolve(&Cli::parse_from(argv).global)
        };
        let e = resolve(&["--health", "ftp://x/"]).expect_err("refused");
        assert!(
            matches!(e, Error::Usage(_)) && e.to_string().contains("ftp://x/"),
            "{e}"
        );
        let e = resolve(&["--reload-cmd", "no-such-program-here reload"]).expect_err("refused");
        assert!(e.to_string().contains("no-such-program-here"), "{e}");
        let e = resolve(&["--reload-cmd", "/nonexistent/systemctl reload"]).expect_err("refused");
        assert!(e.to_string().contains("at that path"), "{e}");
        let s = resolve(&[
            "--reload-cmd",
            "true",
            "--health",
            "http://127.0.0.1:8080/x",
        ])
        .expect("valid");
        assert_eq!(s.reload_cmd.as_deref(), Some(&["true".to_string()][..]));
        assert_eq!(s.health[0].connect.port(), 8080);
    }

    #[test]
    fn reload_command_is_split_without_a_shell() {
        assert_eq!(
            split_command("systemctl reload 'nginx.service'").expect("splits"),
            ["systemctl", "reload", "nginx.service"]
        );
    }
}
