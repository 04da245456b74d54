//! A check asked again and again: one request through a pool reaches one of its servers, so
//! a server that fails every request it gets shows only in a share of many. The shadow asks
//! its pools' checks so (`shadow::verify::sample`); where no shadow asked them (`--no-shadow`,
//! or the shadow did not start), verification after the reload asks the pools the change
//! edits so, against as many answers of the running configuration before the signal
//! ([`AroundReload`]).

use std::collections::{HashMap, HashSet};

use crate::errorlog::{self, Cursors, UpstreamError};
use crate::health::{self, Check, CheckResult, HealthOptions, HealthReport};

/// How many more times a check is asked of each nginx, at least.
pub const SAMPLES: usize = 8;

/// How many times a check through a pool is asked again, at least: a hashed pool sends each
/// request to a member picked by its query or source, and of two members, a new one that
/// fails all it gets is then missed (fewer than two failures) about once in 3,800 runs at this
/// count, where eight samples missed it once in 28.
pub const POOL_SAMPLES: usize = 2 * SAMPLES;

/// The `i`th sample of `c`: its path with a query parameter of its own (`safe-reload-sample=I`,
/// after the query it has), so a pool hashed on the URI spreads the samples over its members.
/// A gRPC call's path is its method, and stays.
pub(crate) fn varied(c: &Check, i: usize, on_path: bool) -> Check {
    let mut v = c.clone();
    if v.grpc {
        return v;
    }
    if on_path {
        // A pool hashed on the path (`hash $host$uri`): the path gets a tail of its own, which
        // still matches the prefix location the check stands for.
        let (path, query) = v
            .path
            .split_once('?')
            .map_or((v.path.as_str(), None), |(p, q)| (p, Some(q)));
        let tail = if path.ends_with('/') { "" } else { "-" };
        v.path = match query {
            Some(q) => format!("{path}{tail}safe-reload-sample-{i}?{q}"),
            None => format!("{path}{tail}safe-reload-sample-{i}"),
        };
        return v;
    }
    let sep = if v.path.contains('?') { '&' } else { '?' };
    v.path = format!("{}{sep}safe-reload-sample={i}", v.path);
    v
}

/// Whether a sample's path may get a tail of its own and still reach the location `c` stands
/// for: a prefix location (`location /api/`, `location ^~ /static/`) or a server without
/// locations; not an exact, regex or named location, nor a `--health` URL.
pub(crate) fn path_may_vary(c: &Check) -> bool {
    match c.what.strip_prefix("location ") {
        Some(rest) => {
            let first = rest.split_whitespace().next().unwrap_or("");
            !matches!(first, "=" | "~" | "~*") && !first.starts_with('@')
        }
        None => c.what == "server" || (c.what.is_empty() && !c.at.is_empty()),
    }
}

/// The most times a check is asked again through the shadow, whatever the pool's size.
/// 256: a canary at weight 1 beside a member at weight 99 (one request in a hundred) is
/// reached twice by twice the sum of the weights; at 64 one at one in 61 was reached once,
/// and one failure decides nothing.
pub const MAX_SAMPLES: usize = 256;

/// The most times a check is asked of the running nginx when the shadow's samples failed:
/// three times as many as the shadow's, up to this (the running nginx's backends serve
/// clients).
pub const MAX_RUNNING_SAMPLES: usize = 384;

/// `c` asked `n` times, each a sample of its own ([`varied`]), at most [`SAMPLES`] in flight
/// (fewer for a pool with `max_conns`, `limit`, which nginx would answer 502 beyond them): a
/// small `worker_connections` must not be what fails them. Each from its own loopback
/// network (127.0.K.1): an `ip_hash` pool picks its server by the client's first three
/// octets, so one address would reach one server. And each with a query of its own: a
/// `hash $request_uri` (or `$args`) pool picks by it; a path of its own for a `hash $uri`
/// pool (`on_path`).
pub fn ask(
    c: &Check,
    n: usize,
    limit: usize,
    on_path: bool,
    opts: &HealthOptions,
) -> Vec<CheckResult> {
    let (mut out, mut sent) = (Vec::with_capacity(n), 0);
    while sent < n {
        let wave = (n - sent).min(SAMPLES).min(limit.max(1));
        let first = sent;
        sent += wave;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (first..first + wave)
                .map(|i| {
                    let from = std::net::Ipv4Addr::new(127, 0, (i % 250) as u8, 1);
                    let c = varied(c, i, on_path);
                    // A check of a `split_clients` share keeps the address that takes it;
                    // behind `allow`/`deny` (or credentials) the check's own address, which
                    // the allow-list lets through where 127.0.K.1 gets nginx's 403.
                    let from = match c.gate.auth {
                        true => c.source,
                        false => Some(c.source.unwrap_or(from.into())),
                    };
                    scope.spawn(move || health::request_from(&c, opts, from))
                })
                .collect();
            out.extend(handles.into_iter().filter_map(|h| h.join().ok()));
        });
    }
    out
}

