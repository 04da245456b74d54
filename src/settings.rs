//! Settings: command-line flags over `/etc/safe-reload.toml` (or `--config FILE`) over built-in
//! defaults. Flags always win. The file holds defaults for every flag an operator would want to
//! fix per machine: health URLs, reload command, timeouts, allowed-to-fail targets, retention.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{ColorWhen, Global};
use crate::error::{Error, Result};

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
    pub expect_status: Option<Vec<u16>>,
    pub no_probe: Option<bool>,
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
    pub reload_cmd: Option<Vec<String>>,
    pub health: Vec<String>,
    pub resolve: Vec<String>,
    pub expect_status: Vec<u16>,
    pub no_probe: bool,
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
            Some(text) => Some(split_command(&text)?),
        };
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
            health: pick(&g.health, file.health),
            resolve: pick(&g.resolve, file.resolve),
            expect_status: pick(&g.expect_status, file.expect_status),
            no_probe: g.no_probe || file.no_probe.unwrap_or(false),
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
    toml::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

/// Split a command like a shell would split words (quotes honoured), without running a shell.
pub fn split_command(text: &str) -> Result<Vec<String>> {
    match shlex::split(text) {
        Some(words) if !words.is_empty() => Ok(words),
        _ => Err(Error::Usage(format!(
            "cannot split the reload command \"{text}\" into words (unbalanced quotes?)"
        ))),
    }
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
        assert_eq!(s.health, ["http://127.0.0.1/"]);
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
    fn reload_command_is_split_without_a_shell() {
        assert_eq!(
            split_command("systemctl reload 'nginx.service'").expect("splits"),
            ["systemctl", "reload", "nginx.service"]
        );
    }
}
