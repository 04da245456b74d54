//! The tokenizer, on bytes, written to the rules of nginx's `ngx_conf_read_token`
//! (src/core/ngx_conf_file.c), not crossplane's:
//!
//! - a word ends at whitespace, `;` or `{`; `}` and `#` inside a word are part of it;
//! - `#` starts a comment only where a token could start;
//! - `${` keeps the `{` in the word (a variable), `$` anywhere arms that;
//! - `\` makes the next byte part of the token; on copy `\"`, `\'`, `\\` lose the backslash and
//!   `\t`, `\r`, `\n` become control characters, other pairs stay as written;
//! - a quoted token must be followed by whitespace, `;`, `{` or `)`;
//! - a token of 4096 bytes or more is "too long parameter", as nginx's buffer makes it.
//!
//! `*_by_lua_block` bodies are read raw by [`Lexer::raw_block`], with Lua's strings, comments
//! and long brackets, which may hold braces.

use crate::conf::tree::Word;

mod lua;

/// nginx's `NGX_CONF_BUFFER`: no token may be this long.
const MAX_TOKEN: usize = 4096;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// A bare word.
    Word,
    /// A word that was quoted (quotes removed).
    Quoted,
    /// `;`
    Semicolon,
    /// `{`
    BlockStart,
    /// `}`
    BlockEnd,
    /// End of input.
    Eof,
}

/// One token with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    /// Unescaped text for words (bytes that are not UTF-8 replaced); empty for punctuation.
    pub text: Word,
    pub line: u32,
}

/// A tokenizer error: the line and what was wrong, in nginx's words where nginx has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: u32,
    pub message: String,
}

/// Tokenizer over one file's bytes.
pub struct Lexer<'a> {
    buf: &'a [u8],
    pos: usize,
    line: u32,
    need_space: bool,
}

fn is_space(ch: u8) -> bool {
    matches!(ch, b' ' | b'\t' | b'\r' | b'\n')
}

