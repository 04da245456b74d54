//! Generated configuration trees for the reload benchmark: `n` name-based servers on one
//! loopback listen, each proxying two locations to its own two named upstreams of two servers
//! each (so `n` servers mean `2n` upstreams), spread over up to 100 files under `sites/`. One
//! server in [`SHARED_EVERY`] includes `snippets/shared.conf` in its `location /` (2,000 of
//! 10,000), so one edit there is a change that touches a fifth of the servers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const FILES: usize = 100;

/// Every how many servers one includes the shared snippet.
pub const SHARED_EVERY: usize = 5;

const SHARED: &str = "snippets/shared.conf";

/// A generated nginx prefix.
pub struct Tree {
    pub prefix: PathBuf,
    pub conf: PathBuf,
    pub listen: SocketAddr,
    /// Total bytes of every configuration file.
    pub bytes: u64,
}

fn server_text(out: &mut String, i: usize, backends: &[SocketAddr], listen: SocketAddr) {
    let b = |k: usize| backends[(i * 2 + k) % backends.len()];
    let shared = if i.is_multiple_of(SHARED_EVERY) {
        format!("        include {SHARED};\n")
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "upstream u{i}a {{\n    server {} max_fails=3;\n    server {};\n}}\n\
         upstream u{i}b {{\n    server {};\n    server {} backup;\n}}\n\
         server {{\n    listen {listen};\n    server_name s{i}.bench.test;\n\
         \x20   location / {{\n        proxy_set_header Host $host;\n{shared}        proxy_pass http://u{i}a;\n    }}\n\
         \x20   location /api/ {{\n        proxy_read_timeout 30s;\n        proxy_pass http://u{i}b;\n    }}\n}}\n",
        b(0),
        b(1),
        b(2),
        b(3),
    );
}

fn shared_text(rev: usize) -> String {
    format!("proxy_set_header X-Bench-Shared {rev};\n")
}

fn main_text(prefix: &Path, workers: usize) -> String {
    let p = prefix.display();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "{user}daemon off;\nworker_processes {workers};\npid {p}/logs/nginx.pid;\n\
         error_log {p}/logs/error.log notice;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/tmp/body;\n  \
         proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n  \
         uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n  \
         server_names_hash_max_size 65536;\n  server_names_hash_bucket_size 128;\n  \
         include sites/*.conf;\n}}\n"
    )
}

/// Write an `n`-server tree into `prefix` (which is emptied first).
pub fn generate(
    prefix: &Path,
    n: usize,
    backends: &[SocketAddr],
    listen: SocketAddr,
    workers: usize,
) -> std::io::Result<Tree> {
    if prefix.exists() {
        fs_err::remove_dir_all(prefix)?;
    }
    for sub in ["logs", "tmp", "sites", "snippets", "state"] {
        fs_err::create_dir_all(prefix.join(sub))?;
    }
    let files = FILES.min(n);
    let per_file = n.div_ceil(files);
    let mut bytes = 0;
    for f in 0..files {
        let mut text = String::new();
        for i in f * per_file..((f + 1) * per_file).min(n) {
            server_text(&mut text, i, backends, listen);
        }
        bytes += text.len() as u64;
        fs_err::write(prefix.join(format!("sites/site{f:03}.conf")), text)?;
    }
    let shared = shared_text(0);
    bytes += shared.len() as u64;
    fs_err::write(prefix.join(SHARED), shared)?;
    let conf = prefix.join("nginx.conf");
    let main = main_text(prefix, workers);
    bytes += main.len() as u64;
    fs_err::write(&conf, main)?;
    let tree = Tree {
        prefix: prefix.to_path_buf(),
        conf,
        listen,
        bytes,
    };
    tree.revise(0)?;
    Ok(tree)
}

impl Tree {
    /// The change an operator makes before a reload: one small file whose content differs
    /// each time.
    pub fn revise(&self, rev: usize) -> std::io::Result<()> {
        fs_err::write(
            self.prefix.join("sites/zz-revision.conf"),
            format!("# revision {rev}\n"),
        )
    }

    /// A change to one server of its own (`one.bench.test`, in the revision file, proxying
    /// to server 0's upstream): a header that differs each time, so exactly one server is
    /// affected once the server is in last-good.
    pub fn revise_one(&self, rev: usize) -> std::io::Result<()> {
        fs_err::write(
            self.prefix.join("sites/zz-revision.conf"),
            format!(
                "server {{\n    listen {};\n    server_name one.bench.test;\n    \
                 location / {{\n        proxy_set_header X-Bench-Rev {rev};\n        \
                 proxy_pass http://u0a;\n    }}\n}}\n",
                self.listen
            ),
        )
    }

    /// A harmless change to the snippet every [`SHARED_EVERY`]th server includes in its
    /// `location /`: a fifth of the servers are affected.
    pub fn revise_shared(&self, rev: usize) -> std::io::Result<()> {
        fs_err::write(self.prefix.join(SHARED), shared_text(rev))
    }

    /// How many servers include the shared snippet.
    pub fn shared_servers(n: usize) -> usize {
        n.div_ceil(SHARED_EVERY)
    }

    /// A change that passes `nginx -t` and the connect probes but answers 502 through nginx:
    /// server 0's `/` goes to a backend that closes every connection unanswered.
    pub fn break_server0(&self, bad: SocketAddr) -> std::io::Result<()> {
        fs_err::write(
            self.prefix.join("sites/zz-revision.conf"),
            format!("# broken\nupstream bench_bad {{ server {bad}; }}\nserver {{\n    listen {};\n    server_name broken.bench.test;\n    location / {{ proxy_pass http://bench_bad; }}\n}}\n", self.listen),
        )
    }

    /// A change that only the real nginx shows broken: the target depends on `$server_port`,
    /// which is the real listen's port in production and another one in the shadow.
    pub fn break_by_port(&self, good: SocketAddr, bad: SocketAddr) -> std::io::Result<()> {
        fs_err::write(
            self.prefix.join("sites/zz-revision.conf"),
            format!(
                "# broken in production only
map $server_port $bench_be {{ default {good}; {} {bad}; }}
                 server {{
    listen {};
    server_name broken.bench.test;
                     location / {{ proxy_pass http://$bench_be; }}
}}
",
                self.listen.port(),
                self.listen
            ),
        )
    }

    /// `-c CONF -p PREFIX/`, as both nginx and safe-reload take them.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "-c".into(),
            self.conf.display().to_string(),
            "-p".into(),
            format!("{}/", self.prefix.display()),
        ]
    }
}
