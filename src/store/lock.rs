//! The run lock: one safe-reload run at a time per state directory.
//!
//! `flock(2)` (through `std::fs::File::lock`) ties the lock to the open file, so the kernel drops
//! it when the holder dies, however it dies: no stale pid files to second-guess. The holder
//! writes its pid, command line and start time into the lock file only so that a second run can
//! say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::atomic::io_err;
use super::{command_line, now_rfc3339, Store};
use crate::error::{Error, Result};

/// Holds the run lock until dropped.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
}

impl LockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Best effort: a stale holder line is harmless, the lock itself goes with the file.
        let _ = self.file.set_len(0);
    }
}

/// How long a run that finds the lock held waits for the holder's line to appear.
const HOLDER_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    command: String,
    started: String,
}

impl Store {
    /// Takes the run lock. Without `wait`, a held lock is `Error::LockHeld` naming the holder;
    /// with `wait`, blocks until it is free, at most `timeout` when given.
    pub fn lock(&self, wait: bool, timeout: Option<Duration>) -> Result<LockGuard> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err(&path, "open the lock file", e))?;
        match (wait, timeout) {
            (true, None) => file.lock().map_err(|e| io_err(&path, "lock", e))?,
            (true, Some(limit)) => poll_lock(&file, &path, Instant::now() + limit)?,
            (false, _) => try_once(&file, &path)?,
        }
        write_holder(&file, &path)?;
        Ok(LockGuard { file, path })
    }
}

impl Store {
    /// The run that holds the lock now, in words (`pid N, started T, running `...``), read
    /// without taking it: the kernel's table of `flock` locks (`/proc/locks`) names the pid
    /// that holds the lock file's inode, and the file the holder's line. `None` when no
    /// other process holds it.
    pub fn run_in_progress(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let path = self.root.join("lock");
        let inode = std::fs::metadata(&path).ok()?.ino();
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let own = std::process::id();
        let pid = locks.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (kind, pid, at) = (f.get(1)?, f.get(4)?, f.get(5)?);
            let ino: u64 = at.rsplit(':').next()?.parse().ok()?;
            let pid: u32 = pid.parse().ok()?;
            (*kind == "FLOCK" && ino == inode && pid != own).then_some(pid)
        })?;
        Some(match read_holder(&path).filter(|h| h.pid == pid) {
            Some(h) => h.to_string(),
            None => format!("pid {pid}"),
        })
    }
}

fn try_once(file: &File, path: &Path) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(held(path)),
        Err(TryLockError::Error(e)) => Err(io_err(path, "lock", e)),
    }
}

/// `flock` has no timeout, so a bounded wait polls, backing off to 100 ms between tries.
fn poll_lock(file: &File, path: &Path, deadline: Instant) -> Result<()> {
    let mut pause = Duration::from_millis(5);
    loop {
        match try_once(file, path) {
            Err(Error::LockHeld { .. }) if Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// The holder writes its line right after `flock` succeeds, so a run that finds the lock held
/// may read the file in between: it reads again for a short while before saying "unknown".
fn held(path: &Path) -> Error {
    let deadline = Instant::now() + HOLDER_WAIT;
    let mut found = read_holder(path);
    while found.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        found = read_holder(path);
    }
    let holder = found.map_or_else(|| "holder unknown".to_string(), |h| h.to_string());
    Error::LockHeld {
        path: path.to_path_buf(),
        holder,
    }
}

/// The holder's line in the lock file, once it is there.
fn read_holder(path: &Path) -> Option<Holder> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl std::fmt::Display for Holder {
    /// `pid N, started T, running `safe-reload reload -y``.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Holder {
            pid,
            started,
            command,
        } = self;
        write!(f, "pid {pid}, started {started}, running `{command}`")
    }
}

fn write_holder(file: &File, path: &Path) -> Result<()> {
    let holder = Holder {
        pid: std::process::id(),
        command: command_line(),
        started: now_rfc3339(),
    };
    let mut text = serde_json::to_vec(&holder).unwrap_or_default();
    text.push(b'\n');
    // Written before the old length is cut, so no reader sees an empty file in between.
    file.write_all_at(&text, 0)
        .and_then(|()| file.set_len(text.len() as u64))
        .and_then(|()| (&*file).flush())
        .map_err(|e| io_err(path, "write the holder into", e))
}
