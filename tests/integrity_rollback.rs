//! A rollback never loses another writer's file, through the binary with a real nginx. The
//! binary stops itself at a known point (the `SAFE_RELOAD_TEST_PAUSE` hook), the test writes as
//! config management would, and lets the run go on; afterwards nginx serves last-good (checked
//! through nginx) and every version is either on disk or in a snapshot the output names.

mod rel_support;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rel_support::*;
use support::{free_port, wait_for};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A server of its own on `addr`, answering "other": what another writer drops in.
fn other_server(addr: SocketAddr) -> String {
    format!("server {{ listen {addr}; location / {{ return 200 \"other\"; }} }}\n")
}

/// A site whose last-good configuration includes `conf.d/*.conf` inside the prefix.
fn site_with_glob() -> (Site, PathBuf) {
    let site = Site::start();
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    site.adopt(&format!(
        "{}\ninclude {}/*.conf;",
        site.good_http(),
        dir.display()
    ));
    (site, dir)
}

#[test]
fn a_file_a_glob_picks_up_during_the_reload_is_moved_into_a_displaced_snapshot() {
    // `verifying`: after the proof, before the recheck that sees the file; `rolling_back`:
    // after that recheck, right before the restore.
    for point in ["verifying", "rolling_back"] {
        let (site, dir) = site_with_glob();
        let good_conf = read(&site.nginx.conf);
        let other_addr = SocketAddr::new(site.addr.ip(), free_port(site.addr.ip()));
        let candidate = format!("{}\ninclude {}/*.conf;", site.bad_http(), dir.display());
        site.nginx.write_http(&candidate);
        let mut run = site.spawn_paused(&["reload", "-y", "--json"], point);
        assert!(
            run.wait_stopped(Duration::from_secs(20)),
            "{point}: never reached"
        );
        let other = dir.join("zz-other.conf");
        std::fs::write(&other, other_server(other_addr)).unwrap();
        run.resume();
        let out = run.finish(Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(3), "{point}: {}", text(&out));
        let doc = json(&out);

        // nginx serves last-good: the site through the good backend, nothing on the address
        // only the other writer's file names.
        assert_eq!(site.answer(), Some((200, "good".into())), "{point}");
        assert!(
            support::http_get(other_addr, "x", "/").is_err(),
            "{point}: nginx loaded the other writer's file"
        );
        assert_eq!(read(&site.nginx.conf), good_conf, "{point}");
        assert!(!other.exists(), "{point}: the file stays in the tree");

        // Its bytes are in a displaced snapshot the output and the report name.
        let displaced = &doc["rollback"]["restore"]["displaced"];
        let saved = displaced["snapshot"]
            .as_str()
            .unwrap_or_else(|| panic!("{point}: no displaced snapshot: {doc:#}"));
        assert!(
            displaced["paths"].to_string().contains("zz-other.conf"),
            "{point}: {doc:#}"
        );
        assert!(doc["notes"].to_string().contains(saved), "{point}: {doc:#}");
        let snap = site.snapshot(saved);
        assert_eq!(snap["meta"]["outcome"], "displaced", "{point}: {snap:#}");
        assert!(
            site.stored(other_server(other_addr).as_bytes()),
            "{point}: the other writer's file is stored"
        );
        assert!(
            site.stored(site.nginx.render(&candidate).as_bytes()),
            "{point}: the candidate is stored"
        );
        assert!(!site.journal_exists(), "{point}");
        assert!(site.temp_files().is_empty(), "{point}");
    }
}

