//! Verdicts after the reload that were wrong on ordinary sites, through the binary with a real
//! nginx and real backends: a PHP site whose php-fpm answers the checks' made-up path with its
//! 404, a location behind `auth_basic`, a slow but healthy backend, a server on a unix socket,
//! a change to more servers than one round checks.
//! Each checks the exit status and what nginx serves afterwards.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use support::*;

/// `fastcgi_param` lines a PHP site needs, written out (Debian's `fastcgi_params` reads
/// `$server_port`, which the shadow treats apart).
const FASTCGI: &str = "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; \
     fastcgi_param SCRIPT_NAME $fastcgi_script_name; \
     fastcgi_param REQUEST_METHOD $request_method; \
     fastcgi_param QUERY_STRING $query_string;";

/// The lines a location passes WebSocket handshakes on with.
const UPGRADE: &str = "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; \
     proxy_set_header Connection \"upgrade\";";

/// `io.test` on `listen`: `location /` to `app`, `extra`, then `socket` (a location key such
/// as `/socket.io/` or `~ ^/(ws|socket\.io)/`) to the WebSocket server `ws` with [`UPGRADE`].
fn socket_site(listen: SocketAddr, app: &str, extra: &str, socket: &str, ws: SocketAddr) -> String {
    format!(
        "server {{ listen {listen}; server_name io.test; location / {{ proxy_pass http://{app}; }} \
         {extra} location {socket} {{ proxy_pass http://{ws}; {UPGRADE} }} }}"
    )
}

/// A document root php-fpm's worker (`nobody`) can read, holding `index.php`.
fn php_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.php"), "<?php echo \"php ok\";\n").expect("index.php");
    for p in [dir.path().to_path_buf(), dir.path().join("index.php")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// Adding a working PHP site (`SCRIPT_FILENAME $document_root$fastcgi_script_name`): the
/// check of its `~ \.php$` location asks for a script that does not exist, php-fpm answers 404
/// and nginx logs its stderr ("Primary script unknown"). That is the backend answering, not an
/// upstream failure: the site stays, exit 0 (it was rolled back, exit 3).
#[test]
fn a_php_site_whose_backend_answers_the_check_with_primary_script_unknown_is_kept() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let base = format!(
        "server {{ listen {listen}; server_name a.test; location / {{ return 200 \"a\"; }} }}"
    );
    let n = TestNginx::start(&base);
    let sr = SafeReload::new(&n);
    sr.init();
    let php = format!(
        "{base}\nserver {{ listen {listen}; server_name g.test; root {}; index index.php; \
         location ~ \\.php$ {{ {FASTCGI} fastcgi_pass {}; }} }}",
        root.path().display(),
        fpm.addr
    );
    n.write_http(&php);
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        !run.stderr.contains("upstream error") && !run.stderr.contains("another server"),
        "{run}"
    );
    let (status, body) = http_get(listen, "g.test", "/index.php").expect("GET /index.php");
    assert_eq!((status, body.contains("php ok")), (200, true), "{body}");
    let (status, _) = http_get(listen, "g.test", "/nothing.php").expect("GET");
    assert_eq!(status, 404, "php-fpm's own 404");
}

/// A PHP site whose only location is `location ~ \.php$`, behind `index index.php`, and a
/// change that sends `SCRIPT_FILENAME` to a wrong docroot: every page answers 404. The check
/// asked a made-up `/safe-reload-check.php`, which php-fpm answers 404 before and after, and
/// the change went live "verified" (r9 H F10). The location's check now asks the index script
/// that exists under the root (`/index.php`, which `/` reaches too): 200 before, 404 in the
/// shadow, refused; and the pages still answer.
#[test]
fn a_php_site_behind_index_php_is_checked_on_its_index_script() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |script: &str| {
        format!(
            "server {{ listen {listen}; server_name php.test; root {}; index index.php;\n\
             location ~ \\.php$ {{ {} fastcgi_pass {}; }} }}",
            root.path().display(),
            FASTCGI.replace("$document_root$fastcgi_script_name", script),
            fpm.addr
        )
    };
    let n = TestNginx::start(&site("$document_root$fastcgi_script_name"));
    let sr = SafeReload::new(&n);
    sr.init();
    let page = || http_get(listen, "php.test", "/").expect("GET /");
    assert!(page().1.contains("php ok"), "served before");
    n.write_http(&site("/srv/none$fastcgi_script_name"));

    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert!(run.stdout.contains("/index.php"), "{run}");
    assert!(page().1.contains("php ok"), "refused: {run}");

    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert!(page().1.contains("php ok"), "rolled back: {run}");
}

/// An upstream a location reaches through its regex's capture (`location ~
/// ^/svc/(?<svc>alpha|beta)/` with `proxy_pass http://$svc/$rest;`): a change to `upstream
/// beta` "affected 0 servers" and went live verified while `/svc/beta/` answered 502 (r9 I
/// F17). The capture's values name the server's upstreams, and each gets a check of its own
/// path: a dead port is refused by the probe, a backend answering 502 by the shadow, and a
/// working one goes live; `/svc/beta/` is served throughout.
#[test]
fn an_upstream_a_regex_capture_names_is_the_servers_and_checked_on_its_own_path() {
    let ip = unique_loopback();
    let alpha = HttpBackend::start(SocketAddr::new(ip, 0), "alpha");
    let beta = HttpBackend::start(SocketAddr::new(ip, 0), "beta");
    let beta2 = HttpBackend::start(SocketAddr::new(ip, 0), "beta2");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |b: &str| {
        format!(
            "upstream alpha {{ server {}; }}\nupstream beta {{ server {b}; }}\n\
             server {{ listen {listen}; server_name svc.test;\n\
             location ~ ^/svc/(?<svc>alpha|beta)/(?<rest>.*)$ {{ proxy_pass http://$svc/$rest; }} }}",
            alpha.host_port()
        )
    };
    let n = TestNginx::start(&site(&beta.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let get = |p: &str| http_get(listen, "svc.test", p).ok();
    assert_eq!(get("/svc/beta/x"), Some((200, "beta".into())));

    n.write_http(&site(&dead.to_string()));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr.contains(&format!("FAIL {dead}")) && run.stderr.contains("(upstream beta)"),
        "{run}"
    );
    assert_eq!(get("/svc/beta/x"), Some((200, "beta".into())), "{run}");

    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(get("/svc/beta/x"), Some((200, "beta".into())), "{run}");

    n.write_http(&site(&beta2.host_port()));
    let run = sr.run(&["-y", "-v"]);
    run.expect(0);
    assert!(
        run.to_string().contains("svc.test (upstream beta,"),
        "{run}"
    );
    assert!(
        run.to_string().contains("/svc/beta/"),
        "beta's own check: {run}"
    );
    assert_eq!(get("/svc/beta/x"), Some((200, "beta2".into())));
    assert_eq!(get("/svc/alpha/x"), Some((200, "alpha".into())));
}

/// Captures that name an upstream inside a longer host (`http://$1_pool`, where nginx reads
/// `$1` and then `_pool`; `http://svc_$k` of a group nested in another): a member answering
/// 502 in the pool a second value names went live "verified", only the first value checked
/// (r12 M F2, F3). Every value of the capture names its upstream and gets its own check.
#[test]
fn a_capture_inside_a_longer_upstream_name_is_expanded_too() {
    let ip = unique_loopback();
    let api = HttpBackend::start(SocketAddr::new(ip, 0), "api");
    let web = HttpBackend::start(SocketAddr::new(ip, 0), "web");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |web_at: &str| {
        format!(
            "upstream api_pool {{ server {}; }}\nupstream web_pool {{ server {web_at}; }}\n\
             upstream svc_b {{ server {}; }}\nupstream svc_zz {{ server {web_at}; }}\n\
             server {{ listen {listen}; server_name cap.test;\n\
             location ~ ^/(api|web)/ {{ proxy_pass http://$1_pool; }}\n\
             location ~ ^/n/((?<k>b)|zz)/ {{ proxy_pass http://svc_$1; }} }}",
            api.host_port(),
            api.host_port()
        )
    };
    let n = TestNginx::start(&site(&web.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let get = |p: &str| http_get(listen, "cap.test", p).ok();
    assert_eq!(get("/web/x"), Some((200, "web".into())));
    assert_eq!(get("/n/zz/x"), Some((200, "web".into())));
    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "-v"]);
    run.expect(1);
    assert!(run.to_string().contains("/web/"), "{run}");
    assert!(run.to_string().contains("/n/zz/"), "{run}");
    assert_eq!(get("/web/x"), Some((200, "web".into())), "refused");
}

/// A regex `server_name` whose capture picks the upstream (`~^(?<app>x|y|z)\.test$` with
/// `proxy_pass http://$app`): one Host was derived from it, so only `x.test` was checked, and
/// `upstream z` pointed at a backend answering 502 went live "verified" (r12 M F4). Each value
/// of the capture gets a Host of its own: refused, and z.test still answers.
#[test]
fn each_value_of_a_regex_names_capture_gets_a_host_of_its_own() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |z: &str| {
        format!(
            "upstream x {{ server {a}; }}\nupstream y {{ server {a}; }}\nupstream z {{ server {z}; }}\n\
             server {{ listen {listen}; server_name ~^(?<app>x|y|z)\\.test$;\n\
             location / {{ proxy_pass http://$app; }} }}",
            a = app.host_port()
        )
    };
    let n = TestNginx::start(&site(&app.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let get = |h: &str| http_get(listen, h, "/").ok();
    assert_eq!(get("z.test"), Some((200, "app".into())));
    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "-v"]);
    run.expect(1);
    assert!(run.to_string().contains("http://z.test/"), "{run}");
    assert_eq!(get("z.test"), Some((200, "app".into())), "refused");
}

/// The status line of `GET path` through nginx, without waiting for a body that may never end.
fn status_line(listen: SocketAddr, host: &str, path: &str) -> Option<String> {
    use std::io::{BufRead, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&listen, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim_end().to_string())
}

/// A Server-Sent-Events location (`200 text/event-stream`, then an event now and then for as
/// long as the client reads): the check read its body until the peer closed, which it never
/// does, and the run hung with no output, SIGTERM or `--health-timeout` aside, the lock held;
/// with `--no-shadow` after reloading nginx (r11 L F4). A body still coming at the check's
/// deadline ends the read: its status and header are the answer. Adding the location, and a
/// later change to the server, finish with exit 0, and the feed answers 200 through nginx.
#[test]
fn a_server_sent_events_location_is_checked_without_reading_its_endless_body() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let feed = SseBackend::start(SocketAddr::new(ip, 0));
    // A body that never ends under another type: only the check's deadline ends its read.
    let stream = SseBackend::start_as(SocketAddr::new(ip, 0), "application/octet-stream");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |events: bool, header: &str| {
        let events = match events {
            true => format!(
                "location /events {{ proxy_pass http://{}; proxy_buffering off; \
                 proxy_read_timeout 1h; }}\n\
                 location /download {{ proxy_pass http://{}; proxy_buffering off; }}",
                feed.addr, stream.addr
            ),
            false => String::new(),
        };
        format!(
            "server {{ listen {listen}; server_name live.test; add_header X-V {header};\n\
             location / {{ proxy_pass http://{}; }}\n{events} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site(false, "1"));
    let sr = SafeReload::new(&n);
    sr.init();
    let within = std::time::Duration::from_secs(60);
    for (events, header, args) in [
        (true, "1", &["-y", "--health-timeout", "1s"][..]),
        (true, "2", &["-y", "--health-timeout", "1s"][..]),
        (
            true,
            "3",
            &["-y", "--health-timeout", "1s", "--no-shadow"][..],
        ),
    ] {
        n.write_http(&site(events, header));
        let run = finish(sr.spawn(args), within);
        run.expect(0);
        for path in ["/events", "/download"] {
            assert_eq!(
                status_line(listen, "live.test", path).as_deref(),
                Some("HTTP/1.1 200 OK"),
                "{header} {path}: {run}"
            );
        }
        assert_eq!(
            http_get(listen, "live.test", "/").ok(),
            Some((200, "app".into())),
            "{header}"
        );
    }
}

/// A change behind `auth_basic` that breaks logged-in users: the check gets nginx's own 401,
/// which verifies nothing behind it. The change stays (exit 0: nothing the checks reached got
/// worse), but the headline says what was not verified instead of "live and verified", and
/// says how to check it (it said "live and verified").
#[test]
fn a_location_behind_auth_basic_is_not_called_verified() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, "ops:{PLAIN}s3cret\n").expect("write htpasswd");
    let site = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name e.test; location / {{ return 200 \"e\"; }}\n\
             location /adm/ {{ auth_basic \"adm\"; auth_basic_user_file {}; \
             proxy_pass http://{to}; }} }}",
            users.display()
        )
    };
    let n = TestNginx::start(&site(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "-q", "--no-probe"]);
    run.expect(0);
    assert!(!run.stdout.contains("verified\n"), "{run}");
    assert!(
        run.stdout.contains(
            "reloaded: live; verified 0 of 1 affected server; not verified: e.test location \
             /adm/ (nginx.conf:"
        ),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("hint: e.test location /adm/ is behind authentication: to check the backend, pass --health http://USER:PASS@e.test:"),
        "{run}"
    );
    // Why, for the location the headline names (the text said nothing of it; r12 O).
    assert!(
        run.stderr
            .contains("not verified: e.test location /adm/ (nginx.conf:")
            && run.stderr.contains("answered HTTP 401 by nginx itself"),
        "{run}"
    );
    // What nginx serves: the 401 to strangers, the broken backend to logged-in users.
    let (status, _) = http_get(listen, "e.test", "/adm/").expect("GET");
    assert_eq!(status, 401);
    let (status, _) = http_get_auth(listen, "e.test", "/adm/", "b3BzOnMzY3JldA==").expect("GET");
    assert_eq!(status, 502, "the change is live");
    let report = sr.run(&["history", "--json"]);
    assert!(!report.stdout.contains("s3cret"));
}

/// `GET` with a Basic `Authorization` header (`credentials` already base64).
fn http_get_auth(
    addr: SocketAddr,
    host: &str,
    path: &str,
    credentials: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {credentials}\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = (resp.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))?;
    Ok((status, resp))
}

/// A healthy site slower than `--health-timeout` (every client gets 200, later): a harmless
/// change is kept with exit 0 and a warning naming the limit, and the headline does not call it
/// verified (it exited 4, "got no answer before this change and still does not"). Switching a
/// fast site to that backend is the change's: rolled back, and the reason names the limit.
#[test]
fn a_site_slower_than_the_health_timeout_before_and_after_is_no_page() {
    let ip = unique_loopback();
    let delay = std::time::Duration::from_millis(1500);
    let slow = HttpBackend::start_slow(SocketAddr::new(ip, 0), "slow", delay);
    let fast = HttpBackend::start(SocketAddr::new(ip, 0), "fast");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |to: &str, extra: &str| {
        format!(
            "server {{ listen {listen}; server_name c.test; {extra} \
             location / {{ proxy_pass http://{to}; }} }}"
        )
    };
    let n = TestNginx::start(&site(&slow.host_port(), ""));
    let sr = SafeReload::new(&n);
    sr.init();
    let flags = ["-y", "--no-shadow", "--health-timeout", "1s"];
    n.write_http(&site(&slow.host_port(), "add_header X-S 1;"));
    let run = sr.run(&flags);
    run.expect(0);
    assert!(
        run.stderr
            .contains("warning: http://c.test/ (via ".to_string().as_str())
            && run
                .stderr
                .contains("did not answer within --health-timeout before this change nor after it"),
        "{run}"
    );
    assert!(!run.to_string().contains("operator must act"), "{run}");
    assert!(
        run.stdout
            .contains("reloaded: live; verified 0 of 1 affected server")
            && run.stdout.contains("got no answer within --health-timeout"),
        "{run}"
    );
    let (status, body) = http_get(listen, "c.test", "/").expect("GET");
    assert_eq!((status, body.as_str()), (200, "slow"));

    // A fast site switched to it: too slow for the checks now, and it was not before.
    n.write_http(&site(&fast.host_port(), ""));
    sr.run(&["-y", "--no-shadow"]).expect(0);
    n.write_http(&site(&slow.host_port(), ""));
    let run = sr.run(&flags);
    run.expect(3);
    assert!(run.stderr.contains("slower than --health-timeout"), "{run}");
    let (status, body) = http_get(listen, "c.test", "/").expect("GET");
    assert_eq!((status, body.as_str()), (200, "fast"), "rolled back");
}

