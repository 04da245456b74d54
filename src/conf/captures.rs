//! A regex's capture groups that can take only a few plain values, and which they are:
//! `location ~ ^/svc/(?<svc>alpha|beta)/` with `proxy_pass http://$svc;` sends `/svc/beta/`
//! to another upstream than `/svc/alpha/`, and `server_name ~^(?<app>alpha|beta)\.apps\.test$`
//! with `proxy_pass http://$app;` does the same by Host. A check of one path (or Host) says
//! nothing of the others, and the upstreams the values name are the server's as much as a
//! `*_pass` that names them.
//!
//! Only a group that is an alternation of plain literals counts (`(alpha|beta)`, `(?P<v>v1|v2)`):
//! anything else can take values without end, and none is guessed.

use regex_syntax::ast::{self, Ast};

/// One capture group with the values it can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// `svc` for `(?<svc>...)`, `None` for a numbered group.
    pub name: Option<String>,
    /// Its number (`$1`), counting every capture group from the left, named ones too.
    pub index: u32,
    /// The literal alternatives, in the order written.
    pub values: Vec<String>,
    /// The byte range of the group's inner pattern in the regex.
    inner: (usize, usize),
}

impl Capture {
    /// Whether `var` (lowercase, without `$`) reads this group: its name, or its number.
    pub fn read_by(&self, var: &str) -> bool {
        self.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(var))
            || var == self.index.to_string()
    }

    /// Whether a variable of `text` (a `*_pass` value) reads this group.
    pub fn read_in(&self, text: &str) -> bool {
        occurrences(text)
            .iter()
            .any(|(_, _, name)| self.read_by(name))
    }

    /// The regex with this group fixed to `value`, so that what matches it gets that value.
    pub fn fixed(&self, pattern: &str, value: &str) -> String {
        format!(
            "{}{}{}",
            &pattern[..self.inner.0],
            regex_syntax::escape(value),
            &pattern[self.inner.1..]
        )
    }
}

/// The capture groups of `pattern` that are alternations of two or more plain literals. A
/// pattern the parser does not read (PCRE syntax it lacks) has none.
pub fn captures(pattern: &str) -> Vec<Capture> {
    let Ok(ast) = ast::parse::Parser::new().parse(pattern) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut index = 0;
    walk(&ast, &mut index, &mut out);
    out
}

fn walk(node: &Ast, index: &mut u32, out: &mut Vec<Capture>) {
    match node {
        Ast::Group(g) => {
            let name = match &g.kind {
                ast::GroupKind::CaptureIndex(_) => Some(None),
                ast::GroupKind::CaptureName { name, .. } => Some(Some(name.name.clone())),
                ast::GroupKind::NonCapturing(_) => None,
            };
            if let Some(name) = name {
                *index += 1;
                if let Some(values) = literals(&g.ast) {
                    let span = g.ast.span();
                    out.push(Capture {
                        name,
                        index: *index,
                        values,
                        inner: (span.start.offset, span.end.offset),
                    });
                }
            }
            walk(&g.ast, index, out);
        }
        Ast::Alternation(a) => a.asts.iter().for_each(|n| walk(n, index, out)),
        Ast::Concat(c) => c.asts.iter().for_each(|n| walk(n, index, out)),
        Ast::Repetition(r) => walk(&r.ast, index, out),
        _ => {}
    }
}

/// The most values one group is taken to have; more is no short list.
const MAX_VALUES: usize = 16;

/// The values of a group that is a finite choice of plain literals, two or more, nested
/// groups and alternations included (`(?<k>b|c)|zz` is `b`, `c`, `zz`).
fn literals(node: &Ast) -> Option<Vec<String>> {
    let values = finite(node)?;
    (values.len() > 1 && values.iter().all(|s| !s.is_empty())).then_some(values)
}

