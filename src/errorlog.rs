//! nginx's log line format, and reading error logs from a point in time on.
//!
//! nginx reports everything that matters after a reload only in its error log: a reload that
//! failed to bind (`[emerg]`), an upstream that refused a connection even when failover hid it
//! from the client. `nginx -t` speaks the same format on stderr. This module owns that format
//! (levels, `file:line` suffixes, upstream error fields) and the [`Cursors`] that read only what
//! was written since a moment, across truncation and rotation, in bounded steps.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

mod sight;
pub use sight::{not_a_file, sight, Blind, Sight, Unread};

/// An nginx log level, most severe first (so `<` means "more severe").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Emerg,
    Alert,
    Crit,
    Error,
    Warn,
    Notice,
    Info,
}

impl Level {
    /// The level named inside `[...]`; `debug` and unknown names are `None`.
    pub fn from_tag(tag: &str) -> Option<Level> {
        Some(match tag {
            "emerg" => Level::Emerg,
            "alert" => Level::Alert,
            "crit" => Level::Crit,
            "error" => Level::Error,
            "warn" => Level::Warn,
            "notice" => Level::Notice,
            "info" => Level::Info,
            _ => return None,
        })
    }

    /// The name nginx prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Emerg => "emerg",
            Level::Alert => "alert",
            Level::Crit => "crit",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Notice => "notice",
            Level::Info => "info",
        }
    }
}

/// One message nginx printed, with the file and line it blames when it names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub level: Level,
    /// The message without the `nginx: [level]` or timestamp prefix; the ` in FILE:LINE`
    /// suffix is kept so the text reads as nginx wrote it.
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// Split a log line into its level and the text after the prefix. Both forms nginx uses are
/// understood: `nginx: [emerg] text` (before the error log is open) and
/// `2024/01/02 03:04:05 [emerg] 123#123: text` (log file format, also on stderr).
pub fn split_level(line: &str) -> Option<(Level, &str)> {
    let open = if line.starts_with('[') {
        1
    } else {
        line.find(" [")? + 2
    };
    let close = open + line[open..].find(']')?;
    let level = Level::from_tag(&line[open..close])?;
    let mut rest = line[close + 1..].trim_start();
    // Log file format: `123#456: ` (pid#tid) follows the level.
    if let Some(colon) = rest.find(": ") {
        let head = &rest[..colon];
        if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit() || b == b'#') {
            rest = &rest[colon + 2..];
        }
    }
    Some((level, rest))
}

/// Every leveled message in nginx's stderr (`nginx -t`, `nginx -s`), in order. Lines without a
/// level (`nginx: configuration file ... test failed`) are not messages and are skipped.
pub fn parse_messages(stderr: &str) -> Vec<Message> {
    stderr
        .lines()
        .filter_map(|line| {
            let (level, text) = split_level(line.trim_end())?;
            let (file, line) = match blamed_location(text) {
                Some((f, l)) => (Some(f), Some(l)),
                None => (None, None),
            };
            Some(Message {
                level,
                text: text.to_string(),
                file,
                line,
            })
        })
        .collect()
}

/// The ` in /path/file.conf:12` suffix nginx appends when it blames a config line.
fn blamed_location(text: &str) -> Option<(PathBuf, u32)> {
    let at = text.rfind(" in ")?;
    let tail = &text[at + 4..];
    let colon = tail.rfind(':')?;
    let line: u32 = tail[colon + 1..].trim_end().parse().ok()?;
    let file = &tail[..colon];
    if file.is_empty() || file.contains('"') {
        return None;
    }
    Some((PathBuf::from(file), line))
}

/// A complete line read from an error log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// The whole line as written (lossily decoded), without the newline.
    pub text: String,
}

/// The most read from one file in one call; the rest is read by the next call, so a flood of
/// log lines cannot make one poll slow or large.
const MAX_READ: u64 = 4 * 1024 * 1024;