/// How many times a check through a pool whose weights add up to `size` is asked: twice
/// that (its one worker's weighted round robin gives each request the next server), at least
/// [`POOL_SAMPLES`], at most [`MAX_SAMPLES`].
pub fn for_pool(size: usize) -> usize {
    (2 * size).clamp(POOL_SAMPLES, MAX_SAMPLES)
}

/// Why each of `samples` failed, `None` for one that did not (its answer failed, or is a 4xx
/// or 5xx where the check's first answer, `first`, which passed, was not: a pool member that
/// answers 500 to all it gets, see `health::worse_than`); and the upstream errors nginx logged
/// for the samples' own requests (their `safe-reload-sample=I` query) where the backend hung
/// up, reset, timed out or failed the TLS handshake after nginx had sent the request: failover
/// hid them from the GET, and a POST gets 502 (unless a member the probe found failing is
/// failed over by `non_idempotent`, which the running nginx's answer decides). A connect error
/// to a peer that is down is not one: nginx fails over from it, and the probe warns of it.
/// With `on_path` the samples asked paths of their own, which the backend may not serve (its
/// 404 for `/api/safe-reload-sample-3`): only a failed answer counts then, not another status.
pub fn failures(
    samples: &[CheckResult],
    log: &mut Cursors,
    first: &CheckResult,
    on_path: bool,
) -> (Vec<Option<String>>, Vec<UpstreamError>) {
    use crate::errorlog::UpstreamErrorKind as Kind;
    let before = (!first.failed).then_some(first.status).flatten();
    let errors: Vec<UpstreamError> = (log.read_new().iter())
        .filter_map(errorlog::upstream_error)
        .filter(|e| {
            matches!(
                e.kind,
                Kind::PrematureClose | Kind::TimedOut | Kind::TlsHandshake | Kind::Other
            )
        })
        .collect();
    let mut logged = Vec::new();
    let why = (samples.iter())
        .map(|r| {
            let error = errors.iter().find(|e| logged_for(e, &r.check));
            logged.extend(error.cloned());
            // No answer within --health-timeout is slow, not failed: nginx waits for it.
            let failed = r.failed && !r.timed_out;
            if failed || (!on_path && health::worse_than(before, r.answer, r.status)) {
                return Some(r.reply());
            }
            None
        })
        .collect();
    (why, logged)
}

/// Whether nginx logged `e` for the request `check` sends: its Host and its path (a
/// sample's own `safe-reload-sample=I` query included).
pub(crate) fn logged_for(e: &UpstreamError, check: &Check) -> bool {
    (e.logged_for()).is_some_and(|(h, p)| h.eq_ignore_ascii_case(&check.host) && p == check.path)
}

/// The pool a `*_pass` value (`http://app_pool`, `http://app_pool/prefix`) names, and its size.
pub fn pool_of<'a>(pass: &str, pools: &'a HashMap<String, usize>) -> Option<(&'a str, usize)> {
    pools
        .get_key_value(&pass_host(pass))
        .map(|(k, n)| (k.as_str(), *n))
}

/// The host part of a `*_pass` value or of the upstream an error line names, lowercase:
/// `app_pool` of `http://app_pool/prefix`, `127.0.0.1:9001` of `http://127.0.0.1:9001/`.
pub fn pass_host(pass: &str) -> String {
    let rest = pass.split_once("://").map_or(pass, |(_, r)| r);
    rest.split('/').next().unwrap_or("").to_ascii_lowercase()
}