/// A rollback whose restored configuration is only slower than `--health-timeout` by the
/// time it is verified (a backend near the limit, or busy with what the rejected change's
/// checks left it) is back to how it was, not worse: exit 3, never "ROLLBACK FAILED" (exit 4,
/// an operator paged for a site whose every client gets 200). The test slows the backend
/// down while the run is stopped right before the rollback's verification
/// (`SAFE_RELOAD_TEST_PAUSE=rollback-verifying`).
#[test]
fn a_restored_configuration_that_is_only_slower_now_is_rolled_back_not_failed() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let ip = unique_loopback();
    let delay = Arc::new(AtomicU64::new(0));
    let app = HttpBackend::start_delayed(SocketAddr::new(ip, 0), "app", delay.clone());
    let crash = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let sites = |d_to: &str, extra: &str| {
        format!(
            "server {{ listen {listen}; server_name c.test; {extra} \
             location / {{ proxy_pass http://{app}; }} }} \
             server {{ listen {listen}; server_name d.test; \
             location / {{ proxy_pass http://{d_to}; }} }}",
            app = app.host_port()
        )
    };
    let n = TestNginx::start(&sites(&app.host_port(), ""));
    let sr = SafeReload::new(&n);
    sr.init();
    // d.test's new backend closes every request: 502 after the reload, rolled back.
    n.write_http(&sites(&crash.addr.to_string(), "add_header X-S 1;"));
    let child = sr
        .command(&["-y", "--no-shadow", "--health-timeout", "1s"])
        .env("SAFE_RELOAD_TEST_PAUSE", "rollback-verifying")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start safe-reload");
    let pid = child.id();
    let stopped = wait_for(std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("T")
        })
    });
    delay.store(1500, Ordering::SeqCst);
    // SAFETY: signalling our own child by pid; it is not reaped before `finish`.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let run = finish(child, std::time::Duration::from_secs(60));
    assert!(
        stopped,
        "never stopped before the rollback's verification: {run}"
    );
    run.expect(3);
    assert!(!run.to_string().contains("operator must act"), "{run}");
    assert!(
        run.stdout.contains("rolled back") && run.stdout.contains("is live"),
        "{run}"
    );
    assert!(
        run.stderr.contains("after the rollback")
            && run.stderr.contains("slower than --health-timeout"),
        "the slow answers are said: {run}"
    );
    delay.store(0, Ordering::SeqCst);
    for host in ["c.test", "d.test"] {
        let (status, body) = http_get(listen, host, "/").expect("GET");
        assert_eq!((status, body.as_str()), (200, "app"), "{host}: {run}");
    }
}

