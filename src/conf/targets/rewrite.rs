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
//! - A named location (`location @app`) is entered by an internal redirect that keeps the
//!   variables: it starts from what the locations redirecting there (`try_files`, `error_page`)
//!   left. A redirect by `rewrite ... last` to another location is not followed.
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
            run(defs, codes, State::default(), None).end()
        })
        .clone()?;
    let entry = match (frame.named, frame.server) {
        (Some(name), Some(server)) => redirected_into(defs, server, name, after_server),
        _ => Some(after_server),
    }?;
    match frame.location {
        Some(codes) => run(defs, codes, entry, frame.inside_if).end(),
        None => Some(entry),
    }
}

/// The state a request enters `location @name` with. `ngx_http_named_location` keeps the
/// request's variables and skips the server's codes (`phase_handler =
/// location_rewrite_index`), so it is what the locations that redirect there left: those with
/// `try_files ... @name` or `error_page ... @name`, or every location when the server itself
/// has that `error_page`. With none found (a redirect from Lua, say) the variables hold what
/// the server's codes left.
fn redirected_into<'a>(
    defs: &Defs<'a>,
    server: &'a [Directive],
    name: &str,
    after_server: State<'a>,
) -> Option<State<'a>> {
    let names_it = |dirs: &[Directive]| {
        dirs.iter().any(|d| {
            matches!(d.name.as_str(), "try_files" | "error_page")
                && d.args.last().is_some_and(|a| a == name)
        })
    };
    let every = names_it(server);
    let mut sources: Vec<&'a [Directive]> = Vec::new();
    let mut stack: Vec<&'a [Directive]> = vec![server];
    while let Some(dirs) = stack.pop() {
        for d in dirs.iter().filter(|d| d.name == "location") {
            let named = d.args.first().is_some_and(|a| a.starts_with('@'));
            if !named && (every || names_it(d.children())) {
                sources.push(d.children());
            }
            stack.push(d.children());
        }
    }
    if sources.is_empty() {
        return Some(after_server);
    }
    sources.into_iter().fold(None, |joined, codes| {
        let left = run(defs, codes, after_server.clone(), None).end();
        vars::join(joined, left)
    })
}

/// How one run of a code array ends.
struct Flow<'a> {
    /// The state after the last code, `None` when every path returned or stopped.
    cont: Option<State<'a>>,
    /// States where `break` stopped the codes early; the `*_pass` still runs with them.
    stopped: Option<State<'a>>,
}

impl<'a> Flow<'a> {
    fn end(self) -> Option<State<'a>> {
        vars::join(self.cont, self.stopped)
    }
}

/// Run `codes` from `state`. `forced` is an `if` among them whose body must run (the `*_pass`
/// is in it).
fn run<'a>(
    defs: &Defs<'a>,
    codes: &'a [Directive],
    state: State<'a>,
    forced: Option<&'a Directive>,
) -> Flow<'a> {
    let mut cont = Some(state);
    let mut stopped: Option<State<'a>> = None;
    for d in codes {
        let Some(now) = cont.take() else { break };
        cont = match d.name.as_str() {
            "set" => Some(set(defs, d, now)),
            "if" => {
                let body = run(defs, d.children(), now.clone(), None);
                if forced.is_some_and(|f| ptr::eq(f, d)) {
                    // Paths that stopped before this `if` never ran its `*_pass`.
                    stopped = body.stopped;
                    body.cont
                } else {
                    stopped = vars::join(stopped, body.stopped);
                    vars::join(Some(now), body.cont)
                }
            }
            // `ngx_http_script_return_code`: the request is answered here.
            "return" => None,
            // `ngx_http_script_break_code`: no further codes, the request goes on.
            "break" => {
                stopped = vars::join(stopped, Some(now));
                None
            }
            // When the regex matches, `break` stops the codes; `last`, `redirect` and
            // `permanent` leave this location. When it does not match, codes go on.
            "rewrite" => {
                if d.args.get(2).is_some_and(|f| f == "break") {
                    stopped = vars::join(stopped, Some(now.clone()));
                }
                Some(now)
            }
            _ => Some(now),
        };
    }
    Flow { cont, stopped }
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

    #[test]
    fn code_computed_variables_stay_as_written() {
        let conf = "server { location / { set $v a; set_by_lua_block $v { return 'x' } } }";
        assert_eq!(values(conf, false), ["$v"]);
    }
}
