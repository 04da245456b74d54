use super::*;
use crate::conf::{load, servers, LoadOptions};

/// Load a tree written to a temporary directory: `files` are (relative path, text), the
/// first one the main file.
fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Prints) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    let config = load(&dir.path().join(files[0].0), &LoadOptions::default()).expect("loads");
    let servers = servers::extract(&config);
    let p = prints(&config, &servers);
    (dir, p)
}

const MAIN: &str =
    "events {}\nhttp {\n include upstreams.conf;\n include maps.conf;\n include sites.conf;\n}\n";

fn sites(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "server {{\n listen 127.0.0.1:8080;\n server_name s{i}.test;\n location / {{ proxy_pass http://up{i}; }}\n}}\n"
            )
        })
        .collect()
}

fn upstreams(n: usize, changed: Option<usize>) -> String {
    (0..n)
        .map(|i| {
            let port = if Some(i) == changed { 9999 } else { 9000 + i };
            format!("upstream up{i} {{\n server 127.0.0.1:{port};\n}}\n")
        })
        .collect()
}

fn labels(i: &Impact) -> Vec<&str> {
    i.affected.iter().map(|a| a.label.as_str()).collect()
}

#[test]
fn an_upstream_change_affects_only_the_servers_that_pass_to_it() {
    let site = sites(40);
    let (_a, old) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &upstreams(40, None)),
        ("maps.conf", ""),
        ("sites.conf", &site),
    ]);
    let (_b, new) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &upstreams(40, Some(7))),
        ("maps.conf", ""),
        ("sites.conf", &site),
    ]);
    let impact = between(&old, &new);
    assert_eq!(labels(&impact), ["s7.test"]);
    assert_eq!(impact.total, 40);
    let reason = &impact.affected[0].reasons[0];
    assert_eq!(reason.to_string(), "upstream up7, upstreams.conf:22");
    assert!(
        impact.summary(5).starts_with(
            "this change affects 1 of 40 servers: s7.test (upstream up7, upstreams.conf:22)"
        ),
        "{}",
        impact.summary(5)
    );
}

#[test]
fn an_http_level_change_affects_every_server_and_a_moved_line_none() {
    let site = sites(3);
    let ups = upstreams(3, None);
    let (_a, old) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &ups),
        ("maps.conf", ""),
        ("sites.conf", &site),
    ]);
    let changed = MAIN.replace("http {\n", "http {\n proxy_set_header X-A 1;\n");
    let (_b, new) = tree(&[
        ("nginx.conf", &changed),
        ("upstreams.conf", &ups),
        ("maps.conf", ""),
        ("sites.conf", &site),
    ]);
    let impact = between(&old, &new);
    assert_eq!(impact.affected.len(), 3);
    assert_eq!(
        impact.affected[2].reasons[0].to_string(),
        "http: proxy_set_header, nginx.conf:3"
    );
    // Blank lines and comments move directives but change nothing nginx does.
    let moved = format!("# a comment\n\n{site}");
    let (_c, same) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &ups),
        ("maps.conf", ""),
        ("sites.conf", &moved),
    ]);
    assert!(between(&old, &same).affected.is_empty());
}

#[test]
fn a_map_change_affects_the_servers_whose_pass_uses_its_variable() {
    let maps_old = "map $host $pool {\n default up0;\n b.test up1;\n}\n";
    let maps_new = "map $host $pool {\n default up0;\n b.test up2;\n}\n";
    let site = "server {\n listen 80;\n server_name a.test b.test;\n location / { proxy_pass http://$pool; }\n}\n\
                server {\n listen 80;\n server_name c.test;\n location / { proxy_pass http://up0; }\n}\n";
    let ups = upstreams(3, None);
    let (_a, old) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &ups),
        ("maps.conf", maps_old),
        ("sites.conf", site),
    ]);
    let (_b, new) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &ups),
        ("maps.conf", maps_new),
        ("sites.conf", site),
    ]);
    let impact = between(&old, &new);
    assert_eq!(labels(&impact), ["a.test"]);
    let reasons: Vec<String> = impact.affected[0]
        .reasons
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(reasons[0], "map $pool, maps.conf:1");
    // up2 is new to this server's requests: it is a reason too.
    assert!(
        reasons.iter().any(|r| r.starts_with("upstream up2")),
        "{reasons:?}"
    );
}

