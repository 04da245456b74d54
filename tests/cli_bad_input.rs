//! Bad input through the binary, never a panic (the harness fails any run whose output says
//! "panicked"): faults in the configuration are exit 1 with file:line; a main configuration or
//! nginx binary that cannot be used at all is exit 2 naming the path.

#![allow(clippy::print_stderr)]

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;

/// A prefix (nginx not started) with `main` directives in nginx.conf's main context.
fn prefix(main: &str, http: &str) -> (TestNginx, SafeReload) {
    let nginx = TestNginx::builder().main(main).http(http).prepare();
    let sr = SafeReload::new(&nginx);
    (nginx, sr)
}

/// The 1-based line of `conf` holding `needle`.
fn line_of(conf: &Path, needle: &str) -> u64 {
    let text = std::fs::read_to_string(conf).expect("conf");
    1 + text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} in {}", conf.display())) as u64
}

/// `check --json` and `targets --json` both refuse with exit 1 at `file:line`; the message.
fn refused_at(sr: &SafeReload, file: &Path, line: u64) -> String {
    let mut message = String::new();
    for cmd in ["check", "targets"] {
        let run = sr.run(&[cmd, "--json"]);
        run.expect(1);
        let report = run.json();
        let p = &report["problems"][0];
        assert_eq!(p["file"], file.display().to_string(), "{cmd}: {run}");
        assert_eq!(p["line"], line, "{cmd}: {run}");
        message = p["message"].as_str().unwrap_or_default().to_string();
    }
    let text = sr.run(&["check"]);
    text.expect(1);
    let place = format!("{}:{line}", file.display());
    assert!(
        text.stdout.contains(&place) || text.stderr.contains(&place),
        "the text report names {place}:\n{text}"
    );
    message
}

/// Exit 2 with `path` in the error, as text and as JSON.
fn environment_error(sr: &SafeReload, args: &[&str], path: &Path) -> String {
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let run = sr.run(&json_args);
    run.expect(2);
    let report: Value = run.json();
    assert_eq!(report["outcome"], "error", "{run}");
    let error = report["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(&path.display().to_string()), "{run}");
    let text = sr.run(args);
    text.expect(2);
    assert!(
        text.stderr.contains(&path.display().to_string()),
        "stderr names {}:\n{text}",
        path.display()
    );
    error
}

#[test]
fn binary_junk_in_an_included_file_is_refused_at_its_line() {
    let (nginx, sr) = prefix("", "include conf.d/*.conf;");
    let dir = nginx.prefix.join("conf.d");
    std::fs::create_dir(&dir).expect("mkdir");
    let junk = dir.join("junk.conf");
    std::fs::write(&junk, b"# fine\n\x7fELF\x02\x01\x00\x00\xff\xfe;\n").expect("write");
    let msg = refused_at(&sr, &junk, 2);
    assert!(msg.contains("binary"), "{msg}");
}

#[test]
fn a_literal_include_that_does_not_exist_is_refused_at_the_include() {
    let (nginx, sr) = prefix("include missing.conf;", "");
    let line = line_of(&nginx.conf, "include missing.conf");
    let msg = refused_at(&sr, &nginx.conf, line);
    assert!(msg.contains("missing.conf"), "{msg}");
}

#[test]
fn an_include_cycle_is_refused_with_its_chain() {
    let (nginx, sr) = prefix("", "include a.conf;");
    std::fs::write(nginx.prefix.join("a.conf"), "include b.conf;\n").expect("a");
    let b = nginx.prefix.join("b.conf");
    std::fs::write(&b, "\n\ninclude a.conf;\n").expect("b");
    let msg = refused_at(&sr, &b, 3);
    assert!(msg.contains("include cycle"), "{msg}");
}

#[test]
fn a_huge_included_file_is_refused_at_the_include() {
    let (nginx, sr) = prefix("", "include huge.conf;");
    let huge = nginx.prefix.join("huge.conf");
    // Sparse: 64 MiB on paper, no disk or time spent, over the 32 MiB limit.
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(64 << 20))
        .expect("huge file");
    let line = line_of(&nginx.conf, "include huge.conf");
    let msg = refused_at(&sr, &nginx.conf, line);
    assert!(msg.contains("huge.conf") && msg.contains("limit"), "{msg}");
}

#[test]
fn a_missing_main_config_is_an_environment_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("nowhere/nginx.conf");
    let sr = SafeReload::for_paths(&conf, dir.path());
    for cmd in ["check", "targets", "probe", "reload"] {
        environment_error(&sr, &[cmd, "-y"], &conf);
    }
}

#[test]
fn a_directory_as_main_config_is_an_environment_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sr = SafeReload::for_paths(dir.path(), dir.path());
    let error = environment_error(&sr, &["check"], dir.path());
    assert!(error.contains("directory"), "{error}");
}

#[test]
fn an_unreadable_main_config_is_an_environment_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A path through a regular file: no user, root included, can read it (ENOTDIR).
    let file = dir.path().join("plain");
    std::fs::write(&file, "").expect("write");
    let conf = file.join("nginx.conf");
    let sr = SafeReload::for_paths(&conf, dir.path());
    environment_error(&sr, &["check"], &conf);

    if unsafe { libc::geteuid() } == 0 {
        eprintln!("running as root: mode 000 does not stop root, the ENOTDIR case stands for it");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, "events {}\n").expect("write");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let sr = SafeReload::for_paths(&conf, dir.path());
    environment_error(&sr, &["check"], &conf);
}

#[test]
fn a_missing_nginx_binary_is_an_environment_error_naming_it() {
    let (nginx, sr) = prefix("", "");
    let missing = PathBuf::from("/nonexistent/sbin/nginx");
    let flag = missing.display().to_string();
    for cmd in ["check", "reload", "status"] {
        let error = environment_error(&sr, &[cmd, "--nginx", &flag], &missing);
        assert!(!error.is_empty());
    }
    // `targets` needs no nginx at all.
    sr.run(&["targets", "--nginx", &flag]).expect(0);
    assert!(nginx.conf.exists());
}

#[test]
fn usage_errors_exit_2() {
    let run = run_command(std::process::Command::new(BIN).arg("--no-such-flag"));
    run.expect(2);
    assert!(run.stderr.contains("--no-such-flag"), "{run}");
    let run =
        run_command(std::process::Command::new(BIN).args(["probe", "--probe-timeout", "soon"]));
    run.expect(2);
    assert!(run.stderr.contains("500ms"), "says how to write it: {run}");
}
