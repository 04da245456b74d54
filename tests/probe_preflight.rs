//! The listen preflight against real listeners held by another program (a python3 child), and
//! the helper that finds an nginx master's children.

mod probe_support;
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use probe_support::*;
use safe_reload::conf::ListenAddr;
use safe_reload::preflight::{listen_conflicts, nginx_pids};
use support::wait_for;

/// A python3 process listening on `ip`:0; returns it and the address it bound. A port some
/// other process holds on another address (a parallel test's nginx on 127.0.0.1) would be a
/// second holder of the same port for a wildcard listen: such a port is given back and
/// another one taken.
fn python_listener(ip: &str) -> (Guard, SocketAddr) {
    for _ in 0..20 {
        let (guard, addr) = python_listener_once(ip);
        // (A wildcard bind would clash with the python socket itself.)
        let elsewhere = std::net::TcpListener::bind(("127.0.0.1", addr.port())).is_err();
        if !elsewhere {
            return (guard, addr);
        }
    }
    panic!("no port on {ip} that is free on every other address, in 20 tries");
}

fn python_listener_once(ip: &str) -> (Guard, SocketAddr) {
    let script = format!(
        "import socket,sys,time\ns=socket.socket()\ns.bind(('{ip}',0))\ns.listen(8)\n\
         print(s.getsockname()[1],flush=True)\ntime.sleep(60)\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let out = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("port line");
    let port: u16 = line.trim().parse().expect("a port");
    (guard, format!("{ip}:{port}").parse().unwrap())
}

#[test]
fn listen_held_by_another_program_names_the_holder() {
    let (guard, held) = python_listener("127.83.30.1");
    let servers = vec![
        server_listening(ListenAddr::Tcp(held), 12),
        server_listening(
            ListenAddr::Tcp(format!("0.0.0.0:{}", held.port()).parse().unwrap()),
            20,
        ),
        server_listening(
            ListenAddr::Tcp(format!("127.83.30.2:{}", held.port()).parse().unwrap()),
            30,
        ),
    ];
    let conflicts = listen_conflicts(&servers, &[]);
    let lines: Vec<u32> = conflicts.iter().map(|c| c.line).collect();
    assert_eq!(lines, vec![12, 20], "{conflicts:?}");
    let pid = guard.0.id() as i32;
    for c in &conflicts {
        assert_eq!(c.held, held.to_string());
        assert!(c
            .holders
            .iter()
            .any(|h| h.pid == pid && h.program == "python3"));
        let msg = c.message();
        assert!(msg.contains(&format!("python3 (pid {pid})")), "{msg}");
        assert!(msg.contains("/etc/nginx/nginx.conf:"), "{msg}");
    }

    // The same socket held by "our nginx" is no conflict for the listens that reuse it; the
    // wildcard is, now as nginx's own: a reload keeps the specific socket open while it binds
    // the wildcard.
    let own = listen_conflicts(&servers, &[pid]);
    let lines: Vec<(u32, bool)> = own.iter().map(|c| (c.line, c.nginx.is_some())).collect();
    assert_eq!(lines, vec![(20, true)], "{own:?}");
}

#[test]
fn unix_listen_held_by_another_process_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nginx.sock");
    let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let servers = vec![server_listening(ListenAddr::Unix(path.clone()), 7)];
    let conflicts = listen_conflicts(&servers, &[1]);
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].holders[0].pid, std::process::id() as i32);
}

#[test]
fn nginx_pids_lists_master_and_children() {
    let (guard, _) = python_listener("127.83.31.1");
    let me = std::process::id() as i32;
    let pids = nginx_pids(me);
    assert_eq!(pids[0], me);
    let child = guard.0.id() as i32;
    assert!(
        wait_for(Duration::from_secs(2), || nginx_pids(me).contains(&child)),
        "{pids:?}"
    );
}