#[test]
fn a_change_in_a_file_included_inside_a_location_names_that_file() {
    let site = "server {\n listen 80;\n server_name a.test;\n location / {\n  include snippets/proxy.conf;\n  proxy_pass http://up0;\n }\n}\n\
                server {\n listen 80;\n server_name b.test;\n location / { proxy_pass http://up1; }\n}\n";
    let ups = upstreams(2, None);
    let (_a, old) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &ups),
        ("maps.conf", ""),
        ("sites.conf", site),
        (
            "snippets/proxy.conf",
            "proxy_set_header A 1;\nproxy_read_timeout 5s;\n",
        ),
    ]);
    let (_b, new) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &ups),
        ("maps.conf", ""),
        ("sites.conf", site),
        (
            "snippets/proxy.conf",
            "proxy_set_header A 1;\nproxy_read_timeout 1s;\n",
        ),
    ]);
    let impact = between(&old, &new);
    assert_eq!(labels(&impact), ["a.test"]);
    assert_eq!(
        impact.affected[0].reasons[0].to_string(),
        "server block, snippets/proxy.conf:2"
    );
}

#[test]
fn added_and_removed_servers_and_no_baseline() {
    let ups = upstreams(3, None);
    let (_a, old) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &ups),
        ("maps.conf", ""),
        ("sites.conf", &sites(2)),
    ]);
    let three = sites(3);
    let (_b, new) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &ups),
        ("maps.conf", ""),
        (
            "sites.conf",
            &three[three
                .find("server {\n listen 127.0.0.1:8080;\n server_name s1")
                .unwrap()..],
        ),
    ]);
    let impact = between(&old, &new);
    // s1 is the first server of the listen now: the default for unknown Hosts.
    assert_eq!(labels(&impact), ["s1.test", "s2.test"]);
    assert_eq!(
        impact.affected[0].reasons[0].what,
        "127.0.0.1:8080: default server changes from s0.test (sites.conf:1) to s1.test \
         (sites.conf:1)"
    );
    assert_eq!(impact.affected[1].reasons[0].what, "new server");
    let removed: Vec<&str> = impact.removed.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(removed, ["s0.test"]);
    assert!(
        impact.summary(3).ends_with("; removed: s0.test"),
        "{}",
        impact.summary(3)
    );
    let all = Impact::everything(&new);
    assert_eq!((all.affected.len(), all.baseline), (2, false));
}

#[test]
fn a_server_that_becomes_the_default_for_unknown_hosts_is_affected_with_the_one_it_replaces() {
    const SITES: &str = "events {}\nhttp {\n include sites/*.conf;\n}\n";
    let site = |name: &str, flags: &str| {
        format!(
            "server {{\n listen 127.0.0.1:8080{flags};\n server_name {name};\n location / {{ proxy_pass http://u; }}\n}}\n"
        )
    };
    let a = site("a.example", "");
    let b = site("b.example", "");
    let (_a, old) = tree(&[
        ("nginx.conf", SITES),
        ("sites/a.conf", &a),
        ("sites/b.conf", &b),
    ]);
    // A new file sorted before the others: its server is the first on the listen.
    let (_b, new) = tree(&[
        ("nginx.conf", SITES),
        ("sites/00-new.conf", &site("new.example", "")),
        ("sites/a.conf", &a),
        ("sites/b.conf", &b),
    ]);
    let impact = between(&old, &new);
    assert_eq!(labels(&impact), ["new.example", "a.example"]);
    let change = "127.0.0.1:8080: default server changes from a.example (sites/a.conf:1) to \
                  new.example (sites/00-new.conf:1)";
    assert_eq!(impact.default_changes.len(), 1);
    assert_eq!(impact.default_changes[0].to_string(), change);
    let whats = |i: usize| -> Vec<&str> {
        (impact.affected[i].reasons.iter())
            .map(|r| r.what.as_str())
            .collect()
    };
    assert_eq!(whats(0), ["new server", change]);
    assert_eq!(whats(1), [change]);
    // Added after the first: the default stays.
    let (_c, later) = tree(&[
        ("nginx.conf", SITES),
        ("sites/a.conf", &a),
        ("sites/b.conf", &b),
        ("sites/c.conf", &site("c.example", "")),
    ]);
    assert!(between(&old, &later).default_changes.is_empty());
    // `default_server` on a later server wins over file order, and moving it is a change.
    let (_d, moved) = tree(&[
        ("nginx.conf", SITES),
        ("sites/a.conf", &a),
        ("sites/b.conf", &site("b.example", " default_server")),
    ]);
    let impact = between(&old, &moved);
    assert_eq!(
        impact.default_changes[0].to_string(),
        "127.0.0.1:8080: default server changes from a.example (sites/a.conf:1) to b.example \
         (sites/b.conf:1)"
    );
    assert_eq!(labels(&impact), ["a.example", "b.example"]);
}