/// The pools a change edits, asked again around the reload where no shadow asked them (see
/// the module's doc). Before the signal, each such pool's first check (one the running
/// configuration answered in the baseline) is asked of it four times as often as it is after
/// the reload, [`for_pool`] times for each worker (up to four: each worker keeps its own round
/// robin, and clients' connections fall to any of them). Answers that failed after the reload
/// (two or more) where none did before are the change's, as the shadow's samples judge them
/// (`shadow::verify::Sampled::worse`): a server it added to the pool that fails every request
/// it gets (a 500 or 502 of its own, which nginx passes on, or no answer in time) fails that
/// share of every client's, while one request to the check most likely reached another.
pub struct AroundReload {
    pools: HashMap<String, usize>,
    limits: HashMap<String, usize>,
    path_hashed: HashSet<String>,
    /// The pools the change edits, lowercase, as `Impact` names them (`upstream NAME`).
    changed: HashSet<String>,
    /// How many workers the candidate starts, up to four.
    workers: usize,
    taken: Vec<Before>,
}

/// A check asked again before the signal.
struct Before {
    url: String,
    pool: String,
    n: usize,
    limit: usize,
    on_path: bool,
    asked: usize,
    failed: usize,
}

impl AroundReload {
    /// For `config`, the candidate, and the pools of more than one server (see
    /// `conf::pool_sizes`) among `changed`; `None` where the change edits none.
    pub fn of(
        config: &crate::conf::Config,
        changed: impl IntoIterator<Item = String>,
        workers: Option<usize>,
    ) -> Option<AroundReload> {
        let pools = crate::conf::pool_sizes(config);
        let changed: HashSet<String> = (changed.into_iter())
            .filter(|name| pools.contains_key(name))
            .collect();
        (!changed.is_empty()).then(|| AroundReload {
            pools,
            limits: crate::conf::pool_limits(config),
            path_hashed: crate::conf::pools_hashed_on_path(config),
            changed,
            workers: workers.unwrap_or(1).clamp(1, 4),
            taken: Vec::new(),
        })
    }

    /// Ask the running configuration, right after the baseline (`baseline`), each changed
    /// pool's first check that it answered there; `logs` are its error logs.
    pub fn before(
        &mut self,
        checks: &[Check],
        baseline: &mut HealthReport,
        opts: &HealthOptions,
        logs: &[std::path::PathBuf],
    ) {
        let opts = &opts.for_window();
        for c in checks {
            let pass = c.upstream.as_deref().or(c.samples_through.as_deref());
            let Some((pool, size)) = pass.and_then(|u| pool_of(u, &self.pools)) else {
                continue;
            };
            if !self.changed.contains(pool) || self.taken.iter().any(|b| b.pool == pool) {
                continue;
            }
            let answered = (baseline.results.iter_mut())
                .find(|r| r.check.url == c.url && r.check.host == c.host)
                .filter(|r| !r.failed && !r.refused && !r.timed_out);
            let Some(first) = answered else {
                continue;
            };
            let n = (for_pool(size) * self.workers).min(MAX_RUNNING_SAMPLES);
            let limit = self.limits.get(pool).copied().unwrap_or(SAMPLES);
            let on_path = self.path_hashed.contains(pool) && path_may_vary(c);
            let asked = (4 * n).min(MAX_RUNNING_SAMPLES);
            let mut log = Cursors::open(logs);
            let samples = ask(c, asked, limit, on_path, opts);
            let (failed, why) = failed_of(&samples, &mut log, first, on_path);
            // Its answers are the baseline's too (see `Transaction::run`).
            first.attempts += samples.len() as u32;
            first.failures += failed as u32;
            first.first_failure = first.first_failure.take().or(why);
            self.taken.push(Before {
                url: c.url.clone(),
                pool: pool.to_string(),
                n,
                limit,
                on_path,
                asked,
                failed,
            });
        }
    }

