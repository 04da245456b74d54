//! The Debian package and the files it ships: the .deb built from `[package.metadata.deb]`
//! holds the binary, the man page, the completions and the conffile; the man page, the
//! completions and the default settings file work with the built binary.
//!
//! The .deb is built with cargo-deb when it is installed (`cargo install --locked cargo-deb`
//! takes a minute and a half on two cores, too long to do inside a test). Without it, the test
//! lays out the same tree from the very same metadata and builds it with `dpkg-deb --build`:
//! that still proves every asset exists and lands where the metadata says, with the conffile
//! and the control fields, but not cargo-deb's own reading of the metadata. The test prints
//! which builder it used.

// Tests say on stderr which path they took (the .deb builder, the venv creation).
#![allow(clippy::print_stderr)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_safe-reload");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SUBCOMMANDS: [&str; 13] = [
    "reload",
    "check",
    "targets",
    "probe",
    "diff",
    "edit",
    "init",
    "history",
    "rollback",
    "status",
    "recover",
    "man",
    "completions",
];

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("utf-8 output")
}

/// What scripts/package.sh does before `cargo deb --no-build`: the man page and completions,
/// written by the binary itself into target/assets/ (renamed into place, so a concurrent
/// package.sh never sees half a file).
fn generate_assets() {
    let assets = Path::new(ROOT).join("target/assets");
    fs::create_dir_all(&assets).expect("target/assets");
    let man = run(Command::new(BIN).arg("man")).stdout;
    let mut gz = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    {
        use std::io::Write;
        let mut stdin = gz.stdin.take().expect("gzip stdin");
        stdin.write_all(&man).expect("feed gzip");
    }
    let gz = gz.wait_with_output().expect("gzip output");
    assert!(gz.status.success(), "gzip failed");
    let mut files = vec![("safe-reload.1.gz", gz.stdout)];
    for (shell, name) in [
        ("bash", "safe-reload.bash"),
        ("zsh", "_safe-reload"),
        ("fish", "safe-reload.fish"),
    ] {
        files.push((
            name,
            run(Command::new(BIN).args(["completions", shell])).stdout,
        ));
    }
    for (name, bytes) in files {
        let tmp = tempfile::NamedTempFile::new_in(&assets).expect("temp asset");
        fs::write(tmp.path(), bytes).expect("write asset");
        tmp.persist(assets.join(name)).expect("rename asset");
    }
}

fn cargo_deb_available() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
        && std::env::var_os("SAFE_RELOAD_TEST_NO_CARGO_DEB").is_none()
}

/// Build the .deb with the binary under test; returns its path.
fn build_deb(work: &Path) -> PathBuf {
    generate_assets();
    // cargo-deb maps `target/release/` in asset paths to `$CARGO_TARGET_DIR/release/`: a
    // private target directory holding the binary under test avoids a release build.
    let target = work.join("target");
    fs::create_dir_all(target.join("release")).expect("release dir");
    fs::copy(BIN, target.join("release/safe-reload")).expect("copy binary");
    let out = work.join("out");
    fs::create_dir_all(&out).expect("out dir");
    if cargo_deb_available() {
        eprintln!("building the .deb with cargo-deb");
        let path = stdout(
            Command::new("cargo")
                .current_dir(ROOT)
                .env("CARGO_TARGET_DIR", &target)
                .args([
                    "deb",
                    "--no-build",
                    "--no-strip",
                    "--fast",
                    "--quiet",
                    "--output",
                ])
                .arg(&out),
        );
        PathBuf::from(path.trim())
    } else {
        eprintln!(
            "cargo-deb is not installed: laying out [package.metadata.deb] by hand and \
             building with dpkg-deb (install it with: cargo install --locked cargo-deb)"
        );
        build_deb_from_metadata(&target.join("release"), work, &out)
    }
}

