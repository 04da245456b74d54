//! `edit` on a terminal, as an operator sees it: a refused edit offers to edit again, show the
//! diff, or quit; editing again and confirming the reload puts the fixed edit live. The terminal
//! is a real pty from util-linux `script`; the editor is a small script that writes the wrong
//! port the first time and the right one the second, and answers are typed only once their
//! prompt is on the screen.

mod output_util;
mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use output_util::*;
use support::*;

const SCRIPT: &str = "/usr/bin/script";

/// A command on a pty; what it prints is collected as it comes.
struct Pty {
    child: std::process::Child,
    screen: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Pty {
    fn start(cmd: &Command) -> Pty {
        let mut line = vec![shell_quote(cmd.get_program().to_string_lossy().as_ref())];
        line.extend(
            cmd.get_args()
                .map(|a| shell_quote(a.to_string_lossy().as_ref())),
        );
        let mut child = Command::new(SCRIPT)
            .args(["-qefc", &line.join(" "), "/dev/null"])
            .envs(
                cmd.get_envs()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start script(1)");
        let mut out = child.stdout.take().expect("stdout");
        let screen = Arc::new(Mutex::new(String::new()));
        let sink = screen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("screen").push_str(&text);
            }
        });
        Pty {
            child,
            screen,
            reader: Some(reader),
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().expect("screen").clone()
    }

    /// Wait until `prompt` has appeared `nth` times, then type `answer` and Enter.
    fn answer(&mut self, prompt: &str, nth: usize, answer: &str) {
        let shown = wait_for(Duration::from_secs(20), || {
            self.screen().matches(prompt).count() >= nth
        });
        assert!(shown, "no {prompt:?} (#{nth}) on screen:\n{}", self.screen());
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .expect("type");
        stdin.flush().expect("flush");
    }

    fn wait(mut self) -> (Option<i32>, String) {
        let done = wait_for(Duration::from_secs(30), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !done {
            let _ = self.child.kill();
        }
        let status = self.child.wait().expect("wait").code();
        // The reader ends when the pty closes, after the last output.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.screen())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn on_a_terminal_a_refused_edit_can_be_diffed_and_edited_again() {
    if !std::path::Path::new(SCRIPT).exists() {
        eprintln!("skipped: {SCRIPT} (util-linux) is not installed");
        return;
    }
    let site = Site::started_with_baseline();
    let v2 = HttpBackend::start(SocketAddr::new(site.ip, 0), "app-v2");
    let wrong = SocketAddr::new(site.ip, free_port(site.ip)).to_string();
    let tools = tempfile::tempdir().expect("tempdir");
    let editor = tools.path().join("editor.sh");
    let counter = tools.path().join("count");
    std::fs::write(
        &editor,
        format!(
            "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}\n\
             if [ $n = 1 ]; then sed -i 's|{app}|{wrong}|' \"$1\"; \
             else sed -i 's|{wrong}|{v2}|' \"$1\"; fi\n",
            c = counter.display(),
            app = site.app.host_port(),
            v2 = v2.host_port(),
        ),
    )
    .expect("write editor");
    let before = read(&site.nginx.conf);
    let mut cmd = site.cmd();
    cmd.args(["edit", &site.nginx.conf.display().to_string()])
        .env("EDITOR", format!("sh {}", editor.display()))
        .env("NO_COLOR", "1");
    let mut pty = Pty::start(&cmd);
    pty.answer("What now?", 1, "d");
    pty.answer("What now?", 2, "e");
    pty.answer("Reload nginx with this configuration?", 1, "y");
    let (status, screen) = pty.wait();
    assert_eq!(status, Some(0), "{screen}");
    // The first attempt was refused with the hint, the diff shown, the second went live.
    assert!(screen.contains(&format!("nothing listens on {wrong}")), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with('+') && !l.starts_with("+++") && l.contains(&wrong)),
        "no diff line adding {wrong}:\n{screen}"
    );
    assert!(screen.contains("reloaded:"), "{screen}");
    assert_ne!(read(&site.nginx.conf), before);
    assert_eq!(site.get().1, "app-v2");
}

#[test]
fn on_a_terminal_quitting_keeps_the_edit_and_the_file() {
    if !std::path::Path::new(SCRIPT).exists() {
        eprintln!("skipped: {SCRIPT} (util-linux) is not installed");
        return;
    }
    let site = Site::started_with_baseline();
    let wrong = SocketAddr::new(site.ip, free_port(site.ip)).to_string();
    let before = read(&site.nginx.conf);
    let mut cmd = site.cmd();
    cmd.args(["edit", &site.nginx.conf.display().to_string()])
        .env("EDITOR", format!("sed -i s|{}|{wrong}|", site.app.host_port()))
        .env("NO_COLOR", "1");
    let mut pty = Pty::start(&cmd);
    pty.answer("What now?", 1, "q");
    let (status, screen) = pty.wait();
    assert_eq!(status, Some(1), "{screen}");
    assert_eq!(read(&site.nginx.conf), before);
    let kept = site.kept_edits();
    assert_eq!(kept.len(), 1, "{screen}");
    assert!(screen.contains(&kept[0].display().to_string()), "{screen}");
    // The details are shown once, before the question, not again after it.
    assert_eq!(screen.matches("nothing listens on").count(), 1, "{screen}");
}
