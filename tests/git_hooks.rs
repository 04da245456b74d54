//! The git hooks of `packaging/git-hooks/`, run by git itself against a real nginx: a push to a
//! bare repository whose `post-receive` deploys into the nginx's prefix, and a `git pull` in a
//! prefix that is itself a clone (`post-merge`). What each hook tells the pusher, which commit
//! it records as live, and what nginx serves afterwards.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::*;

/// The hooks as shipped.
const HOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/git-hooks");

/// `git ARGS` in `dir`, with none of this machine's git configuration, an identity for
/// commits, and what the hooks need to run safe-reload against the test's nginx: the nginx
/// binary and an empty settings file (so `/etc/safe-reload.toml` cannot leak in).
fn git(dir: &Path, settings: &Path, args: &[&str]) -> Output {
    git_with(Command::new("git"), dir, settings, args)
}

/// [`git`] through `cmd` (git itself, or a wrapper that runs it as another user).
fn git_with(mut cmd: Command, dir: &Path, settings: &Path, args: &[&str]) -> Output {
    let out = cmd
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.test")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.test")
        .env("SAFE_RELOAD_NGINX", NGINX)
        .env("SAFE_RELOAD_CONFIG", settings)
        .env_remove("SAFE_RELOAD_STATE_DIR")
        .env("NO_COLOR", "1")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    out
}

/// Install the shipped hook `name` into `hooks`.
fn install_hook(name: &str, hooks: &Path) {
    std::fs::create_dir_all(hooks).expect("hooks dir");
    let to = hooks.join(name);
    std::fs::copy(Path::new(HOOKS).join(name), &to).expect("copy the hook");
    let status = Command::new("chmod").arg("+x").arg(&to).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "chmod +x {}",
        to.display()
    );
}

/// A site on its own loopback address: `/` proxies to `upstream`, `extra` adds locations.
fn site(listen: SocketAddr, upstream: &str, extra: &str) -> String {
    format!(
        "server {{ listen {listen}; server_name site.test; \
         location / {{ proxy_pass http://{upstream}; }} {extra} }}"
    )
}

/// A bare repository whose `post-receive` deploys into a running nginx's prefix, and a clone
/// that pushes to it.
struct Deploy {
    nginx: TestNginx,
    /// Holds the state directory the hook's runs use.
    _sr: SafeReload,
    listen: SocketAddr,
    bare: PathBuf,
    work: PathBuf,
    settings: PathBuf,
    _dir: tempfile::TempDir,
}

impl Deploy {
    /// nginx running `http`, recorded with `init`, and the repository set up to deploy into it.
    fn start(listen: SocketAddr, http: &str) -> Deploy {
        let nginx = TestNginx::start(http);
        let sr = SafeReload::new(&nginx);
        sr.init();
        let dir = tempfile::tempdir().expect("tempdir");
        let (bare, work) = (dir.path().join("nginx.git"), dir.path().join("work"));
        let settings = dir.path().join("safe-reload.toml");
        std::fs::write(&settings, "").expect("settings");
        let top = dir.path();
        git(
            top,
            &settings,
            &["init", "-q", "--bare", "-b", "main", "nginx.git"],
        );
        git(top, &settings, &["init", "-q", "-b", "main", "work"]);
        install_hook("post-receive", &bare.join("hooks"));
        let args = format!(
            "-c {} -p {}/ --state-dir {}",
            nginx.conf.display(),
            nginx.prefix.display(),
            sr.state.display()
        );
        for (key, value) in [
            ("safe-reload.deploy-dir", nginx.prefix.display().to_string()),
            ("safe-reload.bin", BIN.to_string()),
            ("safe-reload.args", args),
        ] {
            git(&bare, &settings, &["config", key, &value]);
        }
        Deploy {
            nginx,
            _sr: sr,
            listen,
            bare,
            work,
            settings,
            _dir: dir,
        }
    }

