//! Links and files outside the configuration root, through the binary with a real nginx:
//! `edit` through a Debian `sites-enabled` symlink keeps the link after a success, a refusal
//! and a rollback, with the right content behind it; a hard-linked file is refused before
//! anything changes, both names given; an `include` outside the root is snapshotted, shown by
//! `diff` and `history`, and put back by a rollback (exit 3, not 4), also behind a symlink
//! leading out of the root (Debian's `modules-enabled` layout).

mod rel_support;
mod support;

use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use rel_support::*;
use support::{free_port, http_get};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Debian layout: `sites-enabled/app -> ../sites-available/app`, included by a glob.
struct Debian {
    site: Site,
    available: PathBuf,
    enabled: PathBuf,
}

impl Debian {
    fn start() -> Debian {
        let site = Site::start();
        let available = site.nginx.prefix.join("sites-available/app");
        let enabled = site.nginx.prefix.join("sites-enabled/app");
        std::fs::create_dir_all(available.parent().unwrap()).unwrap();
        std::fs::create_dir_all(enabled.parent().unwrap()).unwrap();
        std::fs::write(&available, site.good_http()).unwrap();
        symlink("../sites-available/app", &enabled).unwrap();
        let prefix = site.nginx.prefix.display().to_string();
        site.adopt(&format!("include {prefix}/sites-enabled/*;"));
        Debian {
            site,
            available,
            enabled,
        }
    }

    fn edit(&self, from: &str, to: &str) -> std::process::Output {
        self.site
            .cmd(&["edit", &self.enabled.display().to_string(), "--json"])
            .env("EDITOR", format!("sed -i s|{from}|{to}|"))
            .output()
            .expect("run edit")
    }

    fn assert_link_kept(&self, what: &str) {
        let meta = std::fs::symlink_metadata(&self.enabled).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "{what}: the link was replaced"
        );
        assert_eq!(
            std::fs::read_link(&self.enabled).unwrap(),
            Path::new("../sites-available/app"),
            "{what}"
        );
    }
}

#[test]
fn edit_through_a_sites_enabled_link_keeps_the_link_after_success_refusal_and_rollback() {
    let d = Debian::start();
    let good = d.site.good.host_port();

    // Refused by nginx -t: the link stays, the file behind it is as it was.
    let out = d.edit("proxy_pass", "proxy_pazz");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    d.assert_link_kept("refusal");
    assert_eq!(read(&d.available), d.site.good_http(), "refusal");

    // Rolled back after a 502: the same.
    let out = d.edit(&good, &d.site.bad.addr.to_string());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    d.assert_link_kept("rollback");
    assert_eq!(read(&d.available), d.site.good_http(), "rollback");
    assert_eq!(d.site.answer(), Some((200, "good".into())));

    // A good edit: written behind the link, the link kept, live.
    let out = d.edit("}$", "}#edited");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    d.assert_link_kept("success");
    assert!(read(&d.available).ends_with("}#edited"), "success");
    assert_eq!(d.site.answer(), Some((200, "good".into())));
}