#[test]
fn where_in_a_server_the_change_is() {
    const ONE: &str = "events {}\nhttp {\n include site.conf;\n}\n";
    let site = |http: &str, own: &str, api: &str, auth: &str| {
        format!(
            "{http}\nupstream api {{ server {api}; }}\n\
             server {{ listen 127.0.0.1:80; server_name a.test; {own}\n\
             location = /auth {{ internal; proxy_pass http://{auth}; }}\n\
             location / {{ auth_request /auth; proxy_pass http://127.0.0.1:1; }}\n\
             location /api/ {{ proxy_pass http://api; location ~ \\.json$ {{ proxy_pass http://api; }} }}\n\
             location /open/ {{ proxy_pass http://127.0.0.1:2; }} }}"
        )
    };
    let base = site("", "", "127.0.0.1:3", "127.0.0.1:4");
    let (_a, old) = tree(&[("nginx.conf", ONE), ("site.conf", &base)]);
    let touched = |text: &str| {
        let (_b, new) = tree(&[("nginx.conf", ONE), ("site.conf", text)]);
        let impact = between(&old, &new);
        impact.affected.first().map(|a| a.touched.clone())
    };
    let at = |keys: &[&str]| {
        Some(Touched::Locations(
            keys.iter().map(|k| k.to_string()).collect(),
        ))
    };
    // The upstream: the locations that pass to it, the nested one too.
    assert_eq!(
        touched(&site("", "", "127.0.0.1:9", "127.0.0.1:4")),
        at(&["/api/", "~ \\.json$"])
    );
    // The subrequest's location: it and the location whose auth_request asks it.
    assert_eq!(
        touched(&site("", "", "127.0.0.1:3", "127.0.0.1:9")),
        at(&["= /auth", "/"])
    );
    assert_eq!(
        touched(&site("", "add_header X-A 1;", "127.0.0.1:3", "127.0.0.1:4")),
        Some(Touched::Server)
    );
    assert_eq!(
        touched(&site(
            "proxy_set_header X-A 1;",
            "",
            "127.0.0.1:3",
            "127.0.0.1:4"
        )),
        Some(Touched::Inherited)
    );
}

#[test]
fn variables_and_pass_hosts() {
    assert_eq!(variables("http://$pool${x}/$1y_z"), ["pool", "x", "1y_z"]);
    assert_eq!(pass_host("http://API:8080/x").as_deref(), Some("api"));
    assert_eq!(pass_host("backend").as_deref(), Some("backend"));
    assert_eq!(pass_host("unix:/run/a.sock"), None);
    assert_eq!(pass_host("http://$pool"), None);
}

#[test]
fn a_name_added_or_a_listen_removed_is_a_changed_server_not_a_new_one() {
    let site = |names: &str, listens: &str| {
        format!(
            "server {{\n{listens} server_name {names};\n location / {{ proxy_pass http://up0; }}\n}}\n\
             server {{\n listen 127.0.0.1:8080;\n server_name other.test;\n location / {{ proxy_pass http://up0; }}\n}}\n"
        )
    };
    let one = " listen 127.0.0.1:8080;\n";
    let two = " listen 127.0.0.1:8080;\n listen 127.0.0.1:8081;\n";
    let load = |sites: &str| {
        tree(&[
            ("nginx.conf", MAIN),
            ("upstreams.conf", &upstreams(1, None)),
            ("maps.conf", ""),
            ("sites.conf", sites),
        ])
    };
    let (_a, old) = load(&site("b.example", two));
    let (_b, alias) = load(&site("b.example c.example", two));
    let impact = between(&old, &alias);
    assert_eq!(labels(&impact), ["b.example"]);
    assert_eq!(
        impact.affected[0].reasons[0].to_string(),
        "server_name adds c.example, sites.conf:1"
    );
    assert!(impact.removed.is_empty() && impact.default_changes.is_empty());
    assert!(impact
        .summary(3)
        .contains("b.example (server_name adds c.example"));

    // Moved to another line, one listen fewer: still the same server.
    let (_c, fewer) = load(&format!("\n\n{}", site("b.example", one)));
    let impact = between(&old, &fewer);
    assert_eq!(labels(&impact), ["b.example"]);
    assert_eq!(
        impact.affected[0].reasons[0].what,
        "listen removes 127.0.0.1:8081"
    );
    assert!(impact.removed.is_empty());

    // Another block in its place, of other names: new, and the one it replaced removed.
    let (_d, other) = load(&site("n.example", two));
    let impact = between(&old, &other);
    assert_eq!(impact.affected[0].reasons[0].what, "new server");
    assert_eq!(impact.removed[0].label, "b.example");
}

