//! Target extraction judged against the real `nginx -t`: every `*_pass` and upstream `server`
//! form nginx accepts is a target (never a finding, so `check` never refuses what `nginx -t`
//! passes), each socket is the path nginx connects to, each IPv4 literal the address
//! `ngx_inet_addr` reads, and what `nginx -t` refuses (`grpc_pass` without a port) is a
//! finding on the same line.

mod support;

use std::net::SocketAddr;

use safe_reload::conf::targets::{self, TargetAddr, Targets};
use safe_reload::conf::{load, LoadOptions};
use support::*;

/// A prefix with this `http {}` body (and `stream {}`, if any), judged by `nginx -t` and
/// extracted by us.
struct Judged {
    nginx: TestNginx,
    passed: bool,
    said: String,
    targets: Targets,
}

/// `LISTEN1`..`LISTEN3` in the text become free addresses of this test's own.
fn judge(http: &str, stream: Option<&str>) -> Judged {
    let ip = unique_loopback();
    let listens = |text: &str| {
        (1..=3).fold(text.to_string(), |t, n| {
            t.replace(
                &format!("LISTEN{n}"),
                &SocketAddr::new(ip, free_port(ip)).to_string(),
            )
        })
    };
    let mut b = TestNginx::builder().http(&listens(http));
    if let Some(s) = stream {
        b = b.stream(&listens(s));
    }
    let nginx = b.prepare();
    let (passed, said) = nginx.test();
    let config = load(&nginx.conf, &LoadOptions::default()).expect("loads");
    let targets = targets::extract(&config);
    Judged {
        nginx,
        passed,
        said,
        targets,
    }
}

impl Judged {
    fn addresses(&self) -> Vec<String> {
        (self.targets.targets.iter())
            .map(|t| t.address.to_string())
            .collect()
    }

    /// The targets whose references include line `line` of nginx.conf.
    fn at_line(&self, line: u32) -> Vec<String> {
        (self.targets.targets.iter())
            .filter(|t| t.references.iter().any(|r| r.line == line))
            .map(|t| t.address.to_string())
            .collect()
    }

    /// nginx.conf's line holding `needle` (exactly one).
    fn line(&self, needle: &str) -> u32 {
        let text = std::fs::read_to_string(&self.nginx.conf).expect("read nginx.conf");
        let hits: Vec<usize> = (text.lines().enumerate())
            .filter(|(_, l)| l.contains(needle))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(hits.len(), 1, "{needle:?} on exactly one line of\n{text}");
        hits[0] as u32
    }

    fn assert_passed(&self) {
        assert!(self.passed, "nginx -t failed: {}", self.said);
        assert!(
            self.targets.findings.is_empty(),
            "nginx -t passes, but we found: {:?}",
            self.targets.findings
        );
    }
}