    /// Commit nginx.conf with this `http {}` body and push it; the commit and what the hook
    /// told the pusher.
    fn push(&self, http: &str, message: &str) -> (String, String) {
        std::fs::write(self.work.join("nginx.conf"), self.nginx.render(http)).expect("write");
        git(&self.work, &self.settings, &["add", "nginx.conf"]);
        git(&self.work, &self.settings, &["commit", "-q", "-m", message]);
        let rev = self.rev(&self.work, "HEAD");
        let bare = self.bare.display().to_string();
        let out = git(&self.work, &self.settings, &["push", "-q", &bare, "main"]);
        (rev, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn rev(&self, repo: &Path, name: &str) -> String {
        let out = git(repo, &self.settings, &["rev-parse", name]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The commit the hook recorded as live.
    fn deployed(&self) -> String {
        self.rev(&self.bare, "refs/safe-reload/deployed")
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.listen, "site.test", path).expect("the site answers")
    }
}

/// Regression (#19): exit 4 also means "the change went live, a site failed before it and
/// still does, nothing was rolled back", and post-receive said "ROLLBACK FAILED ... could not be
/// restored" for it and left `refs/safe-reload/deployed` on the commit before, so the next
/// refused push put that older commit's files back while nginx ran the newer one. The hook now
/// reads the outcome from `--report`: push A (live), push B while its backend is down (exit 4,
/// already failing, B live), push C (refused): the files go back to B, which nginx serves.
#[test]
fn post_receive_already_failing_push_is_recorded_live_and_not_called_a_failed_rollback() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let backend = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let upstream = backend.host_port();
    let a = site(listen, &upstream, "");
    let d = Deploy::start(listen, &a);

    let (rev_a, said) = d.push(&a, "A");
    assert!(said.contains("is live and verified"), "push A:\n{said}");
    assert_eq!(d.deployed(), rev_a, "push A:\n{said}");

    drop(backend);
    let b = site(listen, &upstream, "location = /b { return 200 \"B\"; }");
    let (rev_b, said) = d.push(&b, "B");
    assert!(!said.contains("ROLLBACK FAILED"), "push B:\n{said}");
    assert!(said.contains("ALREADY FAILING"), "push B:\n{said}");
    assert!(said.contains("nothing was rolled back"), "push B:\n{said}");
    assert_eq!(d.get("/b"), (200, "B".into()), "B is live");
    assert_eq!(d.get("/").0, 502, "and / fails as it did before B");
    assert_eq!(d.deployed(), rev_b, "B went live: push B:\n{said}");

    let dead = SocketAddr::new(ip, free_port(ip)).to_string();
    let c = site(listen, &dead, "location = /b { return 200 \"B\"; }");
    let (_, said) = d.push(&c, "C");
    assert!(said.contains("REFUSED"), "push C:\n{said}");
    assert!(
        said.contains(&format!("back at {}", &rev_b[..7])),
        "push C:\n{said}"
    );
    assert_eq!(
        std::fs::read_to_string(&d.nginx.conf).expect("conf"),
        d.nginx.render(&b),
        "the files are B's, the configuration nginx runs"
    );
    assert_eq!(d.get("/b"), (200, "B".into()), "nginx still serves B");
}

/// Regression (#19): post-merge said "ROLLBACK FAILED" for a merge that went live while a site
/// already failed before it (exit 4, outcome already_failing, nothing rolled back).
#[test]
fn post_merge_already_failing_merge_is_not_called_a_failed_rollback() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let dead = SocketAddr::new(ip, free_port(ip)).to_string();
    let live = TestNginx::start(&site(listen, &dead, ""));
    let sr = SafeReload::new(&live);
    sr.init();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("safe-reload.toml");
    std::fs::write(&settings, "").expect("settings");
    let run = |repo: &Path, args: &[&str]| git(repo, &settings, args);

    // The prefix is a clone of the deploy branch: push it to an origin, change it elsewhere.
    let prefix = &live.prefix;
    std::fs::write(prefix.join(".gitignore"), "logs/\ntmp/\n").expect(".gitignore");
    run(prefix, &["init", "-q", "-b", "main"]);
    run(prefix, &["add", "nginx.conf", ".gitignore"]);
    run(prefix, &["commit", "-q", "-m", "live"]);
    let origin = dir.path().join("origin.git").display().to_string();
    run(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "origin.git"],
    );
    run(prefix, &["push", "-q", &origin, "main"]);
    run(dir.path(), &["clone", "-q", &origin, "work"]);
    let work = dir.path().join("work");
    let change = site(listen, &dead, "location = /b { return 200 \"B\"; }");
    std::fs::write(work.join("nginx.conf"), live.render(&change)).expect("write");
    run(&work, &["commit", "-q", "-am", "B"]);
    run(&work, &["push", "-q", "origin", "main"]);

