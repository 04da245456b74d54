//! A command on a real pty (util-linux `script`), for what only happens on a terminal:
//! prompts, colors in `auto` mode, spinners.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::wait_for;

/// util-linux script(1).
pub const SCRIPT: &str = "/usr/bin/script";

/// A command on a pty; what it prints is collected as it comes.
pub struct Pty {
    child: std::process::Child,
    screen: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Pty {
    /// Start `cmd` (program, arguments and environment) on a pty.
    pub fn start(cmd: &Command) -> Pty {
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

    /// Everything printed so far.
    pub fn screen(&self) -> String {
        self.screen.lock().expect("screen").clone()
    }

    /// Wait until `prompt` has appeared `nth` times, then type `answer` and Enter.
    pub fn answer(&mut self, prompt: &str, nth: usize, answer: &str) {
        let shown = wait_for(Duration::from_secs(20), || {
            self.screen().matches(prompt).count() >= nth
        });
        assert!(
            shown,
            "no {prompt:?} (#{nth}) on screen:\n{}",
            self.screen()
        );
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .expect("type");
        stdin.flush().expect("flush");
    }

    /// Wait for the end; exit status and the whole screen.
    pub fn wait(mut self) -> (Option<i32>, String) {
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

/// Whether util-linux script(1) is here; tests that need a pty skip (and say so) without it.
#[allow(clippy::print_stderr)] // a skipped test says why
pub fn available() -> bool {
    if std::path::Path::new(SCRIPT).exists() {
        return true;
    }
    eprintln!("skipped: {SCRIPT} (util-linux) is not installed");
    false
}
