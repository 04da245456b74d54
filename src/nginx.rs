//! The only place that runs nginx (and the operator's reload command): finding the binary,
//! reading its build (`nginx -V`), testing a configuration (`nginx -t`), and the paths a
//! configuration implies (pid file, error logs, worker user).
//!
//! Every child runs as argv through `duct`, never through a shell, and with a timeout: a hung
//! nginx (a resolver that never answers, a blocked file system) must not hang a reload. What
//! nginx prints is parsed by `errorlog`, whose line format `nginx -t` shares.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::conf::Config;
use crate::error::{Error, Result};
pub use crate::errorlog::{parse_messages, Level, Message};

/// How long `nginx -V` may take; it only prints compiled-in strings.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Find the nginx binary: `explicit` (from `--nginx` or `$SAFE_RELOAD_NGINX`) as given, else
/// `nginx` on `PATH`, else `/usr/sbin/nginx`.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if is_executable(path) {
            Ok(path.to_path_buf())
        } else {
            Err(Error::NginxNotFound {
                tried: format!("{} (not an executable file)", path.display()),
            })
        };
    }
    let mut tried = Vec::new();
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in on_path.iter().filter(|d| !d.as_os_str().is_empty()) {
        let candidate = dir.join("nginx");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    tried.push("nginx on PATH".to_string());
    let fallback = Path::new("/usr/sbin/nginx");
    if is_executable(fallback) {
        return Ok(fallback.to_path_buf());
    }
    tried.push(fallback.display().to_string());
    Err(Error::NginxNotFound {
        tried: tried.join(", "),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What `nginx -V` says about how the binary was built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// `1.22.1` from `nginx version: nginx/1.22.1`.
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conf_path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_path: Option<PathBuf>,
    /// Kept as text: it may be `stderr` rather than a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_log_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `--group`: the group workers run with when no `user` directive names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where the build's dynamic modules are installed (`--modules-path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modules_path: Option<PathBuf>,
    pub configure_args: Vec<String>,
}

/// Run `nginx -V` and read its build information (nginx prints it on stderr).
pub fn build_info(binary: &Path) -> Result<BuildInfo> {
    let out = run(binary, &["-V".to_string()], VERSION_TIMEOUT)?;
    let text = format!("{}{}", out.stderr, out.stdout);
    if out.status != Some(0) {
        return Err(Error::Command {
            command: command_line(binary, &["-V".to_string()]),
            status: status_text(out.status),
            stderr: out.stderr,
        });
    }
    Ok(parse_build_info(&text))
}

/// Parse the text of `nginx -V`.
pub fn parse_build_info(text: &str) -> BuildInfo {
    let mut info = BuildInfo::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("nginx version: ") {
            let v = v.trim();
            info.version = v.split_once('/').map_or(v, |(_, num)| num).to_string();
        } else if let Some(args) = line.strip_prefix("configure arguments:") {
            info.configure_args = split_configure_args(args);
        }
    }
    for arg in &info.configure_args {
        let Some((key, value)) = arg.split_once('=') else {
            continue;
        };
        match key {
            "--conf-path" => info.conf_path = Some(value.into()),
            "--prefix" => info.prefix = Some(value.into()),
            "--pid-path" => info.pid_path = Some(value.into()),
            "--error-log-path" => info.error_log_path = Some(value.into()),
            "--user" => info.user = Some(value.into()),
            "--group" => info.group = Some(value.into()),
            "--modules-path" => info.modules_path = Some(value.into()),
            _ => {}
        }
    }
    info
}

/// Split configure arguments as the shell that ran `./configure` did: whitespace separates,
/// single quotes group (`--with-cc-opt='-g -O2'`).
fn split_configure_args(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    args
}

/// One nginx installation: the binary, the main configuration file and the prefix.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub binary: PathBuf,
    pub conf: PathBuf,
    pub prefix: PathBuf,
    /// The longest any nginx command may take before it is killed.
    pub timeout: Duration,
}

/// The result of `nginx -t`.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// Exit status 0 and no `[emerg]` (nginx can print one and still exit 0).
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    pub messages: Vec<Message>,
    /// Verbatim, for showing to the operator.
    pub stderr: String,
    #[serde(rename = "elapsed_ms", serialize_with = "crate::report::ms")]
    pub elapsed: Duration,
}

impl Nginx {
    /// Run `nginx -t -q -c CONF -p PREFIX/`. A failing test is an `Ok` outcome; `Err` only when
    /// nginx cannot run or does not finish in time.
    pub fn test(&self) -> Result<TestOutcome> {
        let start = Instant::now();
        let out = run(&self.binary, &self.args(&["-t", "-q"]), self.timeout)?;
        let messages = parse_messages(&out.stderr);
        let passed = out.status == Some(0) && !messages.iter().any(|m| m.level == Level::Emerg);
        Ok(TestOutcome {
            passed,
            status: out.status,
            messages,
            stderr: out.stderr,
            elapsed: start.elapsed(),
        })
    }

