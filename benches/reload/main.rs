//! Reload benchmark: for each size (100, 1,000, 10,000 servers; `BENCH_SIZES=100,1000` to
//! choose) it generates a tree on loopback with real backends, starts a real nginx in a private
//! prefix, and alternates the unsafe manual sequence (`nginx -t && nginx -s reload`, timed until
//! new workers serve and old ones stop accepting) with `safe-reload -y` (a file changed before
//! each run), then prints medians and their ratio, our parse time, safe-reload's peak memory,
//! when each step ran against `nginx -t`, one change touching a fifth of the servers, one
//! rollback and the client-visible failures of each bad-change class. `scripts/bench.sh` runs
//! it and adds crossplane's parse time and `safe-reload targets --json` as a whole process.
//!
//! Environment: `BENCH_SIZES`, `BENCH_ITERS` (iterations per size; default 7, 5 and 2),
//! `BENCH_DIR` (where the trees go and stay), `BENCH_WORKERS` (worker_processes, default 1).

#![allow(clippy::print_stdout)]

mod backend;
mod client;
mod run;
mod tree;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use safe_reload::conf::{load, servers, targets, LoadOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Our parse plus target and server extraction, median of `runs`, in ms.
fn parse_ms(conf: &Path, runs: usize) -> Res<f64> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let cfg = load(conf, &LoadOptions::default())?;
        let tg = targets::extract(&cfg);
        let sv = servers::extract(&cfg);
        times.push(ms(t.elapsed()));
        std::hint::black_box((tg, sv));
    }
    Ok(median(times))
}