    install_hook("post-merge", &prefix.join(".git/hooks"));
    let args = format!(
        "-p {}/ --state-dir {}",
        prefix.display(),
        sr.state.display()
    );
    run(prefix, &["config", "safe-reload.bin", BIN]);
    run(prefix, &["config", "safe-reload.conf", "nginx.conf"]);
    run(prefix, &["config", "safe-reload.args", &args]);
    let out = run(prefix, &["pull", "-q", "--no-rebase", &origin, "main"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("ROLLBACK FAILED"), "{said}");
    assert!(said.contains("ALREADY FAILING"), "{said}");
    assert!(said.contains("nothing was rolled back"), "{said}");
    let got = http_get(listen, "site.test", "/b").expect("the site answers");
    assert_eq!(got, (200, "B".into()), "the merge is live");
}

/// The pre-commit hook on a repository whose configuration listens on 80 and 443, as every
/// real one does (#6: `check --untrusted` tested the copy unprivileged and nginx -t could not
/// bind port 80, so no such commit could be made). Run by git as root (nginx -t then runs as
/// `nobody`) and, when we are root, by git as `nobody`, as a developer's commit runs it.
#[test]
fn pre_commit_commits_a_configuration_that_listens_on_80_and_443() {
    let dir = tempfile::tempdir().expect("tempdir");
    let top = dir.path();
    let settings = top.join("safe-reload.toml");
    std::fs::write(&settings, "").expect("settings");
    let repo = top.join("repo");
    git(top, &settings, &["init", "-q", "-b", "main", "repo"]);
    install_hook("pre-commit", &repo.join(".git/hooks"));
    git(&repo, &settings, &["config", "safe-reload.bin", BIN]);
    let (cert, key) = self_signed(&repo, "site.test");
    let conf = |name: &str| {
        format!(
            "events {{}}\nhttp {{\n  server {{\n    listen 80;\n    server_name {name};\n    \
             return 301 https://$host$request_uri;\n  }}\n  server {{\n    listen 443 ssl;\n    \
             server_name {name};\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
             location / {{ proxy_pass http://127.0.0.1:9; }}\n  }}\n}}\n",
            cert.file_name().and_then(|n| n.to_str()).expect("name"),
            key.file_name().and_then(|n| n.to_str()).expect("name"),
        )
    };
    std::fs::write(repo.join("nginx.conf"), conf("site.test")).expect("write");
    git(&repo, &settings, &["add", "."]);
    git(&repo, &settings, &["commit", "-q", "-m", "site"]);

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    // The developer's own copy of the binary: the checkout's target/ may sit under a directory
    // only root can enter (a fresh clone under a private temporary directory does).
    let bin = top.join("safe-reload");
    std::fs::copy(BIN, &bin).expect("copy the binary");
    git(
        &repo,
        &settings,
        &["config", "safe-reload.bin", bin.to_str().expect("path")],
    );
    // The repository and the settings file are the developer's, here `nobody`'s.
    let status = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(&repo)
        .arg(&settings)
        .status();
    assert!(status.is_ok_and(|s| s.success()), "chown");
    std::fs::set_permissions(top, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(repo.join("nginx.conf"), conf("www.site.test")).expect("write");
    let gid = Command::new("id")
        .args(["-g", "nobody"])
        .output()
        .expect("id");
    let gid = String::from_utf8_lossy(&gid.stdout).trim().to_string();
    let as_nobody = || {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=nobody",
            &format!("--regid={gid}"),
            "--clear-groups",
            "git",
        ]);
        cmd
    };
    git_with(as_nobody(), &repo, &settings, &["add", "."]);
    git_with(
        as_nobody(),
        &repo,
        &settings,
        &["commit", "-q", "-m", "www"],
    );
    let log = git_with(as_nobody(), &repo, &settings, &["log", "--format=%s"]);
    assert_eq!(String::from_utf8_lossy(&log.stdout), "www\nsite\n");
}
