//! The Ansible rollout (packaging/ansible/rollout.yml) for real: ansible-core from PyPI, three
//! "hosts" on this machine (`ansible_connection=local`), each a real nginx with its own prefix
//! and 127.61.N.1 listen address in front of its own real HTTP backend. The configuration
//! pushed to the second host points at a backend that answers the protocol probe and closes
//! every real request, so nginx answers 502 after the reload and safe-reload rolls it back. The rollout must stop
//! there: host 1 serves the new configuration, host 2 the old one, host 3 was never touched,
//! and what the play reports per host matches what each nginx really serves.

// Tests say on stderr which path they took (the .deb builder, the venv creation).
#![allow(clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_safe-reload");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const NGINX: &str = "/usr/sbin/nginx";

/// A tiny threaded HTTP server answering every request with `body`, or, with `body` None,
/// answering only the probe's `OPTIONS *` and closing every real request unanswered (nginx
/// turns that into 502, which only the verification after the reload sees).
fn backend(ip: Ipv4Addr, body: Option<&'static str>) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = match body {
                    Some(b) => b,
                    None if request.starts_with(b"OPTIONS * ") => "",
                    None => return,
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

/// A free port on `ip`, for nginx to listen on.
fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `GET /` through nginx: the status code and the body.
fn get(addr: SocketAddr) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect nginx");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .expect("send request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One managed "host": an nginx under its own prefix, stopped by PID when dropped.
struct Host {
    name: String,
    prefix: PathBuf,
    listen: SocketAddr,
    old_conf: String,
    new_conf: String,
    nginx: Child,
}

impl Host {
    fn start(root: &Path, n: u8, old_backend: SocketAddr, new_backend: SocketAddr) -> Host {
        let name = format!("web{n}");
        let prefix = root.join(&name);
        for dir in ["conf", "logs", "temp", "state", "push"] {
            std::fs::create_dir_all(prefix.join(dir)).expect("host dirs");
        }
        let ip = Ipv4Addr::new(127, 61, n, 1);
        let listen = SocketAddr::from((ip, free_port(ip)));
        std::fs::write(
            prefix.join("conf/nginx.conf"),
            "worker_processes 1;\npid logs/nginx.pid;\nerror_log logs/error.log;\n\
             events { worker_connections 64; }\nhttp {\n    access_log off;\n    \
             client_body_temp_path temp/client;\n    proxy_temp_path temp/proxy;\n    \
             fastcgi_temp_path temp/fastcgi;\n    uwsgi_temp_path temp/uwsgi;\n    \
             scgi_temp_path temp/scgi;\n    include app.conf;\n}\n",
        )
        .expect("nginx.conf");
        let app = |backend: SocketAddr| {
            format!(
                "server {{\n    listen {listen};\n    location / {{\n        \
                 proxy_pass http://{backend};\n    }}\n}}\n"
            )
        };
        let (old_conf, new_conf) = (app(old_backend), app(new_backend));
        std::fs::write(prefix.join("conf/app.conf"), &old_conf).expect("app.conf");
        std::fs::write(prefix.join("push/app.conf"), &new_conf).expect("pushed app.conf");
        std::fs::write(
            prefix.join("safe-reload.toml"),
            // The rollout is about a host rolled back after its reload: without the shadow,
            // which would refuse the broken host's change before it (tests/shadow_instance.rs).
            "health-window = \"1s\"\nprobe-timeout = \"500ms\"\nno-shadow = true\n",
        )
        .expect("settings");
        let nginx = Command::new(NGINX)
            .arg("-p")
            .arg(&prefix)
            .args(["-c", "conf/nginx.conf", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start nginx");
        let host = Host {
            name,
            prefix,
            listen,
            old_conf,
            new_conf,
            nginx,
        };
        host.wait_until_serving();
        host
    }

    fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "{} never listened", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn conf(&self) -> PathBuf {
        self.prefix.join("conf/nginx.conf")
    }

    fn app_conf(&self) -> String {
        std::fs::read_to_string(self.prefix.join("conf/app.conf")).expect("read app.conf")
    }

    /// The inventory entry: how the role reaches this host's nginx and what it pushes.
    fn inventory(&self, python: &Path) -> serde_json::Value {
        let p = |rel: &str| self.prefix.join(rel).display().to_string();
        serde_json::json!({
            "ansible_connection": "local",
            "ansible_python_interpreter": python,
            "safe_reload_binary": BIN,
            "safe_reload_conf": self.conf(),
            "safe_reload_prefix": self.prefix,
            "safe_reload_state_dir": p("state"),
            "safe_reload_nginx": NGINX,
            "safe_reload_files": [{"src": p("push/app.conf"), "dest": p("conf/app.conf")}],
            "safe_reload_extra_args": [
                "--config", p("safe-reload.toml"),
                "--health", format!("http://{}/", self.listen),
            ],
        })
    }

    fn init_baseline(&self) {
        let out = Command::new(BIN)
            .args(["init", "-y", "--nginx", NGINX, "-c"])
            .arg(self.conf())
            .arg("-p")
            .arg(&self.prefix)
            .arg("--state-dir")
            .arg(self.prefix.join("state"))
            .output()
            .expect("run safe-reload init");
        assert!(
            out.status.success(),
            "safe-reload init for {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let pid = self.nginx.id() as libc::pid_t;
        // SAFETY: signalling our own child by PID; it cannot have been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nginx.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.nginx.kill();
        let _ = self.nginx.wait();
    }
}

/// The Python venv with ansible-core: $SAFE_RELOAD_TEST_VENV (scripts/test.sh makes it), or
/// target/test-venv, created here when missing.
fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("SAFE_RELOAD_TEST_VENV") {
        return PathBuf::from(v);
    }
    let venv = Path::new(ROOT).join("target/test-venv");
    if !venv.join("bin/ansible-playbook").exists() {
        eprintln!("creating {} with ansible-core", venv.display());
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .args(["gunicorn", "ansible-core"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "could not create {} with ansible-core", venv.display());
    }
    venv
}

#[test]
fn rollout_stops_at_the_broken_host_and_leaves_every_host_as_reported() {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is needed (scripts/test.sh installs it)"
    );
    let venv = venv();
    let work = tempfile::tempdir().expect("tempdir");
    let ip = |n: u8| Ipv4Addr::new(127, 61, n, 2);

    let hosts: Vec<Host> = (1..=3u8)
        .map(|n| {
            let old = backend(ip(n), Some(["old-1", "old-2", "old-3"][n as usize - 1]));
            let new = match n {
                2 => backend(ip(n), None),
                _ => backend(ip(n), Some(["new-1", "", "new-3"][n as usize - 1])),
            };
            Host::start(work.path(), n, old, new)
        })
        .collect();
    for (host, body) in hosts.iter().zip(["old-1", "old-2", "old-3"]) {
        assert_eq!(get(host.listen), (200, body.to_string()), "{}", host.name);
        host.init_baseline();
    }

    let python = venv.join("bin/python");
    let inventory: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|h| (h.name.clone(), h.inventory(&python)))
        .collect();
    let inventory_path = work.path().join("inventory.yml");
    std::fs::write(
        &inventory_path,
        serde_json::json!({ "nginx": { "hosts": inventory } }).to_string(),
    )
    .expect("inventory");
    let results = work.path().join("results");
    let ansible_dir = Path::new(ROOT).join("packaging/ansible");

    let started = Instant::now();
    let out = Command::new(venv.join("bin/ansible-playbook"))
        .current_dir(&ansible_dir)
        .arg("-i")
        .arg(&inventory_path)
        .arg("rollout.yml")
        .arg("-e")
        .arg(format!("safe_reload_results_dir={}", results.display()))
        .env("ANSIBLE_CONFIG", ansible_dir.join("ansible.cfg"))
        .env("ANSIBLE_HOME", work.path().join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", work.path().join("ansible-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("run ansible-playbook");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("ansible-playbook took {:?}", started.elapsed());
    // 2: a host failed; the rollout did not complete.
    assert_eq!(out.status.code(), Some(2), "{log}");

    // What each nginx really serves, and what is on disk.
    let [web1, web2, web3] = [&hosts[0], &hosts[1], &hosts[2]];
    assert_eq!(
        get(web1.listen),
        (200, "new-1".into()),
        "web1 reloaded\n{log}"
    );
    assert_eq!(web1.app_conf(), web1.new_conf);
    assert_eq!(
        get(web2.listen),
        (200, "old-2".into()),
        "web2 back on old\n{log}"
    );
    assert_eq!(web2.app_conf(), web2.old_conf, "web2's files rolled back");
    assert_eq!(
        get(web3.listen),
        (200, "old-3".into()),
        "web3 untouched\n{log}"
    );
    assert_eq!(web3.app_conf(), web3.old_conf, "web3's files untouched");

    // What the play reported, per host.
    let report = |name: &str| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(results.join(format!("{name}.json"))).ok()?;
        Some(serde_json::from_str(&text).expect("result file is JSON"))
    };
    let r1 = report("web1").unwrap_or_else(|| panic!("no result for web1\n{log}"));
    assert_eq!(
        (r1["outcome"].as_str(), r1["rc"].as_i64()),
        (Some("reloaded"), Some(0))
    );
    assert_eq!(r1["exit_code"], 0);
    let r2 = report("web2").unwrap_or_else(|| panic!("no result for web2\n{log}"));
    assert_eq!(
        (r2["outcome"].as_str(), r2["rc"].as_i64()),
        (Some("rolled_back"), Some(3))
    );
    assert_eq!(r2["exit_code"], 3);
    assert!(
        report("web3").is_none(),
        "web3 must not have been reached\n{log}"
    );
    assert!(
        log.contains("\"web1\": \"reloaded (exit 0)\""),
        "summary\n{log}"
    );
    assert!(
        log.contains("\"web2\": \"rolled_back (exit 3)\""),
        "summary\n{log}"
    );
    assert!(
        !log.contains("web3"),
        "web3 appears in the play output\n{log}"
    );
}