struct SizeResult {
    unsafe_ms: Vec<f64>,
    test_ms: Vec<f64>,
    safe_ms: Vec<f64>,
    peak_kb: u64,
    shadow_peak_kb: u64,
    json_ms: f64,
    json_peak_kb: u64,
    steps: Vec<(&'static str, Vec<f64>)>,
}

const STEPS: [&str; 11] = [
    "parse", "nginx -t", "probe", "diff", "impact", "shadow", "baseline", "snapshot", "recheck",
    "reload", "verify",
];

/// The verification window the runs use (the default: the bench sets none).
const WINDOW_MS: f64 = 3000.0;

fn bench_size(bin: &Path, base: &Path, n: usize, iters: usize, backends: &[SocketAddr]) -> Res<()> {
    let workers = env_list("BENCH_WORKERS", &[1])[0];
    let ip = IpAddr::V4(Ipv4Addr::new(127, 93, (n % 250) as u8, 1));
    let port = TcpListener::bind(SocketAddr::new(ip, 0))?
        .local_addr()?
        .port();
    let tree = tree::generate(
        &base.join(n.to_string()),
        n,
        backends,
        SocketAddr::new(ip, port),
        workers,
    )?;
    let parse = parse_ms(&tree.conf, 5)?;
    let nginx = run::Nginx::start(&tree, workers)?;
    let init = run::safe_reload(bin, &tree, &["init"])?;
    if init.code != Some(0) {
        return Err(format!("safe-reload init exited {:?}: {}", init.code, init.report).into());
    }
    // `BENCH_SAFE_FLAGS="--no-shadow"`: extra flags for the timed safe runs (to compare).
    let extra: Vec<String> = std::env::var("BENCH_SAFE_FLAGS")
        .ok()
        .and_then(|f| shlex::split(&f))
        .unwrap_or_default();
    let mut r = SizeResult {
        unsafe_ms: Vec::new(),
        test_ms: Vec::new(),
        safe_ms: Vec::new(),
        peak_kb: 0,
        shadow_peak_kb: 0,
        json_ms: 0.0,
        json_peak_kb: 0,
        steps: STEPS.iter().map(|s| (*s, Vec::new())).collect(),
    };
    for i in 0..iters {
        // Alternate which goes first so neither always runs on a freshly settled machine.
        for safe_first in [i % 2 == 1, i % 2 == 0] {
            if !run::wait_for(Duration::from_secs(60), || nginx.settled()) {
                return Err("old workers did not leave between runs".into());
            }
            if safe_first {
                tree.revise(i + 1)?;
                let mut args = vec!["-y"];
                args.extend(extra.iter().map(String::as_str));
                let s = run::safe_reload(bin, &tree, &args)?;
                if s.code != Some(0) {
                    return Err(format!("safe-reload exited {:?}: {}", s.code, s.report).into());
                }
                r.safe_ms.push(ms(s.wall));
                r.peak_kb = r.peak_kb.max(s.peak_kb);
                r.shadow_peak_kb = r.shadow_peak_kb.max(s.shadow_peak_kb);
            } else {
                let (total, test) = run::unsafe_manual(&tree, &nginx)?;
                r.unsafe_ms.push(ms(total));
                r.test_ms.push(ms(test));
            }
        }
    }
    // Step times come from a JSON report; writing one (every reference of every target) costs
    // time and memory a plain run does not pay, so it is an extra run outside the medians.
    if !run::wait_for(Duration::from_secs(60), || nginx.settled()) {
        return Err("old workers did not leave before the breakdown run".into());
    }
    tree.revise(iters + 1)?;
    let s = run::safe_reload(bin, &tree, &["-y", "--json"])?;
    for (name, v) in &mut r.steps {
        v.extend(run::step_ms(&s.report, name));
    }
    r.json_ms = ms(s.wall);
    r.json_peak_kb = s.peak_kb;
    let sh = &s.report["shadow"];
    println!(
        "servers={n} one --json run: shadow state={} spawn_ms={} ready_ms={} elapsed_ms={} checks={}",
        sh["state"],
        sh["spawn_ms"],
        sh["ready_ms"],
        sh["elapsed_ms"],
        sh["checks"].as_array().map_or(0, Vec::len)
    );
    println!("servers={n} one --json run: {}", timeline(&s.report));
    report(n, &tree, parse, &r);
    // Each of these starts from a settled nginx and writes its own change, so one that fails
    // is said and the others still run.
    let said = |what: &str, res: Res<()>| {
        if let Err(e) = res {
            println!("servers={n} {what}: error: {e}");
        }
    };
    said(
        "one server",
        one_server(bin, &tree, &nginx, n, iters, &extra),
    );
    said("wide change", wide_change(bin, &tree, &nginx, n));
    said("rollback", rollback(bin, &tree, &nginx));
    if std::env::var("BENCH_CLIENT").as_deref() != Ok("0") {
        said(
            "client-visible",
            client_visible(bin, &tree, &nginx, backends[0]),
        );
    }
    Ok(())
}

/// Client-visible failures: a client loop through the broken site during `safe-reload -y` of
/// a bad change of each class, and how many of its requests got something other than 200, for
/// how long. The classes the shadow (or a probe) catches before the reload must show 0; the
/// production-only one (a target from `$server_port`) is caught after the reload and rolled
/// back, so it shows the window from the reload to the rollback.
fn client_visible(bin: &Path, tree: &tree::Tree, nginx: &run::Nginx, good: SocketAddr) -> Res<()> {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 94, 0, 2));
    let close = backend::start_bad(ip)?;
    let answers_502 = backend::start_502(ip)?;
    type Change<'a> = (&'a str, Box<dyn Fn() -> std::io::Result<()> + 'a>);
    let classes: [Change; 3] = [
        ("accepts_and_closes", Box::new(|| tree.break_server0(close))),
        ("answers_502", Box::new(|| tree.break_server0(answers_502))),
        (
            "production_only_server_port",
            Box::new(|| tree.break_by_port(good, answers_502)),
        ),
    ];
    for (class, change) in classes {
        if !run::wait_for(Duration::from_secs(60), || nginx.settled()) {
            return Err("workers did not settle before the client-visible run".into());
        }
        // Start from the good configuration: the broken server's name then reaches the
        // default server, which answers 200.
        tree.revise(0)?;
        let s = run::safe_reload(bin, tree, &["-y", "--force"])?;
        if s.code != Some(0) {
            return Err(format!("the good configuration did not reload ({:?})", s.code).into());
        }
        if !run::wait_for(Duration::from_secs(60), || nginx.settled()) {
            return Err("workers did not settle after restoring the good configuration".into());
        }
        change()?;
        let clients = client::ClientLoop::start(tree.listen, "broken.bench.test");
        std::thread::sleep(Duration::from_millis(50));
        let s = run::safe_reload(bin, tree, &["-y", "--json"])?;
        std::thread::sleep(Duration::from_millis(50));
        let seen = clients.stop();
        let shadow = s.report["shadow"]["state"]
            .as_str()
            .unwrap_or("none")
            .to_string();
        // The reloads of the run (SIGHUP to proven): the forward one and, after a rollback, the
        // rollback's, which ends the window clients see; its target is that reload + 300 ms.
        let reloads: Vec<f64> = (s.report["steps"].as_array().cloned().unwrap_or_default())
            .iter()
            .filter(|st| st["name"] == "reload")
            .filter_map(|st| st["elapsed_ms"].as_f64())
            .collect();
        let target = match reloads.as_slice() {
            [_, back, ..] => format!("{:.1}", back + 300.0),
            _ => "0".into(),
        };
        println!(
            "servers={} client-visible: class={class} exit={:?} shadow={shadow} requests={} \
             non_200={} non_200_window_ms={:.1} window_target_ms={target} reloads_ms={reloads:?} \
             run_ms={:.1} safe_peak_rss_kb={} shadow_peak_rss_kb={}",
            tree_servers(tree),
            s.code,
            seen.requests,
            seen.bad,
            ms(seen.window),
            ms(s.wall),
            s.peak_kb,
            s.shadow_peak_kb,
        );
    }
    tree.revise(0)?;
    Ok(())
}

