//! The shadow nginx as a process, caught at a known moment (the `shadow-running` test pause:
//! the binary stops itself once the shadow serves): every listen remapped (TCP, IPv6, unix,
//! TLS with SNI, `default_server` routing), nothing written outside its directory, the real
//! nginx's sockets untouched, and nothing left running after SIGKILL, SIGTERM or SIGINT of
//! safe-reload.

mod support;
use support::*;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// The lease the run wrote: `STATE/shadow/PID.json`.
fn lease(sr: &SafeReload, run: &Child) -> serde_json::Value {
    let path = sr.state.join(format!("shadow/{}.json", run.id()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("the lease is JSON")
}

/// The shadow address the lease gives a production listen.
fn shadow_of(lease: &serde_json::Value, listen: &str) -> String {
    lease["listens"]
        .as_array()
        .expect("listens")
        .iter()
        .find(|r| r["listen"] == listen)
        .and_then(|r| r["shadow"].as_str())
        .unwrap_or_else(|| panic!("no shadow address for {listen} in {lease}"))
        .to_string()
}

fn stopped(child: &Child) -> bool {
    let pid = child.id();
    wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("T")
        })
    })
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child by pid; it is reaped by `finish`.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Children of `pid`: the shadow master's workers and cache processes.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn title(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .trim_end_matches('\0')
        .to_string()
}

/// The master's socket inodes: its listening sockets, as the kernel names them.
fn sockets(pid: i32) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.display().to_string())
                .filter(|l| l.starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every file `pid` holds open for writing.
fn written_files(pid: i32) -> Vec<PathBuf> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .ok()?;
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())?;
            (flags & 0o3 != 0 && target.is_absolute() && target.is_file()).then_some(target)
        })
        .collect()
}

/// Size and modification time of every file under `dir`.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), meta.len(), meta.modified().expect("mtime")));
            }
        }
    }
    out.sort();
    out
}

fn get_unix(path: &str, host: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {path}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string()
}

/// `check` stopped (the test pause hook) while its shadow serves: the run, its lease, the
/// shadow's master and its directory.
fn check_stopped_with_its_shadow_up(s: &Sites) -> (Child, serde_json::Value, i32, PathBuf) {
    let run =
        s.sr.command(&["check"])
            .env("SAFE_RELOAD_TEST_PAUSE", "shadow-running")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start safe-reload check");
    assert!(stopped(&run), "never stopped with the shadow running");
    let lease = lease(&s.sr, &run);
    let master = lease["master"].as_i64().expect("the master's pid") as i32;
    let dir = PathBuf::from(lease["dir"].as_str().expect("dir"));
    (run, lease, master, dir)
}

struct Sites {
    nginx: TestNginx,
    sr: SafeReload,
    plain: SocketAddr,
    v6: SocketAddr,
    tls: SocketAddr,
    sock: PathBuf,
    http: String,
    _app: HttpBackend,
    _certs: tempfile::TempDir,
}

fn sites() -> Sites {
    let ip = unique_loopback();
    let v6ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().unwrap();
    let (ac, ak) = certificate_for(certs.path(), &["a.test"]);
    let (bc, bk) = certificate_for(certs.path(), &["b.test"]);
    let plain = SocketAddr::new(ip, free_port(ip));
    let v6 = SocketAddr::new(v6ip, free_port(v6ip));
    let tls = SocketAddr::new(ip, free_port(ip));
    let sock = certs.path().join("site.sock");
    let p = certs.path().display();
    let http = format!(
        "proxy_cache_path {p}/cache keys_zone=c:1m;\n\
         server {{ listen {plain}; server_name first.test; location / {{ return 200 \"first\"; }} }}\n\
         server {{ listen {plain} default_server; server_name default.test; \
           access_log {p}/site-access.log; location / {{ proxy_cache c; proxy_pass http://{app}; }} }}\n\
         server {{ listen {v6}; server_name v6.test; location / {{ return 200 \"v6\"; }} }}\n\
         server {{ listen unix:{sock}; server_name unix.test; location / {{ return 200 \"unix\"; }} }}\n\
         server {{ listen {tls} ssl; server_name a.test; ssl_certificate {ac}; ssl_certificate_key {ak}; \
           location / {{ return 200 \"a\"; }} }}\n\
         server {{ listen {tls} ssl; server_name b.test; ssl_certificate {bc}; ssl_certificate_key {bk}; \
           location / {{ return 200 \"b\"; }} }}\n",
        app = app.host_port(),
        sock = sock.display(),
        ac = ac.display(),
        ak = ak.display(),
        bc = bc.display(),
        bk = bk.display(),
    );
    let nginx = TestNginx::start(&http);
    let sr = SafeReload::new(&nginx);
    Sites {
        nginx,
        sr,
        plain,
        v6,
        tls,
        sock,
        http,
        _app: app,
        _certs: certs,
    }
}