#[derive(Debug)]
struct Cursor {
    path: PathBuf,
    offset: u64,
    /// Device and inode seen last, to notice a file replaced by rotation.
    id: Option<(u64, u64)>,
    partial: Vec<u8>,
    /// Started inside a line: drop what comes before the first newline.
    mid_line: bool,
}

/// Read positions in several error logs, each starting where the file ended when opened.
#[derive(Debug, Default)]
pub struct Cursors {
    files: Vec<Cursor>,
}

impl Cursors {
    /// Remember each file's current end. A file that does not exist yet starts at offset 0, so
    /// everything nginx writes to it after creating it is read.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Cursors {
        let files = paths
            .iter()
            .map(|p| {
                let path = p.as_ref().to_path_buf();
                let meta = std::fs::metadata(&path).ok();
                Cursor {
                    offset: meta.as_ref().map_or(0, |m| m.len()),
                    id: meta.as_ref().map(|m| (m.dev(), m.ino())),
                    path,
                    partial: Vec::new(),
                    mid_line: false,
                }
            })
            .collect();
        Cursors { files }
    }

    /// Like [`Cursors::open`], but each file is read from up to `back` bytes before its end:
    /// what nginx logged in the recent past is read too, from the first whole line on.
    pub fn open_back<P: AsRef<Path>>(paths: &[P], back: u64) -> Cursors {
        let mut cursors = Cursors::open(paths);
        for c in &mut cursors.files {
            c.mid_line = c.offset > back;
            c.offset = c.offset.saturating_sub(back);
        }
        cursors
    }

    /// The files followed.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|c| c.path.as_path()).collect()
    }

    /// Complete lines written since the last call (or since `open`). A line still being
    /// written is kept back until its newline arrives. Unreadable files yield nothing.
    pub fn read_new(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for cursor in &mut self.files {
            cursor.read_into(&mut out);
        }
        out
    }
}

impl Cursor {
    fn read_into(&mut self, out: &mut Vec<LogLine>) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let Ok(meta) = file.metadata() else {
            return;
        };
        let id = (meta.dev(), meta.ino());
        // A new inode (rotation) or a shorter file (truncation): the new content starts at 0.
        if self.id.is_some_and(|old| old != id) || meta.len() < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        self.id = Some(id);
        if meta.len() == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = file.take(MAX_READ).read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        if self.mid_line {
            let Some(nl) = self.partial.iter().position(|&b| b == b'\n') else {
                return;
            };
            self.partial.drain(..=nl);
            self.mid_line = false;
        }
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for raw in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let text = String::from_utf8_lossy(raw)
                .trim_end_matches('\r')
                .to_string();
            out.push(LogLine {
                path: self.path.clone(),
                level: split_level(&text).map(|(l, _)| l),
                text,
            });
        }
    }
}

/// Whether a line nginx wrote is stamped `since` or later. `since` is in nginx's own format
/// (`2026/12/01 20:09:06`, local time, see [`stamp`]), which sorts as text; a line without a
/// stamp is not.
pub fn written_since(line: &str, since: &str) -> bool {
    let stamp = line.get(..since.len()).unwrap_or("");
    stamp.len() == since.len() && stamp.as_bytes()[0].is_ascii_digit() && stamp >= since
}

/// The pid of the process that wrote a line in log file format (`2026/12/01 20:09:06 [error]
/// 1234#1234: ...`): which worker, and so which configuration, it came from.
pub fn writer(line: &str) -> Option<i32> {
    let open = line.find(" [")? + 2;
    let rest = &line[open + line[open..].find("] ")? + 2..];
    let (pid, _) = rest.split_once('#')?;
    pid.parse().ok()
}

/// A moment in nginx's log time stamp format: local time, `YYYY/MM/DD HH:MM:SS`.
pub fn stamp(t: std::time::SystemTime) -> Option<String> {
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    let secs = libc::time_t::try_from(secs).ok()?;
    // SAFETY: localtime_r writes only into the struct it is given.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    ))
}