/// Every string `node` matches, when that is a short finite list.
fn finite(node: &Ast) -> Option<Vec<String>> {
    let values = match node {
        Ast::Literal(l) => vec![l.c.to_string()],
        Ast::Group(g) => finite(&g.ast)?,
        Ast::Alternation(a) => {
            let mut out: Vec<String> = Vec::new();
            for v in a.asts.iter().map(finite) {
                for s in v? {
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
            out
        }
        Ast::Concat(c) => {
            let mut out = vec![String::new()];
            for part in c.asts.iter().map(finite) {
                let part = part?;
                out = (out.iter())
                    .flat_map(|head| part.iter().map(move |t| format!("{head}{t}")))
                    .collect();
                if out.len() > MAX_VALUES {
                    return None;
                }
            }
            out
        }
        _ => return None,
    };
    (values.len() <= MAX_VALUES).then_some(values)
}

/// `text` (a `*_pass` value) once for each value of the first capture in `captures` one of
/// its variables reads (`http://svc_$svc/` → `http://svc_a/`, `http://svc_b/`; `$1_pool`,
/// where nginx reads `$1` and then `_pool`); empty when none reads one.
pub fn expand(text: &str, captures: &[Capture]) -> Vec<String> {
    let Some(cap) = captures.iter().find(|c| c.read_in(text)) else {
        return Vec::new();
    };
    (cap.values.iter())
        .map(|value| {
            let mut out = String::new();
            let mut at = 0;
            for (start, end, name) in occurrences(text) {
                if cap.read_by(&name) {
                    out.push_str(&text[at..start]);
                    out.push_str(value);
                    at = end;
                }
            }
            out.push_str(&text[at..]);
            out
        })
        .collect()
}

/// Each variable of `text` as nginx's script compiler reads it: its byte range and its name,
/// lowercase (`$1` is the digits alone, `${name}` braced).
fn occurrences(text: &str) -> Vec<(usize, usize, String)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let braced = b.get(i + 1) == Some(&b'{');
        let start = i + 1 + usize::from(braced);
        let digits = b.get(start).is_some_and(u8::is_ascii_digit);
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_digit()
                || (!digits && (b[end].is_ascii_alphabetic() || b[end] == b'_')))
        {
            end += 1;
        }
        let close = end + usize::from(braced && b.get(end) == Some(&b'}'));
        if end > start {
            out.push((i, close, text[start..end].to_ascii_lowercase()));
        }
        i = close.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alternation_of_literals_is_a_capture_with_its_values() {
        let pattern = r"^/svc/(?<svc>alpha|beta)/(?<rest>.*)$";
        let caps = captures(pattern);
        assert_eq!(caps.len(), 1);
        assert_eq!(caps[0].name.as_deref(), Some("svc"));
        assert_eq!(caps[0].index, 1);
        assert_eq!(caps[0].values, ["alpha", "beta"]);
        assert!(caps[0].read_by("svc") && caps[0].read_by("1") && !caps[0].read_by("2"));
        assert_eq!(
            caps[0].fixed(pattern, "beta"),
            r"^/svc/(?<svc>beta)/(?<rest>.*)$"
        );

        let caps = captures(r"^(www\.)?(?P<app>a\.b|c)\.test$");
        assert_eq!(caps.len(), 1);
        assert_eq!(
            (caps[0].index, caps[0].values.clone()),
            (2, vec!["a.b".into(), "c".into()])
        );
        assert!(captures(r"^/(\w+)/").is_empty());
        assert!(captures(r"^/(a)/").is_empty());
        let nested = captures(r"^/n/((?<k>b|c)|zz)/");
        assert_eq!(nested[0].values, ["b", "c", "zz"]);
        assert_eq!(
            (nested[1].index, nested[1].values.clone()),
            (2, vec!["b".into(), "c".into()])
        );
        assert_eq!(
            expand("http://$1_pool/$rest", &captures(r"^/(api|web)/(.*)$")),
            ["http://api_pool/$rest", "http://web_pool/$rest"]
        );
        assert_eq!(
            expand("http://svc_${svc}:80", &captures(r"^/(?<svc>a|b)/")),
            ["http://svc_a:80", "http://svc_b:80"]
        );
        assert!(expand("http://$svc2/", &captures(r"^/(?<svc>a|b)/")).is_empty());
        assert!(
            captures(r"(?<=x)(a|b)").is_empty(),
            "a lookbehind is not read"
        );
    }
}