#[test]
fn the_human_output_names_the_snapshot_holding_a_file_added_during_the_reload() {
    let (site, dir) = site_with_glob();
    let other_addr = SocketAddr::new(site.addr.ip(), free_port(site.addr.ip()));
    site.nginx.write_http(&format!(
        "{}\ninclude {}/*.conf;",
        site.bad_http(),
        dir.display()
    ));
    let mut run = site.spawn_paused(&["reload", "-y"], "rolling_back");
    assert!(run.wait_stopped(Duration::from_secs(20)));
    std::fs::write(dir.join("zz-other.conf"), other_server(other_addr)).unwrap();
    run.resume();
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("conf.d/zz-other.conf"), "{all}");
    assert!(all.contains("another writer"), "{all}");
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn a_file_that_does_not_parse_added_during_the_reload_is_moved_into_a_displaced_snapshot() {
    // `verifying`: the recheck after the proof finds a tree that does not load; `rolling_back`:
    // after that recheck, right before the restore.
    for point in ["verifying", "rolling_back"] {
        let (site, dir) = site_with_glob();
        let good_conf = read(&site.nginx.conf);
        let candidate = format!("{}\ninclude {}/*.conf;", site.bad_http(), dir.display());
        site.nginx.write_http(&candidate);
        let mut run = site.spawn_paused(&["reload", "-y", "--json"], point);
        assert!(
            run.wait_stopped(Duration::from_secs(20)),
            "{point}: never reached"
        );
        // Unclosed: neither nginx nor safe-reload's parser can read it.
        let broken = "server { listen 127.0.0.1:1;\n";
        let other = dir.join("zz-other.conf");
        std::fs::write(&other, broken).unwrap();
        run.resume();
        let out = run.finish(Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(3), "{point}: {}", text(&out));
        let doc = json(&out);

        // Last-good loaded and serves again; the broken file is out of the tree.
        assert_eq!(
            site.answer(),
            Some((200, "good".into())),
            "{point}: {doc:#}"
        );
        assert_eq!(read(&site.nginx.conf), good_conf, "{point}");
        assert!(!other.exists(), "{point}: the file stays in the tree");

        // Its bytes are in a displaced snapshot the output names, with the file.
        let displaced = &doc["rollback"]["restore"]["displaced"];
        let saved = displaced["snapshot"]
            .as_str()
            .unwrap_or_else(|| panic!("{point}: no displaced snapshot: {doc:#}"));
        assert!(
            displaced["paths"].to_string().contains("zz-other.conf"),
            "{point}: {doc:#}"
        );
        let notes = doc["notes"].to_string();
        assert!(
            notes.contains(saved) && notes.contains("zz-other.conf"),
            "{point}: {doc:#}"
        );
        let snap = site.snapshot(saved);
        assert_eq!(snap["meta"]["outcome"], "displaced", "{point}: {snap:#}");
        assert!(site.stored(broken.as_bytes()), "{point}: not stored");
        assert!(!site.journal_exists(), "{point}");
        assert!(site.temp_files().is_empty(), "{point}");
    }
}

/// A site whose server lives outside the configuration root (`include OUT/*.conf;`), recorded
/// as last-good, after an earlier good snapshot that proxied to a backend which is gone now:
/// `rollback EARLIER` is refused by the probe.
struct OutsideAfterGone {
    site: Site,
    out: tempfile::TempDir,
    earlier: String,
}