/// Moving a port behind a load balancer that sends the PROXY protocol (every listen of the
/// address gains `proxy_protocol`): the running configuration is asked as its clients ask
/// it, without the header. Sent the header, the old nginx answered 400 to every request; a
/// slow site's timeout after the change was then "the change broke" and the change was rolled
/// back (exit 3). Now the baseline holds the running nginx's real answers, the slow site is
/// slow before and after (a warning), and the change goes live.
#[test]
fn a_port_moved_behind_the_proxy_protocol_is_asked_as_each_side_expects() {
    let ip = unique_loopback();
    let fast = HttpBackend::start(SocketAddr::new(ip, 0), "fast");
    let slow = HttpBackend::start_slow(
        SocketAddr::new(ip, 0),
        "slow",
        std::time::Duration::from_millis(1500),
    );
    let listen = SocketAddr::new(ip, free_port(ip));
    let sites = |flags: &str| {
        format!(
            "server {{ listen {listen}{flags}; server_name a.test; \
             location / {{ proxy_pass http://{fast}; }} }} \
             server {{ listen {listen}{flags}; server_name r.test; \
             location / {{ proxy_pass http://{slow}; }} }}",
            fast = fast.host_port(),
            slow = slow.host_port()
        )
    };
    let n = TestNginx::start(&sites(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&sites(" proxy_protocol"));
    let run = sr.run(&["-y", "--health-timeout", "1s", "--json"]);
    run.expect(0);
    let doc = run.json();
    let before: Vec<_> = (doc["baseline"]["results"].as_array())
        .expect("a baseline")
        .iter()
        .filter(|r| r["host"] == "a.test")
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(before, [serde_json::json!(200)], "{run}");
    let proxied = |host: &str| {
        exchange(
            listen,
            &format!(
                "PROXY TCP4 127.0.0.1 {ip} 40000 {port}\r\nGET / HTTP/1.1\r\nHost: {host}\r\n\
                 Connection: close\r\n\r\n",
                port = listen.port()
            ),
        )
        .expect("GET with a PROXY header")
    };
    assert_eq!(
        proxied("a.test"),
        (200, "fast".into()),
        "the change is live"
    );
    assert_eq!(
        proxied("r.test"),
        (200, "slow".into()),
        "the change is live"
    );
    // Back out from behind it: the direct clients are verified, and the load balancer
    // that still sends the header is warned about (nginx now answers it 400).
    n.write_http(&sites(""));
    let run = sr.run(&["-y", "--health-timeout", "1s"]);
    run.expect(0);
    assert!(
        run.stderr.contains(&format!(
            "listen {listen} no longer expects the PROXY protocol: a load balancer in front \
             that still sends it gets HTTP 400"
        )),
        "{run}"
    );
    assert_eq!(proxied("a.test").0, 400, "what a load balancer now gets");
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").1, "fast");
}

/// `GET /` with `Host: host` over a unix socket; the status.
fn unix_get(path: &std::path::Path, host: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    (resp.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {resp:?}")))
}

/// A server on `listen unix:` is checked over its socket: in the shadow (which listens on its
/// own socket instead), so a change that makes it answer 502 is refused before the reload, and
/// after the reload, so without the shadow it is rolled back. It was never checked ("no
/// request can reach it from this machine"), exit 0, and clients got the 502.
#[test]
fn a_server_on_a_unix_socket_is_checked_over_the_socket() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("ngx.sock");
    let site = |to: &str| {
        format!(
            "server {{ listen unix:{}; server_name ux.test; \
             location / {{ proxy_pass http://{to}; }} }}",
            sock.display()
        )
    };
    let n = TestNginx::start(&site(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(unix_get(&sock, "ux.test").expect("GET"), 200);
    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "-q", "--no-probe"]);
    run.expect(1);
    assert!(run.stderr.contains("via unix:"), "{run}");
    assert_eq!(unix_get(&sock, "ux.test").expect("GET"), 200, "untouched");
    let run = sr.run(&["-y", "-q", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert_eq!(unix_get(&sock, "ux.test").expect("GET"), 200, "rolled back");
    // A harmless change is verified over the socket.
    n.write_http(&site(&good.host_port()).replace("location", "add_header X-U 1; location"));
    let run = sr.run(&["-y", "--no-probe"]);
    run.expect(0);
    assert!(
        run.stdout
            .contains("reloaded: the new configuration is live and verified"),
        "{run}"
    );
}

/// `--health` naming one site that the change does not affect, while the change breaks
/// another: the URL verified nothing the change touched, so the headline counts the affected
/// server as not verified (it said "live and verified").
#[test]
fn a_health_url_for_an_unaffected_site_verifies_no_affected_server() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let sites = |b: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test; location / {{ proxy_pass http://{}; }} }}\n\
             server {{ listen {listen}; server_name b.test; location / {{ proxy_pass http://{b}; }} }}",
            good.host_port()
        )
    };
    let n = TestNginx::start(&sites(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&sites(&bad.addr.to_string()));
    let url = format!("http://a.test:{}/", listen.port());
    let resolve = format!("a.test:{}:{}", listen.port(), listen.ip());
    let run = sr.run(&["-y", "--no-probe", "--health", &url, "--resolve", &resolve]);
    run.expect(0);
    assert!(
        run.stdout.contains(
            "reloaded: live; verified 0 of 1 affected server; not verified: b.test \
             (nginx.conf:"
        ) && run.stdout.contains("no --health URL names it"),
        "{run}"
    );
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").0, 200);
    assert_eq!(
        http_get(listen, "b.test", "/").expect("GET").0,
        502,
        "not verified, and live"
    );
}

/// Removing a server on `listen unix:` whose socket file someone deleted: nginx loads the
/// change (new workers, the old ones drain) but logs `[emerg] unlink() ... failed` while it
/// closes the old socket. The change stays, exit 0, with the `[emerg]` as a warning in the text
/// and in the JSON verdict (it was called a failed reload and rolled back).
#[test]
fn an_emerg_logged_by_a_reload_that_started_new_workers_is_a_warning_not_a_failed_reload() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let listen = SocketAddr::new(ip, free_port(ip));
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("site.sock");
    let a = format!(
        "server {{ listen {listen}; server_name a.test; \
         location / {{ proxy_pass http://{}; }} }}",
        good.host_port()
    );
    let unix = format!(
        "server {{ listen unix:{}; server_name ux.test; location / {{ return 200 \"ux\"; }} }}",
        sock.display()
    );
    let added = |body: &str| {
        format!(
            "{a}\nserver {{ listen {listen}; server_name new.test; \
             location / {{ return 200 \"{body}\"; }} }}"
        )
    };
    let n = TestNginx::start(&format!("{a}\n{unix}"));
    let sr = SafeReload::new(&n);
    sr.init();
    std::fs::remove_file(&sock).expect("delete the socket file");
    n.write_http(&added("new"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stderr.contains(
            "warning: the reload took effect (new workers run the configuration), but nginx \
             logged [emerg] while loading it: "
        ) && run.stderr.contains("unlink()")
            && run.stderr.contains("site.sock"),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("nginx logged [emerg] while loading it (see the warnings above)"),
        "{run}"
    );
    assert!(!run.to_string().contains("rolled back"), "{run}");
    assert_eq!(http_get(listen, "new.test", "/").expect("GET").1, "new");
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").1, "good");

    // Again with --json: the verdict names the lines.
    n.write_http(&format!("{}\n{unix}", added("new")));
    sr.run(&["-y"]).expect(0);
    assert!(sock.exists(), "the unix listen is back");
    std::fs::remove_file(&sock).expect("delete the socket file");
    n.write_http(&added("newer"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["outcome"], "reloaded", "{run}");
    assert_eq!(report["reload"]["took_effect"], true, "{run}");
    let emerg = report["verdict"]["emerg"].to_string();
    assert!(
        emerg.contains("unlink()") && emerg.contains("site.sock"),
        "{run}"
    );
    assert_eq!(http_get(listen, "new.test", "/").expect("GET").1, "newer");
}

#[test]
fn an_alert_new_workers_log_after_the_reload_is_a_warning_that_names_its_directive() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |body: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test; \
             location / {{ proxy_pass http://{}; }} \
             location = /v {{ return 200 \"{body}\"; }} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site("v1"));
    let sr = SafeReload::new(&n);
    sr.init();
    // Above fs.nr_open (1048576 by default): setrlimit fails even for root, in each new
    // worker, which serves all the same. nginx -t does not try it.
    let limit = "worker_rlimit_nofile 100000000;";
    let with_limit = |body: &str| {
        n.render(&site(body))
            .replacen("worker_processes", &format!("{limit}\nworker_processes"), 1)
    };
    std::fs::write(&n.conf, with_limit("v2")).expect("write nginx.conf");
    let line = with_limit("v2")
        .lines()
        .position(|l| l == limit)
        .expect("the directive's line")
        + 1;
    let at = format!("{}:{line}", n.conf.display());

    let run = sr.run(&["-y"]);
    run.expect(0);
    let headline = run.stdout.lines().last().unwrap_or_default();
    assert!(
        headline.starts_with("reloaded with 1 alert: setrlimit(RLIMIT_NOFILE, 100000000) failed")
            && headline.contains(&format!("(worker_rlimit_nofile, {at})")),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("warning: the reload took effect, but nginx logged [alert]: setrlimit("),
        "{run}"
    );
    assert_eq!(http_get(listen, "a.test", "/v").expect("GET").1, "v2");
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").1, "app");

    std::fs::write(&n.conf, with_limit("v3")).expect("write nginx.conf");
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["outcome"], "reloaded", "{run}");
    let alerts = report["verdict"]["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{run}");
    assert_eq!(alerts[0]["directive"], "worker_rlimit_nofile", "{run}");
    assert_eq!(alerts[0]["file"], n.conf.display().to_string(), "{run}");
    assert_eq!(alerts[0]["line"], line, "{run}");
    assert!(
        alerts[0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("setrlimit(RLIMIT_NOFILE")),
        "{run}"
    );
    assert_eq!(http_get(listen, "a.test", "/v").expect("GET").1, "v3");
}

/// `GET path` until nginx answers something other than 502 (a flaky backend fails one
/// request in three: the second try gets the backend); status and body.
fn get_past_flake(listen: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let first = http_get(listen, host, path).expect("GET");
    if first.0 != 502 {
        return first;
    }
    http_get(listen, host, path).expect("GET")
}

/// A backend that closes every 3rd request unanswered (nginx answers 502; a counter, not
/// chance) behind a harmless change: each bad answer was a verdict by chance, a refusal when
/// the shadow hit it, a rollback when an after-check did and the baseline had not, exit 4 when
/// both did. A failed answer is asked again, and one that then passes decides nothing: the
/// change stays, exit 0, with a warning counting the failed answers before and after. A
/// change that breaks the site outright (every answer 502) is still refused in the shadow, and
/// rolled back without it.
#[test]
fn a_flaky_backend_is_a_warning_with_counts_not_a_verdict_by_chance() {
    let ip = unique_loopback();
    let flaky = FlakyBackend::start(SocketAddr::new(ip, 0), "flaky", 3, Flake::Close);
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |to: &str, rev: u32| {
        format!(
            "server {{ listen {listen}; server_name b.test; \
             location = /rev {{ return 200 \"{rev}\"; }} \
             location / {{ proxy_pass http://{to}; }} }}"
        )
    };
    let n = TestNginx::start(&site(&flaky.host_port(), 0));
    let sr = SafeReload::new(&n);
    sr.init();
    // Whatever the phase of the counter, each run sends the check at least 7 times (the
    // shadow's, three baseline rounds, three after the reload): some of them hit a bad answer.
    for rev in 1..=3 {
        n.write_http(&site(&flaky.host_port(), rev));
        let run = sr.run(&["-y"]);
        run.expect(0);
        assert!(
            run.stderr.contains("intermittent: http://b.test/")
                && run.stderr.contains("answers failed (HTTP 502)")
                || run
                    .stderr
                    .contains("through the shadow nginx: 1 of 3 answers failed (HTTP 502)"),
            "{run}"
        );
        assert!(!run.to_string().contains("rolled back"), "{run}");
        assert_eq!(
            http_get(listen, "b.test", "/rev").expect("GET"),
            (200, rev.to_string())
        );
        assert_eq!(get_past_flake(listen, "b.test", "/"), (200, "flaky".into()));
    }
    n.write_http(&site(&flaky.host_port(), 4));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    let flaky_checks = report["verdict"]["intermittent"].as_array().cloned();
    let counted = flaky_checks.unwrap_or_default().iter().any(|c| {
        c["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://b.test/"))
            && (c["after"]["failed"].as_u64() > Some(0) || c["before"]["failed"].as_u64() > Some(0))
    });
    assert!(counted, "{run}");
    assert_eq!(report["outcome"], "reloaded", "{run}");
    assert_eq!(
        http_get(listen, "b.test", "/rev").expect("GET"),
        (200, "4".into())
    );

    // Every answer 502: refused before the reload, and rolled back after it without the shadow.
    n.write_http(&site(&bad.addr.to_string(), 5));
    let run = sr.run(&["-y", "--no-probe"]);
    run.expect(1);
    assert!(
        run.stderr
            .contains("through the shadow nginx answered HTTP 502"),
        "{run}"
    );
    assert_eq!(http_get(listen, "b.test", "/rev").expect("GET").1, "4");
    let run = sr.run(&["-y", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert_eq!(http_get(listen, "b.test", "/rev").expect("GET").1, "4");
    assert_eq!(get_past_flake(listen, "b.test", "/"), (200, "flaky".into()));
}

/// The bodies of `n` requests through nginx: which pool members answer.
fn bodies(listen: SocketAddr, host: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| http_get(listen, host, "/").expect("GET").1)
        .collect()
}

/// A pool member changed to a backend that answers the probe and closes every request: nginx
/// fails over to the other member (clients get 200) and logs the close, so the change is
/// rolled back. Making the same edit again was accepted ("live and verified", with a warning
/// that the error was logged before this change too): the baseline read back the lines the
/// rejected attempt's own workers logged while it was live. Lines of workers that no longer
/// serve the running configuration are not its baseline: the retry is rolled back again
/// without the shadow, and refused by it with.
#[test]
fn retrying_a_rolled_back_change_is_not_accepted_on_its_own_log_lines() {
    let ip = unique_loopback();
    let ok1 = HttpBackend::start(SocketAddr::new(ip, 0), "ok1");
    let ok2 = HttpBackend::start(SocketAddr::new(ip, 0), "ok2");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |first: &str| {
        format!(
            "upstream pool {{ server {first}; server {}; }}\n\
             server {{ listen {listen}; server_name p.test; \
             location / {{ proxy_pass http://pool; }} }}",
            ok2.host_port()
        )
    };
    let n = TestNginx::start(&site(&ok1.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let original = |what: &str| {
        let seen = bodies(listen, "p.test", 4);
        assert!(
            seen.iter().any(|b| b == "ok1") && seen.iter().all(|b| b == "ok1" || b == "ok2"),
            "{what}: {seen:?}"
        );
    };
    let edit = site(&closer.addr.to_string());
    n.write_http(&edit);
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    original("rolled back");
    // The same edit again, twice without the shadow, then with it.
    for _ in 0..2 {
        n.write_http(&edit);
        let run = sr.run(&["-y", "--no-shadow"]);
        run.expect(3);
        assert!(
            !run.stderr.contains("logged before this change too"),
            "{run}"
        );
        assert!(
            run.stderr
                .contains("nginx logged an upstream error the running configuration did not"),
            "{run}"
        );
        original("rolled back again");
    }
    n.write_http(&edit);
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.stderr.contains("through the shadow nginx"), "{run}");
    original("untouched");
}

/// A backend slower than `--health-timeout` (2.5 s against 2 s: every client gets 200, later)
/// and a change that makes nginx give up first (`proxy_read_timeout 1s`: 504). The shadow saw
/// the 504 against the running nginx's timeout, called it "every check fails in the running
/// nginx too" and let the change through; clients got 504, and the verdict after the reload
/// judged it the change's and rolled it back. One comparison decides both: a check that was
/// only slow before and that nginx fails after was made worse by the change, so the shadow
/// refuses it with nginx untouched, and without the shadow it is rolled back.
#[test]
fn a_504_after_a_check_that_was_only_slow_before_is_refused_in_the_shadow() {
    let ip = unique_loopback();
    let slow = HttpBackend::start_slow(
        SocketAddr::new(ip, 0),
        "slow",
        std::time::Duration::from_millis(2500),
    );
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name t.test; \
             location = /rev {{ return 200 \"{}\"; }} \
             location / {{ {extra} proxy_pass http://{}; }} }}",
            if extra.is_empty() { "old" } else { "new" },
            slow.host_port()
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("proxy_read_timeout 1s;"));
    let run = sr.run(&["-y", "--health-timeout", "2s", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let why = report["shadow"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("HTTP 504") && why.contains("did not answer within --health-timeout"),
        "{run}"
    );
    assert!(report["reload"].is_null(), "not signalled: {run}");
    assert_eq!(http_get(listen, "t.test", "/rev").expect("GET").1, "old");
    assert_eq!(
        http_get(listen, "t.test", "/").expect("GET"),
        (200, "slow".into())
    );
    let run = sr.run(&["-y", "--no-shadow", "--health-timeout", "2s"]);
    run.expect(3);
    assert!(run.stderr.contains("HTTP 504 after it"), "{run}");
    assert_eq!(http_get(listen, "t.test", "/rev").expect("GET").1, "old");
    assert_eq!(
        http_get(listen, "t.test", "/").expect("GET"),
        (200, "slow".into())
    );
}

/// The same with a limit past the shadow's longer wait (four times `--health-timeout`):
/// `proxy_read_timeout 2s` in front of a backend that takes 4 s, with `--health-timeout
/// 300ms`. Asked again for 1.2 s, both nginxes were silent ("slow before and after"), the
/// change went live and every client got nginx's 504 at 2 s. A check asked again waits past
/// the location's read timeout (here 3 s), so the shadow sees the 504.
#[test]
fn a_read_timeout_past_the_longer_wait_is_waited_for_in_the_shadow() {
    let ip = unique_loopback();
    let slow = HttpBackend::start_slow(
        SocketAddr::new(ip, 0),
        "slow",
        std::time::Duration::from_millis(4000),
    );
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name t.test; \
             location = /rev {{ return 200 \"{}\"; }} \
             location / {{ {extra} proxy_pass http://{}; }} }}",
            if extra.is_empty() { "old" } else { "new" },
            slow.host_port()
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("proxy_read_timeout 2s;"));
    let run = sr.run(&["-y", "--health-timeout", "300ms", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let why = report["shadow"]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("HTTP 504"), "{run}");
    assert!(report["reload"].is_null(), "not signalled: {run}");
    assert_eq!(http_get(listen, "t.test", "/rev").expect("GET").1, "old");
    assert_eq!(
        http_get(listen, "t.test", "/").expect("GET"),
        (200, "slow".into())
    );
}

/// A server on `listen unix:` and a TCP listen, recorded by `init`, whose socket file was then
/// deleted while nginx holds the socket.
struct UnlinkedSocket {
    good: HttpBackend,
    listen: SocketAddr,
    _dir: tempfile::TempDir,
    sock: std::path::PathBuf,
    nginx: TestNginx,
    sr: SafeReload,
}

impl UnlinkedSocket {
    fn start() -> UnlinkedSocket {
        let ip = unique_loopback();
        let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
        let listen = SocketAddr::new(ip, free_port(ip));
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("site.sock");
        let http = site_on_socket(&sock, listen, &good, 0);
        let nginx = TestNginx::start(&http);
        let sr = SafeReload::new(&nginx);
        sr.init();
        assert_eq!(unix_get(&sock, "ux.test").expect("GET"), 200);
        std::fs::remove_file(&sock).expect("delete the socket file");
        UnlinkedSocket {
            good,
            listen,
            _dir: dir,
            sock,
            nginx,
            sr,
        }
    }

    /// The server at revision `rev` (answered on /rev).
    fn site(&self, rev: u32) -> String {
        site_on_socket(&self.sock, self.listen, &self.good, rev)
    }
}

fn site_on_socket(
    sock: &std::path::Path,
    listen: SocketAddr,
    good: &HttpBackend,
    rev: u32,
) -> String {
    format!(
        "server {{ listen unix:{}; listen {listen}; server_name ux.test; \
         location = /rev {{ return 200 \"{rev}\"; }} \
         location / {{ proxy_pass http://{}; }} }}",
        sock.display(),
        good.host_port()
    )
}

/// nginx holds `listen unix:` but someone deleted the socket file: nothing can connect, before
/// a change or after it, since a reload keeps the listening socket as it is. A harmless change
/// to that server was rolled back (exit 3) because the baseline's "no such file" was taken for
/// "nothing listened there before". It is a failure the running configuration had: reported
/// as already failing (exit 4), nothing rolled back, with a hint that the file is gone while
/// nginx holds the socket and that a restart, not a reload, recreates it.
#[test]
fn a_deleted_unix_socket_file_nginx_still_holds_is_a_failure_from_before_the_change() {
    let u = UnlinkedSocket::start();
    let (n, sr, sock, listen) = (&u.nginx, &u.sr, &u.sock, u.listen);
    let site = |rev: u32| u.site(rev);
    n.write_http(&site(1));
    let run = sr.run(&["-y"]);
    run.expect(4);
    assert!(
        run.stdout.contains("reloaded, but an operator must act")
            && run.stdout.contains("the change is not the cause"),
        "{run}"
    );
    assert!(
        !run.stderr.contains("rollback:"),
        "nothing is rolled back: {run}"
    );
    assert!(
        run.stderr.contains("the socket file is gone")
            && run.stderr.contains(
                "hint: the socket file was deleted while nginx still holds the listening socket"
            )
            && run
                .stderr
                .contains("restart nginx (a restart, not a reload)"),
        "{run}"
    );
    assert_eq!(http_get(listen, "ux.test", "/rev").expect("GET").1, "1");
    assert_eq!(http_get(listen, "ux.test", "/").expect("GET").1, "good");
    assert!(!sock.exists(), "a reload does not recreate it");
    // The JSON report carries the hint with the answer.
    n.write_http(&site(2));
    let run = sr.run(&["-y", "--json"]);
    run.expect(4);
    let failing = &run.json()["verdict"]["still_failing"][0];
    assert!(failing["before"]["failed"] == true, "{run}");
    assert!(
        failing["after"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("restart nginx")),
        "{run}"
    );
    assert_eq!(http_get(listen, "ux.test", "/rev").expect("GET").1, "2");
}

/// The same deleted socket file, with a stale one in its place: a process that bound the path
/// and exited without removing it (what `nginx -t`, which binds a missing `listen unix:` path
/// while it runs, looks like to a check sent beside it). A connect meets the stale file and is
/// refused; it is still nginx's socket whose file is gone, before the change and after it, so
/// a harmless change is kept (exit 4), not rolled back for a failure it did not cause.
#[test]
fn a_stale_file_over_a_deleted_socket_nginx_holds_is_the_same_failure_before_and_after() {
    let u = UnlinkedSocket::start();
    let (n, sr, sock, listen) = (&u.nginx, &u.sr, &u.sock, u.listen);
    let site = |rev: u32| u.site(rev);
    // Bound and closed: the file stays, and nothing listens on it.
    drop(std::os::unix::net::UnixListener::bind(sock).expect("bind the stale file"));
    assert!(sock.exists() && unix_get(sock, "ux.test").is_err());
    n.write_http(&site(1));
    let run = sr.run(&["-y", "--json"]);
    run.expect(4);
    assert_eq!(run.json()["outcome"], "already_failing", "{run}");
    let failing = &run.json()["verdict"]["still_failing"][0];
    assert!(
        failing["after"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("restart nginx")),
        "{run}"
    );
    assert_eq!(http_get(listen, "ux.test", "/rev").expect("GET").1, "1");
    assert_eq!(http_get(listen, "ux.test", "/").expect("GET").1, "good");
}

/// `http { error_log syslog:server=...; }`, or an error log at `crit` (which nginx writes no
/// `[error]` line to): the upstream errors verification reads are nowhere safe-reload can see
/// them, so a pool member changed to one that closes every request (nginx fails over, clients
/// get 200) went live as "live and verified". The request checks still count (the change
/// stays, exit 0), but the report says the log-based checks could not run, which `error_log`
/// and why, in the text and the JSON, and does not say "verified". The shadow, which logs to a
/// file of its own, still refuses the change.
#[test]
fn an_error_log_safe_reload_cannot_read_is_named_and_nothing_is_called_verified_by_it() {
    let ip = unique_loopback();
    let ok1 = HttpBackend::start(SocketAddr::new(ip, 0), "ok1");
    let ok2 = HttpBackend::start(SocketAddr::new(ip, 0), "ok2");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    // Somewhere for syslog's datagrams to go.
    let syslog = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind udp");
    let syslog = syslog.local_addr().expect("addr");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |log: &str, first: &str| {
        format!(
            "error_log {log};\n\
             upstream pool {{ server {first}; server {}; }}\n\
             server {{ listen {listen}; server_name p.test; \
             location / {{ proxy_pass http://pool; }} }}",
            ok2.host_port()
        )
    };
    let to_syslog = format!("syslog:server={syslog}");
    let n = TestNginx::start(&site(&to_syslog, &ok1.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(&to_syslog, &closer.addr.to_string()));
    sr.run(&["-y"]).expect(1);
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(0);
    assert!(!run.stdout.contains("verified\n"), "{run}");
    assert!(
        run.stdout.contains(
            "reloaded: live; verified 1 of 1 affected server by the answers to its checks \
             alone; not checked: upstream errors in the error log (error_log syslog:server="
        ) && run.stdout.contains("(nginx.conf:"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("warning: the log-based checks could not run: error_log syslog:server=")
            && run.stderr.contains("sent to syslog, not a file"),
        "{run}"
    );
    let seen = bodies(listen, "p.test", 4);
    assert!(
        seen.iter().all(|b| b == "ok2"),
        "the change is live: {seen:?}"
    );

    // A file at `crit`: readable, but nginx writes no [error] line to it.
    let crit = format!("{}/logs/http.log crit", n.prefix.display());
    n.write_http(&site(&crit, &ok1.host_port()));
    sr.run(&["-y", "--no-shadow"]).expect(0);
    n.write_http(&site(&crit, &closer.addr.to_string()));
    let run = sr.run(&["-y", "--no-shadow", "--json"]);
    run.expect(0);
    let unread = &run.json()["coverage"]["unread_logs"][0];
    assert_eq!(
        unread["directive"],
        format!("error_log {crit}").as_str(),
        "{run}"
    );
    assert!(
        unread["at"]
            .as_str()
            .is_some_and(|a| a.starts_with("nginx.conf:"))
            && unread["why"]
                .as_str()
                .is_some_and(|w| w.contains("level crit")),
        "{run}"
    );
    let seen = bodies(listen, "p.test", 4);
    assert!(
        seen.iter().all(|b| b == "ok2"),
        "the change is live: {seen:?}"
    );
}

/// A change kept while a location fails as it did before it (exit 4, "already failing"): it was
/// recorded as plainly "good". It stays last-good (it is live, nothing is worse than before it,
/// and the configuration it replaced failed the same way: a rollback to it is what the next
/// failed change gets), but its snapshot says it was already failing, and `history` shows that
/// (text and JSON), so it is not taken for a verified one.
#[test]
fn a_change_kept_while_a_site_already_fails_is_last_good_and_history_says_so() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |rev: u32, to: &str| {
        format!(
            "server {{ listen {listen}; server_name f.test; \
             location = /rev {{ return 200 \"{rev}\"; }} \
             location / {{ proxy_pass http://{to}; }} \
             location /b/ {{ proxy_pass http://{}; }} }}",
            bad.addr
        )
    };
    let n = TestNginx::start(&site(0, &good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(1, &good.host_port()));
    let run = sr.run(&["-y", "--json"]);
    run.expect(4);
    let kept = run.json()["snapshot"]
        .as_str()
        .expect("snapshot")
        .to_string();
    assert_eq!(sr.last_good().as_deref(), Some(kept.as_str()), "{run}");
    assert_eq!(http_get(listen, "f.test", "/rev").expect("GET").1, "1");

    let history = sr.run(&["history"]);
    history.expect(0);
    let line = (history.stdout.lines())
        .position(|l| l.starts_with(&format!("* {kept}  already_failing")))
        .unwrap_or_else(|| panic!("{history}"));
    let under = history.stdout.lines().nth(line + 1).unwrap_or_default();
    assert!(
        under.starts_with(
            "    already failing: live, nothing worse than before it; http://f.test/b/"
        ) && under.contains("HTTP 502"),
        "{history}"
    );
    let listed = sr.run(&["history", "--json"]).json();
    let snap = (listed["history"].as_array().expect("history").iter())
        .find(|s| s["id"] == kept.as_str())
        .cloned()
        .expect("the kept snapshot");
    assert_eq!(snap["meta"]["outcome"], "already_failing", "{snap}");

    // The next change that breaks the site goes back to it.
    n.write_http(&site(2, &closer.addr.to_string()));
    sr.run(&["-y", "--no-shadow", "--no-probe"]).expect(3);
    assert_eq!(http_get(listen, "f.test", "/rev").expect("GET").1, "1");
    assert_eq!(http_get(listen, "f.test", "/").expect("GET").1, "good");
}

/// 600 servers of two proxied locations each and an http-level change: the bound gives 256
/// of them one check each, and all 256 pass. The headline said "verified 0 of 601" (each
/// server's second check, over the bound, undid the first); it counts the 256, and the servers
/// no request checked.
#[test]
fn at_the_bound_the_headline_counts_the_servers_whose_checks_all_passed() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let listen = SocketAddr::new(ip, free_port(ip));
    let sites: String = (0..600)
        .map(|i| {
            format!(
                "server {{ listen {listen}; server_name s{i}.test; \
                 location / {{ proxy_pass http://{0}; }} \
                 location /api/ {{ proxy_pass http://{0}; }} }}\n",
                good.host_port()
            )
        })
        .collect();
    let n = TestNginx::start(&format!("server_names_hash_bucket_size 128;\n{sites}"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&format!(
        "server_names_hash_bucket_size 128;\nproxy_set_header X-A 1;\n{sites}"
    ));
    let run = sr.run(&["-y", "--no-probe", "--no-shadow"]);
    run.expect(0);
    // The 600 sites and the harness's control server, which has no proxied location.
    assert!(
        run.stdout.contains(
            "reloaded: live; verified 256 of 601 affected servers; 345 not verified, 345 of \
                 them not checked: "
        ),
        "{run}"
    );
    for i in [0, 255, 599] {
        let host = format!("s{i}.test");
        assert_eq!(
            http_get(listen, &host, "/api/").expect("GET"),
            (200, "good".into())
        );
    }
}

/// Regression: an explicit `--health` URL that nothing answers (nothing listens on its port, in
/// the running configuration, the candidate or any other program) counted as a listen only the
/// change adds, so refused after it rolled a harmless change back and blamed it (exit 3). Then
/// the change went live with nothing verified and exit 4 said a site was failing. It is a URL
/// no check can use: refused before anything changes (exit 2), naming the address. A URL that
/// answered before and is refused only after the change (the change removed its listen) is the
/// change's: rolled back, exit 3.
#[test]
fn an_explicit_health_url_nothing_answers_is_refused_before_anything_changes() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let dead = free_port(ip);
    let other = SocketAddr::new(ip, free_port(ip));
    let site = |rev: u32, extra: &str| {
        format!(
            "server {{ listen {listen};{extra} server_name h.test; \
             location = /rev {{ return 200 \"{rev}\"; }} location / {{ return 200 \"ok\"; }} }}"
        )
    };
    let n = TestNginx::start(&site(0, &format!(" listen {other};")));
    let sr = SafeReload::new(&n);
    let baseline = sr.init();
    n.write_http(&site(1, &format!(" listen {other};")));
    let url = format!("http://h.test:{dead}/");
    let resolve = format!("h.test:{dead}:{ip}");
    let run = sr.run(&["-y", "--health", &url, "--resolve", &resolve]);
    run.expect(2);
    let said = format!("--health {url}: nothing listens on {ip}:{dead}");
    assert!(
        run.stderr.contains(&said) && run.stderr.contains("nothing was changed"),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "h.test", "/rev").expect("GET").1,
        "0",
        "not reloaded"
    );
    assert_eq!(sr.last_good().expect("last-good"), baseline, "{run}");

    // Another program answers it (a proxy in front of nginx): sent, and the change is judged.
    let front = HttpBackend::start(SocketAddr::new(ip, dead), "front");
    let run = sr.run(&["-y", "--health", &url, "--resolve", &resolve]);
    run.expect(0);
    assert_eq!(http_get(listen, "h.test", "/rev").expect("GET").1, "1");
    drop(front);
    let kept = sr.last_good().expect("last-good");
    assert_ne!(kept, baseline, "the change is last-good: {run}");

    // The change removes the listen the URL answered on: refused only after it.
    n.write_http(&site(2, ""));
    let url = format!("http://h.test:{}/", other.port());
    let resolve = format!("h.test:{}:{ip}", other.port());
    let run = sr.run(&["-y", "--json", "--health", &url, "--resolve", &resolve]);
    run.expect(3);
    assert_eq!(http_get(listen, "h.test", "/rev").expect("GET").1, "1");
    assert_eq!(
        http_get(other, "h.test", "/").expect("GET").1,
        "ok",
        "restored"
    );
    assert_eq!(sr.last_good().as_deref(), Some(kept.as_str()));
}

/// The WordPress layout: `location / { try_files $uri $uri/ /index.php?$args; }` in front of
/// `location ~ \.php$ { fastcgi_pass ...; }`. The PHP location was checked on a made-up
/// `/safe-reload-check.php`, which php-fpm answers with its "no such script" 404 without running
/// the site; it is now checked on a path `try_files` sends to `/index.php`, so php-fpm runs the
/// site's entry point (200) before the change and after a harmless one, and a dead php-fpm
/// address after the change is rolled back.
#[test]
fn a_wordpress_site_is_checked_through_the_index_php_try_files_sends_to() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |to: &str, extra: &str| {
        format!(
            "server {{ listen {listen}; server_name wp.test; root {}; index index.php; {extra}\n\
             location / {{ try_files $uri $uri/ /index.php?$args; }}\n\
             location ~ \\.php$ {{ {FASTCGI} fastcgi_pass {to}; }} }}",
            root.path().display()
        )
    };
    let n = TestNginx::start(&site(&fpm.addr.to_string(), ""));
    let sr = SafeReload::new(&n);
    sr.init();
    let (status, body) = http_get(listen, "wp.test", "/a-post/").expect("GET");
    assert!(status == 200 && body.contains("php ok"), "{status} {body}");

    n.write_http(&site(&fpm.addr.to_string(), "add_header X-Change 1;"));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let report = run.json();
    let check = &report["health"]["results"][0];
    assert_eq!(
        (&check["what"], &check["path"], &check["status"]),
        (
            &serde_json::Value::from("location ~ \\.php$"),
            &serde_json::Value::from("/safe-reload-check"),
            &serde_json::Value::from(200)
        ),
        "{run}"
    );

    n.write_http(&site(&dead.to_string(), "add_header X-Change 1;"));
    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert_eq!(run.json()["health"]["results"][0]["status"], 502, "{run}");
    let (status, body) = http_get(listen, "wp.test", "/a-post/").expect("GET");
    assert!(status == 200 && body.contains("php ok"), "{status} {body}");
}

/// WordPress's `try_files $uri $uri/ /index.php$is_args$args` with the slash dropped
/// (`index.php$is_args$args`): nginx sends every permalink to `index.php`, php-fpm is asked
/// for `ROOTindex.php` and answers 404, and last-good's check of a made-up permalink, 200
/// before and 404 after, passed as a path no client asks (r12 M F7). Where that path still
/// falls through to a backend, what it got before is its baseline: refused, rolled back
/// without the shadow, and the permalinks still answer.
#[test]
fn a_wordpress_fallback_without_its_slash_is_the_changes() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |fallback: &str| {
        format!(
            "server {{ listen {listen}; server_name wp.test; root {}; index index.php;\n\
             location / {{ try_files $uri $uri/ {fallback}; }}\n\
             location ~ \\.php$ {{ {FASTCGI} fastcgi_pass {}; }} }}",
            root.path().display(),
            fpm.addr
        )
    };
    let n = TestNginx::start(&site("/index.php$is_args$args"));
    let sr = SafeReload::new(&n);
    sr.init();
    let post = || http_get(listen, "wp.test", "/a-post/").expect("GET");
    assert!(post().1.contains("php ok"));
    n.write_http(&site("index.php$is_args$args"));
    assert!(n.test().0, "nginx -t passes it");
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert!(post().1.contains("php ok"), "refused: {run}");
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert!(post().1.contains("php ok"), "rolled back: {run}");
}

/// `location / { try_files $uri $uri/ =404; }` beside `location ~ \.php$`: the PHP check
/// passed and the server was counted verified, though nothing checks what `/` serves (files,
/// or nginx's 404). That location has no backend: it is listed as not verified with why, and
/// the server is not counted verified. The change stays (exit 0) and the site still answers.
#[test]
fn a_location_that_try_files_answers_with_404_is_not_verified() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name static.test; root {}; index index.php; \
             {extra}\n\
             location / {{ try_files $uri $uri/ =404; }}\n\
             location ~ \\.php$ {{ {FASTCGI} fastcgi_pass {}; }} }}",
            root.path().display(),
            fpm.addr
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("add_header X-Change 1;"));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let report = run.json();
    let unchecked = (report["health"]["not_checked"]
        .as_array()
        .into_iter()
        .flatten())
    .find(|u| u["what"] == "location /")
    .unwrap_or_else(|| panic!("location / is not listed as not checked: {run}"));
    assert!(
        unchecked["why"]
            .as_str()
            .unwrap_or_default()
            .contains("no backend: try_files $uri $uri/ =404"),
        "{run}"
    );
    assert_eq!(report["coverage"]["verified"], 0, "{run}");
    assert_eq!(
        http_get(listen, "static.test", "/missing").expect("GET").0,
        404
    );
    let (status, body) = http_get(listen, "static.test", "/index.php").expect("GET");
    assert!(status == 200 && body.contains("php ok"), "{status} {body}");
}

/// `--health http://[::1]:PORT/` for a server that listens only on `[::1]`: the request's Host
/// keeps the brackets (`Host: [::1]:PORT`). Without them nginx answers 400 before it picks a
/// server, before the change and after it, and a change to a 502 backend went live as checked.
#[test]
fn a_health_url_with_an_ipv6_literal_sends_its_host_in_brackets() {
    let v6: std::net::IpAddr = "::1".parse().unwrap();
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(v6, free_port(v6));
    let site =
        |b: &str| format!("server {{ listen {listen}; location / {{ proxy_pass http://{b}; }} }}");
    let n = TestNginx::start(&site(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let host = format!("[::1]:{}", listen.port());
    assert_eq!(http_get(listen, &host, "/").expect("GET").0, 200);
    n.write_http(&site(&bad.addr.to_string()));
    let url = format!("http://[::1]:{}/", listen.port());
    let run = sr.run(&["-y", "--no-shadow", "--json", "--health", &url]);
    run.expect(3);
    let after = &run.json()["health"]["results"][0];
    assert_eq!(after["status"], 502, "{run}");
    assert_eq!(after["host"], "[::1]", "{run}");
    assert_eq!(
        http_get(listen, &host, "/").expect("GET").0,
        200,
        "rolled back: nginx serves the good backend again"
    );
}

/// WordPress's own layout: `try_files $uri $uri/ /index.php$is_args$args;` in front of a
/// `~ \.php$` location guarded by `try_files $fastcgi_script_name =404;` (Debian's
/// `snippets/fastcgi-php.conf`). The check goes through the front controller, as every page
/// does, so a change that makes every page 502 (`fastcgi_buffer_size 32`: "upstream sent too
/// big header") is refused. It was "live and verified": the `$is_args$args` spelling was not
/// followed, and the `.php` location's check got nginx's own 404 from `=404` and passed.
#[test]
fn a_wordpress_front_controller_is_checked_through_index_php() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name wp.test; root {}; index index.php;\n\
             location / {{ try_files $uri $uri/ /index.php$is_args$args; }}\n\
             location ~ \\.php$ {{ try_files $fastcgi_script_name =404; {FASTCGI} {extra} \
             fastcgi_pass {}; }} }}",
            root.path().display(),
            fpm.addr
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("fastcgi_buffer_size 32;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let (status, body) = http_get(listen, "wp.test", "/hello-world/").expect("GET");
    assert_eq!(
        (status, body.contains("php ok")),
        (200, true),
        "refused: {body}"
    );

    // With the shadow off, the check after the reload rolls it back.
    let run = sr.run(&["-y", "--json", "--no-shadow"]);
    run.expect(3);
    let (status, _) = http_get(listen, "wp.test", "/hello-world/").expect("GET");
    assert_eq!(status, 200, "rolled back");
}

/// The older front controller: `location / { if (!-e $request_filename) { rewrite ^/(.*)$
/// /index.php?q=$1 last; } }`. A path no file has meets the condition, as every page's does:
/// the check goes through `/index.php`, so a change that makes every page 502 is refused. It
/// was "live and verified" on nginx's own 404 of the `.php` location.
#[test]
fn a_front_controller_behind_if_not_exists_is_checked_through_index_php() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name legacy.test; root {};\n\
             location / {{ if (!-e $request_filename) {{ rewrite ^/(.*)$ /index.php?q=$1 last; }} }}\n\
             location ~ \\.php$ {{ try_files $fastcgi_script_name =404; {FASTCGI} {extra} \
             fastcgi_pass {}; }} }}",
            root.path().display(),
            fpm.addr
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("fastcgi_buffer_size 32;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    let (status, body) = http_get(listen, "legacy.test", "/some/page").expect("GET");
    assert_eq!(
        (status, body.contains("php ok")),
        (200, true),
        "refused: {body}"
    );
}

/// Regression: a new site whose backend closes every request (nginx answers 502), on a listen
/// whose default server drops unknown Hosts (`return 444;`) or refuses their TLS handshake
/// (`ssl_reject_handshake on;`). Before the change, the new name's check got the catch-all's
/// dropped connection, which counted as "failed before the change": the 502 went live with
/// exit 4 "not the cause", and `check` passed it. Another server answered that request before,
/// so it has no baseline: the shadow refuses the site, and without the shadow it is rolled
/// back. The site nginx already served keeps answering throughout.
#[test]
fn a_new_failing_site_behind_a_catch_all_that_drops_unknown_hosts_is_the_changes() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "a");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "a.test");
    let tls = format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        cert.display(),
        key.display()
    );
    for catch_all in ["return 444;", "ssl_reject_handshake on;"] {
        let https = catch_all.starts_with("ssl");
        let listen = SocketAddr::new(ip, free_port(ip));
        let flags = if https { " ssl" } else { "" };
        let site = |name: &str, backend: &str| {
            format!(
                "server {{ listen {listen}{flags}; server_name {name}; {tls} \
                 location / {{ proxy_pass http://{backend}; }} }}"
            )
        };
        let base = format!(
            "server {{ listen {listen}{flags} default_server; server_name _; {catch_all} }}\n{}",
            site("a.test", &good.host_port())
        );
        let n = TestNginx::start(&base);
        let sr = SafeReload::new(&n);
        sr.init();
        let get = |host: &str| match https {
            // curl writes 000 for a handshake the server refused.
            true => https_get(listen, host, "/").ok().filter(|&s| s != 0),
            false => http_get(listen, host, "/").ok().map(|(status, _)| status),
        };
        assert_eq!(
            get("b.test"),
            None,
            "{catch_all}: the catch-all drops b.test"
        );
        n.write_http(&format!(
            "{base}\n{}",
            site("b.test", &closing.addr.to_string())
        ));

        let run = sr.run(&["check"]);
        run.expect(1);
        let run = sr.run(&["-y", "--json"]);
        run.expect(1);
        assert_eq!(
            run.json()["shadow"]["state"],
            "refused",
            "{catch_all}: {run}"
        );
        assert_eq!(get("b.test"), None, "{catch_all}: not reloaded");
        assert_eq!(get("a.test"), Some(200), "{catch_all}");

        let run = sr.run(&["-y", "--no-shadow"]);
        run.expect(3);
        assert!(run.stderr.contains("b.test"), "{catch_all}: {run}");
        assert_eq!(get("b.test"), None, "{catch_all}: rolled back");
        assert_eq!(get("a.test"), Some(200), "{catch_all}");
    }
}

/// A PHP site whose every page answers 404 after the change, where the same check got the
/// front controller's 200 before: a `root` typo in front of `try_files $fastcgi_script_name
/// =404` (nginx's own 404), and a `SCRIPT_FILENAME` that names no file (php-fpm's "File not
/// found."). Both went live with exit 0, "verified" or "not verified". A 404 where the same
/// request was served is the change's: refused in the shadow, rolled back without it, and
/// the pages still answer.
#[test]
fn a_php_site_whose_every_page_now_answers_404_is_the_changes() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let good_root = root.path().display().to_string();
    let script = "$document_root$fastcgi_script_name";
    let cases = [
        ("root typo", true, format!("{good_root}-typo"), script),
        (
            "SCRIPT_FILENAME",
            false,
            good_root.clone(),
            "/srv/none$fastcgi_script_name",
        ),
    ];
    for (case, try_files, broken_root, broken_script) in cases {
        let listen = SocketAddr::new(ip, free_port(ip));
        let site =
            |root: &str, script: &str| {
                format!(
                "server {{ listen {listen}; server_name php.test; root {root}; index index.php;\n\
                 location / {{ try_files $uri $uri/ /index.php$is_args$args; }}\n\
                 location ~ \\.php$ {{ {} {} fastcgi_pass {}; }} }}",
                if try_files { "try_files $fastcgi_script_name =404;" } else { "" },
                FASTCGI.replace("$document_root$fastcgi_script_name", script),
                fpm.addr
            )
            };
        let n = TestNginx::start(&site(&good_root, script));
        let sr = SafeReload::new(&n);
        sr.init();
        let page = || http_get(listen, "php.test", "/hello-world/").expect("GET");
        assert!(page().1.contains("php ok"), "{case}: served before");
        n.write_http(&site(&broken_root, broken_script));

        let run = sr.run(&["-y", "--json"]);
        run.expect(1);
        assert_eq!(run.json()["shadow"]["state"], "refused", "{case}: {run}");
        assert!(
            run.stdout
                .contains("answered HTTP 404 (the running nginx answers HTTP 200)"),
            "{case}: {run}"
        );
        assert_eq!(page().0, 200, "{case}: refused");

        let run = sr.run(&["-y", "--no-shadow"]);
        run.expect(3);
        assert!(run.stderr.contains("HTTP 404 after it"), "{case}: {run}");
        assert_eq!(page().0, 200, "{case}: rolled back");
    }
}

/// A proxy's `proxy_set_header Host $host;` became `$proxy_host`: a backend that checks the
/// Host it is sent (Django's ALLOWED_HOSTS; here an nginx server that answers 400 to any other
/// name) refuses every request, and its 400 counted as a pass ("live and verified"). A 4xx
/// where the same request was served is the change's: refused, and rolled back without the
/// shadow. Adding `auth_basic` (a 401 where there was a 200) is what a change does on purpose:
/// it goes live.
#[test]
fn a_backend_that_now_refuses_every_request_with_a_4xx_is_the_changes() {
    let ip = unique_loopback();
    let backend = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |front: &str| {
        format!(
            "server {{ listen {backend}; server_name app.test; return 200 \"app\"; }}\n\
             server {{ listen {backend} default_server; server_name _; \
             return 400 \"Invalid HTTP_HOST header\"; }}\n\
             server {{ listen {listen}; server_name app.test;\n\
             location / {{ {front} proxy_pass http://{backend}; }} }}"
        )
    };
    let n = TestNginx::start(&site("proxy_set_header Host $host;"));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "app.test", "/").ok(),
        Some((200, "app".into()))
    );
    n.write_http(&site("proxy_set_header Host $proxy_host;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(
        http_get(listen, "app.test", "/").ok(),
        Some((200, "app".into()))
    );
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert!(run.stderr.contains("HTTP 400 after it"), "{run}");
    assert_eq!(
        http_get(listen, "app.test", "/").ok(),
        Some((200, "app".into()))
    );

    let htpasswd = n.prefix.join("htpasswd");
    std::fs::write(&htpasswd, "ops:$apr1$x$y\n").expect("htpasswd");
    n.write_http(&site(&format!(
        "proxy_set_header Host $host; auth_basic \"ops\"; auth_basic_user_file {};",
        htpasswd.display()
    )));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(
        http_get(listen, "app.test", "/").map(|r| r.0).ok(),
        Some(401)
    );
}

/// `location /api/` moved to a REST app that answers 404 on the bare `/api/` (no handler on the
/// prefix root) and 200 on `/api/users`: the check of `/api/` got 200 before and 404 in the
/// shadow, and the change is refused, as a 4xx where the same request was served is. The
/// refusal said nothing of how to make it live on purpose; it now names `--expect-status` with
/// both statuses, and with them the change goes live and `/api/users` reaches the new app.
#[test]
fn a_refusal_for_a_backends_own_404_says_how_to_make_it_live_on_purpose() {
    let ip = unique_loopback();
    let old = SocketAddr::new(ip, free_port(ip));
    let rest = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |to: SocketAddr| {
        format!(
            "server {{ listen {old}; return 200 \"old api\"; }}\n\
             server {{ listen {rest}; location = /api/ {{ return 404; }} \
             location /api/ {{ return 200 \"rest api\"; }} }}\n\
             server {{ listen {listen}; server_name www.test; \
             location /api/ {{ proxy_pass http://{to}; }} }}"
        )
    };
    let n = TestNginx::start(&site(old));
    let sr = SafeReload::new(&n);
    sr.init();
    let users = || http_get(listen, "www.test", "/api/users").ok();
    assert_eq!(users(), Some((200, "old api".into())));
    n.write_http(&site(rest));

    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr
            .contains("answered HTTP 404 (the running nginx answers HTTP 200)"),
        "{run}"
    );
    assert!(
        run.stderr.contains(
            "if HTTP 404 is what /api/ answers now on purpose, name a URL the site serves with \
             --health, or list every status that counts as success with --expect-status \
             (--expect-status 200 --expect-status 404)"
        ),
        "{run}"
    );
    assert_eq!(users(), Some((200, "old api".into())), "refused");

    let run = sr.run(&["-y", "--expect-status", "200", "--expect-status", "404"]);
    run.expect(0);
    assert_eq!(users(), Some((200, "rest api".into())), "{run}");
}

/// A `server_name` renamed in front of an app with an allowed-hosts list: the app answers 400
/// to the new name, every client of it gets 400, and the old name falls to the catch-all's
/// `return 444`. The new name had no baseline, and its 400 passed: exit 0, "location /"
/// counted as verified (r11 K F4). A new name whose backend answers 400 (or 421) is refused,
/// as one answering 500 or 503 is, and rolled back without the shadow; a rename the app
/// allows goes live.
#[test]
fn a_renamed_server_whose_backend_rejects_the_new_host_is_refused() {
    let ip = unique_loopback();
    let backend = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |name: &str, allowed: &str| {
        format!(
            "server {{ listen {backend}; server_name {allowed}; return 200 \"blog\"; }}\n\
             server {{ listen {backend} default_server; server_name _; \
             return 400 \"Invalid HTTP_HOST header\"; }}\n\
             server {{ listen {listen} default_server; server_name _; return 444; }}\n\
             server {{ listen {listen}; server_name {name};\n\
             location / {{ proxy_set_header Host $host; proxy_pass http://{backend}; }} }}"
        )
    };
    let n = TestNginx::start(&site("blog.test", "blog.test"));
    let sr = SafeReload::new(&n);
    sr.init();
    let get = |host: &str| http_get(listen, host, "/").ok();
    assert_eq!(get("blog.test"), Some((200, "blog".into())));
    n.write_http(&site("blog.example", "blog.test"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(get("blog.test"), Some((200, "blog".into())), "refused");
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert_eq!(
        get("blog.test"),
        Some((200, "blog".into())),
        "rolled back: {run}"
    );

    n.write_http(&site("blog.example", "blog.test blog.example"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(get("blog.example"), Some((200, "blog".into())), "{run}");
}

/// `proxy_set_header Host $host` became `$proxy_host` in front of an app with a canonical Host
/// (WordPress's siteurl, Django's PREPEND_WWW): it answers every request with a 301 back to
/// `http://blog.test/`, the very URL asked, and browsers loop until they give up. The 301s
/// passed: exit 0 (r11 K F9). A redirect to the URL requested is a failure now: refused in
/// the shadow, rolled back without it, and the site still answers 200. A redirect elsewhere
/// (http to https) stays an answer.
#[test]
fn a_redirect_back_to_the_url_requested_is_a_loop_not_an_answer() {
    let ip = unique_loopback();
    let backend = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |host: &str, extra: &str| {
        format!(
            "server {{ listen {backend}; \
             if ($host != blog.test) {{ return 301 http://blog.test$request_uri; }} \
             return 200 \"blog\"; }}\n\
             server {{ listen {listen}; server_name blog.test; {extra}\n\
             location / {{ proxy_set_header Host {host}; proxy_pass http://{backend}; }} }}"
        )
    };
    let n = TestNginx::start(&site("$host", ""));
    let sr = SafeReload::new(&n);
    sr.init();
    let get = || http_get(listen, "blog.test", "/").ok();
    assert_eq!(get(), Some((200, "blog".into())));
    n.write_http(&site("$proxy_host", ""));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr.contains("a redirect loop for every client"),
        "{run}"
    );
    assert_eq!(get(), Some((200, "blog".into())), "refused");
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert_eq!(get(), Some((200, "blog".into())), "rolled back: {run}");

    n.write_http(&site("$host", "location = /old { return 301 /new; }"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(
        http_get(listen, "blog.test", "/old").ok().map(|r| r.0),
        Some(301)
    );
}

/// A blue/green switch to a release that answers 502, in a pool with a `backup` sorry page and
/// `proxy_next_upstream ... http_502`: nginx passes every request on to the backup, logs no
/// error for it, and every check got the sorry page's 200: "live and verified", every client
/// saw the sorry page (r11 K F22). The shadow logs at `notice`, where nginx says it took the
/// primary out ("upstream server temporarily disabled"): a pool the change touched whose every
/// primary it took out is refused, and the site still answers from the old release. A switch
/// to a working release goes live.
#[test]
fn a_switch_that_sends_a_pool_to_its_backup_is_refused() {
    let ip = unique_loopback();
    let blue = HttpBackend::start(SocketAddr::new(ip, 0), "blue");
    let green = HttpBackend::start(SocketAddr::new(ip, 0), "green");
    let sorry = HttpBackend::start(SocketAddr::new(ip, 0), "sorry");
    let broken = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |primary: &str| {
        format!(
            "upstream app {{ server {primary}; server {} backup; }}\n\
             server {{ listen {listen}; server_name cap.test;\n\
             location / {{ proxy_next_upstream error timeout http_502 http_503; \
             proxy_pass http://app; }} }}",
            sorry.host_port()
        )
    };
    let n = TestNginx::start(&site(&blue.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let get = || http_get(listen, "cap.test", "/").ok();
    assert_eq!(get(), Some((200, "blue".into())));
    n.write_http(&site(&broken.addr.to_string()));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    let reason = run.json()["shadow"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("backup"), "{reason}");
    assert_eq!(get(), Some((200, "blue".into())), "refused");

    n.write_http(&site(&green.host_port()));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(get(), Some((200, "green".into())), "{run}");
}

/// An allow-listed site (`allow 127.0.0.1; deny all;`) whose pool gains a member that answers
/// 502 to every request: the shadow's samples of the pool came each from a network of its
/// own (for `ip_hash`), which the allow-list answered 403, so a sample or two reached the
/// pool and the change went live "verified", every second client getting 502 (r12 M F10).
/// Behind `allow`/`deny` the samples keep the check's own address: refused, and the site
/// still answers.
#[test]
fn an_allow_listed_pools_samples_reach_the_pool() {
    let ip = unique_loopback();
    let a = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let b = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |second: &str| {
        format!(
            "upstream intpool {{ server {}; server {second}; }}\n\
             server {{ listen {listen}; server_name int.test; allow 127.0.0.1; deny all;\n\
             location / {{ proxy_pass http://intpool; }} }}",
            a.host_port()
        )
    };
    let n = TestNginx::start(&site(&b.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let get = || http_get(listen, "int.test", "/").ok();
    assert_eq!(get(), Some((200, "app".into())));
    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    for _ in 0..4 {
        assert_eq!(get(), Some((200, "app".into())), "refused");
    }
}

/// Redirects no client can follow went live (r11 K F7, r12 M F6): a site's `location /`
/// made `return 301 https://$host:PORT$request_uri` before anything listens on PORT, and a
/// catch-all's `return 301 https://$server_name$request_uri` where `server_name _` sends
/// every visitor to `https://_/`. Both fail now: the first is rolled back after the reload
/// (the shadow's stand-ins listen elsewhere, so only nginx itself can tell), the second is
/// refused; what the site serves stays as before.
#[test]
fn a_redirect_no_client_can_follow_is_a_failure() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let dead = free_port(ip);
    let site = |root: &str, catch_all: &str| {
        format!(
            "server {{ listen {listen} default_server; server_name _; {catch_all} }}\n\
             server {{ listen {listen}; server_name a.test; location / {{ {root} }} }}"
        )
    };
    let proxied = format!("proxy_pass http://{};", app.host_port());
    let good = site(&proxied, "return 301 https://$host$request_uri;");
    let n = TestNginx::start(&good);
    let sr = SafeReload::new(&n);
    sr.init();
    let get = || http_get(listen, "a.test", "/").ok();
    assert_eq!(get(), Some((200, "app".into())));

    let to_dead = format!("return 301 https://$host:{dead}$request_uri;");
    n.write_http(&site(&to_dead, "return 301 https://$host$request_uri;"));
    let run = sr.run(&["-y"]);
    run.expect(3);
    assert!(run.stderr.contains("where nothing listens"), "{run}");
    assert_eq!(get(), Some((200, "app".into())), "rolled back");

    n.write_http(&site(
        &proxied,
        "return 301 https://$server_name$request_uri;",
    ));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.stderr.contains("is no host name"), "{run}");
    let other = http_get(listen, "other.test", "/").ok().map(|r| r.0);
    assert_eq!(other, Some(301), "refused");
}

/// A backend slower than `--health-timeout` (1.2 s against 0.4 s), and a change that lowers
/// `proxy_read_timeout` below what it takes (0.8 s): every client gets nginx's 504. Both nginxes
/// ran out of `--health-timeout` first, so it was "slow before and after", a warning, and
/// went live. A check the shadow does not answer in time is asked of both again with a longer
/// timeout: the shadow's 504 where the running nginx answers 200 is refused.
/// A new site on such a backend is slow, not failing: it goes live.
#[test]
fn a_read_timeout_lowered_below_a_slow_backend_is_refused_and_a_new_slow_site_is_not() {
    let ip = unique_loopback();
    let slow = HttpBackend::start_slow(
        SocketAddr::new(ip, 0),
        "slow",
        std::time::Duration::from_millis(1200),
    );
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |name: &str, extra: &str| {
        format!(
            "server {{ listen {listen}; server_name {name}; \
             location / {{ {extra} proxy_pass http://{}; }} }}\n",
            slow.host_port()
        )
    };
    let base = site("t.test", "");
    let n = TestNginx::start(&base);
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("t.test", "proxy_read_timeout 800ms;"));
    let run = sr.run(&["-y", "--json", "--health-timeout", "400ms"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        report["shadow"]["reason"].to_string().contains("HTTP 504"),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "t.test", "/").expect("GET"),
        (200, "slow".into()),
        "refused"
    );

    n.write_http(&format!("{base}{}", site("new.test", "")));
    let run = sr.run(&["-y", "--json", "--health-timeout", "400ms"]);
    run.expect(0);
    assert_eq!(
        http_get(listen, "new.test", "/").expect("GET"),
        (200, "slow".into()),
        "live"
    );
}

/// A rate limit added to a login page (WordPress's `limit_req zone=... burst=2 nodelay` at
/// `rate=2r/m`): the checks themselves (one per name, a failed one asked twice more) use the
/// burst up, and nginx answers them 503, `limit_req_status`'s default. That was "200 before,
/// 503 after" and rolled back. A limited request's status is nginx's own answer: the change
/// goes live.
#[test]
fn a_rate_limit_added_to_a_location_goes_live() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str, rev: u32| {
        format!(
            "limit_req_zone $binary_remote_addr zone=login:1m rate=2r/m;\n\
             server {{ listen {listen}; server_name wp.test www.wp.test;\n\
             location = /rev {{ return 200 \"{rev}\"; }}\n\
             {extra}\n\
             location / {{ proxy_pass http://{}; }} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site("", 1));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(
        &format!(
            "location = /wp-login.php {{ limit_req zone=login burst=2 nodelay; proxy_pass http://{}; }}",
            app.host_port()
        ),
        2,
    ));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(http_get(listen, "wp.test", "/rev").expect("GET").1, "2");
}

/// A `server_name` typo (`a.test` written `a.tset`): a.test's clients get the default
/// server (here a `return 444`), and the typo answers nobody. Refused, with the file and line,
/// before the reload; a rename (`v1.a.test` to `v2.a.test`) stays a warning and goes live.
#[test]
fn a_server_name_replaced_by_its_typo_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let sites = |names: &str| {
        format!(
            "server {{ listen {listen} default_server; return 444; }}\n\
             server {{ listen {listen}; server_name {names};\n\
             location / {{ proxy_pass http://{}; }} }}\n",
            app.host_port()
        )
    };
    let n = TestNginx::start(&sites("a.test v1.a.test"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&sites("a.tset v1.a.test"));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr
            .contains("nginx.conf:18: config: server_name a.tset replaces a.test (a typo?)"),
        "{run}"
    );
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").1, "app");

    n.write_http(&sites("a.test v2.a.test"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stderr
            .contains("server_name v1.a.test is no longer any server's"),
        "{run}"
    );
    assert_eq!(http_get(listen, "v2.a.test", "/").expect("GET").1, "app");

    // A server whose only name is typo'd is a new server and a removed one: refused too.
    let two = |other: &str| {
        sites("a.test v2.a.test")
            + &format!(
                "server {{ listen {listen}; server_name {other};                  location / {{ proxy_pass http://{}; }} }}
",
                app.host_port()
            )
    };
    n.write_http(&two("shop.test"));
    sr.run(&["-y"]).expect(0);
    n.write_http(&two("shop.tset"));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr
            .contains("server_name shop.tset replaces shop.test (a typo?)"),
        "{run}"
    );
    assert_eq!(http_get(listen, "shop.test", "/").expect("GET").1, "app");

    // The fix of a typo reads as one too, but its labels are the configuration's own: a
    // warning, not a refusal.
    n.write_http(&two("wwww.shop.test"));
    sr.run(&["-y"]).expect(0);
    n.write_http(&two("www.shop.test"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(
        http_get(listen, "www.shop.test", "/").expect("GET").1,
        "app"
    );
}

/// nginx tries regex server names in the order it reads them, and a wildcard name before
/// any regex: a site file renamed so its broad regex comes first, or a `*.shop.test` added,
/// takes the Hosts another site's regex answered (every `eu*.shop.test` client gets another
/// site). The run said "affects 0 servers" and "verified". Refused, both servers named; the
/// Hosts still reach their site afterwards.
#[test]
fn a_regex_or_wildcard_name_that_takes_another_sites_hosts_is_refused() {
    let ip = unique_loopback();
    let shop = HttpBackend::start(SocketAddr::new(ip, 0), "shop");
    let legacy = HttpBackend::start(SocketAddr::new(ip, 0), "legacy");
    let listen = SocketAddr::new(ip, free_port(ip));
    let shop_site = format!(
        "server {{ listen {listen}; server_name shop.test ~^eu\\d+\\.shop\\.test$; \
         location / {{ proxy_pass http://{}; }} }}\n",
        shop.host_port()
    );
    let broad = |name: &str| {
        format!(
            "server {{ listen {listen}; server_name {name}; \
             location / {{ proxy_pass http://{}; }} }}\n",
            legacy.host_port()
        )
    };
    let n = TestNginx::start(&(shop_site.clone() + &broad("~^eu.+\\.test$")));
    let sr = SafeReload::new(&n);
    sr.init();
    let eu = || http_get(listen, "eu3.shop.test", "/").expect("GET").1;
    assert_eq!(eu(), "shop");

    n.write_http(&(broad("~^eu.+\\.test$") + &shop_site));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr
            .contains("is tried first, in configuration order"),
        "{run}"
    );
    assert_eq!(eu(), "shop");

    n.write_http(&(shop_site.clone() + &broad("~^eu.+\\.test$") + &broad("*.shop.test")));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr
            .contains("its name *.shop.test wins over the regex or wildcard"),
        "{run}"
    );
    assert_eq!(eu(), "shop");

    // A wildcard for hosts nobody answered is no takeover.
    n.write_http(&(shop_site + &broad("~^eu.+\\.test$") + &broad("*.other.test")));
    sr.run(&["-y"]).expect(0);
    assert_eq!(eu(), "shop");
}

/// Regression: a TLS catch-all's `ssl_reject_handshake on` replaced by the older idiom, a
/// certificate and `return 444` (Debian's snakeoil default server). Unknown names get no
/// answer before and after; over TLS nginx's close has no close_notify, which our client read
/// as a failed request, not the `return 444` it is: the shadow refused a harmless change, and
/// without the shadow it was rolled back.
#[test]
fn a_tls_catch_all_that_returns_444_in_place_of_rejecting_handshakes_goes_live() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "a");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "a.test");
    let (snake, snake_key) = self_signed(certs.path(), "snakeoil.test");
    let listen = SocketAddr::new(ip, free_port(ip));
    let conf = |catch_all: &str| {
        format!(
            "server {{ listen {listen} ssl default_server; server_name _; {catch_all} }}\n\
             server {{ listen {listen} ssl; server_name a.test; \
             ssl_certificate {}; ssl_certificate_key {}; \
             location / {{ proxy_pass http://{}; }} }}",
            cert.display(),
            key.display(),
            good.host_port()
        )
    };
    let returning = conf(&format!(
        "ssl_certificate {}; ssl_certificate_key {}; return 444;",
        snake.display(),
        snake_key.display()
    ));
    for flags in [&[][..], &["--no-shadow"][..]] {
        let n = TestNginx::start(&conf("ssl_reject_handshake on;"));
        let sr = SafeReload::new(&n);
        sr.init();
        n.write_http(&returning);
        let run = sr.run(&[&["-y"][..], flags].concat());
        run.expect(0);
        assert!(!run.stderr.contains("close_notify"), "{flags:?}: {run}");
        // The handshake completes now, with the snakeoil certificate, and nothing answers.
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &listen.to_string()])
            .args(["-servername", "other.test"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("CN = snakeoil.test"),
            "{flags:?}: the new catch-all is live: {out:?}"
        );
        assert_eq!(https_get(listen, "other.test", "/").ok(), Some(0), "444");
        assert_eq!(
            https_get(listen, "a.test", "/").ok(),
            Some(200),
            "{flags:?}"
        );
    }
}

/// `ssl_protocols TLSv1;` added to the `ssl_reject_handshake` default server of a TLS address:
/// nginx takes the protocol versions of every handshake there from the default server, before
/// SNI picks a site, so every site on the address fails its handshake. The change "affected 1
/// of N servers" (the default one, with nothing proxied to check) and went live (r11 L F1).
/// The default server's handshake settings are now every server's on its address: the sites
/// there are checked, the change is refused (and rolled back without the shadow), and a.test
/// still answers over TLS. Settings all clients accept go live.
#[test]
fn handshake_settings_in_a_tls_default_server_affect_every_site_on_its_address() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "a");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "a.test");
    let listen = SocketAddr::new(ip, free_port(ip));
    let conf = |settings: &str| {
        format!(
            "server {{ listen {listen} ssl default_server; server_name _; \
             ssl_reject_handshake on; {settings} return 444; }}\n\
             server {{ listen {listen} ssl; server_name a.test; \
             ssl_certificate {}; ssl_certificate_key {}; \
             location / {{ proxy_pass http://{}; }} }}",
            cert.display(),
            key.display(),
            good.host_port()
        )
    };
    let n = TestNginx::start(&conf(""));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(https_get(listen, "a.test", "/").ok(), Some(200));
    n.write_http(&conf("ssl_protocols TLSv1;"));
    for flags in [&[][..], &["--no-shadow"][..]] {
        let run = sr.run(&[&["-y"][..], flags].concat());
        run.expect(if flags.is_empty() { 1 } else { 3 });
        assert!(run.stderr.contains("a.test"), "{flags:?}: {run}");
        assert_eq!(
            https_get(listen, "a.test", "/").ok(),
            Some(200),
            "{flags:?}"
        );
    }
    n.write_http(&conf("ssl_protocols TLSv1.2 TLSv1.3;"));
    let run = sr.run(&["-y", "-v"]);
    run.expect(0);
    assert!(
        run.to_string().contains("TLS handshakes on")
            && run.to_string().contains("verify: GET https://a.test/"),
        "checked: {run}"
    );
    assert_eq!(https_get(listen, "a.test", "/").ok(), Some(200));
}

