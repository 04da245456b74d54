//! Parse benchmark: generates 1,000- and 10,000-server trees (100 files each, servers with
//! listens, names, several proxied locations and their own upstream blocks), then times `load`
//! plus target and server extraction, median of several runs, and reports peak RSS.
//!
//! `SAFE_RELOAD_BENCH_DIR=DIR` keeps the trees in DIR (`DIR/1000/nginx.conf`, ...) so
//! `scripts/bench-parse.sh` can run crossplane on the very same files.

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use safe_reload::conf::{load, servers, targets, LoadOptions};

const FILES: usize = 100;
const RUNS: usize = 7;

fn server_text(out: &mut String, i: usize) {
    let (a, b) = (i / 250 % 250, i % 250);
    let _ = write!(
        out,
        "upstream app{i} {{\n    server 127.{a}.{b}.1:8000 weight=2 max_fails=3 fail_timeout=10s;\n    server 127.{a}.{b}.2:8000 backup;\n}}\n\
         server {{\n    listen 127.0.0.1:{port};\n    server_name site{i}.example.com www.site{i}.example.com;\n\
         \n    location / {{\n        try_files $uri $uri/ @app;\n    }}\n    location @app {{\n        proxy_set_header Host $host;\n        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n        proxy_pass http://app{i};\n    }}\n\
         \n    location /api/ {{\n        proxy_read_timeout 30s;\n        proxy_pass http://app{i}/api/;\n    }}\n    location ~* \\.(css|js|png)$ {{\n        expires 7d; # static\n        add_header Cache-Control \"public\";\n    }}\n\
         \n    location /ws {{\n        proxy_http_version 1.1;\n        proxy_set_header Upgrade $http_upgrade;\n        proxy_pass http://127.{a}.{b}.3:9000;\n    }}\n}}\n\n",
        port = 10000 + i % 50000,
    );
}

/// Write an `n`-server tree under `dir`; returns the main file and the total bytes.
fn generate(dir: &Path, n: usize) -> std::io::Result<(PathBuf, usize)> {
    let sites = dir.join("sites");
    fs_err::create_dir_all(&sites)?;
    let mut total = 0;
    let per_file = n.div_ceil(FILES - 1);
    for f in 0..FILES - 1 {
        let mut text = String::new();
        for i in f * per_file..((f + 1) * per_file).min(n) {
            server_text(&mut text, i);
        }
        total += text.len();
        fs_err::write(sites.join(format!("site{f:03}.conf")), text)?;
    }
    let main = dir.join("nginx.conf");
    let text = "worker_processes auto;\nevents {\n    worker_connections 1024;\n}\nhttp {\n    sendfile on;\n    include sites/*.conf;\n}\n";
    total += text.len();
    fs_err::write(&main, text)?;
    Ok((main, total))
}

fn peak_rss_kb() -> String {
    fs_err::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn run(main: &Path) -> Result<(Duration, usize, usize), safe_reload::Error> {
    let start = Instant::now();
    let cfg = load(main, &LoadOptions::default())?;
    let t = targets::extract(&cfg);
    let s = servers::extract(&cfg);
    Ok((start.elapsed(), t.targets.len(), s.len()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let keep = std::env::var_os("SAFE_RELOAD_BENCH_DIR").map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let base = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    for n in [1_000, 10_000] {
        let (main, bytes) = generate(&base.join(n.to_string()), n)?;
        let mut times = Vec::new();
        let mut counts = (0, 0);
        for _ in 0..RUNS {
            let (d, t, s) = run(&main)?;
            times.push(d);
            counts = (t, s);
        }
        times.sort();
        let median = times[RUNS / 2];
        println!(
            "servers={n} files={FILES} bytes={bytes} targets={} server_blocks={} median_ms={:.1} min_ms={:.1} peak_rss={}",
            counts.0,
            counts.1,
            median.as_secs_f64() * 1000.0,
            times[0].as_secs_f64() * 1000.0,
            peak_rss_kb()
        );
    }
    Ok(())
}