fn report(n: usize, tree: &tree::Tree, parse: f64, r: &SizeResult) {
    let (u, s) = (median(r.unsafe_ms.clone()), median(r.safe_ms.clone()));
    // Each iteration runs both sequences back to back, so its own ratio is taken on the same
    // machine state; on a shared machine whose speed drifts over minutes, the median of these is
    // steadier than the ratio of the two medians, which sorts each list on its own.
    let paired = median(
        (r.safe_ms.iter().zip(&r.unsafe_ms))
            .map(|(s, u)| s / u)
            .collect(),
    );
    let limit_kb = tree.bytes * 4 / 1024 + 30 * 1024;
    println!(
        "servers={n} upstreams={} config_bytes={} iterations={} unsafe_median_ms={u:.1} \
         unsafe_nginx_t_median_ms={:.1} safe_median_ms={s:.1} ratio={:.2} \
         paired_ratio={paired:.2} parse_ms={parse:.1} safe_peak_rss_kb={} peak_limit_kb={limit_kb}",
        2 * n,
        tree.bytes,
        r.safe_ms.len(),
        median(r.test_ms.clone()),
        s / u,
        r.peak_kb,
    );
    println!(
        "servers={n} shadow: peak_rss_kb={} (the shadow nginx master, beside safe-reload's own)",
        r.shadow_peak_kb
    );
    let steps: Vec<String> = r
        .steps
        .iter()
        .map(|(name, v)| {
            format!(
                "{}={:.1}",
                name.replace(' ', "_").replace('-', ""),
                median(v.clone())
            )
        })
        .collect();
    println!(
        "servers={n} one --json run: wall_ms={:.1} peak_rss_kb={} steps_ms: {}",
        r.json_ms,
        r.json_peak_kb,
        steps.join(" ")
    );
    println!(
        "servers={n} runs_ms: unsafe={:?} safe={:?}",
        r.unsafe_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
        r.safe_ms.iter().map(|v| v.round()).collect::<Vec<_>>()
    );
}

/// When each step ran against `nginx -t`, from the report's `started_ms` and `elapsed_ms`:
/// `name=START+ELAPSED` and, for a step that is not `nginx -t` itself, the part of it outside
/// `nginx -t`'s interval (`out=0.0`: it ran alongside and added no wall time of its own).
fn timeline(report: &serde_json::Value) -> String {
    let steps = report["steps"].as_array().cloned().unwrap_or_default();
    let span = |st: &serde_json::Value| -> Option<(f64, f64)> {
        let at = st["started_ms"].as_f64()?;
        Some((at, at + st["elapsed_ms"].as_f64()?))
    };
    let test = steps
        .iter()
        .find(|st| st["name"] == "nginx -t")
        .and_then(span);
    let mut out = Vec::new();
    for st in &steps {
        let name = st["name"].as_str().unwrap_or("?").replace(' ', "_");
        let Some((a, b)) = span(st) else {
            out.push(format!("{name}=no_started_ms"));
            continue;
        };
        let mut line = format!("{name}={a:.1}+{:.1}", b - a);
        if let (Some((ta, tb)), false) = (test, name == "nginx_-t") {
            let inside = (b.min(tb) - a.max(ta)).max(0.0);
            line.push_str(&format!("(out={:.1})", (b - a) - inside));
        }
        out.push(line);
    }
    format!("timeline_ms: {}", out.join(" "))
}