/// Regression: an edit of `sites-available/app` through `sites-enabled/app -> ../sites-available/app`
/// was counted as two changed files (the link and its target) by `diff`, the reload report and
/// `history`. The link did not change: one file changed, the one whose bytes did, and `diff`
/// says nginx reads it through the link. Pointing the link elsewhere stays a change of the link.
#[test]
fn an_edit_through_a_sites_enabled_link_counts_as_one_changed_file() {
    let d = Debian::start();
    std::fs::write(&d.available, format!("{}\n# edited\n", d.site.good_http())).unwrap();

    let out = d.site.run(&["diff", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let files = json(&out)["diff"]["files"].clone();
    assert_eq!(files.as_array().map(Vec::len), Some(1), "{files:#}");
    assert_eq!(files[0]["path"], "sites-available/app", "{files:#}");
    assert_eq!(files[0]["change"], "modified", "{files:#}");
    assert_eq!(files[0]["through"][0], "sites-enabled/app", "{files:#}");
    let out = d.site.run(&["diff"]);
    let shown = text(&out);
    assert!(shown.contains("1 file changed: +2 -1"), "{shown}");
    assert!(
        shown.contains("sites-available/app (nginx reads it through sites-enabled/app)"),
        "{shown}"
    );

    let out = d.site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(
        report["diff"]["files"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    let snap = d.site.snapshot(&d.site.last_good_id());
    assert_eq!(
        snap["meta"]["changed_files"],
        serde_json::json!(["sites-available/app"])
    );
    assert_eq!(d.site.answer(), Some((200, "good".into())));
    d.assert_link_kept("edit through the link");

    // Retargeting the link is a change of the link (and of the files it brings along).
    let other = d.available.with_file_name("other");
    std::fs::write(&other, format!("{}\n# other\n", d.site.good_http())).unwrap();
    std::fs::remove_file(&d.enabled).unwrap();
    symlink("../sites-available/other", &d.enabled).unwrap();
    let out = d.site.run(&["diff", "--json"]);
    let paths: Vec<String> = (json(&out)["diff"]["files"].as_array().into_iter().flatten())
        .map(|f| format!("{} {}", f["path"].as_str().unwrap_or(""), f["change"]))
        .collect();
    assert!(
        paths.contains(&"sites-enabled/app \"modified\"".to_string()),
        "{paths:?}"
    );
}

#[test]
fn a_hard_linked_file_is_refused_before_anything_changes_naming_both_paths() {
    let d = Debian::start();
    std::fs::remove_file(&d.enabled).unwrap();
    std::fs::hard_link(&d.available, &d.enabled).unwrap();
    std::fs::write(&d.available, format!("{}\n# change", d.site.good_http())).unwrap();
    let workers = d.site.nginx.worker_pids();
    let out = d.site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems = json(&out)["problems"].to_string();
    for name in [&d.available, &d.enabled] {
        assert!(
            problems.contains(&name.display().to_string()),
            "{} not named: {problems}",
            name.display()
        );
    }
    assert!(problems.contains("hard-linked"), "{problems}");
    assert_eq!(d.site.nginx.worker_pids(), workers, "nginx was signalled");
    assert!(!d.site.journal_exists());

    // edit refuses before the editor runs: the file is not touched.
    let before = read(&d.available);
    let out = d.edit("location", "locatio");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(json(&out)["problems"].to_string().contains("hard-linked"));
    assert_eq!(read(&d.available), before);
}

/// A site whose server lives outside the configuration root, included by absolute path.
struct Outside {
    site: Site,
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl Outside {
    fn start() -> Outside {
        let site = Site::start();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.conf");
        std::fs::write(&file, site.good_http()).unwrap();
        site.adopt(&format!("include {}/*.conf;", dir.path().display()));
        Outside { site, dir, file }
    }
}

#[test]
fn an_include_outside_the_root_is_snapshotted_shown_and_rolled_back_with_exit_3() {
    let o = Outside::start();
    let site = &o.site;
    let last_good = std::fs::read_to_string(site.state.path().join("last-good")).unwrap();
    let snap = site.snapshot(last_good.trim());
    let external = snap["external"].to_string();
    assert!(
        external.contains(&o.file.display().to_string()),
        "outside file recorded by absolute path: {snap:#}"
    );
    // init and history count the same files.
    let init = site.run(&["init", "--json"]);
    assert_eq!(init.status.code(), Some(0), "{}", text(&init));
    let doc = json(&init);
    let id = doc["snapshot"].as_str().unwrap();
    let snap = site.snapshot(id);
    let count =
        snap["files"].as_array().unwrap().len() + snap["external"].as_array().unwrap().len();
    assert!(
        doc["notes"]
            .to_string()
            .contains(&format!("recorded {count} files")),
        "{doc:#}"
    );
    let history = site.run(&["history"]);
    assert!(
        String::from_utf8_lossy(&history.stdout).contains(&format!("{count} files")),
        "{}",
        text(&history)
    );

    // The change is in the outside file: diff shows it, the rollback puts it back.
    std::fs::write(&o.file, site.bad_http()).unwrap();
    let diff = site.run(&["diff", "--json"]);
    assert!(
        json(&diff)["diff"]
            .to_string()
            .contains(&o.file.display().to_string()),
        "{}",
        text(&diff)
    );
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        read(&o.file),
        site.good_http(),
        "the outside file is restored"
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(o.dir.path().exists());
}

#[test]
fn a_link_leading_out_of_the_root_is_restored_behind_the_link() {
    // Debian: modules-enabled/50-mod-stream.conf -> /usr/share/nginx/modules-available/...
    let site = Site::start();
    let shared = tempfile::tempdir().unwrap();
    let real = shared.path().join("site.conf");
    std::fs::write(&real, site.good_http()).unwrap();
    let enabled = site.nginx.prefix.join("enabled");
    std::fs::create_dir_all(&enabled).unwrap();
    let link = enabled.join("50-site.conf");
    symlink(&real, &link).unwrap();
    site.adopt(&format!("include {}/*.conf;", enabled.display()));

    std::fs::write(&real, site.bad_http()).unwrap();
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), real);
    assert_eq!(read(&real), site.good_http());
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn rollback_to_a_snapshot_refuses_a_hard_linked_file_before_writing_anything() {
    let d = Debian::start();
    let first = d.site.last_good_id();
    std::fs::write(&d.available, format!("{}\n# second", d.site.good_http())).unwrap();
    let out = d.site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::remove_file(&d.enabled).unwrap();
    std::fs::hard_link(&d.available, &d.enabled).unwrap();
    let before = read(&d.available);
    let out = d.site.run(&["rollback", &first, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems = json(&out)["problems"].to_string();
    assert!(problems.contains("hard-linked"), "{problems}");
    assert!(
        problems.contains(&d.available.display().to_string()),
        "{problems}"
    );
    assert!(
        problems.contains(&d.enabled.display().to_string()),
        "{problems}"
    );
    assert_eq!(read(&d.available), before, "nothing was written");
    assert_eq!(read(&d.enabled), before);
    assert!(!d.site.journal_exists());
}

#[test]
fn an_edit_whose_file_another_writer_changes_before_the_signal_keeps_both_versions() {
    let d = Debian::start();
    let other = format!("{}\n# config management", d.site.good_http());
    let mut run = Proc(
        d.site
            .cmd(&["edit", &d.enabled.display().to_string(), "--json"])
            .env("EDITOR", "sed -i s|}$|}#edited|")
            .env("SAFE_RELOAD_TEST_PAUSE", "recheck-before-signal")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start edit"),
    );
    assert!(run.wait_stopped(std::time::Duration::from_secs(20)));
    std::fs::write(&d.available, &other).unwrap();
    run.resume();
    let out = run.finish(std::time::Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let notes = json(&out)["notes"].to_string();
    // The other writer's version stays in place; the edit is kept aside, its path printed.
    assert_eq!(read(&d.available), other);
    d.assert_link_kept("drift during edit");
    assert!(notes.contains("changed by someone else"), "{notes}");
    let kept: Vec<_> = std::fs::read_dir(d.site.state.path().join("edits"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(read(&kept[0]).ends_with("}#edited"));
    assert!(notes.contains(&kept[0].display().to_string()), "{notes}");
}

/// A Capistrano-style release tree outside the root: `current -> releases/v1`, each release
/// with its own `nginx.conf`, included through `current`.
struct Releases {
    site: Site,
    app: tempfile::TempDir,
}

impl Releases {
    fn start() -> Releases {
        Releases::build(Site::start(), |_| tempfile::tempdir().unwrap())
    }

    /// The app (and its `current` link) inside the configuration directory.
    fn start_in_conf_dir() -> Releases {
        Releases::build(Site::start(), |site| {
            tempfile::tempdir_in(&site.nginx.prefix).unwrap()
        })
    }

    fn build(site: Site, app_dir: impl Fn(&Site) -> tempfile::TempDir) -> Releases {
        let app = app_dir(&site);
        for (release, http) in [("v1", site.good_http()), ("v2", site.bad_http())] {
            let dir = app.path().join("releases").join(release);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("nginx.conf"), http).unwrap();
        }
        symlink("releases/v1", app.path().join("current")).unwrap();
        site.adopt(&format!(
            "include {}/current/nginx.conf;",
            app.path().display()
        ));
        Releases { site, app }
    }

    fn current(&self) -> PathBuf {
        self.app.path().join("current")
    }

    /// `ln -sfn releases/v2 current`, atomically as deploy tools do it.
    fn deploy(&self, release: &str) {
        let tmp = self.app.path().join("current.tmp");
        symlink(format!("releases/{release}"), &tmp).unwrap();
        std::fs::rename(&tmp, self.current()).unwrap();
    }
}

#[test]
fn a_release_switched_by_a_directory_link_is_rolled_back_by_pointing_the_link_back() {
    let r = Releases::start();
    release_switch_rolled_back(&r);
}

/// The app (and its `current` link) inside the configuration directory: the rollback points
/// the link back and writes nothing into either release.
#[test]
fn a_release_link_inside_the_configuration_directory_is_pointed_back_and_no_release_rewritten() {
    let r = Releases::start_in_conf_dir();
    let v1 = r.app.path().join("releases/v1/nginx.conf");
    release_switch_rolled_back(&r);
    assert_eq!(read(&v1), r.site.good_http(), "the old release's file");
    let diff = r.site.run(&["diff", "--json"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
}

/// A path as the output shows it: relative inside the configuration directory.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn release_switch_rolled_back(r: &Releases) {
    let site = &r.site;
    let v2 = r.app.path().join("releases/v2/nginx.conf");
    r.deploy("v2");

    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        std::fs::read_link(r.current()).unwrap(),
        Path::new("releases/v1"),
        "the link is pointed back: {}",
        text(&out)
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    // The new release is the deploy's, not the configuration's: it stays as it was.
    assert_eq!(read(&v2), site.bad_http(), "the new release's file is kept");
    let doc = json(&out);
    let relinked = doc["rollback"]["restore"]["relinked"].to_string();
    assert!(
        // Shown relative to the configuration directory when inside it.
        relinked.contains(&shown(&site.nginx.prefix, &r.current()))
            && relinked.contains("releases/v2"),
        "the output names the link it pointed back and where it pointed: {doc:#}"
    );
    // The tree nginx reads now loads: a later reload or restart works.
    let (ok, said) = site.nginx.test();
    assert!(ok, "{said}");
}

#[test]
fn recover_and_rollback_id_point_a_directory_link_back() {
    rollback_id_across_a_release_switch(&Releases::start());
    rollback_id_across_a_release_switch(&Releases::start_in_conf_dir());
}

fn rollback_id_across_a_release_switch(r: &Releases) {
    let site = &r.site;
    let first = site.last_good_id();
    // v2 made good and reloaded: the link now points at v2 in last-good.
    std::fs::write(
        r.app.path().join("releases/v2/nginx.conf"),
        format!("{}\n# v2", site.good_http()),
    )
    .unwrap();
    r.deploy("v2");
    let out = site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(site.answer(), Some((200, "good".into())));

    let out = site.run(&["rollback", &first, "-y", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_link(r.current()).unwrap(),
        Path::new("releases/v1"),
        "{}",
        text(&out)
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    // Each release keeps its own file.
    let v2 = read(&r.app.path().join("releases/v2/nginx.conf"));
    assert!(v2.ends_with("# v2"), "release v2 was rewritten: {v2}");
    assert_eq!(
        read(&r.app.path().join("releases/v1/nginx.conf")),
        site.good_http()
    );
}

/// `conf.d -> conf.d.v2` inside the configuration directory, switched to a set with a broken
/// site and a file of its own: the rollback points the link back, and the new set's files
/// stay as the deploy wrote them.
#[test]
fn a_conf_d_link_switched_to_another_set_is_pointed_back_and_the_new_set_kept() {
    let site = Site::start();
    let prefix = site.nginx.prefix.clone();
    let other = SocketAddr::new(site.addr.ip(), free_port(site.addr.ip()));
    let other_server =
        format!("server {{ listen {other}; location / {{ return 200 \"other\"; }} }}\n");
    for (set, files) in [
        ("conf.d.v2", vec![("app.conf", site.good_http())]),
        (
            "conf.d.v3",
            vec![
                ("app.conf", site.bad_http()),
                ("other.conf", other_server.clone()),
            ],
        ),
    ] {
        std::fs::create_dir_all(prefix.join(set)).unwrap();
        for (name, body) in files {
            std::fs::write(prefix.join(set).join(name), body).unwrap();
        }
    }
    symlink("conf.d.v2", prefix.join("conf.d")).unwrap();
    site.adopt("include conf.d/*.conf;");

    let tmp = prefix.join("conf.d.tmp");
    symlink("conf.d.v3", &tmp).unwrap();
    std::fs::rename(&tmp, prefix.join("conf.d")).unwrap();
    // `diff` says where the link points now and where it pointed.
    let diff = site.run(&["diff"]);
    assert!(
        text(&diff).contains("conf.d: the link points at conf.d.v3, not conf.d.v2"),
        "{}",
        text(&diff)
    );
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        std::fs::read_link(prefix.join("conf.d")).unwrap(),
        Path::new("conf.d.v2"),
        "{}",
        text(&out)
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(
        http_get(other, "other", "/").is_err(),
        "the new set's server is live"
    );
    assert_eq!(read(&prefix.join("conf.d.v3/app.conf")), site.bad_http());
    assert_eq!(read(&prefix.join("conf.d.v3/other.conf")), other_server);
    assert_eq!(read(&prefix.join("conf.d.v2/app.conf")), site.good_http());
    let (ok, said) = site.nginx.test();
    assert!(ok, "{said}");
    let diff = site.run(&["diff", "--json"]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
}

#[test]
fn re_pointing_the_middle_link_of_a_two_hop_chain_is_rolled_back() {
    // sites-enabled/app -> ../sites-available/app -> /srv/app/app.conf: a release re-points
    // the middle link.
    let site = Site::start();
    let srv = tempfile::tempdir().unwrap();
    let v1 = srv.path().join("app.conf");
    let v2 = srv.path().join("app-v2.conf");
    std::fs::write(&v1, site.good_http()).unwrap();
    std::fs::write(&v2, site.bad_http()).unwrap();
    let prefix = site.nginx.prefix.clone();
    std::fs::create_dir_all(prefix.join("sites-available")).unwrap();
    std::fs::create_dir_all(prefix.join("sites-enabled")).unwrap();
    let middle = prefix.join("sites-available/app");
    symlink(&v1, &middle).unwrap();
    symlink("../sites-available/app", prefix.join("sites-enabled/app")).unwrap();
    site.adopt(&format!("include {}/sites-enabled/*;", prefix.display()));
    let snap = site.snapshot(&site.last_good_id());
    assert!(
        snap.to_string().contains("sites-available/app"),
        "the middle link is recorded: {snap:#}"
    );

    std::fs::remove_file(&middle).unwrap();
    symlink(&v2, &middle).unwrap();
    let diff = site.run(&["diff", "--json"]);
    assert!(
        json(&diff)["diff"]
            .to_string()
            .contains("sites-available/app"),
        "diff names the re-pointed link: {}",
        text(&diff)
    );
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(std::fs::read_link(&middle).unwrap(), v1, "{}", text(&out));
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert_eq!(read(&v2), site.bad_http(), "the release file is kept");
}

#[test]
fn a_release_read_through_a_glob_under_a_directory_link_is_rolled_back_file_by_file() {
    // include /srv/app/current/nginx/*.conf; v1 has a.conf and b.conf, v2 only a.conf (502).
    let site = Site::start();
    let app = tempfile::tempdir().unwrap();
    let v1 = app.path().join("releases/v1/nginx");
    let v2 = app.path().join("releases/v2/nginx");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v1.join("a.conf"), site.good_http()).unwrap();
    std::fs::write(v1.join("b.conf"), "# b\n").unwrap();
    std::fs::write(v2.join("a.conf"), site.bad_http()).unwrap();
    let current = app.path().join("current");
    symlink(app.path().join("releases/v1"), &current).unwrap();
    site.adopt(&format!("include {}/nginx/*.conf;", current.display()));

    std::fs::remove_file(&current).unwrap();
    symlink(app.path().join("releases/v2"), &current).unwrap();
    let out = site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pointed the link {} back at", current.display())),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        app.path().join("releases/v1")
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert_eq!(read(&v2.join("a.conf")), site.bad_http());
    assert_eq!(read(&v1.join("b.conf")), "# b\n");
    let (ok, said) = site.nginx.test();
    assert!(ok, "{said}");
}

/// A directory link a deploy replaced by a real directory with new files (`rm sites-enabled;
/// mkdir sites-enabled`): the rollback moves the files out (the rejected snapshot keeps
/// them), then puts the link back in the directory's place, and nginx serves last-good.
#[test]
fn a_directory_link_replaced_by_a_real_directory_is_put_back_after_its_files_move_out() {
    let site = Site::start();
    let srv = tempfile::tempdir().unwrap();
    let enabled = srv.path().join("enabled");
    std::fs::create_dir_all(&enabled).unwrap();
    std::fs::write(enabled.join("app"), site.good_http()).unwrap();
    let link = site.nginx.prefix.join("sites-enabled");
    symlink(&enabled, &link).unwrap();
    site.adopt("include sites-enabled/*;");

    std::fs::remove_file(&link).unwrap();
    std::fs::create_dir(&link).unwrap();
    let other = SocketAddr::new(site.addr.ip(), free_port(site.addr.ip()));
    let other_server =
        format!("server {{ listen {other}; location / {{ return 200 \"other\"; }} }}\n");
    std::fs::write(link.join("app"), site.bad_http()).unwrap();
    std::fs::write(link.join("other"), &other_server).unwrap();

    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        enabled,
        "{}",
        text(&out)
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(
        http_get(other, "other", "/").is_err(),
        "the change's server is live"
    );
    assert_eq!(read(&enabled.join("app")), site.good_http());
    assert!(
        site.stored(site.bad_http().as_bytes()),
        "the change's app file is lost"
    );
    assert!(
        site.stored(other_server.as_bytes()),
        "the change's new file is lost"
    );
    let (ok, said) = site.nginx.test();
    assert!(ok, "{said}");
    assert!(!site.journal_exists());
}

/// Puts /dev/null back as the character device it is if a test broke it, so that one failing
/// run does not break every later program on the machine.
struct DevNullGuard;

impl Drop for DevNullGuard {
    fn drop(&mut self) {
        use std::os::unix::fs::FileTypeExt;
        let ok =
            std::fs::symlink_metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device());
        if !ok {
            let _ = std::fs::remove_file("/dev/null");
            let _ = std::process::Command::new("mknod")
                .args(["-m", "666", "/dev/null", "c", "1", "3"])
                .status();
        }
    }
}

/// A site masked with a link to /dev/null (`sites-enabled/old -> /dev/null`) beside a change
/// that is rolled back: the restore never writes /dev/null, which stays the character device.
#[test]
fn a_site_masked_with_a_link_to_dev_null_leaves_dev_null_a_device_through_a_rollback() {
    use std::os::unix::fs::FileTypeExt;
    let _guard = DevNullGuard;
    let site = Site::start();
    let enabled = site.nginx.prefix.join("sites-enabled");
    std::fs::create_dir_all(&enabled).unwrap();
    symlink("/dev/null", enabled.join("old")).unwrap();
    std::fs::write(enabled.join("app"), site.good_http()).unwrap();
    site.adopt("include sites-enabled/*;");

    std::fs::write(enabled.join("app"), site.bad_http()).unwrap();
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let meta = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "/dev/null was replaced: {}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_link(enabled.join("old")).unwrap(),
        Path::new("/dev/null")
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert_eq!(read(&enabled.join("app")), site.good_http());
}

/// A real `conf.d/` replaced by a link to another set (`rm -r conf.d; ln -s conf.d.v2
/// conf.d`): the rollback turns the link back into the directory with last-good's files, and
/// the set the link led to keeps every file. `rollback ID` back to the directory after the
/// link went live does the same.
#[test]
fn a_real_directory_replaced_by_a_link_is_a_directory_again_after_the_rollback() {
    let site = Site::start();
    let prefix = site.nginx.prefix.clone();
    let conf_d = prefix.join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    std::fs::write(conf_d.join("app.conf"), site.good_http()).unwrap();
    site.adopt("include conf.d/*.conf;");
    let directory = site.last_good_id();

    let v2 = prefix.join("conf.d.v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("app.conf"), site.bad_http()).unwrap();
    std::fs::write(v2.join("more.conf"), "# more\n").unwrap();
    std::fs::remove_dir_all(&conf_d).unwrap();
    symlink("conf.d.v2", &conf_d).unwrap();
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let meta = std::fs::symlink_metadata(&conf_d).unwrap();
    assert!(
        meta.is_dir(),
        "conf.d is not a directory again: {}",
        text(&out)
    );
    assert_eq!(read(&conf_d.join("app.conf")), site.good_http());
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert_eq!(
        read(&v2.join("app.conf")),
        site.bad_http(),
        "the set was rewritten"
    );
    assert_eq!(read(&v2.join("more.conf")), "# more\n");
    assert!(!site.journal_exists());

    // The link made good, then `rollback ID` back to the directory.
    std::fs::write(v2.join("app.conf"), format!("{}\n# v2", site.good_http())).unwrap();
    std::fs::remove_dir_all(&conf_d).unwrap();
    symlink("conf.d.v2", &conf_d).unwrap();
    let out = site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = site.run(&["rollback", &directory, "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(std::fs::symlink_metadata(&conf_d).unwrap().is_dir());
    assert_eq!(read(&conf_d.join("app.conf")), site.good_http());
    assert!(read(&v2.join("app.conf")).ends_with("# v2"));
    assert_eq!(site.answer(), Some((200, "good".into())));
    let (ok, said) = site.nginx.test();
    assert!(ok, "{said}");
}

/// An include that goes up from a link (`include APP/current/../shared/nginx.conf;`, `current
/// -> releases/1201`): the kernel goes up from where `current` leads, so `current` decides
/// which `shared/` nginx reads, though the file's own path no longer names it. A deploy that
/// re-points `current` is rolled back by pointing it back, and the other release's file is
/// left where it is. The link was not recorded: the rollback deleted that file (outside the
/// configuration directory), could not load last-good, and `recover` failed every time.
#[test]
fn a_link_an_include_goes_up_from_is_recorded_and_pointed_back() {
    let site = Site::start();
    let app = tempfile::tempdir().unwrap();
    for (release, http) in [("releases", site.good_http()), ("other", site.bad_http())] {
        let dir = app.path().join(release);
        std::fs::create_dir_all(dir.join("1201")).unwrap();
        std::fs::create_dir_all(dir.join("shared")).unwrap();
        std::fs::write(dir.join("shared/nginx.conf"), http).unwrap();
    }
    let current = app.path().join("current");
    symlink("releases/1201", &current).unwrap();
    site.adopt(&format!(
        "include {}/current/../shared/nginx.conf;",
        app.path().display()
    ));
    assert_eq!(site.answer(), Some((200, "good".into())));

    let tmp = app.path().join("current.tmp");
    symlink("other/1201", &tmp).unwrap();
    std::fs::rename(&tmp, &current).unwrap();
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        Path::new("releases/1201"),
        "the link is pointed back: {}",
        text(&out)
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    let other = app.path().join("other/shared/nginx.conf");
    assert_eq!(
        read(&other),
        site.bad_http(),
        "the other release's file is left"
    );
    let (ok, said) = site.nginx.test();
    assert!(ok, "{said}");
    let status = site.run(&["status", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
}