/// An http-level `limit_conn connip 3` (zone on `$binary_remote_addr`) in a tree that also has
/// a `geo $remote_addr` another server routes by: the run's concurrent checks, all from one
/// address (the `geo` kept them there), got nginx's 503, and a site switched to a backend
/// answering 502 went live (r12 M F11). Only a location routed by the client's address keeps
/// one: refused, and the site still answers.
#[test]
fn a_connection_limit_is_not_tripped_by_the_runs_own_checks() {
    let ip = unique_loopback();
    let slow = HttpBackend::start_slow(
        SocketAddr::new(ip, 0),
        "app",
        std::time::Duration::from_millis(300),
    );
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |first: &str, header: &str| {
        let mut http = format!(
            "limit_conn_zone $binary_remote_addr zone=connip:1m; limit_conn connip 3; \
             add_header X-H {header};\n\
             geo $remote_addr $office {{ default office_a; 127.0.0.1 office_b; }}\n\
             upstream office_a {{ server {s}; }}\nupstream office_b {{ server {s}; }}\n\
             server {{ listen {listen}; server_name office.test; \
             location / {{ proxy_pass http://$office; }} }}\n",
            s = slow.host_port()
        );
        for i in 0..8 {
            let to = if i == 3 {
                first.to_string()
            } else {
                slow.host_port()
            };
            http.push_str(&format!(
                "server {{ listen {listen}; server_name s{i}.test; \
                 location / {{ proxy_pass http://{to}; }} }}\n"
            ));
        }
        http
    };
    let n = TestNginx::start(&site(&slow.host_port(), "1"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(&bad.addr.to_string(), "2"));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.stderr.contains("s3.test"), "{run}");
    assert_eq!(
        http_get(listen, "s3.test", "/").ok(),
        Some((200, "app".into()))
    );
}

