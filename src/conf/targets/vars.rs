//! What the configuration makes knowable about a variable, so a `*_pass` built from variables
//! still yields addresses to probe: the values `map`, `geo` and `split_clients` give (each a
//! line of its block), and the state the rewrite module leaves when the `*_pass` runs (kept by
//! `rewrite`). A variable nothing defines (`$host`, `$request_uri`) stays in the text as
//! written, and the caller decides whether that leaves the address unknown.
//!
//! Variable names are case-insensitive in nginx (`ngx_http_add_variable` and
//! `ngx_http_get_variable_index` compare them with `ngx_strncasecmp`, the hash is of the
//! lowercased name), so every name here is lowercased: `set $Backend` is `$backend`.

use std::collections::{HashMap, HashSet};

use super::Name;
use crate::conf::tree::{Directive, Walk, Word};

/// More combinations than this, of two or more variables that each take several distinct
/// values, and the text is reported as written: an address built from several many-valued
/// maps is not worth enumerating. One variable's values are never capped: they are lines of
/// the configuration, as many as an upstream block's `server` lines, and a map of 1,000
/// tenants with 3 backends is 3 values, each referencing the lines that give it.
const MAX_CANDIDATES: usize = 64;

/// Variables defined by other variables are followed this deep, which also stops a map whose
/// value names its own variable.
const MAX_DEPTH: usize = 4;

/// A lowercased variable name, without `$`.
pub(crate) type Key = Word;

/// One value a variable may take, and the directive that gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub value: &'a str,
    pub origin: &'a Directive,
    /// `set`, `map`, `geo` or `split_clients`: the directive name a reference should show.
    pub kind: Name,
    /// `geo` and `split_clients` values are plain strings in nginx; `map` and `set` values are
    /// complex values, whose variables are evaluated.
    pub literal: bool,
}

/// A text with knowable variables substituted, and the directives that supplied them.
#[derive(Debug, Clone)]
pub(crate) struct Candidate<'a> {
    pub text: String,
    pub origins: Vec<Binding<'a>>,
}

impl Candidate<'_> {
    /// The same text from the same lines: two paths through the rewrite codes that meet again.
    fn same(&self, other: &Candidate<'_>) -> bool {
        self.text == other.text
            && self.origins.len() == other.origins.len()
            && (self.origins.iter().zip(&other.origins))
                .all(|(a, b)| std::ptr::eq(a.origin, b.origin))
    }
}

/// What a context (`http` or `stream`) defines about its variables, whatever the request.
#[derive(Debug, Default)]
pub(crate) struct Defs<'a> {
    /// `map`, `geo` and `split_clients` variables and every value their blocks give.
    values: HashMap<Key, Vec<Binding<'a>>>,
    /// Variables some `set` assigns somewhere in the context. Before a `set` runs for the
    /// request such a variable is empty (`ngx_http_rewrite_var`: "using uninitialized
    /// variable"), not the value another location sets.
    assigned: HashSet<Key>,
    /// Variables given by something not evaluated here (`set_by_lua`, `auth_request_set`,
    /// `js_set`, `perl_set`, set-misc's `set_*`): known only at run time.
    opaque: HashSet<Key>,
}

/// Lowercased `name` of `$name`, if `text` is one.
pub(crate) fn var_key(text: &str) -> Option<Key> {
    let name = text.strip_prefix('$')?;
    (!name.is_empty()).then(|| Key::from(name.to_ascii_lowercase()))
}

/// A directive that gives a variable a value computed by code (`set_by_lua_block $v`,
/// `auth_request_set $v ...`, `js_set $v f`, `perl_set $v ...`, set-misc's `set_md5 $v ...`).
fn opaque_setter(name: &str) -> bool {
    name != "set" && (name.starts_with("set_") || name.ends_with("_set"))
}

