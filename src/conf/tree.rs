//! Directives built from tokens: name, arguments, file, line and block.
//!
//! A 10,000-server configuration is some 150,000 directives, so the shape is kept small: words
//! short enough (nearly all) are stored inline instead of one allocation each, arguments and
//! blocks are exact-size boxed slices, and the file path is shared.

use std::path::Path;
use std::sync::Arc;

use crate::conf::lexer::{Lexer, Token, TokenKind};
use crate::error::{Error, Result};

/// A directive's name or one argument: a string that holds up to 24 bytes without allocating.
/// Compares with `&str` and derefs to `str` like a `String`.
pub type Word = compact_str::CompactString;

/// One directive with its arguments. Arguments are the token text after quote removal and escape
/// handling as nginx does it; bytes that are not UTF-8 are replaced (addresses are ASCII).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: Word,
    pub args: Box<[Word]>,
    /// The file this directive was read from.
    pub file: Arc<Path>,
    /// 1-based line of the directive's name.
    pub line: u32,
    /// `Some` for block directives (`http { ... }`), even when empty.
    pub block: Option<Box<[Directive]>>,
}

impl Directive {
    /// The first argument, or "".
    pub fn arg0(&self) -> &str {
        self.args.first().map(Word::as_str).unwrap_or("")
    }

    /// `file:line`, for messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    /// Children of a block directive; empty for a simple one.
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Deeper nesting than this is refused: no real config comes near it, and it bounds recursion.
pub const MAX_DEPTH: usize = 200;

/// Parse one file's bytes into directives. `include` directives are left as they are; `load`
/// splices them.
pub fn parse(file: &Arc<Path>, bytes: &[u8]) -> Result<Vec<Directive>> {
    let mut lexer = Lexer::new(bytes);
    let mut stack: Vec<(Directive, Vec<Directive>)> = Vec::new();
    let mut top: Vec<Directive> = Vec::new();
    let mut words: Vec<Token> = Vec::new();

    loop {
        let tok = lexer
            .next_token()
            .map_err(|e| Error::config(file.to_path_buf(), e.line, e.message))?;
        match tok.kind {
            TokenKind::Word | TokenKind::Quoted => words.push(tok),
            TokenKind::Semicolon => {
                let d = directive_from(file, &mut words, tok.line, ";")?;
                push(&mut stack, &mut top, d);
            }
            TokenKind::BlockStart => {
                let mut d = directive_from(file, &mut words, tok.line, "{")?;
                if d.name.ends_with("_by_lua_block") {
                    // The body is Lua, not nginx syntax: one raw argument, never parsed.
                    let body = lexer
                        .raw_block()
                        .map_err(|e| Error::config(file.to_path_buf(), e.line, e.message))?;
                    let mut args = std::mem::take(&mut d.args).into_vec();
                    args.push(Word::from_utf8_lossy(&body));
                    d.args = args.into_boxed_slice();
                    d.block = Some(Box::default());
                    push(&mut stack, &mut top, d);
                } else if stack.len() >= MAX_DEPTH {
                    return Err(Error::config(
                        file.to_path_buf(),
                        tok.line,
                        format!("blocks nested deeper than {MAX_DEPTH} levels"),
                    ));
                } else {
                    stack.push((d, Vec::new()));
                }
            }
            TokenKind::BlockEnd => {
                if !words.is_empty() {
                    return Err(Error::config(
                        file.to_path_buf(),
                        tok.line,
                        "unexpected \"}\": expected \";\" after the directive",
                    ));
                }
                let Some((mut d, children)) = stack.pop() else {
                    return Err(Error::config(
                        file.to_path_buf(),
                        tok.line,
                        "unexpected \"}\": no block is open",
                    ));
                };
                d.block = Some(children.into_boxed_slice());
                push(&mut stack, &mut top, d);
            }
            TokenKind::Eof => {
                if !words.is_empty() {
                    return Err(Error::config(
                        file.to_path_buf(),
                        tok.line,
                        "unexpected end of file, expecting \";\" or \"}\"",
                    ));
                }
                if let Some((open, _)) = stack.last() {
                    return Err(Error::config(
                        file.to_path_buf(),
                        tok.line,
                        format!(
                            "unexpected end of file, expecting \"}}\" (block \"{}\" opened at line {})",
                            open.name, open.line
                        ),
                    ));
                }
                return Ok(top);
            }
        }
    }
}

fn push(stack: &mut [(Directive, Vec<Directive>)], top: &mut Vec<Directive>, d: Directive) {
    match stack.last_mut() {
        Some((_, children)) => children.push(d),
        None => top.push(d),
    }
}

fn directive_from(
    file: &Arc<Path>,
    words: &mut Vec<Token>,
    line: u32,
    what: &str,
) -> Result<Directive> {
    let mut it = words.drain(..);
    let Some(name) = it.next() else {
        return Err(Error::config(
            file.to_path_buf(),
            line,
            format!("unexpected \"{what}\""),
        ));
    };
    Ok(Directive {
        name: name.text,
        args: it.map(|t| t.text).collect(),
        file: file.clone(),
        line: name.line,
        block: None,
    })
}

/// Every directive under `dirs`, depth first, parents before their children. Keeps only a
/// stack of slice iterators, so walking a large tree allocates next to nothing.
pub struct Walk<'a> {
    stack: Vec<std::slice::Iter<'a, Directive>>,
}

impl<'a> Walk<'a> {
    pub fn new(dirs: &'a [Directive]) -> Self {
        Walk {
            stack: vec![dirs.iter()],
        }
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a Directive;

    fn next(&mut self) -> Option<&'a Directive> {
        loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                Some(d) => {
                    if let Some(children) = &d.block {
                        self.stack.push(children.iter());
                    }
                    return Some(d);
                }
                None => {
                    self.stack.pop();
                }
            }
        }
    }
}