/// A site behind `limit_req` keyed on the client's address, switched to a backend that answers
/// 500 to everything: the run's own requests, all from one address, used up the limit, the
/// running nginx answered them its own 503, and the shadow's 500 was judged next to that 503:
/// exit 0, clients got 500 (r11 K F3). Each request of a rate-limited location's checks now
/// comes from a loopback address of its own: the running nginx answers 200, the shadow's 500
/// refuses the change, and the site still answers from the old backend. A good switch goes
/// live verified.
#[test]
fn a_rate_limited_sites_checks_do_not_use_up_its_limit() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "v1");
    let good2 = HttpBackend::start(SocketAddr::new(ip, 0), "v2");
    let failing = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |to: &str| {
        format!(
            "limit_req_zone $binary_remote_addr zone=rl:1m rate=1r/s;\n\
             server {{ listen {listen}; server_name api.test; limit_req zone=rl burst=1 nodelay;\n\
             location / {{ proxy_pass http://{to}; }} }}"
        )
    };
    let n = TestNginx::start(&site(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(&failing.addr.to_string()));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    // The test's own request comes from another address than the run's.
    let get = || http_get(listen, "api.test", "/").ok();
    assert_eq!(get(), Some((200, "v1".into())), "{run}");

    n.write_http(&site(&good2.host_port()));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(run.stdout.contains("live and verified"), "{run}");
    assert_eq!(get(), Some((200, "v2".into())));
}