/// The definitions of a context from its directives.
pub(crate) fn context_defs(children: &[Directive]) -> Defs<'_> {
    let mut defs = Defs::default();
    for d in children {
        let (kind, var, literal) = match (d.name.as_str(), &*d.args) {
            // `map $source $variable { ... }`
            ("map", [_, var]) => (Name::MAP, var, false),
            // `split_clients "$source" $variable { ... }`
            ("split_clients", [_, var]) => (Name::SPLIT_CLIENTS, var, true),
            // `geo $variable { ... }` or `geo $source $variable { ... }`
            ("geo", [var] | [_, var]) => (Name::GEO, var, true),
            _ => continue,
        };
        let Some(key) = var_key(var) else { continue };
        for entry in d.children() {
            // `hostnames;`, `volatile;`, `ranges;` are flags; geo's `delete NET;` and
            // `proxy ADDR;` are not values.
            let value = match (&*entry.args, entry.name.as_str()) {
                (_, "delete" | "proxy") if kind == Name::GEO => continue,
                ([value], _) => value,
                _ => continue,
            };
            defs.values.entry(key.clone()).or_default().push(Binding {
                value,
                origin: entry,
                kind,
                literal,
            });
        }
    }
    for d in Walk::new(children) {
        let Some(key) = d.args.first().and_then(|a| var_key(a)) else {
            continue;
        };
        if d.name == "set" {
            defs.assigned.insert(key);
        } else if opaque_setter(&d.name) {
            defs.opaque.insert(key);
        }
    }
    defs
}

/// One value slot of a variable in a [`State`].
#[derive(Debug, Clone)]
enum Slot<'a> {
    /// What the variable holds before any `set` of this request: its `map`/`geo` values, empty
    /// for a variable only `set` gives, or the text as written for one nginx computes.
    Initial,
    Val(Candidate<'a>),
}

/// The values each variable may hold at one point of the rewrite codes. A variable not listed
/// holds its initial value.
#[derive(Debug, Clone, Default)]
pub(crate) struct State<'a> {
    vars: HashMap<Key, Vec<Slot<'a>>>,
}

impl<'a> State<'a> {
    /// `set $key ...` ran: these are now its only values.
    pub fn assign(&mut self, key: Key, values: Vec<Candidate<'a>>) {
        self.vars
            .insert(key, values.into_iter().map(Slot::Val).collect());
    }

    /// Two paths meet: each variable may hold what it holds on either.
    pub fn join(mut self, other: State<'a>) -> State<'a> {
        let mut other = other.vars;
        for (key, slots) in self.vars.iter_mut() {
            let theirs = other.remove(key).unwrap_or_else(|| vec![Slot::Initial]);
            add_slots(slots, theirs);
        }
        for (key, theirs) in other {
            let mut slots = vec![Slot::Initial];
            add_slots(&mut slots, theirs);
            self.vars.insert(key, slots);
        }
        self
    }
}

fn add_slots<'a>(slots: &mut Vec<Slot<'a>>, more: Vec<Slot<'a>>) {
    for s in more {
        let dup = slots.iter().any(|have| match (have, &s) {
            (Slot::Initial, Slot::Initial) => true,
            (Slot::Val(a), Slot::Val(b)) => a.same(b),
            _ => false,
        });
        if !dup {
            slots.push(s);
        }
    }
}

/// Join two optional states: `None` is a path that never gets here.
pub(crate) fn join<'a>(a: Option<State<'a>>, b: Option<State<'a>>) -> Option<State<'a>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.join(b)),
        (a, b) => a.or(b),
    }
}

/// Variable lookup: the rewrite state first, then the context's definitions.
pub(crate) struct Env<'s, 'a> {
    pub defs: &'s Defs<'a>,
    pub state: &'s State<'a>,
}