#[test]
fn every_listen_is_remapped_and_routes_like_production_and_sigkill_leaves_nothing_running() {
    let s = sites();
    let real_sockets = sockets(s.nginx.master_pid());
    let (run, lease, master, dir) = check_stopped_with_its_shadow_up(&s);
    let workers = children(master);
    let titles: Vec<String> = workers.iter().map(|w| title(*w)).collect();
    let serving = titles
        .iter()
        .filter(|t| *t == "nginx: worker process")
        .count();
    assert_eq!(serving, 1, "one worker: {titles:?}");

    // TCP, with default_server routing kept: an unknown Host goes to the default server.
    let plain: SocketAddr = shadow_of(&lease, &s.plain.to_string()).parse().unwrap();
    assert!(plain.ip().is_loopback() && plain != s.plain);
    assert_eq!(
        http_get(plain, "first.test", "/").unwrap(),
        (200, "first".into())
    );
    assert_eq!(
        http_get(plain, "other.test", "/").unwrap(),
        (200, "app".into())
    );
    // IPv6 [::1].
    let v6: SocketAddr = shadow_of(&lease, &s.v6.to_string()).parse().unwrap();
    assert!(v6.is_ipv6() && v6 != s.v6);
    assert_eq!(http_get(v6, "v6.test", "/").unwrap(), (200, "v6".into()));
    // Unix: a socket inside the shadow's directory.
    let unix = shadow_of(&lease, &format!("unix:{}", s.sock.display()));
    let path = unix.strip_prefix("unix:").expect("a unix address");
    assert!(path.starts_with(dir.to_str().unwrap()), "{path}");
    assert_eq!(get_unix(path, "unix.test"), "unix");
    // TLS: the certificate follows SNI.
    let tls = shadow_of(&lease, &s.tls.to_string());
    assert!(tls_subject(&tls, Some("a.test")).contains("a.test"));
    assert!(tls_subject(&tls, Some("b.test")).contains("b.test"));

    // Nothing the shadow writes is outside its directory.
    for pid in [master].iter().chain(&workers) {
        for f in written_files(*pid) {
            assert!(f.starts_with(&dir), "pid {pid} writes {}", f.display());
        }
    }
    // The real nginx kept its own sockets and still serves on each. Its master may hold more
    // by now: the cache manager and loader it spawns after the first worker answers each add a
    // channel socketpair.
    let now = sockets(s.nginx.master_pid());
    let lost: Vec<&String> = real_sockets.iter().filter(|s| !now.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "the real master lost {lost:?}; holds {now:?}"
    );
    assert_eq!(http_get(s.plain, "first.test", "/").unwrap().1, "first");

    // SIGKILL: the parent-death signal takes the shadow down.
    signal(&run, libc::SIGKILL);
    let _ = finish(run, Duration::from_secs(10));
    assert!(
        wait_for(Duration::from_secs(10), || !alive(master)
            && workers.iter().all(|w| !alive(*w))),
        "the shadow outlived safe-reload"
    );
    let status = s.sr.run(&["status", "--json"]);
    let left = &status.json()["status"]["leftover_shadows"];
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{status}");
    assert!(left[0]["running"].is_null(), "{status}");
    let recover = s.sr.run(&["recover", "--json"]);
    recover.expect(0);
    assert!(
        recover.json()["notes"].to_string().contains("cleaned up"),
        "{recover}"
    );
    assert!(!dir.exists(), "recover removes the leftover directory");
    assert!(s.sr.run(&["status", "--json"]).json()["status"]["leftover_shadows"].is_null());
}

