//! `safe-reload edit FILE` when the file changes under the editor, through the binary with a
//! real nginx: the `$EDITOR` is a script that, like config management or a second operator
//! would, writes the real file while the operator's copy is open, then changes the copy. The
//! edit must not be written over the other writer's version: exit 1 naming the file, the
//! operator's edit kept at a printed path, nginx not signalled, no journal, the other writer's
//! bytes intact. Through a `sites-enabled/app -> ../sites-available/app` link the comparison is
//! against the link's target, and the link stays a link. A file removed, or a link pointed
//! elsewhere, while the editor is open is refused the same way. A file nginx does not read and
//! a path no include would read are usage errors (exit 2) with nothing written; a new file an
//! include glob reads is created on purpose, and said so.

mod rel_support;
mod support;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use rel_support::*;

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An `$EDITOR` that writes `$OTHER` to `$REAL` (another writer, while the editor is open),
/// then appends the operator's line to the copy it was given.
struct RacingEditor {
    dir: tempfile::TempDir,
}

const OPERATOR_LINE: &str = "# the operator edited this";

impl RacingEditor {
    fn new() -> RacingEditor {
        RacingEditor::doing("printf '%s' \"$OTHER\" > \"$REAL\"")
    }

    /// An editor whose other writer runs `action` (a shell line on `$REAL` and `$OTHER`).
    fn doing(action: &str) -> RacingEditor {
        let dir = tempfile::tempdir().expect("editor dir");
        let script = dir.path().join("editor");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nset -e\n{action}\n\
                 printf '\\n{OPERATOR_LINE}\\n' >> \"$1\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        RacingEditor { dir }
    }

    /// `safe-reload edit FILE --json` with this editor writing `other` to `real`.
    fn edit(&self, site: &Site, file: &Path, real: &Path, other: &str) -> Output {
        site.cmd(&["edit", &file.display().to_string(), "--json"])
            .env("EDITOR", self.dir.path().join("editor"))
            .env("REAL", real)
            .env("OTHER", other)
            .output()
            .expect("run edit")
    }
}

