//! The verification window: rounds of requests, each on a fresh connection, and the error log
//! read after every round. It ends at the first failure that is news, or once enough good
//! rounds passed with no new upstream error logged; the window is an upper bound, never a wait.
//! What is news is the caller's to say ([`Known`]): a failure the running configuration
//! already had before the change does not end the window, so every other check still runs.
//! The baseline ([`baseline`]) is one round of the same requests against the running
//! configuration, each made whatever the others answered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{tls, Check};
use crate::errorlog::{upstream_error, Cursors, UpstreamError, UpstreamErrorKind};

/// How long and how hard to verify.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// The longest the window may last.
    pub window: Duration,
    /// Good rounds (every check answered acceptably) needed to pass.
    pub rounds: usize,
    /// Per request: connect, TLS, send and read the status line.
    pub request_timeout: Duration,
    /// When set, any other status fails (`--expect-status`).
    pub expect_status: Option<Vec<u16>>,
    /// Peers the probe found down and judged no refusal (a pool member with a live sibling,
    /// one address of a name), as the probe shows them (`127.0.0.1:8001`, `[::1]:80`,
    /// `unix:/run/app.sock`). nginx logs a connect error each time it tries one and then
    /// passes the request to the next peer: such a line is expected, not a failure. The
    /// request's own status still decides (all peers down is a 502).
    pub expected_down: Vec<String>,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            window: Duration::from_secs(3),
            rounds: 3,
            request_timeout: Duration::from_secs(2),
            expect_status: None,
            expected_down: Vec::new(),
        }
    }
}

/// One request's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub url: String,
    pub host: String,
    pub status: Option<u16>,
    /// Why there is no status (refused, timed out, TLS failure).
    pub error: Option<String>,
    #[serde(rename = "elapsed_ms", serialize_with = "crate::report::ms")]
    pub elapsed: Duration,
    /// Whether this result alone fails verification.
    pub failed: bool,
    /// The connection to nginx was refused: nothing listens there (e.g. a `listen` the
    /// running configuration does not have).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// Failures and upstream errors that are not news to the caller: they neither end the window
/// nor spoil a round. A failed check is not requested again in the same window.
pub trait Known {
    fn failure(&self, result: &CheckResult) -> bool;
    fn upstream_error(&self, error: &UpstreamError) -> bool;
}

/// Nothing is known: every failure and every upstream error ends the window.
pub struct NothingKnown;

impl Known for NothingKnown {
    fn failure(&self, _: &CheckResult) -> bool {
        false
    }
    fn upstream_error(&self, _: &UpstreamError) -> bool {
        false
    }
}

/// Whether an answer fails a check: no answer, 502 or 504 (nginx could not get an answer
/// from the backend), or a status `--expect-status` does not allow. The one rule that
/// verification and the verdict share.
pub fn is_failure(status: Option<u16>, expect_status: Option<&[u16]>) -> bool {
    match status {
        None | Some(502) | Some(504) => true,
        Some(s) => expect_status.is_some_and(|allowed| !allowed.contains(&s)),
    }
}

/// Everything the window found.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub passed: bool,
    pub results: Vec<CheckResult>,
    /// Upstream errors nginx logged during the window, even when the client saw a success.
    pub upstream_errors: Vec<UpstreamError>,
    /// Connect errors to peers in `HealthOptions::expected_down`, after which nginx tried the
    /// next peer: shown, not failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_upstream_errors: Vec<UpstreamError>,
    #[serde(rename = "elapsed_ms", serialize_with = "crate::report::ms")]
    pub elapsed: Duration,
}

/// Verify through nginx with nothing known: see [`verify_against`].
pub fn verify(checks: &[Check], logs: &mut Cursors, opts: &HealthOptions) -> HealthReport {
    verify_against(checks, logs, opts, &NothingKnown)
}