impl OutsideAfterGone {
    fn start() -> OutsideAfterGone {
        let site = Site::start();
        let ip = site.addr.ip();
        let gone = support::HttpBackend::start(SocketAddr::new(ip, 0), "gone");
        site.nginx
            .write_http(&site_http(site.addr, &gone.host_port()));
        let out = site.run(&["reload", "-y"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let earlier = site.last_good_id();
        drop(gone);
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("app.conf"), site.good_http()).unwrap();
        std::fs::write(out.path().join("extra.conf"), "# another app's part\n").unwrap();
        site.adopt(&format!("include {}/*.conf;", out.path().display()));
        OutsideAfterGone { site, out, earlier }
    }
}

#[test]
fn a_refused_rollback_puts_back_the_files_outside_the_root_it_had_moved_out() {
    let o = OutsideAfterGone::start();
    let site = &o.site;
    let conf = read(&site.nginx.conf);
    let app = o.out.path().join("app.conf");
    let extra = o.out.path().join("extra.conf");
    let workers = site.nginx.worker_pids();
    // The earlier snapshot does not include the outside directory: restoring it moves both
    // outside files out, then the probe refuses it and the files from before go back.
    let out = site.run(&["rollback", &o.earlier, "-y", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(json(&out)["outcome"], "refused", "{}", text(&out));
    assert_eq!(read(&app), site.good_http(), "the outside file is back");
    assert_eq!(read(&extra), "# another app's part\n");
    assert_eq!(read(&site.nginx.conf), conf);
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(!site.journal_exists());
    // A later reload finds nothing changed: the tree is last-good.
    let diff = site.run(&["diff", "--json"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
    assert!(
        !json(&diff)["diff"].to_string().contains("app.conf"),
        "{}",
        text(&diff)
    );
}

#[test]
fn rollback_to_a_displaced_snapshot_is_refused_with_exit_2_saying_what_it_holds() {
    let (site, dir) = site_with_glob();
    let other_addr = SocketAddr::new(site.addr.ip(), free_port(site.addr.ip()));
    site.nginx.write_http(&format!(
        "{}\ninclude {}/*.conf;",
        site.bad_http(),
        dir.display()
    ));
    let mut run = site.spawn_paused(&["reload", "-y", "--json"], "rolling_back");
    assert!(run.wait_stopped(Duration::from_secs(20)));
    std::fs::write(dir.join("zz-other.conf"), other_server(other_addr)).unwrap();
    run.resume();
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let saved = json(&out)["rollback"]["restore"]["displaced"]["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no displaced snapshot: {}", text(&out)))
        .to_string();
    let conf = read(&site.nginx.conf);
    let workers = site.nginx.worker_pids();

    let back = site.run(&["rollback", &saved, "-y"]);
    assert_eq!(back.status.code(), Some(2), "{}", text(&back));
    let said = String::from_utf8_lossy(&back.stderr);
    assert!(said.contains(&saved), "{said}");
    assert!(said.contains("another writer"), "{said}");
    assert!(said.contains("never tested"), "{said}");
    // It says where the other writer's bytes are.
    let object = said
        .split_once("(its bytes: ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(path, _)| PathBuf::from(path))
        .unwrap_or_else(|| panic!("no object named: {said}"));
    assert_eq!(read(&object), other_server(other_addr), "{said}");
    // Nothing changed: the tree, nginx, what it serves.
    assert_eq!(read(&site.nginx.conf), conf);
    assert!(!dir.join("zz-other.conf").exists());
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(support::http_get(other_addr, "x", "/").is_err());
    assert!(!site.journal_exists());
}

#[test]
fn recover_after_a_refused_rollback_killed_while_putting_back_restores_the_files_outside_the_root()
{
    let o = OutsideAfterGone::start();
    let site = &o.site;
    let conf = read(&site.nginx.conf);
    let app = o.out.path().join("app.conf");
    let extra = o.out.path().join("extra.conf");
    let workers = site.nginx.worker_pids();
    // The first write is the earlier snapshot's nginx.conf; the outside files are moved out
    // next, the probe refuses, and the second write puts the last-good nginx.conf back: killed
    // there, the outside files are not back yet.
    let mut run = site.spawn_paused(&["rollback", &o.earlier, "-y"], "restore-file");
    assert!(run.wait_stopped(Duration::from_secs(20)), "never restored");
    run.resume();
    assert!(
        wait_for(Duration::from_secs(20), || read(&site.nginx.conf) == conf
            && run.wait_stopped(Duration::from_millis(50))),
        "never put nginx.conf back"
    );
    // The earlier configuration does not read the outside files, and they were there before
    // this rollback: they are left where they are, not moved out.
    assert!(app.exists(), "the outside file was left in place");
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(5));
    assert!(site.journal_exists());

    let out = site.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(read(&site.nginx.conf), conf);
    assert_eq!(read(&app), site.good_http(), "the outside file is back");
    assert_eq!(read(&extra), "# another app's part\n");
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(!site.journal_exists());
    assert!(site.temp_files().is_empty());
}

#[test]
fn recover_moves_out_a_file_that_does_not_parse_added_after_the_kill() {
    let (site, dir) = site_with_glob();
    let good_conf = read(&site.nginx.conf);
    let candidate = format!("{}\ninclude {}/*.conf;", site.bad_http(), dir.display());
    site.nginx.write_http(&candidate);
    let mut run = site.spawn_paused(&["reload", "-y"], "verifying");
    assert!(run.wait_stopped(Duration::from_secs(20)), "never reached");
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(5));
    let broken = "server { listen 127.0.0.1:1;\n";
    let other = dir.join("zz-other.conf");
    std::fs::write(&other, broken).unwrap();

    let out = site.run(&["recover", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(site.answer(), Some((200, "good".into())), "{}", text(&out));
    assert_eq!(read(&site.nginx.conf), good_conf);
    assert!(!other.exists(), "the file stays in the tree");
    assert!(site.stored(broken.as_bytes()), "the broken file is stored");
    // The output names the file and the displaced snapshot holding it.
    let doc = json(&out);
    let notes = doc["notes"].to_string();
    let saved = (site.history()["history"]
        .as_array()
        .cloned()
        .unwrap_or_default())
    .into_iter()
    .find(|s| s["meta"]["outcome"] == "displaced")
    .and_then(|s| s["id"].as_str().map(String::from))
    .unwrap_or_else(|| panic!("no displaced snapshot: {doc:#}"));
    assert!(
        notes.contains("zz-other.conf") && notes.contains(&saved),
        "{doc:#}"
    );
    assert!(!site.journal_exists());
}

/// A change that begins to include files that were on disk before it (a shared snippet
/// outside the configuration root, as Debian's /etc/nginx/uwsgi_params, and a directory a new
/// glob reads) did not add those files: the rollback restores last-good's files and leaves
/// them as they are, since last-good does not read them. It used to "move out" each one as
/// "added by the change", deleting a packaged file other configurations include.
#[test]
fn files_a_rolled_back_change_began_to_include_stay_where_they_were() {
    let site = Site::start();
    let shared = tempfile::tempdir().unwrap();
    let params = shared.path().join("params");
    std::fs::write(&params, "proxy_set_header X-Shared 1;\n").unwrap();
    let extras = shared.path().join("extras");
    std::fs::create_dir_all(&extras).unwrap();
    let extra = extras.join("e1.conf");
    std::fs::write(&extra, "proxy_set_header X-Extra 1;\n").unwrap();
    // Last-good is recorded after they exist, as on a machine where they came with the package:
    // well after, since a file born within a clock tick (20 ms) of the snapshot counts as the
    // change's own (a fast `adopt` took its snapshot within that, and the rollback rightly
    // took them for the change's).
    let born = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.created()).ok();
    let settled = wait_for(std::time::Duration::from_secs(2), || {
        // A file system that keeps no birth time leaves such files anyway.
        [&params, &extra].iter().all(|p| {
            born(p).is_none_or(|b| {
                b.elapsed()
                    .is_ok_and(|e| e > std::time::Duration::from_millis(100))
            })
        })
    });
    assert!(settled, "the shared files' birth times");
    site.adopt(&format!(
        "{}\n# recorded after the shared files",
        site.good_http()
    ));
    let good_conf = read(&site.nginx.conf);

    site.nginx.write_http(&format!(
        "include {};\ninclude {}/*.conf;\n{}",
        params.display(),
        extras.display(),
        site.bad_http()
    ));
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let doc = json(&out);

    assert_eq!(site.answer(), Some((200, "good".into())));
    assert_eq!(read(&site.nginx.conf), good_conf);
    assert_eq!(read(&params), "proxy_set_header X-Shared 1;\n");
    assert_eq!(read(&extra), "proxy_set_header X-Extra 1;\n");
    let restore = &doc["rollback"]["restore"];
    for path in [&params, &extra] {
        let shown = path.display().to_string();
        assert!(
            restore["left"].to_string().contains(&shown),
            "{shown} is not listed as left: {restore:#}"
        );
        assert!(
            !restore["removed"].to_string().contains(&shown),
            "{shown} is listed as removed: {restore:#}"
        );
    }

    // The same change through the text output says so.
    site.nginx.write_http(&format!(
        "include {};\n{}",
        params.display(),
        site.bad_http()
    ));
    let out = site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "left {} as it is (the restored configuration does not read it)",
            params.display()
        )),
        "{}",
        text(&out)
    );
    assert_eq!(read(&params), "proxy_set_header X-Shared 1;\n");
    assert_eq!(site.answer(), Some((200, "good".into())));
}

/// A site whose last-good configuration includes `conf.d/*.conf`, after an earlier good
/// snapshot without that include that proxied to a backend which is gone now: `rollback
/// EARLIER` is refused by the probe, and the files from before it are put back.
fn glob_after_gone() -> (Site, PathBuf, String) {
    let site = Site::start();
    let gone = support::HttpBackend::start(SocketAddr::new(site.addr.ip(), 0), "gone");
    site.nginx
        .write_http(&site_http(site.addr, &gone.host_port()));
    let out = site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let earlier = site.last_good_id();
    drop(gone);
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    site.adopt(&format!(
        "{}\ninclude {}/*.conf;",
        site.good_http(),
        dir.display()
    ));
    (site, dir, earlier)
}

/// The run stopped at its first `restore-file`; let it go on through every later stop until
/// it exits.
fn run_to_the_end(mut run: Proc, within: Duration) -> std::process::Output {
    let exited = wait_for(within, || {
        if run.wait_stopped(Duration::from_millis(20)) {
            run.resume();
        }
        run.0.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "the run never ended");
    run.finish(Duration::from_secs(5))
}

/// An unclosed server another writer drops into conf.d/: neither nginx nor the parser reads it.
const BROKEN: &str = "server { listen 127.0.0.1:1;\n";

#[test]
fn a_refused_rollback_moves_out_a_file_that_does_not_parse_added_while_it_ran() {
    let (site, dir, earlier) = glob_after_gone();
    let conf = read(&site.nginx.conf);
    let workers = site.nginx.worker_pids();
    // The first write is the earlier snapshot's nginx.conf (without the conf.d/ include): the
    // other writer adds its file there, the probe refuses the earlier snapshot, and the files
    // from before go back, whose include picks the broken file up.
    let mut run = site.spawn_paused(&["rollback", &earlier, "-y", "--json"], "restore-file");
    assert!(run.wait_stopped(Duration::from_secs(20)), "never restored");
    let other = dir.join("zz.conf");
    std::fs::write(&other, BROKEN).unwrap();
    run.resume();
    let out = run_to_the_end(run, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["outcome"], "refused", "{doc:#}");

    // nginx was never signalled and serves what it served; the files from before are back and
    // the broken file is out of the tree, which loads again.
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert_eq!(site.answer(), Some((200, "good".into())), "{doc:#}");
    assert_eq!(read(&site.nginx.conf), conf);
    assert!(!other.exists(), "the file stays in the tree: {doc:#}");
    let diff = site.run(&["diff", "--json"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));

    // Its bytes are in a displaced snapshot the output names, with the file.
    assert!(site.stored(BROKEN.as_bytes()), "not stored");
    let saved = displaced_id(&site);
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains(&saved) && notes.contains("zz.conf"),
        "{doc:#}"
    );
    assert!(!site.journal_exists());
    assert!(site.temp_files().is_empty());
}

#[test]
fn recover_after_a_rollback_killed_while_restoring_moves_out_a_file_that_does_not_parse() {
    let (site, dir, earlier) = glob_after_gone();
    let conf = read(&site.nginx.conf);
    let workers = site.nginx.worker_pids();
    // Killed right after it wrote the earlier snapshot's nginx.conf (phase restoring); the
    // other writer's file is added then. recover puts the files from before back, whose
    // include picks the broken file up.
    let mut run = site.spawn_paused(&["rollback", &earlier, "-y"], "restore-file");
    assert!(run.wait_stopped(Duration::from_secs(20)), "never restored");
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(5));
    assert!(site.journal_exists());
    let other = dir.join("zz.conf");
    std::fs::write(&other, BROKEN).unwrap();

