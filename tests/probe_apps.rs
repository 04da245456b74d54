//! End to end against the application servers the article names: Debian's php-fpm on a unix
//! socket and gunicorn (from PyPI) on TCP, each with a private config and runtime directory,
//! stopped by PID. The config names the wrong socket or port; the hint must name the real one.

mod probe_support;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use probe_support::*;
use safe_reload::probe::{probe_all, Status};
use support::wait_for;

const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

/// Debian's php-fpm with one pool on `DIR/run/php/php8.2-fpm.sock`, started and waited for.
fn php_fpm_on_a_socket() -> (tempfile::TempDir, PathBuf, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run/php");
    std::fs::create_dir_all(&run).unwrap();
    let sock = run.join("php8.2-fpm.sock");
    let conf = dir.path().join("php-fpm.conf");
    let text = format!(
        "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\
         [www]\nlisten = {s}\nlisten.mode = 0666\npm = static\npm.max_children = 1\n",
        d = dir.path().display(),
        s = sock.display()
    );
    std::fs::write(&conf, text).unwrap();
    let mut cmd = Command::new(PHP_FPM);
    cmd.arg("-n")
        .arg("-y")
        .arg(&conf)
        .arg("-p")
        .arg(dir.path())
        .arg("-F");
    if is_root() {
        cmd.arg("-R");
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {PHP_FPM}: {e} (apt-get install php8.2-fpm)"));
    let fpm = Guard(child);
    let up = wait_for(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let log = std::fs::read_to_string(dir.path().join("php-fpm.log")).unwrap_or_default();
    assert!(up, "php-fpm did not listen on {}: {log}", sock.display());
    (dir, sock, fpm)
}

#[test]
fn php_fpm_wrong_socket_path_hint_names_the_pool_socket() {
    let (dir, sock, fpm) = php_fpm_on_a_socket();
    let wrong = dir.path().join("run/php-fpm.sock");
    let report = probe_all(&targets(vec![unix(&wrong), unix(&sock)]), &opts(1000));
    assert_eq!(report.results[1].status, Status::Ok);
    let r = &report.results[0];
    assert_eq!(r.status, Status::NoSuchSocket);
    let text = hint_text(r);
    // Named among the sockets that listen (another php-fpm of this machine with a socket of
    // a closer name may be the one proposed).
    assert!(
        text.contains(&format!("listens on {}", sock.display())),
        "hint does not name the pool socket: {text}"
    );
    assert!(
        text.contains(&format!("php-fpm8.2 (pid {})", fpm.0.id())),
        "{text}"
    );
}

/// A `fastcgi_pass` to a missing socket, beside php-fpm's socket and another program's socket
/// of as alike a name: php-fpm's is the one proposed (the other came first, by its path).
#[test]
fn a_fastcgi_hint_proposes_php_fpms_socket_before_another_programs() {
    let (dir, sock, _fpm) = php_fpm_on_a_socket();
    let other = dir.path().join("run/php-fpm2.sock");
    let _other = std::os::unix::net::UnixListener::bind(&other).unwrap();
    let wrong = dir.path().join("run/php-fpm.sock");
    let mut t = unix(&wrong);
    let mut r = reference(10);
    r.directive = safe_reload::conf::targets::Name::of_pass("fastcgi_pass").unwrap();
    t.references = vec![r].into();
    let report = probe_all(&targets(vec![t]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::NoSuchSocket);
    let text = hint_text(r);
    let (fpm_at, other_at) = (
        text.find(&sock.display().to_string()),
        text.find(&other.display().to_string()),
    );
    assert!(fpm_at.is_some() && other_at.is_some(), "{text}");
    // (Another php-fpm on this machine with a socket of a closer name may come first: the
    // order among programs that speak FastCGI is the names'.)
    assert!(fpm_at < other_at, "php-fpm's socket first: {text}");
    assert!(
        !text.contains(&format!("point the config at unix:{}", other.display())),
        "{text}"
    );
}

/// gunicorn in a venv under `target/`, installed on first use (scripts/test.sh does it first).
fn gunicorn() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv");
    let bin = venv.join("bin/gunicorn");
    if bin.exists() {
        return bin;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    let installed = made
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "gunicorn"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        installed && bin.exists(),
        "gunicorn is not installed and could not be: run `python3 -m venv target/test-venv && \
         target/test-venv/bin/pip install gunicorn`"
    );
    bin
}

#[test]
fn gunicorn_wrong_port_hint_names_gunicorns_port() {
    let bin = gunicorn();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n",
    )
    .unwrap();
    let host = "127.83.40.1";
    let bound: SocketAddr = format!("{host}:{}", free_port(host)).parse().unwrap();
    let child = Command::new(&bin)
        .arg("--chdir")
        .arg(dir.path())
        .args(["--workers", "1", "--bind", &bound.to_string(), "app:app"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gunicorn starts");
    let app = Guard(child);
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(bound).is_ok()
        }),
        "gunicorn did not listen on {bound}"
    );

    let wrong: SocketAddr = format!("{host}:{}", free_port(host)).parse().unwrap();
    let report = probe_all(&targets(vec![ip(wrong), ip(bound)]), &opts(1000));
    assert_eq!(report.results[1].status, Status::Ok);
    let r = &report.results[0];
    assert_eq!(r.status, Status::Refused);
    let text = hint_text(r);
    assert!(
        text.contains(&format!("gunicorn (pid {}) listens on {bound}", app.0.id())),
        "hint does not name gunicorn's port: {text}"
    );
}