/// The kept edits in the state directory.
fn kept_edits(site: &Site) -> Vec<PathBuf> {
    std::fs::read_dir(site.state.path().join("edits"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// What every refused racing edit shows: exit 1, the file named, the edit kept at a path the
/// output gives, nginx not signalled, no journal, the site still served as before.
fn assert_refused_and_kept(site: &Site, out: &Output, named: &Path, workers: &[i32]) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let doc = json(out);
    assert_eq!(doc["outcome"], "refused", "{doc:#}");
    let named = named.display().to_string();
    assert!(
        doc["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["file"] == named.as_str())),
        "the file is named: {doc:#}"
    );
    let kept = kept_edits(site);
    assert_eq!(kept.len(), 1, "{kept:?}\n{doc:#}");
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains(&kept[0].display().to_string()),
        "the kept path is printed: {doc:#}"
    );
    assert!(
        read(&kept[0]).contains(OPERATOR_LINE),
        "the operator's edit is kept"
    );
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert!(!site.journal_exists(), "no journal is left");
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn edit_does_not_overwrite_a_file_another_writer_changed_while_the_editor_was_open() {
    let site = Site::start();
    let workers = site.nginx.worker_pids();
    let other = site.nginx.render(&format!(
        "{}\n# config management's change",
        site.good_http()
    ));
    let out = RacingEditor::new().edit(&site, &site.nginx.conf, &site.nginx.conf, &other);
    assert_refused_and_kept(&site, &out, &site.nginx.conf, &workers);
    assert_eq!(
        read(&site.nginx.conf),
        other,
        "the other writer's bytes are intact"
    );
}

#[test]
fn edit_through_a_link_compares_against_the_target_another_writer_changed() {
    let site = Site::start();
    let available = site.nginx.prefix.join("sites-available/app");
    let enabled = site.nginx.prefix.join("sites-enabled/app");
    std::fs::create_dir_all(available.parent().unwrap()).unwrap();
    std::fs::create_dir_all(enabled.parent().unwrap()).unwrap();
    std::fs::write(&available, site.good_http()).unwrap();
    symlink("../sites-available/app", &enabled).unwrap();
    let prefix = site.nginx.prefix.display().to_string();
    site.adopt(&format!("include {prefix}/sites-enabled/*;"));
    let workers = site.nginx.worker_pids();

    // certbot writes sites-available/app while the operator edits it as sites-enabled/app.
    let other = format!("{}\n# certbot's change", site.good_http());
    let out = RacingEditor::new().edit(&site, &enabled, &available, &other);
    assert_refused_and_kept(&site, &out, &enabled, &workers);
    assert_eq!(
        read(&available),
        other,
        "the other writer's bytes are intact"
    );
    assert!(
        std::fs::symlink_metadata(&enabled)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    assert_eq!(
        std::fs::read_link(&enabled).unwrap(),
        Path::new("../sites-available/app")
    );
}

#[test]
fn edit_does_not_recreate_a_file_another_writer_removed_while_the_editor_was_open() {
    let site = Site::start();
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("site.conf");
    std::fs::write(&file, site.good_http()).unwrap();
    site.adopt(&format!("include {}/*.conf;", dir.display()));
    let workers = site.nginx.worker_pids();
    let out = RacingEditor::doing("rm -f \"$REAL\"").edit(&site, &file, &file, "");
    assert_refused_and_kept(&site, &out, &file, &workers);
    assert!(!file.exists(), "the removed file was written again");
}

#[test]
fn edit_through_a_link_another_writer_pointed_elsewhere_is_refused() {
    let site = Site::start();
    let available = site.nginx.prefix.join("sites-available");
    let enabled = site.nginx.prefix.join("sites-enabled/app");
    std::fs::create_dir_all(&available).unwrap();
    std::fs::create_dir_all(enabled.parent().unwrap()).unwrap();
    std::fs::write(available.join("app"), site.good_http()).unwrap();
    let other = format!("{}\n# the other site", site.good_http());
    std::fs::write(available.join("other"), &other).unwrap();
    symlink("../sites-available/app", &enabled).unwrap();
    let prefix = site.nginx.prefix.display().to_string();
    site.adopt(&format!("include {prefix}/sites-enabled/*;"));
    let workers = site.nginx.worker_pids();
    let relink = RacingEditor::doing("ln -sfn ../sites-available/other \"$REAL\"");
    let out = relink.edit(&site, &enabled, &enabled, "");
    assert_refused_and_kept(&site, &out, &enabled, &workers);
    assert_eq!(
        std::fs::read_link(&enabled).unwrap(),
        Path::new("../sites-available/other")
    );
    assert_eq!(read(&available.join("app")), site.good_http());
    assert_eq!(read(&available.join("other")), other);
}

#[test]
fn edit_of_an_unchanged_file_still_goes_live() {
    // The control: the same editor writing the file's own bytes back is no other writer.
    let site = Site::start();
    let same = read(&site.nginx.conf);
    let out = RacingEditor::new().edit(&site, &site.nginx.conf, &site.nginx.conf, &same);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(read(&site.nginx.conf).contains(OPERATOR_LINE));
    assert!(kept_edits(&site).is_empty());
    assert_eq!(site.answer(), Some((200, "good".into())));
}

/// `safe-reload edit FILE --json` with an editor that writes `content` into the copy.
fn edit_writing(site: &Site, file: &Path, content: &str) -> Output {
    site.cmd(&["edit", &file.display().to_string(), "--json"])
        .env("EDITOR", "sh -c 'printf %s \"$NEW\" > \"$1\"' sh")
        .env("NEW", content)
        .output()
        .expect("run edit")
}

/// Exit 2 with `words` and the path in the error; nothing kept, no journal, nginx untouched.
fn assert_usage_error(site: &Site, out: &Output, file: &Path, words: &str, workers: &[i32]) {
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    let error = json(out)["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(&file.display().to_string()), "{error}");
    assert!(error.contains(words), "{error}");
    assert!(kept_edits(site).is_empty(), "{:?}", kept_edits(site));
    assert!(!site.journal_exists());
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn edit_of_a_file_nginx_does_not_read_is_a_usage_error_and_writes_nothing() {
    let site = Site::start();
    let workers = site.nginx.worker_pids();
    let stray = site.nginx.prefix.join("notes.conf");
    std::fs::write(&stray, "# not included anywhere\n").unwrap();
    let out = edit_writing(&site, &stray, "# edited\n");
    assert_usage_error(&site, &out, &stray, "not read by", &workers);
    assert_eq!(read(&stray), "# not included anywhere\n");
}

#[test]
fn edit_of_a_path_that_does_not_exist_and_nothing_includes_creates_nothing() {
    let site = Site::start();
    let workers = site.nginx.worker_pids();
    let missing = site.nginx.prefix.join("conf.d/missing.conf");
    let out = edit_writing(&site, &missing, "# new\n");
    assert_usage_error(&site, &out, &missing, "does not exist", &workers);
    assert!(!missing.exists(), "it was created");
}

#[test]
fn edit_of_a_new_file_an_include_glob_reads_creates_it_and_says_so() {
    let site = Site::start();
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("site.conf"), site.good_http()).unwrap();
    site.adopt(&format!("include {}/*.conf;", dir.display()));
    let ip = site.addr.ip();
    let second = std::net::SocketAddr::new(ip, support::free_port(ip));
    let new = dir.join("second.conf");
    let out = edit_writing(&site, &new, &site_http(second, &site.good.host_port()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let notes = json(&out)["notes"].to_string();
    assert!(
        notes.contains(&format!("created {}", new.display())),
        "{notes}"
    );
    assert_eq!(
        support::http_get(second, "site", "/").ok(),
        Some((200, "good".into()))
    );
    assert!(kept_edits(&site).is_empty());
}

#[test]
fn a_refused_new_file_is_not_left_behind() {
    let site = Site::start();
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("site.conf"), site.good_http()).unwrap();
    site.adopt(&format!("include {}/*.conf;", dir.display()));
    let workers = site.nginx.worker_pids();
    let new = dir.join("broken.conf");
    let out = edit_writing(&site, &new, "server { listen 1.2.3.4:99999; }\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!new.exists(), "the refused new file was left behind");
    let notes = json(&out)["notes"].to_string();
    assert!(notes.contains("was not created"), "{notes}");
    assert_eq!(kept_edits(&site).len(), 1);
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert_eq!(site.answer(), Some((200, "good".into())));
}
