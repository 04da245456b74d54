//! Listens nginx keeps itself from binding, which `nginx -t` cannot see (it ignores "address
//! in use"): a wildcard added on a port where the running nginx holds a specific address (a
//! reload keeps that socket open while it binds the wildcard), and a `stream {}` listen on an
//! address `http {}` uses. Both are refused before the signal, naming both listens; the
//! reverse of the first is refused too where no wildcard is left to serve the address, and a
//! specific address added beside a wildcard that stays reloads. The
//! wildcard tests run in a private network namespace, so `0.0.0.0` binds loopback only. And a
//! shared memory zone a reload keeps, declared anew with another key, which nginx refuses.

mod support;

use std::net::SocketAddr;

use support::*;

/// The line of nginx.conf that holds `needle`, as `nginx.conf:N`.
fn place(n: &TestNginx, needle: &str) -> String {
    let text = std::fs::read_to_string(&n.conf).expect("read nginx.conf");
    let line = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in nginx.conf"));
    format!("nginx.conf:{}", line + 1)
}

#[test]
fn a_wildcard_listen_added_beside_a_held_specific_address_is_refused_before_the_reload() {
    let test =
        "a_wildcard_listen_added_beside_a_held_specific_address_is_refused_before_the_reload";
    if !in_private_network(test) {
        return;
    }
    let ip = unique_loopback();
    let port = free_port(ip);
    let site = SocketAddr::new(ip, port);
    let base = format!("server {{ listen {site}; return 200 \"old\"; }}");
    let n = TestNginx::start(&base);
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&format!(
        "{base}\nserver {{ listen {port}; return 200 \"new\"; }}"
    ));
    let (specific, wildcard) = (
        place(&n, &format!("listen {site};")),
        place(&n, &format!("listen {port};")),
    );
    let workers = n.ready_workers();
    let run = sr.run(&["-y"]);
    run.expect(1);
    for said in [
        specific.as_str(),
        wildcard.as_str(),
        "a restart, not a reload",
        "Address already in use",
    ] {
        assert!(run.stderr.contains(said), "{said:?} in:\n{run}");
    }
    assert_eq!(n.ready_workers(), workers, "nginx was not signalled");
    assert!(
        !n.error_log_text().contains("bind()"),
        "{}",
        n.error_log_text()
    );
    let (status, body) = http_get(site, "a.test", "/").expect("GET the site");
    assert_eq!((status, body.as_str()), (200, "old"));
}

#[test]
fn a_specific_address_added_where_the_wildcard_is_held_reloads() {
    let test = "a_specific_address_added_where_the_wildcard_is_held_reloads";
    if !in_private_network(test) {
        return;
    }
    let ip = unique_loopback();
    let port = free_port(ip);
    let base = format!("server {{ listen {port}; return 200 \"old\"; }}");
    let n = TestNginx::start(&base);
    let sr = SafeReload::new(&n);
    sr.init();
    let site = SocketAddr::new(ip, port);
    n.write_http(&format!(
        "{base}\nserver {{ listen {site}; return 200 \"new\"; }}"
    ));
    sr.run(&["-y"]).expect(0);
    let (status, body) = http_get(site, "a.test", "/").expect("GET the new site");
    assert_eq!((status, body.as_str()), (200, "new"));
}

/// The wildcard moved to a specific address of its port (`listen P;` to `listen IP:P;`):
/// no wildcard is left to serve it through, so nginx binds the address apart while its own
/// wildcard socket still listens, and the bind fails 2.5 s after the signal (r16 z F3: exit
/// 3, "the change failed after the reload"). Refused before the signal, as the other way is.
#[test]
fn a_wildcard_moved_to_a_specific_address_of_its_port_is_refused_before_the_reload() {
    let test = "a_wildcard_moved_to_a_specific_address_of_its_port_is_refused_before_the_reload";
    if !in_private_network(test) {
        return;
    }
    let ip = unique_loopback();
    let port = free_port(ip);
    let n = TestNginx::start(&format!("server {{ listen {port}; return 200 \"old\"; }}"));
    let sr = SafeReload::new(&n);
    sr.init();
    let site = SocketAddr::new(ip, port);
    n.write_http(&format!("server {{ listen {site}; return 200 \"new\"; }}"));
    let workers = n.ready_workers();
    let run = sr.run(&["-y"]);
    run.expect(1);
    for said in [
        "holds the wildcard",
        "a restart, not a reload",
        "from a wildcard to specific addresses",
    ] {
        assert!(run.stderr.contains(said), "{said:?} in:\n{run}");
    }
    assert_eq!(n.ready_workers(), workers, "nginx was not signalled");
    let (status, body) = http_get(site, "a.test", "/").expect("GET the site");
    assert_eq!((status, body.as_str()), (200, "old"));
}