/// The bytes that may end a word or change how it is read: every other byte only extends it.
/// One table per way a word is written (bare, `"..."`, `'...'`), so a run of plain bytes is
/// skipped with one lookup each (see [`Lexer::word`]).
const fn stops(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    // An escape, a variable (which lets `{` in), a newline (counted).
    table[b'\\' as usize] = true;
    table[b'$' as usize] = true;
    table[b'\n' as usize] = true;
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

const BARE_STOPS: [bool; 256] = stops(b" \t\r;{");
const DOUBLE_STOPS: [bool; 256] = stops(b"\"");
const SINGLE_STOPS: [bool; 256] = stops(b"'");

fn show(ch: u8) -> String {
    if ch.is_ascii_graphic() {
        (ch as char).to_string()
    } else {
        format!("\\x{ch:02x}")
    }
}

impl<'a> Lexer<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Lexer {
            buf,
            pos: 0,
            line: 1,
            need_space: false,
        }
    }

    /// The current line (1-based).
    pub fn line(&self) -> u32 {
        self.line
    }

    /// The byte offset reached: just past the last token returned.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn err(&self, message: impl Into<String>) -> LexError {
        LexError {
            line: self.line,
            message: message.into(),
        }
    }

    fn punct(&self, kind: TokenKind) -> Token {
        Token {
            kind,
            text: Word::default(),
            line: self.line,
        }
    }

    /// The next token.
    pub fn next_token(&mut self) -> Result<Token, LexError> {
        let mut comment = false;
        loop {
            let Some(&ch) = self.buf.get(self.pos) else {
                return Ok(self.punct(TokenKind::Eof));
            };
            self.pos += 1;
            if ch == b'\n' {
                self.line += 1;
                comment = false;
                if !self.need_space {
                    continue;
                }
            }
            if comment {
                continue;
            }
            if self.need_space {
                if is_space(ch) {
                    self.need_space = false;
                    continue;
                }
                match ch {
                    b';' => {
                        self.need_space = false;
                        return Ok(self.punct(TokenKind::Semicolon));
                    }
                    b'{' => {
                        self.need_space = false;
                        return Ok(self.punct(TokenKind::BlockStart));
                    }
                    // `if ($a = "b")`: nginx lets `)` follow a quoted string.
                    b')' => self.need_space = false,
                    _ => return Err(self.err(format!("unexpected \"{}\"", show(ch)))),
                }
            }
            if is_space(ch) {
                continue;
            }
            match ch {
                b';' => return Ok(self.punct(TokenKind::Semicolon)),
                b'{' => return Ok(self.punct(TokenKind::BlockStart)),
                b'}' => return Ok(self.punct(TokenKind::BlockEnd)),
                b'#' => comment = true,
                _ => return self.word(ch),
            }
        }
    }

    /// A word whose first byte `first` was just consumed.
    fn word(&mut self, first: u8) -> Result<Token, LexError> {
        let line = self.line;
        let start = self.pos - 1;
        let mut content_start = start;
        let (mut d_quoted, mut s_quoted, mut quoted, mut variable) = (false, false, false, false);
        match first {
            b'"' => {
                d_quoted = true;
                content_start += 1;
            }
            b'\'' => {
                s_quoted = true;
                content_start += 1;
            }
            b'\\' => quoted = true,
            b'$' => variable = true,
            _ => {}
        }
        let stops = match (d_quoted, s_quoted) {
            (true, _) => &DOUBLE_STOPS,
            (_, true) => &SINGLE_STOPS,
            _ => &BARE_STOPS,
        };
        loop {
            if !quoted && !variable {
                // Plain bytes only extend the word: skip them, up to the length limit.
                let limit = (start + MAX_TOKEN).min(self.buf.len());
                while self.pos < limit && !stops[self.buf[self.pos] as usize] {
                    self.pos += 1;
                }
            }
            if self.pos - start >= MAX_TOKEN {
                let quote = if s_quoted { '\'' } else { '"' };
                return Err(LexError {
                    line,
                    message: format!(
                        "too long parameter, probably missing terminating \"{quote}\" character"
                    ),
                });
            }
            let Some(&ch) = self.buf.get(self.pos) else {
                return Err(self.err("unexpected end of file, expecting \";\" or \"}\""));
            };
            self.pos += 1;
            if ch == b'\n' {
                self.line += 1;
            }
            if quoted {
                quoted = false;
                continue;
            }
            if ch == b'{' && variable {
                continue;
            }
            variable = false;
            match ch {
                b'\\' => {
                    quoted = true;
                    continue;
                }
                b'$' => {
                    variable = true;
                    continue;
                }
                _ => {}
            }
            let (kind, end) = if d_quoted || s_quoted {
                let close = if d_quoted { b'"' } else { b'\'' };
                if ch != close {
                    continue;
                }
                self.need_space = true;
                (TokenKind::Quoted, self.pos - 1)
            } else if is_space(ch) {
                (TokenKind::Word, self.pos - 1)
            } else if ch == b';' || ch == b'{' {
                // The terminator is the next token.
                self.pos -= 1;
                (TokenKind::Word, self.pos)
            } else {
                continue;
            };
            return Ok(Token {
                kind,
                text: unescape(&self.buf[content_start..end]),
                line,
            });
        }
    }
}

/// The token's text. Short tokens (nearly all) live inline in the `Word`, so a plain token
/// costs no allocation; only a token with a backslash goes through a copy.
fn unescape(raw: &[u8]) -> Word {
    if raw.contains(&b'\\') {
        Word::from_utf8_lossy(&copy_escaped(raw))
    } else {
        Word::from_utf8_lossy(raw)
    }
}

