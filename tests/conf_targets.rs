//! Target extraction on hand-written configurations: every `*_pass` directive, upstream
//! expansion, default ports, unix and IPv6 forms, `set`/`map`, dynamic targets, and look-alike
//! text in comments and Lua that must not count. Every assertion names file and line.

mod conf_util;

use std::path::{Path, PathBuf};

use conf_util::{at, line_of, Tree};
use safe_reload::conf::targets::{self, Context, Target, TargetAddr, Targets};

const HTTP: &str = r#"events {}
http {
    include upstreams.conf;
    map $host $pool {
        hostnames;
        default        127.0.3.1:8000;
        api.example    127.0.3.2:8000;
    }
    map $arg_v $named {
        default  BACKEND;
    }
    # proxy_pass http://127.0.9.1:1;
    server {
        listen 127.0.0.1:8080;
        set $app 127.0.2.1:8000;
        location /api/ {
            proxy_pass http://127.0.0.1:8000/api/;
            location /api/v2/ {
                proxy_pass https://127.0.0.2; # proxy_pass http://127.0.9.2:1;
            }
        }
        location /g { grpc_pass grpc://127.0.0.3:50051; }
        location /g6 { grpc_pass grpcs://[::1]:50052; }
        location ~ \.php$ { fastcgi_pass unix:/run/php/php-fpm.sock; }
        location /u { uwsgi_pass uwsgi://127.0.0.4:3031; }
        location /us { uwsgi_pass suwsgi://127.0.0.4:3032; }
        location /s { scgi_pass 127.0.0.5:4000; }
        location /m { memcached_pass 127.0.0.6:11211; }
        location /unix-uri { proxy_pass http://unix:/run/app.sock:/uri/; }
        location /unix { proxy_pass http://unix:/run/app2.sock; }
        location /v6 { proxy_pass http://[::1]:8000; }
        location /host { proxy_pass http://App.Internal:8081; }
        location /if { if ($arg_x) { proxy_pass http://127.0.0.7:81; } }
        location /le { limit_except GET { proxy_pass http://127.0.0.8:82; } }
        location /up { proxy_pass http://backend; }
        location /php { fastcgi_pass php_pool; }
        location /set { proxy_pass http://$app; }
        location /map { proxy_pass http://$pool$request_uri; }
        location /mapup { proxy_pass http://$named; }
        location /dyn { proxy_pass http://$http_x_backend:8000; }
        location /dyn2 { proxy_pass $scheme://127.0.0.10; }
        location /noscheme { proxy_pass 127.0.0.1:9000; }
        location /noport { fastcgi_pass php; }
        location /lua {
            content_by_lua_block {
                -- proxy_pass http://127.0.9.3:1; }
                local s = "proxy_pass http://127.0.9.4:1; }"
                ngx.say(s)
            }
            access_by_lua 'ngx.exec("proxy_pass http://127.0.9.5:1;")';
        }
        location /nested-set {
            set $inner 127.0.2.2:8000;
            location /nested-set/x { proxy_pass http://$inner; }
        }
    }
}
"#;

const UPSTREAMS: &str = r#"upstream Backend {
    server 127.0.1.1:8000 weight=5 max_fails=3 fail_timeout=30s max_conns=100;
    server 127.0.1.2 backup;
    server 127.0.1.3:8000 down;
    server app.internal:8080 resolve slow_start=30s route=a drain;
}
upstream php_pool {
    server unix:/run/php/php-fpm.sock;
    server 127.0.1.4:9000;
}
"#;

struct Fixture {
    _tree: Tree,
    main: PathBuf,
    ups: PathBuf,
    t: Targets,
}

fn http_fixture() -> Fixture {
    let tree = Tree::new();
    let main = tree.write("nginx.conf", HTTP);
    let ups = tree.write("upstreams.conf", UPSTREAMS);
    let t = targets::extract(&tree.load("nginx.conf"));
    Fixture {
        _tree: tree,
        main,
        ups,
        t,
    }
}

fn find<'a>(t: &'a Targets, addr: &str) -> &'a Target {
    t.targets
        .iter()
        .find(|x| x.address.to_string() == addr)
        .unwrap_or_else(|| panic!("no target {addr}; have {:?}", addrs(t)))
}

fn addrs(t: &Targets) -> Vec<String> {
    t.targets.iter().map(|x| x.address.to_string()).collect()
}

/// The (file, line, directive) of each reference, in order.
fn refs(t: &Target) -> Vec<(PathBuf, u32, String)> {
    t.references
        .iter()
        .map(|r| (r.file.to_path_buf(), r.line, r.directive.to_string()))
        .collect()
}

fn r(file: &Path, line: u32, directive: &str) -> (PathBuf, u32, String) {
    (file.to_path_buf(), line, directive.to_string())
}

#[test]
fn every_pass_directive_with_scheme_ports_and_uri_stripped() {
    let f = http_fixture();
    let cases = [
        (
            "127.0.0.1:8000",
            "proxy_pass http://127.0.0.1:8000/api/",
            "proxy_pass",
            Some("http"),
        ),
        (
            "127.0.0.2:443",
            "proxy_pass https://127.0.0.2",
            "proxy_pass",
            Some("https"),
        ),
        (
            "127.0.0.3:50051",
            "grpc://127.0.0.3",
            "grpc_pass",
            Some("grpc"),
        ),
        ("[::1]:50052", "grpcs://[::1]", "grpc_pass", Some("grpcs")),
        (
            "127.0.0.4:3031",
            "uwsgi://127.0.0.4:3031",
            "uwsgi_pass",
            Some("uwsgi"),
        ),
        (
            "127.0.0.4:3032",
            "suwsgi://127.0.0.4:3032",
            "uwsgi_pass",
            Some("suwsgi"),
        ),
        ("127.0.0.5:4000", "scgi_pass", "scgi_pass", None),
        ("127.0.0.6:11211", "memcached_pass", "memcached_pass", None),
        (
            "unix:/run/app.sock",
            "unix:/run/app.sock:/uri/",
            "proxy_pass",
            Some("http"),
        ),
        (
            "unix:/run/app2.sock",
            "unix:/run/app2.sock;",
            "proxy_pass",
            Some("http"),
        ),
        (
            "[::1]:8000",
            "http://[::1]:8000",
            "proxy_pass",
            Some("http"),
        ),
        (
            "app.internal:8081",
            "App.Internal:8081",
            "proxy_pass",
            Some("http"),
        ),
        ("127.0.0.7:81", "127.0.0.7:81", "proxy_pass", Some("http")),
        ("127.0.0.8:82", "127.0.0.8:82", "proxy_pass", Some("http")),
        ("127.0.0.10:80", "$scheme://127.0.0.10", "proxy_pass", None),
    ];
    for (addr, needle, directive, scheme) in cases {
        if addr == "127.0.0.10:80" {
            // `$scheme://` is only known per request: the target is dynamic, not this address.
            let t = find(&f.t, "$scheme://127.0.0.10");
            assert_eq!(refs(t), [r(&f.main, line_of(HTTP, needle), directive)]);
            assert!(matches!(t.address, TargetAddr::Dynamic(_)));
            continue;
        }
        let t = find(&f.t, addr);
        assert_eq!(
            refs(t)[0],
            r(&f.main, line_of(HTTP, needle), directive),
            "{addr}"
        );
        assert_eq!(t.references[0].scheme.as_deref(), scheme, "{addr}");
        assert_eq!(t.references[0].context, Context::Http);
    }
    assert!(matches!(
        find(&f.t, "[::1]:8000").address,
        TargetAddr::Ip(_)
    ));
    assert!(matches!(
        find(&f.t, "app.internal:8081").address,
        TargetAddr::Host { .. }
    ));
}

#[test]
fn upstream_servers_and_case_insensitive_expansion() {
    let f = http_fixture();
    let pass = r(&f.main, line_of(HTTP, "http://backend;"), "proxy_pass");
    let srv = |needle: &str| r(&f.ups, line_of(UPSTREAMS, needle), "server");
    let mapup = r(&f.main, line_of(HTTP, "http://$named;"), "proxy_pass");
    let map_line = r(&f.main, line_of(HTTP, "BACKEND;"), "map");

    let t = find(&f.t, "127.0.1.1:8000");
    assert_eq!(
        refs(t),
        [srv("127.0.1.1:8000"), pass.clone(), mapup.clone(), map_line]
    );
    assert!(t
        .references
        .iter()
        .all(|x| x.upstream.as_deref() == Some("Backend")));

    // No port in an http upstream: 80.
    let t = find(&f.t, "127.0.1.2:80");
    assert!(t.is_backup_only() && !t.is_down());
    assert_eq!(refs(t)[..2], [srv("127.0.1.2"), pass.clone()]);

    let t = find(&f.t, "127.0.1.3:8000");
    assert!(t.is_down());
    assert!(t.references.iter().all(|x| x.down));

    assert_eq!(
        refs(find(&f.t, "app.internal:8080"))[0],
        srv("app.internal")
    );

    // A unix socket named by an upstream and directly is one target with both references.
    let sock = find(&f.t, "unix:/run/php/php-fpm.sock");
    assert_eq!(
        refs(sock),
        [
            srv("unix:/run/php/php-fpm.sock"),
            r(&f.main, line_of(HTTP, "fastcgi_pass unix:"), "fastcgi_pass"),
            r(
                &f.main,
                line_of(HTTP, "fastcgi_pass php_pool"),
                "fastcgi_pass"
            ),
        ]
    );
    assert_eq!(refs(find(&f.t, "127.0.1.4:9000")).len(), 2);
    assert!(!addrs(&f.t).iter().any(|a| a.starts_with("backend")));
}

#[test]
fn set_and_map_values_become_targets_with_their_lines() {
    let f = http_fixture();
    let t = find(&f.t, "127.0.2.1:8000");
    assert_eq!(
        refs(t),
        [
            r(&f.main, line_of(HTTP, "http://$app;"), "proxy_pass"),
            r(&f.main, line_of(HTTP, "set $app"), "set"),
        ]
    );
    // A nested location does not run its parent's `set`: `$inner` is empty there, so nginx
    // has no host for that request (ngx_http_rewrite_merge_loc_conf inherits no codes).
    assert!(!addrs(&f.t).contains(&"127.0.2.2:8000".to_string()));
    let t = find(&f.t, "http://$inner");
    assert_eq!(
        refs(t),
        [r(&f.main, line_of(HTTP, "http://$inner"), "proxy_pass")]
    );
    for (addr, entry) in [
        ("127.0.3.1:8000", "default        127"),
        ("127.0.3.2:8000", "api.example"),
    ] {
        assert_eq!(
            refs(find(&f.t, addr)),
            [
                r(&f.main, line_of(HTTP, "$pool$request_uri"), "proxy_pass"),
                r(&f.main, line_of(HTTP, entry), "map"),
            ]
        );
    }
}

#[test]
fn unknowable_variables_are_dynamic_and_kept() {
    let f = http_fixture();
    let t = find(&f.t, "http://$http_x_backend:8000");
    assert_eq!(
        t.address,
        TargetAddr::Dynamic("http://$http_x_backend:8000".into())
    );
    assert_eq!(
        refs(t),
        [r(&f.main, line_of(HTTP, "$http_x_backend"), "proxy_pass")]
    );
}

#[test]
fn missing_scheme_and_missing_port_are_findings() {
    let f = http_fixture();
    let lines: Vec<(PathBuf, u32)> = f.t.findings.iter().map(|x| at(&x.file, x.line)).collect();
    assert_eq!(
        lines,
        [
            at(&f.main, line_of(HTTP, "proxy_pass 127.0.0.1:9000")),
            at(&f.main, line_of(HTTP, "fastcgi_pass php;")),
        ]
    );
    let hint = f.t.findings[0].hint.as_deref().unwrap_or("");
    assert!(hint.contains("proxy_pass http://127.0.0.1:9000;"), "{hint}");
    assert!(f.t.findings[0].message.contains("invalid URL prefix"));
    assert!(f.t.findings[1].message.contains("no port"));
    assert!(!addrs(&f.t)
        .iter()
        .any(|a| a.contains(":9000") && a.starts_with("127.0.0.1")));
}

#[test]
fn comments_and_lua_never_count() {
    let f = http_fixture();
    let ghosts: Vec<String> = addrs(&f.t)
        .into_iter()
        .filter(|a| a.contains("127.0.9."))
        .collect();
    assert!(ghosts.is_empty(), "{ghosts:?}");
}

#[test]
fn targets_are_sorted_and_unique() {
    let f = http_fixture();
    let mut sorted: Vec<&TargetAddr> = f.t.targets.iter().map(|t| &t.address).collect();
    sorted.sort();
    sorted.dedup();
    let got: Vec<&TargetAddr> = f.t.targets.iter().map(|t| &t.address).collect();
    assert_eq!(got, sorted);
}

const STREAM: &str = r#"events {}
stream {
    upstream db {
        server 127.0.4.1:5432;
        server db.internal:5432 backup;
        server 127.0.4.3;
    }
    server { listen 127.0.0.1:15432; proxy_pass DB; }
    server { listen 127.0.0.1:16379; proxy_pass 127.0.4.2:6379; }
    server { listen 127.0.0.1:16380; proxy_pass unix:/run/redis.sock; }
    server { listen 127.0.0.1:16381; proxy_pass web; }
}
http {
    upstream web { server 127.0.5.1:80; }
    server { location / { proxy_pass http://db; } }
}
"#;

#[test]
fn stream_context_bare_addresses_and_no_cross_context_upstreams() {
    let tree = Tree::new();
    let main = tree.write("nginx.conf", STREAM);
    let t = targets::extract(&tree.load("nginx.conf"));
    let first = |addr: &str| {
        let x = find(&t, addr);
        (
            x.references[0].file.to_path_buf(),
            x.references[0].line,
            x.references[0].context,
        )
    };
    assert_eq!(first("127.0.4.1:5432"), (main.clone(), 4, Context::Stream));
    assert_eq!(
        refs(find(&t, "127.0.4.1:5432"))[1],
        r(&main, 8, "proxy_pass")
    );
    assert!(find(&t, "db.internal:5432").is_backup_only());
    assert_eq!(first("127.0.4.2:6379"), (main.clone(), 9, Context::Stream));
    assert_eq!(
        first("unix:/run/redis.sock"),
        (main.clone(), 10, Context::Stream)
    );
    assert_eq!(first("127.0.5.1:80"), (main.clone(), 14, Context::Http));
    // Only the http upstream's own line: the stream `proxy_pass web` does not reach it.
    assert_eq!(find(&t, "127.0.5.1:80").references.len(), 1);
    // http `proxy_pass http://db` is a host, not the stream upstream.
    assert_eq!(first("db:80"), (main.clone(), 15, Context::Http));
    let findings: Vec<(u32, bool)> = t
        .findings
        .iter()
        .map(|f| (f.line, f.message.contains("no port")))
        .collect();
    assert_eq!(findings, [(6, true), (11, true)]);
}

#[test]
fn one_address_from_several_files_lists_every_reference() {
    let tree = Tree::new();
    let main = tree.write(
        "nginx.conf",
        "http {\n    include sites/*.conf;\n    include sites/a.conf;\n}\n",
    );
    let a = tree.write(
        "sites/a.conf",
        "server {\n    location / { proxy_pass http://127.0.6.1:8000; }\n}\n",
    );
    let b = tree.write(
        "sites/b.conf",
        "server {\n\n    location / { proxy_pass http://127.0.6.1:8000/x; }\n}\n",
    );
    let _ = main;
    let t = targets::extract(&tree.load("nginx.conf"));
    assert_eq!(t.targets.len(), 1);
    let lines: Vec<(PathBuf, u32)> = t.targets[0]
        .references
        .iter()
        .map(|x| at(&x.file, x.line))
        .collect();
    assert_eq!(lines, [at(&a, 2), at(&b, 3)]);
}

/// A `map`, `geo` or `split_clients` of 100 lines is as many targets as it has distinct values,
/// each referencing every line that gives it: no line count makes it "dynamic".
#[test]
fn many_lined_maps_geo_and_split_clients_are_their_distinct_values() {
    let backends = ["127.0.4.1:8001", "127.0.4.2:8001", "127.0.4.3:8001"];
    let mut text = String::from("events {}\nhttp {\n    map $host $pool {\n        hostnames;\n");
    for i in 1..=100 {
        text += &format!("        t{i}.tenants.test {};\n", backends[i % 3]);
    }
    text += "        default 127.0.4.9:8001;\n    }\n    geo $gp {\n";
    for i in 1..=100 {
        text += &format!("        10.{i}.0.0/16 127.0.5.{}:8001;\n", 1 + i % 2);
    }
    text += "        default 127.0.5.1:8001;\n    }\n    split_clients \"$remote_addr\" $sp {\n";
    for i in 1..=100 {
        text += &format!("        0.5% 127.0.6.{}:8001;\n", 1 + i % 2);
    }
    text += "        * 127.0.6.1:8001;\n    }\n    map $uri $distinct {\n";
    for i in 1..=200 {
        text += &format!("        /d{i} 127.0.7.{i}:8001;\n");
    }
    text += "    }\n    map $arg_a $pa {\n";
    for i in 1..=10 {
        text += &format!("        a{i} 127.0.8.{i};\n");
    }
    text += "    }\n    map $arg_b $pb {\n";
    for i in 1..=10 {
        text += &format!("        b{i} 80{i:02};\n");
    }
    text += "    }\n    server {\n        listen 127.0.0.1:8080;\n\
             location /pool { proxy_pass http://$pool; }\n\
             location /geo { proxy_pass http://$gp; }\n\
             location /split { proxy_pass http://$sp; }\n\
             location /distinct { proxy_pass http://$distinct; }\n\
             location /product { proxy_pass http://$pa:$pb; }\n    }\n}\n";
    let tree = Tree::new();
    let main = tree.write("nginx.conf", &text);
    let t = targets::extract(&tree.load("nginx.conf"));
    let pass_line = |needle: &str| r(&main, line_of(&text, needle), "proxy_pass");
    let lines_of = |value: &str, directive: &str| -> Vec<(PathBuf, u32, String)> {
        (text.lines().enumerate())
            .filter(|(_, l)| l.trim_end().ends_with(&format!(" {value};")))
            .map(|(i, _)| r(&main, i as u32 + 1, directive))
            .collect()
    };
    // 101 lines, 4 distinct values; each value's references are the pass and its own lines.
    for value in backends.iter().chain(&["127.0.4.9:8001"]) {
        let mut want = vec![pass_line("http://$pool;")];
        want.extend(lines_of(value, "map"));
        assert!(want.len() >= 2, "{value} has map lines");
        assert_eq!(refs(find(&t, value)), want, "{value}");
    }
    for (value, needle, directive) in [
        ("127.0.5.1:8001", "http://$gp;", "geo"),
        ("127.0.5.2:8001", "http://$gp;", "geo"),
        ("127.0.6.1:8001", "http://$sp;", "split_clients"),
        ("127.0.6.2:8001", "http://$sp;", "split_clients"),
    ] {
        let mut want = vec![pass_line(needle)];
        want.extend(lines_of(value, directive));
        assert!(want.len() > 40, "{value}: {want:?}");
        assert_eq!(refs(find(&t, value)), want, "{value}");
    }
    // 200 distinct values of one variable: 200 targets, none dynamic.
    for i in 1..=200 {
        find(&t, &format!("127.0.7.{i}:8001"));
    }
    let dynamic: Vec<String> = (t.targets.iter())
        .filter(|x| matches!(x.address, TargetAddr::Dynamic(_)))
        .map(|x| x.address.to_string())
        .collect();
    // Only the product of two 10-valued maps (100 combinations) is left as written.
    assert_eq!(dynamic, ["http://$pa:$pb"]);
    assert!(t.findings.is_empty(), "{:?}", t.findings);
}
