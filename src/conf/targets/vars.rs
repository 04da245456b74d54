//! What `set`, `map` and `split_clients` make knowable about a variable, so a `*_pass` built
//! from variables still yields addresses to probe. Every value a variable may take is a
//! candidate; a variable nothing defines (`$host`, `$request_uri`) stays in the text as written,
//! and the caller decides whether that leaves the address unknown.

use std::collections::HashMap;

use super::Name;
use crate::conf::tree::Directive;

/// More combinations than this and the text is reported as written: an address built from
/// several many-valued maps is not worth enumerating.
const MAX_CANDIDATES: usize = 64;

/// Variables defined by other variables are followed this deep, which also stops `set $a $a`.
const MAX_DEPTH: usize = 4;

/// One value a variable may take, and the directive that gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub value: &'a str,
    pub origin: &'a Directive,
    /// `set`, `map` or `split_clients`: the directive name a reference should show.
    pub kind: Name,
}

/// Variable name (without `$`) to the values it may take.
pub(crate) type Scope<'a> = HashMap<&'a str, Vec<Binding<'a>>>;

/// A text with knowable variables substituted, and the directives that supplied them.
#[derive(Debug, Clone)]
pub(crate) struct Candidate<'a> {
    pub text: String,
    pub origins: Vec<Binding<'a>>,
}

/// The `map`/`split_clients` variables of a context (`http` or `stream`).
pub(crate) fn context_scope(children: &[Directive]) -> Scope<'_> {
    let mut scope = Scope::new();
    for d in children {
        let kind = match d.name.as_str() {
            "map" => Name::MAP,
            "split_clients" => Name::SPLIT_CLIENTS,
            _ => continue,
        };
        let Some(var) = d.args.get(1).and_then(|v| var_name(v)) else {
            continue;
        };
        for entry in d.children() {
            // `hostnames;` and `volatile;` are flags, not entries.
            if let [value] = &*entry.args {
                scope.entry(var).or_default().push(Binding {
                    value,
                    origin: entry,
                    kind,
                });
            }
        }
    }
    scope
}

/// The `set` variables of a `server` or `location` block, including those set inside its `if`
/// blocks (they may or may not run, so each is a candidate).
pub(crate) fn block_scope(children: &[Directive]) -> Scope<'_> {
    let mut scope = Scope::new();
    add_sets(children, &mut scope);
    scope
}

fn add_sets<'a>(children: &'a [Directive], scope: &mut Scope<'a>) {
    for d in children {
        match d.name.as_str() {
            "set" => {
                if let (Some(var), Some(value)) =
                    (d.args.first().and_then(|v| var_name(v)), d.args.get(1))
                {
                    scope.entry(var).or_default().push(Binding {
                        value,
                        origin: d,
                        kind: Name::SET,
                    });
                }
            }
            "if" => add_sets(d.children(), scope),
            _ => {}
        }
    }
}

fn var_name(text: &str) -> Option<&str> {
    let name = text.strip_prefix('$')?;
    (!name.is_empty()).then_some(name)
}

/// Lookup through the enclosing `server`/`location` scopes (innermost wins), then the
/// context's maps.
pub(crate) struct Vars<'s, 'a> {
    pub context: &'s Scope<'a>,
    pub blocks: &'s [Scope<'a>],
}

impl<'a> Vars<'_, 'a> {
    fn lookup(&self, name: &str) -> Option<&[Binding<'a>]> {
        self.blocks
            .iter()
            .rev()
            .find_map(|s| s.get(name))
            .or_else(|| self.context.get(name))
            .map(Vec::as_slice)
    }

    /// Every text `text` may become. Variables nobody defines stay as `$name`.
    pub fn expand(&self, text: &'a str) -> Vec<Candidate<'a>> {
        if !text.contains('$') {
            return literal(text);
        }
        self.expand_at(text, 0).unwrap_or_else(|| {
            vec![Candidate {
                text: text.to_string(),
                origins: Vec::new(),
            }]
        })
    }

    /// `None` when there are too many combinations.
    fn expand_at(&self, text: &'a str, depth: usize) -> Option<Vec<Candidate<'a>>> {
        let mut out = vec![Candidate {
            text: String::new(),
            origins: Vec::new(),
        }];
        for piece in pieces(text) {
            let values = match piece {
                Piece::Var { name, raw } if depth < MAX_DEPTH => match self.lookup(name) {
                    Some(bindings) => self.binding_values(bindings, depth)?,
                    None => literal(raw),
                },
                Piece::Var { raw, .. } | Piece::Text(raw) => literal(raw),
            };
            if out.len() * values.len() > MAX_CANDIDATES {
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
        Some(out)
    }

    fn binding_values(&self, bindings: &[Binding<'a>], depth: usize) -> Option<Vec<Candidate<'a>>> {
        let mut values = Vec::new();
        for b in bindings {
            for mut c in self.expand_at(b.value, depth + 1)? {
                c.origins.insert(0, *b);
                values.push(c);
            }
        }
        Some(values)
    }
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
