//! Running the two reload sequences against a real nginx: the unsafe manual one
//! (`nginx -t && nginx -s reload`, then watching `/proc` until it is in effect) and
//! `safe-reload -y`, with its peak memory sampled from `/proc` while it runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use safe_reload::reload::{self, Master, Worker, WorkerState};

use crate::tree::Tree;

pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx master, our child, stopped by pid on drop.
pub struct Nginx {
    child: Child,
    pub master: Master,
    pub workers: usize,
}

/// Poll `cond` every millisecond until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

impl Nginx {
    pub fn start(tree: &Tree, workers: usize) -> Result<Nginx, String> {
        let log = std::fs::File::create(tree.prefix.join("logs/stderr.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(NGINX)
            .args(tree.flags())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start nginx: {e}"))?;
        let master = Master {
            pid: child.id() as i32,
        };
        let mut n = Nginx {
            child,
            master,
            workers,
        };
        let pid_file = tree.prefix.join("logs/nginx.pid");
        if !wait_for(Duration::from_secs(120), || {
            pid_file.exists() && n.settled()
        }) {
            let err =
                fs_err::read_to_string(tree.prefix.join("logs/stderr.log")).unwrap_or_default();
            let _ = n.child.kill();
            return Err(format!("nginx did not start: {err}"));
        }
        Ok(n)
    }

    /// Exactly the configured number of workers, all accepting, none draining.
    pub fn settled(&self) -> bool {
        let w = reload::workers(&self.master);
        w.len() == self.workers && w.iter().all(|w| w.state == WorkerState::Ready)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let workers = reload::workers(&self.master);
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.master.pid, libc::SIGQUIT) };
        if !wait_for(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for w in workers {
            if !wait_for(Duration::from_secs(2), || !alive(w.pid)) {
                // SAFETY: a worker of our own nginx that outlived its master.
                unsafe { libc::kill(w.pid, libc::SIGKILL) };
            }
        }
    }
}

fn alive(pid: i32) -> bool {
    fs_err::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// The reload is in effect: `want` new workers accept, no old one does.
fn in_effect(master: &Master, before: &[Worker], want: usize) -> bool {
    let now = reload::workers(master);
    let old = |w: &Worker| {
        before
            .iter()
            .any(|b| b.pid == w.pid && b.start_ticks == w.start_ticks)
    };
    let new_ready = now
        .iter()
        .filter(|w| !old(w) && w.state == WorkerState::Ready)
        .count();
    let old_ready = now
        .iter()
        .filter(|w| old(w) && w.state == WorkerState::Ready)
        .count();
    new_ready >= want && old_ready == 0
}

/// `nginx -t && nginx -s reload`, timed until new workers serve and old ones stop accepting.
/// Returns the total and the `nginx -t` part.
pub fn unsafe_manual(tree: &Tree, nginx: &Nginx) -> Result<(Duration, Duration), String> {
    let before = reload::workers(&nginx.master);
    let start = Instant::now();
    let status = |args: &[&str]| {
        Command::new(NGINX)
            .args(args)
            .args(tree.flags())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())
    };
    if !status(&["-t", "-q"])?.success() {
        return Err("nginx -t failed".into());
    }
    let test = start.elapsed();
    if !status(&["-s", "reload"])?.success() {
        return Err("nginx -s reload failed".into());
    }
    if !wait_for(Duration::from_secs(120), || {
        in_effect(&nginx.master, &before, nginx.workers)
    }) {
        return Err("the manual reload did not take effect in 120 s".into());
    }
    Ok((start.elapsed(), test))
}

/// One safe-reload run: wall time, exit status, the JSON report, and peak RSS in KiB (VmHWM
/// sampled every millisecond: it only grows, so the last sample is the peak within 1 ms).
pub struct SafeRun {
    pub wall: Duration,
    pub code: Option<i32>,
    pub report: serde_json::Value,
    pub peak_kb: u64,
    /// The shadow nginx's master (found through the run's lease file), peak RSS in KiB; 0 when
    /// no shadow ran.
    pub shadow_peak_kb: u64,
}

pub fn safe_reload(bin: &Path, tree: &Tree, extra: &[&str]) -> Result<SafeRun, String> {
    let start = Instant::now();
    let out_path = tree.prefix.join("logs/safe-reload.json");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    // `BENCH_WRAP="strace -f -tt -o FILE"` runs safe-reload under a tracer, for diagnosis only
    // (peak memory then is the tracer's).
    let wrap: Vec<String> = std::env::var("BENCH_WRAP")
        .ok()
        .and_then(|w| shlex::split(&w))
        .unwrap_or_default();
    let mut argv = wrap
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([bin.as_os_str()]);
    let program = argv.next().unwrap_or(bin.as_os_str());
    let mut child = Command::new(program)
        .args(argv)
        .args(extra)
        .args(["--nginx", NGINX, "--color", "never", "--state-dir"])
        .arg(tree.prefix.join("state"))
        .args(tree.flags())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    let status_path = format!("/proc/{}/status", child.id());
    let lease = tree
        .prefix
        .join(format!("state/shadow/{}.json", child.id()));
    let mut shadow: Option<String> = None;
    let (mut peak_kb, mut shadow_peak_kb) = (0, 0);
    let code = loop {
        if let Some(kb) = vm_hwm(&status_path) {
            peak_kb = peak_kb.max(kb);
        }
        if shadow.is_none() {
            shadow = shadow_master(&lease).map(|pid| format!("/proc/{pid}/status"));
        }
        if let Some(kb) = shadow.as_deref().and_then(vm_hwm) {
            shadow_peak_kb = shadow_peak_kb.max(kb);
        }
        match child.try_wait() {
            Ok(Some(s)) => break s.code(),
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let wall = start.elapsed();
    let text = fs_err::read_to_string(&out_path).unwrap_or_default();
    // Only a run given `--json` leaves a report to read; otherwise keep the text for errors.
    let report = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok(SafeRun {
        wall,
        code,
        report,
        peak_kb,
        shadow_peak_kb,
    })
}

/// The shadow master's pid from a run's lease, once the run has recorded it.
fn shadow_master(lease: &Path) -> Option<i64> {
    let text = std::fs::read(lease).ok()?;
    serde_json::from_slice::<serde_json::Value>(&text).ok()?["master"].as_i64()
}

fn vm_hwm(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A step's time from a safe-reload JSON report, in ms (the first step of that name).
pub fn step_ms(report: &serde_json::Value, name: &str) -> Option<f64> {
    report["steps"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["elapsed_ms"]
        .as_f64()
}