fn build_deb_from_metadata(release: &Path, work: &Path, out: &Path) -> PathBuf {
    let manifest: toml::Table = fs::read_to_string(Path::new(ROOT).join("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("Cargo.toml parses");
    let package = manifest["package"].as_table().expect("[package]");
    let deb = package["metadata"]["deb"].as_table().expect("metadata.deb");
    let field = |key: &str| deb[key].as_str().expect(key).to_string();
    let root = work.join("root");
    for asset in deb["assets"].as_array().expect("assets") {
        let [src, dest, mode] = [0, 1, 2].map(|i| asset[i].as_str().expect("asset field"));
        let source = match src.strip_prefix("target/release/") {
            Some(rest) => release.join(rest),
            None => Path::new(ROOT).join(src),
        };
        let mut dest = root.join(dest);
        if asset[1].as_str().expect("dest").ends_with('/') {
            dest = dest.join(source.file_name().expect("file name"));
        }
        fs::create_dir_all(dest.parent().expect("parent")).expect("asset dir");
        fs::copy(&source, &dest).unwrap_or_else(|e| panic!("asset {}: {e}", source.display()));
        let mode = u32::from_str_radix(mode, 8).expect("octal mode");
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let control_dir = root.join("DEBIAN");
    fs::create_dir_all(&control_dir).expect("DEBIAN");
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"));
    let long: String = field("extended-description")
        .lines()
        .map(|l| format!(" {l}\n"))
        .collect();
    let control = format!(
        "Package: {}\nVersion: {}-1\nArchitecture: {}\nMaintainer: {}\nSection: {}\n\
         Priority: {}\nRecommends: {}\nDescription: {}\n{long}",
        package["name"].as_str().expect("name"),
        package["version"].as_str().expect("version"),
        arch.trim(),
        field("maintainer"),
        field("section"),
        field("priority"),
        field("recommends"),
        package["description"].as_str().expect("description"),
    );
    fs::write(control_dir.join("control"), control).expect("control");
    let conffiles: String = deb["conf-files"]
        .as_array()
        .expect("conf-files")
        .iter()
        .map(|c| format!("{}\n", c.as_str().expect("conffile")))
        .collect();
    fs::write(control_dir.join("conffiles"), conffiles).expect("conffiles");
    let path = out.join("safe-reload.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&path));
    path
}

#[test]
fn deb_holds_binary_man_page_completions_and_conffile() {
    let work = tempfile::tempdir().expect("tempdir");
    let deb = build_deb(work.path());

    let contents = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/safe-reload",
        "./usr/share/man/man1/safe-reload.1.gz",
        "./usr/share/bash-completion/completions/safe-reload",
        "./usr/share/zsh/vendor-completions/_safe-reload",
        "./usr/share/fish/vendor_completions.d/safe-reload.fish",
        "./etc/safe-reload.toml",
        "./usr/share/doc/safe-reload/examples/nginx.service.d/safe-reload.conf",
        "./usr/share/doc/safe-reload/examples/git-hooks/pre-commit",
        "./usr/share/doc/safe-reload/examples/git-hooks/post-receive",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing from the .deb:\n{contents}"
        );
    }
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/safe-reload")),
        "the binary is not executable:\n{contents}"
    );
    // The drop-in is an example only: nothing under /etc/systemd or /lib/systemd.
    assert!(!contents.contains("systemd/system"), "{contents}");

    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for field in [
        "Package: safe-reload",
        "Recommends: nginx",
        "Section: admin",
        "Priority: optional",
    ] {
        assert!(info.contains(field), "{field} missing:\n{info}");
    }
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/safe-reload.toml");

    // What was packaged works: the binary runs and the man page is the binary's own.
    let root = work.path().join("extracted");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let version = stdout(Command::new(root.join("usr/bin/safe-reload")).arg("--version"));
    assert!(version.starts_with("safe-reload "), "{version}");
    let man = stdout(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/safe-reload.1.gz")),
    );
    assert!(man.contains("EXIT STATUS"), "{man}");
    let packaged_settings =
        fs::read_to_string(root.join("etc/safe-reload.toml")).expect("packaged settings");
    let source_settings =
        fs::read_to_string(Path::new(ROOT).join("packaging/safe-reload.toml")).expect("source");
    assert_eq!(packaged_settings, source_settings);
}

#[test]
fn man_page_has_exit_status_for_every_code() {
    let man = stdout(Command::new(BIN).arg("man"));
    assert!(
        man.starts_with(".ie") || man.contains(".TH"),
        "not roff:\n{man}"
    );
    let section = man
        .split_once("EXIT STATUS")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no EXIT STATUS section:\n{man}"));
    for code in ["0", "1", "2", "3", "4", "130"] {
        assert!(
            section
                .lines()
                .any(|l| l.contains(&format!("\\fB{code}\\fR"))),
            "exit status {code} missing:\n{section}"
        );
    }
}

#[test]
fn completions_generate_and_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let text = stdout(Command::new(BIN).args(["completions", shell]));
        for sub in SUBCOMMANDS {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(
            text.contains("state-dir"),
            "{shell} completions lack --state-dir"
        );
    }
    let bash = stdout(Command::new(BIN).args(["completions", "bash"]));
    assert!(bash.contains("complete -F"), "not a bash completion script");
    let zsh = stdout(Command::new(BIN).args(["completions", "zsh"]));
    assert!(
        zsh.starts_with("#compdef safe-reload"),
        "not a zsh completion"
    );
    let fish = stdout(Command::new(BIN).args(["completions", "fish"]));
    assert!(
        fish.contains("complete -c safe-reload"),
        "not a fish completion"
    );
}