impl<'a> Env<'_, 'a> {
    /// Every text `text` may become. Variables nobody defines stay as written.
    pub fn expand(&self, text: &'a str) -> Vec<Candidate<'a>> {
        if !text.contains('$') {
            return literal(text);
        }
        self.expand_at(text, 0).unwrap_or_else(|| literal(text))
    }

    /// `None` when there are too many combinations.
    fn expand_at(&self, text: &'a str, depth: usize) -> Option<Vec<Candidate<'a>>> {
        let mut out = literal("");
        for piece in pieces(text) {
            let values = match piece {
                Piece::Var { name, raw } => self.value_of(name, raw, depth)?,
                Piece::Text(raw) => literal(raw),
            };
            let values = distinct(values);
            if out.len() > 1 && values.len() > 1 && out.len() * values.len() > MAX_CANDIDATES {
                return None;
            }
            out = out
                .iter()
                .flat_map(|head| {
                    values.iter().map(move |v| Candidate {
                        text: format!("{}{}", head.text, v.text),
                        origins: head.origins.iter().chain(&v.origins).copied().collect(),
                    })
                })
                .collect();
        }
        Some(distinct(out))
    }

    /// The values of `$name` at this point.
    fn value_of(&self, name: &str, raw: &'a str, depth: usize) -> Option<Vec<Candidate<'a>>> {
        let key = Key::from(name.to_ascii_lowercase());
        if self.defs.opaque.contains(&key) {
            return Some(literal(raw));
        }
        let Some(slots) = self.state.vars.get(&key) else {
            return self.initial(&key, raw, depth);
        };
        let mut values: Vec<Candidate<'a>> = Vec::new();
        for slot in slots {
            match slot {
                Slot::Initial => values.extend(self.initial(&key, raw, depth)?),
                Slot::Val(c) => values.push(c.clone()),
            }
        }
        Some(distinct(values))
    }

    /// The value before any `set`: a `map`/`geo`/`split_clients` value (a map's evaluated when
    /// read, as nginx does), empty for a `set`-only variable, else the text as written.
    fn initial(&self, key: &Key, raw: &'a str, depth: usize) -> Option<Vec<Candidate<'a>>> {
        if let Some(bindings) = self.defs.values.get(key) {
            if depth >= MAX_DEPTH {
                return Some(literal(raw));
            }
            let mut values = Vec::new();
            for b in bindings {
                let texts = if b.literal {
                    literal(b.value)
                } else {
                    self.expand_at(b.value, depth + 1)?
                };
                for mut c in texts {
                    c.origins.insert(0, *b);
                    values.push(c);
                }
            }
            return Some(values);
        }
        if self.defs.assigned.contains(key) {
            return Some(literal(""));
        }
        Some(literal(raw))
    }
}

/// One candidate per distinct text, in the order first met, with the lines of every candidate
/// of that text: a map whose 100 lines give 3 addresses is 3 values, and each names all the
/// lines that give it (each once), so a reference per source line is kept and no address is
/// enumerated twice. Linear in the number of candidates.
fn distinct(values: Vec<Candidate<'_>>) -> Vec<Candidate<'_>> {
    if values.len() < 2 {
        return values;
    }
    let mut out: Vec<Candidate<'_>> = Vec::new();
    let mut index: HashMap<String, (usize, HashSet<*const Directive>)> = HashMap::new();
    for c in values {
        match index.get_mut(&c.text) {
            Some((i, lines)) => {
                let merged = &mut out[*i].origins;
                for o in c.origins {
                    if lines.insert(o.origin) {
                        merged.push(o);
                    }
                }
            }
            None => {
                let lines = c.origins.iter().map(|o| o.origin as *const Directive);
                index.insert(c.text.clone(), (out.len(), lines.collect()));
                out.push(c);
            }
        }
    }
    out
}

fn literal(raw: &str) -> Vec<Candidate<'_>> {
    vec![Candidate {
        text: raw.to_string(),
        origins: Vec::new(),
    }]
}

enum Piece<'a> {
    Text(&'a str),
    /// `$name` or `${name}`; `raw` is the text as written.
    Var {
        name: &'a str,
        raw: &'a str,
    },
}

/// Split text into literal runs and variables, by nginx's variable-name rules.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut lit) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let (name_start, braced) = if bytes.get(i + 1) == Some(&b'{') {
            (i + 2, true)
        } else {
            (i + 1, false)
        };
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        let name_end = name_start + name_len;
        let closed = !braced || bytes.get(name_end) == Some(&b'}');
        if name_len == 0 || !closed {
            i += 1;
            continue;
        }
        let end = if braced { name_end + 1 } else { name_end };
        if lit < i {
            out.push(Piece::Text(&text[lit..i]));
        }
        out.push(Piece::Var {
            name: &text[name_start..name_end],
            raw: &text[i..end],
        });
        i = end;
        lit = end;
    }
    if lit < text.len() {
        out.push(Piece::Text(&text[lit..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_variables() {
        let names: Vec<String> = pieces("http://${a}b$c_1/x$")
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => format!("T{t}"),
                Piece::Var { name, raw } => format!("V{name}={raw}"),
            })
            .collect();
        assert_eq!(names, ["Thttp://", "Va=${a}", "Tb", "Vc_1=$c_1", "T/x$"]);
    }
}
