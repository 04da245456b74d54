//! The shadow nginx: the candidate configuration running in a throwaway nginx before the real
//! one is signalled, so the requests verification would send after the reload can be sent
//! first, where no client sees their answers.
//!
//! The copy lives in a private temporary directory (`conf` rewrites each file: every `listen`
//! onto a free loopback port or a socket in the directory, every written path into it), and the
//! master runs in its own process group with `daemon off`, one worker, the candidate's `user`,
//! and a parent-death signal, so it cannot outlive safe-reload. [`Shadow`] owns that process:
//! `stop` (and, as a fallback, `Drop`) sends SIGTERM to the group, waits a grace period,
//! SIGKILLs what is left and reaps the master; only then does the directory go. A lease file in
//! the state directory (`STATE/shadow/PID.json`) names the process and the directory, so a run
//! killed with SIGKILL is cleaned up by the next run, `status` or `recover` (see `lease`).
//! The whole life of a shadow, from the copy to the stop, runs on a thread of its own beside
//! `nginx -t` (see `session`).

mod conf;
mod differs;
mod lease;
mod session;
mod verify;

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) use conf::{edit, EditResult};
pub use conf::{
    remap_listens, shadow_conf, Plan, PortMap, Remapped, ShadowAddr, StandIns, HTTP_TEMP_PATHS,
};
pub use differs::{differs, Differs};
pub use lease::{clean_leftovers, leftovers, Leftover};
pub use session::{Batch, Seen, Session};
pub use verify::{ask_running, judge, run_checks, ShadowCheck, ShadowReport, ShadowState};

use crate::conf::servers::listen_addr;
use crate::conf::targets::Context;
use crate::conf::{ConfFile, Config, ListenAddr};
use crate::error::{Error, Result};
use crate::nginx::BuildInfo;
use crate::reload::{self, Master, WorkerState};

/// What the master logs when a worker exits with status 2 (`NGX_FATAL`: it failed to
/// initialise, e.g. `chdir()` to `working_directory` or `setuid()` to `user`) and is not
/// forked again.
const CANNOT_RESPAWN: &str = "cannot be respawned";

/// Why the shadow is not serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotServing {
    /// Its workers exited at startup and the master will not fork them again: the real nginx's
    /// new workers would do the same on the reload, leaving no process to accept. nginx's
    /// line, with the worker's reason where it logged one.
    WorkersDied(String),
    /// Anything else (it exited, ran out of time, the run was interrupted): no verdict.
    Other(String),
}

/// How long the master has to finish after SIGTERM before the group is killed.
const GRACE: Duration = Duration::from_secs(3);
/// Most plain files (certificates, data files) linked into the copy from the configuration's
/// directory, so relative references to them resolve.
const MAX_LINKED: usize = 20_000;

/// What starting a shadow needs.
pub struct Options<'a> {
    pub binary: &'a Path,
    /// The real prefix (relative `root`, `alias`, `load_module` resolve against it).
    pub prefix: &'a Path,
    pub config: &'a Config,
    pub info: &'a BuildInfo,
    /// Where the lease file goes: `STATE/shadow/`.
    pub state_dir: &'a Path,
    /// The running master's working directory ([`crate::nginx::master_cwd`]): the shadow
    /// starts there, so a relative `working_directory` and relative unix socket paths lead
    /// where the real workers' do. `None`: safe-reload's own.
    pub cwd: Option<&'a Path>,
}

/// Every listen (and whether it is `udp`), each to get a stand-in.
type ListenKeys = BTreeSet<(ListenAddr, bool)>;

/// What starting a shadow takes from the candidate, gathered from its tree on the calling
/// thread (one walk) so that the start itself, copying, rewriting and spawning, can run on a
/// thread of its own. The files' bytes are shared with the candidate, not copied.
pub struct Source {
    binary: PathBuf,
    prefix: PathBuf,
    main: PathBuf,
    conf_prefix: PathBuf,
    files: Vec<ConfFile>,
    state_dir: PathBuf,
    cwd: Option<PathBuf>,
    listens: ListenKeys,
    /// See [`StandIns::add_listen`].
    add_listen: HashSet<(PathBuf, u32)>,
    /// See [`Plan::http_temp`].
    http_temp: Vec<&'static str>,
}