/// Verify through nginx. Ends at once on a failure or a logged upstream error that `known`
/// does not know; passes after `opts.rounds` good rounds; a check that failed is not asked
/// again. When the window closes first, the checks not yet made are simply absent from the
/// results. With no checks, only the log decides.
pub fn verify_against(
    checks: &[Check],
    logs: &mut Cursors,
    opts: &HealthOptions,
    known: &dyn Known,
) -> HealthReport {
    let start = Instant::now();
    let mut report = HealthReport {
        passed: false,
        results: Vec::new(),
        upstream_errors: Vec::new(),
        expected_upstream_errors: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let rounds = opts.rounds.max(1);
    let mut failed = vec![false; checks.len()];
    let mut answered = vec![false; checks.len()];
    let (mut good_rounds, mut news) = (0, false);
    while !news && good_rounds < rounds && start.elapsed() < opts.window {
        let mut clean = true;
        for (i, check) in checks.iter().enumerate() {
            if failed[i] {
                continue;
            }
            let left = opts.window.saturating_sub(start.elapsed());
            if left.is_zero() {
                clean = false;
                break;
            }
            let result = request(check, opts.request_timeout.min(left), opts);
            answered[i] = true;
            if result.failed {
                failed[i] = true;
                clean = false;
                news = !known.failure(&result);
            }
            report.results.push(result);
            if news {
                break;
            }
        }
        let errors = split_expected(logs, &opts.expected_down, &mut report);
        if errors.iter().any(|e| !known.upstream_error(e)) {
            news = true;
            clean = false;
        }
        report.upstream_errors.extend(errors);
        if clean {
            good_rounds += 1;
        }
        if checks.is_empty() {
            break;
        }
    }
    report.passed = !failed.contains(&true)
        && !answered.contains(&false)
        && report.upstream_errors.is_empty()
        && (checks.is_empty() || good_rounds >= rounds);
    report.elapsed = start.elapsed();
    report
}

/// The upstream errors logged since the last read, less the expected ones (connect errors to
/// peers the probe found down, see [`HealthOptions::expected_down`]), which go to the
/// report's `expected_upstream_errors`.
fn split_expected(
    logs: &mut Cursors,
    expected_down: &[String],
    report: &mut HealthReport,
) -> Vec<UpstreamError> {
    let mut errors = Vec::new();
    for e in logs.read_new().iter().filter_map(upstream_error) {
        if is_expected(&e, expected_down) {
            report.expected_upstream_errors.push(e);
        } else {
            errors.push(e);
        }
    }
    errors
}

/// A connect error (refused, no socket, permission, connect timeout) to a peer known down.
fn is_expected(e: &UpstreamError, expected_down: &[String]) -> bool {
    let connect = matches!(
        e.kind,
        UpstreamErrorKind::Refused
            | UpstreamErrorKind::NoSuchFile
            | UpstreamErrorKind::PermissionDenied
    ) || (e.kind == UpstreamErrorKind::TimedOut
        && e.text.contains("while connecting to upstream"));
    connect
        && e.upstream
            .as_deref()
            .and_then(peer_of)
            .is_some_and(|peer| expected_down.contains(&peer))
}

/// The peer in nginx's `upstream:` field: `http://127.0.0.1:8000/api` is `127.0.0.1:8000`,
/// `fastcgi://unix:/run/php.sock:` is `unix:/run/php.sock` (nginx writes the peer's name,
/// then the URI; a unix peer's name ends at the `:` before the URI).
fn peer_of(upstream: &str) -> Option<String> {
    let rest = upstream.split_once("://").map_or(upstream, |(_, r)| r);
    if rest.starts_with("unix:") {
        return rest.rsplit_once(':').map(|(path, _)| path.to_string());
    }
    Some(rest.split('/').next().unwrap_or(rest).to_string())
}

/// The baseline: the same rounds of the same requests against the running configuration,
/// every request made whatever the others answered, then the error log they wrote to. As many
/// rounds as verification makes, so a pool's round-robin reaches as many of its servers
/// before the change as after. The log lines of a request are written before nginx answers
/// it, so one read after the last answer holds them.
pub fn baseline(checks: &[Check], logs: &mut Cursors, opts: &HealthOptions) -> HealthReport {
    let start = Instant::now();
    let mut report = HealthReport {
        passed: false,
        results: Vec::with_capacity(checks.len() * opts.rounds.max(1)),
        upstream_errors: Vec::new(),
        expected_upstream_errors: Vec::new(),
        elapsed: Duration::ZERO,
    };
    // A check that failed is not asked again: its first failure is its baseline. The window
    // bounds the baseline as it bounds verification, so a hanging backend costs one timeout.
    let mut failed = vec![false; checks.len()];
    'rounds: for _ in 0..opts.rounds.max(1) {
        for (i, check) in checks.iter().enumerate() {
            if failed[i] {
                continue;
            }
            let left = opts.window.saturating_sub(start.elapsed());
            if left.is_zero() {
                break 'rounds;
            }
            let result = request(check, opts.request_timeout.min(left), opts);
            failed[i] = result.failed;
            report.results.push(result);
        }
    }
    report.upstream_errors = split_expected(logs, &opts.expected_down, &mut report);
    report.passed = !report.results.iter().any(|r| r.failed) && report.upstream_errors.is_empty();
    report.elapsed = start.elapsed();
    report
}

