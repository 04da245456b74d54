//! The values variables hold when a `*_pass` runs, by the rewrite module's order of execution
//! (src/http/modules/ngx_http_rewrite_module.c), so a target built from variables is every value
//! nginx may really connect to and nothing else:
//!
//! - A `server` block's own `set`/`if`/`return`/`break`/`rewrite` run first, for every request,
//!   in the server-rewrite phase, wherever they sit among its locations.
//! - Then the codes of the one location the request ends in. Rewrite codes are not inherited
//!   (`ngx_http_rewrite_merge_loc_conf` keeps a location's own `codes` or none), so a nested
//!   location does not run its parent location's `set`s, nor does a `limit_except` block run
//!   its location's.
//! - Codes run in order: a second `set` of a variable replaces the first, and `set $a $b;` takes
//!   `$b` as it is at that moment (empty if only a later `set` gives it).
//! - An `if` body is compiled into the enclosing code array (`ngx_http_rewrite_if`: "the inner
//!   directives must be compiled to the same code array"): the condition is known only per
//!   request, so after it a variable holds what it held before or what the body set. A `*_pass`
//!   inside that `if` only runs when the body did.
//! - `return` ends the request; `break` and `rewrite ... break` stop the codes where they are.
//!   A `rewrite` whose regex matches every URI (`^`, `^(.*)$`, `^/`) with `break` or `last`
//!   stops them for every request: the codes after it never run. With `redirect`,
//!   `permanent` or an `http://` replacement it answers the request, like `return`.
//! - A named location (`location @app`) is entered by an internal redirect that keeps the
//!   variables and then runs the named location's own codes from their start
//!   (`ngx_http_named_location`: `phase_handler = location_rewrite_index`). It starts from
//!   what the locations redirecting there left: at the end of their codes (`try_files`, an
//!   error of the content phase), and, for `error_page CODE ... @app`, at each `return CODE;`
//!   with no text (`ngx_http_script_return_code` hands a status of 400 or more without text to
//!   `ngx_http_finalize_request`, which runs `error_page`). So `error_page 418 = @app; return
//!   418;` reaches @app with what was set before the `return`. When nothing known leads there
//!   (`X-Accel-Redirect: @app`, Lua), it starts from what the server's codes left. A redirect
//!   by `rewrite ... last` to another location is not followed.
//!
//! The result is a join over paths: each variable's possible values, not which combinations
//! go together, so a request-dependent value lists every value it can take.

use std::ptr;

use super::vars::{self, Binding, Defs, Env, State};
use super::Name;
use crate::conf::tree::Directive;

/// Where a `*_pass` sits: the code arrays that run before it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Frame<'a> {
    /// The enclosing `server` block's directives (`http` and `stream`).
    pub server: Option<&'a [Directive]>,
    /// The directives of the innermost `location` (empty for a `limit_except` block, whose own
    /// configuration has no rewrite codes).
    pub location: Option<&'a [Directive]>,
    /// The `if` block (inside `location`) that holds the `*_pass`, if any.
    pub inside_if: Option<&'a Directive>,
    /// The innermost location is a named one (`location @app`): reached only by an internal
    /// redirect, with the variables the redirecting location left.
    pub named: Option<&'a str>,
    /// The regex locations around the `*_pass`, innermost last: their captures
    /// (`(?<svc>alpha|beta)`) may name its upstream.
    pub regex_location: Option<&'a Directive>,
}

/// The state the server's codes leave, once per server: every `*_pass` in it starts there.
pub(crate) type ServerState<'a> = Option<Option<State<'a>>>;

/// What the codes leave for the `*_pass` at `frame`, or `None` when no request reaches it (a
/// `return` on every path).
pub(crate) fn state_at<'a>(
    defs: &Defs<'a>,
    frame: &Frame<'a>,
    server_state: &mut ServerState<'a>,
) -> Option<State<'a>> {
    let after_server = server_state
        .get_or_insert_with(|| {
            let codes = frame.server.unwrap_or(&[]);
            run(defs, codes, State::default(), None, &[]).end()
        })
        .clone()?;
    let entry = match (frame.named, frame.server) {
        (Some(name), Some(server)) => redirected_into(defs, server, name, after_server),
        _ => Some(after_server),
    }?;
    match frame.location {
        Some(codes) => run(defs, codes, entry, frame.inside_if, &[]).end(),
        None => Some(entry),
    }
}