#[test]
fn a_verified_run_writes_nothing_outside_the_shadow() {
    let s = sites();
    let before = files_under(&s.nginx.prefix);
    let certs = files_under(s.sock.parent().unwrap());
    let run = s.sr.run(&["check", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "verified", "{run}");
    assert!(
        !report["shadow"]["checks"].as_array().unwrap().is_empty(),
        "{run}"
    );
    let skip = |f: &Vec<(PathBuf, u64, std::time::SystemTime)>| -> Vec<_> {
        // nginx -t (not the shadow) may log to the real error log.
        f.iter()
            .filter(|(p, ..)| !p.ends_with("logs/error.log"))
            .cloned()
            .collect()
    };
    assert_eq!(skip(&files_under(&s.nginx.prefix)), skip(&before));
    assert_eq!(
        files_under(s.sock.parent().unwrap()),
        certs,
        "access log and cache untouched"
    );
    let dir = report["shadow"]["listens"].to_string();
    assert!(dir.contains("safe-reload-shadow."), "{dir}");
}

#[test]
fn sigterm_and_sigint_during_the_shadow_stop_it_and_exit_130() {
    let s = sites();
    let workers = s.nginx.worker_pids();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        s.nginx
            .write_http(&s.http.replace("\"first\"", &format!("\"first {sig}\"")));
        let run =
            s.sr.command(&["-y"])
                .env("SAFE_RELOAD_TEST_PAUSE", "shadow-running")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start safe-reload");
        assert!(stopped(&run), "never stopped with the shadow running");
        let lease = lease(&s.sr, &run);
        let master = lease["master"].as_i64().expect("master") as i32;
        let dir = PathBuf::from(lease["dir"].as_str().unwrap());
        signal(&run, sig);
        signal(&run, libc::SIGCONT);
        let out = finish(run, Duration::from_secs(20));
        out.expect(130);
        assert!(!alive(master), "signal {sig}: the shadow is stopped");
        assert!(!dir.exists(), "signal {sig}: its directory is removed");
        assert_eq!(s.nginx.worker_pids(), workers, "nginx was not signalled");
    }
}

/// A process's nice value (`/proc/PID/stat` field 19).
fn nice_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("a stat line");
    rest.split_whitespace()
        .nth(16)
        .and_then(|n| n.parse().ok())
        .expect("nice")
}

/// What `/proc/PID/fd/FD` links to (`pipe:[N]`, `socket:[N]`, a path).
fn fd_target(pid: u32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|l| l.display().to_string())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd/{fd}: {e}"))
}