#[test]
fn unix_sockets_with_three_slashes_are_the_sockets_nginx_reads() {
    let j = judge(
        "upstream up { server unix:///run/sr-test/up.sock; }\n\
         server { listen LISTEN1;\n\
         location /u { uwsgi_pass unix:///run/sr-test/uwsgi.sock; }\n\
         location /us { uwsgi_pass uwsgi://unix:///run/sr-test/uwsgi2.sock; }\n\
         location /f { fastcgi_pass unix:///run/sr-test/php.sock; }\n\
         location /s { scgi_pass unix:///run/sr-test/scgi.sock; }\n\
         location /g { grpc_pass unix:///run/sr-test/grpc.sock; }\n\
         location /gs { grpc_pass grpc://unix:///run/sr-test/grpc2.sock; }\n\
         location /m { set $memcached_key $uri; memcached_pass unix:///run/sr-test/mc.sock; }\n\
         location /p { proxy_pass http://unix:///run/sr-test/http.sock:/x/; }\n\
         location /up { proxy_pass http://up; }\n\
         }",
        Some(
            "upstream sup { server unix:///run/sr-test/stream-up.sock; }\n\
             server { listen LISTEN2; proxy_pass unix:///run/sr-test/stream.sock; }\n\
             server { listen LISTEN3; proxy_pass sup; }",
        ),
    );
    j.assert_passed();
    let mut want: Vec<String> = [
        "up",
        "uwsgi",
        "uwsgi2",
        "php",
        "scgi",
        "grpc",
        "grpc2",
        "mc",
        "http",
        "stream-up",
        "stream",
    ]
    .iter()
    .map(|n| format!("unix:/run/sr-test/{n}.sock"))
    .collect();
    want.sort();
    let mut got = j.addresses();
    got.retain(|a| a.starts_with("unix:"));
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn only_http_proxy_pass_cuts_a_unix_path_at_a_colon() {
    let j = judge(
        "upstream up { server unix:/run/sr-test/up.sock:80; }\n\
         server { listen LISTEN1;\n\
         location /f { fastcgi_pass unix:/run/sr-test/php.sock:9000; }\n\
         location /u { uwsgi_pass unix:/run/sr-test/uwsgi.sock:3031; }\n\
         location /s { scgi_pass unix:/run/sr-test/scgi.sock:4000; }\n\
         location /g { grpc_pass unix:/run/sr-test/grpc.sock:50051; }\n\
         location /p { proxy_pass http://unix:/run/sr-test/http.sock:/uri/; }\n\
         location /up { proxy_pass http://up; }\n\
         }",
        Some("server { listen LISTEN2; proxy_pass unix:/run/sr-test/stream.sock:6379; }"),
    );
    j.assert_passed();
    for (needle, socket) in [
        ("fastcgi_pass", "/run/sr-test/php.sock:9000"),
        ("uwsgi_pass", "/run/sr-test/uwsgi.sock:3031"),
        ("scgi_pass", "/run/sr-test/scgi.sock:4000"),
        ("grpc_pass", "/run/sr-test/grpc.sock:50051"),
        ("http.sock", "/run/sr-test/http.sock"),
        ("server unix:", "/run/sr-test/up.sock:80"),
        ("stream.sock", "/run/sr-test/stream.sock:6379"),
    ] {
        assert_eq!(
            j.at_line(j.line(needle)),
            [format!("unix:{socket}")],
            "{needle}"
        );
    }
}

#[test]
fn ipv4_octets_with_leading_zeros_are_decimal_as_nginx_reads_them() {
    let j = judge(
        "upstream up { server 127.0.0.011:8050; }\n\
         server { listen LISTEN1;\n\
         location / { proxy_pass http://127.0.0.010:8049; }\n\
         location /f { fastcgi_pass 127.000.000.012:9000; }\n\
         location /up { proxy_pass http://up; }\n\
         }",
        None,
    );
    j.assert_passed();
    for (needle, addr) in [
        ("127.0.0.010", "127.0.0.10:8049"),
        ("127.000.000.012", "127.0.0.12:9000"),
        ("127.0.0.011", "127.0.0.11:8050"),
    ] {
        assert_eq!(j.at_line(j.line(needle)), [addr], "{needle}");
    }
    assert!(j
        .targets
        .targets
        .iter()
        .all(|t| matches!(t.address, TargetAddr::Ip(_))));
}

#[test]
fn grpc_pass_has_no_default_port() {
    for pass in [
        "grpc_pass grpc://127.0.0.1;",
        "grpc_pass grpcs://127.0.0.1;",
        "grpc_pass 127.0.0.1;",
    ] {
        let j = judge(
            &format!("server {{ listen LISTEN1;\nlocation / {{ {pass} }}\n}}"),
            None,
        );
        assert!(!j.passed, "{pass}: nginx -t passed");
        assert!(j.said.contains("no port in upstream"), "{pass}: {}", j.said);
        let line = j.line(pass);
        assert!(
            j.said.contains(&format!("nginx.conf:{line}")),
            "{pass}: {}",
            j.said
        );
        let lines: Vec<u32> = j.targets.findings.iter().map(|f| f.line).collect();
        assert_eq!(lines, [line], "{pass}");
        assert!(j.targets.findings[0]
            .message
            .contains("no port in upstream"));
        // No invented :80 or :443.
        assert!(j.addresses().iter().all(|a| !a.starts_with("127.0.0.1:")));
    }
}

#[test]
fn an_upstream_name_with_a_port_is_nginx_t_s_error_not_a_name_to_resolve() {
    for (http, stream) in [
        (
            "upstream backend { server 127.0.0.1:8000; }\n\
             server { listen LISTEN1;\nlocation / { proxy_pass http://Backend:8080/x; }\n}",
            None,
        ),
        (
            "",
            Some(
                "upstream backend { server 127.0.0.1:8000; }\n\
                 server { listen LISTEN1;\nproxy_pass backend:8080; }",
            ),
        ),
    ] {
        let j = judge(http, stream);
        assert!(!j.passed, "nginx -t passed");
        assert!(j.said.contains("may not have port 8080"), "{}", j.said);
        let line = j.line("8080");
        let found: Vec<(u32, &str)> = (j.targets.findings.iter())
            .map(|f| (f.line, f.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [(line, "upstream \"backend\" may not have port 8080")]
        );
        assert!(j.addresses().iter().all(|a| !a.starts_with("backend")));
    }
}

#[test]
fn variable_names_are_case_insensitive() {
    let j = judge(
        "map $arg_m $BE { default 127.0.0.21:8000; }\n\
         server { listen LISTEN1;\n\
         set $Backend 127.0.0.20:8000;\n\
         location /set { proxy_pass http://$backend; }\n\
         location /map { proxy_pass http://$be; }\n\
         location /uri { proxy_pass http://127.0.0.22:8000$REQUEST_URI; }\n\
         }",
        None,
    );
    j.assert_passed();
    assert_eq!(j.at_line(j.line("$backend;")), ["127.0.0.20:8000"]);
    assert_eq!(j.at_line(j.line("$be;")), ["127.0.0.21:8000"]);
    assert_eq!(j.at_line(j.line("$REQUEST_URI")), ["127.0.0.22:8000"]);
    // The value's own line is a reference too.
    assert_eq!(j.at_line(j.line("set $Backend")), ["127.0.0.20:8000"]);
}

#[test]
fn a_pass_built_from_variables_is_never_a_finding() {
    // nginx -t checks nothing of a `*_pass` holding a variable; these fail per request.
    let j = judge(
        "server { listen LISTEN1;\n\
         set $port 8000;\n\
         location /a { proxy_pass 127.0.0.1:$port; }\n\
         location /b { grpc_pass grpc://127.0.0.1$is_args; }\n\
         location /c { set $h \"\"; proxy_pass http://$h; }\n\
         }",
        None,
    );
    j.assert_passed();
    for needle in ["127.0.0.1:$port", "$is_args", "http://$h"] {
        let at = j.at_line(j.line(needle));
        assert_eq!(at.len(), 1, "{needle}: {at:?}");
        assert!(at[0].contains('$'), "{needle} should be dynamic: {at:?}");
    }
}

#[test]
fn check_does_not_refuse_three_slash_sockets_that_nginx_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = |n: &str| dir.path().join(n);
    let http = HttpBackend::start_unix(&sock("http.sock"), "http");
    // uwsgi_pass is probed in the uwsgi protocol: a real uWSGI answers it.
    let uwsgi = AppServer::uwsgi_unix(&sock("uwsgi.sock"));
    let up = HttpBackend::start_unix(&sock("up.sock"), "up");
    let stream = HttpBackend::start_unix(&sock("stream.sock"), "stream");
    let ip = unique_loopback();
    let (l1, l2) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let d = dir.path().display();
    let nginx = TestNginx::builder()
        .http(&format!(
            "upstream up {{ server unix://{d}/up.sock; }}\n\
             server {{ listen {l1};\n\
             location /p {{ proxy_pass http://unix://{d}/http.sock:/; }}\n\
             location /u {{ uwsgi_pass unix://{d}/uwsgi.sock; }}\n\
             location /up {{ proxy_pass http://up; }}\n}}"
        ))
        .stream(&format!(
            "server {{ listen {l2}; proxy_pass unix://{d}/stream.sock; }}"
        ))
        .start();
    assert_eq!(
        http_get(l1, "x", "/p").expect("GET /p"),
        (200, "http".into())
    );
    assert_eq!(
        http_get(l1, "x", "/up").expect("GET /up"),
        (200, "up".into())
    );

    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["test"]["passed"], true, "{run}");
    let mut probed: Vec<String> = report["probe"]["results"]
        .as_array()
        .expect("probe results")
        .iter()
        .filter(|r| r["status"] == "ok")
        .filter_map(|r| r["target"].as_str().map(str::to_string))
        .collect();
    probed.sort();
    let mut want: Vec<String> = [&http.path, &uwsgi.path, &up.path, &stream.path]
        .iter()
        .map(|p| format!("unix:{}", p.as_ref().expect("path").display()))
        .collect();
    want.sort();
    assert_eq!(probed, want, "{run}");
}
