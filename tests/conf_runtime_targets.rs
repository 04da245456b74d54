//! The ground truth for targets built from variables: a real nginx, real backends on distinct
//! loopback addresses, a request per case, and the backend nginx really connected to (its name
//! in the body, or its connection count), compared with what `safe-reload targets --json`
//! lists for that `*_pass` line. Covers the rewrite module's run-time order (server `set` plus a
//! location `if`, nested locations, two `set`s, a `set` before its source is set), `geo` and
//! `map` values, case-insensitive names, decimal octets and unix paths with colons, named
//! locations reached by `error_page` after a `return`, and `rewrite ^ ... break`.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Backends by name, each on its own loopback address.
struct Backends(Vec<(String, HttpBackend)>);

impl Backends {
    fn start(names: &[&str]) -> Backends {
        Backends(
            names
                .iter()
                .map(|n| {
                    let b = HttpBackend::start(SocketAddr::new(unique_loopback(), 0), n);
                    (n.to_string(), b)
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> &HttpBackend {
        &self.0.iter().find(|(n, _)| n == name).expect("backend").1
    }

    /// The name of the backend at `addr`, as `targets` lists it.
    fn name_of(&self, addr: &str) -> String {
        (self.0.iter())
            .find(|(_, b)| b.host_port() == addr)
            .map_or_else(|| addr.to_string(), |(n, _)| n.clone())
    }

    /// `{{NAME}}` in `text` becomes that backend's `IP:PORT`.
    fn fill(&self, text: &str) -> String {
        (self.0.iter()).fold(text.to_string(), |t, (n, b)| {
            t.replace(&format!("{{{{{n}}}}}"), &b.host_port())
        })
    }
}

/// What `targets --json` lists for the `*_pass` on nginx.conf's line holding `needle`: the
/// backend names (other addresses as listed; dynamic ones as written).
fn listed(
    nginx: &TestNginx,
    report: &Value,
    backends: &Backends,
    needle: &str,
) -> BTreeSet<String> {
    let text = std::fs::read_to_string(&nginx.conf).expect("read nginx.conf");
    let lines: Vec<usize> = (text.lines().enumerate())
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{needle:?} on one line of\n{text}");
    let conf = nginx.conf.display().to_string();
    (report["targets"].as_array().expect("targets").iter())
        .filter(|t| {
            (t["references"].as_array().expect("references").iter()).any(|r| {
                r["file"] == conf.as_str()
                    && r["line"] == lines[0]
                    && r["directive"]
                        .as_str()
                        .is_some_and(|d| d.ends_with("_pass"))
            })
        })
        .map(|t| backends.name_of(t["address"].as_str().expect("address")))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The body nginx answers for `path` (a backend's name), or the status when it is not 200.
fn served(listen: SocketAddr, path: &str) -> String {
    match http_get(listen, "site.test", path).expect("request through nginx") {
        (200, body) => body,
        (status, _) => format!("status {status}"),
    }
}

/// `METHOD path` with an empty body on a fresh connection: the body when 200, else the status.
fn request(listen: SocketAddr, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&listen, Duration::from_secs(2))
        .expect("connect to nginx");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: site.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    match resp.split_whitespace().nth(1) {
        Some("200") => resp
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string(),
        Some(status) => format!("status {status}"),
        None => format!("not HTTP: {resp:?}"),
    }
}

#[test]
fn rewrite_order_geo_and_map_match_what_nginx_connects_to() {
    let b = Backends::start(&[
        "srv",
        "if",
        "parent",
        "first",
        "second",
        "late",
        "geo-default",
        "geo-ten",
        "map-default",
        "map-k",
        "case",
        "le",
        "named",
        "other",
    ]);
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = b.fill(&format!(
        "geo $arg_net $g {{\n  default {{{{geo-default}}}};\n  10.0.0.0/8 {{{{geo-ten}}}};\n}}\n\
         map $arg_m $BE {{\n  default {{{{map-default}}}};\n  k {{{{map-k}}}};\n}}\n\
         server {{\n  listen {listen};\n  server_name site.test;\n  set $b {{{{srv}}}};\n\
           location /if {{\n    if ($arg_x) {{ set $b {{{{if}}}}; }}\n    proxy_pass http://$b; # if-pass\n  }}\n\
           location /parent {{\n    set $b {{{{parent}}}};\n    location /parent/child {{ proxy_pass http://$b; }} # child-pass\n  }}\n\
           location /twice {{\n    set $t {{{{first}}}};\n    set $t {{{{second}}}};\n    proxy_pass http://$t; # twice-pass\n  }}\n\
           location /early {{\n    set $a $late;\n    set $late {{{{late}}}};\n    proxy_pass http://$a; # early-pass\n  }}\n\
           location /le {{\n    set $b {{{{le}}}};\n    limit_except GET {{ proxy_pass http://$b; }} # le-pass\n  }}\n\
           location /tf {{ set $nb {{{{named}}}}; try_files /nonexistent @app; }}\n\
           location /other {{ set $nb {{{{other}}}}; return 204; }}\n\
           location @app {{ proxy_pass http://$nb; }} # named-pass\n\
           location /geo {{ proxy_pass http://$g; }} # geo-pass\n\
           location /map {{ proxy_pass http://$be; }} # map-pass\n\
           location /case {{\n    set $Backend {{{{case}}}};\n    proxy_pass http://$backend$REQUEST_URI; # case-pass\n  }}\n\
         }}"
    ));
    let nginx = TestNginx::builder().http(&http).start();
    let run = SafeReload::new(&nginx).run(&["targets", "--json"]);
    run.expect(0);
    let report = run.json();
    let listed = |needle: &str| listed(&nginx, &report, &b, needle);

    // Server-level `set` plus a location `if` that sets the same variable: both values.
    assert_eq!(served(listen, "/if"), "srv");
    assert_eq!(served(listen, "/if?x=1"), "if");
    assert_eq!(listed("# if-pass"), set(&["srv", "if"]));

    // A nested location runs the server's codes, not its parent location's.
    assert_eq!(served(listen, "/parent/child"), "srv");
    assert_eq!(listed("# child-pass"), set(&["srv"]));

    // Two `set`s in a row: only the last reaches the pass.
    assert_eq!(served(listen, "/twice"), "second");
    assert_eq!(listed("# twice-pass"), set(&["second"]));
    assert_eq!(b.get("first").hits(), 0);

    // `set $a $late;` before `$late` is set: `$a` is empty, nginx has no host (500), and the
    // later value is not a target of that pass.
    assert_eq!(served(listen, "/early"), "status 500");
    assert_eq!(listed("# early-pass"), set(&["http://$a"]));
    assert_eq!(b.get("late").hits(), 0);

    // A `limit_except` block has its own configuration and no rewrite codes: a POST there
    // runs the server's `set`, not its location's. A GET uses the location, which has no pass.
    assert_eq!(request(listen, "POST", "/le"), "srv");
    assert_eq!(request(listen, "GET", "/le"), "status 404");
    assert_eq!(listed("# le-pass"), set(&["srv"]));
    assert_eq!(b.get("le").hits(), 0);

    // A named location keeps the variables of the location whose try_files sent it there,
    // and only of that one.
    assert_eq!(served(listen, "/tf"), "named");
    assert_eq!(listed("# named-pass"), set(&["named"]));
    assert_eq!(b.get("other").hits(), 0);

    // geo and map: every value, each reached by some request.
    assert_eq!(served(listen, "/geo"), "geo-default");
    assert_eq!(served(listen, "/geo?net=10.1.2.3"), "geo-ten");
    assert_eq!(listed("# geo-pass"), set(&["geo-default", "geo-ten"]));
    assert_eq!(served(listen, "/map"), "map-default");
    assert_eq!(served(listen, "/map?m=k"), "map-k");
    assert_eq!(listed("# map-pass"), set(&["map-default", "map-k"]));

    // Case-insensitive names: `$Backend` is `$backend`, `$REQUEST_URI` is the URI.
    assert_eq!(served(listen, "/case"), "case");
    assert_eq!(listed("# case-pass"), set(&["case"]));

    // Each value's own line is listed with it: the geo entry, the map entry, the set.
    let conf = nginx.conf.display().to_string();
    let origin_kinds: BTreeSet<String> = (report["targets"].as_array().expect("targets").iter())
        .flat_map(|t| t["references"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["file"] == conf.as_str())
        .filter_map(|r| r["directive"].as_str().map(str::to_string))
        .filter(|d| !d.ends_with("_pass"))
        .collect();
    assert_eq!(origin_kinds, set(&["geo", "map", "set"]));
}

/// An address on loopback whose last octet, written with a leading zero, is a different
/// address to `inet_aton`/`getaddrinfo` (octal) than to nginx (decimal), with only octal
/// digits, so no reading of it is ever a name to look up.
fn octal_looking_loopback() -> (IpAddr, String) {
    for _ in 0..64 {
        let IpAddr::V4(v4) = unique_loopback() else {
            unreachable!()
        };
        let [a, b, c, d] = v4.octets();
        let digits = d.to_string();
        if d >= 8 && digits.bytes().all(|x| x <= b'7') {
            return (
                IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                format!("{a}.{b}.{c}.0{digits}"),
            );
        }
    }
    panic!("no loopback address with an octal-looking last octet");
}

#[test]
fn a_leading_zero_octet_is_probed_where_nginx_connects() {
    let (ip, written) = octal_looking_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "decimal");
    let port = app.addr.expect("tcp").port();
    let lip = unique_loopback();
    let listen = SocketAddr::new(lip, free_port(lip));
    let nginx = TestNginx::builder()
        .http(&format!(
            "server {{ listen {listen}; location / {{ proxy_pass http://{written}:{port}; }} }}"
        ))
        .start();
    assert_eq!(served(listen, "/"), "decimal");

    let sr = SafeReload::new(&nginx);
    let run = sr.run(&["probe", "--json"]);
    run.expect(0);
    let results = run.json()["probe"]["results"].clone();
    let want = format!("{ip}:{port}");
    let r = (results.as_array().expect("results").iter())
        .find(|r| r["target"] == want.as_str())
        .unwrap_or_else(|| panic!("{want} probed: {run}"));
    assert_eq!(r["status"], "ok", "{run}");
}

#[test]
fn a_unix_path_with_a_colon_is_the_socket_nginx_connects_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Each directive's socket, and the socket a colon cut would give instead.
    let whole = HttpBackend::start_unix(&d.join("up.sock:80"), "whole");
    let cut = HttpBackend::start_unix(&d.join("up.sock"), "cut");
    let scgi_whole = HttpBackend::start_unix(&d.join("scgi.sock:4000"), "scgi-whole");
    let scgi_cut = HttpBackend::start_unix(&d.join("scgi.sock"), "scgi-cut");
    let http = HttpBackend::start_unix(&d.join("http.sock"), "http");
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let p = d.display();
    let nginx = TestNginx::builder()
        .http(&format!(
            "upstream up {{ server unix:{p}/up.sock:80; }}\n\
             server {{ listen {listen};\n\
             location /up {{ proxy_pass http://up; }}\n\
             location /scgi {{ scgi_read_timeout 1s; scgi_pass unix:{p}/scgi.sock:4000; }}\n\
             location /http {{ proxy_pass http://unix:{p}/http.sock:/; }}\n}}"
        ))
        .start();

    // An upstream `server unix:...:80` keeps its colon; http proxy_pass cuts at it.
    assert_eq!(served(listen, "/up"), "whole");
    assert_eq!(served(listen, "/http"), "http");
    // scgi_pass keeps it too: the connection goes to `scgi.sock:4000` (what is answered there
    // does not matter; an HTTP backend is no SCGI server).
    let _ = http_get(listen, "site.test", "/scgi");
    assert!(
        wait_for(Duration::from_secs(5), || scgi_whole.hits() > 0),
        "nginx never connected to scgi.sock:4000"
    );
    assert_eq!((cut.hits(), scgi_cut.hits()), (0, 0));

    let run = SafeReload::new(&nginx).run(&["targets", "--json"]);
    run.expect(0);
    let listed: BTreeSet<String> = (run.json()["targets"].as_array().expect("targets").iter())
        .filter_map(|t| t["address"].as_str().map(str::to_string))
        .filter(|a| a.starts_with("unix:"))
        .collect();
    let want: BTreeSet<String> = [&whole, &scgi_whole, &http]
        .iter()
        .map(|b| format!("unix:{}", b.path.as_ref().expect("path").display()))
        .collect();
    assert_eq!(listed, want, "{run}");
}

/// A relative unix path is opened by nginx's workers from their working directory: the
/// master's (where it was started), or a relative `working_directory` below it, never the
/// directory safe-reload runs in. The probe connects where nginx does, and the shadow, started
/// in the master's directory, lets a harmless change through.
#[test]
fn a_relative_unix_path_is_probed_from_nginxs_working_directory() {
    for working_directory in [None, Some("run")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("run")).expect("mkdir run");
        let at = d.join(working_directory.unwrap_or("")).join("app.sock");
        let app = HttpBackend::start_unix(&at, "app");
        let ip = unique_loopback();
        let listen = SocketAddr::new(ip, free_port(ip));
        let site = |extra: &str| {
            format!(
                "server {{ listen {listen}; {extra} location / {{ proxy_pass http://unix:app.sock:/; }} }}"
            )
        };
        let main = working_directory.map_or(String::new(), |w| format!("working_directory {w};"));
        let nginx = TestNginx::builder()
            .cwd(d)
            .main(&main)
            .http(&site(""))
            .start();
        assert_eq!(served(listen, "/"), "app", "{working_directory:?}");

        let sr = SafeReload::new(&nginx);
        let run = sr.run(&["probe", "--json"]);
        run.expect(0);
        let results = run.json()["probe"]["results"].clone();
        let r = (results.as_array().expect("results").iter())
            .find(|r| r["target"] == "unix:app.sock")
            .unwrap_or_else(|| panic!("unix:app.sock probed: {run}"));
        assert_eq!(r["status"], "ok", "{working_directory:?}: {run}");
        let probed = r["addresses"][0]["address"].as_str().unwrap_or_default();
        assert_eq!(probed, format!("unix:{}", at.display()), "{run}");

        // A harmless change: the shadow's workers reach the same socket, and it reloads.
        sr.init();
        nginx.write_http(&site("add_header X-Changed 1;"));
        let run = sr.run(&["-y", "--json"]);
        run.expect(0);
        assert_eq!(run.outcome(), "reloaded", "{run}");
        let (status, body) = http_get(listen, "site.test", "/").expect("GET through nginx");
        assert_eq!((status, body.as_str()), (200, "app"));
        assert!(app.hits() > 0);
    }
}

/// A pool member on a relative unix path that nothing listens on, added beside a live one:
/// nginx logs the connect error by the path as written (`unix:nope.sock`) and fails over, and
/// the change is a warning, not a rollback, as for the same member on an absolute path.
#[test]
fn a_down_pool_member_on_a_relative_unix_path_is_a_warning_not_a_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let app = HttpBackend::start_unix(&d.join("app.sock"), "app");
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |members: &str| {
        format!(
            "upstream u {{ {members} }}\n\
             server {{ listen {listen}; location / {{ proxy_pass http://u; }} }}"
        )
    };
    let nginx = TestNginx::builder()
        .cwd(d)
        .http(&site("server unix:app.sock;"))
        .start();
    let sr = SafeReload::new(&nginx);
    sr.init();
    nginx.write_http(&site("server unix:app.sock; server unix:nope.sock;"));
    let run = sr.run(&["-y", "--json", "--no-shadow"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    for _ in 0..4 {
        assert_eq!(served(listen, "/"), "app");
    }
    assert!(app.hits() > 0);
}

/// A `map $host $pool` of 100 tenants over three live backends is three targets, each probed:
/// one tenant moved to an address nothing listens on is refused by `check --no-shadow`, which
/// names that tenant's map line, while nginx still serves every tenant from the running
/// configuration. The same map all live passes.
#[test]
fn a_dead_tenant_in_a_hundred_line_map_is_refused_with_its_line() {
    let b = Backends::start(&["a", "b", "c"]);
    let names = ["a", "b", "c"];
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let dead = SocketAddr::new(ip, free_port(ip));
    let http = |moved: Option<&str>| {
        let mut map = String::from("map $host $pool {\n  hostnames;\n");
        for i in 1..=100 {
            let to = match moved {
                Some(addr) if i == 50 => addr.to_string(),
                _ => format!("{{{{{}}}}}", names[i % 3]),
            };
            map += &format!("  t{i}.tenants.test {to};\n");
        }
        map += "  default {{a}};\n}\n";
        b.fill(&format!(
            "{map}server {{\n  listen {listen};\n  server_name *.tenants.test;\n  \
             location / {{ proxy_pass http://$pool; }}\n}}"
        ))
    };
    let nginx = TestNginx::builder().http(&http(None)).start();
    let sr = SafeReload::new(&nginx);
    let tenant = |i: usize| match http_get(listen, &format!("t{i}.tenants.test"), "/")
        .expect("request through nginx")
    {
        (200, body) => body,
        (status, _) => format!("status {status}"),
    };
    for i in [1, 2, 3, 50, 100] {
        assert_eq!(tenant(i), names[i % 3], "t{i}");
    }

    let run = sr.run(&["check", "--no-shadow", "--json"]);
    run.expect(0);
    let results = run.json()["probe"]["results"].clone();
    for n in names {
        let r = (results.as_array().expect("results").iter())
            .find(|r| r["target"] == b.get(n).host_port().as_str())
            .unwrap_or_else(|| panic!("{n} probed:\n{run}"));
        assert_eq!(r["status"], "ok", "{run}");
    }
    assert!(!run.stdout.contains("dynamic"), "{run}");

    nginx.write_http(&http(Some(&dead.to_string())));
    let text = std::fs::read_to_string(&nginx.conf).expect("read nginx.conf");
    let line = (text.lines().position(|l| l.contains("t50.tenants.test"))).expect("t50's line") + 1;
    let run = sr.run(&["check", "--no-shadow", "--json"]);
    run.expect(1);
    let r = probe_result(&run, dead);
    assert_eq!(r["status"], "refused", "{run}");
    let conf = nginx.conf.display().to_string();
    let map_lines: Vec<&Value> = (r["references"].as_array().expect("references").iter())
        .filter(|x| x["directive"] == "map")
        .collect();
    assert_eq!(map_lines.len(), 1, "{run}");
    assert_eq!(map_lines[0]["file"], conf.as_str(), "{run}");
    assert_eq!(map_lines[0]["line"], line, "{run}");
    let human = sr.run(&["check", "--no-shadow"]);
    human.expect(1);
    assert!(
        human.stdout.contains(&format!("{conf}:{line}"))
            || human.stderr.contains(&format!("{conf}:{line}")),
        "{human}"
    );
    // Nothing was applied: the running nginx serves every tenant as before.
    for i in [1, 2, 3, 50, 100] {
        assert_eq!(tenant(i), names[i % 3], "t{i}");
    }
}

/// The `IP:PORT` addresses the library's target extraction lists for nginx.conf.
fn library_targets(nginx: &TestNginx) -> BTreeSet<String> {
    use safe_reload::conf::{load, targets, LoadOptions};
    let config = load(&nginx.conf, &LoadOptions::default()).expect("nginx.conf loads");
    (targets::extract(&config).targets.iter())
        .map(|t| t.address.to_string())
        .collect()
}

/// A named location runs its own rewrite codes from their start after the redirect that
/// reaches it (`ngx_http_named_location`), also when the location sending the request there
/// ends in `return CODE;` for its `error_page CODE @name`: its `set` and `proxy_pass $var` are
/// a target, probed, and a dead one refused. A `set` after `rewrite ^ ... break;` never runs
/// and is not a target.
#[test]
fn a_named_location_after_an_error_page_return_is_a_target_and_a_dead_one_is_refused() {
    let b = Backends::start(&["teapot", "notfound", "broke"]);
    let dip = unique_loopback();
    let dead = SocketAddr::new(dip, free_port(dip)).to_string();
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |teapot: &str| {
        b.fill(&format!(
            "server {{\n  listen {listen};\n  server_name site.test;\n\
               location /w {{ error_page 418 = @n; return 418; }}\n\
               location @n {{ set $nn {teapot}; proxy_pass http://$nn; }} # n-pass\n\
               location /nf {{ error_page 404 @m; return 404; }}\n\
               location @m {{ set $mm {{{{notfound}}}}; proxy_pass http://$mm; }} # m-pass\n\
               location /u {{ set $t {{{{broke}}}}; rewrite ^ /u2 break; set $t {dead}; proxy_pass http://$t; }} # u-pass\n\
             }}"
        ))
    };
    let mut nginx = TestNginx::builder().http(&site("{{teapot}}")).start();
    assert_eq!(served(listen, "/w"), "teapot");
    // Without `=` the status stays 404; the body is @m's backend's.
    let nf = http_get(listen, "site.test", "/nf").expect("request through nginx");
    assert_eq!(nf, (404, "notfound".to_string()));
    assert_eq!(served(listen, "/u"), "broke");

    // Through the library: the named locations' own values, not the one after the break.
    let addr = |n: &str| b.get(n).host_port();
    let lib = library_targets(&nginx);
    for n in ["teapot", "notfound", "broke"] {
        assert!(lib.contains(&addr(n)), "{n} ({}) in {lib:?}", addr(n));
    }
    assert!(
        !lib.contains(&dead),
        "{dead} is never connected to: {lib:?}"
    );

    // Through the binary: the same, each on its own `*_pass` line.
    let sr = SafeReload::new(&nginx);
    let run = sr.run(&["targets", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(listed(&nginx, &report, &b, "# n-pass"), set(&["teapot"]));
    assert_eq!(listed(&nginx, &report, &b, "# m-pass"), set(&["notfound"]));
    assert_eq!(listed(&nginx, &report, &b, "# u-pass"), set(&["broke"]));
    sr.init();
    sr.run(&["check", "--no-shadow"]).expect(0);

    // @n's backend moved to an address where nothing listens: refused, naming it.
    nginx.write_http(&site(&dead));
    let run = sr.run(&["check", "--no-shadow"]);
    run.expect(1);
    assert!(run.stderr.contains(&format!("FAIL {dead}")), "{run}");
    // nginx agrees: once it runs that configuration, /w is a 502.
    nginx.stop();
    nginx.restart();
    assert_eq!(served(listen, "/w"), "status 502");
    assert_eq!(served(listen, "/u"), "broke");
}
