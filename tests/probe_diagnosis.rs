//! One test per diagnosis: real listeners and sockets started here, probed through
//! `probe_all`, and the hint checked for the facts an operator needs (address, port, program).
//! Each test owns its own 127.83.N.x addresses so tests may run in parallel.

#![allow(clippy::print_stdout)] // a skipped test says why on stdout

mod probe_support;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;

use probe_support::*;
use safe_reload::probe::{probe_all, Severity, Status};

#[test]
fn wrong_port_hint_names_the_listening_port_and_program() {
    let right = TcpListener::bind("127.83.1.1:0").unwrap();
    let right_addr = right.local_addr().unwrap();
    let wrong: SocketAddr = format!("127.83.1.1:{}", free_port("127.83.1.1"))
        .parse()
        .unwrap();
    let report = probe_all(&targets(vec![ip(wrong)]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::Refused);
    assert_eq!(r.severity, Severity::Failure);
    assert!(r.errno.as_deref().unwrap().contains("Connection refused"));
    let text = hint_text(r);
    assert!(
        text.contains(&format!("nothing listens on {wrong}")),
        "{text}"
    );
    assert!(text.contains(&right_addr.to_string()), "{text}");
    let me = format!("{} (pid {})", own_program(), std::process::id());
    assert!(text.contains(&me), "{text}");
}

#[test]
fn wrong_address_hint_names_the_other_loopback_address() {
    let real = TcpListener::bind("127.83.2.2:0").unwrap();
    let port = real.local_addr().unwrap().port();
    let wrong: SocketAddr = format!("127.83.2.1:{port}").parse().unwrap();
    let report = probe_all(&targets(vec![ip(wrong)]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::Refused);
    let text = hint_text(r);
    assert!(
        text.contains(&format!("nothing listens on {wrong}, but"))
            && text.contains(&format!("127.83.2.2:{port}")),
        "{text}"
    );
}

#[test]
fn missing_socket_hint_names_a_similar_socket() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("php8.2-fpm.sock");
    let _l = UnixListener::bind(&real).unwrap();
    let wrong = dir.path().join("php-fpm.sock");
    let report = probe_all(&targets(vec![unix(&wrong)]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::NoSuchSocket);
    assert_eq!(r.severity, Severity::Failure);
    let text = hint_text(r);
    assert!(text.contains(&format!("unix:{}", real.display())), "{text}");
}

#[test]
fn stale_socket_file_is_refused_and_called_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "closing a unix listener leaves its file");
    let report = probe_all(&targets(vec![unix(&path)]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::Refused);
    let text = hint_text(r);
    assert!(text.contains("nothing listens on it"), "{text}");
}

#[test]
fn regular_file_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    std::fs::write(&path, b"").unwrap();
    let report = probe_all(&targets(vec![unix(&path)]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::NotASocket);
    assert!(hint_text(r).contains("is a regular file, not a socket"));
}

#[test]
fn socket_mode_0600_denies_worker_user_nobody() {
    if !is_root() {
        println!("skipped: needs root to own a socket that `nobody` may not open");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("app.sock");
    let _l = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut o = opts(1000);
    o.worker_user = Some("nobody".into());

    let report = probe_all(&targets(vec![unix(&path)]), &o);
    let r = &report.results[0];
    assert_eq!(r.status, Status::PermissionDenied);
    assert_eq!(r.severity, Severity::Failure);
    let text = hint_text(r);
    assert!(
        text.contains("worker user `nobody` (group `nogroup`) cannot open")
            && text.contains("mode 0600 owner root"),
        "{text}"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let report = probe_all(&targets(vec![unix(&path)]), &o);
    let text = hint_text(&report.results[0]);
    assert_eq!(report.results[0].status, Status::PermissionDenied);
    assert!(
        text.contains(&format!("the directory {}", dir.path().display())),
        "{text}"
    );

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = probe_all(&targets(vec![unix(&path)]), &o);
    assert_eq!(report.results[0].status, Status::Ok);
}

#[test]
fn full_accept_queue_times_out() {
    let hung = hung_listener("127.83.7.1");
    let report = probe_all(&targets(vec![ip(hung.addr)]), &opts(300));
    let r = &report.results[0];
    assert_eq!(r.status, Status::Timeout);
    assert_eq!(r.severity, Severity::Failure);
    assert!(r.elapsed.as_millis() >= 290, "{:?}", r.elapsed);
    assert!(
        hint_text(r).contains("accept queue is full"),
        "{}",
        hint_text(r)
    );
}

#[test]
fn full_unix_accept_queue_fails_at_once_like_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let listener =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    listener.listen(0).unwrap();
    // Fill the queue with non-blocking connects until one is turned away.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let c = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        c.set_nonblocking(true).unwrap();
        let full = c.connect(&socket2::SockAddr::unix(&path).unwrap()).is_err();
        clients.push(c);
        if full {
            break;
        }
    }
    let report = probe_all(&targets(vec![unix(&path)]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::Error);
    assert!(r.errno.as_deref().unwrap().starts_with("11:"), "{r:?}");
    assert!(r.elapsed.as_millis() < 500, "{:?}", r.elapsed);
    assert!(
        hint_text(r).contains("accept queue is full"),
        "{}",
        hint_text(r)
    );
}
