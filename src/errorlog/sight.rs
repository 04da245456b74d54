//! Whether a configuration's error logs show what the log-based checks read. Verification
//! after a reload reads the upstream errors nginx logs at `error` level (`connect() failed`,
//! `upstream prematurely closed connection`, ...), because failover hides them from clients;
//! the proof of a reload reads its `[emerg]` lines. An `error_log` that is not a file
//! (`syslog:`, `stderr`, `memory:`), that discards (`/dev/null`), or whose level is above
//! `error` (`crit`, `alert`, `emerg`) shows none of the first, and only a file shows the second:
//! those checks cannot run there, and the report must say so instead of counting silence as
//! health.
//!
//! nginx writes a request's lines to the `error_log`s of the innermost context that has any
//! (location, server, `http`, main), else to the build's default; every log of that context
//! gets them. So a server is blind when no log of its own context (or of one of its
//! locations) is a file at `error` level or below. Pure: the directive tree in, the blind spots
//! out.

use std::path::Path;

use serde::Serialize;

use super::Level;
use crate::conf::{Config, Directive};

/// An `error_log` the log-based checks cannot read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unread {
    /// As written, `error_log syslog:server=127.0.0.1:5140 warn`; the build's default is
    /// `error_log stderr` with `at` empty.
    pub directive: String,
    /// `nginx.conf:5`, relative to the configuration's directory; empty for the build's
    /// default.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub at: String,
    /// `sent to syslog, not a file`, `level crit: nginx does not write [error] lines there`.
    pub why: String,
}

impl Unread {
    /// `error_log syslog:server=127.0.0.1:5140 (nginx.conf:5): sent to syslog, not a file`.
    pub fn describe(&self) -> String {
        match self.at.as_str() {
            "" => format!("{} (the build's default): {}", self.directive, self.why),
            at => format!("{} ({at}): {}", self.directive, self.why),
        }
    }
}

/// A server whose requests nginx logs only where upstream errors cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blind {
    /// The server block, `sites.conf:12`: as the checks' coverage names it.
    pub server: String,
    /// Its logs (or those of its locations) that do not show upstream errors.
    pub logs: Vec<Unread>,
}

/// What the log-based checks cannot see in one configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sight {
    /// The `http` servers that are blind, in file order.
    pub servers: Vec<Blind>,
    /// The main context's logs when none is a file: the reload's `[emerg]` lines are not read,
    /// and its proof rests on the workers alone.
    pub reload: Vec<Unread>,
}

/// One `error_log` as nginx would write to it.
#[derive(Debug, Clone)]
struct Sink {
    target: String,
    level: Option<String>,
    at: String,
}

impl Sink {
    fn of(d: &Directive, root: &Path) -> Sink {
        let file = d.file.strip_prefix(root).unwrap_or(&d.file);
        Sink {
            target: d.arg0().to_string(),
            level: d.args.get(1).map(|l| l.to_string()),
            at: format!("{}:{}", file.display(), d.line),
        }
    }

    /// Why nothing nginx writes there can be read, if so.
    fn not_a_file(&self) -> Option<&'static str> {
        not_a_file(&self.target).or((self.target == "/dev/null").then_some("discarded"))
    }

    /// Why the upstream errors nginx logs at `error` level cannot be read there, if so.
    fn hides_errors(&self) -> Option<String> {
        if let Some(why) = self.not_a_file() {
            return Some(why.to_string());
        }
        // No level is `error`; `debug` (and a debug build's `debug_http`, ...) writes more.
        let level = self.level.as_deref().unwrap_or("error");
        match Level::from_tag(level) {
            Some(l) if l < Level::Error => Some(format!(
                "level {level}: nginx does not write [error] lines there"
            )),
            _ => None,
        }
    }

    fn unread(&self, why: String) -> Unread {
        let level = self
            .level
            .as_deref()
            .map(|l| format!(" {l}"))
            .unwrap_or_default();
        Unread {
            directive: format!("error_log {}{level}", self.target),
            at: self.at.clone(),
            why,
        }
    }
}

/// Why a log target is not a file safe-reload can read, if it is not one: nginx's
/// `syslog:`, `stderr` and `memory:` targets.
pub fn not_a_file(target: &str) -> Option<&'static str> {
    if target.starts_with("syslog:") {
        Some("sent to syslog, not a file")
    } else if target == "stderr" {
        Some("written to nginx's stderr (the service manager's journal), not a file")
    } else if target.starts_with("memory:") {
        Some("kept in a memory buffer, not a file")
    } else if target.is_empty() {
        Some("no file named")
    } else {
        None
    }
}

/// The logs of a context that has `error_log` lines of its own, else `inherited`.
fn sinks_of(block: &[Directive], root: &Path, inherited: &[Sink]) -> Vec<Sink> {
    let own: Vec<Sink> = (block.iter())
        .filter(|d| d.name == "error_log")
        .map(|d| Sink::of(d, root))
        .collect();
    if own.is_empty() {
        inherited.to_vec()
    } else {
        own
    }
}