impl Source {
    /// The listens of `o.config`, the servers without a `listen`, and the temp paths its
    /// `http {}` blocks lack.
    pub fn of(o: &Options) -> Source {
        let (listens, add_listen) = listens(o.config);
        let mut http_temp = Vec::new();
        for http in o.config.tree.iter().filter(|d| d.name == "http") {
            for (name, module) in HTTP_TEMP_PATHS {
                let without = format!("--without-{module}_module");
                let set = http.children().iter().any(|c| c.name == name);
                if !set && !o.info.configure_args.contains(&without) && !http_temp.contains(&name) {
                    http_temp.push(name);
                }
            }
        }
        Source {
            binary: o.binary.to_path_buf(),
            prefix: o.prefix.to_path_buf(),
            main: o.config.main.clone(),
            conf_prefix: o.config.conf_prefix.clone(),
            files: o.config.files.clone(),
            state_dir: o.state_dir.to_path_buf(),
            cwd: o.cwd.map(Path::to_path_buf),
            listens,
            add_listen,
            http_temp,
        }
    }

    /// The rewrite plan for a copy in `dir`: each listen given a free loopback port or a
    /// socket path there.
    fn plan(&self, dir: &Path) -> Result<Plan> {
        Ok(Plan {
            listens: StandIns {
                ports: allocate(&self.listens, &dir.join("sock"))?,
                add_listen: self.add_listen.clone(),
            },
            dir: dir.to_path_buf(),
            prefix: self.prefix.clone(),
            conf_prefix: self.conf_prefix.clone(),
            http_temp: self.http_temp.clone(),
        })
    }
}

/// How long a shadow may take to serve: set from the thread that waits for its answer (see
/// [`Shadow::wait_ready`]), as a time and the wait it stands for, which the message names.
#[derive(Debug)]
pub struct Deadline(Mutex<(Instant, Duration)>);

impl Deadline {
    /// `within` from now.
    pub fn after(within: Duration) -> Deadline {
        Deadline(Mutex::new((Instant::now() + within, within)))
    }

    /// Move it to `within` from now.
    pub fn set(&self, within: Duration) {
        if let Ok(mut d) = self.0.lock() {
            *d = (Instant::now() + within, within);
        }
    }

    /// Whether it passed; the wait it stands for.
    fn passed(&self) -> Option<Duration> {
        let (at, within) = *self.0.lock().ok()?;
        (Instant::now() >= at).then_some(within)
    }
}

/// Where the shadow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Spawned; the master is reading the configuration.
    Starting,
    /// The master wrote its pid file and a worker accepts connections.
    Running,
    /// Stopped and reaped (or it exited by itself).
    Stopped,
}

/// A running shadow nginx and its directory. The child is declared before the directory so
/// that, whatever the path out, the process is gone before its files are.
#[derive(Debug)]
pub struct Shadow {
    child: Option<Child>,
    state: State,
    ports: PortMap,
    lease: Option<PathBuf>,
    started: Instant,
    /// How long copying, rewriting and spawning took, and (once serving) how long until then.
    pub spawn_took: Duration,
    pub ready_after: Option<Duration>,
    dir: tempfile::TempDir,
}

impl Shadow {
    /// Copy and rewrite the candidate, choose the ports, record the lease and spawn the
    /// master. Returns as soon as it is spawned; [`Shadow::wait_ready`] waits for it to serve.
    /// The master's parent-death signal follows the calling thread: it must be the one that
    /// stops the shadow (or drops it), as [`Session`]'s does.
    pub fn start(o: &Source) -> Result<Shadow> {
        let started = Instant::now();
        // A run killed with SIGKILL leaves its lease behind: clean those first.
        let _ = clean_leftovers(&o.state_dir);
        let dir = tempfile::Builder::new()
            .prefix(lease::DIR_PREFIX)
            .tempdir()?;
        // Workers run as the candidate's `user`: they must reach the temp and cache paths.
        fs_err::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        for (sub, mode) in [
            ("conf", 0o700),
            ("logs", 0o700),
            ("temp", 0o711),
            ("cache", 0o711),
            ("sock", 0o700),
        ] {
            let p = dir.path().join(sub);
            fs_err::create_dir(&p)?;
            fs_err::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
        let plan = o.plan(dir.path())?;
        write_copy(&o.files, &o.conf_prefix, &plan, &o.state_dir)?;
        let main = plan.copy_of(&o.main);
        let mut shadow = Shadow {
            child: None,
            state: State::Starting,
            ports: plan.listens.ports.clone(),
            lease: None,
            started,
            spawn_took: Duration::ZERO,
            ready_after: None,
            dir,
        };
        shadow.lease = lease::write(
            &o.state_dir,
            &lease::Lease::new(shadow.dir.path(), shadow.ports.rows(), None),
        )?;
        shadow.child = Some(spawn(
            &o.binary,
            shadow.dir.path(),
            &main,
            o.cwd.as_deref(),
        )?);
        let master = shadow.master_pid();
        lease::write(
            &o.state_dir,
            &lease::Lease::new(shadow.dir.path(), shadow.ports.rows(), Some(master)),
        )?;
        shadow.spawn_took = started.elapsed();
        crate::store::test_pause("shadow-started");
        Ok(shadow)
    }

    /// The master's pid (also its process group).
    pub fn master_pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The production listens and the shadow's stand-ins.
    pub fn ports(&self) -> &PortMap {
        &self.ports
    }

    /// The one error log every `error_log` of the copy writes to.
    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("logs/error.log")
    }

