//! `*_by_lua_block` bodies: Lua, not nginx syntax, so they are read raw up to the brace that
//! closes the block, skipping Lua's strings, comments and long brackets (`[==[ ... ]==]`), any
//! of which may hold braces. nginx's lua module reads them the same way.

use super::{LexError, Lexer};

impl Lexer<'_> {
    /// Read a `*_by_lua_block` body after its `{` up to the matching `}`, honouring Lua strings,
    /// comments and long brackets. Returns the body without the outer braces.
    pub fn raw_block(&mut self) -> Result<Vec<u8>, LexError> {
        let start_line = self.line;
        let start = self.pos;
        let mut depth = 1usize;
        while let Some(&ch) = self.buf.get(self.pos) {
            self.pos += 1;
            match ch {
                b'\n' => self.line += 1,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(self.buf[start..self.pos - 1].to_vec());
                    }
                }
                b'"' | b'\'' => self.lua_string(ch)?,
                b'-' if self.buf.get(self.pos) == Some(&b'-') => {
                    self.pos += 1;
                    if let Some(level) = self.long_bracket_open() {
                        self.long_bracket_close(level)?;
                    } else {
                        while let Some(&c) = self.buf.get(self.pos) {
                            if c == b'\n' {
                                break;
                            }
                            self.pos += 1;
                        }
                    }
                }
                b'[' => {
                    self.pos -= 1;
                    match self.long_bracket_open() {
                        Some(level) => self.long_bracket_close(level)?,
                        None => self.pos += 1,
                    }
                }
                _ => {}
            }
        }
        Err(LexError {
            line: self.line,
            message: format!(
                "unexpected end of file in the Lua block opened at line {start_line}, expecting \"}}\""
            ),
        })
    }

    fn lua_string(&mut self, quote: u8) -> Result<(), LexError> {
        let line = self.line;
        while let Some(&ch) = self.buf.get(self.pos) {
            self.pos += 1;
            match ch {
                b'\\' => {
                    if self.buf.get(self.pos) == Some(&b'\n') {
                        self.line += 1;
                    }
                    self.pos += 1;
                }
                b'\n' => self.line += 1,
                c if c == quote => return Ok(()),
                _ => {}
            }
        }
        Err(LexError {
            line,
            message: "unterminated Lua string in a Lua block".into(),
        })
    }

    /// At `[`, `[[` or `[==[`: consume the opening bracket and return its level.
    fn long_bracket_open(&mut self) -> Option<usize> {
        let rest = &self.buf[self.pos..];
        if rest.first() != Some(&b'[') {
            return None;
        }
        let level = rest[1..].iter().take_while(|&&c| c == b'=').count();
        if rest.get(1 + level) == Some(&b'[') {
            self.pos += level + 2;
            Some(level)
        } else {
            None
        }
    }

    fn long_bracket_close(&mut self, level: usize) -> Result<(), LexError> {
        let line = self.line;
        while let Some(&ch) = self.buf.get(self.pos) {
            self.pos += 1;
            if ch == b'\n' {
                self.line += 1;
            } else if ch == b']' {
                let rest = &self.buf[self.pos..];
                let eq = rest.iter().take_while(|&&c| c == b'=').count();
                if eq == level && rest.get(eq) == Some(&b']') {
                    self.pos += eq + 1;
                    return Ok(());
                }
            }
        }
        Err(LexError {
            line,
            message: "unterminated Lua long bracket in a Lua block".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Lexer, TokenKind};

    #[test]
    fn lua_block_with_braces_in_strings_and_comments() {
        let src = b"{ local s = \"}\" -- }\n local t = [==[ } ]==] --[[ } ]] if x then y() end }";
        let mut lx = Lexer::new(src);
        assert_eq!(lx.next_token().expect("{").kind, TokenKind::BlockStart);
        let body = lx.raw_block().expect("raw");
        assert!(body.ends_with(b"end "));
        assert_eq!(lx.next_token().expect("eof").kind, TokenKind::Eof);
    }
}
