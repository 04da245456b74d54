//! A real nginx master in a private prefix, started as our child and stopped by PID on drop.

use super::*;

/// Builder for [`TestNginx`]; see the module header for what the written config holds.
#[derive(Debug, Default, Clone)]
pub struct TestNginxBuilder {
    http: String,
    stream: Option<String>,
    workers: Option<usize>,
    user: Option<String>,
    main: String,
    pid_file: Option<PathBuf>,
    launch: Option<Vec<String>>,
    run_as: Option<(u32, u32)>,
    cwd: Option<PathBuf>,
}

impl TestNginxBuilder {
    /// Directives inside `http {}` (servers, upstreams).
    pub fn http(mut self, body: &str) -> Self {
        self.http = body.to_string();
        self
    }

    /// Load the stream module and put `body` inside `stream {}`.
    pub fn stream(mut self, body: &str) -> Self {
        self.stream = Some(body.to_string());
        self
    }

    /// `worker_processes` (default 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The `user` directive (default: `root` when running as root, none otherwise).
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// Extra directives for the main context.
    pub fn main(mut self, directives: &str) -> Self {
        self.main = directives.to_string();
        self
    }

    /// The `pid` directive's path (default `PREFIX/logs/nginx.pid`), e.g. one shared by two
    /// instances as the build default is.
    pub fn pid_file(mut self, path: &Path) -> Self {
        self.pid_file = Some(path.to_path_buf());
        self
    }

    /// Start nginx with these arguments instead of `-p PREFIX/ -c CONF`; `{conf}` and
    /// `{prefix}` in them are replaced by the instance's paths.
    pub fn launch(mut self, args: &[&str]) -> Self {
        self.launch = Some(args.iter().map(|a| a.to_string()).collect());
        self
    }

    /// Start the master as this uid and gid (not root: nginx then ignores `user`); the prefix
    /// is handed to that user.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.run_as = Some((uid, gid));
        self
    }

    /// Start the master in this directory (its working directory, and its workers' without a
    /// `working_directory`), not the test's.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Write the prefix, start nginx, wait until the control server answers.
    pub fn start(self) -> TestNginx {
        let mut n = self.prepare();
        if let Some((uid, gid)) = n.settings.run_as {
            for sub in ["", "logs", "tmp", "nginx.conf"] {
                std::os::unix::fs::chown(n.prefix.join(sub), Some(uid), Some(gid))
                    .expect("chown the prefix");
            }
        }
        n.spawn();
        n
    }

    /// Write the prefix and nginx.conf but start nothing: an nginx that is not running.
    pub fn prepare(self) -> TestNginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path().to_path_buf();
        for sub in ["logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(sub)).expect("mkdir in the prefix");
        }
        let ip = unique_loopback();
        let ctrl = SocketAddr::new(ip, free_port(ip));
        let n = TestNginx {
            conf: prefix.join("nginx.conf"),
            pid_file: self
                .pid_file
                .clone()
                .unwrap_or_else(|| prefix.join("logs/nginx.pid")),
            error_log: prefix.join("logs/error.log"),
            prefix,
            ctrl,
            settings: self,
            child: None,
            _dir: dir,
        };
        let http = n.settings.http.clone();
        n.write_http(&http);
        n
    }
}