    /// Ask the reloaded configuration the checks asked [`before`](Self::before), each that
    /// passed in `after`; one whose answers now fail where none did before fails there, with
    /// the counts of both sides as its answer. `logs` are the candidate's error logs.
    pub fn after(
        &self,
        after: &mut HealthReport,
        opts: &HealthOptions,
        logs: &[std::path::PathBuf],
    ) {
        let opts = &opts.for_window();
        for b in &self.taken {
            let Some(r) = (after.results.iter_mut())
                .find(|r| r.check.url == b.url && !r.failed && !r.refused)
            else {
                continue;
            };
            let mut log = Cursors::open(logs);
            let samples = ask(&r.check, b.n, b.limit, b.on_path, opts);
            let (failed, first) = failed_of(&samples, &mut log, r, b.on_path);
            if !more_often((failed, samples.len()), (b.failed, b.asked)) {
                // Failing as before (a member that failed its share before the change too):
                // not the change's, and said, with the counts, as an intermittent answer is.
                if failed > 0 {
                    r.failures += failed as u32;
                    r.attempts += samples.len() as u32;
                    r.first_failure = r.first_failure.take().or(first);
                }
                continue;
            }
            r.failed = true;
            r.status = None;
            r.failures += failed as u32;
            r.attempts += samples.len() as u32;
            r.first_failure = first.clone();
            let before = match b.failed {
                0 => format!("none of {}", b.asked),
                k => format!("{k} of {}", b.asked),
            };
            r.error = Some(format!(
                "{failed} of {} answers failed ({}) when asked again through upstream {}, \
                 where {before} did before the reload: a server of the pool fails (or does not \
                 answer in time) the requests it gets",
                samples.len(),
                first.as_deref().unwrap_or("?"),
                b.pool,
            ));
            after.passed = false;
        }
    }
}

/// How many of `samples` failed, the ones with no answer within `--health-timeout` included
/// (a server that accepts and never answers: its clients wait up to nginx's read timeout and
/// get 504), and the first failure.
/// A server error counts whatever the check's first answer was, so the running
/// configuration's samples and the reloaded one's are counted alike (a first answer that was
/// itself a 500 would otherwise hide every other 500 of its side).
fn failed_of(
    samples: &[CheckResult],
    log: &mut Cursors,
    first: &CheckResult,
    on_path: bool,
) -> (usize, Option<String>) {
    let (why, _) = failures(samples, log, first, on_path);
    let mut failed = (samples.iter().zip(why)).filter_map(|(r, why)| {
        let server_error = !on_path && matches!(r.status, Some(500..=599));
        why.or_else(|| (r.timed_out || server_error).then(|| r.reply()))
    });
    let first_failure = failed.next();
    (first_failure.iter().count() + failed.count(), first_failure)
}

/// Whether `after` (failed, of) fails clearly more often than `before`: twice at least, and
/// none before, or a share three standard errors above the share before (a failing member's
/// weight raised from one request in 11 to one in three; not the same flaky backend asked
/// twice, whose share drifts by chance).
pub fn more_often(after: (usize, usize), before: (usize, usize)) -> bool {
    let share = |(k, n): (usize, usize)| k as f64 / n.max(1) as f64;
    if after.0 < 2 {
        return false;
    }
    if before.0 == 0 {
        return true;
    }
    // Two shares compared as samples of one: three standard errors apart.
    let (a, b) = (share(after), share(before));
    let pooled = (after.0 + before.0) as f64 / (after.1 + before.1).max(1) as f64;
    let se =
        (pooled * (1.0 - pooled) * (1.0 / after.1.max(1) as f64 + 1.0 / before.1.max(1) as f64))
            .sqrt();
    a > b && se > 0.0 && (a - b) / se >= 3.0
}

#[cfg(test)]
mod tests {
    use super::more_often;

    #[test]
    fn failing_more_often_is_a_clear_rise_not_chance() {
        // A canary that fails all it gets, added: none before.
        assert!(more_often((2, 22), (0, 88)));
        assert!(!more_often((1, 22), (0, 88)));
        // Its weight raised from one request in 21 to one in two, or in 11 to one in three.
        assert!(more_often((21, 42), (8, 168)));
        assert!(more_often((10, 28), (11, 112)));
        // The same flaky backend asked twice: its share drifts by chance.
        assert!(!more_often((3, 16), (2, 64)));
        assert!(!more_often((9, 16), (30, 64)));
    }
}
