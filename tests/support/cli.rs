//! Driving the built `safe-reload` binary against a [`TestNginx`]: the flags that point it at
//! the private prefix and a private state directory, and the run's exit status, stdout, stderr
//! and parsed `--json` report.

use super::*;

/// The binary under test, built by cargo for integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_safe-reload");

/// One finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(out: std::process::Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let code = out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        let run = Run {
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !run.stderr.contains("panicked") && !run.stdout.contains("panicked"),
            "safe-reload panicked:\n{run}"
        );
        run
    }

    /// The `--json` report on stdout.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self}"))
    }

    /// The report's `outcome`.
    pub fn outcome(&self) -> String {
        self.json()["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Assert the exit status and, for `--json` runs, that the report says the same.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit status:\n{self}");
        if self.stdout.trim_start().starts_with('{') {
            assert_eq!(self.json()["exit_code"], code, "report exit_code:\n{self}");
        }
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A private state directory and settings file, and the flags pointing the binary at one nginx.
pub struct SafeReload {
    /// `--state-dir` (created by the binary on first use).
    pub state: PathBuf,
    conf: PathBuf,
    prefix: Option<PathBuf>,
    settings: PathBuf,
    _dir: tempfile::TempDir,
    /// `TMPDIR` of its runs: the shadows they start, and the leftovers `status` and `recover`
    /// look for there, are this test's alone (a parallel test's `recover` removes the orphans
    /// it finds in its temp directory). World-traversable: the shadow's workers run as
    /// `nobody` under root.
    tmp: tempfile::TempDir,
}

impl SafeReload {
    /// For a running [`TestNginx`].
    pub fn new(nginx: &TestNginx) -> SafeReload {
        Self::for_paths(&nginx.conf, &nginx.prefix)
    }

    /// For a configuration file and prefix (no nginx needs to run).
    pub fn for_paths(conf: &Path, prefix: &Path) -> SafeReload {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = dir.path().join("safe-reload.toml");
        // An empty settings file, so the machine's /etc/safe-reload.toml cannot leak in.
        std::fs::write(&settings, "").expect("write settings");
        let tmp = tempfile::Builder::new()
            .prefix("sr-tmp.")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod tmp");
        SafeReload {
            state: dir.path().join("state"),
            conf: conf.to_path_buf(),
            prefix: Some(prefix.to_path_buf()),
            settings,
            _dir: dir,
            tmp,
        }
    }

    /// Replace the private settings file (`SAFE_RELOAD_CONFIG`) with `toml`.
    pub fn write_settings(&self, toml: &str) {
        std::fs::write(&self.settings, toml).expect("write settings");
    }

    /// No `-p`: the run uses the build's default prefix, as an operator typing `-c` alone does.
    pub fn without_prefix(mut self) -> SafeReload {
        self.prefix = None;
        self
    }

    /// The command with `-c CONF -p PREFIX --state-dir DIR` and the real nginx; `args` follow.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("-c").arg(&self.conf);
        if let Some(prefix) = &self.prefix {
            c.arg("-p").arg(format!("{}/", prefix.display()));
        }
        c.arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env("SAFE_RELOAD_NGINX", NGINX)
            .env("SAFE_RELOAD_CONFIG", &self.settings)
            .env_remove("SAFE_RELOAD_STATE_DIR")
            .env("TMPDIR", self.tmp.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Run to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        run_command(&mut self.command(args))
    }

    /// Start without waiting (stdout and stderr captured).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start safe-reload")
    }

    /// `init`, asserting it recorded a baseline; the snapshot id.
    pub fn init(&self) -> String {
        let run = self.run(&["init", "--json"]);
        run.expect(0);
        assert_eq!(run.outcome(), "recorded", "{run}");
        run.json()["snapshot"]
            .as_str()
            .expect("init names its snapshot")
            .to_string()
    }

    /// The id `STATE/last-good` names.
    pub fn last_good(&self) -> Option<String> {
        std::fs::read_to_string(self.state.join("last-good"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The bytes stored for a content hash (`STATE/objects/ab/cdef...`).
    pub fn object(&self, hash: &str) -> Vec<u8> {
        let (dir, rest) = hash.split_at(2);
        std::fs::read(self.state.join("objects").join(dir).join(rest))
            .unwrap_or_else(|e| panic!("object {hash}: {e}"))
    }
}

/// Run any command to completion (no stdin) and collect its result.
pub fn run_command(c: &mut Command) -> Run {
    let out = c
        .stdin(Stdio::null())
        .output()
        .expect("run the safe-reload binary");
    Run::from_output(out)
}

/// Wait for a spawned run, with a deadline; killed by PID if it overruns.
pub fn finish(mut child: Child, within: Duration) -> Run {
    let done = wait_for(within, || child.try_wait().ok().flatten().is_some());
    if !done {
        let _ = child.kill();
    }
    let out = child
        .wait_with_output()
        .expect("collect safe-reload output");
    assert!(done, "safe-reload did not finish within {within:?}");
    Run::from_output(out)
}

/// A `server` proxying `/` to `upstream` (`IP:PORT` or an upstream name) on `listen`.
pub fn proxy_site(listen: SocketAddr, upstream: &str) -> String {
    format!(
        "server {{ listen {listen}; server_name site.test; \
         location / {{ proxy_pass http://{upstream}; }} }}"
    )
}

/// Whether some socket on this machine is in SYN_SENT towards `addr` (IPv4): a connect to a
/// [`HangingListener`] is in progress, e.g. a probe waiting for its timeout.
pub fn syn_sent_to(addr: SocketAddr) -> bool {
    let IpAddr::V4(ip) = addr.ip() else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(rem), Some(&st)) = (f.get(2), f.get(3)) else {
            return false;
        };
        let Some((h, p)) = rem.split_once(':') else {
            return false;
        };
        let host = u32::from_str_radix(h, 16).map(|n| Ipv4Addr::from(n.to_le_bytes()));
        let port = u16::from_str_radix(p, 16);
        st == "02" && host == Ok(ip) && port == Ok(addr.port())
    })
}

/// Status, stdout and stderr of a finished run, for assertion messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