#[test]
fn a_comment_needs_no_shadow_and_an_unused_upstream_or_a_main_directive_is_outside_the_servers() {
    let site = sites(2);
    let files = |main: &str, ups: &str| {
        tree(&[
            ("nginx.conf", main),
            ("upstreams.conf", ups),
            ("maps.conf", ""),
            ("sites.conf", &site),
        ])
    };
    let (_a, old) = files(MAIN, &upstreams(2, None));
    let (_b, comment) = files(&format!("# a comment\n{MAIN}"), &upstreams(2, None));
    let impact = between(&old, &comment);
    assert!(impact.affected.is_empty() && impact.outside_servers.is_empty());
    assert!(!impact.shadow_needed());

    let spare = format!(
        "{}upstream spare {{ server 127.0.0.1:1; }}\n",
        upstreams(2, None)
    );
    let (_c, unused) = files(MAIN, &spare);
    let impact = between(&old, &unused);
    assert!(impact.affected.is_empty());
    let what: Vec<String> = impact
        .outside_servers
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(what, ["http: upstream, upstreams.conf:7"]);
    assert!(impact.shadow_needed());
    // Gone again: last-good's place, said removed.
    let back = between(&unused, &old);
    assert_eq!(back.outside_servers[0].what, "http: upstream (removed)");

    let (_d, limit) = files(
        &format!("worker_rlimit_nofile 4096;\n{MAIN}"),
        &upstreams(2, None),
    );
    let impact = between(&old, &limit);
    assert_eq!(impact.outside_servers[0].what, "main: worker_rlimit_nofile");
    assert!(impact.shadow_needed());
}

#[test]
fn a_name_replaced_by_its_typo_reads_as_one_and_a_rename_does_not() {
    for (old, new) in [
        ("a.test", "a.tset"),
        ("example.com", "exmaple.com"),
        ("shop.test", "shopp.test"),
        ("www.shop.test", "ww.shop.test"),
    ] {
        assert!(typo_of(old, new), "{old} -> {new}");
    }
    for (old, new) in [
        ("v1.api.test", "v2.api.test"),
        ("api.test", "apis.test"),
        ("shop.test", "sho.test"),
        ("a.test", "b.test"),
        ("a.test", "a.test"),
        ("a11.test", "a1.test"),
        ("old.example", "new.example"),
    ] {
        assert!(!typo_of(old, new), "{old} -> {new}");
    }
}

#[test]
fn a_server_is_called_by_its_first_name_as_written_and_known_by_all_of_them() {
    let site = |names: &str, header: &str| {
        format!(
            "server {{\n listen 127.0.0.1:8080;\n server_name {names};\n {header}\n location / {{ proxy_pass http://up0; }}\n}}\n"
        )
    };
    let (_a, old) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &upstreams(1, None)),
        ("maps.conf", ""),
        ("sites.conf", &site("w.test api.w.test", "")),
    ]);
    let (_b, new) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &upstreams(1, None)),
        ("maps.conf", ""),
        (
            "sites.conf",
            &site("api.w.test w.test", "add_header X-A 1;"),
        ),
    ]);
    let impact = between(&old, &new);
    // The same server (its names reordered), called by the name the new file writes first.
    assert_eq!(labels(&impact), ["api.w.test"]);
    assert!(impact.removed.is_empty(), "{}", impact.summary(5));
    let (_c, again) = tree(&[
        ("nginx.conf", MAIN),
        ("upstreams.conf", &upstreams(1, None)),
        ("maps.conf", ""),
        (
            "sites.conf",
            &site("w.test api.w.test", "add_header X-A 1;"),
        ),
    ]);
    assert_eq!(labels(&between(&old, &again)), ["w.test"]);
}
