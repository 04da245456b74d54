//! `edit` on a terminal, as an operator sees it: a refused edit offers to edit again, show the
//! diff, or quit; editing again and confirming the reload puts the fixed edit live. The terminal
//! is a real pty from util-linux `script`; the editor is a small script that writes the wrong
//! port the first time and the right one the second, and answers are typed only once their
//! prompt is on the screen.

mod output_util;
mod support;

use std::net::SocketAddr;

use output_util::pty::Pty;
use output_util::*;
use support::*;

#[test]
fn on_a_terminal_a_refused_edit_can_be_diffed_and_edited_again() {
    if !output_util::pty::available() {
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
    assert!(
        screen.contains(&format!("nothing listens on {wrong}")),
        "{screen}"
    );
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
    if !output_util::pty::available() {
        return;
    }
    let site = Site::started_with_baseline();
    let wrong = SocketAddr::new(site.ip, free_port(site.ip)).to_string();
    let before = read(&site.nginx.conf);
    let mut cmd = site.cmd();
    cmd.args(["edit", &site.nginx.conf.display().to_string()])
        .env(
            "EDITOR",
            format!("sed -i s|{}|{wrong}|", site.app.host_port()),
        )
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