    /// `[-p PREFIX/] -c CONF` after `extra`: the flags every command for this install needs.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.push("-c".into());
        args.push(self.conf.display().to_string());
        let mut prefix = self.prefix.display().to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        args.push("-p".into());
        args.push(prefix);
        args
    }
}

/// `nginx -t` on a throwaway copy of untrusted configuration (see `sandbox`).
#[derive(Debug, Clone)]
pub struct IsolatedTest<'a> {
    pub binary: &'a Path,
    /// The copy's directory: the prefix, and where the pid file goes.
    pub prefix: &'a Path,
    /// The main file inside the copy.
    pub conf: &'a Path,
    /// Run nginx as this uid and gid (when we are root).
    pub run_as: Option<(u32, u32)>,
    /// Paths in nginx's messages that start with `.0` are shown under `.1`.
    pub map: (&'a Path, &'a Path),
    /// Addresses in nginx's messages shown as the configuration writes them: the copy's
    /// listen stand-ins, each with the listen it stands in for.
    pub addresses: &'a [(String, String)],
    pub timeout: Duration,
}

/// The pid file's name in an isolated test's prefix: not `nginx.pid`, which a repository (or
/// an `nginx -p DIR` tree that keeps its pid file inside) may hold, copied root-owned where the
/// unprivileged `nginx -t` cannot open it.
pub const ISOLATED_PID: &str = ".safe-reload-test.pid";

/// Run `nginx -t -e stderr -g "pid PREFIX/.safe-reload-test.pid;"` on the copy: the startup
/// error log goes to stderr instead of the compiled-in file, the pid file into the copy.
pub fn test_isolated(t: &IsolatedTest) -> Result<TestOutcome> {
    let start = Instant::now();
    let mut prefix = t.prefix.display().to_string();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    let args: Vec<String> = vec![
        "-t".into(),
        "-q".into(),
        "-e".into(),
        "stderr".into(),
        "-p".into(),
        prefix.clone(),
        "-c".into(),
        t.conf.display().to_string(),
        "-g".into(),
        format!("pid {prefix}{ISOLATED_PID};"),
    ];
    let mut expr = duct::cmd(t.binary.as_os_str(), &args)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    if let Some((uid, gid)) = t.run_as {
        expr = expr.before_spawn(move |cmd| {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
            Ok(())
        });
    }
    let out = wait(expr, command_line(t.binary, &args), t.timeout)?;
    let stderr = map_addresses(&out.stderr, t.addresses);
    let stderr = map_paths(&stderr, t.map.0, t.map.1);
    let messages = parse_messages(&stderr);
    let passed = out.status == Some(0) && !messages.iter().any(|m| m.level == Level::Emerg);
    Ok(TestOutcome {
        passed,
        status: out.status,
        messages,
        stderr,
        elapsed: start.elapsed(),
    })
}

/// nginx's messages about a copy of a configuration with every path under `from` shown under
/// `to` instead: the operator reads the files they wrote, not the copy's (`check --untrusted`'s
/// sandbox, the shadow nginx).
pub fn map_paths(text: &str, from: &Path, to: &Path) -> String {
    let from = from.display().to_string();
    let to = to.display().to_string();
    text.replace(from.trim_end_matches('/'), to.trim_end_matches('/'))
}

