//! Hostile input through the binary: a tampered snapshot manifest, an unsafe state directory,
//! configurations built to exhaust the parser, and control characters in names that end up in
//! the output. Each gets a clear refusal in bounded time; nothing reaches the terminal raw.

mod rel_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rel_support::{text, Site, BIN};

fn targets(conf: &Path) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(["targets", "--color", "never", "-c"])
        .arg(conf)
        .output()
        .unwrap();
    (out, t.elapsed())
}

#[test]
fn a_manifest_with_dotdot_is_refused_by_rollback_and_history() {
    let site = Site::start();
    let snaps = site.state.path().join("snapshots");
    let manifest = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("init wrote a manifest");
    let id = manifest.file_stem().unwrap().to_str().unwrap().to_string();
    let json = std::fs::read_to_string(&manifest).unwrap();
    let tampered = json.replacen("\"nginx.conf\"", "\"../../etc/escape.conf\"", 1);
    assert_ne!(json, tampered, "the manifest names nginx.conf");
    std::fs::write(&manifest, tampered).unwrap();
    for args in [&["rollback", id.as_str(), "-y"][..], &["history"]] {
        let out = site.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(".."), "{args:?}: {err}");
    }
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn a_group_writable_state_dir_is_refused() {
    let site = Site::start();
    std::fs::set_permissions(site.state.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
    for args in [&["history"][..], &["reload", "-y"], &["status"]] {
        let out = site.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("writable by group or others"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

#[test]
fn parser_bombs_get_clear_errors_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "binary junk",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("enormous line", {
            let mut v = b"events {}\nhttp { server_name ".to_vec();
            v.extend(std::iter::repeat_n(b'a', 8 * 1024 * 1024));
            v.extend(b"; }\n");
            v
        }),
        ("deep nesting", {
            let mut v = b"events {}\nhttp { ".to_vec();
            v.extend(b"location / { ".repeat(100_000));
            v
        }),
        (
            "include cycle",
            b"events {}\ninclude nginx.conf;\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(&conf, &bytes).unwrap();
        let (out, took) = targets(&conf);
        assert!(
            matches!(out.status.code(), Some(1) | Some(2)),
            "{what}: {}",
            text(&out)
        );
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
        assert!(!out.stderr.is_empty(), "{what}: no message");
    }
}

#[test]
fn a_glob_matching_more_files_than_the_cap_stops_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..25_000 {
        std::fs::write(many.join(format!("{i}.conf")), "").unwrap();
    }
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, "events {}\nhttp { include many/*.conf; }\n").unwrap();
    let (out, took) = targets(&conf);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("20000"),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn control_characters_in_names_are_escaped_in_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "evil\x1b[2J\x07.conf";
    std::fs::write(
        dir.path().join(evil),
        "server {\n  server_name \"x\x1b]0;owned\x07\";\n  location / { proxy_pass http://127.0.0.1:9; }\n}\n",
    )
    .unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, "events {}\nhttp { include evil*.conf; }\n").unwrap();
    let (out, _) = targets(&conf);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(
        String::from_utf8_lossy(&all).contains("evil"),
        "{}",
        text(&out)
    );
    assert!(
        !all.contains(&0x1b),
        "raw ESC in the output: {}",
        text(&out)
    );
    assert!(
        !all.contains(&0x07),
        "raw BEL in the output: {}",
        text(&out)
    );
    // A broken file with such a name, in an error message.
    std::fs::write(dir.path().join(evil), "server {\n  junk\n").unwrap();
    let (out, _) = targets(&conf);
    assert_ne!(out.status.code(), Some(0));
    let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(!all.contains(&0x1b), "raw ESC in the error: {}", text(&out));
}