/// What went wrong between nginx and a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamErrorKind {
    /// `(111: Connection refused)`: nothing listens at the address.
    Refused,
    /// `(2: No such file or directory)`: the unix socket does not exist.
    NoSuchFile,
    /// `(13: Permission denied)`: the worker user may not connect to the unix socket.
    PermissionDenied,
    /// `upstream timed out`: nginx answers 504.
    TimedOut,
    /// `no live upstreams`: every server of the pool is marked failed.
    NoLiveUpstreams,
    /// `upstream prematurely closed connection`: the backend hung up without an answer.
    PrematureClose,
    /// `SSL_do_handshake() failed`, `peer closed connection in SSL handshake`, `upstream SSL
    /// certificate verify error` (all `while SSL handshaking to upstream`): the TLS handshake
    /// with the backend failed, and nginx answers 502 or tries the next peer.
    TlsHandshake,
    /// Another error while talking to the upstream (reset, ...).
    Other,
}

/// An upstream failure nginx logged, with the fields an operator needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamError {
    pub level: Level,
    pub kind: UpstreamErrorKind,
    /// The `upstream: "http://127.0.0.1:8000/"` field: the backend nginx tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The `server: ` field (the server_name of the server block).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The `request: "GET / HTTP/1.1"` field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The whole log line, verbatim.
    pub text: String,
}

impl UpstreamError {
    /// The `host: "b.test:8080"` field: the Host header of the request that failed.
    pub fn host(&self) -> Option<String> {
        field(&self.text, "host", true)
    }
}

impl UpstreamError {
    /// The request it was logged for, as the line names it: the `host:` field without a port,
    /// lowercased, and the request target of the `request:` field (`GET /api/ HTTP/1.1` is
    /// `/api/`). `None` when the line lacks either.
    pub fn logged_for(&self) -> Option<(String, &str)> {
        logged_for(&self.text, self.request.as_deref()?)
    }

    /// The `subrequest: "/mirror"` field: the URI of the subrequest it was logged for (a
    /// `mirror` copy, an `auth_request`), where that is not the client's request.
    pub fn subrequest(&self) -> Option<String> {
        field(&self.text, "subrequest", true)
    }

    /// The backend it names, without the URI of the request: `127.0.0.1:8000`,
    /// `unix:/run/php.sock` (see [`peer_of`]).
    pub fn peer(&self) -> Option<String> {
        self.upstream.as_deref().and_then(peer_of)
    }
}

impl LogLine {
    /// The request it was logged for, as [`UpstreamError::logged_for`] reads it: the Host
    /// without a port, lowercased, and the request target.
    pub fn logged_for(&self) -> Option<(String, String)> {
        let request = field(&self.text, "request", true)?;
        logged_for(&self.text, &request).map(|(host, target)| (host, target.to_string()))
    }
}

/// The `host:` field of `text` without a port, lowercased, and the target of `request`.
fn logged_for<'a>(text: &str, request: &'a str) -> Option<(String, &'a str)> {
    let host = field(text, "host", true)?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host.as_str(),
    };
    let target = request.split(' ').nth(1)?;
    Some((name.to_ascii_lowercase(), target))
}

/// The peer in nginx's `upstream:` field: `http://127.0.0.1:8000/api` is `127.0.0.1:8000`,
/// `fastcgi://unix:/run/php.sock:` is `unix:/run/php.sock` (nginx writes the peer's name,
/// then the URI; a unix peer's name ends at the `:` before the URI).
pub fn peer_of(upstream: &str) -> Option<String> {
    let rest = upstream.split_once("://").map_or(upstream, |(_, r)| r);
    if rest.starts_with("unix:") {
        return rest.rsplit_once(':').map(|(path, _)| path.to_string());
    }
    Some(rest.split('/').next().unwrap_or(rest).to_string())
}

/// Phrases nginx uses only for failures on the way to or from a backend.
const UPSTREAM_PHRASES: [&str; 6] = [
    "while connecting to upstream",
    "while SSL handshaking to upstream",
    "no live upstreams",
    "upstream timed out",
    "upstream prematurely closed",
    "from upstream",
];