    let out = site.run(&["recover", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert_eq!(site.answer(), Some((200, "good".into())), "{doc:#}");
    assert_eq!(read(&site.nginx.conf), conf);
    assert!(!other.exists(), "the file stays in the tree: {doc:#}");
    let diff = site.run(&["diff", "--json"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));

    assert!(site.stored(BROKEN.as_bytes()), "not stored");
    let saved = displaced_id(&site);
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains(&saved) && notes.contains("zz.conf"),
        "{doc:#}"
    );
    assert!(!site.journal_exists());
    assert!(site.temp_files().is_empty());
}

/// The one displaced snapshot in `history`.
fn displaced_id(site: &Site) -> String {
    let history = site.history();
    let displaced: Vec<String> = (history["history"].as_array().cloned().unwrap_or_default())
        .into_iter()
        .filter(|s| s["meta"]["outcome"] == "displaced")
        .filter_map(|s| s["id"].as_str().map(String::from))
        .collect();
    assert_eq!(displaced.len(), 1, "{history:#}");
    displaced[0].clone()
}

/// A file outside the configuration root that last-good reads through a glob, deleted along
/// with a change that is rolled back: the glob matches nothing on disk, but last-good read the
/// file, so the rollback writes it back (a missing file overwrites nobody's version) and nginx
/// serves its server again. It used to say "live and verified" with that server gone.
#[test]
fn a_deleted_file_outside_the_root_is_written_back_by_the_rollback() {
    let site = Site::start();
    let out = tempfile::tempdir().unwrap();
    let api_addr = SocketAddr::new(site.addr.ip(), free_port(site.addr.ip()));
    let api = out.path().join("api.conf");
    let api_server =
        format!("server {{ listen {api_addr}; location / {{ return 200 \"api\"; }} }}\n");
    std::fs::write(&api, &api_server).unwrap();
    let glob = format!("include {}/*.conf;", out.path().display());
    site.adopt(&format!("{}\n{glob}", site.good_http()));
    assert_eq!(
        support::http_get(api_addr, "x", "/").expect("GET api").1,
        "api"
    );

    std::fs::remove_file(&api).unwrap();
    site.nginx
        .write_http(&format!("{}\n{glob}", site.bad_http()));
    let run = site.run(&["reload", "-y", "--json"]);
    assert_eq!(run.status.code(), Some(3), "{}", text(&run));
    assert_eq!(read(&api), api_server, "the outside file is back");
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert_eq!(
        support::http_get(api_addr, "x", "/").expect("GET api").1,
        "api",
        "nginx serves the outside file's server again"
    );
    let diff = site.run(&["diff"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
}

#[test]
fn rollback_puts_last_good_back_over_a_tree_that_a_hand_edit_broke() {
    let (site, dir) = site_with_glob();
    let good = site.last_good_id();
    let conf = read(&site.nginx.conf);
    // Broken by hand, outside safe-reload: an unclosed server in conf.d/ and a main file that
    // does not parse. nginx still runs last-good; the operator wants it back on disk.
    let broken = dir.join("new.conf");
    std::fs::write(&broken, BROKEN).unwrap();
    let bad_main = format!("{conf}\nevents {{\n");
    std::fs::write(&site.nginx.conf, &bad_main).unwrap();

    let out = site.run(&["rollback", &good, "-y", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["outcome"], "reloaded", "{doc:#}");
    // The note names the snapshot that keeps the hand-edited files.
    let kept = (site.history()["history"].as_array().unwrap().iter())
        .find(|s| s["meta"]["outcome"] == "replaced")
        .map(|s| s["id"].as_str().unwrap().to_string())
        .expect("a snapshot of the files from before");
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains("does not load") && notes.contains(&kept),
        "{doc:#}"
    );

    // The files are last-good's again and the tree loads; nginx serves the site.
    assert_eq!(read(&site.nginx.conf), conf);
    assert!(!broken.exists(), "the broken file stays in the tree");
    let diff = site.run(&["diff", "--json"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
    assert_eq!(site.answer(), Some((200, "good".into())));
    // Both hand-edited versions are kept in the state directory.
    assert!(
        site.stored(BROKEN.as_bytes()),
        "the broken file's bytes are lost"
    );
    assert!(
        site.stored(bad_main.as_bytes()),
        "the broken main file is lost"
    );
    assert!(!site.journal_exists());
}

/// `rollback` with no id, after a hand edit that was never reloaded: the files go back to the
/// last good configuration, the one nginx runs, not to the good one before it.
#[test]
fn rollback_without_an_id_undoes_a_hand_edit_back_to_last_good() {
    let (site, dir) = site_with_glob();
    let good = site.last_good_id();
    let conf = read(&site.nginx.conf);
    let broken = dir.join("new.conf");
    std::fs::write(&broken, BROKEN).unwrap();

    let out = site.run(&["rollback", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json(&out);
    assert!(doc["notes"].to_string().contains(&good), "{doc:#}");
    assert_eq!(read(&site.nginx.conf), conf, "not last-good's nginx.conf");
    assert!(!broken.exists());
    assert!(site.stored(BROKEN.as_bytes()));
    assert_eq!(site.answer(), Some((200, "good".into())));
}

/// `ln -s ../sites-available/new sites-enabled/new` made before the file: a dangling link a
/// glob matches keeps the tree from loading. `status` still finds nginx (it said "unknown"),
/// and `rollback` removes the link and reloads last-good, keeping the link in a snapshot (it
/// stopped with "failed to canonicalize path" and a journal that blocked every later run).
#[test]
fn rollback_removes_a_dangling_link_a_glob_matches_and_status_still_finds_nginx() {
    let (site, dir) = site_with_glob();
    let good = site.last_good_id();
    let link = dir.join("new.conf");
    std::os::unix::fs::symlink("../sites-available/new.conf", &link).unwrap();

    let (code, doc) = site.status();
    assert_eq!(code, Some(1), "{doc:#}");
    assert!(doc["status"]["master_pid"].is_number(), "{doc:#}");
    let out = site.run(&["check"]);
    assert!(
        text(&out).contains("(a symlink to ../sites-available/new.conf, which does not exist)"),
        "{}",
        text(&out)
    );

    let out = site.run(&["rollback", &good, "-y", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out)["outcome"], "reloaded", "{}", text(&out));
    assert!(
        link.symlink_metadata().is_err(),
        "the dangling link is gone"
    );
    assert!(!site.journal_exists());
    let kept = (site.history()["history"].as_array().unwrap().iter())
        .find(|s| s["meta"]["outcome"] == "replaced")
        .map(|s| s["files"].to_string())
        .expect("a snapshot of the files from before");
    assert!(kept.contains("new.conf"), "{kept}");
    assert_eq!(site.answer(), Some((200, "good".into())));
    let (code, doc) = site.status();
    assert_eq!(code, Some(0), "{doc:#}");
}