#[test]
fn a_stream_listen_on_an_http_address_is_refused_before_the_reload() {
    let ip = unique_loopback();
    let site = SocketAddr::new(ip, free_port(ip));
    let http = format!("server {{ listen {site}; return 200 \"http\"; }}");
    let n = TestNginx::builder().http(&http).stream("").start();
    let sr = SafeReload::new(&n);
    sr.init();
    let candidate = n.render(&http).replace(
        "stream {\n\n}",
        &format!("stream {{\nserver {{ listen {site}; return \"stream\"; }}\n}}"),
    );
    std::fs::write(&n.conf, candidate).expect("write nginx.conf");
    let (passed, said) = n.test();
    assert!(passed, "nginx -t passes the candidate: {said}");
    let lines: Vec<String> = {
        let text = std::fs::read_to_string(&n.conf).unwrap();
        let needle = format!("listen {site};");
        (text.lines().enumerate())
            .filter(|(_, l)| l.contains(&needle))
            .map(|(i, _)| format!("nginx.conf:{}", i + 1))
            .collect()
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    let workers = n.ready_workers();
    let run = sr.run(&["-y"]);
    run.expect(1);
    for said in lines
        .iter()
        .map(String::as_str)
        .chain(["never share a socket"])
    {
        assert!(run.stderr.contains(said), "{said:?} in:\n{run}");
    }
    assert_eq!(n.ready_workers(), workers, "nginx was not signalled");
    let (status, body) = http_get(site, "a.test", "/").expect("GET the site");
    assert_eq!((status, body.as_str()), (200, "http"));
}

/// A new stream `listen ... udp` on a UDP port another program has bound: refused before the
/// reload, naming the program, where the reload failed after nginx's 2.5 s of bind retries
/// and was rolled back. The running stream server still answers.
#[test]
fn a_udp_listen_on_a_port_another_program_bound_is_refused_before_the_reload() {
    let ip = unique_loopback();
    let echo = UdpEcho::start(SocketAddr::new(ip, 0));
    let taken = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind udp");
    let held = taken.local_addr().expect("addr");
    let tcp = SocketAddr::new(ip, free_port(ip));
    let stream = format!("server {{ listen {tcp}; return \"tcp\"; }}");
    let n = TestNginx::builder().stream(&stream).start();
    let sr = SafeReload::new(&n);
    sr.init();
    let candidate = n.render("").replace(
        &stream,
        &format!(
            "{stream}\nserver {{ listen {held} udp; proxy_pass {}; proxy_responses 1; }}",
            echo.addr
        ),
    );
    std::fs::write(&n.conf, candidate).expect("write nginx.conf");
    let (passed, said) = n.test();
    assert!(passed, "nginx -t passes the candidate: {said}");
    let workers = n.ready_workers();
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(1);
    let pid = std::process::id();
    assert!(
        run.stderr
            .contains(&format!("nginx cannot listen on {held}"))
            && run
                .stderr
                .contains(&format!("(pid {pid}) listens on {held} (udp)")),
        "{run}"
    );
    assert_eq!(n.ready_workers(), workers, "nginx was not signalled");
    let mut s = std::net::TcpStream::connect(tcp).expect("the stream server");
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body).expect("read");
    assert_eq!(body, "tcp");
    drop(taken);
}

/// Two listens of one change that nginx binds apart on the same port, the second failing:
/// `listen IP:P;` with `listen [::]:P ipv6only=off;`, and `listen IP:P bind;` with `listen P;`.
/// `nginx -t` passes both; the reload failed after 2.5 s of bind retries. Each is refused
/// before the reload, naming both listens, and nginx serves what it served.
#[test]
fn two_listens_of_the_change_that_cannot_both_bind_are_refused_before_the_reload() {
    let ip = unique_loopback();
    let site = SocketAddr::new(ip, free_port(ip));
    let http = format!("server {{ listen {site}; return 200 \"old\"; }}");
    let n = TestNginx::start(&http);
    let sr = SafeReload::new(&n);
    sr.init();
    let port = free_port(ip);
    for (added, says) in [
        (
            format!("listen {ip}:{port}; listen [::]:{port} ipv6only=off;"),
            format!("[::]:{port} with ipv6only=off takes IPv4 port {port} too"),
        ),
        (
            format!("listen {ip}:{port} bind; listen {port};"),
            "binds a socket of its own (bind)".to_string(),
        ),
    ] {
        let candidate = format!("{http}\nserver {{ {added} return 200 \"new\"; }}");
        n.write_http(&candidate);
        let (passed, said) = n.test();
        assert!(passed, "nginx -t passes the candidate: {said}");
        let workers = n.ready_workers();
        let run = sr.run(&["-y", "--no-shadow"]);
        run.expect(1);
        assert!(
            run.stderr.contains(&says) && run.stderr.contains("nginx.conf:"),
            "{run}"
        );
        assert_eq!(n.ready_workers(), workers, "nginx was not signalled");
        assert_eq!(http_get(site, "a.test", "/").expect("GET").1, "old");
    }
}

