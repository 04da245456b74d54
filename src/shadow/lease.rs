//! The lease: `STATE/shadow/PID.json`, written before the shadow is spawned and updated with
//! its master's pid right after, removed when it stops. A lease whose owner (the safe-reload
//! run, named by pid and start time) is gone is a leftover: the parent-death signal has
//! normally taken the master down already, and what is left is its directory; cleaning stops
//! the master's group if it still runs (checked by pid and start time, so a reused pid is never
//! signalled) and removes the directory and the lease.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::conf::Remapped;
use crate::error::Result;
use crate::reload;

/// How a shadow directory's name starts (in the system temp directory); nothing else is ever
/// removed as a leftover.
pub const DIR_PREFIX: &str = "safe-reload-shadow.";

/// What the lease file records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    pub owner: i32,
    pub owner_started: u64,
    #[serde(default)]
    pub master: Option<i32>,
    #[serde(default)]
    pub master_started: Option<u64>,
    pub dir: PathBuf,
    #[serde(default)]
    pub listens: Vec<Remapped>,
    /// The state directory whose `shadow/` holds the lease (set when it is written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

impl Lease {
    /// This process's lease for a shadow in `dir`.
    pub fn new(dir: &Path, listens: Vec<Remapped>, master: Option<i32>) -> Lease {
        let owner = std::process::id() as i32;
        Lease {
            owner,
            owner_started: reload::started(owner).map_or(0, |s| s.0),
            master,
            master_started: master.and_then(reload::started).map(|s| s.0),
            dir: dir.to_path_buf(),
            listens,
            state_dir: None,
        }
    }
}

/// A shadow whose run is gone.
#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    /// The lease file.
    pub lease: PathBuf,
    /// The pid of the run that started it.
    pub owner: i32,
    /// The shadow's master, when it still runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<i32>,
    pub dir: PathBuf,
}

fn lease_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("shadow")
}

/// Write (or replace) this run's lease atomically: in the shadow's own directory, and in
/// `STATE/shadow/` (its path) when the state directory takes it. A state directory that is
/// read-only or full (`check` in a hook) does not keep the shadow from running: a leftover
/// is found from its own directory too, and nothing half-written is left there.
pub fn write(state_dir: &Path, lease: &Lease) -> Result<Option<PathBuf>> {
    use std::os::unix::fs::DirBuilderExt;
    let lease = Lease {
        state_dir: Some(state_dir.to_path_buf()),
        ..lease.clone()
    };
    let text = serde_json::to_vec_pretty(&lease).map_err(|e| {
        crate::error::Error::Internal(format!("cannot write the shadow's lease: {e}"))
    })?;
    // The copy in the shadow's own directory: a leftover is found from there when the state
    // directory that held the lease is gone (removed, or another one's) or never took it.
    let inside = lease.dir.join(INSIDE);
    let tmp = lease.dir.join(format!(".{INSIDE}.tmp"));
    fs_err::write(&tmp, &text)?;
    fs_err::rename(&tmp, &inside)?;
    let dir = lease_dir(state_dir);
    let path = dir.join(format!("{}.json", lease.owner));
    let tmp = dir.join(format!(".{}.json.tmp", lease.owner));
    let written = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .and_then(|_| std::fs::write(&tmp, &text))
        .and_then(|_| std::fs::rename(&tmp, &path));
    match written {
        Ok(()) => Ok(Some(path)),
        Err(_) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(None)
        }
    }
}

/// The copy of the lease inside the shadow's directory.
const INSIDE: &str = "lease.json";

/// Shadow directories in the system temp directory whose own lease names a run that is gone
/// and a state directory that no longer holds that lease (removed, or cleaned by hand): no
/// run of any state directory would find them otherwise.
fn orphans() -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    (entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(DIR_PREFIX))
        .filter_map(|e| {
            let path = e.path().join(INSIDE);
            let lease = read(&path)?;
            let held = lease.state_dir.as_ref().is_none_or(|state| {
                lease_dir(state)
                    .join(format!("{}.json", lease.owner))
                    .exists()
            });
            (!held).then(|| leftover(path, lease)).flatten()
        })
        .collect()
}

fn read(path: &Path) -> Option<Lease> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The leftover the lease at `path` describes, when its owner is gone.
fn leftover(path: PathBuf, lease: Lease) -> Option<Leftover> {
    let owner_alive =
        reload::started(lease.owner).is_some_and(|(t, alive)| alive && t == lease.owner_started);
    (!owner_alive).then(|| Leftover {
        lease: path,
        owner: lease.owner,
        running: master_alive(&lease),
        dir: lease.dir,
    })
}

/// Leases whose owner no longer runs, oldest pid first: the state directory's, then shadow
/// directories whose own copy of the lease is all that is left of their run.
pub fn leftovers(state_dir: &Path) -> Vec<Leftover> {
    let mut out: Vec<Leftover> = match std::fs::read_dir(lease_dir(state_dir)) {
        Ok(entries) => (entries.flatten())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| leftover(e.path(), read(&e.path())?))
            .collect(),
        Err(_) => Vec::new(),
    };
    for orphan in orphans() {
        if !out.iter().any(|l| l.dir == orphan.dir) {
            out.push(orphan);
        }
    }
    out.sort_by_key(|l| l.owner);
    out
}

/// The master named by the lease, if that very process still runs.
fn master_alive(lease: &Lease) -> Option<i32> {
    let pid = lease.master?;
    let (started, alive) = reload::started(pid)?;
    (alive && Some(started) == lease.master_started).then_some(pid)
}

/// Stop and remove every leftover; one line per leftover saying what was done.
pub fn clean_leftovers(state_dir: &Path) -> Vec<String> {
    leftovers(state_dir).iter().map(clean).collect()
}

fn clean(l: &Leftover) -> String {
    let mut said = Vec::new();
    if let Some(pid) = l.running {
        // SAFETY: the group of a master verified by pid and start time to be the one the lease
        // names; it was started in a group of its own.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let end = Instant::now() + super::GRACE;
        while reload::started(pid).is_some_and(|s| s.1) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: as above; SIGKILL for whatever of the group outlived the grace period.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        said.push(format!("stopped its nginx master (pid {pid})"));
    }
    let ours = l
        .dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(DIR_PREFIX))
        && l.dir.is_absolute();
    if ours && l.dir.exists() && std::fs::remove_dir_all(&l.dir).is_ok() {
        said.push(format!("removed {}", l.dir.display()));
    }
    let _ = std::fs::remove_file(&l.lease);
    format!(
        "a shadow nginx left by safe-reload pid {} was cleaned up{}",
        l.owner,
        if said.is_empty() {
            String::new()
        } else {
            format!(": {}", said.join(", "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_of_a_live_run_is_not_a_leftover_and_a_dead_one_is_cleaned() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .unwrap();
        let mine = Lease::new(dir.path(), Vec::new(), None);
        write(state.path(), &mine).unwrap();
        assert!(leftovers(state.path()).is_empty());
        let dead = Lease {
            owner: i32::MAX - 1,
            ..mine
        };
        let path = write(state.path(), &dead)
            .unwrap()
            .expect("the state dir takes the lease");
        let left = leftovers(state.path());
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].running, None);
        let said = clean_leftovers(state.path());
        assert!(said[0].contains("removed"), "{said:?}");
        assert!(!path.exists() && !dir.path().exists());
    }
}
