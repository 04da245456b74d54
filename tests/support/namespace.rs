//! Private Linux namespaces for tests that must not see this machine as it is:
//!
//! - [`fresh_machine`]: run a command in a private mount namespace where the directories a
//!   machine gains by running nginx (`/var/lib/nginx`, `/var/log/nginx`) are empty tmpfs
//!   mounts, as on a machine where nginx never ran (CI).
//! - [`in_private_network`]: run the calling test itself again inside a private network
//!   namespace (`unshare -n`, then `ip link set lo up`): only loopback exists there, so a name
//!   that must not resolve is never sent to this machine's resolver; optionally with an
//!   `/etc/hosts` of the test's own (a bind mount in a private mount namespace).
//!
//! Both need root; unprivileged, they say so on stderr (nothing is skipped silently).

#![allow(clippy::print_stderr)] // a skipped or unisolated run says why

use super::*;

/// Directories nginx fills as it runs; emptied by [`fresh_machine`].
const NGINX_STATE_DIRS: [&str; 2] = ["/var/lib/nginx", "/var/log/nginx"];
/// Set in the environment of a test run again by [`in_private_network`].
const INSIDE: &str = "SAFE_RELOAD_TEST_NETNS";
/// Exit status of the wrapper when a directory could not be emptied.
pub const NOT_FRESH: i32 = 97;

/// Why namespaces are not available here, or `None` when they are.
pub fn namespaces_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: unshare(2) and mount(2) need root".into());
    }
    let unshare = Command::new("unshare").arg("--version").output();
    if !unshare.is_ok_and(|o| o.status.success()) {
        return Some("no unshare(1) on this machine (util-linux)".into());
    }
    None
}

/// `cmd` as it would run on a machine where nginx never ran: in a private mount namespace
/// with an empty tmpfs on each of nginx's state directories that exists here. The wrapper
/// checks they are empty before running `cmd` and exits [`NOT_FRESH`] if not. Unprivileged,
/// `cmd` is returned as it is, after saying why on stderr.
pub fn fresh_machine(cmd: Command) -> Command {
    if let Some(why) = namespaces_unavailable() {
        eprintln!("running without an empty /var/lib/nginx: {why}");
        return cmd;
    }
    let script = format!(
        "for d in {dirs}; do\n\
           if [ -d \"$d\" ]; then mount -t tmpfs -o mode=0755 tmpfs \"$d\" || exit {NOT_FRESH}; fi\n\
           if [ -d \"$d\" ] && [ -n \"$(ls -A \"$d\")\" ]; then echo \"$d is not empty\" >&2; exit {NOT_FRESH}; fi\n\
         done\n\
         exec \"$@\"\n",
        dirs = NGINX_STATE_DIRS.join(" ")
    );
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// For a test whose body must run in a private network namespace. Returns true inside it (run
/// the body). Outside, it runs this test binary again with `--exact test` inside
/// `unshare -n` (loopback up), asserts that run passed, and returns false; unprivileged, it
/// says why on stderr and returns false.
///
/// ```ignore
/// if !in_private_network("resolver::a_name_only_the_resolver_knows") { return; }
/// ```
pub fn in_private_network(test: &str) -> bool {
    in_private_network_with_hosts(test, None)
}

/// [`in_private_network`], and with `hosts` as `/etc/hosts` there (a bind mount in a private
/// mount namespace), for names that must resolve to given loopback addresses.
pub fn in_private_network_with_hosts(test: &str, hosts: Option<&str>) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    if let Some(why) = namespaces_unavailable() {
        eprintln!("SKIPPED {test}: needs a private network namespace; {why}");
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut script = String::from("ip link set lo up || exit 1\n");
    let mut unshare = vec!["-n"];
    if let Some(text) = hosts {
        let file = dir.path().join("hosts");
        std::fs::write(&file, text).expect("write the namespace's hosts file");
        script.push_str(&format!(
            "mount --bind '{}' /etc/hosts || exit 1\n",
            file.display()
        ));
        unshare.extend(["-m", "--propagation", "private"]);
    }
    script.push_str("exec \"$@\"\n");
    let out = Command::new("unshare")
        .args(&unshare)
        .args(["sh", "-c", &script, "sh"])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let text = cli::text(&out);
    assert!(
        out.status.success(),
        "{test} failed in its network namespace:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "{test} did not run in its network namespace (is the name exact?):\n{text}"
    );
    false
}

/// True when this process runs in a namespace made by [`in_private_network`].
pub fn inside_private_network() -> bool {
    std::env::var_os(INSIDE).is_some()
}