/// A new `listen unix:` on a socket file a crashed process left (nothing listens on it):
/// nginx does not remove it before it binds, and the reload failed with "Address already in
/// use" after 2.5 s, then rolled back. Refused before the reload, saying to remove the file;
/// once it is removed, the same change goes live.
#[test]
fn a_unix_listen_on_a_stale_socket_file_is_refused_before_the_reload() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("web.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    // Left there a while ago, as a crashed app's is.
    let touched = std::process::Command::new("touch")
        .args(["-d", "1 minute ago"])
        .arg(&sock)
        .status()
        .expect("touch");
    assert!(touched.success());
    let site = |extra: &str| {
        format!("server {{ listen {listen}; {extra} server_name a.test; return 200 \"a\"; }}")
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let workers = n.ready_workers();
    n.write_http(&site(&format!("listen unix:{};", sock.display())));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr.contains(&format!(
            "the socket file {} is left by a process that is gone",
            sock.display()
        )),
        "{run}"
    );
    assert_eq!(n.ready_workers(), workers, "nginx was not signalled");
    std::fs::remove_file(&sock).expect("rm");
    sr.run(&["-y"]).expect(0);
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").1, "a");
    assert!(
        std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        "nginx listens there"
    );
}

/// A port typo in a `stream {}` server's `listen` (9101 written 9102): the old port goes dark,
/// and the run said nothing (stream servers have no name, and no request checks them). Said
/// as a warning; it goes live, as moving a port is done on purpose too.
#[test]
fn a_stream_listen_left_is_said() {
    let ip = unique_loopback();
    let (old, new) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let stream = |at: SocketAddr| format!("server {{ listen {at}; return \"tcp\"; }}");
    let n = TestNginx::builder().stream(&stream(old)).start();
    let sr = SafeReload::new(&n);
    sr.init();
    let candidate = n.render("").replace(&stream(old), &stream(new));
    std::fs::write(&n.conf, candidate).expect("write nginx.conf");
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stderr.contains(&format!(
            "nginx no longer listens on {old} (stream): the stream server at nginx.conf"
        )),
        "{run}"
    );
    assert!(
        std::net::TcpStream::connect(old).is_err(),
        "the old port is dark"
    );
    let mut s = std::net::TcpStream::connect(new).expect("the new port");
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body).expect("read");
    assert_eq!(body, "tcp");
}

/// r15 w F3: a TCP stream server gains `listen ... udp` while its backend has no UDP socket.
/// Last-good used the backend from the same server, so its failing UDP probe was taken for
/// one that was there before ("already down before this change"): live, and every datagram
/// went unanswered. Datagrams are a use of their own: refused, and TCP still answers.
#[test]
fn a_udp_listen_added_to_a_tcp_stream_server_whose_backend_has_no_udp_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let port = free_port(ip);
    let tcp = SocketAddr::new(ip, port);
    let stream = format!("server {{ listen {tcp}; proxy_pass {}; }}", app.host_port());
    let n = TestNginx::builder().stream(&stream).start();
    let sr = SafeReload::new(&n);
    sr.init();
    let candidate = n.render("").replace(
        &stream,
        &format!(
            "server {{ listen {tcp}; listen {tcp} udp; proxy_pass {}; }}",
            app.host_port()
        ),
    );
    std::fs::write(&n.conf, candidate).expect("write nginx.conf");
    let workers = n.ready_workers();
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert_eq!(n.ready_workers(), workers, "nginx was not signalled: {run}");
    assert_eq!(
        http_get(tcp, "s.test", "/").ok().map(|a| a.1),
        Some("app".into())
    );
}

/// `limit_req_zone` with another key, at the zone's name and size: `nginx -t` passes (it starts
/// with no zones), and the reload fails on the zone nginx keeps across it (`[emerg]
/// limit_req "one" uses the "$server_name" key while previously it used the
/// "$binary_remote_addr" key`): it was exit 3, "the change failed after the reload", and every
/// retry failed alike (r16 z F4). Refused before the signal, saying what to do; the same key
/// change with a new size (a new zone) reloads.
#[test]
fn a_limit_req_zone_given_another_key_at_its_size_is_refused_before_the_reload() {
    let ip = unique_loopback();
    let site = SocketAddr::new(ip, free_port(ip));
    let conf = |key: &str, size: &str| {
        format!(
            "limit_req_zone {key} zone=one:{size} rate=100r/s;\n\
             server {{ listen {site}; location / {{ limit_req zone=one burst=10; \
             return 200 \"ok\"; }} }}"
        )
    };
    let n = TestNginx::start(&conf("$binary_remote_addr", "1m"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&conf("$server_name", "1024k"));
    let workers = n.ready_workers();
    let run = sr.run(&["-y"]);
    run.expect(1);
    for said in [
        "zone \"one\" changes its key from \"$binary_remote_addr\" to \"$server_name\"",
        "restart nginx",
    ] {
        assert!(run.stderr.contains(said), "{said:?} in:\n{run}");
    }
    assert_eq!(n.ready_workers(), workers, "nginx was not signalled");
    assert_eq!(http_get(site, "a.test", "/").ok(), Some((200, "ok".into())));
    n.write_http(&conf("$server_name", "2m"));
    sr.run(&["-y"]).expect(0);
    assert_eq!(http_get(site, "a.test", "/").ok(), Some((200, "ok".into())));
}