    /// The directory of the copy.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// When `start` was called.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Since `start` was called.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Wait until the master has written its pid file and a worker accepts connections, at
    /// most until `deadline`, which another thread may move. `Err` says why it is not serving:
    /// its workers died at startup (a verdict: the real nginx's would too, see
    /// [`NotServing`]), it exited (with nginx's message), the time ran out, or safe-reload was
    /// interrupted.
    pub fn wait_ready(&mut self, deadline: &Deadline) -> std::result::Result<(), NotServing> {
        let other = NotServing::Other;
        let pid_file = self.dir.path().join("nginx.pid");
        let master = Master {
            pid: self.master_pid(),
        };
        loop {
            if self.state == State::Running {
                return Ok(());
            }
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(status.to_string()),
                Some(Err(e)) => Some(e.to_string()),
                None => Some("it was not started".into()),
            };
            if let Some(how) = exited {
                self.state = State::Stopped;
                return Err(other(format!(
                    "it exited ({how}) before serving{}",
                    self.why()
                )));
            }
            let written = pid_file.exists();
            let serving = written
                && reload::workers(&master)
                    .iter()
                    .any(|w| w.state == WorkerState::Ready);
            if serving {
                self.state = State::Running;
                self.ready_after = Some(self.started.elapsed());
                continue;
            }
            if let Some(died) = written.then(|| self.workers_died()).flatten() {
                return Err(NotServing::WorkersDied(died));
            }
            if crate::signals::interrupted() {
                return Err(other("safe-reload was interrupted".into()));
            }
            if let Some(within) = deadline.passed() {
                return Err(other(format!(
                    "it was not serving after {}",
                    humantime::format_duration(Duration::from_millis(within.as_millis() as u64))
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The master's `[alert] worker process N exited with fatal code 2 and cannot be
    /// respawned`, after the worker's own `[emerg]`/`[alert]` saying why (`chdir(...) failed`,
    /// `setuid(...) failed`) where it logged one, when a worker died initialising; `None`
    /// while none has.
    fn workers_died(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.error_log()).ok()?;
        let copy = self.dir.path().join("conf");
        let text = crate::nginx::map_paths(&text, &copy, Path::new("/"));
        let messages = crate::nginx::parse_messages(&text);
        let at = messages
            .iter()
            .position(|m| m.text.contains(CANNOT_RESPAWN))?;
        let cause = messages[..at]
            .iter()
            .rev()
            .find(|m| m.level <= crate::nginx::Level::Alert)
            .map(|m| format!("{}; ", m.text))
            .unwrap_or_default();
        Some(format!("{cause}{}", messages[at].text))
    }

    /// nginx's first `[emerg]`/`[alert]` in the shadow's stderr or error log, as `: TEXT`,
    /// with the copy's paths shown as the candidate's files.
    fn why(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let text = read(self.dir.path().join("logs/stderr.log")) + &read(self.error_log());
        let copy = self.dir.path().join("conf");
        let text = crate::nginx::map_paths(&text, &copy, Path::new("/"));
        crate::nginx::parse_messages(&text)
            .into_iter()
            .find(|m| m.level <= crate::nginx::Level::Alert)
            .map(|m| format!(": {}", m.text))
            .unwrap_or_default()
    }

    /// Stop the group (SIGTERM, a grace period, SIGKILL), reap the master, remove the lease;
    /// the directory goes with `self`. Returns how long stopping took.
    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        self.shutdown();
        t.elapsed()
    }

    fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_group(&mut child);
        }
        self.state = State::Stopped;
        if let Some(lease) = self.lease.take() {
            let _ = std::fs::remove_file(lease);
        }
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// SIGTERM to the child's process group, up to [`GRACE`] for the master to exit, SIGKILL to
/// whatever of the group is left (while the unreaped master still holds the group id, so the
/// id cannot have been reused), then reap it.
fn stop_group(child: &mut Child) {
    let pid = child.id() as i32;
    if matches!(child.try_wait(), Ok(None)) {
        // SAFETY: signalling the process group we created for our own child.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        let end = Instant::now() + GRACE;
        while !exited_unreaped(pid) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: as above; the master is not reaped yet, so the group id is still ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

/// Whether the child `pid` has exited, without reaping it.
fn exited_unreaped(pid: i32) -> bool {
    // SAFETY: waitid with WNOWAIT only inspects our own child; the struct is zeroed first.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r != 0 || info.si_pid() != 0
    }
}

/// How much lower the shadow's scheduling priority is than safe-reload's: on a busy machine
/// the production nginx's workers (and `nginx -t`) go first.
const NICE: libc::c_int = 5;

/// Spawn the master: its own process group, `daemon off`, one worker, pid and lock file in
/// the directory, the startup log to a file there; SIGTERM when safe-reload dies; [`NICE`]
/// steps nicer (its workers inherit it, unless the candidate sets `worker_priority`).
fn spawn(binary: &Path, dir: &Path, main: &Path, cwd: Option<&Path>) -> Result<Child> {
    let q = |p: PathBuf| conf::word(&p.to_string_lossy());
    let globals = format!(
        "daemon off; master_process on; worker_processes 1; pid {}; lock_file {};",
        q(dir.join("nginx.pid")),
        q(dir.join("nginx.lock")),
    );
    let log = fs_err::File::create(dir.join("logs/stderr.log"))?;
    let mut cmd = Command::new(binary);
    cmd.arg("-p")
        .arg(format!("{}/", dir.display()))
        .arg("-c")
        .arg(main)
        .arg("-e")
        .arg(dir.join("logs/error.log"))
        .arg("-g")
        .arg(&globals)
        // nginx takes listening sockets named in $NGINX as inherited (binary upgrade): the
        // shadow must never take over one of the real nginx's sockets.
        .env_remove("NGINX")
        .current_dir(cwd.filter(|c| c.is_dir()).unwrap_or(Path::new(".")))
        .stdin(Stdio::null())
        .stdout(log.file().try_clone()?)
        .stderr(log.into_parts().0)
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (prctl, getppid, nice: a system call) without allocating.
    unsafe {
        cmd.pre_exec(move || {
            // Delivered when the thread that spawned us ends: the shadow's own thread ends
            // only after reaping it, so this is when safe-reload dies, even by SIGKILL. The
            // master then shuts its workers down.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Best effort: a shadow at the same priority is still a shadow.
            libc::nice(NICE);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| Error::Command {
        command: format!(
            "{} -p {}/ -c {} -g {globals}",
            binary.display(),
            dir.display(),
            main.display()
        ),
        status: "could not start".into(),
        stderr: e.to_string(),
    })
}

/// A stand-in for every listen of `config`: a free loopback port, or a socket in `sock_dir`;
/// a server of `http` without a `listen` gets the stand-in of `*:80`, nginx's default.
pub fn stand_ins(config: &Config, sock_dir: &Path) -> Result<StandIns> {
    let (keys, add_listen) = listens(config);
    Ok(StandIns {
        ports: allocate(&keys, sock_dir)?,
        add_listen,
    })
}

/// Every listen of `config` (and whether it is `udp`), each to get a stand-in, and the
/// servers of `http` without a `listen` (file, line), which get `*:80`'s.
fn listens(config: &Config) -> (ListenKeys, HashSet<(PathBuf, u32)>) {
    let mut keys = ListenKeys::new();
    for d in config.walk().filter(|d| d.name == "listen") {
        if let Some(addr) = listen_addr(Context::Http, d.arg0()) {
            keys.insert((addr, d.args.iter().any(|a| a == "udp")));
        }
    }
    let mut add_listen = HashSet::new();
    for http in config.tree.iter().filter(|d| d.name == "http") {
        for server in http.children().iter().filter(|d| d.name == "server") {
            if server.block.is_some() && !server.children().iter().any(|c| c.name == "listen") {
                add_listen.insert((server.file.to_path_buf(), server.line));
                let any80 = ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 80)));
                keys.insert((any80, false));
            }
        }
    }
    (keys, add_listen)
}

/// A free loopback port (or a socket path) for each listen. Every chosen socket stays bound
/// until all are chosen, so no two listens get the same port.
fn allocate(keys: &ListenKeys, sock_dir: &Path) -> Result<PortMap> {
    let mut ports = PortMap::default();
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    for (i, (addr, udp)) in keys.iter().enumerate() {
        let ip = match addr {
            ListenAddr::Unix(_) => {
                let to = ShadowAddr::Unix(sock_dir.join(format!("{i}.sock")));
                ports.insert(addr.clone(), *udp, to);
                continue;
            }
            ListenAddr::Tcp(sa) if sa.is_ipv6() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let any = SocketAddr::new(ip, 0);
        let bound = if *udp {
            UdpSocket::bind(any).and_then(|s| {
                let a = s.local_addr()?;
                held.push(Box::new(s));
                Ok(a)
            })
        } else {
            TcpListener::bind(any).and_then(|s| {
                let a = s.local_addr()?;
                held.push(Box::new(s));
                Ok(a)
            })
        };
        let at = bound.map_err(|e| {
            Error::Usage(format!(
                "no free loopback port on {ip} for listen {addr}: {e}"
            ))
        })?;
        ports.insert(addr.clone(), *udp, ShadowAddr::Inet(at));
    }
    Ok(ports)
}

/// Write each rewritten file into the copy, then link the configuration directory's other
/// files (certificates, data files) so relative references resolve. The copies come first,
/// into directories created here, so no write can follow a link out of the directory.
fn write_copy(files: &[ConfFile], conf_prefix: &Path, plan: &Plan, state_dir: &Path) -> Result<()> {
    let mut copied = HashSet::new();
    for file in files {
        let to = plan.copy_of(&file.path);
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&to, shadow_conf(file, plan)?)?;
        copied.insert(to);
    }
    let mut links = Links {
        copied,
        // Snapshots are no configuration, and may be many.
        skip: std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf()),
        budget: MAX_LINKED,
    };
    link_plain_files(conf_prefix, plan, &mut links);
    Ok(())
}

/// What linking plain files knows: the copies made, what to leave out, how many links remain.
struct Links {
    copied: HashSet<PathBuf>,
    skip: PathBuf,
    budget: usize,
}

/// Best effort: a file that cannot be linked only matters if the configuration reads it,
/// and then the shadow says so when it starts.
fn link_plain_files(dir: &Path, plan: &Plan, links: &mut Links) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if links.budget == 0 {
            return;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if entry.file_name() == ".git" || path == links.skip || path == plan.dir {
            continue;
        }
        let to = plan.copy_of(&path);
        if kind.is_dir() {
            if std::fs::create_dir_all(&to).is_ok() {
                link_plain_files(&path, plan, links);
            }
        } else if !links.copied.contains(&to) && !to.exists() {
            links.budget -= 1;
            let _ = std::os::unix::fs::symlink(&path, &to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listen_gets_its_own_port_and_sockets_go_into_the_directory() {
        let keys = BTreeSet::from([
            (ListenAddr::Tcp("0.0.0.0:80".parse().unwrap()), false),
            (ListenAddr::Tcp("0.0.0.0:80".parse().unwrap()), true),
            (ListenAddr::Tcp("10.0.0.1:80".parse().unwrap()), false),
            (ListenAddr::Unix("/run/x.sock".into()), false),
        ]);
        let ports = allocate(&keys, Path::new("/s/sock")).unwrap();
        let rows = ports.rows();
        assert_eq!(rows.len(), 4);
        let tcp: Vec<&str> = rows.iter().map(|r| r.shadow.as_str()).collect();
        assert_ne!(tcp[0], tcp[2]);
        assert!(tcp.contains(&"unix:/s/sock/3.sock"), "{tcp:?}");
        assert!(rows
            .iter()
            .all(|r| r.shadow.starts_with("127.0.0.1:") || r.shadow.starts_with("unix:")));
    }
}