/// Regression: a new site whose backend answers 503 to every request (or whose `proxy_pass
/// http://$var` nginx cannot use: its own 500) went live "verified": another server answered
/// its Host before, so it had no baseline, and only a 502 or 504 failed on its own. With
/// nothing to compare, a new site answering every client with a server error is refused,
/// and rolled back without the shadow; the same 503 is not this change's once it is live.
#[test]
fn a_new_site_answering_a_server_error_is_the_changes() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "a");
    let unavailable = StatusBackend::start(SocketAddr::new(ip, 0), 503);
    let listen = SocketAddr::new(ip, free_port(ip));
    let base = format!(
        "server {{ listen {listen} default_server; server_name a.test; \
         location / {{ proxy_pass http://{}; }} }}",
        good.host_port()
    );
    let n = TestNginx::start(&base);
    let sr = SafeReload::new(&n);
    sr.init();
    for new in [
        format!("location / {{ proxy_pass http://{}; }}", unavailable.addr),
        "location / { proxy_pass http://$unset_upstream; }".to_string(),
    ] {
        let site = format!(
            "{base}\nserver {{ listen {listen}; server_name new.test; \
             set $unset_upstream \"\"; {new} }}"
        );
        n.write_http(&site);
        let run = sr.run(&["-y", "--json"]);
        run.expect(1);
        assert_eq!(run.json()["shadow"]["state"], "refused", "{new}: {run}");
        let run = sr.run(&["-y", "--no-shadow"]);
        run.expect(3);
        assert!(run.stderr.contains("new.test"), "{new}: {run}");
        // Not live: the default server still answers the new name.
        assert_eq!(
            http_get(listen, "new.test", "/").expect("GET").1,
            "a",
            "{new}"
        );
    }
    // Made live on purpose (the app is still being deployed): the operator says which
    // answers are fine.
    n.write_http(&format!(
        "{base}\nserver {{ listen {listen}; server_name new.test; \
         location / {{ proxy_pass http://{}; }} }}",
        unavailable.addr
    ));
    sr.run(&["-y", "--expect-status", "200", "--expect-status", "503"])
        .expect(0);
    assert_eq!(http_get(listen, "new.test", "/").expect("GET").0, 503);
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").1, "a");
}

/// Regression: a change that leaves a location leading to no backend drops the check that
/// would have seen it. The README's own example, `rewrite ^/(.*)$ /v1/$1 last;` written
/// `/v2/` (no such location: a rewrite cycle, 500 for every page), and `try_files $uri
/// @backnd` (500 for every miss) went live "verified": the candidate derived no check for
/// `location /` or `/tf/`, and last-good's was not asked. Last-good's checks of a location
/// both have are asked too, against what they got before: refused, and rolled back without
/// the shadow. A redirect put there on purpose goes live.
#[test]
fn a_location_a_change_leaves_without_a_backend_is_asked_as_last_good_checked_it() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |root: &str, tf: &str, api: &str| {
        format!(
            "server {{ listen {listen}; server_name min.test; \
             location / {{ {root} }} \
             location /tf/ {{ try_files $uri {tf}; }} \
             location /api/ {{ {api} }} \
             location @backend {{ proxy_pass http://{a}; }} \
             location /v1/ {{ proxy_pass http://{a}; }} }}",
            a = app.host_port()
        )
    };
    let (rewrite, pass) = (
        "rewrite ^/(.*)$ /v1/$1 last;",
        format!("proxy_pass http://{};", app.host_port()),
    );
    let good = site(rewrite, "@backend", &pass);
    let n = TestNginx::start(&good);
    let sr = SafeReload::new(&n);
    sr.init();
    for bad in [
        site("rewrite ^/(.*)$ /v2/$1 last;", "@backend", &pass),
        site(rewrite, "@backnd", &pass),
    ] {
        n.write_http(&bad);
        let run = sr.run(&["-y", "--json"]);
        run.expect(1);
        assert!(run.stdout.contains("as last-good checked it"), "{run}");
        let run = sr.run(&["-y", "--no-shadow"]);
        run.expect(3);
        assert_eq!(http_get(listen, "min.test", "/page").expect("GET").0, 200);
        assert_eq!(http_get(listen, "min.test", "/tf/x").expect("GET").0, 200);
    }
    // On purpose: `/tf/` made static (its named location left in the file), `/api/` retired
    // with `return 410`, `location /` made a redirect. Each goes live.
    for (on_purpose, path, status) in [
        (site(rewrite, "=404", &pass), "/tf/x", 404),
        (site(rewrite, "=404", "return 410;"), "/api/x", 410),
        (
            site("return 301 /v1/;", "=404", "return 410;"),
            "/page",
            301,
        ),
    ] {
        n.write_http(&on_purpose);
        sr.run(&["-y"]).expect(0);
        assert_eq!(http_get(listen, "min.test", path).expect("GET").0, status);
    }
}

/// Regression: `--expect-status 410` passed to let an endpoint retired with `return 410` go
/// live: every other check's 200, which the flag does not list, failed "before and after",
/// and the run exited 4 ("an operator must act") for sites that answer as they did. A 2xx or
/// 3xx the same before and after is no failure to act on.
#[test]
fn a_status_expect_status_leaves_out_is_no_emergency_where_it_is_as_before() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |api: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test; \
             location / {{ proxy_pass http://{a}; }} location /api/ {{ {api} }} }}",
            a = app.host_port()
        )
    };
    let n = TestNginx::start(&site(&format!("proxy_pass http://{};", app.host_port())));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("return 410;"));
    let run = sr.run(&["-y", "--expect-status", "410"]);
    run.expect(0);
    assert!(!run.stdout.contains("operator must act"), "{run}");
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").0, 200);
    assert_eq!(http_get(listen, "a.test", "/api/x").expect("GET").0, 410);
}

/// Regression: a location with a space (`location "/a b/"`) was checked with the space sent
/// raw in the request line: nginx answered 400 before it chose a server, which passed, so a
/// new such location passing to a backend that answers 502 went live "verified". The path is
/// sent percent-encoded, as a browser sends it.
#[test]
fn a_location_with_a_space_is_checked_with_its_path_encoded() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test; \
             location / {{ proxy_pass http://{}; }} {extra} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(&format!(
        "location \"/a b/\" {{ proxy_pass http://{}; }}",
        bad.addr
    )));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert!(run.stdout.contains("HTTP 502"), "{run}");
    assert_eq!(http_get(listen, "a.test", "/a%20b/").expect("GET").1, "app");
}