/// `text` with each address `.0` of `pairs` shown as its `.1`, in one pass (a listen as
/// written may look like another's stand-in), and only where the whole address stands: a
/// stand-in `127.0.0.1:4012` is no part of `127.0.0.1:40123`.
pub fn map_addresses(text: &str, pairs: &[(String, String)]) -> String {
    let continues = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut before = None;
    while let Some(c) = rest.chars().next() {
        let hit = (!continues(before))
            .then(|| {
                pairs
                    .iter()
                    .find(|(from, _)| rest.starts_with(from.as_str()))
            })
            .flatten()
            .filter(|(from, _)| !continues(rest[from.len()..].chars().next()));
        match hit {
            Some((from, to)) => {
                out.push_str(to);
                before = from.chars().last();
                rest = &rest[from.len()..];
            }
            None => {
                out.push(c);
                before = Some(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// A hint for a `nginx -t` message whose cause is a common slip: `proxy_pass 127.0.0.1:8000;`
/// makes nginx say only "invalid URL prefix".
pub fn hint(message: &Message, config: &Config) -> Option<String> {
    if !message.text.starts_with("invalid URL prefix") {
        return None;
    }
    let (file, line) = (message.file.as_deref()?, message.line?);
    config
        .walk()
        .find(|d| d.line == line && &*d.file == file && d.name.ends_with("_pass"))
        .filter(|d| !d.arg0().contains("://"))
        .map(|d| {
            format!(
                "{} needs a scheme: write `{} http://{};`",
                d.name,
                d.name,
                d.arg0()
            )
        })
}

/// What a finished child printed and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    /// `None` when killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run the operator's command (e.g. `--reload-cmd "systemctl reload nginx"`, already split into
/// argv) with a timeout. A non-zero exit is an `Error::Command` carrying its stderr.
pub fn run_command(argv: &[String], timeout: Duration) -> Result<Output> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Usage("the reload command is empty".into()));
    };
    let out = run(Path::new(program), args, timeout)?;
    if out.status != Some(0) {
        return Err(Error::Command {
            command: command_line(Path::new(program), args),
            status: status_text(out.status),
            stderr: out.stderr,
        });
    }
    Ok(out)
}

/// Run `program` (a path, or for the operator's command a name looked up on `PATH`).
fn run(program: &Path, args: &[String], timeout: Duration) -> Result<Output> {
    // As an OsStr, a bare name is searched on PATH; duct would take a bare `Path` as `./name`.
    let expr = duct::cmd(program.as_os_str(), args)
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    wait(expr, command_line(program, args), timeout)
}

/// Start `expr` and wait for it at most `timeout`, killing it then.
fn wait(expr: duct::Expression, command: String, timeout: Duration) -> Result<Output> {
    let handle = expr.start().map_err(|e| Error::Command {
        command: command.clone(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    let waited = handle.wait_timeout(timeout).map_err(|e| Error::Command {
        command: command.clone(),
        status: "could not wait".into(),
        stderr: e.to_string(),
    })?;
    let Some(out) = waited else {
        // Best effort: the error says it was stopped; a kill that fails leaves nothing to do.
        let _ = handle.kill();
        return Err(Error::CommandTimeout {
            command,
            after: timeout,
        });
    };
    Ok(Output {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// An argv as one line a shell runs as the same argv.
pub fn shell_line(argv: &[String]) -> String {
    match argv.split_first() {
        Some((program, args)) => command_line(Path::new(program), args),
        None => String::new(),
    }
}

/// The command as one line a shell runs as the same argv: each word quoted where it needs it.
fn command_line(program: &Path, args: &[String]) -> String {
    let program = program.to_string_lossy();
    let words = std::iter::once(program.as_ref()).chain(args.iter().map(String::as_str));
    // A NUL cannot be quoted (nor passed in an argv); it is shown escaped.
    words
        .map(|w| {
            shlex::try_quote(w).map_or_else(|_| w.escape_debug().to_string(), |q| q.into_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_text(status: Option<i32>) -> String {
    status.map_or("killed by a signal".into(), |c| format!("exit status {c}"))
}

/// Resolve a path from the configuration as nginx does: relative to the prefix.
fn under_prefix(prefix: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        prefix.join(p)
    }
}

/// The pid file nginx writes: the `pid` directive, else the build's `--pid-path`, else
/// `PREFIX/logs/nginx.pid`; relative paths are relative to the prefix.
pub fn pid_file(config: &Config, prefix: &Path, info: &BuildInfo) -> PathBuf {
    match config.main_directive("pid") {
        Some(d) => under_prefix(prefix, d.arg0()),
        None => default_pid_file(prefix, info),
    }
}

/// The pid file of a configuration without a `pid` directive: the build's `--pid-path`, else
/// `PREFIX/logs/nginx.pid`.
pub fn default_pid_file(prefix: &Path, info: &BuildInfo) -> PathBuf {
    match &info.pid_path {
        Some(p) => under_prefix(prefix, &p.to_string_lossy()),
        None => prefix.join("logs/nginx.pid"),
    }
}

/// Targets of `error_log` that are not files.
fn is_file_log(target: &str) -> bool {
    crate::errorlog::not_a_file(target).is_none()
}

/// Every error log file the configuration writes to, in any context, deduplicated; plus the
/// build's default when the main context names none and that default is a file.
pub fn error_logs(config: &Config, prefix: &Path, info: &BuildInfo) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = Vec::new();
    let mut push = |p: PathBuf| {
        if !logs.contains(&p) {
            logs.push(p);
        }
    };
    for d in config.walk() {
        if d.name == "error_log" && is_file_log(d.arg0()) {
            push(under_prefix(prefix, d.arg0()));
        }
    }
    if config.main_directive("error_log").is_none() {
        let default = default_error_log(info);
        if is_file_log(default) {
            push(under_prefix(prefix, default));
        }
    }
    logs
}

/// Where the main context logs when it names no `error_log`: the build's `--error-log-path`,
/// else nginx's own default.
pub fn default_error_log(info: &BuildInfo) -> &str {
    info.error_log_path.as_deref().unwrap_or("logs/error.log")
}

/// The user worker processes run as: the `user` directive, else the build's `--user`, else
/// `nobody` (nginx's own default).
pub fn worker_user(config: &Config, info: &BuildInfo) -> String {
    match config.main_directive("user") {
        Some(d) if !d.arg0().is_empty() => d.arg0().to_string(),
        _ => info.user.clone().unwrap_or_else(|| "nobody".to_string()),
    }
}

/// The group worker processes run with, where something names it: the `user` directive's
/// second argument, else (no `user` directive) the build's `--group`. `None` leaves it to
/// [`crate::probe::access::Account::lookup`]: a group named like the user, which is what
/// nginx takes for `user NAME;` (`ngx_set_user`), else the user's primary group.
pub fn worker_group(config: &Config, info: &BuildInfo) -> Option<String> {
    match config.main_directive("user") {
        Some(d) => d.args.get(1).map(|g| g.to_string()),
        None => info.group.clone(),
    }
}

/// The running master's working directory (`/proc/PID/cwd`): where it was started (`/` under
/// systemd). nginx never changes it; its relative `working_directory` and, without one, every
/// relative path its workers open at run time (`proxy_pass http://unix:app.sock`) start there.
pub fn master_cwd(master: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{master}/cwd")).ok()
}

/// The directory nginx's workers run in: `working_directory` (taken as written, like
/// `chdir(2)` in `ngx_worker_process_init`: not completed against the prefix), else the
/// master's own (`master_cwd`). A relative unix socket path is connected to from here. `None`
/// when it depends on a master that is not running.
pub fn worker_dir(config: &Config, master_cwd: Option<&Path>) -> Option<PathBuf> {
    match config.main_directive("working_directory").map(|d| d.arg0()) {
        Some(dir) if Path::new(dir).is_absolute() => Some(PathBuf::from(dir)),
        Some(dir) if !dir.is_empty() => master_cwd.map(|cwd| cwd.join(dir)),
        _ => master_cwd.map(Path::to_path_buf),
    }
}

/// `worker_processes`: a number, or `auto` (the cores available). `None` when absent (nginx
/// then runs one) or unreadable.
pub fn worker_processes(config: &Config) -> Option<usize> {
    let d = config.main_directive("worker_processes")?;
    match d.arg0() {
        "auto" => std::thread::available_parallelism().ok().map(|n| n.get()),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_shown_as_one_copyable_shell_line() {
        let args = [
            "-c".to_string(),
            "kill -HUP 1; exit 1".to_string(),
            "it's".to_string(),
        ];
        let line = command_line(Path::new("/bin/sh"), &args);
        assert_eq!(line, r#"/bin/sh -c 'kill -HUP 1; exit 1' "it's""#);
        assert_eq!(
            shlex::split(&line).expect("splits"),
            ["/bin/sh", "-c", "kill -HUP 1; exit 1", "it's"]
        );
        assert_eq!(
            command_line(Path::new("systemctl"), &["reload".into()]),
            "systemctl reload"
        );
    }

    #[test]
    fn configure_args_keep_quoted_groups() {
        let text = "nginx version: nginx/1.22.1\nconfigure arguments: --with-cc-opt='-g -O2 -fPIC' --prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf --error-log-path=stderr --pid-path=/run/nginx.pid --user=www-data\n";
        let info = parse_build_info(text);
        assert_eq!(info.version, "1.22.1");
        assert_eq!(info.configure_args[0], "--with-cc-opt=-g -O2 -fPIC");
        assert_eq!(info.prefix.as_deref(), Some(Path::new("/usr/share/nginx")));
        assert_eq!(
            info.conf_path.as_deref(),
            Some(Path::new("/etc/nginx/nginx.conf"))
        );
        assert_eq!(info.pid_path.as_deref(), Some(Path::new("/run/nginx.pid")));
        assert_eq!(info.error_log_path.as_deref(), Some("stderr"));
        assert_eq!(info.user.as_deref(), Some("www-data"));
    }

    #[test]
    fn stand_ins_read_as_the_listens_they_replace() {
        let pairs = [
            ("127.0.0.1:4012".to_string(), "0.0.0.0:80".to_string()),
            ("127.0.0.1:80".to_string(), "127.0.0.1:4012".to_string()),
            (
                "unix:/t/s/0.sock".to_string(),
                "unix:/run/a.sock".to_string(),
            ),
        ];
        let text = "a duplicate default server for 127.0.0.1:4012 in /r/a.conf:3\n\
                    127.0.0.1:40123 1127.0.0.1:4012 127.0.0.1:80; bind() to unix:/t/s/0.sock failed";
        assert_eq!(
            map_addresses(text, &pairs),
            "a duplicate default server for 0.0.0.0:80 in /r/a.conf:3\n\
             127.0.0.1:40123 1127.0.0.1:4012 127.0.0.1:4012; bind() to unix:/run/a.sock failed"
        );
    }
}
