//! `scripts/demo.sh`, the README's first command, runs to the end with the real binary: the good
//! change applied, the wrong port refused with the hint naming the right one, the 502 rolled
//! back, `history`; and leaves no process and no file behind, also when interrupted (Ctrl-C is
//! SIGINT to the demo's whole process group, as a terminal sends it).

mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::wait_for;

const BIN: &str = env!("CARGO_BIN_EXE_safe-reload");

fn demo() -> Command {
    let mut c = Command::new("bash");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh"))
        .env("SAFE_RELOAD_BIN", BIN)
        .env("NO_COLOR", "1")
        .env_remove("SAFE_RELOAD_STATE_DIR")
        .stdin(Stdio::null())
        .process_group(0);
    c
}

/// The demo's process group, killed on drop if a test fails half way.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            // SAFETY: signalling the process group this test created.
            unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// The demo's temp dir, from its first line.
fn demo_dir(out: &str) -> PathBuf {
    let at = out
        .find("under /tmp/safe-reload-demo.")
        .expect("demo dir printed")
        + 6;
    PathBuf::from(out[at..].split_whitespace().next().expect("path"))
}

/// Processes whose command line, working directory or open files are under `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let cwd = std::fs::read_link(base.join("cwd")).unwrap_or_default();
        let fds: Vec<PathBuf> = std::fs::read_dir(base.join("fd"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|f| std::fs::read_link(f.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle)
            || cwd.starts_with(dir)
            || fds.iter().any(|f| f.starts_with(dir))
        {
            found.push(format!("{pid} {}", String::from_utf8_lossy(&cmdline)));
        }
    }
    found
}

fn assert_clean(dir: &Path, out: &str) {
    let gone = wait_for(Duration::from_secs(5), || processes_using(dir).is_empty());
    assert!(gone, "left running: {:?}\n{out}", processes_using(dir));
    assert!(!dir.exists(), "{} is still there\n{out}", dir.display());
}

#[test]
fn the_demo_runs_to_the_end_and_leaves_nothing_behind() {
    let start = Instant::now();
    let out = demo().output().expect("run scripts/demo.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    let app = text
        .split("in front of an app on ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .expect("app address printed");
    for want in [
        "reloaded: the new configuration is live and verified",
        "X-Demo: v2",
        &format!("if that is the backend, point the config at {app}"),
        "refused: nginx was not reloaded",
        "closed it without answering the HTTP probe",
        "HTTP 502",
        "through the shadow nginx answered HTTP 502",
        "rolled back: the change failed after the reload",
        "hello from the app",
        "* = last good",
        "rejected",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    assert_clean(&demo_dir(&text), &text);
}

#[test]
fn an_interrupted_demo_cleans_up_too() {
    let mut child = Group(
        demo()
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scripts/demo.sh"),
    );
    let mut stdout = child.0.stdout.take().expect("stdout");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("out")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let text = || seen.lock().expect("out").clone();
    // Interrupt once nginx and the app run and the first change is under way.
    assert!(
        wait_for(Duration::from_secs(30), || text().contains("==> 1.")),
        "{}",
        text()
    );
    let dir = demo_dir(&text());
    // SAFETY: SIGINT to the process group this test created, as Ctrl-C would.
    unsafe { libc::kill(-(child.0.id() as i32), libc::SIGINT) };
    let ended = wait_for(Duration::from_secs(20), || {
        child.0.try_wait().ok().flatten().is_some()
    });
    assert!(ended, "the demo did not stop on SIGINT:\n{}", text());
    let _ = reader.join();
    let status = child.0.wait().expect("status");
    assert_ne!(status.code(), Some(0), "{}", text());
    assert_clean(&dir, &text());
}