/// What a FastCGI backend wrote to its stderr, which nginx relays at `error` level "while
/// reading response header from upstream". The backend was reached and answered: php-fpm's
/// "Primary script unknown" is its 404 for a path with no script (the checks' own made-up
/// `/safe-reload-check.php` gets one from every correctly configured PHP site), a PHP warning
/// comes with the page. Whatever went wrong shows in the status the client got, or in a line of
/// its own (`upstream prematurely closed FastCGI stdout`, a reset), which stay upstream errors.
const BACKEND_STDERR: &str = "FastCGI sent in stderr:";

/// The upstream failure this log line reports, if it reports one at `error` level or worse.
/// Client-side noise (`client prematurely closed connection`, at `info`) is not one, nor is
/// what the backend itself wrote to its stderr ([`BACKEND_STDERR`]).
pub fn upstream_error(line: &LogLine) -> Option<UpstreamError> {
    let level = line.level.filter(|l| *l <= Level::Error)?;
    let text = &line.text;
    if !UPSTREAM_PHRASES.iter().any(|p| text.contains(p))
        || text.contains("client prematurely")
        || text.contains(BACKEND_STDERR)
    {
        return None;
    }
    let kind = if text.contains("(111: ") {
        UpstreamErrorKind::Refused
    } else if text.contains("(2: ") {
        UpstreamErrorKind::NoSuchFile
    } else if text.contains("(13: ") {
        UpstreamErrorKind::PermissionDenied
    } else if text.contains("while SSL handshaking to upstream") {
        UpstreamErrorKind::TlsHandshake
    } else if text.contains("upstream timed out") {
        UpstreamErrorKind::TimedOut
    } else if text.contains("no live upstreams") {
        UpstreamErrorKind::NoLiveUpstreams
    } else if text.contains("upstream prematurely closed") {
        UpstreamErrorKind::PrematureClose
    } else {
        UpstreamErrorKind::Other
    };
    Some(UpstreamError {
        level,
        kind,
        upstream: field(text, "upstream", true),
        server: field(text, "server", false),
        request: field(text, "request", true),
        text: text.clone(),
    })
}

