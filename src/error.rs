//! The one error type. Each variant carries what an operator needs to act: the path, the line,
//! the command and its stderr. Outcomes such as "refused" or "rolled back" are not errors; they
//! are reports (see `report`). Errors are what stops a command from producing a report.

use std::path::PathBuf;
use std::time::Duration;

use crate::exit::Exit;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration text is wrong: syntax, a missing include, a cycle, junk bytes.
    #[error("{}:{line}: {message}", file.display())]
    Config {
        file: PathBuf,
        line: u32,
        message: String,
    },

    /// The main configuration file cannot be used at all (missing, unreadable, a directory).
    #[error("cannot read the nginx configuration {}: {reason}", path.display())]
    MainConfig { path: PathBuf, reason: String },

    /// A file operation failed; fs-err puts the path in the message.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// No nginx binary where we looked.
    #[error("no nginx binary found (looked at: {tried}); install nginx or pass --nginx PATH")]
    NginxNotFound { tried: String },

    /// A child process could not start or failed.
    #[error("`{command}` failed ({status}){}", stderr_suffix(stderr))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// A child process did not finish in time and was killed.
    #[error("`{command}` did not finish within {} and was stopped", humantime::format_duration(*after))]
    CommandTimeout { command: String, after: Duration },

    /// nginx is not running, so there is nothing to reload.
    #[error("nginx is not running: {reason}; start it first (nothing was changed)")]
    NotRunning { reason: String },

    /// No pid file names this configuration's master, and one runs all the same (its pid
    /// file was deleted or emptied): starting nginx would fail to bind, and nothing is
    /// signalled that the pid file does not name.
    #[error(
        "nginx runs this configuration (master process {pid}), but {why}: safe-reload signals \
         only the master a pid file names, so nothing was signalled (nothing was changed); \
         write its pid back (`echo {pid} > {}`), or restart nginx (its pid file is written \
         again)",
        pid_file.display()
    )]
    PidFileLost {
        pid_file: PathBuf,
        pid: i32,
        why: String,
    },

    /// The pid file names an nginx master, but not this configuration's: signalling it would
    /// reload another instance.
    #[error(
        "the pid file {} names process {pid} (`{title}`), {found}: not this configuration's \
         master, so nothing was signalled; start this nginx, or point -c/-p at the running one",
        pid_file.display()
    )]
    WrongMaster {
        pid_file: PathBuf,
        pid: i32,
        title: String,
        found: String,
    },

    /// Another run holds the state directory lock.
    #[error("another safe-reload run holds the lock {} ({holder}); wait for it or pass --wait", path.display())]
    LockHeld { path: PathBuf, holder: String },

    /// The state directory or something in it is unusable or unsafe.
    #[error("state directory {}: {message}", path.display())]
    State { path: PathBuf, message: String },

    /// The command line or the config file asks for something inconsistent.
    #[error("{0}")]
    Usage(String),

    /// A bug or an impossible state; the message says what.
    #[error("internal error: {0}")]
    Internal(String),

    /// Stopped by SIGINT/SIGTERM before anything changed.
    #[error("interrupted before anything changed")]
    Interrupted,
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!(":\n{}", crate::output::escape_control(trimmed))
    }
}

impl Error {
    /// The exit status this error ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config { .. } => Exit::Refused,
            Error::Interrupted => Exit::Interrupted,
            _ => Exit::Environment,
        }
    }

    /// Shorthand for a configuration error at a file and line.
    pub fn config(file: impl Into<PathBuf>, line: u32, message: impl Into<String>) -> Error {
        Error::Config {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}
