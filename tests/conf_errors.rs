//! Bad input through `load`: each fault is an error naming the path (and, for configuration
//! errors, the line), never a panic. Configuration faults are `Error::Config` (exit 1); a main
//! file that cannot be used at all is `Error::MainConfig` (exit 2).

#![allow(clippy::print_stderr)]

mod conf_util;

use std::path::{Path, PathBuf};

use conf_util::Tree;
use safe_reload::conf::{load, LoadOptions};
use safe_reload::{Error, Exit};

fn config_error(main: &Path, opts: &LoadOptions) -> (PathBuf, u32, String) {
    match load(main, opts) {
        Err(e @ Error::Config { .. }) => {
            assert_eq!(e.exit(), Exit::Refused);
            let Error::Config {
                file,
                line,
                message,
            } = e
            else {
                unreachable!()
            };
            (file, line, message)
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

fn main_config_error(main: &Path) -> String {
    match load(main, &LoadOptions::default()) {
        Err(e @ Error::MainConfig { .. }) => {
            assert_eq!(e.exit(), Exit::Environment);
            let text = e.to_string();
            assert!(text.contains(&main.display().to_string()), "{text}");
            text
        }
        other => panic!("expected a main-config error, got {other:?}"),
    }
}

#[test]
fn syntax_error_in_an_included_file_names_that_file() {
    let t = Tree::new();
    let main = t.write(
        "nginx.conf",
        "events {}\nhttp {\n    include conf.d/*.conf;\n}\n",
    );
    let bad = t.write("conf.d/app.conf", "server {\n    listen 80\n}\n");
    let (file, line, msg) = config_error(&main, &LoadOptions::default());
    assert_eq!((file, line), (bad, 3));
    assert!(msg.contains("unexpected \"}\""), "{msg}");
}

#[test]
fn binary_junk_in_an_included_file() {
    let t = Tree::new();
    let main = t.write("nginx.conf", "http {\n    include junk.conf;\n}\n");
    let junk = t.write(
        "junk.conf",
        b"# ok\n\x7fELF\x02\x01\x01\x00\x00\xff\xfe;\n".as_slice(),
    );
    let (file, line, msg) = config_error(&main, &LoadOptions::default());
    assert_eq!((file, line), (junk.clone(), 2));
    assert!(msg.contains("binary"), "{msg}");

    // High bytes and control characters without a NUL: still an error, with a line.
    t.write("junk.conf", b"\xff\xfe\x01 {{ ;\n".as_slice());
    let (file, line, _) = config_error(&main, &LoadOptions::default());
    assert_eq!((file, line), (junk, 1));
}

#[test]
fn missing_literal_include_names_the_path_at_the_include_line() {
    let t = Tree::new();
    let main = t.write(
        "nginx.conf",
        "events {}\nhttp {\n    include conf.d/*.conf;\n    include missing.conf;\n}\n",
    );
    let (file, line, msg) = config_error(&main, &LoadOptions::default());
    assert_eq!((file, line), (main, 4));
    assert!(
        msg.contains(&t.path("missing.conf").display().to_string()),
        "{msg}"
    );
}

#[test]
fn include_cycle_is_reported_with_its_chain() {
    let t = Tree::new();
    let main = t.write("nginx.conf", "http {\n    include a.conf;\n}\n");
    t.write("a.conf", "include b.conf;\n");
    let b = t.write("b.conf", "\n\ninclude a.conf;\n");
    let (file, line, msg) = config_error(&main, &LoadOptions::default());
    assert_eq!((file, line), (b, 3));
    assert!(msg.contains("include cycle"), "{msg}");
    assert!(
        msg.contains("a.conf -> ") && msg.contains("b.conf"),
        "{msg}"
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_at_its_include() {
    let t = Tree::new();
    let main = t.write("nginx.conf", "events {}\n\ninclude big.conf;\n");
    t.write("big.conf", "# padding\n".repeat(20_000));
    let opts = LoadOptions {
        max_file_size: 100_000,
        ..LoadOptions::default()
    };
    let (file, line, msg) = config_error(&main, &opts);
    assert_eq!((file, line), (main, 3));
    assert!(msg.contains("big.conf") && msg.contains("limit"), "{msg}");
}

#[test]
fn deep_block_nesting_and_deep_include_chains_are_bounded() {
    let t = Tree::new();
    let main = t.write("nginx.conf", "a {\n".repeat(1000) + &"}\n".repeat(1000));
    let (file, line, msg) = config_error(&main, &LoadOptions::default());
    assert_eq!(file, main);
    assert_eq!(line, 201);
    assert!(msg.contains("nested deeper"), "{msg}");

    for i in 0..60 {
        t.write(
            &format!("chain/{i}.conf"),
            format!("include chain/{}.conf;\n", i + 1),
        );
    }
    t.write("chain/60.conf", "x 1;\n");
    let main = t.write("chain.conf", "include chain/0.conf;\n");
    let (file, _, msg) = config_error(&main, &LoadOptions::default());
    assert!(file.starts_with(t.path("chain")), "{}", file.display());
    assert!(msg.contains("includes nested deeper"), "{msg}");
}

#[test]
fn missing_main_file() {
    let t = Tree::new();
    let text = main_config_error(&t.path("nope/nginx.conf"));
    assert!(text.contains("No such file"), "{text}");
}

#[test]
fn directory_as_main_file() {
    let t = Tree::new();
    std::fs::create_dir_all(t.path("conf")).expect("mkdir");
    let text = main_config_error(&t.path("conf"));
    assert!(text.contains("directory"), "{text}");
}

#[test]
fn unusable_main_file() {
    let t = Tree::new();
    // A dangling symlink fails for root too, unlike mode 000.
    let link = t.path("nginx.conf");
    std::os::unix::fs::symlink(t.path("gone.conf"), &link).expect("symlink");
    main_config_error(&link);

    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipping the mode-000 case: root reads files regardless of mode");
        return;
    }
    let locked = t.write("locked.conf", "events {}\n");
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000))
        .expect("chmod");
    let text = main_config_error(&locked);
    assert!(text.contains("ermission denied"), "{text}");
}
