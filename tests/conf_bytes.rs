//! Bytes nginx reads that text tools trip on: a UTF-8 byte-order mark (nginx fails with
//! `unknown directive "server"`; we say there is a BOM, in which file, and how to remove it)
//! and a Latin-1 byte in a comment (nginx does not care; the diff shows the change with the
//! byte escaped instead of "binary files differ, +0 -0").

mod support;

use std::net::SocketAddr;

use support::*;

/// A prefix (nginx not started) whose http block includes `conf.d/site.conf`, with `site`.
fn prefix_with_site(site: &[u8]) -> (TestNginx, std::path::PathBuf) {
    let nginx = TestNginx::builder()
        .http("include conf.d/*.conf;")
        .prepare();
    let dir = nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).expect("mkdir conf.d");
    let path = dir.join("site.conf");
    std::fs::write(&path, site).expect("write site.conf");
    (nginx, path)
}

fn site(listen: SocketAddr, comment: &[u8]) -> Vec<u8> {
    let mut text = b"# ".to_vec();
    text.extend_from_slice(comment);
    text.extend_from_slice(
        format!("\nserver {{\n    listen {listen};\n    return 200 \"ok\";\n}}\n").as_bytes(),
    );
    text
}

#[test]
fn a_byte_order_mark_is_named_with_its_file_and_the_fix() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let mut text = b"\xEF\xBB\xBF".to_vec();
    text.extend_from_slice(format!("server {{\n    listen {listen};\n}}\n").as_bytes());
    let (nginx, path) = prefix_with_site(&text);

    // nginx's own verdict: a failure whose words do not say why.
    let (passed, said) = nginx.test();
    assert!(!passed, "nginx -t passed a file with a BOM");
    assert!(said.contains("unknown directive"), "{said}");

    let sr = SafeReload::new(&nginx);
    let run = sr.run(&["check", "--json"]);
    run.expect(1);
    let report = run.json();
    let problem = (report["problems"].as_array().expect("problems").iter())
        .find(|p| p["file"] == path.display().to_string().as_str())
        .unwrap_or_else(|| panic!("a problem in {}: {run}", path.display()));
    assert_eq!(problem["line"], 1, "{run}");
    let message = problem["message"].as_str().unwrap_or_default();
    assert!(message.contains("byte-order mark"), "{message}");
    assert!(message.contains("sed -i"), "{message}");

    // The text output names the file at line 1.
    let text = sr.run(&["check"]);
    text.expect(1);
    assert!(
        text.stderr.contains(&format!("{}:1", path.display())),
        "{text}"
    );
    assert!(text.stderr.contains("byte-order mark"), "{text}");

    // Removed as the message says, the same file passes both.
    let fixed = std::fs::read(&path).expect("read site.conf")[3..].to_vec();
    std::fs::write(&path, fixed).expect("write site.conf");
    assert!(nginx.test().0);
    sr.run(&["check", "--json", "--no-probe"]).expect(0);
}

/// The Debian layout: `sites-enabled/site` is a link to `sites-available/site`, which has the
/// BOM. The command the message gives removes it and keeps the link (a plain `sed -i` would
/// replace the link with a regular file, and `sites-available` would go stale).
#[test]
fn the_byte_order_mark_fix_keeps_a_sites_enabled_link() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::builder()
        .http("include sites-enabled/*;")
        .prepare();
    let available = nginx.prefix.join("sites-available");
    let enabled = nginx.prefix.join("sites-enabled");
    std::fs::create_dir_all(&available).expect("mkdir sites-available");
    std::fs::create_dir_all(&enabled).expect("mkdir sites-enabled");
    let mut text = b"\xEF\xBB\xBF".to_vec();
    text.extend_from_slice(format!("server {{\n    listen {listen};\n}}\n").as_bytes());
    std::fs::write(available.join("site"), &text).expect("write sites-available/site");
    let link = enabled.join("site");
    std::os::unix::fs::symlink("../sites-available/site", &link).expect("symlink");

    let sr = SafeReload::new(&nginx);
    let run = sr.run(&["check", "--json", "--no-probe"]);
    run.expect(1);
    let message = (run.json()["problems"].as_array().expect("problems").iter())
        .find_map(|p| {
            p["message"]
                .as_str()
                .filter(|m| m.contains("byte-order mark"))
        })
        .unwrap_or_else(|| panic!("a byte-order mark problem: {run}"))
        .to_string();
    let command = message
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("a command in backquotes: {message}"));
    assert!(command.contains("--follow-symlinks"), "{message}");
    let out = std::process::Command::new("sh")
        .args(["-c", command])
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{command}: {out:?}");

    let meta = std::fs::symlink_metadata(&link).expect("lstat sites-enabled/site");
    assert!(meta.file_type().is_symlink(), "the link was replaced");
    let fixed = std::fs::read(available.join("site")).expect("read sites-available/site");
    assert_eq!(
        fixed,
        text[3..],
        "the BOM is gone from the file the link points to"
    );
    assert!(nginx.test().0);
    sr.run(&["check", "--json", "--no-probe"]).expect(0);
}

/// A byte-order mark at the top of a file a `map` includes is part of the first entry's key
/// (nginx -t passes, the key never matches): not the directive-level failure the mark causes
/// elsewhere, so the check does not refuse a configuration nginx runs.
#[test]
fn a_byte_order_mark_in_a_map_include_is_not_refused() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::builder().prepare();
    let table = nginx.prefix.join("map.inc");
    std::fs::write(&table, b"\xEF\xBB\xBFx.test 1;\ny.test 2;\n").expect("write map.inc");
    nginx.write_http(&format!(
        "map $host $mm {{ default 0; include {}; }}\n\
         server {{ listen {listen}; return 200 \"$mm\"; }}",
        table.display()
    ));
    let (passed, said) = nginx.test();
    assert!(passed, "nginx -t: {said}");

    let sr = SafeReload::new(&nginx);
    let run = sr.run(&["check", "--json", "--no-probe"]);
    run.expect(0);
    assert!(!run.stdout.contains("byte-order mark"), "{run}");
}

#[test]
fn a_latin1_comment_change_is_diffed_with_the_byte_escaped() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let (nginx, path) = prefix_with_site(&site(listen, b"caf\xe9 v1"));
    assert!(nginx.test().0, "nginx -t reads Latin-1 comments");
    let sr = SafeReload::new(&nginx);
    sr.init();

    std::fs::write(&path, site(listen, b"caf\xe9 v2")).expect("write site.conf");
    let run = sr.run(&["diff", "--json"]);
    run.expect(0);
    let report = run.json();
    let file = (report["diff"]["files"]
        .as_array()
        .expect("diff files")
        .iter())
    .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with("site.conf")))
    .unwrap_or_else(|| panic!("site.conf in the diff: {run}"));
    let unified = file["unified"].as_str().unwrap_or_default();
    assert!(unified.contains("-# caf\\xe9 v1\n"), "{unified}");
    assert!(unified.contains("+# caf\\xe9 v2\n"), "{unified}");
    assert_eq!(
        (file["added"].clone(), file["removed"].clone()),
        (1.into(), 1.into())
    );

    let text = sr.run(&["diff"]);
    text.expect(0);
    assert!(text.stdout.contains("+# caf\\xe9 v2"), "{text}");
    assert!(!text.stdout.contains("binary files differ"), "{text}");
}
