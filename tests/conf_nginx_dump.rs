//! Include resolution checked against nginx itself: the file set `load` finds equals the
//! `# configuration file PATH:` set of `nginx -T` on real trees (h5bp's layout, a Debian-style
//! tree with `sites-enabled` symlinks, `conf.d/*.conf` beside a dotfile and a `.conf.bak`).
//! Each tree lives in a tempdir with pid, logs and temp paths inside it.

mod conf_util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use conf_util::{corpus_dir, files_under, nginx_run, Tree};
use safe_reload::conf::{load, LoadOptions};

/// The `*_temp_path` lines that keep nginx -t inside the tempdir.
fn temp_paths(dir: &Path) -> String {
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|k| format!("  {k}_temp_path {}/tmp/{k};\n", dir.display()))
        .collect()
}

/// Files nginx -T says it read.
fn dumped_files(conf: &Path, prefix: &Path) -> BTreeSet<PathBuf> {
    let (ok, stdout, stderr) = nginx_run(conf, prefix, true, None);
    assert!(ok, "nginx -T failed on {}:\n{stderr}", conf.display());
    let set: BTreeSet<PathBuf> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# configuration file "))
        .map(|l| PathBuf::from(l.trim_end_matches(':')))
        .collect();
    assert!(!set.is_empty(), "nginx -T printed no files:\n{stdout}");
    set
}

fn loaded_files(conf: &Path) -> BTreeSet<PathBuf> {
    let cfg = load(conf, &LoadOptions::default()).expect("loads");
    let set: BTreeSet<PathBuf> = cfg.paths().map(Path::to_path_buf).collect();
    assert_eq!(set.len(), cfg.files.len(), "a file listed twice");
    set
}

#[test]
fn h5bp_layout_matches_nginx_dump() {
    let Some(corpus) = corpus_dir() else { return };
    let src = corpus.join("h5bp-server-configs-nginx");
    let tree = Tree::new();
    let root = tree.path("h5bp");
    for f in files_under(&src) {
        let rel = f.strip_prefix(&src).expect("under src");
        let to = root.join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&f, &to).expect("copy");
    }
    let main = root.join("nginx.conf");
    let d = root.display();
    let text = std::fs::read_to_string(&main)
        .expect("read")
        .replace("user www-data;", "")
        .replace("/var/log/nginx/", &format!("{d}/"))
        .replace("/var/run/nginx.pid", &format!("{d}/nginx.pid"))
        .replacen("http {\n", &format!("http {{\n{}", temp_paths(&root)), 1);
    std::fs::write(&main, text).expect("write");
    std::fs::create_dir_all(root.join("tmp")).expect("mkdir");

    let ours = loaded_files(&main);
    assert_eq!(ours, dumped_files(&main, &root));
    assert!(!ours.contains(&root.join("conf.d/.default.conf")));
    assert!(ours.contains(&root.join("conf.d/no-ssl.default.conf")));
}

#[test]
fn debian_tree_with_symlinks_dotfiles_and_backups_matches_nginx_dump() {
    let tree = Tree::new();
    let root = tree.path("etc-nginx");
    let d = root.display();
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    w(
        "nginx.conf",
        &format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\ninclude modules-enabled/*.conf;\n\
             events {{}}\nhttp {{\n{}  access_log off;\n  include mime.types;\n  include conf.d/*.conf;\n  include sites-enabled/*;\n}}\n\
             stream {{\n  include streams/*.conf;\n}}\n",
            temp_paths(&root)
        ),
    );
    w("mime.types", "types {\n  text/html html;\n}\n");
    w(
        "modules-enabled/50-mod-stream.conf",
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n",
    );
    w("conf.d/a.conf", "upstream app { server 127.0.0.1:8000; }\n");
    w("conf.d/c.conf", "server_names_hash_bucket_size 64;\n");
    w("conf.d/.hidden.conf", "this would not parse\n");
    w("conf.d/b.conf.bak", "this would not parse either\n");
    w("snippets/proxy.conf", "proxy_set_header Host $host;\n");
    w(
        "sites-available/default",
        "server {\n  listen 127.0.0.1:8080;\n  location / { include snippets/proxy.conf; proxy_pass http://app; }\n}\n",
    );
    w(
        "sites-available/shop",
        "server {\n  listen 127.0.0.1:8081;\n  location / { include snippets/proxy.conf; proxy_pass http://127.0.0.1:8001; }\n}\n",
    );
    w("sites-available/disabled", "not even nginx\n");
    w(
        "streams/db.conf",
        "server { listen 127.0.0.1:15432; proxy_pass 127.0.0.1:5432; }\n",
    );
    std::fs::create_dir_all(root.join("sites-enabled")).expect("mkdir");
    std::os::unix::fs::symlink(
        "../sites-available/default",
        root.join("sites-enabled/default"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(
        root.join("sites-available/shop"),
        root.join("sites-enabled/shop"),
    )
    .expect("symlink");
    std::fs::create_dir_all(root.join("tmp")).expect("mkdir");

    let main = root.join("nginx.conf");
    let ours = loaded_files(&main);
    assert_eq!(ours, dumped_files(&main, &root));
    // Symlinks are listed as written, not resolved; the snippet included twice is listed once.
    assert!(ours.contains(&root.join("sites-enabled/default")));
    assert!(ours.contains(&root.join("snippets/proxy.conf")));
    assert!(!ours.iter().any(|p| p.ends_with("sites-available/default")));
    assert_eq!(ours.len(), 9);
}