/// The state a request enters `location @name` with. `ngx_http_named_location` keeps the
/// request's variables and skips the server's codes (`phase_handler =
/// location_rewrite_index`), so it is what the locations that redirect there left: those with
/// `try_files ... @name` or `error_page ... @name` (their own, or the server's when they have
/// no `error_page` of their own: `ngx_http_core_merge_loc_conf` inherits the list whole). An
/// `error_page` redirect also leaves from each `return CODE;` for a CODE it lists. With none
/// found, or none that reaches it (a redirect from Lua or `X-Accel-Redirect`, say), the
/// variables hold what the server's codes left: the named location's own codes run from their
/// start either way.
fn redirected_into<'a>(
    defs: &Defs<'a>,
    server: &'a [Directive],
    name: &str,
    after_server: State<'a>,
) -> Option<State<'a>> {
    let names_it = |d: &Directive, directive: &str| {
        d.name == directive && d.args.last().is_some_and(|a| a == name)
    };
    let server_pages: Vec<&'a Directive> =
        server.iter().filter(|d| d.name == "error_page").collect();
    let mut joined: Option<State<'a>> = None;
    let mut stack: Vec<&'a [Directive]> = vec![server];
    while let Some(dirs) = stack.pop() {
        for d in dirs.iter().filter(|d| d.name == "location") {
            stack.push(d.children());
            if d.args.first().is_some_and(|a| a.starts_with('@')) {
                continue;
            }
            let codes = d.children();
            let own: Vec<&'a Directive> = codes.iter().filter(|c| c.name == "error_page").collect();
            let pages = if own.is_empty() { &server_pages } else { &own };
            let statuses: Vec<&str> = (pages.iter())
                .filter(|p| names_it(p, "error_page"))
                .flat_map(|p| error_page_codes(p))
                .collect();
            let tries = codes.iter().any(|c| names_it(c, "try_files"));
            if statuses.is_empty() && !tries {
                continue;
            }
            let flow = run(defs, codes, after_server.clone(), None, &statuses);
            let left = vars::join(flow.returned, vars::join(flow.cont, flow.stopped));
            joined = vars::join(joined, left);
        }
    }
    joined.or(Some(after_server))
}

/// The status codes an `error_page` lists: its arguments before `=RESPONSE` and the URI.
fn error_page_codes(d: &Directive) -> impl Iterator<Item = &str> {
    let n = d.args.len().saturating_sub(1);
    (d.args[..n].iter())
        .map(|a| a.as_str())
        .take_while(|a| !a.starts_with('='))
}

/// A `rewrite` regex that every request URI matches (a URI starts with `/`): `^`, `^/`,
/// `^(.*)$`, `^/(.*)`, `.*` and the like.
fn matches_every_uri(regex: &str) -> bool {
    let r = regex.strip_prefix('^').unwrap_or(regex);
    let r = r.strip_prefix('/').unwrap_or(r);
    matches!(r, "" | ".*" | "(.*)" | ".*$" | "(.*)$")
}

/// How one run of a code array ends.
struct Flow<'a> {
    /// The state after the last code, `None` when every path returned or stopped.
    cont: Option<State<'a>>,
    /// States where `break` stopped the codes early; the `*_pass` still runs with them.
    stopped: Option<State<'a>>,
    /// States at a `return` of one of the statuses `run` was asked about: where an
    /// `error_page` for that status leaves from.
    returned: Option<State<'a>>,
}

impl<'a> Flow<'a> {
    fn end(self) -> Option<State<'a>> {
        vars::join(self.cont, self.stopped)
    }
}

/// Run `codes` from `state`. `forced` is an `if` among them whose body must run (the `*_pass`
/// is in it). `statuses` are the codes whose `return` is recorded in `Flow::returned`.
fn run<'a>(
    defs: &Defs<'a>,
    codes: &'a [Directive],
    state: State<'a>,
    forced: Option<&'a Directive>,
    statuses: &[&str],
) -> Flow<'a> {
    let mut cont = Some(state);
    let mut stopped: Option<State<'a>> = None;
    let mut returned: Option<State<'a>> = None;
    for d in codes {
        let Some(now) = cont.take() else { break };
        cont = match d.name.as_str() {
            "set" => Some(set(defs, d, now)),
            "if" => {
                let body = run(defs, d.children(), now.clone(), None, statuses);
                returned = vars::join(returned, body.returned);
                if forced.is_some_and(|f| ptr::eq(f, d)) {
                    // Paths that stopped before this `if` never ran its `*_pass`.
                    stopped = body.stopped;
                    body.cont
                } else {
                    stopped = vars::join(stopped, body.stopped);
                    vars::join(Some(now), body.cont)
                }
            }
            // `ngx_http_script_return_code`: the request is answered here; a status of 400 or
            // more with no text goes to `ngx_http_finalize_request`, hence to `error_page`.
            "return" => {
                let to_error_page = d.args.len() == 1
                    && d.args[0].parse::<u16>().is_ok_and(|c| c >= 400)
                    && statuses.contains(&d.args[0].as_str());
                if to_error_page {
                    returned = vars::join(returned, Some(now));
                }
                None
            }
            // `ngx_http_script_break_code`: no further codes, the request goes on.
            "break" => {
                stopped = vars::join(stopped, Some(now));
                None
            }
            // When the regex matches, `break` stops the codes (and `last` too, leaving the
            // location or, at server level, going on to find one); `redirect`, `permanent` and
            // an `http://`, `https://` or `$scheme` replacement answer the request. When it
            // does not match, codes go on.
            "rewrite" => {
                let flag = d.args.get(2).map(|f| f.as_str());
                let answers = matches!(flag, Some("redirect" | "permanent"))
                    || d.args.get(1).is_some_and(|r| {
                        ["http://", "https://", "$scheme"]
                            .iter()
                            .any(|p| r.starts_with(p))
                    });
                let stops = !answers && matches!(flag, Some("break" | "last"));
                if stops {
                    stopped = vars::join(stopped, Some(now.clone()));
                }
                let every = d.args.first().is_some_and(|r| matches_every_uri(r));
                (!(every && (stops || answers))).then_some(now)
            }
            _ => Some(now),
        };
    }
    Flow {
        cont,
        stopped,
        returned,
    }
}

