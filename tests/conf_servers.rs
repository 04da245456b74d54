//! `server {}` extraction: listen forms and flags, nginx's default listen, server names, and
//! proxied locations (nested ones separately) with file and line.

mod conf_util;

use conf_util::{line_of, Tree};
use safe_reload::conf::servers::{self, ListenAddr};
use safe_reload::conf::targets::Context;

const CONF: &str = r#"events {}
http {
    server {
        listen 80;
        listen *:8080 default_server;
        listen 127.0.0.1;
        listen [::]:443 ssl http2 default;
        listen localhost:8081;
        listen unix:/run/nginx/app.sock;
        server_name example.com www.example.com;
        server_name *.example.org;
        location / { return 200; }
        location /api/ {
            proxy_pass http://127.0.0.1:8000;
            location ~* \.json$ { proxy_pass http://127.0.0.1:8001; }
        }
        location = /exact { fastcgi_pass 127.0.0.1:9000; }
        location =/glued { uwsgi_pass 127.0.0.1:3031; }
        location @named { grpc_pass grpc://127.0.0.1:50051; }
        location /cond { if ($arg_a) { proxy_pass http://127.0.0.1:8002; } }
    }
    server {
        server_name _;
    }
}
stream {
    server {
        listen 127.0.0.1:5353 udp;
        proxy_pass 127.0.0.1:53;
    }
}
"#;

#[test]
fn listens_names_and_proxied_locations() {
    let tree = Tree::new();
    let main = tree.write("nginx.conf", CONF);
    let all = servers::extract(&tree.load("nginx.conf"));
    assert_eq!(all.len(), 3);

    let s = &all[0];
    assert_eq!(
        (s.context, s.file.to_path_buf(), s.line),
        (Context::Http, main.clone(), 3)
    );
    let listens: Vec<(String, bool, bool, u32)> = s
        .listens
        .iter()
        .map(|l| (l.addr.to_string(), l.ssl, l.default_server, l.line))
        .collect();
    assert_eq!(
        listens,
        [
            ("0.0.0.0:80".into(), false, false, 4),
            ("0.0.0.0:8080".into(), false, true, 5),
            ("127.0.0.1:80".into(), false, false, 6),
            ("[::]:443".into(), true, true, 7),
            ("localhost:8081".into(), false, false, 8),
            ("unix:/run/nginx/app.sock".into(), false, false, 9),
        ]
    );
    assert!(matches!(s.listens[4].addr, ListenAddr::Host { .. }));
    assert!(s.listens.iter().all(|l| *l.file == *main));
    assert_eq!(
        s.server_names,
        ["example.com", "www.example.com", "*.example.org"]
    );

    let locs: Vec<(Option<&str>, &str, &str, u32)> = s
        .locations
        .iter()
        .map(|l| (l.modifier.as_deref(), l.path.as_str(), l.pass, l.line))
        .collect();
    assert_eq!(
        locs,
        [
            (None, "/api/", "proxy_pass", line_of(CONF, "location /api/")),
            (
                Some("~*"),
                "\\.json$",
                "proxy_pass",
                line_of(CONF, "location ~*")
            ),
            (Some("="), "/exact", "fastcgi_pass", line_of(CONF, "/exact")),
            (Some("="), "/glued", "uwsgi_pass", line_of(CONF, "/glued")),
            (None, "@named", "grpc_pass", line_of(CONF, "@named")),
            (None, "/cond", "proxy_pass", line_of(CONF, "/cond")),
        ]
    );
    assert!(s.locations.iter().all(|l| *l.file == *main));

    // No listen in http: nginx's default *:80, at the server block's line.
    let d = &all[1];
    assert_eq!(d.listens.len(), 1);
    assert_eq!(
        (d.listens[0].addr.to_string(), d.listens[0].line),
        ("0.0.0.0:80".into(), 22)
    );
    assert_eq!(d.server_names, ["_"]);
    assert!(d.locations.is_empty());

    let st = &all[2];
    assert_eq!(st.context, Context::Stream);
    assert_eq!(st.listens.len(), 1);
    assert!(st.listens[0].udp);
    assert_eq!(st.listens[0].addr.to_string(), "127.0.0.1:5353");
    assert!(st.locations.is_empty());
}

#[test]
fn servers_from_included_files_keep_their_file() {
    let tree = Tree::new();
    tree.write("nginx.conf", "http {\n    include sites-enabled/*;\n}\n");
    let site = tree.write(
        "sites-enabled/app",
        "\n\nserver {\n    listen 127.0.0.1:8088;\n    location / { proxy_pass http://127.0.0.1:3000; }\n}\n",
    );
    let all = servers::extract(&tree.load("nginx.conf"));
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].file.to_path_buf(), all[0].line), (site.clone(), 3));
    assert_eq!(
        (all[0].listens[0].file.to_path_buf(), all[0].listens[0].line),
        (site.clone(), 4)
    );
    assert_eq!(
        (
            all[0].locations[0].file.to_path_buf(),
            all[0].locations[0].line
        ),
        (site, 5)
    );
}
