//! `[alert]` lines the master and the new workers log after a reload: a worker that could not
//! raise its descriptor limit (`worker_rlimit_nofile`), set its priority or CPU affinity, or
//! open its error log still serves, so the change stays, but the operator is told, with the
//! directive that asked for it and its file:line where one is known. A warning, never a
//! rollback: only the checks decide that. Pure: log lines and the candidate's directives in.

use std::path::PathBuf;

use serde::Serialize;

use crate::conf::Config;
use crate::errorlog::{split_level, Level};

/// What nginx's alert text starts with (after its `pid#tid: ` prefix), and the directive that
/// asked for what failed.
const DIRECTIVES: &[(&str, &str)] = &[
    ("setrlimit(RLIMIT_NOFILE", "worker_rlimit_nofile"),
    ("setrlimit(RLIMIT_CORE", "worker_rlimit_core"),
    ("setpriority(", "worker_priority"),
    ("sched_setaffinity(", "worker_cpu_affinity"),
    ("chdir(", "working_directory"),
    ("could not open error log file", "error_log"),
];

/// A directive named by an alert, and where the candidate sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    pub directive: &'static str,
    pub file: PathBuf,
    pub line: u32,
}

/// Where the candidate sets each directive an alert can name (the first one at the top level,
/// where these live).
pub fn places(config: &Config) -> Vec<Place> {
    (DIRECTIVES.iter())
        .filter_map(|(_, name)| {
            let d = config.main_directive(name)?;
            Some(Place {
                directive: name,
                file: d.file.to_path_buf(),
                line: d.line,
            })
        })
        .collect()
}

/// One `[alert]` nginx logged after the reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// nginx's message, without the timestamp and `[alert] pid#tid: ` prefix.
    pub text: String,
    /// The directive that asked for what failed, where the message says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directive: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl Alert {
    /// `TEXT (worker_rlimit_nofile, /etc/nginx/nginx.conf:4)`.
    pub fn describe(&self) -> String {
        let at = match (&self.file, self.line) {
            (Some(f), Some(l)) => format!(", {}:{l}", f.display()),
            _ => String::new(),
        };
        match self.directive {
            Some(d) => format!("{} ({d}{at})", self.text),
            None => self.text.clone(),
        }
    }
}

/// The `[alert]` lines among `lines` (error log lines, verbatim), each message once (every
/// worker logs the same), with the directive it names and where `places` says it is set.
pub fn of(lines: &[String], places: &[Place]) -> Vec<Alert> {
    let mut out: Vec<Alert> = Vec::new();
    for line in lines {
        let Some((Level::Alert, text)) = split_level(line) else {
            continue;
        };
        if out.iter().any(|a| a.text == text) {
            continue;
        }
        let directive = (DIRECTIVES.iter())
            .find(|(start, _)| text.starts_with(start))
            .map(|(_, d)| *d);
        let place = directive.and_then(|d| places.iter().find(|p| p.directive == d));
        out.push(Alert {
            text: text.to_string(),
            directive,
            file: place.map(|p| p.file.clone()),
            line: place.map(|p| p.line),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RLIMIT: &str = "2026/01/02 03:04:05 [alert] 4242#4242: setrlimit(RLIMIT_NOFILE, \
                          100000000) failed (1: Operation not permitted)";

    #[test]
    fn an_alert_names_its_directive_at_its_place_once_for_every_worker() {
        let other = RLIMIT.replace("4242#4242", "4243#4243");
        let places = [Place {
            directive: "worker_rlimit_nofile",
            file: "/etc/nginx/nginx.conf".into(),
            line: 4,
        }];
        let alerts = of(&[RLIMIT.to_string(), other], &places);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].directive, Some("worker_rlimit_nofile"));
        assert_eq!(
            alerts[0].describe(),
            "setrlimit(RLIMIT_NOFILE, 100000000) failed (1: Operation not permitted) \
             (worker_rlimit_nofile, /etc/nginx/nginx.conf:4)"
        );
    }

    #[test]
    fn an_alert_of_no_known_directive_is_shown_as_nginx_wrote_it_and_other_levels_are_not() {
        let lines = [
            "2026/01/02 03:04:05 [alert] 7#7: something else failed".to_string(),
            "2026/01/02 03:04:05 [error] 7#7: an error".to_string(),
            "2026/01/02 03:04:05 [notice] 7#7: start worker processes".to_string(),
        ];
        let alerts = of(&lines, &[]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].describe(), "something else failed");
        assert_eq!(of(&[RLIMIT.to_string()], &[])[0].file, None);
    }
}