/// Every descriptor target `pid` holds.
fn fd_targets(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Give the child each `(from, to)` descriptor as `to`, without close-on-exec, as a deploy
/// script that leaks them does (dup2 clears the flag on the new descriptor). Each is first
/// moved above 100, so one `to` cannot overwrite another's `from`.
fn inherit(cmd: &mut Command, fds: Vec<(std::os::fd::RawFd, i32)>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: fcntl and dup2 are async-signal-safe and allocate nothing; the descriptors stay
    // open in the parent until the child has been spawned.
    unsafe {
        cmd.pre_exec(move || {
            let mut staged = [0; 8];
            for (i, (from, _)) in fds.iter().enumerate() {
                staged[i] = libc::fcntl(*from, libc::F_DUPFD, 100);
                if staged[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, to)) in fds.iter().enumerate() {
                if libc::dup2(staged[i], *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[test]
fn descriptors_the_caller_leaks_reach_no_nginx_process() {
    use std::os::fd::AsRawFd;
    let s = sites();
    let (reader, writer) = std::io::pipe().expect("pipe");
    let ip = unique_loopback();
    let socket = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).expect("listen");
    let me = std::process::id();
    let leaked = [
        fd_target(me, writer.as_raw_fd()),
        fd_target(me, socket.as_raw_fd()),
    ];
    let mut cmd = s.sr.command(&["check"]);
    cmd.env("SAFE_RELOAD_TEST_PAUSE", "shadow-running")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    inherit(
        &mut cmd,
        vec![(writer.as_raw_fd(), 7), (socket.as_raw_fd(), 8)],
    );
    let run = cmd.spawn().expect("start safe-reload check");
    drop(writer);
    assert!(stopped(&run), "never stopped with the shadow running");
    // safe-reload itself holds them (they are its caller's), its nginx processes do not.
    assert_eq!(fd_target(run.id(), 7), leaked[0]);
    assert_eq!(fd_target(run.id(), 8), leaked[1]);
    let master = lease(&s.sr, &run)["master"].as_i64().expect("master") as i32;
    let workers = children(master);
    assert!(!workers.is_empty(), "the shadow has workers");
    // The shadow yields the processor to the production nginx.
    let theirs = (nice_of(run.id() as i32) + 5).min(19);
    assert_eq!(nice_of(master), theirs, "the shadow runs at nice +5");
    for pid in [master].iter().chain(&workers) {
        let held = fd_targets(*pid);
        for l in &leaked {
            assert!(!held.contains(l), "{} ({pid}) holds {l}", title(*pid));
        }
    }
    signal(&run, libc::SIGCONT);
    finish(run, Duration::from_secs(30)).expect(0);
    // The last holder of the pipe's write end is gone: the reader sees its end at once.
    let mut rest = Vec::new();
    (&reader).read_to_end(&mut rest).expect("read to the end");
    assert!(rest.is_empty());
}

#[test]
fn command_substitution_with_a_leaked_pipe_and_socket_returns_when_the_run_ends() {
    let s = sites();
    let ip = unique_loopback();
    let socket = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).expect("listen");
    s.nginx
        .write_http(&s.http.replace("\"first\"", "\"first, changed\""));
    // `$(...)`: the shell reads the command's stdout to its end; `7>&1` leaks the same pipe
    // to the command, and the listening socket comes in at 8, as from a deploy script.
    let mut argv: Vec<String> = Vec::new();
    let probe = s.sr.command(&["-y", "--json"]);
    argv.push(probe.get_program().to_string_lossy().into_owned());
    argv.extend(probe.get_args().map(|a| a.to_string_lossy().into_owned()));
    let quoted: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "out=$({} 7>&1 8<&3); code=$?; printf '%s' \"$out\" > \"$0\"; exit $code",
        quoted.join(" ")
    );
    let dir = tempfile::tempdir().unwrap();
    let report_file = dir.path().join("out.json");
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(&script).arg(&report_file);
    for (k, v) in probe.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    {
        use std::os::fd::AsRawFd;
        inherit(&mut sh, vec![(socket.as_raw_fd(), 3)]);
    }
    let shell = sh
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sh");
    finish(shell, Duration::from_secs(60)).expect(0);
    let out = std::fs::read_to_string(&report_file).expect("the captured report");
    let report: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(report["outcome"], "reloaded", "{out}");
    assert_eq!(
        http_get(s.plain, "first.test", "/").unwrap(),
        (200, "first, changed".into())
    );
}

#[test]
fn a_comment_only_change_needs_no_shadow_and_an_unused_upstream_does() {
    let s = sites();
    s.sr.init();
    s.nginx
        .write_http(&format!("# only a comment\n{}\n# and another", s.http));
    let run = s.sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["outcome"], "reloaded", "{run}");
    assert_eq!(report["shadow"]["state"], "not_needed", "{run}");
    assert!(report["shadow"]["master_pid"].is_null(), "{run}");
    assert_eq!(report["impact"]["affected"], serde_json::json!([]), "{run}");
    assert_eq!(
        report["impact"]["outside_servers"],
        serde_json::json!([]),
        "{run}"
    );
    assert!(
        std::fs::read_dir(s.sr.state.join("shadow")).map_or(true, |mut d| d.next().is_none()),
        "no lease is left"
    );
    assert_eq!(
        http_get(s.plain, "first.test", "/").unwrap(),
        (200, "first".into())
    );

    // An upstream no server uses is outside every server: the shadow still runs.
    s.nginx.write_http(&format!(
        "{}\nupstream spare {{ server {}; }}",
        s.http, s.plain
    ));
    let run = s.sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["impact"]["affected"], serde_json::json!([]), "{run}");
    let outside = report["impact"]["outside_servers"]
        .as_array()
        .expect("a list");
    assert_eq!(outside.len(), 1, "{run}");
    assert_eq!(outside[0]["what"], "http: upstream", "{run}");
    assert_ne!(report["shadow"]["state"], "not_needed", "{run}");
    assert!(report["shadow"]["master_pid"].is_i64(), "{run}");
    assert_eq!(
        http_get(s.plain, "first.test", "/").unwrap(),
        (200, "first".into())
    );
}

/// A run killed with its shadow up, whose state directory is then removed (a fresh install,
/// a cleaned `/var/lib/safe-reload`): the shadow's directory keeps a copy of the lease, so
/// `status` still names the leftover and `recover` removes it.
#[test]
fn a_leftover_whose_state_directory_is_gone_is_found_from_its_own_directory_and_removed() {
    let s = sites();
    let (run, _, master, dir) = check_stopped_with_its_shadow_up(&s);
    signal(&run, libc::SIGKILL);
    let _ = finish(run, Duration::from_secs(10));
    assert!(
        wait_for(Duration::from_secs(10), || !alive(master)),
        "the shadow outlived safe-reload"
    );
    std::fs::remove_dir_all(&s.sr.state).expect("remove the state directory");
    assert!(dir.exists());

    let status = s.sr.run(&["status", "--json"]);
    let left = status.json()["status"]["leftover_shadows"].to_string();
    assert!(left.contains(&dir.display().to_string()), "{status}");
    s.sr.run(&["recover", "--json"]).expect(0);
    assert!(!dir.exists(), "recover removes the leftover directory");
}

/// r14 u F6: Ctrl-C while the shadow waits for a site slower than `--health-timeout`. The run
/// went on to ask it again with four times the timeout, and the running nginx too, and only
/// then stopped: 10.6 s of silence for a run that changes nothing. What the shadow would ask
/// next is not waited for: exit 130, nothing reloaded, well before the longer wait (8 s)
/// could have ended.
#[test]
fn ctrl_c_while_the_shadow_waits_for_a_slow_site_stops_the_run_without_the_longer_waits() {
    let ip = unique_loopback();
    let slow = HttpBackend::start_slow(SocketAddr::new(ip, 0), "slow", Duration::from_secs(3));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name slow.test; {extra} \
             location / {{ proxy_pass http://{}; }} }}",
            slow.host_port()
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let workers = n.worker_pids();
    n.write_http(&site("add_header X-A 1;"));
    let run = sr
        .command(&["-y"])
        .env("SAFE_RELOAD_TEST_PAUSE", "shadow-running")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start safe-reload");
    assert!(stopped(&run), "never stopped with the shadow running");
    signal(&run, libc::SIGINT);
    let sent = std::time::Instant::now();
    signal(&run, libc::SIGCONT);
    let done = finish(run, Duration::from_secs(30));
    let took = sent.elapsed();
    done.expect(130);
    assert!(took < Duration::from_secs(7), "took {took:?}: {done}");
    assert_eq!(n.worker_pids(), workers, "not reloaded: {done}");
}