/// r12 N F4: an `ssl_ciphers` that leaves the certificate's key no TLS 1.2 suite (an RSA-only
/// list in front of an ECDSA certificate). The checks negotiate TLS 1.3, where `ssl_ciphers`
/// does not apply, and passed: "live and verified" while every TLS 1.2 client got a handshake
/// failure. A TLS 1.2 handshake is asked beside each TLS check; one that completed before
/// the change and fails after it refuses the change in the shadow, and rolls it back without
/// it. The same list with a suite for the key, and a change that drops TLS 1.2 from
/// `ssl_protocols` (a decision, not a mistake), go live.
#[test]
fn an_ssl_ciphers_that_leaves_tls12_clients_no_handshake_is_the_changes() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "a");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "a.test");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen} ssl default_server; server_name a.test; \
             ssl_certificate {}; ssl_certificate_key {}; {extra} \
             location / {{ proxy_pass http://{}; }} }}",
            cert.display(),
            key.display(),
            good.host_port()
        )
    };
    let n = TestNginx::start(&site("ssl_protocols TLSv1.2 TLSv1.3;"));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(https_get_tls12(listen, "a.test"), Some(200));
    let broken = "ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256;";
    n.write_http(&site(broken));

    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert!(format!("{run}").contains("TLS 1.2 handshake: "), "{run}");
    assert_eq!(https_get_tls12(listen, "a.test"), Some(200), "not reloaded");

    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert!(
        run.stderr.contains("every TLS 1.2 client is refused"),
        "{run}"
    );
    assert_eq!(https_get_tls12(listen, "a.test"), Some(200), "rolled back");
    assert_eq!(https_get(listen, "a.test", "/").ok(), Some(200));

    // A list with a suite for the key goes live; so does TLS 1.2 dropped on purpose.
    let fine = "ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256;";
    n.write_http(&site(fine));
    sr.run(&["-y"]).expect(0);
    assert_eq!(https_get_tls12(listen, "a.test"), Some(200));
    n.write_http(&site("ssl_protocols TLSv1.3;"));
    sr.run(&["-y"]).expect(0);
    assert_eq!(https_get_tls12(listen, "a.test"), None, "TLS 1.2 dropped");
    assert_eq!(https_get(listen, "a.test", "/").ok(), Some(200));
}

/// r13 Q F2, F3: a change that renames a site's `location /` to `location /app/`, or deletes
/// its only location, leaves every other path to nginx's own 404 where the backend answered.
/// Only the candidate's locations were checked (`/app/` answered 200): "live and verified".
/// Last-good's check of `/` is asked again where no location of the candidate takes it: the
/// change is refused, and `/` still answers from the backend. Where another location takes the
/// removed one's requests (`location /old/` removed beside `location /`), or the server now
/// answers every request itself (a `return 301`), they go elsewhere on purpose: live.
#[test]
fn a_location_removed_so_that_its_requests_reach_no_location_is_the_changes() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let up = app.host_port();
    let site = |body: &str| format!("server {{ listen {listen}; server_name a.test; {body} }}");
    let base = site(&format!(
        "location / {{ proxy_pass http://{up}; }} location /old/ {{ proxy_pass http://{up}; }}"
    ));
    let n = TestNginx::start(&base);
    let sr = SafeReload::new(&n);
    sr.init();
    let root = || http_get(listen, "a.test", "/").ok();
    assert_eq!(root(), Some((200, "app".into())));

    let renamed = site(&format!(
        "location /app/ {{ proxy_pass http://{up}; }} location /old/ {{ proxy_pass http://{up}; }}"
    ));
    let deleted = site("");
    for (what, conf) in [("renamed", &renamed), ("deleted", &deleted)] {
        n.write_http(conf);
        let run = sr.run(&["-y"]);
        run.expect(1);
        assert!(
            run.stderr.contains("which the change removes"),
            "{what}: {run}"
        );
        assert_eq!(root(), Some((200, "app".into())), "{what}: not reloaded");
    }

    // `/old/` removed: `location /` takes its requests.
    n.write_http(&site(&format!("location / {{ proxy_pass http://{up}; }}")));
    sr.run(&["-y"]).expect(0);
    assert_eq!(
        http_get(listen, "a.test", "/old/x").ok(),
        Some((200, "app".into()))
    );
    // The site replaced by a redirect.
    n.write_http(&site("return 301 https://b.test$request_uri;"));
    sr.run(&["-y"]).expect(0);
    assert_eq!(root().map(|a| a.0), Some(301));
}

/// r13 Q F1: `check` with a state directory that cannot take the shadow's lease (read-only,
/// full; here `STATE/shadow` is a file, which stops root too) skipped the shadow ("not
/// verified in the shadow: ... could not be started") and exited 0 for a change that gives
/// clients 502, where a pre-commit hook relies on its exit 1. The lease in the shadow's own
/// directory is enough: the shadow runs and refuses the change, and nothing half-written is
/// left in the state directory.
#[test]
fn check_with_a_state_directory_that_takes_no_lease_still_runs_the_shadow() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |up: &str| {
        format!("server {{ listen {listen}; location / {{ proxy_pass http://{up}; }} }}")
    };
    let n = TestNginx::start(&site(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let lease_dir = sr.state.join("shadow");
    let _ = std::fs::remove_dir_all(&lease_dir);
    std::fs::write(&lease_dir, "").expect("a file where the lease directory goes");
    n.write_http(&site(&bad.addr.to_string()));

    let run = sr.run(&["check", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(
        http_get(listen, "site", "/").ok(),
        Some((200, "good".into()))
    );
    assert_eq!(std::fs::read(&lease_dir).ok(), Some(Vec::new()));
    let stray: Vec<_> = (std::fs::read_dir(&sr.state).expect("state dir"))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// r13 P HIGH-2: the FastCGI params at server level, and a `fastcgi_param` the change adds to
/// the PHP location, which replaces every one it inherited (SCRIPT_FILENAME too): php-fpm
/// runs nothing and answers every page 200 with an empty body. Statuses alone saw no
/// difference: "live and verified". An empty 2xx where the same request got a page before
/// is the change's: refused in the shadow, rolled back without it, and the page still
/// answers.
#[test]
fn a_php_location_that_loses_its_inherited_fastcgi_params_is_the_changes() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |own: &str| {
        format!(
            "server {{ listen {listen}; server_name p.test; root {}; index index.php; \
             {FASTCGI} location ~ \\.php$ {{ {own} fastcgi_pass {}; }} }}",
            root.path().display(),
            fpm.addr
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let page = || {
        let (status, body) = http_get(listen, "p.test", "/index.php").expect("GET");
        (status, body.contains("php ok"))
    };
    assert_eq!(page(), (200, true));
    n.write_http(&site("fastcgi_param APP_ENV prod;"));

    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert!(format!("{run}").contains("with an empty body"), "{run}");
    assert_eq!(page(), (200, true), "not reloaded");

    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert_eq!(page(), (200, true), "rolled back");

    // The same line beside the params the location needs, its own: live.
    n.write_http(&site(&format!("{FASTCGI} fastcgi_param APP_ENV prod;")));
    sr.run(&["-y"]).expect(0);
    assert_eq!(page(), (200, true));
}

/// r13 R F1: `/health` moved to another app, which answers an empty 200 (a health endpoint
/// often does). The empty-page rule held last-good's page against it: refused, naming
/// `fastcgi_param` for a proxied location. What another backend answered before is no
/// baseline for how the new one's page looks: live, and `/health` answers the new app.
#[test]
fn a_location_moved_to_an_app_that_answers_an_empty_200_goes_live() {
    let ip = unique_loopback();
    let old = HttpBackend::start(SocketAddr::new(ip, 0), "healthy page");
    let new = HttpBackend::start(SocketAddr::new(ip, 0), "");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |up: &str| {
        format!(
            "server {{ listen {listen}; server_name h.test; \
             location / {{ proxy_pass http://{}; }} \
             location /health {{ proxy_pass http://{up}; }} }}",
            old.host_port()
        )
    };
    let n = TestNginx::start(&site(&old.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let health = || http_get(listen, "h.test", "/health").ok();
    assert_eq!(health(), Some((200, "healthy page".into())));

    n.write_http(&site(&new.host_port()));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(health(), Some((200, String::new())), "{run}");
    assert!(new.hits() > 0, "the new app answered");

    // The same move made in the `upstream` block the location passes through.
    let pooled = |up: &str| format!("upstream health {{ server {up}; }} {}", site("health"));
    n.write_http(&pooled(&old.host_port()));
    sr.run(&["-y"]).expect(0);
    assert_eq!(health(), Some((200, "healthy page".into())));
    n.write_http(&pooled(&new.host_port()));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(health(), Some((200, String::new())), "{run}");
}

/// r13 R F2: a site reduced to static files (`location / { try_files $uri $uri/ =404; }`),
/// its `/health` and `/api/` locations deleted. The checks last-good made of them were
/// carried as "no location takes its requests now", got nginx's 404 and refused the change.
/// A location that serves files is written to take them: live, and the site serves its
/// files. With no location left at all, the removed location's 404 still refuses.
#[test]
fn a_site_made_static_on_purpose_goes_live() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let docroot = tempfile::tempdir().expect("docroot");
    std::fs::write(docroot.path().join("index.html"), "static site").expect("index.html");
    let up = app.host_port();
    let site = |body: &str| format!("server {{ listen {listen}; server_name s.test; {body} }}");
    let n = TestNginx::start(&site(&format!(
        "location / {{ proxy_pass http://{up}; }} location /health {{ proxy_pass http://{up}; }} \
         location /api/ {{ proxy_pass http://{up}; }}"
    )));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "s.test", "/api/x").ok(),
        Some((200, "app".into()))
    );

    let proxied = site(&format!(
        "location / {{ proxy_pass http://{up}; }} location /health {{ proxy_pass http://{up}; }} \
         location /api/ {{ proxy_pass http://{up}; }}"
    ));
    // With `try_files`, and (r15 v F7) with nginx's static handler alone.
    for body in [
        "location / { try_files $uri $uri/ =404; }",
        "location / { index index.html; }",
    ] {
        n.write_http(&site(&format!(
            "root {}; index index.html; {body}",
            docroot.path().display()
        )));
        let run = sr.run(&["-y"]);
        run.expect(0);
        assert_eq!(
            http_get(listen, "s.test", "/").ok(),
            Some((200, "static site".into())),
            "{body}: {run}"
        );
        assert_eq!(
            http_get(listen, "s.test", "/api/x").ok().map(|a| a.0),
            Some(404)
        );
        n.write_http(&proxied);
        sr.run(&["-y"]).expect(0);
    }
}

/// r13 R F3: the WebSocket lines (`proxy_http_version 1.1`, `proxy_set_header Upgrade
/// $http_upgrade`, `Connection "upgrade"`) moved from `location /ws/` up to the server, as
/// many guides write them. They reach every location, and `/` was then checked with a
/// handshake, which the app answers with its own 400: refused. A location is a WebSocket
/// endpoint where it writes the header itself or its path says so: live, `/` answers the
/// app and `/ws/` still completes a handshake.
#[test]
fn websocket_headers_moved_to_the_server_level_go_live() {
    let ip = unique_loopback();
    let app = HttpBackend::start_refusing_upgrades(SocketAddr::new(ip, 0), "app");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |server: &str, location: &str| {
        format!(
            "server {{ listen {listen}; server_name w.test; {server} \
             location / {{ proxy_pass http://{}; }} \
             location /ws/ {{ proxy_pass http://{}; {location} }} }}",
            app.host_port(),
            ws.addr
        )
    };
    let n = TestNginx::start(&site("", UPGRADE));
    let sr = SafeReload::new(&n);
    sr.init();

    n.write_http(&site(UPGRADE, ""));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(
        http_get(listen, "w.test", "/").ok(),
        Some((200, "app".into())),
        "{run}"
    );
    let checks = run.json()["health"]["results"].to_string();
    assert!(checks.contains("/ws/"), "the socket is checked: {run}");
    assert!(checks.contains("Upgrade"), "with a handshake: {run}");
}

/// r14 s F5, F6: Debian's `fastcgi_params` sends `SERVER_ADDR $server_addr` and `SERVER_PORT
/// $server_port`, which differ in the shadow, so a PHP page the change breaks there was left
/// to verification after the reload ("the backend answered that itself"): clients got the
/// 404 or 500 until the rollback. Where the shadow's log names a cause no such value explains
/// (php-fpm's "Primary script unknown" for a SCRIPT_FILENAME lost, nginx's own "internal
/// redirection cycle" for a front controller's typo), the change is refused before the
/// reload, and the site still answers.
#[test]
fn a_php_page_broken_behind_debians_fastcgi_params_is_refused_in_the_shadow() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    const DEBIAN: &str = "fastcgi_param QUERY_STRING $query_string; \
         fastcgi_param REQUEST_METHOD $request_method; \
         fastcgi_param SCRIPT_NAME $fastcgi_script_name; \
         fastcgi_param SERVER_ADDR $server_addr; fastcgi_param SERVER_PORT $server_port;";
    let site = |front: &str, script: &str| {
        format!(
            "server {{ listen {listen}; server_name wp.test; root {}; index index.php;\n\
             location / {{ try_files $uri $uri/ {front}$is_args$args; }}\n\
             location ~ \\.php$ {{ {DEBIAN} {script} fastcgi_pass {}; }} }}",
            root.path().display(),
            fpm.addr
        )
    };
    let good = "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;";
    let n = TestNginx::start(&site("/index.php", good));
    let sr = SafeReload::new(&n);
    sr.init();
    let page = || {
        let (status, body) = http_get(listen, "wp.test", "/hello-world/").expect("GET");
        (status, body.contains("php ok"))
    };
    assert_eq!(page(), (200, true));

    for (what, conf, cause) in [
        (
            "SCRIPT_FILENAME lost",
            site("/index.php", ""),
            "Primary script unknown",
        ),
        (
            "front controller typo",
            site("/index.phtml", good),
            "redirection cycle",
        ),
    ] {
        n.write_http(&conf);
        let run = sr.run(&["-y", "--json"]);
        run.expect(1);
        assert_eq!(run.json()["shadow"]["state"], "refused", "{what}: {run}");
        assert!(format!("{run}").contains(cause), "{what}: {run}");
        assert_eq!(page(), (200, true), "{what}: not reloaded");
    }
}

/// r14 s F1: the WebSocket lines at the `http` level reach every location, and `/live/`
/// (Phoenix LiveView) is a socket by no word of its path. A change gives it a
/// `proxy_set_header` of its own, which drops every inherited one, `Upgrade` too: its
/// handshakes no longer switch. It was checked with a plain GET (a 502 from the socket
/// server before and after): "live and verified". Last-good's location passed `Upgrade` on,
/// so its clients' handshake is what it is asked: refused, and `/live/` still switches.
#[test]
fn a_socket_location_that_loses_inherited_upgrade_headers_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start_refusing_upgrades(SocketAddr::new(ip, 0), "app");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |own: &str| {
        format!(
            "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; \
             proxy_set_header Connection \"upgrade\"; \
             server {{ listen {listen}; server_name l.test; \
             location / {{ proxy_pass http://{}; }} \
             location /live/ {{ proxy_pass http://{}; {own} }} }}",
            app.host_port(),
            ws.addr
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let switched = || handshake_status(listen, "l.test", "/live/websocket");
    assert_eq!(switched(), Some(101));

    n.write_http(&site(
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    ));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(switched(), Some(101), "not reloaded: {run}");
    assert_eq!(
        http_get(listen, "l.test", "/").ok(),
        Some((200, "app".into()))
    );
}

/// r14 s F4: WordPress's `location /` loses its front controller (`try_files $uri $uri/
/// =404;`) while `location ~ \.php$` still passes to php-fpm: every permalink is nginx's own
/// 404 where PHP answered. Last-good's check through the fallback was carried and its 404
/// taken for a site made static on purpose: "live". The PHP location still passing, the 404
/// is the change's: refused, and permalinks still answer.
#[test]
fn a_front_controller_removed_in_front_of_a_php_location_is_the_changes() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |fallback: &str| {
        format!(
            "server {{ listen {listen}; server_name wp.test; root {}; index index.php;\n\
             location / {{ try_files $uri $uri/ {fallback}; }}\n\
             location ~ \\.php$ {{ try_files $fastcgi_script_name =404; {FASTCGI} \
             fastcgi_pass {}; }} }}",
            root.path().display(),
            fpm.addr
        )
    };
    let n = TestNginx::start(&site("/index.php$is_args$args"));
    let sr = SafeReload::new(&n);
    sr.init();
    let permalink = || {
        http_get(listen, "wp.test", "/hello-world/")
            .ok()
            .map(|(s, b)| (s, b.contains("php ok")))
    };
    assert_eq!(permalink(), Some((200, true)));
    n.write_http(&site("=404"));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert_eq!(permalink(), Some((200, true)), "not reloaded: {run}");
}

/// r14 s F3: a new regex location (`~ ^/(socket\.io|sio)/`, to the app) takes the paths of
/// the `/socket.io/` WebSocket location, which stays in the file. The candidate's check of the
/// new location asks `/socket.io/` with a plain GET (the app's 400 before and after), so
/// last-good's handshake there was taken for asked already, and not asked: "live" while every
/// socket.io client got 400. A handshake is another request than a GET of its URL: it is
/// asked as last-good checked it, refused, and socket.io still switches.
#[test]
fn a_new_regex_location_that_takes_a_sockets_paths_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start_refusing_upgrades(SocketAddr::new(ip, 0), "app");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| socket_site(listen, &app.host_port(), extra, "/socket.io/", ws.addr);
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let switched = || handshake_status(listen, "io.test", "/socket.io/?EIO=4");
    assert_eq!(switched(), Some(101));
    n.write_http(&site(&format!(
        "location ~ ^/socket\\.io/ {{ proxy_pass http://{}; }}",
        app.host_port()
    )));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.to_string().contains("WebSocket handshake"), "{run}");
    assert_eq!(switched(), Some(101), "not reloaded: {run}");
}

/// r14 s F2 (b): `/ws/` and `/socket.io/` served by one regex location, `~ ^/(ws|socket\.io)/`.
/// Only its first branch was checked, so a new `location ^~ /socket.io/` to the app (which
/// takes those paths from the regex) left every socket.io handshake to the app's 400 while
/// `/ws/` still switched: "live and verified". Each branch of a WebSocket location's regex is
/// checked with a handshake, and last-good's check of the branch the candidate no longer
/// derives is asked as it was: refused, and socket.io still switches.
#[test]
fn a_location_that_takes_a_websocket_regexs_second_branch_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start_refusing_upgrades(SocketAddr::new(ip, 0), "app");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        socket_site(
            listen,
            &app.host_port(),
            extra,
            "~ ^/(ws|socket\\.io)/",
            ws.addr,
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let switched = || handshake_status(listen, "io.test", "/socket.io/?EIO=4");
    assert_eq!(switched(), Some(101));
    n.write_http(&site(&format!(
        "location ^~ /socket.io/ {{ proxy_pass http://{}; }}",
        app.host_port()
    )));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.to_string().contains("/socket.io/"), "{run}");
    assert_eq!(switched(), Some(101), "not reloaded: {run}");
    assert_eq!(handshake_status(listen, "io.test", "/ws/x"), Some(101));
}

