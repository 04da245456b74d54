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

/// The alternatives of an alternation of plain literals, two or more.
fn literals(node: &Ast) -> Option<Vec<String>> {
    let Ast::Alternation(a) = node else {
        return None;
    };
    let values: Option<Vec<String>> = a.asts.iter().map(literal).collect();
    values.filter(|v| v.len() > 1 && v.iter().all(|s| !s.is_empty()))
}

fn literal(node: &Ast) -> Option<String> {
    match node {
        Ast::Literal(l) => Some(l.c.to_string()),
        Ast::Concat(c) => c.asts.iter().map(literal).collect(),
        _ => None,
    }
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
        assert!(
            captures(r"(?<=x)(a|b)").is_empty(),
            "a lookbehind is not read"
        );
    }
}
