//! `safe-reload edit FILE` against a real nginx, with `sed -i` as the editor (the command is
//! split into argv and the copy's path appended, as with any `$EDITOR`): a refused edit leaves
//! the file byte-identical and keeps the edit in the state directory with its path printed; an
//! edit that turns into 502 is rolled back the same way; a good edit goes live; an unchanged copy
//! does nothing.

mod output_util;
mod support;

use std::net::SocketAddr;

use output_util::*;
use support::*;

fn sed(from: &str, to: &str) -> String {
    format!("sed -i s|{from}|{to}|")
}

/// The kept edit named in the output exists and holds the edit.
fn assert_kept(site: &Site, out_text: &str, holds: &str) {
    let kept = site.kept_edits();
    assert_eq!(kept.len(), 1, "{kept:?}\n{out_text}");
    let path = kept[0].display().to_string();
    assert!(
        out_text.contains(&path),
        "path {path} not printed:\n{out_text}"
    );
    let body = std::fs::read_to_string(&kept[0]).expect("kept edit");
    assert!(body.contains(holds), "{body}");
}

#[test]
fn a_refused_edit_leaves_the_file_as_it_was_and_keeps_the_edit() {
    let site = Site::started_with_baseline();
    let before = read(&site.nginx.conf);
    let wrong = SocketAddr::new(site.ip, free_port(site.ip)).to_string();
    let conf = site.nginx.conf.display().to_string();
    let out = site
        .cmd()
        .args(["edit", &conf])
        .env("EDITOR", sed(&site.app.host_port(), &wrong))
        .output()
        .expect("run");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert_eq!(read(&site.nginx.conf), before, "the file changed:\n{all}");
    assert_kept(&site, &all, &wrong);
    assert!(
        all.contains(&format!("nothing listens on {wrong}")),
        "{all}"
    );
    assert_eq!(site.get().1, "app-v1");
}

#[test]
fn an_edit_rolled_back_after_502_leaves_the_file_as_it_was() {
    let site = Site::started_with_baseline();
    let broken = CloseBackend::start(SocketAddr::new(site.ip, 0));
    let before = read(&site.nginx.conf);
    let conf = site.nginx.conf.display().to_string();
    let out = site
        .cmd()
        // Without the shadow, which would refuse the edit before the reload.
        .args(["edit", &conf, "--json", "--no-shadow"])
        .env(
            "EDITOR",
            sed(&site.app.host_port(), &broken.addr.to_string()),
        )
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["outcome"], "rolled_back", "{doc:#}");
    assert_eq!(doc["command"], "edit");
    assert_eq!(read(&site.nginx.conf), before);
    let notes = doc["notes"].to_string();
    assert_kept(&site, &notes, &broken.addr.to_string());
    assert_eq!(site.get().1, "app-v1");
}

#[test]
fn an_applied_edit_goes_live() {
    let site = Site::started_with_baseline();
    let v2 = HttpBackend::start(SocketAddr::new(site.ip, 0), "app-v2");
    let conf = site.nginx.conf.display().to_string();
    let out = site
        .cmd()
        .args(["edit", &conf])
        .env("EDITOR", sed(&site.app.host_port(), &v2.host_port()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reloaded:"),
        "{}",
        text(&out)
    );
    assert_eq!(site.get().1, "app-v2");
    let now = std::fs::read_to_string(&site.nginx.conf).expect("conf");
    assert!(now.contains(&v2.host_port()), "{now}");
    assert!(site.kept_edits().is_empty(), "{:?}", site.kept_edits());
}

#[test]
fn an_unchanged_copy_does_nothing() {
    let site = Site::started_with_baseline();
    let before = read(&site.nginx.conf);
    let workers = site.nginx.worker_pids();
    let conf = site.nginx.conf.display().to_string();
    let out = site
        .cmd()
        .args(["edit", &conf, "--json"])
        .env("VISUAL", "true")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out)["outcome"], "unchanged");
    assert_eq!(read(&site.nginx.conf), before);
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was reloaded");
    assert!(site.kept_edits().is_empty());
}

#[test]
fn an_editor_that_fails_changes_nothing() {
    let site = Site::started_with_baseline();
    let before = read(&site.nginx.conf);
    let conf = site.nginx.conf.display().to_string();
    let out = site
        .cmd()
        .args(["edit", &conf])
        .env("EDITOR", "false")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("editor"),
        "{}",
        text(&out)
    );
    assert_eq!(read(&site.nginx.conf), before);
}