/// The keys of `FileSettings` in src/settings.rs, as they are spelled in the file.
fn settings_keys() -> Vec<String> {
    let source = fs::read_to_string(Path::new(ROOT).join("src/settings.rs")).expect("settings.rs");
    let body = source
        .split_once("pub struct FileSettings {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(body, _)| body)
        .expect("FileSettings struct");
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.replace('_', "-"))
        .collect()
}

fn targets_with_settings(settings: &Path, work: &Path) -> Output {
    let conf = work.join("nginx.conf");
    fs::write(
        &conf,
        "events {}\nhttp {\n  server {\n    listen 127.0.0.1:8080;\n    \
         location / { proxy_pass http://127.0.0.1:3000; }\n  }\n}\n",
    )
    .expect("write nginx.conf");
    Command::new(BIN)
        .arg("--config")
        .arg(settings)
        .args(["targets", "--json", "-c"])
        .arg(&conf)
        .output()
        .expect("run safe-reload")
}

#[test]
fn default_settings_file_parses_as_shipped_and_with_every_key_set() {
    let work = tempfile::tempdir().expect("tempdir");
    let shipped = Path::new(ROOT).join("packaging/safe-reload.toml");
    let out = targets_with_settings(&shipped, work.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["outcome"], "ok", "{report}");

    // Uncomment every `#key = value` line: each documented default must be a real key with a
    // valid value (unknown keys are refused), and every key the program reads is documented.
    let text = fs::read_to_string(&shipped).expect("read settings");
    let mut documented = Vec::new();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| is_key(k)) => {
                documented.push(rest.split_once(" = ").expect("key").0.to_string());
                format!("{rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let all_set = work.path().join("all-set.toml");
    fs::write(&all_set, uncommented).expect("write");
    let out = targets_with_settings(&all_set, work.path());
    assert!(
        out.status.success(),
        "every key set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = settings_keys();
    expected.sort();
    documented.sort();
    assert_eq!(documented, expected, "keys documented vs keys read");
}

fn is_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

#[test]
fn systemd_drop_in_replaces_exec_reload_without_recursion() {
    let text = fs::read_to_string(
        Path::new(ROOT).join("packaging/systemd/nginx.service.d/safe-reload.conf"),
    )
    .expect("drop-in");
    let settings: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(settings[0], "[Service]");
    // A drop-in adds to the list of ExecReload= commands unless the list is cleared first.
    assert_eq!(settings[1], "ExecReload=");
    let exec = settings[2].strip_prefix("ExecReload=").expect("ExecReload");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/bin/safe-reload");
    assert!(argv.contains(&"-y"), "{exec}");
    assert!(
        !exec.contains("reload-cmd"),
        "would call systemctl reload from within it"
    );
    let timeout = settings
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStartSec="))
        .expect("TimeoutStartSec bounds ExecReload=");
    let seconds: u64 = timeout.parse().expect("seconds");
    // Two nginx -t (120 s), two reload proofs (60 s), two health windows (3 s), probes (1 s).
    let worst_case = 2 * 120 + 2 * 60 + 2 * 3 + 1;
    assert!(seconds >= worst_case, "{seconds} < {worst_case}");
    // The flags the drop-in passes exist.
    run(Command::new(BIN).args(&argv[1..]).args(["man"]));
}