/// A change to one server (the others' checks are not needed, and the shadow has one server
/// to check), timed against the unsafe sequence as the main figures are, alternating which
/// goes first: `ratio_one_server` (and its paired ratio). The server is recorded in last-good
/// first, so each timed run changes it; the tree is put back and reloaded afterwards.
fn one_server(
    bin: &Path,
    tree: &tree::Tree,
    nginx: &run::Nginx,
    n: usize,
    iters: usize,
    extra: &[String],
) -> Res<()> {
    let settle = || -> Res<()> {
        match run::wait_for(Duration::from_secs(60), || nginx.settled()) {
            true => Ok(()),
            false => Err("old workers did not leave between one-server runs".into()),
        }
    };
    let safe = |args: &[&str]| -> Res<run::SafeRun> {
        let mut all = args.to_vec();
        all.extend(extra.iter().map(String::as_str));
        let s = run::safe_reload(bin, tree, &all)?;
        match s.code {
            Some(0) => Ok(s),
            _ => Err(format!("a one-server change did not reload: {}", gist(&s)).into()),
        }
    };
    settle()?;
    tree.revise_one(0)?;
    safe(&["-y"])?;
    let (mut safe_ms, mut unsafe_ms) = (Vec::new(), Vec::new());
    for i in 0..iters {
        for safe_first in [i % 2 == 1, i % 2 == 0] {
            settle()?;
            if safe_first {
                tree.revise_one(i + 1)?;
                safe_ms.push(ms(safe(&["-y"])?.wall));
            } else {
                unsafe_ms.push(ms(run::unsafe_manual(tree, nginx)?.0));
            }
        }
    }
    settle()?;
    tree.revise_one(iters + 1)?;
    let s = safe(&["-y", "--json"])?;
    let r = &s.report;
    let (u, sm) = (median(unsafe_ms.clone()), median(safe_ms.clone()));
    let paired = median(safe_ms.iter().zip(&unsafe_ms).map(|(s, u)| s / u).collect());
    println!(
        "servers={n} one server: affected={} checks={} shadow={} shadow_checks={} \
         unsafe_median_ms={u:.1} safe_median_ms={sm:.1} ratio_one_server={:.2} \
         paired_ratio_one_server={paired:.2} runs_ms: unsafe={:?} safe={:?}",
        r["impact"]["affected"].as_array().map_or(0, Vec::len),
        r["health"]["results"].as_array().map_or(0, Vec::len),
        r["shadow"]["state"],
        r["shadow"]["checks"].as_array().map_or(0, Vec::len),
        sm / u,
        unsafe_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
        safe_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
    );
    println!("servers={n} one server: {}", timeline(r));
    settle()?;
    tree.revise(0)?;
    safe(&["-y"])?;
    Ok(())
}

