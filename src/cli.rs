//! The command line: clap derive structs whose doc comments are the help text. Global flags are
//! accepted before or after the subcommand. Nothing here runs anything; `pipeline` does.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit status:
  0    reloaded and verified; or check/probe found nothing wrong
  1    refused before reload (nginx -t, a probe or a preflight check failed): nginx untouched
  2    usage, environment or internal error (no nginx binary, lock held, unreadable file)
  3    reloaded, the change broke a check that passed before it, rolled back: the previous
       config is live and back to its baseline
  4    an operator must act now: the rollback failed, or the restored config fails checks
       it passed before; or a site failed before the change and still does (502, 504, no
       answer; not rolled back). A site slower than --health-timeout before and after the
       change is a warning (exit 0), not this
  130  interrupted before anything changed

Examples:
  safe-reload                      test, probe, diff, reload, verify; roll back on 502
  safe-reload check                everything short of reloading (git hooks, CI)
  safe-reload probe                does every backend speak its directive's protocol?
  safe-reload targets -c site.conf list upstream targets with file:line (no nginx needed)
  safe-reload -y --health http://example.com/health --resolve example.com:80:127.0.0.1";

/// Reload nginx without breaking the site.
///
/// safe-reload replaces `systemctl reload nginx`: it tests the configuration, checks that every
/// upstream it names is listening, shows what changed since the last good configuration,
/// reloads, proves the reload took effect, checks the site through nginx, and puts the last good
/// configuration back if the change turned into 502 Bad Gateway.
#[derive(Debug, Parser)]
#[command(name = "safe-reload", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags every command takes, before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// nginx binary to use [default: `nginx` on PATH, then /usr/sbin/nginx]
    #[arg(long, global = true, env = "SAFE_RELOAD_NGINX", value_name = "PATH")]
    pub nginx: Option<PathBuf>,

    /// Main nginx configuration file [default: nginx -V's --conf-path]
    #[arg(short = 'c', long = "conf", global = true, value_name = "FILE")]
    pub conf: Option<PathBuf>,

    /// nginx prefix directory (-p) [default: nginx -V's --prefix]
    #[arg(short = 'p', long, global = true, value_name = "DIR")]
    pub prefix: Option<PathBuf>,

    /// Where snapshots, last-good, the journal and the lock live [default: /var/lib/safe-reload]
    #[arg(long, global = true, env = "SAFE_RELOAD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Settings file with defaults for these flags [default: /etc/safe-reload.toml if present]
    #[arg(
        long = "config",
        global = true,
        env = "SAFE_RELOAD_CONFIG",
        value_name = "FILE"
    )]
    pub config_file: Option<PathBuf>,

    /// Reload with this command instead of SIGHUP to the master, e.g. "systemctl reload nginx";
    /// one that fails or does not make nginx reload is a refusal (exit 1), not a rollback
    #[arg(long, global = true, value_name = "CMD")]
    pub reload_cmd: Option<String>,

    /// Health request through nginx after the reload (repeatable); replaces the derived ones.
    /// `http://user:pass@host/` sends Basic credentials, which are never shown or stored
    #[arg(long, global = true, value_name = "URL")]
    pub health: Vec<String>,

    /// Header sent with every health request, e.g. 'X-Token: abc' (repeatable)
    #[arg(long, global = true, value_name = "NAME: VALUE")]
    pub health_header: Vec<String>,

    /// Time allowed for each health request, not cut by the verification window; a site slower
    /// than this before and after a change is not verified (a warning), one slower only after
    /// it is rolled back [default: 2s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub health_timeout: Option<Duration>,

    /// Connect health requests for HOST:PORT to ADDR, like curl --resolve (repeatable)
    #[arg(long, global = true, value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,

    /// Health statuses that count as success (repeatable) [default: anything but 502/504]
    #[arg(long, global = true, value_name = "CODE")]
    pub expect_status: Vec<u16>,

    /// Do not probe upstream targets (for machines that cannot see the backends)
    #[arg(long, global = true)]
    pub no_probe: bool,

    /// Do not run the candidate in a throwaway "shadow" nginx on loopback ports before the
    /// reload (its health checks then only run after the reload)
    #[arg(long, global = true)]
    pub no_shadow: bool,

    /// Time allowed for each probe (the connect and the protocol exchange), e.g. 500ms, 2s
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub probe_timeout: Option<Duration>,

    /// Upstream target allowed to fail probing, as shown by `targets` (repeatable)
    #[arg(long, global = true, value_name = "ADDRESS")]
    pub allow_fail: Vec<String>,

    /// Do not ask before reloading
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// Reload even when nothing changed since the last good configuration
    #[arg(long, global = true)]
    pub force: bool,

    /// Wait for another run's lock instead of exiting with status 2
    #[arg(long, global = true)]
    pub wait: bool,

    /// Print one JSON document on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Also write the JSON document to FILE, whatever is printed (for scripts that show the
    /// text and read the outcome)
    #[arg(long, global = true, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// When to use colors
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub color: ColorWhen,

    /// Less output (-q: results only)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// More output (-v: every step with timings)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `--color` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// Shells `completions` can generate for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Test, probe, diff, reload, prove, verify; roll back on failure (the default)
    Reload,
    /// Parse, nginx -t, probe upstreams and preflight checks, diff; never reloads
    Check {
        /// Config from an untrusted source (a git hook): refuse load_module, includes outside
        /// the tree, Lua, Perl and njs, and run nginx -t in a throwaway prefix; listens are
        /// not checked against this machine
        #[arg(long)]
        untrusted: bool,
    },
    /// List every upstream target with file:line (no nginx, no network needed)
    Targets,
    /// Probe every upstream target in its directive's protocol and explain failures
    ///
    /// Each target is connected to, then spoken to in the protocol of the directive that names
    /// it: proxy_pass http:// an OPTIONS * request (any status line passes); https://, grpcs://
    /// and suwsgi:// a TLS ClientHello with the SNI nginx sends; fastcgi_pass FCGI_GET_VALUES;
    /// uwsgi_pass the uwsgi ping, then the least request if the server closes on it; grpc_pass
    /// the HTTP/2 preface and SETTINGS; memcached_pass `version`. Stream targets and scgi_pass
    /// are connect-only; a target only `listen ... udp` servers use is sent nothing: on this
    /// machine it must have a UDP socket bound (/proc/net/udp), elsewhere it is not probed (a
    /// warning). A backend that accepts and closes, or answers in another protocol, is
    /// a failure with a hint naming the mismatch; one that stays silent past the timeout, or
    /// refuses our TLS hello with an alert, is a warning.
    Probe,
    /// Show the candidate configuration against the last good one
    Diff,
    /// Edit a configuration file safely, like visudo: the edit goes live only if it verifies
    Edit {
        /// The file to edit
        file: PathBuf,
    },
    /// Record the current configuration as the known-good baseline (after nginx -t passes)
    Init,
    /// List snapshots: time, outcome, who, files changed
    History,
    /// Restore a snapshot through test, reload and verify [default: the last good one when
    /// the files differ from it, else the good one before it]
    Rollback {
        /// Snapshot id, as shown by `history`
        id: Option<String>,
    },
    /// Is nginx running, does the config on disk differ from last-good, is a run unfinished?
    Status,
    /// Finish a run that was interrupted as its journal says: before the signal, check the edit
    /// on disk and keep it if it verifies; once nginx was signalled, roll back to last-good
    Recover,
    /// Print the man page (roff) on stdout
    Man,
    /// Print shell completions on stdout
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("{e} (write e.g. 500ms, 2s, 1m)"))
}

impl Cli {
    /// The subcommand, `reload` when none was given.
    pub fn subcommand(&self) -> Command {
        self.command.clone().unwrap_or(Command::Reload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_before_or_after_subcommand() {
        let a = Cli::try_parse_from(["safe-reload", "--json", "-c", "/x", "targets"]).expect("a");
        let b = Cli::try_parse_from(["safe-reload", "targets", "--json", "-c", "/x"]).expect("b");
        assert!(a.global.json && b.global.json);
        assert_eq!(a.global.conf, b.global.conf);
    }

    #[test]
    fn durations_read_like_humans_write_them() {
        let c = Cli::try_parse_from(["safe-reload", "probe", "--probe-timeout", "500ms"])
            .expect("parses");
        assert_eq!(c.global.probe_timeout, Some(Duration::from_millis(500)));
    }
}