/// `set $var value;`: the value is evaluated now (`ngx_http_script_set_var_code`) and replaces
/// whatever the variable held.
fn set<'a>(defs: &Defs<'a>, d: &'a Directive, mut state: State<'a>) -> State<'a> {
    let (Some(key), Some(value)) = (d.args.first().and_then(|a| vars::var_key(a)), d.args.get(1))
    else {
        return state;
    };
    let mut values = Env {
        defs,
        state: &state,
    }
    .expand(value);
    let origin = Binding {
        value,
        origin: d,
        kind: Name::SET,
        literal: false,
    };
    for v in &mut values {
        v.origins.insert(0, origin);
    }
    state.assign(key, values);
    state
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::conf::tree;

    fn parse(text: &str) -> Vec<Directive> {
        let file: Arc<Path> = Arc::from(Path::new("/t.conf"));
        tree::parse(&file, text.as_bytes()).expect("parses")
    }

    /// The texts `$v` may hold at a `proxy_pass` in `location` (the first location of the first
    /// server), inside its first `if` when `in_if`.
    fn values(http: &str, in_if: bool) -> Vec<String> {
        let tree = parse(http);
        let defs = vars::context_defs(&tree);
        let server = tree.iter().find(|d| d.name == "server").expect("server");
        let location = server
            .children()
            .iter()
            .find(|d| d.name == "location")
            .expect("location");
        let frame = Frame {
            server: Some(server.children()),
            location: Some(location.children()),
            inside_if: in_if
                .then(|| location.children().iter().find(|d| d.name == "if"))
                .flatten(),
            named: None,
            regex_location: None,
        };
        let Some(state) = state_at(&defs, &frame, &mut None) else {
            return Vec::new();
        };
        let mut out: Vec<String> = (Env {
            defs: &defs,
            state: &state,
        })
        .expand("$v")
        .into_iter()
        .map(|c| c.text)
        .collect();
        out.sort();
        out
    }

    #[test]
    fn server_set_and_location_if_give_both_values() {
        let conf = "server { set $v a; location / { if ($arg_x) { set $V b; } } }";
        assert_eq!(values(conf, false), ["a", "b"]);
        // The pass inside the `if` only runs after its body.
        assert_eq!(values(conf, true), ["b"]);
    }

    #[test]
    fn the_last_set_wins_and_a_set_reads_the_value_of_its_moment() {
        assert_eq!(
            values("server { location / { set $v a; set $v b; } }", false),
            ["b"]
        );
        assert_eq!(
            values("server { location / { set $v $w; set $w x; } }", false),
            [""]
        );
        assert_eq!(
            values("server { location / { set $w x; set $v $w:1; } }", false),
            ["x:1"]
        );
    }

    #[test]
    fn server_codes_run_first_wherever_they_are_written() {
        assert_eq!(
            values("server { location / { set $v $w; } set $w late; }", false),
            ["late"]
        );
    }

    #[test]
    fn return_and_break_end_paths() {
        assert_eq!(
            values(
                "server { location / { set $v a; if ($x) { set $v b; return 404; } } }",
                false
            ),
            ["a"]
        );
        assert_eq!(
            values(
                "server { location / { set $v a; break; set $v b; } }",
                false
            ),
            ["a"]
        );
        assert_eq!(
            values("server { return 301 /; location / { set $v a; } }", false),
            Vec::<String>::new()
        );
        assert_eq!(
            values(
                "server { location / { set $v a; rewrite ^/x /y break; set $v b; } }",
                false
            ),
            ["a", "b"]
        );
    }

    #[test]
    fn map_geo_and_split_clients_give_every_value() {
        let conf = "map $host $M { default a; x.test b; }\n\
                    geo $arg_ip $g { ranges; default c; 10.0.0.1-10.0.0.9 d; delete 10.0.0.5; }\n\
                    split_clients $remote_addr $s { 50% e; * f; }\n\
                    server { location / { set $v $m$G$S; } }";
        assert_eq!(
            values(conf, false),
            ["ace", "acf", "ade", "adf", "bce", "bcf", "bde", "bdf"]
        );
    }

    #[test]
    fn a_named_location_starts_from_what_the_redirecting_location_left() {
        let tree = parse(
            "server { set $v srv;\n\
             location /a { set $v a; try_files $uri @app; }\n\
             location /b { set $v b; }\n\
             location @app { proxy_pass http://$v; } }",
        );
        let defs = vars::context_defs(&tree);
        let server = &tree[0];
        let app = server.children().last().expect("@app");
        let frame = Frame {
            server: Some(server.children()),
            location: Some(app.children()),
            inside_if: None,
            named: Some("@app"),
            regex_location: None,
        };
        let state = state_at(&defs, &frame, &mut None).expect("reached");
        let texts: Vec<String> = (Env {
            defs: &defs,
            state: &state,
        })
        .expand("$v")
        .into_iter()
        .map(|c| c.text)
        .collect();
        assert_eq!(texts, ["a"]);
    }

    /// The texts `$v` may hold at a `proxy_pass` in the server's last location, `@n`.
    fn named_values(conf: &str) -> Vec<String> {
        let tree = parse(conf);
        let defs = vars::context_defs(&tree);
        let server = &tree[0];
        let n = server.children().last().expect("@n");
        let frame = Frame {
            server: Some(server.children()),
            location: Some(n.children()),
            inside_if: None,
            named: Some("@n"),
            regex_location: None,
        };
        let Some(state) = state_at(&defs, &frame, &mut None) else {
            return Vec::new();
        };
        let mut out: Vec<String> = (Env {
            defs: &defs,
            state: &state,
        })
        .expand("$v")
        .into_iter()
        .map(|c| c.text)
        .collect();
        out.sort();
        out
    }

    #[test]
    fn a_named_location_runs_its_own_codes_after_an_error_page_return() {
        // Its own `set`, after a location that returns the status its error_page names.
        for lead in [
            "location /w { error_page 418 = @n; return 418; }",
            "location /w { error_page 404 @n; return 404; }",
            "error_page 502 = @n; location /w { return 502; }",
        ] {
            let conf = format!("server {{ {lead} location @n {{ set $v own; }} }}");
            assert_eq!(named_values(&conf), ["own"], "{conf}");
        }
        // What the location set before its `return` reaches @n.
        assert_eq!(
            named_values(
                "server { location /w { set $v w; error_page 418 = @n; return 418; }
                 location @n { set $u x; } }"
            ),
            ["w"]
        );
        // A `return` of a status the error_page does not list is answered there.
        assert_eq!(
            named_values(
                "server { location /w { set $v w; error_page 418 @n; if ($x) { return 418; }
                 set $v late; return 404; }
 location @n { } }"
            ),
            ["w"]
        );
        // Nothing known leads there: @n still runs its own codes.
        assert_eq!(
            named_values("server { set $v srv; location @n { } }"),
            ["srv"]
        );
        assert_eq!(
            named_values("server { location /w { return 403; } location @n { set $v own; } }"),
            ["own"]
        );
    }

    #[test]
    fn a_rewrite_every_uri_matches_ends_the_codes() {
        assert_eq!(
            values(
                "server { location / { set $v a; rewrite ^ /u2 break; set $v b; } }",
                false
            ),
            ["a"]
        );
        assert_eq!(
            values(
                "server { location / { set $v a; rewrite ^(.*)$ /x$1 last; set $v b; } }",
                false
            ),
            ["a"]
        );
        // A redirect answers every request: nothing reaches the pass.
        assert_eq!(
            values(
                "server { location / { set $v a; rewrite ^ https://x.test/ permanent; } }",
                false
            ),
            Vec::<String>::new()
        );
        // Without a flag the codes go on; `^/$` matches one URI only.
        assert_eq!(
            values(
                "server { location / { set $v a; rewrite ^ /u2; set $v b; } }",
                false
            ),
            ["b"]
        );
        assert_eq!(
            values(
                "server { location / { set $v a; rewrite ^/$ /u2 break; set $v b; } }",
                false
            ),
            ["a", "b"]
        );
    }

    #[test]
    fn code_computed_variables_stay_as_written() {
        let conf = "server { location / { set $v a; set_by_lua_block $v { return 'x' } } }";
        assert_eq!(values(conf, false), ["$v"]);
    }
}