/// nginx's copy loop: `\"`, `\'`, `\\` drop the backslash; `\t`, `\r`, `\n` become control
/// characters; any other pair is kept as written.
fn copy_escaped(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            match raw.get(i + 1) {
                Some(b'"' | b'\'' | b'\\') => i += 1,
                Some(b't') => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                Some(b'r') => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                Some(b'n') => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<String> {
        let mut lx = Lexer::new(src.as_bytes());
        let mut out = Vec::new();
        loop {
            let t = lx.next_token().expect("lexes");
            match t.kind {
                TokenKind::Eof => return out,
                TokenKind::Word | TokenKind::Quoted => out.push(t.text.to_string()),
                TokenKind::Semicolon => out.push(";".into()),
                TokenKind::BlockStart => out.push("{".into()),
                TokenKind::BlockEnd => out.push("}".into()),
            }
        }
    }

    #[test]
    fn words_quotes_and_comments() {
        assert_eq!(
            words("a b 'c d' \"e\\\"f\" # x ; y\n;"),
            ["a", "b", "c d", "e\"f", ";"]
        );
    }

    #[test]
    fn braces_inside_words_and_variables() {
        assert_eq!(words("a ${x}y b}c;"), ["a", "${x}y", "b}c", ";"]);
        assert_eq!(words("a#b;"), ["a#b", ";"]);
        assert_eq!(words("location /{}"), ["location", "/", "{", "}"]);
    }

    #[test]
    fn escapes_follow_nginx() {
        assert_eq!(words(r"a \t\n\x\\;"), ["a", "\t\n\\x\\", ";"]);
    }

    #[test]
    fn quoted_must_be_followed_by_space() {
        let mut lx = Lexer::new(b"a \"b\"c;");
        lx.next_token().expect("a");
        lx.next_token().expect("b");
        let e = lx.next_token().expect_err("c after quote");
        assert_eq!(e.message, "unexpected \"c\"");
    }

    #[test]
    fn quoted_then_paren_is_allowed() {
        assert_eq!(
            words("if ($a = \"b\") {}"),
            ["if", "($a", "=", "b", ")", "{", "}"]
        );
    }

    #[test]
    fn multiline_quoted_keeps_start_line() {
        let mut lx = Lexer::new(b"\n\"a\nb\" c;");
        let t = lx.next_token().expect("quoted");
        assert_eq!((t.line, t.text.as_str()), (2, "a\nb"));
        let t = lx.next_token().expect("c");
        assert_eq!(t.line, 3);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let mut lx = Lexer::new(b"a \"b;\n");
        lx.next_token().expect("a");
        assert!(lx.next_token().is_err());
    }

    #[test]
    fn runs_of_plain_bytes_end_where_nginx_ends_them() {
        assert_eq!(
            words("a \"b; {c} $x${y}{z\" 'd\\'e' f;g{"),
            ["a", "b; {c} $x${y}{z", "d'e", "f", ";", "g", "{"]
        );
        // The length limit counts from the token's first byte (an opening quote included) to
        // the byte before its end.
        for (len, ok) in [(4095, true), (4096, false)] {
            let bare = format!("{};", "x".repeat(len));
            assert_eq!(
                Lexer::new(bare.as_bytes()).next_token().is_ok(),
                ok,
                "{len}"
            );
            let quoted = format!("\"{}\";", "x".repeat(len - 1));
            assert_eq!(
                Lexer::new(quoted.as_bytes()).next_token().is_ok(),
                ok,
                "{len}"
            );
        }
    }

    #[test]
    fn junk_never_panics() {
        let mut seed = 0x1234_5678u32;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    let table = b"ab;{}#\"'\\$ \n\t[]=-";
                    table[seed as usize % table.len()]
                })
                .collect();
            let mut lx = Lexer::new(&bytes);
            for _ in 0..1000 {
                match lx.next_token() {
                    Ok(t) if t.kind == TokenKind::Eof => break,
                    Ok(t) if t.kind == TokenKind::BlockStart => {
                        let _ = lx.raw_block();
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }
}
