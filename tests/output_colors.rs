//! Colors only on a terminal, never with `NO_COLOR`, always with `--color always`; with
//! `--color auto` on a real pty they appear. Checked on output that is painted: a refused check
//! (FAIL marks, hints) and the target list (bold addresses).

mod output_util;
mod support;

use std::net::SocketAddr;

use output_util::pty::Pty;
use output_util::*;
use support::*;

/// A site whose config points at a port nothing listens on: `check` fails with painted text.
fn broken_site() -> Site {
    let site = Site::start();
    let wrong = SocketAddr::new(site.ip, free_port(site.ip));
    site.nginx.write_http(&site.server_for(&wrong.to_string()));
    site
}

#[test]
fn no_escape_codes_without_a_terminal() {
    let site = broken_site();
    let out = site.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!out.stderr.is_empty());
    assert!(
        !has_escape(&out.stdout) && !has_escape(&out.stderr),
        "{}",
        text(&out)
    );
}

#[test]
fn no_escape_codes_with_no_color() {
    let site = broken_site();
    let out = site
        .cmd()
        .arg("check")
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !has_escape(&out.stdout) && !has_escape(&out.stderr),
        "{}",
        text(&out)
    );
}

#[test]
fn color_always_forces_escape_codes() {
    let site = broken_site();
    let out = site.run(&["check", "--color", "always"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(has_escape(&out.stderr), "{}", text(&out));
    let out = site.run(&["targets", "--color", "always"]);
    assert!(has_escape(&out.stdout), "{}", text(&out));
}

#[test]
fn on_a_terminal_colors_follow_no_color() {
    if !output_util::pty::available() {
        return;
    }
    let site = broken_site();
    let mut cmd = site.cmd();
    cmd.arg("targets");
    let (status, screen) = Pty::start(&cmd).wait();
    assert_eq!(status, Some(0), "{screen}");
    assert!(
        screen.contains("\x1b[1m"),
        "no bold on a terminal: {screen:?}"
    );
    cmd.env("NO_COLOR", "1");
    let (status, screen) = Pty::start(&cmd).wait();
    assert_eq!(status, Some(0), "{screen}");
    assert!(
        !screen.contains('\x1b'),
        "escape codes with NO_COLOR: {screen:?}"
    );
}

#[test]
fn json_mode_has_no_escape_codes_even_with_color_always() {
    let site = broken_site();
    let out = site.run(&["check", "--json", "--color", "always"]);
    assert!(!has_escape(&out.stdout), "{}", text(&out));
    assert_eq!(json(&out)["outcome"], "refused");
}

#[test]
fn a_spinner_shows_on_a_terminal_while_probes_wait_and_not_elsewhere() {
    if !output_util::pty::available() {
        return;
    }
    let site = Site::start();
    let hang = hanging_listener(site.ip);
    site.nginx
        .write_http(&site.server_for(&hang.addr.to_string()));
    let mut cmd = site.cmd();
    cmd.args(["probe", "--probe-timeout", "700ms"]);
    let (status, screen) = Pty::start(&cmd).wait();
    assert_eq!(status, Some(1), "{screen}");
    assert!(screen.contains("probing upstream targets"), "{screen:?}");
    let out = cmd.output().expect("run");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("probing upstream targets"),
        "{}",
        text(&out)
    );
}