/// The unread logs of a context whose logs show no upstream error; empty when one does.
fn blind(sinks: &[Sink]) -> Vec<Unread> {
    let whys: Vec<Option<String>> = sinks.iter().map(Sink::hides_errors).collect();
    if whys.iter().any(Option::is_none) {
        return Vec::new();
    }
    (sinks.iter().zip(whys))
        .filter_map(|(s, why)| Some(s.unread(why?)))
        .collect()
}

/// The blind spots of `config`. `default` is the build's error log (`--error-log-path`,
/// `logs/error.log` when the build names none): where the main context logs without an
/// `error_log` of its own.
pub fn sight(config: &Config, default: &str) -> Sight {
    let root = config.conf_prefix.as_path();
    let built_in = [Sink {
        target: default.to_string(),
        level: None,
        at: String::new(),
    }];
    let main = sinks_of(&config.tree, root, &built_in);
    let reload = if main.iter().all(|s| s.not_a_file().is_some()) {
        (main.iter())
            .filter_map(|s| Some(s.unread(s.not_a_file()?.to_string())))
            .collect()
    } else {
        Vec::new()
    };
    let mut servers = Vec::new();
    for http in config.tree.iter().filter(|d| d.name == "http") {
        let http_sinks = sinks_of(http.children(), root, &main);
        for server in http.children().iter().filter(|d| d.name == "server") {
            let own = sinks_of(server.children(), root, &http_sinks);
            let mut logs = blind(&own);
            locations(server.children(), root, &own, &mut logs);
            if !logs.is_empty() {
                let file = server.file.strip_prefix(root).unwrap_or(&server.file);
                servers.push(Blind {
                    server: format!("{}:{}", file.display(), server.line),
                    logs,
                });
            }
        }
    }
    Sight { servers, reload }
}

/// The blind logs of the locations in `block` (at any depth) that have logs of their own.
fn locations(block: &[Directive], root: &Path, inherited: &[Sink], out: &mut Vec<Unread>) {
    for loc in block.iter().filter(|d| d.name == "location") {
        let own = sinks_of(loc.children(), root, inherited);
        if loc.children().iter().any(|d| d.name == "error_log") {
            for u in blind(&own) {
                if !out.contains(&u) {
                    out.push(u);
                }
            }
        }
        locations(loc.children(), root, &own, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(text: &str, default: &str) -> Sight {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        fs_err::write(&main, text).expect("write nginx.conf");
        let config = crate::conf::load(&main, &crate::conf::LoadOptions::default()).expect("loads");
        sight(&config, default)
    }

    #[test]
    fn a_server_whose_logs_show_no_error_line_is_blind_and_says_which_log_and_why() {
        let http = "http {\n error_log syslog:server=127.0.0.1:5140;\n server { listen 80; }\n\
                    server { listen 81; error_log /var/log/nginx/b.log; }\n\
                    server { listen 82; error_log /var/log/nginx/c.log crit; }\n\
                    server { listen 83; location / { error_log /dev/null; } }\n}\n";
        let s = seen(http, "/var/log/nginx/error.log");
        assert!(s.reload.is_empty(), "the main context logs to a file");
        let found: Vec<(&str, Vec<String>)> = (s.servers.iter())
            .map(|b| {
                (
                    b.server.as_str(),
                    b.logs.iter().map(Unread::describe).collect(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                (
                    "nginx.conf:3",
                    vec![
                        "error_log syslog:server=127.0.0.1:5140 (nginx.conf:2): sent to syslog, \
                         not a file"
                            .to_string()
                    ]
                ),
                (
                    "nginx.conf:5",
                    vec![
                        "error_log /var/log/nginx/c.log crit (nginx.conf:5): level crit: nginx \
                          does not write [error] lines there"
                            .to_string()
                    ]
                ),
                (
                    "nginx.conf:6",
                    vec![
                        "error_log syslog:server=127.0.0.1:5140 (nginx.conf:2): sent to syslog, \
                         not a file"
                            .to_string(),
                        "error_log /dev/null (nginx.conf:6): discarded".to_string()
                    ]
                ),
            ]
        );
    }

    #[test]
    fn one_readable_log_among_several_is_enough_and_the_default_counts() {
        let two = "error_log stderr;\nerror_log /var/log/nginx/error.log warn;\n\
                   http { server { listen 80; } }\n";
        assert_eq!(seen(two, "/var/log/nginx/error.log"), Sight::default());
        let none = "http { server { listen 80; } }\n";
        assert_eq!(seen(none, "logs/error.log"), Sight::default());
        let s = seen(none, "stderr");
        assert_eq!(s.servers.len(), 1);
        assert_eq!(
            s.reload[0].describe(),
            "error_log stderr (the build's default): written to nginx's stderr (the service \
             manager's journal), not a file"
        );
    }
}