/// A harmless change to the snippet a fifth of the servers include (2,000 of 10,000): every
/// one of them is affected, the checks are bounded per round, and the report says how many
/// were checked and how many not, and whether verification fitted the window.
fn wide_change(bin: &Path, tree: &tree::Tree, nginx: &run::Nginx, n: usize) -> Res<()> {
    if !run::wait_for(Duration::from_secs(60), || nginx.settled()) {
        return Err("workers did not settle before the wide change".into());
    }
    tree.revise_shared(1)?;
    let s = run::safe_reload(bin, tree, &["-y", "--json"])?;
    let r = &s.report;
    let len = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    let results = r["health"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut checked: Vec<&str> = results
        .iter()
        .filter_map(|c| c["server"].as_str())
        .collect();
    checked.sort_unstable();
    checked.dedup();
    let not_checked = r["health"]["not_checked"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let servers_not_checked = not_checked.iter().filter(|u| u["what"] == "server").count();
    let verify = run::step_ms(r, "verify").unwrap_or(f64::NAN);
    println!(
        "servers={n} wide change: expected_affected={} affected={} of={} checks={} \
         servers_checked={} servers_not_checked={servers_not_checked} not_checked_entries={} \
         coverage_verified={} coverage_not_verified={} rounds={} verify_ms={verify:.1} \
         window_ms={WINDOW_MS} within_window={} baseline_checks={} shadow={} shadow_checks={} \
         exit={:?} outcome={} wall_ms={:.1} peak_rss_kb={} shadow_peak_rss_kb={}",
        tree::Tree::shared_servers(n),
        len(&r["impact"]["affected"]),
        r["impact"]["total"],
        results.len(),
        checked.len(),
        not_checked.len(),
        r["coverage"]["verified"],
        len(&r["coverage"]["not_verified"]),
        r["health"]["rounds"],
        verify <= WINDOW_MS,
        len(&r["baseline"]["results"]),
        r["shadow"]["state"],
        len(&r["shadow"]["checks"]),
        s.code,
        r["outcome"],
        ms(s.wall),
        s.peak_kb,
        s.shadow_peak_kb,
    );
    println!("servers={n} wide change: {}", timeline(r));
    if s.code != Some(0) {
        return Err(format!("the wide change did not reload: {}", gist(&s)).into());
    }
    Ok(())
}

/// What a run that went another way than expected says, in a line: its exit, outcome,
/// problems and notes (not the whole report, whose targets run to megabytes).
fn gist(s: &run::SafeRun) -> String {
    let r = &s.report;
    let texts = |key: &str, field: Option<&str>| -> Vec<String> {
        (r[key].as_array().cloned().unwrap_or_default().iter())
            .map(|v| match field {
                Some(f) => v[f].as_str().unwrap_or("?").to_string(),
                None => v.as_str().unwrap_or("?").to_string(),
            })
            .collect()
    };
    format!(
        "exit {:?}, outcome {}, problems {:?}, notes {:?}",
        s.code,
        r["outcome"],
        texts("problems", Some("message")),
        texts("notes", None)
    )
}

/// One failing change that passes `nginx -t` and every probe but answers 502: the rollback's
/// own time (from the decision to roll back to the old configuration verified live, as the
/// report records it) against the target, one master reload + 200 ms (a rollback runs no
/// `nginx -t` of its own), taking the rollback's reload (SIGHUP to proven) from the same report.
fn rollback(bin: &Path, tree: &tree::Tree, nginx: &run::Nginx) -> Res<()> {
    // Answers 502 itself: it passes the HTTP probe (any status line), which refuses a backend
    // that accepts and closes before the reload.
    let bad = backend::start_502(IpAddr::V4(Ipv4Addr::new(127, 94, 0, 1)))?;
    if !run::wait_for(Duration::from_secs(60), || nginx.settled()) {
        return Err("workers did not settle before the rollback run".into());
    }
    tree.break_server0(bad)?;
    // The rollback's own cost: without the shadow, which would refuse this change before it.
    let s = run::safe_reload(bin, tree, &["-y", "--json", "--no-shadow"])?;
    let rb = &s.report["rollback"];
    let steps = s.report["steps"].as_array().cloned().unwrap_or_default();
    // The last `reload` step is the rollback's.
    let reload = steps
        .iter()
        .rev()
        .find(|st| st["name"] == "reload")
        .and_then(|st| st["elapsed_ms"].as_f64());
    // A rollback's own `nginx -t`, where there is one (there is none since it reloads once).
    let test = rb["test"]["elapsed_ms"].as_f64().unwrap_or(0.0);
    let (Some(total), Some(reload)) = (rb["elapsed_ms"].as_f64(), reload) else {
        return Err(format!("no rollback in the report: {}", gist(&s)).into());
    };
    println!(
        "servers={} rollback: exit={:?} rollback_ms={total:.1} target_ms={:.1} \
         (nginx_t={test:.1} + reload={reload:.1} + 200) overhead_ms={:.1} peak_rss_kb={} steps={}",
        tree_servers(tree),
        s.code,
        test + reload + 200.0,
        total - test - reload,
        s.peak_kb,
        steps
            .iter()
            .map(|st| format!(
                "{}:{}",
                st["name"].as_str().unwrap_or("?"),
                st["elapsed_ms"]
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(())
}

fn tree_servers(tree: &tree::Tree) -> String {
    tree.prefix
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn main() -> Res<()> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_safe-reload"));
    let sizes = env_list("BENCH_SIZES", &[100, 1000, 10000]);
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("safe-reload-bench"));
    let backends = backend::start_good(IpAddr::V4(Ipv4Addr::new(127, 92, 0, 1)), 4)?;
    for n in sizes {
        let default_iters = match n {
            0..=500 => 7,
            501..=5000 => 5,
            _ => 2,
        };
        let iters = env_list("BENCH_ITERS", &[default_iters])[0];
        bench_size(&bin, &base, n, iters, &backends)?;
    }
    Ok(())
}
