//! Directives built from tokens: name, arguments, file, line and block.

use std::path::Path;
use std::sync::Arc;

use crate::conf::lexer::{Lexer, Token, TokenKind};
use crate::error::{Error, Result};

/// One directive with its arguments. Arguments are the token text after quote removal and escape
/// handling as nginx does it; bytes that are not UTF-8 are replaced (addresses are ASCII).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// The file this directive was read from.
    pub file: Arc<Path>,
    /// 1-based line of the directive's name.
    pub line: u32,
    /// `Some` for block directives (`http { ... }`), even when empty.
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    /// The first argument, or "".
    pub fn arg0(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or("")
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
                    d.args.push(String::from_utf8_lossy(&body).into_owned());
                    d.block = Some(Vec::new());
                    push(&mut stack, &mut top, d);
                } else if stack.len() >= MAX_DEPTH {
                    return Err(Error::config(
                        file.to_path_buf(),
                        tok.line,
                        format!("blocks nested deeper than {MAX_DEPTH} levels"),
                    ));
                } else {
                    d.block = Some(Vec::new());
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
                d.block = Some(children);
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
    let mut it = std::mem::take(words).into_iter();
    let Some(name) = it.next() else {
        return Err(Error::config(
            file.to_path_buf(),
            line,
            format!("unexpected \"{what}\""),
        ));
    };
    Ok(Directive {
        name: text(name.text),
        args: it.map(|t| text(t.text)).collect(),
        file: file.clone(),
        line: name.line,
        block: None,
    })
}

/// Token bytes as a string without a copy when they are UTF-8 (nearly always).
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Depth-first walk collecting each directive with the names of the blocks enclosing it.
pub fn walk<'a>(
    dirs: &'a [Directive],
    stack: &mut Vec<&'a str>,
    out: &mut Vec<(Vec<&'a str>, &'a Directive)>,
) {
    for d in dirs {
        out.push((stack.clone(), d));
        if let Some(children) = &d.block {
            stack.push(d.name.as_str());
            walk(children, stack, out);
            stack.pop();
        }
    }
}