/// r15 v F5: a Socket.IO server answers a WebSocket handshake without its query
/// (`?EIO=4&transport=websocket`) with its own 400. The check sent none: moving `/socket.io/`
/// to a working Socket.IO server was refused (400 where 101), and once it was last-good,
/// dropping its Upgrade headers was "verified" (400 before and after). The check sends what
/// its clients send: the move goes live, and the dropped headers are refused.
#[test]
fn a_socket_io_location_is_checked_with_its_clients_handshake() {
    let ip = unique_loopback();
    let app = HttpBackend::start_refusing_upgrades(SocketAddr::new(ip, 0), "app");
    let plain_ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let io = WebSocketBackend::start_socket_io(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |to: SocketAddr, headers: &str| {
        format!(
            "server {{ listen {listen}; server_name io.test; \
             location / {{ proxy_pass http://{}; }} \
             location /socket.io/ {{ proxy_pass http://{to}; {headers} }} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site(plain_ws.addr, UPGRADE));
    let sr = SafeReload::new(&n);
    sr.init();
    let switched = || handshake_status(listen, "io.test", "/socket.io/?EIO=4&transport=websocket");
    n.write_http(&site(io.addr, UPGRADE));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(switched(), Some(101), "{run}");

    n.write_http(&site(io.addr, ""));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert_eq!(switched(), Some(101), "not reloaded: {run}");
}

/// r15 v F4: php-fpm keeps a `PHP_VALUE` in each worker that gets one, for every later
/// request: the checks' requests of a change that sets one (the shadow's too) leave it in the
/// production pool, and no refusal or rollback of nginx takes it out. The run says so before
/// anything is sent; a harmless value still goes live.
#[test]
fn a_change_to_php_value_warns_that_php_fpm_keeps_it() {
    let ip = unique_loopback();
    let fpm = AppServer::php_fpm(SocketAddr::new(ip, free_port(ip)));
    let root = php_root();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |own: &str| {
        format!(
            "server {{ listen {listen}; server_name p.test; root {}; index index.php; \
             location ~ \\.php$ {{ {FASTCGI} {own} fastcgi_pass {}; }} }}",
            root.path().display(),
            fpm.addr
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("fastcgi_param PHP_VALUE \"memory_limit=256M\";"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(run.stderr.contains("restart php-fpm"), "{run}");
    let (status, body) = http_get(listen, "p.test", "/index.php").expect("GET");
    assert_eq!((status, body.contains("php ok")), (200, true));
}

/// r15 v F1: with the WebSocket lines at the server level, a new `location /live/` (Phoenix
/// LiveView) to a WebSocket-only server was checked with a plain GET, which that server
/// closes (nginx's 502): refused. Its path says it is a socket: checked with the handshake
/// its clients send, it goes live, and switches.
#[test]
fn a_new_live_view_socket_under_server_level_upgrade_headers_goes_live() {
    let ip = unique_loopback();
    let app = HttpBackend::start_refusing_upgrades(SocketAddr::new(ip, 0), "app");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name lv.test; proxy_http_version 1.1; \
             proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; \
             location / {{ proxy_pass http://{}; }} {extra} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(&format!(
        "location /live/ {{ proxy_pass http://{}; }}",
        ws.addr
    )));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(
        handshake_status(listen, "lv.test", "/live/websocket"),
        Some(101),
        "{run}"
    );
}

/// r15 v F2: a Node app serves its pages and its WebSockets on `/`. Last-good's `/` passed
/// `Upgrade` on, so it was checked with the handshake alone: moving it to a server that speaks
/// only WebSocket was "verified" (101) while every page view got nginx's 502. Its pages are
/// asked beside the handshake: refused, and the pages still answer.
#[test]
fn a_location_serving_pages_and_websockets_is_checked_for_both() {
    let ip = unique_loopback();
    let node = WebSocketBackend::start_with_pages(SocketAddr::new(ip, 0), "node page");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |to: SocketAddr| {
        format!(
            "server {{ listen {listen}; server_name n.test; location / {{ proxy_pass http://{to}; \
             proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; \
             proxy_set_header Connection \"upgrade\"; }} }}"
        )
    };
    let n = TestNginx::start(&site(node.addr));
    let sr = SafeReload::new(&n);
    sr.init();
    let page = || http_get(listen, "n.test", "/").ok();
    assert_eq!(page(), Some((200, "node page".into())));
    n.write_http(&site(ws.addr));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert_eq!(
        page(),
        Some((200, "node page".into())),
        "not reloaded: {run}"
    );
    assert_eq!(handshake_status(listen, "n.test", "/"), Some(101));
}

/// r14 t F5: a pool whose primary is a listen the same change adds to nginx itself (an
/// internal vhost), with a `backup` that is down. The primary's refused connect is nginx's own
/// listen, opened at the reload (a warning), but the backup was then judged as the pool's
/// only live member: refused, where a plain reload serves. The backup matters only when that
/// primary fails, and the checks through it say whether it answers: live, and served.
#[test]
fn a_down_backup_beside_a_primary_that_is_nginxs_own_new_listen_goes_live() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let (front, inner, dead) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let site = |pass: &str, extra: &str| {
        format!(
            "{extra} server {{ listen {front}; server_name f.test; \
             location / {{ proxy_pass {pass}; }} }}"
        )
    };
    let n = TestNginx::start(&site(&format!("http://{}", app.host_port()), ""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(
        "http://tier",
        &format!(
            "upstream tier {{ server {inner}; server {dead} backup; }} \
             server {{ listen {inner}; server_name i.test; \
             location / {{ proxy_pass http://{}; }} }}",
            app.host_port()
        ),
    ));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(
        http_get(front, "f.test", "/").ok(),
        Some((200, "app".into())),
        "{run}"
    );
}

/// `p.test` on `listen`, its `location /` (with `extra`) passing to `upstream pool` of
/// `members`.
fn pool_site(listen: SocketAddr, members: &str, extra: &str) -> String {
    format!(
        "upstream pool {{ {members} }}\n\
         server {{ listen {listen}; server_name p.test; \
         location / {{ {extra} proxy_pass http://pool; }} }}"
    )
}

/// A pool member the change adds at weight 1 beside one at weight 10, that answers 500 to
/// every request (or never answers), with no shadow to ask the pool again (`--no-shadow`):
/// verification's one request reached the member that worked, and the run said "verified"
/// while one client in eleven got the canary's 500, or waited for it (r15 w F2). The pool
/// the change edits is now asked again before the signal and after the reload: rolled back,
/// and every client gets the app afterwards. A healthy canary goes live (control), and both
/// servers then answer.
#[test]
fn a_failing_canary_added_to_a_pool_without_the_shadow_is_rolled_back() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let erring = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let silent = HttpBackend::start_slow(
        SocketAddr::new(ip, 0),
        "silent",
        std::time::Duration::from_secs(3),
    );
    let healthy = HttpBackend::start(SocketAddr::new(ip, 0), "canary");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |canary: Option<String>| {
        let canary = canary.map_or(String::new(), |c| format!("server {c} weight=1;"));
        pool_site(
            listen,
            &format!("server {} weight=10; {canary}", app.host_port()),
            "proxy_read_timeout 5s;",
        )
    };
    let n = TestNginx::start(&site(None));
    let sr = SafeReload::new(&n);
    sr.init();
    for (canary, why) in [
        (
            erring.addr.to_string(),
            "answers failed (HTTP 500) when asked again",
        ),
        (silent.host_port(), "answers failed (read: timed out"),
    ] {
        n.write_http(&site(Some(canary)));
        let run = sr.run(&["-y", "--no-shadow", "--health-timeout", "500ms"]);
        run.expect(3);
        assert!(run.to_string().contains(why), "{run}");
        assert!(run.to_string().contains("through upstream pool"), "{run}");
        for _ in 0..22 {
            assert_eq!(
                http_get(listen, "p.test", "/").ok(),
                Some((200, "app".into()))
            );
        }
    }
    n.write_http(&site(Some(healthy.host_port())));
    let run = sr.run(&["-y", "--no-shadow", "--health-timeout", "500ms"]);
    run.expect(0);
    let bodies: Vec<String> = (0..22)
        .map(|_| http_get(listen, "p.test", "/").expect("GET").1)
        .collect();
    assert!(
        bodies.iter().all(|b| b == "app" || b == "canary"),
        "{bodies:?}"
    );
    assert!(bodies.iter().any(|b| b == "canary"), "{bodies:?}");
}

/// A location whose backend has been down for days, behind `error_page 502 =200
/// /maintenance.html`: its check got the maintenance page with a 200, and a harmless change
/// elsewhere in the server was "live and verified" (r16 z F5). nginx logged, for the check's
/// own request, the connect error to the one address its `proxy_pass` names (expected: the
/// probe found it down before the change): the answer is nginx's own, and the location is
/// said to be not verified. The change goes live (exit 0), the app's location serves.
#[test]
fn a_location_answered_by_its_error_page_because_its_backend_is_down_is_not_verified() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let down = {
        let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
        l.local_addr().unwrap()
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("maintenance.html"), "sorry\n").unwrap();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test; root {root};\n\
             error_page 502 =200 /maintenance.html;\n\
             location = /maintenance.html {{ }}\n\
             location / {{ proxy_pass http://{down}; }}\n\
             location /ok/ {{ {extra} proxy_pass http://{app}; }} }}",
            root = root.path().display(),
            app = app.host_port(),
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "a.test", "/").ok(),
        Some((200, "sorry\n".into()))
    );
    n.write_http(&site("add_header X-A 1;"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(!run.to_string().contains("live and verified"), "{run}");
    assert!(run.to_string().contains("not verified"), "{run}");
    assert_eq!(
        http_get(listen, "a.test", "/ok/").ok(),
        Some((200, "app".into()))
    );
}

/// A pool member that already failed its share (one request in 21 answered 500) given the
/// weight of its sibling (one in two): "live and verified", with the shadow and without it,
/// since only a member failing where none failed before counted (r17 a F1). Failing clearly
/// more often is the change's: refused in the shadow, rolled back without it, and clients get
/// the app as often as before.
#[test]
fn a_failing_pool_member_given_more_weight_is_the_changes() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let erring = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |weight: u32| {
        let members = format!(
            "server {} weight=20; server {} weight={weight};",
            app.host_port(),
            erring.addr
        );
        pool_site(listen, &members, "")
    };
    let n = TestNginx::start(&site(1));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(20));
    sr.run(&["-y"]).expect(1);
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert!(run.to_string().contains("through upstream pool"), "{run}");
    let failed = (0..42)
        .filter(|_| http_get(listen, "p.test", "/").map_or(true, |(s, _)| s != 200))
        .count();
    assert!(
        failed <= 4,
        "{failed} of 42 failed: the weight is back to 1"
    );
}

/// A pool member that fails its share before the change and after it (one request in 11
/// answered 500), and a harmless change to the pool without the shadow: live, not the
/// change's, and said with the counts, not "live and verified" with no word of it (r17 a F5).
#[test]
fn a_pool_member_failing_as_before_is_said_after_a_harmless_change() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let erring = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |weight: u32| {
        let members = format!(
            "server {} weight={weight}; server {} weight=1;",
            app.host_port(),
            erring.addr
        );
        pool_site(listen, &members, "")
    };
    let n = TestNginx::start(&site(10));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(9));
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(0);
    assert!(run.to_string().contains("answers failed"), "{run}");
    assert!(
        !run.to_string().contains("live and verified (snapshot"),
        "{run}"
    );
    let bodies: Vec<String> = (0..20)
        .map(|_| http_get(listen, "p.test", "/").map_or_else(|_| "-".into(), |(_, b)| b))
        .collect();
    assert!(
        bodies.iter().filter(|b| *b == "app").count() >= 15,
        "{bodies:?}"
    );
}

/// A `--health` URL in front of a pool that a change gives a canary answering 500 at
/// `weight=1`: the URL's one request reached a member that worked, and the run was "live and
/// verified", with the shadow and without it (r15 w F2, r17 a F7). The URL asks the pool
/// its listen and Host pass to again, as the derived checks do: refused in the shadow,
/// rolled back without it.
#[test]
fn a_failing_canary_behind_a_health_url_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let erring = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |canary: bool| {
        let canary = match canary {
            true => format!("server {} weight=1;", erring.addr),
            false => String::new(),
        };
        pool_site(
            listen,
            &format!("server {} weight=10; {canary}", app.host_port()),
            "",
        )
    };
    let n = TestNginx::start(&site(false));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(true));
    let url = format!("http://p.test:{}/", listen.port());
    let resolve = format!("p.test:{}:{}", listen.port(), listen.ip());
    let args = ["-y", "--health", &url, "--resolve", &resolve];
    sr.run(&args).expect(1);
    let run = sr.run(&[&args[..], &["--no-shadow"]].concat());
    run.expect(3);
    for _ in 0..22 {
        assert_eq!(
            http_get(listen, "p.test", "/").ok(),
            Some((200, "app".into()))
        );
    }
}

/// A `--health` URL on a server whose locations pass to different pools: it samples the pool
/// of the location its path falls in (r17 b F2: `/api/x` took no pool, and a canary answering
/// 500 added to `/api/`'s was verified), and none for a static location (r17 b F3).
#[test]
fn a_health_url_samples_the_pool_of_the_location_its_path_falls_in() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let api = HttpBackend::start(SocketAddr::new(ip, 0), "api");
    let erring = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |canary: bool| {
        let canary = match canary {
            true => format!("server {} weight=1;", erring.addr),
            false => String::new(),
        };
        format!(
            "upstream front {{ server {app} weight=10; server {app} weight=1; }}\n\
             upstream back {{ server {api} weight=10; {canary} }}\n\
             server {{ listen {listen}; server_name m.test; \
             location / {{ proxy_pass http://front; }} \
             location /api/ {{ proxy_pass http://back; }} }}",
            app = app.host_port(),
            api = api.host_port(),
        )
    };
    let n = TestNginx::start(&site(false));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(true));
    let url = format!("http://m.test:{}/api/x", listen.port());
    let resolve = format!("m.test:{}:{}", listen.port(), listen.ip());
    let args = ["-y", "--health", &url, "--resolve", &resolve];
    sr.run(&args).expect(1);
    sr.run(&[&args[..], &["--no-shadow"]].concat()).expect(3);
    for _ in 0..22 {
        assert_eq!(
            http_get(listen, "m.test", "/api/x").ok(),
            Some((200, "api".into()))
        );
    }
}