fn request(check: &Check, timeout: Duration, opts: &HealthOptions) -> CheckResult {
    let start = Instant::now();
    let outcome = get_status(check, timeout.max(Duration::from_millis(1)));
    let (status, error, refused) = match outcome {
        Ok(s) => (Some(s), None, false),
        Err(e) => (None, Some(e.text), e.refused),
    };
    CheckResult {
        url: check.url.clone(),
        host: check.host.clone(),
        status,
        error,
        elapsed: start.elapsed(),
        failed: is_failure(status, opts.expect_status.as_deref()),
        refused,
    }
}

/// Why a request got no status line.
struct NoAnswer {
    text: String,
    /// nginx refused the connection itself.
    refused: bool,
}

impl From<String> for NoAnswer {
    fn from(text: String) -> NoAnswer {
        NoAnswer {
            text,
            refused: false,
        }
    }
}

/// The most of a response read: the status line is all we need, the rest is drained only so
/// the connection closes cleanly.
const MAX_RESPONSE: u64 = 256 * 1024;

/// `GET` on a fresh connection, `Connection: close`; the response status.
fn get_status(check: &Check, timeout: Duration) -> Result<u16, NoAnswer> {
    let deadline = Instant::now() + timeout;
    let tcp = TcpStream::connect_timeout(&check.connect, timeout).map_err(|e| NoAnswer {
        text: format!("connect to {}: {e}", check.connect),
        refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
    })?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    tcp.set_read_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(left))
        .map_err(|e| e.to_string())?;
    let host_header = match (check.tls, check.connect.port()) {
        (false, 80) | (true, 443) => check.host.clone(),
        (_, port) => format!("{}:{port}", check.host),
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: safe-reload/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        check.path,
        env!("CARGO_PKG_VERSION")
    );
    let response: Vec<u8> = if check.tls {
        let config = tls::client_config().map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config, tls::server_name(&check.host)?)
            .map_err(|e| e.to_string())?;
        exchange(rustls::StreamOwned::new(conn, tcp), &req)
    } else {
        exchange(tcp, &req)
    }?;
    Ok(parse_status(&response)?)
}

fn exchange(mut stream: impl Read + Write, req: &str) -> Result<Vec<u8>, String> {
    stream
        .write_all(req.as_bytes())
        .and_then(|_| stream.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let read = stream.take(MAX_RESPONSE).read_to_end(&mut buf);
    // A status line already read is enough evidence even if the body was cut short.
    match read {
        Err(e) if !buf.contains(&b'\n') => Err(format!("read: {e}")),
        _ => Ok(buf),
    }
}

fn parse_status(response: &[u8]) -> Result<u16, String> {
    match crate::status_line::read(response) {
        crate::status_line::Read::Line(line) => Ok(line.code),
        _ => {
            let end = response.iter().position(|&b| b == b'\n');
            let line = String::from_utf8_lossy(&response[..end.unwrap_or(response.len())]);
            Err(format!("not an HTTP response: {:?}", line.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errorlog::LogLine;

    fn logged(text: &str) -> UpstreamError {
        let line = LogLine {
            path: "/var/log/nginx/error.log".into(),
            level: Some(crate::errorlog::Level::Error),
            text: text.into(),
        };
        upstream_error(&line).expect("an upstream error")
    }

    #[test]
    fn peers_are_read_from_the_upstream_field() {
        assert_eq!(
            peer_of("http://127.0.0.1:8000/api").as_deref(),
            Some("127.0.0.1:8000")
        );
        assert_eq!(peer_of("http://[::1]:80/").as_deref(), Some("[::1]:80"));
        assert_eq!(
            peer_of("fastcgi://unix:/run/php.sock:").as_deref(),
            Some("unix:/run/php.sock")
        );
    }

    #[test]
    fn only_connect_errors_to_known_down_peers_are_expected() {
        let down = vec!["127.0.0.1:8001".to_string()];
        let refused = logged("connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8001/\", host: \"a\"");
        assert!(is_expected(&refused, &down));
        let other = logged("connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8002/\", host: \"a\"");
        assert!(!is_expected(&other, &down));
        let read = logged("upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8001/\", host: \"a\"");
        assert!(!is_expected(&read, &down));
    }
}