/// A running nginx in a private prefix. Fields are public so tests can point the code under
/// test at them.
pub struct TestNginx {
    /// The prefix (`-p`), a tempdir removed on drop.
    pub prefix: PathBuf,
    /// `PREFIX/nginx.conf` (`-c`).
    pub conf: PathBuf,
    pub pid_file: PathBuf,
    pub error_log: PathBuf,
    /// The control server: `GET /__ready` answers 200 through a worker.
    pub ctrl: SocketAddr,
    settings: TestNginxBuilder,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl TestNginx {
    /// A builder with an empty `http {}` (plus the control server).
    pub fn builder() -> TestNginxBuilder {
        TestNginxBuilder::default()
    }

    /// Start with this `http {}` body.
    pub fn start(http: &str) -> TestNginx {
        Self::builder().http(http).start()
    }

    /// The master's pid.
    pub fn master_pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The whole nginx.conf for an `http {}` body (and the builder's other settings).
    pub fn render(&self, http: &str) -> String {
        let p = self.prefix.display();
        let s = &self.settings;
        let root = unsafe { libc::geteuid() } == 0;
        let user = match &s.user {
            Some(u) => format!("user {u};\n"),
            None if root => "user root;\n".to_string(),
            None => String::new(),
        };
        let (module, stream) = match &s.stream {
            Some(body) => (
                format!("load_module {STREAM_MODULE};\n"),
                format!("stream {{\n{body}\n}}\n"),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            "{module}{user}daemon off;\nmaster_process on;\nworker_processes {w};\n\
             pid {pid};\nerror_log {p}/logs/error.log notice;\n{main}\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {p}/logs/access.log;\n  client_body_temp_path {p}/tmp/body;\n  \
             proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n  \
             uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n  \
             server {{ listen {ctrl}; location = /__ready {{ return 200 \"ready\"; }} }}\n\
             {http}\n}}\n{stream}",
            w = s.workers.unwrap_or(1),
            main = s.main,
            ctrl = self.ctrl,
            pid = self.pid_file.display(),
        )
    }

    /// Rewrite nginx.conf with a new `http {}` body; nothing is reloaded.
    pub fn write_http(&self, http: &str) {
        std::fs::write(&self.conf, self.render(http)).expect("write nginx.conf");
    }

    /// `nginx -t -q` on this prefix's nginx.conf (nothing is started): whether it passed, and
    /// what it printed.
    pub fn test(&self) -> (bool, String) {
        let out = Command::new(NGINX)
            .args(["-t", "-q"])
            .args(self.flags())
            .stdin(Stdio::null())
            .output()
            .expect("run nginx -t");
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.success(), said)
    }

    /// The error log so far.
    pub fn error_log_text(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// Argv flags for this instance: `-p PREFIX/ -c CONF`.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "-p".into(),
            format!("{}/", self.prefix.display()),
            "-c".into(),
            self.conf.display().to_string(),
        ]
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.prefix.join("logs/stderr.log")).expect("stderr log");
        let prefix = format!("{}/", self.prefix.display());
        let conf = self.conf.display().to_string();
        let args = match &self.settings.launch {
            Some(args) => args
                .iter()
                .map(|a| a.replace("{conf}", &conf).replace("{prefix}", &prefix))
                .collect(),
            None => self.flags(),
        };
        let mut cmd = Command::new(NGINX);
        if let Some((uid, gid)) = self.settings.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        if let Some(dir) = &self.settings.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/nginx");
        self.child = Some(child);
        let want = self.settings.workers.unwrap_or(1);
        let ready = wait_for(Duration::from_secs(10), || {
            http_get(self.ctrl, "ctrl", "/__ready").is_ok_and(|(s, _)| s == 200)
                && self.ready_workers().len() == want
        });
        if !ready {
            let stderr = std::fs::read_to_string(self.prefix.join("logs/stderr.log"));
            panic!(
                "nginx did not start serving on {}; stderr: {stderr:?}; error.log: {}\nconfig:\n{}",
                self.ctrl,
                self.error_log_text(),
                std::fs::read_to_string(&self.conf).unwrap_or_default()
            );
        }
    }

    /// The master's worker pids right now (from /proc: children of the master titled `nginx:
    /// worker process`, ready or shutting down). Cache manager and loader children are not
    /// workers: the loader exits on its own a while after start, which would look like a reload.
    pub fn worker_pids(&self) -> Vec<i32> {
        let master = self.master_pid();
        if master <= 1 {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                        == Some(master)
                })
            })
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"nginx: worker process"))
            })
            .collect()
    }
}

impl TestNginx {
    /// Workers whose title says they accept connections (`nginx: worker process`).
    pub fn ready_workers(&self) -> Vec<i32> {
        self.worker_pids()
            .into_iter()
            .filter(|w| {
                std::fs::read(format!("/proc/{w}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c).trim_end_matches('\0') == "nginx: worker process"
                })
            })
            .collect()
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        self.stop();
    }
}

impl TestNginx {
    /// Start a stopped instance again, on the files now on disk.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nginx is still running");
        self.spawn();
    }

    /// Stop nginx by PID (its prefix stays until drop): an instance that is not running.
    pub fn stop(&mut self) {
        // Workers are listed while the master is still ours to ask about.
        let workers = self.worker_pids();
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let exited = wait_for(Duration::from_secs(5), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        for w in workers {
            let gone = wait_for(Duration::from_secs(2), || !alive(w));
            if !gone && w > 1 {
                // SAFETY: a worker of our own nginx that outlived its master.
                unsafe { libc::kill(w, libc::SIGKILL) };
            }
        }
    }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}