/// A `, name: value` field of an nginx error line; quoted values end at the closing quote
/// (nginx escapes quotes inside them), plain ones at the next `, `.
fn field(text: &str, name: &str, quoted: bool) -> Option<String> {
    let start = text.find(&format!(", {name}: "))? + name.len() + 4;
    let rest = &text[start..];
    if quoted {
        let rest = rest.strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_string())
    } else {
        Some(rest[..rest.find(", ").unwrap_or(rest.len())].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_messages_with_file_and_line() {
        let stderr = "nginx: [emerg] unknown directive \"foo\" in /x/y.conf:12\n\
            2026/11/21 15:41:57 [emerg] 15240#15240: directive \"access_log\" is not terminated by \";\" in /etc/nginx/a b.conf:7\n\
            nginx: [emerg] open() \"/nonexist/x.log\" failed (2: No such file or directory)\n\
            nginx: [warn] the \"user\" directive makes sense only if the master process runs with super-user privileges, ignored in /x/n.conf:1\n\
            nginx: configuration file /x/y.conf test failed\n";
        let m = parse_messages(stderr);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].level, Level::Emerg);
        assert_eq!(m[0].text, "unknown directive \"foo\" in /x/y.conf:12");
        assert_eq!(m[0].file.as_deref(), Some(Path::new("/x/y.conf")));
        assert_eq!(m[0].line, Some(12));
        assert_eq!(m[1].file.as_deref(), Some(Path::new("/etc/nginx/a b.conf")));
        assert_eq!(m[1].line, Some(7));
        assert!(m[1].text.starts_with("directive \"access_log\""));
        assert_eq!((m[2].file.as_ref(), m[2].line), (None, None));
        assert_eq!(m[3].level, Level::Warn);
        assert_eq!(m[3].line, Some(1));
    }

    fn log(text: &str) -> LogLine {
        LogLine {
            path: PathBuf::from("/l"),
            level: split_level(text).map(|(l, _)| l),
            text: text.into(),
        }
    }

    #[test]
    fn upstream_errors_are_classified_with_fields() {
        let refused = log("2026/11/21 16:00:00 [error] 7#7: *3 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: app.test, request: \"GET /api HTTP/1.1\", upstream: \"http://127.0.0.1:8000/api\", host: \"app.test\"");
        let e = upstream_error(&refused).unwrap();
        assert_eq!(e.kind, UpstreamErrorKind::Refused);
        assert_eq!(e.upstream.as_deref(), Some("http://127.0.0.1:8000/api"));
        assert_eq!(e.server.as_deref(), Some("app.test"));
        assert_eq!(e.request.as_deref(), Some("GET /api HTTP/1.1"));
        assert_eq!(e.subrequest(), None);
        let copy = log("2026/11/21 16:00:00 [error] 7#7: *3 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a.test, request: \"GET /x HTTP/1.1\", subrequest: \"/_mirror\", upstream: \"http://127.0.0.1:9/x\", host: \"a.test\"");
        let copy = upstream_error(&copy).unwrap();
        assert_eq!(copy.subrequest().as_deref(), Some("/_mirror"));
        let unix = log("2026/11/21 16:00:00 [crit] 7#7: *1 connect() to unix:/run/php.sock failed (13: Permission denied) while connecting to upstream, client: 127.0.0.1, server: _, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php.sock:\", host: \"x\"");
        assert_eq!(
            upstream_error(&unix).unwrap().kind,
            UpstreamErrorKind::PermissionDenied
        );
        let client = log("2026/11/21 16:00:00 [info] 7#7: *1 client prematurely closed connection while reading upstream, client: 127.0.0.1");
        assert_eq!(upstream_error(&client), None);
        let reload = log("2026/11/21 16:00:00 [notice] 7#7: signal process started");
        assert_eq!(upstream_error(&reload), None);
        // php-fpm answering 404 for a path with no script: the backend answered.
        let answered = log("2026/11/21 16:00:00 [error] 7#7: *9 FastCGI sent in stderr: \"Primary script unknown\" while reading response header from upstream, client: 127.0.0.1, server: g.test, request: \"GET /safe-reload-check.php HTTP/1.1\", upstream: \"fastcgi://unix:/run/php.sock:\", host: \"g.test\"");
        assert_eq!(upstream_error(&answered), None);
        let hung_up = log("2026/11/21 16:00:00 [error] 7#7: *9 upstream prematurely closed FastCGI stdout while reading response header from upstream, client: 127.0.0.1, server: g.test, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php.sock:\", host: \"g.test\"");
        assert_eq!(
            upstream_error(&hung_up).map(|e| e.kind),
            Some(UpstreamErrorKind::PrematureClose)
        );
    }

    #[test]
    fn a_failed_tls_handshake_with_a_backend_is_an_upstream_error() {
        let lines = [
            "2026/11/21 16:00:00 [crit] 7#7: *5 SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong version number) while SSL handshaking to upstream, client: 127.0.0.1, server: api.test, request: \"GET / HTTP/1.1\", upstream: \"https://127.0.0.1:8443/\", host: \"api.test\"",
            "2026/11/21 16:00:00 [error] 7#7: *6 peer closed connection in SSL handshake while SSL handshaking to upstream, client: 127.0.0.1, server: api.test, request: \"GET / HTTP/1.1\", upstream: \"https://127.0.0.1:8443/\", host: \"api.test\"",
            "2026/11/21 16:00:00 [error] 7#7: *7 upstream SSL certificate verify error: (10:certificate has expired) while SSL handshaking to upstream, client: 127.0.0.1, server: api.test, request: \"GET / HTTP/1.1\", upstream: \"https://127.0.0.1:8443/\", host: \"api.test\"",
        ];
        for line in lines {
            let e = upstream_error(&log(line)).expect(line);
            assert_eq!(e.kind, UpstreamErrorKind::TlsHandshake, "{line}");
            assert_eq!(e.upstream.as_deref(), Some("https://127.0.0.1:8443/"));
        }
        // The client's own failed handshake is not the backend's.
        let client = log("2026/11/21 16:00:00 [info] 7#7: *8 peer closed connection in SSL handshake while SSL handshaking, client: 127.0.0.1, server: 0.0.0.0:443");
        assert_eq!(upstream_error(&client), None);
    }

    #[test]
    fn an_upstream_error_names_the_request_it_was_logged_for() {
        let line = |host: &str| {
            log(&format!("2026/11/21 16:00:00 [error] 7#7: *3 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: app.test, request: \"GET /api/?q=1 HTTP/1.1\", upstream: \"http://127.0.0.1:8000/api/\"{host}"))
        };
        let e = upstream_error(&line(", host: \"App.Test:8080\"")).unwrap();
        assert_eq!(e.logged_for(), Some(("app.test".to_string(), "/api/?q=1")));
        let e = upstream_error(&line(", host: \"[::1]:8443\"")).unwrap();
        assert_eq!(e.logged_for(), Some(("[::1]".to_string(), "/api/?q=1")));
        let e = upstream_error(&line(", host: \"app.test\"")).unwrap();
        assert_eq!(e.logged_for().map(|k| k.0), Some("app.test".to_string()));
        assert_eq!(upstream_error(&line("")).unwrap().logged_for(), None);
    }

    #[test]
    fn cursors_opened_back_read_the_recent_past_from_a_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        std::fs::write(&path, "first line\nsecond line\nthird\n").unwrap();
        let mut c = Cursors::open_back(&[&path], 15);
        let got: Vec<String> = c.read_new().into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["third"]);
        let mut c = Cursors::open_back(&[&path], 1 << 20);
        assert_eq!(c.read_new().len(), 3);
    }

    #[test]
    fn log_time_stamps_compare_as_text() {
        let since = "2026/12/01 20:09:06";
        assert!(written_since("2026/12/01 20:09:06 [error] 1#1: x", since));
        assert!(written_since("2026/12/01 21:00:00 [error] 1#1: x", since));
        assert!(!written_since("2026/12/01 20:09:05 [error] 1#1: x", since));
        assert!(!written_since("nginx: [emerg] x", since));
        let now = stamp(std::time::SystemTime::now()).unwrap();
        assert_eq!(now.len(), since.len());
        assert!(written_since(&now, since));
    }

    #[test]
    fn a_line_names_the_process_that_wrote_it() {
        let line = "2026/12/01 20:09:06 [error] 22886#22886: *31 upstream prematurely closed";
        assert_eq!(writer(line), Some(22886));
        assert_eq!(writer("nginx: [emerg] x"), None);
        assert_eq!(writer("2026/12/01 20:09:06 [error] x"), None);
    }

    #[test]
    fn cursors_read_only_new_complete_lines_and_survive_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        let missing = dir.path().join("later.log");
        fs_err::write(&path, "old [emerg] line\n").unwrap();
        let mut c = Cursors::open(&[&path, &missing]);
        assert!(c.read_new().is_empty());
        let mut f = fs_err::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"2026/01/01 00:00:00 [error] 1#1: one\npart").unwrap();
        let lines = c.read_new();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].level, Some(Level::Error));
        std::io::Write::write_all(&mut f, b"ial\n").unwrap();
        assert_eq!(c.read_new()[0].text, "partial");
        fs_err::write(&path, "x [emerg] after truncation\n").unwrap();
        fs_err::write(&missing, "y [crit] created later\n").unwrap();
        let lines = c.read_new();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].level, Some(Level::Emerg));
        assert_eq!(lines[1].path, missing);
    }
}
